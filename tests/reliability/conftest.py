"""Fixtures for the reliability tests."""
from __future__ import annotations

from contextlib import ExitStack
from typing import Callable, Iterator

import pytest

from tests.conftest import pg_schema


@pytest.fixture
def new_pg_url() -> Iterator[Callable[[], str]]:
    """A factory of extra empty PostgreSQL schemas (for restores into a second database)."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(pg_schema())


def pytest_configure(config: pytest.Config) -> None:
    # pytest-alembic's built-in tests carry this marker; its plugin (which would register
    # it) is disabled, and --strict-markers refuses unknown markers.
    config.addinivalue_line("markers", "alembic: tests that use pytest-alembic")
