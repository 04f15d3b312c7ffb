"""Shared fixtures: migrated databases (SQLite and PostgreSQL), the app, clients per role.

A migrated SQLite template is built once per session and copied per test.
PostgreSQL tests use the local server (127.0.0.1:5432, database ``test``) with
a fresh schema per test; if the server is down they *fail* (never skip), so CI
cannot pass without them.
"""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory import create_app, migrate
from inventory.db import make_engine

PG_BASE_URL = os.environ.get("PLANB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TEST_SECRET = "test-secret-key-not-for-production"


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "planb.sqlite3"
    migrate.upgrade(f"sqlite:///{path}", "head")
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A freshly migrated SQLite database file."""
    target = tmp_path / "planb.sqlite3"
    shutil.copyfile(_sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture(scope="session")
def _demo_template(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> Path:
    """The Skyward Air demo estate loaded once per session into a migrated SQLite file."""
    import sqlite3

    from inventory.db import write_session
    from inventory.estate.demo import load_demo

    path = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    shutil.copyfile(_sqlite_template, path)
    eng = make_engine(f"sqlite:///{path}")
    with write_session(eng) as session:
        load_demo(session, actor="tests")
    eng.dispose()
    conn = sqlite3.connect(path)  # fold the WAL into the file so a plain copy is complete
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture
def demo_url(tmp_path: Path, _demo_template: Path) -> str:
    """A private copy of a SQLite database holding the Skyward Air demo estate."""
    target = tmp_path / "demo.sqlite3"
    shutil.copyfile(_demo_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'empty.sqlite3'}"


def _pg_admin_engine() -> sa.Engine:
    engine = sa.create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL test server unreachable at {PG_BASE_URL}: {exc}. "
                    "Start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
                    pytrace=False)
    return engine


@contextmanager
def pg_schema(prefix: str = "t", migrated: bool = False) -> Iterator[str]:
    """A PostgreSQL schema of its own, as a URL whose search_path points at it; dropped afterwards.

    Fails (never skips) when the server is unreachable.  ``migrated`` upgrades it to head."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _pg_admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(PG_BASE_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        rendered = url.render_as_string(hide_password=False)
        if migrated:
            migrate.upgrade(rendered, "head")
        yield rendered
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """An empty PostgreSQL schema of its own (search_path set through the URL)."""
    with pg_schema() as url:
        yield url


@pytest.fixture
def pg_url(empty_pg_url: str) -> str:
    migrate.upgrade(empty_pg_url, "head")
    return empty_pg_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest) -> str:
    """Runs the test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture
def db(engine: sa.Engine) -> Iterator[so.Session]:
    session = so.Session(bind=engine, expire_on_commit=False)
    yield session
    session.rollback()
    session.close()


def make_test_app(database_url: str, instance_path: Path, **overrides):  # type: ignore[no-untyped-def]
    config = {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET,
        "INSTANCE_PATH": str(instance_path),
        "LOG_LEVEL": "WARNING",
        "RATELIMIT_ENABLED": False,
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app(sqlite_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    application = make_test_app(sqlite_url, tmp_path / "instance", WTF_CSRF_ENABLED=False)
    yield application
    application.extensions["planb_engine"].dispose()


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def runner(app):  # type: ignore[no-untyped-def]
    return app.test_cli_runner()


def create_user_and_login(app, client, role: str, username: str | None = None) -> str:  # type: ignore[no-untyped-def]
    from inventory.app_db import get_session
    from inventory.auth import create_user

    username = username or f"{role}-{uuid.uuid4().hex[:6]}"
    password = "correct horse battery staple"
    with app.app_context():
        db = get_session()
        create_user(db, username, role, password)
        db.commit()
    response = client.post("/login", data={"username": username, "password": password})
    assert response.status_code == 302, response.data
    return username


def create_api_token(app, role: str = "read", **kwargs) -> str:  # type: ignore[no-untyped-def]
    from inventory.app_db import get_session
    from inventory.auth import create_token

    with app.app_context():
        db = get_session()
        _token, plaintext = create_token(db, f"test-{role}-{uuid.uuid4().hex[:6]}", role, **kwargs)
        db.commit()
    return plaintext


@pytest.fixture
def viewer_client(app):  # type: ignore[no-untyped-def]
    c = app.test_client()
    create_user_and_login(app, c, "viewer")
    return c


@pytest.fixture
def editor_client(app):  # type: ignore[no-untyped-def]
    c = app.test_client()
    create_user_and_login(app, c, "editor")
    return c


@pytest.fixture
def admin_client(app):  # type: ignore[no-untyped-def]
    c = app.test_client()
    create_user_and_login(app, c, "admin")
    return c


@pytest.fixture
def read_token(app) -> str:  # type: ignore[no-untyped-def]
    return create_api_token(app, "read")


@pytest.fixture
def write_token(app) -> str:  # type: ignore[no-untyped-def]
    return create_api_token(app, "write")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
