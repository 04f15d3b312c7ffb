"""Everything on the Skyward Air demo estate: update testing, plans, risk, review packs — and the
same answers on PostgreSQL."""
from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.services import plans as plans_svc
from inventory.services import review as review_svc
from inventory.services import risk as risk_svc
from inventory.services import updates as updates_svc
from tests.conftest import bearer, create_api_token, create_user_and_login

# The demo's dates are fixed; pin "today" where the answer depends on it.
TODAY = date(2026, 11, 25)


def test_demo_untested_exposure(demo_db: so.Session) -> None:
    rows = updates_svc.untested_exposure(demo_db, critical_only=True)
    falcon = {(r["version"], r["reason"]) for r in rows if r["product"] == "Falcon Sensor"}
    assert falcon == {("7.15.18514.0", "failed in staging"), ("7.16.18605.0", "pre-production test pending")}
    assert all(r["criticality"] == "critical" for r in rows)
    by_product = {(r["product"], r["version"]): r for r in updates_svc.exposure_by_product(demo_db)}
    assert by_product[("Falcon Sensor", "7.11.18110.0")]["tested"] is True
    assert by_product[("Falcon Sensor", "7.15.18514.0")]["rings"] == {"canary": "passed", "staging": "failed"}
    pushed = {p["product"]: p for p in updates_svc.vendor_pushed_products(demo_db)}
    assert [u["version"] for u in pushed["Falcon Sensor"]["pushed_updates"]] == ["C-00000291-00000000-00000032"]
    assert pushed["Falcon Sensor"]["installations"] > 100
    rings = {r["ring"]: r["assets"] for r in updates_svc.ring_summary(demo_db)}
    assert set(rings) >= {"canary", "staging", "production"}


def test_demo_pipeline_turns_the_gate_red(demo_app, demo_url, planb) -> None:  # type: ignore[no-untyped-def]
    client = demo_app.test_client()
    token = create_api_token(demo_app, "write")
    gate = ("check", "updates", "--product", "Microsoft/Windows Server")
    assert planb(demo_url, *gate).exit_code == 0
    updates = client.get("/api/v1/updates?product=Microsoft/Windows Server", headers=bearer(token)).json["updates"]
    target = next(u for u in updates if u["rings"].get("staging") == "pending")
    assert target["installed"]["critical"] > 0
    posted = client.post(f"/api/v1/updates/{target['id']}/tests", headers=bearer(token),
                         json={"ring": "staging", "status": "failed", "evidence_url": "https://ci.skyward.example/1"})
    assert posted.status_code == 200
    red = planb(demo_url, *gate)
    assert red.exit_code == 1 and target["version"] in red.output and "failed in staging" in red.output


def test_demo_plans(demo_db: so.Session) -> None:
    cov = plans_svc.coverage(demo_db)
    assert [e["name"] for e in cov["uncovered"]] == ["Crew scheduling"]
    assert [e["name"] for e in cov["stale_only"]] == ["Baggage handling"]
    assert cov["critical_services"] == 5
    stale = {p["name"] for p in plans_svc.stale_plans(demo_db)}
    assert {"Baggage: manual bag tags and reconciliation", "Okta outage: break-glass access"} <= stale
    never = {p["name"] for p in plans_svc.never_exercised(demo_db)}
    assert {"Azure region evacuation", "Payments: offline card capture"} <= never
    rto = {r["name"]: r for r in plans_svc.rto_check(demo_db)}
    boarding = rto["Boarding"]
    assert boarding["status"] == "at_risk" and boarding["rto_minutes"] == 20
    assert boarding["slowest"]["plan"] == "Azure region evacuation" and boarding["slowest"]["rto_minutes"] == 480
    assert rto["Crew scheduling"]["status"] == "no_rto"


def test_demo_risk_scores(demo_db: so.Session) -> None:
    from inventory.impact import blast_radius, parse_scope

    table = risk_svc.risk_table(demo_db, today=TODAY)
    assert len(table) == demo_db.scalar(sa.select(sa.func.count()).select_from(risk_svc.Vendor))
    for risk in table:
        assert risk["subtotal"] == pytest.approx(sum(p["points"] for p in risk["parts"]), abs=0.011)
        assert risk["score"] == pytest.approx(risk["subtotal"] * risk["modifier"], abs=0.051)
        assert risk["band"] == risk_svc.band(risk["score"])
    by_name = {r["vendor"]: r for r in table}
    cs = by_name["CrowdStrike"]
    assert cs["modifier"] == pytest.approx(0.85 * 0.9)  # alternative and exit plan documented
    assert cs["review_state"] == "overdue"
    assert set(cs["concentration"]["routes"]) >= {"installed Falcon Sensor", "depends on Falcon Sensor"}
    # Microsoft reaches assets three ways (Windows, Azure hosting, dependants), each asset once
    ms = by_name["Microsoft"]["concentration"]
    assert "hosted in azure" in ms["routes"] and ms["critical_assets"] <= sum(ms["routes"].values())
    # the fast summary matches the full hit list for every vendor
    for vendor in ("CrowdStrike", "Microsoft", "Amazon Web Services", "Okta"):
        result = blast_radius(demo_db, parse_scope(demo_db, {"vendor": vendor}))
        fast = risk_svc.BlastSummary.from_result(result)
        slow = risk_svc.BlastSummary.from_hits(result.to_dict()["hits"], result.totals)
        assert (fast.hits, fast.weighted_hits, fast.plan_states) == (slow.hits, slow.weighted_hits, slow.plan_states)
    calendar = risk_svc.review_calendar(demo_db, today=TODAY, table=table)
    states = {r["vendor"]: r["state"] for r in calendar}
    assert states["CrowdStrike"] == "overdue" and states["Okta"] == "overdue"
    assert "Amazon Web Services" not in states  # reviewed, next review later
    assert [r["score"] for r in calendar] == sorted((r["score"] for r in calendar), reverse=True)


