"""Detectors: a registry of small units, one interface (transaction in, findings out).

    from discovery.detectors import detect
    for f in detect(tx):
        print(f.detector, f.severity, f.location, f.evidence)

One module per family: :mod:`.pii`, :mod:`.secrets`, :mod:`.errors`, :mod:`.disclosure`,
:mod:`.posture`.  Each exports ``DETECTORS`` (instances); :data:`REGISTRY` holds them in run
order (posture last: it reads the others' findings).  A detector declares the patterns it
needs (``patterns``), all of which are compiled into one alternation and run once per
transaction (:mod:`.scan`); see :mod:`.base` for the interface and docs/findings.md for how
to add one.
"""

from __future__ import annotations

from .base import API2, API3, API8, SEVERITIES, SEVERITY_RANK, Base, Detector, Finding, Leaf
from .context import SCAN_CAP, Context
from .redaction import Hasher
from .scan import Scanner

# Group order in the alternation: at one offset, the earlier group wins.  Specific formats
# first (a card number is also a digit run a phone pattern would take).
PATTERN_ORDER = (
    "pem",
    "jwt",
    "token",
    "pwhash",
    "email",
    "ssn",
    "card",
    "natid",
    "iban",
    "ipv4",
    "ipv6",
    "phone",
    "dbg",
    "banner",
    "sql",
)


class Registry:
    def __init__(self):
        self.detectors: list[Detector] = []
        self._scanner: Scanner | None = None

    def register(self, detector: Detector) -> Detector:
        if any(d.name == detector.name for d in self.detectors):
            raise ValueError(f"detector {detector.name!r} registered twice")
        self.detectors.append(detector)
        self._scanner = None
        return detector

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]

    @property
    def scanner(self) -> Scanner:
        if self._scanner is None:
            groups: dict[str, str] = {}
            needs: dict[str, object] = {}
            for d in self.detectors:
                for g, p in d.patterns.items():
                    if groups.get(g, p) != p:
                        raise ValueError(f"pattern group {g!r} defined differently by two detectors")
                    groups[g] = p
                needs.update(getattr(d, "needs", {}))
            order = {g: i for i, g in enumerate(PATTERN_ORDER)}
            ordered = dict(sorted(groups.items(), key=lambda kv: order.get(kv[0], len(order))))
            self._scanner = Scanner(ordered, needs)
        return self._scanner

    def detect(self, tx, hasher: Hasher | None = None, only: set[str] | None = None) -> list[Finding]:
        ctx = Context(tx, self.scanner, hasher)
        for d in self.detectors:
            if only is not None and d.name not in only:
                continue
            try:
                ctx.findings.extend(d.detect(ctx))
            except Exception as e:  # one broken detector must not stop the sensor
                ctx.findings.append(
                    Finding(
                        d.name,
                        "detector_error",
                        "info",
                        "low",
                        None,
                        "detector",
                        f"{type(e).__name__}: {str(e)[:120]}",
                    )
                )
        return ctx.findings


def _default() -> Registry:
    from . import disclosure, errors, pii, posture, secrets

    reg = Registry()
    for mod in (pii, secrets, errors, disclosure, posture):
        for d in mod.DETECTORS:
            reg.register(d)
    return reg


REGISTRY = _default()


def detect(tx, hasher: Hasher | None = None) -> list[Finding]:
    """All findings of the default registry for one Transaction."""
    return REGISTRY.detect(tx, hasher)


__all__ = [
    "API2",
    "API3",
    "API8",
    "REGISTRY",
    "SCAN_CAP",
    "SEVERITIES",
    "SEVERITY_RANK",
    "Base",
    "Context",
    "Detector",
    "Finding",
    "Hasher",
    "Leaf",
    "Registry",
    "detect",
]
