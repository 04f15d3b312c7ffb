"""Alembic environment for Plan B (SQLite in batch mode, PostgreSQL natively)."""
from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Engine

from inventory.db import make_engine
from inventory.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Engine):  # pytest-alembic hands in an Engine
        with connection.connect() as conn:
            _run(conn)
        return
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    is_sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=is_sqlite,
        compare_type=True,
    )
    if not is_sqlite:
        with context.begin_transaction():
            context.run_migrations()
        return
    # SQLite batch migrations copy a table, DROP the original and rename the copy; with
    # foreign keys enforced that DROP would delete every row cascading from the table
    # (installations, dependencies, plan links...).  Enforcement is switched off for the
    # migration (the pragma only works outside a transaction) and the foreign keys are
    # checked before it is switched back on.
    dbapi = connection.connection.driver_connection
    switch = not connection.in_transaction() and not dbapi.in_transaction
    if switch:
        dbapi.execute("PRAGMA foreign_keys = OFF")
    try:
        with context.begin_transaction():
            context.run_migrations()
            problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise RuntimeError(f"the migration left rows with dangling foreign keys: {problems[:5]}")
    finally:
        if switch:
            if connection.in_transaction():
                connection.commit()
            dbapi.execute("PRAGMA foreign_keys = ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
