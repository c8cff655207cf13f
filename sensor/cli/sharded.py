"""``apisensor replay --workers N``: the whole pipeline on N cores.

Each worker process reads the captures, keeps the TCP flows that hash to it (both directions
of a flow hash alike, see :func:`sensor.parallel.owner`), and runs the sensor *and the sinks*
on them.  Worker 0 writes into the target database itself, under the run the parent opened,
with its own connection's undo journal armed (exactly as a one-worker replay of its flows);
the others write into shard databases of their own (same hash key as the target, so redacted
values match), which the parent then merges into the target under the same run
(:func:`discovery.merge.merge` with ``into_run``), journal armed, so a kill at any point leaves
the target as crash-safe as a one-worker replay.  Workers die with the parent (a worker
writing into the target must not outlive the process that owns the run).  Templates, endpoints and
findings' endpoint links are rebuilt from the merged observations, as if one process had seen
everything (see docs/ecosystem.md "merge" for what a merge keeps exact).

Shards live in a private directory beside the target (``.<db>.shards-<pid>``), removed at the
end; one left by a killed replay is removed by the next.
"""

from __future__ import annotations

import glob
import multiprocessing
import os
import shutil
import traceback
from collections.abc import Callable

# what the target's user configured, copied into each shard before it records anything:
# templating rules, actor/session settings (table -> where clause)
SETTINGS = {"inventory_meta": "key = 'rules'", "actor_settings": "1"}


def target_settings(db) -> dict[str, list[dict]]:
    names = set(db.table_names())
    return {t: [dict(r) for r in db.query(f'select * from "{t}" where {w}')]
            for t, w in SETTINGS.items() if t in names}


def _die_with_parent(parent: int) -> None:
    """SIGKILL this worker when the parent dies (worker 0 writes into the target under the
    parent's run: it must not outlive the process that owns the run)."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl
        os._exit(1)


def _shard_worker(paths: list[str], idx: int, n: int, limits, shard: str, key: bytes, keep_raw: bool,
                  specs: list[str], flush_every: int, settings: dict, q, parent: int = 0,
                  into_run: int | None = None) -> None:
    """One worker: the flows that hash to ``idx``.  ``into_run``: write straight into the
    target database ``shard`` under that (open) run, as a one-worker replay would; otherwise
    into the shard database ``shard``, merged afterwards."""
    try:
        _die_with_parent(parent)
        from discovery import journal
        from discovery.recorder import Recorder, make_sinks
        from discovery.store import Store

        from ..pipeline import Pipeline
        from ..sources import merge, open_files
        from ..stats import Stats

        if into_run is not None:
            store = Store(shard, keep_raw_samples=keep_raw)
            run_id = into_run
            sinks = make_sinks(store, run_id, specs)
            journal.arm(store.db, run_id)  # this connection's writes are journaled like the parent's
        else:
            if not os.environ.get("APISENSOR_HASH_KEY"):  # else the shard uses it as the target does
                fd = os.open(shard + ".key", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(key)
            store = Store(shard, keep_raw_samples=keep_raw)
            run_id = store.begin_run(paths)
            sinks = make_sinks(store, run_id, specs)
            with store.db.conn:
                for table, rows in settings.items():
                    if rows and table in store.db.table_names():
                        store.db[table].insert_all(rows, replace=True)
        rec = Recorder(store, run_id, sinks, flush_every=flush_every)
        stats = Stats()
        p = Pipeline(rec.observe, limits, stats, on_event=rec.observe_event, shard=(idx, n))
        files = open_files(paths)
        p.run(merge(files))
        p.finish()
        rec.finish(shard=True)
        warnings = [w for f in files for w in f.warnings]
        if into_run is None:
            store.finish_run(run_id, stats.to_json(), warnings=warnings)
        store.close()
        if idx == 0:  # every worker reads every file: one reports what is wrong with them
            stats.files = len(files)
            stats.truncated_files = sum(1 for f in files if f.truncated)
            for f in files:
                stats.anomalies.update(getattr(f, "anomalies", {}))
        q.put(("done", (idx, stats, warnings if idx == 0 else [])))
    except BaseException:  # report, never hang the parent
        q.put(("error", traceback.format_exc()))


def _warm_merge() -> None:
    """Import what the merge needs (networkx, the inventory, the actors' analysis: about a
    second) while the workers run, instead of after them."""
    import contextlib

    with contextlib.suppress(ImportError):
        import discovery.behaviour  # noqa: F401
        import discovery.inventory  # noqa: F401
        import discovery.merge  # noqa: F401
        import graph.build  # noqa: F401


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def shard_dir(db_path: str) -> str:
    base = os.path.dirname(os.path.abspath(db_path))
    name = os.path.basename(db_path)
    for old in glob.glob(os.path.join(base, f".{name}.shards-*")):
        pid = old.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    d = os.path.join(base, f".{name}.shards-{os.getpid()}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def replay_sharded(paths: list[str], workers: int, limits, stats, db_path: str, keep_raw: bool,
                   specs: list[str], flush_every: int, key: bytes, settings: dict,
                   merge_into: Callable[[list[str]], dict], run_id: int) -> tuple[dict, list[str]]:
    """Run the workers (worker 0 into the target under ``run_id``, the others into shard
    databases), then ``merge_into(shard_paths)``; returns its summary and the warnings about
    the input files."""
    from ..parallel import _add

    d = shard_dir(db_path)
    shards = [db_path] + [os.path.join(d, f"shard-{i}.db") for i in range(1, workers)]
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_shard_worker, daemon=True,
                         args=(paths, i, workers, limits, shards[i], key, keep_raw, specs, flush_every,
                               settings, q, os.getpid(), run_id if i == 0 else None))
             for i in range(workers)]
    try:
        for pr in procs:
            pr.start()
        _warm_merge()
        done = 0
        warnings: list[str] = []
        while done < workers:
            kind, payload = q.get()
            if kind == "done":
                done += 1
                _add(stats, payload[1])
                warnings += payload[2]
                if payload[0] == 0:
                    stats.files += payload[1].files
            else:
                raise RuntimeError(f"replay worker failed:\n{payload}")
        for pr in procs:
            pr.join()
        return merge_into(shards[1:]), warnings
    finally:
        for pr in procs:
            if pr.is_alive():
                pr.kill()
                pr.join()
        shutil.rmtree(d, ignore_errors=True)
