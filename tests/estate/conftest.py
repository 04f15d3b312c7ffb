"""Fixtures for the estate tests: a database with the demo estate loaded, small documents."""
from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from inventory.db import make_engine, write_session
from inventory.estate.demo import load_demo


@pytest.fixture
def demo_engine(any_db_url: str) -> Iterator[sa.Engine]:
    """SQLite and PostgreSQL engines with the demo estate imported (private to the test)."""
    engine = make_engine(any_db_url)
    with write_session(engine) as db:
        load_demo(db, actor="test")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _demo_sqlite_template(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    shutil.copyfile(_sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    with write_session(engine) as db:
        load_demo(db, actor="test")
    engine.dispose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture(scope="session")
def _demo_pg_shared() -> Iterator[str]:
    """One PostgreSQL schema with the demo estate per test session (for tests that only read)."""
    from tests.conftest import pg_schema

    with pg_schema("t_demo", migrated=True) as url:
        engine = make_engine(url)
        with write_session(engine) as db:
            load_demo(db, actor="test")
        engine.dispose()
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def demo_readonly_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database holding the demo estate, on SQLite and on PostgreSQL.  The PostgreSQL one
    is shared by every test of the session: tests using this fixture must not change the estate."""
    if request.param == "sqlite":
        target = tmp_path / "demo.sqlite3"
        shutil.copyfile(request.getfixturevalue("_demo_sqlite_template"), target)
        return f"sqlite:///{target}"
    return request.getfixturevalue("_demo_pg_shared")


@pytest.fixture
def demo_readonly_engine(demo_readonly_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(demo_readonly_url)
    yield engine
    engine.dispose()


@pytest.fixture
def demo_sqlite_engine(tmp_path: Path, _demo_sqlite_template: Path) -> Iterator[sa.Engine]:
    target = tmp_path / "demo.sqlite3"
    shutil.copyfile(_demo_sqlite_template, target)
    engine = make_engine(f"sqlite:///{target}")
    yield engine
    engine.dispose()


def small_document() -> dict[str, Any]:
    """A small but complete estate touching every section."""
    return {
        "version": 1,
        "vendors": [
            {"name": "CrowdStrike", "tier": "critical", "aliases": ["CrowdStrike, Inc."],
             "products": [{"name": "Falcon Sensor", "kind": "agent", "vendor_pushes_updates": True,
                           "aliases": ["falcon-sensor"]}]},
            {"name": "Microsoft", "cloud_provider": "azure",
             "products": [{"name": "Windows Server", "kind": "os"}]},
        ],
        "assets": [
            {"key": "host:web-1", "name": "web-1", "kind": "host", "provider": "on_prem",
             "os": {"family": "windows", "name": "Windows Server 2022", "version": "10.0.20348"},
             "criticality": "high", "tags": {"app": "web"}, "update_ring": "canary",
             "software": [{"vendor": "CrowdStrike", "product": "Falcon Sensor", "version": "7.11.18110.0"},
                          {"vendor": "Microsoft", "product": "Windows Server", "version": "10.0.20348"}]},
            {"key": "host:web-2", "name": "web-2", "kind": "host", "os": {"family": "linux"}},
            {"key": "group:web", "name": "web pool", "kind": "target_group", "min_up": 1,
             "members": ["host:web-1", "host:web-2"]},
        ],
        "services": [
            {"key": "service:shop", "name": "Shop", "criticality": "critical",
             "depends_on": ["group:web", {"to": "host:web-2", "kind": "calls", "strength": "soft"}]},
        ],
        "dependencies": [{"from": "host:web-1", "to": "host:web-2", "kind": "calls", "strength": "soft"}],
        "plans": [
            {"name": "Shop fallback", "owner": "Ops", "rto_minutes": 30, "steps": "1. a\n2. b",
             "runbook_url": "https://wiki.example/shop", "review_interval_days": 90,
             "last_reviewed": "2026-10-01", "last_exercised": "2026-09-01T12:30:00Z",
             "covers": {"assets": ["service:shop"],
                        "products": [{"vendor": "CrowdStrike", "product": "Falcon Sensor"}],
                        "vendors": ["Microsoft"]}},
        ],
        "updates": [
            {"vendor": "CrowdStrike", "product": "Falcon Sensor", "version": "7.11.18110.0",
             "released_on": "2024-03-05", "kind": "patch",
             "tests": [{"ring": "canary", "status": "passed", "tested_by": "me",
                        "tested_at": "2024-03-06T10:00:00Z", "evidence_url": "https://ci.example/1"},
                       {"ring": "staging", "status": "pending"}]},
        ],
        "assessments": [
            {"vendor": "CrowdStrike", "assessed_on": "2026-02-10", "assessor": "TPRM",
             "scores": {"security": 4, "update_practices": 2}, "staged_rollouts": False,
             "certifications": [{"name": "SOC 2", "expires": "2027-01-01"}],
             "findings": [{"title": "x", "severity": "high", "status": "open"}],
             "next_review_due": "2027-02-10"},
        ],
    }


@pytest.fixture
def fresh_db_url(request: pytest.FixtureRequest, any_db_url: str, tmp_path) -> Iterator[str]:
    """A second, empty but migrated database on the same backend as ``any_db_url``."""
    from inventory import migrate
    from tests.conftest import pg_schema

    if any_db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        migrate.upgrade(url, "head")
        yield url
        return
    with pg_schema(migrated=True) as url:
        yield url


def table_snapshot(engine: sa.Engine,
                   exclude: tuple[str, ...] = ("audit_events", "inventory_version", "api_tokens")
                   ) -> dict[str, list[tuple]]:
    """Every row of every application table (sorted), to prove 'nothing changed'."""
    from inventory.models import Base
    out: dict[str, list[tuple]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name in exclude:
                continue
            rows = conn.execute(sa.select(table)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


@pytest.fixture
def cli_env(sqlite_url: str, tmp_path) -> dict[str, str]:
    """Environment for running ``planb`` against the test's SQLite database."""
    return {"PLANB_DATABASE_URL": sqlite_url, "PLANB_INSTANCE_PATH": str(tmp_path / "instance"),
            "PLANB_SECRET_KEY": "estate-tests-secret", "PLANB_LOG_LEVEL": "WARNING",
            "PLANB_LOG_FORMAT": "text"}


def run_cli(env: dict[str, str], *args: str, input: str | bytes | None = None):  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from inventory.cli import main
    return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)
