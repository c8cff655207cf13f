#!/usr/bin/env python3
"""Drive vAPI (``vapi.py``) with six normal users and one attacker, each from its own address.

    .venv/bin/python tests/captures/actors/driver.py --server 127.0.0.5:8080 -o truth.json

Normal users (127.0.0.11 .. 127.0.0.16) log in, read their own profile and orders, browse the
catalogue (about half of those calls without their token, as a shop front end does), and
sometimes place an order.  Their quirks are the false positives a detector must survive:
carol mistypes her password once, dave's token expires (he waits, gets a 401 and logs in
again), erin browses the whole catalogue (far more products than anyone), frank uses the
cookie login instead of a JWT, bob asks for an order that does not exist.

The attacker, mallory at 127.0.0.66, runs the chain of a VAmPI/crAPI walkthrough:

1. recon: 30 requests for paths that do not exist (``/.env``, ``/api/v2/users``, ...), no credentials;
2. brute force: 12 wrong passwords for ``admin`` on ``POST /api/login``;
3. logs in with her own account and reads her own profile and orders;
4. enumerates every user (``GET /api/users/1..48``) and every order (``GET /api/orders/1..96``);
5. calls ``/api/admin/users`` and ``/api/admin/export`` (any logged-in user may);
6. reads three orders without any credential (the endpoint only checks a token when sent).

Every call is written to the ground truth (client address, role, user, method, path, status,
whether credentials were sent) with the raw secrets the clients held (passwords, tokens,
cookies), so a test can check that none of them reached the database.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vapi import ATTACKER, N_ORDERS, N_PRODUCTS, N_USERS, TOKEN_TTL, seed_data  # noqa: E402

HOST = "api.vapi.test"
NORMAL_IPS = {
    "alice": "127.0.0.11",
    "bob": "127.0.0.12",
    "carol": "127.0.0.13",
    "dave": "127.0.0.14",
    "erin": "127.0.0.15",
    "frank": "127.0.0.16",
}
ATTACKER_IP = "127.0.0.66"
RECON = (
    "/.env",
    "/.git/config",
    "/admin",
    "/admin/login",
    "/api/v2/users",
    "/api/v1/users",
    "/api/debug",
    "/api/swagger.json",
    "/swagger-ui.html",
    "/api/graphql",
    "/graphql",
    "/phpinfo.php",
    "/wp-login.php",
    "/server-status",
    "/backup.zip",
    "/backup.sql",
    "/db.sqlite3",
    "/api/internal/health",
    "/actuator/env",
    "/api/users/export",
    "/api/config",
    "/config.json",
    "/api/keys",
    "/console",
    "/api/admin/config",
    "/api/orders/export",
    "/.aws/credentials",
    "/api/token/refresh",
    "/robots.txt",
    "/api/v3/orders",
)
BRUTE = (
    "admin",
    "password",
    "123456",
    "admin123",
    "letmein",
    "qwerty",
    "welcome",
    "Passw0rd",
    "changeme",
    "root",
    "toor",
    "secret",
)


class Client:
    """One keep-alive HTTP connection from ``ip``; records every call it makes."""

    def __init__(self, ip: str, server: tuple[str, int], role: str, user: str, truth: list, secrets: set):
        self.ip, self.server, self.role, self.user = ip, server, role, user
        self.truth, self.secrets = truth, secrets
        self.conn = http.client.HTTPConnection(*server, timeout=10, source_address=(ip, 0))
        self.token: str | None = None
        self.cookie: str | None = None

    def call(
        self, method: str, path: str, body: dict | None = None, auth: bool = True, token: str | None = None
    ) -> tuple[int, object]:
        headers = {"Host": HOST, "User-Agent": f"vapi-client/{self.role}", "Accept": "application/json"}
        tok = token or self.token
        sent = False
        if auth and tok:
            headers["Authorization"] = f"Bearer {tok}"
            sent = True
        elif auth and self.cookie:
            headers["Cookie"] = f"vapi_session={self.cookie}"
            sent = True
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                if attempt:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection(*self.server, timeout=10, source_address=(self.ip, 0))
        status = resp.status
        for k, v in resp.getheaders():
            if k.lower() == "set-cookie" and v.startswith("vapi_session="):
                self.cookie = v.split(";", 1)[0].split("=", 1)[1]
                self.secrets.add(self.cookie)
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        self.truth.append(
            {
                "ip": self.ip,
                "role": self.role,
                "user": self.user,
                "method": method,
                "path": path,
                "status": status,
                "credentials": sent,
                "ts": time.time(),
            }
        )
        return status, doc

    def login(self, username: str, password: str, cookie: bool = False, guess: bool = False) -> int:
        if not guess:  # a guess from a wordlist ("admin", "secret") is no secret: paths hold such words
            self.secrets.add(password)
        status, doc = self.call(
            "POST",
            "/api/login" + ("?mode=cookie" if cookie else ""),
            {"username": username, "password": password},
            auth=False,
        )
        if status == 200 and not cookie:
            self.token = doc["token"]
            self.secrets.add(self.token)
        return status

    def close(self) -> None:
        self.conn.close()


def expect(got: int, want: int, what: str) -> None:
    if got != want:
        raise SystemExit(f"driver: {what}: got {got}, expected {want}")


def normal_user(server, name: str, users: dict, orders: dict, truth: list, secrets: set) -> None:
    user = next(u for u in users.values() if u["username"] == name)
    rng = random.Random(f"vapi-{name}")
    c = Client(NORMAL_IPS[name], server, "normal", name, truth, secrets)
    time.sleep(rng.uniform(0, 0.3))
    if name == "carol":
        expect(c.login(name, user["password"][:-1] + "x"), 401, "carol's typo")
    expect(c.login(name, user["password"], cookie=(name == "frank")), 200, f"{name} login")
    expect(c.call("GET", "/api/users/me")[0], 200, "me")
    expect(c.call("GET", f"/api/users/{user['id']}")[0], 200, "own profile")
    c.call("GET", "/api/products", auth=rng.random() < 0.5)
    n = N_PRODUCTS if name == "erin" else rng.randint(6, 12)
    for pid in rng.sample(range(1, N_PRODUCTS + 1), n):
        expect(c.call("GET", f"/api/products/{pid}", auth=rng.random() < 0.5)[0], 200, "product")
        time.sleep(rng.uniform(0, 0.02))
    status, mine = c.call("GET", "/api/orders")
    expect(status, 200, "own orders")
    for o in mine[:5]:
        expect(c.call("GET", f"/api/orders/{o['id']}")[0], 200, "own order")
    if name == "dave":  # his token expires: one 401, then he logs in again
        time.sleep(TOKEN_TTL + 1.5)
        expect(c.call("GET", "/api/orders")[0], 401, "expired token")
        expect(c.login(name, user["password"]), 200, "dave again")
        expect(c.call("GET", "/api/orders")[0], 200, "own orders again")
    if rng.random() < 0.7 or name in ("alice", "frank"):
        items = [{"product_id": rng.randint(1, N_PRODUCTS), "qty": 1}]
        expect(c.call("POST", "/api/orders", {"items": items})[0], 201, "new order")
    if name == "bob":
        expect(c.call("GET", f"/api/orders/{N_ORDERS + 500}")[0], 404, "missing order")
    expect(c.call("GET", "/api/users/me")[0], 200, "me again")
    c.close()


def attacker(server, users: dict, truth: list, secrets: set) -> None:
    me = next(u for u in users.values() if u["username"] == ATTACKER)
    c = Client(ATTACKER_IP, server, "attacker", ATTACKER, truth, secrets)
    for path in RECON:  # 1. recon
        status, _ = c.call("GET", path, auth=False)
        if status not in (404, 405):
            raise SystemExit(f"driver: recon {path} answered {status}")
    for pw in BRUTE:  # 2. brute force
        expect(c.login("admin", pw, guess=True), 401, "brute force")
    expect(c.login(ATTACKER, me["password"]), 200, "mallory login")  # 3. her own account
    c.call("GET", "/api/users/me")
    c.call("GET", "/api/orders")
    for uid in range(1, N_USERS + 1):  # 4. enumeration
        expect(c.call("GET", f"/api/users/{uid}")[0], 200, "BOLA user")
    for oid in range(1, N_ORDERS + 1):
        expect(c.call("GET", f"/api/orders/{oid}")[0], 200, "BOLA order")
    expect(c.call("GET", "/api/admin/users")[0], 200, "admin users")  # 5. function level
    expect(c.call("GET", "/api/admin/export")[0], 200, "admin export")
    for oid in (3, 4, 5):  # 6. no credentials at all
        expect(c.call("GET", f"/api/orders/{oid}", auth=False)[0], 200, "unauthenticated order")
    c.close()


def run(server: tuple[str, int]) -> dict:
    users, orders, _ = seed_data()
    truth: list[dict] = []
    secrets: set[str] = set()
    threads = [
        threading.Thread(target=normal_user, args=(server, n, users, orders, truth, secrets))
        for n in NORMAL_IPS
    ]
    threads.append(threading.Thread(target=attacker, args=(server, users, truth, secrets)))
    errors: list[BaseException] = []

    def guard(t: threading.Thread) -> None:
        try:
            t.run()
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    runners = [threading.Thread(target=guard, args=(t,)) for t in threads]
    for t in runners:
        t.start()
        time.sleep(0.05)
    for t in runners:
        t.join()
    if errors:
        raise SystemExit(f"driver failed: {errors[0]!r}")
    truth.sort(key=lambda r: r["ts"])
    return {
        "host": HOST,
        "server": f"{server[0]}:{server[1]}",
        "normal": NORMAL_IPS,
        "attacker": {
            "user": ATTACKER,
            "ip": ATTACKER_IP,
            "recon": len(RECON),
            "brute_force": len(BRUTE),
            "guesses": list(BRUTE),
            "users_enumerated": N_USERS,
            "orders_enumerated": N_ORDERS,
            "unauthenticated_orders": 3,
        },
        "calls": truth,
        "secrets": sorted(secrets),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.5:8080")
    ap.add_argument("-o", "--out", default="-")
    a = ap.parse_args()
    host, _, port = a.server.rpartition(":")
    doc = run((host, int(port)))
    text = json.dumps(doc, indent=1)
    if a.out == "-":
        print(text)
    else:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
