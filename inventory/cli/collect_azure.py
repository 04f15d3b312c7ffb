"""``planb collect azure``: its options, and the collector they build (``collectors.azure``)."""
from __future__ import annotations

import click

from collectors import azure as source
from inventory.cli import CLIError
from inventory.cli.collect import CONCURRENCY_OPTION, execute


@click.command("azure")
@click.option("--subscription", "subscriptions", multiple=True, required=True, metavar="ID",
              help="Subscription id to collect (repeatable).")
@click.option("--base-url", default=None, envvar="PLANB_AZURE_BASE_URL",
              help=f"Resource Manager endpoint (sovereign clouds); default {source.DEFAULT_BASE_URL}.")
@click.option("--resource-type", "resource_types", multiple=True,
              type=click.Choice(source.AzureCollector.RESOURCE_TYPES), help="Limit to vm or vmss (repeatable).")
@click.option("--deadline", type=click.FloatRange(min=1), default=source.DEFAULT_DEADLINE_SECONDS,
              show_default=True, help="Seconds allowed per scope; a slower scope is incomplete.")
@click.option("--retry-total", type=click.IntRange(0, 20), default=source.DEFAULT_RETRY_TOTAL, show_default=True,
              help="azure-core retries per request (429/5xx, honouring Retry-After).")
@CONCURRENCY_OPTION
def command(subscriptions: tuple[str, ...], base_url: str | None, resource_types: tuple[str, ...],
            deadline: float, retry_total: int, concurrency: int) -> None:
    """Collect VMs (image, extensions, power state) and scale sets from Azure subscriptions.

    Exit status 0 when every scope succeeded, 3 when some did not (those
    kept their earlier data and retired nothing), 1 when none did.
    """
    if base_url and not base_url.startswith("https://"):
        raise CLIError("--base-url must be an https:// URL (bearer tokens are never sent in clear)")
    collector = source.AzureCollector(list(subscriptions), base_url=base_url,
                                      resource_types=resource_types or source.AzureCollector.RESOURCE_TYPES,
                                      deadline_seconds=deadline, retry_total=retry_total,
                                      client_factory=source.client_factory_for(base_url),
                                      concurrency=concurrency)
    execute(collector)
