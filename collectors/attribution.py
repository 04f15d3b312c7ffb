"""Vendor attribution: which vendor (and product) a raw string collected from a host names.

Collectors see raw strings — a Windows uninstall publisher ("CrowdStrike, Inc."),
a Debian maintainer ("Debian Python Team <team+python@tracker.debian.org>"), a
package name ("falcon-sensor"), an Azure VM extension publisher
("CrowdStrike.Falcon"), an AMI owner id ("099720109477"), an Azure image
publisher ("MicrosoftWindowsServer").  The shipped catalogue
(``collectors/data/catalogue.yaml``) maps them to canonical vendors and
products; the estate file adds ``VendorAlias`` rows (exact aliases or regular
expressions) that are consulted *before* the catalogue, so a user can override
or extend it.  Anything unmatched becomes an ``UnattributedSoftware`` row —
never dropped.

Matching order for one raw string (``Attributor.attribute``):

1. database aliases (exact, on the normalised and on the "stripped" form), then
   database patterns;
2. catalogue AMI owner ids (only for ``origin="ami-owner"``);
3. catalogue product aliases, then vendor aliases (exact);
4. catalogue product patterns, then vendor patterns (``re.search`` on the
   normalised string);
5. for publisher-like origins only: the stripped string *starts with* a vendor
   alias on a word boundary ("microsoft visual c++ ..." → Microsoft).  Package
   names never prefix-match: "python-yaml" must not become the Python Software
   Foundation's.

Container images (``origin="container-image"``, see ``match_container_image``)
match only the database aliases and the catalogue's ``images`` patterns, on the
normalised ``registry/repository`` (``quay.io/cilium/cilium``): an image name
never falls through to the package and publisher rules.
A package URL without its version (``origin="purl"``, ``pkg:maven/org.apache.logging.log4j/
log4j-core``, as SBOM components carry them) goes through the database aliases (exact, or
patterns such as ``^pkg:maven/com[.]acme[.]``) and then the catalogue's ``purls:`` globs
(``pkg:maven/org.apache.*`` → Apache Software Foundation, ``pkg:npm/@azure/*`` → Microsoft),
and nothing else: a purl is never matched as a publisher name.

For installed software (``attribute_software``) the publisher decides the vendor
(the supplier who ships the bits to you: Debian's ``python3`` is Debian's), and
the name picks the product within that vendor, falling back to the raw name.
"""
from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
import yaml

from inventory.models import Product, Vendor, VendorAlias

CATALOGUE_RESOURCE = "catalogue.yaml"

# Origins whose raw string names an organisation (a publisher), not a package.
PUBLISHER_ORIGINS = frozenset({
    "publisher", "maintainer", "vendor", "extension", "image", "ami-owner", "saas", "os", "purl",
})
PURL_ORIGIN = "purl"

# Origins where the software's name identifies the product better than its publisher does.
NAME_FIRST_ORIGINS = frozenset({"os", "image", "ami-owner"})

# Legal-form suffixes stripped before exact alias lookups ("CrowdStrike, Inc." → "crowdstrike").
_LEGAL_SUFFIX = re.compile(
    r"[\s,]+(inc|incorporated|corp|corporation|co|company|ltd|limited|llc|l\.l\.c|gmbh|ag|sa|s\.a|"
    r"s\.p\.a|spa|nv|n\.v|bv|b\.v|plc|oy|oyj|ab|as|a/s|srl|s\.r\.l|pty|pty ltd|kk|k\.k|sarl|se|"
    r"lp|llp|group|holdings)\.?$")
_EMAIL = re.compile(r"<[^>]*>")
_PARENS = re.compile(r"\([^)]*\)")
_SPACES = re.compile(r"\s+")
_WORD_BOUNDARY_AFTER = re.compile(r"[\s.,;:/_()\-]")


def normalise(raw: str) -> str:
    """Lower case, NFKC, collapsed whitespace: the form ``VendorAlias.alias`` is stored in."""
    text = unicodedata.normalize("NFKC", raw or "").strip().lower()
    return _SPACES.sub(" ", text)


def stripped(raw: str) -> str:
    """The normalised string without e-mail addresses, parentheses and legal-form suffixes."""
    text = normalise(raw)
    text = _EMAIL.sub(" ", text)
    text = _PARENS.sub(" ", text)
    text = _SPACES.sub(" ", text).strip(" ,.;:-")
    previous = None
    while previous != text:
        previous = text
        text = _LEGAL_SUFFIX.sub("", text).strip(" ,.;:-")
    return text


