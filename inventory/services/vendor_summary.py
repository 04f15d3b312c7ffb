"""Vendor list and vendor page figures for the dashboard.

Per vendor: tier, products, how many (active) assets use it — software of its
products installed, or hosted on its cloud —, its concentration (share of the
critical assets that use it), its latest assessment and when the next review
is due.  The vendor risk service (``inventory.services.risk``) counts
concentration across every route (EDR agent, hosting cloud, identity…) on the
risk review page; the direct-use share computed here is what the dashboard
shows (see ``concentration``).
"""
from __future__ import annotations

import hashlib
import logging
from datetime import date
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import utcnow
from inventory.models import (Asset, Installation, Product, UpdateTest, Vendor, VendorAssessment,
                              VendorUpdate)
from inventory.services.cache import cached

log = logging.getLogger(__name__)


def _direct_use_counts(db: so.Session) -> dict[int, tuple[int, int]]:
    """vendor id -> (active assets using it, critical active assets using it)."""
    from inventory.services.estate_graph import direct_use_counts, session_graph

    graph = session_graph(db)
    if graph is not None:
        from inventory.services.estate_graph import on_graph
        from inventory.services.shared_figures import shared

        # Computed once per inventory version for every worker (page_figures), as JSON rows.
        rows = shared(db, "vendors:direct-use", "", lambda: [[vid, n, c] for vid, (n, c)
                                                              in sorted(direct_use_counts(graph).items())])
        return on_graph(graph, "direct_use_dict", lambda: {vid: (n, c) for vid, n, c in rows})

    def compute() -> dict[int, tuple[int, int]]:
        crit = sa.func.count(sa.distinct(sa.case((Asset.criticality == "critical", Asset.id))))
        rows = db.execute(
            sa.select(Product.vendor_id, sa.func.count(sa.distinct(Asset.id)), crit)
            .select_from(Installation)
            .join(Product, Product.id == Installation.product_id)
            .join(Asset, Asset.id == Installation.asset_id)
            .where(Asset.retired_at.is_(None))
            .group_by(Product.vendor_id)).all()
        counts = {vid: (int(n), int(c)) for vid, n, c in rows}
        # Cloud vendors: every asset hosted on their provider uses them.
        hosted = dict(db.execute(sa.select(Vendor.cloud_provider, Vendor.id)
                                 .where(Vendor.cloud_provider.is_not(None))).all())
        if hosted:
            crit_h = sa.func.sum(sa.case((Asset.criticality == "critical", 1), else_=0))
            for provider, n, c in db.execute(
                    sa.select(Asset.provider, sa.func.count(), crit_h)
                    .where(Asset.retired_at.is_(None), Asset.provider.in_(list(hosted)))
                    .group_by(Asset.provider)).all():
                vid = hosted[provider]
                # Installed-and-hosted overlaps are rare (a cloud agent); hosting dominates.
                old = counts.get(vid, (0, 0))
                counts[vid] = (max(old[0], int(n)), max(old[1], int(c or 0)))
        return counts
    return cached(db, "vendor-direct-use", compute)


def critical_asset_total(db: so.Session) -> int:
    from inventory.services.estate_graph import critical_total, session_graph

    graph = session_graph(db)
    if graph is not None:
        return critical_total(graph)
    return cached(db, "critical-total", lambda: db.scalar(
        sa.select(sa.func.count()).select_from(Asset)
        .where(Asset.retired_at.is_(None), Asset.criticality == "critical")) or 0)


def concentration(db: so.Session) -> tuple[dict[int, dict[str, Any]], str]:
    """vendor id -> {"share", "critical_assets", "routes"} and where the figures came from.

    The dashboard uses *direct use* — critical assets that run the vendor's
    software or are hosted on its cloud — because it is one cached scan.  The
    risk service's route-aware figure (``risk.vendor_concentration``: also
    through dependencies, identity providers…) walks the whole estate and takes
    seconds at 100k assets, so it belongs on the risk review page, not here.
    """
    total = critical_asset_total(db)
    counts = _direct_use_counts(db)
    return ({vid: {"share": (c / total) if total else None, "critical_assets": c, "routes": None}
             for vid, (_n, c) in counts.items()}, "direct")


