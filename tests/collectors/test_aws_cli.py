"""``planb collect aws`` end to end against moto's standalone server: CLI → AwsCollector → boto3
(real HTTP, ``AWS_ENDPOINT_URL`` from the environment) → ingest → the database."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from click.testing import CliRunner

import collectors.aws
from collectors.aws import AwsAccount, ec2_key, eks_key, lambda_key, lb_key, rds_key, tg_key
from inventory.cli import main
from inventory.db import make_engine
from inventory.models import Asset, CollectionRun, Dependency, Installation, Product, Vendor
from tests.collectors.aws_helpers import (
    ACCOUNT,
    WINDOWS_AMI,
    Injector,
    application,
    aws_env,
    data_and_platform,
    ec2_error,
    factory_with,
    inject,
    instance_information,
    moto_server,
    network,
    no_backoff,
    queue_applications,
    run_instances,
    stubbed_ssm,
    web_tier,
)

__all__ = ["aws_env", "moto_server", "no_backoff"]  # fixtures imported for pytest

US, EU = "us-east-1", "eu-west-1"
COMMAND = ["collect", "aws", "--region", US, "--region", EU]


@pytest.fixture
def estate(aws_env: str) -> dict[str, Any]:
    """Two regions: web tiers (ALB → target group → instances) in both, RDS/EKS/Lambda in us-east-1."""
    us, eu = network(US), network(EU)
    us_ids = run_instances(us, 2, image=WINDOWS_AMI, name="pos", tags={"Environment": "prod"})
    eu_ids = run_instances(eu, 2, name="web-eu")
    web_tier(us, us_ids)
    web_tier(eu, eu_ids, min_up_tag=None)
    data_and_platform(us)
    return {"us": us_ids, "eu": eu_ids}


def ssm_for(estate: dict[str, Any]) -> Any:
    """SSM (Stubber): the first us-east-1 instance is managed and runs the Falcon sensor."""
    managed = estate["us"][0]
    apps = [application("CrowdStrike Windows Sensor", "CrowdStrike, Inc.", "7.11.18110.0"),
            application("Microsoft Edge", "Microsoft Corporation", "120.0.2210.91"),
            application("7-Zip 23.01 (x64)", "Igor Pavlov", "23.01")]

    def make(region: str) -> Any:
        if region == US:
            info = instance_information(managed, computer="POS-01", platform_type="Windows",
                                        name="Microsoft Windows Server 2022 Datacenter", version="10.0.20348")
            client, stubber = stubbed_ssm(region, {managed: (info, apps)})
            queue_applications(stubber, managed, apps)
        else:
            client, stubber = stubbed_ssm(region, {})
        stubber.activate()
        return client

    return make


def stored(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with so.Session(engine) as db:
            a, b = so.aliased(Asset), so.aliased(Asset)
            return {
                "assets": {x.natural_key: x for x in db.scalars(sa.select(Asset))},
                "runs": list(db.scalars(sa.select(CollectionRun).order_by(CollectionRun.id))),
                "edges": {tuple(r) for r in db.execute(
                    sa.select(a.natural_key, b.natural_key, Dependency.kind)
                    .join(a, a.id == Dependency.dependent_id).join(b, b.id == Dependency.dependency_id))},
                "installed": {tuple(r) for r in db.execute(
                    sa.select(Asset.natural_key, Vendor.name, Product.name)
                    .join(Installation, Installation.asset_id == Asset.id)
                    .join(Product, Product.id == Installation.product_id)
                    .join(Vendor, Vendor.id == Product.vendor_id))},
            }
    finally:
        engine.dispose()


def test_collect_aws_two_regions_populates_assets_and_a_second_run_is_unchanged(
        cli_env: str, estate: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collectors.aws, "CLIENT_FACTORY", factory_with(ssm=ssm_for(estate)))
    runner = CliRunner()

    first = runner.invoke(main, COMMAND)

    assert first.exit_code == 0, first.output + first.stderr
    for region in (US, EU):
        assert f"aws:{ACCOUNT}:{region}:ec2" in first.output
    db = stored(cli_env)
    assets = db["assets"]
    for region, ids in ((US, estate["us"]), (EU, estate["eu"])):
        for iid in ids:
            assert assets[ec2_key(ACCOUNT, region, iid)].retired_at is None
        assert assets[tg_key(ACCOUNT, region, "web-tg")].kind == "target_group"
        assert (lb_key(ACCOUNT, region, "web-alb"), tg_key(ACCOUNT, region, "web-tg"), "runs-on") in db["edges"]
    assert assets[tg_key(ACCOUNT, US, "web-tg")].min_up == 2 and assets[tg_key(ACCOUNT, EU, "web-tg")].min_up == 1
    assert {(tg_key(ACCOUNT, EU, "web-tg"), ec2_key(ACCOUNT, EU, i), "member-of") for i in estate["eu"]} <= db["edges"]
    assert {rds_key(ACCOUNT, US, "orders-db"), eks_key(ACCOUNT, US, "platform"),
            lambda_key(ACCOUNT, US, "checkout-fn")} <= set(assets)
    managed = ec2_key(ACCOUNT, US, estate["us"][0])
    assert (managed, "CrowdStrike", "Falcon Sensor") in db["installed"]
    assert assets[managed].os_name == "Microsoft Windows Server 2022 Datacenter"
    # AMIs are attributed: Amazon's Windows_Server-* image is Microsoft's Windows Server, the
    # Ubuntu image owned by 099720109477 is Canonical's
    vendors_of = {}
    for key, vendor, _product in db["installed"]:
        vendors_of.setdefault(key, set()).add(vendor)
    assert vendors_of[ec2_key(ACCOUNT, US, estate["us"][1])] == {"Microsoft"}
    assert vendors_of[ec2_key(ACCOUNT, EU, estate["eu"][0])] == {"Canonical"}
    assert db["runs"][-1].status == "succeeded" and db["runs"][-1].collector == "aws"

    second = runner.invoke(main, COMMAND)

    assert second.exit_code == 0, second.output + second.stderr
    again = stored(cli_env)
    last = again["runs"][-1]
    assert (last.created, last.updated, last.marked_stale) == (0, 0, 0) and last.unchanged > 0
    assert {k: a.updated_at for k, a in again["assets"].items()} == {k: a.updated_at for k, a in assets.items()}
    listing = runner.invoke(main, ["runs", "--collector", "aws"])
    assert listing.exit_code == 0 and listing.output.count("succeeded") == 2


def test_collect_aws_through_the_environment_endpoint_only(cli_env: str, estate: dict[str, Any]) -> None:
    """No hook at all: boto3's own AWS_ENDPOINT_URL (set by the fixture) reaches moto."""
    result = CliRunner().invoke(main, [*COMMAND, "--no-ssm", "--resource-type", "ec2"])

    assert result.exit_code == 0, result.output + result.stderr
    assets = stored(cli_env)["assets"]
    assert {ec2_key(ACCOUNT, US, i) for i in estate["us"]} | {ec2_key(ACCOUNT, EU, i) for i in estate["eu"]} \
        <= set(assets)


