"""Write the Zeek and Suricata logs of ``tests/data/imports/imports.pcap`` for the import tests.

Neither Zeek nor Suricata can be installed on this machine (not in Debian bookworm's main
archive, not on PyPI), so the logs are written here from the transactions apisensor parses out
of the pcap, field by field in the format those tools write (Zeek 6 ``http.log`` with its
default fields, TSV and ``LogAscii::use_json=T``; Suricata 8 ``eve.json`` with the settings of
docs/imports.md).  What each tool would log differently is left out rather than made up:

* Zeek: ``ts`` is the request's first packet; ``host`` the Host header without its port;
  ``request_body_len``/``response_body_len`` the decoded lengths (what Zeek counts, README
  "Body lengths"); ``username`` from ``Authorization: Basic`` (no password: Zeek's
  ``HTTP::default_capture_password`` is off by default); ``proxied`` the proxy headers of
  ``HTTP::proxy_headers``; ``resp_mime_types``/``orig_mime_types`` the body's Content-Type,
  spelled as Zeek's file signatures name it (``text/json``), only for non-empty bodies;
  strings escaped as Zeek's ASCII writer escapes them.
* Suricata: one ``http`` event per transaction (``extended: yes``, ``dump-all-headers: both``,
  header values cut at 2047 characters as output-json-http.c does), written when the
  response ends; before it, the ``alert`` of the rule ``alert http1:response_complete ...``
  with ``http-body: yes`` (the decoded bodies, base64);
  ``length`` is the response body as sent (de-chunked, still content-encoded); a ``flow``
  event after each connection and a ``stats`` event at the end, which the importer skips.

Usage (from the repository root)::

    .venv/bin/python tests/captures/imports/make_logs.py [-o tests/data/imports]

Writes ``zeek/http.log``, ``zeek/http.json`` and ``suricata/eve.json.gz`` (gzip, as log rotation
leaves it).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import re
import socket
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from sensor.pipeline import transactions_from_files  # noqa: E402

ZEEK_FIELDS = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "trans_depth", "method", "host",
               "uri", "referrer", "version", "user_agent", "origin", "request_body_len", "response_body_len",
               "status_code", "status_msg", "info_code", "info_msg", "tags", "username", "password", "proxied",
               "orig_fuids", "orig_filenames", "orig_mime_types", "resp_fuids", "resp_filenames",
               "resp_mime_types"]
ZEEK_TYPES = ["time", "string", "addr", "port", "addr", "port", "count", "string", "string", "string", "string",
              "string", "string", "string", "count", "count", "count", "string", "count", "string", "set[enum]",
              "string", "string", "set[string]", "vector[string]", "vector[string]", "vector[string]",
              "vector[string]", "vector[string]", "vector[string]"]
PROXY_HEADERS = {"FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-FROM", "CLIENT-IP", "VIA", "XROXY-CONNECTION",
                 "PROXY-CONNECTION"}
ZEEK_MIME = {"application/json": "text/json"}  # Zeek's signature name for JSON bodies
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def ip(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(b) == 4 else socket.AF_INET6, b)


def zeek_id(prefix: str, *parts) -> str:
    n = zlib.crc32(repr(parts).encode()) << 32 | zlib.crc32(repr(parts[::-1]).encode())
    out = ""
    while n:
        n, r = divmod(n, 62)
        out += B62[r]
    return prefix + out[:17]


def zeek_escape(s: str, extra: str = "\t") -> str:
    """Zeek's ASCII writer: backslash, the separators and what is not printable UTF-8 as \\xHH."""
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\" or ch in extra or o < 32 or o == 127 or 0xDC80 <= o <= 0xDCFF:
            b = bytes([o - 0xDC00]) if o >= 0xDC80 else ch.encode()
            out.append("".join(f"\\x{x:02x}" for x in b))
        else:
            out.append(ch)
    return "".join(out)


def ctype(v: str | None) -> str | None:
    return v.split(";", 1)[0].strip().lower() if v else None


