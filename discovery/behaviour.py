"""Behaviour analysis: chains of calls that no single request reveals, and endpoint risk.

:func:`analyse` is pure: per-actor aggregates in (one :class:`Agg` per actor and endpoint),
:class:`Verdict` objects out.  :func:`analyse_db` loads the aggregates of every run from the
``actor_endpoints`` table (written by :class:`discovery.actors.Actors`), runs :func:`analyse`
and writes each verdict as a ``findings`` row (detector ``behaviour.*``, location
``actor:<id>``, so ``apisensor findings`` and ``--fail-on`` see them) with its chain of calls
in ``actor_findings`` and marks on the calls in ``actor_calls``.

Every threshold is relative to the *peers*: for a metric of one endpoint, the other actors
that called it (when there are at least ``min_peers`` of them), else every other actor of the
service (those that never called it count as 0).  The baseline is the ``peer_quantile`` (p75)
of the peers' values, at least 1; an actor is flagged when its value is at least
``max(minimum, ratio x baseline)``.  Findings that only make sense against a population
(enumeration, data export, admin endpoints) need ``min_peers`` peers; brute force and scanning
also count on their own (the absolute minimum).  docs/actors.md lists every setting.

:func:`endpoint_risk` scores each endpoint 0..100 from exposure (2xx answers to requests
without credentials), sensitive data in responses, error disclosure and behaviour findings.
"""

from __future__ import annotations

import gc
import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

API1 = "API1:2023 Broken Object Level Authorization"
API2 = "API2:2023 Broken Authentication"
API3 = "API3:2023 Broken Object Property Level Authorization"
API4 = "API4:2023 Unrestricted Resource Consumption"
API5 = "API5:2023 Broken Function Level Authorization"
API8 = "API8:2023 Security Misconfiguration"
API9 = "API9:2023 Improper Inventory Management"

SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
READ_METHODS = frozenset({"GET", "HEAD"})
ADMIN_SEGMENT = re.compile(
    r"^_?(?:admin|admins|administrator|administration|internal|manage|management|backoffice|back-office|"
    r"staff|superuser|sudo|sysadmin|debug|actuator|console|maintenance|impersonate|root)$",
    re.IGNORECASE,
)


@dataclass
class Settings:
    """Thresholds of the behaviour analysis (stored in ``actor_settings``; see docs/actors.md)."""

    session_idle: float = 1800.0  # seconds of silence that end a session
    ratio: float = 5.0  # flagged at ratio x the peers' baseline ...
    peer_quantile: float = 0.75  # ... the baseline being this quantile of the peers' values (>= 1)
    min_peers: int = 3  # population needed for relative findings (enumeration, export, admin)
    min_objects: int = 20  # enumeration: distinct objects of one endpoint read by one actor
    min_login_failures: int = 10  # brute force: failed logins by one actor on one login endpoint
    min_usernames: int = 5  # ... credential stuffing when it tried this many distinct user names
    min_unknown_paths: int = 15  # scanning: distinct paths never answered as existing (404s)
    min_client_errors: int = 30  # fuzzing: 400/405/409/415/422/5xx answers (not 401/403/404)
    min_records: int = 100  # export: records of personal data or secrets received
    min_bytes: int = 1048576  # export: response bytes received
    admin_peer_share: float = 0.1  # admin: at most this share of the peers also called the endpoint
    auth_share: float = 0.9  # unauthenticated access: the endpoint's calls carrying credentials
    min_auth_calls: int = 10  # ... and at least this many of them
    chain: int = 50  # calls listed (by transaction id) as the evidence of a finding
    max_actors: int = 50000  # actors followed at once (memory bound)
    max_analysed: int = 50000  # actors in one analysis, the most active first (memory bound)

    @classmethod
    def load(cls, db) -> Settings:
        s = cls()
        if "actor_settings" in db.table_names():
            for k, v in db.execute("select key, value from actor_settings"):
                if k in cls.names():
                    setattr(s, k, type(getattr(cls(), k))(json.loads(v)))
        return s

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def parse(cls, key: str, value: str) -> Any:
        """A setting's value from text; ValueError with a readable message."""
        if key not in cls.names():
            raise ValueError(f"unknown setting {key!r} (one of: {', '.join(cls.names())})")
        kind = type(getattr(cls(), key))
        try:
            v = kind(float(value)) if kind is int and "." not in value else kind(value)
        except ValueError:
            raise ValueError(
                f"{key} must be a {'whole ' if kind is int else ''}number, not {value!r}"
            ) from None
        if v < 0 or (isinstance(v, float) and not math.isfinite(v)):
            raise ValueError(f"{key} must be a positive number, not {value!r}")
        if key in ("peer_quantile", "admin_peer_share", "auth_share") and v > 1:
            raise ValueError(f"{key} is a share: between 0 and 1, not {value!r}")
        return v

    def save(self, db, changes: dict[str, Any]) -> None:
        with db.conn:
            for k, v in changes.items():
                setattr(self, k, v)
                db.execute(
                    "insert or replace into actor_settings (key, value) values (?, ?)", [k, json.dumps(v)]
                )



