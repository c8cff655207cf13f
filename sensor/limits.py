"""Bounds that keep memory flat whatever the capture holds (all configurable; see README)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_flows: int = 200_000  # TCP flows tracked at once; half-open, then least recently active evicted
    flow_idle_timeout: float = 300.0  # seconds of capture time without a packet
    max_ooo_bytes: int = 1 << 20  # out-of-order bytes buffered per direction before a gap is declared
    max_ooo_total: int = 64 << 20  # out-of-order bytes buffered over all flows together
    max_header_bytes: int = 64 * 1024  # request/response head (start line + headers)
    max_headers: int = 256  # header lines kept per message (the rest are counted, dropped)
    body_cap: int = 256 * 1024  # decoded body bytes kept per message (full length still counted)
    decompressed_cap: int = 64 << 20  # decompression stops here (bomb guard); flagged decode_limit
    max_pending_requests: int = 100  # pipelined requests waiting for a response per connection
    detect_bytes: int = 64 * 1024  # bytes scanned for an HTTP start line before a flow is ignored
    max_fragments: int = 4096  # IPv4/IPv6 datagrams under reassembly at once
    max_fragment_bytes: int = 32 << 20  # fragment bytes held over all of them
    fragment_timeout: float = 30.0
    h2_max_streams: int = 1000  # open HTTP/2 streams per connection