def zeek_record(tx, uid: str, depth: int) -> dict:
    host = tx.host
    if host and not host.startswith("["):
        host = host.split(":", 1)[0]
    user = None
    auth = tx.request_header("authorization")
    if auth and auth.lower().startswith("basic "):
        try:
            user = base64.b64decode(auth.split(None, 1)[1]).decode("latin-1").split(":", 1)[0]
        except (ValueError, IndexError):
            user = None
    proxied = [f"{k.upper()} -> {v}" for k, v in tx.request_headers if k.upper() in PROXY_HEADERS]
    info = tx.interim_statuses[-1] if tx.interim_statuses else None
    rec = {
        "ts": tx.ts, "uid": uid, "id.orig_h": ip(tx.client_ip), "id.orig_p": tx.client_port,
        "id.resp_h": ip(tx.server_ip), "id.resp_p": tx.server_port, "trans_depth": depth,
        "method": tx.method, "host": host, "uri": tx.uri, "referrer": tx.request_header("referer"),
        "version": tx.request_version, "user_agent": tx.user_agent, "origin": tx.request_header("origin"),
        "request_body_len": tx.request_body_len, "response_body_len": tx.response_body_len,
        "status_code": tx.status_code, "status_msg": tx.reason, "info_code": info,
        "info_msg": {100: "Continue", 101: "Switching Protocols"}.get(info) if info else None,
        "tags": [], "username": user, "password": None, "proxied": proxied or None,
    }
    if tx.request_body_len:
        ct = ctype(tx.request_header("content-type")) or "text/plain"
        rec["orig_fuids"] = [zeek_id("F", uid, depth, "orig")]
        rec["orig_mime_types"] = [ZEEK_MIME.get(ct, ct)]
    if tx.response_body_len:
        ct = ctype(tx.response_header("content-type")) or "text/plain"
        rec["resp_fuids"] = [zeek_id("F", uid, depth, "resp")]
        rec["resp_mime_types"] = [ZEEK_MIME.get(ct, ct)]
    return rec


def zeek_tsv(rec: dict) -> str:
    out = []
    for k in ZEEK_FIELDS:
        v = rec.get(k)
        if v is None:
            out.append("-")
        elif k == "ts":
            out.append(f"{v:.6f}")
        elif isinstance(v, list):
            out.append(",".join(zeek_escape(x, "\t,") for x in v) if v else "(empty)")
        elif isinstance(v, int):
            out.append(str(v))
        elif v == "":
            out.append("(empty)")
        elif v in ("-", "(empty)"):
            out.append("".join(f"\\x{b:02x}" for b in v.encode()))
        else:
            out.append(zeek_escape(v))
    return "\t".join(out)


def zeek_json(rec: dict) -> str:
    out = {}
    for k in ZEEK_FIELDS:
        v = rec.get(k)
        if v is None:
            continue
        out[k] = v
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def eve_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(round(ts % 1 * 1e6)) % 1000000:06d}+0000"


