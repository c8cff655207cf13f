"""Plain data types the sensor emits besides :class:`~sensor.transaction.Transaction`.

They feed the dependency map: encrypted connections still show who talks to whom (TLS SNI),
DNS answers name the addresses, and flow summaries count what is not HTTP at all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TLSClientHello:
    ts: float
    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    sni: str | None
    alpn: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DNSAnswer:
    ts: float
    client_ip: bytes  # the resolver's client (destination of the response)
    server_ip: bytes  # the DNS server
    name: str  # the queried name, lower case, no trailing dot
    addresses: tuple[str, ...]  # A/AAAA answers (text form), following CNAME chains
    cnames: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FlowSummary:
    """One TCP flow, at its end: what it was and how much it carried."""

    ts_start: float
    ts_end: float
    client_ip: bytes
    client_port: int
    server_ip: bytes
    server_port: int
    protocol: str  # "http1", "h2", "tls", "other", or "unknown" (no payload seen)
    packets: int
    bytes: int  # TCP payload bytes, both directions
    end_reason: str
