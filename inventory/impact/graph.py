"""The in-memory dependency graph the impact engine traverses, and its cache.

Loading 100k assets and ~1.5M installation and dependency rows costs about a
second; a blast radius over the loaded arrays costs milliseconds.  So the graph
is loaded once and then kept current (``docs/explanation/engine.md``):

* **Change detection.**  Database triggers (migration 0002) bump the single
  row ``inventory_version.id = 1`` on every write to the tables the engine
  reads, whichever process or code path makes it (collectors, imports, the
  API, the CLI, psql).  Each query reads that one row — a primary-key lookup
  — and does nothing more while it has not moved.  Without the row (an
  unmigrated database) nothing is cached.
* **Incremental maintenance.**  The same triggers record which rows changed
  (migration 0006, ``inventory.impact.changes``); a graph that is behind reads
  the changes since its version and patches a copy of itself: assets are
  updated in place or appended, deleted rows become tombstones, and the CSR rows
  of the assets whose edges changed are rebuilt.  When the log cannot say (too
  many rows, a bulk insert that ran without its trigger, pruned history) only
  the parts that changed are reloaded (``_refreshed``), and when the database is
  another one, everything.  Either way the answers are those of a graph loaded
  from scratch (``tests/impact/test_incremental.py``).
* **Snapshots.**  A loaded graph is written to disk (``inventory.impact.snapshot``)
  and a fresh process maps it instead of reading the database; patched forward
  from the change log when it is behind.
* **Committed state only.**  The graph is loaded, and the version read, on a
  connection of its own in one read transaction: never through the caller's
  session, whose uncommitted writes could otherwise leak into a cache other
  requests reuse.
* **Layout.**  Assets are dense indices ``0..n-1`` in id order with per-asset
  attribute arrays (codes into small value lists); dependencies are kept as edge
  arrays and, per *view* (the current inventory, a past moment, a what-if), as
  CSR arrays of reverse edges (dependency -> dependent, the direction an outage
  travels) and forward edges; installations are indexed by product and version
  string, so a scope's seeds are a few array concatenations.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import threading
import time
import unicodedata
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Connection, Engine

from inventory import config
from inventory.choices import CRITICALITIES, DEPENDENCY_KINDS, MEMBER_OF
from inventory.impact.columns import StringColumn

log = logging.getLogger("planb.impact")

HARD, SOFT, MEMBER = 0, 1, 2
# Part counters of the inventory_version row (migration 0002): which tables changed.
PARTS = ("assets_v", "installs_v", "deps_v", "catalog_v", "plans_v")
NEVER = np.iinfo(np.int64).max          # "not retired" as a timestamp
CACHE_SIZE = 3                          # graphs kept (one per database URL)
# An edge's kind in the canonical edge order: its index in DEPENDENCY_KINDS, or OTHER_KIND.
OTHER_KIND = len(DEPENDENCY_KINDS)

# The asset columns the graph keeps, in the order _asset_sql selects them.
ASSET_FIELDS = ("id", "natural_key", "name", "kind", "provider", "account", "region", "os_family",
                "environment", "criticality", "owner", "min_up", "source", "source_scope", "first_seen",
                "retired_at", "tags")
# Per-asset arrays (length n): what a patch copies and extends, and a snapshot stores.
ASSET_ARRAYS = ("ids", "present", "kind_code", "provider_code", "account_code", "region_code", "os_code",
                "env_code", "crit_code", "owner_code", "min_up", "is_manual", "scope_code", "first_seen",
                "retired_at", "tags_code")
# Factorised columns: code array -> its list of values.
CODED = {"kind_code": "kinds", "provider_code": "providers", "account_code": "account_values",
         "region_code": "region_values", "os_code": "os_values", "env_code": "env_values",
         "owner_code": "owner_values", "scope_code": "scope_values", "tags_code": "tags_values"}
EDGE_ARRAYS = ("e_dnt", "e_dep", "e_kind", "e_soft", "e_live")


@dataclass(frozen=True)
class VendorInfo:
    id: int
    name: str
    cloud_provider: str | None


@dataclass(frozen=True)
class ProductInfo:
    id: int
    vendor_id: int
    name: str


@dataclass(frozen=True)
class PlanInfo:
    """The columns ``plan_status`` reads, detached from the session."""

    id: int
    name: str
    review_interval_days: int
    last_reviewed: datetime | None
    last_exercised: datetime | None


def to_micros(value: datetime) -> int:
    """An aware (or naive UTC) datetime as integer microseconds since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _factorize(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Codes into the list of distinct values (in order of first appearance)."""
    distinct = list(dict.fromkeys(values))
    index = {v: i for i, v in enumerate(distinct)}
    return np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values)), distinct


def _fetchall(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows as plain tuples from the DBAPI cursor, in ``conn``'s transaction
    (SQLAlchemy's row objects cost more than the query for 100k rows)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params) if params else cursor.execute(sql)
        return cursor.fetchall()
    finally:
        cursor.close()


def _ints(text: str | None) -> np.ndarray:
    """A comma-separated list of integers (from group_concat/string_agg) as an array."""
    if not text:
        return np.empty(0, dtype=np.int64)
    return np.fromstring(text, dtype=np.int64, sep=",")


def edge_kind_code(kind: str) -> int:
    """A dependency kind's code in the canonical edge order."""
    return DEPENDENCY_KINDS.index(kind) if kind in DEPENDENCY_KINDS else OTHER_KIND


def _fetch_edges(conn: Connection) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """All dependencies in one scan, as (dependent id, dependency id, kind * 2 + soft) triples;
    plus the rows whose kind is not one of DEPENDENCY_KINDS (coded ``OTHER_KIND``)."""
    case = " ".join(f"WHEN '{k}' THEN {i}" for i, k in enumerate(DEPENDENCY_KINDS))
    code = f"((CASE kind {case} ELSE {OTHER_KIND} END) * 2 + (CASE strength WHEN 'soft' THEN 1 ELSE 0 END))"
    if conn.dialect.name == "sqlite":
        sql = f"SELECT group_concat(dependent_id || ',' || dependency_id || ',' || {code}) FROM dependencies"
    else:
        sql = (f"SELECT string_agg(dependent_id::text || ',' || dependency_id::text || ',' || {code}::text,"
               " ',') FROM dependencies")
    triples = _ints(_fetchall(conn, sql)[0][0]).reshape(-1, 3)
    other_rows: list[tuple[Any, ...]] = []
    if (triples[:, 2] // 2 == OTHER_KIND).any():
        known = ", ".join(f"'{k}'" for k in DEPENDENCY_KINDS)
        other_rows = _fetchall(conn, "SELECT dependent_id, dependency_id, kind FROM dependencies "
                                     f"WHERE kind NOT IN ({known})")
    return triples, other_rows


def _fetch_installs(conn: Connection) -> list[tuple[int, str | None, np.ndarray]]:
    """Installations grouped by (product, version): the asset ids of each group."""
    if conn.dialect.name == "sqlite":
        sql = ("SELECT product_id, version, group_concat(asset_id) FROM installations NOT INDEXED "
               "GROUP BY product_id, version")
    else:
        sql = ("SELECT product_id, version, string_agg(asset_id::text, ',') FROM installations "
               "GROUP BY product_id, version")
    return [(product_id, version, _ints(ids)) for product_id, version, ids in _fetchall(conn, sql)]


def asset_sql(dialect: str, where: str = "") -> str:
    """SELECT of ``ASSET_FIELDS`` (times as micros on PostgreSQL, as stored text on SQLite)."""
    if dialect == "sqlite":
        times = "first_seen, retired_at, tags"
    else:
        times = ("(extract(epoch FROM first_seen) * 1000000)::bigint, "
                 "(extract(epoch FROM retired_at) * 1000000)::bigint, tags::text")
    return ("SELECT id, natural_key, name, kind, provider, account, region, os_family, environment, "
            f"criticality, owner, min_up, source, source_scope, {times} FROM assets {where} ORDER BY id")


def asset_times(dialect: str, first: Sequence[Any], retired: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``first_seen`` and ``retired_at`` as int64 micros (``NEVER`` for not retired)."""
    if dialect == "sqlite":
        first_us = np.array(first, dtype="datetime64[us]").astype(np.int64)
        retired_dt = np.array(retired, dtype="datetime64[us]")
        return first_us, np.where(np.isnat(retired_dt), NEVER, retired_dt.astype(np.int64))
    return (np.array(first, dtype=np.int64),
            np.fromiter((NEVER if r is None else r for r in retired), dtype=np.int64, count=len(retired)))


def criticality_code(value: Any) -> int:
    return CRITICALITIES.index(value) if value in CRITICALITIES else len(CRITICALITIES)


def min_up_value(value: Any) -> int:
    return -1 if value is None else int(value)


class CSR:
    """Edges grouped by source, packed as the kernel reads them: ``indptr`` (int32[n+1])
    row pointers and ``pairs`` (int32[m, 2]) of (target, graph edge index), so the edges
    leaving asset i are ``pairs[indptr[i]:indptr[i+1]]``.  Within a row, edges are in the
    canonical order (target, then kind and strength), which the kernel's tie rule reads."""

    __slots__ = ("indptr", "pairs")

    def __init__(self, indptr: np.ndarray, pairs: np.ndarray) -> None:
        self.indptr = indptr
        self.pairs = pairs

    @property
    def dst(self) -> np.ndarray:
        return self.pairs[:, 0]

    @property
    def eid(self) -> np.ndarray:
        return self.pairs[:, 1]

    @property
    def has_out(self) -> np.ndarray:
        return np.diff(self.indptr) > 0  # type: ignore[no-any-return]

    @classmethod
    def build(cls, n: int, src: np.ndarray, dst: np.ndarray, eid: np.ndarray) -> "CSR":
        """From edges given in canonical order (stable by source keeps it within rows)."""
        if src.size >= 2**31:
            raise OverflowError("more than 2**31 edges: the kernel's int32 pointers cannot hold them")
        order = np.argsort(src, kind="stable")
        indptr = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
        pairs = np.empty((src.size, 2), dtype=np.int32)
        pairs[:, 0] = dst[order]
        pairs[:, 1] = eid[order]
        return cls(indptr, pairs)

    def patched(self, n: int, drop_src: np.ndarray, drop_eid: np.ndarray, add_src: np.ndarray,
                add_dst: np.ndarray, add_eid: np.ndarray, e_kind: np.ndarray, e_soft: np.ndarray) -> "CSR":
        """A new CSR over ``n`` assets without the entries of graph edges ``drop_eid`` (in rows
        ``drop_src``) and with the entries ``add_src`` -> ``add_dst`` over ``add_eid``, each
        at its canonical place in its row (``e_kind``/``e_soft`` rank edges between the same
        two assets).  Only the rows touched are searched; the rest is copied as it is."""
        indptr, pairs = self.indptr.astype(np.int64), self.pairs
        old_n = indptr.size - 1
        if drop_eid.size:
            positions = np.empty(drop_eid.size, dtype=np.int64)
            for j, (row, eid) in enumerate(zip(drop_src.tolist(), drop_eid.tolist())):
                lo, hi = int(indptr[row]), int(indptr[row + 1])
                found = np.flatnonzero(pairs[lo:hi, 1] == eid)
                if not found.size:
                    raise LookupError(f"edge {eid} is not in row {row}")
                positions[j] = lo + found[0]
            pairs = np.delete(pairs, positions, axis=0)
            indptr = indptr - np.concatenate(([0], np.cumsum(np.bincount(drop_src, minlength=old_n))))
        if n > old_n:
            indptr = np.concatenate((indptr, np.full(n - old_n, indptr[-1], dtype=np.int64)))
        if add_src.size:
            keys = add_dst.astype(np.int64) * 32 + _codes(e_kind, e_soft, add_eid)
            order = np.lexsort((keys, add_src))
            add_src, add_dst, add_eid, keys = add_src[order], add_dst[order], add_eid[order], keys[order]
            positions = np.empty(add_src.size, dtype=np.int64)
            rows, starts = np.unique(add_src, return_index=True)
            ends = np.append(starts[1:], add_src.size)
            for row, a, b in zip(rows.tolist(), starts.tolist(), ends.tolist()):
                lo, hi = int(indptr[row]), int(indptr[row + 1])
                segment = pairs[lo:hi]
                row_keys = segment[:, 0].astype(np.int64) * 32 + _codes(e_kind, e_soft, segment[:, 1])
                positions[a:b] = lo + np.searchsorted(row_keys, keys[a:b])
            added = np.empty((add_src.size, 2), dtype=np.int32)
            added[:, 0] = add_dst
            added[:, 1] = add_eid
            pairs = np.insert(pairs, positions, added, axis=0)
            indptr = indptr + np.concatenate(([0], np.cumsum(np.bincount(add_src, minlength=n))))
        if indptr[-1] >= 2**31:
            raise OverflowError("more than 2**31 edges: the kernel's int32 pointers cannot hold them")
        return CSR(indptr.astype(np.int32), np.ascontiguousarray(pairs, dtype=np.int32))


def _codes(e_kind: np.ndarray, e_soft: np.ndarray, eids: np.ndarray) -> np.ndarray:
    """Kind-and-strength codes of some graph edges, as the canonical order ranks them."""
    return np.minimum(e_kind[eids].astype(np.int64), OTHER_KIND) * 2 + e_soft[eids]  # type: ignore[no-any-return]


@dataclass
class View:
    """The graph as seen at one moment or under one what-if: which assets exist,
    and the edges between them as CSR arrays — reverse edges (dependency ->
    dependent, the way an outage travels) split by type, and forward edges."""

    alive: np.ndarray          # bool[n]
    hard: CSR                  # hard dependencies, reversed
    soft: CSR                  # soft dependencies, reversed
    member: CSR                # member -> group (the group has min_up)
    every: CSR                 # all three together (degradation travels over every edge)
    fwd: CSR                   # dependent -> dependency, all types
    n_members: np.ndarray      # int32[n]: members (alive) of each group
    min_up: np.ndarray         # int32[n]: -1 for non-groups
    extra_members: np.ndarray  # int32[n]: healthy members added by a what-if
    edge_mask: np.ndarray      # bool[E]: which graph edges this view may use
    cache: dict[Any, Any] = field(default_factory=dict)

    def reverse(self, etype: int) -> CSR:
        return (self.hard, self.soft, self.member)[etype]

    def csrs(self) -> dict[str, CSR]:
        return {"hard": self.hard, "soft": self.soft, "member": self.member, "every": self.every,
                "fwd": self.fwd}

    def kernel_inputs(self) -> tuple[np.ndarray, ...]:
        """The view as ``kernel.propagate_arrays`` reads it after the seeds: the packed
        hard, member, soft and all-edges CSRs, then each group's spare members (a group
        is down once more members are down than it can spare)."""
        spare = self.cache.get("spare")
        if spare is None:
            spare = self.cache["spare"] = (self.n_members + self.extra_members - self.min_up).astype(np.int32)
        return (self.hard.indptr, self.hard.pairs, self.member.indptr, self.member.pairs,
                self.soft.indptr, self.soft.pairs, self.every.indptr, self.every.pairs, spare)


class Graph:
    """Everything the engine needs from the database, as arrays.

    A graph is never modified once it is cached: a change makes a new graph that
    shares this one's unchanged arrays (queries may be reading this one)."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.counters: dict[str, int] | None = None
        # When the inventory was last known to be exactly this graph (the start of its load,
        # then every probe that found the same version): it is at most now - this behind.
        self.confirmed_at = 0.0
        self._lock = threading.RLock()   # a lazy value may be built from another
        self._lazy: dict[str, Any] = {}
        # How this graph was made: "database", "snapshot", "patch", "parts".
        self.origin = "database"
        self.refreshed_parts: list[str] = []
        self.patch_stats: dict[str, int] = {}
        # Whether the edge arrays are in canonical order (a patch appends edges at the end).
        self.edges_canonical = True

    # ------------------------------------------------------------ loading

    @classmethod
    def load(cls, conn: Connection, counters: dict[str, int] | None) -> "Graph":
        """Everything from one connection (one snapshot)."""
        g = cls()
        g._set_counters(counters)
        g.dialect = conn.dialect.name
        edges = _fetch_edges(conn)
        installs = _fetch_installs(conn)
        g._load_vendors(conn)
        g._load_assets(conn)
        g._load_plans(conn)
        g._finish(edges, installs)
        return g

    @classmethod
    def load_from(cls, engine: Engine, previous: "Graph | None" = None, attempts: int = 3) -> "Graph":
        """The graph of ``engine``'s database now.

        From the ``previous`` graph of the same database (or, without one, the newest
        snapshot on disk): itself when it is current, else a copy patched from the
        change log, or with the parts that changed reloaded (``_refreshed``).  A full
        load uses two connections at once: the dependency and installation aggregates
        (mostly database time) run in a helper thread while this one reads the assets
        (mostly Python time); both read the counters first, and if they disagree a
        write slipped in between and the load is redone."""
        from inventory.impact import snapshot

        if previous is not None or _in_memory(engine):
            return cls._load_or_patch(engine, previous, attempts)
        # No graph in this process: start from the newest snapshot; while loading from the
        # database, hold the snapshot lock so processes starting together map this load's file.
        with snapshot.exclusive(engine):
            graph = cls._load_or_patch(engine, snapshot.open_latest(engine), attempts)
            if graph.origin in ("database", "parts") and graph.n >= snapshot.MIN_ASSETS:
                try:
                    snapshot.write(graph, engine)
                except OSError as exc:
                    log.warning("cannot write the impact graph snapshot: %s", exc)
            elif graph.origin == "patch":
                snapshot.schedule(graph, engine)
            return graph

    @classmethod
    def _load_or_patch(cls, engine: Engine, previous: "Graph | None", attempts: int) -> "Graph":
        from inventory.impact import changes

        in_memory = _in_memory(engine)
        for _attempt in range(attempts):
            with engine.connect() as conn, conn.begin():
                counters = _counters(conn)
                if counters is not None and previous is not None and previous.same_lineage(counters):
                    if previous.counters == counters:
                        return previous
                    patched = changes.patch(previous, conn, counters)
                    return patched if patched is not None else previous._refreshed(conn, counters)
                if counters is None or in_memory:
                    # One snapshot on one connection (an in-memory SQLite database
                    # exists only on its own connection).
                    return cls.load(conn, counters)
                box: dict[str, Any] = {}

                def side() -> None:
                    try:
                        with engine.connect() as other, other.begin():
                            box["counters"] = _counters(other)
                            box["edges"] = _fetch_edges(other)
                            box["installs"] = _fetch_installs(other)
                    except BaseException as exc:  # noqa: BLE001 - re-raised in the loader
                        box["error"] = exc

                helper = threading.Thread(target=side, name="planb-graph-load", daemon=True)
                helper.start()
                g = cls()
                g._set_counters(counters)
                g.dialect = conn.dialect.name
                try:
                    g._load_vendors(conn)
                    g._load_assets(conn)
                    g._load_plans(conn)
                finally:
                    helper.join()
                if "error" in box:
                    raise box["error"]
                if box["counters"] != counters:
                    continue
                g._finish(box["edges"], box["installs"])
                return g
        with engine.connect() as conn, conn.begin():
            return cls.load(conn, _counters(conn))

    def _set_counters(self, counters: dict[str, int] | None) -> None:
        self.counters = counters
        self.version = None if counters is None else counters["version"]

    def lineage(self) -> int | None:
        """``version - sum(parts)``: the random start the migration chose for this database."""
        mine = self.counters
        return None if mine is None else mine["version"] - sum(mine[p] for p in PARTS)

    def same_lineage(self, counters: dict[str, int]) -> bool:
        """Whether ``counters`` continue this graph's counters (same database, later state).

        Every bump adds one to ``version`` and one to a part counter, so
        ``version - sum(parts)`` is the random start the migration chose: a
        database dropped and recreated under the same URL does not match."""
        mine = self.counters
        if mine is None:
            return False
        return (counters["version"] - sum(counters[p] for p in PARTS) == self.lineage()
                and all(counters[p] >= mine[p] for p in PARTS))

    def successor(self, counters: dict[str, int]) -> "Graph":
        """A new graph sharing this one's arrays, for ``counters`` (the caller replaces what changed)."""
        g = copy.copy(self)
        g._lock = threading.RLock()
        g._set_counters(counters)
        g._lazy = {}
        g.confirmed_at = 0.0
        g.patch_stats = {}
        g.refreshed_parts = []
        return g

    def _refreshed(self, conn: Connection, counters: dict[str, int]) -> "Graph":
        """A new graph with the parts whose counters moved reloaded from the database (the
        rest re-indexed from this one's arrays; nothing of this one is modified)."""
        changed = {p for p in PARTS if counters[p] != self.counters[p]}   # type: ignore[index]
        assets = "assets_v" in changed
        edges = assets or "deps_v" in changed
        installs = assets or "installs_v" in changed
        g = self.successor(counters)
        g.origin = "parts"
        keep: set[str] = set()
        if not assets:
            keep |= {"key_order", "key_rank", "tags", "service_rows", "totals_codes"}
        if not edges:
            keep.add("edge_first_seen")
        if not installs:
            keep.add("install_first_seen")
        if "plans_v" not in changed:
            keep.add("plan_statuses")
        g._lazy = {k: v for k, v in self._lazy.items() if k in keep}
        if "catalog_v" in changed:
            g._load_vendors(conn)
        if assets:
            g._load_assets(conn)
        if edges:
            g._build_edges(*(_fetch_edges(conn) if "deps_v" in changed else self._edge_rows()))
        if installs:
            g._build_installations(_fetch_installs(conn) if "installs_v" in changed else self._install_rows())
        if assets or "plans_v" in changed:
            g._load_plans(conn)
        if edges or assets:
            g.current = g.make_view(g.alive_now, g.e_live)
        else:
            # Same arrays, fresh per-view caches (plan levels depend on plans and installations).
            g.current = dataclasses.replace(self.current, cache={})
        g.refreshed_parts = sorted(changed)
        return g

    def _edge_rows(self) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
        """This graph's live edges as ``_fetch_edges`` returns them (ids, not indices)."""
        live = np.flatnonzero(self.e_live)
        kinds = self.e_kind[live].astype(np.int64)
        code = np.minimum(kinds, OTHER_KIND) * 2 + self.e_soft[live]
        triples = np.stack([self.ids[self.e_dnt[live]], self.ids[self.e_dep[live]], code], axis=1)
        other = np.flatnonzero(kinds >= OTHER_KIND)
        other_rows = [(int(triples[j, 0]), int(triples[j, 1]), self.edge_kinds[int(kinds[j])]) for j in other]
        return triples.astype(np.int64), other_rows

    def _install_rows(self) -> list[tuple[int, str | None, np.ndarray]]:
        """This graph's installations as ``_fetch_installs`` returns them (ids, not indices)."""
        return [(pid, version, self.ids[idx]) for pid, groups in self.installs.items() for version, idx in groups]

    def _finish(self, edges: tuple[np.ndarray, list[tuple[Any, ...]]],
                installs: list[tuple[int, str | None, np.ndarray]]) -> None:
        self._build_edges(*edges)
        self._build_installations(installs)
        self.current = self.make_view(self.alive_now, self.e_live)
        self.refreshed_parts = sorted(PARTS)

    def _load_vendors(self, conn: Connection) -> None:
        self.vendors = {r[0]: VendorInfo(r[0], r[1], r[2]) for r in conn.exec_driver_sql(
            "SELECT id, name, cloud_provider FROM vendors")}
        self.products = {r[0]: ProductInfo(r[0], r[1], r[2]) for r in conn.exec_driver_sql(
            "SELECT id, vendor_id, name FROM products")}
        self.vendor_products: dict[int, list[int]] = {v: [] for v in self.vendors}
        for p in sorted(self.products.values(), key=lambda p: p.name):
            self.vendor_products.setdefault(p.vendor_id, []).append(p.id)
        self._vendor_by_lower = {v.name.lower(): v.id for v in self.vendors.values()}

    def _load_assets(self, conn: Connection) -> None:
        rows = _fetchall(conn, asset_sql(self.dialect))
        self.n = n = len(rows)
        cols = list(zip(*rows)) if rows else [()] * len(ASSET_FIELDS)
        self.ids = np.array(cols[0], dtype=np.int64)
        self.id_to_idx = np.full(int(self.ids.max()) + 1 if n else 1, -1, dtype=np.int32)
        self.id_to_idx[self.ids] = np.arange(n, dtype=np.int32)
        self.present = np.ones(n, dtype=bool)
        self.natural_key = StringColumn(list(cols[1]))
        self.name = StringColumn(list(cols[2]))
        self.owner_code, self.owner_values = _factorize(cols[10])
        self.kind_code, self.kinds = _factorize(cols[3])
        self.provider_code, self.providers = _factorize(cols[4])
        self.account_code, self.account_values = _factorize(cols[5])
        self.region_code, self.region_values = _factorize(cols[6])
        self.os_code, self.os_values = _factorize(cols[7])
        self.env_code, self.env_values = _factorize(cols[8])
        crit_codes, crit_values = _factorize(cols[9])
        crit_table = np.array([criticality_code(c) for c in crit_values] + [0], dtype=np.int8)
        self.crit_code = crit_table[crit_codes]
        self.min_up = np.fromiter((min_up_value(v) for v in cols[11]), dtype=np.int32, count=n)
        source_codes, source_values = _factorize(cols[12])
        self.is_manual = np.array([v == "import" for v in source_values] + [False])[source_codes]
        self.scope_code, self.scope_values = _factorize(cols[13])
        self.first_seen, self.retired_at = asset_times(self.dialect, cols[14], cols[15])
        self.tags_code, self.tags_values = _factorize(cols[16])
        self.derive_asset_sets()

    def derive_asset_sets(self) -> None:
        """What follows from the per-asset arrays: who is current, the services, and the
        regions, accounts and environments a scope may name."""
        self.alive_now = (self.retired_at == NEVER) & self.present
        self.is_service = (self.kind_code == (self.kinds.index("service") if "service" in self.kinds else -2)) \
            & self.present
        services = np.flatnonzero(self.is_service)
        # Business services in natural-key order (few; listed in every answer's totals).
        self.service_idx = np.array(sorted(services.tolist(), key=self.natural_key.__getitem__), dtype=np.int64)
        self.regions = self._used(self.region_code, self.region_values)
        self.accounts = self._used(self.account_code, self.account_values)
        self.environments = self._used(self.env_code, self.env_values)

    def _used(self, codes: np.ndarray, values: list[Any]) -> set[Any]:
        counts = np.bincount(codes, weights=self.present, minlength=len(values))
        return {values[c] for c in np.flatnonzero(counts).tolist() if values[c]}

    def _to_idx(self, ids: np.ndarray) -> np.ndarray:
        """Asset ids to dense indices (-1 for an id this graph does not hold)."""
        ids = np.asarray(ids, dtype=np.int64)
        inside = (ids >= 0) & (ids < self.id_to_idx.size)
        return np.where(inside, self.id_to_idx[np.where(inside, ids, 0)], -1)

    def _build_edges(self, triples: np.ndarray, other_rows: list[tuple[Any, ...]]) -> None:
        self.edge_kinds: list[str] = list(DEPENDENCY_KINDS)
        other = OTHER_KIND
        dnt = self._to_idx(triples[:, 0])
        dep = self._to_idx(triples[:, 1])
        known = np.flatnonzero((dnt >= 0) & (dep >= 0))
        # A canonical order (by dependency, dependent, kind: asset indices follow ids), so
        # ties between equally short explanations break the same way whatever order the
        # database returned the rows in.
        code = triples[known, 2]
        order = known[np.argsort((dep[known] * (self.n + 1) + dnt[known]) * 32 + code, kind="stable")]
        self.e_dnt = dnt[order].astype(np.int32)       # the dependent (where an outage goes)
        self.e_dep = dep[order].astype(np.int32)       # the dependency (where it comes from)
        self.e_kind = (triples[order, 2] // 2).astype(np.int8)
        self.e_soft = (triples[order, 2] % 2).astype(bool)
        self.e_live = np.ones(self.e_dep.size, dtype=bool)   # False: deleted since (a patch's tombstone)
        self.edges_canonical = True
        if other_rows:
            # Kinds outside DEPENDENCY_KINDS (rare: imports and collectors validate them).
            self.edge_kinds.append("other")
            k = self.n + 1
            edge_keys = self.e_dnt.astype(np.int64) * k + self.e_dep
            for dnt_id, dep_id, kind in other_rows:
                if kind not in self.edge_kinds:
                    self.edge_kinds.append(kind)
                a, b = self._to_idx(np.array([dnt_id, dep_id]))
                hit = np.flatnonzero((edge_keys == int(a) * k + int(b)) & (self.e_kind == other))
                self.e_kind[hit[:1]] = self.edge_kinds.index(kind)
        self.member_kind = self.edge_kinds.index(MEMBER_OF)

    def edge_codes(self) -> np.ndarray:
        """Each graph edge's kind and strength as the canonical order ranks them."""
        return np.minimum(self.e_kind.astype(np.int64), OTHER_KIND) * 2 + self.e_soft  # type: ignore[no-any-return]

    def edge_order(self) -> np.ndarray | None:
        """The graph edges in canonical order (by dependency, dependent, kind and strength):
        None when the arrays already are (a graph just loaded), else a permutation."""
        if self.edges_canonical:
            return None

        def build() -> np.ndarray:
            key = (self.e_dep.astype(np.int64) * (self.n + 1) + self.e_dnt) * 32 + self.edge_codes()
            return np.argsort(key, kind="stable").astype(np.int64)
        return self.lazy("edge_order", build)  # type: ignore[no-any-return]

    def _build_installations(self, rows: list[tuple[int, str | None, np.ndarray]]) -> None:
        # product id -> [(version string, asset indices)]
        self.installs: dict[int, list[tuple[str | None, np.ndarray]]] = {}
        for product_id, version, asset_ids in rows:
            idx = self._to_idx(asset_ids)
            idx = idx[idx >= 0].astype(np.int32)
            if idx.size:
                self.installs.setdefault(product_id, []).append((version, idx))
        for groups in self.installs.values():
            groups.sort(key=version_order)

    def _load_plans(self, conn: Connection) -> None:
        from inventory.models import ContingencyPlan, PlanLink

        plans = conn.execute(sa.select(ContingencyPlan.id, ContingencyPlan.name,
                                       ContingencyPlan.review_interval_days, ContingencyPlan.last_reviewed,
                                       ContingencyPlan.last_exercised)).all()
        self.plans = {r[0]: PlanInfo(r[0], r[1], r[2], r[3], r[4]) for r in plans}
        self.asset_plans: dict[int, list[int]] = {}
        self.product_plans: dict[int, list[int]] = {}
        self.vendor_plans: dict[int, list[int]] = {}
        for plan_id, asset_id, product_id, vendor_id in conn.execute(
                sa.select(PlanLink.plan_id, PlanLink.asset_id, PlanLink.product_id, PlanLink.vendor_id)
                .order_by(PlanLink.id)):
            if asset_id is not None and 0 <= asset_id < self.id_to_idx.size and self.id_to_idx[asset_id] >= 0:
                self.asset_plans.setdefault(int(self.id_to_idx[asset_id]), []).append(plan_id)
            elif product_id is not None:
                self.product_plans.setdefault(product_id, []).append(plan_id)
            elif vendor_id is not None:
                self.vendor_plans.setdefault(vendor_id, []).append(plan_id)

    # ------------------------------------------------------------ views

    def edge_types(self, min_up: np.ndarray, edge_sel: np.ndarray) -> np.ndarray:
        """HARD/SOFT/MEMBER for the selected edges (a member-of edge into a non-group is ordinary)."""
        types = np.where(self.e_soft[edge_sel], SOFT, HARD).astype(np.int8)
        member = (self.e_kind[edge_sel] == self.member_kind) & (min_up[self.e_dnt[edge_sel]] >= 0)
        types[member] = MEMBER
        return types

    def make_view(self, alive: np.ndarray, edge_mask: np.ndarray, min_up: np.ndarray | None = None,
                  types: np.ndarray | None = None, extra_members: np.ndarray | None = None) -> View:
        """CSR arrays over the live edges in ``edge_mask`` whose two ends are ``alive``.

        ``types`` (per graph edge) overrides the edge types (what-if replicas)."""
        n = self.n
        min_up = self.min_up if min_up is None else min_up
        keep = edge_mask & self.e_live & alive[self.e_dep] & alive[self.e_dnt]
        order = self.edge_order()
        sel = (np.flatnonzero(keep) if order is None else order[keep[order]]).astype(np.int32)
        src = self.e_dep[sel]
        dst = self.e_dnt[sel]
        etype = self.edge_types(min_up, sel) if types is None else types[sel]
        csrs = []
        for t in (HARD, SOFT, MEMBER):
            part = etype == t
            csrs.append(CSR.build(n, src[part], dst[part], sel[part]))
        n_members = np.bincount(dst[etype == MEMBER], minlength=n).astype(np.int32)
        return View(alive=alive, hard=csrs[0], soft=csrs[1], member=csrs[2], every=CSR.build(n, src, dst, sel),
                    fwd=CSR.build(n, dst, src, sel), n_members=n_members, min_up=min_up,
                    extra_members=(np.zeros(n, dtype=np.int32) if extra_members is None else extra_members),
                    edge_mask=edge_mask)

    def view_at(self, conn_factory: Callable[[], Any], at_micros: int) -> View:
        """The graph as it stood at a past moment (from first_seen / retired_at)."""
        alive = (self.first_seen <= at_micros) & (self.retired_at > at_micros) & self.present
        edge_first = self.lazy("edge_first_seen", lambda: self._edge_first_seen(conn_factory))
        return self.make_view(alive, self.e_live & (edge_first <= at_micros))

    def _micros_sql(self, column: str) -> str:
        if self.dialect == "sqlite":
            # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC): whole seconds plus the microseconds.
            return (f"(CAST(strftime('%s', {column}) AS INTEGER) * 1000000"
                    f" + CAST(substr({column}, 21, 6) AS INTEGER))")
        return f"(extract(epoch FROM {column}) * 1000000)::bigint"

    def _concat(self, expr: str) -> str:
        if self.dialect == "sqlite":
            return f"group_concat({expr})"
        return f"string_agg({expr}, ',')"

    def _edge_first_seen(self, conn_factory: Callable[[], Any]) -> np.ndarray:
        """Per graph edge, when it was first seen (loaded only for as-of queries).

        Matched to the loaded edges by (dependent, dependency, kind); an edge the
        load does not find counts as always present."""
        cast = "" if self.dialect == "sqlite" else "::text"
        expr = (f"dependent_id{cast} || ',' || dependency_id{cast} || ',' || "
                f"{self._micros_sql('first_seen')}{cast}")
        with conn_factory() as conn:
            rows = conn.exec_driver_sql(f"SELECT kind, {self._concat(expr)} FROM dependencies GROUP BY kind"
                                        ).fetchall()
        k = self.n + 1
        keys, stamps = [], []
        for kind, text in rows:
            if kind not in self.edge_kinds:
                continue
            triples = _ints(text).reshape(-1, 3)
            dnt = self._to_idx(triples[:, 0])
            dep = self._to_idx(triples[:, 1])
            ok = (dnt >= 0) & (dep >= 0)
            keys.append((dnt[ok] * k + dep[ok]) * 64 + self.edge_kinds.index(kind))
            stamps.append(triples[ok, 2])
        out = np.zeros(self.e_dep.size, dtype=np.int64)
        if not keys:
            return out
        key_all = np.concatenate(keys)
        stamp_all = np.concatenate(stamps)
        if not key_all.size:
            return out
        order = np.argsort(key_all)
        key_all, stamp_all = key_all[order], stamp_all[order]
        mine = (self.e_dnt.astype(np.int64) * k + self.e_dep) * 64 + self.e_kind
        pos = np.clip(np.searchsorted(key_all, mine), 0, key_all.size - 1)
        found = key_all[pos] == mine
        out[found] = stamp_all[pos[found]]
        return out

    def install_first_seen(self, conn_factory: Callable[[], Any]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """product id -> (asset indices sorted, first_seen micros): for as-of queries only."""
        def load() -> dict[int, tuple[np.ndarray, np.ndarray]]:
            cast = "" if self.dialect == "sqlite" else "::text"
            expr = f"asset_id{cast} || ',' || {self._micros_sql('first_seen')}{cast}"
            with conn_factory() as conn:
                rows = conn.exec_driver_sql(
                    f"SELECT product_id, {self._concat(expr)} FROM installations GROUP BY product_id").fetchall()
            out = {}
            for product_id, text in rows:
                pairs = _ints(text).reshape(-1, 2)
                idx = self._to_idx(pairs[:, 0])
                known = idx >= 0
                idx, stamps = idx[known], pairs[known, 1]
                order = np.argsort(idx)
                out[product_id] = (idx[order], stamps[order])
            return out
        return self.lazy("install_first_seen", load)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ lazily derived data

    def lazy(self, key: str, build: Callable[[], Any]) -> Any:
        value = self._lazy.get(key)
        if value is None:
            with self._lock:
                value = self._lazy.get(key)
                if value is None:
                    value = build()
                    self._lazy[key] = value
        return value

    @property
    def key_order(self) -> np.ndarray:
        """Asset indices in natural-key order."""
        return self.lazy("key_order", lambda: np.array(
            sorted(range(self.n), key=self.natural_key.__getitem__), dtype=np.int64))  # type: ignore[no-any-return]

    @property
    def key_rank(self) -> np.ndarray:
        """Each asset's position in natural-key order (for deterministic listings)."""
        def build() -> np.ndarray:
            rank = np.empty(self.n, dtype=np.int64)
            rank[self.key_order] = np.arange(self.n)
            return rank
        return self.lazy("key_rank", build)  # type: ignore[no-any-return]

    def service_rows(self) -> dict[int, tuple[int, str, str, str]]:
        """The fixed part of each business service's totals row: (asset id, key, name, criticality)."""
        def build() -> dict[int, tuple[int, str, str, str]]:
            rows = {}
            for i in self.service_idx.tolist():
                code = int(self.crit_code[i])
                rows[i] = (int(self.ids[i]), self.natural_key[i], self.name[i],
                           CRITICALITIES[code] if code < len(CRITICALITIES) else "unknown")
            return rows
        return self.lazy("service_rows", build)  # type: ignore[no-any-return]

    def totals_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Four codes per asset for the totals, side by side (``int32[n, 4]``):
        (criticality, kind, OS), account x provider, region x provider, and the
        collection scope (``len(scope_values)`` for a manual import, which no collector
        refreshes); and where each coding's counts start in
        ``kernel.summarise_hits``'s output (by status, so two slots per code)."""
        def build() -> tuple[np.ndarray, np.ndarray]:
            prov_n = len(self.providers)
            widths = [(len(CRITICALITIES) + 1) * len(self.kinds) * len(self.os_values),
                      len(self.account_values) * prov_n, len(self.region_values) * prov_n,
                      len(self.scope_values) + 1]
            if max(widths) >= 2**31:
                raise OverflowError("a totals code does not fit in int32")
            codes = self.totals_rows(slice(None))
            return codes, np.concatenate([[0], np.cumsum(widths) * 2]).astype(np.int64)
        return self.lazy("totals_codes", build)  # type: ignore[no-any-return]

    def totals_rows(self, idx: Any) -> np.ndarray:
        """``totals_codes`` rows of the assets ``idx`` (an index array or a slice)."""
        prov_n = len(self.providers)
        profile = (self.crit_code[idx].astype(np.int64) * len(self.kinds) + self.kind_code[idx]) \
            * len(self.os_values) + self.os_code[idx]
        account = self.account_code[idx].astype(np.int64) * prov_n + self.provider_code[idx]
        region = self.region_code[idx].astype(np.int64) * prov_n + self.provider_code[idx]
        scope = np.where(self.is_manual[idx], len(self.scope_values), self.scope_code[idx])
        return np.ascontiguousarray(np.stack([profile, account, region, scope], axis=1).astype(np.int32))

    def tag_index(self) -> dict[tuple[str, str], np.ndarray]:
        """(tag key, value) -> indices of the assets carrying it (each distinct tags value parsed once)."""
        def build() -> dict[tuple[str, str], np.ndarray]:
            by_pair: dict[tuple[str, str], list[int]] = {}
            for code, raw in enumerate(self.tags_values):
                for key, value in _tags(raw).items():
                    by_pair.setdefault((str(key), str(value)), []).append(code)
            holders = np.flatnonzero(self.present)
            holders = holders[np.argsort(self.tags_code[holders], kind="stable")]
            bounds = np.searchsorted(self.tags_code[holders], np.arange(len(self.tags_values) + 1))
            out = {}
            for pair, codes in by_pair.items():
                parts = [holders[bounds[c]:bounds[c + 1]] for c in codes]
                out[pair] = np.sort(np.concatenate(parts)).astype(np.int32)
            return out
        return self.lazy("tags", build)  # type: ignore[no-any-return]

    def tags_of(self, idx: int) -> dict[str, Any]:
        return _tags(self.tags_values[int(self.tags_code[idx])])

    # ------------------------------------------------------------ names

    def vendor_names(self) -> list[str]:
        return sorted(v.name for v in self.vendors.values())

    def find_vendor(self, name: str, db: so.Session | None = None) -> int | None:
        found = self._vendor_by_lower.get(name.lower())
        if found is not None or db is None:
            return found
        # Aliases ("CrowdStrike, Inc.", "falcon-sensor") are few and read rarely.
        from inventory.models import VendorAlias
        alias = " ".join(unicodedata.normalize("NFKC", name).lower().split())   # as aliases are stored
        return db.scalar(sa.select(VendorAlias.vendor_id).where(
            VendorAlias.alias == alias, VendorAlias.is_pattern.is_(False)).limit(1))

    def product_names(self, vendor_id: int) -> list[str]:
        return [self.products[p].name for p in self.vendor_products.get(vendor_id, [])]

    def find_product(self, vendor_id: int, name: str) -> int | None:
        for pid in self.vendor_products.get(vendor_id, []):
            if self.products[pid].name.lower() == name.lower():
                return pid
        return None

    def edge_kind_name(self, eid: int) -> str:
        return self.edge_kinds[int(self.e_kind[eid])]

    def index_of_key(self, natural_key: str) -> int | None:
        """The asset with this natural key (a binary search in natural-key order)."""
        order, keys = self.key_order, self.natural_key
        lo, hi = 0, order.size
        while lo < hi:
            mid = (lo + hi) // 2
            if keys[int(order[mid])] < natural_key:
                lo = mid + 1
            else:
                hi = mid
        while lo < order.size:
            i = int(order[lo])
            if keys[i] != natural_key:
                return None
            if self.present[i]:
                return i
            lo += 1   # a deleted asset's tombstone: the live one with this key follows
        return None


def version_order(group: tuple[str | None, Any]) -> tuple[bool, str]:
    """Installation groups of a product in version-string order, unknown versions last."""
    return (group[0] is None, group[0] or "")


def _tags(raw: Any) -> dict[str, Any]:
    value = json.loads(raw) if isinstance(raw, str) else raw
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------- the cache

# How far behind the inventory a graph may be (time since it was last known current) and
# still be served while a newer one is being built.
MAX_STALE_SECONDS = 30.0
# How long a request waits for the rebuild it started before it answers from the previous
# graph instead (``PLANB_IMPACT_REBUILD_WAIT``): a rebuild takes about a second on a quiet
# machine, but seconds to tens of seconds while collectors keep the cores busy.
REBUILD_WAIT_SECONDS: float = config.get("IMPACT_REBUILD_WAIT")   # checked: 0 to 999999

_cache: "OrderedDict[str, Graph]" = OrderedDict()
_cache_lock = threading.Lock()
_build_locks: dict[str, threading.Lock] = {}

# Observers of the cache (``inventory.metrics`` adds them; the engine never imports a monitoring
# library): "rebuild" gets the seconds a load took, "answer" how far behind the inventory the
# graph handed out is (0.0 when current), "query" the seconds a blast radius took.
OBSERVERS: dict[str, list[Callable[[float], None]]] = {"rebuild": [], "answer": [], "query": []}


def notify(event: str, value: float) -> None:
    for observer in OBSERVERS[event]:
        try:
            observer(value)
        except Exception:  # noqa: BLE001 - monitoring must never fail a query
            log.warning("observer of %s failed", event, exc_info=True)


def _reader(engine: Engine) -> Engine:
    """The engine for the engine's own reads (one per underlying engine, kept on it)."""
    base = getattr(engine, "_proxied", engine)   # an OptionEngine wraps the real one
    reader = base.__dict__.get("_planb_reader")
    if reader is None:
        # Never take SQLite's write lock for a read (the caller's session may hold it);
        # on PostgreSQL read one snapshot.
        if base.dialect.name == "sqlite":
            reader = base.execution_options(sqlite_begin="DEFERRED")
        else:
            reader = base.execution_options(isolation_level="REPEATABLE READ")
        base.__dict__["_planb_reader"] = reader
    return reader


def engine_of(db: so.Session | Engine) -> Engine:
    bind = db.get_bind() if isinstance(db, so.Session) else db
    return bind.engine if isinstance(bind, Connection) else bind


def connection_factory(db: so.Session | Engine) -> Callable[[], Any]:
    engine = _reader(engine_of(db))
    return engine.connect


def get_graph(db: so.Session | Engine) -> Graph:
    """The current graph for ``db``'s database: cached, rebuilt when the inventory changed."""
    return get_graph_and_stamp(db)[0]


def get_graph_and_stamp(db: so.Session | Engine) -> tuple[Graph, tuple[Any, ...] | None]:
    """The graph, and a stamp of the collection results (the newest scope-state revision) read in the
    same round trip, which the confidence report uses to reuse its own cache."""
    graph, stamp, _lag = get_graph_state(db)
    return graph, stamp


@dataclass(frozen=True)
class GraphLag:
    """Set when an answer comes from the previous graph while a rebuild runs; ``age_seconds``
    is how far behind the inventory that graph may be (since it was last known current)."""

    graph_version: int | None
    inventory_version: int | None
    age_seconds: float


def get_graph_state(db: so.Session | Engine, max_stale_seconds: float | None = None
                    ) -> tuple[Graph, tuple[Any, ...] | None, GraphLag | None]:
    """Like ``get_graph_and_stamp``, plus a ``GraphLag`` when the answer is (boundedly) stale.

    While a collector commits change after change, every change invalidates the
    graph.  Rather than make every request wait for a rebuild, one request starts
    a rebuild and waits for it at most ``REBUILD_WAIT_SECONDS``; meanwhile, and past
    that wait, requests answer from the previous graph — if it is at most
    ``MAX_STALE_SECONDS`` behind the inventory — and say so in their confidence report.
    A graph further behind is never served: the request waits for the rebuild.
    """
    max_stale = MAX_STALE_SECONDS if max_stale_seconds is None else max_stale_seconds
    engine = _reader(engine_of(db))
    key = engine.__dict__.get("_planb_key")
    if key is None:
        key = engine.__dict__["_planb_key"] = engine.url.render_as_string(hide_password=False)
    version, stamp = _probe_raw(engine)
    with _cache_lock:
        cached = _cache.get(key)
        build_lock = _build_locks.setdefault(key, threading.Lock())
        if cached is not None and version is not None and cached.version == version:
            _cache.move_to_end(key)
            cached.confirmed_at = time.monotonic()
            notify("answer", 0.0)
            return cached, stamp, None
    # How far behind the inventory the cached graph may be (not how long ago it was loaded:
    # a graph loaded an hour ago and current until a second ago is a second behind).
    age = time.monotonic() - cached.confirmed_at if cached is not None else 0.0
    if cached is None or version is None or age >= max_stale:
        return _answer(_build(engine, key, build_lock), None)
    lag = GraphLag(cached.version, version, round(age, 3))
    if build_lock.locked():
        # Someone is rebuilding right now: answer from the previous graph (young enough).
        return _answer((cached, stamp), lag)
    if _in_memory(engine):
        return _answer(_build(engine, key, build_lock), None)   # one shared connection: no second thread
    # Rebuild in a thread of its own and wait for it a bounded time: on a quiet machine the
    # answer is fresh; while collectors keep changing the inventory and the cores busy, the
    # request answers from the previous graph rather than queue behind rebuild after rebuild.
    rebuild: Future[tuple[Graph, tuple[Any, ...] | None]] = Future()

    def run() -> None:
        try:
            rebuild.set_result(_build(engine, key, build_lock))
        except BaseException as exc:
            # Handed to the waiting request, which raises it; logged too, since that request
            # may have stopped waiting (the next request that needs the graph tries again).
            log.warning("rebuilding the impact graph failed: %s", exc, exc_info=True)
            rebuild.set_exception(exc)

    threading.Thread(target=run, name="planb-graph-rebuild", daemon=True).start()
    try:
        return _answer(rebuild.result(timeout=REBUILD_WAIT_SECONDS), None)
    except FutureTimeout:
        return _answer((cached, stamp), lag)


def _fresh_locks_in_child() -> None:
    # A fork copies no threads: a lock that a load in another thread held at the fork would
    # stay held in the child for ever.  The cached graphs themselves are complete (a load
    # only publishes a finished graph) and stay.
    global _cache_lock
    _cache_lock = threading.Lock()
    _build_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_locks_in_child)


def settle(timeout: float = 120.0) -> bool:
    """Wait until no graph load or snapshot write runs in a background thread of this process;
    True when none is left.  For a process about to fork (a gunicorn master): a lock held by a
    thread that the child does not inherit would stay held in the child for ever."""
    from inventory.impact import snapshot

    deadline = time.monotonic() + timeout
    with _cache_lock:
        locks = list(_build_locks.values())
    for lock in locks:
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False
        lock.release()
    return snapshot.wait_for_writer(max(0.0, deadline - time.monotonic()))


def _answer(built: tuple[Graph, tuple[Any, ...] | None], lag: GraphLag | None
            ) -> tuple[Graph, tuple[Any, ...] | None, GraphLag | None]:
    notify("answer", 0.0 if lag is None else lag.age_seconds)
    return (*built, lag)


def peek(db: so.Session | Engine) -> Graph | None:
    """The graph this process holds for ``db``'s database (whatever its version), without
    touching the database; None before the first load."""
    key = engine_of(db).url.render_as_string(hide_password=False)
    with _cache_lock:
        return _cache.get(key)


def _in_memory(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")


def _build(engine: Engine, key: str, build_lock: threading.Lock) -> tuple[Graph, tuple[Any, ...] | None]:
    # One builder per database at a time; the others wait and reuse its result.
    with build_lock:
        with _cache_lock:
            cached = _cache.get(key)
        with engine.connect() as conn:
            with conn.begin():
                version, stamp = _probe(conn)
                if cached is not None and version is not None and cached.version == version:
                    return cached, stamp
        started = time.monotonic()
        graph = Graph.load_from(engine, previous=cached)
        graph.confirmed_at = started
        notify("rebuild", time.monotonic() - started)
        if cached is not None and graph is not cached and graph.version is not None:
            from inventory.impact import snapshot
            snapshot.schedule(graph, engine)
        if graph.version is not None:
            with _cache_lock:
                _cache[key] = graph
                _cache.move_to_end(key)
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
        return graph, stamp


# The collection-state stamp: the newest scope-state revision (the confidence report's cache key).
_PROBE_SQL = ("SELECT version, (SELECT coalesce(max(revision), 0) FROM collection_scopes), 0 "
              "FROM inventory_version WHERE id = 1")


def _probe_raw(engine: Engine) -> tuple[int | None, tuple[Any, ...] | None]:
    """``_probe`` on a bare pooled DBAPI connection: the per-query check stays a
    fraction of a millisecond (one statement; the pool rolls back on return)."""
    raw = engine.raw_connection()
    # On PostgreSQL, one statement in autocommit: no BEGIN before it, no ROLLBACK when the
    # connection goes back to the pool (two round trips of the four a query cost here).
    autocommit = engine.dialect.name == "postgresql" and hasattr(raw.driver_connection, "autocommit")
    try:
        if autocommit:
            raw.driver_connection.autocommit = True
        cursor = raw.cursor()
        try:
            cursor.execute(_PROBE_SQL)
            row = cursor.fetchone()
        finally:
            cursor.close()
    except engine.dialect.loaded_dbapi.Error:
        row = None
    finally:
        try:
            if autocommit and not raw.driver_connection.closed:
                raw.driver_connection.autocommit = False
        finally:
            raw.close()
    if row is None:
        return None, None
    return row[0], (row[1], row[2])


def _probe(conn: Connection) -> tuple[int | None, tuple[Any, ...] | None]:
    """(inventory version, scope-results stamp) in one query; (None, None) without the counter."""
    try:
        row = conn.exec_driver_sql(_PROBE_SQL).first()
    except sa.exc.DBAPIError:
        return None, None
    if row is None:
        return None, None
    return row[0], (row[1], row[2])


def _counters(conn: Connection) -> dict[str, int] | None:
    """The inventory counters, or None on a database without them (nothing is cached then)."""
    try:
        row = conn.exec_driver_sql(
            f"SELECT version, {', '.join(PARTS)} FROM inventory_version WHERE id = 1").first()
    except sa.exc.DBAPIError:
        # No such table (an unmigrated database): on PostgreSQL the transaction is now
        # unusable, so the load that follows fails loudly; on SQLite it goes on.
        return None
    return None if row is None else dict(zip(("version", *PARTS), (int(v) for v in row)))


def clear_cache() -> None:
    """Forget every cached graph (and the collection-state cache of the confidence report)."""
    from inventory.impact import confidence

    with _cache_lock:
        _cache.clear()
    confidence.clear_state()
