"""Pictures and exports of the dependency map: real graphviz output, parsed back and checked."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import networkx as nx
import pytest
from click.testing import CliRunner
from conftest import DATA
from test_graph import MESH, load, replay

from discovery.store import Store
from graph.build import graph_from_db
from graph.export import export
from graph.render import render, to_dot
from sensor.cli import main

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


@pytest.fixture(scope="module")
def mesh_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("render") / "mesh.db")
    replay(path, MESH)
    return path


@pytest.fixture(scope="module")
def truth() -> dict:
    with open(os.path.join(DATA, "graph", "mesh.json")) as f:
        return json.load(f)


def svg_texts(path: str) -> list[str]:
    root = ET.parse(path).getroot()
    return [t.text or "" for t in root.iter(SVG + "text")]


def svg_edges(path: str) -> dict[str, ET.Element]:
    """SVG edge groups by their tooltip ("source -> target: label")."""
    root = ET.parse(path).getroot()
    out = {}
    for g in root.iter(SVG + "g"):
        if g.get("class") == "edge":
            out[g.find(f".//{SVG}a").get(XLINK + "title").split(": ")[0]] = g
    return out


def test_svg_names_every_node_and_colours_failing_edges(mesh_db, truth, tmp_path):
    G = load(mesh_db)
    out = str(tmp_path / "map.svg")
    assert render(G, out) == "svg"
    texts = svg_texts(out)
    for n in G:
        assert n in texts, n
    assert "24 req · 4% 5xx · 4% 4xx" in texts  # 127.0.0.40 -> edge: counts and error rates
    assert "TLS 9 conn" in texts and "TCP 42 flows" in texts
    edges = svg_edges(out)
    assert len(edges) == len(truth["edges"])
    red = edges["batch.mesh.test -> pricing.mesh.test"].find(f".//{SVG}path").get("stroke")
    grey = edges["reviews.mesh.test -> ratings.mesh.test"].find(f".//{SVG}path").get("stroke")
    assert red == "#d62728" and grey != red  # 1 of 5 answered 500
    dashed = edges["edge.mesh.test -> billing.mesh.test"].find(f".//{SVG}path").get("stroke-dasharray")
    assert dashed  # TLS
    # thicker for more calls
    width = {k: float(g.find(f".//{SVG}path").get("stroke-width", "1")) for k, g in edges.items()}
    assert width["catalog.mesh.test -> cache.mesh.test:6379"] > width["edge.mesh.test -> 127.0.0.37:9000"]


def test_png_pdf_dot_are_valid(mesh_db, tmp_path):
    G = load(mesh_db)
    png, pdf, dot = (str(tmp_path / f"map.{e}") for e in ("png", "pdf", "dot"))
    assert (render(G, png), render(G, pdf), render(G, dot)) == ("png", "pdf", "dot")
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert w > 800 and h > 300
    assert w > h  # left to right
    with open(pdf, "rb") as f:
        data = f.read()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]
    with open(dot) as f:
        src = f.read()
    assert src.startswith("digraph") and "rankdir=LR" in src and "edge.mesh.test" in src
    with pytest.raises(ValueError):
        render(G, str(tmp_path / "map.bmp"))


def test_left_to_right_from_clients_to_backends(mesh_db, tmp_path):
    """The callers are drawn left of what they call (graphviz's own layout, read back)."""
    G = load(mesh_db)
    laid = json.loads(to_dot(G).pipe(format="json"))
    x = {o["tooltip"]: float(o["pos"].split(",")[0]) for o in laid["objects"] if o.get("tooltip") in G}
    assert set(x) == set(G)
    for u, v in G.edges:
        assert x[u] < x[v], (u, v)


def test_exports_round_trip(mesh_db, tmp_path):
    G = load(mesh_db)
    gml, js = str(tmp_path / "map.graphml"), str(tmp_path / "map.json")
    assert export(G, gml) == "graphml" and export(G, js) == "json"
    H = nx.read_graphml(gml)
    assert set(H.edges) == set(G.edges)
    assert H.edges["edge.mesh.test", "catalog.mesh.test"]["calls"] == 38
    assert json.loads(H.edges["edge.mesh.test", "catalog.mesh.test"]["statuses"]) == {"200": 36, "404": 2}
    assert H.nodes["edge.mesh.test"]["kind"] == "service"
    with open(js) as f:
        data = json.load(f)
    J = nx.node_link_graph(data, edges="edges")
    assert J.is_directed() and set(J.edges) == set(G.edges)
    assert J.edges["127.0.0.40", "edge.mesh.test"]["methods"] == {"GET": 19, "POST": 5}
    with pytest.raises(ValueError):
        export(G, str(tmp_path / "map.xml"))


def test_cli_graph_outputs(mesh_db, truth, tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "focus.svg")
    r = runner.invoke(main, ["graph", "--db", mesh_db, "-o", out, "--service", "reviews", "--depth", "1"])
    assert r.exit_code == 0, r.output
    texts = svg_texts(out)
    assert {"reviews.mesh.test", "ratings.mesh.test", "edge.mesh.test"} <= set(texts)
    assert "catalog.mesh.test" not in texts
    r = runner.invoke(main, ["graph", "--db", mesh_db])
    assert r.exit_code == 0
    assert re.search(r"edge\.mesh\.test\s+catalog\.mesh\.test\s+http\s+38\s+2\s+0", r.output)
    r = runner.invoke(main, ["graph", "--db", mesh_db, "--min-calls", "30", "-o", str(tmp_path / "m.json")])
    assert r.exit_code == 0 and "3 edges" in r.output
    r = runner.invoke(main, ["graph", "--db", mesh_db, "-o", str(tmp_path / "m.out"), "--format", "graphml"])
    assert r.exit_code == 0
    assert nx.read_graphml(str(tmp_path / "m.out")).number_of_edges() == len(truth["edges"])
    r = runner.invoke(main, ["graph", "--db", mesh_db, "--service", "nosuch"])
    assert r.exit_code == 2 and "no single node" in r.output
    r = runner.invoke(main, ["graph", "--db", str(tmp_path / "missing.db")])
    assert r.exit_code == 2 and not os.path.exists(tmp_path / "missing.db")


def test_cli_replay_graph_shortcut(truth, tmp_path):
    db, png = str(tmp_path / "r.db"), str(tmp_path / "r.png")
    r = CliRunner().invoke(main, ["replay", MESH, "--db", db, "--graph", png, "--no-progress"])
    assert r.exit_code == 0, r.output
    nodes = {n for e in truth["edges"] for n in (e["source"], e["target"])}
    assert f"{len(nodes)} nodes, {len(truth['edges'])} edges -> {png}" in r.output
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> str:
    from graph.synthetic import populate

    path = str(tmp_path_factory.mktemp("big") / "big.db")
    store = Store(path)
    populate(store, store.begin_run(["synthetic"]), services=150, seed=7)
    store.close()
    return path


def test_synthetic_estate_is_deterministic(big_db, tmp_path):
    from graph.synthetic import populate

    store = Store(str(tmp_path / "again.db"))
    populate(store, store.begin_run(["synthetic"]), services=150, seed=7)
    G1, G2 = graph_from_db(store.db), load(big_db)
    store.close()
    assert sorted(G1.edges(data="calls")) == sorted(G2.edges(data="calls"))
    assert sum(1 for _, k in G2.nodes(data="kind") if k == "service") == 150


def test_150_services_render_clustered_without_losing_anyone(big_db, tmp_path):
    G = load(big_db)
    out = str(tmp_path / "big.svg")
    render(G, out)
    root = ET.parse(out).getroot()
    clusters = [g for g in root.iter(SVG + "g") if g.get("class") == "cluster"]
    assert len(clusters) >= 10  # one per domain
    tips = {a.get(XLINK + "title") for a in root.iter(SVG + "a")}
    for n in G:
        assert n in tips, n  # every node is drawn (short label inside its domain; full name as tooltip)
