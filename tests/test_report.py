"""``apisensor report``: one self-contained HTML file, checked in a real headless browser (Debian's
chromium): the screenshot is not blank, and the DOM after the page's script ran holds the
tables, sorted and filtered as the link asked, and the map's SVG.

``APISENSOR_SAVE_SCREENSHOT=1 pytest tests/test_report.py`` also writes the screenshot to
docs/images/report.png (the picture in the README).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import dpkt
import pytest
from conftest import PCAPS, ROOT

APISENSOR = os.path.join(os.path.dirname(sys.executable), "apisensor")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = os.path.join(ROOT, "docs", "images", "report.png")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([APISENSOR, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    db, html = str(d / "demo.db"), str(d / "report.html")
    assert run("replay", os.path.join(PCAPS, "demo.pcap"), "--db", db, "--no-progress").returncode == 0
    p = run("report", "--db", db, "-o", html, "--title", "pcaps/demo.pcap")
    assert p.returncode == 0, p.stderr
    return d, db, html


def test_report_holds_everything_and_loads_nothing(demo):
    _, db, html = demo
    text = Path(html).read_text(encoding="utf-8")
    con = sqlite3.connect(db)
    for table in ("services", "endpoints", "findings"):
        n = con.execute(f"select count(*) from {table}").fetchone()[0]
        body = re.search(rf'<table class="data" id="{table}">.*?<tbody>(.*?)</tbody>', text, re.S).group(1)
        assert body.count("<tr") == n > 0, table
    assert (
        "<svg" in text
        and text.count('class="node"') == con.execute("select count(*) from graph_nodes").fetchone()[0]
    )
    # the evidence as stored (redacted), never more
    for (evidence,) in con.execute("select evidence from findings"):
        assert (
            evidence.replace("&", "&amp;")
            .replace("<", "&lt;")
            .replace(">", "&gt;")
            .replace('"', "&quot;")
            .replace("'", "&#x27;")
            in text
        )
    # nothing is fetched: no external reference at all, and the page forbids it anyway
    assert not re.search(r"""(?:src|href|xlink:href)\s*=\s*["'](?!#)""", text)
    assert not re.search(r"<(?:link|iframe|img|object|embed)\b", text)
    assert "default-src 'none'" in text


def _png_pixels(path: str) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of a PNG (8-bit truecolour, as Chromium writes)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i : i + 3]) for r in rows[::8] for i in range(0, stride, 8 * bpp)]


