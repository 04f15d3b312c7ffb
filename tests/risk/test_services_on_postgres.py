"""The update/plan/risk queries on the demo estate give the same answers on PostgreSQL as on SQLite.

PostgreSQL is stricter about GROUP BY and correlated subqueries than SQLite, so
every aggregate query runs on both.
"""
from __future__ import annotations

import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.estate.demo import load_demo
from inventory.services import plans as plans_svc
from inventory.services import updates as updates_svc


def _answers(url: str) -> dict:
    engine = make_engine(url)
    try:
        with so.Session(engine) as db:
            load_demo(db, actor="tests")
            db.commit()
            by_product = sorted((r["vendor"], r["product"], r["version"] or "", r["installations"],
                                 r["critical"], r["tested"]) for r in updates_svc.exposure_by_product(db))
            untested = sorted((r["natural_key"], r["product"], r["version"] or "")
                              for r in updates_svc.untested_exposure(db))
            coverage = plans_svc.coverage(db)
            covered = {k: sorted(x["natural_key"] for x in coverage[k])
                       for k in ("covered_current", "stale_only", "uncovered")}
            return {"by_product": by_product, "untested": untested, "coverage": covered}
    finally:
        engine.dispose()


def test_exposure_and_coverage_agree_across_backends(sqlite_url, pg_url):
    on_sqlite = _answers(sqlite_url)
    on_postgres = _answers(pg_url)
    assert on_sqlite["by_product"], "the demo estate has installed products"
    assert any(not row[-1] for row in on_sqlite["by_product"]), "some demo versions are untested"
    assert on_postgres == on_sqlite
