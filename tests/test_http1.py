"""HTTP/1 parsing, end to end: real Ethernet/IPv4/TCP frames (built here byte by byte, with valid
checksums) go through ``pipeline.transactions``; a few cases drive ``HTTP1Connection`` directly.

:class:`Conversation` is the builder the other test modules reuse: it keeps both sequence
numbers, cuts payloads into segments, can drop a segment from the "capture" (the peer still
acknowledges it, so the reassembler declares a gap) and ends with FINs.
"""

from __future__ import annotations

import gzip
import socket
import struct
import time
import tracemalloc
import zlib

import brotli
import pytest

from sensor.http1 import HTTP1Connection
from sensor.limits import Limits
from sensor.pipeline import transactions
from sensor.stats import Stats
from sensor.transaction import Transaction

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"") -> bytes:
    """Ethernet + IPv4 (or IPv6 when the addresses are 16 bytes) + TCP, checksums filled in."""
    seq &= 0xFFFFFFFF
    ack &= 0xFFFFFFFF
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    seg = hdr + payload
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(seg))
        seg = seg[:16] + struct.pack("!H", _csum(pseudo + seg)) + seg[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 1, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        etype = b"\x08\x00"
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(seg), 6)
        seg = seg[:16] + struct.pack("!H", _csum(pseudo + seg)) + seg[18:]
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(seg), 6, 64, src, dst)
        etype = b"\x86\xdd"
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + etype + ip + seg


def addr(ip: str) -> bytes:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return socket.inet_pton(fam, ip)


