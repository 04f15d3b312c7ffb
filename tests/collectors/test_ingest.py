"""collectors.ingest: idempotent bulk upserts, safe retirement, locks, reconciliation.

Runs on SQLite and PostgreSQL (``any_db_url``) where the behaviour is
database-specific (transactions, bulk statements, locks).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from collectors import ingest
from collectors.base import AssetRecord, DependencyRecord, ScopeBatch, SoftwareRecord
from collectors.ingest import run_collection
from inventory.db import make_engine, read_session, write_session
from inventory.models import (
    Asset,
    CollectionLock,
    CollectionRun,
    Dependency,
    Installation,
    Product,
    UnattributedSoftware,
    Vendor,
    VendorAlias,
)

T0 = datetime(2024, 7, 19, 4, 9, tzinfo=UTC)
SCOPE = "aws:111122223333:us-east-1:ec2"
SCOPE_B = "aws:111122223333:eu-west-1:ec2"


# -- helpers (also used by the host and osquery tests) ------------------------------------------

class FakeCollector:
    """Yields prepared batches; ``fail_after`` makes the collector itself crash mid-run."""

    def __init__(self, batches: list[ScopeBatch], name: str = "aws", fail_after: int | None = None,
                 planned: list[str] | None = None) -> None:
        self.name = name
        self.batches = batches
        self.fail_after = fail_after
        self.planned = planned
        self.collected = False

    def describe_scope(self) -> str:
        return f"{self.name} test scopes"

    def collect(self, progress) -> Iterator[ScopeBatch]:  # type: ignore[no-untyped-def]
        self.collected = True
        for index, batch in enumerate(self.batches):
            if self.fail_after is not None and index == self.fail_after:
                raise RuntimeError("simulated collector crash")
            yield batch

    def planned_scopes(self) -> list[str] | None:
        return self.planned


class WriteCounter:
    """Counts INSERT/UPDATE/DELETE statements per table, via ``before_cursor_execute``."""

    pattern = re.compile(r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)\"?", re.IGNORECASE)

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.writes: list[tuple[str, str]] = []
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        match = self.pattern.match(statement)
        if match:
            self.writes.append((match.group(1).split()[0].upper(), match.group(2).lower()))

    def inventory_writes(self) -> list[tuple[str, str]]:
        return [w for w in self.writes if w[1] not in ingest.BOOKKEEPING_TABLES]

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)


def vm(i: int, scope_region: str = "us-east-1", **overrides) -> AssetRecord:  # type: ignore[no-untyped-def]
    values = dict(natural_key=f"aws:ec2:111122223333:{scope_region}:i-{i:04d}", name=f"web-{i}",
                  kind="vm", provider="aws", account="111122223333", region=scope_region,
                  cloud_instance_id=f"i-{i:04d}", os_family="windows", tags={"env": "prod", "n": i},
                  attributes={"state": "running", "instance_type": "m5.large"})
    values.update(overrides)
    return AssetRecord(**values)


def falcon(asset: AssetRecord, version: str = "7.11.18110.0") -> SoftwareRecord:
    return SoftwareRecord(asset_key=asset.natural_key, name="CrowdStrike Windows Sensor",
                          publisher="CrowdStrike, Inc.", version=version)


def estate_batch(n: int = 6, scope: str = SCOPE, complete: bool = True, skip: set[int] = frozenset(),
                 version: str = "7.11.18110.0") -> ScopeBatch:
    assets = [vm(i) for i in range(n) if i not in skip]
    software = [falcon(a, version) for a in assets]
    software += [SoftwareRecord(asset_key=assets[0].natural_key, name="Widget Pro",
                                publisher="Acme Widgets GmbH", version="1.0")]
    tg = AssetRecord(natural_key="aws:elbv2:111122223333:us-east-1:tg/web", name="tg-web",
                     kind="target_group", provider="aws", account="111122223333", region="us-east-1",
                     min_up=2)
    deps = [DependencyRecord(tg.natural_key, a.natural_key, "member-of", "hard") for a in assets]
    return ScopeBatch(scope, assets + [tg], software, deps, complete=complete)


@pytest.fixture
def engine(any_db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(any_db_url)
    yield eng
    eng.dispose()


def assets_by_key(engine: sa.Engine) -> dict[str, Asset]:
    with read_session(engine) as db:
        found = {a.natural_key: a for a in db.scalars(sa.select(Asset))}
        db.expunge_all()
        return found


def snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every inventory row, for "nothing changed" comparisons."""
    tables = {"assets": Asset, "installations": Installation, "dependencies": Dependency,
              "unattributed": UnattributedSoftware, "products": Product, "vendors": Vendor}
    result = {}
    with engine.connect() as conn:
        for name, model in tables.items():
            t = model.__table__
            rows = conn.execute(sa.select(t).order_by(t.c.id)).all()
            result[name] = [tuple(r) for r in rows]
    return result


