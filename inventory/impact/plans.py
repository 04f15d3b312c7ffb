"""Which contingency plans apply to a hit asset, and how ready they are.

A plan applies to a hit asset when it is linked to

1. the asset itself (``via: "asset"``),
2. a product installed on the asset, or a product named by the outage scope
   (``via: "product"``),
3. the vendor of a product installed on the asset, or the outage's vendor
   (``via: "vendor"``) — the vendor's outage runbook applies to everything the
   outage reaches,
4. a business service the asset supports, i.e. a ``service`` asset that
   (transitively) depends on it (``via: "service"``).

That is also the precedence: a plan reached several ways is listed once, under
its most specific route; within a route current plans come first, then never
exercised, then stale.  Readiness uses ``inventory.models.plan_status``;
an asset with no plan at all is a **gap**.

For totals over tens of thousands of hits, readiness is also kept as per-asset
*levels* (3 current, 2 never exercised, 1 stale, 0 none): the best level by
each route, computed with array operations and cached per graph view until a
plan's status changes with time.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable

import numpy as np

from inventory.impact.graph import Graph, PlanInfo, View
from inventory.models.plan_status import CURRENT, NEVER_EXERCISED, STALE, plan_status, review_due

LEVEL = {CURRENT: 3, NEVER_EXERCISED: 2, STALE: 1}
STATUS_ORDER = {CURRENT: 0, NEVER_EXERCISED: 1, STALE: 2}
VIA_ORDER = ("asset", "product", "vendor", "service")


@dataclass
class PlanSet:
    """The plans known to one query: the graph's plus any a what-if adds."""

    plans: dict[int, PlanInfo]
    asset_plans: dict[int, list[int]]
    product_plans: dict[int, list[int]]
    vendor_plans: dict[int, list[int]]
    statuses: dict[int, str]
    forced: dict[int, str]   # what-if plans with a stated status

    @classmethod
    def for_graph(cls, graph: Graph, now: datetime, extra: Iterable[dict[str, Any]] = ()) -> "PlanSet":
        extra = list(extra)
        if not extra:
            # The graph's own plans, shared (read-only) with every query.
            return cls(graph.plans, graph.asset_plans, graph.product_plans, graph.vendor_plans,
                       _stored_statuses(graph, now), {})
        plans = dict(graph.plans)
        asset_plans = {k: list(v) for k, v in graph.asset_plans.items()}
        product_plans = {k: list(v) for k, v in graph.product_plans.items()}
        vendor_plans = {k: list(v) for k, v in graph.vendor_plans.items()}
        forced: dict[int, str] = {}
        for i, plan in enumerate(extra):
            pid = -(i + 1)   # what-if plans get negative ids: never confused with stored ones
            plans[pid] = PlanInfo(pid, plan["name"], 0, None, None)
            forced[pid] = plan["status"]
            target = {"asset": asset_plans, "product": product_plans, "vendor": vendor_plans}[plan["kind"]]
            target.setdefault(plan["target"], []).append(pid)
        statuses = dict(_stored_statuses(graph, now))
        for pid, status in forced.items():
            statuses[pid] = status
        return cls(plans, asset_plans, product_plans, vendor_plans, statuses, forced)

    def sort_keys(self) -> dict[int, tuple[int, str, int]]:
        """Within a route: current first, then never exercised, then stale; then by name."""
        keys = self.__dict__.get("_keys")
        if keys is None:
            keys = self.__dict__["_keys"] = {
                pid: (STATUS_ORDER[self.statuses[pid]], p.name, pid) for pid, p in self.plans.items()}
        return keys  # type: ignore[no-any-return]

    def entry(self, pid: int, via: str) -> dict[str, Any]:
        """One plan as listed on a hit (shared between hits: treat as read-only)."""
        cache = self.__dict__.setdefault("_entries", {})
        found = cache.get((pid, via))
        if found is None:
            found = cache[(pid, via)] = {"id": pid if pid > 0 else None, "name": self.plans[pid].name,
                                         "status": self.statuses[pid], "via": via}
        return found  # type: ignore[no-any-return]

    def level(self, plan_ids: Iterable[int]) -> int:
        return max((LEVEL[self.statuses[p]] for p in plan_ids), default=0)

    def signature(self) -> Any:
        """Identifies the plan state: the stored plans' statuses (in the graph's fixed plan
        order), or the full content when a what-if adds plans."""
        if not self.forced:
            return ("stored", tuple(self.statuses.values()))
        return tuple(sorted(self.statuses.items())), \
            tuple(sorted((k, tuple(v)) for k, v in self.asset_plans.items())), \
            tuple(sorted((k, tuple(v)) for k, v in self.product_plans.items())), \
            tuple(sorted((k, tuple(v)) for k, v in self.vendor_plans.items()))


