"""Capture real traffic to httpbin (the PyPI package), driven from httpbin's own OpenAPI spec.

Usage (as root, tcpdump on PATH, from the repository root)::

    .venv/bin/pip install httpbin flasgger waitress requests
    .venv/bin/python tests/captures/inventory/make_httpbin.py [-o tests/data/inventory]

What it does:

1. Loads httpbin's published spec (``/spec.json``, Swagger 2.0 made by flasgger) in-process,
   through Flask's test client, so fetching the spec is not part of the capture.
2. Serves httpbin with waitress on 127.0.0.40:80 in a thread.
3. Runs ``tcpdump -i lo -s 0 -w httpbin.pcap 'host 127.0.0.40 and tcp port 80'``.
4. For every path and method in the spec, sends several requests from 127.0.0.1 with
   ``requests`` (keep-alive sessions, redirects not followed).  Path parameters get varied
   values the way a spec-driven fuzzer would fill them: integers for ``int`` parameters,
   for ``string`` ones a mix of names, random tokens, numbers and UUIDs.  Query parameters
   declared in the spec are filled; auth endpoints get right and wrong credentials (Basic,
   Bearer, Digest with ``requests.auth.HTTPDigestAuth``).  A seeded ``random.Random`` makes
   the request list the same on every run.
5. Writes ``httpbin.pcap``, ``httpbin_spec.json`` (the spec as served) and ``httpbin.json``
   (ground truth: every request with its spec path, method, uri and the status the client got).

Only the loopback address 127.0.0.40 is used; the request loop is bounded (about 800
requests, a few seconds).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import re
import select
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HOST, PORT = "127.0.0.40", 80
SEED = 20261129

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
         "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "xavier", "yvonne"]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango"]


def _reexec_in_venv() -> None:
    try:
        import httpbin  # noqa: F401
        import requests  # noqa: F401
        import waitress  # noqa: F401
    except ImportError:
        py = ROOT / ".venv" / "bin" / "python"
        if py.exists() and Path(sys.executable).resolve() != py.resolve():
            os.execv(str(py), [str(py), *sys.argv])
        raise


class Values:
    """Varied, seeded parameter values."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def token(self, lo: int = 5, hi: int = 12) -> str:
        alphabet = string.ascii_lowercase + string.digits
        return "".join(self.r.choice(alphabet) for _ in range(self.r.randint(lo, hi)))

    def string(self) -> str:
        """What a spec-driven fuzzer puts in a free ``string`` path parameter."""
        x = self.r.random()
        if x < 0.45:
            return self.r.choice(NAMES + WORDS)
        if x < 0.75:
            return self.token()
        if x < 0.9:
            return str(self.r.randint(0, 99999))
        return str(uuid.UUID(int=self.r.getrandbits(128), version=4))

    def integer(self, lo: int, hi: int) -> int:
        return self.r.randint(lo, hi)

    def password(self) -> str:
        return self.r.choice(["hunter2", "s3cret", "passw0rd", "letmein"]) + self.token(2, 5)


def load_spec() -> dict:
    import httpbin

    client = httpbin.app.test_client()
    spec = client.get("/spec.json").get_json()
    if not spec or "paths" not in spec:
        sys.exit("httpbin served no /spec.json (is flasgger installed?)")
    return spec


