"""/readyz: database, migrations and the impact graph; public, cheap once ready, no details leaked."""
from __future__ import annotations

import threading
import time

import pytest

from inventory import migrate
from inventory.db import write_session
from inventory.impact import graph as graph_module
from inventory.models import Asset
from inventory.web import health
from tests.conftest import make_test_app

READY = {"status": "ok", "checks": {"app": "ok", "database": "ok", "migrations": "ok", "graph": "ok"}}


def wait_until_ready(client, timeout: float = 60) -> dict:  # type: ignore[no-untyped-def]
    """Poll /readyz as a kubelet would: 'loading' (503) until the graph is there, then 200."""
    end = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == 200 or time.monotonic() > end:
            break
        assert response.status_code == 503 and response.get_json()["checks"]["graph"] == "loading"
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_ready_once_the_graph_is_loaded_and_public(client):
    # A small database loads within the probe's one-second wait on a quiet machine; a busy one
    # may answer "loading" first.
    assert wait_until_ready(client) == READY


def test_once_ready_a_probe_loads_nothing_even_after_inventory_changes(app, client, monkeypatch):
    wait_until_ready(client)
    with write_session(app.extensions["planb_engine"]) as db:
        db.add(Asset(natural_key="test:after", name="after", kind="vm"))
    loads = []
    monkeypatch.setattr(graph_module.Graph, "load_from", classmethod(lambda cls, *a, **k: loads.append(a)))
    for _ in range(3):
        assert client.get("/readyz").status_code == 200
    assert loads == []   # newer inventory is loaded by the queries that need it, not by probes


def test_loading_answers_503_until_the_graph_is_there(client, monkeypatch):
    release = threading.Event()
    real_get_graph = graph_module.get_graph

    def slow_get_graph(db):  # type: ignore[no-untyped-def]
        release.wait(30)
        return real_get_graph(db)

    monkeypatch.setattr(graph_module, "get_graph", slow_get_graph)
    monkeypatch.setattr(health, "GRAPH_WAIT_SECONDS", 0.05)
    for _ in range(2):   # the second probe waits on the same load, it does not start another
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["graph"] == "loading"
        assert response.get_json()["status"] == "unhealthy"
    release.set()
    assert wait_until_ready(client) == READY


def test_a_failing_graph_load_is_unavailable_without_details_and_retried(client, monkeypatch, caplog):
    calls = []

    def broken(db):  # type: ignore[no-untyped-def]
        calls.append(db)
        raise RuntimeError("cannot read db.internal.example as planb-secret-user")

    monkeypatch.setattr(graph_module, "get_graph", broken)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["graph"] == "unavailable"
    assert "db.internal" not in response.get_data(as_text=True)
    assert "loading the impact graph failed" in caplog.text   # the cause is in the log instead
    client.get("/readyz")
    assert len(calls) == 2   # the next probe tries again
    monkeypatch.undo()
    assert wait_until_ready(client) == READY


def test_pending_migrations_are_not_ready_and_no_graph_is_loaded(empty_sqlite_url, tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(graph_module, "get_graph", lambda db: loads.append(db))
    migrate.upgrade(empty_sqlite_url, "head")
    migrate.downgrade(empty_sqlite_url, "-1")
    app = make_test_app(empty_sqlite_url, tmp_path / "i")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"app": "ok", "database": "ok", "migrations": "pending",
                                             "graph": "unknown"}
    assert loads == []
    app.extensions["planb_engine"].dispose()


def test_an_unreachable_database_is_not_ready_and_not_leaked(tmp_path):
    url = "postgresql+psycopg://planb:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"
    app = make_test_app(url, tmp_path / "i")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "unreachable"
    assert "s3cret" not in response.get_data(as_text=True)
    app.extensions["planb_engine"].dispose()


@pytest.mark.postgres
def test_ready_on_postgresql(pg_url, tmp_path):
    app = make_test_app(pg_url, tmp_path / "i")
    assert wait_until_ready(app.test_client()) == READY
    app.extensions["planb_engine"].dispose()
