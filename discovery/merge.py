"""Merge the databases of several sensors into one: ``apisensor merge A.db B.db -o all.db``.

Sensors on different span ports each build their own inventory; merging them gives the
inventory one sensor on every port would have built.  The merge is **table-driven**:
:data:`RULES` says, for every table a replay creates, how a source's rows fold into the
output, column by column where the table is a set of aggregates:

- ``append`` tables (``runs``, ``transactions``) are copied with their ids renumbered
  (run ids and transaction ids shift by the output's largest id, so references stay exact);
- ``keyed`` tables are matched by their natural key (a service by name, an observed path by
  service + method + skeleton + operation, a finding by service + method + path + detector +
  location, an edge by client + service...), never by id, and each column says how two
  values combine: counts add (``sum``), first/last seen take the ``min``/``max``, flags
  ``or``, JSON counters add key by key, ``observed_paths.data`` goes through the inventory's
  own :func:`discovery.inventory.data_merge` (parameters, schemas, samples, latency
  histograms);
- the actors sink's tables (discovery/actors.py): actors by id, per-endpoint aggregates by
  actor + service + method + skeleton (counters add, the distinct-value sketches are united:
  the ``SET_CAP`` smallest hashes of both, which is the sketch of the union), sessions of one
  actor joined where they overlap or lie at most the output's ``session_idle`` apart, calls
  appended; the ``behaviour.*`` findings of a source are not merged: the behaviour analysis
  runs again over the merged aggregates (:func:`_analyse_actors`), so actors are judged
  against the merged population;
- ``derived`` tables (endpoints and their children, templates, ``graph_nodes``) are not
  copied: after a source is merged, :func:`discovery.inventory.materialize` rebuilds the
  endpoints of every service it touched from the merged observations (templates are
  relearned from all paths, as if one sensor had seen everything), findings are matched to
  the new endpoints, the change log is deduplicated (one row per thing, the earliest), and
  the map's names are resolved again (``graph.build.write_resolved``).

A table without a rule, or a column a rule does not name, stops the merge before anything is
written (``tests/test_merge.py`` checks that every table of a fresh replay has a rule).

Idempotent: a run is identified by a fingerprint of its row (start and end time, sources,
counters); a source whose runs are all in the output already is skipped ("already merged"),
so merging the same database twice, or a merged database back into its output, counts
nothing twice.  A source of which only some runs are in the output (a sensor that kept
capturing after the last merge) cannot be merged into it (its aggregates are not split by
run): rebuild the output with ``replace=True`` (``--replace``).  Each merge is recorded in the
``merges`` table; one that did not finish (killed) makes later merges into that output stop
with the same advice.

What is not exact: a JSON body that two sources both saw is counted once in
``schemas.bodies`` (its CRC is in both sources' first ``SCHEMA_DISTINCT`` bodies), but the
per-field counts inside the stored schema tree count it twice; they only decide the order of
``fields.type`` when a field had several types.  Findings keep the evidence of the row with
the higher severity, on a tie the earlier one, and up to 16 value hashes.  The actors' records of
sensitive data are estimates of each sensor (sampled bodies); addresses past 16 per actor, and
sessions of one actor whose requests overlap when ``session_idle`` is as short as the overlap,
may differ from one sensor's (docs/ecosystem.md lists them).

Hash keys: redacted values carry a keyed hash (:func:`discovery.redact.hash_key`).  A new
output gets the sources' key when they share one (``<db>.key``); sources hashed with
different keys are merged with a warning, since the same value then has two hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .inventory import (
    EndpointMatcher,
    _meta,
    _normalized,
    _set_meta,
    data_merge,
    ensure_schema,
    materialize,
)

# ---- column operations ----------------------------------------------------------------------
AUTO = "auto"  # the table's own integer id: not copied, a new one is given (src id -> new id kept)
KEY = "key"  # part of the natural key
SUM = "sum"
MIN = "min"
MAX = "max"
OR = "or"  # a 0/1 flag: 1 if either is 1
KEEP = "keep"  # the output's value stays; a new row takes the source's
DERIVED = "derived"  # rebuilt after the merge (a new row starts NULL)
COUNTER = "counter"  # JSON object of counts: added key by key
RUN_FIRST = "run_first"  # a runs.id: renumbered; the output's value stays
RUN_LAST = "run_last"  # a runs.id: renumbered; the larger wins
ROW = "row"  # set by the rule's row function


def REF(table: str) -> str:
    """An id of ``table``'s row: translated to the output's id of the same row (by natural key)."""
    return "ref:" + table


@dataclass(frozen=True)
class Rule:
    how: str  # "append", "keyed", "derived", "custom", "skip", "pending" (no rule yet: left out)
    doc: str
    key: tuple[str, ...] = ()
    columns: dict[str, Any] = field(default_factory=dict)
    # keyed: fn(ctx, out_row or None, src_row) -> {column: value} for the ROW columns
    row: Callable | None = None
    # append/custom: fn(ctx, table)
    run: Callable | None = None
    # keyed: the WHERE clause that finds a row by its key (default: each key column IS ?), one
    # that the table's unique index serves
    lookup: str | None = None
    # keyed: only the source's rows matching this SQL condition are merged (the others are
    # rebuilt after the merge)
    where: str | None = None


class MergeError(Exception):
    """The merge cannot go on; the message is one line for the user."""


# ---- the context of one source -----------------------------------------------------------------


class _Ctx:
    def __init__(self, conn: sqlite3.Connection, src_path: str, warn: Callable[[str], None]):
        self.conn = conn
        self.src_path = src_path
        self.warn = warn
        self.run_off = 0
        self.tx_off = 0
        self.ids: dict[str, dict[int, int]] = {}
        self.services: set[str] = set()
        # source endpoint id -> (service, method, template, operation, examples)
        self.src_endpoints: dict[int, tuple] = {}
        self.finding_endpoints: dict[int, tuple] = {}  # output finding id -> source endpoint entry
        self.counts: dict[str, int] = {}

    def columns(self, schema: str, table: str) -> list[str]:
        return _columns(self.conn, schema, table)

    def tables(self, schema: str) -> list[str]:
        return _tables(self.conn, schema)

    def run_id(self, v: int | None) -> int | None:
        return None if v is None else v + self.run_off

    def tx_id(self, v: int | None) -> int | None:
        return None if v is None else v + self.tx_off


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f'PRAGMA {schema}.table_info("{table}")')]


def _tables(conn: sqlite3.Connection, schema: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _insert_sql(table: str, cols) -> str:
    """``INSERT INTO main.table (cols) VALUES (?, ...)``."""
    names = ", ".join(_q(c) for c in cols)
    return f'INSERT INTO main."{table}" ({names}) VALUES ({", ".join("?" * len(cols))})'


def _rows(conn: sqlite3.Connection, sql: str, args: Iterable = ()) -> Iterable[dict]:
    cur = conn.execute(sql, list(args))
    names = [d[0] for d in cur.description]
    while True:
        chunk = cur.fetchmany(500)
        if not chunk:
            return
        for r in chunk:
            yield dict(zip(names, r))


# ---- combining two values ----------------------------------------------------------------------


def _combine(op: Any, a: Any, b: Any, ctx: _Ctx) -> Any:
    if callable(op):
        return b if a is None else a if b is None else op(a, b)
    if op == SUM:
        return None if a is None and b is None else (a or 0) + (b or 0)
    if op == MIN:
        return b if a is None else a if b is None else min(a, b)
    if op == MAX:
        return b if a is None else a if b is None else max(a, b)
    if op == OR:
        return int(bool(a) or bool(b))
    if op == COUNTER:
        out = json.loads(a) if a else {}
        for k, v in (json.loads(b) if b else {}).items():
            out[k] = out.get(k, 0) + v
        return json.dumps(out, sort_keys=True)
    if op == RUN_LAST:
        b = ctx.run_id(b)
        return b if a is None else a if b is None else max(a, b)
    raise AssertionError(op)


# ---- keyed tables ------------------------------------------------------------------------------


def _rowid_alias(conn: sqlite3.Connection, table: str, column: str | None) -> bool:
    """Whether ``column`` is ``table``'s INTEGER PRIMARY KEY (so a merge can choose its ids)."""
    if column is None:
        return False
    pk = [(name, (typ or "").upper()) for _cid, name, typ, _nn, _d, pk in
          conn.execute(f'PRAGMA main.table_info("{table}")') if pk]
    return pk == [(column, "INTEGER")]


