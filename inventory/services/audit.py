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
                before_id: int | None = None, actor: str | None = None, action: str | None = None,
                entity_id: str | None = None, since: datetime | None = None,
                until: datetime | None = None) -> list[AuditEvent]:
    """Newest first; ``before_id`` pages backwards (keyset, stable while events are added)."""
    stmt = sa.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if entity_type:
        stmt = stmt.where(AuditEvent.entity_type == entity_type)
    if before_id:
        stmt = stmt.where(AuditEvent.id < before_id)
    if actor:
        stmt = stmt.where(AuditEvent.actor == actor)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if entity_id:
        stmt = stmt.where(AuditEvent.entity_id == str(entity_id))
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    return list(session.scalars(stmt))


def distinct_values(session: so.Session, column: str) -> list[str]:
    """The values seen in ``entity_type``, ``action`` or ``actor`` (for filter menus)."""
    col = {"entity_type": AuditEvent.entity_type, "action": AuditEvent.action,
           "actor": AuditEvent.actor}[column]
    return [v for v in session.scalars(sa.select(col).distinct().order_by(col)) if v is not None]
