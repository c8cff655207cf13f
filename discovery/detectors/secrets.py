"""Secrets: well-known token formats, private keys, plaintext passwords, password hashes, JWTs.

Provider tokens are recognised by their documented formats (prefix + alphabet + length:
AWS ``AKIA…``, GitHub ``ghp_…`` with its CRC32 check digits verified when present, GitLab
``glpat-…``, Slack ``xox?-…`` and webhook URLs, Stripe ``sk_live_…``, Google ``AIza…``,
SendGrid, npm, OpenAI); a generic secret needs a key that names it (``client_secret``,
``api_key``) *and* a value with the entropy of a random string.  Passwords need a password key
and a value that is not masked (``****``, ``[REDACTED]``) and not a hash; hashes are recognised
by their crypt formats (bcrypt, argon2, sha-crypt, yescrypt, Django pbkdf2).  JWTs must decode
(base64url JSON header with ``alg``).  Request headers, cookies and URLs are left to
``posture`` (credentials are *meant* to travel there; what matters is how).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Iterator

from .base import API3, API8, Base, Finding, Leaf
from .redaction import mask_secret

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

TOKEN_FORMATS = [  # (kind, regex) — tried in order on each "token" hit
    ("aws_access_key_id", r"(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z2-7]{16}"),
    ("github_token", r"gh[pousr]_[A-Za-z0-9]{36}"),
    ("github_pat", r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"),
    ("gitlab_token", r"glpat-[A-Za-z0-9_-]{20,}"),
    ("slack_token", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    ("slack_webhook", r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"),
    ("stripe_secret_key", r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    ("google_api_key", r"AIza[A-Za-z0-9_-]{35}"),
    ("sendgrid_api_key", r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),
    ("npm_token", r"npm_[A-Za-z0-9]{36}"),
    (
        "openai_api_key",
        r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"
        r"|sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}",
    ),
    (
        "aws_secret_access_key",
        r"(?i:aws_?secret_?access_?key|secretaccesskey)[\"']?\s*[:=]\s*[\"']?"
        r"[A-Za-z0-9/+]{40}",
    ),
]
_TOKEN_KIND = [(k, re.compile(p)) for k, p in TOKEN_FORMATS]

PASSWORD_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "pass", "passcode", "pword"})
PASSWORD_NOT = frozenset(
    {
        "hash",
        "hashed",
        "digest",
        "salt",
        "changed",
        "updated",
        "reset",
        "policy",
        "expires",
        "expiry",
        "expired",
        "expiration",
        "required",
        "has",
        "is",
        "hint",
        "strength",
        "length",
        "min",
        "max",
        "last",
        "at",
        "date",
        "time",
        "url",
        "link",
        "token",
        "rules",
        "forgot",
        "type",
        "enabled",
        "set",
        "age",
        "history",
        "count",
        "attempts",
        "less",
        "protected",
        "auth",
        "authentication",
        "field",
        "label",
        "placeholder",
        "error",
        "errors",
        "valid",
        "validation",
        "score",
        "complexity",
        "mode",
        "method",
        "algorithm",
        "encrypted",
        "enc",
        "storage",
        "manager",
        "regex",
        "pattern",
        "lifetime",
        "version",
        "id",
        "ttl",
        "status",
        "flag",
    }
)
_MASKED = re.compile(
    r"^(?:(.)\1{2,}|\[?(?:redacted|hidden|filtered|masked|removed|secret)\]?|<[^>]*>|null|none|"
    r"undefined|n/?a|\$\{[^}]*\}|\{\{[^}]*\}\}|%\([^)]*\)s|changeme|\*{3,}\w{0,4})$",
    re.I,
)
SECRET_KEYS = frozenset(
    {
        "clientsecret",
        "apisecret",
        "secretkey",
        "secretaccesskey",
        "apikey",
        "apitoken",
        "accesskey",
        "signingkey",
        "encryptionkey",
        "webhooksecret",
        "appsecret",
        "masterkey",
        "consumersecret",
        "secret",
        "privatekey",
        "authtoken",
        "sharedsecret",
        "hmackey",
        "jwtsecret",
        "sessionsecret",
        "token",
        "accesstoken",
        "refreshtoken",
        "botToken",
        "bottoken",
        "pat",
        "personalaccesstoken",
        "deploytoken",
        "servicekey",
        "licensekey",
    }
)
SECRET_WORD_PAIRS = ({"secret"}, {"api", "key"}, {"private", "key"}, {"access", "key"}, {"token"})
PUBLIC_PREFIX = ("pk_live_", "pk_test_", "pub_", "public")
_HASHES = [
    ("bcrypt", re.compile(r"\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}")),
    ("argon2", re.compile(r"\$argon2(?:id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")),
    ("yescrypt", re.compile(r"\$y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{43}")),
    ("sha512crypt", re.compile(r"\$6\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}")),
    ("sha256crypt", re.compile(r"\$5\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{43}")),
    ("md5crypt", re.compile(r"\$1\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}")),
    ("apr1", re.compile(r"\$apr1\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}")),
    ("django_pbkdf2", re.compile(r"pbkdf2_sha(?:256|1)\$\d+\$[A-Za-z0-9./+]+\$[A-Za-z0-9+/=]{40,}")),
]


def entropy(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values()) if n else 0.0


def _side_ok(leaf: Leaf) -> bool:
    """Secrets detectors read responses (bodies, headers) and request bodies."""
    return (
        leaf.side == "response"
        and leaf.part in ("body", "header")
        or leaf.side == "request"
        and leaf.part == "body"
    )


def _sev(leaf: Leaf, high: str) -> tuple[str, str]:
    return (high, API3) if leaf.side == "response" else ("medium", API8)


def github_checksum_ok(token: str) -> bool:
    body = token[4:]
    if len(body) != 36:
        return False
    n = zlib.crc32(body[:30].encode())
    s = ""
    while n:
        n, r = divmod(n, 62)
        s = _B62[r] + s
    return s.rjust(6, "0") == body[30:]


class ApiKey(Base):
    name = "secrets.api_key"
    reads = ("token",)
    necessary = {
        "token": (
            "AKIA",
            "ASIA",
            "AGPA",
            "AIDA",
            "AROA",
            "ANPA",
            "ANVA",
            "AIPA",
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "glpat-",
            "xox",
            "k_live_",
            "k_test_",
            "AIza",
            "SG.",
            "npm_",
            "sk-",
            "https://hooks.slack.com/services/",
            "(?i)secret",
        )
    }
    needs = {
        "token": (
            "AKIA",
            "ASIA",
            "AGPA",
            "AIDA",
            "AROA",
            "ANPA",
            "ANVA",
            "AIPA",
            "ghp_",
            "gho_",
            "ghu_",
            "ghs_",
            "ghr_",
            "github_pat_",
            "glpat-",
            "xox",
            "_live_",
            "_test_",
            "AIza",
            "SG.",
            "npm_",
            "sk-",
            "hooks.slack.com",
            "SECRET_ACCESS",
            "secret_access",
            "SecretAccess",
            "secretAccess",
            "secretaccess",
            "SECRETACCESS",
        )
    }
    patterns = {
        "token": r"(?<![\w-])(?:(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z2-7]{16}"
        r"|gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82}|glpat-[A-Za-z0-9_-]{20,}"
        r"|xox[abposr]-[A-Za-z0-9-]{10,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|AIza[A-Za-z0-9_-]{35}"
        r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}|npm_[A-Za-z0-9]{36}"
        r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{40,})(?![\w-])"
        r"|https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"
        r"|(?i:aws_?secret_?access_?key|secretaccesskey)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![\w/+])",
    }

    def detect(self, ctx) -> Iterator[Finding]:
        seen: set[str] = set()
        for h in ctx.hits("token"):
            if not _side_ok(h.leaf):
                continue
            kind = next((k for k, rx in _TOKEN_KIND if rx.fullmatch(h.text)), None)
            if kind is None:
                continue
            value = h.text
            if kind == "aws_secret_access_key":
                value = h.text[-40:]
            confidence = "high"
            if kind == "github_token":
                confidence = "high" if github_checksum_ok(value) else "medium"
            seen.add(h.leaf.location)
            sev, cat = _sev(h.leaf, "critical" if "test" not in value[:8] else "high")
            yield self.finding(
                ctx,
                h.leaf.location,
                kind,
                mask_secret(value),
                value,
                severity=sev,
                category=cat,
                confidence=confidence,
            )
        for leaf in ctx.leaves:
            if leaf.location in seen or not leaf.key or leaf.part != "body" or not _side_ok(leaf):
                continue
            if not self._secret_key(leaf):
                continue
            v = leaf.value.strip()
            if (
                len(v) < 16
                or len(v) > 512
                or " " in v
                or v.lower().startswith(PUBLIC_PREFIX)
                or _MASKED.match(v)
                or v.startswith(("eyJ", "http://", "https://", "-----BEGIN", "$"))
                or any(rx.match(v) for _, rx in _HASHES)
            ):
                continue
            if entropy(v) < 3.0 or not (re.search(r"\d", v) and re.search(r"[A-Za-z]", v)):
                continue
            kind = (
                "aws_secret_access_key"
                if len(v) == 40 and {"aws", "secret"} & set(leaf.words) | ({"secretaccesskey"} & {leaf.key})
                else "generic_secret"
            )
            seen.add(leaf.location)
            sev, cat = _sev(leaf, "high")
            yield self.finding(
                ctx, leaf.location, kind, mask_secret(v), v, severity=sev, category=cat, confidence="medium"
            )

    @classmethod
    def wants_key(cls, leaf: Leaf) -> bool:
        return bool(leaf.key) and cls._secret_key(leaf)

    @staticmethod
    def _secret_key(leaf: Leaf) -> bool:
        if leaf.key in SECRET_KEYS:
            return leaf.key not in ("token", "accesstoken", "refreshtoken")  # session tokens: see secrets.jwt
        w = set(leaf.words)
        if "public" in w or "publishable" in w or PASSWORD_WORDS & w:
            return False
        return any(p <= w for p in SECRET_WORD_PAIRS[:4])


class PrivateKey(Base):
    name = "secrets.private_key"
    severity = "critical"
    needs = {"pem": ("PRIVATE KEY",)}
    necessary = needs
    reads = ("pem",)
    patterns = {"pem": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"}
    _body = re.compile(
        r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?)-----\s*([A-Za-z0-9+/=\s:,-]{40,}?)"
        r"\s*-----END"
    )

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for h in ctx.hits("pem"):
            if h.leaf.location in seen or not _side_ok(h.leaf):
                continue
            m = self._body.match(h.leaf.value, h.start)
            if not m:
                continue  # a marker without key material (docs, placeholders)
            seen.add(h.leaf.location)
            material = "".join(m.group(2).split())
            sev, cat = _sev(h.leaf, "critical")
            yield self.finding(
                ctx,
                h.leaf.location,
                m.group(1).lower().replace(" ", "_"),
                f"-----BEGIN {m.group(1)}----- [{len(material)} chars redacted]",
                material,
                severity=sev,
                category=cat,
            )


class Password(Base):
    name = "secrets.password"
    reads = ()

    @staticmethod
    def wants_key(leaf: Leaf) -> bool:
        w = set(leaf.words)
        named = PASSWORD_WORDS & w or "password" in leaf.key or "passwd" in leaf.key
        return bool(named) and not PASSWORD_NOT & w

    def detect(self, ctx) -> Iterator[Finding]:
        for leaf in ctx.leaves:
            if leaf.part != "body" or not leaf.key or leaf.number or not _side_ok(leaf):
                continue
            if not self.wants_key(leaf):
                continue
            v = leaf.value
            if not 1 <= len(v) <= 256 or _MASKED.match(v.strip()) or any(rx.match(v) for _, rx in _HASHES):
                continue
            sev, cat = _sev(leaf, "high")
            yield self.finding(
                ctx, leaf.location, "plaintext_password", "********", v, severity=sev, category=cat
            )


class PasswordHash(Base):
    name = "secrets.password_hash"
    needs = {"pwhash": ("$",)}
    necessary = needs
    reads = ("pwhash",)
    patterns = {
        "pwhash": r"\$(?:2[abxy]?|argon2(?:id|i|d)|[156y]|apr1)\$[^\s\"'\x00]{20,}"
        r"|pbkdf2_sha(?:256|1)\$\d+\$[^\s\"'\x00]{20,}"
    }

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for h in ctx.hits("pwhash"):
            if h.leaf.location in seen or not _side_ok(h.leaf):
                continue
            kind = next((k for k, rx in _HASHES if rx.match(h.text)), None)
            if kind is None:
                continue
            seen.add(h.leaf.location)
            scheme = h.text.split("$")[1] if h.text.startswith("$") else h.text.split("$")[0]
            sev, cat = _sev(h.leaf, "high")
            yield self.finding(
                ctx,
                h.leaf.location,
                kind,
                f"${scheme}$… [{len(h.text)} chars]",
                h.text,
                severity=sev,
                category=cat,
            )


def decode_jwt_header(token: str) -> dict | None:
    part = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        head = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return head if isinstance(head, dict) and "alg" in head else None


def decode_jwt_claims(token: str) -> dict:
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return claims if isinstance(claims, dict) else {}
    except (ValueError, IndexError, binascii.Error, UnicodeDecodeError):
        return {}


def jwt_evidence(token: str, head: dict) -> str:
    claims = decode_jwt_claims(token)
    names = ",".join(sorted(claims)[:12])
    return f"JWT alg={str(head.get('alg'))[:16]} typ={str(head.get('typ', '-'))[:16]} claims=[{names}]"


class JWT(Base):
    name = "secrets.jwt"
    severity = "low"
    needs = {"jwt": ("eyJ",)}
    necessary = {"jwt": r"eyJ[A-Za-z0-9_-]{5,}\.eyJ"}  # a JSON header, then a JSON payload
    reads = ("jwt",)
    patterns = {"jwt": r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"}

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for h in ctx.hits("jwt"):
            leaf = h.leaf
            if leaf.location in seen or leaf.side != "response" or leaf.part not in ("body", "header"):
                continue
            head = decode_jwt_header(h.text)
            if head is None:
                continue
            seen.add(leaf.location)
            yield self.finding(ctx, leaf.location, "jwt", jwt_evidence(h.text, head), h.text, category=API3)


DETECTORS = [ApiKey(), PrivateKey(), Password(), PasswordHash(), JWT()]
