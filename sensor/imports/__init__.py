"""Transactions from other tools' records: HAR files, Zeek ``http.log`` and Suricata ``eve.json``.

This is the scale-out path: a Zeek cluster or Suricata on a fast link does the capture and
the HTTP parsing; apisensor reads their logs and builds the same inventory, findings and map
as from a pcap.  Each importer is a *source*: it reads one file and yields
:class:`sensor.transaction.Transaction` objects, the same type the sensor's own parsers
emit, so everything downstream (sinks, redaction, the replay guard) is unchanged.  Parsing
only: no SQLite here (``sensor/`` never imports ``discovery/``).

What each format carries (details in docs/imports.md):

* HAR (browser DevTools, mitmproxy, Charles, Fiddler): everything but the client address,
  bodies included (decoded, as the HAR holds them).
* Zeek ``http.log`` (TSV or JSON): method, host, URI, status, body lengths, User-Agent,
  Referer, Origin, Basic-auth user, proxy headers, sniffed MIME types; no other headers, no
  bodies.
* Suricata ``eve.json``: ``http`` events (all headers with ``dump-all-headers``) and the
  bodies that ``alert`` events carry with ``http-body``/``http-body-printable``.

Files may be gzip-compressed.  They are read as streams (one line, or one HAR entry, at a
time), so a 5 GB log takes the memory of one record.  :func:`probe` checks that a file is
what it claims before anything is recorded; a record that cannot be read later on (a log cut
while being written) is counted in ``Reader.skipped`` and reported, not fatal.
"""

from __future__ import annotations

import gzip
import io
import socket
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

from ..transaction import Transaction

FORMATS = ("har", "zeek", "suricata")
NO_ADDRESS = b"\0\0\0\0"  # 0.0.0.0: the format does not say (HAR has no client address)
SNIFF_BYTES = 1 << 16


class ImportFormatError(Exception):
    """The file cannot be read in the given format (the message is one line for the user)."""


def open_text(path: str) -> TextIO:
    """The file as text (UTF-8, a BOM dropped, undecodable bytes kept as surrogates),
    gunzipped on the fly when it starts with the gzip magic."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 -- returned to the caller
    except IsADirectoryError:
        raise ImportFormatError(f"{path}: is a directory") from None
    except OSError as e:
        raise ImportFormatError(f"{path}: cannot open ({e.strerror or e})") from None
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    stream = gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="\n")


def head_text(path: str, n: int = SNIFF_BYTES) -> str:
    f = open_text(path)
    try:
        return f.read(n)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ImportFormatError(f"{path}: cannot read ({e})") from None
    finally:
        f.close()


def detect(path: str) -> str:
    """``"har"``, ``"zeek"`` or ``"suricata"`` from the file's first bytes."""
    import json

    text = head_text(path)
    s = text.lstrip()
    if not s:
        raise ImportFormatError(f"{path}: empty file")
    if any(line.startswith(("#separator", "#fields\t")) for line in s.split("\n", 20)[:20]):
        return "zeek"  # (a header may come first: btest baselines start with "### BTest")
    if s.startswith("{"):
        first = s.split("\n", 1)[0].strip()
        try:
            obj = json.loads(first)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            if "log" in obj and isinstance(obj["log"], dict):
                return "har"
            if "event_type" in obj:
                return "suricata"
            if "uid" in obj or "id.orig_h" in obj or "id" in obj and "trans_depth" in obj:
                return "zeek"
        # a pretty-printed HAR: the first line is just "{"; look for its "log" object
        if '"log"' in s[:4096] and ('"entries"' in s or '"creator"' in s or '"version"' in s):
            return "har"
    raise ImportFormatError(
        f"{path}: not a HAR file, Zeek http.log or Suricata eve.json (give --format to say which)")


def reader(path: str, fmt: str, *, body_cap: int = 256 * 1024, client_ip: bytes | None = None):
    """The importer for ``fmt`` over ``path`` (iterate it for transactions)."""
    if fmt == "har":
        from .har import HarReader

        return HarReader(path, body_cap=body_cap, client_ip=client_ip)
    if fmt == "zeek":
        from .zeek import ZeekReader

        return ZeekReader(path)
    if fmt == "suricata":
        from .suricata import SuricataReader

        return SuricataReader(path, body_cap=body_cap)
    raise ImportFormatError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")


_NAMES = {"har": "HAR file", "zeek": "Zeek http.log", "suricata": "Suricata eve.json"}


