"""Record the same real traffic twice, independently: as a pcap (tcpdump on lo) and as a HAR
(mitmproxy's ``hardump``), for the import tests.

Usage (as root, tcpdump on PATH, from the repository root)::

    python3 -m venv /tmp/mitm && /tmp/mitm/bin/pip install mitmproxy==11.0.2
    .venv/bin/python tests/captures/imports/make_imports.py --mitmdump /tmp/mitm/bin/mitmdump
    .venv/bin/python tests/captures/imports/make_logs.py      # the Zeek and Suricata logs

mitmproxy lives in its own venv: it pins versions of Flask and others that clash with the
project's fixture servers.

What runs (each on its own loopback address):

* httpbin 0.10.4 under waitress on 127.0.0.150:80, driven from its own spec by the request
  plan of ``tests/captures/inventory/make_httpbin.py`` (seed 20261129, ``/image*`` left out to
  keep the HAR small), with ``Host: httpbin.imports.test``;
* the small shop app of ``tests/captures/inventory/make_misc.py`` (GraphQL, static assets,
  API keys, a JWT, a login form, users, a scanner's probes) under waitress on 127.0.0.151:80,
  ``Host: shop.imports.test``;
* mitmdump 11 as a reverse proxy in front of each (listening on 127.0.0.152 and 127.0.0.153,
  ``keep_host_header``), writing every flow it relays to ``imports.har`` (``hardump``);
* tcpdump on the proxy -> server leg (``host 127.0.0.150 or host 127.0.0.151``): the pcap holds
  exactly the requests and responses the HAR describes, with the server addresses the HAR
  names in ``serverIPAddress``.  The clients (``requests``) talk to the proxies.

Writes ``tests/data/imports/imports.pcap``, ``imports.har.gz`` (mitmproxy's file, gzipped) and
``imports.json`` (the request list with the statuses the clients got).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "captures" / "inventory"))
import make_httpbin  # noqa: E402
import make_misc  # noqa: E402

HTTPBIN, SHOP = "127.0.0.150", "127.0.0.151"
PROXY_HTTPBIN, PROXY_SHOP = "127.0.0.152", "127.0.0.153"
HTTPBIN_HOST, SHOP_HOST = "httpbin.imports.test", "shop.imports.test"


def serve(app, host: str):
    import waitress

    server = waitress.create_server(app, host=host, port=80, threads=4, ident="waitress")
    threading.Thread(target=server.run, daemon=True).start()
    return server


def wait_port(host: str, port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port}")


def drive_httpbin(reqs: list[dict]) -> list[dict]:
    import requests
    from requests.auth import HTTPBasicAuth, HTTPDigestAuth

    truth = []
    s = requests.Session()
    s.headers["User-Agent"] = "apisensor-imports-exerciser/1"
    s.headers["Host"] = HTTPBIN_HOST
    for i, rq in enumerate(reqs):
        if i % 50 == 49:
            s.close()
        auth = HTTPBasicAuth(*rq["basic"]) if rq.get("basic") else (
            HTTPDigestAuth(*rq["digest"]) if rq.get("digest") else None)
        r = s.request(rq["method"], f"http://{PROXY_HTTPBIN}{rq['path']}", params=rq.get("params"),
                      json=rq.get("json"), data=rq.get("data"), headers=rq.get("headers") or {}, auth=auth,
                      allow_redirects=False, timeout=15)
        for resp in [*r.history, r]:
            truth.append({"host": HTTPBIN_HOST, "method": resp.request.method, "spec_path": rq["spec_path"],
                          "uri": resp.request.path_url, "status_code": resp.status_code})
    s.close()
    return truth


def drive_shop() -> list[dict]:
    import requests

    orig = requests.Session.request

    def with_host(self, method, url, **kw):
        kw.setdefault("headers", {})
        kw["headers"] = {**(kw["headers"] or {}), "Host": SHOP_HOST}
        return orig(self, method, url, **kw)

    make_misc.HOST = PROXY_SHOP  # its run() sends to http://{HOST}
    requests.Session.request = with_host
    try:
        out = make_misc.run()
    finally:
        requests.Session.request = orig
    return [{"host": SHOP_HOST, **t} for t in out]


def main() -> None:
    make_httpbin._reexec_in_venv()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default=str(ROOT / "tests" / "data" / "imports"))
    ap.add_argument("--mitmdump", default=shutil.which("mitmdump") or "/tmp/mitm/bin/mitmdump")
    args = ap.parse_args()
    if shutil.which("tcpdump") is None or os.geteuid() != 0:
        sys.exit("needs root and tcpdump")
    if not os.access(args.mitmdump, os.X_OK):
        sys.exit(f"no mitmdump at {args.mitmdump} (see the usage at the top of this file)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = make_httpbin.load_spec()
    reqs = [r for r in make_httpbin.plan(spec, make_httpbin.Values(make_httpbin.SEED))
            if not r["spec_path"].startswith("/image")]
    import httpbin

    servers = [serve(httpbin.app, HTTPBIN), serve(make_misc.app, SHOP)]
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        har, pcap = Path(tmp) / "imports.har", Path(tmp) / "imports.pcap"
        proxy = subprocess.Popen(
            [args.mitmdump, "-q",
             "--mode", f"reverse:http://{HTTPBIN}:80@{PROXY_HTTPBIN}:80",
             "--mode", f"reverse:http://{SHOP}:80@{PROXY_SHOP}:80",
             "--set", "keep_host_header=true", "--set", f"hardump={har}",
             "--set", f"confdir={tmp}/mitm"],
            stdin=subprocess.DEVNULL)
        try:
            wait_port(PROXY_HTTPBIN, 80)
            wait_port(PROXY_SHOP, 80)
            with make_httpbin.capture(pcap, f"tcp and (host {HTTPBIN} or host {SHOP})"):
                truth = drive_httpbin(reqs) + drive_shop()
                time.sleep(0.5)
        finally:
            proxy.send_signal(signal.SIGINT)  # mitmdump writes the HAR when it stops
            proxy.wait(timeout=60)
        if not har.exists():
            sys.exit("mitmdump wrote no HAR")
        shutil.copyfile(pcap, out / "imports.pcap")
        with open(har, "rb") as src, gzip.open(out / "imports.har.gz", "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)  # mitmproxy's bytes, gzipped (2 MB of indented JSON)
    for s in servers:
        s.close()
    doc = {"generator": "tests/captures/imports/make_imports.py", "seed": make_httpbin.SEED,
           "servers": {HTTPBIN_HOST: f"{HTTPBIN}:80", SHOP_HOST: f"{SHOP}:80"},
           "proxies": {HTTPBIN_HOST: f"{PROXY_HTTPBIN}:80", SHOP_HOST: f"{PROXY_SHOP}:80"},
           "requests": truth}
    (out / "imports.json").write_text(json.dumps(doc, indent=0) + "\n")
    with gzip.open(out / "imports.har.gz", "rt") as f:
        entries = len(json.load(f)["log"]["entries"])
    print(f"{len(truth)} requests; pcap {(out / 'imports.pcap').stat().st_size} bytes, "
          f"HAR {(out / 'imports.har.gz').stat().st_size} bytes gzipped ({entries} entries) -> {out}")


if __name__ == "__main__":
    main()
