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

Sampling (speed, see docs/findings.md "Speed"): headers, cookies, the query and the path of
every transaction are always checked.  Bodies are grouped by *kind*: (service, method, path
template, status, body signature), the signature being which bodies are there, truncated
or flagged by the sensor, and hold an ``@`` (emails), a ``$`` (password hashes) or a
backslash (escaped text: traces, paths).  The bodies of a kind are all analysed until
``SAMPLE_AFTER`` analyses in a row added no new finding row; after that only one body in
``SAMPLE_EVERY`` of that kind is.  Error responses (status >= 400) and a kind's first
bodies are always analysed, and a body with a new signature is a new kind.  Deterministic
for a given transaction order.  What it costs: the ``count`` of a row found in bodies
counts the analysed transactions, and a value that shows up only in sampled-out bodies of
a kind already seen quiet is missed.  ``Findings(..., sample=False)`` analyses every body.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .detectors import REGISTRY, SEVERITIES, SEVERITY_RANK, Finding, Registry
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


def _template(path: str) -> str:
    if path.startswith(("http://", "https://")):
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    out = []
    for seg in path.split("/")[:32]:
        if seg.isalpha() and len(seg) < 16 and not seg.startswith("eyJ"):
            pass  # a word: none of the patterns below
        elif seg.isdecimal() or _SEG_INT.match(seg):
            seg = "{int}"
        elif _SEG_NUMBERISH.match(seg):
            seg = "{id}"
        elif _SEG_UUID.match(seg):
            seg = "{uuid}"
        elif "@" in seg:
            seg = "{email}"
        elif _SEG_HEX.match(seg):
            seg = "{hex}"
        elif seg.startswith("eyJ") or _SEG_TOKEN.match(seg):
            seg = "{token}"
        elif _SEG_MIXED.match(seg) and not re.match(r"^v\d+$", seg):
            seg = "{id}"
        out.append(seg[:80])
    return "/".join(out)[:500] or "/"


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
    """Sampling state of one kind of body."""

    __slots__ = ("seen", "quiet")

    def __init__(self):
        self.seen = 0
        self.quiet = 0  # analyses in a row that added no new row


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
        self._new_rows = 0
        ensure_table(self.db)

    # ---- Sink ----------------------------------------------------------------------------
    def _sample(self, tx, service: str, path: str) -> _Kind | None:
        """The kind of this transaction's bodies if they are to be analysed, else None."""
        if not (tx.response_body or tx.request_body):
            return None
        key = (service, tx.method, path, tx.status_code, body_signature(tx))
        kind = self.kinds.get(key)
        if kind is None:
            if len(self.kinds) >= 100_000:
                self.kinds.clear()
            kind = self.kinds[key] = _Kind()
        kind.seen += 1
        if (
            not self.sample
            or kind.quiet < SAMPLE_AFTER
            or (tx.status_code or 0) >= 400
            or kind.seen % SAMPLE_EVERY == 0
        ):
            return kind
        self.bodies_skipped += 1
        return None

    def observe(self, tx) -> None:
        self.seen_tx += 1
        service = service_name(tx)
        method = tx.method
        path = path_template(tx.uri)
        has_body = bool(tx.response_body or tx.request_body)
        kind = self._sample(tx, service, path) if has_body else None
        found = self.registry.detect(tx, self.hasher, bodies=kind is not None or not has_body)
        if kind is not None:
            self.bodies_analysed += 1
            before = self._new_rows
        if found:
            self._fold_all(found, tx, service, method, path)
        if kind is not None:
            kind.quiet = 0 if self._new_rows > before else kind.quiet + 1

    def _fold_all(self, found: list[Finding], tx, service: str, method: str | None, path: str) -> None:
        ref = {
            "run": self.run_id,
            "ts": tx.ts,
            "client": tx.client,
            "server": tx.server,
            "stream": tx.stream_id,
        }
        for f in found:
            if f.scope == "service":
                self._fold(f, service, "*", "*", tx, ref)
            else:
                self._fold(f, service, method, path, tx, ref)

    def observe_event(self, ev) -> None:
        pass

    def _fold(self, f: Finding, service: str, method: str | None, path: str, tx, ref: dict) -> None:
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
        if f.value_hash and f.value_hash not in agg.hashes and len(agg.hashes) < MAX_HASHES:
            agg.hashes.append(f.value_hash)

    def flush(self) -> None:
        if not self.pending:
            return
        db = self.db
        has_tx = "transactions" in db.table_names()
        with db.conn:
            for key, agg in self.pending.items():
                row = agg.row
                first_tx = self._tx_id(agg.first_ref) if has_tx else None
                last_tx = self._tx_id(agg.last_ref) if has_tx else None
                old = db.execute(
                    f"SELECT id, count, first_seen, last_seen, severity_rank, value_hashes, first_run_id, "
                    f"first_tx_id FROM {TABLE} WHERE service = ? AND ifnull(method, '') = ? AND path = ? "
                    f"AND detector = ? AND location = ?",
                    key,
                ).fetchone()
                if old is None:
                    db[TABLE].insert(
                        {
                            **row,
                            "value_hashes": json.dumps(agg.hashes),
                            "distinct_values": len(agg.hashes),
                            "first_run_id": self.run_id,
                            "last_run_id": self.run_id,
                            "first_tx_id": first_tx,
                            "last_tx_id": last_tx,
                            "tx_ref": json.dumps(agg.last_ref),
                        }
                    )
                    continue
                fid, count, first_seen, last_seen, rank, hashes, first_run, first_tx_old = old
                merged = json.loads(hashes or "[]")
                for h in agg.hashes:
                    if h not in merged and len(merged) < MAX_HASHES:
                        merged.append(h)
                update = {
                    "count": count + row["count"],
                    "first_seen": min(first_seen, row["first_seen"]),
                    "last_seen": max(last_seen, row["last_seen"]),
                    "value_hashes": json.dumps(merged),
                    "distinct_values": len(merged),
                    "last_run_id": self.run_id,
                    "last_tx_id": last_tx,
                    "tx_ref": json.dumps(agg.last_ref),
                }
                if first_tx_old is None and first_run == self.run_id:
                    update["first_tx_id"] = first_tx
                if row["severity_rank"] > rank:
                    update.update(
                        {k: row[k] for k in ("severity", "severity_rank", "evidence", "kind", "confidence")}
                    )
                db[TABLE].update(fid, update)
        self.pending = {}

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
        if self.bodies_skipped:
            out["findings_sampling"] = {
                "bodies_analysed": self.bodies_analysed,
                "bodies_skipped": self.bodies_skipped,
            }
        return out

    def _match_endpoints(self) -> None:
        try:
            from .inventory import match_endpoint  # written by the inventory feature; optional
        except ImportError:
            return
        with self.db.conn:
            for key in self.run_keys:
                service, method, path, detector, location = key
                try:
                    eid = match_endpoint(self.db, service, method or None, self.examples.get(key) or path)
                except Exception:
                    continue
                if eid is not None and path != "*":
                    self.db.execute(
                        f"UPDATE {TABLE} SET endpoint_id = ? "
                        f"WHERE service = ? AND ifnull(method, '') = ? AND "
                        f"path = ? AND detector = ? AND location = ?",
                        (eid, *key),
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
