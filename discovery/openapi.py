"""OpenAPI 3.1 documents from the inventory, one per service.

Everything in the document was observed: paths are the learned templates, parameters carry
the inferred types (``required`` when present in every request), request and response
bodies the merged JSON Schemas, responses every status code seen with its content types,
and ``security`` the auth schemes seen (an empty requirement ``{}`` is added when some
requests carried none).  Observation data goes in ``x-apisensor`` extensions (hits, first and
last seen, latency percentiles).  GraphQL operations on one path are listed in
``x-graphql-operations`` of that path's operation.  Methods OpenAPI has no field for
(``PROPFIND``, ``QUERY``, ...) are listed under the path's ``x-apisensor-other-methods``.
"""

from __future__ import annotations

import json
import re
from typing import Any

OPENAPI_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _scheme(name: str) -> tuple[str, dict] | None:
    """auth scheme string (discovery.auth) -> (component name, securityScheme object)."""
    kind, _, rest = name.partition(":")
    if kind == "none":
        return None
    if kind == "basic":
        return "basicAuth", {"type": "http", "scheme": "basic"}
    if kind == "digest":
        return "digestAuth", {"type": "http", "scheme": "digest"}
    if kind == "bearer-jwt":
        return "bearerJWT", {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "x-apisensor-jwt-alg": rest,
        }
    if kind == "bearer":
        return "bearerAuth", {"type": "http", "scheme": "bearer"}
    if kind in ("apikey-header", "apikey-query", "apikey-cookie"):
        where = kind.split("-")[1]
        return _safe(f"apiKey_{where}_{rest}"), {"type": "apiKey", "in": where, "name": rest}
    if kind in ("session-cookie", "cookie-jwt"):
        cname = rest.split(":", 1)[0]
        return _safe(f"cookie_{cname}"), {"type": "apiKey", "in": "cookie", "name": cname}
    return _safe(f"http_{kind}"), {"type": "http", "scheme": kind}


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", s)


def _op_id(method: str, template: str, used: set[str]) -> str:
    base = method.lower() + "_" + (re.sub(r"[^A-Za-z0-9]+", "_", template).strip("_") or "root")
    name, k = base, 2
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def _param_schema(row: dict) -> dict:
    s: dict[str, Any] = {"type": row["type"] or "string"}
    if row["format"]:
        s["format"] = row["format"]
    return s


