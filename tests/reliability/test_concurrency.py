"""Writers and readers at the same time: no "database is locked", no lost updates,
every read answered while a collector run writes, counts that add up."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from collectors.base import AssetRecord, DependencyRecord, ScopeBatch, SoftwareRecord
from collectors.ingest import run_collection
from inventory.auth import required_role
from inventory.db import make_engine, read_session, write_session
from inventory.models import Asset, CollectionRun, Dependency, Installation, UnattributedSoftware, Vendor
from tests.conftest import bearer, create_api_token, create_user_and_login, make_test_app

# ---------------------------------------------------------------- SQLite writer sessions

def _read_then_write(engine: sa.Engine, barrier: threading.Barrier, errors: list, rounds: int) -> None:
    try:
        for _ in range(rounds):
            with write_session(engine) as db:
                vendor = db.scalar(sa.select(Vendor).where(Vendor.name == "counter"))
                barrier.wait(timeout=0.05) if barrier.parties > 1 else None
                vendor.tier = str(int(vendor.tier) + 1)
    except threading.BrokenBarrierError:
        pass
    except Exception as exc:
        errors.append(exc)


def test_concurrent_orm_read_then_write_never_locks_or_loses_updates(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        with write_session(engine) as db:
            db.add(Vendor(name="counter", tier="0"))
        errors: list[BaseException] = []
        rounds, workers = 40, 4
        # The barrier only nudges threads to overlap; BEGIN IMMEDIATE serialises them anyway.
        barrier = threading.Barrier(1)
        threads = [threading.Thread(target=_read_then_write, args=(engine, barrier, errors, rounds))
                   for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with read_session(engine) as db:
            assert db.scalar(sa.select(Vendor.tier).where(Vendor.name == "counter")) == str(rounds * workers)
    finally:
        engine.dispose()


def test_without_begin_immediate_the_same_pattern_fails(sqlite_url):
    """The control experiment: two *deferred* transactions that read, then write, fail
    at once with 'database is locked' — which is why writers begin immediately."""
    engine = make_engine(sqlite_url)
    try:
        with write_session(engine) as db:
            db.add(Vendor(name="counter", tier="0"))
        both_read = threading.Barrier(2, timeout=10)
        first_committed = threading.Event()
        outcome: dict[str, BaseException | None] = {}

        def deferred(name: str, go_first: bool) -> None:
            try:
                with engine.connect() as conn:  # BEGIN DEFERRED, like a plain read session
                    tier = conn.scalar(sa.text("SELECT tier FROM vendors WHERE name = 'counter'"))
                    both_read.wait()
                    if not go_first:
                        first_committed.wait(10)
                    conn.execute(sa.text("UPDATE vendors SET tier = :t WHERE name = 'counter'"),
                                 {"t": str(int(tier) + 1)})
                    conn.commit()
                outcome[name] = None
            except Exception as exc:
                outcome[name] = exc
            finally:
                if go_first:
                    first_committed.set()

        threads = [threading.Thread(target=deferred, args=("a", True)),
                   threading.Thread(target=deferred, args=("b", False))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert outcome["a"] is None
        assert isinstance(outcome["b"], sa.exc.OperationalError)
        assert "locked" in str(outcome["b"]) or "busy" in str(outcome["b"]).lower()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- collector run + API/page reads

class SyntheticCollector:
    """Yields ``scopes`` batches of ``per_scope`` VMs, each with software and a dependency."""

    name = "synthetic"

    def __init__(self, scopes: int, per_scope: int) -> None:
        self.scopes, self.per_scope = scopes, per_scope

    def describe_scope(self) -> str:
        return f"synthetic: {self.scopes} scopes"

    def collect(self, progress) -> Iterator[ScopeBatch]:  # type: ignore[no-untyped-def]
        for s in range(self.scopes):
            assets = [AssetRecord(natural_key=f"synthetic:{s}:{i}", name=f"vm-{s}-{i}", kind="vm",
                                  provider="aws", account="111122223333", region="us-east-1",
                                  os_family="windows" if i % 2 else "linux", environment="production",
                                  tags={"scope": str(s)})
                      for i in range(self.per_scope)]
            lb = AssetRecord(natural_key=f"synthetic:{s}:lb", name=f"lb-{s}", kind="load_balancer",
                             provider="aws", account="111122223333", region="us-east-1")
            software = [SoftwareRecord(asset_key=a.natural_key, name="CrowdStrike Falcon Sensor",
                                       publisher="CrowdStrike, Inc.", version="7.11.18110")
                        for a in assets]
            deps = [DependencyRecord(dependent_key=lb.natural_key, dependency_key=a.natural_key,
                                     kind="behind", strength="soft") for a in assets]
            yield ScopeBatch(scope_key=f"synthetic:{s}", assets=[lb, *assets], software=software,
                             dependencies=deps)


def _read_endpoints(app) -> tuple[list[str], list[str]]:  # type: ignore[no-untyped-def]
    """Every argument-free GET route a viewer may read: API ones (token) and pages (session)."""
    api, pages = [], []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.arguments or rule.endpoint in ("static", "auth.login"):
            continue
        if required_role(app.view_functions[rule.endpoint], "GET") != "viewer":
            continue
        (api if rule.rule.startswith("/api/") else pages).append(rule.rule)
    return sorted(api), sorted(pages)


@pytest.mark.slow
def test_collector_run_with_concurrent_api_and_page_reads(any_db_url, tmp_path: Path):
    app = make_test_app(any_db_url, tmp_path / "instance", WTF_CSRF_ENABLED=False)
    token = create_api_token(app, "read")
    viewer = app.test_client()
    create_user_and_login(app, viewer, "viewer")
    api_paths, page_paths = _read_endpoints(app)
    assert "/api/v1/openapi.json" in api_paths and "/healthz" in page_paths
    assert "/api/v1/assets" in api_paths and "/assets/" in page_paths

    # The baseline: what each read answers on a quiet system (some need parameters: 400).
    baseline = {}
    for path in api_paths + page_paths:
        client = app.test_client() if path.startswith("/api/") else viewer
        baseline[path] = client.get(path, headers=bearer(token) if path.startswith("/api/") else {}
                                    ).status_code
    assert all(status < 500 for status in baseline.values()), baseline
    for must in ("/api/v1/openapi.json", "/healthz", "/api/v1/assets", "/assets/"):
        assert baseline[must] == 200

    scopes, per_scope = 12, 60
    engine = make_engine(any_db_url)
    done = threading.Event()
    results: list[tuple[str, int]] = []
    failures: list[str] = []

    def reader(worker: int) -> int:
        client = app.test_client()
        if worker % 2:
            client = viewer  # the logged-in session, shared: cookie reads are thread-safe
        n = 0
        while not done.is_set() or n < 5:
            for path in (api_paths if worker % 2 == 0 else page_paths):
                headers = bearer(token) if path.startswith("/api/") else {}
                try:
                    response = client.get(path, headers=headers)
                    results.append((path, response.status_code))
                except Exception as exc:
                    failures.append(f"{path}: {type(exc).__name__}: {exc}")
                n += 1
        return n

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(reader, w) for w in range(4)]
            started = time.monotonic()
            try:
                run = run_collection(engine, SyntheticCollector(scopes, per_scope))
            finally:
                done.set()
            reads = sum(f.result(timeout=120) for f in futures)
        elapsed = time.monotonic() - started
    finally:
        engine.dispose()

    assert failures == []
    # Every read answered as it does on a quiet system: no lock errors, no 5xx, no timeouts.
    changed = [(p, s) for p, s in results if s != baseline[p]]
    assert changed == [], changed[:10]
    assert reads >= 20 and sum(1 for _, s in results if s == 200) >= 20
    assert run.status == "succeeded", run.errors
    check = make_engine(any_db_url)
    try:
        with read_session(check) as db:
            assert db.scalar(sa.select(sa.func.count(Asset.id)).where(
                Asset.natural_key.like("synthetic:%"))) == scopes * (per_scope + 1)
            installs = db.scalar(sa.select(sa.func.count(Installation.id)))
            unattributed = db.scalar(sa.select(sa.func.count(UnattributedSoftware.id)))
            assert installs + unattributed == scopes * per_scope
            assert db.scalar(sa.select(sa.func.count(Dependency.id))) == scopes * per_scope
            # The run's own tally agrees with what is in the database.
            assert run.created == scopes * (per_scope + 1) + installs + unattributed + scopes * per_scope
            assert db.scalar(sa.select(CollectionRun.status).where(CollectionRun.id == run.id)) == "succeeded"
    finally:
        check.dispose()
    assert elapsed < 120
