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

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
from typing import Any, Iterable

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so
from scipy import sparse

from inventory.choices import CRITICALITIES, MEMBER_OF, PLAN_EVENT_KINDS, PLAN_OUTCOMES, SERVICE_KIND
from inventory.db import utcnow
from inventory.ids import as_id
from inventory.models import Asset, ContingencyPlan, PlanEvent, PlanLink, Product, Vendor
from inventory.services import audit, cache
from inventory.models.plan_status import (
    CURRENT,
    NEVER_EXERCISED,
    STALE,
    coverage_bucket,
    plan_status,
    review_due,
)
from inventory.services.updates import (
    NotFound,
    ValidationError,
    check_http_url,
    choice,
    clean_text,
    find_product,
    find_vendor,
    parse_datetime,
)
from inventory.validation import ONE_LINE_MESSAGE, has_line_break, text_problem

__all__ = ["coverage", "stale_plans", "never_exercised", "rto_check", "list_plans", "plan_to_dict",
           "create_plan", "update_plan", "record_event", "find_plan", "ValidationError", "NotFound"]

MAX_RTO_MINUTES = 60 * 24 * 365
MAX_INTERVAL_DAYS = 3650


# ---------------------------------------------------------------- lookups and views

def find_plan(db: so.Session, ref: str | int) -> ContingencyPlan:
    """A plan by id or (case-insensitive) name."""
    plan = None
    plan_id = as_id(ref)
    if plan_id is not None:
        plan = db.get(ContingencyPlan, plan_id)
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


@dataclass
class _PlanDates:
    """The three columns ``plan_status`` reads, without loading the whole plan."""

    review_interval_days: int
    last_reviewed: datetime | None
    last_exercised: datetime | None


def list_plans(db: so.Session, now: datetime | None = None, *, status: str | None = None) -> list[dict[str, Any]]:
    """Every plan with owner, RTO, review/exercise status and what it covers (the same shape as
    ``plan_to_dict`` without steps' history).  Plain column queries: a thousand plans with their
    links cost milliseconds, not an ORM object graph."""
    now = now or utcnow()
    covers: dict[int, dict[str, list[dict[str, Any]]]] = {}

    def bucket(plan_id: int) -> dict[str, list[dict[str, Any]]]:
        return covers.setdefault(plan_id, {"assets": [], "products": [], "vendors": []})

    for plan_id, aid, key, name, kind, crit in db.execute(
            sa.select(PlanLink.plan_id, Asset.id, Asset.natural_key, Asset.name, Asset.kind, Asset.criticality)
            .join(Asset, Asset.id == PlanLink.asset_id)):
        bucket(plan_id)["assets"].append({"id": aid, "natural_key": key, "name": name, "kind": kind,
                                          "criticality": crit})
    for plan_id, pid, pname, vname in db.execute(
            sa.select(PlanLink.plan_id, Product.id, Product.name, Vendor.name)
            .join(Product, Product.id == PlanLink.product_id).join(Vendor, Vendor.id == Product.vendor_id)):
        bucket(plan_id)["products"].append({"id": pid, "name": pname, "vendor": vname, "ref": f"{vname}/{pname}"})
    for plan_id, vid, vname in db.execute(
            sa.select(PlanLink.plan_id, Vendor.id, Vendor.name).join(Vendor, Vendor.id == PlanLink.vendor_id)):
        bucket(plan_id)["vendors"].append({"id": vid, "name": vname})
    plans = []
    for row in db.execute(sa.select(ContingencyPlan.id, ContingencyPlan.name, ContingencyPlan.owner,
                                    ContingencyPlan.rto_minutes, ContingencyPlan.runbook_url,
                                    ContingencyPlan.review_interval_days, ContingencyPlan.last_reviewed,
                                    ContingencyPlan.last_exercised).order_by(ContingencyPlan.name)):
        dates = _PlanDates(row.review_interval_days, row.last_reviewed, row.last_exercised)
        plan_state = plan_status(dates, now)  # type: ignore[arg-type]
        if status and plan_state != status:
            continue
        due = review_due(dates)  # type: ignore[arg-type]
        plan_covers = covers.get(row.id, {"assets": [], "products": [], "vendors": []})
        for items in plan_covers.values():
            items.sort(key=lambda i: (i.get("ref") or i.get("natural_key") or i["name"]).lower())
        plans.append({
            "id": row.id, "name": row.name, "owner": row.owner, "rto_minutes": row.rto_minutes,
            "runbook_url": row.runbook_url, "review_interval_days": row.review_interval_days,
            "last_reviewed": _iso(row.last_reviewed), "last_exercised": _iso(row.last_exercised),
            "review_due": _iso(due), "review_overdue": due is None or due < now,
            "never_exercised": row.last_exercised is None, "status": plan_state,
            "covers": plan_covers, "covers_summary": covers_summary(plan_covers),
        })
    return plans


