"""Saved outage scenarios and declared incidents with their blast-radius snapshots."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow


class Scenario(Base):
    """A named outage scope, kept for drills and quick re-use."""

    __tablename__ = "scenarios"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200), unique=True)
    description: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    scope: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON)
    created_by: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class Incident(Base):
    """A declared incident: the scope and a snapshot of its blast radius at
    declaration, so the after-action review sees what responders saw."""

    __tablename__ = "incidents"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    title: so.Mapped[str] = so.mapped_column(sa.String(300))
    scope: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON)
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="open", index=True)
    declared_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    declared_by: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    resolved_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    # Totals, confidence and seeds as computed at declaration time.
    summary: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)

    assets: so.Mapped[list["IncidentAsset"]] = so.relationship(
        back_populates="incident", cascade="all, delete-orphan", passive_deletes=True,
        order_by="IncidentAsset.id")


class IncidentAsset(Base):
    """One hit asset as it stood when the incident was declared, plus recovery."""

    __tablename__ = "incident_assets"
    __table_args__ = (sa.UniqueConstraint("incident_id", "natural_key"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    incident_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("incidents.id", ondelete="CASCADE"), index=True)
    # Kept even if the asset row is later removed; the snapshot stays readable.
    asset_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("assets.id", ondelete="SET NULL"), index=True)
    natural_key: so.Mapped[str] = so.mapped_column(sa.String(500))
    name: so.Mapped[str] = so.mapped_column(sa.String(300))
    kind: so.Mapped[str] = so.mapped_column(sa.String(30))
    status: so.Mapped[str] = so.mapped_column(sa.String(20))
    hops: so.Mapped[int] = so.mapped_column(default=0)
    criticality: so.Mapped[str] = so.mapped_column(sa.String(20))
    # Snapshot details: explaining path, plans, business services.
    details: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    recovered_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    recovered_by: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    note: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)

    incident: so.Mapped[Incident] = so.relationship(back_populates="assets")
