"""One pass over a transaction's text for every detector's patterns.

Each detector names the regular expressions it needs (``patterns = {"card": r"..."}``).  They
are joined into a single alternation of named groups and compiled once; a match is handed to
the detector that owns the group, which then validates it (a regex only nominates
candidates).  *Eaters* come first in the alternation: they consume things that are known not
to be sensitive but contain look-alike substrings (UUIDs, ISO timestamps, base64 data URIs),
so that, for example, the digits of a UUID are never read as a phone number.

Speed: CPython's ``re`` tries every branch of an alternation at every offset, so a branch
whose pattern cannot match is pure cost, and running the alternation over every byte of a
transaction costs about a microsecond per character.  Two cheap tests keep it away from text
that cannot match:

- per transaction, a *prefilter* (``needs``): literals of which one must occur (``"@"`` for
  emails, ``"eyJ"`` for JWTs, ``".php"`` for PHP errors; looked for with ``str.__contains__``,
  which is a C loop), or a small regex that must find something; only the groups whose
  prefilter passes go into the alternation (cached per set of groups);
- per value (:meth:`Scanner.scan_many`), a *necessary condition* (``necessary``): something
  every match of the group contains — literals, a small regex, or a minimum number of ASCII
  digits (a card number has 12, an SSN 9, a phone number 6).  The values are joined and the
  conditions are tested on the joined text with C-level calls (``str.find``, ``translate``,
  ``split``); a value that meets no condition of any selected group cannot produce a match
  and is not scanned at all; a value that meets some is scanned with the alternation of the
  selected groups it may match (plus the eaters), which yields exactly the matches the full
  alternation would.  A value that an eater consumes whole (an ISO timestamp, a UUID) has no
  matches.  Results are memoised per (value, groups) in a bounded dict: header values,
  enum-like JSON values and repeated strings cost a dict lookup.

google-re2 was measured and not used: it has no look-around, which the patterns need for
their boundaries (see docs/findings.md).
"""

from __future__ import annotations

import re
from bisect import bisect_right

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

CACHE_SIZE = 20_000  # memoised (value, groups) -> matches; cleared when full
# characters from most to least frequent in API text (JSON keys and values, headers): a
# literal is looked for only when its rarest character is there (a one-character ``in`` is
# a memchr; a longer needle costs about a nanosecond per byte of text)
_FREQUENT = ' "eatoinsrlcdhump,:0123456789gfyb.-_/vkwxjqzTESACRNIOLDPMUFHBGVWKYXJQZ'


def _rarest(lit: str) -> str:
    return max(lit, key=lambda c: _FREQUENT.find(c) if c in _FREQUENT else len(_FREQUENT))


def _by_anchor(lits) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out: dict[str, list[str]] = {}
    for lit in lits:
        out.setdefault(_rarest(lit), []).append(lit)
    return tuple((c, tuple(v)) for c, v in out.items())


_NUL = "\x00"
# keep ASCII digits and the NUL separator, drop every other ASCII character
_KEEP_DIGITS = str.maketrans({chr(c): None for c in range(128) if not (48 <= c <= 57 or c == 0)})


