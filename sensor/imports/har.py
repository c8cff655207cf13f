"""HAR 1.2 (HTTP Archive: browser DevTools, mitmproxy ``hardump``, Charles, Fiddler) -> Transactions.

A HAR file is one JSON document, ``{"log": {..., "entries": [...]}}``, and can be gigabytes.
:class:`JsonStream` walks it with the standard library's decoder one value at a time, so only
the current entry is in memory.

Per entry: ``request`` (method, url, httpVersion, headers, postData), ``response`` (status,
statusText, headers, content with ``text`` and optional ``encoding: base64``, bodySize),
``startedDateTime``, ``time``, ``timings`` and ``serverIPAddress``.  HTTP/2 pseudo-headers
(``:authority``, as Chrome records them) become the Host header as in the sensor; the server
port comes from the URL.  HAR keeps no client address: transactions get ``client_ip``
(default 0.0.0.0, port 0).  Bodies are the decoded content the HAR holds; ``*_len`` is their
length and ``*_len_wire`` the recorded transfer size (``bodySize``) when there is one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any, TextIO

from ..transaction import FLAG_NO_RESPONSE, FLAG_TRUNCATED, Transaction
from . import NO_ADDRESS, ImportFormatError, Reader, cap, ip_bytes, port, protocol_of, timestamp

_WS = re.compile(r"[ \t\r\n]*")
_DECODER = json.JSONDecoder()
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class JsonStream:
    """Incremental reader of one JSON document from a text stream: :meth:`members` walks an
    object's keys, :meth:`items` an array's elements, :meth:`value` decodes one whole value.
    The buffer holds the unread part only (plus what the current value needs)."""

    CHUNK = 256 << 10

    def __init__(self, f: TextIO):
        self.f = f
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.offset = 0  # characters dropped from the front of buf (for error positions)

    def _more(self, size: int | None = None) -> bool:
        if self.eof:
            return False
        data = self.f.read(size or self.CHUNK)
        if not data:
            self.eof = True
            return False
        if self.pos > (64 << 10) and self.pos * 2 > len(self.buf):
            self.offset += self.pos
            self.buf = self.buf[self.pos:] + data
            self.pos = 0
        else:
            self.buf += data
        return True

    def peek(self) -> str:
        """The next non-blank character ("" at the end)."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def error(self, what: str) -> ImportFormatError:
        where = self.offset + self.pos
        got = self.buf[self.pos:self.pos + 20]
        return ImportFormatError(f"{what} at character {where} (found {got!r})" if got else
                                 f"{what} at character {where}: the file ends there (cut short?)")

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise self.error(f"expected {ch!r}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        size = self.CHUNK
        while True:
            try:
                v, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if self._more(size):
                    size *= 2  # a big value: read ever larger pieces, so re-parsing stays linear
                    continue
                where = self.offset + e.pos
                if e.msg.startswith("Unterminated string") or not self.buf[e.pos:].strip():
                    raise ImportFormatError(f"the file ends inside a JSON value (cut short?) after character "
                                            f"{self.offset + len(self.buf)}") from None
                raise ImportFormatError(f"invalid JSON at character {where}: {e.msg}") from None
            if end == len(self.buf) and not isinstance(v, str | dict | list) and self._more():
                continue  # a number or literal may go on in the next piece
            self.pos = end
            return v

    def members(self) -> Iterator[str]:
        """Keys of the object that starts here; the caller reads each value before the next key."""
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            if self.peek() != '"':
                raise self.error("expected a key")
            key = self.value()
            self.expect(":")
            yield key
            c = self.peek()
            self.pos += 1
            if c == ",":
                continue
            if c == "}":
                return
            self.pos -= 1
            raise self.error("expected ',' or '}'")

    def items(self) -> Iterator[Any]:
        """The elements of the array that starts here, decoded one at a time."""
        self.expect("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            c = self.peek()
            self.pos += 1
            if c == ",":
                continue
            if c == "]":
                return
            self.pos -= 1
            raise self.error("expected ',' or ']'")


def har_entries(f: TextIO) -> Iterator[Any]:
    """The elements of ``log.entries``, streamed; ``ImportFormatError`` if the document is not a HAR."""
    js = JsonStream(f)
    if js.peek() != "{":
        raise js.error("not a HAR file: expected a JSON object")
    found = False
    for key in js.members():
        if key != "log":
            js.value()
            continue
        if js.peek() != "{":
            raise js.error("not a HAR file: 'log' is not an object")
        for k in js.members():
            if k == "entries":
                found = True
                if js.peek() != "[":
                    raise js.error("not a HAR file: 'log.entries' is not an array")
                yield from js.items()
            else:
                js.value()
    if not found:
        raise ImportFormatError("not a HAR file: no log.entries")


def _headers(items) -> list[tuple[str, str]]:
    out = []
    if isinstance(items, list):
        for h in items:
            if isinstance(h, dict) and isinstance(h.get("name"), str):
                v = h.get("value")
                out.append((h["name"], v if isinstance(v, str) else "" if v is None else str(v)))
    return out


def _charset(mime: str | None) -> str:
    if mime:
        for part in mime.split(";")[1:]:
            k, _, v = part.strip().partition("=")
            if k.lower() == "charset" and v:
                return v.strip('"')
    return "utf-8"


def _body(obj: dict, mime: str | None) -> bytes:
    """The bytes of a HAR ``content``/``postData`` object (``text``, base64 or not)."""
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        params = obj.get("params")
        if isinstance(params, list) and params:  # form fields recorded without the text
            from urllib.parse import urlencode

            return urlencode([(p.get("name", ""), p.get("value", "")) for p in params if isinstance(p, dict)]
                             ).encode()
        return b""
    if obj.get("encoding") == "base64":
        try:
            return base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError):
            return text.encode("utf-8", "surrogateescape")
    charset = _charset(mime)
    try:
        return text.encode(charset, "surrogateescape")
    except (LookupError, UnicodeEncodeError):
        return text.encode("utf-8", "surrogateescape")


def _split_url(url: str) -> tuple[str, str, str]:
    """``http://h:8080/p?q`` -> (scheme, authority, ``/p?q`` as it went on the wire)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url or "/"
    i = min((j for j in (rest.find("/"), rest.find("?")) if j >= 0), default=-1)
    authority, path = (rest[:i], rest[i:]) if i >= 0 else (rest, "/")
    if path.startswith("?"):
        path = "/" + path
    return scheme.lower(), authority.rsplit("@", 1)[-1], path.split("#", 1)[0]


def _authority_port(authority: str, scheme: str) -> int:
    if authority.startswith("["):
        _, _, rest = authority.partition("]")
        p = rest[1:] if rest.startswith(":") else ""
    else:
        p = authority.rpartition(":")[2] if ":" in authority else ""
    return port(p) if p.isdigit() else _DEFAULT_PORTS.get(scheme, 80)


def _num(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else None


def entry_transaction(e: dict, body_cap: int, client_ip: bytes) -> Transaction:
    """One HAR entry as a Transaction (``ValueError`` if it is not one)."""
    req = e.get("request")
    if not isinstance(req, dict) or not all(isinstance(req.get(k), str) for k in ("method", "url")):
        raise ValueError("entry without request.method and request.url")
    resp = e.get("response") if isinstance(e.get("response"), dict) else {}
    ts = timestamp(e.get("startedDateTime"))
    if ts is None:
        raise ValueError("entry without a valid startedDateTime")
    method = req["method"]
    scheme, authority, uri = _split_url(req["url"])
    if method == "CONNECT":
        uri = authority
    server_port = _authority_port(authority, scheme)

    rq_headers = _headers(req.get("headers"))
    pseudo = {k.lower(): v for k, v in rq_headers if k.startswith(":")}
    rq_headers = [(k, v) for k, v in rq_headers if not k.startswith(":")]
    if not any(k.lower() == "host" for k, _ in rq_headers):
        host = pseudo.get(":authority") or authority
        if host:
            rq_headers.insert(0, ("Host", host))
    protocol, req_version = protocol_of(req.get("httpVersion"))
    post = req.get("postData") if isinstance(req.get("postData"), dict) else {}
    req_ct = next((v for k, v in rq_headers if k.lower() == "content-type"), None) or post.get("mimeType")
    qbody = _body(post, req_ct) if post else b""
    body_size = _num(req.get("bodySize"))
    # a body the HAR sized but did not keep (mitmproxy keeps postData for POST/PUT/PATCH only)
    qlen = len(qbody) or int(body_size or 0)
    qwire = int(body_size) if body_size is not None and (body_size or not qlen) else qlen
    qbody, q_cut = cap(qbody, body_cap)

    flags: set[str] = set()
    status = resp.get("status")
    status = status if isinstance(status, int) and not isinstance(status, bool) and status > 0 else None
    rs_headers = [(k, v) for k, v in _headers(resp.get("headers")) if not k.startswith(":")]
    content = resp.get("content") if isinstance(resp.get("content"), dict) else {}
    if status is None:
        flags.add(FLAG_NO_RESPONSE)
        rbody, rlen, rwire, r_cut = b"", 0, 0, False
    else:
        resp_ct = (next((v for k, v in rs_headers if k.lower() == "content-type"), None)
                   or content.get("mimeType"))
        rbody = _body(content, resp_ct)
        size = _num(content.get("size"))
        rlen = len(rbody) if rbody or size is None else int(size)
        wire = _num(resp.get("bodySize"))
        rwire = int(wire) if wire is not None and (wire or not rlen) else rlen
        rbody, r_cut = cap(rbody, body_cap)
    if q_cut or r_cut:
        flags.add(FLAG_TRUNCATED)
    _, resp_version = protocol_of(resp.get("httpVersion")) if status is not None else (None, None)

    timings = e.get("timings") if isinstance(e.get("timings"), dict) else {}
    before = sum(t for k in ("blocked", "dns", "connect", "send", "wait")
                 if (t := _num(timings.get(k))) is not None)
    total = _num(e.get("time"))
    ts_response = ts + before / 1000.0 if status is not None and timings else None
    ts_end = ts + total / 1000.0 if total is not None else ts_response
    reason = resp.get("statusText") if isinstance(resp.get("statusText"), str) else None
    return Transaction(
        ts=ts,
        client_ip=client_ip, client_port=0,
        server_ip=ip_bytes(e.get("serverIPAddress")), server_port=server_port,
        protocol=protocol,
        method=method, uri=uri, request_version=req_version,
        request_headers=tuple(rq_headers),
        request_body=qbody, request_body_len=qlen, request_body_len_wire=qwire,
        ts_response=ts_response, ts_end=ts_end,
        status_code=status, reason=reason if status is not None else None,
        response_version=resp_version,
        response_headers=tuple(rs_headers),
        response_body=rbody, response_body_len=rlen, response_body_len_wire=rwire,
        flags=frozenset(flags),
    )


class HarReader(Reader):
    format = "har"

    def __init__(self, path: str, body_cap: int = 256 * 1024, client_ip: bytes | None = None):
        super().__init__(path)
        self.body_cap = body_cap
        self.client_ip = client_ip or NO_ADDRESS

    def transactions(self) -> Iterator[Transaction]:
        f = self.open()
        try:
            for i, e in enumerate(har_entries(f)):
                self.recognized = True
                if not isinstance(e, dict):
                    self.bad("entry is not an object", f"entry {i}")
                    continue
                try:
                    tx = entry_transaction(e, self.body_cap, self.client_ip)
                except ValueError as err:
                    self.bad(str(err), f"entry {i}")
                    continue
                self.records += 1
                yield tx
            self.recognized = True
        except ImportFormatError as err:
            # a cut or garbled file is read up to there (probe() refuses one that is no HAR at all)
            if self.strict:
                raise ImportFormatError(f"{self.path}: {err}") from None
            self.skipped[f"the rest of the file ({err})"] += 1
