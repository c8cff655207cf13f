"""Path templating: ``/users/1234/orders`` and ``/users/98/orders`` are one endpoint,
``/users/{user_id}/orders``.

Strategy, in two stages:

1. **Typed classifiers** (per segment, per transaction, cached): integers, decimals, UUIDs,
   24-hex object ids, long hex hashes, dates and date-times, emails, IPv4 addresses,
   base64/opaque tokens, mixed ids (``KTN-30907``: at least 6 characters with 3 digits and a
   letter), and segments no human would write as a fixed name (percent-escapes, spaces,
   commas, over 40 characters) become typed placeholders at once: ``/users/{int}/orders``.
   Version segments (``v1``, ``v2.1``, ``1.0`` near the root) and the rules file's literal
   words are never typed.  The result is the path's *skeleton*.

2. **Sibling evidence** (at flush/finish, over the aggregate of every skeleton the service
   ever answered, so the result does not depend on arrival order or on how runs were split):
   the skeletons form a trie.  Walking it from the root, at each position:

   - typed placeholders of one position merge into one parameter (``int`` + ``number`` ->
     ``number``, anything else mixed -> ``string``);
   - the literal siblings are grouped by behaviour: two siblings are *alike* when, for each
     status class (2xx, 4xx, ...) both subtrees answered with, their response content types
     overlap, and, when both returned JSON objects on success, the key paths of those objects
     overlap (Jaccard >= 0.5).  A group of alike
     siblings becomes the parameter when it is large enough: 3 with JSON evidence, 5 when
     the responses carry no JSON keys (redirects, empty bodies, errors), 1 when the
     position already holds a string-typed parameter that the group is alike to (or a
     numeric one whose JSON answers the group's match, or 2 alike to a numeric one when the
     position is itself under a parameter), 2 whose own children are plain
     names that no two of them share (``/repos/alice/x``, ``/repos/bob/y``), and any
     30 siblings regardless of behaviour (so one template never splits into thousands of
     rows);
   - never at the first position (``/get`` and ``/post`` are different endpoints even when
     they answer alike);
   - reserved words (``me``, ``search``, ``login``, ... and version segments) never join a
     parameter; common API vocabulary (``users``, ``png``, ``delete``, ...) joins only a
     group that qualifies without it (``/users/search`` stays literal next to
     ``/users/{user}``; ``/image/png`` and ``/image/jpeg`` answer different content types and
     stay apart; ``/api/users`` and ``/api/orders`` return different JSON and stay apart);
   - merged siblings pool their children, so ``/basic-auth/alice/pw1`` and
     ``/basic-auth/bob/pw2`` give ``/basic-auth/{param}/{param}`` (the second position sees
     the pooled variety).

   Only skeletons that the service answered with a status showing the path exists (2xx,
   3xx, 5xx, 401, 403, 405, and 400/409/412/415/422: the route refused the content) are
   evidence; a scanner's 404 storm is matched against the learned templates afterwards and
   never creates them.

A rules file (:mod:`discovery.rules`) can force templates (applied first), forbid templates
(the collapse that would produce them is skipped), add literal words and exclude paths.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# ---- typed classifiers ---------------------------------------------------------------------

INT, NUMBER, UUID, OBJECTID, HEX, DATE, DATETIME, EMAIL, IPV4, TOKEN, MIXED, STR = (
    "int",
    "number",
    "uuid",
    "objectid",
    "hex",
    "date",
    "date-time",
    "email",
    "ipv4",
    "token",
    "mixed",
    "string",
)
TYPES = (INT, NUMBER, UUID, OBJECTID, HEX, DATE, DATETIME, EMAIL, IPV4, TOKEN, MIXED, STR)
PLACEHOLDERS = {f"{{{t}}}": t for t in TYPES}
PARAM = "{string}"  # a parameter learned from sibling evidence (string values)

_INT = re.compile(r"-?\d{1,30}\Z")
_NUMBER = re.compile(r"-?\d+\.\d+\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_HEX = re.compile(r"[0-9a-fA-F]+\Z")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\Z")
_EMAIL = re.compile(r"[^@\s/]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")
_B64 = re.compile(r"[A-Za-z0-9+/_=-]+\Z")
_WORDISH = re.compile(r"[A-Za-z0-9._~-]+\Z")
_VERSION = re.compile(r"[vV]\d{1,3}([._]\d{1,3}){0,2}([a-z]+\d*)?\Z")
_DOTTED_VERSION = re.compile(r"\d{1,2}(\.\d{1,3}){1,2}\Z")
_VERSION_PARENTS = frozenset(("api", "rest", "apis", "version", "versions"))

# Words that name an action or a well-known singleton next to ids: never part of a parameter.
RESERVED = frozenset(
    [
        "me", "self", "current", "mine", "my", "all", "new", "latest", "default", "count", "total",
        "stats", "summary", "search", "query", "find", "filter", "lookup", "login", "logout", "signin",
        "signout", "signup", "register", "refresh", "verify", "callback", "health", "healthz", "ping",
        "ready", "readyz", "live", "livez", "status", "metrics", "version", "info", "config", "settings",
        "export", "import", "batch", "bulk", "upload", "download", "sync", "validate", "preview",
        "history", "recent", "popular", "trending", "random", "api", "rest", "graphql", "rpc", "public",
        "private", "internal", "admin",
    ]
)

# Common API vocabulary: joins a parameter only when the position qualifies without it.
VOCABULARY = frozenset(
    [
        "account", "accounts", "activity", "auth", "oauth", "oauth2", "token", "tokens", "authorize",
        "address", "addresses", "admin", "agent", "agents", "alert", "alerts", "anything", "app", "apps",
        "archive", "article", "articles", "asset", "assets", "attachment", "attachments", "audit",
        "authors", "author", "avatar", "backup", "balance", "basic", "bearer", "billing", "blob", "blobs",
        "blog", "board", "boards", "book", "books", "brotli", "bucket", "buckets", "build", "builds",
        "bytes", "cache", "calendar", "campaign", "card", "cards", "cart", "carts", "catalog",
        "categories", "category", "channel", "channels", "chat", "checkout", "child", "children", "cities",
        "city", "client", "clients", "comment", "comments", "company", "companies", "config", "configs",
        "contact", "contacts", "content", "contents", "cookie", "cookies", "country", "countries",
        "coupon", "coupons", "course", "courses", "create", "csv", "customer", "customers", "dashboard",
        "data", "database", "databases", "deflate", "delay", "delete", "deny", "deploy", "deployment",
        "deployments", "detail", "details", "device", "devices", "digest", "document", "documents",
        "domain", "domains", "drip", "edit", "email", "emails", "encoding", "endpoint", "endpoints",
        "entries", "entry", "event", "events", "feed", "feeds", "feature", "features", "file", "files",
        "flag", "flags", "folder", "folders", "follow", "followers", "following", "form", "forms",
        "friends", "get", "gif", "gzip", "group", "groups", "headers", "help", "hook", "hooks", "html",
        "ico", "image", "images", "index", "inventory", "invite", "invites", "invoice", "invoices", "ip",
        "issue", "issues", "item", "items", "job", "jobs", "jpeg", "jpg", "json", "key", "keys", "label",
        "labels", "language", "languages", "lead", "leads", "like", "likes", "link", "links", "list",
        "lists", "location", "locations", "log", "logs", "map", "maps", "media", "member", "members",
        "message", "messages", "meta", "method", "methods", "model", "models", "module", "modules", "news",
        "node", "nodes", "note", "notes", "notification", "notifications", "object", "objects", "offer",
        "offers", "option", "options", "order", "orders", "org", "orgs", "organization", "organizations",
        "owner", "owners", "package", "packages", "page", "pages", "password", "patch", "payment",
        "payments", "pdf", "permission", "permissions", "person", "persons", "photo", "photos", "pipeline",
        "pipelines", "plan", "plans", "png", "policies", "policy", "post", "posts", "preference",
        "preferences", "price", "prices", "product", "products", "profile", "profiles", "project",
        "projects", "property", "properties", "put", "range", "rate", "rates", "receipt", "receipts",
        "record", "records", "redirect", "release", "releases", "remove", "report", "reports", "repos",
        "repository", "request", "requests", "resource", "resources", "response", "review", "reviews",
        "role", "roles", "room", "rooms", "rule", "rules", "run", "runs", "schedule", "schedules",
        "schema", "schemas", "score", "scores", "secret", "secrets", "service", "services", "session",
        "sessions", "set", "share", "shares", "shipment", "shipments", "shop", "site", "sites", "sku",
        "skus", "snapshot", "snapshots", "source", "sources", "space", "spaces", "spec", "stage", "stages",
        "stock", "store", "stores", "stream", "subscription", "subscriptions", "svg", "tag", "tags",
        "task", "tasks", "team", "teams", "template", "templates", "tenant", "tenants", "test", "tests",
        "text", "thread", "threads", "ticket", "tickets", "time", "timeline", "topic", "topics", "trace",
        "transaction", "transactions", "transfer", "transfers", "tree", "trees", "txt", "type", "types",
        "update", "upload", "user", "users", "utf8", "uuid", "value", "values", "variant", "variants",
        "vendor", "vendors", "video", "videos", "view", "views", "vote", "votes", "wallet", "wallets",
        "webhook", "webhooks", "webp", "widget", "widgets", "workflow", "workflows", "workspace",
        "workspaces", "xml", "zip", "zone", "zones",
    ]
)

STATIC_EXT = {
    "css": "style",
    "scss": "style",
    "less": "style",
    "js": "script",
    "mjs": "script",
    "cjs": "script",
    "map": "sourcemap",
    "ts": "script",
    "png": "image",
    "jpg": "image",
    "jpeg": "image",
    "gif": "image",
    "svg": "image",
    "ico": "image",
    "webp": "image",
    "avif": "image",
    "bmp": "image",
    "tif": "image",
    "tiff": "image",
    "apng": "image",
    "woff": "font",
    "woff2": "font",
    "ttf": "font",
    "otf": "font",
    "eot": "font",
    "mp4": "media",
    "webm": "media",
    "mp3": "media",
    "wav": "media",
    "ogg": "media",
    "m4a": "media",
    "flac": "media",
    "mov": "media",
    "avi": "media",
}


def classify_segment(seg: str, position: int = 1, prev: str = "") -> str | None:
    """The type of a path segment that is obviously a value, or None for a literal.

    ``position`` is the segment's index and ``prev`` the segment before it: ``1.0`` is a
    version at the root or after ``api``/``rest``, a number elsewhere."""
    n = len(seg)
    if n == 0:
        return None
    c0 = seg[0]
    if c0.isdigit() or c0 == "-":
        if _INT.match(seg):
            return INT
        if _NUMBER.match(seg):
            if (position == 0 or prev.lower() in _VERSION_PARENTS) and _DOTTED_VERSION.match(seg):
                return None  # /1.0/users, /api/2.1/...
            return NUMBER
        if n == 10 and _DATE.match(seg):
            return DATE
        if n >= 16 and _DATETIME.match(seg):
            return DATETIME
    if c0 in "vV" and _VERSION.match(seg):
        return None
    if n == 36 and _UUID.match(seg):
        return UUID
    if n >= 16 and _HEX.match(seg) and any(ch.isdigit() for ch in seg):
        return OBJECTID if n == 24 else HEX
    if "@" in seg and _EMAIL.match(seg):
        return EMAIL
    if not _WORDISH.match(seg):
        if seg.count(".") == 3:
            try:
                ipaddress.IPv4Address(seg)
                return IPV4
            except ValueError:
                pass
        if n >= 16 and _B64.match(seg):
            return TOKEN
        return STR  # percent-escapes, spaces, commas, colons, unicode: nobody names a route like that
    if seg.count(".") == 3 and seg.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(seg)
            return IPV4
        except ValueError:
            pass
    if n > 40:
        return STR
    digits = sum(ch.isdigit() for ch in seg)
    if n >= 16 and digits and _B64.match(seg) and "." not in seg:
        return TOKEN
    if n >= 6 and digits >= 3 and digits < n and "." not in seg:
        return MIXED
    if n >= 5 and digits and digits < n and _transitions(seg) >= 2:
        return MIXED  # fmb5ir, km69d: digits inside letters (oauth2, utf8, x509 have one switch)
    if (
        n >= 20
        and _B64.match(seg)
        and "." not in seg
        and any(ch.isupper() for ch in seg)
        and any(ch.islower() for ch in seg)
        and not seg.isalpha()
    ):
        return TOKEN
    return None


def _transitions(seg: str) -> int:
    """How often a segment switches between letters and digits (``ab12cd`` -> 2)."""
    out, prev = 0, None
    for ch in seg:
        k = ch.isdigit() if ch.isalnum() else None
        if k is None:
            prev = None
            continue
        if prev is not None and k != prev:
            out += 1
        prev = k
    return out


def split_path(path: str) -> list[str]:
    """``/a//b/`` -> ``['a', 'b']`` (query and fragment must already be removed)."""
    return [s for s in path.split("/") if s]


def static_kind(path: str) -> str | None:
    """``/assets/app.3f2a.js`` -> ``"script"``; None for anything that is not a static asset."""
    last = path.rsplit("/", 1)[-1]
    dot = last.rfind(".")
    if dot <= 0:
        return None
    return STATIC_EXT.get(last[dot + 1 :].lower())


def is_placeholder(seg: str) -> bool:
    return seg in PLACEHOLDERS


def join_types(a: str, b: str) -> str:
    if a == b:
        return a
    if {a, b} <= {INT, NUMBER}:
        return NUMBER
    if {a, b} <= {HEX, OBJECTID}:
        return HEX
    return STR


MAX_SEGMENTS = 32  # deeper paths keep the rest as one value (bounds the trie's depth)


class Skeletonizer:
    """Per-transaction stage 1, with a bounded cache of segment classifications."""

    def __init__(self, literal_words: Iterable[str] = (), cache_size: int = 65536):
        self.literal = frozenset(w.lower() for w in literal_words)
        self.cache: dict[tuple[str, int], str | None] = {}
        self.cache_size = cache_size

    def __call__(self, path: str) -> tuple[tuple[str, ...], tuple[tuple[int, str], ...]]:
        """Skeleton segments and the typed values ``((position, raw value), ...)``.  Paths deeper
        than MAX_SEGMENTS keep their tail as one string value."""
        segs = split_path(path)
        if len(segs) > MAX_SEGMENTS:
            segs = [*segs[: MAX_SEGMENTS - 1], "/".join(segs[MAX_SEGMENTS - 1 :])]
        out = []
        values = []
        cache = self.cache
        for i, s in enumerate(segs):
            prev = segs[i - 1].lower() if i else ""
            key = (s, 0 if i == 0 else (1 if prev in _VERSION_PARENTS else 2))
            t = cache.get(key, 0)
            if t == 0:
                t = None if s.lower() in self.literal else classify_segment(s, i, prev)
                if len(cache) >= self.cache_size:
                    cache.clear()
                cache[key] = t
            if t is None:
                out.append(s)
            else:
                out.append("{" + t + "}")
                values.append((i, s))
        return tuple(out), tuple(values)


