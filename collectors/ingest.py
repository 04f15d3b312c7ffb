"""Apply collector output to the inventory, one scope at a time, safely.

``run_collection(engine, collector)`` is the only way collector output reaches
the database:

* It records a ``CollectionRun`` (status ``running``) first, so a crashed run
  is visible.
* For every ``ScopeBatch`` the collector yields it takes the scope's
  ``CollectionLock`` (a second run over a scope being collected refuses that
  scope and records why), then applies the batch in **one transaction**:
  upserts of assets, installations (through vendor attribution), unattributed
  software and dependencies keyed on natural keys; and — only when the batch is
  ``complete`` and every record in it was usable — retirement (``retired_at``)
  of the assets of that scope the batch did not contain.  Retired assets seen
  again are revived (same id, links and history).  The ``ScopeResult`` row is
  written in the same transaction, then the lock is released.
* A batch that is incomplete, has a record without its identity field, or fails
  while being applied retires nothing; earlier data stays, and the other scopes
  of the run are still applied.
* The run ends ``succeeded`` (every scope succeeded), ``failed`` (none did) or
  ``partial``.

Writes are bulk (executemany / multi-row INSERT, no per-row commit) and
*compare before writing*: a re-run over an unchanged estate issues no INSERT,
UPDATE or DELETE against inventory tables — only the run bookkeeping
(``collection_runs``, ``scope_results``, ``collection_locks``).

``last_seen`` granularity (a deliberate choice): per-row ``last_seen`` (and the
``seen`` stamps in ``Asset.provenance``) are refreshed when the row changes, or
when the stored value is older than ``LAST_SEEN_GRANULARITY`` (a day by
default) — a heartbeat, counted as *unchanged*.  The exact time a scope was
last confirmed is ``ScopeResult.finished_at`` of its latest succeeded result.

One machine, one asset (reconciliation): see ``merge_record``.  A host-side
record (host, osquery) carrying ``cloud_instance_id`` merges into the cloud
asset with that id; a cloud record whose natural key is new but whose
``cloud_instance_id`` names an existing host-side asset *re-keys* that asset
(it takes the cloud natural key, provider and scope, and keeps its id, links and
software).  Both orders converge to the same single asset.
"""
from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import chain
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

from collectors.attribution import Attributor, chunks, insert_ignore
from collectors.base import AssetRecord, Collector, DependencyRecord, ProgressFn, ScopeBatch, SoftwareRecord
from inventory.db import clean_parameters, json_serializer, read_session, utcnow, write_session
from inventory.memory import paused_gc
from inventory.validation import has_unwanted, sanitize_text, sanitize_tree, tree_may_have_unwanted
from inventory.models import (
    Asset,
    CollectionLock,
    CollectionRun,
    Dependency,
    Installation,
    ScopeResult,
    UnattributedSoftware,
)

log = logging.getLogger(__name__)

LAST_SEEN_GRANULARITY = timedelta(hours=24)
LOCK_TTL = timedelta(hours=2)

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
    "existence": {"aws": 4, "azure": 4, "kubernetes": 3, "host": 3, "crowdstrike": 2, "defender": 2,
                  "sentinelone": 2, "fleet": 2, "osquery": 2, "cmdb": 1, "sbom": 1},
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
BOOKKEEPING_TABLES = frozenset({"collection_runs", "scope_results", "collection_locks"})


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
    counts: Counts = field(default_factory=Counts)
    errors: list[str] = field(default_factory=list)
    retired: bool = False


# -- the run ----------------------------------------------------------------------------------

