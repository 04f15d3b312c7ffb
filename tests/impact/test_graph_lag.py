"""While one request rebuilds the graph, others answer from the previous one and say so."""
from __future__ import annotations

import threading
import time

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.estate.importer import import_estate
from inventory.impact import blast_radius, parse_scope
from inventory.impact import graph as graph_module


def _host(key: str) -> dict:
    return {"key": key, "name": key, "kind": "vm", "os": {"family": "windows"},
            "software": [{"vendor": "CrowdStrike", "product": "Falcon Sensor", "version": "7.11.1"}]}


def _import(engine: sa.Engine, assets: list[dict]) -> None:
    document = {"version": 1, "vendors": [{"name": "CrowdStrike", "products": [{"name": "Falcon Sensor"}]}],
                "assets": assets}
    with so.Session(engine) as db:
        import_estate(db, document, source_name="lag.yaml", actor="test")
        db.commit()


def _hit_keys(engine: sa.Engine) -> tuple[set[str], dict]:
    with so.Session(engine) as db:
        result = blast_radius(db, parse_scope(db, {"vendor": "CrowdStrike"}))
        return {h.natural_key for h in result.hits}, result.confidence


def test_answers_from_the_previous_graph_while_a_rebuild_runs(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        _import(engine, [_host("host:a")])
        hits, confidence = _hit_keys(engine)
        assert hits == {"host:a"} and confidence["graph_lag"] is None

        _import(engine, [_host("host:a"), _host("host:b")])
        lock = graph_module._build_locks[sa.make_url(sqlite_url).render_as_string(hide_password=False)]
        assert lock.acquire(blocking=False)  # another request is rebuilding
        try:
            hits, confidence = _hit_keys(engine)
        finally:
            lock.release()
        assert hits == {"host:a"}, "served from the previous graph, not blocked behind the rebuild"
        assert confidence["graph_lag"]["graph_version"] < confidence["graph_lag"]["inventory_version"]
        assert any("being loaded" in note for note in confidence["notes"])

        hits, confidence = _hit_keys(engine)  # nobody rebuilding: this request rebuilds
        assert hits == {"host:a", "host:b"} and confidence["graph_lag"] is None
    finally:
        engine.dispose()


def test_a_graph_older_than_the_limit_is_never_served(sqlite_url, monkeypatch):
    engine = make_engine(sqlite_url)
    try:
        _import(engine, [_host("host:a")])
        _hit_keys(engine)
        _import(engine, [_host("host:a"), _host("host:b")])
        monkeypatch.setattr(graph_module, "MAX_STALE_SECONDS", 0.0)
        lock = graph_module._build_locks[sa.make_url(sqlite_url).render_as_string(hide_password=False)]
        held = threading.Event()

        def rebuild_elsewhere() -> None:
            with lock:
                held.set()
                time.sleep(0.3)

        other = threading.Thread(target=rebuild_elsewhere)
        other.start()
        held.wait(5)
        hits, confidence = _hit_keys(engine)  # waits for the other rebuild, then answers fresh
        other.join()
        assert hits == {"host:a", "host:b"} and confidence["graph_lag"] is None
    finally:
        engine.dispose()