@dataclass(frozen=True)
class ProductInfo:
    name: str
    kind: str = "application"
    vendor_pushes_updates: bool = False


@dataclass
class VendorInfo:
    name: str
    website: str | None = None
    cloud_provider: str | None = None
    tier: str | None = None
    products: dict[str, ProductInfo] = field(default_factory=dict)


@dataclass
class Catalogue:
    """The shipped vendor catalogue, compiled for matching."""

    vendors: dict[str, VendorInfo]
    # exact (normalised or stripped) alias -> (vendor, product | None)
    product_aliases: dict[str, tuple[str, str]]
    vendor_aliases: dict[str, str]
    ami_owners: dict[str, tuple[str, str | None]]
    product_patterns: list[tuple[re.Pattern[str], str, str]]
    vendor_patterns: list[tuple[re.Pattern[str], str]]
    # vendor aliases longest first, for the publisher prefix rule
    prefixes: list[tuple[str, str]]
    # container image patterns on "registry/repository" -> (vendor, product)
    image_patterns: list[tuple[re.Pattern[str], str, str]] = field(default_factory=list)
    # package-URL globs (lower case, matched on ``pkg:type/namespace/name``), most specific first
    purl_patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Catalogue:
        vendors: dict[str, VendorInfo] = {}
        product_aliases: dict[str, tuple[str, str]] = {}
        vendor_aliases: dict[str, str] = {}
        ami_owners: dict[str, tuple[str, str | None]] = {}
        product_patterns: list[tuple[re.Pattern[str], str, str]] = []
        vendor_patterns: list[tuple[re.Pattern[str], str]] = []
        purl_globs: list[tuple[str, str]] = []
        for entry in data.get("vendors") or []:
            name = entry["name"]
            if name in vendors:
                raise ValueError(f"catalogue: vendor {name!r} listed twice")
            info = VendorInfo(name=name, website=entry.get("website"),
                              cloud_provider=entry.get("cloud_provider"), tier=entry.get("tier"))
            vendors[name] = info
            for alias in [name, *(entry.get("aliases") or [])]:
                vendor_aliases.setdefault(normalise(alias), name)
                vendor_aliases.setdefault(stripped(alias), name)
            for pattern in entry.get("patterns") or []:
                vendor_patterns.append((re.compile(pattern), name))
            for owner in entry.get("ami_owners") or []:
                ami_owners[str(owner).strip().lower()] = (name, None)
            for product in entry.get("products") or []:
                pinfo = ProductInfo(name=product["name"], kind=product.get("kind", "application"),
                                    vendor_pushes_updates=bool(product.get("vendor_pushes_updates")))
                info.products[pinfo.name] = pinfo
                for alias in [pinfo.name, *(product.get("aliases") or [])]:
                    product_aliases.setdefault(normalise(alias), (name, pinfo.name))
                for pattern in product.get("patterns") or []:
                    product_patterns.append((re.compile(pattern), name, pinfo.name))
                for owner in product.get("ami_owners") or []:
                    ami_owners[str(owner).strip().lower()] = (name, pinfo.name)
        prefixes = sorted(((a, v) for a, v in vendor_aliases.items() if len(a) >= 3),
                          key=lambda item: -len(item[0]))
        for vendor_name, globs in (data.get("purls") or {}).items():
            if vendor_name not in vendors:
                raise ValueError(f"catalogue: purls name vendor {vendor_name!r}, which is not listed")
            purl_globs.extend((str(glob).strip().lower(), vendor_name) for glob in globs or [])
        # the longest glob first: "pkg:maven/com.microsoft.azure.*" before "pkg:maven/com.microsoft.*"
        purl_globs.sort(key=lambda item: -len(item[0]))
        purl_patterns = [(re.compile(fnmatch.translate(glob)), vendor) for glob, vendor in purl_globs]
        return cls(vendors, product_aliases, vendor_aliases, ami_owners, product_patterns,
                   vendor_patterns, prefixes, purl_patterns=purl_patterns,
                   image_patterns=_image_patterns(data))


