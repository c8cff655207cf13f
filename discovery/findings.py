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
SIGNATURE_MARKS = (b"@", b"$", b"\\")
_MARK_BITS = tuple((m, 1 << i) for i, m in enumerate(SIGNATURE_MARKS))

_SEG_INT = re.compile(r"^\d+$")
_SEG_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SEG_HEX = re.compile(r"^[0-9a-fA-F]{16,}$")
_SEG_TOKEN = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_.=+-]{20,}$")
_SEG_MIXED = re.compile(r"^(?=(?:.*\d){3})(?=.*[A-Za-z])[A-Za-z0-9_-]{6,}$")
# digits with separators (an SSN, a phone, a grouped card number): never kept in a template
_SEG_NUMBERISH = re.compile(r"^(?=(?:\D*\d){7})\+?\(?\d[\d().\s-]*\d$")


_TEMPLATES: dict[str, str] = {}


def path_template(uri: str | None) -> str:
    """``/api/v1/users/8f14e45f-.../profile?x=1`` -> ``/api/v1/users/{uuid}/profile``."""
    if not uri:
        return "-"
    path = uri.split("?", 1)[0].split("#", 1)[0].split(";", 1)[0]
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

    __slots__ = ("seen", "quiet", "found", "recipes")

    def __init__(self):
        self.seen = 0
        self.quiet = 0  # analyses in a row that added no new row
        self.found: list[Finding] = []  # what the last analysis found (counted for skipped ones)
        self.recipes: list[tuple | None] = []  # per finding, where its hashed value is (_recipe)


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


def header_signature(tx, banners: list | None = None) -> tuple:
    """Names (and, coarsely, values) of what the detectors read besides the bodies: the
    request and response headers they do not skip, the cookie names, the Authorization scheme
    and a JWT's header, the query's parameter names and value shapes.  Two transactions of an
    endpoint with the same signature are one kind.  Banner headers (``Server``,
    ``X-Powered-By``...: findings of the whole service) are not part of it: they go, with their
    values, into ``banners``."""
    out = []
    for k, v in tx.request_headers:
        lk = k.lower()
        if lk in _REQ_SKIP and lk != "cookie" or lk.startswith("sec-"):
            continue
        if lk == "authorization" or lk == "proxy-authorization":
            scheme, _, cred = v.strip().partition(" ")
            cred = cred.strip()
            jwt = cred.partition(".")[0] if cred.count(".") == 2 else None  # a JWT's header: its alg
            out.append((lk, scheme.lower(), jwt or _value_shape(cred)))
        elif lk == "cookie":
            out.append((lk, tuple(sorted(c.strip().partition("=")[0] for c in v.split(";")))))
        else:
            out.append((lk, _value_shape(v)))
    out.append("|")
    for k, v in tx.response_headers:
        lk = k.lower()
        if lk == "set-cookie":
            out.append((lk, v.partition("=")[0].strip()))
        elif lk in _SIG_VALUE:
            if banners is not None:
                banners.append((lk, v))
        elif lk not in _RESP_SKIP:
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
    sides = ((0, tx.response_body, tx.response_body_len), (8, tx.request_body, tx.request_body_len))
    for shift, body, total in sides:
        if body:
            for mark, bit in _MARK_BITS:
                if mark in body:
                    sig |= bit << shift
            sig |= 1 << (shift + 6)
            if len(body) < total:
                sig |= 1 << (shift + 7)
    return sig


