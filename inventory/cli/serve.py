"""``planb serve``: run the web app (gunicorn when available, else Flask's server)."""
from __future__ import annotations

import gc
import importlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import click

from inventory import config

log = logging.getLogger("planb.serve")

# prometheus-client's multiprocess folder (inventory.metrics): one per server start.
METRICS_DIR_PREFIX = "planb-metrics-"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@click.command()
@click.option("--host", default=None, show_default="PLANB_HOST, else 127.0.0.1")
@click.option("--port", type=click.IntRange(1, 65535), default=None, show_default="PLANB_PORT, else 8080")
@click.option("--workers", type=click.IntRange(1, 64), default=None, show_default="PLANB_WORKERS, else 2",
              help="gunicorn worker processes.")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the dashboard and API (migrations must be current: 'planb db upgrade')."""
    # Every PLANB_ setting is checked here, in the one process, before any worker
    # starts: a bad one stops 'planb serve' with its message (config.ConfigError).
    settings = config.load()
    serve_app(host or settings["HOST"], port or settings["PORT"], workers or settings["WORKERS"])


def serve_app(host: str, port: int, workers: int = 2) -> None:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address (PLANB_HOST=::)
    click.echo(f"Plan B is serving at http://{address}/  (Ctrl-C to stop)")
    try:
        from gunicorn.app.wsgiapp import WSGIApplication
    except ImportError:  # pragma: no cover - gunicorn is a dependency; Windows lacks it
        from inventory import create_app
        create_app().run(host=host, port=port)
        return

    metrics_dir = _fresh_metrics_dir()
    os.environ[MULTIPROC_ENV] = str(metrics_dir)

    class _App(WSGIApplication):
        def __init__(self) -> None:
            # Threaded workers: a slow blast-radius request must not queue the asset list
            # behind it (measured in benchmarks/load_test.py).
            # The app is built once, in the master (preload_app), which also maps the graph's
            # snapshot and loads the compiled kernel: every worker forked from it shares those
            # pages instead of importing and loading its own copy (docs/explanation/engine.md).
            self._options = {"bind": address, "workers": workers, "worker_class": "gthread",
                             "threads": 4, "accesslog": "-", "timeout": 120, "preload_app": True,
                             "pre_fork": _before_fork, "post_fork": _after_fork,
                             "child_exit": _worker_exited}
            super().__init__()

        def load_config(self) -> None:
            for key, value in self._options.items():
                self.cfg.set(key, value)

        def load(self):  # type: ignore[no-untyped-def]
            from inventory import create_app_or_halt

            app = create_app_or_halt()
            prepare_master(app)
            return app

    master = os.getpid()
    try:
        _App().run()
    finally:
        # Workers leave gunicorn's run() through here too (SystemExit): only the master cleans up.
        if os.getpid() == master:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _fresh_metrics_dir() -> Path:
    """An empty folder for this start's metric files (under TMPDIR, /tmp by default — an
    emptyDir under Kubernetes), after removing the folders of servers that no longer run."""
    base = Path(tempfile.gettempdir())
    for old in base.glob(f"{METRICS_DIR_PREFIX}*"):
        pid = old.name[len(METRICS_DIR_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{METRICS_DIR_PREFIX}{os.getpid()}-", dir=base))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process
        return True
    return True


def _worker_exited(_server, worker) -> None:  # type: ignore[no-untyped-def]
    # In the gunicorn master: the worker's gauges stop counting ("live" modes); its counters
    # and histograms keep adding up, as Prometheus expects of counters.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


_master_engine = None   # the preloaded app's engine (in the master and, inherited, each worker)


def prepare_master(app) -> None:  # type: ignore[no-untyped-def]
    """In the gunicorn master, before any worker is forked: map the impact graph (its snapshot,
    or load it from the database and write one) so the workers inherit it, then close every
    database connection (a connection must not be shared across a fork).  A database that
    cannot be read yet (not migrated, down) is no reason not to start: each worker then loads
    the graph at its first blast radius, as without a preload."""
    global _master_engine
    engine = _master_engine = app.extensions["planb_engine"]
    from inventory.impact import graph as impact_graph

    # The master answers no request: its warm-up query is not one that /metrics counts (its
    # graph load is: a load, even if no worker has to do one after it).
    observers = {event: list(hooks) for event, hooks in impact_graph.OBSERVERS.items() if event != "rebuild"}
    for event in observers:
        impact_graph.OBSERVERS[event].clear()
    try:
        from inventory.impact import snapshot

        loaded = impact_graph.get_graph(engine)
        if loaded.origin in ("database", "parts") and loaded.n >= snapshot.MIN_ASSETS and snapshot.directory():
            # The load wrote a snapshot: map that instead, so the master holds file pages
            # (shared with the page cache) rather than a private copy of every array.
            impact_graph.clear_cache()
            del loaded
            loaded = impact_graph.get_graph(engine)
        _warm_up_query(engine, loaded)
        if not impact_graph.settle():
            log.warning("a background graph load was still running when the workers started")
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("the impact graph was not loaded before the workers started: %s", exc)
    finally:
        engine.dispose()
        for event, hooks in observers.items():
            impact_graph.OBSERVERS[event][:] = hooks
    for name in WORKER_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:   # an optional dependency that is not installed
            pass
    gc.collect()
    tune_malloc()


# Modules each worker would otherwise import for itself after the fork (found by comparing a
# worker's sys.modules after it answered with the master's): the webhook delivery thread's
# HTTP client and secret box, the graph's background rebuild.  Imported once in the master,
# their code and objects are shared; imported in a worker, they are private to each.
WORKER_IMPORTS = ("requests", "cryptography.fernet", "cryptography.hazmat.primitives.hashes",
                  "cryptography.hazmat.primitives.kdf.hkdf", "concurrent.futures", "encodings.idna",
                  "http.cookies")


# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune_malloc() -> bool:
    """Make glibc's malloc give freed memory back (inherited by the workers forked next).

    A blast radius allocates and frees arrays of megabytes.  By default glibc raises its
    mmap threshold after the first such block is freed (up to 32 MB), so later ones come
    from the heap and stay resident once freed, in one arena per request thread: tens of
    MB per worker that hold nothing (measured with benchmarks/bench_startup.py --serve).
    A fixed threshold keeps large blocks in mappings of their own, returned at free(),
    and two arenas bound what the threads keep.  Does nothing off glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, 256 * 1024), (_M_TRIM_THRESHOLD, 1024 * 1024), (_M_ARENA_MAX, 2)))
    libc.malloc_trim(0)
    return ok