class Conversation:
    """One TCP connection as pcap records ``(ts, 1, frame)``."""

    def __init__(self, client: tuple[str, int] = ("10.0.0.1", 40000),
                 server: tuple[str, int] = ("10.0.0.2", 80), handshake: bool = True,
                 t0: float = 1_700_000_000.0, cisn: int = 1000, sisn: int = 5000, mss: int = 1460):
        self.c = (addr(client[0]), client[1])
        self.s = (addr(server[0]), server[1])
        self.cseq, self.sseq = cisn, sisn
        self.ts = t0
        self.mss = mss
        self.records: list[tuple[float, int, bytes]] = []
        if handshake:
            self._pkt(True, self.cseq, 0, SYN)
            self._pkt(False, self.sseq, self.cseq + 1, SYN | ACK)
            self.cseq += 1
            self.sseq += 1
            self._pkt(True, self.cseq, self.sseq, ACK)

    def _pkt(self, from_client: bool, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
        self.ts += 0.001
        a, b = (self.c, self.s) if from_client else (self.s, self.c)
        frame = tcp_frame(a[0], b[0], a[1], b[1], seq, ack, flags, payload)
        self.records.append((self.ts, 1, frame))
        return frame

    def segments(self, from_client: bool, data: bytes, mss: int | None = None) -> list[tuple[int, bytes]]:
        """Cut ``data`` into (seq, payload) pieces and advance that side's sequence number."""
        mss = mss or self.mss
        seq = self.cseq if from_client else self.sseq
        out = [((seq + i) & 0xFFFFFFFF, data[i: i + mss]) for i in range(0, len(data), mss)]
        if from_client:
            self.cseq += len(data)
        else:
            self.sseq += len(data)
        return out

    def send(self, from_client: bool, seq: int, payload: bytes, flags: int = ACK | PSH) -> None:
        ack = self.sseq if from_client else self.cseq
        self._pkt(from_client, seq, ack, flags, payload)

    def client(self, data: bytes, mss: int | None = None, drop: tuple[int, ...] = ()) -> Conversation:
        for i, (seq, piece) in enumerate(self.segments(True, data, mss)):
            if i not in drop:
                self.send(True, seq, piece)
        return self

    def server(self, data: bytes, mss: int | None = None, drop: tuple[int, ...] = ()) -> Conversation:
        for i, (seq, piece) in enumerate(self.segments(False, data, mss)):
            if i not in drop:
                self.send(False, seq, piece)
        return self

    def client_ack(self) -> Conversation:
        self._pkt(True, self.cseq, self.sseq, ACK)
        return self

    def server_ack(self) -> Conversation:
        self._pkt(False, self.sseq, self.cseq, ACK)
        return self

    def close(self) -> Conversation:
        self._pkt(True, self.cseq, self.sseq, FIN | ACK)
        self.cseq += 1
        self._pkt(False, self.sseq, self.cseq, FIN | ACK)
        self.sseq += 1
        self._pkt(True, self.cseq, self.sseq, ACK)
        return self

    def server_close(self) -> Conversation:
        self._pkt(False, self.sseq, self.cseq, FIN | ACK)
        self.sseq += 1
        self._pkt(True, self.cseq, self.sseq, FIN | ACK)
        self.cseq += 1
        self._pkt(False, self.sseq, self.cseq, ACK)
        return self


def run(records, limits: Limits | None = None, stats: Stats | None = None) -> list[Transaction]:
    return transactions(records, limits, stats)


def exchange(req: bytes, resp: bytes, limits: Limits | None = None, stats: Stats | None = None,
             mss: int = 1460) -> list[Transaction]:
    conv = Conversation(mss=mss).client(req).server(resp).close()
    return run(conv.records, limits, stats)


def ok(body: bytes = b"", extra: str = "", status: str = "200 OK") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def get(uri: str = "/", extra: str = "", method: str = "GET") -> bytes:
    return f"{method} {uri} HTTP/1.1\r\nHost: api.example\r\n{extra}\r\n".encode()


# ---- basics --------------------------------------------------------------------------------------


def test_single_exchange_every_field():
    req = b"GET /v1/users?id=7 HTTP/1.1\r\nHost: api.example:8080\r\nUser-Agent: curl/8.0\r\n\r\n"
    resp = ok(b'{"id":7}', "Content-Type: application/json\r\n")
    conv = Conversation(server=("10.0.0.2", 8080)).client(req).server(resp).close()
    stats = Stats()
    (tx,) = run(conv.records, stats=stats)
    assert (tx.method, tx.uri, tx.host, tx.user_agent) == ("GET", "/v1/users?id=7", "api.example:8080",
                                                           "curl/8.0")
    assert (tx.status_code, tx.reason, tx.protocol) == (200, "OK", "HTTP/1.1")
    assert tx.client == "10.0.0.1:40000" and tx.server == "10.0.0.2:8080"
    assert tx.response_body == b'{"id":7}'
    assert tx.response_body_len == tx.response_body_len_wire == 8
    assert tx.request_body_len == 0
    assert tx.response_header("content-type") == "application/json"
    assert tx.flags == frozenset()
    assert tx.ts == conv.records[3][0]  # the first request segment
    assert tx.ts_response == conv.records[4][0]
    assert stats.transactions == 1 and stats.http_flows == 1


def test_ipv6_exchange():
    conv = Conversation(client=("2001:db8::1", 50000), server=("2001:db8::2", 80))
    conv.client(get("/six")).server(ok(b"v6")).close()
    (tx,) = run(conv.records)
    assert tx.client == "[2001:db8::1]:50000" and tx.uri == "/six" and tx.response_body == b"v6"


def test_keep_alive():
    conv = Conversation()
    conv.client(get("/a")).server(ok(b"first"))
    conv.client(get("/b")).server(ok(b"second!"))
    conv.client(get("/c")).server(ok(b"", status="404 Not Found")).close()
    txs = run(conv.records)
    assert [(t.uri, t.status_code, t.response_body) for t in txs] == [
        ("/a", 200, b"first"), ("/b", 200, b"second!"), ("/c", 404, b"")]
    assert all(t.client_port == 40000 for t in txs)


def test_pipelining_five_requests_in_one_segment():
    reqs = b"".join(get(f"/p{i}") for i in range(5))
    resps = b"".join(ok(f"body{i}".encode() * (i + 1)) for i in range(5))
    conv = Conversation().client(reqs, mss=10_000).server(resps, mss=10_000).close()
    assert len(conv.records) == 3 + 2 + 3
    txs = run(conv.records)
    assert [(t.uri, t.response_body) for t in txs] == [
        (f"/p{i}", f"body{i}".encode() * (i + 1)) for i in range(5)]


def test_pipelining_responses_split_across_tiny_segments():
    reqs = b"".join(get(f"/p{i}") for i in range(5))
    resps = b"".join(ok(f"r{i}".encode()) for i in range(5))
    txs = run(Conversation().client(reqs).server(resps, mss=7).close().records)
    assert [(t.uri, t.response_body) for t in txs] == [(f"/p{i}", f"r{i}".encode()) for i in range(5)]


def test_post_with_content_length_body():
    body = b'{"name":"x"}' * 300
    req = (f"POST /items HTTP/1.1\r\nHost: api.example\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    (tx,) = exchange(req, ok(b"", status="201 Created"))
    assert tx.method == "POST" and tx.status_code == 201
    assert tx.request_body == body and tx.request_body_len == len(body) == 3600
    assert tx.request_header("content-type") == "application/json"


def test_chunked_request_body():
    req = (b"PUT /f HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n")
    (tx,) = exchange(req, ok())
    assert tx.request_body == b"Wikipedia" and tx.request_body_len == 9 == tx.request_body_len_wire


def test_chunked_with_extensions_and_trailers():
    resp = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            b"5;name=value\r\nhello\r\n"
            b"6 ; quoted=\"a;b\"\r\n world\r\n"
            b"A\r\n0123456789\r\n"
            b"0;last\r\nX-Checksum: abc123\r\nX-Other: 1\r\n\r\n")
    conv = Conversation().client(get("/c1")).server(resp, mss=9).client(get("/c2")).server(ok(b"next"))
    txs = run(conv.close().records)
    assert [t.uri for t in txs] == ["/c1", "/c2"]
    tx = txs[0]
    assert tx.response_body == b"hello world0123456789"
    assert tx.response_body_len == tx.response_body_len_wire == 21
    assert tx.response_header("x-checksum") == "abc123"
    assert tx.response_header("x-other") == "1"
    assert txs[1].response_body == b"next"
    assert tx.flags == frozenset()


def test_chunked_with_bad_size_is_flagged_and_next_message_parsed():
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    conv = Conversation().client(get("/bad")).server(resp)
    conv.client(get("/good")).server(ok(b"fine")).close()
    stats = Stats()
    txs = run(conv.records, stats=stats)
    assert [(t.uri, t.status_code) for t in txs] == [("/bad", 200), ("/good", 200)]
    assert "malformed" in txs[0].flags
    assert txs[1].response_body == b"fine"
    assert stats.anomalies["http.bad_chunk"] == 1


ORIGINAL = b'{"items": [' + b", ".join(b'{"id": %d, "name": "item %d"}' % (i, i) for i in range(200)) + b"]}"


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("encoding,encode", [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
    ("deflate", _raw_deflate),  # raw deflate, as many servers send
    ("br", brotli.compress),
    ("gzip, br", lambda d: brotli.compress(gzip.compress(d))),
    ("identity", lambda d: d),
])
def test_content_encoding_decoded(encoding, encode):
    wire = encode(ORIGINAL)
    resp = ok(wire, f"Content-Encoding: {encoding}\r\nContent-Type: application/json\r\n")
    (tx,) = exchange(get(), resp)
    assert tx.response_body == ORIGINAL
    assert tx.response_body_len == len(ORIGINAL) == 6391
    assert tx.response_body_len_wire == len(wire)
    assert "decode_error" not in tx.flags


def test_gzip_chunked_body_decoded_across_chunks():
    wire = gzip.compress(ORIGINAL)
    pieces = [wire[i:i + 100] for i in range(0, len(wire), 100)]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunks
    (tx,) = exchange(get(), resp + b"0\r\n\r\n", mss=333)
    assert tx.response_body == ORIGINAL
    assert (tx.response_body_len, tx.response_body_len_wire) == (len(ORIGINAL), len(wire))


def test_mislabelled_gzip_is_decode_error_not_exception():
    (tx,) = exchange(get(), ok(b"this is not gzip at all", "Content-Encoding: gzip\r\n"))
    assert "decode_error" in tx.flags
    assert tx.response_body_len == tx.response_body_len_wire == 23


# ---- framing ambiguities -------------------------------------------------------------------------


def test_content_length_and_transfer_encoding_is_smuggling():
    resp = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n")
    conv = Conversation().client(get("/te")).server(resp).client(get("/after")).server(ok(b"x")).close()
    stats = Stats()
    txs = run(conv.records, stats=stats)
    assert [t.uri for t in txs] == ["/te", "/after"]
    assert "smuggling" in txs[0].flags
    assert txs[0].response_body == b"hello"  # chunked wins over Content-Length
    assert "smuggling" not in txs[1].flags
    assert stats.anomalies["http.te_and_cl"] == 1


def test_request_with_cl_and_te_is_smuggling():
    req = (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"0\r\n\r\n")
    (tx,) = exchange(req, ok())
    assert "smuggling" in tx.flags and tx.request_body_len == 0


def test_conflicting_duplicate_content_length():
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello"
    conv = Conversation().client(get("/dup")).server(resp).close()
    stats = Stats()
    (tx,) = run(conv.records, stats=stats)
    assert "smuggling" in tx.flags
    assert tx.response_body == b"hello"  # the first value frames the body
    assert stats.anomalies["http.conflicting_content_length"] == 1


def test_identical_duplicate_content_length_is_not_smuggling():
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
    (tx,) = exchange(get(), resp)
    assert "smuggling" not in tx.flags and tx.response_body == b"hello"


def test_negative_content_length_flagged():
    req = b"POST /n HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"
    (tx,) = exchange(req, ok(b"ok"))
    assert "smuggling" in tx.flags and tx.status_code == 200


# ---- bodies that are not there -------------------------------------------------------------------


def test_head_response_with_content_length_has_no_body():
    conv = Conversation().client(get("/h", method="HEAD")).server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n")
    conv.client(get("/next")).server(ok(b"after head")).close()
    txs = run(conv.records)
    assert [(t.method, t.uri, t.status_code) for t in txs] == [("HEAD", "/h", 200), ("GET", "/next", 200)]
    assert txs[0].response_body_len == 0 and txs[0].response_header("content-length") == "12345"
    assert txs[1].response_body == b"after head"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status):
    # a (wrong) Content-Length on these must not swallow the next response
    resp = f"HTTP/1.1 {status}\r\nContent-Length: 50\r\nETag: \"x\"\r\n\r\n".encode()
    conv = Conversation().client(get("/a")).server(resp).client(get("/b")).server(ok(b"bee")).close()
    txs = run(conv.records)
    assert [(t.uri, t.status_code, t.response_body_len) for t in txs] == [
        ("/a", int(status[:3]), 0), ("/b", 200, 3)]


