"""Naming rules of the map (graph.identity) and the bounded latency histogram (graph.collect)."""

from __future__ import annotations

import random

import pytest

from graph.build import group_of
from graph.collect import LATENCY_RATIO, auth_scheme, latency_bucket, latency_quantile
from graph.identity import Resolver, split_address
from graph.render import short_name


def test_split_address():
    assert split_address("10.0.0.5:8080") == ("10.0.0.5", 8080)
    assert split_address("10.0.0.5") == ("10.0.0.5", None)
    assert split_address("[::1]:80") == ("::1", 80)
    assert split_address("[::1]") == ("::1", None)
    assert split_address("api.example.com:8080") is None
    assert split_address("api.example.com") is None
    assert split_address("10.0.0.5:http") is None


NAMES = [
    ("10.0.0.1", 80, "api.shop.test", "host", 50),
    ("10.0.0.1", 80, "www.shop.test", "host", 5),  # a second virtual host on the same address
    ("10.0.0.1", 0, "lb.shop.test", "dns", 3),
    ("10.0.0.2", 0, "db.shop.test", "dns", 1),
    ("10.0.0.3", 0, "b.shop.test", "dns", 2),
    ("10.0.0.3", 0, "a.shop.test", "dns", 2),  # a tie: broken on the name
    ("10.0.0.4", 443, "pay.shop.test", "sni", 7),
]


def test_service_naming_rules():
    r = Resolver(NAMES, ["10.0.0.9:8080"])
    assert r.service("api.shop.test") == "api.shop.test"  # a Host name stays
    assert r.service("10.0.0.1:80") == "api.shop.test"  # address: the most seen Host there
    assert r.service("10.0.0.1") == "api.shop.test"  # Host "10.0.0.1" (port 80/443 dropped)
    assert r.service("10.0.0.4:443") == "pay.shop.test"  # by SNI
    assert r.service("10.0.0.2:5432") == "db.shop.test:5432"  # DNS, with its port
    assert r.service("10.0.0.2:443") == "db.shop.test"
    assert r.service("10.0.0.3:80") == "a.shop.test"
    assert r.service("10.0.0.9:8080") == "10.0.0.9:8080"  # nothing known
    assert r.service("[::1]:80") == "[::1]:80"


def test_client_naming_rules():
    r = Resolver(NAMES, ["10.0.0.9:8080"])
    assert r.client("10.0.0.1") == "api.shop.test"  # serves: becomes what it serves (most used name)
    assert r.client("10.0.0.4") == "pay.shop.test"
    assert r.client("10.0.0.9") == "10.0.0.9:8080"  # serves, unnamed: the service it is
    assert r.client("10.0.0.2") == "db.shop.test"  # does not serve: its DNS name
    assert r.client("10.0.0.77") == "10.0.0.77"


def test_groups_and_short_names():
    assert group_of("orders-api.orders.internal") == "orders.internal"
    assert group_of("orders.internal:5432") == "orders.internal"
    assert group_of("example.com") == "example.com"
    assert group_of("10.1.2.3:80") == "10.1.2.0/24"
    assert group_of("[2001:db8::5]:80") == "2001:db8::/64"
    assert short_name("orders-api.orders.internal", "orders.internal") == "orders-api"
    assert short_name("orders-pg.orders.internal:5432", "orders.internal") == "orders-pg:5432"
    assert short_name("10.1.2.3:80", "10.1.2.0/24") == "10.1.2.3:80"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_latency_quantiles_within_bucket_error(seed):
    rng = random.Random(seed)
    samples = sorted(rng.lognormvariate(-5, 1.2) for _ in range(20000))
    hist: dict[int, int] = {}
    for s in samples:
        b = latency_bucket(s)
        hist[b] = hist.get(b, 0) + 1
    assert len(hist) < 256  # bounded whatever the number of samples
    for q in (0.5, 0.95, 0.99):
        exact = samples[int(q * len(samples)) - 1]
        got = latency_quantile({str(k): v for k, v in hist.items()}, q)
        assert abs(got / exact - 1) <= LATENCY_RATIO ** 0.5 - 1 + 1e-9, q


def test_latency_edges():
    assert latency_quantile({}, 0.5) is None
    assert latency_bucket(0.0) == 0 and latency_bucket(1e9) == 255
    assert latency_quantile({"0": 3}, 0.95) == 1e-6


def test_auth_scheme():
    assert auth_scheme((("Host", "x"), ("Authorization", "Bearer abc.def"))) == "bearer"
    assert auth_scheme((("authorization", "Basic Zm9vOmJhcg=="),)) == "basic"
    assert auth_scheme((("X-API-Key", "k"), ("Cookie", "a=b"))) == "api-key"
    assert auth_scheme((("Cookie", "sid=1"),)) == "cookie"
    assert auth_scheme((("Accept", "*/*"), ("Host", "x"))) == "none"