def load_catalogue_data(path: Path | None = None) -> dict[str, Any]:
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = resources.files("collectors").joinpath("data", CATALOGUE_RESOURCE).read_text(
            encoding="utf-8")
    # libyaml's loader when available: the catalogue is parsed once per process
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    if not isinstance(data, dict) or not isinstance(data.get("vendors"), list):
        raise ValueError("catalogue: expected a mapping with a 'vendors' list")
    return data


@lru_cache(maxsize=1)
def shipped_catalogue() -> Catalogue:
    """The catalogue shipped with Plan B (parsed and compiled once per process)."""
    return Catalogue.from_data(load_catalogue_data())


Match = tuple[str, "str | None"]


class Attributor:
    """Maps raw strings to ``(vendor name, product name | None)``.

    Built once per collection run from the catalogue and the database's
    ``VendorAlias`` rows; matching is pure and cached.  ``ensure_products``
    creates the vendors/products it names in the database (first match).
    """

    def __init__(self, db: so.Session | None = None, catalogue: Catalogue | None = None) -> None:
        self.catalogue = catalogue or shipped_catalogue()
        self._db_exact: dict[str, tuple[str, str | None]] = {}
        self._db_patterns: list[tuple[re.Pattern[str], str, str | None]] = []
        self._cache: dict[tuple[str, str], Match | None] = {}
        self._software_cache: dict[tuple[str, str, str], Match | None] = {}
        if db is not None:
            self._load_db_aliases(db)

    def _load_db_aliases(self, db: so.Session) -> None:
        stmt = (sa.select(VendorAlias.alias, VendorAlias.is_pattern, Vendor.name, Product.name)
                .join(Vendor, Vendor.id == VendorAlias.vendor_id)
                .outerjoin(Product, Product.id == VendorAlias.product_id)
                .order_by(VendorAlias.id))
        for alias, is_pattern, vendor, product in db.execute(stmt):
            if is_pattern:
                try:
                    self._db_patterns.append((re.compile(alias), vendor, product))
                except re.error:
                    # A bad user pattern must not stop collection; it simply never matches.
                    continue
            else:
                self._db_exact.setdefault(normalise(alias), (vendor, product))

    # -- matching ---------------------------------------------------------------------------

    def attribute(self, raw: str | None, origin: str = "publisher") -> Match | None:
        """``(vendor, product | None)`` for one raw string, or ``None`` when nothing matches."""
        if not raw or not raw.strip():
            return None
        key = (raw, origin)
        if key not in self._cache:
            self._cache[key] = self._match(raw, origin)
        return self._cache[key]

    def _match(self, raw: str, origin: str) -> Match | None:
        norm = normalise(raw)
        strip = stripped(raw)
        for form in (norm, strip):
            if form in self._db_exact:
                return self._db_exact[form]
        for pattern, vendor, product in self._db_patterns:
            if pattern.search(norm):
                return vendor, product
        cat = self.catalogue
        if origin == CONTAINER_IMAGE_ORIGIN:
            return match_container_image(cat, raw)
        if origin == PURL_ORIGIN:
            return self._match_purl(norm)
        if origin == "ami-owner" and norm in cat.ami_owners:
            return cat.ami_owners[norm]
        exact = [cat.product_aliases, cat.vendor_aliases]
        if origin in PUBLISHER_ORIGINS:
            # A publisher names an organisation: "Debian" is the vendor, not its OS product.
            exact.reverse()
        for table in exact:
            for form in (norm, strip):
                if form in table:
                    hit = table[form]
                    return hit if isinstance(hit, tuple) else (hit, None)
        for pattern, vendor, product in cat.product_patterns:
            if pattern.search(norm):
                return vendor, product
        for pattern, vendor in cat.vendor_patterns:
            if pattern.search(norm):
                return vendor, None
        if origin in PUBLISHER_ORIGINS and strip:
            for alias, vendor in cat.prefixes:
                if strip.startswith(alias) and (
                        len(strip) == len(alias) or _WORD_BOUNDARY_AFTER.match(strip[len(alias)])):
                    return vendor, None
        return None

    def _match_purl(self, norm: str) -> Match | None:
        """A package URL (``pkg:type/namespace/name``) through the catalogue's ``purls:`` globs."""
        for pattern, vendor in self.catalogue.purl_patterns:
            if pattern.match(norm):
                return vendor, None
        return None

    def product_within(self, vendor: str, name: str | None) -> str | None:
        """The catalogue product of ``vendor`` that ``name`` names, if any."""
        if not name:
            return None
        hit = self.attribute(name, "package")
        if hit and hit[0] == vendor and hit[1]:
            return hit[1]
        return None

    def attribute_software(self, name: str, publisher: str | None, origin: str = "package"
                           ) -> Match | None:
        """``(vendor, product)`` for installed software; product falls back to the raw name.

        The publisher (maintainer, extension publisher...) decides the vendor;
        the name picks one of that vendor's catalogue products, else the raw
        name becomes the product.  Without a usable publisher the name alone
        may identify a catalogue product ("falcon-sensor").
        """
        key = (name, publisher or "", origin)
        if key in self._software_cache:
            return self._software_cache[key]
        result: Match | None = None
        if origin in NAME_FIRST_ORIGINS:
            # An OS, an AMI or a marketplace image: the name says what it is
            # ("Windows_Server-2022-..." owned by Amazon is Microsoft's Windows Server).
            hit = self.attribute(name, "package")
            if hit and hit[1]:
                result = hit
        if result is None and publisher and publisher.strip():
            hit = self.attribute(publisher, "publisher" if origin not in PUBLISHER_ORIGINS else origin)
            if hit:
                vendor, product = hit
                result = (vendor, product or self.product_within(vendor, name) or _clean_name(name))
        if result is None:
            hit = self.attribute(name, origin)
            if hit:
                vendor, product = hit
                result = (vendor, product or _clean_name(name))
        self._software_cache[key] = result
        return result

    # -- database ---------------------------------------------------------------------------

    def cloud_vendor(self, provider: str) -> str | None:
        for info in self.catalogue.vendors.values():
            if info.cloud_provider == provider:
                return info.name
        return None

    def ensure_vendors(self, db: so.Session, names: Iterable[str]) -> dict[str, int]:
        """Vendor ids by (canonical) name, creating catalogue vendors on first use.

        Lookup is case-insensitive so a vendor the estate file spelled
        "Crowdstrike" is not duplicated.  Inserts ignore conflicts, so two
        collectors racing to create one vendor both succeed.
        """
        wanted = {n for n in names if n}
        if not wanted:
            return {}
        found = _vendor_ids(db, wanted)
        missing = [n for n in sorted(wanted) if n.lower() not in found]
        if missing:
            taken = set(db.scalars(sa.select(Vendor.cloud_provider)
                                   .where(Vendor.cloud_provider.is_not(None))))
            now = _now()
            rows = []
            for name in missing:
                info = self.catalogue.vendors.get(name) or VendorInfo(name=name)
                provider = info.cloud_provider if info.cloud_provider not in taken else None
                rows.append({"name": name[:200], "tier": info.tier or "medium",
                             "website": info.website, "cloud_provider": provider,
                             "has_alternative": False, "exit_plan_documented": False,
                             "created_at": now, "updated_at": now})
            insert_ignore(db, Vendor.__table__, rows, ["name"])
            found = _vendor_ids(db, wanted)
        return {n: found[n.lower()] for n in wanted if n.lower() in found}

    def ensure_products(self, db: so.Session, pairs: Iterable[tuple[str, str]]
                        ) -> dict[tuple[str, str], int]:
        """Product ids for ``(vendor, product)`` pairs, creating vendors/products as needed."""
        wanted = {(v, p[:200]) for v, p in pairs if v and p}
        if not wanted:
            return {}
        vendor_ids = self.ensure_vendors(db, {v for v, _ in wanted})

        def existing() -> dict[tuple[int, str], int]:
            result: dict[tuple[int, str], int] = {}
            for chunk in chunks(sorted(set(vendor_ids.values()))):
                for pid, vid, pname in db.execute(
                        sa.select(Product.id, Product.vendor_id, Product.name)
                        .where(Product.vendor_id.in_(chunk))):
                    result[(vid, pname)] = pid
            return result

        have = existing()
        missing = [(v, p) for v, p in sorted(wanted) if (vendor_ids[v], p) not in have]
        if missing:
            rows = []
            for vendor, product in missing:
                info = self.catalogue.vendors.get(vendor)
                pinfo = info.products.get(product) if info else None
                rows.append({"vendor_id": vendor_ids[vendor], "name": product,
                             "kind": pinfo.kind if pinfo else "application",
                             "vendor_pushes_updates": bool(pinfo and pinfo.vendor_pushes_updates)})
            insert_ignore(db, Product.__table__, rows, ["vendor_id", "name"])
            have = existing()
        return {(v, p): have[(vendor_ids[v], p)] for v, p in wanted}


