"""Fixtures for the security tests: an app with probe routes of every guard kind.

The probe routes make the auth tests independent of which feature routes exist:
a plain read, a plain write (commits an audit event through the request
session), and admin-only views, both as web pages and under /api/v1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from flask import Blueprint, Flask, jsonify, render_template

from tests.conftest import make_test_app


def add_probe_routes(app: Flask) -> None:
    from inventory.app_db import get_session
    from inventory.auth import current_actor, require_role
    from inventory.security import csrf
    from inventory.services import audit

    def _write():  # type: ignore[no-untyped-def]
        db = get_session()
        audit.record(db, actor=current_actor(), action="probe", entity_type="probe", summary="probe write")
        db.commit()
        return jsonify(ok=True)

    web = Blueprint("probe", __name__, url_prefix="/_probe")
    # A real page (base layout: its logout form carries the session's CSRF token).
    web.add_url_rule("/read", "read", lambda: render_template(
        "auth/error.html", title="Probe", message="read ok"), methods=["GET"])
    web.add_url_rule("/write", "write", _write, methods=["POST"])
    web.add_url_rule("/admin", "admin", require_role("admin")(lambda: "admin ok"), methods=["GET", "POST"])

    api = Blueprint("api_probe", __name__, url_prefix="/api/v1/_probe")
    api.add_url_rule("/read", "read", lambda: jsonify(ok=True), methods=["GET"])
    api.add_url_rule("/write", "write", _write, methods=["POST"])
    api.add_url_rule("/admin", "admin", require_role("admin")(lambda: jsonify(ok=True)),
                     methods=["GET", "POST"])
    csrf.exempt(api)
    app.register_blueprint(web)
    app.register_blueprint(api)


@pytest.fixture
def probe_app(sqlite_url: str, tmp_path: Path) -> Iterator[Flask]:
    app = make_test_app(sqlite_url, tmp_path / "instance", WTF_CSRF_ENABLED=False)
    add_probe_routes(app)
    yield app
    app.extensions["planb_engine"].dispose()


@pytest.fixture
def csrf_app(sqlite_url: str, tmp_path: Path) -> Iterator[Flask]:
    """CSRF protection on, as in production."""
    app = make_test_app(sqlite_url, tmp_path / "instance")
    add_probe_routes(app)
    yield app
    app.extensions["planb_engine"].dispose()
