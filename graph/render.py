"""Draw the dependency map with graphviz (``dot``): PNG, SVG, PDF or DOT source.

Layout choices, all for reading the picture rather than admiring it:

* left to right, callers before callees (clients on the left, backends on the right);
* edge thickness grows with the log of the calls; the label says how many and how they went
  ("47 req · 6% 5xx · p95 26 ms"); red when 5xx (or no response) >= 5 % of requests, orange
  when 4xx >= 25 %; TLS edges are dashed (their requests are not visible: they count
  connections), other TCP flows dotted;
* services are boxes filled by the highest severity of their findings (legend at the bottom),
  clients are ellipses;
* past ``CLUSTER_FROM`` nodes, nodes are clustered by domain (or /24 subnet for addresses) and
  past ``LABEL_ALL_UP_TO`` edges only the notable edges keep a label (errors, and the busiest),
  so that 200 services still lay out without overlapping text.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections import Counter

import graphviz
import networkx as nx

FORMATS = ("png", "svg", "pdf", "dot")
EXTENSIONS = {".png": "png", ".svg": "svg", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}

CLUSTER_FROM = 12  # nodes
LABEL_ALL_UP_TO = 40  # edges
BUSIEST_LABELLED = 25  # edges labelled beyond that, besides the ones with errors
RED_5XX = 0.05
ORANGE_4XX = 0.25

SEVERITY_STYLE = {  # fill, border
    "critical": ("#f2a0a0", "#a50000"),
    "high": ("#f9c6c6", "#d62728"),
    "medium": ("#ffe2b8", "#e07b00"),
    "low": ("#fff6c4", "#b59a00"),
    "info": ("#e9f1ff", "#5b7fb0"),
    "unknown": ("#eeeeee", "#777777"),
}
SERVICE_STYLE = ("#ffffff", "#4d4d4d")
CLIENT_STYLE = ("#eaf2ea", "#5a8a5a")
FONT = "Helvetica"


def format_for(path: str, fmt: str | None = None) -> str:
    if fmt:
        return fmt.lower()
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(f"{path}: unknown image extension (use one of {', '.join(EXTENSIONS)})")
    return EXTENSIONS[ext]


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return ""
    ms = seconds * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%" if x >= 0.01 else "<1%"


def edge_color(d: dict) -> str:
    req = d["requests"]
    if req and (d["errors_5xx"] + d["no_response"]) / req >= RED_5XX:
        return "red"
    if req and d["errors_4xx"] / req >= ORANGE_4XX:
        return "orange"
    return "normal"


def edge_label(d: dict, compact: bool = False) -> str:
    parts = []
    if d["requests"]:
        parts.append(f"{d['requests']} req")
        if d["errors_5xx"]:
            parts.append(f"{_pct(d['error_rate_5xx'])} 5xx")
        if d["errors_4xx"]:
            parts.append(f"{_pct(d['error_rate_4xx'])} 4xx")
        if d["no_response"]:
            parts.append(f"{d['no_response']} unanswered")
    if d["tls_connections"]:
        parts.append(f"TLS {d['tls_connections']} conn")
    if d["tcp_flows"]:
        parts.append(f"TCP {d['tcp_flows']} flows")
    line = " · ".join(parts)
    if not compact and d.get("latency_p95") is not None:
        line += f"\np95 {_ms(d['latency_p95'])}"
    return line


def _node_label(name: str, d: dict, compact: bool, shown: str | None = None) -> str:
    facts = []
    if d.get("endpoints"):
        facts.append(f"{d['endpoints']} endpoint{'s' if d['endpoints'] != 1 else ''}")
    findings = d.get("findings") or {}
    if findings:
        total = sum(findings.values())
        worst = d.get("severity")
        text = f"{total} finding{'s' if total != 1 else ''}"
        if worst and len(findings) > 1:
            text += f" ({findings.get(worst, 0)} {worst})"
        elif worst:
            text += f" ({worst})"
        facts.append(text)
    if d["kind"] == "client":
        facts.append(f"{d['calls_out']} calls out")
    elif not facts:
        facts.append(f"{d['calls_in']} calls in")
    if d.get("transports_in") == ["tls"]:
        facts.append("TLS only")
    lines = [" · ".join(facts)]
    risk = d.get("risk")
    if risk and risk["score"] >= 25:  # medium and up: the riskiest endpoint, by name
        ep = risk["endpoint"] if len(risk["endpoint"]) <= 36 else risk["endpoint"][:35] + "…"
        lines.append(f"risk {risk['score']} ({risk['level']}): {ep}")
    schemes = [s for s in d.get("auth_schemes", []) if s != "none"]
    if not compact and d["kind"] == "service" and (schemes or d.get("auth")):
        auth = ", ".join(schemes) if schemes else "none"
        if schemes and d.get("auth", {}).get("none"):
            auth += " + none"
        lines.append(f"auth: {auth}")
    small = "".join(f'<BR/><FONT POINT-SIZE="9" COLOR="#444444">{html.escape(x)}</FONT>' for x in lines)
    if d.get("flagged"):  # a client whose actors were flagged by the behaviour analysis
        names = d["flagged"]
        rows = [", ".join(names[i : i + 3]) for i in range(0, len(names), 3)]  # 3 a line: a narrow node
        text = "<BR/>".join(html.escape(r) for r in rows)
        small += f'<BR/><FONT POINT-SIZE="9" COLOR="#b00000"><B>flagged: {text}</B></FONT>'
    return f"<<B>{html.escape(shown or name)}</B>{small}>"


def short_name(name: str, group: str) -> str:
    """``orders-api.orders.internal`` in cluster ``orders.internal`` -> ``orders-api``."""
    host, sep, port = name.partition(":") if not name.startswith("[") else (name, "", "")
    if host.endswith("." + group):
        return host[: -len(group) - 1] + sep + port
    return name


def _penwidth(calls: int, most: int, large: bool) -> str:
    lo, span = (0.8, 2.7) if large else (1.0, 5.0)
    if most <= 1:
        return f"{lo + 0.2:.2f}"
    return f"{lo + span * math.log(max(calls, 1)) / math.log(most):.2f}"


def _should_cluster(G: nx.DiGraph, cluster: str) -> bool:
    if cluster == "none":
        return False
    groups = Counter(d["group"] for _, d in G.nodes(data=True) if d["kind"] == "service")
    useful = sum(1 for c in groups.values() if c >= 2) >= 2 or (len(groups) == 1 and cluster != "auto")
    return cluster != "auto" or (G.number_of_nodes() >= CLUSTER_FROM and useful)


def to_dot(G: nx.DiGraph, title: str | None = None, cluster: str = "auto") -> graphviz.Digraph:
    """The graphviz description of ``G`` (see the module docstring).  ``cluster``: "auto",
    "group" (always, by domain/subnet) or "none"."""
    n_nodes, n_edges = G.number_of_nodes(), G.number_of_edges()
    large = n_nodes > 40
    dot = graphviz.Digraph("apisensor", engine="dot")
    dot.attr(rankdir="LR", newrank="true", splines="spline", fontname=FONT, bgcolor="white",
             nodesep="0.18" if large else "0.5", ranksep="1.6" if large else "1.1", pad="0.3",
             outputorder="edgesfirst", remincross="true")
    dot.attr("node", fontname=FONT, fontsize="12", margin="0.15,0.06", penwidth="1.4")
    dot.attr("edge", fontname=FONT, fontsize="9", arrowsize="0.7", color="#7a7a7a99" if large else "#6b6b6b",
             fontcolor="#333333")

    most = max((c for *_, c in G.edges(data="calls")), default=1)
    label_all = n_edges <= LABEL_ALL_UP_TO
    busiest = {(u, v) for u, v, _ in sorted(G.edges(data="calls"), key=lambda e: -e[2])[:BUSIEST_LABELLED]}
    busiest = busiest if not large else set()
    focus = G.graph.get("focus")
    ids = {n: f"n{i}" for i, n in enumerate(sorted(G))}  # names may hold ":" (DOT's port syntax)

    def node(target, n: str, d: dict, group: str | None = None) -> None:
        if d["kind"] == "client":
            fill, border = CLIENT_STYLE
            shape, style = "ellipse", "filled"
            if d.get("flagged"):
                border = "#b00000"
        else:
            fill, border = SEVERITY_STYLE.get(d.get("severity") or "", SERVICE_STYLE)
            shape, style = "box", "rounded,filled"
        extra = {"penwidth": "3"} if n == focus else {}
        if d.get("severity") in ("critical", "high") or d.get("flagged"):
            extra["penwidth"] = "2.5"
        shown = short_name(n, group) if group else n
        target.node(ids[n], label=_node_label(n, d, large, shown), shape=shape, style=style, fillcolor=fill,
                    color=border, tooltip=n, **extra)

    if _should_cluster(G, cluster):
        groups: dict[str, list[str]] = {}
        for n, d in G.nodes(data=True):
            groups.setdefault(d["group"] if d["kind"] == "service" else "", []).append(n)
        for i, (g, members) in enumerate(sorted(groups.items())):
            if not g or len(members) < 2:
                for n in members:
                    node(dot, n, G.nodes[n])
                continue
            with dot.subgraph(name=f"cluster_{i}") as c:
                c.attr(label=g, style="rounded,filled", color="#c8c8c8", fillcolor="#f7f7f7", fontname=FONT,
                       fontsize="14", fontcolor="#555555", labeljust="l", labelloc="t", margin="12")
                for n in sorted(members):
                    node(c, n, G.nodes[n], g if large else None)
    else:
        for n, d in sorted(G.nodes(data=True)):
            node(dot, n, d)
    clients = sorted(n for n, d in G.nodes(data=True) if d["kind"] == "client")
    if clients:
        with dot.subgraph() as s:
            s.attr(rank="min")
            for n in clients:
                s.node(ids[n])

    for u, v, d in sorted(G.edges(data=True), key=lambda e: (e[0], e[1])):
        color = edge_color(d)
        attrs = {"penwidth": _penwidth(d["calls"], most, large), "tooltip": f"{u} -> {v}: {edge_label(d)}"}
        if color == "red":
            attrs.update(color="#d62728", fontcolor="#b00000")
        elif color == "orange":
            attrs.update(color="#ef8a00", fontcolor="#a85f00")
        if d["transport"] == "tls":
            attrs["style"] = "dashed"
        elif d["transport"] == "tcp":
            attrs["style"] = "dotted"
        if label_all or color != "normal" or (u, v) in busiest:
            attrs["label"] = edge_label(d, compact=large)
        dot.edge(ids[u], ids[v], **attrs)

    dot.attr(label=_legend(title, G), labelloc="b", labeljust="l", fontsize="11")
    if large:  # stagger the long columns of leaves over a few ranks: a less lopsided picture
        dot = dot.unflatten(stagger=3, fanout=True)
    return dot


def time_span(G: nx.DiGraph) -> str:
    """``2026-05-01 10:00:02 - 10:04:59 UTC``: the capture time the map covers."""
    firsts = [d["first_seen"] for _, d in G.nodes(data=True) if d.get("first_seen") is not None]
    lasts = [d["last_seen"] for _, d in G.nodes(data=True) if d.get("last_seen") is not None]
    if not firsts or not lasts:
        return ""
    a, b = time.gmtime(min(firsts)), time.gmtime(max(lasts))
    end = time.strftime("%H:%M:%S" if a[:3] == b[:3] else "%Y-%m-%d %H:%M:%S", b)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', a)} - {end} UTC"


def _legend(title: str | None, G: nx.DiGraph) -> str:
    sev = " &nbsp;".join(f'<FONT COLOR="{SEVERITY_STYLE[s][1]}" POINT-SIZE="14">&#9632;</FONT> {s}'
                         for s in ("critical", "high", "medium", "low"))
    rows = [f"<B>{html.escape(title)}</B>"] if title else []
    counts = f"{G.number_of_nodes()} nodes, {G.number_of_edges()} edges"
    span = time_span(G)
    rows.append(counts + (f" · {span}" if span else ""))
    rows.append('edges: width = calls; <FONT COLOR="#d62728">red</FONT> 5xx &#8805; 5%,'
                ' <FONT COLOR="#ef8a00">orange</FONT> 4xx &#8805; 25%; dashed = TLS (connections),'
                " dotted = other TCP")
    rows.append(f"services filled by their worst finding: {sev}")
    if any(d.get("risk") or d.get("flagged") for _, d in G.nodes(data=True)):
        rows.append("risk: the service's riskiest endpoint (0-100, apisensor endpoints); "
                    '<FONT COLOR="#b00000">flagged</FONT>: behaviour findings of actors from that client '
                    "(apisensor actors)")
    body = "".join(f'<TR><TD ALIGN="LEFT">{r}</TD></TR>' for r in rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1">{body}</TABLE>>'


def render(G: nx.DiGraph, path: str, fmt: str | None = None, title: str | None = None,
           cluster: str = "auto") -> str:
    """Write ``G`` to ``path`` (format from the extension unless ``fmt``); returns the format."""
    fmt = format_for(path, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r} (use one of {', '.join(FORMATS)})")
    dot = to_dot(G, title=title, cluster=cluster)
    if fmt == "dot":
        data = dot.source.encode()
    else:
        data = dot.pipe(format=fmt)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return fmt
