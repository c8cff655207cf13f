"""Passive HTTP/2 cleartext (h2c) parser: the bytes of one TCP connection in, Transactions out.

Strategy.  We watch a connection from the side, so we never send anything, never enforce flow
control and never reject: every protocol problem becomes an ``h2.<kind>`` anomaly count and
parsing carries on as best it can.  Each direction has its own :class:`_FrameReader`, which cuts
the byte stream into frames in linear time (a bytearray plus an offset).  Control and header
frames are buffered whole, up to :data:`MAX_BUFFERED_PAYLOAD`; DATA payloads are streamed out
piece by piece as they arrive, so a large DATA frame costs no memory, and oversized frames of
other types are skipped.  Each direction also has its own ``hpack.Decoder`` (header blocks sent
by the client are compressed against the client's table, and vice versa); a SETTINGS frame of
one side tunes the decoder and frame-size limit of the *other* direction.

Every stream becomes one :class:`Transaction` when both sides have ended it (END_STREAM), or
earlier when it is reset, evicted (more than ``limits.h2_max_streams`` open) or the connection
closes, flagged as in :mod:`sensor.transaction`.  Frames cannot be resynchronised after a hole
in the byte stream, so a gap stops the parsing of that direction, and so does evidence that
framing is lost: three malformed frame headers in a row or, once the connection start was seen,
one frame longer than the receiver's SETTINGS_MAX_FRAME_SIZE.  What was seen is still emitted at
close.  A capture that starts mid-connection (no preface) is parsed best effort.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import NamedTuple

import hpack

from .body import Body
from .limits import Limits
from .stats import Stats
from .transaction import (
    FLAG_CONNECT,
    FLAG_GAP,
    FLAG_INCOMPLETE,
    FLAG_MALFORMED,
    FLAG_NO_REQUEST,
    FLAG_NO_RESPONSE,
    FLAG_UPGRADE,
    Transaction,
    header,
)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

PROTOCOL = "HTTP/2"
DEFAULT_MAX_FRAME = 16_384  # SETTINGS_MAX_FRAME_SIZE before any SETTINGS (RFC 9113 6.5.2)
ABSOLUTE_MAX_FRAME = (1 << 24) - 1  # the largest length a frame header can declare
MAX_BUFFERED_PAYLOAD = 1 << 20  # non-DATA frames longer than this are skipped, not buffered
MAX_HEADER_BLOCK = 256 << 10  # HEADERS/PUSH_PROMISE + CONTINUATION bytes kept for one block
MAX_HEADER_LIST = 1 << 20  # decoded header bytes kept from one block (HPACK bomb guard)
HPACK_SEGMENT = 4096  # header blocks are decoded in pieces of about this size (see hpack_segments)
MAX_STRIKES = 3  # malformed frame headers in a row before a direction counts as desynchronised
MAX_INTERIM = 16  # 1xx statuses kept per stream
CLOSED_MEMORY = 4096  # recently finished stream ids remembered, to ignore their late frames

# Frame types (RFC 9113 section 6) and flags.
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_MAX_FRAME_SIZE = 0x5

_FIXED_LENGTH = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}
_CONNECTION_LEVEL = {SETTINGS, PING, GOAWAY}
_STREAM_LEVEL = {DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION}
_BUFFERED_TYPES = {HEADERS, CONTINUATION, PUSH_PROMISE, SETTINGS, RST_STREAM}


class _Chunk(NamedTuple):
    """A piece of a DATA frame's payload (padding already removed)."""

    stream_id: int
    data: bytes


class _Frame(NamedTuple):
    """A whole frame.  ``payload`` is empty for DATA (streamed as chunks) and skipped frames."""

    type: int
    flags: int
    stream_id: int
    payload: bytes
    ok: bool  # the frame header passed the sanity checks
    skipped: bool  # a payload too long to buffer was discarded


class _Bad(NamedTuple):
    """A frame header that breaks the protocol (a hint that framing is lost)."""

    kind: str


_Event = _Chunk | _Frame | _Bad