def test_headerless_response_with_blank_line_in_next_segment():
    conv = Conversation().client(get("/a")).server(b"HTTP/1.1 204 No Content\r\n").server(b"\r\n")
    conv.client(get("/b")).server(ok(b"bee")).close()
    txs = run(conv.records)
    assert [(t.uri, t.status_code, t.response_body) for t in txs] == [("/a", 204, b""), ("/b", 200, b"bee")]
    assert txs[0].response_headers == ()


def test_headerless_request_with_blank_line_in_next_segment():
    conv = Conversation().client(b"GET /a HTTP/1.1\r\n").client(b"\r\nGET /b HTTP/1.1\r\n\r\n")
    conv.server(ok(b"x") + ok(b"y")).close()
    txs = run(conv.records)
    assert [(t.uri, t.response_body) for t in txs] == [("/a", b"x"), ("/b", b"y")]


def test_head_with_headers_and_blank_line_in_next_segment():
    conv = Conversation().client(get("/a")).server(b"HTTP/1.1 204 No Content\r\nETag: e\r\n")
    conv.server(b"\r\n").client(get("/b")).server(ok(b"bee")).close()
    txs = run(conv.records)
    assert [(t.uri, t.status_code, t.response_body) for t in txs] == [("/a", 204, b""), ("/b", 200, b"bee")]