# ---- stage 2: learning from sibling evidence -------------------------------------------------


@dataclass
class PathEvidence:
    """What templating needs to know about one skeleton (all methods pooled)."""

    hits: int = 0
    content_types: frozenset[str] = frozenset()  # "2 application/json": status class, content type
    json_keys: frozenset[str] = frozenset()  # key paths of 2xx JSON responses (schema.key_paths)

    def merge(self, other: PathEvidence) -> PathEvidence:
        return PathEvidence(
            self.hits + other.hits, self.content_types | other.content_types, self.json_keys | other.json_keys
        )


@dataclass
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    terminal: PathEvidence | None = None
    hits: int = 0
    ctypes: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    ptype: str | None = None  # for parameter nodes: the joined value type

    def add(self, segs: tuple[str, ...], ev: PathEvidence) -> None:
        node = self
        for s in segs:
            node = node.children.setdefault(s, _Node())
        node.terminal = ev if node.terminal is None else node.terminal.merge(ev)

    def summarize(self) -> None:
        hits, ct, keys = 0, set(), set()
        if self.terminal is not None:
            hits += self.terminal.hits
            ct |= self.terminal.content_types
            keys |= self.terminal.json_keys
        for c in self.children.values():
            c.summarize()
            hits += c.hits
            ct |= c.ctypes
            keys |= c.keys
        self.hits, self.ctypes, self.keys = hits, frozenset(ct), frozenset(keys)


