"""Keeping the graph current: read what changed since a graph's version, patch a copy of it.

The triggers that bump ``inventory_version`` also record each changed row in
``inventory_changes`` under the version their bump produced (migration 0006):
an asset's id, an installation's (asset, product), a dependency's (dependent,
dependency, kind), the id of a vendor, product, plan or plan link.  A graph at
version *v* that finds the inventory at *w* reads the rows of (v, w] — in the
same read transaction as the counters, so they describe exactly that state — and
``patch`` makes the graph of *w* from the graph of *v*:

* **assets**: the changed rows are read again by id; an existing asset's slot is
  updated, a new asset (a higher id than any the graph holds) is appended, a
  deleted one becomes a tombstone (never alive, holds no edge or installation, no
  name a scope or what-if can find); new values join the value lists;
* **dependencies**: the changed keys are read again; an edge whose row is gone or
  changed is marked dead (``e_live``), a new or changed row is appended;
* **installations**: the changed keys are read again and moved between their
  product's version groups;
* **the current view**: only the CSR rows that change are rebuilt — the edges
  that appeared, went, changed type, or lost or regained an end (an asset retired
  or back, a group's ``min_up`` set or cleared) — and put at their canonical place
  in their row, so the kernel breaks ties exactly as on a graph loaded from
  scratch; vendors, products and plans (small) are reloaded whole when they changed.

``patch`` returns None, and the caller reloads the parts that changed instead,
when the log cannot be trusted to be complete or the change is too large to be
worth patching: more than ``MAX_PATCH_ROWS`` rows; a part with a counter bump
that left no row (a large SQLite insert that ran without its row trigger —
``collectors/ingest.py``, ``BulkWriter`` —, a TRUNCATE, a restore, rows pruned
away) or with a "too many rows" marker; a new asset id below the graph's newest;
a dependency kind outside ``DEPENDENCY_KINDS``; too many tombstones.

The patched graph gives exactly the answers of a graph loaded from scratch at
the same version: ``tests/impact/test_incremental.py`` drives random writes
through every write path and compares them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from sqlalchemy.engine import Connection

from inventory.choices import DEPENDENCY_KINDS
from inventory.impact.graph import (
    ASSET_ARRAYS,
    CODED,
    NEVER,
    PARTS,
    Graph,
    View,
    _fetchall,
    asset_sql,
    asset_times,
    criticality_code,
    min_up_value,
    version_order,
)

log = logging.getLogger("planb.impact")

# More changed rows than this since a graph's version: reload the parts that changed.
MAX_PATCH_ROWS = 50_000
# More dead slots (deleted assets or edges) than this share of a graph: reload instead.
MAX_DEAD_SHARE = 0.2
PART_OF_TABLE = {"assets": "assets_v", "installations": "installs_v", "dependencies": "deps_v",
                 "products": "catalog_v", "vendors": "catalog_v",
                 "contingency_plans": "plans_v", "plan_links": "plans_v"}
_CHUNK = 500


class Fallback(Exception):
    """This change is not patched: the caller reloads the parts that changed."""


@dataclass
class ChangeSet:
    """The rows changed between two versions, by table (keys as the triggers record them)."""

    assets: set[int] = field(default_factory=set)
    installs: set[tuple[int, int]] = field(default_factory=set)
    deps: set[tuple[int, int, str]] = field(default_factory=set)
    rows: int = 0


def read(conn: Connection, since: dict[str, int], upto: dict[str, int]) -> ChangeSet | None:
    """The changes from counters ``since`` to ``upto``, or None when the log cannot tell
    them all (see the module docstring)."""
    first, last = int(since["version"]), int(upto["version"])
    rows = _fetchall(conn, "SELECT version, table_name, a_id, b_id, kind FROM inventory_changes "
                           f"WHERE version > {first} AND version <= {last} LIMIT {MAX_PATCH_ROWS + 1}")
    if len(rows) > MAX_PATCH_ROWS:
        return None
    out = ChangeSet(rows=len(rows))
    versions: dict[str, set[int]] = {p: set() for p in PARTS}
    for version, table, a_id, b_id, kind in rows:
        part = PART_OF_TABLE.get(table)
        if part is None:
            return None
        versions[part].add(version)
        if a_id is None:
            if part in ("assets_v", "installs_v", "deps_v"):
                return None        # "too many rows of this table in one transaction"
            continue
        if table == "assets":
            out.assets.add(int(a_id))
        elif table == "installations":
            out.installs.add((int(a_id), int(b_id)))
        elif table == "dependencies":
            out.deps.add((int(a_id), int(b_id), kind))
    # Every bump of a part has rows under its version: a bump without any (a bulk insert
    # without its trigger, a restore, pruned history) means the log misses changes.
    for part in PARTS:
        if len(versions[part]) != upto[part] - since[part]:
            return None
    return out


def patch(old: Graph, conn: Connection, counters: dict[str, int]) -> Graph | None:
    """The graph at ``counters``, made from ``old`` and the change log; None when the
    parts that changed must be reloaded instead.  ``old`` is not modified."""
    if old.counters is None:
        return None
    changes = read(conn, old.counters, counters)
    if changes is None:
        return None
    try:
        return _Patch(old, conn, counters, changes).run()
    except Fallback as exc:
        log.debug("impact graph: reloading instead of patching (%s)", exc)
        return None


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _in_list(values: Iterable[int]) -> str:
    return ", ".join(str(int(v)) for v in values)


class _Coder:
    """Codes into a graph's value list, extending a copy of it for values not seen yet."""

    def __init__(self, g: Graph, name: str) -> None:
        self.g, self.name = g, name
        self.values: list[Any] = getattr(g, name)
        self.index: dict[Any, int] = g._lazy.get(f"codes:{name}") or {v: i for i, v in enumerate(self.values)}
        self.copied = False

    def codes(self, raw: Sequence[Any]) -> np.ndarray:
        out = np.empty(len(raw), dtype=np.int32)
        for j, value in enumerate(raw):
            code = self.index.get(value)
            if code is None:
                if not self.copied:
                    self.values, self.index, self.copied = list(self.values), dict(self.index), True
                code = self.index[value] = len(self.values)
                self.values.append(value)
            out[j] = code
        return out

    def finish(self) -> None:
        setattr(self.g, self.name, self.values)
        self.g._lazy[f"codes:{self.name}"] = self.index


