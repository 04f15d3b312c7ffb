"""``planb collect crowdstrike``: the hosts of a Falcon console (``collectors.crowdstrike``)."""
from __future__ import annotations

import click

from collectors import crowdstrike as source
from inventory.cli.collect import execute_console


@click.command("crowdstrike")
@click.option("--base-url", default=None, metavar="CLOUD|URL",
              help=f"Falcon cloud ({', '.join(source.CLOUDS)}) or API URL; default {source.DEFAULT_CLOUD}. "
                   "Plain http:// only to a loopback address.")
@click.option("--filter", "fql", default=None, metavar="FQL",
              help="Only the hosts matching this FQL filter, e.g. \"platform_name:'Windows'\" "
                   "(a filtered run is its own scope).")
@click.option("--max-retries", type=click.IntRange(0, 20), default=source.DEFAULT_MAX_RETRIES,
              show_default=True, help="Retries per request after a 429 (waiting for X-RateLimit-RetryAfter).")
def command(base_url: str | None, fql: str | None, max_retries: int) -> None:
    """Collect the hosts of a CrowdStrike Falcon console and their sensor versions.

    Credentials: FALCON_CLIENT_ID and FALCON_CLIENT_SECRET (an API client with the
    Hosts: Read and Sensor update policies: Read scopes).  Exit status 0 when the run
    succeeded, 3 when it was partial (nothing retired), 1 when it failed or the
    console refused the credentials (then nothing is written).
    """
    client_id, secret = source.credentials_from_environment()
    execute_console(lambda: source.CrowdStrikeCollector(client_id, secret, base_url=base_url, fql=fql,
                                                        max_retries=max_retries),
                    credentials="CrowdStrike credentials", api="CrowdStrike API")
