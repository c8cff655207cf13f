"""Capture httpbin fuzzed by schemathesis from its own spec (the other half of the issue-3 bar).

Usage (as root, from the repository root; schemathesis in any environment, e.g. its own venv)::

    python3 -m venv /tmp/st && /tmp/st/bin/pip install schemathesis
    .venv/bin/python tests/captures/inventory/make_httpbin_schemathesis.py --st /tmp/st/bin/st

Serves httpbin (this repository's venv: httpbin, flasgger, waitress) on 127.0.0.44:80, runs
``tcpdump -i lo 'host 127.0.0.44 and tcp port 80'``, and runs::

    st run tests/data/inventory/httpbin_spec.json --url http://127.0.0.44 --seed 3 \\
        --max-examples 8 --request-timeout 3 -w 1 --checks not_a_server_error \\
        --exclude-path '/status/{codes}' --report har

``/status/{codes}`` is left out because httpbin then answers status lines such as
``HTTP/1.1 60778204 UNKNOWN``, on which the sensor's HTTP/1 parser currently loops.  Writes
``httpbin_st.pcap`` and ``httpbin_st.json`` (every request schemathesis sent, from its HAR
report: method, uri, status).  schemathesis reports failures and errors for httpbin (its
spec is loose); they do not matter here, only the traffic does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_httpbin import ROOT, _reexec_in_venv, capture  # noqa: E402

HOST, PORT = "127.0.0.44", 80
SEED = 3


def serve():
    import httpbin
    import waitress

    server = waitress.create_server(httpbin.app, host=HOST, port=PORT, threads=4, ident="waitress")
    threading.Thread(target=server.run, daemon=True).start()
    return server


def main() -> None:
    _reexec_in_venv()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default=str(ROOT / "tests" / "data" / "inventory"))
    ap.add_argument("--st", default=shutil.which("st") or "st", help="the schemathesis command")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--max-examples", type=int, default=8)
    args = ap.parse_args()
    if shutil.which("tcpdump") is None or os.geteuid() != 0:
        sys.exit("needs root and tcpdump")
    out = Path(args.out)
    spec = out / "httpbin_spec.json"
    server = serve()
    time.sleep(0.3)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        tmp_pcap = Path(tmp) / "httpbin_st.pcap"
        har = Path(tmp) / "run.har"
        cmd = [args.st, "run", str(spec), "--url", f"http://{HOST}", "--seed", str(args.seed),
               "--max-examples", str(args.max_examples), "--request-timeout", "3", "-w", "1",
               "--checks", "not_a_server_error", "--exclude-path", "/status/{codes}",
               "--report", "har", "--report-har-path", str(har)]
        with capture(tmp_pcap, f"host {HOST} and tcp port {PORT}"):
            subprocess.run(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        shutil.copyfile(tmp_pcap, out / "httpbin_st.pcap")
        entries = json.loads(har.read_text())["log"]["entries"]
    server.close()
    reqs = []
    for e in entries:
        u = urlsplit(e["request"]["url"])
        reqs.append({"method": e["request"]["method"], "uri": u.path + (f"?{u.query}" if u.query else ""),
                     "status_code": e["response"]["status"]})
    doc = {"app": "httpbin", "server": f"{HOST}:{PORT}", "generator": "tests/captures/inventory/"
           "make_httpbin_schemathesis.py", "command": " ".join(["st", *cmd[1:-4]]), "pcap": "httpbin_st.pcap",
           "spec": "httpbin_spec.json", "requests": reqs}
    (out / "httpbin_st.json").write_text(json.dumps(doc, indent=0) + "\n")
    print(f"{len(reqs)} requests, pcap {(out / 'httpbin_st.pcap').stat().st_size} bytes -> {out}")


if __name__ == "__main__":
    main()
