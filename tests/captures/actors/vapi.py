#!/usr/bin/env python3
"""vAPI: a small, deliberately vulnerable shop API in the style of OWASP VAmPI / crAPI.

Do not expose it anywhere: it exists to be attacked on 127.0.0.x while tcpdump records.

    .venv/bin/python tests/captures/actors/vapi.py --host 127.0.0.5 --port 8080   # waitress

Routes (JSON; JWT HS256 bearer tokens, or a session cookie after ``POST /api/login?mode=cookie``):

    POST /api/login                {"username", "password"} -> {"token", "user_id"}; 401 on a bad password
    GET  /api/users/me             the caller's profile
    GET  /api/users/<id>           any user's profile to any logged-in user        (API1: BOLA)
    GET  /api/orders               the caller's orders
    GET  /api/orders/<id>          any order; and without credentials at all       (API1, API2)
    POST /api/orders               place an order
    GET  /api/products[/<id>]      the catalogue (public)
    GET  /api/admin/users          every user, to any logged-in user               (API5)
    GET  /api/admin/export         every user with their orders, PII included      (API3, API5)

The bugs are the classic ones: object ids are trusted without an ownership check, the order
endpoint only checks a token when one is sent, and the admin routes only check that the caller
is logged in.  Data comes from Faker with a fixed seed (users 1..N, orders 1..M).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import random
import secrets
import time

from faker import Faker
from flask import Flask, g, jsonify, request

SECRET = b"vapi-hs256-secret-not-for-production"
ISSUER = "vapi"
TOKEN_TTL = 3.0  # seconds: short, so that the driver can show an expired token being refused

N_USERS = 48
N_ORDERS = 96
N_PRODUCTS = 40
NORMAL_USERS = ("alice", "bob", "carol", "dave", "erin", "frank")
ATTACKER = "mallory"
ADMIN = "admin"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def read_jwt(token: str) -> dict | None:
    try:
        header, payload, sig = token.split(".")
        want = hmac.new(SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(b64url(want), sig):
            return None
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, TypeError):
        return None
    if claims.get("exp", 0) < time.time():
        return None
    return claims


def seed_data(seed: int = 9) -> tuple[dict, dict, dict]:
    fake = Faker("en_US")
    Faker.seed(seed)
    rng = random.Random(seed)
    users = {}
    names = [ADMIN, *NORMAL_USERS, ATTACKER]
    for uid in range(1, N_USERS + 1):
        username = names[uid - 1] if uid <= len(names) else fake.unique.user_name()
        users[uid] = {
            "id": uid,
            "username": username,
            "password": "Adm1n!" + secrets.token_hex(8) if username == ADMIN else f"{username}-pass-{uid}",
            "role": "admin" if username == ADMIN else "user",
            "name": fake.name(),
            "email": f"{username}@{fake.free_email_domain()}",
            "phone": fake.numerify("(###) ###-####"),
            "ssn": fake.ssn(),
            "date_of_birth": fake.date_of_birth(minimum_age=18, maximum_age=80).isoformat(),
            "address": fake.street_address() + ", " + fake.city(),
        }
    products = {
        pid: {
            "id": pid,
            "name": fake.catch_phrase(),
            "price": round(rng.uniform(3, 300), 2),
            "stock": rng.randint(0, 500),
        }
        for pid in range(1, N_PRODUCTS + 1)
    }
    orders = {}
    for oid in range(1, N_ORDERS + 1):
        owner = rng.randint(2, N_USERS)
        orders[oid] = {
            "id": oid,
            "user_id": owner,
            "email": users[owner]["email"],
            "address": users[owner]["address"],
            "items": [
                {"product_id": rng.randint(1, N_PRODUCTS), "qty": rng.randint(1, 4)}
                for _ in range(rng.randint(1, 3))
            ],
            "total": round(rng.uniform(5, 900), 2),
            "card_last4": fake.credit_card_number()[-4:],
        }
    return users, orders, products


def public(user: dict) -> dict:
    return {k: v for k, v in user.items() if k != "password"}


def create_app(seed: int = 9) -> Flask:
    app = Flask("vapi")
    users, orders, products = seed_data(seed)
    by_name = {u["username"]: u for u in users.values()}
    sessions: dict[str, int] = {}
    app.config["USERS"] = users
    app.config["ORDERS"] = orders

    def caller() -> dict | None:
        """The logged-in user, or None.  Sets g.presented when a credential was sent at all."""
        g.presented = False
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            g.presented = True
            claims = read_jwt(auth[7:].strip())
            return users.get(int(claims["sub"])) if claims else None
        sid = request.cookies.get("vapi_session")
        if sid:
            g.presented = True
            uid = sessions.get(sid)
            return users.get(uid) if uid else None
        return None

    def unauthorized():
        return jsonify({"error": "authentication required"}), 401

    @app.post("/api/login")
    def login():
        body = request.get_json(silent=True) or {}
        user = by_name.get(str(body.get("username", "")))
        if user is None or not hmac.compare_digest(user["password"], str(body.get("password", ""))):
            return jsonify({"error": "invalid username or password"}), 401
        if request.args.get("mode") == "cookie":
            sid = secrets.token_urlsafe(24)
            sessions[sid] = user["id"]
            resp = jsonify({"status": "ok", "user_id": user["id"]})
            resp.set_cookie("vapi_session", sid, httponly=True, path="/")
            return resp
        now = time.time()
        token = make_jwt(
            {
                "sub": str(user["id"]),
                "iss": ISSUER,
                "role": user["role"],
                "iat": int(now),
                "exp": now + TOKEN_TTL,
            }
        )
        return jsonify({"token": token, "user_id": user["id"]})

    @app.get("/api/users/me")
    def me():
        user = caller()
        return jsonify(public(user)) if user else unauthorized()

    @app.get("/api/users/<int:uid>")
    def user_by_id(uid: int):
        if caller() is None:
            return unauthorized()
        user = users.get(uid)  # BUG (API1): no check that uid is the caller's
        return jsonify(public(user)) if user else (jsonify({"error": "no such user"}), 404)

    @app.get("/api/orders")
    def my_orders():
        user = caller()
        if user is None:
            return unauthorized()
        return jsonify([o for o in orders.values() if o["user_id"] == user["id"]])

    @app.get("/api/orders/<int:oid>")
    def order_by_id(oid: int):
        user = caller()
        if user is None and g.presented:  # BUG (API2): no credential at all is let through
            return unauthorized()
        order = orders.get(oid)  # BUG (API1): no ownership check
        return jsonify(order) if order else (jsonify({"error": "no such order"}), 404)

    @app.post("/api/orders")
    def place_order():
        user = caller()
        if user is None:
            return unauthorized()
        body = request.get_json(silent=True) or {}
        oid = max(orders) + 1
        orders[oid] = {
            "id": oid,
            "user_id": user["id"],
            "email": user["email"],
            "address": user["address"],
            "items": body.get("items", []),
            "total": 0.0,
            "card_last4": "0000",
        }
        return jsonify(orders[oid]), 201

    @app.get("/api/products")
    def product_list():
        return jsonify([{"id": p["id"], "name": p["name"], "price": p["price"]} for p in products.values()])

    @app.get("/api/products/<int:pid>")
    def product(pid: int):
        p = products.get(pid)
        return jsonify(p) if p else (jsonify({"error": "no such product"}), 404)

    @app.get("/api/admin/users")
    def admin_users():
        if caller() is None:  # BUG (API5): any logged-in user is an admin
            return unauthorized()
        return jsonify([public(u) for u in users.values()])

    @app.get("/api/admin/export")
    def admin_export():
        if caller() is None:  # BUG (API5, API3): everything, to anyone logged in
            return unauthorized()
        return jsonify(
            {
                "users": [
                    {**public(u), "orders": [o for o in orders.values() if o["user_id"] == u["id"]]}
                    for u in users.values()
                ]
            }
        )

    @app.errorhandler(404)
    def not_found(_e):
        return jsonify({"error": "not found"}), 404

    @app.errorhandler(405)
    def not_allowed(_e):
        return jsonify({"error": "method not allowed"}), 405

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.5")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--seed", type=int, default=9)
    a = ap.parse_args()
    from waitress import serve

    serve(create_app(a.seed), host=a.host, port=a.port, threads=8, ident="vapi")


if __name__ == "__main__":
    main()
