"""The dependency map's sink: who calls whom, aggregated during replay and kept in SQLite.

:class:`GraphCollector` receives every Transaction and sensor event.  Per transaction it does
two dict look-ups and a few additions into an in-memory edge keyed by (client IP, raw service
identity); ``flush`` merges these deltas into the tables below and empties memory, so memory
is bounded by what arrives between two flushes (the CLI flushes every 5,000 transactions; the
collector flushes itself past ``max_pending`` edges).  Rows are merged, never replaced: the
tables ACCUMULATE across replays into the same database.

Facts are stored raw (a client by IP, a service by its Host/SNI/``ip:port``); naming them
(:mod:`graph.identity`) happens when the map is built, with all facts known.  ``finish``
writes the resolved map into ``graph_nodes`` and the ``source``/``target`` columns of
``graph_edges`` so that SQL readers see the same names as the pictures.

Schema (version ``GRAPH_SCHEMA_VERSION``, recorded in ``meta`` as ``graph_schema_version``):

``graph_edges`` -- one row per (client_ip, service); primary key (client_ip, service)
    client_ip        TEXT  the caller's address as seen ("127.0.0.10", "::1")
    service          TEXT  raw identity of the callee: Host header (normalised), else TLS SNI,
                           else "ip:port" (see discovery.service.service_name)
    source, target   TEXT  node names after resolution (rewritten by every ``finish``)
    requests         INT   cleartext HTTP transactions
    tls_connections  INT   TLS connections (ClientHellos); their requests are not visible
    tcp_flows        INT   TCP flows that were neither HTTP nor TLS (databases, caches, ...)
    methods          JSON  {"GET": 12, "POST": 3}  (a response without request counts as "?")
    statuses         JSON  {"200": 14, "404": 1}
    errors_4xx, errors_5xx, no_response   INT  responses 400-499, 500-599, and none at all
    latency_count    INT   transactions with a latency (request start -> response start)
    latency_sum      REAL  seconds
    latency_hist     JSON  {"bucket": count}: log buckets, ratio 2**(1/8) (see LATENCY_*);
                           p50/p95 read from it are within 4.5 % of the true quantile
    request_bytes, response_bytes   INT  HTTP body bytes as on the wire (de-chunked)
    tls_bytes, tcp_bytes            INT  TCP payload of TLS / other flows, both directions
    auth             JSON  {"bearer": 40, "none": 2}: request auth scheme (Authorization
                           scheme, "api-key" header, "cookie", or "none")
    first_seen, last_seen   REAL  epoch seconds
    updated_run      INT   the last replay (runs.id) that added to the row

``graph_names`` -- names seen for addresses; primary key (ip, port, name, source)
    ip TEXT, port INT (0 for DNS), name TEXT, source TEXT ("host", "sni" or "dns"),
    count INT, first_seen REAL, last_seen REAL

``graph_nodes`` -- the resolved map's nodes, rewritten by every ``finish``; primary key name
    name TEXT, kind TEXT ("service" if it is called, else "client"),
    addresses JSON (raw identities merged into this node), calls_in INT, calls_out INT,
    first_seen REAL, last_seen REAL, auth JSON (schemes used to call it)

"A call" is one HTTP transaction, one TLS connection, or one other TCP flow.
"""

from __future__ import annotations

import json
import math
import socket
from typing import Any

from discovery.service import normalize_host

from .identity import split_address

GRAPH_SCHEMA_VERSION = 1

LATENCY_MIN = 1e-6  # seconds: bucket 0 holds everything up to 1 µs
LATENCY_RATIO = 2 ** (1 / 8)  # bucket i >= 1 holds (MIN * R**(i-1), MIN * R**i]
LATENCY_BUCKETS = 256  # the last bucket holds everything above ~ 4.3 hours
_INV_LOG_R = 1 / math.log(LATENCY_RATIO)
_SCALE = 1 / LATENCY_MIN
_LAST_BUCKET = LATENCY_BUCKETS - 1
_log = math.log

API_KEY_HEADERS = frozenset(
    ("x-api-key", "api-key", "apikey", "x-auth-token", "x-access-token", "private-token",
     "x-goog-api-key", "x-vault-token")
)

EDGE_COLUMNS: dict[str, type] = {
    "client_ip": str, "service": str, "source": str, "target": str,
    "requests": int, "tls_connections": int, "tcp_flows": int,
    "methods": str, "statuses": str, "errors_4xx": int, "errors_5xx": int, "no_response": int,
    "latency_count": int, "latency_sum": float, "latency_hist": str,
    "request_bytes": int, "response_bytes": int, "tls_bytes": int, "tcp_bytes": int,
    "auth": str, "first_seen": float, "last_seen": float, "updated_run": int,
}
NAME_COLUMNS: dict[str, type] = {
    "ip": str, "port": int, "name": str, "source": str, "count": int, "first_seen": float,
    "last_seen": float,
}
NODE_COLUMNS: dict[str, type] = {
    "name": str, "kind": str, "addresses": str, "calls_in": int, "calls_out": int,
    "first_seen": float, "last_seen": float, "auth": str,
}
_SUMS = ("requests", "tls_connections", "tcp_flows", "errors_4xx", "errors_5xx", "no_response",
         "latency_count", "latency_sum", "request_bytes", "response_bytes", "tls_bytes", "tcp_bytes")
