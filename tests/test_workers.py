"""``apisensor replay --workers 2`` (sensor and sinks in two processes, shards merged into the
run) builds the same inventory as one worker: services, endpoints with their hits, first/last
seen, latency and bytes, parameters, the map's edges, the transactions; findings are the same
set (their counts may differ by body sampling, docs/findings.md).  A replay with workers killed
at random points is as crash-safe as one without (re-run equals a clean replay)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PCAPS, ROOT

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
KEY = "00112233445566778899aabbccddeeff"

QUERIES = {
    "services": "select name, hits, first_seen, last_seen from services",
    "endpoints": "select s.name, e.method, e.template, e.operation, e.hits, e.first_seen, e.last_seen, "
                 "e.auth, e.latency_p50_ms, e.latency_p99_ms, e.request_bytes, e.response_bytes, e.raw_paths "
                 "from endpoints e join services s on s.id = e.service_id",
    "parameters": "select s.name, e.method, e.template, p.location, p.name, p.type "
                  "from parameters p join endpoints e on e.id = p.endpoint_id "
                  "join services s on s.id = e.service_id",
    "statuses": "select s.name, e.method, e.template, x.status_code, x.count from endpoint_statuses x "
                "join endpoints e on e.id = x.endpoint_id join services s on s.id = e.service_id",
    "edges": "select client_ip, service, requests, errors_4xx, errors_5xx, request_bytes, response_bytes, "
             "methods, statuses from graph_edges",
    "transactions": "select ts, client, server, method, host, uri, status_code, request_body_len, "
                    "response_body_len, flags from transactions",
    "findings": "select distinct service, method, path, detector, location, severity from findings",
    "runs": "select packets, bytes, flows, http_flows, transactions from runs where status = 'complete'",
}


def replay(pcap: str, db: Path, workers: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "APISENSOR_HASH_KEY": KEY}
    return subprocess.run([APISENSOR, "replay", pcap, "--db", str(db), "--no-progress",
                           "--workers", str(workers)], capture_output=True, text=True, env=env, cwd=ROOT)


def tables(db: Path) -> dict[str, list]:
    c = sqlite3.connect(db)
    out = {k: sorted(map(repr, c.execute(q).fetchall())) for k, q in QUERIES.items()}
    c.close()
    return out


@pytest.mark.parametrize("pcap", [os.path.join(PCAPS, "demo.pcap"),
                                  os.path.join(ROOT, "tests", "data", "graph", "mesh.pcap")])
def test_two_workers_build_the_same_inventory(pcap, tmp_path):
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    r1, r2 = replay(pcap, one, 1), replay(pcap, two, 2)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    a, b = tables(one), tables(two)
    assert a["transactions"], "the capture yields transactions"
    for k in QUERIES:
        assert a[k] == b[k], k
    assert not list(tmp_path.glob(".two.db.shards-*")), "shards are removed"


def test_workers_killed_then_rerun_equals_clean(tmp_path):
    pcap = str(tmp_path / "api.pcap")
    gen = os.path.join(ROOT, "benchmarks", "generate.py")
    subprocess.run([sys.executable, gen, "--size-mb", "3", "-o", pcap], check=True, capture_output=True)
    clean = tmp_path / "clean.db"
    assert replay(pcap, clean, 2).returncode == 0
    db = tmp_path / "inv.db"
    env = {**os.environ, "APISENSOR_HASH_KEY": KEY}
    for delay in (1.0, 2.0):  # during the shards, then (likely) during the merge
        p = subprocess.Popen([APISENSOR, "replay", pcap, "--db", str(db), "--no-progress", "--workers", "2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
                             start_new_session=True)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)  # the parent and its workers
        p.wait()
        if db.exists():
            c = sqlite3.connect(db)
            assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
            c.close()
    r = replay(pcap, db, 2)
    assert r.returncode == 0, r.stderr
    a, b = tables(clean), tables(db)
    for k in QUERIES:
        assert a[k] == b[k], k
    assert not list(tmp_path.glob(".inv.db.shards-*")), "stale shards of the killed replays are removed"
