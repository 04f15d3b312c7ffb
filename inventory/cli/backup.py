"""``planb backup [FILE]`` and ``planb restore FILE``: consistent while the service runs."""
from __future__ import annotations

from pathlib import Path

import click
from flask import current_app

from inventory.app_db import get_engine
from inventory.cli import CLIError, with_app
from inventory.cli.output import check_output_path
from inventory.services import backup as backup_service


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["sqlite", "jsonl"]), default=None,
              help="sqlite: a copy of the SQLite file (online backup API; SQLite only). "
                   "jsonl: Plan B's logical backup of every table (any database; .gz compresses). "
                   "Default: sqlite for SQLite, jsonl otherwise, or from FILE's name.")
@with_app
def backup(file: Path | None, fmt: str | None) -> None:
    """Back up the whole database to FILE (default: <instance>/backups/planb-<time>.*).

    Safe while the service and collectors run: the copy comes from one consistent
    snapshot.  The file holds password hashes and token HMACs: it is created
    readable by its owner only; keep it (and the instance secret_key) safe.
    """
    engine = get_engine()
    if file is None:
        # Plan B's own folder: created by the backup service when missing.
        file = backup_service.default_backup_name(engine, Path(current_app.instance_path) / "backups")
    else:
        check_output_path(file)
    try:
        result = backup_service.backup(engine, file, fmt)
    except backup_service.BackupError as exc:
        raise CLIError(str(exc)) from exc
    total = sum(result.row_counts.values())
    click.echo(f"Backed up {total} rows ({result.format}, schema {result.revision}) to {result.path}")

@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the data already in the database.")
@with_app
def restore(file: Path, force: bool) -> None:
    """Restore a backup made by 'planb backup' (either format) into the configured database.

    Refuses to overwrite a database that holds data unless --force.  Stop the
    service first when replacing data (--force); the schema is upgraded afterwards.
    """
    get_engine().dispose()
    try:
        result = backup_service.restore(current_app.config["DATABASE_URL"], file, force=force)
    except backup_service.BackupError as exc:
        raise CLIError(str(exc)) from exc
    total = sum(result.row_counts.values())
    click.echo(f"Restored {total} rows from {result.path} ({result.format}, schema {result.revision}).")