def stale_plans(db: so.Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Plans whose review is overdue (or that were never reviewed), most overdue first."""
    now = now or utcnow()
    rows = list_plans(db, now, status=STALE)
    for row in rows:
        due = datetime.fromisoformat(row["review_due"]) if row["review_due"] else None
        row["days_overdue"] = None if due is None else (now - due).days
    rows.sort(key=lambda r: (r["days_overdue"] is not None, -(r["days_overdue"] or 0)))
    return rows


def never_exercised(db: so.Session, now: datetime | None = None) -> list[dict[str, Any]]:
    """Plans nobody has rehearsed yet (whatever their review status)."""
    return [p for p in list_plans(db, now) if p["never_exercised"]]


# ---------------------------------------------------------------- the estate as arrays

@dataclass
class EstateArrays:
    """Live assets and their dependency edges as arrays (position = index into ``ids``).

    Loaded with plain driver queries and cached per inventory version
    (``inventory.services.cache``), so coverage, RTO and concentration over a
    100k-asset estate cost array operations, not a query per asset.  Treat as
    read-only: one instance is shared by every request until the data changes.
    """

    ids: np.ndarray
    names: list[str]
    keys: list[str]
    kinds: np.ndarray  # object
    crit: np.ndarray  # object
    provider: np.ndarray  # object
    min_up: np.ndarray  # -1 = not a group
    is_service: np.ndarray
    src: np.ndarray  # dependent position, per edge
    dst: np.ndarray  # dependency position, per edge
    member: np.ndarray  # edge kind is member-of
    hard: np.ndarray
    _csr: dict[str, sparse.csr_matrix] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.ids.size)

    def positions(self, asset_ids: Iterable[int]) -> np.ndarray:
        """Positions of the given asset ids (ids of retired/unknown assets are dropped)."""
        wanted = np.fromiter(asset_ids, dtype=np.int64)
        if not wanted.size or not self.ids.size:
            return np.zeros(0, dtype=np.int64)
        pos = np.searchsorted(self.ids, wanted)
        pos = np.minimum(pos, self.ids.size - 1)
        return pos[self.ids[pos] == wanted]

    def forward(self, which: str = "all") -> sparse.csr_matrix:
        """dependent → dependency adjacency: ``all`` edges, or ``hard`` ones for recovery
        targets (a redundant group's member-of edges left out: losing one member does not
        take the group down)."""
        if which not in self._csr:
            if which == "all":
                sel = np.ones(self.src.size, dtype=bool)
            else:
                member_hard = self.member & self.hard
                members = np.bincount(self.src[member_hard], minlength=self.n)
                group_min = self.min_up[self.src]
                redundant = member_hard & (group_min >= 0) & (group_min < members[self.src])
                sel = self.hard & ~redundant
            self._csr[which] = sparse.csr_matrix(
                (np.ones(int(sel.sum()), dtype=np.int8), (self.src[sel], self.dst[sel])), shape=(self.n, self.n))
        return self._csr[which]

    def reach(self, seeds: np.ndarray, which: str = "all") -> tuple[np.ndarray, np.ndarray]:
        """Breadth-first walk from ``seeds`` along ``forward(which)``: (reached mask, parent
        position per asset, -1 for seeds and unreached).  Touches only the reached part."""
        csr = self.forward(which)
        seen = np.zeros(self.n, dtype=bool)
        parent = np.full(self.n, -1, dtype=np.int64)
        seen[seeds] = True
        frontier = np.unique(seeds)
        while frontier.size:
            starts, ends = csr.indptr[frontier], csr.indptr[frontier + 1]
            lens = ends - starts
            total = int(lens.sum())
            if not total:
                break
            offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
            nbrs = csr.indices[offsets + np.arange(total)]
            origin = np.repeat(frontier, lens)
            fresh = ~seen[nbrs]
            nbrs, origin = nbrs[fresh], origin[fresh]
            nbrs, first = np.unique(nbrs, return_index=True)
            parent[nbrs] = origin[first]
            seen[nbrs] = True
            frontier = nbrs
        return seen, parent


def _fetch(db: so.Session, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a constant query straight from the DB-API cursor (plain tuples: at 100k+ rows
    SQLAlchemy's Row objects cost more than the query), inside the session's transaction."""
    cursor = db.connection().connection.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchall()
    finally:
        cursor.close()


def _int_pairs(db: so.Session, sql: str) -> np.ndarray:
    """A two-integer-column query as an (n, 2) int64 array."""
    rows = _fetch(db, sql)
    return np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=2 * len(rows)).reshape(-1, 2)


