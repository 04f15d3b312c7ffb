"""Fixtures for the reliability tests."""
from __future__ import annotations

import uuid
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa

from tests.conftest import PG_BASE_URL, _pg_admin_engine


@pytest.fixture
def new_pg_url() -> Iterator[Callable[[], str]]:
    """A factory of extra empty PostgreSQL schemas (for restores into a second database)."""
    admin = _pg_admin_engine()
    schemas: list[str] = []

    def make() -> str:
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        schemas.append(schema)
        url = sa.make_url(PG_BASE_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def pytest_configure(config: pytest.Config) -> None:
    # pytest-alembic's built-in tests carry this marker; its plugin (which would register
    # it) is disabled, and --strict-markers refuses unknown markers.
    config.addinivalue_line("markers", "alembic: tests that use pytest-alembic")
