#!/usr/bin/env python3
"""Record ``pcaps/demo.pcap``: real traffic between real services on loopback.

Run as root (tcpdump needs it) from anywhere::

    .venv/bin/python pcaps/make_demo.py            # writes pcaps/demo.pcap
    .venv/bin/python pcaps/make_demo.py -o /tmp/x.pcap
    .venv/bin/python pcaps/make_demo.py --no-capture   # just run the scenario

Needs flask, werkzeug, waitress and requests in the interpreter, plus the
tcpdump and openssl binaries. See pcaps/README.md for what ends up in the
capture. The scenario is driven by fixed seeds, so every run produces the same
requests and bodies (only timestamps, ports, Date headers and TLS bytes differ).
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
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
sys.path.insert(0, str(HERE))

try:
    import flask  # noqa: F401
    import requests
    import waitress  # noqa: F401
except ImportError:  # e.g. run with the system python: retry with the repo's virtualenv
    _venv = HERE.parent / ".venv"
    if (_venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != _venv.resolve():
        os.execv(str(_venv / "bin" / "python"), [str(_venv / "bin" / "python"), __file__, *sys.argv[1:]])
    sys.exit("make_demo: needs flask, waitress and requests: pip install -r pcaps/requirements.txt")
from demo_services import inventory, orders, payments, users  # noqa: E402
from demo_services.common import (  # noqa: E402
    ALL_IPS,
    BACKEND_PORT,
    BROWSER_IP,
    DNS_IP,
    DNS_PORT,
    GATEWAY_IP,
    GATEWAY_PORT,
    INVENTORY_IP,
    MOBILE_IP,
    ORDERS_IP,
    PAYMENTS_IP,
    PAYMENTS_PORT,
    QTYPE_A,
    QTYPE_AAAA,
    SCANNER_IP,
    USERS_IP,
    ServerThread,
    StubResolver,
    jwt_encode,
    quiet_logs,
    waitress_server,
    werkzeug_server,
)
from demo_services.data import (  # noqa: E402
    BROKEN_INVOICE_ORDERS,
    ITEMS,
    ORDERS,
    USERS,
    user_claims,
)
from demo_services.dns_server import DNSServer  # noqa: E402
from demo_services.gateway import create_app  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

SEED = 424242
GATEWAY_HOST = "gateway.shop.local"
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
MOBILE_UA = "ShopApp/5.4.2 (com.shop.app; build:5402; iOS 17.4.1) Alamofire/5.9.1"
SCANNER_UA = "Mozilla/5.0 zgrab/0.x"

BROWSER_USER = USERS[5]  # owns the three orders whose invoice crashes
MOBILE_USER = USERS[2]


# --------------------------------------------------------------------------- infrastructure


def make_cert(tmp: Path) -> tuple[str, str]:
    cert, key = tmp / "payments.crt", tmp / "payments.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "365",
            "-subj",
            "/CN=payments.shop.local/O=Shop Demo Payments",
            "-addext",
            "subjectAltName=DNS:payments.shop.local",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return str(cert), str(key)


class Tcpdump:
    def __init__(self, path: Path):
        bpf = " or ".join(f"host {ip}" for ip in ALL_IPS)
        self.proc = subprocess.Popen(
            # -U/--immediate-mode/-B: hand every packet over and write it at once, so
            # nothing is still sitting in a ring-buffer block when SIGINT arrives
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
        self.stderr: list[str] = []
        self._listening = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line.rstrip())
            if "listening on" in line:
                self._listening.set()

    def wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tcpdump did not start:\n" + "\n".join(self.stderr))
        time.sleep(0.3)  # the socket is open before the message; give the ring a moment

    def stop(self) -> None:
        time.sleep(0.5)  # let the last FIN/ACKs reach the capture
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("tcpdump did not exit on SIGINT") from exc


# --------------------------------------------------------------------------- clients


class SourceAddressAdapter(HTTPAdapter):
    """requests adapter whose sockets are bound to a fixed source address."""

    def __init__(self, source_ip: str, **kwargs):
        self.source_address = (source_ip, 0)
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        pool_kwargs["source_address"] = self.source_address
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


class BrowserClient:
    """A single-page web app: one kept-alive connection (requests.Session) from 127.0.0.100."""

    def __init__(self):
        self.resolver = StubResolver(BROWSER_IP, seed=SEED + 1, max_uses=1000)
        self.token = jwt_encode(
            user_claims(BROWSER_USER, "openid profile email orders:read orders:write", "shop-web")
        )
        self.session = requests.Session()
        self.session.mount("http://", SourceAddressAdapter(BROWSER_IP))
        self.session.headers.clear()
        self.session.headers.update(
            {
                "Host": GATEWAY_HOST,
                "User-Agent": BROWSER_UA,
                "Accept": "application/json, text/plain, */*",
                "Accept-Language": "en-US,en;q=0.9",
                "Accept-Encoding": "gzip, deflate, br",
                "Origin": "https://shop.local",
                "Referer": "https://shop.local/account",
                "Connection": "keep-alive",
            }
        )
        self.base = ""

    def start(self) -> None:
        self.base = f"http://{self.resolver.resolve(GATEWAY_HOST)}:{GATEWAY_PORT}"
        self.resolver.query("telemetry.shop.local", QTYPE_A)  # NXDOMAIN, ignored

    def call(self, method: str, path: str, body=None, auth: bool = True) -> int:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        resp = self.session.request(method, self.base + path, json=body, headers=headers, timeout=10)
        resp.content  # noqa: B018 - drain so the connection goes back to the pool
        return resp.status_code

    def close(self) -> None:
        self.session.close()


class MobileClient:
    """A mobile app: a new TCP connection per request (http.client) from 127.0.0.101."""

    def __init__(self):
        self.resolver = StubResolver(MOBILE_IP, seed=SEED + 2, max_uses=15)
        self.token = jwt_encode(
            user_claims(MOBILE_USER, "openid profile orders:read orders:write", "shop-ios")
        )

    def call(self, method: str, path: str, body=None, auth: bool = True) -> int:
        import json as _json

        if self.resolver._cache.get(GATEWAY_HOST, [None, 0])[1] == 0:
            self.resolver.query(GATEWAY_HOST, QTYPE_AAAA)  # iOS asks for both; no AAAA exists
        ip = self.resolver.resolve(GATEWAY_HOST)
        headers = {
            "Host": GATEWAY_HOST,
            "User-Agent": MOBILE_UA,
            "Accept": "application/json",
            "Accept-Language": "en-US;q=1.0",
            "X-App-Version": "5.4.2",
        }
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = None
        if body is not None:
            payload = _json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(ip, GATEWAY_PORT, timeout=10, source_address=(MOBILE_IP, 0))
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()


SCANNER_PROBES = [
    ("GET", "/"),
    ("GET", "/admin"),
    ("GET", "/.env"),
    ("GET", "/wp-login.php"),
    ("GET", "/.git/config"),
    ("GET", "/phpmyadmin/index.php"),
    ("GET", "/server-status"),
    ("GET", "/actuator/env"),
    ("GET", "/console"),
    ("GET", "/api/v2/../../../../etc/passwd"),
    ("GET", "/backup.sql"),
    ("GET", "/config.json"),
    ("GET", "/.aws/credentials"),
    ("GET", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php"),
    ("POST", "/xmlrpc.php"),
    ("GET", "/swagger.json"),
    ("GET", "/.DS_Store"),
    ("HEAD", "/wp-admin/"),
    ("GET", "/api/v2/items/ABC-00000"),
    ("GET", "/api/v2/items?limit=3"),
]


XMLRPC_PROBE = b'<?xml version="1.0"?><methodCall><methodName>system.listMethods</methodName></methodCall>'


def scan(probes) -> list[int]:
    """A scanner on 127.0.0.102 hitting inventory directly, one connection per probe."""
    statuses = []
    for method, path in probes:
        conn = http.client.HTTPConnection(
            INVENTORY_IP, BACKEND_PORT, timeout=10, source_address=(SCANNER_IP, 0)
        )
        try:
            body = None
            if method == "POST":
                body = XMLRPC_PROBE
            conn.request(
                method,
                path,
                body=body,
                headers={"Host": "inventory.shop.local", "User-Agent": SCANNER_UA, "Accept": "*/*"},
            )
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        finally:
            conn.close()
    return statuses


# --------------------------------------------------------------------------- scenario


def plan(rng: random.Random):
    """The ordered list of (client, method, path, body, auth) actions."""
    skus = [it["sku"] for it in ITEMS]
    terms = ["lamp", "mug", "olivia", "shoes", "emma", "keyboard", "stove", "nguyen", "bottle", "jacket"]
    own = {
        "browser": [o["id"] for o in ORDERS if o["user_id"] == BROWSER_USER["id"]],
        "mobile": [o["id"] for o in ORDERS if o["user_id"] == MOBILE_USER["id"]],
    }
    fine_orders = [o["id"] for o in ORDERS if o["id"] not in BROKEN_INVOICE_ORDERS]
    pms = {"browser": BROWSER_USER["payment_method_id"], "mobile": MOBILE_USER["payment_method_id"]}

    def action(client: str, kind: str):
        if kind == "me":
            return (client, "GET", "/api/v1/me", None, True)
        if kind == "orders":
            return (client, "GET", f"/api/v1/account/orders?page={rng.randint(1, 3)}", None, True)
        if kind == "profile":
            return (client, "GET", "/api/v1/account/profile", None, True)
        if kind == "product":
            sku = rng.choice(skus) if rng.random() > 0.08 else f"XYZ-{rng.randint(10000, 99999)}"
            return (client, "GET", f"/api/v1/products/{sku}", None, True)
        if kind == "search":
            return (client, "GET", f"/api/v1/search?q={rng.choice(terms)}", None, False)
        if kind == "order":
            return (client, "GET", f"/api/v1/orders/{rng.choice(own[client] + fine_orders[:6])}", None, True)
        if kind == "invoice":
            return (client, "GET", f"/api/v1/orders/{rng.choice(fine_orders)}/invoice", None, True)
        if kind == "checkout":
            cart = [{"sku": rng.choice(skus), "qty": rng.randint(1, 3)} for _ in range(rng.randint(1, 2))]
            body = {"items": cart, "payment_method_id": pms[client]}
            return (client, "POST", "/api/v1/checkout", body, True)
        raise ValueError(kind)

    mix = {
        "browser": {
            "me": 7,
            "orders": 4,
            "profile": 3,
            "product": 9,
            "search": 5,
            "order": 7,
            "invoice": 4,
            "checkout": 4,
        },
        "mobile": {
            "me": 5,
            "orders": 2,
            "profile": 2,
            "product": 10,
            "search": 5,
            "order": 5,
            "invoice": 2,
            "checkout": 4,
        },
    }
    steps = []
    for client, kinds in mix.items():
        for kind, count in kinds.items():
            steps.extend(action(client, kind) for _ in range(count))
    # the special cases, each exactly once or a few times
    for oid in BROKEN_INVOICE_ORDERS:  # 500 + traceback from orders, 502 at the gateway
        steps.append(("browser", "GET", f"/api/v1/orders/{oid}/invoice", None, True))
    steps.append(
        (
            "mobile",
            "POST",
            "/api/v1/checkout",  # empty cart: ZeroDivisionError in orders
            {"items": [], "payment_method_id": pms["mobile"]},
            True,
        )
    )
    steps.append(("mobile", "GET", "/api/v1/me", None, False))  # logged out: 401 from the gateway
    for name in ("Harper Quinn", "Rowan Adeyemi"):
        first, last = name.lower().split()
        steps.append(
            (
                "mobile",
                "POST",
                "/api/v1/signup",
                {
                    "email": f"{first}.{last}@gmail.com",
                    "full_name": name,
                    "password": f"{first.capitalize()}!{rng.randint(1000, 9999)}secure",
                },
                False,
            )
        )
    rng.shuffle(steps)
    # the app opens on the account page; the scanner shows up about a third of the way in
    steps.insert(0, ("browser", "GET", "/api/v1/me", None, True))
    steps.insert(len(steps) // 3, ("scanner",))
    return steps


def run_scenario(verbose: bool = True) -> dict:
    rng = random.Random(SEED)
    browser, mobile = BrowserClient(), MobileClient()
    browser.start()
    counts: dict[str, int] = {}
    for step in plan(rng):
        if step[0] == "scanner":
            for status in scan(SCANNER_PROBES):
                counts[f"scanner {status}"] = counts.get(f"scanner {status}", 0) + 1
            continue
        client, method, path, body, auth = step
        status = (browser if client == "browser" else mobile).call(method, path, body, auth)
        key = f"{client} {status}"
        counts[key] = counts.get(key, 0) + 1
        time.sleep(rng.uniform(0.005, 0.025))
    browser.close()
    if verbose:
        print("client responses:", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", default=str(HERE / "demo.pcap"))
    ap.add_argument("--no-capture", action="store_true", help="run the services and scenario without tcpdump")
    args = ap.parse_args(argv)

    if not args.no_capture and (os.geteuid() != 0 or not shutil.which("tcpdump")):
        print("make_demo: needs root and tcpdump (or use --no-capture)", file=sys.stderr)
        return 2
    quiet_logs()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="apisensor-demo-"))
    servers: list = []
    gw_upstreams = None
    tcpdump = None
    try:
        cert, key = make_cert(tmp)
        servers.append(DNSServer(DNS_IP, DNS_PORT).start())
        servers.append(ServerThread(waitress_server(users.app, USERS_IP, BACKEND_PORT), "users").start())
        servers.append(ServerThread(werkzeug_server(orders.app, ORDERS_IP, BACKEND_PORT), "orders").start())
        servers.append(
            ServerThread(werkzeug_server(inventory.app, INVENTORY_IP, BACKEND_PORT), "inventory").start()
        )
        servers.append(
            ServerThread(
                werkzeug_server(payments.app, PAYMENTS_IP, PAYMENTS_PORT, ssl_context=(cert, key)), "payments"
            ).start()
        )
        gw_app, gw_upstreams = create_app(StubResolver(GATEWAY_IP, seed=SEED + 3, max_uses=40), cert)
        servers.append(ServerThread(waitress_server(gw_app, GATEWAY_IP, GATEWAY_PORT), "gateway").start())
        for ip, port in ((USERS_IP, BACKEND_PORT), (GATEWAY_IP, GATEWAY_PORT)):
            _wait_port(ip, port)  # waitress binds at once but accepts from its loop

        tmp_pcap = tmp / "demo.pcap"
        if not args.no_capture:
            tcpdump = Tcpdump(tmp_pcap)
            tcpdump.wait_listening()
        run_scenario()
        gw_upstreams.close()  # FIN the kept-alive gateway -> users connections
        if tcpdump is not None:
            tcpdump.stop()
            print("tcpdump:", "; ".join(line for line in tcpdump.stderr if "packets" in line))
            out = Path(args.output)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_pcap, out)
            print(f"wrote {out} ({out.stat().st_size} bytes) in {time.monotonic() - started:.1f}s")
    finally:
        if tcpdump is not None and tcpdump.proc.poll() is None:
            tcpdump.proc.kill()
            tcpdump.proc.wait()
        for server in reversed(servers):
            try:
                server.stop()
            except Exception as exc:  # noqa: BLE001 - best effort teardown
                print(f"stopping {getattr(server, 'name', server)}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _wait_port(ip: str, port: int) -> None:
    """Wait until something listens; checked before tcpdump starts, so not captured."""
    deadline = time.monotonic() + 5
    while True:
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
