"""Contingency plans (Plan Bs) and the record of their reviews and exercises."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow

if TYPE_CHECKING:
    from inventory.models.assets import Asset
    from inventory.models.vendors import Product, Vendor


class ContingencyPlan(Base):
    """What we do when something fails: steps, a manual fallback, who owns it and
    how fast it restores service (RTO).  A plan is *stale* when its review is
    overdue and *never exercised* until someone has rehearsed it."""

    __tablename__ = "contingency_plans"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200), unique=True)
    owner: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    rto_minutes: so.Mapped[Optional[int]] = so.mapped_column()
    steps: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    manual_fallback: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    runbook_url: so.Mapped[Optional[str]] = so.mapped_column(sa.String(1000))
    review_interval_days: so.Mapped[int] = so.mapped_column(default=180)
    last_reviewed: so.Mapped[Optional[datetime]] = so.mapped_column()
    last_exercised: so.Mapped[Optional[datetime]] = so.mapped_column()
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, onupdate=utcnow)

    links: so.Mapped[list["PlanLink"]] = so.relationship(
        back_populates="plan", cascade="all, delete-orphan", passive_deletes=True)
    events: so.Mapped[list["PlanEvent"]] = so.relationship(
        back_populates="plan", cascade="all, delete-orphan", passive_deletes=True,
        order_by="PlanEvent.at")


class PlanLink(Base):
    """What a plan covers: exactly one of an asset, a product or a vendor."""

    __tablename__ = "plan_links"
    __table_args__ = (
        sa.CheckConstraint(
            "(CASE WHEN asset_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN product_id IS NULL THEN 0 ELSE 1 END)"
            " + (CASE WHEN vendor_id IS NULL THEN 0 ELSE 1 END) = 1",
            name="exactly_one_target"),
        sa.UniqueConstraint("plan_id", "asset_id", "product_id", "vendor_id"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    plan_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("contingency_plans.id", ondelete="CASCADE"), index=True)
    asset_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("assets.id", ondelete="CASCADE"), index=True)
    product_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("products.id", ondelete="CASCADE"), index=True)
    vendor_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("vendors.id", ondelete="CASCADE"), index=True)

    plan: so.Mapped[ContingencyPlan] = so.relationship(back_populates="links")
    asset: so.Mapped[Optional["Asset"]] = so.relationship()
    product: so.Mapped[Optional["Product"]] = so.relationship()
    vendor: so.Mapped[Optional["Vendor"]] = so.relationship()


class PlanEvent(Base):
    """A recorded review or exercise of a plan, with its outcome and notes."""

    __tablename__ = "plan_events"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    plan_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("contingency_plans.id", ondelete="CASCADE"), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(20))
    at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    by: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    outcome: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    notes: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)

    plan: so.Mapped[ContingencyPlan] = so.relationship(back_populates="events")
