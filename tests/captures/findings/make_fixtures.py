"""Record the labelled fixtures of the findings detectors (tests/fixtures/findings/).

Every fixture is real traffic: a real server (Flask, Django, FastAPI/uvicorn, Express, PHP's
built-in server, Go net/http, the JDK HttpServer, Ruby WEBrick, a stdlib server for the
documentation pages and the Faker documents) runs on 127.0.0.1, a client sends the requests
below, and ``tcpdump -i lo`` records them into ``<name>.pcap.gz``.  Each request carries its
label: the (detector, location) pairs a correct sensor reports for that transaction.  Labels
and the raw sensitive values that were sent go to ``labels.json``.

    sudo .venv/bin/python tests/captures/findings/make_fixtures.py [--only NAME ...]

Needs root (tcpdump) and, on Debian: ``apt-get install tcpdump php-cli php-sqlite3 golang-go
openjdk-17-jdk-headless ruby python3.11-doc openssl`` (python3.11-doc provides the Python HTML
docs served as documentation pages; Node's errors page is kept in apps/docs), node with
``npm install`` in apps/express, and in the venv: flask, django, fastapi, uvicorn, faker.
Servers run with a minimal environment so no variable of this machine ends up in a capture
(Django's debug page prints the environment).  Each capture is parsed back with the sensor and
recorded again if it does not contain exactly the requests that were sent.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
APPS = os.path.join(HERE, "apps")
OUT = os.path.join(ROOT, "tests", "fixtures", "findings")
PY = sys.executable

sys.path.insert(0, HERE)
import docs_and_faker  # noqa: E402

# ---------------------------------------------------------------------------- labels
ST, DP, SQL = "errors.stack_trace", "errors.debug_page", "errors.sql_error"
FP, BAN, IP = "disclosure.file_path", "disclosure.version_banner", "disclosure.internal_ip"
BODY = "response.body"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
JSONA = {"Accept": "application/json"}


def trace(loc: str = BODY, paths: bool = True) -> list:
    return [[ST, loc]] + ([[FP, loc]] if paths else [])


# Each app: how to start it, the banner header it always sends (or None), and its requests:
# (method, path, headers, body, expected [(detector, location)]).
def apps(port: int) -> dict:
    env_py = [PY]
    werk = [[BAN, "response.header:server"]]
    return {
        "flask_debug": dict(
            cmd=env_py + [os.path.join(APPS, "flask_app.py"), str(port), "debug"], always=werk,
            requests=[
                ("GET", "/api/items/1", JSONA, None, []),
                ("GET", "/api/stats", HTML, None, trace() + [[DP, BODY]]),
                ("GET", "/api/report?owner=bob", HTML, None, trace() + [[DP, BODY], [SQL, BODY]]),
                ("GET", "/api/parse?n=abc", JSONA, None, trace("response.body:$.trace")),
                ("GET", "/api/missing", JSONA, None, []),
                ("GET", "/api/keyerror", JSONA, None, []),
                ("GET", "/nope", HTML, None, []),
            ]),
        "flask_prod": dict(
            cmd=env_py + [os.path.join(APPS, "flask_app.py"), str(port), "prod"], always=werk,
            requests=[
                ("GET", "/api/items/2", JSONA, None, []),
                ("GET", "/api/stats", HTML, None, []),
                ("GET", "/api/report?owner=eve", JSONA, None, []),
                ("GET", "/api/parse?n=12x", JSONA, None, trace("response.body:$.trace")),
                ("GET", "/api/missing", JSONA, None, []),
                ("GET", "/nope", HTML, None, []),
            ]),
        "django_debug": dict(
            cmd=env_py + [os.path.join(APPS, "django_app.py"), str(port), "debug"], always=werk,
            requests=[
                ("GET", "/api/orders/5", JSONA, None, []),
                ("GET", "/api/boom", HTML, None, trace() + [[DP, BODY], [BAN, BODY]]),
                ("GET", "/api/boom?format=text", JSONA, None, trace() + [[DP, BODY], [BAN, BODY]]),
                ("GET", "/api/invoices?id=3", HTML, None, trace() + [[DP, BODY], [BAN, BODY], [SQL, BODY]]),
                ("GET", "/missing", HTML, None, [[DP, BODY]]),
            ]),
        "django_prod": dict(
            cmd=env_py + [os.path.join(APPS, "django_app.py"), str(port), "prod"], always=werk,
            requests=[
                ("GET", "/api/orders/6", JSONA, None, []),
                ("GET", "/api/boom", HTML, None, []),
                ("GET", "/api/invoices?id=4", JSONA, None, []),
                ("GET", "/missing", HTML, None, []),
            ]),
        "fastapi_debug": dict(
            cmd=env_py + [os.path.join(APPS, "fastapi_app.py"), str(port), "debug"], always=[],
            requests=[
                ("GET", "/api/users/3/settings", JSONA, None, []),
                ("GET", "/api/divide?a=1&b=0", HTML, None, trace() + [[DP, BODY]]),
                ("GET", "/api/divide?a=2&b=0", JSONA, None, trace()),
                ("GET", "/api/divide?a=x&b=1", JSONA, None, []),
                ("GET", "/api/lookup/zz", JSONA, None, trace("response.body:$.traceback[*]")),
            ]),
        "fastapi_prod": dict(
            cmd=env_py + [os.path.join(APPS, "fastapi_app.py"), str(port), "prod"], always=[],
            requests=[
                ("GET", "/api/users/4/settings", JSONA, None, []),
                ("GET", "/api/divide?a=1&b=0", HTML, None, []),
                ("GET", "/api/divide?a=x&b=1", JSONA, None, []),
                ("GET", "/api/lookup/yy", JSONA, None, trace("response.body:$.traceback[*]")),
            ]),
        "express_dev": dict(
            cmd=["node", os.path.join(APPS, "express", "app.js"), str(port)], always=[
                [BAN, "response.header:x-powered-by"]],
            env={"NODE_ENV": "development"},
            requests=[
                ("GET", "/api/products/1", JSONA, None, []),
                ("GET", "/api/config", HTML, None, trace()),
                ("GET", "/api/render", JSONA, None, trace("response.body:$.stack")),
                ("POST", "/api/cart", {"Content-Type": "application/json"}, b'{"items": [1, 2,]}', trace()),
                ("POST", "/api/cart?ok=1", {"Content-Type": "application/json"}, b'{"items": [1, 2]}', []),
                ("GET", "/nope", HTML, None, []),
            ]),
        "express_prod": dict(
            cmd=["node", os.path.join(APPS, "express", "app.js"), str(port)], always=[
                [BAN, "response.header:x-powered-by"]],
            env={"NODE_ENV": "production"},
            requests=[
                ("GET", "/api/products/2", JSONA, None, []),
                ("GET", "/api/config", HTML, None, []),
                ("POST", "/api/cart", {"Content-Type": "application/json"}, b'{"items": [1,}', []),
                ("GET", "/api/render", JSONA, None, trace("response.body:$.stack")),
            ]),
        "php_display_errors": dict(
            cmd=["php", "-S", f"127.0.0.1:{port}", "-d", "display_errors=1", "-d", "html_errors=1",
                 "-d", "error_reporting=E_ALL", os.path.join(APPS, "php", "router.php")],
            cwd=os.path.join(APPS, "php"), always=[[BAN, "response.header:x-powered-by"]],
            requests=[
                ("GET", "/api/status", JSONA, None, []),
                ("GET", "/api/user?id=7", JSONA, None, trace()),
                ("GET", "/api/checkout", HTML, None, trace()),
                ("GET", "/api/search?q=lamp", HTML, None, trace() + [[SQL, BODY]]),
                ("GET", "/api/total", HTML, None, trace()),
                ("GET", "/info", HTML, None, [[DP, BODY], [BAN, BODY], [FP, BODY]]),
                ("GET", "/nope", JSONA, None, []),
            ]),
        "php_plain_errors": dict(  # display_errors without html_errors: the CLI server's default text form
            cmd=["php", "-S", f"127.0.0.1:{port}", "-d", "display_errors=1", "-d", "html_errors=0",
                 os.path.join(APPS, "php", "router.php")],
            cwd=os.path.join(APPS, "php"), always=[[BAN, "response.header:x-powered-by"]],
            requests=[
                ("GET", "/api/status", JSONA, None, []),
                ("GET", "/api/user?id=9", JSONA, None, trace()),
                ("GET", "/api/checkout", JSONA, None, trace()),
                ("GET", "/api/search?q=chair", JSONA, None, trace() + [[SQL, BODY]]),
                ("GET", "/api/total", JSONA, None, trace()),
            ]),
        "php_production": dict(
            cmd=["php", "-S", f"127.0.0.1:{port}", "-d", "display_errors=0", "-d", "log_errors=0",
                 os.path.join(APPS, "php", "router.php")],
            cwd=os.path.join(APPS, "php"), always=[[BAN, "response.header:x-powered-by"]],
            requests=[
                ("GET", "/api/status", JSONA, None, []),
                ("GET", "/api/user?id=8", JSONA, None, []),
                ("GET", "/api/checkout", HTML, None, []),
                ("GET", "/api/search?q=desk", HTML, None, []),
            ]),
        "go_panic": dict(
            cmd=["/tmp/apisensor-fixture-go", str(port)], always=[],
            requests=[
                ("GET", "/healthz", JSONA, None, []),
                ("GET", "/api/orders/1", JSONA, None, []),
                ("GET", "/api/orders/5", JSONA, None, trace()),
                ("GET", "/debug/pprof/", HTML, None, [[DP, BODY]]),
                ("GET", "/debug/pprof/goroutine?debug=2", None, None, trace()),
            ]),
        "java_httpserver": dict(
            cmd=["java", os.path.join(APPS, "java", "Server.java"), str(port)], always=[], startup=25,
            requests=[
                ("GET", "/api/ping", JSONA, None, []),
                ("GET", "/api/quote?qty=3", JSONA, None, []),
                ("GET", "/api/quote?qty=abc", JSONA, None, trace(paths=False)),
                ("GET", "/api/null", JSONA, None, trace("response.body:$.exception", paths=False)),
            ]),
        "ruby_webrick": dict(
            cmd=["ruby", os.path.join(APPS, "ruby", "server.rb"), str(port)],
            always=[[BAN, "response.header:server"]],
            requests=[
                ("GET", "/api/health", JSONA, None, []),
                ("GET", "/api/invoice", JSONA, None, trace()),
            ]),
    }


# ---------------------------------------------------------------------------- running
def _env(extra: dict | None = None) -> dict:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra or {})
    return env


def _wait_port(port: int, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Capture:
    def __init__(self, path: str, port: int):
        self.path = path
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-s", "0", "-U", "--immediate-mode", "-w", path, f"tcp port {port}"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        line = self.proc.stderr.readline().decode()
        if "listening" not in line:
            raise RuntimeError(f"tcpdump: {line}")

    def stop(self) -> None:
        time.sleep(0.3)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)


def request(port: int, method: str, path: str, headers: dict | None, body: bytes | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    h = {"Host": f"127.0.0.1:{port}", "User-Agent": "fixture-client/1.0", "Connection": "close"}
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def record(name: str, spec: dict, port: int, labels: dict) -> None:
    tmp = tempfile.mkdtemp()
    raw = os.path.join(tmp, name + ".pcap")
    server = subprocess.Popen(spec["cmd"], cwd=spec.get("cwd", tmp), env=_env(spec.get("env")),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, spec.get("startup", 15))
        cap = Capture(raw, port)
        rows = []
        for method, path, headers, body, expect in spec["requests"]:
            status = request(port, method, path, headers, body)
            rows.append({"method": method, "uri": path, "status": status,
                         "expect": sorted(map(list, {tuple(x) for x in expect + spec["always"]}))})
            print(f"  {name:<20} {method:<5} {path:<40} {status}")
        cap.stop()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    _store(raw, name, rows, spec, labels)
    shutil.rmtree(tmp)


def _check(raw: str, rows: list) -> None:
    """The sensor must see exactly the requests that were sent (a capture that lost or mangled
    packets is recorded again)."""
    sys.path.insert(0, ROOT)
    from sensor.pipeline import transactions_from_files

    got = sorted((tx.method or "-", tx.uri or "-") for tx in transactions_from_files([raw]))
    want = sorted((r["method"], r["uri"]) for r in rows)
    if got != want:
        raise CaptureMismatch(f"{raw}: {sorted(set(got) ^ set(want))[:4]}")


class CaptureMismatch(Exception):
    pass


def _store(raw: str, name: str, rows: list, spec: dict, labels: dict) -> None:
    _check(raw, rows)
    out = os.path.join(OUT, name + ".pcap.gz")
    with open(raw, "rb") as f, gzip.GzipFile(out, "wb", mtime=0) as g:
        g.write(f.read())
    labels[name] = {"pcap": name + ".pcap.gz", "transactions": rows, "sensitive": spec.get("sensitive", []),
                    "uri_sensitive": spec.get("uri_sensitive", [])}


def build_go() -> None:
    subprocess.run(["go", "build", "-o", "/tmp/apisensor-fixture-go", "."], cwd=os.path.join(APPS, "go"),
                   check=True, env={**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": "/tmp/gocache"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    lpath = os.path.join(OUT, "labels.json")
    labels = json.load(open(lpath)) if os.path.exists(lpath) else {}
    if not args.only or "go_panic" in args.only:
        build_go()
    port = _free_port()
    specs = apps(port)
    specs.update(docs_and_faker.specs(port))
    for name, spec in specs.items():
        if args.only and name not in args.only:
            continue
        for attempt in range(3):
            try:
                run_one(name, spec, port, labels)
                break
            except CaptureMismatch as e:
                print(f"  {name}: capture mismatch ({e}), recording again")
        else:
            raise SystemExit(f"{name}: capture keeps losing packets")
    with open(lpath, "w") as f:
        json.dump(labels, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(labels)} fixtures to {OUT} ({total} bytes)")


def run_one(name: str, spec: dict, port: int, labels: dict) -> None:
    if "serve" in spec:  # in-process stdlib server (documents)
        tmp = tempfile.mkdtemp()
        raw = os.path.join(tmp, name + ".pcap")
        with docs_and_faker.serving(spec["serve"], port):
            cap = Capture(raw, port)
            rows = []
            for method, path, headers, body, expect in spec["requests"]:
                status = request(port, method, path, headers, body)
                rows.append({"method": method, "uri": path, "status": status,
                             "expect": sorted(map(list, {tuple(x) for x in expect}))})
            cap.stop()
        print(f"  {name:<20} {len(rows)} transactions")
        _store(raw, name, rows, spec, labels)
        shutil.rmtree(tmp)
    else:
        record(name, spec, port, labels)


if __name__ == "__main__":
    main()
