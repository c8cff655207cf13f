"""Service identity: which service a transaction belongs to.

A service is named by its Host header (lower case, default port dropped, trailing dot
removed), else by the server's address and port.  HTTP/2's ``:authority`` arrives as the
host header too.  Host values that are not plausible host names (spaces, control bytes,
over 253 characters) fall back to the address, so a hostile Host header cannot create
unbounded or misleading services.
"""

from __future__ import annotations

import re

_HOSTNAME = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]{1,253})(:\d{1,5})?$")


def normalize_host(host: str | None, server_port: int | None = None) -> str | None:
    """``"API.Example.com:443"`` -> ``"api.example.com:443"``; ``"x.com:80"`` -> ``"x.com"``."""
    if not host:
        return None
    h = host.strip().lower()
    if h.startswith(("http://", "https://")):
        h = h.split("://", 1)[1].split("/", 1)[0]
    m = _HOSTNAME.match(h)
    if m is None:
        return None
    name, port = m.group(1).rstrip("."), m.group(2)
    if not name:
        return None
    if port in (":80", ":443"):
        port = None
    return name + (port or "")


def service_name(tx) -> str:
    """The service a Transaction was addressed to (without a Host header: the server's
    address, with its port unless 80/443, so it names the same service as ``Host: <ip>``)."""
    name = normalize_host(tx.host, tx.server_port)
    if name:
        return name
    server = tx.server
    if tx.server_port in (80, 443):
        return server.rsplit(":", 1)[0]
    return server
