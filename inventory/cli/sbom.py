"""``planb import sbom FILE --asset KEY``: an application's SBOM as its components."""
from __future__ import annotations

import sys

import click

from inventory.cli import CLIError, with_app
from inventory.cli.output import to_json


@click.command("sbom")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option("--asset", "asset_key", required=True, metavar="KEY",
              help="Natural key of the application the SBOM describes (created as an application if absent), "
                   "e.g. app:payments-api.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr.")
@with_app
def command(file: str, asset_key: str, fmt: str, quiet: bool) -> None:
    """Import an SBOM (CycloneDX 1.4-1.6 JSON or XML, SPDX 2.3 JSON) as the components of the application asset KEY.

    Each component becomes an installation of the asset, attributed to a vendor by its supplier,
    publisher, manufacturer or author, else by its package URL.  A new SBOM for the same asset
    replaces the previous one's components; what other sources found on the asset stays.  A
    document that is not valid is refused with its position, and nothing is written.
    """
    from collectors.sbom import SbomError, load_file, parse
    from inventory import migrate
    from inventory.app_db import get_engine
    from inventory.auth import current_actor
    from inventory.cli import UNMIGRATED_MESSAGE
    from inventory.cli.collect import exit_for, print_summary
    from inventory.services.source_imports import ImportRefused, import_sbom

    engine = get_engine()
    if not migrate.is_current(engine):
        raise CLIError(UNMIGRATED_MESSAGE)
    try:
        document = parse(sys.stdin.buffer.read(), "<stdin>") if file == "-" else load_file(file)
    except SbomError as exc:
        raise CLIError(f"SBOM refused, nothing written: {exc}") from None
    source = "<stdin>" if file == "-" else file

    def progress(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    try:
        result = import_sbom(engine, document, asset_key, actor=current_actor(), source=source,
                             progress=progress)
    except ImportRefused as exc:
        raise CLIError(f"SBOM refused, nothing written: {exc}") from None
    if fmt == "json":
        click.echo(to_json(result.as_dict()))
    else:
        print_summary(result.run)
        click.echo(f"{source}: {document.format}, {len(document.components)} component(s) as "
                   f"{result.products} product(s) of {asset_key}"
                   f"{' (asset created)' if result.created_asset else ''}; "
                   f"{result.version_unknown} without a comparable version, {result.unattributed} unattributed "
                   f"('planb vendors --unattributed').")
    exit_for([result.run])
