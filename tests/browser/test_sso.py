"""Single sign-on end to end in headless Chromium: Plan B's login page, the provider's login
form (a loopback OpenID Connect provider signing RS256 ID tokens), back to Plan B signed in
with the role the provider's groups map to."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.security.oidc_provider import CLIENT_ID, CLIENT_SECRET, IdpUser, Provider, RunningProvider

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def sso_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Provider]]:
    from werkzeug.serving import make_server

    from inventory import migrate
    from tests.conftest import make_test_app

    folder = tmp_path_factory.mktemp("browser-sso")
    url = f"sqlite:///{folder / 'planb.sqlite3'}"
    migrate.upgrade(url, "head")
    provider = Provider(users={"dana@example.com": IdpUser("dana-idp-pass", "sub-dana", "dana@example.com",
                                                           ["planb-editors"], name="Dana Ops")})
    with RunningProvider(provider) as idp:
        app = make_test_app(url, folder / "instance", OIDC_ISSUER=idp.issuer, OIDC_CLIENT_ID=CLIENT_ID,
                            OIDC_CLIENT_SECRET=CLIENT_SECRET, OIDC_ROLE_MAP={"planb-editors": "editor"},
                            OIDC_PROVIDER_NAME="Example SSO")  # CSRF on: real forms
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="planb-sso-server", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}", idp
        finally:
            server.shutdown()
            thread.join(timeout=10)
            app.extensions["planb_engine"].dispose()


def test_sign_in_through_the_identity_provider(browser, sso_server, screenshots: Path):  # type: ignore[no-untyped-def]
    base, idp = sso_server
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and base in (m.location or {}).get(
        "url", base) else None)
    try:
        page.goto(f"{base}/plans/")
        assert page.url.startswith(f"{base}/login")
        page.screenshot(path=str(screenshots / "20-sso-login.png"), full_page=True)
        page.get_by_role("link", name="Sign in with Example SSO").click()
        # The provider's own login form, on another origin.
        page.wait_for_url(f"{idp.issuer}/authorize*")
        page.get_by_label("Email or username").fill("dana@example.com")
        page.get_by_label("Secret").fill("dana-idp-pass")
        page.get_by_role("button", name="Continue").click()
        # Back at Plan B, signed in, on the page first asked for.
        page.wait_for_url(f"{base}/plans/")
        assert page.locator(".whoami").inner_text() == "dana (editor)"
        assert page.title() == "Contingency plans · Plan B"
        page.screenshot(path=str(screenshots / "21-sso-signed-in.png"), full_page=True)
        # The code was redeemed with the PKCE verifier (checked by the provider).
        assert idp.token_requests and idp.token_requests[-1]["code_verifier"]
        # Logging out ends the Plan B session; the login page offers SSO again.
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{base}/login")
        assert page.get_by_role("link", name="Sign in with Example SSO").is_visible()
    finally:
        context.close()
    assert errors == []