_BATCH = 2000


def _merge_keyed(ctx: _Ctx, table: str, rule: Rule) -> None:
    """Merge ``table`` row by row by its natural key: a source row is combined into the
    output's row with the same key, else inserted.  The output rows that a source row can meet
    are those that were there before this source (a source holds each key once), so inserts and
    updates are written in batches; a key seen twice in the source (NULLs in a key) flushes
    them first and is then combined as usual."""
    conn = ctx.conn
    out_cols = set(ctx.columns("main", table))
    spec = rule.columns
    auto = next((c for c, op in spec.items() if op == AUTO), None)
    refs = {c: op[4:] for c, op in spec.items() if isinstance(op, str) and op.startswith("ref:")}
    where = rule.lookup or " AND ".join(f'"{c}" IS ?' for c in rule.key)
    select = f'SELECT rowid AS "__rowid", * FROM main."{table}" WHERE {where}'
    key_cols = rule.key
    ids = ctx.ids.setdefault(table, {})
    # columns written on insert / combined on update, in spec order
    ins_ops = [(c, op) for c, op in spec.items() if op not in (AUTO, ROW) and c in out_cols]
    upd_ops = [
        (c, op)
        for c, op in spec.items()
        if op not in (AUTO, KEY, KEEP, DERIVED, RUN_FIRST, ROW)
        and not (isinstance(op, str) and op.startswith("ref:"))
        and c in out_cols
    ]
    own_ids = _rowid_alias(conn, table, auto)
    next_id = conn.execute(f'SELECT coalesce(max("{auto}"), 0) FROM main."{table}"').fetchone()[0] + 1 \
        if own_ids else None
    src_sql = f'SELECT * FROM src."{table}"' + (f" WHERE {rule.where}" if rule.where else "")
    src_cols = set(ctx.columns("src", table))
    ins_plain = [c for c, op in ins_ops if c in src_cols and op not in (DERIVED, RUN_FIRST, RUN_LAST)]
    ins_run = [c for c, op in ins_ops if c in src_cols and op in (RUN_FIRST, RUN_LAST)]
    ins_derived = [c for c, op in ins_ops if c in src_cols and op == DERIVED]
    upd_ops = [(c, op) for c, op in upd_ops if c in src_cols]
    # the output's keys, when there are not many more than the source's: a source row whose
    # key is not among them is inserted without a lookup
    known: set | None = None
    src_n = conn.execute(f"SELECT count(*) FROM ({src_sql})").fetchone()[0]
    if conn.execute(f'SELECT count(*) FROM main."{table}"').fetchone()[0] <= 4 * src_n + 50_000:
        cols = ", ".join(_q(c) for c in key_cols)
        keys = conn.execute(f'SELECT {cols} FROM main."{table}"')
        known = {tuple("" if v is None else v for v in k) for k in keys}
    inserts: dict[tuple, list] = {}  # column names -> rows of values
    updates: dict[tuple, list] = {}
    pending_keys: set[tuple] = set()

    def flush() -> None:
        for cols, rows in inserts.items():
            conn.executemany(_insert_sql(table, cols), rows)
        for cols, rows in updates.items():
            sets = ", ".join(f"{_q(c)} = ?" for c in cols)
            conn.executemany(f'UPDATE main."{table}" SET {sets} WHERE rowid = ?', rows)
        inserts.clear()
        updates.clear()
        pending_keys.clear()

    run_off = ctx.run_off
    inserted = updated = orphans = 0
    for src in _rows(conn, src_sql):
        row = src
        skip = False
        for c, parent in refs.items():
            if row.get(c) is not None:
                row[c] = ctx.ids.get(parent, {}).get(row[c])
                skip = skip or row[c] is None
        if skip:  # its parent row was not in the source (a dangling reference): nothing to attach it to
            orphans += 1
            continue
        key = tuple(row[c] for c in key_cols)
        loose = tuple("" if v is None else v for v in key)  # ifnull() lookups equate NULL and ''
        if loose in pending_keys:
            flush()
        if known is not None and loose not in known:
            old = None
        else:
            got = conn.execute(select, key)
            hit = got.fetchone()
            old = dict(zip([d[0] for d in got.description], hit)) if hit else None
        extra = rule.row(ctx, old, row) if rule.row else {}
        if old is None:
            vals = {c: row[c] for c in ins_plain}
            for c in ins_run:
                vals[c] = None if row[c] is None else row[c] + run_off
            for c in ins_derived:
                vals[c] = None
            vals.update(extra)
            if own_ids:
                new_id = vals[auto] = next_id
                next_id += 1
                inserts.setdefault(tuple(vals), []).append(list(vals.values()))
                pending_keys.add(loose)
            else:
                new_id = conn.execute(_insert_sql(table, list(vals)), list(vals.values())).lastrowid
            inserted += 1
        else:
            vals = {c: _combine(op, old.get(c), row[c], ctx) for c, op in upd_ops}
            vals.update(extra)
            if vals:
                updates.setdefault(tuple(vals), []).append([*vals.values(), old["__rowid"]])
                pending_keys.add(loose)
            new_id = old[auto] if auto else old["__rowid"]
            updated += 1
        if known is not None:
            known.add(loose)
        if auto:
            ids[src[auto]] = new_id
        if table == "findings":
            ctx.finding_endpoints[new_id] = ctx.src_endpoints.get(src.get("endpoint_id"))
        if len(pending_keys) >= _BATCH:
            flush()
    flush()
    ctx.counts[table] = inserted + updated
    if orphans:
        ctx.warn(f"{ctx.src_path}: {orphans} rows of {table} refer to rows that are not there; skipped")


# ---- observed paths: the inventory's own aggregate merge ----------------------------------------


def merge_path_data(a: str, b: str) -> str:
    """Two ``observed_paths.data`` JSON texts merged with :func:`discovery.inventory.data_merge`;
    a body whose CRC is in both sides' schema samples was counted by each: counted once."""
    x, y = json.loads(a), json.loads(b)
    out = data_merge(x, y)
    pairs = [(out.get("req_schema"), x.get("req_schema"), y.get("req_schema"))]
    pairs += [
        (acc, x.get("resp_schema", {}).get(k), y.get("resp_schema", {}).get(k))
        for k, acc in out.get("resp_schema", {}).items()
    ]
    for m, p, q in pairs:
        if m and p and q:
            shared = len({c for c, _ in p["seen"]} & {c for c, _ in q["seen"]})
            as_body = min(shared, m["bodies"] - max(p["bodies"], q["bodies"]))
            m["bodies"] -= as_body
            m["errors"] -= min(shared - as_body, m["errors"] - max(p["errors"], q["errors"]))
    return json.dumps(_normalized(out), separators=(",", ":"), sort_keys=True)


# ---- findings ------------------------------------------------------------------------------------


