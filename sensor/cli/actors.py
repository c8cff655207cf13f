"""``apisensor actors`` and ``apisensor sessions``: who called the APIs, and what each of them did."""

from __future__ import annotations

import json
import os

import click

from . import _fail

_db_opt = click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="SQLite file written by `apisensor replay` (or capture).",
)


def _open(path: str, need_actors: bool = True, create: bool = False):
    import sqlite_utils

    if create and not os.path.exists(path):  # settings before the first replay
        from discovery.store import Store

        try:
            Store(path).close()
        except Exception as e:
            _fail(f"{path}: cannot create ({e})")
    if not os.path.exists(path):
        _fail(f"{path}: no such file (create it with: apisensor replay FILE.pcap --db {path})")
    try:
        db = sqlite_utils.Database(path)
        names = set(db.table_names())
    except Exception as e:  # sqlite3.DatabaseError: not a database
        _fail(f"{path}: cannot open as a SQLite database ({e})")
    if need_actors and "actors" not in names:
        _fail(
            f"{path}: no actors recorded (replay a capture into it first: apisensor replay FILE.pcap "
            f"--db {path})"
        )
    return db


def _iso(ts: float | None) -> str:
    from discovery.inventory import iso

    return iso(ts) or "-"


def _size(n: int | None) -> str:
    n = n or 0
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _short(detectors: list[str]) -> str:
    from discovery.behaviour import SHORT

    return ",".join(SHORT.get(d, d) for d in detectors) or "-"


