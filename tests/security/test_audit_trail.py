"""Each kind of change is recorded once in the audit trail, with who, what and before/after:
imports, plans (create, update, events), update tests, assessments, incidents, users, tokens."""
from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.models import AuditEvent, ContingencyPlan, Vendor
from tests.conftest import bearer, create_api_token, create_user_and_login
from tests.reliability.helpers import SMALL_ESTATE


@pytest.fixture
def world(app):  # type: ignore[no-untyped-def]
    token = create_api_token(app, "write")
    api = app.test_client()
    editor = app.test_client()
    create_user_and_login(app, editor, "editor", username="ed")
    admin = app.test_client()
    create_user_and_login(app, admin, "admin", username="boss")
    return {"app": app, "api": api, "h": bearer(token), "editor": editor, "admin": admin,
            "token_actor": "token:" + _token_name(app)}


def _token_name(app) -> str:  # type: ignore[no-untyped-def]
    from inventory.models import ApiToken
    with app.app_context():
        return get_session().scalar(sa.select(ApiToken.name).order_by(ApiToken.id.desc()))


def _events(app, since: int = 0) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with app.app_context():
        db = get_session()
        events = db.scalars(sa.select(AuditEvent).where(AuditEvent.id > since).order_by(AuditEvent.id)).all()
        for e in events:
            db.expunge(e)
        return list(events)


