"""The plain data type every later stage speaks: one HTTP request/response exchange."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

Headers = tuple[tuple[str, str], ...]

# Flags a Transaction may carry (documented in README "Transactions").
FLAG_GAP = "gap"  # bytes were missing from the capture inside this exchange
FLAG_TRUNCATED = "truncated"  # a body was longer than the body cap; only the head was kept
FLAG_NO_RESPONSE = "no_response"  # request seen, response never seen
FLAG_NO_REQUEST = "no_request"  # response seen, request never seen
FLAG_DECODE_ERROR = "decode_error"  # Content-Encoding could not be decoded
FLAG_DECODE_LIMIT = "decode_limit"  # decompressed size hit the cap (possible bomb)
FLAG_INCOMPLETE = "incomplete"  # the connection ended before the message did
FLAG_UPGRADE = "upgrade"  # 101 Switching Protocols (websocket, h2c, ...)
FLAG_CONNECT = "connect"  # CONNECT tunnel established
FLAG_HTTP09 = "http09"  # HTTP/0.9 simple request or response
FLAG_SMUGGLING = "smuggling"  # ambiguous framing (CL+TE, duplicate CL, bad CL)
FLAG_MALFORMED = "malformed"  # start line or headers not well formed


def format_addr(addr: bytes, port: int) -> str:
    """``b'\\x7f\\x00\\x00\\x01', 80`` -> ``127.0.0.1:80``; IPv6 as ``[::1]:80``."""
    if len(addr) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, addr)}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, addr)}]:{port}"


def header(headers: Headers, name: str) -> str | None:
    """First value of header ``name`` (case-insensitive), or None."""
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


@dataclass(frozen=True, slots=True)
class Transaction:  # noqa: D101 -- field order is used positionally by http1._emit (speed)
    """One HTTP exchange seen on the wire (request, response, or both).

    Bodies are decoded (de-chunked, decompressed) and capped; the ``*_len`` fields count the
    full decoded length and ``*_len_wire`` the de-chunked but still content-encoded length.
    """

    ts: float  # first byte of the request (or of the response when there is no request)
    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    protocol: str = "HTTP/1.1"  # "HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2"
    method: str | None = None
    uri: str | None = None
    request_version: str | None = None
    request_headers: Headers = ()
    request_body: bytes = b""
    request_body_len: int = 0
    request_body_len_wire: int = 0
    ts_response: float | None = None
    ts_end: float | None = None
    status_code: int | None = None
    reason: str | None = None
    response_version: str | None = None
    response_headers: Headers = ()
    response_body: bytes = b""
    response_body_len: int = 0
    response_body_len_wire: int = 0
    interim_statuses: tuple[int, ...] = ()  # 1xx responses that preceded the final one
    stream_id: int | None = None  # HTTP/2 stream
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def client(self) -> str:
        return format_addr(self.client_ip, self.client_port)

    @property
    def server(self) -> str:
        return format_addr(self.server_ip, self.server_port)

    @property
    def host(self) -> str | None:
        return header(self.request_headers, "host")

    @property
    def user_agent(self) -> str | None:
        return header(self.request_headers, "user-agent")

    @property
    def latency(self) -> float | None:
        """Seconds from the request's first byte to the response's first byte."""
        if self.ts_response is None or self.method is None:
            return None
        return max(0.0, self.ts_response - self.ts)

    def request_header(self, name: str) -> str | None:
        return header(self.request_headers, name)

    def response_header(self, name: str) -> str | None:
        return header(self.response_headers, name)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` line format (stable keys; see README)."""
        return {
            "ts": round(self.ts, 6),
            "client": self.client,
            "server": self.server,
            "protocol": self.protocol,
            "method": self.method,
            "host": self.host,
            "uri": self.uri,
            "status_code": self.status_code,
            "reason": self.reason,
            "request_body_len": self.request_body_len,
            "response_body_len": self.response_body_len,
            "request_body_len_wire": self.request_body_len_wire,
            "response_body_len_wire": self.response_body_len_wire,
            "user_agent": self.user_agent,
            "request_content_type": self.request_header("content-type"),
            "response_content_type": self.response_header("content-type"),
            "latency": None if self.latency is None else round(self.latency, 6),
            "stream_id": self.stream_id,
            "flags": sorted(self.flags),
        }
