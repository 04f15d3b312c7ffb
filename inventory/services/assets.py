"""Asset list and detail queries for the dashboard (and anything else that lists assets).

The list is built for estates of 100k+ assets: filters map to indexed columns,
sorting is restricted to an allow-list of orders that follow an index, pages
are fetched by keyset (see ``inventory.services.keyset``), and the match count
is capped so it never scans the whole table on every page load.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import (ASSET_KINDS, CRITICALITIES, ENVIRONMENTS, OS_FAMILIES, PROVIDERS,
                               SERVICE_KIND)
from inventory.models import (Asset, AuditEvent, ContingencyPlan, Dependency, Installation,
                              PlanLink, Product, ScopeResult, ScopeState, UnattributedSoftware, Vendor)
from inventory.services.keyset import Page, Segment, paginate
from inventory.models.plan_status import plan_status, review_due

DEFAULT_PAGE_SIZE = 50
PAGE_SIZES = (25, 50, 100, 200)
# Counting stops here: "10,000+ assets" is as useful as the exact figure and stays cheap.
COUNT_CAP = 10_000
RETIRED_CHOICES = ("active", "retired", "all")


class FilterError(ValueError):
    """A filter value that cannot be used; ``field`` names the form field."""

    def __init__(self, field: str, message: str, suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.suggestions = suggestions or []


def describe(error: FilterError) -> str:
    """One line naming the parameter, what is wrong and what it accepts (for the 400 page)."""
    text = f"{error.field}: {error.message}"
    return f"{text}; one of: {', '.join(error.suggestions)}" if error.suggestions else text


def check_query(args: Any, known: Mapping[str, Any], repeatable: Collection[str] = ()) -> list[FilterError]:
    """Query parameters a page does not read, or reads once but got twice with different values.

    ``args`` is a request's ``MultiDict``; ``known`` maps each parameter the page reads to its
    accepted values (a tuple), or to ``None`` for free text / values the page checks itself;
    ``repeatable`` names the list parameters a page reads every value of.
    An empty value means "any" (the filter forms submit every field) and is always accepted.
    Nothing is dropped or replaced: the caller refuses the request when this returns errors.
    """
    errors: list[FilterError] = []
    for name in args:
        if name not in known:
            errors.append(FilterError(name, f"unknown parameter {name!r}; this page reads "
                                            + (", ".join(sorted(known)) or "no parameters")))
            continue
        values = {v for v in args.getlist(name)}
        if len(values) > 1 and name not in repeatable:
            errors.append(FilterError(name, f"{name} given {len(args.getlist(name))} times with different "
                                            f"values ({', '.join(sorted(map(repr, values)))}); give it once"))
            continue
        value = args.get(name) or ""
        allowed = known[name]
        if value and allowed is not None and value not in allowed:
            errors.append(FilterError(name, f"unknown {name} {value!r}", [str(a) for a in allowed]))
    return errors


def parse_page_size(value: str | None) -> int:
    """``per_page`` → one of PAGE_SIZES (absent or empty → the default); anything else raises FilterError."""
    if value is None or value.strip() == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(value.strip())
    except ValueError:
        size = None
    if size not in PAGE_SIZES:
        raise FilterError("per_page", f"per_page must be a whole number of rows, not {value!r}"
                          if size is None else f"per_page {size} is not offered",
                          [str(n) for n in PAGE_SIZES])
    return size


# ---------------------------------------------------------------- sorting

def _ranked(column: Any, ranking: tuple[str, ...], descending: bool) -> list[Segment]:
    """One segment per ranked value (then everything else), each in name order."""
    values = list(reversed(ranking)) if descending else list(ranking)
    segments = [Segment(column == value, (Asset.name, Asset.id)) for value in values]
    segments.append(Segment(sa.or_(column.is_(None), column.not_in(ranking)), (Asset.name, Asset.id)))
    return segments


def _nullable(column: Any, descending: bool) -> list[Segment]:
    """Known values in index order, then unknown (NULL) ones by id — same on both backends."""
    return [Segment(column.is_not(None), (column, Asset.id), descending),
            Segment(column.is_(None), (Asset.id,), descending)]


# key -> (label, segments(descending)).  Every order follows an index:
# name (ix on name), kind+name (ix_assets_kind_name), os/environment/account
# (single-column indexes; SQLite appends the rowid = id to every index entry).
SORTS: dict[str, tuple[str, Any]] = {
    "name": ("Name", lambda d: [Segment(None, (Asset.name, Asset.id), d)]),
    "kind": ("Kind", lambda d: [Segment(None, (Asset.kind, Asset.name, Asset.id), d)]),
    "criticality": ("Criticality", lambda d: _ranked(Asset.criticality, CRITICALITIES, d)),
    "os": ("OS", lambda d: _nullable(Asset.os_family, d)),
    "environment": ("Environment", lambda d: _nullable(Asset.environment, d)),
    "account": ("Account", lambda d: _nullable(Asset.account, d)),
}
DEFAULT_SORT = "name"


def parse_sort(value: str | None) -> tuple[str, bool]:
    """``"name"`` / ``"-name"`` → (key, descending); unknown keys raise FilterError."""
    value = (value or DEFAULT_SORT).strip()
    descending = value.startswith("-")
    key = value.lstrip("-")
    if key not in SORTS:
        raise FilterError("sort", f"cannot sort by {key!r}", sorted(SORTS))
    return key, descending


# ---------------------------------------------------------------- filters

@dataclass
class AssetFilters:
    """What the asset list is narrowed to; empty strings mean "any"."""

    q: str = ""
    provider: str = ""
    account: str = ""
    region: str = ""
    os: str = ""
    kind: str = ""
    environment: str = ""
    criticality: str = ""
    vendor: str = ""
    retired: str = "active"
    # Resolved from ``vendor`` by ``validate``.
    vendor_id: int | None = field(default=None, repr=False)
    vendor_provider: str | None = field(default=None, repr=False)
    vendor_installations: int = field(default=0, repr=False)
    vendor_product_ids: list[int] = field(default_factory=list, repr=False)

    FORM_FIELDS = ("q", "provider", "account", "region", "os", "kind", "environment",
                   "criticality", "vendor", "retired")

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> "AssetFilters":
        values = {name: (args.get(name) or "").strip()[:300] for name in cls.FORM_FIELDS}
        values["retired"] = values["retired"] or "active"
        return cls(**values)

    def as_args(self) -> dict[str, str]:
        """The non-default filters, for links that keep them (pagination, sorting, export)."""
        args = {name: getattr(self, name) for name in self.FORM_FIELDS if getattr(self, name)}
        if args.get("retired") == "active":
            del args["retired"]
        return args

    def validate(self, db: so.Session) -> list[FilterError]:
        """Check enumerated values and resolve the vendor; returns the problems (empty if none)."""
        errors: list[FilterError] = []
        for name, allowed in (("provider", PROVIDERS), ("os", OS_FAMILIES), ("kind", ASSET_KINDS),
                              ("environment", ENVIRONMENTS), ("criticality", CRITICALITIES),
                              ("retired", RETIRED_CHOICES)):
            value = getattr(self, name)
            if value and value not in allowed:
                errors.append(FilterError(name, f"unknown {name} {value!r}",
                                          difflib.get_close_matches(value, allowed, n=3) or list(allowed)))
        if self.vendor:
            vendor = find_vendor(db, self.vendor)
            if vendor is None:
                errors.append(FilterError("vendor", f"no vendor named {self.vendor!r}",
                                          suggest_vendors(db, self.vendor)))
            else:
                self.set_vendor(db, vendor)
        return errors

    def set_vendor(self, db: so.Session, vendor: Vendor) -> None:
        self.vendor, self.vendor_id, self.vendor_provider = vendor.name, vendor.id, vendor.cloud_provider
        # The product ids as literals: the per-asset probe is then one lookup in the
        # (asset_id, product_id) unique index, and the planner sees real statistics.
        self.vendor_product_ids = list(db.scalars(sa.select(Product.id).where(Product.vendor_id == vendor.id)))
        # How widely installed the vendor is decides the query shape (see vendor_asset_condition);
        # a covering-index count, a few milliseconds even for a vendor on most hosts.
        self.vendor_installations = db.scalar(
            sa.select(sa.func.count()).select_from(Installation)
            .where(Installation.product_id.in_(self.vendor_product_ids or [-1]))) or 0

    @property
    def active(self) -> bool:
        return bool(self.as_args())


def find_vendor(db: so.Session, name: str) -> Vendor | None:
    name = name.strip()
    vendor = db.scalar(sa.select(Vendor).where(Vendor.name == name))
    if vendor is None:
        vendor = db.scalar(sa.select(Vendor).where(sa.func.lower(Vendor.name) == name.lower()))
    return vendor


def suggest_vendors(db: so.Session, name: str, n: int = 5) -> list[str]:
    names = list(db.scalars(sa.select(Vendor.name)))
    lowered = {v.lower(): v for v in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    contains = [v for v in names if name.lower() in v.lower()]
    return list(dict.fromkeys([lowered[c] for c in close] + contains))[:n]


def vendor_names(db: so.Session) -> list[str]:
    return list(db.scalars(sa.select(Vendor.name).order_by(Vendor.name)))


# Above this many installations a vendor is "popular" and its assets are found by walking the
# list in sort order with a per-row EXISTS probe (stops after one page); below it, by collecting
# the vendor's few assets first (IN) and sorting them.  Either way the query stays an index walk.
POPULAR_VENDOR_INSTALLATIONS = 2000


def vendor_asset_condition(product_ids: list[int], cloud_provider: str | None,
                           popular: bool = False) -> sa.ColumnElement[bool]:
    """Assets that use a vendor: software of its products installed, or hosted on its cloud."""
    of_vendor = sa.select(Installation.asset_id).where(Installation.product_id.in_(product_ids or [-1]))
    if popular:
        installed = sa.exists(of_vendor.where(Installation.asset_id == Asset.id))
    else:
        installed = Asset.id.in_(of_vendor)
    if cloud_provider:
        return sa.or_(installed, Asset.provider == cloud_provider)
    return installed


def _where(filters: AssetFilters, dialect: str) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.q:
        q = filters.q
        if dialect == "sqlite":
            # SQLite's LIKE already ignores ASCII case; lower() on 100k rows would only cost time.
            conditions.append(sa.or_(*(column.contains(q, autoescape=True)
                                       for column in (Asset.name, Asset.natural_key, Asset.hostname))))
        else:
            conditions.append(sa.or_(*(column.icontains(q, autoescape=True)
                                       for column in (Asset.name, Asset.natural_key, Asset.hostname))))
    for name, column in (("provider", Asset.provider), ("account", Asset.account),
                         ("region", Asset.region), ("os", Asset.os_family), ("kind", Asset.kind),
                         ("environment", Asset.environment), ("criticality", Asset.criticality)):
        value = getattr(filters, name)
        if value:
            conditions.append(column == value)
    if filters.vendor_id is not None:
        conditions.append(vendor_asset_condition(
            filters.vendor_product_ids, filters.vendor_provider,
            popular=filters.vendor_installations > POPULAR_VENDOR_INSTALLATIONS))
    if filters.retired == "active":
        active = Asset.retired_at.is_(None)
        # Nearly every asset is active, but without statistics SQLite would take the
        # retired_at index for this test and then sort everything; likely() tells it
        # the test is not selective, so it walks the sort-order index instead.
        conditions.append(sa.func.likely(active) if dialect == "sqlite" else active)
    elif filters.retired == "retired":
        conditions.append(Asset.retired_at.is_not(None))
    return conditions


# ---------------------------------------------------------------- list

def _key_of(row: Any, segment: Segment) -> list[Any]:
    asset = row[0]
    return [getattr(asset, column.key) for column in segment.columns]


def list_assets(db: so.Session, filters: AssetFilters, sort: str = DEFAULT_SORT, *,
                cursor: str | None = None, limit: int = DEFAULT_PAGE_SIZE) -> Page:
    """One page of assets (``page.rows`` are Asset objects).  Raises FilterError / CursorError."""
    key, descending = parse_sort(sort)
    segments = SORTS[key][1](descending)
    base = sa.select(Asset).where(*_where(filters, _dialect(db)))
    page = paginate(db, base, segments, limit=limit, cursor=cursor, key_of=_key_of)
    page.rows = [row[0] for row in page.rows]
    return page


def _dialect(db: so.Session) -> str:
    return db.get_bind().dialect.name


def count_assets(db: so.Session, filters: AssetFilters, cap: int = COUNT_CAP) -> tuple[int, bool]:
    """How many assets match, counting at most ``cap + 1``: returns (count, capped)."""
    inner = sa.select(Asset.id).where(*_where(filters, _dialect(db))).limit(cap + 1).subquery()
    count = db.scalar(sa.select(sa.func.count()).select_from(inner)) or 0
    return min(count, cap), count > cap


def distinct_values(db: so.Session, column_name: str, limit: int = 500) -> list[str]:
    """Values for a filter's suggestions (accounts, regions), read from an index."""
    column = {"account": Asset.account, "region": Asset.region}[column_name]
    stmt = sa.select(column).where(column.is_not(None)).distinct().order_by(column).limit(limit)
    return list(db.scalars(stmt))