@dataclass
class _AssetDelta:
    n_old: int
    updated: np.ndarray        # indices of existing assets re-read
    appended: np.ndarray       # indices of new assets
    tombstones: np.ndarray     # indices of deleted assets
    alive_changed: np.ndarray
    min_up_changed: np.ndarray
    keys_changed: np.ndarray   # natural key changed (updated assets)
    service_changed: bool = False
    values_grew: bool = False

    @property
    def any(self) -> bool:
        return bool(self.updated.size or self.appended.size or self.tombstones.size)


@dataclass
class _EdgeDelta:
    removed: np.ndarray        # graph edge indices marked dead
    e_old: int                 # edges appended from here on

    def any(self, e_new: int) -> bool:
        return bool(self.removed.size) or e_new > self.e_old


class _Patch:
    def __init__(self, old: Graph, conn: Connection, counters: dict[str, int], changes: ChangeSet) -> None:
        self.old, self.conn, self.counters, self.changes = old, conn, counters, changes
        self.changed = {p for p in PARTS if counters[p] != old.counters[p]}  # type: ignore[index]

    def run(self) -> Graph:
        old, changed = self.old, self.changed
        g = old.successor(self.counters)
        g.origin = "patch"
        for name in CODED.values():
            index = old._lazy.get(f"codes:{name}")
            if index is not None:
                g._lazy[f"codes:{name}"] = index
        if "catalog_v" in changed:
            g._load_vendors(self.conn)
        assets = self._assets(g)
        edges = self._edges(g, assets)
        installs_changed = self._installs(g, assets)
        plans_changed = "plans_v" in changed or bool(assets.tombstones.size)
        if plans_changed:
            g._load_plans(self.conn)
        view_reusable = self._view(g, assets, edges)
        self._carry_lazies(g, assets, edges, installs_changed, plans_changed, view_reusable)
        g.refreshed_parts = sorted(changed & {"catalog_v", "plans_v"})
        g.patch_stats = {"rows": self.changes.rows, "assets_updated": int(assets.updated.size),
                         "assets_added": int(assets.appended.size),
                         "assets_deleted": int(assets.tombstones.size),
                         "edges_removed": int(edges.removed.size), "edges_added": int(g.e_dep.size - edges.e_old),
                         "installations": len(self.changes.installs)}
        return g

    # ------------------------------------------------------------ assets

    def _asset_rows(self, ids: list[int]) -> dict[int, tuple[Any, ...]]:
        found: dict[int, tuple[Any, ...]] = {}
        for part in _chunks(ids):
            for row in _fetchall(self.conn, asset_sql(self.old.dialect, f"WHERE id IN ({_in_list(part)})")):
                found[int(row[0])] = row
        return found

    def _assets(self, g: Graph) -> _AssetDelta:
        old = self.old
        n_old = old.n
        empty = np.empty(0, dtype=np.int64)
        if not self.changes.assets:
            return _AssetDelta(n_old, empty, empty, empty, empty, empty, empty)
        ids = sorted(self.changes.assets)
        found = self._asset_rows(ids)
        newest = int(old.ids[-1]) if n_old else -1
        updated: list[int] = []
        tombstones: list[int] = []
        appended_rows: list[tuple[Any, ...]] = []
        for asset_id in ids:
            idx = int(old.id_to_idx[asset_id]) if 0 <= asset_id < old.id_to_idx.size else -1
            row = found.get(asset_id)
            if idx >= 0:
                (updated if row is not None else tombstones).append(idx)
            elif row is not None:
                if asset_id <= newest:
                    raise Fallback(f"asset id {asset_id} is below the graph's newest ({newest})")
                appended_rows.append(row)
        n = n_old + len(appended_rows)
        dead = int((~old.present).sum()) + len(tombstones)
        if dead > max(1000, MAX_DEAD_SHARE * n):
            raise Fallback("too many deleted assets")
        for name in ASSET_ARRAYS:
            array = getattr(old, name)
            grown = np.empty(n, dtype=array.dtype)
            grown[:n_old] = array
            setattr(g, name, grown)
        g.n = n
        appended = np.arange(n_old, n, dtype=np.int64)
        targets = np.array(updated, dtype=np.int64)
        rows = [found[int(old.ids[i])] for i in updated] + appended_rows
        where = np.concatenate([targets, appended])
        top = max([newest] + [int(r[0]) for r in appended_rows])
        g.id_to_idx = np.full(top + 1, -1, dtype=np.int32)
        g.id_to_idx[:old.id_to_idx.size] = old.id_to_idx
        keys_changed = empty
        if rows:
            cols = list(zip(*rows))
            g.ids[where] = np.array(cols[0], dtype=np.int64)
            g.present[where] = True
            g.id_to_idx[g.ids[where]] = where.astype(np.int32)
            coders = {}
            for array_name, values_name, column in (("kind_code", "kinds", 3), ("provider_code", "providers", 4),
                                                    ("account_code", "account_values", 5),
                                                    ("region_code", "region_values", 6), ("os_code", "os_values", 7),
                                                    ("env_code", "env_values", 8), ("owner_code", "owner_values", 10),
                                                    ("scope_code", "scope_values", 13),
                                                    ("tags_code", "tags_values", 16)):
                coder = coders[values_name] = _Coder(g, values_name)
                getattr(g, array_name)[where] = coder.codes(cols[column])
            g.crit_code[where] = [criticality_code(v) for v in cols[9]]
            g.min_up[where] = [min_up_value(v) for v in cols[11]]
            g.is_manual[where] = [v == "import" for v in cols[12]]
            first, retired = asset_times(old.dialect, cols[14], cols[15])
            g.first_seen[where] = first
            g.retired_at[where] = retired
            keys = dict(zip(where.tolist(), cols[1]))
            names = dict(zip(where.tolist(), cols[2]))
            keys_changed = np.array([i for i in updated if old.natural_key[i] != keys[i]], dtype=np.int64)
            moved = set(keys_changed.tolist())
            g.natural_key = old.natural_key.patched(
                {i: k for i, k in keys.items() if i >= n_old or i in moved}, n)
            g.name = old.name.patched({i: v for i, v in names.items() if i >= n_old or old.name[i] != v}, n)
            grew = False
            for coder in coders.values():
                grew |= coder.copied
                coder.finish()
        else:
            grew = False
            g.natural_key = old.natural_key.patched({}, n)
            g.name = old.name.patched({}, n)
        if tombstones:
            t = np.array(tombstones, dtype=np.int64)
            g.present[t] = False
            g.id_to_idx[g.ids[t]] = -1
            g.first_seen[t] = NEVER
            g.retired_at[t] = NEVER
            g.min_up[t] = -1
        g.derive_asset_sets()
        was_alive = np.zeros(n, dtype=bool)
        was_alive[:n_old] = old.alive_now
        was_min_up = np.full(n, -1, dtype=np.int32)
        was_min_up[:n_old] = old.min_up
        return _AssetDelta(
            n_old=n_old, updated=targets, appended=appended, tombstones=np.array(tombstones, dtype=np.int64),
            alive_changed=np.flatnonzero(was_alive != g.alive_now), min_up_changed=np.flatnonzero(was_min_up != g.min_up),
            keys_changed=keys_changed,
            service_changed=not np.array_equal(old.service_idx, g.service_idx)
            or bool(np.any(g.is_service[:n_old] != old.is_service)),
            values_grew=grew)

    # ------------------------------------------------------------ dependencies

    def _edges(self, g: Graph, assets: _AssetDelta) -> _EdgeDelta:
        old = self.old
        e_old = old.e_dep.size
        removed: list[np.ndarray] = []
        added: list[tuple[int, int, int, bool]] = []
        keys = self.changes.deps
        if keys:
            if any(kind not in DEPENDENCY_KINDS for _a, _b, kind in keys):
                raise Fallback("a dependency kind outside DEPENDENCY_KINDS")
            dependents = sorted({a for a, _b, _k in keys})
            current: dict[tuple[int, int, str], str] = {}
            for part in _chunks(dependents):
                for a, b, kind, strength in _fetchall(
                        self.conn, "SELECT dependent_id, dependency_id, kind, strength FROM dependencies "
                                   f"WHERE dependent_id IN ({_in_list(part)})"):
                    if (a, b, kind) in keys:
                        current[(a, b, kind)] = strength
            flag = np.zeros(old.n, dtype=bool)
            known = old._to_idx(np.array(dependents, dtype=np.int64))
            flag[known[known >= 0]] = True
            candidates = np.flatnonzero(flag[old.e_dnt] & old.e_live)
            existing = {(int(old.ids[old.e_dnt[e]]), int(old.ids[old.e_dep[e]]), old.edge_kinds[int(old.e_kind[e])]):
                        int(e) for e in candidates}
            gone: list[int] = []
            for key in sorted(keys):
                strength = current.get(key)
                was = existing.get(key)
                if strength is not None:
                    a, b = (int(v) for v in g._to_idx(np.array(key[:2], dtype=np.int64)))
                    if a < 0 or b < 0:
                        raise Fallback(f"dependency {key} names an asset the graph does not hold")
                    if was is not None and bool(old.e_soft[was]) == (strength == "soft"):
                        continue
                    added.append((a, b, DEPENDENCY_KINDS.index(key[2]), strength == "soft"))
                if was is not None:
                    gone.append(was)
            removed.append(np.array(gone, dtype=np.int64))
        if assets.tombstones.size:
            flag = np.zeros(g.n, dtype=bool)
            flag[assets.tombstones] = True
            removed.append(np.flatnonzero((flag[old.e_dnt] | flag[old.e_dep]) & old.e_live))
        dead = np.unique(np.concatenate(removed)) if removed else np.empty(0, dtype=np.int64)
        if not dead.size and not added:
            return _EdgeDelta(dead, e_old)
        g.e_live = old.e_live.copy()
        g.e_live[dead] = False
        if added:
            dnt, dep, kind, soft = zip(*added)
            g.e_dnt = np.concatenate([old.e_dnt, np.array(dnt, dtype=np.int32)])
            g.e_dep = np.concatenate([old.e_dep, np.array(dep, dtype=np.int32)])
            g.e_kind = np.concatenate([old.e_kind, np.array(kind, dtype=np.int8)])
            g.e_soft = np.concatenate([old.e_soft, np.array(soft, dtype=bool)])
            g.e_live = np.concatenate([g.e_live, np.ones(len(added), dtype=bool)])
            g.edges_canonical = False
        if int((~g.e_live).sum()) > max(1000, MAX_DEAD_SHARE * g.e_live.size):
            raise Fallback("too many deleted edges")
        return _EdgeDelta(dead, e_old)

    # ------------------------------------------------------------ installations

    def _installs(self, g: Graph, assets: _AssetDelta) -> bool:
        old = self.old
        keys = self.changes.installs
        if not keys and not assets.tombstones.size:
            return False
        current: dict[tuple[int, int], str | None] = {}
        asset_ids = sorted({a for a, _p in keys})
        for part in _chunks(asset_ids):
            for a, p, version in _fetchall(self.conn, "SELECT asset_id, product_id, version FROM installations "
                                                      f"WHERE asset_id IN ({_in_list(part)})"):
                if (a, p) in keys:
                    current[(a, p)] = version
        by_product: dict[int, list[int]] = {}
        for a, p in keys:
            by_product.setdefault(p, []).append(a)
        products = set(by_product) | (set(old.installs) if assets.tombstones.size else set())
        installs = dict(old.installs)
        for pid in products:
            drop = np.zeros(g.n, dtype=bool)
            drop[assets.tombstones] = True
            asset_ids = by_product.get(pid, [])
            idx = old._to_idx(np.array(asset_ids, dtype=np.int64))
            drop[idx[idx >= 0]] = True
            kept: dict[str | None, list[np.ndarray]] = {}
            for version, members in old.installs.get(pid, []):
                if drop[members].any():
                    members = members[~drop[members]]
                if members.size:
                    kept.setdefault(version, []).append(members)
            for a in asset_ids:
                if (a, pid) not in current:
                    continue
                i = int(g._to_idx(np.array([a], dtype=np.int64))[0])
                if i < 0:
                    raise Fallback(f"installation of asset {a}, which the graph does not hold")
                kept.setdefault(current[(a, pid)], []).append(np.array([i], dtype=np.int32))
            groups = sorted(((v, parts[0] if len(parts) == 1 else np.concatenate(parts).astype(np.int32))
                             for v, parts in kept.items()), key=version_order)
            if groups:
                installs[pid] = groups
            else:
                installs.pop(pid, None)
        g.installs = installs
        return True

    # ------------------------------------------------------------ the current view

    def _view(self, g: Graph, assets: _AssetDelta, edges: _EdgeDelta) -> bool:
        """The current view, its CSRs patched row by row; True when nothing about it
        changed but the arrays' identity (its per-view caches remain valid)."""
        old, view = self.old, self.old.current
        n, e_new, e_old = g.n, g.e_dep.size, edges.e_old
        touched_assets = np.union1d(assets.alive_changed, assets.min_up_changed)
        touched_assets = touched_assets[touched_assets < assets.n_old]
        parts = [edges.removed]
        if touched_assets.size:
            flag = np.zeros(n, dtype=bool)
            flag[touched_assets] = True
            parts.append(np.flatnonzero(flag[old.e_dnt] | flag[old.e_dep]))
        before = np.unique(np.concatenate(parts)).astype(np.int64)
        after = np.concatenate([before, np.arange(e_old, e_new, dtype=np.int64)])
        was_in = old.e_live[before] & old.alive_now[old.e_dep[before]] & old.alive_now[old.e_dnt[before]]
        was_type = old.edge_types(old.min_up, before)
        now_in = g.e_live[after] & g.alive_now[g.e_dep[after]] & g.alive_now[g.e_dnt[after]]
        now_type = g.edge_types(g.min_up, after)
        pad = after.size - before.size
        was_in_after = np.concatenate([was_in, np.zeros(pad, dtype=bool)])
        was_type_after = np.concatenate([was_type, np.full(pad, -1, dtype=np.int8)])
        csrs = {}
        changed_any = False
        for name, csr in view.csrs().items():
            if name in ("every", "fwd"):
                old_in, new_in = was_in_after, now_in
            else:
                t = {"hard": 0, "soft": 1, "member": 2}[name]
                old_in, new_in = was_in_after & (was_type_after == t), now_in & (now_type == t)
            drop = after[old_in & ~new_in]
            add = after[new_in & ~old_in]
            if not drop.size and not add.size and n == assets.n_old:
                csrs[name] = csr
                continue
            changed_any |= bool(drop.size or add.size)
            src, dst = (g.e_dnt, g.e_dep) if name == "fwd" else (g.e_dep, g.e_dnt)
            csrs[name] = csr.patched(n, src[drop].astype(np.int64), drop, src[add].astype(np.int64), dst[add],
                                     add.astype(np.int32), g.e_kind, g.e_soft)
        member = csrs["member"]
        n_members = view.n_members if member is view.member and n == assets.n_old else \
            np.bincount(member.pairs[:, 0], minlength=n).astype(np.int32)
        reusable = not changed_any and n == assets.n_old and not assets.alive_changed.size \
            and not assets.service_changed and not assets.tombstones.size
        g.current = View(alive=g.alive_now, hard=csrs["hard"], soft=csrs["soft"], member=member,
                         every=csrs["every"], fwd=csrs["fwd"], n_members=n_members, min_up=g.min_up,
                         extra_members=np.zeros(n, dtype=np.int32), edge_mask=g.e_live)
        return reusable

    # ------------------------------------------------------------ derived data

    def _carry_lazies(self, g: Graph, assets: _AssetDelta, edges: _EdgeDelta, installs_changed: bool,
                      plans_changed: bool, view_reusable: bool) -> None:
        old = self.old
        lazy = old._lazy
        edges_changed = edges.any(g.e_dep.size)
        if view_reusable and not installs_changed and not plans_changed:
            g.current.cache.update({k: v for k, v in old.current.cache.items()
                                    if isinstance(k, tuple) and k[0] == "plan_levels"})
        if not plans_changed and "plan_statuses" in lazy:
            g._lazy["plan_statuses"] = lazy["plan_statuses"]
        if not edges_changed:
            for key in ("edge_first_seen", "edge_order"):
                if key in lazy:
                    g._lazy[key] = lazy[key]
        if not installs_changed and not assets.appended.size and "install_first_seen" in lazy:
            g._lazy["install_first_seen"] = lazy["install_first_seen"]
        if not assets.any:
            for key in ("key_order", "key_rank", "tags", "service_rows", "totals_codes"):
                if key in lazy:
                    g._lazy[key] = lazy[key]
            return
        if "key_order" in lazy:
            g._lazy["key_order"] = self._key_order(g, assets, lazy["key_order"])
        if "tags" in lazy and not assets.appended.size and not assets.tombstones.size \
                and np.array_equal(g.tags_code[:assets.n_old], old.tags_code):
            g._lazy["tags"] = lazy["tags"]
        if "totals_codes" in lazy and not assets.values_grew:
            codes, offsets = lazy["totals_codes"]
            grown = np.empty((g.n, codes.shape[1]), dtype=codes.dtype)
            grown[:assets.n_old] = codes
            rows = np.concatenate([assets.updated, assets.appended])
            grown[rows] = g.totals_rows(rows)
            g._lazy["totals_codes"] = (grown, offsets)

    def _key_order(self, g: Graph, assets: _AssetDelta, order: np.ndarray) -> np.ndarray:
        """The natural-key order with the assets whose key changed, and the new ones, moved
        to their places by binary search (the rest keep their order)."""
        moved = np.concatenate([assets.keys_changed, assets.appended]).astype(np.int64)
        if not moved.size:
            return order
        keys = g.natural_key
        out = np.zeros(g.n, dtype=bool)
        out[moved] = True
        order = order[~out[order]]
        moved_keys = sorted((keys[int(i)], int(i)) for i in moved)
        positions = []
        for key, _i in moved_keys:
            lo, hi = 0, order.size
            while lo < hi:
                mid = (lo + hi) // 2
                if keys[int(order[mid])] < key:
                    lo = mid + 1
                else:
                    hi = mid
            positions.append(lo)
        return np.insert(order, positions, [i for _k, i in moved_keys]).astype(np.int64)  # type: ignore[no-any-return]