def run_collection(engine: Engine, collector: Collector, *, progress: ProgressFn | None = None,
                   now: datetime | None = None,
                   last_seen_granularity: timedelta = LAST_SEEN_GRANULARITY,
                   lock_ttl: timedelta = LOCK_TTL) -> CollectionRun:
    """Run ``collector`` and apply every scope it yields; returns the finished ``CollectionRun``.

    ``now`` fixes the clock for the whole run (tests, the benchmark); by
    default each scope is stamped with the time it is applied.
    """
    say: ProgressFn = progress or (lambda _msg: None)
    source = collector.name
    clock = (lambda: now) if now is not None else utcnow
    holder = f"{socket.gethostname()}:{os.getpid()}"

    with write_session(engine) as db:
        run = CollectionRun(collector=source, scope=_describe(collector)[:1000], status="running",
                            started_at=clock(), errors=[])
        db.add(run)
        db.flush()
        run_id = run.id

    totals = Counts()
    errors: list[dict[str, Any]] = []
    statuses: list[str] = []
    held: set[str] = set()
    refused: dict[str, str] = {}

    # Collectors that know their scopes up front get them locked before any
    # API call, so an overlapping run refuses to *start* them.
    planned = _planned_scopes(collector)
    for scope_key in planned:
        try:
            _acquire_lock(engine, scope_key, run_id, holder, clock(), lock_ttl)
            held.add(scope_key)
        except ScopeLocked as exc:
            refused[scope_key] = str(exc)
    for scope_key, reason in sorted(refused.items()):
        say(f"{scope_key}: refused — {reason}")
        _record_scope(engine, run_id, scope_key, "failed", Counts(), reason, clock())
        statuses.append("failed")
        errors.append({"scope": scope_key, "error": reason})

    attributor_holder: list[Attributor] = []

    def attributor() -> Attributor:
        if not attributor_holder:
            with read_session(engine) as rdb:
                attributor_holder.append(Attributor(rdb))
        return attributor_holder[0]

    try:
        if planned and len(refused) == len(planned):
            pass  # every scope is someone else's: do not even start the collector
        else:
            for batch in collector.collect(say):
                scope_key = batch.scope_key
                if scope_key in refused:
                    continue
                if scope_key not in held:
                    try:
                        _acquire_lock(engine, scope_key, run_id, holder, clock(), lock_ttl)
                    except ScopeLocked as exc:
                        reason = str(exc)
                        say(f"{scope_key}: refused — {reason}")
                        _record_scope(engine, run_id, scope_key, "failed", Counts(), reason, clock())
                        statuses.append("failed")
                        errors.append({"scope": scope_key, "error": reason})
                        continue
                    held.add(scope_key)
                try:
                    status, outcome = _apply_scope(engine, batch, source, run_id, clock(),
                                                   attributor(), last_seen_granularity, say)
                except Exception as exc:
                    log.exception("applying scope %s failed", scope_key)
                    reason = f"{type(exc).__name__}: {exc}"
                    say(f"{scope_key}: failed while applying — {reason}")
                    _record_scope(engine, run_id, scope_key, "failed", Counts(), reason, clock())
                    status, outcome = "failed", BatchOutcome(errors=[reason])
                finally:
                    _release_lock(engine, scope_key, run_id)
                    held.discard(scope_key)
                statuses.append(status)
                totals.add(outcome.counts)
                for message in outcome.errors:
                    errors.append({"scope": scope_key, "error": message})
    except Exception as exc:
        log.exception("collector %s crashed", source)
        reason = f"collector crashed: {type(exc).__name__}: {exc}"
        say(reason)
        errors.append({"scope": None, "error": reason})
        statuses.append("failed")
    finally:
        for scope_key in sorted(held):
            # planned scopes the collector never yielded: record why, then unlock
            if scope_key not in refused:
                _record_scope(engine, run_id, scope_key, "failed", Counts(),
                              "scope was planned but the collector returned nothing for it",
                              clock())
                statuses.append("failed")
                errors.append({"scope": scope_key, "error": "no data returned for planned scope"})
            _release_lock(engine, scope_key, run_id)

    if not statuses or all(s == "succeeded" for s in statuses):
        final = "succeeded"
    elif all(s == "failed" for s in statuses):
        final = "failed"
    else:
        final = "partial"

    with write_session(engine) as db:
        run = db.get(CollectionRun, run_id)
        assert run is not None
        run.status = final
        run.finished_at = clock()
        run.created, run.updated = totals.created, totals.updated
        run.unchanged, run.marked_stale = totals.unchanged, totals.marked_stale
        run.errors = errors
    with read_session(engine) as db:
        finished = db.scalars(sa.select(CollectionRun).where(CollectionRun.id == run_id)
                              .options(so.selectinload(CollectionRun.scope_results))).one()
        db.expunge(finished)  # hand back a detached, fully loaded run (the session rolls back)
    say(f"{source}: {final} — created {totals.created}, updated {totals.updated}, "
        f"unchanged {totals.unchanged}, marked stale {totals.marked_stale}")
    return finished


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