def probe(path: str, fmt: str) -> None:
    """Raise :class:`ImportFormatError` unless ``path`` reads as ``fmt`` (its header and first
    records), so a wrong file is refused before anything is recorded.  A valid file without
    HTTP records (an empty rotated log) passes."""
    r = reader(path, fmt)
    r.strict = True
    try:
        for i, _ in enumerate(r):
            if i >= 2:
                break
    finally:
        r.close()
    if not r.recognized:
        extra = "" if fmt == "har" else " in its first 100,000 lines"
        raise ImportFormatError(f"{path}: not a {_NAMES.get(fmt, fmt)} (no HTTP records{extra})")


class Reader:
    """Base of the importers: counts what was read and skipped; iterate for transactions."""

    format = ""

    def __init__(self, path: str):
        self.path = path
        self.records = 0  # HTTP records read (a transaction each)
        self.skipped: Counter[str] = Counter()  # records not used, by reason
        self.strict = False  # raise on the first bad record (probe)
        self.recognized = False  # the file was seen to be of this format
        self._f: TextIO | None = None

    def open(self) -> TextIO:
        self._f = open_text(self.path)
        return self._f

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def bad(self, reason: str, where: str = "") -> None:
        """A record that cannot be read: fatal while probing, else counted."""
        if self.strict:
            raise ImportFormatError(f"{self.path}: {where + ': ' if where else ''}{reason}")
        self.skipped[reason.split(":")[0]] += 1

    def __iter__(self) -> Iterator[Transaction]:
        try:
            yield from self.transactions()
        except (OSError, EOFError, gzip.BadGzipFile) as e:  # a cut .gz, an I/O error
            if self.strict:
                raise ImportFormatError(f"{self.path}: cannot read ({e})") from None
            self.skipped[f"read error ({e})"] += 1
        finally:
            self.close()

    def transactions(self) -> Iterator[Transaction]:  # pragma: no cover - abstract
        raise NotImplementedError

    def warnings(self) -> list[str]:
        return [f"{self.path}: {n} record{'s' if n != 1 else ''} skipped: {why}"
                for why, n in sorted(self.skipped.items())]


# ---- helpers the importers share ------------------------------------------------------------


def ip_bytes(text) -> bytes:
    """``"10.0.0.1"`` / ``"::1"`` / ``"[::1]"`` -> packed address; anything else -> 0.0.0.0."""
    if not text or not isinstance(text, str):
        return NO_ADDRESS
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    s = s.split("%", 1)[0]  # fe80::1%eth0
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_pton(fam, s)
        except OSError:
            continue
    return NO_ADDRESS


def port(value) -> int:
    try:
        p = int(value)
    except (TypeError, ValueError):
        return 0
    return p if 0 <= p <= 65535 else 0


def timestamp(value) -> float | None:
    """Epoch seconds from a number or an ISO-8601 string (naive means UTC)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def protocol_of(version: str | None) -> tuple[str, str | None]:
    """``"HTTP/1.1"``, ``"1.1"``, ``"h2"``, ``"http/2.0"`` -> (Transaction.protocol, version
    as the sensor writes it: ``"1.1"``)."""
    if not version or not isinstance(version, str):
        return "HTTP/1.1", None
    v = version.strip().upper()
    if v.startswith("HTTP/"):
        v = v[5:]
    if v in ("H2", "H2C", "2", "2.0"):
        return "HTTP/2", "2"
    if v in ("H3", "3", "3.0") or v.startswith("H3-"):
        return "HTTP/3", "3"
    if v in ("0.9", "1.0", "1.1"):
        return f"HTTP/{v}", v
    return "HTTP/1.1", None


def host_header(host: str | None, server_port: int, explicit_port=None) -> str | None:
    """The Host header a log's host name stood for.  Zeek and Suricata log the host without
    its port; clients send the port when it is not the scheme's default, so it is put back
    for ports other than 80 and 443 (``explicit_port``: the port the log kept, if any)."""
    if not host or host == "-":
        return None
    if explicit_port not in (None, "", "-"):
        p = port(explicit_port)
        return host if p in (80, 443, 0) else f"{host}:{p}"
    bracketed = host.startswith("[")
    if not bracketed and host.count(":") >= 2:  # a bare IPv6 address
        host = f"[{host}]"
    elif "]:" in host if bracketed else ":" in host:  # the log kept the port
        return host
    if server_port in (80, 443, 0):
        return host
    return f"{host}:{server_port}"


def cap(body: bytes, body_cap: int) -> tuple[bytes, bool]:
    if len(body) > body_cap:
        return body[:body_cap], True
    return body, False
