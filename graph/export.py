"""The dependency map for other tools: GraphML (Gephi, yEd, Cytoscape) and node-link JSON
(d3, ``networkx.node_link_graph``).

Both carry every node and edge attribute of :mod:`graph.build`.  GraphML only knows scalars,
so dict and list attributes (``methods``, ``statuses``, ``auth``, ``findings``,
``addresses``, ...) are written as JSON strings there and attributes that are None are left
out; node-link JSON keeps them as they are.
"""

from __future__ import annotations

import json
import os
from typing import Any

import networkx as nx

EXPORT_FORMATS = {".graphml": "graphml", ".json": "json"}


def _scalar(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple, set)):
        return json.dumps(sorted(v) if isinstance(v, set) else v, sort_keys=True)
    return v


def graphml_ready(G: nx.DiGraph) -> nx.DiGraph:
    """A copy of ``G`` whose attributes are all GraphML scalars (str, int, float, bool)."""
    H = nx.DiGraph()
    H.graph.update({k: _scalar(v) for k, v in G.graph.items() if v is not None})
    for n, d in G.nodes(data=True):
        H.add_node(n, **{k: _scalar(v) for k, v in d.items() if v is not None})
    for u, v, d in G.edges(data=True):
        H.add_edge(u, v, **{k: _scalar(x) for k, x in d.items() if x is not None})
    return H


def node_link(G: nx.DiGraph) -> dict[str, Any]:
    """``{"directed": true, "graph": {...}, "nodes": [{"id": ...}, ...],
    "edges": [{"source": ..., "target": ..., ...}, ...]}``."""
    data = nx.node_link_data(G, edges="edges")
    return json.loads(json.dumps(data, default=lambda o: sorted(o) if isinstance(o, set) else str(o)))


def export(G: nx.DiGraph, path: str, fmt: str | None = None) -> str:
    """Write ``G`` as GraphML or node-link JSON (from the extension unless ``fmt``)."""
    fmt = fmt or EXPORT_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt not in ("graphml", "json"):
        raise ValueError(f"{path}: unknown export format (use .graphml or .json)")
    tmp = path + ".tmp"
    if fmt == "graphml":
        nx.write_graphml(graphml_ready(G), tmp)
    else:
        with open(tmp, "w") as f:
            json.dump(node_link(G), f, indent=1, sort_keys=True)
            f.write("\n")
    os.replace(tmp, path)
    return fmt
