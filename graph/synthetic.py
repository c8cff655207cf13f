"""A deterministic synthetic microservice estate, for pictures and tests at scale.

``python -m graph.synthetic --db big.db --services 150`` fills a store the way a replay would:
it makes Transaction objects, TLS ClientHellos, DNS answers and TCP flow summaries and feeds
them to :class:`graph.collect.GraphCollector` (the real sink, so the real naming and merging
run), then adds small ``endpoints`` and ``findings`` tables shaped like the inventory's.  The
same seed gives the same database.

The estate: external clients call edge services (gateways, BFFs); each edge service calls
the public API services of a few domains; API services call internal services of their own
domain and a shared platform (auth, config, flags, audit); internal services use their
domain's data stores over plain TCP and some call third parties over TLS.  Services live at
``10.<domain>.<tier>.<n>`` and are called by Host name (a few by address only, named by
DNS), so resolution is exercised too.
"""

from __future__ import annotations

import argparse
import random
import socket
from typing import Any

from sensor.events import DNSAnswer, FlowSummary, TLSClientHello
from sensor.transaction import Transaction

from .collect import GraphCollector

DOMAINS = ("identity", "catalog", "orders", "payments", "shipping", "search", "reviews", "marketing",
           "support", "inventory", "pricing", "notify")
VERBS = ("profile", "session", "ledger", "quote", "export", "sync", "index", "rules", "batch", "audit",
         "archive", "matcher", "router", "tracker", "planner", "scorer", "mailer", "resolver")
STORES = (("postgres", 5432), ("redis", 6379), ("kafka", 9092))
PLATFORM = ("auth", "config", "flags", "audit-log", "rate-limit")
EXTERNAL = ("api.stripe-sandbox.test", "maps.geo-partner.test", "sms.telco.test", "smtp.mailer.test")
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _ip(*parts: int) -> bytes:
    return bytes(parts)