_COUNTERS = ("methods", "statuses", "latency_hist", "auth")  # JSON {key: count}


def ensure_schema(db) -> None:
    """Create (or complete) the graph tables; safe to call on every open."""
    names = set(db.table_names())
    for table, cols, pk in (("graph_edges", EDGE_COLUMNS, ("client_ip", "service")),
                            ("graph_names", NAME_COLUMNS, ("ip", "port", "name", "source")),
                            ("graph_nodes", NODE_COLUMNS, "name")):
        if table in names:
            db[table].add_missing_columns([{k: t() for k, t in cols.items()}])
        else:
            db[table].create(cols, pk=pk, not_null=set(pk) if isinstance(pk, tuple) else {pk})
    if "graph_edges" not in names:
        db["graph_edges"].create_index(["target"])
        db["graph_edges"].create_index(["source"])
    if "meta" in db.table_names():
        db["meta"].upsert({"key": "graph_schema_version", "value": str(GRAPH_SCHEMA_VERSION)}, pk="key")


def latency_bucket(seconds: float) -> int:
    if seconds <= LATENCY_MIN:
        return 0
    return min(int(_log(seconds * _SCALE) * _INV_LOG_R) + 1, LATENCY_BUCKETS - 1)


def latency_quantile(hist: dict, q: float) -> float | None:
    """The ``q`` quantile (0..1) of a latency histogram, in seconds (geometric bucket middle)."""
    items = sorted((int(k), v) for k, v in hist.items() if v)
    total = sum(v for _, v in items)
    if not total:
        return None
    rank = max(1.0, q * total)
    seen = 0
    for b, v in items:
        seen += v
        if seen >= rank:
            if b == 0:
                return LATENCY_MIN
            return LATENCY_MIN * LATENCY_RATIO ** (b - 0.5)
    return LATENCY_MIN * LATENCY_RATIO ** (items[-1][0] - 0.5)


def _ip_text(ip: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(ip) == 4 else socket.AF_INET6, ip)


def _addr_service(ip: bytes, port: int) -> str:
    t = _ip_text(ip)
    return f"[{t}]:{port}" if len(ip) != 4 else f"{t}:{port}"


