"""A seeded synthetic estate for benchmarks: the same numbers every run.

``generate_estate(engine, "M")`` writes ~100k assets with ~1.4M dependency and
installation rows straight into a migrated, empty database (bulk
``executemany`` on SQLite, ``COPY`` on PostgreSQL) in about a minute.

The shape imitates a real estate, organised in *systems* of 500 assets (a
business domain: 5 services, load balancers, target groups / clusters,
databases, tiered applications, hosts, network and storage):

* vendors are Zipf-popular: host carries vendor *r* (of 300) with probability
  ``0.75 / r**0.7``, so the top vendor (``CrowdStrike``, product ``Falcon Sensor``)
  is on ~75% of the hosts while the median vendor is on ~2%;
* applications call applications in lower tiers of their system (hard or soft),
  a few call shared platform systems and a few call *up* a tier, which makes cycles;
* groups have ``min_up`` (members are hosts), load balancers sit behind them,
  business services depend on load balancers, applications and databases;
* hosts live in AWS / Azure regions or on premises, ~2% are retired, assets
  carry source scopes with collection runs (some failed) for the confidence
  report, and ~1 contingency plan per two services plus vendor/product/asset
  plans with a mix of current, stale and never-exercised statuses.

Run ``python -m benchmarks.estate_gen --size S --url sqlite:///estate.sqlite3``
to build one by hand (the URL must point at an empty database; it is migrated).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

# Bump when the generated estate changes, so cached estates are rebuilt.
GENERATOR_VERSION = 5
SIZES = {"S": 10_000, "M": 100_000}
SYSTEM_SIZE = 500
# Per system: (kind, count).  Sums to SYSTEM_SIZE.
SYSTEM_LAYOUT = (("service", 5), ("load_balancer", 10), ("group", 15), ("database", 25),
                 ("application", 90), ("host", 300), ("network", 25), ("storage", 30))
APP_TIERS = 4
N_VENDORS = 300
TOP_SHARE = 0.75
ZIPF_EXPONENT = 0.7
NOW = datetime(2024, 7, 19, 12, 0, tzinfo=timezone.utc)

TOP_VENDORS = ("CrowdStrike", "Microsoft", "Cisco", "VMware", "Oracle", "Splunk", "Okta", "Atlassian",
               "Datadog", "Zscaler", "Red Hat", "Canonical", "SentinelOne", "Palo Alto Networks",
               "Elastic", "MongoDB", "Broadcom", "Citrix", "Fortinet", "HashiCorp")
FALCON_VERSIONS = ("7.10.17706.0", "7.11.18110.0", "7.13.18308.0", "7.15.18513.0", "7.16.18605.0")
REGIONS = {"aws": ("us-east-1", "us-west-2", "eu-west-1"),
           "azure": ("centralus", "eastus", "westeurope"),
           "on_prem": ("dc1", "dc2")}
CLOUD_VENDORS = (("Amazon Web Services", "aws"), ("Microsoft Azure", "azure"))


def _size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    if size.upper() in SIZES:
        return SIZES[size.upper()]
    return int(size)


def _ts(dt: datetime) -> str:
    """UTC, in SQLAlchemy's SQLite storage format (always with microseconds, so text sorts as time)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


