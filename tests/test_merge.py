"""``apisensor merge``: the merge of the databases built from two halves of a capture equals the
database built from the whole capture, table by table (compared by natural keys, not ids);
merging is idempotent; every table a replay creates has a merge rule.

The halves split a real capture by connection (every packet of a TCP connection or UDP flow
goes to the same half, records copied byte for byte), so no transaction is cut in two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys

import dpkt
import pytest
from conftest import DATA, PCAPS, ROOT

from discovery.actors import ensure_schema as ensure_actor_tables
from discovery.behaviour import Settings
from discovery.merge import RULES, MergeError, merge, unmergeable
from discovery.store import Store

APISENSOR = [os.path.join(os.path.dirname(sys.executable), "apisensor")]
CAPTURES = {
    "demo": os.path.join(PCAPS, "demo.pcap"),
    "mesh": os.path.join(DATA, "graph", "mesh.pcap"),
}


# ---- building the databases --------------------------------------------------------------------


def _flow_key(frame: bytes) -> tuple:
    ip = dpkt.ethernet.Ethernet(frame).data
    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        return ("other",)
    l4 = ip.data
    if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        ends = sorted([(bytes(ip.src), l4.sport), (bytes(ip.dst), l4.dport)])
        return (type(l4).__name__, *ends)
    return ("ip", bytes(ip.src), bytes(ip.dst))


def split_by_flow(pcap: str, out_a: str, out_b: str) -> tuple[int, int]:
    """Write the flows of ``pcap`` alternately (by first appearance) to two pcap files, each
    record copied as it is (timestamps exact).  Returns the packets in each half."""
    with open(pcap, "rb") as f:
        data = f.read()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    assert struct.unpack(endian + "I", data[20:24])[0] == 1, "Ethernet captures only"
    halves = [bytearray(data[:24]), bytearray(data[:24])]
    counts = [0, 0]
    side: dict[tuple, int] = {}
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8 : off + 12])[0]
        record = data[off : off + 16 + incl]
        key = _flow_key(record[16:])
        s = side.setdefault(key, len(side) % 2)
        halves[s] += record
        counts[s] += 1
        off += 16 + incl
    for path, half in zip((out_a, out_b), halves):
        with open(path, "wb") as f:
            f.write(half)
    return counts[0], counts[1]


def replay_exact(pcap: str, db_path: str) -> None:
    """What ``apisensor replay`` does, with the findings sink analysing every body (no
    sampling: docs/findings.md "Speed"), so finding counts do not depend on what came before."""
    from discovery.findings import Findings
    from discovery.recorder import Recorder, start_run
    from discovery.store import Store
    from sensor.cli import SINKS
    from sensor.limits import Limits
    from sensor.pipeline import Pipeline
    from sensor.sources import merge as merge_records
    from sensor.sources import open_files
    from sensor.stats import Stats

    store = Store(db_path)
    files = open_files([pcap])
    run_id, sinks = start_run(store, [pcap], SINKS, files=[pcap])
    for s in sinks:
        if isinstance(s, Findings):
            s.sample = False
    rec = Recorder(store, run_id, sinks)
    stats = Stats()
    p = Pipeline(rec.observe, Limits(), stats, on_event=rec.observe_event)
    p.run(merge_records(files))
    p.finish()
    rec.finish()
    store.finish_run(run_id, stats.to_json())
    store.close()


# ---- comparing databases by natural keys ------------------------------------------------------------

_SVC = "(select name from services s where s.id = t.service_id) as service_name"
_EP = (
    "(select s.name || ' ' || e.method || ' ' || e.template || ' ' || e.operation from endpoints e "
    "join services s on s.id = e.service_id where e.id = t.endpoint_id) as endpoint_key"
)
_TX = "(select ts || ' ' || client || ' ' || server from transactions x where x.id = t.{0}) as {0}_ref"


def _rows(con, sql):
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur]


def _counts_free(node):
    """A learned schema tree without its counts: the only part a merge cannot make exact is how
    often a body both sources saw was counted (see discovery/merge.py)."""
    if not isinstance(node, dict):
        return node
    out = {k: _counts_free(v) for k, v in node.items() if k not in ("n", "t", "f")}
    if "t" in node:
        out["types"] = sorted(node["t"])
    return out


def snapshot(path: str, exact_findings: bool = True) -> dict:
    """Every table as {natural key: row}, without ids, run ids and wall-clock times; references
    (service, endpoint, transaction) replaced by what they point to."""
    con = sqlite3.connect(path)
    out: dict = {}

    def keyed(table, sql, key, drop=()):
        d = {}
        for r in _rows(con, sql):
            for c in drop:
                r.pop(c, None)
            k = tuple(r[c] for c in key)
            assert k not in d, (path, table, k)
            d[k] = r
        out[table] = d

    keyed("services", "select * from services", ["name"], ["id", "created_run"])
    keyed(
        "service_addresses",
        f"select *, {_SVC} from service_addresses t",
        ["service_name", "address"],
        ["service_id"],
    )
    keyed(
        "observed_paths",
        f"select *, {_SVC}, {_EP} from observed_paths t",
        ["service_name", "method", "path", "operation"],
        ["id", "service_id", "endpoint_id"],
    )
    for r in out["observed_paths"].values():
        d = json.loads(r["data"])
        for acc in [d.get("req_schema"), *d.get("resp_schema", {}).values()]:
            if acc:
                acc["schema"] = _counts_free(acc["schema"])
        r["data"] = d
    keyed("templates", f"select *, {_SVC} from templates t", ["service_name", "template"], ["service_id"])
    keyed(
        "endpoints",
        f"select *, {_SVC} from endpoints t",
        ["service_name", "method", "template", "operation"],
        ["id", "service_id", "created_run"],
    )
    keyed(
        "endpoint_statuses",
        f"select *, {_EP} from endpoint_statuses t",
        ["endpoint_key", "status_code"],
        ["endpoint_id"],
    )
    keyed(
        "parameters",
        f"select *, {_EP} from parameters t",
        ["endpoint_key", "location", "name"],
        ["id", "endpoint_id"],
    )
    keyed(
        "schemas",
        f"select *, {_EP} from schemas t",
        ["endpoint_key", "direction", "status_code"],
        ["endpoint_id"],
    )
    keyed(
        "fields",
        f"select *, {_EP} from fields t",
        ["endpoint_key", "direction", "status_code", "path"],
        ["endpoint_id"],
    )
    keyed(
        "samples", f"select *, {_EP} from samples t", ["endpoint_key", "status_code"], ["id", "endpoint_id"]
    )
    keyed("probes", f"select *, {_SVC} from probes t", ["service_name", "client"], ["service_id"])
    keyed("assets", f"select *, {_SVC} from assets t", ["service_name", "kind", "extension"], ["service_id"])
    keyed(
        "changes",
        "select * from changes",
        ["kind", "service", "method", "template", "name"],
        ["id", "run_id", "detected_at", "detail"],
    )
    drop = ["id", "endpoint_id", "first_run_id", "last_run_id", "first_tx_id", "last_tx_id", "tx_ref"]
    if not exact_findings:  # sampled bodies: counts and which transaction came first depend on the order
        drop += [
            "count",
            "first_tx_id_ref",
            "last_tx_id_ref",
            "first_seen",
            "last_seen",
            "value_hashes",
            "distinct_values",
            "evidence",
        ]
    keyed(
        "findings",
        f"select *, {_EP}, {_TX.format('first_tx_id')}, {_TX.format('last_tx_id')} from findings t",
        ["service", "method", "path", "detector", "location"],
        drop,
    )
    for r in out["findings"].values():
        if "value_hashes" in r:
            r["value_hashes"] = sorted(json.loads(r["value_hashes"]))
    keyed("graph_edges", "select * from graph_edges", ["client_ip", "service"], ["updated_run"])
    for r in out["graph_edges"].values():
        r["latency_sum"] = round(r["latency_sum"], 9)  # a sum of floats in another order
    keyed("graph_names", "select * from graph_names", ["ip", "port", "name", "source"])
    keyed("graph_nodes", "select * from graph_nodes", ["name"])
    _actor_tables(con, out, keyed, exact_findings)
    txs = sorted(
        json.dumps({k: v for k, v in r.items() if k not in ("id", "run_id")}, sort_keys=True)
        for r in _rows(con, "select * from transactions")
    )
    out["transactions"] = {"all": txs}
    runs = _rows(con, "select * from runs")
    out["runs"] = {
        c: sum(r[c] or 0 for r in runs)
        for c in ("packets", "bytes", "flows", "http_flows", "tls_flows", "other_flows", "transactions")
    }
    con.close()
    return out


_ACTOR = "(select actor from actors a where a.id = t.actor_id) as actor_key"
_SESSION = (
    "(select a.actor || ' ' || s.start from actor_sessions s join actors a on a.id = s.actor_id "
    "where s.id = t.session_id) as session_key"
)
_ACTOR_EP = (
    "(select a.actor || ' ' || e.service || ' ' || e.method || ' ' || e.path from actor_endpoints e "
    "join actors a on a.id = e.actor_id where e.id = t.actor_endpoint_id) as actor_endpoint_key"
)
# estimates of the actors sink, not exact counts (docs/actors.md "Memory and cost"): which bodies of
# an endpoint are scanned for sensitive keys depends on the order the sensor saw them in
ACTOR_ESTIMATES = ("records", "sensitive_records")


def _actor_tables(con, out, keyed, exact_findings: bool) -> None:
    """The actors sink's tables by natural keys: an actor by its id, a session by its actor and
    start, a per-endpoint aggregate by actor, service, method and skeleton, a call by its
    transaction, a behaviour finding's detail by its finding."""
    names = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    if "actors" not in names:
        return
    est = ACTOR_ESTIMATES
    keyed("actors", "select * from actors", ["actor"],
          ["id", "first_run_id", "last_run_id", "run_id", *est])
    keyed(
        "actor_sessions",
        f"select *, {_ACTOR}, {_TX.format('first_tx_id')}, {_TX.format('last_tx_id')} from actor_sessions t",
        ["actor_key", "start"],
        ["id", "actor_id", "run_id", "first_tx_id", "last_tx_id"],
    )
    keyed(
        "actor_endpoints",
        f"select *, {_ACTOR}, {_EP} from actor_endpoints t",
        ["actor_key", "service", "method", "path"],
        ["id", "actor_id", "endpoint_id", "first_run_id", "last_run_id", "run_id", *est],
    )
    drop = ["id", "tx_id", "run_id", "actor_id", "session_id", "actor_endpoint_id"]
    keyed(
        "actor_calls",
        f"select *, {_ACTOR}, {_SESSION}, {_ACTOR_EP}, {_TX.format('tx_id')} from actor_calls t",
        ["tx_id_ref"],
        drop if exact_findings else [*drop, "sensitive"],
    )

    def tx_refs(ids: str) -> list:
        return [
            con.execute("select ts || ' ' || client || ' ' || server from transactions where id = ?", [i])
            .fetchone()[0]
            for i in json.loads(ids)
        ]

    def session_keys(ids: str) -> list:
        return sorted(
            con.execute(
                "select a.actor || ' ' || s.start from actor_sessions s join actors a on a.id = s.actor_id "
                "where s.id = ?",
                [i],
            ).fetchone()[0]
            for i in json.loads(ids)
        )

    keyed(
        "actor_findings",
        f"select *, {_ACTOR}, {_EP} from actor_findings t",
        ["actor_key", "detector", "service", "method", "path"],
        ["id", "finding_id", "actor_id", "endpoint_id", "run_id"],
    )
    for r in out["actor_findings"].values():
        r["tx_ids"] = tx_refs(r["tx_ids"])
        r["session_ids"] = session_keys(r["session_ids"])
        if r["metric"] in ACTOR_ESTIMATES:  # the evidence of a data export: estimated records
            r.pop("value")
            r.pop("baseline")
    keyed("actor_settings", "select * from actor_settings", ["key"])


