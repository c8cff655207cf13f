"""Capture sources: pcap and pcapng files (optionally gzip-compressed), read as packet records.

A record is ``(ts, linktype, data)``: the capture timestamp in seconds (float), the link-layer
type of the interface (LINKTYPE_* numbers from tcpdump.org) and the captured bytes.

pcap: all four magics (micro- and nanosecond resolution, either byte order) and the
"modified" (Kuznetzov) variant.  pcapng: section headers of either byte order, interface
descriptions with their ``if_tsresol``, enhanced, simple and obsolete packet blocks; other
blocks are skipped.  The file is read in large chunks and records are cut with
``struct.unpack_from`` (no per-record read calls).  A file that ends inside a record is read
up to the cut and marked ``truncated``; a file that is not a capture raises CaptureError.
Several files are merged in timestamp order by :func:`merge`.
"""

from __future__ import annotations

import heapq
import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

Record = tuple[float, int, bytes]

_CHUNK = 4 << 20
# A record or block claiming more than this is corrupt, whatever the file's snaplen says
# (libpcap never captures more than 256 KiB per packet): it bounds what one record costs.
_MAX_RECORD = 16 << 20
_MAX_WARNINGS = 20  # per file; further problems are only counted
# smallest valid pcapng block length by type (fixed fields + the two length words)
_MIN_BLOCK = {0x0A0D0D0A: 28, 1: 20, 2: 32, 3: 16, 6: 32}

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6, 16),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6, 16),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9, 16),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9, 16),
    b"\x34\xcd\xb2\xa1": ("<", 1e-6, 24),  # modified pcap (Kuznetzov): 8 extra bytes per record
    b"\xa1\xb2\xcd\x34": (">", 1e-6, 24),
}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


class CaptureError(Exception):
    """The input cannot be read as a capture (message is one line for the user)."""


