"""Vendor updates, their pre-production test results, and untested exposure.

An *update* is a product release or a content update (``VendorUpdate``); each
has at most one ``UpdateTest`` row per rollout ring (canary → staging →
production) holding the latest result — earlier results live in the audit
trail, which every write here records.

**Untested exposure** is an installation (on an asset that is not retired)
whose installed version is not *tested*.  A version is tested when its
``VendorUpdate`` row has a ``passed`` result in at least one pre-production
ring (any ring other than ``production``) **and no ``failed`` result in any
ring** — a version known to fail somewhere is exposure, not assurance.
Deliberately conservative, so a deployment gate errs towards red:

* an installed version with no ``VendorUpdate`` row at all counts as untested
  ("no update record") — nobody told Plan B it was tested;
* an installation with no version recorded counts as untested ("version unknown").

``ValidationError`` (an input problem naming the offending field) is shared by
the lifecycle services (updates, plans, risk) so the API can answer 422 with
the field and the CLI can print it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterable, TypeVar
from urllib.parse import urlparse

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import CRITICALITIES, PRODUCTION_RING, RINGS, TEST_STATUSES, UPDATE_KINDS
from inventory.db import utcnow
from inventory.models import Asset, Installation, Product, UpdateTest, Vendor, VendorUpdate
from inventory.ids import as_id, looks_like_id
from inventory.services import audit
from inventory.validation import text_problem

T = TypeVar("T")

# Clock skew we tolerate on "when" fields sent by pipelines before calling them future.
FUTURE_TOLERANCE = timedelta(minutes=10)


class ValidationError(ValueError):
    """Bad input for a service call; ``field`` names what to fix."""

    def __init__(self, field: str | None, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


class NotFound(LookupError):
    """The thing a caller referred to does not exist."""


# ---------------------------------------------------------------- input helpers (shared)

def clean_text(value: Any, field: str, *, max_len: int, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise ValidationError(field, f"{field} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a string")
    value = value.strip()
    if not value:
        if required:
            raise ValidationError(field, f"{field} is required")
        return None
    if len(value) > max_len:
        raise ValidationError(field, f"{field} must be at most {max_len} characters")
    problem = text_problem(value)
    if problem:
        # Refused, not silently altered: what a person typed is stored as typed or not at all.
        raise ValidationError(field, f"{field}: {problem}")
    return value


def check_http_url(value: Any, field: str) -> str | None:
    """An http(s) URL with a host, or None; anything else (javascript:, file:) is refused."""
    text = clean_text(value, field, max_len=1000)
    if text is None:
        return None
    parsed = urlparse(text)
    if parsed.scheme.lower() not in ("http", "https") or not parsed.netloc or any(c.isspace() for c in text):
        raise ValidationError(field, f"{field} must be an http:// or https:// URL")
    return text


def parse_date(value: Any, field: str, *, required: bool = False) -> date | None:
    if value is None or value == "":
        if required:
            raise ValidationError(field, f"{field} is required")
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(field, f"{field} must be a date (YYYY-MM-DD)") from None


def parse_datetime(value: Any, field: str, *, allow_future: bool = False) -> datetime | None:
    """ISO 8601 timestamp (naive = UTC); refuses the future unless allowed."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError(field, f"{field} must be an ISO 8601 timestamp") from None
    else:
        raise ValidationError(field, f"{field} must be an ISO 8601 timestamp")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        parsed = parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise ValidationError(field, f"{field} is out of range (years 1 to 9999 in UTC)") from None
    if not allow_future and parsed > utcnow() + FUTURE_TOLERANCE:
        raise ValidationError(field, f"{field} is in the future")
    return parsed


def parse_bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off", ""):
        return False
    if value is None:
        return False
    raise ValidationError(field, f"{field} must be true or false")


def choice(value: Any, field: str, allowed: Iterable[str], *, required: bool = True) -> str | None:
    allowed = tuple(allowed)
    if value is None or value == "":
        if required:
            raise ValidationError(field, f"{field} is required (one of {', '.join(allowed)})")
        return None
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise ValidationError(field, f"{field} must be one of {', '.join(allowed)}")
    return value.strip().lower()


