"""IPv4/IPv6 fragment reassembly, bounded in datagrams, bytes and time.

Fragments are keyed by (src, dst, id, protocol).  Overlaps keep the first bytes seen (the
same "first wins" policy as TCP reassembly).  When more than ``max_datagrams`` are pending,
more than ``max_bytes`` are held over all of them, or one is older than ``timeout`` seconds,
the oldest are dropped and counted.  One datagram may hold at most twice the largest IP
payload (overlapping copies included).
"""

from __future__ import annotations

from .stats import Stats

_MAX_DATAGRAM = 65535 + 8


class _Pending:
    __slots__ = ("first_ts", "parts", "total", "size", "held")

    def __init__(self, ts: float):
        self.first_ts = ts
        self.parts: list[tuple[int, bytes]] = []  # in arrival order
        self.total = -1  # payload length, known once the last fragment arrives
        self.size = 0
        self.held = 0  # bytes of all parts (overlaps counted twice)


class Defragmenter:
    def __init__(self, stats: Stats, max_datagrams: int = 4096, timeout: float = 30.0,
                 max_bytes: int = 32 << 20):
        self.stats = stats
        self.max = max_datagrams
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.held = 0  # bytes held over all pending datagrams
        self.pending: dict[tuple, _Pending] = {}

    def add(self, key: tuple, offset: int, more: bool, payload: bytes, ts: float) -> bytes | None:
        """Add one fragment; return the whole payload once complete, else None."""
        p = self.pending.get(key)
        if p is None:
            if len(self.pending) >= self.max:
                self._expire(ts, force=True)
            p = self.pending[key] = _Pending(ts)
        end = offset + len(payload)
        if end > _MAX_DATAGRAM or len(p.parts) >= 256 or p.held + len(payload) > 2 * _MAX_DATAGRAM:
            self.stats.anomaly("ip.fragment_too_large")
            self._drop(key)
            return None
        if not more:
            p.total = end
        p.parts.append((offset, payload))
        p.held += len(payload)
        self.held += len(payload)
        if self.held > self.max_bytes:
            self._expire(ts, force=True)
            if key not in self.pending:
                return None
        p.size = max(p.size, end)
        if p.total < 0:
            return None
        # first bytes seen win: fill in arrival order, never overwrite
        out = bytearray(p.total)
        have = bytearray(p.total)
        for off, data in p.parts:
            stop = min(off + len(data), p.total)
            i = have.find(0, off, stop)
            while i >= 0:
                j = have.find(1, i, stop)
                if j < 0:
                    j = stop
                out[i:j] = data[i - off : j - off]
                have[i:j] = b"\x01" * (j - i)
                i = have.find(0, j, stop)
        if have.find(0) >= 0:
            return None  # a hole remains: wait for more
        self._drop(key)
        return bytes(out)

    def _drop(self, key: tuple) -> None:
        self.held -= self.pending.pop(key).held

    def _expire(self, now: float, force: bool = False) -> None:
        old = [k for k, p in self.pending.items() if now - p.first_ts > self.timeout]
        if force and not old:
            old = sorted(self.pending, key=lambda k: self.pending[k].first_ts)[: max(1, self.max // 10)]
        for k in old:
            self._drop(k)
        if old:
            self.stats.anomaly("ip.fragments_expired", len(old))

    def sweep(self, now: float) -> None:
        if self.pending:
            self._expire(now)
