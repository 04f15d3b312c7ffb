"""A small, readable estate for the update/plan/risk tests.

    svc-checkout (service, critical) ──hard──► lb-web ──hard──► tg-web (group, min_up 1)
                                                              ├─member─► web-1 (azure, Windows, Falcon 7.11.1)
                                                              └─member─► web-2 (azure, Windows, Falcon 7.11.1)
    svc-reporting (service, critical, NO plan) ──hard──► db-1 (on_prem linux, Falcon 7.10.0)
    svc-intranet (service, high) ──hard──► okta-tenant (saas, Okta Workforce)
    mac-1 (macos, low, Falcon 7.11.1);  old-vm (retired, critical, Falcon 7.9.0)
"""
from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy.orm as so

from inventory.db import make_engine, utcnow
from inventory.models import (
    Asset,
    ContingencyPlan,
    Dependency,
    Installation,
    PlanLink,
    Product,
    UpdateTest,
    Vendor,
    VendorAssessment,
    VendorUpdate,
)


def build_estate(db: so.Session) -> dict[str, Any]:
    now = utcnow()
    cs = Vendor(name="CrowdStrike", tier="critical")
    ms = Vendor(name="Microsoft", tier="critical", cloud_provider="azure", has_alternative=False)
    okta = Vendor(name="Okta", tier="high", has_alternative=True, alternative="Entra ID",
                  exit_plan_documented=True)
    db.add_all([cs, ms, okta])
    db.flush()
    falcon = Product(vendor_id=cs.id, name="Falcon Sensor", kind="agent", vendor_pushes_updates=True)
    windows = Product(vendor_id=ms.id, name="Windows Server", kind="os")
    workforce = Product(vendor_id=okta.id, name="Workforce Identity", kind="saas")
    db.add_all([falcon, windows, workforce])
    db.flush()

    def asset(key: str, kind: str, crit: str, **kw: Any) -> Asset:
        a = Asset(natural_key=key, name=key, kind=kind, criticality=crit, **kw)
        db.add(a)
        return a

    a = {
        "svc-checkout": asset("svc-checkout", "service", "critical"),
        "svc-reporting": asset("svc-reporting", "service", "critical"),
        "svc-intranet": asset("svc-intranet", "service", "high"),
        "lb-web": asset("lb-web", "load_balancer", "critical", provider="azure"),
        "tg-web": asset("tg-web", "target_group", "critical", provider="azure", min_up=1),
        "web-1": asset("web-1", "vm", "critical", provider="azure", os_family="windows",
                       update_ring="production"),
        "web-2": asset("web-2", "vm", "critical", provider="azure", os_family="windows",
                       update_ring="canary"),
        "db-1": asset("db-1", "database", "high", provider="on_prem", os_family="linux",
                      update_ring="staging"),
        "okta-tenant": asset("okta-tenant", "saas_tenant", "high", provider="saas"),
        "mac-1": asset("mac-1", "host", "low", os_family="macos"),
        "old-vm": asset("old-vm", "vm", "critical", retired_at=now - timedelta(days=3)),
    }
    db.flush()

    def dep(dependent: str, dependency: str, kind: str = "runs-on", strength: str = "hard") -> None:
        db.add(Dependency(dependent_id=a[dependent].id, dependency_id=a[dependency].id, kind=kind,
                          strength=strength))

    dep("svc-checkout", "lb-web", "behind")
    dep("lb-web", "tg-web", "behind")
    dep("tg-web", "web-1", "member-of")
    dep("tg-web", "web-2", "member-of")
    dep("svc-reporting", "db-1", "stores-in")
    dep("svc-intranet", "okta-tenant", "calls")

    def inst(name: str, product: Product, version: str | None) -> None:
        db.add(Installation(asset_id=a[name].id, product_id=product.id, version=version))

    for host in ("web-1", "web-2"):
        inst(host, falcon, "7.11.1")
        inst(host, windows, "2022")
    inst("db-1", falcon, "7.10.0")
    inst("mac-1", falcon, "7.11.1")
    inst("old-vm", falcon, "7.9.0")
    inst("okta-tenant", workforce, None)

    u711 = VendorUpdate(product_id=falcon.id, version="7.11.1", kind="patch", released_on=date(2024, 7, 1))
    u710 = VendorUpdate(product_id=falcon.id, version="7.10.0", kind="patch", released_on=date(2024, 5, 1))
    c291 = VendorUpdate(product_id=falcon.id, version="C-00000291", kind="content", vendor_pushed=True,
                        released_on=date(2024, 7, 19))
    db.add_all([u711, u710, c291])
    db.flush()
    db.add_all([UpdateTest(update_id=u711.id, ring="canary", status="passed", tested_at=now),
                UpdateTest(update_id=u711.id, ring="staging", status="pending"),
                UpdateTest(update_id=u710.id, ring="canary", status="passed", tested_at=now),
                UpdateTest(update_id=u710.id, ring="staging", status="passed", tested_at=now)])

    def plan(name: str, rto: int | None, reviewed_days_ago: int | None, exercised_days_ago: int | None,
             **links: Any) -> ContingencyPlan:
        p = ContingencyPlan(name=name, rto_minutes=rto, owner="ops", review_interval_days=180,
                            last_reviewed=None if reviewed_days_ago is None else now - timedelta(days=reviewed_days_ago),
                            last_exercised=None if exercised_days_ago is None else now - timedelta(days=exercised_days_ago),
                            steps="1. fail over\n2. verify", manual_fallback="paper forms")
        db.add(p)
        db.flush()
        for key, value in links.items():
            db.add(PlanLink(plan_id=p.id, **{key: value}))
        return p

    plans = {
        "checkout": plan("Checkout fallback", 60, 10, 20, asset_id=a["svc-checkout"].id),
        "lb": plan("Web LB rebuild", 120, 10, None, asset_id=a["lb-web"].id),
        "db": plan("Reporting DB restore", 240, 400, 400, asset_id=a["db-1"].id),
        "falcon": plan("Falcon boot-loop recovery", 180, 30, None, vendor_id=cs.id),
    }
    today = now.date()
    db.add(VendorAssessment(vendor_id=cs.id, assessed_on=today - timedelta(days=400), assessor="risk team",
                            score_security=4, score_update_practices=1, score_resilience=3,
                            score_compliance=4, staged_rollouts=False, customer_update_control=False,
                            rollback_supported=True,
                            certifications=[{"name": "SOC 2 Type II", "expires": (today - timedelta(days=5)).isoformat()},
                                            {"name": "ISO 27001", "expires": (today + timedelta(days=40)).isoformat()}],
                            findings=[{"title": "Content updates bypass staging", "severity": "high", "status": "open"},
                                      {"title": "Old TLS", "severity": "low", "status": "closed"}],
                            next_review_due=today - timedelta(days=35)))
    db.add(VendorAssessment(vendor_id=okta.id, assessed_on=today - timedelta(days=30), assessor="risk team",
                            score_security=5, score_update_practices=5, score_resilience=5,
                            score_compliance=5, certifications=[], findings=[],
                            next_review_due=today + timedelta(days=300)))
    db.flush()
    return {"vendors": {"cs": cs, "ms": ms, "okta": okta},
            "products": {"falcon": falcon, "windows": windows, "workforce": workforce},
            "assets": a, "updates": {"7.11.1": u711, "7.10.0": u710, "c291": c291}, "plans": plans}