def audit_mark(db: so.Session) -> int:
    """The newest audit event id: moves with every audited write (updates, tests, plans,
    assessments), so it keys caches of things the inventory version does not cover."""
    from inventory.models import AuditEvent

    return db.scalar(sa.select(sa.func.max(AuditEvent.id))) or 0


def cached_view(db: so.Session, name: str, compute: Callable[[], T]) -> T:
    """``compute()`` reused until the inventory (version) or anything audited (updates, test
    results) changes — for dashboard figures that scan every installation.  Shared between
    requests: do not mutate the result."""
    from inventory.services.shared_figures import shared

    return shared(db, f"updates:{name}", str(audit_mark(db)), compute)


# ---------------------------------------------------------------- lookups

def find_vendor(db: so.Session, ref: str | int) -> Vendor:
    """A vendor by id or (case-insensitive) name."""
    vendor = None
    vendor_id = as_id(ref)
    if vendor_id is not None:
        vendor = db.get(Vendor, vendor_id)
    if vendor is None and isinstance(ref, str):
        vendor = db.scalar(sa.select(Vendor).where(sa.func.lower(Vendor.name) == ref.strip().lower()))
    if vendor is None:
        raise NotFound(f"no vendor {ref!r}")
    return vendor


def find_product(db: so.Session, ref: str | int) -> Product:
    """A product by id, ``"Vendor/Product"`` or a product name that is unique."""
    if looks_like_id(ref):
        product_id = as_id(ref)
        product = db.get(Product, product_id) if product_id is not None else None
        if product is None:
            raise NotFound(f"no product with id {ref}")
        return product
    text = str(ref).strip()
    stmt = sa.select(Product).join(Vendor)
    if "/" in text:
        vendor_name, _, product_name = text.partition("/")
        stmt = stmt.where(sa.func.lower(Vendor.name) == vendor_name.strip().lower(),
                          sa.func.lower(Product.name) == product_name.strip().lower())
    else:
        stmt = stmt.where(sa.func.lower(Product.name) == text.lower())
    matches = list(db.scalars(stmt.limit(3)))
    if not matches:
        raise NotFound(f"no product {text!r} (write it as 'Vendor/Product')")
    if len(matches) > 1:
        raise NotFound(f"product name {text!r} is ambiguous; write it as 'Vendor/Product'")
    return matches[0]


_REF_RE = re.compile(r"^(?P<product>.+)@(?P<version>[^@]+)$")


def find_update(db: so.Session, ref: str | int) -> VendorUpdate:
    """An update by id or ``"Vendor/Product@version"``."""
    if looks_like_id(ref):
        update_id = as_id(ref)
        update = db.get(VendorUpdate, update_id) if update_id is not None else None
        if update is None:
            raise NotFound(f"no update with id {ref}")
        return update
    match = _REF_RE.match(str(ref).strip())
    if not match:
        raise NotFound(f"{ref!r} is neither an update id nor 'Vendor/Product@version'")
    product = find_product(db, match["product"])
    update = db.scalar(sa.select(VendorUpdate).where(VendorUpdate.product_id == product.id,
                                                     VendorUpdate.version == match["version"].strip()))
    if update is None:
        raise NotFound(f"no update {product.vendor.name}/{product.name}@{match['version'].strip()}")
    return update


# ---------------------------------------------------------------- test status of an update

@dataclass(frozen=True)
class VersionStatus:
    """What the tests of one (product, version) say."""

    update_id: int | None
    tested: bool
    reason: str  # why it is not tested ("" when tested)
    rings: dict[str, str]  # ring -> status


