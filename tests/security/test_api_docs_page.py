"""/api/v1/docs (Swagger UI over the app's OpenAPI document) and the document written to a file.

The page is for people: a dashboard session or an API token opens it, anyone else is sent to
the login form (HTML, like every page); everything it loads is served by the app itself.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inventory.api.openapi import write_spec
from inventory.security import CONTENT_SECURITY_POLICY
from tests.conftest import bearer, create_api_token, create_user_and_login

ROOT = Path(__file__).resolve().parents[2]


def _asset_urls(html: str) -> list[str]:
    """What the page loads (scripts, stylesheets, icons); not the links a reader may follow."""
    return re.findall(r'<script[^>]* src="([^"]+)"', html) + re.findall(r'<link[^>]* href="([^"]+)"', html)


@pytest.mark.parametrize("path", ["/api/v1/docs", "/api/v1/docs/openapi.json",
                                  "/api/v1/docs/assets/swagger-ui-bundle.js"])
def test_anonymous_visitors_are_sent_to_the_login_form(client, path):  # type: ignore[no-untyped-def]
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next={path}"


def test_a_bad_token_is_sent_to_the_login_form_too(client):  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/docs", headers=bearer("planb_not-a-real-token"))
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_logged_in_user_gets_the_reference_served_by_the_app_itself(app, client):  # type: ignore[no-untyped-def]
    create_user_and_login(app, client, "viewer")
    response = client.get("/api/v1/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    # The app's CSP, not a weaker one, and nothing from another origin.
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    urls = _asset_urls(html)
    assert urls and all(url.startswith("/") and not url.startswith("//") for url in urls), urls
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.data, url
    assert client.get("/api/v1/docs/assets/swagger-ui-bundle.js").mimetype in (
        "text/javascript", "application/javascript")
    # The page reads the document the API serves, with the session.
    url = re.search(r'data-openapi-url="([^"]+)"', html)
    assert url is not None and url.group(1) == "/api/v1/docs/openapi.json"
    served = client.get("/api/v1/openapi.json", headers=bearer(create_api_token(app, "read")))
    assert client.get(url.group(1)).get_json() == served.get_json()


def test_a_token_opens_the_reference_as_well(app, client):  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/docs", headers=bearer(create_api_token(app, "read")))
    assert response.status_code == 200 and b'id="swagger-ui"' in response.data


def test_only_the_files_the_page_needs_are_served(app, client):  # type: ignore[no-untyped-def]
    create_user_and_login(app, client, "viewer")
    for name in ("swagger-ui-bundle.js.map", "index.html", "oauth2-redirect.html", "__init__.py"):
        assert client.get(f"/api/v1/docs/assets/{name}").status_code == 404, name
    # A path out of the folder names no page at all: an unknown API URL (bearer only).
    assert client.get("/api/v1/docs/assets/..%2F..%2F__init__.py").status_code == 401


def test_the_dashboard_links_to_the_reference(app, client):  # type: ignore[no-untyped-def]
    create_user_and_login(app, client, "viewer")
    assert b'href="/api/v1/docs"' in client.get("/").data


def test_the_api_still_refuses_a_session_cookie(app, client):  # type: ignore[no-untyped-def]
    """Only the reference page takes the session: the API and its document want a token."""
    create_user_and_login(app, client, "admin")
    assert client.get("/api/v1/openapi.json").status_code == 401
    assert client.get("/api/v1/vendors").status_code == 401


def test_the_written_document_is_the_one_the_app_serves(app, client, tmp_path):  # type: ignore[no-untyped-def]
    served = client.get("/api/v1/openapi.json", headers=bearer(create_api_token(app, "read"))).get_json()
    target = tmp_path / "openapi.json"
    write_spec(target)
    assert json.loads(target.read_text(encoding="utf-8")) == served


def test_python_m_writes_the_document(app, client, tmp_path):  # type: ignore[no-untyped-def]
    served = client.get("/api/v1/openapi.json", headers=bearer(create_api_token(app, "read"))).get_json()
    target = tmp_path / "reference" / "openapi.json"
    target.parent.mkdir()
    result = subprocess.run([sys.executable, "-m", "inventory.api.openapi", str(target)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(target.read_text(encoding="utf-8")) == served
