"""Encapsulations that traffic mirroring and mobile networks wrap around the real packets.

GRE (with key/sequence/checksum, PPTP's enhanced GRE, ERSPAN types I, II and III,
transparent Ethernet bridging, MPLS), and UDP-borne tunnels recognised by port *and* header
shape: VXLAN (4789, 8472), VXLAN-GPE (4790), Geneve (6081), GRE-in-UDP (4754), Teredo (3544),
GTP-U (2152) and AYIYA (5072).  IP-in-IP and 6in4 are handled in ``decode.l4``.
Each function returns the decoded inner segment, None, or ``NOT_A_TUNNEL`` (UDP only: the
datagram is ordinary UDP and the caller keeps it).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .decode import Decoder

NOT_A_TUNNEL = object()
_u16 = struct.Struct("!H").unpack_from


def gre(dec: Decoder, d: bytes, off: int, ts: float, depth: int):
    flags, proto = struct.unpack_from("!HH", d, off)
    version = flags & 7
    p = off + 4
    if flags & 0xC000:  # checksum or routing present
        p += 4
    if flags & 0x2000:  # key
        p += 4
    seq_present = bool(flags & 0x1000)
    if seq_present:
        p += 4
    if version == 1 and flags & 0x0080:  # PPTP acknowledgment number
        p += 4
    if proto == 0x88BE:  # ERSPAN type II has a sequence number and an 8-byte header; type I neither
        if seq_present:
            p += 8
        return dec._ethernet(d, p, ts, depth)
    if proto == 0x22EB:  # ERSPAN type III: 12-byte header, optional 8-byte platform sub-header
        opt = d[p + 11] & 1
        p += 12 + (8 if opt else 0)
        return dec._ethernet(d, p, ts, depth)
    if proto == 0x880B:  # PPP (PPTP)
        if d[p : p + 2] == b"\xff\x03":
            p += 2
        if d[p] & 1:
            return dec._ppp(d[p], d, p + 1, ts, depth)
        return dec._ppp(_u16(d, p)[0], d, p + 2, ts, depth)
    return dec.ethertype(proto, d, p, ts, depth)


def udp(dec: Decoder, sport: int, dport: int, d: bytes, off: int, end: int, ts: float, depth: int):
    n = end - off
    for port in (dport, sport):
        if port in (4789, 8472) and n >= 22 and d[off] & 0x08:
            return dec._ethernet(d[:end], off + 8, ts, depth)
        if port == 4790 and n >= 9 and d[off] & 0x04:
            nxt = d[off + 3]
            if nxt == 3:
                return dec._ethernet(d[:end], off + 8, ts, depth)
            if nxt in (1, 2):
                return dec.ip(d[:end], off + 8, ts, depth)
        if port == 6081 and n >= 8 and d[off] >> 6 == 0:
            optlen = (d[off] & 0x3F) << 2
            return dec.ethertype(_u16(d, off + 2)[0], d[:end], off + 8 + optlen, ts, depth)
        if port == 4754 and n >= 4:
            return gre(dec, d[:end], off, ts, depth)
        if port == 3544:
            r = _teredo(dec, d[:end], off, end, ts, depth)
            if r is not NOT_A_TUNNEL:
                return r
        if port == 2152 and n >= 8:
            r = _gtpu(dec, d[:end], off, end, ts, depth)
            if r is not NOT_A_TUNNEL:
                return r
        if port == 5072 and n >= 8:
            r = _ayiya(dec, d[:end], off, end, ts, depth)
            if r is not NOT_A_TUNNEL:
                return r
    if n >= 40 and (d[off] >> 4 == 6 or d[off] == 0 and d[off + 1] in (0, 1)):
        # Teredo between a client and a relay uses arbitrary ports: recognise it by shape
        return _teredo(dec, d[:end], off, end, ts, depth, strict=True)
    return NOT_A_TUNNEL


def _teredo(dec: Decoder, d: bytes, p: int, end: int, ts: float, depth: int, strict: bool = False):
    for _ in range(2):
        if p + 2 > end:
            return NOT_A_TUNNEL
        ind = _u16(d, p)[0]
        if ind == 0x0001:  # authentication: id len, auth len, id, auth value, nonce(8), confirmation(1)
            id_len, au_len = d[p + 2], d[p + 3]
            p += 4 + id_len + au_len + 9
        elif ind == 0x0000:  # origin indication
            p += 8
        else:
            break
    if p + 40 <= end and d[p] >> 4 == 6:
        if strict and _u16(d, p + 4)[0] + 40 != end - p:
            return NOT_A_TUNNEL  # not an IPv6 packet that fills the datagram exactly
        return dec.ipv6(d, p, ts, depth)
    return NOT_A_TUNNEL


def _gtpu(dec: Decoder, d: bytes, p: int, end: int, ts: float, depth: int):
    flags, mtype = d[p], d[p + 1]
    if flags >> 5 != 1 or not flags & 0x10:
        return NOT_A_TUNNEL
    if mtype != 0xFF:  # not a G-PDU (echo, error indication, ...)
        return None
    q = p + 8
    if flags & 0x07:
        nxt = d[q + 3]
        q += 4
        while flags & 0x04 and nxt:
            elen = d[q] << 2
            if elen == 0:
                return None
            nxt = d[q + elen - 1]
            q += elen
    if q < end and d[q] >> 4 in (4, 6):
        return dec.ip(d, q, ts, depth)
    return None


def _ayiya(dec: Decoder, d: bytes, p: int, end: int, ts: float, depth: int):
    idlen, siglen, opcode, nxt = d[p] >> 4, d[p + 1] >> 4, d[p + 2] & 0x0F, d[p + 3]
    q = p + 8 + (1 << idlen) + (siglen << 2)
    if opcode != 1 or nxt not in (4, 41) or q >= end:
        return NOT_A_TUNNEL
    return dec.ipv4(d, q, ts, depth) if nxt == 4 else dec.ipv6(d, q, ts, depth)
