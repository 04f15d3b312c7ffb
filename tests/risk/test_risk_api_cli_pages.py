"""Vendor risk through the API, the CLI and the dashboard: scores, assessments, calendar, review packs."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine, utcnow
from inventory.models import AuditEvent, Vendor, VendorAssessment
from inventory.services import risk as svc
from tests.conftest import bearer, create_user_and_login
from tests.risk.conftest import build_estate


def _seed(url: str, evil_name: bool = False) -> dict[str, int]:
    engine = make_engine(url)
    with so.Session(engine) as db:
        data = build_estate(db)
        if evil_name:
            data["vendors"]["okta"].name = "Okta <script>alert(1)</script> | *Inc*"
        db.commit()
        ids = {k: v.id for k, v in data["vendors"].items()}
    engine.dispose()
    return ids


def _check_score(risk: dict) -> None:  # type: ignore[type-arg]
    assert risk["subtotal"] == pytest.approx(sum(p["points"] for p in risk["parts"]), abs=0.011)
    assert risk["score"] == pytest.approx(risk["subtotal"] * risk["modifier"], abs=0.051)
    for part in risk["parts"]:
        assert 0 <= part["points"] <= part["max"]


def test_real_blast_radius_feeds_the_score(db, estate) -> None:  # type: ignore[no-untyped-def]
    from inventory.impact import blast_radius, parse_scope

    for vendor in ("CrowdStrike", "Microsoft", "Okta"):
        result = blast_radius(db, parse_scope(db, {"vendor": vendor}))
        fast = svc.BlastSummary.from_result(result)
        slow = svc.BlastSummary.from_hits(result.to_dict()["hits"], result.totals)
        assert (fast.hits, fast.down, fast.weighted_hits, fast.by_criticality, fast.plan_states) == \
               (slow.hits, slow.down, slow.weighted_hits, slow.by_criticality, slow.plan_states)
        assert fast.plan_weights == pytest.approx(slow.plan_weights)
    risk = svc.vendor_risk(db, "CrowdStrike")
    _check_score(risk)
    impact = next(p for p in risk["parts"] if p["part"] == "impact")
    # every live asset with Falcon, plus what hard-depends on them, is hit
    assert impact["inputs"]["hits"] >= 4 and impact["points"] > 0
    table = svc.risk_table(db)
    assert [r["score"] for r in table] == sorted((r["score"] for r in table), reverse=True)
    assert svc.risk_table(db) == table  # deterministic


def test_risk_api(app, client, read_token, write_token, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(sqlite_url)
    table = client.get("/api/v1/risk", headers=bearer(read_token)).json
    assert [v["vendor"] for v in table["vendors"]][0] in ("CrowdStrike", "Microsoft")
    for risk in table["vendors"]:
        _check_score(risk)
    assert {f["part"] for f in table["formula"]} == {"impact", "concentration", "assessment", "updates", "plans"}
    one = client.get("/api/v1/risk/vendors/crowdstrike", headers=bearer(read_token)).json
    assert one["vendor_id"] == ids["cs"] and one["review_state"] == "overdue"
    assert client.get(f"/api/v1/risk/vendors/{ids['okta']}", headers=bearer(read_token)).json["vendor"] == "Okta"
    assert client.get("/api/v1/risk/vendors/nobody", headers=bearer(read_token)).status_code == 404
    conc = client.get("/api/v1/risk/concentration", headers=bearer(read_token)).json["vendors"]
    assert conc[0]["vendor"] == "CrowdStrike" and conc[0]["routes"]["installed Falcon Sensor"] == 2
    due = client.get("/api/v1/reviews/due", headers=bearer(read_token)).json["due"]
    assert {d["vendor"]: d["state"] for d in due} == {"CrowdStrike": "overdue", "Microsoft": "never"}

    # a new assessment changes the calendar at once (the cached table notices the write)
    today = utcnow().date()
    body = {"vendor": "Microsoft", "assessed_on": today.isoformat(), "assessor": "tprm",
            "scores": {"security": 4, "update_practices": 4, "resilience": 4, "compliance": 5},
            "certifications": [{"name": "ISO 27001", "expires": (today + timedelta(days=30)).isoformat()}],
            "findings": [{"title": "No SLA", "severity": "low", "status": "open"}]}
    created = client.post("/api/v1/assessments", headers=bearer(write_token), json=body)
    assert created.status_code == 201 and created.json["certifications"][0]["status"] == "expiring"
    due = client.get("/api/v1/reviews/due", headers=bearer(read_token)).json["due"]
    assert [d["vendor"] for d in due] == ["CrowdStrike"]
    assert client.post("/api/v1/assessments", headers=bearer(write_token), json=body).status_code == 409
    # 400: the body does not match the OpenAPI document; 422: a rule it marks x-planb-rule.
    for bad, status, field in [({**body, "assessed_on": "2020-01-01", "scores": {"security": 9}}, 400,
                                "scores.security"),
                               ({"vendor": "Nobody"}, 422, "vendor"),
                               ({**body, "assessed_on": "yesterday"}, 400, "assessed_on")]:
        response = client.post("/api/v1/assessments", headers=bearer(write_token), json=bad)
        assert response.status_code == status and response.json["field"] == field
    assert client.post("/api/v1/assessments", headers=bearer(read_token), json=body).status_code == 403
    listed = client.get("/api/v1/assessments?vendor=Microsoft", headers=bearer(read_token)).json
    assert listed["count"] == 1
    engine = make_engine(sqlite_url)
    with so.Session(engine) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(VendorAssessment)) == 3
        assert db.scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                         .where(AuditEvent.entity_type == "vendor_assessment")) == 1
    engine.dispose()


def test_review_pack_api_downloads(app, client, read_token, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    _seed(sqlite_url)
    pack = client.get("/api/v1/review/CrowdStrike", headers=bearer(read_token)).json
    assert pack["vendor"]["name"] == "CrowdStrike"
    assert [c["name"] for c in pack["certificates"]] == ["SOC 2 Type II", "ISO 27001"]
    assert [f["title"] for f in pack["open_findings"]] == ["Content updates bypass staging"]
    md = client.get("/api/v1/review/CrowdStrike?format=markdown", headers=bearer(read_token))
    assert md.headers["Content-Disposition"].startswith('attachment; filename="review-crowdstrike-')
    assert md.mimetype == "text/markdown" and "# Vendor review: CrowdStrike" in md.get_data(as_text=True)
    html = client.get("/api/v1/review/CrowdStrike?format=html", headers=bearer(read_token))
    assert html.mimetype == "text/html" and "attachment" in html.headers["Content-Disposition"]
    assert client.get("/api/v1/review/CrowdStrike?format=pdf", headers=bearer(read_token)).status_code == 400


def test_review_pack_content_and_escaping(db, estate) -> None:  # type: ignore[no-untyped-def]
    from inventory.services import review

    estate["vendors"]["okta"].name = "Okta <script>alert(1)</script> | *Inc*"
    db.commit()
    pack = review.review_pack(db, "CrowdStrike")
    md = review.render_markdown(pack)
    for heading in ("## Risk score", "## Products and where they run", "## Blast radius of a full outage",
                    "## Plan coverage and gaps", "## Untested exposure", "## Assessment history",
                    "## Open findings", "## Certificates expired or expiring within 90 days"):
        assert heading in md
    assert "| Falcon Sensor | agent | yes | 4 | 2 |" in md
    assert "SOC 2 Type II | " in md and "expired" in md and "ISO 27001" in md and "expiring" in md
    assert "Falcon boot-loop recovery" in md
    evil = review.review_pack(db, estate["vendors"]["okta"].id)
    evil_md = review.render_markdown(evil)
    assert "<script>" not in evil_md and "&lt;script&gt;" in evil_md and "\\| \\*Inc\\*" in evil_md
    html = review.render_html(evil)
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<style>" in html and "<link" not in html and " src=" not in html  # self-contained
    assert "Never assessed" not in html  # Okta has an assessment


def test_risk_cli(app, sqlite_url, planb, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _seed(sqlite_url)
    table = planb(sqlite_url, "risk")
    assert table.exit_code == 0 and "CrowdStrike" in table.output and "concentration" in table.output
    rows = list(csv.DictReader(io.StringIO(planb(sqlite_url, "risk", "--format", "csv").output)))
    assert list(rows[0]) == svc.FLAT_COLUMNS
    for row in rows:
        parts = sum(float(row[p]) for p in ("impact", "concentration", "assessment", "updates", "plans"))
        assert float(row["subtotal"]) == pytest.approx(parts, abs=0.011)
    as_json = json.loads(planb(sqlite_url, "risk", "--format", "json").output)
    assert {r["vendor"] for r in as_json} == {"CrowdStrike", "Microsoft", "Okta"}
    one = planb(sqlite_url, "risk", "--vendor", "Okta")
    assert "× 0.85 alternative provider (Entra ID)" in one.output and "× 0.9 exit plan documented" in one.output
    assert planb(sqlite_url, "risk", "--vendor", "Nobody").exit_code == 1

    out = tmp_path / "pack.html"
    review = planb(sqlite_url, "review", "CrowdStrike", "--html", str(out))
    assert review.exit_code == 0 and review.output.startswith("# Vendor review: CrowdStrike")
    assert out.read_text().startswith("<!doctype html>") and "Falcon Sensor" in out.read_text()
    assert planb(sqlite_url, "review", "Nobody").exit_code == 1

    added = planb(sqlite_url, "assessments", "add", "Microsoft", "--security", "4", "--update-practices", "2",
                  "--no-staged-rollouts", "--cert", "SOC 2 Type II:2030-01-01",
                  "--finding", "Patch Tuesday surprises:high", "--finding", "Old: issue:low:closed")
    assert added.exit_code == 0, added.output
    listed = json.loads(planb(sqlite_url, "assessments", "list", "--vendor", "Microsoft", "--format", "json").output)
    assert listed[0]["staged_rollouts"] is False
    assert listed[0]["findings"] == [{"title": "Patch Tuesday surprises", "severity": "high", "status": "open"},
                                     {"title": "Old: issue", "severity": "low", "status": "closed"}]
    bad = planb(sqlite_url, "assessments", "add", "Okta", "--security", "7")
    assert bad.exit_code == 1 and "scores.security" in bad.output
    bad = planb(sqlite_url, "assessments", "add", "Okta", "--cert", "no-date")
    assert bad.exit_code == 1
    due = planb(sqlite_url, "reviews", "due")
    assert "CrowdStrike" in due.output and "overdue" in due.output and "Microsoft" not in due.output


def test_risk_pages(app, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(sqlite_url, evil_name=True)
    editor = app.test_client()
    create_user_and_login(app, editor, "editor")
    page = editor.get("/risk/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Review calendar" in html and "overdue" in html and "How CrowdStrike" in html
    assert "installed Falcon Sensor: 2" in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    review = editor.get(f"/risk/review/{ids['cs']}").get_data(as_text=True)
    assert "Download Markdown" in review and "Blast radius of a full outage" in review
    assert "<style>" not in review  # the page uses the app's stylesheet (CSP: no inline styles)
    download = editor.get(f"/risk/review/{ids['cs']}/download.html")
    assert download.headers["Content-Disposition"].startswith("attachment;") and "<style>" in download.get_data(as_text=True)
    assert editor.get(f"/risk/review/{ids['cs']}/download.pdf").status_code == 404
    assert editor.get("/risk/review/999999").status_code == 404
    exported = editor.get("/risk/export.csv")
    assert exported.mimetype == "text/csv" and exported.get_data(as_text=True).startswith("vendor,score,band,impact")

    # record an assessment through the form
    today = utcnow().date().isoformat()
    form = {"vendor": str(ids["ms"]), "assessed_on": today, "assessor": "me", "score_security": "3",
            "score_update_practices": "", "score_resilience": "4", "score_compliance": "4",
            "staged_rollouts": "false", "customer_update_control": "", "rollback_supported": "true",
            "certifications": "ISO 27001: 2030-01-01", "findings": "high | open | Outage comms slow",
            "next_review_due": "", "notes": ""}
    bad = editor.post("/risk/assessments/new", data={**form, "certifications": "ISO: someday"})
    assert bad.status_code == 422 and "must be a date" in bad.get_data(as_text=True)
    bad = editor.post("/risk/assessments/new", data={**form, "score_security": "6"})
    assert bad.status_code == 422
    ok = editor.post("/risk/assessments/new", data=form)
    assert ok.status_code == 302
    listing = editor.get(f"/risk/assessments?vendor={ids['ms']}").get_data(as_text=True)
    assert "Outage comms slow" in listing and "staged rollouts: no" in listing
    engine = make_engine(sqlite_url)
    with so.Session(engine) as db:
        ms = db.get(Vendor, ids["ms"])
        assert len(ms.assessments) == 1 and ms.assessments[0].staged_rollouts is False
        assert ms.assessments[0].score_update_practices is None
    engine.dispose()


def test_viewer_sees_risk_but_cannot_assess(app, viewer_client, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    _seed(sqlite_url)
    assert viewer_client.get("/risk/").status_code == 200
    assert viewer_client.get("/risk/assessments/new").status_code == 403
    assert viewer_client.post("/risk/assessments/new", data={}).status_code == 403


def test_every_route_of_these_apis_is_in_openapi(app, client, read_token) -> None:  # type: ignore[no-untyped-def]
    from inventory.api.openapi import openapi_path

    spec = client.get("/api/v1/openapi.json", headers=bearer(read_token)).json
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] not in ("api_updates", "api_plans", "api_risk"):
            continue
        path = openapi_path(rule.rule)
        assert path in spec["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = spec["paths"][path][method.lower()]
            assert operation["summary"] and operation["responses"], (path, method)
            checked += 1
    assert checked >= 20
    for name in ("VendorUpdate", "NewUpdateTest", "Plan", "NewPlanEvent", "VendorRisk", "NewAssessment"):
        assert name in spec["components"]["schemas"]
