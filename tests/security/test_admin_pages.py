"""The admin pages: users, tokens (shown once), audit trail with filters and pages."""
from __future__ import annotations

import re

import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.models import ApiToken, AuditEvent, User
from inventory.services import audit
from tests.conftest import bearer, create_user_and_login


def _user_id(app, username: str) -> int:  # type: ignore[no-untyped-def]
    with app.app_context():
        return get_session().scalar(sa.select(User.id).where(User.username == username))


def test_admin_pages_are_for_admins_only(app, viewer_client, editor_client, admin_client):
    for path in ("/admin/", "/admin/users", "/admin/tokens", "/admin/audit"):
        assert viewer_client.get(path).status_code == 403
        assert editor_client.get(path).status_code == 403
        assert admin_client.get(path).status_code == 200
    assert editor_client.post("/admin/users", data={"username": "x", "role": "admin"}).status_code == 403
    with app.app_context():
        assert get_session().scalar(sa.select(User.id).where(User.username == "x")) is None


def test_admin_nav_link_only_for_admins(viewer_client, admin_client):
    assert b'href="/admin/"' not in viewer_client.get("/admin/users").data
    assert b'href="/admin/"' in admin_client.get("/admin/users").data


def test_create_user_shows_generated_password_once_and_it_works(app, admin_client):
    response = admin_client.post("/admin/users", data={"username": "newbie", "role": "editor"})
    assert response.status_code == 201
    html = response.get_data(as_text=True)
    password = re.search(r"<code>([^<]+)</code>", html).group(1)
    assert "shown only this once" in html
    # Not on the next page view, not in a cookie.
    assert password not in admin_client.get("/admin/users").get_data(as_text=True)
    assert all(password not in c for c in response.headers.getlist("Set-Cookie"))
    fresh = app.test_client()
    assert fresh.post("/login", data={"username": "newbie", "password": password}).status_code == 302


def test_create_user_errors_are_shown_and_nothing_is_written(app, admin_client):
    response = admin_client.post("/admin/users", data={"username": "", "role": "editor"})
    assert response.status_code == 400
    assert b"username must be" in response.data
    response = admin_client.post("/admin/users", data={"username": "y", "role": "root"})
    assert response.status_code == 400
    with app.app_context():
        assert get_session().scalar(sa.select(sa.func.count(User.id)).where(User.username.in_(["", "y"]))) == 0


def test_role_change_deactivate_and_reset(app, admin_client):
    target = app.test_client()
    name = create_user_and_login(app, target, "viewer")
    uid = _user_id(app, name)
    assert admin_client.post(f"/admin/users/{uid}/role", data={"role": "editor"}).status_code == 302
    assert target.get("/admin/users").status_code == 302  # role change ended their session
    with app.app_context():
        assert get_session().get(User, uid).role == "editor"
    response = admin_client.post(f"/admin/users/{uid}/password")
    assert response.status_code == 200 and b"shown only this once" in response.data
    assert admin_client.post(f"/admin/users/{uid}/active", data={"active": "0"}).status_code == 302
    with app.app_context():
        assert get_session().get(User, uid).active is False
    assert admin_client.post("/admin/users/999999/role", data={"role": "editor"}).status_code == 404
    assert admin_client.post(f"/admin/users/{uid}/role", data={"role": "god"}).status_code == 400


def test_admin_cannot_lock_themselves_out(app, admin_client):
    with app.app_context():
        me = get_session().scalar(sa.select(User).where(User.role == "admin"))
        my_id = me.id
    response = admin_client.post(f"/admin/users/{my_id}/active", data={"active": "0"})
    assert response.status_code == 400
    response = admin_client.post(f"/admin/users/{my_id}/role", data={"role": "viewer"})
    assert response.status_code == 400
    assert b"last active admin" in response.data


