"""``apisensor capture`` on real interfaces (issue 8).

* A network namespace and a veth pair: tcpreplay sends ``pcaps/demo.pcap`` into one end, the
  capture listens on the other, and the inventory (transactions, services, endpoints,
  findings, dependency map) must equal what ``apisensor replay`` stores for the same file;
  with one worker, with ``--workers 2``; stopped by SIGINT (exit 0 within seconds, database
  intact), by ``--duration``, and by a second signal (exits at once, database intact, no
  worker left behind).
* A real HTTP server on a random 127.x.y.z address: exactly the requests made are captured
  on ``lo`` (BPF filter on that address and port).
* One-line errors, exit 2: no such interface, bad BPF filter, no permission.

Needs root (CI runs as root), iproute2 with ``ip netns`` and tcpreplay; skipped otherwise.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from conftest import PCAPS

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
DEMO = os.path.join(PCAPS, "demo.pcap")
DEMO_PACKETS = 2943


def _netns_ok() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    return subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (packet capture)")
NETNS = pytest.mark.skipif(not _netns_ok() or shutil.which("tcpreplay") is None,
                           reason="needs root, `ip netns` and tcpreplay")
pytestmark = [pytest.mark.root, ROOT_ONLY,
              pytest.mark.skipif(not os.path.exists(APISENSOR), reason="apisensor script not installed")]


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


@pytest.fixture(scope="module")
def veth():
    """(namespace, replay end inside it, capture end here): unique names, always removed."""
    tag = secrets.token_hex(3)
    ns, cap, peer = f"apisensor-t{tag}", f"atc{tag}", f"atr{tag}"
    try:
        _ip("netns", "add", ns)
        # MTU above the largest frame of the pcap (tcpreplay refuses longer ones); IPv6 off so
        # the kernel sends nothing of its own (router solicitations) on the link
        _ip("link", "add", cap, "mtu", "9000", "type", "veth", "peer", "name", peer, "mtu", "9000",
            "netns", ns)
        with contextlib.suppress(OSError), open(f"/proc/sys/net/ipv6/conf/{cap}/disable_ipv6", "w") as f:
            f.write("1")  # (no such file: a kernel without IPv6, nothing to silence)
        subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                        f"echo 1 > /proc/sys/net/ipv6/conf/{peer}/disable_ipv6"], capture_output=True)
        _ip("link", "set", cap, "up")
        _ip("-n", ns, "link", "set", peer, "up")
        yield ns, peer, cap
    finally:
        _ip("link", "del", cap, check=False)
        _ip("netns", "del", ns, check=False)


def tcpreplay(veth, pcap: str = DEMO, *args: str) -> str:
    ns, peer, _ = veth
    r = subprocess.run(["ip", "netns", "exec", ns, "tcpreplay", "-i", peer, "--timer=nano", "--mbps", "50",
                        *args, pcap], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if pcap == DEMO:
        assert f"Successful packets:        {DEMO_PACKETS}" in r.stdout, r.stdout
    return r.stdout


class Capture:
    """``apisensor capture --stats-json`` in its own process group; stderr read by a thread."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([APISENSOR, "capture", "--stats-json", "--stats-interval", "0.3", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.stats: list[dict] = []
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self.cond:
                if line.startswith("{"):
                    self.stats.append(json.loads(line))
                else:
                    self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait(self, pred, timeout: float = 20.0) -> dict:
        """The first stats line satisfying ``pred`` (fails the test on timeout)."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for s in self.stats:
                    if pred(s):
                        return s
                if time.monotonic() > end or not self.reader.is_alive():
                    pytest.fail(f"capture: no stats line as expected; stats={self.stats[-3:]} "
                                f"stderr={self.lines}")
                self.cond.wait(0.2)

    def ready(self) -> None:
        self.wait(lambda s: True)  # the capture loop runs: the socket is open, the filter set

    def signal(self, sig: int, group: bool = True) -> None:
        (os.killpg if group else os.kill)(self.proc.pid, sig)

    def exit(self, timeout: float = 30.0) -> tuple[int, float]:
        t = time.monotonic()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"capture did not exit within {timeout} s")
        self.reader.join(5)
        return rc, time.monotonic() - t

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def capture():
    started: list[Capture] = []

    def start(*args: str) -> Capture:
        c = Capture(*args)
        started.append(c)
        return c

    yield start
    for c in started:
        c.kill()


def _rows(con: sqlite3.Connection, sql: str) -> Counter:
    return Counter(tuple(r) for r in con.execute(sql))


def inventory(db: str) -> dict:
    """What must not depend on how the packets arrived (no timestamps, no latencies)."""
    con = sqlite3.connect(db)
    try:
        return {
            "transactions": _rows(con, "select method, host, uri, status_code, client, server, protocol, "
                                       "request_body_len, response_body_len from transactions"),
            "services": _rows(con, "select name, hits, endpoints, probe_hits, excluded_hits, static_hits, "
                                   "overflow_hits from services"),
            "endpoints": _rows(con, "select s.name, e.method, e.template, e.operation, e.api_type, e.hits, "
                                    "e.raw_paths, e.request_content_types, e.response_content_types, e.auth "
                                    "from endpoints e join services s on s.id = e.service_id"),
            "findings": _rows(con, "select service, method, path, detector, location, severity, count, "
                                   "distinct_values from findings"),
            "graph_edges": _rows(con, "select client_ip, service, source, target, requests, tls_connections, "
                                      "tcp_flows, methods, statuses, errors_4xx, errors_5xx, no_response "
                                      "from graph_edges"),
            "run": _rows(con, "select packets, bytes, flows, http_flows, tls_flows, other_flows, "
                              "transactions from runs"),
        }
    finally:
        con.close()


def integrity(db: str) -> str:
    con = sqlite3.connect(db)
    try:
        return con.execute("pragma integrity_check").fetchone()[0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> dict:
    db = str(tmp_path_factory.mktemp("replay") / "replay.db")
    r = subprocess.run([APISENSOR, "replay", DEMO, "--db", db, "--workers", "1"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    inv = inventory(db)
    assert sum(inv["transactions"].values()) == 285 and inv["findings"] and inv["graph_edges"]
    return inv


def assert_same_inventory(db: str, expected: dict) -> None:
    got = inventory(db)
    for table in expected:
        extra, missing = got[table] - expected[table], expected[table] - got[table]
        assert got[table] == expected[table], (table, extra, missing)


# --- veth + tcpreplay: the same inventory as replay -------------------------------------


@NETNS
def test_veth_capture_equals_replay_and_sigint_exits_cleanly(veth, capture, replayed, tmp_path):
    db = str(tmp_path / "live.db")
    cap = capture("-i", veth[2], "--db", db)
    cap.ready()
    tcpreplay(veth)
    last = cap.wait(lambda s: s["packets"] >= DEMO_PACKETS)
    cap.signal(signal.SIGINT)  # the process group, as Ctrl-C in a terminal
    rc, took = cap.exit()
    assert rc == 0, cap.lines
    assert took < 5, f"SIGINT took {took:.1f} s"
    assert any("stopping" in line for line in cap.lines)
    summary = f"capture on {veth[2]}: {DEMO_PACKETS} packets, 210 TCP flows, 285 transactions, kernel drops 0"
    assert any(line.startswith(summary) for line in cap.lines), cap.lines
    assert last["kernel_dropped"] == 0 and last["if_dropped"] == 0 and last["kernel_received"] == DEMO_PACKETS
    assert integrity(db) == "ok"
    assert_same_inventory(db, replayed)


@NETNS
def test_veth_capture_two_workers_equals_replay(veth, capture, replayed, tmp_path):
    db = str(tmp_path / "live2.db")
    cap = capture("-i", veth[2], "--db", db, "--workers", "2", "--duration", "6")
    cap.ready()
    tcpreplay(veth)
    cap.wait(lambda s: s["packets"] >= DEMO_PACKETS)
    rc, _ = cap.exit(timeout=15)  # --duration ends it
    assert rc == 0, cap.lines
    assert cap.stats[-1]["kernel_dropped"] == 0 and cap.stats[-1]["kernel_received"] == DEMO_PACKETS
    assert integrity(db) == "ok"
    assert_same_inventory(db, replayed)


@NETNS
def test_sigterm_to_the_process_group_with_workers(veth, capture, tmp_path):
    """systemd's default stop: SIGTERM to every process of the service at once."""
    db = str(tmp_path / "term.db")
    cap = capture("-i", veth[2], "--db", db, "--workers", "2")
    cap.ready()
    tcpreplay(veth)
    cap.wait(lambda s: s["transactions"] >= 285)
    cap.signal(signal.SIGTERM)
    rc, took = cap.exit(timeout=15)
    assert rc == 0 and took < 5, (rc, took, cap.lines)
    assert integrity(db) == "ok"
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from transactions").fetchone()[0] == 285
    con.close()


