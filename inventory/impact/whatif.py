"""What-if: how would the blast radius change if the inventory were different?

Answered in memory on a modified copy of the graph's arrays; nothing is
written.  The shape (every part optional)::

    {
      "remove_dependencies": [["app:checkin", "db:legacy"], ...],
          # [dependent key, dependency key]: drop every edge between them
      "add_replicas": [{"asset": "tg:checkin-pool", "count": 2}, ...],
          # a group gains `count` healthy members; any other asset gains a healthy
          # replica, so what depended on it hard now only degrades when it fails
      "set_min_up": {"tg:checkin-pool": 1},
      "add_plans": [{"name": "Paper boarding passes", "asset": "service:check-in"},
                    {"name": "Falcon safe-mode fix", "vendor": "CrowdStrike",
                     "product": "Falcon Sensor", "status": "never_exercised"}, ...]
          # status defaults to "current"
    }

Replicas are assumed to be outside the outage scope (a Linux node added to a
Windows pool).  The response carries the baseline totals and what changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import sqlalchemy.orm as so

from inventory.impact.graph import HARD, SOFT, Graph, View
from inventory.impact.scope import ScopeError
from inventory.models.plan_status import CURRENT, NEVER_EXERCISED, STALE
from inventory.validation import text_problem

if TYPE_CHECKING:
    from inventory.impact.engine import ImpactResult

WHAT_IF_FIELDS = ("remove_dependencies", "add_replicas", "set_min_up", "add_plans")
# The fields of one entry of each list; anything else is refused, never ignored.
REMOVE_FIELDS = ("dependent", "dependency")
REPLICA_FIELDS = ("asset", "count")
PLAN_FIELDS = ("name", "asset", "vendor", "product", "status")
MAX_ITEMS = 1000
MAX_REPLICAS = 1000
MAX_MIN_UP = 1_000_000  # as in the estate file
MAX_PLAN_NAME = 200
SAMPLE = 100


@dataclass
class WhatIf:
    remove_pairs: list[tuple[int, int]] = field(default_factory=list)
    replicas: dict[int, int] = field(default_factory=dict)
    min_up: dict[int, int] = field(default_factory=dict)
    plans: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return self.raw


def _key_index(graph: Graph, key: Any, where: str) -> int:
    if not isinstance(key, str) or not key:
        raise ScopeError(where, "expected an asset natural key")
    idx = graph.index_of_key(key)
    if idx is None:
        raise ScopeError(where, f"unknown asset {key!r}")
    return idx


def _is_group(graph: Graph, idx: int) -> bool:
    """Whether the asset has members (member-of dependencies, current or past)."""
    return bool(np.any((graph.e_dnt == idx) & (graph.e_kind == graph.member_kind) & graph.e_live))


def _refuse_unknown(item: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        raise ScopeError(f"{where}.{unknown[0]}", f"unknown field {unknown[0]!r}; an entry takes "
                         + ", ".join(allowed))


def _items(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ScopeError(f"what_if.{name}", f"{name} must be a list")
    if len(value) > MAX_ITEMS:
        raise ScopeError(f"what_if.{name}", f"at most {MAX_ITEMS} entries")
    return value


def parse_what_if(graph: Graph, data: Mapping[str, Any], db: so.Session | None = None) -> WhatIf:
    if not isinstance(data, Mapping):
        raise ScopeError("what_if", "what_if must be an object")
    for key in data:
        if key not in WHAT_IF_FIELDS:
            raise ScopeError(f"what_if.{key}", f"unknown what-if field {key!r}; use one of "
                             + ", ".join(WHAT_IF_FIELDS))
    out = WhatIf(raw=dict(data))
    for i, pair in enumerate(_items(data.get("remove_dependencies", []), "remove_dependencies")):
        where = f"what_if.remove_dependencies[{i}]"
        if isinstance(pair, Mapping):
            _refuse_unknown(pair, REMOVE_FIELDS, where)
            pair = [pair.get("dependent"), pair.get("dependency")]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ScopeError(where, "expected [dependent key, dependency key]")
        out.remove_pairs.append((_key_index(graph, pair[0], where), _key_index(graph, pair[1], where)))
    for i, item in enumerate(_items(data.get("add_replicas", []), "add_replicas")):
        where = f"what_if.add_replicas[{i}]"
        if isinstance(item, str):
            item = {"asset": item}
        if not isinstance(item, Mapping):
            raise ScopeError(where, "expected {\"asset\": key, \"count\": n}")
        _refuse_unknown(item, REPLICA_FIELDS, where)
        count = item.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_REPLICAS:
            raise ScopeError(f"{where}.count", f"count must be an integer from 1 to {MAX_REPLICAS}")
        idx = _key_index(graph, item.get("asset"), f"{where}.asset")
        out.replicas[idx] = out.replicas.get(idx, 0) + count
    set_min_up = data.get("set_min_up", {})
    if not isinstance(set_min_up, Mapping):
        raise ScopeError("what_if.set_min_up", "set_min_up must map group keys to numbers")
    for key, value in set_min_up.items():
        where = f"what_if.set_min_up.{key}"
        idx = _key_index(graph, key, where)
        # Bounded: the value goes into an int64 array, and no group has a million members.
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_MIN_UP:
            raise ScopeError(where, f"min_up must be an integer from 1 to {MAX_MIN_UP}")
        if not _is_group(graph, idx) and idx not in out.replicas:
            # It would be reported as applied and change nothing.
            raise ScopeError(where, f"{key!r} is not a group: min_up applies to assets with "
                                    "member-of dependencies (load balancer pools, scale sets...) "
                                    "or given replicas by add_replicas")
        out.min_up[idx] = value
    for i, item in enumerate(_items(data.get("add_plans", []), "add_plans")):
        out.plans.append(_parse_plan(graph, item, f"what_if.add_plans[{i}]", db))
    return out


def _parse_plan(graph: Graph, item: Any, where: str, db: so.Session | None) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise ScopeError(where, "expected a plan object")
    _refuse_unknown(item, PLAN_FIELDS, where)
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ScopeError(f"{where}.name", "a plan needs a name")
    if len(name.strip()) > MAX_PLAN_NAME:
        raise ScopeError(f"{where}.name", f"a plan name has at most {MAX_PLAN_NAME} characters")
    problem = text_problem(name)
    if problem:
        raise ScopeError(f"{where}.name", problem)
    status = item.get("status", CURRENT)
    if status not in (CURRENT, NEVER_EXERCISED, STALE):
        raise ScopeError(f"{where}.status", f"status must be {CURRENT}, {NEVER_EXERCISED} or {STALE}")
    targets = [k for k in ("asset", "vendor") if item.get(k)]
    if len(targets) != 1:
        raise ScopeError(where, "a plan covers exactly one of: an asset, a vendor, a vendor's product")
    if targets[0] == "asset":
        if item.get("product"):
            raise ScopeError(f"{where}.product", "a product needs its vendor, not an asset")
        return {"name": name.strip(), "status": status, "kind": "asset",
                "target": _key_index(graph, item["asset"], f"{where}.asset")}
    vendor_id = graph.find_vendor(str(item["vendor"]), db)
    if vendor_id is None:
        raise ScopeError(f"{where}.vendor", f"unknown vendor {item['vendor']!r}")
    if item.get("product"):
        pid = graph.find_product(vendor_id, str(item["product"]))
        if pid is None:
            raise ScopeError(f"{where}.product", f"unknown product {item['product']!r}")
        return {"name": name.strip(), "status": status, "kind": "product", "target": pid}
    return {"name": name.strip(), "status": status, "kind": "vendor", "target": vendor_id}


def apply_what_if(graph: Graph, view: View, what: WhatIf) -> View:
    """A new view with the what-if applied (the graph and the base view are untouched)."""
    edge_mask = view.edge_mask.copy()
    if what.remove_pairs:
        k = graph.n + 1
        pairs = np.array([a * k + b for a, b in what.remove_pairs], dtype=np.int64)
        edge_keys = graph.e_dnt.astype(np.int64) * k + graph.e_dep
        edge_mask &= ~np.isin(edge_keys, pairs)
    min_up = view.min_up.copy()
    for idx, value in what.min_up.items():
        min_up[idx] = value
    extra = view.extra_members.copy()
    replicated = []
    for idx, count in what.replicas.items():
        if min_up[idx] >= 0:
            extra[idx] += count
        else:
            replicated.append(idx)
    types = graph.edge_types(min_up, np.arange(graph.e_dep.size))
    if replicated:
        # With a healthy replica, losing this asset no longer takes its dependents down.
        from_replicated = np.isin(graph.e_dep, np.array(replicated)) & (types == HARD)
        types[from_replicated] = SOFT
    return graph.make_view(view.alive, edge_mask, min_up=min_up, types=types, extra_members=extra)


def compare(before: "ImpactResult", after: "ImpactResult") -> dict[str, Any]:
    g = before.graph
    sb, sa_ = before.prop.status, after.prop.status

    def listing(mask: np.ndarray) -> dict[str, Any]:
        idx = np.flatnonzero(mask)
        idx = idx[np.argsort(g.key_rank[idx], kind="stable")]
        return {"count": int(idx.size), "assets": [g.natural_key[i] for i in idx[:SAMPLE]]}

    return {
        "no_longer_hit": listing((sb > 0) & (sa_ == 0)),
        "newly_hit": listing((sb == 0) & (sa_ > 0)),
        "down_to_degraded": listing((sb == 2) & (sa_ == 1)),
        "degraded_to_down": listing((sb == 1) & (sa_ == 2)),
        "coverage_before": before.totals["plan_coverage"],
        "coverage_after": after.totals["plan_coverage"],
    }
