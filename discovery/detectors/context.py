"""Parse a Transaction once into what every detector reads (:class:`Context`).

Strategy: every scalar of the exchange becomes a :class:`~.base.Leaf` with a stable location:
headers (``request.header:x-api-key``), cookies (``request.cookie:sessionid``,
``response.cookie:sessionid`` from Set-Cookie), query parameters (``request.query:token``), the
path (``request.path``), and bodies: JSON is walked (``response.body:$.user.email``, array
indexes folded to ``[*]``), forms and CSV become objects (``$.password``, ``$[*].email``),
anything else is one text leaf (``response.body``).  HTML is reduced to its text (tags removed,
entities decoded); in successful (2xx) HTML and Markdown pages, code blocks (``<pre>``,
``<code>``, fenced blocks) are dropped first: that is where documentation shows example
tracebacks, and a page that *talks* about exceptions is not one that leaks them.

At most ``SCAN_CAP`` bytes of each body are looked at; binary media are skipped.
"""

from __future__ import annotations

import csv
import html
import json
import re
from bisect import bisect_right
from collections import defaultdict
from urllib.parse import parse_qsl, unquote

from .base import Finding, Hit, Leaf, key_words
from .redaction import Hasher
from .scan import Scanner

SCAN_CAP = 128 * 1024  # body bytes scanned per message
MAX_LEAVES = 5000
MAX_DEPTH = 40

_BINARY_TYPES = (
    "image/",
    "audio/",
    "video/",
    "font/",
    "application/octet-stream",
    "application/zip",
    "application/pdf",
    "application/grpc",
    "application/protobuf",
    "application/x-protobuf",
    "application/wasm",
    "application/gzip",
    "application/vnd.ms-",
    "application/x-font",
)
_REQ_SKIP = frozenset(
    {
        "host",
        "user-agent",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "content-length",
        "connection",
        "cookie",
        "te",
        "upgrade",
        "cache-control",
        "pragma",
        "origin",
        "referer",
        "if-none-match",
        "if-modified-since",
        "dnt",
        "priority",
        "upgrade-insecure-requests",
        "expect",
        "transfer-encoding",
        "content-encoding",
    }
)
_RESP_SKIP = frozenset(
    {
        "date",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "etag",
        "cache-control",
        "vary",
        "expires",
        "last-modified",
        "accept-ranges",
        "age",
        "keep-alive",
        "strict-transport-security",
        "set-cookie",
        "content-security-policy",
        "referrer-policy",
        "x-content-type-options",
        "x-frame-options",
        "permissions-policy",
        "pragma",
    }
)

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][\w-]*$")
_STYLE = re.compile(r"<style\b[^>]*>.*?</style\s*>", re.S | re.I)
_CODE = re.compile(r"<(pre|code|samp|kbd|textarea)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_BREAK = re.compile(r"<br\s*/?>|</(?:p|div|li|tr|h\d|pre|table|title|td|th)\s*>", re.I)
_TAG = re.compile(r"<[^>]{0,2000}>")
_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
# one opaque token (a bearer token, a session id, a long id): only token formats can be in it
_OPAQUE = re.compile(r"(?:(?:Bearer|Basic|Token|Digest|bearer) )?[A-Za-z0-9_\-.=+/~%]{40,}")
OPAQUE_GROUPS = ("jwt", "token")
_LOOKS_HTML = re.compile(rb"<(?:!doctype|html|head|body|br|b|p|div|pre|table)\b", re.I)


# reStructuredText / Markdown documentation served as text: literal blocks are examples
_DOC_MARKERS = re.compile(r"^(?:\.\. [\w:-]+::|#{1,6} \S|[=~^-]{4,}\s*$|```)|::[ \t]*$", re.M)
_LITERAL_START = re.compile(
    r"\s*\.\. (?:code-block|code|doctest|sourcecode|testcode|testoutput|highlight)\b"
    r"|.*::\s*$"
)


def strip_doc_examples(text: str) -> str:
    """Drop the example parts of a documentation text: fenced blocks, RST literal blocks (the
    indented lines after a ``::`` line or a code directive), doctest paragraphs (``>>>``) and
    Markdown indented code blocks."""
    text = _FENCE.sub(" ", text)
    out: list[str] = []
    block_indent: int | None = None
    in_doctest = False
    prev_blank = True
    for line in text.split("\n"):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue
            block_indent = None
        if in_doctest:
            if stripped:
                continue
            in_doctest = False
        if stripped.startswith(">>>"):
            in_doctest = True
            continue
        if prev_blank and indent >= 4 and stripped:
            block_indent = indent - 1  # Markdown indented code block (until dedent)
            continue
        if _LITERAL_START.match(line):
            block_indent = indent
        out.append(line)
        prev_blank = not stripped
    return "\n".join(out)


def html_text(text: str, drop_code: bool) -> str:
    text = _STYLE.sub(" ", text)
    if drop_code:
        text = _CODE.sub(" ", text)
    text = _BREAK.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text).replace("\xa0", " ")


