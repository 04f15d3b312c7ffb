"""The shipped demo estate: in sync with its generator, imports cleanly, and tells the 2024-07-19 story."""
from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
import sqlalchemy.orm as so
from packaging.version import Version

from inventory.db import read_session
from inventory.estate.demo import build_document, demo_path, render
from inventory.models import (
    Asset,
    ContingencyPlan,
    Dependency,
    Installation,
    PlanLink,
    Product,
    UpdateTest,
    Vendor,
    VendorAlias,
    VendorAssessment,
    VendorUpdate,
)
from inventory.models.plan_status import plan_status

CRITICAL_SERVICES = ["service:check-in", "service:boarding", "service:baggage", "service:payments",
                     "service:crew-scheduling"]


def test_shipped_file_matches_the_generator():
    assert demo_path().read_text(encoding="utf-8") == render()
    assert build_document() == build_document()  # deterministic


def test_demo_imports_with_a_few_hundred_assets(demo_engine):
    with read_session(demo_engine) as db:
        n_assets = db.scalar(sa.select(sa.func.count(Asset.id)))
        assert 250 <= n_assets <= 600
        kinds = dict(db.execute(sa.select(Asset.kind, sa.func.count()).group_by(Asset.kind)).all())
        assert kinds["vm"] > 150 and kinds["target_group"] >= 6 and kinds["saas_tenant"] >= 4
        assert kinds["database"] >= 3 and kinds["load_balancer"] >= 6 and kinds["cluster"] >= 2
        assert {a.source for a in db.scalars(sa.select(Asset))} == {"import"}
        providers = dict(db.execute(sa.select(Asset.provider, sa.func.count()).group_by(Asset.provider)).all())
        assert providers["aws"] > 50 and providers["azure"] > 50 and providers["on_prem"] > 10
        regions = set(db.scalars(sa.select(Asset.region).where(Asset.provider.in_(["aws", "azure"]))))
        assert {"us-east-1", "eu-west-1", "centralus", "westeurope", "eastus2"} <= regions


def test_demo_names_other_areas_rely_on(demo_readonly_engine):
    with read_session(demo_readonly_engine) as db:
        products = {(p.vendor.name, p.name): p for p in db.scalars(sa.select(Product))}
        for pair in [("CrowdStrike", "Falcon Sensor"), ("Microsoft", "Windows Server"),
                     ("Microsoft", "Azure Virtual Machines"), ("Microsoft", "Entra ID"),
                     ("Microsoft", "Microsoft Defender for Endpoint"), ("Amazon Web Services", "Amazon EC2"),
                     ("Amazon Web Services", "Amazon RDS"), ("Amazon Web Services", "Elastic Load Balancing"),
                     ("Canonical", "Ubuntu"), ("Red Hat", "Red Hat Enterprise Linux"), ("Apple", "macOS"),
                     ("SentinelOne", "Singularity Agent"), ("Okta", "Okta Workforce Identity"),
                     ("Oracle", "Oracle Database"), ("Amadeus", "Altéa Departure Control"),
                     ("SITA", "SITA Baggage"), ("Adyen", "Adyen Payments"), ("Cloudflare", "Cloudflare CDN"),
                     ("PagerDuty", "PagerDuty")]:
            assert pair in products, pair
        falcon = products[("CrowdStrike", "Falcon Sensor")]
        assert falcon.kind == "agent" and falcon.vendor_pushes_updates
        clouds = dict(db.execute(sa.select(Vendor.cloud_provider, Vendor.name)
                                 .where(Vendor.cloud_provider.is_not(None))).all())
        assert clouds == {"aws": "Amazon Web Services", "azure": "Microsoft"}
        aliases = {a.alias: a.vendor.name for a in db.scalars(sa.select(VendorAlias))}
        for raw in ("crowdstrike, inc.", "crowdstrike.falcon", "falcon-sensor"):
            assert aliases[raw] == "CrowdStrike"
        assert aliases["microsoft corporation"] == "Microsoft" and aliases["aws"] == "Amazon Web Services"
        services = {a.natural_key: a for a in db.scalars(sa.select(Asset).where(Asset.kind == "service"))}
        for key in CRITICAL_SERVICES:
            assert services[key].criticality == "critical"
        assert {"high", "medium"} <= {s.criticality for s in services.values()}
        assert "service:website" in services and "service:loyalty" in services


def test_falcon_versions_and_edr_mix(demo_readonly_engine):
    with read_session(demo_readonly_engine) as db:
        rows = db.execute(sa.select(Asset.os_family, Product.name, Installation.version)
                          .join(Installation, Installation.asset_id == Asset.id)
                          .join(Product, Product.id == Installation.product_id)).all()
        falcon_versions = {v for _f, p, v in rows if p == "Falcon Sensor"}
        assert {"7.10.17706.0", "7.11.18110.0", "7.15.18514.0", "7.16.18605.0"} <= falcon_versions
        falcon_families = {f for f, p, _v in rows if p == "Falcon Sensor"}
        assert {"windows", "linux", "macos"} <= falcon_families
        agents = {p for _f, p, _v in rows}
        assert {"Singularity Agent", "Microsoft Defender for Endpoint"} <= agents
        os_products = {p for f, p, _v in rows if p in ("Windows Server", "Ubuntu", "Red Hat Enterprise Linux",
                                                       "macOS")}
        assert len(os_products) == 4
        rings = set(db.scalars(sa.select(Asset.update_ring).where(Asset.update_ring.is_not(None))))
        assert rings == {"canary", "staging", "production"}


