"""Single sign-on against a real (loopback) OpenID Connect provider that signs RS256 ID tokens.

The app's test client plays the browser on Plan B's side; ``requests`` plays it on the
provider's side (its login form), so every leg is a real HTTP exchange: discovery, the
authorization redirect with state/nonce/PKCE, the code exchange with the client secret
and code verifier, the JWKS, and the ID token's validation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa

from inventory import config
from inventory.app_db import get_session
from inventory.auth import create_user
from inventory.models import AuditEvent, ExternalIdentity, User
from tests.conftest import make_test_app
from tests.security.oidc_provider import CLIENT_ID, CLIENT_SECRET, IdpUser, Provider, RunningProvider

ROLE_MAP = {"planb-admins": "admin", "planb-editors": "editor"}


@pytest.fixture
def idp() -> Iterator[Provider]:
    provider = Provider(users={
        "alice@example.com": IdpUser("alice-pass", "sub-alice", "alice@example.com", ["planb-admins", "staff"]),
        "erin@example.com": IdpUser("erin-pass", "sub-erin", "erin@example.com", ["/planb-editors"]),
        "nobody@example.com": IdpUser("nobody-pass", "sub-nobody", "nobody@example.com", ["staff"]),
    })
    with RunningProvider(provider) as running:
        yield running


def sso_app(sqlite_url: str, tmp_path: Path, idp: Provider, **overrides: Any):  # type: ignore[no-untyped-def]
    settings = {"OIDC_ISSUER": idp.issuer, "OIDC_CLIENT_ID": CLIENT_ID, "OIDC_CLIENT_SECRET": CLIENT_SECRET,
                "OIDC_ROLE_MAP": ROLE_MAP, "OIDC_PROVIDER_NAME": "Test IdP", "WTF_CSRF_ENABLED": False}
    settings.update(overrides)
    return make_test_app(sqlite_url, tmp_path / "instance", **settings)


@pytest.fixture
def app(sqlite_url: str, tmp_path: Path, idp: Provider):  # type: ignore[no-untyped-def]
    application = sso_app(sqlite_url, tmp_path, idp)
    yield application
    application.extensions["planb_engine"].dispose()


def sign_in(client, username: str, password: str, next_url: str | None = None):  # type: ignore[no-untyped-def]
    """Start at Plan B, log in on the provider's form, come back: Plan B's final answer."""
    start = client.get("/login/sso" + (f"?next={next_url}" if next_url else ""))
    assert start.status_code == 302, start.data
    authorize = start.headers["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["state"][0] and query["nonce"][0] and "openid" in query["scope"][0].split()
    form = {k: v[0] for k, v in query.items()} | {"username": username, "password": password}
    answer = requests.post(authorize.split("?")[0], data=form, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    assert back.path == "/login/sso/callback"
    return client.get(f"{back.path}?{back.query}")


def _users(app) -> dict[str, tuple[str, bool]]:  # type: ignore[no-untyped-def]
    with app.app_context():
        return {u.username: (u.role, u.active) for u in get_session().scalars(sa.select(User))}


def _actions(app, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with app.app_context():
        events = list(get_session().scalars(sa.select(AuditEvent).where(AuditEvent.action == action)))
        get_session().expunge_all()  # readable after the context's session is gone
        return events


def test_login_page_offers_the_provider(app):  # type: ignore[no-untyped-def]
    page = app.test_client().get("/login").get_data(as_text=True)
    assert "Sign in with Test IdP" in page
    assert 'name="password"' in page  # local accounts stay, by default for everyone


def test_first_login_creates_the_user_with_the_mapped_role(app, idp):  # type: ignore[no-untyped-def]
    client = app.test_client()
    response = sign_in(client, "alice@example.com", "alice-pass", next_url="/incidents/")
    assert response.status_code == 302 and response.headers["Location"] == "/incidents/"
    assert client.get("/admin/").status_code == 200  # planb-admins -> admin
    assert _users(app) == {"alice": ("admin", True)}
    with app.app_context():
        identity = get_session().scalar(sa.select(ExternalIdentity))
        assert (identity.issuer, identity.subject) == (idp.issuer, "sub-alice")
        assert identity.groups == ["planb-admins", "staff"]
    # The code was exchanged with the PKCE verifier and the client secret (checked by the provider).
    assert idp.token_requests[-1]["code_verifier"]
    assert [e.summary for e in _actions(app, "sso-login")] == ["alice signed in through Test IdP as admin"]
    assert len(_actions(app, "create")) == 1


def test_role_follows_the_provider_on_each_login(app, idp):  # type: ignore[no-untyped-def]
    sign_in(app.test_client(), "erin@example.com", "erin-pass")
    assert _users(app) == {"erin": ("editor", True)}  # '/planb-editors' (a Keycloak full path) matches
    first = app.test_client()
    sign_in(first, "erin@example.com", "erin-pass")
    assert first.get("/plans/").status_code == 200
    idp.users["erin@example.com"].groups = ["planb-admins"]
    second = app.test_client()
    sign_in(second, "erin@example.com", "erin-pass")
    assert _users(app) == {"erin": ("admin", True)}
    assert second.get("/admin/").status_code == 200
    # The session opened with the old role ended when the role changed.
    assert first.get("/plans/").status_code == 302
    changes = [e for e in _actions(app, "update") if e.entity_type == "user"]
    assert changes and "identity provider" in changes[-1].summary


def test_a_user_in_no_mapped_group_gets_the_default_role(app):  # type: ignore[no-untyped-def]
    client = app.test_client()
    assert sign_in(client, "nobody@example.com", "nobody-pass").status_code == 302
    assert _users(app) == {"nobody": ("viewer", True)}
    assert client.get("/plans/new").status_code == 403


def test_a_user_in_no_mapped_group_is_refused_when_the_default_is_none(sqlite_url, tmp_path, idp):  # type: ignore[no-untyped-def]
    app = sso_app(sqlite_url, tmp_path, idp, OIDC_DEFAULT_ROLE="none")
    client = app.test_client()
    response = sign_in(client, "nobody@example.com", "nobody-pass")
    assert response.status_code == 401
    assert "no group that gives access" in response.get_data(as_text=True)
    assert _users(app) == {}
    assert client.get("/").status_code == 302  # not logged in
    assert len(_actions(app, "sso-refused")) == 1
    # A known user taken out of every mapped group is refused too, and their sessions end.
    alice = app.test_client()
    sign_in(alice, "alice@example.com", "alice-pass")
    idp.users["alice@example.com"].groups = ["staff"]
    assert sign_in(app.test_client(), "alice@example.com", "alice-pass").status_code == 401
    assert alice.get("/").status_code == 302
    app.extensions["planb_engine"].dispose()


@pytest.mark.parametrize("tamper, reason", [
    ({"aud": "another-app"}, "another application"),
    ({"exp": 1_000_000_000, "iat": 999_999_000}, "expired"),
    ({"nonce": "not-the-one-we-sent"}, "nonce"),
    ({"iss": "https://evil.example"}, "another issuer"),
])
def test_bad_id_tokens_are_refused(app, idp, tamper, reason):  # type: ignore[no-untyped-def]
    idp.tamper = tamper
    client = app.test_client()
    response = sign_in(client, "alice@example.com", "alice-pass")
    assert response.status_code == 401
    assert reason in response.get_data(as_text=True)
    assert _users(app) == {}
    assert client.get("/").status_code == 302
    assert len(_actions(app, "sso-refused")) == 1


def test_a_token_signed_with_another_key_is_refused(app, idp):  # type: ignore[no-untyped-def]
    from joserfc.jwk import RSAKey

    idp.published = [idp.key]  # the JWKS keeps the key Plan B trusts...
    idp.key = RSAKey.generate_key(2048, parameters={"kid": idp.key.kid})  # ...a forger signs with another
    response = sign_in(app.test_client(), "alice@example.com", "alice-pass")
    assert response.status_code == 401
    assert "signature does not verify" in response.get_data(as_text=True)
    assert _users(app) == {}


def test_bad_or_replayed_state_is_refused(app):  # type: ignore[no-untyped-def]
    client = app.test_client()
    start = client.get("/login/sso")
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    form = {k: v[0] for k, v in query.items()} | {"username": "alice@example.com", "password": "alice-pass"}
    answer = requests.post(start.headers["Location"].split("?")[0], data=form, allow_redirects=False, timeout=10)
    back = urlsplit(answer.headers["Location"])
    # Another browser (no state in its session) brings the code back: refused.
    response = app.test_client().get(f"{back.path}?{back.query}")
    assert response.status_code == 401 and "state" in response.get_data(as_text=True)
    forged = app.test_client()
    forged.get("/login/sso")
    assert forged.get("/login/sso/callback?code=x&state=made-up").status_code == 401
    assert _users(app) == {}


def test_sso_users_have_no_usable_password_and_names_never_collide(app):  # type: ignore[no-untyped-def]
    with app.app_context():
        db = get_session()
        create_user(db, "alice", "viewer", "a local password!")
        db.commit()
    sign_in(app.test_client(), "alice@example.com", "alice-pass")
    users = _users(app)
    assert users["alice"] == ("viewer", True)  # the local account is untouched
    sso_name = next(name for name in users if name.startswith("alice-"))
    assert users[sso_name] == ("admin", True)
    response = app.test_client().post("/login", data={"username": sso_name, "password": "!sso"})
    assert response.status_code == 401


@pytest.mark.parametrize("mode, admin_ok, editor_ok", [("all", True, True), ("admins", True, False),
                                                       ("none", False, False)])
def test_local_login_can_be_limited_to_admins_or_switched_off(sqlite_url, tmp_path, idp, mode, admin_ok,
                                                              editor_ok):  # type: ignore[no-untyped-def]
    app = sso_app(sqlite_url, tmp_path, idp, LOCAL_LOGIN=mode)
    with app.app_context():
        db = get_session()
        create_user(db, "root", "admin", "break glass password")
        create_user(db, "ed", "editor", "editor password!")
        db.commit()
    client = app.test_client()
    assert (client.post("/login", data={"username": "root", "password": "break glass password"})
            .status_code == 302) is admin_ok
    assert (app.test_client().post("/login", data={"username": "ed", "password": "editor password!"})
            .status_code == 302) is editor_ok
    page = app.test_client().get("/login").get_data(as_text=True)
    assert ('name="password"' in page) is (mode != "none")
    app.extensions["planb_engine"].dispose()


def test_an_unreachable_provider_is_a_clear_error(sqlite_url, tmp_path):  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = make_test_app(sqlite_url, tmp_path / "instance", OIDC_ISSUER=f"http://127.0.0.1:{port}",
                        OIDC_CLIENT_ID=CLIENT_ID, OIDC_CLIENT_SECRET=CLIENT_SECRET, WTF_CSRF_ENABLED=False)
    response = app.test_client().get("/login/sso")
    assert response.status_code == 503 and "unavailable" in response.get_data(as_text=True)
    app.extensions["planb_engine"].dispose()


@pytest.mark.parametrize("environ, message", [
    ({"PLANB_OIDC_ISSUER": "https://idp.example"}, "PLANB_OIDC_CLIENT_ID: is not set"),
    ({"PLANB_OIDC_ISSUER": "http://idp.example", "PLANB_OIDC_CLIENT_ID": "x", "PLANB_OIDC_CLIENT_SECRET": "y"},
     "PLANB_OIDC_ISSUER: 'http://idp.example' is not an https URL"),
    ({"PLANB_OIDC_ROLE_MAP": "planb-admins=root"}, "PLANB_OIDC_ROLE_MAP: 'root' is not a role"),
    ({"PLANB_OIDC_ROLE_MAP": "planb-admins"}, "PLANB_OIDC_ROLE_MAP: 'planb-admins' is not GROUP=ROLE"),
    ({"PLANB_OIDC_DEFAULT_ROLE": "admin"}, "PLANB_OIDC_DEFAULT_ROLE: 'admin' is not one of the accepted values"),
    ({"PLANB_LOCAL_LOGIN": "none"}, "PLANB_LOCAL_LOGIN: 'none' without single sign-on"),
    ({"PLANB_OIDC_GROUPS_CLAIM": "has space"}, "PLANB_OIDC_GROUPS_CLAIM: 'has space' is not a claim name"),
])
def test_sso_settings_are_checked_at_start_up(environ, message):  # type: ignore[no-untyped-def]
    with pytest.raises(config.ConfigError) as caught:
        config.load(environ)
    assert any(problem.startswith(message) for problem in caught.value.problems), caught.value.problems


def test_sso_settings_parse():  # type: ignore[no-untyped-def]
    values = config.load({"PLANB_OIDC_ISSUER": "https://login.example.com/realms/planb/",
                          "PLANB_OIDC_CLIENT_ID": "planb", "PLANB_OIDC_CLIENT_SECRET": "s",
                          "PLANB_OIDC_ROLE_MAP": "planb-admins=admin, planb-editors=Editor",
                          "PLANB_OIDC_GROUPS_CLAIM": "roles", "PLANB_OIDC_DEFAULT_ROLE": "none"})
    assert values["OIDC_ISSUER"] == "https://login.example.com/realms/planb"
    assert values["OIDC_ROLE_MAP"] == {"planb-admins": "admin", "planb-editors": "editor"}
    assert (values["OIDC_GROUPS_CLAIM"], values["OIDC_DEFAULT_ROLE"]) == ("roles", "none")