def _finding_row(ctx: _Ctx, old: dict | None, src: dict) -> dict:
    ref = json.loads(src["tx_ref"]) if src.get("tx_ref") else None
    if ref is not None and ref.get("run") is not None:
        ref["run"] = ctx.run_id(ref["run"])
    mine = {
        "first_run_id": ctx.run_id(src.get("first_run_id")),
        "last_run_id": ctx.run_id(src.get("last_run_id")),
        "first_tx_id": ctx.tx_id(src.get("first_tx_id")),
        "last_tx_id": ctx.tx_id(src.get("last_tx_id")),
        "tx_ref": None if ref is None else json.dumps(ref),
        "endpoint_id": None,
    }
    sev = ("severity", "severity_rank", "evidence", "kind", "category", "confidence")
    hashes = json.loads(src.get("value_hashes") or "[]")
    if old is None:
        return {
            **mine,
            **{k: src.get(k) for k in sev},
            "value_hashes": json.dumps(hashes),
            "distinct_values": len(hashes),
        }
    out: dict[str, Any] = {}
    src_first = (src["first_seen"], 1) < (old["first_seen"], 0) if old["first_seen"] is not None else True
    if src["severity_rank"] > old["severity_rank"] or (
        src["severity_rank"] == old["severity_rank"] and src_first
    ):
        out.update({k: src.get(k) for k in sev})
    if src_first:
        out.update(first_run_id=mine["first_run_id"], first_tx_id=mine["first_tx_id"])
    if old["last_seen"] is None or src["last_seen"] > old["last_seen"]:
        out.update(last_run_id=mine["last_run_id"], last_tx_id=mine["last_tx_id"], tx_ref=mine["tx_ref"])
    first, second = (hashes, json.loads(old["value_hashes"] or "[]"))
    if not src_first:
        first, second = second, first
    merged = list(dict.fromkeys(first + second))[:16]
    out.update(value_hashes=json.dumps(merged), distinct_values=len(merged))
    return out


# ---- append and custom tables ----------------------------------------------------------------------


# bookkeeping of the writing process that a copy rewrites (discovery/journal.py)
_RUN_BOOKKEEPING = ("id", "status", "owner", "journal_tables", "journal_empty")


def run_fingerprint(row: dict) -> str:
    """A run's identity across copies: its row without the id and the writer's bookkeeping
    (columns that are NULL left out).  A run that went on after a merge (more transactions
    committed, finished) has another fingerprint."""
    body = {k: v for k, v in row.items() if k not in _RUN_BOOKKEEPING and v is not None}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _copy_append(ctx: _Ctx, table: str, idcol: str, id_shift: int, shift: dict[str, int]) -> None:
    src_cols = ctx.columns("src", table)
    cols = [c for c in src_cols if c in set(ctx.columns("main", table))]
    exprs = []
    args: list[Any] = []
    for c in cols:
        if c == idcol:
            exprs.append(f'"{c}" + ?')
            args.append(id_shift)
        elif c in shift:
            exprs.append(f'"{c}" + ?')
            args.append(shift[c])
        else:
            exprs.append(f'"{c}"')
    quoted = ", ".join(f'"{c}"' for c in cols)
    cur = ctx.conn.execute(
        f'INSERT INTO main."{table}" ({quoted}) '
        f'SELECT {", ".join(exprs)} FROM src."{table}" ORDER BY "{idcol}"',
        args,
    )
    ctx.counts[table] = cur.rowcount


def _runs(ctx: _Ctx, table: str) -> None:
    _copy_append(ctx, table, "id", ctx.run_off, {})
    # a run the source was still writing (a live capture) or that was killed: its committed
    # part is merged; here it is history, never to be resumed or rolled back by a replay
    cols = set(ctx.columns("main", table))
    live = [
        r
        for (r,) in ctx.conn.execute(
            f"SELECT id FROM main.\"{table}\" WHERE id > ? AND status = 'running'", [ctx.run_off]
        )
    ]
    if live:
        sets = ", ".join(
            ["status = 'interrupted'",
             *(f"{c} = NULL" for c in ("owner", "journal_tables", "journal_empty") if c in cols)]
        )
        ctx.conn.execute(
            f"UPDATE main.\"{table}\" SET {sets} WHERE id > ? AND status = 'running'", [ctx.run_off]
        )
        ctx.warn(
            f"{ctx.src_path}: runs {', '.join(str(r - ctx.run_off) for r in live)} were not finished "
            "(still capturing, or killed): what they committed is merged, marked 'interrupted'"
        )


def _transactions(ctx: _Ctx, table: str) -> None:
    _copy_append(ctx, table, "id", ctx.tx_off, {"run_id": ctx.run_off})


def _changes(ctx: _Ctx, table: str) -> None:
    cols = [c for c in ctx.columns("src", table) if c != "id" and c in set(ctx.columns("main", table))]
    quoted = ", ".join(f'"{c}"' for c in cols)
    sel = ", ".join('"run_id" + ?' if c == "run_id" else f'"{c}"' for c in cols)
    cur = ctx.conn.execute(
        f'INSERT INTO main."{table}" ({quoted}) SELECT {sel} FROM src."{table}" ORDER BY id',
        [ctx.run_off] if "run_id" in cols else [],
    )
    ctx.counts[table] = cur.rowcount


def _meta_table(ctx: _Ctx, table: str) -> None:
    conn = ctx.conn
    for key, value in conn.execute(f'SELECT key, value FROM src."{table}"').fetchall():
        old = conn.execute(f'SELECT value FROM main."{table}" WHERE key = ?', [key]).fetchone()
        if key == "raw_samples_runs":
            runs = json.loads(old[0]) if old and old[0] else []
            runs += [ctx.run_id(r) for r in json.loads(value or "[]")]
            conn.execute(
                f'INSERT OR REPLACE INTO main."{table}" (key, value) VALUES (?, ?)', [key, json.dumps(runs)]
            )
            ctx.warn(f"{ctx.src_path}: holds raw (unredacted) samples; so does the output now")
        elif old is None:
            conn.execute(f'INSERT INTO main."{table}" (key, value) VALUES (?, ?)', [key, value])


def _inventory_meta(ctx: _Ctx, table: str) -> None:
    conn = ctx.conn
    got = conn.execute(f"SELECT value FROM src.\"{table}\" WHERE key = 'rules'").fetchone()
    theirs = got[0] if got else None
    ours = _meta(_Db(conn), "rules")
    if theirs and not ours:
        _set_meta(_Db(conn), "rules", theirs)
    elif theirs and ours and theirs != ours:
        ctx.warn(f"{ctx.src_path}: its templating rules differ from the output's; the output's are kept")


def _merges(ctx: _Ctx, table: str) -> None:
    for r in _rows(ctx.conn, f'SELECT * FROM src."{table}" ORDER BY id'):
        runs = [ctx.run_id(x) for x in json.loads(r.get("runs") or "[]")]
        ctx.conn.execute(
            f'INSERT INTO main."{table}" (source, fingerprints, runs, started_at, finished_at, status) '
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                r.get("source"),
                r.get("fingerprints"),
                json.dumps(runs),
                r.get("started_at"),
                r.get("finished_at"),
                r.get("status"),
            ],
        )


# ---- actors and sessions (discovery/actors.py) ------------------------------------------------------


def _union_addresses(a: str, b: str) -> str:
    """``actors.addresses``: the union, sorted, at most ``MAX_ADDRESSES`` (as the sink keeps them)."""
    from .actors import MAX_ADDRESSES

    both = set(json.loads(a or "[]")) | set(json.loads(b or "[]"))
    return json.dumps(sorted(both)[:MAX_ADDRESSES])


def _actor_row(ctx: _Ctx, old: dict | None, src: dict) -> dict:
    # the behaviour analysis run after the merge says what flags an actor
    return {"findings": "[]", "severity": None} if old is None else {}


def _actor_endpoint_row(ctx: _Ctx, old: dict | None, src: dict) -> dict:
    """The distinct-value sketches united: the ``SET_CAP`` smallest hashes of both, which are the
    ``SET_CAP`` smallest of the union (a KMV sketch merges exactly); the counts from the result."""
    from .actors import sketch_merge, sketch_values

    out: dict[str, Any] = {}
    for count, blob in (("objects", "object_hashes"), ("usernames", "username_hashes")):
        if old is None:
            out[count], out[blob] = src.get(count), src.get(blob)
        else:
            out[blob], out[count] = sketch_merge(old.get(blob), set(sketch_values(src.get(blob))))
    return out


