"""Figures for the overview page.

Estate-wide aggregates (counts by provider/OS/kind, plan coverage, vendor
concentration) are cached against the inventory version (see
``inventory.services.cache``) so the page stays fast on 100k-asset estates;
the first load after a change recomputes them.  Plan figures are computed
fresh (they depend on the clock and are cheap for the business services).
"""
from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import SERVICE_KIND
from inventory.db import utcnow
from inventory.models import Asset, CollectionRun, ContingencyPlan, Incident, PlanLink, Vendor
from inventory.services import vendor_summary
from inventory.services.cache import cached
from inventory.models.plan_status import coverage_bucket, plan_status
from inventory.services.vendor_summary import update_tests_fingerprint

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


def plan_coverage(db: so.Session) -> dict[str, Any]:
    """Critical business services covered by a current plan / only stale plans / none.

    Same rule as ``inventory.services.plans.coverage`` for services — a service
    counts only its own plans — but only the services are read, which keeps it
    to one small query (the full report also walks every critical asset).
    """
    now = utcnow()
    services = db.execute(sa.select(Asset.id, Asset.name).where(
        Asset.kind == SERVICE_KIND, Asset.criticality == "critical", Asset.retired_at.is_(None))
        .order_by(Asset.name, Asset.id)).all()
    plans_of: dict[int, list[dict[str, Any]]] = {}
    if services:
        rows = db.execute(sa.select(PlanLink.asset_id, ContingencyPlan)
                          .join(ContingencyPlan, ContingencyPlan.id == PlanLink.plan_id)
                          .where(PlanLink.asset_id.in_([sid for sid, _n in services]))).all()
        for asset_id, plan in rows:
            plans_of.setdefault(asset_id, []).append(
                {"id": plan.id, "name": plan.name, "status": plan_status(plan, now)})
    buckets: dict[str, list[dict[str, Any]]] = {"covered_current": [], "stale_only": [], "uncovered": [],
                                                "not_exercised": []}
    for sid, name in services:
        plans = sorted(plans_of.get(sid, []), key=lambda p: p["name"])
        entry = {"asset_id": sid, "name": name, "plans": plans}
        bucket, unexercised = coverage_bucket([p["status"] for p in plans])
        buckets[bucket].append(entry)
        if unexercised:
            buckets["not_exercised"].append(entry)
    total = len(services)
    return {"total": total, **buckets,
            "ratio": len(buckets["covered_current"]) / total if total else None}


def stale_plans(db: so.Session) -> list[dict[str, Any]]:
    """Plans whose review is overdue (or that were never reviewed), most overdue first.

    Same rule as ``plan_status`` (stale = no review, or review interval passed),
    read as plain columns: thousands of plans cost milliseconds.
    """
    now = utcnow()
    rows = []
    for pid, name, owner, reviewed, interval in db.execute(sa.select(
            ContingencyPlan.id, ContingencyPlan.name, ContingencyPlan.owner, ContingencyPlan.last_reviewed,
            ContingencyPlan.review_interval_days)):
        due = None if reviewed is None else reviewed + timedelta(days=interval)
        if due is None or due < now:
            rows.append({"id": pid, "name": name, "owner": owner,
                         "days_overdue": None if due is None else (now - due).days})
    rows.sort(key=lambda r: (r["days_overdue"] is not None, -(r["days_overdue"] or 0), r["name"]))
    return rows


def untested(db: so.Session) -> dict[str, Any] | None:
    """Untested exposure (``inventory.services.updates``), cached per inventory and test state."""
    try:
        from inventory.services import updates
    except ImportError:
        return None
    key = update_tests_fingerprint(db)
    summary = cached(db, f"untested-summary:{key}", lambda: updates.untested_summary(db))
    rows = cached(db, f"untested-critical:{key}",
                  lambda: updates.untested_exposure(db, critical_only=True, limit=TOP_N + 1))
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


def open_incidents(db: so.Session) -> list[dict[str, Any]]:
    """Open incidents, newest first, with their recovery progress."""
    incidents = list(db.scalars(sa.select(Incident).where(Incident.status == "open")
                                .order_by(Incident.declared_at.desc()).limit(20)))
    if not incidents:
        return []
    from inventory.services.incidents import incident_progress
    return [{"incident": i, "progress": incident_progress(i)} for i in incidents]


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
