"""Commands that take an inventory elsewhere: ``report`` (one HTML file), ``serve`` (Datasette),
``merge`` (several sensors into one database) and ``export`` (CSV, JSON, SARIF)."""

from __future__ import annotations

import json
import os
import sys

import click

from . import _fail

_db_opt = click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="SQLite file written by apisensor replay (or capture, or merge).",
)


def _open_ro(path: str):
    """The database at ``path``, read-only (a sqlite3 connection); one-line errors."""
    import sqlite3

    if not os.path.isfile(path):
        _fail(f"{path}: no such database (create it with: apisensor replay FILE.pcap --db {path})")
    try:
        from urllib.parse import quote

        con = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as e:
        _fail(f"{path}: cannot read as a SQLite database ({e})")
    if not names & {"runs", "endpoints", "findings"}:
        _fail(f"{path}: not an apisensor database (no runs, endpoints or findings table)")
    return con


def _write(text: str, output: str | None) -> None:
    if output in (None, "-"):
        click.echo(text, nl=False)
        return
    tmp = output + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
    except OSError as e:
        _fail(f"{output}: cannot write ({e.strerror})")


# ---- report --------------------------------------------------------------------------------------


def map_svg(db_path: str) -> tuple[str | None, str]:
    """The dependency map of ``db_path`` as graphviz SVG (None if there is none), and a caption."""
    try:
        import sqlite_utils

        from graph.build import graph_from_db
        from graph.render import time_span, to_dot

        db = sqlite_utils.Database(_open_ro(db_path))
        if "graph_edges" not in db.table_names():
            return None, ""
        G = graph_from_db(db)
        if not G.number_of_nodes():
            return None, ""
        svg = to_dot(G).pipe(format="svg").decode("utf-8")
        span = time_span(G)
        return svg, f"{G.number_of_nodes()} nodes, {G.number_of_edges()} edges" + (
            f" · {span}" if span else ""
        )
    except Exception as e:  # graphviz missing ('dot' not installed) or failing: a report without a map
        click.echo(f"apisensor: warning: no map in the report ({type(e).__name__}: {e})", err=True)
        return None, ""


@click.command()
@_db_opt
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="report.html to write.")
@click.option("--title", default=None, help="Name in the title (default: the database file name).")
@click.option("--no-map", is_flag=True, help="Leave the dependency map out (it needs graphviz).")
def report(db_path: str, output: str, title: str | None, no_map: bool) -> None:
    """Write one self-contained HTML report of --db: summary, dependency map, services,
    endpoints, findings (redacted evidence), changes and runs.

    \b
      apisensor report --db inv.db -o report.html

    Tables sort on a click and filter as you type; the file loads nothing from the network.
    """
    from discovery.report import build

    con = _open_ro(db_path)
    svg, caption = (None, "") if no_map else map_svg(db_path)
    try:
        text = build(con, title or os.path.basename(db_path), svg, caption)
    finally:
        con.close()
    _write(text, output)
    click.echo(f"report of {db_path} -> {output} ({len(text) // 1024} KB)", err=True)


# ---- serve ---------------------------------------------------------------------------------------


@click.command()
@_db_opt
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 exposes the inventory to the network).",
)
@click.option(
    "-p",
    "--port",
    type=click.IntRange(1, 65535),
    default=8001,
    show_default=True,
    help="Port.",
)
@click.option(
    "--metadata",
    "metadata_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Only write the Datasette metadata (descriptions, canned queries) to this file and exit.",
)
def serve(db_path: str, host: str, port: int, metadata_out: str | None) -> None:
    """Browse --db in Datasette, read-only, with table descriptions and canned queries.

    \b
      apisensor serve --db inv.db        # then open http://127.0.0.1:8001/
    Canned queries: top_risky_endpoints, unauthenticated_pii, new_endpoints_this_week
    (also as JSON: http://127.0.0.1:8001/inv/top_risky_endpoints.json). Ctrl-C stops it.
    Needs Datasette: pip install 'apisensor[serve]'.
    """
    import importlib.util
    import signal
    import subprocess
    import tempfile

    from discovery.datasette_meta import database_name, metadata

    con = _open_ro(db_path)
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    raw = (
        con.execute("SELECT value FROM meta WHERE key = 'raw_samples_runs'").fetchone()
        if "meta" in tables
        else None
    )
    con.close()
    meta = metadata(db_path, tables)
    if metadata_out:
        _write(json.dumps(meta, indent=2) + "\n", metadata_out)
        click.echo(f"datasette metadata -> {metadata_out} (datasette {db_path} -m {metadata_out})", err=True)
        return
    if importlib.util.find_spec("datasette") is None:
        _fail("Datasette is not installed (pip install 'apisensor[serve]', or: pip install datasette)")
    if raw and json.loads(raw[0] or "[]"):
        click.echo(
            f"apisensor: warning: {db_path} holds UNREDACTED samples (runs {json.loads(raw[0])}, "
            "--keep-raw-samples); whoever opens the page sees them",
            err=True,
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"apisensor: warning: listening on {host}: the inventory is visible from the network", err=True
        )
    with tempfile.TemporaryDirectory(prefix="apisensor-serve-") as tmp:
        meta_path = os.path.join(tmp, "metadata.json")
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        cmd = [
            sys.executable,
            "-m",
            "datasette",
            "serve",
            os.path.abspath(db_path),
            "--metadata",
            meta_path,
            "--host",
            host,
            "--port",
            str(port),
            "--setting",
            "allow_download",
            "off",
        ]
        shown = f"[{host}]" if ":" in host else host
        click.echo(
            f"serving {db_path} read-only at http://{shown}:{port}/{database_name(db_path)} (Ctrl-C to stop)",
            err=True,
        )
        proc = subprocess.Popen(cmd)

        def forward(signum, _frame) -> None:
            proc.send_signal(signum)

        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            rc = proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
    if rc not in (0, -signal.SIGINT, -signal.SIGTERM):
        sys.exit(rc)