def differences(a: dict, b: dict) -> list:
    diffs = []
    for table in sorted(set(a) | set(b)):
        x, y = a.get(table, {}), b.get(table, {})
        for k in sorted(set(x) | set(y), key=str):
            if x.get(k) != y.get(k):
                if k not in x or k not in y:
                    diffs.append((table, k, "missing in " + ("first" if k not in x else "second")))
                else:
                    cols = (
                        {c: (x[k].get(c), y[k].get(c)) for c in x[k] if x[k].get(c) != y[k].get(c)}
                        if isinstance(x[k], dict)
                        else "differs"
                    )
                    diffs.append((table, k, cols))
    return diffs


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(CAPTURES))
def built(request, tmp_path_factory):
    """whole.db from the capture, a.db and b.db from its halves (exact replays)."""
    d = tmp_path_factory.mktemp(f"merge-{request.param}")
    pcap = CAPTURES[request.param]
    a, b = str(d / "a.pcap"), str(d / "b.pcap")
    na, nb = split_by_flow(pcap, a, b)
    assert na and nb
    for src, name in ((pcap, "whole"), (a, "a"), (b, "b")):
        replay_exact(src, str(d / f"{name}.db"))
    return d


def _copy(src: str, dst: str) -> None:
    shutil.copy(src, dst)
    if os.path.exists(src + ".key"):
        shutil.copy(src + ".key", dst + ".key")


