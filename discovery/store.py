"""The SQLite store: a documented, versioned schema written with sqlite-utils.

Tables (schema version 1; README "Database schema" documents every column):
- ``runs``: one row per replay/capture run with its counters and anomalies by kind.
- ``transactions``: one row per HTTP transaction (bodies are not stored here).  The URI and
  the headers go through the store's :class:`~discovery.redact.Redactor` first: credentials
  in headers, and query values, path segments and header values that are personal data or
  secrets, are replaced by redacted forms (``discovery/redact.py``).

Redaction is on by default.  ``Store(path, keep_raw_samples=True)`` (or, when the argument
is None, the environment variable ``APISENSOR_KEEP_RAW_SAMPLES=1``) keeps URIs, samples and
examples as seen (credential headers stay redacted), with a warning on stderr; the runs that
did so are listed in ``meta`` under ``raw_samples_runs``.  ``store.redactor`` is what every
sink uses; ``store.hasher`` its keyed hash (the key is kept outside the database, see
:func:`discovery.redact.hash_key`).

Writes are batched in transactions; the database is in WAL mode so readers (``sqlite3``,
Datasette, ``apisensor`` queries) can read while the sensor writes, and a batch that was
committed survives a kill.  Files are created with mode 0600.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import orjson
import sqlite_utils

from .redact import Redactor, env_keep_raw, hash_key, warn_keep_raw

SCHEMA_VERSION = 1

# runs columns for crash safety: who writes (host:pid), what (capture fingerprints), the tables
# that existed when it started (and those of them that were empty), and how many transactions
# its last commit covered.
RUN_COLUMNS = {"owner": "text", "fingerprints": "text", "journal_tables": "text", "journal_empty": "text",
               "committed_transactions": "integer", "committed_at": "text"}


def _create_private(path: str) -> None:
    if path != ":memory:" and not os.path.exists(path):
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


class Store:
    def __init__(self, path: str, keep_raw_samples: bool | None = None):
        self.path = path
        if keep_raw_samples is None:
            keep_raw_samples = env_keep_raw()
        self.keep_raw_samples = bool(keep_raw_samples)
        if self.keep_raw_samples:
            warn_keep_raw(path)
        self._hasher = None
        self._redactor: Redactor | None = None
        _create_private(path)
        self.db = sqlite_utils.Database(path)
        if path != ":memory:":
            self.db.enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        db = self.db
        if "meta" not in db.table_names():
            db["meta"].create({"key": str, "value": str}, pk="key")
            db["meta"].insert({"key": "schema_version", "value": str(SCHEMA_VERSION)})
        if "runs" not in db.table_names():
            db["runs"].create(
                {
                    "id": int, "started_at": str, "finished_at": str, "status": str, "sources": str,
                    "packets": int, "bytes": int, "flows": int, "http_flows": int, "tls_flows": int,
                    "other_flows": int, "transactions": int, "truncated_files": int,
                    "anomalies": str, "warnings": str,
                },
                pk="id",
            )
        have = {c.name for c in db["runs"].columns}
        for col in RUN_COLUMNS:  # added in later versions: crash safety (discovery/journal.py)
            if col not in have:
                db.execute(f"alter table runs add column {col} {RUN_COLUMNS[col]}")
        if "transactions" not in db.table_names():
            db["transactions"].create(
                {
                    "id": int, "run_id": int, "ts": float, "ts_response": float, "ts_end": float,
                    "client": str, "server": str, "protocol": str, "method": str, "host": str,
                    "uri": str, "status_code": int, "reason": str,
                    "request_body_len": int, "response_body_len": int,
                    "request_body_len_wire": int, "response_body_len_wire": int,
                    "request_content_type": str, "response_content_type": str, "user_agent": str,
                    "latency": float, "stream_id": int, "flags": str,
                    "request_headers": str, "response_headers": str,
                },
                pk="id",
                foreign_keys=[("run_id", "runs", "id")],
            )
            db["transactions"].create_index(["run_id"])
            db["transactions"].create_index(["host", "uri"])
            db["transactions"].create_index(["ts"])

    # ---- redaction ---------------------------------------------------------------------------
    @property
    def hasher(self):
        """Keyed hash of this database (findings' value hashes and redacted values share it)."""
        if self._hasher is None:
            from .detectors.redaction import Hasher

            self._hasher = Hasher(hash_key(self.path))
        return self._hasher

    @property
    def redactor(self) -> Redactor:
        if self._redactor is None:
            self._redactor = Redactor(self.hasher, keep_raw=self.keep_raw_samples)
        return self._redactor

    # ---- runs --------------------------------------------------------------------------------
    def begin_run(self, sources: list[str], fingerprints: list[str] | None = None) -> int:
        from .journal import owner

        with self.db.conn:
            row = self.db["runs"].insert(
                {"started_at": _now(), "status": "running", "sources": json.dumps(sources),
                 "owner": owner(), "committed_transactions": 0,
                 "fingerprints": json.dumps(fingerprints) if fingerprints is not None else None}
            )
            if self.keep_raw_samples:
                got = self.db.execute("SELECT value FROM meta WHERE key = 'raw_samples_runs'").fetchone()
                runs = json.loads(got[0]) if got else []
                runs.append(row.last_pk)
                self.db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('raw_samples_runs', ?)",
                    [json.dumps(runs)],
                )
        return row.last_pk

    def finish_run(self, run_id: int, stats: dict[str, Any], status: str = "complete",
                   warnings: list[str] | None = None) -> None:
        anomalies = stats.get("anomalies", {})
        fields = {k: stats.get(k) for k in (
            "packets", "bytes", "flows", "http_flows", "tls_flows", "other_flows", "transactions",
            "truncated_files")}
        from .journal import disarm

        with self.db.conn:
            self.db["runs"].update(run_id, {
                **fields, "finished_at": _now(), "status": status,
                "anomalies": json.dumps(anomalies, sort_keys=True),
                "warnings": json.dumps(warnings or []),
            })
            disarm(self.db, run_id)  # the run is complete: its undo journal goes in the same commit

    def checkpoint(self, run_id: int, transactions: int) -> None:
        """Record that the sinks' writes for the first ``transactions`` are committed."""
        with self.db.conn:
            self.db.execute("update runs set committed_transactions = ?, committed_at = ? where id = ?",
                            [transactions, _now(), run_id])

    # ---- transactions ------------------------------------------------------------------------
    def add_transactions(self, run_id: int, txs: list) -> None:
        if not txs:
            return
        red = self.redactor
        rows = [_tx_row(run_id, tx, red) for tx in txs]
        with self.db.conn:
            self.db.conn.executemany(_TX_INSERT, rows)

    def close(self) -> None:
        self.db.close()