def _ctype(headers) -> str:
    for k, v in headers:
        if k.lower() == "content-type":
            return v.lower()
    return ""


class Context:
    """Everything detectors read about one transaction (built lazily, once)."""

    def __init__(self, tx, scanner: Scanner, hasher: Hasher | None = None):
        self.tx = tx
        self.status = tx.status_code or 0
        self.hash = hasher or Hasher()
        self.findings: list[Finding] = []
        self.leaves: list[Leaf] = []
        self.body_text: dict[str, str] = {}  # side -> text view of the body (non-JSON bodies)
        self.response_ctype = _ctype(tx.response_headers)
        self.request_ctype = _ctype(tx.request_headers)
        self.docs_page = False  # 2xx HTML/Markdown with code blocks removed
        self._build()
        self._hits: dict[str, list[Hit]] = defaultdict(list)
        self._scan(scanner)

    # ---- building leaves -----------------------------------------------------------------
    def _add(
        self,
        location: str,
        value: str,
        *,
        key: str = "",
        parent: str = "",
        number: bool = False,
        side: str,
        part: str,
        raw_name: str = "",
    ) -> None:
        if len(self.leaves) >= MAX_LEAVES or not value:
            return
        k, words = key_words(key) if key else ("", ())
        p, pwords = key_words(parent) if parent else ("", ())
        self.leaves.append(Leaf(location, value, k, words, p, pwords, number, side, part, raw_name or key))

    def _build(self) -> None:
        tx = self.tx
        if tx.method is not None and tx.uri:
            path, _, query = tx.uri.partition("?")
            self._add("request.path", unquote(path), side="request", part="path")
            if query:
                for name, value in parse_qsl(query, keep_blank_values=True)[:200]:
                    self._add(f"request.query:{name}", value, key=name, side="request", part="query")
            for name, value in tx.request_headers:
                ln = name.lower()
                if ln == "cookie":
                    self._cookies(value, "request", set_cookie=False)
                elif ln not in _REQ_SKIP and not ln.startswith("sec-"):
                    self._add(f"request.header:{ln}", value, key=name, side="request", part="header")
            self._body(
                "request", tx.request_body, self.request_ctype, len(tx.request_body) < tx.request_body_len
            )
        for name, value in tx.response_headers:
            ln = name.lower()
            if ln == "set-cookie":
                self._cookies(value, "response", set_cookie=True)
            elif ln not in _RESP_SKIP:
                self._add(f"response.header:{ln}", value, key=name, side="response", part="header")
        if tx.status_code is not None:
            self._body(
                "response",
                tx.response_body,
                self.response_ctype,
                len(tx.response_body) < tx.response_body_len,
            )

    def _cookies(self, value: str, side: str, set_cookie: bool) -> None:
        items = value.split(";")[:1] if set_cookie else value.split(";")
        for item in items:
            name, eq, v = item.strip().partition("=")
            if eq and name:
                self._add(f"{side}.cookie:{name}", v.strip().strip('"'), key=name, side=side, part="cookie")

    def _body(self, side: str, body: bytes, ctype: str, truncated: bool) -> None:
        if not body or ctype.startswith(_BINARY_TYPES):
            return
        data = body[:SCAN_CAP]
        cut = truncated or len(body) > SCAN_CAP
        text = data.decode("utf-8", "replace")
        head = text.lstrip()[:1]
        where = f"{side}.body"
        if not cut and ("json" in ctype or (head in "{[" and head)):
            try:
                doc = json.loads(text)
            except ValueError:
                doc = None
            if isinstance(doc, (dict, list)):
                self._walk(doc, where + ":$", "", "", side, 0)
                return
        if side == "request" and "x-www-form-urlencoded" in ctype:
            for name, value in parse_qsl(text, keep_blank_values=True)[:500]:
                self._add(f"{where}:{_jpath('$', name)}", value, key=name, side=side, part="body")
            return
        if "csv" in ctype:
            self._csv(text, where, side)
            return
        ok = 200 <= self.status < 300 or side == "request"
        if "html" in ctype or "xml" in ctype or _LOOKS_HTML.search(data, 0, 2048):
            if ok and side == "response" and "html" in ctype:
                self.docs_page = True
            text = html_text(text, drop_code=ok and side == "response" and "html" in ctype)
        elif (
            ok and side == "response" and ("markdown" in ctype or "rst" in ctype or _DOC_MARKERS.search(text))
        ):
            self.docs_page = True
            text = strip_doc_examples(text)
        self.body_text[side] = text
        self._add(where, text, side=side, part="body")

    def _walk(self, obj, path: str, key: str, parent: str, side: str, depth: int) -> None:
        if depth > MAX_DEPTH or len(self.leaves) >= MAX_LEAVES:
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                k = str(k)
                self._walk(v, _jpath(path, k), k, key, side, depth + 1)
        elif isinstance(obj, list):
            for v in obj:
                self._walk(v, path + "[*]", key, parent, side, depth + 1)
        elif isinstance(obj, str):
            self._add(path, obj, key=key, parent=parent, side=side, part="body")
        elif isinstance(obj, int) and not isinstance(obj, bool):
            self._add(path, str(obj), key=key, parent=parent, number=True, side=side, part="body")

    def _csv(self, text: str, where: str, side: str) -> None:
        rows = csv.reader(text.splitlines()[:2001])
        try:
            header = next(rows)
        except (StopIteration, csv.Error):
            return
        try:
            for row in rows:
                for name, value in zip(header, row):
                    self._add(f"{where}:{_jpath('$[*]', name)}", value, key=name, side=side, part="body")
        except csv.Error:
            pass

    # ---- the one pass --------------------------------------------------------------------
    def _scan(self, scanner: Scanner) -> None:
        """One pass over all leaves joined by NUL; opaque tokens (most of the bytes of a typical
        API request: bearer tokens, session ids) only need the token formats, so they are
        matched on their own against those groups instead of going through every pattern."""
        starts, pos, parts, leaves = [], 0, [], []
        for leaf in self.leaves:
            v = leaf.value
            if len(v) >= 40 and _OPAQUE.fullmatch(v):
                for group, s, e in scanner.finditer(v, self.status, OPAQUE_GROUPS):
                    self._hits[group].append(Hit(group, v[s:e], leaf, s, e))
                continue
            leaf.start = pos
            starts.append(pos)
            leaves.append(leaf)
            parts.append(v)
            pos += len(v) + 1
        if not parts:
            return
        text = "\x00".join(parts)
        for group, s, e in scanner.finditer(text, self.status):
            i = bisect_right(starts, s) - 1
            leaf = leaves[i]
            if e > leaf.start + len(leaf.value):  # never spans two leaves (NUL separates them)
                e = leaf.start + len(leaf.value)
            self._hits[group].append(Hit(group, text[s:e], leaf, s - leaf.start, e - leaf.start))

    def hits(self, group: str) -> list[Hit]:
        return self._hits.get(group, [])

    def has_hits(self) -> bool:
        return bool(self._hits)

    # ---- helpers -------------------------------------------------------------------------
    def leaves_at(self, location: str) -> list[Leaf]:
        return [lf for lf in self.leaves if lf.location == location]

    def text_at(self, location: str) -> str:
        """All values at a location joined by newlines (a JSON array of trace lines is one text)."""
        return "\n".join(lf.value for lf in self.leaves if lf.location == location)


def _jpath(path: str, key: str) -> str:
    return f"{path}.{key}" if _SIMPLE_KEY.match(key) else f"{path}[{json.dumps(key)}]"
