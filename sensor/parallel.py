"""Several cores: which worker owns a packet (both directions of a flow hash alike), adding
up the workers' counters, and live capture workers (PACKET_FANOUT).  ``replay --workers``
runs the sensor and the sinks per worker (``sensor/cli/sharded.py``).

Packets that are not TCP (DNS answers, ...) and frames that don't decode belong to worker 0,
so every packet is counted exactly once.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback

from .limits import Limits
from .stats import Stats

_BATCH = 512


def mix(ports: int, addrs: int, n: int) -> int:
    """Worker index from ``sport ^ dport`` and the sum of the addresses' last bytes (both
    symmetric in the two endpoints), mixed by a multiplicative hash: Linux gives connect() even
    ports, so the port bits alone would put every flow between two hosts on one worker."""
    return ((((ports << 8) + addrs) * 0x9E3779B1) & 0xFFFFFFFF) * n >> 32


def owner(seg: tuple, n: int) -> int:
    """Worker index of a decoded segment: symmetric in the two endpoints."""
    if seg[0] != 6:
        return 0
    return mix(seg[3] ^ seg[4], seg[1][-1] + seg[2][-1], n)


def _add(total: Stats, part: Stats) -> None:
    for k in ("packets", "bytes", "flows", "http_flows", "tls_flows", "other_flows", "transactions",
              "truncated_files"):
        setattr(total, k, getattr(total, k) + getattr(part, k))
    total.anomalies.update(part.anomalies)


def default_workers(total_bytes: int) -> int:
    """All cores for big inputs; one process for small ones (forking costs more than it saves)."""
    return max(1, os.cpu_count() or 1) if total_bytes > 32 << 20 else 1


def _live_worker(opts: dict, idx: int, limits: Limits, q, stop, want_events: bool) -> None:
    import contextlib
    import ctypes
    import signal
    import time

    # Ctrl-C in a terminal reaches the whole process group: the parent stops us through `stop`
    # (after flushing); and we must not outlive it (its second signal exits with os._exit).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    try:
        from .live import LiveSource
        from .pipeline import Pipeline

        src = LiveSource(opts["iface"], opts.get("bpf"), opts.get("snaplen", 262144),
                         opts.get("promisc", True))
        src.join_fanout(opts["group"])
        q.put(("ready", idx))
        batch: list = []
        stats = Stats()
        p = Pipeline(batch.append, limits, stats, on_event=batch.append if want_events else None)
        last = t_next = time.monotonic()
        n = 0
        for rec in src:
            if rec is not None:
                p.feed(*rec)
                n += 1
                if len(batch) < _BATCH and time.monotonic() < t_next:
                    continue  # send, tick and look at `stop` at least 10 times a second
            now = time.monotonic()
            t_next = now + 0.1
            if rec is None or now - last > 0.5:
                p.tick(time.time())
                if stop.is_set():
                    src.stop()
            if batch:
                q.put(("items", batch[:]))
                batch.clear()
            if now - last > 1.0:
                last = now
                q.put(("stats", (idx, stats, src.kernel_stats())))
        p.finish()
        if batch:
            q.put(("items", batch[:]))
        q.put(("stats", (idx, stats, src.kernel_stats())))
        src.close()
        q.put(("done", (idx, stats)))
    except BaseException:
        q.put(("error", traceback.format_exc()))


class LiveWorkers:
    """``workers`` capture processes on one interface joined in a PACKET_FANOUT group (the
    kernel keeps both directions of a flow in one member); the caller drains ``poll()``."""

    def __init__(self, opts: dict, workers: int, limits: Limits, want_events: bool):
        ctx = multiprocessing.get_context("fork")
        self.q = ctx.Queue(maxsize=64 * workers)
        self.stop_event = ctx.Event()
        opts = {**opts, "group": os.getpid() & 0xFFFF}
        self.procs = [ctx.Process(target=_live_worker, args=(opts, i, limits, self.q, self.stop_event,
                                                              want_events), daemon=True)
                      for i in range(workers)]
        for pr in self.procs:
            pr.start()
        self.n = workers
        self.done = 0
        self.finished: set[int] = set()
        self.lost: dict[int, int] = {}  # worker -> exit code, for workers that died without "done"
        self.worker_stats: dict[int, tuple] = {}
        ready = 0
        while ready < workers:  # fail fast (bad interface, no permission) before the caller goes on
            kind, payload = self.q.get()
            if kind == "error":
                self.close()
                raise RuntimeError(payload)
            if kind == "ready":
                ready += 1

    def poll(self, timeout: float):
        """Yield ("items", list) / ("stats", ...) / ("done", ...) messages for ``timeout`` seconds."""
        import queue

        try:
            kind, payload = self.q.get(timeout=timeout)
        except queue.Empty:
            # a worker killed by a signal (SIGTERM to the whole process group, as systemd sends it)
            # never says "done": count it, or the caller would wait for it forever
            for i, pr in enumerate(self.procs):
                if i not in self.finished and pr.exitcode not in (None, 0):
                    self.finished.add(i)
                    self.lost[i] = pr.exitcode
                    self.done += 1
            return
        if kind == "error":
            raise RuntimeError(f"capture worker failed:\n{payload}")
        if kind == "done":
            if payload[0] in self.finished:
                return
            self.finished.add(payload[0])
            self.done += 1
        if kind == "stats":
            self.worker_stats[payload[0]] = payload[1:]
        yield kind, payload

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.stop_event.set()
        for pr in self.procs:
            pr.join(timeout=5)
            if pr.is_alive():
                pr.kill()