# the per-(actor, endpoint) counters that add up (actor_endpoints columns, in this order)
ENDPOINT_COUNTERS = (
    "calls", "ok", "denied", "not_found", "client_errors", "server_errors", "unauth_calls", "unauth_ok",
    "unauth_denied", "request_bytes", "response_bytes", "records", "sensitive_records", "login_attempts",
    "login_failures",
)


@dataclass
class Agg:
    """What one actor did on one endpoint (all runs)."""

    actor_id: int
    service: str
    method: str
    group: Any  # endpoint id, or ("path", skeleton) when the inventory has no endpoint for it
    path: str  # the template (or skeleton; "*" for paths never answered as existing)
    endpoint_id: int | None = None
    calls: int = 0
    ok: int = 0
    denied: int = 0
    not_found: int = 0
    client_errors: int = 0
    server_errors: int = 0
    unauth_calls: int = 0
    unauth_ok: int = 0
    unauth_denied: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    records: int = 0
    sensitive_records: int = 0
    login_attempts: int = 0
    login_failures: int = 0
    objects: int = 0
    usernames: int = 0
    unknown: int = 0  # distinct paths never answered as existing (the "*" rows' objects)
    keys: list[int] = field(default_factory=list)  # actor_endpoints ids

    COUNTERS = (*ENDPOINT_COUNTERS, "objects", "usernames")

    def add(self, other: dict) -> None:
        d = self.__dict__
        get = other.get
        for k in self.COUNTERS:
            v = get(k)
            if v:
                d[k] += v


@dataclass
class Verdict:
    detector: str
    kind: str
    category: str
    severity: str
    confidence: str
    actor_id: int
    service: str
    method: str  # "*" for actor-wide findings on a service
    path: str  # template, or "*"
    endpoint_id: int | None
    metric: str
    value: float
    baseline: float
    threshold: float
    peers: int
    evidence: str
    keys: list[int]  # actor_endpoints rows whose calls are the chain
    chain: str = "all"  # which of those calls: all, unauth_ok, login_fail, unknown, errors, sensitive, bytes


class _Total:
    """An actor's totals on one service (the per-service metrics: scanning, fuzzing, export)."""

    __slots__ = ("unknown", "not_found", "client_errors", "server_errors", "sensitive_records",
                 "response_bytes", "keys")

    def __init__(self):
        self.unknown = self.not_found = self.client_errors = self.server_errors = 0
        self.sensitive_records = self.response_bytes = 0
        self.keys: list[int] = []

    def add(self, a: Agg) -> None:
        self.not_found += a.not_found
        self.client_errors += a.client_errors
        self.server_errors += a.server_errors
        self.sensitive_records += a.sensitive_records
        self.response_bytes += a.response_bytes
        self.keys.extend(a.keys)
        if a.path == "*":
            self.unknown += a.objects


def quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return float(v[max(0, math.ceil(q * len(v)) - 1)])


def _peers(values: dict[int, float], actor: int, universe: set[int], min_peers: int) -> list[float]:
    """The peers' values: the other callers, or when too few, every other actor of the service."""
    callers = [v for a, v in values.items() if a != actor]
    if len(callers) >= min_peers:
        return callers
    return [values.get(a, 0) for a in universe if a != actor]


_ADMIN: dict[tuple[str, str], bool] = {}


def _is_admin(method: str, path: str) -> bool:
    got = _ADMIN.get((method, path))
    if got is None:
        if len(_ADMIN) >= 65536:
            _ADMIN.clear()
        got = _ADMIN[(method, path)] = _admin(method, path)
    return got


def _admin(method: str, path: str) -> bool:
    segs = [s for s in path.split("/") if s]
    if any(ADMIN_SEGMENT.match(s) for s in segs):
        return True
    return method == "DELETE" and bool(segs) and not segs[-1].startswith("{")


def _kb(n: float) -> str:
    return f"{n / 1024:.0f} KB" if n < 10 * 1048576 else f"{n / 1048576:.0f} MB"


