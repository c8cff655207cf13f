"""payments.shop.local (127.0.0.14:8443): a card processor stand-in, HTTPS only.

Served by werkzeug with a self-signed certificate (generated with openssl by
``make_demo.py``). The capture only shows the TLS handshake (ClientHello with
SNI ``payments.shop.local``) and encrypted records; nothing in here is visible.
"""

from __future__ import annotations

import random

from flask import Flask, jsonify, request

from .data import USERS

app = Flask("payments")
app.json.sort_keys = False

API_KEY = "sk_test_51ShopDemoGatewayKey0000000000000000"
_ids = random.Random(7004)
CUSTOMERS = {u["customer_id"]: u for u in USERS}


@app.before_request
def authenticate():
    if request.headers.get("Authorization") != f"Bearer {API_KEY}":
        return jsonify(error={"type": "invalid_request_error", "message": "Invalid API key"}), 401
    return None


@app.get("/v1/customers/<cus_id>/payment_methods")
def payment_methods(cus_id: str):
    user = CUSTOMERS.get(cus_id)
    if user is None:
        return jsonify(error={"type": "invalid_request_error", "message": "No such customer"}), 404
    return jsonify(
        object="list",
        data=[
            {
                "id": user["payment_method_id"],
                "type": "card",
                "card": {
                    "brand": user["card"]["brand"],
                    "last4": user["card"]["number"][-4:],
                    "exp_month": user["card"]["exp_month"],
                    "exp_year": user["card"]["exp_year"],
                },
            }
        ],
    )


@app.post("/v1/charges")
def charge():
    body = request.get_json(force=True)
    return jsonify(
        id=f"ch_{_ids.getrandbits(64):016x}",
        object="charge",
        amount=body.get("amount"),
        currency=body.get("currency", "usd"),
        customer=body.get("customer"),
        status="succeeded",
        paid=True,
    ), 200


@app.post("/v1/customers")
def create_customer():
    body = request.get_json(force=True)
    return jsonify(id=f"cus_{_ids.getrandbits(64):016x}", object="customer", email=body.get("email")), 200
