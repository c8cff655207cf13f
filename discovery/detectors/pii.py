"""Personal data: email, phone, US SSN, payment card, IBAN, national ids, date of birth, street address.

Values are nominated by the shared pattern pass (free text) or by their key name (JSON, forms,
CSV columns), then validated: Luhn + brand prefix for cards, SSA rules for SSNs, ISO 7064 for
IBANs, python-stdnum checksums for national ids, libphonenumber for phones.  Without a key
that names the data, only well-formatted values that pass the strict validator are reported;
a key that names the data relaxes the format (``"ssn": "123456789"``) but never the checksum.
Keys that say the value is *not* the data (``card_last4``, ``order_number``, ``ip_address``)
silence it.  Severity: high for SSN, card, IBAN and national ids in responses, medium for the
rest; request-side values (a user submitting their own data) are low, but still reported
because on a cleartext wire anyone can read them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.us import ssn as us_ssn

from .base import API3, API8, Base, Finding, Leaf
from .redaction import mask_digits, mask_email, mask_tail, stars

ROLE_ACCOUNTS = frozenset(
    {
        "info",
        "support",
        "admin",
        "administrator",
        "webmaster",
        "noreply",
        "no-reply",
        "donotreply",
        "do-not-reply",
        "postmaster",
        "hostmaster",
        "abuse",
        "security",
        "sales",
        "contact",
        "help",
        "hello",
        "privacy",
        "billing",
        "press",
        "jobs",
        "careers",
        "license",
        "legal",
        "root",
        "mailer-daemon",
        "notifications",
        "feedback",
        "office",
        "team",
        "marketing",
        "newsletter",
        "dpo",
        "compliance",
        "helpdesk",
        "service",
    }
)
# mailing lists and team addresses (python-list@, distutils-sig@, bugs@, dev@): not a person
_LIST_ADDRESS = re.compile(
    r"(?:^|[-_.])(?:list|lists|sig|dev|devel|users|announce|request|docs|bugs|issues|"
    r"maintainers|team|ops|staff|news|owner|bounces)(?:$|[-_.])"
)
EMAIL_TLD_NOT = frozenset(
    {
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "webp",
        "css",
        "js",
        "ico",
        "bmp",
        "tif",
        "tiff",
        "map",
        "json",
        "html",
        "htm",
        "php",
        "txt",
        "xml",
        "woff",
        "woff2",
    }
)


_HIT_MEMO: dict[tuple, Finding | None] = {}  # (detector, hit text, leaf place, hasher) -> finding
_MISS = object()


def _remember(key: tuple, got: Finding | None) -> None:
    if len(_HIT_MEMO) >= 20_000:
        _HIT_MEMO.clear()
    _HIT_MEMO[key] = got


def _sev(leaf: Leaf, high: str) -> tuple[str, str | None]:
    return (high, API3) if leaf.side == "response" else ("low", API8)


class Email(Base):
    name = "pii.email"
    needs = {"email": ("@",)}
    necessary = {"email": ("@",)}
    reads = ("email",)
    patterns = {
        "email": r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.){1,8}"
        r"[A-Za-z]{2,24}(?![\w-])"
    }

    def detect(self, ctx) -> Iterator[Finding]:
        # what a hit gives depends on its text and leaf only: remembered (repeated bodies)
        memo = _HIT_MEMO
        hasher = getattr(ctx, "hash", None)
        for h in ctx.hits("email"):
            leaf = h.leaf
            key = (self.name, h.text, leaf.location, leaf.part, leaf.side, hasher)
            got = memo.get(key, _MISS)
            if got is _MISS:
                got = self._judge(ctx, h)
                _remember(key, got)
            if got is not None:
                yield got

    def _judge(self, ctx, h) -> Finding | None:
        tld = h.text.rsplit(".", 1)[-1].lower()
        local = h.text.split("@", 1)[0].lower()
        if tld in EMAIL_TLD_NOT or ".." in h.text or local in ROLE_ACCOUNTS or _LIST_ADDRESS.search(local):
            return None  # file names (logo@2x.png) and role accounts (support@) are not personal data
        if h.leaf.part == "path" and h.text.split("@")[0].isdigit():
            return None
        sev, cat = _sev(h.leaf, "medium")
        return self.finding(
            ctx, h.leaf.location, "email", mask_email(h.text), h.text.lower(), severity=sev, category=cat
        )


# ---- phone ---------------------------------------------------------------------------------
PHONE_WORDS = frozenset(
    {
        "phone",
        "mobile",
        "cell",
        "tel",
        "telephone",
        "fax",
        "msisdn",
        "whatsapp",
        "cellphone",
        "phonenumber",
        "mobilephone",
        "homephone",
        "workphone",
        "contactnumber",
    }
)
PHONE_NOT = frozenset(
    {
        "verified",
        "type",
        "code",
        "country",
        "ext",
        "extension",
        "id",
        "count",
        "confirmed",
        "prefix",
        "enabled",
        "hash",
    }
)


def _phone_key(leaf: Leaf) -> bool:
    return bool(PHONE_WORDS.intersection(leaf.words) or "phone" in leaf.key) and not PHONE_NOT.intersection(
        leaf.words
    )


# regions tried for a number without a country code under a key that says it is a phone
KEYED_REGIONS = ("US", "GB", "DE", "FR", "IN", "BR", "ES", "IT", "NL", "AU")


def parse_phone(value: str, strict: bool):
    v = value.strip()
    if v.startswith("00"):
        v = "+" + v[2:]
    regions = ("US",) if strict or v.startswith("+") else KEYED_REGIONS
    for region in regions:
        try:
            n = phonenumbers.parse(v, region)
        except phonenumbers.NumberParseException:
            return None
        if (phonenumbers.is_valid_number if strict else phonenumbers.is_possible_number)(n):
            return n
    return None


class Phone(Base):
    name = "pii.phone"
    # digits: (2-4) (2-4) (2-5), or +8..15; and the groups' shape: "1 23 45", "(12) 34 56" or
    # "+12345678"
    necessary = {"phone": (6, r"\d[ .-]\d{2,4}[ .-]\d\d|\)[ .-]?\d{2,4}[ .-]\d\d|\+\d{8}")}
    reads = ("phone",)
    patterns = {
        "phone": r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{2,4}[ .-]\d{2,5}"
        r"(?:[ .-]\d{2,4})?(?![\w-]|[.,]\d)"
        r"|(?<![\w+])\+\d{8,15}(?![\w.])",
    }
    _digits = re.compile(r"\d")

    @staticmethod
    def wants_key(leaf: Leaf) -> bool:
        return _phone_key(leaf)

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for leaf in ctx.leaves:
            if (
                leaf.part in ("body", "query")
                and leaf.key
                and _phone_key(leaf)
                and 6 <= len(leaf.value) <= 40
            ):
                n = parse_phone(leaf.value, strict=False)
                if n is not None and len(self._digits.findall(leaf.value)) >= 7:
                    seen.add(leaf.location)
                    yield self._make(ctx, leaf, n, "high")
        for h in ctx.hits("phone"):
            if h.leaf.location in seen or h.leaf.part in ("path", "header", "cookie"):
                continue
            n = parse_phone(h.text, strict=True)
            if n is None:
                continue
            seen.add(h.leaf.location)
            yield self._make(ctx, h.leaf, n, "medium")

    def _make(self, ctx, leaf: Leaf, n, confidence: str) -> Finding:
        e164 = phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
        sev, cat = _sev(leaf, "medium")
        return self.finding(
            ctx,
            leaf.location,
            "phone",
            mask_tail(e164),
            e164,
            severity=sev,
            category=cat,
            confidence=confidence,
        )


# ---- SSN -----------------------------------------------------------------------------------
SSN_KEYS = frozenset(
    {
        "ssn",
        "socialsecuritynumber",
        "socialsecurity",
        "socialsecurityno",
        "ssnnumber",
        "taxpayerssn",
        "ssnid",
        "usssn",
        "socialsecuritynum",
    }
)


_SSN_BLACKLIST = frozenset(getattr(us_ssn, "_ssn_blacklist", ()))


def ssn_valid(digits: str) -> bool:
    """``stdnum.us.ssn.is_valid`` for nine ASCII digits (the same rules, without stdnum's
    per-character Unicode cleaning); anything else goes to stdnum."""
    if len(digits) != 9 or not (digits.isascii() and digits.isdigit()) or not _SSN_BLACKLIST:
        return us_ssn.is_valid(digits)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return f"{area}-{group}-{serial}" not in _SSN_BLACKLIST


_SSN_KEYED: dict[tuple, bool] = {}  # (key, words) -> _ssn_key


def _ssn_key(leaf: Leaf) -> bool:
    return leaf.key in SSN_KEYS or (
        "ssn" in leaf.words and not {"last", "last4", "4", "masked"} & set(leaf.words)
    )


class SSN(Base):
    name = "pii.ssn"
    patterns = {"ssn": r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"}
    necessary = {"ssn": (9, r"\d\d\d-\d\d-\d\d\d\d")}
    reads = ("ssn",)

    @staticmethod
    def wants_key(leaf: Leaf) -> bool:
        return _ssn_key(leaf)

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        keyed = _SSN_KEYED
        memo = _HIT_MEMO
        hasher = getattr(ctx, "hash", None)
        for leaf in ctx.leaves:
            if leaf.key:
                k = (leaf.key, leaf.words)
                is_ssn = keyed.get(k)
                if is_ssn is None:
                    if len(keyed) >= 20_000:
                        keyed.clear()
                    is_ssn = keyed[k] = _ssn_key(leaf)
                if is_ssn and leaf.part in ("body", "query"):
                    key = (self.name, None, leaf.value, leaf.location, leaf.side, hasher)
                    got = memo.get(key, _MISS)
                    if got is _MISS:
                        digits = leaf.value.replace(" ", "").replace("-", "")
                        ok = len(digits) == 9 and ssn_valid(digits)
                        got = self._make(ctx, leaf, digits, "high") if ok else None
                        _remember(key, got)
                    if got is not None:
                        seen.add(leaf.location)
                        yield got
        for h in ctx.hits("ssn"):
            leaf = h.leaf
            if leaf.location in seen or leaf.part in ("path", "header", "cookie"):
                continue
            # what a valid hit gives depends on its text and leaf only: remembered
            key = (self.name, h.text, leaf.location, leaf.part, leaf.side, hasher)
            got = memo.get(key, _MISS)
            if got is _MISS:
                digits = h.text.replace("-", "")
                got = self._make(ctx, leaf, digits, "medium") if ssn_valid(digits) else None
                _remember(key, got)
            if got is not None:
                seen.add(leaf.location)
                yield got

    def _make(self, ctx, leaf: Leaf, digits: str, confidence: str) -> Finding:
        sev, cat = _sev(leaf, "high")
        if leaf.side == "request":
            sev = "medium"
        return self.finding(
            ctx,
            leaf.location,
            "us_ssn",
            "***-**-" + digits[-4:],
            digits,
            severity=sev,
            category=cat,
            confidence=confidence,
        )


# ---- payment card --------------------------------------------------------------------------
def card_brand(d: str) -> str | None:
    n = len(d)
    p2, p3, p4, p6 = int(d[:2]), int(d[:3]), int(d[:4]), int(d[:6])
    if d[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 222100 <= p6 <= 272099) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= p6 <= 622925) and 16 <= n <= 19:
        return "discover"
    if p2 == 35 and 16 <= n <= 19:  # JCB is 3528-3589; test generators (Faker) use all of 35xx
        return "jcb"
    if p4 in (2131, 1800) and n == 15:
        return "jcb"
    if (300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095) and 14 <= n <= 19:
        return "diners"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    if (p2 in (50, 56, 57, 58, 60, 63, 67) or p4 == 604) and 12 <= n <= 19:  # 0604: Maestro UK
        return "maestro"
    if p4 == 2200 or p4 == 2201 or p4 == 2202 or p4 == 2203 or p4 == 2204:
        return "mir" if n == 16 else None
    return None


CARD_WORDS = frozenset(
    {
        "card",
        "cc",
        "pan",
        "creditcard",
        "cardnumber",
        "ccnumber",
        "cardno",
        "ccnum",
        "cardnum",
        "primaryaccountnumber",
        "debitcard",
    }
)
CARD_NOT = frozenset(
    {
        "last4",
        "last",
        "masked",
        "bin",
        "token",
        "id",
        "fingerprint",
        "exp",
        "expiry",
        "brand",
        "type",
        "holder",
        "name",
        "cvv",
        "cvc",
        "month",
        "year",
        "count",
        "hash",
        "iin",
    }
)
NUMBER_NOT = frozenset(
    {
        "id",
        "order",
        "invoice",
        "tracking",
        "reference",
        "ref",
        "ts",
        "timestamp",
        "time",
        "ms",
        "count",
        "total",
        "amount",
        "cents",
        "isbn",
        "ean",
        "upc",
        "gtin",
        "barcode",
        "sku",
        "serial",
        "nonce",
        "seq",
        "sequence",
        "version",
        "build",
        "size",
        "bytes",
        "no",
        "num",
        "code",
        "zip",
        "postal",
        "phone",
        "mobile",
        "imei",
        "account",
        "iban",
    }
)
_SEP = re.compile(r"[ -]")


def _card_key(leaf: Leaf) -> bool:
    w = set(leaf.words)
    return bool((CARD_WORDS & w or "cardnumber" in leaf.key or "creditcard" in leaf.key) and not CARD_NOT & w)


class Card(Base):
    name = "pii.card"
    necessary = {"card": (12, r"\d(?:[ -]?\d){11}")}  # 12 digits, at most one separator apart
    reads = ("card",)
    patterns = {"card": r"(?<![\w.,$€£-])\d(?:[ -]?\d){11,18}(?![\w]|[.,]\d|-\d)"}

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for h in ctx.hits("card"):
            leaf = h.leaf
            if leaf.location in seen or leaf.part in ("path", "header", "cookie"):
                continue
            raw = h.text
            digits = _SEP.sub("", raw)
            if raw != digits and not _grouped(raw):
                continue
            brand = card_brand(digits)
            if brand is None or not luhn.is_valid(digits) or len(set(digits)) < 2:
                continue
            keyed = bool(leaf.key) and _card_key(leaf)
            if not keyed and (leaf.key in VALIDATORS or leaf.key in GENERIC_ID_KEYS or leaf.key in SSN_KEYS):
                continue  # the key says it is another kind of number
            if brand == "maestro" and len(digits) < 16 and not keyed:
                continue
            if not keyed and leaf.key and set(leaf.words) & NUMBER_NOT:
                continue
            if not keyed and leaf.number and len(digits) != len(leaf.value):
                continue
            seen.add(leaf.location)
            sev, cat = _sev(leaf, "high")
            if leaf.side == "request":
                sev = "medium"
            yield self.finding(
                ctx,
                leaf.location,
                brand,
                mask_digits(digits),
                digits,
                severity=sev,
                category=cat,
                confidence="high" if keyed or raw != digits else "medium",
            )


def _grouped(raw: str) -> bool:
    """Separators only between groups in a card layout (4-4-4-4, 4-6-5, 4-4-4-4-3)."""
    groups = [len(g) for g in _SEP.split(raw)]
    return groups in ([4, 4, 4, 4], [4, 6, 5], [4, 6, 4], [4, 4, 4, 4, 3], [4, 4, 4, 3], [4, 4, 4, 1])


# ---- IBAN ----------------------------------------------------------------------------------
class IBAN(Base):
    name = "pii.iban"
    needs = {"iban": r"[A-Z]{2}\d\d ?[A-Z0-9]{4}"}
    necessary = needs
    reads = ("iban",)
    patterns = {"iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"}

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for h in ctx.hits("iban"):
            if h.leaf.location in seen or h.leaf.part in ("path", "cookie"):
                continue
            compact = h.text.replace(" ", "")
            if compact[2:4] in ("00", "01", "99") or not std_iban.is_valid(compact):  # ISO 13616: 02..98
                continue
            seen.add(h.leaf.location)
            sev, cat = _sev(h.leaf, "high")
            yield self.finding(
                ctx,
                h.leaf.location,
                "iban_" + compact[:2].lower(),
                compact[:4] + stars(len(compact) - 8) + compact[-4:],
                compact,
                severity=sev,
                category=cat,
            )


# ---- national ids (python-stdnum) ----------------------------------------------------------
def _validators() -> dict[str, tuple[str, object]]:
    import importlib

    def m(name: str):
        return importlib.import_module(f"stdnum.{name}")

    br = type("br", (), {"cpf": m("br.cpf")})
    ca = type("ca", (), {"sin": m("ca.sin")})
    dk = type("dk", (), {"cpr": m("dk.cpr")})
    es = type("es", (), {"nif": m("es.nif")})
    fi = type("fi", (), {"hetu": m("fi.hetu")})
    fr = type("fr", (), {"nir": m("fr.nir")})
    it = type("it", (), {"codicefiscale": m("it.codicefiscale")})
    nl = type("nl", (), {"bsn": m("nl.bsn")})
    no = type("no", (), {"fodselsnummer": m("no.fodselsnummer")})
    pl = type("pl", (), {"pesel": m("pl.pesel")})
    se = type("se", (), {"personnummer": m("se.personnummer")})
    aadhaar = m("in_.aadhaar")

    return {
        "bsn": ("nl_bsn", nl.bsn),
        "burgerservicenummer": ("nl_bsn", nl.bsn),
        "cpf": ("br_cpf", br.cpf),
        "pesel": ("pl_pesel", pl.pesel),
        "personnummer": ("se_personnummer", se.personnummer),
        "hetu": ("fi_hetu", fi.hetu),
        "henkilotunnus": ("fi_hetu", fi.hetu),
        "fodselsnummer": ("no_fodselsnummer", no.fodselsnummer),
        "fnr": ("no_fodselsnummer", no.fodselsnummer),
        "nir": ("fr_nir", fr.nir),
        "insee": ("fr_nir", fr.nir),
        "sin": ("ca_sin", ca.sin),
        "aadhaar": ("in_aadhaar", aadhaar),
        "aadhar": ("in_aadhaar", aadhaar),
        "dni": ("es_dni", es.nif),
        "nif": ("es_nif", es.nif),
        "nie": ("es_nie", es.nif),
        "codicefiscale": ("it_codicefiscale", it.codicefiscale),
        "cf": ("it_codicefiscale", it.codicefiscale),
        "cpr": ("dk_cpr", dk.cpr),
    }


VALIDATORS = _validators()
GENERIC_ID_KEYS = frozenset(
    {
        "nationalid",
        "nationalidentifier",
        "nationalidnumber",
        "nationalidentitynumber",
        "idnumber",
        "personalid",
        "personalidentitynumber",
        "personalnumber",
        "taxid",
        "tin",
        "citizenid",
        "identitynumber",
        "govid",
        "governmentid",
        "nationalnumber",
    }
)
GENERIC_ORDER = [
    "it_codicefiscale",
    "br_cpf",
    "es_nif",
    "fi_hetu",
    "se_personnummer",
    "pl_pesel",
    "no_fodselsnummer",
    "fr_nir",
    "in_aadhaar",
    "ca_sin",
    "dk_cpr",
    "nl_bsn",
]
_BY_KIND = {kind: mod for kind, mod in VALIDATORS.values()}


class NationalId(Base):
    name = "pii.national_id"
    severity = "high"
    # digits: codice fiscale 7, DNI 7, CPF 11, HETU 9, personnummer 10; and a piece of each
    # format: CPF "123.456.7", codice fiscale "A12B", HETU/personnummer "123456-" (or "A"),
    # DNI "1234567Z"
    necessary = {"natid": (7, r"[A-Z]\d\d[A-Z]|\d(?:\d\d\.\d{3}\.\d|\d{5}[-+A]|\d{6}-?[A-Z])")}
    reads = ("natid",)
    patterns = {
        "natid": r"\b\d{3}\.\d{3}\.\d{3}-\d{2}\b"  # br cpf
        r"|\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b"  # it codice fiscale
        r"|\b[XYZ]?\d{7,8}-?[A-Z]\b"  # es dni / nie
        r"|\b\d{6}[-+A]\d{3}[0-9A-Y]\b"  # fi hetu
        r"|\b(?:19|20)?\d{6}[-+]\d{4}\b",  # se personnummer
    }

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for leaf in ctx.leaves:
            if leaf.part not in ("body", "query") or not leaf.key or len(leaf.value) > 32:
                continue
            kinds = self._kinds(leaf)
            if not kinds:
                continue
            kind = self._valid(leaf.value, kinds)
            if kind:
                seen.add(leaf.location)
                yield self._make(ctx, leaf, kind, leaf.value, "high")
        for h in ctx.hits("natid"):
            if h.leaf.location in seen or h.leaf.part not in ("body", "query"):
                continue
            kind = self._valid(h.text, ["br_cpf", "it_codicefiscale", "es_nif", "fi_hetu", "se_personnummer"])
            if kind:
                seen.add(h.leaf.location)
                yield self._make(ctx, h.leaf, kind, h.text, "medium")

    @staticmethod
    def _kinds(leaf: Leaf) -> list[str] | None:
        spec = VALIDATORS.get(leaf.key) or next((VALIDATORS[w] for w in leaf.words if w in VALIDATORS), None)
        if spec is not None:
            return [spec[0]]
        if leaf.key in GENERIC_ID_KEYS or ({"national", "id"} <= set(leaf.words)):
            return GENERIC_ORDER
        return None

    @classmethod
    def wants_key(cls, leaf: Leaf) -> bool:
        return cls._kinds(leaf) is not None

    @staticmethod
    def _valid(value: str, kinds) -> str | None:
        for kind in kinds:
            mod = _BY_KIND[kind]
            try:
                if mod.is_valid(value):
                    return kind
            except Exception:  # a validator must never break the pipeline
                continue
        return None

    def _make(self, ctx, leaf: Leaf, kind: str, value: str, confidence: str) -> Finding:
        sev, cat = _sev(leaf, "high")
        compact = re.sub(r"[\s.\-+]", "", value).upper()
        return self.finding(
            ctx,
            leaf.location,
            kind,
            stars(len(compact) - 2) + compact[-2:],
            compact,
            severity=sev,
            category=cat,
            confidence=confidence,
        )


# ---- date of birth -------------------------------------------------------------------------
DOB_KEYS = frozenset(
    {
        "dob",
        "dateofbirth",
        "birthdate",
        "birthday",
        "birthdt",
        "bday",
        "born",
        "borndate",
        "dobdate",
        "birthdatetime",
        "dateofbirthdate",
        "dobstr",
    }
)
_MONTHS = (
    "jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec|january|february|march|april|june|july|"
    "august|september|october|november|december"
)
_DATE = re.compile(
    r"^(?:(?P<y1>\d{4})[-/.](?P<m1>\d{1,2})[-/.](?P<d1>\d{1,2})(?:[T ][\d:.]+Z?)?"
    r"|(?P<a2>\d{1,2})[-/.](?P<b2>\d{1,2})[-/.](?P<y2>\d{4})"
    rf"|(?:{_MONTHS})\.? \d{{1,2}},? (?P<y3>\d{{4}})"
    rf"|\d{{1,2}} (?:{_MONTHS})\.?,? (?P<y4>\d{{4}}))$",
    re.I,
)


class DateOfBirth(Base):
    name = "pii.dob"
    reads = ()

    @staticmethod
    def wants_key(leaf: Leaf) -> bool:
        return leaf.key in DOB_KEYS or bool({"birth"} & set(leaf.words) and {"date", "day"} & set(leaf.words))

    def detect(self, ctx) -> Iterator[Finding]:
        this_year = date.today().year
        for leaf in ctx.leaves:
            if leaf.part not in ("body", "query") or leaf.number:
                continue
            if not self.wants_key(leaf):
                continue
            m = _DATE.match(leaf.value.strip())
            if not m:
                continue
            year = int(next(g for g in (m.group("y1"), m.group("y2"), m.group("y3"), m.group("y4")) if g))
            if not 1900 <= year <= this_year:
                continue
            sev, cat = _sev(leaf, "medium")
            yield self.finding(
                ctx,
                leaf.location,
                "date_of_birth",
                re.sub(r"\w", "*", leaf.value.strip()),
                leaf.value.strip(),
                severity=sev,
                category=cat,
            )


# ---- street address ------------------------------------------------------------------------
ADDRESS_WORDS = frozenset(
    {"address", "addr", "street", "streetaddress", "line1", "line2", "address1", "address2", "residence"}
)
ADDRESS_NOT = frozenset(
    {
        "ip",
        "email",
        "mail",
        "mac",
        "wallet",
        "remote",
        "server",
        "bind",
        "host",
        "url",
        "web",
        "contract",
        "btc",
        "eth",
        "type",
        "id",
        "verified",
        "book",
        "local",
        "peer",
        "listen",
        "node",
        "public",
        "private",
        "network",
        "hash",
        "count",
        "validated",
        "ipv4",
        "ipv6",
        "cidr",
        "gateway",
        "proxy",
        "forwarded",
        "hw",
        "bluetooth",
        "token",
        "sender",
        "recipient",
        "to",
        "from",
        "reply",
        "delivery",
        "status",
        "format",
        "kind",
    }
)
# a number and a word (street number, house number, postal code, PO box, military APO/FPO)
_STREET = re.compile(r"(?=.*\d)(?=.*[A-Za-zÀ-ÿ]{2}).*\S\s+\S", re.S)
_NOT_ADDRESS = re.compile(r"^(?:[\d.:/]+|\S+@\S+|https?://\S+|[0-9a-fA-F:]+)$")


class Address(Base):
    name = "pii.address"
    reads = ()

    @staticmethod
    def wants_key(leaf: Leaf) -> bool:
        words = set(leaf.words)
        own = bool(ADDRESS_WORDS & words or "address" in leaf.key or "street" in leaf.key)
        inherited = leaf.key in ("line1", "line2", "street", "streetaddress") or (
            bool({"address", "addr"} & set(leaf.parent_words))
            and bool({"street", "line", "line1", "1"} & words)
        )
        return (own or inherited) and not ADDRESS_NOT & words

    def detect(self, ctx) -> Iterator[Finding]:
        for leaf in ctx.leaves:
            if leaf.part != "body" or leaf.number or not leaf.key:
                continue
            if not self.wants_key(leaf):
                continue
            v = leaf.value.strip()
            if not 6 <= len(v) <= 200 or _NOT_ADDRESS.match(v) or not _STREET.search(v):
                continue
            sev, cat = _sev(leaf, "medium")
            yield self.finding(
                ctx,
                leaf.location,
                "street_address",
                f"[address, {len(v.split())} words]",
                v,
                severity=sev,
                category=cat,
            )


DETECTORS = [Email(), Phone(), SSN(), Card(), IBAN(), NationalId(), DateOfBirth(), Address()]
