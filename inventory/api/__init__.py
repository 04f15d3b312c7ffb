"""The JSON API under /api/v1 (bearer tokens only; CSRF-exempt because cookies are not accepted).

Shared by every API module: the one error shape (``error_response``, ``ApiError``),
the one place request bodies are parsed (``read_json`` / ``json_object``), the
``<id:...>`` URL converter and the check of query parameters against the OpenAPI
description.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from inventory.api.schema_parts import any_case
from inventory.ids import MAX_ID
from inventory.security import BoundedIntConverter, csrf
from inventory.validation import MAX_JSON_DEPTH, text_problem


def error_response(status: int, message: str, field: str | None = None, **extra: Any):  # type: ignore[no-untyped-def]
    """The one shape of every API error: {"error": ..., "message": ..., "field": ...}."""
    body: dict[str, Any] = {"error": error_name(status), "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return jsonify(body), status


_ERROR_NAMES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 422: "invalid",
                429: "rate_limited"}


def error_name(status: int) -> str:
    """The ``error`` code of a status: ours, else the HTTP reason phrase in snake_case."""
    if status in _ERROR_NAMES:
        return _ERROR_NAMES[status]
    return HTTP_STATUS_CODES.get(status, "error").lower().replace(" ", "_").replace("-", "_")


class ApiError(Exception):
    """Bad input found by a shared helper; answered as ``error_response(status, message, field)``."""

    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.extra = status, message, field, extra


def ascii_digits(text: str) -> bool:
    """Only 0-9: ``str.isdigit`` also accepts '١' and '²', which no client means as a number."""
    return text.isascii() and text.isdigit()


def bounded_int(text: str, low: int, high: int) -> int | None:
    """``text`` (ASCII digits only) as a number from ``low`` to ``high``, else None.

    The length is checked before ``int()``: a 5,000-digit string would make it raise."""
    if not ascii_digits(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(high)):
        return None
    value = int(digits)
    return value if low <= value <= high else None


_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
# What query_flag reads, for the OpenAPI description: true/false, 1/0, yes/no in any case.
FLAG_SCHEMA: dict[str, Any] = {**any_case((*_TRUE, *_FALSE)), "description": "true or false (also 1/0, yes/no)"}


def query_flag(name: str, default: bool = False) -> bool:
    """A boolean query parameter: true/false (also 1/0, yes/no); anything else is a 400.

    Never "anything but true is false": ``?dry_run=maybe`` must not do a real import."""
    raw = request.args.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(400, f"{name} must be true or false, not {raw!r}", name)


# ---------------------------------------------------------------- request bodies

class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # The standard decoder keeps the last of two equal keys: a value silently dropped.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def body_bytes() -> bytes:
    """The raw request body; 413 when a body sent without a length (chunked) is too large."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(data) >= limit:
        # Werkzeug stops reading a streamed body at the limit without a word, so a
        # too-large body would look like truncated JSON: see whether anything is left.
        try:
            more = request.environ["wsgi.input"].read(1)
        except (OSError, ValueError):
            more = b""
        if more:
            raise RequestEntityTooLarge()
    return data


def read_json(*, check_text: bool = True) -> Any:
    """The request body parsed as JSON, or an ``ApiError`` (400) saying what is wrong.

    Refused: another content type, malformed JSON, a key given twice in one object,
    nesting deeper than ``MAX_JSON_DEPTH``, and -- unless ``check_text`` is off, for a
    caller that reports it itself -- text no database can store (NUL, lone
    surrogates), naming its JSON path."""
    if not request.is_json:
        raise ApiError(415, "send a JSON body with Content-Type: application/json")
    data = body_bytes()
    try:
        document = json.loads(data, object_pairs_hook=_object_without_duplicates)
    except RecursionError:
        raise ApiError(400, _too_deep_message()) from None
    except _DuplicateKey as exc:
        raise ApiError(400, f"{exc.key!r} is given twice in one object", exc.key) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    _check_document(document, check_text)
    return document


