#!/usr/bin/env python3
"""Highest tcpreplay rate that ``apisensor capture`` keeps up with, without a kernel drop.

A network namespace and a veth pair are created; ``tcpreplay`` (``--timer=nano``, so that it
does not spin on a core) sends a generated pcap (``benchmarks/generate.py``) into the end in
the namespace and ``apisensor capture`` listens on the other end.  A rate passes when

* the capture's kernel counters (``ps_drop`` and ``ps_ifdrop``, from ``--stats-json``) stay 0,
* every packet sent reaches the pipeline and the capture stores exactly the transactions that
  ``apisensor replay`` finds in the same file,
* and (unless ``--max-lag 0``) the database holds the transactions of the last packets at most
  ``--max-lag`` seconds after tcpreplay sent them (the trials flush every 0.5 s): the capture
  keeps pace, instead of living off the kernel ring (64 MB, which holds a 50 MB file whole:
  without this condition any rate passes for such a file, and what is measured is the size of
  the buffer, not the speed) or, with ``--workers``, off the queue between the workers and the
  process that stores what they find.

A first trial at ``--topspeed`` measures how fast the capture drains its backlog; a binary
search over ``--mbps`` around that figure follows, for each ``--workers`` value.

    sudo .venv/bin/python benchmarks/live_rate.py                      # 50 MB, workers 1 and 2
    sudo .venv/bin/python benchmarks/live_rate.py --size-mb 20 --workers 1 --steps 4 --json

Needs root (namespaces, raw sockets), tcpreplay and iproute2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APISENSOR = os.path.join(ROOT, ".venv", "bin", "apisensor")
if not os.path.exists(APISENSOR):
    APISENSOR = "apisensor"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Veth:
    """A veth pair: ``capture_iface`` in this namespace, the other end in a fresh namespace
    where ``replay()`` runs tcpreplay.  IPv6 is off on both ends (no router solicitations:
    the capture sees exactly what is replayed).  Always removed on exit."""

    def __init__(self, mtu: int = 9000):
        tag = secrets.token_hex(3)
        self.ns = f"apisensor-{tag}"
        self.capture_iface = f"asc{tag}"
        self.peer = f"asr{tag}"
        self.mtu = mtu

    def __enter__(self) -> Veth:
        try:
            _run("ip", "netns", "add", self.ns)
            _run("ip", "link", "add", self.capture_iface, "mtu", str(self.mtu), "type", "veth",
                 "peer", "name", self.peer, "mtu", str(self.mtu), "netns", self.ns)
            ipv6 = f"/proc/sys/net/ipv6/conf/{self.capture_iface}/disable_ipv6"
            with contextlib.suppress(OSError), open(ipv6, "w") as f:
                f.write("1")
            _run("ip", "netns", "exec", self.ns, "sh", "-c",
                 f"echo 1 > /proc/sys/net/ipv6/conf/{self.peer}/disable_ipv6", check=False)
            _run("ip", "link", "set", self.capture_iface, "up")
            _run("ip", "-n", self.ns, "link", "set", self.peer, "up")
            _run("ip", "-n", self.ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        _run("ip", "link", "del", self.capture_iface, check=False)  # removes the peer too
        _run("ip", "netns", "del", self.ns, check=False)

    def replay_cmd(self, pcap: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, "tcpreplay", "-i", self.peer, "--timer=nano", *args, pcap]

    def replay(self, pcap: str, *args: str) -> dict:
        """Run tcpreplay to the end; what it reports (packets, Mbps, pps, failed)."""
        r = _run(*self.replay_cmd(pcap, *args))
        return parse_tcpreplay(r.stdout)


def parse_tcpreplay(out: str) -> dict:
    res: dict = {}
    if m := re.search(r"Actual: (\d+) packets \((\d+) bytes\) sent in ([\d.]+) seconds", out):
        res.update(packets=int(m[1]), bytes=int(m[2]), seconds=float(m[3]))
    if m := re.search(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps, ([\d.]+) pps", out):
        res.update(mbps=float(m[1]), pps=float(m[2]))
    if m := re.search(r"Failed packets:\s+(\d+)", out):
        res["failed"] = int(m[1])
    return res


class Capture:
    """``apisensor capture`` in the background, its ``--stats-json`` lines collected."""

    def __init__(self, iface: str, db: str, *args: str, stats_interval: float = 1.0):
        self.cmd = [APISENSOR, "capture", "-i", iface, "--db", db, "--stats-json",
                    "--stats-interval", str(stats_interval), *args]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.stats: list[tuple[float, dict]] = []  # (monotonic time received, line)
        self.other: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            now = time.monotonic()
            with self._cond:
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        self.stats.append((now, json.loads(line)))
                else:
                    self.other.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pred, timeout: float) -> tuple[float, dict] | None:
        """First stats line (time, line) satisfying ``pred``; None on timeout or exit."""
        end = time.monotonic() + timeout
        with self._cond:
            i = 0
            while True:
                while i < len(self.stats):
                    if pred(self.stats[i][1]):
                        return self.stats[i]
                    i += 1
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(left, 0.5))

    def ready(self, timeout: float = 20.0) -> None:
        if self.wait_for(lambda s: True, timeout) is None:
            self.stop()
            raise RuntimeError(f"capture did not start: {' '.join(self.other)[-500:]}")

    def last(self) -> dict:
        with self._cond:
            return self.stats[-1][1] if self.stats else {}

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> tuple[int, float]:
        """Signal the capture (its whole process group, as a terminal's Ctrl-C does); returns
        (exit code, seconds it took to exit)."""
        t = time.monotonic()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self._reader.join(5)
        return rc, time.monotonic() - t


def rss_tree_mb(pid: int) -> float:
    """Resident memory of a process and its children (MB)."""
    total = 0
    pids = [str(pid)]
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as f:
        pids += f.read().split()
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{p}/statm") as f:
            total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total / 1e6


def count_transactions(db: str) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("select count(*) from transactions").fetchone()[0]
    finally:
        con.close()


def expected_for(pcap: str, tmp: str) -> dict:
    db = os.path.join(tmp, "replay.db")
    _run(APISENSOR, "replay", pcap, "--db", db, "--workers", "1", "--no-progress")
    out = {"transactions": count_transactions(db)}
    with contextlib.closing(sqlite3.connect(db)) as con:
        out["packets"] = con.execute("select packets from runs order by id desc").fetchone()[0]
    os.unlink(db)
    return out


FLUSH = 0.5  # --flush-interval of the trials: the database tells when the capture has caught up


class StoredCounter:
    """Samples ``count(*) from transactions`` of a database being written, every 0.1 s."""

    def __init__(self, db: str):
        self.db = db
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.1):
            with contextlib.suppress(sqlite3.Error):
                self.samples.append((time.monotonic(), count_transactions(self.db)))

    def reached(self, want: int, timeout: float) -> float | None:
        """monotonic() of the first sample with at least ``want`` (None: not within timeout)."""
        end = time.monotonic() + timeout
        while True:
            for t, c in list(self.samples):
                if c >= want:
                    return t
            if time.monotonic() > end:
                return None
            time.sleep(0.1)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(2)


def trial(veth: Veth, pcap: str, expected: dict, workers: int, rate: float | None, tmp: str,
          max_lag: float, drain_timeout: float) -> dict:
    """One replay at ``rate`` Mbps (None: topspeed) into a fresh capture."""
    db = os.path.join(tmp, f"live-{secrets.token_hex(3)}.db")
    cap = Capture(veth.capture_iface, db, "--workers", str(workers), "--flush-interval", str(FLUSH),
                  stats_interval=0.5)
    stored = None
    try:
        cap.ready()
        stored = StoredCounter(db)
        t0 = time.monotonic()
        sent = veth.replay(pcap, "-K", *(["--mbps", f"{rate:g}"] if rate else ["--topspeed"]))
        t_sent = time.monotonic()
        n = sent.get("packets", 0)
        lag = None
        got = cap.wait_for(lambda s: s["packets"] >= n, drain_timeout)
        if got:
            # the pipeline has seen every packet (with --workers: the workers have); a later line
            # gives the final kernel counters and the transactions the pipeline produced, and the
            # capture has caught up when the database holds them all (the parent of the workers
            # stores them: it can trail the workers by a queue's worth)
            fin = cap.wait_for(lambda s, e=got[1]["elapsed"]: s["elapsed"] > e + 1.5, 10) or got
            t_db = stored.reached(fin[1]["transactions"], drain_timeout)
            lag = (t_db - t_sent) if t_db is not None else None
        last = cap.last()
        rc, stop_s = cap.stop()
        tx = count_transactions(db) if rc == 0 else -1
    finally:
        if stored is not None:
            stored.stop()
        if cap.proc.poll() is None:
            cap.stop(signal.SIGKILL)
        for suffix in ("", "-wal", "-shm", ".key"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(db + suffix)
    res = {
        "workers": workers, "requested_mbps": rate or "topspeed", "sent_mbps": sent.get("mbps"),
        "sent_pps": sent.get("pps"), "sent_packets": n, "send_seconds": round(t_sent - t0, 2),
        "captured_packets": last.get("packets"), "kernel_dropped": last.get("kernel_dropped"),
        "if_dropped": last.get("if_dropped"), "transactions": tx,
        "expected_transactions": expected["transactions"],
        "lag_s": round(lag, 2) if lag is not None else None, "rss_mb": last.get("rss_mb"),
        "exit": rc, "stop_s": round(stop_s, 2),
    }
    res["no_loss"] = (rc == 0 and n == expected["packets"] and sent.get("failed", 0) == 0
                      and last.get("packets") == n and last.get("kernel_dropped") == 0
                      and last.get("if_dropped") == 0 and tx == expected["transactions"])
    res["pass"] = res["no_loss"] and (max_lag <= 0 or (lag is not None and lag <= max_lag))
    return res


def search(veth: Veth, pcap: str, expected: dict, workers: int, tmp: str, steps: int, max_lag: float,
           drain_timeout: float, log) -> tuple[float | None, list[dict]]:
    rows = []
    size_mbit = os.path.getsize(pcap) * 8 / 1e6
    top = trial(veth, pcap, expected, workers, None, tmp, max_lag, drain_timeout)
    rows.append(top)
    log(top)
    # how fast the capture drained what the kernel had buffered: the first guess of its speed
    drain = (top["send_seconds"] + (top["lag_s"] or drain_timeout))
    guess = size_mbit / max(drain, 0.1)
    lo, hi = guess * 0.7, guess * 1.3
    best = None
    if top["pass"]:
        return top["sent_mbps"], rows
    # make sure lo passes (halve until it does, a few times at most)
    for _ in range(4):
        r = trial(veth, pcap, expected, workers, round(lo, 2), tmp, max_lag, drain_timeout)
        rows.append(r)
        log(r)
        if r["pass"]:
            best = lo
            break
        hi, lo = lo, lo / 2
    if best is None:
        return None, rows
    for _ in range(steps):
        mid = round((lo + hi) / 2, 2)
        r = trial(veth, pcap, expected, workers, mid, tmp, max_lag, drain_timeout)
        rows.append(r)
        log(r)
        if r["pass"]:
            lo = best = mid
        else:
            hi = mid
    return best, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcap", help="pcap to replay (default: generate one with benchmarks/generate.py)")
    ap.add_argument("--size-mb", type=float, default=50, help="size of the generated pcap")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=4, help="bisection steps after the bracket")
    ap.add_argument("--max-lag", type=float, default=2.0,
                    help="seconds the capture may trail tcpreplay at the end (0: drops only)")
    ap.add_argument("--drain-timeout", type=float, default=300.0)
    ap.add_argument("--json", action="store_true", help="print every trial as a JSON line too")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("live_rate.py: needs root (network namespaces and packet capture)")
    with tempfile.TemporaryDirectory(prefix="apisensor-rate-") as tmp:
        pcap = a.pcap
        if not pcap:
            pcap = os.path.join(ROOT, "benchmarks", "out", f"live-{a.size_mb:g}mb-seed{a.seed}.pcap")
            if not os.path.exists(pcap):
                _run(sys.executable, os.path.join(ROOT, "benchmarks", "generate.py"), "-o", pcap,
                     "--size-mb", str(a.size_mb), "--seed", str(a.seed))
        expected = expected_for(pcap, tmp)
        print(f"# {pcap}: {os.path.getsize(pcap) / 1e6:.1f} MB, {expected['packets']} packets, "
              f"{expected['transactions']} transactions (apisensor replay); {os.cpu_count()} CPUs",
              flush=True)

        def log(r: dict) -> None:
            if a.json:
                print(json.dumps(r), flush=True)
            else:
                print(f"  workers={r['workers']} rate={r['requested_mbps']} sent={r['sent_mbps']} Mbps "
                      f"({r['sent_pps']} pps) captured={r['captured_packets']}/{r['sent_packets']} "
                      f"drops={r['kernel_dropped']}+{r['if_dropped']} tx={r['transactions']}/"
                      f"{r['expected_transactions']} lag={r['lag_s']}s -> {'PASS' if r['pass'] else 'fail'}",
                      flush=True)

        results = {}
        with Veth() as veth:
            for w in a.workers:
                best, rows = search(veth, pcap, expected, w, tmp, a.steps, a.max_lag, a.drain_timeout, log)
                ok = [r for r in rows if r["pass"]]
                top = rows[0]
                results[w] = (best, max(ok, key=lambda r: r["sent_mbps"]) if ok else None, top)
        print()
        print("| workers | highest rate, zero drops and keeping pace | pps | transactions/s "
              "| topspeed burst (whole file in the ring) |")
        print("|---|---|---|---|---|")
        for w, (_best, row, top) in results.items():
            burst = (f"{top['sent_mbps']} Mbps, drops {top['kernel_dropped']}, all transactions "
                     f"{'yes' if top['no_loss'] else 'no'}, drained in {top['lag_s']} s")
            if row is None:
                print(f"| {w} | none found | | | {burst} |")
                continue
            tps = row["expected_transactions"] / max(row["send_seconds"], 1e-9)
            print(f"| {w} | {row['sent_mbps']} Mbps | {row['sent_pps']:.0f} | {tps:.0f} | {burst} |")


if __name__ == "__main__":
    main()
