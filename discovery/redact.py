"""Redaction: the sensor must not become the leak.

Values that grant access (credentials, tokens, cookies) are never stored as seen: they are
replaced by a marker that keeps what is useful for analysis (the auth scheme, the cookie
names, a short keyed hash so the same value can be matched across rows) and nothing that
could be replayed.
"""

from __future__ import annotations

import hashlib

SENSITIVE_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
        "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token", "x-amz-security-token",
        "x-goog-api-key", "private-token", "x-vault-token",
    }
)


def fingerprint(value: str | bytes) -> str:
    """Short stable hash of a sensitive value, for matching without keeping it."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    return hashlib.sha256(b"apisensor:" + value).hexdigest()[:12]


def redact_header(name: str, value: str) -> str:
    lname = name.lower()
    if lname not in SENSITIVE_HEADERS:
        return value
    if lname in ("authorization", "proxy-authorization"):
        scheme, _, cred = value.partition(" ")
        if cred:
            return f"{scheme} <redacted {fingerprint(cred.strip())}>"
        return f"<redacted {fingerprint(value)}>"
    if lname in ("cookie", "set-cookie"):
        parts = []
        for i, item in enumerate(value.split(";")):
            k, eq, v = item.strip().partition("=")
            if lname == "set-cookie" and i > 0:
                parts.append(item.strip())  # attributes (Path, HttpOnly, ...) are not secret
            elif eq:
                parts.append(f"{k}=<redacted {fingerprint(v)}>")
            elif k:
                parts.append(k)
        return "; ".join(parts)
    return f"<redacted {fingerprint(value)}>"


def redact_headers(headers) -> list[list[str]]:
    return [[k, redact_header(k, v)] for k, v in headers]