def suricata_http(tx, with_headers: bool) -> dict:
    h: dict = {}
    host = tx.host
    if host:
        m = re.match(r"^(\[[^\]]*\]|[^:]*)(?::(\d+))?$", host)
        if m:
            h["hostname"] = m.group(1).lower()
            if m.group(2):
                h["http_port"] = int(m.group(2))
    h["url"] = tx.uri
    if tx.user_agent is not None:
        h["http_user_agent"] = tx.user_agent
    if tx.request_header("x-forwarded-for") is not None:
        h["xff"] = tx.request_header("x-forwarded-for")
    if tx.response_header("content-type"):
        h["http_content_type"] = tx.response_header("content-type").split(";", 1)[0]
    if tx.request_header("referer") is not None:
        h["http_refer"] = tx.request_header("referer")
    h["http_method"] = tx.method
    h["protocol"] = tx.protocol
    if tx.status_code:
        h["status"] = tx.status_code
    if tx.response_header("location") is not None:
        h["redirect"] = tx.response_header("location")
    h["length"] = tx.response_body_len_wire
    if with_headers:
        for key, headers in (("request_headers", tx.request_headers), ("response_headers", tx.response_headers)):
            if headers:
                h[key] = [{"name": k[:255], "value": v[:2047]} for k, v in headers]
    return h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default=str(ROOT / "tests" / "data" / "imports"))
    args = ap.parse_args()
    out = Path(args.out)
    txs = sorted(transactions_from_files([str(out / "imports.pcap")]), key=lambda t: t.ts)
    conns: dict[tuple, list] = {}
    for tx in txs:
        conns.setdefault((tx.client_ip, tx.client_port, tx.server_ip, tx.server_port), []).append(tx)
    uid = {k: zeek_id("C", *k) for k in conns}
    flow_id = {k: zlib.crc32(repr(k).encode()) * 524287 % 2**51 for k in conns}
    depth: dict[tuple, int] = {}

    (out / "zeek").mkdir(exist_ok=True)
    (out / "suricata").mkdir(exist_ok=True)
    opened = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(txs[0].ts))
    closed = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(txs[-1].ts + 1))
    tsv = ["#separator \\x09", "#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-", "#path\thttp",
           f"#open\t{opened}", "#fields\t" + "\t".join(ZEEK_FIELDS), "#types\t" + "\t".join(ZEEK_TYPES)]
    jsonl = []
    for tx in txs:
        k = (tx.client_ip, tx.client_port, tx.server_ip, tx.server_port)
        depth[k] = depth.get(k, 0) + 1
        rec = zeek_record(tx, uid[k], depth[k])
        tsv.append(zeek_tsv(rec))
        jsonl.append(zeek_json(rec))
    tsv.append(f"#close\t{closed}")
    (out / "zeek" / "http.log").write_text("\n".join(tsv) + "\n")
    (out / "zeek" / "http.json").write_text("\n".join(jsonl) + "\n")

    # eve.json: events in the order Suricata writes them (by the time of the packet that ends a tx)
    events: list[tuple[float, int, dict]] = []
    tx_id: dict[tuple, int] = {}
    for tx in txs:
        k = (tx.client_ip, tx.client_port, tx.server_ip, tx.server_port)
        n = tx_id[k] = tx_id.get(k, -1) + 1
        end = tx.ts_end or tx.ts_response or tx.ts
        base = {"flow_id": flow_id[k], "in_iface": "lo"}
        tup = {"src_ip": ip(tx.client_ip), "src_port": tx.client_port, "dest_ip": ip(tx.server_ip),
               "dest_port": tx.server_port, "proto": "TCP"}
        alert_http = suricata_http(tx, with_headers=False)
        for side, body in (("request", tx.request_body), ("response", tx.response_body)):
            if body:
                alert_http[f"http_{side}_body"] = base64.b64encode(body).decode()
        alert = {"timestamp": eve_time(end), **base, "event_type": "alert",
                 "src_ip": tup["dest_ip"], "src_port": tup["dest_port"], "dest_ip": tup["src_ip"],
                 "dest_port": tup["src_port"], "proto": "TCP", "pkt_src": "wire/pcap", "tx_id": n,
                 "alert": {"action": "allowed", "gid": 1, "signature_id": 9000001, "rev": 1,
                           "signature": "apisensor: HTTP bodies", "category": "", "severity": 3},
                 "app_proto": "http", "direction": "to_client",
                 "flow": {"pkts_toserver": 0, "pkts_toclient": 0, "bytes_toserver": 0, "bytes_toclient": 0,
                          "start": eve_time(conns[k][0].ts), **{f: tup[f] for f in
                                                                ("src_ip", "dest_ip", "src_port", "dest_port")}},
                 "http": alert_http}
        http = {"timestamp": eve_time(end), **base, "event_type": "http", **tup, "pkt_src": "wire/pcap",
                "tx_id": n, "http": suricata_http(tx, with_headers=True)}
        events.append((end, 0, alert))
        events.append((end, 1, http))
    for k, group in conns.items():
        last = max((t.ts_end or t.ts) for t in group) + 0.001
        events.append((last, 2, {"timestamp": eve_time(last), "flow_id": flow_id[k], "in_iface": "lo",
                                 "event_type": "flow", "src_ip": ip(k[0]), "src_port": k[1], "dest_ip": ip(k[2]),
                                 "dest_port": k[3], "proto": "TCP", "app_proto": "http",
                                 "flow": {"start": eve_time(group[0].ts), "end": eve_time(last),
                                          "state": "closed", "reason": "shutdown", "alerted": True}}))
    events.sort(key=lambda e: (e[0], e[1]))
    stats = {"timestamp": eve_time(events[-1][0] + 1), "event_type": "stats",
             "stats": {"uptime": 1, "app_layer": {"flow": {"http": len(conns)}, "tx": {"http": len(txs)}}}}
    lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=False) for _, _, e in events] + [json.dumps(stats)]
    with gzip.open(out / "suricata" / "eve.json.gz", "wt", compresslevel=9) as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(txs)} transactions over {len(conns)} connections -> zeek/http.log, zeek/http.json, "
          f"suricata/eve.json.gz in {out}")


if __name__ == "__main__":
    main()
