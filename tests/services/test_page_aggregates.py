"""The dashboard's estate-wide figures read from the impact engine's graph equal a from-scratch
computation from the database, after any sequence of writes, on SQLite and PostgreSQL.

The risk, plans, update-testing and vendor pages take their aggregates from the engine's
graph (``inventory.services.estate_graph``), which is patched from the change log after a
write.  Random writes go through every write path of ``tests/impact/test_incremental.py``
(ORM, plain SQL, estate import, a collector's ingest including the large-insert path);
after each one every figure is computed both ways and compared.
"""
from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Iterator

import numpy as np
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.db import make_engine
from inventory.impact import clear_cache
from inventory.models import Asset, Product, UpdateTest, Vendor, VendorUpdate
from inventory.services import cache, estate_graph, plans, risk, updates, vendor_summary
from tests.impact.test_incremental import NOW, Write, Writer, reset, writes

TODAY = date(2026, 12, 1)


def add_update_records(engine: sa.Engine) -> None:
    """Update tests are not in the graph: a tested, a failed and a pending version."""
    with so.Session(engine) as db, db.begin():
        agent = db.scalar(sa.select(Product).where(Product.name == "Agent"))
        scanner = db.scalar(sa.select(Product).where(Product.name == "Scanner"))
        agent.vendor_pushes_updates = True
        tested = VendorUpdate(product_id=agent.id, version="7.11.2", kind="patch")
        failed = VendorUpdate(product_id=agent.id, version="7.10.1", kind="patch", vendor_pushed=True)
        pending = VendorUpdate(product_id=scanner.id, version="3", kind="patch")
        db.add_all([tested, failed, pending])
        db.flush()
        db.add_all([UpdateTest(update_id=tested.id, ring="canary", status="passed"),
                    UpdateTest(update_id=failed.id, ring="staging", status="failed"),
                    UpdateTest(update_id=pending.id, ring="canary", status="pending")])


def _arrays(a: plans.EstateArrays) -> dict[str, Any]:
    """The arrays as plain values; edges as a sorted multiset (their order carries no meaning)."""
    edges = sorted(zip(a.src.tolist(), a.dst.tolist(), a.member.tolist(), a.hard.tolist()))
    return {"ids": a.ids.tolist(), "names": list(a.names), "keys": list(a.keys), "kinds": a.kinds.tolist(),
            "crit": a.crit.tolist(), "provider": a.provider.tolist(), "min_up": a.min_up.tolist(),
            "is_service": a.is_service.tolist(), "edges": edges,
            "forward_all": a.forward("all").toarray().tolist(), "forward_hard": a.forward("hard").toarray().tolist()}


def figures(engine: sa.Engine) -> dict[str, Any]:
    """Every aggregate the four pages show, computed afresh (caches emptied first)."""
    cache.clear()
    with so.Session(engine) as db:
        vendor_ids = sorted(db.scalars(sa.select(Vendor.id)))
        out: dict[str, Any] = {
            "graph": estate_graph.session_graph(db) is not None,
            "arrays": _arrays(plans.estate_arrays(db)),
            # Positions within one route carry no order (the database returns rows in any order).
            "reach": {pid: [(via, sorted(pos.tolist())) for via, pos in routes]
                      for pid, routes in plans.plan_reach(db).routes.items()},
            "coverage": [plans.coverage(db, now=NOW, criticality=c) for c in ("critical", "high")],
            "rto": plans.rto_check(db),
            "by_product": updates.exposure_by_product(db),
            "summary": updates.untested_summary(db),
            "exposure": [updates.untested_exposure(db, criticality=c, limit=limit)
                         for c in (None, "high", "critical", "medium") for limit in (1, 3, 200)]
            + [updates.untested_exposure(db, vendor_id=v, limit=5) for v in vendor_ids]
            + [updates.untested_exposure(db, tracked_only=True, limit=4),
               updates.untested_exposure(db, critical_only=True, limit=2)],
            "installed": updates.installed_counts(db, updates.list_updates(db)),
            "pushed": updates.vendor_pushed_products(db),
            "direct": vendor_summary._direct_use_counts(db),
            "critical_total": vendor_summary.critical_asset_total(db),
            "products": {v: vendor_summary.product_rows(db, v) for v in vendor_ids},
            "untested_vendor": {v: vendor_summary.untested_for_vendor(db, v, 16) for v in vendor_ids},
            "concentration": risk.vendor_concentration(db),
            "update_stats": risk.update_stats(db),
            "risk": [{k: v for k, v in row.items() if k != "blast_totals"} for row in risk.risk_table(db, today=TODAY)],
        }
    return out


