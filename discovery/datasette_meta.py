"""Datasette metadata for an inventory database: table and column descriptions, canned queries.

``apisensor serve --db inv.db`` writes :func:`metadata` to a temporary file and runs
``datasette serve inv.db --metadata FILE`` bound to 127.0.0.1.  Datasette opens a database
file that is not declared immutable read-only (``?mode=ro``), so the sensor can keep writing
while it is browsed, and nothing in the browser can change it; it shows what the database
holds, which is redacted when it was written (``discovery/redact.py``).

Canned queries (``/DB/QUERY`` in the browser, ``/DB/QUERY.json`` for scripts):

- ``top_risky_endpoints``: endpoints ranked by the findings on them; each finding weighs by
  its severity (critical 100, high 30, medium 10, low 3, info 1).
- ``unauthenticated_pii``: endpoints that returned personal data or secrets to a request
  without credentials (a ``posture.unauthenticated_sensitive`` finding), or whose every request
  was unauthenticated and whose responses hold personal data.
- ``new_endpoints_this_week``: endpoints first seen in the 7 days up to the newest request
  in the database (for a live sensor, the last 7 days).
"""

from __future__ import annotations

import os
from typing import Any

TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "services": (
        "One row per API service: a normalised Host header, else the server's ip:port.",
        {
            "name": "Service name (Host header without default port, else ip:port)",
            "first_seen": "Capture time of the first request (ISO-8601 UTC)",
            "last_seen": "Capture time of the last request",
            "hits": "Requests to the service (all of them, static files and probes included)",
            "endpoints": "Endpoints learned for it",
            "probe_hits": "Requests to paths that never answered as existing (404 storms, scanners)",
            "excluded_hits": "Requests to paths excluded by the rules file",
            "static_hits": "Requests for static files (images, css, js, fonts), counted in assets",
            "overflow_hits": "Requests past the per-service path cap that matched no template",
            "created_run": "Run (runs.id) that first saw it",
        },
    ),
    "service_addresses": (
        "Every server ip:port each service answered on.",
        {"address": "Server address ip:port ([v6]:port)", "hits": "Requests to this address"},
    ),
    "endpoints": (
        "The API inventory: one row per method + learned path template (+ GraphQL operation).",
        {
            "method": "HTTP method",
            "template": "Learned path template, e.g. /api/v1/users/{user}/profile",
            "operation": "GraphQL operation ('' for REST)",
            "api_type": "rest or graphql",
            "hits": "Requests",
            "raw_paths": "Distinct path skeletons folded into the template",
            "request_content_types": "Request content types with counts (JSON)",
            "response_content_types": "Response content types with counts (JSON)",
            "auth": "Authentication schemes seen, with counts (JSON); 'none' = no credentials",
            "auth_schemes": "The same, readable",
            "latency_p50_ms": "Median latency, request start to response start (ms, about 4 % error)",
            "latency_p95_ms": "95th percentile latency (ms)",
            "request_bytes": "Request body bytes, decoded",
            "response_bytes": "Response body bytes, decoded",
            "examples": "A few paths as seen, sensitive segments redacted (JSON)",
            "forced": "1 if a rules file forced the template",
            "created_run": "Run that first saw it",
        },
    ),
    "endpoint_statuses": (
        "Response status codes per endpoint (0 = no response seen).",
        {"count": "Responses with this status", "content_types": "Response content types with counts (JSON)"},
    ),
    "parameters": (
        "Path, query and form parameters per endpoint with their types.",
        {
            "location": "path, query or form",
            "type": "Dominant type",
            "format": "String format (uuid, email, ...)",
            "types": "Value types with counts (JSON)",
            "count": "Requests that carried it",
            "required": "1 if every request carried it",
            "distinct_values": "Distinct values (100 = 100 or more)",
            "examples": "Up to 3 example values, personal data and secrets redacted (JSON)",
        },
    ),
    "schemas": (
        "JSON Schema of request (status_code 0) and response bodies per endpoint and status.",
        {
            "direction": "request or response",
            "schema": "JSON Schema (2020-12)",
            "bodies": "Distinct bodies learned",
        },
    ),
    "fields": (
        "The schemas flattened: one row per JSON field (items[].id).",
        {"path": "Field path", "type": "JSON types seen", "required": "1 if in every object"},
    ),
    "samples": (
        "One redacted example transaction per endpoint and status.",
        {
            "uri": "Request URI (redacted)",
            "request_body": "Request body (redacted, at most 2 KB)",
            "response_body": "Response body (redacted, at most 2 KB)",
        },
    ),
    "observed_paths": (
        "Raw material of the inventory: one aggregate per service, method and path skeleton.",
        {
            "path": "Path skeleton (/users/{int})",
            "confirmed": "1 once answered with a status showing it exists",
            "data": "The JSON aggregate (statuses, parameters, schemas, samples)",
            "endpoint_id": "The endpoint it belongs to (NULL for probes)",
        },
    ),
    "templates": ("Learned path templates per service.", {}),
    "probes": (
        "Requests to paths that never answered as existing, per client (scanners, 404 storms).",
        {
            "client": "Client address",
            "paths": "Distinct paths tried",
            "statuses": "Statuses with counts (JSON)",
            "examples": "Up to 10 paths tried (JSON)",
        },
    ),
    "assets": (
        "Static files (images, css, js, fonts, media) per service, classified and not counted as endpoints.",
        {},
    ),
    "changes": (
        "What is new: services, endpoints, parameters and response fields, with when each first appeared.",
        {
            "kind": "service, endpoint, parameter, response_field or endpoint_merged",
            "first_seen": "Capture time it first appeared",
            "detected_at": "Wall-clock time it was recorded",
            "detail": "What it looked like when detected",
        },
    ),
    "findings": (
        "Deduplicated findings of leaked data and internals: one row per endpoint, detector and location.",
        {
            "detector": "family.name, e.g. pii.card, errors.stack_trace",
            "kind": "What exactly: card brand, language, framework...",
            "category": "OWASP API Security Top 10 2023",
            "severity": "info, low, medium, high or critical (highest seen)",
            "severity_rank": "0 (info) to 4 (critical)",
            "location": "Where: response.body:$.user.ssn, request.header:authorization, ...",
            "evidence": "Redacted evidence (4111********1111); raw values are never stored",
            "value_hashes": "Keyed hashes of the distinct values (the key is not in the database)",
            "count": "Transactions it was seen in",
            "first_seen": "Capture time, epoch seconds",
            "last_seen": "Capture time, epoch seconds",
            "endpoint_id": "The inventory's endpoint",
            "path": "Path template as the detectors saw it",
        },
    ),
    "graph_edges": (
        "The dependency map: one edge per client address and called service.",
        {
            "source": "Calling node (resolved name)",
            "target": "Called node (resolved name)",
            "requests": "Cleartext HTTP transactions",
            "tls_connections": "TLS connections (requests not visible)",
            "tcp_flows": "Other TCP flows",
            "errors_4xx": "4xx responses",
            "errors_5xx": "5xx responses",
            "auth": "Request auth schemes with counts (JSON)",
        },
    ),
    "graph_nodes": (
        "The map's nodes: services (called) and clients.",
        {"addresses": "Raw identities merged into the node (JSON)"},
    ),
    "graph_names": ("Names seen for addresses (Host headers, TLS SNI, DNS answers).", {}),
    "runs": (
        "One row per replay, live capture or merge source run, with its counters.",
        {"sources": "Capture files or interface (JSON)", "anomalies": "Anomalies by kind (JSON)"},
    ),
    "transactions": (
        "Every HTTP transaction; credentials in headers and sensitive URI parts are redacted; "
        "bodies are not stored.",
        {
            "request_headers": "Headers as [name, value] (credentials redacted)",
            "latency": "Seconds from request start to response start",
        },
    ),
    "capture_files": (
        "Capture files replayed (by content fingerprint): the same file is not counted twice.",
        {},
    ),
    "merges": (
        "Databases merged into this one (apisensor merge).",
        {"fingerprints": "Fingerprints of the source's runs", "runs": "Their ids here"},
    ),
    "meta": ("Schema versions.", {}),
    "inventory_meta": ("Inventory schema version, stored templating rules, generation.", {}),
}

