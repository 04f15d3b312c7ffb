"""SBOMs: what an application is built from, as installations of the application's asset.

Accepted documents (the format is recognised from the content, not the file name):

* **CycloneDX 1.4, 1.5 and 1.6**, JSON or XML, validated against the CycloneDX schema of the
  version the document declares and read through ``cyclonedx-python-lib``;
* **SPDX 2.3** JSON, read and validated through ``spdx-tools``.

A document that is not valid is refused before anything is written (``SbomError``), naming the
file and the position: ``line:column`` for a syntax error, a JSON pointer (``/components/3/version``)
or an XML line for a schema error.

Every component (nested ones too; not the document's own subject, its metadata component or the
package the SPDX document DESCRIBES) becomes a ``SoftwareRecord`` of the asset:

* **name**: the component's name (an npm scope is kept: ``@angular/core``);
* **version**: the purl's version when the component has a purl (the product's version, e.g. a
  Maven ``2.14.1``), else the component's ``version`` (SPDX ``versionInfo``); the full purl is kept in
  the installation's ``attributes``.  When one product appears with several versions (npm trees often
  hold two copies of a package) the version is recorded as **unknown** with every version listed in
  ``attributes["versions"]``, so a version-narrowed blast radius lists the asset under "version
  unknown — check by hand" rather than comparing only one copy;
* **vendor**, in this order: the first of supplier, publisher, manufacturer and author (SPDX:
  supplier, originator) that names a known vendor; else the purl's namespace through the vendor
  catalogue (``purls:`` patterns such as ``pkg:maven/org.apache.*``, and the estate file's aliases,
  which may be patterns over ``pkg:type/namespace/name``); else the component is *unattributed* under
  its first organisation (or its purl), in the same review queue as any collector's.

One scope per asset, ``sbom:<asset key>``: a new SBOM for the asset replaces what the previous SBOM
said (its components that are gone are removed), and never touches installations other sources
recorded on the asset (host, osquery, an EDR console, the estate file).
"""
from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from collectors.attribution import Attributor
from collectors.base import AssetRecord, ProgressFn, ScopeBatch, SoftwareRecord

NAME = "sbom"
CYCLONEDX_VERSIONS = ("1.4", "1.5", "1.6")
SPDX_VERSION = "SPDX-2.3"
# CycloneDX component types that are not software something runs (a file, a data set).
_SKIPPED_TYPES = frozenset({"file", "data", "cryptographic-asset", "machine-learning-model"})
_XML_NAMESPACE = re.compile(r"^\{http://cyclonedx\.org/schema/bom/(\d+\.\d+)\}bom$")
_QUOTED_ID = re.compile(r'"(SPDXRef-[^"]+)"')


class SbomError(ValueError):
    """A document that cannot be imported; the message names the file and the position."""

    def __init__(self, source: str, message: str, position: str | None = None, *, syntax: bool = False) -> None:
        self.source = source
        self.position = position
        self.detail = message
        # True when the text is not JSON/XML at all (rather than a document that is not a valid SBOM)
        self.syntax = syntax
        super().__init__(f"{source}{f' at {position}' if position else ''}: {message}")


@dataclass(frozen=True)
class Component:
    """One component as the SBOM describes it."""

    name: str
    version: str | None
    purl: str | None = None             # the full purl, as written
    purl_base: str | None = None        # pkg:type/namespace/name, unencoded, no version
    group: str | None = None
    # (role, name) in attribution order: supplier, publisher, manufacturer, author / originator
    organisations: tuple[tuple[str, str], ...] = ()
    kind: str | None = None
    ref: str | None = None


@dataclass
class SbomDocument:
    format: str                         # e.g. "CycloneDX 1.5 (JSON)", "SPDX-2.3 (JSON)"
    subject: str | None                 # the application the SBOM describes
    subject_version: str | None
    components: list[Component] = field(default_factory=list)


# -------------------------------------------------------------------------------- parsing

def load_file(path: str | Path) -> SbomDocument:
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SbomError(source, f"cannot read: {exc.strerror or exc}") from None
    return parse(data, source)


