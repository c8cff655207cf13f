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
from itertools import chain, islice, repeat
from urllib.parse import parse_qsl, unquote

import orjson

from .base import Finding, Hit, Leaf, key_words
from .redaction import Hasher
from .scan import Scanner

SCAN_CAP = 128 * 1024  # body bytes scanned per message
MAX_LEAVES = 5000
MAX_DEPTH = 40
# distinct values looked at per JSON location (or CSV column) per body: a list of 2,000 users
# is judged on its first 16 distinct emails, phones, addresses... (as many as a findings row
# keeps hashes of)
MAX_COLUMN_VALUES = 16
MAX_ARRAY_LINES = 256  # values of an array of strings (lines of a trace are read in order)
_CARD_MIN = 10**11  # a bare integer needs 12 digits to be a card number

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


# a candidate leaf, before it is known whether any detector needs it:
# [location, value, key, parent, number, side, part, raw_name, keep, wanted]
_LOC, _VAL, _KEY, _PARENT, _NUM, _SIDE, _PART, _RAW, _KEEP, _WANTED = range(10)
_NONE = type(None)
_NO_WANTS: frozenset[str] = frozenset()
# hits of these groups make a response an error response (file paths then count) and make
# a JSON location a text (the lines of a trace in an array are read together)
ERROR_GROUPS = frozenset(
    {"sql", "dbg", "tr_py", "tr_jvm", "tr_net", "tr_node", "tr_php", "tr_ruby", "tr_go", "tr_rust"}
)
_PATHISH = ("/", ":\\")
_NUL_SEP = "\x00"


def _is_str(v) -> bool:
    return type(v) is str


class BodyMemo:
    """Bodies already walked -> their candidate leaves (exact: keyed by the body's bytes and
    what else the walk reads), bounded by the bytes of the bodies kept.  The findings sink keeps
    one: API responses repeat (the same list, the same error page)."""

    def __init__(self, max_bytes: int = 8 << 20, max_entries: int = 4096):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.data: dict[tuple, tuple] = {}
        self.bytes = 0

    def get(self, key: tuple) -> tuple | None:
        return self.data.get(key)

    def put(self, key: tuple, size: int, value: tuple) -> None:
        if size > self.max_bytes >> 3:
            return
        if self.bytes + size > self.max_bytes or len(self.data) >= self.max_entries:
            self.data.clear()
            self.bytes = 0
        self.data[key] = value
        self.bytes += size