class _Agg:
    __slots__ = ("row", "hashes", "first_ref", "last_ref", "concrete_path")

    def __init__(self, row: dict, ref: dict, concrete_path: str):
        self.row = row
        self.hashes: list[str] = []
        self.first_ref = ref
        self.last_ref = ref
        self.concrete_path = concrete_path


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
                hasher = self.hasher
                self._fold_all(kind.found, tx, service, method, path,
                               [None if r is None else _rehash(tx, r, hasher) for r in kind.recipes])
            return
        found = self.registry.detect(tx, self.hasher, memo=self.memo)
        if has_body:
            self.bodies_analysed += 1
        before = self._new_rows
        if found:
            self._fold_all(found, tx, service, method, path)
        if found != kind.found:
            kind.found = found
            kind.recipes = [_recipe(tx, f, self.hasher) for f in found]
        kind.quiet = 0 if self._new_rows > before else kind.quiet + 1

    def _fold_all(self, found: list[Finding], tx, service: str, method: str | None, path: str,
                  hashes: list | None = None) -> None:
        """Fold the findings of one transaction (``hashes``: the value hash of each, when they
        are not the findings' own: a skipped transaction counting its kind's findings)."""
        ref = {
            "run": self.run_id,
            "ts": tx.ts,
            "client": tx.client,
            "server": tx.server,
            "stream": tx.stream_id,
        }
        for i, f in enumerate(found):
            vh = f.value_hash if hashes is None else hashes[i]
            if f.scope == "service":
                self._fold(f, service, "*", "*", tx, ref, vh)
            else:
                self._fold(f, service, method, path, tx, ref, vh)

    def observe_event(self, ev) -> None:
        pass

    def _fold(self, f: Finding, service: str, method: str | None, path: str, tx, ref: dict,
              value_hash: str | None) -> None:
        key = (service, method or "", path, f.detector, f.location)
        agg = self.pending.get(key)
        if agg is None:
            row = {
                "service": service,
                "method": method,
                "path": path,
                "detector": f.detector,
                "kind": f.kind,
                "category": f.category,
                "severity": f.severity,
                "severity_rank": SEVERITY_RANK[f.severity],
                "confidence": f.confidence,
                "location": f.location,
                "evidence": f.evidence,
                "count": 0,
                "first_seen": tx.ts,
                "last_seen": tx.ts,
            }
            agg = self.pending[key] = _Agg(row, ref, (tx.uri or "").split("?", 1)[0])
            if key not in self.run_keys:
                self._new_rows += 1
            self.run_keys.add(key)
            self.examples.setdefault(key, agg.concrete_path)
        row = agg.row
        row["count"] += 1
        row["last_seen"] = max(row["last_seen"], tx.ts)
        row["first_seen"] = min(row["first_seen"], tx.ts)
        agg.last_ref = ref
        if SEVERITY_RANK[f.severity] > row["severity_rank"]:
            row.update(
                severity=f.severity,
                severity_rank=SEVERITY_RANK[f.severity],
                evidence=f.evidence,
                kind=f.kind,
                confidence=f.confidence,
            )
        if value_hash and value_hash not in agg.hashes and len(agg.hashes) < MAX_HASHES:
            agg.hashes.append(value_hash)

    def flush(self) -> None:
        if not self.pending:
            return
        db = self.db
        conn = db.conn
        has_tx = "transactions" in db.table_names()
        tx_ids = self._tx_ids() if has_tx else {}

        def tx_id(ref: dict) -> int | None:
            if not has_tx:
                return None
            k = (ref["ts"], ref["client"], ref["server"])
            if k not in tx_ids:
                tx_ids[k] = self._tx_id(ref)
            return tx_ids[k]

        inserts, updates = [], []
        with conn:
            for key, agg in self.pending.items():
                row = agg.row
                first_tx = tx_id(agg.first_ref)
                last_tx = tx_id(agg.last_ref)
                old = conn.execute(
                    f"SELECT id, count, first_seen, last_seen, severity_rank, value_hashes, first_run_id, "
                    f"first_tx_id FROM {TABLE} WHERE service = ? AND ifnull(method, '') = ? AND path = ? "
                    f"AND detector = ? AND location = ?",
                    key,
                ).fetchone()
                if old is None:
                    inserts.append((
                        row["service"], row["method"], row["path"], row["detector"], row["kind"],
                        row["category"], row["severity"], row["severity_rank"], row["confidence"],
                        row["location"], row["evidence"], row["count"], row["first_seen"], row["last_seen"],
                        json.dumps(agg.hashes), len(agg.hashes), self.run_id, self.run_id, first_tx, last_tx,
                        json.dumps(agg.last_ref),
                    ))
                    continue
                fid, count, first_seen, last_seen, rank, hashes, first_run, first_tx_old = old
                merged = json.loads(hashes or "[]")
                for h in agg.hashes:
                    if h not in merged and len(merged) < MAX_HASHES:
                        merged.append(h)
                higher = row["severity_rank"] > rank
                up = int(higher)
                updates.append((
                    count + row["count"], min(first_seen, row["first_seen"]),
                    max(last_seen, row["last_seen"]), json.dumps(merged), len(merged), self.run_id, last_tx,
                    json.dumps(agg.last_ref),
                    first_tx if first_tx_old is None and first_run == self.run_id else first_tx_old,
                    up, row["severity"], up, row["severity_rank"], up, row["evidence"], up, row["kind"],
                    up, row["confidence"], fid,
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

    def _tx_ids(self) -> dict[tuple, int]:
        """(ts, client, server) -> the lowest ``transactions.id`` of this run, for the time span of
        the pending findings' references (one query instead of one per reference)."""
        times = [t for agg in self.pending.values() for t in (agg.first_ref["ts"], agg.last_ref["ts"])]
        if len(times) < 64:
            return {}
        out: dict[tuple, int] = {}
        for rid, ts, client, server in self.db.execute(
            "SELECT id, ts, client, server FROM transactions WHERE run_id = ? AND ts >= ? AND ts <= ? "
            "ORDER BY id",
            (self.run_id, min(times), max(times)),
        ):
            out.setdefault((ts, client, server), rid)
        return out

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
