#!/usr/bin/env python3
"""Make loopback packet captures of real HTTP servers, with the ground truth the client saw.

Usage (as root, tcpdump on PATH; from the repository root)::

    .venv/bin/python tests/captures/make_captures.py              # every scenario
    .venv/bin/python tests/captures/make_captures.py gzip ipv6    # some of them
    .venv/bin/python tests/captures/make_captures.py --list
    .venv/bin/python tests/captures/make_captures.py --verify     # also print tshark's view

For each scenario this script starts a real server (``http.server`` / ``socketserver`` subclasses,
an ``h2`` server for HTTP/2) bound to the scenario's own loopback address, starts
``tcpdump -i lo -s 0 -w tests/data/<scenario>.pcap 'host <that address>'``, waits until
tcpdump says "listening on", runs a client (``http.client`` or a raw socket client), stops
tcpdump with SIGINT and writes ``tests/data/<scenario>.json``::

    {"scenario": ..., "pcap": ..., "description": ..., "server": "127.0.0.11:80",
     "capture_filter": ..., "transactions": [ {...}, ... ]}

Every transaction holds what the client itself observed: ``connection`` (index of the TCP
connection in the capture, in order of opening), ``client``/``server`` (``ip:port``, IPv6 as
``[ip]:port``), ``protocol``, ``stream_id`` (HTTP/2), ``method``, ``uri``, ``host`` (Host header
or ``:authority``), ``status_code``, ``reason``, ``interim_statuses`` (1xx seen before the final
status), ``request_body_len``/``request_body_len_wire`` (de-chunked), ``response_body_len``
(de-chunked and content-decoded), ``response_body_len_wire`` (de-chunked, still content-encoded),
``response_content_encoding``, ``response_body_sha256`` / ``request_body_sha256`` (first 16 hex
digits of the sha256 of the decoded body) and ``flags`` (the sensor's flag names that apply:
``upgrade`` for a 101, ``connect`` for an established CONNECT tunnel).  Some carry a ``note``
and scenario specific extras (``response_trailers``, ``websocket_frames``, ``tunneled``).

Loopback's MTU is 65536; instead of changing it, every socket gets ``TCP_MAXSEG`` (1460 on
IPv4, 1440 on IPv6) and ``TCP_NODELAY`` and writes at most one MSS at a time, so bodies cross
many ordinary 1514-byte frames.  Content is deterministic (fixed texts, seeded generators,
gzip mtime 0, a fixed Date header); only addresses' ephemeral ports and timestamps vary.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import brotli
import h2.config
import h2.connection
import h2.events

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "tests" / "data"

CLIENT_V4 = "127.0.0.1"
CLIENT_V6 = "::1"
MSS = {socket.AF_INET: 1460, socket.AF_INET6: 1440}
TCP_TIMESTAMP_OPT = 12  # Linux uses TCP timestamps, so a segment carries MSS - 12 bytes
USER_AGENT = "apisensor-captures/1.0"
SERVER_NAME = "apisensor-testsrv/1.0"
FIXED_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"
SHA_HEX = 16
TIMEOUT = 10.0

# --------------------------------------------------------------------------------------------
# deterministic content


WORDS = (  # noqa: SIM905
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu api sensor "
    "packet capture stream header body chunk gzip deflate brotli request response latency"
).split()
CITIES = ["Lyon", "Paris", "Oslo", "Lima", "Kyoto", "Quito", "Perth", "Accra", "Porto", "Turin"]


def jb(obj) -> bytes:
    """Compact, key-sorted JSON bytes."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def text(n: int, seed: int) -> bytes:
    """Exactly ``n`` bytes of word soup, lines of at most 72 characters."""
    rng = random.Random(seed)
    out, line, total = [], [], 0
    while total < n:
        w = rng.choice(WORDS)
        if sum(len(x) + 1 for x in line) + len(w) > 72:
            s = " ".join(line) + "\n"
            out.append(s)
            total += len(s)
            line = []
        line.append(w)
    return "".join(out).encode()[:n]


def records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    recs = []
    for i in range(1, n + 1):
        name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}"
        recs.append(
            {
                "id": i,
                "name": name,
                "email": f"{name.split()[0].lower()}.{i}@example.test",
                "city": rng.choice(CITIES),
                "score": rng.randint(0, 1000),
                "active": rng.random() < 0.7,
                "tags": sorted({rng.choice(WORDS) for _ in range(3)}),
            }
        )
    return recs


def short_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:SHA_HEX]


def decode_content(body: bytes, encoding: str | None) -> bytes:
    """Undo ``Content-Encoding`` (the client's own decoding, used for the ground truth)."""
    layers = [e.strip().lower() for e in (encoding or "").split(",")]
    for enc in reversed([e for e in layers if e and e != "identity"]):
        if enc in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif enc == "deflate":
            try:
                body = zlib.decompress(body)  # RFC: zlib-wrapped
            except zlib.error:
                body = zlib.decompress(body, -15)  # what many servers send: raw deflate
        elif enc == "br":
            body = brotli.decompress(body)
        else:
            raise ValueError(f"unknown content-encoding {enc!r}")
    return body


# --------------------------------------------------------------------------------------------
# sockets


def tune(sock: socket.socket) -> None:
    """Small MSS + no Nagle.  On a listening socket accepted sockets inherit both."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS[sock.family])
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


SIOCOUTQNSD = 0x894B  # linux/sockios.h: bytes in the send queue not yet sent


def unsent_bytes(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0"))[0]


def send_small(sock: socket.socket, data: bytes) -> None:
    """Write ``data`` one segment's worth at a time (one write = one frame on lo).

    Before each write, wait until the previous one has left the send queue: otherwise the
    kernel appends to the unsent buffer and loopback (GSO) shows one frame of up to 64 KB.
    """
    seg = MSS[sock.family] - TCP_TIMESTAMP_OPT
    view = memoryview(bytes(data))
    for i in range(0, len(view), seg):
        deadline = time.monotonic() + TIMEOUT
        while unsent_bytes(sock) and time.monotonic() < deadline:
            time.sleep(0.0002)
        sock.sendall(view[i : i + seg])


def client_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    tune(sock)
    sock.bind((CLIENT_V6 if family == socket.AF_INET6 else CLIENT_V4, 0))
    sock.connect((host, port))
    return sock


def addr_str(sockaddr) -> str:
    host, port = sockaddr[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def http_host(host: str, port: int) -> str:
    """The Host header http.client sends for (host, port)."""
    h = f"[{host}]" if ":" in host else host
    return h if port == 80 else f"{h}:{port}"


def close_and_drain(sock: socket.socket) -> None:
    """Half-close, read until the peer closes too, then close (a clean FIN/FIN exchange)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass
    sock.close()


