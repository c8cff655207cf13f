"""The interface between the sensor's output and everything that records it.

``apisensor replay`` (and live capture) push each Transaction and each sensor event
(TLSClientHello, DNSAnswer, FlowSummary from ``sensor.events``) to a list of sinks, flush
them every few thousand transactions (each flush is one SQLite transaction), and call
``finish`` at the end.  A sink owns its tables: it creates them in ``__init__`` (idempotent)
and writes them only through ``store.db`` (a sqlite_utils.Database).
"""

from __future__ import annotations

from typing import Any, Protocol


class Sink(Protocol):
    def observe(self, tx: Any) -> None:
        """One Transaction (called in capture order)."""

    def observe_event(self, ev: Any) -> None:
        """One TLSClientHello, DNSAnswer or FlowSummary."""

    def flush(self) -> None:
        """Write what is pending (one SQLite transaction); memory held must shrink."""

    def finish(self) -> dict[str, Any]:
        """Final flush; return a summary for the replay report (e.g. {"endpoints": 12})."""