# ---- the bar ---------------------------------------------------------------------------------------


def test_merge_of_two_halves_equals_the_whole(built):
    whole = snapshot(str(built / "whole.db"))
    assert whole["endpoints"] and whole["findings"] and whole["graph_edges"]
    for order in (("a", "b"), ("b", "a")):
        out = str(built / f"merged-{''.join(order)}.db")
        report = merge(out, [str(built / f"{n}.db") for n in order])
        assert [s["status"] for s in report["sources"]] == ["merged", "merged"]
        assert report["warnings"] == []
        assert differences(whole, snapshot(out)) == []
    # the halves really are different: neither alone is the whole
    assert differences(whole, snapshot(str(built / "a.db")))
    assert differences(whole, snapshot(str(built / "b.db")))


def test_schema_bodies_both_halves_saw_are_counted_once(built):
    """Bodies seen by both halves: the stored trees count them twice, schemas.bodies once."""
    out = str(built / "merged-ab.db")
    if not os.path.exists(out):
        merge(out, [str(built / "a.db"), str(built / "b.db")])

    def crcs(path):
        con = sqlite3.connect(path)
        got = {}
        for sid, method, p, op, data in con.execute(
            "select (select name from services where id = service_id), method, path, operation, data "
            "from observed_paths"
        ):
            d = json.loads(data)
            for st, acc in [("req", d["req_schema"]), *d["resp_schema"].items()]:
                if acc:
                    got[(sid, method, p, op, st)] = {c for c, _ in acc["seen"]}
        return got

    a, b = crcs(str(built / "a.db")), crcs(str(built / "b.db"))
    shared = sum(len(a[k] & b[k]) for k in set(a) & set(b))
    assert shared > 0  # the captures do repeat bodies across connections

    def bodies(path: str) -> int:
        with sqlite3.connect(path) as con:
            return con.execute("select sum(bodies) from schemas").fetchone()[0]

    assert bodies(out) == bodies(str(built / "whole.db"))
    assert bodies(out) == bodies(str(built / "a.db")) + bodies(str(built / "b.db")) - shared


