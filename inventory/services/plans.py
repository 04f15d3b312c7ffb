"""Contingency plans: lifecycle (create, edit, review, exercise), coverage and RTO checks.

Which plans apply to an asset (for the coverage report):

* a **business service** (``kind == "service"``) is covered only by plans linked
  to it directly — every critical service needs its own Plan B;
* any **other asset** is covered by plans linked to it, to a product installed
  on it, to that product's vendor, to the cloud vendor hosting it
  (``Vendor.cloud_provider == Asset.provider``), or to a business service that
  depends on it (directly or through other assets).

A covered asset is *current* when at least one of its plans is not stale
(``plan_status`` current or never exercised), *stale only* when every plan's
review is overdue, *uncovered* when no plan applies.

**Recovery targets through dependencies** (``rto_check``): a service's promised
RTO is the smallest RTO of the plans linked to it.  We walk its *hard*
dependencies transitively (``member-of`` edges of a group only when the group
has no redundancy, i.e. ``min_up`` ≥ its member count).  A dependency's
recovery time is the RTO of the *slowest* plan that applies to it — through
the asset itself, its products, their vendors or its cloud vendor — because
each plan answers one failure mode and the slowest bounds how long the
dependency may stay down.  When the slowest dependency needs longer than the
service promises, the service is flagged *at risk* (its promise then rests on
its manual fallback alone); dependencies no plan RTO applies to make the
promise *unverified*.
"""
from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import Any, Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import CRITICALITIES, MEMBER_OF, PLAN_EVENT_KINDS, PLAN_OUTCOMES, SERVICE_KIND
from inventory.db import utcnow
from inventory.models import (Asset, ContingencyPlan, Dependency, Installation, PlanEvent, PlanLink,
                              Product, Vendor)
from inventory.services import audit
from inventory.services.plan_status import CURRENT, NEVER_EXERCISED, STALE, plan_status, review_due
from inventory.services.updates import (NotFound, ValidationError, check_http_url, choice, clean_text,
                                        find_product, find_vendor, parse_datetime)

__all__ = ["coverage", "stale_plans", "never_exercised", "rto_check", "list_plans", "plan_to_dict",
           "create_plan", "update_plan", "record_event", "find_plan", "ValidationError", "NotFound"]

MAX_RTO_MINUTES = 60 * 24 * 365
MAX_INTERVAL_DAYS = 3650


# ---------------------------------------------------------------- lookups and views

def find_plan(db: so.Session, ref: str | int) -> ContingencyPlan:
    """A plan by id or (case-insensitive) name."""
    plan = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        plan = db.get(ContingencyPlan, int(ref))
    if plan is None and isinstance(ref, str):
        plan = db.scalar(sa.select(ContingencyPlan).where(
            sa.func.lower(ContingencyPlan.name) == ref.strip().lower()))
    if plan is None:
        raise NotFound(f"no plan {ref!r}")
    return plan


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _covers(plan: ContingencyPlan) -> dict[str, list[dict[str, Any]]]:
    covers: dict[str, list[dict[str, Any]]] = {"assets": [], "products": [], "vendors": []}
    for link in plan.links:
        if link.asset is not None:
            covers["assets"].append({"id": link.asset.id, "natural_key": link.asset.natural_key,
                                     "name": link.asset.name, "kind": link.asset.kind,
                                     "criticality": link.asset.criticality})
        elif link.product is not None:
            covers["products"].append({"id": link.product.id, "name": link.product.name,
                                       "vendor": link.product.vendor.name,
                                       "ref": f"{link.product.vendor.name}/{link.product.name}"})
        elif link.vendor is not None:
            covers["vendors"].append({"id": link.vendor.id, "name": link.vendor.name})
    for items in covers.values():
        items.sort(key=lambda i: (i.get("ref") or i.get("natural_key") or i["name"]).lower())
    return covers


def covers_summary(covers: dict[str, list[dict[str, Any]]]) -> str:
    parts = [", ".join(a["name"] for a in covers["assets"]),
             ", ".join(p["ref"] for p in covers["products"]),
             ", ".join(v["name"] for v in covers["vendors"])]
    return "; ".join(p for p in parts if p) or "nothing linked"


