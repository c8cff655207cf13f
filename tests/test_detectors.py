"""Detectors, one behaviour per test: each fed the smallest real HTTP exchange that shows it.

Transactions are built from real bytes (request/response heads and bodies as a server would
send them); the labelled-capture scores are in test_detectors_fixtures.py.
"""

import json

import pytest

from discovery.detectors import REGISTRY, detect
from discovery.detectors.base import key_words
from discovery.detectors.pii import card_brand
from discovery.detectors.redaction import Hasher, mask_digits, scrub
from discovery.detectors.secrets import github_checksum_ok
from discovery.findings import path_template
from sensor.transaction import Transaction


def tx(
    body=b"",
    *,
    status=200,
    ctype="application/json",
    method="GET",
    uri="/api/x",
    req_headers=(),
    resp_headers=(),
    req_body=b"",
    req_ctype=None,
):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    rh = (("Host", "api.test"),) + tuple(req_headers)
    if req_ctype:
        rh += (("Content-Type", req_ctype),)
    return Transaction(
        ts=1.0,
        client_ip=b"\x7f\x00\x00\x01",
        client_port=40000,
        server_ip=b"\x7f\x00\x00\x02",
        server_port=80,
        method=method,
        uri=uri,
        request_headers=rh,
        request_body=req_body,
        request_body_len=len(req_body),
        status_code=status,
        response_headers=(("Content-Type", ctype),) + tuple(resp_headers),
        response_body=body,
        response_body_len=len(body),
    )


def found(t, detector=None):
    return {(f.detector, f.location) for f in detect(t) if detector is None or f.detector == detector}


# ---- pii -----------------------------------------------------------------------------------
def test_card_luhn_and_brand_required():
    assert found(tx({"card_number": "4111 1111 1111 1111"}), "pii.card") == {
        ("pii.card", "response.body:$.card_number")
    }
    assert not found(tx({"card_number": "4111 1111 1111 1112"}), "pii.card")  # fails Luhn
    assert not found(tx({"reference": "1234567812345670"}), "pii.card")  # Luhn ok, no brand prefix
    assert card_brand("378282246310005") == "amex" and card_brand("5555555555554444") == "mastercard"


def test_card_keys_that_deny_and_decimals():
    assert not found(tx({"order_number": "4532015112830366"}), "pii.card")  # a Luhn-valid order number
    assert not found(tx(b"total 0.4532015112830366 EUR", ctype="text/plain"), "pii.card")
    assert found(tx(b"paid with 4532015112830366 today", ctype="text/plain"), "pii.card")


def test_card_as_json_number_under_card_key():
    assert found(tx(b'{"pan": 4012888888881881}'), "pii.card") == {("pii.card", "response.body:$.pan")}


def test_ssn_rules():
    assert found(tx({"ssn": "536-22-1234"}), "pii.ssn")
    assert found(tx({"ssn": "536221234"}), "pii.ssn")  # key gives context to the bare form
    for bad in ("000-12-3456", "666-12-3456", "912-34-5678", "536-00-1234", "536-22-0000"):
        assert not found(tx({"ssn": bad}), "pii.ssn"), bad
    assert not found(tx({"id": "536221234"}), "pii.ssn")  # 9 digits without context


def test_email_and_not_file_names_or_role_accounts():
    assert found(tx({"contact": "Jane.Doe+x@mail.example.org"}), "pii.email")
    assert not found(tx({"logo": "img/logo@2x.png"}), "pii.email")
    assert not found(tx(b"<p>Write to support@shop.example</p>", ctype="text/html"), "pii.email")


def test_phone_needs_key_or_valid_formatting():
    assert found(tx({"mobile": "001-303-555-0199x12"}), "pii.phone")  # possible number under a phone key
    assert found(tx(b"call (617) 784-0468 now", ctype="text/plain"), "pii.phone")
    assert not found(tx({"sku": "212-555-01"}), "pii.phone")
    assert not found(tx({"phone_verified": True, "build": "2024-05-01"}), "pii.phone")


def test_iban_checksum():
    assert found(tx({"iban": "DE89 3704 0044 0532 0130 00"}), "pii.iban")
    assert not found(tx({"iban": "DE00370400440532013000"}), "pii.iban")


def test_national_ids_with_checksums():
    assert found(tx({"bsn": "111222333"}), "pii.national_id")
    assert not found(tx({"bsn": "111222334"}), "pii.national_id")
    assert found(tx({"customer": {"cpf": "390.533.447-05"}}), "pii.national_id")
    assert found(tx(b"CF: RSSMRA85T10A562S", ctype="text/plain"), "pii.national_id")