def analyse(aggs: list[Agg], s: Settings, candidates: set[int] | None = None) -> list[Verdict]:
    """Behaviour findings over per-actor aggregates (see module doc).  ``candidates``: only
    these actors may be flagged (the population is always everyone)."""
    out: list[Verdict] = []
    by_group: dict[tuple, dict[int, Agg]] = {}
    by_service: dict[str, dict[int, _Total]] = {}
    for a in aggs:
        svc = a.service
        g = (svc, a.method, a.group)
        members = by_group.get(g)
        if members is None:
            members = by_group[g] = {}
        members[a.actor_id] = a
        per = by_service.get(svc)
        if per is None:
            per = by_service[svc] = {}
        tot = per.get(a.actor_id)
        if tot is None:
            tot = per[a.actor_id] = _Total()
        tot.add(a)
    universe = {svc: set(m) for svc, m in by_service.items()}
    # does the service enforce credentials at all?  401/403 answers outside its login endpoints
    enforced: dict[str, int] = {}
    group_calls: dict[tuple, tuple[int, int]] = {}  # group -> (calls, login attempts)
    for g, members in by_group.items():
        calls = logins = denied = 0
        for a in members.values():
            calls += a.calls
            logins += a.login_attempts
            denied += a.denied
        group_calls[g] = (calls, logins)
        if logins * 2 <= calls:
            enforced[g[0]] = enforced.get(g[0], 0) + denied

    def cand(aid: int) -> bool:
        return candidates is None or aid in candidates

    def threshold(minimum: float, base: float) -> float:
        return max(minimum, s.ratio * max(base, 1.0))

    def conf(value: float, thr: float) -> str:
        return "high" if value >= 2 * thr else "medium"

    for g, members in sorted(by_group.items(), key=lambda kv: str(kv[0])):
        svc, method, _group = g
        any_agg = next(iter(members.values()))
        path = any_agg.path
        if path == "*":
            continue
        uni = universe[svc]
        tname = f"{method} {path}"
        group_total, group_logins = group_calls[g]
        is_login = group_logins * 2 > group_total

        # object-level enumeration (API1)
        if method in READ_METHODS:
            vals = None
            for aid, a in members.items():
                if not cand(aid) or a.objects < s.min_objects:
                    continue
                if vals is None:
                    vals = {x: float(m.objects) for x, m in members.items()}
                peers = _peers(vals, aid, uni, s.min_peers)
                if len(peers) < s.min_peers:
                    continue
                base = quantile(peers, s.peer_quantile)
                thr = threshold(s.min_objects, base)
                if a.objects >= thr:
                    served = a.ok / a.calls if a.calls else 0
                    out.append(
                        Verdict(
                            "behaviour.enumeration",
                            "bola",
                            API1,
                            "high" if served >= 0.5 else "medium",
                            conf(a.objects, thr),
                            aid,
                            svc,
                            method,
                            path,
                            a.endpoint_id,
                            "distinct_objects",
                            a.objects,
                            base,
                            thr,
                            len(peers),
                            f"read {a.objects} distinct objects of {tname} in {a.calls} calls ({a.ok} "
                            "answered 2xx); "
                            f"peers' p{round(s.peer_quantile * 100)} {base:g}, threshold {thr:g} "
                            f"({len(peers)} peers)",
                            a.keys,
                            "all",
                        )
                    )

        # broken authentication: 2xx without credentials on an endpoint that usually requires them (API2)
        if not is_login:
            calls = group_total
            unauth = sum(a.unauth_calls for a in members.values())
            cred = calls - unauth
            if calls and cred >= s.min_auth_calls and cred / calls >= s.auth_share:
                refused = sum(a.unauth_denied for a in members.values())
                denied = enforced.get(svc, 0)
                for aid, a in members.items():
                    if not cand(aid) or a.unauth_ok <= 0:
                        continue
                    if refused:
                        why = f"; {refused} calls without them were refused (401/403)"
                    elif denied:
                        why = f"; {svc} refused {denied} other request{'s' if denied != 1 else ''} (401/403)"
                    else:
                        why = "; no refusal (401/403) seen from this service"
                    out.append(
                        Verdict(
                            "behaviour.unauthenticated_access",
                            "auth_bypass",
                            API2,
                            "high" if refused or denied else "medium",
                            "high" if refused else "medium",
                            aid,
                            svc,
                            method,
                            path,
                            a.endpoint_id,
                            "unauthenticated_2xx",
                            a.unauth_ok,
                            cred / calls,
                            s.auth_share,
                            len(members) - 1,
                            f"{a.unauth_ok} calls without credentials answered 2xx by {tname}; {cred} of its "
                            f"{calls} calls ({100 * cred / calls:.0f}%) carry credentials{why}",
                            a.keys,
                            "unauth_ok",
                        )
                    )

        # brute force / credential stuffing on a login endpoint (API2)
        if group_logins:
            vals = None
            for aid, a in members.items():
                if not cand(aid) or a.login_failures < s.min_login_failures:
                    continue
                if vals is None:
                    vals = {x: float(m.login_failures) for x, m in members.items()}
                peers = _peers(vals, aid, uni, s.min_peers)
                base = quantile(peers, s.peer_quantile)
                thr = threshold(s.min_login_failures, base)
                if a.login_failures >= thr:
                    stuffing = a.usernames >= s.min_usernames
                    out.append(
                        Verdict(
                            "behaviour.brute_force",
                            "credential_stuffing" if stuffing else "brute_force",
                            API2,
                            "high" if stuffing else "medium",
                            conf(a.login_failures, thr),
                            aid,
                            svc,
                            method,
                            path,
                            a.endpoint_id,
                            "failed_logins",
                            a.login_failures,
                            base,
                            thr,
                            len(peers),
                            f"{a.login_failures} failed logins of {a.login_attempts} attempts on {tname}, "
                            f"{a.usernames} distinct user name{'s' if a.usernames != 1 else ''}; peers' "
                            f"p{round(s.peer_quantile * 100)} {base:g}, threshold {thr:g}",
                            a.keys,
                            "login_fail",
                        )
                    )

        # function-level: admin-looking endpoints its peers never call (API5)
        if _is_admin(method, path):
            callers = set(members)
            for aid, a in members.items():
                if not cand(aid):
                    continue
                n_peers = len(uni) - (aid in uni)  # the size of uni - {aid}, without the copy
                others = len(callers) - (aid in callers)
                if n_peers < s.min_peers or others > s.admin_peer_share * n_peers:
                    continue
                out.append(
                    Verdict(
                        "behaviour.admin_access",
                        "admin_endpoint",
                        API5,
                        "high" if a.ok else "low",
                        "high" if a.ok else "medium",
                        aid,
                        svc,
                        method,
                        path,
                        a.endpoint_id,
                        "peers_calling",
                        others,
                        others,
                        s.admin_peer_share * n_peers,
                        n_peers,
                        f"called {tname} {a.calls} time{'s' if a.calls != 1 else ''} ({a.ok} answered 2xx, "
                        f"{a.denied} refused); {others} of {n_peers} other actors of {svc} called it",
                        a.keys,
                        "all",
                    )
                )

    # actor-wide, per service: scanning, fuzzing, data export
    for svc, members in sorted(by_service.items()):
        uni = universe[svc]
        unknown = {aid: float(t.unknown) for aid, t in members.items()}
        errors = {aid: float(t.client_errors + t.server_errors) for aid, t in members.items()}
        sens = {aid: float(t.sensitive_records) for aid, t in members.items()}
        rbytes = {aid: float(t.response_bytes) for aid, t in members.items()}
        n_others = len(uni) - 1  # every member is in uni
        for aid, t in members.items():
            if not cand(aid):
                continue
            if (
                t.unknown < s.min_unknown_paths
                and t.client_errors + t.server_errors < s.min_client_errors
                and (n_others < s.min_peers or (t.sensitive_records < s.min_records
                                                and t.response_bytes < s.min_bytes))
            ):
                continue  # below every minimum (most actors): nothing to compare
            others = [a for a in uni if a != aid]
            # scanning (unknown paths) and fuzzing (error answers)
            if t.unknown >= s.min_unknown_paths:
                peers = [unknown[a] for a in others]
                base = quantile(peers, s.peer_quantile)
                thr = threshold(s.min_unknown_paths, base)
                if t.unknown >= thr:
                    out.append(
                        Verdict(
                            "behaviour.scanning",
                            "path_scan",
                            API9,
                            "medium" if t.unknown >= 5 * thr else "low",
                            conf(t.unknown, thr),
                            aid,
                            svc,
                            "*",
                            "*",
                            None,
                            "unknown_paths",
                            t.unknown,
                            base,
                            thr,
                            len(peers),
                            f"{t.unknown} distinct paths never answered as existing ({t.not_found} "
                            "answered 404) on "
                            f"{svc}; peers' p{round(s.peer_quantile * 100)} {base:g}, threshold {thr:g}",
                            t.keys,
                            "unknown",
                        )
                    )
            n_err = errors[aid]
            if n_err >= s.min_client_errors:
                peers = [errors[a] for a in others]
                base = quantile(peers, s.peer_quantile)
                thr = threshold(s.min_client_errors, base)
                if n_err >= thr:
                    out.append(
                        Verdict(
                            "behaviour.scanning",
                            "fuzzing",
                            API8,
                            "medium" if t.server_errors else "low",
                            conf(n_err, thr),
                            aid,
                            svc,
                            "*",
                            "*",
                            None,
                            "error_answers",
                            n_err,
                            base,
                            thr,
                            len(peers),
                            f"{t.client_errors} client errors (400/405/409/415/422...) and "
                            f"{t.server_errors} server "
                            f"errors answered to its requests on {svc}; peers' "
                            f"p{round(s.peer_quantile * 100)} "
                            f"{base:g}, threshold {thr:g}",
                            t.keys,
                            "errors",
                        )
                    )
            # excessive data export (API3 records of sensitive data / API4 bytes)
            if len(others) < s.min_peers:
                continue
            if t.sensitive_records >= s.min_records:
                peers = [sens[a] for a in others]
                base = quantile(peers, s.peer_quantile)
                thr = threshold(s.min_records, base)
                if t.sensitive_records >= thr:
                    out.append(
                        Verdict(
                            "behaviour.data_export",
                            "sensitive_records",
                            API3,
                            "high",
                            conf(t.sensitive_records, thr),
                            aid,
                            svc,
                            "*",
                            "*",
                            None,
                            "sensitive_records",
                            t.sensitive_records,
                            base,
                            thr,
                            len(peers),
                            f"received {t.sensitive_records} records of personal data or secrets and "
                            f"{_kb(t.response_bytes)} from {svc}; peers' p{round(s.peer_quantile * 100)} "
                            f"{base:g} records, threshold {thr:g}",
                            t.keys,
                            "sensitive",
                        )
                    )
                    continue
            if t.response_bytes >= s.min_bytes:
                peers = [rbytes[a] for a in others]
                base = quantile(peers, s.peer_quantile)
                thr = threshold(s.min_bytes, base)
                if t.response_bytes >= thr:
                    out.append(
                        Verdict(
                            "behaviour.data_export",
                            "bytes",
                            API4,
                            "medium",
                            conf(t.response_bytes, thr),
                            aid,
                            svc,
                            "*",
                            "*",
                            None,
                            "response_bytes",
                            t.response_bytes,
                            base,
                            thr,
                            len(peers),
                            f"received {_kb(t.response_bytes)} from {svc}; peers' "
                            f"p{round(s.peer_quantile * 100)} "
                            f"{_kb(base)}, threshold {_kb(thr)}",
                            t.keys,
                            "bytes",
                        )
                    )
    return out


