"""How ``replay --workers`` splits a capture: every packet in exactly one worker, both
directions of a flow in the same one, flows spread evenly (also those between two Linux hosts,
whose connect() picks even source ports), and the workers' header-only skip agreeing with
:func:`sensor.parallel.owner` on the decoded packet."""

from __future__ import annotations

import os
import random
import struct
from collections import Counter

import pytest
from conftest import PCAPS

from sensor.decode import Decoder
from sensor.parallel import mix, owner
from sensor.pipeline import Pipeline
from sensor.sources import merge, open_files
from sensor.stats import Stats


def _frame(src: bytes, dst: bytes, sport: int, dport: int, flags: int = 0x02, payload: bytes = b"") -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00" + ip + tcp + payload


def _shard_packets(records: list, n: int) -> list[int]:
    out = []
    for i in range(n):
        stats = Stats()
        p = Pipeline(lambda tx: None, stats=stats, shard=(i, n))
        p.run(iter(records))
        out.append(stats.packets)
    return out


def test_the_header_only_skip_agrees_with_owner():
    rnd = random.Random(7)
    records = []
    for _ in range(2000):
        a, b = bytes(rnd.randrange(256) for _ in range(4)), bytes(rnd.randrange(256) for _ in range(4))
        records.append((1.0, 1, _frame(a, b, rnd.randrange(1, 65536), rnd.randrange(1, 65536))))
    dec = Decoder(Stats())
    for n in (2, 3, 4):
        want = Counter(owner(dec.decode(ts, lt, d), n) for ts, lt, d in records)
        assert _shard_packets(records, n) == [want[i] for i in range(n)]


def test_both_directions_of_a_flow_go_to_one_worker():
    rnd = random.Random(3)
    for _ in range(500):
        a, b = bytes(rnd.randrange(256) for _ in range(4)), bytes(rnd.randrange(256) for _ in range(4))
        sp, dp = rnd.randrange(1, 65536), rnd.randrange(1, 65536)
        for n in (2, 3):
            assert mix(sp ^ dp, a[-1] + b[-1], n) == mix(dp ^ sp, b[-1] + a[-1], n)
            there = _shard_packets([(1.0, 1, _frame(a, b, sp, dp))], n)
            back = _shard_packets([(1.0, 1, _frame(b, a, dp, sp, 0x12))], n)
            assert there == back and sum(there) == 1


@pytest.mark.parametrize("n", [2, 3])
def test_flows_between_two_linux_hosts_spread_evenly(n):
    """wrk against one server: 64 connections from even ephemeral ports (Linux), one address
    pair. The old hash (port parity) put all of them on one worker."""
    records = [(1.0, 1, _frame(b"\x7f\x00\x00\x01", b"\x7f\x00\x00\x3d", port, 8080))
               for port in range(40000, 40128, 2)]
    counts = _shard_packets(records, n)
    assert sum(counts) == 64
    assert min(counts) >= 64 / n * 0.6, counts


def _key(txs: list) -> list:
    return sorted((t.ts, t.client, t.server, t.method or "", t.uri or "", t.status_code or 0) for t in txs)


def test_shards_split_a_real_capture_exactly():
    path = os.path.join(PCAPS, "demo.pcap")
    whole: list = []
    stats = Stats()
    p = Pipeline(whole.append, stats=stats)
    p.run(merge(open_files([path])))
    p.finish()
    for n in (2, 3):
        parts: list = []
        packets = 0
        for i in range(n):
            s = Stats()
            q = Pipeline(parts.append, stats=s, shard=(i, n))
            q.run(merge(open_files([path])))
            q.finish()
            packets += s.packets
        assert packets == stats.packets
        assert _key(parts) == _key(whole)
