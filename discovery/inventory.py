"""The API inventory: every service and endpoint on the wire, what it accepts and returns, how
it authenticates, and what changed.  :class:`Inventory` is a Sink (``discovery.sink``).

How it works
------------
``observe`` does little per transaction: it names the service (``discovery.service``), cuts the
path into its *skeleton* (typed values replaced, ``discovery.templating`` stage 1), and folds
the transaction into an in-memory aggregate keyed by (service, method, skeleton, GraphQL
operation): hits, times, status counts, content types, query/path/form parameters, auth
schemes, a latency histogram, bytes, JSON schemas of a bounded sample of bodies, and one
redacted sample per status.  ``flush`` merges those aggregates into ``observed_paths`` (one
SQLite transaction) and forgets them.  ``finish`` learns the templates of every service the
run touched from *all* its stored skeletons (earlier runs included; templating stage 2), and
rebuilds that service's endpoints and their child tables from the observations, so the
inventory depends on what was seen, not on the order it was seen in or how it was split
into runs.  Every aggregate merge is commutative; body schemas come from every distinct
body (deduplicated by CRC-32) up to ``SCHEMA_DISTINCT`` per endpoint and status, then from
bodies whose CRC-32 is divisible by ``SCHEMA_EVERY`` (a choice that depends on the body, not
on its arrival), so schemas too are order-independent.

Speed (docs/inventory.md "Cost"): the counters are updated for every transaction; what costs
is done once per distinct thing.  A body's own schema is computed once per distinct body
(``SHAPES``, :class:`discovery.schema.ShapeCache`, exact) and folded into the endpoint's
schema at flush, once per distinct shape with its count; a sample is built (redacted) only
for the candidate that wins its slot at flush, and the redacted text of a body is remembered
per body (``Redactor.memo``); auth schemes are remembered per Authorization scheme and JWT
header.  Writes are ``executemany`` of plain SQL.

Bounded memory: at most ``MAX_PATHS`` skeletons per service that were answered as existing,
and ``MAX_PROBE_PATHS`` that were not (404s, ...); past that, transactions that match a known
template are folded into it and the rest are counted (``services.overflow_hits``, and per
client in ``probes.overflow_hits``).  At most ``MAX_SERVICES`` services.

Schema (``inventory_meta.schema_version`` = 1; a column is a public interface)
-------------------------------------------------------------------------------
- ``inventory_meta(key PK, value)``: ``schema_version``; ``rules`` (the stored rules file);
  ``generation`` (bumped when endpoints are rebuilt).
- ``services(id PK, name UNIQUE, first_seen, last_seen, hits, endpoints, probe_hits,
  excluded_hits, static_hits, overflow_hits, created_run)``: a service is a normalised Host
  (``discovery.service``), else ``ip:port``.  Times are ISO-8601 UTC capture times.
- ``service_addresses(service_id FK, address, first_seen, last_seen, hits)``, PK (service_id,
  address): every server ``ip:port`` the service answered on.
- ``observed_paths(id PK, service_id FK, method, path, operation, confirmed, hits, first_seen,
  last_seen, endpoint_id, data)``, UNIQUE (service_id, method, path, operation): the raw
  material; ``path`` is the skeleton (``/users/{int}``), ``confirmed`` = 1 once answered with
  a status that shows the path exists (``CONFIRMING``: 2xx, 3xx, 400, 401, 403, 405, 409, 412,
  415, 422, 5xx), ``data`` the JSON aggregate, ``endpoint_id`` the endpoint it belongs to
  (NULL for probes).  A method on a learned template is an endpoint once it got an answer
  other than 404 or 405 (any but 405 when other methods on the path were refused with 405);
  OPTIONS never makes one (it only shows the path exists).
- ``templates(service_id FK, template, segments, forced)``, PK (service_id, template): the
  learned path templates (``segments``: JSON list, placeholders like ``{int}``, ``{string}``).
- ``endpoints(id PK, service_id FK, method, template, operation, api_type, hits, first_seen,
  last_seen, raw_paths, request_content_types, response_content_types, auth, auth_schemes,
  latency_p50_ms, latency_p90_ms, latency_p95_ms, latency_p99_ms, request_bytes,
  response_bytes, examples, forced, created_run)``, UNIQUE (service_id, method, template,
  operation).  ``operation`` is the GraphQL operation ("" otherwise); ``auth`` the schemes
  by count (JSON), ``auth_schemes`` a readable summary; ``examples`` a few paths as seen
  (sensitive segments redacted, ``discovery/redact.py``); latency
  percentiles come from a histogram with 8 buckets per doubling (about 4 % error).
- ``endpoint_statuses(endpoint_id FK, status_code, count, content_types)``, PK (endpoint_id, status_code);
  ``status_code`` 0 = no response seen; ``content_types`` the response content types with counts.
- ``parameters(id PK, endpoint_id FK, location, name, type, format, types, count, required,
  distinct_values, examples, first_seen, last_seen)``, UNIQUE (endpoint_id, location,
  name): ``location`` path / query / form; ``types`` the value types with counts;
  ``distinct_values`` capped at 100 ("100" means 100 or more); ``examples`` at most 3,
  personal data and secrets redacted (``discovery/redact.py``).
- ``schemas(endpoint_id FK, direction, status_code, schema, bodies)``, PK (endpoint_id,
  direction, status_code): JSON Schema of request (``status_code`` 0) and response bodies.
- ``fields(endpoint_id FK, direction, status_code, path, type, format, required,
  first_seen)``, PK (endpoint_id, direction, status_code, path): the schemas flattened
  (``items[].id``), one row per field.
- ``samples(id PK, endpoint_id FK, status_code, ts, method, uri, request_headers,
  request_body, response_headers, response_body, latency_ms)``: one per status (at most
  ``SAMPLES_PER_ENDPOINT``); URI, headers and bodies (at most ``SAMPLE_BODY`` characters) go
  through the store's redactor (``discovery/redact.py``): credentials, personal data and
  secrets are replaced by redacted forms (``4012********1881``, ``***-**-7855``,
  ``<redacted:email HASH>``), keys, structure and other values kept.  ``observed_paths.data``
  holds the same redacted samples and examples.
- ``probes(service_id FK, client, hits, paths, statuses, examples, first_seen, last_seen,
  overflow_hits)``, PK (service_id, client): requests to paths that never answered as
  existing (a scanner's 404 storm), per client.
- ``assets(service_id FK, kind, extension, hits, bytes, paths, example, first_seen,
  last_seen)``, PK (service_id, kind, extension): static files (images, css, js, fonts,
  media), classified and not counted as endpoints.
- ``changes(id PK, run_id, detected_at, first_seen, kind, service, method, template, name,
  detail)``: ``kind`` one of service, endpoint, parameter, response_field, endpoint_merged;
  ``first_seen`` is the capture time the thing first appeared, ``detected_at`` wall clock.
  Parameters and fields are recorded for endpoints that already existed before the run.
- ``capture_files(fingerprint PK, path, size, run_id, recorded_at)``: what was replayed
  (see :func:`already_replayed`).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import sqlite3
import time
import zlib
from collections import defaultdict
from typing import Any
from urllib.parse import unquote_plus

import orjson

from . import schema as schemalib
from .auth import APIKEY_HEADERS, APIKEY_QUERY, auth_schemes
from .redact import Redactor
from .rules import Rules, ServiceRules, active
from .service import service_name
from .templating import (
    PLACEHOLDERS,
    PathEvidence,
    Skeletonizer,
    Template,
    Templates,
    is_placeholder,
    learn,
    parse_template,
    split_path,
    static_kind,
)

INVENTORY_SCHEMA_VERSION = 1
MAX_SERVICES = 10000
MAX_PATHS = 10000
MAX_PROBE_PATHS = 5000
MAX_QUERY_NAMES = 100
MAX_CLIENTS = 64
DISTINCT_CAP = 100
SCHEMA_DISTINCT = 50
SCHEMA_EVERY = 16
SAMPLES_PER_ENDPOINT = 5
SAMPLE_BODY = 2048
HELD_MAX = 32 << 20  # body bytes of sample candidates kept between flushes (then built at once)
# body bytes -> the body's own schema (schema.shape), shared by every endpoint and run
SHAPES = schemalib.ShapeCache()

# statuses showing the path exists: 2xx, 3xx, 5xx; 401/403 (it is protected), 405 (it exists for
# other methods); 400/409/412/415/422 (the route parsed the request and refused its content)
CONFIRMING = frozenset([*range(200, 400), 400, 401, 403, 405, 409, 412, 415, 422, *range(500, 600)])
PATH_ONLY_METHODS = frozenset(["OPTIONS"])  # evidence that a path exists, never an endpoint by itself
def confirms(tx) -> bool:
    """A CONFIRMING status counts, except a 400 that closes the connection: that is how HTTP
    servers refuse a request they could not parse (a fuzzer's NUL byte in a header), before
    any route was looked at."""
    if tx.status_code != 400:
        return True
    conn = tx.response_header("connection")
    return conn is None or conn.lower() != "close"




def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def format_addr(ip: bytes, port: int) -> str:
    """``b'\\x7f\\0\\0\\x01', 80`` -> ``127.0.0.1:80`` (IPv6 as ``[::1]:80``), as Transaction prints it."""
    if len(ip) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, ip)}:{port}"
    return f"[{socket.inet_ntop(socket.AF_INET6, ip)}]:{port}"


def _now() -> str:
    return iso(time.time())


# ---- value typing (query/path/form values) ---------------------------------------------------

_INT = re.compile(r"-?\d{1,18}\Z")
_NUM = re.compile(r"-?\d+\.\d+([eE][+-]?\d+)?\Z")


def value_type(v: str) -> str:
    if not v:
        return "empty"
    c = v[0]
    if c.isdigit() or c == "-":
        if _INT.match(v):
            return "integer"
        if _NUM.match(v):
            return "number"
    if v in ("true", "false", "True", "False"):
        return "boolean"
    return schemalib.string_format(v) or "string"


# ---- aggregates --------------------------------------------------------------------------------
# Every aggregate is a JSON-able dict; merge(a, b) is commutative and associative.


def loads(text: str | bytes) -> Any:
    """A stored JSON text (orjson; see :func:`discovery.schema.loads`)."""
    return schemalib.loads(text)


def dumps_sorted(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"), sort_keys=True)``, by orjson when it can
    (it refuses lone surrogates and non-string keys: then ``json``)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _crc(s: str) -> int:
    return zlib.crc32(s.encode("utf-8", "surrogatepass"))


def param_add(p: dict | None, name: str, value: str, ts: float, red: Redactor | None = None) -> dict:
    """Fold one value of parameter ``name`` in; an example is stored redacted by ``red``."""
    if p is None:
        p = {"n": 0, "t": {}, "s": ts, "l": ts, "d": [], "e": []}
    p["n"] += 1
    t = value_type(value)
    p["t"][t] = p["t"].get(t, 0) + 1
    if ts < p["s"]:
        p["s"] = ts
    if ts > p["l"]:
        p["l"] = ts
    c = _crc(value)
    d = p["d"]  # the DISTINCT_CAP smallest CRCs of the values: the same set whatever the order
    if len(d) < DISTINCT_CAP or c < d[-1]:
        i = bisect.bisect_left(d, c)
        if i == len(d) or d[i] != c:
            d.insert(i, c)
            del d[DISTINCT_CAP:]
    e = p["e"]
    if len(e) < 3 or c < e[-1][0]:
        if all(x[0] != c for x in e):
            e.append([c, (red or _fallback_redactor()).value(name, value) if value else value])
            e.sort()
            del e[3:]
    return p


def param_merge(a: dict | None, b: dict | None) -> dict | None:
    if a is None:
        return b
    if b is None:
        return a
    d = sorted(set(a["d"]) | set(b["d"]))[:DISTINCT_CAP]
    e = {x[0]: x for x in a["e"] + b["e"]}
    return {
        "n": a["n"] + b["n"],
        "t": _add(a["t"], b["t"]),
        "s": min(a["s"], b["s"]),
        "l": max(a["l"], b["l"]),
        "d": d,
        "e": [e[k] for k in sorted(e)[:3]],
    }


def _add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def _params_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = param_merge(out.get(k), v)
    return out


def schema_acc_merge(a: dict | None, b: dict | None) -> dict | None:
    if a is None:
        return b
    if b is None:
        return a
    first: dict[int, float] = {}
    for c, t in a["seen"] + b["seen"]:
        first[c] = min(t, first.get(c, t))
    seen = [[c, first[c]] for c in sorted(first)[:SCHEMA_DISTINCT]]
    return {
        "schema": schemalib.merge(a["schema"], b["schema"]),
        "bodies": a["bodies"] + b["bodies"],
        "seen": seen,
        "skipped": a["skipped"] + b["skipped"],
        "errors": a["errors"] + b["errors"],
    }


def _sample_merge(a: dict | None, b: dict | None) -> dict | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if (a["score"], a["ts"]) <= (b["score"], b["ts"]) else b


def data_merge(a: dict, b: dict) -> dict:
    """Merge two ``observed_paths.data`` aggregates."""
    out: dict[str, Any] = {}
    for k in ("statuses", "req_ct", "resp_ct", "auth", "lat", "challenges"):
        out[k] = _add(a.get(k, {}), b.get(k, {}))
    clients = _add(a.get("clients", {}), b.get("clients", {}))
    more = a.get("clients_more", 0) + b.get("clients_more", 0)
    if len(clients) > MAX_CLIENTS:
        keep = sorted(clients, key=lambda c: (-clients[c], c))[:MAX_CLIENTS]
        more += sum(v for c, v in clients.items() if c not in keep)
        clients = {c: clients[c] for c in keep}
    out["clients"] = clients
    out["clients_more"] = more
    for k in ("query", "path", "form"):
        out[k] = _params_merge(a.get(k, {}), b.get(k, {}))
    out["query_more"] = a.get("query_more", 0) + b.get("query_more", 0)
    out["req_bytes"] = a.get("req_bytes", 0) + b.get("req_bytes", 0)
    out["resp_bytes"] = a.get("resp_bytes", 0) + b.get("resp_bytes", 0)
    out["req_schema"] = schema_acc_merge(a.get("req_schema"), b.get("req_schema"))
    rs = dict(a.get("resp_schema", {}))
    for k, v in b.get("resp_schema", {}).items():
        rs[k] = schema_acc_merge(rs.get(k), v)
    out["resp_schema"] = rs
    sm = dict(a.get("samples", {}))
    for k, v in b.get("samples", {}).items():
        sm[k] = _sample_merge(sm.get(k), v)
    out["samples"] = sm
    return out


def _normalized(data: dict) -> dict:
    """Make list orders that follow arrival order canonical before storing."""
    for acc in [data.get("req_schema"), *data.get("resp_schema", {}).values()]:
        if acc:
            acc["seen"].sort()  # [crc, first ts] pairs, by crc
    return data


def _lat_bucket(seconds: float) -> int:
    ms = seconds * 1000.0
    return int(math.floor(8 * math.log2(ms))) if ms > 0.001 else -80


def percentile(hist: dict, q: float) -> float | None:
    """Value at quantile q (0..1) of a latency histogram (bucket -> count), in ms."""
    if not hist:
        return None
    items = sorted((int(k), v) for k, v in hist.items())
    total = sum(v for _, v in items)
    rank = q * total
    acc = 0
    for b, v in items:
        acc += v
        if acc >= rank:
            return round(2 ** ((b + 0.5) / 8), 3)
    return round(2 ** ((items[-1][0] + 0.5) / 8), 3)


_STATUS = {}


def _status_key(code: int | None) -> str:
    s = _STATUS.get(code)
    if s is None:
        s = _STATUS[code] = "0" if code is None else str(code)
    return s


_CTYPES: dict[str, str | None] = {}


def _ctype(value: str | None) -> str | None:
    if not value:
        return None
    got = _CTYPES.get(value)
    if got is None:
        got = value.split(";", 1)[0].strip().lower()[:100] or None
        if len(_CTYPES) >= 4096:
            _CTYPES.clear()
        _CTYPES[value] = got
    return got


_LAT_KEYS: dict[float, str] = {}


def _lat_key(seconds: float) -> str:
    """``str(_lat_bucket(seconds))``, remembered per value (latencies repeat at capture clock
    resolution)."""
    got = _LAT_KEYS.get(seconds)
    if got is None:
        got = str(_lat_bucket(seconds))
        if len(_LAT_KEYS) >= 65536:
            _LAT_KEYS.clear()
        _LAT_KEYS[seconds] = got
    return got


_AUTH_MEMO: dict[tuple, list[str]] = {}
_NO_AUTH = ["none"]


def _auth_schemes(req_headers: list, qnames: list[str]) -> list[str]:
    """``auth.auth_schemes(req_headers, qnames, lowered=True)``, remembered per what it depends
    on: a JWT's payload and signature (different in every request) do not change the scheme
    (only its header's ``alg`` does), so they are left out of the memo key."""
    parts = None
    for k, v in req_headers:
        if k == "authorization" or k == "cookie" or k in APIKEY_HEADERS:
            if k == "authorization":
                sch, sp, cred = v.strip().partition(" ")
                if sp and "." not in sch and cred.count(".") == 2:
                    v = f"{sch} {cred[: cred.index('.')]}.x.x"
            elif k != "cookie":
                v = ""
            if parts is None:
                parts = []
            parts.append((k, v))
    if qnames:
        for n in qnames:
            if n.lower() in APIKEY_QUERY:
                if parts is None:
                    parts = []
                parts.append(("?", n))
    if parts is None:
        return _NO_AUTH
    key = tuple(parts)
    got = _AUTH_MEMO.get(key)
    if got is None:
        got = auth_schemes([p for p in parts if p[0] != "?"], [n for k, n in parts if k == "?"], lowered=True)
        if len(_AUTH_MEMO) >= 8192:
            _AUTH_MEMO.clear()
        _AUTH_MEMO[key] = got
    return got


class Obs:
    """In-memory aggregate of one (service, method, skeleton, operation) between flushes."""

    __slots__ = ("hits", "first", "last", "confirmed", "data", "_seen", "_stored", "red", "best", "held",
                 "folds")

    def __init__(self, ts: float, stored=None, red: Redactor | None = None, held: list | None = None):
        """``stored()``: the body CRCs already folded into the database for this key, by
        ``"req"``/status, so a body seen in an earlier flush or run is not counted twice.
        ``red``: what examples and samples go through before they are kept.  ``held``: a
        one-element list counting the body bytes of the transactions kept as sample
        candidates, shared by the sink's aggregates (past ``HELD_MAX`` samples are built at once)."""
        self._stored = stored
        self.red = red or _fallback_redactor()
        self.best: dict[str, list] = {}  # status -> [score, ts, tx or None, sample or None]
        self.folds: dict[str, tuple[dict, dict]] = {}  # "req"/status -> (acc, {id: [shape, n, ts]})
        self.held = held if held is not None else [0]
        self.hits = 0
        self.first = ts
        self.last = ts
        self.confirmed = False
        self.data: dict[str, Any] = {
            "statuses": {},
            "req_ct": {},
            "resp_ct": {},
            "auth": {},
            "lat": {},
            "challenges": {},
            "clients": {},
            "clients_more": 0,
            "query": {},
            "path": {},
            "form": {},
            "query_more": 0,
            "req_bytes": 0,
            "resp_bytes": 0,
            "req_schema": None,
            "resp_schema": {},
            "samples": {},
        }
        self._seen: dict[str, set] = {}

    def add(
        self, tx, query: str, values: tuple, client: str, req_headers: list, req_ctype: str | None
    ) -> None:
        """Fold one transaction in (``req_headers``: its request headers with lower-case names,
        ``req_ctype``: its request Content-Type)."""
        ts = tx.ts
        self.hits += 1
        if ts < self.first:
            self.first = ts
        if ts > self.last:
            self.last = ts
        d = self.data
        code = tx.status_code
        st = _STATUS.get(code) or _status_key(code)
        statuses = d["statuses"]
        statuses[st] = statuses.get(st, 0) + 1
        resp_ct = challenge = None
        if code is not None:
            conn = None
            for k, v in tx.response_headers:
                n = len(k)
                if n == 12 or n == 10 or n == 16:  # content-type, connection, www-authenticate
                    lk = k.lower()
                    if lk == "content-type":
                        if resp_ct is None:
                            resp_ct = v
                    elif lk == "connection":
                        if conn is None:
                            conn = v
                    elif lk == "www-authenticate" and challenge is None:
                        challenge = v
            # confirms(tx): a 400 that closes the connection does not count
            if not self.confirmed and code in CONFIRMING and (code != 400 or conn is None
                                                                  or conn.lower() != "close"):
                self.confirmed = True
        clients = d["clients"]
        if client in clients:
            clients[client] += 1
        elif len(clients) < MAX_CLIENTS:
            clients[client] = 1
        else:
            d["clients_more"] += 1
        req_ct = (_CTYPES.get(req_ctype) or _ctype(req_ctype)) if req_ctype and tx.request_body_len else None
        if req_ct:
            d["req_ct"][req_ct] = d["req_ct"].get(req_ct, 0) + 1
        if resp_ct:
            resp_ct = _CTYPES.get(resp_ct) or _ctype(resp_ct)
            if resp_ct:
                k = st + " " + resp_ct
                d["resp_ct"][k] = d["resp_ct"].get(k, 0) + 1
        d["req_bytes"] += tx.request_body_len
        d["resp_bytes"] += tx.response_body_len
        tsr = tx.ts_response
        if tsr is not None:  # tx.latency (the method is there: only requests come here)
            b = _lat_key(tsr - ts if tsr > ts else 0.0)
            lat = d["lat"]
            lat[b] = lat.get(b, 0) + 1
        # parameters
        qnames: list[str] = []
        if query:
            q = d["query"]
            for part in query.split("&"):
                if not part:
                    continue
                name, _, val = part.partition("=")
                if "%" in name or "+" in name:
                    name = unquote_plus(name)
                if "%" in val or "+" in val:
                    val = unquote_plus(val)
                qnames.append(name)
                p = q.get(name)
                if p is None and len(q) >= MAX_QUERY_NAMES:
                    d["query_more"] += 1
                    continue
                q[name] = param_add(p, name, val, ts, self.red)
        if values:
            pv = d["path"]
            for pos, raw in values:
                k = str(pos)
                pv[k] = param_add(pv.get(k), k, unquote_plus(raw) if "%" in raw else raw, ts, self.red)
        auth = d["auth"]
        for scheme in _auth_schemes(req_headers, qnames):
            auth[scheme] = auth.get(scheme, 0) + 1
        if code == 401:
            ch = challenge
            if ch:
                s = ch.split(" ", 1)[0].lower()[:20]
                d["challenges"][s] = d["challenges"].get(s, 0) + 1
        # bodies
        truncated = "truncated" in tx.flags
        if req_ct and tx.request_body and not truncated:
            if "json" in req_ct:
                d["req_schema"] = self._schema(d["req_schema"], "req", tx.request_body, ts)
            elif req_ct == "application/x-www-form-urlencoded" and len(tx.request_body) <= 65536:
                form = d["form"]
                for part in tx.request_body.decode("latin-1").split("&")[:MAX_QUERY_NAMES]:
                    if part:
                        name, _, val = part.partition("=")
                        name, val = unquote_plus(name), unquote_plus(val)
                        form[name] = param_add(form.get(name), name, val, ts, self.red)
        if resp_ct and tx.response_body and not truncated and "json" in resp_ct:
            rs = d["resp_schema"]
            rs[st] = self._schema(rs.get(st), st, tx.response_body, ts)
        # one sample per status: the one with the smallest score (order-independent).  It is
        # built (redacted) at flush, and only if it beats the stored one: not per transaction
        score = zlib.crc32(tx.request_body[:256], _crc(tx.uri or ""))
        best = self.best
        cur = best.get(st)
        if cur is None or score < cur[0] or (score == cur[0] and ts < cur[1]):
            held = self.held
            if cur is not None and cur[2] is not None:
                held[0] -= len(cur[2].request_body) + len(cur[2].response_body)
            size = len(tx.request_body) + len(tx.response_body)
            if held[0] + size > HELD_MAX:
                best[st] = [score, ts, None, make_sample(tx, score, self.red)]
            else:
                held[0] += size
                best[st] = [score, ts, tx, None]

    def samples(self, stored: dict | None = None) -> dict:
        """``data["samples"]`` with this batch's best candidates built, except those the
        ``stored`` samples (of the database row) beat anyway."""
        out = self.data["samples"]
        held = self.held
        for st, (score, ts, tx, smp) in self.best.items():
            cur = stored.get(st) if stored else None
            if tx is not None:
                held[0] -= len(tx.request_body) + len(tx.response_body)
            if cur is not None and (cur["score"], cur["ts"]) <= (score, ts):
                continue
            out[st] = smp if smp is not None else make_sample(tx, score, self.red)
        self.best = {}
        return out

    def _schema(self, acc: dict | None, key: str, body: bytes, ts: float) -> dict:
        """Fold a JSON body into a schema accumulator.  Each distinct body (CRC-32) is counted
        once; a copy seen earlier in capture time than the one counted only lowers the
        first-seen times, so the result does not depend on arrival order."""
        if acc is None:
            acc = {"schema": None, "bodies": 0, "seen": [], "skipped": 0, "errors": 0}
        seen = self._seen.get(key)
        if seen is None:
            if self._stored is not None and not self._seen:
                for k, v in self._stored().items():
                    self._seen[k] = {c: t for c, t in v}
            seen = self._seen.get(key)
            if seen is None:
                seen = self._seen[key] = {}
            for c, t in acc["seen"]:
                seen[c] = min(t, seen.get(c, t))
        c = zlib.crc32(body)
        count = True
        old = seen.get(c)
        if old is not None:
            if ts >= old:
                return acc
            count = False  # the same body, earlier: only first-seen times move
            seen[c] = ts
            acc["seen"] = [x for x in acc["seen"] if x[0] != c]
            acc["seen"].append([c, ts])
        elif len(seen) < SCHEMA_DISTINCT:
            seen[c] = ts
            acc["seen"].append([c, ts])
        elif c % SCHEMA_EVERY:
            acc["skipped"] += 1
            return acc
        try:
            b = SHAPES.get(body, c)  # the body's own schema, computed once per distinct body
        except ValueError:
            if count:
                acc["errors"] += 1
            return acc
        # folded into acc["schema"] at flush (settle), once per distinct shape with its count
        folds = self.folds.get(key)
        if folds is None:
            folds = self.folds[key] = (acc, {})
        e = folds[1].get(id(b))
        if e is None:
            folds[1][id(b)] = [b, 1 if count else 0, ts]
        else:
            if count:
                e[1] += 1
            if ts < e[2]:
                e[2] = ts
        if count:
            acc["bodies"] += 1
        return acc

    def settle(self, stored: dict | None = None) -> dict:
        """The aggregate as stored: the pending body schemas folded in, this batch's sample
        candidates built (except those the ``stored`` samples of the database row beat)."""
        for acc, entries in self.folds.values():
            node = acc["schema"]
            for b, k, ts in entries.values():
                node = schemalib.fold(node, b, ts, k > 0, k or 1)
            acc["schema"] = node
        self.folds = {}
        self.samples(stored)
        return self.data


# text redacted on this much more than is kept, so that a value cut by the window is still
# recognised (and then cut off) rather than kept in part
SAMPLE_LOOKAHEAD = 1024


def _body_text(body: bytes, ctype: str | None, total: int, red: Redactor) -> str | None:
    """A body as a sample keeps it: redacted, at most ``SAMPLE_BODY`` characters (remembered per
    body bytes, content type and length: the same body is redacted once)."""
    if not body:
        return None
    return red.memo(("sample", body, ctype, total), len(body),
                    lambda: _redacted_body(body, ctype, total, red))


def _redacted_body(body: bytes, ctype: str | None, total: int, red: Redactor) -> str | None:
    ct = ctype or ""
    if "json" in ct:
        try:
            v = schemalib.loads(body[:262144])
            s = red.json_text(v, SAMPLE_BODY)
            return s if len(s) <= SAMPLE_BODY else s[:SAMPLE_BODY] + "…"
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
    window = body[: SAMPLE_BODY + SAMPLE_LOOKAHEAD]
    if ct == "application/x-www-form-urlencoded":
        s = red.query(window.decode("latin-1"))
        return s if len(s) <= SAMPLE_BODY else s[:SAMPLE_BODY] + "…"
    if ct.startswith("text/") or "xml" in ct or "javascript" in ct or "json" in ct or not ct:
        try:
            text = window.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(window) - 3:  # not just a character cut by the window: binary
                return f"<{total} bytes {ct or 'binary'}>"
            text = window[: e.start].decode("utf-8")
        s = red.csv(text) if "csv" in ct else red.text(text)
        return s[:SAMPLE_BODY] + "…" if len(s) > SAMPLE_BODY or len(body) > len(window) else s
    return f"<{total} bytes {ct}>"


def make_sample(tx, score: int, red: Redactor | None = None) -> dict:
    """One transaction as a sample: URI, headers and bodies (at most ``SAMPLE_BODY``) redacted."""
    red = red or _fallback_redactor()
    return {
        "score": score,
        "ts": tx.ts,
        "method": tx.method,
        "status": tx.status_code,
        "uri": red.uri(tx.uri or ""),
        "request_headers": red.headers(tx.request_headers),
        "request_body": _body_text(
            tx.request_body, _ctype(tx.request_header("content-type")), tx.request_body_len, red
        ),
        "response_headers": red.headers(tx.response_headers),
        "response_body": _body_text(
            tx.response_body, _ctype(tx.response_header("content-type")), tx.response_body_len, red
        ),
        "latency_ms": None if tx.latency is None else round(tx.latency * 1000, 3),
    }


# ---- GraphQL -------------------------------------------------------------------------------------

_GQL_OP = re.compile(r"^\s*(query|mutation|subscription)\b\s*([_A-Za-z][_0-9A-Za-z]*)?")


def graphql_operation(tx, path: str, query: str) -> str | None:
    """``"query GetUser"`` for a GraphQL request, None for anything else."""
    if not path.endswith("graphql"):
        return None
    doc = name = None
    if tx.method == "GET" or not tx.request_body:
        for part in query.split("&"):
            k, _, v = part.partition("=")
            if k == "operationName":
                name = unquote_plus(v)
            elif k == "query":
                doc = unquote_plus(v)
    else:
        ct = _ctype(tx.request_header("content-type")) or ""
        if ct == "application/graphql":
            doc = tx.request_body[:65536].decode("utf-8", "replace")
        else:
            try:
                body = json.loads(tx.request_body[:262144])
            except (ValueError, UnicodeDecodeError, RecursionError):
                return "(unparsed)"
            if isinstance(body, list):
                return "(batch)"
            if not isinstance(body, dict):
                return "(unparsed)"
            name = body.get("operationName") if isinstance(body.get("operationName"), str) else None
            doc = body.get("query") if isinstance(body.get("query"), str) else None
    kind = "query"
    if doc:
        m = _GQL_OP.match(doc)
        if m:
            kind = m.group(1)
            name = name or m.group(2)
        elif doc.lstrip().startswith("{"):
            kind = "query"
    if not doc and not name:
        return None
    return f"{kind} {name}" if name else f"{kind} (anonymous)"


# ---- tables ----------------------------------------------------------------------------------------


def ensure_schema(db) -> None:
    """Create the inventory tables (idempotent)."""
    names = set(db.table_names())
    if "inventory_meta" not in names:
        db["inventory_meta"].create({"key": str, "value": str}, pk="key")
        db["inventory_meta"].insert_all(
            [
                {"key": "schema_version", "value": str(INVENTORY_SCHEMA_VERSION)},
                {"key": "generation", "value": "0"},
            ]
        )
    if "services" not in names:
        db["services"].create(
            {
                "id": int,
                "name": str,
                "first_seen": str,
                "last_seen": str,
                "hits": int,
                "endpoints": int,
                "probe_hits": int,
                "excluded_hits": int,
                "static_hits": int,
                "overflow_hits": int,
                "created_run": int,
            },
            pk="id",
            defaults={
                "hits": 0,
                "endpoints": 0,
                "probe_hits": 0,
                "excluded_hits": 0,
                "static_hits": 0,
                "overflow_hits": 0,
            },
        )
        db["services"].create_index(["name"], unique=True)
    if "service_addresses" not in names:
        db["service_addresses"].create(
            {
                "service_id": int,
                "address": str,
                "first_seen": str,
                "last_seen": str,
                "hits": int,
            },
            pk=("service_id", "address"),
            foreign_keys=[("service_id", "services", "id")],
        )
    if "observed_paths" not in names:
        db["observed_paths"].create(
            {
                "id": int,
                "service_id": int,
                "method": str,
                "path": str,
                "operation": str,
                "confirmed": int,
                "hits": int,
                "first_seen": float,
                "last_seen": float,
                "endpoint_id": int,
                "data": str,
            },
            pk="id",
            foreign_keys=[("service_id", "services", "id")],
        )
        db["observed_paths"].create_index(["service_id", "method", "path", "operation"], unique=True)
        db["observed_paths"].create_index(["endpoint_id"])
    if "templates" not in names:
        db["templates"].create(
            {"service_id": int, "template": str, "segments": str, "forced": int},
            pk=("service_id", "template"),
            foreign_keys=[("service_id", "services", "id")],
        )
    if "endpoints" not in names:
        db["endpoints"].create(
            {
                "id": int,
                "service_id": int,
                "method": str,
                "template": str,
                "operation": str,
                "api_type": str,
                "hits": int,
                "first_seen": str,
                "last_seen": str,
                "raw_paths": int,
                "request_content_types": str,
                "response_content_types": str,
                "auth": str,
                "auth_schemes": str,
                "latency_p50_ms": float,
                "latency_p90_ms": float,
                "latency_p95_ms": float,
                "latency_p99_ms": float,
                "request_bytes": int,
                "response_bytes": int,
                "examples": str,
                "forced": int,
                "created_run": int,
            },
            pk="id",
            foreign_keys=[("service_id", "services", "id")],
        )
        db["endpoints"].create_index(["service_id", "method", "template", "operation"], unique=True)
        db["endpoints"].create_index(["last_seen"])
    if "endpoint_statuses" not in names:
        db["endpoint_statuses"].create(
            {"endpoint_id": int, "status_code": int, "count": int, "content_types": str},
            pk=("endpoint_id", "status_code"),
            foreign_keys=[("endpoint_id", "endpoints", "id")],
        )
    if "parameters" not in names:
        db["parameters"].create(
            {
                "id": int,
                "endpoint_id": int,
                "location": str,
                "name": str,
                "type": str,
                "format": str,
                "types": str,
                "count": int,
                "required": int,
                "distinct_values": int,
                "examples": str,
                "first_seen": str,
                "last_seen": str,
            },
            pk="id",
            foreign_keys=[("endpoint_id", "endpoints", "id")],
        )
        db["parameters"].create_index(["endpoint_id", "location", "name"], unique=True)
    if "schemas" not in names:
        db["schemas"].create(
            {"endpoint_id": int, "direction": str, "status_code": int, "schema": str, "bodies": int},
            pk=("endpoint_id", "direction", "status_code"),
            foreign_keys=[("endpoint_id", "endpoints", "id")],
        )
    if "fields" not in names:
        db["fields"].create(
            {
                "endpoint_id": int,
                "direction": str,
                "status_code": int,
                "path": str,
                "type": str,
                "format": str,
                "required": int,
                "first_seen": str,
            },
            pk=("endpoint_id", "direction", "status_code", "path"),
            foreign_keys=[("endpoint_id", "endpoints", "id")],
        )
    if "samples" not in names:
        db["samples"].create(
            {
                "id": int,
                "endpoint_id": int,
                "status_code": int,
                "ts": str,
                "method": str,
                "uri": str,
                "request_headers": str,
                "request_body": str,
                "response_headers": str,
                "response_body": str,
                "latency_ms": float,
            },
            pk="id",
            foreign_keys=[("endpoint_id", "endpoints", "id")],
        )
        db["samples"].create_index(["endpoint_id"])
    if "probes" not in names:
        db["probes"].create(
            {
                "service_id": int,
                "client": str,
                "hits": int,
                "paths": int,
                "statuses": str,
                "examples": str,
                "first_seen": str,
                "last_seen": str,
                "overflow_hits": int,
            },
            pk=("service_id", "client"),
            foreign_keys=[("service_id", "services", "id")],
            defaults={"hits": 0, "paths": 0, "overflow_hits": 0},
        )
    if "assets" not in names:
        db["assets"].create(
            {
                "service_id": int,
                "kind": str,
                "extension": str,
                "hits": int,
                "bytes": int,
                "paths": int,
                "example": str,
                "first_seen": str,
                "last_seen": str,
            },
            pk=("service_id", "kind", "extension"),
            foreign_keys=[("service_id", "services", "id")],
        )
    if "changes" not in names:
        db["changes"].create(
            {
                "id": int,
                "run_id": int,
                "detected_at": str,
                "first_seen": str,
                "kind": str,
                "service": str,
                "method": str,
                "template": str,
                "name": str,
                "detail": str,
            },
            pk="id",
        )
        db["changes"].create_index(["first_seen"])
        db["changes"].create_index(["kind"])
    if "capture_files" not in names:
        db["capture_files"].create(
            {"fingerprint": str, "path": str, "size": int, "run_id": int, "recorded_at": str},
            pk="fingerprint",
        )


def _meta(db, key: str) -> str | None:
    row = db.execute("select value from inventory_meta where key = ?", [key]).fetchone()
    return row[0] if row else None


def _set_meta(db, key: str, value: str) -> None:
    db.execute("insert or replace into inventory_meta(key, value) values (?, ?)", [key, value])


def store_rules(db, text: str) -> None:
    """Store a rules file's text (already validated) as the rules every later run uses."""
    ensure_schema(db)
    with db.conn:
        _set_meta(db, "rules", text)


# ---- capture fingerprints (replaying the same capture twice) --------------------------------------


def file_fingerprint(path: str) -> tuple[str, int]:
    """``(sha256 hex, size)`` of a capture file: its size, first and last 1 MiB and 16 blocks of
    64 KiB spread over it (pcap record headers carry timestamps, so two different captures
    differ in the sampled bytes); reads at most about 3 MiB whatever the file's size."""
    size = os.path.getsize(path)
    h = hashlib.sha256(f"apisensor-capture:{size}:".encode())
    with open(path, "rb") as f:
        if size <= 4 << 20:
            h.update(f.read())
        else:
            h.update(f.read(1 << 20))
            step = (size - (2 << 20)) // 17
            for i in range(1, 17):
                f.seek((1 << 20) + i * step)
                h.update(f.read(65536))
            f.seek(size - (1 << 20))
            h.update(f.read())
    return h.hexdigest(), size


def already_replayed(db, paths: list[str]) -> list[tuple[str, int]]:
    """``[(path, run_id), ...]`` for the capture files in ``paths`` whose content was already
    replayed into this database (by a run that completed).  ``apisensor replay`` refuses to
    count them twice unless ``--force``."""
    if "capture_files" not in db.table_names():
        return []
    out = []
    for p in paths:
        try:
            fp, _ = file_fingerprint(p)
        except OSError:
            continue
        # a run that was interrupted recorded its captures too: _interrupted_with (recorder) says
        # what to do about those
        row = db.execute(
            "select c.run_id from capture_files c left join runs r on r.id = c.run_id "
            "where c.fingerprint = ? and (r.status is null or r.status = 'complete')", [fp]).fetchone()
        if row:
            out.append((p, row[0]))
    return out


def replay_guard(db, paths: list[str], force: bool) -> str | None:
    """The message to print instead of replaying, or None to go ahead."""
    seen = already_replayed(db, paths)
    if not seen or force:
        return None
    listed = ", ".join(f"{p} (run {r})" for p, r in seen)
    if len(seen) == len(paths):
        return f"already replayed into this database: {listed}; nothing counted (use --force to count again)"
    return (
        f"some captures were already replayed into this database: {listed}; replay only the new ones, "
        "or use --force to count all again"
    )


# ---- the sink ------------------------------------------------------------------------------------


class Inventory:
    """Sink building the API inventory (see module doc).

    Samples, parameter examples and example paths are redacted by the store's redactor
    (``store.redactor``, :mod:`discovery.redact`); ``keep_raw_samples=True`` keeps them as seen
    (default: the store's setting, itself ``APISENSOR_KEEP_RAW_SAMPLES``)."""

    def __init__(self, store, run_id: int, rules: Rules | None = None, max_paths: int = MAX_PATHS,
                 max_probe_paths: int = MAX_PROBE_PATHS, keep_raw_samples: bool | None = None):
        self.store = store
        self.db = store.db
        self.run_id = run_id
        self.red = _store_redactor(store, keep_raw_samples)
        ensure_schema(self.db)
        self.rules = rules if rules is not None else active(_meta(self.db, "rules"))
        self.skel: dict[tuple, Skeletonizer] = {}
        self.pending: dict[tuple, Obs] = {}
        self.svc_ids: dict[str, int] = {}
        self.svc_stats: dict[str, dict] = {}
        self.addresses: dict[tuple[str, str], list] = {}
        self.assets: dict[tuple[str, str, str], list] = {}
        self.known: dict[str, dict[tuple, bool]] = {}
        self.counts: dict[str, list[int]] = {}
        self.max_paths = max_paths
        self.max_probe_paths = max_probe_paths
        self.templates: dict[str, Templates | None] = {}
        self.learned_at: dict[str, int] = {}  # confirmed skeletons kept when templates were learned
        self.probe_overflow: dict[tuple[str, str], list] = {}
        self.touched: set[str] = set()
        self.stored_keys: set[tuple] = set()  # keys with a row in observed_paths
        self.name_cache: dict[tuple, str] = {}
        self.client_names: dict[bytes, str] = {}
        self.no_request = 0
        self.services_dropped = 0
        self.held = [0]  # body bytes of the sample candidates the pending aggregates hold

    # -- per transaction --
    def observe(self, tx) -> None:
        method = tx.method
        if method is None or method == "CONNECT":
            self.no_request += 1
            return
        req_headers = [(k.lower(), v) for k, v in tx.request_headers]
        host = req_ct = None
        for k, v in req_headers:
            if k == "host":
                if host is None:
                    host = v
            elif k == "content-type" and req_ct is None:
                req_ct = v
        nkey = (host, tx.server_ip, tx.server_port)
        svc = self.name_cache.get(nkey)
        if svc is None:
            svc = service_name(tx)
            if len(self.name_cache) > 65536:
                self.name_cache.clear()
            self.name_cache[nkey] = svc
        st = self.svc_stats.get(svc)
        if st is None:
            if len(self.svc_stats) + len(self.svc_ids) >= MAX_SERVICES and svc not in self.svc_ids:
                if self._service_count() >= MAX_SERVICES:
                    self.services_dropped += 1
                    return
            st = self.svc_stats[svc] = {
                "hits": 0,
                "first": tx.ts,
                "last": tx.ts,
                "excluded": 0,
                "static": 0,
                "overflow": 0,
            }
            self.touched.add(svc)
        ts = tx.ts
        st["hits"] += 1
        if ts < st["first"]:
            st["first"] = ts
        if ts > st["last"]:
            st["last"] = ts
        akey = (svc, tx.server_ip, tx.server_port)
        a = self.addresses.get(akey)
        if a is None:
            self.addresses[akey] = [1, ts, ts]
        else:
            a[0] += 1
            if ts < a[1]:
                a[1] = ts
            if ts > a[2]:
                a[2] = ts
        uri = tx.uri or ""
        if uri.startswith(("http://", "https://")):
            rest = uri.split("://", 1)[1]
            i = rest.find("/")
            uri = rest[i:] if i >= 0 else "/"
        path, _, query = uri.partition("?")
        path = path.partition("#")[0]
        if not path.startswith("/"):
            path = "/" + path if path != "*" else "*"
        srules = self.rules.for_service(svc)
        if srules.exclude and srules.excluded(path):
            st["excluded"] += 1
            return
        kind = static_kind(path) or ("static" if srules.static and srules.static_path(path) else None)
        if kind is not None:
            st["static"] += 1
            ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
            k = (svc, kind, ext[:10])
            a = self.assets.get(k)
            if a is None:
                self.assets[k] = [1, tx.response_body_len, {path}, path, ts, ts]
            else:
                a[0] += 1
                a[1] += tx.response_body_len
                if len(a[2]) < 1000:
                    a[2].add(path)
                if ts < a[4]:
                    a[4] = ts
                if ts > a[5]:
                    a[5] = ts
            return
        sk = self.skel.get(srules.literal_key)
        if sk is None:  # one per set of literal words (usually one in all), each with a bounded cache
            sk = self.skel[srules.literal_key] = Skeletonizer(srules.literal)
        segs, values = sk(path)
        spath = "/" + "/".join(segs)
        op = graphql_operation(tx, path, query) or ""
        key = (svc, method, spath, op)
        obs = self.pending.get(key)
        if obs is None:
            key, values = self._admit(key, segs, values, tx)
            if key is None:
                return
            obs = self.pending.get(key)
            if obs is None:
                stored = (lambda k=key: self._stored_seen(k)) if key in self.stored_keys else None
                obs = self.pending[key] = Obs(ts, stored, self.red, self.held)
        client = self.client_names.get(tx.client_ip)
        if client is None:
            if len(self.client_names) > 65536:
                self.client_names.clear()
            client = self.client_names[tx.client_ip] = format_addr(tx.client_ip, 0).rsplit(":", 1)[0]
        obs.add(tx, query, values, client, req_headers, req_ct)

    def _service_count(self) -> int:
        row = self.db.execute("select count(*) from services").fetchone()
        return row[0] + len([s for s in self.svc_stats if s not in self.svc_ids])

    def _admit(self, key: tuple, segs: tuple, values: tuple, tx) -> tuple[tuple | None, tuple]:
        """Decide whether a new skeleton may be kept (the caps), else fold it or count it."""
        svc = key[0]
        known = self.known.get(svc)
        if known is None:
            known = self.known[svc] = {}
            counts = self.counts[svc] = [0, 0]
            sid = self._service_id_if_exists(svc)
            if sid is not None:
                for method, path, op, confirmed in self.db.execute(
                    "select method, path, operation, confirmed from observed_paths where service_id = ?",
                    [sid],
                ):
                    known[(svc, method, path, op)] = bool(confirmed)
                    self.stored_keys.add((svc, method, path, op))
                    counts[0 if confirmed else 1] += 1
        counts = self.counts[svc]
        if key in known:
            return key, values
        confirmed = tx.status_code in CONFIRMING and confirms(tx)
        if counts[0 if confirmed else 1] < (self.max_paths if confirmed else self.max_probe_paths):
            known[key] = confirmed
            counts[0 if confirmed else 1] += 1
            return key, values
        # over the cap: fold into a known template, else count.  The first time, learn the
        # templates from everything kept so far (flushing first), so what follows can fold.
        if svc not in self.templates or self.learned_at.get(svc, -1) < counts[0]:
            self.flush()
            sid = self.svc_ids.get(svc)
            self.templates[svc] = (
                learn_service(self.db, sid, self.rules.for_service(svc))[0] if sid is not None else None
            )
            self.learned_at[svc] = counts[0]
        ts = self.templates[svc]
        t = ts.match(segs) if ts is not None else None
        if t is not None:
            tkey = (svc, key[1], "/" + "/".join(t.segments), key[3])
            if tkey not in known:
                known[tkey] = confirmed
            params = {i for i, _, _ in t.params}
            vals = tuple((i, s) for i, s in enumerate(split_path(tx.uri.partition("?")[0])) if i in params)
            return tkey, vals
        st = self.svc_stats.get(svc)
        if st is None:  # flushed above
            st = self.svc_stats[svc] = {"hits": 0, "first": tx.ts, "last": tx.ts, "excluded": 0, "static": 0,
                                        "overflow": 0}
        st["overflow"] += 1
        if not confirmed:
            pk = (svc, tx.client.rsplit(":", 1)[0])
            p = self.probe_overflow.get(pk)
            if p is None:
                self.probe_overflow[pk] = [1, tx.ts, tx.ts]
            else:
                p[0] += 1
                p[1] = min(p[1], tx.ts)
                p[2] = max(p[2], tx.ts)
        return None, values

    def observe_event(self, ev) -> None:
        pass

    def _stored_seen(self, key: tuple) -> dict[str, list]:
        svc, method, path, op = key
        sid = self._service_id_if_exists(svc)
        if sid is None:
            return {}
        row = self.db.execute(
            "select data from observed_paths where service_id = ? and method = ? and path = ? "
            "and operation = ?",
            [sid, method, path, op],
        ).fetchone()
        if row is None:
            return {}
        d = loads(row[0])
        out = {}
        if d.get("req_schema"):
            out["req"] = d["req_schema"]["seen"]
        for st, acc in d.get("resp_schema", {}).items():
            if acc:
                out[st] = acc["seen"]
        return out

    # -- flush --
    def _service_id_if_exists(self, name: str) -> int | None:
        sid = self.svc_ids.get(name)
        if sid is None:
            row = self.db.execute("select id from services where name = ?", [name]).fetchone()
            if row:
                sid = self.svc_ids[name] = row[0]
        return sid

    def _service_id(self, name: str, st: dict) -> int:
        sid = self._service_id_if_exists(name)
        if sid is None:
            cur = self.db.execute(
                "insert into services(name, first_seen, last_seen, hits, endpoints, probe_hits, "
                "excluded_hits, "
                "static_hits, overflow_hits, created_run) values (?, ?, ?, 0, 0, 0, 0, 0, 0, ?)",
                [name, iso(st["first"]), iso(st["last"]), self.run_id],
            )
            sid = self.svc_ids[name] = cur.lastrowid
        return sid

    def flush(self) -> None:
        db = self.db
        with db.conn:
            for name, st in self.svc_stats.items():
                sid = self._service_id(name, st)
                db.execute(
                    "update services set hits = hits + ?, excluded_hits = excluded_hits + ?, "
                    "static_hits = static_hits + ?, overflow_hits = overflow_hits + ?, "
                    "first_seen = min(coalesce(first_seen, ?), ?), last_seen = "
                    "max(coalesce(last_seen, ?), ?) "
                    "where id = ?",
                    [
                        st["hits"],
                        st["excluded"],
                        st["static"],
                        st["overflow"],
                        iso(st["first"]),
                        iso(st["first"]),
                        iso(st["last"]),
                        iso(st["last"]),
                        sid,
                    ],
                )
            for (name, ip, port), (hits, first, last) in self.addresses.items():
                sid = self.svc_ids[name]
                addr = format_addr(ip, port)
                db.execute(
                    "insert into service_addresses(service_id, address, first_seen, last_seen, hits) "
                    "values (?, ?, ?, ?, ?) on conflict(service_id, address) do update set "
                    "hits = hits + excluded.hits, first_seen = min(first_seen, excluded.first_seen), "
                    "last_seen = max(last_seen, excluded.last_seen)",
                    [sid, addr, iso(first), iso(last), hits],
                )
            for (name, kind, ext), (hits, nbytes, paths, _example, first, last) in self.assets.items():
                sid = self.svc_ids[name]
                db.execute(
                    "insert into assets(service_id, kind, extension, hits, bytes, paths, example, "
                    "first_seen, "
                    "last_seen) values (?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict(service_id, kind, "
                    "extension) do "
                    "update set hits = hits + excluded.hits, bytes = bytes + excluded.bytes, "
                    "paths = max(paths, excluded.paths), first_seen = min(first_seen, excluded.first_seen), "
                    "last_seen = max(last_seen, excluded.last_seen)",
                    [
                        sid, kind, ext, hits, nbytes, len(paths), self.red.path(min(paths)), iso(first),
                        iso(last),
                    ],
                )
            for (name, client), (hits, first, last) in self.probe_overflow.items():
                sid = self.svc_ids[name]
                db.execute(
                    "insert into probes(service_id, client, hits, paths, first_seen, last_seen, "
                    "overflow_hits) "
                    "values (?, ?, 0, 0, ?, ?, ?) on conflict(service_id, client) do update set "
                    "overflow_hits = overflow_hits + excluded.overflow_hits",
                    [sid, client, iso(first), iso(last), hits],
                )
            inserts, updates = [], []
            for (name, method, path, op), obs in self.pending.items():
                sid = self.svc_ids[name]
                row = None
                if (name, method, path, op) in self.stored_keys:
                    row = db.execute(
                        "select id, hits, first_seen, last_seen, confirmed, data from observed_paths where "
                        "service_id = ? and method = ? and path = ? and operation = ?",
                        [sid, method, path, op],
                    ).fetchone()
                if row is None:
                    obs.settle(None)
                    inserts.append((sid, method, path, op, int(obs.confirmed), obs.hits, obs.first, obs.last,
                                    dumps_sorted(_normalized(obs.data))))
                else:
                    stored = loads(row[5])
                    obs.settle(stored.get("samples"))
                    data = data_merge(stored, obs.data)
                    updates.append((row[1] + obs.hits, min(row[2], obs.first), max(row[3], obs.last),
                                    int(bool(row[4]) or obs.confirmed), dumps_sorted(_normalized(data)),
                                    row[0]))
            if inserts:
                db.conn.executemany(
                    "insert into observed_paths(service_id, method, path, operation, confirmed, hits, "
                    "first_seen, last_seen, data) values (?, ?, ?, ?, ?, ?, ?, ?, ?)", inserts)
            if updates:
                db.conn.executemany(
                    "update observed_paths set hits = ?, first_seen = ?, last_seen = ?, confirmed = ?, "
                    "data = ? where id = ?", updates)
        self.svc_stats.clear()
        self.addresses.clear()
        self.assets.clear()
        self.probe_overflow.clear()
        self.stored_keys.update(self.pending)
        self.pending.clear()
        self.held[0] = 0
        # services at their cap get interim templates, so later overflow folds into them
        for name, counts in self.counts.items():
            if counts[0] >= self.max_paths or counts[1] >= self.max_probe_paths:
                sid = self.svc_ids.get(name)
                if sid is not None:
                    self.templates[name] = learn_service(db, sid, self.rules.for_service(name))[0]
                    self.learned_at[name] = counts[0]

    def _load_templates(self, svc: str) -> Templates | None:
        sid = self._service_id_if_exists(svc)
        if sid is None:
            return None
        rows = self.db.execute(
            "select segments, forced from templates where service_id = ?", [sid]
        ).fetchall()
        if not rows:
            return None
        from .templating import name_params

        return Templates(
            Template(tuple(json.loads(s)), name_params(tuple(json.loads(s))), bool(f)) for s, f in rows
        )

    # -- finish --
    def finish(self) -> dict[str, Any]:
        self.flush()
        db = self.db
        totals = {"services": 0, "endpoints": 0, "parameters": 0, "response_fields": 0, "merged": 0}
        with db.conn:
            for name in sorted(self.touched):
                sid = self.svc_ids.get(name) or self._service_id_if_exists(name)
                if sid is None:
                    continue
                created = db.execute("select created_run from services where id = ?", [sid]).fetchone()[0]
                if created == self.run_id:
                    first = db.execute("select first_seen from services where id = ?", [sid]).fetchone()[0]
                    _change(db, self.run_id, first, "service", name, None, None, None, None)
                    totals["services"] += 1
                new = materialize(db, sid, name, self.rules.for_service(name), self.run_id, self.red)
                for k in ("endpoints", "parameters", "response_fields", "merged"):
                    totals[k] += new[k]
            _record_captures(db, self.run_id)
            gen = int(_meta(db, "generation") or 0) + 1
            _set_meta(db, "generation", str(gen))
        n_services = db.execute("select count(*) from services").fetchone()[0]
        n_endpoints = db.execute("select count(*) from endpoints").fetchone()[0]
        n_probes = db.execute("select coalesce(sum(hits + overflow_hits), 0) from probes").fetchone()[0]
        new = (
            f"{totals['services']} services, {totals['endpoints']} endpoints, {totals['parameters']} "
            "parameters, "
            f"{totals['response_fields']} response fields"
        )
        out = {"services": n_services, "endpoints": n_endpoints, "new_since_last_run": new}
        if n_probes:
            out["probe_requests"] = n_probes
        return out


def _record_captures(db, run_id: int) -> None:
    if "runs" not in db.table_names():
        return
    row = db.execute("select sources from runs where id = ?", [run_id]).fetchone()
    if not row or not row[0]:
        return
    try:
        paths = json.loads(row[0])
    except ValueError:
        return
    for p in paths:
        try:
            fp, size = file_fingerprint(p)
        except OSError:
            continue
        db.execute(
            "insert or ignore into capture_files(fingerprint, path, size, run_id, recorded_at) "
            "values (?, ?, ?, ?, ?)",
            [fp, os.path.abspath(p), size, run_id, _now()],
        )


def _change(db, run_id, first_seen, kind, service, method, template, name, detail) -> None:
    db.execute(
        "insert into changes(run_id, detected_at, first_seen, kind, service, method, template, name, detail) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, _now(), first_seen, kind, service, method, template, name, detail],
    )


# ---- stage 2 and the endpoint tables ----------------------------------------------------------------


def _evidence(rows) -> dict[tuple[str, ...], PathEvidence]:
    ev: dict[tuple[str, ...], PathEvidence] = {}
    for r in rows:
        if not r["confirmed"]:
            continue
        d = r["data"]
        ok = set()
        for k in d["resp_ct"]:
            st, ct = k.split(" ", 1)
            if int(st) in CONFIRMING:
                ok.add(st[0] + " " + ct)
        keys: set[str] = set()
        for st, acc in d["resp_schema"].items():
            if st[0] == "2" and acc and acc.get("schema"):
                keys |= schemalib.key_paths(acc["schema"])
        segs = tuple(split_path(r["path"]))
        e = PathEvidence(r["hits"], frozenset(ok), frozenset(keys))
        ev[segs] = ev[segs].merge(e) if segs in ev else e
    return ev


def _load_rows(db, sid: int) -> list[dict]:
    rows = []
    for rid, method, path, op, confirmed, hits, first, last, data in db.execute(
        "select id, method, path, operation, confirmed, hits, first_seen, last_seen, data from "
        "observed_paths "
        "where service_id = ?",
        [sid],
    ):
        rows.append(
            {
                "id": rid,
                "method": method,
                "path": path,
                "op": op,
                "confirmed": confirmed,
                "hits": hits,
                "first": first,
                "last": last,
                "data": loads(data),
            }
        )
    return rows


def learn_service(db, sid: int, rules: ServiceRules, rows: list[dict] | None = None):
    """Templates of one service from everything stored for it."""
    if rows is None:
        rows = _load_rows(db, sid)
    ts, mapping = learn(_evidence(rows), rules.force, rules.forbid, rules.literal)
    return ts, mapping, rows


def _path_param(rows: list[dict], pos: int, name: str, red: Redactor | None = None) -> dict | None:
    acc = None
    for r in rows:
        seg = split_path(r["path"])[pos]
        if is_placeholder(seg):
            acc = param_merge(acc, r["data"]["path"].get(str(pos)))
        else:
            v = unquote_plus(seg)
            p = param_add(None, name, v, r["first"], red)
            p["n"] = r["hits"]
            p["t"] = {value_type(v): r["hits"]}
            p["l"] = r["last"]
            acc = param_merge(acc, p)
    return acc


def _dominant(types: dict) -> tuple[str, str | None]:
    """Parameter type and format from value-type counts."""
    kinds = {k: v for k, v in types.items() if k != "empty"}
    if not kinds:
        return "string", None
    if set(kinds) <= {"integer"}:
        return "integer", None
    if set(kinds) <= {"integer", "number"}:
        return "number", None
    if set(kinds) == {"boolean"}:
        return "boolean", None
    fmts = set(kinds) - {"string", "integer", "number", "boolean"}
    if len(kinds) == 1 and fmts:
        return "string", next(iter(fmts))
    return "string", None


def materialize(
    db, sid: int, service: str, rules: ServiceRules, run_id: int, red: Redactor | None = None
) -> dict[str, int]:
    """Rebuild one service's endpoints (and child tables) from its observations; record changes.
    ``red`` redacts the examples it derives (default: a redactor keyed for ``db``'s file)."""
    red = red or _db_redactor(db)
    ts_, mapping, rows = learn_service(db, sid, rules)
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    tmpl_of: dict[str, Template] = {}
    probes: list[dict] = []
    for r in rows:
        segs = tuple(split_path(r["path"]))
        t = mapping.get(segs) if r["confirmed"] else ts_.match(segs)
        if t is None:
            probes.append(r)
            continue
        tmpl_of[t.path] = t
        groups[(r["method"], t.path, r["op"])].append(r)
    endpoints = {}
    refused = {k[1] for k, grp in groups.items() if any("405" in r["data"]["statuses"] for r in grp)}
    for key, grp in groups.items():
        # The path exists (it is a learned template).  The method is an endpoint of it once it
        # got an answer other than 404/405, or any answer but 405 when other methods were
        # refused with 405 (then this one is the route's method: /hidden-basic-auth answers 404
        # on purpose).  An OPTIONS answer (CORS preflight, framework default) proves the path only.
        answers = {st for r in grp for st in r["data"]["statuses"]} - {"0", "405"}
        if key[0] not in PATH_ONLY_METHODS and (answers - {"404"} or (answers and key[1] in refused)):
            endpoints[key] = grp
        else:
            probes.extend(grp)
    old = {
        (m, t, o): eid
        for eid, m, t, o in db.execute(
            "select id, method, template, operation from endpoints where service_id = ?", [sid]
        )
    }
    old_params = defaultdict(set)
    old_fields = defaultdict(set)
    if old:
        for eid, loc, name in db.execute(
            "select p.endpoint_id, p.location, p.name from parameters p join endpoints e on e.id = "
            "p.endpoint_id "
            "where e.service_id = ?",
            [sid],
        ):
            old_params[eid].add((loc, name))
        for eid, st, path in db.execute(
            "select f.endpoint_id, f.status_code, f.path from fields f join endpoints e on e.id = "
            "f.endpoint_id "
            "where e.service_id = ? and f.direction = 'response'",
            [sid],
        ):
            old_fields[eid].add((st, path))
    old_ep_of_row = {
        rid: eid
        for rid, eid in db.execute("select id, endpoint_id from observed_paths where service_id = ?", [sid])
    }
    counts = {"endpoints": 0, "parameters": 0, "response_fields": 0, "merged": 0}
    # children are rebuilt from scratch
    for table in ("endpoint_statuses", "parameters", "schemas", "fields", "samples"):
        db.execute(
            f"delete from {table} where endpoint_id in (select id from endpoints where service_id = ?)", [sid]
        )
    new_ids: dict[tuple, int] = {}
    conn = db.conn
    rows_of: dict[str, list] = {"endpoint_statuses": [], "parameters": [], "schemas": [], "fields": [],
                                "samples": []}
    path_rows: list[tuple[int, int]] = []
    for key in sorted(endpoints):
        method, tpath, op = key
        grp = sorted(endpoints[key], key=lambda r: r["id"])
        t = tmpl_of[tpath]
        row, children = _endpoint_row(t, grp, op, red)
        row["service_id"] = sid
        eid = old.get(key)
        if eid is None:
            row["created_run"] = run_id
            eid = conn.execute(_insert_sql("endpoints", tuple(row)), tuple(row.values())).lastrowid
            counts["endpoints"] += 1
            _change(
                db,
                run_id,
                row["first_seen"],
                "endpoint",
                service,
                method,
                tpath,
                op or None,
                f"{row['hits']} hits, statuses {_status_summary(children['statuses'])}",
            )
        else:
            conn.execute(f"update endpoints set {', '.join(c + ' = ?' for c in row)} where id = ?",
                         (*row.values(), eid))
        new_ids[key] = eid
        for st, n in sorted(children["statuses"].items()):
            cts = children["status_ct"].get(st, {})
            rows_of["endpoint_statuses"].append((eid, int(st), n, json.dumps(dict(sorted(cts.items())))))
        for p in children["parameters"]:
            p["endpoint_id"] = eid
            if key in old and (p["location"], p["name"]) not in old_params[eid]:
                counts["parameters"] += 1
                _change(
                    db,
                    run_id,
                    p["first_seen"],
                    "parameter",
                    service,
                    method,
                    tpath,
                    p["name"],
                    f"{p['location']} parameter, {p['type']}",
                )
        rows_of["parameters"].extend(children["parameters"])
        for s in children["schemas"]:
            s["endpoint_id"] = eid
        rows_of["schemas"].extend(children["schemas"])
        for f in children["fields"]:
            f["endpoint_id"] = eid
            if (
                key in old
                and f["direction"] == "response"
                and (f["status_code"], f["path"]) not in old_fields[eid]
            ):
                counts["response_fields"] += 1
                _change(
                    db,
                    run_id,
                    f["first_seen"],
                    "response_field",
                    service,
                    method,
                    tpath,
                    f["path"],
                    f"status {f['status_code']}, {f['type']}",
                )
        rows_of["fields"].extend(children["fields"])
        for s in children["samples"]:
            s["endpoint_id"] = eid
        rows_of["samples"].extend(children["samples"])
        path_rows.extend((eid, r["id"]) for r in grp)
    # the children of all endpoints, one statement per table (plain sqlite3: no per-row overhead)
    statuses = rows_of.pop("endpoint_statuses")
    if statuses:
        conn.executemany("insert into endpoint_statuses(endpoint_id, status_code, count, content_types) "
                         "values (?, ?, ?, ?)", statuses)
    for table, dicts in rows_of.items():
        by_cols: dict[tuple, list] = {}
        for d in dicts:
            by_cols.setdefault(tuple(d), []).append(tuple(d.values()))
        for cols, values in by_cols.items():
            conn.executemany(_insert_sql(table, cols), values)
    if path_rows:
        conn.executemany("update observed_paths set endpoint_id = ? where id = ?", path_rows)
    # endpoints that no longer exist (merged into a template, or rules changed)
    gone = {k: eid for k, eid in old.items() if k not in new_ids}
    if gone:
        gone_ids = set(gone.values())
        where = {}
        for k, grp in endpoints.items():
            for r in grp:
                oe = old_ep_of_row.get(r["id"])
                if oe in gone_ids:
                    where[oe] = k[1]
        for k, eid in gone.items():
            _change(
                db,
                run_id,
                None,
                "endpoint_merged",
                service,
                k[0],
                k[1],
                k[2] or None,
                f"into {where[eid]}" if eid in where else "no longer an endpoint",
            )
            counts["merged"] += 1
            db.execute("delete from endpoints where id = ?", [eid])
    for r in probes:
        db.execute("update observed_paths set endpoint_id = null where id = ?", [r["id"]])
    # probes per client
    per_client: dict[str, dict] = {}
    for r in probes:
        d = r["data"]
        for client, n in d["clients"].items():
            pc = per_client.setdefault(
                client, {"hits": 0, "paths": set(), "statuses": {}, "first": r["first"], "last": r["last"]}
            )
            pc["hits"] += n
            pc["paths"].add(r["path"])
            pc["first"] = min(pc["first"], r["first"])
            pc["last"] = max(pc["last"], r["last"])
        for client in d["clients"]:
            sts = per_client[client]["statuses"]
            for st, n in d["statuses"].items():
                sts[st] = sts.get(st, 0) + n
    db.execute(
        "update probes set hits = 0, paths = 0, statuses = null, examples = null where service_id = ?", [sid]
    )
    for client, pc in sorted(per_client.items()):
        db.execute(
            "insert into probes(service_id, client, hits, paths, statuses, examples, first_seen, last_seen, "
            "overflow_hits) values (?, ?, ?, ?, ?, ?, ?, ?, 0) on conflict(service_id, client) do update set "
            "hits = excluded.hits, paths = excluded.paths, statuses = excluded.statuses, examples = "
            "excluded.examples, "
            "first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, "
            "excluded.last_seen)",
            [
                sid,
                client,
                pc["hits"],
                len(pc["paths"]),
                json.dumps(pc["statuses"], sort_keys=True),
                json.dumps(sorted(pc["paths"])[:10]),
                iso(pc["first"]),
                iso(pc["last"]),
            ],
        )
    db.execute("delete from probes where service_id = ? and hits = 0 and overflow_hits = 0", [sid])
    # templates
    db.execute("delete from templates where service_id = ?", [sid])
    used = {}
    for _, tpath, _ in endpoints:
        used[tpath] = tmpl_of[tpath]
    for tpath, t in sorted(used.items()):
        db.execute(
            "insert into templates(service_id, template, segments, forced) values (?, ?, ?, ?)",
            [sid, tpath, json.dumps(list(t.segments)), int(t.forced)],
        )
    probe_hits = sum(r["hits"] for r in probes)
    db.execute(
        "update services set endpoints = ?, probe_hits = ? where id = ?", [len(endpoints), probe_hits, sid]
    )
    return counts


def _insert_sql(table: str, cols: tuple) -> str:
    return f"insert into {table} ({', '.join(cols)}) values ({', '.join('?' * len(cols))})"


def _status_summary(statuses: dict) -> str:
    return ", ".join(f"{k}×{v}" for k, v in sorted(statuses.items(), key=lambda kv: int(kv[0])))


def _endpoint_row(t: Template, grp: list[dict], op: str, red: Redactor | None = None) -> tuple[dict, dict]:
    data: dict = {}
    for r in grp:
        data = data_merge(data, r["data"]) if data else r["data"]
    hits = sum(r["hits"] for r in grp)
    first = min(r["first"] for r in grp)
    last = max(r["last"] for r in grp)
    resp_ct: dict[str, int] = {}
    status_ct: dict[str, dict[str, int]] = {}
    for k, v in data["resp_ct"].items():
        st, ct = k.split(" ", 1)
        resp_ct[ct] = resp_ct.get(ct, 0) + v
        status_ct.setdefault(st, {})[ct] = v
    auth = dict(sorted(data["auth"].items(), key=lambda kv: (-kv[1], kv[0])))
    examples = sorted(
        {r["data"]["samples"][s]["uri"].partition("?")[0] for r in grp for s in r["data"]["samples"]}
    )
    row = {
        "method": grp[0]["method"],
        "template": t.path,
        "operation": op,
        "api_type": "graphql" if op else "rest",
        "hits": hits,
        "first_seen": iso(first),
        "last_seen": iso(last),
        "raw_paths": len(grp),
        "request_content_types": json.dumps(dict(sorted(data["req_ct"].items()))),
        "response_content_types": json.dumps(dict(sorted(resp_ct.items()))),
        "auth": json.dumps(auth),
        "auth_schemes": ", ".join(auth),
        "latency_p50_ms": percentile(data["lat"], 0.5),
        "latency_p90_ms": percentile(data["lat"], 0.9),
        "latency_p95_ms": percentile(data["lat"], 0.95),
        "latency_p99_ms": percentile(data["lat"], 0.99),
        "request_bytes": data["req_bytes"],
        "response_bytes": data["resp_bytes"],
        "examples": json.dumps(examples[:5]),
        "forced": int(t.forced),
    }
    params = []
    for pos, name, _ in t.params:
        p = _path_param(grp, pos, name, red)
        if p is not None:
            params.append(_param_row("path", name, p, hits, required=True))
    for loc in ("query", "form"):
        for name, p in sorted(data[loc].items()):
            if p is not None:
                params.append(_param_row(loc, name, p, hits))
    schemas, fields = [], []
    if data["req_schema"] and data["req_schema"].get("schema"):
        acc = data["req_schema"]
        schemas.append(
            {
                "direction": "request",
                "status_code": 0,
                "schema": json.dumps(schemalib.to_json_schema(acc["schema"]), sort_keys=True),
                "bodies": acc["bodies"],
            }
        )
        for f in schemalib.flatten(acc["schema"]):
            fields.append({"direction": "request", "status_code": 0, **_field(f)})
    for st, acc in sorted(data["resp_schema"].items(), key=lambda kv: int(kv[0])):
        if acc and acc.get("schema"):
            schemas.append(
                {
                    "direction": "response",
                    "status_code": int(st),
                    "schema": json.dumps(schemalib.to_json_schema(acc["schema"]), sort_keys=True),
                    "bodies": acc["bodies"],
                }
            )
            for f in schemalib.flatten(acc["schema"]):
                fields.append({"direction": "response", "status_code": int(st), **_field(f)})
    seen_fields: set[tuple] = set()
    unique_fields = []
    for f in fields:  # a key with a dot in it can flatten like a nested one: keep the first
        k = (f["direction"], f["status_code"], f["path"])
        if k not in seen_fields:
            seen_fields.add(k)
            unique_fields.append(f)
    fields = unique_fields
    samples = []
    picked = sorted(data["samples"].items(), key=lambda kv: (int(kv[0]) // 100 != 2, int(kv[0])))
    for st, s in picked[:SAMPLES_PER_ENDPOINT]:
        samples.append(
            {
                "status_code": int(st),
                "ts": iso(s["ts"]),
                "method": s["method"],
                "uri": s["uri"],
                "request_headers": json.dumps(s["request_headers"]),
                "request_body": s["request_body"],
                "response_headers": json.dumps(s["response_headers"]),
                "response_body": s["response_body"],
                "latency_ms": s["latency_ms"],
            }
        )
    return row, {
        "statuses": data["statuses"],
        "status_ct": status_ct,
        "parameters": params,
        "schemas": schemas,
        "fields": fields,
        "samples": samples,
    }


def _field(f: dict) -> dict:
    return {
        "path": f["path"],
        "type": f["type"],
        "format": f["format"],
        "required": int(f["required"]),
        "first_seen": iso(f["first_seen"]),
    }


def _param_row(location: str, name: str, p: dict, hits: int, required: bool | None = None) -> dict:
    typ, fmt = _dominant(p["t"])
    return {
        "location": location,
        "name": name,
        "type": typ,
        "format": fmt,
        "types": json.dumps(dict(sorted(p["t"].items()))),
        "count": p["n"],
        "required": int(required if required is not None else p["n"] >= hits),
        "distinct_values": len(p["d"]),
        "examples": json.dumps([e[1] for e in p["e"]]),
        "first_seen": iso(p["s"]),
        "last_seen": iso(p["l"]),
    }


# ---- redaction ---------------------------------------------------------------------------------


def _store_redactor(store, keep_raw: bool | None) -> Redactor:
    red = getattr(store, "redactor", None)
    if red is None:
        red = _db_redactor(store.db)
    if keep_raw is not None and keep_raw != red.keep_raw:
        red = Redactor(red.hasher, keep_raw=keep_raw)
    return red


def _db_redactor(db) -> Redactor:
    """A redactor keyed for the database file behind ``db`` (its findings' key)."""
    from .detectors.redaction import Hasher
    from .redact import hash_key

    path = ":memory:"
    try:
        for _, name, file in db.execute("PRAGMA database_list").fetchall():
            if name == "main" and file:
                path = file
    except Exception:
        pass
    return Redactor(Hasher(hash_key(path)))


def _fallback_redactor() -> Redactor:
    from .redact import default_redactor

    return default_redactor()


# ---- queries used by other features ------------------------------------------------------------------


class EndpointMatcher:
    """Raw request path -> endpoint id, from the stored templates (cached per generation)."""

    def __init__(self, db):
        self.db = db
        self.generation: str | None = None
        self.by_service: dict[str, tuple[int, Templates, Skeletonizer]] = {}
        self.tables = False  # the inventory tables exist (once they do, they stay)

    def _refresh(self) -> None:
        gen = _meta(self.db, "generation")
        if gen != self.generation:
            self.generation = gen
            self.by_service = {}

    def match(self, service: str, method: str | None, path: str, operation: str | None = None) -> int | None:
        if not self.tables:
            if "inventory_meta" not in self.db.table_names():
                return None
            self.tables = True
        try:
            self._refresh()
        except sqlite3.OperationalError:  # the tables went (a rolled-back run created them)
            self.tables = False
            return None
        entry = self.by_service.get(service)
        if entry is None:
            row = self.db.execute("select id from services where name = ?", [service]).fetchone()
            if row is None:
                return None
            sid = row[0]
            from .templating import name_params

            tpls = [
                Template(tuple(json.loads(s)), name_params(tuple(json.loads(s))), bool(f))
                for s, f in self.db.execute(
                    "select segments, forced from templates where service_id = ?", [sid]
                )
            ]
            entry = self.by_service[service] = (sid, Templates(tpls), Skeletonizer())
        sid, tpls, sk = entry
        raw = path.partition("?")[0].partition("#")[0]
        if raw.startswith(("http://", "https://")):
            rest = raw.split("://", 1)[1]
            i = rest.find("/")
            raw = rest[i:] if i >= 0 else "/"
        segs, _ = sk(raw)
        t = tpls.match(segs)
        if t is None:
            return None
        conds, args = ["service_id = ?", "template = ?"], [sid, t.path]
        if method:
            conds.append("method = ?")
            args.append(method.upper())
        if operation is not None:
            conds.append("operation = ?")
            args.append(operation)
        where = " and ".join(conds)
        row = self.db.execute(
            f"select id from endpoints where {where} order by operation = '' desc, id limit 1", args
        ).fetchone()
        return row[0] if row else None


def match_endpoint(
    db, service: str, method: str | None, path: str, operation: str | None = None
) -> int | None:
    """The id of the endpoint that ``method path`` (a raw path, query allowed) on ``service``
    belongs to, or None.  ``service`` as ``discovery.service.service_name`` names it.  With
    ``method`` None, any method at that template (lowest id); for a GraphQL path without
    ``operation``, the endpoint with the lowest id at that path."""
    m = getattr(db, "_apisensor_endpoint_matcher", None)
    if m is None:
        m = EndpointMatcher(db)
        with contextlib.suppress(AttributeError):
            db._apisensor_endpoint_matcher = m
    return m.match(service, method, path, operation)


def retemplate(db, rules: Rules | None = None, run_id: int | None = None) -> dict[str, int]:
    """Rebuild every service's endpoints from the stored observations (after a rules change)."""
    ensure_schema(db)
    rules = rules if rules is not None else active(_meta(db, "rules"))
    totals = {"endpoints": 0, "parameters": 0, "response_fields": 0, "merged": 0}
    with db.conn:
        for sid, name in db.execute("select id, name from services order by name").fetchall():
            c = materialize(db, sid, name, rules.for_service(name), run_id or 0)
            for k in totals:
                totals[k] += c[k]
        _set_meta(db, "generation", str(int(_meta(db, "generation") or 0) + 1))
    return totals


__all__ = [
    "Inventory",
    "match_endpoint",
    "already_replayed",
    "replay_guard",
    "retemplate",
    "ensure_schema",
    "store_rules",
    "PLACEHOLDERS",
    "parse_template",
]
