"""Apply collector output to the inventory: many scopes at a time, set-based, safely.

``run_collection(engine, collector)`` is the only way collector output reaches the
database:

* It records a ``CollectionRun`` (status ``running``, with a **lease** its process renews
  while it works, ``PLANB_RUN_LEASE_SECONDS``) first, so a crashed run is visible and a
  run whose process died is found and closed when its lease expires
  (``inventory.services.runs.expire_dead_runs``, called by later runs and by readers).
* The collector is read in a thread of its own and the batches it yields are applied
  **in groups**: every batch ready when the previous group committed, up to
  ``GROUP_MAX_SCOPES`` scopes / ``GROUP_MAX_ROWS`` records, in **one transaction**, with
  set-based statements per table (one read of what is stored per table, one
  ``executemany`` / ``COPY`` per kind of write).  A fleet of 100,000 one-host scopes is
  a few hundred transactions, not 100,000.
* Per-scope semantics are kept inside a group: each scope has its own outcome; only a
  scope that is ``complete`` and whose records were all usable retires the assets of
  that scope it did not contain (once per group, over all such scopes); a scope with an
  unusable record or a dangling reference is partial and retires and removes nothing.
  Retired assets seen again are revived (same id, links and history).  When scopes of a
  group touch the same asset, or the group fails while being applied, the group is
  rolled back and its scopes are applied one by one, so one bad scope fails alone.
* **Scope locks**: a run takes a ``CollectionLock`` per scope (set-based, planned scopes
  before the collector starts), so a second run over a scope being collected refuses
  that scope and records why; a lock lasts as long as its run's lease.
* **Failures below the scope**: ``ScopeBatch.software_unread`` names assets whose
  software could not be read (SSM inventory or VM extensions failing): they are applied
  and retired as usual, their installed software is left exactly as it was, and the
  scope is partial with the reason.  ``ScopeBatch.members_unread`` names group assets
  whose member listing failed (a scale set's instances): their stored members are kept
  as they were.  Both are recorded on the scope's state (``ScopeState.software_unread``)
  for the blast radius's confidence report.
* **Bounded history**: each scope's latest state is one ``ScopeState`` row updated in
  place; the run keeps its totals, per-status scope counts, a compact summary and a
  ``ScopeResult`` only for the scopes that did not succeed.  Runs older than
  ``PLANB_RUN_RETENTION_DAYS`` are pruned when a run ends (and by ``planb runs prune``).
* The run ends ``succeeded`` (every scope succeeded), ``failed`` (none did) or
  ``partial``; ``on_run_finished`` is called with it.

Writes are bulk (executemany / COPY, no per-row commit) and *compare before writing*: a
re-run over an unchanged estate issues no INSERT, UPDATE or DELETE against inventory
tables — only the run bookkeeping (``BOOKKEEPING_TABLES``).

``last_seen`` granularity (a deliberate choice): per-row ``last_seen`` (and the ``seen``
stamps in ``Asset.provenance``) are refreshed when the row changes, or when the stored
value is older than ``LAST_SEEN_GRANULARITY`` (a day by default) — a heartbeat, counted as
*unchanged*.  The exact time a scope was last confirmed is ``ScopeState.last_success_at``.

One machine, one asset (reconciliation): see ``merge_record``.  A host-side record
(host, osquery) carrying ``cloud_instance_id`` merges into the cloud asset with that id;
a cloud record whose natural key is new but whose ``cloud_instance_id`` names an
existing host-side asset *re-keys* that asset (it takes the cloud natural key, provider
and scope, and keeps its id, links and software).  Both orders converge to the same
single asset.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import marshal
import os
import queue
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import chain
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

from collectors.attribution import Attributor, chunks
from collectors.base import AssetRecord, Collector, DependencyRecord, ProgressFn, ScopeBatch, SoftwareRecord
from inventory import config
from inventory.db import clean_parameters, json_serializer, read_session, utcnow, write_session
from inventory.memory import paused_gc
from inventory.services.notify import collection_finished as notify_collection_finished
from inventory.models import (
    Asset,
    CollectionLock,
    CollectionRun,
    Dependency,
    Installation,
    ScopeResult,
    ScopeState,
    UnattributedSoftware,
)
from inventory.services import runs as run_history
from inventory.validation import has_unwanted, sanitize_text, sanitize_tree, tree_may_have_unwanted

log = logging.getLogger(__name__)

LAST_SEEN_GRANULARITY = timedelta(hours=24)
# Backstop for locks of runs without a lease (written by older versions): presumed left by
# a crash after this long.
LOCK_TTL = timedelta(hours=2)
DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_RETENTION_DAYS = 90
# A group (one transaction) holds at most this many scopes / records; a batch larger than
# GROUP_MAX_ROWS is applied alone.  While the collector is still reading, a group smaller
# than GROUP_MIN_ROWS waits up to GROUP_WAIT_SECONDS for more batches.
GROUP_MAX_SCOPES = 2000
GROUP_MAX_ROWS = 40_000
GROUP_MIN_ROWS = 4000
GROUP_WAIT_SECONDS = 0.2
# Batches read ahead of the writer (bounded memory while a large log streams in).
READ_AHEAD_BATCHES = 4000
# A run's errors column keeps this many entries (the per-scope results keep every one).
MAX_RUN_ERRORS = 1000
SUMMARY_SAMPLE = 10

CLOUD_SOURCES = frozenset({"aws", "azure"})
HOST_SOURCES = frozenset({"host", "osquery"})
# Consoles of agents running on the machine (EDR, fleet managers): they see what the agent sees.
AGENT_SOURCES = frozenset({"crowdstrike", "defender", "sentinelone", "fleet"})
# Sources whose assets a cloud collector may re-key to its own identity when their cloud
# instance id names the same machine (one machine, one asset).
MACHINE_SIDE_SOURCES = HOST_SOURCES | AGENT_SOURCES | {"kubernetes"}
# Sources a human curates (the estate file, a CMDB export); they win for curated attributes.
CURATED_SOURCES = frozenset({"estate", "import", "manual", "api", "web", "cmdb"})

# Which source wins for which attribute (higher wins; ties keep the incumbent
# so two sources never flap).  Unknown sources rank 0.
_RANKS: dict[str, dict[str, int]] = {
    # Provider facts: the cloud API is authoritative; the cluster knows its nodes' zones and
    # pools; agent consoles and osquery relay the instance metadata they read.
    "cloud": {"aws": 4, "azure": 4, "kubernetes": 3, "crowdstrike": 2, "defender": 2, "sentinelone": 2,
              "fleet": 2, "osquery": 2, "host": 1},
    # What runs inside the machine: the machine itself knows best, then the agents on it
    # (osquery, Fleet's osquery, EDR agents: they report their own version exactly), then an
    # application's SBOM, the kubelet's view of its node, and last the cloud's inventories.
    "host": {"host": 4, "osquery": 3, "fleet": 3, "crowdstrike": 3, "defender": 3, "sentinelone": 3,
             "sbom": 3, "kubernetes": 2, "aws": 1, "azure": 1},
    # Owner, criticality, environment: what a human wrote wins (the estate file over a CMDB
    # export), then cloud and cluster tags.
    "curated": {"estate": 5, "import": 5, "manual": 5, "api": 5, "web": 5, "cmdb": 4,
                "aws": 2, "azure": 2, "kubernetes": 2, "crowdstrike": 1, "defender": 1, "sentinelone": 1,
                "fleet": 1, "osquery": 1, "host": 1},
    # Existence (natural key, source, scope, retirement): the cloud API, then the cluster and
    # the host, then agent consoles (a stale console entry never revives what the cloud retired).
    # An asset a human described (the estate file, the API) stays theirs against agent consoles
    # and osquery: a console that stops listing a machine (agent uninstalled) must not retire it.
    "existence": {"aws": 4, "azure": 4, "kubernetes": 3, "host": 3,
                  "estate": 3, "import": 3, "manual": 3, "api": 3, "web": 3,
                  "crowdstrike": 2, "defender": 2, "sentinelone": 2, "fleet": 2, "osquery": 2,
                  "cmdb": 1, "sbom": 1},
}
_ATTRIBUTE_GROUP = {
    "name": "cloud", "kind": "cloud", "provider": "cloud", "account": "cloud", "region": "cloud",
    "zone": "cloud", "cloud_instance_id": "cloud", "tags": "cloud", "min_up": "cloud",
    "hostname": "host", "os_family": "host", "os_name": "host", "os_version": "host",
    "environment": "curated", "criticality": "curated", "owner": "curated",
}
# Keys of ``Asset.attributes`` that describe the running OS (host wins); others are cloud facts.
HOST_ATTRIBUTE_KEYS = frozenset({
    "kernel", "kernel_version", "os_build", "os_codename", "os_platform", "os_major", "os_minor",
    "arch", "architecture", "cpu_brand", "cpu_cores", "memory_bytes", "hardware_vendor",
    "hardware_model", "host_uuid", "osquery_version", "computer_name", "install_date",
})
# Columns a record may set, in a fixed order.
RECORD_COLUMNS = ("name", "kind", "provider", "account", "region", "zone", "hostname",
                  "cloud_instance_id", "os_family", "os_name", "os_version", "environment",
                  "criticality", "owner", "min_up")
_ASSET_READ = ("id", "natural_key", *RECORD_COLUMNS, "tags", "attributes", "provenance", "source",
               "source_scope", "retired_at", "last_seen")
# Run bookkeeping tables: the only ones an unchanged re-run writes to.
BOOKKEEPING_TABLES = frozenset({"collection_runs", "scope_results", "collection_scopes", "collection_locks"})


def rank(attribute: str, source: str | None) -> int:
    if attribute.startswith("attributes."):
        group = "host" if attribute.split(".", 1)[1] in HOST_ATTRIBUTE_KEYS else "cloud"
    else:
        group = _ATTRIBUTE_GROUP.get(attribute, "cloud")
    return _RANKS[group].get(source or "", 0)


def software_rank(source: str | None) -> int:
    """Installed software: host > osquery > cloud inventory (SSM, VM extensions) > imports."""
    return _RANKS["host"].get(source or "", 0)


def existence_rank(source: str | None) -> int:
    return _RANKS["existence"].get(source or "", 0)


class ScopeLocked(Exception):
    """Another live run holds the scope."""


class _GroupConflict(Exception):
    """Two scopes of one group touch the same asset: apply them one at a time instead."""


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    marked_stale: int = 0

    def add(self, other: Counts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.marked_stale += other.marked_stale


@dataclass
class BatchOutcome:
    """What applying one scope's batch did."""

    counts: Counts = field(default_factory=Counts)
    errors: list[str] = field(default_factory=list)
    retired: bool = False
    # Natural keys of the scope's assets whose software this run could not read.
    unread: list[str] = field(default_factory=list)
    # For a self-contained scope that succeeded: see ``ScopeState.fingerprint``.
    fingerprint: str | None = None
    signature: list[int] | None = None
    verified_at: datetime | None = None
    skipped: bool = False