# -- idempotency ------------------------------------------------------------------------------

def test_first_run_creates_and_second_run_writes_nothing(engine):
    first = run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    assert first.status == "succeeded"
    # 7 assets + 6 installations + 1 unattributed + 6 member-of edges
    assert (first.created, first.updated, first.unchanged, first.marked_stale) == (20, 0, 0, 0)
    before = snapshot(engine)

    counter = WriteCounter(engine)
    try:
        second = run_collection(engine, FakeCollector([estate_batch()]), now=T0 + timedelta(hours=1))
    finally:
        counter.close()
    assert second.status == "succeeded"
    assert (second.created, second.updated, second.unchanged, second.marked_stale) == (0, 0, 20, 0)
    assert counter.inventory_writes() == []
    assert {t for _, t in counter.writes} <= ingest.BOOKKEEPING_TABLES
    assert snapshot(engine) == before


def test_bulk_statements_not_per_row(engine):
    n = 1500
    assets = [vm(i) for i in range(n)]
    batch = ScopeBatch(SCOPE, assets, [falcon(a) for a in assets])
    counter = WriteCounter(engine)
    try:
        run = run_collection(engine, FakeCollector([batch]), now=T0)
    finally:
        counter.close()
    assert run.created == 2 * n
    writes = counter.inventory_writes()
    # a handful of multi-row statements, not one per row
    assert len(writes) < 30, writes
    with read_session(engine) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Installation)) == n



@pytest.mark.postgres
def test_postgres_copy_stores_exactly_what_statements_store(monkeypatch):
    """Large inserts go through COPY on PostgreSQL: the rows must be the ones the
    executemany path writes (types, JSON, timestamps), and COPY really is used."""
    from tests.conftest import pg_schema

    assets = [vm(i, name=f"web-{i}", tags={"env": "prod", "quote": 'a "b" \\ c', "n": i}) for i in range(40)]
    batch = ScopeBatch(SCOPE, assets, [falcon(a, f"7.{i}.1") for i, a in enumerate(assets)],
                       [DependencyRecord(a.natural_key, assets[0].natural_key, "runs-on", "hard")
                        for a in assets[1:]])
    snapshots = []
    for copy_min_rows in (10**9, 1):
        monkeypatch.setattr(ingest.BulkWriter, "COPY_MIN_ROWS", copy_min_rows)
        with pg_schema(migrated=True) as url:
            eng = make_engine(url)
            counter = WriteCounter(eng)
            try:
                run = run_collection(eng, FakeCollector([batch]), now=T0)
            finally:
                counter.close()
            assert run.status == "succeeded" and run.created == 40 + 40 + 39
            inserts = {t for verb, t in counter.inventory_writes() if verb == "INSERT"}
            assert ("assets" in inserts) == (copy_min_rows > 1)
            # vendors and products come from attribution, stamped with the wall clock
            snapshots.append({k: v for k, v in snapshot(eng).items() if k not in ("vendors", "products")})
            eng.dispose()
    assert snapshots[0] == snapshots[1]
    assert len(snapshots[1]["installations"]) == 40

def _triggers_and_counters(eng: sa.Engine) -> tuple[dict[str, str], tuple[int, ...]]:
    with eng.connect() as conn:
        triggers = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").all())
        counters = tuple(conn.exec_driver_sql(
            "SELECT version, assets_v, installs_v, deps_v FROM inventory_version WHERE id = 1").one())
    return triggers, counters