def load_estate_arrays(db: so.Session) -> EstateArrays:
    rows = _fetch(db, "SELECT id, name, natural_key, kind, criticality, provider, min_up FROM assets "
                      "WHERE retired_at IS NULL ORDER BY id")
    cols = list(zip(*rows)) if rows else [()] * 7
    ids = np.array(cols[0], dtype=np.int64)
    kinds = np.array(cols[3], dtype=object)
    edges = _fetch(db, "SELECT dependent_id, dependency_id, "
                       f"CASE WHEN kind = '{MEMBER_OF}' THEN 1 ELSE 0 END, "
                       "CASE WHEN strength = 'hard' THEN 1 ELSE 0 END FROM dependencies")
    # fromiter over a flat chain: numpy converting a list of Row objects directly is ~50x slower.
    e = np.fromiter(chain.from_iterable(edges), dtype=np.int64, count=4 * len(edges)).reshape(-1, 4)
    arrays = EstateArrays(ids=ids, names=list(cols[1]), keys=list(cols[2]), kinds=kinds,
                          crit=np.array(cols[4], dtype=object), provider=np.array(cols[5], dtype=object),
                          min_up=np.array([-1 if m is None else m for m in cols[6]], dtype=np.int64),
                          is_service=kinds == SERVICE_KIND, src=np.zeros(0, dtype=np.int64),
                          dst=np.zeros(0, dtype=np.int64), member=np.zeros(0, dtype=bool),
                          hard=np.zeros(0, dtype=bool))
    if e.size and ids.size:
        src_pos = np.minimum(np.searchsorted(ids, e[:, 0]), ids.size - 1)
        dst_pos = np.minimum(np.searchsorted(ids, e[:, 1]), ids.size - 1)
        live = (ids[src_pos] == e[:, 0]) & (ids[dst_pos] == e[:, 1])  # both ends not retired
        arrays.src, arrays.dst = src_pos[live], dst_pos[live]
        arrays.member, arrays.hard = e[live, 2] == 1, e[live, 3] == 1
    return arrays


def estate_arrays_from_graph(graph: Any, db: so.Session) -> EstateArrays:
    """The same arrays as ``load_estate_arrays``, read from the impact engine's graph."""
    from inventory.services.estate_graph import crit_names

    pos = np.flatnonzero(graph.alive_now)
    kinds = np.array(graph.kinds + [None], dtype=object)[graph.kind_code[pos]]
    providers = np.array(graph.providers + [None], dtype=object)[graph.provider_code[pos]]
    arrays = EstateArrays(ids=graph.ids[pos].astype(np.int64), names=graph.name.take(pos.tolist()),
                          keys=graph.natural_key.take(pos.tolist()), kinds=kinds,
                          crit=crit_names(graph, pos, db), provider=providers,
                          min_up=graph.min_up[pos].astype(np.int64), is_service=kinds == SERVICE_KIND,
                          src=np.zeros(0, dtype=np.int64), dst=np.zeros(0, dtype=np.int64),
                          member=np.zeros(0, dtype=bool), hard=np.zeros(0, dtype=bool))
    alive = graph.alive_now
    keep = graph.e_live & alive[graph.e_dnt] & alive[graph.e_dep]
    if keep.any() and pos.size:
        rank = np.full(graph.n, -1, dtype=np.int64)
        rank[pos] = np.arange(pos.size)
        arrays.src, arrays.dst = rank[graph.e_dnt[keep]], rank[graph.e_dep[keep]]
        arrays.member = graph.e_kind[keep] == graph.member_kind
        arrays.hard = ~graph.e_soft[keep]
    return arrays