def test_100_continue_then_200():
    body = b"x" * 1000
    conv = Conversation()
    conv.client(b"PUT /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n")
    conv.server(b"HTTP/1.1 100 Continue\r\n\r\n")
    conv.client(body)
    conv.server(ok(b"stored", status="201 Created")).close()
    (tx,) = run(conv.records)
    assert tx.interim_statuses == (100,)
    assert tx.status_code == 201 and tx.response_body == b"stored"
    assert tx.request_body_len == 1000


def test_several_interim_responses():
    conv = Conversation().client(get("/slow"))
    conv.server(b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
    conv.server(ok(b"done")).close()
    (tx,) = run(conv.records)
    assert tx.interim_statuses == (102, 103) and tx.status_code == 200


def test_close_delimited_http10_response():
    body = b"<html>" + b"a" * 5000 + b"</html>"
    resp = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
    conv = Conversation().client(b"GET /old HTTP/1.0\r\n\r\n").server(resp).server_close()
    (tx,) = run(conv.records)
    assert tx.protocol == "HTTP/1.0"
    assert tx.response_body == body and tx.response_body_len == len(body) == 5013
    assert "incomplete" not in tx.flags


def test_close_delimited_http11_with_connection_close():
    body = b"raw bytes without a trailing newline"
    resp = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body
    conv = Conversation().client(get("/c")).server(resp).server_close()
    (tx,) = run(conv.records)
    assert tx.response_body == body and tx.response_body_len == len(body)


def test_http09_request_and_response():
    conv = Conversation().client(b"GET /index.html\r\n").server(b"<html>old school</html>\n").server_close()
    (tx,) = run(conv.records)
    assert (tx.method, tx.uri, tx.status_code) == ("GET", "/index.html", 0)
    assert tx.protocol == "HTTP/0.9"
    assert "http09" in tx.flags
    assert tx.response_body == b"<html>old school</html>\n" and tx.response_body_len == 24


def test_versionless_request_does_not_depend_on_segmentation():
    req = b"GET /nov\r\nHost: h\r\n\r\n"
    resp = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    whole = run(Conversation().client(req).server(resp).close().records)
    split = run(Conversation().client(req, mss=len(b"GET /nov\r\n")).server(resp).close().records)
    assert [(t.method, t.uri, t.status_code) for t in whole] == [("GET", "/nov", 200)]
    assert [(t.method, t.uri, t.status_code, t.flags) for t in split] == [
        (t.method, t.uri, t.status_code, t.flags) for t in whole]


@pytest.mark.parametrize("method", ["QUERY", "PROPFIND", "PATCH", "MKCOL"])
def test_other_methods(method):
    body = b'<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>'
    req = (f"{method} /dav/ HTTP/1.1\r\nHost: h\r\nDepth: 1\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    (tx,) = exchange(req + body, ok(b"<multistatus/>", status="207 Multi-Status"))
    assert (tx.method, tx.uri, tx.status_code) == (method, "/dav/", 207)
    assert tx.request_body == body and tx.request_body_len == len(body)


# ---- protocol switches ---------------------------------------------------------------------------

# record header, handshake header, version, random, empty session id, one cipher suite, null
# compression, 0x76 bytes of (zeroed) extensions: 0xa5 bytes of handshake in all
TLS_CLIENT_HELLO = (bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00\x00\x02\x13\x01"
                    + b"\x01\x00" + b"\x00\x76" + b"\x00" * 0x76)
TLS_SERVER_HELLO = bytes.fromhex("160303003a020000360303") + bytes(32) + b"\x00\x13\x01\x00" + b"\x00" * 14
TLS_APP_DATA = b"\x17\x03\x03\x00\x40" + bytes(range(64))


def test_connect_then_tls_tunnel_is_one_transaction():
    conv = Conversation(server=("10.0.0.2", 3128))
    conv.client(b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n")
    conv.server(b"HTTP/1.1 200 Connection established\r\n\r\n")
    conv.client(TLS_CLIENT_HELLO).server(TLS_SERVER_HELLO)
    for _ in range(5):
        conv.client(TLS_APP_DATA).server(TLS_APP_DATA)
    conv.close()
    stats = Stats()
    (tx,) = run(conv.records, stats=stats)
    assert (tx.method, tx.uri, tx.status_code) == ("CONNECT", "api.example:443", 200)
    assert "connect" in tx.flags
    assert tx.response_body_len == 0
    assert stats.transactions == 1


def test_connect_carrying_plain_http_is_parsed():
    conv = Conversation(server=("10.0.0.2", 3128))
    conv.client(b"CONNECT inner.example:80 HTTP/1.1\r\nHost: inner.example:80\r\n\r\n")
    conv.server(b"HTTP/1.1 200 OK\r\n\r\n")
    conv.client(b"GET /inside HTTP/1.1\r\nHost: inner.example\r\n\r\n").server(ok(b"in")).close()
    txs = run(conv.records)
    assert [(t.method, t.uri) for t in txs] == [("CONNECT", "inner.example:80"), ("GET", "/inside")]


def test_connect_refused_keeps_parsing():
    conv = Conversation(server=("10.0.0.2", 3128))
    conv.client(b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n")
    conv.server(ok(b"denied", status="407 Proxy Authentication Required"))
    conv.client(get("/plain")).server(ok(b"p")).close()
    txs = run(conv.records)
    assert [(t.method, t.status_code, t.response_body) for t in txs] == [
        ("CONNECT", 407, b"denied"), ("GET", 200, b"p")]


def test_websocket_upgrade_then_frames_is_one_transaction():
    req = (b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    mask = b"\x37\xfa\x21\x3d"
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(b"GET /not-http HTTP/1.1\r\n\r\n"))
    conv = Conversation().client(req).server(resp)
    conv.client(b"\x81" + bytes([0x80 | len(masked)]) + mask + masked)
    conv.server(b"\x81\x1aHTTP/1.1 200 OK\r\n\r\nhello!")  # frame text that looks like HTTP
    conv.close()
    (tx,) = run(conv.records)
    assert (tx.uri, tx.status_code) == ("/chat", 101)
    assert "upgrade" in tx.flags
    assert tx.response_body_len == 0


# ---- one side missing ----------------------------------------------------------------------------


def test_request_without_response():
    conv = Conversation().client(get("/lonely")).server_ack().close()
    (tx,) = run(conv.records)
    assert tx.uri == "/lonely" and tx.status_code is None
    assert "no_response" in tx.flags and "no_request" not in tx.flags


def test_response_without_request_mid_stream():
    conv = Conversation(handshake=False).server(ok(b"orphan", "Content-Type: text/plain\r\n"))
    conv.server(ok(b"second"))
    txs = run(conv.records)
    assert [(t.method, t.status_code, t.response_body) for t in txs] == [
        (None, 200, b"orphan"), (None, 200, b"second")]
    assert all("no_request" in t.flags for t in txs)
    assert txs[0].client == "10.0.0.1:40000" and txs[0].server == "10.0.0.2:80"


def test_mid_stream_pickup_inside_a_body_resyncs():
    conv = Conversation(handshake=False)
    conv.server(b"tail of an earlier body\r\n")  # picked up inside a response
    conv.client(get("/then")).server(ok(b"clean")).close()
    txs = run(conv.records)
    assert [(t.uri, t.status_code, t.response_body) for t in txs] == [("/then", 200, b"clean")]


# ---- gaps ----------------------------------------------------------------------------------------


def test_gap_inside_content_length_body():
    body = bytes(range(256)) * 12  # 3072 bytes, 3 segments of 1024
    conv = Conversation(mss=1024).client(get("/big"))
    conv.server(b"HTTP/1.1 200 OK\r\nContent-Length: 3072\r\n\r\n")
    conv.server(body, drop=(1,))  # the middle segment is missing from the capture
    conv.client(get("/next")).server(ok(b"still parsed")).close()  # the request ACKs past the hole
    stats = Stats()
    txs = run(conv.records, stats=stats)
    assert [t.uri for t in txs] == ["/big", "/next"]
    big, nxt = txs
    assert "gap" in big.flags
    assert big.response_body_len == 3072 and big.response_body_len_wire == 3072
    assert big.response_body[:1024] == body[:1024]
    assert nxt.response_body == b"still parsed" and "gap" not in nxt.flags
    assert stats.anomalies["tcp.gap"] == 1


def test_gap_in_headers_resyncs_at_next_request():
    conv = Conversation(mss=1000)
    first = b"GET /a HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * 990 + b"\r\nX-More: " + b"q" * 980 + b"\r\n\r\n"
    conv.client(first, drop=(1,))  # the second segment of the head is lost
    conv.client(get("/b"))
    conv.server(ok(b"A") + ok(b"B")).close()
    txs = run(conv.records)
    assert [(t.uri, t.status_code) for t in txs] == [("/a", 200), ("/b", 200)]
    assert "gap" in txs[0].flags
    assert [t.response_body for t in txs] == [b"A", b"B"]
    assert "gap" not in txs[1].flags


def test_gap_in_chunked_body_flags_and_recovers():
    chunk = b"z" * 2000
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"7d0\r\n" + chunk + b"\r\n0\r\n\r\n"
    conv = Conversation(mss=1000).client(get("/ch")).server(resp, drop=(1,))
    conv.client(get("/after")).server(ok(b"ok")).close()
    txs = run(conv.records)
    assert [t.uri for t in txs] == ["/ch", "/after"]
    assert "gap" in txs[0].flags
    assert txs[1].response_body == b"ok"


def test_gap_via_connection_api():
    stats = Stats()
    out: list[Transaction] = []
    conn = HTTP1Connection(0, (b"\x01\x01\x01\x01", 1), (b"\x02\x02\x02\x02", 80), Limits(), stats,
                           out.append)
    conn.data(0, get("/x"), 1.0)
    conn.data(1, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"a" * 30, 2.0)
    conn.gap(1, 40, 2.1)
    conn.data(1, b"b" * 30, 2.2)
    assert len(out) == 1
    tx = out[0]
    assert tx.response_body_len == 100 and tx.response_body == b"a" * 30 + b"b" * 30
    assert "gap" in tx.flags
    conn.data(0, get("/y"), 3.0)
    conn.data(1, ok(b"y"), 3.1)
    conn.end(4.0)
    assert [t.uri for t in out] == ["/x", "/y"] and "gap" not in out[1].flags


# ---- leniency and limits -------------------------------------------------------------------------


def test_bare_lf_line_ends():
    req = b"GET /lf HTTP/1.1\nHost: lf.example\nAccept: */*\n\n"
    resp = b"HTTP/1.1 200 OK\nContent-Length: 4\nX-A: b\n\nbody"
    conv = Conversation().client(req).server(resp).client(get("/crlf")).server(ok(b"x")).close()
    txs = run(conv.records)
    assert [(t.uri, t.host, t.response_body) for t in txs] == [("/lf", "lf.example", b"body"),
                                                               ("/crlf", "api.example", b"x")]
    assert txs[0].response_header("x-a") == "b"


def test_folded_header_and_missing_reason():
    resp = b"HTTP/1.1 200\r\nX-Folded: one\r\n two\r\nContent-Length: 0\r\n\r\n"
    (tx,) = exchange(get(), resp)
    assert tx.status_code == 200 and tx.reason == ""
    assert tx.response_header("x-folded") == "one two"


def test_body_cap_truncates_but_counts():
    body = bytes(range(256)) * 40  # 10240 bytes
    (tx,) = exchange(get(), ok(body), limits=Limits(body_cap=100))
    assert tx.response_body == body[:100]
    assert tx.response_body_len == 10240 and tx.response_body_len_wire == 10240
    assert "truncated" in tx.flags


def test_body_cap_applies_to_decoded_bytes():
    wire = gzip.compress(ORIGINAL)
    (tx,) = exchange(get(), ok(wire, "Content-Encoding: gzip\r\n"), limits=Limits(body_cap=64))
    assert tx.response_body == ORIGINAL[:64]
    assert tx.response_body_len == len(ORIGINAL) and tx.response_body_len_wire == len(wire)
    assert "truncated" in tx.flags


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    zeros = bytes(4 << 20)
    return b"".join(c.compress(zeros) for _ in range(50)) + c.flush()  # 200 MiB of zeros


def test_gzip_bomb_stops_at_decompressed_cap(gzip_bomb):
    cap = 1 << 20
    conv = Conversation(mss=60_000).client(get("/bomb"))
    conv.server(ok(gzip_bomb, "Content-Encoding: gzip\r\n")).client(get("/after")).server(ok(b"ok")).close()
    t0 = time.perf_counter()
    tracemalloc.start()
    try:
        txs = run(conv.records, limits=Limits(decompressed_cap=cap, body_cap=4096))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert [t.uri for t in txs] == ["/bomb", "/after"]
    bomb = txs[0]
    assert "decode_limit" in bomb.flags
    assert bomb.response_body_len == cap
    assert bomb.response_body_len_wire == len(gzip_bomb)
    assert bomb.response_body == bytes(4096)
    assert peak < 40 << 20, peak  # input ~1 MB, steps of 1 MiB: far below the 200 MiB expansion
    assert elapsed < 5.0


def test_too_many_pending_requests_is_bounded():
    reqs = b"".join(get(f"/r{i}") for i in range(150))
    stats = Stats()
    txs = run(Conversation().client(reqs).close().records, limits=Limits(max_pending_requests=100),
              stats=stats)
    assert len(txs) == 150
    assert all("no_response" in t.flags for t in txs)
    assert stats.anomalies["http.too_many_pending_requests"] == 50


def test_huge_header_block_is_dropped_and_parsing_resumes():
    limits = Limits(max_header_bytes=2048)
    head = b"GET /huge HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n"
    conv = Conversation().client(head).client(get("/small")).server(ok(b"1") + ok(b"2")).close()
    stats = Stats()
    txs = run(conv.records, limits=limits, stats=stats)
    assert stats.anomalies["http.header_too_long"] == 1
    assert ("/small", 200) in [(t.uri, t.status_code) for t in txs]


def test_request_line_of_spaces_is_parsed_in_linear_time():
    line = b"GET /" + b" " * 15_000 + b"x\r\n"  # ~0.5 s today; linear would take ~1 ms
    out: list[Transaction] = []
    conn = HTTP1Connection(0, (b"\x01\x01\x01\x01", 1), (b"\x02\x02\x02\x02", 80), Limits(), Stats(),
                           out.append)
    t0 = time.perf_counter()
    conn.data(0, get("/first") + line, 1.0)
    conn.end(2.0)
    assert time.perf_counter() - t0 < 0.1


def test_status_code_with_too_many_digits_does_not_hang():
    """httpbin answers /status/60778204 with that number as status: kept as sent, pairing intact."""
    from sensor.http1 import HTTP1Connection
    from sensor.limits import Limits
    from sensor.stats import Stats

    out = []
    stats = Stats()
    c = HTTP1Connection(0, (b"a" * 4, 1), (b"b" * 4, 2), Limits(), stats, out.append)
    c.data(0, b"GET /status/60778204 HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n", 1)
    c.data(1, b"HTTP/1.1 60778204 UNKNOWN\r\nContent-Length: 0\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2)
    c.end(3)
    assert sorted((t.uri, t.status_code) for t in out) == [("/ok", 200), ("/status/60778204", 60778204)]
