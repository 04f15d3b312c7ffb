"""JSON API: blast radius, saved scenarios and incidents.

``GET /api/v1/impact`` takes the scope as query parameters (bookmarkable);
``POST /api/v1/impact`` takes it as JSON, with optional ``as_of`` and
``what_if``.  Both only read (a read token is enough).  A bad scope is a 400
naming the field, with close-name suggestions.
"""
from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from inventory.api import bounded_int, error_response, json_object, path_id
from inventory.api.schema_parts import any_case, query, rule, text
from inventory.app_db import get_engine, get_session
from inventory.auth import current_actor, require_role
from inventory.choices import OS_FAMILIES
from inventory.db import read_session
from inventory.impact import ScopeError, backend, blast_radius
from inventory.impact.engine import parse_as_of
from inventory.impact.whatif import MAX_ITEMS as MAX_WHAT_IF_ITEMS
from inventory.impact.whatif import MAX_MIN_UP, MAX_PLAN_NAME, MAX_REPLICAS
from inventory.services import incidents as svc

bp = Blueprint("api_impact", __name__, url_prefix="/api/v1")


@bp.record_once
def _engine_settings(state):  # type: ignore[no-untyped-def]
    """The impact graph's snapshots live under the app's instance folder (unless configured).
    A server (gunicorn) loads the compiled kernel as it starts when Numba's cache holds it: in
    the master when the app is preloaded, so the workers share it, else in each worker before
    it serves."""
    from inventory.impact import snapshot

    snapshot.use_instance_path(state.app.instance_path)
    if "gunicorn.arbiter" in sys.modules:
        backend.load_if_cached()


@bp.before_app_request
def _load_compiled_kernel() -> None:
    """At a worker's first request (any page), start loading the compiled kernel in the
    background; until it is ready blast radii are answered with NumPy (inventory.impact.backend).
    Not at app creation: a gunicorn master that preloads the app must not start threads."""
    backend.start_loading()

MAX_LIMIT = 100_000
# Pages of more hits than this (and the full list) are streamed (ImpactResult.iter_json).
STREAM_FROM = 1000
MAX_OFFSET = 10_000_000
_LIST_PARAMS = {"product": "products", "os": "os", "region": "regions", "account": "accounts",
                "environment": "environments", "tag": "tags"}
_POST_FIELDS = {"scope", "as_of", "what_if", "limit", "offset"}


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


def _scope_error(exc: ScopeError):  # type: ignore[no-untyped-def]
    return error_response(400, exc.message, exc.field, suggestions=exc.suggestions)


def _range_message(name: str, lo: int, hi: int) -> str:
    return f"{name} must be a whole number from {lo} to {hi}"