@dataclass(slots=True)
class ScopeOutcome:
    """One scope's result in a run (attribute names as on ``ScopeResult``)."""

    scope_key: str
    status: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    marked_stale: int = 0
    error: str | None = None
    finished_at: datetime | None = None
    software_unread: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    signature: list[int] | None = None
    verified_at: datetime | None = None


def on_run_finished(run: CollectionRun) -> None:
    """Marks the end of a run (succeeded, partial or failed; also a dead run's, when it is
    found): calls every ``inventory.services.runs.run_finished_listeners`` with the detached
    run.  The place to hang notifications (webhooks on failed/partial runs) on."""
    run_history.notify_run_finished(run)


# -- the run ----------------------------------------------------------------------------------

def run_collection(engine: Engine, collector: Collector, *, progress: ProgressFn | None = None,
                   now: datetime | None = None,
                   last_seen_granularity: timedelta = LAST_SEEN_GRANULARITY,
                   lock_ttl: timedelta = LOCK_TTL,
                   lease_seconds: float | None = None,
                   retention_days: float | None = None) -> CollectionRun:
    """Run ``collector`` and apply every scope it yields; returns the finished ``CollectionRun``
    (detached, its ``scope_results`` loaded and every scope's ``outcomes`` set).

    ``now`` fixes the clock for the whole run (tests, the benchmark); by default each
    group is stamped with the time it is applied.  ``lease_seconds`` and
    ``retention_days`` default to ``PLANB_RUN_LEASE_SECONDS`` / ``PLANB_RUN_RETENTION_DAYS``.
    """
    run = _Run(engine, collector, progress=progress, now=now, granularity=last_seen_granularity,
               lock_ttl=lock_ttl, lease_seconds=lease_seconds)
    finished = run.execute()
    retention = retention_days if retention_days is not None else \
        (config.get("RUN_RETENTION_DAYS") or DEFAULT_RETENTION_DAYS)
    try:
        run_history.prune_history(engine, retention, now=run.clock())
    except Exception:  # noqa: BLE001 - history clean-up must never fail a run
        log.exception("pruning collection-run history failed")
    on_run_finished(finished)
    return finished


class _Run:
    """One collection run: its bookkeeping, its locks and lease, and the groups it applies."""

    def __init__(self, engine: Engine, collector: Collector, *, progress: ProgressFn | None,
                 now: datetime | None, granularity: timedelta, lock_ttl: timedelta,
                 lease_seconds: float | None) -> None:
        self.engine = engine
        self.collector = collector
        self.source = collector.name
        self.say: ProgressFn = progress or (lambda _msg: None)
        self.clock: Callable[[], datetime] = (lambda: now) if now is not None else utcnow
        self.granularity = granularity
        self.lock_ttl = lock_ttl
        self.lease = timedelta(seconds=lease_seconds if lease_seconds is not None else
                               (config.get("RUN_LEASE_SECONDS") or DEFAULT_LEASE_SECONDS))
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.run_id = 0
        self.totals = Counts()
        self.errors: list[dict[str, Any]] = []
        self.n_errors = 0
        self.outcomes: list[ScopeOutcome] = []
        self.status_counts: Counter[str] = Counter()
        self.succeeded_by_prefix: Counter[str] = Counter()
        self.succeeded_sample: list[str] = []
        self.held: set[str] = set()
        self.refused: dict[str, str] = {}
        self._attributor: Attributor | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def execute(self) -> CollectionRun:
        run_history.expire_dead_runs(self.engine, self.clock())
        started = self.clock()
        with write_session(self.engine) as db:
            run = CollectionRun(collector=self.source, scope=_describe(self.collector)[:1000], status="running",
                                started_at=started, errors=[], holder=self.holder, heartbeat_at=started,
                                lease_expires_at=started + self.lease)
            db.add(run)
            db.flush()
            self.run_id = run.id
        heartbeat = _Heartbeat(self.engine, self.run_id, self.lease, self.clock)
        heartbeat.start()
        try:
            # The collector's thread builds records while the groups are applied: the cyclic
            # collector walking them again and again cost a fleet run 10-20% (what the run
            # keeps is bounded by the read-ahead; cycles made meanwhile are collected after).
            with paused_gc():
                self._collect_and_apply()
        except LeaseLost as exc:
            log.error("collection run %s stopped: %s", self.run_id, exc)
            self._error(None, str(exc))
            self.status_counts["failed"] += 1
        except BaseException as exc:
            self._error(None, f"run failed: {type(exc).__name__}: {exc}")
            self.status_counts["failed"] += 1
            try:
                self._finish()
            except Exception:  # noqa: BLE001 - the lease expiry closes it otherwise
                log.exception("closing collection run %s failed", self.run_id)
            raise
        finally:
            heartbeat.stop()
        return self._finish()

    def _collect_and_apply(self) -> None:
        # Collectors that know their scopes up front get them locked before any API call,
        # so an overlapping run refuses to *start* them.
        planned = _planned_scopes(self.collector)
        if planned:
            self.refused = _acquire_locks(self.engine, planned, self.run_id, self.holder, self.clock(),
                                          self.lock_ttl)
            self.held = set(planned) - set(self.refused)
            self._record_refused(sorted(self.refused.items()))
        lease_lost = False
        try:
            if planned and not self.held:
                return  # every scope is someone else's: do not even start the collector
            offered = self._offer_unchanged()
            feed = _Feed(self.collector, self.say)
            try:
                for group in feed.groups():
                    self._apply_group(group)
            finally:
                feed.close()
                if offered:
                    self.collector.unchanged = None  # type: ignore[attr-defined]
            if feed.crash is not None:
                exc = feed.crash
                reason = f"collector crashed: {type(exc).__name__}: {exc}"
                self.say(reason)
                self._error(None, reason)
                self.status_counts["failed"] += 1
        except LeaseLost:
            lease_lost = True  # the scopes are no longer this run's: record nothing more
            raise
        finally:
            # planned scopes the collector never yielded: record why, then unlock
            left = sorted(self.held)
            if left and not lease_lost:
                now = self.clock()
                missing = [ScopeOutcome(key, "failed", error="scope was planned but the collector returned "
                                                               "nothing for it", finished_at=now) for key in left]
                try:
                    with write_session(self.engine) as db:
                        self._record(db, missing, update_state=True)
                        _release_locks(db, left, self.run_id)
                except Exception:  # noqa: BLE001 - recording must not hide the original error
                    log.exception("recording the unfinished scopes of run %s failed", self.run_id)
                    _release_locks_now(self.engine, left, self.run_id)
                for outcome in missing:
                    self._error(outcome.scope_key, "no data returned for planned scope")
            self.held.clear()

    def _finish(self) -> CollectionRun:
        statuses = self.status_counts
        if not statuses or set(statuses) == {"succeeded"}:
            final = "succeeded"
        elif set(statuses) == {"failed"}:
            final = "failed"
        else:
            final = "partial"
        errors = self.errors
        if self.n_errors > len(errors):
            errors = [*errors, {"scope": None, "error": f"... and {self.n_errors - len(errors)} more errors "
                                                          "(see the run's scopes)"}]
        with write_session(self.engine) as db:
            run = db.get(CollectionRun, self.run_id)
            assert run is not None
            if run.status == "running":
                run.status = final
                run.errors = errors
            else:  # closed meanwhile (its lease had expired): keep why, add what happened since
                run.errors = [*(run.errors or []), *errors]
            run.finished_at = self.clock()
            run.created, run.updated = self.totals.created, self.totals.updated
            run.unchanged, run.marked_stale = self.totals.unchanged, self.totals.marked_stale
            run.scopes_succeeded = self.status_counts["succeeded"]
            run.scopes_partial = self.status_counts["partial"]
            run.scopes_failed = self.status_counts["failed"]
            run.summary = {"succeeded_by_prefix": dict(sorted(self.succeeded_by_prefix.items())),
                           "succeeded_sample": sorted(self.succeeded_sample)}
            run.lease_expires_at = None
            final = run.status
            # Notifications: collection.failed / collection.partial, queued in this transaction.
            notify_collection_finished(db, run)
        with read_session(self.engine) as db:
            finished = db.scalars(sa.select(CollectionRun).where(CollectionRun.id == self.run_id)
                                  .options(so.selectinload(CollectionRun.scope_results))).one()
            db.expunge(finished)  # hand back a detached, fully loaded run (the session rolls back)
        finished.outcomes = tuple(sorted(self.outcomes, key=attrgetter("scope_key")))
        t = self.totals
        self.say(f"{self.source}: {final} — created {t.created}, updated {t.updated}, "
                 f"unchanged {t.unchanged}, marked stale {t.marked_stale}")
        return finished

    def _offer_unchanged(self) -> bool:
        """Tell a collector that gives digests which ones its scopes' last full comparisons
        applied (``Collector.unchanged``), so it can defer building their records."""
        if not hasattr(self.collector, "unchanged"):
            return False
        salt: bytes = self.attributor().fingerprint_salt  # type: ignore[attr-defined]
        t = ScopeState.__table__
        oldest = self.clock() - self.granularity
        with read_session(self.engine) as db:
            stored = {key: fingerprint for key, fingerprint, verified in db.execute(
                sa.select(t.c.scope_key, t.c.fingerprint, t.c.verified_at).where(
                    t.c.collector == self.source, t.c.status == "succeeded", t.c.fingerprint.is_not(None)))
                if verified is not None and _as_aware(verified) >= oldest}  # type: ignore[operator]
        if not stored:
            return False
        source = self.source

        def unchanged(scope_key: str, digest: str) -> bool:
            fingerprint = stored.get(scope_key)
            return fingerprint is not None and \
                fingerprint == digest_fingerprint(source, scope_key, digest, salt)

        self.collector.unchanged = unchanged  # type: ignore[attr-defined]
        return True

    # -- groups ---------------------------------------------------------------------------------

    def attributor(self) -> Attributor:
        if self._attributor is None:
            with read_session(self.engine) as db:
                self._attributor = Attributor(db)
                self._attributor.fingerprint_salt = _attribution_salt(db)  # type: ignore[attr-defined]
        return self._attributor

    def _apply_group(self, batches: list[ScopeBatch]) -> None:
        batches = [b for b in batches if b.scope_key not in self.refused]
        fresh = sorted({b.scope_key for b in batches} - self.held)
        if fresh:
            refused = _acquire_locks(self.engine, fresh, self.run_id, self.holder, self.clock(), self.lock_ttl)
            self.held.update(k for k in fresh if k not in refused)
            if refused:
                self.refused.update(refused)
                self._record_refused(sorted(refused.items()))
                batches = [b for b in batches if b.scope_key not in refused]
        if not batches:
            return
        # A scope yielded twice goes into a later group (its batches are applied in order).
        unique: dict[str, ScopeBatch] = {}
        later: list[ScopeBatch] = []
        for batch in batches:
            if batch.scope_key in unique:
                later.append(batch)
            else:
                unique[batch.scope_key] = batch
        group = list(unique.values())
        try:
            self._apply_in_one_transaction(group)
        except LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - fall back to one scope at a time
            if len(group) == 1:
                self._scope_failed(group[0], exc)
            else:
                if not isinstance(exc, _GroupConflict):
                    log.warning("applying %d scopes together failed (%s: %s); applying them one by one",
                                len(group), type(exc).__name__, exc)
                for batch in group:
                    try:
                        self._apply_in_one_transaction([batch])
                    except LeaseLost:
                        raise
                    except Exception as one_exc:  # noqa: BLE001
                        self._scope_failed(batch, one_exc)
        if later:
            self._apply_group(later)

    def _apply_in_one_transaction(self, group: list[ScopeBatch]) -> None:
        now = self.clock()
        if len(group) <= 3:
            for batch in group:
                self.say(f"{batch.scope_key}: applying {len(batch.assets)} assets, {len(batch.software)} software, "
                         f"{len(batch.dependencies)} dependencies")
        else:
            self.say(f"{self.source}: applying {len(group)} scopes ({sum(map(_batch_rows, group))} records)")
        with write_session(self.engine) as db:
            _check_still_running(db, self.run_id)
            _large_page_cache(db)
            applied = apply_batches(db, group, self.source, now=now, attributor=self.attributor(),
                                    granularity=self.granularity)
            outcomes = [_scope_outcome(batch, applied[batch.scope_key], now) for batch in group]
            self._record(db, outcomes, update_state=True, counts=[applied[b.scope_key].counts for b in group])
            _release_locks(db, [b.scope_key for b in group], self.run_id)
        for batch, outcome in zip(group, outcomes):
            self.held.discard(batch.scope_key)
            applied_outcome = applied[batch.scope_key]
            self.totals.add(applied_outcome.counts)
            messages = ([batch.error] if batch.error else []) + applied_outcome.errors
            for message in messages:
                self._error(batch.scope_key, message)
        self._tell(outcomes)

    def _scope_failed(self, batch: ScopeBatch, exc: BaseException) -> None:
        log.error("applying scope %s failed", batch.scope_key, exc_info=exc)
        reason = f"{type(exc).__name__}: {exc}"
        self.say(f"{batch.scope_key}: failed while applying — {reason}")
        outcome = ScopeOutcome(batch.scope_key, "failed", error=reason, finished_at=self.clock())
        try:
            with write_session(self.engine) as db:
                self._record(db, [outcome], update_state=True)
                _release_locks(db, [batch.scope_key], self.run_id)
        except Exception:  # noqa: BLE001
            log.exception("recording the failure of scope %s failed", batch.scope_key)
            _release_locks_now(self.engine, [batch.scope_key], self.run_id)
        self.held.discard(batch.scope_key)
        self._error(batch.scope_key, reason)

    def _record_refused(self, refused: list[tuple[str, str]]) -> None:
        """Refused scopes are on this run's record, but the scope's latest state is the run
        that holds it (this run read nothing of it)."""
        if not refused:
            return
        now = self.clock()
        outcomes = []
        for scope_key, reason in refused:
            self.say(f"{scope_key}: refused — {reason}")
            outcomes.append(ScopeOutcome(scope_key, "failed", error=reason, finished_at=now))
            self._error(scope_key, reason)
        with write_session(self.engine) as db:
            self._record(db, outcomes, update_state=False)

    def _record(self, db: so.Session, outcomes: list[ScopeOutcome], *, update_state: bool,
                counts: list[Counts] | None = None) -> None:
        """The bookkeeping of some scopes, in the caller's transaction: a ``ScopeResult`` for
        each that did not succeed, the scopes' latest states, the run's running totals and
        its lease."""
        conn = db.connection()
        writer = BulkWriter(conn)
        failed = [o for o in outcomes if o.status != "succeeded"]
        writer.insert(ScopeResult.__table__, [
            {"run_id": self.run_id, "scope_key": o.scope_key[:300], "status": o.status, "created": o.created,
             "updated": o.updated, "unchanged": o.unchanged, "marked_stale": o.marked_stale, "error": o.error,
             "finished_at": o.finished_at} for o in failed])
        if update_state:
            revision = _next_revision(conn)
            writer.upsert(ScopeState.__table__, [
                {"scope_key": o.scope_key[:300], "collector": self.source, "run_id": self.run_id,
                 "status": o.status, "error": o.error, "finished_at": o.finished_at,
                 "last_success_at": o.finished_at if o.status == "succeeded" else None,
                 "created": o.created, "updated": o.updated, "unchanged": o.unchanged,
                 "marked_stale": o.marked_stale, "software_unread": o.software_unread or None,
                 "fingerprint": o.fingerprint, "signature": o.signature, "verified_at": o.verified_at,
                 "revision": revision} for o in outcomes],
                key=("scope_key",), keep_when_null=("last_success_at",))
        by_status = Counter(o.status for o in outcomes)
        added = Counts()
        for c in counts or []:
            added.add(c)
        now = self.clock()
        conn.execute(sa.update(CollectionRun.__table__).where(CollectionRun.__table__.c.id == self.run_id).values(
            created=CollectionRun.__table__.c.created + added.created,
            updated=CollectionRun.__table__.c.updated + added.updated,
            unchanged=CollectionRun.__table__.c.unchanged + added.unchanged,
            marked_stale=CollectionRun.__table__.c.marked_stale + added.marked_stale,
            scopes_succeeded=CollectionRun.__table__.c.scopes_succeeded + by_status["succeeded"],
            scopes_partial=CollectionRun.__table__.c.scopes_partial + by_status["partial"],
            scopes_failed=CollectionRun.__table__.c.scopes_failed + by_status["failed"],
            heartbeat_at=now, lease_expires_at=now + self.lease))
        self.status_counts.update(by_status)
        self.outcomes.extend(outcomes)
        for o in outcomes:
            if o.status == "succeeded":
                self.succeeded_by_prefix[o.scope_key.rsplit(":", 1)[0]] += 1
                if len(self.succeeded_sample) < SUMMARY_SAMPLE:
                    self.succeeded_sample.append(o.scope_key)

    def _tell(self, outcomes: list[ScopeOutcome]) -> None:
        if len(outcomes) <= 3:
            for o in outcomes:
                self.say(f"{o.scope_key}: {o.status} — created {o.created}, updated {o.updated}, "
                         f"unchanged {o.unchanged}, marked stale {o.marked_stale}")
            return
        by_status = Counter(o.status for o in outcomes)
        for o in outcomes:
            if o.status != "succeeded":
                self.say(f"{o.scope_key}: {o.status} — {o.error}")
        self.say(f"{self.source}: applied {len(outcomes)} scopes ("
                 + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) + ")")

    def _error(self, scope_key: str | None, message: str) -> None:
        self.n_errors += 1
        if len(self.errors) < MAX_RUN_ERRORS:
            self.errors.append({"scope": scope_key, "error": message})