def test_merge_is_idempotent(built, tmp_path):
    out = str(tmp_path / "all.db")
    a, b = str(built / "a.db"), str(built / "b.db")
    merge(out, [a, b])
    first = snapshot(out)
    with sqlite3.connect(out) as con:
        n_runs = con.execute("select count(*) from runs").fetchone()[0]
    again = merge(out, [a, b, a])
    assert [s["status"] for s in again["sources"]] == ["already merged"] * 3
    assert merge(out, [out])["sources"][0]["status"] == "is the output"
    # a copy of the merged database merged back: its runs are all there already
    _copy(out, str(tmp_path / "copy.db"))
    assert merge(out, [str(tmp_path / "copy.db")])["sources"][0]["status"] == "already merged"
    assert differences(first, snapshot(out)) == []
    with sqlite3.connect(out) as con:
        assert con.execute("select count(*) from runs").fetchone()[0] == n_runs
        assert con.execute("select count(*) from merges where status = 'complete'").fetchone()[0] == 2
    # a merged database merged into a new one: the same inventory
    merge(str(tmp_path / "super.db"), [out])
    assert differences(first, snapshot(str(tmp_path / "super.db"))) == []


def test_a_source_that_grew_since_is_refused_then_rebuilt(built, tmp_path):
    out = str(tmp_path / "all.db")
    a, b = str(tmp_path / "a.db"), str(built / "b.db")
    _copy(str(built / "a.db"), a)
    merge(out, [a, b])
    before = snapshot(out)
    replay_exact(CAPTURES["mesh"] if "demo" in str(built) else CAPTURES["demo"], a)  # the sensor went on
    with pytest.raises(MergeError, match="1 of its 2 runs are in .* already.*--replace"):
        merge(out, [a])
    assert differences(before, snapshot(out)) == []  # nothing written
    report = merge(out, [a, b], replace=True)
    assert [s["status"] for s in report["sources"]] == ["merged", "merged"]
    assert report["runs"] == 3


