"""One self-contained HTML report of an inventory database (``apisensor report --db X -o report.html``).

The page holds everything it shows: the summary, the dependency map as inline SVG (drawn by
``graph.render``; the CLI passes it in), and tables of services, endpoints, findings, changes
and runs, sortable (click a column) and filterable (a search box per table, severity boxes
for findings) with a little vanilla JavaScript.  It loads nothing: no CDN, no font, no image
from anywhere (a Content-Security-Policy in the page forbids it), so it can be mailed or
attached to a ticket and opened offline.

Every value comes from the database and goes through :func:`html.escape` (host names, paths,
user agents and evidence are chosen by whoever sends the traffic); values are as redacted as
the database stores them.  Tables stop at ``MAX_ROWS`` rows (the header says so).

A link can sort or filter on opening: ``report.html#sort=endpoints:hits:desc&filter=findings:pii``.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from .detectors import SEVERITIES, SEVERITY_RANK
from .export import _version, endpoint_rows, finding_rows

MAX_ROWS = 5000
MAX_CHANGES = 1000
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_template.html")

_e = html.escape


def _tables(db) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _one(db, sql: str, args: list | None = None, default: Any = 0) -> Any:
    try:
        row = db.execute(sql, args or []).fetchone()
    except Exception:  # a table missing in an old or partial database
        return default
    return row[0] if row and row[0] is not None else default


def _when(v: Any) -> str:
    """``2026-11-29T05:07:00.408Z`` (or epoch seconds) -> ``2026-11-29 05:07:00``."""
    if v is None:
        return ""
    if isinstance(v, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v))
    return str(v).replace("T", " ")[:19]


def _num(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.1f}" if v >= 10 else f"{v:,.2f}"
    return f"{v:,}"


def _path(p: str) -> str:
    """A path, escaped, that may break after each slash."""
    return "/<wbr>".join(_e(part) for part in p.split("/"))


def _sev(s: str | None) -> str:
    return f'<span class="sev {_e(s)}">{_e(s)}</span>' if s else ""


def _method(m: str | None) -> str:
    m = m or "*"
    return f'<span class="m {_e(m)}">{_e(m)}</span>'


def _statuses(st: dict[str, int]) -> str:
    parts = []
    for code, n in sorted(st.items(), key=lambda kv: int(kv[0])):
        cls = "e5" if code[0] == "5" or code == "0" else "e4" if code[0] == "4" else ""
        label = "none" if code == "0" else code
        parts.append(f'<span class="{cls}">{_e(label)}×{n}</span>')
    return '<span class="st">' + " ".join(parts) + "</span>"


# a column: (id, label, kind, value -> (html, sort key or None))
Column = tuple[str, str, str, Callable[[dict], tuple[str, Any]]]


def _text(key: str) -> Callable[[dict], tuple[str, Any]]:
    return lambda r: (_e(str(r.get(key) or "")), None)


def _number(key: str) -> Callable[[dict], tuple[str, Any]]:
    return lambda r: (_num(r.get(key)), "" if r.get(key) is None else r.get(key))


def _time(key: str) -> Callable[[dict], tuple[str, Any]]:
    return lambda r: (_e(_when(r.get(key))), _when(r.get(key)))


def _table(
    tid: str,
    title: str,
    columns: list[Column],
    rows: list[dict],
    total: int | None = None,
    severity: bool = False,
    note: str = "",
    placeholder: str = "Filter",
) -> str:
    total = len(rows) if total is None else total
    head = "".join(
        f'<th data-col="{c[0]}"{" data-desc" if c[2] in ("num", "when") else ""}>{_e(c[1])}</th>'
        for c in columns
    )
    body = []
    for r in rows:
        cells = []
        for _cid, _label, kind, fn in columns:
            content, key = fn(r)
            attr = "" if key is None else f' data-sort="{_e(str(key))}"'
            cells.append(f'<td class="{kind}"{attr}>{content}</td>')
        sev = f' data-severity="{_e(r["severity"])}"' if severity and r.get("severity") else ""
        body.append(f"<tr{sev}>{''.join(cells)}</tr>")
    boxes = ""
    if severity:
        present = {r.get("severity") for r in rows}
        boxes = "".join(
            f'<label><input type="checkbox" value="{s}" checked> {_sev(s)}</label>'
            for s in reversed(SEVERITIES)
            if s in present
        )
    capped = f" (the first {len(rows):,} of {total:,})" if total > len(rows) else ""
    if not rows:
        return (
            f'<section id="{tid}-section"><h2>{_e(title)} <span class="count">none</span></h2>'
            f'<p class="empty">{_e(note or "Nothing recorded.")}</p></section>'
        )
    return (
        f'<section id="{tid}-section"><h2>{_e(title)} <span class="count" id="{tid}-count">{len(rows):,}'
        f"{capped}</span></h2>"
        f'<div class="tools" data-table="{tid}"><input type="search" placeholder="{_e(placeholder)}" '
        f'aria-label="{_e(placeholder)}">{boxes}'
        f"{f'<span class=empty>{_e(note)}</span>' if note else ''}</div>"
        f'<div class="scroll"><table class="data" id="{tid}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></section>"
    )


def embed_svg(svg: str) -> str:
    """Graphviz SVG made fit to be inlined: no XML prologue or doctype, scaled to the page."""
    start = svg.find("<svg")
    if start < 0:
        return ""
    svg = svg[start:]
    end = svg.find(">")
    tag = re.sub(r'\s(width|height)="[^"]*"', "", svg[:end])
    tag += ' role="img" aria-label="dependency map"'
    return tag + svg[end:]


# ---- the data --------------------------------------------------------------------------------


def _services(db, tables: set[str]) -> list[dict]:
    if "services" not in tables:
        return []
    addrs: dict[int, list[str]] = {}
    if "service_addresses" in tables:
        for sid, a in db.execute("SELECT service_id, address FROM service_addresses ORDER BY address"):
            addrs.setdefault(sid, []).append(a)
    worst: dict[str, tuple[int, int]] = {}
    if "findings" in tables:
        for svc, n, rank in db.execute(
            "SELECT service, count(*), max(severity_rank) FROM findings GROUP BY service"
        ):
            worst[svc] = (n, rank)
    names = {v: k for k, v in SEVERITY_RANK.items()}
    out = []
    for sid, name, first, last, hits, eps, probes, static in db.execute(
        "SELECT id, name, first_seen, last_seen, hits, endpoints, probe_hits, static_hits FROM services "
        "ORDER BY hits DESC, name"
    ):
        n, rank = worst.get(name, (0, None))
        out.append(
            {
                "service": name,
                "addresses": ", ".join(addrs.get(sid, [])),
                "endpoints": eps,
                "hits": hits,
                "probe_hits": probes,
                "static_hits": static,
                "first_seen": first,
                "last_seen": last,
                "findings": n,
                "worst": names.get(rank) if rank is not None else None,
            }
        )
    return out


def _changes(db, tables: set[str]) -> tuple[list[dict], int]:
    if "changes" not in tables:
        return [], 0
    total = _one(db, "SELECT count(*) FROM changes")
    cur = db.execute(
        "SELECT first_seen, detected_at, kind, service, method, template, name, detail FROM changes "
        "ORDER BY coalesce(first_seen, detected_at) DESC, id DESC LIMIT ?",
        [MAX_CHANGES],
    )
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur], total


def _runs(db, tables: set[str]) -> list[dict]:
    if "runs" not in tables:
        return []
    cur = db.execute(
        "SELECT id, started_at, finished_at, status, sources, packets, transactions FROM runs ORDER BY id"
    )
    cols = [d[0] for d in cur.description]
    out = []
    for r in cur:
        d = dict(zip(cols, r))
        with contextlib.suppress(ValueError, TypeError):
            d["sources"] = ", ".join(os.path.basename(s) for s in json.loads(d["sources"] or "[]"))
        out.append(d)
    return out


def _card(n: Any, label: str, extra: str = "") -> str:
    return (
        f'<div class="card"><div class="n">{_e(_num(n))}</div><div class="l">{_e(label)}</div>{extra}</div>'
    )


def build(db, name: str, map_svg: str | None = None, map_caption: str = "") -> str:
    """The report of the database ``db`` (a sqlite3 or sqlite_utils connection) as HTML text.
    ``name`` titles it; ``map_svg`` is the dependency map (graphviz SVG) or None."""
    tables = _tables(db)
    services = _services(db, tables)
    endpoints = endpoint_rows(db) if "endpoints" in tables else []
    findings = finding_rows(db) if "findings" in tables else []
    changes, n_changes = _changes(db, tables)
    runs = _runs(db, tables)
    by_sev: dict[str, int] = {}
    for f in findings:
        by_sev[f["severity"]] = by_sev.get(f["severity"], 0) + 1
    n_tx = _one(db, "SELECT count(*) FROM transactions") if "transactions" in tables else 0
    if not n_tx:
        n_tx = _one(db, "SELECT sum(transactions) FROM runs")
    first = _one(db, "SELECT min(first_seen) FROM services", default=None)
    last = _one(db, "SELECT max(last_seen) FROM services", default=None)
    probes = _one(db, "SELECT sum(hits + overflow_hits) FROM probes") if "probes" in tables else 0
    unauth = sum(1 for e in endpoints if e["auth_schemes"] in ("", "none"))
    sevs = "".join(
        f'<span class="sev {s}">{by_sev[s]} {s}</span>' for s in reversed(SEVERITIES) if s in by_sev
    )
    cards = "".join(
        [
            _card(len(services), "services"),
            _card(
                len(endpoints),
                "endpoints",
                f'<div class="sevs"><span class="sev info">{unauth} without auth</span></div>'
                if endpoints
                else "",
            ),
            _card(len(findings), "findings", f'<div class="sevs">{sevs}</div>'),
            _card(n_tx, "transactions"),
            _card(probes, "probe requests"),
            _card(len(runs), "runs" if len(runs) != 1 else "run"),
        ]
    )
    span = f"capture time {_when(first)} – {_when(last)} UTC" if first else "no traffic recorded"
    sources = sorted({s for r in runs for s in (r.get("sources") or "").split(", ") if s})
    subtitle = span + (
        f" · from {', '.join(sources[:4])}" + (" …" if len(sources) > 4 else "") if sources else ""
    )

    def ep(r: dict) -> tuple[str, Any]:
        t = r["template"] + (f" [{r['operation']}]" if r.get("operation") else "")
        seen = ", ".join(r.get("examples") or [])
        return f'<span title="{_e("e.g. " + seen) if seen else ""}">{_path(t)}</span>', t

    def sev_cell(key: str) -> Callable[[dict], tuple[str, Any]]:
        return lambda r: (_sev(r.get(key)), SEVERITY_RANK.get(r.get(key) or "", -1))

    def found(r: dict) -> tuple[str, Any]:
        if not r["findings"]:
            return "", -1
        return f"{_sev(r['worst_severity'] if 'worst_severity' in r else r['worst'])} {r['findings']}", (
            SEVERITY_RANK.get(r.get("worst_severity") or r.get("worst") or "", -1) * 100000 + r["findings"]
        )

    def finding_where(r: dict) -> tuple[str, Any]:
        if r["path"] == "*":
            return '<span class="empty">service-wide</span>', ""
        t = r.get("endpoint") or r["path"]
        return f'{_method(r.get("method"))} <span class="code">{_e(t)}</span>', t

    service_table = _table(
        "services",
        "Services",
        [
            ("service", "Service", "code", _text("service")),
            ("addresses", "Addresses", "code", _text("addresses")),
            ("endpoints", "Endpoints", "num", _number("endpoints")),
            ("hits", "Requests", "num", _number("hits")),
            ("probe_hits", "Probes", "num", _number("probe_hits")),
            ("static_hits", "Static", "num", _number("static_hits")),
            ("findings", "Findings", "num", found),
            ("first_seen", "First seen", "when", _time("first_seen")),
            ("last_seen", "Last seen", "when", _time("last_seen")),
        ],
        services,
        placeholder="Filter services",
    )
    endpoint_table = _table(
        "endpoints",
        "Endpoints",
        [
            ("service", "Service", "code", _text("service")),
            ("method", "Method", "", lambda r: (_method(r["method"]), r["method"])),
            ("template", "Path template", "code wrap", ep),
            ("hits", "Requests", "num", _number("hits")),
            (
                "statuses",
                "Statuses",
                "",
                lambda r: (_statuses(r["statuses"]), " ".join(sorted(r["statuses"]))),
            ),
            ("auth", "Auth", "", _text("auth_schemes")),
            ("p50", "p50 ms", "num", _number("latency_p50_ms")),
            ("p95", "p95 ms", "num", _number("latency_p95_ms")),
            ("findings", "Findings", "num", found),
            ("first_seen", "First seen", "when", _time("first_seen")),
            ("last_seen", "Last seen", "when", _time("last_seen")),
        ],
        endpoints[:MAX_ROWS],
        total=len(endpoints),
        placeholder="Filter endpoints (service, path, method, auth)",
    )
    finding_table = _table(
        "findings",
        "Findings",
        [
            ("severity", "Severity", "", sev_cell("severity")),
            ("detector", "Detector", "code", _text("detector")),
            ("service", "Service", "code", _text("service")),
            ("endpoint", "Endpoint", "", finding_where),
            ("location", "Location", "code wrap", _text("location")),
            ("evidence", "Evidence (redacted)", "code wrap", _text("evidence")),
            ("count", "Count", "num", _number("count")),
            (
                "category",
                "OWASP API 2023",
                "",
                lambda r: (_e((r.get("category") or "").split(" ", 1)[0]), r.get("category") or ""),
            ),
            ("last_seen", "Last seen", "when", _time("last_seen")),
        ],
        findings[:MAX_ROWS],
        total=len(findings),
        severity=True,
        placeholder="Filter findings",
        note="Nothing found by the detectors." if not findings else "",
    )
    change_table = _table(
        "changes",
        "Changes",
        [
            (
                "first_seen",
                "First seen",
                "when",
                lambda r: (
                    _e(_when(r["first_seen"] or r["detected_at"])),
                    _when(r["first_seen"] or r["detected_at"]),
                ),
            ),
            ("kind", "Kind", "", _text("kind")),
            ("service", "Service", "code", _text("service")),
            (
                "method",
                "Method",
                "",
                lambda r: (_method(r["method"]) if r.get("method") else "", r.get("method") or ""),
            ),
            ("template", "Template", "code wrap", _text("template")),
            ("name", "Name", "code", _text("name")),
            ("detail", "Detail", "", _text("detail")),
        ],
        changes,
        total=n_changes,
        placeholder="Filter changes",
    )
    run_table = _table(
        "runs",
        "Runs",
        [
            ("id", "Run", "num", _number("id")),
            ("sources", "Sources", "code wrap", _text("sources")),
            ("started_at", "Started", "when", _time("started_at")),
            ("status", "Status", "", _text("status")),
            ("packets", "Packets", "num", _number("packets")),
            ("transactions", "Transactions", "num", _number("transactions")),
        ],
        runs,
        placeholder="Filter runs",
    )
    map_html = embed_svg(map_svg) if map_svg else ""
    if not map_html:
        map_html = '<p class="empty">No map: nothing in graph_edges, or graphviz is not installed.</p>'
    parts = {
        "title": _e(f"apisensor report: {name}"),
        "name": _e(name),
        "version": _e(_version()),
        "subtitle": _e(subtitle),
        "generated": _e(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        "cards": cards,
        "map": map_html,
        "map_caption": _e(map_caption),
        "tables": service_table + endpoint_table + finding_table + change_table + run_table,
    }
    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], template)


__all__ = ["build", "embed_svg", "MAX_ROWS"]
