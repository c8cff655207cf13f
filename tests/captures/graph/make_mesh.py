#!/usr/bin/env python3
"""Record ``tests/data/graph/mesh.pcap``: a small service mesh on loopback, and the true edge list.

Run as root from the repository root (tcpdump needs it; openssl makes the TLS cert)::

    .venv/bin/python tests/captures/graph/make_mesh.py            # writes mesh.pcap + mesh.json
    .venv/bin/python tests/captures/graph/make_mesh.py --no-capture   # scenario only, no root

Every service is a real server (``http.server`` threads, an ``ssl`` server, a ``socketserver``
TCP cache, a UDP DNS responder) on its own 127.0.0.x address, and every caller binds its
sockets to its own address, so the capture tells callers apart by address:

    127.0.0.40 web (keep-alive) ─┐
    127.0.0.41 mobile ───────────┴─> edge.mesh.test 127.0.0.30:80 (gateway)
      edge ─> catalog 127.0.0.31:80 ──> cache 127.0.0.36:6379 (TCP, not HTTP)
      edge ─> pricing 127.0.0.32:80 (500 on ids divisible by 7)
      edge ─> reviews 127.0.0.33:80 ──> ratings 127.0.0.34:80  (edge has reviews' address configured:
                                                                no DNS answer names 127.0.0.33)
      edge ─> billing 127.0.0.35:443 (HTTPS, SNI billing.mesh.test)
      edge ─> 127.0.0.37:9000 (legacy: no DNS name, Host is its address) ──> ratings
    127.0.0.42 batch job (DNS name batch.mesh.test) ──> catalog (404s, a 400), pricing (HTTP/1.0, no Host)
    DNS: 127.0.0.39:53 answers A records for *.mesh.test (NXDOMAIN otherwise)

Each call is recorded by the caller, after it completed, as (source node, target node, kind,
method, status as received) -- kind "http", "tls" (one per TLS connection) or "tcp" (one per
cache connection) -- and ``mesh.json`` holds the edge list aggregated from those records: the
exact map the sensor must draw.  Node names are what the sensor's naming rules must arrive at
(Host header, SNI, DNS name, else address; a caller that is a service takes its name).
The scenario is deterministic (fixed seed); only ports, timestamps and TLS bytes change.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import random
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "data" / "graph"
SEED = 5005

EDGE, CATALOG, PRICING, REVIEWS, RATINGS, BILLING, CACHE, LEGACY = (
    "127.0.0.30", "127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34", "127.0.0.35", "127.0.0.36",
    "127.0.0.37")
DNS_IP = "127.0.0.39"
WEB, MOBILE, BATCH = "127.0.0.40", "127.0.0.41", "127.0.0.42"
ZONE = {
    "edge.mesh.test": EDGE, "catalog.mesh.test": CATALOG, "pricing.mesh.test": PRICING,
    "reviews.mesh.test": REVIEWS, "ratings.mesh.test": RATINGS, "billing.mesh.test": BILLING,
    "cache.mesh.test": CACHE, "batch.mesh.test": BATCH,
}
ALL_IPS = (EDGE, CATALOG, PRICING, REVIEWS, RATINGS, BILLING, CACHE, LEGACY, DNS_IP, WEB, MOBILE, BATCH)
CACHE_PORT, LEGACY_PORT = 6379, 9000
LEGACY_NAME = f"{LEGACY}:{LEGACY_PORT}"  # no DNS name: the map keeps the address
TIMEOUT = 5.0

# ---------------------------------------------------------------------------- ground truth

_calls: list[dict] = []
_lock = threading.Lock()


def record(source: str, target: str, kind: str, method: str | None = None, status: int | None = None) -> None:
    with _lock:
        _calls.append({"source": source, "target": target, "kind": kind, "method": method, "status": status})


def edge_list(calls: list[dict]) -> list[dict]:
    edges: dict[tuple[str, str], dict] = {}
    for c in calls:
        e = edges.setdefault((c["source"], c["target"]), {
            "source": c["source"], "target": c["target"], "requests": 0, "tls_connections": 0,
            "tcp_flows": 0, "methods": defaultdict(int), "statuses": defaultdict(int),
            "errors_4xx": 0, "errors_5xx": 0})
        if c["kind"] == "tls":
            e["tls_connections"] += 1
        elif c["kind"] == "tcp":
            e["tcp_flows"] += 1
        else:
            e["requests"] += 1
            e["methods"][c["method"]] += 1
            e["statuses"][str(c["status"])] += 1
            e["errors_4xx"] += 400 <= c["status"] < 500
            e["errors_5xx"] += c["status"] >= 500
    return [{**e, "methods": dict(sorted(e["methods"].items())),
             "statuses": dict(sorted(e["statuses"].items()))} for _, e in sorted(edges.items())]


# ---------------------------------------------------------------------------- DNS


def dns_name(msg: bytes, p: int) -> tuple[str, int]:
    labels = []
    while msg[p]:
        labels.append(msg[p + 1 : p + 1 + msg[p]].decode())
        p += 1 + msg[p]
    return ".".join(labels), p + 1


class DNSServer(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((DNS_IP, 53))
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                q, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            qid = struct.unpack("!H", q[:2])[0]
            name, end = dns_name(q, 12)
            question = q[12 : end + 4]
            if name in ZONE:
                rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + socket.inet_aton(ZONE[name])
                self.sock.sendto(struct.pack("!HHHHHH", qid, 0x8580, 1, 1, 0, 0) + question + rr, peer)
            else:
                self.sock.sendto(struct.pack("!HHHHHH", qid, 0x8583, 1, 0, 0, 0) + question, peer)

    def stop(self) -> None:
        self.stopped.set()
        self.join()
        self.sock.close()


class Resolver:
    """A stub resolver bound to its owner's address: one real UDP query per name, then cached."""

    def __init__(self, source_ip: str, seed: int):
        self.source_ip = source_ip
        self.rng = random.Random(seed)
        self.cache: dict[str, str] = {}

    def resolve(self, name: str) -> str | None:
        if name in self.cache:
            return self.cache[name]
        qid = self.rng.randrange(1, 0xFFFF)
        q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        q += b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0"
        q += struct.pack("!HH", 1, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((self.source_ip, 0))
            s.settimeout(TIMEOUT)
            s.sendto(q, (DNS_IP, 53))
            r = s.recv(512)
        an = struct.unpack("!H", r[6:8])[0]
        addr = socket.inet_ntoa(r[-4:]) if an else None
        if addr:
            self.cache[name] = addr
        return addr


# ---------------------------------------------------------------------------- HTTP plumbing


class Client:
    """HTTP/1.1 calls from ``source_ip`` (a node called ``me``) to a named service."""

    def __init__(self, me: str, source_ip: str, seed: int, keep_alive: bool):
        self.me = me
        self.source_ip = source_ip
        self.dns = Resolver(source_ip, seed)
        self.keep_alive = keep_alive
        self.conns: dict[tuple[str, int], http.client.HTTPConnection] = {}
        self.lock = threading.Lock()

    def call(self, host: str, method: str, path: str, body: dict | None = None, port: int = 80,
             target: str | None = None, address: str | None = None) -> tuple[int, bytes]:
        ip = address or (self.dns.resolve(host) if not host[0].isdigit() else host)
        hdrs = {"Host": host if port == 80 else f"{host}:{port}", "Accept": "application/json",
                "User-Agent": f"mesh/1.0 ({self.source_ip})", "Authorization": "Bearer mesh-token"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        with self.lock:
            conn = self.conns.get((ip, port)) if self.keep_alive else None
            if conn is None:
                conn = http.client.HTTPConnection(ip, port, timeout=TIMEOUT,
                                                  source_address=(self.source_ip, 0))
                if self.keep_alive:
                    self.conns[(ip, port)] = conn
            if not self.keep_alive:
                hdrs["Connection"] = "close"
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
            if not self.keep_alive:
                conn.close()
        record(self.me, target or host, "http", method, resp.status)
        return resp.status, payload

    def close(self) -> None:
        for c in self.conns.values():
            c.close()
        self.conns.clear()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mesh/1.0"
    sys_version = ""
    routes: dict = {}

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        for (method, prefix), fn in self.routes.items():
            if method == self.command and self.path.startswith(prefix):
                status, obj = fn(self.path[len(prefix):], body)
                break
        else:
            status, obj = 404, {"error": "no route"}
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _handle


def bind(factory, *args):
    """Some kernels refuse to rebind a port that has TIME_WAIT sockets even with SO_REUSEADDR:
    wait for them to expire (a minute at most) rather than fail a second run."""
    deadline = time.monotonic() + 75
    while True:
        try:
            return factory(*args)
        except OSError as e:
            if e.errno != 98 or time.monotonic() > deadline:
                raise
            print(f"waiting for {args[0]} to be free (TIME_WAIT from a previous run)...", file=sys.stderr)
            time.sleep(5)


def serve(ip: str, port: int, routes: dict, tls: ssl.SSLContext | None = None):
    handler = type(f"H{ip}", (Handler,), {"routes": routes})
    srv = bind(http.server.ThreadingHTTPServer, (ip, port), handler)
    srv.daemon_threads = True
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


class CacheHandler(socketserver.BaseRequestHandler):
    """A RESP-like cache: ``GET key`` -> a bulk string.  Not HTTP, not TLS."""

    def handle(self) -> None:
        data = b""
        while not data.endswith(b"\r\n") or data.count(b"\r\n") < 5:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            data += chunk
        key = data.split(b"\r\n")[4]
        value = json.dumps({"key": key.decode(), "hits": len(key)}).encode()
        self.request.sendall(b"$%d\r\n%s\r\n" % (len(value), value))
        while self.request.recv(4096):  # let the client close first (its side keeps TIME_WAIT)
            pass


_catalog_dns = Resolver(CATALOG, SEED + 3)


def cache_get(key: str) -> bytes:
    ip = _catalog_dns.resolve("cache.mesh.test")
    with socket.create_connection((ip, CACHE_PORT), timeout=TIMEOUT, source_address=(CATALOG, 0)) as s:
        k = key.encode()
        s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
        reply = s.recv(4096)
    record("catalog.mesh.test", "cache.mesh.test:6379", "tcp")
    return reply


# ---------------------------------------------------------------------------- the services


def build(cert: str, key: str) -> list:
    edge_out = Client("edge.mesh.test", EDGE, SEED + 1, keep_alive=True)
    legacy_out = Client(LEGACY_NAME, LEGACY, SEED + 4, keep_alive=False)
    reviews_out = Client("reviews.mesh.test", REVIEWS, SEED + 2, keep_alive=True)
    tls_client = ssl.create_default_context(cafile=cert)

    def charge(amount: int) -> int:
        ip = edge_out.dns.resolve("billing.mesh.test")
        raw = socket.create_connection((ip, 443), timeout=TIMEOUT, source_address=(EDGE, 0))
        conn = http.client.HTTPConnection(ip, 443, timeout=TIMEOUT)
        conn.sock = tls_client.wrap_socket(raw, server_hostname="billing.mesh.test")
        record("edge.mesh.test", "billing.mesh.test", "tls")
        body = json.dumps({"amount": amount}).encode()
        conn.request("POST", "/charges", body=body, headers={
            "Host": "billing.mesh.test", "Content-Type": "application/json", "Connection": "close"})
        status = conn.getresponse().status
        conn.close()
        return status

    # catalog
    def item(rest, _body):
        if not rest.isdigit():
            return 400, {"error": "bad item id"}
        sku = int(rest)
        cache_get(f"item:{sku}")
        if sku >= 900:
            return 404, {"error": "unknown item", "id": sku}
        return 200, {"id": sku, "name": f"item {sku}", "stock": sku % 13}

    # pricing
    def price(rest, _body):
        sku = int(rest)
        if sku % 7 == 0:
            return 500, {"error": "price table locked"}
        return 200, {"id": sku, "price": round(3.5 + sku * 1.25, 2)}

    # reviews -> ratings
    def reviews(rest, _body):
        sku = int(rest.split("?")[0])
        _s, r = reviews_out.call("ratings.mesh.test", "GET", f"/ratings/{sku}")
        return 200, {"id": sku, "reviews": [f"review {i}" for i in range(sku % 3)], "rating": json.loads(r)}

    # edge (the gateway): every route calls two or more backends
    def product(rest, _body):
        if rest.endswith("/reviews"):
            sku = int(rest[: -len("/reviews")])
            s, it = edge_out.call("catalog.mesh.test", "GET", f"/items/{sku}")
            if s != 200:
                return s, json.loads(it)
            _s, rv = edge_out.call("reviews.mesh.test", "GET", f"/reviews/{sku}", address=REVIEWS)
            return 200, {"item": json.loads(it), "reviews": json.loads(rv)}
        sku = int(rest)
        s, it = edge_out.call("catalog.mesh.test", "GET", f"/items/{sku}")
        if s != 200:
            return s, json.loads(it)
        s, pr = edge_out.call("pricing.mesh.test", "GET", f"/prices/{sku}")
        if s != 200:
            return 502, {"error": "pricing unavailable"}
        out = {"item": json.loads(it), "price": json.loads(pr)}
        if sku % 2 == 0:
            _s, rv = edge_out.call("reviews.mesh.test", "GET", f"/reviews/{sku}?summary=1", address=REVIEWS)
            out["reviews"] = json.loads(rv)
        return 200, out

    def checkout(_rest, body):
        total = 0.0
        for sku in body["items"]:
            s, pr = edge_out.call("pricing.mesh.test", "GET", f"/prices/{sku}")
            if s != 200:
                return 502, {"error": "pricing unavailable"}
            total += json.loads(pr)["price"]
        edge_out.call("catalog.mesh.test", "GET", f"/items/{body['items'][0]}")
        return (201 if charge(int(total * 100)) == 201 else 502), {"total": total}

    def legacy_status(_rest, _body):
        s, _ = edge_out.call(LEGACY, "GET", "/status", port=LEGACY_PORT, target=LEGACY_NAME)
        edge_out.call("catalog.mesh.test", "GET", "/health")
        return s, {"legacy": s}

    def legacy(_rest, _body):  # the legacy box checks a dependency: named by its address only
        s, _ = legacy_out.call("ratings.mesh.test", "GET", "/ratings/0")
        return 200, {"status": "ok", "ratings": s}

    tls_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_server.load_cert_chain(cert, key)
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    cache = bind(socketserver.ThreadingTCPServer, (CACHE, CACHE_PORT), CacheHandler)
    cache.daemon_threads = True
    threading.Thread(target=cache.serve_forever, daemon=True).start()
    servers = [
        serve(CATALOG, 80, {("GET", "/items/"): item, ("GET", "/health"): lambda r, b: (200, {"ok": True})}),
        serve(PRICING, 80, {("GET", "/prices/"): price}),
        serve(RATINGS, 80, {("GET", "/ratings/"): lambda r, b: (200, {"id": int(r), "stars": int(r) % 5})}),
        serve(REVIEWS, 80, {("GET", "/reviews/"): reviews}),
        serve(BILLING, 443, {("POST", "/charges"): lambda r, b: (201, {"charged": b["amount"]})}, tls_server),
        serve(LEGACY, LEGACY_PORT, {("GET", "/status"): legacy}),
        serve(EDGE, 80, {("GET", "/api/products/"): product, ("POST", "/api/checkout"): checkout,
                         ("GET", "/api/legacy/status"): legacy_status}),
        cache,
    ]
    return servers + [edge_out, reviews_out, legacy_out]


# ---------------------------------------------------------------------------- the scenario


def scenario() -> None:
    rng = random.Random(SEED)
    web = Client(WEB, WEB, SEED + 10, keep_alive=True)
    mobile = Client(MOBILE, MOBILE, SEED + 11, keep_alive=False)
    batch = Client("batch.mesh.test", BATCH, SEED + 12, keep_alive=True)
    batch.dns.resolve("batch.mesh.test")  # the job looks up its own name at start (names its node)
    web.dns.resolve("metrics.mesh.test")  # NXDOMAIN: names nothing

    def shopper(c: Client, n: int) -> None:
        for i in range(n):
            r = rng.random()
            sku = rng.randint(1, 60) if i != 3 else 901  # one unknown item
            if r < 0.45:
                c.call("edge.mesh.test", "GET", f"/api/products/{sku}")
            elif r < 0.7:
                c.call("edge.mesh.test", "GET", f"/api/products/{sku}/reviews")
            elif r < 0.9:
                items = [x for x in (rng.randint(1, 60), rng.randint(1, 60)) if x % 7] or [1]
                c.call("edge.mesh.test", "POST", "/api/checkout", {"items": items})
            else:
                c.call("edge.mesh.test", "GET", "/api/legacy/status")

    shopper(web, 24)
    shopper(mobile, 14)
    for sku in (3, 8, 905, 12, "x12", 44, 950, 19, 27):
        batch.call("catalog.mesh.test", "GET", f"/items/{sku}")
    for sku in (5, 14, 22, 33, 41):  # HTTP/1.0 without Host: the map must still name pricing
        ip = batch.dns.resolve("pricing.mesh.test")
        with socket.create_connection((ip, 80), timeout=TIMEOUT, source_address=(BATCH, 0)) as s:
            s.sendall(f"GET /prices/{sku} HTTP/1.0\r\nUser-Agent: mesh-batch/1.0\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        record("batch.mesh.test", "pricing.mesh.test", "http", "GET", int(data.split(b" ", 2)[1]))
    for c in (web, mobile, batch):
        c.close()


# ---------------------------------------------------------------------------- capture


class Tcpdump:
    def __init__(self, path: Path):
        bpf = " or ".join(f"host {ip}" for ip in ALL_IPS)
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-s", "0", "-U", "--immediate-mode", "-B", "32768", "-n", "-Z", "root",
             "-w", str(path), bpf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        started = threading.Event()

        def drain() -> None:
            for line in self.proc.stderr:
                self.lines.append(line.strip())
                if "listening on" in line:
                    started.set()

        threading.Thread(target=drain, daemon=True).start()
        if not started.wait(10):
            raise RuntimeError("tcpdump did not start: " + "\n".join(self.lines))
        time.sleep(0.3)

    def stop(self) -> None:
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        time.sleep(0.1)
        dropped = [x for x in self.lines if "dropped by kernel" in x]
        if dropped and not dropped[0].startswith("0 "):
            raise RuntimeError(f"tcpdump dropped packets: {dropped}")


def make_cert(tmp: str) -> tuple[str, str]:
    cert, key = os.path.join(tmp, "billing.crt"), os.path.join(tmp, "billing.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=billing.mesh.test",
                    "-addext", "subjectAltName=DNS:billing.mesh.test"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-capture", action="store_true", help="run the scenario without tcpdump")
    ap.add_argument("-o", "--out", default=str(OUT))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        dns = DNSServer()
        dns.start()
        parts = build(cert, key)
        pcap_tmp = Path(tmp) / "mesh.pcap"
        dump = None if a.no_capture else Tcpdump(pcap_tmp)
        try:
            scenario()
            for p in parts:
                if isinstance(p, Client):
                    p.close()
        finally:
            if dump is not None:
                dump.stop()
            for p in parts:
                if not isinstance(p, Client):
                    p.shutdown()
                    p.server_close()
            dns.stop()
        truth = {
            "pcap": "mesh.pcap",
            "description": "service mesh on loopback; edges recorded by the callers (see make_mesh.py)",
            "generator": "tests/captures/graph/make_mesh.py",
            "dns": dict(sorted(ZONE.items())),
            "calls": len(_calls),
            "edges": edge_list(_calls),
        }
        if dump is not None:
            shutil.copyfile(pcap_tmp, out / "mesh.pcap")
            (out / "mesh.json").write_text(json.dumps(truth, indent=1) + "\n")
            print(f"wrote {out / 'mesh.pcap'} ({(out / 'mesh.pcap').stat().st_size} bytes) and mesh.json")
        for e in truth["edges"]:
            print(f"{e['source']:>20} -> {e['target']:<24} req={e['requests']:3} tls={e['tls_connections']} "
                  f"tcp={e['tcp_flows']} {e['statuses']}")


if __name__ == "__main__":
    sys.exit(main())