def _query_int(raw: str | None, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """A number from the query string: ASCII digits only."""
    if raw is None or raw == "":
        return default
    value = bounded_int(raw, lo, hi)
    if value is None:
        raise BadRequest(_range_message(name, lo, hi), name)
    return value


def _body_int(value: Any, name: str, default: int | None, lo: int, hi: int) -> int | None:
    """A number from a JSON body: a JSON integer (not "5", not true)."""
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 5.0 is a whole number in JSON (and JSON Schema)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(_range_message(name, lo, hi) + " (a JSON number)", name)
    return value


def _as_of(value: Any, *, from_query: bool) -> datetime | None:
    """``as_of`` as an aware UTC datetime.  The API's own rules: an empty query parameter is
    an empty form field (not given), while a blank or non-text value in a body is a 400
    naming it; the engine's parser refuses the rest (not ISO 8601, beyond UTC's years) with
    a ScopeError naming ``as_of``."""
    if value is None or (from_query and value == ""):
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("as_of must be an ISO 8601 date/time such as 2024-07-19T04:09:00Z, or null", "as_of")
    text = value.strip()
    if text.endswith("z"):  # ISO 8601 allows it; Python's parser wants the capital
        text = text[:-1] + "Z"
    return parse_as_of(text)


def _check_scope_types(scope: dict[str, Any]) -> None:
    # The scope parser reads any non-string vendor as a missing one.
    vendor = scope.get("vendor")
    if vendor is not None and not isinstance(vendor, str):
        raise BadRequest("vendor must be a string (a vendor name or alias)", "vendor")


def _scope_from_args() -> dict[str, Any]:
    args = request.args
    scope: dict[str, Any] = {}
    for name in ("vendor", "version"):
        if args.get(name):
            scope[name] = args[name]
    for param, field in _LIST_PARAMS.items():
        values = [v for raw in args.getlist(param) + args.getlist(field) for v in raw.split(",") if v.strip()] \
            if param != "tag" else [v for v in args.getlist("tag") + args.getlist("tags") if v.strip()]
        if values:
            scope[field] = values
    known = {"vendor", "version", "as_of", "limit", "offset", "tags", *_LIST_PARAMS, *_LIST_PARAMS.values()}
    unknown = sorted(set(args) - known)
    if unknown:
        raise BadRequest(f"unknown parameter {unknown[0]!r}", unknown[0])
    return scope


def _impact_response(scope: Any, as_of: datetime | None, what_if: Any, limit: int | None,
                     offset: int):  # type: ignore[no-untyped-def]
    if what_if is not None and not isinstance(what_if, dict):
        raise BadRequest("what_if must be an object", "what_if")
    # The engine reads committed data on its own connection; the request's session is
    # only used for alias lookups, through a read session that never takes a write lock.
    with read_session(get_engine()) as db:
        result = blast_radius(db, scope, as_of=as_of, what_if=what_if or None)
        # A page of hits comes with at most as many seeds (the totals count them all).
        if limit is not None and limit <= STREAM_FROM:
            return jsonify(result.to_dict(limit=limit, offset=offset, seeds_limit=limit))
        # A long list (every hit of a top vendor: tens of thousands, with paths) is streamed:
        # written a chunk at a time from the graph, never all built as Python objects.
        return Response(result.iter_json(limit=limit, offset=offset, seeds_limit=limit),
                        mimetype="application/json")


def _query_page() -> tuple[int | None, int]:
    limit = _query_int(request.args.get("limit"), "limit", None, 1, MAX_LIMIT)
    offset = _query_int(request.args.get("offset"), "offset", 0, 0, MAX_OFFSET) or 0
    return limit, offset


@bp.route("/impact", methods=["GET", "POST"])
@require_role("viewer")
def impact():  # type: ignore[no-untyped-def]
    """Blast radius of an outage scope (a query: computes, never writes)."""
    try:
        if request.method == "GET":
            scope = _scope_from_args()
            as_of = _as_of(request.args.get("as_of"), from_query=True)
            limit, offset = _query_page()
            return _impact_response(scope, as_of, None, limit, offset)
        body = json_object()
        unknown = sorted(set(body) - _POST_FIELDS - _SCOPE_FIELDS)
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}", unknown[0])
        scope = body.get("scope")
        if scope is None:   # the scope's fields given at the top level
            scope = {k: v for k, v in body.items() if k not in _POST_FIELDS}
        elif set(body) & _SCOPE_FIELDS:
            field = min(set(body) & _SCOPE_FIELDS)
            raise BadRequest(f"{field!r} is a scope field: give it inside scope, not next to it", field)
        if not isinstance(scope, dict):
            raise BadRequest("scope must be an object", "scope")
        _check_scope_types(scope)
        as_of = _as_of(body.get("as_of"), from_query=False)
        limit = _body_int(body.get("limit"), "limit", None, 1, MAX_LIMIT)
        offset = _body_int(body.get("offset"), "offset", 0, 0, MAX_OFFSET) or 0
        return _impact_response(scope, as_of, body.get("what_if"), limit, offset)
    except ScopeError as exc:
        return _scope_error(exc)
    except BadRequest as exc:
        return error_response(exc.status, exc.message, exc.field)


def _fail(exc: Exception):  # type: ignore[no-untyped-def]
    get_session().rollback()
    if isinstance(exc, ScopeError):
        return _scope_error(exc)
    if isinstance(exc, svc.IncidentError):
        return error_response(exc.status, exc.message, exc.field)
    if isinstance(exc, BadRequest):
        return error_response(exc.status, exc.message, exc.field)
    raise exc


def _refuse_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; this route takes: {', '.join(sorted(allowed))}",
                         unknown[0])


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name} must be text", name)
    return value


# ---------------------------------------------------------------- incidents

