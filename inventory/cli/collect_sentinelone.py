"""``planb collect sentinelone``: the agents of a SentinelOne console (``collectors.sentinelone``)."""
from __future__ import annotations

import os

import click

from collectors import sentinelone as source
from inventory.cli.collect import execute_console


@click.command("sentinelone")
@click.option("--base-url", required=True, envvar="PLANB_COLLECT_SENTINELONE_BASE_URL", metavar="URL",
              help="The management console, e.g. https://usea1-acme.sentinelone.net "
                   "(plain http:// only to a loopback address).")
@click.option("--max-retries", type=click.IntRange(0, 20), default=source.DEFAULT_MAX_RETRIES,
              show_default=True, help="Retries per request after a 429 or 5xx (honouring Retry-After).")
def command(base_url: str, max_retries: int) -> None:
    """Collect the agents of a SentinelOne management console and their versions.

    Credentials: S1_API_TOKEN (a Viewer-role service user's API token).  Exit status 0
    when the run succeeded, 3 when it was partial (nothing retired), 1 when it failed or
    the console refused the token (then nothing is written).
    """
    execute_console(lambda: source.SentinelOneCollector(base_url, os.environ.get(source.TOKEN_ENV) or "",
                                                        max_retries=max_retries),
                    credentials="SentinelOne credentials", api="SentinelOne console")
