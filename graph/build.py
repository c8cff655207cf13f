"""The dependency map as a networkx DiGraph, built from the store; and pure filters over it.

:func:`graph_from_db` reads ``graph_edges`` and ``graph_names`` (written by
:mod:`graph.collect`), names every raw identity (:mod:`graph.identity`), merges raw edges
that land on the same pair of nodes, and adds what the inventory knows when its tables
exist: the number of endpoints per service (``endpoints``) and of findings per severity
(``findings``).  Missing tables or columns only leave those attributes empty.

Node attributes: ``kind`` ("service" or "client"), ``addresses`` (raw identities merged into
the node), ``calls_in``/``calls_out``, ``first_seen``/``last_seen`` (epoch seconds),
``auth`` ({scheme: calls received}), ``auth_schemes`` (sorted names: the inventory's when it
has them, else the wire's), ``transports_in`` (["http", "tls", "tcp"] seen calling it),
``endpoints`` (int or None), ``findings`` ({severity: count}), ``severity`` (the highest, or
None), ``group`` (the domain or subnet, used for clusters); from discovery.actors when its
tables exist: ``risk`` of a service ({"score", "level", "endpoint"}: its riskiest endpoint)
and ``flagged`` of a client (behaviour findings of the actors seen from it).

Edge attributes: ``calls`` (requests + TLS connections + TCP flows), ``requests``,
``tls_connections``, ``tcp_flows``, ``methods``, ``statuses``, ``errors_4xx``, ``errors_5xx``,
``no_response``, ``error_rate_4xx``/``error_rate_5xx`` (of requests, 0..1), ``latency_p50``/
``latency_p95``/``latency_mean`` (seconds or None), ``request_bytes``, ``response_bytes``,
``tls_bytes``, ``tcp_bytes``, ``auth``, ``first_seen``/``last_seen``, ``cleartext`` (HTTP seen
in clear), ``encrypted`` (TLS seen), ``transport`` ("http", "tls", "tcp" or a "+" mix).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import sqlite3
from collections.abc import Iterable
from typing import Any

import networkx as nx

from .collect import decode_edge_row, ensure_schema, latency_quantile, merge_edge_rows
from .identity import Resolver, split_address

SEVERITIES = ("critical", "high", "medium", "low", "info")


def load_edge_rows(db) -> list[dict[str, Any]]:
    if "graph_edges" not in db.table_names():
        return []
    return [decode_edge_row(r) for r in db["graph_edges"].rows]


def load_name_rows(db) -> list[tuple[str, int, str, str, int]]:
    if "graph_names" not in db.table_names():
        return []
    return [tuple(r) for r in db.execute("SELECT ip, port, name, source, count FROM graph_names")]


def resolver_for(edge_rows: Iterable[dict], name_rows) -> Resolver:
    return Resolver(name_rows, {r["service"] for r in edge_rows})


def group_of(name: str) -> str:
    """The cluster a node belongs to: its parent domain, or its /24 (/64) subnet."""
    a = split_address(name)
    if a is not None:
        net = ipaddress.ip_network(f"{a[0]}/{24 if ':' not in a[0] else 64}", strict=False)
        return str(net)
    labels = name.split(":")[0].split(".")
    return ".".join(labels[1:]) if len(labels) >= 3 else ".".join(labels)


def graph_from_rows(edge_rows: list[dict[str, Any]], name_rows) -> nx.DiGraph:
    """The map from raw ``graph_edges`` rows (JSON columns decoded) and ``graph_names`` rows."""
    res = resolver_for(edge_rows, name_rows)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    members: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for r in edge_rows:
        key = (res.client(r["client_ip"]), res.service(r["service"]))
        merged[key] = merge_edge_rows(merged[key], r) if key in merged else dict(r)
        members.setdefault(key, []).append((r["client_ip"], r["service"]))
    G = nx.DiGraph()
    for (src, dst), r in sorted(merged.items()):
        for n in (src, dst):
            if n not in G:
                G.add_node(n, addresses=set(), calls_in=0, calls_out=0, first_seen=None, last_seen=None,
                           auth={})
        G.add_edge(src, dst, **_edge_attrs(r))
        for cip, svc in members[(src, dst)]:
            G.nodes[src]["addresses"].add(cip)
            G.nodes[dst]["addresses"].add(svc)
    for ip, port, name, source, _count in name_rows:
        node = res.service(name) if source != "dns" else None
        if node in G:
            G.nodes[node]["addresses"].add(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    for n, d in G.nodes(data=True):
        d["kind"] = "service" if G.in_degree(n) else "client"
        d["addresses"] = sorted(d["addresses"])
        d["group"] = group_of(n)
        d["endpoints"] = None
        d["findings"] = {}
        d["severity"] = None
        transports = set()
        for _, _, e in G.in_edges(n, data=True):
            d["calls_in"] += e["calls"]
            transports.update(e["transport"].split("+"))
            for k, v in e["auth"].items():
                d["auth"][k] = d["auth"].get(k, 0) + v
        for _, _, e in G.out_edges(n, data=True):
            d["calls_out"] += e["calls"]
        seen = [e[k] for *_, e in (*G.in_edges(n, data=True), *G.out_edges(n, data=True))
                for k in ("first_seen", "last_seen") if e[k] is not None]
        d["first_seen"] = min(seen, default=None)
        d["last_seen"] = max(seen, default=None)
        d["auth_schemes"] = sorted(d["auth"])
        d["transports_in"] = sorted(transports)
    return G


def _edge_attrs(r: dict[str, Any]) -> dict[str, Any]:
    req = r.get("requests") or 0
    tls = r.get("tls_connections") or 0
    tcp = r.get("tcp_flows") or 0
    hist = r.get("latency_hist") or {}
    n_lat = r.get("latency_count") or 0
    transport = "+".join(t for t, n in (("http", req), ("tls", tls), ("tcp", tcp)) if n) or "none"
    return {
        "calls": req + tls + tcp,
        "requests": req,
        "tls_connections": tls,
        "tcp_flows": tcp,
        "methods": dict(sorted((r.get("methods") or {}).items())),
        "statuses": dict(sorted((r.get("statuses") or {}).items())),
        "errors_4xx": r.get("errors_4xx") or 0,
        "errors_5xx": r.get("errors_5xx") or 0,
        "no_response": r.get("no_response") or 0,
        "error_rate_4xx": (r.get("errors_4xx") or 0) / req if req else 0.0,
        "error_rate_5xx": (r.get("errors_5xx") or 0) / req if req else 0.0,
        "latency_p50": latency_quantile(hist, 0.5),
        "latency_p95": latency_quantile(hist, 0.95),
        "latency_mean": (r.get("latency_sum") or 0.0) / n_lat if n_lat else None,
        "request_bytes": r.get("request_bytes") or 0,
        "response_bytes": r.get("response_bytes") or 0,
        "tls_bytes": r.get("tls_bytes") or 0,
        "tcp_bytes": r.get("tcp_bytes") or 0,
        "auth": dict(sorted((r.get("auth") or {}).items())),
        "first_seen": r.get("first_seen"),
        "last_seen": r.get("last_seen"),
        "cleartext": req > 0,
        "encrypted": tls > 0,
        "transport": transport,
    }


# ---- the inventory's tables (owned by discovery; read if present) ------------------------------


def _columns(db, table: str) -> set[str]:
    if table not in db.table_names():
        return set()
    return {c.name for c in db[table].columns}


def _schemes(value: Any) -> list[str]:
    """Auth schemes from an inventory column: a JSON list/dict, or a comma separated string."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, list):
        return [str(v.get("scheme", v.get("type", "")) if isinstance(v, dict) else v) for v in value if v]
    return [str(value)]


