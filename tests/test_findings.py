"""The findings sink on real SQLite: dedup and counts, merge across runs, the CLI, and the rule
that no raw sensitive value of the fixtures ever reaches the database."""

import json
import os
import sqlite3

import pytest
from click.testing import CliRunner
from conftest import PCAPS, ROOT, all_text

from discovery.detectors.evaluate import load_labels
from discovery.findings import TABLE, Findings
from discovery.store import Store, TransactionLog
from sensor.cli import main
from sensor.pipeline import transactions_from_files

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "findings")


def _replay(db_path: str, pcaps: list[str]) -> dict:
    """What `apisensor replay` does with the store and the findings sink (real files, real SQLite)."""
    store = Store(db_path)
    run = store.begin_run(pcaps)
    sinks = [TransactionLog(store, run), Findings(store, run)]
    for i, tx in enumerate(transactions_from_files(pcaps), 1):
        for s in sinks:
            s.observe(tx)
        if i % 50 == 0:
            for s in sinks:
                s.flush()
    out = {}
    for s in sinks:
        out.update(s.finish())
    store.finish_run(run, {})
    store.close()
    return out


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory):
    labels = load_labels(FIXTURES)
    path = str(tmp_path_factory.mktemp("findings") / "fixtures.db")
    summary = _replay(path, [os.path.join(FIXTURES, s["pcap"]) for s in labels.values()])
    return path, labels, summary


def test_no_raw_sensitive_value_in_the_database(fixture_db):
    path, labels, _ = fixture_db
    values = {v for s in labels.values() for v in s["sensitive"] if len(v) >= 6}
    uri_values = {v for s in labels.values() for v in s["uri_sensitive"] if len(v) >= 6}
    assert len(values) > 150 and len(uri_values) > 5
    leaks = set()
    for table, col, text in all_text(path):
        for v in values | uri_values:
            if v in text:
                leaks.add((table, col, v[:12]))
    # nowhere, transactions.uri included: the store redacts URL-borne secrets in the request
    # line too (discovery/redact.py; tests/test_redaction.py covers every sink and the exports)
    assert not leaks, sorted(leaks)[:10]
    findings_text = " ".join(t for tbl, _c, t in all_text(path) if tbl == TABLE)
    assert not any(v in findings_text for v in values | uri_values)


def test_the_scan_itself_would_catch_a_leak(fixture_db, tmp_path):
    path, labels, _ = fixture_db
    secret = sorted(v for s in labels.values() for v in s["sensitive"] if len(v) >= 6)[0]
    leaky = str(tmp_path / "leaky.db")
    con = sqlite3.connect(leaky)
    con.execute("CREATE TABLE t (x TEXT)")
    con.execute("INSERT INTO t VALUES (?)", (f"evidence: {secret}",))
    con.commit()
    con.close()
    assert any(secret in text for _t, _c, text in all_text(leaky))


def test_findings_are_deduplicated_with_counts(fixture_db):
    path, _, summary = fixture_db
    con = sqlite3.connect(path)
    dup = con.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} GROUP BY service, ifnull(method, ''), path, "
        "detector, location HAVING count(*) > 1)"
    ).fetchone()[0]
    assert dup == 0
    rows = con.execute(
        f"SELECT count, first_seen, last_seen, first_tx_id, last_tx_id, severity FROM {TABLE}"
    ).fetchall()
    assert rows and all(c >= 1 and fs <= ls for c, fs, ls, *_ in rows)
    assert all(ft is not None and lt is not None for *_, ft, lt, _s in rows)
    assert summary["findings"]["total"] == len(rows)
    assert sum(v for k, v in summary["findings"].items() if k != "total") == len(rows)
    # the tx reference points at the transaction that had it
    fid, tx_id, detector = con.execute(
        f"SELECT id, last_tx_id, detector FROM {TABLE} WHERE detector = 'errors.stack_trace' LIMIT 1"
    ).fetchone()
    assert con.execute("SELECT status_code FROM transactions WHERE id = ?", (tx_id,)).fetchone()[0] >= 200
    con.close()


