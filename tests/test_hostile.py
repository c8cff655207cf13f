"""Hostile traffic: one test per shape of the reliability issue, each built as real capture bytes
and run through the real stages (``CaptureFile`` + ``Pipeline``, or the ``apisensor`` CLI in a
subprocess for whole files).  Each asserts that the sensor keeps going (no exception, the
documented exit code, the normal traffic around the attack still parsed), that the anomaly is
counted by kind, and, for the floods and bombs, that memory stays under the bound the README
states (peak RSS growth of a child process fed by a generator, measured with
``/proc/self/clear_refs`` and ``VmHWM``).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import struct
import subprocess
import sys
import zlib
from dataclasses import fields

import brotli
import hpack
import pytest
from conftest import ROOT
from fuzz_corpus import H2_PREFACE, Conn, frame, h2frame, pcap_bytes, write_pcap

from sensor.limits import Limits
from sensor.pipeline import Pipeline
from sensor.sources import merge, open_files
from sensor.stats import Stats

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
TESTS = os.path.dirname(os.path.abspath(__file__))
T0 = 1_700_000_000.0
C = (b"\x0a\x00\x00\x01", 40000)
S = (b"\x0a\x00\x00\x02", 80)
GET = b"GET /before HTTP/1.1\r\nHost: api.example\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def get(uri: bytes, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: api.example\r\n%s\r\n" % (uri, extra)


# ---- running -----------------------------------------------------------------------------------

def replay(tmp_path, records, limits: Limits | None = None, linktype: int = 1):
    """Write ``records`` as a pcap, read it back with the real source and run the pipeline."""
    path = write_pcap(str(tmp_path / "hostile.pcap"), records, linktype)
    files = open_files([path])
    stats, out, events = Stats(), [], []
    p = Pipeline(out.append, limits, stats, on_event=events.append)
    p.run(merge(files))
    p.finish()
    for f in files:
        stats.anomalies.update(f.anomalies)
    return out, stats


def read(path: str, limits: Limits | None = None):
    """Run a capture file through the real source and pipeline in-process:
    (transactions, stats with the file's problems counted, the CaptureFile)."""
    files = open_files([str(path)])
    stats, out = Stats(), []
    p = Pipeline(out.append, limits, stats, on_event=lambda ev: None)
    p.run(merge(files))
    p.finish()
    for f in files:
        stats.anomalies.update(f.anomalies)
        stats.truncated_files += f.truncated
    return out, stats, files[0]


def cli(*args: str, timeout: float = 120) -> tuple[int, str, str, int]:
    """Run ``apisensor``; (exit code, stdout, stderr, 0).  Never a traceback."""
    env = {**os.environ, "APISENSOR_HASH_KEY": "00112233445566778899aabbccddeeff"}
    r = subprocess.run([APISENSOR, *args], capture_output=True, env=env, timeout=timeout)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    return r.returncode, out, err, 0


def cli_rss(*args: str) -> tuple[int, str, str, int]:
    """Like :func:`cli`, but measures the peak RSS of the process (os.wait4 on our own child)."""
    env = {**os.environ, "APISENSOR_HASH_KEY": "00112233445566778899aabbccddeeff"}
    with open(os.devnull, "wb") as devnull:
        p = subprocess.Popen([APISENSOR, *args], stdout=devnull, stderr=subprocess.PIPE, env=env)
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    text = err.decode(errors="replace")
    assert "Traceback" not in text, text
    return p.returncode, "", text, usage.ru_maxrss


_CHILD = r"""
import json, re, sys, time
sys.path[:0] = [{root!r}, {tests!r}]
import test_hostile as h
from sensor.limits import Limits
from sensor.pipeline import Pipeline
from sensor.stats import Stats

def status(key):
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\s+(\d+)", f.read()).group(1))

records = getattr(h, sys.argv[1])(**json.loads(sys.argv[2]))
limits = Limits(**json.loads(sys.argv[3]))
txs = []
def keep(tx):
    txs.append({{"uri": tx.uri, "status": tx.status_code, "flags": sorted(tx.flags),
                "req_len": tx.request_body_len, "resp_len": tx.response_body_len,
                "resp_kept": len(tx.response_body), "headers": len(tx.request_headers)}})
stats = Stats()
p = Pipeline(keep, limits, stats)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak: VmHWM now measures this run only
base = status("VmRSS")
t0 = time.perf_counter()
p.run(records)
p.finish()
print(json.dumps({{"growth_mb": (status("VmHWM") - base) / 1024, "seconds": time.perf_counter() - t0,
                  "stats": stats.to_json(), "txs": txs[:50], "n_txs": len(txs)}}))
"""


def measure(gen: str, limits: dict | None = None, **kwargs) -> dict:
    """Run generator ``gen`` of this module through a Pipeline in a fresh process."""
    code = _CHILD.format(root=ROOT, tests=TESTS)
    r = subprocess.run([sys.executable, "-c", code, gen, json.dumps(kwargs), json.dumps(limits or {})],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _drain(c: Conn) -> list:
    recs, c.records = c.records, []
    return recs


# ---- generators (lazy: the input itself does not count against the memory bound) ---------------

def gen_syn_flood(n: int = 200_000):
    """A real exchange whose response comes after ``n`` spoofed SYNs (half-open flows)."""
    c = Conn(t0=T0)
    c.client(get(b"/real"))
    yield from _drain(c)
    rng = random.Random(1)
    ts = T0 + 1
    for i in range(n):
        ts += 0.0001
        src = struct.pack("!I", 0x0B000000 + i)
        yield ts, 1, frame(src, S[0], 1024 + i % 60000, 80, rng.randrange(1 << 32), 0, 0x02)
    c.ts = ts
    c.server(OK).close()
    yield from _drain(c)


def gen_header_flood(n: int = 100_000, line: bytes = b"X-Flood: v\r\n"):
    """``n`` header lines in one request head, then a normal request on the same connection."""
    c = Conn(t0=T0)
    c.client(b"GET /flood HTTP/1.1\r\n")
    yield from _drain(c)
    block = line * 1000
    for _ in range(n // 1000):
        c.client(block)
        yield from _drain(c)
    c.client(b"\r\n" + get(b"/after"))
    c.server(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n" + OK).close()
    yield from _drain(c)


def gen_long_line(size: int = 1 << 20, where: str = "header"):
    """A 1 MB header line / request line / status line, then normal traffic."""
    c = Conn(t0=T0)
    big = b"x" * size
    if where == "header":
        c.client(b"GET /long HTTP/1.1\r\nX-Long: " + big + b"\r\n\r\n" + get(b"/after"))
        c.server(b"HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\n" + OK)
    elif where == "request_line":
        c.client(b"GET /" + big + b" HTTP/1.1\r\nHost: a\r\n\r\n" + get(b"/after"))
        c.server(b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\n\r\n" + OK)
    else:  # status line
        c.client(get(b"/first") + get(b"/after"))
        c.server(b"HTTP/1.1 200 " + big + b"\r\nContent-Length: 0\r\n\r\n" + OK)
    c.close()
    yield from _drain(c)


def gen_endless_chunked(mb: int = 64, chunk: int = 4096):
    """A chunked response that never ends (``mb`` MiB of chunks, then the connection closes)."""
    c = Conn(t0=T0)
    c.client(get(b"/stream"))
    c.server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    yield from _drain(c)
    piece = b"%x\r\n" % chunk + b"z" * chunk + b"\r\n"
    for _ in range((mb << 20) // chunk):
        c.server(piece)
        yield from _drain(c)
    c.close()
    yield from _drain(c)


def gen_tiny_chunks(n: int = 300_000):
    """``n`` one-byte chunks: the per-chunk cost must stay constant."""
    c = Conn(t0=T0)
    c.client(get(b"/tiny") + get(b"/after"))
    body = b"1\r\nz\r\n" * n + b"0\r\n\r\n"
    c.server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + OK).close()
    yield from _drain(c)


_BOMBS: dict[str, bytes] = {}


def bomb(encoding: str, gib: int = 1) -> bytes:
    """``gib`` GiB of zeros, content-encoded; built in about a second (deflate output of a long
    run of zeros repeats exactly after a sync flush, so one flushed MiB is copied)."""
    key = f"{encoding}/{gib}"
    if key in _BOMBS:
        return _BOMBS[key]
    n = gib << 10  # MiB
    z = bytes(1 << 20)
    if encoding == "br":
        c = brotli.Compressor(quality=1)
        data = b"".join(c.process(z) for _ in range(n)) + c.finish()
    elif encoding == "gzip, gzip":
        data = gzip.compress(bomb("gzip", gib), 9)
    else:
        d = zlib.compressobj(9, zlib.DEFLATED, -15)
        first = d.compress(z) + d.flush(zlib.Z_SYNC_FLUSH)
        rest = d.compress(z) + d.flush(zlib.Z_SYNC_FLUSH)
        raw = first + rest * (n - 1) + d.flush()
        if encoding in ("gzip", "x-gzip"):
            crc = 0
            for _ in range(n):
                crc = zlib.crc32(z, crc)
            trailer = struct.pack("<II", crc, (n << 20) & 0xFFFFFFFF)
            data = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + raw + trailer
        elif encoding == "deflate":  # zlib-wrapped, as the RFC says
            adler = 1
            for _ in range(n):
                adler = zlib.adler32(z, adler)
            data = b"\x78\xda" + raw + struct.pack("!I", adler)
        else:  # "raw deflate": what many servers send as "deflate"
            data = raw
    _BOMBS[key] = data
    return data


def gen_bomb(encoding: str = "gzip"):
    body = bomb(encoding)
    label = b"deflate" if encoding == "raw deflate" else encoding.encode()
    c = Conn(t0=T0)
    c.client(get(b"/bomb"))
    c.server(ok(body, b"Content-Encoding: " + label + b"\r\n"))
    c.client(get(b"/after")).server(OK).close()
    yield from _drain(c)


_REQ = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"api.example")]


def gen_h2(attack: str = "hpack_bomb", port: int = 40000):
    """An h2c (prior knowledge) connection: one attacked stream, then a normal one (on a new
    connection when the attack leaves the HPACK tables out of step, as a server would too)."""
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    c = Conn(client=(C[0], port), t0=T0)
    out = H2_PREFACE + h2frame(4, 0, 0)
    if attack == "hpack_bomb":
        # one 4000-byte header enters the dynamic table; 60,000 one-byte references to it
        # would decode to 240 MB of headers
        block = enc_c.encode([*_REQ, (b":path", b"/bomb"), (b"x-bomb", b"a" * 4000)]) + b"\xbe" * 60_000
        out += h2frame(1, 0x1, 1, block[:16000])
        for i in range(16000, len(block), 16000):
            out += h2frame(9, 0x4 if i + 16000 >= len(block) else 0, 1, block[i : i + 16000])
    elif attack == "continuation_flood":
        c.client(out + h2frame(1, 0x1, 1, enc_c.encode([*_REQ, (b":path", b"/flood")])))
        yield from _drain(c)
        flood = h2frame(9, 0, 1, b"\x40\x01a\x01b" * 3276)
        for _ in range(640):  # 10 MB of CONTINUATION without END_HEADERS
            c.client(flood)
            yield from _drain(c)
        out = h2frame(9, 0x4, 1, b"")
    elif attack == "data_bomb":
        out += h2frame(1, 0x5, 1, enc_c.encode([*_REQ, (b":path", b"/bomb")]))
    elif attack == "invalid_utf8":
        out += h2frame(1, 0x5, 1, enc_c.encode([*_REQ, (b":path", b"/\xff\xfe?\xc3\x28"),
                                                (b"x-\xff", b"\xed\xa0\x80")]))
    c.client(out)
    resp = h2frame(4, 0, 0) + h2frame(4, 1, 0)
    if attack == "data_bomb":
        body = bomb("gzip")
        resp += h2frame(1, 0x4, 1, enc_s.encode([(b":status", b"200"), (b"content-encoding", b"gzip")]))
        for i in range(0, len(body), 16384):
            resp += h2frame(0, 0x1 if i + 16384 >= len(body) else 0, 1, body[i : i + 16384])
    else:
        resp += h2frame(1, 0x5, 1, enc_s.encode([(b":status", b"400")]))
    c.server(resp)
    if attack in ("hpack_bomb", "continuation_flood"):
        c.close()
        yield from _drain(c)
        enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
        c = Conn(client=(C[0], port + 1), t0=c.ts)
        c.client(H2_PREFACE + h2frame(4, 0, 0)).server(h2frame(4, 0, 0) + h2frame(4, 1, 0))
    c.client(h2frame(1, 0x5, 3, enc_c.encode([*_REQ, (b":path", b"/after")])))
    c.server(h2frame(1, 0x4, 3, enc_s.encode([(b":status", b"200")])) + h2frame(0, 1, 3, b"ok"))
    c.close()
    yield from _drain(c)


def gen_junk(mb: int = 16, port: int = 80):
    """``mb`` MiB of random bytes each way on port 80, then a real exchange on another flow."""
    rng = random.Random(2)
    c = Conn(t0=T0, server=(S[0], port))
    for _ in range(mb * 16):
        c.client(rng.randbytes(65536), mss=8192)
        c.server(rng.randbytes(65536), mss=8192)
        yield from _drain(c)
    c.close()
    yield from _drain(c)
    real = Conn(client=(C[0], 40001), t0=c.ts)
    real.client(get(b"/after")).server(OK).close()
    yield from _drain(real)


def gen_fragment_flood(datagrams: int = 6_000, parts: int = 40):
    """IPv4 fragments of ``datagrams`` datagrams that never complete (the last part never comes)."""
    ts = T0
    for d in range(datagrams):
        for k in range(parts):
            ts += 0.00001
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 1480, d & 0xFFFF, 0x2000 | (k * 185), 64, 6, 0,
                             struct.pack("!I", 0x0C000000 + (d >> 16)), S[0])
            yield ts, 1, b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + bytes(1480)
    c = Conn(t0=ts)
    c.client(get(b"/after")).server(OK).close()
    yield from _drain(c)


# ---- capture files: malformed and truncated headers and records ---------------------------------

def _conversation() -> list:
    return Conn(t0=T0).client(get(b"/one")).server(OK).client(get(b"/two")).server(OK).close().records


def test_not_a_capture_is_one_line_and_exit_2(tmp_path):
    inputs = {"empty": b"", "text": b"GET / HTTP/1.1\r\n\r\n", "junk": random.Random(3).randbytes(5000),
              "bad_gzip": b"\x1f\x8b\x08\x00garbage"}
    for name, data in inputs.items():
        path = tmp_path / f"{name}.pcap"
        path.write_bytes(data)
        rc, out, err, _ = cli("transactions", str(path))
        assert rc == 2, (name, err)
        assert err.startswith("apisensor: error: ") and err.count("\n") == 1, err
    rc, out, err, _ = cli("replay", str(path), "--db", str(tmp_path / "x.db"))
    assert rc == 2 and err.startswith("apisensor: error: ") and err.count("\n") == 1, err


def test_unsupported_link_type_is_exit_2(tmp_path):
    path = tmp_path / "lt.pcap"
    path.write_bytes(pcap_bytes(_conversation(), linktype=147))
    rc, _, err, _ = cli("transactions", str(path))
    assert rc == 2 and "unsupported link type 147" in err


def test_file_header_cut_short(tmp_path):
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_bytes([])[:10])
    rc, out, err, _ = cli("replay", str(path), "--db", str(tmp_path / "x.db"), "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["truncated_files"] == 1 and summary["anomalies"] == {"capture.truncated": 1}
    assert "file ends inside a file header" in err


@pytest.mark.parametrize("cut", [3, 10, 17, 60])
def test_record_cut_short_keeps_the_packets_before(tmp_path, cut):
    """A capture cut inside the last record header (3, 10 bytes in) or its data."""
    data = pcap_bytes(_conversation())
    path = tmp_path / "cut.pcap"
    path.write_bytes(data + struct.pack("<IIII", 1, 0, 80, 80)[: min(cut, 16)] + bytes(max(0, cut - 16)))
    txs, stats, f = read(path)
    assert [t.uri for t in txs] == ["/one", "/two"]
    assert stats.anomalies == {"capture.truncated": 1} and f.truncated
    if cut == 10:
        rc, out, err, _ = cli("transactions", str(path), "--json")
        assert rc == 0 and re.search(r"file ends inside a record header after \d+ packets\n$", err)
        assert [json.loads(line)["uri"] for line in out.splitlines()] == ["/one", "/two"]


def test_zero_length_records_are_counted_and_skipped(tmp_path):
    recs = _conversation()
    mixed = [r for rec in recs for r in (rec, (rec[0], 1, b""))]
    txs, stats = replay(tmp_path, mixed)
    assert [t.uri for t in txs] == ["/one", "/two"]
    assert stats.anomalies["decode.malformed"] == len(recs)


@pytest.mark.parametrize("incl", [0xFFFFFFFF, 0x7FFFFFFF, (16 << 20) + 1])
def test_huge_declared_record_length_stops_the_file(tmp_path, incl):
    data = pcap_bytes(_conversation()) + struct.pack("<IIII", 1, 0, incl, incl) + b"tail"
    path = tmp_path / "huge.pcap"
    path.write_bytes(data)
    txs, stats, f = read(path)
    assert len(txs) == 2 and stats.anomalies == {"capture.corrupt_record": 1}
    assert f"(length {incl}); stopped" in f.warnings[0]
    if incl == 0xFFFFFFFF:
        rc, out, err, _ = cli("replay", str(path), "--db", str(tmp_path / "x.db"), "--json")
        assert rc == 0 and f"(length {incl}); stopped" in err
        summary = json.loads(out)
        assert summary["transactions"] == 2 and summary["anomalies"]["capture.corrupt_record"] == 1


def test_huge_snaplen_and_record_in_gzip_capture_is_not_inflated(tmp_path):
    """Regression: a record length was trusted up to the header's snaplen (here 4 GiB), so a
    compressed capture claiming a 4 GB record was decompressed into memory looking for it."""
    hdr = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 0xFFFFFFFF, 1)
    rec = struct.pack("<IIII", 1, 0, 0xF0000000, 0xF0000000)
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    z = bytes(1 << 20)
    gz = c.compress(hdr + rec) + b"".join(c.compress(z) for _ in range(512)) + c.flush()  # 512 MiB inflated
    path = tmp_path / "bomb.pcap.gz"
    path.write_bytes(gz)
    _, _, _, base = cli_rss("transactions", str(write_pcap(str(tmp_path / "small.pcap"), _conversation())))
    rc, _, err, rss = cli_rss("transactions", str(path))
    assert rc == 0 and "corrupt record" in err
    assert rss - base < 64 << 10, (rss, base)  # KiB: at most a record's worth (16 MiB) plus buffers


def _pcapng(blocks: list[bytes]) -> bytes:
    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    return shb + b"".join(blocks)


def _idb(linktype: int = 1) -> bytes:
    return struct.pack("<IIHHI", 1, 20, linktype, 0, 65535) + struct.pack("<I", 20)


def _epb(data: bytes, iface: int = 0, ts_us: int = 1_700_000_000_000_000) -> bytes:
    pad = b"\x00" * (-len(data) % 4)
    blen = 32 + len(data) + len(pad)
    return struct.pack("<IIIIIII", 6, blen, iface, ts_us >> 32, ts_us & 0xFFFFFFFF, len(data), len(data)) \
        + data + pad + struct.pack("<I", blen)


@pytest.mark.parametrize("tail,kind", [
    (struct.pack("<III", 6, 12, 12), "capture.corrupt_block"),  # regression: struct.error at EOF
    (struct.pack("<III", 2, 12, 12), "capture.corrupt_block"),
    (struct.pack("<III", 6, 13, 13), "capture.corrupt_block"),
    (struct.pack("<III", 6, 0xFFFFFFF0, 0), "capture.corrupt_block"),
    (struct.pack("<II", 0x0A0D0D0A, 28) + b"\x00" * 20, "capture.corrupt_block"),  # bad byte-order magic
    (_epb(b"x" * 60)[:40], "capture.truncated"),
])
def test_malformed_pcapng_blocks(tmp_path, tail, kind):
    recs = _conversation()
    data = _pcapng([_idb(), *(_epb(r[2], ts_us=int(r[0] * 1e6)) for r in recs)]) + tail
    path = tmp_path / "bad.pcapng"
    path.write_bytes(data)
    txs, stats, f = read(path)
    assert len(txs) == 2 and stats.anomalies == {kind: 1} and f.truncated
    if tail[:8] == struct.pack("<II", 6, 12):  # the one that was a traceback: through the CLI too
        rc, out, err, _ = cli("transactions", str(path))
        assert rc == 0 and "corrupt pcapng block" in err


def test_many_bad_packet_blocks_are_counted_not_all_printed(tmp_path):
    recs = _conversation()
    bad = [_epb(b"junk", iface=7)] * 5000
    data = _pcapng([_idb(), *bad, *(_epb(r[2], ts_us=int(r[0] * 1e6)) for r in recs)])
    path = tmp_path / "bad.pcapng"
    path.write_bytes(data)
    txs, stats, f = read(path)
    assert stats.anomalies == {"capture.bad_packet_block": 5000} and len(txs) == 2
    rc, out, err, _ = cli("transactions", str(path))
    assert rc == 0 and err.count("\n") == 21  # 20 warnings and one "more problems" line, not 5000


def test_corrupt_gzip_capture_keeps_what_was_readable(tmp_path):
    rng = random.Random(5)
    recs = []
    for i in range(300):
        c = Conn(client=(C[0], 20000 + i), t0=T0 + i)
        recs += c.client(get(b"/%d" % i)).server(ok(rng.randbytes(500))).close().records
    data = bytearray(gzip.compress(pcap_bytes(recs)))
    data[len(data) // 2 : len(data) // 2 + 8] = b"\xff" * 8
    path = tmp_path / "bad.pcap.gz"
    path.write_bytes(bytes(data))
    rc, out, err, _ = cli("replay", str(path), "--db", str(tmp_path / "x.db"), "--json")
    assert rc == 0, err
    summary = json.loads(out)
    # the corrupt deflate data decodes to garbage (a corrupt record) or fails (a read error)
    assert sum(v for k, v in summary["anomalies"].items() if k.startswith("capture.")) == 1
    assert 50 < summary["transactions"] < 300 and summary["truncated_files"] == 1
    path.write_bytes(bytes(data[:40]))  # so short that nothing decodes: not a readable capture
    rc, _, err, _ = cli("transactions", str(path))
    assert rc == 2 and "corrupt gzip file" in err


# ---- packets: snaplen, lengths, bogus headers ---------------------------------------------------

def test_snaplen_truncated_packets(tmp_path):
    body = bytes(range(256)) * 40
    recs = Conn(t0=T0).client(get(b"/snap")).server(ok(body)).close().records
    cut = [(ts, lt, d[:200]) for ts, lt, d in recs]  # as tcpdump -s 200 records them
    txs, stats = replay(tmp_path, cut)
    assert [t.uri for t in txs] == ["/snap"]
    assert "gap" in txs[0].flags and txs[0].response_body_len == len(body)
    assert stats.anomalies["decode.ip_truncated"] > 0 and stats.anomalies["tcp.gap"] > 0


def _with_ip(d: bytes, total: int | None = None, ihl: int | None = None, version: int | None = None) -> bytes:
    b = bytearray(d)
    if total is not None:
        struct.pack_into("!H", b, 16, total)
    if ihl is not None or version is not None:
        b[14] = ((version or 4) << 4) | (ihl if ihl is not None else 5)
    return bytes(b)


def _with_doff(d: bytes, doff: int) -> bytes:
    b = bytearray(d)
    b[14 + 20 + 12] = doff << 4
    return bytes(b)


@pytest.mark.parametrize("mangle,kind", [
    (lambda d: _with_ip(d, total=0xFFFF), "decode.ip_truncated"),
    (lambda d: _with_ip(d, total=19), "decode.bad_ipv4_length"),
    (lambda d: _with_ip(d, ihl=3), "decode.bad_ipv4_header"),
    (lambda d: _with_ip(d, ihl=15)[:50], "decode.malformed"),
    (lambda d: _with_ip(d, version=6), "decode.bad_ipv4_header"),
    (lambda d: _with_doff(d, 0), "decode.bad_tcp_header"),
    (lambda d: _with_doff(d, 15), "decode.bad_tcp_header"),
    (lambda d: d[:30], "decode.malformed"),
])
def test_bogus_ip_and_tcp_headers(tmp_path, mangle, kind):
    """Each bogus copy of a real packet is counted; the real conversation is still parsed."""
    recs = _conversation()
    packet = frame(b"\x0a\x09\x09\x09", S[0], 5555, 80, 1, 0, 0x18, b"GET /bogus HTTP/1.1\r\n\r\n")
    bogus = [(ts, lt, mangle(packet)) for ts, lt, _ in recs]
    mixed = [r for pair in zip(recs, bogus) for r in pair]
    txs, stats = replay(tmp_path, mixed)
    assert [t.uri for t in txs if t.uri != "/bogus"] == ["/one", "/two"]
    assert stats.anomalies[kind] >= len(recs), stats.anomalies


def test_tcp_options_of_any_shape_are_skipped(tmp_path):
    """Data offset 15 with 40 bytes of garbage options (bad kinds, zero and huge lengths)."""
    recs = []
    for ts, lt, d in _conversation():
        b = bytearray(d)
        tcp = 14 + 20
        b[tcp + 12] = (15 << 4) | (b[tcp + 12] & 0x0F)
        opts = bytes([0xFF, 0, 2, 255, 8, 1, 0xFE]) + bytes(33)
        b[tcp + 20 : tcp + 20] = opts
        struct.pack_into("!H", b, 16, struct.unpack_from("!H", b, 16)[0] + 40)
        recs.append((ts, lt, bytes(b)))
    txs, stats = replay(tmp_path, recs)
    assert [(t.uri, t.status_code, t.response_body) for t in txs] == [("/one", 200, b"ok"),
                                                                      ("/two", 200, b"ok")]


def test_ipv6_extension_header_chains(tmp_path):
    """20 chained hop-by-hop headers, and one whose length runs past the packet."""
    src, dst = b"\xfe\x80" + bytes(13) + b"\x01", b"\xfe\x80" + bytes(13) + b"\x02"
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x18, 65535, 0, 0) + b"GET /v6 HTTP/1.1\r\n\r\n"
    chain = b"".join(bytes([0, 0]) + bytes(6) for _ in range(19)) + bytes([6, 0]) + bytes(6)
    long_ext = bytes([6, 200]) + bytes(6)
    recs = []
    for ext in (chain, long_ext):
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(tcp), 0, 64, src, dst)
        recs.append((T0, 1, b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x86\xdd" + ip + ext + tcp))
    recs += _conversation()
    txs, stats = replay(tmp_path, recs)
    assert [t.uri for t in txs] == ["/one", "/two"]
    assert stats.anomalies["decode.bad_ipv6_header"] >= 1


def test_fragment_flood_is_bounded(tmp_path):
    """240,000 fragments (355 MB) of 6,000 datagrams that never complete: the fragments held stay
    within ``max_fragment_bytes`` (and ``max_fragments`` datagrams), the oldest are dropped and
    counted."""
    r = measure("gen_fragment_flood")
    anomalies = r["stats"]["anomalies"]
    assert anomalies["ip.fragments_expired"] >= 6_000 - 1000
    assert [t["uri"] for t in r["txs"]] == ["/after"]
    assert r["growth_mb"] < 32 + 16, r  # max_fragment_bytes (32 MiB) plus the interpreter's slack


# ---- TCP: contradictory retransmissions, SYN floods --------------------------------------------

def test_contradictory_retransmissions_first_seen_wins(tmp_path):
    c = Conn(t0=T0)
    real = get(b"/real-path")
    c.pkt(True, 0x18, real, seq=c.cseq)  # the original
    c.pkt(True, 0x18, get(b"/fake-path"), seq=c.cseq)  # a retransmission that says something else
    c.cseq += len(real)
    second = get(b"/second")
    c.pkt(True, 0x18, second[:20], seq=c.cseq)
    # overlaps the last 10 bytes with other content, then carries the rest
    c.pkt(True, 0x18, b"X" * 10 + second[20:], seq=c.cseq + 10)
    c.cseq += len(second)
    third = get(b"/third")
    # out of order: the tail arrives first, then two contradicting copies of the whole
    c.pkt(True, 0x18, third[10:], seq=c.cseq + 10)
    c.pkt(True, 0x18, third, seq=c.cseq)
    c.pkt(True, 0x18, get(b"/XXXXX"), seq=c.cseq)
    c.cseq += len(third)
    c.server(OK * 3).close()
    txs, stats = replay(tmp_path, c.records)
    assert [t.uri for t in txs] == ["/real-path", "/second", "/third"]
    assert stats.anomalies["tcp.retransmission"] >= 2 and stats.anomalies["tcp.overlap"] >= 1


def test_contradicting_copy_seen_first_wins_too(tmp_path):
    """The policy is "first seen wins", whichever copy that is: the sensor is deterministic."""
    c = Conn(t0=T0)
    c.pkt(True, 0x18, get(b"/fake-path"), seq=c.cseq)
    c.client(get(b"/real-path")).server(OK).close()
    txs, stats = replay(tmp_path, c.records)
    assert [t.uri for t in txs] == ["/fake-path"] and stats.anomalies["tcp.retransmission"] == 1


def test_syn_flood_evicts_half_open_flows_first():
    """200,000 half-open flows with max_flows 20,000: the flows that never carried a byte go
    first, so the real exchange that started before the flood is still complete after it."""
    r = measure("gen_syn_flood", {"max_flows": 20_000})
    anomalies = r["stats"]["anomalies"]
    assert anomalies["tcp.flow_evicted"] >= 180_000
    assert r["txs"] == [{"uri": "/real", "status": 200, "flags": [], "req_len": 0, "resp_len": 2,
                         "resp_kept": 2, "headers": 1}]
    assert r["growth_mb"] < 20_000 * 2 / 1024 + 16, r  # README: about 1.2 KB per half-open flow


@pytest.mark.slow
def test_syn_flood_at_the_default_bound():
    """250,000 SYNs at the default max_flows (200,000): the README's 250 MB for a full table."""
    r = measure("gen_syn_flood", n=250_000)
    assert r["stats"]["anomalies"]["tcp.flow_evicted"] >= 40_000
    assert [t["uri"] for t in r["txs"]] == ["/real"] and r["txs"][0]["status"] == 200
    assert r["growth_mb"] < 320, r


def test_out_of_order_bytes_are_bounded_over_all_flows(tmp_path):
    """Many flows each holding out-of-order data: past ``max_ooo_total`` the flow that adds more
    declares its holes as gaps (counted) instead of buffering."""
    recs = []
    for i in range(40):
        c = Conn(client=(bytes([10, 7, 0, i + 1]), 30000 + i), t0=T0 + i)
        c.pkt(True, 0x18, b"y" * 1000, seq=c.cseq + 100)  # a hole of 100 bytes before it
        recs += c.records
    limits = Limits(max_ooo_total=10_000)
    stats = Stats()
    p = Pipeline(lambda tx: None, limits, stats)
    p.run(recs)
    assert p.table.ooo_total <= 10_000
    assert stats.anomalies["tcp.ooo_total_exceeded"] >= 30
    p.finish()
    assert p.table.ooo_total == 0


# ---- HTTP/1 heads: header floods, long lines ---------------------------------------------------

def test_header_flood_100k_headers():
    r = measure("gen_header_flood")
    assert r["stats"]["anomalies"]["http.header_too_long"] == 1
    assert [(t["uri"], t["status"]) for t in r["txs"]] == [("/flood", 431), ("/after", 200)]
    assert r["growth_mb"] < 8, r  # one head of max_header_bytes (64 KiB) and a segment


def test_header_flood_100k_headers_with_a_raised_head_limit():
    """With room for the bytes, the count bound applies: 256 headers kept, the rest counted."""
    r = measure("gen_header_flood", {"max_header_bytes": 8 << 20})
    assert r["stats"]["anomalies"]["http.too_many_headers"] == 100_000 - 256
    assert r["txs"][0]["headers"] == 256 and r["txs"][1]["uri"] == "/after"
    assert r["seconds"] < 10 and r["growth_mb"] < 32, r


def test_many_short_headers_within_the_byte_limit(tmp_path):
    head = b"GET /many HTTP/1.1\r\n" + b"".join(b"h%d: v\r\n" % i for i in range(2000)) + b"\r\n"
    recs = Conn(t0=T0).client(head + get(b"/after")).server(OK + OK).close().records
    txs, stats = replay(tmp_path, recs)
    assert [t.uri for t in txs] == ["/many", "/after"] and len(txs[0].request_headers) == 256
    assert stats.anomalies["http.too_many_headers"] == 2000 - 256


@pytest.mark.parametrize("where,kind", [("header", "http.header_too_long"),
                                        ("request_line", "http.request_line_too_long"),
                                        ("status_line", "http.status_line_too_long")])
def test_one_megabyte_lines(where, kind):
    r = measure("gen_long_line", where=where)
    assert r["stats"]["anomalies"][kind] == 1
    assert "/after" in [t["uri"] for t in r["txs"]]
    assert r["growth_mb"] < 8, r


def test_h2_hpack_bomb_and_continuation_flood():
    r = measure("gen_h2", attack="hpack_bomb")
    a = r["stats"]["anomalies"]
    assert a.get("h2.header_list_too_large", 0) + a.get("h2.hpack_error", 0) == 1, a
    assert "/after" in [t["uri"] for t in r["txs"]]
    assert r["growth_mb"] < 32 and r["seconds"] < 10, r
    r = measure("gen_h2", attack="continuation_flood")
    assert r["stats"]["anomalies"]["h2.header_block_too_large"] == 1
    assert "/after" in [t["uri"] for t in r["txs"]]
    assert r["growth_mb"] < 16, r


# ---- HTTP/1 bodies: chunk sizes, endless chunked, bombs ----------------------------------------

@pytest.mark.parametrize("size", [b"ffffffffffffffffffffffff", b"-1", b"0x10", b"+10", b"1_0", b"1" * 5000,
                                  b"4000000000000001"])
def test_chunk_sizes_that_overflow_or_are_not_hex(tmp_path, size):
    resp = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size
            + b"\r\n0123456789abcdef\r\n0\r\n\r\n")
    recs = Conn(t0=T0).client(get(b"/chunks") + get(b"/after")).server(resp + OK).close().records
    txs, stats = replay(tmp_path, recs)
    assert stats.anomalies["http.bad_chunk"] == 1
    assert "malformed" in txs[0].flags
    assert ("/after", 200) in [(t.uri, t.status_code) for t in txs]


def test_endless_chunked_body_keeps_only_the_body_cap():
    r = measure("gen_endless_chunked")
    (tx,) = r["txs"]
    assert {"truncated", "incomplete"} <= set(tx["flags"]) and tx["resp_len"] == 64 << 20
    assert tx["resp_kept"] == 256 << 10
    assert r["stats"]["anomalies"]["body.truncated"] == 1
    assert r["growth_mb"] < 8, r


def test_one_byte_chunks_cost_linear_time():
    r = measure("gen_tiny_chunks")
    assert [t["uri"] for t in r["txs"]] == ["/tiny", "/after"] and r["txs"][0]["resp_len"] == 300_000
    assert r["seconds"] < 10, r


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "raw deflate", "br", "gzip, gzip"])
def test_decompression_bombs(encoding):
    """1 GiB of zeros compressed (1 MB gzip, 200 KB brotli): decoding stops at
    ``decompressed_cap`` (64 MiB, counted as body.decode_limit); memory holds one 1 MiB step
    per layer and the body cap, never the expansion."""
    r = measure("gen_bomb", encoding=encoding)
    bombed, after = r["txs"]
    assert "decode_limit" in bombed["flags"] and bombed["resp_len"] == 64 << 20
    assert bombed["resp_kept"] == 256 << 10 and after["uri"] == "/after"
    assert r["stats"]["anomalies"]["body.decode_limit"] == 1
    assert r["growth_mb"] < 16 and r["seconds"] < 10, r