def test_sqlite_large_inserts_bump_the_counters_once_and_keep_every_trigger(sqlite_url, monkeypatch):
    """A large insert on SQLite runs without its per-row trigger (dropped and recreated
    inside a savepoint) and bumps the counters itself: every trigger is back, identical,
    the counters moved for each part written, and the rows are those the ordinary path
    stores."""
    monkeypatch.setattr(ingest.BulkWriter, "COPY_MIN_ROWS", 5)
    eng = make_engine(sqlite_url)
    try:
        triggers, (version, assets_v, installs_v, deps_v) = _triggers_and_counters(eng)
        assert len(triggers) == 22   # 21 change-log triggers (migrations 0002, 0005) and the pruning one
        dropped: list[str] = []
        sa.event.listen(eng, "before_cursor_execute",
                        lambda conn, cur, statement, *rest: dropped.extend(re.findall(r'DROP TRIGGER "(\w+)"',
                                                                                      statement)))
        batch = estate_batch()
        run = run_collection(eng, FakeCollector([batch]), now=T0)
        assert run.status == "succeeded" and run.created > 10
        assert sorted(dropped) == [f"trg_{t}_inventory_version_ins" for t in ("assets", "dependencies",
                                                                              "installations")]
        after_triggers, after = _triggers_and_counters(eng)
        assert after_triggers == triggers
        # one bump per part for its 7 assets, 6 installations and 6 edges, not one per row
        assert (after[1] - assets_v, after[2] - installs_v, after[3] - deps_v) == (1, 1, 1)
        assert after[0] > version
        bulk_rows = snapshot(eng)
    finally:
        eng.dispose()
    # The same batch the ordinary way (row triggers firing) stores the same rows.
    monkeypatch.setattr(ingest.BulkWriter, "COPY_MIN_ROWS", 10**9)
    other = make_engine(sqlite_url.replace(".sqlite3", "-plain.sqlite3"))
    try:
        from inventory import migrate
        migrate.upgrade(other.url.render_as_string(hide_password=False), "head")
        run_collection(other, FakeCollector([estate_batch()]), now=T0)
        plain = snapshot(other)
    finally:
        other.dispose()
    drop = ("vendors", "products")   # stamped with the wall clock by attribution
    assert {k: v for k, v in bulk_rows.items() if k not in drop} == {k: v for k, v in plain.items() if k not in drop}


def test_sqlite_large_insert_that_fails_leaves_the_trigger_and_nothing_else(sqlite_url, monkeypatch):
    monkeypatch.setattr(ingest.BulkWriter, "COPY_MIN_ROWS", 2)
    eng = make_engine(sqlite_url)
    try:
        triggers, counters = _triggers_and_counters(eng)
        table = Asset.__table__
        now = "2024-07-19 04:09:00.000000"
        row = {"natural_key": "dup", "name": "dup", "kind": "vm", "criticality": "medium", "tags": "{}",
               "attributes": "{}", "provenance": "{}", "source": "aws", "first_seen": now, "last_seen": now,
               "created_at": now, "updated_at": now}
        dropped: list[str] = []
        sa.event.listen(eng, "before_cursor_execute",
                        lambda conn, cur, statement, *rest: dropped.extend(re.findall(r'DROP TRIGGER "(\w+)"',
                                                                                      statement)))
        with pytest.raises(sa.exc.IntegrityError):
            with write_session(eng) as db:
                ingest.BulkWriter(db.connection()).insert(table, [row, dict(row)])   # same natural key twice
        assert dropped == ["trg_assets_inventory_version_ins"]   # it was dropped, then rolled back
        assert _triggers_and_counters(eng) == (triggers, counters)
        with read_session(eng) as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(table)) == 0
    finally:
        eng.dispose()


