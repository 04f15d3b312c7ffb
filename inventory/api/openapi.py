"""The OpenAPI 3.1 description of the JSON API, assembled from each API module.

Each module under ``inventory.api`` may define ``OPENAPI_PATHS`` (a dict of
path -> path item) and ``OPENAPI_SCHEMAS`` (component schemas); they are merged
here so the description lives next to the code it describes.  What every
operation shares is added here, from the same definitions the app enforces, so a
module cannot forget it:

* 401 on every operation (every ``/api/`` request needs a token, ``inventory.auth``);
* 403 where the view needs more than a read token (``inventory.auth.required_role``);
* 400 on every operation (unknown query parameters are refused, ``inventory.api``);
* 404 on every operation with a path parameter; 413 and 415 on every one with a body;
* request-body strings refuse NUL, as ``inventory.api.read_json`` does.

The pieces modules build their request schemas from (free text, URLs, whole numbers,
query parameters, ``x-planb-rule``) are in ``inventory.api.schema_parts``; the bodies are
checked against the document before any view by ``inventory.api.schema_check``.

``python -m inventory.api.openapi FILE`` writes the document (for the docs site).
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import re
import sys
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, has_app_context, jsonify

from inventory import __version__
from inventory.api.schema_parts import NO_NUL, RULE, every_field, http_url, query, rule, text, whole_number

__all__ = ["HTTP_METHODS", "NO_NUL", "RULE", "build_spec", "every_field", "http_url", "openapi_path", "query",
           "rule", "text", "whole_number", "write_spec"]

bp = Blueprint("api_openapi", __name__, url_prefix="/api/v1")

HTTP_METHODS = ("get", "put", "post", "patch", "delete")
_CONVERTER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_path(flask_rule: str) -> str:
    """The OpenAPI spelling of a Flask rule: ``/plans/<int:plan_id>`` -> ``/plans/{plan_id}``."""
    return _CONVERTER.sub(r"{\1}", flask_rule)


def _error_response(description: str, schema: str = "Error") -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


# Status -> (component name, description): the errors every operation of a kind can answer.
SHARED_ERRORS: dict[str, tuple[str, str]] = {
    "400": ("BadRequest", ("The request does not match this description: a body that is not JSON, a "
                           "value of the wrong type, out of range or not allowed, an unknown field, an "
                           "unknown query parameter, or a single-valued one given twice with different "
                           "values. 'field' names it.")),
    "401": ("Unauthorized", ("No API token, or an unknown, expired or revoked one (send 'Authorization: "
                             "Bearer <token>'). Answered with a WWW-Authenticate header.")),
    "403": ("Forbidden", "The token's role may not do this: changes need a write token."),
    "404": ("NotFound", ("No such resource: the id or name in the path (or a record the query names) "
                         "does not exist.")),
    "413": ("PayloadTooLarge", ("The body is larger than the server's limit (PLANB_MAX_CONTENT_LENGTH, "
                                "16 MiB by default).")),
    "415": ("UnsupportedMediaType", "The body is not sent as 'Content-Type: application/json'."),
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error", "message"],
    "description": "The one shape of every error answer. Some errors add the fields listed here.",
    "properties": {
        "error": {"type": "string", "description": "A stable code: bad_request, unauthorized, forbidden, "
                                                   "not_found, method_not_allowed, conflict, "
                                                   "payload_too_large, unsupported_media_type, invalid"},
        "message": {"type": "string", "description": "What is wrong, for a person"},
        "field": {"type": "string", "description": "The field or query parameter at fault (a JSON path)"},
        "allowed": {"type": "array", "items": {"type": "string"},
                    "description": "Values that would have been accepted"},
        "suggestions": {"type": "array", "items": {"type": "string"}, "description": "Close names"},
    },
}

_DESCRIPTION = """\
Vendor-outage blast radius, inventory, plans, update testing and vendor risk.

**Authentication.** Every operation needs an API token (`planb tokens create NAME --role read|write`)
sent as `Authorization: Bearer <token>`. A read token may call every `GET` (and the read-only
`POST /api/v1/impact`); changes need a write token. No token, or a bad one: 401; a read token on a
change: 403. A dashboard session cookie is not accepted by the API.

**Errors.** Every error answer is JSON: `{"error": "<code>", "message": "<for a person>", "field":
"<what to fix>"}` (`field` when one is at fault).
400: the request does not match this description (wrong type, out of range, not allowed, unknown
field, unknown query parameter). 404: no such resource. 409: it conflicts with what is stored (a
duplicate name, an incident already resolved). 422: well-formed, but a rule this description marks
with `x-planb-rule` refused it (a name that matches no record, a date in the future).

