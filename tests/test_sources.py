"""Capture files: every pcap flavour and pcapng written byte by byte with struct (plus scapy's
writers as an independent producer), gzip, merging, and the ways a file can be broken."""

from __future__ import annotations

import gzip
import os
import struct

import pytest

from sensor.sources import CaptureError, CaptureFile, merge, open_files

FRAMES = [b"\x01" * 60, b"\x02" * 61, b"\x03" * 1514]
# (seconds, fraction in the file's unit)
TIMES_US = [(1_700_000_000, 123_456), (1_700_000_001, 0), (1_700_000_001, 999_999)]
TIMES_NS = [(1_700_000_000, 123_456_789), (1_700_000_001, 1), (1_700_000_001, 999_999_999)]


def pcap_bytes(records, endian: str = "<", nsec: bool = False, linktype: int = 1, snaplen: int = 65535,
               modified: bool = False) -> bytes:
    """A classic pcap file; ``records`` are (sec, frac, data[, orig_len])."""
    if modified:
        magic = 0xA1B2CD34
    else:
        magic = 0xA1B23C4D if nsec else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, data = rec[:3]
        orig = rec[3] if len(rec) > 3 else len(data)
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), orig))
        if modified:
            out.append(struct.pack(endian + "IHBB", 3, 0x0800, 0, 0))  # ifindex, protocol, type, pad
        out.append(data)
    return b"".join(out)


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read(path: str) -> tuple[CaptureFile, list]:
    cf = CaptureFile(path)
    return cf, list(cf)


# ---- pcap ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcap_microseconds(tmp_path, endian):
    recs = [(s, f, d) for (s, f), d in zip(TIMES_US, FRAMES)]
    path = write(tmp_path, "us.pcap", pcap_bytes(recs, endian, linktype=113))
    cf, got = read(path)
    assert cf.format == "pcap" and not cf.compressed and not cf.truncated
    assert [r[2] for r in got] == FRAMES
    assert [r[1] for r in got] == [113, 113, 113]
    assert got[0][0] == pytest.approx(1_700_000_000.123456, abs=1e-7)
    assert got[2][0] == pytest.approx(1_700_000_001.999999, abs=1e-7)
    assert cf.records == 3 and cf.bytes == 60 + 61 + 1514
    assert cf.linktypes == {113}
    assert cf.warnings == []


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcap_nanoseconds(tmp_path, endian):
    recs = [(s, f, d) for (s, f), d in zip(TIMES_NS, FRAMES)]
    path = write(tmp_path, "ns.pcap", pcap_bytes(recs, endian, nsec=True))
    cf, got = read(path)
    assert [r[2] for r in got] == FRAMES
    assert got[0][0] == pytest.approx(1_700_000_000.123456789, abs=1e-6)
    assert got[1][0] - 1_700_000_001 == pytest.approx(1e-9, abs=1e-6)
    assert got[2][0] == pytest.approx(1_700_000_001.999999999, abs=1e-6)
    # nanosecond timestamps are not mistaken for microseconds (that would add ~123 s)
    assert got[0][0] < got[1][0] < got[2][0] <= 1_700_000_002


def test_pcap_magic_bytes_on_disk(tmp_path):
    """The four magics exactly as they appear in files written by libpcap."""
    for endian, nsec, magic in (("<", False, "d4c3b2a1"), (">", False, "a1b2c3d4"),
                                ("<", True, "4d3cb2a1"), (">", True, "a1b23c4d")):
        data = pcap_bytes([(1, 2, b"x")], endian, nsec)
        assert data[:4].hex() == magic
        cf, got = read(write(tmp_path, f"m{magic}.pcap", data))
        assert got == [(pytest.approx(1 + 2 * (1e-9 if nsec else 1e-6)), 1, b"x")]


def test_modified_kuznetzov_pcap(tmp_path):
    recs = [(s, f, d) for (s, f), d in zip(TIMES_US, FRAMES)]
    cf, got = read(write(tmp_path, "kuz.pcap", pcap_bytes(recs, modified=True)))
    assert [r[2] for r in got] == FRAMES


def test_pcap_fcs_bits_in_linktype_are_masked(tmp_path):
    data = pcap_bytes([(1, 0, b"x")], linktype=(1 << 28) | (4 << 29) | 1)
    cf, got = read(write(tmp_path, "fcs.pcap", data))
    assert got[0][1] == 1 and cf.linktypes == {1}


