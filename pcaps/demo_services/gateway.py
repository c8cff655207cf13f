"""gateway.shop.local (127.0.0.10:8080): the public API, fanning out to the backends.

Every request resolves backend names through the demo DNS server (a real UDP
query from 127.0.0.10, cached for a fixed number of look-ups) and calls two or
more backends with sockets bound to 127.0.0.10:

* users (HTTP, kept-alive pooled connections; waitress),
* orders and inventory (HTTP, one connection per call; werkzeug closes),
* payments (HTTPS with SNI ``payments.shop.local``, one TLS connection per call).

The gateway forwards the caller's bearer token to users/orders, uses its own
service token (a JWT too) for sign-ups and every inventory call, calls
``/api/v1/users/search`` with no token at all, and never returns the raw PII it
gets from users to its clients.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import threading

from flask import Flask, jsonify, request

from .common import (
    BACKEND_PORT,
    GATEWAY_IP,
    PAYMENTS_PORT,
    Reply,
    StubResolver,
    bearer_claims,
    http_connection,
    https_connection,
    jwt_encode,
    read_reply,
)
from .data import SERVICE_CLAIMS
from .payments import API_KEY as PAYMENTS_KEY

USER_AGENT = "shop-gateway/2.3.1 python-http.client/3.11"

SERVICES = {
    # name: (dns name, port, tls, keep-alive)
    "users": ("users.shop.local", BACKEND_PORT, False, True),
    "orders": ("orders.shop.local", BACKEND_PORT, False, False),
    "inventory": ("inventory.shop.local", BACKEND_PORT, False, False),
    "payments": ("payments.shop.local", PAYMENTS_PORT, True, False),
}

_RETRYABLE = (
    http.client.RemoteDisconnected,
    http.client.CannotSendRequest,
    BrokenPipeError,
    ConnectionResetError,
)


class UpstreamError(Exception):
    def __init__(self, service: str, reply: Reply):
        super().__init__(f"{service} answered {reply.status}")
        self.service = service
        self.reply = reply


class Upstreams:
    def __init__(self, resolver: StubResolver, tls: ssl.SSLContext):
        self.resolver = resolver
        self.tls = tls
        self._idle: dict[str, list[http.client.HTTPConnection]] = {name: [] for name in SERVICES}
        self._lock = threading.Lock()
        self._counter = 0
        self.service_token = "Bearer " + jwt_encode(SERVICE_CLAIMS)

    def _request_id(self) -> str:
        with self._lock:
            self._counter += 1
            n = self._counter
        return hashlib.sha1(f"gw-{n}".encode()).hexdigest()[:32]

    def _connect(self, service: str) -> http.client.HTTPConnection:
        host, port, tls, _ = SERVICES[service]
        ip = self.resolver.resolve(host)
        if tls:
            return https_connection(ip, port, GATEWAY_IP, host, self.tls)
        conn = http_connection(ip, port, GATEWAY_IP)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        auth: str | None = None,
        body: dict | None = None,
        gzip_ok: bool = False,
        ok=(200, 201),
    ) -> Reply:
        host, port, tls, keepalive = SERVICES[service]
        headers = {
            "Host": f"{host}:{port}" if tls else host,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "X-Request-Id": self._request_id(),
            "X-Forwarded-For": request.remote_addr or "",
        }
        if gzip_ok:
            headers["Accept-Encoding"] = "gzip"
        if auth is None and service == "inventory":
            auth = self.service_token
        if auth:
            headers["Authorization"] = auth
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if not keepalive:
            headers["Connection"] = "close"

        for attempt in (0, 1):
            conn = None
            if keepalive:
                with self._lock:
                    if self._idle[service]:
                        conn = self._idle[service].pop()
            reused = conn is not None
            if conn is None:
                conn = self._connect(service)
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                reply = read_reply(resp)
            except _RETRYABLE:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise
            if keepalive and not resp.will_close:
                with self._lock:
                    self._idle[service].append(conn)
            else:
                conn.close()
            break
        if reply.status not in ok:
            raise UpstreamError(service, reply)
        return reply

    def close(self) -> None:
        with self._lock:
            for conns in self._idle.values():
                for conn in conns:
                    conn.close()
                conns.clear()


def create_app(resolver: StubResolver, ca_file: str) -> tuple[Flask, Upstreams]:
    app = Flask("gateway")
    app.json.sort_keys = False
    tls = ssl.create_default_context(cafile=ca_file)
    up = Upstreams(resolver, tls)
    service_token = up.service_token
    payments_auth = f"Bearer {PAYMENTS_KEY}"

    @app.errorhandler(UpstreamError)
    def upstream_failed(err: UpstreamError):
        if err.reply.status == 404:
            return jsonify(error="not_found", service=err.service), 404
        if err.reply.status in (401, 403):
            return jsonify(error="unauthorized"), 401
        return jsonify(error="upstream_error", service=err.service, upstream_status=err.reply.status), 502

    def caller() -> tuple[str, dict] | tuple[None, None]:
        auth = request.headers.get("Authorization")
        claims = bearer_claims(auth)
        return (auth, claims) if claims else (None, None)

    def unauthorized():
        return jsonify(error="unauthorized", message="sign in first"), 401

    @app.get("/api/v1/me")
    def me():
        auth, claims = caller()
        if not auth:
            return unauthorized()
        user = up.call("users", "GET", "/api/v1/users/me", auth=auth).json()
        recent = up.call("orders", "GET", "/api/v1/orders?limit=10&page=1", auth=auth).json()
        return jsonify(user=user, recent_orders=recent["orders"][:3], order_count=recent["total"])

    @app.get("/api/v1/account/orders")
    def account_orders():
        auth, claims = caller()
        if not auth:
            return unauthorized()
        page = int(request.args.get("page", 1))
        orders = up.call("orders", "GET", f"/api/v1/orders?limit=10&page={page}", auth=auth).json()
        user = up.call("users", "GET", f"/api/v1/users/{claims['uid']}", auth=auth).json()
        return jsonify(owner=user["display_name"], **orders)

    @app.get("/api/v1/account/profile")
    def account_profile():
        auth, claims = caller()
        if not auth:
            return unauthorized()
        prof = up.call("users", "GET", f"/api/v1/users/{claims['sub']}/profile", auth=auth).json()
        methods = up.call(
            "payments", "GET", f"/v1/customers/{claims['cid']}/payment_methods", auth=payments_auth
        ).json()
        # only non-sensitive fields go back to the client
        return jsonify(
            display_name=prof["full_name"],
            city=prof["address"]["city"],
            member_since=prof["created_at"][:10],
            cards=[{"brand": m["card"]["brand"], "last4": m["card"]["last4"]} for m in methods["data"]],
        )

    @app.get("/api/v1/products/<sku>")
    def product(sku: str):
        auth, claims = caller()
        item = up.call("inventory", "GET", f"/api/v2/items/{sku}", gzip_ok=True).json()
        stock = up.call("inventory", "GET", f"/api/v2/items/{sku}/stock", gzip_ok=True).json()
        bought = None
        if auth:
            bought = up.call("orders", "GET", f"/api/v1/orders?sku={sku}&limit=10&page=1", auth=auth).json()[
                "total"
            ]
        else:
            up.call("users", "GET", f"/api/v1/users/search?q={item['category']}&limit=3")
        return jsonify(
            sku=item["sku"],
            name=item["name"],
            price=item["price"],
            available=sum(w["on_hand"] - w["reserved"] for w in stock["warehouses"]),
            previously_bought=bought,
        )

    @app.get("/api/v1/search")
    def search():
        q = request.args.get("q", "")
        people = up.call("users", "GET", f"/api/v1/users/search?q={q}&limit=5").json()
        items = up.call("inventory", "GET", f"/api/v2/items?q={q}&limit=5").json()
        return jsonify(query=q, users=people["results"], items=items["items"])

    @app.get("/api/v1/orders/<order_id>")
    def order(order_id: str):
        auth, claims = caller()
        if not auth:
            return unauthorized()
        order = up.call("orders", "GET", f"/api/v1/orders/{order_id}", auth=auth).json()
        first = up.call("inventory", "GET", f"/api/v2/items/{order['lines'][0]['sku']}", gzip_ok=True).json()
        return jsonify(
            id=order["id"],
            status=order["status"],
            total=order["total"],
            lines=order["lines"],
            first_item=first["name"],
        )

    @app.get("/api/v1/orders/<order_id>/invoice")
    def invoice(order_id: str):
        auth, claims = caller()
        if not auth:
            return unauthorized()
        user = up.call("users", "GET", f"/api/v1/users/{claims['uid']}", auth=auth).json()
        inv = up.call("orders", "GET", f"/api/v1/orders/{order_id}/invoice", auth=auth).json()
        return jsonify(bill_to=user["display_name"], **inv)

    @app.post("/api/v1/checkout")
    def checkout():
        auth, claims = caller()
        if not auth:
            return unauthorized()
        cart = request.get_json(force=True)
        lines = []
        for entry in cart.get("items", []):
            item = up.call("inventory", "GET", f"/api/v2/items/{entry['sku']}", gzip_ok=True).json()
            lines.append({"sku": item["sku"], "qty": entry["qty"], "unit_price": item["price"]})
        order = up.call(
            "orders",
            "POST",
            "/api/v1/orders",
            auth=auth,
            body={
                "user_id": claims["uid"],
                "lines": lines,
                "payment_method_id": cart.get("payment_method_id"),
            },
        ).json()
        cents = int(round(float(order["total"]) * 100))
        charge = up.call(
            "payments",
            "POST",
            "/v1/charges",
            auth=payments_auth,
            body={
                "amount": cents,
                "currency": "usd",
                "customer": claims["cid"],
                "payment_method": cart.get("payment_method_id"),
                "metadata": {"order_id": order["id"]},
            },
        ).json()
        return jsonify(
            order_id=order["id"], total=order["total"], charge=charge["id"], status=charge["status"]
        ), 201

    @app.post("/api/v1/signup")
    def signup():
        form = request.get_json(force=True)
        user = up.call(
            "users",
            "POST",
            "/api/v1/users",
            auth=service_token,
            body={
                "email": form["email"],
                "full_name": form["full_name"],
                "password": form["password"],
                "marketing_opt_in": False,
            },
        )
        user = user.json()
        cus = up.call(
            "payments",
            "POST",
            "/v1/customers",
            auth=payments_auth,
            body={"email": form["email"], "metadata": {"user_id": user["id"]}},
        ).json()
        return jsonify(id=user["id"], uuid=user["uuid"], customer=cus["id"]), 201

    return app, up