def plan(spec: dict, v: Values) -> list[dict]:
    """The request list: [{method, spec_path, path, params, headers, data, auth}]."""
    reqs: list[dict] = []

    def add(method, spec_path, path, **kw):
        reqs.append({"method": method.upper(), "spec_path": spec_path, "path": path, **kw})

    def ints(lo, hi, k):
        return [v.integer(lo, hi) for _ in range(k)]

    for spec_path in sorted(spec["paths"]):
        ops = spec["paths"][spec_path]
        for method in sorted(ops):
            m = method.upper()
            p = spec_path
            if p in ("/absolute-redirect/{n}", "/redirect/{n}", "/relative-redirect/{n}"):
                for n in ints(1, 9, 6):
                    add(m, p, p.replace("{n}", str(n)))
            elif p == "/anything":
                for _ in range(3):
                    add(m, p, p, params={"q": v.r.choice(WORDS), "page": v.integer(1, 9)},
                        json={"name": v.r.choice(NAMES), "n": v.integer(1, 99)} if m in ("POST", "PUT", "PATCH")
                        else None)
            elif p == "/anything/{anything}":
                for _ in range(5):
                    add(m, p, f"/anything/{v.string()}",
                        json={"id": v.integer(1, 999), "tags": [v.r.choice(WORDS)]}
                        if m in ("POST", "PUT", "PATCH") else None)
            elif p == "/base64/{value}":
                for _ in range(6):
                    text = f"{v.r.choice(NAMES)} says {v.token()} at {v.integer(1, 999)}".encode()
                    add(m, p, "/base64/" + base64.urlsafe_b64encode(text).decode().rstrip("="))
            elif p in ("/basic-auth/{user}/{passwd}", "/hidden-basic-auth/{user}/{passwd}"):
                base = p.split("/")[1]
                for i in range(8):
                    user, pw = v.r.choice(NAMES) + str(v.integer(1, 99)), v.password()
                    good = i % 4 != 3
                    add(m, p, f"/{base}/{user}/{pw}", basic=(user, pw if good else pw + "x"))
            elif p == "/bearer":
                for i in range(4):
                    add(m, p, p, headers={"Authorization": f"Bearer {v.token(20, 30)}"} if i % 3 else {})
            elif p in ("/bytes/{n}", "/stream-bytes/{n}"):
                for n in ints(1, 600, 6):
                    add(m, p, p.replace("{n}", str(n)), params={"seed": v.integer(0, 9)})
            elif p == "/cache":
                for i in range(3):
                    add(m, p, p, headers={"If-Modified-Since": "Sat, 28 Nov 2026 10:00:00 GMT"} if i == 2 else {})
            elif p == "/cache/{value}":
                for n in ints(1, 3600, 6):
                    add(m, p, f"/cache/{n}")
            elif p == "/cookies/set":
                for _ in range(3):
                    add(m, p, p, params={v.r.choice(WORDS): v.token()})
            elif p == "/cookies/delete":
                for _ in range(3):
                    add(m, p, p, params={v.r.choice(WORDS): ""})
            elif p == "/cookies/set/{name}/{value}":
                for _ in range(8):
                    add(m, p, f"/cookies/set/{v.r.choice(WORDS + NAMES)}/{v.string()}")
            elif p == "/delay/{delay}":
                for d in (0, 0.1, 0.2):
                    add(m, p, f"/delay/{d}")
            elif p.startswith("/digest-auth/"):
                depth = p.count("/")
                for i in range(6):
                    qop = v.r.choice(["auth", "auth-int", v.token(3, 8)])
                    user, pw = v.r.choice(NAMES) + str(v.integer(1, 99)), v.password()
                    path = f"/digest-auth/{qop}/{user}/{pw}"
                    if depth >= 5:
                        path += "/" + v.r.choice(["MD5", "SHA-256", "SHA-512", v.token(3, 6)])
                    if depth >= 6:
                        path += "/" + v.r.choice(["never", str(v.integer(1, 5)), v.token(3, 6)])
                    add(m, p, path, digest=(user, pw if i % 3 else pw + "x"))
            elif p == "/drip":
                for _ in range(3):
                    add(m, p, p, params={"duration": 0, "numbytes": v.integer(1, 20),
                                         "code": v.r.choice([200, 200, 201]), "delay": 0})
            elif p == "/etag/{etag}":
                for i in range(6):
                    tag = v.token(6, 16)
                    hdr = {"If-None-Match": tag} if i % 3 == 1 else ({"If-Match": "other"} if i % 3 == 2 else {})
                    add(m, p, f"/etag/{tag}", headers=hdr)
            elif p == "/links/{n}/{offset}":
                for _ in range(6):
                    n = v.integer(1, 12)
                    add(m, p, f"/links/{n}/{v.integer(0, n - 1)}")
            elif p == "/range/{numbytes}":
                for n in ints(10, 800, 6):
                    hdr = {"Range": f"bytes=0-{n // 2}"} if n % 2 else {}
                    add(m, p, f"/range/{n}", headers=hdr)
            elif p == "/redirect-to":
                for _ in range(3):
                    target = v.r.choice(["/get", "/anything", "https://example.com/"])
                    code = v.r.choice([301, 302, 303, 307])
                    if m == "GET":
                        add(m, p, p, params={"url": target, "status_code": code})
                    elif m in ("POST", "PUT"):
                        add(m, p, p, data={"url": target, "status_code": code})
                    else:
                        add(m, p, p, params={"url": target})
            elif p == "/response-headers":
                for _ in range(3):
                    add(m, p, p, params={"X-" + v.r.choice(WORDS).title(): v.token(), "freeform": v.token()})
            elif p == "/status/{codes}":
                for _ in range(5):
                    code = v.r.choice(["200", "201", "202", "204", "400", "401", "403", "418", "500", "503",
                                       "200,201", "200:3,500:1"])
                    add(m, p, f"/status/{code}")
            elif p == "/stream/{n}":
                for n in ints(1, 4, 5):
                    add(m, p, f"/stream/{n}")
            elif "{" in p:
                raise SystemExit(f"no value plan for {p}")
            else:
                k = 2 if p.startswith("/image") else 3
                for _ in range(k):
                    body = None
                    if m in ("POST", "PUT", "PATCH", "DELETE"):
                        body = {"id": v.integer(1, 9999), "name": v.r.choice(NAMES),
                                "email": f"{v.r.choice(NAMES)}@example.org", "active": v.r.random() < 0.5}
                    params = {"page": v.integer(1, 5)} if p in ("/get", "/post", "/put", "/patch", "/delete") else None
                    headers = {"Accept": v.r.choice(["image/png", "image/webp", "image/*"])} if p == "/image" else None
                    add(m, p, p, json=body, params=params, headers=headers)
    v.r.shuffle(reqs)
    return reqs