def test_an_unfinished_merge_is_reported(built, tmp_path):
    out = str(tmp_path / "all.db")
    merge(out, [str(built / "a.db")])
    with sqlite3.connect(out) as con:  # as a merge killed half-way leaves it
        con.execute("update merges set status = 'running', finished_at = null")
    with pytest.raises(MergeError, match="did not finish.*--replace"):
        merge(out, [str(built / "b.db")])


# ---- actors: sessions and behaviour findings over the merged population ---------------------------

VAPI = os.path.join(DATA, "actors", "vapi.pcap")


def split_by_time(pcap: str, cut: float, out_a: str, out_b: str) -> tuple[int, int]:
    """Packets before ``cut`` to one file, the others to the other (records copied as they are)."""
    with open(pcap, "rb") as f, open(out_a, "wb") as fa, open(out_b, "wb") as fb:
        reader = dpkt.pcap.Reader(f)
        writers = [dpkt.pcap.Writer(out, snaplen=262144, linktype=reader.datalink()) for out in (fa, fb)]
        counts = [0, 0]
        for ts, buf in reader:
            writers[ts >= cut].writepkt(buf, ts)
            counts[ts >= cut] += 1
    return counts[0], counts[1]


def quiet_moment(db: str) -> float:
    """The middle of the longest time during which no transaction was open."""
    with sqlite3.connect(db) as con:
        rows = con.execute("select ts, coalesce(ts_end, ts) from transactions order by ts").fetchall()
    best, end = (0.0, 0.0), rows[0][1]
    for ts, te in rows[1:]:
        if ts - end > best[0]:
            best = (ts - end, (ts + end) / 2)
        end = max(end, te)
    return best[1]


def actor_snapshot(path: str) -> dict:
    """The actors sink's tables and the behaviour findings (by natural keys, as :func:`snapshot`),
    without what the sink estimates: records of sensitive data (docs/actors.md)."""
    snap = snapshot(path)
    out = {t: snap[t] for t in ("actors", "actor_sessions", "actor_endpoints", "actor_calls",
                                "actor_findings", "actor_settings")}
    for r in out["actor_calls"].values():
        r.pop("sensitive")
    out["behaviour"] = {k: dict(r) for k, r in snap["findings"].items() if k[3].startswith("behaviour.")}
    for r in out["behaviour"].values():
        r["evidence"] = _estimates_free(r["evidence"])
    return out


def _estimates_free(evidence: str) -> str:
    return re.sub(r"[\d.]+ records", "# records", evidence)


@pytest.fixture(scope="module")
def vapi_built(tmp_path_factory):
    """vAPI (six users, one attacker) replayed whole, and in halves cut two ways: by connection
    (each client's connection in one half: the peers an actor is compared with are split) and
    by time, in the longest quiet moment (dave's token expired while he waited: his calls after
    it are in the second half)."""
    d = tmp_path_factory.mktemp("merge-actors")
    replay_exact(VAPI, str(d / "whole.db"))
    assert all(split_by_flow(VAPI, str(d / "flow-a.pcap"), str(d / "flow-b.pcap")))
    cut = quiet_moment(str(d / "whole.db"))
    assert all(split_by_time(VAPI, cut, str(d / "time-a.pcap"), str(d / "time-b.pcap")))
    for name in ("flow-a", "flow-b", "time-a", "time-b"):
        replay_exact(str(d / f"{name}.pcap"), str(d / f"{name}.db"))
    return d


def _behaviour(path: str) -> dict:
    with sqlite3.connect(path) as con:
        return {
            (det, loc, method, p): (count, _estimates_free(evidence))
            for det, loc, method, p, count, evidence in con.execute(
                "select detector, location, method, path, count, evidence from findings "
                "where detector like 'behaviour.%'"
            )
        }


