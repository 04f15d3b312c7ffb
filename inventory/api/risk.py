"""JSON API: vendor risk scores, concentration, assessments, the review calendar and review packs."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from inventory.api import error_response
from inventory.api.schema_parts import query, rule, text, whole_number
from inventory.api.updates import check_json_types, invalid, json_body
from inventory.app_db import get_session
from inventory.auth import current_actor
from inventory.choices import ASSESSMENT_DOMAINS, FINDING_SEVERITIES, FINDING_STATUSES
from inventory.services import review as review_svc
from inventory.services import risk as svc
from inventory.web.downloads import content_disposition

bp = Blueprint("api_risk", __name__, url_prefix="/api/v1")


def _vendor(ref: str):  # type: ignore[no-untyped-def]
    try:
        return svc.find_vendor(get_session(), ref)
    except svc.NotFound:
        return None


@bp.get("/risk")
def risk_table():  # type: ignore[no-untyped-def]
    """Every vendor's score with each part's contribution, riskiest first."""
    rows = svc.cached_risk_table(get_session())
    return jsonify(vendors=rows, count=len(rows),
                   formula=[{"part": n, "max": m, "how": h} for n, m, h in svc.SCORE_PARTS],
                   modifiers={"has_alternative": svc.ALTERNATIVE_FACTOR,
                              "exit_plan_documented": svc.EXIT_PLAN_FACTOR})


@bp.get("/risk/vendors/<path:vendor>")
def vendor_risk(vendor: str):  # type: ignore[no-untyped-def]
    v = _vendor(vendor)
    if v is None:
        return error_response(404, f"no vendor {vendor!r}")
    return jsonify(svc.vendor_risk(get_session(), v))


@bp.get("/risk/concentration")
def concentration():  # type: ignore[no-untyped-def]
    return jsonify(vendors=svc.vendor_concentration(get_session()))


@bp.get("/reviews/due")
def reviews_due():  # type: ignore[no-untyped-def]
    db = get_session()
    return jsonify(due=svc.review_calendar(db, table=svc.cached_risk_table(db)))


@bp.get("/review/<path:vendor>")
def review_pack(vendor: str):  # type: ignore[no-untyped-def]
    """The review pack as JSON, or ``?format=markdown|html`` as a download."""
    v = _vendor(vendor)
    if v is None:
        return error_response(404, f"no vendor {vendor!r}")
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "markdown", "html"):
        return error_response(400, "format must be json, markdown or html", "format")
    pack = review_svc.review_pack(get_session(), v)
    if fmt == "json":
        return jsonify(pack)
    if fmt == "markdown":
        body, mime, ext = review_svc.render_markdown(pack), "text/markdown; charset=utf-8", "md"
    else:
        body, mime, ext = review_svc.render_html(pack), "text/html; charset=utf-8", "html"
    return Response(body, mimetype=mime.split(";")[0], headers={
        "Content-Type": mime, "Content-Disposition": content_disposition(review_svc.filename(pack, ext))})


@bp.get("/assessments")
def list_assessments():  # type: ignore[no-untyped-def]
    db = get_session()
    vendor_id = None
    if request.args.get("vendor"):
        v = _vendor(request.args["vendor"])
        if v is None:
            return error_response(404, f"no vendor {request.args['vendor']!r}", "vendor")
        vendor_id = v.id
    items = [svc.assessment_to_dict(a) for a in svc.list_assessments(db, vendor_id)]
    return jsonify(assessments=items, count=len(items))


_ASSESSMENT_BOOLS = ("staged_rollouts", "customer_update_control", "rollback_supported")


def _assessment_body() -> dict[str, Any]:
    # Unknown fields of a certification or finding are refused by the service, for every caller.
    body = json_body(svc.ASSESSMENT_FIELDS, ints=tuple(f"score_{d}" for d in ASSESSMENT_DOMAINS),
                     bools=_ASSESSMENT_BOOLS)
    if isinstance(body.get("scores"), dict):
        check_json_types(body["scores"], ints=tuple(ASSESSMENT_DOMAINS), prefix="scores.")
    return body


@bp.post("/assessments")
def create_assessment():  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        assessment = svc.create_assessment(db, _assessment_body(), actor=current_actor())
    except svc.ValidationError as exc:
        return invalid(exc)
    db.commit()
    return jsonify(svc.assessment_to_dict(assessment)), 201


# ---------------------------------------------------------------- OpenAPI

_ERR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_VENDOR_PATH = [{"name": "vendor", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "vendor name or id"}]


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OPENAPI_SCHEMAS: dict[str, Any] = {
    "VendorRisk": {"type": "object", "properties": {
        "vendor_id": {"type": "integer"}, "vendor": {"type": "string"}, "tier": {"type": "string"},
        "score": {"type": "number", "minimum": 0, "maximum": 100},
        "band": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "subtotal": {"type": "number"}, "modifier": {"type": "number"},
        "parts": {"type": "array", "items": {"type": "object", "properties": {
            "part": {"type": "string"}, "points": {"type": "number"}, "max": {"type": "number"},
            "detail": {"type": "string"}, "inputs": {"type": "object"}}}},
        "modifiers": {"type": "array", "items": {"type": "object"}},
        "latest_assessment": {"type": ["string", "null"], "format": "date"},
        "review_due": {"type": ["string", "null"], "format": "date"},
        "review_state": {"type": "string", "enum": ["never", "overdue", "due", "scheduled", "unscheduled"]},
        "concentration": {"$ref": "#/components/schemas/VendorConcentration"}}},
    "VendorConcentration": {"type": "object", "properties": {
        "vendor_id": {"type": "integer"}, "vendor": {"type": "string"},
        "critical_assets": {"type": "integer"}, "share": {"type": "number"},
        "critical_services": {"type": "integer"}, "service_share": {"type": "number"},
        "routes": {"type": "object", "additionalProperties": {"type": "integer"}},
        "routes_all_assets": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    "NewAssessment": {"type": "object", "required": ["vendor"], "additionalProperties": False, "properties": {
        "vendor": rule({"oneOf": [text(required=True), {"type": "integer"}]},
                       "names an existing vendor (id or name)"),
        "assessed_on": rule({"type": ["string", "null"], "format": "date", "description": "default today"},
                            "not in the future; one assessment per vendor and day (409)"),
        "assessor": text(200),
        "scores": {"type": ["object", "null"], "additionalProperties": False,
                   "properties": {d: whole_number(0, 5, nullable=True) for d in ASSESSMENT_DOMAINS}},
        "staged_rollouts": {"type": ["boolean", "null"]}, "customer_update_control": {"type": ["boolean", "null"]},
        "rollback_supported": {"type": ["boolean", "null"]},
        "certifications": {"type": ["array", "null"], "items": {
            "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                "name": text(200, required=True), "expires": {"type": ["string", "null"], "format": "date"}}}},
        "findings": {"type": ["array", "null"], "items": {
            "type": "object", "required": ["title"], "additionalProperties": False, "properties": {
                "title": text(500, required=True),
                "severity": {"type": ["string", "null"], "enum": [*FINDING_SEVERITIES, None],
                             "description": "default medium"},
                "status": {"type": ["string", "null"], "enum": [*FINDING_STATUSES, None],
                           "description": "default open"}}}},
        "next_review_due": rule({"type": ["string", "null"], "format": "date",
                                 "description": "default assessed_on + 365 days"}, "after assessed_on"),
        "notes": text(20_000),
        **{f"score_{d}": {**whole_number(0, 5, nullable=True), "description": f"same as scores.{d}"}
           for d in ASSESSMENT_DOMAINS}}},
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/risk": {"get": {
        "summary": "Vendor risk scores with each part's contribution", "operationId": "riskTable",
        "tags": ["risk"], "responses": {"200": _ok({"type": "object", "properties": {
            "vendors": {"type": "array", "items": {"$ref": "#/components/schemas/VendorRisk"}},
            "formula": {"type": "array"}, "modifiers": {"type": "object"}, "count": {"type": "integer"}}})}}},
    "/api/v1/risk/vendors/{vendor}": {"get": {
        "summary": "One vendor's risk score and its parts", "operationId": "vendorRisk", "tags": ["risk"],
        "parameters": _VENDOR_PATH,
        "responses": {"200": _ok({"$ref": "#/components/schemas/VendorRisk"}), "404": _ERR}}},
    "/api/v1/risk/concentration": {"get": {
        "summary": "Critical assets and services depending on each vendor, per route",
        "operationId": "vendorConcentration", "tags": ["risk"],
        "responses": {"200": _ok({"type": "object", "properties": {"vendors": {
            "type": "array", "items": {"$ref": "#/components/schemas/VendorConcentration"}}}})}}},
    "/api/v1/reviews/due": {"get": {
        "summary": "Review calendar: vendors due, overdue or never assessed, riskiest first",
        "operationId": "reviewsDue", "tags": ["risk"], "responses": {"200": _ok({"type": "object"})}}},
    "/api/v1/review/{vendor}": {"get": {
        "summary": "A vendor's review pack (JSON, or a Markdown/HTML download)", "operationId": "reviewPack",
        "tags": ["risk"],
        "parameters": _VENDOR_PATH + [query("format", "json (default), or a markdown or html download",
                                            {"type": "string", "enum": ["json", "markdown", "html"]})],
        "responses": {"200": {"description": "The pack", "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/markdown": {"schema": {"type": "string"}}, "text/html": {"schema": {"type": "string"}}}},
            "400": _ERR, "404": _ERR}}},
    "/api/v1/assessments": {
        "get": {"summary": "Vendor assessments, newest first", "operationId": "listAssessments", "tags": ["risk"],
                "parameters": [query("vendor", "Vendor name or id (404 when there is none)", empty=True)],
                "responses": {"200": _ok({"type": "object"}), "404": _ERR}},
        "post": {"summary": "Record a vendor assessment (write token)", "operationId": "createAssessment",
                 "tags": ["risk"],
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": {"$ref": "#/components/schemas/NewAssessment"}}}},
                 "responses": {"201": _ok({"type": "object"}, "Created"), "400": _ERR, "403": _ERR,
                               "409": _ERR, "422": _ERR}}},
}
