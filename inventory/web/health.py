"""Probes (public, no details leaked).

* ``/healthz`` (liveness): the app is up, the database reachable, migrations current.
* ``/readyz`` (readiness): the same, and this process holds the impact graph, so a
  blast-radius request it gets is answered without first loading 100k assets.  The
  first call starts loading the graph in the background and answers 503 ``loading``
  until it is there; once loaded, a call costs the two small queries of ``/healthz``
  and no graph work at all (a newer inventory is loaded by the queries that need it).

200 ``{"status": "ok", "checks": {...}}`` when every check holds; 503 otherwise,
saying which check failed ("unreachable", "pending", "loading", "unavailable") but
never the error text (it may name hosts or users); the error itself goes to the log.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, jsonify

from inventory import migrate
from inventory.app_db import get_engine

bp = Blueprint("health", __name__)
log = logging.getLogger("planb.health")

# How long one /readyz call waits for a graph load it started (probes time out after a
# few seconds; the load goes on in the background either way).
GRAPH_WAIT_SECONDS = 1.0

_loads: dict[str, "Future[Any]"] = {}
_loads_lock = threading.Lock()


@lru_cache(maxsize=1)
def _head_revision() -> str | None:
    # The migration scripts do not change while the process runs; read them once.
    return migrate.head_revision()


def _database_checks() -> tuple[dict[str, str], bool]:
    checks = {"app": "ok", "database": "ok", "migrations": "ok"}
    try:
        engine = get_engine()
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        if migrate.current_revision(engine) != _head_revision():
            checks["migrations"] = "pending"
    except Exception:
        log.exception("health check: database unreachable")
        checks["database"] = "unreachable"
        checks["migrations"] = "unknown"
    return checks, all(value == "ok" for value in checks.values())


def _answer(checks: dict[str, str]):  # type: ignore[no-untyped-def]
    ok = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if ok else "unhealthy", checks=checks), 200 if ok else 503


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    checks, _ok = _database_checks()
    return _answer(checks)


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    checks, ok = _database_checks()
    checks["graph"] = _graph_state() if ok else "unknown"
    return _answer(checks)


def _graph_state() -> str:
    """'ok' when this process holds a graph of the database; otherwise start (or check on)
    a background load and say 'loading', or 'unavailable' when the last load failed."""
    from inventory.impact.graph import peek

    engine = get_engine()
    if peek(engine) is not None:
        return "ok"
    key = engine.url.render_as_string(hide_password=True)
    with _loads_lock:
        load = _loads.get(key)
        if load is None or (load.done() and load.exception() is not None):
            load = _loads[key] = Future()
            threading.Thread(target=_load, args=(engine, load), name="planb-readyz-graph",
                             daemon=True).start()
    try:
        load.result(timeout=GRAPH_WAIT_SECONDS)
    except TimeoutError:
        return "loading"
    except Exception:  # logged by _load
        with _loads_lock:
            if _loads.get(key) is load:
                del _loads[key]   # the next probe tries again
        return "unavailable"
    return "ok" if peek(engine) is not None else "unavailable"


def _load(engine: Any, load: "Future[Any]") -> None:
    from inventory.impact.graph import get_graph

    try:
        get_graph(engine)
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting probe
        log.exception("readiness: loading the impact graph failed")
        load.set_exception(exc)
    else:
        load.set_result(None)