@pytest.fixture
def estate(db: so.Session) -> dict[str, Any]:
    data = build_estate(db)
    db.commit()
    return data


# ---------------------------------------------------------------- the demo estate, loaded once

@pytest.fixture
def demo_db(demo_url: str) -> Iterator[so.Session]:
    engine = make_engine(demo_url)
    session = so.Session(engine, expire_on_commit=False)
    yield session
    session.close()
    engine.dispose()


@pytest.fixture
def demo_app(demo_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    from tests.conftest import make_test_app

    application = make_test_app(demo_url, tmp_path / "instance", WTF_CSRF_ENABLED=False)
    yield application
    application.extensions["planb_engine"].dispose()


# ---------------------------------------------------------------- the command line against a database

def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"PLANB_DATABASE_URL": database_url, "PLANB_INSTANCE_PATH": str(tmp_path / "cli-instance"),
            "PLANB_SECRET_KEY": "risk-tests-secret", "PLANB_LOG_LEVEL": "WARNING", "PLANB_LOG_FORMAT": "text"}


@pytest.fixture
def planb(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``planb(url, *args)`` runs the real CLI against that database; returns the click Result."""
    from click.testing import CliRunner

    from inventory.cli import main

    def run(database_url: str, *args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return CliRunner().invoke(main, list(args), env=cli_env(database_url, tmp_path), input=input,
                                  catch_exceptions=False)

    return run
