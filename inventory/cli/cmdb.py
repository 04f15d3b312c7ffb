"""``planb import csv FILE [--mapping MAPPING.yaml]``: a CMDB export (``collectors.cmdb``)."""
from __future__ import annotations

import click

from inventory.cli import CLIError, with_app


@click.command("csv")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--mapping", "mapping_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="YAML mapping of the export's columns (default: ServiceNow cmdb_ci_server, see "
                   "docs/how-to/cmdb-csv.md).")
@click.option("--scope", default=None,
              help="Collection scope (cmdb:SCOPE) instead of the mapping's; a later complete import of the "
                   "same scope retires the CIs it no longer lists.")
@click.option("--skip-bad-rows", is_flag=True,
              help="Import the good rows and report the bad ones (the scope then retires nothing) instead of "
                   "refusing the whole file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr.")
@with_app
def command(file: str, mapping_path: str | None, scope: str | None, skip_bad_rows: bool, quiet: bool) -> None:
    """Import a CMDB export (CSV; ServiceNow cmdb_ci_server columns unless --mapping says otherwise).

    Creates or updates one asset per row (by the mapping's key column) with its owner,
    criticality, environment, OS and the dependencies its depends_on column lists.  A bad row
    refuses the whole file, naming the row and column, and nothing is written -- unless
    --skip-bad-rows.  Exit status 0 when applied, 3 when bad rows were skipped, 1 on error.
    """
    from collectors.cmdb import CmdbError, load_mapping, read_export
    from inventory import migrate
    from inventory.app_db import get_engine
    from inventory.auth import current_actor
    from inventory.cli import UNMIGRATED_MESSAGE
    from inventory.cli.collect import exit_for, print_summary
    from inventory.services.source_imports import import_cmdb

    if scope is not None and (not scope.strip() or ":" in scope or any(c.isspace() for c in scope)):
        raise CLIError(f"--scope {scope!r}: expected a name without spaces or ':' (the scope is cmdb:NAME)")
    engine = get_engine()
    if not migrate.is_current(engine):
        raise CLIError(UNMIGRATED_MESSAGE)
    try:
        mapping = load_mapping(mapping_path)
        export = read_export(file, mapping, skip_bad_rows=skip_bad_rows, scope=scope)
    except CmdbError as exc:
        raise CLIError(f"CMDB import refused, nothing written: {exc}") from None

    def progress(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    column = (mapping.columns.get("depends_on") or ["depends_on"])[0]
    try:
        run = import_cmdb(engine, export, actor=current_actor(), skip_bad_rows=skip_bad_rows,
                          depends_on_column=column, progress=progress)
    except CmdbError as exc:
        raise CLIError(f"CMDB import refused, nothing written: {exc}") from None
    print_summary(run)
    click.echo(f"{file}: {len(export.assets)} CI(s) and {len(export.dependencies)} dependencies into scope "
               f"{export.scope_key}; {export.excluded} row(s) excluded by the mapping, "
               f"{len(export.skipped)} bad row(s) skipped.")
    for message in export.skipped[:20]:
        click.echo(f"  skipped: {message}", err=True)
    exit_for([run])
