"""Detectors scored on labelled real captures (tests/fixtures/findings, recorded by
tests/captures/findings/make_fixtures.py from real Flask, Django, FastAPI, Express, PHP, Go,
Java, Ruby servers, documentation pages and Faker documents), and on pcaps/demo.pcap."""

import os

import pytest
from conftest import PCAPS, ROOT

from discovery.detectors import REGISTRY, detect
from discovery.detectors.evaluate import load_labels, score
from sensor.pipeline import transactions_from_files

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "findings")
FRAMEWORKS = {
    "flask_debug",
    "flask_prod",
    "django_debug",
    "django_prod",
    "fastapi_debug",
    "fastapi_prod",
    "express_dev",
    "express_prod",
    "php_display_errors",
    "php_production",
    "go_panic",
    "java_httpserver",
    "ruby_webrick",
    "docs",
    "faker_pii",
    "faker_secrets",
    "faker_requests",
    "hard_negatives",
}


@pytest.fixture(scope="module")
def scored():
    return score(FIXTURES)


def test_fixtures_are_complete_and_small():
    labels = load_labels(FIXTURES)
    assert set(labels) >= FRAMEWORKS
    total = sum(os.path.getsize(os.path.join(FIXTURES, n)) for n in os.listdir(FIXTURES))
    assert total < 3 * 1024 * 1024


def test_every_captured_transaction_is_labelled(scored):
    assert scored.unlabelled == []
    assert scored.transactions == sum(len(s["transactions"]) for s in load_labels(FIXTURES).values())


def test_every_detector_has_positives(scored):
    for name in REGISTRY.names:
        assert scored.tp[name] + scored.fn[name] >= 4, f"{name}: too few labelled positives to score"


def test_precision_and_recall_per_detector(scored):
    print("\n" + scored.table(REGISTRY.names))
    bad = [
        (d, round(scored.precision(d), 3), round(scored.recall(d), 3))
        for d in REGISTRY.names
        if scored.precision(d) < 0.95 or scored.recall(d) < 0.95
    ]
    assert not bad, f"below 0.95: {bad}; errors: {scored.errors[:20]}"


def test_error_pages_from_each_framework_are_found(scored):
    by_fixture = {}
    for kind, name, _m, _u, det, _loc in scored.errors:
        if kind == "FN" and det.startswith("errors."):
            by_fixture.setdefault(name, []).append(det)
    assert by_fixture == {}


def test_demo_pcap_findings():
    txs = list(transactions_from_files([os.path.join(PCAPS, "demo.pcap")]))
    got = {}
    for tx in txs:
        for f in detect(tx):
            got.setdefault((tx.host, f.detector), []).append((tx.uri, f))
    profile = {
        (uri.split("/")[4] if uri else "", f.location) for uri, f in got[("users.shop.local", "pii.ssn")]
    }
    assert all(u.count("-") == 4 for u, _ in profile)  # /api/v1/users/{uuid}/profile
    for det in ("pii.email", "pii.phone", "pii.ssn", "pii.card", "pii.dob", "pii.address"):
        uris = {uri for uri, f in got[("users.shop.local", det)] if f.location.startswith("response.")}
        assert uris and all(u.endswith("/profile") for u in uris), det
    traces = got[("orders.shop.local", "errors.stack_trace")]
    assert len(traces) == 4 and all(f.kind == "python" for _, f in traces)
    assert any("ZeroDivisionError" in f.evidence for _, f in traces)
    assert any("InvalidOperation" in f.evidence for _, f in traces)
    banners = {f.location for _, f in got[("inventory.shop.local", "disclosure.version_banner")]}
    assert banners == {"response.header:server", "response.header:x-powered-by"}
    assert ("gateway.shop.local", "pii.ssn") not in got  # the gateway does not pass the SSN on
    assert {f.location for _, f in got[("gateway.shop.local", "secrets.password")]} == {
        "request.body:$.password"
    }
