"""HTTP/2 parser tests, fed with real wire bytes.

The bytes come from the ``h2`` library: a client and a server ``h2.connection.H2Connection``
talk to each other in memory and every chunk each one sends is recorded, in order, then fed to
our passive parser.  A few frames ``h2`` will not produce (padded HEADERS, broken HPACK) are
built with ``hyperframe``, the frame layer ``h2`` itself uses.
"""

from __future__ import annotations

import gzip
import itertools
import random

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hyperframe.frame import DataFrame, HeadersFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from sensor.http2 import (
    H2_PREFACE,
    HPACK_SEGMENT,
    MAX_BUFFERED_PAYLOAD,
    MAX_HEADER_BLOCK,
    H2Connection,
    hpack_segments,
)
from sensor.limits import Limits
from sensor.stats import Stats
from sensor.transaction import (
    FLAG_GAP,
    FLAG_INCOMPLETE,
    FLAG_MALFORMED,
    FLAG_NO_REQUEST,
    FLAG_NO_RESPONSE,
    FLAG_UPGRADE,
    Transaction,
)

CLIENT = (b"\x0a\x00\x00\x01", 50000)
SERVER = (b"\x0a\x00\x00\x02", 8080)
Chunk = tuple[bool, bytes]  # (from_client, bytes)


def request(path: str = "/", method: str = "GET", extra: list | None = None) -> list[tuple[str, str]]:
    return [
        (":method", method),
        (":scheme", "http"),
        (":authority", "api.example.com"),
        (":path", path),
        *(extra or []),
    ]


class Wire:
    """A real HTTP/2 client and server (the h2 library) connected in memory."""

    def __init__(self, upgrade: bool = False, client_settings: dict | None = None):
        cfg = {"header_encoding": "utf-8"}
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, **cfg))
        self.server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, **cfg))
        self.chunks: list[Chunk] = []
        if upgrade:
            settings_header = self.client.initiate_upgrade_connection()
            self.server.initiate_upgrade_connection(settings_header)
        else:
            self.client.initiate_connection()
            self.server.initiate_connection()
        self.pump()
        if client_settings:
            self.client.update_settings(client_settings)
            self.pump()

    def pump(self) -> None:
        """Deliver everything both sides have to send, recording it, until both are quiet."""
        while True:
            moved = False
            for from_client, sender, receiver in (
                (True, self.client, self.server),
                (False, self.server, self.client),
            ):
                data = sender.data_to_send()
                if data:
                    moved = True
                    self.chunks.append((from_client, data))
                    self._ack(receiver, receiver.receive_data(data))
            if not moved:
                return

    @staticmethod
    def _ack(conn: h2.connection.H2Connection, events: list) -> None:
        for ev in events:
            if isinstance(ev, h2.events.DataReceived) and ev.flow_controlled_length:
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)

    def inject(self, from_client: bool, data: bytes) -> None:
        """Send hand-built frames (hyperframe) as if the client/server had written them."""
        self.chunks.append((from_client, data))
        receiver = self.server if from_client else self.client
        self._ack(receiver, receiver.receive_data(data))
        self.pump()


def parse(
    chunks: list[Chunk], limits: Limits | None = None, upgraded: Transaction | None = None, close: bool = True
) -> tuple[list[Transaction], Stats, H2Connection]:
    """Feed the recorded chunks (chunk i at ts=100+i) and close; returns all transactions."""
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, limits or Limits(), stats, upgraded)
    out: list[Transaction] = []
    for i, (from_client, data) in enumerate(chunks):
        out += conn.feed(from_client, data, 100.0 + i)
    if close:
        out += conn.close(999.0)
    return out, stats, conn


def frame_types(chunks: list[Chunk], from_client: bool) -> list[int]:
    """Frame types on the wire in one direction (checks that a test exercises what it claims)."""
    data = b"".join(d for c, d in chunks if c == from_client)
    if from_client:
        assert data.startswith(H2_PREFACE)
        data = data[len(H2_PREFACE) :]
    types, i = [], 0
    while i + 9 <= len(data):
        types.append(data[i + 3])
        i += 9 + int.from_bytes(data[i : i + 3], "big")
    return types