def estate_arrays(db: so.Session) -> EstateArrays:
    """``load_estate_arrays``: from the impact engine's graph when it holds what this session
    reads (kept current from the change log, mapped from its snapshot by a fresh process),
    else from the database; reused while the inventory version is unchanged."""
    from inventory.services.estate_graph import on_graph, session_graph

    graph = session_graph(db)
    if graph is not None:
        return on_graph(graph, "estate_arrays", lambda: estate_arrays_from_graph(graph, db))
    return cache.cached(db, "plans:estate-arrays", lambda: load_estate_arrays(db))


# ---------------------------------------------------------------- which plans apply where

@dataclass
class PlanReach:
    """Where each plan applies: plan id → list of (how, asset positions)."""

    routes: dict[int, list[tuple[str, np.ndarray]]]


def _plan_reach(db: so.Session, arrays: EstateArrays, graph: Any = None) -> PlanReach:
    routes: dict[int, list[tuple[str, np.ndarray]]] = {}

    def add(plan_id: int, via: str, asset_ids: Iterable[int] | None = None,
            positions: np.ndarray | None = None) -> None:
        pos = arrays.positions(asset_ids) if positions is None else positions
        if pos.size:
            routes.setdefault(plan_id, []).append((via, pos))

    links = _fetch(db, "SELECT plan_id, asset_id, product_id, vendor_id FROM plan_links")
    direct: dict[int, list[int]] = {}
    by_product: dict[int, list[int]] = {}
    by_vendor: dict[int, list[int]] = {}
    for plan_id, asset_id, product_id, vendor_id in links:
        if asset_id is not None:
            direct.setdefault(plan_id, []).append(asset_id)
        elif product_id is not None:
            by_product.setdefault(product_id, []).append(plan_id)
        elif vendor_id is not None:
            by_vendor.setdefault(vendor_id, []).append(plan_id)
    for plan_id, asset_ids in direct.items():
        add(plan_id, "asset", asset_ids)
    # through an installed product / that product's vendor
    if by_product or by_vendor:
        products = {pid: (vid, name) for pid, vid, name in _fetch(db, "SELECT id, vendor_id, name FROM products")}
        vendor_names = dict(_fetch(db, "SELECT id, name FROM vendors"))
        wanted = {pid for pid, (vid, _n) in products.items() if pid in by_product or vid in by_vendor}
        installed: dict[int, Any] = {}
        if wanted and graph is not None:
            # The engine's graph holds every installation: no scan of the table.
            for product_id in wanted:
                groups = graph.installs.get(product_id, ())
                if groups:
                    installed[product_id] = graph.ids[np.concatenate([idx for _v, idx in groups])]
        elif wanted:
            id_list = ",".join(str(int(p)) for p in sorted(wanted))
            for asset_id, product_id in _fetch(db, "SELECT asset_id, product_id FROM installations "
                                                   f"WHERE product_id IN ({id_list})"):
                installed.setdefault(product_id, []).append(asset_id)
        for product_id, plan_ids in by_product.items():
            for plan_id in plan_ids:
                add(plan_id, f"product {products.get(product_id, (0, '?'))[1]}", installed.get(product_id, []))
        for vendor_id, plan_ids in by_vendor.items():
            asset_ids = [a for pid, (vid, _n) in products.items() if vid == vendor_id
                         for a in np.asarray(installed.get(pid, []), dtype=np.int64).tolist()]
            for plan_id in plan_ids:
                add(plan_id, f"vendor {vendor_names.get(vendor_id, '?')}", asset_ids)
        # through the cloud vendor hosting the asset
        for vendor_id, cloud in _fetch(db, "SELECT id, cloud_provider FROM vendors WHERE cloud_provider IS NOT NULL"):
            if vendor_id in by_vendor:
                pos = np.flatnonzero(arrays.provider == cloud)
                for plan_id in by_vendor[vendor_id]:
                    add(plan_id, f"cloud vendor {vendor_names.get(vendor_id, '?')}", positions=pos)
    # through a business service that depends on the asset
    for plan_id, asset_ids in direct.items():
        for service_pos in arrays.positions(asset_ids):
            if arrays.is_service[service_pos]:
                reached, _parent = arrays.reach(np.array([service_pos]))
                reached[service_pos] = False
                add(plan_id, f"service {arrays.names[service_pos]}", positions=np.flatnonzero(reached))
    return PlanReach(routes)


