"""The findings sink: run the detectors on every transaction and keep deduplicated findings.

``Findings(store, run_id)`` is a :class:`discovery.sink.Sink`.  For each transaction it runs
:data:`discovery.detectors.REGISTRY` and folds the findings into one row per
(service, method, path template, detector, location), counting occurrences and keeping the
first and last time seen.  Rows are written at ``flush`` (one SQLite transaction) and merged
with rows of earlier runs in the same database.

Table ``findings`` (created if missing; one row per deduplicated finding):

============== ======= ==================================================================
column         type    meaning
============== ======= ==================================================================
id             INTEGER primary key
service        TEXT    service name (Host header, else server address; see discovery.service)
method         TEXT    HTTP method (NULL for a response without request)
path           TEXT    path template: ids, UUIDs, hex ids, emails and tokens in the path are
                       replaced by ``{int}``, ``{uuid}``, ``{hex}``, ``{email}``, ``{token}``;
                       ``*`` (and method ``*``) for service-wide findings such as a Server banner
endpoint_id    INTEGER the inventory's endpoint (``discovery.inventory.match_endpoint``) if
                       that module is present, else NULL
detector       TEXT    ``family.name``, e.g. ``pii.card``, ``errors.stack_trace``
kind           TEXT    what exactly: card brand, language, framework, DBMS, token provider...
category       TEXT    OWASP API Security Top 10 2023 id and name (``API3:2023 ...``) or NULL
severity       TEXT    info | low | medium | high | critical (highest seen)
severity_rank  INTEGER 0 (info) .. 4 (critical), for sorting and filtering
confidence     TEXT    low | medium | high
location       TEXT    where: ``response.body:$.user.ssn``, ``request.header:authorization``,
                       ``request.query:token``, ``response.cookie:sessionid``, ``response.body``
evidence       TEXT    redacted evidence (``4111********1111``, exception line and file, ...)
value_hashes   TEXT    JSON list (at most 16) of keyed hashes of the distinct raw values; the
                       key is never stored in the database (see discovery.redact.hash_key);
                       the store's redacted samples use the same key, so a sample's
                       ``<redacted:email HASH>`` matches the finding's hash of that email
distinct_values INTEGER number of distinct values seen (counted up to 16 per run)
count          INTEGER transactions in which the finding was seen
first_seen     REAL    capture time (epoch seconds) of the first occurrence
last_seen      REAL    capture time of the last occurrence
first_run_id   INTEGER run (``runs.id``) of the first occurrence
last_run_id    INTEGER run of the last occurrence
first_tx_id    INTEGER ``transactions.id`` of the first occurrence (NULL if not stored)
last_tx_id     INTEGER ``transactions.id`` of the last occurrence
tx_ref         TEXT    JSON reference of the last transaction: run, ts, client, server,
                       stream (so it can be found even without the transactions table)
============== ======= ==================================================================

Unique index on (service, method, path, detector, location).  The raw sensitive values are
never written: evidence is masked by the detectors, and the hashes are keyed.

Sampling (speed, see docs/findings.md "Speed"): transactions are grouped by *kind*: (service,
method, path template, status, body signature, header signature).  The body signature says
which bodies are there, truncated or flagged by the sensor and whether they hold an ``@``
(emails), a ``$`` (password hashes) or a backslash (escaped text: traces, paths); the header
signature names the request and response headers the detectors read, the cookie names, the
Authorization scheme and a JWT's header (its ``alg``), the query's parameter names, and
coarse shapes of their values (long, many digits, an ``@``, a JWT, a private address
prefix).  The transactions of a kind are all analysed until ``SAMPLE_AFTER`` analyses in a
row added no new finding row; after that only one in ``SAMPLE_EVERY`` of that kind is, and
each one skipped counts the findings of the kind's last analysis (count, first and last
seen, the transaction reference, and the value hash of a credential in a header, cookie or
the query, hashed from its own value).  Error responses (status >= 400), a
kind's first transactions and a banner header value (``Server``, ``X-Powered-By``...) not
seen on the service before are always analysed.  Deterministic for a given transaction order.
What it costs: a value that shows up only in skipped transactions of a quiet kind is missed,
and a skipped transaction is assumed to have what its kind's last analysis found.
``Findings(..., sample=False)`` analyses every transaction.  Bodies are walked once per
distinct body (:class:`~discovery.detectors.context.BodyMemo`: exact).
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any
from urllib.parse import parse_qsl

from .detectors import REGISTRY, SEVERITIES, SEVERITY_RANK, BodyMemo, Finding, Registry
from .detectors.context import _REQ_SKIP, _RESP_SKIP
from .detectors.redaction import Hasher, load_key
from .service import service_name

TABLE = "findings"
MAX_HASHES = 16
SAMPLE_AFTER = 2  # analyses in a row without a new row before a kind of body is sampled
SAMPLE_EVERY = 16  # then one body in this many is analysed
# marks of the body signature: single bytes (a one-byte search is a memchr, ~0.1 ns per
# byte; a longer needle costs ten times that, as much as parsing the body would save)
SIGNATURE_MARKS = (b"@", b"$", b"\\")  # bits 0, 1, 2 (see _body_marks)

_SEG_INT = re.compile(r"^\d+$")
_SEG_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SEG_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
_SEG_TOKEN = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_.=+-]{20,}$")
_SEG_MIXED = re.compile(r"^(?=(?:.*\d){3})(?=.*[A-Za-z])[A-Za-z0-9_-]{6,}$")
# digits with separators (an SSN, a phone, a grouped card number): never kept in a template
_SEG_NUMBERISH = re.compile(r"^(?=(?:\D*\d){7})\+?\(?\d[\d().\s-]*\d$")


_TEMPLATES: dict[str, str] = {}


def format_addr(addr: bytes, port: int) -> str:
    """As ``sensor.transaction.format_addr`` (``Transaction.client``/``server``)."""
    if len(addr) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, addr)}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, addr)}]:{port}"


def path_template(uri: str | None) -> str:
    """``/api/v1/users/8f14e45f-.../profile?x=1`` -> ``/api/v1/users/{uuid}/profile``."""
    if not uri:
        return "-"
    path = uri.partition("?")[0].partition("#")[0].partition(";")[0]
    got = _TEMPLATES.get(path)
    if got is None:
        got = _template(path)
        if len(_TEMPLATES) >= 20_000:
            _TEMPLATES.clear()
        _TEMPLATES[path] = got
    return got


_SEGMENTS: dict[str, str] = {}


def _template(path: str) -> str:
    if path.startswith(("http://", "https://")):
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    out = []
    segments = _SEGMENTS
    for seg in path.split("/")[:32]:
        got = segments.get(seg)
        if got is None:
            got = _segment(seg)
            if len(seg) <= 64 and not seg.isdecimal():  # ids and long values: not remembered
                if len(segments) >= 20_000:
                    segments.clear()
                segments[seg] = got
        out.append(got)
    return "/".join(out)[:500] or "/"


def _segment(seg: str) -> str:
    if seg.isalpha() and len(seg) < 16 and not seg.startswith("eyJ"):
        return seg[:80]  # a word: none of the patterns below
    if seg.isdecimal() or _SEG_INT.match(seg):
        return "{int}"
    if _SEG_NUMBERISH.match(seg):
        return "{id}"
    if _SEG_UUID.match(seg):
        return "{uuid}"
    if "@" in seg:
        return "{email}"
    if _SEG_HEX.match(seg):
        return "{hex}"
    if seg.startswith("eyJ") or _SEG_TOKEN.match(seg):
        return "{token}"
    if _SEG_MIXED.match(seg) and not re.match(r"^v\d+$", seg):
        return "{id}"
    return seg[:80]


def ensure_table(db) -> None:
    if TABLE in db.table_names():
        return
    db[TABLE].create(
        {
            "id": int,
            "service": str,
            "method": str,
            "path": str,
            "endpoint_id": int,
            "detector": str,
            "kind": str,
            "category": str,
            "severity": str,
            "severity_rank": int,
            "confidence": str,
            "location": str,
            "evidence": str,
            "value_hashes": str,
            "distinct_values": int,
            "count": int,
            "first_seen": float,
            "last_seen": float,
            "first_run_id": int,
            "last_run_id": int,
            "first_tx_id": int,
            "last_tx_id": int,
            "tx_ref": str,
        },
        pk="id",
        not_null={"service", "path", "detector", "location", "severity", "count"},
    )
    db.execute(
        f"CREATE UNIQUE INDEX IF NOT EXISTS idx_{TABLE}_key ON {TABLE}"
        "(service, ifnull(method, ''), path, detector, location)"
    )
    db[TABLE].create_index(["severity_rank"], if_not_exists=True)
    db[TABLE].create_index(["detector"], if_not_exists=True)


class _Kind:
    """Sampling state of one kind of transaction."""

    __slots__ = ("seen", "quiet", "found", "plan", "src")

    def __init__(self):
        self.seen = 0
        self.quiet = 0  # analyses in a row that added no new row
        self.found: list[Finding] = []  # what the last analysis found (counted for skipped ones)
        self.plan: list[_Group] | None = None  # found, grouped by row (with the recipes: _recipe)
        self.src: _Src | None = None  # what the recipes of plan are to be read from, until they are


class _Src:
    """What :func:`_values_at` reads of a transaction (its headers and URI; not its bodies)."""

    __slots__ = ("request_headers", "response_headers", "uri")

    def __init__(self, tx):
        self.request_headers = tx.request_headers
        self.response_headers = tx.response_headers
        self.uri = tx.uri


def _values_at(tx, where: str, name: str) -> list[str]:
    """The raw values at a header, cookie or query location (as the detectors' Context reads them)."""
    if where == "request.header" or where == "response.header":
        headers = tx.request_headers if where == "request.header" else tx.response_headers
        return [v for k, v in headers if k.lower() == name]
    if where == "request.cookie" or where == "response.cookie":
        out = []
        if where == "request.cookie":
            for k, v in tx.request_headers:
                if k.lower() == "cookie":
                    for item in v.split(";"):
                        n, eq, x = item.strip().partition("=")
                        if eq and n == name:
                            out.append(x.strip().strip('"'))
        else:
            for k, v in tx.response_headers:
                if k.lower() == "set-cookie":
                    n, eq, x = v.split(";", 1)[0].strip().partition("=")
                    if eq and n == name:
                        out.append(x.strip().strip('"'))
        return out
    if where == "request.query" and tx.uri and "?" in tx.uri:
        return [v for k, v in parse_qsl(tx.uri.partition("?")[2], keep_blank_values=True)[:200] if k == name]
    return []


# what a detector hashes of a header/cookie/query value: the value, stripped, or the credential
# after an Authorization scheme
_TRANSFORMS = (lambda v: v, str.strip, lambda v: v.strip().partition(" ")[2].strip())


def _recipe(tx, f: Finding, hasher) -> tuple | None:
    """Where the value a finding hashed sits in the transaction (location, which value, which
    transform), so that a skipped transaction of the kind can hash its own value there: the
    ``value_hashes`` of credentials in headers, cookies and the query stay exact."""
    if not f.value_hash:
        return None
    where, _, name = f.location.partition(":")
    values = _values_at(tx, where, name)
    for i, v in enumerate(values):
        for t, fn in enumerate(_TRANSFORMS):
            x = fn(v)
            if x and hasher(x) == f.value_hash:
                return where, name, i, t
    return None


def _rehash(tx, recipe: tuple, hasher) -> str | None:
    where, name, i, t = recipe
    values = _values_at(tx, where, name)
    if i >= len(values):
        return None
    x = _TRANSFORMS[t](values[i])
    return hasher(x) if x else None


# request/response headers the detectors never read are context._REQ_SKIP/_RESP_SKIP; these go
# into the signature with their values (banners: constant per server)
_SIG_VALUE = frozenset({"server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version", "x-generator",
                        "via", "microsoftsharepointteamservices", "x-powered-by-plesk", "x-runtime-version",
                        "x-server-version"})
_NO_DIGITS = str.maketrans("", "", "0123456789")
_PRIVATE_PREFIXES = frozenset({"10.", "172", "192", "100", "169", "fd0", "fc0", "fe8"})


def _value_shape(v: str) -> int:
    """What a header or query value looks like, coarsely: long (a token?), many digits (a
    card, a phone, an SSN?), and the marks of data the detectors look for (``@``, a JWT, a
    private IP prefix), as bits."""
    n = len(v)
    return ((n >= 16) | (n - len(v.translate(_NO_DIGITS)) >= 7) << 1 | ("@" in v) << 2 | ("eyJ" in v) << 3
            | (v[:3] in _PRIVATE_PREFIXES) << 4)


_SIGS: dict[tuple, tuple] = {}


# header name as seen -> (lower case name, what the signature takes of it); bounded
_REQ_CLASS: dict[str, tuple[str, int]] = {}
_RESP_CLASS: dict[str, tuple[str, int]] = {}
_SKIP, _AUTH, _COOKIE, _SHAPE, _BANNER = range(5)


def _req_class(name: str) -> tuple[str, int]:
    lk = name.lower()
    if lk in _REQ_SKIP and lk != "cookie" or lk.startswith("sec-"):
        got = (lk, _SKIP)
    elif lk == "authorization" or lk == "proxy-authorization":
        got = (lk, _AUTH)
    elif lk == "cookie":
        got = (lk, _COOKIE)
    else:
        got = (lk, _SHAPE)
    if len(_REQ_CLASS) >= 4096:
        _REQ_CLASS.clear()
    _REQ_CLASS[name] = got
    return got


def _resp_class(name: str) -> tuple[str, int]:
    lk = name.lower()
    if lk == "set-cookie":
        got = (lk, _COOKIE)
    elif lk in _SIG_VALUE:
        got = (lk, _BANNER)
    elif lk not in _RESP_SKIP:
        got = (lk, _SHAPE)
    else:
        got = (lk, _SKIP)
    if len(_RESP_CLASS) >= 4096:
        _RESP_CLASS.clear()
    _RESP_CLASS[name] = got
    return got


def header_signature(tx, banners: list | None = None) -> tuple:
    """Names (and, coarsely, values) of what the detectors read besides the bodies: the
    request and response headers they do not skip, the cookie names, the Authorization scheme
    and a JWT's header, the query's parameter names and value shapes.  Two transactions of an
    endpoint with the same signature are one kind.  Banner headers (``Server``,
    ``X-Powered-By``...: findings of the whole service) are not part of it: they go, with their
    values, into ``banners``."""
    out = []
    req_class = _REQ_CLASS.get
    for k, v in tx.request_headers:
        lk, how = req_class(k) or _req_class(k)
        if how == _SKIP:
            continue
        if how == _AUTH:
            scheme, _, cred = v.strip().partition(" ")
            cred = cred.strip()
            jwt = cred.partition(".")[0] if cred.count(".") == 2 else None  # a JWT's header: its alg
            out.append((lk, scheme.lower(), jwt or _value_shape(cred)))
        elif how == _COOKIE:
            out.append((lk, tuple(sorted(c.strip().partition("=")[0] for c in v.split(";")))))
        else:
            out.append((lk, _value_shape(v)))
    out.append("|")
    resp_class = _RESP_CLASS.get
    for k, v in tx.response_headers:
        lk, how = resp_class(k) or _resp_class(k)
        if how == _SKIP:
            continue
        if how == _COOKIE:
            out.append((lk, v.partition("=")[0].strip()))
        elif how == _BANNER:
            if banners is not None:
                banners.append((lk, v))
        else:
            out.append((lk, _value_shape(v)))
    uri = tx.uri
    if uri and "?" in uri:
        out.append("?")
        for part in uri.partition("?")[2].split("&")[:50]:
            name, _, value = part.partition("=")
            out.append((name, _value_shape(value)))
    key = tuple(out)
    got = _SIGS.get(key)  # one object per signature: the kinds' keys hash it fast
    if got is None:
        if len(_SIGS) >= 50_000:
            _SIGS.clear()
        got = _SIGS[key] = key
    return got


def body_signature(tx) -> int:
    """Bit mask of the SIGNATURE_MARKS in the request body (high bits) and response body, with
    a bit for a body that is there and one for a truncated body, and one for a transaction
    the sensor flagged (incomplete, gap, decode error: a cut body is read as text, not JSON)."""
    sig = 1 << 16 if tx.flags else 0
    body = tx.response_body
    if body:
        sig |= _body_marks(body) | (1 << 6 | (len(body) < tx.response_body_len) << 7)
    body = tx.request_body
    if body:
        sig |= (_body_marks(body) | (1 << 6 | (len(body) < tx.request_body_len) << 7)) << 8
    return sig


def _body_marks(body: bytes) -> int:
    """The SIGNATURE_MARKS in a body, as bits."""
    return (b"@" in body) | (b"$" in body) << 1 | (b"\\" in body) << 2


class _Agg:
    """One pending findings row (the key's columns are in ``Findings.pending``'s key).
    References to a transaction are kept as ``(ts, client_ip, client_port, server_ip,
    server_port, stream_id)`` and turned into text at ``flush``."""

    __slots__ = ("service", "method", "path", "detector", "kind", "category", "severity", "rank",
                 "confidence", "location", "evidence", "count", "first_seen", "last_seen", "hashes",
                 "first_ref", "last_ref", "concrete_path")

    def __init__(self, f: Finding, service: str, method: str | None, path: str, ref: tuple,
                 concrete_path: str):
        self.service = service
        self.method = method
        self.path = path
        self.detector = f.detector
        self.kind = f.kind
        self.category = f.category
        self.severity = f.severity
        self.rank = SEVERITY_RANK[f.severity]
        self.confidence = f.confidence
        self.location = f.location
        self.evidence = f.evidence
        self.count = 0
        self.first_seen = self.last_seen = ref[0]
        self.hashes: list[str] = []
        self.first_ref = self.last_ref = ref
        self.concrete_path = concrete_path


class _Group:
    """The findings of one transaction that fold into one row: the first one (it creates the
    row), the first of the highest severity (it may raise the row's), how many, and the indexes
    of those with a value hash (for a skipped transaction: the indexes with a recipe, see
    :func:`_recipe`, and the recipes)."""

    __slots__ = ("key", "method", "path", "first", "best", "rank", "n", "hashed", "recipes")

    def __init__(self, key: tuple, method: str | None, path: str, f: Finding, rank: int):
        self.key = key
        self.method = method
        self.path = path
        self.first = self.best = f
        self.rank = rank
        self.n = 0
        self.hashed: list[int] = []
        self.recipes: list[tuple] | None = None


def _plan(found: list[Finding], service: str, method: str | None, path: str) -> list[_Group]:
    """The findings of one transaction grouped by row key (in order of first occurrence):
    folding the groups is folding the findings one by one."""
    groups: dict[tuple, _Group] = {}
    mkey = method or ""
    rank_of = SEVERITY_RANK
    for i, f in enumerate(found):
        if f.scope == "service":
            key = (service, "*", "*", f.detector, f.location)
        else:
            key = (service, mkey, path, f.detector, f.location)
        g = groups.get(key)
        if g is None:
            if f.scope == "service":
                g = groups[key] = _Group(key, "*", "*", f, rank_of[f.severity])
            else:
                g = groups[key] = _Group(key, method, path, f, rank_of[f.severity])
        else:
            r = rank_of[f.severity]
            if r > g.rank:
                g.best, g.rank = f, r
        g.n += 1
        if f.value_hash:
            g.hashed.append(i)
    return list(groups.values())


_json_str = json.encoder.encode_basestring_ascii  # what json.dumps writes for a str
_INF = float("inf")


def _json_list(hashes: list[str]) -> str:
    """``json.dumps`` of a list of hex digests."""
    return "[" + ", ".join(map(_json_str, hashes)) + "]" if hashes else "[]"


_HASHED_PLACES = ("request.header:", "response.header:", "request.cookie:", "response.cookie:",
                  "request.query:")


class Findings:
    """Sink: detectors over every transaction, deduplicated findings in the ``findings`` table."""

    def __init__(self, store, run_id: int, registry: Registry | None = None, sample: bool = True):
        self.store = store
        self.sample = sample  # False: analyse every body (exact counts; slower)
        self.db = store.db
        self.run_id = run_id
        self.registry = registry or REGISTRY
        # the store's keyed hash (shared with its redacted samples), else one for its file
        self.hasher = getattr(store, "hasher", None) or Hasher(load_key(getattr(store, "path", ":memory:")))
        self.pending: dict[tuple, _Agg] = {}
        self.run_keys: set[tuple] = set()
        self.examples: dict[tuple, str] = {}  # key -> a concrete path (memory only, for endpoint matching)
        self.seen_tx = 0
        self.kinds: dict[tuple, _Kind] = {}
        self.bodies_analysed = 0
        self.bodies_skipped = 0
        self.skipped_without_body = 0
        self.memo = BodyMemo()
        self._services: dict[tuple, str] = {}
        self._banners: set[tuple] = set()
        self._new_rows = 0
        ensure_table(self.db)

    # ---- Sink ----------------------------------------------------------------------------
    def _kind(self, tx, service: str, path: str) -> tuple[_Kind, bool]:
        """The kind of this transaction and whether to analyse it (see module doc)."""
        banners: list = []
        key = (service, tx.method, path, tx.status_code, body_signature(tx), header_signature(tx, banners))
        kind = self.kinds.get(key)
        if kind is None:
            if len(self.kinds) >= 100_000:
                self.kinds.clear()
            kind = self.kinds[key] = _Kind()
        kind.seen += 1
        analyse = (
            not self.sample
            or kind.quiet < SAMPLE_AFTER
            or (tx.status_code or 0) >= 400
            or kind.seen % SAMPLE_EVERY == 0
        )
        if banners:  # a banner not seen on this service yet is analysed (once)
            for b in banners:
                bkey = (service, *b)
                if bkey not in self._banners:
                    if len(self._banners) >= 100_000:
                        self._banners.clear()
                    self._banners.add(bkey)
                    analyse = True
        return kind, analyse

    def observe(self, tx) -> None:
        self.seen_tx += 1
        host = None
        for k, v in tx.request_headers:
            if len(k) == 4 and k.lower() == "host":
                host = v
                break
        skey = (host, tx.server_ip, tx.server_port)
        service = self._services.get(skey)
        if service is None:
            service = service_name(tx)
            if len(self._services) >= 4096:
                self._services.clear()
            self._services[skey] = service
        method = tx.method
        path = path_template(tx.uri)
        has_body = bool(tx.response_body or tx.request_body)
        kind, analyse = self._kind(tx, service, path)
        if not analyse:
            # a quiet kind: what its last analysis found is counted for this one too
            if has_body:
                self.bodies_skipped += 1
            else:
                self.skipped_without_body += 1
            if kind.found:
                plan = kind.plan
                if kind.src is not None:  # the recipes, from the transaction that found them
                    self._recipes(plan, kind.found, kind.src)
                    kind.src = None
                self._fold(plan, tx, None)
            return
        found = self.registry.detect(tx, self.hasher, memo=self.memo)
        if has_body:
            self.bodies_analysed += 1
        before = self._new_rows
        plan = None
        if found:
            plan = _plan(found, service, method, path)
            self._fold(plan, tx, found)
        if found != kind.found:
            kind.found = found
            kind.plan = plan
            # where its credentials are: worked out if a transaction of the kind is skipped
            kind.src = _Src(tx) if plan else None
        kind.quiet = 0 if self._new_rows > before else kind.quiet + 1

    def _recipes(self, plan: list[_Group], found: list[Finding], tx) -> None:
        """Where each hashed value of a credential in a header, cookie or the query sits in
        ``tx`` (see :func:`_recipe`), for the transactions of the kind that are skipped."""
        hasher = self.hasher
        for g in plan:
            recipes = []
            for i in g.hashed:
                f = found[i]
                if f.location.startswith(_HASHED_PLACES):
                    r = _recipe(tx, f, hasher)
                    if r is not None:
                        recipes.append(r)
            g.recipes = recipes

    def _fold(self, plan: list[_Group], tx, found: list[Finding] | None) -> None:
        """Fold the findings of one transaction, grouped by row (``found``: the transaction's
        own findings, whose value hashes are kept; None: a skipped transaction counting its
        kind's findings, with the hashes of its own values at the places of the recipes)."""
        ts = tx.ts
        ref = (ts, tx.client_ip, tx.client_port, tx.server_ip, tx.server_port, tx.stream_id)
        pending = self.pending
        hasher = self.hasher
        for g in plan:
            key = g.key
            agg = pending.get(key)
            if agg is None:
                agg = pending[key] = _Agg(g.first, key[0], g.method, g.path, ref,
                                          (tx.uri or "").split("?", 1)[0])
                if key not in self.run_keys:
                    self._new_rows += 1
                    self.run_keys.add(key)
                self.examples.setdefault(key, agg.concrete_path)
            agg.count += g.n
            if ts > agg.last_seen:
                agg.last_seen = ts
            if ts < agg.first_seen:
                agg.first_seen = ts
            agg.last_ref = ref
            if g.rank > agg.rank:
                f = g.best
                agg.severity = f.severity
                agg.rank = g.rank
                agg.evidence = f.evidence
                agg.kind = f.kind
                agg.confidence = f.confidence
            hashes = agg.hashes
            if len(hashes) >= MAX_HASHES:
                continue
            if found is not None:
                for i in g.hashed:
                    vh = found[i].value_hash
                    if vh not in hashes and len(hashes) < MAX_HASHES:
                        hashes.append(vh)
            elif g.recipes:
                for r in g.recipes:
                    vh = _rehash(tx, r, hasher)
                    if vh and vh not in hashes and len(hashes) < MAX_HASHES:
                        hashes.append(vh)

    def observe_event(self, ev) -> None:
        pass

    def _ref_json(self, ref: dict) -> str:
        """``json.dumps(ref)`` (the same text, without the general encoder)."""
        ts = ref["ts"]
        stream = ref["stream"]
        plain = (type(ts) is float and ts == ts and ts not in (_INF, -_INF) and type(ref["run"]) is int
                 and (stream is None or type(stream) is int))
        if not plain:
            return json.dumps(ref)
        return (f'{{"run": {ref["run"]}, "ts": {float.__repr__(ts)}, "client": {_json_str(ref["client"])}, '
                f'"server": {_json_str(ref["server"])}, "stream": {"null" if stream is None else stream}}}')

    def _ref(self, ref: tuple) -> dict:
        ts, cip, cport, sip, sport, stream = ref
        return {"run": self.run_id, "ts": ts, "client": format_addr(cip, cport),
                "server": format_addr(sip, sport), "stream": stream}

    def _existing(self) -> dict[tuple, tuple] | None:
        """All rows of the table by key, when the table is small next to what is pending (one
        query instead of one per pending row); None: look rows up one by one."""
        top = self.db.execute(f"SELECT max(id) FROM {TABLE}").fetchone()[0]
        if top is not None and top > 8 * len(self.pending) + 5000:
            return None
        return {
            tuple(r[:5]): r[5:]
            for r in self.db.execute(
                f"SELECT service, ifnull(method, ''), path, detector, location, id, count, first_seen, "
                f"last_seen, severity_rank, value_hashes, first_run_id, first_tx_id FROM {TABLE}"
            )
        }

    def flush(self) -> None:
        if not self.pending:
            return
        db = self.db
        conn = db.conn
        has_tx = "transactions" in db.table_names()
        refs = {}  # ref -> its dict
        for agg in self.pending.values():
            for r in (agg.first_ref, agg.last_ref):
                if r not in refs:
                    refs[r] = self._ref(r)
        # complete: every transaction of the references' time span was read, so one that was not
        # seen is not there (None, without a query per reference)
        tx_ids, complete = self._tx_ids(refs.values()) if has_tx else ({}, False)

        def tx_id(ref: dict) -> int | None:
            if not has_tx:
                return None
            k = (ref["ts"], ref["client"], ref["server"])
            if k not in tx_ids:
                if complete:
                    return None
                tx_ids[k] = self._tx_id(ref)
            return tx_ids[k]

        inserts, updates = [], []
        dumps = json.dumps
        with conn:
            existing = self._existing()
            for key, agg in self.pending.items():
                first_ref = refs[agg.first_ref]
                last_ref = refs[agg.last_ref]
                first_tx = tx_id(first_ref)
                last_tx = tx_id(last_ref)
                if existing is not None:
                    old = existing.get(key)
                else:
                    old = conn.execute(
                        f"SELECT id, count, first_seen, last_seen, severity_rank, value_hashes, "
                        f"first_run_id, first_tx_id FROM {TABLE} WHERE service = ? AND "
                        f"ifnull(method, '') = ? AND path = ? AND detector = ? AND location = ?",
                        key,
                    ).fetchone()
                if old is None:
                    inserts.append((
                        agg.service, agg.method, agg.path, agg.detector, agg.kind,
                        agg.category, agg.severity, agg.rank, agg.confidence,
                        agg.location, agg.evidence, agg.count, agg.first_seen, agg.last_seen,
                        _json_list(agg.hashes), len(agg.hashes), self.run_id, self.run_id, first_tx, last_tx,
                        self._ref_json(last_ref),
                    ))
                    continue
                fid, count, first_seen, last_seen, rank, hashes, first_run, first_tx_old = old
                merged = json.loads(hashes or "[]")
                for h in agg.hashes:
                    if h not in merged and len(merged) < MAX_HASHES:
                        merged.append(h)
                higher = agg.rank > rank
                up = int(higher)
                updates.append((
                    count + agg.count, min(first_seen, agg.first_seen),
                    max(last_seen, agg.last_seen), dumps(merged), len(merged), self.run_id, last_tx,
                    self._ref_json(last_ref),
                    first_tx if first_tx_old is None and first_run == self.run_id else first_tx_old,
                    up, agg.severity, up, agg.rank, up, agg.evidence, up, agg.kind,
                    up, agg.confidence, fid,
                ))
            if inserts:
                conn.executemany(
                    f"INSERT INTO {TABLE} (service, method, path, detector, kind, category, severity, "
                    "severity_rank, confidence, location, evidence, count, first_seen, last_seen, "
                    "value_hashes, distinct_values, first_run_id, last_run_id, first_tx_id, last_tx_id, "
                    "tx_ref) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", inserts)
            if updates:
                conn.executemany(
                    f"UPDATE {TABLE} SET count = ?, first_seen = ?, last_seen = ?, value_hashes = ?, "
                    "distinct_values = ?, last_run_id = ?, last_tx_id = ?, tx_ref = ?, first_tx_id = ?, "
                    "severity = CASE WHEN ? THEN ? ELSE severity END, "
                    "severity_rank = CASE WHEN ? THEN ? ELSE severity_rank END, "
                    "evidence = CASE WHEN ? THEN ? ELSE evidence END, "
                    "kind = CASE WHEN ? THEN ? ELSE kind END, "
                    "confidence = CASE WHEN ? THEN ? ELSE confidence END WHERE id = ?", updates)
        self.pending = {}

    def _tx_ids(self, refs) -> tuple[dict[tuple, int], bool]:
        """(ts, client, server) -> the lowest ``transactions.id`` of this run, for the time span of
        the pending findings' references (one query instead of one per reference), and whether
        that query was made."""
        if 2 * len(self.pending) < 64:
            return {}, False
        times = [r["ts"] for r in refs]
        if not times:
            return {}, False
        out: dict[tuple, int] = {}
        for rid, ts, client, server in self.db.execute(
            "SELECT id, ts, client, server FROM transactions WHERE run_id = ? AND ts >= ? AND ts <= ? "
            "ORDER BY id",
            (self.run_id, min(times), max(times)),
        ):
            out.setdefault((ts, client, server), rid)
        return out, True

    def _tx_id(self, ref: dict) -> int | None:
        got = self.db.execute(
            "SELECT id FROM transactions WHERE run_id = ? AND ts = ? AND client = ? AND server = ? "
            "ORDER BY id LIMIT 1",
            (ref["run"], ref["ts"], ref["client"], ref["server"]),
        ).fetchone()
        return got[0] if got else None

    def finish(self) -> dict[str, Any]:
        self.flush()
        self._match_endpoints()
        counts = {s: 0 for s in reversed(SEVERITIES)}
        for (sev,) in self.db.execute(f"SELECT severity FROM {TABLE} WHERE last_run_id = ?", (self.run_id,)):
            counts[sev] += 1
        total = sum(counts.values())
        out: dict[str, Any] = {"findings": {"total": total, **{k: v for k, v in counts.items() if v}}}
        if self.bodies_skipped or self.skipped_without_body:
            out["findings_sampling"] = {
                "bodies_analysed": self.bodies_analysed,
                "bodies_skipped": self.bodies_skipped,
            }
            if self.skipped_without_body:
                out["findings_sampling"]["skipped_without_body"] = self.skipped_without_body
        return out

    def _match_endpoints(self) -> None:
        try:
            from .inventory import match_endpoint  # written by the inventory feature; optional
        except ImportError:
            return
        if "inventory_meta" not in self.db.table_names():
            return
        matched: dict[tuple, int | None] = {}  # (service, method, path) -> endpoint id
        updates = []
        for key in self.run_keys:
            service, method, path, detector, location = key
            if path == "*":
                continue
            where = (service, method or None, self.examples.get(key) or path)
            if where not in matched:
                try:
                    matched[where] = match_endpoint(self.db, *where)
                except Exception:
                    matched[where] = None
            eid = matched[where]
            if eid is not None:
                updates.append((eid, *key))
        if updates:
            with self.db.conn:
                self.db.conn.executemany(
                    f"UPDATE {TABLE} SET endpoint_id = ? "
                    f"WHERE service = ? AND ifnull(method, '') = ? AND "
                    f"path = ? AND detector = ? AND location = ?",
                    updates,
                )


def query(db, min_severity: str = "info", detector: str | None = None) -> list[dict]:
    """Findings at or above ``min_severity`` (most severe first), as dicts."""
    if TABLE not in db.table_names():
        return []
    sql = (
        f"SELECT id, severity, detector, kind, category, confidence, service, method, path, endpoint_id, "
        f"location, evidence, count, distinct_values, first_seen, last_seen, first_tx_id, last_tx_id "
        f"FROM {TABLE} WHERE severity_rank >= ?"
    )
    args: list = [SEVERITY_RANK[min_severity]]
    if detector:
        sql += " AND detector LIKE ?"
        args.append(detector.rstrip("*") + "%")
    sql += " ORDER BY severity_rank DESC, detector, service, path, location"
    cur = db.execute(sql, args)
    cols = [c[0] for c in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    # the inventory's template (e.g. /users/{user}) names the endpoint the way `endpoints` does
    templates: dict[int, str] = {}
    if "endpoints" in db.table_names():
        ids = sorted({r["endpoint_id"] for r in rows if r["endpoint_id"] is not None})
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            q = f"SELECT id, template FROM endpoints WHERE id IN ({','.join('?' * len(chunk))})"
            templates.update(dict(db.execute(q, chunk).fetchall()))
    for r in rows:
        r["endpoint"] = templates.get(r["endpoint_id"])
    return rows