def _session_idle(conn: sqlite3.Connection, schema: str) -> float:
    from .behaviour import Settings

    got = None
    if "actor_settings" in _tables(conn, schema):
        got = conn.execute(f"SELECT value FROM {schema}.actor_settings WHERE key = 'session_idle'").fetchone()
    try:
        return float(json.loads(got[0])) if got else Settings().session_idle
    except (TypeError, ValueError):
        return Settings().session_idle


def _actor_settings(ctx: _Ctx, table: str) -> None:
    """The output's settings kept; a setting only a source changed is adopted (like the
    templating rules); a source whose setting differs from the output's: warned."""
    conn = ctx.conn
    differ = []
    for key, value in conn.execute(f'SELECT key, value FROM src."{table}" ORDER BY key').fetchall():
        old = conn.execute(f'SELECT value FROM main."{table}" WHERE key = ?', [key]).fetchone()
        if old is None:
            conn.execute(f'INSERT INTO main."{table}" (key, value) VALUES (?, ?)', [key, value])
        elif old[0] != value:
            differ.append(f"{key}={value} (output: {old[0]})")
    if differ:
        ctx.warn(
            f"{ctx.src_path}: its actor settings differ from the output's, which are kept: "
            + ", ".join(differ)
        )


_SESSION_SUMS = ("calls", "errors", "denied", "not_found", "response_bytes")


def _tx_done(conn: sqlite3.Connection, tx_id: int | None) -> float | None:
    """When a transaction ended: the sensor emits transactions as they complete, and the actors
    sink calls the first (last) one it saw of a session its first (last) transaction."""
    if tx_id is None:
        return None
    got = conn.execute(
        "SELECT coalesce(ts_end, ts_response, ts) FROM main.transactions WHERE id = ?", [tx_id]
    ).fetchone()
    return got[0] if got else None


def _actor_sessions(ctx: _Ctx, table: str) -> None:
    """Sessions merged per actor: the source's and the output's sessions of one actor that
    overlap, or whose gap is at most the output's ``session_idle``, become one (start min, end
    max, counts added, the first/last transaction of the earliest/latest part).  Each source's
    sessions were cut on part of the actor's calls, so each lies inside one session of all the
    calls, and two of them belong to the same one exactly when this chain of gaps joins them:
    the result is the sessions of all the calls (sources cut with the same or a shorter idle
    gap; a session cut with a longer one cannot be split without its calls: warned)."""
    conn = ctx.conn
    idle = _session_idle(conn, "main")
    theirs_idle = _session_idle(conn, "src")
    if theirs_idle > idle:
        ctx.warn(
            f"{ctx.src_path}: its sessions were cut with session_idle={theirs_idle:g}, the output's is "
            f"{idle:g}: a session cannot be split after the fact, they are merged as they are"
        )
    amap = ctx.ids.get("actors", {})
    sess_ids = ctx.ids.setdefault(table, {})
    mine: dict[int, list[dict]] = {}
    orphans = 0
    for r in _rows(conn, f'SELECT * FROM src."{table}" ORDER BY id'):
        aid = amap.get(r["actor_id"])
        if aid is None:
            orphans += 1
            continue
        r.update(
            actor_id=aid,
            run_id=ctx.run_id(r.get("run_id")),
            first_tx_id=ctx.tx_id(r.get("first_tx_id")),
            last_tx_id=ctx.tx_id(r.get("last_tx_id")),
            src_id=r.pop("id"),
        )
        mine.setdefault(aid, []).append(r)
    folded: dict[int, int] = {}  # an output session joined into another -> that one
    n = 0
    out_cols = set(ctx.columns("main", table))
    has_tx = "transactions" in ctx.tables("main")
    # the actors that have sessions in the output (when not many more than the source's): the
    # others' sessions are inserted without a lookup, in batches, with ids chosen here
    with_sessions: set | None = None
    if conn.execute(f'SELECT count(*) FROM main."{table}"').fetchone()[0] <= 4 * len(mine) + 50_000:
        with_sessions = {a for (a,) in conn.execute(f'SELECT DISTINCT actor_id FROM main."{table}"')}
    own_ids = _rowid_alias(conn, table, "id")
    next_id = conn.execute(f'SELECT coalesce(max(id), 0) FROM main."{table}"').fetchone()[0] + 1
    batch: dict[tuple, list] = {}

    def insert_batch() -> None:
        for cols, rows in batch.items():
            conn.executemany(_insert_sql(table, cols), rows)
        batch.clear()

    for aid, theirs in mine.items():
        if with_sessions is not None and aid not in with_sessions and own_ids:
            for g in _session_groups(theirs, idle):
                row = _joined_session(conn, g, has_tx)
                row.update(actor_id=aid, findings="[]", severity=None, id=next_id)
                cols = tuple(c for c in row if c in out_cols)
                batch.setdefault(cols, []).append([row[c] for c in cols])
                for s in g:
                    sess_ids[s["src_id"]] = next_id
                next_id += 1
                n += len(g)
            if sum(len(v) for v in batch.values()) >= 2000:
                insert_batch()
            continue
        ours = list(_rows(conn, f'SELECT * FROM main."{table}" WHERE actor_id = ?', [aid]))
        for g in _session_groups(ours + theirs, idle):
            new = [s for s in g if "src_id" in s]
            if not new:
                continue
            old = [s for s in g if "src_id" not in s]
            row = _joined_session(conn, g, has_tx)
            if old:
                keep = old[0]["id"]
                sets = ", ".join(f'"{c}" = ?' for c in row)
                conn.execute(f'UPDATE main."{table}" SET {sets} WHERE id = ?', [*row.values(), keep])
                for s in old[1:]:
                    folded[s["id"]] = keep
                    conn.execute(f'DELETE FROM main."{table}" WHERE id = ?', [s["id"]])
            else:
                row.update(actor_id=aid, findings="[]", severity=None)
                cols = [c for c in row if c in out_cols]
                if own_ids:
                    row["id"] = next_id
                    next_id += 1
                    cols.append("id")
                keep = conn.execute(_insert_sql(table, cols), [row[c] for c in cols]).lastrowid
            for s in new:
                sess_ids[s["src_id"]] = keep
            n += len(new)
    insert_batch()
    if folded:
        _refold_sessions(conn, folded)
    # an actor's session count: its sessions, as merged
    touched = sorted(set(amap.values()))
    for i in range(0, len(touched), 500):
        part = touched[i : i + 500]
        conn.execute(
            f"UPDATE main.actors SET sessions = (SELECT count(*) FROM main.\"{table}\" s WHERE s.actor_id = "
            f"actors.id) WHERE id IN ({', '.join('?' * len(part))})",
            part,
        )
    ctx.counts[table] = n
    if orphans:
        ctx.warn(f"{ctx.src_path}: {orphans} rows of {table} refer to rows that are not there; skipped")


def _session_groups(parts: list[dict], idle: float) -> list[list[dict]]:
    """Sessions (output rows and source rows, the latter marked by ``src_id``) in start order,
    grouped where they overlap or lie at most ``idle`` apart."""
    groups: list[list[dict]] = []
    end = None
    for s in sorted(parts, key=lambda s: (s["start"] is None, s["start"] or 0, "src_id" in s)):
        if groups and end is not None and s["start"] is not None and s["start"] - end <= idle:
            groups[-1].append(s)
        else:
            groups.append([s])
            end = None
        if s["end"] is not None:
            end = s["end"] if end is None else max(end, s["end"])
    return groups


