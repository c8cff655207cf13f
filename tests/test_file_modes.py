"""The tool itself is safe to run: every file it writes is private (mode 0600) even under a
permissive umask, and what it captures is data, never code: nothing is evaluated, rendered as
a template or executed, and what is stored is redacted and inert."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import ROOT, all_text
from fuzz_corpus import Conn, write_pcap

from sensor.live import RotatingPcapWriter

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
T0 = 1_700_000_000.0


def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """``apisensor`` with umask 000: without its own care every file would be world-writable."""
    env = {**os.environ}
    env.pop("APISENSOR_HASH_KEY", None)  # let it create its key files
    r = subprocess.run([APISENSOR, *args], capture_output=True, text=True, env=env,
                       preexec_fn=lambda: os.umask(0), timeout=180, **kw)
    assert "Traceback" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, r.stderr
    return r


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _capture(tmp_path: Path, n: int = 40) -> str:
    recs = []
    for i in range(n):
        c = Conn(client=(b"\x0a\x00\x00\x01", 30000 + i), t0=T0 + i)
        c.client(b"GET /api/users/%d HTTP/1.1\r\nHost: users.example\r\nAuthorization: Bearer tok%d\r\n\r\n"
                 % (i, i))
        body = json.dumps({"id": i, "email": f"user{i}@example.com"}).encode()
        c.server(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body)).close()
        recs += c.records
    return write_pcap(str(tmp_path / "api.pcap"), recs)


def test_every_file_written_is_private(tmp_path):
    """DB, key files, map (image and exports), OpenAPI spec, findings export, HTML report."""
    os.chmod(tmp_path, 0o700)
    pcap = _capture(tmp_path)
    db = tmp_path / "inv.db"
    run("replay", pcap, "--db", str(db), "--graph", str(tmp_path / "map.png"))
    run("graph", "--db", str(db), "-o", str(tmp_path / "map.svg"))
    run("graph", "--db", str(db), "-o", str(tmp_path / "map.json"))
    run("graph", "--db", str(db), "-o", str(tmp_path / "map.graphml"))
    run("openapi", "--db", str(db), "--service", "users.example", "-o", str(tmp_path / "users.yaml"))
    run("export", "findings", "--db", str(db), "-o", str(tmp_path / "findings.sarif"))
    run("export", "endpoints", "--db", str(db), "-o", str(tmp_path / "endpoints.csv"))
    run("report", "--db", str(db), "-o", str(tmp_path / "report.html"))
    written = sorted(p for p in tmp_path.iterdir() if p.name != "api.pcap")
    for p in written:  # and redacted by default: the bearer tokens are in none of them
        assert b"Bearer tok" not in p.read_bytes() and b"tok17" not in p.read_bytes(), p
    names = {p.name for p in written}
    assert {"inv.db", "inv.db.key", "map.png", "map.svg", "map.json", "map.graphml", "users.yaml",
            "findings.sarif", "endpoints.csv", "report.html"} <= names, names
    assert {p.name: oct(mode(p)) for p in written} == {p.name: "0o600" for p in written}


def test_wal_and_shm_of_a_running_replay_are_private(tmp_path):
    """Killed mid-run, the replay leaves its WAL and shared-memory files: 0600 like the DB."""
    pcap = _capture(tmp_path, n=400)
    db = tmp_path / "inv.db"
    env = {**os.environ, "APISENSOR_HASH_KEY": "00112233445566778899aabbccddeeff"}
    p = subprocess.Popen([APISENSOR, "replay", pcap, "--db", str(db), "--flush-every", "1", "-v"],
                         stderr=subprocess.PIPE, text=True, env=env, preexec_fn=lambda: os.umask(0))
    try:
        deadline = time.monotonic() + 60
        for line in p.stderr:  # the first commit: the WAL holds a transaction now
            if "committed run" in line or time.monotonic() > deadline:
                break
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    for suffix in ("", "-wal", "-shm"):
        assert Path(f"{db}{suffix}").exists(), suffix
        assert mode(f"{db}{suffix}") == 0o600, (suffix, oct(mode(f"{db}{suffix}")))


def test_rotated_capture_files_are_private(tmp_path):
    old = os.umask(0)
    try:
        w = RotatingPcapWriter(str(tmp_path / "pcap"), 1, rotate_mb=1, keep=3)
        for i in range(3000):
            w.write(T0 + i, bytes(1000))
        w.close()
    finally:
        os.umask(old)
    files = sorted((tmp_path / "pcap").iterdir())
    assert len(files) == 3 and {mode(f) for f in files} == {0o600}


HOSTILE = [
    "__import__('os').system('touch {marker}')",
    "{{{{7*7}}}}{{{{config}}}}{{% import os %}}",
    "${{jndi:ldap://127.0.0.1:1/{marker}}}",
    "#{{7*7}}<%= 7*7 %>${{7*7}}",
    "'; DROP TABLE transactions; --",
    "<script>fetch('/{marker}')</script>",
    "$(touch {marker})`touch {marker}`",
    "!!python/object/apply:os.system ['touch {marker}']",
]


def test_captured_content_is_never_evaluated(tmp_path):
    """Payloads that execute when something evals, templates, shells out, deserialises YAML
    or builds SQL from them: in the URI, headers and JSON bodies.  Nothing happens, the tables
    are intact, and the values are stored as inert (redacted or literal) text."""
    marker = tmp_path / "pwned"
    payloads = [h.format(marker=marker) for h in HOSTILE]
    recs = []
    for i, pl in enumerate(payloads):
        c = Conn(client=(b"\x0a\x00\x00\x01", 31000 + i), t0=T0 + i)
        q = pl.replace(" ", "%20").encode()
        body = json.dumps({"name": pl, "nested": {"expr": pl}}).encode()
        c.client(b"POST /api/items?q=" + q + b" HTTP/1.1\r\nHost: shop.example\r\nX-Expr: " + pl.encode()
                 + b"\r\nUser-Agent: " + pl.encode() + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        c.server(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body)).close()
        recs += c.records
    pcap = write_pcap(str(tmp_path / "hostile.pcap"), recs)
    db = tmp_path / "inv.db"
    out = run("transactions", pcap, "--json").stdout
    assert len(out.splitlines()) == len(payloads)
    assert "{{7*7}}" in out and "${jndi:" in out  # printed as data
    run("replay", pcap, "--db", str(db), "--graph", str(tmp_path / "map.svg"))
    run("openapi", "--db", str(db), "--service", "shop.example", "-o", str(tmp_path / "spec.yaml"))
    run("report", "--db", str(db), "-o", str(tmp_path / "report.html"))
    run("findings", "--db", str(db), "--json")
    run("endpoints", "--db", str(db), "--json")
    assert not marker.exists()
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert con.execute("select count(*) from transactions").fetchone()[0] == len(payloads)
    con.close()
    cells = "\n".join(v for _, _, v in all_text(str(db)))
    assert not re.search(r"(?<![\w.])49(?![\w.])", cells)  # no template was rendered
    assert "{{7*7}}" in cells or "<redacted" in cells
    report = (tmp_path / "report.html").read_text()
    assert "<script>fetch(" not in report  # escaped, not live markup
    spec = yaml.safe_load((tmp_path / "spec.yaml").read_text())  # quoted: no tag is constructed
    assert "/api/items" in spec["paths"]


def test_no_code_path_evaluates_or_shells_out():
    """A static guard: no eval/exec, no unsafe YAML or pickle loads, no shell=True, no
    os.system in the code that handles captured content."""
    bad = re.compile(r"(?<![\w.])(eval|exec)\(|pickle\.loads?\(|yaml\.load\((?![^)]*SafeLoader)|"
                     r"yaml\.unsafe_load|shell\s*=\s*True|os\.system\(|os\.popen\(|marshal\.loads")
    hits = []
    for pkg in ("sensor", "discovery", "graph"):
        for path in Path(ROOT, pkg).rglob("*.py"):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if bad.search(code):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []
