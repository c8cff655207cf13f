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
  digits (a card number has 12, an SSN 9, a phone number 6), possibly with a small regex of
  the format's shape (an SSN: 9 digits and ``123-45-6789``).  The values are joined and the
  conditions are tested on the joined text with C-level calls (``str.find``, ``translate``,
  ``split``); a value that meets no condition of any selected group cannot produce a match
  and is not scanned at all; a value that meets some is scanned with the alternation of the
  selected groups it may match (plus the eaters), which yields exactly the matches the full
  alternation would.  A value that an eater consumes whole (an ISO timestamp, a UUID) has no
  matches.  Results are memoised per (value, groups) in a bounded dict: header values,
  enum-like JSON values and repeated strings cost a dict lookup; so are the conditions a
  value meets, by its shape (ASCII digits as ``0``, when no condition tells digits apart):
  ids in paths and tokens that differ only in their digits cost a lookup too.

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
MEMO_MAX_LEN = 1024  # longer values are not memoised by their marks (see Scanner._value_marks)
_UNKNOWN = object()
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
# to keep ASCII digits and the NUL separator of ASCII text (as bytes: bytes.translate deletes
# in C, several times faster than str.translate)
_NON_DIGITS = bytes(c for c in range(256) if not (48 <= c <= 57 or c == 0))
_ZERO_DIGITS = bytes.maketrans(b"123456789", b"000000000")


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
        # a minimum of digits may come with a regex every match also has a match of:
        # (digits, regex), e.g. a phone number's separator or ``+``
        self.value_also: dict[str, re.Pattern] = {}
        for name, cond in (necessary or {}).items():
            if name not in self.groups or name[0] == "_":
                continue
            if isinstance(cond, tuple) and cond and isinstance(cond[0], int):
                self.value_digits[name] = cond[0]
                self.value_also[name] = re.compile(cond[1])
            elif isinstance(cond, int):
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
        self._plans: dict[tuple, tuple] = {}
        self._marks_memo: dict[str, frozenset[str] | None] = {}
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
        # whether no necessary condition tells one ASCII digit from another (no digit in a
        # literal, none in a regex outside "0-9" and counts {m,n}): then a value's marks are
        # those of the value with its digits replaced by "0" (see _value_marks)
        pats = [rx.pattern for rx in (*self.value_rx.values(), *self.value_also.values())]
        lits = [x for exact, folded in self.value_lits.values() for x in (*exact, *folded)]
        self._digit_blind = not any(
            re.search(r"[0-9]", re.sub(r"\{\d+(?:,\d*)?\}|0-9", "", p)) for p in pats
        ) and not any(re.search(r"[0-9]", x) for x in lits)
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
            # a group whose necessary condition the text does not meet cannot match in it
            may = tuple(g for g in only if self._may_match(text, g))
            got = list(self.finditer(text, 0, may)) if may else []
            self._remember(key, got)
        return got

    def _may_match(self, v: str, g: str) -> bool:
        """Does ``v`` meet the necessary condition of group ``g`` (as ``_marks`` tests it)?"""
        lits = self.value_lits.get(g)
        if lits is not None:
            exact, folded = lits
            if any(x in v for x in exact):
                return True
            if folded:
                if not v.isascii():
                    return True
                lowered = v.lower()
                return any(f in lowered for f in folded)
            return False
        rx = self.value_rx.get(g)
        if rx is not None:
            return rx.search(v) is not None
        least = self.value_digits.get(g)
        if least is not None:
            if v.isascii() and _NUL not in v and len(v.encode().translate(None, _NON_DIGITS)) < least:
                return False
            also = self.value_also.get(g)
            return also is None or also.search(v) is not None
        return True

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
        marks = self._value_marks(values)
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
                    marks[i] = (m & chosen) or None
        eaters = tuple(
            n for n in self.eaters if n in self.always or any(x in text for x in self._need_lits[n])
        )
        return self._run(values, marks, eaters, chosen)

    def _value_marks(self, values: list[str]) -> list[frozenset[str] | None]:
        """``_marks`` of every candidate group for each value: what a value may match depends on
        the value alone, so it is remembered per (short) value; the others are marked together."""
        memo = self._marks_memo
        get = memo.get
        blind = self._digit_blind
        out: list = []
        miss: list[tuple[int, str]] = []
        for v in values:
            m = get(v, _UNKNOWN)
            if m is _UNKNOWN:
                # the conditions do not tell ASCII digits apart: "/users/1234" is marked as
                # "/users/0000" (ids, tokens and timestamps in a value cost a lookup)
                k = v.encode().translate(_ZERO_DIGITS).decode() if blind and v.isascii() else v
                if k is not v:
                    m = get(k, _UNKNOWN)
                if m is _UNKNOWN:
                    miss.append((len(out), k))
            out.append(m)
        if miss:
            sub = [values[j] for j, _ in miss] if len(miss) < len(values) else values
            got = self._marks(sub, _NUL.join(sub) if len(sub) > 1 else sub[0], self._candidates)
            if len(memo) >= CACHE_SIZE:
                memo.clear()
            for (j, k), m in zip(miss, got):
                m = frozenset(m) if m else None
                out[j] = m
                if len(k) <= MEMO_MAX_LEN:
                    memo[k] = m
        return out

    def _plan(self, groups) -> tuple:
        """How ``_marks`` tests the necessary conditions of ``groups`` (cached per group set):
        literal anchors (rarest character -> literals and their groups), folded literals,
        regexes, groups without a condition, and the digit tiers."""
        key = tuple(groups)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        wanted = set(groups)
        anchors: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for c, lits in self._anchors:
            for lit in lits:
                owners = tuple(g for g in self._lit_owners[lit] if g in wanted)
                if owners:
                    anchors.setdefault(c, []).append((lit, owners))
        folded, rxs, unconditioned, digit_groups = [], [], [], []
        for g in groups:
            if g in self.value_digits:
                digit_groups.append((g, self.value_digits[g]))
            elif g in self.value_lits:
                if self.value_lits[g][1]:
                    folded.append((g, self.value_lits[g][1]))
            elif g in self.value_rx:
                rxs.append((g, self.value_rx[g]))
            else:
                unconditioned.append(g)
        digits = None
        if digit_groups:
            least = min(d for _, d in digit_groups)
            most = max(d for _, d in digit_groups)
            # tier[c]: the digit groups a value with c digits may match; also[c]: those of them
            # with a further condition (a regex)
            tier = [frozenset(g for g, d in digit_groups if c >= d) for c in range(most + 1)]
            also = [frozenset(g for g in t if g in self.value_also) for t in tier]
            digits = (least, most, tier, also)
        plan = self._plans[key] = (anchors, frozenset(anchors), folded, rxs, unconditioned, digits)
        return plan

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
        anchors, anchor_chars, folded, rxs, unconditioned, digits = self._plan(groups)

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

        # the anchors in the text: one C pass over a short text, else one memchr per anchor
        present = anchor_chars.intersection(text) if len(text) < 4096 else [c for c in anchors if c in text]
        for c in present:
            for lit, owners in anchors[c]:
                if lit in text:
                    for g in owners:
                        i = text.find(lit)
                        while i >= 0:
                            i = text.find(lit, mark_from(i, g))
        if folded:
            ascii_text = text.isascii()
            lowered = text.lower() if ascii_text else None
            for g, lits in folded:
                if not ascii_text:  # lower() may change lengths: every non-ASCII value may match
                    for j, v in enumerate(values):
                        if not v.isascii() or any(f in v.lower() for f in lits):
                            mark(j, g)
                    continue
                for lit in lits:
                    i = lowered.find(lit)
                    while i >= 0:
                        i = lowered.find(lit, mark_from(i, g))
        for g, rx in rxs:
            m = rx.search(text)
            while m:
                nxt = mark_from(m.start(), g)
                m = rx.search(text, nxt) if nxt < len(text) else None
        for g in unconditioned:  # no necessary condition known: scan every value
            for j in range(n):
                mark(j, g)
        if digits is not None:
            least, most, tier, also = digits
            if n == 1:
                v = values[0]
                ok = v.isascii() and _NUL not in v
                counts = [len(v.encode().translate(None, _NON_DIGITS)) if ok else most]
            elif text.isascii() and text.count(_NUL) == n - 1:  # (a NUL inside a value: per value)
                counts = list(map(len, text.encode().translate(None, _NON_DIGITS).split(b"\x00")))
            else:  # a non-ASCII value (\d is Unicode) or a NUL inside a value: count per value
                counts = [
                    len(v.encode().translate(None, _NON_DIGITS)) if v.isascii() and _NUL not in v else most
                    for v in values
                ]
            value_also = self.value_also
            for j, c in enumerate(counts):
                if c >= least:
                    if c > most:
                        c = most
                    t = tier[c]
                    if also[c]:  # groups with a further condition: tested on this value
                        v = values[j]
                        t = [g for g in t if g not in value_also or value_also[g].search(v)]
                        if not t:
                            continue
                    m = marks[j]
                    if m is None:
                        marks[j] = set(t)
                    else:
                        m.update(t)
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
