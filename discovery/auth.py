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

Redaction of what is stored (samples, examples, URIs) lives in :mod:`discovery.redact`;
:func:`redact_value`, :func:`redact_json`, :func:`redact_query` and :func:`redact_text` here are
compatibility wrappers around it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from .redact import default_redactor

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


def redacted(value: str) -> str:
    """Compatibility: the redactor's mark for a secret (see :mod:`discovery.redact`)."""
    return default_redactor().mark("secret", value)


def redact_value(key: str | None, value: Any) -> Any:
    """Compatibility wrapper: :meth:`discovery.redact.Redactor.value` (random per-process key).
    Sinks use the store's redactor, whose hashes are keyed per database."""
    return default_redactor().value(key, value)


def redact_json(value: Any, key: str | None = None, depth: int = 0) -> Any:
    return default_redactor().json(value, key)


def redact_query(query: str) -> str:
    return default_redactor().query(query)


def redact_text(text: str) -> str:
    return default_redactor().text(text)