def plan_to_dict(plan: ContingencyPlan, now: datetime | None = None, *, events: bool = False) -> dict[str, Any]:
    now = now or utcnow()
    status = plan_status(plan, now)
    due = review_due(plan)
    covers = _covers(plan)
    data = {
        "id": plan.id, "name": plan.name, "owner": plan.owner, "rto_minutes": plan.rto_minutes,
        "steps": plan.steps, "manual_fallback": plan.manual_fallback, "runbook_url": plan.runbook_url,
        "review_interval_days": plan.review_interval_days,
        "last_reviewed": _iso(plan.last_reviewed), "last_exercised": _iso(plan.last_exercised),
        "review_due": _iso(due), "review_overdue": due is None or due < now,
        "never_exercised": plan.last_exercised is None, "status": status,
        "covers": covers, "covers_summary": covers_summary(covers),
    }
    if events:
        data["events"] = [event_to_dict(e) for e in sorted(plan.events, key=lambda e: e.at, reverse=True)]
    return data


def event_to_dict(event: PlanEvent) -> dict[str, Any]:
    return {"id": event.id, "plan_id": event.plan_id, "kind": event.kind, "at": _iso(event.at),
            "by": event.by, "outcome": event.outcome, "notes": event.notes}


def _plan_query():  # type: ignore[no-untyped-def]
    return sa.select(ContingencyPlan).options(
        so.selectinload(ContingencyPlan.links).joinedload(PlanLink.asset),
        so.selectinload(ContingencyPlan.links).joinedload(PlanLink.product).joinedload(Product.vendor),
        so.selectinload(ContingencyPlan.links).joinedload(PlanLink.vendor))


def list_plans(db: so.Session, now: datetime | None = None, *, status: str | None = None) -> list[dict[str, Any]]:
    """Every plan with owner, RTO, review/exercise status and what it covers."""
    now = now or utcnow()
    plans = [plan_to_dict(p, now) for p in db.scalars(_plan_query().order_by(ContingencyPlan.name))]
    if status:
        plans = [p for p in plans if p["status"] == status]
    return plans


