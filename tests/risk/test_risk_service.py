"""Vendor concentration across routes, assessments and the vendor risk score arithmetic."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine, utcnow
from inventory.models import AuditEvent, VendorAssessment
from inventory.services import risk as svc
from tests.risk.conftest import build_estate


def test_concentration_counts_each_asset_once_with_every_route(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    with so.Session(engine) as db:
        build_estate(db)
        db.commit()
        rows = {r["vendor"]: r for r in svc.vendor_concentration(db)}
    engine.dispose()
    cs, ms, okta = rows["CrowdStrike"], rows["Microsoft"], rows["Okta"]
    # 6 live critical assets: both services, lb-web, tg-web, web-1, web-2 (old-vm is retired)
    assert cs["critical_assets"] == 6 and cs["share"] == 1.0
    assert cs["routes"] == {"installed Falcon Sensor": 2, "depends on Falcon Sensor": 4}
    assert cs["critical_services"] == 2 and cs["service_share"] == 1.0
    # web-1/web-2 are reached three ways (Windows installed, hosted in Azure, and as members) yet
    # counted once each
    assert ms["critical_assets"] == 5 and ms["share"] == pytest.approx(5 / 6)
    assert ms["routes"] == {"installed Windows Server": 2, "hosted in azure": 4,
                            "depends on Windows Server": 3, "depends on azure-hosted assets": 3}
    assert ms["critical_services"] == 1 and ms["service_share"] == 0.5
    assert okta["critical_assets"] == 0 and okta["routes"] == {}
    assert okta["routes_all_assets"] == {"installed Workforce Identity": 1,
                                         "depends on Workforce Identity": 1}
    assert list(rows) == ["CrowdStrike", "Microsoft", "Okta"]  # highest share first




def test_score_arithmetic_with_a_given_blast_radius(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    blast = {"hits": [{"natural_key": "okta-tenant", "status": "down", "criticality": "high", "plans": [],
                       "gap": True},
                      {"natural_key": "svc-intranet", "status": "degraded", "criticality": "high",
                       "plans": [{"status": "stale"}], "gap": False}],
             "totals": {"down": 1, "degraded": 1}}
    risk = svc.vendor_risk(db, "Okta", _blast_value=blast)
    parts = {p["part"]: p for p in risk["parts"]}
    estate_weight = 8 * 6 + 4 * 3 + 1  # live assets: six critical, three high, one low
    assert parts["impact"]["inputs"]["estate_weight"] == estate_weight
    impact = 30 * (4 * 1 + 4 * 0.5) / estate_weight
    assert parts["impact"]["points"] == pytest.approx(impact, abs=0.01)
    assert parts["concentration"]["points"] == 0  # no critical service depends on Okta
    assert parts["assessment"]["points"] == 0  # all fives, no findings, no certificates
    # its one installation has no version: all untested (8); no critical asset depends on Okta,
    # so practice-based parts count at the 0.2 floor
    assert risk["dependence"] == 0.2
    assert parts["updates"]["inputs"]["raw_points"] == 8 and parts["updates"]["points"] == 1.6
    assert parts["plans"]["points"] == pytest.approx(10 * (4 * 1 + 4 * 0.5) / 8)
    subtotal = impact + 1.6 + 7.5
    assert risk["subtotal"] == pytest.approx(subtotal, abs=0.02)
    # Okta has an alternative and an exit plan
    assert risk["modifier"] == pytest.approx(0.85 * 0.9)
    assert risk["score"] == pytest.approx(subtotal * 0.765, abs=0.1)
    assert risk["score"] == pytest.approx(sum(p["points"] for p in risk["parts"]) * risk["modifier"], abs=0.06)


def test_assessment_part(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    risk = svc.vendor_risk(db, "CrowdStrike", _blast_value={"hits": []})
    part = next(p for p in risk["parts"] if p["part"] == "assessment")
    # scores 4,1,3,4 -> mean 3 -> 15 * 2/5 = 6; one open high finding -> 2; one expired cert -> 2
    assert part["points"] == 10
    assert part["inputs"]["expired_certifications"] == ["SOC 2 Type II"]
    updates = next(p for p in risk["parts"] if p["part"] == "updates")
    # Falcon is vendor-pushed (5), no staged rollouts (1); rollback is supported; all installs tested
    assert updates["points"] == 6 and updates["inputs"]["untested_installations"] == 0
    assert risk["review_state"] == "overdue"
    never = svc.vendor_risk(db, "Microsoft", _blast_value={"hits": []})
    # never assessed: the full 25, scaled by Microsoft's dependence (5 of 6 critical assets)
    assert next(p for p in never["parts"] if p["part"] == "assessment")["points"] == pytest.approx(25 * 5 / 6, abs=0.01)
    assert never["review_state"] == "never"


def test_review_calendar_orders_by_risk(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    table = [svc.vendor_risk(db, name, _blast_value={"hits": []}) for name in ("Okta", "Microsoft", "CrowdStrike")]
    table.sort(key=lambda r: -r["score"])
    calendar = svc.review_calendar(db, table=table)
    assert [(r["vendor"], r["state"]) for r in calendar] == [("CrowdStrike", "overdue"), ("Microsoft", "never")] \
        or [(r["vendor"], r["state"]) for r in calendar] == [("Microsoft", "never"), ("CrowdStrike", "overdue")]
    assert [r["score"] for r in calendar] == sorted((r["score"] for r in calendar), reverse=True)
    assert "Okta" not in {r["vendor"] for r in calendar}  # next review in 300 days
    overdue = next(r for r in calendar if r["vendor"] == "CrowdStrike")
    assert overdue["days_overdue"] == 35


def test_create_assessment_with_audit(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    today = utcnow().date()
    a = svc.create_assessment(db, {
        "vendor": "microsoft", "assessed_on": today.isoformat(), "assessor": "dana",
        "scores": {"security": 4, "update_practices": "3", "resilience": 4, "compliance": 5},
        "staged_rollouts": True, "customer_update_control": "true", "rollback_supported": False,
        "certifications": [{"name": "ISO 27001", "expires": (today + timedelta(days=30)).isoformat()}],
        "findings": [{"title": "No status page SLA", "severity": "medium"}]}, actor="dana")
    db.commit()
    data = svc.assessment_to_dict(a)
    assert data["scores"] == {"security": 4, "update_practices": 3, "resilience": 4, "compliance": 5}
    assert data["next_review_due"] == (today + timedelta(days=365)).isoformat()
    assert data["certifications"][0]["status"] == "expiring"
    assert data["open_findings"] == [{"title": "No status page SLA", "severity": "medium", "status": "open"}]
    event = db.scalar(sa.select(AuditEvent).where(AuditEvent.entity_type == "vendor_assessment"))
    assert event.actor == "dana" and event.after["vendor_id"] == estate["vendors"]["ms"].id
    assert svc.latest_assessment(db, estate["vendors"]["ms"].id).id == a.id


@pytest.mark.parametrize("data, field", [
    ({}, "vendor"),
    ({"vendor": "Nobody"}, "vendor"),
    ({"vendor": "Okta", "scores": {"security": 6}}, "scores.security"),
    ({"vendor": "Okta", "scores": {"security": -1}}, "scores.security"),
    ({"vendor": "Okta", "scores": {"vibes": 3}}, "scores"),
    ({"vendor": "Okta", "assessed_on": "2999-01-01"}, "assessed_on"),
    ({"vendor": "Okta", "assessed_on": "01/02/2024"}, "assessed_on"),
    ({"vendor": "Okta", "assessed_on": "2024-01-01", "next_review_due": "2023-01-01"}, "next_review_due"),
    ({"vendor": "Okta", "certifications": [{"expires": "2025-01-01"}]}, "certifications[0].name"),
    ({"vendor": "Okta", "certifications": [{"name": "SOC 2", "expires": "soon"}]}, "certifications[0].expires"),
    ({"vendor": "Okta", "findings": [{"title": "x", "severity": "huge"}]}, "findings[0].severity"),
    ({"vendor": "Okta", "findings": [{"title": "x", "status": "wontfix"}]}, "findings[0].status"),
    ({"vendor": "Okta", "findings": [{"title": "x", "sevrity": "high"}]}, "findings[0].sevrity"),
    ({"vendor": "Okta", "certifications": [{"name": "SOC 2", "expiry": "2030-01-01"}]}, "certifications[0].expiry"),
    ({"vendor": "Okta", "staged_rollouts": "maybe"}, "staged_rollouts"),
    ({"vendor": "Okta", "colour": "red"}, "colour"),
])
def test_assessment_validation(db: so.Session, estate, data, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(svc.ValidationError) as err:
        svc.create_assessment(db, data, actor="x")
    assert err.value.field == field
    db.rollback()
    assert db.scalar(sa.select(sa.func.count()).select_from(VendorAssessment)) == 2


def test_duplicate_assessment_date_is_a_conflict(db: so.Session, estate) -> None:  # type: ignore[no-untyped-def]
    day = (utcnow().date() - timedelta(days=30)).isoformat()
    with pytest.raises(svc.ValidationError) as err:
        svc.create_assessment(db, {"vendor": "Okta", "assessed_on": day}, actor="x")
    assert err.value.status == 409 and err.value.field == "assessed_on"


def test_cert_status() -> None:
    today = date(2024, 7, 19)
    assert svc.cert_status({"expires": "2024-07-18"}, today) == "expired"
    assert svc.cert_status({"expires": "2024-10-17"}, today) == "expiring"
    assert svc.cert_status({"expires": "2024-10-18"}, today) == "valid"
    assert svc.cert_status({}, today) == "unknown"