def from_scratch(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The same figures from the database alone (the graph path switched off)."""
    with monkeypatch.context() as m:
        m.setattr(estate_graph, "session_graph", lambda db: None)
        return figures(engine)


def check(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = figures(engine)
    assert fast.pop("graph"), "the pages read the engine's graph when it is current"
    slow = from_scratch(engine, monkeypatch)
    assert not slow.pop("graph")
    for key in fast:
        assert fast[key] == slow[key], key


@pytest.fixture
def pages_engine(any_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    monkeypatch.setenv("PLANB_GRAPH_SNAPSHOT_DIR", "off")
    engine = make_engine(any_db_url)
    yield engine
    engine.dispose()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(sequence=st.lists(writes, min_size=1, max_size=6))
def test_page_figures_from_the_graph_equal_a_fresh_computation(pages_engine: sa.Engine,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               sequence: list[Write]) -> None:
    clear_cache()
    reset(pages_engine)
    with so.Session(pages_engine) as db, db.begin():
        db.execute(sa.delete(UpdateTest))
        db.execute(sa.delete(VendorUpdate))
    add_update_records(pages_engine)
    writer = Writer(pages_engine, monkeypatch)
    check(pages_engine, monkeypatch)
    for w in sequence:
        writer.apply(w)
        check(pages_engine, monkeypatch)


def test_every_write_path_keeps_the_figures_equal(pages_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kind of write once, in a fixed order (the random test may not draw them all)."""
    clear_cache()
    reset(pages_engine)
    with so.Session(pages_engine) as db, db.begin():
        db.execute(sa.delete(UpdateTest))
        db.execute(sa.delete(VendorUpdate))
    add_update_records(pages_engine)
    writer = Writer(pages_engine, monkeypatch)
    for n, what in enumerate(("asset_new", "asset_set", "retire", "rename", "dep_add", "dep_set", "dep_delete",
                              "install_set", "install_delete", "plan", "import", "collect", "unretire",
                              "asset_delete", "collect_bulk")):
        writer.apply(Write(what, ("orm", "sql")[n % 2], a=n, b=n + 1, value=n + 2))
        check(pages_engine, monkeypatch)


def test_a_session_with_its_own_writes_reads_the_database(pages_engine: sa.Engine) -> None:
    """Uncommitted writes are not in the graph: a session holding some computes from the
    database, so it sees them."""
    clear_cache()
    reset(pages_engine)
    cache.clear()
    with so.Session(pages_engine) as db:
        assert estate_graph.session_graph(db) is not None
        host = db.scalar(sa.select(Asset).where(Asset.name == "h0"))
        before = vendor_summary.critical_asset_total(db)
        host.criticality = "critical"
        db.flush()
        assert estate_graph.session_graph(db) is None
        assert vendor_summary.critical_asset_total(db) == before + 1
        db.rollback()
        assert estate_graph.session_graph(db) is not None
        assert vendor_summary.critical_asset_total(db) == before


def test_estate_arrays_match_on_a_graph_with_tombstones(pages_engine: sa.Engine,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A deleted asset leaves a tombstone in the patched graph: never in the pages' arrays."""
    clear_cache()
    reset(pages_engine)
    writer = Writer(pages_engine, monkeypatch)
    check(pages_engine, monkeypatch)
    writer.apply(Write("asset_delete", "sql", a=2, b=0, value=0))
    with so.Session(pages_engine) as db:
        graph = estate_graph.session_graph(db)
        assert graph is not None and graph.origin == "patch" and not graph.present.all()
        arrays = plans.estate_arrays(db)
        assert np.isin(arrays.ids, graph.ids[~graph.present]).sum() == 0
    check(pages_engine, monkeypatch)


# ---------------------------------------------------------------- figures shared between processes

def test_a_new_process_reads_the_figures_another_computed(pages_engine: sa.Engine,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The page figures are computed once per inventory version: a process that starts (here:
    every cache dropped) reads them from ``page_figures`` and equals a fresh computation."""
    from inventory.models import PageFigure

    clear_cache()
    reset(pages_engine)
    add_update_records(pages_engine)

    def page_figures() -> dict[str, Any]:
        cache.clear()
        with so.Session(pages_engine) as db:
            return {"risk": risk.cached_risk_table(db, today=TODAY),
                    "risk_page": risk.cached_risk_table(db, today=TODAY, blast_totals=False),
                    "coverage": plans.coverage(db, now=NOW), "rto": plans.rto_check(db),
                    "rto_page": plans.rto_page_rows(db, 2),
                    "summary": updates.cached_view(db, "summary", lambda: updates.untested_summary(db))}

    computed = page_figures()
    with so.Session(pages_engine) as db:
        stored = {name: version for name, version in db.execute(sa.select(PageFigure.name,
                                                                          PageFigure.inventory_version))}
        version = estate_graph.session_graph(db).version
    assert stored == {"risk_table": version, "risk_table:page": version, "plans:coverage:critical": version,
                      "plans:rto:all": version, "plans:rto-page:2": version, "updates:summary": version}

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("computed again instead of read")

    clear_cache()   # a new process: a graph of its own, nothing in memory
    with monkeypatch.context() as m:
        for module, name in ((risk, "risk_table"), (plans, "_coverage"), (plans, "_rto_check"),
                             (updates, "untested_summary")):
            m.setattr(module, name, refuse)
        assert page_figures() == computed

    # After a write the stored figures are for an older version: computed again, and equal to
    # what a computation from the database alone gives.
    Writer(pages_engine, monkeypatch).apply(Write("asset_set", "sql", a=1, b=2, value=3))
    clear_cache()
    after = page_figures()
    with monkeypatch.context() as m:
        m.setattr(estate_graph, "session_graph", lambda db: None)
        assert page_figures() == after
    with so.Session(pages_engine) as db:
        assert set(db.scalars(sa.select(PageFigure.inventory_version))) == {estate_graph.session_graph(db).version}


def test_a_figure_that_would_not_read_back_the_same_is_not_stored(pages_engine: sa.Engine) -> None:
    from inventory.models import PageFigure
    from inventory.services.shared_figures import shared

    clear_cache()
    reset(pages_engine)
    with so.Session(pages_engine) as db:
        value = shared(db, "test:tuple", "m", lambda: {"pair": (1, 2)})
        assert value == {"pair": (1, 2)}
        db.rollback()
        assert db.scalar(sa.select(PageFigure.name).where(PageFigure.name == "test:tuple")) is None
        assert shared(db, "test:list", "m", lambda: {"pair": [1, 2]}) == {"pair": [1, 2]}
        db.rollback()   # stored on a connection of its own: a new transaction sees it
        assert db.scalar(sa.select(PageFigure.mark).where(PageFigure.name == "test:list")) == "m"
        clear_cache()
        # Another mark (a plan's RTO edited, another day): not read back.
        assert shared(db, "test:list", "n", lambda: {"pair": [3]}) == {"pair": [3]}


def test_a_session_that_read_a_figure_can_still_write(pages_engine: sa.Engine) -> None:
    """The figure is stored once the reading transaction has ended: on SQLite a session that
    read and then writes could not commit after another connection wrote in between."""
    from inventory.models import ContingencyPlan, PageFigure

    clear_cache()
    reset(pages_engine)
    cache.clear()
    with so.Session(pages_engine) as db:
        plans.coverage(db, now=NOW)
        plan = db.scalar(sa.select(ContingencyPlan).where(ContingencyPlan.name == "Acme runbook"))
        plan.review_interval_days = 45
        db.commit()
        assert db.scalar(sa.select(PageFigure.name).where(PageFigure.name == "plans:coverage:critical"))
