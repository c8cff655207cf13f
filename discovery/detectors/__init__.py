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

from .base import API2, API3, API8, SEVERITIES, SEVERITY_RANK, Base, Detector, Finding, Leaf, key_words
from .context import SCAN_CAP, BodyMemo, Context
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
        self._plan: list[tuple[Detector, frozenset[str] | None]] | None = None
        self._keyed: list[Detector] = []
        self._wants_cache: dict[tuple[str, str], frozenset[str]] = {}

    def register(self, detector: Detector) -> Detector:
        if any(d.name == detector.name for d in self.detectors):
            raise ValueError(f"detector {detector.name!r} registered twice")
        self.detectors.append(detector)
        self._scanner = None
        self._plan = None
        self._wants_cache = {}
        return detector

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]

    @property
    def scanner(self) -> Scanner:
        if self._scanner is None:
            groups: dict[str, str] = {}
            needs: dict[str, object] = {}
            necessary: dict[str, object] = {}
            for d in self.detectors:
                for g, p in d.patterns.items():
                    if groups.get(g, p) != p:
                        raise ValueError(f"pattern group {g!r} defined differently by two detectors")
                    groups[g] = p
                needs.update(getattr(d, "needs", {}))
                necessary.update(getattr(d, "necessary", {}))
            order = {g: i for i, g in enumerate(PATTERN_ORDER)}
            ordered = dict(sorted(groups.items(), key=lambda kv: order.get(kv[0], len(order))))
            self._scanner = Scanner(ordered, needs, necessary)
        return self._scanner

    def _build_plan(self) -> list[tuple[Detector, frozenset[str] | None]]:
        """Per detector, the pattern groups whose hits it reads (``reads``), or None when it must
        always run; a detector with ``reads`` runs only when one of those groups matched or
        (``wants_key``) a leaf under a key it reads exists."""
        plan = []
        for d in self.detectors:
            reads = getattr(d, "reads", None)
            plan.append((d, frozenset(reads) if reads is not None else None))
        self._keyed = [d for d in self.detectors if getattr(d, "wants_key", None) is not None]
        self._plan = plan
        return plan

    def wants(self, key: str, parent: str) -> frozenset[str]:
        """Names of the key-driven detectors that read a body/query value under ``key`` (inside
        an object under ``parent``); cached per name pair."""
        got = self._wants_cache.get((key, parent))
        if got is None:
            if self._plan is None:
                self._build_plan()
            k, words = key_words(key)
            p, pwords = key_words(parent) if parent else ("", ())
            probe = Leaf("", "", k, words, p, pwords)
            got = frozenset(d.name for d in self._keyed if d.wants_key(probe))
            if len(self._wants_cache) >= 50_000:
                self._wants_cache.clear()
            self._wants_cache[(key, parent)] = got
        return got

    def detect(
        self, tx, hasher: Hasher | None = None, only: set[str] | None = None, *, bodies: bool = True,
        memo: BodyMemo | None = None,
    ) -> list[Finding]:
        """Findings of every detector for ``tx`` (``only``: just these detectors; ``bodies=False``:
        leave the request and response bodies out, for a sampled-out transaction; ``memo``:
        bodies walked before, see :class:`~.context.BodyMemo`)."""
        plan = self._plan or self._build_plan()
        ctx = Context(tx, self.scanner, hasher, self.wants, bodies, memo)
        hit_groups = ctx._hits.keys()
        wanted = ctx.wanted
        findings = ctx.findings
        for d, reads in plan:
            if only is not None and d.name not in only:
                continue
            if reads is not None and hit_groups.isdisjoint(reads) and d.name not in wanted:
                continue  # nothing this detector reads is in the transaction
            try:
                findings.extend(d.detect(ctx))
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
    "BodyMemo",
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