# -- container images ---------------------------------------------------------------------

CONTAINER_IMAGE_ORIGIN = "container-image"
DEFAULT_REGISTRY = "docker.io"
# A tag that names a release: "v1.15.6", "1.15.6", "7.11.0-16405-1.falcon-linux.Release.US-1",
# and Linkerd's release channels ("stable-2.14.10", "enterprise-2.15.4", "edge-24.5.1").
_RELEASE_TAG = re.compile(r"^(?:stable-|enterprise-|edge-)?[vV]?(\d+(?:\.\d+)*(?:[-+._][0-9A-Za-z.+_-]*)?)$")


@dataclass(frozen=True)
class ImageReference:
    """A container image reference split the way registries read it:
    ``[registry[:port]/]repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``: what attribution matches and what an installation is named."""
        return f"{self.registry}/{self.repository}"

    @property
    def version(self) -> str | None:
        """The product's version the tag names (``v1.15.6`` → ``1.15.6``), or None: an image
        pinned only by digest, ``latest`` and other tags that name no release say nothing
        about the version, and are listed as "version unknown" rather than guessed."""
        if not self.tag:
            return None
        match = _RELEASE_TAG.match(self.tag)
        return match.group(1) if match else None


def parse_image_reference(raw: str | None) -> ImageReference | None:
    """``quay.io/cilium/cilium:v1.15.6@sha256:…`` → its parts; None when there is no name.

    As Docker and containerd read a reference: the first path component is a
    registry only when it has a dot or a port or is ``localhost``; otherwise the
    image is on Docker Hub, where a one-component name is an official image
    (``nginx`` → ``docker.io/library/nginx``).  Registry and repository are lower-cased.
    """
    text = (raw or "").strip()
    if not text:
        return None
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        digest = digest.strip() or None
    tag = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1:] or None
    parts = [p for p in text.split("/") if p]
    if not parts:
        return None
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry, path = first.lower(), parts[1:]
    else:
        registry, path = DEFAULT_REGISTRY, parts
    if registry in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and len(path) == 1:
        path = ["library", *path]
    return ImageReference(registry, "/".join(path).lower(), tag, digest)


