"""The ``apisensor`` command: a thin click layer over the library (imports are lazy so that
``apisensor --help`` starts fast).  This package is the one place that ties sensor, discovery
and graph together: ``__init__`` holds the group and the sensor commands; the other modules
(``inventory``, ``findings``, ``graphs``) hold the commands of each feature and are listed in
``_LAZY`` so they are imported only when used or listed."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import click

EXIT_BAD_INPUT = 2


def _fail(msg: str) -> None:
    click.echo(f"apisensor: error: {msg}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _open(paths: tuple[str, ...]):
    from ..sources import CaptureError, open_files

    if not paths:
        _fail("no capture file given (try: apisensor transactions FILE.pcap)")
    try:
        return open_files(list(paths))
    except CaptureError as e:
        _fail(str(e))


def _check_linktypes(files) -> None:
    from ..decode import SUPPORTED_LINKTYPES

    # pcap declares its link type up front: refuse files we cannot decode at all
    for f in files:
        for lt in f.linktypes:
            if lt not in SUPPORTED_LINKTYPES:
                _fail(f"{f.path}: unsupported link type {lt} (supported: "
                      f"{', '.join(str(k) for k in sorted(SUPPORTED_LINKTYPES))})")


def _records(files, progress: bool) -> Iterator:
    from ..sources import merge

    records = merge(files)
    if not progress:
        yield from records
        return
    total = sum(f.size for f in files) or 1
    with click.progressbar(length=total, label="replaying", file=sys.stderr, show_pos=False,
                           show_percent=True, show_eta=True) as bar:
        done = 0
        for i, r in enumerate(records, 1):
            yield r
            if not i & 0x3FFF:
                pos = sum(f.position() for f in files)
                bar.update(pos - done)
                done = pos
        bar.update(total - done)


def _warn_files(files, stats) -> None:
    for f in files:
        stats.files += 1
        if f.truncated:
            stats.truncated_files += 1
        stats.anomalies.update(f.anomalies)  # capture.truncated, capture.corrupt_record, ...
        for w in f.warnings:
            click.echo(f"apisensor: warning: {w}", err=True)


def _limits(body_cap: int | None, max_flows: int | None):
    from dataclasses import replace

    from ..limits import Limits

    limits = Limits()
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get("apisensor.limits"):
        limits = replace(limits, **ctx.meta["apisensor.limits"])
    if body_cap is not None:
        limits = replace(limits, body_cap=body_cap)
    if max_flows is not None:
        limits = replace(limits, max_flows=max_flows)
    return limits


FLUSH_EVERY = 5000  # transactions between two flushes of the sinks (one SQLite transaction each)

# Sinks fed by replay/capture, in order (a later sink may read what an earlier one flushed).
SINKS = [
    "discovery.store:TransactionLog",
    "discovery.inventory:Inventory",
    "discovery.actors:Actors",
    "graph.collect:GraphCollector",
    "discovery.findings:Findings",
]


def _sinks(store, run_id: int) -> list:
    from discovery.recorder import make_sinks

    return make_sinks(store, run_id, SINKS)


def _limit_option(ctx: click.Context, param, values: tuple[str, ...]) -> None:
    """``--limit NAME=VALUE`` (repeatable): any field of sensor.limits.Limits."""
    from dataclasses import fields

    from ..limits import Limits

    known = {f.name: f.type for f in fields(Limits)}
    out: dict[str, float | int] = {}
    for v in values:
        name, eq, text = v.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in known:
            raise click.BadParameter(f"{v!r}: expected NAME=VALUE, NAME one of {', '.join(known)}")
        try:
            value = float(text) if known[name] in (float, "float") else int(text.replace("_", ""), 0)
        except ValueError:
            raise click.BadParameter(f"{v!r}: {text!r} is not a number") from None
        if value < 0:
            raise click.BadParameter(f"{v!r}: must not be negative")
        out[name] = value
    ctx.meta["apisensor.limits"] = out


def start_recording(db_path: str, paths: list[str], keep_raw: bool, force: bool, verbose: bool,
                    flush_every: int):
    """Open --db and a run over the capture/log files ``paths`` (refused captures end the
    command); returns (store, run_id, recorder).  Shared by ``replay`` and ``import``."""
    from discovery.recorder import Recorder, RunRefused, start_run
    from discovery.store import Store

    try:
        store = Store(db_path, keep_raw_samples=keep_raw or None)
    except Exception as e:  # sqlite3.DatabaseError and friends: one line, no traceback
        _fail(f"{db_path}: cannot open as a SQLite database ({e})")
    try:
        run_id, sinks = start_run(store, paths, SINKS, files=paths, force=force,
                                  notify=lambda m: click.echo(f"apisensor: {m}", err=True))
    except RunRefused as e:
        store.close()
        click.echo(f"apisensor: {e}", err=True)
        sys.exit(0 if e.harmless else EXIT_BAD_INPUT)

    def on_commit(n: int) -> None:
        if verbose:
            click.echo(f"apisensor: committed run {run_id}: {n} transactions", err=True)

    return store, run_id, Recorder(store, run_id, sinks, flush_every=flush_every, on_commit=on_commit)


_common = [
    click.option("--body-cap", type=int, default=None, metavar="BYTES",
                 help="Decoded body bytes kept per message (default 262144); lengths are always counted."),
    click.option("--max-flows", type=int, default=None, metavar="N",
                 help="TCP flows tracked at once (default 200000); the least recently active are evicted."),
    click.option("--limit", "limit_overrides", multiple=True, metavar="NAME=VALUE", expose_value=False,
                 callback=_limit_option,
                 help="Set any bound of README \"Bounds\" (e.g. --limit max_headers=64), repeatable."),
]


def common(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


# command name -> "module:function" (relative to this package), imported on first use
_LAZY: dict[str, str] = {
    "services": ".inventory:services", "endpoints": ".inventory:endpoints", "changes": ".inventory:changes",
    "openapi": ".inventory:openapi", "diff": ".inventory:diff", "rules": ".inventory:rules",
    "retemplate": ".inventory:retemplate",
    "graph": ".graphs:graph",
    "capture": ".capture:capture",
    "findings": ".findings:findings",
    "import": ".imports:import_logs",
    "report": ".ecosystem:report", "serve": ".ecosystem:serve", "merge": ".ecosystem:merge",
    "export": ".ecosystem:export",
    "actors": ".actors:actors", "sessions": ".actors:sessions",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY])

    def get_command(self, ctx: click.Context, name: str):
        if name in _LAZY:
            import importlib

            mod, _, attr = _LAZY[name].partition(":")
            return getattr(importlib.import_module(mod, __name__), attr)
        return super().get_command(ctx, name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="apisensor")
def main() -> None:
    """apisensor: discover the HTTP APIs on your network from packet captures.

    Replay pcap/pcapng files (or watch an interface) and get every HTTP transaction, an API
    inventory in SQLite, findings of leaked data, and a map of who calls whom.

    \b
    Start with:
      apisensor transactions capture.pcap         # what crossed the wire
      apisensor replay capture.pcap --db inv.db   # store it
    """
    # Every file apisensor creates (database, WAL/SHM, key files, maps, specs, exports,
    # reports, pcaps) is readable by its owner only; restored when the command ends.
    old = os.umask(0o077)
    click.get_current_context().call_on_close(lambda: os.umask(old))


@main.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (keys in README).")
@common
def transactions(files: tuple[str, ...], as_json: bool, body_cap, max_flows) -> None:
    """Print every HTTP transaction in FILES (pcap, pcapng, optionally .gz), one per line.

    Several files are merged in timestamp order. Body lengths are decoded lengths
    (de-chunked and decompressed, as Zeek counts); *_wire lengths are before content
    decoding (as Suricata counts).
    """
    from ..pipeline import Pipeline
    from ..stats import Stats

    opened = _open(files)
    _check_linktypes(opened)
    out = sys.stdout
    if as_json:
        def emit(tx) -> None:
            out.write(json.dumps(tx.to_json(), ensure_ascii=False) + "\n")
    else:
        click.echo(f"{'time':<15} {'client':<22} {'server':<22} {'method':<8} {'status':>6}  "
                   f"{'req':>7} {'resp':>9}  host / uri")

        def emit(tx) -> None:
            line = (f"{tx.ts:<15.3f} {tx.client:<22} {tx.server:<22} {tx.method or '-':<8} "
                    f"{tx.status_code if tx.status_code is not None else '-':>6}  "
                    f"{tx.request_body_len:>7} {tx.response_body_len:>9}  "
                    f"{tx.host or '-'} {tx.uri or '-'}")
            if tx.flags:
                line += f"  [{','.join(sorted(tx.flags))}]"
            out.write(line + "\n")

    stats = Stats()
    p = Pipeline(emit, _limits(body_cap, max_flows), stats)
    try:
        p.run(_records(opened, progress=False))
        p.finish()
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    _warn_files(opened, stats)


@main.command()
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False),
              help="SQLite file to create or add to.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, metavar="N",
              help="Processes to spread flows over (default: all cores for inputs over 32 MB, else 1).")
@click.option("--force", is_flag=True, help="Count captures again even if already replayed into --db.")
@click.option("--graph", "graph_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also draw the dependency map to FILE (.png .svg .pdf .dot .graphml .json).")
@click.option("--keep-raw-samples", "keep_raw", is_flag=True,
              help="Store samples and URIs UNREDACTED (the database then holds sensitive values).")
@click.option("--flush-every", type=click.IntRange(1), default=FLUSH_EVERY, show_default=True, metavar="N",
              help="Transactions between two commits to --db (a commit survives a kill).")
@click.option("-v", "--verbose", is_flag=True, help="Report each commit on stderr.")
@common
def replay(files: tuple[str, ...], db_path: str, as_json: bool, progress, workers, body_cap,
           max_flows, force: bool = False, graph_path: str | None = None, keep_raw: bool = False,
           flush_every: int = FLUSH_EVERY, verbose: bool = False) -> None:
    """Replay FILES through the sensor and store what it saw in the SQLite file --db.

    Commits every --flush-every transactions. If a replay is killed, running the same
    command again rolls back the partial run and replays from the start, so nothing is
    counted twice; the same capture is never counted twice unless --force.
    """
    from ..pipeline import Pipeline
    from ..stats import Stats

    opened = _open(files)
    _check_linktypes(opened)
    store, run_id, rec = start_recording(db_path, [f.path for f in opened], keep_raw, force, verbose,
                                         flush_every)
    emit, on_event = rec.observe, rec.observe_event
    stats = Stats()
    limits = _limits(body_cap, max_flows)
    show = sys.stderr.isatty() if progress is None else progress
    if workers is None:
        from ..parallel import default_workers

        workers = default_workers(sum(f.size for f in opened))
    if workers > 1:
        results, warnings = _replay_workers(store, run_id, opened, workers, limits, stats, keep_raw,
                                            flush_every, show)
        for w in warnings:
            click.echo(f"apisensor: warning: {w}", err=True)
    else:
        p = Pipeline(emit, limits, stats, on_event=on_event)
        p.run(_records(opened, show))
        p.finish()
        results = rec.finish()
        _warn_files(opened, stats)
        warnings = [w for f in opened for w in f.warnings]
    summary = stats.to_json()
    store.finish_run(run_id, summary, warnings=warnings)
    store.close()
    if graph_path:
        from .graphs import write_map

        results["graph"] = write_map(db_path, graph_path)
    summary = {"run_id": run_id, "db": db_path, **summary, **results}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(f"run {run_id}: {stats.packets} packets, {stats.bytes} bytes, {stats.flows} TCP flows "
                   f"({stats.http_flows} HTTP, {stats.tls_flows} TLS), {stats.transactions} transactions "
                   f"-> {db_path}")
        for key, value in results.items():
            click.echo(f"{key}: {value}")
        if stats.anomalies:
            top = ", ".join(f"{k} {v}" for k, v in stats.anomalies.most_common(6))
            click.echo(f"anomalies: {top}")


def _replay_workers(store, run_id: int, opened, workers: int, limits, stats, keep_raw: bool,
                    flush_every: int, show: bool) -> tuple[dict, list[str]]:
    """``replay --workers N``: sensor and sinks in N processes, their shards merged into the run."""
    import sqlite_utils

    from discovery import journal
    from discovery.merge import merge

    from .sharded import replay_sharded, target_settings

    for f in opened:
        f.close()
    db_path = store.path
    if show:
        click.echo(f"replaying with {workers} workers ...", err=True)

    def merge_into(shards: list[str]) -> dict:
        merge(db_path, shards, into_run=run_id,
              prepare=lambda conn: journal.arm(sqlite_utils.Database(conn), run_id),
              warn=lambda m: click.echo(f"apisensor: warning: {m}", err=True))
        return summary_counts(store.db)

    return replay_sharded([f.path for f in opened], workers, limits, stats, db_path, store.keep_raw_samples,
                          SINKS, flush_every, store.hasher.key, target_settings(store.db), merge_into, run_id)


def summary_counts(db) -> dict:
    """What a replay reports at the end, read back from the database."""
    names = set(db.table_names())
    out: dict = {}
    if "services" in names:
        out["services"] = db.execute("select count(*) from services").fetchone()[0]
        out["endpoints"] = db.execute("select count(*) from endpoints").fetchone()[0]
    if "graph_edges" in names:
        out["graph_nodes"] = db.execute("select count(*) from graph_nodes").fetchone()[0]
        out["graph_edges"] = db.execute("select count(*) from graph_edges").fetchone()[0]
    if "findings" in names:
        sev = dict(db.execute("select severity, count(*) from findings group by severity").fetchall())
        out["findings"] = {"total": sum(sev.values()),
                           **{k: sev[k] for k in ("high", "medium", "low") if k in sev}}
    return out


if __name__ == "__main__":
    main()