def _stored_statuses(graph: Graph, now: datetime) -> dict[int, str]:
    """Every stored plan's status at ``now``, reused until the next review falls due
    (the only moment a status changes by itself)."""
    cached = graph._lazy.get("plan_statuses")
    if cached is not None and cached[0] <= now < cached[1]:
        return cached[2]  # type: ignore[no-any-return]
    statuses = {pid: plan_status(p, now) for pid, p in graph.plans.items()}  # type: ignore[arg-type]
    upcoming = [due for p in graph.plans.values() if (due := review_due(p)) is not None and due > now]  # type: ignore[arg-type]
    until = min(upcoming) if upcoming else now + timedelta(days=3650)
    graph._lazy["plan_statuses"] = (now, until, statuses)
    return statuses


def asset_levels(graph: Graph, view: View, plans: PlanSet) -> dict[str, np.ndarray]:
    """Per asset, the best plan level by each route (cached on the view per plan-status state)."""
    key = ("plan_levels", plans.signature())
    cached = view.cache.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    n = graph.n
    own = np.zeros(n, dtype=np.int8)
    for idx, plan_ids in plans.asset_plans.items():
        own[idx] = plans.level(plan_ids)
    product = np.zeros(n, dtype=np.int8)
    for pid, plan_ids in plans.product_plans.items():
        _raise(product, graph, [pid], plans.level(plan_ids))
    vendor = np.zeros(n, dtype=np.int8)
    for vid, plan_ids in plans.vendor_plans.items():
        _raise(vendor, graph, graph.vendor_products.get(vid, []), plans.level(plan_ids))
    service = service_levels(graph, view, own)
    levels = {"asset": own, "product": product, "vendor": vendor, "service": service,
              "best": np.maximum(np.maximum(own, product), np.maximum(vendor, service))}
    view.cache[key] = levels
    return levels


def _raise(target: np.ndarray, graph: Graph, product_ids: Iterable[int], level: int) -> None:
    if level == 0:
        return
    for pid in product_ids:
        for _version, idx in graph.installs.get(pid, []):
            target[idx] = np.maximum(target[idx], level)   # indices are unique within a group


def service_levels(graph: Graph, view: View, own: np.ndarray) -> np.ndarray:
    """Per asset, the best plan level among the services that (transitively) depend on it.

    Breadth-first from the services with the best plans down their dependencies,
    then the next level from what is left: each asset is reached once."""
    n = graph.n
    out = np.zeros(n, dtype=np.int8)
    assigned = np.zeros(n, dtype=bool)
    services = np.flatnonzero(graph.is_service & view.alive)
    for level in (3, 2, 1):
        # A service does not "support" itself: start from its dependencies.
        frontier = _forward_step(view, services[own[services] == level], assigned)
        while frontier.size:
            assigned[frontier] = True
            out[frontier] = level
            frontier = _forward_step(view, frontier, assigned)
    return out


def _forward_step(view: View, frontier: np.ndarray, assigned: np.ndarray) -> np.ndarray:
    """The not yet assigned dependencies of ``frontier``, each once, in index order."""
    starts = view.fwd.indptr[frontier].astype(np.int64)
    counts = view.fwd.indptr[frontier + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    pos = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
    reached = np.zeros(assigned.size, dtype=bool)
    reached[view.fwd.dst[pos]] = True
    reached &= ~assigned
    return np.flatnonzero(reached)


def route_entries(plans: PlanSet, via: str, plan_ids: Iterable[int]) -> list[tuple[int, dict[str, Any]]]:
    """One route's plans (``via`` one of VIA_ORDER), each once, in ``PlanSet.sort_keys``
    order, as (plan id, entry)."""
    unique = dict.fromkeys(plan_ids)
    if not unique:
        return []
    keys = plans.sort_keys()
    return [(pid, plans.entry(pid, via)) for pid in sorted(unique, key=keys.__getitem__)]


def merge_routes(routes: Iterable[list[tuple[int, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The applicable plans of one asset, in precedence order, each listed once: under the
    first of its ``routes`` (given in VIA_ORDER) that lists it."""
    seen: set[int] = set()
    out: list[dict[str, Any]] = []
    for route in routes:
        for pid, entry in route:
            if pid not in seen:
                seen.add(pid)
                out.append(entry)
    return out
