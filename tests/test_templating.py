"""Path templating: typed classifiers, sibling evidence, reserved words, rules, determinism."""

import random

import pytest

from discovery.templating import PathEvidence, Skeletonizer, classify_segment, learn, static_kind


@pytest.mark.parametrize(
    "seg,expected",
    [
        ("1234", "int"),
        ("-7", "int"),
        ("3.14", "number"),
        ("2026-11-29", "date"),
        ("2026-11-29T10:00:00Z", "date-time"),
        ("123e4567-e89b-12d3-a456-426614174000", "uuid"),
        ("4622fb2ac7b2bec1cd55f9af", "objectid"),
        ("d41d8cd98f00b204e9800998ecf8427e", "hex"),
        ("alice@example.org", "email"),
        ("10.1.2.3", "ipv4"),
        ("SFRUUEJJTiBpcyBhd2Vzb21l", "token"),
        ("KTN-30907", "mixed"),
        ("fmb5ir", "mixed"),
        ("hello%20world", "string"),
        ("200,201", "string"),
        ("users", None),
        ("v1", None),
        ("v2beta1", None),
        ("oauth2", None),
        ("utf8", None),
        ("base64", None),
        ("me", None),
        ("robots.txt", None),
        ("deadbeef", None),
    ],
)
def test_classify_segment(seg, expected):
    assert classify_segment(seg, 2) == expected


def test_dotted_version_after_api_is_literal_elsewhere_a_number():
    sk = Skeletonizer()
    assert sk("/api/1.0/users/42")[0] == ("api", "1.0", "users", "{int}")
    assert sk("/delay/0.5")[0] == ("delay", "{number}")
    assert sk("/2.1/x")[0] == ("2.1", "x")


def test_static_kind():
    assert static_kind("/assets/app.3f2a.js") == "script"
    assert static_kind("/img/logo.PNG") == "image"
    assert static_kind("/robots.txt") is None and static_kind("/api/v1/users") is None


def _ev(ctype="application/json", keys=("id", "name"), hits=1, status="2"):
    return PathEvidence(hits, frozenset([f"{status} {ctype}"]), frozenset(keys))


def _paths(templates):
    return {t.path for t in templates.templates}


def test_varied_alike_siblings_become_a_parameter_reserved_words_stay():
    ev = {("users", n): _ev() for n in ("alice", "bob", "carol", "dave")}
    ev[("users", "me")] = _ev()
    ev[("users", "search")] = _ev(keys=("[].id", "[].name"))
    ts, mapping = learn(ev)
    assert _paths(ts) == {"/users/{user}", "/users/me", "/users/search"}
    assert mapping[("users", "bob")].path == "/users/{user}"


def test_few_siblings_stay_literal():
    ev = {("cookies", "set"): _ev("text/html", ()), ("cookies", "delete"): _ev("text/html", ())}
    assert _paths(learn(ev)[0]) == {"/cookies/set", "/cookies/delete"}


def test_siblings_with_different_answers_stay_apart():
    # /image/png, /image/jpeg, ...: different content types
    ev = {("image", f): _ev(f"image/{f}", ()) for f in ("png", "jpeg", "svg", "webp", "gif", "avif")}
    assert len(learn(ev)[0].templates) == 6
    # /api/users vs /api/orders vs ...: different JSON
    ev = {
        ("api", r): _ev(keys=(f"{r}_id", f"{r}_name", f"{r}_created"))
        for r in ("users", "orders", "carts", "invoices", "payments")
    }
    assert len(learn(ev)[0].templates) == 5


def test_first_position_is_never_a_learned_parameter():
    ev = {
        (w,): _ev(keys=("args", "headers", "url"))
        for w in ("get", "post", "put", "patch", "delete", "anything")
    }
    assert len(learn(ev)[0].templates) == 6


def test_thirty_siblings_collapse_whatever_they_answer():
    ev = {("wiki", f"page{chr(97 + i % 26)}{chr(97 + i // 26)}"): _ev(keys=(f"k{i}",)) for i in range(40)}
    assert _paths(learn(ev)[0]) == {"/wiki/{wiki}"}


def test_merged_siblings_pool_their_children():
    ev = {}
    r = random.Random(1)
    for i, user in enumerate(("alice", "bob", "carol", "dave", "erin")):
        ev[("basic-auth", user, f"pw{r.randint(1000, 9999)}x{i}")] = _ev(keys=("authenticated", "user"))
    assert _paths(learn(ev)[0]) == {"/basic-auth/{basic_auth}/{param}"}


def test_typed_values_merge_and_strings_join_a_string_parameter():
    ev = {
        ("status", "{int}"): _ev("text/html", ()),
        ("status", "{string}"): _ev("text/html", ()),
        ("anything", "{int}"): _ev(keys=("args", "url")),
        ("anything", "foo"): _ev(keys=("args", "url")),
        ("orders", "{int}"): _ev(keys=("id", "total")),
        ("orders", "pending"): _ev(keys=("[].id", "[].total")),
    }
    paths = _paths(learn(ev)[0])
    assert "/status/{status}" in paths
    assert "/anything/{anything}" in paths and "/anything/foo" not in paths
    assert {"/orders/{order_id}", "/orders/pending"} <= paths  # a list next to an object stays apart


def test_rules_force_forbid_literal():
    ev = {("users", n): _ev() for n in ("alice", "bob", "carol", "dave")}
    ev.update(
        {("files", "a", "b", "c.txt"): _ev("text/plain", ()), ("files", "x.txt"): _ev("text/plain", ())}
    )
    ts, _ = learn(ev, force=["/files/{*}"], forbid=["/users/{u}"])
    assert _paths(ts) == {"/users/alice", "/users/bob", "/users/carol", "/users/dave", "/files/{path}"}
    ts, _ = learn(ev, literal_words=["carol"])
    assert {"/users/{user}", "/users/carol"} <= _paths(ts)


def test_learning_does_not_depend_on_order():
    r = random.Random(5)
    names = [f"user{chr(97 + i)}x" for i in range(12)]
    items = [(("users", n), _ev()) for n in names] + [
        (("users", n, "orders"), _ev(keys=("[].id",))) for n in names[:5]
    ]
    items += [
        (("users", "me"), _ev()),
        (("image", "png"), _ev("image/png", ())),
        (("image", "gif"), _ev("image/gif", ())),
    ]
    first = None
    for _ in range(5):
        r.shuffle(items)
        ts, mapping = learn(dict(items))
        got = (sorted(_paths(ts)), sorted((k, v.path) for k, v in mapping.items()))
        assert first is None or got == first
        first = got
    assert "/users/{user}/orders" in first[0]