def test_dob_and_address_by_key_only():
    t = tx(
        {
            "date_of_birth": "03/14/1985",
            "created": "03/14/1985",
            "address": "595 Elm Court, Boston",
            "ip_address": "10.1.2.3",
            "email_address": "x@y.io",
            "address_type": "home",
        }
    )
    got = found(t)
    assert ("pii.dob", "response.body:$.date_of_birth") in got and (
        "pii.dob",
        "response.body:$.created",
    ) not in got
    assert ("pii.address", "response.body:$.address") in got
    assert not {f for f in got if f[0] == "pii.address" and f[1] != "response.body:$.address"}


def test_request_side_pii_is_low_severity():
    t = tx({"id": 1}, method="POST", req_body=b'{"email": "ann@mail.test"}', req_ctype="application/json")
    (f,) = [f for f in detect(t) if f.detector == "pii.email"]
    assert f.location == "request.body:$.email" and f.severity == "low"


# ---- hard negatives ------------------------------------------------------------------------
def test_hard_negatives_stay_quiet():
    doc = {
        "id": "8f14e45f-ceea-467f-a0e6-0a5f0b4e9d4b",
        "order": "ORD-2024-000123",
        "ref": "4111111111111112",
        "ts": 1717171717,
        "ms": 1717171717123,
        "at": "2024-06-01T10:00:00Z",
        "version": "10.0.19041.1",
        "sha": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
        "img": "data:image/png;base64," + "iVBORw0KGgo" * 40,
        "masked": "************4242",
        "password": "********",
        "publishable_key": "pk_live_abcdefghijklmnop1234",
    }
    assert found(tx(doc), None) == set()


# ---- secrets -------------------------------------------------------------------------------
def test_known_token_formats_and_masking():
    body = {
        "gh": "ghp_" + "A" * 36,
        "aws": "AKIAIOSFODNN7EXAMPLE",
        "google": "AIza" + "b" * 35,
        "stripe": "sk_live_" + "c1" * 12,
    }
    fs = [f for f in detect(tx(body)) if f.detector == "secrets.api_key"]
    assert {f.kind for f in fs} == {
        "github_token",
        "aws_access_key_id",
        "google_api_key",
        "stripe_secret_key",
    }
    for f in fs:
        assert "AAAAAAAAAAAA" not in f.evidence and "IOSFODNN7" not in f.evidence


def test_github_checksum():
    import zlib

    body = "x" * 30
    n, s = zlib.crc32(body.encode()), ""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    while n:
        n, r = divmod(n, 62)
        s = alphabet[r] + s
    assert github_checksum_ok("ghp_" + body + s.rjust(6, "0"))
    assert not github_checksum_ok("ghp_" + body + "000000")


def test_generic_secret_needs_key_and_entropy():
    assert found(tx({"client_secret": "q8Zt3vN1pX7rL2mK9sD4"}), "secrets.api_key")
    assert not found(tx({"client_secret": "your-client-secret-here"}), "secrets.api_key")
    assert not found(tx({"description": "q8Zt3vN1pX7rL2mK9sD4"}), "secrets.api_key")


def test_password_fields_not_masked_not_metadata():
    t = tx(
        {
            "password": "hunter2!",
            "password_changed_at": "2024-01-01",
            "has_password": True,
            "new_password": "********",
        }
    )
    assert found(t, "secrets.password") == {("secrets.password", "response.body:$.password")}


def test_login_form_password():
    t = tx(
        b"",
        method="POST",
        req_body=b"user=ann&password=S3cr3t%21",
        req_ctype="application/x-www-form-urlencoded",
    )
    assert ("secrets.password", "request.body:$.password") in found(t)


def test_password_hash_formats():
    bcrypt = "$2b$12$" + "a" * 53
    assert found(tx({"pw": bcrypt}), "secrets.password_hash")
    assert not found(tx({"price": "$2.50 $12.99"}), "secrets.password_hash")


def test_private_key_needs_material():
    pem = (
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEICCb7F51gq0ytwXay11VBoNts4mpoVNKi4qdfcX9lGnmoAoGCCqGSM49\n"
        "-----END EC PRIVATE KEY-----\n"
    )
    assert found(tx(pem.encode(), ctype="text/plain"), "secrets.private_key")
    doc = b"Never commit a file starting with -----BEGIN RSA PRIVATE KEY----- to git."
    assert not found(tx(doc, ctype="text/plain"), "secrets.private_key")


