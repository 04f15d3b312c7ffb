"""JSON API: vendor updates, test results from pipelines, untested exposure."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from inventory.api import bounded_int, error_response, json_object, path_id
from inventory.api.schema_parts import every_field, http_url, query, rule, text
from inventory.app_db import get_session
from inventory.auth import current_actor
from inventory.choices import CRITICALITIES, RINGS, TEST_STATUSES, UPDATE_KINDS
from inventory.services import updates as svc

bp = Blueprint("api_updates", __name__, url_prefix="/api/v1")

TEST_FIELDS = {"ring", "status", "tested_by", "tested_at", "evidence_url", "notes"}
UPDATE_FIELDS = {"product", "version", "released_on", "kind", "vendor_pushed", "notes"}
MAX_LIMIT = 10_000


def json_body(allowed: set[str] | None = None, *, ints: tuple[str, ...] = (),
              bools: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request's JSON object (``inventory.api.json_object``: a 400 when it is not one);
    unknown fields, and ``ints``/``bools`` fields not sent as JSON numbers/booleans, raise
    ValidationError (422).  The services also read web forms, where "5" and "on" are how
    a number and a ticked box arrive; a JSON client sending them has made a mistake."""
    body = json_object()
    if allowed is not None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise svc.ValidationError(unknown[0], f"unknown field {unknown[0]!r}; allowed: "
                                      f"{', '.join(sorted(allowed))}")
    check_json_types(body, ints=ints, bools=bools)
    return body


def check_json_types(body: dict[str, Any], *, ints: tuple[str, ...] = (), bools: tuple[str, ...] = (),
                     prefix: str = "") -> None:
    """Fields of ``body`` that, when present and not null, must be JSON integers / booleans."""
    for name in ints:
        value = body.get(name)
        if isinstance(value, float) and value.is_integer():
            body[name] = value = int(value)  # 5.0 is a whole number in JSON (and JSON Schema)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise svc.ValidationError(prefix + name, f"{prefix + name} must be a whole number (a JSON number)")
    for name in bools:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise svc.ValidationError(prefix + name, f"{prefix + name} must be true or false (a JSON boolean)")


def invalid(exc: svc.ValidationError):  # type: ignore[no-untyped-def]
    get_session().rollback()
    return error_response(exc.status, exc.message, exc.field)


def limit_arg(default: int = 1000) -> int:
    raw = request.args.get("limit", "")
    if raw == "":
        return default
    limit = bounded_int(raw, 1, MAX_LIMIT)
    if limit is None:
        raise svc.ValidationError("limit", f"limit must be a whole number from 1 to {MAX_LIMIT}", status=400)
    return limit


def _filters(db):  # type: ignore[no-untyped-def]
    vendor_id = product_id = None
    if request.args.get("vendor"):
        try:
            vendor_id = svc.find_vendor(db, request.args["vendor"]).id
        except svc.NotFound as exc:
            raise svc.ValidationError("vendor", str(exc), status=404) from None
    if request.args.get("product"):
        try:
            product_id = svc.find_product(db, request.args["product"]).id
        except svc.NotFound as exc:
            raise svc.ValidationError("product", str(exc), status=404) from None
    return vendor_id, product_id


@bp.get("/updates")
def list_updates():  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        vendor_id, product_id = _filters(db)
        limit = limit_arg(500)
    except svc.ValidationError as exc:
        return invalid(exc)
    items = svc.list_updates(db, vendor_id=vendor_id, product_id=product_id, limit=limit)
    counts = svc.installed_counts(db, items)
    out = []
    for u in items:
        d = svc.update_to_dict(u)
        d["installed"] = counts.get(u.id, {"assets": 0, "critical": 0})
        out.append(d)
    return jsonify(updates=out, count=len(out))


@bp.post("/updates")
def create_update():  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        body = json_body(UPDATE_FIELDS, bools=("vendor_pushed",))
        update = svc.create_update(db, actor=current_actor(), product=_product_ref(body.get("product")),
                                   version=body.get("version"), released_on=body.get("released_on"),
                                   kind=body.get("kind") or "patch",
                                   vendor_pushed=body.get("vendor_pushed", False), notes=body.get("notes"))
    except svc.ValidationError as exc:
        return invalid(exc)
    db.commit()
    return jsonify(svc.update_to_dict(update)), 201


def _product_ref(value: Any) -> str | int:
    if value is None or value == "":
        raise svc.ValidationError("product", "product is required ('Vendor/Product' or an id)")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise svc.ValidationError("product", "product must be 'Vendor/Product' or an id")
    return value


