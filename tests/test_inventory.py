"""The API inventory on real captures (httpbin driven from its own spec, the demo, a misc app)
written to real SQLite files."""

import json
import os
import random
import shutil

import pytest
from click.testing import CliRunner
from test_inventory_support import (
    DEMO,
    HTTPBIN,
    HTTPBIN_SPEC,
    HTTPBIN_ST,
    HTTPBIN_ST_TRUTH,
    MISC,
    build,
    exercised_spec_paths,
    snapshot,
    txs,
)

from discovery import specdiff
from discovery.inventory import match_endpoint
from discovery.templating import classify_segment
from sensor.cli import main


def _endpoints(db, service=None):
    q = (
        "select s.name, e.method, e.template, e.operation from endpoints e "
        "join services s on s.id = e.service_id"
    )
    rows = db.execute(q).fetchall()
    return {r[1:] if service else r for r in rows if service is None or r[0] == service}


# ---- the bar: templates vs the spec ----------------------------------------------------------------


def test_httpbin_templates_match_the_spec(tmp_path):
    store = build(str(tmp_path / "inv.db"), txs(HTTPBIN))
    spec = specdiff.load_spec(HTTPBIN_SPEC)
    exercised = exercised_spec_paths()
    s = specdiff.score(store.db, spec, "127.0.0.40", exercised)
    assert len(exercised) >= 50
    assert s["recall"] >= 0.95, s["missed"]
    assert s["precision"] >= 0.95, s["not_in_spec"]
    assert s["splits"] == {}
    # per operation too: every (method, spec path) exercised is exactly one endpoint row
    norm = {(m, specdiff._norm(t)) for _, m, t, _ in _endpoints(store.db)}
    with open(os.path.join(os.path.dirname(HTTPBIN), "httpbin.json")) as f:
        ops = {(t["method"], specdiff._norm(t["spec_path"])) for t in json.load(f)["requests"]}
    assert len(norm & ops) / len(ops) >= 0.95
    assert len(norm - ops) <= 0.05 * len(norm)


def test_httpbin_fuzzed_by_schemathesis_templates_match_the_spec(tmp_path):
    # schemathesis fills path parameters with fuzz (null, true, 2.2e-308, unicode, ...)
    store = build(str(tmp_path / "inv.db"), txs(HTTPBIN_ST))
    spec = specdiff.load_spec(HTTPBIN_SPEC)
    exercised = exercised_spec_paths(HTTPBIN_ST_TRUTH)
    s = specdiff.score(store.db, spec, "127.0.0.44", exercised)
    assert len(exercised) >= 40
    assert s["recall"] >= 0.95, s["missed"]
    assert s["precision"] >= 0.95, s["not_in_spec"]
    assert s["splits"] == {}


def test_score_detects_a_split_and_a_miss(tmp_path):
    # the scorer itself can fail: two different literal values of /anything/{anything} (not
    # evidence enough for a parameter) are two rows for one spec path, and /get was never seen
    words = {
        tx.uri.split("?")[0]
        for tx in txs(HTTPBIN)
        if tx.uri.startswith("/anything/") and classify_segment(tx.uri.split("/")[2].split("?")[0]) is None
    }
    two = sorted(words)[:2]
    store = build(str(tmp_path / "inv.db"), [tx for tx in txs(HTTPBIN) if tx.uri.split("?")[0] in two])
    spec = specdiff.load_spec(HTTPBIN_SPEC)
    s = specdiff.score(store.db, spec, "127.0.0.40", {"/anything/{anything}", "/get"})
    assert s["recall"] == 0.0
    assert s["precision"] == 0.0
    assert list(s["splits"]) == ["/anything/{anything}"]


# ---- determinism ---------------------------------------------------------------------------------


def test_same_traffic_in_another_order_gives_the_same_inventory(tmp_path):
    all_txs = txs(HTTPBIN) + txs(DEMO) + txs(MISC)
    shuffled = list(all_txs)
    random.Random(20261129).shuffle(shuffled)
    a = build(str(tmp_path / "a.db"), all_txs)
    b = build(str(tmp_path / "b.db"), shuffled)
    half = len(shuffled) // 2
    c = build(str(tmp_path / "c.db"), shuffled[half:], shuffled[:half])  # two runs, second half first
    sa, sb, sc = snapshot(a.db), snapshot(b.db), snapshot(c.db)
    assert sa["endpoints"] and sa["parameters"] and sa["schemas"] and sa["samples"]
    for table in sa:
        assert sa[table] == sb[table], table
        assert sa[table] == sc[table], table


