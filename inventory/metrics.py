"""Prometheus series (``planb_*``) through ``prometheus-client``.

Two kinds of series:

* **Process series**, recorded where things happen: HTTP requests (by Flask endpoint,
  method and status), impact-graph rebuilds, the lag of the graph behind the latest
  blast-radius answer, blast-radius query latency.  Under ``planb serve`` with several
  gunicorn workers these live in prometheus-client's multiprocess mode: each worker
  writes memory-mapped files into ``PROMETHEUS_MULTIPROC_DIR`` (a folder ``planb serve``
  creates per start, see ``inventory.cli.serve``) and a scrape of any worker adds them up.
* **Database series**, computed when scraped (``DatabaseCollector``): collection runs by
  source and status, seconds since each source's last successful collection, open
  incidents, active assets by provider, the update gate.  They describe the database,
  not a process, so every worker answers the same; each worker keeps its figures for
  ``DB_CACHE_SECONDS`` so a scrape every few seconds costs a handful of small queries at
  most every 15 seconds, whatever the estate's size.

The impact engine never imports this module: it calls the observers in
``inventory.impact.graph.OBSERVERS``, which importing this module fills in.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("planb.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DB_CACHE_SECONDS = 15.0

# The *_created series say when a process first counted; summed over workers (multiprocess mode,
# which has none) they would mean nothing, so single-process scrapes leave them out as well.
disable_created_metrics()

# Request latencies: most pages take milliseconds, a blast radius over 100k assets up to a second
# or two, an import of a large estate file tens of seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REBUILD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Every series name a scrape can contain (docs/metrics.md and the alert rules' test check them).
PROCESS_SERIES = ("planb_http_requests", "planb_http_request_duration_seconds", "planb_graph_rebuilds",
                  "planb_graph_rebuild_duration_seconds", "planb_graph_lag_seconds",
                  "planb_blast_radius_duration_seconds")
DATABASE_SERIES = ("planb_collection_runs", "planb_collection_runs_running",
                   "planb_collection_last_success_age_seconds", "planb_incidents_open",
                   "planb_assets", "planb_update_gate_ok", "planb_untested_assets")


class ProcessSeries:
    """This process's series, in a registry of their own (a scrape shows planb_* series only)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("endpoint", "method", "status")
        self.http_requests = Counter(
            "planb_http_requests", "HTTP requests answered, by Flask endpoint, method and status code.",
            labels, registry=self.registry)
        self.http_duration = Histogram(
            "planb_http_request_duration_seconds",
            "Time to answer an HTTP request, by Flask endpoint, method and status code.",
            labels, buckets=REQUEST_BUCKETS, registry=self.registry)
        self.graph_rebuilds = Counter(
            "planb_graph_rebuilds", "Impact-graph loads and reloads after an inventory change.",
            registry=self.registry)
        self.graph_rebuild_duration = Histogram(
            "planb_graph_rebuild_duration_seconds", "Time to load or reload the impact graph.",
            buckets=REBUILD_BUCKETS, registry=self.registry)
        self.graph_lag = Gauge(
            "planb_graph_lag_seconds",
            "How far behind the inventory the graph of the latest blast-radius answer was (0: current).",
            multiprocess_mode="livemostrecent", registry=self.registry)
        self.blast_radius_duration = Histogram(
            "planb_blast_radius_duration_seconds",
            "Time to compute one blast radius (graph lookup, propagation, plans, confidence).",
            buckets=QUERY_BUCKETS, registry=self.registry)


_series: ProcessSeries | None = None
_series_pid = 0
_series_lock = threading.Lock()


def series() -> ProcessSeries:
    """This process's series, built on first use in each process (a gunicorn worker forked from a
    master that had already recorded something builds its own)."""
    global _series, _series_pid
    if _series is None or _series_pid != os.getpid():
        with _series_lock:
            if _series is None or _series_pid != os.getpid():
                _use_multiprocess_values()
                _series, _series_pid = ProcessSeries(), os.getpid()
    return _series


def _use_multiprocess_values() -> None:
    # prometheus-client picks how values are stored when it is first imported.  `planb demo`
    # imports it (building the app) before `planb serve` sets PROMETHEUS_MULTIPROC_DIR for its
    # workers, so pick again: values must be the shared memory-mapped ones whenever it is set.
    from prometheus_client import values

    if multiprocess_dir() and values.ValueClass is values.MutexValue:
        values.ValueClass = values.get_value_class()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    recorded = series()
    labels = (endpoint, method, str(status))
    recorded.http_requests.labels(*labels).inc()
    recorded.http_duration.labels(*labels).observe(seconds)


def _on_rebuild(seconds: float) -> None:
    recorded = series()
    recorded.graph_rebuilds.inc()
    recorded.graph_rebuild_duration.observe(seconds)


def _on_answer(lag_seconds: float) -> None:
    series().graph_lag.set(lag_seconds)


def _on_query(seconds: float) -> None:
    series().blast_radius_duration.observe(seconds)


def _install_observers() -> None:
    from inventory.impact.graph import OBSERVERS

    for event, observer in (("rebuild", _on_rebuild), ("answer", _on_answer), ("query", _on_query)):
        if observer not in OBSERVERS[event]:
            OBSERVERS[event].append(observer)