def parse(data: bytes | str, source: str) -> SbomDocument:
    """The document in ``data`` (CycloneDX JSON/XML or SPDX 2.3 JSON), validated; ``SbomError`` if not."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SbomError(source, f"not UTF-8 text (invalid byte at offset {exc.start})", syntax=True) from None
    else:
        text = data
    stripped = text.lstrip()
    if not stripped:
        raise SbomError(source, "empty document", syntax=True)
    if stripped.startswith("<"):
        return _parse_cyclonedx_xml(text, source)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SbomError(source, f"not valid JSON: {exc.msg}", f"line {exc.lineno}, column {exc.colno}",
                        syntax=True) from None
    except RecursionError:
        raise SbomError(source, "not valid JSON: nested too deeply", syntax=True) from None
    if not isinstance(document, dict):
        raise SbomError(source, "expected a CycloneDX or SPDX document (a JSON object)", "/")
    if document.get("bomFormat") == "CycloneDX":
        return _parse_cyclonedx_json(document, text, source)
    if "spdxVersion" in document:
        return _parse_spdx_json(document, source)
    raise SbomError(source, "not an SBOM: a CycloneDX document has \"bomFormat\": \"CycloneDX\" and an SPDX "
                            "document has \"spdxVersion\"", "/")


def _schema_version(version: Any, source: str, where: str):  # type: ignore[no-untyped-def]
    from cyclonedx.schema import SchemaVersion

    if version not in CYCLONEDX_VERSIONS:
        raise SbomError(source, f"CycloneDX {version} is not supported (supported: "
                                f"{', '.join(CYCLONEDX_VERSIONS)})", where)
    return SchemaVersion.from_version(version)


def _pointer(path: Any) -> str:
    """A JSON pointer (RFC 6901) from a sequence of keys and indexes."""
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts)


@lru_cache(maxsize=8)
def _fast_json_validator(schema_version: Any) -> Any:
    """A Rust (jsonschema-rs) validator over cyclonedx-python-lib's own strict JSON schema of
    ``schema_version`` and the schemas it references; None when the library no longer ships them
    where this looks (then its own, pure-Python validator is used)."""
    try:
        import jsonschema_rs
        from cyclonedx.schema import _res
    except ImportError:
        return None
    schema_file = getattr(_res, "BOM_JSON_STRICT", {}).get(schema_version)
    referenced = [getattr(_res, name, None) for name in ("SPDX_JSON", "JSF", "CRYPTOGRAPHY_DEFS")]
    if schema_file is None or not all(referenced):
        return None
    prefix = "http://cyclonedx.org/schema/"
    registry = jsonschema_rs.Registry([(prefix + Path(path).name, json.loads(Path(path).read_text(encoding="utf-8")))
                                       for path in referenced])
    return jsonschema_rs.Draft7Validator(json.loads(Path(schema_file).read_text(encoding="utf-8")),
                                         registry=registry, validate_formats=True)


def _parse_cyclonedx_json(document: dict[str, Any], text: str, source: str) -> SbomDocument:
    from cyclonedx.model.bom import Bom
    from cyclonedx.validation.json import JsonStrictValidator

    version = document.get("specVersion")
    schema = _schema_version(version, source, "/specVersion")
    # The library's own validator (jsonschema) compares the components pairwise for
    # "uniqueItems": minutes for an SBOM of 10,000 components; the same schema through
    # jsonschema-rs takes milliseconds.
    fast = _fast_json_validator(schema)
    if fast is not None:
        first = next(iter(fast.iter_errors(document)), None)
        if first is not None:
            raise SbomError(source, f"not valid CycloneDX {version}: {first.message}",
                            _pointer(first.instance_path))
    else:
        error = JsonStrictValidator(schema).validate_str(text)
        if error is not None:
            detail = error.data  # a jsonschema ValidationError
            raise SbomError(source, f"not valid CycloneDX {version}: {detail.message}",
                            _pointer(detail.absolute_path))
    bom = _quietly(Bom.from_json, document)
    return _from_bom(bom, f"CycloneDX {version} (JSON)")


def _parse_cyclonedx_xml(text: str, source: str) -> SbomDocument:
    import defusedxml.ElementTree as SafeET
    from cyclonedx.model.bom import Bom
    from cyclonedx.validation.xml import XmlValidator
    from defusedxml import DefusedXmlException

    try:
        root = SafeET.fromstring(text)
    except DefusedXmlException as exc:
        raise SbomError(source, f"refused XML construct ({type(exc).__name__}: entities and DTDs are not "
                                "accepted)", syntax=True) from None
    except SafeET.ParseError as exc:
        from xml.parsers.expat import ErrorString

        line, column = exc.position
        raise SbomError(source, f"not valid XML: {ErrorString(exc.code)}", f"line {line}, column {column + 1}",
                        syntax=True) from None
    match = _XML_NAMESPACE.match(root.tag)
    if match is None:
        raise SbomError(source, "not a CycloneDX XML document (its root must be <bom> in the namespace "
                                "http://cyclonedx.org/schema/bom/<version>)", "line 1")
    version = match.group(1)
    schema = _schema_version(version, source, "line 1")
    error = XmlValidator(schema).validate_str(text)
    if error is not None:
        entry = error.data  # an lxml log entry
        raise SbomError(source, f"not valid CycloneDX {version}: {entry.message}",
                        f"line {entry.line}, column {entry.column + 1}")
    bom = _quietly(Bom.from_xml, root)
    return _from_bom(bom, f"CycloneDX {version} (XML)")


def _quietly(build: Any, data: Any) -> Any:
    """Deserialise without the library's deprecation warnings (fields a 1.4 document may use)."""
    from cyclonedx.schema.deprecation import BaseSchemaDeprecationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BaseSchemaDeprecationWarning)
        return build(data)


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _purl_parts(purl: Any) -> tuple[str | None, str | None, str | None]:
    """(full purl, base ``pkg:type/namespace/name``, version) of a PackageURL or purl string."""
    if purl is None:
        return None, None, None
    if isinstance(purl, str):
        from packageurl import PackageURL

        try:
            purl = PackageURL.from_string(purl)
        except ValueError:
            return purl, None, None
    base = "/".join(p for p in (f"pkg:{purl.type}", purl.namespace, purl.name) if p)
    return purl.to_string(), base, _text(purl.version)


