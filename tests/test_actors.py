"""Actors, sessions and behaviour findings (issue 9), on a real capture of a deliberately
vulnerable API: six normal users and one attacker against vAPI on loopback
(tests/data/actors/vapi.pcap, ground truth vapi.json, both from tests/captures/actors/).

The bar: the attacker's actors and sessions carry the right findings (enumeration, data
export, admin endpoints, brute force, scanning, unauthenticated access), no normal user is
flagged, and no raw token, cookie or password is stored anywhere in the database."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys

import dpkt
import pytest
from conftest import DATA, PCAPS, ROOT, all_text

from discovery.actors import Actors, Identifier, Sketch, jwt_subject, sketch_merge
from discovery.behaviour import API1, API2, API3, API4, API5, API8, API9, Agg, Settings, analyse
from discovery.detectors.redaction import Hasher
from discovery.findings import Findings
from discovery.inventory import Inventory
from discovery.store import Store, TransactionLog
from sensor.pipeline import Pipeline
from sensor.sources import merge, open_files
from sensor.transaction import Transaction

VAPI = os.path.join(DATA, "actors", "vapi.pcap")
APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
ACTOR_TABLES = (
    "actors",
    "actor_sessions",
    "actor_endpoints",
    "actor_calls",
    "actor_findings",
    "actor_settings",
)


def apisensor(*args: str) -> subprocess.CompletedProcess:
    if not os.path.exists(APISENSOR):
        pytest.skip("apisensor console script not installed in this virtualenv")
    return subprocess.run([APISENSOR, *args], capture_output=True, text=True, timeout=120)


def replay(db: str, *pcaps: str) -> None:
    r = apisensor("replay", *pcaps, "--db", db, "--no-progress")
    assert r.returncode == 0, r.stderr


def one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apisensor: error: "), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def truth() -> dict:
    with open(os.path.join(DATA, "actors", "vapi.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def vapi_db(tmp_path_factory) -> str:
    db = str(tmp_path_factory.mktemp("vapi") / "vapi.db")
    replay(db, VAPI)
    return db


def actors_json(db: str, *extra: str) -> list[dict]:
    r = apisensor("actors", "--db", db, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def behaviour_findings(db: str) -> list[dict]:
    r = apisensor("findings", "--db", db, "--detector", "behaviour.", "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def by_actor(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        assert r["location"].startswith("actor:")
        out.setdefault(r["location"][len("actor:") :], []).append(r)
    return out


# ---- the bar ---------------------------------------------------------------------------------------


def test_the_attacker_is_flagged_with_the_right_findings(vapi_db, truth):
    att = truth["attacker"]
    actors = {a["actor"]: a for a in actors_json(vapi_db)}
    found = by_actor(behaviour_findings(vapi_db))
    # every flagged actor is one of the attacker's, and she has two: her token and her address
    for key in found:
        assert actors[key]["addresses"] == [att["ip"]], (key, actors[key])
    assert set(found) == {k for k, a in actors.items() if a["addresses"] == [att["ip"]]}
    token_actor = next(k for k in found if k.startswith("jwt:"))
    ip_actor = f"ip:{att['ip']}"
    assert set(found) == {token_actor, ip_actor}

    got = {
        (f["detector"], f["kind"], f["category"], f["method"], f["endpoint"] or f["path"]): f
        for f in found[token_actor]
    }
    assert set(got) == {
        ("behaviour.enumeration", "bola", API1, "GET", "/api/users/{user_id}"),
        ("behaviour.enumeration", "bola", API1, "GET", "/api/orders/{order_id}"),
        ("behaviour.data_export", "sensitive_records", API3, "*", "*"),
        ("behaviour.admin_access", "admin_endpoint", API5, "GET", "/api/admin/users"),
        ("behaviour.admin_access", "admin_endpoint", API5, "GET", "/api/admin/export"),
    }
    enum_users = got[("behaviour.enumeration", "bola", API1, "GET", "/api/users/{user_id}")]
    enum_orders = got[("behaviour.enumeration", "bola", API1, "GET", "/api/orders/{order_id}")]
    assert (
        enum_users["count"] == att["users_enumerated"]
        and enum_users["distinct_values"] == att["users_enumerated"]
    )
    assert enum_orders["count"] == att["orders_enumerated"]
    assert enum_users["severity"] == "high" and enum_users["confidence"] == "high"
    assert all(f["severity"] == "high" for f in found[token_actor])

    got = {
        (f["detector"], f["kind"], f["category"], f["method"], f["endpoint"] or f["path"]): f
        for f in found[ip_actor]
    }
    assert set(got) == {
        ("behaviour.brute_force", "brute_force", API2, "POST", "/api/login"),
        ("behaviour.scanning", "path_scan", API9, "*", "*"),
        ("behaviour.unauthenticated_access", "auth_bypass", API2, "GET", "/api/orders/{order_id}"),
    }
    assert (
        got[("behaviour.brute_force", "brute_force", API2, "POST", "/api/login")]["count"]
        == att["brute_force"]
    )
    scan = got[("behaviour.scanning", "path_scan", API9, "*", "*")]
    assert scan["count"] == att["recon"] and scan["distinct_values"] == att["recon"]
    unauth = got[("behaviour.unauthenticated_access", "auth_bypass", API2, "GET", "/api/orders/{order_id}")]
    assert unauth["count"] == att["unauthenticated_orders"] and unauth["severity"] == "high"


def test_no_normal_user_is_flagged(vapi_db, truth):
    normal_ips = set(truth["normal"].values())
    actors = actors_json(vapi_db)
    normal = [a for a in actors if set(a["addresses"]) & normal_ips]
    # each user: a token (or cookie) actor, plus the address for the calls sent without credentials
    assert {ip for a in normal for ip in a["addresses"]} == normal_ips
    assert len([a for a in normal if a["kind"] != "ip"]) == len(normal_ips)
    for a in normal:
        assert a["findings"] == [] and a["severity"] is None, a
    keys = {a["actor"] for a in normal}
    assert not [f for f in behaviour_findings(vapi_db) if f["location"][len("actor:") :] in keys]
    r = apisensor("sessions", "--db", vapi_db, "--flagged", "--json")
    assert r.returncode == 0, r.stderr
    flagged = json.loads(r.stdout)
    assert flagged and all(s["addresses"] == [truth["attacker"]["ip"]] for s in flagged)
    # their quirks were seen, and survived: carol's typo, dave's expired token, erin's browsing
    by_ip = {ip: [a for a in normal if ip in a["addresses"]] for ip in normal_ips}
    assert sum(a["denied"] for a in by_ip[truth["normal"]["carol"]]) == 1
    assert sum(a["denied"] for a in by_ip[truth["normal"]["dave"]]) == 1
    erin = [c for c in truth["calls"] if c["user"] == "erin" and c["path"].startswith("/api/products/")]
    assert len(erin) == 40


def test_the_attackers_sessions_are_flagged_and_their_timeline_marks_the_chain(vapi_db, truth):
    att = truth["attacker"]
    r = apisensor("sessions", "--db", vapi_db, "--actor", att["ip"], "--json", "--calls", "1000")
    assert r.returncode == 0, r.stderr
    sessions = json.loads(r.stdout)
    assert len(sessions) == 2
    marks = {}
    for s in sessions:
        assert s["severity"] == "high" and s["findings"]
        for c in s["timeline"]:
            for m in c["marks"]:
                marks[m] = marks.get(m, 0) + 1
    assert marks["enumeration"] == att["users_enumerated"] + att["orders_enumerated"]
    assert marks["brute-force"] == att["brute_force"]
    assert marks["scanning"] == att["recon"]
    assert marks["unauth-access"] == att["unauthenticated_orders"]
    assert marks["admin"] == 2 and marks["export"] > 100
    token_session = next(s for s in sessions if s["actor"].startswith("jwt:"))
    first = token_session["timeline"][0]
    assert first["method"] == "POST" and first["uri"] == "/api/login" and first["issued_credential"]
    assert (
        sum(
            1
            for c in token_session["timeline"]
            if c["uri"].startswith("/api/users/") and "enumeration" in c["marks"]
        )
        == att["users_enumerated"]
    )
    # the text timeline as a user reads it
    r = apisensor("sessions", "--db", vapi_db, "--actor", token_session["actor"][:10])
    assert r.returncode == 0, r.stderr
    assert "GET     /api/users/17" in r.stdout and "[enumeration,export]" in r.stdout
    assert "login: issued this actor's credential" in r.stdout


def test_no_raw_credential_cookie_or_password_is_stored(vapi_db, truth):
    secrets = truth["secrets"]
    assert len(secrets) >= 15  # 7 passwords, the JWTs, frank's cookie
    # JWT payloads and signatures: a token cut in pieces is still the token
    parts = {p for s in secrets if s.count(".") == 2 for p in s.split(".")[1:] if len(p) > 16}
    needles = set(secrets) | parts
    leaks = [(t, c, n[:12]) for t, c, v in all_text(vapi_db) for n in needles if n in v]
    assert leaks == []
    # and the actor tables hold no user name nor the JWT subjects they were derived from
    users = {c["user"] for c in truth["calls"]}
    for table, col, v in all_text(vapi_db):
        if table in ACTOR_TABLES:
            assert not any(u in v for u in users), (table, col, v[:80])
            assert "sub=" not in v
    assert len(secrets) == len({s for s in secrets if s})


def test_calls_are_counted_per_actor_and_linked_to_their_transactions(vapi_db, truth):
    import sqlite3

    actors = actors_json(vapi_db)
    assert sum(a["calls"] for a in actors) == len(truth["calls"])
    for ip in {c["ip"] for c in truth["calls"]}:
        assert sum(a["calls"] for a in actors if ip in a["addresses"]) == sum(
            c["ip"] == ip for c in truth["calls"]
        )
    con = sqlite3.connect(vapi_db)
    try:
        n, linked, same = con.execute(
            "select count(*), count(t.id), sum(abs(t.ts - c.ts) < 1e-6 and t.method = c.method and "
            "t.status_code = c.status) from actor_calls c left join transactions t on t.id = c.tx_id"
        ).fetchone()
        assert n == linked == same == len(truth["calls"])
        # dave's two tokens (he logged in again after the first expired) are one actor: same subject
        dave = truth["normal"]["dave"]
        kinds = con.execute(
            "select kind, calls from actors where addresses = ?", [json.dumps([dave])]
        ).fetchall()
        assert sorted(k for k, _ in kinds) == ["ip", "jwt"]
        # frank logged in with a cookie: the login that set it opens the cookie actor's session
        frank = truth["normal"]["frank"]
        row = con.execute("select actor, calls from actors where kind = 'cookie'").fetchone()
        assert row is not None and row[1] == sum(
            1
            for c in truth["calls"]
            if c["ip"] == frank and (c["credentials"] or c["path"].startswith("/api/login"))
        )
        # the cookie actor's hash is the prefix of the hash the transaction log shows for that cookie
        hdrs = con.execute(
            "select request_headers from transactions where request_headers like "
            "'%vapi_session=<redacted:cookie%' limit 1"
        ).fetchone()[0]
        assert row[0].split(":", 1)[1] in hdrs
    finally:
        con.close()


def test_sessions_split_on_the_idle_gap(tmp_path, vapi_db, truth):
    dave = truth["normal"]["dave"]
    r = apisensor("sessions", "--db", vapi_db, "--actor", dave, "--json")
    assert r.returncode == 0, r.stderr
    assert len([s for s in json.loads(r.stdout) if s["actor"].startswith("jwt:")]) == 1  # default: 1800 s
    db = str(tmp_path / "idle.db")
    r = apisensor("actors", "--db", db, "--set", "session_idle=3")  # dave waits TOKEN_TTL + 1.5 s = 4.5 s
    assert r.returncode == 0, r.stderr
    replay(db, VAPI)
    r = apisensor("sessions", "--db", db, "--actor", dave, "--json")
    mine = [s for s in json.loads(r.stdout) if s["actor"].startswith("jwt:")]
    assert len(mine) == 2
    assert mine[1]["timeline"][0]["status"] == 401  # the expired token opens the second session
    r = apisensor("sessions", "--db", db, "--json")
    others = [s for s in json.loads(r.stdout) if dave not in s["addresses"]]
    assert len(others) == len({s["actor"] for s in others})  # nobody else paused for 3 s


def test_findings_accumulate_across_runs(tmp_path, truth):
    """Two halves of the capture in two runs: the enumeration of users is cut in two; with
    min_objects=40 neither half is enough on its own, both together are (the aggregates are
    stored), and the attacker's session continues from one run into the next."""
    users = [
        c
        for c in truth["calls"]
        if c["role"] == "attacker"
        and c["path"].startswith("/api/users/")
        and c["path"][len("/api/users/") :].isdigit()
    ]
    cut = (users[23]["ts"] + users[24]["ts"]) / 2
    halves = [tmp_path / "a.pcap", tmp_path / "b.pcap"]
    with open(VAPI, "rb") as f, open(halves[0], "wb") as fa, open(halves[1], "wb") as fb:
        reader = dpkt.pcap.Reader(f)
        writers = [dpkt.pcap.Writer(out, snaplen=262144, linktype=reader.datalink()) for out in (fa, fb)]
        for ts, buf in reader:
            writers[ts >= cut].writepkt(buf, ts)
    db = str(tmp_path / "runs.db")
    assert apisensor("actors", "--db", db, "--set", "min_objects=40").returncode == 0
    replay(db, str(halves[0]))
    assert not [
        f
        for f in behaviour_findings(db)
        if f["detector"] == "behaviour.enumeration" and "users" in (f["endpoint"] or "")
    ]
    replay(db, str(halves[1]))
    enum = [
        f
        for f in behaviour_findings(db)
        if f["detector"] == "behaviour.enumeration" and "users" in (f["endpoint"] or "")
    ]
    assert len(enum) == 1 and enum[0]["distinct_values"] >= 46  # a call may be cut at the seam
    token = enum[0]["location"][len("actor:") :]
    r = apisensor("sessions", "--db", db, "--actor", token, "--json")
    sessions = json.loads(r.stdout)
    assert len(sessions) == 1 and sessions[0]["calls"] >= 140
    assert {f["first_tx_id"] is not None for f in enum} == {True}


