"""Actors and sessions: who made each call, and the chains of calls of one actor.

:class:`Actors` is a Sink (``discovery.sink``).  For every transaction it names the *actor*
that made it, cuts that actor's calls into *sessions*, and folds the call into per-actor
aggregates per endpoint; ``finish`` runs the behaviour analysis (:mod:`discovery.behaviour`)
over the aggregates of every run so far, so the peers an actor is compared with are the
whole population the database has seen.

Actor identity (:func:`identify`), first that applies:

=====================================  ==========================================================
request carries                        actor id
=====================================  ==========================================================
``Authorization: Bearer <JWT>``        ``jwt:HASH`` of the token's issuer and subject (``sub``,
                                       else ``user_id``/``uid``/``username``/``email``...), so
                                       every token of one user is one actor
``Authorization: Bearer <opaque>``     ``bearer:HASH`` of the token
``Authorization: Basic``, ``Digest``   ``basic:HASH`` / ``digest:HASH`` of the user name
other ``Authorization`` schemes        ``<scheme>:HASH`` of the credential
an API-key header (``x-api-key``...)   ``apikey:HASH`` of the key
a session cookie (``sessionid``...)    ``cookie:HASH`` of its value (``jwt:HASH`` if it holds a
                                       JWT with a subject)
an API key in the query (``api_key``)  ``apikey:HASH``
nothing                                ``ip:127.0.0.9``: the client address (raw: an address is
                                       not a credential)
=====================================  ==========================================================

A request without credentials whose 2xx response *issues* one (a login answered with a JWT
or a token in its JSON body, or a ``Set-Cookie`` of a session cookie) belongs to the actor
that credential names: the login opens that user's session.  ``HASH`` is the first 12 hex
digits of the database's keyed hash (:mod:`discovery.redact`, the key is not in the
database); for opaque tokens, cookies and API keys it is the prefix of the
``<redacted:... HASH>`` that the ``transactions`` table shows for the same value, so the two
can be matched.  No credential, cookie, token or user name is ever stored.

A *session* is an actor's calls with idle gaps shorter than ``session_idle`` seconds of
capture time (default 1800; ``apisensor actors --set session_idle=600``).

Bounded memory: at most ``max_actors`` actors are followed at once (the least recently seen
tenth is dropped when full, counted as ``actors_evicted``; an evicted actor's next call opens
a new session); per-endpoint aggregates and calls are written at every ``flush`` and
forgotten; distinct object ids, unknown paths and login user names are kept as the
``SET_CAP`` smallest 32-bit keyed hashes (a KMV sketch: exact below the cap, an estimate
above it), so each aggregate has a fixed size.

Tables (a column is a public interface; docs/actors.md has the full list)
--------------------------------------------------------------------------
- ``actors(id PK, actor UNIQUE, kind, label, issuer, addresses, first_seen, last_seen, calls,
  static_calls, sessions, errors, denied, not_found, request_bytes, response_bytes, records,
  sensitive_records, first_run_id, last_run_id, findings, severity, run_id)``: ``run_id`` the
  run that inserted the row (so the undo journal of ``discovery.journal`` skips it)
- ``actor_sessions(id PK, actor_id, run_id, start, end, calls, errors, denied, not_found,
  response_bytes, first_tx_id, last_tx_id, findings, severity)``
- ``actor_endpoints(id PK, actor_id, service, method, path, endpoint_id, ...counters...,
  object_hashes, username_hashes, ..., run_id)``, UNIQUE (actor_id, service, method, path): ``path`` is the
  inventory's skeleton of the path (``/api/users/{int}``), or ``*`` for paths never answered
  as existing (a scanner's 404s); ``endpoint_id`` the inventory's endpoint.
- ``actor_calls(id PK, tx_id, run_id, ts, actor_id, session_id, actor_endpoint_id, method,
  status, response_bytes, sensitive, flags, marks)``: one row per call (the timeline);
  ``tx_id`` is ``transactions.id``; ``marks`` the behaviour findings the call is evidence of.
- ``actor_findings(id PK, finding_id UNIQUE, actor_id, ...)``: the chain of a behaviour
  finding (``findings`` holds the finding itself, detector ``behaviour.*``).
- ``actor_settings(key PK, value)``: thresholds and ``session_idle`` (defaults in
  :class:`discovery.behaviour.Settings`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import socket
from array import array
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from .auth import APIKEY_COOKIE, APIKEY_HEADERS, APIKEY_QUERY, SESSION_COOKIE
from .behaviour import ENDPOINT_COUNTERS
from .service import service_name
from .templating import INT, MAX_SEGMENTS, Skeletonizer, split_path, static_kind

SET_CAP = 1024  # hashes kept per sketch (distinct ids, unknown paths, user names)
MAX_ADDRESSES = 16
PENDING_CALLS = 50_000  # calls held before the sink flushes by itself

# call flags (actor_calls.flags)
F_UNAUTH = 1  # the request carried no credential
F_LOGIN_FAIL = 2  # a failed login attempt
F_UNKNOWN = 4  # a path never answered as existing
F_LOGIN = 8  # a login attempt
F_ISSUED = 16  # the response issued a credential (the call was attributed to it)

# statuses showing the path exists (as the inventory decides: discovery.inventory.CONFIRMING)
CONFIRMING = frozenset([*range(200, 400), 400, 401, 403, 405, 409, 412, 415, 422, *range(500, 600)])

LOGIN_PATH = re.compile(
    r"(?:^|/)(?:log-?in|sign-?in|sign_in|logon|authenticate|auth|token|tokens|sessions?|oauth2?)(?:/|$|\.)",
    re.IGNORECASE,
)
_PASSWORD_KEY = re.compile(rb"(?i)[\"']?(?:pass(?:word|wd)?|pwd)[\"']?\s*[:=]")
# a failure message, in the lower-cased head of a login's answer (ASCII, as a bytes regex's (?i))
_FAIL_WORDS = (
    b"invalid", b"incorrect", b"wrong", b"fail", b"denied", b"not correct", b"unauthorised",
    b"unauthorized", b"bad credentials",
)
_JWT_TEXT = re.compile(rb"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_TOKEN_KEY = re.compile(
    rb"\"(?:access_?token|accessToken|auth_?token|authToken|token|id_token|session_?token|api_?key)\"\s*:\s*"
    rb"\"([A-Za-z0-9_\-.~+/=]{16,})\""
)
_USER_KEYS = ("username", "user", "login", "email", "user_name", "userName", "name", "account")
# keys of personal data and secrets in JSON responses (records of sensitive data are counted by
# them): a cheap marker first (most bodies have none), then the quoted keys it stands for, counted
# with bytes.count on the lower-cased body (a regex over JSON costs ~100 ns a byte)
_SENSITIVE_KEYS: tuple[tuple[bytes, tuple[bytes, ...]], ...] = tuple(
    (marker, tuple(b'"' + k + b'"' for k in keys))
    for marker, keys in (
        (b"mail", (b"email", b"e_mail", b"email_address", b"emailaddress", b"mail")),
        (b"phone", (b"phone", b"phone_number", b"phonenumber", b"telephone", b"mobile_phone")),
        (b"ssn", (b"ssn", b"social_security_number")),
        (b"card", (b"card_number", b"cardnumber", b"credit_card", b"creditcard", b"card", b"cc_number")),
        (b"iban", (b"iban",)),
        (b"passw", (b"password", b"password_hash", b"passwordhash", b"passwd")),
        (b"birth", (b"date_of_birth", b"dateofbirth", b"birth_date", b"birthdate")),
        (b"dob", (b"dob",)),
        (b"address", (b"address", b"street_address", b"streetaddress", b"home_address")),
        (b"_id", (b"national_id", b"nationalid", b"tax_id", b"passport_number")),
    )
)
RECORDS_SCAN = 8192  # bytes of a body looked at; counts are scaled up to the whole body
RATIO_LEARN = 4  # bodies of an endpoint whose sensitive keys are all counted ...
RATIO_EVERY = 16  # ... then one in this many (the others: estimated from their objects)
_ID_PARAM = re.compile(r"(?i)(?:^|[_-])(?:id|ids|uuid|key)$|id$")
_IDENTITY_CLAIMS = (
    "sub",
    "user_id",
    "userId",
    "uid",
    "username",
    "preferred_username",
    "email",
    "identity",
    "client_id",
    "name",
)


def b64json(part: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def jwt_subject(token: str) -> tuple[str, str] | None:
    """(issuer, subject) of a JWT (signature not checked; a passive sensor names, it does not
    trust), or None when it is not a JWT or names nobody."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].startswith("eyJ"):
        return None
    claims = b64json(parts[1])
    if not isinstance(claims, dict):
        return None
    for k in _IDENTITY_CLAIMS:
        v = claims.get(k)
        if v not in (None, "", [], {}):
            return str(claims.get("iss") or ""), f"{k}={v}"
    return None


