"""``planb collect osquery``: results logs and osqueryi output (``collectors.osquery``)."""
from __future__ import annotations

import click

from collectors import osquery as source
from inventory.cli import CLIError
from inventory.cli.collect import execute


@click.command("osquery")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--host", default=None, help="Host the osqueryi --json output belongs to.")
@click.option("--table", type=click.Choice(source.TABLES), default=None,
              help="Table of osqueryi --json output when it cannot be recognised from its columns.")
def command(files: tuple[str, ...], host: str | None, table: str | None) -> None:
    """Import osquery results: FILES are results logs (several hosts) or osqueryi --json output."""
    try:
        collector = source.OsqueryCollector(source.expand_paths(files), host=host, table=table)
    except source.OsqueryFormatError as exc:
        raise CLIError(f"osquery import rejected, nothing written: {exc}") from exc
    execute(collector)