@NETNS
def test_second_signal_exits_at_once_db_intact_no_worker_left(veth, capture, tmp_path):
    db = str(tmp_path / "live3.db")
    cap = capture("-i", veth[2], "--db", db, "--workers", "2", "--flush-interval", "0.2")
    cap.ready()
    tcpreplay(veth)
    cap.wait(lambda s: s["transactions"] >= 285)
    with open(f"/proc/{cap.proc.pid}/task/{cap.proc.pid}/children") as f:
        workers = [int(p) for p in f.read().split()]
    assert len(workers) >= 2
    cap.signal(signal.SIGINT)
    cap.signal(signal.SIGINT)
    rc, took = cap.exit(timeout=10)
    assert rc in (0, 130) and took < 3, (rc, took, cap.lines)
    time.sleep(0.5)
    alive = []
    for pid in workers:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[1][0] != "Z":
                alive.append(pid)
    assert not alive, "capture workers outlived the parent"
    assert integrity(db) == "ok"


@NETNS
@pytest.mark.parametrize("workers", ["1", "2"])
def test_busy_link_stats_and_duration_on_time(veth, capture, tmp_path, workers):
    """A steady trickle (never 100 ms without a packet, far from 1024 packets a second): stats
    lines, flushes and --duration still happen on the clock."""
    ns, peer, cap_if = veth
    trickle = subprocess.Popen(["ip", "netns", "exec", ns, "tcpreplay", "-i", peer, "--timer=nano",
                                "--pps", "100", "--duration", "8", DEMO], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        t = time.monotonic()
        cap = capture("-i", cap_if, "--db", str(tmp_path / "busy.db"), "--workers", workers,
                      "--duration", "3")
        rc, _ = cap.exit(timeout=15)
        took = time.monotonic() - t
    finally:
        trickle.kill()
        trickle.wait()
    assert rc == 0, cap.lines
    assert took < 6, f"--duration 3 took {took:.1f} s"
    assert len(cap.stats) >= 3 and cap.stats[-1]["packets"] > 0, cap.stats


# --- a real server on the loopback interface -----------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path.startswith("/api/items/"):
            body = json.dumps({"id": int(self.path.split("?")[0].rsplit("/", 1)[1]), "name": "w"}).encode()
            self.send_response(200)
        else:
            body = b'{"error": "not found"}'
            self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        data = self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"created": json.loads(data)}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_loopback_real_server(capture, tmp_path):
    addr = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
    server = http.server.ThreadingHTTPServer((addr, 0), _Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db = str(tmp_path / "lo.db")
    try:
        cap = capture("-i", "lo", "--bpf", f"host {addr} and tcp port {port}", "--db", db)
        cap.ready()
        expected: Counter = Counter()
        base = f"http://{addr}:{port}"
        for i in range(30):
            if i % 5 == 3:
                req = urllib.request.Request(f"{base}/api/items", data=json.dumps({"n": i}).encode(),
                                             headers={"Content-Type": "application/json"}, method="POST")
                expected["POST", "/api/items", 201] += 1
            elif i % 5 == 4:
                req = urllib.request.Request(f"{base}/missing/{i}")
                expected["GET", f"/missing/{i}", 404] += 1
            else:
                req = urllib.request.Request(f"{base}/api/items/{i}?full=1")
                expected["GET", f"/api/items/{i}?full=1", 200] += 1
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    r.read()
            except urllib.error.HTTPError as e:
                e.read()
        n = sum(expected.values())
        cap.wait(lambda s: s["transactions"] >= n)
        cap.signal(signal.SIGTERM, group=False)  # as `kill` or systemd would
        rc, took = cap.exit()
        assert rc == 0 and took < 5, (rc, took, cap.lines)
    finally:
        server.shutdown()
        server.server_close()
    con = sqlite3.connect(db)
    rows = con.execute("select method, uri, status_code, host, server from transactions").fetchall()
    con.close()
    assert len(rows) == n
    assert Counter((m, u, s) for m, u, s, _, _ in rows) == expected
    assert {(h, s) for *_, h, s in rows} == {(f"{addr}:{port}", f"{addr}:{port}")}
    assert integrity(db) == "ok"


# --- one-line errors -------------------------------------------------------------------------


def _one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apisensor: error: "), r.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_errors_are_one_line_exit_2(tmp_path, workers):
    db = str(tmp_path / "e.db")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([APISENSOR, "capture", "--db", db, "--workers", workers, *args],
                              capture_output=True, text=True, timeout=30)

    _one_line_error(run("-i", "nosuch0"), "nosuch0: no such interface")
    _one_line_error(run("-i", "lo", "--bpf", "tcp port"), "bad BPF filter 'tcp port'")
    _one_line_error(run("-i", "lo", "--bpf", "tcp and hots 10.0.0.1"), "bad BPF filter")
    assert not os.path.exists(db)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
def test_no_permission_says_how(tmp_path):
    os.chmod(tmp_path, 0o777)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                        APISENSOR, "capture", "-i", "lo", "--db", str(tmp_path / "p.db")],
                       capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
    _one_line_error(r, "permission denied", "run as root", "setcap cap_net_raw,cap_net_admin")