def simple_get(body: bytes = b'{"users": [1, 2, 3]}') -> Wire:
    w = Wire()
    w.client.send_headers(1, request("/v1/users?page=2", extra=[("user-agent", "curl/8")]), end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200"), ("content-type", "application/json")])
    w.pump()
    w.server.send_data(1, body, end_stream=True)
    w.pump()
    return w


# --------------------------------------------------------------------------- basic exchanges


def test_get_with_response_body():
    w = simple_get()
    txs, stats, _ = parse(w.chunks)
    assert len(txs) == 1
    t = txs[0]
    assert (t.protocol, t.method, t.uri, t.status_code, t.stream_id) == (
        "HTTP/2",
        "GET",
        "/v1/users?page=2",
        200,
        1,
    )
    assert t.request_headers == (("host", "api.example.com"), ("user-agent", "curl/8"))
    assert t.host == "api.example.com"
    assert t.response_headers == (("content-type", "application/json"),)
    assert t.response_body == b'{"users": [1, 2, 3]}'
    assert (t.response_body_len, t.response_body_len_wire) == (20, 20)
    assert (t.request_body, t.request_body_len) == (b"", 0)
    assert t.flags == frozenset()
    assert t.client == "10.0.0.1:50000" and t.server == "10.0.0.2:8080"
    # chunk 0/1 = prefaces and settings, then the request, the response headers, the body.
    req_i = next(i for i, (c, d) in enumerate(w.chunks) if c and i > 0 and b"\x01" in d[3:4])
    assert t.ts == 100.0 + req_i
    assert t.ts_response is not None and t.ts < t.ts_response < t.ts_end < 999.0
    assert t.ts_end == 100.0 + len(w.chunks) - 1
    assert not stats.anomalies


def test_transaction_emitted_when_both_streams_end_not_before():
    w = simple_get()
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(), stats)
    emitted = [len(conn.feed(c, d, float(i))) for i, (c, d) in enumerate(w.chunks)]
    assert emitted[-1] == 1 and sum(emitted) == 1
    assert conn.close(50.0) == []


def test_post_with_request_body():
    w = Wire()
    body = bytes(range(256)) * 40  # 10240 bytes, sent as three DATA frames
    w.client.send_headers(1, request("/upload", "POST", [("content-type", "application/octet-stream")]))
    for i in range(0, len(body), 4000):
        w.client.send_data(1, body[i : i + 4000], end_stream=i + 4000 >= len(body))
    w.pump()
    w.server.send_headers(1, [(":status", "201"), ("location", "/upload/7")], end_stream=True)
    w.pump()
    assert frame_types(w.chunks, True).count(0) == 3
    [t], stats, _ = parse(w.chunks)
    assert (t.method, t.uri, t.status_code) == ("POST", "/upload", 201)
    assert t.request_body == body
    assert (t.request_body_len, t.request_body_len_wire) == (10240, 10240)
    assert t.response_headers == (("location", "/upload/7"),)
    assert t.response_body_len == 0
    assert t.flags == frozenset()
    assert not stats.anomalies


def test_concurrent_interleaved_streams():
    w = Wire()
    for sid, path in ((1, "/a"), (3, "/b"), (5, "/c")):
        w.client.send_headers(sid, request(path), end_stream=True)
    w.pump()
    for sid in (5, 1, 3):
        w.server.send_headers(sid, [(":status", str(200 + sid))])
    w.pump()
    for part in range(3):  # interleave DATA frames of the three streams
        for sid in (3, 5, 1):
            w.server.send_data(sid, f"{sid}-{part};".encode(), end_stream=part == 2 and sid != 1)
            w.pump()
    w.server.end_stream(1)
    w.pump()
    txs, stats, _ = parse(w.chunks)
    assert [t.stream_id for t in txs] == [3, 5, 1]  # in order of completion
    by_id = {t.stream_id: t for t in txs}
    for sid, path in ((1, "/a"), (3, "/b"), (5, "/c")):
        assert by_id[sid].uri == path
        assert by_id[sid].status_code == 200 + sid
        assert by_id[sid].response_body == f"{sid}-0;{sid}-1;{sid}-2;".encode()
    assert not stats.anomalies


