"""Collection runs: one run of one collector, the latest state of every scope, the scopes of a
run that did not succeed, and scope locks.

History stays small at fleet scale: a run of 100,000 osquery hosts keeps its totals, a
compact summary and a ``ScopeResult`` for each scope that did *not* succeed; the latest
state of every scope (last success, last status, error, counts) is one ``ScopeState`` row,
updated in place.  ``planb runs prune`` drops runs older than the retention
(``PLANB_RUN_RETENTION_DAYS``), never a scope's latest state.
"""
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
    # Scopes by outcome; only the ones that did not succeed have a ScopeResult row.
    scopes_succeeded: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    scopes_partial: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    scopes_failed: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    # Compact summary of the scopes that succeeded: {"succeeded_by_prefix": {"osquery": 99990},
    # "succeeded_sample": [...]}.
    summary: so.Mapped[Optional[dict[str, Any]]] = so.mapped_column(sa.JSON)
    # The lease: the process ("host:pid") renews ``lease_expires_at`` while the run works; a
    # running run whose lease has expired died (kill -9, OOM, a drained node) and is marked failed.
    holder: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    heartbeat_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    lease_expires_at: so.Mapped[Optional[datetime]] = so.mapped_column()

    # Not stored: every scope's outcome in this run, set on the run ``run_collection`` returns
    # (``collectors.ingest.ScopeOutcome``); runs read back from the database have ``()``.
    outcomes: tuple[Any, ...] = ()  # type: ignore[misc]

    scope_results: so.Mapped[list["ScopeResult"]] = so.relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True,
        order_by="ScopeResult.scope_key")


class ScopeResult(Base):
    """The outcome of one fine-grained scope (provider/account/region/resource type)
    within a run, kept for the scopes that did not succeed (and for runs recorded before
    history was bounded).  The latest state of each scope is its ``ScopeState``."""

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


_NEXT_REVISION = sa.select(sa.func.coalesce(sa.func.max(sa.column("revision")), 0) + 1).select_from(
    sa.table("collection_scopes")).scalar_subquery()


class ScopeState(Base):
    """The latest state of one collection scope: what the confidence report, the runs page
    and ``planb runs`` read.  One row per scope, updated in place by every run over it.

    ``software_unread`` lists the natural keys of assets of the scope whose installed
    software could not be read by the latest run (SSM inventory or VM extensions failing,
    a scale set's instances not listed): their software was left as it was, unconfirmed.
    ``revision`` grows with every write (the confidence report's cache key)."""

    __tablename__ = "collection_scopes"
    __table_args__ = (sa.Index("ix_collection_scopes_status_scope", "status", "scope_key"),)

    scope_key: so.Mapped[str] = so.mapped_column(sa.String(300), primary_key=True)
    collector: so.Mapped[str] = so.mapped_column(sa.String(50))
    run_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("collection_runs.id", ondelete="SET NULL"), index=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(20))
    error: so.Mapped[Optional[str]] = so.mapped_column(sa.Text)
    finished_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_success_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    created: so.Mapped[int] = so.mapped_column(default=0)
    updated: so.Mapped[int] = so.mapped_column(default=0)
    unchanged: so.Mapped[int] = so.mapped_column(default=0)
    marked_stale: so.Mapped[int] = so.mapped_column(default=0)
    software_unread: so.Mapped[Optional[list[str]]] = so.mapped_column(sa.JSON)
    # What the last full comparison of a self-contained, succeeded scope applied: a hash of
    # its records and of the attribution rules (``fingerprint``), the row counts it left
    # (``signature``: assets, installations, unattributed software, edges) and when
    # (``verified_at``).  A run whose batch has the same fingerprint, over rows nobody has
    # changed since (same counts, nothing newer than ``verified_at``, no heartbeat due),
    # skips the scope: unchanged, nothing read or written but its state.
    fingerprint: so.Mapped[Optional[str]] = so.mapped_column(sa.String(32))
    signature: so.Mapped[Optional[list[int]]] = so.mapped_column(sa.JSON)
    verified_at: so.Mapped[Optional[datetime]] = so.mapped_column()
    # Ingest passes the next revision itself; a row added or changed any other way (the ORM)
    # takes the next one too.
    revision: so.Mapped[int] = so.mapped_column(sa.BigInteger, index=True, default=_NEXT_REVISION,
                                                onupdate=_NEXT_REVISION)


class CollectionLock(Base):
    """Held while a run works on a scope, so two runs over one scope never overlap."""

    __tablename__ = "collection_locks"

    scope_key: so.Mapped[str] = so.mapped_column(sa.String(300), primary_key=True)
    run_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("collection_runs.id", ondelete="SET NULL"))
    holder: so.Mapped[str] = so.mapped_column(sa.String(200))
    acquired_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    # A lock past this is presumed left by a crashed process (for a run with a lease, the
    # lease decides: the lock lasts as long as its run is alive).
    expires_at: so.Mapped[datetime] = so.mapped_column()
