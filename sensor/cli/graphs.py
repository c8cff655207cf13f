"""``apisensor graph``: the dependency map of a store, as an image, an export or a table."""

from __future__ import annotations

import os
import sys

import click

OUTPUT_FORMATS = ("png", "svg", "pdf", "dot", "graphml", "json")


def _fail(msg: str) -> None:
    click.echo(f"apisensor: error: {msg}", err=True)
    sys.exit(2)


def load(db_path: str, service: str | None = None, depth: int = 1, min_calls: int = 1):
    """The map stored in ``db_path``, filtered (``--min-calls`` first, then ``--service``)."""
    import sqlite3

    import sqlite_utils

    from graph.build import find_node, graph_from_db, neighbourhood
    from graph.build import min_calls as drop_small

    if not os.path.exists(db_path):
        _fail(f"{db_path}: no such file (make one with: apisensor replay CAPTURE.pcap --db {db_path})")
    try:
        db = sqlite_utils.Database(db_path)
        if "graph_edges" not in db.table_names():
            _fail(f"{db_path}: no dependency map in this database (replay a capture into it first: "
                  f"apisensor replay CAPTURE.pcap --db {db_path})")
        G = graph_from_db(db)
    except sqlite3.DatabaseError as e:
        _fail(f"{db_path}: cannot read as a SQLite database ({e})")
    center = None
    if service:
        try:
            center = find_node(G, service)
        except KeyError as e:
            _fail(str(e.args[0]))
    H = drop_small(G, min_calls)
    if center is not None:
        if center not in H:  # all its edges are below --min-calls: show it alone
            H.add_node(center, **G.nodes[center])
        H = neighbourhood(H, center, depth)
    return H


def write(G, output: str, fmt: str | None = None, title: str | None = None, cluster: str = "auto") -> str:
    """Write ``G`` to ``output``: an image (png/svg/pdf/dot) or an export (graphml/json)."""
    from graph.export import EXPORT_FORMATS, export
    from graph.render import EXTENSIONS, render

    ext = os.path.splitext(output)[1].lower()
    fmt = fmt or EXPORT_FORMATS.get(ext) or EXTENSIONS.get(ext)
    if fmt is None:
        _fail(f"{output}: cannot tell the format from the extension "
              f"(use --format {'/'.join(OUTPUT_FORMATS)})")
    if fmt in ("graphml", "json"):
        return export(G, output, fmt)
    return render(G, output, fmt, title=title, cluster=cluster)


def write_map(db_path: str, output: str, fmt: str | None = None, title: str | None = None) -> str:
    """Shortcut for ``replay --graph``: the whole map of ``db_path`` to ``output``."""
    G = load(db_path)
    write(G, output, fmt, title=title or os.path.basename(db_path))
    return f"{G.number_of_nodes()} nodes, {G.number_of_edges()} edges -> {output}"


def _table(G) -> None:
    from graph.render import _ms

    click.echo(f"{'source':<28} {'target':<30} {'transport':<9} {'calls':>7} {'4xx':>5} {'5xx':>5} "
               f"{'p50':>9} {'p95':>9}")
    for u, v, d in sorted(G.edges(data=True), key=lambda e: (-e[2]["calls"], e[0], e[1])):
        p50, p95 = _ms(d["latency_p50"]) or "-", _ms(d["latency_p95"]) or "-"
        click.echo(f"{u:<28} {v:<30} {d['transport']:<9} {d['calls']:>7} {d['errors_4xx']:>5} "
                   f"{d['errors_5xx']:>5} {p50:>9} {p95:>9}")


@click.command()
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False),
              help="SQLite file written by apisensor replay.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="map.png, .svg, .pdf, .dot (images), .graphml or .json (exports); "
                   "without it, print the edges as a table.")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None,
              help="Output format when the extension does not say.")
@click.option("--service", default=None, metavar="NAME",
              help="Only NAME's neighbourhood (a name, a unique part of one, or an address).")
@click.option("--depth", type=click.IntRange(min=0), default=1, show_default=True,
              help="Hops around --service, following calls either way.")
@click.option("--min-calls", type=click.IntRange(min=1), default=1, show_default=True,
              help="Drop edges with fewer calls (requests, TLS connections, TCP flows).")
@click.option("--cluster", type=click.Choice(("auto", "group", "none")), default="auto", show_default=True,
              help="Group nodes by domain / subnet: auto = when the map is large.")
@click.option("--title", default=None, help="Caption under the picture.")
def graph(db_path: str, output: str | None, fmt: str | None, service: str | None, depth: int,
          min_calls: int, cluster: str, title: str | None) -> None:
    """Draw the dependency map (who calls whom) stored in --db.

    \b
      apisensor graph --db inv.db -o map.png                  # the whole map
      apisensor graph --db inv.db -o map.svg --service orders --depth 2
      apisensor graph --db inv.db -o map.graphml --min-calls 10
      apisensor graph --db inv.db                             # the edges as a table

    Nodes are services (named by Host header, TLS SNI, DNS answers, else ip:port) and clients
    (IP, or the service they also are); edges carry calls, errors and latency (see docs/graph.md).
    """
    G = load(db_path, service, depth, min_calls)
    if output is None:
        _table(G)
        return
    try:
        written = write(G, output, fmt, title=title, cluster=cluster)
    except Exception as e:  # graphviz missing or failing: one line, no traceback
        if type(e).__name__ in ("ExecutableNotFound", "CalledProcessError"):
            _fail(f"graphviz failed ({e}); is the 'dot' program installed? (apt-get install graphviz)")
        raise
    click.echo(f"{G.number_of_nodes()} nodes, {G.number_of_edges()} edges -> {output} ({written})")