# ---- the database side -----------------------------------------------------------------------------

_CHAIN_WHERE = {
    "all": "",
    "unauth_ok": " and (flags & 1) and status between 200 and 299",
    "login_fail": " and (flags & 2)",
    "unknown": " and ((flags & 4) or status = 404)",
    "errors": " and status >= 400 and status not in (401, 403, 404)",
    "sensitive": " and sensitive > 0",
    "bytes": " and response_bytes > 0",
}
SHORT = {
    "behaviour.enumeration": "enumeration",
    "behaviour.unauthenticated_access": "unauth-access",
    "behaviour.brute_force": "brute-force",
    "behaviour.admin_access": "admin",
    "behaviour.scanning": "scanning",
    "behaviour.data_export": "export",
}


def analysed_actors(db, limit: int) -> str:
    """SQL restricting an analysis to at most ``limit`` actors (memory stays bounded however many
    actors a database has collected): the most active first, errors and sensitive records
    weighing more than plain calls.  Empty when the database holds no more than ``limit``."""
    n = db.execute("select count(*) from actors").fetchone()[0] if "actors" in db.table_names() else 0
    if n <= limit:
        return ""
    return (f"select id from actors order by coalesce(calls, 0) + 10 * (coalesce(denied, 0) + "
            f"coalesce(not_found, 0) + coalesce(errors, 0)) + coalesce(sensitive_records, 0) desc, id "
            f"limit {int(limit)}")