def _peek_plain(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    f.seek(0)
    return data


class _Gunzip:
    """Streaming gzip reader (several members allowed) that keeps every byte it could decode.

    ``gzip.GzipFile.read`` discards a whole chunk when the stream ends early; a capture cut
    short (a crashed tcpdump | gzip) must still yield the packets before the cut.
    """

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = bytearray()  # decoded, not yet returned
        self.comp = b""  # compressed bytes read, not yet decoded from ``cpos`` on
        self.cpos = 0
        self.eof = False
        self.error: Exception | None = None

    def _fill(self, n: int) -> None:
        # Small steps in and out: zlib discards a call's output when it raises, so corrupt
        # data costs at most one step of good bytes before it; and output stops once ``n``
        # bytes are pending, so a compressed capture never inflates far ahead of the reader.
        while len(self.pending) < n and not self.eof:
            if self.cpos >= len(self.comp):
                self.comp, self.cpos = self.raw.read(1 << 20), 0
                if not self.comp:
                    self.eof = True
                    if not self.obj.eof and self.error is None:
                        self.error = EOFError("compressed file ended before the end-of-stream marker")
                    break
            piece = self.comp[self.cpos : self.cpos + (1 << 14)]
            if self.obj.eof:  # the member ended and more bytes follow: the next gzip member
                self.obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self.obj.decompress(piece, 1 << 20)
            except zlib.error as e:
                self.eof = True
                self.error = e
                break
            rest = self.obj.unused_data if self.obj.eof else self.obj.unconsumed_tail
            used = len(piece) - len(rest)
            if not used and not out:  # no progress (cannot happen with zlib): never spin
                self.eof = True
                self.error = zlib.error("gzip stream makes no progress")
                break
            self.cpos += used
            self.pending += out

    def peek(self, n: int) -> bytes:
        self._fill(n)
        if not self.pending and self.error is not None:
            raise self.error
        return bytes(self.pending[:n])

    def read(self, n: int) -> bytes:
        self._fill(n)
        out = bytes(self.pending[:n])
        del self.pending[:n]
        if not out and self.error is not None:
            err, self.error = self.error, None
            raise err
        return out

    def close(self) -> None:
        self.raw.close()


class _Chunks:
    """A forward-only byte reader over a file object, with O(1) amortised cost per byte."""

    __slots__ = ("f", "buf", "pos", "eof", "consumed")

    def __init__(self, f: BinaryIO, head: bytes = b""):
        self.f = f
        self.buf = head
        self.pos = 0
        self.eof = False
        self.consumed = 0  # bytes before buf[0]

    def need(self, n: int) -> bool:
        """Ensure ``n`` bytes are available at ``pos``; False at end of file."""
        while len(self.buf) - self.pos < n:
            if self.eof:
                return False
            more = self.f.read(max(_CHUNK, n))
            if not more:
                self.eof = True
                return False
            self.consumed += self.pos
            self.buf = self.buf[self.pos :] + more
            self.pos = 0
        return True

    def offset(self) -> int:
        return self.consumed + self.pos


class CaptureFile:
    """One capture file.  Iterate it for records; inspect attributes afterwards."""

    def __init__(self, path: str):
        self.path = path
        self.format = "?"
        self.compressed = False
        self.truncated = False
        self.records = 0
        self.bytes = 0
        self.linktypes: set[int] = set()
        self.warnings: list[str] = []
        # problems by kind (capture.truncated, capture.corrupt_record, ...), for Stats.anomalies
        self.anomalies: Counter = Counter()
        self.size = 0
        self._raw: BinaryIO | None = None
        self._f = self._open(path)

    def _open(self, path: str) -> BinaryIO:
        try:
            raw = open(path, "rb")  # noqa: SIM115 (closed in __iter__)
        except FileNotFoundError:
            raise CaptureError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise CaptureError(f"{path}: is a directory, not a capture file") from None
        except PermissionError:
            raise CaptureError(f"{path}: permission denied") from None
        self._raw = raw
        self.size = os.fstat(raw.fileno()).st_size
        head = raw.read(4)
        raw.seek(0)
        f: BinaryIO = raw
        if head[:2] == b"\x1f\x8b":
            self.compressed = True
            f = _Gunzip(raw)  # type: ignore[assignment]
            try:
                head = f.peek(4)
            except (OSError, EOFError, zlib.error) as e:
                raw.close()
                raise CaptureError(f"{path}: corrupt gzip file ({e})") from None
        if head in PCAP_MAGICS:
            self.format = "pcap"
            hdr = f.peek(24) if isinstance(f, _Gunzip) else _peek_plain(f, 24)
            if len(hdr) == 24:
                endian = PCAP_MAGICS[head][0]
                self.linktypes.add(struct.unpack_from(endian + "I", hdr, 20)[0] & 0x0FFFFFFF)
        elif head == PCAPNG_MAGIC:
            self.format = "pcapng"
        else:
            raw.close()
            what = "empty file" if not head else f"magic {head.hex()}"
            raise CaptureError(f"{path}: not a pcap or pcapng file ({what})")
        return f

    def close(self) -> None:
        self._f.close()
        if self._raw is not None:
            self._raw.close()

    def position(self) -> int:
        """Bytes of the file (compressed, if it is) read so far: for progress bars."""
        try:
            return self._raw.tell() if self._raw is not None and not self._raw.closed else self.size
        except (OSError, ValueError):
            return self.size

    def __iter__(self) -> Iterator[Record]:
        try:
            if self.format == "pcap":
                yield from self._pcap(_Chunks(self._f))
            else:
                yield from self._pcapng(_Chunks(self._f))
        except (OSError, EOFError, zlib.error) as e:
            # e.g. a corrupt gzip stream: keep what was read, report it
            self.truncated = True
            self._warn("capture.read_error", f"{self.path}: read error after {self.records} packets ({e})")
        finally:
            self._f.close()

    def _warn(self, kind: str, msg: str) -> None:
        self.anomalies[kind] += 1
        if len(self.warnings) < _MAX_WARNINGS:
            self.warnings.append(msg)
        elif len(self.warnings) == _MAX_WARNINGS:
            self.warnings.append(f"{self.path}: more problems (only counted, see the anomalies)")

    def _cut(self, what: str) -> None:
        self.truncated = True
        self._warn("capture.truncated",
                   f"{self.path}: file ends inside a {what} after {self.records} packets")

    def _pcap(self, c: _Chunks) -> Iterator[Record]:
        if not c.need(24):
            self._cut("file header")
            return
        endian, scale, rec_len = PCAP_MAGICS[c.buf[:4]]
        snaplen, network = struct.unpack_from(endian + "II", c.buf, 16)
        linktype = network & 0x0FFFFFFF  # upper bits may carry FCS information
        self.linktypes.add(linktype)
        c.pos = 24
        hdr = struct.Struct(endian + "IIII").unpack_from
        max_len = _MAX_RECORD
        buf, pos = c.buf, c.pos
        end = len(buf)
        records = nbytes = 0
        try:
            while True:
                if pos + rec_len > end:
                    c.pos = pos
                    self.records += records
                    self.bytes += nbytes
                    records = nbytes = 0
                    if not c.need(rec_len):
                        if len(c.buf) - c.pos:
                            self._cut("record header")
                        return
                    buf, pos, end = c.buf, c.pos, len(c.buf)
                sec, frac, incl, _orig = hdr(buf, pos)
                start = pos + rec_len
                stop = start + incl
                if stop > end:
                    self.records += records
                    self.bytes += nbytes
                    records = nbytes = 0
                    if incl > max_len:
                        c.pos = pos  # for c.offset()
                        self.truncated = True
                        self._warn("capture.corrupt_record", f"{self.path}: corrupt record at offset "
                                   f"{c.offset()} (length {incl}); stopped")
                        return
                    c.pos = pos
                    if not c.need(rec_len + incl):
                        self._cut("packet record")
                        return
                    buf, pos, end = c.buf, c.pos, len(c.buf)
                    start = pos + rec_len
                    stop = start + incl
                pos = stop
                records += 1
                nbytes += incl
                yield sec + frac * scale, linktype, buf[start:stop]
        finally:
            c.pos = pos
            self.records += records
            self.bytes += nbytes

    def _pcapng(self, c: _Chunks) -> Iterator[Record]:
        endian = "<"
        ifaces: list[tuple[int, float]] = []  # (linktype, seconds per tick)
        last_ts = 0.0
        while True:
            if not c.need(12):
                if len(c.buf) - c.pos:
                    self._cut("block header")
                return
            btype = c.buf[c.pos : c.pos + 4]
            if btype == PCAPNG_MAGIC:
                bom = c.buf[c.pos + 8 : c.pos + 12]
                if bom == b"\x4d\x3c\x2b\x1a":
                    endian = "<"
                elif bom == b"\x1a\x2b\x3c\x4d":
                    endian = ">"
                else:
                    self.truncated = True
                    self._warn("capture.corrupt_block", f"{self.path}: bad pcapng byte-order magic; stopped")
                    return
                ifaces = []
            (btype_n, blen) = struct.unpack_from(endian + "II", c.buf, c.pos)
            if blen < _MIN_BLOCK.get(btype_n, 12) or blen % 4 or blen > _MAX_RECORD:
                self.truncated = True
                self._warn("capture.corrupt_block", f"{self.path}: corrupt pcapng block at offset "
                           f"{c.offset()} (length {blen}); stopped")
                return
            if not c.need(blen):
                self._cut("pcapng block")
                return
            p = c.pos
            body = p + 8
            if btype_n == 1:  # Interface Description Block
                linktype = struct.unpack_from(endian + "H", c.buf, body)[0]
                ifaces.append((linktype, self._tsresol(c.buf, body + 8, p + blen - 4, endian)))
                self.linktypes.add(linktype)
            elif btype_n in (6, 2):  # Enhanced / obsolete Packet Block
                if btype_n == 6:
                    iface, hi, lo, incl = struct.unpack_from(endian + "IIII", c.buf, body)
                else:
                    iface, _drops, hi, lo, incl = struct.unpack_from(endian + "HHIII", c.buf, body)
                data_at = body + 20
                if iface < len(ifaces) and data_at + incl <= p + blen:
                    linktype, tick = ifaces[iface]
                    last_ts = ((hi << 32) | lo) * tick
                    self.records += 1
                    self.bytes += incl
                    yield last_ts, linktype, c.buf[data_at : data_at + incl]
                else:
                    self._warn("capture.bad_packet_block",
                               f"{self.path}: packet block with bad interface or length skipped")
            elif btype_n == 3:  # Simple Packet Block: interface 0, no timestamp
                (orig,) = struct.unpack_from(endian + "I", c.buf, body)
                incl = min(orig, blen - 16)
                if ifaces:
                    self.records += 1
                    self.bytes += incl
                    yield last_ts, ifaces[0][0], c.buf[body + 4 : body + 4 + incl]
            c.pos = p + blen

    @staticmethod
    def _tsresol(buf: bytes, p: int, end: int, endian: str) -> float:
        """Seconds per timestamp tick from the IDB options (default microseconds)."""
        while p + 4 <= end:
            code, olen = struct.unpack_from(endian + "HH", buf, p)
            if code == 0:
                break
            if code == 9 and olen >= 1:
                v = buf[p + 4]
                return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0 ** -v
            p += 4 + ((olen + 3) & ~3)
        return 1e-6


def merge(files: list[CaptureFile]) -> Iterator[Record]:
    """Records of several files in timestamp order (stable for equal timestamps)."""
    if len(files) == 1:
        return iter(files[0])
    return heapq.merge(*files, key=lambda r: r[0])


def open_files(paths: list[str]) -> list[CaptureFile]:
    """Open every path (directories are expanded to their files, sorted); CaptureError if one is bad."""
    out = []
    for path in paths:
        if os.path.isdir(path):
            for name in sorted(os.listdir(path)):
                full = os.path.join(path, name)
                if os.path.isfile(full):
                    out.append(CaptureFile(full))
        else:
            out.append(CaptureFile(path))
    return out
