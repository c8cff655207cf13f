"""Redaction: the sensor must not become the leak.

Everything the store writes that came from the wire and may carry a person's data or a
credential goes through one :class:`Redactor` first: transaction URIs and headers (every
transaction), and the inventory's samples, parameter examples, example paths and asset paths
(a few transactions per endpoint).  Sensitive values are replaced by a redacted form like the
findings' evidence, and nothing that could be replayed or read back:

============================  ===============================================================
what                          stored as
============================  ===============================================================
payment card                  ``4012********1881`` (first 4 and last 4 digits)
US SSN                        ``***-**-7855``
phone                         ``(***) ***-0468`` (last 4 digits, separators kept)
IBAN, national id             ``NL20**********6100``, ``**************8E``
email, JWT, token, API key,   ``<redacted:KIND HASH>``: ``KIND`` is ``email``, ``jwt``, a token
password, password hash,      provider (``stripe_secret_key``, ``github_token``...),
private key, secret, date of  ``password``, ``password_hash``, ``private_key``, ``secret``,
birth, street address, long   ``date_of_birth``, ``street_address``, ``token``...;
opaque token                  ``HASH`` a keyed hash (below)
credentials in headers        ``Bearer <redacted:credential HASH>``, ``sid=<redacted:cookie
                              HASH>`` (scheme and cookie names kept)
============================  ===============================================================

Values are classified with the findings detectors' own rules (:mod:`discovery.detectors`):
Luhn + brand for cards, SSA rules for SSNs, libphonenumber for phones, ISO 7064 for IBANs,
python-stdnum for national ids, the token formats, crypt formats and JWT header decoding of
:mod:`~discovery.detectors.secrets`, plus the key name around the value (``password``,
``secret``, ``token``, ``api_key``, ``authorization``, ``ssn``, ``card_number``, ``phone``,
``dob``, ``address``...; a JSON key, a query or form parameter, a header, ``key=value`` in
text).  Free text (HTML, logs, stack traces) goes through the detectors' single pattern pass.
Structure, keys and non-sensitive values stay, so a sample still shows what an endpoint
returns.

``HASH`` is 16 hex digits of keyed BLAKE2b (the findings' :class:`~discovery.detectors.
redaction.Hasher`, under the same key) of the value in the findings' canonical form (an email
in lower case, a token or password as seen), so a redacted sample can be matched with the
``value_hashes`` of a finding and with other rows, without the value.  The key is never in
the database: :func:`hash_key` (``$APISENSOR_HASH_KEY``, else ``<db>.key`` beside it).

Opt-in to keep raw samples: ``Store(path, keep_raw_samples=True)`` (``apisensor replay
--keep-raw-samples``) or ``APISENSOR_KEEP_RAW_SAMPLES=1``: URIs, bodies, examples and
non-credential headers are then stored as seen (runs that did so are listed in ``meta``
under ``raw_samples_runs``).  Credentials in headers (Authorization, cookies, API-key headers)
are redacted always.

Cost: URIs and headers are redacted for every transaction, so they take a fast path (a
segment or query value is only classified when it could be sensitive: long, with digits,
``@``, ``eyJ``..., or under a sensitive name; results are cached per URI); the full
classification runs on the few samples and examples the inventory keeps.
"""

from __future__ import annotations

import bisect
import contextlib
import csv as csvlib
import hashlib
import io
import json
import os
import re
import sys
from typing import Any
from urllib.parse import quote_plus, unquote, unquote_plus

SENSITIVE_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
        "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token", "x-amz-security-token",
        "x-goog-api-key", "private-token", "x-vault-token",
    }
)
URL_HEADERS = frozenset({"location", "content-location", "referer", "origin", "link", "refresh"})
BENIGN_HEADERS = frozenset(
    {
        "host", "user-agent", "accept", "accept-encoding", "accept-language", "accept-ranges",
        "content-type", "content-length", "content-encoding", "content-language", "connection",
        "keep-alive", "transfer-encoding", "te", "upgrade", "cache-control", "pragma", "expires",
        "date", "age", "etag", "last-modified", "if-none-match", "if-modified-since", "vary",
        "server", "x-powered-by", "via", "dnt", "priority", "expect", "allow", "retry-after",
        "strict-transport-security", "content-security-policy", "referrer-policy",
        "x-content-type-options", "x-frame-options", "x-xss-protection", "permissions-policy",
        "access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers",
        "access-control-allow-credentials", "access-control-max-age", "access-control-expose-headers",
        "access-control-request-method", "access-control-request-headers", "upgrade-insecure-requests",
        "sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user", "sec-ch-ua",
        "sec-ch-ua-mobile", "sec-ch-ua-platform", "x-request-id", "x-correlation-id", "traceparent",
        "tracestate", "x-b3-traceid", "x-b3-spanid", "x-forwarded-proto", "x-forwarded-port",
        "content-disposition", "range", "content-range", "www-authenticate", "x-forwarded-for",
        "x-real-ip", "forwarded", "x-forwarded-host", "if-match", "if-unmodified-since", "if-range",
        "x-envoy-upstream-service-time", "server-timing", "timing-allow-origin", "alt-svc", "nel",
        "report-to", "x-amzn-trace-id", "x-cache", "x-served-by", "cf-ray", "x-runtime",
    }
)
KEEP_RAW_ENV = "APISENSOR_KEEP_RAW_SAMPLES"
SHARED_KEY = "apisensor-hash"  # <dir>/apisensor-hash.key (see hash_key)


