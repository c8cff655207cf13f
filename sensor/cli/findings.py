"""``apisensor findings``: list what the detectors found in an inventory database."""

from __future__ import annotations

import json
import os
import sys

import click

LEVELS = ["info", "low", "medium", "high", "critical"]
EXIT_FINDINGS = 1  # --fail-on matched


@click.command()
@click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="SQLite file written by `apisensor replay`.",
)
@click.option(
    "--severity",
    type=click.Choice(LEVELS),
    default="info",
    show_default=True,
    help="Show findings at or above this severity.",
)
@click.option(
    "--detector", default=None, metavar="PREFIX", help="Only detectors starting with PREFIX (e.g. pii.)."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finding, one per line.")
@click.option(
    "--fail-on",
    type=click.Choice(LEVELS),
    default=None,
    help="Exit with status 1 if any finding is at or above this severity (CI gate).",
)
def findings(db_path: str, severity: str, detector: str | None, as_json: bool, fail_on: str | None) -> None:
    """List the deduplicated findings stored in --db, most severe first.

    \b
    Examples:
      apisensor findings --db inv.db
      apisensor findings --db inv.db --severity high --json
      apisensor findings --db inv.db --fail-on high   # exit 1 when anything high or critical
      apisensor findings --db inv.db --detector behaviour.   # attack patterns of actors (docs/actors.md)
    """
    import sqlite_utils

    from discovery.findings import query

    if not os.path.exists(db_path):
        click.echo(f"apisensor: error: {db_path}: no such file", err=True)
        sys.exit(2)
    try:
        db = sqlite_utils.Database(db_path)
        rows = query(db, severity, detector)
        gate = query(db, fail_on, detector) if fail_on else []
    except Exception as e:  # not a database, or not ours
        click.echo(f"apisensor: error: {db_path}: cannot read findings ({e})", err=True)
        sys.exit(2)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r, ensure_ascii=False))
    elif not rows:
        click.echo("no findings" + (f" at or above {severity}" if severity != "info" else ""))
    else:
        click.echo(f"{'severity':<9} {'detector':<34} {'count':>5}  {'endpoint':<48} location / evidence")
        for r in rows:
            if r["path"] == "*":
                endpoint = f"{r['service']} (service-wide)"
            else:
                endpoint = f"{r['method'] or '-'} {r['service']}{r.get('endpoint') or r['path']}"
            click.echo(
                f"{r['severity']:<9} {r['detector']:<34} {r['count']:>5}  {endpoint[:48]:<48} "
                f"{r['location']}  [{r['kind']}] {r['evidence']}"
            )
        by = {}
        for r in rows:
            by[r["severity"]] = by.get(r["severity"], 0) + 1
        click.echo(f"{len(rows)} findings: " + ", ".join(f"{by[s]} {s}" for s in reversed(LEVELS) if s in by))
    if fail_on and gate:
        click.echo(f"apisensor: {len(gate)} findings at or above {fail_on}", err=True)
        sys.exit(EXIT_FINDINGS)
