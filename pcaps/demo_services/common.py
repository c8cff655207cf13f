"""Shared plumbing for the demo services: addresses, JWTs, DNS wire format, HTTP helpers, servers.

Only the standard library plus Flask/werkzeug/waitress is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import logging
import random
import socket
import ssl
import struct
import threading
from dataclasses import dataclass

# --------------------------------------------------------------------------- addresses

GATEWAY_IP = "127.0.0.10"
USERS_IP = "127.0.0.11"
ORDERS_IP = "127.0.0.12"
INVENTORY_IP = "127.0.0.13"
PAYMENTS_IP = "127.0.0.14"
DNS_IP = "127.0.0.53"
BROWSER_IP = "127.0.0.100"
MOBILE_IP = "127.0.0.101"
SCANNER_IP = "127.0.0.102"

GATEWAY_PORT = 8080
BACKEND_PORT = 8000
PAYMENTS_PORT = 8443
DNS_PORT = 53

# The zone the DNS responder is authoritative for (A records only).
ZONE = {
    "gateway.shop.local": GATEWAY_IP,
    "users.shop.local": USERS_IP,
    "orders.shop.local": ORDERS_IP,
    "inventory.shop.local": INVENTORY_IP,
    "payments.shop.local": PAYMENTS_IP,
}

ALL_IPS = (
    GATEWAY_IP,
    USERS_IP,
    ORDERS_IP,
    INVENTORY_IP,
    PAYMENTS_IP,
    DNS_IP,
    BROWSER_IP,
    MOBILE_IP,
    SCANNER_IP,
)

# --------------------------------------------------------------------------- JWT (HS256, stdlib only)

JWT_SECRET = b"shop-demo-hs256-signing-key-2026-do-not-use-in-prod"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_encode(claims: dict, secret: bytes = JWT_SECRET) -> str:
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    sig = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64url(sig)


class InvalidToken(Exception):
    pass


def jwt_decode(token: str, secret: bytes | None = JWT_SECRET) -> dict:
    """Decode a compact HS256 JWT; verify the signature unless ``secret`` is None.

    (The demo services deliberately do not enforce ``exp``: the capture must
    regenerate identically on any date.)
    """
    try:
        head_b64, payload_b64, sig_b64 = token.split(".")
        header = json.loads(_b64url_decode(head_b64))
        claims = json.loads(_b64url_decode(payload_b64))
    except (ValueError, json.JSONDecodeError) as exc:
        raise InvalidToken("malformed token") from exc
    if header.get("alg") != "HS256":
        raise InvalidToken("unsupported alg")
    if secret is not None:
        expected = hmac.new(secret, f"{head_b64}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _b64url_decode(sig_b64)):
            raise InvalidToken("bad signature")
    return claims


def bearer_claims(auth_header: str | None, verify: bool = True) -> dict | None:
    """Claims of an ``Authorization: Bearer <jwt>`` header, or None if absent/invalid."""
    if not auth_header or not auth_header.startswith("Bearer "):
        return None
    try:
        return jwt_decode(auth_header[7:].strip(), JWT_SECRET if verify else None)
    except InvalidToken:
        return None


# --------------------------------------------------------------------------- DNS wire format

QTYPE_A = 1
QTYPE_AAAA = 28
QCLASS_IN = 1


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def decode_name(msg: bytes, offset: int) -> tuple[str, int]:
    """Read a (possibly compressed) name; return (name, offset just past it)."""
    labels: list[str] = []
    end = None
    jumps = 0
    while True:
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | msg[offset + 1]
            jumps += 1
            if jumps > 16:
                raise ValueError("DNS name compression loop")
            continue
        if length == 0:
            offset += 1
            break
        labels.append(msg[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length
    return ".".join(labels), (end if end is not None else offset)


def build_query(qid: int, name: str, qtype: int = QTYPE_A) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD=1
    return header + encode_name(name) + struct.pack("!HH", qtype, QCLASS_IN)


def parse_response(msg: bytes) -> tuple[int, int, list[tuple[str, int, int, bytes]]]:
    """Return (id, rcode, [(name, type, ttl, rdata), ...]) of a DNS response."""
    qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    offset = 12
    for _ in range(qd):
        _, offset = decode_name(msg, offset)
        offset += 4
    answers = []
    for _ in range(an):
        name, offset = decode_name(msg, offset)
        rtype, _rclass, ttl, rdlen = struct.unpack("!HHIH", msg[offset : offset + 10])
        offset += 10
        answers.append((name, rtype, ttl, msg[offset : offset + rdlen]))
        offset += rdlen
    return qid, flags & 0x000F, answers


class NameNotFound(Exception):
    pass


class StubResolver:
    """A tiny stub resolver: real UDP queries to the demo DNS server from a fixed source IP.

    Answers are cached for ``max_uses`` look-ups (not wall-clock TTL) so the
    number of queries in the capture does not depend on how fast the machine is.
    """

    def __init__(
        self, source_ip: str, seed: int, max_uses: int = 40, server: tuple[str, int] = (DNS_IP, DNS_PORT)
    ):
        self.source_ip = source_ip
        self.server = server
        self.max_uses = max_uses
        self._rng = random.Random(seed)
        self._cache: dict[str, list] = {}
        self._lock = threading.Lock()

    def query(self, name: str, qtype: int = QTYPE_A) -> tuple[int, list[tuple[str, int, int, bytes]]]:
        with self._lock:
            qid = self._rng.randrange(1, 0xFFFF)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.source_ip, 0))
            sock.settimeout(2.0)
            sock.sendto(build_query(qid, name, qtype), self.server)
            while True:
                data, _ = sock.recvfrom(4096)
                rid, rcode, answers = parse_response(data)
                if rid == qid:
                    return rcode, answers
        finally:
            sock.close()

    def resolve(self, name: str) -> str:
        with self._lock:
            entry = self._cache.get(name)
            if entry is not None and entry[1] > 0:
                entry[1] -= 1
                return entry[0]
        rcode, answers = self.query(name, QTYPE_A)
        addrs = [socket.inet_ntoa(rdata) for _n, rtype, _ttl, rdata in answers if rtype == QTYPE_A]
        if rcode != 0 or not addrs:
            raise NameNotFound(f"{name}: rcode={rcode}")
        with self._lock:
            self._cache[name] = [addrs[0], self.max_uses - 1]
        return addrs[0]


# --------------------------------------------------------------------------- HTTP client helpers


def http_connection(ip: str, port: int, source_ip: str, timeout: float = 5.0) -> http.client.HTTPConnection:
    """A plain HTTP/1.1 connection whose socket is bound to ``source_ip``."""
    return http.client.HTTPConnection(ip, port, timeout=timeout, source_address=(source_ip, 0))


def https_connection(
    ip: str, port: int, source_ip: str, sni: str, context: ssl.SSLContext, timeout: float = 5.0
) -> http.client.HTTPConnection:
    """TLS connection to ``ip`` that sends SNI ``sni`` and verifies the cert against it."""
    raw = socket.create_connection((ip, port), timeout=timeout, source_address=(source_ip, 0))
    tls = context.wrap_socket(raw, server_hostname=sni)
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    conn.sock = tls
    return conn


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def read_reply(resp: http.client.HTTPResponse) -> Reply:
    body = resp.read()  # http.client undoes chunked framing
    headers = {k.lower(): v for k, v in resp.getheaders()}
    if headers.get("content-encoding") == "gzip":
        import gzip

        body = gzip.decompress(body)
    return Reply(resp.status, headers, body)


# --------------------------------------------------------------------------- servers


def quiet_logs() -> None:
    for name in ("werkzeug", "waitress", "waitress.queue"):
        logging.getLogger(name).setLevel(logging.ERROR)


def werkzeug_server(app, host: str, port: int, ssl_context=None):
    """A threaded werkzeug server speaking HTTP/1.1 (so streamed bodies go out chunked).

    Note: werkzeug's dev server always answers ``Connection: close``, so these
    services see one request per TCP connection.
    """
    from werkzeug.serving import WSGIRequestHandler, make_server

    class Handler(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"
        # Buffer the socket writer: werkzeug flushes after every body chunk, so
        # each chunk (size line + data + CRLF) leaves in one segment, as with
        # production servers, instead of three tiny ones.
        wbufsize = 64 * 1024

        def log(self, type, message, *args):  # noqa: A002 - werkzeug's signature
            pass

    return make_server(host, port, app, threaded=True, request_handler=Handler, ssl_context=ssl_context)


def waitress_server(app, host: str, port: int):
    """A waitress server: HTTP/1.1 with real keep-alive (werkzeug's dev server has none)."""
    from waitress.server import create_server

    return create_server(app, host=host, port=port, threads=4, channel_timeout=30)


class ServerThread:
    """Run a werkzeug or waitress server in a daemon thread; ``stop()`` shuts it down."""

    def __init__(self, server, name: str):
        self.server = server
        self.name = name
        target = server.serve_forever if hasattr(server, "serve_forever") else server.run
        self.thread = threading.Thread(target=target, name=name, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        if hasattr(self.server, "serve_forever"):
            self.server.shutdown()
            self.server.server_close()
        else:
            self.server.close()
            self.server.task_dispatcher.shutdown(timeout=2)
        self.thread.join(timeout=3)