def _product_name(name: str, group: str | None) -> str:
    """npm scoped packages keep their scope (``@angular/core``); other names stand alone."""
    if group and group.startswith("@") and not name.startswith("@"):
        return f"{group}/{name}"
    return name


def _from_bom(bom: Any, fmt: str) -> SbomDocument:
    subject = bom.metadata.component if bom.metadata is not None else None
    components: list[Component] = []
    seen: set[int] = set()
    for top in bom.components:
        for component in top.get_all_nested_components(include_self=True):
            if id(component) in seen:
                continue
            seen.add(id(component))
            kind = str(component.type.value) if component.type is not None else None
            if kind in _SKIPPED_TYPES or not _text(component.name):
                continue
            organisations: list[tuple[str, str]] = []
            if component.supplier is not None and _text(component.supplier.name):
                organisations.append(("supplier", component.supplier.name.strip()))
            if _text(component.publisher):
                organisations.append(("publisher", component.publisher.strip()))
            manufacturer = getattr(component, "manufacturer", None)
            if manufacturer is not None and _text(manufacturer.name):
                organisations.append(("manufacturer", manufacturer.name.strip()))
            if _text(component.author):
                organisations.append(("author", component.author.strip()))
            for author in getattr(component, "authors", None) or ():
                if _text(author.name):
                    organisations.append(("author", author.name.strip()))
            purl, base, purl_version = _purl_parts(component.purl)
            group = _text(component.group)
            components.append(Component(
                name=_product_name(component.name.strip(), group),
                version=purl_version or _text(component.version), purl=purl, purl_base=base, group=group,
                organisations=tuple(organisations), kind=kind,
                ref=str(component.bom_ref.value) if component.bom_ref and component.bom_ref.value else None))
    return SbomDocument(format=fmt, subject=_text(subject.name) if subject is not None else None,
                        subject_version=_text(subject.version) if subject is not None else None,
                        components=components)