def _merge_nodes(nodes: list[_Node]) -> _Node:
    out = _Node()
    for n in nodes:
        if n.terminal is not None:
            out.terminal = n.terminal if out.terminal is None else out.terminal.merge(n.terminal)
        for s, c in n.children.items():
            if s in out.children:
                out.children[s] = _merge_nodes([out.children[s], c])
            else:
                out.children[s] = c
    out.summarize()
    return out


def _jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _by_class(ctypes: frozenset[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for x in ctypes:
        cls, _, ct = x.partition(" ")
        out.setdefault(cls, set()).add(ct)
    return out


def alike(a: _Node, b: _Node) -> bool:
    """Two sibling subtrees behave like the same endpoint with different values: for every
    status class both answered with, their content types overlap; and when both returned JSON
    objects on success, the key paths overlap (Jaccard >= 0.5)."""
    if a.ctypes and b.ctypes:
        ca, cb = _by_class(a.ctypes), _by_class(b.ctypes)
        for cls in ca.keys() & cb.keys():
            if not ca[cls] & cb[cls]:
                return False
    if a.keys and b.keys:
        return _jaccard(a.keys, b.keys) >= 0.5
    return True


NEED_STRONG = 3  # alike siblings with JSON evidence that make a parameter
NEED_WEAK = 5  # ... without JSON keys in their answers
NEED_ANY = 30  # siblings that make a parameter whatever they answer


@dataclass(frozen=True)
class Template:
    segments: tuple[str, ...]  # literals and "{type}" / "{param}" placeholders
    names: tuple[str | None, ...]  # parameter name per position (None for literals)
    forced: bool = False

    @property
    def path(self) -> str:
        if not self.segments:
            return "/"
        return "/" + "/".join("{" + n + "}" if n else s for s, n in zip(self.segments, self.names))

    @property
    def params(self) -> list[tuple[int, str, str]]:
        """``[(position, name, type), ...]``."""
        return [
            (i, n, PLACEHOLDERS.get(s, STR)) for i, (s, n) in enumerate(zip(self.segments, self.names)) if n
        ]


def _singular(word: str) -> str:
    w = re.sub(r"[^A-Za-z0-9_]", "_", word).strip("_").lower() or "param"
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("sses", "shes", "ches", "xes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        return w[:-1]
    return w


def name_params(segments: tuple[str, ...]) -> tuple[str | None, ...]:
    """``('users', '{int}', 'orders', '{param}')`` -> ``(None, 'user_id', None, 'order')``."""
    names: list[str | None] = []
    used: set[str] = set()
    for i, s in enumerate(segments):
        if not is_placeholder(s):
            names.append(None)
            continue
        t = PLACEHOLDERS.get(s, STR)
        prev = segments[i - 1] if i else ""
        if prev and not is_placeholder(prev):
            base = _singular(prev)
            if t in (INT, UUID, OBJECTID, HEX, MIXED) and not base.endswith("id"):
                base += "_id"
        else:
            base = {INT: "id", UUID: "uuid", OBJECTID: "oid", HEX: "hash", DATE: "date", EMAIL: "email"}.get(
                t, "param"
            )
        name, k = base, 2
        while name in used:
            name, k = f"{base}{k}", k + 1
        used.add(name)
        names.append(name)
    return tuple(names)


def _matches(pattern: tuple[str, ...], segs: tuple[str, ...]) -> bool:
    """A rules template (``{x}`` = any one segment, ``{*}`` at the end = any rest) vs segments."""
    if pattern and pattern[-1] == "{*}":
        head = pattern[:-1]
        return len(segs) >= len(head) and _matches(head, segs[: len(head)])
    if len(pattern) != len(segs):
        return False
    for p, s in zip(pattern, segs):
        if p.startswith("{") and p.endswith("}"):
            continue
        if p != s:
            return False
    return True


def parse_template(t: str) -> tuple[str, ...]:
    return tuple(split_path(t.split("?", 1)[0]))


class Templates:
    """The learned templates of one service, and how raw skeletons map onto them."""

    def __init__(self, templates: Iterable[Template]):
        self.templates = sorted(set(templates), key=lambda t: t.segments)
        self._trie: dict = {}
        for t in self.templates:
            node = self._trie
            for s in t.segments:
                key = PARAM if is_placeholder(s) else s
                node = node.setdefault(key, {})
            node[None] = t

    def match(self, segs: tuple[str, ...]) -> Template | None:
        """Literal children first, then the parameter; backtracks."""
        return self._match(self._trie, segs, 0)

    def _match(self, node: dict, segs: tuple[str, ...], i: int) -> Template | None:
        if i == len(segs):
            return node.get(None)
        s = segs[i]
        if not is_placeholder(s):
            child = node.get(s)
            if child is not None:
                r = self._match(child, segs, i + 1)
                if r is not None:
                    return r
        child = node.get(PARAM)
        if child is not None:
            return self._match(child, segs, i + 1)
        return None


def learn(
    evidence: Mapping[tuple[str, ...], PathEvidence],
    force: Iterable[str] = (),
    forbid: Iterable[str] = (),
    literal_words: Iterable[str] = (),
) -> tuple[Templates, dict]:
    """Templates for one service from the skeletons it answered (with their evidence).

    Returns the templates and the mapping ``skeleton -> Template`` for every input skeleton.
    Deterministic: depends only on the mapping's content.
    """
    forced = [parse_template(f) for f in force]
    forbidden = [parse_template(f) for f in forbid]
    literal = frozenset(w.lower() for w in literal_words) | RESERVED
    mapping: dict[tuple[str, ...], Template] = {}
    rest: dict[tuple[str, ...], PathEvidence] = {}
    for segs in sorted(evidence):
        for f in forced:
            if _matches(f, segs):
                if f and f[-1] == "{*}":
                    t_segs = f[:-1] + (PARAM,)
                else:
                    t_segs = tuple(PARAM if p.startswith("{") else p for p in f)
                names = tuple(p[1:-1] if p.startswith("{") else None for p in f[: len(t_segs)])
                if f and f[-1] == "{*}":
                    names = names[:-1] + ("path",)
                mapping[segs] = Template(t_segs, names, forced=True)
                break
        else:
            rest[segs] = evidence[segs]
    root = _Node()
    for segs, ev in rest.items():
        root.add(segs, ev)
    root.summarize()
    learned: list[tuple[str, ...]] = []
    _walk(root, (), literal, forbidden, learned)
    templates = {segs: Template(segs, name_params(segs)) for segs in learned}
    for t in mapping.values():
        templates.setdefault(t.segments, t)
    ts = Templates(templates.values())
    for segs in rest:
        t = ts.match(segs)
        if t is not None:
            mapping[segs] = t
    return ts, mapping


def _plain_children(node: _Node, literal: frozenset[str]) -> set[str]:
    return {
        s
        for s in node.children
        if not is_placeholder(s) and s.lower() not in literal and s.lower() not in VOCABULARY
    }


def _disjoint_fanout(nodes: list[_Node], literal: frozenset[str]) -> bool:
    """Siblings whose own children are plain names that no two of them share (``/repos/alice/x``,
    ``/repos/bob/y``): values of one parameter, each with its own values below.  Fixed
    resources share their children's names (``/api/users/{id}``, ``/api/orders/{id}``)."""
    seen: set[str] = set()
    total = 0
    for n in nodes:
        kids = _plain_children(n, literal)
        if not kids or kids & seen:
            return False
        seen |= kids
        total += len(kids)
    return total >= NEED_STRONG


def _forbidden(prefix: tuple[str, ...], forbidden: list[tuple[str, ...]]) -> bool:
    d = len(prefix)
    for f in forbidden:
        if (
            len(f) > d
            and f[d].startswith("{")
            and _matches(f[:d], tuple("{x}" if is_placeholder(p) else p for p in prefix))
            and all((f[i].startswith("{")) == is_placeholder(prefix[i]) for i in range(d))
        ):
            return True
    return False


def _walk(
    node: _Node,
    prefix: tuple[str, ...],
    literal: frozenset[str],
    forbidden: list[tuple[str, ...]],
    out: list[tuple[str, ...]],
) -> None:
    if node.terminal is not None:
        out.append(prefix)
    if not node.children:
        return
    depth = len(prefix)
    children = node.children
    typed = sorted(s for s in children if is_placeholder(s))
    lits = sorted(s for s in children if not is_placeholder(s))
    merged: list[str] = list(typed)
    ptype: str | None = None
    for s in typed:
        t = PLACEHOLDERS.get(s, STR)
        ptype = t if ptype is None else join_types(ptype, t)
    if depth > 0 and not _forbidden(prefix, forbidden):
        cands = [s for s in lits if s.lower() not in literal]
        plain = [s for s in cands if s.lower() not in VOCABULARY]
        vocab = [s for s in cands if s.lower() in VOCABULARY]
        param_node = _merge_nodes([children[s] for s in typed]) if typed else None
        chosen: set[str] = set()
        if len(cands) >= NEED_ANY:
            chosen.update(cands)
        else:
            stringy = ptype is not None and ptype not in (INT, NUMBER)
            under_param = bool(prefix) and is_placeholder(prefix[-1])
            if stringy:
                # a string parameter is already there: each plain literal that behaves like it joins
                chosen.update(s for s in plain if alike(param_node, children[s]))
            else:
                # group the plain literals by behaviour (deterministic order: informative first)
                order = sorted(plain, key=lambda s: (not children[s].keys, -children[s].hits, s))
                clusters: list[list[str]] = []
                for s in order:
                    for cl in clusters:
                        if all(alike(children[m], children[s]) for m in cl):
                            cl.append(s)
                            break
                    else:
                        clusters.append([s])
                for cl in clusters:
                    strong = sum(1 for m in cl if children[m].keys)
                    if (
                        strong >= NEED_STRONG
                        or len(cl) - strong >= NEED_WEAK
                        or (
                            param_node is not None
                            and param_node.keys
                            and all(children[m].keys and alike(param_node, children[m]) for m in cl)
                        )
                        or (
                            param_node is not None
                            and under_param
                            and len(cl) >= 2
                            and all(alike(param_node, children[m]) for m in cl)
                        )
                        or (len(cl) >= 2 and _disjoint_fanout([children[m] for m in cl], literal))
                    ):
                        chosen.update(cl)
            if chosen:
                ref = _merge_nodes([children[s] for s in sorted(chosen)])
                chosen.update(s for s in vocab if alike(ref, children[s]))
        if chosen:
            merged.extend(sorted(chosen))
            ptype = STR
    if merged:
        new_children = {s: c for s, c in children.items() if s not in merged}
        placeholder = "{" + (ptype or STR) + "}"
        pn = _merge_nodes([children[s] for s in sorted(merged)])
        new_children[placeholder] = pn
        node.children = new_children
    for s in sorted(node.children):
        _walk(node.children[s], prefix + (s,), literal, forbidden, out)