def _record_scope(engine: Engine, run_id: int, scope_key: str, status: str, counts: Counts,
                  error: str | None, when: datetime) -> None:
    with write_session(engine) as db:
        db.add(ScopeResult(run_id=run_id, scope_key=scope_key[:300], status=status,
                           created=counts.created, updated=counts.updated,
                           unchanged=counts.unchanged, marked_stale=counts.marked_stale,
                           error=error, finished_at=when))


# -- scope locks ------------------------------------------------------------------------------

def _acquire_lock(engine: Engine, scope_key: str, run_id: int, holder: str, now: datetime,
                  ttl: timedelta) -> None:
    """Take the scope's lock or raise ``ScopeLocked`` saying who holds it.

    A lock past ``expires_at``, or held by a process on this machine that no
    longer exists, is presumed left by a crash and taken over.
    """
    table = CollectionLock.__table__
    with write_session(engine) as db:
        current = db.execute(sa.select(CollectionLock.run_id, CollectionLock.holder,
                                       CollectionLock.acquired_at, CollectionLock.expires_at)
                             .where(CollectionLock.scope_key == scope_key)).first()
        if current is not None:
            other_run, other_holder, acquired, expires = current
            if expires > now and _holder_alive(other_holder):
                raise ScopeLocked(
                    f"scope {scope_key} is being collected by run {other_run} "
                    f"({other_holder}, since {acquired.isoformat(timespec='seconds')}); "
                    f"try again when it finishes (the lock expires {expires.isoformat(timespec='seconds')})")
            db.execute(table.delete().where(table.c.scope_key == scope_key))
            if other_run is not None and other_run != run_id:
                _close_abandoned_run(db, other_run, other_holder, run_id, now)
        insert_ignore(db, table, [{"scope_key": scope_key, "run_id": run_id, "holder": holder,
                                   "acquired_at": now, "expires_at": now + ttl}], ["scope_key"])
        owner = db.scalar(sa.select(CollectionLock.run_id).where(CollectionLock.scope_key == scope_key))
        if owner != run_id:
            raise ScopeLocked(f"scope {scope_key} was just taken by run {owner}")


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


def _release_lock(engine: Engine, scope_key: str, run_id: int) -> None:
    table = CollectionLock.__table__
    with write_session(engine) as db:
        db.execute(table.delete().where(table.c.scope_key == scope_key, table.c.run_id == run_id))


# -- one scope ----------------------------------------------------------------------------------

def _apply_scope(engine: Engine, batch: ScopeBatch, source: str, run_id: int, now: datetime,
                 attributor: Attributor, granularity: timedelta, say: ProgressFn
                 ) -> tuple[str, BatchOutcome]:
    say(f"{batch.scope_key}: applying {len(batch.assets)} assets, {len(batch.software)} software, "
        f"{len(batch.dependencies)} dependencies")
    with write_session(engine) as db:
        outcome = apply_batch(db, batch, source, now=now, attributor=attributor,
                              granularity=granularity)
        usable = batch.complete and not outcome.errors
        if usable:
            status = "succeeded"
        elif batch.assets or batch.software or batch.dependencies:
            status = "partial"
        else:
            status = "failed"
        messages = ([batch.error] if batch.error else []) + outcome.errors
        if not batch.complete and not batch.error:
            messages.insert(0, "scope incomplete: nothing retired")
        db.add(ScopeResult(run_id=run_id, scope_key=batch.scope_key[:300], status=status,
                           created=outcome.counts.created, updated=outcome.counts.updated,
                           unchanged=outcome.counts.unchanged,
                           marked_stale=outcome.counts.marked_stale,
                           error="; ".join(messages) or None, finished_at=now))
    c = outcome.counts
    say(f"{batch.scope_key}: {status} — created {c.created}, updated {c.updated}, "
        f"unchanged {c.unchanged}, marked stale {c.marked_stale}")
    if batch.error:
        outcome.errors.insert(0, batch.error)
    return status, outcome