# ---- the key ---------------------------------------------------------------------------------


def env_keep_raw() -> bool:
    """``$APISENSOR_KEEP_RAW_SAMPLES`` set to something other than empty/0/false/no/off."""
    return os.environ.get(KEEP_RAW_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _private_dir(d: str) -> bool:
    try:
        st = os.stat(d)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def hash_key(db_path: str) -> bytes:
    """The key of the keyed hashes for a database, with the findings' key handling
    (:func:`discovery.detectors.redaction.load_key`): ``$APISENSOR_HASH_KEY`` if set, else the
    random key in ``<db>.key`` beside the database (mode 0600; never in the database itself).
    A new database's ``<db>.key`` starts as a copy of ``apisensor-hash.key`` in its directory
    (created at random on first use) when only its owner can write there, so databases kept
    together (one per day, copies of a test) hash a value alike."""
    from .detectors.redaction import load_key

    own = db_path + ".key"
    if os.environ.get("APISENSOR_HASH_KEY") or db_path == ":memory:" or os.path.exists(own):
        return load_key(db_path)
    d = os.path.dirname(os.path.abspath(db_path))
    if not _private_dir(d):
        return load_key(db_path)
    key = load_key(os.path.join(d, SHARED_KEY))
    try:
        fd = os.open(own, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # created meanwhile: that one is the database's key
        return load_key(db_path)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def fingerprint(value: str | bytes) -> str:
    """Unkeyed short hash (kept for compatibility; stored values use the keyed hash)."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    return hashlib.sha256(b"apisensor:" + value).hexdigest()[:12]


# ---- the rules (the detectors' classifiers, loaded on first use) -----------------------------


class _Rules:
    """What the redactor borrows from the detectors, imported once (they pull in stdnum and
    phonenumbers, which commands that only read a database do not need)."""

    def __init__(self) -> None:
        from .detectors import REGISTRY, pii, posture, secrets
        from .detectors.base import Leaf, key_words
        from .detectors.redaction import mask_digits, mask_tail, stars

        self.pii, self.secrets, self.posture = pii, secrets, posture
        self.Leaf, self.key_words = Leaf, key_words
        self.mask_digits, self.mask_tail, self.stars = mask_digits, mask_tail, stars
        self.scanner = REGISTRY.scanner
        self.email = re.compile(pii.Email.patterns["email"])
        self.ssn = re.compile(pii.SSN.patterns["ssn"])
        self.phone = re.compile(pii.Phone.patterns["phone"])
        self.iban = re.compile(pii.IBAN.patterns["iban"])
        self.natid = re.compile(pii.NationalId.patterns["natid"])
        self.jwt = re.compile(secrets.JWT.patterns["jwt"])
        self.token_literals = secrets.ApiKey.needs["token"]
        self.url_params = posture.URL_PARAMS
        self.placeholder = posture._PLACEHOLDER


_RULES: _Rules | None = None


def _rules() -> _Rules:
    global _RULES
    if _RULES is None:
        _RULES = _Rules()
    return _RULES


# ---- key names ---------------------------------------------------------------------------------

PASSWORD_HASH_WORDS = frozenset({"hash", "hashed", "digest", "salt", "encrypted", "enc", "crypt", "bcrypt"})
PIN_KEYS = frozenset(
    {"pin", "pincode", "cvv", "cvc", "cvv2", "cvc2", "otp", "totp", "mfacode", "securitycode", "passcode"}
)
SECRET_WORDS = frozenset(
    {"credential", "credentials", "signature", "sig", "hmac", "session", "sessionid", "sid", "cookie", "auth",
     "authorization", "bearer", "jwt", "secret", "secrets", "apikey", "token", "privatekey"}
)
SECRET_NOT = frozenset(
    {
        "type", "types", "expires", "expiry", "expiration", "expired", "exp", "ttl", "length", "count",
        "url", "uri", "endpoint", "hint", "lifetime", "format", "kind", "scheme", "usage", "name",
        "enabled", "required", "policy", "public", "publishable", "at", "date", "time", "timeout", "max",
        "min", "status", "mode", "method", "algorithm", "alg", "version", "header", "param", "field",
        "label", "placeholder", "location", "path", "prefix", "issuer", "audience", "scope", "scopes",
        "duration", "age", "created", "updated", "valid", "last", "has", "is", "masked", "last4",
        "provider", "source", "strategy", "rotation", "rotated", "issued", "in", "seconds", "ms", "id",
        "state", "level",
    }
)
CONTAINER_KEEP = frozenset(  # keys inside a credentials object that are not secret themselves
    {"type", "kind", "name", "region", "scope", "scopes", "alg", "kid", "expiresin", "expires", "tokentype",
     "issuer", "audience", "projectid", "clientid", "clientemail", "authuri", "tokenuri", "universedomain"}
)
DIGEST_WORDS = frozenset(
    {"sha", "sha1", "sha256", "sha512", "md5", "hash", "digest", "checksum", "etag", "commit", "build",
     "revision", "rev", "version", "crc", "fingerprint", "integrity"}
)


class KeyInfo:
    """What a key name says about its value (computed once per name)."""

    __slots__ = ("key", "words", "leaf", "password", "pwhash", "secret", "loose", "ssn", "card",
                 "phone", "natid", "dob", "address", "digest", "container", "any")

    def __init__(self, name: str, parent: str = ""):
        r = _rules()
        pii, sec = r.pii, r.secrets
        key, words = r.key_words(name) if name else ("", ())
        pkey, pwords = r.key_words(parent) if parent else ("", ())
        self.key, self.words = key, words
        leaf = self.leaf = r.Leaf("", "", key, words, pkey, pwords)
        w = set(words)
        w |= {x[:-1] for x in w if len(x) > 3 and x.endswith("s")}  # api_keys, tokens, passwords
        self.password = self.pwhash = self.secret = self.loose = False
        if key:
            if sec.PASSWORD_WORDS & w or "password" in key or "passwd" in key:
                if PASSWORD_HASH_WORDS & w:
                    self.pwhash = True
                elif not sec.PASSWORD_NOT & w:
                    self.password = True
            if key in PIN_KEYS or {"cvv", "cvc", "otp", "pin"} & w and not SECRET_NOT & w:
                self.password = True
            if key == "key":
                self.loose = True  # {"key": "color"} is a name; a long random value is not
            elif not (self.password or self.pwhash) and not SECRET_NOT & w:
                self.secret = bool(
                    key in sec.SECRET_KEYS
                    or key in r.url_params
                    or key.endswith(("token", "apikey", "secret", "password", "sessionid", "sessid"))
                    or SECRET_WORDS & w
                    or any(p <= w for p in sec.SECRET_WORD_PAIRS)
                )
        self.ssn = bool(key) and pii._ssn_key(leaf)
        self.card = bool(key) and pii._card_key(leaf)
        self.phone = bool(key) and pii._phone_key(leaf)
        validators = pii.VALIDATORS
        spec = validators.get(key) or next((validators[x] for x in words if x in validators), None)
        if spec is not None:
            self.natid: list[str] | None = [spec[0]]
        elif key in pii.GENERIC_ID_KEYS or {"national", "id"} <= w:
            self.natid = pii.GENERIC_ORDER
        else:
            self.natid = None
        self.dob = key in pii.DOB_KEYS or ("birth" in w and bool({"date", "day"} & w))
        own = bool(pii.ADDRESS_WORDS & w or "address" in key or "street" in key)
        inherited = key in ("line1", "line2", "street", "streetaddress") or (
            bool({"address", "addr"} & set(pwords)) and bool({"street", "line", "line1", "1"} & w)
        )
        self.address = (own or inherited) and not pii.ADDRESS_NOT & w
        self.digest = bool(DIGEST_WORDS & w)
        # an object under this key holds credentials: its string leaves are secrets
        self.container = self.password or self.pwhash or (self.secret and bool({"credential", "credentials",
                                                                                "secrets", "secret"} & w))
        self.any = (self.password or self.pwhash or self.secret or self.loose or self.ssn or self.card
                    or self.phone or self.natid is not None or self.dob or self.address)


_NO_KEY: KeyInfo | None = None
_key_cache: dict[tuple[str, str], KeyInfo] = {}


def keyinfo(name: str | None, parent: str = "") -> KeyInfo:
    global _NO_KEY
    if not name:
        if _NO_KEY is None:
            _NO_KEY = KeyInfo("")
        return _NO_KEY
    k = (name, parent)
    got = _key_cache.get(k)
    if got is None:
        got = KeyInfo(name, parent)
        if len(_key_cache) > 20000:
            _key_cache.clear()
        _key_cache[k] = got
    return got


# ---- value shapes ------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"[0-9a-fA-F]+")
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/=.~]+")
_SEP = re.compile(r"[ -]")
_DIGITS_ONLY = re.compile(r"[\d ()+.\-/]+")
_ROUTE_WORD = re.compile(r"[a-z_.\-]*")  # a path segment that is a word (orders, wp-login.php)
_TEXT_OPAQUE = re.compile(r"(?<![\w+=.~/-])[A-Za-z0-9_\-+]{32,}={0,2}(?![\w+=~/-])")
_KV = re.compile(
    r"(?i)(?<![\w.-])(?P<k>[A-Za-z0-9_.\-]{0,40}?(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key"
    r"|access[_-]?key|private[_-]?key|auth|session(?:[_-]?id)?|sessid|sid|ssn|card[_-]?(?:number|no|num)"
    r"|cvv|cvc|pin|credential)[A-Za-z0-9_.\-]{0,40})(?P<sep>[\"']?[ \t]*[:=][ \t]*[\"']?)"
    r"(?P<v>[^\s\"'&,;<>]{1,512})"
)
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*-----")
_PEM_ANY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_MARK = re.compile(r"<redacted[^>]*>")

NATID_FREE = ["br_cpf", "it_codicefiscale", "es_nif", "fi_hetu", "se_personnummer"]  # as pii.NationalId
TEXT_GROUPS = frozenset({"pem", "jwt", "token", "pwhash", "email", "ssn", "card", "natid", "iban", "phone"})


_NO_DIGITS = str.maketrans("", "", "0123456789")
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
_TEXTY = re.compile(r"[\s:=,;<>\"'&|?()\[\]{}]")


def _digit_count(s: str) -> int:
    return len(s) - len(s.translate(_NO_DIGITS))


class _Full(Exception):
    pass


_encode_str = json.encoder.encode_basestring  # what json.dumps(..., ensure_ascii=False) uses


def _mixed_opaque(s: str) -> bool:
    """A random-looking token: letters of both cases and digits (base64/base62), or long and
    neither hex nor a UUID."""
    has_d = has_u = has_l = False
    for c in s:
        if c.isdigit():
            has_d = True
        elif c.isupper():
            has_u = True
        elif c.islower():
            has_l = True
    if not has_d:
        return False
    if has_u and has_l:
        return True
    return len(s) >= 40 and not _HEX.fullmatch(s) and not _UUID.fullmatch(s) and (has_u or has_l)


class Redactor:
    """One place that decides what of a wire value may be stored (see module doc).

    ``hasher``: the keyed hash (``Hasher(hash_key(db_path))``; default: a random key, so hashes
    match only within this redactor).  ``keep_raw``: store values as seen, except credentials
    in headers."""

    def __init__(self, hasher=None, keep_raw: bool = False):
        if hasher is None:
            from .detectors.redaction import Hasher

            hasher = Hasher()
        self.hasher = hasher
        self.keep_raw = keep_raw
        self._uri_cache: dict[str, str] = {}
        self._hdr_cache: dict[tuple[str, str], str] = {}
        self._hdr_class: dict[str, int] = {}
        self._memo: dict[tuple, Any] = {}
        self._memo_bytes = 0

    def memo(self, key: tuple, size: int, compute):
        """``compute()``, remembered under ``key`` (whose parts include the input, e.g. a body's
        bytes: exact, not a hash of it) while the inputs kept add up to at most 8 MiB.  For the
        redacted text of a body the inventory samples: bodies repeat, redacting one costs."""
        memo = self._memo
        try:
            return memo[key]
        except KeyError:
            pass
        got = compute()
        if size <= 1 << 20:
            if self._memo_bytes + size > 8 << 20 or len(memo) >= 4096:
                memo.clear()
                self._memo_bytes = 0
            memo[key] = got
            self._memo_bytes += size
        return got

    # ---- forms -----------------------------------------------------------------------------
    def digest(self, canonical: str) -> str:
        return self.hasher(canonical)

    def mark(self, kind: str, canonical: str) -> str:
        return f"<redacted:{kind} {self.digest(canonical)}>"

    def _form(self, kind: str, canonical: str, raw: str) -> str:
        r = _rules()
        if kind == "card":
            return r.mask_digits(canonical)
        if kind == "us_ssn":
            return "***-**-" + canonical[-4:]
        if kind == "phone":
            return r.mask_tail(raw.strip())
        if kind.startswith("iban"):
            return canonical[:4] + r.stars(len(canonical) - 8) + canonical[-4:]
        if kind.startswith("natid"):
            return r.stars(len(canonical) - 2) + canonical[-2:]
        return self.mark(kind, canonical)

    # ---- one value ---------------------------------------------------------------------------
    def classify(self, ki: KeyInfo, value: str, number: bool = False, secret: bool = False):
        """``(kind, canonical)`` when the whole ``value`` is sensitive (under key ``ki``), else None."""
        s = value.strip()
        if not s or _MARK.fullmatch(s):
            return None
        r = _rules()
        sec, pii = r.secrets, r.pii
        n = len(s)
        if sec._MASKED.match(s):
            return None
        if ki.password:
            if "$" in s and any(rx.match(s) for _, rx in sec._HASHES):
                return "password_hash", s
            return "password", value
        if ki.pwhash:
            return "password_hash", s
        # formats that say what they are
        if "PRIVATE KEY" in s and _PEM_ANY.search(s):
            return "private_key", s
        if s.startswith("eyJ") and r.jwt.fullmatch(s) and sec.decode_jwt_header(s) is not None:
            return "jwt", s
        if n >= 16 and any(lit in s for lit in r.token_literals):
            for kind, rx in sec._TOKEN_KIND:
                if rx.fullmatch(s):
                    return kind, (s[-40:] if kind == "aws_secret_access_key" else s)
        if "$" in s and any(rx.fullmatch(s) for _, rx in sec._HASHES):
            return "password_hash", s
        if "@" in s and r.email.fullmatch(s) and _personal_email(s):
            return "email", s.lower()
        d = _digit_count(s) if not number else n
        if d >= 7:
            got = self._numeric(ki, s, d, number)
            if got is not None:
                return got
        if ki.natid is not None and n <= 32:
            kind = pii.NationalId._valid(s, ki.natid)
            if kind:
                return "natid_" + kind, re.sub(r"[\s.\-+]", "", s).upper()
        elif d >= 6 and n <= 20 and r.natid.fullmatch(s):
            kind = pii.NationalId._valid(s, NATID_FREE)
            if kind:
                return "natid_" + kind, re.sub(r"[\s.\-+]", "", s).upper()
        if d >= 2 and n >= 15 and s[:2].isalpha() and s[:2].isupper() and s[2:4].isdigit():
            compact = s.replace(" ", "")
            ok = compact[2:4] not in ("00", "01", "99") and r.iban.fullmatch(s)
            if ok and pii.std_iban.is_valid(compact):
                return "iban_" + compact[:2].lower(), compact
        if ki.dob and not number and pii._DATE.match(s):
            return "date_of_birth", s
        if ki.address and not number and 6 <= n <= 200 and not pii._NOT_ADDRESS.match(s):
            if pii._STREET.search(s):
                return "street_address", s
        if ki.secret or secret:
            if not r.placeholder.match(s) and not (number and n <= 4):
                return "secret", s
        elif ki.loose and n >= 16 and _mixed_opaque(s):
            return "secret", s
        if n >= 32 and _OPAQUE.fullmatch(s) and _mixed_opaque(s) and not (ki.digest and _HEX.fullmatch(s)):
            return "token", s
        return None

    def _numeric(self, ki: KeyInfo, s: str, d: int, number: bool):
        r = _rules()
        pii = r.pii
        n = len(s)
        # SSN: the key, or the 3-2-4 layout; the SSA rules either way (the key relaxes the layout)
        if ki.ssn and d == 9 and _DIGITS_ONLY.fullmatch(s):
            return "us_ssn", re.sub(r"\D", "", s)
        if d == 9 and n == 11 and r.ssn.fullmatch(s):
            digits = s.replace("-", "")
            if pii.us_ssn.is_valid(digits):
                return "us_ssn", digits
        # cards: Luhn + brand as pii.Card; a key that names a card needs only the shape
        if 12 <= d <= 19 and (number or _DIGITS_ONLY.fullmatch(s)):
            digits = _SEP.sub("", s)
            if digits.isdigit():
                if ki.card:
                    return "card", digits
                if (s == digits or pii._grouped(s)) and len(set(digits)) >= 2:
                    brand = pii.card_brand(digits)
                    if (
                        brand is not None
                        and pii.luhn.is_valid(digits)
                        and not (ki.key in pii.VALIDATORS or ki.key in pii.GENERIC_ID_KEYS or ki.ssn)
                        and not (brand == "maestro" and len(digits) < 16)
                        and not (ki.key and set(ki.words) & pii.NUMBER_NOT)
                    ):
                        return "card", digits
        # phones: a key that says phone and 7+ digits; else a phone layout that libphonenumber accepts
        if ki.phone and n <= 40:
            if pii.parse_phone(s, strict=False) is not None or _DIGITS_ONLY.fullmatch(s.replace("x", "")):
                return "phone", re.sub(r"[^\d+x]", "", s)
        elif not number and d <= 15 and r.phone.fullmatch(s):
            p = pii.parse_phone(s, strict=True)
            if p is not None:
                import phonenumbers

                return "phone", phonenumbers.format_number(p, phonenumbers.PhoneNumberFormat.E164)
        return None

    def value(self, key: str | None, value: Any, *, parent: str = "", secret: bool = False) -> Any:
        """A scalar (JSON value, query/form/path parameter) as it may be stored."""
        if self.keep_raw or value is None or isinstance(value, (bool, float)):
            return value
        ki = keyinfo(key, parent)
        if isinstance(value, int):
            s = str(value)
            if len(s) < 7 and not (ki.any or secret):
                return value
            got = self.classify(ki, s, number=True, secret=secret)
            return self._form(got[0], got[1], s) if got else value
        if not isinstance(value, str):
            return value
        if secret and ki.key in CONTAINER_KEEP:
            secret = False
        if not secret and not ki.any:
            # fast reject: without a key that names the data, a value must be long, or hold an
            # "@" or 6+ digits to be anything sensitive; an ISO timestamp is not
            if len(value) < 16 and "@" not in value and _digit_count(value) < 6:
                return value
            if _ISO_TIME.fullmatch(value):
                return value
        got = self.classify(ki, value, secret=secret)
        if got is not None:
            return self._form(got[0], got[1], value)
        if len(value) >= 6 and _maybe_in_text(value):
            return self.text(value)
        return value

    # ---- documents -----------------------------------------------------------------------------
    def json(self, doc: Any, key: str | None = None, parent: str = "", secret: bool = False, depth: int = 0):
        """A parsed JSON document with sensitive scalars replaced (keys and structure kept)."""
        if self.keep_raw:
            return doc
        if depth > 40:
            return "…"
        if isinstance(doc, dict):
            inner = secret or (key is not None and keyinfo(key, parent).container)
            return {
                self._key(str(k)): self.json(v, str(k), key or "", inner, depth + 1) for k, v in doc.items()
            }
        if isinstance(doc, list):
            return [self.json(v, key, parent, secret, depth + 1) for v in doc]
        return self.value(key, doc, parent=parent, secret=secret)

    def _key(self, k: str) -> str:
        """A JSON key as it may be stored: a key that is data (a map keyed by email or token) is
        redacted like a value; a name stays."""
        if len(k) < 16 and "@" not in k and _digit_count(k) < 6:
            return k
        got = self.classify(keyinfo(None), k)
        return self._form(got[0], got[1], k) if got is not None else k

    def csv(self, text: str) -> str:
        """CSV with a header row: each cell redacted under its column's name (as the detectors
        read CSV), then the text pass for anything left.  Line structure is kept."""
        if self.keep_raw or not text:
            return text
        lines = text.splitlines(keepends=True)
        try:
            header = next(csvlib.reader([lines[0]]))
        except (StopIteration, csvlib.Error):
            return self.text(text)
        out = [lines[0]]
        for line in lines[1:]:
            body = line.rstrip("\r\n")
            end = line[len(body) :]
            try:
                cells = next(csvlib.reader([body]))
            except (StopIteration, csvlib.Error):
                out.append(line)
                continue
            new = [self.value(h, c) if c else c for h, c in zip(header, cells)] + cells[len(header) :]
            if new != cells:
                buf = io.StringIO()
                csvlib.writer(buf, lineterminator="").writerow(new)
                body = buf.getvalue()
            out.append(body + end)
        return self.text("".join(out))

    def json_text(self, doc: Any, limit: int) -> str:
        """``json.dumps(self.json(doc), ensure_ascii=False, sort_keys=True)``, but redacting and
        serialising together and stopping once past ``limit`` characters: a sample keeps 2 KB,
        and its body may be 256 KB of JSON."""
        parts: list[str] = []
        size = 0
        dumps = json.dumps
        enc = _encode_str

        def emit(x: str) -> None:
            nonlocal size
            parts.append(x)
            size += len(x)
            if size > limit:
                raise _Full

        def walk(v: Any, key: str | None, parent: str, secret: bool, depth: int) -> None:
            if isinstance(v, (dict, list)) and depth > 40:
                emit('"…"')
            elif isinstance(v, dict):
                inner = secret or (key is not None and keyinfo(key, parent).container)
                emit("{")
                for i, k in enumerate(sorted(v)):
                    if i:
                        emit(", ")
                    emit(enc(self._key(k)) + ": ")
                    walk(v[k], k, key or "", inner, depth + 1)
                emit("}")
            elif isinstance(v, list):
                emit("[")
                for i, x in enumerate(v):
                    if i:
                        emit(", ")
                    walk(x, key, parent, secret, depth + 1)
                emit("]")
            else:
                x = self.value(key, v, parent=parent, secret=secret)
                if isinstance(x, str):
                    emit(enc(x))
                elif x is None or x is True or x is False or isinstance(x, float):
                    emit(dumps(x))
                else:
                    emit(int.__repr__(x))

        with contextlib.suppress(_Full):
            walk(doc, None, "", False, 0)
        return "".join(parts)

    def text(self, text: str) -> str:
        """Free text (an HTML page, a log, a truncated JSON body) with sensitive substrings
        replaced: the detectors' pattern pass, ``key=value`` / ``"key": "value"`` pairs under
        sensitive names, private key blocks and long random tokens."""
        if self.keep_raw or not text:
            return text
        r = _rules()
        spans: list[tuple[int, int, str]] = []
        for group, s, e in r.scanner.finditer(text):
            if group not in TEXT_GROUPS:
                continue
            rep = self._hit(group, text, s, e)
            if rep is not None:
                spans.append(rep)
        if "=" in text or ":" in text:
            for m in _KV.finditer(text):
                ki = keyinfo(m.group("k"))
                if not ki.any:
                    continue
                v = m.group("v")
                got = self.classify(ki, v)
                if got is not None:
                    spans.append((m.start("v"), m.end("v"), self._form(got[0], got[1], v)))
        if len(text) >= 32:  # long random tokens, where nothing more specific was found
            taken = sorted((s, e) for s, e, _ in spans)
            for m in _TEXT_OPAQUE.finditer(text):
                v = m.group()
                if _mixed_opaque(v) and not _UUID.search(v):
                    s, e = m.span()
                    i = bisect.bisect_left(taken, (e, e))
                    if not any(ts < e and te > s for ts, te in taken[max(0, i - 8) : i]):
                        spans.append((s, e, self.mark("token", v)))
        if not spans:
            return text
        if "<redacted" in text:  # already redacted (a CSV cell, a second pass): leave marks alone
            marks = [m.span() for m in _MARK.finditer(text)]
            spans = [x for x in spans if not any(ms < x[1] and me > x[0] for ms, me in marks)]
        spans.sort(key=lambda x: (x[0], -x[1]))
        out, pos = [], 0
        for s, e, rep in spans:
            if s < pos:  # overlaps one already replaced
                if e > pos:
                    pos = e
                continue
            out.append(text[pos:s])
            out.append(rep)
            pos = e
        out.append(text[pos:])
        return "".join(out)

    def _hit(self, group: str, text: str, s: int, e: int):
        r = _rules()
        v = text[s:e]
        pii, sec = r.pii, r.secrets
        if group == "email":
            return (s, e, self.mark("email", v.lower())) if _personal_email(v) else None
        if group == "ssn":
            digits = v.replace("-", "")
            return (s, e, "***-**-" + digits[-4:]) if pii.us_ssn.is_valid(digits) else None
        if group == "card":
            digits = _SEP.sub("", v)
            if (v == digits or pii._grouped(v)) and len(set(digits)) >= 2:
                if pii.card_brand(digits) is not None and pii.luhn.is_valid(digits):
                    return s, e, r.mask_digits(digits)
            return None
        if group == "phone":
            return (s, e, r.mask_tail(v)) if pii.parse_phone(v, strict=True) is not None else None
        if group == "iban":
            compact = v.replace(" ", "")
            if compact[2:4] not in ("00", "01", "99") and pii.std_iban.is_valid(compact):
                return s, e, self._form("iban_" + compact[:2].lower(), compact, v)
            return None
        if group == "natid":
            kind = pii.NationalId._valid(v, NATID_FREE)
            if kind:
                compact = re.sub(r"[\s.\-+]", "", v).upper()
                return s, e, self._form("natid_" + kind, compact, v)
            return None
        if group == "jwt":
            return (s, e, self.mark("jwt", v)) if sec.decode_jwt_header(v) is not None else None
        if group == "token":
            kind = next((k for k, rx in sec._TOKEN_KIND if rx.fullmatch(v)), None)
            if kind is None:
                return None
            if kind == "aws_secret_access_key":
                return e - 40, e, self.mark(kind, v[-40:])
            return s, e, self.mark(kind, v)
        if group == "pwhash":
            if any(rx.match(v) for _, rx in sec._HASHES):
                return s, e, self.mark("password_hash", v)
            return None
        if group == "pem":
            m = _PEM_END.search(text, e)
            end = m.end() if m else len(text)
            return s, end, self.mark("private_key", text[s:end])
        return None

    # ---- URIs ---------------------------------------------------------------------------------
    def query(self, query: str) -> str:
        """``a=1&token=abc`` -> ``a=1&token=<redacted:secret …>``: names kept, sensitive values
        replaced (a query string or a form body)."""
        if self.keep_raw or not query:
            return query
        parts = query.split("&")
        changed = False
        for i, part in enumerate(parts):
            name, eq, raw = part.partition("=")
            if not eq or not raw:
                continue
            rep = self._param(name, raw)
            if rep is not None:
                parts[i] = f"{name}={rep}"
                changed = True
        return "&".join(parts) if changed else query

    def _param(self, name: str, raw: str) -> str | None:
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        ki = keyinfo(name)
        v = unquote_plus(raw) if "%" in raw or "+" in raw else raw
        if not ki.any and not _suspect(v):
            return None
        got = self.classify(ki, v)
        if got is not None:
            return self._form(got[0], got[1], v)
        if len(v) >= 6 and _maybe_in_text(v):
            t = self.text(v)
            if t != v:
                return quote_plus(t, safe="<>:*@/")
        return None

    def path(self, path: str) -> str:
        """A path with sensitive segments (and ``;name=value`` parameters) replaced."""
        if self.keep_raw or not path:
            return path
        segs = path.split("/")
        changed = False
        for i, seg in enumerate(segs):
            if len(seg) < 7 and "@" not in seg and ";" not in seg:
                continue
            base, semi, params = seg.partition(";")
            new = self._segment(base) if base else base
            if semi:
                new += ";" + self._matrix(params)
            if new != seg:
                segs[i] = new
                changed = True
        return "/".join(segs) if changed else path

    def _segment(self, seg: str) -> str:
        if len(seg) < 7 and "@" not in seg:
            return seg
        if _ROUTE_WORD.fullmatch(seg) or (seg.isdigit() and len(seg) < 12) or _UUID.fullmatch(seg):
            return seg  # route words, short numeric ids, UUIDs: the common case, nothing to see
        v = unquote(seg) if "%" in seg else seg
        got = self.classify(keyinfo(None), v)
        if got is not None:
            return self._form(got[0], got[1], v)
        if len(v) >= 20 and _OPAQUE.fullmatch(v) and _mixed_opaque(v) and not _UUID.fullmatch(v):
            return self.mark("token", v)
        return seg

    def _matrix(self, params: str) -> str:
        out = []
        for p in params.split(";"):
            name, eq, raw = p.partition("=")
            rep = self._param(name, raw) if eq and raw else None
            out.append(f"{name}={rep}" if rep is not None else p)
        return ";".join(out)

    def uri(self, uri: str | None) -> str | None:
        """A request target as it may be stored (every transaction: fast, cached)."""
        if self.keep_raw or not uri:
            return uri
        got = self._uri_cache.get(uri)
        if got is not None:
            return got
        out = self._uri(uri)
        if len(self._uri_cache) > 8192:
            self._uri_cache.clear()
        self._uri_cache[uri] = out
        return out

    def _uri(self, uri: str) -> str:
        prefix = ""
        rest = uri
        if rest.startswith(("http://", "https://", "ws://", "wss://")) or (
            "://" in rest[:16] and rest[: rest.find("://")].isalpha()
        ):
            scheme, _, after = rest.partition("://")
            slash = after.find("/")
            auth, rest = (after, "") if slash < 0 else (after[:slash], after[slash:])
            if "@" in auth:  # user:password@host
                cred, _, host = auth.rpartition("@")
                auth = f"{self.mark('userinfo', cred)}@{host}"
            prefix = f"{scheme}://{auth}"
        path, q, query = rest.partition("?")
        frag = ""
        if "#" in query:
            query, _, f = query.partition("#")
            frag = "#" + self.text(f)
        elif "#" in path:
            path, _, f = path.partition("#")
            frag = "#" + self.text(f)
        path = self.path(path)
        if q:
            query = self.query(query)
        return prefix + path + (q + query if q else "") + frag

    # ---- headers -------------------------------------------------------------------------------
    def header(self, name: str, value: str) -> str:
        """One header value as it may be stored (credentials always redacted)."""
        return self.headers(((name, value),))[0][1]

    def headers(self, headers) -> list[list[str]]:
        """Headers as they may be stored (every transaction: a dict look-up per header for the
        usual ones; credential and unusual headers cached per value)."""
        out = []
        classes = self._hdr_class
        cache = self._hdr_cache
        for k, v in headers:
            c = classes.get(k)
            if c is None:
                c = classes[k] = _header_class(k, self.keep_raw)
                if len(classes) > 4096:
                    classes.clear()
            if c == 0 or not v:
                out.append([k, v])
                continue
            key = (k, v)
            got = cache.get(key)
            if got is None:
                lname = k.lower()
                got = self._credential(lname, v) if c == 1 else self._header(lname, v)
                if len(cache) > 4096:
                    cache.clear()
                cache[key] = got
            out.append([k, got])
        return out

    def _header(self, lname: str, value: str) -> str:
        if lname in URL_HEADERS:
            if lname == "link":
                return re.sub(r"<([^>]*)>", lambda m: "<" + self.uri(m.group(1)) + ">", value)
            if lname == "refresh":
                return re.sub(r"(?i)(url=)(\S+)", lambda m: m.group(1) + self.uri(m.group(2)), value)
            return self.uri(value)
        ki = keyinfo(lname)
        v, scheme = value.strip(), ""
        if ki.secret and " " in v:  # "Token abc...": keep the scheme
            scheme, _, v = v.partition(" ")
            scheme += " "
        if ki.any or _suspect(v):
            got = self.classify(ki, v)
            if got is not None:
                return scheme + self._form(got[0], got[1], v)
        if len(value) >= 6 and _maybe_in_text(value):
            return self.text(value)
        return value

    def _credential(self, lname: str, value: str) -> str:
        if lname in ("authorization", "proxy-authorization"):
            scheme, _, cred = value.strip().partition(" ")
            if cred.strip():
                return f"{scheme} {self.mark('credential', cred.strip())}"
            return self.mark("credential", value.strip()) if value.strip() else value
        if lname in ("cookie", "set-cookie"):
            parts = []
            for i, item in enumerate(value.split(";")):
                k, eq, v = item.strip().partition("=")
                if lname == "set-cookie" and i > 0:
                    parts.append(item.strip())  # attributes (Path, HttpOnly, ...) are not secret
                elif eq:
                    parts.append(f"{k}={self.mark('cookie', v.strip())}" if v.strip() else f"{k}=")
                elif k:
                    parts.append(k)
            return "; ".join(parts)
        return self.mark("credential", value.strip()) if value.strip() else value


def _header_class(name: str, keep_raw: bool) -> int:
    """0: stored as is; 1: a credential (always redacted); 2: looked at."""
    lname = name.lower()
    if lname in SENSITIVE_HEADERS:
        return 1
    if keep_raw or lname in BENIGN_HEADERS:
        return 0
    return 2


def _personal_email(v: str) -> bool:
    """An address of a person (the pii.email detector's rules: not a file name, not a role
    account or a mailing list)."""
    pii = _rules().pii
    tld = v.rsplit(".", 1)[-1].lower()
    local = v.split("@", 1)[0].lower()
    return not (
        tld in pii.EMAIL_TLD_NOT or ".." in v or local in pii.ROLE_ACCOUNTS or pii._LIST_ADDRESS.search(local)
    )


def _suspect(v: str) -> bool:
    """Could this parameter value be sensitive without a key that says so?  (Fast reject.)"""
    n = len(v)
    if n < 7:
        return "@" in v
    if n >= 16:
        return True
    return "@" in v or "$" in v or any(c.isdigit() for c in v)


def _maybe_in_text(v: str) -> bool:
    """Could a text hold a sensitive substring that classifying it whole did not see?  Only if it
    is more than one token (a single token was classified whole) and has something that could be
    sensitive.  (Fast reject before the pattern pass.)"""
    if not _TEXTY.search(v) or _ISO_TIME.fullmatch(v):
        return False
    if len(v) >= 32 or "@" in v or "eyJ" in v or "$" in v or "KEY" in v or "=" in v:
        return True
    return _digit_count(v) >= 7


def key_kind(k: str) -> str | None:
    """What a JSON key is when it is data rather than a name (``email``, ``jwt``, ``card``,
    ``us_ssn``, ``phone``, a token provider, ``token``...), else None.  The schema learner names
    such a property ``{email}`` etc., so that data never becomes a field name."""
    if len(k) < 16 and "@" not in k and _digit_count(k) < 6:
        return None
    got = default_redactor().classify(keyinfo(None), k)
    return got[0] if got is not None else None


# ---- compatibility -------------------------------------------------------------------------------

_DEFAULT: Redactor | None = None


def default_redactor() -> Redactor:
    """A redactor with a random per-process key (for callers without a database)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Redactor()
    return _DEFAULT


def redact_header(name: str, value: str) -> str:
    return default_redactor().header(name, value)


def redact_headers(headers, redactor: Redactor | None = None) -> list[list[str]]:
    return (redactor or default_redactor()).headers(headers)


def warn_keep_raw(where: str) -> None:
    print(
        f"apisensor: warning: keeping raw samples: URIs, samples and examples are stored in {where} "
        "UNREDACTED (personal data and secrets as seen on the wire; credential headers stay redacted)",
        file=sys.stderr,
    )


__all__ = [
    "KEEP_RAW_ENV",
    "Redactor",
    "SENSITIVE_HEADERS",
    "default_redactor",
    "env_keep_raw",
    "fingerprint",
    "hash_key",
    "key_kind",
    "keyinfo",
    "redact_header",
    "redact_headers",
]
