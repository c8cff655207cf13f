"""JSON body schemas learned from samples, merged across samples, turned into JSON Schema.

A learned schema is a plain JSON-able tree, so it can be stored, merged again later (replays
accumulate) and compared:

    {"n": 12,                       # values seen at this position
     "t": {"object": 11, "null": 1},  # JSON types seen, with counts
     "f": {"email": 3},             # string formats seen (uuid, email, date-time, date, uri, ipv4)
     "s": 1732855200.5,             # capture time this position was first seen
     "p": {"id": {...}, ...},       # object properties (each a node; required = seen in every object)
     "x": 4,                        # properties not kept (over MAX_PROPS)
     "i": {...}}                    # array items (first MAX_ITEMS elements of each array)

Merging is commutative and associative (counts add, type sets unite, first-seen takes the
minimum), so the result does not depend on the order of the samples.  Values themselves are
never kept.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from .redact import key_kind

MAX_DEPTH = 10
MAX_PROPS = 200
MAX_ITEMS = 20
MAX_PARSE = 256 * 1024  # bodies larger than this are not parsed

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_EMAIL = re.compile(r"[^@\s]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+\Z")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\Z")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\Z")


def string_format(s: str) -> str | None:
    n = len(s)
    if n < 7 or n > 64:
        return None
    c = s[0]
    if n == 36 and _UUID.match(s):
        return "uuid"
    if c.isdigit():
        if n == 10 and _DATE.match(s):
            return "date"
        if n >= 16 and _DATETIME.match(s):
            return "date-time"
        if n <= 15 and _IPV4.match(s):
            return "ipv4"
        return None
    if "@" in s and _EMAIL.match(s):
        return "email"
    if c == "h" and s.startswith(("http://", "https://")):
        return "uri"
    return None


_TYPE_NAMES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object"}


def _type(v: Any) -> str:
    t = _TYPE_NAMES.get(type(v))
    if t is not None:
        return t
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


_KEYS: dict[str, str] = {}


def field_name(k: str) -> str:
    """A JSON key as a field name: a key that is data (an email, a token, a card number) is named
    by its kind, ``{email}``; cached per key."""
    got = _KEYS.get(k)
    if got is None:
        got = k
        if len(k) >= 16 or "@" in k or sum(c.isdigit() for c in k) >= 6:
            kind = key_kind(k)  # a key that is data (an email, a token): never a field name
            if kind is not None:
                got = "{" + kind + "}"
        if len(_KEYS) >= 50_000:
            _KEYS.clear()
        _KEYS[k] = got
    return got


def observe(node: dict | None, value: Any, ts: float, depth: int = 0, count: bool = True) -> dict:
    """Fold one JSON value into ``node`` (None to start) and return the node.

    ``count=False`` only lowers first-seen times (the same body seen again, earlier)."""
    if node is None:
        node = {"n": 0, "t": {}, "s": ts}
    elif ts < node.get("s", ts):
        node["s"] = ts
    t = _type(value)
    if count:
        node["n"] += 1
        types = node["t"]
        types[t] = types.get(t, 0) + 1
    if depth >= MAX_DEPTH:
        return node
    if t == "string":
        if count:
            f = string_format(value)
            if f is not None:
                fmts = node.setdefault("f", {})
                fmts[f] = fmts.get(f, 0) + 1
    elif t == "object":
        props = node.setdefault("p", {})
        for k, v in value.items():
            k = _KEYS.get(k) or field_name(k)
            child = props.get(k)
            if child is None and len(props) >= MAX_PROPS:
                if count:
                    node["x"] = node.get("x", 0) + 1
                continue
            props[k] = observe(child, v, ts, depth + 1, count)
    elif t == "array":
        items = node.get("i")
        for v in value[:MAX_ITEMS]:
            items = observe(items, v, ts, depth + 1, count)
        if items is not None:
            node["i"] = items
    return node


# ---- one body's schema, computed once per distinct body and folded into accumulators ---------


def shape(value: Any, depth: int = 0) -> dict:
    """The learned schema of one JSON value alone, without first-seen times and without the
    ``MAX_PROPS`` cap (applied when it is folded): ``observe(None, value, ts)`` less the ``"s"``
    keys.  Bodies repeat (the same list, the same error), so the inventory computes this once
    per distinct body (:class:`ShapeCache`) and :func:`fold` adds it to each accumulator."""
    node: dict[str, Any] = {"n": 0, "t": {}}
    _shape_into(node, value, depth)
    return node


def _shape_into(node: dict, value: Any, depth: int) -> None:
    """``observe(node, value, ...)`` without first-seen times and without the cap."""
    t = _TYPE_NAMES.get(type(value)) or _type(value)
    node["n"] += 1
    types = node["t"]
    types[t] = types.get(t, 0) + 1
    if depth >= MAX_DEPTH:
        return
    if t == "string":
        f = string_format(value)
        if f is not None:
            fmts = node.get("f")
            if fmts is None:
                node["f"] = {f: 1}
            else:
                fmts[f] = fmts.get(f, 0) + 1
    elif t == "object":
        props = node.get("p")
        if props is None:
            props = node["p"] = {}
        keys = _KEYS
        for k, v in value.items():
            k = keys.get(k) or field_name(k)
            child = props.get(k)
            if child is None:
                child = props[k] = {"n": 0, "t": {}}
            _shape_into(child, v, depth + 1)
    elif t == "array":
        if value:
            items = node.get("i")
            if items is None:
                items = node["i"] = {"n": 0, "t": {}}
            for v in value[:MAX_ITEMS]:
                _shape_into(items, v, depth + 1)


def fold(acc: dict | None, b: dict, ts: float, count: bool = True, k: int = 1) -> dict:
    """``observe(acc, value, ts, count=count)`` for a value whose :func:`shape` is ``b``, ``k``
    times (the same shape seen in ``k`` bodies, the earliest at ``ts``), in place: counts add,
    first-seen times take ``ts`` where lower, properties over ``MAX_PROPS`` are counted in
    ``x`` as ``observe`` counts them (once per occurrence).  ``b`` is not changed."""
    if acc is None:
        acc = {"n": 0, "t": {}, "s": ts}
    elif ts < acc.get("s", ts):
        acc["s"] = ts
    if count:
        acc["n"] += b["n"] * k
        at = acc["t"]
        for key, v in b["t"].items():
            at[key] = at.get(key, 0) + v * k
        bf = b.get("f")
        if bf:
            af = acc.get("f")
            if af is None:
                af = acc["f"] = {}
            for key, v in bf.items():
                af[key] = af.get(key, 0) + v * k
    bp = b.get("p")
    if bp is not None:
        props = acc.get("p")
        if props is None:
            props = acc["p"] = {}
        for key, c in bp.items():
            child = props.get(key)
            if child is None and len(props) >= MAX_PROPS:
                if count:
                    acc["x"] = acc.get("x", 0) + c["n"] * k
                continue
            props[key] = fold(child, c, ts, count, k)
    bi = b.get("i")
    if bi is not None:
        acc["i"] = fold(acc.get("i"), bi, ts, count, k)
    return acc


class ShapeCache:
    """Body -> its :func:`shape` (equal shapes are one object), bounded by the bytes of the
    bodies kept.  Exact: looked up by CRC-32 and length, then compared byte for byte."""

    def __init__(self, max_bytes: int = 8 << 20, max_entries: int = 4096):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.data: dict[tuple[int, int], tuple[bytes, dict | None]] = {}
        self.interned: dict[bytes, dict] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, body: bytes, crc: int) -> dict:
        """The shape of ``body`` (whose CRC-32 is ``crc``); raises ValueError when it is not
        JSON (remembered too)."""
        key = (crc, len(body))
        got = self.data.get(key)
        if got is not None and (got[0] is body or got[0] == body):
            self.hits += 1
            sh = got[1]
        else:
            self.misses += 1
            try:
                sh = self._intern(shape(parse_json(body)))
            except (ValueError, UnicodeDecodeError, RecursionError):
                sh = None
            if len(body) <= self.max_bytes >> 3:
                if self.bytes + len(body) > self.max_bytes or len(self.data) >= self.max_entries:
                    self.data.clear()
                    self.bytes = 0
                self.data[key] = (body, sh)
                self.bytes += len(body)
        if sh is None:
            raise ValueError("not JSON")
        return sh

    def _intern(self, sh: dict) -> dict:
        try:
            k = orjson.dumps(sh, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return sh
        got = self.interned.get(k)
        if got is None:
            if len(self.interned) >= self.max_entries:
                self.interned.clear()
            got = self.interned[k] = sh
        return got


def merge(a: dict | None, b: dict | None) -> dict | None:
    """Merge two learned schemas (commutative, associative)."""
    if a is None:
        return b
    if b is None:
        return a
    out: dict = {"n": a["n"] + b["n"], "t": _add(a["t"], b["t"]), "s": min(a.get("s", 0), b.get("s", 0))}
    if "f" in a or "f" in b:
        out["f"] = _add(a.get("f", {}), b.get("f", {}))
    if "p" in a or "p" in b:
        pa, pb = a.get("p", {}), b.get("p", {})
        props = {}
        for k in sorted(set(pa) | set(pb)):
            if len(props) >= MAX_PROPS:
                out["x"] = out.get("x", 0) + 1
                continue
            props[k] = merge(pa.get(k), pb.get(k))
        out["p"] = props
    if "x" in a or "x" in b:
        out["x"] = out.get("x", 0) + a.get("x", 0) + b.get("x", 0)
    if "i" in a or "i" in b:
        out["i"] = merge(a.get("i"), b.get("i"))
    return out


def _add(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def parse_json(body: bytes) -> Any:
    """The JSON value of a body, or raise ValueError (orjson, with :func:`json.loads` for what
    orjson refuses and ``json`` accepts: NaN, integers over 64 bits, lone surrogates)."""
    if len(body) > MAX_PARSE:
        raise ValueError("body too large to parse")
    return loads(body)


def loads(data: bytes | str) -> Any:
    """``json.loads``, parsed by orjson when it can (same values for what both accept)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def key_paths(node: dict | None, depth: int = 2) -> set[str]:
    """``{"a", "a.b", "[].c"}``: the structure of a response, for comparing siblings."""
    out: set[str] = set()
    if node is None:
        return out

    def walk(n: dict, prefix: str, d: int) -> None:
        if d >= depth:
            return
        for k, c in n.get("p", {}).items():
            out.add(prefix + k)
            walk(c, prefix + k + ".", d + 1)
        if "i" in n:
            walk(n["i"], prefix + "[].", d)

    walk(node, "", 0)
    return out


