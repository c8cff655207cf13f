"""The sensor must not become the leak: nothing sensitive reaches the database or the exports.

The findings fixtures (every labelled sensitive value) and the demo capture (its SSNs, cards,
JWTs, emails, phones, passwords, dates of birth and addresses) are replayed with the real
``apisensor replay`` (every sink it runs: transactions, inventory, map, findings); then every
text/blob cell of every table, the OpenAPI document of every service and the JSON exports are
scanned for the raw values, in the forms a value takes when stored (as is, percent-encoded,
JSON-escaped, digits only).  The same scan over a database replayed with raw samples kept must
find them (so the scan can fail), and redaction must keep what is not sensitive.
"""

from __future__ import annotations

import html
import json
import os
import re
import sqlite3
import time
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner
from conftest import PCAPS, ROOT, all_text

from discovery.detectors.evaluate import load_labels
from discovery.detectors.redaction import Hasher
from discovery.redact import KEEP_RAW_ENV, Redactor, hash_key
from discovery.store import Store
from sensor.cli import SINKS, main
from sensor.pipeline import transactions_from_files

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "findings")
DEMO = os.path.join(PCAPS, "demo.pcap")

# pcaps/README.md "What leaks where": the two user profiles and the sign-ups
DEMO_VALUES = {
    "668-57-7855", "160-32-0141",  # SSNs
    "4012888888881881", "4242424242424242",  # cards
    "mateo.nguyen29@gmail.com", "emma.delgado46@yahoo.com",  # emails
    "(617) 784-0468", "+13038392767",  # phones
    "2001-01-07", "1973-06-22",  # dates of birth
    "595 Elm Court", "7904 Willow Way",  # street addresses
}


def demo_values() -> set[str]:
    """The demo's sensitive values: the ones above, the bearer JWTs of its Authorization headers,
    and the emails and passwords of its sign-up bodies (read from the capture)."""
    values = set(DEMO_VALUES)
    for tx in transactions_from_files([DEMO]):
        for k, v in tx.request_headers:
            if k.lower() == "authorization" and " " in v:
                values.add(v.split(" ", 1)[1].strip())
        if tx.request_body[:1] == b"{":
            try:
                body = json.loads(tx.request_body)
            except ValueError:
                continue
            if isinstance(body, dict):
                values.update(body[k] for k in ("email", "password") if isinstance(body.get(k), str))
    return values


def fixture_values(labels: dict) -> set[str]:
    # 6+ characters, as in test_findings: shorter ones ("pw1") occur by chance in other text
    return {v for s in labels.values() for v in s["sensitive"] + s["uri_sensitive"] if len(v) >= 6}


def forms(value: str) -> set[str]:
    """How a value can look once stored: as is, percent-encoded, JSON-escaped, HTML-escaped, and
    digits only for numbers written with separators (an SSN, a card, a phone)."""
    out = {value, quote(value, safe=""), quote(value), quote_plus(value), html.escape(value)}
    out.add(json.dumps(value)[1:-1])
    out.add(json.dumps(value, ensure_ascii=False)[1:-1])
    if "@" in value:
        out.add(value.lower())
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 9 and re.fullmatch(r"[\d\s().+-]+", value):
        out.add(digits)
    return out


def leaks_in(cells, values: set[str]) -> dict[tuple[str, str], set[str]]:
    """{(table, column): {value, ...}} for every value found in some form in some cell."""
    needles = {f: v for v in values for f in forms(v)}
    out: dict[tuple[str, str], set[str]] = {}
    for table, col, text in cells:
        for f, v in needles.items():
            if f in text:
                out.setdefault((table, col), set()).add(v)
    return out


def replay_cli(db: str, pcaps: list[str]) -> None:
    r = CliRunner().invoke(main, ["replay", *pcaps, "--db", db, "--no-progress"])
    assert r.exit_code == 0, r.output


