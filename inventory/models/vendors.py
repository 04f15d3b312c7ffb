"""Vendors (suppliers we depend on), what they supply, and how raw names map to them."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow

if TYPE_CHECKING:
    from inventory.models.assets import Asset, Installation
    from inventory.models.risk import VendorAssessment
    from inventory.models.updates import VendorUpdate


class Vendor(Base):
    """A supplier whose failure can hurt us (CrowdStrike, Microsoft, Amazon Web Services)."""

    __tablename__ = "vendors"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200), unique=True)
    tier: so.Mapped[str] = so.mapped_column(sa.String(20), default="medium")
    website: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    description: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    # The cloud this vendor operates, if any ("aws", "azure"): a region outage of
    # this vendor seeds every asset hosted on that provider in that region.
    cloud_provider: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20), unique=True)
    # Substitutability and exit planning feed the vendor risk score.
    has_alternative: so.Mapped[bool] = so.mapped_column(default=False)
    alternative: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    exit_plan_documented: so.Mapped[bool] = so.mapped_column(default=False)
    exit_plan_url: so.Mapped[Optional[str]] = so.mapped_column(sa.String(1000))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, onupdate=utcnow)

    aliases: so.Mapped[list["VendorAlias"]] = so.relationship(
        back_populates="vendor", cascade="all, delete-orphan", passive_deletes=True,
        order_by="VendorAlias.alias")
    products: so.Mapped[list["Product"]] = so.relationship(
        back_populates="vendor", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Product.name")
    assessments: so.Mapped[list["VendorAssessment"]] = so.relationship(
        back_populates="vendor", cascade="all, delete-orphan", passive_deletes=True,
        order_by="VendorAssessment.assessed_on")

    def __repr__(self) -> str:
        return f"<Vendor {self.name!r}>"


class VendorAlias(Base):
    """A raw string that names a vendor (and optionally one of its products).

    ``alias`` is stored normalised (lower case, collapsed spaces).  When
    ``is_pattern`` is set it is a regular expression matched against the
    normalised raw string instead of an exact name.
    """

    __tablename__ = "vendor_aliases"
    __table_args__ = (sa.UniqueConstraint("alias", "is_pattern"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    vendor_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("vendors.id", ondelete="CASCADE"), index=True)
    product_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("products.id", ondelete="CASCADE"), index=True)
    alias: so.Mapped[str] = so.mapped_column(sa.String(300))
    is_pattern: so.Mapped[bool] = so.mapped_column(default=False)

    vendor: so.Mapped[Vendor] = so.relationship(back_populates="aliases")
    product: so.Mapped[Optional["Product"]] = so.relationship()


class Product(Base):
    """Something a vendor supplies: an OS, an agent, an application, a cloud service, a SaaS."""

    __tablename__ = "products"
    __table_args__ = (sa.UniqueConstraint("vendor_id", "name"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    vendor_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("vendors.id", ondelete="CASCADE"), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(200))
    kind: so.Mapped[str] = so.mapped_column(sa.String(30), default="application")
    # The vendor can push updates or content without the customer staging them
    # (the Falcon "rapid response content" pattern): a risk in its own right.
    vendor_pushes_updates: so.Mapped[bool] = so.mapped_column(default=False)
    description: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)

    vendor: so.Mapped[Vendor] = so.relationship(back_populates="products")
    installations: so.Mapped[list["Installation"]] = so.relationship(
        back_populates="product", passive_deletes=True)
    updates: so.Mapped[list["VendorUpdate"]] = so.relationship(
        back_populates="product", cascade="all, delete-orphan", passive_deletes=True)

    def __repr__(self) -> str:
        return f"<Product {self.name!r}>"


class UnattributedSoftware(Base):
    """Software a collector found whose publisher matched no vendor.

    Kept per asset so nothing is dropped; ``planb vendors --unattributed``
    lists the publishers so someone can add an alias.
    """

    __tablename__ = "unattributed_software"
    __table_args__ = (sa.UniqueConstraint("asset_id", "name", "publisher"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    asset_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("assets.id", ondelete="CASCADE"), index=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(300))
    publisher: so.Mapped[str] = so.mapped_column(sa.String(300), default="", index=True)
    version: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100))
    source: so.Mapped[str] = so.mapped_column(sa.String(50))
    first_seen: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_seen: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    asset: so.Mapped["Asset"] = so.relationship()
