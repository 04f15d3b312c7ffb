"""Editing what we know about a vendor: tier, substitutability and exit planning.

These fields feed the vendor risk score (an alternative provider and a
documented exit plan lower it), so changing them is audited like any other
risk-relevant change.  Shared by the vendor page's form and the API.
"""
from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy.orm as so

from inventory.choices import VENDOR_TIERS
from inventory.models import Vendor
from inventory.services import audit
from inventory.services.updates import NotFound, ValidationError, check_http_url, clean_text

EDITABLE_FIELDS = ("tier", "has_alternative", "alternative", "exit_plan_documented", "exit_plan_url")


def _flag(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValidationError(field, f"{field} must be true or false")


def validate_resilience(data: Mapping[str, Any]) -> dict[str, Any]:
    """The changes ``data`` asks for, checked; unknown fields are refused, not dropped."""
    unknown = sorted(set(data) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"unknown field {unknown[0]!r}; editable: {', '.join(EDITABLE_FIELDS)}")
    out: dict[str, Any] = {}
    if "tier" in data:
        if data["tier"] not in VENDOR_TIERS:
            raise ValidationError("tier", f"tier must be one of {', '.join(VENDOR_TIERS)}")
        out["tier"] = data["tier"]
    for field in ("has_alternative", "exit_plan_documented"):
        if field in data:
            out[field] = _flag(data[field], field)
    if "alternative" in data:
        out["alternative"] = clean_text(data["alternative"], "alternative", max_len=500)
    if "exit_plan_url" in data:
        out["exit_plan_url"] = check_http_url(data["exit_plan_url"], "exit_plan_url")
    return out


def update_resilience(db: so.Session, vendor_id: int, data: Mapping[str, Any], *, actor: str) -> Vendor:
    """Apply the edit in the caller's transaction (the caller commits), with an audit event."""
    vendor = db.get(Vendor, vendor_id)
    if vendor is None:
        raise NotFound(f"no vendor with id {vendor_id}")
    changes = validate_resilience(data)
    before = audit.snapshot(vendor)
    changed = {k: v for k, v in changes.items() if getattr(vendor, k) != v}
    for key, value in changed.items():
        setattr(vendor, key, value)
    if changed:
        db.flush()
        audit.record(db, actor=actor, action="update", entity_type="vendor", entity_id=vendor.id,
                     summary=f"vendor {vendor.name}: {', '.join(sorted(changed))}", before=before,
                     after=audit.snapshot(vendor))
    return vendor
