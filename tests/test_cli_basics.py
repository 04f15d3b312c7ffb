"""The planb command line as a whole: help everywhere, clean errors."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from inventory.cli import main


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):   # lazy groups import each command here
        command = group.get_command(ctx, name)
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
        command = command.get_command(click.Context(command), name)  # type: ignore[attr-defined]
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


def test_tables_show_control_characters_instead_of_sending_them_to_the_terminal() -> None:
    """Text people type is stored as given; a table must not let an escape sequence in it
    recolour or rewrite the terminal (ESC, BEL, C1's CSI), nor break a row (CR, LF)."""
    from inventory.cli.output import render_table

    table = render_table([{"title": "evil\x1b[31mred\x07\r\nnext\u009b2J", "n": 1}], ["title", "n"])
    assert not any(ch in table for ch in "\x1b\x07\r\u009b")
    lines = table.splitlines()
    assert len(lines) == 3 and "evil\\x1b[31mred\\x07 next\\x9b2J" in lines[2]