def test_memory_is_bounded_by_evicting_actors(tmp_path, truth):
    """At most 4 actors in memory: evictions are counted, the aggregates were written before,
    so the attacker is still flagged and nobody else is."""
    store = Store(str(tmp_path / "bounded.db"))
    run = store.begin_run([VAPI])
    actors = Actors(store, run, max_actors=4)
    sinks = [TransactionLog(store, run), Inventory(store, run), actors, Findings(store, run)]

    def emit(tx):
        for s in sinks:
            s.observe(tx)

    p = Pipeline(emit)
    p.run(merge(open_files([VAPI])))
    p.finish()
    out = {}
    for s in sinks:
        out.update(s.finish() or {})
    store.close()
    assert out["actors"]["evicted"] > 0 and len(actors.actors) <= 4
    flagged = {a["actor"]: a for a in actors_json(str(tmp_path / "bounded.db"), "--flagged")}
    assert {ip for a in flagged.values() for ip in a["addresses"]} == {truth["attacker"]["ip"]}
    assert "behaviour.enumeration" in next(a for k, a in flagged.items() if k.startswith("jwt:"))["findings"]


def test_rows_a_run_inserts_carry_its_run_id_and_roll_back_without_a_journal(tmp_path):
    """Crash safety at the cost of one journal row per row touched: the actors and aggregates a
    run inserts carry its run_id, so the undo journal skips them (a rollback deletes them by
    run_id); rows of an earlier run that it updates are journaled and restored."""
    from discovery import journal
    from discovery.recorder import Recorder, start_run

    tables = ("actors", "actor_endpoints")

    def transactions(pcap: str) -> list[Transaction]:
        out: list = []
        p = Pipeline(out.append)
        p.run(merge(open_files([pcap])))
        p.finish()
        return [t for t in out if type(t) is Transaction]

    txs = transactions(VAPI)
    half = len(txs) // 2
    store = Store(str(tmp_path / "j.db"))
    db = store.db
    run1, sinks = start_run(store, ["first half"], ["discovery.actors:Actors"])
    rec = Recorder(store, run1, sinks)
    for t in txs[:half]:
        rec.observe(t)
    rec.finish()
    store.finish_run(run1, {})

    def snapshot():
        return {t: db.execute(f"select * from {t} order by id").fetchall() for t in tables}

    before = snapshot()
    assert {r[0] for r in db.execute("select distinct run_id from actors")} == {run1}
    run2, sinks = start_run(store, ["second half, demo"], ["discovery.actors:Actors"])
    rec = Recorder(store, run2, sinks)
    for t in txs[half:] + transactions(os.path.join(PCAPS, "demo.pcap")):  # known actors and new ones
        rec.observe(t)
    rec.commit()  # flushed and committed, not finished: as a replay killed here
    for table in tables:
        inserted = {r[0] for r in db.execute(f"select id from {table} where run_id = ?", [run2])}
        journaled = {
            r[0] for r in db.execute("select rid from _undo where run_id = ? and tbl = ?", [run2, table])
        }
        updated = {r[0] for r in db.execute(f"select id from {table} where run_id = ? and last_run_id = ?",
                                            [run1, run2])}
        assert inserted and updated, table
        assert not journaled & inserted and journaled == updated, table
    journal.rollback(db, run2)
    assert snapshot() == before