def _parse_spdx_json(document: dict[str, Any], source: str) -> SbomDocument:
    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    version = document.get("spdxVersion")
    if version != SPDX_VERSION:
        raise SbomError(source, f"{version!r} is not supported (only {SPDX_VERSION} JSON)", "/spdxVersion")
    parser = JsonLikeDictParser()
    try:
        parsed = parser.parse(document)
    except SPDXParsingError as exc:
        pointer, message = _locate_spdx_parse_error(document, exc.get_messages())
        raise SbomError(source, f"not valid SPDX 2.3: {message}", pointer) from None
    problems = validate_full_spdx_document(parsed, SPDX_VERSION)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise SbomError(source, f"not valid SPDX 2.3: {first.validation_message}{more}",
                        _spdx_pointer(document, first))
    return _from_spdx(parsed)


def _locate_spdx_parse_error(document: dict[str, Any], messages: list[str]) -> tuple[str, str]:
    """The JSON pointer of the first element spdx-tools could not read, and its message."""
    from spdx_tools.spdx.parser.error import SPDXParsingError
    from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser

    parser = JsonLikeDictParser()
    sections = (("packages", parser.package_parser.parse_package),
                ("files", parser.file_parser.parse_file),
                ("snippets", parser.snippet_parser.parse_snippet),
                ("relationships", parser.relationship_parser.parse_relationship))
    for section, parse_one in sections:
        items = document.get(section)
        if not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            try:
                parse_one(item)
            except SPDXParsingError as exc:
                return f"/{section}/{index}", "; ".join(exc.get_messages())
            except (AttributeError, TypeError, KeyError) as exc:
                return f"/{section}/{index}", f"{type(exc).__name__}: {exc}"
    return "/", "; ".join(messages)


def _spdx_pointer(document: dict[str, Any], problem: Any) -> str:
    """Where a spdx-tools validation message points: the element with its SPDX id, else the
    relationship naming the id the message quotes, else the document."""
    context = problem.context
    wanted = [context.spdx_id, *(_QUOTED_ID.findall(problem.validation_message))]
    for spdx_id in [w for w in wanted if w]:
        for section in ("packages", "files", "snippets"):
            for index, item in enumerate(document.get(section) or []):
                if isinstance(item, dict) and item.get("SPDXID") == spdx_id:
                    return f"/{section}/{index}"
        for index, item in enumerate(document.get("relationships") or []):
            if isinstance(item, dict) and spdx_id in (item.get("spdxElementId"), item.get("relatedSpdxElement")):
                return f"/relationships/{index}"
    return "/"


def _from_spdx(parsed: Any) -> SbomDocument:
    from spdx_tools.spdx.model import RelationshipType

    described = {r.related_spdx_element_id for r in parsed.relationships
                 if r.relationship_type == RelationshipType.DESCRIBES
                 and r.spdx_element_id == parsed.creation_info.spdx_id}
    described |= {r.spdx_element_id for r in parsed.relationships
                  if r.relationship_type == RelationshipType.DESCRIBED_BY
                  and r.related_spdx_element_id == parsed.creation_info.spdx_id}
    subject = next((p for p in parsed.packages if p.spdx_id in described), None)
    components: list[Component] = []
    for package in parsed.packages:
        if package.spdx_id in described or not _text(package.name):
            continue
        organisations: list[tuple[str, str]] = []
        for role, actor in (("supplier", package.supplier), ("originator", package.originator)):
            name = getattr(actor, "name", None)  # NOASSERTION has no name
            if _text(name):
                organisations.append((role, name.strip()))
        purl = next((ref.locator for ref in package.external_references
                     if ref.reference_type == "purl"), None)
        full, base, purl_version = _purl_parts(purl)
        components.append(Component(
            name=package.name.strip(), version=purl_version or _text(package.version), purl=full,
            purl_base=base, organisations=tuple(organisations),
            kind=package.primary_package_purpose.name.lower() if package.primary_package_purpose else None,
            ref=package.spdx_id))
    return SbomDocument(format="SPDX-2.3 (JSON)",
                        subject=_text(subject.name) if subject is not None else _text(parsed.creation_info.name),
                        subject_version=_text(subject.version) if subject is not None else None,
                        components=components)