def _joined_session(conn: sqlite3.Connection, parts: list[dict], has_tx: bool) -> dict:
    """One session from the parts of one (output and source rows)."""
    done = (lambda t: _tx_done(conn, t)) if has_tx else (lambda t: None)
    starts = [s for s in parts if s["start"] is not None]
    ends = [s for s in parts if s["end"] is not None]
    first = min(starts, key=lambda s: s["start"]) if starts else parts[0]
    row: dict[str, Any] = {
        "run_id": first.get("run_id"),
        "start": first["start"],
        "end": max(s["end"] for s in ends) if ends else None,
    }
    for c in _SESSION_SUMS:
        vals = [s.get(c) for s in parts if s.get(c) is not None]
        row[c] = sum(vals) if vals else None
    # the first and last transactions: of the part whose first (last) one ended first (last)
    firsts = [s for s in parts if s.get("first_tx_id") is not None]
    lasts = [s for s in parts if s.get("last_tx_id") is not None]
    if len(firsts) > 1:
        firsts.sort(key=lambda s: (done(s["first_tx_id"]) or s["start"] or 0, s["first_tx_id"]))
    if len(lasts) > 1:
        lasts.sort(key=lambda s: (done(s["last_tx_id"]) or s["end"] or 0, s["last_tx_id"]))
    row["first_tx_id"] = firsts[0]["first_tx_id"] if firsts else None
    row["last_tx_id"] = lasts[-1]["last_tx_id"] if lasts else None
    return row


def _refold_sessions(conn: sqlite3.Connection, folded: dict[int, int]) -> None:
    """Output sessions that a source's session joined into another: their calls, and the
    behaviour findings that list them, now point to the session they became part of."""
    conn.executemany("UPDATE main.actor_calls SET session_id = ? WHERE session_id = ?",
                     [(new, old) for old, new in folded.items()])

    def remap(ids: list) -> list:
        return sorted({folded.get(i, i) for i in ids})

    if "actor_findings" in _tables(conn, "main"):
        for rid, sids in conn.execute("SELECT id, session_ids FROM main.actor_findings").fetchall():
            ids = json.loads(sids or "[]")
            if any(i in folded for i in ids):
                conn.execute("UPDATE main.actor_findings SET session_ids = ? WHERE id = ?",
                             [json.dumps(remap(ids)), rid])
    for rid, ref in conn.execute(
        "SELECT id, tx_ref FROM main.findings WHERE detector LIKE 'behaviour.%' AND tx_ref IS NOT NULL"
    ).fetchall():
        d = json.loads(ref)
        if isinstance(d, dict) and any(i in folded for i in d.get("sessions") or []):
            d["sessions"] = remap(d["sessions"])
            conn.execute("UPDATE main.findings SET tx_ref = ? WHERE id = ?", [json.dumps(d), rid])


def _actor_calls(ctx: _Ctx, table: str) -> None:
    """The timeline, appended: ids renumbered, transaction and run ids shifted, actors,
    sessions and per-endpoint rows translated to the output's; ``marks`` left for the analysis."""
    conn = ctx.conn
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _merge_ids (tbl TEXT, src INTEGER, dst INTEGER, "
                 "PRIMARY KEY (tbl, src))")
    conn.execute("DELETE FROM temp._merge_ids")
    for t in ("actors", "actor_sessions", "actor_endpoints"):
        conn.executemany("INSERT INTO temp._merge_ids VALUES (?, ?, ?)",
                         [(t, s, d) for s, d in ctx.ids.get(t, {}).items()])
    ours = set(ctx.columns("main", table))
    cols = [c for c in ctx.columns("src", table) if c in ours and c != "id"]
    expr = {
        "tx_id": "c.tx_id + ?",
        "run_id": "c.run_id + ?",
        "actor_id": "a.dst",
        "session_id": "s.dst",
        "actor_endpoint_id": "e.dst",
        "marks": "NULL",
    }
    args = {"tx_id": ctx.tx_off, "run_id": ctx.run_off}
    cur = conn.execute(
        f'INSERT INTO main."{table}" ({", ".join(_q(c) for c in cols)}) '
        f"SELECT {', '.join(expr.get(c, 'c.' + _q(c)) for c in cols)} FROM src.\"{table}\" c "
        "JOIN temp._merge_ids a ON a.tbl = 'actors' AND a.src = c.actor_id "
        "LEFT JOIN temp._merge_ids s ON s.tbl = 'actor_sessions' AND s.src = c.session_id "
        "LEFT JOIN temp._merge_ids e ON e.tbl = 'actor_endpoints' AND e.src = c.actor_endpoint_id "
        "ORDER BY c.id",
        [args[c] for c in cols if c in args],
    )
    ctx.counts[table] = cur.rowcount
    total = conn.execute(f'SELECT count(*) FROM src."{table}"').fetchone()[0]
    if total > cur.rowcount:
        ctx.warn(f"{ctx.src_path}: {total - cur.rowcount} rows of {table} refer to actors that are not "
                 "there; skipped")
    conn.execute("DELETE FROM temp._merge_ids")


def _analyse_actors(conn: sqlite3.Connection, run_id: int | None = None) -> None:
    """The behaviour analysis over the merged aggregates (:func:`discovery.behaviour.analyse_db`):
    every actor again, findings rebuilt (a merge), or as a one-process replay of ``run_id`` does
    it (``replay --workers``: the actors of the run, against everyone)."""
    import sqlite_utils

    from .behaviour import analyse_db

    if "actor_endpoints" not in _tables(conn, "main"):
        return
    if conn.in_transaction:
        conn.commit()
    db = sqlite_utils.Database(conn)
    analyse_db(db, run_id=run_id, replace=run_id is None)
    # the endpoints of the behaviour findings' details follow their findings (rebuilt endpoints)
    conn.execute(
        "UPDATE main.actor_findings SET endpoint_id = (SELECT f.endpoint_id FROM main.findings f "
        "WHERE f.id = actor_findings.finding_id) WHERE endpoint_id IS NOT (SELECT f.endpoint_id FROM "
        "main.findings f WHERE f.id = actor_findings.finding_id)"
    )
    conn.commit()


