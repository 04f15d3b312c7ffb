"""Import an estate document (YAML or JSON, see ``inventory.estate.schema``).

The import runs in three passes so that a bad file changes nothing:

1. *parse* (``load_document``): YAML/JSON syntax errors name line and column;
2. *validate*: the JSON Schema, then references and duplicates (an unknown
   vendor, product or asset key; a key given twice) -- against the file and
   what the database already holds; every problem names the entry and field;
3. *apply*: upserts keyed on natural keys, all in the caller's transaction.
   Values are compared before they are assigned, so a second import of the
   same file issues no UPDATE at all (and no ``updated_at`` moves).

Imports add and update; they never delete or retire anything.  A field that
is absent from an entry leaves the stored value alone, which lets a file add
business context (criticality, owner, plans) to assets that collectors found.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from inventory.db import utcnow
import sqlalchemy.orm as so
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from inventory.choices import MEMBER_OF, SERVICE_KIND
from inventory.estate.schema import ESTATE_SCHEMA, SECTIONS
from inventory.models import (
    Asset,
    ContingencyPlan,
    Dependency,
    Installation,
    PlanLink,
    Product,
    UpdateTest,
    Vendor,
    VendorAlias,
    VendorAssessment,
    VendorUpdate,
)
from inventory.services import audit
from inventory.validation import MAX_JSON_DEPTH

# Entity types reported in the counts, in display order.
ENTITY_TYPES = ("vendors", "products", "aliases", "assets", "installations", "dependencies", "plans",
                "plan_links", "updates", "update_tests", "assessments")
DEFAULT_DEPENDENCY_KIND = "runs-on"
DEFAULT_STRENGTH = "hard"
MAX_REPORTED_PROBLEMS = 20
_CHUNK = 500

_FORMATS = FormatChecker()


@_FORMATS.checks("planb-timestamp", raises=ValueError)
def _is_timestamp(value: object) -> bool:
    if isinstance(value, str):
        parse_timestamp(value)
    return True


_VALIDATOR = Draft202012Validator(ESTATE_SCHEMA, format_checker=_FORMATS)


# ---------------------------------------------------------------- errors and report

@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (a path into the document) and what."""

    path: tuple[str | int, ...]
    message: str
    entry: str | None = None  # e.g. 'assets[12] (key "aws:ec2:...")'

    @property
    def field(self) -> str:
        """The JSON path of the bad value, e.g. ``assets[12].os.family``."""
        return format_path(self.path)

    def describe(self) -> str:
        entry_path = self.path[:2]
        inner = format_path(self.path[2:]) if len(self.path) > 2 else ""
        where = self.entry or format_path(entry_path)
        if not where:
            return self.message
        return f"{where}{f' field {inner!r}' if inner else ''}: {self.message}"


class EstateError(ValueError):
    """An estate document that cannot be imported; nothing was changed."""

    def __init__(self, source_name: str, problems: Sequence[Problem]) -> None:
        self.source_name = source_name
        self.problems = list(problems)
        super().__init__(self._text())

    @property
    def field(self) -> str | None:
        return self.problems[0].field or None if self.problems else None

    def _text(self) -> str:
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        if len(shown) == 1:
            return f"{self.source_name}: {shown[0].describe()}"
        lines = [f"{self.source_name}: {len(self.problems)} problems"]
        lines += [f"  - {p.describe()}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        return "\n".join(lines)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [{"field": p.field, "entry": p.entry, "message": p.message}
                for p in self.problems[:MAX_REPORTED_PROBLEMS]]


def format_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class ImportReport:
    source_name: str
    counts: dict[str, Counts] = field(default_factory=lambda: {e: Counts() for e in ENTITY_TYPES})

    def add(self, entity: str, outcome: str) -> None:
        counts = self.counts[entity]
        setattr(counts, outcome, getattr(counts, outcome) + 1)

    def totals(self) -> Counts:
        return Counts(*(sum(getattr(c, a) for c in self.counts.values())
                        for a in ("created", "updated", "unchanged")))

    @property
    def changed(self) -> bool:
        t = self.totals()
        return bool(t.created or t.updated)

    def rows(self) -> list[dict[str, Any]]:
        return [{"entity": e, "created": c.created, "updated": c.updated, "unchanged": c.unchanged}
                for e, c in self.counts.items()]

    def as_dict(self) -> dict[str, Any]:
        t = self.totals()
        return {"source": self.source_name,
                "counts": {e: vars(c).copy() for e, c in self.counts.items()},
                "totals": vars(t).copy()}


# ---------------------------------------------------------------- parsing

# libyaml's parser when PyYAML was built with it: ten times faster on the demo estate.
_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[misc, valid-type]
    """Safe YAML without implicit timestamps (dates stay strings, as in JSON) and
    with duplicate mapping keys reported instead of silently overwritten."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in result
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class JSONTooDeep(ValueError):
    """JSON nested deeper than Python's parser can follow (it would raise RecursionError)."""