def json_object(*, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object (``read_json``); ``optional``: no body is ``{}``."""
    if optional and not body_bytes():
        return {}
    document = read_json()
    if not isinstance(document, dict):
        raise ApiError(400, "the body must be a JSON object")
    return document


def _too_deep_message() -> str:
    return f"the JSON document is nested too deeply (at most {MAX_JSON_DEPTH} levels)"


def _check_document(document: Any, check_text: bool) -> None:
    # One pass without recursion (the document may be deep) that pushes only containers;
    # the path of a bad string is looked up afterwards, in the rare case there is one.
    stack: list[tuple[Any, int]] = [(document, 1)]
    bad_text = check_text and isinstance(document, str) and text_problem(document) is not None
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(400, _too_deep_message())
        children: Iterable[Any]
        if isinstance(value, dict):
            if check_text and not bad_text:
                bad_text = any(text_problem(key) for key in value)
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            elif check_text and not bad_text and isinstance(child, str):
                bad_text = text_problem(child) is not None
    if bad_text:
        field, problem = _text_problem_at(document, "")
        raise ApiError(400, f"{field or 'body'}: {problem}", field or None)


def _text_problem_at(value: Any, path: str) -> tuple[str, str]:
    """(JSON path, problem) of the first unstorable string; the depth is already bounded."""
    if isinstance(value, str):
        return path, text_problem(value) or ""
    if isinstance(value, dict):
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if text_problem(key):
                return where, text_problem(key) or ""
            found = _text_problem_at(child, where)
            if found[1]:
                return found
    if isinstance(value, list):
        for i, child in enumerate(value):
            found = _text_problem_at(child, f"{path}[{i}]")
            if found[1]:
                return found
    return path, ""


# ---------------------------------------------------------------- ids in URLs

def _digits_up_to(limit: int) -> str:
    """A regex matching the decimal numbers 0..limit (leading zeros allowed)."""
    text = str(limit)
    branches = [rf"\d{{1,{len(text) - 1}}}"] if len(text) > 1 else []
    for i, char in enumerate(text):
        low = 1 if i == 0 and len(text) > 1 else 0
        if int(char) > low:
            rest = len(text) - i - 1
            branches.append(text[:i] + f"[{low}-{int(char) - 1}]" + (rf"\d{{{rest}}}" if rest else ""))
    branches.append(text)
    return "0*(?:" + "|".join(branches) + ")"


def path_id(name: str) -> dict[str, Any]:
    """The OpenAPI description of an ``<id:name>`` path part (the bound ``IdConverter`` enforces)."""
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}


class IdConverter(BoundedIntConverter):
    """``<id:...>``: a row id, 0 to ``MAX_ID``, with the bound in the regex.

    Werkzeug picks a rule (by path, then method) before it converts the values, and a
    value ``to_python`` refuses ends the search with the methods seen so far: with only
    the bounded ``int``, an out-of-range id was a 404 on a path's first-registered
    method and a 405 on the others.  A part the regex does not match names no rule:
    404 for every method."""

    regex = _digits_up_to(MAX_ID)


def api_blueprints() -> list[Blueprint]:
    """The blueprint (``bp``) of every module of this package, by module name."""
    blueprints = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "bp", None), Blueprint):
            blueprints.append(module.bp)
    return blueprints


def register_routes(app: Flask) -> None:
    """The API's URL rules and views, without the request hooks (``build_spec`` reads them)."""
    # Before the API's rules are added: they are compiled with the converters known then.
    app.url_map.converters["id"] = IdConverter
    for bp in api_blueprints():
        app.register_blueprint(bp)


def register_blueprints(app: Flask) -> None:
    for bp in api_blueprints():
        csrf.exempt(bp)  # bearer tokens only: no cookie to forge
    register_routes(app)
    _check_query_parameters_against_the_description(app)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):  # type: ignore[no-untyped-def]
        return error_response(error.status, error.message, error.field, **error.extra)

    @app.errorhandler(404)
    def _not_found(error):  # type: ignore[no-untyped-def]
        if request.path.startswith("/api/"):
            return error_response(404, "no such resource")
        from inventory.web import render_error_page  # the dashboard's page, also for unknown URLs

        return render_error_page(error)

    @app.errorhandler(405)
    def _method_not_allowed(error):  # type: ignore[no-untyped-def]
        if request.path.startswith("/api/"):
            allowed = sorted(getattr(error, "valid_methods", None) or ())
            response, status = error_response(405, f"method {request.method} not allowed here"
                                              + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
            if allowed:
                response.headers["Allow"] = ", ".join(allowed)
            return response, status
        return error, 405


def _operations(app: Flask) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, Any]]]:
    """The OpenAPI document of ``app`` and (endpoint, METHOD) -> its operation (with the path
    item's parameters merged in)."""
    from inventory.api.openapi import build_spec, openapi_path

    spec = build_spec(app)
    operations: dict[tuple[str, str], dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path_item = spec["paths"].get(openapi_path(rule.rule), {})
        for method in rule.methods or ():
            operation = path_item.get(method.lower())
            if isinstance(operation, dict):
                operations[(rule.endpoint, method)] = {
                    **operation, "parameters": [*path_item.get("parameters", []),
                                                *operation.get("parameters", [])]}
    return spec, operations


def _documented_parameters(app: Flask) -> dict[tuple[str, str], dict[str, bool]]:
    """(endpoint, METHOD) -> {query parameter: may it repeat} from the OpenAPI description."""
    _spec, operations = _operations(app)
    return {key: {p["name"]: (p.get("schema") or {}).get("type") == "array"
                  for p in operation["parameters"] if p.get("in") == "query"}
            for key, operation in operations.items()}


def documented_query_parameters(app: Flask) -> dict[tuple[str, str], frozenset[str]]:
    """(endpoint, METHOD) -> the query parameters the OpenAPI description lists for it."""
    return {key: frozenset(params) for key, params in _documented_parameters(app).items()}


def _check_query_parameters_against_the_description(app: Flask) -> None:
    """Unknown query parameters are reported, never silently ignored; so is a single-valued
    parameter given twice with different values (the views read the first one).  A JSON
    body is checked against the operation's documented schema before the view sees it.

    The OpenAPI description is the list of what each route takes and the schema of
    what it accepts, so the documentation and the behaviour cannot drift apart (a
    misspelt filter such as ``?critcality=critical`` would otherwise quietly return
    everything, and a body the description forbids can never be accepted).
    """
    from inventory.api.schema_check import body_validators

    spec, operations = _operations(app)
    documented = {key: {p["name"]: (p.get("schema") or {}).get("type") == "array"
                        for p in operation["parameters"] if p.get("in") == "query"}
                  for key, operation in operations.items()}
    bodies = body_validators(spec, operations)

    @app.before_request
    def _check_query_parameters():  # type: ignore[no-untyped-def]
        if not request.path.startswith("/api/"):
            return None
        key = (request.endpoint or "", request.method)
        params = documented.get(key)
        if params is not None and request.args:
            unknown = sorted(set(request.args) - set(params))
            if unknown:
                listed = ", ".join(sorted(params)) or "none"
                return error_response(400, f"unknown query parameter {unknown[0]!r} (this route takes: "
                                      f"{listed})", unknown[0])
            for name in sorted(request.args):
                if not params[name] and len(set(request.args.getlist(name))) > 1:
                    return error_response(400, f"{name} is given more than once with different values; "
                                          "give it once", name)
        check = bodies.get(key)
        if check is not None:
            check()
        return None