_MAPKEY = re.compile(r"(-?\d+|[0-9a-fA-F-]{16,}|[^A-Za-z_].*)\Z")


def to_json_schema(node: dict | None) -> dict:
    """JSON Schema (2020-12, as used by OpenAPI 3.1) for a learned schema."""
    if node is None:
        return {}
    types = sorted(node["t"], key=lambda t: (-node["t"][t], t))
    out: dict[str, Any] = {}
    if len(types) == 1:
        out["type"] = types[0]
    elif types:
        if set(types) == {"integer", "number"}:
            out["type"] = "number"
        else:
            out["type"] = sorted(set("number" if t == "integer" and "number" in types else t for t in types))
    strings = node["t"].get("string", 0)
    fmts = node.get("f", {})
    if strings and fmts:
        f, c = max(fmts.items(), key=lambda kv: (kv[1], kv[0]))
        if c == strings:
            out["format"] = f
    props = node.get("p")
    if props is not None and "object" in node["t"]:
        objects = node["t"]["object"]
        if len(props) > 20 and all(_MAPKEY.match(k) for k in props):
            values = None
            for c in props.values():
                values = merge(values, c)
            out["additionalProperties"] = to_json_schema(values)
        else:
            out["properties"] = {k: to_json_schema(c) for k, c in sorted(props.items())}
            req = sorted(k for k, c in props.items() if c["n"] >= objects)
            if req:
                out["required"] = req
    if "i" in node and "array" in node["t"]:
        out["items"] = to_json_schema(node["i"])
    return out