def test_the_analysis_reads_a_bounded_number_of_actors(tmp_path, truth):
    """``max_analysed``: with more actors stored than that, only the most active are loaded and
    judged (memory bounded whatever the database collected); the attacker, the most active, is
    still flagged, and the aggregates loaded are those of exactly that many actors."""
    from discovery import behaviour

    db_path = str(tmp_path / "few.db")
    replay(db_path, VAPI)
    import sqlite_utils

    db = sqlite_utils.Database(db_path)
    total = db.execute("select count(*) from actors").fetchone()[0]
    assert total > 3
    assert behaviour.analysed_actors(db, total) == ""
    aggs = behaviour.load_aggregates(db, 3)
    assert len({a.actor_id for a in aggs}) == 3
    db.close()
    r = apisensor("actors", "--db", db_path, "--set", "max_analysed=3")
    assert r.returncode == 0, r.stderr
    flagged = {a["actor"]: a for a in actors_json(db_path, "--flagged")}
    assert flagged and {ip for a in flagged.values() for ip in a["addresses"]} == {truth["attacker"]["ip"]}


# ---- risk: endpoints and the map -----------------------------------------------------------------


def test_endpoint_risk_in_endpoints_and_on_the_map(vapi_db):
    r = apisensor("endpoints", "--db", vapi_db, "--json")
    assert r.returncode == 0, r.stderr
    risk = {f"{e['method']} {e['template']}": e["risk"] for e in json.loads(r.stdout)}
    orders = risk["GET /api/orders/{order_id}"]
    assert orders["level"] == "critical"
    assert {f["factor"] for f in orders["factors"]} == {
        "exposure",
        "sensitive_data",
        "exposed_data",
        "behaviour",
    }
    assert risk["GET /api/users/{user_id}"]["level"] == "high"
    assert risk["GET /api/products/{product_id}"]["level"] == "low"  # public, nothing sensitive
    login = risk["POST /api/login"]
    assert "exposure" not in {f["factor"] for f in login["factors"]}  # a login answers without credentials
    r = apisensor("endpoints", "--db", vapi_db)
    header = r.stdout.splitlines()[0].split()
    assert "risk" in header and "85 critical" in r.stdout

    from graph.build import graph_from_db
    from graph.render import to_dot

    store = Store(vapi_db)
    try:
        G = graph_from_db(store.db)
    finally:
        store.close()
    svc = G.nodes["api.vapi.test"]
    assert svc["risk"]["level"] == "critical" and svc["risk"]["endpoint"] == "GET /api/orders/{order_id}"
    assert "enumeration" in G.nodes["127.0.0.66"]["flagged"]
    assert not [n for n, d in G.nodes(data=True) if d.get("flagged") and n != "127.0.0.66"]
    source = to_dot(G).source
    assert "flagged: " in source and "risk 85 (critical)" in source


