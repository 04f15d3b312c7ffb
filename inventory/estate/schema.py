"""The estate file format (version 1), as a JSON Schema (draft 2020-12).

An estate file records what no API can discover: vendors and how raw names map
to them, business services and what they depend on, contingency plans, update
test results and vendor assessments -- plus any assets you want to describe by
hand.  The same document shape is read by ``planb import`` and
``POST /api/v1/estate`` and written by ``planb export`` / ``GET /api/v1/estate``.

Design choices (documented in docs/how-to/estate-file.md):

* every object is closed (``additionalProperties: false``): a misspelt field is
  an error with its path, never silently ignored;
* installed software is nested under its asset as ``software:``;
* dependencies are written on the dependent as ``depends_on:`` (a key, or
  ``{to, kind, strength}``); a group asset lists its members in ``members:``.
  A top-level ``dependencies:`` list (``{from, to, kind, strength}``) is also
  accepted for tools that generate edges separately;
* business services have their own section (``services:``): assets whose
  kind is ``service``;
* dates are ``YYYY-MM-DD``; timestamps may be a date or an ISO 8601 date-time.
"""
from __future__ import annotations

from typing import Any

from inventory.choices import (
    ASSET_KINDS,
    CRITICALITIES,
    DEPENDENCY_KINDS,
    ENVIRONMENTS,
    FINDING_SEVERITIES,
    FINDING_STATUSES,
    OS_FAMILIES,
    PRODUCT_KINDS,
    PROVIDERS,
    RINGS,
    STRENGTHS,
    TEST_STATUSES,
    UPDATE_KINDS,
    VENDOR_TIERS,
)

FORMAT_VERSION = 1

_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "format": "date"}
# A date, or an ISO 8601 date-time with an explicit offset (or Z).
_TIMESTAMP = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2}))?$",
    # Checked by the importer (a real calendar date and time, not just the right shape).
    "format": "planb-timestamp",
}
# Links must be web links: a javascript: or file: URL in a runbook link is an attack, not a runbook.
def _url(max_length: int = 1000) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+[^\s]*$"}


_URL = _url()


def _str(max_length: int, min_length: int = 1) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_length}


