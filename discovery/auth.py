"""How a request authenticates, and redaction of secrets in the samples the inventory keeps.

:func:`auth_schemes` names the schemes a request carries, as short stable strings:

- ``none``: nothing recognisable;
- ``basic``, ``digest``, ``bearer``, ``bearer-jwt:HS256`` (the JWT header's ``alg``; ``none``
  is reported as ``bearer-jwt:none``), ``negotiate``, ``ntlm``, ``aws-sigv4``, or the
  Authorization scheme's name in lower case;
- ``apikey-header:x-api-key``, ``apikey-query:api_key``, ``apikey-cookie:apikey``: an API key
  in that header, query parameter or cookie;
- ``session-cookie:sessionid`` (``cookie-jwt:token:RS256`` when the cookie holds a JWT).

Only names and algorithms are kept, never the credential.  Decoding a JWT header costs a
little, so results are cached per Authorization value (bounded).

:func:`redact_value`, :func:`redact_json` and :func:`redact_query` make the samples safe to
store: values under secret-looking keys, and values that look like credentials anywhere
(JWTs, bearer tokens, long opaque tokens, card numbers, US SSNs, private keys), become
``<redacted fingerprint>`` (a short keyed hash from :mod:`discovery.redact`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import unquote_plus

from .redact import fingerprint

APIKEY_HEADERS = frozenset(
    {
        "x-api-key",
        "api-key",
        "apikey",
        "x-apikey",
        "x-auth-token",
        "x-access-token",
        "x-token",
        "private-token",
        "x-goog-api-key",
        "x-vault-token",
        "x-amz-security-token",
        "ocp-apim-subscription-key",
        "x-functions-key",
        "x-rapidapi-key",
        "x-client-secret",
        "x-session-token",
        "authorization-token",
        "x-auth-key",
    }
)
APIKEY_QUERY = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "key",
        "access_token",
        "token",
        "auth",
        "auth_token",
        "apitoken",
        "x-api-key",
        "client_secret",
        "sig",
        "signature",
        "session",
        "sessionid",
        "jwt",
        "id_token",
    }
)
SESSION_COOKIE = re.compile(
    r"(^|[_.-])(session|sess|sid|sessid|sessionid|jsessionid|phpsessid|connect\.sid|auth|token|jwt|"
    r"access_token|id_token|remember_token|asp\.net_sessionid|laravel_session|_session)($|[_.-])|session",
    re.IGNORECASE,
)
APIKEY_COOKIE = re.compile(r"api[_-]?key", re.IGNORECASE)

SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|^auth$|authorization|credential|private[_-]?key|"
    r"session|cookie|signature|otp|pin$|cvv|cvc|ssn|card[_-]?number|^pan$|iban|account[_-]?number",
    re.IGNORECASE,
)

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/=]{24,}")
_UUIDISH = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_cache: dict[str, str] = {}


def jwt_alg(token: str) -> str | None:
    """The ``alg`` of a JWT (header decoded, signature not checked), or None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].startswith("eyJ"):
        return None
    h = parts[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    alg = header.get("alg")
    return str(alg) if alg is not None else "missing"


def _authorization(value: str) -> str:
    hit = _cache.get(value)
    if hit is not None:
        return hit
    scheme, _, cred = value.strip().partition(" ")
    s = scheme.lower()
    if not cred:
        alg = jwt_alg(scheme)
        out = f"bearer-jwt:{alg}" if alg else "authorization"
    elif s == "bearer":
        alg = jwt_alg(cred.strip())
        out = f"bearer-jwt:{alg}" if alg else "bearer"
    elif s == "aws4-hmac-sha256":
        out = "aws-sigv4"
    elif s in ("basic", "digest", "negotiate", "ntlm", "token", "hoba", "mutual", "vapid"):
        out = s
    else:
        out = re.sub(r"[^a-z0-9_-]", "", s)[:32] or "authorization"
    if len(_cache) > 4096:
        _cache.clear()
    _cache[value] = out
    return out


_cookie_cache: dict[str, list[str]] = {}


def _cookies(value: str) -> list[str]:
    hit = _cookie_cache.get(value)
    if hit is not None:
        return hit
    out = []
    for item in value.split(";"):
        name, eq, val = item.strip().partition("=")
        if not eq:
            continue
        if APIKEY_COOKIE.search(name):
            out.append("apikey-cookie:" + name)
        elif SESSION_COOKIE.search(name):
            alg = jwt_alg(val.strip()) if val.startswith("eyJ") else None
            out.append(f"cookie-jwt:{name}:{alg}" if alg else "session-cookie:" + name)
    if len(_cookie_cache) > 4096:
        _cookie_cache.clear()
    _cookie_cache[value] = out
    return out


def auth_schemes(headers, query_names: list[str] | tuple[str, ...] = (), lowered: bool = False) -> list[str]:
    """The schemes one request carries (``["none"]`` when there is none); see module doc.
    ``lowered``: the header names are already lower case."""
    out: list[str] = []
    for k, v in headers:
        lk = k if lowered else k.lower()
        if lk == "authorization":
            out.append(_authorization(v))
        elif lk in APIKEY_HEADERS:
            out.append("apikey-header:" + lk)
        elif lk == "cookie":
            out.extend(_cookies(v))
    for name in query_names:
        ln = name.lower()
        if ln in APIKEY_QUERY:
            out.append("apikey-query:" + name)
    if not out:
        return ["none"]
    return sorted(set(out))


def _luhn(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


def _secret_looking(s: str) -> bool:
    if len(s) < 9:
        return False
    if _JWT.search(s) or _BEARER.search(s) or _PRIVATE_KEY.search(s) or _SSN.search(s):
        return True
    for m in _CARD.finditer(s):
        d = re.sub(r"\D", "", m.group())
        if 13 <= len(d) <= 19 and _luhn(d):
            return True
    return bool(
        _OPAQUE.fullmatch(s)
        and not _UUIDISH.fullmatch(s)
        and any(c.isdigit() for c in s)
        and any(c.isalpha() for c in s)
        and not s.isdigit()
    )


def redacted(value: str) -> str:
    return f"<redacted {fingerprint(value)}>"


def redact_value(key: str | None, value: Any) -> Any:
    """A JSON scalar as it may be stored: secrets (by key name or by look) are replaced."""
    if value is None or isinstance(value, bool):
        return value
    if key is not None and SECRET_KEY.search(key):
        return redacted(str(value))
    if isinstance(value, str) and _secret_looking(value):
        return redacted(value)
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and len(str(abs(value))) >= 13
        and _luhn(str(abs(value)))
    ):
        return redacted(str(value))
    return value


def redact_json(value: Any, key: str | None = None, depth: int = 0) -> Any:
    if depth > 20:
        return "…"
    if isinstance(value, dict):
        if key is not None and SECRET_KEY.search(key):
            return redacted(json.dumps(value, sort_keys=True))
        return {k: redact_json(v, k, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, key, depth + 1) for v in value]
    return redact_value(key, value)


def redact_query(query: str) -> str:
    """``a=1&token=abc`` -> ``a=1&token=<redacted …>`` (names kept, secret values replaced)."""
    if not query:
        return query
    out = []
    for part in query.split("&"):
        name, eq, val = part.partition("=")
        if not eq:
            out.append(name)
            continue
        raw = unquote_plus(val)
        if SECRET_KEY.search(unquote_plus(name)) or name.lower() in APIKEY_QUERY or _secret_looking(raw):
            out.append(f"{name}={redacted(raw)}")
        else:
            out.append(part)
    return "&".join(out)


def redact_text(text: str) -> str:
    """Free text (a non-JSON body): credential-looking substrings replaced."""
    text = _JWT.sub(lambda m: redacted(m.group()), text)
    text = _BEARER.sub(lambda m: m.group(1) + " " + redacted(m.group()), text)
    text = _SSN.sub(lambda m: redacted(m.group()), text)

    def card(m: re.Match) -> str:
        d = re.sub(r"\D", "", m.group())
        return redacted(m.group()) if 13 <= len(d) <= 19 and _luhn(d) else m.group()

    text = _CARD.sub(card, text)
    if _PRIVATE_KEY.search(text):
        text = _PRIVATE_KEY.sub("<redacted private key>", text)
    return text
