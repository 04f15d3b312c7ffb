"""Webhooks, their outbox of deliveries, and the state of watched conditions.

A ``WebhookDelivery`` row is written in the same transaction as the event it
announces (an incident declared, a collection run finished), so a message is
never sent for something that rolled back and never lost for something that
committed.  Delivery is at least once: a worker claims due rows with a lease,
posts them, and records the outcome; a row that runs out of attempts (or that
the receiver refuses for good) stays as a *dead letter* for an admin to retry
or discard.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow


class Webhook(Base):
    """An endpoint that receives notifications of the chosen events in one format.

    The URL and the signing secret are stored encrypted (``inventory.services.webhooks``):
    chat webhook URLs are secrets themselves, and a signing secret must be readable to sign.
    ``url_display`` is the URL with its secret parts cut off, for lists."""

    __tablename__ = "webhooks"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    url_encrypted: so.Mapped[str] = so.mapped_column(sa.Text)
    url_display: so.Mapped[str] = so.mapped_column(sa.String(300))
    format: so.Mapped[str] = so.mapped_column(sa.String(20))  # json, slack or teams
    events: so.Mapped[list[str]] = so.mapped_column(sa.JSON, default=list)
    secret_encrypted: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    active: so.Mapped[bool] = so.mapped_column(default=True)
    # Why it was switched off when the receiver said the endpoint is gone (HTTP 410).
    disabled_reason: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    created_by: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_success_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    last_failure_at: so.Mapped[Optional[datetime]] = so.mapped_column()

    deliveries: so.Mapped[list["WebhookDelivery"]] = so.relationship(
        back_populates="webhook", cascade="all, delete-orphan", passive_deletes=True)


class WebhookDelivery(Base):
    """One message for one webhook: pending, delivered or dead (the dead-letter list).

    ``body`` is the exact document posted (rendered in the webhook's format when the
    event happened); ``event_id`` is shared by every webhook's copy of one event and sent
    as ``X-PlanB-Event-Id`` so receivers can drop duplicates."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    webhook_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    event: so.Mapped[str] = so.mapped_column(sa.String(50))
    event_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    subject: so.Mapped[str] = so.mapped_column(sa.String(300))
    body: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON)
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="pending")
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    next_attempt_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    # Held by a worker that is posting the row; a lease past its time is free again.
    lease_owner: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100))
    lease_until: so.Mapped[Optional[datetime]] = so.mapped_column()
    delivered_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    last_attempt_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    last_status_code: so.Mapped[Optional[int]] = so.mapped_column()
    last_error: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))

    webhook: so.Mapped[Webhook] = so.relationship(back_populates="deliveries")


class NotificationState(Base):
    """The last seen state of a watched condition (a source gone silent, the update gate,
    a plan's overdue review), so a notification goes out when it *changes*, not on every check."""

    __tablename__ = "notification_states"

    key: so.Mapped[str] = so.mapped_column(sa.String(300), primary_key=True)
    state: so.Mapped[str] = so.mapped_column(sa.String(50))
    changed_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    detail: so.Mapped[Optional[dict[str, Any]]] = so.mapped_column(sa.JSON)