@pytest.mark.parametrize("split", ["flow", "time"])
def test_actors_of_two_halves_merge_into_the_whole(vapi_built, split):
    """Actors, their per-endpoint aggregates and sketches, sessions, calls, and the behaviour
    findings found again over the merged population: equal to the replay of the whole."""
    d = vapi_built
    whole = actor_snapshot(str(d / "whole.db"))
    assert whole["behaviour"] and whole["actor_findings"]
    halves = [str(d / f"{split}-{x}.db") for x in "ab"]
    for order in (halves, halves[::-1]):
        out = str(d / f"merged-{split}-{os.path.basename(order[0])}")
        report = merge(out, order)
        assert report["warnings"] == []
        assert differences(whole, actor_snapshot(out)) == []
        # the behaviour findings are the whole's, not the sum of the halves'
        assert _behaviour(out) == _behaviour(str(d / "whole.db"))
    a, b = (_behaviour(h) for h in halves)
    if split == "flow":
        # each half on its own judged its actors against fewer peers
        assert a != _behaviour(str(d / "whole.db")) and set(a) | set(b) == set(_behaviour(out))
        assert any("0 of 7 other actors" in e for _, e in {**a, **b}.values())
        assert all("0 of 13 other actors" in e for k, (_, e) in _behaviour(out).items() if "admin" in k[0])
    else:
        # dave's token actor: a session in each half, one session of all his calls once merged,
        # joined across the 3.8 s gap (less than session_idle)
        def dave(path):
            with sqlite3.connect(path) as con:
                return con.execute(
                    "select count(*), sum(s.calls), min(start), max(\"end\") from actor_sessions s join "
                    "actors a on a.id = s.actor_id where a.kind = 'jwt' and a.addresses = '[\"127.0.0.14\"]'"
                ).fetchone()

        (na, ca, sa, ea), (nb, cb, sb, eb) = dave(halves[0]), dave(halves[1])
        assert na == nb == 1 and sb - ea > 3
        assert dave(out) == dave(str(d / "whole.db")) == (1, ca + cb, sa, eb)


def test_sessions_cut_short_join_across_sources_as_in_the_whole(tmp_path):
    """With a short session_idle (0.5 s) each half cuts its actors' calls into many sessions
    (the demo's clients and the gateway forwarding their tokens are in different halves);
    merged, the parts of one session join into the sessions of the whole capture.  (Parts that
    do not overlap but lie less than session_idle apart: dave in the time split above.)"""
    pcap = CAPTURES["demo"]
    a, b = str(tmp_path / "a.pcap"), str(tmp_path / "b.pcap")
    split_by_flow(pcap, a, b)
    dbs = {}
    for src, name in ((pcap, "whole"), (a, "a"), (b, "b")):
        dbs[name] = str(tmp_path / f"{name}.db")
        store = Store(dbs[name])
        ensure_actor_tables(store.db)
        Settings().save(store.db, {"session_idle": 0.5})
        store.close()
        replay_exact(src, dbs[name])

    def sessions(path):
        with sqlite3.connect(path) as con:
            return con.execute("select count(*), sum(calls) from actor_sessions").fetchone()

    out = str(tmp_path / "all.db")
    report = merge(out, [dbs["a"], dbs["b"]])
    assert report["warnings"] == []
    n, calls = sessions(dbs["whole"])
    assert sessions(out) == (n, calls)
    assert sessions(dbs["a"])[0] + sessions(dbs["b"])[0] > n  # parts were joined
    assert differences(snapshot(dbs["whole"]), snapshot(out)) == []
    # an output that cuts sessions shorter than a source did: that source's sessions stay whole
    # (they cannot be split without their calls), with a warning
    strict = str(tmp_path / "strict.db")
    store = Store(strict)
    ensure_actor_tables(store.db)
    Settings().save(store.db, {"session_idle": 0.1})
    store.close()
    report = merge(strict, [dbs["a"]])
    assert any("session_idle=0.5" in w and "cannot be split" in w for w in report["warnings"])
    assert any("actor settings differ" in w for w in report["warnings"])