# ---- errors --------------------------------------------------------------------------------
PY_TB = (
    b'Traceback (most recent call last):\n  File "/srv/app/views.py", line 12, in total\n'
    b"    return a / b\nZeroDivisionError: division by zero\n"
)


def test_python_traceback_and_its_path():
    got = found(tx(PY_TB, status=500, ctype="text/plain"))
    assert {("errors.stack_trace", "response.body"), ("disclosure.file_path", "response.body")} <= got
    (f,) = [
        f for f in detect(tx(PY_TB, status=500, ctype="text/plain")) if f.detector == "errors.stack_trace"
    ]
    assert f.kind == "python" and "ZeroDivisionError" in f.evidence


def test_doc_example_traceback_is_not_a_leak():
    page = (
        b"<html><body><p>Python raises ZeroDivisionError:</p><pre>Traceback (most recent call last):\n"
        b'  File "/srv/app/x.py", line 1, in &lt;module&gt;\nZeroDivisionError: division by zero</pre>'
        b"</body></html>"
    )
    assert not found(tx(page, ctype="text/html"), "errors.stack_trace")
    prose = b"A traceback starts with Traceback (most recent call last) and ends with the exception."
    assert not found(tx(prose, ctype="text/plain"), "errors.stack_trace")
    stdin = b'Traceback (most recent call last):\n  File "<stdin>", line 1, in <module>\nNameError: x\n'
    assert not found(tx(stdin, ctype="text/plain"), "errors.stack_trace")


@pytest.mark.parametrize(
    "kind,text",
    [
        (
            "java",
            "java.lang.IllegalStateException: no lines\n\tat com.acme.Orders.total(Orders.java:88)\n"
            "\tat com.acme.Api.get(Api.java:41)\n",
        ),
        (
            "nodejs",
            "TypeError: x is undefined\n    at load (/app/src/cfg.js:12:13)\n"
            "    at Layer.handle (/app/node_modules/"
            "express/lib/router/layer.js:95:5)\n",
        ),
        (
            "go",
            "panic: runtime error: index out of range\n\ngoroutine 7 [running]:\nmain.order()\n"
            "\t/src/main.go:35 +0x333\n",
        ),
        (
            "ruby",
            "NoMethodError: undefined method `x'\n\tfrom /app/lib/a.rb:7:in `total'\n"
            "\tfrom /app/lib/b.rb:3:in `run'\n",
        ),
        (
            "php",
            "<br />\n<b>Fatal error</b>:  Uncaught Exception: boom in /var/www/index.php:5\n"
            "Stack trace:\n#0 {main}",
        ),
        (
            "dotnet",
            "System.InvalidOperationException: none\n   at Shop.Svc.Get(Int32 id) in /src/Svc.cs:line 31\n"
            "   at Shop.Api.Get(Int32 id) in /src/Api.cs:line 18\n",
        ),
        ("rust", "thread 'main' panicked at src/main.rs:4:5:\nboom\nnote: run with `RUST_BACKTRACE=1`\n"),
    ],
)
def test_stack_trace_languages(kind, text):
    fs = [
        f
        for f in detect(tx(text.encode(), status=500, ctype="text/plain"))
        if f.detector == "errors.stack_trace"
    ]
    assert [f.kind for f in fs] == [kind]


def test_trace_inside_json_field():
    body = {"error": "boom", "trace": PY_TB.decode()}
    assert ("errors.stack_trace", "response.body:$.trace") in found(tx(body, status=500))


def test_sql_errors_name_the_engine():
    cases = {
        "mysql": "You have an error in your SQL syntax; check the manual that corresponds to your MySQL",
        "postgresql": 'ERROR: relation "users" does not exist',
        "oracle": "ORA-00942: table or view does not exist",
        "mssql": "Unclosed quotation mark after the character string ''.",
        "sqlite": "no such table: orders",
    }
    for kind, text in cases.items():
        fs = [f for f in detect(tx({"error": text}, status=500)) if f.detector == "errors.sql_error"]
        assert [f.kind for f in fs] == [kind], text
    assert not found(tx({"note": "use SQL carefully"}), "errors.sql_error")


def test_debug_pages():
    wz = b"<html><head><title>ZeroDivisionError // Werkzeug Debugger</title></head><body></body></html>"
    assert found(tx(wz, status=500, ctype="text/html"), "errors.debug_page")
    assert not found(tx(b"<p>Werkzeug's debugger must stay off</p>", ctype="text/html"), "errors.debug_page")


