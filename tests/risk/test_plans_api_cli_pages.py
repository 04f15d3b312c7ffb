"""Contingency plans through the API, the CLI and the dashboard (forms with validation and CSRF)."""
from __future__ import annotations

import json
import re

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.models import AuditEvent, ContingencyPlan, PlanEvent
from tests.conftest import bearer, create_user_and_login, make_test_app
from tests.risk.conftest import build_estate


def _seed(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with so.Session(engine) as db:
        data = build_estate(db)
        db.commit()
        ids = {k: p.id for k, p in data["plans"].items()}
    engine.dispose()
    return ids


def _count(url: str, model) -> int:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    with so.Session(engine) as db:
        n = db.scalar(sa.select(sa.func.count()).select_from(model))
    engine.dispose()
    return n


def test_api_plan_lifecycle(app, client, write_token, read_token, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(sqlite_url)
    listed = client.get("/api/v1/plans", headers=bearer(read_token)).json
    assert {p["name"]: p["status"] for p in listed["plans"]} == {
        "Checkout fallback": "current", "Web LB rebuild": "never_exercised",
        "Reporting DB restore": "stale", "Falcon boot-loop recovery": "never_exercised"}
    stale = client.get("/api/v1/plans?status=stale", headers=bearer(read_token)).json
    assert [p["name"] for p in stale["plans"]] == ["Reporting DB restore"]

    body = {"name": "Intranet down", "owner": "it", "rto_minutes": 240, "review_interval_days": 90,
            "runbook_url": "https://wiki.example/intranet", "steps": "1. post on status page",
            "covers": {"assets": ["svc-intranet"], "vendors": ["Okta"]}}
    created = client.post("/api/v1/plans", headers=bearer(write_token), json=body)
    assert created.status_code == 201 and created.json["covers_summary"] == "svc-intranet; Okta"
    assert client.post("/api/v1/plans", headers=bearer(write_token), json=body).status_code == 409
    plan_id = created.json["id"]
    patched = client.patch(f"/api/v1/plans/{plan_id}", headers=bearer(write_token), json={"rto_minutes": 120})
    assert patched.status_code == 200 and patched.json["rto_minutes"] == 120
    assert patched.json["covers_summary"] == "svc-intranet; Okta"  # untouched

    # recording an exercise is one action: event + date + audit
    event = client.post(f"/api/v1/plans/{ids['db']}/events", headers=bearer(write_token),
                        json={"kind": "exercise", "outcome": "partial", "notes": "restore took 5h"})
    assert event.status_code == 201
    assert event.json["event"]["outcome"] == "partial" and event.json["plan"]["last_exercised"]
    review = client.post(f"/api/v1/plans/{ids['db']}/events", headers=bearer(write_token),
                         json={"kind": "review"})
    assert review.status_code == 201 and review.json["plan"]["status"] == "current"
    detail = client.get(f"/api/v1/plans/{ids['db']}", headers=bearer(read_token)).json
    assert [e["kind"] for e in detail["events"]] == ["review", "exercise"]

    events_before, audit_before = _count(sqlite_url, PlanEvent), _count(sqlite_url, AuditEvent)
    # 400: the body does not match the OpenAPI document; 422: a rule it marks x-planb-rule.
    for body, status, field in [({"kind": "exercise"}, 400, "outcome"), ({"kind": "nap"}, 400, "kind"),
                                ({"kind": "review", "at": "3000-01-01T00:00:00Z"}, 422, "at"),
                                ({"kind": "review", "extra": 1}, 400, "extra")]:
        response = client.post(f"/api/v1/plans/{ids['db']}/events", headers=bearer(write_token), json=body)
        assert response.status_code == status and response.json["field"] == field
    for body, status, field in [({"name": "x", "rto_minutes": -1}, 400, "rto_minutes"),
                                ({"name": "x", "runbook_url": "data:text/html,hi"}, 400, "runbook_url"),
                                ({"name": "x", "covers": {"assets": ["nope"]}}, 422, "covers.assets")]:
        response = client.post("/api/v1/plans", headers=bearer(write_token), json=body)
        assert response.status_code == status and response.json["field"] == field
    assert (_count(sqlite_url, PlanEvent), _count(sqlite_url, AuditEvent)) == (events_before, audit_before)
    assert client.post("/api/v1/plans/999999/events", headers=bearer(write_token),
                       json={"kind": "review"}).status_code == 404
    assert client.post(f"/api/v1/plans/{ids['db']}/events", headers=bearer(read_token),
                       json={"kind": "review"}).status_code == 403


def test_api_coverage_and_rto(app, client, read_token, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    _seed(sqlite_url)
    cov = client.get("/api/v1/plans/coverage", headers=bearer(read_token)).json
    assert cov["critical_services"] == 2 and [e["name"] for e in cov["uncovered"]] == ["svc-reporting"]
    assert client.get("/api/v1/plans/coverage?criticality=x", headers=bearer(read_token)).status_code == 400
    rto = client.get("/api/v1/plans/rto", headers=bearer(read_token)).json
    assert rto["at_risk"] == 1 and rto["services"][0]["name"] == "svc-checkout"
    stale = client.get("/api/v1/plans/stale", headers=bearer(read_token)).json
    assert [p["name"] for p in stale["stale"]] == ["Reporting DB restore"]


def test_plans_cli(app, sqlite_url, planb) -> None:  # type: ignore[no-untyped-def]
    _seed(sqlite_url)
    listed = planb(sqlite_url, "plans", "list")
    assert listed.exit_code == 0 and "Reporting DB restore" in listed.output and "stale" in listed.output
    shown = planb(sqlite_url, "plans", "show", "reporting db restore")
    assert "REVIEW OVERDUE" in shown.output and "paper forms" in shown.output
    done = planb(sqlite_url, "plans", "review", "Reporting DB restore", "--notes", "contacts updated")
    assert done.exit_code == 0 and "status now current" in done.output
    ex = planb(sqlite_url, "plans", "exercise", "Web LB rebuild", "--outcome", "passed")
    assert ex.exit_code == 0 and "status now current" in ex.output
    missing = planb(sqlite_url, "plans", "exercise", "Web LB rebuild")
    assert missing.exit_code == 2  # click: --outcome is required
    assert planb(sqlite_url, "plans", "review", "No such plan").exit_code == 1
    history = json.loads(planb(sqlite_url, "plans", "show", "Web LB rebuild", "--format", "json").output)
    assert [(e["kind"], e["outcome"]) for e in history["events"]] == [("exercise", "passed")]
    coverage = planb(sqlite_url, "plans", "coverage")
    assert "no plan: 1" in coverage.output and "svc-reporting" in coverage.output
    rto = planb(sqlite_url, "plans", "rto")
    assert "svc-checkout" in rto.output and "at_risk" in rto.output and "lb-web (120 min" in rto.output
    added = planb(sqlite_url, "plans", "add", "Intranet down", "--rto", "60", "--asset", "svc-intranet",
                  "--runbook", "https://wiki.example/x")
    assert added.exit_code == 0
    bad = planb(sqlite_url, "plans", "add", "Other", "--asset", "nope")
    assert bad.exit_code == 1 and "covers.assets" in bad.output


def test_plan_pages(app, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(sqlite_url)
    editor = app.test_client()
    create_user_and_login(app, editor, "editor")
    page = editor.get("/plans/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for text in ("Reporting DB restore", "stale (review overdue)", "svc-reporting", "cannot be met",
                 "lb-web: 120 min"):
        assert text in html
    detail = editor.get(f"/plans/{ids['db']}").get_data(as_text=True)
    assert "paper forms" in detail and "Review overdue" in detail and "Record" in detail
    stale = editor.get("/plans/?status=stale").get_data(as_text=True)
    assert "Reporting DB restore" in stale and "Checkout fallback</a>" not in stale

    # create through the form; the name shows escaped everywhere
    form = {"name": "<script>alert(1)</script> plan", "owner": "ops", "rto_minutes": "45",
            "review_interval_days": "90", "runbook_url": "https://wiki.example/p", "steps": "a\nb",
            "manual_fallback": "", "cover_assets": "svc-reporting\n", "cover_products": "", "cover_vendors": ""}
    created = editor.post("/plans/new", data=form)
    assert created.status_code == 302
    listing = editor.get("/plans/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in listing and "&lt;script&gt;alert(1)&lt;/script&gt; plan" in listing

    # validation errors are shown next to the field, nothing is saved
    before = _count(sqlite_url, ContingencyPlan)
    for changes, message in [({"name": "Checkout fallback"}, "already exists"),
                             ({"rto_minutes": "0"}, "Number must be between 1 and"),
                             ({"runbook_url": "javascript:alert(1)"}, "must be an http:// or https:// URL"),
                             ({"cover_assets": "nope"}, "no asset with key")]:
        response = editor.post("/plans/new", data={**form, "name": "Another", **changes})
        assert response.status_code == 422
        text = response.get_data(as_text=True)
        assert message in text and 'aria-invalid="true"' in text
    assert _count(sqlite_url, ContingencyPlan) == before

    # edit
    edit_page = editor.get(f"/plans/{ids['lb']}/edit").get_data(as_text=True)
    assert "lb-web" in edit_page  # covers pre-filled
    saved = editor.post(f"/plans/{ids['lb']}/edit", data={**form, "name": "Web LB rebuild", "rto_minutes": "30",
                                                          "cover_assets": "lb-web"})
    assert saved.status_code == 302

    # record an exercise from the plan page
    recorded = editor.post(f"/plans/{ids['lb']}/events", data={"kind": "exercise", "outcome": "failed",
                                                               "notes": "DNS TTL too long"})
    assert recorded.status_code == 302
    detail = editor.get(f"/plans/{ids['lb']}").get_data(as_text=True)
    assert "DNS TTL too long" in detail and "badge-failed" in detail
    no_outcome = editor.post(f"/plans/{ids['lb']}/events", data={"kind": "exercise", "outcome": ""})
    assert no_outcome.status_code == 422 and "outcome is required" in no_outcome.get_data(as_text=True)


def test_viewers_cannot_write_plans(app, viewer_client, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(sqlite_url)
    assert viewer_client.get("/plans/").status_code == 200
    assert "New plan" not in viewer_client.get("/plans/").get_data(as_text=True)
    assert viewer_client.get("/plans/new").status_code == 403
    assert viewer_client.post(f"/plans/{ids['db']}/events", data={"kind": "review"}).status_code == 403


def test_plan_forms_need_csrf(sqlite_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(sqlite_url)
    app = make_test_app(sqlite_url, tmp_path / "csrf-instance")  # CSRF on, as in production
    client = app.test_client()
    create_user_and_login_with_csrf(app, client)
    response = client.post(f"/plans/{ids['db']}/events", data={"kind": "review"})
    assert response.status_code == 400
    assert client.post("/plans/new", data={"name": "x", "review_interval_days": "5"}).status_code == 400
    page = client.get(f"/plans/{ids['db']}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    token = token or re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    ok = client.post(f"/plans/{ids['db']}/events", data={"kind": "review", "csrf_token": token.group(1)})
    assert ok.status_code == 302
    app.extensions["planb_engine"].dispose()


def create_user_and_login_with_csrf(app, client) -> None:  # type: ignore[no-untyped-def]
    from inventory.app_db import get_session
    from inventory.auth import create_user

    with app.app_context():
        db = get_session()
        create_user(db, "csrf-editor", "editor", "correct horse battery staple")
        db.commit()
    login_page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login_page)
    data = {"username": "csrf-editor", "password": "correct horse battery staple"}
    if token:
        data["csrf_token"] = token.group(1)
    assert client.post("/login", data=data).status_code == 302
