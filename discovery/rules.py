"""The inventory rules file (TOML, or YAML when PyYAML is installed): what a user tells the
templating that traffic cannot.

Example (``rules.toml``)::

    # templates to force: matching paths always become this template
    force = ["/repos/{owner}/{repo}", "/files/{*}"]     # {*} at the end = the rest of the path
    # templates never to learn: the sibling collapse that would produce them is skipped
    forbid = ["/cookies/{x}"]
    # words that are never a parameter value (case-insensitive), on top of the built-in list
    literal = ["latest", "2024"]
    # paths not inventoried at all (shell-style globs on the path, query excluded)
    exclude = ["/healthz", "/metrics", "/internal/*"]
    # paths counted as static assets (on top of the file extensions .css .js .png ...)
    static = ["/assets/*", "/_next/*"]

    # per service (the service name as ``apisensor services`` prints it): same keys, added
    [services."api.example.com"]
    force = ["/v1/{tenant}/items"]

The same document in YAML has the same keys.  ``apisensor rules --db X --set rules.toml``
stores the rules in the database (table ``inventory_meta``), so every later replay uses
them; ``--rules FILE`` on ``apisensor retemplate`` applies a file once; the environment
variable ``APISENSOR_RULES=FILE`` overrides what is stored, for one run.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

KEYS = ("force", "forbid", "literal", "exclude", "static")


class RulesError(ValueError):
    pass


@dataclass
class ServiceRules:
    force: list[str] = field(default_factory=list)
    forbid: list[str] = field(default_factory=list)
    literal: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    static: list[str] = field(default_factory=list)
    _exclude_re: re.Pattern | None = None
    _static_re: re.Pattern | None = None
    literal_key: tuple = ()

    def __post_init__(self) -> None:
        self._exclude_re = _globs(self.exclude)
        self._static_re = _globs(self.static)
        self.literal_key = tuple(sorted(w.lower() for w in self.literal))

    def excluded(self, path: str) -> bool:
        return self._exclude_re is not None and self._exclude_re.match(path) is not None

    def static_path(self, path: str) -> bool:
        return self._static_re is not None and self._static_re.match(path) is not None


def _globs(patterns: list[str]) -> re.Pattern | None:
    if not patterns:
        return None
    return re.compile("|".join("(?:" + fnmatch.translate(p) + ")" for p in patterns))


@dataclass
class Rules:
    default: ServiceRules = field(default_factory=ServiceRules)
    services: dict[str, ServiceRules] = field(default_factory=dict)
    text: str = ""

    def for_service(self, name: str) -> ServiceRules:
        return self.services.get(name, self.default)

    @property
    def empty(self) -> bool:
        return not self.text.strip()


def _strings(doc: dict, key: str, where: str) -> list[str]:
    v = doc.get(key, [])
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise RulesError(f"{where}{key}: expected a list of strings")
    for x in v:
        if key in ("force", "forbid") and not x.startswith("/"):
            raise RulesError(f"{where}{key}: template {x!r} must start with /")
    return v


def parse(text: str, fmt: str = "toml") -> Rules:
    """Rules from the text of a rules file (``fmt`` "toml" or "yaml")."""
    if not text.strip():
        return Rules()
    try:
        if fmt == "yaml":
            import yaml

            doc: Any = yaml.safe_load(text) or {}
        else:
            doc = tomllib.loads(text)
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise RulesError(f"cannot parse rules ({fmt}): {e}") from e
    if not isinstance(doc, dict):
        raise RulesError("rules: expected a table/mapping at the top")
    unknown = set(doc) - set(KEYS) - {"services"}
    if unknown:
        raise RulesError(f"rules: unknown keys {sorted(unknown)} (known: {', '.join(KEYS)}, services)")
    base = {k: _strings(doc, k, "") for k in KEYS}
    default = ServiceRules(**base)
    services = {}
    svc = doc.get("services", {})
    if not isinstance(svc, dict):
        raise RulesError("services: expected a table of service names")
    for name, sdoc in svc.items():
        if not isinstance(sdoc, dict):
            raise RulesError(f"services.{name}: expected a table")
        bad = set(sdoc) - set(KEYS)
        if bad:
            raise RulesError(f"services.{name}: unknown keys {sorted(bad)}")
        merged = {k: base[k] + _strings(sdoc, k, f"services.{name}.") for k in KEYS}
        services[name.lower()] = ServiceRules(**merged)
    return Rules(default, services, text if fmt == "toml" else "#yaml\n" + text)


def load_file(path: str) -> Rules:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    fmt = "yaml" if path.lower().endswith((".yaml", ".yml")) else "toml"
    return parse(text, fmt)


def from_stored(text: str | None) -> Rules:
    if not text:
        return Rules()
    if text.startswith("#yaml\n"):
        return parse(text[6:], "yaml")
    return parse(text, "toml")


def active(stored: str | None) -> Rules:
    """The rules in force: ``$APISENSOR_RULES`` if set, else what the database stores."""
    env = os.environ.get("APISENSOR_RULES")
    if env:
        return load_file(env)
    return from_stored(stored)