def _service_column(db, table: str, cols: set[str]) -> str | None:
    """SQL for the service name of a row of ``table`` (aliased ``t``), whatever shape it has:
    a ``service`` name, a ``service_id`` into ``services``, or a ``host``."""
    if "service" in cols:
        return 't."service"'
    if "service_id" in cols and {"id", "name"} <= _columns(db, "services"):
        return '(SELECT s.name FROM services s WHERE s.id = t.service_id)'
    if "host" in cols:
        return 't."host"'
    return None


def add_inventory(G: nx.DiGraph, db, res: Resolver) -> None:
    """Endpoint counts, findings by severity and auth schemes from the discovery tables,
    whichever of them exist (columns are looked up, not assumed)."""
    cols = _columns(db, "endpoints")
    svc = _service_column(db, "endpoints", cols)
    if svc is not None:
        for n in G:
            G.nodes[n]["endpoints"] = 0
        auth_col = next((c for c in ("auth", "auth_schemes", "auth_scheme") if c in cols), None)
        schemes: dict[str, set[str]] = {}
        sel = f"{svc}, " + (f't."{auth_col}"' if auth_col else "NULL")
        for name, auth in db.execute(f"SELECT {sel} FROM endpoints t"):
            node = res.service(name) if name else None
            if node in G:
                G.nodes[node]["endpoints"] += 1
                schemes.setdefault(node, set()).update(_schemes(auth))
        for node, found in schemes.items():
            if found:  # the inventory's schemes are finer than the wire's ("bearer-jwt:HS256")
                G.nodes[node]["auth_schemes"] = sorted(found)
    cols = _columns(db, "findings")
    svc = _service_column(db, "findings", cols)
    if svc is not None:
        sev = 'lower(t."severity")' if "severity" in cols else "'unknown'"
        sql = f"SELECT {svc}, {sev}, count(*) FROM findings t GROUP BY 1, 2"
        for name, severity, count in db.execute(sql):
            node = res.service(name) if name else None
            if node in G:
                f = G.nodes[node]["findings"]
                s = severity or "unknown"
                f[s] = f.get(s, 0) + count
        for _, d in G.nodes(data=True):
            present = [s for s in SEVERITIES if d["findings"].get(s)]
            d["severity"] = present[0] if present else ("unknown" if d["findings"] else None)
    add_actor_risk(G, db, res)