class SmallWriter:
    """``wfile`` replacement for request handlers: writes in MSS-sized pieces, unbuffered."""

    closed = False

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def write(self, data) -> int:
        send_small(self.sock, bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """A threading TCP server on one loopback address; records handler exceptions."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler):
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.errors: list[str] = []
        super().__init__(addr, handler)

    def server_bind(self):
        tune(self.socket)
        super().server_bind()
        # what http.server.HTTPServer.server_bind sets, without its slow getfqdn()
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        import traceback

        self.errors.append(traceback.format_exc())
        super().handle_error(request, client_address)


@contextlib.contextmanager
def serving(host: str, port: int, handler):
    srv = Server((host, port), handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        time.sleep(0.2)  # let handler threads finish closing their connections
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    if srv.errors:
        raise RuntimeError(f"server {host}:{port} failed:\n" + "\n".join(srv.errors))


# --------------------------------------------------------------------------------------------
# HTTP/1 helpers


class Handler(http.server.BaseHTTPRequestHandler):
    """Base for the scenario servers: fixed Date/Server, small writes, body helpers."""

    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    timeout = TIMEOUT

    def version_string(self):
        return self.server_version

    def date_time_string(self, timestamp=None):
        return FIXED_DATE

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.wfile = SmallWriter(self.connection)

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return read_chunked(self.rfile)[0]
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def respond(self, status: int, body: bytes = b"", headers=(), reason=None, content_length=True):
        self.send_response(status, reason)
        for k, v in headers:
            self.send_header(k, v)
        if content_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def respond_chunked(self, chunks, headers=(), exts=None, trailers=(), size_fmt=None):
        """Transfer-Encoding: chunked; ``exts[i]`` is a chunk extension (without ';')."""
        self.send_response(200)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Transfer-Encoding", "chunked")
        if trailers:
            self.send_header("Trailer", ", ".join(k for k, _ in trailers))
        self.end_headers()
        if self.command == "HEAD":
            return
        for i, chunk in enumerate(chunks):
            fmt = (size_fmt or {}).get(i, "x")
            size = format(len(chunk), fmt).encode()
            ext = exts[i] if exts and exts[i] else None
            head = size + (b";" + ext.encode() if ext else b"") + b"\r\n"
            self.wfile.write(head + chunk + b"\r\n")
        tail = b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in trailers) + b"\r\n"
        self.wfile.write(tail)

    def not_found(self):
        self.respond(
            404, jb({"error": "not found", "path": self.path}), [("Content-Type", "application/json")]
        )


class Client(http.client.HTTPConnection):
    """http.client with the capture socket options and MSS-sized writes."""

    def connect(self):
        self.sock = client_socket(self.host, self.port)
        if self._tunnel_host:
            self._tunnel()

    def send(self, data):
        if isinstance(data, (bytes, bytearray)):
            if self.sock is None:
                if not self.auto_open:
                    raise http.client.NotConnected()
                self.connect()
            send_small(self.sock, data)
        else:
            super().send(data)


def read_head(rf):
    """Read a response's status line and headers: (version, status, reason, [(k, v)])."""
    line = rf.readline(65537)
    if not line:
        raise EOFError("connection closed before a response")
    version, status, *rest = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    headers = []
    while True:
        h = rf.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
        k, v = h.decode("latin-1").split(":", 1)
        headers.append((k.strip(), v.strip()))
    return version, int(status), (rest[0] if rest else ""), headers


def hget(headers, name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def read_chunked(rf):
    body = bytearray()
    while True:
        line = rf.readline(65537).decode("latin-1")
        size = int(line.split(";", 1)[0].strip(), 16)
        if size == 0:
            break
        body += rf.read(size)
        if rf.read(2) != b"\r\n":
            raise ValueError("bad chunk terminator")
    trailers = []
    while True:
        line = rf.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
        k, v = line.decode("latin-1").split(":", 1)
        trailers.append((k.strip(), v.strip()))
    return bytes(body), trailers


@dataclasses.dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list
    body: bytes  # de-chunked, still content-encoded
    trailers: list
    interim: list


def read_response(rf, method: str) -> RawResponse:
    interim = []
    while True:
        version, status, reason, headers = read_head(rf)
        if 100 <= status < 200 and status != 101:
            interim.append(status)
            continue
        break
    trailers: list = []
    te = (hget(headers, "Transfer-Encoding") or "").lower()
    cl = hget(headers, "Content-Length")
    if method == "HEAD" or status in (101, 204, 304) or (method == "CONNECT" and 200 <= status < 300):
        body = b""
    elif "chunked" in te:
        body, trailers = read_chunked(rf)
    elif cl is not None:
        body = rf.read(int(cl))
        if len(body) != int(cl):
            raise EOFError("short body")
    else:
        body = rf.read()  # delimited by connection close
    return RawResponse(version, status, reason, headers, body, trailers, interim)


def build_request(
    method: str, uri: str, host: str, body: bytes | None = None, headers=(), version="HTTP/1.1"
) -> bytes:
    lines = [f"{method} {uri} {version}", f"Host: {host}", f"User-Agent: {USER_AGENT}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


# --------------------------------------------------------------------------------------------
# ground truth


class Truth:
    def __init__(self):
        self.transactions: list[dict] = []

    def add(
        self,
        *,
        connection: int,
        client: str,
        server: str,
        method: str | None,
        uri: str | None,
        host: str | None,
        status_code: int | None,
        reason: str | None = None,
        protocol: str = "HTTP/1.1",
        stream_id: int | None = None,
        request_body: bytes = b"",
        response_body_wire: bytes = b"",
        content_encoding: str | None = None,
        interim_statuses=(),
        flags=(),
        note: str | None = None,
        **extra,
    ) -> dict:
        decoded = decode_content(response_body_wire, content_encoding)
        tx = {
            "connection": connection,
            "client": client,
            "server": server,
            "protocol": protocol,
            "stream_id": stream_id,
            "method": method,
            "uri": uri,
            "host": host,
            "status_code": status_code,
            "reason": reason,
            "interim_statuses": list(interim_statuses),
            "request_body_len": len(request_body),
            "request_body_len_wire": len(request_body),
            "request_body_sha256": short_sha(request_body),
            "response_body_len": len(decoded),
            "response_body_len_wire": len(response_body_wire),
            "response_content_encoding": content_encoding,
            "response_body_sha256": short_sha(decoded),
            "flags": sorted(flags),
        }
        if note:
            tx["note"] = note
        tx.update(extra)
        self.transactions.append(tx)
        return tx

    def add_http_client(
        self,
        conn: http.client.HTTPConnection,
        connection: int,
        server: str,
        method: str,
        uri: str,
        resp: http.client.HTTPResponse,
        wire: bytes,
        request_body: bytes = b"",
        host: str | None = None,
        **extra,
    ) -> dict:
        return self.add(
            connection=connection,
            client=addr_str(conn.sock.getsockname()),
            server=server,
            protocol="HTTP/1.0" if resp.version == 10 else "HTTP/1.1",
            method=method,
            uri=uri,
            host=host if host is not None else http_host(conn.host, conn.port),
            status_code=resp.status,
            reason=resp.reason,
            request_body=request_body,
            response_body_wire=wire,
            content_encoding=resp.getheader("Content-Encoding"),
            **extra,
        )


# --------------------------------------------------------------------------------------------
# scenarios


@dataclasses.dataclass
class Scenario:
    name: str
    host: str
    port: int
    description: str
    fn: Callable[[Scenario, Truth], None]
    bpf: str = ""

    @property
    def server(self) -> str:
        return addr_str((self.host, self.port))

    def capture_filter(self) -> str:
        return self.bpf or f"host {self.host}"


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, host: str, port: int, description: str, bpf: str = ""):
    def deco(fn):
        SCENARIOS[name] = Scenario(name, host, port, description, fn, bpf)
        return fn

    return deco


JSON_CT = [("Content-Type", "application/json")]

# --- keepalive ------------------------------------------------------------------------------

USERS = records(5, seed=11)


class KeepaliveHandler(Handler):
    def do_GET(self):
        path, _, _query = self.path.partition("?")
        if path == "/api/users":
            self.respond(200, jb({"users": USERS, "total": len(USERS)}), JSON_CT)
        elif re.fullmatch(r"/api/users/\d+", path) and 1 <= int(path.rsplit("/", 1)[1]) <= len(USERS):
            self.respond(200, jb(USERS[int(path.rsplit("/", 1)[1]) - 1]), JSON_CT)
        elif path == "/api/health":
            self.respond(200, b'{"status":"ok"}', JSON_CT)
        else:
            self.not_found()

    def do_POST(self):
        data = json.loads(self.read_body())
        self.respond(201, jb({**data, "id": 6, "created": True}), JSON_CT + [("Location", "/api/users/6")])

    def do_PUT(self):
        data = json.loads(self.read_body())
        self.respond(200, jb({**USERS[1], **data, "updated": True}), JSON_CT)

    def do_DELETE(self):
        self.respond(200, jb({"deleted": int(self.path.rsplit("/", 1)[1])}), JSON_CT)


@scenario(
    "keepalive",
    "127.0.0.11",
    80,
    "7 GET/POST/PUT/DELETE with JSON bodies and Content-Length on one persistent HTTP/1.1 "
    "connection (http.client -> http.server), including a 404",
)
def run_keepalive(sc: Scenario, truth: Truth) -> None:
    new_user = jb({"name": "Tango Lima", "email": "tango.lima@example.test", "city": "Oslo", "tags": ["new"]})
    update = jb({"city": "Porto", "score": 999})
    reqs = [
        ("GET", "/api/users", None),
        ("GET", "/api/users/2?fields=name,email", None),
        ("POST", "/api/users", new_user),
        ("PUT", "/api/users/2", update),
        ("DELETE", "/api/users/3", None),
        ("GET", "/api/nope", None),
        ("GET", "/api/health", None),
    ]
    with serving(sc.host, sc.port, KeepaliveHandler):
        conn = Client(sc.host, sc.port, timeout=TIMEOUT)
        sock = None
        for method, uri, body in reqs:
            headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, uri, body=body, headers=headers)
            resp = conn.getresponse()
            wire = resp.read()
            sock = sock or conn.sock
            assert conn.sock is sock and not resp.will_close, "connection was not kept alive"
            truth.add_http_client(conn, 0, sc.server, method, uri, resp, wire, body or b"")
        conn.close()


# --- chunked --------------------------------------------------------------------------------

CHUNK_SIZES = [1, 16, 255, 1000, 4096, 3, 8000]
CHUNKS = [text(n, seed=100 + i) for i, n in enumerate(CHUNK_SIZES)]
EXT_CHUNKS = [text(10, 200), text(26, 201), text(300, 202)]
EXT_EXTS = ["name=value", 'foo="bar baz";flag', None]
TRAILER_CHUNKS = [jb(r) + b"\n" for r in records(3, seed=12)]
TRAILERS = [("X-Checksum", hashlib.sha256(b"".join(TRAILER_CHUNKS)).hexdigest()), ("X-Record-Count", "3")]
UPLOAD_PARTS = [text(100, 300), text(3000, 301), text(7, 302)]


class ChunkedHandler(Handler):
    def do_GET(self):
        if self.path == "/chunked/sizes":
            # hex sizes mixed case: 255 -> "FF", 1000 -> "3e8", 4096 -> "1000", 8000 -> "1F40"
            self.respond_chunked(CHUNKS, [("Content-Type", "text/plain")], size_fmt={2: "X", 6: "X"})
        elif self.path == "/chunked/ext":
            # zero-padded size ("000a") and chunk extensions
            self.respond_chunked(
                EXT_CHUNKS, [("Content-Type", "text/plain")], exts=EXT_EXTS, size_fmt={0: "04x"}
            )
        elif self.path == "/chunked/trailers":
            self.respond_chunked(
                TRAILER_CHUNKS, [("Content-Type", "application/x-ndjson")], trailers=TRAILERS
            )
        elif self.path == "/chunked/empty":
            self.respond_chunked([], [("Content-Type", "text/plain")])
        else:
            self.not_found()

    def do_POST(self):
        assert "chunked" in self.headers.get("Transfer-Encoding", "")
        body = self.read_body()
        self.respond(200, jb({"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}), JSON_CT)


@scenario(
    "chunked",
    "127.0.0.12",
    80,
    "Transfer-Encoding: chunked responses (chunk sizes 1..8000 with upper/lower-case hex, a "
    "zero-padded size, chunk extensions, trailers, an empty chunked body) and a chunked "
    "request body (POST /upload), one keep-alive connection (http.client -> http.server)",
)
def run_chunked(sc: Scenario, truth: Truth) -> None:
    with serving(sc.host, sc.port, ChunkedHandler):
        conn = Client(sc.host, sc.port, timeout=TIMEOUT)
        for uri in ["/chunked/sizes", "/chunked/ext", "/chunked/trailers", "/chunked/empty", "/upload"]:
            headers = {"User-Agent": USER_AGENT}
            extra = {}
            if uri == "/upload":
                body = b"".join(UPLOAD_PARTS)
                headers["Content-Type"] = "application/octet-stream"
                conn.request("POST", uri, body=iter(UPLOAD_PARTS), headers=headers, encode_chunked=True)
                method = "POST"
                extra["note"] = f"request body sent chunked in {len(UPLOAD_PARTS)} chunks"
            else:
                body = b""
                conn.request("GET", uri, headers=headers)
                method = "GET"
            resp = conn.getresponse()
            wire = resp.read()
            assert resp.chunked or uri == "/upload"
            if uri == "/chunked/trailers":
                extra["response_trailers"] = [list(t) for t in TRAILERS]
                extra["note"] = "trailers as sent by the server (http.client discards them)"
            truth.add_http_client(conn, 0, sc.server, method, uri, resp, wire, body, **extra)
        conn.close()


# --- gzip -----------------------------------------------------------------------------------

GZ_BODIES = {
    "/gzip": jb({"items": records(40, seed=21)}),
    "/deflate": text(12000, seed=22),
    "/raw-deflate": text(9000, seed=23),
    "/br": jb({"items": records(60, seed=24)}),
    "/gzip-chunked": text(20000, seed=25),
}


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


class GzipHandler(Handler):
    def do_GET(self):
        body = GZ_BODIES.get(self.path)
        if body is None:
            return self.not_found()
        ct = "application/json" if body.startswith(b"{") else "text/plain; charset=utf-8"
        hdrs = [("Content-Type", ct), ("Vary", "Accept-Encoding")]
        if self.path == "/gzip":
            self.respond(200, gzip.compress(body, 6, mtime=0), hdrs + [("Content-Encoding", "gzip")])
        elif self.path == "/deflate":
            self.respond(200, zlib.compress(body, 6), hdrs + [("Content-Encoding", "deflate")])
        elif self.path == "/raw-deflate":
            self.respond(200, raw_deflate(body), hdrs + [("Content-Encoding", "deflate")])
        elif self.path == "/br":
            self.respond(200, brotli.compress(body, quality=5), hdrs + [("Content-Encoding", "br")])
        elif self.path == "/gzip-chunked":
            gz = gzip.compress(body, 6, mtime=0)
            self.respond_chunked(
                [gz[i : i + 700] for i in range(0, len(gz), 700)], hdrs + [("Content-Encoding", "gzip")]
            )


@scenario(
    "gzip",
    "127.0.0.13",
    80,
    "content-encoded responses on one keep-alive connection: gzip, deflate (zlib-wrapped), "
    "deflate that is really raw deflate, br, and gzip + Transfer-Encoding: chunked",
)
def run_gzip(sc: Scenario, truth: Truth) -> None:
    with serving(sc.host, sc.port, GzipHandler):
        conn = Client(sc.host, sc.port, timeout=TIMEOUT)
        for uri in GZ_BODIES:
            conn.request(
                "GET", uri, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate, br"}
            )
            resp = conn.getresponse()
            wire = resp.read()
            tx = truth.add_http_client(conn, 0, sc.server, "GET", uri, resp, wire)
            assert tx["response_body_len"] == len(GZ_BODIES[uri]) > tx["response_body_len_wire"]
            if uri == "/raw-deflate":
                tx["note"] = "Content-Encoding: deflate but the body is raw deflate (no zlib header)"
        conn.close()


# --- pipelined ------------------------------------------------------------------------------

PIPE_BODIES = {"/p/1": text(500, 31), "/p/3": text(1200, 33), "/p/4": text(2500, 34), "/p/5": b"last\n"}


class PipelinedHandler(Handler):
    def do_GET(self):
        body = PIPE_BODIES.get(self.path)
        if body is None:
            return self.not_found()
        hdrs = [("Content-Type", "text/plain")]
        if self.path == "/p/4":  # a chunked response in the middle of the pipeline
            return self.respond_chunked([body[:1000], body[1000:]], hdrs)
        if self.headers.get("Connection", "").lower() == "close":
            hdrs.append(("Connection", "close"))
        self.respond(200, body, hdrs)

    do_HEAD = do_GET

    def do_POST(self):
        body = self.read_body()
        self.respond(201, jb({"received": len(body)}), JSON_CT)


@scenario(
    "pipelined",
    "127.0.0.14",
    80,
    "5 pipelined requests (GET, POST, HEAD, GET with a chunked answer, GET + Connection: close) "
    "sent in one write on one connection before reading; http.server answers in order",
)
def run_pipelined(sc: Scenario, truth: Truth) -> None:
    post_body = jb({"pipelined": True, "n": 2})
    reqs = [
        ("GET", "/p/1", None, []),
        ("POST", "/p/2", post_body, [("Content-Type", "application/json")]),
        ("HEAD", "/p/3", None, []),
        ("GET", "/p/4", None, []),
        ("GET", "/p/5", None, [("Connection", "close")]),
    ]
    host = http_host(sc.host, sc.port)
    with serving(sc.host, sc.port, PipelinedHandler):
        sock = client_socket(sc.host, sc.port)
        blob = b"".join(build_request(m, u, host, b, h) for m, u, b, h in reqs)
        assert len(blob) < MSS[sock.family] - TCP_TIMESTAMP_OPT
        sock.sendall(blob)  # one write, one segment
        rf = sock.makefile("rb")
        client = addr_str(sock.getsockname())
        for method, uri, body, _ in reqs:
            r = read_response(rf, method)
            truth.add(
                connection=0,
                client=client,
                server=sc.server,
                method=method,
                uri=uri,
                host=host,
                status_code=r.status,
                reason=r.reason,
                request_body=body or b"",
                response_body_wire=r.body,
                content_encoding=hget(r.headers, "Content-Encoding"),
                note=f"HEAD: Content-Length {hget(r.headers, 'Content-Length')}, no body"
                if method == "HEAD"
                else None,
            )
        assert rf.read() == b""  # server closed after Connection: close
        rf.close()
        sock.close()


# --- continue100 ----------------------------------------------------------------------------


class ContinueHandler(Handler):
    # http.server's handle_expect_100() writes "HTTP/1.1 100 Continue" before do_POST runs
    def do_POST(self):
        body = self.read_body()
        doc = json.loads(body)
        status = 201 if self.headers.get("Expect") else 200
        self.respond(
            status,
            jb({"stored": len(body), "keys": sorted(doc), "sha256": hashlib.sha256(body).hexdigest()}),
            JSON_CT,
        )


@scenario(
    "continue100",
    "127.0.0.15",
    80,
    "POST with Expect: 100-continue: the raw-socket client sends the headers, waits for the "
    "server's 100 Continue, then sends a 3 KB JSON body (final 201); then a plain POST on the "
    "same connection with Connection: close",
)
def run_continue100(sc: Scenario, truth: Truth) -> None:
    doc = jb({"document": text(3000, 41).decode(), "kind": "upload"})
    doc2 = jb({"kind": "second", "n": 2})
    host = http_host(sc.host, sc.port)
    with serving(sc.host, sc.port, ContinueHandler):
        sock = client_socket(sc.host, sc.port)
        rf = sock.makefile("rb")
        client = addr_str(sock.getsockname())
        sock.sendall(
            build_request(
                "POST",
                "/upload/doc",
                host,
                None,
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(doc))),
                    ("Expect", "100-continue"),
                ],
            )
        )
        _v, status, _reason, _h = read_head(rf)
        assert status == 100, status
        send_small(sock, doc)
        r = read_response(rf, "POST")
        truth.add(
            connection=0,
            client=client,
            server=sc.server,
            method="POST",
            uri="/upload/doc",
            host=host,
            status_code=r.status,
            reason=r.reason,
            request_body=doc,
            response_body_wire=r.body,
            interim_statuses=[100] + r.interim,
            note="body sent only after the 100 Continue arrived",
        )
        sock.sendall(
            build_request(
                "POST",
                "/upload/second",
                host,
                doc2,
                [("Content-Type", "application/json"), ("Connection", "close")],
            )
        )
        r = read_response(rf, "POST")
        truth.add(
            connection=0,
            client=client,
            server=sc.server,
            method="POST",
            uri="/upload/second",
            host=host,
            status_code=r.status,
            reason=r.reason,
            request_body=doc2,
            response_body_wire=r.body,
        )
        rf.close()
        close_and_drain(sock)


# --- status_nobody --------------------------------------------------------------------------

RESOURCE = text(2048, 51)
ETAG = '"' + hashlib.sha256(RESOURCE).hexdigest()[:16] + '"'


class NoBodyHandler(Handler):
    def do_HEAD(self):
        if self.path == "/resource":
            self.respond(200, RESOURCE, [("Content-Type", "text/plain"), ("ETag", ETAG)])
        elif self.path == "/resource-chunked":
            self.respond_chunked([RESOURCE], [("Content-Type", "text/plain")])
        else:
            self.not_found()

    def do_GET(self):
        if self.path == "/resource":
            if self.headers.get("If-None-Match") == ETAG:
                # 304 carrying the Content-Length the 200 would have had (allowed, RFC 9110 8.6)
                self.respond(
                    304, b"", [("ETag", ETAG), ("Content-Length", str(len(RESOURCE)))], content_length=False
                )
            else:
                self.respond(200, RESOURCE, [("Content-Type", "text/plain"), ("ETag", ETAG)])
        elif self.path == "/after":
            self.respond(200, b'{"in_sync":true}', JSON_CT)
        else:
            self.not_found()

    def do_DELETE(self):
        self.respond(204, b"", content_length=False)


@scenario(
    "status_nobody",
    "127.0.0.16",
    80,
    "responses without a body on one keep-alive connection: HEAD with Content-Length, HEAD "
    "with Transfer-Encoding: chunked, 304 with a Content-Length header, 204, then normal 200s",
)
def run_status_nobody(sc: Scenario, truth: Truth) -> None:
    reqs = [
        ("HEAD", "/resource", {}),
        ("HEAD", "/resource-chunked", {}),
        ("GET", "/resource", {"If-None-Match": ETAG}),
        ("DELETE", "/resource/7", {}),
        ("GET", "/resource", {}),
        ("GET", "/after", {}),
    ]
    with serving(sc.host, sc.port, NoBodyHandler):
        conn = Client(sc.host, sc.port, timeout=TIMEOUT)
        sock = None
        for method, uri, extra_headers in reqs:
            conn.request(method, uri, headers={"User-Agent": USER_AGENT, **extra_headers})
            resp = conn.getresponse()
            wire = resp.read()
            sock = sock or conn.sock
            assert conn.sock is sock
            note = None
            if method == "HEAD" or resp.status in (204, 304):
                note = (
                    f"no body; Content-Length: {resp.getheader('Content-Length')}, "
                    f"Transfer-Encoding: {resp.getheader('Transfer-Encoding')}"
                )
            truth.add_http_client(conn, 0, sc.server, method, uri, resp, wire, note=note)
        conn.close()


# --- http10_close ---------------------------------------------------------------------------

LEGACY = {"/legacy": text(5000, 61), "/legacy/form": text(700, 62), "/legacy/v11-client": text(3000, 63)}


class Http10Handler(Handler):
    protocol_version = "HTTP/1.0"  # responses are HTTP/1.0 and the server closes after each

    def _answer(self, body_in: bytes = b""):
        body = LEGACY.get(self.path)
        if body is None:
            return self.not_found()
        self.respond(
            200,
            body + (b"form=%d\n" % len(body_in) if body_in else b""),
            [("Content-Type", "text/plain")],
            content_length=False,
        )

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer(self.read_body())


@scenario(
    "http10_close",
    "127.0.0.17",
    80,
    "HTTP/1.0 responses without Content-Length, body delimited by the server closing the "
    "connection; 3 connections: GET HTTP/1.0, POST HTTP/1.0 with a form body, GET HTTP/1.1",
)
def run_http10_close(sc: Scenario, truth: Truth) -> None:
    host = http_host(sc.host, sc.port)
    form = b"user=tango&city=Lima&note=" + b"x" * 40
    reqs = [
        ("GET", "/legacy", None, [], "HTTP/1.0"),
        ("POST", "/legacy/form", form, [("Content-Type", "application/x-www-form-urlencoded")], "HTTP/1.0"),
        ("GET", "/legacy/v11-client", None, [], "HTTP/1.1"),
    ]
    with serving(sc.host, sc.port, Http10Handler):
        for i, (method, uri, body, headers, version) in enumerate(reqs):
            sock = client_socket(sc.host, sc.port)
            client = addr_str(sock.getsockname())
            sock.sendall(build_request(method, uri, host, body, headers, version=version))
            rf = sock.makefile("rb")
            r = read_response(rf, method)
            assert r.version == "HTTP/1.0" and hget(r.headers, "Content-Length") is None
            truth.add(
                connection=i,
                client=client,
                server=sc.server,
                protocol="HTTP/1.0",
                method=method,
                uri=uri,
                host=host,
                status_code=r.status,
                reason=r.reason,
                request_body=body or b"",
                response_body_wire=r.body,
                note=f"request {version}; response body ends at connection close",
                request_version=version,
            )
            rf.close()
            sock.close()
            time.sleep(0.05)


# --- query_method (port 5555) ---------------------------------------------------------------

CONTACTS = records(12, seed=71)
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:displayname/><d:getcontentlength/><d:getlastmodified/></d:prop></d:propfind>\n"
)