def load_aggregates(db, limit: int | None = None) -> list[Agg]:
    """Every ``actor_endpoints`` row (of the ``limit`` most active actors, see
    :func:`analysed_actors`), grouped per actor and inventory endpoint."""
    has_ep = "endpoints" in db.table_names()
    cols = ", ".join(f"ae.{c}" for c in Agg.COUNTERS)
    sql = (
        f"select ae.id, ae.actor_id, ae.service, ae.method, ae.path, ae.endpoint_id, "
        f"{'e.template' if has_ep else 'null'}, {cols} from actor_endpoints ae"
    )
    if has_ep:
        sql += " left join endpoints e on e.id = ae.endpoint_id"
    only = analysed_actors(db, limit) if limit is not None else ""
    if only:
        sql += f" where ae.actor_id in ({only})"
    groups: dict[tuple, Agg] = {}
    counters = Agg.COUNTERS
    for row in db.execute(sql):
        rid, aid, svc, method, path, eid, template = row[:7]
        if template is None:
            eid = None
        group = eid if eid is not None else ("path", path)
        k = (aid, svc, method, group)
        a = groups.get(k)
        vals = row[7:]
        if a is None:  # the counters in Agg's field order (COUNTERS)
            if None in vals:  # (NULLs: only in tables written by something else than the sink)
                vals = [v or 0 for v in vals]
            a = groups[k] = Agg(aid, svc, method, group, template or path, eid, *vals)
        else:
            d = a.__dict__
            for name, v in zip(counters, vals):
                if v:
                    d[name] += v
        a.keys.append(rid)
    return list(groups.values())


