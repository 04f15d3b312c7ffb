"""``planb db upgrade|downgrade|current``: Alembic migrations."""
from __future__ import annotations

import click
from flask import current_app

from inventory import migrate
from inventory.cli import CLIError, with_app


@click.group()
def db() -> None:
    """Database schema migrations (Alembic)."""

@db.command()
@click.argument("revision", default="head")
@with_app
def upgrade(revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    _run(migrate.upgrade, revision)
    click.echo(f"Database at {_describe()} upgraded to {revision}.")
    _compile_impact_kernel()


def _compile_impact_kernel() -> None:
    """Compile the impact engine's kernel now, so no server or command compiles it later."""
    from inventory.impact import backend

    if not backend.compile_ahead():
        click.echo("Note: the impact kernel could not be compiled ahead; blast radii are answered with "
                   "NumPy until a server compiles it in the background.", err=True)

# '-1' (a relative revision, as docs/cli-overview.md documents) is an argument, not an unknown option.
@db.command(context_settings={"ignore_unknown_options": True})
@click.argument("revision")
@with_app
def downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION ('base' removes every table; '-1' steps back one)."""
    _run(migrate.downgrade, revision)
    click.echo(f"Database at {_describe()} downgraded to {revision}.")

@db.command()
@with_app
def current() -> None:
    """Show the schema revision of the database and the newest one available."""
    from inventory.app_db import get_engine
    rev = migrate.current_revision(get_engine())
    head = migrate.head_revision()
    state = "up to date" if rev == head else "needs 'planb db upgrade'"
    click.echo(f"current: {rev or 'none (empty database)'}\nhead:    {head}\n{state}")


def _run(func, revision: str) -> None:  # type: ignore[no-untyped-def]
    from alembic.util import CommandError
    current_app.extensions["planb_engine"].dispose()
    try:
        func(current_app.config["DATABASE_URL"], revision)
    except CommandError as exc:
        raise CLIError(f"cannot migrate to {revision!r}: {exc}") from exc


def _describe() -> str:
    from sqlalchemy import make_url
    return make_url(current_app.config["DATABASE_URL"]).render_as_string(hide_password=True)