def test_changed_attributes_update_only_what_changed(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    before = assets_by_key(engine)
    batch = estate_batch(version="7.16.18605.0")
    batch.assets[1].tags = {"env": "prod", "n": 1, "owner": "ops"}
    run = run_collection(engine, FakeCollector([batch]), now=T0 + timedelta(hours=1))
    # 6 installations changed version + one asset's tags
    assert (run.created, run.updated, run.marked_stale) == (0, 7, 0)
    after = assets_by_key(engine)
    changed = after[batch.assets[1].natural_key]
    assert changed.tags["owner"] == "ops"
    assert changed.updated_at == T0 + timedelta(hours=1)
    assert changed.provenance["tags"] == {"source": "aws", "seen": "2024-07-19T05:09:00+00:00"}
    untouched = after[batch.assets[2].natural_key]
    assert untouched.updated_at == before[batch.assets[2].natural_key].updated_at
    with read_session(engine) as db:
        versions = set(db.scalars(sa.select(Installation.version)))
    assert versions == {"7.16.18605.0"}


def test_last_seen_heartbeat_is_coarse_and_not_a_change(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    # within the granularity: nothing written, every last_seen stays
    run_collection(engine, FakeCollector([estate_batch()]), now=T0 + timedelta(hours=23))
    with read_session(engine) as db:
        for model in (Installation, Dependency, UnattributedSoftware):
            assert set(db.scalars(sa.select(model.last_seen))) == {T0}
    later = T0 + timedelta(days=2)
    run = run_collection(engine, FakeCollector([estate_batch()]), now=later)
    assert (run.created, run.updated, run.unchanged) == (0, 0, 20)
    asset = assets_by_key(engine)[vm(0).natural_key]
    assert asset.last_seen == later
    assert asset.updated_at == T0  # a heartbeat is not a change
    assert asset.provenance["region"]["seen"] == later.isoformat(timespec="seconds")
    with read_session(engine) as db:
        for model in (Installation, Dependency, UnattributedSoftware):
            assert set(db.scalars(sa.select(model.last_seen))) == {later}


# -- stale handling ------------------------------------------------------------------------------

def test_complete_scope_retires_missing_and_revives_on_resight(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    gone_key = vm(3).natural_key
    original = assets_by_key(engine)[gone_key]

    run = run_collection(engine, FakeCollector([estate_batch(skip={3})]), now=T0 + timedelta(hours=1))
    assert run.status == "succeeded"
    assert run.marked_stale == 1
    retired = assets_by_key(engine)[gone_key]
    assert retired.retired_at == T0 + timedelta(hours=1)
    assert retired.id == original.id
    with read_session(engine) as db:
        # history and links stay: the installation and its group edge are kept
        assert db.scalar(sa.select(sa.func.count()).select_from(Installation)
                         .where(Installation.asset_id == original.id)) == 1
        assert db.scalar(sa.select(sa.func.count()).select_from(Dependency)
                         .where(Dependency.dependency_id == original.id)) == 1

    run = run_collection(engine, FakeCollector([estate_batch()]), now=T0 + timedelta(hours=2))
    revived = assets_by_key(engine)[gone_key]
    assert revived.retired_at is None
    assert revived.id == original.id
    assert run.marked_stale == 0 and run.created == 0


def test_incomplete_scope_upserts_but_retires_nothing(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    batch = estate_batch(skip={1, 2}, complete=False, version="8.0")
    batch.error = "ThrottlingException after 5 attempts (DescribeInstances page 2)"
    run = run_collection(engine, FakeCollector([batch]), now=T0 + timedelta(hours=1))
    assert run.status == "partial"
    assert run.marked_stale == 0
    assert [s.status for s in run.outcomes] == ["partial"]
    assert "ThrottlingException" in run.outcomes[0].error
    assets = assets_by_key(engine)
    assert all(a.retired_at is None for a in assets.values())
    with read_session(engine) as db:
        # what was seen was applied; what was not seen keeps its earlier data
        versions = dict(db.execute(sa.select(Asset.natural_key, Installation.version)
                                   .join(Installation, Installation.asset_id == Asset.id)).all())
        assert db.scalar(sa.select(sa.func.count()).select_from(Dependency)) == 6
    assert versions[vm(0).natural_key] == "8.0"
    assert versions[vm(1).natural_key] == "7.11.18110.0"


def test_failed_scope_with_no_data_retires_nothing(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    run = run_collection(engine, FakeCollector([ScopeBatch(SCOPE, complete=False,
                                                           error="AccessDenied: ec2:DescribeInstances")]),
                         now=T0 + timedelta(hours=1))
    assert run.status == "failed"
    assert run.errors == [{"scope": SCOPE, "error": "AccessDenied: ec2:DescribeInstances"}]
    assert all(a.retired_at is None for a in assets_by_key(engine).values())


def test_crash_while_applying_one_scope_keeps_its_old_data_and_applies_the_others(engine, monkeypatch):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    before = snapshot(engine)
    original = ingest._BatchApplier._apply_dependencies

    def crash_in_first_scope(self):  # type: ignore[no-untyped-def]
        if SCOPE in self.scopes:
            raise RuntimeError("disk full")  # after this scope's assets were already written
        return original(self)

    monkeypatch.setattr(ingest._BatchApplier, "_apply_dependencies", crash_in_first_scope)
    other = ScopeBatch(SCOPE_B, [vm(100, "eu-west-1")], [])
    run = run_collection(engine, FakeCollector([estate_batch(skip={0, 1}, version="9.9"), other]),
                         now=T0 + timedelta(hours=1))
    assert run.status == "partial"
    statuses = {s.scope_key: s.status for s in run.outcomes}
    assert statuses == {SCOPE: "failed", SCOPE_B: "succeeded"}
    assert "disk full" in {s.scope_key: s.error for s in run.outcomes}[SCOPE]
    after = snapshot(engine)
    # the failed scope's rows are exactly as before (its transaction rolled back) ...
    assert after["installations"] == before["installations"]
    assert [r for r in after["assets"] if r in before["assets"]] == before["assets"]
    # ... and the other scope was applied
    assert vm(100, "eu-west-1").natural_key in assets_by_key(engine)
    with read_session(engine) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(CollectionLock)) == 0


def test_collector_crash_mid_run_applies_earlier_scopes_only(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    batches = [ScopeBatch(SCOPE_B, [vm(100, "eu-west-1")]), estate_batch(skip={0, 1, 2})]
    run = run_collection(engine, FakeCollector(batches, fail_after=1), now=T0 + timedelta(hours=1))
    assert run.status == "partial"
    assert any("simulated collector crash" in e["error"] for e in run.errors)
    assets = assets_by_key(engine)
    assert vm(100, "eu-west-1").natural_key in assets
    assert all(a.retired_at is None for a in assets.values())


def test_record_missing_identity_makes_scope_partial(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    batch = estate_batch(skip={4})
    batch.assets.append(vm(50, natural_key="aws:ec2:111122223333:us-east-1:"))  # no instance id
    run = run_collection(engine, FakeCollector([batch]), now=T0 + timedelta(hours=1))
    assert run.status == "partial"
    assert run.marked_stale == 0
    assert "without its identity" in run.outcomes[0].error
    assets = assets_by_key(engine)
    assert assets[vm(4).natural_key].retired_at is None  # not retired by a partial scope
    assert not any(k.endswith(":") for k in assets)


def test_software_for_unknown_asset_makes_scope_partial(engine):
    batch = estate_batch()
    batch.software.append(SoftwareRecord(asset_key="aws:ec2:111122223333:us-east-1:i-nope", name="x"))
    run = run_collection(engine, FakeCollector([batch]), now=T0)
    assert run.status == "partial"
    assert "unknown asset" in run.outcomes[0].error


# -- installations, unattributed, dependencies -------------------------------------------------------

def test_software_attributed_and_unattributed_kept(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    with read_session(engine) as db:
        rows = db.execute(sa.select(Vendor.name, Product.name, Product.kind, Installation.raw_publisher)
                          .join(Product, Product.vendor_id == Vendor.id)
                          .join(Installation, Installation.product_id == Product.id)).all()
        assert set(rows) == {("CrowdStrike", "Falcon Sensor", "agent", "CrowdStrike, Inc.")}
        unattributed = db.execute(sa.select(UnattributedSoftware.name, UnattributedSoftware.publisher)).all()
        assert unattributed == [("Widget Pro", "Acme Widgets GmbH")]
        # the cloud's vendor exists and is linked to its provider
        assert db.scalar(sa.select(Vendor.cloud_provider).where(Vendor.name == "Amazon Web Services")) == "aws"


def test_alias_added_later_moves_software_from_unattributed_to_installation(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    with write_session(engine) as db:
        acme = Vendor(name="Acme Widgets")
        db.add(acme)
        db.flush()
        db.add(VendorAlias(vendor_id=acme.id, alias="acme widgets gmbh"))
    run = run_collection(engine, FakeCollector([estate_batch()]), now=T0 + timedelta(hours=1))
    assert run.created == 1 and run.updated == 1  # new installation; unattributed row removed
    with read_session(engine) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(UnattributedSoftware)) == 0
        assert db.execute(sa.select(Vendor.name, Product.name).join(Product.vendor)
                          .where(Vendor.name == "Acme Widgets")).all() == [("Acme Widgets", "Widget Pro")]


def test_uninstalled_software_and_dropped_edges_removed_only_by_complete_scope(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    batch = estate_batch()
    batch.software = [s for s in batch.software if s.asset_key != vm(2).natural_key or "Widget" in s.name]
    batch.software.append(SoftwareRecord(asset_key=vm(2).natural_key, name="Notepad++ (64-bit x64)",
                                         publisher="Notepad++ Team", version="8.6"))
    batch.dependencies = [d for d in batch.dependencies if d.dependency_key != vm(5).natural_key]
    incomplete = ScopeBatch(batch.scope_key, batch.assets, batch.software, batch.dependencies,
                            complete=False)
    run_collection(engine, FakeCollector([incomplete]), now=T0 + timedelta(hours=1))
    with read_session(engine) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Installation)) == 7  # nothing removed
        assert db.scalar(sa.select(sa.func.count()).select_from(Dependency)) == 6
    run_collection(engine, FakeCollector([batch]), now=T0 + timedelta(hours=2))
    with read_session(engine) as db:
        asset2 = db.scalar(sa.select(Asset.id).where(Asset.natural_key == vm(2).natural_key))
        names = set(db.scalars(sa.select(Product.name).join(Installation)
                               .where(Installation.asset_id == asset2)))
        assert names == {"Notepad++"}
        assert db.scalar(sa.select(sa.func.count()).select_from(Dependency)) == 5


def test_estate_dependencies_are_not_removed_by_a_collector(engine):
    run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    with write_session(engine) as db:
        ids = dict(db.execute(sa.select(Asset.natural_key, Asset.id)).all())
        db.add(Dependency(dependent_id=ids[vm(0).natural_key], dependency_id=ids[vm(1).natural_key],
                          kind="calls", strength="soft", source="estate"))
    run = run_collection(engine, FakeCollector([estate_batch()]), now=T0 + timedelta(hours=1))
    assert run.updated == 0
    with read_session(engine) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Dependency)
                         .where(Dependency.source == "estate")) == 1


# -- locks ------------------------------------------------------------------------------------

def _hold_lock(engine: sa.Engine, scope: str, holder: str, expires: datetime) -> int:
    with write_session(engine) as db:
        other = CollectionRun(collector="aws", scope="other", status="running", errors=[])
        db.add(other)
        db.flush()
        db.add(CollectionLock(scope_key=scope, run_id=other.id, holder=holder,
                              acquired_at=T0, expires_at=expires))
        return other.id


def test_second_run_over_a_locked_scope_refuses_it_and_says_why(engine):
    other = _hold_lock(engine, SCOPE, "collector-box-7:4242", T0 + timedelta(hours=2))
    collector = FakeCollector([estate_batch(), ScopeBatch(SCOPE_B, [vm(100, "eu-west-1")])])
    run = run_collection(engine, collector, now=T0 + timedelta(minutes=5))
    assert run.status == "partial"
    refused = {s.scope_key: s for s in run.outcomes}[SCOPE]
    assert refused.status == "failed"
    assert f"being collected by run {other}" in refused.error
    assert "collector-box-7:4242" in refused.error
    assets = assets_by_key(engine)
    assert vm(0).natural_key not in assets and vm(100, "eu-west-1").natural_key in assets
    with read_session(engine) as db:  # the other run's lock is untouched
        assert db.scalar(sa.select(CollectionLock.run_id).where(CollectionLock.scope_key == SCOPE)) == other


def test_planned_scopes_locked_elsewhere_stop_the_run_before_collecting(engine):
    _hold_lock(engine, SCOPE, "collector-box-7:4242", T0 + timedelta(hours=2))
    collector = FakeCollector([estate_batch()], planned=[SCOPE])
    run = run_collection(engine, collector, now=T0 + timedelta(minutes=5))
    assert run.status == "failed"
    assert not collector.collected  # refused to start: no API call was made
    assert "being collected by run" in run.errors[0]["error"]


def test_expired_lock_is_taken_over_and_the_abandoned_run_is_closed(engine):
    abandoned = _hold_lock(engine, SCOPE, "collector-box-7:4242", T0 - timedelta(minutes=1))
    run = run_collection(engine, FakeCollector([estate_batch()]), now=T0)
    assert run.status == "succeeded"
    with read_session(engine) as db:
        old = db.get(CollectionRun, abandoned)
        status, finished, errors = old.status, old.finished_at, old.errors
    assert status == "failed" and finished is not None
    assert "abandoned" in errors[-1]["error"] and f"run {run.id}" in errors[-1]["error"]


def test_concurrent_run_inside_a_run_is_refused(engine):
    """A run started while another holds the scope (nested here, so it is deterministic)."""
    inner_runs = []

    class Nested(FakeCollector):
        def collect(self, progress):  # type: ignore[no-untyped-def]
            inner_runs.append(run_collection(engine, FakeCollector([estate_batch()]), now=T0))
            yield from super().collect(progress)

    outer = run_collection(engine, Nested([estate_batch()], planned=[SCOPE]), now=T0)
    assert outer.status == "succeeded"
    assert inner_runs[0].status == "failed"
    assert f"being collected by run {outer.id}" in inner_runs[0].errors[0]["error"]


# -- one machine, one asset -------------------------------------------------------------------------

def _cloud_batch() -> ScopeBatch:
    rec = vm(7, name="payments-01", hostname="ip-10-0-0-7.ec2.internal", os_family="windows",
             os_name="Windows", attributes={"state": "running", "image_id": "ami-0abc"})
    return ScopeBatch(SCOPE, [rec], [SoftwareRecord(rec.natural_key, "Windows_Server-2019-English-Full-Base",
                                                    "amazon", origin="ami-owner")])


def _host_batch() -> ScopeBatch:
    rec = AssetRecord(natural_key="host:payments-01", name="PAYMENTS-01", kind="host",
                      hostname="PAYMENTS-01", cloud_instance_id="i-0007", os_family="windows",
                      os_name="Microsoft Windows Server 2019 Datacenter", os_version="10.0.17763",
                      region="us-east-1", attributes={"kernel": "10.0.17763.5458"})
    sw = [SoftwareRecord(rec.natural_key, "CrowdStrike Windows Sensor", "CrowdStrike, Inc.", "7.11.18110.0")]
    return ScopeBatch("osquery:PAYMENTS-01", [rec], sw)


def _assert_reconciled(engine: sa.Engine) -> None:
    assets = assets_by_key(engine)
    live = {k: a for k, a in assets.items() if a.retired_at is None}
    assert list(live) == [vm(7).natural_key]
    asset = live[vm(7).natural_key]
    # cloud API wins provider facts and identity; the host wins OS facts
    assert (asset.provider, asset.account, asset.region, asset.kind, asset.name) == (
        "aws", "111122223333", "us-east-1", "vm", "payments-01")
    assert (asset.os_name, asset.os_version, asset.hostname) == (
        "Microsoft Windows Server 2019 Datacenter", "10.0.17763", "PAYMENTS-01")
    assert asset.attributes["kernel"] == "10.0.17763.5458" and asset.attributes["image_id"] == "ami-0abc"
    assert asset.source == "aws" and asset.source_scope == SCOPE
    assert asset.provenance["os_name"]["source"] == "osquery"
    assert asset.provenance["region"]["source"] == "aws"
    assert asset.provenance["attributes.kernel"]["source"] == "osquery"
    with read_session(engine) as db:
        products = set(db.execute(sa.select(Vendor.name, Product.name, Installation.source)
                                  .join(Product, Product.vendor_id == Vendor.id)
                                  .join(Installation, Installation.product_id == Product.id)
                                  .where(Installation.asset_id == asset.id)).all())
    assert products == {("CrowdStrike", "Falcon Sensor", "osquery"),
                        ("Microsoft", "Windows Server", "aws")}


def test_reconcile_host_into_existing_cloud_asset(engine):
    run_collection(engine, FakeCollector([_cloud_batch()], name="aws"), now=T0)
    run = run_collection(engine, FakeCollector([_host_batch()], name="osquery"), now=T0 + timedelta(minutes=1))
    assert run.status == "succeeded" and run.marked_stale == 0
    _assert_reconciled(engine)
    # re-running either source changes nothing (no flapping between sources)
    for name, batch in (("aws", _cloud_batch()), ("osquery", _host_batch())):
        again = run_collection(engine, FakeCollector([batch], name=name), now=T0 + timedelta(minutes=2))
        assert (again.created, again.updated, again.marked_stale) == (0, 0, 0), name
    _assert_reconciled(engine)


def test_reconcile_cloud_after_host_rekeys_the_host_asset(engine):
    run_collection(engine, FakeCollector([_host_batch()], name="osquery"), now=T0)
    host_id = assets_by_key(engine)["host:payments-01"].id
    run = run_collection(engine, FakeCollector([_cloud_batch()], name="aws"), now=T0 + timedelta(minutes=1))
    assert run.status == "succeeded"
    _assert_reconciled(engine)
    assert assets_by_key(engine)[vm(7).natural_key].id == host_id  # same asset: id, links, software kept
    for name, batch in (("osquery", _host_batch()), ("aws", _cloud_batch())):
        again = run_collection(engine, FakeCollector([batch], name=name), now=T0 + timedelta(minutes=2))
        assert (again.created, again.updated, again.marked_stale) == (0, 0, 0), name
    _assert_reconciled(engine)


def test_cloud_retirement_is_not_undone_by_a_stale_host_report(engine):
    run_collection(engine, FakeCollector([_cloud_batch()], name="aws"), now=T0)
    run_collection(engine, FakeCollector([_host_batch()], name="osquery"), now=T0)
    run_collection(engine, FakeCollector([ScopeBatch(SCOPE, [])], name="aws"), now=T0 + timedelta(hours=1))
    run_collection(engine, FakeCollector([_host_batch()], name="osquery"), now=T0 + timedelta(hours=2))
    asset = assets_by_key(engine)[vm(7).natural_key]
    assert asset.retired_at == T0 + timedelta(hours=1)


def test_curated_values_win_over_collector_tags(engine):
    run_collection(engine, FakeCollector([ScopeBatch(SCOPE, [vm(1, criticality="low")])]), now=T0)
    with write_session(engine) as db:
        asset = db.scalars(sa.select(Asset)).one()
        asset.criticality = "critical"
        asset.provenance = {**asset.provenance, "criticality": {"source": "estate", "seen": "x"}}
    run = run_collection(engine, FakeCollector([ScopeBatch(SCOPE, [vm(1, criticality="low")])]),
                         now=T0 + timedelta(hours=1))
    assert run.updated == 0
    assert assets_by_key(engine)[vm(1).natural_key].criticality == "critical"


def test_merge_record_precedence_table():
    current = {"id": 1, "natural_key": "k", "name": "n", "kind": "vm", "provider": "aws",
               "os_name": "Windows", "os_version": None, "hostname": None, "tags": {},
               "attributes": {}, "provenance": {"os_name": {"source": "aws", "seen": "t"}},
               "source": "aws", "source_scope": "s", "retired_at": None}
    rec = AssetRecord(natural_key="host:x", name="X", kind="host", provider="on_prem",
                      os_name="Microsoft Windows Server 2022 Standard", os_version="10.0.20348")
    changes = ingest.merge_record(current, rec, "osquery", "osquery:x", "now")
    assert changes["os_name"] == "Microsoft Windows Server 2022 Standard"  # host wins OS facts
    assert changes["os_version"] == "10.0.20348"
    assert "provider" not in changes and "kind" not in changes and "name" not in changes  # cloud wins
    assert "natural_key" not in changes and "source_scope" not in changes  # existence stays the cloud's


def test_estate_asset_is_not_rekeyed_by_a_cloud_collector(engine):
    with write_session(engine) as db:
        db.add(Asset(natural_key="vm:payments-01", name="payments-01", kind="vm", cloud_instance_id="i-0007",
                     source="estate", tags={}, attributes={}, provenance={}))
    run = run_collection(engine, FakeCollector([_cloud_batch()], name="aws"), now=T0)
    assert run.status == "succeeded"
    assert {"vm:payments-01", vm(7).natural_key} <= set(assets_by_key(engine))
