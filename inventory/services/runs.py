"""Collection-run history: dead runs, retention, and what the runs page and ``planb runs`` show.

Collectors write runs through ``collectors.ingest``; this module is what everything else
calls about them:

* ``expire_dead_runs`` closes runs whose process died (its lease expired: kill -9, OOM, a
  drained node) as ``failed`` and releases their scope locks.  Later runs call it when
  they start, and readers (``planb runs``, the runs page) call it too, so a dead run is
  found even when no run of the same scope comes.
* ``prune_history`` drops runs (and their per-scope results) that finished before a cutoff
  (``PLANB_RUN_RETENTION_DAYS``); the latest state of every scope (``ScopeState``) stays.
* ``run_finished_listeners`` are called with every run that ends (succeeded, partial or
  failed, dead runs included), e.g. to send a webhook.
* ``run_scopes`` and ``scope_counts`` read what the pages list.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

from inventory.db import read_session, utcnow, write_session
from inventory.services import notify
from inventory.models import CollectionLock, CollectionRun, ScopeResult, ScopeState

log = logging.getLogger(__name__)

SUCCEEDED = "succeeded"

#: Called with the finished ``CollectionRun`` (detached) whenever a run ends; exceptions are logged.
run_finished_listeners: list[Callable[[CollectionRun], None]] = []


def notify_run_finished(run: CollectionRun) -> None:
    for listener in tuple(run_finished_listeners):
        try:
            listener(run)
        except Exception:  # a listener must never fail a run
            log.exception("run-finished listener %r failed for run %s", listener, run.id)


# -- dead runs --------------------------------------------------------------------------------

def dead_run_ids(db: so.Session, now: datetime) -> list[int]:
    """Runs still marked running whose lease expired before ``now`` (a cheap indexed read)."""
    return list(db.scalars(sa.select(CollectionRun.id).where(
        CollectionRun.status == "running", CollectionRun.lease_expires_at.is_not(None),
        CollectionRun.lease_expires_at < now).order_by(CollectionRun.id)))


def expire_dead_runs(engine: Engine, now: datetime | None = None) -> list[int]:
    """Mark runs whose lease expired as failed and release their locks; their ids.

    Reads first and writes only when there is a dead run, so callers on a read path (the
    runs page) cost one indexed query.  The scopes such a run finished stay applied."""
    now = now or utcnow()
    with read_session(engine) as db:
        if not dead_run_ids(db, now):
            return []
    closed: list[CollectionRun] = []
    with write_session(engine) as db:
        for run_id in dead_run_ids(db, now):   # again, inside the write: another reader may have won
            run = db.get(CollectionRun, run_id)
            if run is None:
                continue
            expired = run.lease_expires_at
            run.status = "failed"
            run.finished_at = now
            run.errors = [*(run.errors or []), {"scope": None, "error": (
                f"dead: the process ({run.holder or 'unknown'}) stopped renewing the run's lease "
                f"(expired {expired.isoformat(timespec='seconds') if expired else 'unknown'}); marked failed, "
                "its scope locks released; the scopes it had finished stay applied")}]
            db.execute(sa.delete(CollectionLock).where(CollectionLock.run_id == run_id))
            notify.collection_finished(db, run)   # collection.failed, queued in this transaction
            closed.append(run)
        db.flush()
        for run in closed:
            db.expunge(run)
    for run in closed:
        log.warning("collection run %s (%s) died: lease expired, marked failed", run.id, run.collector)
        notify_run_finished(run)
    return [run.id for run in closed]


# -- retention --------------------------------------------------------------------------------

@dataclass
class PruneResult:
    cutoff: datetime
    runs: int
    scope_results: int


def prune_history(engine: Engine, older_than_days: float, *, now: datetime | None = None,
                  dry_run: bool = False) -> PruneResult:
    """Delete runs that finished more than ``older_than_days`` ago, with their per-scope
    results.  Running runs and the latest state of every scope are never deleted (a scope
    state whose run is pruned keeps its status, times and counts; its run link is cleared)."""
    cutoff = (now or utcnow()) - timedelta(days=older_than_days)
    old = sa.select(CollectionRun.id).where(CollectionRun.status != "running",
                                            CollectionRun.finished_at.is_not(None),
                                            CollectionRun.finished_at < cutoff)
    with (read_session(engine) if dry_run else write_session(engine)) as db:
        runs = db.scalar(sa.select(sa.func.count()).select_from(old.subquery())) or 0
        results = db.scalar(sa.select(sa.func.count()).select_from(ScopeResult)
                            .where(ScopeResult.run_id.in_(old))) or 0
        if runs and not dry_run:
            # Explicit, in this order: neither backend is relied on for the cascade.
            db.execute(sa.update(ScopeState).where(ScopeState.run_id.in_(old)).values(run_id=None))
            db.execute(sa.update(CollectionLock).where(CollectionLock.run_id.in_(old)).values(run_id=None))
            db.execute(sa.delete(ScopeResult).where(ScopeResult.run_id.in_(old)))
            db.execute(sa.delete(CollectionRun).where(CollectionRun.id.in_(old)))
    return PruneResult(cutoff=cutoff, runs=runs, scope_results=results)


# -- reading ------------------------------------------------------------------------------------

@dataclass
class ScopeRow:
    """One scope of a run as the pages and ``planb runs --id`` show it."""

    scope_key: str
    status: str
    created: int
    updated: int
    unchanged: int
    marked_stale: int
    error: str | None
    finished_at: datetime | None


def run_scopes(db: so.Session, run_id: int, limit: int | None = None) -> tuple[list[ScopeRow], int]:
    """The scopes of a run: those that did not succeed (its ``ScopeResult`` rows) and those
    whose latest state is still this run's, in scope order; and how many there are in all.

    A succeeded scope a later run has collected again is only in the run's counts."""
    rows: dict[str, ScopeRow] = {}
    for r in db.scalars(sa.select(ScopeResult).where(ScopeResult.run_id == run_id)):
        rows[r.scope_key] = ScopeRow(r.scope_key, r.status, r.created, r.updated, r.unchanged, r.marked_stale,
                                     r.error, r.finished_at)
    states = sa.select(ScopeState).where(ScopeState.run_id == run_id).order_by(ScopeState.scope_key)
    if limit is not None:
        states = states.limit(limit + len(rows))
    for s in db.scalars(states):
        rows.setdefault(s.scope_key, ScopeRow(s.scope_key, s.status, s.created, s.updated, s.unchanged,
                                              s.marked_stale, s.error, s.finished_at))
    ordered = sorted(rows.values(), key=lambda r: (r.status == SUCCEEDED, r.scope_key))
    result_keys = sa.select(ScopeResult.scope_key).where(ScopeResult.run_id == run_id)
    only_states = db.scalar(sa.select(sa.func.count()).select_from(ScopeState).where(
        ScopeState.run_id == run_id, ScopeState.scope_key.not_in(result_keys))) or 0
    total = db.scalar(sa.select(sa.func.count()).select_from(ScopeResult)
                      .where(ScopeResult.run_id == run_id)) or 0
    return (ordered[:limit] if limit is not None else ordered), total + only_states


def scope_counts(db: so.Session) -> dict[str, int]:
    """How many scopes are in each latest status (one grouped read)."""
    return {status: n for status, n in db.execute(
        sa.select(ScopeState.status, sa.func.count()).group_by(ScopeState.status))}


def scope_state_errors(run: Any) -> list[str]:
    """A run's errors as one line each (``scope: error``)."""
    return [f"{e.get('scope') or ''}: {e.get('error') or e.get('message')}".lstrip(": ")
            if isinstance(e, dict) else str(e) for e in (run.errors or [])]
