"""The dashboard in a real browser: log in, overview, blast radius through the form with its
graph, declare an incident and record recovery, create a plan through the plans form.

Each test saves a full-page screenshot to artifacts/screenshots/.
"""
from __future__ import annotations

import re

import pytest

from tests.browser.conftest import XSS_NAME

pytestmark = pytest.mark.browser


def shot(page, screenshots, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_login_page(page, screenshots):  # type: ignore[no-untyped-def]
    page.goto("/login")
    assert page.get_by_label("Username").is_visible()
    shot(page, screenshots, "00-login")


def test_overview(page, logged_in, screenshots):  # type: ignore[no-untyped-def]
    page.goto("/")
    assert page.title() == "Overview · Plan B"
    # Keyboard users land on the skip link first, and it takes them to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent").strip() == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    assert page.locator('nav[aria-label="Main"] a[aria-current="page"]').inner_text() == "Overview"
    stat = page.locator(".stat", has_text="assets in service").locator(".stat-value").inner_text()
    assert int(stat.replace(",", "")) > 200
    assert page.locator("#conc-h").is_visible() and page.locator("#cov-h").is_visible()
    assert page.get_by_role("link", name="Crew scheduling").first.is_visible()  # the uncovered service
    shot(page, screenshots, "01-overview")


def test_blast_radius_through_the_form(page, logged_in, screenshots):  # type: ignore[no-untyped-def]
    page.goto("/impact/")
    page.get_by_label("Vendor").fill("CrowdStrike")
    page.get_by_label("Products").fill("Falcon Sensor")
    page.get_by_label("Version range").fill(">=7.11")
    page.get_by_label("windows").check()
    page.get_by_role("button", name="Show blast radius").click()
    page.wait_for_selector("#summary-h")
    assert "Outage of CrowdStrike Falcon Sensor >=7.11 on windows" in page.locator("#summary-h").inner_text()
    down = int(page.locator(".stat-down .stat-value").inner_text().replace(",", ""))
    degraded = int(page.locator(".stat-degraded .stat-value").inner_text().replace(",", ""))
    assert down > 0 and degraded > 0
    # The results table: a group per business service with hit assets, status and plans.
    boarding = page.locator("details.service", has=page.get_by_role("link", name="Boarding", exact=True))
    assert boarding.locator(".badge-down").first.is_visible()
    rows = page.locator("details.service table tbody tr")
    assert rows.count() > 20
    assert page.locator("details.service table tbody tr .badge-down").count() > 0
    # The graph: an inline SVG with seeds and services, drawn by the server.
    graph = page.locator("svg.graph")
    assert graph.is_visible()
    assert graph.locator("g.node-seed").count() > 0 and graph.locator("g.node-service").count() >= 4
    box = graph.bounding_box()
    assert box and box["width"] > 400 and box["height"] > 200
    # Hostile names stay text (the page fixture also fails on any alert()).
    assert page.get_by_role("link", name=XSS_NAME).count() >= 1
    shot(page, screenshots, "02-blast-radius")
    page.locator("svg.graph").screenshot(path=str(screenshots / "02b-blast-radius-graph.png"))


def test_bad_scope_shows_the_error_next_to_the_field(page, logged_in):  # type: ignore[no-untyped-def]
    page.goto("/impact/")
    page.get_by_label("Vendor").fill("Crowdstrik")
    page.get_by_role("button", name="Show blast radius").click()
    error = page.locator("#vendor-error")
    assert "unknown vendor" in error.inner_text() and "CrowdStrike" in error.inner_text()
    assert page.get_by_label("Vendor").get_attribute("aria-invalid") == "true"
    page.problems.console.clear()  # the 400 answer itself is logged by Chromium


def test_declare_incident_and_record_recovery(page, logged_in, screenshots):  # type: ignore[no-untyped-def]
    page.goto("/impact/?vendor=CrowdStrike&products=Falcon+Sensor&version=%3E%3D7.11&os=windows")
    page.get_by_label("Incident title").fill("Falcon channel file 291 — Windows hosts boot-looping")
    page.get_by_role("button", name="Declare incident").click()
    page.wait_for_url(re.compile(r".*/incidents/\d+$"))
    assert "Falcon channel file 291" in page.locator("h1").inner_text()
    progress = page.locator("progress.recovery")
    total = int(progress.get_attribute("max"))
    assert total > 20 and progress.get_attribute("value") == "0"
    boxes = page.locator('input[type="checkbox"][name="asset"]')
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_label("Note (optional)").fill("booted to safe mode, removed C-00000291*.sys")
    page.get_by_role("button", name="Mark selected recovered").click()
    page.wait_for_selector(".flash")
    assert page.locator("progress.recovery").get_attribute("value") == "2"
    assert page.locator(".badge-recovered").count() == 2
    shot(page, screenshots, "03-incident")
    page.goto("/incidents/")
    assert page.get_by_text("2 / ").first.is_visible()
    shot(page, screenshots, "04-incidents")


def test_create_plan_through_the_plans_form(page, logged_in, screenshots):  # type: ignore[no-untyped-def]
    page.goto("/plans/new")
    page.locator("#name").fill("Crew scheduling: paper rosters")
    page.locator("#owner").fill("Crew Control")
    page.locator("#rto_minutes").fill("120")
    page.locator("#steps").fill("1. Print the last published roster.\n2. Phone crews from the duty list.")
    page.locator("#manual_fallback").fill("Paper rosters and phone trees at each base.")
    page.locator("#cover_assets").fill("service:crew-scheduling")
    shot(page, screenshots, "05-plan-form")
    page.get_by_role("button", name="Create plan").click()
    page.wait_for_url(re.compile(r".*/plans/\d+$"))
    assert "Crew scheduling: paper rosters" in page.locator("h1").inner_text()
    assert page.get_by_text("Paper rosters and phone trees at each base.").is_visible()
    shot(page, screenshots, "06-plan")


@pytest.mark.parametrize("path, name, expect", [
    ("/assets/", "07-assets", "Assets"),
    ("/assets/?q=script", "08-assets-hostile", "Assets"),
    ("/vendors/", "09-vendors", "Vendors"),
    ("/runs/", "11-runs", "Collection runs"),
])
def test_main_pages_render(page, logged_in, screenshots, path, name, expect):  # type: ignore[no-untyped-def]
    page.goto(path)
    assert page.locator("h1").inner_text().startswith(expect)
    shot(page, screenshots, name)


def test_asset_and_vendor_detail(page, logged_in, screenshots, live_server):  # type: ignore[no-untyped-def]
    page.goto(f"/assets/{live_server.ids['evil']}")
    assert page.locator("h1").inner_text().startswith(XSS_NAME)  # shown as text
    page.goto(f"/assets/{live_server.ids['checkin']}")
    assert page.locator("h1").inner_text().startswith("Check-in")
    shot(page, screenshots, "12-asset-check-in")
    page.goto("/vendors/")
    page.get_by_role("link", name="CrowdStrike", exact=True).click()
    assert page.locator("h1").inner_text() == "CrowdStrike"
    assert page.locator("#outage-h").is_visible()
    shot(page, screenshots, "10-vendor-crowdstrike")