def test_runs_merge_into_the_same_rows(tmp_path):
    db = str(tmp_path / "demo.db")
    pcap = os.path.join(PCAPS, "demo.pcap")
    first = _replay(db, [pcap])
    con = sqlite3.connect(db)
    before = dict(con.execute(f"SELECT detector || location || path, count FROM {TABLE}").fetchall())
    con.close()
    second = _replay(db, [pcap])
    con = sqlite3.connect(db)
    after = dict(con.execute(f"SELECT detector || location || path, count FROM {TABLE}").fetchall())
    runs = set(con.execute(f"SELECT DISTINCT first_run_id || '-' || last_run_id FROM {TABLE}").fetchall())
    con.close()
    assert before.keys() == after.keys() and first["findings"]["total"] == second["findings"]["total"]
    assert all(after[k] == 2 * before[k] for k in before)
    assert runs == {("1-2",)}
    assert os.stat(db + ".key").st_mode & 0o077 == 0  # the hash key is private and not in the db


def test_same_value_same_hash_across_runs_not_across_keys(tmp_path, monkeypatch):
    pcap = os.path.join(PCAPS, "demo.pcap")
    hashes = []
    for name, key in (("a.db", "11" * 32), ("b.db", "11" * 32), ("c.db", "22" * 32)):
        monkeypatch.setenv("APISENSOR_HASH_KEY", key)
        _replay(str(tmp_path / name), [pcap])
        con = sqlite3.connect(str(tmp_path / name))
        hashes.append(
            con.execute(f"SELECT value_hashes FROM {TABLE} WHERE detector = 'pii.ssn'").fetchone()[0]
        )
        con.close()
    assert hashes[0] == hashes[1] != hashes[2]


