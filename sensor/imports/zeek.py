"""Zeek ``http.log`` -> Transactions, in Zeek's TSV format (``#fields`` header) or as JSON lines
(``redef LogAscii::use_json = T;``).

Zeek logs one line per request/response pair and keeps no bodies and only a few headers, so a
transaction from it carries: the connection 4-tuple, ``ts`` (the request's first packet),
method, URI, Host (Zeek drops the port; it is put back for ports other than 80/443, as a
client sends it), User-Agent, Referer, Origin, the Basic-auth user name (as an
``Authorization: Basic`` header with the password when Zeek logged it, else empty), proxy
headers (``proxied``), status, reason, a 1xx ``info_code``, the decoded body lengths, and the
MIME types Zeek sniffed from the bodies as Content-Type (``text/json`` read as
``application/json``).  No other headers, no bodies, no latency.

TSV values are unescaped as Zeek escapes them (``\\xHH`` for separators, backslashes and
bytes that are not printable UTF-8); unset (``-``) and empty (``(empty)``) fields follow the
file's own header.  Lines of other logs (a ``#path`` other than ``http``, or a JSON ``_path``)
are skipped.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

from ..transaction import FLAG_NO_REQUEST, FLAG_NO_RESPONSE, Transaction
from . import ImportFormatError, Reader, host_header, ip_bytes, port, protocol_of, timestamp

_ESC = re.compile(rb"\\x([0-9a-fA-F]{2})")
_SETS = {"tags", "proxied", "orig_fuids", "orig_filenames", "orig_mime_types", "resp_fuids",
         "resp_filenames", "resp_mime_types"}
# the MIME types Zeek's file signatures name differently from what servers send
_MIME = {"text/json": "application/json"}
_HTTP_FIELDS = {"method", "uri", "status_code", "trans_depth", "host"}


def unescape(value: str) -> str:
    """Undo Zeek's ASCII escaping (``\\x09`` -> tab, ``\\x5c`` -> backslash, ...)."""
    if "\\x" not in value:
        return value
    raw = _ESC.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8", "surrogateescape"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _int(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def record_transaction(rec: dict[str, Any]) -> Transaction:
    """One http.log record (field name -> value, unset fields absent) as a Transaction."""
    ts = timestamp(rec.get("ts"))
    if ts is None:
        raise ValueError("record without a valid ts")
    server_port = port(rec.get("id.resp_p"))
    method = rec.get("method") or None
    headers: list[tuple[str, str]] = []
    host = host_header(rec.get("host"), server_port)
    if host:
        headers.append(("Host", host))
    for field, name in (("user_agent", "User-Agent"), ("referrer", "Referer"), ("origin", "Origin")):
        v = rec.get(field)
        if isinstance(v, str) and v:
            headers.append((name, v))
    user = rec.get("username")
    if isinstance(user, str) and user:
        pw = rec.get("password") if isinstance(rec.get("password"), str) else ""
        token = base64.b64encode(f"{user}:{pw}".encode("utf-8", "surrogateescape")).decode()
        headers.append(("Authorization", f"Basic {token}"))
    for p in rec.get("proxied") or ():
        if isinstance(p, str) and " -> " in p:
            name, _, value = p.partition(" -> ")
            headers.append((name.title(), value))
    qlen = _int(rec.get("request_body_len")) or 0
    rlen = _int(rec.get("response_body_len")) or 0
    orig_mime = rec.get("orig_mime_types") or ()
    if qlen and orig_mime and isinstance(orig_mime[0], str):
        headers.append(("Content-Type", _MIME.get(orig_mime[0], orig_mime[0])))
    status = _int(rec.get("status_code"))
    status = status if status is not None and status >= 0 else None
    resp_headers: list[tuple[str, str]] = []
    resp_mime = rec.get("resp_mime_types") or ([rec["mime_type"]] if rec.get("mime_type") else ())  # Bro 2.1
    if status is not None and resp_mime and isinstance(resp_mime[0], str):
        resp_headers.append(("Content-Type", _MIME.get(resp_mime[0], resp_mime[0])))
    info = _int(rec.get("info_code"))
    protocol, version = protocol_of(rec.get("version"))
    flags = set()
    if status is None:
        flags.add(FLAG_NO_RESPONSE)
    if method is None:
        flags.add(FLAG_NO_REQUEST)
    reason = rec.get("status_msg")
    return Transaction(
        ts=ts,
        client_ip=ip_bytes(rec.get("id.orig_h")), client_port=port(rec.get("id.orig_p")),
        server_ip=ip_bytes(rec.get("id.resp_h")), server_port=server_port,
        protocol=protocol,
        method=method, uri=rec.get("uri") if method is not None else None,
        request_version=version if method is not None else None,
        request_headers=tuple(headers) if method is not None else (),
        request_body_len=qlen, request_body_len_wire=qlen,
        status_code=status,
        reason=reason if isinstance(reason, str) and status is not None else None,
        response_version=version if status is not None else None,
        response_headers=tuple(resp_headers),
        response_body_len=rlen, response_body_len_wire=rlen,
        interim_statuses=(info,) if info is not None and 100 <= info < 200 else (),
        flags=frozenset(flags),
    )


