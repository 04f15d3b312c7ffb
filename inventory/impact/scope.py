"""Outage scopes: which vendor broke, narrowed by product, version, OS, place and tags.

A scope is validated against the inventory before anything is computed, so a
typo at 3 a.m. is an error that names the field and suggests close names —
never a silently empty answer.

Versions
--------
Version ranges are PEP 440 specifiers (``>=7.11``, ``>=7.11,<7.16``,
``==7.11.*``).  Vendor version strings such as ``7.11.18110.0`` are valid PEP
440 release numbers and compare segment by segment, so ``7.11.18110.0 >= 7.11``
holds.  Conveniences and deliberate choices:

* a bare version (``7.11``) means that release line: ``==7.11.*``;
* pre-releases are included in ranges (``7.16.0b1`` matches ``>=7.11``): an
  outage does not skip beta hosts;
* an installed version that is not PEP 440 (``7.11.18110.0 (build 5)``,
  ``v7.11``) is compared by its leading dotted number (``7.11.18110.0``);
* a Debian or RPM epoch (``1:2.38.1-5``) is not part of the upstream version a
  vendor's advisory names, so it is dropped before comparing (``2.38.1-5``);
* an installed version that is unknown (``None``: the source did not know the
  product's version, as for an Azure VM extension, which reports only its
  handler's version) or has no leading number at all (``unknown``, empty)
  cannot be placed in a range: such installations are **not** seeds of a
  version-narrowed scope; the answer lists them under "version unknown — check
  by hand" (``ImpactResult.version_unknown``) and the confidence report counts them.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from inventory.choices import OS_FAMILIES

if TYPE_CHECKING:
    import sqlalchemy.orm as so

    from inventory.impact.graph import Graph, GraphLag

SCOPE_FIELDS = ("vendor", "products", "version", "os", "regions", "accounts", "environments", "tags")
_LIST_FIELDS = ("products", "os", "regions", "accounts", "environments")
# Singular spellings accepted from query strings and hand-written JSON.
_ALIASES = {"product": "products", "region": "regions", "account": "accounts",
            "environment": "environments", "os_family": "os", "tag": "tags"}
_BARE_VERSION = re.compile(r"^\s*v?\d+(\.\d+)*(\.\*)?\s*$")
_LEADING_NUMBER = re.compile(r"^\s*[vV]?(\d+(?:\.\d+)*)")
_EPOCH = re.compile(r"^\s*\d+:(?=\s*[vV]?\d)")   # dpkg/rpm epoch: "1:2.38.1-5"
MAX_SUGGESTIONS = 5


class ScopeError(ValueError):
    """A scope that cannot be answered: ``field`` names the bad field."""

    def __init__(self, field: str, message: str, suggestions: Iterable[str] = ()) -> None:
        self.field = field
        self.message = message
        self.suggestions = list(suggestions)
        text = message
        if self.suggestions:
            text += " (did you mean: " + ", ".join(repr(s) for s in self.suggestions) + "?)"
        super().__init__(text)

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message, "suggestions": self.suggestions}


@dataclass(frozen=True)
class Scope:
    """A validated outage scope (names in their canonical spelling)."""

    vendor: str
    vendor_id: int
    products: tuple[str, ...] = ()
    product_ids: tuple[int, ...] = ()
    version: str | None = None
    os: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    cloud_provider: str | None = None
    specifier: SpecifierSet | None = field(default=None, compare=False, repr=False)

    @property
    def hosting_seeds(self) -> bool:
        """A cloud vendor's outage seeds everything it hosts (in the regions given),
        unless the scope names products or versions, which only installations have."""
        return self.cloud_provider is not None and not self.products and self.version is None

    def to_dict(self) -> dict[str, Any]:
        """The normalised scope; ``parse_scope`` accepts it back unchanged."""
        return {"vendor": self.vendor, "products": list(self.products), "version": self.version,
                "os": list(self.os), "regions": list(self.regions), "accounts": list(self.accounts),
                "environments": list(self.environments), "tags": dict(self.tags)}

    def describe(self) -> str:
        parts = [self.vendor]
        if self.products:
            parts.append("/".join(self.products))
        if self.version:
            parts.append(self.version)
        for label, values in (("os", self.os), ("region", self.regions), ("account", self.accounts),
                              ("env", self.environments)):
            if values:
                parts.append(f"{label}={','.join(values)}")
        if self.tags:
            parts.append("tags=" + ",".join(f"{k}:{v}" for k, v in self.tags))
        return " ".join(parts)


# ---------------------------------------------------------------- versions

def normalise_specifier(text: str) -> SpecifierSet:
    """``>=7.11`` style specifiers; a bare ``7.11`` means ``==7.11.*``."""
    text = text.strip()
    if _BARE_VERSION.match(text):
        bare = text.lstrip("vV")
        text = f"=={bare}" if bare.endswith(".*") else f"=={bare}.*"
    return SpecifierSet(text)


@lru_cache(maxsize=100_000)
def comparable_version(raw: str | None) -> Version | None:
    """An installed version as a PEP 440 ``Version``, or None when it has no number to compare."""
    if raw is None:
        return None
    raw = _EPOCH.sub("", raw, count=1)
    try:
        return Version(raw.strip())
    except InvalidVersion:
        match = _LEADING_NUMBER.match(raw)
        if match is None:
            return None
        return Version(match.group(1))


def version_unknown_reason(version: str | None, source: str | None,
                           attributes: Mapping[str, Any] | None) -> str:
    """Why an installation's version cannot be placed in a range, for the responder
    who has to check the host by hand."""
    facts = attributes or {}
    by = f" by {source}" if source else ""
    if version is None and facts.get("handler_version"):
        return (f"only the VM extension handler's version ({facts['handler_version']}) is known{by}, "
                "not the product's")
    if version is None and facts.get("image_version"):
        return f"only the image the machine was built from ({facts['image_version']}) is known{by}"
    if version is None and isinstance(facts.get("versions"), list) and facts["versions"]:
        listed = ", ".join(map(str, facts["versions"][:5])) + (" …" if len(facts["versions"]) > 5 else "")
        return f"several versions ({listed}) are recorded{by}: check which ones are in use"
    if version is None:
        return f"no version recorded{by}"
    return f"version {version!r}{by} has no number to compare"


def version_matches(spec: SpecifierSet, raw: str | None) -> bool | None:
    """True/False, or None when ``raw`` cannot be compared at all."""
    version = comparable_version(raw)
    if version is None:
        return None
    return spec.contains(version, prereleases=True)


# ---------------------------------------------------------------- parsing

def _as_list(value: Any, name: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ScopeError(name, f"{name} must be a string or a list of strings")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ScopeError(name, f"{name} must contain non-empty strings")
        if item.strip() not in out:
            out.append(item.strip())
    return out


def _parse_tags(value: Any) -> list[tuple[str, str]]:
    if value in (None, "", [], {}):
        return []
    items: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for key, val in value.items():
            if not isinstance(key, str) or not key.strip() or not isinstance(val, (str, int, float, bool)):
                raise ScopeError("tags", "tags must map names to string values")
            items.append((key.strip(), str(val)))
    else:
        for raw in _as_list(value, "tags"):
            sep = ":" if ":" in raw else "=" if "=" in raw else None
            if sep is None:
                raise ScopeError("tags", f"tag {raw!r} must look like key:value")
            key, val = raw.split(sep, 1)
            if not key.strip():
                raise ScopeError("tags", f"tag {raw!r} must look like key:value")
            items.append((key.strip(), val.strip()))
    return sorted(set(items))


def _suggest(name: str, candidates: Iterable[str]) -> list[str]:
    by_lower: dict[str, str] = {}
    for cand in candidates:
        by_lower.setdefault(cand.lower(), cand)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=MAX_SUGGESTIONS, cutoff=0.5)
    # Substring matches help with short names ("falcon" for "Falcon Sensor").
    subs = [k for k in sorted(by_lower) if name.lower() in k and k not in close]
    return [by_lower[k] for k in (close + subs)[:MAX_SUGGESTIONS]]


def _check_known(field_name: str, values: list[str], known: Iterable[str], noun: str) -> list[str]:
    known_set = {k for k in known if k}
    lower = {k.lower(): k for k in known_set}
    out = []
    for value in values:
        if value in known_set:
            out.append(value)
        elif value.lower() in lower:
            out.append(lower[value.lower()])
        else:
            raise ScopeError(field_name, f"no asset is in {noun} {value!r}", _suggest(value, known_set))
    return out


def parse_scope(db: "so.Session", data: Mapping[str, Any] | Scope) -> Scope:
    """Validate a scope dict against the inventory; raises ``ScopeError``."""
    if isinstance(data, Scope):
        return data
    if not isinstance(data, Mapping):
        raise ScopeError("scope", "the scope must be an object")
    return parse_scope_and_graph(db, data)[0]


def parse_scope_and_graph(db: "so.Session", data: Mapping[str, Any]
                          ) -> "tuple[Scope, Graph, tuple[Any, ...] | None, GraphLag | None]":
    """The scope, validated against the graph it will be answered from (and that graph's state).

    A graph served while a newer one loads may not know a vendor or product the
    scope names; then the scope is checked against a fresh graph instead."""
    from inventory.impact.graph import get_graph_state

    graph, stamp, lag = get_graph_state(db)
    try:
        return parse_scope_with_graph(graph, data, db), graph, stamp, lag
    except ScopeError:
        if lag is None:
            raise
        graph, stamp, lag = get_graph_state(db, max_stale_seconds=0)
        return parse_scope_with_graph(graph, data, db), graph, stamp, lag


def parse_scope_with_graph(graph: "Graph", data: Mapping[str, Any], db: "so.Session | None" = None) -> Scope:
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        if name not in SCOPE_FIELDS:
            raise ScopeError(key, f"unknown scope field {key!r}", _suggest(key, SCOPE_FIELDS))
        if name in values and value not in (None, "", []):
            if name in _LIST_FIELDS or name == "tags":
                values[name] = _as_list(values[name], name) + _as_list(value, name)
                continue
            raise ScopeError(name, f"{name} is given twice")
        values[name] = value

    vendor_name = values.get("vendor")
    if not isinstance(vendor_name, str) or not vendor_name.strip():
        raise ScopeError("vendor", "a vendor is required")
    vendor_id = graph.find_vendor(vendor_name.strip(), db)
    if vendor_id is None:
        raise ScopeError("vendor", f"unknown vendor {vendor_name.strip()!r}",
                         _suggest(vendor_name.strip(), graph.vendor_names()))
    vendor = graph.vendors[vendor_id]

    products: list[str] = []
    product_ids: list[int] = []
    for name in _as_list(values.get("products"), "products"):
        pid = graph.find_product(vendor_id, name)
        if pid is None:
            raise ScopeError("products", f"{vendor.name} has no product {name!r}",
                             _suggest(name, graph.product_names(vendor_id)))
        if pid not in product_ids:
            product_ids.append(pid)
            products.append(graph.products[pid].name)

    version = values.get("version")
    specifier = None
    if version not in (None, ""):
        if not isinstance(version, str):
            raise ScopeError("version", "version must be a string such as '>=7.11'")
        try:
            specifier = normalise_specifier(version)
        except InvalidSpecifier:
            raise ScopeError("version", f"malformed version range {version!r}: use PEP 440 "
                                        "specifiers such as '>=7.11' or '>=7.11,<7.16'") from None
        version = str(specifier)
    else:
        version = None

    os_families = [v.lower() for v in _as_list(values.get("os"), "os")]
    for family in os_families:
        if family not in OS_FAMILIES:
            raise ScopeError("os", f"unknown OS family {family!r}: one of {', '.join(OS_FAMILIES)}",
                             _suggest(family, OS_FAMILIES))
    regions = _check_known("regions", _as_list(values.get("regions"), "regions"), graph.regions, "region")
    accounts = _check_known("accounts", _as_list(values.get("accounts"), "accounts"), graph.accounts,
                            "account")
    environments = _check_known("environments", _as_list(values.get("environments"), "environments"),
                                graph.environments, "environment")
    tags = _parse_tags(values.get("tags"))
    return Scope(vendor=vendor.name, vendor_id=vendor_id, products=tuple(products),
                 product_ids=tuple(product_ids), version=version, os=tuple(sorted(set(os_families))),
                 regions=tuple(sorted(regions)), accounts=tuple(sorted(accounts)),
                 environments=tuple(sorted(environments)), tags=tuple(tags),
                 cloud_provider=vendor.cloud_provider, specifier=specifier)
