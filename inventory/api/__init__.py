"""The JSON API under /api/v1 (bearer tokens only; CSRF-exempt because cookies are not accepted)."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from flask import Blueprint, Flask, jsonify, request

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
    _refuse_unknown_query_parameters(app)

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


def documented_query_parameters(app: Flask) -> dict[tuple[str, str], frozenset[str]]:
    """(endpoint, METHOD) -> the query parameters the OpenAPI description lists for it."""
    from inventory.api.openapi import build_spec, openapi_path

    paths = build_spec()["paths"]
    allowed: dict[tuple[str, str], frozenset[str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path_item = paths.get(openapi_path(rule.rule), {})
        for method in rule.methods or ():
            operation = path_item.get(method.lower())
            if not isinstance(operation, dict):
                continue
            params = [p for p in [*path_item.get("parameters", []), *operation.get("parameters", [])]
                      if p.get("in") == "query"]
            allowed[(rule.endpoint, method)] = frozenset(p["name"] for p in params)
    return allowed


def _refuse_unknown_query_parameters(app: Flask) -> None:
    """Unknown query parameters are reported, never silently ignored.

    The OpenAPI description is the list of what each route takes, so the
    documentation and the behaviour cannot drift apart (a misspelt filter such
    as ``?critcality=critical`` would otherwise quietly return everything).
    """
    allowed = documented_query_parameters(app)

    @app.before_request
    def _check_query_parameters():  # type: ignore[no-untyped-def]
        if not request.path.startswith("/api/") or not request.args:
            return None
        known = allowed.get((request.endpoint or "", request.method))
        if known is None:
            return None
        unknown = sorted(set(request.args) - known)
        if unknown:
            listed = ", ".join(sorted(known)) or "none"
            return error_response(400, f"unknown query parameter {unknown[0]!r} (this route takes: {listed})",
                                  unknown[0])
        return None
