"""Observed endpoints against a published spec (OpenAPI 3.x or Swagger 2.0, YAML or JSON).

- **shadow**: seen on the wire, not in the spec (the path, or that method on it);
- **zombie**: seen, but the spec marks the operation ``deprecated``;
- **unused**: in the spec, never seen;
- **documented**: seen and in the spec.

An observed template matches a spec path segment by segment: a spec parameter segment
(``{id}``, or ``{name}.json``) matches anything; a literal must be equal; an observed
parameter never matches a spec literal.  When several spec paths match, the most specific
(most literal segments, leftmost first) wins.  The spec's ``basePath`` (2.0) or the path of
its first server URL (3.x) is prefixed to its paths.

:func:`score` measures templating against a spec: recall (spec paths exercised that were
discovered as exactly that template), precision (discovered templates that are exactly a spec
path) and splits (spec paths that more than one discovered template maps to).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load_spec(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.lower().endswith((".yaml", ".yml")) or not text.lstrip().startswith("{"):
        import yaml

        doc = yaml.safe_load(text)
    else:
        doc = json.loads(text)
    if not isinstance(doc, dict) or "paths" not in doc:
        raise ValueError(f"{path}: not an OpenAPI/Swagger document (no 'paths')")
    return doc


def _prefix(spec: dict) -> str:
    if "swagger" in spec:
        base = spec.get("basePath") or ""
    else:
        servers = spec.get("servers") or []
        base = urlparse(servers[0].get("url", "")).path if servers and isinstance(servers[0], dict) else ""
    base = base.rstrip("/")
    return "" if base in ("", "/") else base


@dataclass(frozen=True)
class SpecOp:
    method: str  # upper case
    path: str  # with the base prefix
    spec_path: str  # as written in the spec
    deprecated: bool


def operations(spec: dict) -> list[SpecOp]:
    pre = _prefix(spec)
    out = []
    for p, item in (spec.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for m, op in item.items():
            if m.lower() in METHODS and isinstance(op, dict):
                out.append(SpecOp(m.upper(), pre + p, p, bool(op.get("deprecated"))))
    return sorted(out, key=lambda o: (o.path, o.method))


def _segs(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _seg_re(seg: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]*\})", seg)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + r"\Z")


def _is_param(seg: str) -> bool:
    return seg.startswith("{") and seg.endswith("}")


def match_score(spec_path: str, template: str) -> tuple | None:
    """How specifically ``spec_path`` matches the observed ``template`` (None = no match)."""
    a, b = _segs(spec_path), _segs(template)
    if len(a) != len(b):
        return None
    score = []
    for s, t in zip(a, b):
        if "{" not in s:
            if s != t:
                return None
            score.append(2)
        elif _is_param(s):
            score.append(0)
        else:  # partial parameter like {name}.json
            if not _is_param(t) and not _seg_re(s).match(t):
                return None
            score.append(1)
    return tuple(score)


def best_match(paths: list[str], template: str) -> str | None:
    best, best_score = None, None
    for p in paths:
        sc = match_score(p, template)
        if sc is not None and (best_score is None or sc > best_score):
            best, best_score = p, sc
    return best


def _endpoints(db, service: str | None) -> list[dict]:
    q = (
        "select s.name, e.method, e.template, e.operation, e.hits, e.last_seen, e.examples from endpoints e "
        "join services s on s.id = e.service_id"
    )
    args: list[Any] = []
    if service:
        q += " where s.name = ?"
        args.append(service)
    cols = ["service", "method", "template", "operation", "hits", "last_seen", "examples"]
    return [dict(zip(cols, r)) for r in db.execute(q + " order by s.name, e.template, e.method", args)]


def pick_service(db, spec: dict) -> str | None:
    """The service the spec describes: the one matching its host/servers, else the one with the
    most endpoints matching spec paths."""
    hosts = set()
    if spec.get("host"):
        hosts.add(str(spec["host"]).lower())
    for s in spec.get("servers") or []:
        if isinstance(s, dict) and s.get("url"):
            h = urlparse(s["url"]).netloc.lower()
            if h:
                hosts.add(h)
    names = [r[0] for r in db.execute("select name from services")]
    for h in sorted(hosts):
        for n in names:
            if n == h or n == h.removesuffix(":80") or n == h.removesuffix(":443"):
                return n
    paths = sorted({o.path for o in operations(spec)})
    best, best_n = None, 0
    for n in sorted(names):
        k = sum(1 for e in _endpoints(db, n) if best_match(paths, e["template"]))
        if k > best_n:
            best, best_n = n, k
    return best


def diff(db, spec: dict, service: str | None = None) -> dict:
    """``{"service", "shadow": [...], "zombie": [...], "unused": [...], "documented": [...]}``."""
    if service is None:
        service = pick_service(db, spec)
    ops = operations(spec)
    paths = sorted({o.path for o in ops})
    by_key = {(o.method, o.path): o for o in ops}
    seen_ops: set[tuple[str, str]] = set()
    shadow, zombie, documented = [], [], []
    for e in _endpoints(db, service) if service else []:
        p = best_match(paths, e["template"])
        row = {
            "method": e["method"],
            "path": e["template"],
            "operation": e["operation"] or None,
            "hits": e["hits"],
            "last_seen": e["last_seen"],
            "spec_path": None,
        }
        if p is None:
            # a raw example path may still match a spec literal the template generalised
            for ex in json.loads(e["examples"] or "[]"):
                p = best_match(paths, ex)
                if p is not None:
                    break
        op = by_key.get((e["method"], p)) if p else None
        if op is None:
            row["spec_path"] = p
            row["reason"] = "method not in spec" if p else "path not in spec"
            shadow.append(row)
            continue
        seen_ops.add((op.method, op.path))
        row["spec_path"] = op.spec_path
        (zombie if op.deprecated else documented).append(row)
    unused = [
        {"method": o.method, "path": o.path, "spec_path": o.spec_path, "deprecated": o.deprecated}
        for o in ops
        if (o.method, o.path) not in seen_ops
    ]
    return {
        "service": service,
        "shadow": shadow,
        "zombie": zombie,
        "unused": unused,
        "documented": documented,
    }


def _norm(path: str) -> str:
    return "/" + "/".join("{}" if "{" in s else s for s in _segs(path))


def score(db, spec: dict, service: str | None = None, exercised: set[str] | None = None) -> dict:
    """Templating quality against a spec (paths, all methods pooled; see module doc).

    ``exercised``: the spec paths (as written in the spec) that the traffic exercised with an
    answer showing they exist; default: every spec path."""
    if service is None:
        service = pick_service(db, spec)
    pre = _prefix(spec)
    spec_paths = sorted({o.path for o in operations(spec)})
    if exercised is not None:
        targets = sorted(pre + p for p in exercised)
    else:
        targets = spec_paths
    templates = sorted({e["template"] for e in _endpoints(db, service)}) if service else []
    norm_t = {_norm(t) for t in templates}
    found = [p for p in targets if _norm(p) in norm_t]
    exact = [t for t in templates if _norm(t) in {_norm(p) for p in spec_paths}]
    owners: dict[str, list[str]] = {}
    unmatched = []
    for t in templates:
        p = best_match(spec_paths, t)
        if p is None:
            unmatched.append(t)
        else:
            owners.setdefault(p, []).append(t)
    splits = {p: ts for p, ts in owners.items() if len(ts) > 1}
    return {
        "service": service,
        "recall": len(found) / len(targets) if targets else 1.0,
        "precision": len(exact) / len(templates) if templates else 1.0,
        "exercised": len(targets),
        "found": len(found),
        "templates": len(templates),
        "exact": len(exact),
        "missed": [p for p in targets if p not in found],
        "not_in_spec": [t for t in templates if t not in exact],
        "splits": splits,
        "unmatched": unmatched,
    }
