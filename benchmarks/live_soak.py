#!/usr/bin/env python3
"""Long capture at a steady rate: does memory stay flat?

tcpreplay loops a generated pcap (``benchmarks/generate.py``) at ``--mbps`` into a veth pair
for ``--duration`` seconds (``--timer=nano``, ``--preload-pcap``); ``apisensor capture``
listens on the other end with ``--stats-json``.  Each connection of the file is complete
(SYN ... FIN) and new each time round, so the flow table churns the way it does on a span
port.  The script prints the stats lines it samples (RSS from the capture's own ``rss_mb`` and,
for ``--workers`` > 1, of the whole process tree from /proc), then RSS at start and end.

    sudo .venv/bin/python benchmarks/live_soak.py                     # 600 s at 2 Mbps
    sudo .venv/bin/python benchmarks/live_soak.py --duration 3600 --mbps 3 --workers 2 --json

Needs root, tcpreplay and iproute2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from live_rate import ROOT, Capture, Veth, count_transactions, parse_tcpreplay, rss_tree_mb  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    ap.add_argument("--mbps", type=float, default=2.0, help="steady replay rate")
    ap.add_argument("--pcap", help="pcap to loop (default: generate one with benchmarks/generate.py)")
    ap.add_argument("--size-mb", type=float, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between two samples")
    ap.add_argument("--json", action="store_true", help="print the samples and the result as JSON lines")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("live_soak.py: needs root (network namespaces and packet capture)")
    pcap = a.pcap
    if not pcap:
        pcap = os.path.join(ROOT, "benchmarks", "out", f"live-{a.size_mb:g}mb-seed{a.seed}.pcap")
        if not os.path.exists(pcap):
            subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "generate.py"), "-o", pcap,
                            "--size-mb", str(a.size_mb), "--seed", str(a.seed)], check=True,
                           capture_output=True)
    samples: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="apisensor-soak-") as tmp, Veth() as veth:
        db = os.path.join(tmp, "soak.db")
        cap = Capture(veth.capture_iface, db, "--workers", str(a.workers), stats_interval=a.interval)
        replay = None
        try:
            cap.ready(60)
            t0 = time.monotonic()
            replay = subprocess.Popen(veth.replay_cmd(pcap, "-K", "--mbps", f"{a.mbps:g}", "--loop", "0",
                                                      "--duration", str(int(a.duration))),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            seen = 0
            while replay.poll() is None:
                time.sleep(1)
                with cap._cond:
                    new = [s for _, s in cap.stats[seen:]]
                    seen = len(cap.stats)
                for s in new:
                    s = {**s, "rss_tree_mb": round(rss_tree_mb(cap.proc.pid), 1),
                         "traffic_s": round(time.monotonic() - t0, 1)}
                    samples.append(s)
                    if a.json:
                        print(json.dumps(s), flush=True)
                    else:
                        print(f"t={s['traffic_s']:>6}s packets={s['packets']} flows={s['flows']} "
                              f"tx={s['transactions']} drops={s['kernel_dropped']}+{s['if_dropped']} "
                              f"evicted={s['evicted_flows']} rss={s['rss_mb']} MB "
                              f"(tree {s['rss_tree_mb']} MB)",
                              flush=True)
            t_end = time.monotonic()
            sent = parse_tcpreplay(replay.stdout.read())
            sent_packets = sent.get("packets", 0)
            got = cap.wait_for(lambda s: s["packets"] >= sent_packets, 120)
            lag = round(got[0] - t_end, 1) if got else None
            if got:  # one more line after the last packet: final kernel counters
                cap.wait_for(lambda s, e=got[1]["elapsed"]: s["elapsed"] > e, a.interval + 5)
            last = cap.last()
            end_rss_tree = rss_tree_mb(cap.proc.pid)
            rc, stop_s = cap.stop()
            tx = count_transactions(db)
            db_mb = sum(os.path.getsize(db + s) for s in ("", "-wal") if os.path.exists(db + s)) / 1e6
        finally:
            if replay is not None and replay.poll() is None:
                replay.kill()
            if cap.proc.poll() is None:
                cap.stop(signal.SIGKILL)
    start = samples[0] if samples else {}
    minute = next((s for s in samples if s["traffic_s"] >= 60), start)
    result = {
        "duration_s": a.duration, "mbps": a.mbps, "workers": a.workers, "pcap": pcap,
        "sent": sent, "captured_packets": last.get("packets"), "transactions": tx,
        "kernel_dropped": last.get("kernel_dropped"), "if_dropped": last.get("if_dropped"),
        "evicted_flows": last.get("evicted_flows"),
        "rss_start_mb": start.get("rss_mb"), "rss_60s_mb": minute.get("rss_mb"),
        "rss_max_mb": max((s["rss_mb"] for s in samples), default=None), "rss_end_mb": last.get("rss_mb"),
        "rss_tree_start_mb": start.get("rss_tree_mb"), "rss_tree_end_mb": round(end_rss_tree, 1),
        "db_mb": round(db_mb, 1), "exit": rc, "stop_s": round(stop_s, 2), "catch_up_s": lag,
    }
    if a.json:
        print(json.dumps(result))
    else:
        print()
        for k, v in result.items():
            print(f"{k}: {v}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()


if __name__ == "__main__":
    main()