# ---- the rules cover every table --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_built(tmp_path_factory):
    """`apisensor replay` (real subprocesses, all the sinks, findings sampled as usual) of the demo
    capture and of its two halves."""
    d = tmp_path_factory.mktemp("merge-cli")
    pcap = CAPTURES["demo"]
    split_by_flow(pcap, str(d / "a.pcap"), str(d / "b.pcap"))
    for src, name in ((pcap, "whole"), (str(d / "a.pcap"), "a"), (str(d / "b.pcap"), "b")):
        subprocess.run(
            [*APISENSOR, "replay", src, "--db", str(d / f"{name}.db"), "--no-progress"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return d


def test_every_table_of_a_fresh_replay_has_a_merge_rule(cli_built):
    """A new table (or column) fails this test until its merge rule is written in
    discovery/merge.py RULES."""
    db = str(cli_built / "whole.db")
    assert unmergeable(db) == []
    pending = sorted(n for n, r in RULES.items() if r.how == "pending")
    assert not pending, f"tables left out of merges until their rule is written: {pending}"
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    assert tables <= set(RULES)
    for name, rule in RULES.items():
        if rule.how == "keyed" and name in tables:
            cols = {r[1] for r in con.execute(f'pragma table_info("{name}")')}
            assert set(rule.columns) == cols, name  # no rule for a column that does not exist either
            assert set(rule.key) <= cols


def test_a_table_without_a_rule_stops_the_merge(built, tmp_path):
    src = str(tmp_path / "new.db")
    _copy(str(built / "a.db"), src)
    with sqlite3.connect(src) as con:
        con.execute("create table sightings (id integer primary key, what text)")
        con.execute("alter table services add column colour text")
    out = str(tmp_path / "all.db")
    with pytest.raises(MergeError) as e:
        merge(out, [src])
    assert "table sightings has no merge rule" in str(e.value)
    assert "table services: no merge rule for columns colour" in str(e.value)
    assert not os.path.exists(out)  # checked before anything is written


# ---- the command ---------------------------------------------------------------------------------------


def test_merge_command(cli_built, tmp_path):
    """Real subprocesses: both halves and the whole replayed with `apisensor replay` (findings
    sampled as usual), merged with `apisensor merge`; everything equal but what the findings'
    body sampling makes order-dependent (counts, first/last transaction, evidence)."""
    a = str(cli_built / "a.pcap")
    out = str(tmp_path / "all.db")
    p = subprocess.run(
        [*APISENSOR, "merge", str(cli_built / "a.db"), str(cli_built / "b.db"), "-o", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert "a.db: merged: runs 1, 190 transactions" in p.stdout
    assert f"{out}: 4 services, 21 endpoints, " in p.stdout and p.stdout.rstrip().endswith(", 2 runs")
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert (
        differences(
            snapshot(str(cli_built / "whole.db"), exact_findings=False), snapshot(out, exact_findings=False)
        )
        == []
    )
    p = subprocess.run(
        [*APISENSOR, "merge", str(cli_built / "a.db"), "-o", out, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0 and json.loads(p.stdout)["sources"][0]["status"] == "already merged"
    # the merged inventory knows the captures: replaying one again counts nothing
    p = subprocess.run(
        [*APISENSOR, "replay", a, "--db", out, "--no-progress"], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 0 and "already replayed" in p.stderr
    # bad input: one line, exit 2
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    p = subprocess.run(
        [*APISENSOR, "merge", str(tmp_path / "junk.db"), str(tmp_path / "none.db"), "-o", out],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and p.stderr.startswith("apisensor: error: ") and p.stderr.count("\n") == 1


def test_sources_with_different_hash_keys_warn(built, tmp_path):
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    _copy(str(built / "a.db"), a)
    _copy(str(built / "b.db"), b)
    with open(b + ".key", "wb") as f:
        f.write(os.urandom(32))
    report = merge(str(tmp_path / "all.db"), [a, b])
    assert any("different keys" in w for w in report["warnings"])
    # sources sharing a key: the new output is given that key (its redactions match theirs)
    merge(str(tmp_path / "one.db"), [a])
    with open(a + ".key", "rb") as x, open(str(tmp_path / "one.db") + ".key", "rb") as y:
        assert x.read() == y.read()


def test_an_unfinished_source_run_is_merged_as_interrupted(built, tmp_path):
    """A sensor still capturing (or killed): what it committed is merged; in the output the run
    is history ('interrupted'), never resumed or rolled back by a later replay there."""
    src = str(tmp_path / "live.db")
    _copy(str(built / "a.db"), src)
    with sqlite3.connect(src) as con:
        con.execute("update runs set status = 'running', owner = 'sensor-2:4242', finished_at = null")
    out = str(tmp_path / "all.db")
    report = merge(out, [src])
    assert report["sources"][0]["status"] == "merged"
    assert any("not finished" in w and "interrupted" in w for w in report["warnings"])
    with sqlite3.connect(out) as con:
        assert con.execute("select status, owner, journal_tables from runs").fetchall() == \
            [("interrupted", None, None)]
    assert merge(out, [src])["sources"][0]["status"] == "already merged"
