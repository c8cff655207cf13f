"""The sinks' shortcuts (issue 6, speed) give what the long way gives: a body's schema computed
once and folded equals observing it; remembered bodies give the detectors' exact findings;
sample candidates built at flush equal samples built at once; the transactions row is the
one the Transaction describes; a quiet kind's skipped transactions count its findings."""

from __future__ import annotations

import glob
import json
import os
import random
import sqlite3

from conftest import PCAPS, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from test_inventory_support import DEMO, HTTPBIN, MISC, build, snapshot, txs

from discovery import inventory, schema
from discovery.detectors import REGISTRY, BodyMemo
from discovery.detectors.redaction import Hasher
from discovery.findings import Findings, header_signature
from discovery.store import Store, TransactionLog

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "findings")

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["2026-11-01", "ann@corp.example", "https://x.example/a", "2026-11-01T10:00:00Z"]),
    lambda c: st.lists(c, max_size=25)
    | st.dictionaries(st.text(max_size=6) | st.sampled_from(["id", "x" * 17, "bob@corp.example"]), c,
                      max_size=6),
    max_leaves=60,
)
_bodies = st.lists(st.tuples(_json, st.floats(0, 100), st.booleans()), max_size=6)


def _observe_vs_fold(bodies) -> None:
    a = b = None
    for value, ts, count in bodies:
        a = schema.observe(a, value, ts, count=count)
        b = schema.fold(b, schema.shape(value), ts, count)
    assert a == b


@settings(max_examples=80, deadline=None)
@given(_bodies)
def test_a_folded_shape_is_the_observed_body(bodies):
    _observe_vs_fold(bodies)


@settings(max_examples=80, deadline=None)
@given(_bodies)
def test_a_folded_shape_is_the_observed_body_at_the_property_cap(bodies):
    old = schema.MAX_PROPS
    schema.MAX_PROPS = 3  # over the cap, properties are counted in "x" the same way
    try:
        _observe_vs_fold(bodies)
    finally:
        schema.MAX_PROPS = old


@settings(max_examples=80, deadline=None)
@given(_json, st.lists(st.floats(0, 100), min_size=1, max_size=5))
def test_one_fold_of_k_equal_shapes_is_k_folds(value, times):
    one = None
    for ts in times:
        one = schema.fold(one, schema.shape(value), ts)
    assert schema.fold(None, schema.shape(value), min(times), True, len(times)) == one


def test_the_shape_cache_is_exact_and_refuses_what_is_not_json():
    cache = schema.ShapeCache()
    body = json.dumps({"items": [{"id": 1, "email": "ann@corp.example"}]}).encode()
    import zlib

    first = cache.get(body, zlib.crc32(body))
    assert cache.get(bytes(bytearray(body)), zlib.crc32(body)) is first  # equal bytes, same shape
    other = b'{"items": []}'
    assert cache.get(other, zlib.crc32(body)) != first  # a CRC collision is not a hit
    try:
        cache.get(b"{not json", 1)
        raise AssertionError("not JSON must raise")
    except ValueError:
        pass


def test_remembered_bodies_give_the_detectors_exact_findings():
    # real error pages, debug pages (their markers enable error-only patterns), PII documents
    files = sorted(glob.glob(os.path.join(FIXTURES, "*.pcap*"))) + [os.path.join(PCAPS, "demo.pcap")]
    all_txs = [t for f in files for t in txs(f)]
    order = all_txs + random.Random(6).sample(all_txs, len(all_txs) // 3)  # again, in another order
    hasher = Hasher(b"k" * 32)
    memo = BodyMemo()
    for tx in order:
        assert REGISTRY.detect(tx, hasher, memo=memo) == REGISTRY.detect(tx, hasher), (tx.uri, tx.status_code)
    assert memo.data  # bodies were remembered


def test_samples_built_at_flush_equal_samples_built_at_once(tmp_path, monkeypatch):
    run = txs(HTTPBIN) + txs(DEMO) + txs(MISC)
    deferred = snapshot(build(str(tmp_path / "a.db"), run).db)
    monkeypatch.setattr(inventory, "HELD_MAX", 0)  # every candidate built when it arrives
    eager = snapshot(build(str(tmp_path / "b.db"), run).db)
    assert deferred["samples"] and deferred == eager


def test_the_transactions_row_is_the_transaction(tmp_path):
    path = str(tmp_path / "t.db")
    store = Store(path)
    run = store.begin_run(["demo"])
    log = TransactionLog(store, run)
    demo = txs(DEMO)
    for tx in demo:
        log.observe(tx)
    log.finish()
    red = store.redactor
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    rows = con.execute("select * from transactions order by id").fetchall()
    assert len(rows) == len(demo)
    for tx, r in zip(demo, rows):
        j = tx.to_json()
        for k in ("client", "server", "host", "user_agent", "request_content_type", "response_content_type",
                  "protocol", "method", "status_code", "reason", "stream_id"):
            assert r[k] == j[k], k
        assert r["latency"] == tx.latency and r["ts"] == tx.ts and r["flags"] == ",".join(sorted(tx.flags))
        assert r["uri"] == red.uri(tx.uri)
        assert json.loads(r["request_headers"]) == red.headers(tx.request_headers)
        assert json.loads(r["response_headers"]) == red.headers(tx.response_headers)
    con.close()
    store.close()


def _tx(server: str | None = None, status: int = 200, ts: float = 1.0, token: str = "abcdefghijklmnop1234"):
    from sensor.transaction import Transaction

    body = json.dumps({"items": [{"id": 1, "name": "x"}]}).encode()
    headers = (("Content-Type", "application/json"),) + ((("Server", server),) if server else ())
    return Transaction(
        ts=ts, client_ip=b"\x7f\x00\x00\x01", client_port=40000, server_ip=b"\x7f\x00\x00\x02",
        server_port=80, method="GET", uri="/api/items/1",
        request_headers=(("Host", "api.test"), ("Authorization", f"Bearer {token}")),
        status_code=status, response_headers=headers, response_body=body, response_body_len=len(body),
    )


def test_a_quiet_kind_counts_its_findings_and_a_new_banner_is_analysed():
    store = Store(":memory:")
    sink = Findings(store, store.begin_run(["x"]))
    run = [_tx(ts=float(i), token=f"abcdefghijklmnop{i % 10:04d}") for i in range(60)]
    run.append(_tx(server="Apache/2.4.1", ts=100.0))  # a banner that shows up late: analysed
    for t in run:
        sink.observe(t)
    summary = sink.finish()
    assert summary["findings_sampling"]["bodies_skipped"] > 0
    rows = {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in store.db.execute(
        "select detector, location, count, first_seen, last_seen, distinct_values from findings")}
    # found in the analysed transactions, counted for the skipped ones of the kind too, with the
    # hashes of their own tokens (10 distinct tokens, most seen only in skipped transactions, and
    # the last one's)
    assert rows[("posture.cleartext_credentials", "request.header:authorization")] == (61, 0.0, 100.0, 11)
    assert ("disclosure.version_banner", "response.header:server") in rows
    assert header_signature(run[0]) == header_signature(run[-1])  # banners are not in the signature