def test_collect_aws_partial_exits_3_and_applies_the_healthy_region(
        cli_env: str, estate: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    denied = Injector(lambda: ec2_error("UnauthorizedOperation",
                                        "You are not authorized to perform this operation.", 403))

    def deny_eu(service: str, region: str, client: Any) -> None:
        if service == "ec2" and region == EU:
            inject(client, "DescribeInstances", denied)

    monkeypatch.setattr(collectors.aws, "CLIENT_FACTORY", factory_with(deny_eu, ssm=ssm_for(estate)))

    result = CliRunner().invoke(main, COMMAND)

    assert result.exit_code == 3, result.output + result.stderr
    assert "UnauthorizedOperation" in result.stderr
    db = stored(cli_env)
    assert db["runs"][-1].status == "partial"
    assert not any(k.startswith(f"aws:ec2:{ACCOUNT}:{EU}:") for k in db["assets"])
    assert all(ec2_key(ACCOUNT, US, i) in db["assets"] for i in estate["us"])


class _Ssm500(BaseHTTPRequestHandler):
    """An SSM endpoint that answers every call with HTTP 500 InternalServerError."""

    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"__type": "InternalServerError", "message": "We encountered an internal error."}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("x-amzn-RequestId", "c0ffee00-0000-4000-8000-000000000000")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ssm_answering_500() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ssm500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Ssm500.calls = 0
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_collect_aws_whose_ssm_answers_500_records_every_instance_and_exits_3(
        cli_env: str, estate: dict[str, Any], ssm_answering_500: str, no_backoff: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No hook: EC2 and the rest from moto (AWS_ENDPOINT_URL), SSM from an endpoint that answers
    500 (AWS_ENDPOINT_URL_SSM), through the real clients and their retries."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", ssm_answering_500)

    result = CliRunner().invoke(main, [*COMMAND, "--resource-type", "ec2", "--max-attempts", "2"])

    assert result.exit_code == 3, result.output + result.stderr
    assert "InternalServerError" in result.stderr and "left as it was" in result.stderr
    assert _Ssm500.calls == 2 * 2   # two regions, each GetInventory tried twice
    db = stored(cli_env)
    assert {ec2_key(ACCOUNT, US, i) for i in estate["us"]} | {ec2_key(ACCOUNT, EU, i) for i in estate["eu"]} \
        <= {k for k, a in db["assets"].items() if a.retired_at is None}
    assert db["runs"][-1].status == "partial"
    assert (db["runs"][-1].scopes_partial, db["runs"][-1].scopes_failed) == (2, 0)