def _as_aware(value: Any) -> datetime | None:
    """A timestamp from an aggregate (SQLite hands back text there) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]


def _batch_rows(batch: ScopeBatch) -> int:
    return len(batch.assets) + len(batch.software) + len(batch.dependencies) + 1


def _scope_outcome(batch: ScopeBatch, outcome: BatchOutcome, now: datetime) -> ScopeOutcome:
    usable = batch.complete and not outcome.errors
    if usable and not outcome.unread:
        status = "succeeded"
    elif batch.assets or batch.software or batch.dependencies:
        status = "partial"
    else:
        status = "failed"
    messages = ([batch.error] if batch.error else []) + outcome.errors
    if not batch.complete and not batch.error:
        messages.insert(0, "scope incomplete: nothing retired")
    if outcome.unread and not batch.error:
        messages.append(f"software of {len(outcome.unread)} asset(s) not read: left as it was")
    c = outcome.counts
    fingerprint = outcome.fingerprint if status == "succeeded" else None
    return ScopeOutcome(batch.scope_key[:300], status, c.created, c.updated, c.unchanged, c.marked_stale,
                        "; ".join(messages) or None, now, sorted(outcome.unread), fingerprint,
                        outcome.signature if fingerprint else None, outcome.verified_at if fingerprint else None)


class _Feed:
    """Reads the collector in a thread of its own and hands its batches over in groups:
    whatever is ready (up to the group limits), so a slow source is applied scope by scope
    as it comes and a fast one (a results log) in large groups, while it is still read."""

    _DONE = object()

    def __init__(self, collector: Collector, say: ProgressFn) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=READ_AHEAD_BATCHES)
        self.crash: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(collector, say),
                                         name=f"planb-collect-{collector.name}", daemon=True)
        self._thread.start()

    def _read(self, collector: Collector, say: ProgressFn) -> None:
        try:
            for batch in collector.collect(say):
                if not self._put(batch):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the run, which records it
            log.exception("collector %s crashed", collector.name)
            self.crash = exc
        finally:
            self._put(self._DONE)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def groups(self) -> Iterator[list[ScopeBatch]]:
        done = False
        while not done:
            first = self.queue.get()
            if first is self._DONE:
                return
            group, rows = [first], _batch_rows(first)
            wait_until = None
            while len(group) < GROUP_MAX_SCOPES and rows < GROUP_MAX_ROWS:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    if rows >= GROUP_MIN_ROWS:
                        break
                    wait_until = wait_until or time.monotonic() + GROUP_WAIT_SECONDS
                    remaining = wait_until - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        item = self.queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is self._DONE:
                    done = True
                    break
                if rows + _batch_rows(item) > GROUP_MAX_ROWS and len(group) >= 1:
                    yield group
                    group, rows = [], 0
                group.append(item)
                rows += _batch_rows(item)
            if group:
                yield group

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Heartbeat:
    """Renews the run's lease every third of it while the run works (its own transactions)."""

    def __init__(self, engine: Engine, run_id: int, lease: timedelta, clock: Callable[[], datetime]) -> None:
        self.engine, self.run_id, self.lease, self.clock = engine, run_id, lease, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"planb-lease-{run_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _beat(self) -> None:
        interval = max(0.2, self.lease.total_seconds() / 3)
        table = CollectionRun.__table__
        while not self._stop.wait(interval):
            try:
                with write_session(self.engine) as db:
                    now = self.clock()
                    db.execute(table.update().where(table.c.id == self.run_id, table.c.status == "running")
                               .values(heartbeat_at=now, lease_expires_at=now + self.lease))
            except Exception:  # noqa: BLE001 - the next beat tries again; the run goes on
                log.warning("renewing the lease of collection run %s failed", self.run_id, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class LeaseLost(Exception):
    """The run was marked failed (its lease expired) while it worked: it must not write."""


def _check_still_running(db: so.Session, run_id: int) -> None:
    status = db.scalar(sa.select(CollectionRun.status).where(CollectionRun.id == run_id))
    if status != "running":
        raise LeaseLost(f"run {run_id} is {status!r}: its lease expired and another process closed it")


# SQLite's page cache for a writer applying groups (default 2 MB): inserts into the indexes
# of a fleet's millions of installations touch pages all over them.
SQLITE_WRITER_CACHE_KIB = 65536


def _large_page_cache(db: so.Session) -> None:
    conn = db.connection()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB}")