QUERIES: dict[str, dict[str, str]] = {
    "top_risky_endpoints": {
        "title": "Top risky endpoints",
        "description": "Endpoints ranked by the findings on them, each weighed by its severity "
        "(critical 100, high 30, medium 10, low 3, info 1).",
        "sql": """select s.name as service, e.method, e.template, e.hits, e.auth_schemes as auth,
  count(f.id) as findings,
  sum(case f.severity_rank when 4 then 100 when 3 then 30 when 2 then 10 when 1 then 3 else 1 end) as risk,
  (select f2.severity from findings f2 where f2.endpoint_id = e.id
   order by f2.severity_rank desc limit 1) as worst_severity,
  group_concat(distinct f.detector) as detectors
from endpoints e
join services s on s.id = e.service_id
join findings f on f.endpoint_id = e.id
group by e.id
order by risk desc, e.hits desc
limit 50""",
    },
    "unauthenticated_pii": {
        "title": "Unauthenticated endpoints returning personal data",
        "description": "Endpoints that returned personal data or secrets to a request without credentials, "
        "or whose every request was unauthenticated and whose responses hold personal data.",
        "sql": """select s.name as service, e.method, e.template, e.hits, e.auth_schemes as auth,
  coalesce(json_extract(e.auth, '$.none'), 0) as unauthenticated_requests,
  group_concat(distinct f.detector) as detectors,
  group_concat(distinct f.location) as locations
from endpoints e
join services s on s.id = e.service_id
join findings f on f.endpoint_id = e.id
where f.detector = 'posture.unauthenticated_sensitive'
   or ((f.detector like 'pii.%' or f.detector like 'secrets.%') and f.location like 'response%'
       and not exists (select 1 from json_each(e.auth) where key != 'none'))
group by e.id
order by max(f.severity_rank) desc, e.hits desc""",
    },
    "new_endpoints_this_week": {
        "title": "New endpoints this week",
        "description": "Endpoints first seen in the 7 days up to the newest request in the database (for a "
        "live sensor: the last 7 days).",
        "sql": """select s.name as service, e.method, e.template, e.first_seen, e.hits, e.auth_schemes as auth
from endpoints e
join services s on s.id = e.service_id
where e.first_seen >= strftime('%Y-%m-%dT%H:%M:%fZ', (select max(last_seen) from endpoints), '-7 days')
order by e.first_seen desc""",
    },
}


def database_name(db_path: str) -> str:
    """The name Datasette gives a database file: its file name without the extension."""
    return os.path.splitext(os.path.basename(db_path))[0]


def metadata(db_path: str, tables: list[str] | None = None) -> dict[str, Any]:
    """Datasette metadata for ``db_path``: descriptions of its tables (those in ``tables`` if
    given) and the canned queries."""
    described = {}
    for name, (desc, cols) in TABLES.items():
        if tables is None or name in tables:
            described[name] = {"description": desc, **({"columns": cols} if cols else {})}
    return {
        "title": "apisensor inventory",
        "description": "APIs discovered on the network by apisensor: services, endpoints, findings of leaked "
        "data, changes and the dependency map. Read-only.",
        "databases": {
            database_name(db_path): {
                "description": "Values that are personal data or secrets are stored redacted.",
                "tables": described,
                "queries": QUERIES,
            }
        },
    }


__all__ = ["TABLES", "QUERIES", "metadata", "database_name"]
