"""L2-L4 decoding: link layers, VLAN/MPLS/PPPoE, IPv4/IPv6 (+fragments), TCP and UDP.

:meth:`Decoder.decode` turns one captured frame into a small tuple, or None when the frame
carries nothing we follow (ARP, ICMP, ...) or is malformed (counted in ``stats``)::

    (proto, src, dst, sport, dport, seq, ack, flags, payload)

``proto`` is 6 (TCP) or 17 (UDP; seq/ack/flags are 0), ``src``/``dst`` the packed addresses
(4 or 16 bytes).  Encapsulations used by traffic mirroring are removed on the way
(``tunnels.py``): the tuple always describes the innermost TCP/UDP packet.

Checksums are never verified (offloading makes them wrong in most captures).  The IP total
length is honoured, so Ethernet padding never leaks into TCP payloads.  Work per packet is a
handful of ``struct.unpack_from`` calls and one payload slice; nothing else is allocated.
"""

from __future__ import annotations

import struct

from . import tunnels
from .ipfrag import Defragmenter
from .limits import Limits
from .stats import Stats

Segment = tuple  # (proto, src, dst, sport, dport, seq, ack, flags, payload)

ETH_IPV4, ETH_IPV6 = 0x0800, 0x86DD
_VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
_MAX_DEPTH = 8

_u16 = struct.Struct("!H").unpack_from
_u32le = struct.Struct("<I").unpack_from
_u32be = struct.Struct("!I").unpack_from
_tcp_hdr = struct.Struct("!HHIIH").unpack_from
_ports = struct.Struct("!HH8xB").unpack_from  # source and destination port, data offset byte
_udp_hdr = struct.Struct("!HHH").unpack_from
_eth_ip4 = struct.Struct("!12xHBxH2xHxB2x4s4s").unpack_from

# LINKTYPE_* numbers (tcpdump.org/linktypes.html)
LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_PPP, LINKTYPE_RAW = 0, 1, 9, 101
LINKTYPE_PPP_HDLC, LINKTYPE_C_HDLC, LINKTYPE_LOOP, LINKTYPE_SLL = 50, 104, 108, 113
LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_NFLOG, LINKTYPE_SLL2 = 228, 229, 239, 276
SUPPORTED_LINKTYPES = {
    LINKTYPE_NULL: "BSD loopback",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_PPP: "PPP",
    LINKTYPE_RAW: "raw IP",
    12: "raw IP",
    14: "raw IP",
    LINKTYPE_PPP_HDLC: "PPP in HDLC framing",
    LINKTYPE_C_HDLC: "Cisco HDLC",
    LINKTYPE_LOOP: "OpenBSD loopback",
    LINKTYPE_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_NFLOG: "Linux NFLOG",
    LINKTYPE_SLL2: "Linux cooked v2 (SLL2)",
}


