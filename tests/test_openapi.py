"""OpenAPI 3.1 export (checked with openapi-spec-validator) and diff against a published spec."""

import copy
import json

import pytest
from click.testing import CliRunner
from test_inventory_support import DEMO, HTTPBIN, HTTPBIN_SPEC, MISC, build, txs

from discovery import openapi, specdiff
from sensor.cli import main

# test dependencies (pyproject [test]): a real validator, and YAML for the CLI's .yaml output
yaml = pytest.importorskip("yaml")
validate = pytest.importorskip("openapi_spec_validator").validate


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("oa") / "inv.db")
    build(path, txs(HTTPBIN) + txs(DEMO) + txs(MISC)).close()
    return path


@pytest.fixture(scope="module")
def db(db_path):
    import sqlite_utils

    return sqlite_utils.Database(db_path)


def test_every_service_exports_a_valid_openapi_31(db):
    names = [n for (n,) in db.execute("select name from services where endpoints > 0")]
    assert len(names) == 6
    for name in names:
        doc = openapi.build(db, name)
        assert doc["openapi"] == "3.1.0"
        validate(doc)  # raises on an invalid document


def test_openapi_content(db):
    doc = openapi.build(db, "users.shop.local")
    op = doc["paths"]["/api/v1/users/{user}/profile"]["get"]
    assert op["parameters"][0] == {
        "name": "user",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
        "x-apisensor-count": 5,
    }
    body = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["properties"]["email"] == {"type": "string", "format": "email"}
    assert op["security"] == [{"bearerJWT": []}]
    assert doc["components"]["securitySchemes"]["bearerJWT"]["bearerFormat"] == "JWT"
    search = doc["paths"]["/api/v1/users/search"]["get"]
    assert "security" not in search
    assert {p["name"]: p["required"] for p in search["parameters"]} == {"q": True, "limit": True}
    misc = openapi.build(db, "127.0.0.41")
    gql = misc["paths"]["/graphql"]["post"]
    assert sorted(gql["x-graphql-operations"]) == [
        "mutation CreateOrder",
        "query GetUser",
        "query ListOrders",
    ]
    validate(misc)


def test_cli_writes_yaml_that_validates(db_path, tmp_path):
    out = tmp_path / "spec.yaml"
    r = CliRunner().invoke(main, ["openapi", "--db", db_path, "--service", "127.0.0.40", "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(out.read_text())
    validate(doc)
    assert len(doc["paths"]) == 52
    r = CliRunner().invoke(main, ["openapi", "--db", db_path])  # several services: --service is needed
    assert r.exit_code == 2 and "--service is required" in r.output


def test_diff_finds_what_was_removed_from_the_spec(db_path, tmp_path):
    spec = specdiff.load_spec(HTTPBIN_SPEC)
    clean = specdiff.diff(__import__("sqlite_utils").Database(db_path), spec, "127.0.0.40")
    assert clean["shadow"] == [] and clean["zombie"] == [] and clean["unused"] == []
    edited = copy.deepcopy(spec)
    removed = ["/uuid", "/cookies/set/{name}/{value}", "/status/{codes}"]
    for p in removed:
        del edited["paths"][p]
    del edited["paths"]["/anything"]["trace"]
    edited["paths"]["/xml"]["get"]["deprecated"] = True
    edited["paths"]["/admin/export"] = {"get": {"responses": {"200": {"description": "never called"}}}}
    f = tmp_path / "edited.yaml"
    f.write_text(yaml.safe_dump(edited))
    r = CliRunner().invoke(main, ["diff", "--db", db_path, "--spec", str(f), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["service"] == "127.0.0.40"  # guessed from the spec
    shadow = {(x["method"], x["path"]) for x in d["shadow"]}
    assert shadow == {
        ("GET", "/uuid"),
        ("GET", "/cookies/set/{set}/{param}"),
        ("TRACE", "/anything"),
        *{(m, "/status/{status}") for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE")},
    }
    assert [(x["method"], x["path"]) for x in d["zombie"]] == [("GET", "/xml")]
    assert [(x["method"], x["path"]) for x in d["unused"]] == [("GET", "/admin/export")]
    r = CliRunner().invoke(main, ["diff", "--db", db_path, "--spec", str(f)])
    assert "shadow  GET     /uuid" in r.output and "unused  GET     /admin/export" in r.output


def test_diff_reads_openapi_3_with_a_server_path(db, tmp_path):
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "users", "version": "1"},
        "servers": [{"url": "http://users.shop.local/api/v1"}],
        "paths": {
            "/users/{id}": {"get": {"responses": {"200": {"description": "ok"}}}},
            "/users/me": {"get": {"responses": {"200": {"description": "ok"}}}},
            "/users/{id}/profile": {"get": {"deprecated": True, "responses": {"200": {"description": "ok"}}}},
        },
    }
    d = specdiff.diff(db, spec)
    assert d["service"] == "users.shop.local"
    # a spec parameter matches any value, as a router would: /users/search is /users/{id}
    assert {x["path"] for x in d["documented"]} == {
        "/api/v1/users/{user}",
        "/api/v1/users/me",
        "/api/v1/users/search",
    }
    assert {x["path"] for x in d["zombie"]} == {"/api/v1/users/{user}/profile"}
    assert {(x["method"], x["path"]) for x in d["shadow"]} == {("POST", "/api/v1/users")}
    assert d["unused"] == []
