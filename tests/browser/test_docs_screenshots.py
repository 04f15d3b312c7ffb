"""The documentation's screenshots, taken in a real browser so they stay current.

The tutorials (docs/tutorials/) and the README show the dashboard on the demo estate; these tests
drive the pages the tutorials describe, check that they show what the tutorials say (the figures
quoted in docs/tutorials/july-2024.md), and write the pictures to docs/img/.  The demo server here
has no hostile test asset (tests/browser/conftest.py's ``live_server`` adds one to check escaping),
so the pictures show the demo estate as a reader's own ``planb demo`` would.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest

from tests.browser.conftest import PASSWORD, USERNAME, LiveServer, serve_demo

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
IMG = ROOT / "docs" / "img"
TUTORIAL = (ROOT / "docs" / "tutorials" / "july-2024.md").read_text(encoding="utf-8")


def _quoted(pattern: str) -> tuple[int, ...]:
    """Numbers the tutorial quotes from the CLI, found with ``pattern``."""
    found = re.search(pattern, TUTORIAL)
    assert found, f"docs/tutorials/july-2024.md no longer quotes {pattern!r}"
    return tuple(int(group) for group in found.groups())


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    import sqlalchemy as sa

    from inventory.models import Vendor

    def vendor_ids(db) -> dict[str, int]:  # type: ignore[no-untyped-def]
        return {"crowdstrike": db.scalar(sa.select(Vendor.id).where(Vendor.name == "CrowdStrike"))}

    with serve_demo(tmp_path_factory.mktemp("docs-screenshots"), vendor_ids, "docs-screenshots") as server:
        yield server


@pytest.fixture(scope="module")
def tab(browser, docs_server):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=docs_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto("/login")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(docs_server.url + "/")
    page.errors = errors
    yield page
    context.close()
    assert errors == [], f"browser console errors: {errors}"


def _save(locator_or_page, name: str, **options) -> Path:  # type: ignore[no-untyped-def]
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    locator_or_page.screenshot(path=str(path), **options)
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small"
    return path


def test_overview(tab):  # type: ignore[no-untyped-def]
    tab.goto("/")
    assert tab.title() == "Overview · Plan B"
    # The demo tutorial points at the uncovered critical service.
    assert tab.get_by_role("link", name="Crew scheduling").first.is_visible()
    _save(tab, "overview.png")


def test_blast_radius_of_the_falcon_outage(tab):  # type: ignore[no-untyped-def]
    hit, down, degraded = _quoted(r"(\d+) asset\(s\) hit: (\d+) down, (\d+) degraded")
    tab.goto("/impact/")
    tab.get_by_label("Vendor").fill("CrowdStrike")
    tab.get_by_label("Products").fill("Falcon Sensor")
    tab.get_by_label("Version range").fill(">=7.11")
    tab.get_by_label("windows").check()
    tab.get_by_role("button", name="Show blast radius").click()
    tab.wait_for_selector("#summary-h")
    # What the tutorial (and the README) say the answer is.
    assert int(tab.locator(".stat-down .stat-value").inner_text().replace(",", "")) == down
    assert int(tab.locator(".stat-degraded .stat-value").inner_text().replace(",", "")) == degraded
    boarding = tab.locator("details.service", has=tab.get_by_role("link", name="Boarding", exact=True))
    assert boarding.locator(".badge-down").first.is_visible()
    graph = tab.locator("svg.graph")
    assert graph.is_visible() and graph.locator("g.node-service").count() >= 4
    assert hit == down + degraded
    _save(graph, "blast-radius.png")


def test_incident_and_recovery(tab):  # type: ignore[no-untyped-def]
    (hit,) = _quoted(r"Declared incident 1: Falcon channel file 291 — (\d+) asset\(s\) hit")
    tab.goto("/impact/?vendor=CrowdStrike&products=Falcon+Sensor&version=%3E%3D7.11&os=windows")
    tab.get_by_label("Incident title").fill("Falcon channel file 291")
    tab.get_by_role("button", name="Declare incident").click()
    tab.wait_for_url(re.compile(r".*/incidents/\d+$"))
    progress = tab.locator("progress.recovery")
    assert int(progress.get_attribute("max")) == hit
    tab.locator('input[type="checkbox"][name="asset"]').nth(0).check()
    tab.get_by_label("Note (optional)").fill("safe mode, channel file 291 deleted")
    tab.get_by_role("button", name="Mark selected recovered").click()
    tab.wait_for_selector(".flash")
    assert progress.get_attribute("value") == "1"
    _save(tab, "incident.png")


def test_review_pack(tab, docs_server):  # type: ignore[no-untyped-def]
    tab.goto(f"/risk/review/{docs_server.ids['crowdstrike']}")
    assert "CrowdStrike" in tab.locator("h1").inner_text()
    assert tab.get_by_text("Risk score").first.is_visible()
    _save(tab, "review-pack.png")