def stale_plans(db: so.Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Plans whose review is overdue (or that were never reviewed), most overdue first."""
    now = now or utcnow()
    rows = []
    for plan in db.scalars(_plan_query().order_by(ContingencyPlan.name)):
        if plan_status(plan, now) != STALE:
            continue
        data = plan_to_dict(plan, now)
        due = review_due(plan)
        data["days_overdue"] = None if due is None else (now - due).days
        rows.append(data)
    rows.sort(key=lambda r: (r["days_overdue"] is not None, -(r["days_overdue"] or 0)))
    return rows


def never_exercised(db: so.Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Plans nobody has rehearsed yet (whatever their review status)."""
    now = now or utcnow()
    return [plan_to_dict(p, now) for p in db.scalars(
        _plan_query().where(ContingencyPlan.last_exercised.is_(None)).order_by(ContingencyPlan.name))]


# ---------------------------------------------------------------- coverage

def _asset_entry(asset_row: Any, plans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"asset_id": asset_row.id, "name": asset_row.name, "natural_key": asset_row.natural_key,
            "criticality": asset_row.criticality, "kind": asset_row.kind, "plans": plans}


def applicable_plans(db: so.Session, asset_ids: Iterable[int] | None = None,
                     *, services_direct_only: bool = True,
                     include_services: bool = True) -> dict[int, dict[int, str]]:
    """asset id -> {plan id: how the plan applies} for the given assets (None: all live assets).

    See the module docstring for the rules.
    """
    ids = None if asset_ids is None else list(asset_ids)
    wanted = None
    if ids is not None and len(ids) > 2000:
        # Huge IN lists are slower (and SQLite caps bound parameters): filter in Python.
        wanted, ids = set(ids), None
    result: dict[int, dict[int, str]] = {}

    def add(asset_id: int, plan_id: int, via: str) -> None:
        if wanted is not None and asset_id not in wanted:
            return
        result.setdefault(asset_id, {}).setdefault(plan_id, via)

    def restrict(stmt, column):  # type: ignore[no-untyped-def]
        return stmt if ids is None else stmt.where(column.in_(ids))

    # 1. linked directly
    for asset_id, plan_id in db.execute(restrict(
            sa.select(PlanLink.asset_id, PlanLink.plan_id).where(PlanLink.asset_id.is_not(None)),
            PlanLink.asset_id)):
        add(asset_id, plan_id, "asset")
    not_service = Asset.kind != SERVICE_KIND if services_direct_only else sa.true()
    # 2. through an installed product
    for asset_id, plan_id, prod in db.execute(restrict(
            sa.select(Installation.asset_id, PlanLink.plan_id, Product.name)
            .join(PlanLink, PlanLink.product_id == Installation.product_id)
            .join(Product, Product.id == Installation.product_id)
            .join(Asset, Asset.id == Installation.asset_id).where(not_service),
            Installation.asset_id)):
        add(asset_id, plan_id, f"product {prod}")
    # 3a. through the vendor of an installed product
    for asset_id, plan_id, vendor in db.execute(restrict(
            sa.select(Installation.asset_id, PlanLink.plan_id, Vendor.name)
            .join(Product, Product.id == Installation.product_id)
            .join(PlanLink, PlanLink.vendor_id == Product.vendor_id)
            .join(Vendor, Vendor.id == Product.vendor_id)
            .join(Asset, Asset.id == Installation.asset_id).where(not_service),
            Installation.asset_id)):
        add(asset_id, plan_id, f"vendor {vendor}")
    # 3b. through the cloud vendor hosting it
    for asset_id, plan_id, vendor in db.execute(restrict(
            sa.select(Asset.id, PlanLink.plan_id, Vendor.name)
            .join(Vendor, Vendor.cloud_provider == Asset.provider)
            .join(PlanLink, PlanLink.vendor_id == Vendor.id).where(not_service),
            Asset.id)):
        add(asset_id, plan_id, f"cloud vendor {vendor}")
    if not include_services:
        return result
    # 4. through a business service that depends on it (recursive walk down the graph)
    service_plans = (sa.select(PlanLink.plan_id.label("plan_id"), PlanLink.asset_id.label("asset_id"),
                               PlanLink.asset_id.label("service_id"))
                     .join(Asset, Asset.id == PlanLink.asset_id)
                     .where(Asset.kind == SERVICE_KIND, Asset.retired_at.is_(None))
                     .cte("reach", recursive=True))
    reach = service_plans.union(
        sa.select(service_plans.c.plan_id, Dependency.dependency_id, service_plans.c.service_id)
        .join(Dependency, Dependency.dependent_id == service_plans.c.asset_id))
    service = so.aliased(Asset)
    stmt = (sa.select(reach.c.asset_id, reach.c.plan_id, service.name)
            .join(Asset, Asset.id == reach.c.asset_id)
            .join(service, service.id == reach.c.service_id)
            .where(reach.c.asset_id != reach.c.service_id))
    if services_direct_only:
        stmt = stmt.where(Asset.kind != SERVICE_KIND)
    for asset_id, plan_id, service_name in db.execute(restrict(stmt, reach.c.asset_id)):
        add(asset_id, plan_id, f"service {service_name}")
    return result


def coverage(db: so.Session, now: datetime | None = None, *, criticality: str = "critical") -> dict[str, Any]:
    """Plan coverage of critical business services and critical assets.

    Keys: ``critical_services`` (total), ``covered_current``, ``stale_only``,
    ``uncovered`` (services), ``critical_assets`` (total, non-service),
    ``assets_covered_current``, ``assets_stale_only``, ``assets_uncovered``,
    and ``not_exercised`` / ``assets_not_exercised`` (covered, but none of
    their current plans has been exercised).  Entries are
    ``{asset_id, name, natural_key, criticality, kind, plans}`` with plans
    ``[{id, name, status, via}]``.
    """
    now = now or utcnow()
    plans = {p.id: p for p in db.scalars(sa.select(ContingencyPlan))}
    statuses = {pid: plan_status(p, now) for pid, p in plans.items()}
    assets = db.execute(sa.select(Asset.id, Asset.name, Asset.natural_key, Asset.criticality, Asset.kind)
                        .where(Asset.retired_at.is_(None), Asset.criticality == criticality)
                        .order_by(Asset.name, Asset.id)).all()
    applicable = applicable_plans(db, [a.id for a in assets]) if assets else {}
    out: dict[str, Any] = {"criticality": criticality, "generated_at": now.isoformat()}
    for prefix, rows in (("", [a for a in assets if a.kind == SERVICE_KIND]),
                         ("assets_", [a for a in assets if a.kind != SERVICE_KIND])):
        buckets: dict[str, list[dict[str, Any]]] = {"covered_current": [], "stale_only": [],
                                                    "uncovered": [], "not_exercised": []}
        for row in rows:
            entry_plans = sorted(
                ({"id": pid, "name": plans[pid].name, "status": statuses[pid], "via": via}
                 for pid, via in applicable.get(row.id, {}).items()),
                key=lambda p: ({CURRENT: 0, NEVER_EXERCISED: 1, STALE: 2}[p["status"]], p["name"]))
            entry = _asset_entry(row, entry_plans)
            live = [p for p in entry_plans if p["status"] != STALE]
            if not entry_plans:
                buckets["uncovered"].append(entry)
            elif not live:
                buckets["stale_only"].append(entry)
            else:
                buckets["covered_current"].append(entry)
                if all(p["status"] == NEVER_EXERCISED for p in live):
                    buckets["not_exercised"].append(entry)
        for key, items in buckets.items():
            out[prefix + key] = items
        total = len(rows)
        out["critical_services" if not prefix else "critical_assets"] = total
        out[prefix + "coverage_ratio"] = (len(buckets["covered_current"]) / total) if total else None
    return out


# ---------------------------------------------------------------- recovery targets

def _promised_rtos(db: so.Session, asset_ids: Iterable[int]) -> dict[int, tuple[int, str]]:
    """asset id -> (smallest RTO, plan name) over plans linked directly to it: the promise."""
    out: dict[int, tuple[int, str]] = {}
    ids = list(asset_ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for asset_id, rto, name in db.execute(
                sa.select(PlanLink.asset_id, ContingencyPlan.rto_minutes, ContingencyPlan.name)
                .join(ContingencyPlan, ContingencyPlan.id == PlanLink.plan_id)
                .where(PlanLink.asset_id.in_(chunk), ContingencyPlan.rto_minutes.is_not(None))):
            if asset_id not in out or rto < out[asset_id][0]:
                out[asset_id] = (rto, name)
    return out


def _recovery_times(db: so.Session, asset_ids: Iterable[int],
                    plan_rtos: dict[int, tuple[int | None, str]]) -> dict[int, tuple[int, str, str]]:
    """asset id -> (RTO, plan name, how it applies) of the *slowest* plan that restores it.

    Plans apply through the asset itself, its products, their vendors or its cloud
    vendor (not through the services it supports — that would be circular).  Each
    plan answers one failure mode; the slowest one bounds how long the asset may
    stay down, so that is what a dependent service must be able to ride out.
    """
    out: dict[int, tuple[int, str, str]] = {}
    ids = list(asset_ids)
    if not ids:
        return out
    for asset_id, plans in applicable_plans(db, ids, include_services=False).items():
        for plan_id, via in plans.items():
            rto, name = plan_rtos.get(plan_id, (None, ""))
            if rto is not None and (asset_id not in out or rto > out[asset_id][0]):
                out[asset_id] = (rto, name, via)
    return out


class _HardGraph:
    """Hard dependency edges, loaded lazily frontier by frontier and cached."""

    def __init__(self, db: so.Session) -> None:
        self.db = db
        self.edges: dict[int, list[int]] = {}
        self.info: dict[int, Any] = {}

    def load(self, ids: Iterable[int]) -> None:
        todo = [i for i in ids if i not in self.edges]
        for start in range(0, len(todo), 500):
            chunk = todo[start:start + 500]
            for row in self.db.execute(sa.select(Asset.id, Asset.name, Asset.natural_key, Asset.kind,
                                                 Asset.criticality, Asset.min_up, Asset.retired_at)
                                       .where(Asset.id.in_(chunk))):
                self.info[row.id] = row
            members: dict[int, list[int]] = {}
            for i in chunk:
                self.edges[i] = []
            for dependent, dependency, kind in self.db.execute(
                    sa.select(Dependency.dependent_id, Dependency.dependency_id, Dependency.kind)
                    .where(Dependency.dependent_id.in_(chunk), Dependency.strength == "hard")):
                if kind == MEMBER_OF:
                    members.setdefault(dependent, []).append(dependency)
                else:
                    self.edges[dependent].append(dependency)
            for group, member_ids in members.items():
                min_up = self.info[group].min_up if group in self.info else None
                # A redundant group survives the loss of one member: no single member's
                # recovery time bounds the group's.
                if min_up is None or min_up >= len(member_ids):
                    self.edges[group].extend(member_ids)


def rto_check(db: so.Session, *, service_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Every live business service: its promised RTO against its slowest hard dependency.

    ``status``: ``at_risk`` (a dependency's plan RTO exceeds the promise),
    ``unverified`` (no dependency is slower, but some have no plan RTO),
    ``ok``, or ``no_rto`` (no plan with an RTO is linked to the service).
    """
    stmt = (sa.select(Asset.id).where(Asset.kind == SERVICE_KIND, Asset.retired_at.is_(None)))
    if service_ids is not None:
        stmt = stmt.where(Asset.id.in_(list(service_ids)))
    services = list(db.scalars(stmt))
    graph = _HardGraph(db)
    graph.load(services)
    promised = _promised_rtos(db, services)
    plan_rtos = {pid: (rto, name) for pid, rto, name in db.execute(
        sa.select(ContingencyPlan.id, ContingencyPlan.rto_minutes, ContingencyPlan.name))}
    results = []
    for service_id in services:
        # BFS over hard dependencies, remembering one shortest path to each.
        parent: dict[int, int | None] = {service_id: None}
        queue = deque([service_id])
        order = []
        while queue:
            level = list(queue)
            queue.clear()
            graph.load(level)
            for node in level:
                for dep in graph.edges.get(node, []):
                    if dep not in parent:
                        parent[dep] = node
                        order.append(dep)
                        queue.append(dep)
        graph.load(order)
        deps = [d for d in order if graph.info.get(d) is not None and graph.info[d].retired_at is None]
        rtos = _recovery_times(db, deps, plan_rtos)
        info = graph.info[service_id]

        def path_to(node: int) -> list[str]:
            names = []
            cur: int | None = node
            while cur is not None:
                names.append(graph.info[cur].name)
                cur = parent[cur]
            return list(reversed(names))

        slowest = None
        for dep in deps:
            if dep in rtos and (slowest is None or rtos[dep][0] > rtos[slowest][0]):
                slowest = dep
        unplanned = [{"asset_id": d, "name": graph.info[d].name, "natural_key": graph.info[d].natural_key}
                     for d in deps if d not in rtos]
        promise = promised.get(service_id)
        too_slow = []
        if promise is not None:
            too_slow = sorted(
                ({"asset_id": d, "name": graph.info[d].name, "natural_key": graph.info[d].natural_key,
                  "rto_minutes": rtos[d][0], "plan": rtos[d][1], "via": rtos[d][2], "path": path_to(d)}
                 for d in deps if d in rtos and rtos[d][0] > promise[0]),
                key=lambda x: -x["rto_minutes"])
        if promise is None:
            status = "no_rto"
        elif too_slow:
            status = "at_risk"
        elif unplanned:
            status = "unverified"
        else:
            status = "ok"
        results.append({
            "asset_id": service_id, "name": info.name, "natural_key": info.natural_key,
            "criticality": info.criticality,
            "rto_minutes": promise[0] if promise else None, "plan": promise[1] if promise else None,
            "dependencies": len(deps),
            "slowest": None if slowest is None else {
                "asset_id": slowest, "name": graph.info[slowest].name,
                "natural_key": graph.info[slowest].natural_key, "rto_minutes": rtos[slowest][0],
                "plan": rtos[slowest][1], "via": rtos[slowest][2], "path": path_to(slowest)},
            "too_slow": too_slow, "unplanned": unplanned, "status": status,
            "shortfall_minutes": (rtos[slowest][0] - promise[0]) if (promise and slowest is not None
                                                                      and too_slow) else 0,
        })
    rank = {"at_risk": 0, "unverified": 1, "no_rto": 2, "ok": 3}
    crit = {c: i for i, c in enumerate(CRITICALITIES)}
    results.sort(key=lambda r: (rank[r["status"]], crit.get(r["criticality"], 9), r["name"]))
    return results


# ---------------------------------------------------------------- writes

def _validate(db: so.Session, data: dict[str, Any], plan: ContingencyPlan | None) -> dict[str, Any]:
    """Check and normalise plan fields; raises ValidationError naming the field."""
    out: dict[str, Any] = {}
    partial = plan is not None

    def given(key: str) -> bool:
        return key in data or not partial

    if given("name"):
        name = clean_text(data.get("name"), "name", max_len=200, required=True)
        clash = db.scalar(sa.select(ContingencyPlan.id).where(
            sa.func.lower(ContingencyPlan.name) == name.lower()))
        if clash is not None and (plan is None or clash != plan.id):
            raise ValidationError("name", f"a plan named {name!r} already exists", status=409)
        out["name"] = name
    if given("owner"):
        out["owner"] = clean_text(data.get("owner"), "owner", max_len=200)
    if given("rto_minutes"):
        out["rto_minutes"] = _positive_int(data.get("rto_minutes"), "rto_minutes", MAX_RTO_MINUTES,
                                           required=False)
    if given("review_interval_days"):
        value = data.get("review_interval_days")
        out["review_interval_days"] = _positive_int(180 if value in (None, "") else value,
                                                    "review_interval_days", MAX_INTERVAL_DAYS,
                                                    required=True)
    for key in ("steps", "manual_fallback"):
        if given(key):
            out[key] = clean_text(data.get(key), key, max_len=50_000)
    if given("runbook_url"):
        out["runbook_url"] = check_http_url(data.get("runbook_url"), "runbook_url")
    if "covers" in data or not partial:
        out["covers"] = _resolve_covers(db, data.get("covers") or {})
    return out


def _positive_int(value: Any, field: str, maximum: int, *, required: bool) -> int | None:
    if value is None or value == "":
        if required:
            raise ValidationError(field, f"{field} is required")
        return None
    if isinstance(value, bool):
        raise ValidationError(field, f"{field} must be a positive whole number")
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit():
            raise ValidationError(field, f"{field} must be a positive whole number")
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ValidationError(field, f"{field} must be a positive whole number")
    if value > maximum:
        raise ValidationError(field, f"{field} must be at most {maximum}")
    return value


def _as_list(value: Any, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = [line for line in value.replace(",", "\n").splitlines()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValidationError(field, f"{field} must be a list of names")
    return [v.strip() for v in value if v.strip()]


def _resolve_covers(db: so.Session, covers: Any) -> list[tuple[str, int]]:
    if not isinstance(covers, dict):
        raise ValidationError("covers", "covers must be an object with assets, products and vendors")
    unknown = set(covers) - {"assets", "products", "vendors"}
    if unknown:
        raise ValidationError("covers", f"covers has unknown keys: {', '.join(sorted(unknown))}")
    targets: list[tuple[str, int]] = []
    for key in _as_list(covers.get("assets"), "covers.assets"):
        asset_id = db.scalar(sa.select(Asset.id).where(Asset.natural_key == key))
        if asset_id is None:
            raise ValidationError("covers.assets", f"no asset with key {key!r}")
        targets.append(("asset", asset_id))
    for ref in _as_list(covers.get("products"), "covers.products"):
        try:
            targets.append(("product", find_product(db, ref).id))
        except NotFound as exc:
            raise ValidationError("covers.products", str(exc)) from None
    for name in _as_list(covers.get("vendors"), "covers.vendors"):
        try:
            targets.append(("vendor", find_vendor(db, name).id))
        except NotFound as exc:
            raise ValidationError("covers.vendors", str(exc)) from None
    return list(dict.fromkeys(targets))  # keep order, drop duplicates


def _links_snapshot(plan: ContingencyPlan) -> dict[str, list[Any]]:
    return {"assets": sorted(link.asset_id for link in plan.links if link.asset_id),
            "products": sorted(link.product_id for link in plan.links if link.product_id),
            "vendors": sorted(link.vendor_id for link in plan.links if link.vendor_id)}


def _set_links(db: so.Session, plan: ContingencyPlan, targets: list[tuple[str, int]]) -> None:
    wanted = set(targets)
    for link in list(plan.links):
        key = ("asset", link.asset_id) if link.asset_id else (
            ("product", link.product_id) if link.product_id else ("vendor", link.vendor_id))
        if key in wanted:
            wanted.discard(key)
        else:
            plan.links.remove(link)
            db.delete(link)
    db.flush()
    for kind, target_id in targets:
        if (kind, target_id) in wanted:
            plan.links.append(PlanLink(**{f"{kind}_id": target_id}))


def create_plan(db: so.Session, data: dict[str, Any], *, actor: str) -> ContingencyPlan:
    if not isinstance(data, dict):
        raise ValidationError(None, "the body must be a JSON object")
    values = _validate(db, data, None)
    covers = values.pop("covers")
    plan = ContingencyPlan(**values)
    db.add(plan)
    db.flush()
    _set_links(db, plan, covers)
    db.flush()
    audit.record(db, actor=actor, action="create", entity_type="contingency_plan", entity_id=plan.id,
                 summary=f"created plan {plan.name}",
                 after={**audit.snapshot(plan), "covers": _links_snapshot(plan)})
    return plan


def update_plan(db: so.Session, plan: ContingencyPlan, data: dict[str, Any], *, actor: str) -> ContingencyPlan:
    """Change the given fields (others stay); ``covers`` replaces the links when present."""
    if not isinstance(data, dict):
        raise ValidationError(None, "the body must be a JSON object")
    before = {**audit.snapshot(plan), "covers": _links_snapshot(plan)}
    values = _validate(db, data, plan)
    covers = values.pop("covers", None)
    for key, value in values.items():
        setattr(plan, key, value)
    if covers is not None:
        _set_links(db, plan, covers)
    db.flush()
    db.refresh(plan)
    audit.record(db, actor=actor, action="update", entity_type="contingency_plan", entity_id=plan.id,
                 summary=f"edited plan {plan.name}", before=before,
                 after={**audit.snapshot(plan), "covers": _links_snapshot(plan)})
    return plan


def record_event(db: so.Session, plan: ContingencyPlan, *, actor: str, kind: Any, outcome: Any = None,
                 notes: Any = None, at: Any = None, by: Any = None) -> PlanEvent:
    """Record a review or an exercise: one PlanEvent, the plan's last_reviewed or
    last_exercised moved forward, one audit event — all in the caller's transaction."""
    kind_value = choice(kind, "kind", PLAN_EVENT_KINDS)
    outcome_value = choice(outcome, "outcome", PLAN_OUTCOMES, required=(kind_value == "exercise"))
    notes_text = clean_text(notes, "notes", max_len=20_000)
    when = parse_datetime(at, "at") or utcnow()
    if when < utcnow() - timedelta(days=3650):
        raise ValidationError("at", "at is more than ten years ago")
    who = clean_text(by, "by", max_len=200) or actor
    before = audit.snapshot(plan)
    event = PlanEvent(plan_id=plan.id, kind=kind_value, at=when, by=who, outcome=outcome_value,
                      notes=notes_text)
    db.add(event)
    # A late entry for an older review must not move the date backwards.
    if kind_value == "review":
        if plan.last_reviewed is None or when > plan.last_reviewed:
            plan.last_reviewed = when
    else:
        if plan.last_exercised is None or when > plan.last_exercised:
            plan.last_exercised = when
    db.flush()
    audit.record(db, actor=actor, action=f"record-{kind_value}", entity_type="contingency_plan",
                 entity_id=plan.id,
                 summary=f"{kind_value} of plan {plan.name}" + (f": {outcome_value}" if outcome_value else ""),
                 before=before, after={**audit.snapshot(plan), "event": event_to_dict(event)})
    return event