class _Db:
    """The little of sqlite_utils.Database that the inventory's meta helpers use."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, args: Iterable = ()):
        return self.conn.execute(sql, list(args))


# ---- the rules ---------------------------------------------------------------------------------------

_GRAPH_SUMS = (
    "requests",
    "tls_connections",
    "tcp_flows",
    "errors_4xx",
    "errors_5xx",
    "no_response",
    "latency_count",
    "latency_sum",
    "request_bytes",
    "response_bytes",
    "tls_bytes",
    "tcp_bytes",
)

RULES: dict[str, Rule] = {
    # order matters: a table comes after the tables its REF columns point to
    "meta": Rule(
        "custom", "schema versions kept; raw_samples_runs united (run ids renumbered)", run=_meta_table
    ),
    "runs": Rule(
        "append", "copied, ids shifted past the output's; a run already there is not copied again", run=_runs
    ),
    "transactions": Rule("append", "copied, ids and run ids shifted", run=_transactions),
    "inventory_meta": Rule(
        "custom",
        "the output's schema version and rules kept (a source's rules adopted "
        "when the output has none); generation bumped after the rebuild",
        run=_inventory_meta,
    ),
    "services": Rule(
        "keyed",
        "by name; hits add, first/last seen min/max; endpoint and probe counts rebuilt",
        key=("name",),
        columns={
            "id": AUTO,
            "name": KEY,
            "first_seen": MIN,
            "last_seen": MAX,
            "hits": SUM,
            "endpoints": DERIVED,
            "probe_hits": DERIVED,
            "excluded_hits": SUM,
            "static_hits": SUM,
            "overflow_hits": SUM,
            "created_run": RUN_FIRST,
        },
    ),
    "service_addresses": Rule(
        "keyed",
        "by service and address",
        key=("service_id", "address"),
        columns={
            "service_id": REF("services"),
            "address": KEY,
            "first_seen": MIN,
            "last_seen": MAX,
            "hits": SUM,
        },
    ),
    "observed_paths": Rule(
        "keyed",
        "by service, method, skeleton and operation; the aggregate merged with "
        "inventory.data_merge (a body both saw counted once)",
        key=("service_id", "method", "path", "operation"),
        columns={
            "id": AUTO,
            "service_id": REF("services"),
            "method": KEY,
            "path": KEY,
            "operation": KEY,
            "confirmed": OR,
            "hits": SUM,
            "first_seen": MIN,
            "last_seen": MAX,
            "endpoint_id": DERIVED,
            "data": merge_path_data,
        },
    ),
    "templates": Rule("derived", "relearned from all observed paths (inventory.materialize)"),
    "endpoints": Rule("derived", "rebuilt from the merged observed paths (inventory.materialize)"),
    "endpoint_statuses": Rule("derived", "rebuilt with the endpoints"),
    "parameters": Rule("derived", "rebuilt with the endpoints"),
    "schemas": Rule("derived", "rebuilt with the endpoints (schemas merged in observed_paths.data)"),
    "fields": Rule("derived", "rebuilt with the endpoints"),
    "samples": Rule("derived", "rebuilt with the endpoints (one per status, the same choice as a replay)"),
    "probes": Rule(
        "keyed",
        "by service and client; per-path counts rebuilt, overflow added",
        key=("service_id", "client"),
        columns={
            "service_id": REF("services"),
            "client": KEY,
            "hits": DERIVED,
            "paths": DERIVED,
            "statuses": DERIVED,
            "examples": DERIVED,
            "first_seen": MIN,
            "last_seen": MAX,
            "overflow_hits": SUM,
        },
    ),
    "assets": Rule(
        "keyed",
        "by service, kind and extension",
        key=("service_id", "kind", "extension"),
        columns={
            "service_id": REF("services"),
            "kind": KEY,
            "extension": KEY,
            "hits": SUM,
            "bytes": SUM,
            "paths": MAX,
            "example": MIN,
            "first_seen": MIN,
            "last_seen": MAX,
        },
    ),
    "changes": Rule(
        "custom",
        "copied (run ids renumbered), then one row per thing kept, the earliest; rows "
        "about endpoints the merged inventory does not have are dropped",
        run=_changes,
    ),
    "capture_files": Rule(
        "keyed",
        "by fingerprint (a capture merged in is not replayed again)",
        key=("fingerprint",),
        columns={"fingerprint": KEY, "path": KEEP, "size": KEEP, "run_id": RUN_FIRST, "recorded_at": KEEP},
    ),
    "findings": Rule(
        "keyed",
        "by service, method, path, detector and location; counts add, first/last seen "
        "min/max, the higher severity's evidence (on a tie the earlier), value hashes united; "
        "behaviour.* findings not merged but found again over the merged actors",
        key=("service", "method", "path", "detector", "location"),
        where="detector NOT LIKE 'behaviour.%'",  # found again over the merged actors (_analyse_actors)
        lookup="service = ? AND ifnull(method, '') = ifnull(?, '') AND path = ? AND detector = ? "
        "AND location = ?",
        row=_finding_row,
        columns={
            "id": AUTO,
            "service": KEY,
            "method": KEY,
            "path": KEY,
            "detector": KEY,
            "location": KEY,
            "endpoint_id": ROW,
            "kind": ROW,
            "category": ROW,
            "severity": ROW,
            "severity_rank": ROW,
            "confidence": ROW,
            "evidence": ROW,
            "value_hashes": ROW,
            "distinct_values": ROW,
            "count": SUM,
            "first_seen": MIN,
            "last_seen": MAX,
            "first_run_id": ROW,
            "last_run_id": ROW,
            "first_tx_id": ROW,
            "last_tx_id": ROW,
            "tx_ref": ROW,
        },
    ),
    "graph_edges": Rule(
        "keyed",
        "by client address and raw service; counters add (as graph.collect merges "
        "them), names resolved again",
        key=("client_ip", "service"),
        columns={
            "client_ip": KEY,
            "service": KEY,
            "source": DERIVED,
            "target": DERIVED,
            **dict.fromkeys(_GRAPH_SUMS, SUM),
            **dict.fromkeys(("methods", "statuses", "latency_hist", "auth"), COUNTER),
            "first_seen": MIN,
            "last_seen": MAX,
            "updated_run": RUN_LAST,
        },
    ),
    "graph_names": Rule(
        "keyed",
        "by address, port, name and source",
        key=("ip", "port", "name", "source"),
        columns={
            "ip": KEY,
            "port": KEY,
            "name": KEY,
            "source": KEY,
            "count": SUM,
            "first_seen": MIN,
            "last_seen": MAX,
        },
    ),
    "graph_nodes": Rule("derived", "resolved again from all edges and names (graph.build.write_resolved)"),
    # the actors sink (discovery/actors.py, docs/actors.md); its behaviour findings are not merged
    # but found again by the analysis over the merged aggregates (_analyse_actors)
    "actor_settings": Rule(
        "custom",
        "the output's settings kept (a setting only a source changed is adopted; a different one "
        "warned)",
        run=_actor_settings,
    ),
    "actors": Rule(
        "keyed",
        "by actor id (a keyed hash: sources must share the hash key); counts add, first/last seen "
        "min/max, addresses united (at most 16); sessions recounted, findings rebuilt",
        key=("actor",),
        row=_actor_row,
        columns={
            "id": AUTO,
            "actor": KEY,
            "kind": KEEP,
            "label": KEEP,
            "issuer": KEEP,
            "addresses": _union_addresses,
            "first_seen": MIN,
            "last_seen": MAX,
            **dict.fromkeys(
                ("calls", "static_calls", "errors", "denied", "not_found", "request_bytes", "response_bytes",
                 "records", "sensitive_records"),
                SUM,
            ),
            "sessions": SUM,  # then recounted from the merged sessions
            "first_run_id": RUN_FIRST,
            "last_run_id": RUN_LAST,
            "run_id": RUN_FIRST,
            "findings": ROW,
            "severity": ROW,
        },
    ),
    "actor_endpoints": Rule(
        "keyed",
        "by actor, service, method and skeleton; counters add, first/last seen min/max, the "
        "distinct-value sketches united (the 1,024 smallest hashes of both) and counted again; "
        "endpoint mapped again",
        key=("actor_id", "service", "method", "path"),
        row=_actor_endpoint_row,
        columns={
            "id": AUTO,
            "actor_id": REF("actors"),
            "service": KEY,
            "method": KEY,
            "path": KEY,
            "endpoint_id": DERIVED,
            **dict.fromkeys(
                ("calls", "ok", "denied", "not_found", "client_errors", "server_errors", "unauth_calls",
                 "unauth_ok", "unauth_denied", "request_bytes", "response_bytes", "records",
                 "sensitive_records", "login_attempts", "login_failures"),
                SUM,
            ),
            "objects": ROW,
            "usernames": ROW,
            "object_hashes": ROW,
            "username_hashes": ROW,
            "first_seen": MIN,
            "last_seen": MAX,
            "first_run_id": RUN_FIRST,
            "last_run_id": RUN_LAST,
            "run_id": RUN_FIRST,
        },
    ),
    "actor_sessions": Rule(
        "custom",
        "per actor, sessions that overlap or are at most session_idle apart joined into one "
        "(counts add, start/end min/max); actors' session counts recounted",
        run=_actor_sessions,
    ),
    "actor_calls": Rule(
        "custom",
        "appended: ids renumbered, transaction and run ids shifted, actor, session and endpoint "
        "rows translated; marks set again by the analysis",
        run=_actor_calls,
    ),
    "actor_findings": Rule(
        "derived",
        "rebuilt with the behaviour.* findings by the behaviour analysis over the merged "
        "aggregates",
    ),
    "_undo": Rule("skip", "the source's undo journal of unfinished runs (discovery/journal.py): local to it"),
    "merges": Rule("custom", "the sources' merge records, appended (provenance)", run=_merges),
}


def check_rules(conn: sqlite3.Connection, schema: str = "main") -> list[str]:
    """Problems that stop the merge of the database ``schema`` of ``conn``: tables without a
    rule, columns a keyed rule does not name."""
    problems = []
    for table in _tables(conn, schema):
        rule = RULES.get(table)
        if rule is None:
            problems.append(f"table {table} has no merge rule")
            continue
        if rule.how == "keyed":
            unknown = [c for c in _columns(conn, schema, table) if c not in rule.columns]
            if unknown:
                problems.append(f"table {table}: no merge rule for columns {', '.join(unknown)}")
    return problems


def unmergeable(path: str) -> list[str]:
    """:func:`check_rules` for the database file ``path`` (opened read-only)."""
    conn = sqlite3.connect("file:" + quote(os.path.abspath(path)) + "?mode=ro", uri=True)
    try:
        return check_rules(conn)
    finally:
        conn.close()


# ---- the merge -----------------------------------------------------------------------------------------


def _ensure_output(path: str) -> None:
    """Create the output's tables (the sinks' own schema functions) and the merge log."""
    from .findings import ensure_table
    from .store import Store

    store = Store(path)
    try:
        ensure_schema(store.db)
        ensure_table(store.db)
        try:
            from graph.collect import ensure_schema as graph_schema
        except ImportError:  # pragma: no cover - the graph package is part of apisensor
            graph_schema = None
        if graph_schema is not None:
            graph_schema(store.db)
        if "merges" not in store.db.table_names():
            store.db["merges"].create(
                {
                    "id": int,
                    "source": str,
                    "fingerprints": str,
                    "runs": str,
                    "started_at": str,
                    "finished_at": str,
                    "status": str,
                },
                pk="id",
            )
    finally:
        store.close()


def _key_of(path: str) -> bytes | None:
    """The hash key a database was written with, if it can be told without creating one."""
    env = os.environ.get("APISENSOR_HASH_KEY")
    if env:
        return env.encode()
    try:
        with open(path + ".key", "rb") as f:
            key = f.read()
        return key if len(key) >= 16 else None
    except OSError:
        return None


def _adopt_key(output: str, sources: list[str], warn: Callable[[str], None]) -> None:
    if os.environ.get("APISENSOR_HASH_KEY"):
        return
    keys = {s: _key_of(s) for s in sources}
    known = {k for k in keys.values() if k is not None}
    if len(known) > 1:
        warn(
            "the sources were hashed with different keys ("
            + ", ".join(f"{s}.key" for s in sources)
            + "): the same value has a different hash in each; share one key between sensors "
            "(APISENSOR_HASH_KEY, or copy one .key file to the others) to match values across them"
        )
    if not os.path.exists(output) and not os.path.exists(output + ".key") and len(known) == 1:
        fd = os.open(output + ".key", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(next(iter(known)))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _remove_db(path: str) -> None:
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)


def merge(
    output: str, sources: list[str], replace: bool = False, warn: Callable[[str], None] | None = None,
    into_run: int | None = None, prepare: Callable[[sqlite3.Connection], None] | None = None,
) -> dict[str, Any]:
    """Merge the databases ``sources`` into ``output`` (created if missing; with ``replace``,
    started afresh).  Returns a summary: per source what was done and the rows merged.

    ``into_run``: the sources are shards of one run that is open in ``output`` (``replay
    --workers``): each holds exactly one run, whose rows become that run's (its ``runs`` row is
    not copied, nothing is recorded in ``merges``; the caller's undo journal, armed by
    ``prepare(conn)`` on the merge's connection, makes it crash-safe)."""
    warnings: list[str] = []

    def _warn(msg: str) -> None:
        warnings.append(msg)
        if warn is not None:
            warn(msg)

    for s in sources:
        if not os.path.isfile(s):
            raise MergeError(f"{s}: no such database")
        if os.path.exists(output) and os.path.samefile(s, output) and replace:
            raise MergeError(f"{s} is the output: --replace would delete it")
        _check_source(s)
        problems = unmergeable(s)
        if problems:
            raise MergeError(f"{s}: cannot merge: " + "; ".join(problems) + " (a newer apisensor wrote it?)")
    if replace:
        _remove_db(output)
    _adopt_key(output, sources, _warn)
    _ensure_output(output)
    # URI filenames on, so that sources are attached read-only (mode=ro)
    conn = sqlite3.connect("file:" + quote(os.path.abspath(output)), uri=True)
    conn.execute("PRAGMA busy_timeout = 10000")
    if prepare is not None:
        prepare(conn)
    report: dict[str, Any] = {"output": output, "sources": []}
    try:
        unfinished = conn.execute(
            "SELECT source, started_at FROM merges WHERE status != 'complete'"
        ).fetchall()
        if unfinished:
            raise MergeError(
                f"{output}: the merge of {unfinished[0][0]} started at {unfinished[0][1]} did not finish; "
                "rebuild the output from all its sources with --replace"
            )
        # shards of one run: what is derived (endpoints, findings' links, the map's names) is
        # rebuilt once, after the last shard, instead of after each
        shared = _Deferred(_endpoint_keys(conn)) if into_run is not None else None
        for s in sources:
            report["sources"].append(_merge_one(conn, output, s, _warn, into_run, shared))
        if shared is not None:
            _finish(conn, shared, shared.before)
            conn.commit()
        shards_with_actors = [e.pop("actors", False) for e in report["sources"]]
        if into_run is not None and any(shards_with_actors):
            # once all the shards are in: the run's actors against the whole population, as a
            # one-process replay analyses them
            _analyse_actors(conn, run_id=into_run)
        report["services"] = conn.execute("SELECT count(*) FROM services").fetchone()[0]
        report["endpoints"] = conn.execute("SELECT count(*) FROM endpoints").fetchone()[0]
        report["findings"] = conn.execute("SELECT count(*) FROM findings").fetchone()[0]
        report["runs"] = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        conn.close()
    report["warnings"] = warnings
    return report