def _latest_assessments(db: so.Session, vendor_ids: list[int] | None = None) -> dict[int, VendorAssessment]:
    latest = (sa.select(VendorAssessment.vendor_id, sa.func.max(VendorAssessment.assessed_on).label("on"))
              .group_by(VendorAssessment.vendor_id).subquery())
    stmt = sa.select(VendorAssessment).join(
        latest, sa.and_(latest.c.vendor_id == VendorAssessment.vendor_id,
                        latest.c.on == VendorAssessment.assessed_on))
    if vendor_ids is not None:
        stmt = stmt.where(VendorAssessment.vendor_id.in_(vendor_ids))
    return {a.vendor_id: a for a in db.scalars(stmt)}


def assessment_score(assessment: VendorAssessment | None) -> float | None:
    """Mean of the domain scores that were given (0 poor … 5 excellent)."""
    if assessment is None:
        return None
    scores = [s for s in (assessment.score_security, assessment.score_update_practices,
                          assessment.score_resilience, assessment.score_compliance) if s is not None]
    return sum(scores) / len(scores) if scores else None


def review_state(due: date | None, today: date | None = None) -> str:
    """never / overdue / due soon (30 days) / scheduled."""
    today = today or utcnow().date()
    if due is None:
        return "never"
    if due < today:
        return "overdue"
    if (due - today).days <= 30:
        return "due soon"
    return "scheduled"


TIER_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def vendor_rows(db: so.Session) -> dict[str, Any]:
    """Rows for the vendor list, most concentrated first."""
    vendors = list(db.scalars(sa.select(Vendor).order_by(Vendor.name)))
    products = dict(db.execute(sa.select(Product.vendor_id, sa.func.count())
                               .group_by(Product.vendor_id)).all())
    uses = _direct_use_counts(db)
    conc, conc_source = concentration(db)
    latest = _latest_assessments(db)
    rows = []
    for vendor in vendors:
        assessment = latest.get(vendor.id)
        due = assessment.next_review_due if assessment else None
        c = conc.get(vendor.id, {})
        rows.append({
            "vendor": vendor, "products": products.get(vendor.id, 0),
            "assets": uses.get(vendor.id, (0, 0))[0],
            "share": c.get("share"), "critical_assets": c.get("critical_assets") or 0,
            "routes": c.get("routes"),
            "assessment": assessment, "score": assessment_score(assessment),
            "review_due": due, "review_state": review_state(due),
        })
    rows.sort(key=lambda r: (-(r["share"] or 0), TIER_ORDER.get(r["vendor"].tier, 9), r["vendor"].name))
    return {"rows": rows, "concentration_source": conc_source,
            "critical_total": critical_asset_total(db)}


def update_tests_fingerprint(db: so.Session) -> str:
    """Changes whenever an update or a test result changes (those tables have no version
    trigger), so figures derived from test results can be cached safely."""
    digest = hashlib.sha1()
    for row in db.execute(sa.select(VendorUpdate.id, VendorUpdate.product_id, VendorUpdate.version)
                          .order_by(VendorUpdate.id)):
        digest.update(repr(tuple(row)).encode())
    for row in db.execute(sa.select(UpdateTest.id, UpdateTest.update_id, UpdateTest.ring, UpdateTest.status)
                          .order_by(UpdateTest.id)):
        digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def untested_for_vendor(db: so.Session, vendor_id: int, limit: int) -> list[dict[str, Any]]:
    """The vendor's installations on untested versions, most critical first (``updates`` service)."""
    try:
        from inventory.services import updates
    except ImportError:
        return []
    from inventory.services.estate_graph import session_graph

    if session_graph(db) is not None:
        # From the engine's graph: milliseconds, no cache needed.
        return updates.untested_exposure(db, vendor_id=vendor_id, limit=limit)
    key = f"untested-vendor:{vendor_id}:{limit}:{update_tests_fingerprint(db)}"
    return cached(db, key, lambda: updates.untested_exposure(db, vendor_id=vendor_id, limit=limit))