def test_demo_review_pack(demo_db: so.Session) -> None:
    pack = review_svc.review_pack(demo_db, "CrowdStrike", today=TODAY)
    assert [a["assessed_on"] for a in pack["assessments"]] == ["2026-02-10", "2024-02-01"]
    assert [f["title"] for f in pack["open_findings"]] == ["Content validator coverage not independently verified"]
    assert [(c["name"], c["status"]) for c in pack["certificates"]] == [("ISO/IEC 27001", "expiring")]
    assert pack["blast"]["hit_count"] == pack["risk"]["parts"][0]["inputs"]["hits"] > 100
    assert {p["name"] for p in pack["coverage"]["vendor_plans"]} == {"Falcon sensor boot-loop recovery"}
    assert any(s["name"] == "Boarding" for s in pack["blast"]["services"])
    assert pack["untested"]["critical"] > 0
    md = review_svc.render_markdown(pack)
    assert "Content validator coverage not independently verified" in md and "ISO/IEC 27001" in md
    html = review_svc.render_html(pack)
    assert html.count("<h2>") == 8 and "<script" not in html


def test_demo_pages_and_api(demo_app) -> None:  # type: ignore[no-untyped-def]
    client = demo_app.test_client()
    create_user_and_login(demo_app, client, "viewer")
    plans = client.get("/plans/").get_data(as_text=True)
    assert "Crew scheduling" in plans and "Boarding" in plans and "Azure region evacuation" in plans
    updates = client.get("/updates/").get_data(as_text=True)
    assert "7.15.18514.0" in updates and "failed in staging" in updates and "vendor-pushed" in updates
    risk = client.get("/risk/").get_data(as_text=True)
    assert "CrowdStrike" in risk and "Review calendar" in risk
    cs_id = next(v for v in client.get("/risk/export.json").json if v["vendor"] == "CrowdStrike")["vendor_id"]
    review = client.get(f"/risk/review/{cs_id}")
    assert review.status_code == 200 and "Falcon sensor boot-loop recovery" in review.get_data(as_text=True)
    plan_id = next(p["id"] for p in plans_svc_list(demo_app) if p["name"].startswith("Boarding"))
    detail = client.get(f"/plans/{plan_id}").get_data(as_text=True)
    assert "handwritten" in detail.lower()
    token = create_api_token(demo_app, "read")
    for url in ("/api/v1/plans", "/api/v1/plans/coverage", "/api/v1/plans/rto", "/api/v1/updates",
                "/api/v1/exposure/untested", "/api/v1/risk", "/api/v1/reviews/due", "/api/v1/risk/concentration",
                "/api/v1/review/CrowdStrike", "/api/v1/assessments"):
        assert client.get(url, headers=bearer(token)).status_code == 200, url


def plans_svc_list(app):  # type: ignore[no-untyped-def]
    from inventory.app_db import get_session

    with app.app_context():
        return plans_svc.list_plans(get_session())


def test_demo_same_answers_on_postgresql(demo_db: so.Session, pg_url: str) -> None:
    from inventory.estate.demo import load_demo

    engine = make_engine(pg_url)
    with so.Session(engine) as pg:
        load_demo(pg, actor="tests")
        pg.commit()

        def answers(db: so.Session) -> dict:  # type: ignore[type-arg]
            return {
                "untested": sorted((r["natural_key"], r["product"], r["version"] or "", r["reason"])
                                   for r in updates_svc.untested_exposure(db)),
                "coverage": {k: sorted(e["natural_key"] for e in v) for k, v in plans_svc.coverage(db).items()
                             if isinstance(v, list)},
                "rto": [(r["natural_key"], r["status"], r["slowest"] and r["slowest"]["rto_minutes"])
                        for r in plans_svc.rto_check(db)],
                "concentration": {r["vendor"]: (r["critical_assets"], r["routes"])
                                  for r in risk_svc.vendor_concentration(db)},
                "scores": {r["vendor"]: r["score"] for r in risk_svc.risk_table(db, today=TODAY)},
            }

        assert answers(pg) == answers(demo_db)
    engine.dispose()


def test_demo_review_pack_gap_lists_match_the_full_hit_list(demo_db: so.Session) -> None:
    from inventory.impact import blast_radius, parse_scope

    pack = review_svc.review_pack(demo_db, "CrowdStrike", today=TODAY)
    hits = blast_radius(demo_db, parse_scope(demo_db, {"vendor": "CrowdStrike"})).to_dict()["hits"]
    gaps = {h["natural_key"] for h in hits if risk_svc._hit_plan_state(h) == "gap"}
    stale = {h["natural_key"] for h in hits if risk_svc._hit_plan_state(h) == "stale"}
    assert {h["natural_key"] for h in pack["coverage"]["gaps"]} == gaps and pack["coverage"]["gap_count"] == len(gaps)
    assert {h["natural_key"] for h in pack["coverage"]["stale_only"]} == stale
    assert [h["natural_key"] for h in pack["blast"]["hits"]] == [h["natural_key"] for h in hits][:len(pack["blast"]["hits"])]
    crew = next(s for s in pack["blast"]["services"] if s["name"] == "Crew scheduling")
    assert crew["plans"] == [] and crew["plan_state"] == "gap"