def map_endpoints(db, services: set[str] | None = None) -> None:
    """Set ``actor_endpoints.endpoint_id`` from the inventory: the endpoint its skeleton belongs
    to (``observed_paths``, the inventory's own mapping), else the learned template it matches."""
    names = set(db.table_names())
    if not {"observed_paths", "services", "endpoints"} <= names:
        return
    where = ""
    args: list = []
    if services is not None:
        if not services:
            return
        where = f" and ae.service in ({','.join('?' * len(services))})"
        args = sorted(services)
    lookup: dict[tuple, int | None] = {}
    for svc, method, path, eid in db.execute(
        "select s.name, o.method, o.path, o.endpoint_id from observed_paths o join services s on "
        "s.id = o.service_id where o.endpoint_id is not null order by o.operation = '' desc, o.id desc"
    ):
        lookup[(svc, method, path)] = eid
    last = -1
    while True:  # in batches by id: memory stays flat however many aggregates are stored
        rows = db.execute(
            "select ae.id, ae.service, ae.method, ae.path, ae.endpoint_id from actor_endpoints ae "
            f"where ae.id > ? and ae.path != '*'{where} order by ae.id limit 20000",
            [last, *args],
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        updates = []
        for rid, svc, method, path, old in rows:
            eid = lookup.get((svc, method, path))
            if eid is None:
                eid = _match_template(db, svc, method, path)
            if eid != old:
                updates.append((eid, rid))
        if updates:
            db.conn.executemany("update actor_endpoints set endpoint_id = ? where id = ?", updates)


_TEMPLATES: dict = {}


def _match_template(db, svc: str, method: str, skeleton: str) -> int | None:
    from .templating import Template, Templates, name_params, split_path

    row = db.execute("select id from services where name = ?", [svc]).fetchone()
    if row is None:
        return None
    sid = row[0]
    tpls = Templates(
        Template(tuple(json.loads(seg)), name_params(tuple(json.loads(seg))), bool(f))
        for seg, f in db.execute("select segments, forced from templates where service_id = ?", [sid])
    )
    t = tpls.match(tuple(split_path(skeleton)))
    if t is None:
        return None
    got = db.execute(
        "select id from endpoints where service_id = ? and template = ? and method = ? "
        "order by operation = '' desc, id limit 1",
        [sid, t.path, method],
    ).fetchone()
    return got[0] if got else None


@contextmanager
def no_gc():
    """The cyclic garbage collector paused for a block that allocates many objects without
    cycles (reference counting frees them): each collection would walk every object of the
    process, a cost that grows with what the rest of the process holds, not with the block."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def analyse_db(db, settings: Settings | None = None, run_id: int | None = None, replace: bool = False) -> int:
    """Map aggregates to endpoints, analyse, write findings; the number of verdicts.  With
    ``run_id``, only actors seen in that run may be flagged (the population is everyone) and
    earlier behaviour findings stay; with ``replace``, every actor is analysed again and the
    behaviour findings are rebuilt from scratch (after a change of settings)."""
    from .actors import ensure_schema
    from .findings import TABLE, ensure_table

    s = settings or Settings.load(db)
    ensure_schema(db)
    ensure_table(db)
    with db.conn:
        map_endpoints(db)
        if replace:
            run_id = None
            db.execute(f"delete from {TABLE} where detector like 'behaviour.%'")
            db.execute("delete from actor_findings")
            db.execute("update actor_calls set marks = null where marks is not null")
            db.execute("update actors set findings = '[]', severity = null")
            db.execute("update actor_sessions set findings = '[]', severity = null")
    with no_gc():  # (many small acyclic objects: collections would walk the whole heap, for nothing)
        aggs = load_aggregates(db, s.max_analysed)
        analysed = {a.actor_id for a in aggs}
        candidates = None
        if run_id is not None:
            candidates = {r[0] for r in db.execute("select id from actors where last_run_id = ?", [run_id])
                          if r[0] in analysed}
        verdicts = analyse(aggs, s, candidates)
        del aggs
    flagged = {v.actor_id for v in verdicts}
    keys = {}
    ids = sorted(flagged)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        keys.update(db.execute(f"select id, actor from actors where id in ({','.join('?' * len(chunk))})",
                               chunk).fetchall())
    run = (
        run_id
        if run_id is not None
        else (db.execute("select max(id) from runs").fetchone()[0] if "runs" in db.table_names() else None)
    )
    with db.conn:
        for v in verdicts:
            _write(db, v, keys.get(v.actor_id, str(v.actor_id)), s, run)
        _summaries(db)
    return len(verdicts)


def _write(db, v: Verdict, actor_key: str, s: Settings, run: int | None) -> None:
    from .findings import TABLE

    keys = v.keys or [-1]
    in_keys = f"actor_endpoint_id in ({','.join(str(int(k)) for k in keys)})"
    where = f"actor_id = ? and {in_keys}{_CHAIN_WHERE[v.chain]}"
    n, first, last, first_tx, last_tx = db.execute(
        f"select count(*), min(ts), max(ts), min(tx_id), max(tx_id) from actor_calls where {where}",
        [v.actor_id],
    ).fetchone()
    if not n:
        return
    half = max(1, s.chain // 2)
    head = db.execute(
        f"select id, tx_id from actor_calls where {where} order by ts, id limit ?", [v.actor_id, half]
    ).fetchall()
    tail = db.execute(
        f"select id, tx_id from actor_calls where {where} order by ts desc, id desc limit ?",
        [v.actor_id, half],
    ).fetchall()
    # the first and last transactions: of the earliest and latest calls (not the smallest and
    # largest ids, which follow the order a sensor saw them in: not the same in a merge)
    first_tx = next((t for _, t in head if t is not None), first_tx)
    last_tx = next((t for _, t in tail if t is not None), last_tx)
    seen = set()
    chain = []
    for cid, tid in [*head, *reversed(tail)]:
        if cid not in seen:
            seen.add(cid)
            chain.append(tid)
    sessions = [
        r[0]
        for r in db.execute(
            f"select distinct session_id from actor_calls where {where} and session_id is not null "
            "order by 1",
            [v.actor_id],
        )
    ]
    location = f"actor:{actor_key}"
    distinct = int(v.value) if v.metric in ("distinct_objects", "unknown_paths") else 0
    ref = {"run": run, "ts": last, "actor": actor_key, "sessions": sessions[:20]}
    row = {
        "service": v.service,
        "method": v.method,
        "path": v.path,
        "endpoint_id": v.endpoint_id,
        "detector": v.detector,
        "kind": v.kind,
        "category": v.category,
        "severity": v.severity,
        "severity_rank": SEVERITY_RANK[v.severity],
        "confidence": v.confidence,
        "location": location,
        "evidence": v.evidence,
        "value_hashes": "[]",
        "distinct_values": distinct,
        "count": n,
        "first_seen": first,
        "last_seen": last,
        "last_run_id": run,
        "first_tx_id": first_tx,
        "last_tx_id": last_tx,
        "tx_ref": json.dumps(ref),
    }
    old = db.execute(
        f"select id, severity_rank, first_run_id from {TABLE} where service = ? and ifnull(method, '') = ? "
        "and path = ? and detector = ? and location = ?",
        [v.service, v.method, v.path, v.detector, location],
    ).fetchone()
    if old is None:
        fid = db[TABLE].insert({**row, "first_run_id": run}).last_pk
    else:
        fid = old[0]
        if old[1] > row["severity_rank"]:  # a row keeps the highest severity seen
            for k in ("severity", "severity_rank", "kind", "category", "confidence", "evidence"):
                row.pop(k)
        db[TABLE].update(fid, row)
    detail = {
        "finding_id": fid,
        "actor_id": v.actor_id,
        "detector": v.detector,
        "kind": v.kind,
        "category": v.category,
        "severity": v.severity,
        "service": v.service,
        "method": v.method,
        "path": v.path,
        "endpoint_id": v.endpoint_id,
        "metric": v.metric,
        "value": v.value,
        "baseline": v.baseline,
        "threshold": v.threshold,
        "peers": v.peers,
        "calls": n,
        "tx_ids": json.dumps([t for t in chain if t is not None]),
        "session_ids": json.dumps(sessions),
        "first_seen": first,
        "last_seen": last,
        "run_id": run,
    }
    got = db.execute("select id from actor_findings where finding_id = ?", [fid]).fetchone()
    if got is None:
        db["actor_findings"].insert(detail)
    else:
        db["actor_findings"].update(got[0], detail)
    mark = SHORT.get(v.detector, v.detector)
    db.execute(
        "update actor_calls set marks = case when marks is null or marks = '' then ? "
        "when instr(',' || marks || ',', ',' || ? || ',') > 0 then marks else marks || ',' || ? end "
        f"where {where}",
        [mark, mark, mark, v.actor_id],
    )


def _summaries(db) -> None:
    """``findings`` and ``severity`` of actors and sessions, from actor_findings."""
    per_actor: dict[int, dict[str, int]] = {}
    per_session: dict[int, dict[str, int]] = {}
    for aid, det, sev, sids in db.execute(
        "select actor_id, detector, severity, session_ids from actor_findings"
    ):
        r = SEVERITY_RANK.get(sev, 0)
        d = per_actor.setdefault(aid, {})
        d[det] = max(d.get(det, 0), r)
        for sid in json.loads(sids or "[]"):
            d2 = per_session.setdefault(sid, {})
            d2[det] = max(d2.get(det, 0), r)
    names = {v: k for k, v in SEVERITY_RANK.items()}
    for table, per in (("actors", per_actor), ("actor_sessions", per_session)):
        rows = [(json.dumps(sorted(d)), names[max(d.values())], i) for i, d in per.items()]
        db.conn.executemany(f"update {table} set findings = ?, severity = ? where id = ?", rows)


# ---- endpoint risk ---------------------------------------------------------------------------------

RISK_LEVELS = ((70, "critical"), (45, "high"), (25, "medium"), (1, "low"), (0, "none"))
EXPOSURE_POINTS = 20  # answers 2xx to requests without credentials (login endpoints excepted)
EXPOSED_DATA_POINTS = 15  # ... and returns sensitive data
_DATA_POINTS = {4: 35, 3: 30, 2: 20, 1: 10, 0: 0}  # pii.*/secrets.* in responses, by worst severity
_ERROR_POINTS = {4: 20, 3: 20, 2: 15, 1: 10, 0: 0}  # errors.*/disclosure.*
_BEHAVIOUR_POINTS = {4: 30, 3: 30, 2: 20, 1: 10, 0: 0}  # behaviour.*
_SEV_NAME = {v: k for k, v in SEVERITY_RANK.items()}


def risk_level(score: int) -> str:
    return next(name for floor, name in RISK_LEVELS if score >= floor)


def endpoint_risk(db) -> dict[int, dict[str, Any]]:
    """``{endpoint_id: {"score": 0..100, "level": ..., "factors": [{"factor", "points", "why"}]}}``
    for every endpoint of the inventory (see docs/actors.md "Endpoint risk").  Computed when
    asked, from the current tables, so it always reflects every run."""
    names = set(db.table_names())
    if "endpoints" not in names:
        return {}
    factors: dict[int, list[dict]] = {eid: [] for (eid,) in db.execute("select id from endpoints")}
    exposed: dict[int, str] = {}
    if "actor_endpoints" in names:
        for eid, n in db.execute(
            "select endpoint_id, sum(unauth_ok) from actor_endpoints where endpoint_id is not null "
            "group by endpoint_id having sum(unauth_ok) > 0 and sum(login_attempts) * 2 <= sum(calls)"
        ):
            exposed[eid] = f"{n} answers 2xx to requests without credentials"
    if "findings" in names:
        for (eid,) in db.execute(
            "select distinct endpoint_id from findings where endpoint_id is not null and "
            "detector = 'posture.unauthenticated_sensitive'"
        ):
            exposed.setdefault(eid, "sensitive data served without credentials")
    for eid, why in exposed.items():
        if eid in factors:
            factors[eid].append({"factor": "exposure", "points": EXPOSURE_POINTS, "why": why})
    if "findings" in names:
        buckets = (
            (
                "sensitive_data",
                _DATA_POINTS,
                "(detector like 'pii.%' or detector like 'secrets.%') and location like 'response%'",
            ),
            ("error_disclosure", _ERROR_POINTS, "(detector like 'errors.%' or detector like 'disclosure.%')"),
            ("behaviour", _BEHAVIOUR_POINTS, "detector like 'behaviour.%'"),
        )
        for factor, points, cond in buckets:
            per: dict[int, dict[str, int]] = {}
            for eid, det, rank in db.execute(
                "select endpoint_id, detector, max(severity_rank) from findings where endpoint_id is "
                "not null "
                f"and {cond} group by endpoint_id, detector"
            ):
                per.setdefault(eid, {})[det.split(".", 1)[-1]] = rank or 0
            for eid, kinds in per.items():
                worst = max(kinds.values())
                if eid not in factors or not points.get(worst):
                    continue
                shown = sorted(kinds, key=lambda k: (-kinds[k], k))
                text = ", ".join(shown[:6]) + (f" +{len(shown) - 6}" if len(shown) > 6 else "")
                factors[eid].append(
                    {"factor": factor, "points": points[worst], "why": f"{_SEV_NAME[worst]}: {text}"}
                )
                if factor == "sensitive_data" and eid in exposed:
                    factors[eid].append(
                        {
                            "factor": "exposed_data",
                            "points": EXPOSED_DATA_POINTS,
                            "why": "sensitive data from an endpoint reachable without credentials",
                        }
                    )
    out = {}
    for eid, fs in factors.items():
        score = min(100, sum(f["points"] for f in fs))
        out[eid] = {"score": score, "level": risk_level(score), "factors": fs}
    return out
