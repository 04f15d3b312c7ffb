"""``planb collect fleet``: hosts and their software from a Fleet server (``collectors.fleet``)."""
from __future__ import annotations

import os

import click

from collectors import fleet as source
from inventory.cli import CLIError
from inventory.cli.collect import execute


@click.command("fleet")
@click.option("--base-url", default=lambda: os.environ.get("PLANB_COLLECT_FLEET_URL") or None,
              show_default="PLANB_COLLECT_FLEET_URL", metavar="URL",
              help="The Fleet server, e.g. https://fleet.example.com (http only for loopback addresses).")
@click.option("--per-page", type=click.IntRange(1, 10_000), default=source.DEFAULT_PER_PAGE, show_default=True,
              help="Hosts per request (each with its software).")
@click.option("--no-software", is_flag=True, help="Hosts only, without their software.")
@click.option("--retries", type=click.IntRange(0, 20), default=source.DEFAULT_RETRIES, show_default=True,
              help="Retries of a request answered 429 or 5xx (Retry-After is honoured).")
def command(base_url: str | None, per_page: int, no_software: bool, retries: int) -> None:
    """Collect hosts and their software from a Fleet server, one scope per team (token: FLEET_API_TOKEN).

    Exit status 0 when every scope succeeded, 3 when some did not (those kept their
    earlier data and retired nothing), 1 when none did or the token was refused.
    """
    if not base_url:
        raise CLIError("give the Fleet server with --base-url URL (or PLANB_COLLECT_FLEET_URL)")
    try:
        client = source.FleetClient(base_url, os.environ.get(source.TOKEN_VARIABLE) or "", retries=retries)
        collector = source.FleetCollector(client, per_page=per_page, software=not no_software)
        collector.verify()  # a refused token stops here, before anything is written
    except source.FleetError as exc:
        raise CLIError(f"Fleet: {exc}") from None
    execute(collector)
