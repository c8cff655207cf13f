"""One pass over a transaction's text for every detector's patterns.

Each detector names the regular expressions it needs (``patterns = {"card": r"..."}``).  They
are joined into a single alternation of named groups and compiled once, and the text of a
transaction (all its leaves joined by NUL) is scanned once with ``finditer``: a match is
handed to the detector that owns the group, which then validates it (a regex only nominates
candidates).  *Eaters* come first in the alternation: they consume things that are known not
to be sensitive but contain look-alike substrings (UUIDs, ISO timestamps, hex digests, base64
data URIs), so that, for example, the digits of a UUID are never read as a phone number.

Speed: CPython's ``re`` tries every branch of an alternation at every offset, so a group
whose pattern cannot match is pure cost.  A group may therefore have a *prefilter* (``needs``):
literals of which one must occur (``"@"`` for emails, ``"eyJ"`` for JWTs, ``".php"`` for PHP
errors; all groups' literals are looked for together, in one alternation of literals), or a
small regex that must find something; only the groups whose prefilter passes go into the
alternation compiled for this text (cached per set of groups).  The digit-based groups (SSN,
card, phone, national ids, IPv4) have none: measured, their prefilters cost more than they
saved.  google-re2 was measured and not used: it has no look-around, which the patterns
need for their boundaries (see docs/findings.md).
"""

from __future__ import annotations

import re

EATERS = {
    "_datauri": r"data:[\w/+.-]{1,60};base64,[A-Za-z0-9+/=\s]{8,}",
    "_uuid": r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
    "_isotime": r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?",
}
# Hex digests and raw base64 need no eater: every value pattern refuses to start or end inside
# a word ((?<![\w...]) ... (?![\w...])), so digits inside "a3f9...", "iVBORw0..." never match.
EATER_NEEDS = {"_datauri": ("data:",)}  # the other eaters are cheaper to run than to prefilter
# groups only worth running in error responses (or with a debug page): status < 400 drops them
ERROR_ONLY = frozenset({"banner"})
Need = "tuple[str, ...] | str | None"


class Scanner:
    def __init__(self, groups: dict[str, str], needs: dict[str, object] | None = None):
        self.groups = dict(EATERS)
        for name, pat in groups.items():
            if name in self.groups:
                raise ValueError(f"pattern group {name!r} defined twice")
            self.groups[name] = pat
        needs = {**EATER_NEEDS, **(needs or {})}
        # literal prefilters of all groups are checked together: one alternation of literals
        # (CPython skips fast over offsets where no literal can start)
        self.by_literal: dict[str, set[str]] = {}
        self.regex_needs: list[tuple[str, re.Pattern]] = []
        self.always: set[str] = set()
        for name in self.groups:
            need = needs.get(name)
            if need is None:
                self.always.add(name)
            elif isinstance(need, str):
                self.regex_needs.append((name, re.compile(need)))
            else:
                for lit in need:
                    self.by_literal.setdefault(lit, set()).add(name)
        self.literals = re.compile(
            "|".join(re.escape(x) for x in sorted(self.by_literal, key=len, reverse=True))
        )
        # eaters first, then the rest in the given order (earlier wins at the same offset)
        self.source = "|".join(f"(?P<{name}>{pat})" for name, pat in self.groups.items())
        self._cache: dict[tuple[str, ...], re.Pattern] = {}

    def select(self, text: str, status: int = 0) -> tuple[str, ...]:
        """The groups whose prefilter passes on ``text``, in alternation order."""
        chosen = set(self.always)
        for lit in set(self.literals.findall(text)):
            chosen |= self.by_literal[lit]
        for name, rx in self.regex_needs:
            if name not in chosen and rx.search(text):
                chosen.add(name)
        if status < 400 and "dbg" not in chosen:
            chosen -= ERROR_ONLY
        return tuple(n for n in self.groups if n in chosen)

    def compiled(self, names: tuple[str, ...]) -> re.Pattern | None:
        rx = self._cache.get(names)
        if rx is None and names:
            if len(self._cache) > 512:
                self._cache.clear()
            rx = self._cache[names] = re.compile("|".join(f"(?P<{n}>{self.groups[n]})" for n in names))
        return rx

    def finditer(self, text: str, status: int = 0, only: tuple[str, ...] | None = None):
        """Yield (group, start, end) for every non-eater match (``only``: just these groups, no
        prefilter: for short single-token texts the prefilter costs more than the match)."""
        if only is not None:
            names = tuple(n for n in only if n in self.groups)
            for m in self.compiled(names).finditer(text) if names else ():
                yield m.lastgroup, m.start(), m.end()
            return
        names = self.select(text, status)
        if not any(n[0] != "_" for n in names):
            return
        for m in self.compiled(names).finditer(text):
            g = m.lastgroup
            if g[0] != "_":
                yield g, m.start(), m.end()
