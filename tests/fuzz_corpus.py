"""Mutation fuzzer over the real corpus captures: nothing may escape the sensor, hang it or
make it grow without bound.

    python tests/fuzz_corpus.py --budget-seconds 300 --seed 7          # JSON summary on stdout
    python tests/fuzz_corpus.py --budget-seconds 60 --save-dir /tmp/f  # keep crashing inputs

Seeds are the real captures of ``../shared/corpus/*/`` (Zeek's and Suricata's test pcaps),
``tests/data/*.pcap`` and ``pcaps/demo.pcap``.  Each input is one seed with 1-4 mutations:

- on the file's bytes: bit flips, byte insertion/deletion, truncation at a random offset,
  corrupt record/block length fields (0, 1, huge, off by one), corrupt file headers
  (snaplen, link type, version, byte-order magic), splices of two captures;
- on its packets: snaplen-style truncation, random bytes in the IP/TCP headers, duplicated,
  reordered and overlapping TCP segments with contradictory payloads, header-line
  explosions (thousands of header lines, 1 MB lines) spliced into an HTTP head with the
  sequence numbers of the rest of the stream shifted to match, smuggling shapes (CL+TE,
  duplicate and overflowing Content-Length, overflowing chunk sizes), invalid UTF-8 in heads,
  binary junk to port 80, SYN floods, and whole hostile conversations (bombs, endless
  chunked bodies) interleaved with the real traffic;
- on the configuration: sometimes tiny ``Limits`` so that every bound is hit.

Every input runs through the real stages in-process (``CaptureFile`` for file mutations, then
``Pipeline`` with an event sink, ``Transaction.to_json``), under a per-input timeout (SIGALRM)
and a check of the process's peak RSS.  A crash is an exception escaping any of them
(``CaptureError`` when opening is the documented refusal of a non-capture, not a crash).
Exit status 0 when there were no crashes, hangs or memory overruns, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import gzip
import json
import os
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sensor.limits import Limits  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402
from sensor.sources import CaptureError, CaptureFile  # noqa: E402
from sensor.stats import Stats  # noqa: E402

SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
_M = 0xFFFFFFFF


# ---- building packets and captures (also used by tests/test_hostile.py) ---------------------

def frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
          payload: bytes = b"") -> bytes:
    """Ethernet + IPv4 + TCP (no checksums: the sensor never verifies them)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & _M, ack & _M, 0x50, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, min(0xFFFF, 40 + len(payload)), 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + payload