def build(db, service: str) -> dict:
    """The OpenAPI 3.1 document (a dict) for ``service``; KeyError if there is no such service."""
    row = db.execute(
        "select id, first_seen, last_seen, hits from services where name = ?", [service]
    ).fetchone()
    if row is None:
        raise KeyError(service)
    sid = row[0]
    cols = [
        "id",
        "method",
        "template",
        "operation",
        "hits",
        "first_seen",
        "last_seen",
        "auth",
        "request_content_types",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "raw_paths",
    ]
    eps = [
        dict(zip(cols, r))
        for r in db.execute(
            f"select {', '.join(cols)} from endpoints where service_id = ? order by template, method, "
            "operation",
            [sid],
        )
    ]
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"{service} (observed)",
            "version": (row[2] or "")[:10] or "observed",
            "description": f"Reconstructed by apisensor from traffic seen {row[1]} to {row[2]} "
            f"({row[3]} requests).",
        },
        "servers": [{"url": f"http://{service}"}],
        "paths": {},
    }
    schemes: dict[str, dict] = {}
    used_ids: set[str] = set()
    by_op: dict[tuple[str, str], list[dict]] = {}
    for e in eps:
        by_op.setdefault((e["template"], e["method"].lower()), []).append(e)
    for (template, method), group in sorted(by_op.items()):
        item = doc["paths"].setdefault(template, {})
        if method not in OPENAPI_METHODS:
            item.setdefault("x-apisensor-other-methods", []).append(
                {"method": method.upper(), "hits": sum(e["hits"] for e in group)}
            )
            continue
        e = group[0]
        op: dict[str, Any] = {"operationId": _op_id(method, template, used_ids)}
        params = [
            dict(zip(["location", "name", "type", "format", "required", "count", "examples"], r))
            for r in db.execute(
                "select location, name, type, format, required, count, examples from parameters "
                "where endpoint_id = ? order by location = 'path' desc, id",
                [e["id"]],
            )
        ]
        oparams = []
        for p in params:
            if p["location"] not in ("path", "query") or not p["name"]:
                continue
            oparams.append(
                {
                    "name": p["name"],
                    "in": p["location"],
                    "required": True if p["location"] == "path" else bool(p["required"]),
                    "schema": _param_schema(p),
                    "x-apisensor-count": p["count"],
                }
            )
        if oparams:
            op["parameters"] = oparams
        # request body
        req = db.execute(
            "select schema, bodies from schemas where endpoint_id = ? and direction = 'request'", [e["id"]]
        ).fetchone()
        req_cts = json.loads(e["request_content_types"] or "{}")
        form = [p for p in params if p["location"] == "form"]
        content: dict[str, Any] = {}
        if req is not None:
            ct = next((c for c in req_cts if "json" in c), "application/json")
            content[ct] = {"schema": json.loads(req[0])}
        if form:
            content["application/x-www-form-urlencoded"] = {
                "schema": {
                    "type": "object",
                    "properties": {p["name"]: _param_schema(p) for p in form},
                    **(
                        {"required": [p["name"] for p in form if p["required"]]}
                        if any(p["required"] for p in form)
                        else {}
                    ),
                }
            }
        for ct in req_cts:
            content.setdefault(ct, {})
        if content:
            op["requestBody"] = {"content": content}
        # responses
        responses: dict[str, Any] = {}
        schemas = {
            st: json.loads(s)
            for st, s in db.execute(
                "select status_code, schema from schemas where endpoint_id = ? and direction = 'response'",
                [e["id"]],
            )
        }
        for st, count, cts in db.execute(
            "select status_code, count, content_types from endpoint_statuses "
            "where endpoint_id = ? order by status_code",
            [e["id"]],
        ):
            if not st or st < 100 or st > 599:
                continue
            r: dict[str, Any] = {"description": f"observed {count} times"}
            cts = json.loads(cts or "{}")
            if cts:
                r["content"] = {}
                for ct in cts:
                    r["content"][ct] = {"schema": schemas[st]} if st in schemas and "json" in ct else {}
            responses[str(st)] = r
        op["responses"] = responses or {"default": {"description": "no response observed"}}
        # security
        auth = {}
        for g in group:
            for k, v in json.loads(g["auth"] or "{}").items():
                auth[k] = auth.get(k, 0) + v
        reqs = []
        for name in sorted(auth):
            sch = _scheme(name)
            if sch is None:
                continue
            schemes[sch[0]] = sch[1]
            if {sch[0]: []} not in reqs:
                reqs.append({sch[0]: []})
        if reqs:
            if "none" in auth:
                reqs.append({})
            op["security"] = reqs
        op["x-apisensor"] = {
            "hits": sum(g["hits"] for g in group),
            "first_seen": min(g["first_seen"] for g in group),
            "last_seen": max(g["last_seen"] for g in group),
            "latency_ms": {
                "p50": e["latency_p50_ms"],
                "p95": e["latency_p95_ms"],
                "p99": e["latency_p99_ms"],
            },
            "auth_schemes": auth,
            "raw_paths": sum(g["raw_paths"] for g in group),
        }
        ops = [g["operation"] for g in group if g["operation"]]
        if ops:
            op["x-graphql-operations"] = ops
        item[method] = op
    if schemes:
        doc["components"] = {"securitySchemes": dict(sorted(schemes.items()))}
    return doc


def dump(doc: dict, path: str | None) -> str:
    """YAML when ``path`` ends in .yaml/.yml and PyYAML is installed, else JSON (valid YAML too)."""
    if path and path.lower().endswith((".yaml", ".yml")):
        try:
            import yaml

            return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)
        except ImportError:
            pass
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
