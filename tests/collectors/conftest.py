"""Fixtures shared by the collectors' command-line tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cli_env(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What `planb` needs to run against a fresh SQLite database; returns its URL.

    A test module that needs a source's credentials too overrides this fixture,
    asking for it by the same name and adding its variables."""
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_SECRET_KEY", "test-secret")
    monkeypatch.setenv("PLANB_LOG_LEVEL", "WARNING")
    return sqlite_url