def plan_reach(db: so.Session, arrays: EstateArrays | None = None) -> PlanReach:
    from inventory.services.estate_graph import on_graph, session_graph

    arrays = arrays or estate_arrays(db)
    graph = session_graph(db)
    if graph is not None and graph._lazy.get("pages:estate_arrays") is arrays:
        # Plan links live in the graph's version too (the plans part of the counters).
        return on_graph(graph, "plan_reach", lambda: _plan_reach(db, arrays, graph))
    return cache.cached(db, "plans:reach", lambda: _plan_reach(db, arrays))


def applicable_plans(db: so.Session, asset_ids: Iterable[int] | None = None,
                     *, services_direct_only: bool = True,
                     include_services: bool = True) -> dict[int, dict[int, str]]:
    """asset id -> {plan id: how the plan applies} (see the module docstring for the rules).

    ``services_direct_only``: a business service counts only plans linked to it;
    ``include_services``: whether plans reach assets through the services that depend on them.
    """
    arrays = estate_arrays(db)
    wanted = None if asset_ids is None else set(arrays.positions(asset_ids).tolist())
    out: dict[int, dict[int, str]] = {}
    for plan_id, routes in plan_reach(db, arrays).routes.items():
        for via, positions in routes:
            if via.startswith("service ") and not include_services:
                continue
            for pos in positions.tolist():
                if wanted is not None and pos not in wanted:
                    continue
                if services_direct_only and via != "asset" and arrays.is_service[pos]:
                    continue
                out.setdefault(int(arrays.ids[pos]), {}).setdefault(plan_id, via)
    return out


# ---------------------------------------------------------------- coverage

def coverage(db: so.Session, now: datetime | None = None, *, criticality: str = "critical") -> dict[str, Any]:
    """Plan coverage of critical business services and critical assets.

    Keys: ``critical_services`` (total), ``covered_current``, ``stale_only``,
    ``uncovered`` (services), ``critical_assets`` (total, non-service),
    ``assets_covered_current``, ``assets_stale_only``, ``assets_uncovered``,
    and ``not_exercised`` / ``assets_not_exercised`` (covered, but none of
    their current plans has been exercised).  Entries are
    ``{asset_id, name, natural_key, criticality, kind, plans}`` with plans
    ``[{id, name, status, via}]``.  The result is shared between requests
    (cached): do not mutate it.
    """
    now = now or utcnow()
    plans = {pid: (name, plan_status(_PlanDates(interval, reviewed, exercised), now))
             for pid, name, interval, reviewed, exercised in db.execute(
                 sa.select(ContingencyPlan.id, ContingencyPlan.name, ContingencyPlan.review_interval_days,
                           ContingencyPlan.last_reviewed, ContingencyPlan.last_exercised))}
    # The report changes only with the inventory (version) or when a plan's status flips with
    # time: reuse it while neither happened.  Shared between requests — callers must not mutate it.
    signature = hashlib.sha1(repr(sorted(plans.items())).encode()).hexdigest()
    from inventory.services.shared_figures import shared

    return shared(db, f"plans:coverage:{criticality}", signature, lambda: _coverage(db, plans, now, criticality))