def _next_revision(conn: sa.Connection) -> int:
    """A new ``ScopeState.revision``: greater than any stored.  SQLite writers hold the
    database's one write lock; on PostgreSQL a transaction-scoped advisory lock serialises
    the writers of scope states, so two runs never store the same revision."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7262023501)")
    return int(conn.scalar(sa.select(sa.func.coalesce(sa.func.max(ScopeState.revision), 0))) or 0) + 1


def _describe(collector: Collector) -> str:
    try:
        return collector.describe_scope()
    except Exception as exc:  # noqa: BLE001
        return f"{collector.name} (scope unknown: {exc})"


def _planned_scopes(collector: Collector) -> list[str]:
    planned = getattr(collector, "planned_scopes", None)
    if planned is None:
        return []
    return sorted(set(planned() or []))


# -- scope locks ------------------------------------------------------------------------------

def _acquire_locks(engine: Engine, scope_keys: list[str], run_id: int, holder: str, now: datetime,
                   ttl: timedelta) -> dict[str, str]:
    """Take the scopes' locks (set-based); the scopes refused, with who holds them.

    A lock is live while its run's lease is (or, for a run without a lease, until the
    lock's ``expires_at``), and while a holder on this machine still exists.  A dead lock
    is taken over, and the run that left it closed as abandoned."""
    table = CollectionLock.__table__
    runs = CollectionRun.__table__
    refused: dict[str, str] = {}
    with write_session(engine) as db:
        conn = db.connection()
        writer = BulkWriter(conn)
        stale: list[str] = []
        abandoned: dict[int, str] = {}
        for clause in where_in(conn, table.c.scope_key, scope_keys):
            for key, other_run, other_holder, acquired, expires, status, lease in conn.execute(
                    sa.select(table.c.scope_key, table.c.run_id, table.c.holder, table.c.acquired_at,
                              table.c.expires_at, runs.c.status, runs.c.lease_expires_at)
                    .select_from(table.outerjoin(runs, runs.c.id == table.c.run_id)).where(clause)):
                if other_run == run_id:
                    continue
                if lease is not None:
                    live = status == "running" and lease > now
                else:
                    live = expires > now
                if live and _holder_alive(other_holder):
                    until = lease if lease is not None else expires
                    refused[key] = (
                        f"scope {key} is being collected by run {other_run} "
                        f"({other_holder}, since {acquired.isoformat(timespec='seconds')}); "
                        f"try again when it finishes (its lock lasts until {until.isoformat(timespec='seconds')}"
                        + (" unless its run renews its lease)" if lease is not None else ")"))
                else:
                    stale.append(key)
                    if other_run is not None and status == "running":
                        abandoned[other_run] = other_holder
        for clause in where_in(conn, table.c.scope_key, stale):
            conn.execute(table.delete().where(clause))
        for other_run, other_holder in abandoned.items():
            _close_abandoned_run(db, other_run, other_holder, run_id, now)
        wanted = [k for k in scope_keys if k not in refused]
        writer.insert_ignore(table, [{"scope_key": k, "run_id": run_id, "holder": holder, "acquired_at": now,
                                      "expires_at": now + ttl} for k in wanted], ("scope_key",))
        for clause in where_in(conn, table.c.scope_key, wanted):
            for key, owner in conn.execute(sa.select(table.c.scope_key, table.c.run_id).where(clause)):
                if owner != run_id:
                    refused[key] = f"scope {key} was just taken by run {owner}"
    return refused


def _close_abandoned_run(db: so.Session, run_id: int, holder: str, taken_by: int, now: datetime) -> None:
    """A run whose lock is taken over crashed (or outlived its lock): say so instead of
    leaving it "running" for ever.  Its completed scopes stay applied."""
    run = db.get(CollectionRun, run_id)
    if run is None or run.status != "running":
        return
    run.status = "failed"
    run.finished_at = now
    run.errors = [*(run.errors or []), {
        "scope": None, "error": f"abandoned: the process ({holder}) stopped before finishing; "
                               f"its lock was taken over by run {taken_by}"}]


def _holder_alive(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine: trust the expiry time
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release_locks(db: so.Session, scope_keys: list[str], run_id: int) -> None:
    conn = db.connection()
    table = CollectionLock.__table__
    for clause in where_in(conn, table.c.scope_key, scope_keys):
        conn.execute(table.delete().where(clause, table.c.run_id == run_id))


def _release_locks_now(engine: Engine, scope_keys: list[str], run_id: int) -> None:
    try:
        with write_session(engine) as db:
            _release_locks(db, scope_keys, run_id)
    except Exception:  # noqa: BLE001 - the lease expiry frees them anyway
        log.exception("releasing the locks of run %s failed", run_id)


def where_in(conn: sa.Connection, column: sa.ColumnElement[Any], values: list[Any]
             ) -> Iterator[sa.ColumnElement[bool]]:
    """``column IN values`` as few statements as the backend allows.

    PostgreSQL takes the whole list as one array parameter (``= ANY(...)``, one round
    trip); SQLite gets chunks small enough for its parameter limit (in-process, so extra
    statements are cheap)."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY
        yield column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(column.type)))
        return
    for chunk in chunks(values):
        yield column.in_(chunk)


# -- applying batches -----------------------------------------------------------------------------

def _attribution_salt(db: so.Session) -> bytes:
    """What attribution depends on besides a batch (the shipped catalogue and the estate's
    aliases): part of every scope fingerprint, so a new alias makes every scope compare again."""
    from inventory.models import VendorAlias
    digest = hashlib.blake2b(_catalogue_bytes(), digest_size=16)
    for row in db.execute(sa.select(VendorAlias.id, VendorAlias.alias, VendorAlias.is_pattern,
                                    VendorAlias.vendor_id, VendorAlias.product_id).order_by(VendorAlias.id)):
        digest.update(repr(tuple(row)).encode())
    return digest.digest()


@functools.lru_cache(maxsize=1)
def _catalogue_bytes() -> bytes:
    from importlib import resources
    return resources.files("collectors.data").joinpath("catalogue.yaml").read_bytes()


_ASSET_PRINT = attrgetter("natural_key", *RECORD_COLUMNS, "tags", "attributes")
_SOFTWARE_PRINT = attrgetter("asset_key", "name", "publisher", "version", "origin", "attributes")
_DEPENDENCY_PRINT = attrgetter("dependent_key", "dependency_key", "kind", "strength")


def scope_fingerprint(batch: ScopeBatch, source: str, salt: bytes) -> str | None:
    """A hash of everything in ``batch`` that ingest writes (and of the attribution rules),
    or None when a record holds a value that cannot be hashed this way.  A batch with a
    ``digest`` (what the collector read, hashed by the collector) is fingerprinted from it,
    without reading its records (``digest_fingerprint``)."""
    if batch.digest is not None:
        return digest_fingerprint(source, batch.scope_key, batch.digest, salt)
    try:
        data = marshal.dumps((source, batch.scope_key, list(map(_ASSET_PRINT, batch.assets)),
                              list(map(_SOFTWARE_PRINT, batch.software)),
                              list(map(_DEPENDENCY_PRINT, batch.dependencies))))
    except ValueError:
        return None
    return hashlib.blake2b(data, key=salt[:64], digest_size=16).hexdigest()


def digest_fingerprint(source: str, scope_key: str, digest: str, salt: bytes) -> str:
    """The fingerprint of a batch the collector summed up as ``digest``."""
    data = "\x00".join(("digest", source, scope_key, digest)).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, key=salt[:64], digest_size=16).hexdigest()


def apply_batch(db: so.Session, batch: ScopeBatch, source: str, *, now: datetime | None = None,
                attributor: Attributor | None = None,
                granularity: timedelta = LAST_SEEN_GRANULARITY) -> BatchOutcome:
    """Apply one batch inside the caller's transaction (no commit).  See the module docstring."""
    return apply_batches(db, [batch], source, now=now, attributor=attributor,
                         granularity=granularity)[batch.scope_key]


def apply_batches(db: so.Session, batches: list[ScopeBatch], source: str, *, now: datetime | None = None,
                  attributor: Attributor | None = None,
                  granularity: timedelta = LAST_SEEN_GRANULARITY) -> dict[str, BatchOutcome]:
    """Apply the batches of several scopes (distinct scope keys) inside the caller's
    transaction, set-based; each scope's outcome by scope key.  Raises ``_GroupConflict``
    (before the caller commits anything) when two of the scopes touch the same asset."""
    # A batch of 100k assets reads and builds millions of small objects; the cyclic
    # collector walking them all, again and again, cost a warm re-run 10-20%.
    with paused_gc():
        applier = _BatchApplier(db, batches, source, now or utcnow(), attributor or Attributor(db),
                                granularity)
        return applier.run()


_ASSET_TEXT_FIELDS = ("natural_key", "name", "kind", "provider", "account", "region", "zone", "hostname",
                      "cloud_instance_id", "os_family", "os_name", "os_version", "environment",
                      "criticality", "owner")


def _clean_fields(record: Any, fields: tuple[str, ...]) -> None:
    values = [getattr(record, name) for name in fields]
    # one search over the joined text (joining creates no control character); per field only when needed
    if not has_unwanted("".join(v for v in values if type(v) is str)):
        return
    for name, value in zip(fields, values):
        if type(value) is str and has_unwanted(value):
            setattr(record, name, sanitize_text(value))


_SOFTWARE_TEXT_FIELDS = ("asset_key", "name", "publisher", "version", "origin")
_DEPENDENCY_TEXT_FIELDS = ("dependent_key", "dependency_key", "kind", "strength")


def _batch_may_need_cleaning(batch: ScopeBatch) -> bool:
    """False only when no text in the batch holds a character to clean: one search over
    all of its fields and one over its tags and attributes (a JSON dump), rather than
    one per record; a warm re-run of 100k assets spent seconds on those."""
    fields = chain(chain.from_iterable(map(attrgetter(*_ASSET_TEXT_FIELDS), batch.assets)),
                   chain.from_iterable(map(attrgetter(*_SOFTWARE_TEXT_FIELDS), batch.software)),
                   chain.from_iterable(map(attrgetter(*_DEPENDENCY_TEXT_FIELDS), batch.dependencies)))
    # str() of a non-text value (None, a number) adds nothing to find, at worst a false alarm.
    if has_unwanted("".join(map(str, fields))):
        return True
    return tree_may_have_unwanted([(a.tags, a.attributes) for a in batch.assets]
                                  + [s.attributes for s in batch.software if s.attributes])


def _joined(batches: list[ScopeBatch]) -> ScopeBatch:
    """The records of several batches as one (for one search over all of their text)."""
    return ScopeBatch("", assets=[a for b in batches for a in b.assets],
                      software=[s for b in batches for s in b.software],
                      dependencies=[d for b in batches for d in b.dependencies])


def clean_batch(batch: ScopeBatch) -> None:
    """Remove control characters (ANSI escapes, NUL) from collected text, in place.

    Collected data is cleaned rather than refused (see ``inventory.validation``):
    nobody can fix a registry value, and one odd name must not fail a run.  Keys
    are cleaned with the same function everywhere, so references still match.
    """
    if not _batch_may_need_cleaning(batch):
        return
    for asset in batch.assets:
        _clean_fields(asset, _ASSET_TEXT_FIELDS)
        if asset.tags:
            asset.tags = sanitize_tree(asset.tags)
        if asset.attributes:
            asset.attributes = sanitize_tree(asset.attributes)
    for software in batch.software:
        _clean_fields(software, _SOFTWARE_TEXT_FIELDS)
        if software.attributes:
            software.attributes = sanitize_tree(software.attributes)
    for dependency in batch.dependencies:
        _clean_fields(dependency, _DEPENDENCY_TEXT_FIELDS)


