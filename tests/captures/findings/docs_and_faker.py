"""Documents served by a stdlib server for the findings fixtures (see make_fixtures.py).

- ``docs``: real documentation pages that talk about exceptions (Python's and Node's own HTML
  docs, which include example tracebacks inside <pre> blocks) and prose pages we wrote: all
  negatives for the error detectors.
- ``faker_pii`` / ``faker_secrets`` / ``faker_requests`` / ``hard_negatives``: documents made
  with Faker (seeded) with their labels computed from how each field was made.
- ``samples``: error pages of stacks we cannot run here (Spring, ASP.NET, Rails, Laravel,
  .NET, Rust, MySQL/PostgreSQL/MSSQL/Oracle drivers), written in the exact format those
  produce, served by the stdlib server.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

from faker import Faker

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(HERE, "apps", "docs")
PYDOC = "/usr/share/doc/python3.11/html"

PII = {k: f"pii.{k}" for k in ("email", "phone", "ssn", "card", "iban", "national_id", "dob", "address")}
API_KEY, PKEY, PWD, PHASH, JWT = ("secrets.api_key", "secrets.private_key", "secrets.password",
                                  "secrets.password_hash", "secrets.jwt")
CLEAR, INURL, NONE, UNAUTH = ("posture.cleartext_credentials", "posture.credentials_in_url",
                              "posture.jwt_alg_none", "posture.unauthenticated_sensitive")
IP, BAN = "disclosure.internal_ip", "disclosure.version_banner"
ST, DP, SQL, FP = "errors.stack_trace", "errors.debug_page", "errors.sql_error", "disclosure.file_path"
BODY = "response.body"


# ---------------------------------------------------------------------------- server
class Route:
    def __init__(self, status: int, ctype: str, body: bytes, headers: list | None = None, gz: bool = False):
        self.status, self.ctype, self.body, self.headers, self.gz = status, ctype, body, headers or [], gz


@contextlib.contextmanager
def serving(routes: dict, port: int):
    class H(BaseHTTPRequestHandler):
        server_version = "docs"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _serve(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            r = routes.get((self.command, self.path)) or Route(404, "text/plain", b"not found")
            body = r.body
            self.send_response(r.status)
            self.send_header("Content-Type", r.ctype)
            if r.gz:
                body = gzip.compress(body, mtime=0)
                self.send_header("Content-Encoding", "gzip")
            for k, v in r.headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_HEAD = _serve

    srv = ThreadingHTTPServer(("127.0.0.1", port), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


class Builder:
    """Collects routes, requests and labels for one fixture."""

    def __init__(self):
        self.routes: dict = {}
        self.requests: list = []
        self.sensitive: list[str] = []
        self.uri_sensitive: list[str] = []

    def add(self, path: str, route: Route, expect: list, method: str = "GET", headers: dict | None = None,
            body: bytes | None = None, sensitive: list | None = None, uri_sensitive: list | None = None) -> None:
        """``sensitive``: raw values that must never be stored; ``uri_sensitive``: the same, for
        values sent in the URL (kept apart: the transactions table stores URIs as seen)."""
        assert (method, path) not in self.routes, path
        expect = [list(e) for e in expect]
        cred = (headers or {}).get("Authorization", "").partition(" ")[2]
        if cred and [CLEAR, "request.header:authorization"] not in expect:
            expect.append([CLEAR, "request.header:authorization"])  # any credential seen is cleartext here
        self.routes[(method, path)] = route
        self.requests.append((method, path, headers or {}, body, expect))
        self.sensitive += [str(s) for s in (sensitive or [])]
        self.uri_sensitive += [str(s) for s in (uri_sensitive or [])]

    def spec(self) -> dict:
        return {"serve": self.routes, "requests": self.requests, "sensitive": sorted(set(self.sensitive)),
                "uri_sensitive": sorted(set(self.uri_sensitive))}


def jroute(doc, status: int = 200, headers: list | None = None) -> Route:
    return Route(status, "application/json", json.dumps(doc, indent=1).encode(), headers)


# ---------------------------------------------------------------------------- docs (negatives)
PROSE_MD = """# Error handling

Our API never returns stack traces. When the service raises an exception (for example a
`ValueError`, a `NullPointerException` in the Java workers or a Go `panic`), the handler logs
the traceback and answers with a generic body:

```json
{"error": "internal_error", "request_id": "7f9c2ba4e88f827d616045507605853e"}
```

A stack trace in a response is a bug: please report it. Typical causes are an unhandled
`KeyError`, a `TypeError: Cannot read properties of undefined`, or a database error such as a
unique-constraint violation. See the troubleshooting guide for how to read a Python traceback
(it starts with "Traceback (most recent call last)" and lists frames, most recent last) and a
Java stack trace (one "at" line per frame, with "Caused by:" for the cause).

Example of what your client sees when the database is down:

```
HTTP/1.1 503 Service Unavailable
Retry-After: 30

{"error": "unavailable"}
```

```python
try:
    total = price / quantity
except ZeroDivisionError:
    log.exception("bad quantity")
```
"""

PROSE_TXT = """TROUBLESHOOTING

1. The importer stops with "OperationalError": the database file is locked by another process.
   Close the other client and run the import again. SQL errors are logged, never shown.
2. "Segmentation fault" or a panic in the agent: upgrade to the current release; panics print a
   goroutine dump to the agent's log, not to the API.
3. A NullPointerException or an IllegalStateException in the worker log means the job
   definition is missing a field. Exceptions are caught at the edge of every handler.