**Query parameters.** Unknown query parameters are refused (400), never ignored, so a misspelt filter
cannot silently return everything; a single-valued parameter given twice with different values is
refused too. A parameter marked `allowEmptyValue` may be sent empty (`?criticality=`): the same as
leaving it out.
"""


def _api_modules() -> list[Any]:
    """Every module of ``inventory.api`` that describes paths, by name."""
    import inventory.api as package

    modules = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "openapi":
            continue
        module = importlib.import_module(f"inventory.api.{info.name}")
        if hasattr(module, "OPENAPI_PATHS"):
            modules.append(module)
    return modules


def _rules_app() -> Flask:
    """A bare app with the API blueprints registered: their rules and views, no database."""
    from inventory.api import register_routes

    app = Flask("planb-openapi")
    register_routes(app)
    return app


def _views(app: Flask) -> dict[tuple[str, str], Any]:
    """(OpenAPI path, method) -> the view function that answers it."""
    views: dict[tuple[str, str], Any] = {}
    for url_rule in app.url_map.iter_rules():
        if not url_rule.rule.startswith("/api/"):
            continue
        for method in url_rule.methods or ():
            views[(openapi_path(url_rule.rule), method.lower())] = app.view_functions.get(url_rule.endpoint)
    return views


def _no_nul_strings(schema: Any) -> None:
    """Give every free-text string of a request schema the NUL-free pattern (in place)."""
    if isinstance(schema, list):
        for item in schema:
            _no_nul_strings(item)
        return
    if not isinstance(schema, dict):
        return
    types = schema.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    if is_string and not {"enum", "const", "pattern", "format"} & set(schema):
        schema["pattern"] = NO_NUL
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions"):
            for child in value.values():
                _no_nul_strings(child)
        elif key in ("items", "additionalProperties", "not", "if", "then", "else", "contains",
                     "propertyNames", "allOf", "anyOf", "oneOf", "prefixItems"):
            _no_nul_strings(value)


def _request_schema_names(paths: dict[str, Any]) -> set[str]:
    """Component schemas reachable from request bodies (they get the NUL-free strings)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                names.add(ref.rsplit("/", 1)[1])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for item in paths.values():
        for method in HTTP_METHODS:
            body = (item.get(method) or {}).get("requestBody")
            if body:
                walk(body)
    return names


def _close_over_refs(names: set[str], schemas: dict[str, Any]) -> set[str]:
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        text = json.dumps(schemas[name])
        todo.extend(re.findall(r'"#/components/schemas/([^"]+)"', text))
    return seen


def _add_shared_responses(paths: dict[str, Any], views: dict[tuple[str, str], Any]) -> None:
    from inventory.auth import ROLE_RANK, required_role

    for path, item in paths.items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            needed = {"400", "401"}
            view = views.get((path, method))
            if view is not None and ROLE_RANK[required_role(view, method.upper())] > ROLE_RANK["viewer"]:
                needed.add("403")
            if "{" in path:
                needed.add("404")
            if "requestBody" in operation:
                needed |= {"413", "415"}
            responses = operation.setdefault("responses", {})
            for status in sorted(needed):
                responses.setdefault(status, {"$ref": f"#/components/responses/{SHARED_ERRORS[status][0]}"})
            operation["responses"] = dict(sorted(responses.items()))


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


def build_spec(app: Flask | None = None) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s API (the current app, else the API's own blueprints)."""
    if app is None:
        app = current_app._get_current_object() if has_app_context() else _rules_app()  # type: ignore[attr-defined]
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": _copy(ERROR_SCHEMA)}
    for module in _api_modules():
        # Copied through JSON, not deepcopy: modules share small pieces ({"type": "string"})
        # between request and response schemas, and only the request ones get the NUL pattern.
        paths.update(_copy(getattr(module, "OPENAPI_PATHS", {})))
        schemas.update(_copy(getattr(module, "OPENAPI_SCHEMAS", {})))
    paths["/api/v1/openapi.json"] = {"get": {
        "summary": "This description", "operationId": "getOpenAPI", "tags": ["meta"],
        "responses": {"200": {"description": "The OpenAPI document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    for item in paths.values():
        for method in HTTP_METHODS:
            body = (item.get(method) or {}).get("requestBody")
            if body:
                for media in body.get("content", {}).values():
                    _no_nul_strings(media.get("schema"))
    for name in _close_over_refs(_request_schema_names(paths), schemas):
        _no_nul_strings(schemas[name])
    _add_shared_responses(paths, _views(app))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Plan B API", "version": __version__, "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "An API token: planb tokens create"}},
            "schemas": schemas,
            "responses": {name: _error_response(description)
                          for name, description in SHARED_ERRORS.values()},
        },
        "security": [{"bearerAuth": []}],
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi_json():  # type: ignore[no-untyped-def]
    return jsonify(build_spec())


def write_spec(path: str | Path) -> dict[str, Any]:
    """Write the document as JSON to ``path`` (what the app serves at /api/v1/openapi.json)."""
    spec = build_spec(_rules_app())
    Path(path).write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inventory.api.openapi",
                                     description="Write the API's OpenAPI document as JSON.")
    parser.add_argument("path", help="file to write, e.g. docs/reference/openapi.json ('-': standard output)")
    args = parser.parse_args(argv)
    if args.path == "-":
        sys.stdout.write(json.dumps(build_spec(_rules_app()), indent=2, ensure_ascii=False) + "\n")
    else:
        write_spec(args.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
