"""Assets (anything that can fail), what runs on them, and what they depend on."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow

if TYPE_CHECKING:
    from inventory.models.vendors import Product


class Asset(Base):
    """Anything that can fail: a VM, a host, a database, a load balancer, a
    cluster, a business service, a SaaS tenant.

    ``natural_key`` is stable per source (``aws:ec2:<account>:<region>:<id>``,
    ``azure:vm:<subscription>:<vmId>``, ``host:<hostname>``, ``service:<name>``)
    and is how collectors and imports find the same asset again.  Assets are
    never deleted by collectors: an asset no longer seen gets ``retired_at``
    and keeps its id, links and history.
    """

    __tablename__ = "assets"
    __table_args__ = (
        sa.Index("ix_assets_provider_region", "provider", "region"),
        sa.Index("ix_assets_source_scope_retired", "source_scope", "retired_at"),
        sa.Index("ix_assets_kind_name", "kind", "name"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    natural_key: so.Mapped[str] = so.mapped_column(sa.String(500), unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(300), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(30))
    provider: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    account: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100), index=True)
    region: so.Mapped[Optional[str]] = so.mapped_column(sa.String(60))
    zone: so.Mapped[Optional[str]] = so.mapped_column(sa.String(60))
    hostname: so.Mapped[Optional[str]] = so.mapped_column(sa.String(255), index=True)
    # EC2 instance id or Azure vmId: how an osquery host finds its cloud VM.
    cloud_instance_id: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100), index=True)
    os_family: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20), index=True)
    os_name: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    os_version: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100))
    environment: so.Mapped[Optional[str]] = so.mapped_column(sa.String(30), index=True)
    criticality: so.Mapped[str] = so.mapped_column(sa.String(20), default="medium", index=True)
    owner: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    description: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    tags: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    # Source-specific facts (AMI, VPC, image reference, power state, kernel...).
    attributes: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    # attribute name -> {"source": ..., "seen": iso timestamp}: who said what, when.
    provenance: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    # Group assets (target group, cluster, scale set): down when fewer members are up.
    min_up: so.Mapped[Optional[int]] = so.mapped_column()
    # Rollout ring this asset takes vendor updates in (canary, staging, production).
    update_ring: so.Mapped[Optional[str]] = so.mapped_column(sa.String(30))
    source: so.Mapped[str] = so.mapped_column(sa.String(50), default="import")
    # The collection scope this asset came from; only a successful run over
    # this scope may retire it.
    source_scope: so.Mapped[Optional[str]] = so.mapped_column(sa.String(300))
    first_seen: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_seen: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    retired_at: so.Mapped[Optional[datetime]] = so.mapped_column(index=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, onupdate=utcnow)

    installations: so.Mapped[list["Installation"]] = so.relationship(
        back_populates="asset", cascade="all, delete-orphan", passive_deletes=True)
    dependencies: so.Mapped[list["Dependency"]] = so.relationship(
        foreign_keys="Dependency.dependent_id", back_populates="dependent",
        cascade="all, delete-orphan", passive_deletes=True)
    dependents: so.Mapped[list["Dependency"]] = so.relationship(
        foreign_keys="Dependency.dependency_id", back_populates="dependency",
        cascade="all, delete-orphan", passive_deletes=True)

    @property
    def is_group(self) -> bool:
        return self.min_up is not None

    @property
    def is_retired(self) -> bool:
        return self.retired_at is not None

    def __repr__(self) -> str:
        return f"<Asset {self.natural_key!r}>"


class Installation(Base):
    """Asset runs product at version (from a collector or an import)."""

    __tablename__ = "installations"
    __table_args__ = (
        sa.UniqueConstraint("asset_id", "product_id"),
        sa.Index("ix_installations_product_version", "product_id", "version"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    asset_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("assets.id", ondelete="CASCADE"))
    product_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("products.id", ondelete="CASCADE"))
    version: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100))
    # The raw strings the collector saw, kept for audit and re-attribution.
    raw_name: so.Mapped[Optional[str]] = so.mapped_column(sa.String(300))
    raw_publisher: so.Mapped[Optional[str]] = so.mapped_column(sa.String(300))
    source: so.Mapped[str] = so.mapped_column(sa.String(50), default="import")
    # Source facts about this installation that are not the product's version: an Azure
    # extension's handler version, the image version a VM was built from, a container
    # image digest, a package URL. ``version`` stays None when the source does not know
    # the product's own version (see docs/collectors/versions.md).
    attributes: so.Mapped[Optional[dict[str, Any]]] = so.mapped_column(sa.JSON)
    first_seen: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_seen: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    asset: so.Mapped[Asset] = so.relationship(back_populates="installations")
    product: so.Mapped["Product"] = so.relationship(back_populates="installations")


class Dependency(Base):
    """Dependent asset → dependency asset.

    *hard*: the dependent fails when the dependency fails; *soft*: it degrades.
    For ``member-of`` edges the dependent is a group asset and the dependency
    one of its members.
    """

    __tablename__ = "dependencies"
    __table_args__ = (
        sa.UniqueConstraint("dependent_id", "dependency_id", "kind"),
        sa.CheckConstraint("dependent_id <> dependency_id", name="not_self"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    dependent_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("assets.id", ondelete="CASCADE"))
    dependency_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("assets.id", ondelete="CASCADE"), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(20), default="runs-on")
    strength: so.Mapped[str] = so.mapped_column(sa.String(10), default="hard")
    source: so.Mapped[str] = so.mapped_column(sa.String(50), default="import")
    first_seen: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_seen: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    dependent: so.Mapped[Asset] = so.relationship(
        foreign_keys=[dependent_id], back_populates="dependencies")
    dependency: so.Mapped[Asset] = so.relationship(
        foreign_keys=[dependency_id], back_populates="dependents")


class InventoryVersion(Base):
    """A single-row change counter for the inventory graph (row ``id = 1``).

    Database triggers (migration ``0002_inventory_version_triggers``) bump
    ``version`` whenever assets, installations, dependencies, products, vendors,
    contingency plans or plan links change in a way the impact engine reads, so
    the engine's in-memory graph cache knows with one primary-key read whether
    it is still current — whichever process or code path did the write.
    """

    __tablename__ = "inventory_version"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    version: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    # Per-part counters (bumped with ``version``), so a rebuild reloads only what
    # changed: a plan review does not reload 100k assets.
    assets_v: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    installs_v: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    deps_v: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    catalog_v: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    plans_v: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)


class InventoryChange(Base):
    """One row the impact engine's in-memory graph must look at again.

    Written by the same triggers that bump ``InventoryVersion`` (migration
    ``0006_inventory_change_log``), tagged with the version that bump produced:
    ``a_id``/``b_id``/``kind`` are the changed row's key (an asset's id; an
    installation's asset and product; a dependency's dependent, dependency and
    kind; the id of a vendor, product, plan or plan link), or ``a_id`` is NULL
    for "too many rows of this table: reload it".  A running graph reads the
    changes since its own version and patches itself (``inventory.impact.changes``).
    Old rows are pruned by a trigger; never written by application code.
    """

    __tablename__ = "inventory_changes"

    id: so.Mapped[int] = so.mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                                          primary_key=True)
    version: so.Mapped[int] = so.mapped_column(sa.BigInteger, index=True)
    table_name: so.Mapped[str] = so.mapped_column(sa.String(30))
    a_id: so.Mapped[Optional[int]] = so.mapped_column(sa.BigInteger)
    b_id: so.Mapped[Optional[int]] = so.mapped_column(sa.BigInteger)
    kind: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