def _enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _list(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_STR_LIST = {"type": "array", "items": _str(300)}
_SCORE = {"type": "integer", "minimum": 0, "maximum": 5}

PRODUCT = _obj({
    "name": _str(200),
    "kind": _enum(PRODUCT_KINDS),
    "vendor_pushes_updates": {"type": "boolean"},
    "description": {"type": "string"},
    "aliases": _STR_LIST,
    "patterns": _STR_LIST,
}, required=("name",))

VENDOR = _obj({
    "name": _str(200),
    "tier": _enum(VENDOR_TIERS),
    "website": _url(500),
    "description": {"type": "string"},
    "cloud_provider": _enum(PROVIDERS),
    "has_alternative": {"type": "boolean"},
    "alternative": _str(500),
    "exit_plan_documented": {"type": "boolean"},
    "exit_plan_url": _URL,
    "aliases": _STR_LIST,
    "patterns": _STR_LIST,
    "products": _list(PRODUCT),
}, required=("name",))

SOFTWARE = _obj({
    "vendor": _str(200),
    "product": _str(200),
    "version": _str(100),
}, required=("vendor", "product"))

DEPENDS_ON_ITEM = {
    "oneOf": [
        _str(500),
        _obj({"to": _str(500), "kind": _enum(DEPENDENCY_KINDS), "strength": _enum(STRENGTHS)},
             required=("to",)),
    ]
}

_TAGS = {
    "type": "object",
    "propertyNames": {"minLength": 1, "maxLength": 100},
    "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
}

_ASSET_COMMON: dict[str, Any] = {
    "key": _str(500),
    "name": _str(300),
    "environment": _enum(ENVIRONMENTS),
    "criticality": _enum(CRITICALITIES),
    "owner": _str(200),
    "description": {"type": "string"},
    "tags": _TAGS,
    "depends_on": _list(DEPENDS_ON_ITEM),
}

ASSET: dict[str, Any] = _obj({
    **_ASSET_COMMON,
    "kind": _enum(ASSET_KINDS),
    "provider": _enum(PROVIDERS),
    "account": _str(100),
    "region": _str(60),
    "zone": _str(60),
    "hostname": _str(255),
    "cloud_instance_id": _str(100),
    "os": _obj({"family": _enum(OS_FAMILIES), "name": _str(200), "version": _str(100)}),
    "min_up": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "members": _list(_str(500)),
    "update_ring": _enum(RINGS),
    "software": _list(SOFTWARE),
}, required=("key", "name", "kind"))
# A group's members are only meaningful with the number that must stay up.
ASSET["dependentRequired"] = {"members": ["min_up"]}

SERVICE = _obj(_ASSET_COMMON, required=("key", "name"))

DEPENDENCY = _obj({
    "from": _str(500),
    "to": _str(500),
    "kind": _enum(DEPENDENCY_KINDS),
    "strength": _enum(STRENGTHS),
}, required=("from", "to"))

PLAN = _obj({
    "name": _str(200),
    "owner": _str(200),
    "rto_minutes": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
    "steps": {"type": "string"},
    "manual_fallback": {"type": "string"},
    "runbook_url": _URL,
    "review_interval_days": {"type": "integer", "minimum": 1, "maximum": 36_500},
    "last_reviewed": _TIMESTAMP,
    "last_exercised": _TIMESTAMP,
    "covers": _obj({
        "assets": _list(_str(500)),
        "products": _list(_obj({"vendor": _str(200), "product": _str(200)},
                               required=("vendor", "product"))),
        "vendors": _list(_str(200)),
    }),
}, required=("name",))

UPDATE_TEST = _obj({
    "ring": _enum(RINGS),
    "status": _enum(TEST_STATUSES),
    "tested_by": _str(200),
    "tested_at": _TIMESTAMP,
    "evidence_url": _URL,
    "notes": {"type": "string"},
}, required=("ring", "status"))

UPDATE = _obj({
    "vendor": _str(200),
    "product": _str(200),
    "version": _str(100),
    "released_on": _DATE,
    "kind": _enum(UPDATE_KINDS),
    "vendor_pushed": {"type": "boolean"},
    "notes": {"type": "string"},
    "tests": _list(UPDATE_TEST),
}, required=("vendor", "product", "version"))

ASSESSMENT = _obj({
    "vendor": _str(200),
    "assessed_on": _DATE,
    "assessor": _str(200),
    "scores": _obj({"security": _SCORE, "update_practices": _SCORE, "resilience": _SCORE,
                    "compliance": _SCORE}),
    "staged_rollouts": {"type": "boolean"},
    "customer_update_control": {"type": "boolean"},
    "rollback_supported": {"type": "boolean"},
    "certifications": _list(_obj({"name": _str(200), "expires": _DATE}, required=("name",))),
    "findings": _list(_obj({"title": _str(300), "severity": _enum(FINDING_SEVERITIES),
                            "status": _enum(FINDING_STATUSES)}, required=("title",))),
    "next_review_due": _DATE,
    "notes": {"type": "string"},
}, required=("vendor", "assessed_on"))

ESTATE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://planb.example/schemas/estate-v1.json",
    "title": "Plan B estate file, version 1",
    "type": "object",
    "additionalProperties": False,
    "required": ["version"],
    "properties": {
        "version": {"const": FORMAT_VERSION},
        "vendors": _list(VENDOR),
        "assets": _list(ASSET),
        "services": _list(SERVICE),
        "dependencies": _list(DEPENDENCY),
        "plans": _list(PLAN),
        "updates": _list(UPDATE),
        "assessments": _list(ASSESSMENT),
    },
}

# The sections in the order they are imported (references point backwards).
SECTIONS = ("vendors", "assets", "services", "dependencies", "plans", "updates", "assessments")
