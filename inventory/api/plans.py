"""JSON API: contingency plans, their reviews/exercises, coverage and RTO checks."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from inventory.api import error_response, path_id
from inventory.api.schema_parts import every_field, http_url, query, rule, text, whole_number
from inventory.api.updates import invalid, json_body
from inventory.app_db import get_session
from inventory.auth import current_actor
from inventory.choices import CRITICALITIES, PLAN_EVENT_KINDS, PLAN_OUTCOMES
from inventory.services import plans as svc

bp = Blueprint("api_plans", __name__, url_prefix="/api/v1")

PLAN_FIELDS = {"name", "owner", "rto_minutes", "steps", "manual_fallback", "runbook_url",
               "review_interval_days", "covers"}
EVENT_FIELDS = {"kind", "outcome", "notes", "at", "by"}
PLAN_INTS = ("rto_minutes", "review_interval_days")
STATUSES = ("current", "stale", "never_exercised")


@bp.get("/plans")
def list_plans():  # type: ignore[no-untyped-def]
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        return error_response(400, f"status must be one of {', '.join(STATUSES)}", "status")
    plans = svc.list_plans(get_session(), status=status)
    return jsonify(plans=plans, count=len(plans))


@bp.post("/plans")
def create_plan():  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        plan = svc.create_plan(db, json_body(PLAN_FIELDS, ints=PLAN_INTS), actor=current_actor())
    except svc.ValidationError as exc:
        return invalid(exc)
    db.commit()
    return jsonify(svc.plan_to_dict(plan, events=True)), 201


def _find(plan_id: int):  # type: ignore[no-untyped-def]
    try:
        return svc.find_plan(get_session(), plan_id)
    except svc.NotFound:
        return None


@bp.get("/plans/<id:plan_id>")
def get_plan(plan_id: int):  # type: ignore[no-untyped-def]
    plan = _find(plan_id)
    if plan is None:
        return error_response(404, f"no plan with id {plan_id}")
    return jsonify(svc.plan_to_dict(plan, events=True))


@bp.patch("/plans/<id:plan_id>")
def update_plan(plan_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    plan = _find(plan_id)
    if plan is None:
        return error_response(404, f"no plan with id {plan_id}")
    try:
        svc.update_plan(db, plan, json_body(PLAN_FIELDS, ints=PLAN_INTS), actor=current_actor())
    except svc.ValidationError as exc:
        return invalid(exc)
    db.commit()
    return jsonify(svc.plan_to_dict(plan, events=True))


@bp.post("/plans/<id:plan_id>/events")
def record_event(plan_id: int):  # type: ignore[no-untyped-def]
    """Record a review or an exercise: the event, the plan's date and the audit entry, together."""
    db = get_session()
    plan = _find(plan_id)
    if plan is None:
        return error_response(404, f"no plan with id {plan_id}")
    try:
        body = json_body(EVENT_FIELDS)
        event = svc.record_event(db, plan, actor=current_actor(), kind=body.get("kind"),
                                 outcome=body.get("outcome"), notes=body.get("notes"), at=body.get("at"),
                                 by=body.get("by"))
    except svc.ValidationError as exc:
        return invalid(exc)
    db.commit()
    return jsonify(event=svc.event_to_dict(event), plan=svc.plan_to_dict(plan)), 201


@bp.get("/plans/coverage")
def coverage():  # type: ignore[no-untyped-def]
    criticality = request.args.get("criticality") or "critical"
    if criticality not in CRITICALITIES:
        return error_response(400, f"criticality must be one of {', '.join(CRITICALITIES)}", "criticality")
    return jsonify(svc.coverage(get_session(), criticality=criticality))


@bp.get("/plans/stale")
def stale():  # type: ignore[no-untyped-def]
    db = get_session()
    return jsonify(stale=svc.stale_plans(db), never_exercised=svc.never_exercised(db))


@bp.get("/plans/rto")
def rto():  # type: ignore[no-untyped-def]
    rows = svc.rto_check(get_session())
    return jsonify(services=rows, at_risk=sum(1 for r in rows if r["status"] == "at_risk"))


# ---------------------------------------------------------------- OpenAPI