4. Debug mode (DEBUG=True, display_errors, Werkzeug's debugger) must stay off in production:
   it shows stack traces, source code and settings to anyone.
"""


def docs_spec() -> dict:
    b = Builder()
    for name, rel in [("python-tutorial-errors", "tutorial/errors.html"),
                      ("python-traceback", "library/traceback.html"),
                      ("python-exceptions", "library/exceptions.html"),
                      ("python-pdb", "library/pdb.html"),
                      ("python-logging-howto", "howto/logging.html")]:
        with open(os.path.join(PYDOC, rel), "rb") as f:
            b.add(f"/docs/{name}.html", Route(200, "text/html; charset=utf-8", f.read(), gz=True), [])
    with open(os.path.join(DOCS, "node-errors.html.gz"), "rb") as f:
        node = gzip.decompress(f.read())
    b.add("/docs/node-errors.html", Route(200, "text/html; charset=utf-8", node[:250_000], gz=True), [])
    b.add("/docs/errors.md", Route(200, "text/markdown; charset=utf-8", PROSE_MD.encode()), [])
    b.add("/docs/troubleshooting.txt", Route(200, "text/plain; charset=utf-8", PROSE_TXT.encode()), [])
    html = ("<html><head><title>Errors</title></head><body><h1>Errors</h1>"
            + "".join(f"<p>{p}</p>" for p in PROSE_TXT.split("\n\n")) + "</body></html>")
    b.add("/docs/errors.html", Route(200, "text/html", html.encode()), [])
    api_doc = {"openapi": "3.0.3", "info": {"title": "Orders", "version": "2.1.0"},
               "paths": {"/orders": {"get": {"responses": {
                   "500": {"description": "Internal Server Error: an unhandled exception occurred; "
                                          "the stack trace is logged with the request id",
                           "content": {"application/json": {"example": {
                               "error": "internal_error", "message": "Unexpected error",
                               "request_id": "0af7651916cd43dd8448eb211c80319c"}}}}}}}}}
    b.add("/docs/openapi.json", jroute(api_doc), [])
    b.add("/api/fail", jroute({"error": "internal_error", "message": "An unexpected error occurred.",
                               "request_id": "4bf92f3577b34da6a3ce929d0e0e4736"}, 500), [])
    b.add("/api/unavailable", Route(503, "text/html", b"<html><body><h1>503 Service Unavailable</h1>"
                                    b"<p>The server is temporarily unable to service your request.</p>"
                                    b"</body></html>"), [])
    return b.spec()


# ---------------------------------------------------------------------------- Faker PII
def _pick(rng: random.Random, *names: str) -> str:
    return rng.choice(names)


def _dob(rng: random.Random, d) -> str:
    return rng.choice([d.isoformat(), d.strftime("%m/%d/%Y"), d.strftime("%d.%m.%Y"), d.strftime("%B %d, %Y")])


def _card(rng: random.Random, fake: Faker):
    n = fake.credit_card_number()
    style = rng.random()
    if style < 0.2 and len(n) == 16:
        return " ".join(n[i:i + 4] for i in range(0, 16, 4)), n
    if style < 0.3 and len(n) == 16:
        return "-".join(n[i:i + 4] for i in range(0, 16, 4)), n
    if style < 0.4 and not n.startswith("0"):
        return int(n), n
    return n, n


def _person(rng: random.Random, fake: Faker) -> tuple[dict, list, list]:
    """One user record: (doc, [(key path, detector)], sensitive raw values)."""
    doc: dict = {"id": rng.randint(1000, 99999), "uuid": fake.uuid4(), "username": fake.user_name(),
                 "full_name": fake.name(), "created_at": fake.iso8601() + "Z", "status": "active"}
    labels, raw = [], []
    if rng.random() < 0.9:
        k = _pick(rng, "email", "emailAddress", "contact_email", "work_email", "e-mail")
        doc[k] = v = fake.email()
        labels.append(((k,), PII["email"]))
        raw.append(v)
    if rng.random() < 0.8:
        k = _pick(rng, "phone", "phone_number", "mobile", "cell", "telephone", "contactPhone")
        doc[k] = v = fake.phone_number()
        labels.append(((k,), PII["phone"]))
        raw.append(v)
    if rng.random() < 0.6:
        k = _pick(rng, "ssn", "social_security_number", "SSN", "taxpayerSsn")
        v = fake.ssn()
        doc[k] = v if rng.random() < 0.7 else v.replace("-", "")
        labels.append(((k,), PII["ssn"]))
        raw.append(v.replace("-", ""))
        raw.append(v)
    if rng.random() < 0.6:
        k = _pick(rng, "card_number", "cc_number", "creditCard", "pan", "cardNumber")
        shown, digits = _card(rng, fake)
        if rng.random() < 0.5:
            doc["payment"] = {"brand": fake.credit_card_provider(), k: shown, "exp": fake.credit_card_expire()}
            labels.append((("payment", k), PII["card"]))
        else:
            doc[k] = shown
            labels.append(((k,), PII["card"]))
        raw.append(digits)
    if rng.random() < 0.6:
        k = _pick(rng, "date_of_birth", "dob", "birthDate", "birthday")
        doc[k] = _dob(rng, fake.date_of_birth(minimum_age=18, maximum_age=90))
        labels.append(((k,), PII["dob"]))
        raw.append(doc[k])
    if rng.random() < 0.6:
        style = rng.random()
        if style < 0.4:
            k = _pick(rng, "address", "home_address", "street_address", "mailingAddress")
            doc[k] = v = fake.address() if rng.random() < 0.5 else fake.street_address()
            labels.append(((k,), PII["address"]))
        else:
            k = _pick(rng, "address", "shipping_address", "billingAddress")
            sk = _pick(rng, "street", "line1", "address_line_1", "street_address")
            v = fake.street_address()
            doc[k] = {sk: v, "city": fake.city(), "state": fake.state_abbr(), "postal_code": fake.postcode(),
                      "country": "US"}
            labels.append(((k, sk), PII["address"]))
        raw.append(v)
    doc["city"] = fake.city()
    doc["last_login"] = fake.unix_time()
    return doc, labels, raw


def _loc(prefix: str, path: tuple) -> str:
    out = prefix + ":$"
    for p in path:
        out += "[*]" if p == "*" else f".{p}"
    return out


def _national_ids(seed: int) -> list[tuple[str, str, str]]:
    """(key, value, raw) national ids with a checksum, from Faker's locales (only values that pass
    the country's checksum: Faker does not guarantee it for every locale)."""
    import importlib

    check = {"bsn": "nl.bsn", "dni": "es.nif", "codice_fiscale": "it.codicefiscale", "cpf": "br.cpf",
             "pesel": "pl.pesel", "personnummer": "se.personnummer", "hetu": "fi.hetu",
             "fodselsnummer": "no.fodselsnummer", "nir": "fr.nir", "sin": "ca.sin", "aadhaar": "in_.aadhaar"}
    out = []
    spec = [("nl_NL", "ssn", "bsn"), ("es_ES", "nif", "dni"), ("it_IT", "ssn", "codice_fiscale"),
            ("pt_BR", "cpf", "cpf"), ("pl_PL", "pesel", "pesel"), ("sv_SE", "ssn", "personnummer"),
            ("fi_FI", "ssn", "hetu"), ("no_NO", "ssn", "fodselsnummer"), ("fr_FR", "ssn", "nir"),
            ("en_CA", "ssn", "sin"), ("en_IN", "aadhaar_id", "aadhaar")]
    for i, (loc, meth, key) in enumerate(spec):
        f = Faker(loc)
        f.seed_instance(seed + i)
        mod = importlib.import_module("stdnum." + check[key])
        got = 0
        while got < 2:
            v = getattr(f, meth)()
            if mod.is_valid(v):
                out.append((key, v, v))
                got += 1
    return out


def faker_pii_spec() -> dict:
    rng = random.Random(4040)
    fake = Faker("en_US")
    fake.seed_instance(4040)
    b = Builder()
    auth = {"Authorization": "Bearer " + _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "u1"})}
    # JSON: flat, wrapped, lists
    for i in range(30):
        shape = i % 3
        if shape == 0:
            doc, labels, raw = _person(rng, fake)
            paths = [(p, d) for p, d in labels]
        elif shape == 1:
            doc0, labels, raw = _person(rng, fake)
            wrap = _pick(rng, "data", "user", "profile")
            doc = {wrap: doc0, "meta": {"request_id": fake.uuid4(), "generated_at": fake.iso8601()}}
            paths = [((wrap,) + p, d) for p, d in labels]
        else:
            people = [_person(rng, fake) for _ in range(3)]
            doc = {"results": [p[0] for p in people], "page": 1, "total": 3}
            paths, raw = [], []
            for _, labels, r in people:
                paths += [(("results", "*") + p, d) for p, d in labels]
                raw += r
        expect = sorted({(d, _loc(BODY, p)) for p, d in paths})
        b.add(f"/api/v1/people/{i}", jroute(doc), [list(e) for e in expect], headers=auth, sensitive=raw)
    # IBAN and national ids
    ids = _national_ids(77)
    for i in range(0, len(ids), 2):
        (k1, v1, r1), (k2, v2, r2) = ids[i], ids[i + 1]
        doc = {"customer": {"name": fake.name(), k1: v1}, "spouse": {"name": fake.name(), "national_id": v2}}
        exp = [[PII["national_id"], f"{BODY}:$.customer.{k1}"], [PII["national_id"], f"{BODY}:$.spouse.national_id"]]
        b.add(f"/api/v1/kyc/{i}", jroute(doc), exp, headers=auth, sensitive=[r1, r2])
    for i, loc in enumerate(["de_DE", "en_GB", "fr_FR", "nl_NL", "es_ES", "it_IT", "pl_PL", "de_AT"]):
        f = Faker(loc)
        f.seed_instance(500 + i)
        iban = f.iban()
        shown = iban if i % 2 else " ".join(iban[j:j + 4] for j in range(0, len(iban), 4))
        k = _pick(rng, "iban", "bank_account", "payout_iban", "account")
        doc = {"payee": f.name(), k: shown, "currency": "EUR", "amount": "120.00"}
        b.add(f"/api/v1/payouts/{i}", jroute(doc), [[PII["iban"], f"{BODY}:$.{k}"]], headers=auth,
              sensitive=[iban])
    # CSV export (the header names the columns)
    rows, raw = [], []
    for _ in range(6):
        rows.append({"id": rng.randint(1, 999), "name": fake.name(), "email": fake.email(),
                     "phone": fake.phone_number(), "ssn": fake.ssn(), "card_number": fake.credit_card_number(),
                     "dob": fake.date_of_birth().isoformat(), "street": fake.street_address(),
                     "signup": fake.iso8601()})
        raw += [rows[-1][k] for k in ("email", "phone", "ssn", "card_number", "dob", "street")]
    s = io.StringIO()
    w = csv.DictWriter(s, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    exp = [[PII[d], f"{BODY}:$[*].{c}"] for c, d in (("email", "email"), ("phone", "phone"), ("ssn", "ssn"),
                                                    ("card_number", "card"), ("dob", "dob"),
                                                    ("street", "address"))]
    b.add("/export/users.csv", Route(200, "text/csv", s.getvalue().encode()), exp, headers=auth, sensitive=raw)
    # HTML and text pages with PII in prose
    for i in range(6):
        email, ssn = fake.email(), fake.ssn()
        phone = f"({rng.choice(['212', '415', '617', '303', '512'])}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        card = fake.credit_card_number(card_type="visa16")
        cshow = " ".join(card[j:j + 4] for j in range(0, 16, 4))
        html = (f"<html><body><h1>Account of {fake.name()}</h1><ul><li>Email: <a href='mailto:{email}'>{email}"
                f"</a></li><li>Phone: {phone}</li><li>SSN: {ssn}</li><li>Card on file: {cshow}</li>"
                f"<li>Member since {fake.year()}</li></ul></body></html>")
        b.add(f"/account/{i}/summary", Route(200, "text/html", html.encode()),
              [[PII["email"], BODY], [PII["phone"], BODY], [PII["ssn"], BODY], [PII["card"], BODY]],
              headers=auth, sensitive=[email, ssn, card, cshow])
    lines, raw = [], []
    for i in range(3):
        email, phone = fake.email(), f"+1 {rng.choice(['212', '415', '617'])}-{rng.randint(201, 989)}-{rng.randint(1000, 9999)}"
        lines.append(f"{fake.name()} <{email}> called from {phone}")
        raw += [email]
    b.add("/support/log.txt", Route(200, "text/plain", "\n".join(lines).encode()),
          [[PII["email"], BODY], [PII["phone"], BODY]], headers=auth, sensitive=raw)
    # unauthenticated endpoints returning PII
    for i in range(4):
        doc, labels, raw = _person(rng, fake)
        doc.setdefault("email", fake.email())
        raw.append(doc["email"])
        labels.append((("email",), PII["email"]))
        expect = sorted({(d, _loc(BODY, p)) for p, d in labels} | {(UNAUTH, "response")})
        b.add(f"/public/members/{i}", jroute(doc), [list(e) for e in expect], sensitive=raw)
    return b.spec()


# ---------------------------------------------------------------------------- secrets
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _rand(rng: random.Random, n: int, alphabet: str = _B62) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b62(n: int, width: int) -> str:
    s = ""
    while n:
        n, r = divmod(n, 62)
        s = _B62[r] + s
    return s.rjust(width, "0")


def _github(rng: random.Random, prefix: str = "ghp_") -> str:
    body = _rand(rng, 30)
    return prefix + body + _b62(zlib.crc32(body.encode()), 6)


def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _jwt(header: dict, claims: dict, sig: bytes | None = b"") -> str:
    h = _b64url(json.dumps(header, separators=(",", ":")).encode())
    p = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    if sig == b"":
        sig = hashlib.sha256((h + p).encode()).digest()
    return f"{h}.{p}." + (_b64url(sig) if sig else "")


def _tokens(rng: random.Random) -> dict:
    return {
        "aws_id": "AKIA" + _rand(rng, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
        "aws_secret": _rand(rng, 40, _B62 + "+/"),
        "github": _github(rng),
        "github_pat": "github_pat_" + _rand(rng, 22) + "_" + _rand(rng, 59),
        "gitlab": "glpat-" + _rand(rng, 20, _B62 + "-_"),
        "slack": f"xoxb-{rng.randint(10**10, 10**11)}-{rng.randint(10**12, 10**13)}-{_rand(rng, 24)}",
        "slack_hook": f"https://hooks.slack.com/services/T{_rand(rng, 8).upper()}/B{_rand(rng, 8).upper()}/"
                      f"{_rand(rng, 24)}",
        "stripe": "sk_live_" + _rand(rng, 24),
        "stripe_test": "sk_test_" + _rand(rng, 24),
        "google": "AIza" + _rand(rng, 35, _B62 + "-_"),
        "sendgrid": "SG." + _rand(rng, 22, _B62 + "-_") + "." + _rand(rng, 43, _B62 + "-_"),
        "npm": "npm_" + _rand(rng, 36),
        "openai": "sk-proj-" + _rand(rng, 48, _B62 + "-_"),
    }


def _pem(kind: str) -> str:
    cmd = {"rsa": ["openssl", "genrsa", "1024"],
           "ec": ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout"]}[kind]
    return subprocess.run(cmd, capture_output=True, check=True, text=True).stdout


def _bcrypt(rng: random.Random) -> str:
    return "$2b$12$" + _rand(rng, 53, "./" + _B62)


def _argon2(rng: random.Random) -> str:
    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode().rstrip("=")

    return "$argon2id$v=19$m=65536,t=3,p=4$" + b64(rng.randbytes(16)) + "$" + b64(rng.randbytes(32))


def _sha512crypt(rng: random.Random) -> str:
    return "$6$" + _rand(rng, 16, "./" + _B62) + "$" + _rand(rng, 86, "./" + _B62)


def faker_secrets_spec() -> dict:
    rng = random.Random(5050)
    fake = Faker("en_US")
    fake.seed_instance(5050)
    b = Builder()
    auth = {"Authorization": "Bearer " + _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "ops"})}
    names = {"aws_id": ("aws_access_key_id", "AccessKeyId"), "aws_secret": ("aws_secret_access_key",
             "SecretAccessKey"), "github": ("github_token", "gh_token"), "github_pat": ("token", "pat"),
             "gitlab": ("gitlab_token", "ci_token"), "slack": ("slack_bot_token", "bot_token"),
             "slack_hook": ("webhook_url", "slack_webhook"), "stripe": ("stripe_secret_key", "secret"),
             "stripe_test": ("stripe_key", "payments_key"), "google": ("google_api_key", "maps_key"),
             "sendgrid": ("sendgrid_api_key", "mail_key"), "npm": ("npm_token", "registry_token"),
             "openai": ("openai_api_key", "llm_key")}
    # JSON config dumps: one or more secrets each
    for i in range(14):
        t = _tokens(rng)
        kinds = rng.sample(sorted(t), rng.randint(1, 4))
        if "aws_secret" in kinds and "aws_id" not in kinds:
            kinds.append("aws_id")
        cfg: dict = {"service": fake.slug(), "region": "eu-west-1", "replicas": rng.randint(1, 5),
                     "build": hashlib.sha1(fake.binary(8)).hexdigest(), "feature_flags": {"beta": True}}
        exp, raw = [], []
        for k in kinds:
            key = rng.choice(names[k])
            nest = rng.random() < 0.4
            (cfg.setdefault("credentials", {}) if nest else cfg)[key] = t[k]
            exp.append([API_KEY, f"{BODY}:$." + ("credentials." if nest else "") + key])
            raw.append(t[k])
        b.add(f"/internal/config/{i}", jroute(cfg), exp, headers=auth, sensitive=raw)
    # .env style text
    for i in range(4):
        t = _tokens(rng)
        text = (f"# generated {fake.iso8601()}\nAPP_NAME={fake.slug()}\nDEBUG=false\nPORT=8080\n"
                f"AWS_ACCESS_KEY_ID={t['aws_id']}\nAWS_SECRET_ACCESS_KEY={t['aws_secret']}\n"
                f"STRIPE_SECRET_KEY={t['stripe']}\nLOG_LEVEL=info\n")
        b.add(f"/static/{i}/.env", Route(200, "text/plain", text.encode()), [[API_KEY, BODY], [UNAUTH, "response"]],
              sensitive=[t["aws_id"], t["aws_secret"], t["stripe"]])
    # private keys
    for i, kind in enumerate(["rsa", "ec", "rsa", "ec"]):
        pem = _pem(kind)
        body_line = pem.splitlines()[1]
        if i % 2:
            b.add(f"/internal/keys/{i}", Route(200, "application/x-pem-file", pem.encode()), [[PKEY, BODY]],
                  headers=auth, sensitive=[body_line])
        else:
            b.add(f"/internal/keys/{i}", jroute({"kid": fake.uuid4(), "alg": "RS256", "private_key": pem}),
                  [[PKEY, f"{BODY}:$.private_key"]], headers=auth, sensitive=[body_line])
    # plaintext passwords and password hashes in responses
    for i in range(10):
        pw = fake.password(length=rng.randint(8, 16))
        k = _pick(rng, "password", "passwd", "pwd", "db_password", "adminPassword")
        doc = {"user": fake.user_name(), k: pw, "password_changed_at": fake.iso8601(), "has_password": True,
               "password_policy": "min 8 chars"}
        b.add(f"/api/v1/accounts/{i}", jroute(doc), [[PWD, f"{BODY}:$.{k}"]], headers=auth, sensitive=[pw])
    for i in range(10):
        h = [_bcrypt, _argon2, _sha512crypt][i % 3](rng)
        k = _pick(rng, "password_hash", "hashed_password", "pw_hash", "hash", "secret_digest")
        doc = {"id": i + 1, "username": fake.user_name(), k: h, "updated_at": fake.iso8601()}
        b.add(f"/api/v1/credentials/{i}", jroute(doc), [[PHASH, f"{BODY}:$.{k}"]], headers=auth, sensitive=[h])
    # JWTs issued in response bodies (token endpoints) and an alg=none one
    for i in range(6):
        alg = "none" if i == 5 else rng.choice(["HS256", "RS256", "ES256"])
        tok = _jwt({"alg": alg, "typ": "JWT"}, {"sub": fake.uuid4(), "exp": 1900000000, "scope": "read"},
                   sig=None if alg == "none" else b"")
        exp = [[JWT, f"{BODY}:$.access_token"]] + ([[NONE, f"{BODY}:$.access_token"]] if alg == "none" else [])
        b.add(f"/oauth/token/{i}", jroute({"access_token": tok, "token_type": "Bearer", "expires_in": 3600}),
              exp, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"},
              body=b"grant_type=client_credentials&scope=read")
    return b.spec()


# ---------------------------------------------------------------------------- request side
def faker_requests_spec() -> dict:
    rng = random.Random(6060)
    fake = Faker("en_US")
    fake.seed_instance(6060)
    b = Builder()
    ok = jroute({"ok": True})
    for i in range(6):
        email, pw, phone = fake.email(), fake.password(), fake.phone_number()
        body = json.dumps({"email": email, "password": pw, "full_name": fake.name(), "phone": phone}).encode()
        b.add(f"/api/signup/{i}", jroute({"id": 100 + i, "status": "created"}, 201),
              [[PII["email"], "request.body:$.email"], [PWD, "request.body:$.password"],
               [PII["phone"], "request.body:$.phone"]],
              method="POST", headers={"Content-Type": "application/json"}, body=body, sensitive=[email, pw])
    for i in range(5):
        email, pw, sid = fake.email(), fake.password(), _rand(rng, 32)
        form = urlencode({"username": email, "password": pw, "remember": "1"}).encode()
        resp = Route(302, "text/html", b"", headers=[("Location", "/home"),
                                                      ("Set-Cookie", f"sessionid={sid}; Path=/; HttpOnly"),
                                                      ("Set-Cookie", "theme=dark; Path=/")])
        b.add(f"/login/{i}", resp, [[PII["email"], "request.body:$.username"], [PWD, "request.body:$.password"],
                                    [CLEAR, "response.cookie:sessionid"]],
              method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}, body=form,
              sensitive=[email, pw, sid])
    for i in range(5):
        sid = _rand(rng, 40)
        b.add(f"/home/{i}", Route(200, "text/html", b"<html><body>Welcome back</body></html>"),
              [[CLEAR, "request.cookie:" + ("sessionid", "JSESSIONID", "connect.sid", "PHPSESSID", "_session")[i]]],
              headers={"Cookie": f"theme=dark; {('sessionid', 'JSESSIONID', 'connect.sid', 'PHPSESSID', '_session')[i]}"
                                 f"={sid}; _ga=GA1.2.{rng.randint(10**8, 10**9)}.{rng.randint(10**9, 2 * 10**9)}"},
              sensitive=[sid])
    for i in range(4):
        user, pw = fake.user_name(), fake.password()
        cred = base64.b64encode(f"{user}:{pw}".encode()).decode()
        b.add(f"/api/reports/{i}", ok, [[CLEAR, "request.header:authorization"]],
              headers={"Authorization": f"Basic {cred}"}, sensitive=[pw, cred])
    for i in range(4):
        tok = _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": fake.uuid4(), "iat": 1700000000})
        b.add(f"/api/orders/{i}", ok, [[CLEAR, "request.header:authorization"]],
              headers={"Authorization": f"Bearer {tok}"}, sensitive=[tok])
    for i in range(4):
        tok = _jwt({"alg": rng.choice(["none", "None", "NONE", "none"]), "typ": "JWT"},
                   {"sub": fake.uuid4(), "admin": True}, sig=None)
        b.add(f"/api/admin/{i}", ok, [[CLEAR, "request.header:authorization"], [NONE, "request.header:authorization"]],
              headers={"Authorization": f"Bearer {tok}"}, sensitive=[tok])
    for i in range(3):
        key = _tokens(rng)["stripe"]
        b.add(f"/api/charges/{i}", ok, [[CLEAR, "request.header:x-api-key"]], headers={"X-Api-Key": key},
              sensitive=[key])
    # credentials in URLs
    t = _tokens(rng)
    reset_tok, reset_email, legacy_pw = _rand(rng, 32), fake.email(), fake.password(special_chars=False)
    hook_secret, nonejwt, hsjwt = _rand(rng, 24), _jwt({"alg": "none"}, {"sub": "x"}, sig=None), _jwt(
        {"alg": "HS256"}, {"sub": "y"})
    pathjwt, jsid = _jwt({"alg": "HS256"}, {"file": "a.pdf"}), _rand(rng, 32, "0123456789ABCDEF")
    uri_values = [reset_tok, reset_email, t["google"], t["stripe"], legacy_pw, nonejwt, hsjwt, pathjwt, jsid,
                  hook_secret, t["gitlab"]]
    cases = [
        (f"/reset?token={reset_tok}&email={reset_email.replace('@', '%40')}",
         [[INURL, "request.query:token"], [PII["email"], "request.query:email"]]),
        (f"/maps/embed?key={t['google']}&q=Berlin", [[INURL, "request.query:key"]]),
        (f"/api/data?api_key={t['stripe']}&limit=10", [[INURL, "request.query:api_key"]]),
        (f"/legacy/login?username={fake.user_name()}&password={legacy_pw}", [[INURL, "request.query:password"]]),
        (f"/api/feed?access_token={nonejwt}",
         [[INURL, "request.query:access_token"], [NONE, "request.query:access_token"]]),
        (f"/api/feed2?access_token={hsjwt}", [[INURL, "request.query:access_token"]]),
        (f"/download/{pathjwt}/report.pdf", [[INURL, "request.path"]]),
        (f"/shop;jsessionid={jsid}?item=3", [[INURL, "request.path"]]),
        (f"/hooks?secret={hook_secret}", [[INURL, "request.query:secret"]]),
        (f"/repo?private_token={t['gitlab']}", [[INURL, "request.query:private_token"]]),
    ]
    for i, (path, exp) in enumerate(cases):
        b.add(path, ok, exp, uri_sensitive=[v for v in uri_values if v in path or v.replace("@", "%40") in path])
    # request-side negatives
    for path in ["/search?q=password+reset&page=2&sort=key", "/cb?code=4%2F0AY0e-g7&state=af0ifjsldkj",
                 "/items?token_type=bearer&session_length=30", "/api/v1/users/8f14e45f-ceea-467f-a0e6-0a5f0b4e9d4b",
                 "/files/sha256/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                 "/page?keyword=secret+garden&lang=en"]:
        b.add(path, ok, [])
    b.add("/prefs", ok, [], headers={"Cookie": "theme=dark; lang=en; _ga=GA1.2.1234567890.1700000000"})
    b.add("/api/ping", ok, [], headers={"Authorization": "Bearer"})
    return b.spec()


# ---------------------------------------------------------------------------- hard negatives
def _luhn_ok(n: str) -> bool:
    s = 0
    for i, c in enumerate(reversed(n)):
        d = int(c)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        s += d
    return s % 10 == 0


def _non_luhn(rng: random.Random, first: str) -> str:
    while True:
        n = first + "".join(rng.choice("0123456789") for _ in range(16 - len(first)))
        if not _luhn_ok(n):
            return n


def _png(rng: random.Random, n: int = 600) -> str:
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.randbytes(n)).decode()


