"""Capture a small real app that exercises what httpbin does not: GraphQL operations, static
assets, a health check, API keys (header, query, cookie), a session cookie, a Bearer JWT with
``alg: none``, form posts, a users collection with ``/users/me`` and ``/users/search`` next to
user names, and a scanner's 404 storm from its own address.

Usage (as root, from the repository root)::

    .venv/bin/python tests/captures/inventory/make_misc.py [-o tests/data/inventory]

The app is a plain WSGI function served by waitress on 127.0.0.41:80; clients are ``requests``
sessions bound to 127.0.0.1 (the app's users) and 127.0.0.99 (the scanner).  Writes
``misc.pcap`` and ``misc.json`` (every request with the status the client got).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_httpbin import ROOT, _reexec_in_venv, capture  # noqa: E402

HOST, PORT = "127.0.0.41", 80
SCANNER = "127.0.0.99"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def _b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")


JWT_NONE = _b64({"alg": "none", "typ": "JWT"}) + "." + _b64({"sub": "alice", "exp": 1900000000}) + "."
JWT_HS = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64({"sub": "bob"}) + ".c2lnbmF0dXJlLXNpZw"


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    method = environ["REQUEST_METHOD"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""

    def reply(status: str, obj=None, ctype="application/json", raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(obj).encode()
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))])
        return [data]

    if path == "/healthz":
        return reply("200 OK", {"ok": True})
    if path.startswith("/static/") or path == "/favicon.ico":
        ext = path.rsplit(".", 1)[-1]
        ctype = {"js": "application/javascript", "css": "text/css", "png": "image/png", "ico": "image/x-icon",
                 "woff2": "font/woff2"}.get(ext, "application/octet-stream")
        return reply("200 OK", raw=b"x" * 300, ctype=ctype)
    if path == "/graphql" and method == "POST":
        q = json.loads(body)
        op = q.get("operationName") or "anon"
        if op == "GetUser":
            return reply("200 OK", {"data": {"user": {"id": "1", "name": "Alice", "email": "alice@example.org"}}})
        if op == "ListOrders":
            return reply("200 OK", {"data": {"orders": [{"id": "o1", "total": 12.5}, {"id": "o2", "total": 3}]}})
        return reply("200 OK", {"data": {"createOrder": {"id": "o3", "status": "NEW"}}})
    if path == "/api/users/me":
        return reply("200 OK", {"name": "alice", "email": "alice@example.org", "roles": ["admin"]})
    if path == "/api/users/search":
        return reply("200 OK", [{"name": u} for u in USERS[:3]])
    if path.startswith("/api/users/"):
        name = path.split("/")[3]
        if name not in USERS:
            return reply("404 Not Found", {"error": "no such user"})
        return reply("200 OK", {"name": name, "email": f"{name}@example.org", "created": "2024-05-01T10:00:00Z",
                                "id": USERS.index(name) + 1})
    if path == "/api/login" and method == "POST":
        return reply("200 OK", {"token": JWT_HS, "expires_in": 3600})
    if path == "/api/reports":
        return reply("200 OK", {"reports": [{"id": 1, "title": "q1"}]})
    if path == "/api/legacy/items":
        return reply("200 OK", {"items": []})
    return reply("404 Not Found", raw=b"<h1>not found</h1>", ctype="text/html")


def serve():
    import waitress

    server = waitress.create_server(app, host=HOST, port=PORT, threads=2, ident="waitress")
    threading.Thread(target=server.run, daemon=True).start()
    return server


class _Bound:
    """requests adapter that binds the client socket to a source address."""

    @staticmethod
    def session(source: str):
        import requests
        from requests.adapters import HTTPAdapter

        class A(HTTPAdapter):
            def init_poolmanager(self, *a, **kw):
                kw["source_address"] = (source, 0)
                super().init_poolmanager(*a, **kw)

        s = requests.Session()
        s.mount("http://", A())
        return s


def run() -> list[dict]:
    base = f"http://{HOST}"
    r = random.Random(7)
    out: list[dict] = []

    def go(s, method, path, **kw):
        resp = s.request(method, base + path, allow_redirects=False, timeout=10, **kw)
        out.append({"method": method, "uri": resp.request.path_url, "status_code": resp.status_code})

    app_s = _Bound.session("127.0.0.1")
    for _ in range(3):
        go(app_s, "GET", "/healthz")
    for p in ("/static/app.3f2a.js", "/static/site.css", "/static/logo.png", "/favicon.ico",
              "/static/fonts/inter.woff2"):
        go(app_s, "GET", p)
    go(app_s, "POST", "/api/login", data={"username": "alice", "password": "hunter2"})
    for u in USERS:
        go(app_s, "GET", f"/api/users/{u}", headers={"Authorization": f"Bearer {JWT_HS}"})
    go(app_s, "GET", "/api/users/me", headers={"Authorization": f"Bearer {JWT_NONE}"})
    go(app_s, "GET", "/api/users/search", params={"q": "al", "limit": 3}, headers={"X-API-Key": "k-" + "9" * 30})
    go(app_s, "GET", "/api/reports", params={"api_key": "AKIA" + "Z" * 16 + "1234"})
    go(app_s, "GET", "/api/reports", cookies={"sessionid": "s3ss10n" + "x" * 20})
    go(app_s, "GET", "/api/legacy/items")
    for op, query in (("GetUser", "query GetUser($id: ID!) { user(id: $id) { id name email } }"),
                      ("ListOrders", "query ListOrders { orders { id total } }"),
                      ("CreateOrder", "mutation CreateOrder { createOrder { id status } }")):
        for _ in range(2):
            go(app_s, "POST", "/graphql", json={"operationName": op, "query": query, "variables": {"id": "1"}})
    app_s.close()
    scan = _Bound.session(SCANNER)
    words = ["admin", ".env", "wp-login.php", "backup.zip", "config.json", "server-status", ".git/HEAD",
             "phpinfo.php", "console", "actuator/health", "debug", "old", "test", "tmp", "cgi-bin/x"]
    for w in words:
        go(scan, "GET", "/" + w)
    for _ in range(5):
        go(scan, "GET", f"/api/{r.choice(['v0', 'internal', 'private'])}/{r.randint(1, 99)}")
    go(scan, "GET", "/api/users/zz-nobody")
    scan.close()
    return out


def main() -> None:
    _reexec_in_venv()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default=str(ROOT / "tests" / "data" / "inventory"))
    args = ap.parse_args()
    if shutil.which("tcpdump") is None or os.geteuid() != 0:
        sys.exit("needs root and tcpdump")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = serve()
    time.sleep(0.3)
    socket.setdefaulttimeout(10)
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        tmp_pcap = Path(tmp) / "misc.pcap"
        with capture(tmp_pcap, f"host {HOST} and tcp port {PORT}"):
            truth = run()
        shutil.copyfile(tmp_pcap, out / "misc.pcap")
    server.close()
    doc = {"app": "tests/captures/inventory/make_misc.py:app", "server": f"{HOST}:{PORT}", "pcap": "misc.pcap",
           "requests": truth}
    (out / "misc.json").write_text(json.dumps(doc, indent=0) + "\n")
    print(f"{len(truth)} requests, pcap {(out / 'misc.pcap').stat().st_size} bytes -> {out}")


if __name__ == "__main__":
    main()
