"""JSON API: webhooks (notification endpoints) and their dead-letter lists.

Every route needs a **write** token, reads included: a webhook says where the
company's incident data goes.  (No API token is admin; the dashboard's *Admin →
Webhooks* page is for admins.)  URLs and signing secrets are accepted here and never
returned: answers carry ``url`` with its secret parts cut off and ``signed``.
``POST /webhooks/{id}/test`` queues a sample message (202); the delivery worker or
``planb webhooks deliver`` posts it.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from inventory.api import error_response, json_object, path_id
from inventory.app_db import get_session
from inventory.auth import current_actor, require_role
from inventory.services import notify
from inventory.services import webhooks as svc

bp = Blueprint("api_webhooks", __name__, url_prefix="/api/v1")

NEW_FIELDS = {"url", "events", "format", "secret", "name"}
CHANGE_FIELDS = {"active", "events", "name"}


def _box() -> svc.SecretBox:
    return svc.SecretBox(current_app.config["SECRET_KEY"])


def _fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise svc.WebhookError(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}",
                               unknown[0], status=400)


def _refused(exc: svc.WebhookError):  # type: ignore[no-untyped-def]
    get_session().rollback()
    return error_response(exc.status, exc.message, exc.field)


def _out(webhook: Any) -> dict[str, Any]:
    counts = svc.delivery_counts(get_session(), [webhook.id]).get(webhook.id)
    return svc.webhook_to_dict(webhook, counts)


@bp.get("/webhooks")
@require_role("editor")
def list_webhooks():  # type: ignore[no-untyped-def]
    db = get_session()
    counts = svc.delivery_counts(db)
    items = [svc.webhook_to_dict(w, counts.get(w.id)) for w in svc.list_webhooks(db)]
    return jsonify(webhooks=items, count=len(items))


@bp.post("/webhooks")
@require_role("editor")
def create_webhook():  # type: ignore[no-untyped-def]
    body = json_object()
    db = get_session()
    try:
        _fields(body, NEW_FIELDS)
        webhook, warnings = svc.create_webhook(db, _box(), url=body.get("url"), events=body.get("events"),
                                               fmt=body.get("format", "json"), secret=body.get("secret"),
                                               name=body.get("name"), actor=current_actor())
    except svc.WebhookError as exc:
        return _refused(exc)
    db.commit()
    return jsonify({**_out(webhook), "warnings": warnings}), 201


def _webhook(webhook_id: int) -> Any:
    return svc.get_webhook(get_session(), webhook_id)


@bp.get("/webhooks/<id:webhook_id>")
@require_role("editor")
def get_webhook(webhook_id: int):  # type: ignore[no-untyped-def]
    try:
        return jsonify(_out(_webhook(webhook_id)))
    except svc.WebhookError as exc:
        return _refused(exc)


@bp.patch("/webhooks/<id:webhook_id>")
@require_role("editor")
def update_webhook(webhook_id: int):  # type: ignore[no-untyped-def]
    body = json_object()
    db = get_session()
    try:
        webhook = _webhook(webhook_id)
        _fields(body, CHANGE_FIELDS)
        svc.update_webhook(db, webhook, active=body.get("active"), events=body.get("events"),
                           name=body.get("name"), actor=current_actor())
    except svc.WebhookError as exc:
        return _refused(exc)
    db.commit()
    return jsonify(_out(webhook))


@bp.delete("/webhooks/<id:webhook_id>")
@require_role("editor")
def delete_webhook(webhook_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        svc.delete_webhook(db, _webhook(webhook_id), actor=current_actor())
    except svc.WebhookError as exc:
        return _refused(exc)
    db.commit()
    return "", 204


@bp.post("/webhooks/<id:webhook_id>/test")
@require_role("editor")
def test_webhook(webhook_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        webhook = _webhook(webhook_id)
    except svc.WebhookError as exc:
        return _refused(exc)
    body = notify.test_body(webhook)
    delivery = svc.enqueue(db, webhook, event="test", event_id=svc.new_event_id(), subject="Plan B test message",
                           body=body)
    db.flush()
    from inventory.services import audit

    audit.record(db, actor=current_actor(), action="test", entity_type="webhook", entity_id=webhook.id,
                 summary=f"queued a test message for webhook {webhook.name}", after={"delivery": delivery.id})
    db.commit()
    return jsonify(svc.delivery_to_dict(delivery)), 202


@bp.get("/webhooks/<id:webhook_id>/dead-letters")
@require_role("editor")
def dead_letters(webhook_id: int):  # type: ignore[no-untyped-def]
    try:
        rows = svc.dead_letters(get_session(), _webhook(webhook_id))
    except svc.WebhookError as exc:
        return _refused(exc)
    return jsonify(dead_letters=[svc.delivery_to_dict(d) for d in rows], count=len(rows))


@bp.post("/webhooks/<id:webhook_id>/dead-letters/retry")
@require_role("editor")
def retry_all(webhook_id: int):  # type: ignore[no-untyped-def]
    return _retry(webhook_id, None)


@bp.post("/webhooks/<id:webhook_id>/dead-letters/<id:delivery_id>/retry")
@require_role("editor")
def retry_one(webhook_id: int, delivery_id: int):  # type: ignore[no-untyped-def]
    return _retry(webhook_id, delivery_id)


def _retry(webhook_id: int, delivery_id: int | None):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        n = svc.retry_dead(db, _webhook(webhook_id), delivery_id, actor=current_actor())
    except svc.WebhookError as exc:
        return _refused(exc)
    db.commit()
    return jsonify(queued=n)


@bp.delete("/webhooks/<id:webhook_id>/dead-letters/<id:delivery_id>")
@require_role("editor")
def discard_one(webhook_id: int, delivery_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        svc.discard_dead(db, _webhook(webhook_id), delivery_id, actor=current_actor())
    except svc.WebhookError as exc:
        return _refused(exc)
    db.commit()
    return "", 204


# ---------------------------------------------------------------- OpenAPI

def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_WEBHOOK_REF = {"$ref": "#/components/schemas/Webhook"}
_DELIVERY_REF = {"$ref": "#/components/schemas/WebhookDelivery"}
_ID = [path_id("webhook_id")]
_DELIVERY_ID = [path_id("webhook_id"), path_id("delivery_id")]
_BAD = _error("The body is not a JSON object of the documented fields, or a value has the wrong type")
_AUTH = {"401": _error("No API token, or an unknown, expired or revoked one"),
         "403": _error("A read token: webhooks need a write token")}
_NOT_FOUND = _error("No webhook with this id (or no dead letter with this id for it)")
_INVALID = _error("Well-formed, but the URL breaks a rule (x-planb-rule): a link-local or metadata "
                  "address, a #fragment, no valid host or port")
_TAGS = ["webhooks"]

_EVENTS_SCHEMA = {"type": "array", "minItems": 1, "items": {"type": "string", "enum": list(svc.EVENTS)},
                  "description": "The events to send"}
_NAME_SCHEMA = {"type": ["string", "null"], "maxLength": svc.MAX_NAME,
                "pattern": "^[^\\u0000\\r\\n\\u000b\\u000c\\u001c-\\u001e\\u0085\\u2028\\u2029]*$",
                "description": "A label for lists (default: the URL without its secret parts)"}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "Webhook": {
        "type": "object",
        "required": ["id", "name", "url", "format", "events", "signed", "active", "deliveries"],
        "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"},
            "url": {"type": "string", "description": "The URL with its secret parts cut off"},
            "format": {"type": "string", "enum": list(svc.FORMATS)},
            "events": {"type": "array", "items": {"type": "string", "enum": list(svc.EVENTS)}},
            "signed": {"type": "boolean", "description": "Messages carry X-PlanB-Signature"},
            "active": {"type": "boolean"},
            "disabled_reason": {"type": ["string", "null"]},
            "created_by": {"type": ["string", "null"]},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "last_success_at": {"type": ["string", "null"], "format": "date-time"},
            "last_failure_at": {"type": ["string", "null"], "format": "date-time"},
            "deliveries": {"type": "object", "required": ["pending", "delivered", "dead"], "properties": {
                "pending": {"type": "integer"}, "delivered": {"type": "integer"}, "dead": {"type": "integer"}}},
            "warnings": {"type": "array", "items": {"type": "string"},
                         "description": "On creation: e.g. that plain http is unencrypted"},
        }},
    "WebhookDelivery": {
        "type": "object",
        "required": ["id", "webhook_id", "event", "event_id", "subject", "status", "attempts"],
        "properties": {
            "id": {"type": "integer"}, "webhook_id": {"type": "integer"}, "event": {"type": "string"},
            "event_id": {"type": "string"}, "subject": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "delivered", "dead"]},
            "attempts": {"type": "integer"},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "next_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "last_attempt_at": {"type": ["string", "null"], "format": "date-time"},
            "delivered_at": {"type": ["string", "null"], "format": "date-time"},
            "last_status_code": {"type": ["integer", "null"]},
            "last_error": {"type": ["string", "null"]},
        }},
    "NewWebhook": {
        "type": "object", "required": ["url", "events"], "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "maxLength": svc.MAX_URL,
                    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$",
                    "x-planb-rule": "not a link-local address (169.254.0.0/16, fe80::/10) or a cloud metadata "
                                    "host, no #fragment, a valid host and port",
                    "description": "The receiver's http(s) URL; stored encrypted, never returned. Plain http "
                                   "is accepted with a warning. Not a link-local address or a cloud metadata "
                                   "host, no #fragment, a valid host and port"},
            "events": _EVENTS_SCHEMA,
            "format": {"type": "string", "enum": list(svc.FORMATS), "default": "json"},
            "secret": {"type": ["string", "null"],
                       "pattern": f"^[!-~]{{{svc.MIN_SECRET},{svc.MAX_SECRET}}}$",
                       "description": "Signing secret (stored encrypted, never returned); messages then carry "
                                      "X-PlanB-Signature: sha256=HMAC-SHA256(secret, timestamp + '.' + body)"},
            "name": _NAME_SCHEMA,
        }},
    "WebhookChanges": {
        "type": "object", "additionalProperties": False,
        "properties": {"active": {"type": ["boolean", "null"]}, "events": _EVENTS_SCHEMA, "name": _NAME_SCHEMA}},
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/webhooks": {
        "get": {"summary": "Webhooks with their delivery counts (write token)", "operationId": "listWebhooks",
                "tags": _TAGS,
                "responses": {"200": _ok({"type": "object", "required": ["webhooks", "count"], "properties": {
                    "webhooks": {"type": "array", "items": _WEBHOOK_REF}, "count": {"type": "integer"}}}),
                    "400": _error("An unknown query parameter"), **_AUTH}},
        "post": {"summary": "Add a webhook (write token)", "operationId": "createWebhook", "tags": _TAGS,
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": {"$ref": "#/components/schemas/NewWebhook"}}}},
                 "responses": {"201": _ok(_WEBHOOK_REF, "Added"), "400": _BAD, **_AUTH, "422": _INVALID}}},
    "/api/v1/webhooks/{webhook_id}": {
        "get": {"summary": "One webhook (write token)", "operationId": "getWebhook", "tags": _TAGS,
                "parameters": _ID,
                "responses": {"200": _ok(_WEBHOOK_REF), "400": _error("An unknown query parameter"), **_AUTH,
                              "404": _NOT_FOUND}},
        "patch": {"summary": "Switch a webhook on or off, change its events or name (write token)",
                  "operationId": "updateWebhook", "tags": _TAGS, "parameters": _ID,
                  "requestBody": {"required": True, "content": {"application/json": {
                      "schema": {"$ref": "#/components/schemas/WebhookChanges"}}}},
                  "responses": {"200": _ok(_WEBHOOK_REF), "400": _BAD, **_AUTH, "404": _NOT_FOUND}},
        "delete": {"summary": "Remove a webhook with its queued and dead messages (write token)",
                   "operationId": "deleteWebhook", "tags": _TAGS, "parameters": _ID,
                   "responses": {"204": {"description": "Removed"}, "400": _error("An unknown query parameter"),
                                 **_AUTH, "404": _NOT_FOUND}}},
    "/api/v1/webhooks/{webhook_id}/test": {
        "post": {"summary": "Queue a sample message for a webhook (write token)", "operationId": "testWebhook",
                 "tags": _TAGS, "parameters": _ID,
                 "responses": {"202": _ok(_DELIVERY_REF, "Queued"), "400": _error("An unknown query parameter"),
                               **_AUTH, "404": _NOT_FOUND}}},
    "/api/v1/webhooks/{webhook_id}/dead-letters": {
        "get": {"summary": "Messages that could not be delivered (write token)", "operationId": "listDeadLetters",
                "tags": _TAGS, "parameters": _ID,
                "responses": {"200": _ok({"type": "object", "required": ["dead_letters", "count"], "properties": {
                    "dead_letters": {"type": "array", "items": _DELIVERY_REF}, "count": {"type": "integer"}}}),
                    "400": _error("An unknown query parameter"), **_AUTH, "404": _NOT_FOUND}}},
    "/api/v1/webhooks/{webhook_id}/dead-letters/retry": {
        "post": {"summary": "Queue all of a webhook's dead letters again (write token)",
                 "operationId": "retryDeadLetters", "tags": _TAGS, "parameters": _ID,
                 "responses": {"200": _ok({"type": "object", "required": ["queued"],
                                           "properties": {"queued": {"type": "integer"}}}),
                               "400": _error("An unknown query parameter"), **_AUTH, "404": _NOT_FOUND}}},
    "/api/v1/webhooks/{webhook_id}/dead-letters/{delivery_id}/retry": {
        "post": {"summary": "Queue one dead letter again (write token)", "operationId": "retryDeadLetter",
                 "tags": _TAGS, "parameters": _DELIVERY_ID,
                 "responses": {"200": _ok({"type": "object", "required": ["queued"],
                                           "properties": {"queued": {"type": "integer"}}}),
                               "400": _error("An unknown query parameter"), **_AUTH, "404": _NOT_FOUND}}},
    "/api/v1/webhooks/{webhook_id}/dead-letters/{delivery_id}": {
        "delete": {"summary": "Discard one dead letter (write token)", "operationId": "discardDeadLetter",
                   "tags": _TAGS, "parameters": _DELIVERY_ID,
                   "responses": {"204": {"description": "Discarded"}, "400": _error("An unknown query parameter"),
                                 **_AUTH, "404": _NOT_FOUND}}},
}