def test_templates_learned_later_merge_earlier_endpoints(tmp_path):
    # run 1 sees two user names (not evidence enough), run 2 the rest: the endpoints merge
    ts = [t for t in txs(MISC) if t.uri.startswith("/api/users/") and t.uri.split("/")[3] in ("alice", "bob")]
    rest = [t for t in txs(MISC) if t not in ts]
    store = build(str(tmp_path / "inv.db"), ts, rest)
    eps = _endpoints(store.db, "127.0.0.41")
    assert ("GET", "/api/users/{user}", "") in eps
    assert not any(t in ("/api/users/alice", "/api/users/bob") for _, t, _ in eps)
    merged = store.db.execute(
        "select template, detail from changes where kind = 'endpoint_merged'"
    ).fetchall()
    assert ("/api/users/alice", "into /api/users/{user}") in merged


def test_memory_caps_fold_or_count_and_lose_no_hit(tmp_path):
    run = txs(HTTPBIN) + txs(MISC)
    store = build(str(tmp_path / "inv.db"), run, max_paths=25, max_probe_paths=5)
    db = store.db
    kept = dict(
        db.execute(
            "select s.name, count(*) from observed_paths o join services s on s.id = o.service_id "
            "where o.confirmed = 1 group by s.name"
        )
    )
    templates = dict(
        db.execute(
            "select s.name, count(*) from templates t join services s on s.id = t.service_id group by s.name"
        )
    )
    # the cap, plus one row per method and template the overflow folded into (143 without caps)
    assert kept["127.0.0.40"] <= 25 + 25
    assert templates["127.0.0.40"] >= 10
    overflow = db.execute("select sum(overflow_hits) from services").fetchone()[0]
    assert overflow > 0
    # every request is somewhere: an endpoint, a probe, an asset, excluded, or counted as overflow
    total = db.execute("select sum(hits) from services").fetchone()[0]
    assert total == len([t for t in run if t.method])
    placed = db.execute("select sum(hits) from observed_paths").fetchone()[0]
    static = db.execute("select sum(static_hits) from services").fetchone()[0]
    assert placed + static + overflow == total


# ---- what the demo shows -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("demo") / "inv.db"), txs(DEMO)).db


def test_demo_services_endpoints_and_addresses(demo_db):
    users = _endpoints(demo_db, "users.shop.local")
    assert users == {
        ("GET", "/api/v1/users/{user}", ""),
        ("GET", "/api/v1/users/{user}/profile", ""),
        ("GET", "/api/v1/users/me", ""),
        ("GET", "/api/v1/users/search", ""),
        ("POST", "/api/v1/users", ""),
    }
    orders = _endpoints(demo_db, "orders.shop.local")
    assert ("GET", "/api/v1/orders/{order_id}/invoice", "") in orders
    addrs = demo_db.execute(
        "select s.name, a.address from service_addresses a join services s on s.id = a.service_id"
    ).fetchall()
    assert ("inventory.shop.local", "127.0.0.13:8000") in addrs
    assert ("gateway.shop.local", "127.0.0.10:8080") in addrs


def test_scanner_404s_are_probes_not_endpoints(demo_db):
    inv = _endpoints(demo_db, "inventory.shop.local")
    assert inv == {
        ("GET", "/api/v2/items", ""),
        ("GET", "/api/v2/items/{item_id}", ""),
        ("GET", "/api/v2/items/{item_id}/stock", ""),
    }
    hits, paths = demo_db.execute("select hits, paths from probes where client = '127.0.0.102'").fetchone()
    assert hits >= 17 and paths >= 17
    # the unknown SKU answered 404 is a hit of the item endpoint, not a probe
    st = dict(
        demo_db.execute(
            "select st.status_code, st.count from endpoint_statuses st join endpoints e on "
            "e.id = st.endpoint_id where e.template = '/api/v2/items/{item_id}'"
        ).fetchall()
    )
    assert st.get(404, 0) >= 1 and st[200] >= 1


def test_auth_schemes(demo_db):
    auth = dict(
        demo_db.execute(
            "select s.name || ' ' || e.template, e.auth_schemes from endpoints e join services s "
            "on s.id = e.service_id"
        ).fetchall()
    )
    assert auth["users.shop.local /api/v1/users/search"] == "none"
    assert auth["orders.shop.local /api/v1/orders/{order_id}"] == "bearer-jwt:HS256"


