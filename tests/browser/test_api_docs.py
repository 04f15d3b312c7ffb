"""The interactive API reference (/api/v1/docs) in a real browser: Swagger UI renders every
operation of the app's own document from files the app serves, under the page's CSP."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_the_api_reference_lists_the_operations(page, logged_in, live_server, screenshots):  # type: ignore[no-untyped-def]
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto("/")
    page.get_by_role("link", name="API reference").click()
    page.wait_for_url(live_server.url + "/api/v1/docs")
    page.locator(".opblock").first.wait_for()
    with live_server.app.app_context():
        from inventory.api.openapi import build_spec

        spec = build_spec()
    operations = [(method.upper(), path) for path, item in spec["paths"].items()
                  for method in ("get", "put", "post", "patch", "delete") if method in item]
    shown = page.locator(".opblock-summary-path").all_inner_texts()
    assert len(page.locator(".opblock").all()) == len(operations)
    assert {text.strip().replace("\u200b", "") for text in shown} == {path for _method, path in operations}
    assert page.get_by_role("heading", name="Plan B API").is_visible()
    # Everything the page loaded came from the app itself.
    assert requested and all(url.startswith(live_server.url) for url in requested), requested
    # An operation opens with its parameters and documented answers.
    page.locator("#operations-inventory-listAssets").click()
    page.locator("#operations-inventory-listAssets .responses-table").first.wait_for()
    assert "401" in page.locator("#operations-inventory-listAssets .responses-table").first.inner_text()
    page.screenshot(path=str(screenshots / "api-docs.png"), full_page=False)


def test_try_it_out_calls_the_api_with_a_token(page, logged_in, live_server):  # type: ignore[no-untyped-def]
    """The reference is not only read: with a token pasted into Authorize, Execute calls the
    API from the page (the API itself never takes the dashboard session)."""
    from tests.conftest import create_api_token

    token = create_api_token(live_server.app, "read")
    page.goto("/api/v1/docs")
    page.locator(".opblock").first.wait_for()
    page.get_by_role("button", name="Authorize").first.click()
    page.locator(".modal-ux input").first.fill(token)
    page.locator(".modal-ux button.authorize").click()
    page.locator(".modal-ux button.btn-done").click()
    block = page.locator("#operations-inventory-listVendors")
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert "CrowdStrike" in block.locator(".live-responses-table tbody .microlight").first.inner_text()