_ERR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ID = [path_id("plan_id")]


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NAMES = {"type": ["array", "null"], "items": text()}
_NAMED = {"type": "object", "required": ["id", "name"],
          "properties": {"id": {"type": "integer"}, "name": {"type": "string"}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_PLAN_INPUT_PROPS = {
    "name": rule(text(200, required=True, one_line=True), "unique among plans, ignoring case (409)"),
    "owner": text(200),
    "rto_minutes": whole_number(1, svc.MAX_RTO_MINUTES, nullable=True),
    "steps": text(50_000), "manual_fallback": text(50_000),
    "runbook_url": http_url(),
    "review_interval_days": {**whole_number(1, svc.MAX_INTERVAL_DAYS, nullable=True),
                             "description": "default 180"},
    "covers": {"type": ["object", "null"], "additionalProperties": False,
               "description": "What the plan covers; on a change it replaces the links (null: none)",
               "properties": {
                   "assets": rule({**_NAMES, "description": "asset natural keys"}, "each names an existing asset"),
                   "products": rule({**_NAMES, "description": "'Vendor/Product'"},
                                    "each names an existing product"),
                   "vendors": rule(_NAMES, "each names an existing vendor")}},
}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Plan": every_field({"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "owner": {"type": ["string", "null"]},
        "rto_minutes": {"type": ["integer", "null"]}, "steps": {"type": ["string", "null"]},
        "manual_fallback": {"type": ["string", "null"]}, "runbook_url": {"type": ["string", "null"]},
        "review_interval_days": {"type": "integer"},
        "last_reviewed": {"type": ["string", "null"], "format": "date-time"},
        "last_exercised": {"type": ["string", "null"], "format": "date-time"},
        "review_due": {"type": ["string", "null"], "format": "date-time"},
        "review_overdue": {"type": "boolean"}, "never_exercised": {"type": "boolean"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "covers": every_field({"type": "object", "properties": {
            kind: {"type": "array", "items": _NAMED} for kind in ("assets", "products", "vendors")}}),
        "covers_summary": {"type": "string"},
        "events": {"type": "array", "items": _ref("PlanEvent"), "description": "one plan's history (not in lists)"}},
        "description": "steps, manual_fallback and events come with one plan, not in the list"},
        except_=("steps", "manual_fallback", "events")),
    "PlanEvent": every_field({"type": "object", "properties": {
        "id": {"type": "integer"}, "plan_id": {"type": "integer"},
        "kind": {"type": "string", "enum": list(PLAN_EVENT_KINDS)},
        "at": {"type": ["string", "null"], "format": "date-time"}, "by": {"type": ["string", "null"]},
        "outcome": {"type": ["string", "null"], "enum": [*PLAN_OUTCOMES, None]},
        "notes": {"type": ["string", "null"]}}}),
    "NewPlan": {"type": "object", "required": ["name"], "additionalProperties": False,
                "properties": _PLAN_INPUT_PROPS},
    "PlanChanges": {"type": "object", "additionalProperties": False, "properties": _PLAN_INPUT_PROPS},
    "NewPlanEvent": {
        "type": "object", "required": ["kind"], "additionalProperties": False,
        "properties": {
            "kind": {"type": "string", "enum": list(PLAN_EVENT_KINDS)},
            "outcome": {"type": ["string", "null"], "enum": [*PLAN_OUTCOMES, None],
                        "description": "required for an exercise"},
            "notes": text(20_000),
            "at": rule({"type": ["string", "null"], "format": "date-time", "description": "default now"},
                       "not in the future, not more than ten years ago"),
            "by": text(200)},
        # An exercise needs its outcome.
        "if": {"properties": {"kind": {"const": "exercise"}}},
        "then": {"required": ["outcome"], "properties": {"outcome": {"type": "string"}}}},
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/plans": {
        "get": {"summary": "Contingency plans with review/exercise status", "operationId": "listPlans",
                "tags": ["plans"],
                "parameters": [query("status", "Only plans in this state",
                                     {"type": "string", "enum": list(STATUSES)}, empty=True)],
                "responses": {"200": _ok(every_field({"type": "object", "properties": {
                    "plans": {"type": "array", "items": {"$ref": "#/components/schemas/Plan"}},
                    "count": {"type": "integer"}}})), "400": _ERR}},
        "post": {"summary": "Create a plan (write token)", "operationId": "createPlan", "tags": ["plans"],
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": {"$ref": "#/components/schemas/NewPlan"}}}},
                 "responses": {"201": _ok({"$ref": "#/components/schemas/Plan"}, "Created"),
                               "400": _ERR, "403": _ERR, "409": _ERR, "422": _ERR}}},
    "/api/v1/plans/{plan_id}": {
        "get": {"summary": "One plan with its history", "operationId": "getPlan", "tags": ["plans"],
                "parameters": _ID, "responses": {"200": _ok({"$ref": "#/components/schemas/Plan"}), "404": _ERR}},
        "patch": {"summary": "Change a plan (write token); covers replaces the links", "operationId": "updatePlan",
                  "tags": ["plans"], "parameters": _ID,
                  "requestBody": {"required": True, "content": {"application/json": {
                      "schema": {"$ref": "#/components/schemas/PlanChanges"}}}},
                  "responses": {"200": _ok({"$ref": "#/components/schemas/Plan"}), "400": _ERR, "403": _ERR,
                                "404": _ERR, "409": _ERR, "422": _ERR}}},
    "/api/v1/plans/{plan_id}/events": {
        "post": {"summary": "Record a review or an exercise (one action; write token)",
                 "operationId": "recordPlanEvent", "tags": ["plans"], "parameters": _ID,
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": {"$ref": "#/components/schemas/NewPlanEvent"}}}},
                 "responses": {"201": _ok(every_field({"type": "object", "properties": {
                     "event": _ref("PlanEvent"), "plan": _ref("Plan")}}), "Recorded"), "400": _ERR, "403": _ERR,
                               "404": _ERR, "422": _ERR}}},
    "/api/v1/plans/coverage": {
        "get": {"summary": "Plan coverage of critical services and assets", "operationId": "planCoverage",
                "tags": ["plans"],
                "parameters": [query("criticality", "Of which criticality (default critical)",
                                     {"type": "string", "enum": list(CRITICALITIES)}, empty=True)],
                "responses": {"200": _ok({"type": "object"}), "400": _ERR}}},
    "/api/v1/plans/stale": {
        "get": {"summary": "Plans with overdue reviews, and plans never exercised", "operationId": "stalePlans",
                "tags": ["plans"], "responses": {"200": _ok({"type": "object"})}}},
    "/api/v1/plans/rto": {
        "get": {"summary": "Services' promised RTO against their slowest hard dependency",
                "operationId": "rtoCheck", "tags": ["plans"], "responses": {"200": _ok({"type": "object"})}}},
}