# ---------------------------------------------------------------- detail

RELATION_LIMIT = 100


@dataclass
class PlanRef:
    plan: ContingencyPlan
    status: str
    via: str
    review_due: Any


def plans_for_asset(db: so.Session, asset: Asset, product_ids: list[int],
                    vendor_ids: list[int]) -> list[PlanRef]:
    """Plans linked to the asset itself, to a product it runs or to one of those vendors."""
    conditions = [PlanLink.asset_id == asset.id]
    if product_ids:
        conditions.append(PlanLink.product_id.in_(product_ids))
    if vendor_ids:
        conditions.append(PlanLink.vendor_id.in_(vendor_ids))
    links = db.execute(
        sa.select(PlanLink, ContingencyPlan).join(ContingencyPlan, ContingencyPlan.id == PlanLink.plan_id)
        .where(sa.or_(*conditions)).order_by(ContingencyPlan.name)).all()
    refs: dict[int, PlanRef] = {}
    for link, plan in links:
        if link.asset_id is not None:
            via = "this asset"
        elif link.product_id is not None:
            via = "product"
        else:
            via = "vendor"
        if plan.id not in refs:
            refs[plan.id] = PlanRef(plan, plan_status(plan), via, review_due(plan))
    return list(refs.values())


def asset_detail(db: so.Session, asset_id: int) -> dict[str, Any] | None:
    """Everything the asset page shows, or None when there is no such asset."""
    asset = db.get(Asset, asset_id)
    if asset is None:
        return None
    installations = db.execute(
        sa.select(Installation, Product, Vendor)
        .join(Product, Product.id == Installation.product_id)
        .join(Vendor, Vendor.id == Product.vendor_id)
        .where(Installation.asset_id == asset.id)
        .order_by(Vendor.name, Product.name)).all()

    dependency = so.aliased(Asset)
    depends_on = db.execute(
        sa.select(Dependency, dependency).join(dependency, dependency.id == Dependency.dependency_id)
        .where(Dependency.dependent_id == asset.id)
        .order_by(dependency.name, dependency.id).limit(RELATION_LIMIT)).all()
    depends_on_total = db.scalar(sa.select(sa.func.count()).select_from(Dependency)
                                 .where(Dependency.dependent_id == asset.id)) or 0

    dependent = so.aliased(Asset)
    depended_by = db.execute(
        sa.select(Dependency, dependent).join(dependent, dependent.id == Dependency.dependent_id)
        .where(Dependency.dependency_id == asset.id)
        .order_by(dependent.name, dependent.id).limit(RELATION_LIMIT)).all()
    depended_by_total = db.scalar(sa.select(sa.func.count()).select_from(Dependency)
                                  .where(Dependency.dependency_id == asset.id)) or 0

    vendor_ids = sorted({v.id for _i, _p, v in installations})
    hosting_vendor = None
    if asset.provider:
        hosting_vendor = db.scalar(sa.select(Vendor).where(Vendor.cloud_provider == asset.provider))
        if hosting_vendor is not None and hosting_vendor.id not in vendor_ids:
            vendor_ids.append(hosting_vendor.id)
    plans = plans_for_asset(db, asset, [p.id for _i, p, _v in installations], vendor_ids)

    history: list[ScopeResult] = []
    # The scope's latest state; ``history`` holds the runs over it that did not succeed.
    scope_state = db.get(ScopeState, asset.source_scope) if asset.source_scope else None
    if asset.source_scope:
        history = list(db.scalars(
            sa.select(ScopeResult).where(ScopeResult.scope_key == asset.source_scope)
            .order_by(ScopeResult.finished_at.desc(), ScopeResult.id.desc()).limit(10)))
    unattributed = list(db.scalars(
        sa.select(UnattributedSoftware).where(UnattributedSoftware.asset_id == asset.id)
        .order_by(UnattributedSoftware.publisher, UnattributedSoftware.name).limit(RELATION_LIMIT)))
    audit_events = list(db.scalars(
        sa.select(AuditEvent).where(AuditEvent.entity_type == "asset",
                                    AuditEvent.entity_id == str(asset.id))
        .order_by(AuditEvent.id.desc()).limit(20)))
    provenance = sorted((asset.provenance or {}).items())
    return {
        "asset": asset,
        "is_service": asset.kind == SERVICE_KIND,
        "installations": installations,
        "depends_on": depends_on,
        "depends_on_total": depends_on_total,
        "depended_by": depended_by,
        "depended_by_total": depended_by_total,
        "hosting_vendor": hosting_vendor,
        "plans": plans,
        "history": history,
        "scope_state": scope_state,
        "unattributed": unattributed,
        "audit_events": audit_events,
        "provenance": provenance,
        "tags": sorted((asset.tags or {}).items()),
        "attributes": sorted((asset.attributes or {}).items()),
    }