def _chromium(*args: str, profile: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; make test does)"
)
def test_report_renders_in_a_real_browser(demo):
    d, db, html = demo
    shot = str(d / "report.png")
    p = _chromium(
        f"--screenshot={shot}", "--window-size=1400,2000", f"file://{html}", profile=str(d / "profile")
    )
    assert os.path.exists(shot), p.stderr[-2000:]
    width, height, sample = _png_pixels(shot)
    assert (width, height) == (1400, 2000)
    colours = set(sample)
    not_white = sum(1 for px in sample if px != b"\xff\xff\xff")
    assert len(colours) > 50 and not_white > len(sample) // 4  # a page, not a blank or a one-colour error
    if os.environ.get("APISENSOR_SAVE_SCREENSHOT"):
        shutil.copy(shot, SCREENSHOT)

    # the DOM after the script ran: sorted by requests, findings filtered, as the link asks
    url = f"file://{html}#sort=endpoints:hits:desc&filter=findings:pii."
    p = _chromium("--dump-dom", url, profile=str(d / "profile"))
    dom = p.stdout
    assert 'data-ready="1"' in dom, p.stderr[-2000:]
    con = sqlite3.connect(db)
    assert dom.count('class="node"') == con.execute("select count(*) from graph_nodes").fetchone()[0] > 0
    body = re.search(r'<table class="data" id="endpoints">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert len(rows) == con.execute("select count(*) from endpoints").fetchone()[0]
    hits = [int(re.search(r'data-col="hits"|<td class="num" data-sort="(\d+)"', r).group(1)) for r in rows]
    assert (
        hits == sorted(hits, reverse=True)
        and hits[0] == con.execute("select max(hits) from endpoints").fetchone()[0]
    )
    assert 'th data-col="hits" data-desc="" class="desc"' in dom or 'class="desc"' in dom
    n_pii = con.execute("select count(*) from findings where detector like 'pii.%'").fetchone()[0]
    n_all = con.execute("select count(*) from findings").fetchone()[0]
    assert f'id="findings-count">{n_pii} of {n_all} shown<' in dom
    findings = re.search(r'<table class="data" id="findings">.*?<tbody>(.*?)</tbody>', dom, re.S).group(1)
    shown = [r for r in re.findall(r"<tr([^>]*)>", findings) if "display: none" not in r]
    assert len(shown) == n_pii


# ---- hostile values stay text --------------------------------------------------------------------


def _exchange_pcap(path: str, host: str, uri: str, body: bytes) -> None:
    """One HTTP/1.1 exchange over TCP on loopback addresses, handshake to FIN, as packets."""
    cli, srv = bytes([127, 0, 0, 7]), bytes([127, 0, 0, 8])
    req = f"GET {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: <b>ua</b>\r\n\r\n".encode()
    resp = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: x<i>\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    f = open(path, "wb")  # noqa: SIM115 - closed below
    w = dpkt.pcap.Writer(f)
    seq_c, seq_s, t = 1000, 5000, 1_700_000_000.0

    def pkt(src, dst, sport, dport, seq, ack, flags, data=b""):
        nonlocal t
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, data=data, win=65535)
        ip = dpkt.ip.IP(src=src, dst=dst, p=dpkt.ip.IP_PROTO_TCP, data=tcp, ttl=64)
        ip.len = len(ip)
        eth = dpkt.ethernet.Ethernet(
            src=b"\x00" * 6, dst=b"\x00" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip
        )
        t += 0.001
        w.writepkt(bytes(eth), t)

    S, A, P, F = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN
    pkt(cli, srv, 40000, 80, seq_c, 0, S)
    pkt(srv, cli, 80, 40000, seq_s, seq_c + 1, S | A)
    pkt(cli, srv, 40000, 80, seq_c + 1, seq_s + 1, A)
    pkt(cli, srv, 40000, 80, seq_c + 1, seq_s + 1, P | A, req)
    pkt(srv, cli, 80, 40000, seq_s + 1, seq_c + 1 + len(req), P | A, resp)
    pkt(cli, srv, 40000, 80, seq_c + 1 + len(req), seq_s + 1 + len(resp), F | A)
    pkt(srv, cli, 80, 40000, seq_s + 1 + len(resp), seq_c + 2 + len(req), F | A)
    w.close()
    f.close()


def test_values_from_the_wire_are_escaped(tmp_path):
    """Host names, paths and bodies are chosen by whoever sends traffic: the report shows them as
    text, never as markup or script."""
    pcap, db, html = str(tmp_path / "x.pcap"), str(tmp_path / "x.db"), str(tmp_path / "r.html")
    _exchange_pcap(
        pcap,
        "evil.test",
        '/api/"><img src=x onerror=alert(2)>/x',
        b'{"<img src=x onerror=alert(4)>": "victim@example.org", '
        b'"note": "</script><script>alert(3)</script>"}',
    )
    assert run("replay", pcap, "--db", db, "--no-progress").returncode == 0
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from transactions").fetchone()[0] == 1
    p = run("report", "--db", db, "-o", html)
    assert p.returncode == 0, p.stderr
    text = Path(html).read_text(encoding="utf-8")
    script = text[text.rindex("<script>") :]
    assert text.count("<script>") == 1 and "alert(" not in script  # only the page's own script
    assert "<img" not in text
    assert (
        "response.body:$[&quot;&lt;img src=x onerror=alert(4)&gt;&quot;]" in text
    )  # a JSON key, in a location
    assert 'title="e.g. /api/&quot;&gt;&lt;img src=x onerror=alert(2)&gt;/x"' in text  # a path as seen
