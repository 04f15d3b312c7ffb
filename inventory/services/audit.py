"""The audit trail: who changed what, when, with before/after state."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.models import AuditEvent


def snapshot(obj: Any, exclude: tuple[str, ...] = ("password_hash", "token_hash")) -> dict[str, Any]:
    """A JSON-safe dict of a model instance's column values (secrets left out)."""
    values: dict[str, Any] = {}
    for column in sa.inspect(obj).mapper.column_attrs:
        if column.key in exclude:
            continue
        value = getattr(obj, column.key)
        if isinstance(value, (datetime, date)):
            value = value.isoformat()
        values[column.key] = value
    return values


def record(session: so.Session, *, actor: str, action: str, entity_type: str,
           entity_id: Any = None, summary: str | None = None,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> AuditEvent:
    """Add an audit event to the session; it commits with the change it describes."""
    event = AuditEvent(actor=actor, action=action, entity_type=entity_type,
                       entity_id=None if entity_id is None else str(entity_id),
                       summary=(summary or "")[:500] or None, before=before, after=after)
    session.add(event)
    return event


def list_events(session: so.Session, *, entity_type: str | None = None, limit: int = 200,
                before_id: int | None = None) -> list[AuditEvent]:
    stmt = sa.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if entity_type:
        stmt = stmt.where(AuditEvent.entity_type == entity_type)
    if before_id:
        stmt = stmt.where(AuditEvent.id < before_id)
    return list(session.scalars(stmt))
