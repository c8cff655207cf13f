"""TCP reassembly: a bounded flow table and an in-order byte stream per direction.

Sans-I/O: :meth:`FlowTable.segment` takes decoded segments; each flow's *handler* (made by
the ``new_handler`` callable given to the table) receives, in order::

    handler.data(direction, payload, ts)   # contiguous new bytes of one direction
    handler.gap(direction, nbytes, ts)     # nbytes are missing from the capture here
    handler.fin(direction, ts)             # that direction finished (all its bytes delivered)
    handler.end(ts, reason)                # flow over ("fin", "rst", "idle", "evicted", "eof")

Direction 0 is the endpoint that sent the first packet we kept of the flow (``Flow.a``),
1 the other; ``Flow.client_dir`` says which one opened the connection when the handshake
was seen (None when we picked the flow up mid-stream).

Policy (documented in the README):
- Pick-up mid-stream: the first data segment of a direction fixes its sequence origin.
- Retransmissions and overlaps: the first bytes seen win; differing retransmitted content is
  not compared (counted as ``tcp.retransmission`` / ``tcp.overlap``).
- Out-of-order segments wait in a per-direction buffer (``max_ooo_bytes``).  A hole becomes
  a gap when the peer acknowledges data beyond it (the receiver got bytes we never saw), when
  the buffer is full, or when the flow ends.
- SYN payloads (TCP Fast Open) are data.  RST ends the flow.  Flows idle longer than
  ``flow_idle_timeout`` end; when the table holds ``max_flows``, a tenth is evicted (counted):
  flows that never carried a byte (half-open) before the least recently active.  All flows
  together buffer at most ``max_ooo_total`` out-of-order bytes.  Ended flows linger a few
  seconds so late retransmissions don't start a new flow; a new SYN does.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Protocol

from .limits import Limits
from .stats import Stats

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
_M = 0xFFFFFFFF
_LINGER = 5.0
_RST_LINGER = 1.0
_SWEEP_EVERY = 5.0
_BY_AGE = attrgetter("last_ts")
_MAX_OOO_SEGMENTS = 1024  # per direction: a flood of tiny out-of-order segments must stay cheap


def _rel(a: int, b: int) -> int:
    """Signed distance a - b in 32-bit sequence space."""
    return ((a - b + 0x80000000) & _M) - 0x80000000


class StreamHandler(Protocol):
    def data(self, direction: int, payload: bytes, ts: float) -> None: ...
    def gap(self, direction: int, nbytes: int, ts: float) -> None: ...
    def fin(self, direction: int, ts: float) -> None: ...
    def end(self, ts: float, reason: str) -> None: ...


class Half:
    """One direction of a flow."""

    __slots__ = ("next", "isn", "ooo", "ooo_bytes", "ooo_end", "fin_seq", "peer_ack", "done", "bytes")

    def __init__(self) -> None:
        self.next: int | None = None  # next expected sequence number
        self.isn: int | None = None
        self.ooo: dict[int, bytes] = {}
        self.ooo_bytes = 0
        self.ooo_end = 0  # sequence number after the furthest buffered byte (when ooo is not empty)
        self.fin_seq: int | None = None
        self.peer_ack: int | None = None  # highest ACK the other side sent for this direction
        self.done = False
        self.bytes = 0  # payload bytes delivered or skipped


class Flow:
    __slots__ = (
        "a", "b", "halves", "first_ts", "last_ts", "client_dir", "handler", "ignored",
        "closed", "packets", "rst", "bytes",
    )

    def __init__(self, a: tuple[bytes, int], b: tuple[bytes, int], ts: float):
        self.a = a
        self.b = b
        self.halves = (Half(), Half())
        self.first_ts = ts
        self.last_ts = ts
        self.client_dir: int | None = None
        self.handler: Any = None
        self.ignored = False  # the handler lost interest: count packets, reassemble nothing
        self.closed = False
        self.rst = False  # a RST was seen; the flow ends unless packets keep coming
        self.packets = 0
        self.bytes = 0  # TCP payload bytes seen, both directions (retransmissions included)


class FlowTable:
    def __init__(self, limits: Limits, stats: Stats, new_handler: Callable[[Flow], StreamHandler]):
        self.limits = limits
        self.stats = stats
        self.new_handler = new_handler
        self.flows: dict[tuple, Flow] = {}
        self._next_sweep = 0.0
        self.now = 0.0
        self.ooo_total = 0  # out-of-order bytes buffered over all flows (``max_ooo_total``)

    # ---- entry point -------------------------------------------------------------------------
    def segment(self, ts: float, seg: tuple) -> None:
        _p, src, dst, sport, dport, seq, ack, flags, payload = seg
        if ts > self.now:
            self.now = ts
            if ts >= self._next_sweep:
                self.sweep(ts)  # before the lookup: this packet may belong to a flow that ends now
        flows = self.flows
        flow = flows.get((src, sport, dst, dport))
        d = 0
        if flow is None:
            flow = flows.get((dst, dport, src, sport))
            d = 1
        if flow is not None and not flags & 0x07 and not (flow.closed or flow.ignored or flow.rst):
            # fast path: an established flow, no SYN/FIN/RST, usually in-order data
            flow.last_ts = ts
            flow.packets += 1
            if flags & ACK:
                other = flow.halves[1 - d]
                other.peer_ack = ack
                if other.ooo and other.next is not None and _rel(ack, other.next) > 0:
                    self._skip_gap(flow, 1 - d, other, ts, upto=ack)
            if payload:
                n = len(payload)
                flow.bytes += n
                half = flow.halves[d]
                if seq == half.next and not half.ooo and half.fin_seq is None:
                    half.next = (seq + n) & _M
                    half.bytes += n
                    flow.handler.data(d, payload, ts)
                else:
                    self._data(flow, d, half, seq, payload, ts)
            return
        self._segment(ts, flow, d, src, dst, sport, dport, seq, ack, flags, payload)

    def _segment(self, ts: float, flow: Flow | None, d: int, src: bytes, dst: bytes, sport: int,
                 dport: int, seq: int, ack: int, flags: int, payload: bytes) -> None:
        """Everything but the fast path: new flows, handshake, FIN/RST, closed flows."""
        if flow is None or (flow.closed and flags & (SYN | ACK) == SYN):
            if flow is not None:
                self._forget(flow)
            if not payload and not flags & SYN:
                return  # a lone ACK/FIN/RST of a flow we never saw: nothing to follow
            flow = self._new_flow(src, sport, dst, dport, ts)
            d = 0
        flow.last_ts = ts
        flow.packets += 1
        flow.bytes += len(payload)
        if flow.closed or flow.ignored:
            return
        if flow.rst and flags & (SYN | ACK) == SYN and flow.halves[d].isn not in (None, seq):
            # the port pair is reused by a new connection after a RST
            self._end(flow, ts, "rst")
            self._forget(flow)
            flow = self._new_flow(src, sport, dst, dport, ts)
            d = 0
        half = flow.halves[d]
        if flags & SYN:
            if flags & ACK:
                if flow.client_dir is None:
                    flow.client_dir = 1 - d
                other = flow.halves[1 - d]
                if not other.bytes and not other.ooo:
                    # the SYN-ACK names the client's real ISN (spoofed SYNs may have preceded it)
                    other.isn = (ack - 1) & _M
                    other.next = ack
            elif flow.client_dir is None:
                flow.client_dir = d
            self._syn(half, seq)
            seq = (seq + 1) & _M
        elif half.isn is None and flow.client_dir is not None and flow.client_dir != d:
            # a server that has not answered the SYN yet cannot FIN or RST this connection
            if flags & (FIN | RST):
                self.stats.anomaly("tcp.fin_rst_before_synack")
                flags &= ~(FIN | RST)
        if flags & ACK:
            other = flow.halves[1 - d]
            other.peer_ack = ack
            if other.ooo and other.next is not None and _rel(ack, other.next) > 0:
                self._skip_gap(flow, 1 - d, other, ts, upto=ack)
        if payload:
            self._data(flow, d, half, seq, payload, ts)
        if flags & FIN and half.fin_seq is None:
            if half.next is None:
                half.next = seq
            half.fin_seq = (seq + len(payload)) & _M
            self._check_fin(flow, d, half, ts)
        if flags & RST:
            # Ending at once would let a forged RST hide what follows (an evasion technique):
            # the flow ends when the RST is not followed by more packets (see sweep).
            flow.rst = True
            self._next_sweep = min(self._next_sweep, ts + _RST_LINGER)

    # ---- per direction -----------------------------------------------------------------------
    def _syn(self, half: Half, seq: int) -> None:
        if half.isn is None or half.next is None or (not half.bytes and not half.ooo):
            half.isn = seq
            half.next = (seq + 1) & _M
        elif half.isn != seq:
            self.stats.anomaly("tcp.syn_seq_changed")

    def _data(self, flow: Flow, d: int, half: Half, seq: int, payload: bytes, ts: float) -> None:
        if half.next is None:
            half.next = seq
        delta = _rel(seq, half.next)
        n = len(payload)
        if delta + n <= 0:
            self.stats.anomaly("tcp.retransmission")
            return
        if delta < 0:
            self.stats.anomaly("tcp.overlap")
            payload = payload[-delta:]
            seq = half.next
            delta = 0
        if delta == 0 and not half.ooo:
            half.next = (seq + len(payload)) & _M
            half.bytes += len(payload)
            flow.handler.data(d, payload, ts)
        else:
            if half.fin_seq is not None and _rel(seq, half.fin_seq) >= 0:
                self.stats.anomaly("tcp.data_after_fin")
                return
            before = half.ooo_bytes
            self._store(half, seq, payload)
            self.ooo_total += half.ooo_bytes - before
            if delta == 0:
                self._drain(flow, d, half, ts)
            else:
                self.stats.anomaly("tcp.out_of_order")
                if half.ooo_bytes > self.limits.max_ooo_bytes:
                    self._skip_gap(flow, d, half, ts)
                elif len(half.ooo) > _MAX_OOO_SEGMENTS:
                    self._flush_ooo(flow, d, half, ts, keep=_MAX_OOO_SEGMENTS // 2)
                elif half.peer_ack is not None and _rel(half.peer_ack, half.next) > 0:
                    self._skip_gap(flow, d, half, ts, upto=half.peer_ack)
                if self.ooo_total > self.limits.max_ooo_total and half.ooo:
                    # all flows together hold too much: this direction gives up its holes (the
                    # total was within the budget before this segment, so that is enough)
                    self.stats.anomaly("tcp.ooo_total_exceeded")
                    self._flush_ooo(flow, d, half, ts, keep=0)
        if half.fin_seq is not None:
            self._check_fin(flow, d, half, ts)

    @staticmethod
    def _store(half: Half, seq: int, payload: bytes) -> None:
        """Buffer ``payload`` at ``seq``; bytes a buffered segment already holds are kept
        (first bytes seen win), so buffered segments never overlap."""
        end = (seq + len(payload)) & _M
        if not half.ooo or _rel(seq, half.ooo_end) >= 0:
            # beyond everything buffered (a stream going on after a hole): no overlap to check
            half.ooo[seq] = payload
            half.ooo_bytes += len(payload)
            half.ooo_end = end
            return
        base = half.next
        r0 = _rel(seq, base)
        r1 = r0 + len(payload)
        if _rel(end, half.ooo_end) > 0:
            half.ooo_end = end
        spans = sorted((_rel(s, base), _rel(s, base) + len(b)) for s, b in half.ooo.items())
        a = r0
        for s0, s1 in spans:
            if s1 <= a:
                continue
            if s0 >= r1:
                break
            if s0 > a:
                half.ooo[(base + a) & _M] = payload[a - r0 : s0 - r0]
                half.ooo_bytes += s0 - a
            a = max(a, s1)
            if a >= r1:
                return
        if a < r1:
            half.ooo[(base + a) & _M] = payload[a - r0 :]
            half.ooo_bytes += r1 - a

    def _drain(self, flow: Flow, d: int, half: Half, ts: float) -> None:
        """Deliver buffered segments that have become contiguous with the stream."""
        ooo = half.ooo
        for s in sorted(ooo, key=lambda s: _rel(s, half.next)):
            delta = _rel(s, half.next)
            if delta > 0:
                break
            data = ooo.pop(s)
            half.ooo_bytes -= len(data)
            self.ooo_total -= len(data)
            if delta + len(data) > 0:
                piece = data[-delta:] if delta else data
                half.next = (half.next + len(piece)) & _M
                half.bytes += len(piece)
                flow.handler.data(d, piece, ts)

    def _flush_ooo(self, flow: Flow, d: int, half: Half, ts: float, keep: int) -> None:
        """Deliver buffered segments in order, declaring the holes before them as gaps, until at
        most ``keep`` remain: one sort for the lot (a gap at a time would sort once per hole)."""
        ooo = half.ooo
        for s in sorted(ooo, key=lambda s: _rel(s, half.next)):
            if len(ooo) <= keep:
                break
            data = ooo.pop(s)
            half.ooo_bytes -= len(data)
            self.ooo_total -= len(data)
            delta = _rel(s, half.next)
            if delta > 0:
                self.stats.anomaly("tcp.gap")
                half.next = (half.next + delta) & _M
                half.bytes += delta
                flow.handler.gap(d, delta, ts)
                delta = 0
            if delta + len(data) > 0:
                piece = data[-delta:] if delta else data
                half.next = (half.next + len(piece)) & _M
                half.bytes += len(piece)
                flow.handler.data(d, piece, ts)
        if ooo:
            self._drain(flow, d, half, ts)

    def _skip_gap(self, flow: Flow, d: int, half: Half, ts: float, upto: int | None = None) -> None:
        """Declare bytes lost: up to the earliest buffered segment, or only up to ``upto`` (a
        peer ACK: bytes before it were received, so the capture lost them; bytes after it may
        still arrive late)."""
        if not half.ooo:
            return
        n = min(_rel(s, half.next) for s in half.ooo)
        if upto is not None:
            n = min(n, _rel(upto, half.next))
        if n > 0:
            self.stats.anomaly("tcp.gap")
            half.next = (half.next + n) & _M
            half.bytes += n
            flow.handler.gap(d, n, ts)
        self._drain(flow, d, half, ts)

    def _check_fin(self, flow: Flow, d: int, half: Half, ts: float) -> None:
        if not half.done and half.fin_seq is not None and half.next is not None:
            if _rel(half.next, half.fin_seq) >= 0:
                half.done = True
                flow.handler.fin(d, ts)
                if flow.halves[1 - d].done:
                    self._end(flow, ts, "fin")

    # ---- flow lifecycle ----------------------------------------------------------------------
    def _new_flow(self, src: bytes, sport: int, dst: bytes, dport: int, ts: float) -> Flow:
        if len(self.flows) >= self.limits.max_flows:
            self._evict(ts)
        flow = Flow((src, sport), (dst, dport), ts)
        self.flows[(src, sport, dst, dport)] = flow
        self.stats.flows += 1
        flow.handler = self.new_handler(flow)
        return flow

    def _end(self, flow: Flow, ts: float, reason: str) -> None:
        if flow.closed:
            return
        if not flow.ignored:
            for d, half in enumerate(flow.halves):
                self._flush_ooo(flow, d, half, ts, keep=0)
                if not half.done and half.next is not None:
                    half.done = True
                    flow.handler.fin(d, ts)
        for half in flow.halves:  # an ignored flow's buffered segments are dropped unread
            if half.ooo_bytes:
                self.ooo_total -= half.ooo_bytes
                half.ooo.clear()
                half.ooo_bytes = 0
        flow.closed = True
        flow.handler.end(ts, reason)
        flow.handler = _CLOSED

    def _forget(self, flow: Flow) -> None:
        self.flows.pop((flow.a[0], flow.a[1], flow.b[0], flow.b[1]), None)

    def sweep(self, now: float) -> None:
        """End idle flows and drop lingering closed ones (runs every few seconds of capture time)."""
        self._next_sweep = now + _SWEEP_EVERY
        idle = self.limits.flow_idle_timeout
        for flow in list(self.flows.values()):
            age = now - flow.last_ts
            if flow.closed:
                if age > _LINGER:
                    self._forget(flow)
            elif flow.rst and age > _RST_LINGER:
                self._end(flow, now, "rst")
            elif age > idle:
                self._end(flow, now, "idle")
                self._forget(flow)

    def _evict(self, now: float) -> None:
        # closed flows first, then flows that never carried a byte (half-open: a SYN flood),
        # then the least recently active (list comprehensions and a C key: a flood evicts often)
        flows = self.flows.values()
        n = max(1, len(flows) // 10)
        victims = [f for f in flows if f.closed]
        for carried in (False, True):
            if len(victims) < n:
                live_ones = [f for f in flows if not f.closed and bool(f.bytes) == carried]
                victims += sorted(live_ones, key=_BY_AGE)[: n - len(victims)]
        live = 0
        for flow in victims[:n]:
            if not flow.closed:
                live += 1
                self._end(flow, now, "evicted")
            self._forget(flow)
        if live:
            self.stats.anomaly("tcp.flow_evicted", live)

    def close_all(self, ts: float | None = None) -> None:
        """End every flow (end of input)."""
        ts = self.now if ts is None else ts
        for flow in list(self.flows.values()):
            self._end(flow, ts, "eof")
        self.flows.clear()


class _Closed:
    def data(self, *a: object) -> None:
        pass

    gap = fin = end = data


_CLOSED = _Closed()
