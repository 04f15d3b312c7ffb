"""The ``planb`` command line.  Each area adds its commands from its own module.

Commands run inside an application context (same configuration as the web
app), exit 0 on success and non-zero with a message on error, print readable
tables by default and ``--format json`` for scripts.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from functools import wraps
from typing import Any, Callable

import click
from sqlalchemy.exc import OperationalError, ProgrammingError

from inventory import __version__

# Modules that contribute commands; each defines ``register(main)``.
COMMAND_MODULES = ("db", "users", "serve", "estate", "collect", "impact", "updates", "plans",
                   "risk", "backup")

UNMIGRATED_MESSAGE = ("the database has no Plan B schema (or an old one). "
                      "Run 'planb db upgrade' first (or 'planb demo' for a demo database).")


def _driver_errors() -> tuple[type[Exception], ...]:
    """DB-API errors raised by code that queries through the driver directly (the impact
    graph loader), which SQLAlchemy therefore does not wrap."""
    import sqlite3
    errors: list[type[Exception]] = [sqlite3.OperationalError, sqlite3.ProgrammingError]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    else:
        errors += [psycopg.OperationalError, psycopg.ProgrammingError]
    return tuple(errors)


_DRIVER_ERRORS = _driver_errors()


class PlanBGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CLIError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (OperationalError, ProgrammingError, *_DRIVER_ERRORS) as exc:
            # The usual cause is a database that was never migrated (or is behind).
            if _looks_unmigrated(exc):
                click.echo(f"Error: {UNMIGRATED_MESSAGE}", err=True)
                sys.exit(1)
            click.echo(f"Error: database error: {getattr(exc, 'orig', None) or exc}", err=True)
            sys.exit(1)


def _looks_unmigrated(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text) \
        or "no such column" in text or ("column" in text and "does not exist" in text)


class CLIError(click.ClickException):
    """An expected failure: printed as 'Error: ...' with a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@click.group(cls=PlanBGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="planb")
def main() -> None:
    """Plan B: which assets does a vendor outage hit, how badly, and what is the plan for each?"""


def with_app(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run the command inside an app context, with a CLI principal for the audit trail."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flask import g

        from inventory import create_app
        from inventory.auth import Principal

        app = create_app()
        with app.app_context():
            import getpass
            try:
                user = getpass.getuser()
            except Exception:  # noqa: BLE001 - no login name in some containers
                user = "unknown"
            g.principal = Principal(kind="cli", name=user, role="admin")
            return func(*args, **kwargs)

    return wrapper


def _register_all() -> None:
    for name in COMMAND_MODULES:
        module_name = f"inventory.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(main)


_register_all()