def _resolve(db, query: str) -> list[tuple[int, str]]:
    """Actors matching ``query``: an exact id, a unique prefix, or a client address."""
    rows = db.execute("select id, actor from actors where actor = ?", [query]).fetchall()
    if rows:
        return rows
    rows = db.execute(
        "select id, actor from actors where actor like ? escape '\\' order by id",
        [query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"],
    ).fetchall()
    if len(rows) == 1:
        return rows
    by_addr = [
        (i, a)
        for i, a, addrs in db.execute("select id, actor, addresses from actors order by id")
        if query in json.loads(addrs or "[]")
    ]
    if by_addr:
        return by_addr
    if len(rows) > 1:
        _fail(
            f"{query!r} matches {len(rows)} actors ({', '.join(a for _, a in rows[:6])}...): give "
            "more of the id"
        )
    _fail(f"no actor {query!r} (list them with: apisensor actors --db ...)")
    return []


@click.command()
@_db_opt
@click.option("--flagged", is_flag=True, help="Only actors with behaviour findings.")
@click.option("--address", default=None, metavar="IP", help="Only actors seen from this client address.")
@click.option(
    "--limit", type=click.IntRange(1), default=200, show_default=True, help="At most this many rows."
)
@click.option("--json", "as_json", is_flag=True, help="JSON (one array).")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Change a setting of the behaviour analysis (repeatable), then analyse again.",
)
@click.option("--settings", "show_settings", is_flag=True, help="Print the settings in use and exit.")
@click.option(
    "--analyse",
    "analyse",
    is_flag=True,
    help="Analyse every actor again with the current settings (rebuilds the behaviour findings).",
)
def actors(
    db_path: str,
    flagged: bool,
    address: str | None,
    limit: int,
    as_json: bool,
    sets: tuple[str, ...],
    show_settings: bool,
    analyse: bool,
) -> None:
    """Actors seen in --db: who made the calls, from where, and what they were flagged for.

    An actor is a JWT subject, a session cookie, an API key, a Basic user (each stored as a
    keyed hash: jwt:3fa2..., cookie:..., apikey:...) or, for calls without credentials, the
    client address (ip:10.0.0.7).  Most suspicious first.

    \b
    Examples:
      apisensor actors --db inv.db
      apisensor actors --db inv.db --flagged --json
      apisensor actors --db inv.db --settings
      apisensor actors --db inv.db --set min_objects=50 --set ratio=8   # stricter, re-analysed
      apisensor sessions --db inv.db --actor jwt:3fa2                   # what one of them did
    """
    from discovery.behaviour import SEVERITY_RANK, Settings, analyse_db

    db = _open(db_path, need_actors=not (sets or show_settings), create=bool(sets))
    from discovery.actors import ensure_schema

    if sets or show_settings or analyse:
        try:
            with db.conn:
                ensure_schema(db)
        except Exception as e:  # read-only file, locked database
            _fail(f"{db_path}: cannot write settings ({e})")
    settings = Settings.load(db)
    if sets:
        changes = {}
        for item in sets:
            key, eq, value = item.partition("=")
            if not eq:
                _fail(f"--set {item!r}: expected KEY=VALUE (e.g. --set min_objects=50)")
            try:
                changes[key.strip()] = Settings.parse(key.strip(), value.strip())
            except ValueError as e:
                _fail(f"--set: {e}")
        settings.save(db, changes)
        if set(changes) - {"session_idle", "max_actors"}:
            analyse = True
        click.echo("saved: " + ", ".join(f"{k}={v}" for k, v in changes.items()), err=True)
    if show_settings:
        doc = {k: getattr(settings, k) for k in Settings.names()}
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        else:
            for k, v in doc.items():
                click.echo(f"{k:<20} {v}")
        return
    if analyse:
        if "actor_endpoints" not in db.table_names():
            _fail(f"{db_path}: no actors recorded yet: the settings apply to the next replay")
        n = analyse_db(db, settings, replace=True)
        click.echo(f"analysed again: {n} behaviour findings", err=True)
    if "actors" not in db.table_names():
        return
    rows = []
    for r in db.execute(
        "select id, actor, kind, label, issuer, addresses, first_seen, last_seen, calls, "
        "static_calls, sessions, "
        "errors, denied, not_found, request_bytes, response_bytes, records, sensitive_records, "
        "findings, severity "
        "from actors"
    ):
        (
            aid,
            actor,
            kind,
            label,
            issuer,
            addrs,
            first,
            last,
            calls,
            static,
            sess,
            errors,
            denied,
            nf,
            rq,
            rs,
            records,
            sensitive,
            found,
            sev,
        ) = r
        addrs = json.loads(addrs or "[]")
        found = json.loads(found or "[]")
        if flagged and not found:
            continue
        if address and address not in addrs:
            continue
        rows.append(
            {
                "id": aid,
                "actor": actor,
                "kind": kind,
                "label": label,
                "issuer": issuer,
                "addresses": addrs,
                "first_seen": _iso(first),
                "last_seen": _iso(last),
                "calls": calls,
                "static_calls": static,
                "sessions": sess,
                "errors": errors,
                "denied": denied,
                "not_found": nf,
                "request_bytes": rq,
                "response_bytes": rs,
                "records": records,
                "sensitive_records": sensitive,
                "findings": found,
                "severity": sev,
            }
        )
    rows.sort(
        key=lambda r: (
            -SEVERITY_RANK.get(r["severity"] or "", -1),
            -len(r["findings"]),
            -r["calls"],
            r["actor"],
        )
    )
    total = len(rows)
    rows = rows[:limit]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no flagged actors" if flagged else "no actors")
        return
    click.echo(
        f"{'actor':<22} {'kind':<7} {'addresses':<18} {'calls':>6} {'sess':>4} {'err':>4} {'sens':>5} "
        f"{'received':>9}  {'last seen':<24} findings"
    )
    for r in rows:
        addrs = (r["addresses"] or ["-"])[0] + (
            f" +{len(r['addresses']) - 1}" if len(r["addresses"]) > 1 else ""
        )
        sev = f"{r['severity']}: " if r["severity"] else ""
        click.echo(
            f"{r['actor']:<22} {r['kind']:<7} {addrs[:18]:<18} {r['calls']:>6} {r['sessions']:>4} "
            f"{r['errors']:>4} {r['sensitive_records']:>5} {_size(r['response_bytes']):>9}  "
            f"{r['last_seen']:<24} {sev}{_short(r['findings'])}"
        )
    more = f" (showing {len(rows)}; --limit)" if total > len(rows) else ""
    n_flagged = sum(1 for r in rows if r["findings"])
    click.echo(
        f"{total} actors, {n_flagged} flagged{more}.  Timeline: apisensor sessions --db {db_path} "
        f"--actor ACTOR"
    )


