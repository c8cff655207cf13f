"""inventory.shop.local (127.0.0.13:8000): catalogue and stock, served by werkzeug.

Wire features on purpose:

* ``GET /api/v2/items/<SKU>``: JSON, gzip-compressed (``Content-Encoding: gzip``,
  with a Content-Length) when the caller accepts gzip;
* ``GET /api/v2/items?q=..`` / ``?category=..``: streamed, so the HTTP/1.1
  werkzeug server sends it ``Transfer-Encoding: chunked``;
* ``GET /api/v2/items/<SKU>/stock``: streamed *and* gzip (chunked + gzip);
* every response carries werkzeug's ``Server: Werkzeug/x.y.z Python/3.x.y``
  banner and an ``X-Powered-By`` header (version disclosure);
* anything else is Flask's stock HTML 404 (what the scanner gets).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import platform
import zlib

from flask import Flask, Response, jsonify, request

from .data import ITEMS, ITEMS_BY_SKU

app = Flask("inventory")
app.json.sort_keys = False

POWERED_BY = f"Flask/{importlib.metadata.version('flask')} CPython/{platform.python_version()}"


@app.after_request
def banner(resp: Response) -> Response:
    resp.headers["X-Powered-By"] = POWERED_BY
    return resp


def _wants_gzip() -> bool:
    return "gzip" in request.headers.get("Accept-Encoding", "")


@app.get("/api/v2/items/<sku>")
def get_item(sku: str):
    item = ITEMS_BY_SKU.get(sku)
    if item is None:
        return jsonify(error="unknown_sku", sku=sku), 404
    body = json.dumps(
        {
            **item,
            "in_stock": sum(item["warehouses"].values()) > 0,
            "description": f"{item['name']} - {item['category']} - ships in 1-2 business days. " * 3,
        },
        separators=(",", ":"),
    ).encode()
    if not _wants_gzip():
        return Response(body, mimetype="application/json")
    resp = Response(gzip.compress(body, mtime=0), mimetype="application/json")
    resp.headers["Content-Encoding"] = "gzip"
    resp.headers["Vary"] = "Accept-Encoding"
    return resp


@app.get("/api/v2/items")
def list_items():
    q = request.args.get("q", "").lower()
    category = request.args.get("category")
    limit = min(int(request.args.get("limit", 10)), 50)
    hits = [
        it
        for it in ITEMS
        if (not q or q in it["name"].lower()) and (not category or it["category"] == category)
    ][:limit]

    def stream():
        yield b'{"items":['
        for i, it in enumerate(hits):
            yield (b"," if i else b"") + json.dumps(
                {"sku": it["sku"], "name": it["name"], "price": it["price"]}, separators=(",", ":")
            ).encode()
        yield b'],"count":%d}' % len(hits)

    return Response(stream(), mimetype="application/json")


@app.get("/api/v2/items/<sku>/stock")
def stock(sku: str):
    item = ITEMS_BY_SKU.get(sku)
    if item is None:
        return jsonify(error="unknown_sku", sku=sku), 404

    def stream():
        comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip wrapper, mtime 0
        yield comp.compress(b'{"sku":"%s","warehouses":[' % sku.encode()) + comp.flush(zlib.Z_SYNC_FLUSH)
        for i, (wh, qty) in enumerate(item["warehouses"].items()):
            part = (b"," if i else b"") + json.dumps(
                {"warehouse": wh, "on_hand": qty, "reserved": qty // 7}
            ).encode()
            yield comp.compress(part) + comp.flush(zlib.Z_SYNC_FLUSH)
        yield comp.compress(b"]}") + comp.flush(zlib.Z_FINISH)

    resp = Response(stream(), mimetype="application/json")
    resp.headers["Content-Encoding"] = "gzip"
    return resp
