"""planb backup / restore: consistent copies taken while writers run, round trips, refusals."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from inventory import migrate
from inventory.cli import main
from inventory.db import make_engine
from inventory.models import Asset
from inventory.services import backup as backup_service
from tests.conftest import TEST_SECRET
from tests.reliability.helpers import (
    PairWriter,
    counts,
    first_product_id,
    populate_url,
    sqlite_checks,
    writer_pairs,
)


def _wait_for(writer: PairWriter, n: int) -> None:
    deadline = time.monotonic() + 20
    while writer.written < n:
        assert time.monotonic() < deadline, "writer made no progress"
        assert not writer.errors, writer.errors
        time.sleep(0.01)


def _backup_during_writes(url: str, target: Path, fmt: str | None = None) -> backup_service.BackupResult:
    populate_url(url)
    writer = PairWriter(url, first_product_id(url))
    writer.start()
    try:
        _wait_for(writer, 5)
        engine = make_engine(url)
        try:
            result = backup_service.backup(engine, target, fmt)
        finally:
            engine.dispose()
        _wait_for(writer, writer.written + 3)  # writes carried on during and after the copy
    finally:
        total = writer.finish()
    in_copy = result.row_counts["assets"] - 7  # populate() made 7 assets
    assert 5 <= in_copy < total
    return result


def test_sqlite_online_backup_during_writes_is_consistent_and_restores(sqlite_url, empty_sqlite_url, tmp_path):
    target = tmp_path / "backups" / "copy.sqlite3"
    result = _backup_during_writes(sqlite_url, target)
    assert result.format == "sqlite"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sqlite_checks(target) == ("ok", [])
    assets, events = writer_pairs(f"sqlite:///{target}")
    assert assets == events > 0  # every writer transaction is in the copy whole, or not at all

    restored = backup_service.restore(empty_sqlite_url, target)
    assert restored.row_counts == result.row_counts == counts(f"sqlite:///{target}")
    assert sqlite_checks(empty_sqlite_url.removeprefix("sqlite:///")) == ("ok", [])
    engine = make_engine(empty_sqlite_url)
    try:
        assert migrate.is_current(engine)
        assert engine.connect().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_logical_backup_of_postgres_during_writes_restores_to_postgres_and_sqlite(
        pg_url, new_pg_url, empty_sqlite_url, tmp_path):
    target = tmp_path / "pg.jsonl.gz"
    result = _backup_during_writes(pg_url, target)
    assert result.format == "jsonl"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    expected = result.row_counts
    assert expected["users"] == 1 and expected["plan_links"] == 1

    for url in (new_pg_url(), empty_sqlite_url):
        restored = backup_service.restore(url, target)
        assert restored.row_counts == expected
        assets, events = writer_pairs(url)
        assert assets == events == expected["assets"] - 7
        engine = make_engine(url)
        try:
            assert migrate.is_current(engine)
            with engine.connect() as conn:
                asset = conn.execute(sa.select(Asset).where(Asset.natural_key == "test:a:2")).one()
                assert asset.name == "host a2 ünïcode" and asset.tags == {"team": "ops", "n": 2}
                assert asset.first_seen.tzinfo is not None
            if url.startswith("sqlite"):
                assert sqlite_checks(url.removeprefix("sqlite:///")) == ("ok", [])
            else:
                # Sequences moved past the restored ids: new rows can be added.
                populate_url(url, tag="after-restore", assets=1)
        finally:
            engine.dispose()


def test_logical_backup_of_sqlite_round_trips(sqlite_url, empty_sqlite_url, tmp_path):
    populate_url(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        result = backup_service.backup(engine, tmp_path / "b.jsonl", "jsonl")
    finally:
        engine.dispose()
    backup_service.restore(empty_sqlite_url, tmp_path / "b.jsonl")
    assert counts(empty_sqlite_url) == result.row_counts == counts(sqlite_url)
    assert sqlite_checks(empty_sqlite_url.removeprefix("sqlite:///")) == ("ok", [])


def test_restore_refuses_a_database_with_data_unless_forced(sqlite_url, tmp_path):
    populate_url(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        backup_service.backup(engine, tmp_path / "b.sqlite3")
        backup_service.backup(engine, tmp_path / "b.jsonl", "jsonl")
    finally:
        engine.dispose()
    populate_url(sqlite_url, tag="b")
    before = counts(sqlite_url)
    for name in ("b.sqlite3", "b.jsonl"):
        with pytest.raises(backup_service.BackupError, match="already holds data"):
            backup_service.restore(sqlite_url, tmp_path / name)
        assert counts(sqlite_url) == before
    restored = backup_service.restore(sqlite_url, tmp_path / "b.jsonl", force=True)
    assert restored.row_counts["assets"] == 7
    restored = backup_service.restore(sqlite_url, tmp_path / "b.sqlite3", force=True)
    assert restored.row_counts["assets"] == 7
    assert sqlite_checks(sqlite_url.removeprefix("sqlite:///")) == ("ok", [])


def test_a_broken_backup_is_refused_and_the_database_is_unchanged(sqlite_url, tmp_path):
    populate_url(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        backup_service.backup(engine, tmp_path / "good.jsonl", "jsonl")
    finally:
        engine.dispose()
    lines = (tmp_path / "good.jsonl").read_text().splitlines()
    # Cut the file in the middle of the assets table.
    cut = next(i for i, line in enumerate(lines) if '"table": "assets"' in line) + 3
    (tmp_path / "truncated.jsonl").write_text("\n".join(lines[:cut]) + "\n")
    (tmp_path / "junk.sqlite3").write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    (tmp_path / "text.txt").write_text("hello")
    populate_url(sqlite_url, tag="b")
    before = counts(sqlite_url)
    for name, message in (("truncated.jsonl", "truncated"), ("junk.sqlite3", "SQLite"),
                          ("text.txt", "neither"), ("missing.jsonl", "no backup file")):
        with pytest.raises(backup_service.BackupError, match=message):
            backup_service.restore(sqlite_url, tmp_path / name, force=True)
        assert counts(sqlite_url) == before


def test_cli_backup_and_restore(sqlite_url, empty_sqlite_url, tmp_path, monkeypatch):
    populate_url(sqlite_url)
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_LOG_LEVEL", "WARNING")
    runner = CliRunner()
    result = runner.invoke(main, ["backup"])
    assert result.exit_code == 0, result.output
    made = list((tmp_path / "instance" / "backups").glob("planb-*.sqlite3"))
    assert len(made) == 1 and "Backed up" in result.output
    result = runner.invoke(main, ["backup", str(tmp_path / "x.jsonl.gz")])
    assert result.exit_code == 0, result.output

    result = runner.invoke(main, ["restore", str(made[0])])
    assert result.exit_code == 1
    assert "already holds data" in result.output and "--force" in result.output

    monkeypatch.setenv("PLANB_DATABASE_URL", empty_sqlite_url)
    result = runner.invoke(main, ["restore", str(tmp_path / "x.jsonl.gz")])
    assert result.exit_code == 0, result.output
    assert counts(empty_sqlite_url) == counts(sqlite_url)