# ---- the CLI --------------------------------------------------------------------------------------


def test_actors_cli_table_settings_and_errors(vapi_db, tmp_path):
    r = apisensor("actors", "--db", vapi_db)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["actor", "kind"]
    assert "127.0.0.66" in lines[1] and "enumeration" in lines[1]  # most suspicious first
    assert lines[-1].startswith("14 actors, 2 flagged")
    r = apisensor("actors", "--db", vapi_db, "--settings", "--json")
    assert json.loads(r.stdout)["min_objects"] == Settings().min_objects
    r = apisensor("findings", "--db", vapi_db, "--fail-on", "high", "--detector", "behaviour.")
    assert r.returncode == 1
    one_line_error(apisensor("actors", "--db", str(tmp_path / "none.db")), "no such file")
    one_line_error(apisensor("actors", "--db", vapi_db, "--set", "ratio"), "KEY=VALUE")
    one_line_error(apisensor("actors", "--db", vapi_db, "--set", "nope=1"), "unknown setting")
    one_line_error(apisensor("actors", "--db", vapi_db, "--set", "ratio=lots"), "ratio must be")
    one_line_error(apisensor("sessions", "--db", vapi_db, "--actor", "jwt:000000000000"), "no actor")
    one_line_error(apisensor("sessions", "--db", vapi_db, "--session", "99999"), "no session 99999")
    not_db = tmp_path / "text.db"
    not_db.write_text("this is not sqlite " * 100)
    one_line_error(apisensor("actors", "--db", str(not_db)), "cannot open")
    empty = str(tmp_path / "empty.db")
    import sqlite3

    sqlite3.connect(empty).close()
    one_line_error(apisensor("sessions", "--db", empty), "no actors recorded")