def add_actor_risk(G: nx.DiGraph, db, res: Resolver) -> None:
    """From discovery.actors' tables, when present: ``risk`` of a service node (its riskiest
    endpoint: {"score", "level", "endpoint"}) and ``flagged`` of a client node (the behaviour
    findings of the actors seen from its addresses, short names)."""
    try:
        from discovery.behaviour import SHORT, endpoint_risk
    except ImportError:
        return
    if {"id", "service_id", "method", "template"} <= _columns(db, "endpoints") and {"id", "name"} <= _columns(
        db, "services"
    ):
        try:
            risk = endpoint_risk(db)
        except sqlite3.Error:  # tables of another shape: no risk on the map
            risk = {}
        for eid, name, method, template in db.execute(
            "SELECT e.id, s.name, e.method, e.template FROM endpoints e "
            "JOIN services s ON s.id = e.service_id"
        ):
            r = risk.get(eid)
            node = res.service(name) if name else None
            if not r or not r["score"] or node not in G:
                continue
            best = G.nodes[node].get("risk")
            if best is None or r["score"] > best["score"]:
                G.nodes[node]["risk"] = {"score": r["score"], "level": r["level"],
                                         "endpoint": f"{method} {template}"}
    if {"addresses", "findings"} <= _columns(db, "actors"):
        by_addr: dict[str, set[str]] = {}
        for addrs, found in db.execute("SELECT addresses, findings FROM actors WHERE findings != '[]'"):
            for a in json.loads(addrs or "[]"):
                by_addr.setdefault(a, set()).update(SHORT.get(f, f) for f in json.loads(found or "[]"))
        if by_addr:
            for n, d in G.nodes(data=True):
                if d.get("kind") != "client":
                    continue
                got = set().union(*(by_addr.get(a, set()) for a in [n, *d.get("addresses", [])]))
                if got:
                    d["flagged"] = sorted(got)


def graph_from_db(db, inventory: bool = True) -> nx.DiGraph:
    edges = load_edge_rows(db)
    names = load_name_rows(db)
    G = graph_from_rows(edges, names)
    if inventory:
        add_inventory(G, db, resolver_for(edges, names))
    return G


def write_resolved(db) -> tuple[int, int]:
    """Rewrite ``graph_nodes`` and ``graph_edges.source/target`` from all facts so far."""
    ensure_schema(db)
    edges = load_edge_rows(db)
    names = load_name_rows(db)
    res = resolver_for(edges, names)
    G = graph_from_rows(edges, names)
    with db.conn:
        db.conn.executemany(
            "UPDATE graph_edges SET source = ?, target = ? WHERE client_ip = ? AND service = ?",
            [(res.client(r["client_ip"]), res.service(r["service"]), r["client_ip"], r["service"])
             for r in edges])
        db.execute("DELETE FROM graph_nodes")
        db["graph_nodes"].insert_all(
            ({"name": n, "kind": d["kind"], "addresses": json.dumps(d["addresses"]),
              "calls_in": d["calls_in"], "calls_out": d["calls_out"], "first_seen": d["first_seen"],
              "last_seen": d["last_seen"], "auth": json.dumps(d["auth"], sort_keys=True)}
             for n, d in G.nodes(data=True)), pk="name")
    return G.number_of_nodes(), G.number_of_edges()


# ---- pure filters -----------------------------------------------------------------------------


def min_calls(G: nx.DiGraph, n: int) -> nx.DiGraph:
    """Drop edges with fewer than ``n`` calls, then the nodes left without any edge."""
    if n <= 1:
        return G.copy()
    H = G.copy()
    H.remove_edges_from([(u, v) for u, v, c in G.edges(data="calls") if c < n])
    H.remove_nodes_from([v for v in list(H) if H.degree(v) == 0])
    return H


def find_node(G: nx.DiGraph, query: str) -> str:
    """The node called ``query``: exact, then case-insensitive, then a unique substring or
    raw address.  Raises KeyError with suggestions."""
    if query in G:
        return query
    q = query.lower()
    exact = [n for n in G if n.lower() == q or q in G.nodes[n].get("addresses", ())]
    if len(exact) == 1:
        return exact[0]
    part = [n for n in G if q in n.lower()]
    if len(part) == 1:
        return part[0]
    options = sorted(part) or difflib.get_close_matches(query, list(G), n=5, cutoff=0.4)
    hint = f" (did you mean: {', '.join(options[:8])}?)" if options else ""
    raise KeyError(f"no single node matches {query!r}{hint}")


def neighbourhood(G: nx.DiGraph, service: str, depth: int = 1) -> nx.DiGraph:
    """The subgraph of nodes within ``depth`` hops of ``service``, following edges either way."""
    center = find_node(G, service)
    near = nx.single_source_shortest_path_length(G.to_undirected(as_view=True), center, cutoff=max(0, depth))
    H = G.subgraph(near).copy()
    H.graph["focus"] = center
    return H
