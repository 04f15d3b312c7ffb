"""The overview page (placeholder until the dashboard issue fills it in)."""
from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("overview", __name__)


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    return render_template("overview.html")
