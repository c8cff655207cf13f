"""``apisensor capture``: the live source feeding the same pipeline and sinks as replay."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import click

from . import FLUSH_EVERY, SINKS, _fail, _limits, common


def _total(pool):
    """Counters summed over the capture workers (their last reports)."""
    from ..parallel import _add
    from ..stats import Stats

    agg, kernel = Stats(), {}
    for wstats, k in pool.worker_stats.values():
        _add(agg, wstats)
        for key, v in k.items():
            kernel[key] = kernel.get(key, 0) + v
    return agg, kernel


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return 0.0


@click.command()
@click.option("-i", "--interface", "iface", required=True, help="Interface to capture on (see: ip link).")
@click.option("--bpf", default=None, metavar="FILTER", help="BPF filter run in the kernel, e.g. 'tcp'.")
@click.option("--db", "db_path", required=True, type=click.Path(dir_okay=False),
              help="SQLite file to create or add to (readable while the capture runs).")
@click.option("--duration", type=float, default=None, metavar="S", help="Stop after S seconds.")
@click.option("--snaplen", type=int, default=262144, show_default=True, help="Bytes kept per packet.")
@click.option("--no-promisc", is_flag=True, help="Do not put the interface in promiscuous mode.")
@click.option("--write-pcap", "pcap_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Also keep the packets in rotating pcap files in DIR (single worker).")
@click.option("--rotate-mb", type=int, default=100, show_default=True, help="Size of each pcap file.")
@click.option("--keep", type=int, default=10, show_default=True, help="Pcap files kept (oldest deleted).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Capture processes sharing the interface (kernel PACKET_FANOUT by flow hash).")
@click.option("--stats-interval", type=float, default=10.0, show_default=True, metavar="S",
              help="Seconds between two stats lines on stderr.")
@click.option("--stats-json", is_flag=True, help="Stats lines as JSON objects.")
@click.option("--flush-interval", type=float, default=5.0, show_default=True, metavar="S",
              help="Seconds between two writes of the inventory to SQLite.")
@common
def capture(iface, bpf, db_path, duration, snaplen, no_promisc, pcap_dir, rotate_mb, keep, workers,
            stats_interval, stats_json, flush_interval, body_cap, max_flows) -> None:
    """Capture live traffic on an interface (a SPAN/mirror port) into the inventory --db.

    Runs until Ctrl-C/SIGTERM (or --duration): the first signal flushes everything and
    exits 0 within seconds; a second one exits at once (what was committed stays intact).
    Needs root, or CAP_NET_RAW and CAP_NET_ADMIN.
    """
    from discovery.store import Store

    from ..live import LiveError, LiveSource, RotatingPcapWriter
    from ..pipeline import Pipeline
    from ..stats import Stats

    limits = _limits(body_cap, max_flows)
    src = pool = None
    try:
        if workers == 1:
            src = LiveSource(iface, bpf, snaplen, not no_promisc)
        else:
            from ..parallel import LiveWorkers

            pool = LiveWorkers({"iface": iface, "bpf": bpf, "snaplen": snaplen, "promisc": not no_promisc},
                               workers, limits, want_events=True)
    except LiveError as e:
        _fail(str(e))
    except RuntimeError as e:
        _fail(str(e).strip().splitlines()[-1].split(": ", 1)[-1])
    try:
        store = Store(db_path)
    except Exception as e:
        _fail(f"{db_path}: cannot open as a SQLite database ({e})")
    from discovery.recorder import Recorder, start_run

    run_id, sinks = start_run(store, [f"live:{iface}" + (f" ({bpf})" if bpf else "")], SINKS,
                              notify=lambda m: click.echo(f"apisensor: {m}", err=True))
    # commits are driven by time and count below, not by the recorder
    recorder = Recorder(store, run_id, sinks, flush_every=1 << 62)
    emit, on_event = recorder.observe, recorder.observe_event

    signals = [0]

    def on_signal(signum, _frame) -> None:
        signals[0] += 1
        if signals[0] > 1:
            os._exit(130)  # second signal: leave now; committed batches are intact (WAL)
        click.echo("apisensor: stopping (flushing; press Ctrl-C again to quit at once)", err=True)
        if src is not None:
            src.stop()
        if pool is not None:
            pool.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stats = Stats()
    start = time.monotonic()
    deadline = start + duration if duration else None
    t_flush = t_stats = t_next = start

    def flush() -> None:
        recorder.commit()

    def stats_line(kernel: dict) -> None:
        line = {"elapsed": round(time.monotonic() - start, 1), "packets": stats.packets,
                "bytes": stats.bytes, "flows": stats.flows, "transactions": stats.transactions,
                "kernel_received": kernel.get("received", 0), "kernel_dropped": kernel.get("dropped", 0),
                "if_dropped": kernel.get("if_dropped", 0), "rss_mb": round(_rss_mb(), 1),
                "evicted_flows": stats.anomalies.get("tcp.flow_evicted", 0)}
        if stats_json:
            click.echo(json.dumps(line), err=True)
        else:
            click.echo(" ".join(f"{k}={v}" for k, v in line.items()), err=True)

    if src is not None:
        writer = RotatingPcapWriter(pcap_dir, src.linktype, rotate_mb, keep, snaplen) if pcap_dir else None
        p = Pipeline(emit, limits, stats, on_event=on_event)
        n = 0
        for rec in src:
            if rec is not None:
                p.feed(*rec)
                if writer is not None:
                    writer.write(rec[0], rec[2])
                n += 1
                if recorder.pending < FLUSH_EVERY and time.monotonic() < t_next:
                    continue  # housekeeping at most 4 times a second (a busy link has no idle reads)
            now = time.monotonic()
            t_next = now + 0.25
            if rec is None:
                p.tick(time.time())
            if now - t_flush >= flush_interval or recorder.pending >= FLUSH_EVERY:
                flush()
                t_flush = now
            if now - t_stats >= stats_interval:
                stats_line(src.kernel_stats())
                t_stats = now
            if deadline is not None and now >= deadline:
                src.stop()
        p.finish()
        kernel = src.kernel_stats()
        src.close()
        if writer is not None:
            writer.close()
    else:
        from ..transaction import Transaction

        while pool.done < pool.n:
            for kind, payload in pool.poll(0.2):
                if kind == "items":
                    for item in payload:
                        if isinstance(item, Transaction):
                            emit(item)
                        else:
                            on_event(item)
            now = time.monotonic()
            if now - t_flush >= flush_interval or recorder.pending >= FLUSH_EVERY:
                flush()
                t_flush = now
            if now - t_stats >= stats_interval and pool.worker_stats:
                stats, kernel = _total(pool)
                stats_line(kernel)
                t_stats = now
            if deadline is not None and now >= deadline:
                pool.stop()
        pool.close()
        stats, kernel = _total(pool)
        for i, code in pool.lost.items():
            click.echo(f"apisensor: warning: capture worker {i} was killed (exit {code}): the flows it "
                       "held are lost", err=True)
    results = recorder.finish()
    summary = {**stats.to_json(), "kernel": kernel}
    store.finish_run(run_id, summary)
    store.close()
    click.echo(f"capture on {iface}: {stats.packets} packets, {stats.flows} TCP flows, "
               f"{stats.transactions} transactions, kernel drops {kernel.get('dropped', 0)} -> {db_path}",
               err=True)
    for k, v in results.items():
        click.echo(f"{k}: {v}", err=True)
    sys.exit(0)