@bp.get("/updates/<id:update_id>")
def get_update(update_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        update = svc.find_update(db, update_id)
    except svc.NotFound as exc:
        return error_response(404, str(exc))
    data = svc.update_to_dict(update)
    data["installed"] = svc.installed_counts(db, [update]).get(update.id, {"assets": 0, "critical": 0})
    return jsonify(data)


@bp.post("/updates/<id:update_id>/tests")
def record_test(update_id: int):  # type: ignore[no-untyped-def]
    """A pipeline reports a test result; the (update, ring) row is created or replaced."""
    db = get_session()
    try:
        update = svc.find_update(db, update_id)
    except svc.NotFound as exc:
        return error_response(404, str(exc))
    try:
        body = json_body(TEST_FIELDS)
        test, created = svc.record_test(db, actor=current_actor(), update=update, ring=body.get("ring"),
                                        status=body.get("status"), tested_by=body.get("tested_by"),
                                        tested_at=body.get("tested_at"),
                                        evidence_url=body.get("evidence_url"), notes=body.get("notes"))
    except svc.ValidationError as exc:
        return invalid(exc)
    db.commit()
    return jsonify(test=svc.test_to_dict(test), update=svc.update_to_dict(update)), (201 if created else 200)


@bp.get("/exposure/untested")
def untested():  # type: ignore[no-untyped-def]
    db = get_session()
    criticality = request.args.get("criticality") or None
    if criticality is not None and criticality not in CRITICALITIES:
        return error_response(400, f"criticality must be one of {', '.join(CRITICALITIES)}", "criticality")
    try:
        vendor_id, product_id = _filters(db)
        limit = limit_arg(1000)
    except svc.ValidationError as exc:
        return invalid(exc)
    rows = svc.untested_exposure(db, criticality=criticality, vendor_id=vendor_id, product_id=product_id,
                                 limit=limit + 1)
    truncated = len(rows) > limit
    rows = rows[:limit]
    return jsonify(untested=rows, count=len(rows), truncated=truncated,
                   summary=svc.untested_summary(db),
                   vendor_pushed=svc.vendor_pushed_products(db, vendor_id))


@bp.get("/updates/rings")
def rings():  # type: ignore[no-untyped-def]
    db = get_session()
    return jsonify(rings=svc.ring_summary(db))


@bp.get("/updates/vendor-pushed")
def vendor_pushed():  # type: ignore[no-untyped-def]
    return jsonify(products=svc.vendor_pushed_products(get_session()))


# ---------------------------------------------------------------- OpenAPI

_ERR = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_JSON = "application/json"

OPENAPI_SCHEMAS: dict[str, Any] = {
    "UpdateTest": every_field({"type": "object", "properties": {
        "id": {"type": "integer"}, "update_id": {"type": "integer"},
        "ring": {"type": "string", "enum": list(RINGS)}, "status": {"type": "string", "enum": list(TEST_STATUSES)},
        "tested_by": {"type": ["string", "null"]}, "tested_at": {"type": ["string", "null"], "format": "date-time"},
        "evidence_url": {"type": ["string", "null"]}, "notes": {"type": ["string", "null"]}}}),
    "VendorUpdate": every_field({"type": "object", "properties": {
        "id": {"type": "integer"}, "vendor": {"type": "string"}, "product_id": {"type": "integer"},
        "product": {"type": "string"}, "version": {"type": "string"}, "ref": {"type": "string"},
        "released_on": {"type": ["string", "null"], "format": "date"},
        "kind": {"type": "string", "enum": list(UPDATE_KINDS)}, "vendor_pushed": {"type": "boolean"},
        "notes": {"type": ["string", "null"]}, "tested": {"type": "boolean"},
        "untested_reason": {"type": ["string", "null"]},
        "tests": {"type": "array", "items": {"$ref": "#/components/schemas/UpdateTest"}},
        "rings": {"type": "object", "additionalProperties": {"type": "string"}},
        "installed": {**every_field({"type": "object", "properties": {
            "assets": {"type": "integer"}, "critical": {"type": "integer"}}}),
            "description": "Assets on this version (in lists and on one update, not when created)"}}},
        except_=("installed",)),
    "NewVendorUpdate": {"type": "object", "required": ["product", "version"], "additionalProperties": False,
                        "properties": {
                            "product": rule({"oneOf": [{**text(required=True), "description": "'Vendor/Product'"},
                                                       {"type": "integer"}]},
                                            "names an existing product (id, 'Vendor/Product' or a unique "
                                            "product name)"),
                            "version": text(100, required=True),
                            "released_on": {"type": ["string", "null"], "format": "date"},
                            "kind": {"type": ["string", "null"], "enum": [*UPDATE_KINDS, None],
                                     "description": "default patch"},
                            "vendor_pushed": {"type": ["boolean", "null"]}, "notes": text(10_000)}},
    "NewUpdateTest": {"type": "object", "required": ["ring", "status"], "additionalProperties": False,
                      "properties": {
                          "ring": {"type": "string", "enum": list(RINGS)},
                          "status": {"type": "string", "enum": list(TEST_STATUSES)},
                          "tested_by": text(200),
                          "tested_at": rule({"type": ["string", "null"], "format": "date-time",
                                             "description": "ISO 8601; default now (none for pending)"},
                                            "not in the future"),
                          "evidence_url": http_url(),
                          "notes": text(10_000)}},
    "UntestedExposure": {"type": "object", "properties": {
        "asset_id": {"type": "integer"}, "asset_name": {"type": "string"}, "natural_key": {"type": "string"},
        "criticality": {"type": "string"}, "product_id": {"type": "integer"}, "product": {"type": "string"},
        "vendor": {"type": "string"}, "version": {"type": ["string", "null"]},
        "update_ring": {"type": ["string", "null"]}, "reason": {"type": "string"}}},
}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_TEST_AND_UPDATE = every_field({"type": "object", "properties": {
    "test": {"$ref": "#/components/schemas/UpdateTest"}, "update": {"$ref": "#/components/schemas/VendorUpdate"}}})
_LIMIT = query("limit", "At most this many", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, empty=True)
_VENDOR = query("vendor", "Vendor name or id (404 when there is none)", empty=True)
_PRODUCT = query("product", "'Vendor/Product', a unique product name or an id (404 when there is none)",
                 empty=True)

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/updates": {
        "get": {"summary": "Vendor updates with test status per ring", "operationId": "listUpdates",
                "tags": ["updates"], "parameters": [_VENDOR, _PRODUCT, _LIMIT],
                "responses": {"200": _ok(every_field({"type": "object", "properties": {
                    "updates": {"type": "array", "items": {"$ref": "#/components/schemas/VendorUpdate"}},
                    "count": {"type": "integer"}}})), "400": _ERR, "404": _ERR}},
        "post": {"summary": "Record a vendor update (write token)", "operationId": "createUpdate",
                 "tags": ["updates"],
                 "requestBody": {"required": True, "content": {_JSON: {
                     "schema": {"$ref": "#/components/schemas/NewVendorUpdate"}}}},
                 "responses": {"201": _ok({"$ref": "#/components/schemas/VendorUpdate"}, "Created"),
                               "400": _ERR, "403": _ERR, "409": _ERR, "422": _ERR}}},
    "/api/v1/updates/{update_id}": {
        "get": {"summary": "One vendor update", "operationId": "getUpdate", "tags": ["updates"],
                "parameters": [path_id("update_id")],
                "responses": {"200": _ok({"$ref": "#/components/schemas/VendorUpdate"}), "404": _ERR}}},
    "/api/v1/updates/{update_id}/tests": {
        "post": {"summary": "Record a test result of an update in a ring (pipelines; write token)",
                 "description": "Creates or replaces the (update, ring) result; the previous result stays "
                                "in the audit trail.",
                 "operationId": "recordUpdateTest", "tags": ["updates"],
                 "parameters": [path_id("update_id")],
                 "requestBody": {"required": True, "content": {_JSON: {
                     "schema": {"$ref": "#/components/schemas/NewUpdateTest"}}}},
                 "responses": {"200": _ok(_TEST_AND_UPDATE, "Replaced"), "201": _ok(_TEST_AND_UPDATE, "Created"),
                               "400": _ERR, "403": _ERR, "404": _ERR, "422": _ERR}}},
    "/api/v1/updates/rings": {
        "get": {"summary": "Assets per rollout ring", "operationId": "updateRings", "tags": ["updates"],
                "responses": {"200": _ok({"type": "object"})}}},
    "/api/v1/updates/vendor-pushed": {
        "get": {"summary": "Products whose vendor pushes updates outside customer control",
                "operationId": "vendorPushedProducts", "tags": ["updates"],
                "responses": {"200": _ok({"type": "object"})}}},
    "/api/v1/exposure/untested": {
        "get": {"summary": "Installations on versions without a passing pre-production test",
                "operationId": "untestedExposure", "tags": ["updates"],
                "parameters": [query("criticality", "Only assets of this criticality",
                                     {"type": "string", "enum": list(CRITICALITIES)}, empty=True),
                               _VENDOR, _PRODUCT, _LIMIT],
                "responses": {"200": _ok({"type": "object", "properties": {
                    "untested": {"type": "array", "items": {"$ref": "#/components/schemas/UntestedExposure"}},
                    "count": {"type": "integer"}, "truncated": {"type": "boolean"},
                    "summary": {"type": "object"}, "vendor_pushed": {"type": "array"}}}),
                    "400": _ERR, "404": _ERR}}},
}
