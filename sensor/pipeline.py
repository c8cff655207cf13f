"""Wires the sensor's stages: records -> decode -> TCP reassembly -> protocol -> Transactions.

:class:`Pipeline` is sans-I/O as well: give it records (``feed``/``run``), get transactions
through the ``on_transaction`` callback, then call ``finish``.  Replay (files) and live
capture feed the same object.

Protocol detection is by content, per flow, on the first bytes of each direction
(:func:`detect`): an HTTP/1 request or status line, the HTTP/2 connection preface, or a TLS
record.  Flows that are none of these are ignored after their first bytes (their packets are
still counted).  When the capture began mid-connection, the first bytes may be the middle of
a message: the parser then resynchronises on the next start line it finds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from . import dns, tls
from .decode import Decoder
from .events import DNSAnswer, FlowSummary, TLSClientHello
from .http1 import _RESYNC_REQ, _RESYNC_RESP, SIMPLE_METHODS, HTTP1Connection, version_at_end
from .limits import Limits
from .sources import Record
from .stats import Stats
from .tcp import Flow, FlowTable
from .transaction import Transaction

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PEEK = 8192
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")  # bytes of each direction looked at for detection
_LONG_REQUEST = re.compile(rb"[A-Z][A-Z0-9_-]{0,31} (?:/|https?://)[!-~]{1000}")

HTTP1, HTTP2, TLS, OTHER = "http1", "h2", "tls", "other"
HTTP_PORTS = frozenset((80, 8000, 8008, 8080, 8888, 3128))  # tie-breaker for malformed text only
# counted as anomalies "body.truncated" (body_cap), "body.decode_limit" (decompressed_cap), ...
_BODY_FLAGS = frozenset(("truncated", "decode_limit", "decode_error"))


def _classify(b: bytes, final: bool) -> str | None:
    """What the first bytes of one direction are: "h2", "tls", "resp", "req", "no" (none of
    these), or None when more bytes are needed to tell."""
    n = len(b)
    if not n:
        return None
    if b[:24] == H2_PREFACE[: min(24, n)]:
        return "h2" if n >= 24 else (None if not final else "no")
    if b[0] == 0x16:
        if n < 6:
            return None if not final else "no"
        if b[1] == 3 and b[2] <= 4:
            return "tls"
    if b[:5] == b"HTTP/"[: min(5, n)]:
        return "resp" if n >= 5 else (None if not final else "no")
    nl = b.find(b"\n")
    line = b[:nl] if nl >= 0 else b
    if _BINARY.search(line, 0, 512):
        return "no"
    if nl < 0 and not final:
        if n < _PEEK:
            return None
        # a request line longer than we look at (a huge URI: an attack on HTTP, to be counted)
        return "req" if _LONG_REQUEST.match(b) else "no"
    line = line.rstrip(b"\r")
    if version_at_end(line) is not None:
        return "req"
    method, _, uri = line.partition(b" ")
    if method in SIMPLE_METHODS and uri.strip():
        return "req"
    return "no"


def _text_line(b: bytes) -> bool:
    nl = b.find(b"\n")
    return nl > 0 and not _BINARY.search(b, 0, nl)


def _http_port(ports: tuple[int, int] | None, client_dir: int) -> bool:
    return ports is not None and ports[1 - client_dir] in HTTP_PORTS


def detect(heads: tuple[bytes, bytes], client_dir: int | None, total: int, limit: int,
           final: bool = False, flow_ports: tuple[int, int] | None = None):
    """Decide (protocol, client_dir) from the first bytes of each direction, or None to wait.

    ``final``: the flow ended, nothing more will come (an unterminated request line counts).
    """
    kinds = [_classify(heads[0], final), _classify(heads[1], final)]
    for d in (0, 1):
        k = kinds[d]
        if k == "req":
            return HTTP1, d
        if k == "resp":
            return HTTP1, 1 - d
        if k == "h2":
            return HTTP2, d
        if k == "tls":
            return TLS, d if heads[d][5] == 1 else 1 - d
    give_up = final or total >= limit
    if client_dir is None:
        # picked up mid-stream: look for a start line anywhere in what we have
        for d in (0, 1):
            if _RESYNC_RESP.search(heads[d]):
                return HTTP1, 1 - d
            if _RESYNC_REQ.search(heads[d]):
                return HTTP1, d
        return (OTHER, None) if give_up else None
    if kinds[client_dir] == "no" and _text_line(heads[client_dir]) and _http_port(flow_ports, client_dir):
        # A malformed text request to an HTTP port (a probe, an attack, a broken client):
        # content alone can't call it HTTP, the port breaks the tie; the parser records it.
        return HTTP1, client_dir
    if kinds[1 - client_dir] == "no" or give_up:
        return OTHER, client_dir
    return None  # the client's first bytes are not a request: let the server's answer decide


class FlowHandler:
    """Buffers a new flow's first events until its protocol is known, then hands them over."""

    __slots__ = ("pipeline", "flow", "events", "heads", "total", "conn", "proto", "client_dir")

    def __init__(self, pipeline: Pipeline, flow: Flow):
        self.pipeline = pipeline
        self.flow = flow
        self.events: list[tuple] = []
        self.heads = [b"", b""]
        self.total = 0
        self.conn = None
        self.proto: str | None = None
        self.client_dir: int | None = None

    def data(self, d: int, payload: bytes, ts: float) -> None:
        conn = self.conn
        if conn is not None:
            conn.data(d, payload, ts)
            if conn.switch_to is not None:
                self._switch(ts)
            return
        self.events.append(("data", d, payload, ts))
        if len(self.heads[d]) < _PEEK:
            self.heads[d] += payload[: _PEEK - len(self.heads[d])]
        self.total += len(payload)
        self._detect()

    def gap(self, d: int, n: int, ts: float) -> None:
        if self.conn is not None:
            self.conn.gap(d, n, ts)
        elif self.proto is None:
            self.events.append(("gap", d, n, ts))

    def fin(self, d: int, ts: float) -> None:
        if self.conn is not None:
            self.conn.fin(d, ts)
        elif self.proto is None:
            self.events.append(("fin", d, None, ts))

    def end(self, ts: float, reason: str) -> None:
        if self.proto is None and self.events:
            self._detect(final=True)
        if self.conn is not None:
            self.conn.end(ts, reason)
        p = self.pipeline
        if p.on_event is not None:
            flow = self.flow
            cd = self.client_dir if self.client_dir is not None else (flow.client_dir or 0)
            client, server = self._endpoints(cd)
            p.on_event(FlowSummary(flow.first_ts, ts, client[0], client[1], server[0], server[1],
                                   self.proto or "unknown", flow.packets, flow.bytes, reason))

    def _detect(self, final: bool = False) -> None:
        flow = self.flow
        limit = self.pipeline.limits.detect_bytes
        r = detect((self.heads[0], self.heads[1]), flow.client_dir, self.total, 1 if final else limit, final,
                   (flow.a[1], flow.b[1]))
        if r is None:
            return
        proto, client_dir = r
        self.proto = proto
        self.client_dir = client_dir
        stats = self.pipeline.stats
        events, self.events = self.events, []
        if proto == HTTP1:
            stats.http_flows += 1
            self.conn = self._http1(client_dir)
        elif proto == HTTP2:
            stats.http_flows += 1
            self.conn = self._http2(client_dir, None)
        else:
            if proto == TLS:
                stats.tls_flows += 1
                self._tls_hello(client_dir, events[0][3] if events else flow.first_ts)
            else:
                stats.other_flows += 1
                if self.total and (flow.a[1] in HTTP_PORTS or flow.b[1] in HTTP_PORTS):
                    stats.anomaly("flow.not_http_on_http_port")  # binary junk, another protocol
            flow.ignored = True
            return
        for kind, d, arg, ts in events:
            if self.conn is None:
                break
            getattr(self, kind)(d, arg, ts) if kind != "fin" else self.fin(d, ts)

    def _tls_hello(self, client_dir: int, ts: float) -> None:
        p = self.pipeline
        if p.on_event is None:
            return
        hello = tls.client_hello(self.heads[client_dir])
        client, server = self._endpoints(client_dir)
        sni, alpn = hello if hello is not None else (None, ())
        p.on_event(TLSClientHello(ts, client[0], client[1], server[0], server[1], sni, alpn))

    def _endpoints(self, client_dir: int):
        flow = self.flow
        return (flow.a, flow.b) if client_dir == 0 else (flow.b, flow.a)

    def _http1(self, client_dir: int) -> HTTP1Connection:
        client, server = self._endpoints(client_dir)
        midstream = self.flow.client_dir is None
        p = self.pipeline
        return HTTP1Connection(client_dir, client, server, p.limits, p.stats, p.emit, (midstream, midstream))

    def _http2(self, client_dir: int, upgraded: Transaction | None):
        from .http2 import H2Connection

        client, server = self._endpoints(client_dir)
        p = self.pipeline
        conn = H2Connection(client[0], client[1], server[0], server[1], p.limits, p.stats, upgraded)
        return _H2Adapter(conn, client_dir, p.emit)

    def _switch(self, ts: float) -> None:
        """The HTTP/1 connection upgraded to h2c: continue with HTTP/2 on the same flow."""
        old = self.conn
        self.conn = self._http2(old.client_dir, old.upgrade_request)
        for d in (old.client_dir, 1 - old.client_dir):
            if old.leftover[d]:
                self.conn.data(d, old.leftover[d], ts)


