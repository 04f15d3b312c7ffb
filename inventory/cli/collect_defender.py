"""``planb collect defender``: Microsoft Defender for Endpoint machines (``collectors.defender``)."""
from __future__ import annotations

import click

from collectors import defender as source
from inventory.cli.collect import execute_console


@click.command("defender")
@click.option("--base-url", default=None, envvar="PLANB_COLLECT_DEFENDER_BASE_URL", metavar="URL",
              help=f"The Defender for Endpoint API; default {source.DEFAULT_BASE_URL} "
                   "(plain http:// only to a loopback address).")
@click.option("--tenant", default=None, envvar="AZURE_TENANT_ID", metavar="ID",
              help="Entra tenant id, for the scope name (default: AZURE_TENANT_ID).")
@click.option("--no-software", is_flag=True,
              help="Skip the software inventory export (when the app lacks Software.Read.All).")
@click.option("--retry-total", type=click.IntRange(0, 20), default=source.DEFAULT_RETRY_TOTAL,
              show_default=True, help="azure-core retries per request (429/5xx, honouring Retry-After).")
def command(base_url: str | None, tenant: str | None, no_software: bool, retry_total: int) -> None:
    """Collect the machines of Microsoft Defender for Endpoint and their software inventory.

    Credentials: azure-identity's DefaultAzureCredential (AZURE_TENANT_ID, AZURE_CLIENT_ID,
    AZURE_CLIENT_SECRET, or workload/managed identity) for an app with Machine.Read.All
    and Software.Read.All.  Exit status 0 when the run succeeded, 3 when it was partial
    (nothing retired), 1 when it failed or the credentials were refused (then nothing is
    written).
    """
    execute_console(lambda: source.DefenderCollector(base_url=base_url, tenant=tenant, software=not no_software,
                                                     retry_total=retry_total),
                    credentials="Defender for Endpoint credentials", api="Defender for Endpoint API")
