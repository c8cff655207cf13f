#!/usr/bin/env python3
"""A real capture of a real server under load: wrk hammering a JSON API on loopback.

Starts a small keep-alive JSON API on 127.0.0.61:8080 (Node's http module when ``node`` is
installed, so that the server is not the bottleneck; else Python's ThreadingHTTPServer),
records loopback traffic to and from it with tcpdump, and runs ``wrk`` with a
Lua script that spreads requests over templated paths (``/api/users/{id}``,
``/api/orders/{id}/items``, ``/api/search?q=...``), some POSTs with JSON bodies, for
``--seconds``.  The result is the kind of capture that makes naive buffering quadratic: many
small keep-alive messages back to back on few connections.

    sudo python benchmarks/wrk_capture.py -o benchmarks/out/wrk.pcap [--seconds 20] [--connections 32]

Needs root (tcpdump on lo), wrk and tcpdump (``apt-get install wrk tcpdump``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDR = "127.0.0.61"
PORT = 8080

LUA = r"""
math.randomseed(7)
local paths = {"/api/users/%d", "/api/orders/%d/items", "/api/products/%d", "/api/search?q=item%d&page=2",
               "/api/users/%d/profile"}
request = function()
  local i = math.random(#paths)
  local p = string.format(paths[i], math.random(1, 100000))
  if math.random(10) == 1 then
    return wrk.format("POST", "/api/orders", {["Content-Type"] = "application/json"},
                      '{"user_id": ' .. math.random(1, 1000) .. ', "items": [1, 2, 3], "note": "rush"}')
  end
  return wrk.format("GET", p, {["Authorization"] = "Bearer abc.def.ghi"})
end
"""


NODE = r"""
const http = require('http');
let seq = 0;
http.createServer((req, res) => {
  const parts = req.url.split('?')[0].split('/').filter(Boolean);
  let code = 200, obj;
  if (req.method === 'POST') {
    req.resume();
    code = 201; obj = {id: ++seq, status: 'created'};
  } else if (parts.length >= 3 && /^[0-9]+$/.test(parts[2])) {
    const n = +parts[2];
    obj = {id: n, name: 'user' + n, email: 'user' + n + '@example.com',
           orders: [0, 1, 2].map(k => ({id: n * 10 + k, total: (n * 7 + k) % 100 + 0.5}))};
  } else if (parts[1] === 'search') {
    obj = {results: [0, 1, 2, 3, 4].map(k => ({id: k, title: 'item ' + k})), page: 2};
  } else { code = 404; obj = {error: 'not found'}; }
  const body = JSON.stringify(obj);
  res.writeHead(code, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body)});
  res.end(body);
}).listen(PORT, 'ADDR');
"""


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) >= 3 and parts[2].isdigit():
            n = int(parts[2])
            self._send(200, {"id": n, "name": f"user{n}", "email": f"user{n}@example.com",
                             "orders": [{"id": n * 10 + k, "total": round(random.random() * 100, 2)}
                                        for k in range(3)]})
        elif parts[:2] == ["api", "search"]:
            self._send(200, {"results": [{"id": k, "title": f"item {k}"} for k in range(5)], "page": 2})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self._send(201, {"id": random.randint(1, 10**6), "status": "created"})

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=32)
    a = ap.parse_args()
    for tool in ("wrk", "tcpdump"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found (apt-get install {tool})")
    subprocess.run(["ip", "addr", "add", f"{ADDR}/32", "dev", "lo"], stderr=subprocess.DEVNULL)
    node = shutil.which("node")
    if node:
        server = subprocess.Popen([node, "-e", NODE.replace("PORT", str(PORT)).replace("ADDR", ADDR)])
    else:
        server = ThreadingHTTPServer((ADDR, PORT), Api)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-B", "65536", "-U", "-w", a.output,
                             f"host {ADDR} and tcp port {PORT}"], stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
    try:
        out = subprocess.run(["wrk", "-t", "2", "-c", str(a.connections), "-d", f"{a.seconds}s", "-s", f.name,
                              f"http://{ADDR}:{PORT}/"], capture_output=True, text=True)
        print(out.stdout)
    finally:
        os.unlink(f.name)
        time.sleep(1.0)
        dump.terminate()
        dump.wait()
        server.terminate() if node else server.shutdown()
    print(f"{a.output}: {os.path.getsize(a.output) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