def test_raising_a_threshold_rebuilds_the_findings(tmp_path):
    db = str(tmp_path / "strict.db")
    replay(db, VAPI)
    before = {(f["detector"], f["endpoint"]) for f in behaviour_findings(db)}
    assert ("behaviour.enumeration", "/api/users/{user_id}") in before
    r = apisensor("actors", "--db", db, "--set", "min_objects=60")  # 48 users < 60 <= 96 orders
    assert r.returncode == 0 and "analysed again" in r.stderr
    after = {(f["detector"], f["endpoint"]) for f in behaviour_findings(db)}
    assert after == before - {("behaviour.enumeration", "/api/users/{user_id}")}


def test_demo_capture_flags_only_the_scanner(tmp_path):
    """pcaps/demo.pcap: a browser, a mobile app, a gateway forwarding their tokens, and a scanner."""
    db = str(tmp_path / "demo.db")
    replay(db, os.path.join(PCAPS, "demo.pcap"))
    found = by_actor(behaviour_findings(db))
    assert set(found) == {"ip:127.0.0.102"}
    assert {f["detector"] for f in found["ip:127.0.0.102"]} >= {"behaviour.scanning"}
    # a user's token forwarded by the gateway is the same actor on both APIs
    actors = actors_json(db)
    assert any(a["kind"] == "jwt" and {"127.0.0.10", "127.0.0.100"} <= set(a["addresses"]) for a in actors)