def test_collect_aws_unknown_profile_is_a_clean_error(cli_env: str, aws_env: str) -> None:
    result = CliRunner().invoke(main, [*COMMAND, "--profile", "no-such-profile"])

    assert result.exit_code == 1
    assert "no-such-profile" in result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert stored(cli_env)["runs"] == []


def test_cli_factory_hook_receives_each_account(cli_env: str, estate: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, str, str]] = []
    base = factory_with()

    def factory(service: str, region: str, account: AwsAccount) -> Any:
        seen.append((service, region, account.label))
        return base(service, region, account)

    monkeypatch.setattr(collectors.aws, "CLIENT_FACTORY", factory)
    result = CliRunner().invoke(main, ["collect", "aws", "--region", US, "--no-ssm", "--resource-type", "lambda",
                                       "--assume-role", "arn:aws:iam::222222222222:role/planb-reader"])

    assert result.exit_code == 0, result.output + result.stderr
    assert ("lambda", US, "role:arn:aws:iam::222222222222:role/planb-reader") in seen
    assert "aws:222222222222:us-east-1:lambda" in result.output


def test_collect_all_runs_the_configured_cloud_collectors(cli_env: str, estate: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import collectors.azure
    from tests.collectors.azure_payloads import SUBSCRIPTION, RecordedArm, client_for, estate_routes

    monkeypatch.setenv("PLANB_COLLECT_HOST", "false")
    monkeypatch.delenv("PLANB_COLLECT_OSQUERY_PATHS", raising=False)
    monkeypatch.setenv("PLANB_COLLECT_AWS_REGIONS", f"{US},{EU}")
    monkeypatch.setenv("PLANB_COLLECT_AWS_SSM", "false")
    monkeypatch.setenv("PLANB_COLLECT_AZURE_SUBSCRIPTIONS", SUBSCRIPTION)
    monkeypatch.setattr(collectors.azure, "CLIENT_FACTORY",
                        lambda sub, base: client_for(RecordedArm(estate_routes()), sub))

    result = CliRunner().invoke(main, ["collect", "all"])

    assert result.exit_code == 0, result.output + result.stderr
    db = stored(cli_env)
    assert [(r.collector, r.status) for r in db["runs"]] == [("aws", "succeeded"), ("azure", "succeeded")]
    assert {a.provider for a in db["assets"].values()} == {"aws", "azure"}
