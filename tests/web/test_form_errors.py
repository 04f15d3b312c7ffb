"""Dashboard forms: bad input gets a clear error naming the field and writes nothing.

Text no database can store (NUL) is refused, never silently altered (docs/explanation/security.md "Bad input",
``inventory.validation``); numbers, choices, dates and flags outside what the form offers
are refused with a message, not a 500 and not a surprise.
"""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.models import ApiToken, AuditEvent, ContingencyPlan, PlanEvent, User


def _plan_form(**overrides: str) -> dict[str, str]:
    data = {"name": "Falcon outage", "owner": "SecOps", "rto_minutes": "60", "review_interval_days": "180",
            "runbook_url": "", "steps": "", "manual_fallback": "", "cover_assets": "", "cover_products": "",
            "cover_vendors": ""}
    data.update(overrides)
    return data


def _plans(app) -> list[str]:  # type: ignore[no-untyped-def]
    with app.app_context():
        return list(get_session().scalars(sa.select(ContingencyPlan.name)))


def _audit_count(app) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return get_session().scalar(sa.select(sa.func.count(AuditEvent.id))) or 0


def _text(response) -> str:  # type: ignore[no-untyped-def]
    return response.get_data(as_text=True)


# ---------------------------------------------------------------- 1. NUL refused, not stripped

@pytest.mark.parametrize("field, value", [
    ("cover_vendors", "Crowd\x00Strike"),
    ("cover_assets", "service:check\x00-in"),
    ("cover_products", "CrowdStrike/Falcon\x00 Sensor"),
    ("owner", "Sec\x00Ops"),
    ("runbook_url", "https://runbooks.example/\x00x"),
    ("manual_fallback", "paper\x00 forms"),
])
def test_plan_form_refuses_nul_in_every_text_field(app, editor_client, estate, field, value):
    before = _plans(app), _audit_count(app)
    response = editor_client.post("/plans/new", data=_plan_form(**{field: value}))
    assert response.status_code == 422
    html = _text(response)
    assert f"{field}: text must not contain NUL characters" in html
    assert f'id="{field}-error"' in html  # under the input it is about
    assert (_plans(app), _audit_count(app)) == before


def test_nul_free_covers_still_link(app, editor_client, estate):
    """The control: the same covers without the NUL are accepted (so the 422 above is the NUL)."""
    response = editor_client.post("/plans/new", data=_plan_form(
        cover_vendors="CrowdStrike", cover_assets="service:check-in", cover_products="CrowdStrike/Falcon Sensor"))
    assert response.status_code == 302
    assert "Falcon outage" in _plans(app)


def test_plan_edit_refuses_nul_in_covers(app, editor_client, estate):
    plan_id = estate.ids["plan"]
    response = editor_client.post(f"/plans/{plan_id}/edit", data=_plan_form(
        name="Check-in manual fallback", cover_vendors="Crowd\x00Strike"))
    assert response.status_code == 422
    assert "cover_vendors: text must not contain NUL characters" in _text(response)
    with app.app_context():
        plan = get_session().get(ContingencyPlan, plan_id)
        assert all(link.vendor_id is None for link in plan.links)


@pytest.mark.parametrize("name", ["Plan\rB", "Plan\nB", "Plan\r\nB", "Plan\u2028B"])
def test_plan_name_must_be_one_line(app, editor_client, estate, name):
    response = editor_client.post("/plans/new", data=_plan_form(name=name))
    assert response.status_code == 422
    assert "name: text must be on one line" in _text(response)
    assert not any(n.startswith("Plan") and "B" in n for n in _plans(app))


def test_plan_service_refuses_line_break_in_name_and_nul_in_covers(app, estate):
    from inventory.services import plans as svc
    with app.app_context():
        db = get_session()
        with pytest.raises(svc.ValidationError) as info:
            svc.create_plan(db, {"name": "a\rb"}, actor="test")
        assert info.value.field == "name"
        with pytest.raises(svc.ValidationError) as info:
            svc.create_plan(db, {"name": "ok", "covers": {"vendors": ["Crowd\x00Strike"]}}, actor="test")
        assert info.value.field == "covers.vendors" and "NUL" in info.value.message
        db.rollback()


def test_update_and_test_forms_refuse_nul(app, editor_client, estate):
    response = editor_client.post("/updates/new", data={
        "product": str(estate.ids["falcon"]), "version": "7.12", "kind": "patch", "notes": "n\x00o"})
    assert response.status_code == 422
    assert "notes: text must not contain NUL characters" in _text(response)


