"""``planb collect SOURCE|all``, ``planb runs [prune]``, and the glue every source's command shares.

Each source in ``collectors.registry.SOURCES`` has its ``planb collect <source>`` command
in ``inventory/cli/collect_<source>.py`` (its options live with the CLI, not in the
collector), imported only when that source is run.  A source command builds its
collector and calls ``execute(collector)``: that runs the collection against the
configured database (progress on stderr), prints the per-scope summary table and exits
non-zero unless the run succeeded — 1 for a failed run, 3 for a partial one.
``planb collect all`` runs every source whose ``from_config()`` says it is configured.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from collectors import registry
from inventory.cli import CLIError, LazyGroup, with_app
from inventory.cli.output import FORMAT_OPTION, emit, to_json
from inventory.cli.params import DbId

if TYPE_CHECKING:
    from collectors.base import Collector
    from inventory.models import CollectionRun

RUN_COLUMNS = ("id", "collector", "scope", "started_at", "finished_at", "status", "created",
               "updated", "unchanged", "marked_stale", "errors")
RUN_HEADERS = ("id", "collector", "scope", "started", "finished", "status", "created", "updated",
               "unchanged", "stale", "errors")

# source name -> ("inventory.cli.collect_<source>:command", its one-line help)
SOURCE_COMMANDS = {name: (f"inventory.cli.collect_{name}:command", about)
                   for name, (_module, about) in registry.SOURCES.items()}


CONCURRENCY_OPTION = click.option(
    "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
    help="Scopes read at once (accounts × regions × resource types, subscriptions); writes stay serialised.")


@click.group(cls=LazyGroup, lazy_commands=SOURCE_COMMANDS)
@click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr.")
@click.pass_context
def collect(ctx: click.Context, quiet: bool) -> None:
    """Collect the estate from a source or from all configured ones.

    Exit status: 0 succeeded, 1 failed (nothing retired), 3 partial (the
    scopes that succeeded were applied; the others retired nothing).
    """
    ctx.find_root().meta["planb.collect.quiet"] = quiet


class _NothingConfigured(CLIError):
    pass


def _progress(quiet: bool):  # type: ignore[no-untyped-def]
    ctx = click.get_current_context(silent=True)
    return _progress_printer(quiet or bool(ctx and ctx.find_root().meta.get("planb.collect.quiet")))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


class Duration(click.ParamType):
    """A duration such as 90s, 15m, 1h, 1h30m or 2d (a bare number is seconds), in seconds."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        seconds: float | None = None
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if parts and "".join(number + unit for number, unit in parts) == text.replace(" ", ""):
                seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
        if seconds is None or not 0 <= seconds <= 366 * 86400:
            self.fail(f"{value!r} is not a duration such as 90s, 15m, 1h or 1h30m (at most 366d)", param, ctx)
        if param is not None and param.name == "every" and seconds < 1:
            self.fail(f"{value!r} is shorter than one second", param, ctx)
        return seconds


DURATION = Duration()


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    shown = [f"{hours}h"] if hours else []
    shown += [f"{minutes}m"] if minutes else []
    return " ".join(shown + [f"{secs}s"] if secs or not shown else shown)


@collect.command("all")
@click.option("--every", type=DURATION, default=None, metavar="DURATION",
              help="Keep running: start a collection every DURATION (e.g. 1h, 30m, 1h30m, 900s) "
                   "until SIGTERM or Ctrl-C, then exit 0.")
@click.option("--jitter", type=DURATION, default=0.0, metavar="DURATION",
              help="With --every: wait up to this much longer (random) before each next run, so "
                   "several collectors do not start together.")
@CONCURRENCY_OPTION
def collect_all(every: float | None, jitter: float, concurrency: int) -> None:
    """Run every configured source (cloud APIs first, then host-side sources).

    With --every, run on a schedule instead: each run's outcome is printed and recorded
    (a failed run does not stop the schedule); SIGTERM or Ctrl-C between runs stops at
    once, during a run after that run has finished (a second one stops at once)."""
    if every is None:
        if jitter:
            raise click.UsageError("--jitter needs --every")
        _collect_all_once(_configured_collectors(concurrency))
        return
    _collect_all_every(every, jitter, concurrency)


def _configured_collectors(concurrency: int) -> list:  # type: ignore[type-arg]
    collectors = []
    for name, module in registry.available().items():
        try:
            collector = module.from_config()
        except Exception as exc:  # noqa: BLE001 - e.g. an osquery results file that is not JSON
            raise CLIError(f"{name}: {exc}") from exc
        if collector is None:
            click.echo(f"{name}: not configured, skipped", err=True)
            continue
        if hasattr(collector, "concurrency"):
            collector.concurrency = concurrency
        collectors.append(collector)
    if not collectors:
        raise _NothingConfigured("no collector is configured (see docs/how-to/configure.md: PLANB_COLLECT_* variables)")
    return collectors