def apply_batch(db: so.Session, batch: ScopeBatch, source: str, *, now: datetime | None = None,
                attributor: Attributor | None = None,
                granularity: timedelta = LAST_SEEN_GRANULARITY) -> BatchOutcome:
    """Apply one batch inside the caller's transaction (no commit).  See the module docstring."""
    # A batch of 100k assets reads and builds millions of small objects; the cyclic
    # collector walking them all, again and again, cost a warm re-run 10-20%.
    with paused_gc():
        clean_batch(batch)
        applier = _BatchApplier(db, batch, source, now or utcnow(), attributor or Attributor(db),
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
    def __init__(self, db: so.Session, batch: ScopeBatch, source: str, now: datetime,
                 attributor: Attributor, granularity: timedelta) -> None:
        self.db = db
        self.conn = db.connection()
        self.batch = batch
        self.source = source
        self.scope = batch.scope_key
        self.now = now
        self.now_iso = now.isoformat(timespec="seconds")
        self.stamp = {"source": source, "seen": self.now_iso}
        self.stale_before = now - granularity
        self.attributor = attributor
        self.outcome = BatchOutcome()
        # natural key (as the records spell it) -> asset id
        self.key_to_id: dict[str, int] = {}
        self.seen_ids: set[int] = set()
        self.writer = BulkWriter(self.conn)
        self.may_remove = False

    @property
    def counts(self) -> Counts:
        return self.outcome.counts

    def where_in(self, column: sa.ColumnElement[Any], values: list[Any]) -> Iterator[sa.ColumnElement[bool]]:
        """``column IN values`` as few statements as the backend allows.

        PostgreSQL takes the whole list as one array parameter (``= ANY(...)``, one
        round trip); SQLite gets chunks small enough for its parameter limit
        (in-process, so extra statements are cheap)."""
        if not values:
            return
        if self.writer.postgres:
            from sqlalchemy.dialects.postgresql import ARRAY
            yield column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(column.type)))
            return
        for chunk in chunks(values):
            yield column.in_(chunk)

    def stale(self, table: sa.Table) -> sa.ColumnElement[Any]:
        """Whether a row's ``last_seen`` is older than the granularity, as a column: the
        database compares, rather than Python parsing a timestamp per existing row."""
        return (table.c.last_seen < self.stale_before).label("stale")

    def error(self, message: str) -> None:
        self.outcome.errors.append(message)

    def run(self) -> BatchOutcome:
        records = self._valid_records()
        self._upsert_assets(records)
        # Every reference must resolve before anything is removed: a batch with a
        # dangling reference is partial, and a partial batch removes nothing.
        self._resolve_keys([r.asset_key for r in self.batch.software]
                           + [d.dependent_key for d in self.batch.dependencies]
                           + [d.dependency_key for d in self.batch.dependencies])
        self._check_references()
        self.may_remove = self.batch.complete and not self.outcome.errors
        self._apply_software()
        if self.may_remove:
            self._retire_missing()
        self._apply_dependencies()
        return self.outcome

    def _check_references(self) -> None:
        unknown = {r.asset_key for r in self.batch.software if r.asset_key not in self.key_to_id}
        if unknown:
            sample = ", ".join(sorted(map(str, unknown))[:3])
            self.error(f"software for {len(unknown)} unknown asset(s) ({sample}): skipped")
        unknown = {k for d in self.batch.dependencies for k in (d.dependent_key, d.dependency_key)
                   if k not in self.key_to_id}
        if unknown:
            sample = ", ".join(sorted(map(str, unknown))[:3])
            self.error(f"dependencies naming {len(unknown)} unknown asset(s) ({sample}): skipped")

    # assets ---------------------------------------------------------------------------------

    def _valid_records(self) -> list[AssetRecord]:
        valid: dict[str, AssetRecord] = {}
        bad = 0
        for record in self.batch.assets:
            key = (record.natural_key or "").strip()
            if not key or any(not part.strip() for part in key.split(":")) or not record.kind:
                bad += 1
                if bad <= 5:
                    self.error(f"asset record without its identity (natural key {record.natural_key!r}, "
                               f"name {record.name!r}): skipped, scope treated as partial")
                continue
            record.natural_key = key
            valid[key] = record  # a duplicate key within one batch: the last record wins
        if bad > 5:
            self.error(f"... and {bad - 5} more asset records without identity")
        return list(valid.values())

    def _load_assets(self, where: Any) -> list[dict[str, Any]]:
        cols = [Asset.__table__.c[name] for name in _ASSET_READ]
        return [dict(zip(_ASSET_READ, row)) for row in self.conn.execute(sa.select(*cols).where(where))]

    def _upsert_assets(self, records: list[AssetRecord]) -> None:
        if not records:
            return
        # The cloud's own vendor must exist (with cloud_provider set) so a
        # region outage of that vendor finds the assets hosted there.
        providers = {r.provider for r in records if r.provider}
        cloud_vendors = [v for v in (self.attributor.cloud_vendor(p) for p in sorted(providers)) if v]
        if cloud_vendors:
            self.attributor.ensure_vendors(self.db, cloud_vendors)
        t = Asset.__table__
        by_key: dict[str, dict[str, Any]] = {}
        for row in self._load_assets(t.c.source_scope == self.scope):
            by_key[row["natural_key"]] = row
        missing = [r.natural_key for r in records if r.natural_key not in by_key]
        for clause in self.where_in(t.c.natural_key, missing):
            for row in self._load_assets(clause):
                by_key[row["natural_key"]] = row
        by_cloud_id: dict[str, list[dict[str, Any]]] = {}
        host_side = self.source not in CLOUD_SOURCES
        cloud_ids = sorted({r.cloud_instance_id for r in records if r.cloud_instance_id
                            and (host_side or r.natural_key not in by_key)})
        for clause in self.where_in(t.c.cloud_instance_id, cloud_ids):
            for row in self._load_assets(clause):
                by_key.setdefault(row["natural_key"], row)
                by_cloud_id.setdefault(row["cloud_instance_id"], []).append(
                    by_key[row["natural_key"]])

        inserts: list[dict[str, Any]] = []
        insert_keys: dict[str, dict[str, Any]] = {}
        updates: dict[int, dict[str, Any]] = {}
        working: dict[int, dict[str, Any]] = {}
        heartbeats: dict[int, dict[str, Any]] = {}

        for record in records:
            target = self._match(record, by_key, by_cloud_id)
            if target is None:
                if record.natural_key in insert_keys:
                    continue
                row = self._new_row(record)
                insert_keys[record.natural_key] = row
                inserts.append(row)
                continue
            current = working.setdefault(target["id"], dict(target))
            changes = merge_record(current, record, self.source, self.scope, self.now_iso)
            self.key_to_id[record.natural_key] = current["id"]
            self.seen_ids.add(current["id"])
            if changes:
                current.update(changes)
                pending = updates.setdefault(current["id"], {})
                pending.update(changes)
                heartbeats.pop(current["id"], None)
            elif (current["id"] not in updates and current["last_seen"] < self.stale_before
                  and existence_rank(self.source) >= existence_rank(current["source"])):
                heartbeats[current["id"]] = current

        if inserts:
            self.writer.insert(t, inserts)
            # New rows all carry this scope: one query maps their keys to ids.
            new_keys = {row["natural_key"] for row in inserts}
            for asset_id, key in self.conn.execute(sa.select(t.c.id, t.c.natural_key)
                                                   .where(t.c.source_scope == self.scope)):
                if key in new_keys:
                    self.key_to_id[key] = asset_id
                    self.seen_ids.add(asset_id)
            self.counts.created += len(inserts)
        for asset_id, changes in updates.items():
            changes["updated_at"] = self.now
            changes["last_seen"] = self.now
        self._bulk_update(t, updates)
        self.counts.updated += len(updates)
        self.counts.unchanged += len(records) - len(inserts) - len(updates)
        if heartbeats:
            rows = {}
            for asset_id, current in heartbeats.items():
                provenance = {k: ({**v, "seen": self.now_iso} if isinstance(v, dict)
                                  and v.get("source") == self.source else v)
                              for k, v in (current["provenance"] or {}).items()}
                rows[asset_id] = {"last_seen": self.now, "provenance": provenance}
            # explicit updated_at: a heartbeat is not a change
            self._bulk_update(t, rows, touch_updated_at=False)

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

    def _new_row(self, record: AssetRecord) -> dict[str, Any]:
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
        row.update(provenance=provenance, source=self.source, source_scope=self.scope,
                   first_seen=self.now, last_seen=self.now, retired_at=None,
                   created_at=self.now, updated_at=self.now)
        return row

    def _bulk_update(self, table: sa.Table, rows: dict[int, dict[str, Any]],
                     touch_updated_at: bool = True) -> None:
        """executemany per distinct set of changed columns (no per-row statements).

        ``updated_at`` is only written when the caller includes it, so a
        heartbeat (``touch_updated_at=False``) leaves it as it was."""
        del touch_updated_at  # the fast writer never applies onupdate defaults
        self.writer.update(table, rows)

    # software ---------------------------------------------------------------------------------

    def _resolve_keys(self, keys: Iterable[str]) -> None:
        missing = sorted({k for k in keys if k and k not in self.key_to_id})
        t = Asset.__table__
        for clause in self.where_in(t.c.natural_key, missing):
            for asset_id, key in self.conn.execute(sa.select(t.c.id, t.c.natural_key).where(clause)):
                self.key_to_id[key] = asset_id

    def _apply_software(self) -> None:
        software = self.batch.software
        if not software:
            return
        attributed: dict[tuple[int, tuple[str, str]], SoftwareRecord] = {}
        unattributed: dict[tuple[int, str, str], SoftwareRecord] = {}
        reported_assets: set[int] = set()
        pairs: set[tuple[str, str]] = set()
        for record in software:
            asset_id = self.key_to_id.get(record.asset_key)
            if asset_id is None:
                continue  # reported by _check_references
            reported_assets.add(asset_id)
            hit = self.attributor.attribute_software(record.name, record.publisher, record.origin)
            if hit is None:
                key = (asset_id, _fit_text(record.name, 300), _fit_text(record.publisher or "", 300))
                unattributed.setdefault(key, record)
            else:
                pair = (hit[0], hit[1][:200])
                pairs.add(pair)
                attributed.setdefault((asset_id, pair), record)
        product_ids = self.attributor.ensure_products(self.db, pairs)
        self._apply_installations(
            {(aid, product_ids[pair]): rec for (aid, pair), rec in attributed.items()},
            reported_assets)
        self._apply_unattributed(unattributed, reported_assets)

    def _apply_installations(self, desired: dict[tuple[int, int], SoftwareRecord],
                             reported_assets: set[int]) -> None:
        t = Installation.__table__
        existing: dict[tuple[int, int], sa.Row[Any]] = {}
        for clause in self.where_in(t.c.asset_id, sorted(reported_assets)):
            for row in self.conn.execute(
                    sa.select(t.c.id, t.c.asset_id, t.c.product_id, t.c.version, t.c.raw_name,
                              t.c.raw_publisher, t.c.attributes, t.c.source, self.stale(t)).where(clause)):
                existing[(row.asset_id, row.product_id)] = row
        inserts, updates, heartbeat = [], {}, []
        for (asset_id, product_id), record in desired.items():
            values = {"version": _fit_text(record.version, 100),
                      "raw_name": _fit_text(record.name, 300),
                      "raw_publisher": _fit_text(record.publisher, 300),
                      "attributes": _jsonable(record.attributes) or None}
            row = existing.get((asset_id, product_id))
            if row is None:
                inserts.append({"asset_id": asset_id, "product_id": product_id, **values,
                                "source": self.source, "first_seen": self.now, "last_seen": self.now})
                continue
            if row.source != self.source and software_rank(row.source) >= software_rank(
                    self.source):
                self.counts.unchanged += 1  # an equal or better-placed source owns this row
                continue
            changes = {k: v for k, v in values.items() if getattr(row, k) != v}
            if row.source != self.source:
                changes["source"] = self.source
            if changes:
                changes["last_seen"] = self.now
                updates[row.id] = changes
            else:
                self.counts.unchanged += 1
                if row.stale:
                    heartbeat.append(row.id)
        gone = []
        if self.may_remove:
            gone = [row.id for key, row in existing.items()
                    if key not in desired and row.source == self.source]
        self._write_rows(t, inserts, updates, heartbeat, gone)

    def _apply_unattributed(self, desired: dict[tuple[int, str, str], SoftwareRecord],
                            reported_assets: set[int]) -> None:
        t = UnattributedSoftware.__table__
        existing: dict[tuple[int, str, str], sa.Row[Any]] = {}
        for clause in self.where_in(t.c.asset_id, sorted(reported_assets)):
            for row in self.conn.execute(
                    sa.select(t.c.id, t.c.asset_id, t.c.name, t.c.publisher, t.c.version, t.c.source,
                              self.stale(t)).where(clause)):
                existing[(row.asset_id, row.name, row.publisher)] = row
        inserts, updates, heartbeat = [], {}, []
        for (asset_id, name, publisher), record in desired.items():
            version = _fit_text(record.version, 100)
            row = existing.get((asset_id, name, publisher))
            if row is None:
                inserts.append({"asset_id": asset_id, "name": name, "publisher": publisher,
                                "version": version, "source": self.source,
                                "first_seen": self.now, "last_seen": self.now})
            elif row.version != version or row.source != self.source:
                updates[row.id] = {"version": version, "source": self.source,
                                      "last_seen": self.now}
            else:
                self.counts.unchanged += 1
                if row.stale:
                    heartbeat.append(row.id)
        gone = []
        if self.may_remove:
            # gone, or now attributed (an alias was added): no longer unattributed
            gone = [row.id for key, row in existing.items()
                    if key not in desired and row.source == self.source]
        self._write_rows(t, inserts, updates, heartbeat, gone)

    def _write_rows(self, table: sa.Table, inserts: list[dict[str, Any]],
                    updates: dict[int, dict[str, Any]], heartbeat: list[int], gone: list[int]) -> None:
        if inserts:
            self.writer.insert(table, inserts)
            self.counts.created += len(inserts)
        if updates:
            self._bulk_update(table, updates)
            self.counts.updated += len(updates)
        for clause in self.where_in(table.c.id, heartbeat):
            self.conn.execute(table.update().where(clause).values(last_seen=self.now))
        for clause in self.where_in(table.c.id, gone):
            self.conn.execute(table.delete().where(clause))
        self.counts.updated += len(gone)

    # dependencies -----------------------------------------------------------------------------

    def _apply_dependencies(self) -> None:
        deps = self.batch.dependencies
        dependents_in_batch = set(self.seen_ids)
        if not deps and not self.batch.complete:
            return
        desired: dict[tuple[int, int, str], DependencyRecord] = {}
        for dep in deps:
            a = self.key_to_id.get(dep.dependent_key)
            b = self.key_to_id.get(dep.dependency_key)
            if a is None or b is None:
                continue  # reported by _check_references
            if a == b:
                continue  # merged into one machine: an edge to itself means nothing
            desired.setdefault((a, b, dep.kind[:20]), dep)
        t = Dependency.__table__
        existing: dict[tuple[int, int, str], sa.Row[Any]] = {}
        scan = sorted(dependents_in_batch | {a for a, _, _ in desired})
        for clause in self.where_in(t.c.dependent_id, scan):
            for row in self.conn.execute(
                    sa.select(t.c.id, t.c.dependent_id, t.c.dependency_id, t.c.kind, t.c.strength,
                              t.c.source, self.stale(t)).where(clause)):
                existing[(row.dependent_id, row.dependency_id, row.kind)] = row
        inserts, updates, heartbeat = [], {}, []
        for key, dep in desired.items():
            row = existing.get(key)
            if row is None:
                inserts.append({"dependent_id": key[0], "dependency_id": key[1], "kind": key[2],
                                "strength": dep.strength, "source": self.source,
                                "first_seen": self.now, "last_seen": self.now})
            elif row.strength != dep.strength and (row.source == self.source
                                                      or row.source not in CURATED_SOURCES):
                updates[row.id] = {"strength": dep.strength, "source": self.source,
                                      "last_seen": self.now}
            else:
                self.counts.unchanged += 1
                if row.stale and row.source == self.source:
                    heartbeat.append(row.id)
        gone = []
        if self.may_remove:
            dropped = {key: row.id for key, row in existing.items()
                       if key not in desired and row.source == self.source
                       and key[0] in dependents_in_batch}
            # An edge to an asset that disappeared stays as history (the asset is
            # retired, not deleted, and may come back); an edge the source no
            # longer reports between live assets is removed.
            retired = self._retired_among({key[1] for key in dropped})
            gone = [row_id for key, row_id in dropped.items() if key[1] not in retired]
        self._write_rows(t, inserts, updates, heartbeat, gone)

    def _retired_among(self, ids: set[int]) -> set[int]:
        t = Asset.__table__
        found: set[int] = set()
        for clause in self.where_in(t.c.id, sorted(ids)):
            found.update(self.conn.execute(sa.select(t.c.id).where(
                clause, t.c.retired_at.is_not(None))).scalars())
        return found

    # retirement -------------------------------------------------------------------------------

    def _retire_missing(self) -> None:
        t = Asset.__table__
        live = self.conn.execute(sa.select(t.c.id).where(t.c.source_scope == self.scope,
                                                         t.c.retired_at.is_(None))).scalars().all()
        stale = sorted(set(live) - self.seen_ids)
        for clause in self.where_in(t.c.id, stale):
            self.conn.execute(t.update().where(clause)
                              .values(retired_at=self.now, updated_at=self.now))
        self.counts.marked_stale += len(stale)
        self.outcome.retired = bool(stale)


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
    shape.  The change-log insert after it (migration 0005) is not run: a bump without change-log
    rows tells the impact graph to reload that table instead of patching (inventory.impact.changes)."""
    match = _TRIGGER_BODY.search(trigger_sql)
    if match is None or re.search(r"\b(NEW|OLD)\s*\.", match.group(1), re.IGNORECASE):
        return None
    return match.group(1)


def merge_record(current: dict[str, Any], record: AssetRecord, source: str, scope: str,
                 now_iso: str) -> dict[str, Any]:
    """Column changes that bring the stored asset ``current`` in line with ``record``.

    Precedence (``rank``): a value is written when the stored value is empty,
    came from the same source, or came from a lower-ranked source; ties keep the
    incumbent.  Cloud APIs win provider/account/region/zone/instance id/name/
    kind/tags; host and osquery win OS family/name/version, hostname and OS
    facts in ``attributes`` (kernel...); the estate file wins owner/
    criticality/environment.  ``provenance[attr] = {source, seen}`` records who
    set each attribute.  Existence (natural key, ``source``, ``source_scope``,
    revival of a retired asset) follows the cloud > host > osquery order.
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
    for pkey in [k for k, v in provenance.items() if k.startswith("attributes.")
                 and isinstance(v, dict) and v.get("source") == source and k[11:] not in reported]:
        attrs.pop(pkey[11:], None)
        provenance.pop(pkey)
        attrs_changed = prov_changed = True
    if attrs_changed and attrs != current_attrs:
        changes["attributes"] = attrs

    # existence: who owns the asset's identity and scope
    if existence_rank(source) >= existence_rank(current.get("source")):
        if current.get("natural_key") != record.natural_key and source in CLOUD_SOURCES:
            changes["natural_key"] = record.natural_key  # re-key a host asset to its cloud identity
        if current.get("source") != source:
            changes["source"] = source
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