@pytest.mark.parametrize("name, message", [
    ("a\x00b", "name: text must not contain NUL characters"),
    ("a\rb", "name: text must be on one line"),
    ("a\nb", "name: text must be on one line"),
])
def test_token_name_refused_not_altered(app, admin_client, name, message):
    response = admin_client.post("/admin/tokens", data={"name": name, "role": "read"})
    assert response.status_code == 422
    assert message in _text(response)
    with app.app_context():
        assert get_session().scalar(sa.select(sa.func.count(ApiToken.id))) == 0


def test_token_service_refuses_nul_name(app):
    from inventory.auth import AuthError, create_token
    with app.app_context():
        with pytest.raises(AuthError, match="NUL"):
            create_token(get_session(), "a\x00b", "read")


# ---------------------------------------------------------------- 2. active flag

@pytest.mark.parametrize("value", ["maybe", "", "true", "0 ", "2"])
def test_set_active_accepts_only_the_form_values(app, admin_client, value):
    from inventory.auth import create_user
    with app.app_context():
        db = get_session()
        user, _ = create_user(db, "viewer-x", "viewer", "correct horse battery staple")
        db.commit()
        user_id, version = user.id, user.session_version
    response = admin_client.post(f"/admin/users/{user_id}/active", data={"active": value})
    assert response.status_code == 400
    assert "active must be 1" in _text(response)
    with app.app_context():
        user = get_session().get(User, user_id)
        assert user.active is True and user.session_version == version


def test_set_active_zero_and_one_still_work(app, admin_client):
    from inventory.auth import create_user
    with app.app_context():
        db = get_session()
        user, _ = create_user(db, "viewer-y", "viewer", "correct horse battery staple")
        db.commit()
        user_id = user.id
    assert admin_client.post(f"/admin/users/{user_id}/active", data={"active": "0"}).status_code == 302
    with app.app_context():
        assert get_session().get(User, user_id).active is False
    assert admin_client.post(f"/admin/users/{user_id}/active", data={"active": "1"}).status_code == 302
    with app.app_context():
        assert get_session().get(User, user_id).active is True


# ---------------------------------------------------------------- 3. audit date at the end of the calendar

@pytest.mark.parametrize("query", ["until=9999-12-31", "since=9999-12-31&until=9999-12-31",
                                   "since=0001-01-01&until=9999-12-31"])
def test_audit_filter_last_day_of_the_calendar(admin_client, query):
    response = admin_client.get(f"/admin/audit?{query}")
    assert response.status_code == 200
    assert "out of range" not in _text(response)


def test_audit_until_last_day_lists_events(app, admin_client):
    admin_client.post("/admin/tokens", data={"name": "ci", "role": "read"})  # one audit event at least
    html = _text(admin_client.get("/admin/audit?until=9999-12-31"))
    assert "created read token ci" in html


# ---------------------------------------------------------------- 4. plan event form shows its errors

def test_plan_event_unknown_kind_is_shown_next_to_the_field(app, editor_client, estate):
    plan_id = estate.ids["plan"]
    with app.app_context():
        before = get_session().scalar(sa.select(sa.func.count(PlanEvent.id)))
    response = editor_client.post(f"/plans/{plan_id}/events", data={"kind": "party", "outcome": "", "notes": ""})
    assert response.status_code == 422
    html = _text(response)
    assert re.search(r'<p class="field-error" id="kind-error" role="alert">Not a valid choice\.?</p>', html)
    assert 'aria-describedby="kind-error"' in html
    with app.app_context():
        assert get_session().scalar(sa.select(sa.func.count(PlanEvent.id))) == before


def test_plan_event_notes_error_is_shown(app, editor_client, estate):
    response = editor_client.post(f"/plans/{estate.ids['plan']}/events",
                                  data={"kind": "review", "outcome": "", "notes": "x\x00y"})
    assert response.status_code == 422
    assert "notes: text must not contain NUL characters" in _text(response)


# ---------------------------------------------------------------- 5. long names wrap

def test_css_wraps_long_user_text_in_headings_and_cells(client):
    response = client.get("/static/planb.css")
    assert response.status_code == 200
    css = re.sub(r"/\*.*?\*/", "", response.get_data(as_text=True), flags=re.S)
    selectors = set()
    for group, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        if re.search(r"overflow-wrap\s*:\s*anywhere", body):
            selectors |= {s.strip() for s in group.split(",")}
    assert {"h1", "h2", "td", "th"} <= selectors


# ---------------------------------------------------------------- 6. integer fields: 0 is a number