def _timeline(db, sid: int, limit: int) -> list[dict]:
    names = set(db.table_names())
    has_tx = "transactions" in names
    has_ep = "endpoints" in names
    sql = (
        "select c.id, c.ts, c.method, c.status, c.response_bytes, c.sensitive, c.flags, c.marks, c.tx_id, "
        f"ae.path, {'e.template' if has_ep else 'null'}, {'t.uri' if has_tx else 'null'}, "
        f"{'t.client' if has_tx else 'null'} from actor_calls c "
        "left join actor_endpoints ae on ae.id = c.actor_endpoint_id "
    )
    if has_ep:
        sql += "left join endpoints e on e.id = ae.endpoint_id "
    if has_tx:
        sql += "left join transactions t on t.id = c.tx_id "
    sql += "where c.session_id = ? order by c.ts, c.id limit ?"
    out = []
    for cid, ts, method, status, rbytes, sens, flags, marks, tx_id, skel, template, uri, client in db.execute(
        sql, [sid, limit]
    ):
        out.append(
            {
                "ts": ts,
                "method": method,
                "uri": uri,
                "endpoint": template or (skel if skel != "*" else None),
                "status": status,
                "response_bytes": rbytes,
                "sensitive_records": sens,
                "credentials": not (flags or 0) & 1,
                "login": bool((flags or 0) & 8),
                "failed_login": bool((flags or 0) & 2),
                "unknown_path": bool((flags or 0) & 4),
                "issued_credential": bool((flags or 0) & 16),
                "marks": marks.split(",") if marks else [],
                "tx_id": tx_id,
                "client": client,
                "call_id": cid,
            }
        )
    return out


