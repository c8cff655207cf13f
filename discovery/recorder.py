"""One run of the sinks: start it safely, feed it, commit it in batches, finish it.

``apisensor replay``, ``capture`` and the importers all record the same way:

1. :func:`start_run` settles runs that an earlier process left half-done (killed, crashed): the
   newest one is rolled back if it replayed exactly the same captures, otherwise it is kept and
   marked ``interrupted`` (``discovery/journal.py``); then it refuses captures already counted
   (unless ``force``), opens the run record, builds the sinks and arms the undo journal.
2. :class:`Recorder` passes every transaction and event to the sinks and, every
   ``flush_every`` transactions, flushes them all (each sink commits its own SQLite
   transaction) and then records a checkpoint in ``runs.committed_transactions``.  A batch is
   reported committed (``on_commit``) only after that: what was reported survives a kill.
3. :meth:`Recorder.finish` runs the sinks' final work; ``Store.finish_run`` marks the run
   complete and drops its journal in one commit.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from . import journal

FLUSH_EVERY = 5000  # transactions between two commits of the sinks


class RunRefused(Exception):
    """The run should not start (captures already counted); ``str(e)`` says why."""

    def __init__(self, msg: str, harmless: bool):
        super().__init__(msg)
        self.harmless = harmless  # True: nothing to do (exit 0); False: the user must choose


def make_sinks(store, run_id: int, specs: list[str]) -> list:
    """Instantiate ``["module:Class", ...]`` (the CLI's ``SINKS``) for this run."""
    out = []
    for spec in specs:
        mod, _, cls = spec.partition(":")
        out.append(getattr(importlib.import_module(mod), cls)(store, run_id))
    return out


def fingerprints(paths: list[str]) -> list[str]:
    from .inventory import file_fingerprint

    out = []
    for p in paths:
        try:
            out.append(file_fingerprint(p)[0])
        except OSError:
            out.append(f"unreadable:{p}")
    return out


def _interrupted_with(db, fps: list[str]) -> list[tuple[int, int]]:
    """[(run_id, number of these captures it partly counted)] for interrupted runs kept."""
    cols = {r[1] for r in db.execute("pragma table_info(runs)").fetchall()}
    if "fingerprints" not in cols:
        return []
    out = []
    for rid, f in db.execute("select id, fingerprints from runs where status = 'interrupted'").fetchall():
        common = set(json.loads(f or "[]")) & set(fps)
        if common:
            out.append((rid, len(common)))
    return out


def start_run(store, sources: list[str], specs: list[str], *, files: list[str] | None = None,
              force: bool = False, notify: Callable[[str], None] | None = None
              ) -> tuple[int, list]:
    """Open a run over ``sources`` (display names; ``files`` are the capture files, whose
    content identifies the run for the replay guard and for recovery).  Returns (run_id, sinks).
    Raises :class:`RunRefused`."""
    from .inventory import replay_guard

    fps = fingerprints(files) if files else None
    for rid, what in journal.resolve_dead_runs(store.db, fps):
        if notify:
            if what == "rolled back":
                notify(f"run {rid} was interrupted before it finished; its partial counts were rolled back "
                       "and the captures are replayed again")
            else:
                notify(f"run {rid} was interrupted before it finished; the batches it committed are kept "
                       "(status 'interrupted')")
    if files:
        if (msg := replay_guard(store.db, files, force)) is not None:
            raise RunRefused(msg, harmless=msg.startswith("already"))
        if not force and (partial := _interrupted_with(store.db, fps or [])):
            listed = ", ".join(f"run {r}" for r, _ in partial)
            raise RunRefused(
                f"these captures were partly counted by interrupted {listed}; replaying them would count "
                "that part twice (use --force to count them again anyway)", harmless=False)
    run_id = store.begin_run(sources, fingerprints=fps)
    sinks = make_sinks(store, run_id, specs)
    journal.arm(store.db, run_id)
    return run_id, sinks


class Recorder:
    """Feeds one run's sinks and commits them every ``flush_every`` transactions."""

    def __init__(self, store, run_id: int, sinks: list, flush_every: int = FLUSH_EVERY,
                 on_commit: Callable[[int], None] | None = None):
        self.store = store
        self.run_id = run_id
        self.sinks = sinks
        self.flush_every = max(1, flush_every)
        self.on_commit = on_commit
        self.count = 0
        self.pending = 0

    def observe(self, tx) -> None:
        for s in self.sinks:
            s.observe(tx)
        self.count += 1
        self.pending += 1
        if self.pending >= self.flush_every:
            self.commit()

    def observe_event(self, ev) -> None:
        for s in self.sinks:
            s.observe_event(ev)

    def commit(self) -> None:
        """Flush every sink, then record (and report) the checkpoint."""
        for s in self.sinks:
            s.flush()
        self.pending = 0
        self.store.checkpoint(self.run_id, self.count)
        journal.arm(self.store.db, self.run_id)  # journal tables a sink created since
        if self.on_commit:
            self.on_commit(self.count)

    def finish(self, shard: bool = False) -> dict[str, Any]:
        """Finish every sink.  ``shard``: this run is one shard of a ``replay --workers`` run,
        merged afterwards: a sink's ``finish_shard`` (if it has one) is called instead, leaving
        out what the merge derives again from all the shards (the actors' analysis)."""
        results: dict[str, Any] = {}
        for s in self.sinks:
            fin = getattr(s, "finish_shard", None) if shard else None
            results.update((fin or s.finish)() or {})
        self.store.checkpoint(self.run_id, self.count)
        return results