def _coverage(db: so.Session, plans: dict[int, tuple[str, str]], now: datetime,
              criticality: str) -> dict[str, Any]:
    arrays = estate_arrays(db)
    target = arrays.crit == criticality
    per_asset: dict[int, dict[int, str]] = {}
    for plan_id, routes in plan_reach(db, arrays).routes.items():
        if plan_id not in plans:
            continue
        for via, positions in routes:
            hits = positions[target[positions]]
            if via != "asset":  # a business service counts only its own plans
                hits = hits[~arrays.is_service[hits]]
            for pos in hits.tolist():
                per_asset.setdefault(pos, {}).setdefault(plan_id, via)
    order = {CURRENT: 0, NEVER_EXERCISED: 1, STALE: 2}
    out: dict[str, Any] = {"criticality": criticality, "generated_at": now.isoformat()}
    targets = np.flatnonzero(target)
    targets = targets[np.lexsort((arrays.ids[targets], np.array([arrays.names[i] for i in targets], dtype=object)))] \
        if targets.size else targets
    for prefix, service_rows in (("", True), ("assets_", False)):
        buckets: dict[str, list[dict[str, Any]]] = {"covered_current": [], "stale_only": [],
                                                    "uncovered": [], "not_exercised": []}
        rows = [int(p) for p in targets if bool(arrays.is_service[p]) == service_rows]
        for pos in rows:
            entry_plans = sorted(
                ({"id": pid, "name": plans[pid][0], "status": plans[pid][1], "via": via}
                 for pid, via in per_asset.get(pos, {}).items()),
                key=lambda p: (order[p["status"]], p["name"]))
            entry = {"asset_id": int(arrays.ids[pos]), "name": arrays.names[pos], "natural_key": arrays.keys[pos],
                     "criticality": arrays.crit[pos], "kind": arrays.kinds[pos], "plans": entry_plans}
            bucket, unexercised = coverage_bucket([p["status"] for p in entry_plans])
            buckets[bucket].append(entry)
            if unexercised:
                buckets["not_exercised"].append(entry)
        for key, items in buckets.items():
            out[prefix + key] = items
        total = len(rows)
        out["critical_services" if not prefix else "critical_assets"] = total
        out[prefix + "coverage_ratio"] = (len(buckets["covered_current"]) / total) if total else None
    return out


# ---------------------------------------------------------------- recovery targets