def multistatus(names: list[str]) -> bytes:
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<d:multistatus xmlns:d="DAV:">']
    for i, n in enumerate(names):
        parts.append(
            f"<d:response><d:href>/dav/files/{n}</d:href><d:propstat><d:prop><d:displayname>{n}"
            f"</d:displayname><d:getcontentlength>{1000 + 37 * i}</d:getcontentlength><d:getlastmodified>"
            f"{FIXED_DATE}</d:getlastmodified></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>"
            f"</d:response>"
        )
    parts.append("</d:multistatus>\n")
    return "\n".join(parts).encode()


class QueryHandler(Handler):
    def do_QUERY(self):
        q = json.loads(self.read_body())
        hits = [c for c in CONTACTS if c["city"] in q["cities"]][: q["limit"]]
        self.respond(200, jb({"results": hits, "count": len(hits)}), JSON_CT)

    def do_PROPFIND(self):
        self.read_body()
        body = multistatus([f"{w}.txt" for w in WORDS[:6]])
        self.respond(207, body, [("Content-Type", "application/xml; charset=utf-8")])

    def do_OPTIONS(self):
        self.respond(
            200,
            b"",
            [
                ("Allow", "OPTIONS, GET, QUERY, PROPFIND"),
                ("DAV", "1, 2"),
                ("Accept-Query", "application/json"),
            ],
        )


