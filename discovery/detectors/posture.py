"""Exposure posture: how credentials travel and who gets sensitive data.

- ``posture.cleartext_credentials``: Basic/Bearer/Digest/token credentials in request headers,
  session cookies in requests, and session cookies set by responses, seen on the wire: the
  sensor reads plaintext HTTP, so whoever can see this traffic can replay them (Basic auth is
  worst: it *is* the password).
- ``posture.credentials_in_url``: tokens, API keys, passwords and session ids in the query
  string or the path (they end up in logs, proxies and Referer headers).
- ``posture.jwt_alg_none``: an unsigned JWT (``alg: none``) anywhere in the exchange.
- ``posture.unauthenticated_sensitive``: a response with personal data or secrets to a request
  that carried no credential at all (no Authorization, API-key header, session cookie or token
  parameter).  Reads the findings of the data detectors, so it runs last.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .base import API2, API8, SEVERITY_RANK, Base, Finding
from .redaction import mask_secret
from .secrets import _TOKEN_KIND, decode_jwt_header, jwt_evidence

CRED_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "apikey",
        "x-auth-token",
        "x-access-token",
        "x-csrf-token",
        "x-amz-security-token",
        "x-goog-api-key",
        "private-token",
        "x-vault-token",
        "x-auth",
        "x-token",
        "x-session-token",
        "x-apikey",
        "x-shopify-access-token",
        "x-gitlab-token",
        "x-api-token",
        "auth-token",
    }
)
SESSION_COOKIE = re.compile(
    r"(?i)(?:^|[._-])(?:sess(?:ion)?(?:id)?|sid|jsessionid|phpsessid|aspsessionid\w*"
    r"|asp\.net_sessionid|connect\.sid|laravel_session|ci_session|auth(?:_?token)?"
    r"|access_?token|refresh_?token|id_?token|jwt|token|remember_?(?:me|token)?"
    r"|_session|sessid)(?:$|[._-])|^_\w*_session$|^sid$|^session$"
)
URL_PARAMS = frozenset(
    {
        "token",
        "accesstoken",
        "authtoken",
        "idtoken",
        "refreshtoken",
        "apikey",
        "apitoken",
        "secret",
        "clientsecret",
        "password",
        "passwd",
        "pwd",
        "pass",
        "sessionid",
        "session",
        "sid",
        "jsessionid",
        "phpsessid",
        "auth",
        "authorization",
        "privatetoken",
        "accesskey",
        "secretkey",
        "xapikey",
        "key",
        "signature_token",
        "bearer",
        "jwt",
        "apisecret",
        "oauthtoken",
        "sessiontoken",
        "authkey",
        "appkey",
        "appsecret",
    }
)
_PLACEHOLDER = re.compile(r"^(?:true|false|null|none|undefined|bearer|basic|\d{1,4}|[a-z]{1,6})$", re.I)
_JSESSION = re.compile(r";(?:jsessionid|phpsessid|sid)=[^/?;]+", re.I)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


class CleartextCredentials(Base):
    name = "posture.cleartext_credentials"
    category = API8

    def detect(self, ctx) -> Iterator[Finding]:
        if getattr(ctx.tx, "tls", False):  # forward-compatible: decrypted TLS is not cleartext
            return
        for name, value in ctx.tx.request_headers:
            ln = name.lower()
            if ln in CRED_HEADERS:
                scheme, _, cred = value.strip().partition(" ")
                if ln in ("authorization", "proxy-authorization"):
                    if not cred.strip():
                        continue
                    sev = "high" if scheme.lower() == "basic" else "medium"
                    yield self.finding(
                        ctx,
                        f"request.header:{ln}",
                        scheme.lower() or "credential",
                        f"{scheme} {mask_secret(cred.strip())}",
                        cred.strip(),
                        severity=sev,
                    )
                elif len(value.strip()) >= 8:
                    yield self.finding(
                        ctx, f"request.header:{ln}", "api_key", mask_secret(value.strip()), value.strip()
                    )
        for leaf in ctx.leaves:
            if leaf.part != "cookie" or len(leaf.value) < 8 or not SESSION_COOKIE.search(leaf.raw_name):
                continue
            if leaf.value.lower() in ("deleted", "null", "none", "invalid"):
                continue
            yield self.finding(
                ctx, leaf.location, "session_cookie", f"{leaf.raw_name}={mask_secret(leaf.value)}", leaf.value
            )


class CredentialsInURL(Base):
    name = "posture.credentials_in_url"
    category = API2
    severity = "medium"

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        uri = ctx.tx.uri or ""
        # query leaves come from a "?", a session id in the path needs a ";" (maybe escaped)
        plain = "?" not in uri and ";" not in uri and "%" not in uri
        for leaf in () if plain else ctx.leaves:
            if leaf.part != "query" or not leaf.value:
                continue
            n = _norm(leaf.raw_name)
            v = leaf.value
            named = n in URL_PARAMS or n.endswith(("token", "apikey", "secret", "password", "sessionid"))
            if named and not _PLACEHOLDER.match(v) and (len(v) >= 8 or "pass" in n or "pwd" in n):
                if n == "key" and not (len(v) >= 16 and re.search(r"\d", v) and re.search(r"[A-Za-z]", v)):
                    continue
                seen.add(leaf.location)
                sev = "high" if "pass" in n or "pwd" in n else "medium"
                yield self.finding(
                    ctx, leaf.location, "parameter", f"{leaf.raw_name}={mask_secret(v)}", v, severity=sev
                )
        for group in ("jwt", "token"):
            for h in ctx.hits(group):
                leaf = h.leaf
                if leaf.part not in ("query", "path") or leaf.location in seen:
                    continue
                if group == "jwt" and decode_jwt_header(h.text) is None:
                    continue
                if group == "token" and not any(rx.fullmatch(h.text) for _, rx in _TOKEN_KIND):
                    continue
                seen.add(leaf.location)
                yield self.finding(ctx, leaf.location, group, mask_secret(h.text), h.text)
        for leaf in () if plain else ctx.leaves:
            if leaf.part == "path" and leaf.location not in seen:
                m = _JSESSION.search(leaf.value)
                if m:
                    seen.add(leaf.location)
                    name, _, v = m.group(0)[1:].partition("=")
                    yield self.finding(ctx, leaf.location, "session_id", f"{name}={mask_secret(v)}", v)


class JwtAlgNone(Base):
    name = "posture.jwt_alg_none"
    category = API2
    severity = "high"
    reads = ("jwt",)
    _loose = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for h in ctx.hits("jwt"):
            if h.leaf.location in seen:
                continue
            head = decode_jwt_header(h.text)
            if head is None or str(head.get("alg", "")).strip().lower() != "none":
                continue
            seen.add(h.leaf.location)
            yield self.finding(ctx, h.leaf.location, "alg_none", jwt_evidence(h.text, head), h.text)


# contact details in a page's text (a footer email) are not a record of personal data
WEAK_IN_PAGES = frozenset({"pii.email", "pii.phone"})
DATA_DETECTORS = ("pii.", "secrets.api_key", "secrets.private_key", "secrets.password")


class UnauthenticatedSensitive(Base):
    name = "posture.unauthenticated_sensitive"
    category = API2
    severity = "high"

    def detect(self, ctx) -> Iterator[Finding]:
        if ctx.tx.method is None or not (200 <= ctx.status < 300) or not ctx.findings or _authenticated(ctx):
            return
        data = [
            f
            for f in ctx.findings
            if f.location.startswith("response.")
            and f.detector.startswith(DATA_DETECTORS)
            and (":$" in f.location or f.detector not in WEAK_IN_PAGES)
        ]
        if not data:
            return
        top = max(data, key=lambda f: SEVERITY_RANK[f.severity])
        kinds = sorted({f.detector.split(".", 1)[1] for f in data})
        yield self.finding(
            ctx,
            "response",
            "no_credentials",
            f"returned {', '.join(kinds)} without any credential",
            None,
            severity="high" if SEVERITY_RANK[top.severity] >= SEVERITY_RANK["high"] else "medium",
        )


def _authenticated(ctx) -> bool:
    for name, value in ctx.tx.request_headers:
        ln = name.lower()
        if ln in CRED_HEADERS and value.strip():
            return True
        if ln == "cookie" and value.strip():
            return True
    for leaf in ctx.leaves:
        if leaf.part == "query" and _norm(leaf.raw_name) in URL_PARAMS and len(leaf.value) >= 8:
            return True
    return False


DETECTORS = [CleartextCredentials(), CredentialsInURL(), JwtAlgNone(), UnauthenticatedSensitive()]
