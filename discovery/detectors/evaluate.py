"""Score the detectors on labelled captures: precision and recall per detector.

    python -m discovery.detectors.evaluate [FIXTURES_DIR] [--errors]

``FIXTURES_DIR`` (default ``tests/fixtures/findings``) holds pcaps and ``labels.json``; each
labelled transaction lists the (detector, location) pairs a correct sensor reports.  A finding
is a true positive when its (detector, location) is in the transaction's label, a false
positive otherwise; a label pair nobody reported is a false negative.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

from . import REGISTRY, Registry

DEFAULT_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "findings")


@dataclass
class Score:
    tp: Counter = field(default_factory=Counter)
    fp: Counter = field(default_factory=Counter)
    fn: Counter = field(default_factory=Counter)
    errors: list = field(default_factory=list)  # (kind, fixture, method, uri, detector, location)
    unlabelled: list = field(default_factory=list)
    transactions: int = 0

    def precision(self, d: str) -> float:
        t, f = self.tp[d], self.fp[d]
        return t / (t + f) if t + f else 1.0

    def recall(self, d: str) -> float:
        t, n = self.tp[d], self.fn[d]
        return t / (t + n) if t + n else 1.0

    def table(self, names: list[str]) -> str:
        lines = [f"{'detector':<34} {'TP':>5} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7}"]
        for d in names:
            lines.append(
                f"{d:<34} {self.tp[d]:>5} {self.fp[d]:>4} {self.fn[d]:>4} {self.precision(d):>9.3f} "
                f"{self.recall(d):>7.3f}"
            )
        t, f, n = sum(self.tp.values()), sum(self.fp.values()), sum(self.fn.values())
        lines.append(f"{'all':<34} {t:>5} {f:>4} {n:>4} {t / max(1, t + f):>9.3f} {t / max(1, t + n):>7.3f}")
        return "\n".join(lines)


def load_labels(fixtures_dir: str) -> dict:
    with open(os.path.join(fixtures_dir, "labels.json")) as f:
        return json.load(f)


def score(fixtures_dir: str = DEFAULT_DIR, registry: Registry | None = None) -> Score:
    from sensor.pipeline import transactions_from_files

    registry = registry or REGISTRY
    labels = load_labels(fixtures_dir)
    sc = Score()
    for name, spec in sorted(labels.items()):
        by_key = {(t["method"], t["uri"]): t for t in spec["transactions"]}
        for tx in transactions_from_files([os.path.join(fixtures_dir, spec["pcap"])]):
            label = by_key.get((tx.method, tx.uri))
            if label is None:
                sc.unlabelled.append((name, tx.method, tx.uri))
                continue
            sc.transactions += 1
            expected = {tuple(e) for e in label["expect"]}
            got = {(f.detector, f.location) for f in registry.detect(tx)}
            for d, _loc in got & expected:
                sc.tp[d] += 1
            for d, loc in got - expected:
                sc.fp[d] += 1
                sc.errors.append(("FP", name, tx.method, tx.uri, d, loc))
            for d, loc in expected - got:
                sc.fn[d] += 1
                sc.errors.append(("FN", name, tx.method, tx.uri, d, loc))
    return sc


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    sc = score(args[0] if args else DEFAULT_DIR)
    print(f"{sc.transactions} labelled transactions, {len(sc.unlabelled)} unlabelled")
    print(sc.table(REGISTRY.names))
    if "--errors" in argv:
        for e in sc.errors:
            print(*e)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
