"""TLS ClientHello parsing: server name (SNI) and ALPN, from the first bytes of a connection.

Only the handshake's first record(s) are read; nothing is decrypted.  Malformed input gives
None, never an exception.
"""

from __future__ import annotations

import struct


def client_hello(data: bytes) -> tuple[str | None, tuple[str, ...]] | None:
    """``(sni, alpn)`` from a buffer starting with a TLS record, or None if it is not a ClientHello."""
    try:
        return _parse(_handshake_bytes(data))
    except (IndexError, struct.error, UnicodeDecodeError, ValueError):
        return None


def _handshake_bytes(data: bytes) -> bytes:
    """Concatenate the payloads of the leading handshake records (a hello may span records)."""
    out = bytearray()
    p = 0
    while p + 5 <= len(data) and data[p] == 0x16:
        n = struct.unpack_from("!H", data, p + 3)[0]
        out += data[p + 5 : p + 5 + n]
        p += 5 + n
    return bytes(out)


def _parse(h: bytes) -> tuple[str | None, tuple[str, ...]] | None:
    if len(h) < 4 or h[0] != 1:  # handshake type client_hello
        return None
    p = 4 + 2 + 32  # header, client_version, random
    p += 1 + h[p]  # session id
    p += 2 + struct.unpack_from("!H", h, p)[0]  # cipher suites
    p += 1 + h[p]  # compression methods
    if p + 2 > len(h):
        return None, ()
    end = min(len(h), p + 2 + struct.unpack_from("!H", h, p)[0])
    p += 2
    sni: str | None = None
    alpn: list[str] = []
    while p + 4 <= end:
        etype, elen = struct.unpack_from("!HH", h, p)
        body = h[p + 4 : p + 4 + elen]
        p += 4 + elen
        if etype == 0 and len(body) >= 5:  # server_name
            q = 2
            while q + 3 <= len(body):
                ntype, nlen = body[q], struct.unpack_from("!H", body, q + 1)[0]
                if ntype == 0:
                    sni = body[q + 3 : q + 3 + nlen].decode("ascii").lower().rstrip(".")
                    break
                q += 3 + nlen
        elif etype == 16 and len(body) >= 2:  # ALPN
            q = 2
            while q < len(body):
                n = body[q]
                alpn.append(body[q + 1 : q + 1 + n].decode("ascii", "replace"))
                q += 1 + n
    return sni, tuple(alpn)
