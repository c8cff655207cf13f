"""DNS responses over UDP: which names resolve to which addresses (for naming map nodes).

Sans-I/O: :func:`parse_response` takes one UDP payload.  Compression pointers are followed
with a hop limit; malformed messages give None.
"""

from __future__ import annotations

import socket
import struct


def _name(msg: bytes, p: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    for _ in range(64):
        n = msg[p]
        if n == 0:
            p += 1
            break
        if n & 0xC0 == 0xC0:
            if end < 0:
                end = p + 2
            p = ((n & 0x3F) << 8) | msg[p + 1]
            continue
        labels.append(msg[p + 1 : p + 1 + n].decode("ascii", "replace"))
        p += 1 + n
    else:
        raise ValueError("name too long")
    return ".".join(labels).lower(), (end if end >= 0 else p)


def parse_response(msg: bytes) -> tuple[str, tuple[str, ...], tuple[str, ...]] | None:
    """``(qname, addresses, cnames)`` of a DNS response with answers, else None."""
    try:
        _id, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", msg, 0)
        if not flags & 0x8000 or qd < 1 or an < 1 or flags & 0x000F:
            return None
        qname, p = _name(msg, 12)
        p += 4
        for _ in range(qd - 1):
            _, p = _name(msg, p)
            p += 4
        addrs: list[str] = []
        cnames: list[str] = []
        for _ in range(min(an, 64)):
            _rname, p = _name(msg, p)
            rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", msg, p)
            p += 10
            rdata = msg[p : p + rdlen]
            if rtype == 1 and rdlen == 4:
                addrs.append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == 28 and rdlen == 16:
                addrs.append(socket.inet_ntop(socket.AF_INET6, rdata))
            elif rtype == 5:
                cnames.append(_name(msg, p)[0])
            p += rdlen
        if not addrs and not cnames:
            return None
        return qname, tuple(addrs), tuple(cnames)
    except (IndexError, struct.error, ValueError):
        return None
