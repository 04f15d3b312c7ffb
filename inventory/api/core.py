"""JSON API: the inventory (assets, vendors) and the estate document (import / export).

Reads need a read token; ``POST /estate`` needs a write token.  The asset list
uses the same filters, sort orders and keyset pagination as the dashboard
(``inventory.services.assets``); the estate endpoints use the same importer and
exporter as ``planb import`` / ``planb export``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, jsonify, request, url_for

from inventory.api import (
    FLAG_SCHEMA,
    ApiError,
    ascii_digits,
    bounded_int,
    error_response,
    json_object,
    path_id,
    query_flag,
    read_json,
)
from inventory.api.schema_parts import every_field, http_url, query, rule, text
from inventory.app_db import get_session
from inventory.auth import current_actor
from inventory.choices import ASSET_KINDS, CRITICALITIES, ENVIRONMENTS, OS_FAMILIES, PROVIDERS, VENDOR_TIERS
from inventory.estate.exporter import export_estate
from inventory.estate.importer import ENTITY_TYPES, EstateError, import_and_commit
from inventory.estate.schema import ESTATE_SCHEMA
from inventory.ids import MAX_ID
from inventory.models import Asset, ContingencyPlan, PlanLink, Vendor
from inventory.services import assets as asset_svc
from inventory.services import vendor_summary
from inventory.services import vendors as vendor_service
from inventory.services.keyset import CursorError
from inventory.models.plan_status import plan_status, review_due

bp = Blueprint("api_core", __name__, url_prefix="/api/v1")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# API name -> dashboard filter name (the dashboard's form calls the OS filter "os").
_FILTER_PARAMS = {"provider": "provider", "account": "account", "region": "region", "os_family": "os",
                  "kind": "kind", "environment": "environment", "criticality": "criticality",
                  "vendor": "vendor", "retired": "retired", "q": "q"}
_RETIRED = {"false": "active", "active": "active", "true": "retired", "retired": "retired", "all": "all"}
_ASSET_LIST_PARAMS = set(_FILTER_PARAMS) | {"sort", "limit", "after"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def asset_summary(asset: Asset) -> dict[str, Any]:
    """The asset fields every listing shows."""
    return {
        "id": asset.id, "key": asset.natural_key, "name": asset.name, "kind": asset.kind,
        "provider": asset.provider, "account": asset.account, "region": asset.region, "zone": asset.zone,
        "hostname": asset.hostname, "cloud_instance_id": asset.cloud_instance_id,
        "os": {"family": asset.os_family, "name": asset.os_name, "version": asset.os_version},
        "environment": asset.environment, "criticality": asset.criticality, "owner": asset.owner,
        "tags": asset.tags or {}, "min_up": asset.min_up, "update_ring": asset.update_ring,
        "source": asset.source, "source_scope": asset.source_scope,
        "first_seen": _iso(asset.first_seen), "last_seen": _iso(asset.last_seen),
        "retired_at": _iso(asset.retired_at),
    }


def _asset_ref(asset: Asset) -> dict[str, Any]:
    return {"id": asset.id, "key": asset.natural_key, "name": asset.name, "kind": asset.kind,
            "criticality": asset.criticality, "retired_at": _iso(asset.retired_at)}


def _bad_param(field: str, message: str, suggestions: list[str] | None = None):  # type: ignore[no-untyped-def]
    extra = {"allowed": suggestions} if suggestions else {}
    return error_response(400, message, field, **extra)


# ---------------------------------------------------------------- assets

@bp.get("/assets")
def list_assets():  # type: ignore[no-untyped-def]
    """Assets, filtered, sorted from an allow-list and paged by keyset cursor."""
    unknown = sorted(set(request.args) - _ASSET_LIST_PARAMS)
    if unknown:
        return _bad_param(unknown[0], f"unknown query parameter {unknown[0]!r}", sorted(_ASSET_LIST_PARAMS))
    raw_limit = request.args.get("limit", "")
    limit = bounded_int(raw_limit, 1, MAX_LIMIT) if raw_limit else DEFAULT_LIMIT
    if limit is None:
        return _bad_param("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    retired = request.args.get("retired", "false").strip().lower()
    if retired not in _RETIRED:
        return _bad_param("retired", f"retired must be one of {', '.join(_RETIRED)}", list(_RETIRED))

    db = get_session()
    values = {_FILTER_PARAMS[name]: request.args.get(name, "") for name in _FILTER_PARAMS}
    values["retired"] = _RETIRED[retired]
    vendor_arg = values["vendor"].strip()
    if ascii_digits(vendor_arg):  # a vendor id works as well as a name
        # An id no column can hold names no vendor (and must not reach the database).
        vendor_id = bounded_int(vendor_arg, 0, MAX_ID)
        vendor = db.get(Vendor, vendor_id) if vendor_id is not None else None
        if vendor is None:
            return _bad_param("vendor", f"no vendor with id {vendor_arg}")
        values["vendor"] = vendor.name
    filters = asset_svc.AssetFilters.from_args(values)
    filters.retired = values["retired"]
    problems = filters.validate(db)
    if problems:
        api_name = {v: k for k, v in _FILTER_PARAMS.items()}
        first = problems[0]
        return _bad_param(api_name.get(first.field, first.field), first.message, first.suggestions)
    sort = request.args.get("sort") or asset_svc.DEFAULT_SORT
    try:
        asset_svc.parse_sort(sort)
    except asset_svc.FilterError as exc:
        return _bad_param("sort", exc.message, [s for k in exc.suggestions for s in (k, f"-{k}")])
    after = request.args.get("after") or None
    try:
        page = asset_svc.list_assets(db, filters, sort, cursor=after, limit=limit)
    except CursorError as exc:
        return _bad_param("after", f"{exc}; use the 'next' value of a previous page")
    total, capped = asset_svc.count_assets(db, filters)
    next_url = None
    if page.next_cursor:
        args = {k: v for k, v in request.args.items() if k != "after"}
        next_url = url_for("api_core.list_assets", **args, after=page.next_cursor)
    return jsonify(items=[asset_summary(a) for a in page.rows], next=page.next_cursor,
                   next_url=next_url, limit=limit, total=total, total_capped=capped)


@bp.get("/assets/<id:asset_id>")
def get_asset(asset_id: int):  # type: ignore[no-untyped-def]
    """One asset with its software, dependencies both ways and the plans that apply."""
    db = get_session()
    detail = asset_svc.asset_detail(db, asset_id)
    if detail is None:
        return error_response(404, f"no asset with id {asset_id}")
    asset: Asset = detail["asset"]
    body = asset_summary(asset)
    body.update(description=asset.description, attributes=asset.attributes or {},
                created_at=_iso(asset.created_at), updated_at=_iso(asset.updated_at))
    body["installations"] = [
        {"vendor": {"id": vendor.id, "name": vendor.name},
         "product": {"id": product.id, "name": product.name, "kind": product.kind},
         "version": inst.version, "source": inst.source,
         "first_seen": _iso(inst.first_seen), "last_seen": _iso(inst.last_seen)}
        for inst, product, vendor in detail["installations"]]
    body["dependencies"] = [{"asset": _asset_ref(other), "kind": dep.kind, "strength": dep.strength}
                            for dep, other in detail["depends_on"]]
    body["dependencies_total"] = detail["depends_on_total"]
    body["dependents"] = [{"asset": _asset_ref(other), "kind": dep.kind, "strength": dep.strength}
                          for dep, other in detail["depended_by"]]
    body["dependents_total"] = detail["depended_by_total"]
    hosting = detail["hosting_vendor"]
    body["hosting_vendor"] = {"id": hosting.id, "name": hosting.name} if hosting else None
    body["plans"] = [{"id": ref.plan.id, "name": ref.plan.name, "status": ref.status, "via": ref.via,
                      "owner": ref.plan.owner, "rto_minutes": ref.plan.rto_minutes,
                      "review_due": _iso(ref.review_due)} for ref in detail["plans"]]
    return jsonify(body)


# ---------------------------------------------------------------- vendors

def _vendor_fields(vendor: Vendor) -> dict[str, Any]:
    return {"id": vendor.id, "name": vendor.name, "tier": vendor.tier, "website": vendor.website,
            "description": vendor.description, "cloud_provider": vendor.cloud_provider,
            "has_alternative": vendor.has_alternative, "alternative": vendor.alternative,
            "exit_plan_documented": vendor.exit_plan_documented, "exit_plan_url": vendor.exit_plan_url}


def _assessment(a: Any) -> dict[str, Any]:
    return {"id": a.id, "assessed_on": a.assessed_on.isoformat(), "assessor": a.assessor,
            "scores": {"security": a.score_security, "update_practices": a.score_update_practices,
                       "resilience": a.score_resilience, "compliance": a.score_compliance},
            "score": vendor_summary.assessment_score(a),
            "staged_rollouts": a.staged_rollouts, "customer_update_control": a.customer_update_control,
            "rollback_supported": a.rollback_supported, "certifications": a.certifications or [],
            "findings": a.findings or [],
            "next_review_due": a.next_review_due.isoformat() if a.next_review_due else None,
            "notes": a.notes}


@bp.get("/vendors")
def list_vendors():  # type: ignore[no-untyped-def]
    """Every vendor with product and asset counts, concentration and review state."""
    db = get_session()
    summary = vendor_summary.vendor_rows(db)
    items = []
    for row in summary["rows"]:
        vendor = row["vendor"]
        items.append({
            **_vendor_fields(vendor), "products": row["products"], "assets": row["assets"],
            "critical_assets": row["critical_assets"], "share": row["share"], "score": row["score"],
            "review_due": row["review_due"].isoformat() if row["review_due"] else None,
            "review_state": row["review_state"]})
    items.sort(key=lambda v: v["name"])
    return jsonify(items=items, count=len(items), concentration_source=summary["concentration_source"])


@bp.patch("/vendors/<id:vendor_id>")
def patch_vendor(vendor_id: int):  # type: ignore[no-untyped-def]
    """Tier, alternative provider and exit plan (they feed the risk score); audited."""
    data = json_object()
    db = get_session()
    try:
        vendor = vendor_service.update_resilience(db, vendor_id, data, actor=current_actor())
    except vendor_service.NotFound as exc:
        db.rollback()
        return error_response(404, str(exc))
    except vendor_service.ValidationError as exc:
        db.rollback()
        return error_response(422, exc.message, exc.field)
    db.commit()
    return jsonify({field: getattr(vendor, field) for field in ("id", "name", *vendor_service.EDITABLE_FIELDS)})


@bp.get("/vendors/<id:vendor_id>")
def get_vendor(vendor_id: int):  # type: ignore[no-untyped-def]
    """One vendor: products with installed versions, aliases, assessments, plans, exposure."""
    db = get_session()
    detail = vendor_summary.vendor_detail(db, vendor_id)
    if detail is None:
        return error_response(404, f"no vendor with id {vendor_id}")
    vendor: Vendor = detail["vendor"]
    products = [{"id": row["product"]["id"], "name": row["product"]["name"], "kind": row["product"]["kind"],
                 "vendor_pushes_updates": row["product"]["vendor_pushes_updates"],
                 "installations": row["installations"],
                 "versions": [{"version": v, "count": n} for v, n in row["versions"]],
                 "more_versions": row["more_versions"]} for row in detail["products"]]
    product_ids = [p["id"] for p in products]
    conditions = [PlanLink.vendor_id == vendor.id]
    if product_ids:
        conditions.append(PlanLink.product_id.in_(product_ids))
    plans = list(db.scalars(sa.select(ContingencyPlan).join(PlanLink, PlanLink.plan_id == ContingencyPlan.id)
                            .where(sa.or_(*conditions)).distinct().order_by(ContingencyPlan.name)))
    aliases = [{"alias": a.alias, "pattern": a.is_pattern,
                "product": a.product.name if a.product is not None else None} for a in vendor.aliases]
    concentration = detail["concentration"]
    return jsonify({
        **_vendor_fields(vendor), "products": products, "aliases": aliases,
        "asset_count": detail["asset_count"], "critical_asset_count": detail["critical_count"],
        "concentration": {"share": concentration.get("share"),
                          "critical_assets": concentration.get("critical_assets"),
                          "source": detail["concentration_source"]},
        "assessments": [_assessment(a) for a in detail["assessments"]],
        "review_due": detail["review_due"].isoformat() if detail["review_due"] else None,
        "review_state": detail["review_state"],
        "plans": [{"id": p.id, "name": p.name, "status": plan_status(p), "owner": p.owner,
                   "review_due": _iso(review_due(p))} for p in plans],
    })


# ---------------------------------------------------------------- estate document

@bp.post("/estate")
def post_estate():  # type: ignore[no-untyped-def]
    """Import an estate document (JSON); all or nothing, like ``planb import``."""
    dry_run = query_flag("dry_run")
    # The importer names unstorable text by its entry and path itself (422, every error).
    document = read_json(check_text=False)
    if document is None:
        raise ApiError(400, "the body must be an estate document (a JSON object), not null")
    db = get_session()
    try:
        report = import_and_commit(db, document, source_name="API request", actor=current_actor(),
                                   dry_run=dry_run)
    except EstateError as exc:
        first = exc.problems[0]
        return error_response(422, first.describe(), exc.field, entry=first.entry, errors=exc.as_dicts())
    body = report.as_dict()
    body["dry_run"] = dry_run
    return jsonify(body), 200


@bp.get("/estate")
def get_estate():  # type: ignore[no-untyped-def]
    """The whole inventory as an estate document (what ``planb export`` writes)."""
    return jsonify(export_estate(get_session()))


# ---------------------------------------------------------------- OpenAPI

def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_SORTS = [s for key in asset_svc.SORTS for s in (key, f"-{key}")]
_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_DT = {"type": ["string", "null"], "format": "date-time"}
_ASSET_REF = every_field({"type": "object", "properties": {
    "id": {"type": "integer"}, "key": {"type": "string"}, "name": {"type": "string"},
    "kind": {"type": "string"}, "criticality": {"type": "string"}, "retired_at": _NULLABLE_DT}})
_EDGE = every_field({"type": "object", "properties": {
    "asset": _ASSET_REF, "kind": {"type": "string"}, "strength": {"type": "string", "enum": ["hard", "soft"]}}})
_COUNTS = {"type": "object", "properties": {k: {"type": "integer"} for k in ("created", "updated", "unchanged")}}

_VENDOR_FIELDS = {
    "id": {"type": "integer"}, "name": {"type": "string"},
    "tier": {"type": "string", "enum": list(VENDOR_TIERS)},
    "website": _NULLABLE_STR, "description": _NULLABLE_STR, "cloud_provider": _NULLABLE_STR,
    "has_alternative": {"type": "boolean"}, "alternative": _NULLABLE_STR,
    "exit_plan_documented": {"type": "boolean"}, "exit_plan_url": _NULLABLE_STR}
_REVIEW_STATE = {"type": "string", "enum": ["never", "overdue", "due", "scheduled", "unscheduled"]}
_NAMED = every_field({"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}})

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Asset": every_field({"type": "object", "properties": {
        "id": {"type": "integer"}, "key": {"type": "string", "description": "Natural key"},
        "name": {"type": "string"}, "kind": {"type": "string", "enum": list(ASSET_KINDS)},
        "provider": _NULLABLE_STR, "account": _NULLABLE_STR, "region": _NULLABLE_STR, "zone": _NULLABLE_STR,
        "hostname": _NULLABLE_STR, "cloud_instance_id": _NULLABLE_STR,
        "os": every_field({"type": "object", "properties": {
            "family": _NULLABLE_STR, "name": _NULLABLE_STR, "version": _NULLABLE_STR}}),
        "environment": _NULLABLE_STR, "criticality": {"type": "string", "enum": list(CRITICALITIES)},
        "owner": _NULLABLE_STR, "tags": {"type": "object"}, "min_up": _NULLABLE_INT,
        "update_ring": _NULLABLE_STR, "source": {"type": "string"}, "source_scope": _NULLABLE_STR,
        "first_seen": _NULLABLE_DT, "last_seen": _NULLABLE_DT, "retired_at": _NULLABLE_DT}}),
    "AssetPage": every_field({"type": "object", "properties": {
        "items": {"type": "array", "items": _ref("Asset")},
        "next": {"type": ["string", "null"], "description": "Pass as 'after' for the next page"},
        "next_url": _NULLABLE_STR, "limit": {"type": "integer"},
        "total": {"type": "integer", "description": "Matching assets, counted up to 10,000"},
        "total_capped": {"type": "boolean"}}}),
    "AssetDetail": {"allOf": [_ref("Asset"), every_field({"type": "object", "properties": {
        "description": _NULLABLE_STR, "attributes": {"type": "object"},
        "created_at": _NULLABLE_DT, "updated_at": _NULLABLE_DT,
        "installations": {"type": "array", "items": every_field({"type": "object", "properties": {
            "vendor": _NAMED,
            "product": every_field({"type": "object", "properties": {
                "id": {"type": "integer"}, "name": {"type": "string"}, "kind": {"type": "string"}}}),
            "version": _NULLABLE_STR, "source": {"type": "string"},
            "first_seen": _NULLABLE_DT, "last_seen": _NULLABLE_DT}})},
        "dependencies": {"type": "array", "items": _EDGE, "description": "What this asset depends on"},
        "dependencies_total": {"type": "integer"},
        "dependents": {"type": "array", "items": _EDGE, "description": "What depends on this asset"},
        "dependents_total": {"type": "integer"},
        "hosting_vendor": {"oneOf": [_NAMED, {"type": "null"}]},
        "plans": {"type": "array", "items": every_field({"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"},
            "status": {"type": "string", "enum": ["current", "stale", "never_exercised"]},
            "via": {"type": "string"}, "owner": _NULLABLE_STR, "rto_minutes": _NULLABLE_INT,
            "review_due": _NULLABLE_DT}})}}})]},
    "Vendor": every_field({"type": "object", "properties": {
        **_VENDOR_FIELDS,
        "products": {"type": "integer"}, "assets": {"type": "integer"},
        "critical_assets": {"type": "integer"}, "share": {"type": ["number", "null"]},
        "score": {"type": ["number", "null"]}, "review_due": {"type": ["string", "null"], "format": "date"},
        "review_state": _REVIEW_STATE}}),
    "VendorDetail": every_field({"type": "object", "properties": {
        **_VENDOR_FIELDS,
        "products": {"type": "array", "items": every_field({"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "kind": {"type": "string"},
            "vendor_pushes_updates": {"type": "boolean"}, "installations": {"type": "integer"},
            "versions": {"type": "array", "items": every_field({"type": "object", "properties": {
                "version": _NULLABLE_STR, "count": {"type": "integer"}}})},
            "more_versions": {"type": "integer"}}})},
        "aliases": {"type": "array", "items": every_field({"type": "object", "properties": {
            "alias": {"type": "string"}, "pattern": {"type": "boolean"}, "product": _NULLABLE_STR}})},
        "asset_count": {"type": "integer"}, "critical_asset_count": {"type": "integer"},
        "concentration": every_field({"type": "object", "properties": {
            "share": {"type": ["number", "null"]}, "critical_assets": {"type": ["integer", "null"]},
            "source": {"type": ["string", "null"]}}}),
        "assessments": {"type": "array", "items": {"type": "object"}},
        "review_due": {"type": ["string", "null"], "format": "date"}, "review_state": _REVIEW_STATE,
        "plans": {"type": "array", "items": every_field({"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"},
            "status": {"type": "string", "enum": ["current", "stale", "never_exercised"]},
            "owner": _NULLABLE_STR, "review_due": _NULLABLE_DT}})}}}),
    "EstateDocument": {k: v for k, v in ESTATE_SCHEMA.items() if k not in ("$schema", "$id")},
    "ImportReport": {"type": "object", "required": ["counts", "totals", "dry_run"], "properties": {
        "source": {"type": "string"}, "dry_run": {"type": "boolean"}, "totals": _COUNTS,
        "counts": {"type": "object", "properties": {e: _COUNTS for e in ENTITY_TYPES}}}},
    "EstateError": {"allOf": [_ref("Error"), {"type": "object", "properties": {
        "entry": _NULLABLE_STR,
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "entry": _NULLABLE_STR, "message": {"type": "string"}}}}}}]},
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/assets": {"get": {
        "summary": "List assets (filters, sort, keyset pagination)", "operationId": "listAssets",
        "tags": ["inventory"],
        "parameters": [
            query("provider", "Hosting provider", {"type": "string", "enum": list(PROVIDERS)}, empty=True),
            query("account", "Cloud account / subscription id", empty=True),
            query("region", "Region or location", empty=True),
            query("os_family", "OS family", {"type": "string", "enum": list(OS_FAMILIES)}, empty=True),
            query("kind", "Asset kind", {"type": "string", "enum": list(ASSET_KINDS)}, empty=True),
            query("environment", "Environment", {"type": "string", "enum": list(ENVIRONMENTS)}, empty=True),
            query("criticality", "Criticality", {"type": "string", "enum": list(CRITICALITIES)}, empty=True),
            query("vendor", "Vendor name or id: assets running its products or hosted on its cloud",
                  rule({"type": "string"}, "names a vendor in the inventory (400 with close names)"),
                  empty=True),
            query("retired", "false (default: active only), true (retired only) or all",
                  {"type": "string", "enum": list(_RETIRED)}),
            query("q", "Substring of name, natural key or hostname", empty=True),
            query("sort", "Sort order ('-' for descending)", {"type": "string", "enum": _SORTS}, empty=True),
            query("limit", f"Page size (1-{MAX_LIMIT}, default {DEFAULT_LIMIT})",
                  {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, empty=True),
            query("after", "Cursor: the 'next' value of the previous page",
                  rule({"type": "string"}, "a 'next' value this API returned (400 otherwise)"), empty=True)],
        "responses": {"200": _json(_ref("AssetPage"), "One page of assets")}}},
    "/api/v1/assets/{asset_id}": {"get": {
        "summary": "One asset with software, dependencies both ways and applicable plans",
        "operationId": "getAsset", "tags": ["inventory"], "parameters": [path_id("asset_id")],
        "responses": {"200": _json(_ref("AssetDetail"), "The asset"),
                      "404": _json(_ref("Error"), "No such asset")}}},
    "/api/v1/vendors": {"get": {
        "summary": "List vendors with product/asset counts and review state", "operationId": "listVendors",
        "tags": ["inventory"],
        "responses": {"200": _json(every_field({"type": "object", "properties": {
            "items": {"type": "array", "items": _ref("Vendor")}, "count": {"type": "integer"},
            "concentration_source": {"type": ["string", "null"]}}}), "All vendors, by name")}}},
    "/api/v1/vendors/{vendor_id}": {"get": {
        "summary": "One vendor: products and versions, aliases, assessments, plans",
        "operationId": "getVendor", "tags": ["inventory"], "parameters": [path_id("vendor_id")],
        "responses": {"200": _json(_ref("VendorDetail"), "The vendor"),
                      "404": _json(_ref("Error"), "No such vendor")}},
        "patch": {
            "summary": "Change a vendor's tier, alternative provider and exit plan (write token)",
            "operationId": "patchVendor", "tags": ["inventory"], "parameters": [path_id("vendor_id")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "properties": {
                    "tier": {"type": "string", "enum": list(VENDOR_TIERS)},
                    "has_alternative": {"type": "boolean"},
                    "alternative": {**text(500), "description": "null or '' clears it"},
                    "exit_plan_documented": {"type": "boolean"},
                    "exit_plan_url": http_url(1000)}}}}},
            "responses": {"200": _json(every_field({"type": "object", "properties": {
                "id": {"type": "integer"}, "name": {"type": "string"},
                **{k: v for k, v in _VENDOR_FIELDS.items() if k in vendor_service.EDITABLE_FIELDS}}}),
                "The vendor's editable fields after the change"),
                          "404": _json(_ref("Error"), "No such vendor"),
                          "422": _json(_ref("Error"), "A field is invalid (named in 'field')")}}},
    "/api/v1/estate": {
        "get": {"summary": "Export the inventory as an estate document", "operationId": "exportEstate",
                "tags": ["estate"],
                "responses": {"200": _json(_ref("EstateDocument"), "The estate document")}},
        "post": {"summary": "Import an estate document (write token; all or nothing, idempotent)",
                 "operationId": "importEstate", "tags": ["estate"],
                 "parameters": [query("dry_run", "Validate and count, then roll back (default false)",
                                      FLAG_SCHEMA)],
                 # The importer checks the document against this very schema (and much more) and
                 # answers 422 with every problem, so the shared body check leaves it alone.
                 "x-planb-body-check": "view",
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": rule(_ref("EstateDocument"),
                                    "entries must agree with each other and with the inventory: "
                                    "references resolve, names and cloud providers are unique, "
                                    "dates are real dates (422 lists every problem)")}}},
                 "responses": {"200": _json(_ref("ImportReport"), "Created/updated/unchanged per entity"),
                               "413": _json(_ref("Error"), "Body too large"),
                               "422": _json(_ref("EstateError"),
                                            "Invalid document; 'field' is the JSON path of the bad value")}}},
}
