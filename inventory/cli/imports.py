"""``planb import``: an estate file (the bare form), an SBOM or a CMDB export.

``planb import FILE`` imports an estate file, as it always has (it is short for ``planb import
estate FILE``); ``planb import sbom FILE --asset KEY`` and ``planb import csv FILE`` read the other
documents.  A first argument that is not one of the subcommands is the estate file (write
``planb import estate sbom`` for an estate file named ``sbom``).
"""
from __future__ import annotations

import click

from inventory.cli import LazyGroup

# name -> ("module:attribute", its one-line help)
IMPORT_COMMANDS: dict[str, tuple[str, str]] = {
    "estate": ("inventory.cli.estate:import_cmd",
               "Import an estate FILE (YAML or JSON; '-' reads standard input)."),
    "sbom": ("inventory.cli.sbom:command",
             "Import an SBOM (CycloneDX 1.4-1.6 JSON or XML, SPDX 2.3 JSON) as the components of "
             "the application asset KEY."),
    "csv": ("inventory.cli.cmdb:command",
            "Import a CMDB export (CSV; ServiceNow cmdb_ci_server columns unless --mapping says otherwise)."),
}
DEFAULT_COMMAND = "estate"


class ImportGroup(LazyGroup):
    """A group whose bare form (``planb import FILE``) runs its default command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.list_commands(ctx) and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["[OPTIONS] FILE | COMMAND [ARGS]..."]


@click.group("import", cls=ImportGroup, lazy_commands=IMPORT_COMMANDS)
def import_group() -> None:
    """Import an estate FILE (YAML or JSON; '-' reads standard input), an SBOM or a CMDB export.

    \b
      planb import FILE [--dry-run]          the estate file (= planb import estate FILE)
      planb import sbom FILE --asset KEY     an application's SBOM
      planb import csv FILE [--mapping M]    a CMDB export
    """
