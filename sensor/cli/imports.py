"""``apisensor import``: build the inventory from HAR files, Zeek http.log or Suricata eve.json.

Recorded exactly like ``replay`` (discovery.recorder): the same sinks, commits every
--flush-every transactions, the replay guard (the same file is not counted twice) and the
rollback of a killed run; only the source of transactions differs (sensor/imports/)."""

from __future__ import annotations

import json
import os

import click

from . import FLUSH_EVERY, _fail, start_recording


@click.command("import")
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False),
              help="SQLite file to create or add to.")
@click.option("--format", "fmt", type=click.Choice(["auto", "har", "zeek", "suricata"]), default="auto",
              show_default=True, help="Input format; auto looks at each file's first bytes.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--force", is_flag=True, help="Count files again even if already imported into --db.")
@click.option("--client", "client", default=None, metavar="IP",
              help="Client address for HAR entries (a HAR records none; default 0.0.0.0).")
@click.option("--body-cap", type=click.IntRange(0), default=None, metavar="BYTES",
              help="Body bytes kept per message (default 262144); lengths are always counted.")
@click.option("--keep-raw-samples", "keep_raw", is_flag=True,
              help="Store samples and URIs UNREDACTED (the database then holds sensitive values).")
@click.option("--flush-every", type=click.IntRange(1), default=FLUSH_EVERY, show_default=True, metavar="N",
              help="Transactions between two commits to --db (a commit survives a kill).")
@click.option("-v", "--verbose", is_flag=True, help="Report each commit on stderr.")
def import_logs(files: tuple[str, ...], db_path: str, fmt: str, as_json: bool, force: bool,
                client: str | None, body_cap: int | None, keep_raw: bool, flush_every: int,
                verbose: bool) -> None:
    """Import FILES (HAR, Zeek http.log, Suricata eve.json; optionally .gz) into --db.

    Gives the same inventory, findings and map as replaying the traffic, minus what the
    format does not carry: Zeek logs no bodies and few headers, Suricata logs bodies only in
    alerts, a HAR has no client address.  The settings that make Zeek and Suricata log what
    apisensor needs are in docs/imports.md.

    \b
    apisensor import session.har --db inv.db
    apisensor import /nsm/zeek/2026-11-29/http.*.log.gz --db inv.db
    apisensor import /var/log/suricata/eve.json --db inv.db --json
    """
    from ..imports import ImportFormatError, detect, ip_bytes, probe, reader
    from ..limits import Limits

    if not files:
        _fail("no file given (try: apisensor import session.har --db inv.db)")
    client_ip = None
    if client is not None:
        client_ip = ip_bytes(client)
        if client_ip == b"\0\0\0\0" and client.strip() != "0.0.0.0":
            _fail(f"--client: not an IP address: {client}")
    cap = Limits().body_cap if body_cap is None else body_cap
    plan: list[tuple[str, str]] = []
    for path in files:
        if not os.path.exists(path):
            _fail(f"{path}: no such file")
        if os.path.isdir(path):
            _fail(f"{path}: is a directory (give the log files, e.g. {os.path.join(path, 'http.*.log')})")
        try:
            f = detect(path) if fmt == "auto" else fmt
            probe(path, f)
        except ImportFormatError as e:
            _fail(str(e))
        plan.append((path, f))

    store, run_id, rec = start_recording(db_path, [p for p, _ in plan], keep_raw, force, verbose, flush_every)
    warnings: list[str] = []
    per_format: dict[str, int] = {}
    skipped = 0
    for path, f in plan:
        r = reader(path, f, body_cap=cap, client_ip=client_ip)
        try:
            for tx in r:
                rec.observe(tx)
        except ImportFormatError as e:  # cut or garbled after the part probe() read: keep what was read
            r.skipped[str(e)] += 1
        per_format[f] = per_format.get(f, 0) + r.records
        skipped += sum(r.skipped.values())
        warnings.extend(r.warnings())
    results = rec.finish()
    for w in warnings:
        click.echo(f"apisensor: warning: {w}", err=True)
    summary = {"transactions": rec.count, "files": len(plan), "truncated_files": 0,
               "anomalies": {"import.skipped_records": skipped} if skipped else {}}
    store.finish_run(run_id, summary, warnings=warnings)
    store.close()
    out = {"run_id": run_id, "db": db_path, "files": len(plan), "formats": per_format,
           "transactions": rec.count, "skipped_records": skipped, **results}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        formats = ", ".join(f"{n} from {k}" for k, n in per_format.items())
        click.echo(f"run {run_id}: {rec.count} transactions ({formats}) from {len(plan)} file"
                   f"{'s' if len(plan) != 1 else ''} -> {db_path}")
        if skipped:
            click.echo(f"skipped records: {skipped}")
        for key, value in results.items():
            click.echo(f"{key}: {value}")