class Scanner:
    def __init__(
        self,
        groups: dict[str, str],
        needs: dict[str, object] | None = None,
        necessary: dict[str, object] | None = None,
    ):
        self.groups = dict(EATERS)
        for name, pat in groups.items():
            if name in self.groups:
                raise ValueError(f"pattern group {name!r} defined twice")
            self.groups[name] = pat
        needs = {**EATER_NEEDS, **(needs or {})}
        # literal prefilters of all groups: (literal, groups) pairs, longest first
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
        self._lit_items = sorted(self.by_literal.items(), key=lambda kv: -len(kv[0]))
        # kept for callers that used it: one alternation of all prefilter literals
        self.literals = re.compile("|".join(re.escape(x) for x, _ in self._lit_items))
        # per-value necessary conditions: literals (a leading "(?i)" = case-insensitive),
        # a regex, or a minimum number of ASCII digits; groups without one are always scanned
        self.value_lits: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.value_rx: dict[str, re.Pattern] = {}
        self.value_digits: dict[str, int] = {}
        for name, cond in (necessary or {}).items():
            if name not in self.groups or name[0] == "_":
                continue
            if isinstance(cond, int):
                self.value_digits[name] = cond
            elif isinstance(cond, str):
                self.value_rx[name] = re.compile(cond)
            else:
                exact = tuple(x for x in cond if not x.startswith("(?i)"))
                folded = tuple(x[4:].lower() for x in cond if x.startswith("(?i)"))
                self.value_lits[name] = (exact, folded)
        self.eaters = tuple(n for n in self.groups if n[0] == "_")
        # eaters first, then the rest in the given order (earlier wins at the same offset)
        self.source = "|".join(f"(?P<{name}>{pat})" for name, pat in self.groups.items())
        self._cache: dict[tuple[str, ...], re.Pattern] = {}
        self._memo: dict[tuple[str, tuple[str, ...]], list[tuple[str, int, int]]] = {}
        self._order = {n: i for i, n in enumerate(self.groups)}
        self._tiers: dict[tuple, list[frozenset[str]]] = {}
        # for scan_values: the non-eater groups, and how each one's prefilter is decided
        self._candidates = tuple(n for n in self.groups if n[0] != "_")
        self._need_lits: dict[str, tuple[str, ...]] = {n: () for n in self.groups}
        for lit, names in self.by_literal.items():
            for n in names:
                self._need_lits[n] += (lit,)
        self._need_lits = {n: lits for n, lits in self._need_lits.items() if lits}
        self._need_rx = dict(self.regex_needs)
        # the exact necessary literals of all groups, by rarest character -> owning groups
        owners: dict[str, list[str]] = {}
        for n, (exact, _folded) in self.value_lits.items():
            for lit in exact:
                owners.setdefault(lit, []).append(n)
        self._lit_owners = {lit: tuple(v) for lit, v in owners.items()}
        self._anchors = _by_anchor(owners)
        # groups whose prefilter is implied by their necessary condition: a value that meets
        # the condition passes the prefilter (every necessary literal contains a prefilter one)
        need = self._need_lits
        self._implied = {
            n
            for n, (exact, folded) in self.value_lits.items()
            if not folded and n in need and all(any(p in lit for p in need[n]) for lit in exact)
        }
        self._implied |= {
            n
            for n, rx in self.value_rx.items()
            if n in self._need_rx and rx.pattern == self._need_rx[n].pattern
        }
        # a value holding one of these lets the error-only groups run below status 400 (see
        # scan_values): the debug page group's literals, when they decide it alone
        dbg = self.value_lits.get("dbg")
        self.debug_literals: tuple[str, ...] | None = (
            dbg[0] if dbg is not None and not dbg[1] and "dbg" in self._implied else None
        )

    def select(self, text: str, status: int = 0) -> tuple[str, ...]:
        """The groups whose prefilter passes on ``text``, in alternation order."""
        chosen = set(self.always)
        for lit, names in self._lit_items:
            if not names <= chosen and lit in text:
                chosen |= names
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
        yield from self.scan_many([text], names)[0]

    def scan_only(self, text: str, only: tuple[str, ...]) -> list[tuple[str, int, int]]:
        """``finditer(text, only=only)`` as a list, memoised per value."""
        key = (text, only)
        got = self._memo.get(key)
        if got is None:
            got = list(self.finditer(text, 0, only))
            self._remember(key, got)
        return got

    def _remember(self, key, got) -> None:
        if len(self._memo) >= CACHE_SIZE:
            self._memo.clear()
        self._memo[key] = got

    # ---- per value ---------------------------------------------------------------------------
    def scan_many(self, values: list[str], names: tuple[str, ...]) -> list[list[tuple[str, int, int]]]:
        """For each value, the (group, start, end) non-eater matches of the alternation of
        ``names`` (the groups selected for the transaction), as if each value were scanned on
        its own; values that meet no group's necessary condition are not scanned."""
        if not values:
            return []
        text = _NUL.join(values) if len(values) > 1 else values[0]
        groups = [n for n in names if n[0] != "_"]
        marks = self._marks(values, text, groups)
        return self._run(values, marks, tuple(n for n in names if n[0] == "_"), set(groups))

    def scan_values(self, values: list[str], status: int = 0) -> list[list[tuple[str, int, int]]]:
        """``scan_many(values, select(NUL.join(values), status))`` without the separate
        prefilter pass: the necessary conditions are tested first, and a group's prefilter
        only for the groups that some value may match (for most groups the prefilter is its
        necessary condition, so passing one passes the other)."""
        if not values:
            return []
        text = _NUL.join(values) if len(values) > 1 else values[0]
        marks = self._marks(values, text, self._candidates)
        present = set()
        for m in marks:
            if m is not None:
                present |= m
        if not present:
            return [[] for _ in values]
        chosen = set()
        for g in present:
            if g in self._implied or g in self.always:
                chosen.add(g)
            elif g in self._need_lits:
                if any(lit in text for lit in self._need_lits[g]):
                    chosen.add(g)
            elif g in self._need_rx:
                if self._need_rx[g].search(text):
                    chosen.add(g)
        if status < 400 and "dbg" not in chosen:
            chosen -= ERROR_ONLY
        if chosen != present:
            for i, m in enumerate(marks):
                if m is not None:
                    m &= chosen
                    if not m:
                        marks[i] = None
        eaters = tuple(
            n for n in self.eaters if n in self.always or any(x in text for x in self._need_lits[n])
        )
        return self._run(values, marks, eaters, chosen)

    def _marks(self, values: list[str], text: str, groups) -> list[set[str] | None]:
        """Per value, the groups among ``groups`` whose necessary condition it meets (None: none)."""
        n = len(values)
        marks: list[set[str] | None] = [None] * n
        if n > 1:
            starts = []
            pos = 0
            for v in values:
                starts.append(pos)
                pos += len(v) + 1
        else:
            starts = [0]
        ascii_text = text.isascii()

        def mark(i: int, g: str) -> None:
            m = marks[i]
            if m is None:
                marks[i] = {g}
            else:
                m.add(g)

        def mark_from(pos: int, g: str) -> int:
            """Mark the value holding offset ``pos``; return where the next value starts."""
            i = bisect_right(starts, pos) - 1 if n > 1 else 0
            mark(i, g)
            return starts[i + 1] if i + 1 < n else len(text)

        lowered = None
        digit_groups = []
        wanted = set(groups)
        for c, lits in self._anchors:
            if c in text:
                for lit in lits:
                    if lit in text:
                        for g in self._lit_owners[lit]:
                            if g in wanted:
                                i = text.find(lit)
                                while i >= 0:
                                    i = text.find(lit, mark_from(i, g))
        for g in groups:
            if g in self.value_digits:
                digit_groups.append((g, self.value_digits[g]))
            elif g in self.value_lits:
                folded = self.value_lits[g][1]
                if folded:
                    if not ascii_text:  # lower() may change lengths: every non-ASCII value may match
                        for j, v in enumerate(values):
                            if not v.isascii() or any(f in v.lower() for f in folded):
                                mark(j, g)
                        continue
                    if lowered is None:
                        lowered = text.lower()
                    for lit in folded:
                        i = lowered.find(lit)
                        while i >= 0:
                            i = lowered.find(lit, mark_from(i, g))
            elif g in self.value_rx:
                rx = self.value_rx[g]
                m = rx.search(text)
                while m:
                    nxt = mark_from(m.start(), g)
                    m = rx.search(text, nxt) if nxt < len(text) else None
            else:  # no necessary condition known: scan every value
                for j in range(n):
                    mark(j, g)
        if digit_groups:
            least = min(d for _, d in digit_groups)
            most = max(d for _, d in digit_groups)
            # tier[c]: the digit groups a value with c digits may match
            tkey = tuple(digit_groups)
            tier = self._tiers.get(tkey)
            if tier is None:
                tier = self._tiers[tkey] = [
                    frozenset(g for g, d in digit_groups if c >= d) for c in range(most + 1)
                ]
            if ascii_text and text.count(_NUL) == n - 1:  # (a NUL inside a value: count per value)
                counts = list(map(len, text.translate(_KEEP_DIGITS).split(_NUL)))
            else:  # a non-ASCII value (\d is Unicode) or a NUL inside a value: count per value
                counts = [
                    len(v.translate(_KEEP_DIGITS)) if v.isascii() and _NUL not in v else most for v in values
                ]
            for j, c in enumerate(counts):
                if c >= least:
                    t = tier[c if c < most else most]
                    m = marks[j]
                    if m is None:
                        marks[j] = set(t)
                    else:
                        m |= t
        return marks

    def _run(
        self, values: list[str], marks: list, eaters: tuple[str, ...], chosen: set[str]
    ) -> list[list[tuple[str, int, int]]]:
        """Scan each marked value with the alternation of the eaters and the groups ``chosen``
        for the transaction.  A group a value is not marked for cannot match in it, so the
        matches are those of the eaters and its marked groups (the memo key); one alternation
        per transaction keeps the number of compiled alternations small."""
        out: list[list[tuple[str, int, int]]] = [[] for _ in values]
        memo = self._memo
        order = self._order
        eat = self.compiled(eaters) if eaters else None
        present = set()
        for m in marks:
            if m is not None:
                present |= m
        full = eaters + tuple(sorted(present & chosen if chosen else present, key=order.__getitem__))
        for j, m in enumerate(marks):
            if m is None:
                continue
            v = values[j]
            chosen = tuple(sorted(m, key=order.__getitem__))
            key = (v, eaters + chosen)
            got = memo.get(key)
            if got is None:
                if eat is not None:
                    e = eat.match(v)
                    if e is not None and e.end() == len(v):  # an eater takes the whole value
                        self._remember(key, [])
                        continue
                rx = self.compiled(full)
                got = [(m.lastgroup, m.start(), m.end()) for m in rx.finditer(v) if m.lastgroup[0] != "_"]
                self._remember(key, got)
            out[j] = got
        return out
