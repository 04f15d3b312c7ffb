"""The planb command line as a whole: help everywhere, clean errors."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from inventory.cli import main


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield prefix + (name,)
        if isinstance(command, click.Group):
            yield from _all_commands(command, prefix + (name,))


@pytest.mark.parametrize("path", list(_all_commands(main)), ids=" ".join)
def test_every_command_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = main
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert (command.help or command.short_help), f"planb {' '.join(path)} has no help text"


def test_unmigrated_database_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANB_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("PLANB_LOG_LEVEL", "ERROR")
    result = CliRunner().invoke(main, ["runs"])
    assert result.exit_code == 1
    assert "planb db upgrade" in result.output


def test_db_upgrade_then_current(monkeypatch, tmp_path):
    monkeypatch.setenv("PLANB_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("PLANB_LOG_LEVEL", "ERROR")
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(main, ["db", "current"])
    assert result.exit_code == 0 and "up to date" in result.output
    result = runner.invoke(main, ["db", "downgrade", "base"])
    assert result.exit_code == 0
    result = runner.invoke(main, ["db", "current"])
    assert "needs 'planb db upgrade'" in result.output
    result = runner.invoke(main, ["db", "upgrade", "not-a-revision"])
    assert result.exit_code != 0 and "not-a-revision" in result.output
