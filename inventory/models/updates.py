"""Vendor updates and their pre-production test results per rollout ring."""
from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow

if TYPE_CHECKING:
    from inventory.models.vendors import Product


class VendorUpdate(Base):
    """A product release or content update.  An installation on a version with no
    passing pre-production test is *untested exposure*."""

    __tablename__ = "vendor_updates"
    __table_args__ = (sa.UniqueConstraint("product_id", "version"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    product_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("products.id", ondelete="CASCADE"), index=True)
    version: so.Mapped[str] = so.mapped_column(sa.String(100))
    released_on: so.Mapped[Optional[date]] = so.mapped_column(sa.Date)
    kind: so.Mapped[str] = so.mapped_column(sa.String(20), default="patch")
    # Pushed by the vendor without customer staging (rapid-response content).
    vendor_pushed: so.Mapped[bool] = so.mapped_column(default=False)
    notes: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    product: so.Mapped["Product"] = so.relationship(back_populates="updates")
    tests: so.Mapped[list["UpdateTest"]] = so.relationship(
        back_populates="update", cascade="all, delete-orphan", passive_deletes=True,
        order_by="UpdateTest.id")


class UpdateTest(Base):
    """The latest test result of one update in one ring (history lives in the audit trail)."""

    __tablename__ = "update_tests"
    __table_args__ = (sa.UniqueConstraint("update_id", "ring"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    update_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("vendor_updates.id", ondelete="CASCADE"), index=True)
    ring: so.Mapped[str] = so.mapped_column(sa.String(30))
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="pending")
    tested_by: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    tested_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    evidence_url: so.Mapped[Optional[str]] = so.mapped_column(sa.String(1000))
    notes: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)

    update: so.Mapped[VendorUpdate] = so.relationship(back_populates="tests")
