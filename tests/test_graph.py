"""The dependency map from real captures into real SQLite: the edges must be exactly the ones the
callers made (tests/data/graph/mesh.json, written by tests/captures/graph/make_mesh.py)."""

from __future__ import annotations

import json
import os
import socket

import pytest
from conftest import DATA, PCAPS

from discovery.store import Store
from graph.build import graph_from_db, min_calls, neighbourhood
from graph.collect import GraphCollector
from sensor.events import DNSAnswer, FlowSummary, TLSClientHello
from sensor.pipeline import Pipeline
from sensor.sources import merge, open_files
from sensor.transaction import Transaction

MESH = os.path.join(DATA, "graph", "mesh.pcap")
DEMO = os.path.join(PCAPS, "demo.pcap")
COMPARED = ("requests", "tls_connections", "tcp_flows", "methods", "statuses", "errors_4xx", "errors_5xx")


def replay(db_path: str, *pcaps: str) -> dict:
    store = Store(db_path)
    run_id = store.begin_run(list(pcaps))
    sink = GraphCollector(store, run_id)
    p = Pipeline(sink.observe, on_event=sink.observe_event)
    p.run(merge(open_files(list(pcaps))))
    p.finish()
    summary = sink.finish()
    store.close()
    return summary


def load(db_path: str):
    store = Store(db_path)
    try:
        return graph_from_db(store.db)
    finally:
        store.close()


