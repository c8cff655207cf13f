"""The ``apisensor`` command as a user runs it: the installed console script in a subprocess
(exit codes, stdout/stderr split, no tracebacks), on corpus pcaps and on files built here."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import stat
import struct
import subprocess
import sys

import pytest
from conftest import corpus_path

# builders shared with the other test modules (tests/ is on sys.path)
from test_http1 import Conversation, get, ok
from test_sources import pcap_bytes

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
REQUIRED_KEYS = {"ts", "client", "server", "method", "host", "uri", "status_code", "request_body_len",
                 "response_body_len", "user_agent", "flags", "response_body_len_wire"}


def apisensor(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    if not os.path.exists(APISENSOR):
        pytest.skip("apisensor console script not installed in this virtualenv")
    return subprocess.run([APISENSOR, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("apisensor: error: ")
    for f in fragments:
        assert f in lines[0]
    assert r.stdout == ""


def _pcap_from_records(records) -> bytes:
    recs = [(int(ts), round((ts - int(ts)) * 1e6), frame) for ts, _lt, frame in records]
    return pcap_bytes(recs)


# ---- transactions --------------------------------------------------------------------------------


def test_help():
    r = apisensor("--help")
    assert r.returncode == 0
    assert "transactions" in r.stdout and "replay" in r.stdout
    r = apisensor("transactions", "--help")
    assert r.returncode == 0 and "--json" in r.stdout


def test_transactions_json_on_corpus_pcap():
    r = apisensor("transactions", corpus_path("zeek-get.pcap"), "--json")
    assert r.returncode == 0, r.stderr
    (line,) = json_lines(r.stdout)
    assert set(line) >= REQUIRED_KEYS
    assert line["method"] == "GET"
    assert line["host"] == "bro.org"
    assert line["uri"] == "/download/CHANGES.bro-aux.txt"
    assert line["status_code"] == 200
    assert line["response_body_len"] == 4705
    assert line["request_body_len"] == 0
    assert line["user_agent"] == "Wget/1.14 (darwin12.2.0)"
    assert line["client"] == "141.142.228.5:59856" and line["server"] == "192.150.187.43:80"
    assert line["flags"] == []
    assert isinstance(line["ts"], float)
    assert r.stderr == ""


def test_transactions_json_pipelined_corpus_pcap():
    r = apisensor("transactions", corpus_path("zeek-pipelined-requests.pcap"), "--json")
    assert r.returncode == 0
    lines = json_lines(r.stdout)
    assert len(lines) == 5
    assert [x["uri"] for x in lines[:2]] == ["/style/enhanced.css", "/script/urchin.js"]
    assert [x["response_body_len"] for x in lines[:2]] == [2675, 21421]
    assert lines[0]["response_body_len_wire"] < lines[0]["response_body_len"]  # gzip on the wire
    assert all(set(x) >= REQUIRED_KEYS for x in lines)


def test_transactions_table_output():
    r = apisensor("transactions", corpus_path("zeek-get.pcap"))
    assert r.returncode == 0
    header, row = r.stdout.splitlines()
    assert header.split()[:3] == ["time", "client", "server"]
    assert "bro.org /download/CHANGES.bro-aux.txt" in row and " 200 " in row


def test_several_files_are_merged_in_time_order(tmp_path):
    a = Conversation(t0=2000.0).client(get("/late")).server(ok(b"2")).close()
    b = Conversation(t0=1000.0, client=("10.0.0.9", 41000)).client(get("/early")).server(ok(b"1")).close()
    (tmp_path / "a.pcap").write_bytes(_pcap_from_records(a.records))
    (tmp_path / "b.pcap").write_bytes(_pcap_from_records(b.records))
    r = apisensor("transactions", str(tmp_path / "a.pcap"), str(tmp_path / "b.pcap"), "--json")
    assert [x["uri"] for x in json_lines(r.stdout)] == ["/early", "/late"]


def test_gzip_compressed_capture(tmp_path):
    conv = Conversation().client(get("/gz")).server(ok(b"zipped")).close()
    path = tmp_path / "c.pcap.gz"
    path.write_bytes(gzip.compress(_pcap_from_records(conv.records)))
    r = apisensor("transactions", str(path), "--json")
    assert r.returncode == 0
    assert [(x["uri"], x["response_body_len"]) for x in json_lines(r.stdout)] == [("/gz", 6)]


def test_missing_file_exit_2_one_line(tmp_path):
    path = str(tmp_path / "does-not-exist.pcap")
    assert_one_line_error(apisensor("transactions", path), path, "no such file")


def test_not_a_capture_exit_2(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a capture\n" * 10)
    assert_one_line_error(apisensor("transactions", str(path), "--json"), "not a pcap or pcapng file")


def test_no_files_exit_2():
    assert_one_line_error(apisensor("transactions"), "no capture file given")


def test_unsupported_linktype_exit_2(tmp_path):
    path = tmp_path / "usb.pcap"
    path.write_bytes(pcap_bytes([(1, 0, b"\x00" * 40)], linktype=189))
    assert_one_line_error(apisensor("transactions", str(path)), "unsupported link type 189")


def test_corrupt_gzip_exit_2(tmp_path):
    path = tmp_path / "bad.pcap.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"\xff" * 40)
    assert_one_line_error(apisensor("transactions", str(path)), "bad.pcap.gz")


def _truncated_capture(tmp_path) -> tuple[str, int]:
    first = Conversation(t0=1000.0).client(get("/before-cut")).server(ok(b"complete")).close()
    second = Conversation(t0=2000.0, client=("10.0.0.3", 42000)).client(get("/at-cut"))
    second.server(ok(b"x" * 500))
    data = _pcap_from_records(first.records + second.records)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-200])  # ends inside the last record (the response)
    return str(path), len(first.records) + len(second.records) - 1


def test_truncated_pcap_exit_0_with_warning(tmp_path):
    path, kept = _truncated_capture(tmp_path)
    r = apisensor("transactions", path, "--json")
    assert r.returncode == 0
    assert "Traceback" not in r.stderr
    expected = f"apisensor: warning: {path}: file ends inside a packet record after {kept} packets"
    assert r.stderr.strip() == expected
    lines = json_lines(r.stdout)
    assert [(x["uri"], x["status_code"], x["response_body_len"]) for x in lines] == [
        ("/before-cut", 200, 8), ("/at-cut", None, 0)]
    assert "no_response" in lines[1]["flags"]


def test_absurd_record_length_exit_0_with_warning(tmp_path):
    conv = Conversation().client(get("/ok")).server(ok(b"fine")).close()
    absurd = struct.pack("<IIII", 9999, 0, 0x7FFFFFF0, 0x7FFFFFF0) + b"z" * 64
    data = _pcap_from_records(conv.records) + absurd
    path = tmp_path / "absurd.pcap"
    path.write_bytes(data)
    r = apisensor("transactions", str(path), "--json")
    assert r.returncode == 0
    assert "corrupt record" in r.stderr and "Traceback" not in r.stderr
    assert [x["uri"] for x in json_lines(r.stdout)] == ["/ok"]


# ---- replay --------------------------------------------------------------------------------------


def test_replay_creates_private_sqlite_with_runs_and_transactions(tmp_path):
    pcap = corpus_path("zeek-pipelined-requests.pcap")
    db = tmp_path / "inv.db"
    r = apisensor("replay", pcap, "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["transactions"] == 5 and summary["run_id"] == 1
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    con = sqlite3.connect(db)
    try:
        tables = {row[0] for row in con.execute("select name from sqlite_master where type='table'")}
        assert {"runs", "transactions"} <= tables
        assert con.execute("select count(*) from transactions").fetchone()[0] == 5
        run = con.execute("select id, status, packets, transactions, truncated_files from runs").fetchall()
        assert run == [(1, "complete", summary["packets"], 5, 0)]
        uris = [row[0] for row in con.execute("select uri from transactions order by ts")]
        assert uris[:2] == ["/style/enhanced.css", "/script/urchin.js"]
        assert con.execute("select count(*) from transactions where run_id != 1").fetchone()[0] == 0
    finally:
        con.close()
    # a second run adds to the same file
    r = apisensor("replay", pcap, "--db", str(db), "--force")
    assert r.returncode == 0 and "5 transactions" in r.stdout
    con = sqlite3.connect(db)
    try:
        assert con.execute("select count(*) from runs").fetchone()[0] == 2
        assert con.execute("select count(*) from transactions where run_id = 2").fetchone()[0] == 5
    finally:
        con.close()


def test_replay_records_truncation_warning(tmp_path):
    path, _ = _truncated_capture(tmp_path)
    db = tmp_path / "t.db"
    r = apisensor("replay", path, "--db", str(db))
    assert r.returncode == 0
    assert "warning" in r.stderr and "Traceback" not in r.stderr
    con = sqlite3.connect(db)
    try:
        truncated, warnings = con.execute("select truncated_files, warnings from runs").fetchone()
        assert truncated == 1
        assert "file ends inside a packet record" in json.loads(warnings)[0]
        assert con.execute("select count(*) from transactions").fetchone()[0] == 2
    finally:
        con.close()


def test_replay_missing_file_creates_no_database(tmp_path):
    db = tmp_path / "never.db"
    assert_one_line_error(apisensor("replay", str(tmp_path / "nope.pcap"), "--db", str(db)), "no such file")
    assert not db.exists()


def test_replay_onto_a_file_that_is_not_sqlite(tmp_path):
    db = tmp_path / "garbage.db"
    db.write_bytes(b"definitely not sqlite" * 100)
    r = apisensor("replay", corpus_path("zeek-get.pcap"), "--db", str(db))
    assert_one_line_error(r, str(db))


def test_replay_requires_db():
    r = apisensor("replay", corpus_path("zeek-get.pcap"))
    assert r.returncode == 2 and "--db" in r.stderr and "Traceback" not in r.stderr