class Decoder:
    """Stateful only for IP fragment reassembly; everything else is a pure function of the frame."""

    def __init__(self, stats: Stats, limits: Limits | None = None):
        limits = limits or Limits()
        self.stats = stats
        self.defrag = Defragmenter(stats, limits.max_fragments, limits.fragment_timeout,
                                   limits.max_fragment_bytes)
        self._link = {
            LINKTYPE_ETHERNET: self._ethernet,
            LINKTYPE_NULL: self._null,
            LINKTYPE_LOOP: self._null,
            LINKTYPE_RAW: self._raw,
            12: self._raw,
            14: self._raw,
            LINKTYPE_IPV4: self._raw,
            LINKTYPE_IPV6: self._raw,
            LINKTYPE_SLL: self._sll,
            LINKTYPE_SLL2: self._sll2,
            LINKTYPE_NFLOG: self._nflog,
            LINKTYPE_C_HDLC: self._chdlc,
            LINKTYPE_PPP: self._ppp_link,
            LINKTYPE_PPP_HDLC: self._ppp_link,
        }

    def decode(self, ts: float, linktype: int, data: bytes) -> Segment | None:
        if linktype == 1 and len(data) >= 54:
            # fast path: Ethernet / IPv4 without options or fragmentation / TCP
            etype, vihl, total, frag, proto, src, dst = _eth_ip4(data, 0)
            if etype == 0x0800 and vihl == 0x45 and proto == 6 and not frag & 0x3FFF and total >= 40:
                sport, dport, seq, ack, offflags = _tcp_hdr(data, 34)
                doff = (offflags >> 12) << 2
                end = 14 + total
                if doff >= 20 and 34 + doff <= end <= len(data):
                    return (6, src, dst, sport, dport, seq, ack, offflags & 0xFF, data[34 + doff : end])
        fn = self._link.get(linktype)
        if fn is None:
            self.stats.anomaly("decode.unsupported_linktype")
            return None
        try:
            return fn(data, 0, ts, 0)
        except (struct.error, IndexError, ValueError):
            self.stats.anomaly("decode.malformed")
            return None

    # ---- link layers -------------------------------------------------------------------------
    def _ethernet(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        etype = _u16(d, off + 12)[0]
        off += 14
        if etype <= 1500:  # 802.3 length: LLC/SNAP
            if d[off : off + 3] == b"\xaa\xaa\x03":
                etype = _u16(d, off + 6)[0]
                off += 8
            else:
                return None
        return self.ethertype(etype, d, off, ts, depth)

    def ethertype(self, etype: int, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        while etype in _VLAN_TYPES:
            etype = _u16(d, off + 2)[0]
            off += 4
        if etype == ETH_IPV4:
            return self.ipv4(d, off, ts, depth)
        if etype == ETH_IPV6:
            return self.ipv6(d, off, ts, depth)
        if depth >= _MAX_DEPTH:
            self.stats.anomaly("decode.too_deep")
            return None
        if etype == 0x8847 or etype == 0x8848:
            return self._mpls(d, off, ts, depth + 1)
        if etype == 0x8864:  # PPPoE session: 6-byte header, then the PPP protocol field
            return self._ppp_link(d, off + 6, ts, depth + 1)
        if etype == 0x6558:  # transparent Ethernet bridging
            return self._ethernet(d, off, ts, depth + 1)
        return None  # ARP, LLDP, ...: not ours

    def _null(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        fam = _u32le(d, off)[0]
        if fam > 0xFFFF:
            fam = _u32be(d, off)[0]
        if fam == 2:
            return self.ipv4(d, off + 4, ts, depth)
        if fam in (24, 28, 30, 10):
            return self.ipv6(d, off + 4, ts, depth)
        return None

    def _raw(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        return self.ip(d, off, ts, depth)

    def ip(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        v = d[off] >> 4
        if v == 4:
            return self.ipv4(d, off, ts, depth)
        if v == 6:
            return self.ipv6(d, off, ts, depth)
        self.stats.anomaly("decode.bad_ip_version")
        return None

    def _sll(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        return self._sll_proto(_u16(d, off + 14)[0], d, off + 16, ts, depth)

    def _sll2(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        return self._sll_proto(_u16(d, off)[0], d, off + 20, ts, depth)

    def _sll_proto(self, proto: int, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        if proto == 0x0004:  # 802.2 LLC frame
            if d[off : off + 3] == b"\xaa\xaa\x03":
                return self.ethertype(_u16(d, off + 6)[0], d, off + 8, ts, depth)
            return None
        return self.ethertype(proto, d, off, ts, depth)

    def _nflog(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        family = d[off]
        p = off + 4
        n = len(d)
        while p + 4 <= n:
            tlen, ttype = struct.unpack_from("<HH", d, p)
            if tlen < 4:
                break
            if ttype == 9:  # NFULA_PAYLOAD
                end = p + tlen
                inner = d[p + 4 : end]
                if family == 10:
                    return self.ipv6(inner, 0, ts, depth)
                return self.ip(inner, 0, ts, depth)
            p += (tlen + 3) & ~3
        return None

    def _chdlc(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        return self.ethertype(_u16(d, off + 2)[0], d, off + 4, ts, depth)

    def _ppp_link(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        if d[off : off + 2] == b"\xff\x03":
            off += 2
        if d[off] & 1:  # protocol field compression: one byte
            return self._ppp(d[off], d, off + 1, ts, depth)
        return self._ppp(_u16(d, off)[0], d, off + 2, ts, depth)

    def _ppp(self, proto: int, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        if proto == 0x0021:
            return self.ipv4(d, off, ts, depth)
        if proto == 0x0057:
            return self.ipv6(d, off, ts, depth)
        return None

    def _mpls(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        for _ in range(16):
            bottom = d[off + 2] & 1
            off += 4
            if bottom:
                break
        v = d[off] >> 4
        if v == 4:
            return self.ipv4(d, off, ts, depth)
        if v == 6:
            return self.ipv6(d, off, ts, depth)
        if v == 0:  # pseudowire control word, then Ethernet
            return self._ethernet(d, off + 4, ts, depth)
        return None

    # ---- IP ----------------------------------------------------------------------------------
    def ipv4(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        b0 = d[off]
        ihl = (b0 & 15) << 2
        if b0 >> 4 != 4 or ihl < 20:
            self.stats.anomaly("decode.bad_ipv4_header")
            return None
        total = _u16(d, off + 2)[0]
        n = len(d)
        end = off + total
        if total < ihl:
            if total != 0:  # 0: TSO/LRO capture, length unknown
                self.stats.anomaly("decode.bad_ipv4_length")
            end = n
        elif end > n:
            self.stats.anomaly("decode.ip_truncated")
            end = n
        proto = d[off + 9]
        src = d[off + 12 : off + 16]
        dst = d[off + 16 : off + 20]
        frag = _u16(d, off + 6)[0]
        if frag & 0x3FFF:  # MF set or offset > 0
            key = (src, dst, _u16(d, off + 4)[0], proto)
            whole = self.defrag.add(key, (frag & 0x1FFF) << 3, bool(frag & 0x2000), d[off + ihl : end], ts)
            if whole is None:
                return None
            return self.l4(proto, whole, 0, len(whole), src, dst, ts, depth)
        if proto == 6:  # fast path
            return self.tcp(d, off + ihl, end, src, dst)
        return self.l4(proto, d, off + ihl, end, src, dst, ts, depth)

    def ipv6(self, d: bytes, off: int, ts: float, depth: int) -> Segment | None:
        if d[off] >> 4 != 6:
            self.stats.anomaly("decode.bad_ipv6_header")
            return None
        plen = _u16(d, off + 4)[0]
        nh = d[off + 6]
        src = d[off + 8 : off + 24]
        dst = d[off + 24 : off + 40]
        p = off + 40
        n = len(d)
        end = p + plen if plen else n
        if end > n:
            self.stats.anomaly("decode.ip_truncated")
            end = n
        for _ in range(16):
            if nh in (0, 43, 60, 135, 139, 140):
                nh, hlen = d[p], (d[p + 1] + 1) << 3
                p += hlen
            elif nh == 51:  # AH
                nh, hlen = d[p], (d[p + 1] + 2) << 2
                p += hlen
            elif nh == 44:  # fragment
                fo = _u16(d, p + 2)[0]
                ident = _u32be(d, p + 4)[0]
                nxt = d[p]
                p += 8
                if fo & 0xFFF9:
                    whole = self.defrag.add(
                        (src, dst, ident, nxt), fo & 0xFFF8, bool(fo & 1), d[p:end], ts
                    )
                    if whole is None:
                        return None
                    return self.l4(nxt, whole, 0, len(whole), src, dst, ts, depth)
                nh = nxt
            else:
                break
        if p > end:
            self.stats.anomaly("decode.bad_ipv6_header")
            return None
        if nh == 6:
            return self.tcp(d, p, end, src, dst)
        return self.l4(nh, d, p, end, src, dst, ts, depth)

    def l4(self, proto: int, d: bytes, off: int, end: int, src: bytes, dst: bytes, ts: float, depth: int):
        if proto == 6:
            return self.tcp(d, off, end, src, dst)
        if proto == 17:
            sport, dport, ulen = _udp_hdr(d, off)
            if ulen >= 8 and off + ulen < end:
                end = off + ulen
            if depth < _MAX_DEPTH:
                inner = tunnels.udp(self, sport, dport, d, off + 8, end, ts, depth + 1)
                if inner is not tunnels.NOT_A_TUNNEL:
                    return inner
            return (17, src, dst, sport, dport, 0, 0, 0, d[off + 8 : end])
        if depth >= _MAX_DEPTH:
            self.stats.anomaly("decode.too_deep")
            return None
        if proto == 4:  # IPv4 in IP
            return self.ipv4(d[:end], off, ts, depth + 1)
        if proto == 41:  # IPv6 in IP (6in4)
            return self.ipv6(d[:end], off, ts, depth + 1)
        if proto == 47:
            return tunnels.gre(self, d[:end], off, ts, depth + 1)
        return None

    def tcp(self, d: bytes, off: int, end: int, src: bytes, dst: bytes) -> Segment | None:
        sport, dport, seq, ack, offflags = _tcp_hdr(d, off)
        doff = (offflags >> 12) << 2
        if doff < 20 or off + doff > end:
            self.stats.anomaly("decode.bad_tcp_header")
            return None
        return (6, src, dst, sport, dport, seq, ack, offflags & 0xFF, d[off + doff : end])
