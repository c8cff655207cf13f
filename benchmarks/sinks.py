#!/usr/bin/env python3
"""Cost of the discovery sinks per transaction, without the sensor.

Runs the sensor once over the captures, keeping every Transaction and event in memory, then
feeds them to each sink of ``apisensor replay`` alone and to all of them together, each time
into a fresh SQLite file and exactly as ``replay`` does (``discovery.recorder``: run record,
undo journal, a commit every 5,000 transactions, ``finish``).  Each measurement runs in a
forked child, so module-level caches (redaction, detector memos, templates) start empty as
in a real replay; imports and regex compilation are done before (``warm_up``: a one-time
cost of about 0.5 s per process, not a cost per transaction).  Prints µs per transaction
(best of ``--repeat``), split into ``observe`` (with the periodic flushes) and ``finish``,
wall clock and CPU time of the process (on a shared machine CPU time is the steadier one).

    python benchmarks/sinks.py benchmarks/out/api-50.pcap [--repeat 3] [--json]
    python benchmarks/sinks.py /tmp/g4.pcap --only discovery.inventory:Inventory --profile /tmp/inv.prof

``--profile FILE`` runs the measurement in-process under cProfile, writes the stats to FILE
and prints the 30 most expensive functions (by internal time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sensor.cli import FLUSH_EVERY, SINKS  # noqa: E402
from sensor.pipeline import Pipeline  # noqa: E402
from sensor.sources import merge, open_files  # noqa: E402
from sensor.transaction import Transaction  # noqa: E402


def collect(paths: list[str]) -> tuple[list, int, float]:
    """(transactions and events in the order the sensor produced them, transactions, seconds)."""
    items: list = []
    t = time.perf_counter()
    p = Pipeline(items.append, on_event=items.append)
    p.run(merge(open_files(paths)))
    p.finish()
    seconds = time.perf_counter() - t
    return items, sum(1 for x in items if type(x) is Transaction), seconds


def warm_up(specs: list[str]) -> None:
    """Pay the one-time costs of a process before measuring: importing the sinks and the
    detectors, compiling their regular expressions (about 0.5 s, paid once per replay; not a
    cost per transaction).  No data-dependent cache is filled."""
    import importlib

    from discovery import redact
    from discovery.detectors import REGISTRY

    for spec in specs:
        importlib.import_module(spec.partition(":")[0])
    importlib.import_module("graph.build")  # the map's finish imports networkx
    REGISTRY.scanner  # noqa: B018 -- compiles the alternation
    redact._rules()


def run_sinks(items: list, specs: list[str], db_path: str) -> dict[str, float]:
    """Feed ``items`` to the sinks ``specs`` as ``apisensor replay`` does; seconds per phase."""
    from discovery.recorder import Recorder, start_run
    from discovery.store import Store

    store = Store(db_path)
    run_id, sinks = start_run(store, ["bench"], specs)
    rec = Recorder(store, run_id, sinks, flush_every=FLUSH_EVERY)
    observe, event = rec.observe, rec.observe_event
    t0, c0 = time.perf_counter(), time.process_time()
    for x in items:
        if type(x) is Transaction:
            observe(x)
        else:
            event(x)
    t1 = time.perf_counter()
    rec.finish()
    store.finish_run(run_id, {"transactions": rec.count})
    t2, c2 = time.perf_counter(), time.process_time()
    store.close()
    return {"observe": t1 - t0, "finish": t2 - t1, "total": t2 - t0, "cpu": c2 - c0}


def measure(items: list, specs: list[str]) -> dict[str, float]:
    """One measurement in a forked child (fresh caches, fresh database)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                out = run_sinks(items, specs, os.path.join(tmp, "bench.db"))
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise SystemExit(f"measurement of {specs} failed")
    return json.loads(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pcaps", nargs="+")
    ap.add_argument("--repeat", type=int, default=1, help="measurements per row (the best is shown)")
    ap.add_argument("--only", action="append", metavar="MODULE:CLASS",
                    help="measure only this sink (repeatable); default: each of SINKS, then all")
    ap.add_argument("--profile", metavar="FILE",
                    help="cProfile the measurement of --only (or all) in-process")
    ap.add_argument("--sinks", metavar="LIST",
                    help="comma-separated MODULE:CLASS list to use instead of the CLI's SINKS")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    sinks = a.sinks.split(",") if a.sinks else list(SINKS)
    items, ntx, sensor_s = collect(a.pcaps)
    warm_up(sinks)
    size = sum(os.path.getsize(p) for p in a.pcaps)
    if not ntx:
        raise SystemExit("no transactions in the captures")
    if a.profile:
        import cProfile
        import pstats

        specs = a.only or sinks
        prof = cProfile.Profile()
        with tempfile.TemporaryDirectory() as tmp:
            prof.enable()
            out = run_sinks(items, specs, os.path.join(tmp, "bench.db"))
            prof.disable()
        prof.dump_stats(a.profile)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        print(f"{ntx} transactions; {'+'.join(specs)}: {out['total'] / ntx * 1e6:.1f} µs/tx (profiled)")
        return
    rows = [[s] for s in a.only] if a.only else [[s] for s in sinks] + [sinks]
    results = []
    for specs in rows:
        best = None
        for _ in range(a.repeat):
            got = measure(items, specs)
            if best is None or got["total"] < best["total"]:
                best = got
        name = specs[0].split(":")[1] if len(specs) == 1 else "all sinks"
        results.append({"sink": name, "specs": specs,
                        **{f"{k}_us_per_tx": round(v / ntx * 1e6, 1) for k, v in best.items()},
                        "seconds": round(best["total"], 3)})
    summary = {"pcaps": a.pcaps, "bytes": size, "transactions": ntx,
               "sensor_seconds": round(sensor_s, 3), "sensor_us_per_tx": round(sensor_s / ntx * 1e6, 1),
               "sinks": results}
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{', '.join(a.pcaps)}: {size / 1e6:.1f} MB, {ntx} transactions; "
          f"sensor {sensor_s:.2f} s ({summary['sensor_us_per_tx']} µs/tx)")
    print(f"{'sink':<18} {'observe':>10} {'finish':>10} {'total':>10} {'cpu':>10}   µs per transaction")
    for r in results:
        print(f"{r['sink']:<18} {r['observe_us_per_tx']:>10} {r['finish_us_per_tx']:>10} "
              f"{r['total_us_per_tx']:>10} {r['cpu_us_per_tx']:>10}   ({r['seconds']} s wall)")


if __name__ == "__main__":
    main()
