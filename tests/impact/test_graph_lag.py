"""While one request rebuilds the graph, others answer from the previous one and say so."""
from __future__ import annotations

import threading
import time

import pytest
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


def test_a_slow_rebuild_is_waited_for_only_a_bounded_time(sqlite_url, monkeypatch):
    """The request that finds the graph stale starts the rebuild but answers from the previous
    graph once ``REBUILD_WAIT_SECONDS`` have passed; the rebuild finishes in the background
    and later requests get the fresh graph."""
    engine = make_engine(sqlite_url)
    try:
        _import(engine, [_host("host:a")])
        _hit_keys(engine)
        _import(engine, [_host("host:a"), _host("host:b")])
        original = graph_module.Graph.load_from.__func__
        finished = threading.Event()

        def slow_load(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(0.6)            # a rebuild on a machine busy with collectors
            try:
                return original(cls, *args, **kwargs)
            finally:
                finished.set()

        monkeypatch.setattr(graph_module.Graph, "load_from", classmethod(slow_load))
        monkeypatch.setattr(graph_module, "REBUILD_WAIT_SECONDS", 0.05)
        start = time.monotonic()
        hits, confidence = _hit_keys(engine)
        assert time.monotonic() - start < 0.5, "did not wait for the whole rebuild"
        assert hits == {"host:a"} and confidence["graph_lag"] is not None
        assert any("being loaded" in note for note in confidence["notes"])

        assert finished.wait(10)
        lock = graph_module._build_locks[sa.make_url(sqlite_url).render_as_string(hide_password=False)]
        with lock:   # the background rebuild has stored its graph and let go
            pass
        hits, confidence = _hit_keys(engine)
        assert hits == {"host:a", "host:b"} and confidence["graph_lag"] is None
    finally:
        engine.dispose()


def test_a_failed_background_rebuild_fails_the_request_that_waits_for_it(sqlite_url, monkeypatch, caplog):
    engine = make_engine(sqlite_url)
    try:
        _import(engine, [_host("host:a")])
        _hit_keys(engine)
        _import(engine, [_host("host:a"), _host("host:b")])

        def broken_load(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("database went away")

        monkeypatch.setattr(graph_module.Graph, "load_from", classmethod(broken_load))
        with pytest.raises(RuntimeError, match="went away"):
            _hit_keys(engine)
        assert any("rebuilding the impact graph failed" in r.getMessage() for r in caplog.records)
    finally:
        engine.dispose()


def test_staleness_counts_from_when_the_graph_was_last_current_not_when_it_was_loaded(
        sqlite_url, monkeypatch):
    """A graph loaded long ago but confirmed current by every query since is only as far
    behind as the time since that last confirmation: it may still be served."""
    engine = make_engine(sqlite_url)
    try:
        _import(engine, [_host("host:a")])
        _hit_keys(engine)
        key = sa.make_url(sqlite_url).render_as_string(hide_password=False)
        graph = graph_module._cache[key]
        graph.confirmed_at -= 3600          # loaded an hour ago ...
        _hit_keys(engine)                   # ... and confirmed current just now
        assert time.monotonic() - graph.confirmed_at < 5
        _import(engine, [_host("host:a"), _host("host:b")])
        lock = graph_module._build_locks[key]
        with lock:                          # another request is rebuilding
            hits, confidence = _hit_keys(engine)
        assert hits == {"host:a"} and confidence["graph_lag"]["age_seconds"] < 5
    finally:
        engine.dispose()


@pytest.mark.parametrize("raw, expected", [(None, 2.0), ("", 2.0), ("0", 0.0), ("0.5", 0.5), ("30", 30.0)])
def test_rebuild_wait_setting(raw, expected):
    from inventory import config
    environ = {} if raw is None else {"PLANB_IMPACT_REBUILD_WAIT": raw}
    assert config.get("IMPACT_REBUILD_WAIT", environ) == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "1e9"])
def test_a_bad_rebuild_wait_setting_is_refused_clearly(raw):
    from inventory import config
    with pytest.raises(SystemExit, match="PLANB_IMPACT_REBUILD_WAIT: .*; expected a number of seconds from 0"):
        config.get("IMPACT_REBUILD_WAIT", {"PLANB_IMPACT_REBUILD_WAIT": raw})