def pcap_bytes(records, linktype: int = 1, snaplen: int = 262144) -> bytes:
    """A classic little-endian microsecond pcap of ``(ts, linktype, data)`` records."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)]
    for ts, _lt, data in records:
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)) % 1000000, len(data), len(data)))
        out.append(data)
    return b"".join(out)


def write_pcap(path: str, records, linktype: int = 1) -> str:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pcap_bytes(records, linktype))
    return path


class Conn:
    """One TCP connection as records; sequence numbers follow the bytes sent."""

    def __init__(self, client: tuple[bytes, int] = (b"\x0a\x00\x00\x01", 40000),
                 server: tuple[bytes, int] = (b"\x0a\x00\x00\x02", 80), t0: float = 1_700_000_000.0,
                 handshake: bool = True, mss: int = 1460, cisn: int = 1000, sisn: int = 5000):
        self.c, self.s = client, server
        self.cseq, self.sseq = cisn, sisn
        self.ts = t0
        self.mss = mss
        self.records: list[tuple[float, int, bytes]] = []
        if handshake:
            self.pkt(True, SYN, seq=self.cseq - 1)
            self.pkt(False, SYN | ACK, seq=self.sseq - 1)
            self.pkt(True, ACK)

    def pkt(self, from_client: bool, flags: int, payload: bytes = b"", seq: int | None = None,
            ack: int | None = None) -> None:
        self.ts += 0.0001
        a, b = (self.c, self.s) if from_client else (self.s, self.c)
        if seq is None:
            seq = self.cseq if from_client else self.sseq
        if ack is None:
            ack = self.sseq if from_client else self.cseq
        self.records.append((self.ts, 1, frame(a[0], b[0], a[1], b[1], seq, ack, flags, payload)))

    def send(self, from_client: bool, data: bytes, mss: int | None = None) -> Conn:
        mss = mss or self.mss
        for i in range(0, len(data), mss):
            self.pkt(from_client, ACK | PSH, data[i : i + mss])
            if from_client:
                self.cseq += len(data[i : i + mss])
            else:
                self.sseq += len(data[i : i + mss])
        return self

    def client(self, data: bytes, mss: int | None = None) -> Conn:
        return self.send(True, data, mss)

    def server(self, data: bytes, mss: int | None = None) -> Conn:
        return self.send(False, data, mss)

    def close(self) -> Conn:
        self.pkt(True, FIN | ACK)
        self.cseq += 1
        self.pkt(False, FIN | ACK)
        self.sseq += 1
        self.pkt(True, ACK)
        return self


# ---- reading packets back (record-level mutations) --------------------------------------------

def _l3(linktype: int, d: bytes) -> int | None:
    """Offset of the IP header in a frame of the common link types, or None."""
    try:
        if linktype == 1:
            off, et = 14, struct.unpack_from("!H", d, 12)[0]
            while et in (0x8100, 0x88A8):
                et = struct.unpack_from("!H", d, off + 2)[0]
                off += 4
            return off if et in (0x0800, 0x86DD) else None
        if linktype == 113:
            return 16 if struct.unpack_from("!H", d, 14)[0] in (0x0800, 0x86DD) else None
        if linktype == 276:
            return 20 if struct.unpack_from("!H", d, 0)[0] in (0x0800, 0x86DD) else None
        if linktype in (101, 12, 14, 228, 229):
            return 0
        if linktype in (0, 108):
            return 4
    except struct.error:
        return None
    return None


class Pkt:
    """A TCP packet of a record, with enough structure to rewrite seq/ack and payload."""

    __slots__ = ("lt", "ts", "d", "ip", "v", "tcp", "po", "end", "key", "seq", "ack", "flags")

    @classmethod
    def parse(cls, rec) -> Pkt | None:
        ts, lt, d = rec
        ip = _l3(lt, d)
        if ip is None or ip >= len(d):
            return None
        v = d[ip] >> 4
        try:
            if v == 4:
                ihl = (d[ip] & 15) * 4
                if d[ip + 9] != 6 or ihl < 20 or struct.unpack_from("!H", d, ip + 6)[0] & 0x3FFF:
                    return None
                total = struct.unpack_from("!H", d, ip + 2)[0]
                end = min(len(d), ip + total) if total >= ihl else len(d)
                src, dst = d[ip + 12 : ip + 16], d[ip + 16 : ip + 20]
                tcp = ip + ihl
            elif v == 6:
                if d[ip + 6] != 6:
                    return None
                end = min(len(d), ip + 40 + struct.unpack_from("!H", d, ip + 4)[0])
                src, dst = d[ip + 8 : ip + 24], d[ip + 24 : ip + 40]
                tcp = ip + 40
            else:
                return None
            sport, dport, seq, ack, offflags = struct.unpack_from("!HHIIH", d, tcp)
        except (struct.error, IndexError):
            return None
        po = tcp + ((offflags >> 12) << 2)
        if po > end or po < tcp + 20:
            return None
        p = cls()
        p.ts, p.lt, p.d, p.ip, p.v, p.tcp, p.po, p.end = ts, lt, d, ip, v, tcp, po, end
        p.key = (src, sport, dst, dport)
        p.seq, p.ack, p.flags = seq, ack, offflags & 0xFF
        return p

    @property
    def payload(self) -> bytes:
        return self.d[self.po : self.end]

    def rebuild(self, payload: bytes | None = None, seq: int | None = None, ack: int | None = None,
                ts: float | None = None) -> tuple[float, int, bytes]:
        d = bytearray(self.d[: self.po])
        payload = self.payload if payload is None else payload
        if self.v == 4:
            struct.pack_into("!H", d, self.ip + 2, min(0xFFFF, self.po - self.ip + len(payload)))
        else:
            struct.pack_into("!H", d, self.ip + 4, min(0xFFFF, self.po - self.ip - 40 + len(payload)))
        struct.pack_into("!I", d, self.tcp + 4, (self.seq if seq is None else seq) & _M)
        struct.pack_into("!I", d, self.tcp + 8, (self.ack if ack is None else ack) & _M)
        return (self.ts if ts is None else ts, self.lt, bytes(d) + payload)


def _payload_packets(records, rng: random.Random, want: bytes | None = None) -> list[int]:
    """Indexes of TCP records with payload (optionally containing ``want``)."""
    out = []
    for i, r in enumerate(records):
        p = Pkt.parse(r)
        if p is not None and p.end > p.po and (want is None or want in p.payload):
            out.append(i)
    return out


def splice_stream(records: list, i: int, start: int, end: int, new: bytes, mss: int = 60000) -> list:
    """Replace ``payload[start:end]`` of TCP record ``i`` by ``new`` and keep the stream
    coherent: the packet is re-cut into pieces of at most ``mss`` and the later packets of that
    direction (and the peer's ACKs) are shifted by the length difference."""
    p = Pkt.parse(records[i])
    body = p.payload
    data = body[:start] + new + body[end:]
    delta = len(data) - len(body)
    pieces = [p.rebuild(data[k : k + mss], seq=p.seq + k) for k in range(0, len(data), mss)]
    pieces = pieces or [p.rebuild(b"")]
    out = records[:i] + pieces
    src, sport, dst, dport = p.key
    rev = (dst, dport, src, sport)
    after_seq = (p.seq + len(body)) & _M
    for r in records[i + 1 :]:
        q = Pkt.parse(r)
        if q is not None and q.key == p.key and ((q.seq - after_seq) & _M) < 0x80000000:
            r = q.rebuild(seq=q.seq + delta)
        elif q is not None and q.key == rev and q.flags & ACK and ((q.ack - after_seq) & _M) < 0x80000000:
            r = q.rebuild(ack=q.ack + delta)
        out.append(r)
    return out


# ---- hostile conversations (interleaved with real traffic) ----------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes((ftype, flags)) + struct.pack("!I", sid) + payload


_H2_NAMES = [b":method", b":path", b":status", b":authority", b":scheme", b"content-encoding",
             b"content-length", b"cookie", b"x", b"", b"\xff", b"host", b"transfer-encoding", b"upgrade"]
_H2_VALUES = [b"GET", b"/", b"200", b"999", b"\xb200", b"gzip", b"br", b"deflate", b"", b"\xff\xfe",
              b"a" * 5000, b"-1", b"12", b"chunked", b"h2c", b"1xx"]


def h2_random_frames(rng: random.Random, enc) -> bytes:
    """Frames of every type with random flags, stream ids, padding and (HPACK) payloads."""
    out = []
    for _ in range(rng.randrange(1, 40)):
        t = rng.choice([0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 10, 0xFF])
        fl = rng.choice([0, 1, 4, 5, 8, 0x20, 0x25, 0xFF, rng.randrange(256)])
        sid = rng.choice([0, 1, 1, 3, 5, 2, rng.randrange(1 << 31)])
        if t in (1, 5, 9) and rng.random() < 0.7:
            fields = [(rng.choice(_H2_NAMES), rng.choice(_H2_VALUES)) for _ in range(rng.randrange(12))]
            p = enc.encode(fields)
            if t == 5:
                p = rng.randbytes(4) + p
            if fl & 8:
                p = bytes([rng.randrange(20)]) + p
            if fl & 0x20 and t == 1:
                p = rng.randbytes(5) + p
        elif t == 0 and rng.random() < 0.5:
            p = gzip.compress(rng.randbytes(rng.randrange(300)))[: rng.randrange(400)]
            if fl & 8:
                p = bytes([rng.randrange(256)]) + p
        else:
            p = rng.randbytes(rng.choice([0, 1, 4, 5, 6, 8, 12, rng.randrange(3000)]))
        f = h2frame(t, fl, sid, p)
        if rng.random() < 0.05:  # a length that lies
            f = rng.randbytes(3) + f[3:]
        out.append(f)
    return b"".join(out)

def _gzip_bomb(n: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(c.compress(block) for _ in range(n >> 20)) + c.flush()


_BOMB = None


def hostile_conversation(rng: random.Random, t0: float) -> list:
    global _BOMB
    if _BOMB is None:
        _BOMB = _gzip_bomb(8 << 20)
    kind = rng.choice(["bomb", "endless_chunked", "smuggle", "junk80", "utf8", "h2junk", "h2frames",
                       "h2frames", "chunk_overflow"])
    client = (bytes([10, 66, rng.randrange(256), rng.randrange(1, 255)]), rng.randrange(1024, 65535))
    c = Conn(client=client, t0=t0, handshake=rng.random() < 0.8)
    get = b"GET /h HTTP/1.1\r\nHost: hostile\r\n\r\n"
    if kind == "bomb":
        enc = rng.choice([b"gzip", b"x-gzip", b"gzip, gzip", b"deflate", b"br"])
        body = _BOMB
        c.client(get).server(b"HTTP/1.1 200 OK\r\nContent-Encoding: " + enc
                             + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    elif kind == "endless_chunked":
        chunks = b"".join(b"%x\r\n%s\r\n" % (k, b"z" * k) for k in range(1, rng.randrange(50, 400)))
        c.client(get).server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    elif kind == "smuggle":
        c.client(rng.choice([
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\n"
            b"abcGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551617\r\n\r\nxyz",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n"
            b"0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        ])).server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    elif kind == "junk80":
        c.client(rng.randbytes(rng.randrange(1, 3000))).server(rng.randbytes(rng.randrange(0, 3000)))
    elif kind == "utf8":
        c.client(b"GET /\xff\xfe\xc3\x28?q=\xed\xa0\x80 HTTP/1.1\r\nHost: \xf0\x28\x8c\xbc\r\n"
                 b"X-\xff: \xc0\xaf\r\n\r\n")
        c.server(b"HTTP/1.1 200 \xff\xfe\r\nContent-Type: application/json; charset=\xff\r\n"
                 b"Content-Length: 12\r\n\r\n{\"a\":\"\xff\xfe\x80\"}  ")
    elif kind == "h2frames":
        import hpack

        enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
        if rng.random() < 0.2:
            c.client(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nHTTP2-Settings: "
                     + rng.choice([b"AAMAAABkAARAAAAAAAIAAAAA", b"!!", b"", b"AAEAAEAA"]) + b"\r\n\r\n")
            c.server(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")
        else:
            c.client(H2_PREFACE)
        for _ in range(rng.randrange(1, 6)):
            from_client = rng.random() < 0.5
            c.send(from_client, h2_random_frames(rng, enc_c if from_client else enc_s),
                   mss=rng.choice([1, 7, 100, 1460, 16384]))
    elif kind == "h2junk":
        c.client(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(rng.randrange(9, 4000)))
        c.server(rng.randbytes(rng.randrange(0, 4000)))
    else:
        c.client(get).server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + rng.choice([b"ffffffffffffffffffffffff\r\n", b"-1\r\n", b"1" * 5000 + b"\r\n",
                                           b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n"]) + b"tail")
    if rng.random() < 0.7:
        c.close()
    return c.records


# ---- mutations -------------------------------------------------------------------------------

FILE_MUTATIONS = ["bitflip", "insert_bytes", "delete_bytes", "truncate", "record_length", "file_header",
                  "splice_files"]
PACKET_MUTATIONS = ["snaplen_cut", "header_bytes", "payload_bytes", "dup_contradictory",
                    "overlap_contradictory", "reorder", "header_explosion", "huge_header_line",
                    "smuggling_headers", "invalid_utf8", "junk_payload", "syn_flood", "hostile_conversation",
                    "drop_packets"]


def _record_offsets(data: bytes) -> list[tuple[int, str]]:
    """Offsets of record length fields: ("pcap", offset of incl_len) or ("pcapng", block length)."""
    out: list[tuple[int, str]] = []
    if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = "<" if data[0] in (0xD4, 0x4D) else ">"
        p = 24
        while p + 16 <= len(data) and len(out) < 100000:
            incl = struct.unpack_from(e + "I", data, p + 8)[0]
            out.append((p + 8, "pcap" + e))
            p += 16 + incl
    elif data[:4] == b"\x0a\x0d\x0d\x0a" and len(data) >= 12:
        e = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        p = 0
        while p + 12 <= len(data) and len(out) < 100000:
            blen = struct.unpack_from(e + "I", data, p + 4)[0]
            out.append((p + 4, "pcapng" + e))
            if blen < 12:
                break
            p += blen
    return out


def mutate_file(data: bytes, rng: random.Random, name: str, other: bytes) -> bytes:
    b = bytearray(data)
    n = len(b)
    if not n:  # an earlier mutation left nothing: start again from a few random bytes
        return rng.randbytes(rng.randrange(1, 64))
    if name == "bitflip":
        for _ in range(rng.randrange(1, 17)):
            # half of the flips land in the first KiB (file and first record headers)
            at = rng.randrange(min(n, 1024)) if rng.random() < 0.5 else rng.randrange(n)
            b[at] ^= 1 << rng.randrange(8)
    elif name == "insert_bytes":
        at = rng.randrange(n + 1)
        b[at:at] = rng.randbytes(rng.randrange(1, 65))
    elif name == "delete_bytes":
        at = rng.randrange(n)
        del b[at : at + rng.randrange(1, 65)]
    elif name == "truncate":
        del b[rng.randrange(n) :]
    elif name == "record_length":
        offs = _record_offsets(data)
        if offs:
            at, kind = rng.choice(offs)
            e = kind[-1]
            old = struct.unpack_from(e + "I", b, at)[0]
            new = rng.choice([0, 1, 11, 12, 13, 0xFFFFFFFF, 0x7FFFFFFF, 256 << 20, (256 << 20) + 1,
                              old + 1, max(0, old - 1), old + 4, max(0, old - 4), rng.randrange(1 << 32)])
            struct.pack_into(e + "I", b, at, new & _M)
            if kind.startswith("pcap") and not kind.startswith("pcapng") and rng.random() < 0.5:
                struct.pack_into(e + "I", b, at + 4, rng.choice([0, 0xFFFFFFFF, new & _M]))  # orig_len
    elif name == "file_header":
        if n >= 24 and data[:4] != b"\x0a\x0d\x0d\x0a":
            field = rng.choice([(4, "H"), (6, "H"), (16, "I"), (20, "I")])
            e = "<" if data[0] in (0xD4, 0x4D, 0x34) else ">"
            val = rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, 65535, 147, 228, 229, 276, 999,
                              rng.randrange(1 << 16)])
            struct.pack_into(e + field[1], b, field[0], val & (0xFFFF if field[1] == "H" else _M))
        elif n >= 28:
            at = rng.choice([8, 12, 14, 16, 20, 24])
            b[at : at + 4] = rng.randbytes(4)
    elif name == "splice_files":
        cut = rng.randrange(n)
        b = b[:cut] + other[rng.randrange(len(other)) :]
    return bytes(b)


def mutate_packets(records: list, rng: random.Random, name: str) -> tuple[list, Limits | None]:
    limits = None
    if not records:
        return records, None
    if name == "snaplen_cut":
        out = []
        for r in records:
            if rng.random() < 0.3:
                r = (r[0], r[1], r[2][: rng.randrange(len(r[2]) + 1)])
            out.append(r)
        return out, None
    if name == "header_bytes":
        out = []
        for r in records:
            if rng.random() < 0.2 and r[2]:
                d = bytearray(r[2])
                off = _l3(r[1], r[2]) or 0
                for _ in range(rng.randrange(1, 4)):
                    at = min(len(d) - 1, off + rng.randrange(60))
                    d[at] = rng.choice([0, 0xFF, rng.randrange(256), d[at] ^ (1 << rng.randrange(8))])
                r = (r[0], r[1], bytes(d))
            out.append(r)
        return out, None
    if name == "payload_bytes":
        out = []
        for r in records:
            p = Pkt.parse(r) if rng.random() < 0.2 else None
            if p is not None and p.end > p.po:
                d = bytearray(r[2])
                for _ in range(rng.randrange(1, 4)):
                    at = rng.randrange(p.po, p.end)
                    d[at] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256),
                                        d[at] ^ (1 << rng.randrange(8))])
                r = (r[0], r[1], bytes(d))
            out.append(r)
        return out, None
    if name == "drop_packets":
        return [r for r in records if rng.random() > 0.1], None
    if name == "reorder":
        out = list(records)
        for _ in range(rng.randrange(1, 20)):
            i = rng.randrange(len(out))
            j = min(len(out), i + rng.randrange(2, 12))
            window = out[i:j]
            rng.shuffle(window)
            out[i:j] = window
        return out, None
    if name == "syn_flood":
        n = rng.choice([500, 2000, 20000])
        at = rng.randrange(len(records) + 1)
        t = records[min(at, len(records) - 1)][0]
        server = rng.choice([b"\x0a\x00\x00\x02", b"\xc0\xa8\x01\x01"])
        flood = [(t, 1, frame(struct.pack("!I", 0x0B000000 + k), server, 1024 + k % 60000, 80,
                              rng.randrange(1 << 32), 0, SYN)) for k in range(n)]
        if rng.random() < 0.7:
            limits = Limits(max_flows=rng.choice([16, 256, 1000]))
        return records[:at] + flood + records[at:], limits
    if name == "hostile_conversation":
        at = rng.randrange(len(records) + 1)
        t = records[min(at, len(records) - 1)][0]
        conv = hostile_conversation(rng, t)
        # interleave the hostile conversation with the real packets around ``at``
        out = records[:at]
        rest = records[at:]
        while conv or rest:
            src = conv if conv and (not rest or rng.random() < 0.5) else rest
            out.append(src.pop(0))
        return out, None
    idx = _payload_packets(records, rng)
    if not idx:
        return records, None
    i = rng.choice(idx)
    p = Pkt.parse(records[i])
    body = p.payload
    if name == "dup_contradictory":
        alt = bytearray(body)
        for _ in range(rng.randrange(1, 8)):
            alt[rng.randrange(len(alt))] = rng.randrange(256)
        if rng.random() < 0.3:
            alt += rng.randbytes(rng.randrange(1, 200))
        copy = p.rebuild(bytes(alt))
        j = i if rng.random() < 0.5 else i + 1  # the contradictory copy first, or after
        return records[:j] + [copy] + records[j:], None
    if name == "overlap_contradictory":
        off = rng.randrange(len(body))
        piece = bytes(x ^ 0x5A for x in body[off:]) + rng.randbytes(rng.randrange(0, 400))
        copy = p.rebuild(piece, seq=p.seq + off)
        j = i if rng.random() < 0.5 else i + 1
        return records[:j] + [copy] + records[j:], None
    # the rest edit an HTTP head: prefer packets that hold one
    heads = [k for k in idx if b"\r\n" in Pkt.parse(records[k]).payload[:4096]]
    if heads:
        i = rng.choice(heads)
        p = Pkt.parse(records[i])
        body = p.payload
    nl = body.find(b"\r\n")
    at = nl + 2 if nl >= 0 else rng.randrange(len(body) + 1)
    if name == "header_explosion":
        n = rng.choice([300, 3000, 100_000])
        lines = b"".join(b"X-Flood-%d: v\r\n" % k for k in range(n)) if n < 100_000 else b"a:\r\n" * n
        return splice_stream(records, i, at, at, lines), None
    if name == "huge_header_line":
        size = rng.choice([70_000, 1 << 20])
        return splice_stream(records, i, at, at, b"X-Huge: " + b"h" * size + b"\r\n"), None
    if name == "smuggling_headers":
        new = rng.choice([
            b"Transfer-Encoding: chunked\r\n", b"Content-Length: 0\r\nContent-Length: 7\r\n",
            b"Content-Length: 99999999999999999999999\r\n", b"Content-Length: -5\r\n",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            b"Transfer-Encoding : chunked\r\n", b"Content-Length: 1, 2\r\n",
            b"Content-Encoding: gzip, br, deflate\r\n", b"Content-Encoding: br\r\n",
            b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n",
        ])
        return splice_stream(records, i, at, at, new), None
    if name == "invalid_utf8":
        bad = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\xbc", b"\x80\x80", b"\x00",
                          b"\xe2\x82"])
        pos = rng.randrange(len(body) + 1) if rng.random() < 0.5 else max(0, at - 2)
        return splice_stream(records, i, pos, pos, bad * rng.randrange(1, 5)), None
    if name == "junk_payload":
        junk = rng.randbytes(rng.randrange(1, 2000))
        if rng.random() < 0.5:
            return splice_stream(records, i, 0, len(body), junk), None
        return records[:i] + [p.rebuild(junk[: len(body)])] + records[i + 1 :], None
    raise ValueError(name)


TINY = Limits(max_flows=8, flow_idle_timeout=5.0, max_ooo_bytes=2048, max_header_bytes=512, max_headers=4,
              body_cap=64, decompressed_cap=4096, max_pending_requests=2, detect_bytes=256, max_fragments=4,
              fragment_timeout=1.0, h2_max_streams=2)


def random_limits(rng: random.Random) -> Limits:
    """Defaults, tiny, or defaults with a few fields from tiny."""
    r = rng.random()
    if r < 0.6:
        return Limits()
    if r < 0.8:
        return TINY
    fields = rng.sample(list(TINY.__dataclass_fields__), rng.randrange(1, 5))
    return replace(Limits(), **{f: getattr(TINY, f) for f in fields})


# ---- running ---------------------------------------------------------------------------------

class Hang(BaseException):  # BaseException: ``except Exception`` in the sensor must not swallow it
    pass


def _alarm(signum, frame) -> None:
    raise Hang()


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def run_records(records, limits: Limits, stats: Stats, sinks: bool = False) -> int:
    """Run the pipeline; with ``sinks`` also the replay's sinks (inventory, findings, map, ...)
    on a fresh in-memory database, as ``apisensor replay`` does."""
    n = 0
    store = rec = None
    if sinks:
        from discovery.recorder import Recorder, start_run
        from discovery.store import Store
        from sensor.cli import SINKS

        store = Store(":memory:")
        run_id, made = start_run(store, ["fuzz"], SINKS)
        rec = Recorder(store, run_id, made, flush_every=200)

    def on_tx(tx) -> None:
        nonlocal n
        n += 1
        json.dumps(tx.to_json(), ensure_ascii=False)
        if rec is not None:
            rec.observe(tx)

    p = Pipeline(on_tx, limits, stats, on_event=rec.observe_event if rec is not None else (lambda ev: None))
    p.run(records)
    p.finish()
    if rec is not None:
        rec.finish()
        store.finish_run(run_id, stats.to_json(), warnings=[])
        store.close()
    return n


def run_file(path: str, limits: Limits, stats: Stats, sinks: bool = False) -> tuple[int, bool]:
    """(transactions, file truncated); CaptureError propagates (a refused file)."""
    f = CaptureFile(path)
    try:
        n = run_records(iter(f), limits, stats, sinks)
    finally:
        f.close()
    stats.anomalies.update(f.anomalies)  # capture.truncated, capture.corrupt_record, ...
    if f.truncated:
        stats.truncated_files += 1
    return n, f.truncated


def find_seeds() -> list[str]:
    pats = [os.path.join(ROOT, "..", "shared", "corpus", "*", "*.pcap*"),
            os.path.join(ROOT, "tests", "data", "*.pcap"), os.path.join(ROOT, "pcaps", "demo.pcap")]
    return sorted(p for pat in pats for p in glob.glob(pat) if os.path.getsize(p) < (4 << 20))


def load_seeds(paths: list[str]) -> list[tuple[str, bytes, list]]:
    seeds = []
    for p in paths:
        with open(p, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        try:
            recs = list(CaptureFile(p))
        except CaptureError:
            continue
        seeds.append((os.path.basename(p), raw, recs))
    return seeds


def fuzz(budget: float, seed: int, timeout: float = 10.0, mem_mb: float = 512.0, save_dir: str | None = None,
         max_inputs: int | None = None, seeds: list | None = None, log=None, sinks_every: int = 5) -> dict:
    """Fuzz for ``budget`` seconds; every ``sinks_every``-th input (0: none) also goes through
    the replay's sinks."""
    rng = random.Random(seed)
    seeds = seeds if seeds is not None else load_seeds(find_seeds())
    if not seeds:
        raise SystemExit("no seed captures found")
    tmpdir = tempfile.mkdtemp(prefix="fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    tmp = os.path.join(tmpdir, "input.pcap")
    old = signal.signal(signal.SIGALRM, _alarm)
    base_rss = _rss_mb()
    summary = {
        "seed": seed, "budget_seconds": budget, "seeds": len(seeds), "inputs": 0, "crashes": 0, "hangs": 0,
        "memory_exceeded": 0, "fuzzer_errors": 0, "through_sinks": 0, "refused_files": 0,
        "truncated_files": 0, "packets": 0, "transactions": 0,
        "slowest_input_seconds": 0.0, "mutations": Counter(), "anomalies": Counter(), "crash_samples": [],
        "hang_samples": [], "memory_samples": [], "baseline_rss_mb": round(base_rss, 1),
    }
    crash_sigs: set[str] = set()
    t_end = time.monotonic() + budget
    try:
        while time.monotonic() < t_end and (max_inputs is None or summary["inputs"] < max_inputs):
            name, raw, recs = rng.choice(seeds)
            limits = random_limits(rng)
            file_level = rng.random() < 0.4
            applied = []
            desc = {"seed_file": name, "input": summary["inputs"]}
            try:
                if file_level:
                    data = raw
                    for _ in range(rng.randrange(1, 4)):
                        m = rng.choice(FILE_MUTATIONS)
                        applied.append(m)
                        data = mutate_file(data, rng, m, rng.choice(seeds)[1])
                    if rng.random() < 0.1:
                        cut = None if rng.random() < 0.5 else rng.randrange(10, 200)
                        data = gzip.compress(data, 1)[:cut]
                        applied.append("gzip")
                    with open(tmp, "wb") as f:
                        f.write(data)
                else:
                    records = recs
                    for _ in range(rng.randrange(1, 4)):
                        m = rng.choice(PACKET_MUTATIONS)
                        applied.append(m)
                        records, lim = mutate_packets(records, rng, m)
                        if lim is not None:
                            limits = lim
            except Exception as e:  # a bug of this script, not of the sensor: noted, skipped
                summary["fuzzer_errors"] += 1
                summary["fuzzer_error_samples"] = summary.get("fuzzer_error_samples", [])[:4] + [
                    {**desc, "mutations": applied, "error": repr(e)[:200]}]
                continue
            summary["mutations"].update(applied)
            desc["mutations"] = applied
            with_sinks = bool(sinks_every) and summary["inputs"] % sinks_every == 0
            desc["sinks"] = with_sinks
            summary["through_sinks"] += with_sinks
            stats = Stats()
            t0 = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                if file_level:
                    try:
                        n, _ = run_file(tmp, limits, stats, with_sinks)
                    except CaptureError:
                        summary["refused_files"] += 1
                        n = 0
                else:
                    n = run_records(records, limits, stats, with_sinks)
                signal.setitimer(signal.ITIMER_REAL, 0)
                summary["transactions"] += n
            except Hang:
                summary["hangs"] += 1
                if len(summary["hang_samples"]) < 20:
                    saved = _save(save_dir, file_level, tmp, None if file_level else records, desc)
                    summary["hang_samples"].append({**desc, "saved": saved})
            except Exception as e:  # a crash: something escaped the sensor
                signal.setitimer(signal.ITIMER_REAL, 0)
                tb = traceback.extract_tb(e.__traceback__)
                where = next((f"{os.path.relpath(fr.filename, ROOT)}:{fr.lineno}" for fr in reversed(tb)
                              if any(d in fr.filename for d in ("/sensor/", "/discovery/", "/graph/"))), "?")
                sig = f"{type(e).__name__} at {where}"
                summary["crashes"] += 1
                if sig not in crash_sigs and len(summary["crash_samples"]) < 50:
                    crash_sigs.add(sig)
                    saved = _save(save_dir, file_level, tmp, None if file_level else records, desc)
                    summary["crash_samples"].append({**desc, "error": f"{sig}: {e}"[:300], "saved": saved,
                                                     "traceback": traceback.format_exc()[-2000:]})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            elapsed = time.monotonic() - t0
            summary["slowest_input_seconds"] = max(summary["slowest_input_seconds"], round(elapsed, 3))
            summary["inputs"] += 1
            summary["packets"] += stats.packets
            summary["truncated_files"] += stats.truncated_files
            summary["anomalies"].update(stats.anomalies)
            if _rss_mb() - base_rss > mem_mb:
                summary["memory_exceeded"] += 1
                if len(summary["memory_samples"]) < 5:
                    summary["memory_samples"].append({**desc, "peak_rss_mb": round(_rss_mb(), 1)})
                base_rss = _rss_mb()  # report each further overrun only once
            if log is not None and summary["inputs"] % 200 == 0:
                log(f"{summary['inputs']} inputs, {summary['crashes']} crashes, {summary['hangs']} hangs")
            del stats
            if not file_level:
                records = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        os.rmdir(tmpdir)
    summary["peak_rss_mb"] = round(_rss_mb(), 1)
    summary["mutations"] = dict(sorted(summary["mutations"].items()))
    summary["anomalies"] = dict(sorted(summary["anomalies"].items()))
    summary["anomaly_kinds"] = len(summary["anomalies"])
    # exceptions the sensor caught itself (HTTP/2 guards its parser): bugs all the same
    summary["internal_errors"] = summary["anomalies"].get("h2.internal_error", 0)
    return summary


def _save(save_dir: str | None, file_level: bool, tmp: str, records, desc: dict) -> str | None:
    """Keep a failing input as a pcap (records are written with their first link type)."""
    if not save_dir:
        return None
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, f"input-{desc['input']}.pcap")
    if file_level:
        with open(tmp, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
    else:
        write_pcap(path, records, records[0][1] if records else 1)
    with open(path + ".json", "w") as f:
        json.dump(desc, f)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per input before it is a hang")
    ap.add_argument("--mem-mb", type=float, default=512.0, help="peak RSS growth allowed over the start (MB)")
    ap.add_argument("--max-inputs", type=int, default=None)
    ap.add_argument("--save-dir", default=None, help="write crashing/hanging inputs here")
    ap.add_argument("--sinks-every", type=int, default=5,
                    help="every Nth input also goes through the replay's sinks (0: never)")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    log = None if a.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    s = fuzz(a.budget_seconds, a.seed, a.timeout, a.mem_mb, a.save_dir, a.max_inputs, log=log,
             sinks_every=a.sinks_every)
    print(json.dumps(s, indent=1))
    return 0 if not (s["crashes"] or s["hangs"] or s["memory_exceeded"] or s["internal_errors"]) else 1


if __name__ == "__main__":
    sys.exit(main())
