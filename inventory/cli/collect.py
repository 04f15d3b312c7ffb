"""``planb collect SOURCE|all`` and ``planb runs``.

Each source module in ``collectors/`` (see ``collectors.registry``) adds its own
``planb collect <source>`` command with its options; ``planb collect all`` runs
every source whose ``from_config()`` says it is configured.
"""
from __future__ import annotations

import click

from inventory.cli import CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, emit, to_json
from inventory.cli.params import DbId

RUN_COLUMNS = ("id", "collector", "scope", "started_at", "finished_at", "status", "created",
               "updated", "unchanged", "marked_stale", "errors")
RUN_HEADERS = ("id", "collector", "scope", "started", "finished", "status", "created", "updated",
               "unchanged", "stale", "errors")


def register(main: click.Group) -> None:
    from collectors import registry

    @main.group()
    @click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr.")
    @click.pass_context
    def collect(ctx: click.Context, quiet: bool) -> None:
        """Collect the estate from a source (aws, azure, host, osquery) or from all configured ones.

        Exit status: 0 succeeded, 1 failed (nothing retired), 3 partial (the
        scopes that succeeded were applied; the others retired nothing).
        """
        ctx.find_root().meta["planb.collect.quiet"] = quiet

    @collect.command("all")
    def collect_all() -> None:
        """Run every configured source (cloud APIs first, then host-side sources)."""
        from collectors.cli import exit_for, print_summary, run_collectors

        collectors = []
        for name, module in registry.available().items():
            collector = module.from_config()
            if collector is None:
                click.echo(f"{name}: not configured, skipped", err=True)
                continue
            collectors.append(collector)
        if not collectors:
            raise CLIError("no collector is configured (see the README: PLANB_COLLECT_* variables)")
        runs = run_collectors(collectors)
        for run in runs:
            print_summary(run)
        exit_for(runs)

    for _name, module in registry.available().items():
        module.add_cli(collect)

    @main.command("runs")
    @click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000),
                  help="Most recent runs to list.")
    @click.option("--collector", "collector_name", help="Only runs of this collector.")
    @click.option("--status", type=click.Choice(["running", "succeeded", "partial", "failed"]))
    @click.option("--id", "run_id", type=DbId("no collection run with id {}"),
                  help="Show one run with its scopes.")
    @FORMAT_OPTION
    @with_app
    def runs(limit: int, collector_name: str | None, status: str | None, run_id: int | None,
             fmt: str) -> None:
        """List collection runs: collector, scope, start/end, status, counts, errors."""
        import sqlalchemy as sa
        import sqlalchemy.orm as so

        from inventory.app_db import get_session
        from inventory.models import CollectionRun

        db = get_session()
        stmt = (sa.select(CollectionRun).options(so.selectinload(CollectionRun.scope_results))
                .order_by(CollectionRun.started_at.desc(), CollectionRun.id.desc()).limit(limit))
        if collector_name:
            stmt = stmt.where(CollectionRun.collector == collector_name)
        if status:
            stmt = stmt.where(CollectionRun.status == status)
        if run_id is not None:
            stmt = stmt.where(CollectionRun.id == run_id)
        found = db.scalars(stmt).all()
        if run_id is not None and not found:
            raise CLIError(f"no collection run with id {run_id}")
        empty = "No collection runs yet."
        if collector_name or status:
            seen = db.scalars(sa.select(CollectionRun.collector).distinct())
            known = sorted(set(registry.SOURCES) | set(seen))
            if collector_name and collector_name not in known:
                # Most likely a typo: an empty list would read as "that collector never ran".
                raise CLIError(f"no collection runs match collector {collector_name!r} "
                               f"(known collectors: {', '.join(known)})")
            filters = [f"collector {collector_name!r}"] if collector_name else []
            filters += [f"status {status!r}"] if status else []
            empty = f"No collection runs match {' and '.join(filters)}."
        if fmt == "json":
            click.echo(to_json([_run_dict(r, scopes=True) for r in found]))
            return
        rows = [_run_dict(r, scopes=False) for r in found]
        emit(rows, RUN_COLUMNS, fmt, RUN_HEADERS, empty=empty)
        if run_id is not None and fmt == "table":
            from collectors.cli import SUMMARY_COLUMNS, SUMMARY_HEADERS
            click.echo("")
            emit([{c: getattr(s, c) for c in SUMMARY_COLUMNS} for s in found[0].scope_results],
                 SUMMARY_COLUMNS, fmt, SUMMARY_HEADERS, empty="No scopes.")


def _run_dict(run, scopes: bool) -> dict:  # type: ignore[no-untyped-def]
    data = {
        "id": run.id, "collector": run.collector, "scope": run.scope,
        "started_at": run.started_at, "finished_at": run.finished_at, "status": run.status,
        "created": run.created, "updated": run.updated, "unchanged": run.unchanged,
        "marked_stale": run.marked_stale,
    }
    if scopes:
        data["errors"] = list(run.errors or [])
        data["scopes"] = [{"scope": s.scope_key, "status": s.status, "created": s.created,
                           "updated": s.updated, "unchanged": s.unchanged,
                           "marked_stale": s.marked_stale, "error": s.error,
                           "finished_at": s.finished_at} for s in run.scope_results]
    else:
        errs = [f"{e.get('scope') or ''}: {e.get('error')}".lstrip(": ") for e in (run.errors or [])]
        data["errors"] = "; ".join(errs) if errs else None
    return data
