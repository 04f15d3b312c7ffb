"""The OpenAPI 3.1 description of the JSON API, assembled from each API module.

Each module under ``inventory.api`` may define ``OPENAPI_PATHS`` (a dict of
path -> path item) and ``OPENAPI_SCHEMAS`` (component schemas); they are merged
here so the description lives next to the code it describes.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from typing import Any

from flask import Blueprint, jsonify

from inventory import __version__

bp = Blueprint("api_openapi", __name__, url_prefix="/api/v1")

API_MODULES = ("core", "impact", "updates", "plans", "risk", "webhooks", "sbom")

_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(flask_rule: str) -> str:
    """The OpenAPI spelling of a Flask rule: ``/plans/<int:plan_id>`` -> ``/plans/{plan_id}``."""
    return _CONVERTER.sub(r"{\1}", flask_rule)


def build_spec() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                           "field": {"type": "string"}},
        },
    }
    for name in API_MODULES:
        module_name = f"inventory.api.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        paths.update(getattr(module, "OPENAPI_PATHS", {}))
        schemas.update(getattr(module, "OPENAPI_SCHEMAS", {}))
    paths["/api/v1/openapi.json"] = {"get": {
        "summary": "This description", "operationId": "getOpenAPI",
        "responses": {"200": {"description": "OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Plan B API", "version": __version__,
                 "description": "Vendor-outage blast radius, inventory, plans, update testing and "
                                "vendor risk. Authenticate with 'Authorization: Bearer <token>'."},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearerAuth": []}],
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi_json():  # type: ignore[no-untyped-def]
    return jsonify(build_spec())