def _collect_all_once(collectors: list) -> None:  # type: ignore[type-arg]
    runs = run_collectors(collectors)
    for run in runs:
        print_summary(run)
    exit_for(runs)


def _collect_all_every(every: float, jitter: float, concurrency: int) -> None:
    import random
    import signal
    import threading
    import time

    stop = threading.Event()
    running = threading.Event()
    say = _progress(quiet=False)

    def request_stop(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if running.is_set():
            say(f"collect all: {name} received, stopping after the current run "
                "(send it again to stop at once)")
        stop.set()
        # A second signal takes the default action: the process ends at once.  The scopes
        # applied so far stay; the next run takes over the interrupted run's locks.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        number = 0
        while not stop.is_set():
            number += 1
            started = time.monotonic()
            running.set()
            try:
                collectors = _configured_collectors(concurrency)
                say(f"collect all: run {number} starting")
                _collect_all_once(collectors)
            except _NothingConfigured:
                raise   # an error, not a schedule
            except CLIError as exc:   # a failed run (recorded), an unreadable file: try next time
                click.echo(f"Error: {exc}", err=True)
            except Exception as exc:  # noqa: BLE001 - e.g. the database restarting: try next time
                click.echo(f"Error: run {number} did not complete: {type(exc).__name__}: {exc}", err=True)
            finally:
                running.clear()
            if stop.is_set():
                break
            wait = max(0.0, started + every - time.monotonic()) + random.uniform(0, jitter)
            say(f"collect all: run {number} done; next run in {format_duration(wait)}")
            stop.wait(wait)
        say("collect all: stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.group("runs", invoke_without_command=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="Most recent runs to list.")
@click.option("--collector", "collector_name", help="Only runs of this collector.")
@click.option("--status", type=click.Choice(["running", "succeeded", "partial", "failed"]))
@click.option("--id", "run_id", type=DbId("no collection run with id {}"),
              help="Show one run with its scopes.")
@FORMAT_OPTION
@click.pass_context
def runs(ctx: click.Context, limit: int, collector_name: str | None, status: str | None, run_id: int | None,
         fmt: str) -> None:
    """List collection runs: collector, scope, start/end, status, counts, errors.

    A run lists the scopes that did not succeed and those whose latest state is still
    its own; the others are in its counts and summary.  'planb runs prune' drops old runs.
    """
    if ctx.invoked_subcommand is None:
        with_app(_list_runs)(limit, collector_name, status, run_id, fmt)


def _list_runs(limit: int, collector_name: str | None, status: str | None, run_id: int | None,
               fmt: str) -> None:
    import sqlalchemy as sa
    from flask import current_app

    from inventory.app_db import get_session
    from inventory.models import CollectionRun
    from inventory.services.runs import expire_dead_runs

    expire_dead_runs(current_app.extensions["planb_engine"])
    db = get_session()
    stmt = (sa.select(CollectionRun)
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
        click.echo(to_json([_run_dict(db, r, scopes=True) for r in found]))
        return
    rows = [_run_dict(db, r, scopes=False) for r in found]
    emit(rows, RUN_COLUMNS, fmt, RUN_HEADERS, empty=empty)
    if run_id is not None and fmt == "table":
        from inventory.services.runs import run_scopes
        shown, total = run_scopes(db, found[0].id, limit=SCOPES_SHOWN)
        click.echo("")
        emit([{c: getattr(s, c) for c in SUMMARY_COLUMNS} for s in shown],
             SUMMARY_COLUMNS, fmt, SUMMARY_HEADERS, empty="No scopes.")
        if total > len(shown):
            click.echo(f"... and {total - len(shown)} more scopes ('--format json' lists them all)")
        _echo_scope_counts(found[0])


@runs.command("prune")
@click.option("--older-than", "days", type=click.IntRange(1, 36500), default=None,
              help="Drop runs that finished more than DAYS days ago [default: PLANB_RUN_RETENTION_DAYS, 90].")
@click.option("--dry-run", is_flag=True, help="Only say what would be dropped.")
@with_app
def prune(days: int | None, dry_run: bool) -> None:
    """Drop collection runs older than the retention, with their per-scope results.

    The latest state of every scope (status, last success, counts) is always kept.
    """
    from flask import current_app

    from inventory import config
    from inventory.services.runs import prune_history

    days = days or config.get("RUN_RETENTION_DAYS")
    result = prune_history(current_app.extensions["planb_engine"], days, dry_run=dry_run)
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"{verb} {result.runs} run(s) finished before {result.cutoff.isoformat(timespec='seconds')} "
               f"and their {result.scope_results} scope result(s); every scope's latest state is kept")


def _echo_scope_counts(run) -> None:  # type: ignore[no-untyped-def]
    click.echo(f"scopes: {run.scopes_succeeded} succeeded, {run.scopes_partial} partial, "
               f"{run.scopes_failed} failed")


def _run_dict(db, run, scopes: bool) -> dict:  # type: ignore[no-untyped-def]
    data = {
        "id": run.id, "collector": run.collector, "scope": run.scope,
        "started_at": run.started_at, "finished_at": run.finished_at, "status": run.status,
        "created": run.created, "updated": run.updated, "unchanged": run.unchanged,
        "marked_stale": run.marked_stale,
    }
    if scopes:
        from inventory.services.runs import run_scopes
        data["errors"] = list(run.errors or [])
        data["scope_counts"] = {"succeeded": run.scopes_succeeded, "partial": run.scopes_partial,
                                "failed": run.scopes_failed}
        data["summary"] = run.summary
        data["heartbeat_at"] = run.heartbeat_at
        data["scopes"] = [{"scope": s.scope_key, "status": s.status, "created": s.created,
                           "updated": s.updated, "unchanged": s.unchanged,
                           "marked_stale": s.marked_stale, "error": s.error,
                           "finished_at": s.finished_at} for s in run_scopes(db, run.id)[0]]
    else:
        errs = [f"{e.get('scope') or ''}: {e.get('error')}".lstrip(": ") for e in (run.errors or [])]
        data["errors"] = "; ".join(errs) if errs else None
    return data


# ------------------------------------------------------------ running a collector

EXIT_FAILED = 1
EXIT_PARTIAL = 3

SUMMARY_COLUMNS = ("scope_key", "status", "created", "updated", "unchanged", "marked_stale", "error")
# Scopes listed after a run and by 'planb runs --id N' (a fleet run has 100,000).
SCOPES_SHOWN = 50
SUMMARY_HEADERS = ("scope", "status", "created", "updated", "unchanged", "stale", "error")


def _progress_printer(quiet: bool):  # type: ignore[no-untyped-def]
    def progress(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)
    return progress


def run_collectors(collectors: Sequence[Collector], *, quiet: bool | None = None) -> list[CollectionRun]:
    """Run each collector in turn against the configured database (the app's, inside an app
    context); returns the finished runs."""
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
    # No web app needed (and not built: its start-up costs a small import more than the
    # import itself): the same checked settings, logging and engine create_app would give.
    from inventory import config, logging_setup
    from inventory.db import make_engine

    settings = config.load()
    instance = config.default_instance_path()
    config.ensure_instance_path(instance)
    values = config.from_environment_without_secret(instance, settings)
    logging_setup.configure(values["LOG_LEVEL"], values["LOG_FORMAT"])
    engine = make_engine(values["DATABASE_URL"])
    try:
        return _run(engine)
    finally:
        engine.dispose()


def print_summary(run: CollectionRun) -> None:
    """The run's line, a table of its scopes (every one that did not succeed, up to
    ``SCOPES_SHOWN``, then succeeded ones up to the same limit) and its counts."""
    from inventory.cli.output import render_table

    outcomes = sorted(run.outcomes, key=lambda o: (o.status == "succeeded", o.scope_key))
    shown = outcomes[:SCOPES_SHOWN]
    rows = [{c: getattr(s, c) for c in SUMMARY_COLUMNS} for s in shown]
    click.echo(f"Run {run.id} ({run.collector}: {run.scope}) — {run.status}")
    if rows:
        click.echo(render_table(rows, SUMMARY_COLUMNS, SUMMARY_HEADERS, max_width=80))
    if len(outcomes) > len(shown):
        click.echo(f"... and {len(outcomes) - len(shown)} more scopes (planb runs --id {run.id} --format json)")
    if len(outcomes) > 1:
        _echo_scope_counts(run)
    click.echo(f"created {run.created}, updated {run.updated}, unchanged {run.unchanged}, "
               f"marked stale {run.marked_stale}")


def exit_for(runs: Sequence[CollectionRun]) -> None:
    """Raise the CLI error matching the worst run status (nothing when all succeeded)."""
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
        messages = [f"{s.scope_key}: {s.status}" for s in run.outcomes if s.status != "succeeded"]
    shown = messages[:5] + ([f"... and {len(messages) - 5} more"] if len(messages) > 5 else [])
    return f"run {run.id} ({run.collector}) " + "; ".join(shown)


def execute(collector: Collector) -> CollectionRun:
    """Run one collector from a CLI command: progress, summary, exit status."""
    [run] = run_collectors([collector])
    print_summary(run)
    exit_for([run])
    return run


def execute_console(build: Callable[[], Collector], credentials: str, api: str) -> CollectionRun:
    """Run an EDR console's collector: build it and have the console accept its credentials
    before anything is written.  A bad --base-url, refused credentials or a console error
    then stop the command with a message naming ``credentials`` or ``api``."""
    from collectors.consoles import ConsoleApiError, ConsoleCredentialsError

    try:
        collector = build()
        collector.check_credentials()  # type: ignore[attr-defined]
    except ValueError as exc:
        raise CLIError(f"--base-url: {exc}") from exc
    except ConsoleCredentialsError as exc:
        raise CLIError(f"{credentials}: {exc}; nothing was written") from exc
    except ConsoleApiError as exc:
        raise CLIError(f"{api}: {exc}; nothing was written") from exc
    return execute(collector)
