"""Internals a response gives away: internal IP addresses, server file paths, version banners.

- ``disclosure.internal_ip``: RFC 1918, CGNAT (100.64/10), link-local and IPv6 ULA/link-local
  addresses in response bodies and headers, validated with :mod:`ipaddress`.  Loopback and
  0.0.0.0 are not disclosures; a dotted quad that is a version (``v10.0.0.1``, ``Chrome/10.0.0.1``,
  under a ``version`` key) is not an address.
- ``disclosure.file_path``: absolute server paths (``/home/...``, ``/var/www/...``, ``C:\\inetpub\\...``)
  in *error* responses (status >= 400, or a body with a stack trace, SQL error or debug page),
  except the path the client itself asked for (a 404 echoing ``/etc/passwd`` leaks nothing).
- ``disclosure.version_banner``: ``Server`` with a version, any ``X-Powered-By``,
  ``X-AspNet-Version``/``X-AspNetMvc-Version``, ``X-Generator``/``Via`` with versions; and
  product/version strings in error and debug bodies (nginx's 404 footer, Django's debug page).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from .base import API8, Base, Finding

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def internal(ip: ipaddress._BaseAddress) -> bool:
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return False
    if ip.version == 4:
        return (
            ip.is_private
            and not ip.is_reserved
            and str(ip) != "255.255.255.255"
            and not _doc4(ip)
            or ip in _CGNAT
        )
    return (ip.is_link_local or ip in ipaddress.ip_network("fc00::/7")) and not _doc6(ip)


def _doc4(ip) -> bool:
    return any(ip in n for n in _DOC4)


def _doc6(ip) -> bool:
    return ip in ipaddress.ip_network("2001:db8::/32")


_DOC4 = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
VERSION_WORDS = frozenset({"version", "ver", "build", "release", "revision", "oid", "snmp", "mib"})


def _mask_ip(ip: str) -> str:
    if ":" in ip:
        return ip.rsplit(":", 1)[0] + ":x"
    return ip.rsplit(".", 1)[0] + ".x"


class InternalIP(Base):
    name = "disclosure.internal_ip"
    category = API8
    severity = "low"
    needs = {"ipv6": r"[fF][cdeCDE][0-9a-fA-F]{1,2}:"}
    necessary = {"ipv4": (4, r"\d\.\d{1,3}\.\d{1,3}\.\d"), "ipv6": needs["ipv6"]}  # ipv4: 4 digits, dots
    reads = ("ipv4", "ipv6")
    patterns = {
        "ipv4": r"(?<![\w.-])(?<![\w.-]/)(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}"
        r"(?![\w-]|\.\d)",
        "ipv6": r"(?<![\w:.])(?:f[cd][0-9a-fA-F]{2}|fe[89abAB][0-9a-fA-F]):[0-9a-fA-F:]{2,38}(?![\w:])",
    }

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for h in ctx.hits("ipv4") + ctx.hits("ipv6"):
            leaf = h.leaf
            if leaf.location in seen or leaf.side != "response" or leaf.part not in ("body", "header"):
                continue
            if VERSION_WORDS & set(leaf.words):
                continue
            before = leaf.value[max(0, h.start - 9) : h.start].lower()
            if before.endswith(("v", "version ", "version: ", "version:", "ver ")):
                continue
            try:
                ip = ipaddress.ip_address(h.text)
            except ValueError:
                continue
            if not internal(ip):
                continue
            seen.add(leaf.location)
            yield self.finding(ctx, leaf.location, f"ipv{ip.version}_private", _mask_ip(h.text), h.text)


class FilePath(Base):
    name = "disclosure.file_path"
    category = API8
    severity = "low"
    # not in the shared pass: paths only matter in error responses, which are rare, and a path
    # is usually inside a stack frame another pattern reads; scanned here when relevant.
    _rx = re.compile(
        r"(?<![\w/.:~-])/(?:home|root|var|usr|opt|srv|etc|tmp|app|apps|data|mnt|Users|Library|private"
        r"|workspace|builds?|go|src|code|work|deploy|proc|lib|sites)/[\w.@+~-]+(?:/[\w.@+~-]+)+"
        r"|(?<![\w])[A-Za-z]:\\(?:[\w .$~-]+\\)+[\w.$~-]*"
    )

    def detect(self, ctx) -> Iterator[Finding]:
        error_context = ctx.status >= 400 or any(
            f.detector in ("errors.stack_trace", "errors.sql_error", "errors.debug_page")
            for f in ctx.findings
        )
        if not error_context:
            return
        uri = (ctx.tx.uri or "").split("?", 1)[0]
        by_loc: dict[str, list[str]] = {}
        for leaf in ctx.leaves:
            if leaf.side != "response" or leaf.part not in ("body", "header") or leaf.number:
                continue
            for m in self._rx.finditer(leaf.value):
                self._add(by_loc, leaf.location, m.group(0), uri)
        for loc, paths in by_loc.items():
            shown = ", ".join(p[:100] for p in paths[:3]) + (
                f" (+{len(paths) - 3} more)" if len(paths) > 3 else ""
            )
            yield self.finding(ctx, loc, "server_path", shown, None)

    @staticmethod
    def _add(by_loc: dict, loc: str, text: str, uri: str) -> None:
        path = text.rstrip(" .\\")
        if path == uri or (uri and path in uri):
            return
        paths = by_loc.setdefault(loc, [])
        if path not in paths:
            paths.append(path)


BANNER_HEADERS = {
    "server": True,
    "x-powered-by": False,
    "x-aspnet-version": False,
    "x-aspnetmvc-version": False,
    "x-generator": True,
    "via": True,
    "microsoftsharepointteamservices": False,
    "x-powered-by-plesk": False,
    "x-runtime-version": False,
    "x-server-version": True,
}
_HAS_VERSION = re.compile(r"\d")
_VIA_PRODUCT = re.compile(r"[A-Za-z][\w.-]*/\d+(?:\.\d+)+")


class VersionBanner(Base):
    name = "disclosure.version_banner"
    category = API8
    severity = "low"
    needs = {
        "banner": r"(?:nginx|Apache|IIS|lighttpd|openresty|Jetty|Werkzeug|gunicorn|uvicorn|Kestrel"
        r"|Caddy|WEBrick"
        r"|Puma|Tengine|LiteSpeed|PHP|Django|Python|\.NET|Express|Node\.js|Ruby|Rails|Spring|WildFly"
        r"|JBoss|GlassFish|Envoy)[^\n]{0,12}\d\.\d"
    }
    necessary = {
        "banner": (
            "nginx",
            "Apache",
            "IIS",
            "lighttpd",
            "openresty",
            "Jetty",
            "Werkzeug",
            "gunicorn",
            "uvicorn",
            "Kestrel",
            "Caddy",
            "WEBrick",
            "Puma",
            "Tengine",
            "LiteSpeed",
            "PHP",
            "Django",
            "Python",
            ".NET",
            "Express",
            "Node.js",
            "Ruby",
            "Rails",
            "Spring Boot",
            "WildFly",
            "JBoss",
            "GlassFish",
            "Envoy",
        )
    }
    patterns = {
        "banner": r"\b(?:nginx|Apache(?: Tomcat)?|Microsoft-IIS|lighttpd|openresty|Jetty|Werkzeug"
        r"|gunicorn|uvicorn"
        r"|Kestrel|Caddy|WEBrick|Puma|Tengine|LiteSpeed|PHP|Django|Python|ASP\.NET|Microsoft \.NET Framework"
        r"|Express|Node\.js|Ruby|Rails|Spring Boot|WildFly|JBoss|GlassFish|Envoy)"
        r"(?: Version)?(?:[/:]\s?| )v?\d+\.\d+(?:\.\d+)*\b",
    }

    def detect(self, ctx) -> Iterator[Finding]:
        for name, value in ctx.tx.response_headers:
            ln = name.lower()
            need_version = BANNER_HEADERS.get(ln)
            if need_version is None:
                continue
            has_version = bool(_HAS_VERSION.search(value))
            if ln == "via":
                has_version = bool(_VIA_PRODUCT.search(value))
            if need_version and not has_version:
                continue
            yield self.finding(
                ctx,
                f"response.header:{ln}",
                "header",
                f"{name}: {value[:120]}",
                None,
                severity="low" if has_version else "info",
                scope="service",
            )
        hits = [h for h in ctx.hits("banner") if h.leaf.side == "response" and h.leaf.part == "body"]
        if not hits:
            return
        error_context = ctx.status >= 400 or any(f.detector == "errors.debug_page" for f in ctx.findings)
        if not error_context:
            return
        done = set()
        for h in hits:
            if h.leaf.location not in done:
                done.add(h.leaf.location)
                yield self.finding(ctx, h.leaf.location, "body", h.text[:120], None)


DETECTORS = [InternalIP(), FilePath(), VersionBanner()]
