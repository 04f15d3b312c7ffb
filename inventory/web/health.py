"""/healthz: app up, database reachable, migrations current (public, no details leaked).

200 ``{"status": "ok", ...}`` when all three hold; 503 otherwise, with which check
failed ("unreachable", "pending") but never the error text (it may name hosts or
users); the error itself goes to the log.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import sqlalchemy as sa
from flask import Blueprint, jsonify

from inventory import migrate
from inventory.app_db import get_engine

bp = Blueprint("health", __name__)
log = logging.getLogger("planb.health")


@lru_cache(maxsize=1)
def _head_revision() -> str | None:
    # The migration scripts do not change while the process runs; read them once.
    return migrate.head_revision()


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    checks = {"app": "ok", "database": "ok", "migrations": "ok"}
    status = 200
    try:
        engine = get_engine()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        if migrate.current_revision(engine) != _head_revision():
            checks["migrations"] = "pending"
            status = 503
    except Exception:
        log.exception("health check: database unreachable")
        checks["database"] = "unreachable"
        checks["migrations"] = "unknown"
        status = 503
    return jsonify(status="ok" if status == 200 else "unhealthy", checks=checks), status