def test_parameters_and_schemas(demo_db):
    rows = demo_db.execute(
        "select e.template, p.location, p.name, p.type, p.required, p.count from parameters p join "
        "endpoints e "
        "on e.id = p.endpoint_id join services s on s.id = e.service_id where s.name = 'orders.shop.local'"
    ).fetchall()
    by = {(t, loc, n): (typ, req, c) for t, loc, n, typ, req, c in rows}
    assert by[("/api/v1/orders", "query", "page")][0] == "integer"
    assert by[("/api/v1/orders", "query", "limit")][1] == 1  # in every request
    assert by[("/api/v1/orders", "query", "sku")][1] == 0  # only sometimes
    assert by[("/api/v1/orders/{order_id}", "path", "order_id")][0] == "string"
    fields = demo_db.execute(
        "select f.path, f.type, f.format, f.required from fields f join endpoints e on e.id = f.endpoint_id "
        "join services s on s.id = e.service_id where s.name = 'users.shop.local' and "
        "e.template = '/api/v1/users/{user}/profile' and f.direction = 'response' and f.status_code = 200"
    ).fetchall()
    fmap = {p: (t, fmt, r) for p, t, fmt, r in fields}
    assert fmap["email"] == ("string", "email", 1)


def test_samples_never_hold_credentials(demo_db):
    text = json.dumps(demo_db.execute("select * from samples").fetchall())
    assert "eyJ" not in text  # no JWT anywhere
    assert "4012888888881881" not in text and "668-57-7855" not in text  # card and SSN in the users profile
    assert "<redacted" in text


def test_match_endpoint(demo_db):
    eid = match_endpoint(demo_db, "users.shop.local", "GET", "/api/v1/users/1006?x=1")
    assert eid is not None
    t = demo_db.execute("select template from endpoints where id = ?", [eid]).fetchone()[0]
    assert t == "/api/v1/users/{user}"
    me = match_endpoint(demo_db, "users.shop.local", "GET", "/api/v1/users/me")
    assert (
        demo_db.execute("select template from endpoints where id = ?", [me]).fetchone()[0]
        == "/api/v1/users/me"
    )
    assert match_endpoint(demo_db, "users.shop.local", "DELETE", "/api/v1/users/1006") is None
    assert match_endpoint(demo_db, "users.shop.local", None, "/api/v1/users/1006") == eid  # any method
    assert match_endpoint(demo_db, "users.shop.local", "GET", "/nothing/here") is None
    assert match_endpoint(demo_db, "no.such.service", "GET", "/") is None


# ---- what the misc app shows ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def misc_db(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("misc") / "inv.db"), txs(MISC)).db


def test_graphql_operations_are_endpoints(misc_db):
    ops = {op for _, m, t, op in _endpoints(misc_db) if t == "/graphql"}
    assert ops == {"query GetUser", "query ListOrders", "mutation CreateOrder"}


def test_static_assets_are_classified_not_counted(misc_db):
    assets = {(k, e) for k, e in misc_db.execute("select kind, extension from assets")}
    assert assets == {
        ("script", "js"),
        ("style", "css"),
        ("image", "png"),
        ("image", "ico"),
        ("font", "woff2"),
    }
    assert not any("static" in t or t.endswith(".ico") for _, _, t, _ in _endpoints(misc_db))


def test_misc_auth_kinds_and_reserved_words(misc_db):
    auth = dict(misc_db.execute("select template, auth from endpoints"))
    assert "bearer-jwt:none" in json.loads(auth["/api/users/me"])
    assert "apikey-header:x-api-key" in json.loads(auth["/api/users/search"])
    assert set(json.loads(auth["/api/reports"])) == {"apikey-query:api_key", "session-cookie:sessionid"}
    assert "/api/users/{user}" in auth  # names became a parameter, "me" and "search" did not join it
    form = misc_db.execute("select name, examples from parameters where location = 'form'").fetchall()
    assert dict(form)["password"].startswith('["<redacted')


# ---- rules -------------------------------------------------------------------------------------


