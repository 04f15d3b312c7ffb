"""The JSON API under /api/v1 (bearer tokens only; CSRF-exempt because cookies are not accepted)."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from flask import Blueprint, Flask, jsonify

from inventory.security import csrf


def error_response(status: int, message: str, field: str | None = None, **extra: Any):  # type: ignore[no-untyped-def]
    """The one shape of every API error: {"error": ..., "message": ..., "field": ...}."""
    body: dict[str, Any] = {"error": _ERROR_NAMES.get(status, "error"), "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return jsonify(body), status


_ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                409: "conflict", 413: "payload_too_large", 422: "invalid", 429: "rate_limited"}


def register_blueprints(app: Flask) -> None:
    for module_name in ("core", "impact", "updates", "plans", "risk", "openapi"):
        name = f"inventory.api.{module_name}"
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        bp: Blueprint = module.bp
        csrf.exempt(bp)
        app.register_blueprint(bp)

    @app.errorhandler(404)
    def _not_found(error):  # type: ignore[no-untyped-def]
        from flask import request
        if request.path.startswith("/api/"):
            return error_response(404, "no such resource")
        return error, 404

    @app.errorhandler(405)
    def _method_not_allowed(error):  # type: ignore[no-untyped-def]
        from flask import request
        if request.path.startswith("/api/"):
            return error_response(405, "method not allowed")
        return error, 405
