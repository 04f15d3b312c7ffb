"""Logins, sessions and roles on the web side."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.auth import AuthError, create_user, get_user, reset_password, set_active, set_role
from inventory.models import AuditEvent, User
from tests.conftest import create_user_and_login

PASSWORD = "correct horse battery staple"


def _session_cookie(client) -> str:  # type: ignore[no-untyped-def]
    cookie = client.get_cookie("planb_session")
    assert cookie is not None
    return cookie.value


def test_password_is_stored_as_scrypt_hash(probe_app):
    with probe_app.app_context():
        db = get_session()
        user, plain = create_user(db, "alice", "viewer")
        db.commit()
        stored = db.scalar(sa.select(User.password_hash).where(User.username == "alice"))
    assert stored.startswith("scrypt:")
    assert plain not in stored
    assert len(plain) >= 10


def test_wrong_password_is_refused_with_a_message(probe_app):
    client = probe_app.test_client()
    with probe_app.app_context():
        db = get_session()
        create_user(db, "bob", "viewer", PASSWORD)
        db.commit()
    response = client.post("/login", data={"username": "bob", "password": "wrong password!"})
    assert response.status_code == 401
    assert b"wrong password" in response.data
    assert client.get("/_probe/read").status_code == 302
    response = client.post("/login", data={"username": "nobody", "password": PASSWORD})
    assert response.status_code == 401


def test_logout_ends_the_session_and_a_replayed_cookie_is_refused(probe_app):
    client = probe_app.test_client()
    create_user_and_login(probe_app, client, "viewer")
    assert client.get("/_probe/read").status_code == 200
    stolen = _session_cookie(client)

    response = client.post("/logout")
    assert response.status_code == 302
    assert client.get("/_probe/read").status_code == 302

    attacker = probe_app.test_client()
    attacker.set_cookie("planb_session", stolen)
    response = attacker.get("/_probe/read")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_session_ends_after_session_hours_even_while_used(probe_app):
    client = probe_app.test_client()
    create_user_and_login(probe_app, client, "viewer")
    assert client.get("/_probe/read").status_code == 200
    hours = probe_app.config["SESSION_HOURS"]
    with client.session_transaction() as sess:
        sess["iat"] = int(time.time() - hours * 3600 - 5)
    assert client.get("/_probe/read").status_code == 302


def test_session_cookie_lifetime_is_bounded(probe_app):
    client = probe_app.test_client()
    create_user_and_login(probe_app, client, "viewer")
    cookie = client.get_cookie("planb_session")
    assert cookie.expires is not None
    assert cookie.expires.timestamp() - time.time() <= probe_app.config["SESSION_HOURS"] * 3600 + 5


@pytest.mark.parametrize("change", ["role", "password", "deactivate"])
def test_account_changes_end_existing_sessions(probe_app, change):
    client = probe_app.test_client()
    name = create_user_and_login(probe_app, client, "editor")
    assert client.post("/_probe/write").status_code == 200
    with probe_app.app_context():
        db = get_session()
        user = get_user(db, name)
        if change == "role":
            set_role(db, user, "viewer")
        elif change == "password":
            reset_password(db, user)
        else:
            set_active(db, user, False)
        db.commit()
    # The old cookie still carries the old rights: it must not be honoured any more.
    assert client.post("/_probe/write").status_code == 401
    assert client.get("/_probe/read").status_code == 302


def test_deactivated_user_cannot_log_in(probe_app):
    with probe_app.app_context():
        db = get_session()
        user, _ = create_user(db, "carol", "editor", PASSWORD)
        set_active(db, user, False)
        db.commit()
    response = probe_app.test_client().post("/login", data={"username": "carol", "password": PASSWORD})
    assert response.status_code == 401


def test_last_active_admin_cannot_be_demoted_or_deactivated(probe_app):
    with probe_app.app_context():
        db = get_session()
        admin, _ = create_user(db, "root", "admin")
        with pytest.raises(AuthError, match="last active admin"):
            set_role(db, admin, "viewer")
        with pytest.raises(AuthError, match="last active admin"):
            set_active(db, admin, False)
        other, _ = create_user(db, "root2", "admin")
        set_role(db, admin, "viewer")  # another admin remains: allowed
        assert admin.role == "viewer" and other.role == "admin"


@pytest.mark.parametrize("username,password,message", [
    ("", PASSWORD, "username"),
    ("x" * 101, PASSWORD, "username"),
    ("tab\tname", PASSWORD, "control characters"),
    ("admin\u202enimda", PASSWORD, "control characters"),
    ("zero\u200bwidth", PASSWORD, "invisible"),
    ("dave", "short", "at least 10"),
])
def test_create_user_validates(probe_app, username, password, message):
    with probe_app.app_context():
        db = get_session()
        with pytest.raises(AuthError, match=message):
            create_user(db, username, "viewer", password)


def test_usernames_differing_only_in_case_are_one_name(probe_app):
    with probe_app.app_context():
        db = get_session()
        create_user(db, "Dana", "viewer", PASSWORD)
        db.commit()
        for other in ("dana", "DANA", "Dana"):
            with pytest.raises(AuthError, match="'Dana' already exists"):
                create_user(db, other, "viewer", PASSWORD)
        create_user(db, "Danae", "viewer", PASSWORD)   # a different name is fine


def test_user_changes_are_audited_without_secrets(probe_app):
    with probe_app.app_context():
        db = get_session()
        user, plain = create_user(db, "erin", "viewer", actor="admin1")
        set_role(db, user, "editor", actor="admin1")
        new_plain = reset_password(db, user, actor="admin1")
        set_active(db, user, False, actor="admin1")
        db.commit()
        events = db.scalars(sa.select(AuditEvent).where(AuditEvent.entity_type == "user")
                            .order_by(AuditEvent.id)).all()
        assert [e.action for e in events] == ["create", "update", "reset-password", "deactivate"]
        assert all(e.actor == "admin1" and e.entity_id == str(user.id) for e in events)
        assert events[1].before["role"] == "viewer" and events[1].after["role"] == "editor"
        assert events[3].before["active"] is True and events[3].after["active"] is False
        dump = repr([(e.before, e.after, e.summary) for e in events])
        assert plain not in dump and new_plain not in dump and "scrypt" not in dump


@pytest.mark.parametrize("target,allowed", [
    ("/_probe/read", True),
    ("/_probe/read?x=1", True),
    ("//evil.example/", False),
    ("/\t/evil.example/", False),
    ("/\\evil.example", False),
    ("https://evil.example/", False),
    ("javascript:alert(1)", False),
])
def test_login_next_is_never_an_open_redirect(probe_app, target, allowed):
    with probe_app.app_context():
        db = get_session()
        create_user(db, "frank", "viewer", PASSWORD)
        db.commit()
    client = probe_app.test_client()
    response = client.post("/login", query_string={"next": target},
                           data={"username": "frank", "password": PASSWORD})
    assert response.status_code == 302
    location = response.headers["Location"]
    if allowed:
        assert location == target
    else:
        assert location == "/"


def test_viewer_cannot_write_editor_can_admin_only_for_admins(probe_app):
    viewer, editor, admin = (probe_app.test_client() for _ in range(3))
    create_user_and_login(probe_app, viewer, "viewer")
    create_user_and_login(probe_app, editor, "editor")
    create_user_and_login(probe_app, admin, "admin")
    assert viewer.post("/_probe/write").status_code == 403
    assert editor.post("/_probe/write").status_code == 200
    assert editor.get("/_probe/admin").status_code == 403
    assert admin.get("/_probe/admin").status_code == 200
    assert viewer.post("/_probe/admin").status_code == 403
    with probe_app.app_context():
        count = get_session().scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                                     .where(AuditEvent.action == "probe"))
    assert count == 1  # only the editor's write happened


def test_anonymous_post_is_refused_without_running_the_view(probe_app):
    response = probe_app.test_client().post("/_probe/write")
    assert response.status_code == 401
    with probe_app.app_context():
        assert get_session().scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 0