def test_gzip_encoded_response_is_decoded():
    payload = b'{"name": "alice", "email": "alice@example.com"}' * 50
    compressed = gzip.compress(payload)
    w = Wire()
    w.client.send_headers(1, request("/me", extra=[("accept-encoding", "gzip")]), end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200"), ("content-encoding", "gzip")])
    w.server.send_data(1, compressed, end_stream=True)
    w.pump()
    [t], _, _ = parse(w.chunks)
    assert t.response_body == payload
    assert t.response_body_len == len(payload) == 2350
    assert t.response_body_len_wire == len(compressed) < 200
    assert t.flags == frozenset()


def test_body_cap_truncates_but_counts_full_length():
    w = simple_get(body=b"x" * 5000)
    [t], _, _ = parse(w.chunks, Limits(body_cap=100))
    assert t.response_body == b"x" * 100
    assert t.response_body_len == 5000
    assert t.flags == frozenset({"truncated"})


# --------------------------------------------------------------------------- framing features


def test_continuation_frames_for_large_headers():
    big = "v" * 30000  # > 16384 (default max frame size): h2 splits it into HEADERS + CONTINUATION
    w = Wire()
    w.client.send_headers(1, request("/big", extra=[("x-req", "r" * 30000)]), end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200"), ("x-big", big), ("x-after", "1")], end_stream=True)
    w.pump()
    assert 9 in frame_types(w.chunks, True) and 9 in frame_types(w.chunks, False)
    [t], stats, _ = parse(w.chunks)
    assert t.request_header("x-req") == "r" * 30000
    assert t.response_headers == (("x-big", big), ("x-after", "1"))
    assert t.status_code == 200
    assert not stats.anomalies


def test_padded_and_prioritised_headers_and_padded_data():
    w = Wire()
    w.client.send_headers(1, request("/padded", "POST"))  # opens the stream in the h2 client ...
    w.client.clear_outbound_data_buffer()  # ... but what goes on the wire is our padded frame
    enc = hpack.Encoder()  # the client's first header block, so a fresh encoder matches
    block = enc.encode(request("/padded", "POST"))
    frame = HeadersFrame(1, block, flags=["END_HEADERS", "PADDED", "PRIORITY"])
    frame.pad_length = 17
    frame.depends_on, frame.stream_weight = 0, 200
    w.inject(True, frame.serialize())
    data = DataFrame(1, b"hello padded world", flags=["PADDED", "END_STREAM"])
    data.pad_length = 33
    w.inject(True, data.serialize())
    w.server.send_headers(1, [(":status", "200")])
    w.server.send_data(1, b"response", end_stream=True, pad_length=100)
    w.pump()
    [t], stats, _ = parse(w.chunks)
    assert (t.method, t.uri, t.status_code) == ("POST", "/padded", 200)
    assert t.request_body == b"hello padded world"
    assert t.response_body == b"response"
    assert t.response_body_len_wire == 8  # padding is not body
    assert not stats.anomalies


def test_rst_stream_emits_incomplete_transaction_at_once():
    w = Wire()
    w.client.send_headers(1, request("/stream"), end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200")])
    w.server.send_data(1, b"partial")
    w.pump()
    w.client.reset_stream(1, error_code=8)  # CANCEL
    w.pump()
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(), stats)
    outs = [conn.feed(c, d, float(i)) for i, (c, d) in enumerate(w.chunks)]
    assert [len(o) for o in outs][-1] == 1  # emitted by the RST_STREAM chunk itself
    t = outs[-1][0]
    assert t.flags == frozenset({FLAG_INCOMPLETE})
    assert (t.status_code, t.response_body, t.ts_end) == (200, b"partial", float(len(w.chunks) - 1))
    assert conn.close(99.0) == []


def test_rst_stream_before_any_response():
    w = Wire()
    w.client.send_headers(1, request("/slow"), end_stream=True)
    w.pump()
    w.server.reset_stream(1, error_code=7)  # REFUSED_STREAM
    w.pump()
    [t], _, _ = parse(w.chunks, close=False)
    assert t.flags == frozenset({FLAG_NO_RESPONSE})
    assert (t.uri, t.status_code, t.ts_response) == ("/slow", None, None)


def test_request_and_response_trailers():
    w = Wire()
    w.client.send_headers(1, request("/grpc.Svc/Call", "POST", [("te", "trailers")]))
    w.client.send_data(1, b"\x00\x00\x00\x00\x02hi")
    w.client.send_headers(1, [("x-client-trailer", "yes")], end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200"), ("content-type", "application/grpc")])
    w.server.send_data(1, b"\x00\x00\x00\x00\x02ok")
    w.server.send_headers(1, [("grpc-status", "0"), ("grpc-message", "fine")], end_stream=True)
    w.pump()
    [t], stats, _ = parse(w.chunks)
    assert t.request_headers == (("host", "api.example.com"), ("te", "trailers"), ("x-client-trailer", "yes"))
    assert t.response_headers == (
        ("content-type", "application/grpc"),
        ("grpc-status", "0"),
        ("grpc-message", "fine"),
    )
    assert (t.request_body, t.response_body) == (b"\x00\x00\x00\x00\x02hi", b"\x00\x00\x00\x00\x02ok")
    assert t.flags == frozenset()
    assert not stats.anomalies


def test_informational_1xx_responses():
    w = Wire()
    w.client.send_headers(1, request("/upload", "PUT", [("expect", "100-continue")]))
    w.pump()
    w.server.send_headers(1, [(":status", "100")])
    w.pump()
    t_100 = 100.0 + len(w.chunks) - 1
    w.client.send_data(1, b"payload", end_stream=True)
    w.server.send_headers(1, [(":status", "103"), ("link", "</app.css>; rel=preload")])
    w.pump()
    w.server.send_headers(1, [(":status", "204")], end_stream=True)
    w.pump()
    [t], stats, _ = parse(w.chunks)
    assert t.interim_statuses == (100, 103)
    assert t.status_code == 204
    assert t.response_headers == ()  # 1xx headers are not the final response's
    assert t.ts_response == t_100
    assert t.request_body == b"payload"
    assert not stats.anomalies


def test_server_push():
    w = Wire()
    w.client.send_headers(1, request("/index.html"), end_stream=True)
    w.pump()
    w.server.push_stream(1, 2, request("/style.css"))
    w.server.send_headers(1, [(":status", "200")])
    w.server.send_data(1, b"<html>", end_stream=True)
    w.server.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    w.server.send_data(2, b"body{}", end_stream=True)
    w.pump()
    txs, stats, _ = parse(w.chunks)
    by_id = {t.stream_id: t for t in txs}
    assert set(by_id) == {1, 2}
    pushed = by_id[2]
    assert (pushed.method, pushed.uri, pushed.host, pushed.status_code) == (
        "GET",
        "/style.css",
        "api.example.com",
        200,
    )
    assert pushed.response_body == b"body{}"
    assert pushed.flags == frozenset()
    assert by_id[1].response_body == b"<html>"
    assert not stats.anomalies


def test_h2c_upgrade_request_is_stream_one():
    w = Wire(upgrade=True)
    w.server.send_headers(1, [(":status", "200"), ("content-type", "text/plain")])
    w.server.send_data(1, b"upgraded!", end_stream=True)
    w.pump()
    w.client.send_headers(3, request("/second"), end_stream=True)
    w.pump()
    w.server.send_headers(3, [(":status", "404")], end_stream=True)
    w.pump()
    upgraded = Transaction(
        ts=50.0,
        client_ip=CLIENT[0],
        client_port=CLIENT[1],
        server_ip=SERVER[0],
        server_port=SERVER[1],
        method="GET",
        uri="/first",
        request_version="HTTP/1.1",
        request_headers=(
            ("host", "api.example.com"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ),
        status_code=101,
        flags=frozenset({FLAG_UPGRADE}),
    )
    txs, stats, _ = parse(w.chunks, upgraded=upgraded)
    first, second = txs
    assert (first.stream_id, first.method, first.uri, first.status_code) == (1, "GET", "/first", 200)
    assert first.response_body == b"upgraded!"
    assert first.interim_statuses == ()  # the 101 is HTTP/1's own transaction, emitted there
    assert (first.ts, first.request_version, first.response_version) == (50.0, "HTTP/1.1", "HTTP/2")
    assert first.flags == frozenset()
    assert (second.stream_id, second.uri, second.status_code) == (3, "/second", 404)
    assert not stats.anomalies


def test_connect_uses_authority_as_uri():
    w = Wire()
    w.client.send_headers(1, [(":method", "CONNECT"), (":authority", "db.internal:5432")])
    w.pump()
    w.server.send_headers(1, [(":status", "200")])
    w.pump()
    [t], _, _ = parse(w.chunks)
    assert (t.method, t.uri, t.host, t.status_code) == (
        "CONNECT",
        "db.internal:5432",
        "db.internal:5432",
        200,
    )
    assert t.flags == frozenset({"connect", FLAG_INCOMPLETE})


def test_header_table_size_setting_reaches_the_other_directions_decoder():
    # The client allows a 64 KiB HPACK table; the server's encoder then grows its table to it,
    # which a decoder still limited to the default 4096 would reject.
    w = Wire(client_settings={h2.settings.SettingCodes.HEADER_TABLE_SIZE: 65536})
    for i, sid in enumerate((1, 3)):
        w.client.send_headers(sid, request(f"/t{i}"), end_stream=True)
        w.pump()
        w.server.send_headers(sid, [(":status", "200"), ("x-long", "z" * 3000), ("x-long2", "y" * 3000)])
        w.server.send_data(sid, b"ok", end_stream=True)
        w.pump()
    assert w.server.encoder.header_table_size == 65536
    txs, stats, _ = parse(w.chunks)
    assert [t.response_header("x-long2") for t in txs] == ["y" * 3000, "y" * 3000]
    assert not stats.anomalies


def test_max_frame_size_setting_allows_larger_frames():
    w = Wire()
    w.server.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 65536})
    w.pump()
    w.client.send_headers(1, request("/bulk", "POST"))
    w.client.send_data(1, b"q" * 50000, end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200")], end_stream=True)
    w.pump()
    client_bytes = b"".join(d for c, d in w.chunks if c)
    assert (50000).to_bytes(3, "big") + b"\x00\x01" in client_bytes  # one 50000-byte DATA frame
    [t], stats, _ = parse(w.chunks)
    assert t.request_body_len == 50000 and t.status_code == 200
    assert not stats.anomalies


def test_header_count_and_size_limits():
    w = Wire()
    extra = [(f"x-h{i}", "v" * 10) for i in range(20)]
    w.client.send_headers(1, request("/many", extra=extra), end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200"), ("x-huge", "h" * 5000), ("x-small", "s")], end_stream=True)
    w.pump()
    [t], stats, _ = parse(w.chunks, Limits(max_headers=5, max_header_bytes=1000))
    assert t.request_headers == (("host", "api.example.com"), *extra[:5])
    assert t.response_headers == ()  # x-huge alone exceeds 1000 bytes; what follows is dropped too
    assert t.status_code == 200
    assert stats.anomalies["h2.header_limit"] == 2


def test_cookie_crumbs_are_joined():
    w = Wire()
    extra = [("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")]
    w.client.send_headers(1, request("/", extra=extra), end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200")], end_stream=True)
    w.pump()
    [t], _, _ = parse(w.chunks)
    assert t.request_headers == (("host", "api.example.com"), ("cookie", "a=1; b=2"), ("accept", "*/*"))


# --------------------------------------------------------------------------- splitting


def feed_with_ts(pieces: list[tuple[bool, bytes, float]]) -> tuple[list[Transaction], Stats]:
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(), stats)
    out = []
    for c, d, ts in pieces:
        out += conn.feed(c, d, ts)
    return out + conn.close(999.0), stats


def test_split_at_every_byte_boundary_gives_identical_result():
    w = simple_get(body=b"abc")
    reference, _ = feed_with_ts([(c, d, float(i)) for i, (c, d) in enumerate(w.chunks)])
    assert reference[0].response_body == b"abc"
    total = sum(len(d) for _, d in w.chunks)
    stamped = [(c, d, float(i)) for i, (c, d) in enumerate(w.chunks)]
    for cut in range(1, total):
        pieces, pos = [], 0
        for c, d, ts in stamped:
            if pos < cut < pos + len(d):
                pieces += [(c, d[: cut - pos], ts), (c, d[cut - pos :], ts)]
            else:
                pieces.append((c, d, ts))
            pos += len(d)
        got, stats = feed_with_ts(pieces)
        assert got == reference, cut
        assert not stats.anomalies
    one_byte = [(c, d[i : i + 1], ts) for c, d, ts in stamped for i in range(len(d))]
    got, _ = feed_with_ts(one_byte)
    assert got == reference


def test_preface_split_across_feeds():
    w = simple_get()
    (c0, d0), rest = w.chunks[0], w.chunks[1:]
    assert c0 and d0.startswith(H2_PREFACE)
    chunks = [(True, d0[:5]), (True, d0[5:23]), (True, d0[23:]), *rest]
    [t], stats, _ = parse(chunks)
    assert t.uri == "/v1/users?page=2"
    assert not stats.anomalies


# --------------------------------------------------------------------------- damage


def test_garbage_without_preface_never_raises():
    rng = random.Random(7)
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(), stats)
    out = []
    for i in range(200):
        out += conn.feed(bool(i % 2), rng.randbytes(rng.randint(1, 300)), float(i))
    out += conn.close(500.0)
    assert stats.anomalies["h2.no_preface"] == 1
    assert conn.buffered <= MAX_BUFFERED_PAYLOAD + 9
    assert all(t.flags for t in out)  # anything salvaged from garbage is flagged


def test_garbage_after_preface_desynchronises_that_direction():
    w = simple_get()
    chunks = [w.chunks[0], (True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), *w.chunks[1:]]
    txs, stats, _ = parse(chunks)
    assert stats.anomalies["h2.frame_size_error"] == 1
    assert stats.anomalies["h2.desync"] == 1
    # The client side is no longer parsed, the server side still is: a response without request.
    [t] = txs
    assert (t.method, t.status_code, t.response_body) == (None, 200, b'{"users": [1, 2, 3]}')
    assert t.flags == frozenset({FLAG_NO_REQUEST})


def test_truncated_capture_emits_partial_transaction():
    w = simple_get(body=b"0123456789" * 100)
    data_chunk = w.chunks[-1]
    assert not data_chunk[0] and len(data_chunk[1]) > 500
    chunks = [*w.chunks[:-1], (False, data_chunk[1][:300])]
    [t], stats, _ = parse(chunks)
    assert t.flags == frozenset({FLAG_INCOMPLETE})
    assert t.response_body == (b"0123456789" * 100)[: 300 - 9]
    assert t.status_code == 200
    assert stats.anomalies["h2.truncated_frame"] == 1


def test_gap_stops_direction_and_flags_open_streams():
    w = simple_get()
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(), stats)
    head = [(c, d) for c, d in w.chunks[:-2]]  # up to the request; response HEADERS and DATA left
    for i, (c, d) in enumerate(head):
        assert conn.feed(c, d, float(i)) == []
    assert conn.gap(False, 1200, 10.0) == []
    for c, d in w.chunks[-2:]:
        assert conn.feed(c, d, 11.0) == []  # ignored: framing after a hole cannot be trusted
    [t] = conn.close(12.0)
    assert t.flags == frozenset({FLAG_GAP, FLAG_NO_RESPONSE})
    assert (t.uri, t.status_code) == ("/v1/users?page=2", None)
    assert stats.anomalies["h2.gap"] == 1


def test_gap_in_client_direction_server_side_still_parsed():
    w = Wire()
    w.client.send_headers(1, request("/one"), end_stream=True)
    w.pump()
    lost = len(w.chunks)
    w.client.send_headers(3, request("/two"), end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200")], end_stream=True)
    w.server.send_headers(3, [(":status", "500")], end_stream=True)
    w.pump()
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(), stats)
    out = []
    for i, (c, d) in enumerate(w.chunks):
        if i == lost:
            assert c
            out += conn.gap(True, len(d), float(i))
            continue
        out += conn.feed(c, d, float(i))
    out += conn.close(99.0)
    by_id = {t.stream_id: t for t in out}
    assert by_id[1].status_code == 200 and by_id[1].uri == "/one" and FLAG_GAP in by_id[1].flags
    assert by_id[3].status_code == 500 and by_id[3].flags == frozenset({FLAG_GAP, FLAG_NO_REQUEST})
    assert stats.anomalies["h2.gap"] == 1


def test_hpack_error_is_counted_and_later_streams_survive():
    w = Wire()
    bad = HeadersFrame(1, b"\xbf", flags=["END_HEADERS", "END_STREAM"])  # dynamic index 63: empty table
    chunks = [*w.chunks, (True, bad.serialize())]
    enc = hpack.Encoder()  # its first block only uses literals, so our (empty) table can decode it
    good = HeadersFrame(3, enc.encode(request("/ok")), flags=["END_HEADERS", "END_STREAM"]).serialize()
    chunks.append((True, good))
    txs, stats, _ = parse(chunks)
    by_id = {t.stream_id: t for t in txs}
    assert stats.anomalies["h2.hpack_error"] == 1
    assert by_id[1].flags == frozenset({FLAG_MALFORMED, FLAG_NO_RESPONSE}) and by_id[1].method is None
    assert by_id[3].uri == "/ok" and FLAG_MALFORMED not in by_id[3].flags


def test_stream_limit_evicts_oldest():
    w = Wire()
    for sid in (1, 3, 5):
        w.client.send_headers(sid, request(f"/s{sid}"), end_stream=True)
        w.pump()
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(h2_max_streams=2), stats)
    outs = [conn.feed(c, d, float(i)) for i, (c, d) in enumerate(w.chunks)]
    evicted = [t for o in outs for t in o]
    assert [(t.stream_id, t.uri) for t in evicted] == [(1, "/s1")]
    assert evicted[0].flags == frozenset({FLAG_NO_RESPONSE})
    assert stats.anomalies["h2.stream_evicted"] == 1
    assert [t.stream_id for t in conn.close(9.0)] == [3, 5]


def test_mid_connection_capture_without_preface():
    w = Wire()
    w.client.send_headers(1, request("/early"), end_stream=True)
    w.pump()
    w.server.send_headers(1, [(":status", "200")], end_stream=True)
    w.pump()
    # start watching after the prefaces and settings: only the request and response frames remain
    start = next(i for i, (c, d) in enumerate(w.chunks) if c and d[3] == 1)
    txs, stats, _ = parse(w.chunks[start:])
    assert [(t.uri, t.status_code) for t in txs] == [("/early", 200)]
    assert stats.anomalies["h2.no_preface"] == 1


def test_large_frames_are_streamed_or_skipped_not_buffered():
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(body_cap=1000), stats)
    enc = hpack.Encoder()
    conn.feed(
        True, HeadersFrame(1, enc.encode(request("/big", "POST")), flags=["END_HEADERS"]).serialize(), 1.0
    )
    size = 8 << 20
    conn.feed(True, size.to_bytes(3, "big") + b"\x00\x01\x00\x00\x00\x01", 2.0)  # DATA, END_STREAM
    piece = b"\x00" * 65536
    for _ in range(size // len(piece)):
        conn.feed(True, piece, 3.0)
        assert conn.buffered < 100
    big_headers = MAX_BUFFERED_PAYLOAD + 1  # a HEADERS frame too long to buffer: skipped
    conn.feed(False, big_headers.to_bytes(3, "big") + b"\x01\x05\x00\x00\x00\x01", 4.0)
    out = []
    for i in range(0, big_headers, len(piece)):
        out += conn.feed(False, piece[: big_headers - i], 5.0)
        assert conn.buffered < 100
    [t] = out  # END_STREAM on the (undecodable) response completes the stream
    assert conn.close(6.0) == []
    assert t.request_body_len == size and len(t.request_body) == 1000
    assert t.status_code is None and t.flags == frozenset({"truncated", FLAG_MALFORMED})
    assert dict(stats.anomalies) == {
        "h2.no_preface": 1,
        "h2.no_server_preface": 1,
        "h2.frame_too_large": 1,
        "h2.header_block_too_large": 1,
    }


def test_header_block_size_is_bounded():
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(), stats)
    conn.feed(True, HeadersFrame(1, b"\x00" * 1000, flags=[]).serialize(), 1.0)
    cont = (60000).to_bytes(3, "big") + b"\x09\x00\x00\x00\x00\x01" + b"\x00" * 60000
    for _ in range(MAX_HEADER_BLOCK // 60000 + 5):
        conn.feed(True, cont, 2.0)
        assert conn.buffered <= MAX_HEADER_BLOCK + MAX_BUFFERED_PAYLOAD
    conn.feed(True, (0).to_bytes(3, "big") + b"\x09\x04\x00\x00\x00\x01", 3.0)  # END_HEADERS
    assert conn.buffered == 0
    assert stats.anomalies["h2.header_block_too_large"] == 1


def test_hpack_segments_cut_big_blocks_at_field_boundaries():
    enc = hpack.Encoder()
    enc.header_table_size = 8192  # the block starts with a dynamic table size update
    fields = [(f"x-name-{i % 40}", "v" * (i % 70)) for i in range(3000)]
    fields.append(hpack.NeverIndexedHeaderTuple("authorization", "Bearer secret"))
    block = enc.encode(fields, huffman=True)
    assert len(block) > 5 * HPACK_SEGMENT
    segments = list(hpack_segments(block))
    assert b"".join(segments) == block
    assert len(segments) > 4 and all(len(seg) < HPACK_SEGMENT + 200 for seg in segments)
    whole, pieces = hpack.Decoder(1 << 22), hpack.Decoder(1 << 22)
    whole.max_allowed_table_size = pieces.max_allowed_table_size = 8192
    expected = whole.decode(block, raw=True)
    assert [h for seg in segments for h in pieces.decode(seg, raw=True)] == expected
    assert list(hpack_segments(block[:100])) == [block[:100]]  # small blocks are not walked
    truncated = block[: 3 * HPACK_SEGMENT + 1]
    assert b"".join(hpack_segments(truncated)) == truncated


def test_feed_after_close_is_ignored():
    w = simple_get()
    txs, _, conn = parse(w.chunks)
    assert len(txs) == 1
    assert conn.feed(True, w.chunks[0][1], 1.0) == [] and conn.close(2.0) == []


# --------------------------------------------------------------------------- properties


def _exchange() -> list[Chunk]:
    w = Wire()
    for sid in (1, 3):
        w.client.send_headers(sid, request(f"/p{sid}", "POST", [("content-type", "text/plain")]))
        w.client.send_data(sid, b"req-body-" * sid, end_stream=True)
    w.pump()
    for sid in (3, 1):
        w.server.send_headers(sid, [(":status", "200"), ("content-encoding", "gzip")])
        w.server.send_data(sid, gzip.compress(b"resp" * 30), pad_length=5)
        w.server.send_headers(sid, [("x-trailer", str(sid))], end_stream=True)
    w.pump()
    return w.chunks


EXCHANGE = _exchange()
STAMPED = [(c, d, float(i)) for i, (c, d) in enumerate(EXCHANGE)]
REFERENCE, _ = feed_with_ts(STAMPED)


def test_reference_exchange_is_what_we_think():
    assert [(t.stream_id, t.uri, t.response_body) for t in REFERENCE] == [
        (3, "/p3", b"resp" * 30),
        (1, "/p1", b"resp" * 30),
    ]
    assert REFERENCE[0].response_headers == (("content-encoding", "gzip"), ("x-trailer", "3"))


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=30))
def test_random_splits_give_identical_result(cuts):
    pieces = []
    for c, d, ts in STAMPED:
        points = sorted({x % len(d) for x in cuts if x % len(d)})
        prev = 0
        for p in [*points, len(d)]:
            pieces.append((c, d[prev:p], ts))
            prev = p
    got, stats = feed_with_ts(pieces)
    assert got == REFERENCE
    assert not stats.anomalies


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["garbage", "real", "gap"]), st.binary(max_size=200)),
        max_size=40,
    )
)
def test_random_garbage_never_raises_and_buffer_stays_bounded(ops):
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(h2_max_streams=8), stats)
    real = itertools.cycle(EXCHANGE)  # real chunks, each in its own direction, among the garbage
    fed = 0
    for i, (from_client, kind, blob) in enumerate(ops):
        if kind == "gap":
            conn.gap(from_client, len(blob) + 1, float(i))
            continue
        if kind == "real":
            from_client, data = next(real)
        else:
            data = blob
        fed += len(data)
        out = conn.feed(from_client, data, float(i))
        assert all(isinstance(t, Transaction) for t in out)
        assert conn.buffered <= min(fed, 2 * (MAX_BUFFERED_PAYLOAD + 9) + 2 * MAX_HEADER_BLOCK)
    for t in conn.close(1e6):
        assert t.protocol == "HTTP/2"
    assert conn.buffered <= fed


@pytest.mark.parametrize(
    ("cut", "anomaly"),
    [(1, "h2.truncated_preface"), (23, "h2.truncated_preface"), (24, None), (30, "h2.truncated_frame")],
)
def test_truncated_client_stream_at_various_points(cut, anomaly):
    data = b"".join(d for c, d in EXCHANGE if c)
    stats = Stats()
    conn = H2Connection(*CLIENT, *SERVER, Limits(), stats)
    assert conn.feed(True, data[:cut], 1.0) == []
    assert conn.close(2.0) == []
    assert dict(stats.anomalies) == ({anomaly: 1} if anomaly else {})