@bp.post("/incidents")
def declare_incident():  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        body = json_object()
        _refuse_unknown(body, {"title", "scope", "scenario"})
        scope = body.get("scope")
        ref = body.get("scenario")
        if ref is not None:
            if scope is not None:
                raise BadRequest("give a scope or a scenario, not both", "scenario")
            if isinstance(ref, bool) or not isinstance(ref, (int, str)):
                raise BadRequest("scenario must be a scenario id or name", "scenario")
            scope = svc.get_scenario(db, ref).scope
        if not isinstance(scope, dict):
            raise BadRequest("scope must be an object", "scope")
        _check_scope_types(scope)
        if not isinstance(body.get("title"), str):
            raise BadRequest("title is required (text)", "title")
        incident = svc.declare_incident(db, scope, body["title"], current_actor())
        db.commit()
    except (ScopeError, svc.IncidentError, BadRequest) as exc:
        return _fail(exc)
    return jsonify(svc.incident_to_dict(db, incident)), 201


@bp.get("/incidents")
def list_incidents():  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        incidents = svc.list_incidents(db, request.args.get("status") or None)
    except svc.IncidentError as exc:
        return _fail(exc)
    items = [svc.incident_to_dict(db, i) for i in incidents]
    return jsonify(items=items, count=len(items))


