"""Undo journal: what a run changed, so that a run killed half-way can be taken back.

A replay flushes its sinks every few thousand transactions; each flush is committed and
survives a kill (WAL).  But the aggregates it merged (hits, first/last seen, schemas) are not
idempotent: replaying the same capture again after a kill would count its first part twice.
So while a run writes, every row it touches for the first time is journaled, in the same SQLite
transaction as the change:

- ``_undo(run_id, tbl, rid, old)``: ``old`` is the row as it was before the run (a JSON object of
  its columns; BLOB values as ``["x", hex]``, REAL values as ``["r", text]`` with all 17
  digits), or NULL when the run inserted the row.

Rows that carry the run's own ``run_id`` (transactions, actors' calls, changes, capture files)
are not journaled: rollback deletes them by ``run_id``. The journal is written by TEMP triggers
(they live and die with the replay's connection, so no other writer is ever journaled by
mistake) on every ordinary table except ``runs`` and the journal itself. When the run
completes, its journal is deleted in the transaction that marks it complete. :func:`rollback`
restores every touched row and drops the tables the run created, which returns the database to
exactly its state before the run; :func:`resolve_dead_runs` decides, at the start of the next
run, whether an interrupted run is rolled back (the same captures are replayed again) or kept
(anything else: its partial counts stay, marked ``interrupted``). The cost is one indexed
insert per row first touched per run, not per transaction: aggregates are touched once per
flush.  Tables that are empty when the run starts (the first replay into a new database) and
tables the run creates get no triggers at all: rollback empties or drops them.
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any

_SKIP = {"runs", "_undo", "transactions"}  # transactions: rollback deletes by run_id


def _tables(db) -> list[tuple[str, list[str]]]:
    out = []
    for name, sql in db.execute(
        "select name, sql from sqlite_master where type = 'table' and name not like 'sqlite_%'"
    ).fetchall():
        head = (sql or "").upper()
        if name in _SKIP or not sql or head.startswith("CREATE VIRTUAL") or "WITHOUT ROWID" in head:
            continue
        cols = [r[1] for r in db.execute(f'pragma table_info("{name}")').fetchall()]
        out.append((name, cols))
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


def _journal_row(run_id: int, table: str, ref: str, value: str) -> str:
    """Trigger statement: journal the row ``ref`` (old/new) unless the run journaled it already
    (not INSERT OR IGNORE: an outer statement's conflict clause would override it)."""
    return (f"insert into _undo (run_id, tbl, rid, old) select {run_id}, {_lit(table)}, {ref}.rowid, {value} "
            f"where not exists (select 1 from _undo where run_id = {run_id} and tbl = {_lit(table)} "
            f"and rid = {ref}.rowid)")


def ensure(db) -> None:
    db.execute(
        "create table if not exists _undo (run_id integer not null, tbl text not null, rid integer not null, "
        "old text, primary key (run_id, tbl, rid))"
    )


def arm(db, run_id: int) -> None:
    """Journal every change this connection makes for ``run_id`` from now on (idempotent: call it
    again after new tables appear)."""
    ensure(db)
    db.execute("pragma recursive_triggers = on")  # REPLACE's implicit deletes fire the delete trigger
    run_id = int(run_id)
    existing = {r[0] for r in db.execute("select name from sqlite_temp_master where type = 'trigger'")}
    known = set(json.loads(_run_field(db, run_id, "journal_tables") or "[]"))
    tables = _tables(db)
    if not known:
        # tables empty when the run starts writing need no journal: rollback empties them
        empty = sorted(n for n, _ in tables
                       if db.execute(f"select 1 from {_q(n)} limit 1").fetchone() is None)
        _set_run_field(db, run_id, "journal_empty", json.dumps(empty))
    else:
        empty = json.loads(_run_field(db, run_id, "journal_empty") or "[]")
    skip = set(empty)
    for name, cols in tables:
        if name in skip or (known and name not in known):
            continue  # emptied / dropped by rollback: nothing to journal
        tag = f"_undo_{run_id}_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        if f"{tag}_i" in existing:
            continue
        old = "json_object(" + ", ".join(
            f"{_lit(c)}, case typeof(old.{_q(c)}) when 'blob' then json_array('x', hex(old.{_q(c)})) "
            f"when 'real' then json_array('r', quote(old.{_q(c)})) "  # JSON keeps 15 digits: not enough
            f"else old.{_q(c)} end" for c in cols) + ")"
        for suffix, when, ref, value in (("i", "after insert", "new", "null"),
                                         ("u", "before update", "old", old),
                                         ("d", "before delete", "old", old)):
            # rows that carry this run's run_id are the run's own: rollback deletes them by run_id,
            # so they need no journal row (per-call tables stay cheap)
            cond = f" when {ref}.run_id is not {run_id}" if "run_id" in cols else ""
            db.execute(f"create temp trigger {tag}_{suffix} {when} on main.{_q(name)}{cond} begin "
                       f"{_journal_row(run_id, name, ref, value)}; end")
    if not known:  # the tables that existed when the run started writing: rollback drops any others
        _set_run_field(db, run_id, "journal_tables", json.dumps(sorted(n for n, _ in tables)))
    db.conn.commit()


def disarm(db, run_id: int) -> None:
    """Stop journaling and forget the run's journal (call inside the commit that completes it)."""
    for (name,) in db.execute(
        "select name from sqlite_temp_master where type = 'trigger' and name glob ?",
        [f"_undo_{int(run_id)}_*"],
    ).fetchall():
        db.execute(f"drop trigger temp.{name}")
    if "_undo" in db.table_names():
        db.execute("delete from _undo where run_id = ?", [int(run_id)])


def rollback(db, run_id: int) -> dict[str, int]:
    """Return every row the run touched to its state before the run; drop tables it created.
    Returns {table: rows restored or deleted}."""
    ensure(db)
    counts: dict[str, int] = {}
    before = _run_field(db, run_id, "journal_tables")
    db.conn.commit()
    fk = db.execute("pragma foreign_keys").fetchone()[0]
    db.execute("pragma foreign_keys = off")  # rows come back in any order; the end state is consistent
    try:
        _rollback(db, run_id, before, counts)
    finally:
        db.execute(f"pragma foreign_keys = {'on' if fk else 'off'}")
    return counts


def _rollback(db, run_id: int, before: str | None, counts: dict[str, int]) -> None:
    with db.conn:
        rows = db.execute("select tbl, rid, old from _undo where run_id = ?", [run_id]).fetchall()
        present = set(db.table_names())
        for name, cols in _tables(db):  # the run's own rows (not journaled, see arm)
            if "run_id" in cols:
                n = db.execute(f"delete from {_q(name)} where run_id = ?", [run_id]).rowcount
                counts[name] = counts.get(name, 0) + max(n, 0)
        by_table: dict[str, list[tuple[int, str | None]]] = {}
        for tbl, rid, old in rows:
            if tbl in present:
                by_table.setdefault(tbl, []).append((rid, old))
        for tbl, entries in by_table.items():
            ids = [rid for rid, _ in entries]
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                db.execute(f"delete from {_q(tbl)} where rowid in ({','.join('?' * len(chunk))})", chunk)
            for rid, old in entries:
                if old is None:
                    continue
                values = json.loads(old)
                cols = list(values)
                vals = [_decode(v) for v in values.values()]
                db.execute(
                    f"insert into {_q(tbl)} (rowid, {', '.join(_q(c) for c in cols)}) "
                    f"values (?, {', '.join('?' * len(cols))})", [rid, *vals])
            counts[tbl] = counts.get(tbl, 0) + len(entries)
        for name in json.loads(_run_field(db, run_id, "journal_empty") or "[]"):
            if name in present:  # empty before the run: whatever is in it now is the run's
                n = db.execute(f"delete from {_q(name)}").rowcount
                counts[name] = counts.get(name, 0) + max(n, 0)
        if before is not None:
            keep = set(json.loads(before))
            for name, _ in _tables(db):
                if name not in keep and not name.startswith("_"):
                    db.execute(f"drop table {_q(name)}")
                    counts[name] = -1
        db.execute("delete from _undo where run_id = ?", [run_id])
        if "transactions" in present:
            db.execute("delete from transactions where run_id = ?", [run_id])


def _decode(v: Any) -> Any:
    if isinstance(v, list) and len(v) == 2 and v[0] == "x":
        return bytes.fromhex(v[1])
    if isinstance(v, list) and len(v) == 2 and v[0] == "r":
        return float(v[1])
    if isinstance(v, (dict, list)):  # json_object embeds values that are JSON (never from plain columns)
        return json.dumps(v)
    return v


# ---- run bookkeeping ------------------------------------------------------------------------------

def _run_field(db, run_id: int, field: str) -> Any:
    cols = {r[1] for r in db.execute("pragma table_info(runs)").fetchall()}
    if field not in cols:
        return None
    row = db.execute(f"select {field} from runs where id = ?", [run_id]).fetchone()
    return row[0] if row else None


def _set_run_field(db, run_id: int, field: str, value: Any) -> None:
    cols = {r[1] for r in db.execute("pragma table_info(runs)").fetchall()}
    if field not in cols:
        db.execute(f"alter table runs add column {field} text")
    db.execute(f"update runs set {field} = ? where id = ?", [value, run_id])


def owner() -> str:
    """Who is writing: ``host:pid`` (recorded in ``runs.owner``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(own: str | None) -> bool:
    if not own:
        return False
    host, _, pid = own.rpartition(":")
    if host != socket.gethostname():
        return False  # another machine: it cannot be writing this file through WAL anyway
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def dead_runs(db) -> list[dict]:
    """Runs still marked ``running`` whose process is gone (killed, crashed, power cut)."""
    if "runs" not in db.table_names():
        return []
    cols = {r[1] for r in db.execute("pragma table_info(runs)").fetchall()}
    own = "owner" if "owner" in cols else "null"
    fps = "fingerprints" if "fingerprints" in cols else "null"
    out = []
    for rid, o, fp, sources in db.execute(
        f"select id, {own}, {fps}, sources from runs where status = 'running' order by id"
    ).fetchall():
        if not _alive(o):
            out.append({"id": rid, "fingerprints": json.loads(fp) if fp else None, "sources": sources})
    return out


def resolve_dead_runs(db, fingerprints: list[str] | None) -> list[tuple[int, str]]:
    """Settle runs interrupted by a kill before a new run starts writing.

    The newest interrupted run is rolled back when it replayed exactly the captures about to be
    replayed (``fingerprints``) and nothing has written since; every other interrupted run is
    kept as it is (its committed batches stay counted) and marked ``interrupted``.
    Returns [(run_id, "rolled back" | "kept"), ...]."""
    out = []
    dead = dead_runs(db)
    newest = db.execute("select max(id) from runs").fetchone()[0]
    for run in dead:
        same = fingerprints is not None and run["fingerprints"] is not None and \
            sorted(run["fingerprints"]) == sorted(fingerprints)
        if same and run["id"] == newest:
            rollback(db, run["id"])
            status, what = "rolled back", "rolled back"
        else:
            status, what = "interrupted", "kept"
            with db.conn:
                db.execute("delete from _undo where run_id = ?", [run["id"]]) if "_undo" in db.table_names() \
                    else None
        with db.conn:
            db.execute("update runs set status = ? where id = ?", [status, run["id"]])
        out.append((run["id"], what))
    return out