_install_observers()


# ---------------------------------------------------------------- database series

class DatabaseCollector(Collector):
    """Series read from the database at scrape time, cached ``DB_CACHE_SECONDS`` per database.

    ``engine_factory`` returns the engine of the app being scraped (called inside the request)."""

    def __init__(self, engine_factory: Callable[[], Any], clock: Callable[[], float] = time.monotonic) -> None:
        self._engine_factory = engine_factory
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return []   # names are only known by collecting; the registry then skips the check

    def collect(self) -> Iterator[Metric]:
        engine = self._engine_factory()
        yield from database_metrics(engine, self._clock)


_cache: dict[str, tuple[float, list[Metric]]] = {}
_cache_lock = threading.Lock()


def database_metrics(engine: Any, clock: Callable[[], float] = time.monotonic) -> list[Metric]:
    """The database series of ``engine``'s database, computed at most every ``DB_CACHE_SECONDS``
    (one computation at a time per process; the others reuse its result)."""
    key = engine.url.render_as_string(hide_password=True)
    hit = _cache.get(key)
    if hit is not None and clock() - hit[0] < DB_CACHE_SECONDS:
        return hit[1]
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and clock() - hit[0] < DB_CACHE_SECONDS:
            return hit[1]
        metrics = _compute_database_metrics(engine)
        _cache[key] = (clock(), metrics)
        return metrics


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _compute_database_metrics(engine: Any) -> list[Metric]:
    import sqlalchemy as sa

    from inventory.db import read_session, utcnow
    from inventory.models import CollectionRun, Incident
    from inventory.services import overview
    from inventory.services import updates as update_service

    now = utcnow()
    with read_session(engine) as db:
        run_counts = db.execute(sa.select(CollectionRun.collector, CollectionRun.status, sa.func.count())
                                .group_by(CollectionRun.collector, CollectionRun.status)).all()
        last_success = db.execute(sa.select(CollectionRun.collector, sa.func.max(CollectionRun.finished_at))
                                  .where(CollectionRun.status == "succeeded")
                                  .group_by(CollectionRun.collector)).all()
        open_incidents = db.scalar(sa.select(sa.func.count()).select_from(Incident)
                                   .where(Incident.status == "open")) or 0
        # Both cached against the inventory version (and, for the gate, the audit trail), like the
        # overview and update-testing pages: a scrape after no change costs two key lookups.
        estate = overview.estate_counts(db)
        untested = update_service.cached_view(db, "summary", lambda: update_service.untested_summary(db))

    finished = CounterMetricFamily(
        "planb_collection_runs", "Finished collection runs, by source (collector) and status "
        "(succeeded, partial, failed).", labels=("source", "status"))
    running = GaugeMetricFamily("planb_collection_runs_running",
                                "Collection runs in progress (or crashed and not yet taken over), by source.",
                                labels=("source",))
    sources = sorted({collector for collector, _status, _n in run_counts})
    running_by_source = {source: 0 for source in sources}
    for collector, status, count in sorted(run_counts):
        if status == "running":
            running_by_source[collector] = count
        else:
            finished.add_metric((collector, status), count)
    for source, count in running_by_source.items():
        running.add_metric((source,), count)

    age = GaugeMetricFamily(
        "planb_collection_last_success_age_seconds",
        "Seconds since each source's latest successful collection run finished "
        "(+Inf for a source that has run but never succeeded).", labels=("source",))
    succeeded_at = {collector: finished_at for collector, finished_at in last_success if finished_at}
    for source in sources:
        when = succeeded_at.get(source)
        age.add_metric((source,), max(0.0, (now - _aware(when)).total_seconds()) if when else math.inf)

    incidents = GaugeMetricFamily("planb_incidents_open", "Declared incidents not yet resolved.",
                                  value=open_incidents)
    assets = GaugeMetricFamily("planb_assets", "Active (not retired) assets, by provider "
                               "('unknown' when none is recorded).", labels=("provider",))
    for provider, count in sorted(estate["by_provider"]):
        assets.add_metric((provider,), count)
    gate = GaugeMetricFamily(
        "planb_update_gate_ok", "1 when `planb check updates` passes (no critical asset runs an "
        "untested version), 0 when the gate is red.",
        value=0 if untested["critical_assets"] else 1)
    untested_assets = GaugeMetricFamily(
        "planb_untested_assets", "Active assets running at least one untested version, by criticality.",
        labels=("criticality",))
    from inventory.choices import CRITICALITIES

    for criticality in CRITICALITIES:
        untested_assets.add_metric((criticality,), untested["by_criticality"].get(criticality, {})
                                   .get("assets", 0))
    return [finished, running, age, incidents, assets, gate, untested_assets]


def _aware(value: Any) -> Any:
    from datetime import timezone

    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------- exposition

def scrape(engine_factory: Callable[[], Any]) -> tuple[bytes, str]:
    """The text exposition of every ``planb_*`` series, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    folder = multiprocess_dir()
    if folder:
        MultiProcessCollector(registry, path=folder)
    else:
        registry.register(_ProcessSeries())
    registry.register(DatabaseCollector(engine_factory))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _ProcessSeries(Collector):
    """This process's own series (single-process mode)."""

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from series().registry.collect()

