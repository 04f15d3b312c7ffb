"""``planb collect aws``: its options, and the collector they build (``collectors.aws``)."""
from __future__ import annotations

import click
from botocore.exceptions import BotoCoreError

from collectors import aws as source
from inventory.cli import CLIError
from inventory.cli.collect import CONCURRENCY_OPTION, execute


@click.command("aws")
@click.option("--region", "regions", multiple=True, metavar="REGION",
              help="Region to collect (repeatable); 'all' or none = every enabled region.")
@click.option("--profile", "profiles", multiple=True, metavar="PROFILE",
              help="Named profile = one account (repeatable).")
@click.option("--assume-role", "role_arns", multiple=True, metavar="ARN",
              help="Role to assume from the default credential chain = one account (repeatable).")
@click.option("--external-id", default=None, help="ExternalId for --assume-role.")
@click.option("--resource-type", "resource_types", multiple=True, type=click.Choice(source.RESOURCE_TYPES),
              help="Limit to these resource types (repeatable; default all).")
@click.option("--deadline", type=click.FloatRange(min=1), default=source.DEFAULT_DEADLINE_SECONDS,
              show_default=True, help="Seconds allowed per scope; a slower scope is incomplete.")
@click.option("--max-attempts", type=click.IntRange(1, 20), default=source.DEFAULT_MAX_ATTEMPTS,
              show_default=True, help="botocore standard-mode attempts per API call (throttling retries).")
@click.option("--endpoint-url", default=None,
              help="Endpoint for every service (default: boto3's, incl. AWS_ENDPOINT_URL).")
@click.option("--no-ssm", is_flag=True, help="Skip SSM inventory (installed software, OS details).")
@CONCURRENCY_OPTION
def command(regions: tuple[str, ...], profiles: tuple[str, ...], role_arns: tuple[str, ...],
            external_id: str | None, resource_types: tuple[str, ...], deadline: float,
            max_attempts: int, endpoint_url: str | None, no_ssm: bool, concurrency: int) -> None:
    """Collect EC2, ELBv2, RDS, EKS and Lambda from AWS accounts and regions.

    Exit status 0 when every scope succeeded, 3 when some did not (those
    kept their earlier data and retired nothing; a scope whose SSM inventory failed
    is applied but its instances' software is left as it was), 1 when none did.
    """
    try:
        accounts = source.build_accounts(profiles, role_arns, endpoint_url=endpoint_url,
                                         max_attempts=max_attempts, external_id=external_id)
    except BotoCoreError as exc:  # e.g. ProfileNotFound
        raise CLIError(f"AWS configuration: {exc}") from exc
    collector = source.AwsCollector(accounts, list(regions) or None,
                                    resource_types=resource_types or source.RESOURCE_TYPES,
                                    client_factory=source.CLIENT_FACTORY, deadline_seconds=deadline,
                                    max_attempts=max_attempts, endpoint_url=endpoint_url,
                                    collect_ssm=not no_ssm, concurrency=concurrency)
    execute(collector)