# ---- merge ---------------------------------------------------------------------------------------


@click.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Database to merge into (created if missing).",
)
@click.option("--replace", is_flag=True, help="Start the output afresh (rebuild it from SOURCES).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def merge(sources: tuple[str, ...], output: str, replace: bool, as_json: bool) -> None:
    """Merge the databases of several sensors into one.

    \b
      apisensor merge span1.db span2.db -o all.db
      apisensor merge span1.db span2.db span3.db -o all.db --replace   # rebuild

    Services, endpoints and findings are matched by what they are (name, method and path
    template, detector and location), never by id: counts add, first/last seen take the
    earliest/latest, schemas and parameters merge, findings are deduplicated, the map is
    joined, and templates are relearned from all paths. Merging a database that is already in
    the output changes nothing. Details: docs/ecosystem.md.
    """
    from discovery.merge import MergeError
    from discovery.merge import merge as do_merge

    def warn(msg: str) -> None:
        click.echo(f"apisensor: warning: {msg}", err=True)

    try:
        summary = do_merge(output, list(sources), replace=replace, warn=warn)
    except MergeError as e:
        _fail(str(e))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for s in summary["sources"]:
        rows = s.get("rows", {})
        extra = (
            f": runs {', '.join(map(str, s['runs']))}, {rows.get('transactions', 0)} transactions, "
            f"{rows.get('observed_paths', 0)} paths, {rows.get('findings', 0)} findings"
            if s.get("runs")
            else ""
        )
        click.echo(f"{s['source']}: {s['status']}{extra}")
    click.echo(
        f"{output}: {summary['services']} services, {summary['endpoints']} endpoints, "
        f"{summary['findings']} findings, {summary['runs']} runs"
    )


# ---- export --------------------------------------------------------------------------------------

_FORMATS = {".csv": "csv", ".json": "json", ".sarif": "sarif"}


@click.command()
@click.argument("what", type=click.Choice(["endpoints", "findings"]))
@_db_opt
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="File to write (default: standard output); the extension picks the format.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "json", "sarif"]),
    default=None,
    help="csv, json or sarif (findings only); default: from -o's extension, else json.",
)
@click.option(
    "--severity",
    type=click.Choice(["info", "low", "medium", "high", "critical"]),
    default="info",
    show_default=True,
    help="Findings: only at or above this severity.",
)
@click.option("--service", default=None, help="Endpoints: only this service.")
def export(
    what: str, db_path: str, output: str | None, fmt: str | None, severity: str, service: str | None
) -> None:
    """Export endpoints or findings as CSV or JSON, or findings as SARIF 2.1.0.

    \b
      apisensor export endpoints --db inv.db -o endpoints.csv
      apisensor export findings --db inv.db -o findings.sarif       # code-scanning dashboards
      apisensor export findings --db inv.db --format json --severity high
    """
    from discovery import export as ex

    if fmt is None:
        name = (output or "").lower()
        fmt = (
            "sarif"
            if name.endswith((".sarif", ".sarif.json"))
            else _FORMATS.get(os.path.splitext(name)[1], "json")
        )
    if fmt == "sarif" and what != "findings":
        _fail("SARIF is for findings (apisensor export findings --db ... -o findings.sarif)")
    con = _open_ro(db_path)
    try:
        if what == "endpoints":
            if service and con.execute("SELECT 1 FROM services WHERE name = ?", [service]).fetchone() is None:
                _fail(f"no service {service!r} in {db_path} (see: apisensor services --db {db_path})")
            rows = ex.endpoint_rows(con, service)
            cols = ex.ENDPOINT_COLUMNS
        else:
            rows = ex.finding_rows(con, severity)
            cols = ex.FINDING_COLUMNS
    finally:
        con.close()
    text = (
        ex.to_csv(rows, cols) if fmt == "csv" else ex.to_sarif(rows) if fmt == "sarif" else ex.to_json(rows)
    )
    _write(text, output)
    if output not in (None, "-"):
        click.echo(f"{len(rows)} {what} -> {output} ({fmt})", err=True)