def _existing(db, table: str, keycols: tuple[str, ...], keys: list[tuple]) -> dict[tuple, dict[str, Any]]:
    """The rows of ``table`` whose key columns are one of ``keys``, by key (batched look-ups)."""
    out: dict[tuple, dict[str, Any]] = {}
    per = max(1, 480 // len(keycols))
    tuple_sql = "(" + ", ".join("?" * len(keycols)) + ")"
    for i in range(0, len(keys), per):
        chunk = keys[i : i + per]
        sql = (f"SELECT * FROM {table} WHERE ({', '.join(keycols)}) IN "
               f"(VALUES {', '.join([tuple_sql] * len(chunk))})")
        cur = db.execute(sql, [v for k in chunk for v in k])
        cols = [d[0] for d in cur.description]
        for r in cur:
            row = dict(zip(cols, r))
            out[tuple(row[c] for c in keycols)] = row
    return out


class _Edge:
    """The deltas of one edge since the last flush."""

    __slots__ = ("requests", "tls_connections", "tcp_flows", "methods", "statuses", "errors_4xx",
                 "errors_5xx", "no_response", "latency_count", "latency_sum", "latency_hist",
                 "request_bytes", "response_bytes", "tls_bytes", "tcp_bytes", "auth", "first_seen",
                 "last_seen")

    def __init__(self) -> None:
        self.requests = self.tls_connections = self.tcp_flows = 0
        self.errors_4xx = self.errors_5xx = self.no_response = self.latency_count = 0
        self.request_bytes = self.response_bytes = self.tls_bytes = self.tcp_bytes = 0
        self.latency_sum = 0.0
        self.methods: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.latency_hist: dict[int, int] = {}
        self.auth: dict[str, int] = {}
        self.first_seen = math.inf
        self.last_seen = -math.inf

    def seen(self, ts: float) -> None:
        if ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts

    def row(self) -> dict[str, Any]:
        r: dict[str, Any] = {k: getattr(self, k) for k in _SUMS}
        for k in _COUNTERS:
            r[k] = {str(a): b for a, b in getattr(self, k).items()}
        r["first_seen"] = None if self.first_seen == math.inf else self.first_seen
        r["last_seen"] = None if self.last_seen == -math.inf else self.last_seen
        return r


def merge_edge_rows(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Sum two edge aggregates (counter columns as dicts).  Returns a new dict."""
    out = dict(a)
    for k in _SUMS:
        out[k] = (a.get(k) or 0) + (b.get(k) or 0)
    for k in _COUNTERS:
        c = dict(a.get(k) or {})
        for kk, v in (b.get(k) or {}).items():
            c[kk] = c.get(kk, 0) + v
        out[k] = c
    firsts = [x for x in (a.get("first_seen"), b.get("first_seen")) if x is not None]
    lasts = [x for x in (a.get("last_seen"), b.get("last_seen")) if x is not None]
    out["first_seen"] = min(firsts) if firsts else None
    out["last_seen"] = max(lasts) if lasts else None
    return out


def decode_edge_row(row: dict[str, Any]) -> dict[str, Any]:
    """A ``graph_edges`` row as read from SQLite, with its JSON columns parsed."""
    r = dict(row)
    for k in _COUNTERS:
        v = r.get(k)
        r[k] = json.loads(v) if isinstance(v, str) and v else (v or {})
    return r


_AUTH_NAME_LENGTHS = frozenset(len(h) for h in (*API_KEY_HEADERS, "authorization", "cookie"))


def auth_scheme(headers) -> str:
    """How a request authenticates, from its headers: "bearer", "basic", ..., "api-key",
    "cookie" or "none".  The value itself is never kept."""
    scheme = "none"
    lengths = _AUTH_NAME_LENGTHS
    for name, value in headers:
        if len(name) not in lengths:  # most header names: no need to lower-case them
            continue
        n = name.lower()
        if n == "authorization":
            return value.strip().split(" ", 1)[0].lower()[:20] or "none"
        if n in API_KEY_HEADERS:
            scheme = "api-key"
        elif n == "cookie" and scheme == "none":
            scheme = "cookie"
    return scheme


class GraphCollector:
    """Sink (see discovery.sink) that maintains the ``graph_*`` tables."""

    def __init__(self, store, run_id: int, max_pending: int = 50_000):
        self.db = store.db
        self.run_id = run_id
        self.max_pending = max_pending
        ensure_schema(self.db)
        self._edges: dict[tuple[bytes, str], _Edge] = {}
        # (ip, port, name, source) -> [count, first_seen, last_seen]
        self._names: dict[tuple[bytes, int, str, str], list] = {}
        # (host header, server ip, server port) -> (service, its names entry or None)
        self._services: dict[tuple, tuple[str, list | None]] = {}
        self._tls_flows: dict[tuple, tuple[bytes, str]] = {}  # open TLS flow -> edge key

    # ---- per transaction: keep it tiny ------------------------------------------------------
    def observe(self, tx) -> None:
        host = None
        for k, v in tx.request_headers:  # tx.host, without lower-casing every header name
            if len(k) == 4 and k.lower() == "host":
                host = v
                break
        skey = (host, tx.server_ip, tx.server_port)
        hit = self._services.get(skey)
        if hit is None:
            hit = self._service_of(skey)
        service, name = hit
        ts = tx.ts
        if name is not None:
            name[0] += 1
            if ts < name[1]:
                name[1] = ts
            if ts > name[2]:
                name[2] = ts
        ekey = (tx.client_ip, service)
        e = self._edges.get(ekey)
        if e is None:
            e = self._edges[ekey] = _Edge()
            if len(self._edges) > self.max_pending or len(self._names) > self.max_pending:
                self.flush()
                self._edges[ekey] = e
        e.requests += 1
        m = tx.method or "?"
        e.methods[m] = e.methods.get(m, 0) + 1
        sc = tx.status_code
        if sc is None:
            e.no_response += 1
        else:
            e.statuses[sc] = e.statuses.get(sc, 0) + 1
            if sc >= 500:
                e.errors_5xx += 1
            elif sc >= 400:
                e.errors_4xx += 1
        tsr = tx.ts_response
        if tsr is not None and tx.method is not None:  # tx.latency
            lat = tsr - ts if tsr > ts else 0.0
            e.latency_count += 1
            e.latency_sum += lat
            b = 0 if lat <= LATENCY_MIN else min(int(_log(lat * _SCALE) * _INV_LOG_R) + 1, _LAST_BUCKET)
            e.latency_hist[b] = e.latency_hist.get(b, 0) + 1
        e.request_bytes += tx.request_body_len_wire
        e.response_bytes += tx.response_body_len_wire
        a = auth_scheme(tx.request_headers)
        e.auth[a] = e.auth.get(a, 0) + 1
        if ts < e.first_seen:
            e.first_seen = ts
        if ts > e.last_seen:
            e.last_seen = ts

    def _service_of(self, skey: tuple) -> tuple[str, list | None]:
        host, ip, port = skey
        named = normalize_host(host, port)
        if named is None:
            hit: tuple[str, list | None] = (_addr_service(ip, port), None)
        else:
            hit = (named, self._name(ip, port, named, "host", None))
        self._services[skey] = hit
        return hit

    def _name(self, ip: bytes, port: int, name: str, source: str, ts: float | None) -> list | None:
        if split_address(name) is not None:
            return None  # an IP literal names nothing
        key = (ip, port, name, source)
        entry = self._names.get(key)
        if entry is None:
            entry = self._names[key] = [0, math.inf, -math.inf]
        if ts is not None:
            entry[0] += 1
            entry[1] = min(entry[1], ts)
            entry[2] = max(entry[2], ts)
        return entry

    # ---- events -----------------------------------------------------------------------------
    def observe_event(self, ev) -> None:
        kind = type(ev).__name__
        if kind == "TLSClientHello":
            service = normalize_host(ev.sni) if ev.sni else None
            if service is None:
                service = _addr_service(ev.server_ip, ev.server_port)
            else:
                self._name(ev.server_ip, ev.server_port, service, "sni", ev.ts)
            e = self._edge(ev.client_ip, service)
            e.tls_connections += 1
            e.seen(ev.ts)
            flows = self._tls_flows
            flows[(ev.client_ip, ev.client_port, ev.server_ip, ev.server_port)] = (ev.client_ip, service)
            if len(flows) > 4 * self.max_pending:  # flows that never ended: forget the oldest
                for k in list(flows)[: len(flows) // 2]:
                    del flows[k]
        elif kind == "DNSAnswer":
            if len(self._names) > self.max_pending:
                self.flush()
            for addr in ev.addresses:
                try:
                    ip = socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)
                except OSError:
                    continue
                self._name(ip, 0, ev.name, "dns", ev.ts)
        elif kind == "FlowSummary":
            if ev.protocol == "tls":
                key = self._tls_flows.pop((ev.client_ip, ev.client_port, ev.server_ip, ev.server_port), None)
                if key is not None:
                    self._edge(*key).tls_bytes += ev.bytes
            elif ev.protocol == "other" and ev.bytes:
                e = self._edge(ev.client_ip, _addr_service(ev.server_ip, ev.server_port))
                e.tcp_flows += 1
                e.tcp_bytes += ev.bytes
                e.seen(ev.ts_start)
                e.seen(ev.ts_end)

    def _edge(self, client_ip: bytes, service: str) -> _Edge:
        e = self._edges.get((client_ip, service))
        if e is None:
            e = self._edges[(client_ip, service)] = _Edge()
        return e

    # ---- SQLite -----------------------------------------------------------------------------
    def flush(self) -> None:
        edges, names = self._edges, self._names
        self._edges, self._names, self._services = {}, {}, {}
        if not edges and not names:
            return
        db = self.db
        with db.conn:
            keyed = {(_ip_text(cip), service): e for (cip, service), e in edges.items()}
            old = _existing(db, "graph_edges", ("client_ip", "service"), list(keyed))
            rows = []
            for (client_ip, service), e in keyed.items():
                row = e.row()
                if (client_ip, service) in old:
                    row = merge_edge_rows(decode_edge_row(old[(client_ip, service)]), row)
                row.update(client_ip=client_ip, service=service, updated_run=self.run_id)
                for k in _COUNTERS:
                    row[k] = json.dumps(row[k], sort_keys=True)
                rows.append(row)
            db["graph_edges"].upsert_all(rows, pk=("client_ip", "service"))
            keyed_names = {(_ip_text(k[0]), *k[1:]): v for k, v in names.items()}
            old = _existing(db, "graph_names", ("ip", "port", "name", "source"), list(keyed_names))
            nrows = []
            for key, (count, first, last) in keyed_names.items():
                firsts = [] if first == math.inf else [first]
                lasts = [] if last == -math.inf else [last]
                prev = old.get(key)
                if prev is not None:
                    count += prev["count"] or 0
                    firsts += [prev["first_seen"]] if prev["first_seen"] is not None else []
                    lasts += [prev["last_seen"]] if prev["last_seen"] is not None else []
                nrows.append({"ip": key[0], "port": key[1], "name": key[2], "source": key[3], "count": count,
                              "first_seen": min(firsts, default=None), "last_seen": max(lasts, default=None)})
            db["graph_names"].upsert_all(nrows, pk=("ip", "port", "name", "source"))

    def finish(self) -> dict[str, Any]:
        self.flush()
        from .build import write_resolved

        n_nodes, n_edges = write_resolved(self.db)
        return {"graph_nodes": n_nodes, "graph_edges": n_edges}