def test_two_workers_flag_the_same_actors_as_one(tmp_path, truth):
    """``replay --workers 2``: each worker sees some of the clients' connections (here the
    attacker and four users in one, two users in the other: see sensor.parallel.owner); the
    shards' actors, sessions and calls are merged into the run and analysed once against the
    whole population, so the
    verdicts are those of one worker.  Only the records of sensitive data are estimates that
    depend on which bodies each process sampled (docs/actors.md)."""
    if not os.path.exists(APISENSOR):
        pytest.skip("apisensor console script not installed in this virtualenv")
    env = {**os.environ, "APISENSOR_HASH_KEY": "00112233445566778899aabbccddeeff"}  # the same actor ids
    dbs = {}
    for n in (1, 2):
        dbs[n] = str(tmp_path / f"w{n}.db")
        r = subprocess.run(
            [APISENSOR, "replay", VAPI, "--db", dbs[n], "--no-progress", "--workers", str(n)],
            capture_output=True, text=True, timeout=120, env=env,
        )
        assert r.returncode == 0, r.stderr

    def verdicts(db: str) -> dict:
        out = {}
        for f in behaviour_findings(db):
            key = (f["location"], f["detector"], f["method"], f["endpoint"] or f["path"])
            assert key not in out
            out[key] = (f["kind"], f["category"], f["severity"], f["confidence"], f["count"],
                        f["distinct_values"], re.sub(r"\d+ records", "# records", f["evidence"]))
        return out

    def actors(db: str) -> dict:
        cols = ("kind", "addresses", "calls", "sessions", "errors", "denied", "findings", "severity")
        return {a["actor"]: {c: a[c] for c in cols} for a in actors_json(db)}

    def sessions(db: str) -> tuple[list, list]:
        """Sessions, and the timeline: each call with its session, status, flags and marks."""
        con = sqlite3.connect(db)
        try:
            return (
                con.execute(
                    'select a.actor, s.start, s."end", s.calls, s.errors, s.denied, s.not_found, '
                    "s.response_bytes, s.findings, s.severity from actor_sessions s join actors a on "
                    "a.id = s.actor_id order by 1, 2"
                ).fetchall(),
                con.execute(
                    "select a.actor, c.ts, s.start, c.method, c.status, c.response_bytes, c.flags, c.marks "
                    "from actor_calls c join actors a on a.id = c.actor_id join actor_sessions s on "
                    "s.id = c.session_id order by 1, 2, 4"
                ).fetchall(),
            )
        finally:
            con.close()

    one, two = verdicts(dbs[1]), verdicts(dbs[2])
    assert two == one
    att = truth["attacker"]["ip"]
    flagged = {k[0][len("actor:") :] for k in two}
    assert len(flagged) == 2 and f"ip:{att}" in flagged
    # judged against all 13 other actors, not the handful of one worker
    assert all("0 of 13 other actors" in v[-1] for k, v in two.items() if k[1] == "behaviour.admin_access")
    a1, a2 = actors(dbs[1]), actors(dbs[2])
    assert a2 == a1 and len(a2) == 14
    normal = set(truth["normal"].values())
    assert not [a for k, a in a2.items() if set(a["addresses"]) & normal and (a["findings"] or k in flagged)]
    assert sessions(dbs[2]) == sessions(dbs[1])
    # the calls point to their transactions in the merged log
    con = sqlite3.connect(dbs[2])
    try:
        n, same = con.execute(
            "select count(*), sum(abs(t.ts - c.ts) < 1e-6 and t.method = c.method and t.status_code = "
            "c.status) from actor_calls c left join transactions t on t.id = c.tx_id"
        ).fetchone()
        assert n == same == len(truth["calls"])
    finally:
        con.close()