def _falcon_outage(db: so.Session) -> tuple[dict[int, str], dict[int, Asset]]:
    """A deliberately simple propagation (independent of the impact engine): Windows hosts with
    Falcon >= 7.11 are down; groups go down below min_up and degrade otherwise; hard dependencies
    propagate down, soft ones degrade."""
    assets = {a.id: a for a in db.scalars(sa.select(Asset))}
    status: dict[int, str] = {}
    for asset_id, version in db.execute(
            sa.select(Installation.asset_id, Installation.version).join(Product)
            .where(Product.name == "Falcon Sensor")):
        if assets[asset_id].os_family == "windows" and Version(version) >= Version("7.11"):
            status[asset_id] = "down"
    edges = list(db.scalars(sa.select(Dependency)))
    members: dict[int, list[int]] = defaultdict(list)
    for e in edges:
        if e.kind == "member-of":
            members[e.dependent_id].append(e.dependency_id)
    changed = True
    while changed:
        changed = False
        for group_id, mids in members.items():
            down = sum(status.get(m) == "down" for m in mids)
            if not down:
                continue
            new = "down" if len(mids) - down < assets[group_id].min_up else "degraded"
            if status.get(group_id) != new and status.get(group_id) != "down":
                status[group_id] = new
                changed = True
        for e in edges:
            if e.kind == "member-of" or e.dependency_id not in status:
                continue
            new = "down" if e.strength == "hard" and status[e.dependency_id] == "down" else "degraded"
            if status.get(e.dependent_id) in (None, "degraded") and status.get(e.dependent_id) != new:
                status[e.dependent_id] = new
                changed = True
    return status, assets


def test_falcon_outage_degrades_mixed_pools_and_downs_windows_only_pools(demo_readonly_engine):
    with read_session(demo_readonly_engine) as db:
        status, assets = _falcon_outage(db)
        pools = [a for a in assets.values() if a.kind == "target_group"]
        degraded = [p for p in pools if status.get(p.id) == "degraded"]
        down = [p for p in pools if status.get(p.id) == "down"]
        assert len(degraded) >= 2 and len(down) >= 1
        # Mixed pools really are mixed, and the down pools are Windows-only.
        member_families: dict[int, set[str | None]] = defaultdict(set)
        for e in db.scalars(sa.select(Dependency).where(Dependency.kind == "member-of")):
            member_families[e.dependent_id].add(assets[e.dependency_id].os_family)
        assert all(member_families[p.id] == {"windows", "linux"} for p in degraded)
        assert all(member_families[p.id] == {"windows"} for p in down)
        by_key = {a.natural_key: status.get(a.id) for a in assets.values()}
        assert by_key["service:check-in"] == "degraded"
        assert by_key["service:baggage"] == "degraded"
        assert by_key["service:boarding"] == "down"
        assert by_key["service:crew-scheduling"] == "down"
        assert by_key["service:payments"] is None  # Linux on EKS: untouched


def test_plans_current_stale_never_exercised_and_a_gap(demo_readonly_engine):
    with read_session(demo_readonly_engine) as db:
        plans = list(db.scalars(sa.select(ContingencyPlan)))
        statuses = {p.name: plan_status(p) for p in plans}
        assert {"current", "stale", "never_exercised"} <= set(statuses.values())
        assert statuses["Falcon sensor boot-loop recovery"] == "current"
        covered = set(db.scalars(sa.select(Asset.natural_key).join(PlanLink, PlanLink.asset_id == Asset.id)))
        assert "service:crew-scheduling" not in covered
        assert {"service:check-in", "service:boarding", "service:baggage", "service:payments"} <= covered
        link_kinds = {(l.asset_id is not None, l.product_id is not None, l.vendor_id is not None)
                      for l in db.scalars(sa.select(PlanLink))}
        assert {(True, False, False), (False, True, False), (False, False, True)} <= link_kinds


def test_update_tests_and_assessments(demo_readonly_engine):
    with read_session(demo_readonly_engine) as db:
        tests = {(u.version, t.ring): t.status for u in db.scalars(sa.select(VendorUpdate))
                 for t in db.scalars(sa.select(UpdateTest).where(UpdateTest.update_id == u.id))}
        assert tests[("7.11.18110.0", "canary")] == tests[("7.11.18110.0", "staging")] == "passed"
        assert tests[("7.15.18514.0", "staging")] == "failed"
        assert tests[("7.16.18605.0", "canary")] == "pending"
        content = db.scalars(sa.select(VendorUpdate).where(VendorUpdate.kind == "content")).all()
        assert any(u.vendor_pushed for u in content)
        assessed = {a.vendor.name for a in db.scalars(sa.select(VendorAssessment))}
        assert {"CrowdStrike", "Microsoft", "Amazon Web Services", "Okta", "Amadeus"} <= assessed
        expiries = [c["expires"] for a in db.scalars(sa.select(VendorAssessment)) for c in a.certifications]
        assert any(e < "2026-01-01" for e in expiries) and any(e > "2027-01-01" for e in expiries)
        statuses = {f["status"] for a in db.scalars(sa.select(VendorAssessment)) for f in a.findings}
        assert {"open", "closed"} <= statuses
