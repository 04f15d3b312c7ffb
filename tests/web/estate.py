"""A small, readable estate for the dashboard tests, built straight through the models.

It mirrors the July 2024 story in miniature: a check-in service behind a
load-balancer pool of one Windows and one Linux host running the Falcon
sensor, a database on Azure, a plan for check-in and a gap for boarding — plus
hostile names and tags that must show up as text, never as markup.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import sqlalchemy.orm as so

from inventory.db import utcnow
from inventory.models import (Asset, CollectionRun, ContingencyPlan, Dependency, Installation,
                              PlanLink, Product, ScopeResult, ScopeState, UpdateTest, Vendor, VendorAlias,
                              VendorAssessment, VendorUpdate)

XSS_NAME = "<script>alert(1)</script>"
XSS_TAG = "<img src=x onerror=alert(2)>"


@dataclass
class SmallEstate:
    ids: dict[str, int] = field(default_factory=dict)


def asset(db: so.Session, key: str, name: str, kind: str = "vm", **kw) -> Asset:  # type: ignore[no-untyped-def]
    a = Asset(natural_key=key, name=name, kind=kind, **kw)
    db.add(a)
    return a


def build_small_estate(db: so.Session) -> SmallEstate:
    now = utcnow()
    cs = Vendor(name="CrowdStrike", tier="critical", description="EDR vendor")
    ms = Vendor(name="Microsoft", tier="critical", cloud_provider="azure")
    aws = Vendor(name="Amazon Web Services", tier="critical", cloud_provider="aws")
    db.add_all([cs, ms, aws])
    db.flush()
    db.add(VendorAlias(vendor_id=cs.id, alias="crowdstrike, inc."))
    falcon = Product(vendor_id=cs.id, name="Falcon Sensor", kind="agent", vendor_pushes_updates=True)
    winsrv = Product(vendor_id=ms.id, name="Windows Server", kind="os")
    db.add_all([falcon, winsrv])
    db.flush()

    checkin = asset(db, "service:check-in", "Check-in", "service", criticality="critical")
    boarding = asset(db, "service:boarding", "Boarding", "service", criticality="critical")
    pool = asset(db, "aws:tg:111:eu-west-1:checkin", "checkin-pool", "target_group", provider="aws",
                 account="111", region="eu-west-1", min_up=1, criticality="critical")
    web1 = asset(db, "aws:ec2:111:eu-west-1:i-1", "checkin-web-1", provider="aws", account="111",
                 region="eu-west-1", os_family="windows", os_name="Windows Server 2022", environment="production",
                 criticality="critical", source="aws", source_scope="aws/111/eu-west-1/ec2",
                 tags={"team": "airport", "note": XSS_TAG},
                 provenance={"os_family": {"source": "aws", "seen": now.isoformat()}})
    web2 = asset(db, "aws:ec2:111:eu-west-1:i-2", "checkin-web-2", provider="aws", account="111",
                 region="eu-west-1", os_family="linux", environment="production", criticality="high")
    gate = asset(db, "azure:vm:sub-1:gate", "boarding-gate-app", provider="azure", account="sub-1",
                 region="centralus", os_family="windows", environment="production", criticality="critical")
    dbhost = asset(db, "azure:vm:sub-1:db", "checkin-db", "database", provider="azure", account="sub-1",
                   region="centralus", environment="production", criticality="critical")
    evil = asset(db, "host:evil", XSS_NAME, "host", os_family="linux", tags={"x": XSS_TAG},
                 criticality="low")
    old = asset(db, "host:old", "retired-box", "host", os_family="linux", retired_at=now - timedelta(days=3))
    db.flush()
    db.add_all([
        Dependency(dependent_id=checkin.id, dependency_id=pool.id, kind="behind", strength="hard"),
        Dependency(dependent_id=pool.id, dependency_id=web1.id, kind="member-of", strength="hard"),
        Dependency(dependent_id=pool.id, dependency_id=web2.id, kind="member-of", strength="hard"),
        Dependency(dependent_id=checkin.id, dependency_id=dbhost.id, kind="stores-in", strength="hard"),
        Dependency(dependent_id=boarding.id, dependency_id=gate.id, kind="runs-on", strength="hard"),
        Dependency(dependent_id=boarding.id, dependency_id=checkin.id, kind="calls", strength="soft"),
    ])
    db.add_all([
        Installation(asset_id=web1.id, product_id=falcon.id, version="7.11.18110.0"),
        Installation(asset_id=web2.id, product_id=falcon.id, version="7.10.17706.0"),
        Installation(asset_id=gate.id, product_id=falcon.id, version="7.16.18605.0"),
        Installation(asset_id=web1.id, product_id=winsrv.id, version="2022"),
        Installation(asset_id=gate.id, product_id=winsrv.id, version="2019"),
        Installation(asset_id=evil.id, product_id=falcon.id, version=XSS_TAG),
    ])
    plan = ContingencyPlan(name="Check-in manual fallback", owner="Airport ops", rto_minutes=30,
                           steps="1. Switch to paper", manual_fallback="Handwritten boarding passes",
                           last_reviewed=now - timedelta(days=10), last_exercised=now - timedelta(days=20))
    stale = ContingencyPlan(name="Old DB restore", owner="DBA", rto_minutes=240,
                            last_reviewed=now - timedelta(days=400))
    db.add_all([plan, stale])
    db.flush()
    db.add_all([PlanLink(plan_id=plan.id, asset_id=checkin.id), PlanLink(plan_id=stale.id, asset_id=dbhost.id)])
    upd = VendorUpdate(product_id=falcon.id, version="7.11.18110.0", kind="content", vendor_pushed=True)
    db.add(upd)
    db.flush()
    db.add(UpdateTest(update_id=upd.id, ring="canary", status="failed"))
    db.add(VendorAssessment(vendor_id=cs.id, assessed_on=date(2024, 1, 15), assessor="Risk team",
                            score_security=4, score_update_practices=2, score_resilience=3,
                            score_compliance=4, staged_rollouts=False, next_review_due=date(2024, 7, 15),
                            findings=[{"title": "No staged content rollout", "severity": "high",
                                       "status": "open"}]))
    run = CollectionRun(collector="aws", scope="aws 111 eu-west-1", status="partial",
                        started_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=2) + timedelta(seconds=42),
                        created=2, updated=1, errors=[{"scope": "aws/111/eu-west-1/elb", "message": "AccessDenied <b>"}])
    db.add(run)
    db.flush()
    db.add_all([ScopeResult(run_id=run.id, scope_key="aws/111/eu-west-1/ec2", status="succeeded", created=2),
                ScopeResult(run_id=run.id, scope_key="aws/111/eu-west-1/elb", status="failed",
                            error="AccessDenied"),
                ScopeState(scope_key="aws/111/eu-west-1/ec2", collector="aws", run_id=run.id, status="succeeded",
                           created=2, finished_at=run.finished_at, last_success_at=run.finished_at),
                ScopeState(scope_key="aws/111/eu-west-1/elb", collector="aws", run_id=run.id, status="failed",
                           error="AccessDenied", finished_at=run.finished_at)])
    db.flush()
    estate = SmallEstate()
    for name, obj in {"checkin": checkin, "boarding": boarding, "pool": pool, "web1": web1, "web2": web2,
                      "gate": gate, "db": dbhost, "evil": evil, "old": old, "crowdstrike": cs,
                      "microsoft": ms, "aws": aws, "falcon": falcon, "plan": plan, "stale_plan": stale,
                      "run": run}.items():
        estate.ids[name] = obj.id
    return estate
