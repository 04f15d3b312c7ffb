"""Collection runs: one run of one collector, its per-scope results, and scope locks."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import Base, utcnow


class CollectionRun(Base):
    """One run of one collector over one or more scopes."""

    __tablename__ = "collection_runs"
    __table_args__ = (sa.Index("ix_collection_runs_collector_started", "collector", "started_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    collector: so.Mapped[str] = so.mapped_column(sa.String(50))
    # Human summary of what was asked for ("aws 123456789012 us-east-1,eu-west-1").
    scope: so.Mapped[str] = so.mapped_column(sa.String(1000), default="")
    started_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    finished_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default="running", index=True)
    created: so.Mapped[int] = so.mapped_column(default=0)
    updated: so.Mapped[int] = so.mapped_column(default=0)
    unchanged: so.Mapped[int] = so.mapped_column(default=0)
    marked_stale: so.Mapped[int] = so.mapped_column(default=0)
    errors: so.Mapped[list[Any]] = so.mapped_column(sa.JSON, default=list)

    scope_results: so.Mapped[list["ScopeResult"]] = so.relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="ScopeResult.scope_key")


class ScopeResult(Base):
    """The outcome of one fine-grained scope (provider/account/region/resource type)
    within a run.  Feeds the impact engine's confidence report."""

    __tablename__ = "scope_results"
    __table_args__ = (sa.Index("ix_scope_results_scope_finished", "scope_key", "finished_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    run_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("collection_runs.id", ondelete="CASCADE"), index=True)
    scope_key: so.Mapped[str] = so.mapped_column(sa.String(300))
    status: so.Mapped[str] = so.mapped_column(sa.String(20))
    created: so.Mapped[int] = so.mapped_column(default=0)
    updated: so.Mapped[int] = so.mapped_column(default=0)
    unchanged: so.Mapped[int] = so.mapped_column(default=0)
    marked_stale: so.Mapped[int] = so.mapped_column(default=0)
    error: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    finished_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    run: so.Mapped[CollectionRun] = so.relationship(back_populates="scope_results")


class CollectionLock(Base):
    """Held while a run works on a scope, so two runs over one scope never overlap."""

    __tablename__ = "collection_locks"

    scope_key: so.Mapped[str] = so.mapped_column(sa.String(300), primary_key=True)
    run_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("collection_runs.id", ondelete="SET NULL"))
    holder: so.Mapped[str] = so.mapped_column(sa.String(200))
    acquired_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    # A lock older than this is presumed left by a crashed process.
    expires_at: so.Mapped[datetime] = so.mapped_column()
