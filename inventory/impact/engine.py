"""The blast radius: which assets a vendor outage hits, how badly, why, and what the plan is.

Semantics (DESIGN.md, "Blast radius semantics"):

* **Seeds** are the existing assets the scope matches (``inventory.impact.scope``):
  through installations of the vendor's products (narrowed by product,
  version range), or, for a cloud vendor, through hosting on its provider
  (narrowed by region); then by OS family, account, environment and tags.
  Retired assets are never seeds, nor anywhere in the graph.
* **Propagation** runs over reverse dependency edges to a fixpoint:

  - a *hard* dependency down -> the dependent is **down**;
  - a *soft* dependency down or degraded -> **degraded**; a *hard* dependency
    degraded -> degraded too (a service on a degraded pool is degraded);
  - a *group* (``min_up`` set; members are its ``member-of`` dependencies) is
    down when fewer than ``min_up`` members are up (a degraded member counts
    as up), degraded while any member is down or degraded; a group's other
    edges behave normally.

  Status only ever rises (up -> degraded -> down), so the fixpoint is reached
  in two level-synchronous breadth-first sweeps over arrays: first the *down*
  closure (hard edges, group thresholds), then the *degraded* closure (every
  edge, from the soft/group boundary of the down set).  Each asset is expanded
  once per sweep, so cycles terminate and the cost is linear in the edges
  reached.  The sweeps run compiled (``inventory.impact.kernel``, Numba) once the
  kernel is loaded, and as NumPy array operations until then (``inventory.impact.backend``):
  the same arrays either way.
* **Hops** are breadth-first levels: the shortest chain of causing edges back
  to a seed (a group counts from the member that tipped it).  Each hit keeps
  one parent on such a chain, so its explaining path is a real chain of
  edges ending at a seed, and ``len(path) == hops + 1``.
* **Determinism**: ties between equally short explanations go to the parent
  with the highest asset id (edges are kept in a canonical order), and listings
  are sorted (status, criticality, hops, natural key).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Iterator, Mapping

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import CRITICALITIES
from inventory.db import utcnow
from inventory.impact import backend
from inventory.impact.graph import (Graph, GraphLag, View, connection_factory, get_graph_state, notify,
                                    to_micros)
from inventory.impact.plans import PlanSet, asset_levels, merge_routes, route_entries
from inventory.impact.scope import (
    Scope,
    ScopeError,
    parse_scope_and_graph,
    version_matches,
    version_unknown_reason,
)
from inventory.memory import paused_gc

UP, DEGRADED, DOWN = 0, 1, 2
STATUS_NAMES = {DOWN: "down", DEGRADED: "degraded"}
COVERAGE_NAMES = {3: "current", 2: "never_exercised", 1: "stale_only", 0: "gap"}


# ---------------------------------------------------------------- propagation

@dataclass
class Propagation:
    status: np.ndarray   # int8: UP, DEGRADED, DOWN
    dist: np.ndarray     # int32 hops (-1 when not hit)
    parent: np.ndarray   # int32: the neighbour on one shortest explaining chain (-1 for seeds)
    pedge: np.ndarray    # int32: graph edge index between the asset and its parent


def propagate(view: View, seeds: np.ndarray, groups: bool = True) -> Propagation:
    """Statuses, hops and explaining parents for an outage starting at ``seeds``
    (unique asset indices), by the kernel (``inventory.impact.backend``).

    ``groups=False`` treats member-of edges as ordinary hard edges (for
    comparing the down set with plain reachability)."""
    seeds = np.ascontiguousarray(seeds, dtype=np.int64)
    if seeds.size > 1 and not (seeds[1:] > seeds[:-1]).all():
        seeds = np.unique(seeds)   # the kernel's tie rule walks levels in ascending order
    status, dist, link = backend.routines().propagate_arrays(seeds, *view.kernel_inputs(), groups)
    parent, pedge = link[:, 0], link[:, 1]
    return Propagation(status, dist, parent, pedge)


# ---------------------------------------------------------------- seeds

@dataclass
class SeedMatch:
    mask: np.ndarray                                   # bool[n]
    via_install: list[tuple[int, str | None, np.ndarray]] = field(default_factory=list)
    hosted: np.ndarray | None = None                    # bool[n] hosted-on-provider seeds
    unversioned: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # (product id, recorded version, asset indices) whose version a range cannot place
    unversioned_via: list[tuple[int, str | None, np.ndarray]] = field(default_factory=list)


def _allowed(codes: np.ndarray, values: list[Any], wanted: tuple[str, ...]) -> np.ndarray:
    table = np.array([v in wanted for v in values] + [False], dtype=bool)
    return table[codes]


def find_seeds(graph: Graph, view: View, scope: Scope, at_micros: int | None,
               conn_factory: Any) -> SeedMatch:
    n = graph.n
    filt = view.alive.copy()
    if scope.os:
        filt &= _allowed(graph.os_code, graph.os_values, scope.os)
    if scope.regions:
        filt &= _allowed(graph.region_code, graph.region_values, scope.regions)
    if scope.accounts:
        filt &= _allowed(graph.account_code, graph.account_values, scope.accounts)
    if scope.environments:
        filt &= _allowed(graph.env_code, graph.env_values, scope.environments)
    if scope.tags:
        index = graph.tag_index()
        for key, value in scope.tags:
            tagged = np.zeros(n, dtype=bool)
            tagged[index.get((key, value), np.empty(0, dtype=np.int32))] = True
            filt &= tagged
    install_first = graph.install_first_seen(conn_factory) if at_micros is not None else None
    product_ids = scope.product_ids or tuple(graph.vendor_products.get(scope.vendor_id, []))
    mask = np.zeros(n, dtype=bool)
    matched: list[tuple[int, str | None, np.ndarray]] = []
    unversioned: list[np.ndarray] = []
    unversioned_via: list[tuple[int, str | None, np.ndarray]] = []
    for pid in product_ids:
        for version, idx in graph.installs.get(pid, []):
            if install_first is not None:
                idx = _installed_by(idx, install_first.get(pid), at_micros)  # type: ignore[arg-type]
            if scope.specifier is not None:
                verdict = version_matches(scope.specifier, version)
                if verdict is None:
                    unknown = idx[filt[idx]]
                    if unknown.size:
                        unversioned.append(unknown)
                        unversioned_via.append((pid, version, unknown))
                    continue
                if not verdict:
                    continue
            idx = idx[filt[idx]]
            if idx.size:
                mask[idx] = True
                matched.append((pid, version, idx))
    hosted = None
    if scope.hosting_seeds and scope.cloud_provider in graph.providers:
        hosted = (graph.provider_code == graph.providers.index(scope.cloud_provider)) & filt
        mask |= hosted
    return SeedMatch(mask=mask, via_install=matched, hosted=hosted,
                     unversioned=np.unique(np.concatenate(unversioned)) if unversioned
                     else np.empty(0, dtype=np.int64), unversioned_via=unversioned_via)


def _installed_by(idx: np.ndarray, firsts: tuple[np.ndarray, np.ndarray] | None, at: int) -> np.ndarray:
    if firsts is None:
        return idx
    sorted_idx, stamps = firsts
    pos = np.clip(np.searchsorted(sorted_idx, idx), 0, max(sorted_idx.size - 1, 0))
    known = sorted_idx[pos] == idx
    return idx[~known | (stamps[pos] <= at)]


# ---------------------------------------------------------------- results

@dataclass
class Hit:
    asset_id: int
    natural_key: str
    name: str
    kind: str
    provider: str | None
    account: str | None
    region: str | None
    os_family: str | None
    environment: str | None
    criticality: str
    owner: str | None
    status: str
    hops: int
    seed: bool
    path: list[dict[str, Any]]
    plans: list[dict[str, Any]]
    gap: bool
    services: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"asset_id": self.asset_id, "natural_key": self.natural_key, "name": self.name,
                "kind": self.kind, "provider": self.provider, "account": self.account, "region": self.region,
                "os_family": self.os_family, "environment": self.environment, "criticality": self.criticality,
                "owner": self.owner, "status": self.status, "hops": self.hops, "seed": self.seed,
                "path": self.path, "plans": self.plans, "gap": self.gap, "services": self.services}


class ImpactResult:
    """One blast radius.  Totals and confidence are computed eagerly; the hit
    list (paths, plans, services per asset) is built on first use."""

    def __init__(self, graph: Graph, view: View, scope: Scope, as_of: datetime | None,
                 seeds: SeedMatch, prop: Propagation, plans: PlanSet, levels: dict[str, np.ndarray],
                 scope_plan_ids: dict[str, list[int]], computed_at: datetime) -> None:
        self.graph = graph
        self.view = view
        self.scope = scope
        self.as_of = as_of
        self.computed_at = computed_at
        self.seed_match = seeds
        self.prop = prop
        self.plan_set = plans
        self.levels = levels
        self.scope_plan_ids = scope_plan_ids
        self.confidence: dict[str, Any] = {}   # filled in by the caller (see _compute)
        self.conn_factory: Any = None           # set by _compute: reads installation facts
        self.what_if: dict[str, Any] | None = None
        # Every plan of the scope's product or vendor covers every hit.
        scope_level = plans.level(scope_plan_ids["product"] + scope_plan_ids["vendor"])
        codes, self._offsets = graph.totals_codes()
        # The hits, their best plan levels and their counts by every totals coding, in one pass.
        best = levels["best"].astype(np.int8, copy=False)
        self.hit_idx, self.best_level, self._counts = backend.routines().summarise_hits(
            prop.status, codes, self._offsets, best, scope_level)
        self.totals = self._totals()
        self._hits: list[Hit] | None = None
        self._seeds: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------ totals

    def _totals(self) -> dict[str, Any]:
        g, h = self.graph, self.hit_idx
        # Criticality x kind x OS, account and region (x provider), each by status (see
        # __init__); the breakdowns come from those counts.
        counts, offsets = self._counts, self._offsets
        shape = (len(CRITICALITIES) + 1, len(g.kinds), len(g.os_values), 2)
        cube = counts[offsets[0]:offsets[1]].reshape(shape)
        n_down = int(cube[..., 1].sum())

        def split(counts: np.ndarray, values: list[Any]) -> list[tuple[Any, int, int]]:
            return [(values[i], int(counts[i, 1]), int(counts[i, 0])) for i in np.flatnonzero(counts.sum(1))]

        crit_values = list(CRITICALITIES) + ["unknown"]
        by_crit = {c: {"down": 0, "degraded": 0, "total": 0} for c in CRITICALITIES}
        for name, d, deg in split(cube.sum(axis=(1, 2)), crit_values):
            by_crit[name] = {"down": d, "degraded": deg, "total": d + deg}

        def place(coding: int, values: list[Any], label: str) -> list[dict[str, Any]]:
            prov_n = len(g.providers)
            place_counts = counts[offsets[coding]:offsets[coding + 1]].reshape(-1, 2)
            rows = []
            for k in np.flatnonzero(place_counts.sum(1)):
                value = values[int(k) // prov_n]
                if value is None:
                    continue
                deg, d = int(place_counts[k, 0]), int(place_counts[k, 1])
                rows.append({"provider": g.providers[int(k) % prov_n], label: value,
                             "down": d, "degraded": deg, "total": d + deg})
            rows.sort(key=lambda r: (-r["total"], str(r["provider"]), str(r[label])))
            return rows

        # Hit business services: down first, then by criticality, then natural key.
        services = g.service_idx[self.prop.status[g.service_idx] > UP]
        services = services[np.lexsort((g.crit_code[services], self.prop.status[services] != DOWN))]
        rows = g.service_rows()
        names = [STATUS_NAMES[s] for s in self.prop.status[services].tolist()]
        svc_rows = []
        for i, st, hops in zip(services.tolist(), names, self.prop.dist[services].tolist()):
            asset_id, key, name, crit = rows[i]
            svc_rows.append({"asset_id": asset_id, "natural_key": key, "name": name, "status": st,
                             "hops": hops, "criticality": crit})
        coverage = np.bincount(self.best_level, minlength=4) if h.size else np.zeros(4, dtype=np.int64)
        # Sorted by name: the same answer whatever order the values were first seen in.
        by_kind = {name: {"down": d, "degraded": deg, "total": d + deg}
                   for name, d, deg in sorted(split(cube.sum(axis=(0, 2)), g.kinds), key=lambda r: str(r[0]))}
        by_os = {str(name): {"down": d, "degraded": deg, "total": d + deg}
                 for name, d, deg in sorted(split(cube.sum(axis=(0, 1)), g.os_values), key=lambda r: str(r[0]))
                 if name is not None}
        return {
            "hits": int(h.size),
            "seeds": int(self.seed_match.mask.sum()),
            "version_unknown": int(self.version_unknown_order.size),
            "by_status": {"down": n_down, "degraded": int(h.size - n_down)},
            "by_criticality": by_crit,
            "by_service": svc_rows,
            "by_account": place(1, g.account_values, "account"),
            "by_region": place(2, g.region_values, "region"),
            "by_kind": by_kind,
            "by_os": by_os,
            "plan_coverage": {COVERAGE_NAMES[lvl]: int(coverage[lvl]) for lvl in (3, 2, 1, 0)},
        }

    def hits_per_scope(self) -> np.ndarray:
        """Hits per collection scope code (``Graph.scope_values``; manual imports last)."""
        return self._counts[self._offsets[3]:self._offsets[4]].reshape(-1, 2).sum(axis=1)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ hits

    @property
    def ordered_idx(self) -> np.ndarray:
        g, h = self.graph, self.hit_idx
        if not h.size:
            return h
        order = np.lexsort((g.key_rank[h], self.prop.dist[h], g.crit_code[h], -self.prop.status[h]))
        return h[order]

    @property
    def hits(self) -> list[Hit]:
        if self._hits is None:
            self._hits = self.build_hits(self.ordered_idx)
        return self._hits

    def build_hits(self, idx: np.ndarray, context: Any = None) -> list[Hit]:
        """Hit objects for the asset indices ``idx`` (in that order); ``context``: ``hit_context``
        of a whole listing this is a chunk of."""
        with paused_gc():
            return self._build_hits(idx, context)

    def _build_hits(self, idx: np.ndarray, context: Any = None) -> list[Hit]:
        cols = self._hit_columns(idx, context)
        paths = _PathBuilder(self.graph, self.prop, cols.labels)
        out = []
        for i, asset_id, key_, name, owner, kind, provider, account, region, os_family, env, crit, status, hops, \
                seed, (entries, service_names) in zip(*cols.rows()):
            out.append(Hit(
                asset_id=asset_id, natural_key=key_, name=name, kind=kind, provider=provider,
                account=account, region=region, os_family=os_family, environment=env, criticality=crit,
                owner=owner, status=status, hops=hops, seed=seed, path=paths.of(i),
                plans=list(entries), gap=not entries, services=list(service_names)))
        return out

    def hits_json(self, idx: np.ndarray, context: Any = None) -> list[str]:
        """Each hit of ``idx`` as the JSON text of ``Hit.to_dict()`` (in that order), written
        column by column from shared pieces — each value of a coded column, each explaining
        path's tail, each combination of plans and services is encoded once — without
        building the hits as Python objects.  ``context``: ``hit_context`` of a whole listing
        this is a chunk of."""
        with paused_gc():
            text = _HitText(self, idx, context)
            g, c = self.graph, text.columns
            enc = [_json_coded(values, codes) for values, codes in (
                (g.kinds, g.kind_code), (g.providers, g.provider_code), (g.account_values, g.account_code),
                (g.region_values, g.region_code), (g.os_values, g.os_code), (g.env_values, g.env_code),
                ([*CRITICALITIES, "unknown"], np.minimum(g.crit_code, len(CRITICALITIES))),
                (g.owner_values, g.owner_code))]
            coded = [e(text.idx) for e in enc]
            status = _json_coded([STATUS_NAMES.get(k) for k in range(3)], self.prop.status)(text.idx)
            seed = ["true" if s else "false" for s in self.seed_match.mask[text.idx].tolist()]
            template = ('{"asset_id":%d,"natural_key":%s,"name":%s,"kind":%s,"provider":%s,"account":%s,'
                        '"region":%s,"os_family":%s,"environment":%s,"criticality":%s,"owner":%s,"status":%s,'
                        '"hops":%d,"seed":%s,"path":%s,"plans":%s,"gap":%s,"services":%s}')
            return [template % row for row in zip(
                c["ids"], c["keys_js"], c["names_js"], *coded, status, c["hops"], seed, text.paths(),
                *text.combos())]

    def incident_rows(self, idx: np.ndarray, context: Any = None) -> list[tuple[Any, ...]]:
        """For an incident snapshot: (asset id, natural key, name, kind, status, hops, criticality,
        the JSON text of the details) per hit of ``idx``; details as ``services.incidents`` stores
        them (seed, path, plans, gap, services and the asset's facts), from shared pieces."""
        with paused_gc():
            text = _HitText(self, idx, context)
            g, c, at = self.graph, text.columns, text.idx
            facts = [_json_coded(values, codes)(at) for values, codes in (
                (g.providers, g.provider_code), (g.account_values, g.account_code), (g.region_values, g.region_code),
                (g.os_values, g.os_code), (g.env_values, g.env_code), (g.owner_values, g.owner_code))]
            seed = ["true" if s else "false" for s in self.seed_match.mask[at].tolist()]
            template = ('{"seed":%s,"path":%s,"plans":%s,"gap":%s,"services":%s,"provider":%s,"account":%s,'
                        '"region":%s,"os_family":%s,"environment":%s,"owner":%s}')
            details = [template % row for row in zip(seed, text.paths(), *text.combos(), *facts)]
            crit_names = [*CRITICALITIES, "unknown"]
            return list(zip(c["ids"], c["keys"], c["names"], _labels(g.kinds, g.kind_code[at]),
                            _labels([STATUS_NAMES.get(k) for k in range(3)], self.prop.status[at]), c["hops"],
                            _labels(crit_names, np.minimum(g.crit_code[at], len(CRITICALITIES))), details))

    def hit_context(self, idx: np.ndarray) -> "_HitContext":
        """What the hits ``idx`` need from walks over the graph, as small integer codes per
        asset: the set of services above each, and the set of its installed products and
        vendors that carry plans.  Computed once for a whole listing written in chunks."""
        g, plans = self.graph, self.plan_set
        idx = np.asarray(idx, dtype=np.int64)
        svc_code, svc_keys = self._service_codes(idx)
        # Planned products and vendors as bits (a product with plans of its own, a vendor with
        # plans): assets with the same bits have the same product and vendor routes.
        parts = [(pid, [pid], True) for pid in sorted(plans.product_plans)] + \
            [(vid, g.vendor_products.get(vid, []), False) for vid in sorted(plans.vendor_plans)]
        words = max(1, -(-len(parts) // 63))
        bits = np.zeros((g.n, words), dtype=np.int64)
        for b, (_key, product_ids, _is_product) in enumerate(parts):
            word, bit = divmod(b, 63)
            for pid in product_ids:
                for _version, installed in g.installs.get(pid, []):
                    bits[installed, word] |= np.int64(1) << np.int64(bit)
        rows, inverse = np.unique(bits[idx], axis=0, return_inverse=True)
        pv_code = np.zeros(g.n, dtype=np.int64)
        pv_code[idx] = inverse.reshape(-1)
        pv_keys = []
        for row in rows.tolist():
            on = [b for b in range(len(parts)) if row[b // 63] >> (b % 63) & 1]
            pv_keys.append((tuple(parts[b][0] for b in on if parts[b][2]),
                            tuple(parts[b][0] for b in on if not parts[b][2])))
        own = np.zeros(g.n, dtype=bool)
        own[[i for i in plans.asset_plans if i < g.n]] = True
        return _HitContext(svc_code, svc_keys, pv_code, pv_keys, own, listing=idx)

    def _service_codes(self, idx: np.ndarray) -> tuple[np.ndarray, list[tuple[int, ...]]]:
        """Per asset, a code for the set of business services above it (0: none), and each
        code's services (ascending indices).  For many hits: one compiled walk down from each
        hit service (``kernel.reach_pairs``), the (hit, service) pairs sorted once, and each
        hit's set interned by its bytes (no tuple per hit)."""
        g, view = self.graph, self.view
        code = np.zeros(g.n, dtype=np.int64)
        services = self.hit_idx[g.is_service[self.hit_idx]]
        if not services.size or not idx.size:
            return code, [()]
        if idx.size < services.size:
            table: dict[tuple[int, ...], int] = {(): 0}
            for i, found in self._services_above(idx).items():
                code[i] = table.setdefault(tuple(sorted(found)), len(table))
            return code, list(table)
        wanted = np.zeros(g.n, dtype=np.bool_)
        wanted[idx] = True
        node, owner = backend.routines().reach_pairs(services.astype(np.int64), view.fwd.indptr, view.fwd.pairs,
                                                     wanted)
        if not node.size:
            return code, [()]
        order = np.argsort(node * g.n + owner)
        node, owner = node[order], owner[order].astype(np.int32)
        cuts = np.flatnonzero(np.diff(node)) + 1
        starts = np.concatenate([[0], cuts]) * 4
        ends = np.concatenate([cuts, [node.size]]) * 4
        raw = memoryview(np.ascontiguousarray(owner)).cast("B")
        seen: dict[bytes, int] = {b"": 0}
        code[node[starts // 4]] = [seen.setdefault(raw[a:b].tobytes(), len(seen))
                                   for a, b in zip(starts.tolist(), ends.tolist())]
        return code, [tuple(np.frombuffer(key, dtype=np.int32).tolist()) for key in seen]

    def _combinations(self, idx: np.ndarray, context: "_HitContext", build: Any) -> list[Any]:
        """``build(own, product-and-vendor code, services code, context)`` per hit of ``idx``,
        worked out once per distinct combination (an estate has many look-alike hosts)."""
        own = np.where(context.own[idx], idx, -1)
        # One integer per (own, products, services) combination: sortable without tuples.
        p_n, v_n = len(context.pv_keys), len(context.svc_keys)
        combined = ((own + 1) * p_n + context.pv_code[idx]) * v_n + context.svc_code[idx]
        distinct, inverse = np.unique(combined, return_inverse=True)
        values = []
        for c in distinct.tolist():
            rest, v = divmod(c, v_n)
            o, p = divmod(rest, p_n)
            values.append(build(o - 1, p, v, context))
        return [values[k] for k in inverse.reshape(-1).tolist()]

    def _hit_columns(self, idx: np.ndarray, context: Any = None) -> "_HitColumns":
        """The hits ``idx`` column by column (each column read once for all of them, not a
        NumPy scalar per field per hit), with each hit's (plans, service names) combination."""
        g, prop = self.graph, self.prop
        idx = np.asarray(idx, dtype=np.int64)
        context = context if context is not None else self.hit_context(idx)
        order = idx.tolist()
        keys, names = g.natural_key.take(order), g.name.take(order)
        combos = self._combinations(idx, context, self._plans_and_services_coded) if idx.size else []
        crit_names = [*CRITICALITIES, "unknown"]
        columns = (
            order, g.ids[idx].tolist(), keys, names, _labels(g.owner_values, g.owner_code[idx]),
            _labels(g.kinds, g.kind_code[idx]),
            _labels(g.providers, g.provider_code[idx]), _labels(g.account_values, g.account_code[idx]),
            _labels(g.region_values, g.region_code[idx]), _labels(g.os_values, g.os_code[idx]),
            _labels(g.env_values, g.env_code[idx]),
            _labels(crit_names, np.minimum(g.crit_code[idx], len(CRITICALITIES))),
            _labels([STATUS_NAMES.get(k) for k in range(3)], prop.status[idx]), prop.dist[idx].tolist(),
            self.seed_match.mask[idx].tolist(), combos)
        return _HitColumns(columns, dict(zip(order, zip(keys, names))))

    def _plans_and_services(self, own: int, products: tuple[tuple[int, ...], tuple[int, ...]],
                            svc: tuple[int, ...]) -> tuple[list[dict[str, Any]], list[str]]:
        """The plans of a hit in precedence order (``plans.merge_routes``) and the names of
        its services: its own plans (``own``, the asset index, or -1 without), those of its
        ``products`` (the installed products with plans of their own, and the vendors with
        plans of its installed products) and those of its services ``svc``.  The product and
        vendor routes and the service route are each worked out once per combination."""
        memo = self.__dict__.setdefault("_route_memo", {})
        found = memo.get((own, products, svc))
        if found is not None:
            return found  # type: ignore[no-any-return]
        pv, pv_ids = self._product_route(products)
        sv, names, sv_ids = self._service_route(svc)
        if own < 0 and pv_ids.isdisjoint(sv_ids):
            entries = [e for _pid, e in pv] + [e for _pid, e in sv]
        else:
            plans = self.plan_set
            own_route = route_entries(plans, "asset", plans.asset_plans.get(own, [])) if own >= 0 else []
            entries = merge_routes((own_route, pv, sv))
        found = memo[(own, products, svc)] = (entries, names)
        return found

    def _product_route(self, products: tuple[tuple[int, ...], tuple[int, ...]]
                       ) -> tuple[list[tuple[int, dict[str, Any]]], set[int]]:
        """The plans of these products and of these vendors (and of the scope's), each once."""
        memo = self.__dict__.setdefault("_route_memo", {})
        found = memo.get(products)
        if found is None:
            (product_route, product_ids), (vendor_route, vendor_ids) = \
                self._route_part("product", products[0]), self._route_part("vendor", products[1])
            if product_ids.isdisjoint(vendor_ids):
                found = (product_route + vendor_route, product_ids | vendor_ids)
            else:   # a plan linked to a product and to a vendor: listed once, under the product
                seen: set[int] = set()
                merged = [(pid, e) for route in (product_route, vendor_route) for pid, e in route
                          if not (pid in seen or seen.add(pid))]
                found = (merged, seen)
            memo[products] = found
        return found  # type: ignore[no-any-return]

    def _route_part(self, via: str, keys: tuple[int, ...]) -> tuple[list[tuple[int, dict[str, Any]]], set[int]]:
        """The plans of these products (``via="product"``) or vendors, with the scope's own."""
        memo = self.__dict__.setdefault("_route_memo", {})
        found = memo.get((via, keys))
        if found is None:
            plans = self.plan_set
            linked = plans.product_plans if via == "product" else plans.vendor_plans
            plan_ids = list(self.scope_plan_ids[via])
            for key in keys:
                plan_ids += linked.get(key, [])
            route = route_entries(plans, via, plan_ids)
            found = memo[(via, keys)] = (route, {pid for pid, _e in route})
        return found  # type: ignore[no-any-return]

    def _service_route(self, svc: tuple[int, ...]) -> tuple[list[tuple[int, dict[str, Any]]], list[str], set[int]]:
        """The plans of these services (merged from each service's own route) and their names."""
        memo = self.__dict__.setdefault("_route_memo", {})
        found = memo.get(("svc", svc))
        if found is None:
            plans = self.plan_set
            merged: dict[int, dict[str, Any]] = {}
            name_of = memo.get("service names")
            if name_of is None:
                services = self.graph.service_idx.tolist()
                name_of = memo["service names"] = dict(zip(services, self.graph.name.take(services)))
            own = plans.asset_plans
            for service in svc:
                if service in own:
                    one = memo.get(("one", service))
                    if one is None:
                        one = memo[("one", service)] = route_entries(plans, "service", own[service])
                    merged.update(one)
            names = [name_of.get(service) or self.graph.name[service] for service in svc]
            if len(merged) > 1:
                keys = plans.sort_keys()
                items = sorted(merged.items(), key=lambda item: keys[item[0]])
            else:
                items = list(merged.items())
            found = memo[("svc", svc)] = (items, sorted(names), set(merged))
        return found  # type: ignore[no-any-return]

    def _plans_and_services_coded(self, own: int, p: int, v: int, context: "_HitContext"
                                  ) -> tuple[list[dict[str, Any]], list[str]]:
        found = context.memo.get(("dict", own, p, v))
        if found is None:
            found = context.memo[("dict", own, p, v)] = self._plans_and_services(own, context.pv_keys[p],
                                                                                 context.svc_keys[v])
        return found  # type: ignore[no-any-return]

    def _combo_json_coded(self, own: int, p: int, v: int, context: "_HitContext") -> tuple[str, str, str]:
        memo = context.memo
        found = memo.get(("json", own, p, v))
        if found is not None:
            return found  # type: ignore[no-any-return]
        pv_js = memo.get(("pv", p))
        if pv_js is None:
            pv_js = memo[("pv", p)] = self._route_json(context.pv_keys[p])
        sv_js = memo.get(("sv", v))
        if sv_js is None:
            sv_js = memo[("sv", v)] = self._route_json(None, context.svc_keys[v])
        (pv_text, pv_ids, _none), (sv_text, sv_ids, names_text) = pv_js, sv_js
        if own < 0 and pv_ids.isdisjoint(sv_ids):
            plans = "[" + (pv_text + "," + sv_text if pv_text and sv_text else pv_text or sv_text) + "]"
        else:
            plans = json.dumps(self._plans_and_services(own, context.pv_keys[p], context.svc_keys[v])[0],
                               separators=(",", ":"))
        found = memo[("json", own, p, v)] = (plans, "true" if plans == "[]" else "false", names_text)
        return found

    def _route_json(self, products: Any, svc: tuple[int, ...] | None = None) -> tuple[str, set[int], str]:
        """A product-and-vendor route (or, with ``svc``, a service route) as JSON text: its
        entries joined (each entry encoded once), its plan ids, and the services' names."""
        memo = self.__dict__.setdefault("_json_memo", {})
        entry_js = memo.setdefault("entries", {})

        def text(route: list[tuple[int, dict[str, Any]]]) -> str:
            parts = []
            for _pid, entry in route:
                js = entry_js.get(id(entry))
                if js is None:
                    js = entry_js[id(entry)] = json.dumps(entry, separators=(",", ":"))
                parts.append(js)
            return ",".join(parts)

        if svc is not None:
            route, names_list, ids = self._service_route(svc)
            return text(route), ids, json.dumps(names_list, separators=(",", ":"))
        halves = []
        for via, keys in (("product", products[0]), ("vendor", products[1])):
            half = memo.get((via, keys))
            if half is None:
                route, half_ids = self._route_part(via, keys)
                half = memo[(via, keys)] = (text(route), half_ids)
            halves.append(half)
        (p_text, p_ids), (v_text, v_ids) = halves
        if p_ids.isdisjoint(v_ids):    # the usual case: each half written once, joined
            return ",".join(t for t in (p_text, v_text) if t), p_ids | v_ids, ""
        route, ids = self._product_route(products)
        return text(route), ids, ""

    def path_of(self, i: int) -> list[dict[str, Any]]:
        return _PathBuilder(self.graph, self.prop).of(i)

    def _services_above(self, idx: np.ndarray) -> dict[int, tuple[int, ...]]:
        """For a few hits: walk up from each to the services that depend on it."""
        g, view = self.graph, self.view
        service, hit = backend.routines().reach_pairs(np.asarray(idx, dtype=np.int64), view.every.indptr,
                                                      view.every.pairs, g.is_service)
        return _group_by_key(hit, service, g.key_rank)

    def seeds(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The seed assets (in natural-key order) and what matched each; the first
        ``limit`` of them only are built when a limit is given (a top vendor has tens of
        thousands of seeds, a page shows a few)."""
        if self._seeds is not None:
            return self._seeds[:limit]
        if limit is not None and limit < self.seed_order.size:
            return self._build_seeds(self.seed_order[:limit])
        self._seeds = self._build_seeds(self.seed_order)
        return self._seeds

    @property
    def seed_order(self) -> np.ndarray:
        """Seed asset indices in natural-key order."""
        order = self.__dict__.get("_seed_order")
        if order is None:
            seeds = np.flatnonzero(self.seed_match.mask)
            order = seeds[np.argsort(self.graph.key_rank[seeds], kind="stable")]
            self.__dict__["_seed_order"] = order
        return order  # type: ignore[no-any-return]

    # ------------------------------------------------------------ version unknown

    @property
    def version_unknown_order(self) -> np.ndarray:
        """Assets that run the scope's products at a version the range cannot place (none
        recorded — an Azure extension reports only its handler's — or no number in it) and
        that are not seeds through another installation: most critical first, then by
        natural key.  Only version-narrowed scopes have them."""
        order = self.__dict__.get("_unknown_order")
        if order is None:
            g = self.graph
            idx = self.seed_match.unversioned
            idx = idx[~self.seed_match.mask[idx]]
            order = idx[np.lexsort((g.key_rank[idx], g.crit_code[idx]))]
            self.__dict__["_unknown_order"] = order
        return order  # type: ignore[no-any-return]

    def version_unknown(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The ``version_unknown_order`` assets (the first ``limit``), each with the products
        and recorded versions that could not be placed, who recorded them and what that
        source did say (``Installation.attributes``: an extension handler's version, an
        image version), so a responder knows what to check by hand."""
        g = self.graph
        idx = self.version_unknown_order[:limit]
        if not idx.size:
            return []
        wanted = np.zeros(g.n, dtype=bool)
        wanted[idx] = True
        products: dict[int, list[tuple[int, str | None]]] = {}
        for pid, version, installed in self.seed_match.unversioned_via:
            for i in installed[wanted[installed]].tolist():
                products.setdefault(i, []).append((pid, version))
        facts = self._installation_facts(idx, {pid for pid, _v, _i in self.seed_match.unversioned_via})
        status = self.prop.status[idx].tolist()
        crit_names = [*CRITICALITIES, "unknown"]
        out = []
        for i, st, crit in zip(idx.tolist(), status, np.minimum(g.crit_code[idx], len(CRITICALITIES)).tolist()):
            asset_id = int(g.ids[i])
            entries = []
            for pid, version in products.get(i, []):
                source, attributes = facts.get((asset_id, pid), (None, None))
                entries.append({"product": g.products[pid].name, "version": version, "source": source,
                                "reason": version_unknown_reason(version, source, attributes),
                                "attributes": attributes or {}})
            out.append({"asset_id": asset_id, "natural_key": g.natural_key[i], "name": g.name[i],
                        "kind": g.kinds[g.kind_code[i]], "provider": g.providers[g.provider_code[i]],
                        "region": g.region_values[g.region_code[i]], "os_family": g.os_values[g.os_code[i]],
                        "criticality": crit_names[crit], "status": STATUS_NAMES.get(st) if st else None,
                        "installations": entries})
        return out

    def _installation_facts(self, idx: np.ndarray, product_ids: set[int]
                            ) -> dict[tuple[int, int], tuple[str | None, dict[str, Any] | None]]:
        """(asset id, product id) -> (source, attributes) of those installations, read
        fresh (the graph keeps only product and version)."""
        from inventory.models import Installation

        conn_factory = getattr(self, "conn_factory", None)
        if conn_factory is None or not product_ids:
            return {}
        t = Installation.__table__
        ids = [int(v) for v in self.graph.ids[idx].tolist()]
        out: dict[tuple[int, int], tuple[str | None, dict[str, Any] | None]] = {}
        with conn_factory() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(sa.select(t.c.asset_id, t.c.product_id, t.c.source, t.c.attributes)
                                    .where(t.c.asset_id.in_(ids[start:start + 500]),
                                           t.c.product_id.in_(sorted(product_ids))))
                for asset_id, product_id, source, attributes in rows:
                    out[(asset_id, product_id)] = (source, attributes)
        return out

    def _first_matches(self) -> np.ndarray:
        """Per asset, the first installation group (in match order) that made it a seed, or -1."""
        first = np.full(self.graph.n, -1, dtype=np.int32)
        for k, (_pid, _version, installed) in enumerate(self.seed_match.via_install):
            installed = installed[first[installed] < 0]
            first[installed] = k
        return first

    def _seeds_json(self, idx: np.ndarray, first: np.ndarray) -> list[str]:
        """``_build_seeds`` as JSON text, one string per seed (what matched each written once)."""
        g, match = self.graph, self.seed_match
        order = idx.tolist()
        matched: dict[Any, str] = {}
        out = []
        for i, k, asset_id, key, name in zip(order, first[idx].tolist(), g.ids[idx].tolist(),
                                             g.natural_key.take(order), g.name.take(order)):
            how_key: Any = k
            if k < 0:
                hosted = match.hosted is not None and bool(match.hosted[i])
                how_key = ("hosted", int(g.provider_code[i]), int(g.region_code[i])) if hosted else None
            how = matched.get(how_key)
            if how is None:
                if k >= 0:
                    pid, version, _installed = match.via_install[k]
                    value: dict[str, Any] = {"product": g.products[pid].name, "version": version}
                elif how_key is not None:
                    value = {"hosted_on": g.providers[how_key[1]], "region": g.region_values[how_key[2]]}
                else:
                    value = {}
                how = matched[how_key] = json.dumps(value)
            out.append('{"asset_id":%d,"natural_key":%s,"name":%s,"matched":%s}'
                       % (asset_id, _json_string(key), _json_string(name), how))
        return out

    def _build_seeds(self, idx: np.ndarray, first: np.ndarray | None = None) -> list[dict[str, Any]]:
        g, match = self.graph, self.seed_match
        # What matched each seed: the first installation group (in match order) holding it,
        # else its hosting provider and region.
        if first is None:
            first = self._first_matches()
        out = []
        order = idx.tolist()
        shared: dict[int, dict[str, Any]] = {}
        for i, k, asset_id, key, name in zip(order, first[idx].tolist(), g.ids[idx].tolist(),
                                             g.natural_key.take(order), g.name.take(order)):
            if k >= 0:
                how = shared.get(k)
                if how is None:
                    pid, version, _installed = match.via_install[k]
                    how = shared[k] = {"product": g.products[pid].name, "version": version}
                how = dict(how)
            elif match.hosted is not None and match.hosted[i]:
                how = {"hosted_on": g.providers[g.provider_code[i]],
                       "region": g.region_values[g.region_code[i]]}
            else:
                how = {}
            out.append({"asset_id": asset_id, "natural_key": key, "name": name, "matched": how})
        return out

    def to_dict(self, limit: int | None = None, offset: int = 0,
                seeds_limit: int | None = None) -> dict[str, Any]:
        """JSON-safe: {"scope", "as_of", "seeds", "hits", "totals", "confidence", "page"} (+ "what_if").

        ``limit``/``offset`` page the hits (in listing order); ``seeds_limit`` caps the
        seed list (a top vendor has tens of thousands of seeds)."""
        with paused_gc():
            if limit is None and offset == 0:
                hits = [h.to_dict() for h in self.hits]
            else:
                page = self.ordered_idx[offset: None if limit is None else offset + limit]
                hits = [h.to_dict() for h in self.build_hits(page)]
            seeds = self.seeds(seeds_limit)
            unknown = self.version_unknown(seeds_limit)
            out = {"scope": self.scope.to_dict(),
                   "as_of": self.as_of.isoformat() if self.as_of else None,
                   "computed_at": self.computed_at.isoformat(),
                   "seeds": seeds, "hits": hits, "version_unknown": unknown, "totals": self.totals,
                   "confidence": self.confidence,
                   "page": {"offset": offset, "limit": limit, "returned": len(hits),
                            "total": int(self.hit_idx.size), "seeds_returned": len(seeds),
                            "seeds_total": int(self.seed_order.size),
                            "version_unknown_returned": len(unknown),
                            "version_unknown_total": int(self.version_unknown_order.size)}}
        if self.what_if is not None:
            out["what_if"] = self.what_if
        return out


    def iter_json(self, limit: int | None = None, offset: int = 0, seeds_limit: int | None = None,
                  chunk: int = 2000) -> Iterator[str]:
        """``to_dict(limit, offset, seeds_limit)`` as JSON text, in pieces (a streamed response,
        a file): the hits and seeds are written ``chunk`` at a time, never all held as Python
        objects.  ``json.loads("".join(...))`` equals ``to_dict(...)``.  What reads the database
        (the version-unknown list) is read before this returns; the pieces are then written
        from the graph in memory as they are consumed."""
        page = self.ordered_idx[offset: None if limit is None else offset + limit]
        seed_idx = self.seed_order[:seeds_limit]
        unknown = self.version_unknown(seeds_limit)
        head = {"scope": self.scope.to_dict(), "as_of": self.as_of.isoformat() if self.as_of else None,
                "computed_at": self.computed_at.isoformat()}
        tail = {"version_unknown": unknown, "totals": self.totals, "confidence": self.confidence,
                "page": {"offset": offset, "limit": limit, "returned": int(page.size),
                         "total": int(self.hit_idx.size), "seeds_returned": int(seed_idx.size),
                         "seeds_total": int(self.seed_order.size), "version_unknown_returned": len(unknown),
                         "version_unknown_total": int(self.version_unknown_order.size)}}
        if self.what_if is not None:
            tail["what_if"] = self.what_if

        def pieces() -> Iterator[str]:
            yield json.dumps(head)[:-1] + ', "seeds": ['
            first = self._first_matches()
            for start in range(0, seed_idx.size, chunk):
                yield ("," if start else "") + ",".join(self._seeds_json(seed_idx[start:start + chunk], first))
            yield '], "hits": ['
            context = self.hit_context(page) if page.size else None
            for start in range(0, page.size, chunk):
                yield ("," if start else "") + ",".join(self.hits_json(page[start:start + chunk], context))
            yield "], " + json.dumps(tail)[1:]
        return pieces()


CRIT_RANK = {c: i for i, c in enumerate(CRITICALITIES)}


def _group_by_key(keys: np.ndarray, values: np.ndarray, rank: np.ndarray) -> dict[int, tuple[int, ...]]:
    """(key, value) pairs as {key: values in ``rank`` order}."""
    if not keys.size:
        return {}
    order = np.lexsort((rank[values], keys))
    keys, values = keys[order], values[order]
    cuts = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate([[0], cuts]).tolist()
    ends = np.concatenate([cuts, [keys.size]]).tolist()
    key_l, value_l = keys.tolist(), values.tolist()
    return {key_l[a]: tuple(value_l[a:b]) for a, b in zip(starts, ends)}


def _labels(values: list[Any], codes: np.ndarray) -> list[Any]:
    """The label of each code (a factorised column back to values)."""
    return [values[c] for c in codes.tolist()]


class _PathBuilder:
    """Explaining paths: each hit's chain of parents back to a seed.  A hit's path is
    its own step followed by its parent's path, so each step is built once and shared
    (the steps are read-only, like plan entries)."""

    def __init__(self, graph: Graph, prop: Propagation,
                 labels: dict[int, tuple[str, str]] | None = None) -> None:
        self.graph = graph
        self.prop = prop
        # (natural key, name) of assets already read from the graph's string columns.
        self.labels = labels or {}
        self.paths: dict[int, list[dict[str, Any]]] = {}
        self.parent: list[int] | None = None
        self.pedge: list[int] = []

    def of(self, i: int) -> list[dict[str, Any]]:
        g, paths = self.graph, self.paths
        if self.parent is None:
            # Python lists: walking them is cheaper than reading NumPy scalars one by one.
            self.parent, self.pedge = self.prop.parent.tolist(), self.prop.pedge.tolist()
        parent = self.parent
        chain: list[int] = []
        node = i
        while node >= 0 and node not in paths:
            chain.append(node)
            node = parent[node]
            if len(chain) > g.n:   # defensive: parents never cycle
                raise RuntimeError("explaining path does not end at a seed")
        tail = paths.get(node, [])
        labels = self.labels
        for node in reversed(chain):
            edge = self.pedge[node]
            key, name = labels.get(node) or (g.natural_key[node], g.name[node])
            step = {"asset_id": int(g.ids[node]), "natural_key": key, "name": name,
                    "edge_kind": g.edge_kind_name(edge) if edge >= 0 else None}
            tail = paths[node] = [step, *tail]
        return list(tail)


@dataclass
class _HitContext:
    """Per asset (arrays of n): the code of its set of services above (``svc_keys[code]``),
    of its planned products and vendors (``pv_keys[code]``), and whether it has own plans."""

    svc_code: np.ndarray
    svc_keys: list[tuple[int, ...]]
    pv_code: np.ndarray
    pv_keys: list[tuple[tuple[int, ...], tuple[int, ...]]]
    own: np.ndarray
    listing: np.ndarray | None = None                     # the hits this context was made for
    memo: dict[Any, Any] = field(default_factory=dict)   # per combination code, across chunks


class _HitColumns:
    """Per-hit columns (``rows()`` zips them) and the (key, name) of each hit asset."""

    def __init__(self, columns: tuple[list[Any], ...], labels: dict[int, tuple[str, str]]) -> None:
        self.columns = columns
        self.labels = labels

    def rows(self) -> tuple[list[Any], ...]:
        return self.columns


def _json_string(value: str) -> str:
    return encode_basestring_ascii(value)


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    return json.dumps(value)


def _json_coded(values: list[Any], codes: np.ndarray) -> Any:
    """A function giving the JSON text of a coded column at some indices (each value encoded once)."""
    encoded = [_json_value(v) for v in values] + ["null"]

    def at(idx: np.ndarray) -> list[str]:
        return [encoded[k] for k in codes[idx].tolist()]
    return at


class _HitText:
    """The JSON pieces of a listing of hits: per-hit columns, explaining paths (a hit's path
    is its own step followed by its parent's path, so each tail is written once and shared)
    and the plans and services of each (own plans, planned products, services) combination."""

    def __init__(self, result: "ImpactResult", idx: np.ndarray, context: Any) -> None:
        g, prop = result.graph, result.prop
        self.result, self.graph = result, g
        self.idx = idx = np.asarray(idx, dtype=np.int64)
        self.context = context if context is not None else result.hit_context(idx)
        order = idx.tolist()
        keys, names = g.natural_key.take(order), g.name.take(order)
        self.columns = {"order": order, "ids": g.ids[idx].tolist(), "keys": keys, "names": names,
                        "keys_js": list(map(encode_basestring_ascii, keys)),
                        "names_js": list(map(encode_basestring_ascii, names)), "hops": prop.dist[idx].tolist()}
        self.parent = prop.parent
        self.pedge = prop.pedge

    def paths(self) -> list[str]:
        g, c = self.graph, self.columns
        edge_js = [_json_value(k) for k in g.edge_kinds]
        step = '{"asset_id":%d,"natural_key":%s,"name":%s,"edge_kind":%s}'
        # Each asset's step, for the whole listing this chunk belongs to (kept in the context,
        # so a chunk's paths through assets of other chunks cost no string reads).
        steps = self.context.memo.get("steps")
        if steps is None:
            listing = self.context.listing if self.context.listing is not None else self.idx
            order = listing.tolist()
            pedge = self.pedge[listing]
            kinds = np.where(pedge >= 0, g.e_kind[np.maximum(pedge, 0)], -1).tolist()
            steps = self.context.memo["steps"] = {
                i: step % (asset_id, _json_string(key), _json_string(name), edge_js[k] if k >= 0 else "null")
                for i, asset_id, key, name, k in zip(order, g.ids[listing].tolist(), g.natural_key.take(order),
                                                     g.name.take(order), kinds)}
        parent = self.context.memo.get("parents")
        if parent is None and len(steps) * 4 > self.parent.size:
            parent = self.context.memo["parents"] = self.parent.tolist()
        tails: dict[int, str] = {}
        out = []
        for i in c["order"]:
            chain = []
            node = i
            while node >= 0 and node not in tails:
                chain.append(node)
                node = parent[node] if parent is not None else int(self.parent[node])
                if len(chain) > g.n:   # defensive: parents never cycle
                    raise RuntimeError("explaining path does not end at a seed")
            tail = tails.get(node, "")
            for node in reversed(chain):
                own = steps.get(node)
                if own is None:    # a path through an asset outside this listing
                    edge = int(self.pedge[node])
                    own = step % (int(g.ids[node]), _json_string(g.natural_key[node]), _json_string(g.name[node]),
                                  edge_js[int(g.e_kind[edge])] if edge >= 0 else "null")
                tail = tails[node] = own + "," + tail if tail else own
            out.append("[" + tail + "]")
        return out

    def combos(self) -> tuple[list[str], list[str], list[str]]:
        """(plans, gap, services) as JSON text, per hit."""
        if not self.idx.size:
            return [], [], []
        texts = self.result._combinations(self.idx, self.context, self.result._combo_json_coded)
        return [t[0] for t in texts], [t[1] for t in texts], [t[2] for t in texts]


# ---------------------------------------------------------------- entry point

def parse_as_of(as_of: datetime | str | None) -> datetime | None:
    """``as_of`` as an aware UTC moment (None: now); a ScopeError naming ``as_of`` for text that
    is not ISO 8601, for anything but text or a datetime, and for a moment beyond UTC's years."""
    if as_of is None or as_of == "":
        return None
    if isinstance(as_of, str):
        try:
            as_of = datetime.fromisoformat(as_of.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ScopeError("as_of", f"as_of {as_of!r} is not an ISO-8601 date/time") from None
    if not isinstance(as_of, datetime):
        raise ScopeError("as_of", f"as_of must be an ISO-8601 date/time, not {type(as_of).__name__}")
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=timezone.utc)
    try:
        return as_of.astimezone(timezone.utc)
    except OverflowError:
        raise ScopeError("as_of", f"as_of {as_of.isoformat()} is outside the years 1 to 9999 in UTC") from None


def blast_radius(db: so.Session, scope: Scope | Mapping[str, Any], as_of: datetime | str | None = None,
                 what_if: Mapping[str, Any] | None = None, now: datetime | None = None) -> ImpactResult:
    """Compute the blast radius of ``scope`` (a ``Scope`` or a scope dict).

    ``as_of`` answers for a past moment; ``what_if`` (see ``inventory.impact.whatif``)
    answers for a modified inventory without writing anything.  Reads committed
    data only, on a connection of its own."""
    started = time.perf_counter()
    try:
        return _blast_radius(db, scope, as_of, what_if, now)
    finally:
        notify("query", time.perf_counter() - started)


def _blast_radius(db: so.Session, scope: Scope | Mapping[str, Any], as_of: datetime | str | None,
                  what_if: Mapping[str, Any] | None, now: datetime | None) -> ImpactResult:
    from inventory.impact.confidence import confidence_report
    from inventory.impact.whatif import apply_what_if, compare, parse_what_if

    if isinstance(scope, Scope):
        graph, stamp, lag = get_graph_state(db)
        if lag is not None and not _graph_knows(graph, scope):
            # Parsed against a newer graph than the one being served: use a fresh one.
            graph, stamp, lag = get_graph_state(db, max_stale_seconds=0)
    else:
        scope, graph, stamp, lag = parse_scope_and_graph(db, scope)
    conn_factory = connection_factory(db)
    moment = parse_as_of(as_of)
    now = now or utcnow()
    at_micros = to_micros(moment) if moment is not None else None
    view = graph.current if at_micros is None else graph.view_at(conn_factory, at_micros)
    parsed = parse_what_if(graph, what_if, db) if what_if else None
    result = _compute(graph, view, scope, moment, at_micros, conn_factory, now, (), confidence_report, stamp)
    _note_lag(result, lag)
    if parsed is None:
        return result
    changed_view = apply_what_if(graph, view, parsed)
    changed = _compute(graph, changed_view, scope, moment, at_micros, conn_factory, now, parsed.plans,
                       confidence_report, stamp)
    changed.what_if = {"applied": parsed.describe(), "baseline_totals": result.totals,
                       "changes": compare(result, changed)}
    _note_lag(changed, lag)
    return changed


def _graph_knows(graph: Graph, scope: Scope) -> bool:
    return scope.vendor_id in graph.vendors and all(pid in graph.products for pid in scope.product_ids)


def _note_lag(result: "ImpactResult", lag: GraphLag | None) -> None:
    """Say so when the answer came from the previous graph while a newer one is being built."""
    result.confidence["graph_lag"] = None if lag is None else {
        "graph_version": lag.graph_version, "inventory_version": lag.inventory_version,
        "age_seconds": lag.age_seconds}
    if lag is not None:
        result.confidence["notes"] = [
            *result.confidence["notes"],
            f"answered from the inventory as it was up to {lag.age_seconds:.0f} s ago: "
            "newer changes are being loaded right now; ask again for them"]


def _compute(graph: Graph, view: View, scope: Scope, moment: datetime | None, at_micros: int | None,
             conn_factory: Any, now: datetime, extra_plans: Any, confidence_report: Any,
             stamp: tuple[Any, ...] | None = None) -> ImpactResult:
    seeds = find_seeds(graph, view, scope, at_micros, conn_factory)
    prop = propagate(view, np.flatnonzero(seeds.mask))
    plans = PlanSet.for_graph(graph, now, extra_plans)
    levels = asset_levels(graph, view, plans)
    scope_plans = {"vendor": list(plans.vendor_plans.get(scope.vendor_id, [])),
                   "product": [p for pid in scope.product_ids for p in plans.product_plans.get(pid, [])]}
    result = ImpactResult(graph, view, scope, moment, seeds, prop, plans, levels, scope_plans, now)
    result.conn_factory = conn_factory
    result.confidence = confidence_report(conn_factory, graph, result.hit_idx, seeds, scope, moment, stamp,
                                          scope_counts=result.hits_per_scope())
    return result
