"""Message bodies: content decoding (gzip, deflate, br) with caps, and length accounting.

A :class:`Body` receives the de-chunked bytes of one message as they arrive.  It counts the
wire length (still content-encoded, as Suricata logs it), decodes ``Content-Encoding`` layers
in a streaming way and counts the decoded length (as Zeek logs it), and keeps at most
``body_cap`` decoded bytes.  Decompression stops at ``decompressed_cap`` bytes (a gzip bomb
costs at most that much CPU and never that much memory: output is produced in 1 MiB steps).
"""

from __future__ import annotations

import zlib

from .transaction import FLAG_DECODE_ERROR, FLAG_DECODE_LIMIT, FLAG_GAP, FLAG_TRUNCATED

_STEP = 1 << 20


class _Zlib:
    __slots__ = ("obj", "raw_fallback", "started")

    def __init__(self, wbits: int, raw_fallback: bool = False):
        self.obj = zlib.decompressobj(wbits)
        self.raw_fallback = raw_fallback
        self.started = False

    def process(self, data: bytes, limit: int) -> tuple[bytes, bytes]:
        """Decode; return (output, input not yet consumed because of ``limit``)."""
        if self.raw_fallback and not self.started and data:
            # "deflate" is zlib-wrapped by the RFC but raw deflate by many servers.
            if len(data) >= 2 and (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0:
                self.obj = zlib.decompressobj(15)
            else:
                self.obj = zlib.decompressobj(-15)
        self.started = True
        if self.obj.eof:
            return b"", b""
        out = self.obj.decompress(data, limit)
        return out, self.obj.unconsumed_tail

    def drain(self, limit: int) -> tuple[bytes, bytes]:
        return self.process(b"", limit) if not self.obj.eof else (b"", b"")


class _Brotli:
    __slots__ = ("obj",)

    def __init__(self):
        import brotli

        self.obj = brotli.Decompressor()

    def process(self, data: bytes, limit: int) -> tuple[bytes, bytes]:
        if self.obj.is_finished():
            return b"", b""
        if data and not self.obj.can_accept_more_data():
            return self.obj.process(b"", output_buffer_limit=limit), data
        out = self.obj.process(data, output_buffer_limit=limit)
        return out, b""

    def drain(self, limit: int) -> tuple[bytes, bytes]:
        if self.obj.is_finished() or self.obj.can_accept_more_data():
            return b"", b""
        return self.obj.process(b"", output_buffer_limit=limit), b""


def _decoder(name: str):
    if name in ("gzip", "x-gzip"):
        return _Zlib(16 + 15)
    if name == "deflate":
        return _Zlib(15, raw_fallback=True)
    if name == "br":
        return _Brotli()
    return None


def parse_encodings(value: str | None) -> list[str]:
    """``"gzip, br"`` -> ``["gzip", "br"]`` (order applied by the sender; identity dropped)."""
    if not value:
        return []
    return [e.strip().lower() for e in value.split(",") if e.strip() and e.strip().lower() != "identity"]


class Body:
    """Accumulates one message body.  Never raises on bad input; problems become flags."""

    __slots__ = (
        "wire_len", "decoded_len", "_kept", "_kept_len", "_cap", "_dcap", "_layers", "flags",
        "line_mode", "_last",
    )

    def __init__(self, content_encoding: str | None, body_cap: int, decompressed_cap: int):
        self.wire_len = 0
        self.decoded_len = 0
        self._kept: list[bytes] = []
        self._kept_len = 0
        self._cap = body_cap
        self._dcap = decompressed_cap
        self.flags: set[str] = set()
        # Zeek delivers some bodies line by line and counts a CRLF after an unterminated last
        # line; ``line_mode`` reproduces that count in lengths() (see README "Body lengths").
        self.line_mode = False
        self._last = 0
        layers = []
        if content_encoding:
            for name in reversed(parse_encodings(content_encoding)[:2]):  # at most 2 layers
                dec = _decoder(name)
                if dec is not None:
                    layers.append(dec)
        self._layers = layers

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.wire_len += len(data)
        if not self._layers:
            self._keep(data)
            return
        if FLAG_DECODE_ERROR in self.flags or FLAG_DECODE_LIMIT in self.flags:
            return
        self._decode(data)

    def _decode(self, data: bytes) -> None:
        try:
            self._push(0, data)
        except Exception:  # zlib.error, brotli.error: corrupt or mislabelled content
            self.flags.add(FLAG_DECODE_ERROR)

    def _push(self, i: int, data: bytes) -> None:
        """Push ``data`` through layer ``i`` and the ones after it, one step of output at a
        time: a bomb costs CPU up to the cap, but never more than a step of memory per layer."""
        if i == len(self._layers):
            room = self._dcap - self.decoded_len
            if len(data) > room:
                data = data[: max(0, room)]
                self.flags.add(FLAG_DECODE_LIMIT)
            self._keep(data)
            return
        layer = self._layers[i]
        rest = data
        while True:
            out, rest = layer.process(rest, _STEP)
            if not out:
                return  # all consumed, or no progress: never spin
            self._push(i + 1, out)
            if FLAG_DECODE_LIMIT in self.flags:
                return
            if not rest:
                # drain buffered output (brotli may hold more)
                while True:
                    out, _ = layer.drain(_STEP)
                    if not out:
                        return
                    self._push(i + 1, out)
                    if FLAG_DECODE_LIMIT in self.flags:
                        return

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        self._last = data[-1]
        self.decoded_len += len(data)
        room = self._cap - self._kept_len
        if room > 0:
            if len(data) > room:
                data = data[:room]
                self.flags.add(FLAG_TRUNCATED)
            self._kept.append(data)
            self._kept_len += len(data)
        elif data:
            self.flags.add(FLAG_TRUNCATED)

    def gap(self, n: int) -> None:
        """``n`` body bytes were missing from the capture."""
        self.wire_len += n
        self.flags.add(FLAG_GAP)
        if self._layers:
            # a compressed stream cannot continue across a hole
            self.flags.add(FLAG_DECODE_ERROR)
        else:
            self.decoded_len += n

    def data(self) -> bytes:
        if len(self._kept) > 1:
            self._kept = [b"".join(self._kept)]
        return self._kept[0] if self._kept else b""

    def lengths(self) -> tuple[int, int]:
        """(decoded_len, wire_len); a body that failed to decode reports its wire length."""
        if FLAG_DECODE_ERROR in self.flags and self.decoded_len == 0:
            return self.wire_len, self.wire_len
        if self.line_mode and self.decoded_len and self._last != 10:
            return self.decoded_len + 2, self.wire_len
        return self.decoded_len, self.wire_len
