"""CSRF, cookie flags, proxies, security headers, rate limits, body size, template hygiene."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.auth import create_user
from inventory.models import AuditEvent
from inventory.security import CONTENT_SECURITY_POLICY
from tests.conftest import bearer, create_api_token, create_user_and_login, make_test_app
from tests.security.conftest import add_probe_routes

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def _csrf_token(client, path: str = "/login") -> str:  # type: ignore[no-untyped-def]
    html = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def _make_user(app, username: str, role: str) -> None:  # type: ignore[no-untyped-def]
    with app.app_context():
        db = get_session()
        create_user(db, username, role, PASSWORD)
        db.commit()


# ---------------------------------------------------------------- CSRF

def test_login_form_without_csrf_token_is_refused(csrf_app):
    _make_user(csrf_app, "alice", "editor")
    client = csrf_app.test_client()
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert b"form could not be accepted" in response.data
    token = _csrf_token(client)
    response = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302


def test_csrf_less_form_post_by_logged_in_user_is_refused_and_writes_nothing(csrf_app):
    _make_user(csrf_app, "alice", "editor")
    client = csrf_app.test_client()
    token = _csrf_token(client)
    client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert client.post("/_probe/write").status_code == 400
    assert client.post("/_probe/write", data={"csrf_token": "forged"}).status_code == 400
    with csrf_app.app_context():
        assert get_session().scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                                    .where(AuditEvent.action == "probe")) == 0
    # The login started a new session, so the pre-login token is void...
    assert client.post("/_probe/write", data={"csrf_token": token}).status_code == 400
    # ...and the token on the logged-in page is accepted.
    page_token = _csrf_token(client, "/_probe/read")
    assert client.post("/_probe/write", data={"csrf_token": page_token}).status_code == 200


def test_logout_needs_the_csrf_token(csrf_app):
    _make_user(csrf_app, "alice", "viewer")
    client = csrf_app.test_client()
    token = _csrf_token(client)
    client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert client.post("/logout").status_code == 400
    assert client.get("/_probe/read").status_code == 200  # still logged in
    token = _csrf_token(client, "/_probe/read")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/_probe/read").status_code == 302


def test_token_api_is_csrf_exempt(csrf_app):
    token = create_api_token(csrf_app, "write")
    response = csrf_app.test_client().post("/api/v1/_probe/write", headers=bearer(token))
    assert response.status_code == 200


# ---------------------------------------------------------------- cookies and proxies

def _set_cookie(response) -> str:  # type: ignore[no-untyped-def]
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("planb_session=")]
    assert cookies, "no session cookie set"
    return cookies[0]


def _login_response(app, base_url: str = "http://localhost", headers=None):  # type: ignore[no-untyped-def]
    _make_user(app, "alice", "viewer")
    return app.test_client().post("/login", data={"username": "alice", "password": PASSWORD},
                                  base_url=base_url, headers=headers or {})


def test_session_cookie_is_httponly_samesite_lax_and_not_secure_over_http(probe_app):
    cookie = _set_cookie(_login_response(probe_app))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_session_cookie_is_secure_over_tls(probe_app):
    response = _login_response(probe_app, base_url="https://localhost")
    assert "; Secure" in _set_cookie(response)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_forwarded_proto_is_ignored_unless_proxies_are_trusted(probe_app):
    response = _login_response(probe_app, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in _set_cookie(response)


def test_trusted_proxy_forwarded_proto_makes_cookies_secure(sqlite_url, tmp_path):
    app = make_test_app(sqlite_url, tmp_path / "i", TRUSTED_PROXIES="1", WTF_CSRF_ENABLED=False)
    response = _login_response(app, headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert "; Secure" in _set_cookie(response)


def test_trusted_proxies_must_be_a_number(sqlite_url, tmp_path):
    with pytest.raises(SystemExit, match="^PLANB_TRUSTED_PROXIES: 'yes' is not a whole number; expected "):
        make_test_app(sqlite_url, tmp_path / "i", TRUSTED_PROXIES="yes")


def test_secure_cookies_true_forces_secure_even_over_http(sqlite_url, tmp_path):
    app = make_test_app(sqlite_url, tmp_path / "i", SECURE_COOKIES="true", WTF_CSRF_ENABLED=False)
    assert "Secure" in _set_cookie(_login_response(app))


# ---------------------------------------------------------------- headers

def _assert_security_headers(response) -> None:  # type: ignore[no-untyped-def]
    csp = response.headers.get("Content-Security-Policy", "")
    assert csp == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Referrer-Policy") == "same-origin"
    assert response.headers.get("X-Frame-Options") == "DENY"


def test_security_headers_on_every_parameterless_page(app, admin_client, read_token):
    anonymous = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.arguments or rule.endpoint == "static":
            continue
        if rule.rule.startswith("/api/"):
            response = anonymous.get(rule.rule, headers=bearer(read_token))
        else:
            response = admin_client.get(rule.rule)
            _assert_security_headers(anonymous.get(rule.rule))  # the login redirect too
        _assert_security_headers(response)
        if rule.endpoint != "health.healthz":
            assert response.headers.get("Cache-Control") == "no-store", rule.rule
        checked += 1
    assert checked >= 3
    _assert_security_headers(anonymous.get("/login"))
    _assert_security_headers(anonymous.get("/no/such/page"))


# ---------------------------------------------------------------- login rate limit

def test_login_rate_limit_counts_failures_and_says_so(sqlite_url, tmp_path):
    app = make_test_app(sqlite_url, tmp_path / "i", RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute",
                        WTF_CSRF_ENABLED=False)
    _make_user(app, "alice", "viewer")
    client = app.test_client()
    # Successful logins do not use up the allowance.
    for _ in range(4):
        assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 302
    for _ in range(3):
        assert client.post("/login", data={"username": "alice", "password": "bad password"}).status_code == 401
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed attempts" in response.data
    assert b"wait a minute" in response.data
    # Another client address is not affected.
    other = client.post("/login", data={"username": "alice", "password": PASSWORD},
                        environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert other.status_code == 302


# ---------------------------------------------------------------- body size

def test_oversized_api_body_gets_413_json(sqlite_url, tmp_path):
    app = make_test_app(sqlite_url, tmp_path / "i", MAX_CONTENT_LENGTH=1000, WTF_CSRF_ENABLED=False)
    add_probe_routes(app)

    @app.post("/api/v1/_probe/echo")
    def _echo():  # type: ignore[no-untyped-def]
        from flask import request
        return {"n": len(request.get_json())}

    token = create_api_token(app, "write")
    client = app.test_client()
    ok = client.post("/api/v1/_probe/echo", json=["x"] * 10, headers=bearer(token))
    assert ok.status_code == 200
    response = client.post("/api/v1/_probe/echo", json=["x"] * 1000, headers=bearer(token))
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"
    assert "1000-byte limit" in response.get_json()["message"]


def test_oversized_form_post_gets_413_page(sqlite_url, tmp_path):
    app = make_test_app(sqlite_url, tmp_path / "i", MAX_CONTENT_LENGTH=1000, WTF_CSRF_ENABLED=False)
    add_probe_routes(app)
    client = app.test_client()
    create_user_and_login(app, client, "editor")
    response = client.post("/_probe/write", data={"blob": "x" * 5000})
    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert b"Upload too large" in response.data


def test_max_content_length_is_set_by_default(app):
    assert 0 < app.config["MAX_CONTENT_LENGTH"] <= 64 * 1024 * 1024


def test_api_http_errors_are_json(probe_app):
    token = create_api_token(probe_app, "write")
    client = probe_app.test_client()
    for response in (client.get("/api/v1/no-such-thing", headers=bearer(token)),
                     client.delete("/api/v1/_probe/read", headers=bearer(token))):
        assert response.status_code in (404, 405)
        body = response.get_json()
        assert body["error"] and body["message"]


# ---------------------------------------------------------------- templates

TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))
PY_SOURCES = sorted((ROOT / "inventory").rglob("*.py"))


# Standalone files offered as downloads (Content-Disposition: attachment), opened from
# disk where no stylesheet of ours exists: inline CSS is allowed there, scripts never.
STANDALONE_DOWNLOADS = {"templates/risk/review_pack_export.html"}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_templates_never_mark_data_safe_or_inline_scripts(path):
    text = path.read_text()
    assert not re.search(r"\|\s*safe\b", text), "autoescaping must not be bypassed"
    assert "autoescape false" not in text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline <script> (CSP forbids it)"
    if str(path.relative_to(ROOT)) not in STANDALONE_DOWNLOADS:
        assert not re.search(r"<style\b", text), "inline <style> block (CSP forbids it)"
        assert not re.search(r"\sstyle\s*=", text), "inline style attribute (CSP forbids it)"
    assert not re.search(r"\son[a-z]+\s*=", text, re.IGNORECASE), "inline event handler"
    assert not re.search(r"href\s*=\s*\"\s*javascript:", text, re.IGNORECASE)


# Modules allowed to build markup in Python, each because it escapes every piece of
# text itself (and has a hostile-string test of its own).
MARKUP_ALLOWED = {
    "inventory/services/graph_svg.py",  # server-drawn SVG; tests/security/test_hostile_strings.py
}


def test_every_jinja_environment_in_the_code_autoescapes():
    for path in PY_SOURCES:
        text = path.read_text()
        for match in re.finditer(r"jinja2\.Environment\((.{0,400})", text, re.DOTALL):
            assert "autoescape=" in match.group(1) and "autoescape=False" not in match.group(1), path


def test_python_code_never_builds_markup_from_data():
    offenders = {str(p.relative_to(ROOT)) for p in PY_SOURCES
                 if re.search(r"\bMarkup\(|markupsafe|render_template_string|\|safe", p.read_text())}
    assert offenders <= MARKUP_ALLOWED


def test_the_server_never_fetches_a_url():
    """No HTTP client in the web app or services: a user-supplied link (runbook, evidence,
    vendor site) is only ever rendered as a link, never requested by the server (no SSRF).
    Collectors reach clouds only through the SDKs, with endpoints from their own config."""
    pattern = re.compile(r"^\s*(import|from)\s+(requests|httpx|urllib3|aiohttp|urllib\.request|http\.client)\b"
                         r"|urlopen\(", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in PY_SOURCES if pattern.search(p.read_text())]
    # The one exception: webhook delivery posts to the URLs admins configured, each checked when
    # added (http(s) only, no link-local or metadata address) and its address again before each post.
    assert offenders == ["inventory/services/webhooks.py"]
