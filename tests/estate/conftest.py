"""Fixtures for the estate tests: a database with the demo estate loaded, small documents."""
from __future__ import annotations

from typing import Any, Iterator

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine, write_session
from inventory.estate.demo import load_demo


@pytest.fixture
def demo_engine(any_db_url: str) -> Iterator[sa.Engine]:
    """SQLite and PostgreSQL engines with the demo estate imported."""
    engine = make_engine(any_db_url)
    with write_session(engine) as db:
        load_demo(db, actor="test")
    yield engine
    engine.dispose()


@pytest.fixture
def demo_sqlite_engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(sqlite_url)
    with write_session(engine) as db:
        load_demo(db, actor="test")
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