def _image_patterns(data: dict[str, Any]) -> list[tuple[re.Pattern[str], str, str]]:
    """The catalogue's ``images`` patterns, per product (matched from the start of
    ``registry/repository``)."""
    patterns: list[tuple[re.Pattern[str], str, str]] = []
    for entry in data.get("vendors") or []:
        for product in entry.get("products") or []:
            for pattern in product.get("images") or []:
                patterns.append((re.compile(pattern), entry["name"], product["name"]))
    return patterns


def match_container_image(catalogue: Catalogue, raw: str) -> Match | None:
    """``(vendor, product)`` for a container image reference (any form: with or without
    registry, tag or digest), or None when no catalogue image pattern names it."""
    reference = parse_image_reference(raw)
    if reference is None:
        return None
    name = reference.name
    for pattern, vendor, product in catalogue.image_patterns:
        if pattern.match(name):
            return vendor, product
    return None


def _clean_name(name: str) -> str:
    return _SPACES.sub(" ", (name or "").strip())[:200] or "unknown"


def _vendor_ids(db: so.Session, names: set[str]) -> dict[str, int]:
    result: dict[str, int] = {}
    lowered = sorted({n.lower() for n in names})
    for chunk in chunks(lowered):
        for vid, vname in db.execute(sa.select(Vendor.id, Vendor.name)
                                     .where(sa.func.lower(Vendor.name).in_(chunk))):
            result.setdefault(vname.lower(), vid)
    return result


def _now():  # type: ignore[no-untyped-def]
    from inventory.db import utcnow
    return utcnow()


CHUNK = 1000


def chunks(values: list[Any] | tuple[Any, ...], size: int = CHUNK) -> Iterable[list[Any]]:
    """Slices small enough for an ``IN (...)`` list on SQLite and PostgreSQL."""
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def insert_ignore(db: so.Session, table: sa.Table, rows: list[dict[str, Any]],
                  conflict_columns: list[str]) -> None:
    """Bulk ``INSERT .. ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL)."""
    if not rows:
        return
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=conflict_columns)
    db.execute(stmt, rows)