# ---- disclosure ----------------------------------------------------------------------------
def test_internal_ip_not_versions_or_loopback():
    assert found(tx({"upstream": "10.2.3.4:8080"}), "disclosure.internal_ip")
    assert not found(
        tx({"version": "10.2.0.1", "agent": "Chrome/10.0.0.1", "lo": "127.0.0.1"}), "disclosure.internal_ip"
    )
    assert found(tx({"ok": 1}, resp_headers=(("X-Backend", "192.168.4.20"),)), "disclosure.internal_ip")


def test_file_path_only_in_errors_and_not_echoed():
    assert not found(tx({"config": "/etc/app/config.yaml"}), "disclosure.file_path")
    assert found(tx({"error": "open /var/www/app/x.bin: denied"}, status=500), "disclosure.file_path")
    assert not found(
        tx({"error": "not found", "path": "/etc/passwd"}, status=404, uri="/etc/passwd"),
        "disclosure.file_path",
    )


def test_version_banners():
    got = found(tx({}, resp_headers=(("Server", "nginx/1.25.3"), ("X-Powered-By", "Express"))))
    assert {
        ("disclosure.version_banner", "response.header:server"),
        ("disclosure.version_banner", "response.header:x-powered-by"),
    } <= got
    assert not found(tx({}, resp_headers=(("Server", "nginx"),)), "disclosure.version_banner")


# ---- posture -------------------------------------------------------------------------------
def _jwt(alg):
    import base64

    def b(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b({'alg': alg, 'typ': 'JWT'})}.{b({'sub': 'u1', 'admin': True})}."


def test_cleartext_credentials_and_alg_none():
    t = tx({"ok": True}, req_headers=(("Authorization", "Bearer " + _jwt("none")),))
    got = found(t)
    assert ("posture.cleartext_credentials", "request.header:authorization") in got
    assert ("posture.jwt_alg_none", "request.header:authorization") in got
    assert not found(
        tx({"ok": 1}, req_headers=(("Authorization", "Bearer " + _jwt("HS256") + "c2ln"),)),
        "posture.jwt_alg_none",
    )


def test_session_cookies_not_preferences():
    t = tx({}, req_headers=(("Cookie", "theme=dark; sessionid=8f7a6b5c4d3e2f1a0b9c; _ga=GA1.2.3.4"),))
    assert found(t, "posture.cleartext_credentials") == {
        ("posture.cleartext_credentials", "request.cookie:sessionid")
    }


def test_credentials_in_url():
    assert found(tx({}, uri="/cb?access_token=" + "a1b2" * 8), "posture.credentials_in_url")
    assert found(tx({}, uri="/login?user=a&password=hunter2"), "posture.credentials_in_url")
    assert not found(
        tx({}, uri="/search?q=password&sort=key&token_type=bearer"), "posture.credentials_in_url"
    )


def test_unauthenticated_sensitive_only_without_credentials():
    doc = {"ssn": "536-22-1234", "email": "ann@mail.test"}
    assert found(tx(doc), "posture.unauthenticated_sensitive") == {
        ("posture.unauthenticated_sensitive", "response")
    }
    assert not found(
        tx(doc, req_headers=(("Authorization", "Bearer abcdefgh"),)), "posture.unauthenticated_sensitive"
    )


# ---- plumbing ------------------------------------------------------------------------------
def test_evidence_never_holds_the_value():
    doc = {
        "card": "4111111111111111",
        "ssn": "536-22-1234",
        "email": "ann.lee@mail.test",
        "phone": "+14155550123",
        "password": "Tr0ub4dor&3",
    }
    for f in detect(tx(doc)):
        for raw in doc.values():
            assert raw not in f.evidence, (f.detector, f.evidence)
    assert mask_digits("4111111111111111") == "4111********1111"
    assert "ann@" not in scrub("KeyError: 'ann@mail.test' at 4111 1111 1111 1111")


def test_keyed_hash_depends_on_key():
    assert Hasher(b"k1" * 16)("536221234") != Hasher(b"k2" * 16)("536221234")
    assert Hasher(b"k1" * 16)("536221234") == Hasher(b"k1" * 16)("536221234")


def test_registry_names_unique_and_families():
    names = REGISTRY.names
    assert len(names) == len(set(names))
    assert {n.split(".")[0] for n in names} == {"pii", "secrets", "errors", "disclosure", "posture"}
    assert key_words("dateOfBirth") == ("dateofbirth", ("date", "of", "birth"))


