"""Figures for the overview page.

Estate-wide aggregates (counts by provider/OS/kind, plan coverage, vendor
concentration) are cached against the inventory version (see
``inventory.services.cache``) so the page stays fast on 100k-asset estates;
the first load after a change recomputes them.  Figures that depend on the
clock (plan staleness) are additionally keyed by the hour.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import utcnow
from inventory.models import Asset, CollectionRun, Incident, Vendor
from inventory.services import vendor_summary
from inventory.services.cache import cached

log = logging.getLogger(__name__)

TOP_N = 8


def estate_counts(db: so.Session) -> dict[str, Any]:
    """Active assets by provider, OS family and kind, from one grouped scan."""
    def compute() -> dict[str, Any]:
        rows = db.execute(sa.select(Asset.provider, Asset.os_family, Asset.kind, sa.func.count())
                          .where(Asset.retired_at.is_(None))
                          .group_by(Asset.provider, Asset.os_family, Asset.kind)).all()
        provider: Counter[str] = Counter()
        os_family: Counter[str] = Counter()
        kind: Counter[str] = Counter()
        for prov, os_, k, n in rows:
            provider[prov or "unknown"] += n
            # OS only means something for machines: leave services, SaaS… out of that chart.
            if os_ is not None:
                os_family[os_] += n
            kind[k] += n
        retired = db.scalar(sa.select(sa.func.count()).select_from(Asset)
                            .where(Asset.retired_at.is_not(None))) or 0
        total = sum(kind.values())
        return {"total": total, "retired": retired,
                "by_provider": provider.most_common(), "by_os": os_family.most_common(),
                "by_kind": kind.most_common(),
                "services": kind.get("service", 0)}
    return cached(db, "estate-counts", compute)


def plan_coverage(db: so.Session) -> dict[str, Any] | None:
    """Critical business services covered by a current plan / only stale plans / none."""
    try:
        from inventory.services import plans
    except ImportError:
        return None
    hour = utcnow().strftime("%Y-%m-%dT%H")
    data = cached(db, f"plan-coverage:{hour}", lambda: plans.coverage(db))
    return {
        "total": data.get("critical_services", 0),
        "covered_current": data.get("covered_current", []),
        "stale_only": data.get("stale_only", []),
        "uncovered": data.get("uncovered", []),
        "not_exercised": data.get("not_exercised", []),
        "ratio": data.get("coverage_ratio"),
        "assets_total": data.get("critical_assets", 0),
        "assets_uncovered": len(data.get("assets_uncovered", [])),
        "assets_stale_only": len(data.get("assets_stale_only", [])),
    }


def stale_plans(db: so.Session) -> list[dict[str, Any]] | None:
    try:
        from inventory.services import plans
    except ImportError:
        return None
    return plans.stale_plans(db)


def untested(db: so.Session) -> dict[str, Any] | None:
    try:
        from inventory.services import updates
    except ImportError:
        return None
    summary = cached(db, "untested-summary", lambda: updates.untested_summary(db))
    rows = updates.untested_exposure(db, critical_only=True, limit=TOP_N + 1)
    return {"summary": summary, "rows": rows[:TOP_N], "more": len(rows) > TOP_N}


def concentration(db: so.Session) -> dict[str, Any]:
    conc, source = vendor_summary.concentration(db)
    names = dict(db.execute(sa.select(Vendor.id, Vendor.name)).all())
    rows = sorted(({"vendor_id": vid, "vendor": names.get(vid, "?"), **c} for vid, c in conc.items()
                   if vid in names and c.get("share")), key=lambda r: (-(r["share"] or 0), r["vendor"]))
    return {"rows": rows[:TOP_N], "source": source,
            "critical_total": vendor_summary.critical_asset_total(db)}


def latest_runs(db: so.Session, limit: int = 6) -> list[CollectionRun]:
    return list(db.scalars(sa.select(CollectionRun).order_by(CollectionRun.id.desc()).limit(limit)))


def open_incidents(db: so.Session) -> list[Incident]:
    return list(db.scalars(sa.select(Incident).where(Incident.status == "open")
                           .order_by(Incident.declared_at.desc()).limit(20)))


def overview(db: so.Session) -> dict[str, Any]:
    counts = estate_counts(db)
    vendors = db.scalar(sa.select(sa.func.count()).select_from(Vendor)) or 0
    empty = counts["total"] == 0 and counts["retired"] == 0
    figures: dict[str, Any] = {"counts": counts, "vendor_count": vendors, "empty": empty,
                               "runs": latest_runs(db), "incidents": open_incidents(db)}
    if empty:
        return figures
    figures.update(coverage=plan_coverage(db), stale=stale_plans(db), untested=untested(db),
                   concentration=concentration(db))
    return figures
