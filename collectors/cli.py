"""CLI glue shared by every source's ``planb collect <source>`` command.

A source module's ``add_cli(collect_group)`` defines its command and options,
builds its collector, and calls ``execute(collector)``: that runs the
collection against the configured database (progress on stderr), prints the
per-scope summary table and exits non-zero unless the run succeeded —
exit status 1 for a failed run, 3 for a partial one, each with its own message.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from collectors.base import Collector
from inventory.models import CollectionRun

EXIT_FAILED = 1
EXIT_PARTIAL = 3

SUMMARY_COLUMNS = ("scope_key", "status", "created", "updated", "unchanged", "marked_stale", "error")
SUMMARY_HEADERS = ("scope", "status", "created", "updated", "unchanged", "stale", "error")


def _progress_printer(quiet: bool):  # type: ignore[no-untyped-def]
    def progress(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)
    return progress


def run_collectors(collectors: Sequence[Collector], *, quiet: bool | None = None) -> list[CollectionRun]:
    """Run each collector in turn inside the app (its database); returns the finished runs."""
    from flask import current_app, has_app_context

    from collectors.ingest import run_collection

    if quiet is None:
        ctx = click.get_current_context(silent=True)
        quiet = bool(ctx and ctx.find_root().meta.get("planb.collect.quiet"))

    def _run(engine: Any) -> list[CollectionRun]:
        progress = _progress_printer(bool(quiet))
        return [run_collection(engine, c, progress=progress) for c in collectors]

    if has_app_context():
        return _run(current_app.extensions["planb_engine"])
    from inventory import create_app
    app = create_app()
    with app.app_context():
        try:
            return _run(app.extensions["planb_engine"])
        finally:
            app.extensions["planb_engine"].dispose()


def print_summary(run: CollectionRun) -> None:
    from inventory.cli.output import render_table

    rows = [{c: getattr(s, c) for c in SUMMARY_COLUMNS} for s in run.scope_results]
    click.echo(f"Run {run.id} ({run.collector}: {run.scope}) — {run.status}")
    if rows:
        click.echo(render_table(rows, SUMMARY_COLUMNS, SUMMARY_HEADERS, max_width=80))
    click.echo(f"created {run.created}, updated {run.updated}, unchanged {run.unchanged}, "
               f"marked stale {run.marked_stale}")


def exit_for(runs: Sequence[CollectionRun]) -> None:
    """Raise the CLI error matching the worst run status (nothing when all succeeded)."""
    from inventory.cli import CLIError

    failed = [r for r in runs if r.status == "failed"]
    partial = [r for r in runs if r.status == "partial"]
    if failed:
        reasons = "; ".join(_reasons(r) for r in failed)
        raise CLIError(f"collection failed — nothing was retired in the failed scopes: {reasons}",
                       exit_code=EXIT_FAILED)
    if partial:
        reasons = "; ".join(_reasons(r) for r in partial)
        raise CLIError("collection partly succeeded — scopes that succeeded were applied, the "
                       f"others kept their earlier data and retired nothing: {reasons}",
                       exit_code=EXIT_PARTIAL)


def _reasons(run: CollectionRun) -> str:
    messages = [f"{e.get('scope') or run.collector}: {e.get('error')}" for e in (run.errors or [])]
    if not messages:
        messages = [f"{s.scope_key}: {s.status}" for s in run.scope_results if s.status != "succeeded"]
    shown = messages[:5] + ([f"... and {len(messages) - 5} more"] if len(messages) > 5 else [])
    return f"run {run.id} ({run.collector}) " + "; ".join(shown)


def execute(collector: Collector) -> CollectionRun:
    """Run one collector from a CLI command: progress, summary, exit status."""
    [run] = run_collectors([collector])
    print_summary(run)
    exit_for([run])
    return run
