"""``apisensor serve``: Datasette for real (a subprocess on a free port of 127.0.0.1), its canned
queries over HTTP, read-only, stopped by SIGTERM with nothing left running."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import PCAPS, ROOT

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
HAVE_DATASETTE = importlib.util.find_spec("datasette") is not None


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> str:
    db = str(tmp_path_factory.mktemp("serve") / "demo.db")
    p = subprocess.run(
        [APISENSOR, "replay", os.path.join(PCAPS, "demo.pcap"), "--db", db, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    return db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict | list | str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read().decode(), e.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def _fingerprint(db: str) -> str:
    h = hashlib.sha256()
    for suffix in ("", "-wal"):
        if os.path.exists(db + suffix):
            h.update(Path(db + suffix).read_bytes())
    return h.hexdigest()


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not HAVE_DATASETTE, reason="datasette is not installed (pip install 'apisensor[serve]')")
def test_serve_canned_queries_read_only(demo_db, tmp_path):
    port = _free_port()
    before = _fingerprint(demo_db)
    log = open(tmp_path / "serve.log", "w+")  # noqa: SIM115 - the server writes to it until the end
    proc = subprocess.Popen(
        [APISENSOR, "serve", "--db", demo_db, "--port", str(port)], stdout=log, stderr=log, cwd=ROOT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            if _connects("127.0.0.1", port) and _get(base + "/-/versions.json")[0] == 200:
                break
            assert time.monotonic() < deadline, "datasette did not start in 60 s"
            time.sleep(0.3)
        con = sqlite3.connect(demo_db)
        status, rows = _get(base + "/demo/top_risky_endpoints.json?_shape=array")
        assert status == 200, rows
        top = rows[0]
        assert (top["service"], top["method"], top["template"]) == (
            "users.shop.local",
            "GET",
            "/api/v1/users/{user}/profile",
        )
        assert top["worst_severity"] == "high" and "pii.ssn" in top["detectors"]
        assert [r["risk"] for r in rows] == sorted((r["risk"] for r in rows), reverse=True)
        assert (
            len(rows)
            == con.execute(
                "select count(distinct endpoint_id) from findings where endpoint_id is not null"
            ).fetchone()[0]
        )
        status, rows = _get(base + "/demo/new_endpoints_this_week.json?_shape=array")
        assert status == 200 and len(rows) == con.execute("select count(*) from endpoints").fetchone()[0]
        status, rows = _get(base + "/demo/unauthenticated_pii.json?_shape=array")
        assert status == 200 and isinstance(rows, list)  # none in the demo: its PII is behind tokens
        status, meta = _get(base + "/-/metadata.json")
        tables = meta["databases"]["demo"]["tables"]
        assert "redacted" in tables["findings"]["columns"]["evidence"].lower()
        assert set(meta["databases"]["demo"]["queries"]) == {
            "top_risky_endpoints",
            "unauthenticated_pii",
            "new_endpoints_this_week",
        }
        # read-only: a write is refused, and the file is untouched
        status, body = _get(base + "/demo.json?sql=" + urllib.request.quote("delete from findings"))
        assert status == 400
        assert con.execute("select count(*) from findings").fetchone()[0] > 0
        # bound to loopback only: another local address is refused
        assert not _connects("127.0.0.2", port)
        # the whole database file is never offered for download
        assert _get(base + "/demo.db")[0] in (403, 404)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        log.close()
    assert rc == 0, (tmp_path / "serve.log").read_text()
    assert not _connects("127.0.0.1", port)  # datasette went with it
    assert _fingerprint(demo_db) == before
    assert "read-only at http://127.0.0.1:" in (tmp_path / "serve.log").read_text()


def test_serve_writes_metadata_without_datasette(demo_db, tmp_path):
    out = str(tmp_path / "meta.json")
    p = subprocess.run(
        [APISENSOR, "serve", "--db", demo_db, "--metadata", out], capture_output=True, text=True, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    meta = json.loads(Path(out).read_text())
    db = meta["databases"]["demo"]
    with sqlite3.connect(demo_db) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        for q in db["queries"].values():  # every canned query runs on a real inventory
            con.execute(q["sql"]).fetchall()
    core = {
        "services",
        "endpoints",
        "parameters",
        "findings",
        "changes",
        "graph_edges",
        "transactions",
        "runs",
    }
    assert core <= set(db["tables"]) <= tables
    p = subprocess.run(
        [APISENSOR, "serve", "--db", str(tmp_path / "none.db")], capture_output=True, text=True, cwd=ROOT
    )
    assert p.returncode == 2 and p.stderr.startswith("apisensor: error: ") and p.stderr.count("\n") == 1