def _check_source(path: str) -> None:
    try:
        con = sqlite3.connect("file:" + quote(os.path.abspath(path)) + "?mode=ro", uri=True)
        try:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise MergeError(f"{path}: cannot read as a SQLite database ({e})") from None
    if "runs" not in names:
        raise MergeError(f"{path}: not an apisensor database (no runs table)")


def _attach(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("ATTACH DATABASE ? AS src", ["file:" + quote(os.path.abspath(path)) + "?mode=ro"])


class _Deferred:
    """What ``_finish`` needs from the shards merged so far (``merge(into_run=...)``)."""

    def __init__(self, before: dict[int, tuple]):
        self.before = before
        self.services: set[str] = set()
        self.finding_endpoints: dict[int, tuple] = {}

    def add(self, ctx: _Ctx) -> None:
        self.services |= ctx.services
        self.finding_endpoints.update(ctx.finding_endpoints)


def _merge_one(
    conn: sqlite3.Connection, output: str, path: str, warn: Callable[[str], None],
    into_run: int | None = None, deferred: _Deferred | None = None,
) -> dict[str, Any]:
    ctx = _Ctx(conn, path, warn)
    entry: dict[str, Any] = {"source": path}
    if os.path.exists(output) and os.path.samefile(path, output):
        entry["status"] = "is the output"
        return entry
    _attach(conn, path)
    try:
        problems = check_rules(conn, "src")
        if problems:
            raise MergeError(
                f"{path}: cannot merge: " + "; ".join(problems) + " (a newer apisensor wrote it?)"
            )
        theirs = {run_fingerprint(r): r["id"] for r in _rows(conn, "SELECT * FROM src.runs")}
        if into_run is not None:
            if len(theirs) != 1:
                raise MergeError(f"{path}: a shard must hold exactly one run, not {len(theirs)}")
            entry.update(_merge_source(conn, ctx, path, sorted(theirs), into_run, deferred))
            entry["status"] = "merged"
            entry["actors"] = "actor_endpoints" in ctx.tables("src")
            return entry
        ours = {run_fingerprint(r) for r in _rows(conn, "SELECT * FROM main.runs")}
        done = [f for f in theirs if f in ours]
        if not theirs:
            entry["status"] = "empty (no runs)"
            return entry
        if len(done) == len(theirs):
            entry["status"] = "already merged"
            return entry
        if done:
            raise MergeError(
                f"{path}: {len(done)} of its {len(theirs)} runs are in {output} already and its counts are "
                "not kept per run; rebuild the output from all sources with --replace"
            )
        entry.update(_merge_source(conn, ctx, path, sorted(theirs)))
        entry["status"] = "merged"
    finally:
        if conn.in_transaction:
            conn.rollback()
        conn.execute("DETACH DATABASE src")
    return entry


def _merge_source(conn: sqlite3.Connection, ctx: _Ctx, path: str, fingerprints: list[str],
                  into_run: int | None = None, deferred: _Deferred | None = None) -> dict[str, Any]:
    # create the tables the output lacks as the source has them (a sink the output never ran)
    ours = set(ctx.tables("main"))
    for table in ctx.tables("src"):
        if table not in ours:
            for (sql,) in conn.execute(
                "SELECT sql FROM src.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
                "AND type IN ('table', 'index') ORDER BY type = 'index'",
                [table],
            ).fetchall():
                conn.execute(sql)
    conn.commit()
    if into_run is not None:  # the shard's one run becomes the open run
        ctx.run_off = into_run - conn.execute("SELECT id FROM src.runs").fetchone()[0]
    else:
        ctx.run_off = conn.execute("SELECT coalesce(max(id), 0) FROM main.runs").fetchone()[0]
    if "transactions" in ours:
        ctx.tx_off = conn.execute("SELECT coalesce(max(id), 0) FROM main.transactions").fetchone()[0]
    mid = None
    if into_run is None:
        mid = conn.execute(
            "INSERT INTO merges (source, fingerprints, runs, started_at, status) "
            "VALUES (?, ?, '[]', ?, 'running')",
            [os.path.abspath(path), json.dumps(fingerprints), _now()],
        ).lastrowid
        conn.commit()
    src_tables = set(ctx.tables("src"))
    if {"endpoints", "services"} <= src_tables:
        for eid, name, method, template, op, examples in conn.execute(
            "SELECT e.id, s.name, e.method, e.template, e.operation, e.examples FROM src.endpoints e "
            "JOIN src.services s ON s.id = e.service_id"
        ):
            ctx.src_endpoints[eid] = (name, method, template, op, json.loads(examples or "[]"))
    if "services" in src_tables:
        ctx.services = {n for (n,) in conn.execute("SELECT name FROM src.services")}
    endpoint_keys = _endpoint_keys(conn) if deferred is None else {}
    pending = [
        t
        for t in ctx.tables("src")
        if RULES.get(t)
        and RULES[t].how == "pending"
        and conn.execute(f'SELECT 1 FROM src."{t}" LIMIT 1').fetchone()
    ]
    if pending:
        ctx.warn(f"{path}: tables {', '.join(pending)} have no merge rule yet: not merged")
    for table, rule in RULES.items():
        if table not in src_tables or rule.how in ("derived", "skip", "pending"):
            continue
        if into_run is not None and table == "runs":
            continue
        if rule.how == "keyed":
            _merge_keyed(ctx, table, rule)
        else:
            rule.run(ctx, table)
    if deferred is None:
        _finish(conn, ctx, endpoint_keys)
    else:
        deferred.add(ctx)
    if into_run is None and "actor_endpoints" in src_tables:
        _analyse_actors(conn)  # every actor again, against the merged population
    runs = [r for (r,) in conn.execute("SELECT id + ? FROM src.runs ORDER BY id", [ctx.run_off])]
    if mid is not None:
        conn.execute(
            "UPDATE merges SET runs = ?, finished_at = ?, status = 'complete' WHERE id = ?",
            [json.dumps(runs), _now(), mid],
        )
    conn.commit()
    return {"runs": runs, "rows": {k: v for k, v in ctx.counts.items() if v}}


def _endpoint_keys(conn: sqlite3.Connection) -> dict[int, tuple]:
    return {
        eid: (name, method, template, op)
        for eid, name, method, template, op in conn.execute(
            "SELECT e.id, s.name, e.method, e.template, e.operation FROM main.endpoints e "
            "JOIN main.services s ON s.id = e.service_id"
        )
    }


def _finish(conn: sqlite3.Connection, ctx: _Ctx | _Deferred, before: dict[int, tuple]) -> None:
    """Rebuild what is derived: endpoints of the services this source touched, findings'
    endpoints, the change log, the map's names."""
    import sqlite_utils

    from .rules import active

    db = sqlite_utils.Database(conn)
    rules = active(_meta(db, "rules"))
    last_change = conn.execute("SELECT coalesce(max(id), 0) FROM main.changes").fetchone()[0]
    for sid, name in conn.execute("SELECT id, name FROM main.services ORDER BY name").fetchall():
        if name in ctx.services:
            materialize(db, sid, name, rules.for_service(name), None)
    _set_meta(db, "generation", str(int(_meta(db, "generation") or 0) + 1))
    # the rebuild logs what is new to the output; but only its new endpoints are news (the
    # sources' own logs say when parameters and fields appeared; an endpoint merged away here
    # was an intermediate state of the merge)
    conn.execute("DELETE FROM main.changes WHERE id > ? AND kind != 'endpoint'", [last_change])
    conn.commit()
    # findings -> endpoints, by natural key (ids changed), else by an example path
    after = {k: eid for eid, k in _endpoint_keys(conn).items()}
    matcher = EndpointMatcher(db)
    updates = []
    for fid, service, method, eid in conn.execute(
        "SELECT id, service, method, endpoint_id FROM main.findings"
    ).fetchall():
        src = ctx.finding_endpoints.get(fid)
        if eid is None and src is None:
            continue
        new = next((after[k] for k in (before.get(eid), src and src[:4]) if k in after), None)
        for example in src[4] if src and new is None else []:
            new = matcher.match(service, method or None, example)
            if new is not None:
                break
        if new != eid:
            updates.append((new, fid))
    conn.executemany("UPDATE main.findings SET endpoint_id = ? WHERE id = ?", updates)
    _dedup_changes(conn)
    conn.commit()
    try:
        from graph.build import write_resolved
    except ImportError:  # pragma: no cover
        return
    write_resolved(db)


def _dedup_changes(conn: sqlite3.Connection) -> None:
    kinds = "('service', 'endpoint', 'parameter', 'response_field')"
    conn.execute(
        f"DELETE FROM main.changes WHERE kind IN {kinds} AND id NOT IN (SELECT id FROM ("
        "SELECT id, row_number() OVER (PARTITION BY kind, service, ifnull(method, ''), ifnull(template, ''), "
        f"ifnull(name, '') ORDER BY first_seen IS NULL, first_seen, id) AS n FROM main.changes WHERE kind IN "
        f"{kinds}) WHERE n = 1)"
    )
    conn.execute(
        "DELETE FROM main.changes WHERE kind IN ('endpoint', 'parameter', 'response_field') AND NOT EXISTS ("
        "SELECT 1 FROM main.endpoints e JOIN main.services s ON s.id = e.service_id "
        "WHERE s.name = changes.service AND e.method = changes.method AND e.template = changes.template) "
        "AND NOT EXISTS (SELECT 1 FROM "
        "main.changes m WHERE m.kind = 'endpoint_merged' AND m.service = changes.service AND m.method = "
        "changes.method AND m.template = changes.template)"
    )
    conn.execute(
        "UPDATE main.endpoints SET created_run = (SELECT min(c.run_id) FROM main.changes c "
        "JOIN main.services s ON s.name = c.service WHERE s.id = endpoints.service_id "
        "AND c.kind = 'endpoint' AND c.method = "
        "endpoints.method AND c.template = endpoints.template) WHERE created_run IS NULL"
    )


__all__ = [
    "RULES",
    "Rule",
    "MergeError",
    "merge",
    "check_rules",
    "unmergeable",
    "run_fingerprint",
    "merge_path_data",
]
