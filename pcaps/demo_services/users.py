"""users.shop.local (127.0.0.11:8000): the user directory.

Leak on purpose: ``GET /api/v1/users/<uuid>/profile`` returns the full record,
email, phone, SSN, card number, date of birth and street address included.
``GET /api/v1/users/search`` needs no token (it is the one unauthenticated endpoint).
"""

from __future__ import annotations

import random
import uuid

from flask import Flask, abort, g, jsonify, request

from .common import bearer_claims
from .data import USERS, USERS_BY_ID, USERS_BY_UUID

app = Flask("users")
app.json.sort_keys = False

_new_ids = random.Random(7001)
_next_id = [max(USERS_BY_ID) + 1]


def _public(user: dict) -> dict:
    return {
        "id": user["id"],
        "uuid": user["uuid"],
        "username": user["username"],
        "display_name": user["full_name"].split()[0] + " " + user["full_name"].split()[1][0] + ".",
        "avatar_url": f"https://cdn.shop.local/avatars/{user['uuid']}.png",
        "created_at": user["created_at"],
    }


@app.before_request
def authenticate():
    if request.endpoint in ("search_users", None):
        return None
    claims = bearer_claims(request.headers.get("Authorization"))
    if claims is None:
        return jsonify(error="unauthorized", message="missing or invalid bearer token"), 401
    g.claims = claims
    return None


@app.get("/api/v1/users/<int:user_id>")
def get_user(user_id: int):
    user = USERS_BY_ID.get(user_id)
    if user is None:
        return jsonify(error="not_found", id=user_id), 404
    return jsonify(_public(user))


@app.get("/api/v1/users/me")
def get_me():
    user = USERS_BY_UUID.get(g.claims.get("sub"))
    if user is None:
        abort(404)
    body = _public(user)
    body["roles"] = ["customer"]
    body["email_verified"] = True
    return jsonify(body)


@app.get("/api/v1/users/<uuid_str>/profile")
def get_profile(uuid_str: str):
    user = USERS_BY_UUID.get(uuid_str)
    if user is None:
        return jsonify(error="not_found"), 404
    # Everything, straight from the row: this is the PII leak the sensor should flag.
    return jsonify(
        {
            "id": user["id"],
            "uuid": user["uuid"],
            "username": user["username"],
            "full_name": user["full_name"],
            "email": user["email"],
            "phone": user["phone"],
            "ssn": user["ssn"],
            "date_of_birth": user["date_of_birth"],
            "address": user["address"],
            "payment_card": {
                "brand": user["card"]["brand"],
                "card_number": user["card"]["number"],
                "exp_month": user["card"]["exp_month"],
                "exp_year": user["card"]["exp_year"],
                "cardholder_name": user["full_name"].upper(),
            },
            "created_at": user["created_at"],
        }
    )


@app.get("/api/v1/users/search")
def search_users():
    q = request.args.get("q", "").lower()
    limit = min(int(request.args.get("limit", 5)), 20)
    hits = [u for u in USERS if q and (q in u["username"] or q in u["full_name"].lower())]
    return jsonify(
        query=q, total=len(hits), results=[{"id": u["id"], "username": u["username"]} for u in hits[:limit]]
    )


@app.post("/api/v1/users")
def create_user():
    body = request.get_json(force=True)
    missing = [k for k in ("email", "full_name", "password") if not body.get(k)]
    if missing:
        return jsonify(error="validation_failed", missing=missing), 422
    new_id = _next_id[0]
    _next_id[0] += 1
    return jsonify(
        id=new_id,
        uuid=str(uuid.UUID(int=_new_ids.getrandbits(128), version=4)),
        username=body["email"].split("@")[0],
        created_at="2026-06-01T08:00:00Z",
    ), 201
