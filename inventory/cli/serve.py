"""``planb serve``: run the web app (gunicorn when available, else Flask's server)."""
from __future__ import annotations

import click

from inventory import config


@click.command()
@click.option("--host", default=None, show_default="PLANB_HOST, else 127.0.0.1")
@click.option("--port", type=click.IntRange(1, 65535), default=None, show_default="PLANB_PORT, else 8080")
@click.option("--workers", type=int, default=2, show_default=True, help="gunicorn worker processes.")
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Serve the dashboard and API (migrations must be current: 'planb db upgrade')."""
    # Every PLANB_ setting is checked here, in the one process, before any worker
    # starts: a bad one stops 'planb serve' with its message (config.ConfigError).
    settings = config.load()
    serve_app(host or settings["HOST"], port or settings["PORT"], workers)


def serve_app(host: str, port: int, workers: int = 2) -> None:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address (PLANB_HOST=::)
    click.echo(f"Plan B is serving at http://{address}/  (Ctrl-C to stop)")
    try:
        from gunicorn.app.wsgiapp import WSGIApplication
    except ImportError:  # pragma: no cover - gunicorn is a dependency; Windows lacks it
        from inventory import create_app
        create_app().run(host=host, port=port)
        return

    class _App(WSGIApplication):
        def __init__(self) -> None:
            # Threaded workers: a slow blast-radius request must not queue the asset list
            # behind it (measured in benchmarks/load_test.py).
            self._options = {"bind": address, "workers": workers, "worker_class": "gthread",
                             "threads": 4, "accesslog": "-", "timeout": 120}
            super().__init__()

        def load_config(self) -> None:
            for key, value in self._options.items():
                self.cfg.set(key, value)

        def load(self):  # type: ignore[no-untyped-def]
            from inventory import create_app_or_halt

            return create_app_or_halt()

    _App().run()