def _flatten(obj: dict) -> dict:
    """Zeek JSON has ``"id.orig_h"``; some shippers nest it as ``{"id": {"orig_h": ...}}``."""
    ident = obj.get("id")
    if isinstance(ident, dict):
        obj = dict(obj)
        for k, v in ident.items():
            obj.setdefault(f"id.{k}", v)
    return obj


class ZeekReader(Reader):
    format = "zeek"
    PROBE_LINES = 100_000

    def transactions(self) -> Iterator[Transaction]:
        f = self.open()
        sep, set_sep, empty, unset = "\t", ",", "(empty)", "-"
        fields: list[str] | None = None
        log_path: str | None = None
        for lineno, line in enumerate(f, 1):
            if self.strict and lineno > self.PROBE_LINES:
                break
            line = line.rstrip("\r\n")
            if not line:
                continue
            where = f"line {lineno}"
            if line.startswith("#"):
                if line.startswith("#separator"):
                    sep = unescape(line[len("#separator"):].strip(" ")) or "\t"
                    continue
                name, _, value = line.partition(sep)
                if name == "#set_separator":
                    set_sep = unescape(value) or ","
                elif name == "#empty_field":
                    empty = unescape(value)
                elif name == "#unset_field":
                    unset = unescape(value)
                elif name == "#path":
                    log_path = value
                    if value != "http" and self.strict:
                        raise ImportFormatError(f"{self.path}: a Zeek {value}.log, not an http.log")
                elif name == "#fields":
                    fields = value.split(sep)
                    if not _HTTP_FIELDS & set(fields):
                        if self.strict:
                            raise ImportFormatError(f"{self.path}: {where}: no http.log fields in #fields")
                    elif log_path in (None, "http"):
                        self.recognized = True
                continue
            if line.startswith("{"):
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    self.bad(f"invalid JSON: {e.msg}", where)
                    continue
                if not isinstance(obj, dict):
                    self.bad("not a JSON object", where)
                    continue
                p = obj.get("_path")
                if p is not None and p != "http" or not _HTTP_FIELDS & obj.keys():
                    self.skipped["not an http.log record"] += 1
                    continue
                rec = _flatten(obj)
                self.recognized = True
            else:
                if fields is None:
                    self.bad("data before the #fields header", where)
                    continue
                if log_path not in (None, "http"):
                    self.skipped[f"{log_path}.log lines"] += 1
                    continue
                values = line.split(sep)
                if len(values) != len(fields):
                    self.bad(f"{len(values)} values for {len(fields)} fields", where)
                    continue
                rec = {}
                for k, v in zip(fields, values):
                    if v == unset:
                        continue
                    if k in _SETS:
                        rec[k] = [] if v == empty else [unescape(x) for x in v.split(set_sep)]
                    else:
                        rec[k] = "" if v == empty else unescape(v)
            try:
                tx = record_transaction(rec)
            except ValueError as e:
                self.bad(str(e), where)
                continue
            self.records += 1
            yield tx
