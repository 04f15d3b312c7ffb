"""The overview page: the estate, plan coverage, risk and live incidents at a glance."""
from __future__ import annotations

from flask import Blueprint, render_template

from inventory.app_db import get_session
from inventory.web import ui

bp = Blueprint("overview", __name__)
# The overview blueprint is always registered, so the shared template helpers live on it.
ui.install(bp)


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    from inventory.services import overview as overview_service

    ui.refuse_bad_query({})
    figures = overview_service.overview(get_session())
    return render_template("overview.html", **figures)