def test_path_template():
    assert (
        path_template("/api/v1/users/8f14e45f-ceea-467f-a0e6-0a5f0b4e9d4b/profile?x=1")
        == "/api/v1/users/{uuid}/profile"
    )
    assert path_template("/orders/4622fb2ac7b2bec1cd55f9af/invoice") == "/orders/{hex}/invoice"
    assert path_template("/users/17/mail/bob@x.io") == "/users/{int}/mail/{email}"


def test_broken_input_does_not_raise():
    for body in (b"\xff\xfe\x00garbage{", b"{" * 5000 + b"}" * 5000, b"<html>" + b"<b>" * 10000):
        detect(tx(body, ctype="text/html"))
        detect(tx(body))


def test_rst_and_markdown_docs_examples_are_not_leaks():
    rst = (
        b"Errors\n======\n\nRunning it prints::\n\n    Traceback (most recent call last):\n"
        b'      File "/home/user/t.py", line 3, in <module>\n    ZeroDivisionError: division by zero\n\n'
        b"Catch ``sqlite3.IntegrityError`` when inserting.\n\n"
        b'>>> 1/0\nTraceback (most recent call last):\n  File "/usr/lib/x.py", line 1\nZeroDivisionError\n'
    )
    assert found(tx(rst, ctype="text/plain"), None) == set()
    md = b'# Errors\n\n    Traceback (most recent call last):\n      File "/srv/a.py", line 2, in f\n'
    md += b"    E: x\n"
    assert found(tx(md, ctype="text/markdown"), None) == set()
    # the same trace as the body of an error response is a leak
    assert found(tx(PY_TB, status=500, ctype="text/plain"), "errors.stack_trace")
    # a 200 text body without documentation markers is not treated as documentation
    assert found(tx(PY_TB, status=200, ctype="text/plain"), "errors.stack_trace")


# ---- speed: the per-value pass is the full alternation, only skipping what cannot match ------
def _reference(values, status=200):
    """What the one alternation over all values joined (the original pass) finds in each value."""
    sc = REGISTRY.scanner
    rx = sc.compiled(sc.select("\x00".join(values), status))
    out = []
    for v in values:
        out.append([(m.lastgroup, m.start(), m.end()) for m in rx.finditer(v) if m.lastgroup[0] != "_"])
    return out


SCAN_SAMPLES = [
    "call 555-867-5309 or +44 20 7946 0958",
    "123-45-6789",
    "4111 1111 1111 1111",
    "2026-11-03T10:00:00Z",
    "8f14e45f-ceea-467f-a0e6-0a5f0b4e9d4b",
    "10.1.2.3 and fd12:3456:789a::1",
    "DE89 3704 0044 0532 0130 00",
    "bob@example.com",
    "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
    "$2b$12$KIXQJ7Q7h2Qx0b5o8rGqUu3m4y8f2pQ9Zk1tq3r5s6t7u8v9w0x1y",
    "   at System.Web.Mvc.Controller.Execute()",
    "System.NullReferenceException: Object reference not set",
    "Warning: Undefined variable $x in /var/www/index.php on line 3",
    'File "/srv/app/views.py", line 88, in get',
    "You have an error in your SQL syntax",
    "Server: nginx/1.25.3",
    "RSSMRA85T10A562S 12345678Z 131052-308T 123.456.789-09",
    "v10.0.0.1 Chrome/10.0.0.1",
    "Ⅻ٣٤٥-٦٧-٨٩٠١ ١٢٣",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",
    "",
    "plain words only",
]


def test_scan_values_matches_the_single_alternation():
    sc = REGISTRY.scanner
    for status in (200, 500):
        assert sc.scan_values(SCAN_SAMPLES, status) == _reference(SCAN_SAMPLES, status)
        for v in SCAN_SAMPLES:  # each value alone (the transaction's selection changes)
            assert sc.scan_values([v], status) == _reference([v], status), v
            assert list(sc.finditer(v, status)) == _reference([v], status)[0], v