def loads_json(text: str) -> Any:
    """``json.loads``, except that nesting too deep for the parser is a ``JSONTooDeep`` naming
    line and column, as libyaml does for YAML, instead of a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        line, column = _too_deep_at(text)
        raise JSONTooDeep(f"exceeded maximum nesting depth at line {line}, column {column}") from None


def _too_deep_at(text: str) -> tuple[int, int]:
    """Line and column of the first bracket nested deeper than ``MAX_JSON_DEPTH``.

    Only called after the parser gave up, so the text is that deep; strings are matched
    whole so brackets inside them do not count.  Iterative: the text may be very deep."""
    depth, offset = 0, 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                offset = match.start()
                break
        elif token in "]}":
            depth -= 1
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def load_document(data: str | bytes, source_name: str) -> dict[str, Any]:
    """Parse YAML or JSON text into a document; syntax errors name line and column."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise EstateError(source_name, [Problem((), f"not a text file (invalid UTF-8 at byte "
                                                         f"{exc.start}); expected YAML or JSON")]) from None
    if source_name.lower().endswith(".json"):
        try:
            document = loads_json(data)
        except json.JSONDecodeError as exc:
            raise EstateError(source_name, [Problem(
                (), f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")]) from None
        except JSONTooDeep as exc:
            raise EstateError(source_name, [Problem((), f"not valid JSON: {exc}")]) from None
    else:
        try:
            document = yaml.load(data, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = exc.problem or exc.context or "syntax error"
            raise EstateError(source_name, [Problem((), f"not valid YAML: {what}{where}")]) from None
        except yaml.YAMLError as exc:
            raise EstateError(source_name, [Problem((), f"not valid YAML: {exc}")]) from None
    if not isinstance(document, dict):
        found = "an empty file" if document is None else f"a {_type_name(document)}"
        raise EstateError(source_name, [Problem(
            (), f"expected a mapping starting with 'version: 1' (an estate file), found {found}")])
    return document


def load_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EstateError(str(path), [Problem((), f"cannot read the file: {exc.strerror or exc}")]) from None
    return load_document(data, str(path))


def _type_name(value: Any) -> str:
    return {str: "string", int: "number", float: "number", bool: "boolean", list: "list",
            dict: "mapping"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- validation

def _entry_label(document: dict[str, Any], path: Sequence[str | int]) -> str | None:
    """'assets[12] (key "aws:ec2:...")' for a path inside a section entry."""
    if len(path) < 2 or path[0] not in SECTIONS or not isinstance(path[1], int):
        return None
    section, index = path[0], path[1]
    try:
        entry = document[section][index]
    except (KeyError, IndexError, TypeError):
        return None
    base = f"{section}[{index}]"
    if not isinstance(entry, dict):
        return base
    ident = _identity(section, entry)
    return f"{base} ({ident})" if ident else base


def _identity(section: str, entry: dict[str, Any]) -> str | None:
    def s(key: str) -> str | None:
        value = entry.get(key)
        return value if isinstance(value, str) else None

    if section in ("assets", "services"):
        return f'key "{s("key")}"' if s("key") else None
    if section in ("vendors", "plans"):
        return f'name "{s("name")}"' if s("name") else None
    if section == "dependencies":
        return f'"{s("from")}" -> "{s("to")}"' if s("from") and s("to") else None
    if section == "updates":
        parts = [p for p in (s("vendor"), s("product"), s("version")) if p]
        return f'"{" / ".join(parts)}"' if parts else None
    if section == "assessments":
        parts = [p for p in (s("vendor"), s("assessed_on")) if p]
        return f'"{" / ".join(parts)}"' if parts else None
    return None


def _schema_problems(document: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    errors = sorted(_VALIDATOR.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        if error.context:
            # oneOf/anyOf (a depends_on entry is a key or a mapping): explain the branch whose
            # type matches what was written, not "expected a string" for a mistyped mapping.
            same_type = [e for e in error.context if e.validator != "type"] or list(error.context)
            error = best_match(same_type) or error
        path, message = _explain(error)
        problems.append(Problem(path, message, _entry_label(document, path)))
    return problems


def _explain(error: ValidationError) -> tuple[tuple[str | int, ...], str]:
    path = tuple(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in instance if k not in allowed)
        if extra:
            return path + (extra[0],), (f"unknown field {extra[0]!r} (allowed: "
                                        f"{', '.join(sorted(allowed))})")
    if error.validator == "required" and isinstance(instance, dict):
        missing = [k for k in error.validator_value if k not in instance]
        if missing:
            return path + (missing[0],), f"required field {missing[0]!r} is missing"
    if error.validator == "dependentRequired" and isinstance(instance, dict):
        for prop, needs in error.validator_value.items():
            for need in needs:
                if prop in instance and need not in instance:
                    return path + (need,), f"{need!r} is required when {prop!r} is given"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return path, f"expected {_article(expected)}, found {_describe(instance)}"
    if error.validator == "enum":
        return path, f"{instance!r} is not one of: {', '.join(map(str, error.validator_value))}"
    if error.validator == "const":
        return path, (f"unsupported value {instance!r} (this version of Plan B reads version "
                      f"{error.validator_value})")
    if error.validator == "pattern" and "[Hh][Tt][Tt][Pp]" in str(error.validator_value):
        return path, f"{instance!r} is not an http:// or https:// link"
    if error.validator == "pattern" and "\\d{4}-\\d{2}-\\d{2}" in str(error.validator_value):
        return path, f"{instance!r} is not a date (YYYY-MM-DD) or ISO 8601 date-time with offset"
    if error.validator == "format":
        what = "date/time" if error.validator_value == "planb-timestamp" else error.validator_value
        return path, f"{instance!r} is not a valid {what}"
    return path, error.message


def _article(word: str) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "boolean": "true or false", "number": "a number"}
    return names.get(word, f"a {word}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return f"{_type_name(value)} {text if len(text) <= 60 else text[:57] + '...'}"


def normalize_alias(raw: str) -> str:
    """How aliases are stored and matched: NFKC, lower case, runs of whitespace collapsed
    (the same form as ``collectors.attribution.normalise``)."""
    return " ".join(unicodedata.normalize("NFKC", raw).lower().split())


class _Refs:
    """What the file defines plus what the database already holds, for reference checks."""

    def __init__(self, db: so.Session, document: dict[str, Any]) -> None:
        self.db = db
        self.vendors: dict[str, Vendor] = {v.name: v for v in db.scalars(sa.select(Vendor))}
        self.products: dict[tuple[str, str], Product] = {
            (p.vendor.name, p.name): p
            for p in db.scalars(sa.select(Product).options(so.joinedload(Product.vendor)))}
        self.file_vendors: set[str] = set()
        self.file_products: set[tuple[str, str]] = set()
        for v in _entries(document, "vendors"):
            self.file_vendors.add(v["name"])
            for p in v.get("products") or []:
                self.file_products.add((v["name"], p["name"]))
        self.file_assets: set[str] = {a["key"] for s in ("assets", "services")
                                      for a in _entries(document, s)}
        wanted = self.file_assets | set(_referenced_asset_keys(document))
        self.assets: dict[str, Asset] = {}
        for chunk in _chunks(sorted(wanted)):
            for asset in db.scalars(sa.select(Asset).where(Asset.natural_key.in_(chunk))):
                self.assets[asset.natural_key] = asset

    def vendor_known(self, name: str) -> bool:
        return name in self.file_vendors or name in self.vendors

    def product_known(self, vendor: str, product: str) -> bool:
        return (vendor, product) in self.file_products or (vendor, product) in self.products

    def asset_known(self, key: str) -> bool:
        return key in self.file_assets or key in self.assets


def _entries(document: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return document.get(section) or []


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _referenced_asset_keys(document: dict[str, Any]) -> Iterator[str]:
    for section in ("assets", "services"):
        for a in _entries(document, section):
            yield from (a.get("members") or [])
            for d in a.get("depends_on") or []:
                yield d if isinstance(d, str) else d["to"]
    for d in _entries(document, "dependencies"):
        yield d["from"]
        yield d["to"]
    for p in _entries(document, "plans"):
        yield from ((p.get("covers") or {}).get("assets") or [])


def _depends_on(item: str | dict[str, Any]) -> tuple[str, str, str]:
    """(to, kind, strength) of one ``depends_on`` entry."""
    if isinstance(item, str):
        return item, DEFAULT_DEPENDENCY_KIND, DEFAULT_STRENGTH
    return item["to"], item.get("kind", DEFAULT_DEPENDENCY_KIND), item.get("strength", DEFAULT_STRENGTH)


def _edges(document: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str, str, str, str]]:
    """Every dependency edge the file declares: (path, from, to, kind, strength)."""
    for section in ("assets", "services"):
        for i, a in enumerate(_entries(document, section)):
            for j, member in enumerate(a.get("members") or []):
                yield (section, i, "members", j), a["key"], member, MEMBER_OF, "hard"
            for j, item in enumerate(a.get("depends_on") or []):
                to, kind, strength = _depends_on(item)
                yield (section, i, "depends_on", j), a["key"], to, kind, strength
    for i, d in enumerate(_entries(document, "dependencies")):
        yield (("dependencies", i), d["from"], d["to"], d.get("kind", DEFAULT_DEPENDENCY_KIND),
               d.get("strength", DEFAULT_STRENGTH))


def _reference_problems(db: so.Session, document: dict[str, Any], refs: _Refs) -> list[Problem]:
    problems: list[Problem] = []

    def bad(path: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(path, message, _entry_label(document, path)))

    # Vendors, products, aliases.
    seen_vendors: dict[str, int] = {}
    seen_aliases: dict[tuple[str, bool], str] = {}
    seen_clouds: dict[str, str] = {}
    for i, v in enumerate(_entries(document, "vendors")):
        folded = v["name"].casefold()
        if folded in seen_vendors:
            bad(("vendors", i, "name"), f"duplicate vendor {v['name']!r} (also vendors[{seen_vendors[folded]}])")
        seen_vendors.setdefault(folded, i)
        cloud = v.get("cloud_provider")
        if cloud:
            if cloud in seen_clouds:
                bad(("vendors", i, "cloud_provider"),
                    f"cloud provider {cloud!r} already belongs to vendor {seen_clouds[cloud]!r} in this file")
            seen_clouds.setdefault(cloud, v["name"])
            holder = db.scalar(sa.select(Vendor.name).where(Vendor.cloud_provider == cloud,
                                                            Vendor.name != v["name"]))
            if holder is not None and holder not in _redeclared_cloud_vendors(document, exclude=v["name"]):
                bad(("vendors", i, "cloud_provider"),
                    f"cloud provider {cloud!r} already belongs to vendor {holder!r}")
        owners: list[tuple[tuple[str | int, ...], dict[str, Any], str]] = [(("vendors", i), v, v["name"])]
        seen_products: dict[str, int] = {}
        for j, p in enumerate(v.get("products") or []):
            if p["name"] in seen_products:
                bad(("vendors", i, "products", j, "name"), f"duplicate product {p['name']!r}")
            seen_products.setdefault(p["name"], j)
            owners.append((("vendors", i, "products", j), p, f"{v['name']} / {p['name']}"))
        for base, owner, label in owners:
            for field_name, is_pattern in (("aliases", False), ("patterns", True)):
                for k, raw in enumerate(owner.get(field_name) or []):
                    path = base + (field_name, k)
                    if is_pattern:
                        try:
                            re.compile(raw)
                        except re.error as exc:
                            bad(path, f"{raw!r} is not a valid regular expression: {exc}")
                            continue
                    alias = raw if is_pattern else normalize_alias(raw)
                    if not alias:
                        bad(path, "an alias must not be blank")
                        continue
                    if (alias, is_pattern) in seen_aliases:
                        bad(path, f"duplicate alias {raw!r} (already used for {seen_aliases[(alias, is_pattern)]})")
                    seen_aliases.setdefault((alias, is_pattern), label)

    # Assets and services: unique keys, known references.
    seen_keys: dict[str, str] = {}
    for section in ("assets", "services"):
        for i, a in enumerate(_entries(document, section)):
            if a["key"] in seen_keys:
                bad((section, i, "key"), f"duplicate key {a['key']!r} (also {seen_keys[a['key']]})")
            seen_keys.setdefault(a["key"], f"{section}[{i}]")
            seen_software: set[tuple[str, str]] = set()
            for j, sw in enumerate(a.get("software") or []):
                path = (section, i, "software", j)
                if not refs.vendor_known(sw["vendor"]):
                    bad(path + ("vendor",), f"unknown vendor {sw['vendor']!r}")
                elif not refs.product_known(sw["vendor"], sw["product"]):
                    bad(path + ("product",), f"unknown product {sw['product']!r} of vendor {sw['vendor']!r}")
                if (sw["vendor"], sw["product"]) in seen_software:
                    bad(path + ("product",), f"duplicate software {sw['vendor']} / {sw['product']} on this asset")
                seen_software.add((sw["vendor"], sw["product"]))

    seen_edges: dict[tuple[str, str, str], str] = {}
    for path, src, dst, kind, _strength in _edges(document):
        target_path = path + ("to",) if path[0] == "dependencies" or isinstance(
            _get(document, path), dict) else path
        if path[0] == "dependencies" and not refs.asset_known(src):
            bad(path + ("from",), f"unknown asset key {src!r}")
        if not refs.asset_known(dst):
            bad(target_path, f"unknown asset key {dst!r}")
        if src == dst:
            bad(target_path, f"an asset cannot depend on itself ({src!r})")
        edge = (src, dst, kind)
        if edge in seen_edges:
            bad(target_path, f"duplicate dependency {src!r} -> {dst!r} ({kind}), also {seen_edges[edge]}")
        seen_edges.setdefault(edge, format_path(path))

    # Plans.
    seen_plans: dict[str, int] = {}
    for i, p in enumerate(_entries(document, "plans")):
        if p["name"] in seen_plans:
            bad(("plans", i, "name"), f"duplicate plan {p['name']!r} (also plans[{seen_plans[p['name']]}])")
        seen_plans.setdefault(p["name"], i)
        covers = p.get("covers") or {}
        for j, key in enumerate(covers.get("assets") or []):
            if not refs.asset_known(key):
                bad(("plans", i, "covers", "assets", j), f"unknown asset key {key!r}")
        for j, ref in enumerate(covers.get("products") or []):
            path = ("plans", i, "covers", "products", j)
            if not refs.vendor_known(ref["vendor"]):
                bad(path + ("vendor",), f"unknown vendor {ref['vendor']!r}")
            elif not refs.product_known(ref["vendor"], ref["product"]):
                bad(path + ("product",), f"unknown product {ref['product']!r} of vendor {ref['vendor']!r}")
        for j, name in enumerate(covers.get("vendors") or []):
            if not refs.vendor_known(name):
                bad(("plans", i, "covers", "vendors", j), f"unknown vendor {name!r}")

    # Updates and their tests.
    seen_updates: dict[tuple[str, str, str], int] = {}
    for i, u in enumerate(_entries(document, "updates")):
        ident = (u["vendor"], u["product"], u["version"])
        if not refs.vendor_known(u["vendor"]):
            bad(("updates", i, "vendor"), f"unknown vendor {u['vendor']!r}")
        elif not refs.product_known(u["vendor"], u["product"]):
            bad(("updates", i, "product"), f"unknown product {u['product']!r} of vendor {u['vendor']!r}")
        if ident in seen_updates:
            bad(("updates", i, "version"), f"duplicate update (also updates[{seen_updates[ident]}])")
        seen_updates.setdefault(ident, i)
        rings: set[str] = set()
        for j, t in enumerate(u.get("tests") or []):
            if t["ring"] in rings:
                bad(("updates", i, "tests", j, "ring"), f"duplicate test for ring {t['ring']!r}")
            rings.add(t["ring"])

    # Assessments.
    seen_assessments: dict[tuple[str, str], int] = {}
    for i, a in enumerate(_entries(document, "assessments")):
        if not refs.vendor_known(a["vendor"]):
            bad(("assessments", i, "vendor"), f"unknown vendor {a['vendor']!r}")
        ident = (a["vendor"], a["assessed_on"])
        if ident in seen_assessments:
            bad(("assessments", i, "assessed_on"),
                f"duplicate assessment of {a['vendor']!r} on {a['assessed_on']} "
                f"(also assessments[{seen_assessments[ident]}])")
        seen_assessments.setdefault(ident, i)
    return problems


def _redeclared_cloud_vendors(document: dict[str, Any], exclude: str) -> set[str]:
    """Vendors the file itself re-declares with a cloud provider (a hand-over between vendors;
    two vendors claiming the same provider in one file are caught separately)."""
    names = set()
    for v in _entries(document, "vendors"):
        if v["name"] != exclude and "cloud_provider" in v:
            names.add(v["name"])
    return names


def _value_problems(document: dict[str, Any]) -> list[Problem]:
    """Values no database stores: NUL characters (PostgreSQL refuses them), lone surrogates
    (not encodable as UTF-8) and NaN/Infinity (not JSON), which a JSON body can carry."""
    problems: list[Problem] = []

    def check(text: str, path: tuple[str | int, ...]) -> None:
        if "\x00" in text:
            problems.append(Problem(path, "text must not contain NUL characters", _entry_label(document, path)))
            return
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(Problem(path, "text is not valid Unicode (a lone surrogate escape)",
                                    _entry_label(document, path)))

    def walk(value: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(value, str):
            check(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(path, f"{value} is not a number JSON can store", _entry_label(document, path)))
        elif isinstance(value, dict):
            for key, item in value.items():
                check(str(key), path + (str(key),))
                walk(item, path + (str(key),))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, path + (index,))

    walk(document, ())
    return problems


def _get(document: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        document = document[part]
    return document


def validate_document(db: so.Session, document: Any, source_name: str) -> _Refs:
    """Raise ``EstateError`` listing every problem; return the resolved references."""
    if not isinstance(document, dict):
        raise EstateError(source_name, [Problem((), f"expected a mapping, found {_describe(document)}")])
    problems = _schema_problems(document) or _value_problems(document)
    if problems:
        raise EstateError(source_name, problems)
    refs = _Refs(db, document)
    problems = _reference_problems(db, document, refs)
    if problems:
        raise EstateError(source_name, problems)
    return refs


# ---------------------------------------------------------------- value conversion

def parse_timestamp(text: str | None) -> datetime | None:
    if text is None:
        return None
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    return value.astimezone(UTC)


def parse_date(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)


def _sync(obj: Any, values: dict[str, Any]) -> bool:
    """Assign only the values that differ; True when anything changed.

    Comparing first matters: assigning an equal JSON value still marks the
    column dirty and would issue an UPDATE (and move ``updated_at``)."""
    changed = False
    for attr, value in values.items():
        if getattr(obj, attr) != value:
            setattr(obj, attr, value)
            changed = True
    return changed


def _present(entry: dict[str, Any], mapping: dict[str, str], convert: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Model attribute -> value for the fields present in an entry (absent fields are left alone)."""
    convert = convert or {}
    out = {}
    for key, attr in mapping.items():
        if key in entry:
            value = entry[key]
            out[attr] = convert[key](value) if key in convert else value
    return out


_VENDOR_FIELDS = {k: k for k in ("tier", "website", "description", "cloud_provider", "has_alternative",
                                 "alternative", "exit_plan_documented", "exit_plan_url")}
_PRODUCT_FIELDS = {k: k for k in ("kind", "vendor_pushes_updates", "description")}
_ASSET_FIELDS = {k: k for k in ("name", "kind", "provider", "account", "region", "zone", "hostname",
                                "cloud_instance_id", "environment", "criticality", "owner",
                                "description", "tags", "min_up", "update_ring")}
_SERVICE_FIELDS = {k: k for k in ("name", "environment", "criticality", "owner", "description", "tags")}
_PLAN_FIELDS = {k: k for k in ("owner", "rto_minutes", "steps", "manual_fallback", "runbook_url",
                               "review_interval_days", "last_reviewed", "last_exercised")}
_UPDATE_FIELDS = {k: k for k in ("released_on", "kind", "vendor_pushed", "notes")}
_TEST_FIELDS = {k: k for k in ("status", "tested_by", "tested_at", "evidence_url", "notes")}
_ASSESSMENT_FIELDS = {k: k for k in ("assessor", "staged_rollouts", "customer_update_control",
                                     "rollback_supported", "certifications", "findings",
                                     "next_review_due", "notes")}


# ---------------------------------------------------------------- apply

def import_and_commit(db: so.Session, document: Any, *, source_name: str, actor: str,
                      dry_run: bool = False) -> ImportReport:
    """Import as one transaction: commit on success (roll back for a dry run), roll
    back on any error and re-raise it.  The CLI and the API both go through here."""
    try:
        report = import_estate(db, document, source_name=source_name, actor=actor)
    except BaseException:
        db.rollback()
        raise
    if dry_run:
        db.rollback()
    else:
        db.commit()
    return report


def import_estate(db: so.Session, document: Any, *, source_name: str, actor: str) -> ImportReport:
    """Validate and apply an estate document in the caller's transaction.

    Raises ``EstateError`` (having changed nothing) when the document is
    invalid.  The caller commits on success and rolls back on any exception.
    """
    refs = validate_document(db, document, source_name)
    report = ImportReport(source_name)
    with db.no_autoflush:
        _apply_vendors(db, document, refs, report)
        assets = _apply_assets(db, document, refs, report)
        db.flush()  # ids for the new assets, before edges and installations refer to them
        _apply_installations(db, document, refs, assets, report)
        _apply_dependencies(db, document, assets, report)
        _apply_plans(db, document, refs, assets, report)
        _apply_updates(db, document, refs, report)
        _apply_assessments(db, document, refs, report)
    db.flush()
    totals = report.totals()
    audit.record(db, actor=actor, action="import", entity_type="estate", entity_id=None,
                 summary=(f"imported {source_name}: {totals.created} created, {totals.updated} updated, "
                          f"{totals.unchanged} unchanged"),
                 after=report.as_dict())
    db.flush()
    return report


def _apply_vendors(db: so.Session, document: dict[str, Any], refs: _Refs, report: ImportReport) -> None:
    entries = _entries(document, "vendors")
    if not entries:
        return
    aliases = {(a.alias, a.is_pattern): a for a in db.scalars(sa.select(VendorAlias))}
    # Release cloud providers that the file moves to another vendor first (unique column).
    for v in entries:
        vendor = refs.vendors.get(v["name"])
        if vendor is not None and "cloud_provider" in v and vendor.cloud_provider != v["cloud_provider"]:
            vendor.cloud_provider = None
    db.flush()
    for v in entries:
        vendor = refs.vendors.get(v["name"])
        values = _present(v, _VENDOR_FIELDS)
        if vendor is None:
            vendor = Vendor(name=v["name"], **values)
            db.add(vendor)
            refs.vendors[v["name"]] = vendor
            report.add("vendors", "created")
        else:
            report.add("vendors", "updated" if _sync(vendor, values) else "unchanged")
        for p in v.get("products") or []:
            product = refs.products.get((v["name"], p["name"]))
            pvalues = _present(p, _PRODUCT_FIELDS)
            if product is None:
                product = Product(vendor=vendor, name=p["name"], **pvalues)
                db.add(product)
                refs.products[(v["name"], p["name"])] = product
                report.add("products", "created")
            else:
                report.add("products", "updated" if _sync(product, pvalues) else "unchanged")
            _apply_aliases(db, p, vendor, product, aliases, report)
        _apply_aliases(db, v, vendor, None, aliases, report)


def _apply_aliases(db: so.Session, entry: dict[str, Any], vendor: Vendor, product: Product | None,
                   aliases: dict[tuple[str, bool], VendorAlias], report: ImportReport) -> None:
    for field_name, is_pattern in (("aliases", False), ("patterns", True)):
        for raw in entry.get(field_name) or []:
            text = raw if is_pattern else normalize_alias(raw)
            existing = aliases.get((text, is_pattern))
            if existing is None:
                alias = VendorAlias(vendor=vendor, product=product, alias=text, is_pattern=is_pattern)
                db.add(alias)
                aliases[(text, is_pattern)] = alias
                report.add("aliases", "created")
            elif existing.vendor is vendor and existing.product is product:
                report.add("aliases", "unchanged")
            else:  # the file is authoritative: the alias now names this vendor/product
                existing.vendor = vendor
                existing.product = product
                report.add("aliases", "updated")


def _asset_values(entry: dict[str, Any], is_service: bool) -> dict[str, Any]:
    if is_service:
        values = _present(entry, _SERVICE_FIELDS)
        values["kind"] = SERVICE_KIND
        return values
    values = _present(entry, _ASSET_FIELDS)
    os_info = entry.get("os")
    if os_info is not None:
        values.update(_present(os_info, {"family": "os_family", "name": "os_name", "version": "os_version"}))
    return values


def _apply_assets(db: so.Session, document: dict[str, Any], refs: _Refs, report: ImportReport
                  ) -> dict[str, Asset]:
    for section in ("assets", "services"):
        for entry in _entries(document, section):
            values = _asset_values(entry, section == "services")
            asset = refs.assets.get(entry["key"])
            if asset is None:
                values.setdefault("tags", {})
                asset = Asset(natural_key=entry["key"], source="import", source_scope=None,
                              attributes={}, provenance={}, **values)
                db.add(asset)
                refs.assets[entry["key"]] = asset
                report.add("assets", "created")
            else:
                values = _with_curated_provenance(asset, values)
                report.add("assets", "updated" if _sync(asset, values) else "unchanged")
    return refs.assets


# Attributes people curate in the estate file; collectors rank below the file for these.
_CURATED_ATTRIBUTES = ("owner", "criticality", "environment")


def _with_curated_provenance(asset: Asset, values: dict[str, Any]) -> dict[str, Any]:
    """Claim the curated attributes the file sets on a collector's asset.

    Collectors decide whether they may overwrite an attribute from its
    provenance (falling back to the asset's source); without this, a cloud tag
    would overwrite the owner or criticality someone wrote in the estate file.
    """
    if asset.source == "import":
        return values
    provenance = dict(asset.provenance or {})
    claimed = False
    for attr in _CURATED_ATTRIBUTES:
        if attr in values and values[attr] is not None:
            entry = provenance.get(attr)
            if not (isinstance(entry, dict) and entry.get("source") == "import"):
                provenance[attr] = {"source": "import", "seen": utcnow().isoformat()}
                claimed = True
    if not claimed:
        return values
    return {**values, "provenance": provenance}


def _apply_installations(db: so.Session, document: dict[str, Any], refs: _Refs, assets: dict[str, Asset],
                         report: ImportReport) -> None:
    wanted = [(a["key"], sw) for s in ("assets", "services") for a in _entries(document, s)
              for sw in a.get("software") or []]
    if not wanted:
        return
    asset_ids = sorted({assets[key].id for key, _ in wanted})
    existing: dict[tuple[int, int], Installation] = {}
    for chunk in _chunks(asset_ids):
        for inst in db.scalars(sa.select(Installation).where(Installation.asset_id.in_(chunk))):
            existing[(inst.asset_id, inst.product_id)] = inst
    for key, sw in wanted:
        asset = assets[key]
        product = refs.products[(sw["vendor"], sw["product"])]
        inst = existing.get((asset.id, product.id))
        values = _present(sw, {"version": "version"})
        if inst is None:
            inst = Installation(asset_id=asset.id, product_id=product.id, source="import", **values)
            db.add(inst)
            existing[(asset.id, product.id)] = inst
            report.add("installations", "created")
        else:
            report.add("installations", "updated" if _sync(inst, values) else "unchanged")


def _apply_dependencies(db: so.Session, document: dict[str, Any], assets: dict[str, Asset],
                        report: ImportReport) -> None:
    edges = list(_edges(document))
    if not edges:
        return
    dependent_ids = sorted({assets[src].id for _, src, _, _, _ in edges})
    existing: dict[tuple[int, int, str], Dependency] = {}
    for chunk in _chunks(dependent_ids):
        for dep in db.scalars(sa.select(Dependency).where(Dependency.dependent_id.in_(chunk))):
            existing[(dep.dependent_id, dep.dependency_id, dep.kind)] = dep
    for _path, src, dst, kind, strength in edges:
        ident = (assets[src].id, assets[dst].id, kind)
        dep = existing.get(ident)
        if dep is None:
            dep = Dependency(dependent_id=ident[0], dependency_id=ident[1], kind=kind, strength=strength,
                             source="import")
            db.add(dep)
            existing[ident] = dep
            report.add("dependencies", "created")
        else:
            report.add("dependencies", "updated" if _sync(dep, {"strength": strength}) else "unchanged")


def _apply_plans(db: so.Session, document: dict[str, Any], refs: _Refs, assets: dict[str, Asset],
                 report: ImportReport) -> None:
    entries = _entries(document, "plans")
    if not entries:
        return
    names = [p["name"] for p in entries]
    plans: dict[str, ContingencyPlan] = {}
    for chunk in _chunks(names):
        for plan in db.scalars(sa.select(ContingencyPlan).where(ContingencyPlan.name.in_(chunk))):
            plans[plan.name] = plan
    links: set[tuple[int, int | None, int | None, int | None]] = set()
    plan_ids = [p.id for p in plans.values()]
    for chunk in _chunks(plan_ids):
        for link in db.scalars(sa.select(PlanLink).where(PlanLink.plan_id.in_(chunk))):
            links.add((link.plan_id, link.asset_id, link.product_id, link.vendor_id))
    convert = {"last_reviewed": parse_timestamp, "last_exercised": parse_timestamp}
    for entry in entries:
        values = _present(entry, _PLAN_FIELDS, convert)
        plan = plans.get(entry["name"])
        if plan is None:
            plan = ContingencyPlan(name=entry["name"], **values)
            db.add(plan)
            db.flush()
            plans[entry["name"]] = plan
            report.add("plans", "created")
        else:
            report.add("plans", "updated" if _sync(plan, values) else "unchanged")
        covers = entry.get("covers") or {}
        targets: list[tuple[int | None, int | None, int | None]] = []
        targets += [(assets[key].id, None, None) for key in covers.get("assets") or []]
        targets += [(None, refs.products[(r["vendor"], r["product"])].id, None)
                    for r in covers.get("products") or []]
        targets += [(None, None, refs.vendors[name].id) for name in covers.get("vendors") or []]
        for asset_id, product_id, vendor_id in targets:
            ident = (plan.id, asset_id, product_id, vendor_id)
            if ident in links:
                report.add("plan_links", "unchanged")
                continue
            db.add(PlanLink(plan_id=plan.id, asset_id=asset_id, product_id=product_id, vendor_id=vendor_id))
            links.add(ident)
            report.add("plan_links", "created")


def _apply_updates(db: so.Session, document: dict[str, Any], refs: _Refs, report: ImportReport) -> None:
    entries = _entries(document, "updates")
    if not entries:
        return
    db.flush()
    existing = {(u.product_id, u.version): u for u in db.scalars(
        sa.select(VendorUpdate).options(so.selectinload(VendorUpdate.tests)))}
    for entry in entries:
        product = refs.products[(entry["vendor"], entry["product"])]
        values = _present(entry, _UPDATE_FIELDS, {"released_on": parse_date})
        update = existing.get((product.id, entry["version"]))
        if update is None:
            update = VendorUpdate(product_id=product.id, version=entry["version"], **values)
            update.tests = []
            db.add(update)
            existing[(product.id, entry["version"])] = update
            report.add("updates", "created")
        else:
            report.add("updates", "updated" if _sync(update, values) else "unchanged")
        tests = {t.ring: t for t in update.tests}
        for t in entry.get("tests") or []:
            tvalues = _present(t, _TEST_FIELDS, {"tested_at": parse_timestamp})
            test = tests.get(t["ring"])
            if test is None:
                update.tests.append(UpdateTest(ring=t["ring"], **tvalues))
                report.add("update_tests", "created")
            else:
                report.add("update_tests", "updated" if _sync(test, tvalues) else "unchanged")


def _apply_assessments(db: so.Session, document: dict[str, Any], refs: _Refs, report: ImportReport) -> None:
    entries = _entries(document, "assessments")
    if not entries:
        return
    db.flush()
    existing = {(a.vendor_id, a.assessed_on): a for a in db.scalars(sa.select(VendorAssessment))}
    for entry in entries:
        vendor = refs.vendors[entry["vendor"]]
        assessed_on = parse_date(entry["assessed_on"])
        values = _present(entry, _ASSESSMENT_FIELDS, {"next_review_due": parse_date})
        for domain, score in (entry.get("scores") or {}).items():
            values[f"score_{domain}"] = score
        assessment = existing.get((vendor.id, assessed_on))
        if assessment is None:
            values.setdefault("certifications", [])
            values.setdefault("findings", [])
            db.add(VendorAssessment(vendor_id=vendor.id, assessed_on=assessed_on, **values))
            report.add("assessments", "created")
        else:
            report.add("assessments", "updated" if _sync(assessment, values) else "unchanged")


def import_file(db: so.Session, path: str | Path, *, actor: str) -> ImportReport:
    """Parse, validate and apply a file (the caller commits)."""
    document = load_file(path)
    return import_estate(db, document, source_name=str(path), actor=actor)