# -------------------------------------------------------------------------------- transform

def scope_key(asset_key: str) -> str:
    return f"sbom:{asset_key}"


def publisher_for(component: Component, attributor: Attributor) -> tuple[str | None, str]:
    """The raw publisher string (and its attribution origin) that names the component's vendor:
    the first organisation that is a known vendor, else the purl if the catalogue knows its
    namespace, else the first organisation or the purl (it will be unattributed)."""
    for _role, name in component.organisations:
        if attributor.attribute(name, "publisher") is not None:
            return name, "package"
    if component.purl_base and attributor.attribute(component.purl_base, "purl") is not None:
        return component.purl_base, "purl"
    if component.organisations:
        return component.organisations[0][1], "package"
    if component.purl_base:
        return component.purl_base, "purl"
    return None, "package"


def software_records(document: SbomDocument, asset_key: str, attributor: Attributor) -> list[SoftwareRecord]:
    """One record per product of the asset (see the module docstring for versions and vendors)."""
    groups: dict[Any, list[tuple[Component, str | None, str]]] = {}
    for component in document.components:
        publisher, origin = publisher_for(component, attributor)
        hit = attributor.attribute_software(component.name, publisher, origin)
        # the same grouping as ingest: one installation per product, one unattributed row per name
        key = ("product", hit[0], hit[1][:200]) if hit else ("raw", component.name, publisher or "")
        groups.setdefault(key, []).append((component, publisher, origin))
    records = []
    for members in groups.values():
        first, publisher, origin = members[0]
        versions = sorted({c.version for c, _p, _o in members if c.version})
        purls = sorted({c.purl for c, _p, _o in members if c.purl})
        attributes: dict[str, Any] = {}
        if len(versions) > 1:
            attributes["versions"] = versions
            version = None
        else:
            version = versions[0] if versions else None
        if len(purls) == 1:
            attributes["purl"] = purls[0]
        elif purls:
            attributes["purls"] = purls
        if first.group:
            attributes["group"] = first.group
        if first.kind:
            attributes["component_type"] = first.kind
        for role, name in first.organisations:
            attributes.setdefault(role, name)
        records.append(SoftwareRecord(asset_key=asset_key, name=first.name, publisher=publisher,
                                      version=version, origin=origin, attributes=attributes))
    return records


# -------------------------------------------------------------------------------- the collector

class SbomCollector:
    """Applies one parsed SBOM to one asset through ``collectors.ingest`` (scope ``sbom:<asset>``).

    ``create_asset``: include an asset record — when the asset does not exist yet (it is created as
    an ``application`` named after the SBOM's subject) or when an earlier SBOM created it.  An asset
    another source owns (an estate-file service, a cloud VM) only gets its installations: the SBOM
    never takes over its identity or scope."""

    name = NAME

    def __init__(self, document: SbomDocument, asset_key: str, attributor: Attributor, *,
                 create_asset: bool, source: str = "SBOM") -> None:
        self.document = document
        self.asset_key = asset_key
        self.create_asset = create_asset
        self.source = source
        self.software = software_records(document, asset_key, attributor)

    def describe_scope(self) -> str:
        return (f"{self.document.format} {self.source} for {self.asset_key}: "
                f"{len(self.document.components)} component(s)")

    def planned_scopes(self) -> list[str]:
        return [scope_key(self.asset_key)]

    def asset_record(self) -> AssetRecord:
        name = self.document.subject or self.asset_key
        attributes = {"sbom_subject_version": self.document.subject_version} \
            if self.document.subject_version else {}
        return AssetRecord(natural_key=self.asset_key, name=name, kind="application", attributes=attributes)

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        unknown = sum(1 for r in self.software if r.version is None)
        progress(f"sbom: {self.asset_key}: {len(self.document.components)} component(s) as "
                 f"{len(self.software)} product(s), {unknown} without a comparable version")
        assets = [self.asset_record()] if self.create_asset else []
        yield ScopeBatch(scope_key=scope_key(self.asset_key), assets=assets, software=self.software)

