"""Editing a vendor's tier, alternative and exit plan: form, API, audit, and the risk score."""
from __future__ import annotations

import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.estate.importer import import_estate
from inventory.models import AuditEvent, Vendor
from inventory.services.risk import vendor_risk
from tests.conftest import bearer, create_user_and_login


def _vendor_id(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        db = get_session()
        import_estate(db, {"version": 1,
                           "vendors": [{"name": "Okta", "tier": "high", "products": [{"name": "Verify"}]}],
                           "assets": [{"key": "host:a", "name": "a", "kind": "vm", "criticality": "critical",
                                       "software": [{"vendor": "Okta", "product": "Verify"}]}]},
                      source_name="t.yaml", actor="test")
        db.commit()
        return db.scalar(sa.select(Vendor.id).where(Vendor.name == "Okta"))


def _state(app, vendor_id: int) -> tuple:  # type: ignore[no-untyped-def]
    with app.app_context():
        v = get_session().get(Vendor, vendor_id)
        return v.tier, v.has_alternative, v.alternative, v.exit_plan_documented, v.exit_plan_url


def test_editor_edits_through_the_form_and_the_score_reflects_it(app):
    vendor_id = _vendor_id(app)
    with app.app_context():
        before = vendor_risk(get_session(), vendor_id)
    client = app.test_client()
    create_user_and_login(app, client, "editor")
    assert client.get(f"/vendors/{vendor_id}/edit").status_code == 200
    response = client.post(f"/vendors/{vendor_id}/edit", data={
        "tier": "critical", "has_alternative": "y", "alternative": "Entra ID (two weeks)",
        "exit_plan_documented": "y", "exit_plan_url": "https://wiki.example/okta-exit"})
    assert response.status_code == 302
    assert _state(app, vendor_id) == ("critical", True, "Entra ID (two weeks)", True,
                                      "https://wiki.example/okta-exit")
    with app.app_context():
        db = get_session()
        after = vendor_risk(db, vendor_id)
        events = [(e.before, e.after) for e in
                  db.scalars(sa.select(AuditEvent).where(AuditEvent.entity_type == "vendor"))]
    assert after["modifier"] < before["modifier"]
    assert len(events) == 1
    assert events[0][0]["has_alternative"] is False and events[0][1]["has_alternative"] is True


def test_form_refuses_a_non_http_link_and_changes_nothing(app):
    vendor_id = _vendor_id(app)
    client = app.test_client()
    create_user_and_login(app, client, "editor")
    before = _state(app, vendor_id)
    response = client.post(f"/vendors/{vendor_id}/edit", data={
        "tier": "low", "exit_plan_documented": "y", "exit_plan_url": "javascript:alert(1)"})
    assert response.status_code == 422
    assert b"http" in response.data
    assert _state(app, vendor_id) == before


def test_viewer_cannot_edit(app):
    vendor_id = _vendor_id(app)
    client = app.test_client()
    create_user_and_login(app, client, "viewer")
    assert client.post(f"/vendors/{vendor_id}/edit", data={"tier": "low"}).status_code == 403


def test_api_patch(app, write_token, read_token):
    vendor_id = _vendor_id(app)
    client = app.test_client()
    response = client.patch(f"/api/v1/vendors/{vendor_id}", json={"has_alternative": True},
                            headers=bearer(write_token))
    assert response.status_code == 200 and response.get_json()["has_alternative"] is True
    bad = client.patch(f"/api/v1/vendors/{vendor_id}", json={"tier": "enormous"}, headers=bearer(write_token))
    assert bad.status_code == 400 and bad.get_json()["field"] == "tier"
    unknown = client.patch(f"/api/v1/vendors/{vendor_id}", json={"name": "Evil"}, headers=bearer(write_token))
    assert unknown.status_code == 400 and unknown.get_json()["field"] == "name"
    assert client.patch(f"/api/v1/vendors/{vendor_id}", json={"tier": "low"},
                        headers=bearer(read_token)).status_code == 403
    assert client.patch("/api/v1/vendors/999999", json={"tier": "low"}, headers=bearer(write_token)).status_code == 404
    assert _state(app, vendor_id)[:2] == ("high", True)
