"""Plan coverage, stale/never-exercised plans, RTO through dependencies, and the plan lifecycle."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine, utcnow
from inventory.models import AuditEvent, ContingencyPlan, PlanEvent, PlanLink
from inventory.services import plans as svc
from tests.risk.conftest import build_estate


def _names(entries):  # type: ignore[no-untyped-def]
    return {e["name"] for e in entries}


def test_coverage(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    with so.Session(engine) as db:
        build_estate(db)
        db.commit()
        cov = svc.coverage(db)
    engine.dispose()
    assert cov["critical_services"] == 2
    assert _names(cov["covered_current"]) == {"svc-checkout"}
    assert _names(cov["uncovered"]) == {"svc-reporting"}
    assert cov["stale_only"] == []
    # critical non-service assets: lb-web (own plan), tg-web, web-1, web-2 (through the checkout
    # service's plan, and the Falcon vendor plan for the hosts); old-vm is retired
    assert cov["critical_assets"] == 4
    assert _names(cov["assets_covered_current"]) == {"lb-web", "tg-web", "web-1", "web-2"}
    web1 = next(e for e in cov["assets_covered_current"] if e["name"] == "web-1")
    assert {(p["name"], p["via"]) for p in web1["plans"]} == {
        ("Checkout fallback", "service svc-checkout"),
        ("Falcon boot-loop recovery", "vendor CrowdStrike")}
    lb = next(e for e in cov["assets_covered_current"] if e["name"] == "lb-web")
    assert [p["name"] for p in lb["plans"]] == ["Checkout fallback", "Web LB rebuild"]


def test_coverage_stale_only_and_high(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    cov = svc.coverage(db, criticality="high")
    # db-1 is high: its own plan is stale (reviewed 400 days ago); the Falcon vendor plan is current
    db1 = next(e for e in cov["assets_covered_current"] if e["name"] == "db-1")
    assert {p["status"] for p in db1["plans"]} == {"stale", "never_exercised"}
    assert _names(cov["assets_not_exercised"]) == {"db-1"}
    assert _names(cov["assets_uncovered"]) == {"okta-tenant"}
    # make the Falcon plan stale too: db-1 is now covered only by stale plans
    estate["plans"]["falcon"].last_reviewed = utcnow() - timedelta(days=365)
    db.commit()
    cov = svc.coverage(db, criticality="high")
    assert _names(cov["assets_stale_only"]) == {"db-1"}


def test_stale_and_never_exercised(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    assert [p["name"] for p in svc.stale_plans(db)] == ["Reporting DB restore"]
    assert svc.stale_plans(db)[0]["days_overdue"] == 400 - 180
    assert [p["name"] for p in svc.never_exercised(db)] == ["Falcon boot-loop recovery", "Web LB rebuild"]


def test_rto_through_dependencies(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    with so.Session(engine) as db:
        data = build_estate(db)
        db.commit()
        rows = {r["name"]: r for r in svc.rto_check(db)}
        # checkout promises 60 min; the LB it sits behind needs 120 -> at risk
        checkout = rows["svc-checkout"]
        assert checkout["status"] == "at_risk" and checkout["rto_minutes"] == 60
        assert checkout["slowest"]["name"] == "lb-web" and checkout["slowest"]["rto_minutes"] == 120
        assert checkout["slowest"]["path"] == ["svc-checkout", "lb-web"]
        assert checkout["shortfall_minutes"] == 60
        # the group has redundancy (min_up 1 of 2): its members are not walked
        assert _names(checkout["unplanned"]) == {"tg-web"}
        assert rows["svc-reporting"]["status"] == "no_rto"
        # make the LB fast enough: tg-web still has no plan -> unverified
        data["plans"]["lb"].rto_minutes = 30
        db.commit()
        checkout = next(r for r in svc.rto_check(db) if r["name"] == "svc-checkout")
        assert checkout["status"] == "unverified" and checkout["too_slow"] == []
        # without redundancy the members are walked too: the hosts' slowest plan is the
        # CrowdStrike vendor plan (180 min), slower than the 60 promised
        data["assets"]["tg-web"].min_up = 2
        db.add(ContingencyPlan(name="TG", rto_minutes=45, last_reviewed=utcnow(),
                               links=[PlanLink(asset_id=data["assets"]["tg-web"].id)]))
        db.add(ContingencyPlan(name="Web hosts", rto_minutes=20, last_reviewed=utcnow(),
                               links=[PlanLink(asset_id=data["assets"]["web-1"].id),
                                      PlanLink(asset_id=data["assets"]["web-2"].id)]))
        db.commit()
        checkout = next(r for r in svc.rto_check(db) if r["name"] == "svc-checkout")
        assert checkout["status"] == "at_risk" and checkout["unplanned"] == []
        assert {(d["name"], d["rto_minutes"], d["via"]) for d in checkout["too_slow"]} == {
            ("web-1", 180, "vendor CrowdStrike"), ("web-2", 180, "vendor CrowdStrike")}
        assert checkout["slowest"]["path"][-3:-1] == ["lb-web", "tg-web"]
        data["plans"]["falcon"].rto_minutes = 50
        db.commit()
        checkout = next(r for r in svc.rto_check(db) if r["name"] == "svc-checkout")
        assert checkout["status"] == "ok" and checkout["slowest"]["rto_minutes"] == 50
    engine.dispose()


def test_rto_check_handles_cycles_and_soft_edges(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    from inventory.models import Dependency
    a = estate["assets"]
    db.add(Dependency(dependent_id=a["lb-web"].id, dependency_id=a["svc-checkout"].id, kind="calls"))
    db.add(Dependency(dependent_id=a["svc-checkout"].id, dependency_id=a["db-1"].id, kind="calls",
                      strength="soft"))
    db.commit()
    checkout = next(r for r in svc.rto_check(db) if r["name"] == "svc-checkout")
    assert checkout["slowest"]["name"] == "lb-web"  # soft edge to db-1 (240 min) not followed


def test_create_update_plan_with_audit(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    plan = svc.create_plan(db, {"name": "Okta outage", "owner": "iam", "rto_minutes": "90",
                                "review_interval_days": 90, "runbook_url": "https://wiki.example/okta",
                                "covers": {"assets": ["okta-tenant"], "vendors": ["okta"],
                                           "products": ["Okta/Workforce Identity"]}}, actor="alice")
    db.commit()
    data = svc.plan_to_dict(plan)
    assert data["rto_minutes"] == 90 and data["status"] == "stale"  # never reviewed
    assert {a["natural_key"] for a in data["covers"]["assets"]} == {"okta-tenant"}
    assert [v["name"] for v in data["covers"]["vendors"]] == ["Okta"]
    svc.update_plan(db, plan, {"covers": {"assets": ["svc-intranet"]}, "owner": "it"}, actor="bob")
    db.commit()
    data = svc.plan_to_dict(plan)
    assert data["owner"] == "it" and data["rto_minutes"] == 90
    assert data["covers_summary"] == "svc-intranet"
    events = db.scalars(sa.select(AuditEvent).where(AuditEvent.entity_type == "contingency_plan")
                        .order_by(AuditEvent.id)).all()
    assert [(e.action, e.actor) for e in events] == [("create", "alice"), ("update", "bob")]
    assert events[1].before["covers"]["vendors"] and events[1].after["covers"]["vendors"] == []


@pytest.mark.parametrize("data, field", [
    ({"name": "Checkout fallback"}, "name"),
    ({"name": "checkout FALLBACK"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x", "rto_minutes": 0}, "rto_minutes"),
    ({"name": "x", "rto_minutes": "-5"}, "rto_minutes"),
    ({"name": "x", "rto_minutes": 1.5}, "rto_minutes"),
    ({"name": "x", "review_interval_days": 0}, "review_interval_days"),
    ({"name": "x", "runbook_url": "javascript:alert(1)"}, "runbook_url"),
    ({"name": "x", "covers": {"assets": ["nope"]}}, "covers.assets"),
    ({"name": "x", "covers": {"products": ["Nope/No"]}}, "covers.products"),
    ({"name": "x", "covers": {"vendors": ["Nope"]}}, "covers.vendors"),
    ({"name": "x", "covers": {"things": []}}, "covers"),
])
def test_plan_validation_changes_nothing(db: so.Session, estate, data, field) -> None:  # type: ignore[no-untyped-def]
    before = db.scalar(sa.select(sa.func.count()).select_from(ContingencyPlan))
    with pytest.raises(svc.ValidationError) as err:
        svc.create_plan(db, data, actor="x")
    assert err.value.field == field
    db.rollback()
    assert db.scalar(sa.select(sa.func.count()).select_from(ContingencyPlan)) == before


def test_record_event_is_one_action(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    plan = estate["plans"]["db"]
    assert svc.plan_to_dict(plan)["status"] == "stale"
    svc.record_event(db, plan, actor="carol", kind="review", notes="checked contacts")
    db.commit()
    assert svc.plan_to_dict(plan)["status"] == "current"
    lb = estate["plans"]["lb"]
    svc.record_event(db, lb, actor="carol", kind="exercise", outcome="partial", notes="slow DNS")
    db.commit()
    assert lb.last_exercised is not None and svc.plan_to_dict(lb)["status"] == "current"
    events = db.scalars(sa.select(PlanEvent).order_by(PlanEvent.id)).all()
    assert [(e.kind, e.outcome, e.by) for e in events] == [("review", None, "carol"),
                                                          ("exercise", "partial", "carol")]
    audits = db.scalars(sa.select(AuditEvent.action).where(AuditEvent.entity_type == "contingency_plan")
                        .order_by(AuditEvent.id)).all()
    assert audits == ["record-review", "record-exercise"]
    # an older, late-entered review does not move last_reviewed backwards
    latest = plan.last_reviewed
    svc.record_event(db, plan, actor="carol", kind="review", at=(utcnow() - timedelta(days=50)).isoformat())
    assert plan.last_reviewed == latest


@pytest.mark.parametrize("kwargs, field", [
    ({"kind": "drill"}, "kind"),
    ({"kind": "exercise"}, "outcome"),
    ({"kind": "exercise", "outcome": "great"}, "outcome"),
    ({"kind": "review", "at": "2999-01-01"}, "at"),
])
def test_record_event_rejects_bad_input(db: so.Session, estate, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(svc.ValidationError) as err:
        svc.record_event(db, estate["plans"]["db"], actor="x", **kwargs)
    assert err.value.field == field
