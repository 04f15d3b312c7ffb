"""Accounts, API tokens and the audit trail."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow


class User(Base):
    """A local account. ``role`` is viewer, editor or admin.

    ``session_version`` is stored in the session cookie and bumped on logout
    and password change, so a replayed cookie is refused afterwards."""

    __tablename__ = "users"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    username: so.Mapped[str] = so.mapped_column(sa.String(100), unique=True)
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(300))
    role: so.Mapped[str] = so.mapped_column(sa.String(20), default="viewer")
    active: so.Mapped[bool] = so.mapped_column(default=True)
    session_version: so.Mapped[int] = so.mapped_column(default=1)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_login_at: so.Mapped[Optional[datetime]] = so.mapped_column()


class ApiToken(Base):
    """A bearer token for pipelines and scripts; only its HMAC is stored."""

    __tablename__ = "api_tokens"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    # First characters of the token, shown in lists so people can tell tokens apart.
    prefix: so.Mapped[str] = so.mapped_column(sa.String(20))
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(128), unique=True)
    role: so.Mapped[str] = so.mapped_column(sa.String(20), default="read")
    created_by_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    expires_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    revoked_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    last_used_at: so.Mapped[Optional[datetime]] = so.mapped_column()


class AuditEvent(Base):
    """Who changed what, when, with the before and after state."""

    __tablename__ = "audit_events"
    __table_args__ = (sa.Index("ix_audit_events_entity", "entity_type", "entity_id"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    actor: so.Mapped[str] = so.mapped_column(sa.String(200))
    action: so.Mapped[str] = so.mapped_column(sa.String(50))
    entity_type: so.Mapped[str] = so.mapped_column(sa.String(50))
    entity_id: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100))
    summary: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    before: so.Mapped[Optional[dict[str, Any]]] = so.mapped_column(sa.JSON)
    after: so.Mapped[Optional[dict[str, Any]]] = so.mapped_column(sa.JSON)