def test_h2_data_bomb():
    r = measure("gen_h2", attack="data_bomb")
    by_uri = {t["uri"]: t for t in r["txs"]}
    assert "decode_limit" in by_uri["/bomb"]["flags"] and by_uri["/bomb"]["resp_len"] == 64 << 20
    assert by_uri["/after"]["status"] == 200
    assert r["growth_mb"] < 16, r


# ---- invalid UTF-8, junk, smuggling ------------------------------------------------------------

def test_invalid_utf8_everywhere(tmp_path):
    c = Conn(t0=T0)
    c.client(b"GET /\xff\xfe/\xc3\x28?q=\xed\xa0\x80&\xf0\x28\x8c\xbc=1 HTTP/1.1\r\nHost: h\xff.example\r\n"
             b"X-\xfe\xff: \xc0\xaf\xe0\x80\xaf\r\nCookie: s=\xff\xfe\r\n"
             b"Authorization: Bearer \xff\xff\r\n\r\n")
    c.server(b"HTTP/1.1 200 \xff\xfe\xfd\r\nContent-Type: application/json; charset=\xff\r\nX-\xff: \x80\r\n"
             b"Content-Length: 27\r\n\r\n{\"\xff\": \"\xfe\xc3\x28\", \"k\": [\xff]}")
    c.client(get(b"/after")).server(OK).close()
    recs = c.records + list(gen_h2("invalid_utf8", port=40002))
    path = write_pcap(str(tmp_path / "utf8.pcap"), sorted(recs, key=lambda r: r[0]))
    rc, out, err, _ = cli("transactions", path, "--json")
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert {"/after"} <= {r["uri"] for r in rows} and len(rows) >= 4
    rc, out, err, _ = cli("replay", path, "--db", str(tmp_path / "u.db"), "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["transactions"] >= 4 and summary["anomalies"]["http.invalid_utf8"] >= 5
    import sqlite3

    con = sqlite3.connect(tmp_path / "u.db")
    assert con.execute("select count(*) from transactions").fetchone()[0] >= 4
    con.close()


def test_binary_junk_on_port_80():
    """16 MiB of random bytes each way on port 80: not HTTP, counted, ignored after the first
    bytes (memory flat); the next real connection is parsed."""
    r = measure("gen_junk")
    assert r["stats"]["anomalies"]["flow.not_http_on_http_port"] == 1 and r["stats"]["other_flows"] == 1
    assert [t["uri"] for t in r["txs"]] == ["/after"]
    assert r["growth_mb"] < 8, r


def test_junk_after_a_valid_exchange_resynchronises(tmp_path):
    rng = random.Random(4)
    c = Conn(t0=T0).client(get(b"/one")).server(OK)
    c.client(rng.randbytes(100_000) + b"\r\n" + get(b"/two"))
    c.server(rng.randbytes(5000) + b"\r\n" + OK).close()
    txs, stats = replay(tmp_path, c.records)
    assert [t.uri for t in txs if t.uri][:1] == ["/one"]
    assert sum(stats.anomalies.values()) > 0


SMUGGLING = [
    ("cl_te", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\n\r\nG", "http.te_and_cl", True),
    ("te_cl", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
              b"8\r\nSMUGGLED\r\n0\r\n\r\n", "http.te_and_cl", True),
    ("cl_cl", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
     "http.conflicting_content_length", True),
    ("cl_list", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello",
     "http.conflicting_content_length", True),
    ("cl_plus", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
     "http.bad_content_length", True),
    ("cl_negative", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
     "http.bad_content_length", True),
    ("cl_overflow", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551621\r\n\r\n",
     "http.bad_content_length", True),
    ("te_space", b"POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
     "http.space_before_colon", True),
    ("cl_space_te", b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"0\r\n\r\n", "http.te_and_cl", True),
]


@pytest.mark.parametrize("name,request_bytes,kind,flagged", SMUGGLING, ids=[s[0] for s in SMUGGLING])
def test_request_smuggling_shapes(tmp_path, name, request_bytes, kind, flagged):
    recs = Conn(t0=T0).client(request_bytes + b"\r\n" + get(b"/next")).server(OK + OK).close().records
    txs, stats = replay(tmp_path, recs)
    assert stats.anomalies[kind] >= 1, stats.anomalies
    assert ("smuggling" in txs[0].flags) == flagged
    assert "/next" in [t.uri for t in txs]  # the sensor keeps going


def test_response_smuggling_shape(tmp_path):
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    recs = Conn(t0=T0).client(get(b"/one") + get(b"/two")).server(resp + OK).close().records
    txs, stats = replay(tmp_path, recs)
    assert [(t.uri, t.status_code) for t in txs] == [("/one", 200), ("/two", 200)]
    assert "smuggling" in txs[0].flags and stats.anomalies["http.te_and_cl"] == 1


# ---- bounds are configuration, each documented --------------------------------------------------

def test_every_bound_is_documented_in_the_readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    table = readme[readme.index("## Bounds") :]
    table = table[: table.index("\n## ", 5)]
    for field in fields(Limits):
        row = re.search(rf"^\| `{field.name}`.*$", table, re.M)
        assert row is not None, f"{field.name} missing from the README bounds table"
        assert row.group(0).count("|") >= 5, row.group(0)  # bound | default | when hit | memory


# ---- regressions found by tests/fuzz_corpus.py -------------------------------------------------

def test_unicode_digits_in_content_length(tmp_path):
    """Regression: "17405\\xb29" (a superscript two) passed str.isdigit() and crashed int()."""
    reqs = b"".join(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: " + v + b"\r\n\r\n" for v in
                    (b"17405\xb29", "\u0663".encode(), b"\xb2"))  # "٣" is 3 to int(), not to HTTP
    recs = Conn(t0=T0).client(reqs + get(b"/next")).server(OK * 4).close().records
    txs, stats = replay(tmp_path, recs)
    assert stats.anomalies["http.bad_content_length"] == 3
    assert [t.uri for t in txs] == ["/p", "/p", "/p", "/next"]
    assert all("smuggling" in t.flags for t in txs[:3])


def test_h2_status_with_unicode_digits(tmp_path):
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    c = Conn(t0=T0)
    c.client(H2_PREFACE + h2frame(4, 0, 0) + h2frame(1, 0x5, 1, enc_c.encode([*_REQ, (b":path", b"/s")])))
    c.server(h2frame(4, 0, 0) + h2frame(1, 0x5, 1, enc_s.encode([(b":status", "\u00b200".encode())])))
    c.close()
    txs, stats = replay(tmp_path, c.records)
    assert [(t.uri, t.status_code) for t in txs] == [("/s", None)]
    assert stats.anomalies["h2.bad_status"] == 1 and "h2.internal_error" not in stats.anomalies


def test_nul_inside_a_body_reaches_the_detectors(tmp_path):
    """Regression (discovery/detectors/scan.py): a single scanned value holding a NUL byte was
    counted as two values: IndexError out of the findings sink, a traceback from replay."""
    body = b'{"user_id":1\x0006,"lines":[{"sku":"ZRX-49911","qty":2,"unit_price":"42.95"}],"pay\x7fent'
    recs = Conn(t0=T0).client(get(b"/orders")).server(ok(body, b"Content-Type: application/json\r\n")).close()
    path = write_pcap(str(tmp_path / "nul.pcap"), recs.records)
    rc, out, err, _ = cli("replay", path, "--db", str(tmp_path / "nul.db"), "--json")
    assert rc == 0 and json.loads(out)["transactions"] == 1


def test_bounds_are_set_on_the_command_line(tmp_path):
    head = b"GET /h HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    recs = Conn(t0=T0).client(head).server(ok(b"x" * 100)).close().records
    path = write_pcap(str(tmp_path / "h.pcap"), recs)
    rc, out, err, _ = cli("replay", path, "--db", str(tmp_path / "h.db"), "--json",
                          "--limit", "max_headers=2", "--limit", "body_cap=10")
    assert rc == 0, err
    anomalies = json.loads(out)["anomalies"]
    assert anomalies["http.too_many_headers"] == 2 and anomalies["body.truncated"] == 1
    for bad in ("max_headers", "max_headers=lots", "no_such_bound=1", "body_cap=-1"):
        rc, _, err, _ = cli("transactions", path, "--limit", bad)
        assert rc == 2 and "--limit" in err, err


def test_tiny_out_of_order_segments_cost_linear_time(tmp_path):
    """Regression (found by the fuzzer as a hang): a hole, then 20,000 one-byte segments. Each
    insertion sorted every buffered segment, and each gap re-sorted them: quadratic. Now an
    append after the furthest buffered byte is O(1), at most 1,024 segments wait per direction,
    and a full buffer is flushed with one sort."""
    c = Conn(t0=T0)
    head = get(b"/tiny-segments")
    data = head + b"x" * 20_000
    c.pkt(True, 0x18, data[:5], seq=c.cseq)  # then bytes 5..9 are lost, and every 100th after
    for i in range(10, len(data)):
        if i % 100:
            c.pkt(True, 0x18, data[i : i + 1], seq=c.cseq + i, ack=c.sseq)
    c.cseq += len(data)
    c.close()
    stats = Stats()
    import time

    t0 = time.perf_counter()
    p = Pipeline(lambda tx: None, None, stats)
    p.run(c.records)
    p.finish()
    assert time.perf_counter() - t0 < 3.0
    assert stats.anomalies["tcp.gap"] >= 200 and stats.anomalies["tcp.out_of_order"] >= 19_000
    assert p.table.ooo_total == 0


def test_import_of_suricata_log_with_unicode_digit_length(tmp_path):
    """Regression (sensor/imports/suricata.py): the same str.isdigit() trap as above, in
    ``apisensor import`` of an eve.json whose request Content-Length is "1\\xb2"."""
    event = {"timestamp": "2024-01-01T00:00:00.000000+0000", "event_type": "http", "src_ip": "10.0.0.1",
             "src_port": 1234, "dest_ip": "10.0.0.2", "dest_port": 80, "proto": "TCP",
             "http": {"hostname": "a", "url": "/x", "http_method": "POST", "protocol": "HTTP/1.1",
                      "status": 200, "length": 2, "response_headers": [],
                      "request_headers": [{"name": "Content-Length", "value": "1\u00b2"}]}}
    path = tmp_path / "eve.json"
    path.write_text(json.dumps(event) + "\n")
    rc, out, err, _ = cli("import", str(path), "--db", str(tmp_path / "eve.db"))
    assert rc == 0, err
