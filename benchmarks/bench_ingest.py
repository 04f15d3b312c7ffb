"""Ingest benchmark: Plan B's collector ingest against the raw ceiling and the naive way.

    python -m benchmarks.bench_ingest                 # 100k assets, SQLite and PostgreSQL
    python -m benchmarks.bench_ingest --assets 20000 --backends sqlite

For each backend it upserts N assets (10 scopes of N/10, like 10 account/region
scopes), each with 3 installations (attributed through the catalogue) and one
``runs-on`` dependency, in three phases:

* **cold** — an empty inventory;
* **warm, changed** — the same estate with 5% of the assets changed (an
  attribute, a tag, one installation's version) and 1% gone (retired);
* **warm, unchanged** — the same batches again: must write nothing.  The
  benchmark counts INSERT/UPDATE/DELETE statements against inventory tables and
  rows whose ``updated_at`` / ``last_seen`` changed, and prints them.

and compares, side by side:

* **raw** — DB-API ``executemany`` of the same rows (plain INSERTs cold; blind
  ``INSERT .. ON CONFLICT DO UPDATE`` of every row plus the retirement UPDATE
  warm), with product ids handed in: the practical ceiling;
* **naive** — one ORM object and one commit per row (warm: one SELECT, change,
  commit per row), measured on a 5k-asset sample and scaled linearly.

Targets: Plan B ≥ 0.5× the raw throughput and ≥ 100× the naive one.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator

import sqlalchemy as sa
import sqlalchemy.orm as so

from collectors.base import AssetRecord, DependencyRecord, ScopeBatch, SoftwareRecord
from collectors.ingest import BOOKKEEPING_TABLES, run_collection
from inventory import migrate
from inventory.db import make_engine, write_session
from inventory.models import Asset, Dependency, Installation

PG_URL = os.environ.get("PLANB_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2024, 7, 19, 4, 9, tzinfo=timezone.utc)
N_SCOPES = 10
GROUP = 50  # every 50th asset is a host the next 49 run on
NAIVE_SAMPLE = 5_000

# (software name, publisher) -> what attribution yields; the raw path gets the product ids directly.
SOFTWARE = [
    ("CrowdStrike Windows Sensor", "CrowdStrike, Inc."), ("Amazon SSM Agent", "Amazon Web Services"),
    ("Microsoft Defender for Endpoint", "Microsoft Corporation"), ("Datadog Agent", "Datadog, Inc."),
    ("Qualys Cloud Agent", "Qualys, Inc."), ("Splunk Universal Forwarder", "Splunk, Inc."),
    ("Sentinel Agent", "Sentinel Labs, Inc."), ("Google Chrome", "Google LLC"), ("Mozilla Firefox", "Mozilla"),
    ("Zscaler Client Connector", "Zscaler, Inc."), ("Tenable Nessus Agent", "Tenable, Inc."),
    ("Rapid7 Insight Agent", "Rapid7 LLC"), ("Elastic Agent", "Elastic N.V."), ("VMware Tools", "VMware, Inc."),
    ("Cisco Secure Client", "Cisco Systems, Inc."), ("FortiClient", "Fortinet Inc"),
]


# -- the synthetic estate -----------------------------------------------------------------------------

def scope_of(i: int, n: int) -> int:
    return i * N_SCOPES // n


def asset_key(i: int, n: int) -> str:
    return f"aws:ec2:1111222233{scope_of(i, n):02d}:us-east-1:i-{i:08x}"


def make_batches(n: int, changed: bool = False) -> list[ScopeBatch]:
    """10 scopes; ``changed`` = the warm estate (5% changed, 1% gone)."""
    batches = [ScopeBatch(f"aws:1111222233{s:02d}:us-east-1:ec2") for s in range(N_SCOPES)]
    for i in range(n):
        if changed and i % 100 == 2:
            continue  # gone: never a dependency target (those are i % GROUP == 0)
        bump = changed and i % 20 == 1
        batch = batches[scope_of(i, n)]
        key = asset_key(i, n)
        batch.assets.append(AssetRecord(
            natural_key=key, name=f"web-{i}", kind="vm", provider="aws", account=f"1111222233{scope_of(i, n):02d}",
            region="us-east-1", zone="us-east-1a", cloud_instance_id=f"i-{i:08x}", os_family="linux",
            os_name="Ubuntu 22.04.4 LTS", os_version="22.04",
            tags={"env": "prod", "team": f"t{i % 40}", **({"patched": "2024-07"} if bump else {})},
            attributes={"state": "running", "instance_type": "m6i.large" if bump else "m5.large",
                        "image_id": "ami-0c2b0d3fb02824d92"}))
        for j, k in enumerate(sorted({i % 16, (i * 7 + 3) % 16, (i * 13 + 5) % 16})):
            name, publisher = SOFTWARE[k]
            version = f"7.{(i + k) % 20}.{k}" if not (bump and j == 0) else "8.0.0"
            batch.software.append(SoftwareRecord(key, name, publisher, version))
        if i % GROUP:
            batch.dependencies.append(DependencyRecord(key, asset_key(i - i % GROUP, n), "runs-on", "hard"))
    return batches


class Batches:
    name = "aws"

    def __init__(self, batches: list[ScopeBatch]) -> None:
        self.batches = batches

    def describe_scope(self) -> str:
        return f"benchmark: {len(self.batches)} scopes"

    def collect(self, progress: Callable[[str], None]) -> Iterator[ScopeBatch]:
        yield from self.batches


# -- databases ----------------------------------------------------------------------------------------

@dataclass
class Backend:
    name: str
    make: Callable[[], str]
    drop: Callable[[str], None]


def sqlite_backend(workdir: str) -> Backend:
    def make() -> str:
        path = os.path.join(workdir, f"bench-{uuid.uuid4().hex[:8]}.sqlite3")
        url = f"sqlite:///{path}"
        migrate.upgrade(url, "head")
        return url

    def drop(url: str) -> None:
        path = sa.make_url(url).database or ""
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    return Backend("sqlite", make, drop)


def postgres_backend(base_url: str) -> Backend:
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")

    def make() -> str:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = sa.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        rendered = url.render_as_string(hide_password=False)
        migrate.upgrade(rendered, "head")
        return rendered

    def drop(url: str) -> None:
        schema = sa.make_url(url).query["options"].split("=", 1)[1]
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    return Backend("postgresql", make, drop)


class WriteCounter:
    pattern = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.I)

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.statements = 0
        sa.event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        m = self.pattern.match(statement)
        if m and m.group(2).lower() not in BOOKKEEPING_TABLES:
            self.statements += 1

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on)


def fingerprint(engine: sa.Engine) -> dict[str, dict[int, Any]]:
    """(updated_at, last_seen, retired_at) per asset and last_seen per installation/edge."""
    with engine.connect() as conn:
        a = Asset.__table__
        result = {"assets": {r[0]: tuple(r[1:]) for r in conn.execute(
            sa.select(a.c.id, a.c.updated_at, a.c.last_seen, a.c.retired_at))}}
        for name, model in (("installations", Installation), ("dependencies", Dependency)):
            t = model.__table__
            result[name] = {r[0]: tuple(r[1:]) for r in conn.execute(sa.select(t.c.id, t.c.last_seen, *(
                [t.c.version] if name == "installations" else [t.c.strength])))}
    return result


def changed_rows(before: dict[str, dict[int, Any]], after: dict[str, dict[int, Any]]) -> int:
    total = 0
    for table, rows in after.items():
        old = before[table]
        total += sum(1 for k, v in rows.items() if old.get(k) != v) + len(set(old) - set(rows))
    return total


# -- the three ways ------------------------------------------------------------------------------------

def planb_ingest(url: str, batches: list[ScopeBatch], now: datetime) -> tuple[float, Any]:
    engine = make_engine(url)
    try:
        start = time.perf_counter()
        run = run_collection(engine, Batches(batches), now=now)
        return time.perf_counter() - start, run
    finally:
        engine.dispose()


def product_ids(url: str) -> dict[tuple[str, str], int]:
    """Products as attribution creates them (the raw path is handed the ids)."""
    from collectors.attribution import Attributor
    engine = make_engine(url)
    try:
        with write_session(engine) as db:
            att = Attributor(db)
            pairs = {pub: att.attribute_software(name, pub) for name, pub in SOFTWARE}
            ids = att.ensure_products(db, [p for p in pairs.values() if p])
            return {(name, pub): ids[pairs[pub]] for name, pub in SOFTWARE}
    finally:
        engine.dispose()


def _raw_rows(batches: list[ScopeBatch], now: datetime):  # type: ignore[no-untyped-def]
    iso = now.isoformat(timespec="seconds")
    assets = []
    for batch in batches:
        for r in batch.assets:
            prov = {c: {"source": "aws", "seen": iso} for c in ("name", "kind", "provider", "account", "region",
                                                                  "zone", "cloud_instance_id", "os_family", "os_name",
                                                                  "os_version", "tags")}
            assets.append((r.natural_key, r.name, r.kind, r.provider, r.account, r.region, r.zone,
                           r.cloud_instance_id, r.os_family, r.os_name, r.os_version, "medium",
                           json.dumps(r.tags), json.dumps(r.attributes), json.dumps(prov), "aws",
                           batch.scope_key))
    return assets


ASSET_COLUMNS = ("natural_key", "name", "kind", "provider", "account", "region", "zone", "cloud_instance_id",
                 "os_family", "os_name", "os_version", "criticality", "tags", "attributes", "provenance", "source",
                 "source_scope")


def raw_executemany(url: str, batches: list[ScopeBatch], now: datetime, pids: dict[tuple[str, str], int],
                    upsert: bool) -> float:
    """DB-API executemany of the same rows: the ceiling."""
    engine = make_engine(url)
    pg = engine.dialect.name == "postgresql"
    ph = "%s" if pg else "?"
    stamp = now if pg else now.replace(tzinfo=None).isoformat(sep=" ")
    try:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            start = time.perf_counter()
            if not pg:
                cur.execute("BEGIN")  # Plan B's SQLite connections leave transactions to the caller
            assets = _raw_rows(batches, now)
            cols = ", ".join(ASSET_COLUMNS + ("first_seen", "last_seen", "created_at", "updated_at"))
            marks = ", ".join([ph] * (len(ASSET_COLUMNS) + 4))
            sql = f"INSERT INTO assets ({cols}) VALUES ({marks})"
            if upsert:
                sets = ", ".join(f"{c} = excluded.{c}" for c in ASSET_COLUMNS[1:] + ("last_seen", "updated_at"))
                sql += f" ON CONFLICT (natural_key) DO UPDATE SET {sets}, retired_at = NULL"
            cur.executemany(sql, [row + (stamp, stamp, stamp, stamp) for row in assets])
            cur.execute("SELECT natural_key, id FROM assets")
            ids = dict(cur.fetchall())
            installs = [(ids[s.asset_key], pids[(s.name, s.publisher)], s.version, s.name, s.publisher, "aws",
                         stamp, stamp) for b in batches for s in b.software]
            sql = ("INSERT INTO installations (asset_id, product_id, version, raw_name, raw_publisher, source, "
                   f"first_seen, last_seen) VALUES ({', '.join([ph] * 8)})")
            if upsert:
                sql += (" ON CONFLICT (asset_id, product_id) DO UPDATE SET version = excluded.version, "
                        "raw_name = excluded.raw_name, raw_publisher = excluded.raw_publisher, "
                        "last_seen = excluded.last_seen")
            cur.executemany(sql, installs)
            deps = [(ids[d.dependent_key], ids[d.dependency_key], d.kind, d.strength, "aws", stamp, stamp)
                    for b in batches for d in b.dependencies]
            sql = ("INSERT INTO dependencies (dependent_id, dependency_id, kind, strength, source, first_seen, "
                   f"last_seen) VALUES ({', '.join([ph] * 7)})")
            if upsert:
                sql += " ON CONFLICT (dependent_id, dependency_id, kind) DO UPDATE SET last_seen = excluded.last_seen"
            cur.executemany(sql, deps)
            if upsert:
                seen = {r[0] for r in assets}
                gone = [(stamp, ids[k]) for k in ids if k not in seen]
                cur.executemany(f"UPDATE assets SET retired_at = {ph} WHERE id = {ph}", gone)
            raw.commit()
            return time.perf_counter() - start
        finally:
            raw.close()
    finally:
        engine.dispose()


def naive_orm(url: str, batches: list[ScopeBatch], now: datetime, pids: dict[tuple[str, str], int],
              warm: bool, sample: int) -> float:
    """One ORM object (warm: one SELECT + change) and one commit per row, on a sample."""
    records = [(b.scope_key, a) for b in batches for a in b.assets][:sample]
    keys = {a.natural_key for _, a in records}
    software = [s for b in batches for s in b.software if s.asset_key in keys]
    deps = [d for b in batches for d in b.dependencies if d.dependent_key in keys and d.dependency_key in keys]
    engine = make_engine(url)
    try:
        session = so.Session(bind=engine)
        start = time.perf_counter()
        ids: dict[str, int] = {}
        for scope, r in records:
            asset = session.scalars(sa.select(Asset).where(Asset.natural_key == r.natural_key)).first() \
                if warm else None
            if asset is None:
                asset = Asset(natural_key=r.natural_key, source="aws")
                session.add(asset)
            asset.name, asset.kind, asset.provider, asset.account = r.name, r.kind, r.provider, r.account
            asset.region, asset.zone, asset.cloud_instance_id = r.region, r.zone, r.cloud_instance_id
            asset.os_family, asset.os_name, asset.os_version = r.os_family, r.os_name, r.os_version
            asset.tags, asset.attributes, asset.source_scope, asset.last_seen = r.tags, r.attributes, scope, now
            session.commit()
            ids[r.natural_key] = asset.id
        for s in software:
            pid = pids[(s.name, s.publisher)]
            inst = session.scalars(sa.select(Installation).where(
                Installation.asset_id == ids[s.asset_key], Installation.product_id == pid)).first() if warm else None
            if inst is None:
                inst = Installation(asset_id=ids[s.asset_key], product_id=pid, source="aws")
                session.add(inst)
            inst.version, inst.raw_name, inst.raw_publisher, inst.last_seen = s.version, s.name, s.publisher, now
            session.commit()
        for d in deps:
            edge = session.scalars(sa.select(Dependency).where(
                Dependency.dependent_id == ids[d.dependent_key], Dependency.dependency_id == ids[d.dependency_key],
                Dependency.kind == d.kind)).first() if warm else None
            if edge is None:
                edge = Dependency(dependent_id=ids[d.dependent_key], dependency_id=ids[d.dependency_key],
                                  kind=d.kind, strength=d.strength, source="aws")
                session.add(edge)
            edge.last_seen = now
            session.commit()
        elapsed = time.perf_counter() - start
        session.close()
        return elapsed
    finally:
        engine.dispose()


# -- the run --------------------------------------------------------------------------------------------

def bench_once(backend: Backend, n: int, say: Callable[[str], None]) -> dict[str, Any]:
    """One Plan B and one raw pass; the two alternate phase by phase so both see the same load."""
    cold_batches, warm_batches = make_batches(n), make_batches(n, changed=True)
    planb_url, raw_url = backend.make(), backend.make()
    result: dict[str, Any] = {}
    try:
        pids = product_ids(raw_url)
        say(f"[{backend.name}] cold: planb ...")
        result["planb_cold"], result["run_cold"] = planb_ingest(planb_url, cold_batches, T0)
        say(f"[{backend.name}] cold: raw executemany ...")
        result["raw_cold"] = raw_executemany(raw_url, cold_batches, T0, pids, upsert=False)
        say(f"[{backend.name}] warm (5% changed, 1% gone): planb ...")
        result["planb_warm"], result["run_warm"] = planb_ingest(planb_url, warm_batches, T0 + timedelta(hours=1))
        say(f"[{backend.name}] warm: raw upsert ...")
        result["raw_warm"] = raw_executemany(raw_url, warm_batches, T0 + timedelta(hours=1), pids, upsert=True)
        say(f"[{backend.name}] warm unchanged: planb ...")
        engine = make_engine(planb_url)
        before = fingerprint(engine)
        counter = WriteCounter(engine)
        start = time.perf_counter()
        result["run_same"] = run_collection(engine, Batches(make_batches(n, changed=True)),
                                            now=T0 + timedelta(hours=2))
        result["planb_same"] = time.perf_counter() - start
        counter.close()
        result["writes"] = counter.statements
        result["rows_changed"] = changed_rows(before, fingerprint(engine))
        engine.dispose()
        say(f"[{backend.name}] warm unchanged: raw upsert ...")
        result["raw_same"] = raw_executemany(raw_url, warm_batches, T0 + timedelta(hours=2), pids, upsert=True)
    finally:
        backend.drop(planb_url)
        backend.drop(raw_url)
    return result


def bench_backend(backend: Backend, n: int, sample: int, repeat: int,
                  say: Callable[[str], None]) -> list[dict[str, Any]]:
    passes = [bench_once(backend, n, say) for _ in range(repeat)]
    best = {k: min(p[k] for p in passes) for k in passes[0] if isinstance(passes[0][k], float)}
    last = passes[-1]
    cold_batches, warm_batches = make_batches(n), make_batches(n, changed=True)
    scale = n / min(sample, n)

    # naive: a sample, scaled
    url = backend.make()
    try:
        pids = product_ids(url)
        say(f"[{backend.name}] naive ORM cold on {min(sample, n)} assets ...")
        naive_cold = naive_orm(url, cold_batches, T0, pids, warm=False, sample=sample) * scale
        say(f"[{backend.name}] naive ORM warm on {min(sample, n)} assets ...")
        naive_warm = naive_orm(url, warm_batches, T0 + timedelta(hours=1), pids, warm=True, sample=sample) * scale
    finally:
        backend.drop(url)

    def row(phase: str, planb: float, raw: float, naive: float, run: Any, extra: str = "") -> dict[str, Any]:
        return {"backend": backend.name, "phase": phase, "planb_s": planb, "raw_s": raw, "naive_s": naive,
                "vs_raw": raw / planb, "vs_naive": naive / planb,
                "counts": f"c{run.created}/u{run.updated}/={run.unchanged}/s{run.marked_stale}", "note": extra}

    return [
        row("cold", best["planb_cold"], best["raw_cold"], naive_cold, last["run_cold"]),
        row("warm 5% chg 1% gone", best["planb_warm"], best["raw_warm"], naive_warm, last["run_warm"]),
        row("warm unchanged", best["planb_same"], best["raw_same"], naive_warm, last["run_same"],
            f"writes: {max(p['writes'] for p in passes)} stmts, "
            f"{max(p['rows_changed'] for p in passes)} rows changed"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=NAIVE_SAMPLE, help="assets in the naive ORM sample")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=1, help="passes per backend; the best time is shown")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    workdir = tempfile.mkdtemp(prefix="planb-bench-")
    results: list[dict[str, Any]] = []
    try:
        for name in args.backends.split(","):
            backend = sqlite_backend(workdir) if name == "sqlite" else postgres_backend(args.pg_url)
            results.extend(bench_backend(backend, args.assets, args.sample, args.repeat, say))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    n = args.assets
    rows_per_run = n + sum(len(b.software) + len(b.dependencies) for b in make_batches(n))
    print(f"\nIngest benchmark: {n:,} assets, {rows_per_run:,} rows per cold run "
          f"(3 installations and 1 dependency per asset, {N_SCOPES} scopes); naive = {args.sample:,}-asset "
          f"sample scaled; best of {args.repeat} pass(es)")
    header = (f"{'backend':<11} {'phase':<20} {'planb s':>8} {'raw s':>8} {'naive s':>9} "
              f"{'planb/raw':>9} {'planb/naive':>11}  counts / writes")
    print(header)
    print("-" * len(header))
    for r in results:
        naive = f"{r['naive_s']:9.1f}"
        vs_naive = f"{r['vs_naive']:10.0f}x"
        print(f"{r['backend']:<11} {r['phase']:<20} {r['planb_s']:8.2f} {r['raw_s']:8.2f} {naive} "
              f"{r['vs_raw']:8.2f}x {vs_naive}  {r['counts']} {r['note']}")
    print("planb/raw = raw time / Plan B time (target >= 0.5x); planb/naive = naive time / Plan B time "
          "(target >= 100x)")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
