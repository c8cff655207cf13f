#!/usr/bin/env python3
"""Replay speed against tshark, on the same files, in the same run, alternating.

For each capture: ``apisensor replay`` (the full pipeline: reassembly, HTTP, inventory,
detectors, map, SQLite) with 1 worker and with N workers, and tshark's HTTP field extraction
in its fastest fair setting (out-of-order reassembly on, JSON body dissector off), each run
``--repeat`` times in turn; prints the best wall time, MB/s, packets/s, peak RSS and the
ratio to tshark.

    python benchmarks/run.py benchmarks/out/api-500.pcap [--repeat 3] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APISENSOR = os.path.join(os.path.dirname(HERE), ".venv", "bin", "apisensor")
TSHARK_FIELDS = ["http.request.method", "http.request.uri", "http.host", "http.response.code",
                 "http.content_length", "http.user_agent"]


def _packets(path: str) -> int:
    sys.path.insert(0, os.path.dirname(HERE))
    from sensor.sources import CaptureFile

    return sum(1 for _ in CaptureFile(path))


def _timed(cmd: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS of the child in KB, output lines)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        out.seek(0)
        lines = sum(1 for _ in out)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return wall, ru.ru_maxrss, lines


def commands(pcap: str, workers: int, tmp: str) -> dict[str, list[str]]:
    tshark = ["tshark", "-n", "-r", pcap, "-o", "tcp.reassemble_out_of_order:TRUE",
              "--disable-protocol", "json", "-Y", "http", "-T", "fields"]
    for f in TSHARK_FIELDS:
        tshark += ["-e", f]
    db = os.path.join(tmp, "bench.db")
    cmds = {"tshark": tshark,
            "apisensor": [APISENSOR, "replay", pcap, "--db", db, "--no-progress", "--workers", "1"]}
    if workers > 1:
        cmds[f"apisensor -w{workers}"] = [APISENSOR, "replay", pcap, "--db", db + "2", "--no-progress",
                                          "--workers", str(workers)]
    return cmds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pcaps", nargs="+")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not shutil.which("tshark"):
        raise SystemExit("tshark not found (apt-get install tshark)")
    report = []
    for pcap in a.pcaps:
        size = os.path.getsize(pcap)
        packets = _packets(pcap)
        best: dict[str, tuple[float, int]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            cmds = commands(pcap, a.workers, tmp)
            for _ in range(a.repeat):
                for name, cmd in cmds.items():  # alternate tools within each round
                    for f in os.listdir(tmp):
                        os.unlink(os.path.join(tmp, f))
                    wall, rss, _lines = _timed(cmd)
                    if name not in best or wall < best[name][0]:
                        best[name] = (wall, max(rss, best.get(name, (0, 0))[1]))
                    else:
                        best[name] = (best[name][0], max(rss, best[name][1]))
        base = best["tshark"][0]
        rows = []
        for name, (wall, rss) in best.items():
            rows.append({"tool": name, "seconds": round(wall, 2), "MB/s": round(size / wall / 1e6, 1),
                         "packets/s": int(packets / wall), "peak_rss_MB": round(rss / 1024, 1),
                         "x_tshark": round(base / wall, 2)})
        report.append({"pcap": pcap, "MB": round(size / 1e6, 1), "packets": packets, "results": rows})
        if not a.json:
            print(f"\n{pcap}: {size / 1e6:.1f} MB, {packets} packets (best of {a.repeat})")
            head = ("tool", "seconds", "MB/s", "packets/s", "peak RSS MB", "x tshark")
            print(f"  {head[0]:<16}{head[1]:>9}{head[2]:>8}{head[3]:>11}{head[4]:>13}{head[5]:>10}")
            for r in rows:
                print(f"  {r['tool']:<16}{r['seconds']:>9}{r['MB/s']:>8}{r['packets/s']:>11}"
                      f"{r['peak_rss_MB']:>13}{r['x_tshark']:>10}")
    if a.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