@scenario(
    "query_method",
    "127.0.0.18",
    5555,
    "non-classic methods on port 5555, one keep-alive connection: QUERY with a JSON body, "
    "WebDAV PROPFIND (Depth: 1, XML body, 207 Multi-Status), OPTIONS",
)
def run_query_method(sc: Scenario, truth: Truth) -> None:
    query = jb({"cities": ["Lyon", "Oslo", "Lima"], "limit": 5})
    reqs = [
        (
            "QUERY",
            "/contacts?view=compact",
            query,
            {"Content-Type": "application/json", "Accept": "application/json"},
        ),
        (
            "PROPFIND",
            "/dav/files/",
            PROPFIND_BODY,
            {"Content-Type": "application/xml; charset=utf-8", "Depth": "1"},
        ),
        ("OPTIONS", "/dav/files/", None, {}),
    ]
    with serving(sc.host, sc.port, QueryHandler):
        conn = Client(sc.host, sc.port, timeout=TIMEOUT)
        for method, uri, body, headers in reqs:
            conn.request(method, uri, body=body, headers={"User-Agent": USER_AGENT, **headers})
            resp = conn.getresponse()
            wire = resp.read()
            truth.add_http_client(conn, 0, sc.server, method, uri, resp, wire, body or b"")
        conn.close()