class _H2Adapter:
    """Presents an H2Connection (from_client flag, returns transactions) as a StreamHandler."""

    __slots__ = ("conn", "client_dir", "emit", "switch_to")

    def __init__(self, conn, client_dir: int, emit: Callable[[Transaction], None]):
        self.conn = conn
        self.client_dir = client_dir
        self.emit = emit
        self.switch_to = None

    def _out(self, txs: list[Transaction]) -> None:
        for tx in txs:
            self.emit(tx)

    def data(self, d: int, payload: bytes, ts: float) -> None:
        self._out(self.conn.feed(d == self.client_dir, payload, ts))

    def gap(self, d: int, n: int, ts: float) -> None:
        self._out(self.conn.gap(d == self.client_dir, n, ts))

    def fin(self, d: int, ts: float) -> None:
        pass

    def end(self, ts: float, reason: str = "") -> None:
        self._out(self.conn.close(ts))


class Pipeline:
    """Records in, Transactions out (via ``on_transaction``)."""

    def __init__(
        self,
        on_transaction: Callable[[Transaction], None],
        limits: Limits | None = None,
        stats: Stats | None = None,
        on_event: Callable[[object], None] | None = None,
        shard: tuple[int, int] | None = None,
    ):
        """``on_event`` (optional) receives TLSClientHello, DNSAnswer and FlowSummary events.
        ``shard=(i, n)``: keep only the flows of worker i of n (see ``parallel.owner``)."""
        self.shard = shard
        self.limits = limits or Limits()
        self.stats = stats or Stats()
        self.on_transaction = on_transaction
        self.on_event = on_event
        self.decoder = Decoder(self.stats, self.limits)
        self.table = FlowTable(self.limits, self.stats, lambda flow: FlowHandler(self, flow))
        self.last_ts = 0.0

    def emit(self, tx: Transaction) -> None:
        if tx.protocol == "HTTP/2":
            self.stats.transactions += 1
        if tx.flags and not _BODY_FLAGS.isdisjoint(tx.flags):
            for flag in _BODY_FLAGS.intersection(tx.flags):  # a body bound hit, or undecodable
                self.stats.anomaly("body." + flag)
        self.on_transaction(tx)

    def feed(self, ts: float, linktype: int, data: bytes) -> None:
        stats = self.stats
        stats.packets += 1
        stats.bytes += len(data)
        seg = self.decoder.decode(ts, linktype, data)
        if seg is not None:
            if seg[0] == 6:
                self.table.segment(ts, seg)
            else:
                self._udp(ts, seg)

    def _udp(self, ts: float, seg: tuple) -> None:
        if self.on_event is not None and seg[3] in (53, 5353) and seg[8]:
            r = dns.parse_response(seg[8])
            if r is not None:
                self.on_event(DNSAnswer(ts, seg[2], seg[1], r[0], r[1], r[2]))

    def run(self, records: Iterable[Record]) -> None:
        if self.shard is not None:
            return self._run_shard(records)
        decode = self.decoder.decode
        segment = self.table.segment
        stats = self.stats
        n = nbytes = 0
        try:
            for ts, linktype, data in records:
                n += 1
                nbytes += len(data)
                seg = decode(ts, linktype, data)
                if seg is not None:
                    if seg[0] == 6:
                        segment(ts, seg)
                    else:
                        self._udp(ts, seg)
        finally:
            stats.packets += n
            stats.bytes += nbytes

    def _run_shard(self, records: Iterable[Record]) -> None:
        from .decode import _eth_ip4, _ports
        from .parallel import owner

        idx, n = self.shard
        decode = self.decoder.decode
        segment = self.table.segment
        stats = self.stats
        for ts, linktype, data in records:
            if linktype == 1 and len(data) >= 54:
                # another worker's packet on the decoder's fast path (Ethernet/IPv4/TCP, see
                # Decoder.decode): skipped without decoding it; the same hash as parallel.owner
                etype, vihl, total, frag, proto, src, dst = _eth_ip4(data, 0)
                if etype == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF and total >= 40:
                    sport, dport, doff = _ports(data, 34)
                    doff = (doff >> 4) << 2
                    if doff >= 20 and 34 + doff <= 14 + total <= len(data):
                        h = (((sport ^ dport) << 8) + src[-1] + dst[-1]) * 0x9E3779B1  # parallel.mix
                        if (h & 0xFFFFFFFF) * n >> 32 != idx:
                            continue
            seg = decode(ts, linktype, data)
            if (owner(seg, n) if seg is not None else 0) != idx:
                continue
            stats.packets += 1
            stats.bytes += len(data)
            if seg is not None:
                if seg[0] == 6:
                    segment(ts, seg)
                else:
                    self._udp(ts, seg)

    def tick(self, now: float) -> None:
        """Advance the capture clock without a packet (live capture on a quiet link): flows
        idle past their timeout end, stale IP fragments are dropped."""
        if now > self.table.now:
            self.table.now = now
            self.table.sweep(now)
            self.decoder.defrag.sweep(now)

    def finish(self) -> None:
        self.table.close_all()
        self.decoder.defrag.sweep(float("inf"))


def transactions(records: Iterable[Record], limits: Limits | None = None, stats: Stats | None = None):
    """Convenience for tests and scripts: the list of transactions in ``records``."""
    out: list[Transaction] = []
    p = Pipeline(out.append, limits, stats)
    p.run(records)
    p.finish()
    return out


def transactions_from_files(paths: list[str], limits: Limits | None = None, stats: Stats | None = None):
    from .sources import merge, open_files

    return transactions(merge(open_files(list(paths))), limits, stats)
