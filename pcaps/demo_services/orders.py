"""orders.shop.local (127.0.0.12:8000): orders, served by werkzeug (one request per connection).

Leak on purpose: unhandled exceptions are answered with HTTP 500 and the real
Python traceback (``traceback.format_exception``) as the body. Two real bugs
trigger it:

* ``GET /api/v1/orders/<id>/invoice`` on orders imported with a "12,99" style
  price -> ``decimal.InvalidOperation`` deep in the invoice code;
* ``POST /api/v1/orders`` with an empty cart -> ``ZeroDivisionError``.
"""

from __future__ import annotations

import random
import traceback
from decimal import ROUND_HALF_UP, Decimal

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from .common import bearer_claims
from .data import ORDERS, ORDERS_BY_ID

app = Flask("orders")
app.json.sort_keys = False


class ObjectIdConverter(BaseConverter):
    regex = "[0-9a-f]{24}"


app.url_map.converters["objectid"] = ObjectIdConverter

_new_ids = random.Random(7002)
CENT = Decimal("0.01")
TAX_RATE = Decimal("0.0825")


@app.errorhandler(Exception)
def show_traceback(exc: Exception):
    if isinstance(exc, HTTPException):
        return exc
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Response("Internal Server Error\n\n" + text, status=500, mimetype="text/plain")


@app.before_request
def authenticate():
    # orders trusts the gateway's signature check and only reads the claims
    claims = bearer_claims(request.headers.get("Authorization"), verify=False)
    if claims is None:
        return jsonify(error="unauthorized"), 401
    g.claims = claims
    return None


def _line_total(line: dict) -> Decimal:
    return (Decimal(line["unit_price"]) * line["qty"]).quantize(CENT, ROUND_HALF_UP)


def _summarise(order: dict) -> dict:
    subtotal = sum((_line_total(line) for line in order["lines"]), Decimal("0"))
    return {**order, "total": str(subtotal)}


def build_invoice(order: dict) -> dict:
    lines = [{**line, "line_total": str(_line_total(line))} for line in order["lines"]]
    subtotal = sum(Decimal(line["line_total"]) for line in lines)
    tax = (subtotal * TAX_RATE).quantize(CENT, ROUND_HALF_UP)
    return {
        "order_id": order["id"],
        "lines": lines,
        "subtotal": str(subtotal),
        "tax": str(tax),
        "total": str(subtotal + tax),
    }


@app.get("/api/v1/orders/<objectid:order_id>")
def get_order(order_id: str):
    order = ORDERS_BY_ID.get(order_id)
    if order is None:
        return jsonify(error="not_found", id=order_id), 404
    try:
        return jsonify(_summarise(order))
    except ArithmeticError:
        return jsonify({**order, "total": None})


@app.get("/api/v1/orders/<objectid:order_id>/invoice")
def get_invoice(order_id: str):
    order = ORDERS_BY_ID.get(order_id)
    if order is None:
        return jsonify(error="not_found", id=order_id), 404
    return jsonify(build_invoice(order))  # raises on the legacy "12,99" prices


@app.get("/api/v1/orders")
def list_orders():
    limit = min(int(request.args.get("limit", 10)), 50)
    page = max(int(request.args.get("page", 1)), 1)
    uid = g.claims.get("uid")
    mine = [o for o in ORDERS if o["user_id"] == uid] or ORDERS
    sku = request.args.get("sku")
    if sku:
        mine = [o for o in mine if any(line["sku"] == sku for line in o["lines"])]
    chunk = mine[(page - 1) * limit : page * limit]
    return jsonify(
        page=page,
        limit=limit,
        total=len(mine),
        orders=[
            {
                "id": o["id"],
                "status": o["status"],
                "created_at": o["created_at"],
                "items": sum(line["qty"] for line in o["lines"]),
            }
            for o in chunk
        ],
    )


def loyalty_points(subtotal: Decimal, n_lines: int) -> int:
    # points per line, averaged: divides by zero for an empty cart
    return int(float(subtotal) / n_lines * 10)


@app.post("/api/v1/orders")
def create_order():
    body = request.get_json(force=True)
    lines = body.get("lines", [])
    subtotal = sum((_line_total(line) for line in lines), Decimal("0"))
    points = loyalty_points(subtotal, len(lines))
    return jsonify(
        id=f"{_new_ids.getrandbits(96):024x}",
        user_id=body.get("user_id"),
        status="pending_payment",
        lines=lines,
        total=str(subtotal),
        loyalty_points=points,
    ), 201