def estate(services: int, seed: int) -> dict[str, Any]:
    """Nodes and call edges (with volumes and error rates) of an estate of ``services`` services."""
    rng = random.Random(seed)
    nodes: dict[str, dict[str, Any]] = {}  # name -> {ip, port, kind}

    def add(name: str, ip: bytes, port: int, kind: str) -> None:
        nodes[name] = {"ip": ip, "port": port, "kind": kind}

    n_domains = max(2, min(len(DOMAINS), round(services / 13)))
    externals = list(EXTERNAL[: 1 if services < 60 else len(EXTERNAL)])
    edge_names = ["api-gateway.edge.internal", "web-bff.edge.internal", "mobile-bff.edge.internal",
                  "partner-api.edge.internal"][: max(1, min(4, services // 30 + 1))]
    for i, n in enumerate(edge_names):
        add(n, _ip(10, 0, 1, 10 + i), 8080, "edge")
    for i, n in enumerate(PLATFORM[: max(1, min(len(PLATFORM), services // 30))]):
        add(f"{n}.platform.internal", _ip(10, 0, 2, 10 + i), 8000, "platform")
    budget = services - len(nodes) - len(externals)
    per = [budget // n_domains + (1 if d < budget % n_domains else 0) for d in range(n_domains)]
    for d, dom in enumerate(DOMAINS[:n_domains]):
        k = per[d]
        n_api = max(1, k // 5)
        n_store = min(len(STORES), max(1, k // 5))
        n_int = max(0, k - n_api - n_store)
        for j in range(n_api):
            add(f"{dom}-api{'' if j == 0 else j + 1}.{dom}.internal", _ip(10, d + 1, 1, 10 + j), 8000, "api")
        verbs = rng.sample(VERBS, min(n_int, len(VERBS)))
        for j in range(n_int):
            v = verbs[j] if j < len(verbs) else f"worker{j}"
            add(f"{dom}-{v}.{dom}.internal", _ip(10, d + 1, 2, 10 + j), 8000, "internal")
        for j in range(n_store):
            s, port = STORES[j]
            add(f"{dom}-{s}.{dom}.internal", _ip(10, d + 1, 3, 10 + j), port, "store")

    def of(kind: str, dom: str | None = None) -> list[str]:
        suffix = f".{dom}.internal" if dom else ""
        return [n for n, v in nodes.items() if v["kind"] == kind and n.endswith(suffix)]

    calls: list[tuple[str, str, int, float, float, str]] = []  # src, dst, n, err4, err5, transport

    def call(src: str, dst: str, lo: int, hi: int, transport: str = "http") -> None:
        n = int(rng.lognormvariate(0, 1) * (lo + hi) / 2)
        n = max(lo, min(hi * 4, n))
        err5 = 0.0 if rng.random() < 0.85 else rng.choice((0.02, 0.08, 0.2))
        err4 = 0.0 if rng.random() < 0.8 else rng.choice((0.01, 0.05, 0.3))
        calls.append((src, dst, n, err4, err5, transport))

    clients = [("198.51.100.7", "web"), ("198.51.100.23", "mobile"), ("203.0.113.40", "partner"),
               ("203.0.113.41", "partner")]
    for ip, kind in clients:
        targets = {"web": ["web-bff.edge.internal", "api-gateway.edge.internal"],
                   "mobile": ["mobile-bff.edge.internal", "api-gateway.edge.internal"],
                   "partner": ["partner-api.edge.internal"]}[kind]
        for t in targets:
            if t in nodes:
                calls.append((ip, t, rng.randint(200, 900), 0.02, 0.0, "http"))
            elif edge_names:
                calls.append((ip, edge_names[0], rng.randint(200, 900), 0.02, 0.0, "http"))
    apis = of("api")
    for i, a in enumerate(apis):  # every API service has at least one edge caller
        call(edge_names[i % len(edge_names)], a, 40, 300)
    for e in edge_names:
        for a in rng.sample(apis, min(len(apis), rng.randint(1, 3))):
            if not any(c[0] == e and c[1] == a for c in calls):
                call(e, a, 40, 300)
    platform = of("platform")
    for dom in DOMAINS[:n_domains]:
        internals = of("internal", dom)
        stores = of("store", dom)
        dom_apis = of("api", dom)
        rng.shuffle(internals)
        for i, t in enumerate(internals):  # every internal service has at least one caller
            call(dom_apis[i % len(dom_apis)], t, 20, 200)
        for a in dom_apis:
            for t in rng.sample(internals, min(len(internals), rng.randint(0, 2))):
                if not any(c[0] == a and c[1] == t for c in calls):
                    call(a, t, 20, 200)
            for p in rng.sample(platform, min(len(platform), rng.randint(1, 2))):
                call(a, p, 50, 400)
        for i, st in enumerate(stores):  # every store has at least one user
            users = internals or dom_apis
            call(users[i % len(users)], st, 10, 80, "tcp")
        for t in internals:
            if stores and rng.random() < 0.5:
                st = rng.choice(stores)
                if not any(c[0] == t and c[1] == st for c in calls):
                    call(t, st, 5, 60, "tcp")
            if rng.random() < 0.2 and len(internals) > 1:
                other = rng.choice([x for x in internals if x != t])
                if not any({c[0], c[1]} == {t, other} for c in calls):
                    call(t, other, 5, 50)
            if rng.random() < 0.08:
                call(t, rng.choice(externals), 3, 30, "tls")
    for x in externals:  # every third party has at least one caller
        if not any(c[1] == x for c in calls):
            call(rng.choice(of("internal") or apis), x, 3, 30, "tls")
    # a couple of cross-domain calls between API services
    for _ in range(max(1, n_domains // 3)):
        a, b = rng.sample(apis, 2)
        if not any(c[0] == b and c[1] == a for c in calls):
            call(a, b, 10, 60)
    for i, x in enumerate(externals):
        nodes[x] = {"ip": _ip(192, 0, 2, 10 + i), "port": 443, "kind": "external"}
    return {"nodes": nodes, "calls": calls}


def populate(store, run_id: int, services: int = 150, seed: int = 7) -> dict[str, Any]:
    """Feed the synthetic estate's traffic through a GraphCollector into ``store``."""
    rng = random.Random(seed * 7919 + 1)
    est = estate(services, seed)
    nodes = est["nodes"]
    sink = GraphCollector(store, run_id)
    by_host_less = {n for n in nodes if nodes[n]["kind"] == "internal" and rng.random() < 0.1}
    ts = T0
    # DNS answers for every internal name (so address-only calls are named)
    for n, v in nodes.items():
        if v["kind"] != "external":
            sink.observe_event(DNSAnswer(ts, _ip(10, 0, 0, 2), _ip(10, 0, 0, 53), n,
                                         (socket.inet_ntop(socket.AF_INET, v["ip"]),)))
    port = 30000
    for src, dst, n, err4, err5, transport in est["calls"]:
        cip = socket.inet_pton(socket.AF_INET, src) if src[0].isdigit() else nodes[src]["ip"]
        d = nodes[dst]
        for _ in range(n):
            ts += rng.expovariate(50.0)
            port = port + 1 if port < 60000 else 30000
            if transport == "tls":
                sink.observe_event(TLSClientHello(ts, cip, port, d["ip"], d["port"], dst, ("h2",)))
                sink.observe_event(FlowSummary(ts, ts + 0.2, cip, port, d["ip"], d["port"], "tls", 12,
                                               rng.randint(3000, 9000), "fin"))
            elif transport == "tcp":
                sink.observe_event(FlowSummary(ts, ts + 0.05, cip, port, d["ip"], d["port"], "other", 8,
                                               rng.randint(200, 4000), "fin"))
            else:
                r = rng.random()
                status = 500 if r < err5 else 404 if r < err5 + err4 else 200
                lat = rng.lognormvariate(-4.5, 0.8)
                host = None if dst in by_host_less else dst
                sink.observe(Transaction(
                    ts=ts, client_ip=cip, client_port=port, server_ip=d["ip"], server_port=d["port"],
                    method="POST" if rng.random() < 0.2 else "GET", uri="/v1/x",
                    request_headers=((("Host", host),) if host else ()) + (("Authorization", "Bearer x"),),
                    status_code=status, ts_response=ts + lat, response_body_len_wire=rng.randint(50, 5000)))
    summary = sink.finish()
    _inventory(store.db, nodes, rng)
    return summary


def _inventory(db, nodes: dict[str, dict], rng: random.Random) -> None:
    """Small ``endpoints``/``findings`` tables like the inventory's (only if absent)."""
    names = db.table_names()
    if "endpoints" not in names:
        db["endpoints"].create({"id": int, "service": str, "method": str, "template": str}, pk="id")
        rows = []
        for n, v in nodes.items():
            if v["kind"] in ("store", "external"):
                continue
            for k in range(rng.randint(2, 14)):
                method = rng.choice(("GET", "POST", "PUT"))
                rows.append({"service": n, "method": method, "template": f"/v1/r{k}"})
        db["endpoints"].insert_all(rows)
    if "findings" not in names:
        db["findings"].create({"id": int, "service": str, "severity": str, "kind": str}, pk="id")
        rows = []
        for n, v in nodes.items():
            if v["kind"] in ("store", "external") or rng.random() > 0.18:
                continue
            sev = rng.choices(("critical", "high", "medium", "low"), (1, 3, 5, 6))[0]
            for _ in range(rng.randint(1, 4)):
                rows.append({"service": n, "severity": sev, "kind": "synthetic"})
        db["findings"].insert_all(rows)


def main(argv: list[str] | None = None) -> None:
    from discovery.store import Store

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--services", type=int, default=150)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    store = Store(a.db)
    run_id = store.begin_run([f"synthetic:{a.services}:{a.seed}"])
    print(populate(store, run_id, a.services, a.seed))
    store.finish_run(run_id, {})
    store.close()


if __name__ == "__main__":
    main()