def flatten(
    node: dict | None,
    prefix: str = "",
    parent_objects: int | None = None,
    out: list | None = None,
    depth: int = 0,
) -> list[dict]:
    """One row per field: ``{"path": "items[].id", "type": "integer", "format": None,
    "required": True, "first_seen": ts}`` (the root itself is not listed)."""
    if out is None:
        out = []
    if node is None or depth > MAX_DEPTH:
        return out
    if prefix:
        types = sorted(node["t"], key=lambda t: (-node["t"][t], t))
        strings = node["t"].get("string", 0)
        fmts = node.get("f", {})
        fmt = None
        if strings and fmts:
            f, c = max(fmts.items(), key=lambda kv: (kv[1], kv[0]))
            fmt = f if c == strings else None
        out.append(
            {
                "path": prefix,
                "type": "|".join(types),
                "format": fmt,
                "required": parent_objects is not None and node["n"] >= parent_objects,
                "first_seen": node.get("s"),
            }
        )
    props = node.get("p")
    if props and "object" in node["t"]:
        objects = node["t"]["object"]
        if len(props) > 20 and all(_MAPKEY.match(k) for k in props):
            values = None
            for c in props.values():
                values = merge(values, c)
            flatten(values, (prefix + "." if prefix else "") + "*", objects, out, depth + 1)
        else:
            for k in sorted(props):
                flatten(props[k], (prefix + "." if prefix else "") + k, objects, out, depth + 1)
    if "i" in node and "array" in node["t"]:
        flatten(node["i"], prefix + "[]", None, out, depth + 1)
    return out
