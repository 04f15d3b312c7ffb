"""``planb collect host``: this machine (``collectors.host``)."""
from __future__ import annotations

import click

from inventory.cli.collect import execute


@click.command("host")
@click.option("--hostname", default=None, help="Name to record instead of this machine's hostname.")
@click.option("--no-packages", is_flag=True, help="Only the OS facts, not the installed packages.")
def command(hostname: str | None, no_packages: bool) -> None:
    """Collect this machine: OS, kernel and installed packages (dpkg, rpm, Windows registry, macOS apps)."""
    from collectors.host import HostCollector

    execute(HostCollector(hostname=hostname, include_packages=not no_packages))