# --- HTTP/2 (h2c) ---------------------------------------------------------------------------

H2_ITEMS = jb({"items": records(15, seed=81)})
H2_COMPRESSED = jb({"items": records(50, seed=82)})
H2_UPGRADE_BODY = text(4000, 83)
H2_SECOND = jb({"second": True, "items": records(3, seed=84)})
H2_DATA_FRAME = 1000  # response DATA frames are at most this big (interleaved across streams)


def h2_route(req: dict) -> tuple[int, list, bytes]:
    path, method = req["headers"][":path"], req["headers"][":method"]
    if method == "GET" and path == "/h2/items":
        return 200, [("content-type", "application/json")], H2_ITEMS
    if method == "POST" and path == "/h2/submit":
        body = bytes(req["body"])
        return (
            201,
            [("content-type", "application/json")],
            jb({"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}),
        )
    if method == "GET" and path == "/h2/compressed":
        return (
            200,
            [("content-type", "application/json"), ("content-encoding", "gzip"), ("vary", "accept-encoding")],
            gzip.compress(H2_COMPRESSED, 6, mtime=0),
        )
    if method == "GET" and path == "/h2c/upgrade":
        return 200, [("content-type", "text/plain; charset=utf-8")], H2_UPGRADE_BODY
    if method == "GET" and path == "/h2c/second":
        return 200, [("content-type", "application/json")], H2_SECOND
    return 404, [("content-type", "application/json")], jb({"error": "not found", "path": path})


def h2_respond(sock, conn, batch: list[tuple[int, dict]]) -> None:
    """Answer a batch of finished streams: HEADERS in reverse stream order, then DATA frames
    interleaved round-robin across the streams."""
    pending = []
    for sid, req in sorted(batch, key=lambda x: -x[0]):
        status, headers, body = h2_route(req)
        hdrs = [(":status", str(status)), ("server", SERVER_NAME), ("date", FIXED_DATE)] + headers
        conn.send_headers(sid, hdrs + [("content-length", str(len(body)))], end_stream=not body)
        if body:
            pending.append([sid, body])
    send_small(sock, conn.data_to_send())
    while pending:
        for item in list(pending):
            sid, body = item
            piece, item[1] = body[:H2_DATA_FRAME], body[H2_DATA_FRAME:]
            if conn.local_flow_control_window(sid) < len(piece):
                raise RuntimeError("test bodies must fit in the initial HTTP/2 flow-control window")
            conn.send_data(sid, piece, end_stream=not item[1])
            if not item[1]:
                pending.remove(item)
        send_small(sock, conn.data_to_send())


def h2_serve(sock: socket.socket, conn, streams: dict | None = None, ready: list | None = None) -> None:
    """Serve an initiated server-side H2Connection until the client goes away.  Finished
    streams are answered together once the client has been idle for 150 ms."""
    streams = streams if streams is not None else {}
    ready = ready if ready is not None else []
    send_small(sock, conn.data_to_send())
    done = False
    while not done:
        readable, _, _ = select.select([sock], [], [], 0.15)
        if readable:
            data = sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    streams[ev.stream_id] = {"headers": dict(ev.headers), "body": bytearray()}
                elif isinstance(ev, h2.events.DataReceived):
                    streams[ev.stream_id]["body"] += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    ready.append(ev.stream_id)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    done = True
            out = conn.data_to_send()
            if out:
                send_small(sock, out)
        elif ready:
            h2_respond(sock, conn, [(sid, streams[sid]) for sid in ready])
            ready.clear()


def h2_client_exchange(
    sock, conn, recv, requests: list[tuple[int, list, bytes]], wait_for: list[int]
) -> dict:
    """Send ``requests`` (all in one write), then read until every stream in ``wait_for`` ended."""
    for sid, headers, body in requests:
        conn.send_headers(sid, headers, end_stream=not body)
        if body:
            conn.send_data(sid, body, end_stream=True)
    out = conn.data_to_send()
    if out:
        sock.sendall(out)  # preface/settings and every request in one write
    results = {sid: {"headers": None, "body": bytearray(), "ended": False} for sid in wait_for}
    while not all(r["ended"] for r in results.values()):
        data = recv()
        if not data:
            raise EOFError("HTTP/2 server closed early")
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                results[ev.stream_id]["headers"] = dict(ev.headers)
            elif isinstance(ev, h2.events.DataReceived):
                results[ev.stream_id]["body"] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                results[ev.stream_id]["ended"] = True
            elif isinstance(ev, h2.events.StreamReset):
                raise RuntimeError(f"stream {ev.stream_id} reset")
        out = conn.data_to_send()
        if out:
            send_small(sock, out)
    return results


def h2_request_headers(method: str, path: str, authority: str, extra=()) -> list:
    return [
        (":method", method),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
        ("user-agent", USER_AGENT),
    ] + list(extra)


def h2_truth(
    truth: Truth, sc: Scenario, client: str, sid: int, headers: list, body: bytes, result: dict, **extra
):
    h = dict(headers)
    rh = result["headers"]
    truth.add(
        connection=0,
        client=client,
        server=sc.server,
        protocol="HTTP/2",
        stream_id=sid,
        method=h[":method"],
        uri=h[":path"],
        host=h[":authority"],
        status_code=int(rh[":status"]),
        request_body=body,
        response_body_wire=bytes(result["body"]),
        content_encoding=rh.get("content-encoding"),
        **extra,
    )


def h2_client_close(sock, conn) -> None:
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    close_and_drain(sock)


class H2PriorHandler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(TIMEOUT)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        h2_serve(self.request, conn)


@scenario(
    "h2c_prior",
    "127.0.0.19",
    80,
    "HTTP/2 cleartext with prior knowledge (h2 client -> h2 server): 3 concurrent streams sent in "
    "one write (GET, POST with a JSON body, GET answered with gzip); the server sends HEADERS in "
    "reverse order and interleaves 1000-byte DATA frames",
)
def run_h2c_prior(sc: Scenario, truth: Truth) -> None:
    authority = http_host(sc.host, sc.port)
    post_body = jb({"submit": records(4, seed=85)})
    reqs = [
        (1, h2_request_headers("GET", "/h2/items", authority, [("accept", "application/json")]), b""),
        (
            3,
            h2_request_headers(
                "POST",
                "/h2/submit",
                authority,
                [("content-type", "application/json"), ("content-length", str(len(post_body)))],
            ),
            post_body,
        ),
        (5, h2_request_headers("GET", "/h2/compressed", authority, [("accept-encoding", "gzip")]), b""),
    ]
    with serving(sc.host, sc.port, H2PriorHandler):
        sock = client_socket(sc.host, sc.port)
        client = addr_str(sock.getsockname())
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        results = h2_client_exchange(sock, conn, lambda: sock.recv(65536), reqs, [1, 3, 5])
        for sid, headers, body in reqs:
            h2_truth(truth, sc, client, sid, headers, body, results[sid])
        h2_client_close(sock, conn)


class H2UpgradeHandler(Handler):
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() != "h2c" or "HTTP2-Settings" not in self.headers:
            return self.not_found()
        self.send_response(101)
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "h2c")
        self.end_headers()
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_upgrade_connection(self.headers["HTTP2-Settings"])
        # stream 1 is the HTTP/1.1 request that asked for the upgrade.  The client sends
        # nothing more before it has read the 101, so rfile holds no buffered bytes: read
        # the socket directly from here on.
        req = {
            "headers": {
                ":method": "GET",
                ":path": self.path,
                ":authority": self.headers["Host"],
                ":scheme": "http",
            },
            "body": bytearray(),
        }
        h2_serve(self.connection, conn, {1: req}, [1])
        self.close_connection = True


@scenario(
    "h2c_upgrade",
    "127.0.0.20",
    80,
    "HTTP/1.1 GET with Upgrade: h2c + HTTP2-Settings, answered 101 by http.server, which then "
    "speaks HTTP/2 (h2): stream 1 carries the response to the upgraded request, then the client "
    "opens stream 3",
)
def run_h2c_upgrade(sc: Scenario, truth: Truth) -> None:
    host = http_host(sc.host, sc.port)
    with serving(sc.host, sc.port, H2UpgradeHandler):
        sock = client_socket(sc.host, sc.port)
        client = addr_str(sock.getsockname())
        rf = sock.makefile("rb")
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        settings = conn.initiate_upgrade_connection()
        settings = settings.decode() if isinstance(settings, bytes) else settings
        sock.sendall(
            build_request(
                "GET",
                "/h2c/upgrade",
                host,
                None,
                [
                    ("Accept", "*/*"),
                    ("Connection", "Upgrade, HTTP2-Settings"),
                    ("Upgrade", "h2c"),
                    ("HTTP2-Settings", settings),
                ],
            )
        )
        _v, status, reason, _h = read_head(rf)
        assert status == 101, status
        truth.add(
            connection=0,
            client=client,
            server=sc.server,
            method="GET",
            uri="/h2c/upgrade",
            host=host,
            status_code=101,
            reason=reason,
            flags=["upgrade"],
            note="HTTP/1.1 part of the upgrade; its response arrives as HTTP/2 stream 1",
        )
        recv = lambda: rf.read1(65536)  # noqa: E731 - rf may already hold HTTP/2 bytes
        res1 = h2_client_exchange(sock, conn, recv, [], [1])  # sends the client preface first
        h2_truth(
            truth,
            sc,
            client,
            1,
            h2_request_headers("GET", "/h2c/upgrade", host),
            b"",
            res1[1],
            note="stream 1 = the upgraded HTTP/1.1 request (request headers were sent in HTTP/1.1)",
        )
        h3 = h2_request_headers("GET", "/h2c/second", host, [("accept", "application/json")])
        res3 = h2_client_exchange(sock, conn, recv, [(3, h3, b"")], [3])
        h2_truth(truth, sc, client, 3, h3, b"", res3[3])
        rf.close()
        h2_client_close(sock, conn)


# --- websocket ------------------------------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS_MASKS = [
    b"\x11\x22\x33\x44",
    b"\x55\x66\x77\x88",
    b"\x99\xaa\xbb\xcc",
    b"\x0d\x0e\x0f\x10",
    b"\x01\x02\x03\x04",
]
WS_FAKE_HTTP = b"GET /not-http HTTP/1.1\r\nHost: evil.example\r\n\r\n"


