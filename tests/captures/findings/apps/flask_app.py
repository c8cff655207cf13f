"""Flask fixture app: ``python flask_app.py PORT debug|prod``.

debug: werkzeug's interactive debugger page on unhandled exceptions.
prod:  Flask's generic 500 page; one route returns its traceback inside a JSON field
       (a common hand-written "helpful" error handler).
"""

import sqlite3
import sys
import traceback

from flask import Flask, jsonify, request

app = Flask("shop")


@app.get("/api/items/<int:item_id>")
def item(item_id: int):
    return jsonify(id=item_id, name="Kettle", price="24.90", tags=["kitchen"],
                   updated_at="2024-05-01T10:00:00Z")


@app.get("/api/stats")
def stats():
    hits = [3, 0]
    return jsonify(ratio=hits[0] / hits[1])  # ZeroDivisionError


@app.get("/api/report")
def report():
    db = sqlite3.connect(":memory:")
    rows = db.execute("SELECT id, total FROM reports WHERE owner = ?", (request.args.get("owner", ""),))
    return jsonify(rows=rows.fetchall())  # sqlite3.OperationalError: no such table


@app.get("/api/parse")
def parse():
    try:
        return jsonify(value=int(request.args.get("n", "x")))
    except ValueError as e:
        return jsonify(error=str(e), type=type(e).__name__, trace=traceback.format_exc()), 500


@app.get("/api/missing")
def missing():
    return jsonify(error="not_found", message="no such item"), 404


@app.errorhandler(KeyError)
def key_error(e):
    return jsonify(error="bad_request", detail="missing field"), 400


@app.get("/api/keyerror")
def keyerror():
    return jsonify(v={}["owner"])


if __name__ == "__main__":
    port, mode = int(sys.argv[1]), sys.argv[2]
    app.run("127.0.0.1", port, debug=(mode == "debug"), use_reloader=False)