# ---- units: identity and the analysis on given aggregates ------------------------------------------


def _tx(headers=(), resp_headers=(), body=b"", status=200, method="GET", uri="/x") -> Transaction:
    return Transaction(
        1.0,
        b"\x7f\x00\x00\x09",
        40000,
        b"\x7f\x00\x00\x05",
        80,
        method=method,
        uri=uri,
        request_headers=tuple(headers),
        status_code=status,
        response_headers=tuple(resp_headers),
        response_body=body,
        response_body_len=len(body),
    )


def _jwt(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


def test_identity_of_each_kind_of_credential():
    h = Hasher(b"k" * 32)
    ident = Identifier(h)
    t1, t2 = _jwt({"sub": "42", "iss": "idp", "exp": 1}), _jwt({"sub": "42", "iss": "idp", "exp": 2})
    a1 = ident.request(_tx([("Authorization", f"Bearer {t1}")]), "")
    a2 = ident.request(_tx([("authorization", f"bearer {t2}")]), "")
    assert (
        a1.actor == a2.actor and a1.actor.startswith("jwt:") and len(a1.actor) == 16
    )  # one user, two tokens
    other_iss = ident.request(_tx([("Authorization", f"Bearer {_jwt({'sub': '42', 'iss': 'other'})}")]), "")
    assert other_iss.actor != a1.actor
    assert jwt_subject(t1) == ("idp", "sub=42") and jwt_subject("not.a.jwt") is None
    basic = ident.request(_tx([("Authorization", "Basic " + base64.b64encode(b"alice:pw1").decode())]), "")
    basic2 = ident.request(_tx([("Authorization", "Basic " + base64.b64encode(b"alice:pw2").decode())]), "")
    assert basic.actor == basic2.actor and basic.kind == "basic" and "alice" not in basic.actor
    opaque = ident.request(_tx([("Authorization", "Bearer abcdef0123456789xyz")]), "")
    assert opaque.actor == "bearer:" + h("abcdef0123456789xyz")[:12]  # = the transaction log's hash prefix
    key = ident.request(_tx([("X-API-Key", "sk_live_abc123")]), "")
    assert key.actor == "apikey:" + h("sk_live_abc123")[:12]
    cookie = ident.request(_tx([("Cookie", "_ga=GA1.2.3; sessionid=s3cr3tvalue")]), "")
    assert cookie.actor == "cookie:" + h("s3cr3tvalue")[:12]
    assert ident.request(_tx([("Cookie", "_ga=GA1.2.3; theme=dark")]), "") is None  # not credentials
    assert ident.request(_tx(), "api_key=zzz999").actor == "apikey:" + h("zzz999")[:12]
    jwt_cookie = ident.request(_tx([("Cookie", f"token={t1}")]), "")
    assert jwt_cookie.actor == a1.actor
    issued = ident.issued(_tx(resp_headers=[("Set-Cookie", "sessionid=s3cr3tvalue; Path=/; HttpOnly")]))
    assert issued.actor == cookie.actor
    assert ident.issued(_tx(body=json.dumps({"token": t2}).encode())).actor == a1.actor
    assert (
        ident.issued(_tx(body=b'{"access_token": "opaqueopaqueopaque123"}')).actor
        == "bearer:" + h("opaqueopaqueopaque123")[:12]
    )


def test_sketch_counts_exactly_below_the_cap_and_estimates_above():
    blob, n = sketch_merge(None, set(range(1, 500)))
    assert n == 499
    blob, n = sketch_merge(blob, set(range(1, 500)))  # the same values again: still 499
    assert n == 499
    import random

    rng = random.Random(1)
    vals = {rng.getrandbits(32) for _ in range(20000)}
    blob, n = sketch_merge(None, vals)
    assert len(blob) == 4 * 1024 and abs(n - len(vals)) / len(vals) < 0.1
    # the in-memory sketch of one aggregate stays bounded and keeps the same smallest hashes
    mem = Sketch()
    for v in vals:
        mem.add_hash(v)
    assert len(mem) < 4 * 1024 and sketch_merge(None, mem) == (blob, n)


def _agg(aid: int, method: str = "GET", path: str = "/items/{id}", **kw) -> Agg:
    a = Agg(aid, "svc", method, ("path", path), path, None, **kw)
    a.keys = [aid]
    return a


def test_thresholds_are_relative_to_the_peers():
    s = Settings()
    # ten shoppers who each browse 30 items, one who browses 45: a heavy user, not an enumeration
    aggs = [_agg(i, calls=30, ok=30, objects=30) for i in range(10)] + [_agg(10, calls=45, ok=45, objects=45)]
    assert analyse(aggs, s) == []
    aggs.append(_agg(11, calls=400, ok=390, objects=400))  # 400 > 5 x p75 (30)
    got = analyse(aggs, s)
    assert [(v.detector, v.actor_id, v.threshold) for v in got] == [("behaviour.enumeration", 11, 150.0)]
    # too few peers: no population to compare with, no enumeration finding
    assert analyse([_agg(0, calls=2, objects=2), _agg(1, calls=400, objects=400)], s) == []
    # candidates: only those may be flagged (the others are still the population)
    assert analyse(aggs, s, candidates={0, 1}) == []


def test_fuzzing_bytes_export_and_admin_on_given_aggregates():
    s = Settings()
    base = [_agg(i, calls=20, ok=18, client_errors=2, response_bytes=50_000) for i in range(6)]
    fuzzer = _agg(6, calls=300, ok=10, client_errors=250, server_errors=40, response_bytes=60_000)
    hoarder = _agg(7, calls=50, ok=50, response_bytes=30_000_000)
    admin = _agg(8, method="DELETE", path="/items", calls=3, ok=3)
    got = {
        (v.detector, v.kind, v.category, v.actor_id, v.severity)
        for v in analyse([*base, fuzzer, hoarder, admin], s)
    }
    assert got == {
        ("behaviour.scanning", "fuzzing", API8, 6, "medium"),
        ("behaviour.data_export", "bytes", API4, 7, "medium"),
        ("behaviour.admin_access", "admin_endpoint", API5, 8, "high"),
    }


# ---- re-recording (root) ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tcpdump)")
def test_a_fresh_capture_gives_the_same_verdicts(tmp_path):
    """Record the scenario again (new ports, timings and interleaving) and check the same bar."""
    script = os.path.join(ROOT, "tests", "captures", "actors", "make_capture.py")
    r = subprocess.run(
        [sys.executable, script, "-o", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    if r.returncode != 0 and "Address already in use" in r.stderr:
        pytest.skip("127.0.0.5:8080 is busy")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "vapi.json") as f:
        fresh = json.load(f)
    db = str(tmp_path / "fresh.db")
    replay(db, str(tmp_path / "vapi.pcap"))
    found = by_actor(behaviour_findings(db))
    ip = fresh["attacker"]["ip"]
    assert {f"ip:{ip}"} < set(found) and len(found) == 2
    detectors = {f["detector"] for fs in found.values() for f in fs}
    assert detectors == {
        "behaviour.enumeration",
        "behaviour.data_export",
        "behaviour.admin_access",
        "behaviour.brute_force",
        "behaviour.scanning",
        "behaviour.unauthenticated_access",
    }
    needles = set(fresh["secrets"])
    assert not [t for t, _c, v in all_text(db) for n in needles if n in v]