def check_frame_header(length: int, ftype: int, flags: int, stream_id: int, max_frame: int) -> str | None:
    """The anomaly kind a frame header shows, or None when it looks sane."""
    if length > max_frame:
        return "h2.frame_size_error"
    if ftype > CONTINUATION:
        return None  # unknown types are legal and ignored
    if _FIXED_LENGTH.get(ftype, length) != length:
        return "h2.bad_frame_length"
    if ftype == SETTINGS and (length % 6 or (flags & ACK and length)):
        return "h2.bad_frame_length"
    if (ftype in _CONNECTION_LEVEL and stream_id != 0) or (ftype in _STREAM_LEVEL and stream_id == 0):
        return "h2.bad_stream_id"
    return None


class _FrameReader:
    """Cuts one direction's byte stream into frame events, in linear time and bounded memory."""

    __slots__ = ("_buf", "_head", "_left", "_off", "_ok", "_pad", "_skip", "max_frame")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._off = 0
        self._head: tuple[int, int, int] | None = None  # (type, flags, stream id) being read
        self._left = 0  # payload bytes of the current frame still to come
        self._pad = -1  # DATA: padding bytes at the end of the payload; -1 = not read yet
        self._skip = False  # the current payload is discarded, not buffered
        self._ok = True
        self.max_frame = ABSOLUTE_MAX_FRAME

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._off

    @property
    def held(self) -> int:
        """Bytes of memory the buffer holds (consumed ones included until compaction)."""
        return len(self._buf)

    @property
    def mid_frame(self) -> bool:
        return self._head is not None or self.buffered > 0

    def feed(self, data: bytes) -> Iterator[_Event]:
        self._buf += data
        try:
            while True:
                if self._head is None:
                    if self.buffered < 9:
                        return
                    bad = self._start_frame()
                    if bad:
                        yield _Bad(bad)
                if self._head[0] == DATA:
                    yield from self._data_payload()
                elif self._skip:
                    self._discard()
                if self._left > (0 if self._head[0] == DATA or self._skip else self.buffered):
                    return  # the rest of this frame is still to come
                ftype, flags, sid = self._head
                payload = b"" if ftype == DATA or self._skip else self._take_payload()
                self._head = None
                yield _Frame(ftype, flags, sid, payload, self._ok, self._skip)
        finally:
            self._compact()

    def _start_frame(self) -> str | None:
        b, o = self._buf, self._off
        length = int.from_bytes(b[o : o + 3], "big")
        ftype, flags = b[o + 3], b[o + 4]
        sid = int.from_bytes(b[o + 5 : o + 9], "big") & 0x7FFF_FFFF
        self._off += 9
        self._head = (ftype, flags, sid)
        self._left = length
        self._pad = -1 if ftype == DATA and flags & PADDED else 0
        bad = check_frame_header(length, ftype, flags, sid, self.max_frame)
        self._ok = bad is None
        self._skip = ftype != DATA and (ftype not in _BUFFERED_TYPES or length > MAX_BUFFERED_PAYLOAD)
        if ftype in _BUFFERED_TYPES and length > MAX_BUFFERED_PAYLOAD and not bad:
            bad = "h2.frame_too_large"
        return bad

    def _data_payload(self) -> Iterator[_Event]:
        """Stream the available part of a DATA payload; padding is dropped."""
        if self._pad < 0:
            if not self._left:
                self._pad = 0
                yield _Bad("h2.bad_padding")
            elif self.buffered:
                self._pad = self._buf[self._off]
                self._off += 1
                self._left -= 1
                if self._pad > self._left:
                    self._pad = self._left
                    yield _Bad("h2.bad_padding")
            else:
                return
        n = min(self.buffered, self._left - self._pad)
        if n > 0:
            yield _Chunk(self._head[2], bytes(self._buf[self._off : self._off + n]))
            self._off += n
            self._left -= n
        if self._left <= self._pad:
            n = min(self.buffered, self._left)
            self._off += n
            self._left -= n
            self._pad -= n

    def _discard(self) -> None:
        n = min(self.buffered, self._left)
        self._off += n
        self._left -= n

    def _take_payload(self) -> bytes:
        payload = bytes(self._buf[self._off : self._off + self._left])
        self._off += self._left
        self._left = 0
        return payload

    def clear(self) -> None:
        """Drop everything held (the direction is no longer parsed)."""
        self._buf = bytearray()
        self._off = 0
        self._head = None
        self._left = 0

    def _compact(self) -> None:
        if self._off:
            del self._buf[: self._off]  # what stays is at most one partial frame
            self._off = 0