def test_rules_force_forbid_exclude(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(
        'exclude = ["/healthz"]\nforbid = ["/api/users/{x}"]\n'
        '[services."127.0.0.41"]\nforce = ["/api/legacy/{thing}"]\n'
    )
    db_path = str(tmp_path / "inv.db")
    build(db_path, txs(MISC)).close()
    r = CliRunner().invoke(main, ["rules", "--db", db_path, "--set", str(rules)])
    assert r.exit_code == 0, r.output
    store = build(db_path, [])
    eps = {t for _, _, t, _ in _endpoints(store.db)}
    assert "/api/users/{user}" not in eps and "/api/users/alice" in eps
    assert "/api/legacy/{thing}" in eps and "/api/legacy/items" not in eps
    # exclusion applies to what is replayed from now on
    store = build(db_path, [t for t in txs(MISC) if t.uri == "/healthz"])
    assert store.db.execute("select excluded_hits from services").fetchone()[0] == 3
    r = CliRunner().invoke(main, ["rules", "--db", db_path, "--clear"])
    assert r.exit_code == 0
    assert "/api/users/{user}" in {t for _, _, t, _ in _endpoints(store.db)}


def test_bad_rules_file_is_refused(tmp_path):
    db_path = str(tmp_path / "inv.db")
    build(db_path, []).close()
    bad = tmp_path / "bad.toml"
    bad.write_text('forse = ["/x/{y}"]\n')
    r = CliRunner().invoke(main, ["rules", "--db", db_path, "--set", str(bad)])
    assert r.exit_code == 2 and "unknown keys" in r.output


# ---- the CLI: replay twice, changes, listings ----------------------------------------------------


def test_replay_twice_is_not_counted_twice(tmp_path):
    pcap = str(tmp_path / "misc.pcap")
    shutil.copyfile(MISC, pcap)
    db = str(tmp_path / "inv.db")
    runner = CliRunner()
    r1 = runner.invoke(main, ["replay", pcap, "--db", db, "--json", "--workers", "1"])
    assert r1.exit_code == 0, r1.output
    summary = json.loads(r1.output)
    assert summary["endpoints"] == 10 and summary["services"] == 1
    assert summary["new_since_last_run"].startswith("1 services, 10 endpoints")
    r2 = runner.invoke(main, ["replay", pcap, "--db", db, "--workers", "1"])
    assert r2.exit_code == 0 and "already replayed" in r2.output
    import sqlite_utils

    hits = sqlite_utils.Database(db).execute("select hits from services").fetchone()[0]
    assert hits == 49
    r3 = runner.invoke(main, ["replay", pcap, "--db", db, "--force", "--json", "--workers", "1"])
    assert r3.exit_code == 0, r3.output
    assert json.loads(r3.output)["new_since_last_run"].startswith("0 services, 0 endpoints")
    assert sqlite_utils.Database(db).execute("select hits from services").fetchone()[0] == 98


def test_changes_since_and_not_seen_since(tmp_path):
    db = str(tmp_path / "inv.db")
    build(db, txs(DEMO), txs(MISC)).close()
    runner = CliRunner()
    r = runner.invoke(main, ["changes", "--db", db, "--json"])
    rows = json.loads(r.output)
    kinds = {x["kind"] for x in rows}
    assert {"service", "endpoint"} <= kinds
    demo_first = min(tx.ts for tx in txs(DEMO))
    misc_first = min(tx.ts for tx in txs(MISC))
    assert misc_first > demo_first
    from discovery.inventory import iso

    since = iso(misc_first)[:19]
    r = runner.invoke(main, ["changes", "--db", db, "--since", since, "--json", "--kind", "service"])
    assert [x["service"] for x in json.loads(r.output)] == ["127.0.0.41"]
    r = runner.invoke(main, ["changes", "--db", db, "--not-seen-since", since, "--json"])
    quiet = json.loads(r.output)
    assert {x["service"] for x in quiet if x["kind"] == "service"} == {
        "gateway.shop.local",
        "users.shop.local",
        "orders.shop.local",
        "inventory.shop.local",
    }
    assert r.exit_code == 0


def test_new_parameters_and_fields_of_known_endpoints_are_changes(tmp_path):
    first = [t for t in txs(DEMO) if "sku=" not in (t.uri or "")]
    store = build(str(tmp_path / "inv.db"), first, txs(DEMO))
    rows = store.db.execute(
        "select kind, service, template, name, run_id from changes where run_id = 2"
    ).fetchall()
    assert ("parameter", "orders.shop.local", "/api/v1/orders", "sku", 2) in rows
    assert not any(k in ("service", "endpoint") for k, *_ in rows)


def test_listing_commands(tmp_path):
    db = str(tmp_path / "inv.db")
    build(db, txs(DEMO)).close()
    runner = CliRunner()
    r = runner.invoke(main, ["services", "--db", db])
    assert r.exit_code == 0 and "users.shop.local" in r.output and "127.0.0.11:8000" in r.output
    r = runner.invoke(main, ["endpoints", "--db", db, "--service", "users.shop.local", "--json"])
    eps = json.loads(r.output)
    assert {e["template"] for e in eps} >= {"/api/v1/users/{user}", "/api/v1/users/me"}
    r = runner.invoke(main, ["endpoints", "--db", db, "--csv"])
    assert r.output.splitlines()[0].startswith("id,service,method,template")
    assert len(r.output.splitlines()) == 22
    r = runner.invoke(main, ["endpoints", "--db", db, "--service", "nope"])
    assert r.exit_code == 2