def serve():
    import httpbin
    import waitress

    server = waitress.create_server(httpbin.app, host=HOST, port=PORT, threads=4, ident="waitress")
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    return server


@contextlib.contextmanager
def capture(pcap: Path, bpf: str):
    """tcpdump on lo for the duration of the block; fails on kernel drops."""
    cmd = ["tcpdump", "-i", "lo", "-s", "0", "-B", "32768", "-U", "--immediate-mode", "-Z", "root",
           "-w", str(pcap), bpf]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = b""
    deadline = time.monotonic() + 15
    while b"listening on" not in err:
        if proc.poll() is not None:
            raise RuntimeError(f"tcpdump exited: {err.decode(errors='replace')}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("tcpdump did not start listening")
        readable, _, _ = select.select([proc.stderr], [], [], 0.1)
        if readable:
            err += os.read(proc.stderr.fileno(), 4096)
    time.sleep(0.3)
    try:
        yield
    finally:
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=15)
        err += rest
    msg = err.decode(errors="replace")
    dropped = re.search(r"(\d+) packets? dropped by kernel", msg)
    if dropped is None or int(dropped.group(1)) != 0:
        raise RuntimeError(f"bad capture {pcap}: {msg}")


def run(reqs: list[dict]) -> list[dict]:
    import requests
    from requests.auth import HTTPBasicAuth, HTTPDigestAuth

    base = f"http://{HOST}"
    truth = []
    session = requests.Session()
    session.headers["User-Agent"] = "apisensor-httpbin-exerciser/1"
    for i, rq in enumerate(reqs):
        if i % 50 == 49:  # a fresh connection now and then
            session.close()
        auth = None
        if rq.get("basic"):
            auth = HTTPBasicAuth(*rq["basic"])
        elif rq.get("digest"):
            auth = HTTPDigestAuth(*rq["digest"])
        r = session.request(rq["method"], base + rq["path"], params=rq.get("params"), json=rq.get("json"),
                            data=rq.get("data"), headers=rq.get("headers") or {}, auth=auth,
                            allow_redirects=False, timeout=15)
        for resp in [*r.history, r]:
            req = resp.request
            truth.append({"method": req.method, "spec_path": rq["spec_path"],
                          "uri": req.path_url, "status_code": resp.status_code})
    session.close()
    return truth


def main() -> None:
    _reexec_in_venv()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", default=str(ROOT / "tests" / "data" / "inventory"))
    ap.add_argument("--seed", type=int, default=SEED, help="another seed gives other values (default %(default)s)")
    args = ap.parse_args()
    if shutil.which("tcpdump") is None or os.geteuid() != 0:
        sys.exit("needs root and tcpdump")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec()
    reqs = plan(spec, Values(args.seed))
    server = serve()
    time.sleep(0.3)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_pcap = Path(tmp) / "httpbin.pcap"
        os.chmod(tmp, 0o755)
        with capture(tmp_pcap, f"host {HOST} and tcp port {PORT}"):
            truth = run(reqs)
        shutil.copyfile(tmp_pcap, out / "httpbin.pcap")
    server.close()
    (out / "httpbin_spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    doc = {"app": "httpbin", "server": f"{HOST}:{PORT}", "generator": "tests/captures/inventory/make_httpbin.py",
           "seed": args.seed, "pcap": "httpbin.pcap", "spec": "httpbin_spec.json", "requests": truth}
    (out / "httpbin.json").write_text(json.dumps(doc, indent=0) + "\n")
    size = (out / "httpbin.pcap").stat().st_size
    paths = {(t["method"], t["spec_path"]) for t in truth}
    print(f"{len(truth)} requests, {len(paths)} spec operations, pcap {size} bytes -> {out}")


if __name__ == "__main__":
    main()