class _HeaderBlock:
    """A header block being collected from HEADERS/PUSH_PROMISE plus CONTINUATION frames."""

    __slots__ = ("end_stream", "ftype", "parts", "promised_id", "size", "stream_id", "too_large")

    def __init__(self, ftype: int, stream_id: int, promised_id: int, end_stream: bool):
        self.ftype = ftype
        self.stream_id = stream_id
        self.promised_id = promised_id
        self.end_stream = end_stream
        self.parts: list[bytes] = []
        self.size = 0
        self.too_large = False

    def add(self, fragment: bytes) -> None:
        self.size += len(fragment)
        if self.size > MAX_HEADER_BLOCK:
            self.lose()
        elif not self.too_large:
            self.parts.append(fragment)

    def lose(self) -> None:
        self.too_large = True
        self.parts = []


class _Direction:
    """Parsing state of one side of the connection."""

    __slots__ = ("advertised_frame", "block", "dead", "decoder", "frames", "reader", "strikes")

    def __init__(self) -> None:
        self.reader = _FrameReader()
        self.decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self.dead = False
        self.block: _HeaderBlock | None = None
        self.strikes = 0
        self.frames = 0
        self.advertised_frame = DEFAULT_MAX_FRAME  # largest SETTINGS_MAX_FRAME_SIZE for this direction


class _Message:
    """One side of a stream: headers (and trailers), body, and whether END_STREAM was seen."""

    __slots__ = ("_body", "ended", "fixed_body", "has_headers", "header_bytes", "headers", "limits", "pseudo")

    def __init__(self, limits: Limits, pseudo: dict[str, str], has_headers: bool):
        self.limits = limits
        self.pseudo = pseudo
        self.headers: list[tuple[str, str]] = []
        self.header_bytes = 0
        self.has_headers = has_headers
        self._body: Body | None = None
        self.ended = False
        self.fixed_body: tuple[bytes, int, int] | None = None  # an upgraded HTTP/1.1 request's body

    def add_headers(self, headers: list[tuple[str, str]]) -> int:
        """Keep headers (or trailers) within the count and size limits; returns how many were dropped."""
        for i, (name, value) in enumerate(headers):
            size = len(name) + len(value) + 4
            if (
                len(self.headers) >= self.limits.max_headers
                or self.header_bytes + size > self.limits.max_header_bytes
            ):
                return len(headers) - i
            self.headers.append((name, value))
            self.header_bytes += size
        return 0

    def body(self) -> Body:
        """The body accumulator, made at the first DATA (when Content-Encoding is known)."""
        if self._body is None:
            encoding = header(tuple(self.headers), "content-encoding")
            self._body = Body(encoding, self.limits.body_cap, self.limits.decompressed_cap)
        return self._body

    def body_fields(self) -> tuple[bytes, int, int, set[str]]:
        """(kept decoded bytes, decoded length, wire length, body flags)."""
        if self.fixed_body is not None:
            return (*self.fixed_body, set())
        body = self.body()
        decoded, wire = body.lengths()
        return body.data(), decoded, wire, body.flags


class _Stream:
    __slots__ = ("flags", "id", "interim", "request", "response", "ts", "ts_end", "ts_response")

    def __init__(self, stream_id: int, ts: float):
        self.id = stream_id
        self.ts = ts
        self.ts_response: float | None = None
        self.ts_end = ts
        self.request: _Message | None = None
        self.response: _Message | None = None  # the final (non-1xx) response
        self.interim: list[int] = []
        self.flags: set[str] = set()


def hpack_segments(block: bytes, step: int = HPACK_SEGMENT) -> Iterator[bytes]:
    """Cut a header block at field-representation boundaries into pieces of about ``step`` bytes.

    ``hpack.Decoder`` copies the rest of its input for every literal field, which is quadratic
    on a big block of small fields; decoding piece by piece keeps it linear (the dynamic table
    carries over from one ``decode`` call to the next).  A malformed tail goes out as it is, for
    the decoder to report.
    """
    if len(block) <= 2 * step:
        yield block  # small (the usual case): one call, no walk
        return
    start = pos = 0
    while pos < len(block):
        end = _representation_end(block, pos)
        if end is None:
            break
        pos = end
        if pos - start >= step:
            yield block[start:pos]
            start = pos
    if start < len(block):
        yield block[start:]