def replay_sinks(store: Store, pcaps: list[str]) -> None:
    """What `apisensor replay` does, with the sinks of sensor.cli.SINKS on a given store."""
    import importlib

    run = store.begin_run(pcaps)
    sinks = []
    for spec in SINKS:
        mod, _, cls = spec.partition(":")
        sinks.append(getattr(importlib.import_module(mod), cls)(store, run))
    for i, tx in enumerate(transactions_from_files(pcaps), 1):
        for s in sinks:
            s.observe(tx)
        if i % 100 == 0:
            for s in sinks:
                s.flush()
    for s in sinks:
        s.finish()
    store.finish_run(run, {})


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """One database: every findings fixture and the demo, replayed by the real CLI."""
    labels = load_labels(FIXTURES)
    pcaps = [os.path.join(FIXTURES, s["pcap"]) for s in labels.values()] + [DEMO]
    db = str(tmp_path_factory.mktemp("redaction") / "inv.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(KEEP_RAW_ENV, raising=False)
        mp.delenv("APISENSOR_HASH_KEY", raising=False)
        replay_cli(db, pcaps)
    return db, labels, fixture_values(labels), demo_values()


@pytest.fixture(scope="module")
def raw_db(tmp_path_factory):
    """The same traffic with raw samples kept (the opt-in): the scan must find the values."""
    labels = load_labels(FIXTURES)
    pcaps = [os.path.join(FIXTURES, s["pcap"]) for s in labels.values()] + [DEMO]
    db = str(tmp_path_factory.mktemp("raw") / "raw.db")
    store = Store(db, keep_raw_samples=True)
    replay_sinks(store, pcaps)
    store.close()
    return db


# ---- nothing sensitive in the database ---------------------------------------------------------


def test_the_values_are_many_and_in_the_traffic(replayed):
    _db, _labels, fixture, demo = replayed
    assert len(fixture) > 300
    assert len(demo) >= 19 and sum(v.startswith("eyJ") for v in demo) == 3  # three bearer JWTs
    assert {"Harper!9027secure", "harper.quinn@gmail.com"} <= demo


def test_no_fixture_value_anywhere_in_the_database(replayed):
    db, _labels, fixture, _demo = replayed
    leaks = leaks_in(all_text(db), fixture)
    assert not leaks, {k: sorted(v)[:3] for k, v in leaks.items()}


def test_no_demo_value_anywhere_in_the_database(replayed):
    db, _labels, _fixture, demo = replayed
    leaks = leaks_in(all_text(db), demo)
    assert not leaks, {k: sorted(v)[:3] for k, v in leaks.items()}


def test_the_scan_finds_them_when_raw_samples_are_kept(replayed, raw_db):
    # the same scan over the opt-in database: the values are there (the tests above can fail),
    # in each of the places that redaction covers
    _db, _labels, fixture, demo = replayed
    leaks = leaks_in(all_text(raw_db), fixture | demo)
    where = set(leaks)
    for place in [
        ("samples", "response_body"),
        ("samples", "request_body"),
        ("samples", "uri"),
        ("observed_paths", "data"),
        ("parameters", "examples"),
        ("endpoints", "examples"),
        ("transactions", "uri"),
    ]:
        assert place in where, (place, sorted(where))
    assert {"668-57-7855", "4012888888881881"} <= leaks[("samples", "response_body")]
    assert "kristen52@example.com" in leaks[("transactions", "uri")]
    # credentials in headers are redacted even then
    assert not any(v.startswith("eyJ") for v in leaks.get(("transactions", "request_headers"), ()))
    assert not any(v.startswith("eyJ") for v in leaks.get(("samples", "request_headers"), ()))
    con = sqlite3.connect(raw_db)
    runs = con.execute("select value from meta where key = 'raw_samples_runs'").fetchone()[0]
    assert json.loads(runs) == [1]
    con.close()


def test_the_hash_key_is_not_in_the_database(replayed):
    db, *_ = replayed
    with open(db + ".key", "rb") as f:
        key = f.read()
    assert len(key) >= 16 and os.stat(db + ".key").st_mode & 0o077 == 0
    for _t, _c, text in all_text(db):
        assert key.hex() not in text.lower() and key.decode("latin-1") not in text


# ---- nor in the exports ----------------------------------------------------------------------------


def test_no_value_in_the_openapi_documents_or_json_exports(replayed):
    db, _labels, fixture, demo = replayed
    runner = CliRunner()
    con = sqlite3.connect(db)
    services = [n for (n,) in con.execute("select name from services where endpoints > 0")]
    con.close()
    assert "users.shop.local" in services and len(services) >= 5
    outputs = []
    for s in services:
        r = runner.invoke(main, ["openapi", "--db", db, "--service", s])
        assert r.exit_code == 0, r.output
        outputs.append((f"openapi {s}", r.output))
    for args in (["endpoints", "--json"], ["services", "--json"], ["findings", "--json"], ["changes"]):
        r = runner.invoke(main, [*args, "--db", db])
        assert r.exit_code == 0, r.output
        outputs.append((" ".join(args), r.output))
    leaks = leaks_in(((name, "", out) for name, out in outputs), fixture | demo)
    assert not leaks, {k: sorted(v)[:3] for k, v in leaks.items()}


# ---- what stays -----------------------------------------------------------------------------------


def _sample(db: str, service: str, template: str) -> dict:
    con = sqlite3.connect(db)
    row = con.execute(
        "select sa.uri, sa.response_body, sa.request_headers from samples sa join endpoints e on "
        "e.id = sa.endpoint_id join services s on s.id = e.service_id where s.name = ? and e.template = ? "
        "and sa.status_code = 200",
        [service, template],
    ).fetchone()
    con.close()
    return {"uri": row[0], "body": json.loads(row[1]), "headers": json.loads(row[2])}


def test_samples_keep_structure_and_what_is_not_sensitive(replayed):
    db, *_ = replayed
    s = _sample(db, "users.shop.local", "/api/v1/users/{user}/profile")
    body = s["body"]
    assert set(body) >= {"id", "uuid", "username", "email", "phone", "ssn", "date_of_birth", "address"}
    assert body["payment_card"]["card_number"] == "4012********1881"
    assert body["ssn"] == "***-**-7855"
    assert body["phone"] == "(***) ***-0468"
    assert re.fullmatch(r"<redacted:email [0-9a-f]{16}>", body["email"])
    assert body["date_of_birth"].startswith("<redacted:date_of_birth ")
    assert body["address"]["street"].startswith("<redacted:street_address ")
    # not sensitive: kept as seen
    assert body["address"]["city"] == "Boston" and body["payment_card"]["brand"] == "visa"
    assert body["uuid"] == "1e5fe8db-566d-4ada-a1c3-555c1adeacb9" and body["id"] == 1006
    assert body["payment_card"]["exp_year"] == 2027 and body["created_at"] == "2022-12-23T03:53:44Z"
    assert s["uri"] == "/api/v1/users/1e5fe8db-566d-4ada-a1c3-555c1adeacb9/profile"
    auth = dict(s["headers"])["Authorization"]
    assert re.fullmatch(r"Bearer <redacted:credential [0-9a-f]{16}>", auth)


def test_redacted_values_match_the_findings_hashes(replayed):
    # the same keyed hash as the findings: a sample's email can be matched with its finding
    db, *_ = replayed
    hasher = Hasher(hash_key(db))
    body = _sample(db, "users.shop.local", "/api/v1/users/{user}/profile")["body"]
    h = hasher("mateo.nguyen29@gmail.com")
    assert body["email"] == f"<redacted:email {h}>"
    con = sqlite3.connect(db)
    rows = con.execute("select value_hashes from findings where detector = 'pii.email'").fetchall()
    hashes = [json.loads(v) for (v,) in rows]
    con.close()
    assert any(h in hs for hs in hashes)


def test_uris_of_every_transaction_keep_what_is_not_sensitive(replayed):
    db, *_ = replayed
    con = sqlite3.connect(db)
    stored = [u for (u,) in con.execute("select uri from transactions")]
    con.close()
    raw_demo = {tx.uri for tx in transactions_from_files([DEMO])}
    assert len(stored) > 500
    assert raw_demo <= set(stored)  # nothing in the demo's URLs is sensitive: all kept as sent
    expect = {
        "/search?q=password+reset&page=2&sort=key",
        "/items?token_type=bearer&session_length=30",
        "/page?keyword=secret+garden&lang=en",
        "/files/sha256/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "/api/v1/users/8f14e45f-ceea-467f-a0e6-0a5f0b4e9d4b",
    }
    assert expect <= set(stored)
    joined = "\n".join(stored)
    for pattern in [
        r"/reset\?token=<redacted:secret [0-9a-f]{16}>&email=<redacted:email [0-9a-f]{16}>",
        r"/api/data\?api_key=<redacted:stripe_secret_key [0-9a-f]{16}>&limit=10",
        r"/legacy/login\?username=richard30&password=<redacted:password [0-9a-f]{16}>",
        r"/download/<redacted:jwt [0-9a-f]{16}>/report\.pdf",
        r"/shop;jsessionid=<redacted:secret [0-9a-f]{16}>\?item=3",
        r"/maps/embed\?key=<redacted:google_api_key [0-9a-f]{16}>&q=Berlin",
    ]:
        assert re.search(pattern, joined), pattern


# ---- the redactor itself ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def red():
    return Redactor(Hasher(b"k" * 32))


@pytest.mark.parametrize(
    "uri",
    [
        "/",
        "/api/v1/orders?limit=10&page=3",
        "/api/v1/orders/4622fb2ac7b2bec1cd55f9af/invoice",
        "/api/v2/items/KTN-30907/stock",
        "/api/v1/users/1006",
        "/api/v1/search?q=lamp&limit=5",
        "/cb?code=4%2F0AY0e-g7&state=af0ifjsldkj",
        "/wp-login.php",
        "/api/v2/../../../../etc/passwd",
        "/report?from=2024-01-01T00:00:00Z&to=2024-02-01",
    ],
)
def test_uri_not_sensitive_is_kept_as_is(red, uri):
    assert red.uri(uri) == uri


@pytest.mark.parametrize(
    "uri,kept,gone",
    [
        ("/u/john.doe@gmail.com/orders", "/u/<redacted:email ", "john.doe"),
        ("/users/668-57-7855", "/users/***-**-7855", "668-57"),
        ("/pay?card=4111111111111111&amount=3", "card=4111********1111&amount=3", "41111111"),
        ("/x?access_token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ5In0.772J5v2clFlpOTkmyjWz3fNnMstKzG0F4yo8imGi7yA",
         "access_token=<redacted:jwt ", "eyJ"),
        ("/hook?sig=AbC9dEf8GhI7jKl6MnO5pQr4StU3", "sig=<redacted:secret ", "AbC9"),
        ("http://bob:hunter2@x.example/a?b=1", "http://<redacted:userinfo ", "hunter2"),
        ("/a;JSESSIONID=2A57125C4F031A64853C2B00F8F07965/b", "/a;JSESSIONID=<redacted:", "2A5712"),
        ("/graphql?query=%7Buser(email%3A%22a.b%40gmail.com%22)%7Bid%7D%7D", "query=%7Buser", "a.b%40"),
        ("/t/W5361PswBXR13qqsA2V4TooTlJC93B9iEIcGCZfB", "/t/<redacted:token ", "W5361"),
    ],
)
def test_uri_sensitive_parts_are_redacted(red, uri, kept, gone):
    out = red.uri(uri)
    assert kept in out and gone not in out, out


def test_json_values_by_key_and_by_look(red):
    doc = {
        "user": {"pwd": "#N90+*mbGeMZ", "password_policy": "min 8 chars", "has_password": True},
        "hash": "$2b$12$v.sKHHfKpVjDv653nvICMc0HRFloVf.RnLIplvf1xYRsJJXqu6tbb",
        "credentials": {
            "type": "service", "payments_key": "sk_test_p7EGvP2HZiPiTdCQ0bnyEUhw", "x": "q8Zr2kLmN0"
        },
        "token_type": "Bearer",
        "expires_in": 3600,
        "pan": 347947628230587,
        "SSN": "884902081",
        "iban": "NL20FELX3642006100",
        "national_id": "CSTBCC44A47B161J",
        "note": "call +1 212-870-3756 or write to julie.espinoza@example.com",
        "reference": "3206241658518334",  # the key says it is not a card
        "build": "47f8a691e143c9e25d400aff77ce8130be6ec664",
        "ids": [1, 2, 3],
    }
    out = red.json(doc)
    assert out["user"]["pwd"].startswith("<redacted:password ")
    assert out["user"]["password_policy"] == "min 8 chars" and out["user"]["has_password"] is True
    assert out["hash"].startswith("<redacted:password_hash ")
    assert out["credentials"]["type"] == "service"
    assert out["credentials"]["payments_key"].startswith("<redacted:stripe_secret_key ")
    assert out["credentials"]["x"].startswith("<redacted:secret ")
    assert out["token_type"] == "Bearer" and out["expires_in"] == 3600
    assert out["pan"] == "3479*******0587" and out["SSN"] == "***-**-2081"
    assert out["iban"] == "NL20**********6100" and out["national_id"] == "**************1J"
    assert "212-870" not in out["note"] and "julie" not in out["note"] and out["note"].startswith("call ")
    assert out["reference"] == doc["reference"] and out["build"] == doc["build"] and out["ids"] == [1, 2, 3]


def test_keys_that_are_data(red):
    # a map keyed by email or token: the key is redacted in samples, a placeholder in schemas
    from discovery import schema

    doc = {"by_email": {"ann.lee@example.com": {"orders": 3}}, "sk_live_azzLf0XSvqL5cbVPzLcxx53f": 1, "n": 2}
    out = red.json(doc)
    (key,) = out["by_email"]
    assert key.startswith("<redacted:email ") and out["by_email"][key] == {"orders": 3}
    assert any(k.startswith("<redacted:stripe_secret_key ") for k in out) and out["n"] == 2
    node = schema.observe(None, doc, 0.0)
    assert set(node["p"]) == {"by_email", "{stripe_secret_key}", "n"}
    assert set(node["p"]["by_email"]["p"]) == {"{email}"}
    assert "ann.lee" not in red.json_text(doc, 2048)


def test_text_bodies(red):
    page = (
        "<li>Email: <a href='mailto:amanda21@example.com'>amanda21@example.com</a></li>"
        "<li>Phone: (212) 549-2337</li><li>SSN: 678-11-0436</li><li>Card on file: 4264 1016 6355 8004</li>"
        "<li>Member since 2001</li>"
    )
    out = red.text(page)
    for v in ("amanda21", "549-2337", "678-11", "4264 1016 6355 8004"):
        assert v not in out
    assert "***-**-0436" in out and "4264********8004" in out and "Member since 2001" in out
    env = (
        "AWS_ACCESS_KEY_ID=AKIAGRDIBIEIBE7LFRPO\nAWS_SECRET_ACCESS_KEY=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\n"
        "STRIPE_SECRET_KEY=sk_live_aY0ulEeAVVgOyqCMxKvo9Lyf\nDB_PASSWORD=hunter2\nLOG_LEVEL=info\n"
    )
    out = red.text(env)
    assert "AKIAGRD" not in out and "J5qLwN2" not in out and "aY0ulE" not in out and "hunter2" not in out
    assert "STRIPE_SECRET_KEY=<redacted:stripe_secret_key " in out and "LOG_LEVEL=info" in out
    pem = (
        "key:\n-----BEGIN PRIVATE KEY-----\nMIICdwIBADANBgkqhkiG9w0BAQEFAASCAmEwggJdAgEAAoGBAKMT0F5ShzIB\n"
        "-----END PRIVATE KEY-----\nafter"
    )
    out = red.text(pem)
    assert "MIICdw" not in out and out.startswith("key:\n<redacted:private_key ") and out.endswith("\nafter")


def test_csv_cells_under_their_column(red):
    text = "id,name,email,phone,ssn,card\n1,Ann,ann.lee@example.com,8099634395,884-90-2081,4130722550852838\n"
    out = red.csv(text)
    assert out.splitlines()[0] == "id,name,email,phone,ssn,card"
    row = out.splitlines()[1]
    assert row.startswith("1,Ann,<redacted:email ")
    assert "8099634395" not in row and "884-90" not in row and "4130722550852838" not in row


def test_headers(red):
    out = dict(
        red.headers(
            [
                ("Authorization", "Basic YmV0dHkzODpJciMxRmkmUiVv"),
                ("Cookie", "theme=dark; sessionid=W5361PswBXR13qqsA2V4TooTlJC93B9iEIcGCZfB"),
                ("Location", "/reset?token=PLw6Ok2Pl7vyOXGwsCwMMTAypq7pisZK&next=%2Fhome"),
                ("X-User-Email", "john.doe@gmail.com"),
                ("X-Session-Token", "Token 9f8e7d6c5b4a3f2e1d0cAbCd"),
                ("Server", "Werkzeug/3.1.9 Python/3.11.7"),
                ("Content-Type", "application/json"),
            ]
        )
    )
    assert re.fullmatch(r"Basic <redacted:credential [0-9a-f]{16}>", out["Authorization"])
    assert out["Cookie"].startswith("theme=<redacted:cookie ")
    assert "; sessionid=<redacted:cookie " in out["Cookie"]
    assert out["Location"].startswith("/reset?token=<redacted:") and out["Location"].endswith("&next=%2Fhome")
    assert out["X-User-Email"].startswith("<redacted:email ")
    assert out["X-Session-Token"].startswith("Token <redacted:secret ")
    assert out["Server"] == "Werkzeug/3.1.9 Python/3.11.7" and out["Content-Type"] == "application/json"


def test_redacting_twice_changes_nothing(red):
    once = red.json({"email": "a.b@gmail.com", "ssn": "668-57-7855", "card": "4012888888881881", "pw": "x"})
    assert red.json(once) == once
    text = red.text("mail a.b@gmail.com, card 4012 8888 8888 1881")
    assert red.text(text) == text
    uri = red.uri("/r?token=PLw6Ok2Pl7vyOXGwsCwMMTAypq7pisZK&e=a.b%40gmail.com")
    assert red.uri(uri) == uri


def test_keep_raw_keeps_values_but_not_credentials():
    raw = Redactor(Hasher(b"k" * 32), keep_raw=True)
    uri = "/r?token=abcdefabcdef123456&e=a.b%40gmail.com"
    assert raw.uri(uri) == uri
    assert raw.json({"ssn": "668-57-7855"}) == {"ssn": "668-57-7855"}
    assert raw.header("Authorization", "Bearer eyJabc.eyJdef.ghi").startswith("Bearer <redacted:credential ")
    assert raw.header("X-User-Email", "a.b@gmail.com") == "a.b@gmail.com"


def test_keep_raw_from_the_environment_warns(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(KEEP_RAW_ENV, "1")
    store = Store(str(tmp_path / "x.db"))
    assert store.keep_raw_samples and store.redactor.keep_raw
    assert "UNREDACTED" in capfd.readouterr().err
    store.close()
    monkeypatch.setenv(KEEP_RAW_ENV, "0")
    store = Store(str(tmp_path / "y.db"))
    assert not store.keep_raw_samples and not store.redactor.keep_raw
    store.close()


def test_databases_side_by_side_share_the_key_value(tmp_path):
    # each database has its own <db>.key; new ones in the same private directory start from the
    # same value, so that their hashes of one value agree (and a copy with its .key keeps working)
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    assert hash_key(a) == hash_key(b)
    with open(a + ".key", "rb") as f:
        assert f.read() == hash_key(a)
    with open(b + ".key", "wb") as f:
        f.write(b"x" * 32)  # an existing key wins
    assert hash_key(b) == b"x" * 32


def test_uri_path_is_fast(red):
    # every transaction's URI and headers are redacted: keep it cheap (a few µs here)
    uris = [f"/api/v1/orders/{i:024x}/items?page={i % 7}&limit=20&sort=created" for i in range(3000)]
    headers = [("Host", "shop.local"), ("User-Agent", "x/1"), ("Accept", "*/*"), ("Authorization", "Basic t")]
    r = Redactor(Hasher(b"k" * 32))
    t = time.perf_counter()
    for u in uris:
        r.uri(u)
        r.headers(headers)
    per_tx = (time.perf_counter() - t) / len(uris)
    assert per_tx < 200e-6, per_tx