class Context:
    """Everything detectors read about one transaction (built once).

    ``wants`` (given by the :class:`~discovery.detectors.Registry`) tells which key-driven
    detectors want a JSON/form/CSV value by its key name (``wants(key, parent)`` -> detector
    names).  With it, only the body values that some detector can use become leaves: values
    with a pattern match, values under a key a detector reads (``password``, ``ssn``,
    ``address``...), path-like values in error responses, and every value of a JSON location
    that holds a stack trace; the rest of a 200-item list is never turned into objects.
    Without it (``wants=None``) every value is a leaf, as before.
    """

    def __init__(self, tx, scanner: Scanner, hasher: Hasher | None = None, wants=None, bodies: bool = True,
                 memo: BodyMemo | None = None):
        self.tx = tx
        self.status = tx.status_code or 0
        self.hash = hasher or Hasher()
        self.findings: list[Finding] = []
        self.leaves: list[Leaf] = []
        self.body_text: dict[str, str] = {}  # side -> text view of the body (non-JSON bodies)
        self.response_ctype = _ctype(tx.response_headers)
        self.request_ctype = _ctype(tx.request_headers)
        self.docs_page = False  # 2xx HTML/Markdown with code blocks removed
        self.wanted: set[str] = set()  # key-driven detectors that have a leaf to read
        self._wants = wants
        self._bodies = bodies  # False: headers, cookies, query and path only (a sampled-out body)
        self._memo = memo  # bodies already walked (their candidates), see BodyMemo
        self._segs: list[tuple[int, int, list]] = []  # remembered bodies' ranges of _cand
        self._debug_literals = scanner.debug_literals
        self._cand: list[list] = []
        self._hits: dict[str, list[Hit]] = {}
        self._build()
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
        keep: bool = True,
        wanted: frozenset[str] | None = None,
    ) -> None:
        if len(self._cand) >= MAX_LEAVES or not value:
            return
        if wanted is None:
            wanted = self._wants(key, parent) if (key and self._wants is not None) else _NO_WANTS
        self._cand.append([location, value, key, parent, number, side, part, raw_name or key, keep, wanted])

    def _build(self) -> None:
        tx = self.tx
        if tx.method is not None and tx.uri:
            path, _, query = tx.uri.partition("?")
            self._add("request.path", unquote(path) if "%" in path else path, side="request", part="path")
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
        if not body or not self._bodies or ctype.startswith(_BINARY_TYPES):
            return
        memo = self._memo
        if memo is None:
            self._walk_body(side, body, ctype, truncated)
            return
        # the candidates of a body depend only on these: walk each distinct body once
        ok = 200 <= self.status < 300 or side == "request"
        key = (side, body, ctype, truncated, ok, self._wants is None)
        got = memo.get(key)
        if got is None:
            outer, docs = self._cand, self.docs_page
            self._cand, self.docs_page = [], False
            try:
                self._walk_body(side, body, ctype, truncated)
                lits = self._debug_literals
                values = _NUL_SEP.join(c[_VAL] for c in self._cand)
                # [candidates, text view, docs page, debug marker, {status >= 400: matches},
                #  {status >= 400: locations of error group matches},
                #  {(status >= 400, error transaction): (leaves, hits, wanted)}]
                got = [self._cand, self.body_text.get(side), self.docs_page,
                       lits is None or any(lit in values for lit in lits), {}, {}, {}]
            finally:
                self._cand, self.docs_page = outer, docs
            memo.put(key, len(body), got)
        cands, text, docs = got[0], got[1], got[2]
        start = len(self._cand)
        room = MAX_LEAVES - start
        self._cand.extend(cands if len(cands) <= room else cands[: max(room, 0)])
        if len(self._cand) > start:
            self._segs.append((start, len(self._cand), got))
        if text is not None:
            self.body_text[side] = text
        if docs:
            self.docs_page = True

    def _walk_body(self, side: str, body: bytes, ctype: str, truncated: bool) -> None:
        data = body[:SCAN_CAP]
        cut = truncated or len(body) > SCAN_CAP
        text = data.decode("utf-8", "replace")
        head = text.lstrip()[:1]
        where = f"{side}.body"
        keep = self._wants is None
        if not cut and ("json" in ctype or (head in "{[" and head)):
            try:
                doc = orjson.loads(data)  # what json.loads(text) gives, when it parses
            except orjson.JSONDecodeError:
                try:
                    doc = json.loads(text)  # NaN, 65-bit integers, invalid UTF-8 replaced, a BOM...
                except ValueError:
                    doc = None
            if isinstance(doc, (dict, list)):
                self._column([doc], where + ":$", "", "", side, 0, keep)
                return
        if side == "request" and "x-www-form-urlencoded" in ctype:
            for name, value in parse_qsl(text, keep_blank_values=True)[:500]:
                self._add(f"{where}:{_jpath('$', name)}", value, key=name, side=side, part="body", keep=keep)
            return
        if "csv" in ctype:
            self._csv(text, where, side, keep)
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

    def _object(self, d: dict, path: str, own: str, side: str, depth: int, keep: bool) -> None:
        """The members of one JSON object at ``path`` (``own``: the object's own key, the
        parent of its members)."""
        if depth > MAX_DEPTH:
            return
        cand = self._cand
        wants = self._wants
        for k, x in d.items():
            t = type(x)
            if t is str:
                if x and len(cand) < MAX_LEAVES:
                    w = wants(k, own) if wants is not None else _NO_WANTS
                    cand.append([_jpath(path, k), x, k, own, False, side, "body", k, keep, w])
            elif t is dict:
                self._object(x, _jpath(path, k), k, side, depth + 1, keep)
            elif t is list:
                if x:
                    self._column(x, _jpath(path, k) + "[*]", k, own, side, depth + 2, keep, True)
            elif t is int:
                self._ints([x], _jpath(path, k), k, own, side, keep)

    def _column(
        self,
        col: list,
        path: str,
        key: str,
        parent: str,
        side: str,
        depth: int,
        keep: bool,
        ordered: bool = False,
    ) -> None:
        """Every JSON value found at ``path`` (all items of an array at once: a list of 200
        objects is walked key by key, with C-level ``map``/``dict.fromkeys``, not object by
        object).  Locations are those of a depth-first walk (array indexes as ``[*]``); large
        columns are deduplicated and capped (``MAX_COLUMN_VALUES`` distinct values)."""
        if depth > MAX_DEPTH or len(self._cand) >= MAX_LEAVES:
            return
        if len(col) == 1:
            v = col[0]
            t = type(v)
            if t is dict:
                self._object(v, path, key, side, depth, keep)
            elif t is list:
                if v:
                    self._column(v, path + "[*]", key, parent, side, depth + 1, keep, True)
            elif t is str:
                if v:
                    self._add(path, v, key=key, parent=parent, side=side, part="body", keep=keep)
            elif t is int:
                self._ints([v], path, key, parent, side, keep)
            return
        if not ordered:
            # scalars: one C pass dedups the column; only its distinct values are looked at
            try:
                distinct = dict.fromkeys(col)
            except TypeError:  # objects or arrays in the column
                distinct = None
            if distinct is not None:
                self._scalars(distinct, path, key, parent, side, keep)
                return
        types = set(map(type, col))
        if _NONE in types:
            types.discard(_NONE)
            col = list(filter(None, col))  # None, and empty strings/objects, hold nothing
        if not types or not col:
            return
        if len(types) == 1:
            parts = {types.pop(): col}
        else:
            parts = {}
            for v in col:
                parts.setdefault(type(v), []).append(v)
        strs = parts.get(str)
        if strs:
            # repeated values are looked at once; one array of strings keeps its order and
            # repeats up to its own cap (the lines of a trace are read together, see text_at)
            if not ordered:
                strs = list(dict.fromkeys(strs))[:MAX_COLUMN_VALUES]
            elif len(strs) > MAX_ARRAY_LINES:
                strs = strs[:MAX_ARRAY_LINES]
            wanted = self._wants(key, parent) if (key and self._wants is not None) else _NO_WANTS
            cand = self._cand
            room = MAX_LEAVES - len(cand)
            for v in strs[:room]:
                if v:
                    cand.append([path, v, key, parent, False, side, "body", key, keep, wanted])
        ints = parts.get(int)
        if ints:
            self._ints(ints, path, key, parent, side, keep)
        dicts = parts.get(dict)
        if dicts:
            if len(dicts) == 1:
                self._object(dicts[0], path, key, side, depth, keep)
            else:
                # one column per member name, taken with map(dict.get) over all the objects; the
                # names are those of the first object unless the others hold more members
                n = len(dicts)
                cols = {k: list(map(dict.get, dicts, repeat(k))) for k in dicts[0]}
                if sum(map(len, dicts)) != sum(n - c.count(None) for c in cols.values()):
                    for k in dict.fromkeys(chain.from_iterable(dicts)):
                        if k not in cols:
                            cols[k] = list(map(dict.get, dicts, repeat(k)))
                for k, sub in cols.items():
                    self._column(sub, _jpath(path, k), k, key, side, depth + 1, keep)
        lists = parts.get(list)
        if lists:
            self._column(list(chain.from_iterable(lists)), path + "[*]", key, parent, side, depth + 1, keep)

    def _scalars(self, distinct: dict, path: str, key: str, parent: str, side: str, keep: bool) -> None:
        """The distinct scalar values of a column (strings capped, numbers as in _ints)."""
        types = set(map(type, distinct))
        if str in types:
            if len(types) == 1:
                strs = list(islice(distinct, MAX_COLUMN_VALUES + 1))
            else:
                strs = list(islice(filter(_is_str, distinct), MAX_COLUMN_VALUES + 1))
            wanted = self._wants(key, parent) if (key and self._wants is not None) else _NO_WANTS
            cand = self._cand
            n = 0
            for v in strs:
                if v and n < MAX_COLUMN_VALUES and len(cand) < MAX_LEAVES:
                    cand.append([path, v, key, parent, False, side, "body", key, keep, wanted])
                    n += 1
        if int in types:
            self._ints(
                [x for x in distinct if type(x) is int] if len(types) > 1 else list(distinct),
                path,
                key,
                parent,
                side,
                keep,
            )

    def _ints(self, ints: list, path: str, key: str, parent: str, side: str, keep: bool) -> None:
        # a bare number only matters under a key that names it (phone, ssn, national id) or
        # when it is long enough to be a card number (12 digits); others never become leaves
        if not keep and not (key and self._wants is not None and self._wants(key, parent)):
            if max(ints) < _CARD_MIN and min(ints) > -_CARD_MIN:
                return
            ints = [x for x in ints if x >= _CARD_MIN or x <= -_CARD_MIN]
        if len(ints) > 1:
            ints = list(dict.fromkeys(ints))[:MAX_COLUMN_VALUES]
        for x in ints:
            self._add(path, str(x), key=key, parent=parent, number=True, side=side, part="body", keep=keep)

    def _csv(self, text: str, where: str, side: str, keep: bool) -> None:
        rows = csv.reader(text.splitlines()[:2001])
        try:
            header = next(rows)
            body = list(rows)
        except (StopIteration, csv.Error):
            return
        for i, name in enumerate(header):
            col = [row[i] for row in body if len(row) > i]
            if len(col) > MAX_COLUMN_VALUES:
                col = list(dict.fromkeys(col))[:MAX_COLUMN_VALUES]
            loc = f"{where}:{_jpath('$[*]', name)}"
            for value in col:
                self._add(loc, value, key=name, side=side, part="body", keep=keep)

    # ---- the one pass --------------------------------------------------------------------
    def _scan(self, scanner: Scanner) -> None:
        """Pattern matches for every candidate value, then the leaves.  Opaque tokens (most of
        the bytes of a typical API request: bearer tokens, session ids) only need the token
        formats, so they are matched on their own against those groups; every other value is
        scanned by :meth:`Scanner.scan_many` with the groups selected for the whole
        transaction (prefilters on all its text)."""
        cands = self._cand
        segs = self._segs
        flag = self.status >= 400
        if not segs or not (flag or not self._debug_marks(scanner)):
            found = self._matches(cands, scanner)
            error = flag
            trace_locs: set[str] = set()
            for i, got in enumerate(found):
                if got:
                    for g, _s, _e in got:
                        if g in ERROR_GROUPS:
                            error = True
                            trace_locs.add(cands[i][_LOC])
            self._leaves_of(cands, found, error, trace_locs, self.leaves, self._hits, self.wanted)
            self._cand = []
            return
        # bodies seen before: their matches are remembered (a value's matches do not depend on
        # the other values, only on the status class and, below 400, on a debug page marker
        # anywhere in the transaction, which is not there); so are the leaves and hits they give
        # (for the status class and whether the transaction is an error one: the other values'
        # locations are never a body's, so no other value changes which of a body's become leaves)
        rest: list[int] = []
        pos = 0
        parts = []  # (start, end, entry, matches, error groups' locations)
        for start, end, entry in segs:
            rest.extend(range(pos, start))
            got = entry[4].get(flag)
            if got is None:
                got = entry[4][flag] = self._matches(entry[0], scanner)
            locs = entry[5].get(flag)
            if locs is None:
                locs = entry[5][flag] = _trace_locs(entry[0], got)
            if end - start < len(got):  # cut by MAX_LEAVES
                got = got[: end - start]
                locs = _trace_locs(cands[start:end], got)
            parts.append((start, end, entry, got, locs))
            pos = end
        rest.extend(range(pos, len(cands)))
        found = [None] * len(cands)
        error = flag
        trace_locs = set()
        if rest:
            for i, got in zip(rest, self._matches([cands[i] for i in rest], scanner)):
                found[i] = got
                if got:
                    for g, _s, _e in got:
                        if g in ERROR_GROUPS:
                            error = True
                            trace_locs.add(cands[i][_LOC])
        if not error:
            error = any(p[4] for p in parts)
        leaves, hits, wanted = self.leaves, self._hits, self.wanted
        pos = 0
        for start, end, entry, got, locs in parts:
            if pos < start:
                self._leaves_of(cands[pos:start], found[pos:start], error, trace_locs, leaves, hits, wanted)
            if end - start == len(entry[0]):
                built = entry[6].get((flag, error))
                if built is None:
                    built = entry[6][(flag, error)] = ([], {}, set())
                    self._leaves_of(entry[0], got, error, locs, *built)
                leaves.extend(built[0])
                for g, lst in built[1].items():
                    have = hits.get(g)
                    if have is None:
                        hits[g] = list(lst)
                    else:
                        have.extend(lst)
                wanted.update(built[2])
            else:
                self._leaves_of(cands[start:end], got, error, locs, leaves, hits, wanted)
            pos = end
        if pos < len(cands):
            self._leaves_of(cands[pos:], found[pos:], error, trace_locs, leaves, hits, wanted)
        self._cand = []

    @staticmethod
    def _leaves_of(cands: list, found: list, error: bool, trace_locs: set[str], leaves: list[Leaf],
                   hits: dict[str, list[Hit]], wanted: set[str]) -> None:
        """The candidates that become leaves (a match, a key a detector reads, a trace's
        location, a path in an error response), their hits and the detectors they are for."""
        for c, got in zip(cands, found):
            if not (got or c[_KEEP] or c[_WANTED] or c[_LOC] in trace_locs):
                if not (
                    error
                    and c[_SIDE] == "response"
                    and not c[_NUM]
                    and (_PATHISH[0] in c[_VAL] or _PATHISH[1] in c[_VAL])
                ):
                    continue
            if len(leaves) >= MAX_LEAVES:
                break
            key, parent = c[_KEY], c[_PARENT]
            k, words = key_words(key) if key else ("", ())
            p, pwords = key_words(parent) if parent else ("", ())
            leaf = Leaf(c[_LOC], c[_VAL], k, words, p, pwords, c[_NUM], c[_SIDE], c[_PART], c[_RAW])
            leaves.append(leaf)
            if c[_WANTED]:
                wanted.update(c[_WANTED])
            if got:
                v = c[_VAL]
                for g, s, e in got:
                    hit = Hit(g, v[s:e], leaf, s, e)
                    lst = hits.get(g)
                    if lst is None:
                        hits[g] = [hit]
                    else:
                        lst.append(hit)

    def _matches(self, cands: list, scanner: Scanner) -> list:
        """The (group, start, end) matches of each candidate value."""
        found: list = [None] * len(cands)
        plain: list[str] = []
        where: list[int] = []
        for i, c in enumerate(cands):
            v = c[_VAL]
            if len(v) >= 40 and _OPAQUE.fullmatch(v):
                found[i] = scanner.scan_only(v, OPAQUE_GROUPS)
            else:
                plain.append(v)
                where.append(i)
        if plain:
            for i, got in zip(where, scanner.scan_values(plain, self.status)):
                found[i] = got
        return found

    def _debug_marks(self, scanner: Scanner) -> bool:
        """Does any value hold a debug page marker (which lets the error-only groups run below
        status 400)?  Remembered bodies know it of themselves."""
        lits = scanner.debug_literals
        if lits is None:
            return True  # not known from literals: take the full pass
        if any(entry[3] for _, _, entry in self._segs):
            return True
        cands = self._cand
        values = []
        pos = 0
        for start, end, _ in self._segs:
            values.extend([c[_VAL] for c in cands[pos:start]])
            pos = end
        values.extend([c[_VAL] for c in cands[pos:]])
        # a value holds one of the literals iff it is marked for their group (remembered per value)
        return any(m is not None and "dbg" in m for m in scanner._value_marks(values))

    def hits(self, group: str) -> list[Hit]:
        return self._hits.get(group) or []

    def has_hits(self) -> bool:
        return bool(self._hits)

    # ---- helpers -------------------------------------------------------------------------
    def leaves_at(self, location: str) -> list[Leaf]:
        return [lf for lf in self.leaves if lf.location == location]

    def text_at(self, location: str) -> str:
        """All values at a location joined by newlines (a JSON array of trace lines is one text)."""
        return "\n".join(lf.value for lf in self.leaves if lf.location == location)


_JPATHS: dict[tuple[str, str], str] = {}


def _trace_locs(cands: list, found: list) -> set[str]:
    """Locations of the candidates with a match of an error group (a stack trace, SQL...)."""
    out = set()
    for c, got in zip(cands, found):
        if got:
            for g, _s, _e in got:
                if g in ERROR_GROUPS:
                    out.add(c[_LOC])
    return out


def _jpath(path: str, key: str) -> str:
    got = _JPATHS.get((path, key))
    if got is None:
        got = f"{path}.{key}" if _SIMPLE_KEY.match(key) else f"{path}[{json.dumps(key)}]"
        if len(_JPATHS) >= 20_000:
            _JPATHS.clear()
        _JPATHS[(path, key)] = got
    return got
