#!/usr/bin/env python3
"""Deterministic generator of large, realistic API-traffic pcaps for benchmarks.

Many services and templated endpoints, keep-alive connections, chunked and gzip bodies,
JSON payloads with PII and stack traces sprinkled in, ~1% retransmitted and ~1% reordered
segments, many connections interleaved in time.  Packets are written directly with struct
(Ethernet/IPv4/TCP; checksums left zero as with offloading), so generating 500 MB takes
well under a minute.

    python benchmarks/generate.py --size-mb 500 -o benchmarks/out/api-500.pcap [--seed 1]
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import json
import os
import random
import struct

MSS = 1448
RESOURCES = ["users", "orders", "items", "carts", "invoices", "payments", "sessions", "reviews",
             "shipments", "accounts", "products", "coupons"]
STACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/views.py", line 88, in get_invoice\n    total = Decimal(row["amount"])\n'
    '  File "/usr/lib/python3.11/decimal.py", line 1502, in __new__\n'
    "decimal.InvalidOperation: [<class 'decimal.ConversionSyntax'>]\n"
)


class Writer:
    def __init__(self, path: str):
        self.f = open(path, "wb")  # noqa: SIM115
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.bytes = 24
        self.packets = 0

    def packet(self, ts: float, frame: bytes) -> None:
        sec = int(ts)
        self.f.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
        self.f.write(frame)
        self.bytes += 16 + len(frame)
        self.packets += 1

    def close(self) -> None:
        self.f.close()


def frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
          payload: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                      65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    return eth + ip + tcp + payload


class Traffic:
    def __init__(self, seed: int, services: int):
        self.rng = random.Random(seed)
        rng = self.rng
        self.services = [
            (f"svc{i:03d}.internal.example", bytes([10, 1, i // 250, 1 + i % 250]),
             rng.sample(RESOURCES, 4))
            for i in range(services)
        ]
        self.clients = [bytes([10, 2, i // 250, 1 + i % 250]) for i in range(200)]
        # pools of bodies (built once: compression is not what we benchmark here)
        self.json_bodies = [self._json(rng, n) for n in (2, 5, 12, 30, 80, 200) for _ in range(8)]
        self.gz_bodies = [(b, gzip.compress(b, 6)) for b in self.json_bodies]

    def _json(self, rng: random.Random, n: int) -> bytes:
        items = []
        for _ in range(n):
            item = {"id": rng.randrange(10**6), "name": rng.choice(["alpha", "beta", "gamma"]) * 2,
                    "price": round(rng.random() * 100, 2), "tags": ["a", "b"],
                    "created": f"2026-11-0{rng.randrange(1, 9)}T10:00:00Z"}
            if rng.random() < 0.05:
                item["email"] = f"user{rng.randrange(9999)}@example.com"
                item["ssn"] = f"{rng.randrange(100, 665)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}"
            items.append(item)
        return json.dumps({"items": items, "page": 1}).encode()

    def exchange(self, svc) -> tuple[bytes, bytes]:
        rng = self.rng
        host, _ip, res = svc
        r = rng.choice(res)
        roll = rng.random()
        if roll < 0.55:
            req = (f"GET /api/v1/{r}/{rng.randrange(1, 10**6)} HTTP/1.1\r\nHost: {host}\r\n"
                   f"User-Agent: bench/1.0\r\nAccept: application/json\r\n"
                   f"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.{rng.randrange(10**9)}\r\n\r\n").encode()
        elif roll < 0.75:
            req = (f"GET /api/v1/{r}?limit={rng.choice([10, 20, 50])}&page={rng.randrange(1, 9)} HTTP/1.1\r\n"
                   f"Host: {host}\r\nUser-Agent: bench/1.0\r\n\r\n").encode()
        else:
            body = json.dumps({"name": "x" * rng.randrange(5, 50), "qty": rng.randrange(9)}).encode()
            req = (f"POST /api/v1/{r} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        roll = rng.random()
        if roll < 0.02:
            body = STACK.encode()
            resp = (f"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        elif roll < 0.05:
            resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
        elif roll < 0.35:
            plain, gz = rng.choice(self.gz_bodies)
            resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(gz)) + gz
        elif roll < 0.55:
            body = rng.choice(self.json_bodies)
            chunks = b""
            for i in range(0, len(body), 4000):
                part = body[i:i + 4000]
                chunks += b"%x\r\n" % len(part) + part + b"\r\n"
            resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + chunks + b"0\r\n\r\n")
        else:
            body = rng.choice(self.json_bodies)
            resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: nginx\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body)) + body
        return req, resp

    def connection(self, start: float, cport: int):
        """Packets (ts, frame) of one keep-alive connection."""
        rng = self.rng
        svc = rng.choice(self.services)
        cip, sip = rng.choice(self.clients), svc[1]
        sport = 8080
        cseq, sseq = rng.randrange(2**32), rng.randrange(2**32)
        t = start
        out = []

        def seg(fwd: bool, flags: int, payload: bytes = b"") -> None:
            nonlocal t, cseq, sseq
            t += rng.random() * 0.0004
            if fwd:
                out.append((t, frame(cip, sip, cport, sport, cseq, sseq, flags, payload)))
                cseq += len(payload) + (1 if flags & 0x03 else 0)
            else:
                out.append((t, frame(sip, cip, sport, cport, sseq, cseq, flags, payload)))
                sseq += len(payload) + (1 if flags & 0x03 else 0)

        seg(True, 0x02)
        seg(False, 0x12)
        seg(True, 0x10)
        for _ in range(rng.randrange(1, 25)):
            req, resp = self.exchange(svc)
            for data, fwd in ((req, True), (resp, False)):
                first = len(out)
                for i in range(0, len(data), MSS):
                    seg(fwd, 0x18, data[i:i + MSS])
                seg(not fwd, 0x10)
                segs = list(range(first, len(out) - 1))
                if len(segs) > 1 and rng.random() < 0.01 * len(segs):  # reorder two segments
                    i = rng.choice(segs[:-1])
                    (ta, fa), (tb, fb) = out[i], out[i + 1]
                    out[i], out[i + 1] = (ta, fb), (tb, fa)
                if segs and rng.random() < 0.01 * len(segs):  # retransmit one segment
                    i = rng.choice(segs)
                    out.insert(len(out) - 1, (out[-2][0] + 0.0001, out[i][1]))
        seg(True, 0x11)
        seg(False, 0x11)
        seg(True, 0x10)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--size-mb", type=float, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--services", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=64, help="connections interleaved at a time")
    a = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    traffic = Traffic(a.seed, a.services)
    w = Writer(a.output)
    limit = int(a.size_mb * 1e6)
    t = 1_790_000_000.0
    cport = 20000
    while w.bytes < limit:
        batch = []
        for _ in range(a.concurrency):
            cport = 20000 + (cport - 19999) % 40000
            batch.append(traffic.connection(t + traffic.rng.random() * 0.05, cport))
        for ts, fr in heapq.merge(*batch, key=lambda p: p[0]):
            w.packet(ts, fr)
            if w.bytes >= limit:
                break
        t = max(p[-1][0] for p in batch) + 0.001
    w.close()
    print(f"{a.output}: {w.bytes / 1e6:.1f} MB, {w.packets} packets")


if __name__ == "__main__":
    main()
