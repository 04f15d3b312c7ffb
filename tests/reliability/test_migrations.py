"""Migrations: pytest-alembic's standard tests on both databases, and down/up steps on a
*populated* database that keep every row and leave no dangling foreign key.

pytest-alembic's automatic collector is disabled (``-p no:pytest_alembic`` in
pyproject: it breaks on pytest 9); its built-in tests are called here with a
runner on our own migrations folder and engines.
"""
from __future__ import annotations

from typing import Iterator

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from pytest_alembic import tests as alembic_tests
from pytest_alembic.config import Config as PytestAlembicConfig
from pytest_alembic.runner import MigrationContext, runner

from inventory import migrate
from inventory.db import make_engine, write_session
from inventory.models import Asset, Base
from tests.reliability.helpers import counts, populate, sqlite_checks


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("empty_sqlite_url" if request.param == "sqlite" else "empty_pg_url")


@pytest.fixture
def alembic_runner(empty_url: str) -> Iterator[MigrationContext]:
    engine = make_engine(empty_url)
    config = PytestAlembicConfig.from_raw_config(migrate.alembic_config(empty_url))
    try:
        with runner(config=config, engine=engine) as context:
            yield context
    finally:
        engine.dispose()


def test_single_head_revision(alembic_runner):
    alembic_tests.test_single_head_revision(alembic_runner)


def test_upgrade(alembic_runner):
    alembic_tests.test_upgrade(alembic_runner)


def test_model_definitions_match_ddl(alembic_runner):
    alembic_tests.test_model_definitions_match_ddl(alembic_runner)


def test_up_down_consistency(alembic_runner):
    alembic_tests.test_up_down_consistency(alembic_runner)


# ---------------------------------------------------------------- populated down/up

def dangling_foreign_keys(url: str) -> list[str]:
    """Rows whose foreign key points at no row, for every FK the models declare
    (a real check on PostgreSQL too, where a migration could have dropped a constraint)."""
    engine = make_engine(url)
    problems = []
    try:
        existing = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                if table.name not in existing:
                    continue
                for fk in table.foreign_keys:
                    parent = fk.column.table
                    if parent.name not in existing:
                        continue
                    child_col, parent_col = fk.parent, fk.column
                    orphan = parent.alias("p")
                    stmt = (sa.select(sa.func.count()).select_from(table)
                            .outerjoin(orphan, orphan.c[parent_col.name] == child_col)
                            .where(child_col.is_not(None), orphan.c[parent_col.name].is_(None)))
                    n = conn.scalar(stmt)
                    if n:
                        problems.append(f"{table.name}.{child_col.name} -> {parent.name}: {n} dangling")
        if engine.dialect.name == "sqlite":
            integrity, fk_rows = sqlite_checks(url.removeprefix("sqlite:///"))
            if integrity != "ok" or fk_rows:
                problems.append(f"sqlite: integrity {integrity}, foreign_key_check {fk_rows[:5]}")
    finally:
        engine.dispose()
    return problems


def _revisions_newest_first() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    return [rev.revision for rev in script.walk_revisions()]


def _populated(url: str, tag: str) -> None:
    engine = make_engine(url)
    try:
        with write_session(engine) as db:
            populate(db, tag)
    finally:
        engine.dispose()


def test_stepping_down_and_up_keeps_a_populated_database(empty_url):
    revisions = _revisions_newest_first()
    assert len(revisions) >= 2, "needs a second revision to step down to"
    migrate.upgrade(empty_url, "head")
    _populated(empty_url, "a")
    _populated(empty_url, "b")
    at_head = counts(empty_url)
    assert at_head["assets"] == 14 and at_head["plan_links"] == 2
    assert dangling_foreign_keys(empty_url) == []

    # Down one revision at a time, as far as the first one (below it the tables go).
    for target in revisions[1:]:
        migrate.downgrade(empty_url, target)
        after = counts(empty_url)
        assert {t: n for t, n in after.items() if t in at_head} == \
            {t: n for t, n in at_head.items() if t in after}, f"rows lost stepping down to {target}"
        assert dangling_foreign_keys(empty_url) == [], target
    migrate.upgrade(empty_url, "head")
    assert counts(empty_url) == at_head
    assert dangling_foreign_keys(empty_url) == []
    # The upgraded database still takes writes through the models.
    _populated(empty_url, "c")
    assert counts(empty_url)["assets"] == 21
    engine = make_engine(empty_url)
    try:
        assert migrate.is_current(engine)
        with engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count(Asset.id)).where(Asset.natural_key.like("test:c:%"))) == 7
    finally:
        engine.dispose()


def test_base_up_populate_down_to_base_up_populate(empty_url):
    """The whole history from nothing, twice, with data in between."""
    migrate.upgrade(empty_url, "head")
    _populated(empty_url, "a")
    first = counts(empty_url)
    assert dangling_foreign_keys(empty_url) == []
    migrate.downgrade(empty_url, "base")
    engine = make_engine(empty_url)
    try:
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    migrate.upgrade(empty_url, "head")
    assert not any(counts(empty_url).values())
    _populated(empty_url, "a")
    assert counts(empty_url) == first
    assert dangling_foreign_keys(empty_url) == []


# ---------------------------------------------------------------- a future table-rebuilding migration

_REBUILD_MIGRATION = '''
"""test only: rebuild the assets table (what SQLite batch mode does for most ALTERs)"""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assets", recreate="always") as batch:
        batch.add_column(sa.Column("zz_rebuilt", sa.String(10)))


def downgrade() -> None:
    with op.batch_alter_table("assets", recreate="always") as batch:
        batch.drop_column("zz_rebuilt")
'''


def test_a_migration_that_rebuilds_a_parent_table_keeps_its_children(empty_sqlite_url, tmp_path):
    """SQLite batch migrations copy a table, DROP the original and rename the copy. With
    foreign keys enforced, that DROP deletes every row that cascades from it (installations,
    dependencies, plan links...): env.py must switch enforcement off while migrating."""
    import shutil

    from alembic import command
    from alembic.config import Config

    from inventory.paths import migrations_dir

    scripts = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_rebuild_assets.py").write_text(
        _REBUILD_MIGRATION.replace("{head}", migrate.head_revision() or ""))
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.set_main_option("sqlalchemy.url", empty_sqlite_url)

    migrate.upgrade(empty_sqlite_url, "head")
    _populated(empty_sqlite_url, "a")
    before = counts(empty_sqlite_url)
    command.upgrade(config, "9999")
    assert counts(empty_sqlite_url) == before
    command.downgrade(config, "-1")
    assert counts(empty_sqlite_url) == before
    assert dangling_foreign_keys(empty_sqlite_url) == []
    engine = make_engine(empty_sqlite_url)
    try:
        # Enforcement is back on for the application afterwards.
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
