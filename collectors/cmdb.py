"""CMDB exports (CSV): curated owner, criticality, environment and dependencies of known machines.

A mapping (YAML; ``collectors/data/cmdb_servicenow_server.yaml`` is the default, for a ServiceNow
``cmdb_ci_server`` list export) says which column identifies a CI and how it becomes a natural key
(``host:<name>`` by default, the key the host, osquery and Fleet collectors give the same machine),
which columns hold which Plan B field, how CMDB values translate (``Production`` → ``production``,
``1 - most critical`` → ``critical``, ``cmdb_ci_win_server`` → ``host``), which rows to skip
(retired CIs), and how the ``depends_on`` column lists dependencies.

The whole file is read and checked before anything is written.  A bad row (no key, a key given
twice, an environment or criticality the mapping does not know, a dependency on an unknown CI, a
row with more or fewer fields than the header) refuses the import with the row and column named —
unless ``skip_bad_rows``: then bad rows are left out, reported, and the scope counts as incomplete
(nothing is retired, since a skipped row's CI is not really gone).

The records go through ``collectors.ingest`` as source ``cmdb``: it outranks cloud tags for
owner, criticality and environment and ranks below the estate file; it never decides OS facts or
installed software another source reported.  One scope per mapping: ``cmdb:<scope>``.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from collectors.base import AssetRecord, DependencyRecord, ProgressFn, ScopeBatch

NAME = "cmdb"
DEFAULT_MAPPING = "cmdb_servicenow_server.yaml"
FIELDS = ("name", "hostname", "kind", "os_family", "os_name", "os_version", "owner", "criticality",
          "environment", "cloud_instance_id", "depends_on")
_CHOICES: dict[str, tuple[str, ...]] = {}
MAX_REPORTED = 20
_MAX_FIELD = 1 << 20


def _choices() -> dict[str, tuple[str, ...]]:
    if not _CHOICES:
        from inventory.choices import ASSET_KINDS, CRITICALITIES, DEPENDENCY_KINDS, ENVIRONMENTS, STRENGTHS

        _CHOICES.update(kind=ASSET_KINDS, criticality=CRITICALITIES, environment=ENVIRONMENTS,
                        dependency_kind=DEPENDENCY_KINDS, strength=STRENGTHS)
    return _CHOICES


class CmdbError(ValueError):
    """A mapping or export that cannot be imported; nothing was written."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        shown = problems[:MAX_REPORTED]
        text = shown[0] if len(shown) == 1 else (
            f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in shown)
            + (f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""))
        super().__init__(f"{source}: {text}")


# -------------------------------------------------------------------------------- the mapping

_MAPPING_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["key", "columns"],
    "properties": {
        "scope": {"type": "string", "pattern": r"^[^\s:]+$"},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1},
        "key": {"type": "object", "additionalProperties": False, "required": ["column"], "properties": {
            "column": {"type": "string", "minLength": 1}, "prefix": {"type": "string"},
            "lowercase": {"type": "boolean"}}},
        "columns": {"type": "object", "additionalProperties": False, "properties": {
            name: {"oneOf": [{"type": "string", "minLength": 1},
                             {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]}
            for name in FIELDS}},
        "values": {"type": "object", "additionalProperties": False, "properties": {
            name: {"type": "object", "additionalProperties": {"type": "string"}}
            for name in ("kind", "environment", "criticality", "os_family")}},
        "defaults": {"type": "object", "additionalProperties": False, "properties": {
            name: {"type": "string"} for name in ("kind", "environment", "criticality", "owner")}},
        "skip_rows_where": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"type": ["string", "number"]}}},
        "depends_on": {"type": "object", "additionalProperties": False, "properties": {
            "separator": {"type": "string", "minLength": 1}, "kind": {"type": "string"},
            "strength": {"type": "string"}}},
        "attributes": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
    },
}