class TransactionLog:
    """Sink that writes every transaction to the ``transactions`` table, in batches."""

    def __init__(self, store: Store, run_id: int, batch: int = 2000):
        self.store = store
        self.run_id = run_id
        self.pending: list = []
        self.batch = batch
        self.count = 0

    def observe(self, tx) -> None:
        self.pending.append(tx)
        if len(self.pending) >= self.batch:
            self.flush()

    def observe_event(self, ev) -> None:
        pass

    def flush(self) -> None:
        self.store.add_transactions(self.run_id, self.pending)
        self.count += len(self.pending)
        self.pending = []

    def finish(self) -> dict[str, Any]:
        self.flush()
        return {}


TX_COLUMNS = (
    "run_id", "ts", "ts_response", "ts_end", "client", "server", "protocol", "method", "host", "uri",
    "status_code", "reason", "request_body_len", "response_body_len", "request_body_len_wire",
    "response_body_len_wire", "request_content_type", "response_content_type", "user_agent", "latency",
    "stream_id", "flags", "request_headers", "response_headers",
)
_TX_INSERT = f"INSERT INTO transactions ({', '.join(TX_COLUMNS)}) VALUES ({', '.join('?' * len(TX_COLUMNS))})"
_IP_TEXT: dict[bytes, str] = {}


def _addr(ip: bytes, port: int) -> str:
    """``ip:port`` as Transaction.client/server print it (the address text cached per IP)."""
    t = _IP_TEXT.get(ip)
    if t is None:
        if len(_IP_TEXT) > 65536:
            _IP_TEXT.clear()
        t = _IP_TEXT[ip] = (socket.inet_ntop(socket.AF_INET, ip) if len(ip) == 4
                            else "[" + socket.inet_ntop(socket.AF_INET6, ip) + "]")
    return f"{t}:{port}"


def _headers_json(headers: list) -> str:
    try:
        return orjson.dumps(headers).decode()
    except TypeError:  # a lone surrogate (orjson insists on valid UTF-8)
        return json.dumps(headers)


def _tx_row(run_id: int, tx, red: Redactor) -> tuple:
    """One ``transactions`` row (``TX_COLUMNS`` order), computed straight from the Transaction
    (one pass over the request headers; no ``to_json``)."""
    host = ua = req_ct = None
    for k, v in tx.request_headers:
        n = len(k)
        if n == 4 or n == 10 or n == 12:  # host, user-agent, content-type: skip the rest unlowered
            lk = k.lower()
            if lk == "host":
                if host is None:
                    host = v
            elif lk == "user-agent":
                if ua is None:
                    ua = v
            elif lk == "content-type" and req_ct is None:
                req_ct = v
    resp_ct = None
    for k, v in tx.response_headers:
        if len(k) == 12 and k.lower() == "content-type":
            resp_ct = v
            break
    ts, tsr = tx.ts, tx.ts_response
    flags = tx.flags
    return (
        run_id, ts, tsr, tx.ts_end,
        _addr(tx.client_ip, tx.client_port), _addr(tx.server_ip, tx.server_port),
        tx.protocol, tx.method, host, red.uri(tx.uri), tx.status_code, tx.reason,
        tx.request_body_len, tx.response_body_len, tx.request_body_len_wire, tx.response_body_len_wire,
        req_ct, resp_ct, ua,
        None if tsr is None or tx.method is None else max(0.0, tsr - ts),
        tx.stream_id,
        ",".join(sorted(flags)) if flags else "",
        _headers_json(red.headers(tx.request_headers)),
        _headers_json(red.headers(tx.response_headers)),
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
