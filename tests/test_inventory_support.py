"""Helpers for the inventory tests (no tests here): build an inventory from real captures into a real
SQLite file, and snapshot it by natural keys (no row ids) so two inventories can be compared."""

from __future__ import annotations

import json
import os

from conftest import DATA, PCAPS

from discovery.inventory import Inventory
from discovery.store import Store
from sensor.pipeline import transactions_from_files

INV = os.path.join(DATA, "inventory")
HTTPBIN = os.path.join(INV, "httpbin.pcap")
HTTPBIN_SPEC = os.path.join(INV, "httpbin_spec.json")
HTTPBIN_TRUTH = os.path.join(INV, "httpbin.json")
MISC = os.path.join(INV, "misc.pcap")
HTTPBIN_ST = os.path.join(INV, "httpbin_st.pcap")
HTTPBIN_ST_TRUTH = os.path.join(INV, "httpbin_st.json")
DEMO = os.path.join(PCAPS, "demo.pcap")

_tx_cache: dict[str, list] = {}


def txs(path: str) -> list:
    if path not in _tx_cache:
        _tx_cache[path] = transactions_from_files([path])
    return _tx_cache[path]


def build(db_path: str, *runs: list, sources: tuple[str, ...] = (), **caps) -> Store:
    """One replay run per list of transactions (each ends with finish), into ``db_path``."""
    store = Store(db_path)
    for i, run in enumerate(runs):
        run_id = store.begin_run(list(sources) if i == 0 else [])
        inv = Inventory(store, run_id, **caps)
        for k, tx in enumerate(run, 1):
            inv.observe(tx)
            if k % 97 == 0:  # flushes in the middle, as replay does every few thousand
                inv.flush()
        inv.finish()
        store.finish_run(run_id, {})
    return store


def snapshot(db) -> dict:
    """Every inventory table, keyed by natural keys, without ids, run numbers or wall-clock times."""
    q = db.execute
    out: dict = {}
    out["services"] = sorted(
        q(
            "select name, first_seen, last_seen, hits, endpoints, probe_hits, excluded_hits, "
            "static_hits, overflow_hits from services"
        ).fetchall()
    )
    out["addresses"] = sorted(
        q(
            "select s.name, a.address, a.first_seen, a.last_seen, a.hits from "
            "service_addresses a join services s on s.id = a.service_id"
        ).fetchall()
    )
    ep = (
        "select s.name, e.method, e.template, e.operation from endpoints e "
        "join services s on s.id = e.service_id"
    )
    out["endpoints"] = sorted(
        q(
            "select s.name, e.method, e.template, e.operation, e.api_type, e.hits, e.first_seen, "
            "e.last_seen, "
            "e.raw_paths, e.request_content_types, e.response_content_types, e.auth, e.latency_p50_ms, "
            "e.latency_p90_ms, e.latency_p99_ms, e.request_bytes, e.response_bytes, e.examples, e.forced "
            "from endpoints e join services s on s.id = e.service_id"
        ).fetchall()
    )
    key = {r[0]: tuple(r[1:]) for r in q(ep.replace("select s.name", "select e.id, s.name")).fetchall()}
    for table, cols in (
        ("endpoint_statuses", "status_code, count, content_types"),
        (
            "parameters",
            "location, name, type, format, types, count, required, distinct_values, "
            "examples, first_seen, last_seen",
        ),
        ("schemas", "direction, status_code, schema, bodies"),
        ("fields", "direction, status_code, path, type, format, required, first_seen"),
        (
            "samples",
            "status_code, ts, method, uri, request_headers, request_body, "
            "response_headers, response_body, latency_ms",
        ),
    ):
        rows = q(f"select endpoint_id, {cols} from {table}").fetchall()
        out[table] = sorted((key[r[0]], *r[1:]) for r in rows)
    out["probes"] = sorted(
        q(
            "select s.name, p.client, p.hits, p.paths, p.statuses, p.examples, p.first_seen, "
            "p.last_seen, p.overflow_hits from probes p join services s on s.id = p.service_id"
        )
    )
    out["assets"] = sorted(
        q(
            "select s.name, a.kind, a.extension, a.hits, a.bytes, a.paths, a.example, "
            "a.first_seen, a.last_seen from assets a join services s on s.id = a.service_id"
        )
    )
    out["templates"] = sorted(
        q(
            "select s.name, t.template, t.segments, t.forced from templates t join services s "
            "on s.id = t.service_id"
        )
    )
    out["observed_paths"] = sorted(
        q(
            "select s.name, o.method, o.path, o.operation, o.confirmed, o.hits, "
            "o.first_seen, o.last_seen, o.data from observed_paths o join services s on "
            "s.id = o.service_id"
        )
    )
    return out


def exercised_spec_paths(truth_path: str = HTTPBIN_TRUTH) -> set[str]:
    """Spec paths a capture exercised and httpbin answered as existing (2xx, 3xx, 401, 403,
    405, 5xx).  Requests recorded without their spec path (schemathesis) are routed to the
    spec path a router would pick, independently of the inventory's templating."""
    from discovery import specdiff

    with open(truth_path) as f:
        truth = json.load(f)
    paths = sorted({o.path for o in specdiff.operations(specdiff.load_spec(HTTPBIN_SPEC))})
    ok = set()
    for t in truth["requests"]:
        p = t.get("spec_path") or specdiff.best_match(paths, t["uri"].split("?")[0])
        s = t["status_code"]
        if p and (200 <= s < 400 or s in (401, 403, 405) or s >= 500):
            ok.add(p)
    return ok
