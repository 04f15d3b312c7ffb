"""Acceptance: the demo estate answers the CrowdStrike question of 19 July 2024 correctly.

Expectations are worked out here from the database directly (installations,
versions, group members), not from the engine.
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so
from packaging.version import Version

from inventory.db import make_engine
from inventory.impact import blast_radius
from inventory.models import Asset, Dependency, Installation, Product, Vendor

SCOPE = {"vendor": "CrowdStrike", "products": ["Falcon Sensor"], "version": ">=7.11", "os": ["windows"]}


def falcon_hosts(db: so.Session) -> dict[str, tuple[str, str]]:
    rows = db.execute(
        sa.select(Asset.natural_key, Asset.os_family, Installation.version)
        .join(Installation, Installation.asset_id == Asset.id).join(Product).join(Vendor)
        .where(Vendor.name == "CrowdStrike", Product.name == "Falcon Sensor", Asset.retired_at.is_(None)))
    return {key: (os_family, version) for key, os_family, version in rows}


def test_crowdstrike_july_2024(demo_url: str) -> None:
    engine = make_engine(demo_url)
    db = so.Session(engine)
    try:
        hosts = falcon_hosts(db)
        broken = {k for k, (os_family, v) in hosts.items()
                  if os_family == "windows" and Version(v) >= Version("7.11")}
        older = {k for k, (os_family, v) in hosts.items()
                 if os_family == "windows" and Version(v) < Version("7.11")}
        others = {k for k, (os_family, _v) in hosts.items() if os_family in ("linux", "macos")}
        assert broken and older and others, "the demo estate should have all three kinds of Falcon host"

        result = blast_radius(db, SCOPE)
        hits = {h.natural_key: h for h in result.hits}
        seeds = {s["natural_key"] for s in result.seeds()}

        # Windows hosts with Falcon >= 7.11 are down; nothing else is a seed.
        assert seeds == broken
        assert all(hits[k].status == "down" and hits[k].hops == 0 for k in broken)
        # Linux and macOS hosts running Falcon are untouched, and so are older Windows sensors.
        assert not (others & set(hits))
        assert not (older & seeds)

        # Services behind redundant mixed-OS pools are degraded rather than down.
        assert hits["service:check-in"].status == "degraded"
        groups = {a.natural_key: a for a in db.scalars(sa.select(Asset).where(Asset.min_up.is_not(None)))}
        checked = 0
        for key, group in groups.items():
            members = list(db.scalars(sa.select(Asset).join(Dependency, Dependency.dependency_id == Asset.id)
                                      .where(Dependency.dependent_id == group.id, Dependency.kind == "member-of")))
            survivors = [m for m in members if m.natural_key not in hits]
            if key in hits and {m.os_family for m in members} >= {"windows", "linux"} and \
                    len(survivors) >= (group.min_up or 0):
                assert hits[key].status == "degraded", key
                checked += 1
        assert checked >= 1
        down_services = [s for s in result.totals["by_service"] if s["status"] == "down"]
        degraded_services = [s for s in result.totals["by_service"] if s["status"] == "degraded"]
        assert degraded_services and len(degraded_services) + len(down_services) == \
            sum(1 for h in result.hits if h.kind == "service")

        # Every hit asset has its plans or is a gap; every explaining path ends at a broken host.
        for hit in result.hits:
            assert hit.gap == (hit.plans == [])
            assert all(p["status"] in ("current", "stale", "never_exercised") for p in hit.plans)
            assert hit.path[-1]["natural_key"] in broken
        coverage = result.totals["plan_coverage"]
        assert sum(coverage.values()) == len(result.hits)
        checkin_plans = [p["name"] for p in hits["service:check-in"].plans]
        assert checkin_plans and hits["service:check-in"].plans[0]["via"] == "asset"
    finally:
        db.close()
        engine.dispose()


def test_demo_azure_central_us(demo_url: str) -> None:
    """The same day's other outage: Azure Central US seeds everything hosted there."""
    engine = make_engine(demo_url)
    db = so.Session(engine)
    try:
        result = blast_radius(db, {"vendor": "Microsoft", "regions": ["centralus"]})
        hosted = set(db.scalars(sa.select(Asset.natural_key).where(
            Asset.provider == "azure", Asset.region == "centralus", Asset.retired_at.is_(None))))
        seeds = {s["natural_key"] for s in result.seeds()}
        assert hosted and hosted <= seeds
        assert all(h.region == "centralus" for h in result.hits if h.seed)
    finally:
        db.close()
        engine.dispose()