@pytest.mark.parametrize("seed", range(3))
def test_scan_values_matches_on_random_values(seed):
    import random

    rnd = random.Random(seed)
    pieces = [
        "0",
        "1",
        "9",
        "12",
        "555",
        "4111",
        "-",
        " ",
        ".",
        "+",
        "(",
        ")",
        "@",
        "a",
        "Z",
        "x.com",
        "T10:00",
        "2026-",
        "fd",
        ":",
        "/",
        "$",
        "eyJ",
        "at ",
        "Exception: ",
        "SQL",
        "\n",
        "é",
        "٣",
    ]
    values = ["".join(rnd.choice(pieces) for _ in range(rnd.randrange(1, 30))) for _ in range(300)]
    assert REGISTRY.scanner.scan_values(values, 200) == _reference(values)


def test_scan_values_of_values_that_differ_only_in_their_digits():
    """What a value may match is remembered by its shape (ASCII digits as "0"): values that
    differ only in their digits still get exactly the single alternation's matches."""
    import random

    rnd = random.Random(7)
    sc = REGISTRY.scanner
    base = [
        *SCAN_SAMPLES,
        "10.0.0.1",
        "192.168.1.20:8080",
        "+1 415 555 0100",
        "(020) 7946 0958",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.59008846",
        "/api/v1/users/835424",
        "12345678Z",
        "131052+308T",
        "4111-1111-1111-1111",
    ]
    for _ in range(8):
        values = ["".join(rnd.choice("0123456789") if c in "0123456789" else c for c in v) for v in base]
        for status in (200, 500):
            assert sc.scan_values(values, status) == _reference(values, status)
            for v in values:
                assert sc.scan_values([v], status) == _reference([v], status), v


def test_large_json_lists_are_walked_by_column_with_the_same_locations():
    items = [
        {"id": i, "name": "same", "tags": ["a", "b"], "profile": {"phone": "+1 415 555 0100"}}
        for i in range(300)
    ]
    items[250]["email"] = "late.user@corp.example"  # an optional member deep in the list
    items[7]["note"] = None
    t = tx({"items": items, "meta": {"card_number": "4111111111111111"}})
    got = found(t)
    assert ("pii.email", "response.body:$.items[*].email") in got
    assert ("pii.phone", "response.body:$.items[*].profile.phone") in got
    assert ("pii.card", "response.body:$.meta.card_number") in got
    from discovery.detectors.context import MAX_COLUMN_VALUES, Context

    ctx = Context(t, REGISTRY.scanner, Hasher(), REGISTRY.wants)
    # values that no detector can use are not leaves: ids, "same", tags
    assert {lf.location for lf in ctx.leaves} == {
        "request.path",
        "response.body:$.items[*].email",
        "response.body:$.items[*].profile.phone",
        "response.body:$.meta.card_number",
    }
    assert len(ctx.leaves_at("response.body:$.items[*].profile.phone")) == 1  # repeats looked at once
    many = tx({"users": [{"email": f"user{i}@corp.example"} for i in range(100)]})
    ctx = Context(many, REGISTRY.scanner, Hasher(), REGISTRY.wants)
    assert len(ctx.leaves_at("response.body:$.users[*].email")) == MAX_COLUMN_VALUES
    # without the registry's key filter every value is a leaf
    full = Context(t, REGISTRY.scanner, Hasher())
    assert "response.body:$.items[*].name" in {lf.location for lf in full.leaves}


def test_trace_lines_in_a_json_array_are_read_together():
    lines = PY_TB.decode().splitlines()
    got = found(tx({"error": "boom", "trace": lines}, status=500), "errors.stack_trace")
    assert got == {("errors.stack_trace", "response.body:$.trace[*]")}


def test_detect_without_bodies_keeps_headers_and_url():
    t = tx(
        {"ssn": "668-57-7855"},
        uri="/x?token=ghp_" + "a" * 36,
        req_headers=(("Authorization", "Basic dXNlcjpwYXNz"),),
    )
    dets = {f.detector for f in REGISTRY.detect(t, bodies=False)}
    assert {"posture.cleartext_credentials", "posture.credentials_in_url"} <= dets
    assert "pii.ssn" not in dets
    assert "pii.ssn" in {f.detector for f in REGISTRY.detect(t)}


def test_fast_ssn_rules_are_stdnums():
    import random

    from stdnum.us import ssn

    from discovery.detectors.pii import ssn_valid

    rnd = random.Random(5)
    values = ["078051120", "457555462", "219099999", "000123456", "666123456", "900123456", "123001234"]
    values += ["123450000", "12345678", "１２３４５６７８９"]
    values += ["".join(rnd.choice("0123456789") for _ in range(9)) for _ in range(3000)]
    assert [ssn_valid(v) for v in values] == [ssn.is_valid(v) for v in values]