class Identity:
    """Who made a call: ``actor`` is the stored id (``jwt:HASH``...), never the credential."""

    __slots__ = ("actor", "kind", "label", "issuer")

    def __init__(self, actor: str, kind: str, label: str, issuer: str | None = None):
        self.actor = actor
        self.kind = kind
        self.label = label
        self.issuer = issuer


def _scheme_word(s: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", s.lower())[:16] or "auth"


class Identifier:
    """Credential -> :class:`Identity`, with the keyed hash of a database (cached, bounded)."""

    def __init__(self, hasher, redactor=None):
        self.hasher = hasher
        self.redactor = redactor
        self.cache: dict[str, dict[str, Identity | None]] = {}  # kind -> value -> identity
        self.cached = 0
        self.jwt_cache: dict[tuple[str, str], Identity | None] = {}

    def h(self, value: str) -> str:
        return self.hasher(value)[:12]

    def _jwt(self, token: str, label: str) -> Identity | None:
        """Cached per (claims part, label): the identity depends on nothing else (tokens of one
        user often differ only in their signature or header)."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].startswith("eyJ"):
            return None
        key = (parts[1], label)
        got = self.jwt_cache.get(key, False)
        if got is False:
            got = self._jwt_identity(token, label)
            if len(self.jwt_cache) >= 8192:
                self.jwt_cache.clear()
            self.jwt_cache[key] = got
        return got

    def _jwt_identity(self, token: str, label: str) -> Identity | None:
        got = jwt_subject(token)
        if got is None:
            return None
        iss, sub = got
        issuer = None
        if iss:
            issuer = self.redactor.text(iss)[:200] if self.redactor is not None else None
        return Identity("jwt:" + self.h(f"{iss}\x1f{sub}"), "jwt", label, issuer)

    def _cached(self, kind: str, value: str, make) -> Identity | None:
        per = self.cache.get(kind)  # (per kind, then value: no key tuple per credential)
        got = per.get(value, False) if per is not None else False
        if got is False:
            got = make(value)
            if self.cached >= 8192:
                self.cache.clear()
                self.cached = 0
                per = None
            if per is None:
                per = self.cache[kind] = {}
            per[value] = got
            self.cached += 1
        return got

    def authorization(self, value: str) -> Identity | None:
        return self._cached("authorization", value, self._authorization)

    def _authorization(self, value: str) -> Identity | None:
        scheme, _, cred = value.strip().partition(" ")
        cred = cred.strip()
        if not cred:  # a bare token
            if not scheme:
                return None
            return self._jwt(scheme, "JWT subject") or Identity(
                "bearer:" + self.h(scheme), "bearer", "bearer token"
            )
        s = scheme.lower()
        if s == "bearer":
            return self._jwt(cred, "JWT subject") or Identity(
                "bearer:" + self.h(cred), "bearer", "bearer token"
            )
        if s == "basic":
            try:
                user = (
                    base64.b64decode(cred + "=" * (-len(cred) % 4))
                    .decode("utf-8", "replace")
                    .partition(":")[0]
                )
            except (ValueError, binascii.Error):
                user = ""
            if user:
                return Identity("basic:" + self.h("basic\x1f" + user), "basic", "Basic user")
            return Identity("basic:" + self.h(cred), "basic", "Basic credential")
        if s == "digest":
            m = re.search(r'username="?([^",]+)', cred)
            if m:
                return Identity("digest:" + self.h("digest\x1f" + m.group(1)), "digest", "Digest user")
        word = _scheme_word(s)
        return Identity(f"{word}:" + self.h(cred), word, f"{scheme} credential")

    def apikey(self, name: str, value: str) -> Identity | None:
        v = value.strip()
        if not v:
            return None
        return self._cached(
            "apikey:" + name, v, lambda x: Identity("apikey:" + self.h(x), "apikey", f"API key ({name})")
        )

    def cookie(self, value: str) -> Identity | None:
        return self._cached("cookie", value, self._cookie)

    def _cookie(self, value: str) -> Identity | None:
        for item in value.split(";"):
            name, eq, v = item.strip().partition("=")
            v = v.strip().strip('"')
            if not eq or not v:
                continue
            if APIKEY_COOKIE.search(name):
                return Identity("apikey:" + self.h(v), "apikey", f"API key (cookie {name[:40]})")
            if SESSION_COOKIE.search(name):
                if v.startswith("eyJ"):
                    got = self._jwt(v, f"JWT subject (cookie {name[:40]})")
                    if got is not None:
                        return got
                return Identity("cookie:" + self.h(v), "cookie", f"session cookie {name[:40]}")
        return None

    def set_cookie(self, value: str) -> Identity | None:
        """The identity a ``Set-Cookie`` issues (session or API-key cookies only)."""
        first = value.split(";", 1)[0]
        name, eq, v = first.strip().partition("=")
        v = v.strip().strip('"')
        if not eq or not v or v.lower() in ("deleted", "null", "none", "expired"):
            return None
        return self.cookie(f"{name}={v}")

    def request(self, tx, query: str) -> Identity | None:
        """The identity of the credential a request carries, or None."""
        auth = apikey = cookie = None
        for k, v in tx.request_headers:
            lk = k.lower()
            if lk == "authorization":
                if auth is None:
                    auth = v
            elif lk in APIKEY_HEADERS:
                if apikey is None:
                    apikey = (lk, v)
            elif lk == "cookie":
                cookie = v if cookie is None else cookie + "; " + v
        return self.credentials(auth, apikey, cookie, query)

    def credentials(
        self, auth: str | None, apikey: tuple[str, str] | None, cookie: str | None, query: str
    ) -> Identity | None:
        """:meth:`request` on the headers already picked out: the first ``Authorization``, the
        first API-key header ``(name, value)``, the ``Cookie`` headers joined with ``"; "``."""
        if auth:
            got = self.authorization(auth)
            if got is not None:
                return got
        if apikey:
            got = self.apikey(*apikey)
            if got is not None:
                return got
        if cookie:
            got = self.cookie(cookie)
            if got is not None:
                return got
        if query and "=" in query and _may_name_apikey(query):
            for name, value in parse_qsl(query, keep_blank_values=False):
                if name.lower() in APIKEY_QUERY and value:
                    return self.apikey("query " + name[:40], value)
        return None

    def issued(self, tx, login: bool = True) -> Identity | None:
        """The identity a response hands out: a session cookie, or (answering a ``login``) a
        JWT or token in its body."""
        names = _SET_COOKIE
        for k, v in tx.response_headers:
            is_set_cookie = names.get(k)
            if is_set_cookie is None:
                if len(names) >= 4096:
                    names.clear()
                is_set_cookie = names[k] = k.lower() == "set-cookie"
            if is_set_cookie:
                got = self.set_cookie(v)
                if got is not None:
                    return got
        body = tx.response_body
        if body and len(body) <= 65536 and login:
            m = _JWT_TEXT.search(body) if b"eyJ" in body else None
            if m:
                got = self._jwt(m.group(0).decode("ascii"), "JWT subject")
                if got is not None:
                    return got
                return Identity("bearer:" + self.h(m.group(0).decode("ascii")), "bearer", "bearer token")
            m = _TOKEN_KEY.search(body) if b"oken" in body or b"key" in body else None
            if m:
                return Identity("bearer:" + self.h(m.group(1).decode("ascii")), "bearer", "bearer token")
        return None


_PLAIN_ADDR = re.compile(r"[0-9A-Za-z.:_-]*")


def _json_list(values: set[str] | tuple[str, ...]) -> str:
    """``json.dumps(sorted(values))``; one plain address (the usual case) without the encoder."""
    if len(values) == 1:
        (v,) = values
        if _PLAIN_ADDR.fullmatch(v):
            return '["' + v + '"]'
    return json.dumps(sorted(values))


_APIKEY_QUERY_NAMES = tuple(sorted(APIKEY_QUERY))

# request header names the sink reads, by their spelling on the wire (few distinct spellings:
# a dict lookup per header instead of lower-casing each one)
_H_HOST, _H_AUTH, _H_COOKIE, _H_APIKEY = 1, 2, 3, 4
_HEADER_KIND: dict[str, int] = {}
_SET_COOKIE: dict[str, bool] = {}  # response header name -> it is Set-Cookie


def _header_kind(name: str) -> int:
    low = name.lower()
    kind = (
        _H_HOST if low == "host" else _H_AUTH if low == "authorization" else _H_COOKIE if low == "cookie"
        else _H_APIKEY if low in APIKEY_HEADERS else 0
    )
    if len(_HEADER_KIND) >= 4096:
        _HEADER_KIND.clear()
    _HEADER_KIND[name] = kind
    return kind


_STATIC = 1  # _path_info: a static asset
_EXCLUDED = 2  # ... a path the rules file excludes
_DIGIT_SEGMENT = re.compile(r"/[0-9]{1,30}(?=/|\Z)")  # a path segment of digits only (an id)
_INT_SEGMENT = "{" + INT + "}"


def _may_name_id(query: str) -> bool:
    """False when no parameter name of ``query`` can match ``_ID_PARAM`` (every such name ends
    in ``id``, ``ids`` or ``key``, right before its ``=``): most queries, spared a parse."""
    if "%" in query or "+" in query:
        return True
    low = query.lower()
    return "id=" in low or "ids=" in low or "key=" in low


def _may_name_apikey(query: str) -> bool:
    """False when no parameter of ``query`` can be an API-key parameter (no escapes, and no
    name of :data:`APIKEY_QUERY` in it): most queries, spared a parse."""
    if "%" in query or "+" in query:
        return True
    low = query.lower()
    return any(n in low for n in _APIKEY_QUERY_NAMES)


def identify(tx, identifier: Identifier, client_ip: str, query: str = "") -> tuple[Identity, bool]:
    """(identity, carried_credentials) of one transaction (see module doc)."""
    got = identifier.request(tx, query)
    if got is not None:
        return got, True
    return Identity("ip:" + client_ip, "ip", "client address"), False


# ---- sketches of distinct values -----------------------------------------------------------------


class Sketch(set):
    """In-memory distinct hashes: past 4 x SET_CAP values only the SET_CAP smallest are kept (all
    that the stored sketch keeps), and later hashes above that cut are dropped at once, so memory
    stays bounded and the KMV estimate is unchanged.  (No ``__init__``: a new sketch is a plain
    set's construction; ``cut`` becomes an instance attribute at the first compaction.)"""

    cut = 1 << 32

    def add_hash(self, h: int) -> None:
        if h >= self.cut:
            return
        self.add(h)
        if len(self) >= 4 * SET_CAP:
            self.compact()

    def compact(self) -> None:
        kept = sorted(self)[:SET_CAP]
        self.clear()
        self.update(kept)
        self.cut = kept[-1] + 1


def sketch_merge(blob: bytes | None, new: Iterable[int]) -> tuple[bytes, int]:
    """Merge new 32-bit hashes into a stored sketch (the SET_CAP smallest); (blob, distinct)."""
    if not blob:  # nothing stored (a new aggregate): the new hashes alone
        if not new:
            return b"", 0
        kept = sorted(new if isinstance(new, (set, frozenset)) else set(new))
        if len(kept) > SET_CAP:
            del kept[SET_CAP:]
        return array("I", kept).tobytes(), sketch_count(kept)
    vals = set(new)
    a = array("I")
    a.frombytes(blob)
    vals.update(a)
    kept = sorted(vals)[:SET_CAP]
    return array("I", kept).tobytes(), sketch_count(kept)


def sketch_count(kept: list[int]) -> int:
    """Distinct values from the sorted smallest hashes: exact below the cap, else the KMV estimate."""
    if len(kept) < SET_CAP:
        return len(kept)
    return int((SET_CAP - 1) * 4294967296 / max(1, kept[-1]))


def sketch_values(blob: bytes | None) -> list[int]:
    if not blob:
        return []
    a = array("I")
    a.frombytes(blob)
    return list(a)


# ---- in-memory state ------------------------------------------------------------------------------


class _Session:
    __slots__ = (
        "id",
        "actor",
        "start",
        "end",
        "calls",
        "errors",
        "denied",
        "not_found",
        "bytes",
        "dirty",
        "run_id",
    )

    def __init__(self, actor: _Actor, ts: float, run_id: int, sid: int | None = None):
        self.id = sid
        self.actor = actor
        self.start = ts
        self.end = ts
        self.calls = self.errors = self.denied = self.not_found = self.bytes = 0
        self.dirty = True
        self.run_id = run_id


class _Actor(list):
    """One actor followed in memory.  Its counters since the last flush are the list's items
    (calls, static, errors, denied, not_found, request bytes, response bytes, records, sensitive):
    one object, not two, for the garbage collector to count."""

    __slots__ = (
        "key",
        "kind",
        "label",
        "issuer",
        "id",
        "last",
        "session",
        "addresses",
        "new_sessions",
        "dirty",
        "first",
    )

    def __init__(self, ident: Identity, ts: float):
        self.key = ident.actor
        self.kind = ident.kind
        self.label = ident.label
        self.issuer = ident.issuer
        self.id: int | None = None
        self.first = ts
        self.last = ts
        self.session: _Session | None = None
        list.__init__(self, _ACTOR_ZERO)
        self.addresses: tuple[str, ...] = ()  # (a tuple of strings: the collector untracks it)
        self.new_sessions = 0
        self.dirty = True


_EP_FIELDS = ENDPOINT_COUNTERS
_EP_INDEX = {f: i for i, f in enumerate(_EP_FIELDS)}


_ACTOR_ZERO = [0] * 9
_EP_ZERO = [0] * len(_EP_FIELDS)


class _EpAgg(list):
    """What one actor did on one endpoint since the last flush: the counters of ``_EP_FIELDS``
    are the list's items (one object, not two).  ``objects``: the distinct objects, None, one
    hash (an int: most aggregates see one object) or a Sketch; ``users``: None until a login
    names a user (most never do)."""

    __slots__ = ("objects", "users", "first", "last")

    def __init__(self, ts: float):
        list.__init__(self, _EP_ZERO)
        self.objects: int | Sketch | None = None
        self.users: Sketch | None = None
        self.first = ts
        self.last = ts


# ---- schema ---------------------------------------------------------------------------------------


def ensure_schema(db) -> None:
    names = set(db.table_names())
    if "actors" not in names:
        db["actors"].create(
            {
                "id": int,
                "actor": str,
                "kind": str,
                "label": str,
                "issuer": str,
                "addresses": str,
                "first_seen": float,
                "last_seen": float,
                "calls": int,
                "static_calls": int,
                "sessions": int,
                "errors": int,
                "denied": int,
                "not_found": int,
                "request_bytes": int,
                "response_bytes": int,
                "records": int,
                "sensitive_records": int,
                "first_run_id": int,
                "last_run_id": int,
                "findings": str,
                "severity": str,
                "run_id": int,
            },
            pk="id",
            not_null={"actor"},
        )
        db["actors"].create_index(["actor"], unique=True, if_not_exists=True)
    if "actor_sessions" not in names:
        db["actor_sessions"].create(
            {
                "id": int,
                "actor_id": int,
                "run_id": int,
                "start": float,
                "end": float,
                "calls": int,
                "errors": int,
                "denied": int,
                "not_found": int,
                "response_bytes": int,
                "first_tx_id": int,
                "last_tx_id": int,
                "findings": str,
                "severity": str,
            },
            pk="id",
        )
        db["actor_sessions"].create_index(["actor_id", "start"], if_not_exists=True)
    if "actor_endpoints" not in names:
        cols: dict[str, Any] = {
            "id": int,
            "actor_id": int,
            "service": str,
            "method": str,
            "path": str,
            "endpoint_id": int,
        }
        cols.update({f: int for f in _EP_FIELDS})
        cols.update(
            {
                "objects": int,
                "usernames": int,
                "object_hashes": bytes,
                "username_hashes": bytes,
                "first_seen": float,
                "last_seen": float,
                "first_run_id": int,
                "last_run_id": int,
                "run_id": int,
            }
        )
        db["actor_endpoints"].create(cols, pk="id", not_null={"actor_id", "service", "method", "path"})
        db["actor_endpoints"].create_index(
            ["actor_id", "service", "method", "path"], unique=True, if_not_exists=True
        )
        db["actor_endpoints"].create_index(["endpoint_id"], if_not_exists=True)
    if "actor_calls" not in names:
        db["actor_calls"].create(
            {
                "id": int,
                "tx_id": int,
                "run_id": int,
                "ts": float,
                "actor_id": int,
                "session_id": int,
                "actor_endpoint_id": int,
                "method": str,
                "status": int,
                "response_bytes": int,
                "sensitive": int,
                "flags": int,
                "marks": str,
            },
            pk="id",
        )
        db["actor_calls"].create_index(["actor_id", "ts"], if_not_exists=True)
        db["actor_calls"].create_index(["session_id"], if_not_exists=True)
        db["actor_calls"].create_index(["actor_endpoint_id"], if_not_exists=True)
    if "actor_findings" not in names:
        db["actor_findings"].create(
            {
                "id": int,
                "finding_id": int,
                "actor_id": int,
                "detector": str,
                "kind": str,
                "category": str,
                "severity": str,
                "service": str,
                "method": str,
                "path": str,
                "endpoint_id": int,
                "metric": str,
                "value": float,
                "baseline": float,
                "threshold": float,
                "peers": int,
                "calls": int,
                "tx_ids": str,
                "session_ids": str,
                "first_seen": float,
                "last_seen": float,
                "run_id": int,
            },
            pk="id",
        )
        db["actor_findings"].create_index(["finding_id"], unique=True, if_not_exists=True)
        db["actor_findings"].create_index(["actor_id"], if_not_exists=True)
    if "actor_settings" not in names:
        db["actor_settings"].create({"key": str, "value": str}, pk="key")
    # run_id: the run that inserted the row (older databases lack it).  The undo journal
    # (discovery/journal.py) skips rows that carry the writing run's run_id (a rollback deletes
    # them by run_id), so the rows a run inserts cost no journal row each
    for table in ("actors", "actor_endpoints"):
        if table in names and "run_id" not in {r[1] for r in db.execute(f"pragma table_info({table})")}:
            db.execute(f"alter table {table} add column run_id integer")


_ACTOR_COUNTS = (
    "errors",
    "denied",
    "not_found",
    "request_bytes",
    "response_bytes",
    "records",
    "sensitive_records",
)
_INSERT_ACTOR = (
    "insert into actors (actor, kind, label, issuer, addresses, first_seen, last_seen, calls, static_calls, "
    f"sessions, {', '.join(_ACTOR_COUNTS)}, first_run_id, last_run_id, run_id, findings) values "
    f"({', '.join('?' * (13 + len(_ACTOR_COUNTS)))}, '[]')"
)
_UPDATE_ACTOR = (
    "update actors set addresses = ?, first_seen = min(first_seen, ?), last_seen = max(last_seen, ?), "
    "calls = calls + ?, static_calls = static_calls + ?, sessions = sessions + ?, "
    + ", ".join(f"{c} = {c} + ?" for c in _ACTOR_COUNTS)
    + ", last_run_id = ? where id = ?"
)
_INSERT_SESSION = (
    'insert into actor_sessions (actor_id, run_id, start, "end", calls, errors, denied, not_found, '
    "response_bytes, first_tx_id, last_tx_id, findings) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]')"
)
_UPDATE_SESSION = (
    'update actor_sessions set "end" = max("end", ?), calls = calls + ?, errors = errors + ?, '
    "denied = denied + ?, not_found = not_found + ?, response_bytes = response_bytes + ?, "
    "first_tx_id = coalesce(first_tx_id, ?), last_tx_id = coalesce(?, last_tx_id) where id = ?"
)
_SELECT_EP = (
    "select id, object_hashes, username_hashes from actor_endpoints where actor_id = ? and service = ? "
    "and method = ? and path = ?"
)
_EP_TAIL = ("objects", "usernames", "object_hashes", "username_hashes", "first_seen", "last_seen")
_INSERT_EP = (
    f"insert into actor_endpoints (actor_id, service, method, path, {', '.join(_EP_FIELDS)}, "
    f"{', '.join(_EP_TAIL)}, first_run_id, last_run_id, run_id) values "
    f"({', '.join('?' * (4 + len(_EP_FIELDS) + len(_EP_TAIL) + 3))})"
)
_UPDATE_EP = (
    "update actor_endpoints set "
    + ", ".join(f"{f} = {f} + ?" for f in _EP_FIELDS)
    + ", objects = ?, usernames = ?, object_hashes = ?, username_hashes = ?, "
    "first_seen = min(first_seen, ?), last_seen = max(last_seen, ?), last_run_id = ? where id = ?"
)
_INSERT_CALL = (
    "insert into actor_calls (tx_id, run_id, ts, actor_id, session_id, actor_endpoint_id, method, status, "
    "response_bytes, sensitive, flags) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# ---- the sink -------------------------------------------------------------------------------------


class Actors:
    """Sink: actor identity, sessions and per-actor aggregates; behaviour analysis in finish()."""

    def __init__(self, store, run_id: int, settings=None, max_actors: int | None = None):
        from .behaviour import Settings

        self.store = store
        self.db = store.db
        self.run_id = run_id
        ensure_schema(self.db)
        self.settings = settings or Settings.load(self.db)
        self.max_actors = max_actors or self.settings.max_actors
        self.idle = float(self.settings.session_idle)
        hasher = getattr(store, "hasher", None)
        if hasher is None:
            from .detectors.redaction import Hasher, load_key

            hasher = Hasher(load_key(getattr(store, "path", ":memory:")))
        self.hasher = hasher
        self.key32 = hasher.key[:64]
        self._b2 = hashlib.blake2b(key=self.key32, digest_size=4)
        self.ident = Identifier(hasher, getattr(store, "redactor", None))
        self.actors: dict[str, _Actor] = {}
        self.pending: dict[tuple, _EpAgg] = {}
        self.calls: list[tuple] = []
        self.closed: list[_Session] = []  # sessions ended since the last flush
        self.index = 0  # transactions observed (all of them: the transaction log numbers them alike)
        self.tx_base: int | None = None
        self.name_cache: dict[tuple, str] = {}
        self.client_names: dict[bytes, str] = {}
        self.flows: dict[tuple, tuple[str, str, Identity, tuple[str]]] = {}  # see _flow
        self.path_info: dict[str, dict[str, str | int]] = {}  # see _path_info
        self.path_count = 0
        self.known: set[tuple[str, str]] = set()
        self.known_cap = 200_000
        self.skel: dict = {}
        self.shapes: dict[tuple[str, str], str] = {}  # (service, path with ids masked) -> skeleton
        self.shapes_ok: dict[tuple, bool] = {}  # literal words -> none is a number
        self.ratios: dict[tuple, list] = {}  # endpoint key -> [bodies counted, sensitive, objects]
        self.counted: dict[tuple[bytes, int], tuple[int, int]] = {}  # (body head, length) -> counts
        self.rules = None
        self.ep_ids: dict[tuple, int] = {}
        self.evicted = 0
        self.observed = 0
        self._load_known()
        # actors stored before this run? (if not, and none was evicted, a new actor is new)
        self.stored_before = self.db.execute("select 1 from actors limit 1").fetchone() is not None

    # -- helpers --
    def _load_known(self) -> None:
        """Skeletons answered as existing in earlier runs (the inventory's observed_paths)."""
        if "observed_paths" not in self.db.table_names():
            return
        rows = self.db.execute(
            "select s.name, o.path from observed_paths o join services s on s.id = o.service_id "
            "where o.confirmed = 1 limit ?",
            [self.known_cap],
        )
        self.known.update((n, p) for n, p in rows)

    def _skeleton(self, svc: str, path: str) -> str | None:
        """The inventory's skeleton of a path (``/users/{int}``), None when the rules exclude it
        (cached by the caller, :meth:`_path_info`, per service and path)."""
        if self.rules is None:
            from .rules import active

            meta = None
            if "inventory_meta" in self.db.table_names():
                row = self.db.execute("select value from inventory_meta where key = 'rules'").fetchone()
                meta = row[0] if row else None
            self.rules = active(meta)
        srules = self.rules.for_service(svc)
        if srules.exclude and srules.excluded(path):
            got = None
        else:
            # paths that differ only in their numeric ids (/users/17, /users/18) have one skeleton:
            # cached per shape (the path with its all-digit segments masked), once the skeletonizer
            # has made each of them {int}; not with exclude globs or numeric literal words
            shape = None
            words = srules.literal_key
            shapes_ok = self.shapes_ok.get(words)
            if shapes_ok is None:
                shapes_ok = self.shapes_ok[words] = not any(w.isdigit() for w in words)
            if shapes_ok and not srules.exclude and "\x00" not in path:
                shape = _DIGIT_SEGMENT.sub("/\x00", path)
                if shape == path:
                    shape = None
                else:
                    got = self.shapes.get((svc, shape))
                    if got is not None:
                        return got
            sk = self.skel.get(srules.literal_key)
            if sk is None:
                sk = self.skel[srules.literal_key] = Skeletonizer(srules.literal)
            segs = sk(path)[0]
            got = "/" + "/".join(segs)
            if shape is not None:
                masked = split_path(shape)
                if len(masked) == len(segs) <= MAX_SEGMENTS // 2 and all(
                    seg == _INT_SEGMENT for m, seg in zip(masked, segs) if m == "\x00"
                ):
                    if len(self.shapes) >= 65536:
                        self.shapes.clear()
                    self.shapes[(svc, shape)] = got
        return got

    def h32(self, value: str) -> int:
        h = self._b2.copy()  # the keyed state, copied: cheaper than keying a new one
        h.update(value.encode("utf-8", "surrogatepass"))
        return int.from_bytes(h.digest(), "little")

    def _client(self, tx) -> str:
        c = self.client_names.get(tx.client_ip)
        if c is None:
            ip = tx.client_ip  # the address as the inventory formats it, without the port
            if len(self.client_names) > 65536:
                self.client_names.clear()
            family = socket.AF_INET if len(ip) == 4 else socket.AF_INET6
            c = self.client_names[ip] = socket.inet_ntop(family, ip)
        return c

    def _service(self, tx) -> str:
        host = tx.host
        k = (host, tx.server_ip, tx.server_port)
        svc = self.name_cache.get(k)
        if svc is None:
            svc = service_name(tx)
            if len(self.name_cache) > 65536:
                self.name_cache.clear()
            self.name_cache[k] = svc
        return svc

    def _flow(self, tx, key: tuple) -> tuple[str, str, Identity, tuple[str]]:
        """(service, client address, the client's ``ip:`` identity, ``(client address,)``) of a
        (client, server, port, Host) key: derived once, not per transaction."""
        client = self._client(tx)
        got = (self._service(tx), client, Identity("ip:" + client, "ip", "client address"), (client,))
        if len(self.flows) >= 65536:
            self.flows.clear()
        self.flows[key] = got
        return got

    def _path_info(self, svc: str, path: str) -> str | int:
        """The skeleton of a path of a service, or ``_STATIC`` (a static asset) or ``_EXCLUDED``
        (by the rules file); cached per service and path (nested dicts: no key tuple to keep)."""
        got: str | int
        if static_kind(path):
            got = _STATIC
        else:
            skeleton = self._skeleton(svc, path)
            got = _EXCLUDED if skeleton is None else skeleton
        if self.path_count >= 65536:
            self.path_info.clear()
            self.path_count = 0
        per = self.path_info.get(svc)
        if per is None:
            per = self.path_info[svc] = {}
        per[path] = got
        self.path_count += 1
        return got

    # -- per transaction --
    def observe(self, tx) -> None:
        self.index += 1
        method = tx.method
        if method is None or method == "CONNECT":
            return
        self.observed += 1
        # one pass over the request headers: the Host and the credentials (Identifier.request)
        host = auth = apikey = cookie = None
        kinds = _HEADER_KIND
        for k, v in tx.request_headers:
            hk = kinds.get(k)
            if hk is None:
                hk = _header_kind(k)
            if not hk:
                continue
            if hk == _H_HOST:
                if host is None:
                    host = v
            elif hk == _H_AUTH:
                if auth is None:
                    auth = v
            elif hk == _H_COOKIE:
                cookie = v if cookie is None else cookie + "; " + v
            elif hk == _H_APIKEY:
                if apikey is None:
                    apikey = (k.lower(), v)
        fkey = (tx.client_ip, tx.server_ip, tx.server_port, host)
        flow = self.flows.get(fkey)
        if flow is None:
            flow = self._flow(tx, fkey)
        svc, client, ident, client_1 = flow
        uri = tx.uri or ""
        if uri.startswith(("http://", "https://")):
            rest = uri.split("://", 1)[1]
            i = rest.find("/")
            uri = rest[i:] if i >= 0 else "/"
        path, _, query = uri.partition("?")
        if "#" in path:
            path = path.partition("#")[0]
        if not path.startswith("/"):
            path = "/" + path if path != "*" else "*"
        has_cred = False
        if auth or apikey or cookie or (query and "=" in query):
            got = self.ident.credentials(auth, apikey, cookie, query)
            if got is not None:
                ident = got
                has_cred = True
        status = tx.status_code or 0
        flags = 0 if has_cred else F_UNAUTH
        per = self.path_info.get(svc)
        skeleton = per.get(path) if per is not None else None
        if skeleton is None:
            skeleton = self._path_info(svc, path)
        login = method == "POST" and (
            LOGIN_PATH.search(path) is not None
            or bool(tx.request_body and _PASSWORD_KEY.search(tx.request_body[:4096]))
        )
        issued = None
        if (login or not has_cred) and 200 <= status < 300:
            issued = self.ident.issued(tx, login)
            if issued is not None and not has_cred:
                ident = issued
                flags |= F_ISSUED
        ts = tx.ts
        actor = self.actors.get(ident.actor)
        if actor is None:
            actor = self._actor(ident, ts)
        addresses = actor.addresses
        if client not in addresses and len(addresses) < MAX_ADDRESSES:
            actor.addresses = (*addresses, client) if addresses else client_1
        sess = actor.session
        if sess is None or ts - actor.last > self.idle:
            if sess is not None and sess.dirty:
                self.closed.append(sess)
            sess = actor.session = self._new_session(actor, ts)
        if ts > actor.last:
            actor.last = ts
        if ts < actor.first:
            actor.first = ts
        actor.dirty = True
        c = actor
        c[0] += 1
        if skeleton is _EXCLUDED:  # excluded by the rules file: counted on the actor only
            c[1] += 1
            return
        rbytes = tx.response_body_len
        # the session's counts (inline: once per transaction)
        sess.calls += 1
        sess.dirty = True
        if ts > sess.end:
            sess.end = ts
        if status >= 400:
            sess.errors += 1
            if status in (401, 403):
                sess.denied += 1
            elif status == 404:
                sess.not_found += 1
        sess.bytes += rbytes
        if skeleton is _STATIC:  # a static asset: in the session, counted on the actor, not listed
            c[1] += 1
            return
        key_known = (svc, skeleton)
        if status in CONFIRMING:
            if key_known not in self.known and len(self.known) < self.known_cap:
                self.known.add(key_known)
            epath = skeleton
        elif key_known in self.known:
            epath = skeleton
        else:
            epath = "*"
            flags |= F_UNKNOWN
        k = (ident.actor, svc, method, epath)
        agg = self.pending.get(k)
        if agg is None:
            agg = self.pending[k] = _EpAgg(ts)
        else:
            if ts < agg.first:
                agg.first = ts
            if ts > agg.last:
                agg.last = ts
        e = agg
        e[0] += 1
        ok = 200 <= status < 300
        if ok:
            e[1] += 1
        elif status >= 400:
            c[2] += 1
            if status in (401, 403):
                e[2] += 1
                c[3] += 1
            elif status == 404:
                e[3] += 1
                c[4] += 1
            elif status < 500:
                e[4] += 1
            else:
                e[5] += 1
        if not has_cred:
            e[6] += 1
            if ok:
                e[7] += 1
            elif status in (401, 403):
                e[8] += 1
        qbytes = tx.request_body_len
        e[9] += qbytes
        e[10] += rbytes
        c[5] += qbytes
        c[6] += rbytes
        sensitive = 0
        if ok and tx.response_body:
            records, sensitive = self._records(tx, (svc, method, epath))
            e[11] += records
            e[12] += sensitive
            c[7] += records
            c[8] += sensitive
        # distinct objects: the concrete path (and id-like query values); unknown paths likewise
        obj = path
        if query and "=" in query and epath != "*" and _may_name_id(query):
            ids = [f"{n}={v}" for n, v in parse_qsl(query) if _ID_PARAM.search(n)]
            if ids:
                obj += "?" + "&".join(sorted(ids))
        h = self._b2.copy()  # (h32, inline)
        h.update(obj.encode("utf-8", "surrogatepass"))
        hv = int.from_bytes(h.digest(), "little")
        objs = agg.objects
        if objs is None:
            agg.objects = hv
        elif type(objs) is int:
            if objs != hv:
                objs = agg.objects = Sketch((objs,))
                objs.add_hash(hv)
        else:
            objs.add_hash(hv)
        if login:
            flags |= F_LOGIN
            e[13] += 1
            if failed_login(tx, status, issued):
                flags |= F_LOGIN_FAIL
                e[14] += 1
            user = login_user(tx.request_body)
            if user:
                if agg.users is None:
                    agg.users = Sketch()
                agg.users.add_hash(self.h32("user\x1f" + user))
        self.calls.append((self.index, ts, actor, sess, k, method, status, rbytes, sensitive, flags))
        if len(self.calls) >= PENDING_CALLS or len(self.closed) >= PENDING_CALLS:
            self.flush()

    def _records(self, tx, key: tuple) -> tuple[int, int]:
        """(records, sensitive records) of a response.  Counting sensitive keys costs a scan per
        key family, so it is done on a deterministic sample of each endpoint's bodies (the first
        ``RATIO_LEARN``, then one in ``RATIO_EVERY``); the others are estimated from their object
        count and the endpoint's sensitive-keys-per-object ratio learned from the sample."""
        r = self.ratios.get(key)
        if r is None:
            if len(self.ratios) >= 100_000:
                self.ratios.clear()
            r = self.ratios[key] = [0, 0, 0, 0]  # bodies seen, counted, sensitive, objects (counted ones)
        r[0] += 1
        if r[1] < RATIO_LEARN or r[0] % RATIO_EVERY == 0:
            # counted once per distinct (scanned part, length): APIs repeat their answers
            body = tx.response_body
            part = body[:RECORDS_SCAN]
            if type(part) is not bytes:
                part = bytes(part)
            ck = (part, max(tx.response_body_len, len(body)))
            got = self.counted.get(ck)
            if got is None:
                got = count_records(tx)
                if len(self.counted) >= 512:
                    self.counted.clear()
                self.counted[ck] = got
            records, sensitive = got
            r[1] += 1
            r[2] += sensitive
            r[3] += records
            return records, sensitive
        records = count_objects(tx)
        if not r[2] or not records:
            return records, 0
        return records, max(1, round(records * r[2] / max(1, r[3])))

    def _actor(self, ident: Identity, ts: float) -> _Actor:
        a = self.actors.get(ident.actor)
        if a is None:
            if len(self.actors) >= self.max_actors:
                self._evict()
            a = self.actors[ident.actor] = _Actor(ident, ts)
            a.last = float("-inf")  # the first call opens (or continues) a session
        return a

    def _new_session(self, actor: _Actor, ts: float) -> _Session:
        if actor.session is None:
            # new in memory: continue its last stored session if that ended less than `idle` ago
            # (an earlier run, or before this actor was evicted)
            aid = actor.id
            if aid is None and (self.stored_before or self.evicted):
                aid = self._actor_id(actor.key)  # (a fresh database: no stored actor to look up)
            if aid is not None:
                actor.id = aid
                row = self.db.execute(
                    'select id, "end" from actor_sessions where actor_id = ? order by "end" desc limit 1',
                    [aid],
                ).fetchone()
                if row and row[1] is not None and 0 <= ts - row[1] <= self.idle:
                    s = _Session(actor, row[1], self.run_id, row[0])
                    return s
        actor.new_sessions += 1
        return _Session(actor, ts, self.run_id)

    def _actor_id(self, key: str) -> int | None:
        row = self.db.execute("select id from actors where actor = ?", [key]).fetchone()
        return row[0] if row else None

    def _evict(self) -> None:
        """Drop the least recently seen tenth of the actors (their pending data is flushed first)."""
        self.flush()
        n = max(1, len(self.actors) // 10)
        for key, _ in sorted(self.actors.items(), key=lambda kv: kv[1].last)[:n]:
            del self.actors[key]
            self.evicted += 1

    def observe_event(self, ev) -> None:
        pass

    # -- writes --
    def _tx_ids(self, calls: list[tuple]) -> list[int | None]:
        """transactions.id of each call: the transaction log numbers this run's transactions in
        the order they were observed, so id = first id of the run + ordinal - 1 (checked)."""
        db = self.db
        if not calls or "transactions" not in db.table_names():
            return [None] * len(calls)
        if self.tx_base is None:
            row = db.execute("select min(id) from transactions where run_id = ?", [self.run_id]).fetchone()
            if row is None or row[0] is None:
                return [None] * len(calls)
            self.tx_base = row[0] - 1
        base = self.tx_base
        out: list[int | None] = [base + c[0] for c in calls]
        # check a few: the first and the last of the batch
        bad = False
        for i in {0, len(calls) - 1}:
            row = db.execute("select run_id, ts from transactions where id = ?", [out[i]]).fetchone()
            if row is None:
                out[i] = None  # not written yet (a flush of this sink alone)
                continue
            if row[0] != self.run_id or abs(row[1] - calls[i][1]) > 1e-6:
                bad = True
        if bad:  # some other numbering: look each one up (slow, exact)
            out = []
            for c in calls:
                got = db.execute(
                    "select id from transactions where run_id = ? and ts = ? order by id limit 1",
                    [self.run_id, c[1]],
                ).fetchone()
                out.append(got[0] if got else None)
        return out

    @staticmethod
    def _max_id(con, table: str) -> int:
        return con.execute(f"select max(id) from {table}").fetchone()[0] or 0

    @staticmethod
    def _inserted_ids(con, before: int, n: int) -> list[int] | None:
        """Ids of the ``n`` rows one executemany just inserted into a table whose largest id was
        ``before``: SQLite gives a new row the largest rowid + 1, so they are ``before + 1`` ...
        ``last_insert_rowid()`` when that makes ``n`` (else None: the caller looks them up)."""
        last = con.execute("select last_insert_rowid()").fetchone()[0]
        if last - before != n:
            return None
        return list(range(before + 1, last + 1))

    def flush(self) -> None:
        if not (self.pending or self.calls or self.closed or any(a.dirty for a in self.actors.values())):
            return
        from .behaviour import no_gc

        with no_gc():  # (rows: many small objects without cycles)
            self._flush()

    def _flush(self) -> None:
        db = self.db
        con = db.conn
        run = self.run_id
        with con:
            # actors (an actor without an id was looked up when its first session opened: it is new)
            new_actors = []
            old_actors = []
            for a in self.actors.values():
                if a.dirty:
                    (new_actors if a.id is None else old_actors).append(a)
            if new_actors:
                before = self._max_id(con, "actors")
                con.executemany(
                    _INSERT_ACTOR,
                    [
                        (
                            a.key,
                            a.kind,
                            a.label,
                            a.issuer,
                            _json_list(a.addresses),
                            a.first,
                            a.last,
                            a[0],
                            a[1],
                            a.new_sessions,
                            *a[2:],
                            run,
                            run,
                            run,
                        )
                        for a in new_actors
                    ],
                )
                ids = self._inserted_ids(con, before, len(new_actors))
                if ids is None:
                    ids = [self._actor_id(a.key) for a in new_actors]
                for a, i in zip(new_actors, ids):
                    a.id = i
            if old_actors:
                stored: dict[int, str | None] = {}
                aids = [a.id for a in old_actors]
                for i in range(0, len(aids), 500):
                    part = aids[i : i + 500]
                    stored.update(
                        con.execute(
                            f"select id, addresses from actors where id in ({','.join('?' * len(part))})",
                            part,
                        ).fetchall()
                    )
                rows = []
                for a in old_actors:
                    c = a
                    addrs = set(json.loads(stored.get(a.id) or "[]"))
                    if not addrs.issuperset(a.addresses):
                        addrs = set(sorted(addrs.union(a.addresses))[:MAX_ADDRESSES])
                    rows.append(
                        (
                            json.dumps(sorted(addrs)),
                            a.first,
                            a.last,
                            c[0],
                            c[1],
                            a.new_sessions,
                            *c[2:],
                            run,
                            a.id,
                        )
                    )
                con.executemany(_UPDATE_ACTOR, rows)
            for a in new_actors:
                a[:] = _ACTOR_ZERO
                a.new_sessions = 0
                a.dirty = False
            for a in old_actors:
                a[:] = _ACTOR_ZERO
                a.new_sessions = 0
                a.dirty = False
            # sessions
            tx_ids = self._tx_ids(self.calls)
            first_tx: dict[int, int] = {}
            last_tx: dict[int, int] = {}
            for call, tid in zip(self.calls, tx_ids):
                if tid is not None:
                    first_tx.setdefault(id(call[3]), tid)
                    last_tx[id(call[3])] = tid
            sessions = {id(a.session): a.session for a in self.actors.values() if a.session is not None}
            for sess in self.closed:
                sessions.setdefault(id(sess), sess)
            for call in self.calls:
                sessions.setdefault(id(call[3]), call[3])
            new_sess = []
            ins_rows = []
            upd_rows = []
            for key, sess in sessions.items():
                if not sess.dirty:
                    continue
                counts = (sess.calls, sess.errors, sess.denied, sess.not_found, sess.bytes)
                if sess.id is None:
                    new_sess.append(sess)
                    ins_rows.append(
                        (
                            sess.actor.id,
                            sess.run_id,
                            sess.start,
                            sess.end,
                            *counts,
                            first_tx.get(key),
                            last_tx.get(key),
                        )
                    )
                else:
                    upd_rows.append((sess.end, *counts, first_tx.get(key), last_tx.get(key), sess.id))
                sess.calls = sess.errors = sess.denied = sess.not_found = sess.bytes = 0
                sess.dirty = False
            if ins_rows:
                before = self._max_id(con, "actor_sessions")
                con.executemany(_INSERT_SESSION, ins_rows)
                ids = self._inserted_ids(con, before, len(ins_rows))
                if ids is None:  # not consecutive (only past the largest rowid): look them up
                    ids = [
                        con.execute(
                            "select id from actor_sessions where actor_id = ? and run_id = ? and start = ? "
                            'and "end" = ? order by id desc limit 1',
                            list(r[:4]),
                        ).fetchone()[0]
                        for r in ins_rows
                    ]
                for sess, i in zip(new_sess, ids):
                    sess.id = i
            if upd_rows:
                con.executemany(_UPDATE_SESSION, upd_rows)
            # per-actor endpoint aggregates (sketches merged with the stored ones)
            aid_of = {a.key: a.id for a in self.actors.values()}
            fresh = {a.id for a in new_actors}  # actors created by this flush: nothing stored yet
            todo = []
            lookup_aids = set()
            for k, agg in self.pending.items():
                aid = aid_of.get(k[0])
                if aid is None:
                    aid = self._actor_id(k[0])
                todo.append((k, aid, agg))
                if aid not in fresh:
                    lookup_aids.add(aid)
            stored_ep: dict[tuple, tuple] = {}
            if lookup_aids:
                la = [a for a in lookup_aids if a is not None]
                for i in range(0, len(la), 500):
                    part = la[i : i + 500]
                    for rid, aid, svc, method, path, ob, ub in con.execute(
                        "select id, actor_id, service, method, path, object_hashes, username_hashes "
                        f"from actor_endpoints where actor_id in ({','.join('?' * len(part))})",
                        part,
                    ):
                        stored_ep[(aid, svc, method, path)] = (rid, ob, ub)
            ins_keys = []
            ins_rows = []
            upd_rows = []
            for k, aid, agg in todo:
                _akey, svc, method, epath = k
                row = stored_ep.get((aid, svc, method, epath)) if stored_ep else None
                objs = agg.objects
                if type(objs) is int:
                    if row is None or not row[1]:  # (one hash, nothing stored: the usual case)
                        obj_blob, n_obj = array("I", (objs,)).tobytes(), 1
                    else:
                        obj_blob, n_obj = sketch_merge(row[1], (objs,))
                else:
                    obj_blob, n_obj = sketch_merge(row[1] if row else None, objs or ())
                if agg.users is None and (row is None or not row[2]):
                    usr_blob, n_usr = b"", 0
                else:
                    usr_blob, n_usr = sketch_merge(row[2] if row else None, agg.users or ())
                tail = (n_obj, n_usr, obj_blob, usr_blob, agg.first, agg.last)
                if row is None:
                    ins_keys.append(k)
                    ins_rows.append((aid, svc, method, epath, *agg, *tail, run, run, run))
                else:
                    upd_rows.append((*agg, *tail, run, row[0]))
                    self.ep_ids[k] = row[0]
            if ins_rows:
                before = self._max_id(con, "actor_endpoints")
                con.executemany(_INSERT_EP, ins_rows)
                ids = self._inserted_ids(con, before, len(ins_rows))
                if ids is None:
                    ids = [
                        con.execute(
                            "select id from actor_endpoints where actor_id = ? and service = ? and "
                            "method = ? and path = ?",
                            list(r[:4]),
                        ).fetchone()[0]
                        for r in ins_rows
                    ]
                for k, i in zip(ins_keys, ids):
                    self.ep_ids[k] = i
            if upd_rows:
                con.executemany(_UPDATE_EP, upd_rows)
            # calls (the timeline)
            rows = []
            for call, tid in zip(self.calls, tx_ids):
                _i, ts, actor, sess, k, method, status, rbytes, sensitive, flags = call
                eid = self.ep_ids.get(k)
                if eid is None:
                    got = con.execute(
                        "select id from actor_endpoints where actor_id = ? and service = ? and "
                        "method = ? and path = ?",
                        [actor.id, k[1], k[2], k[3]],
                    ).fetchone()
                    eid = got[0] if got else None
                rows.append((tid, run, ts, actor.id, sess.id, eid, method, status, rbytes, sensitive, flags))
            con.executemany(_INSERT_CALL, rows)
        self.pending = {}
        self.calls = []
        self.closed = []
        if len(self.ep_ids) > 100_000:
            self.ep_ids.clear()

    def finish(self) -> dict[str, Any]:
        self.flush()
        from .behaviour import analyse_db

        found = analyse_db(self.db, self.settings, run_id=self.run_id)
        n_actors = self.db.execute(
            "select count(*) from actors where last_run_id = ?", [self.run_id]
        ).fetchone()[0]
        n_sessions = self.db.execute(
            "select count(*) from actor_sessions s join actors a on a.id = s.actor_id where "
            "a.last_run_id = ? "
            "and s.run_id = ?",
            [self.run_id, self.run_id],
        ).fetchone()[0]
        out: dict[str, Any] = {
            "actors": {"seen": n_actors, "sessions": n_sessions, "behaviour_findings": found}
        }
        if self.evicted:
            out["actors"]["evicted"] = self.evicted
        return out

    def finish_shard(self) -> dict[str, Any]:
        """One shard of ``replay --workers``: the analysis runs once over the merged shards
        (``discovery.merge``), not here."""
        self.flush()
        return {}


# ---- what a transaction says ---------------------------------------------------------------------


def count_objects(tx) -> int:
    """Objects (``{``) in a JSON response body, scaled like :func:`count_records`."""
    body = tx.response_body
    head = body[:64].lstrip()
    if not head or head[:1] not in (b"{", b"["):
        return 0
    n = body.count(b"{", 0, RECORDS_SCAN)  # (of body[:RECORDS_SCAN], without the copy)
    scanned = min(len(body), RECORDS_SCAN)
    total = max(tx.response_body_len, len(body))
    return int(n * total / scanned) if total > scanned > 0 else n


def count_records(tx) -> tuple[int, int]:
    """(records, sensitive records) in a JSON response body: objects, and the most frequent
    key of personal data or secrets (``email``, ``ssn``, ``card_number``...), from the first
    ``RECORDS_SCAN`` bytes, scaled up to the whole body (also when it was truncated).
    Approximations, the same for every actor, so they compare."""
    body = tx.response_body
    head = body[:64].lstrip()
    if not head or head[:1] not in (b"{", b"["):
        return 0, 0
    part = body[:RECORDS_SCAN]
    records = part.count(b"{")
    best = 0
    low = part.lower()
    for marker, needles in _SENSITIVE_KEYS:
        if marker in low:
            for n in needles:
                c = low.count(n)
                if c > best:
                    best = c
    total = max(tx.response_body_len, len(body))
    if total > len(part) > 0:
        scale = total / len(part)
        records = int(records * scale)
        best = int(best * scale)
    return records, best


def failed_login(tx, status: int, issued: Identity | None) -> bool:
    """A login attempt that failed: refused (401/403), or answered without a credential and
    with a failure message (some APIs answer 200 ``{"status": "fail"}``)."""
    if status in (401, 403):
        return True
    if issued is not None or status >= 500 or status == 0:
        return False
    if not (status < 300 or status in (400, 422)):
        return False
    body = tx.response_body
    if not body:
        return False
    low = bytes(body[:4096]).lower()  # (substring tests: the case-insensitive regex costs ~50 ns a byte)
    return any(w in low for w in _FAIL_WORDS)


def login_user(body: bytes) -> str | None:
    """The user name a login request names (JSON or form body), or None.  Only ever hashed."""
    if not body or len(body) > 8192:
        return None
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if isinstance(doc, dict):
            for k in _USER_KEYS:
                v = doc.get(k)
                if isinstance(v, (str, int)) and str(v):
                    return str(v).lower()
        return None
    if "=" in text:
        fields = dict(parse_qsl(text))
        for k in _USER_KEYS:
            if fields.get(k):
                return fields[k].lower()
    return None