@pytest.fixture(scope="module")
def truth() -> dict:
    with open(os.path.join(DATA, "graph", "mesh.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def mesh_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("mesh") / "mesh.db")
    replay(path, MESH)
    return path


def edges_of(G) -> dict:
    return {(u, v): {k: d[k] for k in COMPARED} for u, v, d in G.edges(data=True)}


def truth_edges(truth: dict, times: int = 1) -> dict:
    out = {}
    for e in truth["edges"]:
        out[(e["source"], e["target"])] = {
            k: ({kk: vv * times for kk, vv in e[k].items()} if isinstance(e[k], dict) else e[k] * times)
            for k in COMPARED}
    return out


def test_mesh_capture_is_small_and_real():
    assert os.path.getsize(MESH) < 1_000_000
    with open(MESH, "rb") as f:
        assert f.read(4) in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")


def test_mesh_capture_yields_exactly_the_true_edge_list(mesh_db, truth):
    G = load(mesh_db)
    got, want = edges_of(G), truth_edges(truth)
    assert sorted(got) == sorted(want)  # the same edges, named the same way
    for key, counts in want.items():
        assert got[key] == counts, key
    assert sum(d["calls"] for *_, d in G.edges(data=True)) == truth["calls"]


def test_mesh_chains_join_through_services_that_also_call(mesh_db):
    G = load(mesh_db)
    # edge.mesh.test is both called (by the clients) and a caller: one node, not an IP
    assert "127.0.0.30" not in G
    assert G.in_degree("edge.mesh.test") == 2 and G.out_degree("edge.mesh.test") == 5
    assert list(G.successors("reviews.mesh.test")) == ["ratings.mesh.test"]
    assert G.nodes["127.0.0.40"]["kind"] == "client" and G.nodes["reviews.mesh.test"]["kind"] == "service"


def test_mesh_encrypted_and_non_http_edges(mesh_db):
    G = load(mesh_db)
    tls = G.edges["edge.mesh.test", "billing.mesh.test"]
    assert (tls["transport"], tls["encrypted"], tls["cleartext"], tls["requests"]) == ("tls", True, False, 0)
    assert tls["tls_bytes"] > 0
    tcp = G.edges["catalog.mesh.test", "cache.mesh.test:6379"]
    assert tcp["transport"] == "tcp" and tcp["tcp_bytes"] > 0
    http = G.edges["edge.mesh.test", "catalog.mesh.test"]
    assert http["cleartext"] and not http["encrypted"]
    assert 0 < http["latency_p50"] <= http["latency_p95"] < 1.0
    assert http["auth"] == {"bearer": 38}
    # HTTP/1.0 without a Host header: still pricing, by the name seen at its address
    assert G.edges["batch.mesh.test", "pricing.mesh.test"]["auth"] == {"none": 5}


def test_tables_are_written_and_resolved(mesh_db, truth):
    import sqlite3

    con = sqlite3.connect(mesh_db)
    rows = con.execute("SELECT source, target, sum(requests + tls_connections + tcp_flows) FROM graph_edges "
                       "GROUP BY 1, 2").fetchall()
    assert {(s, t) for s, t, _ in rows} == {(e["source"], e["target"]) for e in truth["edges"]}
    nodes = dict(con.execute("SELECT name, kind FROM graph_nodes").fetchall())
    assert nodes["edge.mesh.test"] == "service" and nodes["batch.mesh.test"] == "client"
    dns = con.execute("SELECT name FROM graph_names WHERE source = 'dns' AND ip = '127.0.0.42'").fetchall()
    assert dns == [("batch.mesh.test",)]
    assert con.execute("SELECT value FROM meta WHERE key = 'graph_schema_version'").fetchone() == ("1",)


def test_replays_accumulate(tmp_path, truth):
    db = str(tmp_path / "twice.db")
    first = replay(db, MESH)
    second = replay(db, MESH)
    nodes = {n for e in truth["edges"] for n in (e["source"], e["target"])}
    assert first == second == {"graph_nodes": len(nodes), "graph_edges": len(truth["edges"])}
    got, want = edges_of(load(db)), truth_edges(truth, times=2)
    assert got == want


def test_demo_capture_map(tmp_path):
    db = str(tmp_path / "demo.db")
    replay(db, DEMO)
    G = load(db)
    assert sorted(G.edges) == sorted([
        ("127.0.0.100", "gateway.shop.local"), ("127.0.0.101", "gateway.shop.local"),
        ("127.0.0.102", "inventory.shop.local"), ("gateway.shop.local", "inventory.shop.local"),
        ("gateway.shop.local", "orders.shop.local"), ("gateway.shop.local", "payments.shop.local"),
        ("gateway.shop.local", "users.shop.local")])
    assert G.edges["gateway.shop.local", "payments.shop.local"]["tls_connections"] == 15
    assert G.edges["127.0.0.102", "inventory.shop.local"]["errors_4xx"] == 19
    assert sum(d["requests"] for *_, d in G.edges(data=True)) == 285


def test_filters(mesh_db):
    G = load(mesh_db)
    H = min_calls(G, 10)
    assert all(c >= 10 for *_, c in H.edges(data="calls"))
    assert ("edge.mesh.test", "127.0.0.37:9000") not in H.edges and "127.0.0.37:9000" not in H
    assert "batch.mesh.test" not in H  # both its edges are below 10 calls: the node goes too
    N = neighbourhood(G, "reviews", 1)
    assert set(N) == {"edge.mesh.test", "reviews.mesh.test", "ratings.mesh.test"}
    assert N.graph["focus"] == "reviews.mesh.test"
    assert set(neighbourhood(G, "127.0.0.34:80", 0)) == {"ratings.mesh.test"}  # by address
    assert "127.0.0.40" in neighbourhood(G, "ratings.mesh.test", 3)
    with pytest.raises(KeyError, match="did you mean"):
        neighbourhood(G, "mesh", 1)  # matches many: ambiguous


def test_inventory_tables_are_optional_and_adapted(tmp_path):
    import shutil

    db = str(tmp_path / "inv.db")
    replay(db, MESH)
    G = load(db)
    assert G.nodes["catalog.mesh.test"]["endpoints"] is None
    assert G.nodes["catalog.mesh.test"]["findings"] == {}
    # the inventory's shape: endpoints -> services by id; findings by service name with a severity
    store = Store(db)
    store.db["services"].insert_all(
        [{"id": 1, "name": "catalog.mesh.test"}, {"id": 2, "name": "127.0.0.32:80"}], pk="id")
    store.db["endpoints"].insert_all([
        {"service_id": 1, "method": "GET", "template": "/items/{int}",
         "auth": json.dumps({"bearer-jwt:HS256": 3})},
        {"service_id": 1, "method": "GET", "template": "/health", "auth": json.dumps({"none": 1})},
        {"service_id": 2, "method": "GET", "template": "/prices/{int}", "auth": None}])
    store.db["findings"].insert_all([
        {"service": "pricing.mesh.test", "severity": "HIGH", "kind": "stack-trace"},
        {"service": "pricing.mesh.test", "severity": "low", "kind": "banner"},
        {"service": "127.0.0.32:80", "severity": "medium", "kind": "banner"}])
    store.close()
    G = load(db)
    cat, pri = G.nodes["catalog.mesh.test"], G.nodes["pricing.mesh.test"]
    assert cat["endpoints"] == 2 and cat["auth_schemes"] == ["bearer-jwt:HS256", "none"]
    assert pri["endpoints"] == 1  # "127.0.0.32:80" (no Host) is pricing
    assert pri["findings"] == {"high": 1, "low": 1, "medium": 1} and pri["severity"] == "high"
    assert G.nodes["edge.mesh.test"]["endpoints"] == 0 and G.nodes["edge.mesh.test"]["severity"] is None
    # a findings table without a severity column still counts
    db2 = str(tmp_path / "inv2.db")
    shutil.copy(db, db2)
    store = Store(db2)
    store.db["findings"].drop()
    store.db["findings"].insert_all([{"host": "catalog.mesh.test", "what": "x"}])
    store.close()
    assert load(db2).nodes["catalog.mesh.test"]["findings"] == {"unknown": 1}


def _tx(client: str, server: str, port: int, host: str | None, status: int = 200, ts: float = 1.0):
    headers = (("Host", host),) if host else ()
    return Transaction(ts=ts, client_ip=socket.inet_aton(client), client_port=40000,
                       server_ip=socket.inet_aton(server), server_port=port, method="GET", uri="/",
                       request_headers=headers, status_code=status, ts_response=ts + 0.01)


def test_memory_is_bounded_by_flushes(tmp_path):
    store = Store(str(tmp_path / "b.db"))
    sink = GraphCollector(store, store.begin_run([]), max_pending=100)
    for i in range(1000):  # 1000 distinct clients
        sink.observe(_tx(f"10.1.{i // 250}.{i % 250}", "10.0.0.1", 80, "api.test", ts=float(i)))
        assert len(sink._edges) <= 101
    for i in range(500):
        answer = DNSAnswer(float(i), b"\x0a\0\0\x02", b"\x0a\0\0\x35", f"n{i}.test", (f"10.9.0.{i % 250}",))
        sink.observe_event(answer)
        assert len(sink._names) <= 101
    sink.finish()
    assert store.db["graph_edges"].count == 1000
    assert store.db.execute("SELECT sum(requests) FROM graph_edges").fetchone()[0] == 1000
    assert store.db["graph_names"].count == 501  # 500 DNS names + api.test at 10.0.0.1:80
    assert not sink._edges and not sink._names


def test_tls_without_sni_is_named_by_dns(tmp_path):
    store = Store(str(tmp_path / "t.db"))
    sink = GraphCollector(store, store.begin_run([]))
    c, s = socket.inet_aton("10.0.0.5"), socket.inet_aton("10.0.0.9")
    sink.observe_event(DNSAnswer(1.0, c, b"\x0a\0\0\x35", "vault.corp.test", ("10.0.0.9",)))
    sink.observe_event(TLSClientHello(2.0, c, 5555, s, 8200, None))
    sink.observe_event(TLSClientHello(3.0, c, 5556, s, 443, None))
    sink.observe_event(FlowSummary(2.0, 2.5, c, 5555, s, 8200, "tls", 10, 4000, "fin"))
    sink.observe_event(FlowSummary(4.0, 4.5, c, 7000, s, 5432, "unknown", 2, 0, "rst"))  # no payload: no edge
    sink.finish()
    G = graph_from_db(store.db)
    assert sorted(G.edges) == [("10.0.0.5", "vault.corp.test"), ("10.0.0.5", "vault.corp.test:8200")]
    assert G.edges["10.0.0.5", "vault.corp.test:8200"]["tls_bytes"] == 4000
    assert G.nodes["vault.corp.test:8200"]["first_seen"] == 2.0
