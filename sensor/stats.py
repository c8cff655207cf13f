"""Counters shared by the stages: packets, bytes, flows, transactions and anomalies by kind."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    packets: int = 0
    bytes: int = 0
    flows: int = 0
    http_flows: int = 0
    tls_flows: int = 0
    other_flows: int = 0
    transactions: int = 0
    files: int = 0
    truncated_files: int = 0
    # anomaly kind ("tcp.gap", "http.bad_chunk", "decode.unknown_linktype", ...) -> count
    anomalies: Counter = field(default_factory=Counter)

    def anomaly(self, kind: str, n: int = 1) -> None:
        self.anomalies[kind] += n

    def to_json(self) -> dict:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "flows": self.flows,
            "http_flows": self.http_flows,
            "tls_flows": self.tls_flows,
            "other_flows": self.other_flows,
            "transactions": self.transactions,
            "files": self.files,
            "truncated_files": self.truncated_files,
            "anomalies": dict(sorted(self.anomalies.items())),
        }