def test_cli_replay_prints_findings_and_findings_command(tmp_path):
    db = str(tmp_path / "inv.db")
    r = CliRunner().invoke(main, ["replay", os.path.join(PCAPS, "demo.pcap"), "--db", db, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "findings:" in r.output and "'high'" in r.output
    r = CliRunner().invoke(main, ["findings", "--db", db])
    assert r.exit_code == 0 and "pii.ssn" in r.output and "4012********1881" in r.output
    assert "668-57-7855" not in r.output and "4012888888881881" not in r.output
    r = CliRunner().invoke(main, ["findings", "--db", db, "--severity", "high", "--json"])
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert rows and {x["severity"] for x in rows} <= {"high", "critical"}
    assert {x["detector"] for x in rows} >= {"pii.ssn", "pii.card"}
    r = CliRunner().invoke(main, ["findings", "--db", db, "--fail-on", "high"])
    assert r.exit_code == 1
    r = CliRunner().invoke(main, ["findings", "--db", db, "--fail-on", "critical"])
    assert r.exit_code == 0
    r = CliRunner().invoke(main, ["findings", "--db", db, "--detector", "errors.", "--json"])
    assert {json.loads(x)["detector"] for x in r.output.splitlines()} == {"errors.stack_trace"}


def test_cli_findings_bad_inputs(tmp_path):
    r = CliRunner().invoke(main, ["findings", "--db", str(tmp_path / "missing.db")])
    assert r.exit_code == 2
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 10)
    r = CliRunner().invoke(main, ["findings", "--db", str(bad)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    empty = str(tmp_path / "empty.db")
    Store(empty).close()
    r = CliRunner().invoke(main, ["findings", "--db", empty, "--fail-on", "info"])
    assert r.exit_code == 0 and "no findings" in r.output


def test_table_creation_is_idempotent(tmp_path):
    store = Store(str(tmp_path / "x.db"))
    Findings(store, 1)
    Findings(store, 2)
    assert TABLE in store.db.table_names()
    cols = {c.name for c in store.db[TABLE].columns}
    assert {
        "service",
        "method",
        "path",
        "endpoint_id",
        "detector",
        "kind",
        "category",
        "severity",
        "confidence",
        "location",
        "evidence",
        "value_hashes",
        "count",
        "first_seen",
        "last_seen",
        "first_tx_id",
    } <= cols
    store.close()


def _http_tx(body: bytes, status: int = 200, ts: float = 1.0, uri: str = "/api/items/1"):
    from sensor.transaction import Transaction

    return Transaction(
        ts=ts,
        client_ip=b"\x7f\x00\x00\x01",
        client_port=40000,
        server_ip=b"\x7f\x00\x00\x02",
        server_port=80,
        method="GET",
        uri=uri,
        request_headers=(("Host", "api.test"), ("Authorization", "Bearer abcdefghijklmnop1234")),
        request_body=b"",
        request_body_len=0,
        status_code=status,
        response_headers=(("Content-Type", "application/json"),),
        response_body=body,
        response_body_len=len(body),
    )


def _sampled_run(txs, **kw):
    store = Store(":memory:")
    sink = Findings(store, store.begin_run(["x"]), **kw)
    for t in txs:
        sink.observe(t)
    summary = sink.finish()
    rows = {
        (r[0], r[1]): r[2]
        for r in store.db.execute(f"SELECT detector, location, count FROM {TABLE} WHERE path != '*'")
    }
    return sink, summary, rows


def test_bodies_of_a_quiet_kind_are_sampled_deterministically():
    from discovery.findings import SAMPLE_AFTER, SAMPLE_EVERY

    clean = json.dumps({"items": [{"id": i, "name": "x"} for i in range(5)]}).encode()
    txs = [_http_tx(clean, ts=float(i), uri=f"/api/items/{i}") for i in range(100)]
    # an email shows up later: a new signature (an "@" in the body), so it is analysed at once
    txs.append(_http_tx(json.dumps({"items": [{"email": "ann.lee@corp.example"}]}).encode(), ts=200.0))
    # error responses are always analysed
    txs += [_http_tx(b'{"error": "x"}', status=500, ts=300.0 + i) for i in range(40)]
    sink, summary, rows = _sampled_run(txs)
    # the first body adds rows, then SAMPLE_AFTER quiet ones, then one in SAMPLE_EVERY
    analysed_clean = 1 + SAMPLE_AFTER + sum(1 for n in range(2 + SAMPLE_AFTER, 101) if n % SAMPLE_EVERY == 0)
    assert sink.bodies_skipped == 100 - analysed_clean
    assert summary["findings_sampling"] == {
        "bodies_analysed": 141 - sink.bodies_skipped,
        "bodies_skipped": sink.bodies_skipped,
    }
    assert rows[("pii.email", "response.body:$.items[*].email")] == 1
    # headers are checked on every transaction, sampled or not
    assert rows[("posture.cleartext_credentials", "request.header:authorization")] == 141
    again = _sampled_run(txs)
    assert again[0].bodies_skipped == sink.bodies_skipped and again[2] == rows
    exact = _sampled_run(txs, sample=False)
    assert exact[0].bodies_skipped == 0 and "findings_sampling" not in exact[1] and exact[2] == rows


def test_sampling_keeps_every_demo_finding_row(tmp_path):
    pcap = os.path.join(PCAPS, "demo.pcap")
    keys = []
    for sample in (True, False):
        store = Store(str(tmp_path / f"s{sample}.db"))
        sink = Findings(store, store.begin_run([pcap]), sample=sample)
        for t in transactions_from_files([pcap]):
            sink.observe(t)
        sink.finish()
        keys.append(
            set(
                store.db.execute(
                    f"SELECT service, method, path, detector, location, severity FROM {TABLE}"
                ).fetchall()
            )
        )
        if sample:
            assert sink.bodies_skipped > 0
        store.close()
    assert keys[0] == keys[1]