def summarise_tests(tests: Iterable[tuple[str, str]]) -> tuple[bool, str, dict[str, str]]:
    """(tested, reason, rings) from (ring, status) pairs; see the module docstring."""
    rings = {ring: status for ring, status in tests}
    failed = sorted(r for r, s in rings.items() if s == "failed")
    if failed:
        return False, "failed in " + ", ".join(_ring_order(failed)), rings
    passed_pre = [r for r, s in rings.items() if s == "passed" and r != PRODUCTION_RING]
    if passed_pre:
        return True, "", rings
    if not rings:
        return False, "no test recorded", rings
    if any(s == "pending" for r, s in rings.items() if r != PRODUCTION_RING):
        return False, "pre-production test pending", rings
    if rings.get(PRODUCTION_RING) == "passed":
        return False, "passed only in production (no pre-production test)", rings
    return False, "no pre-production test", rings


def _ring_order(rings: Iterable[str]) -> list[str]:
    order = {r: i for i, r in enumerate(RINGS)}
    return sorted(rings, key=lambda r: (order.get(r, len(order)), r))


def version_statuses(db: so.Session, product_ids: Iterable[int] | None = None) -> dict[tuple[int, str], VersionStatus]:
    """Test status of every recorded (product_id, version); small tables, one query."""
    stmt = (sa.select(VendorUpdate.id, VendorUpdate.product_id, VendorUpdate.version,
                      UpdateTest.ring, UpdateTest.status)
            .outerjoin(UpdateTest, UpdateTest.update_id == VendorUpdate.id))
    if product_ids is not None:
        stmt = stmt.where(VendorUpdate.product_id.in_(list(product_ids)))
    grouped: dict[tuple[int, str], tuple[int, list[tuple[str, str]]]] = {}
    for update_id, product_id, version, ring, status in db.execute(stmt):
        entry = grouped.setdefault((product_id, version), (update_id, []))
        if ring is not None:
            entry[1].append((ring, status))
    result = {}
    for key, (update_id, tests) in grouped.items():
        tested, reason, rings = summarise_tests(tests)
        result[key] = VersionStatus(update_id, tested, reason, rings)
    return result


def _tested_update_ids():  # type: ignore[no-untyped-def]
    """SQL: ids of updates that count as tested (a pre-production pass, no failure anywhere)."""
    passed = sa.select(UpdateTest.id).where(UpdateTest.update_id == VendorUpdate.id,
                                            UpdateTest.status == "passed",
                                            UpdateTest.ring != PRODUCTION_RING)
    failed = sa.select(UpdateTest.id).where(UpdateTest.update_id == VendorUpdate.id,
                                            UpdateTest.status == "failed")
    return sa.select(VendorUpdate.product_id, VendorUpdate.version).where(
        sa.exists(passed), ~sa.exists(failed))


def _untested_stmt(critical_only: bool, criticality: str | None = None):  # type: ignore[no-untyped-def]
    tested = _tested_update_ids().subquery()
    is_tested = sa.exists(sa.select(tested.c.product_id).where(
        tested.c.product_id == Installation.product_id, tested.c.version == Installation.version))
    stmt = (sa.select(Asset.id, Asset.name, Asset.natural_key, Asset.criticality, Asset.update_ring,
                      Asset.environment, Product.id, Product.name, Product.vendor_pushes_updates,
                      Vendor.id, Vendor.name, Installation.version)
            .join(Installation, Installation.asset_id == Asset.id)
            .join(Product, Product.id == Installation.product_id)
            .join(Vendor, Vendor.id == Product.vendor_id)
            .where(Asset.retired_at.is_(None), ~is_tested))
    if critical_only:
        stmt = stmt.where(Asset.criticality == "critical")
    elif criticality:
        stmt = stmt.where(Asset.criticality == criticality)
    return stmt