@dataclass
class Mapping:
    source: str
    scope: str
    delimiter: str
    key_column: str
    key_prefix: str
    key_lowercase: bool
    columns: dict[str, list[str]]
    values: dict[str, dict[str, str]]
    defaults: dict[str, str]
    skip_rows_where: dict[str, set[str]]
    dependency_separator: str
    dependency_kind: str
    dependency_strength: str
    attributes: dict[str, str]


def load_mapping(path: str | Path | None = None) -> Mapping:
    """The mapping in ``path`` (YAML), or the shipped ServiceNow ``cmdb_ci_server`` one."""
    if path is None:
        source = f"{DEFAULT_MAPPING} (default mapping)"
        text = resources.files("collectors").joinpath("data", DEFAULT_MAPPING).read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CmdbError(source, [f"cannot read: {exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CmdbError(source, [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    return mapping_from_data(data, source)


def mapping_from_data(data: Any, source: str) -> Mapping:
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(_MAPPING_SCHEMA).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        raise CmdbError(source, [f"{'.'.join(map(str, e.path)) or 'mapping'}: {e.message}" for e in errors])
    choices = _choices()
    problems = []
    values = {k: {str(a).strip().lower(): str(b).strip() for a, b in v.items()}
              for k, v in (data.get("values") or {}).items()}
    for name, table in values.items():
        allowed = choices.get(name, ("windows", "linux", "macos", "other"))
        for raw, value in table.items():
            if value not in allowed:
                problems.append(f"values.{name}: {raw!r} maps to {value!r}, which is not one of {', '.join(allowed)}")
    defaults = {k: str(v).strip() for k, v in (data.get("defaults") or {}).items()}
    for name, value in defaults.items():
        if name in choices and value not in choices[name]:
            problems.append(f"defaults.{name}: {value!r} is not one of {', '.join(choices[name])}")
    dependency = data.get("depends_on") or {}
    kind, strength = dependency.get("kind", "calls"), dependency.get("strength", "hard")
    if kind not in choices["dependency_kind"]:
        problems.append(f"depends_on.kind: {kind!r} is not one of {', '.join(choices['dependency_kind'])}")
    if strength not in choices["strength"]:
        problems.append(f"depends_on.strength: {strength!r} is not one of {', '.join(choices['strength'])}")
    if problems:
        raise CmdbError(source, problems)
    columns = {name: [spec] if isinstance(spec, str) else list(spec) for name, spec in data["columns"].items()}
    return Mapping(
        source=source, scope=str(data.get("scope") or "export"), delimiter=data.get("delimiter", ","),
        key_column=data["key"]["column"], key_prefix=data["key"].get("prefix", ""),
        key_lowercase=bool(data["key"].get("lowercase", True)), columns=columns, values=values,
        defaults=defaults,
        skip_rows_where={col: {str(v).strip().lower() for v in vals}
                         for col, vals in (data.get("skip_rows_where") or {}).items()},
        dependency_separator=dependency.get("separator", ";"), dependency_kind=kind,
        dependency_strength=strength, attributes=dict(data.get("attributes") or {}))


# -------------------------------------------------------------------------------- the export

@dataclass
class CmdbExport:
    source: str
    scope: str
    assets: list[AssetRecord] = field(default_factory=list)
    dependencies: list[DependencyRecord] = field(default_factory=list)
    # row number -> the CI key of each dependency, to report an unknown one by its row
    dependency_rows: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)       # bad rows left out (skip_bad_rows)
    excluded: int = 0                                       # rows skipped by skip_rows_where

    @property
    def scope_key(self) -> str:
        return f"cmdb:{self.scope}"

    def drop_dependencies_on(self, unknown: set[str], column: str) -> list[str]:
        """Remove the dependencies naming ``unknown`` keys; the messages naming their rows."""
        messages, kept, rows = [], [], []
        for dep, row in zip(self.dependencies, self.dependency_rows):
            if dep.dependency_key in unknown:
                messages.append(f"row {row}, column {column!r}: {dep.dependency_key!r} is neither a CI of this "
                                "file nor an asset Plan B knows")
            else:
                kept.append(dep)
                rows.append(row)
        self.dependencies, self.dependency_rows = kept, rows
        return messages


def _os_family(os_name: str | None) -> str | None:
    text = (os_name or "").lower()
    if not text:
        return None
    if "windows" in text:
        return "windows"
    if "mac" in text or "darwin" in text:
        return "macos"
    if any(word in text for word in ("linux", "ubuntu", "debian", "red hat", "rhel", "centos", "suse", "sles",
                                     "fedora", "rocky", "alma", "amazon")):
        return "linux"
    return "other"


def read_export(path: str | Path, mapping: Mapping, *, skip_bad_rows: bool = False,
                scope: str | None = None) -> CmdbExport:
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise CmdbError(source, [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise CmdbError(source, [f"not UTF-8 text (invalid byte at offset {exc.start})"]) from None
    return parse_export(text, source, mapping, skip_bad_rows=skip_bad_rows, scope=scope)


def parse_export(text: str, source: str, mapping: Mapping, *, skip_bad_rows: bool = False,
                 scope: str | None = None) -> CmdbExport:
    """Read a CSV export into asset and dependency records (all or nothing, see the module docstring)."""
    export = CmdbExport(source=source, scope=scope or mapping.scope)
    csv.field_size_limit(_MAX_FIELD)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=mapping.delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise CmdbError(source, ["empty file: expected a header row naming the columns"]) from None
    except csv.Error as exc:
        raise CmdbError(source, [f"row 1: not valid CSV ({exc})"]) from None
    header = [h.strip() for h in header]
    index = {name: i for i, name in reversed(list(enumerate(header))) if name}
    if mapping.key_column not in index:
        raise CmdbError(source, [f"row 1: no {mapping.key_column!r} column (the mapping's key column); "
                                 f"the header has {', '.join(h for h in header if h) or 'no names'}"])
    problems: list[str] = []
    rows_by_key: dict[str, int] = {}
    records: list[tuple[int, AssetRecord, list[str]]] = []
    row_number = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(f"row {row_number + 1}: not valid CSV ({exc})")
            break
        row_number += 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(f"row {row_number}: has {len(row)} fields, the header has {len(header)}")
            continue
        cells = {name: row[i].strip() for name, i in index.items()}
        if any(cells.get(col, "").lower() in values for col, values in mapping.skip_rows_where.items()):
            export.excluded += 1
            continue
        row_problems: list[str] = []
        record, depends = _record(cells, mapping, row_number, row_problems)
        if record is not None and record.natural_key in rows_by_key:
            row_problems.append(f"row {row_number}, column {mapping.key_column!r}: "
                                f"{cells[mapping.key_column]!r} is also the key of row {rows_by_key[record.natural_key]}")
        if row_problems or record is None:
            problems.extend(row_problems)
            continue
        rows_by_key[record.natural_key] = row_number
        records.append((row_number, record, depends))
    keys_by_value = {_key_value(r.attributes.get("_cmdb_key_value", ""), mapping): r.natural_key
                     for _n, r, _d in records}
    for row, record, depends in records:
        record.attributes.pop("_cmdb_key_value", None)
        export.assets.append(record)
        for value in depends:
            target = keys_by_value.get(_key_value(value, mapping)) or (value if ":" in value
                                                                       else mapping.key_prefix + _key_value(value, mapping))
            if target == record.natural_key:
                continue
            export.dependencies.append(DependencyRecord(dependent_key=record.natural_key, dependency_key=target,
                                                        kind=mapping.dependency_kind,
                                                        strength=mapping.dependency_strength))
            export.dependency_rows.append(row)
    if problems:
        if not skip_bad_rows:
            raise CmdbError(source, problems)
        export.skipped = problems
    return export


def _key_value(value: str, mapping: Mapping) -> str:
    value = value.strip()
    return value.lower() if mapping.key_lowercase else value


def _first(cells: dict[str, str], columns: list[str]) -> tuple[str | None, str | None]:
    """The first non-empty value among ``columns`` and the column it came from."""
    for column in columns:
        value = cells.get(column, "")
        if value:
            return value, column
    return None, columns[0] if columns else None


def _record(cells: dict[str, str], mapping: Mapping, row: int, problems: list[str]
            ) -> tuple[AssetRecord | None, list[str]]:
    key_value = cells.get(mapping.key_column, "")
    if not key_value:
        problems.append(f"row {row}, column {mapping.key_column!r}: empty (the key identifying the CI)")
        return None, []
    choices = _choices()
    values: dict[str, str | None] = {}
    for name in FIELDS:
        value, column = _first(cells, mapping.columns.get(name, []))
        if value is None:
            values[name] = mapping.defaults.get(name)
            continue
        if name in ("kind", "environment", "criticality"):
            translated = mapping.values.get(name, {}).get(value.lower())
            if translated is None and value.lower() in choices[name]:
                translated = value.lower()
            if translated is None:
                if name == "kind" and "kind" in mapping.defaults:
                    translated = mapping.defaults["kind"]
                else:
                    problems.append(f"row {row}, column {column!r}: {value!r} is not a Plan B {name} "
                                    f"({', '.join(choices[name])}); add it to the mapping's values.{name}")
                    continue
            value = translated
        values[name] = value
    if not values.get("kind"):
        problems.append(f"row {row}: no kind (no {'/'.join(mapping.columns.get('kind', ['kind']))} value and "
                        "no defaults.kind in the mapping)")
    if problems:
        return None, []
    os_family = values.get("os_family")
    if os_family is not None:
        os_family = mapping.values.get("os_family", {}).get(os_family.lower(), os_family.lower())
    else:
        os_family = _os_family(values.get("os_name"))
    attributes: dict[str, Any] = {name: cells[column] for name, column in mapping.attributes.items()
                                  if cells.get(column)}
    attributes["_cmdb_key_value"] = key_value
    record = AssetRecord(
        natural_key=mapping.key_prefix + _key_value(key_value, mapping), name=values.get("name") or key_value,
        kind=values["kind"] or "host", hostname=values.get("hostname"),
        cloud_instance_id=values.get("cloud_instance_id"), os_family=os_family, os_name=values.get("os_name"),
        os_version=values.get("os_version"), environment=values.get("environment"),
        criticality=values.get("criticality"), owner=values.get("owner"), attributes=attributes)
    depends = [part.strip() for part in (values.get("depends_on") or "").split(mapping.dependency_separator)
               if part.strip()]
    return record, depends


# -------------------------------------------------------------------------------- the collector

class CmdbCollector:
    """One batch: the export's CIs and dependencies in scope ``cmdb:<scope>``."""

    name = NAME

    def __init__(self, export: CmdbExport) -> None:
        self.export = export

    def describe_scope(self) -> str:
        return f"CMDB export {self.export.source}: {len(self.export.assets)} CI(s)"

    def planned_scopes(self) -> list[str]:
        return [self.export.scope_key]

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        export = self.export
        progress(f"cmdb: {export.source}: {len(export.assets)} CI(s), {len(export.dependencies)} "
                 f"dependencies, {export.excluded} row(s) excluded by the mapping, "
                 f"{len(export.skipped)} bad row(s) skipped")
        error = None
        if export.skipped:
            error = (f"{len(export.skipped)} bad row(s) skipped, nothing retired: "
                     + "; ".join(export.skipped[:3]) + (" ..." if len(export.skipped) > 3 else ""))
        yield ScopeBatch(scope_key=export.scope_key, assets=list(export.assets),
                         dependencies=list(export.dependencies), complete=not export.skipped, error=error)
