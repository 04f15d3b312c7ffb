"""The graph cache: reused while nothing changed, rebuilt after a write through any path."""
from __future__ import annotations

import importlib

import pytest
import sqlalchemy as sa

from inventory.impact import blast_radius, get_graph
from inventory.models import Asset
from tests.impact.conftest import Estate

triggers = importlib.import_module("migrations.versions.0002_inventory_version_triggers")


def version(e: Estate) -> int:
    with e.engine.connect() as conn:
        return conn.execute(sa.text("SELECT version FROM inventory_version WHERE id = 1")).scalar_one()


def small(e: Estate) -> Estate:
    e.vendor("Acme")
    e.asset("h1")
    e.asset("app", kind="application", os=None)
    e.dep("app", "h1")
    e.install("h1", "Acme", "Agent", "1")
    return e.commit()


def test_triggers_exist_at_head(any_estate: Estate) -> None:
    with any_estate.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            names = set(conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
            expected = {n for t in triggers.WATCHED for n in triggers.trigger_names(t)[:3]}
        else:
            names = set(conn.execute(sa.text(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")).scalars())
            expected = {n for t in triggers.WATCHED for n in (triggers.trigger_names(t)[0],
                                                              triggers.trigger_names(t)[3])}
    assert expected <= names


def test_writes_bump_the_version_only_for_what_the_engine_reads(any_estate: Estate) -> None:
    e = small(any_estate)
    v0 = version(e)
    with e.engine.begin() as conn:
        conn.execute(sa.text("UPDATE assets SET last_seen = last_seen"))      # collector refresh
    assert version(e) == v0
    with e.engine.begin() as conn:
        conn.execute(sa.text("UPDATE assets SET region = 'x'"))
        conn.execute(sa.text("UPDATE assets SET region = 'y'"))
    v1 = version(e)
    assert v1 > v0
    if e.engine.dialect.name == "postgresql":
        assert v1 == v0 + 1          # deferred to commit, once per transaction
    with e.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM installations"))
    assert version(e) > v1


def test_cache_is_reused_until_any_write(any_estate: Estate) -> None:
    e = small(any_estate)
    g1 = get_graph(e.db)
    assert get_graph(e.db) is g1
    assert {h.natural_key for h in blast_radius(e.db, {"vendor": "Acme"}).hits} == {"h1", "app"}
    # A write through plain SQL on another connection (as a collector process would).
    with e.engine.begin() as conn:
        h1 = conn.execute(sa.text("SELECT id FROM assets WHERE natural_key = 'h1'")).scalar_one()
        conn.execute(sa.text("INSERT INTO assets (natural_key, name, kind, criticality, tags, attributes, "
                             "provenance, source, first_seen, last_seen, created_at, updated_at) VALUES "
                             "('svc', 'svc', 'service', 'high', '{}', '{}', '{}', 'test', "
                             "'2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000', "
                             "'2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000')"))
        svc = conn.execute(sa.text("SELECT id FROM assets WHERE natural_key = 'svc'")).scalar_one()
        conn.execute(sa.text("INSERT INTO dependencies (dependent_id, dependency_id, kind, strength, source, "
                             "first_seen, last_seen) VALUES (:a, :b, 'calls', 'soft', 'test', "
                             "'2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000')"),
                     {"a": svc, "b": h1})
    g2 = get_graph(e.db)
    assert g2 is not g1
    hits = {h.natural_key: h.status for h in blast_radius(e.db, {"vendor": "Acme"}).hits}
    assert hits == {"h1": "down", "app": "down", "svc": "degraded"}
    # And through the ORM.
    asset = e.db.scalar(sa.select(Asset).where(Asset.natural_key == "app"))
    asset.retired_at = asset.first_seen
    e.commit()
    assert {h.natural_key for h in blast_radius(e.db, {"vendor": "Acme"}).hits} == {"h1", "svc"}


def test_uncommitted_writes_never_reach_the_cache(estate: Estate) -> None:
    e = small(estate)
    e.asset("draft")
    e.dep("draft", "h1")
    e.db.flush()                                    # written, not committed
    assert "draft" not in {h.natural_key for h in blast_radius(e.db, {"vendor": "Acme"}).hits}
    e.db.rollback()
    assert {h.natural_key for h in blast_radius(e.db, {"vendor": "Acme"}).hits} == {"h1", "app"}


def test_without_the_counter_nothing_is_cached(estate: Estate) -> None:
    e = small(estate)
    with e.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM inventory_version"))
    assert get_graph(e.db) is not get_graph(e.db)
    assert {h.natural_key for h in blast_radius(e.db, {"vendor": "Acme"}).hits} == {"h1", "app"}


def test_postgres_writers_only_meet_on_the_counter_at_commit(pg_url: str) -> None:
    """Two transactions writing different assets run side by side: the counter row is
    locked only at COMMIT (deferred trigger), never while other row locks are held, so
    concurrent collectors neither serialise nor deadlock on it."""
    import threading

    from inventory.db import make_engine

    engine = make_engine(pg_url)
    e = small(Estate(engine))
    first, second = list(e.db.scalars(sa.select(Asset.id).order_by(Asset.id)))[:2]
    e.db.rollback()
    one_wrote, two_wrote = threading.Event(), threading.Event()
    errors: list[str] = []

    def one() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE assets SET region = 'a' WHERE id = :i"), {"i": first})
            one_wrote.set()
            if not two_wrote.wait(timeout=10):
                errors.append("the second writer was blocked by the first one's open transaction")

    def two() -> None:
        one_wrote.wait(timeout=10)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE assets SET region = 'b' WHERE id = :i"), {"i": second})
            two_wrote.set()

    v0 = version(e)
    threads = [threading.Thread(target=one), threading.Thread(target=two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert version(e) == v0 + 2
    e.close()
    engine.dispose()


@pytest.mark.parametrize("table", sorted(triggers.WATCHED))
def test_every_watched_column_exists(table: str) -> None:
    from inventory.models import Base

    assert set(triggers.WATCHED[table]) <= set(Base.metadata.tables[table].columns.keys())


def test_small_changes_patch_a_copy_of_the_graph_sharing_the_rest(any_estate: Estate) -> None:
    e = small(any_estate)
    g1 = get_graph(e.db)
    # A plan is written: only the plans are reloaded, the asset and edge arrays are shared.
    e.plan("Rebuild h1", asset="h1")
    e.commit()
    g2 = get_graph(e.db)
    assert g2.origin == "patch" and g2.refreshed_parts == ["plans_v"]
    assert g2.ids is g1.ids and g2.e_dep is g1.e_dep and g2.current.hard is g1.current.hard
    hit = {h.natural_key: h for h in blast_radius(e.db, {"vendor": "Acme"}).hits}["h1"]
    assert [p["name"] for p in hit.plans] == ["Rebuild h1"]
    # An asset is added: appended to the asset arrays, the edges are shared.
    e.asset("svc", kind="service", os=None)
    e.commit()
    g3 = get_graph(e.db)
    assert g3.origin == "patch" and g3.patch_stats["assets_added"] == 1 and g3.n == g2.n + 1
    assert g3.e_dep is g2.e_dep and g3.refreshed_parts == []
    # A dependency is added: appended to the edges, the assets are shared.
    e.dep("svc", "app", strength="soft")
    e.commit()
    g4 = get_graph(e.db)
    assert g4.patch_stats["edges_added"] == 1 and g4.ids is g3.ids
    assert {h.natural_key: h.status for h in blast_radius(e.db, {"vendor": "Acme"}).hits} == \
        {"h1": "down", "app": "down", "svc": "degraded"}
    # An installation goes: the installation index changes, nothing else.
    with e.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM installations"))
    g5 = get_graph(e.db)
    assert g5.patch_stats["installations"] == 1 and g5.e_dep is g4.e_dep and g5.current.hard is g4.current.hard
    assert blast_radius(e.db, {"vendor": "Acme"}).hits == []


def test_a_bump_the_change_log_cannot_explain_reloads_the_parts_that_changed(any_estate: Estate) -> None:
    """What a large SQLite insert without its row trigger, a restore or pruned history leave:
    a counter bump with no change rows.  The graph then reloads that part instead of patching."""
    e = small(any_estate)
    g1 = get_graph(e.db)
    with e.engine.begin() as conn:
        conn.execute(sa.text("UPDATE inventory_version SET version = version + 1, deps_v = deps_v + 1"))
    g2 = get_graph(e.db)
    assert g2.origin == "parts" and g2.refreshed_parts == ["deps_v"] and g2.ids is g1.ids
    assert {h.natural_key for h in blast_radius(e.db, {"vendor": "Acme"}).hits} == {"h1", "app"}


def test_a_recreated_database_is_never_mistaken_for_a_later_state(estate: Estate) -> None:
    e = small(estate)
    get_graph(e.db)
    with e.engine.begin() as conn:
        row = conn.execute(sa.text("SELECT version, assets_v, installs_v, deps_v, catalog_v, plans_v "
                                   "FROM inventory_version")).one()
        # Same per-part counters but another start: another database under the same URL.
        conn.execute(sa.text("UPDATE inventory_version SET version = :v"), {"v": row[0] + 10**9})
    g = get_graph(e.db)
    assert g.refreshed_parts == ["assets_v", "catalog_v", "deps_v", "installs_v", "plans_v"]


def test_counters_move_together(any_estate: Estate) -> None:
    e = small(any_estate)

    def counters() -> dict[str, int]:
        with e.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT version, assets_v, installs_v, deps_v, catalog_v, plans_v "
                                       "FROM inventory_version")).one()
        return dict(zip(("version", "assets_v", "installs_v", "deps_v", "catalog_v", "plans_v"), row))

    before = counters()
    with e.engine.begin() as conn:
        conn.execute(sa.text("UPDATE products SET name = name || '!'"))
        conn.execute(sa.text("UPDATE dependencies SET strength = 'soft'"))
    after = counters()
    assert after["catalog_v"] > before["catalog_v"] and after["deps_v"] > before["deps_v"]
    assert after["assets_v"] == before["assets_v"] and after["plans_v"] == before["plans_v"]
    parts = ("assets_v", "installs_v", "deps_v", "catalog_v", "plans_v")
    assert after["version"] - sum(after[p] for p in parts) == before["version"] - sum(before[p] for p in parts)
