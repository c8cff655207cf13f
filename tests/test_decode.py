"""L2-L4 decoding and tunnel removal, fed with frames built by scapy (an independent encoder)
or, where scapy has no layer (NFLOG, AYIYA, Teredo origin indication), byte by byte with struct.

Every case decodes to the same inner TCP segment, so each test states the expected tuple
``(proto, src, dst, sport, dport, seq, ack, flags, payload)`` once and compares all of it.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest
from scapy.contrib.chdlc import CHDLC
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import GRE, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import LLC, SNAP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Dot3, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from sensor.decode import Decoder
from sensor.stats import Stats

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
V4_SRC, V4_DST = "192.0.2.10", "198.51.100.20"
V6_SRC, V6_DST = "2001:db8::10", "2001:db8:1::20"
PAYLOAD = b"GET /inner HTTP/1.1\r\nHost: api.example\r\n\r\n"
SEQ, ACK = 0x01020304, 0xA0B0C0D0
PA = 0x18  # PSH|ACK


def tcp() -> TCP:
    return TCP(sport=40000, dport=8080, seq=SEQ, ack=ACK, flags="PA") / Raw(PAYLOAD)


def inner4() -> IP:
    return IP(src=V4_SRC, dst=V4_DST, id=77) / tcp()


def inner6() -> IPv6:
    return IPv6(src=V6_SRC, dst=V6_DST) / tcp()


def a4(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, s)


def a6(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, s)


EXPECT4 = (6, a4(V4_SRC), a4(V4_DST), 40000, 8080, SEQ, ACK, PA, PAYLOAD)
EXPECT6 = (6, a6(V6_SRC), a6(V6_DST), 40000, 8080, SEQ, ACK, PA, PAYLOAD)

OUTER = {"src": "10.255.0.1", "dst": "10.255.0.2"}


def decode(linktype: int, frame, stats: Stats | None = None):
    stats = stats if stats is not None else Stats()
    return Decoder(stats).decode(1.0, linktype, bytes(frame))


def eth(payload) -> bytes:
    return bytes(Ether(**MAC) / payload)


# ---- link layers ---------------------------------------------------------------------------------


def test_ethernet_ipv4_tcp_every_field():
    stats = Stats()
    assert decode(1, eth(inner4()), stats) == EXPECT4
    assert not stats.anomalies


def test_ethernet_ipv6_tcp():
    assert decode(1, eth(inner6())) == EXPECT6


def test_ethernet_udp_is_returned_with_zero_seq_ack_flags():
    frame = eth(IP(src=V4_SRC, dst=V4_DST) / UDP(sport=5353, dport=53) / Raw(b"query"))
    assert decode(1, frame) == (17, a4(V4_SRC), a4(V4_DST), 5353, 53, 0, 0, 0, b"query")


def test_arp_and_icmp_are_not_followed():
    from scapy.layers.inet import ICMP
    from scapy.layers.l2 import ARP

    stats = Stats()
    assert decode(1, eth(ARP()), stats) is None
    assert decode(1, eth(IP(src=V4_SRC, dst=V4_DST) / ICMP()), stats) is None
    assert not stats.anomalies


def test_vlan_8021q():
    assert decode(1, Ether(**MAC) / Dot1Q(vlan=42) / inner4()) == EXPECT4


def test_qinq_8021ad_outer_8021q_inner():
    frame = Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=42) / inner6()
    assert bytes(frame)[12:14] == b"\x88\xa8"
    assert decode(1, frame) == EXPECT6


def test_mpls_label_stack():
    frame = Ether(**MAC, type=0x8847) / MPLS(label=1000, s=0) / MPLS(label=2000, s=1) / inner4()
    assert decode(1, frame) == EXPECT4


def test_mpls_pseudowire_control_word_then_ethernet():
    cw = b"\x00\x00\x00\x00"
    frame = bytes(Ether(**MAC, type=0x8847) / MPLS(label=16, s=1)) + cw + eth(inner4())
    assert decode(1, frame) == EXPECT4


def test_pppoe_session():
    frame = Ether(**MAC) / PPPoE(sessionid=0x1234) / PPP(proto=0x0021) / inner4()
    assert bytes(frame)[12:14] == b"\x88\x64"
    assert decode(1, frame) == EXPECT4


def test_pppoe_ipv6():
    frame = Ether(**MAC) / PPPoE(sessionid=7) / PPP(proto=0x0057) / inner6()
    assert decode(1, frame) == EXPECT6


def test_linux_sll():
    frame = CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\x00\x00\x00\x00\x01\x00\x00",
                        proto=0x0800) / inner4()
    assert len(bytes(frame)) - len(bytes(inner4())) == 16
    assert decode(113, frame) == EXPECT4


def test_linux_sll2():
    frame = CookedLinuxV2(proto=0x86DD, ifindex=3, lladdrtype=1, lladdrlen=6) / inner6()
    assert len(bytes(frame)) - len(bytes(inner6())) == 20
    assert decode(276, frame) == EXPECT6


@pytest.mark.parametrize("linktype", [101, 228, 12, 14])
def test_raw_ipv4(linktype):
    assert decode(linktype, inner4()) == EXPECT4


@pytest.mark.parametrize("linktype", [101, 229])
def test_raw_ipv6(linktype):
    assert decode(linktype, inner6()) == EXPECT6


def test_bsd_null_host_byte_order():
    assert decode(0, struct.pack("<I", 2) + bytes(inner4())) == EXPECT4
    for fam in (24, 28, 30):  # AF_INET6 on NetBSD/OpenBSD, FreeBSD, macOS
        assert decode(0, struct.pack("<I", fam) + bytes(inner6())) == EXPECT6


def test_bsd_null_big_endian_writer():
    assert decode(0, struct.pack(">I", 2) + bytes(inner4())) == EXPECT4


def test_openbsd_loop_network_byte_order():
    assert decode(108, struct.pack(">I", 2) + bytes(inner4())) == EXPECT4
    assert decode(108, struct.pack(">I", 24) + bytes(inner6())) == EXPECT6


def _nflog(family: int, packet: bytes) -> bytes:
    def tlv(ttype: int, value: bytes) -> bytes:
        raw = struct.pack("<HH", 4 + len(value), ttype) + value
        return raw + b"\x00" * (-len(raw) % 4)

    hdr = struct.pack("!BBH", family, 0, 5)  # family, version, resource id (big-endian)
    return (hdr + tlv(1, b"\x08\x00\x03\x00")  # NFULA_PACKET_HDR: hw protocol, hook
            + tlv(10, b"prefix\x00")  # NFULA_PREFIX (odd length: padded)
            + tlv(9, packet)  # NFULA_PAYLOAD
            + tlv(11, b"\x00\x00\x00\x00"))  # NFULA_UID after the payload


def test_nflog_ipv4_and_ipv6():
    assert decode(239, _nflog(2, bytes(inner4()))) == EXPECT4
    assert decode(239, _nflog(10, bytes(inner6()))) == EXPECT6


def test_nflog_without_payload_tlv():
    stats = Stats()
    hdr = struct.pack("!BBH", 2, 0, 0) + struct.pack("<HH", 8, 1) + b"\x08\x00\x03\x00"
    assert decode(239, hdr, stats) is None


def test_cisco_hdlc():
    frame = CHDLC(address=0x0F, control=0, proto=0x0800) / inner4()
    assert bytes(frame)[:4] == b"\x0f\x00\x08\x00"
    assert decode(104, frame) == EXPECT4


def test_ppp_linktype_with_hdlc_framing():
    assert decode(9, b"\xff\x03\x00\x21" + bytes(inner4())) == EXPECT4
    assert decode(50, b"\xff\x03\x00\x57" + bytes(inner6())) == EXPECT6


def test_llc_snap_8023_frame():
    frame = Dot3(**MAC) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0, code=0x0800) / inner4()
    assert bytes(frame)[14:17] == b"\xaa\xaa\x03"
    assert decode(1, frame) == EXPECT4


def test_8023_frame_without_snap_is_ignored():
    stats = Stats()
    frame = Dot3(**MAC) / LLC(dsap=0x42, ssap=0x42, ctrl=3) / Raw(b"\x00" * 40)  # spanning tree
    assert decode(1, frame, stats) is None
    assert not stats.anomalies


# ---- IP ------------------------------------------------------------------------------------------


def test_ipv4_options_are_skipped():
    pkt = IP(src=V4_SRC, dst=V4_DST, options=[b"\x01\x01\x01\x00"]) / tcp()
    assert bytes(pkt)[0] == 0x46
    assert decode(101, pkt) == EXPECT4


def test_tcp_options_are_skipped():
    seg = TCP(sport=40000, dport=8080, seq=SEQ, ack=ACK, flags="PA",
              options=[("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""),
                       ("Timestamp", (1, 2))]) / Raw(PAYLOAD)
    assert decode(101, IP(src=V4_SRC, dst=V4_DST) / seg) == EXPECT4


def test_ipv6_extension_headers():
    pkt = (IPv6(src=V6_SRC, dst=V6_DST) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
           / IPv6ExtHdrRouting(addresses=["2001:db8::99"]) / IPv6ExtHdrDestOpt() / tcp())
    assert decode(1, eth(pkt)) == EXPECT6


def test_ethernet_padding_not_in_tcp_payload():
    pkt = IP(src=V4_SRC, dst=V4_DST) / TCP(sport=1, dport=80, seq=9, ack=0, flags="PA") / Raw(b"ab")
    frame = eth(pkt) + b"\x00" * 4 + b"PADDING!"  # short frame padded to the minimum, plus FCS junk
    seg = decode(1, frame)
    assert seg[8] == b"ab"
    assert seg[3:6] == (1, 80, 9)


def test_ipv6_payload_length_honoured():
    pkt = IPv6(src=V6_SRC, dst=V6_DST) / TCP(sport=1, dport=80, flags="PA") / Raw(b"xyz")
    assert decode(1, eth(pkt) + b"\xee" * 20)[8] == b"xyz"


def test_ip_total_length_beyond_capture_is_cut_and_counted():
    stats = Stats()
    frame = eth(inner4())[:-10]  # snaplen cut the end of the payload
    seg = decode(1, frame, stats)
    assert seg[8] == PAYLOAD[:-10]
    assert stats.anomalies["decode.ip_truncated"] == 1


def test_ipv4_fragments_in_order():
    stats = Stats()
    dec = Decoder(stats)
    frags = fragment(inner4(), fragsize=16)
    assert len(frags) == 4
    results = [dec.decode(1.0 + i, 1, eth(f)) for i, f in enumerate(frags)]
    assert results[:-1] == [None] * 3
    assert results[-1] == EXPECT4
    assert not dec.defrag.pending
    assert not stats.anomalies


def test_ipv4_fragments_out_of_order_with_duplicate():
    dec = Decoder(Stats())
    frags = fragment(inner4(), fragsize=16)
    order = [frags[3], frags[2], frags[0], frags[2], frags[1]]
    results = [dec.decode(1.0, 1, eth(f)) for f in order]
    assert results[:-1] == [None] * 4
    assert results[-1] == EXPECT4


def test_ipv4_fragments_of_two_datagrams_interleaved():
    dec = Decoder(Stats())
    p1 = IP(src=V4_SRC, dst=V4_DST, id=1) / tcp()
    p2 = IP(src=V4_SRC, dst=V4_DST, id=2) / TCP(sport=1, dport=2, seq=5, flags="PA") / Raw(b"Z" * 40)
    f1, f2 = fragment(p1, fragsize=24), fragment(p2, fragsize=24)
    out = [dec.decode(1.0, 101, bytes(f)) for pair in zip(f1, f2) for f in pair]
    out += [dec.decode(1.0, 101, bytes(f)) for f in f1[len(f2):] + f2[len(f1):]]
    done = [r for r in out if r is not None]
    assert EXPECT4 in done
    assert (6, a4(V4_SRC), a4(V4_DST), 1, 2, 5, 0, PA, b"Z" * 40) in done
    assert len(done) == 2


def _frag6(pkt: IPv6, size: int, ident: int = 0xBEEF) -> list[bytes]:
    """IPv6 fragments built by hand: scapy's fragment6 needs a fragment header already present."""
    unfrag = bytes(pkt)
    payload = unfrag[40:]
    out = []
    for off in range(0, len(payload), size):
        piece = payload[off: off + size]
        more = off + size < len(payload)
        fh = bytes(IPv6ExtHdrFragment(nh=6, offset=off // 8, m=int(more), id=ident))
        hdr = bytes(IPv6(src=pkt.src, dst=pkt.dst, nh=44, plen=len(fh) + len(piece)))
        out.append(hdr + fh + piece)
    return out


def test_ipv6_fragments_in_and_out_of_order():
    frags = _frag6(inner6(), 16)
    assert len(frags) == 4
    dec = Decoder(Stats())
    assert [dec.decode(1.0, 229, f) for f in frags] == [None, None, None, EXPECT6]
    dec = Decoder(Stats())
    assert [dec.decode(1.0, 229, f) for f in (frags[3], frags[1], frags[0], frags[1], frags[2])] == [
        None, None, None, None, EXPECT6]


def _v4frag(offset: int, data: bytes, more: bool) -> bytes:
    return bytes(IP(src=V4_SRC, dst=V4_DST, id=9, proto=6, frag=offset // 8, flags="MF" if more else 0)
                 / Raw(data))


SEG = bytes(TCP(sport=1, dport=80, seq=1, flags="PA") / Raw(b"AAAAAAAAAAAAxxxxxxxx"))  # 40 bytes


def test_ipv4_fragment_overlap_same_offset_first_bytes_win():
    dec = Decoder(Stats())
    assert dec.decode(1.0, 101, _v4frag(0, SEG[:24], True)) is None  # header + "AAAA"
    assert dec.decode(1.0, 101, _v4frag(0, SEG[:20] + b"B" * 12, True)) is None  # rewrites "AAAA"
    seg = dec.decode(1.0, 101, _v4frag(32, SEG[32:], False))
    assert seg[8] == b"AAAA" + b"B" * 8 + b"xxxxxxxx"


def test_ipv4_fragment_overlap_lower_offset_later_does_not_overwrite():
    dec = Decoder(Stats())
    assert dec.decode(1.0, 101, _v4frag(24, b"C" * 8, True)) is None  # first: bytes 24..32
    assert dec.decode(1.0, 101, _v4frag(16, SEG[16:20] + b"D" * 12, True)) is None  # 16..32 later
    assert dec.decode(1.0, 101, _v4frag(0, SEG[:16], True)) is None
    seg = dec.decode(1.0, 101, _v4frag(32, SEG[32:], False))
    assert seg[8] == b"DDDD" + b"C" * 8 + b"xxxxxxxx"


def test_ipv4_fragments_identical_overlap_reassembles():
    dec = Decoder(Stats())
    assert dec.decode(1.0, 101, _v4frag(0, SEG[:24], True)) is None
    assert dec.decode(1.0, 101, _v4frag(16, SEG[16:32], True)) is None
    seg = dec.decode(1.0, 101, _v4frag(24, SEG[24:], False))
    assert seg[8] == b"AAAAAAAAAAAAxxxxxxxx"


def test_fragment_table_is_bounded():
    from sensor.limits import Limits

    stats = Stats()
    dec = Decoder(stats, Limits(max_fragments=50))
    for ident in range(500):
        pkt = IP(src=V4_SRC, dst=V4_DST, id=ident, proto=6, flags="MF") / Raw(SEG[:16])
        assert dec.decode(1.0, 101, bytes(pkt)) is None
        assert len(dec.defrag.pending) <= 50
    assert stats.anomalies["ip.fragments_expired"] >= 450


def test_fragments_expire_after_timeout():
    stats = Stats()
    dec = Decoder(stats)
    dec.decode(1.0, 101, _v4frag(0, SEG[:24], True))
    dec.defrag.sweep(1000.0)
    assert not dec.defrag.pending
    assert stats.anomalies["ip.fragments_expired"] == 1
    assert dec.decode(1001.0, 101, _v4frag(24, SEG[24:], False)) is None  # the head is gone


def test_ipv6_atomic_fragment_is_decoded_at_once():
    pkt = IPv6(src=V6_SRC, dst=V6_DST) / IPv6ExtHdrFragment(offset=0, m=0, id=5) / tcp()
    assert decode(229, pkt) == EXPECT6


# ---- tunnels -------------------------------------------------------------------------------------


def test_vxlan():
    frame = eth(IP(**OUTER) / UDP(sport=51000, dport=4789) / VXLAN(vni=4242, flags=0x08)
                / Ether(**MAC) / inner4())
    assert decode(1, frame) == EXPECT4


def test_vxlan_linux_port_8472():
    frame = eth(IP(**OUTER) / UDP(sport=51000, dport=8472) / VXLAN(vni=1) / Ether(**MAC) / inner6())
    assert decode(1, frame) == EXPECT6


def test_geneve_with_options():
    gen = GENEVE(proto=0x6558, vni=99, options=[GeneveOptions(classid=0x0102, type=1, data=b"abcdefgh")])
    frame = eth(IP(**OUTER) / UDP(sport=1234, dport=6081) / gen / Ether(**MAC) / inner4())
    raw = bytes(gen)
    assert raw[0] & 0x3F == 3  # 12 bytes of options
    assert decode(1, frame) == EXPECT4


def test_geneve_carrying_ip_directly():
    gen = GENEVE(proto=0x0800, vni=1)
    assert decode(1, eth(IP(**OUTER) / UDP(sport=1, dport=6081) / gen / inner4())) == EXPECT4


def test_gre_plain():
    frame = eth(IP(**OUTER) / GRE(proto=0x0800) / inner4())
    assert decode(1, frame) == EXPECT4


def test_gre_with_key_and_sequence():
    gre = GRE(key_present=1, seqnum_present=1, key=0xCAFE, sequence_number=12, proto=0x86DD)
    assert len(bytes(gre)) == 12
    assert decode(1, eth(IP(**OUTER) / gre / inner6())) == EXPECT6


def test_gre_with_checksum():
    gre = GRE(chksum_present=1, proto=0x0800)
    assert decode(1, eth(IP(**OUTER) / gre / inner4())) == EXPECT4


def test_gre_transparent_ethernet_bridging():
    assert decode(1, eth(IP(**OUTER) / GRE(proto=0x6558) / Ether(**MAC) / inner4())) == EXPECT4


def test_erspan_type_ii():
    gre = GRE(seqnum_present=1, sequence_number=3, proto=0x88BE)
    frame = eth(IP(**OUTER) / gre / ERSPAN_II(session_id=9, index=1) / Ether(**MAC) / inner4())
    assert decode(1, frame) == EXPECT4


def test_erspan_type_iii():
    gre = GRE(seqnum_present=1, sequence_number=3, proto=0x22EB)
    frame = eth(IP(**OUTER) / gre / ERSPAN_III(session_id=9, o=0) / Ether(**MAC) / inner6())
    assert decode(1, frame) == EXPECT6


def test_erspan_type_i_has_no_header():
    frame = eth(IP(**OUTER) / GRE(proto=0x88BE) / Ether(**MAC) / inner4())
    assert decode(1, frame) == EXPECT4


def test_gre_in_udp_4754():
    frame = eth(IP(**OUTER) / UDP(sport=1, dport=4754) / GRE(proto=0x0800) / inner4())
    assert decode(1, frame) == EXPECT4


def test_ip_in_ip():
    assert decode(1, eth(IP(**OUTER, proto=4) / inner4())) == EXPECT4


def test_ipv6_in_ipv4_6in4():
    assert decode(1, eth(IP(**OUTER, proto=41) / inner6())) == EXPECT6


def test_ipv4_in_ipv6():
    assert decode(1, eth(IPv6(src="fd00::1", dst="fd00::2", nh=4) / inner4())) == EXPECT4


def test_teredo_plain():
    frame = eth(IP(**OUTER) / UDP(sport=3544, dport=40001) / inner6())
    assert decode(1, frame) == EXPECT6


def test_teredo_with_origin_indication():
    origin = b"\x00\x00" + struct.pack("!H", 0xFFFF ^ 40001) + bytes(a ^ 0xFF for a in a4("203.0.113.5"))
    frame = eth(IP(**OUTER) / UDP(sport=40001, dport=3544) / Raw(origin + bytes(inner6())))
    assert decode(1, frame) == EXPECT6


def test_teredo_on_other_ports_recognised_by_shape():
    frame = eth(IP(**OUTER) / UDP(sport=40001, dport=40002) / inner6())
    assert decode(1, frame) == EXPECT6


def test_gtp_u():
    frame = eth(IP(**OUTER) / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=0x1111) / inner4())
    assert decode(1, frame) == EXPECT4


def test_gtp_u_with_extension_header():
    gtp = GTP_U_Header(teid=7, E=1, next_ex=0x85) / GTPPDUSessionContainer(QFI=9)
    frame = eth(IP(**OUTER) / UDP(sport=2152, dport=2152) / gtp / inner6())
    assert decode(1, frame) == EXPECT6


def test_gtp_u_echo_request_is_not_data():
    frame = eth(IP(**OUTER) / UDP(sport=2152, dport=2152) / GTP_U_Header(gtp_type=1, seq=1, S=1))
    assert decode(1, frame) is None


def _ayiya(next_header: int, packet: bytes) -> bytes:
    # idlen=4 (16-byte identity), idtype=1; siglen=5 words (SHA-1), hash=2; auth=2, opcode=1 (forward)
    hdr = bytes([0x41, 0x52, 0x21, next_header]) + struct.pack("!I", 1_700_000_000)
    return hdr + a6("2001:db8::1") + b"\x5a" * 20 + packet


def test_ayiya_ipv6_and_ipv4():
    frame = eth(IP(**OUTER) / UDP(sport=5072, dport=5072) / Raw(_ayiya(41, bytes(inner6()))))
    assert decode(1, frame) == EXPECT6
    frame = eth(IP(**OUTER) / UDP(sport=5072, dport=5072) / Raw(_ayiya(4, bytes(inner4()))))
    assert decode(1, frame) == EXPECT4


def test_tunnels_nested_vlan_vxlan_gre():
    inner = IP(src="10.9.9.1", dst="10.9.9.2") / GRE(proto=0x0800) / inner4()
    frame = (Ether(**MAC) / Dot1Q(vlan=5) / IP(**OUTER) / UDP(sport=9, dport=4789) / VXLAN(vni=1)
             / Ether(**MAC) / inner)
    assert decode(1, frame) == EXPECT4


def test_encapsulation_loop_is_bounded():
    stats = Stats()
    pkt = inner4()
    for _ in range(40):
        pkt = IP(**OUTER, proto=4) / pkt
    assert decode(101, pkt, stats) is None
    assert stats.anomalies["decode.too_deep"] == 1


# ---- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 5, 13, 20, 33, 40])
def test_truncated_frames_return_none_and_count(cut):
    stats = Stats()
    frame = eth(inner4())[:cut]
    assert decode(1, frame, stats) is None
    assert stats.anomalies["decode.malformed"] == 1
    assert set(stats.anomalies) <= {"decode.malformed", "decode.ip_truncated"}


def test_truncated_tcp_header():
    stats = Stats()
    frame = eth(inner4())[: 14 + 20 + 12]
    assert decode(1, frame, stats) is None
    assert stats.anomalies["decode.malformed"] == 1


def test_bad_tcp_data_offset():
    stats = Stats()
    raw = bytearray(bytes(inner4()))
    raw[20 + 12] = 0x30  # data offset 3 words < 5
    assert decode(101, bytes(raw), stats) is None
    assert stats.anomalies["decode.bad_tcp_header"] == 1


def test_bad_ipv4_ihl():
    stats = Stats()
    raw = bytearray(bytes(inner4()))
    raw[0] = 0x44
    assert decode(101, bytes(raw), stats) is None
    assert stats.anomalies["decode.bad_ipv4_header"] == 1


def test_raw_ip_bad_version():
    stats = Stats()
    assert decode(101, b"\x50" + bytes(39), stats) is None
    assert stats.anomalies["decode.bad_ip_version"] == 1


def test_unsupported_linktype():
    stats = Stats()
    assert decode(147, eth(inner4()), stats) is None
    assert stats.anomalies["decode.unsupported_linktype"] == 1


def test_empty_frame_every_linktype():
    from sensor.decode import SUPPORTED_LINKTYPES

    for lt in SUPPORTED_LINKTYPES:
        stats = Stats()
        assert decode(lt, b"", stats) is None, lt
        assert sum(stats.anomalies.values()) == 1, lt


def test_truncated_tunnels_never_raise():
    frames = [
        eth(IP(**OUTER) / UDP(sport=51000, dport=4789) / VXLAN(vni=1) / Ether(**MAC) / inner4()),
        eth(IP(**OUTER) / GRE(seqnum_present=1, proto=0x88BE) / ERSPAN_II() / Ether(**MAC) / inner4()),
        eth(IP(**OUTER) / UDP(sport=2152, dport=2152) / GTP_U_Header(teid=1, E=1, next_ex=0x85)
            / GTPPDUSessionContainer() / inner4()),
        eth(IP(**OUTER) / UDP(sport=5072, dport=5072) / Raw(_ayiya(41, bytes(inner6())))),
        _nflog(2, bytes(inner4())),
    ]
    for i, frame in enumerate(frames):
        lt = 239 if i == 4 else 1
        for cut in range(len(frame)):
            Decoder(Stats()).decode(1.0, lt, frame[:cut])  # must not raise


def test_random_garbage_never_raises():
    from sensor.decode import SUPPORTED_LINKTYPES

    rng = random.Random(1234)
    stats = Stats()
    dec = Decoder(stats)
    base = eth(inner4())
    for _ in range(3000):
        lt = rng.choice(sorted(SUPPORTED_LINKTYPES))
        if rng.random() < 0.5:
            frame = bytes(rng.getrandbits(8) for _ in range(rng.randrange(80)))
        else:  # a valid frame with a few bytes flipped
            raw = bytearray(base)
            for _ in range(rng.randrange(1, 6)):
                raw[rng.randrange(len(raw))] = rng.getrandbits(8)
            frame = bytes(raw)
        seg = dec.decode(1.0, lt, frame)
        assert seg is None or seg[0] in (6, 17)
    assert sum(stats.anomalies.values()) > 0
