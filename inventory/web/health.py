"""/healthz: app up, database reachable, migrations current (public, no details leaked)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify

from inventory import migrate
from inventory.app_db import get_engine

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    checks = {"app": "ok", "database": "ok", "migrations": "ok"}
    status = 200
    try:
        engine = get_engine()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        if not migrate.is_current(engine):
            checks["migrations"] = "pending"
            status = 503
    except Exception:  # noqa: BLE001 - any failure means "not healthy"
        checks["database"] = "unreachable"
        checks["migrations"] = "unknown"
        status = 503
    return jsonify(status="ok" if status == 200 else "unhealthy", checks=checks), status