def test_token_created_in_the_ui_is_shown_once_works_and_can_be_revoked(app, admin_client):
    response = admin_client.post("/admin/tokens", data={"name": "ci", "role": "write", "expires_days": "30"})
    assert response.status_code == 201
    plaintext = re.search(r"<code>(planb_[^<]+)</code>", response.get_data(as_text=True)).group(1)
    api = app.test_client()
    assert api.get("/api/v1/openapi.json", headers=bearer(plaintext)).status_code == 200
    listing = admin_client.get("/admin/tokens").get_data(as_text=True)
    assert plaintext not in listing and plaintext[:12] in listing
    with app.app_context():
        token = get_session().scalar(sa.select(ApiToken).where(ApiToken.name == "ci"))
        token_id, creator = token.id, token.created_by_id
        assert token.expires_at is not None
    assert creator is not None
    assert admin_client.post(f"/admin/tokens/{token_id}/revoke").status_code == 302
    assert api.get("/api/v1/openapi.json", headers=bearer(plaintext)).status_code == 401
    assert "revoked" in admin_client.get("/admin/tokens").get_data(as_text=True)
    assert admin_client.post("/admin/tokens/999999/revoke").status_code == 404


def test_token_form_validation(admin_client):
    assert admin_client.post("/admin/tokens", data={"name": "x", "role": "read",
                                                    "expires_days": "soon"}).status_code == 400
    assert admin_client.post("/admin/tokens", data={"name": "", "role": "read"}).status_code == 400
    assert admin_client.post("/admin/tokens", data={"name": "x", "role": "admin"}).status_code == 400


def _seed_events(app, n: int) -> None:  # type: ignore[no-untyped-def]
    with app.app_context():
        db = get_session()
        for i in range(n):
            audit.record(db, actor="alice" if i % 2 else "bob", action="update" if i % 3 else "create",
                         entity_type="plan" if i % 2 else "incident", entity_id=i,
                         summary=f"event {i}", before={"n": i}, after={"n": i + 1})
        db.commit()


def test_audit_trail_pages_through_everything_once(app, admin_client):
    _seed_events(app, 120)
    seen: list[str] = []
    url = "/admin/audit?entity_type=plan"
    pages = 0
    while url:
        html = admin_client.get(url).get_data(as_text=True)
        seen += re.findall(r"event (\d+)", html)
        nxt = re.search(r'rel="next" href="([^"]+)"', html)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
        pages += 1
    assert pages == 2
    assert sorted(int(s) for s in seen) == [i for i in range(120) if i % 2]


def test_audit_trail_filters_and_shows_before_after(app, admin_client):
    _seed_events(app, 12)
    html = admin_client.get("/admin/audit?actor=bob&action=create").get_data(as_text=True)
    found = sorted(int(s) for s in re.findall(r"event (\d+)", html))
    assert found == [i for i in range(12) if i % 2 == 0 and i % 3 == 0]
    assert "&#34;n&#34;: 0" in html or '"n": 0' in html
    assert admin_client.get("/admin/audit?since=not-a-date").status_code == 400
    assert admin_client.get("/admin/audit?since=2000-01-01&until=2000-01-02").status_code == 200
    assert b"No matching events" in admin_client.get("/admin/audit?since=2000-01-01&until=2000-01-02").data


def test_audit_trail_escapes_hostile_text(app, admin_client):
    with app.app_context():
        db = get_session()
        audit.record(db, actor="<script>alert(1)</script>", action="update", entity_type="asset",
                     entity_id="<b>1</b>", summary="<img src=x onerror=alert(1)>",
                     after={"name": "</pre><script>x()</script>"})
        db.commit()
    html = admin_client.get("/admin/audit").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "<img src=x" not in html
    assert "</pre><script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_admin_ui_changes_are_audited_with_the_admin_as_actor(app, admin_client):
    admin_client.post("/admin/users", data={"username": "audited", "role": "viewer"})
    admin_client.post("/admin/tokens", data={"name": "audited-token", "role": "read"})
    with app.app_context():
        kinds = set(get_session().execute(sa.select(AuditEvent.entity_type, AuditEvent.action).where(
            AuditEvent.entity_type.in_(["user", "api_token"]), AuditEvent.actor.like("admin-%"))).all())
    assert kinds >= {("user", "create"), ("api_token", "create")}