def ws_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    n = len(payload)
    b1 = 0x80 if mask else 0
    if n < 126:
        head = bytes([0x80 | opcode, b1 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, b1 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, b1 | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def ws_read(rf) -> tuple[int, bytes]:
    h = rf.read(2)
    if len(h) < 2:
        raise EOFError("websocket closed")
    opcode, masked, n = h[0] & 0x0F, h[1] & 0x80, h[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", rf.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", rf.read(8))[0]
    mask = rf.read(4) if masked else None
    payload = rf.read(n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


class WebSocketHandler(Handler):
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() != "websocket":
            return self.not_found()
        accept = base64.b64encode(
            hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self._headers_buffer.append(b"\r\n")
        # the 101 and the first websocket frame leave in the same write (same segment)
        self.wfile.write(b"".join(self._headers_buffer) + ws_frame(0x1, b"welcome"))
        self._headers_buffer = []
        while True:
            opcode, payload = ws_read(self.rfile)
            if opcode in (0x1, 0x2):
                self.wfile.write(ws_frame(opcode, payload))
            elif opcode == 0x9:
                self.wfile.write(ws_frame(0xA, payload))
            elif opcode == 0x8:
                self.wfile.write(ws_frame(0x8, payload[:2]))
                break
        self.close_connection = True


@scenario(
    "websocket",
    "127.0.0.21",
    80,
    "HTTP/1.1 websocket handshake answered 101 (first server frame in the same segment as the "
    "101), then masked client frames (text, text that looks like an HTTP request, 300-byte "
    "binary, ping, close) echoed by the server; only the 101 is an HTTP transaction",
)
def run_websocket(sc: Scenario, truth: Truth) -> None:
    host = http_host(sc.host, sc.port)
    expected_accept = base64.b64encode(hashlib.sha1((WS_KEY + WS_GUID).encode()).digest()).decode()
    client_frames = [
        (0x1, b"hello"),
        (0x1, WS_FAKE_HTTP),
        (0x2, bytes(range(256)) + bytes(44)),
        (0x9, b"ping"),
        (0x8, struct.pack("!H", 1000) + b"bye"),
    ]
    frames = []
    with serving(sc.host, sc.port, WebSocketHandler):
        sock = client_socket(sc.host, sc.port)
        client = addr_str(sock.getsockname())
        rf = sock.makefile("rb")
        sock.sendall(
            build_request(
                "GET",
                "/ws/chat",
                host,
                None,
                [
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Key", WS_KEY),
                    ("Sec-WebSocket-Version", "13"),
                    ("Origin", f"http://{host}"),
                ],
            )
        )
        _v, status, reason, headers = read_head(rf)
        assert status == 101 and hget(headers, "Sec-WebSocket-Accept") == expected_accept
        op, payload = ws_read(rf)
        frames.append({"direction": "server", "opcode": op, "payload_len": len(payload)})
        for (op, payload), mask in zip(client_frames, WS_MASKS):
            sock.sendall(ws_frame(op, payload, mask))
            frames.append({"direction": "client", "opcode": op, "payload_len": len(payload)})
            rop, rpayload = ws_read(rf)
            frames.append({"direction": "server", "opcode": rop, "payload_len": len(rpayload)})
        truth.add(
            connection=0,
            client=client,
            server=sc.server,
            method="GET",
            uri="/ws/chat",
            host=host,
            status_code=101,
            reason=reason,
            flags=["upgrade"],
            websocket_frames=frames,
            note="everything after the 101 is websocket; a server frame echoes "
            "'GET /not-http HTTP/1.1' unmasked, which must not become a transaction",
        )
        rf.close()
        close_and_drain(sock)


# --- connect --------------------------------------------------------------------------------

ORIGIN_HOST, ORIGIN_PORT = "127.0.0.122", 80  # not captured: the filter only has the proxy address
TUNNEL_BODIES = {
    "/tunnel/a": jb({"via": "tunnel", "items": records(8, seed=91)}),
    "/tunnel/b": text(2600, 92),
}


class OriginHandler(Handler):
    def do_GET(self):
        body = TUNNEL_BODIES.get(self.path)
        if body is None:
            return self.not_found()
        self.respond(
            200, body, [("Content-Type", "application/json" if body.startswith(b"{") else "text/plain")]
        )


class ProxyHandler(Handler):
    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.settimeout(TIMEOUT)
        tune(upstream)
        upstream.bind(("127.0.0.1", 0))
        upstream.connect((host, int(port)))
        self.send_response(200, "Connection established")
        self.end_headers()
        # The client sends nothing before reading the 200, so rfile has nothing buffered.
        down = self.connection
        open_dirs = {down: upstream, upstream: down}
        while open_dirs:
            readable, _, _ = select.select(list(open_dirs), [], [], TIMEOUT)
            if not readable:
                raise TimeoutError("tunnel idle")
            for src in readable:
                dst = open_dirs[src]
                data = src.recv(65536)
                if data:
                    send_small(dst, data)
                else:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    del open_dirs[src]
        upstream.close()
        self.close_connection = True


@scenario(
    "connect",
    "127.0.0.22",
    8080,
    "forward proxy on 127.0.0.22:8080: CONNECT 127.0.0.122:80 answered 200, then two plain "
    "HTTP/1.1 GETs (http.client) through the tunnel to a real http.server; only the "
    "client<->proxy leg is captured",
)
def run_connect(sc: Scenario, truth: Truth) -> None:
    target = f"{ORIGIN_HOST}:{ORIGIN_PORT}"
    with serving(ORIGIN_HOST, ORIGIN_PORT, OriginHandler), serving(sc.host, sc.port, ProxyHandler):
        sock = client_socket(sc.host, sc.port)
        client = addr_str(sock.getsockname())
        sock.sendall(build_request("CONNECT", target, target, None, [("Proxy-Connection", "Keep-Alive")]))
        rf = sock.makefile("rb")
        r = read_response(rf, "CONNECT")
        rf.close()
        assert r.status == 200
        truth.add(
            connection=0,
            client=client,
            server=sc.server,
            method="CONNECT",
            uri=target,
            host=target,
            status_code=r.status,
            reason=r.reason,
            flags=["connect"],
        )
        conn = Client(ORIGIN_HOST, ORIGIN_PORT, timeout=TIMEOUT)
        conn.sock = sock  # http.client over the established tunnel
        for uri in TUNNEL_BODIES:
            conn.request("GET", uri, headers={"User-Agent": USER_AGENT})
            resp = conn.getresponse()
            wire = resp.read()
            tx = truth.add_http_client(
                conn,
                0,
                sc.server,
                "GET",
                uri,
                resp,
                wire,
                tunneled=True,
                note=f"plain HTTP inside the CONNECT tunnel to {target}",
            )
            tx["server"] = sc.server  # on the wire this is the proxy connection
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
        conn.close()


# --- large_body (port 8081) -----------------------------------------------------------------


def large_json(target: int, seed: int) -> bytes:
    recs = records(1200, seed)
    lo, hi = 1, len(recs)
    while lo < hi:  # fewest records reaching the target size
        mid = (lo + hi) // 2
        if len(jb({"items": recs[:mid]})) >= target:
            hi = mid
        else:
            lo = mid + 1
    return jb({"items": recs[:lo]})


LARGE = large_json(150 * 1024, seed=101)
INGEST = large_json(8 * 1024, seed=102)


class LargeHandler(Handler):
    def do_GET(self):
        if self.path == "/large.json":
            self.respond(200, LARGE, JSON_CT)
        else:
            self.not_found()

    def do_POST(self):
        body = self.read_body()
        self.respond(201, jb({"ingested": len(json.loads(body)["items"]), "bytes": len(body)}), JSON_CT)


@scenario(
    "large_body",
    "127.0.0.23",
    8081,
    "port 8081, one keep-alive connection: POST /ingest with an 8 KB JSON body, then GET "
    "/large.json answered with a ~150 KB JSON body in ~105 full-size (1448-byte) segments",
)
def run_large_body(sc: Scenario, truth: Truth) -> None:
    with serving(sc.host, sc.port, LargeHandler):
        conn = Client(sc.host, sc.port, timeout=TIMEOUT)
        for method, uri, body in [("POST", "/ingest", INGEST), ("GET", "/large.json", None)]:
            headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
            if body:
                headers["Content-Type"] = "application/json"
            conn.request(method, uri, body=body, headers=headers)
            resp = conn.getresponse()
            wire = resp.read()
            truth.add_http_client(conn, 0, sc.server, method, uri, resp, wire, body or b"")
        conn.close()


# --- ipv6 -----------------------------------------------------------------------------------

V6_BODIES = {"/v6/info": jb({"family": "inet6", "items": records(4, seed=111)}), "/v6/text": text(3000, 112)}


class V6Handler(Handler):
    def do_GET(self):
        body = V6_BODIES.get(self.path)
        if body is None:
            return self.not_found()
        self.respond(
            200, body, [("Content-Type", "application/json" if body.startswith(b"{") else "text/plain")]
        )


@scenario(
    "ipv6",
    "::1",
    80,
    "two GETs over IPv6 loopback ([::1]:80 from [::1]) on one keep-alive connection; one body "
    "spans several 1428-byte segments",
    bpf="ip6 and host ::1 and tcp port 80",
)
def run_ipv6(sc: Scenario, truth: Truth) -> None:
    with serving(sc.host, sc.port, V6Handler):
        conn = Client(sc.host, sc.port, timeout=TIMEOUT)
        for uri in V6_BODIES:
            conn.request("GET", uri, headers={"User-Agent": USER_AGENT})
            resp = conn.getresponse()
            wire = resp.read()
            truth.add_http_client(conn, 0, sc.server, "GET", uri, resp, wire)
        conn.close()


# --------------------------------------------------------------------------------------------
# capture


@contextlib.contextmanager
def capture(pcap: Path, bpf: str):
    """tcpdump on lo for the duration of the block; fails on kernel drops."""
    cmd = [
        "tcpdump",
        "-i",
        "lo",
        "-s",
        "0",
        "-B",
        "32768",
        "-U",
        "--immediate-mode",
        "-Z",
        "root",
        "-w",
        str(pcap),
        bpf,
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = b""
    deadline = time.monotonic() + 15
    try:
        while b"listening on" not in err:
            if proc.poll() is not None:
                raise RuntimeError(f"tcpdump exited: {err.decode(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError("tcpdump did not start listening")
            readable, _, _ = select.select([proc.stderr], [], [], 0.1)
            if readable:
                err += os.read(proc.stderr.fileno(), 4096)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    time.sleep(0.3)
    ok = False
    try:
        yield
        ok = True
    finally:
        time.sleep(0.5)  # last ACKs/FINs
        proc.send_signal(signal.SIGINT)
        try:
            _, rest = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, rest = proc.communicate()
        err += rest
    msg = err.decode(errors="replace")
    captured = re.search(r"(\d+) packets? captured", msg)
    dropped = re.search(r"(\d+) packets? dropped by kernel", msg)
    if ok and (
        captured is None or dropped is None or int(dropped.group(1)) != 0 or int(captured.group(1)) == 0
    ):
        raise RuntimeError(f"bad capture {pcap}: {msg}")


def run_scenario(sc: Scenario, out_dir: Path) -> dict:
    truth = Truth()
    pcap = out_dir / f"{sc.name}.pcap"
    with capture(pcap, sc.capture_filter()):
        sc.fn(sc, truth)
    doc = {
        "scenario": sc.name,
        "pcap": pcap.name,
        "description": sc.description,
        "server": sc.server,
        "capture_filter": sc.capture_filter(),
        "generator": f"python tests/captures/make_captures.py {sc.name}",
        "transactions": truth.transactions,
    }
    (out_dir / f"{sc.name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def verify(sc: Scenario, out_dir: Path) -> None:
    """Print what tshark sees (HTTP/1 start lines and HTTP/2 headers)."""
    pcap = out_dir / f"{sc.name}.pcap"
    decode = ["-d", f"tcp.port=={sc.port},http"] if sc.port not in (80, 8080) else []
    cmd = [
        "tshark",
        "-n",
        "-r",
        str(pcap),
        *decode,
        "-Y",
        "http || http2.type == 1",
        "-T",
        "fields",
        "-e",
        "tcp.stream",
        "-e",
        "http.request.method",
        "-e",
        "http.request.uri",
        "-e",
        "http.response.code",
        "-e",
        "http2.streamid",
        "-e",
        "http2.header.value",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    for line in res.stdout.splitlines():
        print("    " + line[:160])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("--out", type=Path, default=DATA_DIR, help="output directory (default tests/data)")
    ap.add_argument("--verify", action="store_true", help="print tshark's view of each capture")
    args = ap.parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:14} {sc.server:18} {sc.description}")
        return 0
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(unknown)} (see --list)")
    if os.geteuid() != 0 or shutil.which("tcpdump") is None:
        ap.error("needs root and tcpdump")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.scenarios or list(SCENARIOS):
        sc = SCENARIOS[name]
        try:
            doc = run_scenario(sc, args.out)
        except Exception as exc:  # keep going; report at the end
            import traceback

            traceback.print_exc()
            failed.append(name)
            print(f"FAIL {name}: {exc}", file=sys.stderr)
            continue
        size = (args.out / doc["pcap"]).stat().st_size
        print(f"ok   {name:14} {len(doc['transactions'])} transactions, {size} bytes")
        if args.verify:
            verify(sc, args.out)
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
