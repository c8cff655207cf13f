"""Inventory commands: services, endpoints, changes, openapi, diff, rules, retemplate."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import sys

import click

from . import _fail

_db_opt = click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="SQLite file written by apisensor replay.",
)
_fmt_opts = [
    click.option("--json", "as_json", is_flag=True, help="JSON (one array)."),
    click.option("--csv", "as_csv", is_flag=True, help="CSV with a header line."),
]


def _fmt(f):
    for o in reversed(_fmt_opts):
        f = o(f)
    return f


def _open_db(path: str):
    import sqlite_utils

    from discovery.inventory import ensure_schema

    if not os.path.exists(path):
        _fail(f"{path}: no such database (create it with: apisensor replay FILE.pcap --db {path})")
    try:
        db = sqlite_utils.Database(path)
        db.execute("PRAGMA foreign_keys=ON")
        ensure_schema(db)
    except Exception as e:  # sqlite3.DatabaseError
        _fail(f"{path}: cannot open as a SQLite database ({e})")
    return db


def _emit(rows: list[dict], cols: list[str], as_json: bool, as_csv: bool) -> None:
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if as_csv:
        w = csv.DictWriter(sys.stdout, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
        return
    if not rows:
        click.echo("(none)")
        return

    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:g}"
        if isinstance(v, (dict, list)):
            return json.dumps(v, separators=(",", ":"))
        return str(v)

    table = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    widths = [min(w, 60) for w in widths]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for t in table:
        click.echo(
            "  ".join(v.ljust(w) if len(v) <= w else v[: w - 1] + "…" for v, w in zip(t, widths)).rstrip()
        )


def _when(value: str | None, name: str) -> str | None:
    """``2026-11-29``, ``2026-11-29T10:00``, or ``7d``/``12h``/``30m`` ago -> ISO UTC string."""
    if not value:
        return None
    m = re.fullmatch(r"(\d+)([dhm])", value.strip())
    if m:
        delta = {"d": dt.timedelta(days=1), "h": dt.timedelta(hours=1), "m": dt.timedelta(minutes=1)}[
            m.group(2)
        ]
        t = dt.datetime.now(dt.UTC) - int(m.group(1)) * delta
    else:
        try:
            t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            _fail(f"{name}: cannot read {value!r} as a date (try 2026-11-29, 2026-11-29T10:00 or 7d)")
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@click.command()
@_db_opt
@_fmt
def services(db_path: str, as_json: bool, as_csv: bool) -> None:
    """Services seen (by Host, else server ip:port) with every address they answered on."""
    db = _open_db(db_path)
    rows = []
    for sid, name, first, last, hits, eps, probes, static, excluded, overflow in db.execute(
        "select id, name, first_seen, last_seen, hits, endpoints, probe_hits, static_hits, excluded_hits, "
        "overflow_hits from services order by name"
    ):
        addrs = [
            a
            for (a,) in db.execute(
                "select address from service_addresses where service_id = ? order by address", [sid]
            )
        ]
        rows.append(
            {
                "service": name,
                "addresses": addrs if (as_json or as_csv) else ", ".join(addrs),
                "endpoints": eps,
                "hits": hits,
                "probe_hits": probes,
                "static_hits": static,
                "excluded_hits": excluded,
                "overflow_hits": overflow,
                "first_seen": first,
                "last_seen": last,
            }
        )
    cols = [
        "service",
        "addresses",
        "endpoints",
        "hits",
        "probe_hits",
        "static_hits",
        "first_seen",
        "last_seen",
    ]
    if as_json or as_csv:
        cols += ["excluded_hits", "overflow_hits"]
    _emit(rows, cols, as_json, as_csv)


@click.command()
@_db_opt
@click.option("--service", "-s", default=None, help="Only this service (as `apisensor services` names it).")
@_fmt
def endpoints(db_path: str, service: str | None, as_json: bool, as_csv: bool) -> None:
    """Endpoints (method + path template) with hits, statuses, auth and latency."""
    db = _open_db(db_path)
    q = (
        "select e.id, s.name, e.method, e.template, e.operation, e.hits, e.first_seen, e.last_seen, "
        "e.auth_schemes, "
        "e.latency_p50_ms, e.latency_p95_ms, e.request_bytes, e.response_bytes, e.raw_paths, e.examples, "
        "e.response_content_types from endpoints e join services s on s.id = e.service_id"
    )
    args = []
    if service:
        if db.execute("select 1 from services where name = ?", [service]).fetchone() is None:
            _fail(f"no service {service!r} in {db_path} (see: apisensor services --db {db_path})")
        q += " where s.name = ?"
        args.append(service)
    from discovery.behaviour import endpoint_risk

    risk = endpoint_risk(db)  # 0..100 from exposure, sensitive data, errors, behaviour (docs/actors.md)
    rows = []
    for (
        eid,
        name,
        method,
        template,
        op,
        hits,
        first,
        last,
        auth,
        p50,
        p95,
        rq,
        rs,
        raw,
        examples,
        rct,
    ) in db.execute(q + " order by s.name, e.template, e.method, e.operation", args):
        statuses = {
            str(st): n
            for st, n in db.execute(
                "select status_code, count from endpoint_statuses where endpoint_id = ? order by status_code",
                [eid],
            )
        }
        params = [
            f"{loc}:{n}"
            for loc, n in db.execute(
                "select location, name from parameters where endpoint_id = ? order by id", [eid]
            )
        ]
        row = {
            "id": eid,
            "service": name,
            "method": method,
            "template": template,
            "operation": op or None,
            "hits": hits,
            "statuses": statuses,
            "auth": auth,
            "p50_ms": p50,
            "p95_ms": p95,
            "first_seen": first,
            "last_seen": last,
            "request_bytes": rq,
            "response_bytes": rs,
            "raw_paths": raw,
            "parameters": params,
            "examples": json.loads(examples or "[]"),
            "response_content_types": json.loads(rct or "{}"),
            "risk": risk.get(eid, {"score": 0, "level": "none", "factors": []}),
        }
        if not (as_json or as_csv):
            row["risk"] = f"{row['risk']['score']} {row['risk']['level']}" if row["risk"]["score"] else "-"
            row["statuses"] = " ".join(f"{k}:{v}" for k, v in statuses.items())
            row["path"] = template + (f"  [{op}]" if op else "")
        rows.append(row)
    if as_json or as_csv:
        cols = [
            "id",
            "service",
            "method",
            "template",
            "operation",
            "hits",
            "statuses",
            "auth",
            "p50_ms",
            "p95_ms",
            "first_seen",
            "last_seen",
            "request_bytes",
            "response_bytes",
            "raw_paths",
            "parameters",
            "examples",
            "risk",
        ]
    else:
        cols = ["method", "path", "hits", "risk", "statuses", "auth", "p50_ms", "last_seen"]
        if not service:
            cols.insert(0, "service")
    _emit(rows, cols, as_json, as_csv)


@click.command()
@_db_opt
@click.option(
    "--since",
    default=None,
    metavar="DATE",
    help="Only what first appeared (capture time) at or after DATE (2026-11-29, ...T10:00, or 7d).",
)
@click.option(
    "--not-seen-since",
    "not_seen",
    default=None,
    metavar="DATE",
    help="Instead: services and endpoints whose last request was before DATE.",
)
@click.option(
    "--kind",
    type=click.Choice(["service", "endpoint", "parameter", "response_field", "endpoint_merged"]),
    multiple=True,
    help="Only these kinds of change (repeatable).",
)
@_fmt
def changes(
    db_path: str, since: str | None, not_seen: str | None, kind: tuple[str, ...], as_json: bool, as_csv: bool
) -> None:
    """What is new: services, endpoints, parameters and response fields, with when each first
    appeared; or, with --not-seen-since, what has gone quiet."""
    db = _open_db(db_path)
    if not_seen:
        cutoff = _when(not_seen, "--not-seen-since")
        rows = [
            {"kind": "service", "service": n, "method": None, "template": None, "last_seen": last, "hits": h}
            for n, last, h in db.execute(
                "select name, last_seen, hits from services where last_seen < ? order by last_seen", [cutoff]
            )
        ]
        rows += [
            {"kind": "endpoint", "service": n, "method": m, "template": t, "last_seen": last, "hits": h}
            for n, m, t, last, h in db.execute(
                "select s.name, e.method, e.template, e.last_seen, e.hits from endpoints e join services s "
                "on s.id = e.service_id where e.last_seen < ? order by e.last_seen",
                [cutoff],
            )
        ]
        _emit(rows, ["kind", "service", "method", "template", "last_seen", "hits"], as_json, as_csv)
        return
    q = "select run_id, first_seen, detected_at, kind, service, method, template, name, detail from changes"
    conds, args = [], []
    if since:
        conds.append("coalesce(first_seen, detected_at) >= ?")
        args.append(_when(since, "--since"))
    if kind:
        conds.append(f"kind in ({', '.join('?' for _ in kind)})")
        args.extend(kind)
    if conds:
        q += " where " + " and ".join(conds)
    cols = ["run_id", "first_seen", "detected_at", "kind", "service", "method", "template", "name", "detail"]
    rows = [dict(zip(cols, r)) for r in db.execute(q + " order by id", args)]
    show = (
        cols
        if (as_json or as_csv)
        else ["first_seen", "kind", "service", "method", "template", "name", "detail"]
    )
    _emit(rows, show, as_json, as_csv)


@click.command()
@_db_opt
@click.option("--service", "-s", default=None, help="The service (required when there is more than one).")
@click.option(
    "-o",
    "--output",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write here (.yaml/.yml: YAML, else JSON); default: standard output as YAML.",
)
def openapi(db_path: str, service: str | None, output: str | None) -> None:
    """Write an OpenAPI 3.1 document for one service, from what was observed."""
    from discovery import openapi as oa

    db = _open_db(db_path)
    names = [n for (n,) in db.execute("select name from services where endpoints > 0 order by name")]
    if service is None:
        if len(names) != 1:
            _fail("--service is required; services with endpoints: " + (", ".join(names) or "(none)"))
        service = names[0]
    try:
        doc = oa.build(db, service)
    except KeyError:
        _fail(f"no service {service!r} in {db_path}; services with endpoints: {', '.join(names) or '(none)'}")
    text = oa.dump(doc, output or "stdout.yaml")
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"{service}: {len(doc['paths'])} paths -> {output}", err=True)
    else:
        click.echo(text, nl=False)


@click.command()
@_db_opt
@click.option(
    "--spec",
    "spec_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Their OpenAPI 3.x or Swagger 2.0 document (YAML or JSON).",
)
@click.option("--service", "-s", default=None, help="Service the spec describes (default: guessed).")
@click.option("--json", "as_json", is_flag=True, help="JSON object with shadow, zombie, unused, documented.")
@click.option(
    "--score", is_flag=True, help="Also print templating recall/precision against the spec's paths."
)
def diff(db_path: str, spec_path: str, service: str | None, as_json: bool, score: bool) -> None:
    """Compare observed endpoints with a spec: shadow (seen, not in spec), zombie (seen, deprecated
    in spec), unused (in spec, never seen).  Exit status 0 (differences are not errors)."""
    from discovery import specdiff

    db = _open_db(db_path)
    try:
        spec = specdiff.load_spec(spec_path)
    except Exception as e:
        _fail(f"{spec_path}: cannot read the spec ({e})")
    result = specdiff.diff(db, spec, service)
    if result["service"] is None:
        _fail("no service matches the spec; name it with --service (see: apisensor services)")
    if score:
        result["score"] = specdiff.score(db, spec, result["service"])
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(
        f"service {result['service']} vs {spec_path}: {len(result['documented'])} documented, "
        f"{len(result['shadow'])} shadow, {len(result['zombie'])} zombie, {len(result['unused'])} unused"
    )
    for kind in ("shadow", "zombie"):
        for r in result[kind]:
            extra = f"  ({r['reason']})" if r.get("reason") else f"  (spec: {r['spec_path']})"
            click.echo(
                f"{kind:<7} {r['method']:<7} {r['path']}  hits={r['hits']} last_seen={r['last_seen']}{extra}"
            )
    for r in result["unused"]:
        click.echo(
            f"{'unused':<7} {r['method']:<7} {r['path']}" + ("  (deprecated)" if r["deprecated"] else "")
        )
    if score:
        s = result["score"]
        click.echo(
            f"templating: recall {s['recall']:.3f} ({s['found']}/{s['exercised']}), precision "
            f"{s['precision']:.3f} ({s['exact']}/{s['templates']}), split spec paths {len(s['splits'])}"
        )


@click.command()
@_db_opt
@click.option(
    "--set",
    "set_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Store this rules file (TOML or YAML) in the database for every later run.",
)
@click.option("--clear", is_flag=True, help="Remove the stored rules.")
@click.option("--apply/--no-apply", default=True, help="Rebuild the endpoints with the new rules now.")
def rules(db_path: str, set_file: str | None, clear: bool, apply: bool) -> None:
    """Show, set or clear the templating rules stored in the database (see docs/inventory.md)."""
    from discovery import inventory
    from discovery import rules as rulesmod

    db = _open_db(db_path)
    if set_file or clear:
        if set_file:
            try:
                parsed = rulesmod.load_file(set_file)
            except (rulesmod.RulesError, OSError) as e:
                _fail(str(e))
            inventory.store_rules(db, parsed.text)
            click.echo(f"rules stored from {set_file}", err=True)
        else:
            inventory.store_rules(db, "")
            click.echo("rules cleared", err=True)
        if apply:
            t = inventory.retemplate(db)
            click.echo(f"rebuilt: {t['endpoints']} new endpoints, {t['merged']} merged away", err=True)
        return
    row = db.execute("select value from inventory_meta where key = 'rules'").fetchone()
    click.echo(row[0] if row and row[0] else "# no rules stored")


@click.command()
@_db_opt
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Use this rules file for this rebuild only (default: the stored rules).",
)
def retemplate(db_path: str, rules_file: str | None) -> None:
    """Relearn templates and rebuild every endpoint from the stored observations."""
    from discovery import inventory
    from discovery import rules as rulesmod

    db = _open_db(db_path)
    r = None
    if rules_file:
        try:
            r = rulesmod.load_file(rules_file)
        except (rulesmod.RulesError, OSError) as e:
            _fail(str(e))
    t = inventory.retemplate(db, r)
    n = db.execute("select count(*) from endpoints").fetchone()[0]
    click.echo(f"{n} endpoints ({t['endpoints']} new, {t['merged']} merged away)")