@bp.get("/incidents/<id:incident_id>")
def get_incident(incident_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        limit, offset = _query_page()
        incident = svc.get_incident(db, incident_id)
    except (svc.IncidentError, BadRequest) as exc:
        return _fail(exc)
    return jsonify(svc.incident_to_dict(db, incident, with_assets=True, limit=limit, offset=offset))


@bp.post("/incidents/<id:incident_id>/recovered")
def mark_recovered(incident_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        body = json_object()
        _refuse_unknown(body, {"asset_ids", "note"})
        ids = body.get("asset_ids")
        if not isinstance(ids, list):
            raise BadRequest("asset_ids must be a list of asset ids or natural keys", "asset_ids")
        note = _optional_text(body, "note")
        changed = svc.mark_recovered(db, incident_id, ids, current_actor(), note)
        incident = svc.get_incident(db, incident_id)
        db.commit()
    except (svc.IncidentError, BadRequest) as exc:
        return _fail(exc)
    return jsonify(marked=changed, progress=svc.incident_progress(incident))


@bp.post("/incidents/<id:incident_id>/resolve")
def resolve_incident(incident_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        body = json_object(optional=True)  # a bare POST resolves
        _refuse_unknown(body, {"note"})
        note = _optional_text(body, "note")
        incident = svc.resolve_incident(db, incident_id, current_actor(), note)
        db.commit()
    except (svc.IncidentError, BadRequest) as exc:
        return _fail(exc)
    return jsonify(svc.incident_to_dict(db, incident))


# ---------------------------------------------------------------- scenarios

@bp.get("/scenarios")
def list_scenarios():  # type: ignore[no-untyped-def]
    items = [svc.scenario_to_dict(s) for s in svc.list_scenarios(get_session())]
    return jsonify(items=items, count=len(items))


@bp.post("/scenarios")
def save_scenario():  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        body = json_object()
        _refuse_unknown(body, {"name", "scope", "description"})
        if not isinstance(body.get("scope"), dict):
            raise BadRequest("scope must be an object", "scope")
        _check_scope_types(body["scope"])
        if not isinstance(body.get("name"), str):
            raise BadRequest("name is required (text)", "name")
        description = _optional_text(body, "description")
        scenario = svc.save_scenario(db, body["name"], body["scope"], current_actor(), description)
        db.commit()
    except (ScopeError, svc.IncidentError, BadRequest) as exc:
        return _fail(exc)
    return jsonify(svc.scenario_to_dict(scenario)), 201


@bp.get("/scenarios/<id:scenario_id>")
def get_scenario(scenario_id: int):  # type: ignore[no-untyped-def]
    try:
        scenario = svc.get_scenario(get_session(), scenario_id)
    except svc.IncidentError as exc:
        return _fail(exc)
    return jsonify(svc.scenario_to_dict(scenario))


@bp.delete("/scenarios/<id:scenario_id>")
def delete_scenario(scenario_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        svc.delete_scenario(db, scenario_id, current_actor())
        db.commit()
    except svc.IncidentError as exc:
        return _fail(exc)
    return "", 204


@bp.get("/scenarios/<id:scenario_id>/impact")
def run_scenario(scenario_id: int):  # type: ignore[no-untyped-def]
    try:
        as_of = _as_of(request.args.get("as_of"), from_query=True)
        limit, offset = _query_page()
        scope = svc.get_scenario(get_session(), scenario_id).scope
        return _impact_response(scope, as_of, None, limit, offset)
    except (ScopeError, svc.IncidentError, BadRequest) as exc:
        return _fail(exc)


# ---------------------------------------------------------------- OpenAPI

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_STRS = {"type": "array", "items": _STR}
_DT = {"type": ["string", "null"], "format": "date-time"}
_COUNTS = {"type": "object", "properties": {"down": _INT, "degraded": _INT, "total": _INT}}
_PLAN = {"type": "object", "required": ["id", "name", "status", "via"], "properties": {
    "id": {"type": ["integer", "null"], "description": "null for a plan added by a what-if"},
    "name": _STR, "status": {"type": "string", "enum": ["current", "stale", "never_exercised"]},
    "via": {"type": "string", "enum": ["asset", "product", "vendor", "service"]}}}
_PATH_STEP = {"type": "object", "required": ["asset_id", "name", "edge_kind"], "properties": {
    "asset_id": _INT, "natural_key": _STR, "name": _STR,
    "edge_kind": {"type": ["string", "null"],
                  "description": "kind of the dependency linking this step to the next; null on the seed"}}}
_ERR = {"description": "Bad scope or request: names the field, with suggestions",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScopeProblem"}}}}
_NOT_FOUND = {"description": "No such incident or scenario",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(name: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


_ID = path_id("incident_id")
_SID = path_id("scenario_id")
_PAGE = [query("limit", "Return at most this many hits (and seeds) / incident assets",
               {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, empty=True),
         query("offset", "Skip this many hits/assets", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
               empty=True)]
_AS_OF_SCHEMA = {"anyOf": [{"type": "string", "format": "date-time"},
                           {"type": "string", "format": "date", "description": "midnight UTC"}]}
_AS_OF = query("as_of", "Answer for a past moment (ISO 8601)", _AS_OF_SCHEMA, empty=True)
_OS_FAMILY = {**any_case(OS_FAMILIES), "description": "one of " + ", ".join(OS_FAMILIES) + " (any case)"}
_NAME = text(required=True)


def _one_or_many(item: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    """What the scope parser takes for a list field: one value, a list of them, or null/'' (none)."""
    schema: dict[str, Any] = {"anyOf": [{"type": "null"}, {"const": ""}, item, {"type": "array", "items": item}]}
    if description:
        schema["description"] = description
    return schema


_PRODUCTS = rule(_one_or_many(_NAME, "Narrow to these products"), "products of the vendor")
_REGIONS = rule(_one_or_many(_NAME), "regions or locations some asset is in")
_ACCOUNTS = rule(_one_or_many(_NAME), "accounts or subscriptions some asset is in")
_ENVIRONMENTS = rule(_one_or_many(_NAME), "environments some asset is in")
_OS = _one_or_many(_OS_FAMILY)
_TAGS = rule({"anyOf": [
    {"type": "null"}, {"const": ""}, _NAME, {"type": "array", "items": _NAME},
    {"type": "object", "propertyNames": _NAME,
     "additionalProperties": {"type": ["string", "number", "boolean"]}}],
    "description": "{name: value}, or 'name:value' strings"}, "a 'name:value' (or 'name=value') string has a name")
_SCOPE_PROPERTIES: dict[str, Any] = {
    "vendor": rule({**_NAME, "description": "Vendor name or alias"}, "a vendor or alias in the inventory"),
    "products": _PRODUCTS, "product": _PRODUCTS,
    "version": rule({"type": ["string", "null"],
                     "description": "PEP 440 specifiers, e.g. '>=7.11' or '>=7.11,<7.16'; a bare '7.11' "
                                    "means '==7.11.*'"}, "PEP 440 version specifiers"),
    "os": _OS, "os_family": _OS,
    "regions": _REGIONS, "region": _REGIONS, "accounts": _ACCOUNTS, "account": _ACCOUNTS,
    "environments": _ENVIRONMENTS, "environment": _ENVIRONMENTS, "tags": _TAGS, "tag": _TAGS,
}
_NOT_NEXT_TO_SCOPE = {"not": {}, "description": "a scope field: give it inside scope, not next to it"}
# The scope's fields, also accepted at the top level of POST /impact (every spelling).
_SCOPE_FIELDS = frozenset(_SCOPE_PROPERTIES)
_PAGE_PROPERTIES = {
    "as_of": {"anyOf": [*_AS_OF_SCHEMA["anyOf"], {"type": "null"}]},
    "what_if": {"oneOf": [_ref("WhatIf"), {"type": "null"}]},
    "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_LIMIT},
    "offset": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_OFFSET},
}
_ASSET_KEY = rule(_NAME, "an asset's natural key in the inventory")

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Scope": {"type": "object", "required": ["vendor"], "additionalProperties": False,
              "description": "An outage scope. The singular spellings product, region, account, environment, "
                             "os_family and tag are the same as products, regions, accounts, environments, os "
                             "and tags (given both, the values are joined).",
              "properties": _SCOPE_PROPERTIES},
    "WhatIf": rule({
        "type": "object", "description": "Hypothetical changes, answered without writing.",
        "additionalProperties": False,
        "properties": {
            "remove_dependencies": {
                "type": "array", "maxItems": MAX_WHAT_IF_ITEMS,
                "items": {"oneOf": [
                    {"type": "array", "prefixItems": [_ASSET_KEY, _ASSET_KEY], "minItems": 2, "maxItems": 2},
                    {"type": "object", "required": ["dependent", "dependency"], "additionalProperties": False,
                     "properties": {"dependent": _ASSET_KEY, "dependency": _ASSET_KEY}}]},
                "description": "[dependent key, dependency key] pairs"},
            "add_replicas": {"type": "array", "maxItems": MAX_WHAT_IF_ITEMS, "items": {"oneOf": [
                _ASSET_KEY,
                {"type": "object", "required": ["asset"], "additionalProperties": False,
                 "properties": {"asset": _ASSET_KEY, "count": {"type": "integer", "minimum": 1,
                                                               "maximum": MAX_REPLICAS}}}]}},
            "set_min_up": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1,
                                                                      "maximum": MAX_MIN_UP}},
            "add_plans": {"type": "array", "maxItems": MAX_WHAT_IF_ITEMS, "items": {
                "type": "object", "required": ["name"], "additionalProperties": False,
                "properties": {
                    "name": text(MAX_PLAN_NAME, required=True),
                    "asset": _STR, "vendor": _STR, "product": _STR,
                    "status": {"type": "string", "enum": ["current", "stale", "never_exercised"]}}}}}},
        "asset keys, vendors and products exist; set_min_up names groups; counts are JSON integers; "
        "a plan covers one of an asset, a vendor or a vendor's product"),
    "ImpactRequest": {
        "type": "object", "additionalProperties": False,
        "description": "The scope in 'scope', or its fields at the top level (not both).",
        "properties": {"scope": {"oneOf": [_ref("Scope"), {"type": "null"}]}, **_SCOPE_PROPERTIES,
                       **_PAGE_PROPERTIES},
        "if": {"required": ["scope"], "properties": {"scope": {"type": "object"}}},
        "then": {"properties": {name: _NOT_NEXT_TO_SCOPE for name in _SCOPE_PROPERTIES}},
        "else": {"required": ["vendor"]}},
    "Hit": {"type": "object", "required": ["asset_id", "natural_key", "name", "kind", "status", "hops", "seed",
                                           "path", "plans", "gap", "services", "criticality"], "properties": {
        "asset_id": _INT, "natural_key": _STR, "name": _STR, "kind": _STR, "provider": _NSTR, "account": _NSTR,
        "region": _NSTR, "os_family": _NSTR, "environment": _NSTR, "criticality": _STR, "owner": _NSTR,
        "status": {"type": "string", "enum": ["down", "degraded"]},
        "hops": {"type": "integer", "description": "Shortest chain of causing edges back to a seed"},
        "seed": {"type": "boolean"},
        "path": {"type": "array", "items": _PATH_STEP, "description": "From this asset back to a seed"},
        "plans": {"type": "array", "items": _PLAN}, "gap": {"type": "boolean", "description": "No plan at all"},
        "services": {"type": "array", "items": _STR, "description": "Business services depending on it"}}},
    "VersionUnknown": {"type": "object", "required": ["asset_id", "natural_key", "name", "installations"],
                       "properties": {
        "asset_id": _INT, "natural_key": _STR, "name": _STR, "kind": _STR, "provider": _NSTR, "region": _NSTR,
        "os_family": _NSTR, "criticality": _STR,
        "status": {"type": ["string", "null"], "enum": ["down", "degraded", None],
                   "description": "Its status when it is hit anyway (through a dependency), else null"},
        "installations": {"type": "array", "items": {"type": "object", "properties": {
            "product": _STR, "version": _NSTR, "source": _NSTR,
            "reason": {"type": "string", "description": "Why the version cannot be placed in the range"},
            "attributes": {"type": "object", "description": "What the source did say (handler_version, "
                                                            "image_version...)"}}}}}},
    "ImpactTotals": {"type": "object", "properties": {
        "hits": _INT, "seeds": _INT,
        "version_unknown": {"type": "integer", "description": "Assets listed in version_unknown"},
        "by_status": {"type": "object", "properties": {"down": _INT,
                                                                                  "degraded": _INT}},
        "by_criticality": {"type": "object", "additionalProperties": _COUNTS},
        "by_service": {"type": "array", "items": {"type": "object", "properties": {
            "asset_id": _INT, "natural_key": _STR, "name": _STR, "status": _STR, "hops": _INT,
            "criticality": _STR}}},
        "by_account": {"type": "array", "items": {"type": "object"}},
        "by_region": {"type": "array", "items": {"type": "object"}},
        "by_kind": {"type": "object", "additionalProperties": _COUNTS},
        "by_os": {"type": "object", "additionalProperties": _COUNTS},
        "plan_coverage": {"type": "object", "properties": {
            "current": _INT, "never_exercised": _INT, "stale_only": _INT, "gap": _INT}}}},
    "ImpactConfidence": {"type": "object", "properties": {
        "scopes": {"type": "array", "items": {"type": "object", "properties": {
            "scope": _STR, "assets": _INT, "last_success": _DT, "latest_status": _NSTR, "latest_at": _DT,
            "error": _NSTR}}},
        "incomplete_scopes": _STRS, "oldest_last_success": _DT, "newest_last_success": _DT,
        "manual_assets": _INT, "manual_sample": _STRS, "unscoped_assets": _INT,
        "unversioned_installations": {"type": "object", "properties": {"count": _INT, "sample": _STRS}},
        "unconfirmed_at_as_of": {"type": "object", "properties": {"count": _INT, "sample": _STRS}},
        "scopes_total": {"type": "integer", "description": "collection scopes of the hit assets (\"scopes\" "
                                                           "lists those that did not succeed first, at most 500)"},
        "software_unconfirmed": {
            "type": "object", "description": "assets whose software the latest collection of their scope could "
                                             "not read (SSM inventory or VM extensions failing): left as it was",
            "properties": {"count": _INT, "sample": _STRS, "hits": _INT, "hit_sample": _STRS}},
        "graph_lag": {"type": ["object", "null"],
                      "description": "set when the answer came from the previous in-memory graph (at most "
                                     "30 s behind the inventory: age_seconds) while the newest "
                                     "changes are being loaded",
                      "properties": {"graph_version": _INT, "inventory_version": _INT,
                                     "age_seconds": {"type": "number"}}},
        "notes": _STRS}},
    "ImpactResult": {"type": "object", "required": ["scope", "as_of", "seeds", "hits", "totals", "confidence"],
                     "properties": {
                         "scope": _ref("Scope"), "as_of": _DT, "computed_at": {"type": "string",
                                                                                "format": "date-time"},
                         "seeds": {"type": "array", "items": {"type": "object", "properties": {
                             "asset_id": _INT, "natural_key": _STR, "name": _STR,
                             "matched": {"type": "object"}}}},
                         "hits": {"type": "array", "items": _ref("Hit")},
                         "version_unknown": {
                             "type": "array", "items": _ref("VersionUnknown"),
                             "description": "Assets running the scope's products at a version the range "
                                            "cannot place (not hits): check them by hand. Capped like seeds."},
                         "totals": _ref("ImpactTotals"), "confidence": _ref("ImpactConfidence"),
                         "page": {"type": "object", "properties": {
                             "offset": _INT, "limit": {"type": ["integer", "null"]}, "returned": _INT,
                             "total": _INT, "seeds_returned": _INT, "seeds_total": _INT,
                             "version_unknown_returned": _INT, "version_unknown_total": _INT}},
                         "what_if": {"type": "object", "properties": {
                             "applied": _ref("WhatIf"), "baseline_totals": _ref("ImpactTotals"),
                             "changes": {"type": "object"}}}}},
    "ScopeProblem": {"type": "object", "required": ["error", "message"], "properties": {
        "error": _STR, "message": _STR, "field": _STR, "suggestions": _STRS}},
    "IncidentProgress": {"type": "object", "properties": {
        "status": _STR, "total": _INT, "recovered": _INT, "remaining": _INT, "percent": {"type": "number"},
        "by_status": {"type": "object"}}},
    "IncidentAsset": {"type": "object", "properties": {
        "asset_id": {"type": ["integer", "null"]}, "natural_key": _STR, "name": _STR, "kind": _STR,
        "status": _STR, "hops": _INT, "criticality": _STR, "seed": {"type": "boolean"},
        "path": {"type": "array", "items": _PATH_STEP}, "plans": {"type": "array", "items": _PLAN},
        "gap": {"type": "boolean"}, "services": _STRS, "provider": _NSTR, "account": _NSTR, "region": _NSTR,
        "os_family": _NSTR, "recovered_at": _DT, "recovered_by": _NSTR, "note": _NSTR}},
    "Incident": {"type": "object", "required": ["id", "title", "status", "scope", "progress"], "properties": {
        "id": _INT, "title": _STR, "status": {"type": "string", "enum": ["open", "resolved"]},
        "scope": _ref("Scope"), "declared_at": _DT, "declared_by": _NSTR, "resolved_at": _DT,
        "summary": {"type": "object", "description": "Totals, confidence and seeds at declaration"},
        "progress": _ref("IncidentProgress"),
        "assets": {"type": "array", "items": _ref("IncidentAsset")}}},
    "IncidentRequest": {
        "type": "object", "required": ["title"], "additionalProperties": False,
        "description": "A scope, or a saved scenario (not both)",
        "properties": {
            "title": text(svc.MAX_TITLE, required=True), "scope": _ref("Scope"),
            "scenario": rule({"oneOf": [{"type": "integer"}, _NAME], "description": "A saved scenario's id or name"},
                             "names a saved scenario (404)")},
        "oneOf": [{"required": ["scope"]}, {"required": ["scenario"]}]},
    "RecoveryRequest": {"type": "object", "required": ["asset_ids"], "additionalProperties": False, "properties": {
        "asset_ids": rule({"type": "array", "minItems": 1, "items": {"oneOf": [{"type": "integer"}, {
            "type": "string", "pattern": "^[^\\u0000]*$"}]}, "description": "Asset ids or natural keys"},
            "each is one of the incident's assets"),
        "note": text(svc.MAX_TEXT)}},
    "ResolveRequest": {"type": "object", "additionalProperties": False, "properties": {
        "note": text(svc.MAX_TEXT)}},
    "Scenario": {"type": "object", "properties": {
        "id": _INT, "name": _STR, "description": _NSTR, "scope": _ref("Scope"), "created_by": _NSTR,
        "created_at": _DT}},
    "ScenarioRequest": {"type": "object", "required": ["name", "scope"], "additionalProperties": False,
                        "properties": {
                            "name": text(svc.MAX_NAME, required=True),
                            "scope": _ref("Scope"),
                            "description": text(svc.MAX_TEXT)}},
}

_SCOPE_PARAMS = [
    query("vendor", "Vendor name or alias", _SCOPE_PROPERTIES["vendor"], required=True),
    query("product", "Product of the vendor (repeatable; also comma-separated)",
          rule({"type": "string"}, "products of the vendor"), array=True, empty=True),
    query("version", "PEP 440 version range, e.g. >=7.11", _SCOPE_PROPERTIES["version"], empty=True),
    query("os", "OS family (repeatable; also comma-separated)", _OS_FAMILY, array=True, empty=True),
    query("region", "Provider region or location (repeatable; also comma-separated)",
          rule({"type": "string"}, "regions or locations some asset is in"), array=True, empty=True),
    query("account", "Account / subscription (repeatable; also comma-separated)",
          rule({"type": "string"}, "accounts or subscriptions some asset is in"), array=True, empty=True),
    query("environment", "Environment (repeatable; also comma-separated)",
          rule({"type": "string"}, "environments some asset is in"), array=True, empty=True),
    query("tag", "Tag as key:value (repeatable)",
          rule({"type": "string"}, "'name:value' (or 'name=value') with a name"), array=True, empty=True),
    _AS_OF,
    # The plural spellings of the JSON scope are accepted as well.
    query("products", "Same as product", rule({"type": "string"}, "products of the vendor"), array=True,
          empty=True),
    query("regions", "Same as region", rule({"type": "string"}, "regions or locations some asset is in"),
          array=True, empty=True),
    query("accounts", "Same as account", rule({"type": "string"}, "accounts or subscriptions some asset is in"),
          array=True, empty=True),
    query("environments", "Same as environment", rule({"type": "string"}, "environments some asset is in"),
          array=True, empty=True),
    query("tags", "Same as tag", rule({"type": "string"}, "'name:value' (or 'name=value') with a name"),
          array=True, empty=True),
]

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/impact": {
        "get": {"summary": "Blast radius of an outage scope", "operationId": "getImpact", "tags": ["impact"],
                "parameters": _SCOPE_PARAMS + _PAGE,
                "responses": {"200": _ok("ImpactResult"), "400": _ERR}},
        "post": {"summary": "Blast radius of a JSON scope, optionally as of a moment or under a what-if",
                 "operationId": "postImpact", "tags": ["impact"], "requestBody": _body("ImpactRequest"),
                 "responses": {"200": _ok("ImpactResult"), "400": _ERR}}},
    "/api/v1/incidents": {
        "get": {"summary": "Incidents, newest first", "operationId": "listIncidents", "tags": ["incidents"],
                "parameters": [query("status", "open or resolved", {"type": "string", "enum": ["open", "resolved"]},
                                     empty=True)],
                "responses": {"200": {"description": "Incidents", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"items": {"type": "array", "items": _ref("Incident")},
                                                     "count": _INT}}}}}, "400": _ERR}},
        "post": {"summary": "Declare an incident: snapshot the blast radius of a scope now (write token)",
                 "operationId": "declareIncident", "tags": ["incidents"], "requestBody": _body("IncidentRequest"),
                 "responses": {"201": _ok("Incident", "Declared"), "400": _ERR, "404": _NOT_FOUND}}},
    "/api/v1/incidents/{incident_id}": {
        "get": {"summary": "An incident with its snapshot assets and progress", "operationId": "getIncident",
                "tags": ["incidents"], "parameters": [_ID] + _PAGE,
                "responses": {"200": _ok("Incident"), "404": _NOT_FOUND}}},
    "/api/v1/incidents/{incident_id}/recovered": {
        "post": {"summary": "Mark assets recovered (write token)", "operationId": "markRecovered",
                 "tags": ["incidents"], "parameters": [_ID], "requestBody": _body("RecoveryRequest"),
                 "responses": {"200": {"description": "Marked", "content": {"application/json": {"schema": {
                     "type": "object", "properties": {"marked": _INT, "progress": _ref("IncidentProgress")}}}}},
                     "400": _ERR, "404": _NOT_FOUND, "409": _NOT_FOUND}}},
    "/api/v1/incidents/{incident_id}/resolve": {
        "post": {"summary": "Resolve an incident (write token)", "operationId": "resolveIncident",
                 "tags": ["incidents"], "parameters": [_ID],
                 "requestBody": {"required": False, "content": {"application/json": {
                     "schema": _ref("ResolveRequest")}}},
                 "responses": {"200": _ok("Incident"), "404": _NOT_FOUND, "409": _NOT_FOUND}}},
    "/api/v1/scenarios": {
        "get": {"summary": "Saved scenarios", "operationId": "listScenarios", "tags": ["scenarios"],
                "responses": {"200": {"description": "Scenarios", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"items": {"type": "array", "items": _ref("Scenario")},
                                                     "count": _INT}}}}}}},
        "post": {"summary": "Save (or replace) a named scope (write token)", "operationId": "saveScenario",
                 "tags": ["scenarios"], "requestBody": _body("ScenarioRequest"),
                 "responses": {"201": _ok("Scenario", "Saved"), "400": _ERR}}},
    "/api/v1/scenarios/{scenario_id}": {
        "get": {"summary": "A saved scenario", "operationId": "getScenario", "tags": ["scenarios"],
                "parameters": [_SID], "responses": {"200": _ok("Scenario"), "404": _NOT_FOUND}},
        "delete": {"summary": "Delete a scenario (write token)", "operationId": "deleteScenario",
                   "tags": ["scenarios"], "parameters": [_SID],
                   "responses": {"204": {"description": "Deleted"}, "404": _NOT_FOUND}}},
    "/api/v1/scenarios/{scenario_id}/impact": {
        "get": {"summary": "Run a saved scenario's scope", "operationId": "runScenario", "tags": ["scenarios"],
                "parameters": [_SID, _AS_OF] + _PAGE,
                "responses": {"200": _ok("ImpactResult"), "400": _ERR, "404": _NOT_FOUND}}},
}
