"""``apisensor import``: the same traffic as a pcap, as a HAR and as Zeek / Suricata logs gives the
same endpoint inventory, minus what each format cannot carry.

Fixtures (tests/data/imports/, see its README):

* ``imports.pcap`` and ``imports.har.gz`` are the SAME real traffic recorded twice,
  independently: httpbin and a small shop app on loopback behind mitmproxy 11 (reverse proxy),
  tcpdump on the proxy -> server leg for the pcap, mitmproxy's own ``hardump`` for the HAR
  (``tests/captures/imports/make_imports.py``).  The HAR is mitmproxy's file, gzipped.
* ``zeek/http.log``, ``zeek/http.json`` and ``suricata/eve.json.gz`` are written from the
  pcap's transactions in Zeek 6 and Suricata 8 formats by ``tests/captures/imports/make_logs.py``
  (neither Zeek nor Suricata can be installed on this machine).
* ``zeek-real/*.http.log`` are REAL Zeek output: the baselines of Zeek's own test suite for
  pcaps that are in the shared corpus (``../shared/corpus/http``).

The comparison (:func:`view`) leaves out what differs by nature whatever the source: times
(first/last seen: HAR has the proxy's receive time, Suricata the time it wrote the event) and
latencies (Zeek and Suricata log none).  What a format cannot carry is listed per test.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import sqlite3
import subprocess
import sys
import tracemalloc
from collections import defaultdict

import pytest
from conftest import DATA, corpus_path

from sensor.imports import ImportFormatError, detect, host_header, probe, reader
from sensor.imports.zeek import unescape

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
IMP = os.path.join(DATA, "imports")
PCAP = os.path.join(IMP, "imports.pcap")
HAR = os.path.join(IMP, "imports.har.gz")
ZEEK_TSV = os.path.join(IMP, "zeek", "http.log")
ZEEK_JSON = os.path.join(IMP, "zeek", "http.json")
EVE = os.path.join(IMP, "suricata", "eve.json.gz")
ENV = {**os.environ, "APISENSOR_HASH_KEY": "00112233445566778899aabbccddeeff"}


def apisensor(*args: str) -> subprocess.CompletedProcess:
    if not os.path.exists(APISENSOR):
        pytest.skip("apisensor console script not installed in this virtualenv")
    return subprocess.run([APISENSOR, *args], capture_output=True, text=True, timeout=120, env=ENV)


def view(db_path) -> dict[str, list]:
    """The inventory without times, latencies, ids and runs (a path, or an open connection)."""
    db = sqlite3.connect(db_path) if isinstance(db_path, str) else db_path

    def q(sql: str) -> list:
        return sorted(tuple(r) for r in db.execute(sql).fetchall())

    ep = "from endpoints e join services s on s.id = e.service_id"
    key = {r[0]: tuple(r[1:])
           for r in db.execute(f"select e.id, s.name, e.method, e.template, e.operation {ep}")}

    def child(sql: str) -> list:
        return sorted((key[r[0]], *r[1:]) for r in db.execute(sql).fetchall())

    params = child("select endpoint_id, location, name, type, format, types, count, required, "
                   "distinct_values, examples from parameters")
    out = {
        "services": q("select name, hits, endpoints, probe_hits, excluded_hits, static_hits, overflow_hits "
                      "from services"),
        "addresses": q("select s.name, a.address, a.hits from service_addresses a join services s "
                       "on s.id = a.service_id"),
        "endpoints": q(f"select s.name, e.method, e.template, e.operation, e.api_type, e.hits, e.raw_paths, "
                       f"e.forced {ep}"),
        "examples": q(f"select s.name, e.method, e.template, e.operation, e.examples {ep}"),
        "bytes": q(f"select s.name, e.method, e.template, e.operation, e.request_bytes, e.response_bytes "
                   f"{ep}"),
        "content_types": q(f"select s.name, e.method, e.template, e.operation, e.request_content_types, "
                           f"e.response_content_types {ep}"),
        "auth": q(f"select s.name, e.method, e.template, e.operation, e.auth {ep}"),
        "templates": q("select s.name, t.template, t.segments, t.forced from templates t join services s "
                       "on s.id = t.service_id"),
        "probes": q("select s.name, p.client, p.hits, p.paths, p.statuses, p.examples, p.overflow_hits "
                    "from probes p join services s on s.id = p.service_id"),
        "assets": q("select s.name, a.kind, a.extension, a.hits, a.bytes, a.paths, a.example from assets a "
                    "join services s on s.id = a.service_id"),
        "statuses": child("select endpoint_id, status_code, count from endpoint_statuses"),
        "status_content_types": child("select endpoint_id, status_code, content_types "
                                      "from endpoint_statuses"),
        "path_query_params": [p for p in params if p[1] in ("path", "query")],
        "body_params": [p for p in params if p[1] not in ("path", "query")],
        "schemas": child("select endpoint_id, direction, status_code, schema, bodies from schemas"),
        "fields": child("select endpoint_id, direction, status_code, path, type, format, required "
                        "from fields"),
        "samples": child("select endpoint_id, status_code, method, uri, request_headers, request_body, "
                         "response_headers, response_body from samples"),
    }
    if isinstance(db_path, str):
        db.close()
    return out


def _record(tmp, name: str, *args: str) -> str:
    db = str(tmp / f"{name}.db")
    r = apisensor(*args, "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return db


@pytest.fixture(scope="module")
def dbs(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("imports")
    return {
        "pcap": _record(tmp, "pcap", "replay", PCAP, "--no-progress"),
        # HAR keeps no client address; mitmproxy's upstream connections came from 127.0.0.1
        "har": _record(tmp, "har", "import", HAR, "--client", "127.0.0.1"),
        "zeek": _record(tmp, "zeek", "import", ZEEK_TSV),
        "zeek_json": _record(tmp, "zeek_json", "import", ZEEK_JSON),
        "suricata": _record(tmp, "suricata", "import", EVE),
    }


@pytest.fixture(scope="module")
def pcap_view(dbs) -> dict[str, list]:
    v = view(dbs["pcap"])
    # the bar is not met by an empty or trivial inventory
    assert [s[0] for s in v["services"]] == ["httpbin.imports.test", "shop.imports.test"]
    assert len(v["endpoints"]) == 83
    assert len(v["statuses"]) >= 100 and len(v["path_query_params"]) >= 80 and len(v["schemas"]) >= 60
    assert len(v["body_params"]) >= 6 and v["probes"] and v["assets"]
    return v


def _drop(v: dict, part: str, endpoint: tuple) -> list:
    return [r for r in v[part] if r[0] != endpoint]


# ---- the bar ----------------------------------------------------------------------------------------


def test_har_gives_the_pcap_inventory(dbs, pcap_view):
    """Everything equal but one thing mitmproxy's HAR does not keep: request bodies of DELETE
    (its savehar writes ``postData`` for POST, PUT and PATCH only; the length is kept, from
    ``bodySize``), so the request schema of ``DELETE /delete`` is missing and that endpoint's
    sample (picked by a hash over the request body) is another one."""
    har = view(dbs["har"])
    delete = ("httpbin.imports.test", "DELETE", "/delete", "")
    for part in pcap_view:
        if part in ("schemas", "fields", "samples"):
            assert _drop(har, part, delete) == _drop(pcap_view, part, delete), part
        else:
            assert har[part] == pcap_view[part], part
    assert any(r[0] == delete and r[1] == "request" for r in pcap_view["schemas"])
    assert not any(r[0] == delete and r[1] == "request" for r in har["schemas"])


def test_suricata_gives_the_pcap_inventory(dbs, pcap_view):
    """With ``dump-all-headers: both`` and bodies from alerts (``http-body: yes``), everything the
    inventory holds is equal (times and latency excepted, as everywhere)."""
    assert view(dbs["suricata"]) == pcap_view


def _collapse(rows: list, keys: tuple[int, ...], sums: tuple[int, ...]) -> list:
    """Rows keyed by the columns ``keys`` (an endpoint key cut to service, method, template: no
    GraphQL operation) with the columns ``sums`` added up."""
    acc: dict[tuple, list] = defaultdict(lambda: [0] * len(sums))
    for r in rows:
        k = tuple(r[i][:3] if isinstance(r[i], tuple) else r[i] for i in keys)
        for j, c in enumerate(sums):
            acc[k][j] += r[c]
    return sorted((*k, *v) for k, v in acc.items())


@pytest.mark.parametrize("which", ["zeek", "zeek_json"])
def test_zeek_gives_the_pcap_inventory(dbs, pcap_view, which):
    """Zeek's http.log (TSV or JSON) gives the same services, server addresses, path templates,
    endpoints by method and template with their hits, status codes with counts, query and path
    parameters (names, types, counts, examples), probes and static assets, and byte counts.

    Not carried (excluded): GraphQL operation names (they are in the request body, so the three
    ``POST /graphql`` operations are one REST endpoint; compared summed), bodies (no JSON schemas,
    fields, form parameters, samples' bodies), headers other than Host, User-Agent, Referer,
    Origin and the Basic-auth user (auth schemes other than Basic, samples' headers), and
    Content-Types (Zeek sniffs MIME types from bodies: a bodiless 302 has none)."""
    z = view(dbs[which])
    for part in ("addresses", "templates", "probes", "assets", "path_query_params"):
        assert z[part] == pcap_view[part], part
    assert [s[:2] + s[3:] for s in z["services"]] == [s[:2] + s[3:] for s in pcap_view["services"]]
    assert _collapse(z["endpoints"], (0, 1, 2), (5,)) == _collapse(pcap_view["endpoints"], (0, 1, 2), (5,))
    assert _collapse(z["statuses"], (0, 1), (2,)) == _collapse(pcap_view["statuses"], (0, 1), (2,))
    assert _collapse(z["bytes"], (0, 1, 2), (4, 5)) == _collapse(pcap_view["bytes"], (0, 1, 2), (4, 5))
    # outside the GraphQL endpoint, rows are equal one for one
    graphql = ("shop.imports.test", "POST", "/graphql")
    assert ([r for r in z["endpoints"] if r[:3] != graphql]
            == [r for r in pcap_view["endpoints"] if r[:3] != graphql])
    assert not z["schemas"] and not z["fields"] and not z["body_params"]
    # the part of auth that http.log carries: the Basic-auth user name
    basic = [(r[:4], json.loads(r[4]).get("basic")) for r in pcap_view["auth"] if "basic" in r[4]]
    assert basic and basic == [(r[:4], json.loads(r[4]).get("basic")) for r in z["auth"] if "basic" in r[4]]


def test_zeek_tsv_and_json_give_the_same_transactions():
    tsv = [tx.to_json() for tx in reader(ZEEK_TSV, "zeek")]
    js = [tx.to_json() for tx in reader(ZEEK_JSON, "zeek")]
    assert len(tsv) == 367 and tsv == js


REAL = sorted(f for f in os.listdir(os.path.join(IMP, "zeek-real")) if f.endswith(".http.log"))


@pytest.mark.parametrize("log", REAL)
def test_real_zeek_log_gives_the_pcap_inventory(tmp_path, log):
    """Real Zeek output (Zeek's test-suite baselines, old and new field sets, escapes, HTTP/0.9,
    Basic auth with a logged password, 100-continue) against our replay of the same pcap.
    btest masks timestamps in some baselines (``XXXXXXXXXX.XXXXXX``); those get the pcap's
    first request time, the only edit."""
    from test_inventory_support import build

    from sensor.pipeline import transactions_from_files

    pcap = corpus_path(log.replace(".http.log", ".pcap"))
    with open(os.path.join(IMP, "zeek-real", log)) as f:
        text = f.read()
    if "XXXXXXXXXX.XXXXXX" in text:
        first = min(tx.ts for tx in transactions_from_files([pcap]))
        text = text.replace("XXXXXXXXXX.XXXXXX", f"{first:.6f}")
    path = tmp_path / "http.log"
    path.write_text(text)
    p = view(build(str(tmp_path / "pcap.db"), transactions_from_files([pcap])).db.conn)
    z = view(build(str(tmp_path / "zeek.db"), list(reader(str(path), "zeek"))).db.conn)
    assert p["endpoints"] or p["assets"] or p["probes"]
    for part in ("services", "addresses", "endpoints", "templates", "statuses", "path_query_params", "probes",
                 "assets"):
        assert z[part] == p[part], part


# ---- the command --------------------------------------------------------------------------------------


def test_import_records_like_replay(tmp_path):
    """One run per import with the files as sources; the same file again is refused (exit 0,
    nothing counted) unless --force; --json gives the summary."""
    db = str(tmp_path / "inv.db")
    r = apisensor("import", ZEEK_TSV, EVE, "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["transactions"] == 734 and out["formats"] == {"zeek": 367, "suricata": 367}
    assert out["services"] == 2 and out["endpoints"] >= 81
    con = sqlite3.connect(db)
    assert con.execute("select status, transactions, sources from runs").fetchall() == [
        ("complete", 734, json.dumps([ZEEK_TSV, EVE]))]
    assert con.execute("select count(*) from transactions").fetchone()[0] == 734
    hits = con.execute("select sum(hits) from services").fetchone()[0]
    con.close()
    again = apisensor("import", ZEEK_TSV, "--db", db)
    assert again.returncode == 0 and "already replayed" in again.stderr
    forced = apisensor("import", ZEEK_TSV, "--db", db, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    con = sqlite3.connect(db)
    assert con.execute("select sum(hits) from services").fetchone()[0] == hits + 367
    assert con.execute("select count(*) from runs where status = 'complete'").fetchone()[0] == 2
    con.close()


def test_import_stores_no_raw_credentials(tmp_path):
    """Redaction applies unchanged: the Basic-auth password Zeek logged is not in the database."""
    log = os.path.join(IMP, "zeek-real", "zeek-basic-auth-with-colon.http.log")
    with open(log) as f:
        text = f.read().replace("XXXXXXXXXX.XXXXXX", "1687776780.000000")
    path = tmp_path / "http.log"
    path.write_text(text)
    db = _record(tmp_path, "inv", "import", str(path))
    from conftest import all_text

    secret = base64.b64encode(b"test:1:34").decode()
    # the password "1:34" also occurs in our own wall-clock stamps (11:34, 12:01:34): not a leak
    clock = {"started_at", "finished_at", "committed_at", "detected_at", "recorded_at"}
    assert not [c for c in all_text(db) if c[1] not in clock and (secret in c[2] or "1:34" in c[2])]


def _one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("apisensor: error: "), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.mark.parametrize("content,fmt,fragment", [
    (b"", "auto", "empty file"),
    (b"\x00\x01garbage\xff" * 100, "auto", "not a HAR file, Zeek http.log or Suricata eve.json"),
    (b'{"hello": "world"}\n', "auto", "not a HAR file"),
    (b'{"log": {"version": "1.2", "entries": 7}}', "auto", "not an array"),
    (b'{"log": {"entries": [{"request": {"method": "GET"}}]}}', "auto", "request.method and request.url"),
    (b'{"log": {"entries": [', "har", "cut short"),
    (b"#separator \\x09\n#set_separator\t,\n#path\tconn\n#fields\tts\tuid\tproto\n", "auto", "conn.log"),
    (b'{"ts": 1.0, "uid": "C1", "proto": "tcp", "conn_state": "SF"}\n', "zeek", "not a Zeek http.log"),
    (b'{"timestamp": "x", "event_type": "http", "http": {}}\n', "suricata", "timestamp"),
    (b'{"event_type": "http"}\n{"nope"\n', "har", "not a HAR file"),
])
def test_malformed_input_is_one_line_and_exit_2(tmp_path, content, fmt, fragment):
    f = tmp_path / "input.log"
    f.write_bytes(content)
    db = tmp_path / "inv.db"
    _one_line_error(apisensor("import", str(f), "--db", str(db), "--format", fmt), str(f), fragment)
    assert not db.exists()  # refused before anything was recorded


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    db = str(tmp_path / "inv.db")
    _one_line_error(apisensor("import", "--db", db), "no file given")
    _one_line_error(apisensor("import", str(tmp_path / "nope.har"), "--db", db), "no such file")
    _one_line_error(apisensor("import", str(tmp_path), "--db", db), "is a directory")
    _one_line_error(apisensor("import", HAR, "--db", db, "--client", "bob"), "not an IP address")
    _one_line_error(apisensor("import", PCAP, "--db", db), "not a HAR file, Zeek http.log or Suricata")
    bad_db = tmp_path / "bad.db"
    bad_db.write_bytes(b"this is not sqlite" * 100)
    _one_line_error(apisensor("import", ZEEK_TSV, "--db", str(bad_db)), "cannot open as a SQLite database")


def test_a_cut_har_is_read_up_to_the_cut(tmp_path):
    """A HAR cut in the middle (a browser killed while saving) gives the entries before the cut,
    a warning, exit 0 -- as a pcap cut by a crashed tcpdump does."""
    with gzip.open(HAR, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.har"
    cut.write_bytes(data[: len(data) // 2])
    r = apisensor("import", str(cut), "--db", str(tmp_path / "inv.db"), "--json")
    assert r.returncode == 0, r.stderr
    n = json.loads(r.stdout)["transactions"]
    assert 100 < n < 367
    assert "warning" in r.stderr and "cut short" in r.stderr


def test_garbled_lines_are_skipped_and_reported(tmp_path):
    with gzip.open(EVE, "rt") as f:
        lines = f.read().splitlines()
    lines.insert(len(lines) // 2, '{"timestamp": "2026-11-29T09:15:00.0+0000", "event_type": "ht')
    lines.insert(10, "not json at all")
    eve = tmp_path / "eve.json"
    eve.write_text("\n".join(lines) + "\n")
    r = apisensor("import", str(eve), "--db", str(tmp_path / "inv.db"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["transactions"] == 367 and out["skipped_records"] == 2
    assert "2 records skipped: invalid JSON" in r.stderr


# ---- streaming: memory does not grow with the file ----------------------------------------------------


def _peak(path: str, fmt: str) -> tuple[int, int]:
    tracemalloc.start()
    try:
        n = sum(1 for _ in reader(path, fmt))
        return n, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_big_eve_json_is_streamed(tmp_path):
    """Memory is bounded by the merge window, not by the file: 4x the events, same peak."""
    with gzip.open(EVE, "rt") as f:
        lines = [json.loads(x) for x in f if '"event_type":"http"' in x]
    peaks = []
    for copies in (2, 8):  # the 367 http events as that many distinct flows: 1 and 4 MB
        path = tmp_path / f"eve{copies}.json"
        with open(path, "w") as f:
            for i in range(copies):
                for ev in lines:
                    f.write(json.dumps({**ev, "flow_id": ev["flow_id"] + i}) + "\n")
        n, peak = _peak(str(path), "suricata")
        assert n == copies * 367
        peaks.append((path.stat().st_size, peak))
    (small, p_small), (big, p_big) = peaks
    assert big > 3.5e6 and p_big < 1.3 * p_small and p_big < 4e6, peaks


def test_a_big_har_is_streamed(tmp_path):
    with gzip.open(HAR, "rt") as f:
        har = json.load(f)
    entries = har["log"]["entries"]
    path = tmp_path / "big.har"
    with open(path, "w") as f:  # one JSON document of 6 copies of the entries: about 7 MB
        f.write('{"log": {"version": "1.2", "creator": {"name": "t", "version": "1"}, "entries": [\n')
        f.write(",\n".join(json.dumps(e, indent=2) for _ in range(6) for e in entries))
        f.write('\n], "pages": []}}\n')
    size = path.stat().st_size
    n, peak = _peak(str(path), "har")
    assert n == 6 * len(entries)
    assert size > 6e6 and peak < size / 4, (size, peak)


# ---- formats: details -----------------------------------------------------------------------------------


def test_detect_each_format_plain_and_gzipped(tmp_path):
    assert detect(HAR) == "har" and detect(EVE) == "suricata"
    assert detect(ZEEK_TSV) == "zeek" and detect(ZEEK_JSON) == "zeek"
    assert detect(os.path.join(IMP, "zeek-real", "zeek-no_crlf.http.log")) == "zeek"  # "### BTest" first
    gz = tmp_path / "http.log.gz"
    with open(ZEEK_TSV, "rb") as f:
        gz.write_bytes(gzip.compress(f.read()))
    assert detect(str(gz)) == "zeek"
    probe(str(gz), "zeek")
    with pytest.raises(ImportFormatError):
        probe(ZEEK_TSV, "suricata")


def test_zeek_escapes_and_old_fields():
    assert unescape("/a\\x09b\\x5cc\\x2cd") == "/a\tb\\c,d"
    assert unescape("/r\\xfchma") == "/r\xfchma"  # not UTF-8: read as latin-1, like the sensor
    tx = next(iter(reader(os.path.join(IMP, "zeek-real", "zeek-www-odd-url.http.log"), "zeek")))
    assert tx.uri.startswith("/~cect/teoreetilised seminarid_2010/arheoloogia_uurimisr\xfchma_seminar/")
    assert tx.status_code == 404 and tx.response_header("content-type") == "text/html"  # Bro 2.1 mime_type
    cont = next(iter(reader(os.path.join(IMP, "zeek-real", "zeek-100-continue.http.log"), "zeek")))
    assert cont.interim_statuses == (100,)
    assert cont.request_body_len == 2001 and cont.response_body_len == 60731


def test_host_header_puts_the_port_back():
    assert host_header("api.test", 8080) == "api.test:8080"
    assert host_header("api.test", 80) == "api.test"
    assert host_header("api.test:9000", 9000) == "api.test:9000"
    assert host_header("::1", 8000) == "[::1]:8000"
    assert host_header("api.test", 8443, explicit_port=443) == "api.test"
    assert host_header("-", 80) is None


def _write_har(path, entries) -> str:
    path.write_text(json.dumps({"log": {"version": "1.2", "entries": entries}}))
    return str(path)


def test_har_from_a_browser_h2_https_base64_and_no_response(tmp_path):
    """Chrome-style entries: HTTP/2 pseudo-headers, https, base64 content, timings, an entry
    without a response (status 0)."""
    png = bytes(range(256))
    entries = [
        {"startedDateTime": "2026-11-29T10:00:00.000Z", "time": 120.5, "serverIPAddress": "[2001:db8::1]",
         "request": {"method": "GET", "url": "https://api.example.com/v1/items/42?expand=owner",
                     "httpVersion": "h2", "headers": [{"name": ":method", "value": "GET"},
                                                      {"name": ":authority", "value": "api.example.com"},
                                                      {"name": ":path", "value": "/v1/items/42?expand=owner"},
                                                      {"name": "authorization", "value": "Bearer abc.def"}],
                     "bodySize": 0},
         "response": {"status": 200, "statusText": "", "httpVersion": "h2",
                      "headers": [{"name": "content-type", "value": "image/png"}],
                      "content": {"size": 256, "mimeType": "image/png",
                                  "text": base64.b64encode(png).decode(), "encoding": "base64"},
                      "bodySize": 120},
         "timings": {"blocked": 1, "dns": -1, "connect": -1, "send": 0.5, "wait": 100, "receive": 19}},
        {"startedDateTime": "2026-11-29T10:00:01+00:00", "time": 0,
         "request": {"method": "POST", "url": "http://api.example.com:8080/v1/login",
                     "httpVersion": "HTTP/1.1", "headers": [],
                     "postData": {"mimeType": "application/x-www-form-urlencoded",
                                  "params": [{"name": "user", "value": "al ice"}]}},
         "response": {"status": 0, "headers": [], "content": {}}},
    ]
    a, b = list(reader(_write_har(tmp_path / "b.har", entries), "har"))
    assert a.protocol == "HTTP/2" and a.host == "api.example.com" and a.uri == "/v1/items/42?expand=owner"
    assert a.server == "[2001:db8::1]:443" and a.client == "0.0.0.0:0"
    assert not any(k.startswith(":") for k, _ in a.request_headers)
    assert a.response_body == png and a.response_body_len == 256 and a.response_body_len_wire == 120
    assert abs(a.latency - 0.1015) < 1e-6
    assert b.host == "api.example.com:8080" and b.server_port == 8080 and b.status_code is None
    assert b.request_body == b"user=al+ice" and "no_response" in b.flags


def test_suricata_alerts_bring_bodies_and_alert_only_transactions(tmp_path):
    """An alert merges into the http event of its flow_id/tx_id whichever comes first; an alert
    whose http event is missing is a transaction of its own (addresses from the flow, not from
    the to_client packet); printable bodies are used when base64 is off; a body shorter than
    ``length`` on an uncompressed response is flagged truncated."""
    def ev(kind, tx_id, **http):
        e = {"timestamp": f"2026-11-29T10:00:0{tx_id}.000000+0000", "flow_id": 77, "tx_id": tx_id,
             "event_type": kind, "src_ip": "10.0.0.1", "src_port": 5555, "dest_ip": "10.0.0.2",
             "dest_port": 8080, "proto": "TCP", "http": http}
        if kind == "alert":
            e.update(src_ip="10.0.0.2", src_port=8080, dest_ip="10.0.0.1", dest_port=5555,
                     direction="to_client")
        return e

    lines = [
        ev("http", 0, hostname="svc.test", http_port=8080, url="/a", http_method="GET", status=200, length=9,
           http_content_type="application/json", protocol="HTTP/1.1"),
        ev("alert", 0, hostname="svc.test", url="/a", http_method="GET", status=200, length=9,
           http_response_body=base64.b64encode(b'{"ok": 1}').decode()),
        ev("alert", 1, hostname="svc.test", url="/b", http_method="POST", status=201, length=500,
           http_request_body_printable='{"name": "x"}', http_response_body_printable="short"),
        {"timestamp": "2026-11-29T10:00:09+0000", "event_type": "flow", "flow_id": 77},
    ]
    path = tmp_path / "eve.json"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = reader(str(path), "suricata")
    a, b = sorted(r, key=lambda t: t.ts)
    assert r.other_events == 1 and not r.skipped
    assert a.host == "svc.test:8080" and a.response_body == b'{"ok": 1}' and a.response_body_len == 9
    assert a.response_header("content-type") == "application/json"
    assert b.client == "10.0.0.1:5555" and b.server == "10.0.0.2:8080" and b.method == "POST"
    assert b.request_body == b'{"name": "x"}' and b.request_body_len == 13
    assert "truncated" in b.flags and b.response_body_len == 500


def test_suricata_http2_pseudo_headers_become_host(tmp_path):
    ev = {"timestamp": "2026-11-29T10:00:00.000000+0000", "flow_id": 1, "tx_id": 0, "event_type": "http",
          "src_ip": "10.0.0.1", "src_port": 1234, "dest_ip": "10.0.0.2", "dest_port": 8443, "proto": "TCP",
          "http": {"hostname": "h2.test", "url": "/x", "http_method": "GET", "protocol": "HTTP/2",
                   "status": 200, "length": 3,
                   "request_headers": [{"name": ":method", "value": "GET"},
                                       {"name": ":authority", "value": "h2.test:8443"},
                                       {"name": "user-agent", "value": "ua"}],
                   "response_headers": [{"name": ":status", "value": "200"},
                                        {"name": "content-type", "value": "text/plain"}]}}
    path = tmp_path / "eve.json"
    path.write_text(json.dumps(ev) + "\n")
    (tx,) = reader(str(path), "suricata")
    assert tx.protocol == "HTTP/2" and tx.host == "h2.test:8443" and tx.user_agent == "ua"
    assert tx.response_headers == (("content-type", "text/plain"),)