def untested_exposure(db: so.Session, critical_only: bool = False, *, criticality: str | None = None,
                      vendor_id: int | None = None, product_id: int | None = None,
                      tracked_only: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """Installations on versions without a passing pre-production test.

    ``tracked_only`` narrows to products with at least one recorded update (the
    products someone runs update testing for), e.g. for a focused pipeline gate.

    Rows: ``{asset_id, asset_name, natural_key, criticality, product_id, product,
    vendor, version, update_ring, reason}`` (plus ``vendor_id``, ``update_id``,
    ``environment``, ``vendor_pushes_updates``), most critical first.
    """
    wanted = "critical" if critical_only else criticality
    if limit is not None and (wanted is None or wanted in CRITICALITIES):
        from inventory.services.estate_graph import session_graph

        graph = session_graph(db)
        if graph is not None:
            return _untested_from_graph(db, graph, "critical" if critical_only else criticality, vendor_id,
                                        product_id, tracked_only, limit)
    stmt = _untested_stmt(critical_only, criticality)
    if vendor_id is not None:
        stmt = stmt.where(Vendor.id == vendor_id)
    if product_id is not None:
        stmt = stmt.where(Product.id == product_id)
    if tracked_only:
        stmt = stmt.where(sa.exists(sa.select(VendorUpdate.id).where(VendorUpdate.product_id == Product.id)))
    crit_rank = sa.case({c: i for i, c in enumerate(CRITICALITIES)}, value=Asset.criticality, else_=9)
    stmt = stmt.order_by(crit_rank, Vendor.name, Product.name, Asset.name, Asset.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = db.execute(stmt).all()
    statuses = version_statuses(db, {r[6] for r in rows}) if rows else {}
    out = []
    for (asset_id, asset_name, key, crit, ring, env, prod_id, prod_name, pushes, vend_id, vend_name,
         version) in rows:
        status = statuses.get((prod_id, version)) if version is not None else None
        if version is None:
            reason = "version unknown"
        elif status is None:
            reason = "no update record for this version"
        else:
            reason = status.reason
        out.append({"asset_id": asset_id, "asset_name": asset_name, "natural_key": key,
                    "criticality": crit, "product_id": prod_id, "product": prod_name,
                    "vendor_id": vend_id, "vendor": vend_name, "version": version,
                    "update_ring": ring, "environment": env, "reason": reason,
                    "update_id": status.update_id if status else None,
                    "vendor_pushes_updates": bool(pushes)})
    return out


def tested_versions(db: so.Session) -> set[tuple[int, str]]:
    """(product id, version) of every version that counts as tested."""
    return {key for key, status in version_statuses(db).items() if status.tested}


def _untested_from_graph(db: so.Session, graph: Any, criticality: str | None, vendor_id: int | None,
                         product_id: int | None, tracked_only: bool, limit: int) -> list[dict[str, Any]]:
    """``untested_exposure`` with a limit, from the impact engine's graph: the rows shown are
    picked from its arrays, and only their few columns the graph lacks are read."""
    from inventory.services.estate_graph import crit_names, untested_ranked

    tracked = None
    if tracked_only:
        tracked = set(db.scalars(sa.select(VendorUpdate.product_id).distinct()))
    statuses = version_statuses(db)
    tested = {key for key, status in statuses.items() if status.tested}
    picked = untested_ranked(graph, tested, limit, criticality=criticality, vendor_id=vendor_id,
                             product_id=product_id, product_ids=tracked)
    if not picked:
        return []
    ids = [int(graph.ids[i]) for i, _p, _v in picked]
    extra = {row[0]: row[1:] for row in db.execute(
        sa.select(Asset.id, Asset.update_ring, Asset.environment).where(Asset.id.in_(ids)))}
    pushes = dict(db.execute(sa.select(Product.id, Product.vendor_pushes_updates)
                             .where(Product.id.in_({p for _i, p, _v in picked}))).all())
    crits = crit_names(graph, np.array([i for i, _p, _v in picked], dtype=np.int64), db)
    out = []
    for (i, pid, version), asset_id, crit in zip(picked, ids, crits.tolist()):
        product = graph.products[pid]
        status = statuses.get((pid, version)) if version is not None else None
        if version is None:
            reason = "version unknown"
        elif status is None:
            reason = "no update record for this version"
        else:
            reason = status.reason
        ring, env = extra.get(asset_id, (None, None))
        out.append({"asset_id": asset_id, "asset_name": graph.name[i], "natural_key": graph.natural_key[i],
                    "criticality": crit, "product_id": pid, "product": product.name,
                    "vendor_id": product.vendor_id, "vendor": graph.vendors[product.vendor_id].name,
                    "version": version, "update_ring": ring, "environment": env, "reason": reason,
                    "update_id": status.update_id if status else None,
                    "vendor_pushes_updates": bool(pushes.get(pid))})
    return out


def gate_failures(db: so.Session, criticality: str = "critical", *, vendor_id: int | None = None,
                  product_id: int | None = None, tracked_only: bool = False) -> list[dict[str, Any]]:
    """The update gate: untested installations on assets of ``criticality`` or higher (the
    rows of ``untested_exposure``); empty when the gate passes.  ``planb check updates`` and
    the notification checks (``updates.gate_failed``) both ask here."""
    levels = CRITICALITIES[: CRITICALITIES.index(criticality) + 1]
    return [r for level in levels
            for r in untested_exposure(db, criticality=level, vendor_id=vendor_id, product_id=product_id,
                                       tracked_only=tracked_only)]


def untested_summary(db: so.Session) -> dict[str, Any]:
    """Counts for dashboards: untested installations and distinct assets, by criticality."""
    from inventory.services.estate_graph import crit_counts, session_graph, untested_pairs

    graph = session_graph(db)
    if graph is not None:
        pairs = untested_pairs(graph, tested_versions(db))
        by_crit: dict[str, dict[str, int]] = {}
        if pairs:
            every = np.concatenate([idx for _p, idx in pairs])
            mark = np.zeros(graph.n, dtype=bool)
            mark[every] = True
            installs = crit_counts(graph, every, db)
            assets = crit_counts(graph, np.flatnonzero(mark), db)
            by_crit = {c: {"installations": n, "assets": assets[c]} for c, n in installs.items()}
        return {"installations": sum(v["installations"] for v in by_crit.values()),
                "assets": sum(v["assets"] for v in by_crit.values()),
                "critical_assets": by_crit.get("critical", {}).get("assets", 0),
                "by_criticality": by_crit}
    sub = _untested_stmt(False).subquery()
    rows = db.execute(sa.select(sub.c.criticality, sa.func.count(), sa.func.count(sa.distinct(sub.c.id)))
                      .group_by(sub.c.criticality)).all()
    by_crit = {c: {"installations": n, "assets": a} for c, n, a in rows}
    return {"installations": sum(v["installations"] for v in by_crit.values()),
            "assets": sum(v["assets"] for v in by_crit.values()),
            "critical_assets": by_crit.get("critical", {}).get("assets", 0),
            "by_criticality": by_crit}


def exposure_by_product(db: so.Session) -> list[dict[str, Any]]:
    """Per product and installed version: installations, how many untested, and why."""
    from inventory.services.estate_graph import session_graph, version_counts

    graph = session_graph(db)
    if graph is not None:
        statuses = version_statuses(db)
        keyed = []
        for (pid, version), (n, n_crit, _per) in version_counts(graph).items():
            product = graph.products[pid]
            keyed.append(((graph.vendors[product.vendor_id].name, product.name, version is not None,
                           version or "", pid), pid, version, n, n_crit))
        # ORDER BY vendor, product, version (NULL versions sort first on SQLite, last on PostgreSQL).
        nulls_first = db.get_bind().dialect.name == "sqlite"
        keyed.sort(key=lambda r: (r[0][0], r[0][1], r[0][2] if nulls_first else not r[0][2], r[0][3]))
        rows = []
        for key, pid, version, n, n_crit in keyed:
            status = statuses.get((pid, version)) if version is not None else None
            rows.append((key[0], pid, key[1], version, n, n_crit, bool(status is not None and status.tested)))
    else:
        rows = None
    if rows is not None:
        return _by_product_rows(db, rows)
    tested = _tested_update_ids().subquery()
    is_tested = sa.exists(sa.select(tested.c.product_id).where(
        tested.c.product_id == Installation.product_id, tested.c.version == Installation.version))
    crit = sa.func.sum(sa.case((Asset.criticality == "critical", 1), else_=0))
    # Group by installations.product_id (not products.id): PostgreSQL requires the
    # column the correlated EXISTS uses to be grouped itself.
    stmt = (sa.select(Vendor.name, Installation.product_id, Product.name, Installation.version,
                      sa.func.count(), crit, is_tested.label("tested"))
            .select_from(Installation)
            .join(Asset, Asset.id == Installation.asset_id)
            .join(Product, Product.id == Installation.product_id)
            .join(Vendor, Vendor.id == Product.vendor_id)
            .where(Asset.retired_at.is_(None))
            .group_by(Vendor.name, Installation.product_id, Product.name, Installation.version)
            .order_by(Vendor.name, Product.name, Installation.version))
    return _by_product_rows(db, db.execute(stmt).all())


def _by_product_rows(db: so.Session, rows: Any) -> list[dict[str, Any]]:
    statuses = version_statuses(db, {r[1] for r in rows}) if rows else {}
    out = []
    for vendor, prod_id, prod, version, n, n_crit, is_ok in rows:
        status = statuses.get((prod_id, version)) if version is not None else None
        if is_ok:
            reason = ""
        elif version is None:
            reason = "version unknown"
        elif status is None:
            reason = "no update record for this version"
        else:
            reason = status.reason
        out.append({"vendor": vendor, "product_id": prod_id, "product": prod, "version": version,
                    "installations": n, "critical": int(n_crit or 0), "tested": bool(is_ok),
                    "reason": reason, "update_id": status.update_id if status else None,
                    "rings": status.rings if status else {}})
    return out


def ring_summary(db: so.Session) -> list[dict[str, Any]]:
    """Which assets are in which rollout ring: counts per ring (``None`` = not assigned)."""
    crit = sa.func.sum(sa.case((Asset.criticality == "critical", 1), else_=0))
    rows = db.execute(sa.select(Asset.update_ring, sa.func.count(), crit)
                      .where(Asset.retired_at.is_(None)).group_by(Asset.update_ring)).all()
    order = {r: i for i, r in enumerate(RINGS)}
    rows = sorted(rows, key=lambda r: (r[0] is None, order.get(r[0] or "", 99), r[0] or ""))
    return [{"ring": ring, "assets": n, "critical": int(c or 0)} for ring, n, c in rows]


def assets_in_ring(db: so.Session, ring: str | None, limit: int = 200) -> list[dict[str, Any]]:
    cond = Asset.update_ring.is_(None) if ring is None else Asset.update_ring == ring
    stmt = (sa.select(Asset.id, Asset.name, Asset.natural_key, Asset.criticality, Asset.environment)
            .where(Asset.retired_at.is_(None), cond).order_by(Asset.name).limit(limit))
    return [{"asset_id": i, "name": n, "natural_key": k, "criticality": c, "environment": e}
            for i, n, k, c, e in db.execute(stmt)]


def vendor_pushed_products(db: so.Session, vendor_id: int | None = None) -> list[dict[str, Any]]:
    """Products whose vendor pushes updates/content outside customer control — a risk in its
    own right, whatever the test results say, because the customer's rings are bypassed."""
    pushed_update = sa.exists(sa.select(VendorUpdate.id).where(
        VendorUpdate.product_id == Product.id, VendorUpdate.vendor_pushed.is_(True)))
    stmt = (sa.select(Product, Vendor.name).join(Vendor)
            .where(sa.or_(Product.vendor_pushes_updates.is_(True), pushed_update))
            .order_by(Vendor.name, Product.name))
    if vendor_id is not None:
        stmt = stmt.where(Vendor.id == vendor_id)
    products = db.execute(stmt).all()
    if not products:
        return []
    ids = [p.id for p, _ in products]
    from inventory.services.estate_graph import session_graph, version_counts

    graph = session_graph(db)
    crit = sa.func.sum(sa.case((Asset.criticality == "critical", 1), else_=0))
    if graph is not None:
        per_product: dict[int, tuple[int, int]] = {}
        for (pid, _v), (n, n_crit, _per) in version_counts(graph).items():
            old = per_product.get(pid, (0, 0))
            per_product[pid] = (old[0] + n, old[1] + n_crit)
        counts = {pid: per_product[pid] for pid in ids if pid in per_product}
    else:
        counts = {pid: (n, int(c or 0)) for pid, n, c in db.execute(
            sa.select(Installation.product_id, sa.func.count(), crit)
            .join(Asset, Asset.id == Installation.asset_id)
            .where(Asset.retired_at.is_(None), Installation.product_id.in_(ids))
            .group_by(Installation.product_id))}
    pushed: dict[int, list[VendorUpdate]] = {}
    for update in db.scalars(sa.select(VendorUpdate).where(VendorUpdate.product_id.in_(ids),
                                                           VendorUpdate.vendor_pushed.is_(True))
                             .order_by(VendorUpdate.released_on.desc(), VendorUpdate.id.desc())):
        pushed.setdefault(update.product_id, []).append(update)
    out = []
    for product, vendor_name in products:
        n, n_crit = counts.get(product.id, (0, 0))
        ups = pushed.get(product.id, [])
        why = []
        if product.vendor_pushes_updates:
            why.append("vendor pushes updates/content without customer staging")
        if ups:
            why.append(f"{len(ups)} vendor-pushed update(s) recorded")
        out.append({"vendor_id": product.vendor_id, "vendor": vendor_name, "product_id": product.id,
                    "product": product.name, "kind": product.kind,
                    "vendor_pushes_updates": product.vendor_pushes_updates,
                    "pushed_updates": [{"id": u.id, "version": u.version, "kind": u.kind,
                                        "released_on": u.released_on} for u in ups],
                    "installations": n, "critical_installations": n_crit,
                    "reason": "; ".join(why)})
    return out


# ---------------------------------------------------------------- listing

def update_to_dict(update: VendorUpdate) -> dict[str, Any]:
    tested, reason, rings = summarise_tests((t.ring, t.status) for t in update.tests)
    return {
        "id": update.id,
        "vendor": update.product.vendor.name,
        "product_id": update.product_id,
        "product": update.product.name,
        "version": update.version,
        "ref": f"{update.product.vendor.name}/{update.product.name}@{update.version}",
        "released_on": update.released_on.isoformat() if update.released_on else None,
        "kind": update.kind,
        "vendor_pushed": update.vendor_pushed,
        "notes": update.notes,
        "tested": tested,
        "untested_reason": reason,
        "tests": [test_to_dict(t) for t in sorted(update.tests, key=lambda t: _ring_order([t.ring])[0])
                  ] if update.tests else [],
        "rings": rings,
    }


def test_to_dict(test: UpdateTest) -> dict[str, Any]:
    return {"id": test.id, "update_id": test.update_id, "ring": test.ring, "status": test.status,
            "tested_by": test.tested_by,
            "tested_at": test.tested_at.isoformat() if test.tested_at else None,
            "evidence_url": test.evidence_url, "notes": test.notes}


def list_updates(db: so.Session, *, vendor_id: int | None = None, product_id: int | None = None,
                 limit: int = 500) -> list[VendorUpdate]:
    stmt = (sa.select(VendorUpdate).join(Product).join(Vendor)
            .options(so.selectinload(VendorUpdate.tests),
                     so.joinedload(VendorUpdate.product).joinedload(Product.vendor))
            .order_by(Vendor.name, Product.name, VendorUpdate.released_on.desc().nulls_last(),
                      VendorUpdate.id.desc())
            .limit(limit))
    if vendor_id is not None:
        stmt = stmt.where(Vendor.id == vendor_id)
    if product_id is not None:
        stmt = stmt.where(Product.id == product_id)
    return list(db.scalars(stmt).unique())


def installed_counts(db: so.Session, updates: Iterable[VendorUpdate]) -> dict[int, dict[str, int]]:
    """Per update id: how many live assets run exactly that version (and how many critical)."""
    updates = list(updates)
    if not updates:
        return {}
    by_key = {(u.product_id, u.version): u.id for u in updates}
    from inventory.services.estate_graph import session_graph, version_counts

    graph = session_graph(db)
    if graph is not None:
        counts = version_counts(graph)
        return {uid: {"assets": counts[key][0], "critical": counts[key][1]}
                for key, uid in by_key.items() if key in counts}
    crit = sa.func.sum(sa.case((Asset.criticality == "critical", 1), else_=0))
    rows = db.execute(sa.select(Installation.product_id, Installation.version, sa.func.count(), crit)
                      .join(Asset, Asset.id == Installation.asset_id)
                      .where(Asset.retired_at.is_(None),
                             Installation.product_id.in_({u.product_id for u in updates}))
                      .group_by(Installation.product_id, Installation.version)).all()
    out: dict[int, dict[str, int]] = {}
    for pid, version, n, c in rows:
        uid = by_key.get((pid, version))
        if uid is not None:
            out[uid] = {"assets": n, "critical": int(c or 0)}
    return out


# ---------------------------------------------------------------- writes

def create_update(db: so.Session, *, actor: str, product: str | int | Product, version: Any,
                  released_on: Any = None, kind: Any = "patch", vendor_pushed: Any = False,
                  notes: Any = None) -> VendorUpdate:
    """Record a vendor update; refuses a duplicate (product, version)."""
    if not isinstance(product, Product):
        try:
            product = find_product(db, product)
        except NotFound as exc:
            raise ValidationError("product", str(exc)) from None
    version_text = clean_text(version, "version", max_len=100, required=True)
    released = parse_date(released_on, "released_on")
    kind_value = choice(kind or "patch", "kind", UPDATE_KINDS)
    pushed = parse_bool(vendor_pushed, "vendor_pushed")
    notes_text = clean_text(notes, "notes", max_len=10_000)
    exists = db.scalar(sa.select(VendorUpdate.id).where(VendorUpdate.product_id == product.id,
                                                        VendorUpdate.version == version_text))
    if exists is not None:
        raise ValidationError("version", f"{product.vendor.name}/{product.name}@{version_text} is "
                              f"already recorded (update #{exists})", status=409)
    update = VendorUpdate(product_id=product.id, version=version_text, released_on=released,
                          kind=kind_value, vendor_pushed=pushed, notes=notes_text)
    db.add(update)
    db.flush()
    audit.record(db, actor=actor, action="create", entity_type="vendor_update", entity_id=update.id,
                 summary=f"recorded update {product.vendor.name}/{product.name}@{version_text}",
                 after=audit.snapshot(update))
    return update


def record_test(db: so.Session, *, actor: str, update: VendorUpdate, ring: Any, status: Any,
                tested_by: Any = None, tested_at: Any = None, evidence_url: Any = None,
                notes: Any = None) -> tuple[UpdateTest, bool]:
    """Upsert the (update, ring) result; returns (row, created).  History is in the audit trail."""
    ring_value = choice(ring, "ring", RINGS)
    status_value = choice(status, "status", TEST_STATUSES)
    by = clean_text(tested_by, "tested_by", max_len=200) or actor
    at = parse_datetime(tested_at, "tested_at")
    if at is None and status_value != "pending":
        at = utcnow()
    evidence = check_http_url(evidence_url, "evidence_url")
    notes_text = clean_text(notes, "notes", max_len=10_000)
    test = db.scalar(sa.select(UpdateTest).where(UpdateTest.update_id == update.id,
                                                 UpdateTest.ring == ring_value))
    created = test is None
    before = None if created else audit.snapshot(test)
    if created:
        test = UpdateTest(update_id=update.id, ring=ring_value)
        db.add(test)
    test.status = status_value
    test.tested_by = by
    test.tested_at = at
    test.evidence_url = evidence
    test.notes = notes_text
    db.flush()
    ref = f"{update.product.vendor.name}/{update.product.name}@{update.version}"
    audit.record(db, actor=actor, action="record-test", entity_type="update_test", entity_id=test.id,
                 summary=f"{ref} {ring_value}: {status_value}", before=before,
                 after=audit.snapshot(test))
    return test, created