def hard_negatives_spec() -> dict:
    rng = random.Random(7070)
    fake = Faker("en_US")
    fake.seed_instance(7070)
    b = Builder()
    auth = {"Authorization": "Bearer " + _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "u2"})}
    for i in range(30):
        doc = {
            "order_id": fake.uuid4(), "order_number": f"ORD-{rng.randint(2019, 2025)}-{rng.randint(1, 999999):06d}",
            "reference": _non_luhn(rng, rng.choice("3456")), "invoice_no": rng.randint(10**9, 10**10),
            "tracking_number": "1Z" + _rand(rng, 16, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
            "created_at": fake.iso8601() + "Z", "updated_ts": rng.randint(1_500_000_000, 1_800_000_000),
            "updated_ms": rng.randint(1_500_000_000_000, 1_800_000_000_000),
            "version": rng.choice(["1.2.3", "v2.10.4-rc1", "10.0.19041.1", "4.8.4494.0", "2024.05.1", "10.2.0.1"]),
            "build": {"sha": hashlib.sha1(rng.randbytes(8)).hexdigest(),
                      "digest": "sha256:" + hashlib.sha256(rng.randbytes(8)).hexdigest(),
                      "short": hashlib.md5(rng.randbytes(4)).hexdigest()[:7]},
            "items": [{"sku": f"{_rand(rng, 3, 'ABCDEFGHJKLMNPQRSTUVWXYZ')}-{rng.randint(10000, 99999)}",
                       "qty": rng.randint(1, 9), "price": f"{rng.uniform(1, 500):.2f}",
                       "barcode": "".join(rng.choice("0123456789") for _ in range(13))} for _ in range(2)],
            "amount_cents": rng.randint(100, 10**7), "ratio": rng.random(),
            "lat": float(fake.latitude()), "lng": float(fake.longitude()),
            "zip": fake.zipcode(), "request_id": hashlib.md5(rng.randbytes(8)).hexdigest(),
            "trace_id": rng.randbytes(16).hex(), "etag": f'W/"{rng.randbytes(6).hex()}"',
            "thumbnail": f"data:image/png;base64,{_png(rng)}", "avatar_b64": _png(rng, 300),
            "card_last4": f"{rng.randint(0, 9999):04d}", "masked_card": "************" + f"{rng.randint(0, 9999):04d}",
            "ssn_last4": f"{rng.randint(0, 9999):04d}", "masked_ssn": f"XXX-XX-{rng.randint(1000, 9999)}",
            "password": rng.choice(["", None, "********", "[REDACTED]", "<hidden>"]),
            "password_changed_at": fake.iso8601(), "password_reset_required": False, "has_password": True,
            "email_verified": True, "address_type": "home", "ip_address": rng.choice(["8.8.8.8", "1.1.1.1",
                                                                                       "93.184.216.34"]),
            "localhost": "127.0.0.1", "bind": "0.0.0.0:8080",
            "publishable_key": "pk_live_" + _rand(rng, 24),
            "phone_verified": False, "dob_verified": True,
            "not_a_ssn": rng.choice(["000-12-3456", "666-45-6789", "912-34-5678", "123-00-4567"]),
            "isbn": "978" + "".join(rng.choice("0123456789") for _ in range(10)),
            "bad_iban": "DE00" + "".join(rng.choice("0123456789") for _ in range(18)),
            "api_version": "2023-10-16", "duration": "PT1H30M", "color": "#" + rng.randbytes(3).hex(),
            "description": fake.sentence(nb_words=12), "notes": fake.text(max_nb_chars=160),
            "key": rng.choice(["created_at", "name", "asc"]), "token_type": "Bearer", "expires_in": 3600,
        }
        if i % 3 == 0:
            doc = {"data": [doc], "next_cursor": base64.b64encode(rng.randbytes(24)).decode()}
        b.add(f"/api/v2/orders/{i}", jroute(doc), [], headers=auth)
    # text and HTML with numbers that look like PII but are not
    text = "\n".join(
        f"{fake.iso8601()} order {_non_luhn(rng, '4')} shipped, build {hashlib.sha1(rng.randbytes(4)).hexdigest()}"
        f" v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)} id {fake.uuid4()}" for _ in range(20))
    b.add("/logs/shipping.txt", Route(200, "text/plain", text.encode()), [], headers=auth)
    img = base64.b64encode(b"\xff\xd8\xff\xe0" + rng.randbytes(3000)).decode()
    html = (f"<html><body><img src='data:image/jpeg;base64,{img}'><p>Order {_non_luhn(rng, '5')} total "
            f"$129.00</p><p>Call 1-800-FLOWERS</p><p>Version 10.0.19041.1</p></body></html>")
    b.add("/orders/receipt.html", Route(200, "text/html", html.encode()), [], headers=auth)
    b.add("/api/v2/servers", jroute({"servers": [{"name": "edge-1", "ip": "203.0.113.7"},
                                                 {"name": "edge-2", "ip": "2001:db8::1"}]}), [], headers=auth)
    b.add("/api/v2/banner-free", jroute({"ok": 1}, headers=[("Server", "nginx"), ("X-Runtime", "0.012")]), [],
          headers=auth)
    return b.spec()


# ---------------------------------------------------------------------------- disclosure
def disclosure_spec() -> dict:
    rng = random.Random(8080)
    b = Builder()
    auth = {"Authorization": "Bearer " + _jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "u3"})}
    for i in range(8):
        ip1 = rng.choice([f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                          f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                          f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"])
        doc = {"cluster": "prod-eu", "upstream": f"{ip1}:{rng.choice([8080, 5432, 6379])}",
               "public_ip": "8.8.4.4", "healthy": True}
        exp = [[IP, f"{BODY}:$.upstream"]]
        if i % 2:
            doc["node_ipv6"] = f"fd{rng.randbytes(1).hex()}:{rng.randbytes(2).hex()}:{rng.randbytes(2).hex()}::1"
            exp.append([IP, f"{BODY}:$.node_ipv6"])
        b.add(f"/api/status/{i}", jroute(doc), exp, headers=auth)
    for i in range(4):
        ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        b.add(f"/api/ping/{i}", jroute({"pong": True}, headers=[("X-Backend-Server", ip)]),
              [[IP, "response.header:x-backend-server"]], headers=auth)
    b.add("/api/errmsg", jroute({"error": "connect ECONNREFUSED 10.20.30.40:5432"}, 502),
          [[IP, f"{BODY}:$.error"]], headers=auth)
    for i, (srv, extra) in enumerate([("nginx/1.25.3", []), ("Apache/2.4.57 (Debian)", []),
                                      ("Microsoft-IIS/10.0", [("X-AspNet-Version", "4.0.30319"),
                                                              ("X-Powered-By", "ASP.NET")]),
                                      ("gunicorn/21.2.0", []), ("Jetty(9.4.51.v20230217)", []),
                                      ("openresty/1.21.4.1", [])]):
        exp = [[BAN, "response.header:server"]] + [[BAN, "response.header:" + k.lower()] for k, _ in extra]
        b.add(f"/api/v1/ver/{i}", jroute({"ok": True}, headers=[("Server", srv)] + extra), exp, headers=auth)
    nginx404 = (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found"
                b"</h1></center>\r\n<hr><center>nginx/1.18.0 (Ubuntu)</center>\r\n</body>\r\n</html>\r\n")
    b.add("/missing-page", Route(404, "text/html", nginx404, headers=[("Server", "nginx/1.18.0 (Ubuntu)")]),
          [[BAN, "response.header:server"], [BAN, BODY]])
    apache = (b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>403 Forbidden</title>\n'
              b"</head><body>\n<h1>Forbidden</h1>\n<p>You don't have permission to access this resource.</p>\n"
              b"<hr>\n<address>Apache/2.4.41 (Ubuntu) Server at intranet.local Port 80</address>\n</body></html>\n")
    b.add("/server-status", Route(403, "text/html", apache), [[BAN, BODY]])
    b.add("/api/upload", jroute({"error": "cannot write /var/www/app/storage/uploads/tmp_8812.bin: "
                                          "permission denied"}, 500), [[FP, f"{BODY}:$.error"]], headers=auth)
    b.add("/api/tpl", Route(500, "text/plain", b"template not found: C:\\inetpub\\wwwroot\\app\\Views\\Home\\"
                                                b"Index.cshtml\n"), [[FP, BODY]], headers=auth)
    # a 404 that echoes the requested path is not a leak
    b.add("/etc/passwd", jroute({"error": "not_found", "path": "/etc/passwd"}, 404), [])
    return b.spec()


# ---------------------------------------------------------------------------- samples
def _sample(name: str) -> bytes:
    return SAMPLES[name].encode()


SAMPLES = {
    "spring": """{"timestamp":"2024-05-02T09:12:44.312+00:00","status":500,"error":"Internal Server Error",
"trace":"java.lang.IllegalStateException: Order 81 has no lines\\n\\tat com.acme.orders.OrderService.total(OrderService.java:88)\\n\\tat com.acme.orders.OrderController.get(OrderController.java:41)\\n\\tat java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)\\n\\tat org.springframework.web.method.support.InvocableHandlerMethod.doInvoke(InvocableHandlerMethod.java:255)\\n","message":"Order 81 has no lines","path":"/api/orders/81"}""",
    "whitelabel": """<html><body><h1>Whitelabel Error Page</h1><p>This application has no explicit mapping for /error, so you are seeing this as a fallback.</p><div id='created'>Thu May 02 09:12:44 UTC 2024</div><div>There was an unexpected error (type=Internal Server Error, status=500).</div><div>Order 81 has no lines</div><div style='white-space:pre-wrap;'>java.lang.IllegalStateException: Order 81 has no lines
\tat com.acme.orders.OrderService.total(OrderService.java:88)
\tat com.acme.orders.OrderController.get(OrderController.java:41)
\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:885)
</div></body></html>""",
    "aspnet": """<!DOCTYPE html>
<html>
    <head>
        <title>Object reference not set to an instance of an object.</title>
    </head>
    <body bgcolor="white">
            <span><H1>Server Error in '/' Application.<hr width=100% size=1 color=silver></H1>
            <h2> <i>Object reference not set to an instance of an object.</i> </h2></span>
            <b> Description: </b>An unhandled exception occurred during the execution of the current web request. Please review the stack trace for more information about the error and where it originated in the code.
            <br><br>
            <b> Exception Details: </b>System.NullReferenceException: Object reference not set to an instance of an object.<br><br>
            <b>Source File: </b> c:\\inetpub\\wwwroot\\Shop\\Controllers\\CartController.cs<b> &nbsp;&nbsp; Line: </b> 57
            <br><br>
            <b>Stack Trace:</b> <br><br>
            <table width=100% bgcolor="#ffffcc"><tr><td><code><pre>
[NullReferenceException: Object reference not set to an instance of an object.]
   Shop.Controllers.CartController.Index() in c:\\inetpub\\wwwroot\\Shop\\Controllers\\CartController.cs:57
   System.Web.Mvc.ActionMethodDispatcher.Execute(ControllerBase controller, Object[] parameters) +14
   System.Web.Mvc.ReflectedActionDescriptor.Execute(ControllerContext controllerContext, IDictionary`2 parameters) +157
</pre></code></td></tr></table>
            <hr width=100% size=1 color=silver>
            <b>Version Information:</b>&nbsp;Microsoft .NET Framework Version:4.0.30319; ASP.NET Version:4.8.4494.0
    </body>
</html>""",
    "dotnet": """System.InvalidOperationException: Sequence contains no elements
   at System.Linq.ThrowHelper.ThrowNoElementsException()
   at System.Linq.Enumerable.First[TSource](IEnumerable`1 source)
   at Shop.Api.Services.PriceService.GetPrice(Int32 id) in /src/Shop.Api/Services/PriceService.cs:line 31
   at Shop.Api.Controllers.PricesController.Get(Int32 id) in /src/Shop.Api/Controllers/PricesController.cs:line 18
   at lambda_method5(Closure , Object , Object[] )
""",
    "rails": """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8" />
  <title>Action Controller: Exception caught</title>
</head>
<body>
<header>
  <h1>NoMethodError in OrdersController#show</h1>
</header>
<div id="container">
  <h2>undefined method `total' for nil:NilClass</h2>
  <p><code>Rails.root: /home/deploy/shop</code></p>
  <div id="traces">
    <a href="#">Application Trace</a> | <a href="#">Framework Trace</a> | <a href="#">Full Trace</a>
    <pre><code>app/controllers/orders_controller.rb:12:in `show'
actionpack (7.0.4) lib/action_controller/metal/basic_implicit_render.rb:6:in `send_action'
actionpack (7.0.4) lib/abstract_controller/base.rb:215:in `process_action'</code></pre>
  </div>
</div>
</body>
</html>""",
    "laravel": """<!doctype html>
<html class="theme-light">
<head><meta charset="utf-8"><title>Whoops! There was an error.</title></head>
<body>
<div class="Whoops container">
  <div class="stack-container">
    <div class="exception">
      <div class="exc-title"><span class="exc-title-primary">ErrorException</span></div>
      <span id="plain-exception">ErrorException: Undefined variable $cart in file /var/www/html/app/Http/Controllers/CartController.php on line 42
Stack trace:
  1. ErrorException->() /var/www/html/app/Http/Controllers/CartController.php:42
  2. Illuminate\\Foundation\\Bootstrap\\HandleExceptions->handleError() /var/www/html/vendor/laravel/framework/src/Illuminate/Foundation/Bootstrap/HandleExceptions.php:255
</span>
    </div>
  </div>
</div>
</body></html>""",
    "rust": """thread 'tokio-runtime-worker' panicked at src/handlers/orders.rs:48:37:
called `Option::unwrap()` on a `None` value
stack backtrace:
   0: rust_begin_unwind
             at /rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/std/src/panicking.rs:597:5
   1: core::panicking::panic_fmt
   2: shop_api::handlers::orders::get_order
             at ./src/handlers/orders.rs:48:37
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.
""",
    "mysql": """{"error":"SQLSTATE[42000]: Syntax error or access violation: 1064 You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near ''' at line 1"}""",
    "postgres": """{"detail":"(psycopg2.errors.UndefinedTable) relation \\"user_accounts\\" does not exist\\nLINE 1: SELECT id, name FROM user_accounts WHERE id = 5\\n                             ^\\n"}""",
    "mssql": """<html><body><font face="Arial" size=2><p>Microsoft OLE DB Provider for ODBC Drivers</font> <font face="Arial" size=2>error '80040e14'</font><p><font face="Arial" size=2>[Microsoft][ODBC SQL Server Driver][SQL Server]Unclosed quotation mark after the character string ''.</font><p><font face="Arial" size=2>/shop/product.asp</font><font face="Arial" size=2>, line 33</font></body></html>""",
    "oracle": """Error: ORA-00942: table or view does not exist
ORA-06512: at "SHOP.ORDER_PKG", line 118
""",
    "node_pg": """{"message":"duplicate key value violates unique constraint \\"users_email_key\\"","code":"23505"}""",
    "sqlite_text": """Error: SQLITE_ERROR: no such column: ordr_date""",
}


def samples_spec() -> dict:
    b = Builder()
    s = _sample
    b.add("/spring/json", Route(500, "application/json", s("spring")),
          [[ST, f"{BODY}:$.trace"]])
    b.add("/spring/whitelabel", Route(500, "text/html;charset=UTF-8", s("whitelabel")),
          [[ST, BODY], [DP, BODY]])
    b.add("/aspnet/ysod", Route(500, "text/html; charset=utf-8", s("aspnet")),
          [[ST, BODY], [DP, BODY], [BAN, BODY], [FP, BODY]])
    b.add("/dotnet/trace", Route(500, "text/plain", s("dotnet")), [[ST, BODY], [FP, BODY]])
    b.add("/rails/debug", Route(500, "text/html; charset=utf-8", s("rails")),
          [[ST, BODY], [DP, BODY], [FP, BODY]])
    b.add("/laravel/whoops", Route(500, "text/html; charset=UTF-8", s("laravel")),
          [[ST, BODY], [DP, BODY], [FP, BODY]])
    b.add("/rust/panic", Route(500, "text/plain", s("rust")), [[ST, BODY]])  # /rustc/<hash>: compiler's path
    b.add("/db/mysql", Route(500, "application/json", s("mysql")), [[SQL, f"{BODY}:$.error"]])
    b.add("/db/postgres", Route(500, "application/json", s("postgres")), [[SQL, f"{BODY}:$.detail"]])
    b.add("/db/mssql", Route(500, "text/html", s("mssql")), [[SQL, BODY]])
    b.add("/db/oracle", Route(500, "text/plain", s("oracle")), [[SQL, BODY]])
    b.add("/db/node-pg", Route(409, "application/json", s("node_pg")), [[SQL, f"{BODY}:$.message"]])
    b.add("/db/sqlite", Route(500, "text/plain", s("sqlite_text")), [[SQL, BODY]])
    return b.spec()


def specs(port: int) -> dict:
    return {"docs": docs_spec(), "faker_pii": faker_pii_spec(), "faker_secrets": faker_secrets_spec(),
            "faker_requests": faker_requests_spec(), "hard_negatives": hard_negatives_spec(),
            "disclosure": disclosure_spec(), "samples": samples_spec()}
