"""Crash safety: ``apisensor replay`` killed with SIGKILL at random points.

After each kill the database must open, pass ``PRAGMA integrity_check`` and hold every batch
the replay reported committed (``-v`` prints ``committed run N: K transactions`` after each
commit); running the same replay again must finish the inventory with nothing counted twice:
every table equals the one a clean, uninterrupted replay produces.  The undo journal itself
(``discovery/journal.py``) is tested directly on hand-made tables for REPLACE, upserts,
deletes, BLOBs and tables created during the run.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlite_utils
from conftest import ROOT as _ROOT

from discovery import journal

APISENSOR = [os.path.join(os.path.dirname(sys.executable), "apisensor")]
ROOT = Path(_ROOT)
KEY = "00112233445566778899aabbccddeeff"
# columns that differ between two clean runs by construction (ids, wall-clock times)
VOLATILE = {"id", "run_id", "created_run", "updated_run", "first_run_id", "last_run_id", "detected_at",
            "recorded_at", "started_at", "finished_at", "committed_at"}


def _env() -> dict:
    return {**os.environ, "APISENSOR_HASH_KEY": KEY, "PYTHONPATH": str(ROOT)}


def dump(path: Path) -> dict[str, list[str]]:
    """Every table but ``runs``/``_undo`` as sorted rows without volatile columns."""
    c = sqlite3.connect(path)
    out = {}
    names = [r[0] for r in c.execute(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%' "
        "and name not in ('runs', '_undo') order by name")]
    for t in names:
        cols = [r[1] for r in c.execute(f'pragma table_info("{t}")') if r[1] not in VOLATILE]
        sel = ", ".join(f'"{x}"' for x in cols)
        out[t] = sorted(re.sub(r'\\"run\\": \d+', "run", json.dumps(r, default=lambda b: b.hex()))
                        for r in c.execute(f'select {sel} from "{t}"'))
    c.close()
    return out


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crash") / "api-3.pcap"
    gen = str(ROOT / "benchmarks" / "generate.py")
    subprocess.run([sys.executable, gen, "--size-mb", "3", "-o", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def clean(capture, tmp_path_factory) -> tuple[dict, float]:
    """The tables of an uninterrupted replay, and how long it took (kills land inside it)."""
    db = tmp_path_factory.mktemp("clean") / "clean.db"
    t = time.monotonic()
    subprocess.run([*APISENSOR, "replay", str(capture), "--db", str(db), "--no-progress", "--workers", "1",
                    "--flush-every", "150"], check=True, capture_output=True, env=_env(), cwd=ROOT)
    return dump(db), time.monotonic() - t


def _replay_and_kill(capture: Path, db: Path, delay: float) -> int:
    """Start a replay, SIGKILL it after ``delay`` s; return the last committed count it reported."""
    log = db.with_suffix(".stderr")
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*APISENSOR, "replay", str(capture), "--db", str(db), "--no-progress", "--workers", "1",
             "--flush-every", "150", "-v"],
            stderr=err, stdout=subprocess.DEVNULL, env=_env(), cwd=ROOT)
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    counts = [int(n) for n in re.findall(r"committed run \d+: (\d+) transactions", log.read_text())]
    return max(counts, default=0)


def _check_after_kill(db: Path, reported: int) -> None:
    c = sqlite3.connect(db)
    assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
    run = c.execute("select id, status, committed_transactions from runs order by id desc limit 1").fetchone()
    if run is None:  # killed before the run record existed
        assert reported == 0
        return
    rid, status, committed = run
    stored = c.execute("select count(*) from transactions where run_id = ?", [rid]).fetchone()[0]
    assert committed >= reported, (committed, reported)
    assert stored >= reported, (stored, reported)
    c.close()


@pytest.mark.parametrize("seed", [1, 2, *(pytest.param(s, marks=pytest.mark.slow) for s in range(3, 23))])
def test_sigkill_then_rerun_equals_clean_replay(capture, clean, tmp_path, seed):
    rnd = random.Random(seed)
    tables, seconds = clean
    db = tmp_path / "inv.db"
    for _ in range(2):  # killed twice in a row, at random points of the replay
        reported = _replay_and_kill(capture, db, rnd.uniform(0.3, 0.95) * seconds)
        _check_after_kill(db, reported)
    c = sqlite3.connect(db)
    last = c.execute("select status, committed_transactions from runs order by id desc limit 1").fetchone()
    c.close()
    out = subprocess.run([*APISENSOR, "replay", str(capture), "--db", str(db), "--no-progress",
                          "--workers", "1"], capture_output=True, env=_env(), cwd=ROOT, text=True)
    assert out.returncode == 0, out.stderr
    if last is not None and last[0] == "running" and last[1]:
        assert "rolled back" in out.stderr
    got = dump(db)
    assert got == tables, _diff(got, tables)
    c = sqlite3.connect(db)
    statuses = [r[0] for r in c.execute("select status from runs order by id")]
    assert statuses[-1] == "complete" and set(statuses[:-1]) <= {"rolled back"}
    assert c.execute("select count(*) from _undo").fetchone()[0] == 0


def _replay(capture: Path, db: Path, *extra: str) -> None:
    out = subprocess.run([*APISENSOR, "replay", str(capture), "--db", str(db), "--no-progress", "--workers",
                          "1", "--flush-every", "150", *extra], capture_output=True, env=_env(), cwd=ROOT,
                         text=True)
    assert out.returncode == 0, out.stderr


def _kill_after_commit(capture: Path, db: Path, log: Path, target: int, extra: float) -> int:
    """Replay with --force and SIGKILL it ``extra`` seconds after it reported a commit of at
    least ``target`` transactions (a kill by progress, not by time: a slower or faster machine
    still lands it inside the run).  Returns the last committed count it reported."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*APISENSOR, "replay", str(capture), "--db", str(db), "--no-progress", "--workers", "1",
             "--flush-every", "150", "--force", "-v"], stderr=err, stdout=subprocess.DEVNULL,
            env=_env(), cwd=ROOT)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            done = [int(n) for n in re.findall(r"committed run \d+: (\d+) transactions", log.read_text())]
            if done and max(done) >= target:
                time.sleep(extra)
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return max((int(n) for n in re.findall(r"committed run \d+: (\d+) transactions", log.read_text())),
               default=0)


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_into_a_database_with_data(capture, clean, tmp_path, seed):
    """The same, into a database that already holds a completed run: its tables are not empty,
    so the killed run's changes to them are undone from the journal (a first replay into a new
    database empties its tables on rollback instead).  Killed twice, each time after a random
    commit; then replayed to the end: equals two clean replays (``replay``, ``replay --force``)."""
    rnd = random.Random(seed)
    total = len(clean[0]["transactions"])
    db = tmp_path / "inv.db"
    _replay(capture, db)
    for _ in range(2):
        reported = _kill_after_commit(capture, db, tmp_path / "kill.log",
                                      rnd.randrange(150, max(151, total * 6 // 10)), rnd.uniform(0, 0.05))
        _check_after_kill(db, reported)
    _replay(capture, db, "--force")
    c = sqlite3.connect(db)
    statuses = [r[0] for r in c.execute("select status from runs order by id")]
    c.close()
    assert statuses[-1] == "complete" and set(statuses) <= {"complete", "rolled back"}, statuses
    assert "rolled back" in statuses, statuses  # at least one kill landed inside its run
    ref = tmp_path / "ref.db"  # as many clean replays as runs completed (a kill can come too late)
    _replay(capture, ref)
    for _ in range(statuses.count("complete") - 1):
        _replay(capture, ref, "--force")
    got, want = dump(db), dump(ref)
    assert got == want, _diff(got, want)
    c = sqlite3.connect(db)
    assert c.execute("select count(*) from _undo").fetchone()[0] == 0
    c.close()


def test_a_kept_interrupted_run_is_not_counted_twice(capture, clean, tmp_path):
    db = tmp_path / "inv.db"
    reported = 0
    for share in (0.6, 0.4, 0.8, 0.3, 0.9, 0.2):
        for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            f.unlink(missing_ok=True)
        reported = _replay_and_kill(capture, db, share * clean[1])
        c = sqlite3.connect(db)
        status = c.execute("select status from runs order by id desc limit 1").fetchone()
        c.close()
        if reported and status == ("running",):  # killed after a commit, before the end
            break
    else:
        pytest.fail("no kill landed between the first commit and the end of the replay")
    # another capture replayed in between: the interrupted run is kept, not rolled back
    other = subprocess.run([*APISENSOR, "replay", str(ROOT / "pcaps" / "demo.pcap"), "--db", str(db),
                            "--no-progress"], capture_output=True, env=_env(), cwd=ROOT, text=True)
    assert other.returncode == 0, other.stderr
    assert "kept" in other.stderr
    c = sqlite3.connect(db)
    assert c.execute("select count(*) from runs where status = 'interrupted'").fetchone()[0] == 1
    assert c.execute("select count(*) from transactions t join runs r on r.id = t.run_id "
                     "where r.status = 'interrupted'").fetchone()[0] >= reported
    c.close()
    again = subprocess.run([*APISENSOR, "replay", str(capture), "--db", str(db), "--no-progress"],
                           capture_output=True, env=_env(), cwd=ROOT, text=True)
    assert again.returncode == 2
    assert "partly counted by interrupted run" in again.stderr and "--force" in again.stderr


# ---- the journal on its own -------------------------------------------------------------------------

def _state(db) -> dict:
    return {t: sorted(map(tuple, db.execute(f'select rowid, * from "{t}"').fetchall()))
            for t in db.table_names() if t not in ("runs", "_undo")}


def test_rollback_restores_every_kind_of_change(tmp_path):
    from discovery.store import Store

    store = Store(str(tmp_path / "j.db"))
    db = store.db
    db["agg"].create({"k": str, "hits": int, "blob": bytes, "note": str}, pk="k")
    db["agg"].insert_all([{"k": "a", "hits": 1, "blob": b"\x00\xff", "note": "x"},
                          {"k": "b", "hits": 2, "blob": None, "note": '{"json": "text"}'},
                          {"k": "c", "hits": 3, "blob": None, "note": None}])
    db["plain"].insert({"v": 1790000000.004222})  # 16 digits: JSON text would keep 15
    db["empty"].create({"k": str, "hits": int}, pk="k")  # empty when the run starts: not journaled
    db.conn.commit()
    before = _state(db)
    run = store.begin_run(["x.pcap"], fingerprints=["f"])
    journal.arm(db, run)
    with db.conn:
        db.execute("insert or replace into agg (k, hits, blob, note) values ('a', 10, x'01', 'y')")
        db.execute("insert into agg (k, hits) values ('b', 5) on conflict(k) do update set hits = hits + 5")
        db.execute("insert into agg (k, hits) values ('d', 7) on conflict(k) do update set hits = hits + 7")
        db.execute("delete from agg where k = 'c'")
        db.execute("update plain set v = v * 2")
        db.execute("insert into empty (k, hits) values ('e', 1)")
        db["new_table"].insert({"z": 1})
    journal.arm(db, run)  # a later commit picks up the new table
    with db.conn:
        db["new_table"].insert({"z": 2})
        db.execute("update agg set hits = 99")
        db.execute("update empty set hits = 2")
    assert not db.execute("select count(*) from _undo where tbl = 'empty'").fetchone()[0]
    assert _state(db) != before
    store.close()  # the "kill": the TEMP triggers die with the connection, the journal stays
    store = Store(str(tmp_path / "j.db"))
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process that has exited: the run's owner
    with store.db.conn:
        store.db.execute("update runs set owner = ? where id = ?",
                         [f"{socket.gethostname()}:{gone.pid}", run])
    assert journal.dead_runs(store.db)
    assert journal.resolve_dead_runs(store.db, ["f"]) == [(run, "rolled back")]
    assert _state(store.db) == before
    assert store.db.execute("select status from runs where id = ?", [run]).fetchone()[0] == "rolled back"


def test_a_live_run_is_never_rolled_back(tmp_path):
    db = sqlite_utils.Database(tmp_path / "l.db")
    from discovery.store import Store

    store = Store(str(tmp_path / "l.db"))
    run = store.begin_run(["x.pcap"], fingerprints=["f"])  # this process is alive: not dead
    assert journal.dead_runs(store.db) == []
    assert journal.resolve_dead_runs(store.db, ["f"]) == []
    db.close()
    store.close()
    assert run == 1


def _diff(a: dict, b: dict) -> str:
    out = []
    for t in sorted(set(a) | set(b)):
        ra, rb = a.get(t, []), b.get(t, [])
        if ra != rb:
            out.append(f"{t}: {len(ra)} vs {len(rb)}; only left {[x for x in ra if x not in rb][:2]}; "
                       f"only right {[x for x in rb if x not in ra][:2]}")
    return "\n".join(out)
