"""A real browser against a real server: headless Debian Chromium driven by Playwright.

The app (with the Skyward Air demo estate, an editor account and CSRF
protection on) is served by werkzeug on a loopback port in a background
thread.  Chromium is the distribution's ``/usr/bin/chromium`` (``apt-get
install chromium chromium-driver``; ``.ci/run`` does it) — never a browser
downloaded by ``playwright install``.  When it is missing these tests FAIL,
so CI cannot pass without having driven a browser.

Screenshots of the main pages go to ``artifacts/screenshots/`` (gitignored).
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest

CHROMIUM = os.environ.get("PLANB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
USERNAME = "ops-editor"
PASSWORD = "correct horse battery staple"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
XSS_NAME = "<script>alert('xss-name')</script>"
XSS_TAG = "<img src=x onerror=alert('xss-tag')>"


class LiveServer:
    def __init__(self, url: str, app, ids: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
        self.url = url
        self.app = app
        self.ids = ids


@contextmanager
def serve_demo(folder: Path, seed: Callable[[Any], dict[str, int]], actor: str) -> Iterator[LiveServer]:
    """The demo estate, an editor account and whatever ``seed(db)`` adds (it returns the ids
    the tests need), served by werkzeug on a loopback port until the block ends."""
    from werkzeug.serving import make_server

    from inventory import migrate
    from inventory.auth import create_user
    from inventory.db import make_engine, write_session
    from inventory.estate.demo import load_demo
    from tests.conftest import make_test_app

    url = f"sqlite:///{folder / 'planb.sqlite3'}"
    migrate.upgrade(url, "head")
    engine = make_engine(url)
    with write_session(engine) as db:
        load_demo(db, actor=actor)
        create_user(db, USERNAME, "editor", PASSWORD)
        ids = seed(db)
    engine.dispose()

    app = make_test_app(url, folder / "instance")  # CSRF protection stays on: real forms
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"planb-{actor}", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app, ids)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        app.extensions["planb_engine"].dispose()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    import sqlalchemy as sa

    from inventory.models import Asset, Installation, Product

    def hostile_asset(db) -> dict[str, int]:  # type: ignore[no-untyped-def]
        # Collected data is hostile input: it must render as text everywhere.
        evil = Asset(natural_key="host:evil", name=XSS_NAME, kind="host", os_family="windows",
                     criticality="high", tags={"note": XSS_TAG})
        db.add(evil)
        db.flush()
        falcon = db.scalar(sa.select(Product.id).where(Product.name == "Falcon Sensor"))
        db.add(Installation(asset_id=evil.id, product_id=falcon, version="7.11.18110.0"))
        db.flush()
        return {"evil": evil.id,
                "checkin": db.scalar(sa.select(Asset.id).where(Asset.natural_key == "service:check-in"))}

    with serve_demo(tmp_path_factory.mktemp("browser"), hostile_asset, "browser-test") as server:
        yield server


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"Chromium not found at {CHROMIUM}: install the Debian packages "
                    "(apt-get install -y chromium chromium-driver) or set PLANB_CHROMIUM. "
                    "The browser tests never download a browser.", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def context(browser, live_server):  # type: ignore[no-untyped-def]
    ctx = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=live_server.url)
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


class PageProblems:
    """Console errors (CSP violations included) and any alert() a page manages to run."""

    def __init__(self) -> None:
        self.console: list[str] = []
        self.dialogs: list[str] = []


@pytest.fixture
def page(context):  # type: ignore[no-untyped-def]
    tab = context.new_page()
    problems = PageProblems()
    tab.on("console", lambda m: problems.console.append(m.text) if m.type == "error" else None)

    def on_dialog(dialog):  # type: ignore[no-untyped-def]
        problems.dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    tab.problems = problems
    yield tab
    tab.close()
    assert problems.dialogs == [], f"a page ran script from data: {problems.dialogs}"
    assert problems.console == [], f"browser console errors: {problems.console}"


@pytest.fixture(scope="session")
def logged_in(context, live_server):  # type: ignore[no-untyped-def]
    tab = context.new_page()
    tab.goto("/login")
    tab.get_by_label("Username").fill(USERNAME)
    tab.get_by_label("Password").fill(PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url(live_server.url + "/")
    tab.close()
    return True
