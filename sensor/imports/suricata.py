"""Suricata ``eve.json`` -> Transactions: ``http`` events, with the bodies of ``alert`` events.

One JSON object per line.  An ``http`` event is one transaction: ``hostname`` (+ ``http_port``),
``url``, ``http_method``, ``protocol``, ``status``, ``length`` (the response body as sent:
de-chunked, still content-encoded), ``http_user_agent``, ``http_content_type``,
``http_refer``, ``redirect``, ``xff``, fields logged with ``custom: [...]``, and every header
when ``dump-all-headers`` is on (``request_headers`` / ``response_headers``).  Suricata puts
bodies only in ``alert`` events (``types: - alert: {http-body: yes, http-body-printable:
yes}``), so an alert is merged into the http event of the same ``flow_id`` and ``tx_id``; an
alert whose http event is not in the file (http logging off) is a transaction of its own.
Merging keeps a bounded window of recent transactions (``WINDOW`` events or ``SECONDS`` of log
time), so memory stays flat on any file size.

Suricata logs no request start or response time (``timestamp`` is when the event was
written), so transactions have no latency; without a request body or its headers the request
body length is unknown (0).  A body is what Suricata held when it wrote the alert (after
de-chunking and decompression, up to ``response-body-limit``): when it is shorter than
``length`` and the response was not compressed, the transaction is flagged ``truncated``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ..transaction import FLAG_NO_RESPONSE, FLAG_TRUNCATED, Transaction
from . import Reader, cap, host_header, ip_bytes, port, protocol_of, timestamp

# output-json-http.c: the keys of "custom: [...]" fields and whether they are request headers
_CUSTOM_REQUEST = {
    "accept", "accept_charset", "accept_encoding", "accept_language", "accept_datetime", "authorization",
    "cache_control", "cookie", "from", "max_forwards", "origin", "pragma", "proxy_authorization", "range",
    "te", "via", "x_requested_with", "dnt", "x_forwarded_proto", "x_authenticated_user", "x_flash_version",
    "true_client_ip", "org_src_ip", "x_bluecoat_via",
}
_CUSTOM_RESPONSE = {
    "accept_range", "age", "allow", "connection", "content_encoding", "content_language", "content_length",
    "content_location", "content_md5", "content_range", "date", "etag", "expires", "last_modified", "link",
    "location", "proxy_authenticate", "refresh", "retry_after", "server", "set_cookie", "trailer",
    "transfer_encoding", "upgrade", "vary", "warning", "www_authenticate",
}
_BODY_KEYS = ("http_request_body", "http_response_body", "http_request_body_printable",
              "http_response_body_printable")


def _hname(key: str) -> str:
    return "-".join(w.capitalize() for w in key.split("_"))


def _headers(items) -> list[tuple[str, str]] | None:
    if not isinstance(items, list):
        return None
    return [(h["name"], h.get("value") if isinstance(h.get("value"), str) else "")
            for h in items if isinstance(h, dict) and isinstance(h.get("name"), str)]


def _body(http: dict, side: str) -> bytes | None:
    b64 = http.get(f"http_{side}_body")
    if isinstance(b64, str):
        try:
            return base64.b64decode(b64)
        except (binascii.Error, ValueError):
            pass
    text = http.get(f"http_{side}_body_printable")
    if isinstance(text, str):
        return text.encode("utf-8", "surrogateescape")  # lossy: Suricata wrote '.' for unprintable bytes
    return None


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def event_transaction(ev: dict[str, Any], http: dict[str, Any], ts: float, body_cap: int) -> Transaction:
    """A (merged) eve event as a Transaction; ``ev`` gives the addresses, ``http`` the fields."""
    server_port = port(ev.get("dest_port"))
    req_headers = _headers(http.get("request_headers"))
    if req_headers is None:
        req_headers = []
        host = host_header(http.get("hostname"), server_port, http.get("http_port"))
        if host:
            req_headers.append(("Host", host))
        for key, name in (("http_user_agent", "User-Agent"), ("http_refer", "Referer"),
                          ("xff", "X-Forwarded-For")):
            if isinstance(http.get(key), str):
                req_headers.append((name, http[key]))
        for key in sorted(_CUSTOM_REQUEST & http.keys()):
            vals = http[key] if isinstance(http[key], list) else [http[key]]
            req_headers.extend((_hname(key), str(v)) for v in vals)
    else:  # HTTP/2: pseudo-headers as the sensor has them (:authority is the Host header)
        pseudo = {k.lower(): v for k, v in req_headers if k.startswith(":")}
        req_headers = [(k, v) for k, v in req_headers if not k.startswith(":")]
        if _first(req_headers, "host") is None:
            host = pseudo.get(":authority") or host_header(http.get("hostname"), server_port,
                                                           http.get("http_port"))
            if host:
                req_headers.insert(0, ("Host", host))
    resp_headers = _headers(http.get("response_headers"))
    if resp_headers is None:
        resp_headers = []
        if isinstance(http.get("http_content_type"), str):
            resp_headers.append(("Content-Type", http["http_content_type"]))
        if isinstance(http.get("redirect"), str):
            resp_headers.append(("Location", http["redirect"]))
        for key in sorted(_CUSTOM_RESPONSE & http.keys()):
            if key in ("location",) and http.get("redirect"):
                continue
            resp_headers.append((_hname(key), str(http[key])))
    else:
        resp_headers = [(k, v) for k, v in resp_headers if not k.startswith(":")]
    method = http.get("http_method") if isinstance(http.get("http_method"), str) else None
    status = http.get("status")
    status = status if isinstance(status, int) and not isinstance(status, bool) and status > 0 else None
    flags: set[str] = set()
    if status is None:
        flags.add(FLAG_NO_RESPONSE)
    protocol, version = protocol_of(http.get("protocol"))

    qbody = _body(http, "request")
    if qbody is not None:
        qlen = len(qbody)
    else:
        cl = _first(req_headers, "content-length")
        qlen = int(cl) if cl and cl.strip().isascii() and cl.strip().isdigit() else 0  # not "1²"
        qbody = b""
    length = http.get("length")
    length = length if isinstance(length, int) and not isinstance(length, bool) and length >= 0 else 0
    rbody = _body(http, "response")
    if rbody is None:
        rbody, rlen = b"", length
    else:
        rlen = len(rbody)
        if rlen < length and not _first(resp_headers, "content-encoding"):
            flags.add(FLAG_TRUNCATED)  # Suricata kept only the head (response-body-limit)
            rlen = length
    qbody, q_cut = cap(qbody, body_cap)
    rbody, r_cut = cap(rbody, body_cap)
    if q_cut or r_cut:
        flags.add(FLAG_TRUNCATED)
    return Transaction(
        ts=ts,
        client_ip=ip_bytes(ev.get("src_ip")), client_port=port(ev.get("src_port")),
        server_ip=ip_bytes(ev.get("dest_ip")), server_port=server_port,
        protocol=protocol,
        method=method, uri=http.get("url") if isinstance(http.get("url"), str) else None,
        request_version=version if method else None,
        request_headers=tuple(req_headers),
        request_body=qbody, request_body_len=qlen, request_body_len_wire=qlen,
        status_code=status, response_version=version if status is not None else None,
        response_headers=tuple(resp_headers) if status is not None else (),
        response_body=rbody, response_body_len=rlen, response_body_len_wire=length,
        flags=frozenset(flags),
    )


def _client_first(ev: dict) -> dict:
    """An alert's addresses in the flow's direction (client first), whichever packet raised it."""
    flow = ev.get("flow")
    if isinstance(flow, dict) and "src_ip" in flow and "dest_ip" in flow:
        return {"src_ip": flow["src_ip"], "src_port": flow.get("src_port"),
                "dest_ip": flow["dest_ip"], "dest_port": flow.get("dest_port")}
    if ev.get("direction") == "to_client":
        return {"src_ip": ev.get("dest_ip"), "src_port": ev.get("dest_port"),
                "dest_ip": ev.get("src_ip"), "dest_port": ev.get("src_port")}
    return ev


class _Pending:
    __slots__ = ("ev", "http", "ts", "has_event", "size")

    def __init__(self, ev: dict, ts: float):
        self.ev = ev
        self.http: dict[str, Any] = {}
        self.ts = ts
        self.has_event = False
        self.size = 0  # bytes of the log lines folded in


class SuricataReader(Reader):
    format = "suricata"
    WINDOW = 256  # transactions waiting for their alerts or http event (alerts come first)
    SECONDS = 120.0  # ... or this much log time
    WINDOW_BYTES = 32 << 20  # ... or this many bytes of log lines (bodies make events big)
    PROBE_LINES = 100_000

    def __init__(self, path: str, body_cap: int = 256 * 1024):
        super().__init__(path)
        self.body_cap = body_cap
        self.other_events = 0  # flow, dns, stats, ...: not HTTP, not counted as skipped

    def transactions(self) -> Iterator[Transaction]:
        f = self.open()
        pending: OrderedDict[tuple, _Pending] = OrderedDict()
        done: OrderedDict[tuple, None] = OrderedDict()  # recently emitted keys (late alerts are dropped)
        newest = 0.0
        held = 0  # bytes of the lines in pending
        for lineno, line in enumerate(f, 1):
            if self.strict and lineno > self.PROBE_LINES:
                break
            line = line.strip()
            if not line:
                continue
            where = f"line {lineno}"
            try:
                ev = json.loads(line)
            except ValueError as e:
                self.bad(f"invalid JSON: {e.msg}", where)
                continue
            if not isinstance(ev, dict) or not isinstance(ev.get("event_type"), str):
                self.bad("not an eve event (no event_type)", where)
                continue
            kind = ev["event_type"]
            self.recognized = True
            http = ev.get("http")
            if kind not in ("http", "alert") or not isinstance(http, dict):
                self.other_events += 1
                continue
            ts = timestamp(ev.get("timestamp"))
            if ts is None:
                self.bad("event without a valid timestamp", where)
                continue
            newest = max(newest, ts)
            key = (ev.get("flow_id"), ev.get("tx_id"))
            if self.strict or key[0] is None or key[1] is None:
                if kind == "http" or self.strict:  # nothing to merge with (or probing): as it is
                    self.records += 1
                    yield event_transaction(ev, http, ts, self.body_cap)
                else:
                    self.skipped["alerts without flow_id/tx_id"] += 1
                continue
            if key in done:
                if kind == "alert":
                    self.skipped["alerts logged after their transaction was recorded"] += 1
                else:
                    self.skipped["duplicate http events"] += 1
                continue
            p = pending.get(key)
            if p is None:
                p = pending[key] = _Pending(ev if kind == "http" else _client_first(ev), ts)
            p.ts = min(p.ts, ts)
            p.size += len(line)
            held += len(line)
            if kind == "http":
                p.ev = ev
                p.has_event = True
                bodies = {k: p.http[k] for k in _BODY_KEYS if k in p.http}
                p.http = {**http, **bodies}
            else:
                for k, v in http.items():
                    if k in _BODY_KEYS:
                        old = p.http.get(k)
                        if not isinstance(old, str) or isinstance(v, str) and len(v) > len(old):
                            p.http[k] = v
                    elif not p.has_event:
                        p.http[k] = v
            while pending:
                k0, p0 = next(iter(pending.items()))
                fits = len(pending) <= self.WINDOW and held <= self.WINDOW_BYTES
                if fits and p0.ts >= newest - self.SECONDS:
                    break
                pending.popitem(last=False)
                held -= p0.size
                yield from self._emit(k0, p0, done)
        for k0, p0 in pending.items():
            yield from self._emit(k0, p0, done)

    def _emit(self, key: tuple, p: _Pending, done: OrderedDict) -> Iterator[Transaction]:
        done[key] = None
        if len(done) > 8 * self.WINDOW:
            done.popitem(last=False)
        self.records += 1
        yield event_transaction(p.ev, p.http, p.ts, self.body_cap)