@click.command()
@_db_opt
@click.option(
    "--actor",
    "actor_q",
    default=None,
    metavar="ACTOR",
    help="An actor id (jwt:3fa2c1d9e0b7), a unique prefix of one, or a client address.",
)
@click.option("--session", "session_id", type=int, default=None, metavar="ID", help="Only this session.")
@click.option("--flagged", is_flag=True, help="Only sessions with behaviour findings.")
@click.option(
    "--calls",
    "max_calls",
    type=click.IntRange(1),
    default=500,
    show_default=True,
    help="At most this many calls per session timeline.",
)
@click.option(
    "--limit", type=click.IntRange(1), default=200, show_default=True, help="At most this many sessions."
)
@click.option("--json", "as_json", is_flag=True, help="JSON (one array of sessions, each with its calls).")
def sessions(
    db_path: str,
    actor_q: str | None,
    session_id: int | None,
    flagged: bool,
    max_calls: int,
    limit: int,
    as_json: bool,
) -> None:
    """Sessions (an actor's calls with idle gaps under the session_idle setting) and their timelines.

    Without --actor or --session: the list of sessions, flagged ones first.  With them: each
    session's calls in order, the URI as stored (redacted), status, bytes and the behaviour
    findings each call is evidence of.

    \b
    Examples:
      apisensor sessions --db inv.db --flagged
      apisensor sessions --db inv.db --actor jwt:3fa2        # a timeline per session
      apisensor sessions --db inv.db --actor 10.0.0.7        # every actor seen from that address
      apisensor sessions --db inv.db --session 12 --json
    """
    from discovery.behaviour import SEVERITY_RANK

    db = _open(db_path)
    actor_ids: list[tuple[int, str]] | None = None
    where, args = [], []
    if actor_q:
        actor_ids = _resolve(db, actor_q)
        where.append(f"s.actor_id in ({','.join(str(i) for i, _ in actor_ids)})")
    if session_id is not None:
        where.append("s.id = ?")
        args.append(session_id)
    if flagged:
        where.append("s.findings is not null and s.findings != '[]'")
    sql = (
        'select s.id, a.actor, a.addresses, s.start, s."end", s.calls, s.errors, s.denied, s.not_found, '
        "s.response_bytes, s.findings, s.severity, s.first_tx_id, s.last_tx_id from actor_sessions s "
        "join actors a on a.id = s.actor_id"
    )
    if where:
        sql += " where " + " and ".join(where)
    rows = []
    for sid, actor, addrs, start, end, calls, errors, denied, nf, rbytes, found, sev, ftx, ltx in db.execute(
        sql, args
    ):
        rows.append(
            {
                "session": sid,
                "actor": actor,
                "addresses": json.loads(addrs or "[]"),
                "start": _iso(start),
                "end": _iso(end),
                "duration_s": round((end or 0) - (start or 0), 3),
                "calls": calls,
                "errors": errors,
                "denied": denied,
                "not_found": nf,
                "response_bytes": rbytes,
                "findings": json.loads(found or "[]"),
                "severity": sev,
                "first_tx_id": ftx,
                "last_tx_id": ltx,
                "_start": start,
            }
        )
    if session_id is not None and not rows:
        _fail(f"no session {session_id}" + (f" of {actor_q!r}" if actor_q else ""))
    detail = bool(actor_q or session_id is not None)
    if detail:
        rows.sort(key=lambda r: (r["_start"] or 0, r["session"]))
    else:
        rows.sort(
            key=lambda r: (-SEVERITY_RANK.get(r["severity"] or "", -1), -(r["calls"] or 0), r["session"])
        )
    total = len(rows)
    rows = rows[:limit]
    for r in rows:
        start = r.pop("_start")
        if detail:
            r["timeline"] = _timeline(db, r["session"], max_calls)
            for c in r["timeline"]:
                c["offset_s"] = round(c["ts"] - (start or c["ts"]), 6)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no sessions" + (" with findings" if flagged else ""))
        return
    if not detail:
        click.echo(
            f"{'session':>7}  {'actor':<22} {'addresses':<18} {'start':<24} {'duration':>9} {'calls':>6} "
            f"{'err':>4}  findings"
        )
        for r in rows:
            addrs = (r["addresses"] or ["-"])[0] + (
                f" +{len(r['addresses']) - 1}" if len(r["addresses"]) > 1 else ""
            )
            sev = f"{r['severity']}: " if r["severity"] else ""
            click.echo(
                f"{r['session']:>7}  {r['actor']:<22} {addrs[:18]:<18} {r['start']:<24} "
                f"{r['duration_s']:>8.1f}s {r['calls']:>6} {r['errors']:>4}  {sev}{_short(r['findings'])}"
            )
        more = f" (showing {len(rows)}; --limit)" if total > len(rows) else ""
        click.echo(f"{total} sessions{more}.  Timeline: apisensor sessions --db {db_path} --actor ACTOR")
        return
    for r in rows:
        sev = f"  {r['severity']}: {_short(r['findings'])}" if r["findings"] else ""
        click.echo(
            f"session {r['session']}  {r['actor']}  from {', '.join(r['addresses'])}  {r['start']} .. "
            f"{r['end']}  ({r['duration_s']:.1f}s, {r['calls']} calls, {r['errors']} errors){sev}"
        )
        for c in r["timeline"]:
            target = c["uri"] or c["endpoint"] or "(unknown path)"
            cred = "" if c["credentials"] else "  no-credentials"
            if c["issued_credential"]:
                cred = "  login: issued this actor's credential"
            marks = f"  [{','.join(c['marks'])}]" if c["marks"] else ""
            click.echo(
                f"  +{c['offset_s']:>9.3f}s  {c['method']:<7} {target[:56]:<56} {c['status'] or '-':>4} "
                f"{_size(c['response_bytes']):>9}{cred}{marks}"
            )
        if len(r["timeline"]) < (r["calls"] or 0):
            click.echo(f"  ... {r['calls'] - len(r['timeline'])} more calls (--calls N)")
        click.echo()
    if total > len(rows):
        click.echo(f"({total - len(rows)} more sessions; --limit)", err=True)