def _representation_end(block: bytes, pos: int) -> int | None:
    """Where the HPACK field representation starting at ``pos`` ends (RFC 7541 section 6)."""
    first = block[pos]
    if first & 0x80:  # indexed field
        prefix, literal = 7, False
    elif first & 0x40:  # literal with incremental indexing
        prefix, literal = 6, True
    elif first & 0x20:  # dynamic table size update
        prefix, literal = 5, False
    else:  # literal without indexing / never indexed
        prefix, literal = 4, True
    read = _integer(block, pos, prefix)
    if read is None or not literal:
        return None if read is None else read[1]
    name_index, pos = read
    for _ in range(1 if name_index else 2):  # [name string,] value string
        read = _integer(block, pos, 7)
        if read is None or read[1] + read[0] > len(block):
            return None
        pos = read[1] + read[0]
    return pos


def _integer(block: bytes, pos: int, prefix: int) -> tuple[int, int] | None:
    """(value, end) of the HPACK integer at ``pos`` with a ``prefix``-bit first byte, or None."""
    if pos >= len(block):
        return None
    mask = (1 << prefix) - 1
    value = block[pos] & mask
    if value != mask:
        return value, pos + 1
    shift = 0
    for i in range(pos + 1, min(len(block), pos + 11)):
        value += (block[i] & 0x7F) << shift
        shift += 7
        if not block[i] & 0x80:
            return value, i + 1
    return None