class _BatchApplier:
    """Applies the batches of one group (distinct scopes) in the caller's transaction: one
    read of what is stored and one bulk write per table and kind of change for the whole
    group, with each scope's counts, errors and retirement kept apart."""

    def __init__(self, db: so.Session, batches: list[ScopeBatch], source: str, now: datetime,
                 attributor: Attributor, granularity: timedelta) -> None:
        self.db = db
        self.conn = db.connection()
        self.batches = batches
        self.scopes = [b.scope_key for b in batches]
        self.source = source
        self.now = now
        self.now_iso = now.isoformat(timespec="seconds")
        self.stamp = {"source": source, "seen": self.now_iso}
        self.stale_before = now - granularity
        self.attributor = attributor
        self.outcomes = {b.scope_key: BatchOutcome() for b in batches}
        # natural key (as the records spell it) -> asset id
        self.key_to_id: dict[str, int] = {}
        # asset id -> the scope whose record matched it
        self.seen: dict[int, str] = {}
        # assets whose software this run did not read; members of groups whose listing failed
        self.unread_ids: set[int] = set()
        self.kept_ids: set[int] = set()
        self.frozen_groups: set[int] = set()
        self.writer = BulkWriter(self.conn)
        self.may_remove: dict[str, bool] = {}
        self.may_retire: dict[str, bool] = {}
        # scopes that touch an asset of another scope (merged machines...): never skipped
        self.foreign: set[str] = set()
        # scopes none of whose assets existed before this group: their signature is what
        # was inserted for them (per scope: assets, installations, unattributed, edges)
        self.fresh: set[str] = set()
        self.inserted: dict[str, list[int]] = {}

    def counts(self, scope: str) -> Counts:
        return self.outcomes[scope].counts

    def _inserted(self, scope: str, table: int) -> None:
        found = self.inserted.get(scope)
        if found is None:
            found = self.inserted[scope] = [0, 0, 0, 0]
        found[table] += 1

    def where_in(self, column: sa.ColumnElement[Any], values: list[Any]) -> Iterator[sa.ColumnElement[bool]]:
        return where_in(self.conn, column, values)

    def stale(self, table: sa.Table) -> sa.ColumnElement[Any]:
        """Whether a row's ``last_seen`` is older than the granularity, as a column: the
        database compares, rather than Python parsing a timestamp per existing row."""
        return (table.c.last_seen < self.stale_before).label("stale")

    def run(self) -> dict[str, BatchOutcome]:
        self._skip_unchanged()   # (fingerprints are of the batches as collected, before cleaning)
        if not self.batches:
            return self.outcomes
        for batch in self.batches:
            batch.build()   # records a collector deferred, for a scope that is not skipped after all
        unvouched = [b for b in self.batches if not b.clean]
        if len(unvouched) == 1 or (unvouched and _batch_may_need_cleaning(_joined(unvouched))):
            for batch in unvouched:
                clean_batch(batch)
        records = self._valid_records()
        self._upsert_assets(records)
        # Every reference must resolve before anything is removed: a scope with a dangling
        # reference is partial, and a partial scope removes nothing.
        self._resolve_keys([r.asset_key for b in self.batches for r in b.software]
                           + [k for b in self.batches for d in b.dependencies
                              for k in (d.dependent_key, d.dependency_key)]
                           + [k for b in self.batches for k in (*b.software_unread, *b.members_unread)])
        self._check_references()
        self.may_remove = {b.scope_key: b.complete and not self.outcomes[b.scope_key].errors
                           for b in self.batches}
        # A page of a scope read page by page (``ScopeBatch.retire`` False) replaces what it
        # holds but retires nothing; the scope's last batch, listing every asset, retires.
        self.may_retire = {b.scope_key: self.may_remove[b.scope_key] and b.retire for b in self.batches}
        self._note_unread()
        self._apply_software()
        self._retire_missing()
        self._apply_dependencies()
        self._sign()
        return self.outcomes

    # unchanged scopes -------------------------------------------------------------------------

    def _skip_unchanged(self) -> None:
        """Set aside the scopes whose batch is the one last applied in full (same fingerprint)
        over rows nobody has touched since: counted unchanged, nothing read or written."""
        salt = getattr(self.attributor, "fingerprint_salt", None)
        if salt is None:
            return
        prints = {}
        for batch in self.batches:
            if batch.complete and not batch.software_unread and not batch.members_unread:
                fingerprint = scope_fingerprint(batch, self.source, salt)
                if fingerprint is not None:
                    prints[batch.scope_key] = fingerprint
                    self.outcomes[batch.scope_key].fingerprint = fingerprint
        if not prints:
            return
        t = ScopeState.__table__
        stored: dict[str, tuple[Any, ...]] = {}
        for clause in self.where_in(t.c.scope_key, sorted(prints)):
            for key, fingerprint, signature, verified in self.conn.execute(
                    sa.select(t.c.scope_key, t.c.fingerprint, t.c.signature, t.c.verified_at).where(
                        clause, t.c.fingerprint.is_not(None), t.c.status == "succeeded")):
                verified = _as_aware(verified)
                if fingerprint == prints[key] and signature and verified and verified >= self.stale_before:
                    stored[key] = (list(signature), verified)
        if not stored:
            return
        current = self._signatures(sorted(stored))
        skip = set()
        for key, (signature, verified) in stored.items():
            counts, newest, oldest = current.get(key, ([0, 0, 0, 0], None, None))
            if counts == signature and (newest is None or newest <= verified) \
                    and (oldest is None or oldest >= self.stale_before):
                skip.add(key)
        kept = []
        for batch in self.batches:
            if batch.scope_key not in skip:
                kept.append(batch)
                continue
            outcome = self.outcomes[batch.scope_key]
            outcome.skipped = True
            outcome.signature, outcome.verified_at = stored[batch.scope_key]
            outcome.counts.unchanged = sum(outcome.signature)   # the scope's rows, as a full comparison counts them
        self.batches = kept
        self.scopes = [b.scope_key for b in kept]

    def _signatures(self, scopes: list[str]) -> dict[str, tuple[list[int], datetime | None, datetime | None]]:
        """Per scope: row counts (assets, installations, unattributed software, edges of its
        assets), the newest change (assets' ``updated_at``, the others' ``last_seen``) and the
        oldest ``last_seen`` — one grouped read per table, in the database."""
        a = Asset.__table__
        found: dict[str, tuple[list[int], datetime | None, datetime | None]] = {}
        parts = [(a, a.c.updated_at, None)] + [(model.__table__, model.__table__.c.last_seen, column)
                                               for model, column in ((Installation, "asset_id"),
                                                                     (UnattributedSoftware, "asset_id"),
                                                                     (Dependency, "dependent_id"))]
        for index, (table, newest_column, link) in enumerate(parts):
            source = a if link is None else table.join(a, a.c.id == table.c[link])
            for clause in self.where_in(a.c.source_scope, scopes):
                for scope, n, newest, oldest in self.conn.execute(
                        sa.select(a.c.source_scope, sa.func.count(), sa.func.max(newest_column),
                                  sa.func.min(table.c.last_seen)).select_from(source).where(clause)
                        .group_by(a.c.source_scope)):
                    counts, top, bottom = found.setdefault(scope, ([0, 0, 0, 0], None, None))
                    counts[index] = n
                    newest, oldest = _as_aware(newest), _as_aware(oldest)
                    top = newest if top is None or (newest is not None and newest > top) else top
                    bottom = oldest if bottom is None or (oldest is not None and oldest < bottom) else bottom
                    found[scope] = (counts, top, bottom)
        return found

    def _sign(self) -> None:
        """Record what this full comparison left, for the scopes that may be skipped next
        time: complete, usable, every record on an asset of the scope itself."""
        own: dict[str, set[int]] = {}
        for asset_id, scope in self.seen.items():
            own.setdefault(scope, set()).add(asset_id)
        signed = [b.scope_key for b in self.batches
                  if self.outcomes[b.scope_key].fingerprint and self.may_remove.get(b.scope_key)
                  and not self.outcomes[b.scope_key].unread and b.scope_key not in self.foreign]
        for scope in self.scopes:
            if scope not in signed:
                self.outcomes[scope].fingerprint = None
        if not signed:
            return
        # A scope whose every asset is new in this group: its rows are the ones just inserted.
        current = self._signatures([s for s in signed if s not in self.fresh])
        for scope in signed:
            if scope in self.fresh:
                counts = self.inserted.get(scope, [0, 0, 0, 0])
            else:
                counts, _newest, _oldest = current.get(scope, ([0, 0, 0, 0], None, None))
            outcome = self.outcomes[scope]
            outcome.signature, outcome.verified_at = counts, self.now

    def _check_references(self) -> None:
        for batch in self.batches:
            outcome = self.outcomes[batch.scope_key]
            unknown = {r.asset_key for r in batch.software if r.asset_key not in self.key_to_id}
            if unknown:
                sample = ", ".join(sorted(map(str, unknown))[:3])
                outcome.errors.append(f"software for {len(unknown)} unknown asset(s) ({sample}): skipped")
            unknown = {k for d in batch.dependencies for k in (d.dependent_key, d.dependency_key)
                       if k not in self.key_to_id}
            if unknown:
                sample = ", ".join(sorted(map(str, unknown))[:3])
                outcome.errors.append(f"dependencies naming {len(unknown)} unknown asset(s) ({sample}): skipped")

    def _claim(self, asset_id: int, scope: str, claims: dict[int, str]) -> None:
        """``scope`` works on ``asset_id``; another scope of the group already does: conflict."""
        other = claims.setdefault(asset_id, scope)
        if other != scope:
            raise _GroupConflict(f"scopes {other} and {scope} both touch asset {asset_id}")

    # assets ---------------------------------------------------------------------------------

    def _valid_records(self) -> list[tuple[str, AssetRecord]]:
        valid: dict[str, tuple[str, AssetRecord]] = {}
        cloud_ids: dict[str, str] = {}
        for batch in self.batches:
            scope, outcome = batch.scope_key, self.outcomes[batch.scope_key]
            bad = 0
            for record in batch.assets:
                key = (record.natural_key or "").strip()
                if not key or any(not part.strip() for part in key.split(":")) or not record.kind:
                    bad += 1
                    if bad <= 5:
                        outcome.errors.append(f"asset record without its identity (natural key "
                                              f"{record.natural_key!r}, name {record.name!r}): skipped, scope "
                                              "treated as partial")
                    continue
                record.natural_key = key
                other = valid.get(key)
                if other is not None and other[0] != scope:
                    raise _GroupConflict(f"scopes {other[0]} and {scope} both report {key}")
                if record.cloud_instance_id:
                    if cloud_ids.setdefault(record.cloud_instance_id, scope) != scope:
                        raise _GroupConflict(f"two scopes report instance {record.cloud_instance_id}")
                valid[key] = (scope, record)  # a duplicate key within one scope: the last record wins
            if bad > 5:
                outcome.errors.append(f"... and {bad - 5} more asset records without identity")
        return list(valid.values())

    def _load_assets(self, where: Any) -> list[dict[str, Any]]:
        cols = [Asset.__table__.c[name] for name in _ASSET_READ]
        return [dict(zip(_ASSET_READ, row)) for row in self.conn.execute(sa.select(*cols).where(where))]

    def _upsert_assets(self, records: list[tuple[str, AssetRecord]]) -> None:
        if not records:
            return
        # The cloud's own vendor must exist (with cloud_provider set) so a
        # region outage of that vendor finds the assets hosted there.
        providers = {r.provider for _s, r in records if r.provider}
        cloud_vendors = [v for v in (self.attributor.cloud_vendor(p) for p in sorted(providers)) if v]
        if cloud_vendors:
            self.attributor.ensure_vendors(self.db, cloud_vendors)
        t = Asset.__table__
        by_key: dict[str, dict[str, Any]] = {}
        for clause in self.where_in(t.c.source_scope, self.scopes):
            for row in self._load_assets(clause):
                by_key[row["natural_key"]] = row
        stored_scopes = {row["source_scope"] for row in by_key.values()}
        missing = [r.natural_key for _s, r in records if r.natural_key not in by_key]
        for clause in self.where_in(t.c.natural_key, missing):
            for row in self._load_assets(clause):
                by_key[row["natural_key"]] = row
        by_cloud_id: dict[str, list[dict[str, Any]]] = {}
        host_side = self.source not in CLOUD_SOURCES
        cloud_ids = sorted({r.cloud_instance_id for _s, r in records if r.cloud_instance_id
                            and (host_side or r.natural_key not in by_key)})
        for clause in self.where_in(t.c.cloud_instance_id, cloud_ids):
            for row in self._load_assets(clause):
                by_key.setdefault(row["natural_key"], row)
                by_cloud_id.setdefault(row["cloud_instance_id"], []).append(
                    by_key[row["natural_key"]])

        unread_keys = {k for b in self.batches for k in b.software_unread}
        inserts: list[dict[str, Any]] = []
        insert_scope: dict[str, str] = {}
        updates: dict[int, dict[str, Any]] = {}
        working: dict[int, dict[str, Any]] = {}
        heartbeats: dict[int, dict[str, Any]] = {}
        per_scope: Counter[str] = Counter()
        matched: set[str] = set()

        for scope, record in records:
            per_scope[scope] += 1
            target = self._match(record, by_key, by_cloud_id)
            if target is None:
                if record.natural_key in insert_scope:
                    continue
                if scope not in stored_scopes and scope not in matched:
                    self.fresh.add(scope)
                row = self._new_row(record, scope)
                insert_scope[record.natural_key] = scope
                inserts.append(row)
                continue
            asset_id = target["id"]
            matched.add(scope)
            self.fresh.discard(scope)
            self._claim(asset_id, scope, self.seen)
            current = working.setdefault(asset_id, dict(target))
            changes = merge_record(current, record, self.source, scope, self.now_iso,
                                   machine_unread=record.natural_key in unread_keys)
            if changes.get("source_scope", current["source_scope"]) != scope \
                    or changes.get("natural_key", current["natural_key"]) != record.natural_key:
                self.foreign.add(scope)
            self.key_to_id[record.natural_key] = asset_id
            if changes:
                current.update(changes)
                pending = updates.setdefault(asset_id, {})
                pending.update(changes)
                heartbeats.pop(asset_id, None)
            elif (asset_id not in updates and current["last_seen"] < self.stale_before
                  and existence_rank(self.source) >= existence_rank(current["source"])):
                heartbeats[asset_id] = current

        if inserts:
            self.writer.insert(t, inserts)
            for clause in self.where_in(t.c.natural_key, list(insert_scope)):
                for asset_id, key in self.conn.execute(sa.select(t.c.id, t.c.natural_key).where(clause)):
                    self.key_to_id[key] = asset_id
                    self.seen[asset_id] = insert_scope[key]
            for scope in insert_scope.values():
                self.counts(scope).created += 1
                self._inserted(scope, 0)
        for asset_id, changes in updates.items():
            changes["updated_at"] = self.now
            changes["last_seen"] = self.now
            self.counts(self.seen[asset_id]).updated += 1
        self.writer.update(t, updates)
        created, updated = Counter(insert_scope.values()), Counter(self.seen[i] for i in updates)
        for scope, n in per_scope.items():
            self.counts(scope).unchanged += n - created[scope] - updated[scope]
        if heartbeats:
            rows = {}
            for asset_id, current in heartbeats.items():
                provenance = {k: ({**v, "seen": self.now_iso} if isinstance(v, dict)
                                  and v.get("source") == self.source else v)
                              for k, v in (current["provenance"] or {}).items()}
                rows[asset_id] = {"last_seen": self.now, "provenance": provenance}
            # no updated_at: a heartbeat is not a change
            self.writer.update(t, rows)

    def _match(self, record: AssetRecord, by_key: dict[str, dict[str, Any]],
               by_cloud_id: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
        """The existing asset this record describes (one machine, one asset)."""
        cid = record.cloud_instance_id
        candidates = [r for r in by_cloud_id.get(cid, []) if r["natural_key"] != record.natural_key] \
            if cid else []
        if self.source in CLOUD_SOURCES:
            if record.natural_key in by_key:
                return by_key[record.natural_key]
            # A host-side asset already knows this machine: re-key it to the cloud identity.
            # (Only collector-made host assets: an estate-file asset keeps the key its file uses.)
            for row in candidates:
                if row["source"] in MACHINE_SIDE_SOURCES:
                    return row
            return None
        # host-side source: prefer the cloud asset with this instance id (live ones first)
        if candidates:
            candidates.sort(key=lambda r: (r["retired_at"] is not None,
                                           r["source"] not in CLOUD_SOURCES, r["id"]))
            return candidates[0]
        return by_key.get(record.natural_key)

    def _new_row(self, record: AssetRecord, scope: str) -> dict[str, Any]:
        row: dict[str, Any] = {"natural_key": record.natural_key}
        provenance: dict[str, Any] = {}
        stamp = self.stamp  # one shared {source, seen} object: serialised per row anyway
        for name in RECORD_COLUMNS:
            value = _fit(name, getattr(record, name))
            row[name] = value
            if value is not None:
                provenance[name] = stamp
        if not row["name"]:
            row["name"] = _fit("name", record.natural_key)
        if row["criticality"] is None:
            row["criticality"] = "medium"
        row["tags"] = _jsonable(record.tags or {})
        if row["tags"]:
            provenance["tags"] = stamp
        row["attributes"] = _jsonable(record.attributes or {})
        for key in row["attributes"]:
            provenance[f"attributes.{key}"] = stamp
        row.update(provenance=provenance, source=self.source, source_scope=scope,
                   first_seen=self.now, last_seen=self.now, retired_at=None,
                   created_at=self.now, updated_at=self.now)
        return row

    # what could not be read -------------------------------------------------------------------

    def _note_unread(self) -> None:
        """Assets whose software was not read keep it; members of groups whose member listing
        failed are kept as they are (not retired, their edges and software untouched)."""
        groups: dict[int, str] = {}
        for batch in self.batches:
            outcome = self.outcomes[batch.scope_key]
            for key in batch.software_unread:
                asset_id = self.key_to_id.get(key)
                if asset_id is not None:
                    self.unread_ids.add(asset_id)
                    outcome.unread.append(key)
            for key in batch.members_unread:
                asset_id = self.key_to_id.get(key)
                if asset_id is not None:
                    groups[asset_id] = batch.scope_key
        if not groups:
            return
        self.frozen_groups.update(groups)
        d, a = Dependency.__table__, Asset.__table__
        for clause in self.where_in(d.c.dependent_id, sorted(groups)):
            for group_id, member_id, member_key in self.conn.execute(
                    sa.select(d.c.dependent_id, d.c.dependency_id, a.c.natural_key)
                    .join(a, a.c.id == d.c.dependency_id).where(clause, d.c.kind == "member-of")):
                if member_id in self.seen:
                    continue  # listed after all (it is in the batch): applied as usual
                self.kept_ids.add(member_id)
                self.outcomes[groups[group_id]].unread.append(member_key)

    # software ---------------------------------------------------------------------------------

    def _resolve_keys(self, keys: Iterable[str]) -> None:
        missing = sorted({k for k in keys if k and k not in self.key_to_id})
        t = Asset.__table__
        for clause in self.where_in(t.c.natural_key, missing):
            for asset_id, key in self.conn.execute(sa.select(t.c.id, t.c.natural_key).where(clause)):
                self.key_to_id[key] = asset_id

    def _apply_software(self) -> None:
        if not any(b.software for b in self.batches):
            return
        attributed: dict[tuple[int, tuple[str, str]], SoftwareRecord] = {}
        unattributed: dict[tuple[int, str, str], SoftwareRecord] = {}
        reported: dict[int, str] = {}   # asset id -> the scope reporting its software
        pairs: set[tuple[str, str]] = set()
        attribute = self.attributor.attribute_software
        key_to_id = self.key_to_id
        for batch in self.batches:
            scope = batch.scope_key
            for record in batch.software:
                asset_id = key_to_id.get(record.asset_key)
                if asset_id is None:
                    continue  # reported by _check_references
                if reported.setdefault(asset_id, scope) != scope:
                    raise _GroupConflict(f"two scopes report software of asset {asset_id}")
                hit = attribute(record.name, record.publisher, record.origin)
                if hit is None:
                    key = (asset_id, _fit_text(record.name, 300), _fit_text(record.publisher or "", 300))
                    unattributed.setdefault(key, record)
                else:
                    pair = (hit[0], hit[1][:200])
                    pairs.add(pair)
                    attributed.setdefault((asset_id, pair), record)
        for asset_id, scope in reported.items():
            owner = self.seen.get(asset_id)
            if owner is None:
                self.foreign.add(scope)
            elif owner != scope:
                raise _GroupConflict(f"scope {scope} reports software of an asset of scope {owner}")
        product_ids = self.attributor.ensure_products(self.db, pairs)
        # Software a complete scope no longer reports is removed (uninstalled); never on an
        # asset whose software was not read.
        removable = {asset_id for asset_id, scope in reported.items()
                     if self.may_remove[scope] and asset_id not in self.unread_ids}
        self._apply_installations(
            {(aid, product_ids[pair]): rec for (aid, pair), rec in attributed.items()}, reported, removable)
        self._apply_unattributed(unattributed, reported, removable)

    def _apply_installations(self, desired: dict[tuple[int, int], SoftwareRecord], reported: dict[int, str],
                             removable: set[int]) -> None:
        t = Installation.__table__
        existing: dict[tuple[int, int], sa.Row[Any]] = {}
        for clause in self.where_in(t.c.asset_id, sorted(reported)):
            for row in self.conn.execute(
                    sa.select(t.c.id, t.c.asset_id, t.c.product_id, t.c.version, t.c.raw_name,
                              t.c.raw_publisher, t.c.attributes, t.c.source, self.stale(t)).where(clause)):
                existing[(row.asset_id, row.product_id)] = row
        inserts, updates, heartbeat = [], {}, []
        source, now = self.source, self.now
        outcomes = self.outcomes
        for (asset_id, product_id), record in desired.items():
            counts = outcomes[reported[asset_id]].counts
            values = {"version": _fit_text(record.version, 100),
                      "raw_name": _fit_text(record.name, 300),
                      "raw_publisher": _fit_text(record.publisher, 300),
                      "attributes": _jsonable(record.attributes) or None}
            row = existing.get((asset_id, product_id))
            if row is None:
                inserts.append({"asset_id": asset_id, "product_id": product_id, **values,
                                "source": source, "first_seen": now, "last_seen": now})
                counts.created += 1
                self._inserted(reported[asset_id], 1)
                continue
            if row.source != source and software_rank(row.source) >= software_rank(source):
                counts.unchanged += 1  # an equal or better-placed source owns this row
                continue
            changes = {k: v for k, v in values.items() if getattr(row, k) != v}
            if row.source != source:
                changes["source"] = source
            if changes:
                changes["last_seen"] = now
                updates[row.id] = changes
                counts.updated += 1
            else:
                counts.unchanged += 1
                if row.stale:
                    heartbeat.append(row.id)
        gone = [row for key, row in existing.items()
                if key[0] in removable and key not in desired and row.source == source]
        self._write_rows(t, inserts, updates, heartbeat, gone, reported)

    def _apply_unattributed(self, desired: dict[tuple[int, str, str], SoftwareRecord], reported: dict[int, str],
                            removable: set[int]) -> None:
        t = UnattributedSoftware.__table__
        existing: dict[tuple[int, str, str], sa.Row[Any]] = {}
        for clause in self.where_in(t.c.asset_id, sorted(reported)):
            for row in self.conn.execute(
                    sa.select(t.c.id, t.c.asset_id, t.c.name, t.c.publisher, t.c.version, t.c.source,
                              self.stale(t)).where(clause)):
                existing[(row.asset_id, row.name, row.publisher)] = row
        inserts, updates, heartbeat = [], {}, []
        for (asset_id, name, publisher), record in desired.items():
            counts = self.outcomes[reported[asset_id]].counts
            version = _fit_text(record.version, 100)
            row = existing.get((asset_id, name, publisher))
            if row is None:
                inserts.append({"asset_id": asset_id, "name": name, "publisher": publisher,
                                "version": version, "source": self.source,
                                "first_seen": self.now, "last_seen": self.now})
                counts.created += 1
                self._inserted(reported[asset_id], 2)
            elif row.version != version or row.source != self.source:
                updates[row.id] = {"version": version, "source": self.source, "last_seen": self.now}
                counts.updated += 1
            else:
                counts.unchanged += 1
                if row.stale:
                    heartbeat.append(row.id)
        # gone, or now attributed (an alias was added): no longer unattributed
        gone = [row for key, row in existing.items()
                if key[0] in removable and key not in desired and row.source == self.source]
        self._write_rows(t, inserts, updates, heartbeat, gone, reported)

    def _write_rows(self, table: sa.Table, inserts: list[dict[str, Any]], updates: dict[int, dict[str, Any]],
                    heartbeat: list[int], gone: list[sa.Row[Any]], scope_of: dict[int, str],
                    owner_column: str = "asset_id") -> None:
        """The group's writes to one table; ``gone`` rows count as updates of the scope
        that owns them (``scope_of[row.<owner_column>]``)."""
        self.writer.insert(table, inserts)
        self.writer.update(table, updates)
        for clause in self.where_in(table.c.id, heartbeat):
            self.conn.execute(table.update().where(clause).values(last_seen=self.now))
        for clause in self.where_in(table.c.id, [row.id for row in gone]):
            self.conn.execute(table.delete().where(clause))
        for row in gone:
            self.counts(scope_of[getattr(row, owner_column)]).updated += 1

    # retirement -------------------------------------------------------------------------------

    def _retire_missing(self) -> None:
        """Once for the group: the live assets of every complete scope that no scope of the
        group saw (and that are not kept because their group's members were not listed)."""
        complete = [s for s in self.scopes if self.may_retire[s]]
        if not complete:
            return
        t = Asset.__table__
        stale: list[int] = []
        for clause in self.where_in(t.c.source_scope, complete):
            for asset_id, scope in self.conn.execute(sa.select(t.c.id, t.c.source_scope).where(
                    clause, t.c.retired_at.is_(None))):
                if asset_id not in self.seen and asset_id not in self.kept_ids:
                    stale.append(asset_id)
                    self.counts(scope).marked_stale += 1
                    self.outcomes[scope].retired = True
        for clause in self.where_in(t.c.id, sorted(stale)):
            self.conn.execute(t.update().where(clause).values(retired_at=self.now, updated_at=self.now))

    # dependencies -----------------------------------------------------------------------------

    def _apply_dependencies(self) -> None:
        desired: dict[tuple[int, int, str], tuple[str, DependencyRecord]] = {}
        dependents: dict[int, str] = dict(self.seen)   # edges of these assets are theirs to replace
        active = set()
        for batch in self.batches:
            scope = batch.scope_key
            if not batch.dependencies and not batch.complete:
                continue
            active.add(scope)
            for dep in batch.dependencies:
                a = self.key_to_id.get(dep.dependent_key)
                b = self.key_to_id.get(dep.dependency_key)
                if a is None or b is None:
                    continue  # reported by _check_references
                if a == b:
                    continue  # merged into one machine: an edge to itself means nothing
                self._claim(a, scope, dependents)
                if a not in self.seen:
                    self.foreign.add(scope)
                desired.setdefault((a, b, dep.kind[:20]), (scope, dep))
        if not active:
            return
        t = Dependency.__table__
        existing: dict[tuple[int, int, str], sa.Row[Any]] = {}
        scan = sorted(a for a, scope in dependents.items() if scope in active)
        for clause in self.where_in(t.c.dependent_id, scan):
            for row in self.conn.execute(
                    sa.select(t.c.id, t.c.dependent_id, t.c.dependency_id, t.c.kind, t.c.strength,
                              t.c.source, self.stale(t)).where(clause)):
                existing[(row.dependent_id, row.dependency_id, row.kind)] = row
        inserts, updates, heartbeat = [], {}, []
        for key, (scope, dep) in desired.items():
            counts = self.counts(scope)
            row = existing.get(key)
            if row is None:
                inserts.append({"dependent_id": key[0], "dependency_id": key[1], "kind": key[2],
                                "strength": dep.strength, "source": self.source,
                                "first_seen": self.now, "last_seen": self.now})
                counts.created += 1
                self._inserted(dependents[key[0]], 3)
            elif row.strength != dep.strength and (row.source == self.source
                                                      or row.source not in CURATED_SOURCES):
                updates[row.id] = {"strength": dep.strength, "source": self.source,
                                   "last_seen": self.now}
                counts.updated += 1
            else:
                counts.unchanged += 1
                if row.stale and row.source == self.source:
                    heartbeat.append(row.id)
        dropped = [row for key, row in existing.items()
                   if key not in desired and row.source == self.source and key[0] in self.seen
                   and self.may_remove[self.seen[key[0]]] and self.seen[key[0]] in active
                   and key[0] not in self.frozen_groups]
        # An edge to an asset that disappeared stays as history (the asset is retired, not
        # deleted, and may come back); an edge the source no longer reports between live
        # assets is removed.
        retired = self._retired_among({row.dependency_id for row in dropped})
        gone = [row for row in dropped if row.dependency_id not in retired]
        self._write_rows(t, inserts, updates, heartbeat, gone, self.seen, owner_column="dependent_id")

    def _retired_among(self, ids: set[int]) -> set[int]:
        t = Asset.__table__
        found: set[int] = set()
        for clause in self.where_in(t.c.id, sorted(ids)):
            found.update(self.conn.execute(sa.select(t.c.id).where(
                clause, t.c.retired_at.is_not(None))).scalars())
        return found


class BulkWriter:
    """executemany straight to the DB-API driver, inside the session's transaction.

    SQLAlchemy's per-row bind processing (type decorators, the JSON serializer)
    costs more than the database does on bulk upserts, so values are converted
    once here — the same storage formats SQLAlchemy itself uses: aware UTC
    datetimes on PostgreSQL and ``YYYY-MM-DD HH:MM:SS.ffffff`` naive UTC text on
    SQLite (what ``UTCDateTime`` stores), JSON as text.  Rows are read back
    through the normal SQLAlchemy types, so comparisons see the same values.
    Bound parameters still pass through engine events (``before_cursor_execute``).

    On PostgreSQL, inserts of ``COPY_MIN_ROWS`` rows or more (a cold scope) go
    through ``COPY ... FROM STDIN`` instead: the server parses one stream rather
    than one bound statement per row.  COPY is not seen by engine events; small
    inserts, updates and deletes still are; rows get the engine's text guard
    (``inventory.db.clean_parameters``) here instead.
    """

    COPY_MIN_ROWS = 1000

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.postgres = conn.dialect.name == "postgresql"
        self.mark = "%s" if self.postgres else "?"
        self.quote = conn.dialect.identifier_preparer.quote
        self._datetimes: dict[datetime, Any] = {}

    def value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            converted = self._datetimes.get(value)
            if converted is None:
                utc = value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
                converted = utc if self.postgres else f"{utc.replace(tzinfo=None):%Y-%m-%d %H:%M:%S.%f}"
                self._datetimes[value] = converted
            return converted
        if isinstance(value, (dict, list)):
            return json_serializer(value)
        return value

    def insert(self, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        sql = (f"INSERT INTO {self.quote(table.name)} ({', '.join(self.quote(c) for c in columns)}) "
               f"VALUES ({', '.join([self.mark] * len(columns))})")
        # convert only the columns whose type needs it (datetimes, JSON); the rest pass as they are
        special = [i for i, c in enumerate(columns)
                   if isinstance(table.c[c].type, (sa.JSON, sa.types.TypeDecorator, sa.DateTime))]
        convert = self.value
        params = []
        for row in rows:
            values = [row[c] for c in columns]
            for i in special:
                if values[i] is not None:
                    values[i] = convert(values[i])
            params.append(tuple(values))
        if self.postgres and len(params) >= self.COPY_MIN_ROWS:
            self._copy(table, columns, params)
            return
        if len(params) >= self.COPY_MIN_ROWS and self._insert_with_one_bump(table.name, sql, params):
            return
        for chunk in chunks(params, 5000):
            self.conn.exec_driver_sql(sql, chunk)

    def _insert_with_one_bump(self, table: str, sql: str, params: list[tuple[Any, ...]]) -> bool:
        """SQLite: a large insert without the per-row ``inventory_version`` trigger, which
        costs more than the insert itself (a trigger program runs for every row).

        Inside a savepoint of the writer's transaction, which holds SQLite's only write
        lock: drop the table's insert trigger, insert, recreate it from its own stored
        SQL and run its counter bump once.  DDL is transactional in SQLite, so no other
        connection ever sees the trigger missing, and an error rolls all of it back.
        False when the trigger is not the known shape (then rows go the ordinary way)."""
        if self.conn.dialect.name != "sqlite":
            return False
        name = f"trg_{table}_inventory_version_ins"
        row = self.conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?", (name,)).first()
        bump = _trigger_body(row[0]) if row else None
        if bump is None:
            return False
        with self.conn.begin_nested():
            self.conn.exec_driver_sql(f'DROP TRIGGER "{name}"')
            for chunk in chunks(params, 5000):
                self.conn.exec_driver_sql(sql, chunk)
            self.conn.exec_driver_sql(row[0])
            self.conn.exec_driver_sql(bump)
        return True

    def _copy(self, table: sa.Table, columns: list[str], params: list[tuple[Any, ...]]) -> None:
        """``COPY FROM STDIN`` on the session's own connection, so inside its transaction."""
        target = f"{self.quote(table.name)} ({', '.join(self.quote(c) for c in columns)})"
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(f"COPY {target} FROM STDIN") as copy:
            for row in params:
                copy.write_row(clean_parameters(row))   # the text guard, as for statements

    def _rows(self, table: sa.Table, rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple[Any, ...]]]:
        columns = list(rows[0])
        special = [i for i, c in enumerate(columns)
                   if isinstance(table.c[c].type, (sa.JSON, sa.types.TypeDecorator, sa.DateTime))]
        params = []
        for row in rows:
            values = [row[c] for c in columns]
            for i in special:
                if values[i] is not None:
                    values[i] = self.value(values[i])
            params.append(tuple(values))
        return columns, params

    def insert_ignore(self, table: sa.Table, rows: list[dict[str, Any]], key: tuple[str, ...]) -> None:
        """``INSERT … ON CONFLICT (key) DO NOTHING`` of every row (executemany)."""
        if not rows:
            return
        columns, params = self._rows(table, rows)
        sql = (f"INSERT INTO {self.quote(table.name)} ({', '.join(self.quote(c) for c in columns)}) "
               f"VALUES ({', '.join([self.mark] * len(columns))}) "
               f"ON CONFLICT ({', '.join(self.quote(c) for c in key)}) DO NOTHING")
        for chunk in chunks(params, 5000):
            self.conn.exec_driver_sql(sql, chunk)

    def upsert(self, table: sa.Table, rows: list[dict[str, Any]], key: tuple[str, ...],
               keep_when_null: tuple[str, ...] = ()) -> None:
        """``INSERT … ON CONFLICT (key) DO UPDATE`` of every row (executemany); a column in
        ``keep_when_null`` keeps its stored value when the new one is NULL."""
        if not rows:
            return
        columns, params = self._rows(table, rows)
        name = self.quote(table.name)
        sets = ", ".join(
            f"{self.quote(c)} = COALESCE(excluded.{self.quote(c)}, {name}.{self.quote(c)})" if c in keep_when_null
            else f"{self.quote(c)} = excluded.{self.quote(c)}" for c in columns if c not in key)
        sql = (f"INSERT INTO {name} ({', '.join(self.quote(c) for c in columns)}) "
               f"VALUES ({', '.join([self.mark] * len(columns))}) "
               f"ON CONFLICT ({', '.join(self.quote(c) for c in key)}) DO UPDATE SET {sets}")
        for chunk in chunks(params, 5000):
            self.conn.exec_driver_sql(sql, chunk)

    def update(self, table: sa.Table, rows: dict[int, dict[str, Any]]) -> None:
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        convert = self.value
        for row_id, values in rows.items():
            cols = tuple(sorted(values))
            groups.setdefault(cols, []).append(tuple(convert(values[c]) for c in cols) + (row_id,))
        for cols, params in groups.items():
            sets = ", ".join(f"{self.quote(c)} = {self.mark}" for c in cols)
            sql = f"UPDATE {self.quote(table.name)} SET {sets} WHERE id = {self.mark}"
            for chunk in chunks(params, 5000):
                self.conn.exec_driver_sql(sql, chunk)


_TRIGGER_BODY = re.compile(
    r"\bBEGIN\s+(UPDATE\s+inventory_version\s+SET\s+[^;]*?WHERE\s+id\s*=\s*1)\s*;",
    re.IGNORECASE | re.DOTALL)


def _trigger_body(trigger_sql: str) -> str | None:
    """The counter bump of an ``inventory_version`` trigger (migration 0002): the first statement,
    one UPDATE of the counter row that reads nothing of the row that fired it; None for any other
    shape.  The change-log insert after it (migration 0006) is not run: a bump without change-log
    rows tells the impact graph to reload that table instead of patching (inventory.impact.changes)."""
    match = _TRIGGER_BODY.search(trigger_sql)
    if match is None or re.search(r"\b(NEW|OLD)\s*\.", match.group(1), re.IGNORECASE):
        return None
    return match.group(1)


def merge_record(current: dict[str, Any], record: AssetRecord, source: str, scope: str,
                 now_iso: str, *, machine_unread: bool = False) -> dict[str, Any]:
    """Column changes that bring the stored asset ``current`` in line with ``record``.

    Precedence (``rank``): a value is written when the stored value is empty,
    came from the same source, or came from a lower-ranked source; ties keep the
    incumbent.  Cloud APIs win provider/account/region/zone/instance id/name/
    kind/tags; host and osquery win OS family/name/version, hostname and OS
    facts in ``attributes`` (kernel...); the estate file wins owner/
    criticality/environment.  ``provenance[attr] = {source, seen}`` records who
    set each attribute.  Existence (natural key, ``source``, ``source_scope``,
    revival of a retired asset) follows ``_RANKS["existence"]``: a higher rank
    takes over, an equal one only revives a retired asset.

    ``machine_unread``: this source could not read the machine this time (SSM inventory
    failed for the instance), so what it knows from inside the machine (OS facts,
    hostname) only fills empty values, and attributes it set before and does not report
    now are kept rather than removed.
    """
    changes: dict[str, Any] = {}
    provenance = dict(current.get("provenance") or {})
    prov_changed = False
    incumbent = current.get("source")
    stamp = {"source": source, "seen": now_iso}

    # (Written out inline: this runs for every asset of every run, and an unchanged
    # re-run of 100k assets spent most of its time in small helper calls.)
    def owner(attr: str) -> str | None:
        entry = provenance.get(attr)
        if isinstance(entry, dict) and entry.get("source"):
            return entry["source"]  # type: ignore[no-any-return]
        return incumbent

    def outranked(attr: str, current_value: Any, who: str | None) -> bool:
        """Whether another source's value stands (this one may not overwrite it)."""
        return (current_value is not None and current_value != {} and who != source
                and rank(attr, source) <= rank(attr, who))

    for name in RECORD_COLUMNS:
        raw = getattr(record, name)
        if raw is None:
            continue
        new = _fit(name, raw)
        if new is None:
            continue
        cur = current.get(name)
        if machine_unread and cur is not None and _ATTRIBUTE_GROUP.get(name) == "host":
            continue
        who = owner(name)
        if outranked(name, cur, who):
            continue
        if new != cur:
            changes[name] = new
        if new != cur or who != source or name not in provenance:
            provenance[name] = stamp
            prov_changed = True

    tags = _jsonable(record.tags or {})
    cur_tags = current.get("tags") or {}
    who = owner("tags")
    # An empty tag set only counts when this source owns the tags (it removed them all).
    if (tags or (cur_tags and who == source)) and not outranked("tags", cur_tags, who):
        if tags != cur_tags:
            changes["tags"] = tags
        if tags != cur_tags or who != source or "tags" not in provenance:
            provenance["tags"] = stamp
            prov_changed = True

    current_attrs = current.get("attributes") or {}
    attrs = dict(current_attrs)
    attrs_changed = False
    reported = _jsonable(record.attributes or {})
    for key, value in reported.items():
        pkey = f"attributes.{key}"
        present = key in attrs
        if machine_unread and present and key in HOST_ATTRIBUTE_KEYS:
            continue
        who = owner(pkey)
        if present and outranked(pkey, attrs[key], who):
            continue
        if not present or attrs[key] != value:
            attrs[key] = value
            attrs_changed = True
            provenance[pkey] = stamp
            prov_changed = True
        elif pkey not in provenance or who != source:
            provenance[pkey] = stamp
            prov_changed = True
    # keys this source set before and no longer reports are removed
    for pkey in [k for k, v in provenance.items() if not machine_unread and k.startswith("attributes.")
                 and isinstance(v, dict) and v.get("source") == source and k[11:] not in reported]:
        attrs.pop(pkey[11:], None)
        provenance.pop(pkey)
        attrs_changed = prov_changed = True
    if attrs_changed and attrs != current_attrs:
        changes["attributes"] = attrs

    # existence: who owns the asset's identity and scope.  A higher-ranked source takes it
    # over; an equal one only revives a retired asset (two agents reporting one machine --
    # osquery and an EDR console -- must not hand it back and forth every run).
    claim, held = existence_rank(source), existence_rank(incumbent)
    if claim > held or source == incumbent or (claim == held and current.get("retired_at") is not None):
        if current.get("natural_key") != record.natural_key and source in CLOUD_SOURCES:
            changes["natural_key"] = record.natural_key  # re-key a host asset to its cloud identity
        if current.get("source") != source:
            changes["source"] = source
            # Values without a provenance entry belong to the asset's source (``owner``
            # falls back to it): an imported asset has none.  Keep them the previous
            # source's, or the new one would own -- and could erase -- what it never set.
            if incumbent:
                kept = {"source": incumbent, "seen": now_iso}
                for name in (*RECORD_COLUMNS, "tags"):
                    if name not in provenance and current.get(name) not in (None, "", {}):
                        provenance[name] = kept
                        prov_changed = True
                for key in current_attrs:
                    if f"attributes.{key}" not in provenance:
                        provenance[f"attributes.{key}"] = kept
                        prov_changed = True
        if current.get("source_scope") != scope:
            changes["source_scope"] = scope
        if current.get("retired_at") is not None:
            changes["retired_at"] = None  # seen again: revive (same id, links, history)

    if prov_changed and provenance != (current.get("provenance") or {}):
        changes["provenance"] = provenance
    return changes


_LENGTHS: dict[str, int] = {c.name: c.type.length for c in Asset.__table__.c
                            if getattr(c.type, "length", None)}


def _fit(column: str, value: Any) -> Any:
    """Normalise a record value the way the database will store it (so comparisons are exact)."""
    if value is None:
        return None
    if column == "min_up":
        return int(value)
    text = (value if type(value) is str else str(value)).strip()
    if not text:
        return None
    limit = _LENGTHS.get(column)
    return text[:limit] if limit and len(text) > limit else text


def _fit_text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return str(value).strip()[:limit]


_JSON_SCALARS = (str, int, bool, type(None))


def _plain_json(value: Any) -> bool:
    """True when a JSON round trip would return ``value`` unchanged (the common case)."""
    if isinstance(value, dict):
        return all(type(k) is str and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return type(value) in _JSON_SCALARS


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """What a JSON column round-trip returns (so an unchanged dict compares equal)."""
    if not value:
        return {}
    if _plain_json(value):
        return dict(value)
    return json.loads(json.dumps(value, default=str, sort_keys=True))