def _warm_up_query(engine, graph) -> None:  # type: ignore[no-untyped-def]
    """One blast radius in the master (the vendor installed on the most assets, a page of
    hits): what every worker's first query would otherwise build for itself — the graph's
    lazily derived arrays, the kernel's specialisations for the snapshot's arrays, compiled
    SQL — is then built once and shared."""
    from inventory.db import read_session
    from inventory.impact import blast_radius

    def installed(vendor_id: int) -> int:
        return sum(len(idx) for product in graph.vendor_products.get(vendor_id, ())
                   for _version, idx in graph.installs.get(product, ()))

    if not graph.vendors:
        return
    top = max(graph.vendors, key=installed)
    with read_session(engine) as db:
        blast_radius(db, {"vendor": graph.vendors[top].name}).to_dict(limit=10, seeds_limit=10)


def _before_fork(_server, _worker) -> None:  # type: ignore[no-untyped-def]
    # Move everything the master built into the permanent generation: the workers' garbage
    # collector never walks those objects, so it never writes to (and so never copies) the
    # pages they live on.  Cheap after the first fork (little is new).
    gc.freeze()


def _after_fork(_server, _worker) -> None:  # type: ignore[no-untyped-def]
    # In the new worker: a fresh connection pool (the master's was emptied before the fork;
    # close=False leaves alone any connection the master might still hold).
    if _master_engine is not None:
        _master_engine.dispose(close=False)
