"""Naming rules of the dependency map: which node a raw identity on the wire becomes.

The collector stores facts as they were seen: a client by its IP address, a service by its
raw identity (the Host header, the TLS SNI, or ``ip:port`` when there is neither), and every
name seen at an address (``graph_names``: Host and SNI per server ``ip:port``, DNS answers
per ``ip``).  Names are resolved only when the map is built, with everything learned so far
(across replays), so the order in which facts arrive does not matter:

* a service known only by its address (``ip:port``, or a Host header that is an IP literal)
  takes the name most often seen in Host/SNI at that exact ``ip:port``; else the name most
  often answered for the ``ip`` by DNS (plus ``:port`` unless 80/443); else stays ``ip:port``;
* a client IP that also serves (any port) becomes the service it serves, so that
  service-to-service calls join up into chains; else it takes its DNS name; else stays the IP.

Ties break on the name, so the result is deterministic.  Everything here is pure.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable

SOURCE_HOST, SOURCE_SNI, SOURCE_DNS = "host", "sni", "dns"


def split_address(name: str) -> tuple[str, int | None] | None:
    """``"10.0.0.5:8080"`` -> ``("10.0.0.5", 8080)``; ``"[::1]:80"`` -> ``("::1", 80)``;
    ``"10.0.0.5"`` -> ``("10.0.0.5", None)``; a host name -> None."""
    host, port = name, None
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            return None
        host, rest = name[1:end], name[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif name.count(":") == 1:
        host, _, p = name.partition(":")
        if not p.isdigit():
            return None
        port = int(p)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        return None


def format_address(ip: str, port: int | None) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return host if port is None else f"{host}:{port}"


def _best(counts: dict[str, int]) -> str | None:
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


class Resolver:
    """Maps raw identities (service names, client IPs) to node names.

    ``names``: rows ``(ip, port, name, source, count)`` as in ``graph_names``;
    ``services``: every raw service identity seen (to find unnamed services at an address).
    """

    def __init__(self, names: Iterable[tuple[str, int, str, str, int]], services: Iterable[str] = ()):
        self._at_port: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)  # Host/SNI at ip:port
        self._at_ip: dict[str, dict[str, int]] = defaultdict(dict)  # Host/SNI at ip, any port
        self._dns: dict[str, dict[str, int]] = defaultdict(dict)
        for ip, port, name, source, count in names:
            if source == SOURCE_DNS:
                d = self._dns[ip]
                d[name] = d.get(name, 0) + count
            else:
                d = self._at_port[(ip, port)]
                d[name] = d.get(name, 0) + count
                d = self._at_ip[ip]
                d[name] = d.get(name, 0) + count
        self._unnamed_at_ip: dict[str, set[str]] = defaultdict(set)
        for s in services:
            a = split_address(s)
            if a is not None:
                self._unnamed_at_ip[a[0]].add(s)
        self._cache: dict[tuple[str, str], str] = {}

    def service(self, raw: str) -> str:
        """The node name of the service whose raw identity is ``raw``."""
        key = ("s", raw)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._service(raw)
        return hit

    def _service(self, raw: str) -> str:
        a = split_address(raw)
        if a is None:
            return raw
        ip, port = a
        named = self._at_port.get((ip, port)) if port is not None else self._at_ip.get(ip)
        best = _best({n: c for n, c in (named or {}).items() if split_address(n) is None})
        if best is not None:
            return best
        dns = _best(self._dns.get(ip, {}))
        if dns is not None:
            return dns if port in (None, 80, 443) else f"{dns}:{port}"
        return format_address(ip, port)

    def client(self, ip: str) -> str:
        """The node name of a client seen with source address ``ip``."""
        key = ("c", ip)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._client(ip)
        return hit

    def _client(self, ip: str) -> str:
        served = self._at_ip.get(ip)
        if served:
            counts: dict[str, int] = {}
            for n, c in served.items():
                r = self.service(n)
                counts[r] = counts.get(r, 0) + c
            return _best(counts)  # type: ignore[return-value]
        unnamed = self._unnamed_at_ip.get(ip)
        if unnamed:
            return min(self.service(s) for s in unnamed)
        dns = _best(self._dns.get(ip, {}))
        return dns if dns is not None else ip
