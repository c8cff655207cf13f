"""TCP reassembly (sans-I/O): segments in, the handler's data/gap/fin/end calls out.

Segments are the decoder's tuples ``(6, src, dst, sport, dport, seq, ack, flags, payload)``;
a recording handler keeps every call so each test states the exact sequence it expects.
"""

from __future__ import annotations

from sensor.limits import Limits
from sensor.stats import Stats
from sensor.tcp import ACK, FIN, RST, SYN, FlowTable

C = (b"\x0a\x00\x00\x01", 40000)
S = (b"\x0a\x00\x00\x02", 80)
PSH = 0x08
CISN, SISN = 1000, 5000


class Recorder:
    """A StreamHandler that writes down what it is told."""

    def __init__(self, flow):
        self.flow = flow
        self.events: list[tuple] = []

    def data(self, d, payload, ts):
        self.events.append(("data", d, bytes(payload)))

    def gap(self, d, n, ts):
        self.events.append(("gap", d, n))

    def fin(self, d, ts):
        self.events.append(("fin", d))

    def end(self, ts, reason):
        self.events.append(("end", reason))

    def stream(self, d: int) -> bytes:
        return b"".join(e[2] for e in self.events if e[0] == "data" and e[1] == d)


class Net:
    """A flow table with a recorder per flow, and helpers to send segments either way."""

    def __init__(self, limits: Limits | None = None):
        self.stats = Stats()
        self.handlers: list[Recorder] = []
        self.table = FlowTable(limits or Limits(), self.stats, self._new)
        self.ts = 1.0

    def _new(self, flow):
        h = Recorder(flow)
        self.handlers.append(h)
        return h

    def send(self, frm, to, seq, ack=0, flags=ACK, payload=b"", ts=None):
        if ts is not None:
            self.ts = ts
        self.table.segment(self.ts, (6, frm[0], to[0], frm[1], to[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                     flags, payload))

    def c(self, seq, payload=b"", flags=ACK | PSH, ack=None, ts=None):
        """Client -> server; seq relative to the client's ISN."""
        self.send(C, S, CISN + seq, SISN + 1 if ack is None else SISN + ack, flags, payload, ts)

    def s(self, seq, payload=b"", flags=ACK | PSH, ack=None, ts=None):
        self.send(S, C, SISN + seq, CISN + 1 if ack is None else CISN + ack, flags, payload, ts)

    def handshake(self):
        self.send(C, S, CISN, 0, SYN)
        self.send(S, C, SISN, CISN + 1, SYN | ACK)
        self.send(C, S, CISN + 1, SISN + 1, ACK)

    @property
    def h(self) -> Recorder:
        assert len(self.handlers) == 1, len(self.handlers)
        return self.handlers[0]


def test_in_order_both_directions_and_fin():
    n = Net()
    n.handshake()
    n.c(1, b"GET / HTTP/1.1\r\n")
    n.c(17, b"\r\n")
    n.s(1, b"HTTP/1.1 200 OK\r\n\r\n", ack=19)
    n.c(19, flags=FIN | ACK, ack=20)
    n.s(20, flags=FIN | ACK, ack=20)
    assert n.h.flow.client_dir == 0
    assert n.h.events == [
        ("data", 0, b"GET / HTTP/1.1\r\n"),
        ("data", 0, b"\r\n"),
        ("data", 1, b"HTTP/1.1 200 OK\r\n\r\n"),
        ("fin", 0),
        ("fin", 1),
        ("end", "fin"),
    ]
    assert not n.stats.anomalies
    assert n.stats.flows == 1


def test_out_of_order_is_delivered_in_order():
    n = Net()
    n.handshake()
    n.c(5, b"BBBB")
    n.c(9, b"CCCC")
    assert n.h.events == []
    n.c(1, b"AAAA")
    assert n.h.events == [("data", 0, b"AAAA"), ("data", 0, b"BBBB"), ("data", 0, b"CCCC")]
    assert n.stats.anomalies["tcp.out_of_order"] == 2
    assert n.table.flows[(C[0], C[1], S[0], S[1])].halves[0].ooo_bytes == 0


def test_retransmission_delivered_once():
    n = Net()
    n.handshake()
    n.c(1, b"hello")
    n.c(1, b"hello")
    n.c(6, b" world")
    n.c(1, b"hello")
    assert n.h.stream(0) == b"hello world"
    assert n.stats.anomalies["tcp.retransmission"] == 2


def test_overlap_first_bytes_win():
    n = Net()
    n.handshake()
    n.c(1, b"AAAA")
    n.c(1, b"XXXXBBBB")  # re-sends 1..4 with other content, then new bytes
    n.c(3, b"YYYYYYCC")  # overlaps 3..8, then new bytes
    assert n.h.stream(0) == b"AAAABBBBCC"
    assert n.stats.anomalies["tcp.overlap"] == 2


def test_overlapping_out_of_order_segments_drain_without_duplication():
    n = Net()
    n.handshake()
    n.c(9, b"CCCCDDDD")
    n.c(5, b"BBBBCCCC")
    n.c(1, b"AAAA")
    assert n.h.stream(0) == b"AAAABBBBCCCCDDDD"


def test_overlap_with_buffered_out_of_order_first_bytes_win():
    n = Net()
    n.handshake()
    n.c(9, b"CCCC")  # seen first
    n.c(1, b"AAAA")
    n.c(5, b"BBBBZZZZ")  # in order now, but 9..12 were already seen as "CCCC"
    assert n.h.stream(0) == b"AAAABBBBCCCC"


def test_out_of_order_same_seq_first_bytes_win():
    n = Net()
    n.handshake()
    n.c(5, b"BBBB")
    n.c(5, b"XXXXYYYY")
    n.c(1, b"AAAA")
    assert n.h.stream(0) == b"AAAABBBBYYYY"


def test_hole_becomes_gap_when_peer_acks_beyond_it():
    n = Net()
    n.handshake()
    n.c(1, b"AAAA")
    n.c(9, b"CCCC")  # 5..8 never captured
    assert n.h.events == [("data", 0, b"AAAA")]
    n.s(1, b"", flags=ACK, ack=13)  # the server got everything up to 12
    assert n.h.events == [("data", 0, b"AAAA"), ("gap", 0, 4), ("data", 0, b"CCCC")]
    assert n.stats.anomalies["tcp.gap"] == 1


def test_ack_seen_before_the_out_of_order_segment_also_closes_the_hole():
    n = Net()
    n.handshake()
    n.c(1, b"AAAA")
    n.s(1, b"", flags=ACK, ack=13)
    n.c(9, b"CCCC")
    assert n.h.events == [("data", 0, b"AAAA"), ("gap", 0, 4), ("data", 0, b"CCCC")]


def test_ack_inside_hole_does_not_skip_data_still_in_flight():
    """Bytes 5..8 are lost from the capture (acked), 9..12 are merely late: only 4 bytes are a gap."""
    n = Net()
    n.handshake()
    n.c(1, b"AAAA")
    n.c(13, b"DDDD")
    n.s(1, b"", flags=ACK, ack=9)  # the receiver has 1..8; 9..12 still in flight
    n.c(9, b"CCCC")
    assert ("gap", 0, 4) in n.h.events
    assert n.h.stream(0) == b"AAAACCCCDDDD"


def test_hole_without_ack_waits_then_gap_at_end():
    n = Net()
    n.handshake()
    n.c(1, b"AAAA")
    n.c(9, b"CCCC")
    n.table.close_all()
    assert n.h.events == [("data", 0, b"AAAA"), ("gap", 0, 4), ("data", 0, b"CCCC"), ("fin", 0),
                          ("fin", 1), ("end", "eof")]


def test_out_of_order_buffer_limit_declares_gap():
    n = Net(Limits(max_ooo_bytes=100))
    n.handshake()
    n.c(1, b"A")
    n.c(52, b"x" * 60)
    assert n.h.stream(0) == b"A"
    n.c(112, b"y" * 60)  # 120 bytes buffered > 100
    assert n.h.events[1] == ("gap", 0, 50)
    assert n.h.stream(0) == b"A" + b"x" * 60 + b"y" * 60


def test_fin_waits_for_missing_data():
    n = Net()
    n.handshake()
    n.c(5, b"BBBB", flags=FIN | ACK | PSH)  # last data + FIN arrive before 1..4
    assert n.h.events == []
    n.c(1, b"AAAA")
    assert n.h.events == [("data", 0, b"AAAA"), ("data", 0, b"BBBB"), ("fin", 0)]


def test_bare_fin_before_data():
    n = Net()
    n.handshake()
    n.c(5, flags=FIN | ACK)
    n.c(1, b"AAAA")
    assert n.h.events == [("data", 0, b"AAAA"), ("fin", 0)]


def test_data_after_fin_is_ignored_and_counted():
    n = Net()
    n.handshake()
    n.c(1, b"AB", flags=FIN | ACK)
    n.c(10, b"late")
    assert n.h.stream(0) == b"AB"
    assert n.stats.anomalies["tcp.data_after_fin"] == 1


def test_rst_ends_flow_once_nothing_follows():
    n = Net()
    n.handshake()
    n.c(1, b"GET", ts=1.0)
    n.s(1, flags=RST | ACK, ack=4, ts=1.1)
    assert n.h.events == [("data", 0, b"GET")]  # lazy: a forged RST must not hide what follows
    n.table.sweep(1.5)
    assert n.h.events == [("data", 0, b"GET")]
    n.table.sweep(3.0)
    assert n.h.events == [("data", 0, b"GET"), ("fin", 0), ("fin", 1), ("end", "rst")]
    n.c(4, b" more", ts=3.5)  # lingers: no new flow for a late packet
    assert len(n.handlers) == 1
    assert n.h.events[-1] == ("end", "rst")


def test_rst_followed_by_data_keeps_the_flow():
    n = Net()
    n.handshake()
    n.c(1, b"GET", ts=1.0)
    n.s(1, flags=RST | ACK, ack=4, ts=1.1)  # forged, say
    n.c(4, b" /x", ts=1.2)
    n.s(1, b"HTTP/1.1", ts=1.3)
    assert n.h.stream(0) == b"GET /x" and n.h.stream(1) == b"HTTP/1.1"
    n.table.close_all()
    assert n.h.events[-1] == ("end", "eof")


def test_rst_ended_flow_swept_by_a_later_packet_of_another_flow():
    n = Net()
    n.handshake()
    n.c(1, b"GET", flags=RST | ACK | PSH, ts=1.0)
    n.send((b"\x0a\x00\x00\x09", 1), S, 1, 0, SYN, ts=10.0)
    assert n.handlers[0].events[-1] == ("end", "rst")


def test_new_syn_after_rst_starts_a_new_flow():
    n = Net()
    n.handshake()
    n.c(1, b"x", flags=RST | ACK)
    n.send(C, S, 9000, 0, SYN)
    n.send(C, S, 9001, 0, ACK | PSH, b"again")
    assert len(n.handlers) == 2
    assert n.handlers[0].events == [("data", 0, b"x"), ("fin", 0), ("fin", 1), ("end", "rst")]
    assert n.handlers[1].stream(0) == b"again"


def test_new_syn_after_fin_close_starts_a_new_flow():
    n = Net()
    n.handshake()
    n.c(1, b"x", flags=FIN | ACK)
    n.s(1, flags=FIN | ACK, ack=3)
    assert n.h.events[-1] == ("end", "fin")
    n.send(C, S, 9000, 0, SYN)
    n.send(C, S, 9001, 0, ACK | PSH, b"again")
    assert len(n.handlers) == 2
    assert n.handlers[1].stream(0) == b"again"


def test_lone_ack_or_fin_of_unknown_flow_creates_nothing():
    n = Net()
    n.c(1, flags=ACK)
    n.c(1, flags=FIN | ACK)
    n.c(1, flags=RST)
    assert n.handlers == [] and n.table.flows == {}


def test_mid_stream_pickup():
    n = Net()
    n.s(100, b"HTTP/1.1 200 OK\r\n")  # first packet we see: from the server
    n.c(300, b"GET /next HTTP/1.1\r\n")
    n.s(117, b"\r\n")
    h = n.h
    assert h.flow.client_dir is None
    assert h.flow.a == S  # direction 0 = the first sender
    assert h.events == [("data", 0, b"HTTP/1.1 200 OK\r\n"), ("data", 1, b"GET /next HTTP/1.1\r\n"),
                        ("data", 0, b"\r\n")]


def test_syn_ack_first_sets_client_direction():
    n = Net()
    n.send(S, C, SISN, CISN + 1, SYN | ACK)
    n.c(1, b"req")
    assert n.h.flow.client_dir == 1
    assert n.h.events == [("data", 1, b"req")]


def test_tcp_fast_open_data_on_syn():
    n = Net()
    n.send(C, S, CISN, 0, SYN, b"GET / HTTP/1.1\r\n\r\n")
    n.send(S, C, SISN, CISN + 1 + 18, SYN | ACK)
    n.c(19, b"more", ack=1)
    n.s(1, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert n.h.stream(0) == b"GET / HTTP/1.1\r\n\r\nmore"
    assert n.h.stream(1) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert n.h.flow.client_dir == 0


def test_syn_retransmitted_with_data_is_not_duplicated():
    n = Net()
    n.send(C, S, CISN, 0, SYN, b"hello")
    n.send(C, S, CISN, 0, SYN, b"hello")
    assert n.h.stream(0) == b"hello"


def test_sequence_number_wraparound():
    n = Net()
    isn = 0xFFFFFFF0
    n.send(C, S, isn, 0, SYN)
    n.send(S, C, SISN, isn + 1, SYN | ACK)
    n.send(C, S, isn + 1 + 8, 0, ACK, b"CCCCCCCC")  # crosses 2^32, out of order
    n.send(C, S, isn + 1 + 16, 0, ACK, b"DDDD")  # after the wrap
    n.send(C, S, isn + 1, 0, ACK, b"AAAAAAAA")
    n.send(C, S, isn + 1, 0, ACK, b"AAAA")  # retransmission from before the wrap
    assert n.h.stream(0) == b"AAAAAAAACCCCCCCCDDDD"
    assert n.stats.anomalies["tcp.retransmission"] == 1
    assert n.table.flows[(C[0], C[1], S[0], S[1])].halves[0].next == (isn + 21) & 0xFFFFFFFF


def test_idle_timeout_via_sweep():
    n = Net(Limits(flow_idle_timeout=10.0))
    n.handshake()
    n.c(1, b"x", ts=2.0)
    n.table.sweep(5.0)
    assert n.h.events == [("data", 0, b"x")]
    n.table.sweep(20.0)
    assert n.h.events[-1] == ("end", "idle")
    assert n.h.events == [("data", 0, b"x"), ("fin", 0), ("fin", 1), ("end", "idle")]
    assert n.table.flows == {}


def test_idle_flows_swept_as_capture_time_advances():
    n = Net(Limits(flow_idle_timeout=10.0))
    n.handshake()
    n.c(1, b"x")
    other = (b"\x0a\x00\x00\x09", 5555)
    n.send(other, S, 1, 0, SYN, ts=100.0)  # another flow, 99 s later: triggers the sweep
    assert n.handlers[0].events[-1] == ("end", "idle")
    assert len(n.table.flows) == 1


def test_packet_after_idle_timeout_is_not_lost():
    n = Net(Limits(flow_idle_timeout=10.0))
    n.handshake()
    n.c(1, b"first")
    n.c(6, b"second", ts=100.0)  # same connection after a long pause
    assert b"second" in b"".join(h.stream(0) for h in n.handlers)


def test_max_flows_eviction():
    n = Net(Limits(max_flows=10))
    for i in range(100):
        client = (bytes([10, 1, i // 256, i % 256]), 10000 + i)
        n.send(client, S, i * 100, 0, SYN, ts=1.0 + i)
        n.send(client, S, i * 100 + 1, 0, ACK | PSH, b"data%d" % i)
        assert len(n.table.flows) <= 10
    assert len(n.handlers) == 100
    evicted = [h for h in n.handlers if h.events and h.events[-1] == ("end", "evicted")]
    assert len(evicted) == 90
    assert n.stats.anomalies["tcp.flow_evicted"] == 90
    # the least recently active go first
    assert all(h.events[-1] == ("end", "evicted") for h in n.handlers[:90])
    assert all(h.events == [("data", 0, b"data%d" % i)] for i, h in enumerate(n.handlers[90:], 90))
    n.table.close_all()
    assert all(h.events[-1] == ("end", "eof") for h in n.handlers[90:])


def test_closed_flows_are_evicted_before_live_ones():
    n = Net(Limits(max_flows=10))
    n.handshake()
    n.c(1, b"x", flags=FIN | ACK)
    n.s(1, flags=FIN | ACK, ack=3)  # closed, lingering
    for i in range(9):
        client = (bytes([10, 2, 0, i]), 20000 + i)
        n.send(client, S, 1, 0, SYN, ts=2.0 + i)
    assert len(n.table.flows) == 10
    n.send((b"\x0a\x03\x00\x01", 30000), S, 1, 0, SYN, ts=20.0)
    assert "tcp.flow_evicted" not in n.stats.anomalies  # the closed one made room
    assert (C[0], C[1], S[0], S[1]) not in n.table.flows


def test_close_all_ends_every_flow_with_eof():
    n = Net()
    n.handshake()
    n.c(1, b"abc")
    n.table.close_all()
    assert n.h.events == [("data", 0, b"abc"), ("fin", 0), ("fin", 1), ("end", "eof")]
    assert n.table.flows == {}


def test_syn_with_changed_isn_after_data_counted():
    n = Net()
    n.handshake()
    n.c(1, b"abc")
    n.send(C, S, CISN + 77, 0, SYN)
    assert n.stats.anomalies["tcp.syn_seq_changed"] == 1
    n.c(4, b"def")
    assert n.h.stream(0) == b"abcdef"


def test_syn_ack_fixes_client_isn_after_spoofed_syn():
    n = Net()
    n.send(C, S, 777, 0, SYN)  # spoofed, or a retransmission with another ISN
    n.send(C, S, CISN, 0, SYN)
    n.send(S, C, SISN, CISN + 1, SYN | ACK)
    n.c(1, b"real")
    assert n.h.stream(0) == b"real"
    assert "tcp.out_of_order" not in n.stats.anomalies


def test_ignored_flow_delivers_nothing():
    n = Net()
    n.handshake()
    n.table.flows[(C[0], C[1], S[0], S[1])].ignored = True
    n.c(1, b"data")
    assert n.h.events == []
    assert n.table.flows[(C[0], C[1], S[0], S[1])].packets == 4
