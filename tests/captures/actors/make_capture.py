#!/usr/bin/env python3
"""Record ``tests/data/actors/vapi.pcap``: normal users and one attacker against vAPI on loopback.

Run as root from the repository root (tcpdump needs it; needs ``pip install -e '.[fixtures]'``
for flask, waitress and faker)::

    .venv/bin/python tests/captures/actors/make_capture.py              # vapi.pcap + vapi.json
    .venv/bin/python tests/captures/actors/make_capture.py -o /tmp/x    # somewhere else
    .venv/bin/python tests/captures/actors/make_capture.py --no-capture # scenario only, no root

The server (``vapi.py``, waitress) listens on 127.0.0.5:8080; the clients (``driver.py``) bind
127.0.0.11..16 (normal users) and 127.0.0.66 (the attacker).  ``vapi.json`` is the ground
truth the clients wrote: every call with its address, role, status and whether it carried
credentials, and the raw passwords, tokens and cookies they used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
OUT = ROOT / "tests" / "data" / "actors"
SERVER = ("127.0.0.5", 8080)

sys.path.insert(0, str(HERE))
import driver  # noqa: E402


class Tcpdump:
    def __init__(self, path: Path, bpf: str):
        if shutil.which("tcpdump") is None:
            raise SystemExit("tcpdump is not installed (apt-get install tcpdump)")
        self.proc = subprocess.Popen(
            [
                "tcpdump",
                "-i",
                "lo",
                "-s",
                "0",
                "-U",
                "--immediate-mode",
                "-B",
                "32768",
                "-n",
                "-Z",
                "root",
                "-w",
                str(path),
                bpf,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        started = threading.Event()

        def drain() -> None:
            for line in self.proc.stderr:
                self.lines.append(line.strip())
                if "listening on" in line:
                    started.set()

        threading.Thread(target=drain, daemon=True).start()
        if not started.wait(10):
            raise RuntimeError("tcpdump did not start: " + "\n".join(self.lines))
        time.sleep(0.3)

    def stop(self) -> None:
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=10)
        time.sleep(0.1)
        dropped = [x for x in self.lines if "dropped by kernel" in x]
        if dropped and not dropped[0].startswith("0 "):
            raise RuntimeError(f"tcpdump dropped packets: {dropped}")


def start_server() -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "vapi.py"), "--host", SERVER[0], "--port", str(SERVER[1])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("vapi.py exited: " + proc.stderr.read().decode(errors="replace"))
        try:
            socket.create_connection(SERVER, timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("vapi.py did not start listening")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-capture", action="store_true", help="run the scenario without tcpdump")
    ap.add_argument("-o", "--out", default=str(OUT))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    server = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pcap_tmp = Path(tmp) / "vapi.pcap"
            dump = None if a.no_capture else Tcpdump(pcap_tmp, f"host {SERVER[0]} and tcp port {SERVER[1]}")
            try:
                doc = driver.run(SERVER)
            finally:
                if dump is not None:
                    dump.stop()
            doc["pcap"] = "vapi.pcap"
            doc["generator"] = "tests/captures/actors/make_capture.py"
            (out / "vapi.json").write_text(json.dumps(doc, indent=1) + "\n")
            if dump is not None:
                shutil.copy(pcap_tmp, out / "vapi.pcap")
                os.chmod(out / "vapi.pcap", 0o644)
                print(
                    f"wrote {out / 'vapi.pcap'} ({(out / 'vapi.pcap').stat().st_size} bytes), "
                    f"{len(doc['calls'])} calls"
                )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