def product_rows(db: so.Session, vendor_id: int) -> list[dict[str, Any]]:
    """The vendor's products with active installations and their most common versions."""
    from inventory.services.estate_graph import on_graph, session_graph

    graph = session_graph(db)
    if graph is not None:
        return on_graph(graph, f"vendor-products:{vendor_id}", lambda: _product_rows(db, vendor_id, graph))
    return cached(db, f"vendor-products:{vendor_id}", lambda: _product_rows(db, vendor_id))


def _product_rows(db: so.Session, vendor_id: int, graph: Any = None) -> list[dict[str, Any]]:
    products = list(db.scalars(sa.select(Product).where(Product.vendor_id == vendor_id).order_by(Product.name)))
    if not products:
        return []
    counts: dict[int, list[tuple[str | None, int]]] = {}
    if graph is not None:
        from inventory.services.estate_graph import product_version_counts

        for product in products:
            found = product_version_counts(graph, product.id)
            if found:
                counts[product.id] = found
    for pid, version, n in [] if graph is not None else db.execute(
            sa.select(Installation.product_id, Installation.version, sa.func.count())
            .join(Asset, Asset.id == Installation.asset_id)
            .where(Installation.product_id.in_([p.id for p in products]), Asset.retired_at.is_(None))
            .group_by(Installation.product_id, Installation.version)).all():
        counts.setdefault(pid, []).append((version, int(n)))
    rows = []
    for product in products:
        versions = sorted(counts.get(product.id, []), key=lambda v: (-v[1], v[0] or ""))
        # Plain values, not the ORM object: the rows are cached across requests.
        rows.append({"product": {"id": product.id, "name": product.name, "kind": product.kind,
                                 "vendor_pushes_updates": product.vendor_pushes_updates},
                     "installations": sum(n for _v, n in versions),
                     "versions": versions[:8], "more_versions": max(0, len(versions) - 8)})
    return rows


def vendor_detail(db: so.Session, vendor_id: int) -> dict[str, Any] | None:
    vendor = db.get(Vendor, vendor_id)
    if vendor is None:
        return None
    assessments = list(db.scalars(sa.select(VendorAssessment).where(VendorAssessment.vendor_id == vendor.id)
                                  .order_by(VendorAssessment.assessed_on.desc())))
    latest = assessments[0] if assessments else None
    due = latest.next_review_due if latest else None
    uses = _direct_use_counts(db).get(vendor.id, (0, 0))
    conc, conc_source = concentration(db)
    return {
        "vendor": vendor, "products": product_rows(db, vendor.id),
        "assessments": assessments, "latest": latest, "score": assessment_score(latest),
        "review_due": due, "review_state": review_state(due),
        "asset_count": uses[0], "critical_count": uses[1],
        "concentration": conc.get(vendor.id, {}), "concentration_source": conc_source,
        "aliases": [a.alias for a in vendor.aliases],
    }


def full_outage_summary(db: so.Session, vendor: Vendor) -> dict[str, Any] | None:
    """The blast radius of a complete outage of this vendor, summarised from the engine's totals.

    Only totals are read: building every hit (paths, plans) of a vendor on most
    hosts would cost seconds, and the vendor page links to the full answer.
    """
    try:
        from inventory.impact import blast_radius, parse_scope
    except ImportError:
        return None
    result = blast_radius(db, parse_scope(db, {"vendor": vendor.name}))
    totals = result.totals
    coverage = totals.get("plan_coverage", {})
    return {"totals": totals, "hit_count": totals.get("hits", 0), "seed_count": totals.get("seeds", 0),
            "services": totals.get("by_service", []), "gaps": coverage.get("gap", 0),
            "stale_only": coverage.get("stale_only", 0)}
