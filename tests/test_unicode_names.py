"""Case-insensitive name lookups fold all of Unicode on both databases (SQLite's own
lower() folds ASCII only)."""
from __future__ import annotations

import sqlalchemy as sa

from inventory.db import make_engine, write_session
from inventory.models import ContingencyPlan, Vendor
from inventory.services import plans as plan_svc
from inventory.services import updates as update_svc


def test_names_outside_ascii_are_found_in_any_case(any_db_url: str) -> None:
    engine = make_engine(any_db_url)
    try:
        with write_session(engine) as db:
            db.add_all([Vendor(name="Яндекс"), Vendor(name="Ünïcode AG"),
                        ContingencyPlan(name="Резервный план", review_interval_days=90)])
        with write_session(engine) as db:
            assert update_svc.find_vendor(db, "яндекс").name == "Яндекс"
            assert update_svc.find_vendor(db, "ЯНДЕКС").name == "Яндекс"
            assert update_svc.find_vendor(db, "ünïcode ag").name == "Ünïcode AG"
            assert plan_svc.find_plan(db, "резервный ПЛАН").name == "Резервный план"
            # lower() of NULL stays NULL, of a number stays a number
            assert db.scalar(sa.select(sa.func.lower(None))) is None
    finally:
        engine.dispose()
