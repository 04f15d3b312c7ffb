"""Request bodies checked against the OpenAPI description, before a view sees them.

The description's request schemas are the API's contract: a body they forbid is a
400 naming the field, whichever view it was sent to, so the document can never be
looser than the API.  The views keep the rules a schema cannot express (a name
that matches no record, a date in the future): those are marked ``x-planb-rule``
in the document and answered 404/409/422 by the services.

Formats are checked with the same parsers the services use (``date``, ``date-time``),
so a date the document calls valid is one the service can read.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from inventory.api import ApiError, body_bytes, read_json

MAX_MESSAGE = 300

# RFC 3339 (what OpenAPI's date and date-time formats mean); Python's ISO parsers accept more.
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

FORMATS = FormatChecker(formats=())


@FORMATS.checks("date")
def is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


@FORMATS.checks("date-time")
def is_date_time(value: object) -> bool:
    """RFC 3339, within years 1 to 9999 once in UTC (what the services can store)."""
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    text = value[:10] + "T" + value[11:]
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    return True


def _where(error: SchemaError) -> str:
    """The JSON path of the value at fault: ``covers.assets[0]``; a missing or unknown
    property is named itself."""
    parts = ""
    for part in error.absolute_path:
        parts += f"[{part}]" if isinstance(part, int) else (f".{part}" if parts else str(part))
    extra = None
    if error.validator == "required":
        extra = re.match(r"'([^']*)' is a required property", error.message)
    elif error.validator in ("additionalProperties", "unevaluatedProperties"):
        extra = re.search(r"\('([^']*)'", error.message)
    if extra:
        parts = f"{parts}.{extra.group(1)}" if parts else extra.group(1)
    return parts


def _message(error: SchemaError, field: str) -> str:
    text = error.message
    if error.validator == "additionalProperties":
        text = "unknown field (not in this operation's schema)"
    elif error.validator == "not":
        text = (error.schema.get("description") if isinstance(error.schema, dict) else None) or "not allowed here"
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE] + "…"
    return f"{field}: {text}" if field else text


def _validator(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Draft202012Validator:
    registry: Registry = Registry().with_resource(
        "urn:planb:openapi", Resource.from_contents(dict(spec), default_specification=DRAFT202012))
    # The document's local references (#/components/schemas/...) resolve against the document.
    return Draft202012Validator(_rebase(dict(schema)), registry=registry, format_checker=FORMATS)


def _rebase(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: (f"urn:planb:openapi{value}" if key == "$ref" and isinstance(value, str)
                      and value.startswith("#/") else _rebase(value)) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_rebase(item) for item in schema]
    return schema


def body_validators(spec: Mapping[str, Any],
                    operations: Mapping[tuple[str, str], Mapping[str, Any]]) -> dict[tuple[str, str], Callable[[], None]]:
    """(endpoint, METHOD) -> a check of the request's JSON body (raises ``ApiError``)."""
    checks: dict[tuple[str, str], Callable[[], None]] = {}
    for key, operation in operations.items():
        body = operation.get("requestBody")
        if not body or operation.get("x-planb-body-check") == "view":
            continue
        schema = (body.get("content", {}).get("application/json") or {}).get("schema")
        if schema is None:
            continue
        checks[key] = _make_check(_validator(spec, schema), bool(body.get("required")))
    return checks


def _deepest(errors: list[SchemaError]) -> SchemaError | None:
    """The error to report: the one deepest in the document, and inside an anyOf/oneOf that
    no branch matched, the deepest of its branches' errors (what the client should fix)."""
    if not errors:
        return None
    error = max(errors, key=lambda e: len(e.absolute_path))
    while error.context:
        # Prefer a branch of the instance's own type (its problem is inside), then the deepest.
        deeper = max(error.context, key=lambda e: (e.validator != "type", len(e.absolute_path)))
        if len(deeper.absolute_path) <= len(error.absolute_path) and error.validator not in ("anyOf", "oneOf"):
            break
        error = deeper
    return error


def _make_check(validator: Draft202012Validator, required: bool) -> Callable[[], None]:
    def check() -> None:
        if not required and not body_bytes():
            return
        document = read_json(check_text=False)
        error = _deepest(list(validator.iter_errors(document)))
        if error is None:
            return
        field = _where(error)
        raise ApiError(400, _message(error, field), field or None)

    return check