def test_scapy_written_pcap(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    pkts = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP() / TCP(seq=i) for i in range(3)]
    for i, p in enumerate(pkts):
        p.time = 1_600_000_000 + i / 4
    path = str(tmp_path / "scapy.pcap")
    wrpcap(path, pkts)
    cf, got = read(path)
    assert [r[2] for r in got] == [bytes(p) for p in pkts]
    assert [r[0] for r in got] == [1_600_000_000, 1_600_000_000.25, 1_600_000_000.5]


def test_empty_pcap_has_no_records(tmp_path):
    cf, got = read(write(tmp_path, "empty.pcap", pcap_bytes([])))
    assert got == [] and not cf.truncated and cf.warnings == []


# ---- pcapng --------------------------------------------------------------------------------------


def _block(endian: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body)
    return struct.pack(endian + "II", btype, n) + body + struct.pack(endian + "I", n)


def _opt(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def shb(endian: str = "<") -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return _block(endian, 0x0A0D0D0A, body)


def idb(endian: str = "<", linktype: int = 1, tsresol: int | None = None) -> bytes:
    body = struct.pack(endian + "HHI", linktype, 0, 262144)
    if tsresol is not None:
        body += _opt(endian, 2, b"eth0") + _opt(endian, 9, bytes([tsresol])) + _opt(endian, 0, b"")
    return _block(endian, 1, body)


def epb(endian: str, iface: int, ticks: int, data: bytes) -> bytes:
    body = struct.pack(endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    body += data + b"\x00" * (-len(data) % 4) + _opt(endian, 1, b"comment") + _opt(endian, 0, b"")
    return _block(endian, 6, body)


def spb(endian: str, data: bytes) -> bytes:
    return _block(endian, 3, struct.pack(endian + "I", len(data)) + data)


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_blocks_and_tsresol(tmp_path, endian):
    data = (shb(endian)
            + idb(endian, 1)  # interface 0: default microseconds
            + idb(endian, 101, tsresol=9)  # interface 1: nanoseconds
            + _block(endian, 5, b"\x00" * 8)  # interface statistics: skipped
            + epb(endian, 0, 1_700_000_000_250_000, FRAMES[0])
            + epb(endian, 1, 1_700_000_000_500_000_001, b"\x45" + b"\x00" * 19)
            + spb(endian, FRAMES[1])  # no timestamp: interface 0, previous timestamp
            + _block(endian, 0x0BAD, b"custom"))
    cf, got = read(write(tmp_path, "x.pcapng", data))
    assert cf.format == "pcapng" and not cf.truncated and cf.warnings == []
    assert [r[1] for r in got] == [1, 101, 1]
    assert [r[2] for r in got] == [FRAMES[0], b"\x45" + b"\x00" * 19, FRAMES[1]]
    assert got[0][0] == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert got[1][0] == pytest.approx(1_700_000_000.5, abs=1e-6)
    assert got[2][0] == got[1][0]
    assert cf.linktypes == {1, 101}
    assert cf.records == 3


def test_pcapng_power_of_two_resolution(tmp_path):
    data = shb() + idb("<", 1, tsresol=0x80 | 10) + epb("<", 0, 1024 * 1000 + 512, b"abc")
    _, got = read(write(tmp_path, "p2.pcapng", data))
    assert got == [(pytest.approx(1000.5), 1, b"abc")]


def test_pcapng_second_section_other_byte_order(tmp_path):
    data = (shb("<") + idb("<", 1) + epb("<", 0, 1_000_000, b"le")
            + shb(">") + idb(">", 113) + epb(">", 0, 2_000_000, b"be"))
    _, got = read(write(tmp_path, "2s.pcapng", data))
    assert got == [(1.0, 1, b"le"), (2.0, 113, b"be")]


def test_pcapng_packet_for_unknown_interface_is_skipped_with_warning(tmp_path):
    data = shb() + idb() + epb("<", 3, 1, b"lost") + epb("<", 0, 2_000_000, b"kept")
    cf, got = read(write(tmp_path, "if.pcapng", data))
    assert [r[2] for r in got] == [b"kept"]
    assert len(cf.warnings) == 1 and "interface" in cf.warnings[0]


def test_scapy_pcapng_writer(tmp_path):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter

    pkts = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP() / TCP(seq=i) for i in range(4)]
    for i, p in enumerate(pkts):
        p.time = 1_650_000_000 + i
    path = str(tmp_path / "scapy.pcapng")
    with PcapNgWriter(path) as w:
        for p in pkts:
            w.write(p)
    cf, got = read(path)
    assert cf.format == "pcapng"
    assert [r[2] for r in got] == [bytes(p) for p in pkts]
    assert [r[0] for r in got] == pytest.approx([1_650_000_000 + i for i in range(4)])


def test_pcapng_truncated_block(tmp_path):
    data = shb() + idb() + epb("<", 0, 1_000_000, b"one") + epb("<", 0, 2_000_000, b"two")
    cf, got = read(write(tmp_path, "cut.pcapng", data[:-10]))
    assert [r[2] for r in got] == [b"one"]
    assert cf.truncated
    assert "pcapng block" in cf.warnings[0]


def test_pcapng_absurd_block_length(tmp_path):
    bad = struct.pack("<II", 6, 0xFFFFFFF0) + b"\x00" * 64
    data = shb() + idb() + epb("<", 0, 1_000_000, b"one") + bad
    cf, got = read(write(tmp_path, "bad.pcapng", data))
    assert [r[2] for r in got] == [b"one"]
    assert cf.truncated and "corrupt pcapng block" in cf.warnings[0]


# ---- compression, merging, directories -----------------------------------------------------------


def test_gzip_pcap(tmp_path):
    recs = [(s, f, d) for (s, f), d in zip(TIMES_US, FRAMES)]
    raw = pcap_bytes(recs, ">", nsec=False)
    path = write(tmp_path, "x.pcap.gz", gzip.compress(raw))
    cf, got = read(path)
    assert cf.compressed and cf.format == "pcap"
    assert [r[2] for r in got] == FRAMES
    assert cf.position() == os.path.getsize(path)


def test_gzip_pcapng(tmp_path):
    data = shb() + idb() + epb("<", 0, 5_000_000, b"gz")
    cf, got = read(write(tmp_path, "x.pcapng.gz", gzip.compress(data)))
    assert cf.compressed and got == [(5.0, 1, b"gz")]


def _cut_gzip(tmp_path) -> str:
    recs = [(i, 0, bytes([i]) * 2000) for i in range(200)]
    z = gzip.compress(pcap_bytes(recs), compresslevel=1)
    return write(tmp_path, "cut.pcap.gz", z[: len(z) // 2])


def test_gzip_stream_cut_short_is_reported(tmp_path):
    cf, got = read(_cut_gzip(tmp_path))
    assert all(r[2] == bytes([int(r[0])]) * 2000 for r in got)
    assert cf.truncated
    assert len(cf.warnings) == 1 and "read error" in cf.warnings[0]


def test_gzip_stream_cut_short_keeps_records_before_cut(tmp_path):
    cf, got = read(_cut_gzip(tmp_path))
    assert len(got) >= 50


def _gzip_then_invalid_block(data: bytes) -> bytes:
    """A gzip member whose first deflate block (stored, not final) is valid and whose second
    block has the reserved block type 3: zlib raises zlib.error once it gets there."""
    assert len(data) < 65536
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    stored = b"\x00" + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data
    return header + stored + b"\x07" + b"\x00" * 16


def test_gzip_corrupt_mid_stream_is_a_warning(tmp_path):
    raw = pcap_bytes([(i, 0, b"R" * 100) for i in range(500)])  # 58 KB: beyond the first 8 KB read
    cf = CaptureFile(write(tmp_path, "mid.pcap.gz", _gzip_then_invalid_block(raw)))
    got = list(cf)
    assert cf.truncated and len(cf.warnings) == 1
    assert all(r[2] == b"R" * 100 for r in got)


def test_corrupt_gzip(tmp_path):
    path = write(tmp_path, "bad.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 40)
    with pytest.raises(CaptureError) as e:
        CaptureFile(path)
    assert "\n" not in str(e.value) and "gzip" in str(e.value)


def test_gzip_bad_header_is_capture_error(tmp_path):
    path = write(tmp_path, "bad.gz", b"\x1f\x8b\x07" + b"\x00" * 20)  # compression method 7
    with pytest.raises(CaptureError, match="corrupt gzip"):
        CaptureFile(path)


def test_merge_orders_by_timestamp(tmp_path):
    a = write(tmp_path, "a.pcap", pcap_bytes([(10, 0, b"a1"), (12, 0, b"a2"), (15, 0, b"a3")]))
    b = write(tmp_path, "b.pcap", pcap_bytes([(11, 0, b"b1"), (12, 500, b"b2"), (14, 0, b"b3")], ">",
                                              linktype=101))
    c = write(tmp_path, "c.pcapng", shb() + idb() + epb("<", 0, 9_000_000, b"c1")
              + epb("<", 0, 13_000_000, b"c2"))
    got = list(merge(open_files([a, b, c])))
    assert [r[2] for r in got] == [b"c1", b"a1", b"b1", b"a2", b"b2", b"c2", b"b3", b"a3"]
    assert [r[1] for r in got if r[2].startswith(b"b")] == [101, 101, 101]
    ts = [r[0] for r in got]
    assert ts == sorted(ts)


def test_merge_equal_timestamps_is_stable(tmp_path):
    a = write(tmp_path, "a.pcap", pcap_bytes([(5, 0, b"a1"), (5, 0, b"a2")]))
    b = write(tmp_path, "b.pcap", pcap_bytes([(5, 0, b"b1")]))
    assert [r[2] for r in merge(open_files([a, b]))] == [b"a1", b"a2", b"b1"]


def test_open_files_expands_directories_sorted(tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    (d / "2.pcap").write_bytes(pcap_bytes([(2, 0, b"two")]))
    (d / "1.pcap").write_bytes(pcap_bytes([(1, 0, b"one")]))
    files = open_files([str(d)])
    assert [os.path.basename(f.path) for f in files] == ["1.pcap", "2.pcap"]


# ---- broken files --------------------------------------------------------------------------------


def test_truncated_mid_record(tmp_path):
    raw = pcap_bytes([(1, 0, b"A" * 100), (2, 0, b"B" * 100), (3, 0, b"C" * 100)])
    path = write(tmp_path, "cut.pcap", raw[:-50])
    cf, got = read(path)
    assert [r[2] for r in got] == [b"A" * 100, b"B" * 100]
    assert cf.truncated
    assert cf.warnings == [f"{path}: file ends inside a packet record after 2 packets"]


def test_truncated_mid_record_header(tmp_path):
    raw = pcap_bytes([(1, 0, b"A" * 10), (2, 0, b"B" * 10)])
    cf, got = read(write(tmp_path, "cut.pcap", raw[: 24 + 16 + 10 + 7]))
    assert [r[2] for r in got] == [b"A" * 10]
    assert cf.truncated and "record header" in cf.warnings[0]


def test_truncated_file_header(tmp_path):
    cf, got = read(write(tmp_path, "hdr.pcap", pcap_bytes([])[:10]))
    assert got == [] and cf.truncated and "file header" in cf.warnings[0]


def test_absurd_record_length_stops_with_warning(tmp_path):
    good = pcap_bytes([(1, 0, b"ok")])
    bad = struct.pack("<IIII", 2, 0, 0x7FFFFFFF, 0x7FFFFFFF) + b"\x00" * 100
    cf, got = read(write(tmp_path, "absurd.pcap", good + bad))
    assert [r[2] for r in got] == [b"ok"]
    assert cf.truncated
    assert len(cf.warnings) == 1 and "corrupt record" in cf.warnings[0] and "2147483647" in cf.warnings[0]


def test_records_larger_than_snaplen_but_sane_are_kept(tmp_path):
    cf, got = read(write(tmp_path, "s.pcap", pcap_bytes([(1, 0, b"z" * 300)], snaplen=96)))
    assert got[0][2] == b"z" * 300 and not cf.truncated


def test_not_a_capture_file(tmp_path):
    path = write(tmp_path, "notes.txt", b"hello, this is text\n")
    with pytest.raises(CaptureError) as e:
        CaptureFile(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == f"{path}: not a pcap or pcapng file (magic {b'hell'.hex()})"


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.pcap", b"")
    with pytest.raises(CaptureError, match="empty file"):
        CaptureFile(path)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.pcap")
    with pytest.raises(CaptureError) as e:
        open_files([path])
    assert str(e.value) == f"{path}: no such file"


def test_gzip_of_text_is_not_a_capture(tmp_path):
    path = write(tmp_path, "t.gz", gzip.compress(b"just text, no capture"))
    with pytest.raises(CaptureError, match="not a pcap or pcapng"):
        CaptureFile(path)


def test_open_files_fails_on_the_bad_one(tmp_path):
    good = write(tmp_path, "good.pcap", pcap_bytes([(1, 0, b"x")]))
    bad = write(tmp_path, "bad.pcap", b"GIF89a....")
    with pytest.raises(CaptureError, match="bad.pcap"):
        open_files([good, bad])


def test_large_file_read_in_chunks(tmp_path):
    """More than one 4 MiB read: records that straddle a chunk boundary come out whole."""
    recs = [(i, 0, bytes([i % 251]) * 1499) for i in range(4000)]
    cf, got = read(write(tmp_path, "big.pcap", pcap_bytes(recs)))
    assert len(got) == 4000
    assert all(r[2] == bytes([int(r[0]) % 251]) * 1499 for r in got)
    assert cf.bytes == 4000 * 1499 and not cf.truncated