def split_headers(pairs: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """HPACK output -> (pseudo-headers, regular headers); cookie crumbs are joined again."""
    pseudo: dict[str, str] = {}
    regular: list[tuple[str, str]] = []
    cookies: list[str] = []
    cookie_at = 0
    for raw_name, raw_value in pairs:
        name = raw_name.decode("utf-8", "replace")
        value = raw_value.decode("utf-8", "replace")
        if name.startswith(":"):
            pseudo.setdefault(name, value)
        elif name.lower() == "cookie":
            if not cookies:
                cookie_at = len(regular)
                regular.append(("cookie", ""))  # placeholder keeps the first crumb's position
            cookies.append(value)
        else:
            regular.append((name, value))
    if cookies:
        regular[cookie_at] = ("cookie", "; ".join(cookies))
    return pseudo, regular


class H2Connection:
    """One HTTP/2 connection seen from the side.  Never raises; problems become anomalies."""

    def __init__(
        self,
        client_ip: bytes,
        client_port: int,
        server_ip: bytes,
        server_port: int,
        limits: Limits,
        stats: Stats,
        upgraded_request: Transaction | None = None,
    ):
        self._addr = (client_ip, client_port, server_ip, server_port)
        self._limits = limits
        self._stats = stats
        self._client = _Direction()
        self._server = _Direction()
        self._preface_seen = 0  # preface bytes matched so far; -1 once given up on
        self._streams: dict[int, _Stream] = {}
        self._closed_ids: dict[int, None] = {}  # insertion-ordered set of finished stream ids
        self._gap = False
        self._done = False
        self._out: list[Transaction] = []
        self._request_version = PROTOCOL  # of stream 1 (HTTP/1.1 when upgraded)
        if upgraded_request is not None:
            self._start_upgraded(upgraded_request)

    # ----------------------------------------------------------------- public interface

    @property
    def buffered(self) -> int:
        """Bytes held for incomplete frames and header blocks (both directions)."""
        total = 0
        for d in (self._client, self._server):
            total += d.reader.held + (d.block.size if d.block and not d.block.too_large else 0)
        return total

    def feed(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        """Bytes seen in one direction; returns the transactions completed by them."""
        direction = self._client if from_client else self._server
        if self._done or direction.dead or not data:
            return []
        try:
            if from_client and self._preface_seen >= 0:
                data = self._match_preface(data)
            self._parse(from_client, direction, data, ts)
        except Exception:  # noqa: BLE001 - an input we did not foresee must not stop the pipeline
            self._stats.anomaly("h2.internal_error")
            self._stop(direction)
        return self._flush()

    def gap(self, from_client: bool, nbytes: int, ts: float) -> list[Transaction]:
        """``nbytes`` of one direction were lost: framing is gone, so stop parsing that side."""
        direction = self._client if from_client else self._server
        if self._done or direction.dead:
            return []
        self._stats.anomaly("h2.gap")
        self._stop(direction)
        self._gap = True
        for stream in self._streams.values():
            stream.flags.add(FLAG_GAP)
        return []

    def close(self, ts: float) -> list[Transaction]:
        """The connection ended (or was evicted): emit every stream still open."""
        if self._done:
            return []
        self._done = True
        try:
            self._note_truncation()
            for stream in list(self._streams.values()):
                self._finish(stream)
        except Exception:  # noqa: BLE001 - see feed()
            self._stats.anomaly("h2.internal_error")
        return self._flush()

    # ----------------------------------------------------------------- setup

    def _start_upgraded(self, tx: Transaction) -> None:
        """Stream 1 is the HTTP/1.1 request that asked for ``Upgrade: h2c``."""
        stream = _Stream(1, tx.ts)
        pseudo = {k: v for k, v in ((":method", tx.method), (":path", tx.uri)) if v is not None}
        msg = self._set_message(stream, True, pseudo, list(tx.request_headers))
        msg.fixed_body = (tx.request_body, tx.request_body_len, tx.request_body_len_wire)
        msg.ended = True
        self._request_version = tx.request_version or "HTTP/1.1"
        stream.interim = list(tx.interim_statuses)
        stream.flags = set(tx.flags) - {FLAG_UPGRADE, FLAG_NO_RESPONSE, FLAG_INCOMPLETE}
        self._streams[1] = stream
        for d in (self._client, self._server):  # the connection start is known
            d.reader.max_frame = DEFAULT_MAX_FRAME
        self._apply_settings(True, _upgrade_settings(header(tx.request_headers, "http2-settings")))

    def _match_preface(self, data: bytes) -> bytes:
        """Strip the client preface (possibly split across feeds); returns the bytes after it."""
        want = H2_PREFACE[self._preface_seen :]
        n = min(len(want), len(data))
        if data[:n] == want[:n]:
            self._preface_seen += n
            if self._preface_seen == len(H2_PREFACE):
                self._preface_seen = -1
                for d in (self._client, self._server):
                    d.reader.max_frame = d.advertised_frame
            return data[n:]
        self._stats.anomaly("h2.no_preface")
        data = H2_PREFACE[: self._preface_seen] + data  # they were not a preface after all
        self._preface_seen = -1
        return data

    def _note_truncation(self) -> None:
        if self._preface_seen > 0:
            self._stats.anomaly("h2.truncated_preface")
        for d in (self._client, self._server):
            if d.dead:
                continue
            if d.reader.mid_frame:
                self._stats.anomaly("h2.truncated_frame")
            if d.block is not None:
                self._stats.anomaly("h2.truncated_headers")

    # ----------------------------------------------------------------- frames

    def _parse(self, from_client: bool, direction: _Direction, data: bytes, ts: float) -> None:
        for event in direction.reader.feed(data):
            if isinstance(event, _Bad):
                self._stats.anomaly(event.kind)
                direction.strikes += MAX_STRIKES if event.kind == "h2.frame_size_error" else 1
                if direction.strikes >= MAX_STRIKES:
                    self._desync(direction)
                    return
            elif isinstance(event, _Chunk):
                self._on_data(from_client, event, ts)
            else:
                if event.ok and event.type <= CONTINUATION:
                    direction.strikes = 0
                self._on_frame(from_client, direction, event, ts)

    @staticmethod
    def _stop(direction: _Direction) -> None:
        direction.dead = True
        direction.block = None
        direction.reader.clear()

    def _desync(self, direction: _Direction) -> None:
        self._stats.anomaly("h2.desync")
        self._stop(direction)
        for stream in self._streams.values():
            stream.flags.add(FLAG_MALFORMED)

    def _on_frame(self, from_client: bool, direction: _Direction, frame: _Frame, ts: float) -> None:
        if direction.frames == 0 and not from_client and frame.type != SETTINGS:
            self._stats.anomaly("h2.no_server_preface")
        direction.frames += 1
        if direction.block is not None and frame.type != CONTINUATION:
            self._stats.anomaly("h2.continuation_expected")
            direction.block = None  # the block is lost; the HPACK table may now be off
        try:
            handler = _HANDLERS.get(frame.type)
            if handler is not None:
                handler(self, from_client, direction, frame, ts)
        except Exception:  # noqa: BLE001 - see feed()
            self._stats.anomaly("h2.internal_error")

    def _on_data_end(self, from_client: bool, direction: _Direction, frame: _Frame, ts: float) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return
        stream.ts_end = ts
        if frame.flags & END_STREAM:
            self._end_message(stream, from_client)

    def _on_data(self, from_client: bool, chunk: _Chunk, ts: float) -> None:
        stream = self._streams.get(chunk.stream_id)
        if stream is None:
            if chunk.stream_id not in self._closed_ids:
                self._stats.anomaly("h2.data_unknown_stream")
            return
        msg = stream.request if from_client else stream.response
        if msg is None:
            self._stats.anomaly("h2.data_before_headers")
            msg = self._set_message(stream, from_client, {}, None)
        stream.ts_end = ts
        msg.body().feed(chunk.data)

    def _on_headers(self, from_client: bool, direction: _Direction, frame: _Frame, ts: float) -> None:
        payload = None if frame.skipped else _strip_padding(frame, self._stats)
        if payload and frame.flags & PRIORITY_FLAG:
            payload = payload[5:]
        block = _HeaderBlock(HEADERS, frame.stream_id, 0, bool(frame.flags & END_STREAM))
        self._add_fragment(from_client, direction, block, frame.flags, payload, ts)

    def _on_push_promise(self, from_client: bool, direction: _Direction, frame: _Frame, ts: float) -> None:
        if frame.skipped:
            return  # the promised stream id went with the payload; counted as too large
        payload = _strip_padding(frame, self._stats)
        if from_client or len(payload) < 4:
            self._stats.anomaly("h2.bad_push_promise")
            return
        promised = int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF
        block = _HeaderBlock(PUSH_PROMISE, frame.stream_id, promised, False)
        self._add_fragment(from_client, direction, block, frame.flags, payload[4:], ts)

    def _on_continuation(self, from_client: bool, direction: _Direction, frame: _Frame, ts: float) -> None:
        block = direction.block
        if block is None or block.stream_id != frame.stream_id:
            self._stats.anomaly("h2.unexpected_continuation")
            direction.block = None
            return
        payload = None if frame.skipped else frame.payload
        self._add_fragment(from_client, direction, block, frame.flags, payload, ts)

    def _add_fragment(
        self,
        from_client: bool,
        direction: _Direction,
        block: _HeaderBlock,
        flags: int,
        fragment: bytes | None,
        ts: float,
    ) -> None:
        """Add a piece to a header block; decode and use the block once it is complete.

        ``fragment`` None stands for a piece too large to keep: the block cannot be decoded.
        """
        if fragment is None:
            block.lose()
        else:
            block.add(fragment)
        if not flags & END_HEADERS:
            direction.block = block
            return
        direction.block = None
        pairs = self._decode_block(direction, block)
        if block.ftype == PUSH_PROMISE:
            self._on_promise(block.promised_id, pairs, ts)
        else:
            self._on_header_block(from_client, block.stream_id, pairs, block.end_stream, ts)

    def _decode_block(self, direction: _Direction, block: _HeaderBlock) -> list[tuple[bytes, bytes]] | None:
        """HPACK-decode a complete block; None when it could not be decoded."""
        if block.too_large:
            self._stats.anomaly("h2.header_block_too_large")
            return None
        pairs: list[tuple[bytes, bytes]] = []
        size = 0
        try:
            for segment in hpack_segments(b"".join(block.parts)):
                for name, value in direction.decoder.decode(segment, raw=True):
                    size += len(name) + len(value) + 32
                    if size <= MAX_HEADER_LIST:  # beyond: decoded for the table's sake, not kept
                        pairs.append((name, value))
        except hpack.HPACKError:  # the dynamic table may now be off; go on best effort
            self._stats.anomaly("h2.hpack_error")
            return None
        if size > MAX_HEADER_LIST:
            self._stats.anomaly("h2.header_list_too_large")
        return pairs

    def _on_rst_stream(self, from_client: bool, direction: _Direction, frame: _Frame, ts: float) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is not None:
            stream.ts_end = ts
            self._finish(stream)

    def _on_settings(self, from_client: bool, direction: _Direction, frame: _Frame, ts: float) -> None:
        if frame.flags & ACK:
            return
        self._apply_settings(from_client, _settings_pairs(frame.payload))

    def _apply_settings(self, from_client: bool, settings: list[tuple[int, int]]) -> None:
        """A side's settings constrain what the *other* side sends."""
        other = self._server if from_client else self._client
        for ident, value in settings:
            if ident == SETTINGS_HEADER_TABLE_SIZE:
                # Lenient: the peer may shrink its table only after the ACK, so never go below
                # the table size currently in use.
                dec = other.decoder
                dec.max_allowed_table_size = max(value, dec.header_table_size)
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                other.advertised_frame = max(other.advertised_frame, min(value, ABSOLUTE_MAX_FRAME))
                if other.reader.max_frame != ABSOLUTE_MAX_FRAME:
                    other.reader.max_frame = other.advertised_frame

    # ----------------------------------------------------------------- streams

    def _on_header_block(
        self, from_client: bool, stream_id: int, pairs: list[tuple[bytes, bytes]] | None, end: bool, ts: float
    ) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id in self._closed_ids:
                return  # e.g. a response already in flight when the client reset the stream
            stream = self._open(stream_id, ts)
        stream.ts_end = ts
        pseudo, regular = split_headers(pairs) if pairs is not None else ({}, [])
        if pairs is None:
            stream.flags.add(FLAG_MALFORMED)
        if from_client:
            self._store_headers(stream, True, pseudo, regular)
        else:
            self._response_headers(stream, pseudo, regular, pairs is not None, ts)
        if end:
            self._end_message(stream, from_client)

    def _store_headers(self, stream: _Stream, request: bool, pseudo: dict[str, str], regular: list) -> None:
        """Headers for a side of a stream, or trailers when it has headers already."""
        msg = stream.request if request else stream.response
        if msg is None:
            self._set_message(stream, request, pseudo, regular)
            return
        if not msg.has_headers:  # DATA came first
            msg.pseudo, msg.has_headers = pseudo, True
        if msg.add_headers(regular):
            self._stats.anomaly("h2.header_limit")

    def _response_headers(
        self, stream: _Stream, pseudo: dict[str, str], regular: list, decoded: bool, ts: float
    ) -> None:
        if stream.ts_response is None:
            stream.ts_response = ts
        msg = stream.response
        if msg is not None and msg.has_headers:
            self._store_headers(stream, False, pseudo, regular)  # trailers
            return
        status = _status(pseudo.get(":status"))
        if status is None and decoded:
            self._stats.anomaly("h2.bad_status")
            stream.flags.add(FLAG_MALFORMED)
        if status is not None and 100 <= status < 200:
            if len(stream.interim) < MAX_INTERIM:
                stream.interim.append(status)
        else:
            self._store_headers(stream, False, pseudo, regular)

    def _on_promise(self, promised_id: int, pairs: list[tuple[bytes, bytes]] | None, ts: float) -> None:
        if promised_id in self._streams or promised_id in self._closed_ids or promised_id == 0:
            self._stats.anomaly("h2.bad_push_promise")
            return
        stream = self._open(promised_id, ts)
        pseudo, regular = split_headers(pairs) if pairs is not None else ({}, [])
        if pairs is None:
            stream.flags.add(FLAG_MALFORMED)
        self._set_message(stream, True, pseudo, regular).ended = True

    def _open(self, stream_id: int, ts: float) -> _Stream:
        while len(self._streams) >= max(1, self._limits.h2_max_streams):
            self._stats.anomaly("h2.stream_evicted")
            self._finish(next(iter(self._streams.values())))
        stream = _Stream(stream_id, ts)
        if self._gap:
            stream.flags.add(FLAG_GAP)  # the other direction can no longer be seen
        self._streams[stream_id] = stream
        return stream

    def _set_message(
        self, stream: _Stream, request: bool, pseudo: dict[str, str], regular: list | None
    ) -> _Message:
        """A new side of a stream; ``regular`` None means its headers were not seen (yet)."""
        msg = _Message(self._limits, pseudo, regular is not None)
        if regular and msg.add_headers(regular):
            self._stats.anomaly("h2.header_limit")
        if request:
            stream.request = msg
        else:
            stream.response = msg
        return msg

    def _end_message(self, stream: _Stream, from_client: bool) -> None:
        msg = stream.request if from_client else stream.response
        if msg is None:
            if from_client or not stream.interim:
                self._stats.anomaly("h2.end_without_headers")
            if from_client:  # a request without headers cannot be; only mark it seen
                msg = self._set_message(stream, True, {}, None)
            else:
                return  # END_STREAM on a 1xx is a protocol error; wait for more
        msg.ended = True
        req, resp = stream.request, stream.response
        if resp is not None and resp.ended and (req is None or req.ended):
            self._finish(stream)

    def _finish(self, stream: _Stream) -> None:
        """Emit a stream's transaction and forget the stream."""
        self._streams.pop(stream.id, None)
        self._closed_ids[stream.id] = None
        if len(self._closed_ids) > CLOSED_MEMORY:
            del self._closed_ids[next(iter(self._closed_ids))]
        self._out.append(self._transaction(stream))

    def _flush(self) -> list[Transaction]:
        out, self._out = self._out, []
        return out

    def _transaction(self, stream: _Stream) -> Transaction:
        req, resp = stream.request, stream.response
        flags = set(stream.flags)
        fields: dict = {}
        if req is None:
            flags.add(FLAG_NO_REQUEST)
        else:
            fields.update(self._request_fields(req, flags))
        if resp is None:
            flags.add(FLAG_NO_RESPONSE)
        else:
            fields.update(self._response_fields(resp, flags))
        if (req is not None and not req.ended) or (resp is not None and not resp.ended):
            flags.add(FLAG_INCOMPLETE)
        if fields.get("method") == "CONNECT" and 200 <= (fields.get("status_code") or 0) < 300:
            flags.add(FLAG_CONNECT)
        client_ip, client_port, server_ip, server_port = self._addr
        return Transaction(
            ts=stream.ts,
            client_ip=client_ip,
            client_port=client_port,
            server_ip=server_ip,
            server_port=server_port,
            protocol=PROTOCOL,
            ts_response=stream.ts_response,
            ts_end=stream.ts_end,
            interim_statuses=tuple(stream.interim),
            stream_id=stream.id,
            flags=frozenset(flags),
            **fields,
        )

    def _request_fields(self, msg: _Message, flags: set[str]) -> dict:
        method = msg.pseudo.get(":method")
        authority = msg.pseudo.get(":authority")
        uri = msg.pseudo.get(":path") or (authority if method == "CONNECT" else None)
        headers = tuple(msg.headers)
        if authority and header(headers, "host") is None:
            headers = (("host", authority), *headers)
        body, decoded, wire, body_flags = msg.body_fields()
        flags.update(body_flags)
        return {
            "method": method,
            "uri": uri,
            "request_version": self._request_version if msg.fixed_body is not None else PROTOCOL,
            "request_headers": headers,
            "request_body": body,
            "request_body_len": decoded,
            "request_body_len_wire": wire,
        }

    def _response_fields(self, msg: _Message, flags: set[str]) -> dict:
        body, decoded, wire, body_flags = msg.body_fields()
        flags.update(body_flags)
        return {
            "status_code": _status(msg.pseudo.get(":status")),
            "response_version": PROTOCOL,
            "response_headers": tuple(msg.headers),
            "response_body": body,
            "response_body_len": decoded,
            "response_body_len_wire": wire,
        }


def _strip_padding(frame: _Frame, stats: Stats) -> bytes:
    payload = frame.payload
    if not frame.flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        stats.anomaly("h2.bad_padding")
        return payload[1:]
    return payload[1 : len(payload) - payload[0]]


def _status(value: str | None) -> int | None:
    if value is None or len(value) != 3 or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def _upgrade_settings(value: str | None) -> list[tuple[int, int]]:
    """The ``HTTP2-Settings`` header of an upgrade request (base64url SETTINGS payload)."""
    if not value:
        return []
    try:
        raw = base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
    except ValueError:
        return []
    return _settings_pairs(raw)


def _settings_pairs(payload: bytes) -> list[tuple[int, int]]:
    """A SETTINGS payload -> [(identifier, value)]; a trailing partial entry is ignored."""
    return [
        (int.from_bytes(payload[i : i + 2], "big"), int.from_bytes(payload[i + 2 : i + 6], "big"))
        for i in range(0, len(payload) - 5, 6)
    ]


_HANDLERS = {
    DATA: H2Connection._on_data_end,
    HEADERS: H2Connection._on_headers,
    PUSH_PROMISE: H2Connection._on_push_promise,
    CONTINUATION: H2Connection._on_continuation,
    RST_STREAM: H2Connection._on_rst_stream,
    SETTINGS: H2Connection._on_settings,
}
