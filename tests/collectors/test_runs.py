"""Runs at fleet scale: many scopes per transaction, each scope's latest state, bounded
history (retention and ``planb runs prune``), and dead runs found through their lease
(a real process killed with SIGKILL)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from collectors import ingest
from collectors.base import AssetRecord, ScopeBatch, SoftwareRecord
from collectors.ingest import run_collection
from inventory import config
from inventory.cli import main
from inventory.db import make_engine, read_session, write_session
from inventory.models import Asset, CollectionLock, CollectionRun, Installation, ScopeResult, ScopeState
from inventory.services.runs import expire_dead_runs, prune_history
from tests.collectors.test_ingest import FakeCollector, WriteCounter

T0 = datetime(2024, 7, 19, 4, 9, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def host(i: int) -> AssetRecord:
    return AssetRecord(natural_key=f"host:h{i:04d}", name=f"h{i:04d}", kind="host", hostname=f"h{i:04d}",
                       os_family="linux", os_name="Ubuntu 22.04.4 LTS")


def host_batch(i: int, packages: int = 3) -> ScopeBatch:
    """One osquery host: its own scope, a few packages (one unattributed)."""
    record = host(i)
    software = [SoftwareRecord(record.natural_key, "falcon-sensor", "CrowdStrike, Inc.", f"7.{i % 5}.0"),
                SoftwareRecord(record.natural_key, "Widget Pro", "Acme Widgets GmbH", "1.0")]
    software += [SoftwareRecord(record.natural_key, f"pkg-{k}", "Debian QA Group <packages@qa.debian.org>", "1.0")
                 for k in range(packages - 2)]
    return ScopeBatch(f"osquery:h{i:04d}", [record], software)


def fleet(n: int) -> list[ScopeBatch]:
    return [host_batch(i) for i in range(n)]


@pytest.fixture
def engine(any_db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(any_db_url)
    yield eng
    eng.dispose()


def states(engine: sa.Engine) -> dict[str, ScopeState]:
    with read_session(engine) as db:
        found = {s.scope_key: s for s in db.scalars(sa.select(ScopeState))}
        db.expunge_all()
        return found


def count(engine: sa.Engine, model: type, *where: sa.ColumnElement[bool]) -> int:
    with read_session(engine) as db:
        return db.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


# -- many scopes, set-based -----------------------------------------------------------------------

def test_a_fleet_is_applied_in_few_statements_and_keeps_only_failures_in_its_history(engine):
    n = 300
    counter = WriteCounter(engine)
    try:
        run = run_collection(engine, FakeCollector(fleet(n), name="osquery"), now=T0)
    finally:
        counter.close()
    assert run.status == "succeeded" and run.created == n * 4
    assert (run.scopes_succeeded, run.scopes_partial, run.scopes_failed) == (n, 0, 0)
    # a handful of set-based statements for 300 scopes, not a dozen per scope
    asset_inserts = [w for w in counter.writes if w == ("INSERT", "assets")]
    assert 1 <= len(asset_inserts) <= 3, asset_inserts
    assert len(counter.inventory_writes()) < 30
    # bounded history: no per-scope row for the scopes that succeeded, a state for each
    assert count(engine, ScopeResult, ScopeResult.run_id == run.id) == 0
    found = states(engine)
    assert len(found) == n and {s.status for s in found.values()} == {"succeeded"}
    assert {s.last_success_at for s in found.values()} == {T0} and {s.run_id for s in found.values()} == {run.id}
    assert run.summary == {"succeeded_by_prefix": {"osquery": n},
                           "succeeded_sample": [f"osquery:h{i:04d}" for i in range(10)]}
    assert len(run.outcomes) == n


def test_one_malformed_host_in_a_group_is_partial_alone_and_retires_nothing_of_it(engine):
    n = 60
    first = run_collection(engine, FakeCollector(fleet(n), name="osquery"), now=T0)
    assert first.status == "succeeded"

    batches = fleet(n)
    # host 7: its record lost its identity and a package is gone: partial, nothing removed or retired
    batches[7].assets = [AssetRecord(natural_key="host:", name="h0007", kind="host")]
    batches[7].software = batches[7].software[:2]
    # host 8: software for an asset nobody knows: partial
    batches[8].software.append(SoftwareRecord("host:nobody", "x", "y"))
    batches[8].software = [s for s in batches[8].software if s.name != "Widget Pro"]
    # host 9: a package uninstalled, the scope complete: removed
    batches[9].software = [s for s in batches[9].software if s.name != "Widget Pro"]
    counter = WriteCounter(engine)
    try:
        run = run_collection(engine, FakeCollector(batches, name="osquery"), now=T0 + timedelta(hours=1))
    finally:
        counter.close()

    assert run.status == "partial"
    outcomes = {o.scope_key: o for o in run.outcomes}
    assert {k for k, o in outcomes.items() if o.status != "succeeded"} == {"osquery:h0007", "osquery:h0008"}
    assert "without its identity" in outcomes["osquery:h0007"].error
    assert "unknown asset" in outcomes["osquery:h0008"].error
    assert outcomes["osquery:h0007"].marked_stale == 0
    with read_session(engine) as db:
        ids = dict(db.execute(sa.select(Asset.natural_key, Asset.id)).all())
        retired = set(db.scalars(sa.select(Asset.natural_key).where(Asset.retired_at.is_not(None))))
        per_asset = dict(db.execute(sa.select(Installation.asset_id, sa.func.count())
                                    .group_by(Installation.asset_id)).all())
    from inventory.models import UnattributedSoftware
    with read_session(engine) as db:
        unattributed = {a for (a,) in db.execute(sa.select(UnattributedSoftware.asset_id))}
    assert not retired                                             # host 7's asset was not retired
    assert per_asset[ids["host:h0007"]] >= 2 and ids["host:h0007"] in unattributed   # nothing of it removed
    assert ids["host:h0008"] in unattributed                       # partial: removes nothing
    assert ids["host:h0009"] not in unattributed                   # complete: the uninstalled one is gone
    assert ids["host:h0010"] in unattributed                       # the others as they were
    # only the two partial scopes are in the run's history; their states keep the last success
    assert sorted(r.scope_key for r in run.scope_results) == ["osquery:h0007", "osquery:h0008"]
    found = states(engine)
    assert found["osquery:h0007"].status == "partial" and found["osquery:h0007"].last_success_at == T0
    assert found["osquery:h0010"].last_success_at == T0 + timedelta(hours=1)
    # still set-based: the scopes were not applied one transaction each
    assert len([w for w in counter.writes if w[1] == "scope_results"]) <= 2


def test_scopes_touching_one_asset_are_applied_one_at_a_time(engine):
    a = ScopeBatch("osquery:a", [AssetRecord(natural_key="host:same", name="same", kind="host", os_name="A")])
    b = ScopeBatch("osquery:b", [AssetRecord(natural_key="host:same", name="same", kind="host", os_name="B")])
    run = run_collection(engine, FakeCollector([a, b], name="osquery"), now=T0)
    assert run.status == "succeeded"
    with read_session(engine) as db:
        asset = db.scalars(sa.select(Asset)).one()
        assert (asset.os_name, asset.source_scope) == ("B", "osquery:b")   # in order: the later scope last


# -- retention and prune -----------------------------------------------------------------------------

def test_prune_drops_old_runs_but_never_a_scopes_latest_state(engine):
    old = run_collection(engine, FakeCollector(fleet(5), name="osquery"), now=T0)
    failing = ScopeBatch("osquery:h0001", complete=False, error="log truncated")
    later = T0 + timedelta(days=100)
    recent = run_collection(engine, FakeCollector([failing, *fleet(5)[2:]], name="osquery"), now=later,
                            retention_days=36500)   # keep everything for now
    assert recent.status == "partial"

    dry = prune_history(engine, 90, now=later, dry_run=True)
    assert (dry.runs, dry.scope_results) == (1, 0)
    assert count(engine, CollectionRun) == 2
    result = prune_history(engine, 90, now=later)
    assert (result.runs, result.scope_results) == (1, 0)
    with read_session(engine) as db:
        assert db.get(CollectionRun, old.id) is None and db.get(CollectionRun, recent.id) is not None
    found = states(engine)
    assert len(found) == 5                                     # every scope's latest state is kept
    assert found["osquery:h0000"].run_id is None and found["osquery:h0000"].last_success_at == T0
    assert found["osquery:h0001"].status == "failed" and found["osquery:h0001"].last_success_at == T0
    assert count(engine, ScopeResult) == 1

    # a run prunes by itself when it ends (PLANB_RUN_RETENTION_DAYS)
    run_collection(engine, FakeCollector(fleet(2), name="osquery"), now=later + timedelta(days=95),
                   retention_days=90)
    assert count(engine, CollectionRun) == 1 and count(engine, ScopeResult) == 0 and len(states(engine)) == 5


def test_runs_prune_and_listing_from_the_cli(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_SECRET_KEY", "test-secret")
    engine = make_engine(sqlite_url)
    try:
        now = datetime.now(UTC)
        old = run_collection(engine, FakeCollector(fleet(3), name="osquery"), now=now - timedelta(days=40),
                             retention_days=36500)
        new = run_collection(engine, FakeCollector(fleet(3), name="osquery"), now=now, retention_days=36500)
    finally:
        engine.dispose()
    runner = CliRunner()

    dry = runner.invoke(main, ["runs", "prune", "--older-than", "30", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would drop 1 run(s)" in dry.output
    listed = json.loads(runner.invoke(main, ["runs", "--format", "json"]).stdout)
    assert [r["id"] for r in listed] == [new.id, old.id]
    assert listed[0]["scope_counts"] == {"succeeded": 3, "partial": 0, "failed": 0}
    assert [s["scope"] for s in listed[0]["scopes"]] == ["osquery:h0000", "osquery:h0001", "osquery:h0002"]
    assert listed[1]["scopes"] == []       # its scopes' latest states are the newer run's

    pruned = runner.invoke(main, ["runs", "prune", "--older-than", "30"])
    assert pruned.exit_code == 0 and "dropped 1 run(s)" in pruned.output
    table = runner.invoke(main, ["runs"])
    assert table.exit_code == 0 and f"{new.id}" in table.output
    detail = runner.invoke(main, ["runs", "--id", str(new.id)])
    assert detail.exit_code == 0 and "osquery:h0002" in detail.output and "3 succeeded" in detail.output
    gone = runner.invoke(main, ["runs", "--id", str(old.id)])
    assert gone.exit_code == 1 and f"no collection run with id {old.id}" in gone.output


@pytest.mark.parametrize("name, raw, message", [
    ("RUN_RETENTION_DAYS", "0", "PLANB_RUN_RETENTION_DAYS: 0 is out of range; expected a whole number of days"),
    ("RUN_RETENTION_DAYS", "ninety", "PLANB_RUN_RETENTION_DAYS: 'ninety' is not a whole number"),
    ("RUN_LEASE_SECONDS", "0.5", "PLANB_RUN_LEASE_SECONDS: '0.5' is out of range; expected a number of seconds"),
])
def test_retention_and_lease_settings_are_checked(name, raw, message):
    with pytest.raises(config.ConfigError) as info:
        config.parse(name, raw)
    assert message in str(info.value)
    assert config.get("RUN_RETENTION_DAYS", {}) == 90 and config.get("RUN_LEASE_SECONDS", {}) == 300


# -- dead runs ------------------------------------------------------------------------------------------

def _wait_for(check, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_a_killed_run_is_marked_failed_when_its_lease_expires_and_its_locks_released(
        sqlite_url, tmp_path, monkeypatch):
    env = dict(os.environ, PLANB_RUN_LEASE_SECONDS="2", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "tests.collectors.slow_run", sqlite_url], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    engine = make_engine(sqlite_url)
    try:
        def working():  # type: ignore[no-untyped-def]
            with read_session(engine) as db:
                run = db.scalars(sa.select(CollectionRun)).first()
                applied = db.get(ScopeState, "osquery:dead-1")
                # the first scope is applied and the heartbeat has renewed the lease since
                if run and applied and run.heartbeat_at and run.heartbeat_at > applied.finished_at:
                    return run.id
            return None

        run_id = _wait_for(working)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert count(engine, CollectionLock, CollectionLock.run_id == run_id) == 1   # dead-2 still held
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

        # Until the lease expires the run counts as alive...
        with read_session(engine) as db:
            run = db.get(CollectionRun, run_id)
            assert run.status == "running"
            expires = run.lease_expires_at
        assert expire_dead_runs(engine, expires - timedelta(seconds=1)) == []
        # ...then a reader (planb runs) finds it dead, marks it failed and frees its scopes.
        _wait_for(lambda: datetime.now(UTC) > expires + timedelta(milliseconds=100))
        monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
        monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
        monkeypatch.setenv("PLANB_SECRET_KEY", "test-secret")
        listed = json.loads(CliRunner().invoke(main, ["runs", "--format", "json"]).stdout)
        [dead] = [r for r in listed if r["id"] == run_id]
        assert dead["status"] == "failed" and dead["finished_at"] is not None
        assert any("dead: the process" in e["error"] for e in dead["errors"])
        assert count(engine, CollectionLock) == 0
        # what it applied stays, and the next run over its scopes is not refused
        assert states(engine)["osquery:dead-1"].status == "succeeded"
        batch = ScopeBatch("osquery:dead-2", [AssetRecord(natural_key="host:dead-2", name="dead-2", kind="host")])
        after = run_collection(engine, FakeCollector([batch], name="osquery", planned=["osquery:dead-2"]))
        assert after.status == "succeeded"
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.dispose()


def test_a_later_run_closes_a_dead_run_before_it_starts(engine):
    with write_session(engine) as db:
        dead = CollectionRun(collector="osquery", scope="x", status="running", errors=[], holder="elsewhere:1",
                             started_at=T0, heartbeat_at=T0, lease_expires_at=T0 + timedelta(minutes=5))
        db.add(dead)
        db.flush()
        db.add(CollectionLock(scope_key="osquery:h0000", run_id=dead.id, holder="elsewhere:1", acquired_at=T0,
                              expires_at=T0 + timedelta(hours=2)))
        dead_id = dead.id
    run = run_collection(engine, FakeCollector(fleet(1), name="osquery", planned=["osquery:h0000"]),
                         now=T0 + timedelta(minutes=6))
    assert run.status == "succeeded"
    with read_session(engine) as db:
        closed = db.get(CollectionRun, dead_id)
        assert closed.status == "failed" and "dead: the process (elsewhere:1)" in closed.errors[-1]["error"]


def test_on_run_finished_is_called_with_every_run(engine, monkeypatch):
    from inventory.services import runs as run_service
    seen: list[tuple[int, str]] = []
    monkeypatch.setattr(run_service, "run_finished_listeners", [lambda run: seen.append((run.id, run.status))])
    run = run_collection(engine, FakeCollector([ScopeBatch("osquery:x", complete=False, error="nope")],
                                               name="osquery"), now=T0)
    assert seen == [(run.id, "failed")]
    assert ingest.on_run_finished is not None


# -- unchanged scopes are recognised without reading their rows -----------------------------------

class Reads:
    """Counts statements that read a table (``FROM <table>``)."""

    def __init__(self, engine: sa.Engine, table: str) -> None:
        self.engine, self.table, self.n = engine, table, 0
        sa.event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, conn, cursor, statement, *rest):  # type: ignore[no-untyped-def]
        if f"FROM {self.table}" in statement and not statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            self.n += 1

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on)


def test_an_unchanged_scope_is_skipped_until_someone_else_touches_its_rows(engine):
    n = 40
    run_collection(engine, FakeCollector(fleet(n), name="osquery"), now=T0)
    reads = Reads(engine, "installations")
    try:
        same = run_collection(engine, FakeCollector(fleet(n), name="osquery"), now=T0 + timedelta(hours=1))
    finally:
        reads.close()
    assert same.status == "succeeded" and (same.created, same.updated, same.unchanged) == (0, 0, n * 4)
    # the only reads of installations are the grouped counts, not the rows
    assert reads.n <= 2
    assert {s.fingerprint is not None for s in states(engine).values()} == {True}

    # another writer changes a host's software: that scope is compared in full again and restored
    with write_session(engine) as db:
        asset_id = db.scalar(sa.select(Asset.id).where(Asset.natural_key == "host:h0003"))
        deleted = db.execute(sa.delete(Installation).where(Installation.asset_id == asset_id)).rowcount
    again = run_collection(engine, FakeCollector(fleet(n), name="osquery"), now=T0 + timedelta(hours=2))
    assert deleted and (again.created, again.updated) == (deleted, 0)
    # a day later every scope is compared in full (and its rows' last_seen refreshed)
    later = run_collection(engine, FakeCollector(fleet(n), name="osquery"), now=T0 + timedelta(days=2))
    with read_session(engine) as db:
        assert set(db.scalars(sa.select(Installation.last_seen))) == {T0 + timedelta(days=2)}
    assert later.unchanged == n * 4


def test_the_signature_of_a_new_scope_is_what_its_rows_count(engine):
    """A scope whose assets are all new takes its signature from what was inserted (no
    count query): it must be what the stored rows count, edges included."""
    from collectors.base import DependencyRecord
    from inventory.models import Dependency, UnattributedSoftware
    batches = fleet(30)
    for i, batch in enumerate(batches[:10]):
        lb = AssetRecord(natural_key=f"lb:{i}", name=f"lb-{i}", kind="load-balancer")
        batch.assets.append(lb)
        batch.dependencies.append(DependencyRecord(lb.natural_key, batch.assets[0].natural_key, "behind"))
    run_collection(engine, FakeCollector(batches, name="osquery"), now=T0)
    with read_session(engine) as db:
        def per_scope(table: sa.Table, column: str) -> dict[str, int]:
            a = Asset.__table__
            query = (sa.select(a.c.source_scope, sa.func.count()).select_from(table.join(a, a.c.id == table.c[column]))
                     .group_by(a.c.source_scope)) if table is not a else \
                sa.select(a.c.source_scope, sa.func.count()).group_by(a.c.source_scope)
            return dict(db.execute(query).all())
        tables = [(Asset.__table__, "id"), (Installation.__table__, "asset_id"),
                  (UnattributedSoftware.__table__, "asset_id"), (Dependency.__table__, "dependent_id")]
        counted = [per_scope(t, c) for t, c in tables]
    stored = states(engine)
    assert len(stored) == 30 and sum(counted[3].values()) == 10 and sum(counted[2].values()) > 0
    for key, state in stored.items():
        assert state.signature == [c.get(key, 0) for c in counted], key
