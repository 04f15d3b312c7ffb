"""Untested exposure, rings, vendor-pushed products, and recording updates/tests."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.models import AuditEvent, UpdateTest, VendorUpdate
from inventory.services import updates as svc
from tests.risk.conftest import build_estate


def _exposure_set(rows):  # type: ignore[no-untyped-def]
    return {(r["natural_key"], r["product"], r["version"], r["reason"]) for r in rows}


def test_untested_exposure_rules(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    with so.Session(engine) as db:
        build_estate(db)
        db.commit()
        rows = svc.untested_exposure(db)
        assert _exposure_set(rows) == {
            # 7.11.1: canary passed but staging pending -> a pre-production pass counts as tested
            # Windows 2022 has no VendorUpdate row at all -> untested
            ("web-1", "Windows Server", "2022", "no update record for this version"),
            ("web-2", "Windows Server", "2022", "no update record for this version"),
            # version unknown counts as untested
            ("okta-tenant", "Workforce Identity", None, "version unknown"),
        }
        # the retired old-vm on an unrecorded version never shows
        assert all(r["natural_key"] != "old-vm" for r in rows)
        critical = svc.untested_exposure(db, critical_only=True)
        assert {r["natural_key"] for r in critical} == {"web-1", "web-2"}
        assert set(critical[0]) >= {"asset_id", "asset_name", "natural_key", "criticality", "product_id",
                                    "product", "vendor", "version", "update_ring", "reason"}
        assert svc.untested_summary(db)["critical_assets"] == 2
    engine.dispose()


def test_failed_test_anywhere_makes_a_version_untested(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    with so.Session(engine) as db:
        data = build_estate(db)
        svc.record_test(db, actor="ci", update=data["updates"]["7.11.1"], ring="staging", status="failed")
        db.commit()
        falcon = {(r["natural_key"], r["reason"]) for r in svc.untested_exposure(db)
                  if r["product"] == "Falcon Sensor"}
        assert falcon == {("web-1", "failed in staging"), ("web-2", "failed in staging"),
                          ("mac-1", "failed in staging")}
    engine.dispose()


@pytest.mark.parametrize("tests, tested, reason", [
    ([], False, "no test recorded"),
    ([("canary", "pending")], False, "pre-production test pending"),
    ([("production", "passed")], False, "passed only in production (no pre-production test)"),
    ([("canary", "passed")], True, ""),
    ([("canary", "passed"), ("production", "failed")], False, "failed in production"),
    ([("staging", "failed"), ("canary", "failed")], False, "failed in canary, staging"),
])
def test_summarise_tests(tests, tested, reason) -> None:  # type: ignore[no-untyped-def]
    assert svc.summarise_tests(tests)[:2] == (tested, reason)


def test_rings_and_vendor_pushed(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    rings = {r["ring"]: (r["assets"], r["critical"]) for r in svc.ring_summary(db)}
    assert rings["production"] == (1, 1) and rings["canary"] == (1, 1) and rings["staging"] == (1, 0)
    assert rings[None][0] == 7  # 10 live assets, 3 with a ring
    assert [a["name"] for a in svc.assets_in_ring(db, "canary")] == ["web-2"]
    pushed = svc.vendor_pushed_products(db)
    assert [(p["vendor"], p["product"]) for p in pushed] == [("CrowdStrike", "Falcon Sensor")]
    assert pushed[0]["installations"] == 4  # retired old-vm not counted
    assert [u["version"] for u in pushed[0]["pushed_updates"]] == ["C-00000291"]


def test_exposure_by_product(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    rows = {(r["product"], r["version"]): r for r in svc.exposure_by_product(db)}
    assert rows[("Falcon Sensor", "7.11.1")]["installations"] == 3
    assert rows[("Falcon Sensor", "7.11.1")]["tested"] is True
    assert rows[("Windows Server", "2022")]["tested"] is False
    assert rows[("Windows Server", "2022")]["critical"] == 2


def test_record_test_upserts_and_audits(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    update = estate["updates"]["7.11.1"]
    test, created = svc.record_test(db, actor="ci", update=update, ring="staging", status="passed",
                                    evidence_url="https://ci.example/run/1", tested_by="pipeline")
    assert not created and test.status == "passed" and test.tested_at is not None
    test2, created2 = svc.record_test(db, actor="ci", update=update, ring="production", status="pending")
    assert created2 and test2.tested_at is None
    db.commit()
    assert db.scalar(sa.select(sa.func.count()).select_from(UpdateTest)
                     .where(UpdateTest.update_id == update.id)) == 3
    events = db.scalars(sa.select(AuditEvent).where(AuditEvent.entity_type == "update_test")).all()
    assert [e.summary for e in events] == ["CrowdStrike/Falcon Sensor@7.11.1 staging: passed",
                                           "CrowdStrike/Falcon Sensor@7.11.1 production: pending"]
    assert events[0].before["status"] == "pending" and events[0].after["status"] == "passed"


@pytest.mark.parametrize("kwargs, field", [
    ({"ring": "prod", "status": "passed"}, "ring"),
    ({"ring": "canary", "status": "ok"}, "status"),
    ({"ring": "canary", "status": "passed", "evidence_url": "javascript:alert(1)"}, "evidence_url"),
    ({"ring": "canary", "status": "passed", "evidence_url": "ftp://x/y"}, "evidence_url"),
    ({"ring": "canary", "status": "passed", "tested_at": "yesterday"}, "tested_at"),
    ({"ring": "canary", "status": "passed", "tested_at": "2999-01-01T00:00:00Z"}, "tested_at"),
    ({"ring": None, "status": "passed"}, "ring"),
])
def test_record_test_rejects_bad_input(db: so.Session, estate, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(svc.ValidationError) as err:
        svc.record_test(db, actor="ci", update=estate["updates"]["7.10.0"], **kwargs)
    assert err.value.field == field


def test_create_update_and_lookup(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    update = svc.create_update(db, actor="me", product="CrowdStrike/Falcon Sensor", version="7.12.0",
                               released_on="2024-08-01", kind="major")
    db.commit()
    assert svc.find_update(db, "crowdstrike/falcon sensor@7.12.0").id == update.id
    assert svc.find_update(db, str(update.id)).version == "7.12.0"
    with pytest.raises(svc.NotFound):
        svc.find_update(db, "CrowdStrike/Falcon Sensor@9.9")
    with pytest.raises(svc.ValidationError) as err:
        svc.create_update(db, actor="me", product="CrowdStrike/Falcon Sensor", version="7.12.0")
    assert err.value.field == "version" and err.value.status == 409
    with pytest.raises(svc.ValidationError) as err:
        svc.create_update(db, actor="me", product="Nope/Nothing", version="1")
    assert err.value.field == "product"
    with pytest.raises(svc.ValidationError) as err:
        svc.create_update(db, actor="me", product="Falcon Sensor", version="1", kind="hotfix")
    assert err.value.field == "kind"
    assert db.scalar(sa.select(sa.func.count()).select_from(VendorUpdate)) == 4
