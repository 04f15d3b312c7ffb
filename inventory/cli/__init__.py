"""The ``planb`` command line.  Each area's commands live in their own module and are
imported only when run (``LazyGroup``), so ``planb --help`` or ``planb impact`` never
pays for the web stack, the cloud SDKs or the other commands' libraries.

Commands run inside an application context (same configuration as the web
app), exit 0 on success and non-zero with a message on error, print readable
tables by default and ``--format json`` for scripts.

To add a command: define it at module level in ``inventory/cli/<area>.py`` (heavy
imports inside the function), add a line to ``COMMANDS`` below with the first line
of its help, and run ``tests/test_architecture.py`` (it checks the table against the
commands).
"""
from __future__ import annotations

import importlib
import sys
from functools import wraps
from typing import Any, Callable

import click

from inventory import __version__

# name -> ("module:attribute", the first line of its help, shown by 'planb --help').
COMMANDS: dict[str, tuple[str, str]] = {
    "assessments": ("inventory.cli.risk:assessments",
                    "Vendor risk assessments (dated reviews with domain scores, certificates, findings)."),
    "backup": ("inventory.cli.backup:backup",
               "Back up the whole database to FILE (default: <instance>/backups/planb-<time>.*)."),
    "check": ("inventory.cli.updates:check",
              "Policy checks for pipelines: exit 0 when the policy holds, non-zero otherwise."),
    "collect": ("inventory.cli.collect:collect",
                "Collect the estate from a source or from all configured ones."),
    "db": ("inventory.cli.db:db", "Database schema migrations (Alembic)."),
    "demo": ("inventory.cli.estate:demo_cmd",
             "Create the database, load the Skyward Air demo estate and serve the dashboard."),
    "export": ("inventory.cli.estate:export_cmd",
               "Export the inventory as an estate file (the format 'planb import' reads)."),
    "impact": ("inventory.cli.impact:impact", "Which assets a vendor outage hits, how badly, why, and what the "
                                             "plan is."),
    "import": ("inventory.cli.imports:import_group",
               "Import an estate FILE (YAML or JSON; '-' reads standard input), an SBOM or a CMDB export."),
    "incidents": ("inventory.cli.impact:incidents",
                  "Declared incidents: blast-radius snapshots and recovery progress."),
    "plans": ("inventory.cli.plans:plans",
              "Contingency plans (Plan Bs): status, reviews, exercises, coverage, recovery targets."),
    "restore": ("inventory.cli.backup:restore", "Restore a backup made by 'planb backup' (either format) into the configured database."),
    "review": ("inventory.cli.risk:review",
               "The review pack for VENDOR: products and where they run, blast radius, plan coverage and "
               "gaps, untested exposure, assessment history, open findings, expiring certificates."),
    "reviews": ("inventory.cli.risk:reviews", "The vendor review calendar."),
    "risk": ("inventory.cli.risk:risk", "Vendor risk scores (0-100) with each part's contribution, riskiest "
                                        "first."),
    "runs": ("inventory.cli.collect:runs",
             "List collection runs: collector, scope, start/end, status, counts, errors."),
    "scenarios": ("inventory.cli.impact:scenarios", "Saved outage scopes for drills and quick re-use."),
    "serve": ("inventory.cli.serve:serve",
              "Serve the dashboard and API (migrations must be current: 'planb db upgrade')."),
    "tokens": ("inventory.cli.users:tokens", "API tokens for pipelines and scripts (sent as 'Authorization: "
                                             "Bearer')."),
    "updates": ("inventory.cli.updates:updates",
                "Vendor updates, their test results per ring, and untested exposure."),
    "users": ("inventory.cli.users:users", "Local accounts and their roles (viewer, editor, admin)."),
    "vendors": ("inventory.cli.estate:vendors_cmd", "List vendors with their product and asset counts."),
    "webhooks": ("inventory.cli.webhooks:webhooks", "Webhooks: incident, collection, update-gate and plan-review notifications (JSON, Slack, Teams)."),
}

UNMIGRATED_MESSAGE = ("the database has no Plan B schema (or an old one). "
                      "Run 'planb db upgrade' first (or 'planb demo' for a demo database).")


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use (click's documented
    lazy-loading pattern); ``--help`` lists them from their one-line help without importing."""

    def __init__(self, *args: Any, lazy_commands: dict[str, tuple[str, str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            target = self.lazy_commands[cmd_name][0]
            module_name, _, attribute = target.partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{target} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        names = self.list_commands(ctx)
        width = formatter.width - 6 - max((len(n) for n in names), default=0)
        for name in names:
            if name in self.commands:
                command = self.commands[name]
                if command.hidden:
                    continue
                text = command.get_short_help_str(width)
            else:
                text = short_help(self.lazy_commands[name][1], width)
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def short_help(text: str, width: int) -> str:
    """What ``--help`` shows of a command whose help is ``text`` (click's own shortening)."""
    return click.Command("-", help=text).get_short_help_str(width)


class PlanBGroup(LazyGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CLIError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            # The usual cause is a database that was never migrated (or is behind).
            if _looks_unmigrated(exc):
                click.echo(f"Error: {UNMIGRATED_MESSAGE}", err=True)
                sys.exit(1)
            click.echo(f"Error: database error: {getattr(exc, 'orig', None) or exc}", err=True)
            sys.exit(1)


def _is_database_error(exc: Exception) -> bool:
    """SQLAlchemy's OperationalError/ProgrammingError, or the DB-API's own (the impact
    graph loader queries through the driver directly, which SQLAlchemy does not wrap).
    Looked up in ``sys.modules``: a library never imported cannot have raised."""
    kinds: list[type[BaseException]] = []
    if "sqlalchemy.exc" in sys.modules:
        exc_module = sys.modules["sqlalchemy.exc"]
        kinds += [exc_module.OperationalError, exc_module.ProgrammingError]
    if "sqlite3" in sys.modules:
        kinds += [sys.modules["sqlite3"].OperationalError, sys.modules["sqlite3"].ProgrammingError]
    if "psycopg" in sys.modules:
        psycopg = sys.modules["psycopg"]
        kinds += [psycopg.OperationalError, psycopg.ProgrammingError]
    return isinstance(exc, tuple(kinds))


def _looks_unmigrated(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text) \
        or "no such column" in text or ("column" in text and "does not exist" in text)


class CLIError(click.ClickException):
    """An expected failure: printed as 'Error: ...' with a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@click.group(cls=PlanBGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="planb")
def main() -> None:
    """Plan B: which assets does a vendor outage hit, how badly, and what is the plan for each?"""


def with_app(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run the command inside an app context, with a CLI principal for the audit trail."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from flask import g

        from inventory import create_app
        from inventory.principal import Principal

        app = create_app(web=False)
        with app.app_context():
            import getpass
            try:
                user = getpass.getuser()
            except Exception:  # noqa: BLE001 - no login name in some containers
                user = "unknown"
            g.principal = Principal(kind="cli", name=user, role="admin")
            return func(*args, **kwargs)

    return wrapper