def rto_check(db: so.Session, *, service_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    """Every live business service: its promised RTO against its slowest hard dependency.

    ``status``: ``at_risk`` (a dependency's plan RTO exceeds the promise),
    ``unverified`` (no dependency is slower, but some have no plan RTO),
    ``ok``, or ``no_rto`` (no plan with an RTO is linked to the service).
    The result is shared between requests (cached): do not mutate it.
    """
    rtos = {pid: (rto, name) for pid, rto, name in db.execute(
        sa.select(ContingencyPlan.id, ContingencyPlan.rto_minutes, ContingencyPlan.name)) if rto is not None}
    # RTO values are not covered by the inventory version: they are part of the cache key.
    signature = hashlib.sha1(repr(sorted(rtos.items())).encode()).hexdigest()
    ids_key = "all" if service_ids is None else ",".join(str(i) for i in sorted(set(service_ids)))
    if len(ids_key) > 200:
        ids_key = hashlib.sha1(ids_key.encode()).hexdigest()
    from inventory.services.shared_figures import shared

    return shared(db, f"plans:rto:{ids_key}", signature, lambda: _rto_check(db, rtos, service_ids))


def rto_page_rows(db: so.Session, limit: int) -> dict[str, Any]:
    """What the plans page shows of ``rto_check``: the services at risk or unverified (the
    first ``limit``, each with its first five unplanned dependencies and their count), and
    the counts.  Shared by every worker (``page_figures``) without the full lists, which are
    tens of megabytes at 100k assets."""
    from inventory.services.shared_figures import shared

    rtos = {pid: rto for pid, rto in db.execute(sa.select(ContingencyPlan.id, ContingencyPlan.rto_minutes))
            if rto is not None}
    signature = hashlib.sha1(repr(sorted(rtos.items())).encode()).hexdigest()

    def compute() -> dict[str, Any]:
        flagged = [r for r in rto_check(db) if r["status"] in ("at_risk", "unverified")]
        rows = [{**r, "unplanned": r["unplanned"][:5], "unplanned_total": len(r["unplanned"])}
                for r in flagged[:limit]]
        return {"rows": rows, "total": len(flagged), "at_risk": sum(1 for r in flagged if r["status"] == "at_risk")}
    return shared(db, f"plans:rto-page:{limit}", signature, compute)


def _rto_check(db: so.Session, rtos: dict[int, tuple[int, str]],
               service_ids: Iterable[int] | None) -> list[dict[str, Any]]:
    arrays = estate_arrays(db)
    reach = plan_reach(db, arrays).routes
    # Per asset: the slowest plan restoring it (not through services: that would be circular),
    # and each service's promise: the fastest plan linked to it.
    slow_rto = np.full(arrays.n, -1, dtype=np.int64)
    slow_plan = np.full(arrays.n, -1, dtype=np.int64)
    slow_via: dict[int, str] = {}
    promise: dict[int, tuple[int, str]] = {}
    for plan_id in sorted(rtos, key=lambda p: (rtos[p][0], p)):
        rto, name = rtos[plan_id]
        for via, positions in reach.get(plan_id, []):
            if via.startswith("service "):
                continue
            better = positions[slow_rto[positions] < rto]
            slow_rto[better] = rto
            slow_plan[better] = plan_id
            for pos in better.tolist():
                slow_via[pos] = via
            if via == "asset":
                for pos in positions.tolist():
                    if arrays.is_service[pos] and (pos not in promise or rto < promise[pos][0]):
                        promise[pos] = (rto, name)
    services = np.flatnonzero(arrays.is_service)
    if service_ids is not None:
        services = np.intersect1d(services, arrays.positions(service_ids))
    results = []
    for svc_pos in services.tolist():
        reached, parent = arrays.reach(np.array([svc_pos]), "hard")
        reached[svc_pos] = False
        deps = np.flatnonzero(reached)

        def path_to(pos: int) -> list[str]:
            names = []
            cur = pos
            while cur != -1:
                names.append(arrays.names[cur])
                cur = int(parent[cur]) if cur != svc_pos else -1
            return list(reversed(names))

        def dep_entry(pos: int) -> dict[str, Any]:
            return {"asset_id": int(arrays.ids[pos]), "name": arrays.names[pos], "natural_key": arrays.keys[pos],
                    "rto_minutes": int(slow_rto[pos]), "plan": rtos[int(slow_plan[pos])][1],
                    "via": slow_via[pos], "path": path_to(pos)}

        planned = deps[slow_rto[deps] >= 0]
        slowest = int(planned[np.argmax(slow_rto[planned])]) if planned.size else None
        unplanned = [{"asset_id": int(arrays.ids[p]), "name": arrays.names[p], "natural_key": arrays.keys[p]}
                     for p in deps[slow_rto[deps] < 0].tolist()]
        promised = promise.get(svc_pos)
        too_slow = []
        if promised is not None:
            slower = planned[slow_rto[planned] > promised[0]]
            too_slow = sorted((dep_entry(p) for p in slower.tolist()), key=lambda x: (-x["rto_minutes"], x["name"]))
        status = ("no_rto" if promised is None else "at_risk" if too_slow else "unverified" if unplanned else "ok")
        results.append({
            "asset_id": int(arrays.ids[svc_pos]), "name": arrays.names[svc_pos],
            "natural_key": arrays.keys[svc_pos], "criticality": arrays.crit[svc_pos],
            "rto_minutes": promised[0] if promised else None, "plan": promised[1] if promised else None,
            "dependencies": int(deps.size),
            "slowest": None if slowest is None else dep_entry(slowest),
            "too_slow": too_slow, "unplanned": unplanned, "status": status,
            "shortfall_minutes": (int(slow_rto[slowest]) - promised[0]) if (promised and too_slow) else 0,
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
        if has_line_break(name):
            raise ValidationError("name", f"name: {ONE_LINE_MESSAGE}")
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
    for v in value:
        problem = text_problem(v)
        if problem:
            # Refused, never cleaned: the database layer would strip a NUL and find the name anyway.
            raise ValidationError(field, f"{field}: {problem}")
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
    # parse_datetime refuses, naming it, a date whose offset leaves years 1..9999 in UTC.
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