@pytest.mark.parametrize("field, value, message", [
    ("review_interval_days", "0", "Number must be between 1 and 3650."),
    ("rto_minutes", "0", "Number must be between 1 and 525600."),
    ("review_interval_days", "\u0661\u0662", "Not a valid integer value."),  # Arabic-Indic 12
    ("rto_minutes", "\u0661\u0662", "Not a valid integer value."),
])
def test_plan_integer_fields(app, editor_client, estate, field, value, message):
    response = editor_client.post("/plans/new", data=_plan_form(**{field: value}))
    assert response.status_code == 422
    html = _text(response)
    assert message in html and "This field is required." not in html
    assert "Falcon outage" not in _plans(app)


def test_review_interval_left_empty_is_required(editor_client, estate):
    response = editor_client.post("/plans/new", data=_plan_form(review_interval_days=""))
    assert response.status_code == 422
    assert "This field is required." in _text(response)


# ---------------------------------------------------------------- 7. token expiry in whole days

@pytest.mark.parametrize("days", ["1e-9", "0.5", "0", "-1", "nan", "inf", "3661", "\u0661"])
def test_token_expiry_must_be_whole_days(app, admin_client, days):
    response = admin_client.post("/admin/tokens", data={"name": "ci", "role": "read", "expires_days": days})
    assert response.status_code == 400
    assert "whole number of days" in _text(response) or "expiry" in _text(response)
    with app.app_context():
        assert get_session().scalar(sa.select(sa.func.count(ApiToken.id))) == 0


def test_token_expiry_in_days(app, admin_client):
    response = admin_client.post("/admin/tokens", data={"name": "ci", "role": "read", "expires_days": "1"})
    assert response.status_code == 201
    with app.app_context():
        token = get_session().scalar(sa.select(ApiToken))
        assert token.expires_at - token.created_at >= timedelta(hours=23, minutes=59)


def test_token_service_refuses_fractional_days(app):
    from inventory.auth import AuthError, create_token
    with app.app_context():
        with pytest.raises(AuthError, match="whole number of days"):
            create_token(get_session(), "x", "read", expires_in_days=1e-9)


# ---------------------------------------------------------------- incidents: one-line title, note limit

@pytest.mark.parametrize("title", ["Falcon\routage", "Falcon\noutage"])
def test_incident_title_must_be_one_line(app, editor_client, estate, title):
    from inventory.models import Incident
    scope = {"vendor": "CrowdStrike", "products": "Falcon Sensor", "version": ">=7.11", "os": "windows"}
    response = editor_client.post("/incidents/declare", data={**scope, "title": title}, follow_redirects=True)
    assert "title: text must be on one line" in _text(response)
    with app.app_context():
        assert get_session().scalar(sa.select(sa.func.count(Incident.id))) == 0


def test_recovery_note_limit_agrees_with_the_server(app, editor_client, estate):
    from inventory.services import incidents as service
    scope = {"vendor": "CrowdStrike", "products": "Falcon Sensor", "version": ">=7.11", "os": "windows"}
    location = editor_client.post("/incidents/declare", data={**scope, "title": "t"}).headers["Location"]
    html = _text(editor_client.get(location))
    assert f'name="note" maxlength="{service.MAX_TEXT}"' in html


# ---------------------------------------------------------------- styled error pages, unknown ring

def test_unknown_ring_is_404(viewer_client, estate):
    assert viewer_client.get("/updates/rings/bogus").status_code == 404
    assert viewer_client.get("/updates/rings/canary").status_code == 200
    assert viewer_client.get("/updates/rings/none").status_code == 200


@pytest.mark.parametrize("path", ["/plans/999999", "/updates/rings/bogus", "/incidents/999999",
                                  "/admin/users/999999/active", "/no/such/page", "/assets/9223372036854775808"])
def test_view_404_uses_the_app_error_page(admin_client, path):
    method = admin_client.post if path.endswith("/active") else admin_client.get
    response = method(path, data={"active": "1"}) if method == admin_client.post else method(path)
    assert response.status_code == 404
    html = _text(response)
    assert "planb.css" in html and "<h1>404 Not Found</h1>" in html


def test_view_400_uses_the_app_error_page(app, editor_client, estate):
    scope = {"vendor": "CrowdStrike", "products": "Falcon Sensor", "version": ">=7.11", "os": "windows"}
    location = editor_client.post("/incidents/declare", data={**scope, "title": "t"}).headers["Location"]
    response = editor_client.post(f"{location}/recover", data={"asset": "not-a-number"})
    assert response.status_code == 400
    assert "planb.css" in _text(response) and "<h1>400 Bad Request</h1>" in _text(response)


def test_api_404_stays_json(client, read_token):
    from tests.conftest import bearer
    response = client.get("/api/v1/plans/999999", headers=bearer(read_token))
    assert response.status_code == 404 and response.is_json
