"""Endpoints and findings for other tools: CSV, JSON, and SARIF 2.1.0 for code-scanning dashboards.

``apisensor export endpoints --db inv.db -o endpoints.csv`` and ``apisensor export findings
--db inv.db -o findings.sarif`` (see :mod:`sensor.cli.ecosystem`).  Everything exported comes
from the database as stored, so it is as redacted as the database is: evidence is masked
(``4111********1111``), example paths and samples went through the redactor.

CSV: one header line, one row per endpoint/finding; lists and objects as JSON text.  A text
cell that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab
or carriage return; paths, hosts and evidence come from the network, so an attacker chooses
them) is prefixed with ``'`` (OWASP's advice against CSV injection); numbers are left alone.

SARIF: one run of the tool ``apisensor``; one rule per detector (OWASP API Top 10 2023
category as a tag, ``security-severity`` for GitHub code scanning); one result per finding
row, located at ``service/path`` (a relative URI: findings are about endpoints, not files)
with a logical location ``METHOD service path``, and a ``partialFingerprints`` value computed
from the finding's key (service, method, path, detector, location), so a dashboard recognises
the same finding in the next upload.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from typing import Any
from urllib.parse import quote

from .detectors import SEVERITY_RANK

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION = "2.1.0"

ENDPOINT_COLUMNS = [
    "service",
    "method",
    "template",
    "operation",
    "api_type",
    "hits",
    "statuses",
    "auth_schemes",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "request_bytes",
    "response_bytes",
    "raw_paths",
    "parameters",
    "response_content_types",
    "findings",
    "worst_severity",
    "first_seen",
    "last_seen",
    "examples",
]
FINDING_COLUMNS = [
    "severity",
    "detector",
    "kind",
    "category",
    "confidence",
    "service",
    "method",
    "path",
    "endpoint",
    "location",
    "evidence",
    "count",
    "distinct_values",
    "first_seen",
    "last_seen",
]

# what each detector catches, for SARIF rule descriptions (docs/findings.md has the full table)
DESCRIPTIONS = {
    "pii.email": "Email addresses in API traffic",
    "pii.phone": "Phone numbers in API traffic",
    "pii.ssn": "US Social Security numbers in API traffic",
    "pii.card": "Payment card numbers (Luhn-valid, known brand) in API traffic",
    "pii.iban": "IBANs (valid check digits) in API traffic",
    "pii.national_id": "National identity numbers with a valid checksum in API traffic",
    "pii.dob": "Dates of birth in API traffic",
    "pii.address": "Street addresses in API traffic",
    "secrets.api_key": "API keys and provider secrets (AWS, GitHub, Stripe, ...) in API traffic",
    "secrets.private_key": "PEM private keys in API traffic",
    "secrets.password": "Plaintext passwords in API traffic",
    "secrets.password_hash": "Password hashes (bcrypt, argon2, crypt formats) in API traffic",
    "secrets.jwt": "JSON Web Tokens returned in responses",
    "errors.stack_trace": "Stack traces in responses (Python, Java, .NET, Node.js, PHP, Ruby, Go, Rust)",
    "errors.debug_page": "Framework debug pages served (Werkzeug, Django, Laravel, Rails, ...)",
    "errors.sql_error": "Database error messages in responses",
    "disclosure.internal_ip": "Private IP addresses disclosed in responses",
    "disclosure.file_path": "Server file paths disclosed in error responses",
    "disclosure.version_banner": "Server software and version disclosed (Server, X-Powered-By, ...)",
    "posture.cleartext_credentials": "Credentials (Authorization, API keys, cookies) sent in cleartext",
    "posture.credentials_in_url": "Tokens, keys or passwords in URLs",
    "posture.jwt_alg_none": "Unsigned JSON Web Tokens (alg: none)",
    "posture.unauthenticated_sensitive": "Personal data or secrets returned to requests without credentials",
}
SARIF_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
# GitHub code scanning reads this property: >= 9 critical, >= 7 high, >= 4 medium, > 0 low
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "1.0"}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def _tables(db) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# ---- rows ----------------------------------------------------------------------------------------


def endpoint_rows(db, service: str | None = None) -> list[dict[str, Any]]:
    """Every endpoint with its statuses, parameters and the findings on it (worst severity)."""
    tables = _tables(db)
    if "endpoints" not in tables:
        return []
    where, args = "", []
    if service:
        where, args = "WHERE s.name = ?", [service]
    statuses: dict[int, dict[str, int]] = {}
    for eid, st, n in db.execute(
        "SELECT endpoint_id, status_code, count FROM endpoint_statuses ORDER BY endpoint_id, status_code"
    ):
        statuses.setdefault(eid, {})[str(st)] = n
    params: dict[int, list[str]] = {}
    for eid, loc, name in db.execute("SELECT endpoint_id, location, name FROM parameters ORDER BY id"):
        params.setdefault(eid, []).append(f"{loc}:{name}")
    found: dict[int, tuple[int, int]] = {}
    if "findings" in tables:
        for eid, n, worst in db.execute(
            "SELECT endpoint_id, count(*), max(severity_rank) FROM findings "
            "WHERE endpoint_id IS NOT NULL GROUP BY endpoint_id"
        ):
            found[eid] = (n, worst)
    names = {v: k for k, v in SEVERITY_RANK.items()}
    rows = []
    for r in db.execute(
        "SELECT e.id, s.name, e.method, e.template, e.operation, e.api_type, e.hits, e.auth_schemes, "
        "e.latency_p50_ms, e.latency_p95_ms, e.latency_p99_ms, e.request_bytes, e.response_bytes, "
        "e.raw_paths, e.response_content_types, e.first_seen, e.last_seen, e.examples "
        f"FROM endpoints e JOIN services s ON s.id = e.service_id {where} "
        "ORDER BY s.name, e.template, e.method, e.operation",
        args,
    ):
        eid = r[0]
        n, worst = found.get(eid, (0, None))
        rows.append(
            {
                "id": eid,
                "service": r[1],
                "method": r[2],
                "template": r[3],
                "operation": r[4] or None,
                "api_type": r[5],
                "hits": r[6],
                "statuses": statuses.get(eid, {}),
                "auth_schemes": r[7] or "",
                "latency_p50_ms": r[8],
                "latency_p95_ms": r[9],
                "latency_p99_ms": r[10],
                "request_bytes": r[11],
                "response_bytes": r[12],
                "raw_paths": r[13],
                "parameters": params.get(eid, []),
                "response_content_types": json.loads(r[14] or "{}"),
                "findings": n,
                "worst_severity": names.get(worst) if worst is not None else None,
                "first_seen": r[15],
                "last_seen": r[16],
                "examples": json.loads(r[17] or "[]"),
            }
        )
    return rows


def finding_rows(db, min_severity: str = "info", detector: str | None = None) -> list[dict[str, Any]]:
    """Findings at or above ``min_severity``, most severe first, times as ISO-8601 UTC."""
    from .findings import query

    if not hasattr(db, "table_names"):  # a plain sqlite3 connection
        import sqlite_utils

        db = sqlite_utils.Database(db)
    rows = query(db, min_severity, detector)
    for r in rows:
        r["first_seen"] = _iso(r["first_seen"])
        r["last_seen"] = _iso(r["last_seen"])
    return rows


# ---- CSV and JSON --------------------------------------------------------------------------------

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        v = json.dumps(v, ensure_ascii=False, sort_keys=isinstance(v, dict))
    if isinstance(v, str) and v.startswith(_FORMULA):
        return "'" + v
    return v


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in columns})
    return out.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"


# ---- SARIF ---------------------------------------------------------------------------------------


def _rule_name(detector: str) -> str:
    return "".join(p.capitalize() for p in detector.replace(".", "_").split("_"))


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("apisensor")
    except Exception:  # not installed (running from a checkout)
        return "0"


def fingerprint(r: dict[str, Any]) -> str:
    """Stable id of a finding across uploads: its key, hashed (no value in it is secret)."""
    key = "\x1f".join(str(r.get(k) or "") for k in ("service", "method", "path", "detector", "location"))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def sarif(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A SARIF 2.1.0 log of the findings ``rows`` (as :func:`finding_rows` gives them)."""
    detectors = sorted({r["detector"] for r in rows})
    index = {d: i for i, d in enumerate(detectors)}
    worst: dict[str, str] = {}
    category: dict[str, str | None] = {}
    for r in rows:
        d = r["detector"]
        if d not in worst or SEVERITY_RANK[r["severity"]] > SEVERITY_RANK[worst[d]]:
            worst[d] = r["severity"]
        category.setdefault(d, r.get("category"))
    rules = []
    for d in detectors:
        text = DESCRIPTIONS.get(d, d)
        tags = ["security", d.split(".")[0]]
        if category.get(d):
            tags.append(category[d].split(" ", 1)[0])  # "API3:2023"
        rules.append(
            {
                "id": d,
                "name": _rule_name(d),
                "shortDescription": {"text": text},
                "fullDescription": {
                    "text": text
                    + (f" ({category[d]})" if category.get(d) else "")
                    + ". Seen passively on the network by apisensor."
                },
                "help": {"text": "See the detector table in docs/findings.md of apisensor."},
                "defaultConfiguration": {"level": SARIF_LEVEL[worst[d]]},
                "properties": {
                    "tags": tags,
                    "security-severity": SECURITY_SEVERITY[worst[d]],
                    "precision": "high",
                },
            }
        )
    results = []
    for r in rows:
        method = r.get("method") or "*"
        path = r.get("endpoint") or r["path"]
        where = r["service"] + ("/" if path == "*" else path if path.startswith("/") else "/" + path)
        what = f"{r['service']} (service-wide)" if r["path"] == "*" else f"{method} {r['service']}{path}"
        text = (
            f"{DESCRIPTIONS.get(r['detector'], r['detector'])}: {r.get('kind') or ''} at {r['location']} "
            f"of {what}, seen {r['count']} times; evidence (redacted): {r.get('evidence') or '-'}"
        )
        results.append(
            {
                "ruleId": r["detector"],
                "ruleIndex": index[r["detector"]],
                "level": SARIF_LEVEL[r["severity"]],
                "message": {"text": text},
                "locations": [
                    {
                        "physicalLocation": {"artifactLocation": {"uri": quote(where, safe="/:@._-~")}},
                        "logicalLocations": [{"fullyQualifiedName": what, "kind": "resource"}],
                    }
                ],
                "partialFingerprints": {"apisensorFinding/v1": fingerprint(r)},
                "properties": {
                    "severity": r["severity"],
                    "confidence": r.get("confidence"),
                    "category": r.get("category"),
                    "service": r["service"],
                    "method": r.get("method"),
                    "path": r["path"],
                    "endpoint": r.get("endpoint"),
                    "location": r["location"],
                    "evidence": r.get("evidence"),
                    "count": r["count"],
                    "distinct_values": r.get("distinct_values"),
                    "first_seen": r.get("first_seen"),
                    "last_seen": r.get("last_seen"),
                    "security-severity": SECURITY_SEVERITY[r["severity"]],
                },
            }
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {"driver": {"name": "apisensor", "version": _version(), "rules": rules}},
                "results": results,
                "columnKind": "unicodeCodePoints",
            }
        ],
    }


def to_sarif(rows: list[dict[str, Any]]) -> str:
    return json.dumps(sarif(rows), indent=2, ensure_ascii=False) + "\n"


__all__ = [
    "endpoint_rows",
    "finding_rows",
    "to_csv",
    "to_json",
    "sarif",
    "to_sarif",
    "ENDPOINT_COLUMNS",
    "FINDING_COLUMNS",
]
