"""The detector interface: a transaction's parsed views in (:class:`Context`), findings out.

A detector is a small object with a ``name`` (``family.what``, e.g. ``pii.card``), optional
``patterns`` (named regular expressions it wants found in the transaction's text) and a
``detect(ctx)`` method that yields :class:`Finding` objects.  Detectors never parse the
transaction themselves: the :class:`Context` does that once (JSON walked into leaves with their
paths and key names, forms and CSV likewise, HTML reduced to text, headers, cookies, query
parameters) and runs **one** combined pattern pass over all of it (:mod:`.scan`); a detector
reads the hits of its own patterns (``ctx.hits("name")``) and the leaves (``ctx.leaves``) and
confirms with validators (Luhn, checksums, libphonenumber, JWT header decoding ...).

Detectors run in registry order; a later detector may read ``ctx.findings`` (posture checks
use the data findings of the same transaction).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
CONFIDENCES = ("low", "medium", "high")

# OWASP API Security Top 10 (2023) ids used as categories
API2 = "API2:2023 Broken Authentication"
API3 = "API3:2023 Broken Object Property Level Authorization"
API8 = "API8:2023 Security Misconfiguration"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector saw in one transaction.  ``evidence`` is already redacted;
    ``value_hash`` is a keyed hash of the raw value (for matching, never reversible here)."""

    detector: str
    kind: str  # what exactly: "visa", "python", "mysql", "aws_access_key_id", ...
    severity: str
    confidence: str
    category: str | None
    location: str  # "response.body:$.user.email", "request.header:authorization", "response.body"
    evidence: str
    value_hash: str | None = None
    title: str = ""
    scope: str = "endpoint"  # "service": a property of the server (a banner), kept once per service


@dataclass(slots=True)
class Leaf:
    """One scalar of the transaction with where it was found.

    ``location`` is the dedup-stable place (array indexes shown as ``[*]``); ``key`` is the
    normalised key name (lower case, letters and digits only: ``dateOfBirth`` -> ``dateofbirth``),
    ``words`` the key split into words (``("date", "of", "birth")``); ``parent`` the same for
    the enclosing object's key.  ``value`` is text (numbers are given as their decimal text and
    flagged ``number``)."""

    location: str
    value: str
    key: str = ""
    words: tuple[str, ...] = ()
    parent: str = ""
    parent_words: tuple[str, ...] = ()
    number: bool = False
    side: str = "response"  # "request" | "response"
    part: str = "body"  # "body" | "header" | "cookie" | "query" | "path"
    raw_name: str = ""  # header / cookie / parameter name as seen
    start: int = 0  # offset of the value in the combined scan text

    @property
    def text_body(self) -> bool:
        return self.part == "body" and not self.key and "$" not in self.location


@dataclass(slots=True)
class Hit:
    group: str
    text: str
    leaf: Leaf
    start: int  # offset inside leaf.value
    end: int


class Detector(Protocol):
    name: str
    patterns: dict[str, str]
    needs: dict[str, tuple[str, ...] | str]

    def detect(self, ctx: Any) -> Iterable[Finding]: ...


class Base:
    """Convenience base: defaults and a ``finding`` helper."""

    name = "base"
    patterns: dict[str, str] = {}
    # per pattern group, a prefilter: literals one of which must occur, or a regex that must
    # find something; groups without one always run (see scan.py)
    needs: dict[str, tuple[str, ...] | str] = {}
    # per pattern group, what every match contains: literals (one of them; "(?i)x" ignores
    # case), a regex, a minimum number of ASCII digits, or (digits, regex): both; a value
    # without it is not scanned for that group.  Groups without one are scanned in every value
    # (correct, slower).
    necessary: dict[str, tuple[str, ...] | str | int] = {}
    # the pattern groups whose hits detect() reads; None: always run.  With a tuple, the
    # registry skips the detector when none of them matched and no leaf has a key it wants.
    reads: tuple[str, ...] | None = None
    # key-driven detectors: wants_key(leaf) -> bool on a leaf that has only key, words,
    # parent and parent_words set: does detect() read values under this key?  (None: no.)
    wants_key = None
    category: str | None = None
    severity = "medium"

    def detect(self, ctx: Any) -> Iterator[Finding]:  # pragma: no cover - interface
        return iter(())

    def finding(
        self,
        ctx: Any,
        location: str,
        kind: str,
        evidence: str,
        value: str | None = None,
        *,
        severity: str | None = None,
        confidence: str = "high",
        category: str | None = None,
        title: str = "",
        scope: str = "endpoint",
    ) -> Finding:
        # the same finding again (a repeated body, header or token): one dict lookup (a Finding
        # is immutable; the key holds the hasher, whose key makes the value hash)
        key = (self.name, location, kind, evidence, value, severity, confidence, category, title, scope,
               getattr(ctx, "hash", None))
        try:
            got = _FINDINGS.get(key)
        except TypeError:  # an unhashable value: not remembered
            got = key = None
        if got is None:
            got = Finding(
                detector=self.name,
                kind=kind,
                severity=severity or self.severity,
                confidence=confidence,
                category=category if category is not None else self.category,
                location=location,
                evidence=evidence[:300],
                value_hash=ctx.hash(value) if value else None,
                title=title,
                scope=scope,
            )
            if key is not None and len(evidence) + len(value or "") <= 1024:
                if len(_FINDINGS) >= 20_000:
                    _FINDINGS.clear()
                _FINDINGS[key] = got
        return got


_FINDINGS: dict[tuple, Finding] = {}  # Base.finding's memo


_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_key_cache: dict[str, tuple[str, tuple[str, ...]]] = {}


def key_words(name: str) -> tuple[str, tuple[str, ...]]:
    """``"dateOfBirth"`` -> ``("dateofbirth", ("date", "of", "birth"))`` (cached)."""
    got = _key_cache.get(name)
    if got is None:
        words = tuple(w.lower() for w in _WORDS.findall(name))
        got = ("".join(words), words)
        if len(_key_cache) < 50_000:
            _key_cache[name] = got
    return got
