"""``planb serve``: run the web app (gunicorn when available, else Flask's server)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import click

from inventory import config

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
            self._options = {"bind": address, "workers": workers, "worker_class": "gthread",
                             "threads": 4, "accesslog": "-", "timeout": 120,
                             "child_exit": _worker_exited}
            super().__init__()

        def load_config(self) -> None:
            for key, value in self._options.items():
                self.cfg.set(key, value)

        def load(self):  # type: ignore[no-untyped-def]
            from inventory import create_app_or_halt

            return create_app_or_halt()

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