class _Writer:
    """Bulk rows into one table: executemany on SQLite, COPY on PostgreSQL."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    def write(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        cur = self.conn.cursor()
        count = 0
        if self.dialect == "sqlite":
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            rows = list(rows)
            cur.executemany(sql, rows)
            count = len(rows)
        else:
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        cur.close()
        return count


def generate_estate(engine: Engine, size: str | int, seed: int = 42) -> dict[str, Any]:
    """Write a synthetic estate of ``size`` assets ("S", "M" or a number) into an
    empty migrated database; returns a summary with handy scopes for benchmarks."""
    n_target = _size(size)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    n_systems = max(1, math.ceil(n_target / SYSTEM_SIZE))
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT count(*) FROM assets")).scalar():
            raise ValueError("generate_estate needs an empty database (the assets table has rows)")
    estate = _build(rng, n_systems)
    raw = engine.raw_connection()
    try:
        dialect = engine.dialect.name
        if dialect == "sqlite":
            raw.driver_connection.execute("BEGIN IMMEDIATE")
        if dialect != "sqlite":
            # Timestamps are written as naive UTC text.
            raw.driver_connection.execute("SET TIME ZONE 'UTC'")
        writer = _Writer(raw.driver_connection, dialect)
        counts = {table: writer.write(table, cols, rows) for table, cols, rows in estate["tables"]}
        if dialect == "sqlite":
            raw.driver_connection.execute("COMMIT")
        else:
            raw.commit()
    finally:
        raw.close()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ("assets", "installations", "dependencies", "plan_links", "products",
                          "vendors", "contingency_plans", "collection_runs", "scope_results"):
                conn.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT max(id) FROM {table}))"))
                conn.execute(sa.text(f"ANALYZE {table}"))
    summary = dict(estate["summary"])
    summary["rows"] = counts
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _build(rng: np.random.Generator, n_systems: int) -> dict[str, Any]:
    now = NOW
    created = _ts(now)
    # ------------------------------------------------------------ vendors and products
    vendor_names = list(TOP_VENDORS) + [f"Vendor {i:03d}" for i in range(len(TOP_VENDORS) + 1, N_VENDORS + 1)]
    vendors = [(i + 1, name, None) for i, name in enumerate(vendor_names)]
    for j, (name, provider) in enumerate(CLOUD_VENDORS):
        vendors.append((N_VENDORS + j + 1, name, provider))
    products: list[tuple[int, int, str, str]] = []   # id, vendor_id, name, kind
    product_versions: dict[int, list[str]] = {}
    vendor_products: list[list[int]] = []
    for v in range(N_VENDORS):
        n_prod = 1 + int(rng.integers(0, 4))
        ids = []
        for k in range(n_prod):
            pid = len(products) + 1
            if v == 0 and k == 0:
                pname, versions = "Falcon Sensor", list(FALCON_VERSIONS)
            else:
                pname = f"{vendor_names[v]} Product {k + 1}"
                major = int(rng.integers(1, 20))
                versions = [f"{major}.{minor}.{int(rng.integers(1000, 30000))}.0"
                            for minor in sorted(rng.choice(30, size=int(rng.integers(2, 7)), replace=False))]
            products.append((pid, v + 1, pname, "agent" if k == 0 else "application"))
            product_versions[pid] = versions
            ids.append(pid)
        vendor_products.append(ids)
    for j, (name, _provider) in enumerate(CLOUD_VENDORS):
        pid = len(products) + 1
        products.append((pid, N_VENDORS + j + 1, f"{name} Compute", "cloud_service"))
        product_versions[pid] = ["1.0"]

    # ------------------------------------------------------------ assets
    layout = [(kind, count) for kind, count in SYSTEM_LAYOUT]
    per_system = sum(c for _k, c in layout)
    n = n_systems * per_system
    kind_of_slot = np.concatenate([np.full(c, i) for i, (_k, c) in enumerate(layout)])
    kinds_idx = np.tile(kind_of_slot, n_systems)
    system = np.repeat(np.arange(n_systems), per_system)
    slot_start = {k: int(s) for k, s in zip([k for k, _ in layout],
                                            np.cumsum([0] + [c for _k, c in layout])[:-1])}
    ids = np.arange(1, n + 1)

    def members(kind: str, sys_idx: np.ndarray | int) -> np.ndarray:
        """Asset ids of ``kind`` in system(s) ``sys_idx`` (base id of each system + slot)."""
        count = dict(layout)[kind]
        base = np.asarray(sys_idx) * per_system + slot_start[kind] + 1
        return base[..., None] + np.arange(count)

    # Systems live mostly in one provider; hosts pick a region of it.
    sys_provider = rng.choice(["aws", "azure", "on_prem"], size=n_systems, p=[0.4, 0.35, 0.25])
    providers = sys_provider[system]
    region = np.empty(n, dtype=object)
    account = np.empty(n, dtype=object)
    for prov, regs in REGIONS.items():
        mask = providers == prov
        region[mask] = rng.choice(regs, size=int(mask.sum()))
        n_accounts = {"aws": 20, "azure": 10, "on_prem": 2}[prov]
        acct = rng.integers(0, n_accounts, size=n_systems)[system[mask]]
        account[mask] = [f"{prov}-acct-{a:02d}" for a in acct]
    kind_names = np.array([k for k, _ in layout], dtype=object)[kinds_idx]
    is_host = kind_names == "host"
    os_family = np.full(n, None, dtype=object)
    os_draw = rng.random(n)
    os_family[is_host] = np.where(os_draw[is_host] < 0.55, "windows",
                                  np.where(os_draw[is_host] < 0.95, "linux", "macos"))
    db_mask = kind_names == "database"
    os_family[db_mask] = np.where(os_draw[db_mask] < 0.5, "windows", "linux")
    crit = rng.choice(["critical", "high", "medium", "low"], size=n, p=[0.1, 0.25, 0.45, 0.2])
    env = rng.choice(["production", "staging", "development"], size=n_systems, p=[0.7, 0.2, 0.1])[system]
    first_seen_days = rng.uniform(5, 400, size=n)
    retired = is_host & (rng.random(n) < 0.02)
    imported = rng.random(n) < 0.03

    group_kind = rng.choice(["target_group", "cluster", "scale_set"], size=n)
    real_kind = kind_names.copy()
    gmask = kind_names == "group"
    real_kind[gmask] = group_kind[gmask]
    real_kind[is_host & (providers != "on_prem")] = "vm"
    app_mask = kind_names == "application"
    real_kind[app_mask & (rng.random(n) < 0.4)] = "container"

    # Group members: 4-16 hosts of the system each; min_up 30-80% of them.
    dep_from: list[np.ndarray] = []
    dep_to: list[np.ndarray] = []
    dep_kind: list[np.ndarray] = []
    dep_soft: list[np.ndarray] = []
    kind_codes = {"runs-on": 0, "behind": 1, "calls": 2, "stores-in": 3, "member-of": 4}

    def add(frm: np.ndarray, to: np.ndarray, kind: str, soft: np.ndarray | float = 0.0) -> None:
        frm = np.asarray(frm).ravel()
        to = np.asarray(to).ravel()
        dep_from.append(frm)
        dep_to.append(to)
        dep_kind.append(np.full(frm.size, kind_codes[kind], dtype=np.int8))
        if isinstance(soft, float):
            soft = rng.random(frm.size) < soft
        dep_soft.append(np.asarray(soft).ravel())

    sys_ids = np.arange(n_systems)
    hosts = members("host", sys_ids)            # (S, 300)
    nets = members("network", sys_ids)
    stores = members("storage", sys_ids)
    apps = members("application", sys_ids)     # (S, 90)
    dbs = members("database", sys_ids)
    groups = members("group", sys_ids)
    lbs = members("load_balancer", sys_ids)
    services = members("service", sys_ids)

    def pick(pool: np.ndarray, k: int) -> np.ndarray:
        """k random entries of each system's pool row: (S, k)."""
        return np.take_along_axis(pool, rng.integers(0, pool.shape[1], size=(pool.shape[0], k)), axis=1)

    # Hosts: runs-on a network, stores-in a storage, soft calls to three infra assets.
    add(hosts, pick(nets, hosts.shape[1]), "runs-on")
    add(hosts, pick(stores, hosts.shape[1]), "stores-in", soft=0.5)
    add(np.repeat(hosts, 3, axis=1), pick(np.concatenate([nets, stores], axis=1), hosts.shape[1] * 3),
        "calls", soft=1.0)
    # Databases run on a host and store in storage.
    add(dbs, pick(hosts, dbs.shape[1]), "runs-on")
    add(dbs, pick(stores, dbs.shape[1]), "stores-in")
    # Applications: each runs on one host; tiers call lower tiers and databases.
    add(apps, pick(hosts, apps.shape[1]), "runs-on")
    tier = (np.arange(apps.shape[1]) * APP_TIERS) // apps.shape[1]    # 0..3 per app slot
    calls_per_app = 12
    for t in range(APP_TIERS):
        cols = np.where(tier == t)[0]
        src = apps[:, cols]
        lower = np.where(tier > t)[0]
        pool = np.concatenate([apps[:, lower], dbs], axis=1) if lower.size else dbs
        tgt = np.take_along_axis(pool, rng.integers(0, pool.shape[1], size=(n_systems, cols.size * calls_per_app)),
                                 axis=1)
        add(np.repeat(src, calls_per_app, axis=1), tgt, "calls", soft=0.25)
    # A few calls up a tier (cycles) and across systems (shared platforms).
    n_up = int(apps.size * 0.03)
    up_src = apps.ravel()[rng.integers(0, apps.size, n_up)]
    up_sys = (up_src - 1) // per_system
    up_tgt = apps[up_sys, rng.integers(0, apps.shape[1] // APP_TIERS, n_up)]
    add(up_src, up_tgt, "calls", soft=0.5)
    # Cross-system calls go to a few shared platform systems (identity, messaging...).
    n_cross = int(apps.size * 0.05)
    platforms = apps[: max(1, n_systems // 50)].ravel()
    add(apps.ravel()[rng.integers(0, apps.size, n_cross)], platforms[rng.integers(0, platforms.size, n_cross)],
        "calls", soft=0.5)
    # Groups: members are hosts of the system.
    group_members = rng.integers(4, 17, size=groups.size)
    g_src = np.repeat(groups.ravel(), group_members)
    g_sys = (g_src - 1) // per_system
    g_tgt = hosts[g_sys, rng.integers(0, hosts.shape[1], g_src.size)]
    add(g_src, g_tgt, "member-of")
    min_up = np.full(n, -1, dtype=np.int64)
    frac = rng.uniform(0.3, 0.8, size=groups.size)
    min_up[groups.ravel() - 1] = np.maximum(1, np.round(group_members * frac)).astype(np.int64)
    # Load balancers sit behind one or two groups.
    add(lbs, pick(groups, lbs.shape[1]), "behind")
    add(lbs[:, ::2], pick(groups, lbs[:, ::2].shape[1]), "behind")
    # Services depend on load balancers, applications (some soft) and databases.
    add(np.repeat(services, 2, axis=1), pick(lbs, services.shape[1] * 2), "behind")
    add(np.repeat(services, 4, axis=1), pick(apps[:, : apps.shape[1] // APP_TIERS], services.shape[1] * 4),
        "calls", soft=0.4)
    add(services, pick(dbs, services.shape[1]), "stores-in", soft=0.3)

    frm = np.concatenate(dep_from)
    to = np.concatenate(dep_to)
    dk = np.concatenate(dep_kind)
    ds = np.concatenate(dep_soft)
    keep = frm != to
    frm, to, dk, ds = frm[keep], to[keep], dk[keep], ds[keep]
    edge_key = (frm.astype(np.int64) * (n + 1) + to) * 8 + dk
    _u, first = np.unique(edge_key, return_index=True)
    frm, to, dk, ds = frm[first], to[first], dk[first], ds[first]
    # Membership is never "soft": the group's threshold decides.
    ds[dk == kind_codes["member-of"]] = False

    # ------------------------------------------------------------ installations
    # Each host carries vendor r with probability min(TOP_SHARE, TOP_SHARE / r**ZIPF_EXPONENT):
    # Zipf-popular vendors, the top one (CrowdStrike's agent) on most hosts.
    host_ids = hosts.ravel()
    inst_asset_parts: list[np.ndarray] = []
    inst_vendor_parts: list[np.ndarray] = []
    for v in range(N_VENDORS):
        share = min(TOP_SHARE, TOP_SHARE / (v + 1) ** ZIPF_EXPONENT)
        chosen = host_ids[rng.random(host_ids.size) < share]
        inst_asset_parts.append(chosen)
        inst_vendor_parts.append(np.full(chosen.size, v))
    inst_asset = np.concatenate(inst_asset_parts)
    inst_vendor = np.concatenate(inst_vendor_parts)
    n_vp = np.array([len(p) for p in vendor_products])
    first_product = np.array([p[0] for p in vendor_products])
    # A vendor's first product is the common one; hosts sometimes run a second.
    within = np.minimum((rng.random(inst_asset.size) ** 2 * n_vp[inst_vendor]).astype(np.int64),
                        n_vp[inst_vendor] - 1)
    inst_product = first_product[inst_vendor] + within
    extra = rng.random(inst_asset.size) < 0.3
    inst_asset = np.concatenate([inst_asset, inst_asset[extra]])
    inst_product = np.concatenate([inst_product, first_product[inst_vendor[extra]]
                                   + rng.integers(0, n_vp[inst_vendor[extra]])])
    apps_flat = apps.ravel()
    app_inst = rng.integers(0, len(products) - len(CLOUD_VENDORS), size=apps_flat.size * 2) + 1
    inst_asset = np.concatenate([inst_asset, np.repeat(apps_flat, 2)])
    inst_product = np.concatenate([inst_product, app_inst])
    ikey = inst_asset.astype(np.int64) * (len(products) + 1) + inst_product
    _u, first = np.unique(ikey, return_index=True)
    inst_asset, inst_product = inst_asset[first], inst_product[first]
    version_draw = rng.random(inst_asset.size)

    # ------------------------------------------------------------ rows
    kind_list = list(kind_codes)
    src_scope = np.empty(n, dtype=object)
    for i in range(n):
        src_scope[i] = None if imported[i] else f"{providers[i]}:{account[i]}:{region[i]}"
    scopes = sorted({s for s in src_scope if s})
    tag_team = rng.integers(0, 40, size=n_systems)[system]

    def asset_rows() -> Iterable[tuple[Any, ...]]:
        for i in range(n):
            aid = i + 1
            sysn = int(system[i])
            kind = real_kind[i]
            prov = providers[i] if kind not in ("service",) else None
            fs = now - timedelta(days=float(first_seen_days[i]))
            ret = _ts(fs + (now - fs) / 2) if retired[i] else None
            name = f"{kind}-{sysn:04d}-{aid}"
            yield (aid, f"synthetic:{prov or 'service'}:{sysn}:{kind}:{aid}", name, kind, prov,
                   account[i] if prov else None, region[i] if prov else None, os_family[i],
                   env[i], crit[i], f"team-{int(tag_team[i]):02d}",
                   json.dumps({"team": f"team-{int(tag_team[i]):02d}", "system": f"sys-{sysn:04d}"}),
                   "{}", "{}", None if min_up[i] < 0 else int(min_up[i]),
                   "import" if imported[i] else "synthetic", src_scope[i],
                   _ts(fs), ret or created, ret, created, created)

    asset_cols = ("id", "natural_key", "name", "kind", "provider", "account", "region", "os_family",
                  "environment", "criticality", "owner", "tags", "attributes", "provenance", "min_up",
                  "source", "source_scope", "first_seen", "last_seen", "retired_at", "created_at",
                  "updated_at")

    def inst_rows() -> Iterable[tuple[Any, ...]]:
        for j in range(inst_asset.size):
            pid = int(inst_product[j])
            versions = product_versions[pid]
            # Newer versions are more common (rollouts in progress).
            vi = min(int((version_draw[j] ** 0.6) * len(versions)), len(versions) - 1)
            fs = now - timedelta(days=float(first_seen_days[int(inst_asset[j]) - 1]))
            yield (j + 1, int(inst_asset[j]), pid, versions[vi], "synthetic", _ts(fs), created)

    def dep_rows() -> Iterable[tuple[Any, ...]]:
        for j in range(frm.size):
            fs = now - timedelta(days=float(min(first_seen_days[int(frm[j]) - 1],
                                               first_seen_days[int(to[j]) - 1])))
            yield (j + 1, int(frm[j]), int(to[j]), kind_list[int(dk[j])], "soft" if ds[j] else "hard",
                   "synthetic", _ts(fs), created)

    # ------------------------------------------------------------ plans
    plan_rows: list[tuple[Any, ...]] = []
    link_rows: list[tuple[Any, ...]] = []
    # Review dates follow the real clock, so plan statuses stay a mix of current, stale
    # and never exercised whenever the estate is generated.
    plan_now = datetime.now(timezone.utc)

    def plan(name: str, target: tuple[str, int]) -> None:
        pid = len(plan_rows) + 1
        reviewed_days = float(rng.uniform(1, 400))
        exercised = None if rng.random() < 0.3 else _ts(plan_now - timedelta(days=float(rng.uniform(1, 300))))
        plan_rows.append((pid, name, f"owner-{pid % 17}", int(rng.choice([60, 240, 1440])),
                          "1. Fail over\n2. Restore", "Manual fallback procedure", 180,
                          _ts(plan_now - timedelta(days=reviewed_days)), exercised, created, created))
        link = {"asset_id": None, "product_id": None, "vendor_id": None}
        link[target[0]] = target[1]
        link_rows.append((len(link_rows) + 1, pid, link["asset_id"], link["product_id"], link["vendor_id"]))

    for sid in services.ravel():
        if rng.random() < 0.5:
            plan(f"Service continuity {sid}", ("asset_id", int(sid)))
    for dbid in dbs.ravel()[rng.random(dbs.size) < 0.1]:
        plan(f"Database restore {dbid}", ("asset_id", int(dbid)))
    for v in range(1, 31):
        if rng.random() < 0.5:
            plan(f"Vendor outage runbook {vendor_names[v - 1]}", ("vendor_id", v))
    for p in rng.choice(len(products), size=40, replace=False) + 1:
        plan(f"Product fallback {products[int(p) - 1][2]}", ("product_id", int(p)))

    # ------------------------------------------------------------ collection runs for confidence
    run_rows: list[tuple[Any, ...]] = []
    scope_rows: list[tuple[Any, ...]] = []
    state_rows: list[tuple[Any, ...]] = []
    for i, scope in enumerate(scopes):
        for r in range(2):
            rid = len(run_rows) + 1
            status = "succeeded" if r == 0 or rng.random() > 0.1 else "failed"
            finished = now - timedelta(hours=float(rng.uniform(1, 48)) if r else float(rng.uniform(49, 96)))
            run_rows.append((rid, scope.split(":")[0], scope, _ts(finished - timedelta(minutes=5)), _ts(finished),
                             status, 0, 0, 0, 0, "[]"))
            scope_rows.append((len(scope_rows) + 1, rid, scope, status, 0, 0, 0, 0,
                               None if status == "succeeded" else "timeout", _ts(finished)))
        # the scope's latest state (what the confidence report reads): its second, newer run
        (_i, run_id, key, status, *_counts, error, finished) = scope_rows[-1]
        successes = [r[-1] for r in scope_rows[-2:] if r[3] == "succeeded"]
        state_rows.append((key, key.split(":")[0], run_id, status, error, finished, max(successes, default=None),
                           0, 0, 0, 0, i + 1))

    tables = [
        ("vendors", ("id", "name", "cloud_provider", "tier", "has_alternative", "exit_plan_documented",
                     "created_at", "updated_at"),
         [(vid, name, prov, "medium", False, False, created, created) for vid, name, prov in vendors]),
        ("products", ("id", "vendor_id", "name", "kind", "vendor_pushes_updates"),
         [(pid, vid, name, kind, pid == 1) for pid, vid, name, kind in products]),
        ("assets", asset_cols, asset_rows()),
        ("installations", ("id", "asset_id", "product_id", "version", "source", "first_seen", "last_seen"),
         inst_rows()),
        ("dependencies", ("id", "dependent_id", "dependency_id", "kind", "strength", "source", "first_seen",
                          "last_seen"), dep_rows()),
        ("contingency_plans", ("id", "name", "owner", "rto_minutes", "steps", "manual_fallback",
                               "review_interval_days", "last_reviewed", "last_exercised", "created_at",
                               "updated_at"), plan_rows),
        ("plan_links", ("id", "plan_id", "asset_id", "product_id", "vendor_id"), link_rows),
        ("collection_runs", ("id", "collector", "scope", "started_at", "finished_at", "status", "created",
                             "updated", "unchanged", "marked_stale", "errors"), run_rows),
        ("scope_results", ("id", "run_id", "scope_key", "status", "created", "updated", "unchanged",
                           "marked_stale", "error", "finished_at"), scope_rows),
        ("collection_scopes", ("scope_key", "collector", "run_id", "status", "error", "finished_at",
                               "last_success_at", "created", "updated", "unchanged", "marked_stale", "revision"),
         state_rows),
    ]
    # Vendors ranked by how many hosts install them: the benchmark's top and median vendor.
    vendor_of_product = np.array([0] + [vid for _pid, vid, _n, _k in products])
    inst_vendor_ids = vendor_of_product[inst_product]
    pairs = np.unique(inst_asset.astype(np.int64) * (N_VENDORS + 10) + inst_vendor_ids)
    per_vendor = np.bincount(pairs % (N_VENDORS + 10), minlength=N_VENDORS + 1)[1:N_VENDORS + 1]
    ranked = np.argsort(-per_vendor, kind="stable")
    installed = ranked[per_vendor[ranked] > 0]
    summary = {
        "assets": n, "systems": n_systems, "hosts": int(is_host.sum()),
        "top_vendor": vendor_names[int(installed[0])],
        "top_vendor_hosts": int(per_vendor[installed[0]]),
        "median_vendor": vendor_names[int(installed[len(installed) // 2])],
        "median_vendor_hosts": int(per_vendor[installed[len(installed) // 2]]),
        "product_version_scope": {"vendor": "CrowdStrike", "products": ["Falcon Sensor"],
                                  "version": ">=7.11", "os": ["windows"]},
        "region_scope": {"vendor": "Microsoft Azure", "regions": ["centralus"]},
        "dependencies": int(frm.size), "installations": int(inst_asset.size),
    }
    return {"tables": tables, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    from inventory import migrate
    from inventory.db import make_engine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="S")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--url", required=True, help="database URL of an empty database")
    args = parser.parse_args(argv)
    migrate.upgrade(args.url, "head")
    engine = make_engine(args.url)
    try:
        summary = generate_estate(engine, args.size, args.seed)
    finally:
        engine.dispose()
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