def _last_id(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return get_session().scalar(sa.select(sa.func.coalesce(sa.func.max(AuditEvent.id), 0)))


def _one(app, since: int) -> AuditEvent:  # type: ignore[no-untyped-def]
    events = _events(app, since)
    assert len(events) == 1, [(e.entity_type, e.action) for e in events]
    return events[0]


def test_estate_import_is_audited(world):
    app, since = world["app"], _last_id(world["app"])
    response = world["api"].post("/api/v1/estate", json=SMALL_ESTATE, headers=world["h"])
    assert response.status_code == 200, response.get_json()
    event = _one(app, since)
    assert (event.entity_type, event.action, event.actor) == ("estate", "import", world["token_actor"])
    assert event.after and "created" in str(event.after)
    # A dry run changes nothing, so records nothing.
    since = _last_id(app)
    world["api"].post("/api/v1/estate?dry_run=true", json=SMALL_ESTATE, headers=world["h"])
    assert _events(app, since) == []


def test_plan_changes_are_audited_with_before_and_after(world):
    app, api, h = world["app"], world["api"], world["h"]
    api.post("/api/v1/estate", json=SMALL_ESTATE, headers=h)
    since = _last_id(app)
    response = api.post("/api/v1/plans", json={"name": "Fallback", "owner": "a", "rto_minutes": 60,
                                               "covers": {"assets": ["vm:0"]}}, headers=h)
    assert response.status_code == 201, response.get_json()
    plan_id = response.get_json()["id"]
    created = _one(app, since)
    assert (created.entity_type, created.action, created.entity_id) == ("contingency_plan", "create", str(plan_id))

    since = _last_id(app)
    assert api.patch(f"/api/v1/plans/{plan_id}", json={"owner": "b"}, headers=h).status_code == 200
    updated = _one(app, since)
    assert updated.action == "update" and updated.before["owner"] == "a" and updated.after["owner"] == "b"

    since = _last_id(app)
    response = api.post(f"/api/v1/plans/{plan_id}/events", json={"kind": "exercise", "outcome": "passed"},
                        headers=h)
    assert response.status_code == 201, response.get_json()
    event = _one(app, since)
    assert event.entity_type == "contingency_plan" and event.action == "record-exercise"
    assert event.actor == world["token_actor"]

    # A refused change records nothing.
    since = _last_id(app)
    assert api.patch(f"/api/v1/plans/{plan_id}", json={"runbook_url": "javascript:alert(1)"},
                     headers=h).status_code in (400, 422)
    assert _events(app, since) == []


def test_update_tests_are_audited(world):
    app, api, h = world["app"], world["api"], world["h"]
    api.post("/api/v1/estate", json=SMALL_ESTATE, headers=h)
    since = _last_id(app)
    response = api.post("/api/v1/updates", json={"product": "CrowdStrike/Falcon Sensor", "version": "7.12",
                                                 "kind": "content"}, headers=h)
    assert response.status_code == 201, response.get_json()
    update_id = response.get_json()["id"]
    assert _one(app, since).entity_type == "vendor_update"
    since = _last_id(app)
    response = api.post(f"/api/v1/updates/{update_id}/tests", json={"ring": "canary", "status": "passed"},
                        headers=h)
    assert response.status_code in (200, 201), response.get_json()
    event = _one(app, since)
    assert (event.entity_type, event.action) == ("update_test", "record-test")


def test_assessments_are_audited(world):
    app, api, h = world["app"], world["api"], world["h"]
    api.post("/api/v1/estate", json=SMALL_ESTATE, headers=h)
    since = _last_id(app)
    response = api.post("/api/v1/assessments", json={"vendor": "CrowdStrike", "assessed_on": "2024-08-01",
                                                     "scores": {"security": 3}}, headers=h)
    assert response.status_code == 201, response.get_json()
    event = _one(app, since)
    assert (event.entity_type, event.action) == ("vendor_assessment", "create")


def test_incident_declaration_and_resolution_are_audited(world):
    app, editor = world["app"], world["editor"]
    world["api"].post("/api/v1/estate", json=SMALL_ESTATE, headers=world["h"])
    since = _last_id(app)
    response = editor.post("/incidents/declare", data={"title": "Falcon crash", "vendor": "CrowdStrike"})
    assert response.status_code == 302, response.data
    incident_id = int(re.search(r"/incidents/(\d+)", response.headers["Location"]).group(1))
    event = _one(app, since)
    assert (event.entity_type, event.action, event.actor) == ("incident", "incident.declare", "ed")
    assert event.after["title"] == "Falcon crash"
    since = _last_id(app)
    assert editor.post(f"/incidents/{incident_id}/resolve").status_code == 302
    assert _one(app, since).action == "incident.resolve"


def test_user_and_token_changes_are_audited(world):
    app, admin = world["app"], world["admin"]
    since = _last_id(app)
    admin.post("/admin/users", data={"username": "newbie", "role": "viewer"})
    assert (_one(app, since).entity_type, _one(app, since).actor) == ("user", "boss")
    with app.app_context():
        from inventory.models import User
        uid = get_session().scalar(sa.select(User.id).where(User.username == "newbie"))
    for path, data, action in ((f"/admin/users/{uid}/role", {"role": "editor"}, "update"),
                               (f"/admin/users/{uid}/password", {}, "reset-password"),
                               (f"/admin/users/{uid}/active", {"active": "0"}, "deactivate")):
        since = _last_id(app)
        admin.post(path, data=data)
        assert _one(app, since).action == action
    since = _last_id(app)
    admin.post("/admin/tokens", data={"name": "ci", "role": "read"})
    token_event = _one(app, since)
    assert (token_event.entity_type, token_event.action) == ("api_token", "create")
    since = _last_id(app)
    admin.post(f"/admin/tokens/{token_event.entity_id}/revoke")
    assert _one(app, since).action == "revoke"


def test_reads_record_nothing(world):
    app = world["app"]
    world["api"].post("/api/v1/estate", json=SMALL_ESTATE, headers=world["h"])
    since = _last_id(app)
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and not rule.arguments and rule.endpoint != "static":
            client = world["api"] if rule.rule.startswith("/api/") else world["admin"]
            client.get(rule.rule, headers=world["h"] if rule.rule.startswith("/api/") else {})
    assert _events(app, since) == []
    with app.app_context():
        assert get_session().scalar(sa.select(sa.func.count(Vendor.id))) >= 1
        assert get_session().scalar(sa.select(sa.func.count(ContingencyPlan.id))) == 1


def test_incidents_and_scenarios_through_the_api_are_audited(world):
    app, api, h = world["app"], world["api"], world["h"]
    api.post("/api/v1/estate", json=SMALL_ESTATE, headers=h)
    since = _last_id(app)
    response = api.post("/api/v1/scenarios", json={"name": "Falcon outage", "scope": {"vendor": "CrowdStrike"}},
                        headers=h)
    assert response.status_code in (200, 201), response.get_json()
    event = _one(app, since)
    assert event.entity_type == "scenario" and event.actor == world["token_actor"]

    since = _last_id(app)
    response = api.post("/api/v1/incidents", json={"title": "Falcon crash", "scope": {"vendor": "CrowdStrike"}},
                        headers=h)
    assert response.status_code in (200, 201), response.get_json()
    incident_id = response.get_json()["id"]
    assert _one(app, since).action == "incident.declare"

    with app.app_context():
        from inventory.models import IncidentAsset
        asset_id = get_session().scalar(sa.select(IncidentAsset.asset_id)
                                        .where(IncidentAsset.incident_id == incident_id).limit(1))
    since = _last_id(app)
    response = api.post(f"/api/v1/incidents/{incident_id}/recovered", json={"asset_ids": [asset_id]}, headers=h)
    assert response.status_code in (200, 201), response.get_json()
    assert _one(app, since).action == "incident.recover"
    since = _last_id(app)
    assert api.post(f"/api/v1/incidents/{incident_id}/resolve", headers=h).status_code in (200, 201)
    assert _one(app, since).action == "incident.resolve"
