"""Evidence redaction: what a finding may show of the value it found.

Findings keep enough to act on (the card brand and last four digits, the token's provider
prefix, the exception type and source file) and never the value itself.  Each masking
function returns text that cannot be turned back into the value; :func:`scrub` cleans free
text (error messages, paths) of anything that looks like an email, a long number or a token
before it becomes evidence.  Matching across rows uses a keyed hash (:class:`Hasher`), not
the value.
"""

from __future__ import annotations

import hashlib
import os
import re


class Hasher:
    """Keyed BLAKE2b (a MAC; 16 hex digits) under a key that is not stored with the data."""

    def __init__(self, key: bytes | None = None):
        key = key or os.urandom(32)
        self.key = key if len(key) <= 64 else hashlib.sha256(key).digest()

    def __call__(self, value: str) -> str:
        return hashlib.blake2b(
            value.encode("utf-8", "surrogatepass"), key=self.key, digest_size=8
        ).hexdigest()


def load_key(db_path: str) -> bytes:
    """The hash key for a database: ``$APISENSOR_HASH_KEY`` (hex) if set, else a random key kept
    in ``<db>.key`` (mode 0600) beside the database, created on first use; never in the database
    itself, so a copy of the database alone does not allow guessing values from their hashes."""
    env = os.environ.get("APISENSOR_HASH_KEY")
    if env:
        return bytes.fromhex(env) if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", env) else env.encode()
    if db_path == ":memory:":
        return os.urandom(32)
    path = db_path + ".key"
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) >= 16:
            return key
    except FileNotFoundError:
        pass
    key = os.urandom(32)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def stars(n: int) -> str:
    return "*" * max(1, min(n, 24))


def mask_digits(digits: str, head: int = 4, tail: int = 4) -> str:
    """``4111111111111111`` -> ``4111********1111``."""
    if len(digits) <= head + tail:
        return stars(len(digits))
    return digits[:head] + stars(len(digits) - head - tail) + digits[-tail:]


def mask_tail(value: str, tail: int = 4) -> str:
    """Keep only the last ``tail`` characters (shape of separators preserved)."""
    out, kept = [], 0
    for c in reversed(value):
        if c.isalnum():
            out.append(c if kept < tail else "*")
            kept += 1
        else:
            out.append(c)
    return "".join(reversed(out))


def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return (local[:1] + "***@" + domain) if domain else stars(len(value))


_PREFIX = re.compile(r"^(?:[A-Za-z]{2,12}[_-](?:live_|test_|proj-|pat_)?|AKIA|ASIA|AIza|SG\.|xox[a-z]-)")


def mask_secret(value: str) -> str:
    """Provider prefix and the last 4 characters of a long secret: ``ghp_…[36]…3kF9``; short
    values are fully hidden."""
    if len(value) < 16:
        return "********"
    m = _PREFIX.match(value)
    prefix = m.group(0) if m else ""
    return f"{prefix}…[{len(value)}]…{value[-4:]}"


_SCRUB = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"  # emails
    r"|eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_.-]*"  # JWTs
    r"|\d[\d -]{6,}\d"  # long numbers (cards, ids, phones)
    r"|(?<![\w/.])[A-Za-z0-9_+=-]{24,}"  # long tokens (not paths: no "/")
)


def scrub(text: str, limit: int = 240) -> str:
    """Free text (an exception message, a path) made safe to store as evidence."""
    text = " ".join(text.split())
    text = _SCRUB.sub(lambda m: "<redacted>", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
