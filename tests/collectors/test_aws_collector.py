"""AWS collector against moto's standalone server (real HTTP through boto3), with botocore's
Stubber for SSM inventory (which moto lacks) and ``before-send`` fault injection."""
from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from botocore.stub import Stubber

from collectors.aws import (
    AwsAccount,
    AwsCollector,
    MissingIdentity,
    assumed_role_account,
    botocore_config,
    ec2_key,
    eks_key,
    from_config,
    lambda_key,
    lb_key,
    make_client,
    min_up_from_tags,
    rds_key,
    tg_key,
    transform_instance,
)
from collectors.base import ScopeBatch
from collectors.ingest import run_collection
from inventory.impact import blast_radius
from inventory.models import (
    Asset,
    CollectionRun,
    Dependency,
    Installation,
    Product,
    ScopeState,
    UnattributedSoftware,
    Vendor,
)
from tests.collectors.aws_helpers import (
    ACCOUNT,
    UBUNTU_AMI,
    WINDOWS_AMI,
    Injector,
    application,
    aws_env,
    counting,
    data_and_platform,
    default_account,
    ec2_empty_reservations,
    ec2_error,
    factory_with,
    failing_ssm,
    inject,
    instance_information,
    json_error,
    moto_server,
    network,
    no_backoff,
    query_error,
    queue_applications,
    run_instances,
    stubbed_ssm,
    terminate,
    web_tier,
)

__all__ = ["aws_env", "moto_server", "no_backoff"]  # fixtures imported for pytest

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
US, EU = "us-east-1", "eu-west-1"


def collector(regions: list[str], *hooks: Any, types: tuple[str, ...] = ("ec2",), ssm: Any = None,
              max_attempts: int = 8, **kwargs: Any) -> AwsCollector:
    return AwsCollector([default_account()], regions, resource_types=types, collect_ssm=ssm is not None,
                        client_factory=factory_with(*hooks, ssm=ssm, max_attempts=max_attempts),
                        max_attempts=max_attempts, **kwargs)


def batches(c: AwsCollector) -> dict[str, ScopeBatch]:
    return {b.scope_key: b for b in c.collect(lambda _m: None)}


def scope(region: str, kind: str = "ec2", account: str = ACCOUNT) -> str:
    return f"aws:{account}:{region}:{kind}"


def stored_assets(engine: sa.Engine) -> dict[str, Asset]:
    with so.Session(engine) as db:
        return {a.natural_key: a for a in db.scalars(sa.select(Asset))}


def stored_edges(engine: sa.Engine) -> set[tuple[str, str, str, str]]:
    with so.Session(engine) as db:
        a, b = so.aliased(Asset), so.aliased(Asset)
        return {tuple(r) for r in db.execute(
            sa.select(a.natural_key, b.natural_key, Dependency.kind, Dependency.strength)
            .join(a, a.id == Dependency.dependent_id).join(b, b.id == Dependency.dependency_id))}


def installed(engine: sa.Engine, key: str) -> set[tuple[str, str, str | None]]:
    with so.Session(engine) as db:
        return {tuple(r) for r in db.execute(
            sa.select(Vendor.name, Product.name, Installation.version)
            .join(Product, Product.vendor_id == Vendor.id).join(Installation, Installation.product_id == Product.id)
            .join(Asset, Asset.id == Installation.asset_id).where(Asset.natural_key == key))}


# -- EC2 -------------------------------------------------------------------------------------------

def test_instances_in_two_regions(aws_env: str) -> None:
    us, eu = network(US), network(EU)
    [win] = run_instances(us, 1, image=WINDOWS_AMI, name="pos-win-01",
                          tags={"Environment": "prod", "Owner": "retail", "planb:criticality": "critical"})
    [linux] = run_instances(eu, 1, image=UBUNTU_AMI)
    [gone] = run_instances(eu, 1, image=UBUNTU_AMI, name="short-lived")
    terminate(EU, gone)

    result = batches(collector([US, EU]))

    assert set(result) == {scope(US), scope(EU)} and all(b.complete for b in result.values())
    [w] = result[scope(US)].assets
    assert w.natural_key == ec2_key(ACCOUNT, US, win) and w.cloud_instance_id == win
    assert (w.name, w.kind, w.provider, w.account, w.region) == ("pos-win-01", "vm", "aws", ACCOUNT, US)
    assert w.zone == "us-east-1a" and w.os_family == "windows"
    assert (w.environment, w.owner, w.criticality) == ("production", "retail", "critical")
    assert w.attributes["vpc_id"] == us.vpc and w.attributes["subnet_id"] == us.subnets[0]
    assert w.attributes["image_id"] == WINDOWS_AMI and w.attributes["state"] == "running"
    assert w.tags["Name"] == "pos-win-01"
    # terminated instances are gone: not emitted
    [lx] = result[scope(EU)].assets
    assert lx.natural_key == ec2_key(ACCOUNT, EU, linux) and lx.name == linux and lx.os_family == "linux"
    # the AMI owner is the raw publisher for attribution
    assert [(s.origin, s.publisher) for s in result[scope(EU)].software] == [("ami-owner", "099720109477")]
    assert [(s.origin, s.publisher) for s in result[scope(US)].software] == [("ami-owner", "801119661308")]


def test_pagination_beyond_one_page(aws_env: str) -> None:
    us = network(US)
    ids = [i for _ in range(12) for i in run_instances(us, 1)]  # moto pages by reservation
    recorders: list[list[dict[str, Any]]] = []

    def count_pages(service: str, region: str, client: Any) -> None:
        if service == "ec2":
            recorders.append(counting(client, "DescribeInstances"))

    result = batches(collector([US], count_pages, page_size=5))

    [pages] = recorders
    assert len(pages) == 3  # 5 + 5 + 2
    assert all(p.get("MaxResults") == 5 for p in pages)
    assert sorted(a.cloud_instance_id for a in result[scope(US)].assets) == sorted(ids)


def test_throttling_is_retried_by_standard_mode(aws_env: str, no_backoff: None) -> None:
    run_instances(network(US), 2)
    throttle = Injector(lambda: ec2_error("RequestLimitExceeded", "Request limit exceeded.", 503), times=2)

    result = batches(collector([US], lambda s, r, c: s == "ec2" and inject(c, "DescribeInstances", throttle)))

    assert result[scope(US)].complete, result[scope(US)].error
    assert len(result[scope(US)].assets) == 2
    assert (throttle.injected, throttle.sent) == (2, 3)  # two throttles, then the real call


def test_throttling_that_outlasts_the_retries_fails_only_that_scope(aws_env: str, no_backoff: None) -> None:
    run_instances(network(US), 1)
    run_instances(network(EU), 1)
    throttle = Injector(lambda: ec2_error("RequestLimitExceeded", "Request limit exceeded.", 503))

    def hook(service: str, region: str, client: Any) -> None:
        if service == "ec2" and region == US:
            inject(client, "DescribeInstances", throttle)

    result = batches(collector([US, EU], hook, max_attempts=3))

    assert not result[scope(US)].complete
    assert "RequestLimitExceeded" in result[scope(US)].error
    assert throttle.sent == 3  # max_attempts
    assert result[scope(EU)].complete and len(result[scope(EU)].assets) == 1


def test_terminated_between_two_successful_runs_is_retired(aws_env: str, engine: sa.Engine) -> None:
    us = network(US)
    keep, drop = run_instances(us, 2)
    first = run_collection(engine, collector([US]), now=T0)
    assert first.status == "succeeded" and first.created >= 2

    terminate(US, drop)
    second = run_collection(engine, collector([US]), now=T0 + timedelta(hours=1))

    assert second.status == "succeeded"
    assert second.marked_stale == 1
    assets = stored_assets(engine)
    assert assets[ec2_key(ACCOUNT, US, drop)].retired_at is not None
    assert assets[ec2_key(ACCOUNT, US, keep)].retired_at is None


def test_a_denied_region_makes_the_run_partial_and_retires_nothing_there(aws_env: str, engine: sa.Engine) -> None:
    us, eu = network(US), network(EU)
    _us_keep, us_drop = run_instances(us, 2)
    eu_keep, eu_drop = run_instances(eu, 2)
    assert run_collection(engine, collector([US, EU]), now=T0).status == "succeeded"

    terminate(US, us_drop)
    terminate(EU, eu_drop)
    denied = Injector(lambda: ec2_error("UnauthorizedOperation", "You are not authorized to perform this operation.",
                                        403))

    def deny_eu(service: str, region: str, client: Any) -> None:
        if service == "ec2" and region == EU:
            inject(client, "DescribeInstances", denied)

    run = run_collection(engine, collector([US, EU], deny_eu), now=T0 + timedelta(hours=1))

    assert run.status == "partial"
    scopes = {s.scope_key: s for s in run.outcomes}
    assert scopes[scope(US)].status == "succeeded" and scopes[scope(US)].marked_stale == 1
    assert scopes[scope(EU)].status == "failed" and "UnauthorizedOperation" in scopes[scope(EU)].error
    assert denied.sent == 1  # AccessDenied-type errors are not retried
    assets = stored_assets(engine)
    assert assets[ec2_key(ACCOUNT, US, us_drop)].retired_at is not None      # applied
    assert assets[ec2_key(ACCOUNT, EU, eu_drop)].retired_at is None          # nothing retired there
    assert assets[ec2_key(ACCOUNT, EU, eu_keep)].retired_at is None
    assert any("UnauthorizedOperation" in (e.get("error") or "") for e in run.errors)


def test_a_region_whose_endpoint_fails_is_incomplete(aws_env: str) -> None:
    run_instances(network(US), 1)
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    healthy = factory_with(max_attempts=1)

    def factory(service: str, region: str, account: AwsAccount) -> Any:
        if region == EU:
            return make_client(service, region, account, config=botocore_config(1), endpoint_url=dead)
        return healthy(service, region, account)

    result = batches(AwsCollector([default_account()], [US, EU], resource_types=["ec2"], collect_ssm=False,
                                  client_factory=factory))

    assert result[scope(US)].complete
    assert not result[scope(EU)].complete and "EndpointConnectionError" in result[scope(EU)].error


def test_deadline_per_scope(aws_env: str) -> None:
    run_instances(network(US), 6)
    ticks = iter(range(0, 1_000_000, 40))

    result = batches(collector([US], page_size=5, deadline_seconds=60, clock=lambda: next(ticks)))

    assert not result[scope(US)].complete
    assert "deadline of 60s exceeded" in result[scope(US)].error


def test_record_without_identity_makes_the_scope_incomplete(aws_env: str) -> None:
    def stub_ec2(service: str, region: str, client: Any) -> None:
        if service != "ec2":
            return
        stubber = Stubber(client)
        stubber.add_response("describe_instances", {"Reservations": [{"Instances": [
            {"InstanceId": "i-0aaaaaaaaaaaaaaa1", "State": {"Name": "running"}},
            {"State": {"Name": "running"}, "ImageId": UBUNTU_AMI},
        ]}]})
        stubber.activate()

    result = batches(collector([US], stub_ec2))

    batch = result[scope(US)]
    assert not batch.complete and "MissingIdentity" in batch.error and "InstanceId" in batch.error
    assert batch.assets == []  # all or nothing: earlier data stays as it was
    with pytest.raises(MissingIdentity):
        transform_instance({"State": {"Name": "running"}}, ACCOUNT, US, None)


# -- SSM inventory ----------------------------------------------------------------------------------

def test_ssm_inventory_adds_installed_software_and_os_details(aws_env: str, engine: sa.Engine) -> None:
    us = network(US)
    managed, unmanaged = run_instances(us, 2, image=WINDOWS_AMI)
    apps = [application("CrowdStrike Windows Sensor", "CrowdStrike, Inc.", "7.11.18110.0"),
            application("Google Chrome", "Google LLC", "120.0.6099.130"),
            application("Amazon SSM Agent", "Amazon Web Services", "3.3.131.0")]
    info = instance_information(managed, computer="POS-WIN-01.corp.example", platform_type="Windows",
                                name="Microsoft Windows Server 2022 Datacenter", version="10.0.20348")
    client, stubber = stubbed_ssm(US, {managed: (info, apps)}, page_size=5)
    queue_applications(stubber, managed, apps, max_results=5)
    stubber.activate()

    run = run_collection(engine, collector([US], ssm=lambda region: client, page_size=5), now=T0)

    assert run.status == "succeeded", run.errors
    stubber.assert_no_pending_responses()  # both inventory calls, the second entries page included
    assets = stored_assets(engine)
    win = assets[ec2_key(ACCOUNT, US, managed)]
    assert (win.os_family, win.os_name, win.os_version) == (
        "windows", "Microsoft Windows Server 2022 Datacenter", "10.0.20348")
    assert win.hostname == "POS-WIN-01.corp.example"
    assert ("CrowdStrike", "Falcon Sensor", "7.11.18110.0") in installed(engine, win.natural_key)
    assert assets[ec2_key(ACCOUNT, US, unmanaged)].os_name != "Microsoft Windows Server 2022 Datacenter"
    with so.Session(engine) as db:
        unattributed = {(u.name, u.publisher) for u in db.scalars(sa.select(UnattributedSoftware))}
        all_raw = unattributed | {(i.raw_name, i.raw_publisher) for i in db.scalars(sa.select(Installation))}
    assert ("Google Chrome", "Google LLC") in all_raw  # attributed or listed, never dropped


def test_ssm_inventory_over_several_pages(aws_env: str) -> None:
    us = network(US)
    ids = run_instances(us, 3)
    inventory = {i: (instance_information(i, computer=f"host-{n}", platform_type="Linux", name="Ubuntu",
                                          version="22.04"), [application("falcon-sensor", "CrowdStrike", "7.14.0")])
                 for n, i in enumerate(ids)}
    client, stubber = stubbed_ssm(US, inventory, inventory_pages=2)
    for i in ids:
        queue_applications(stubber, i, inventory[i][1])
    stubber.activate()

    batch = batches(collector([US], ssm=lambda region: client))[scope(US)]

    stubber.assert_no_pending_responses()
    assert batch.complete
    assert {a.hostname for a in batch.assets} == {"host-0", "host-1", "host-2"}
    assert {(s.name, s.publisher) for s in batch.software if s.origin == "package"} == {("falcon-sensor", "CrowdStrike")}


@pytest.mark.parametrize("code, status, attempts", [
    ("AccessDeniedException", 400, 1),    # refused: not retried
    ("InternalServerError", 500, 3),      # an HTTP error after botocore's retries
    ("ThrottlingException", 400, 3),      # throttled past the retries
])
def test_ssm_failing_applies_the_instances_and_leaves_their_software_as_it_was(
        aws_env: str, engine: sa.Engine, no_backoff: None, code: str, status: int, attempts: int) -> None:
    us = network(US)
    managed, other = run_instances(us, 2, image=WINDOWS_AMI)
    apps = [application("CrowdStrike Windows Sensor", "CrowdStrike, Inc.", "7.11.18110.0")]
    info = instance_information(managed, computer="POS-WIN-01", platform_type="Windows",
                                name="Microsoft Windows Server 2022 Datacenter", version="10.0.20348")
    client, stubber = stubbed_ssm(US, {managed: (info, apps)})
    queue_applications(stubber, managed, apps)
    stubber.activate()
    assert run_collection(engine, collector([US], ssm=lambda region: client), now=T0).status == "succeeded"
    key = ec2_key(ACCOUNT, US, managed)
    before = installed(engine, key)
    assert ("CrowdStrike", "Falcon Sensor", "7.11.18110.0") in before
    terminate(US, other)

    failing, injector = failing_ssm(US, lambda: json_error(code, "User is not authorized to perform: "
                                                                  "ssm:GetInventory" if status == 400 and attempts == 1
                                                                  else "Service unavailable", status))
    run = run_collection(engine, collector([US], ssm=lambda region: failing, max_attempts=3),
                         now=T0 + timedelta(hours=1))

    assert run.status == "partial"
    [outcome] = run.outcomes
    assert outcome.status == "partial"
    assert code in outcome.error and "GetInventory" in outcome.error and "left as it was" in outcome.error
    assert ("--no-ssm" in outcome.error) == (code == "AccessDeniedException")
    assert outcome.software_unread == [key] and outcome.marked_stale == 1
    assert injector.sent == attempts
    assets = stored_assets(engine)
    assert assets[key].retired_at is None                                    # applied as usual
    assert assets[ec2_key(ACCOUNT, US, other)].retired_at is not None        # and retired as usual
    assert installed(engine, key) == before                                  # software as it was
    assert assets[key].os_name == "Microsoft Windows Server 2022 Datacenter"  # what SSM said stands
    assert assets[key].hostname == "POS-WIN-01" and "ssm_agent_version" in assets[key].attributes
    with so.Session(engine) as db:
        state = db.get(ScopeState, scope(US))
        assert state is not None and state.status == "partial" and state.software_unread == [key]
        # the blast radius names the instance whose software is unconfirmed
        confidence = blast_radius(db, {"vendor": "CrowdStrike"}).confidence
    assert confidence["software_unconfirmed"]["sample"] == [key]
    assert confidence["software_unconfirmed"]["hits"] == 1
    assert any("software left unconfirmed" in n and key in n for n in confidence["notes"])


def test_ssm_entries_failing_for_one_instance_leave_only_its_software_unread(aws_env: str) -> None:
    ids = run_instances(network(US), 3)
    inventory = {i: (instance_information(i, computer=f"host-{n}", platform_type="Linux", name="Ubuntu",
                                          version="22.04"), [application("falcon-sensor", "CrowdStrike", "7.14.0")])
                 for n, i in enumerate(ids)}
    client, stubber = stubbed_ssm(US, inventory)
    broken = ids[1]
    for i in ids:   # ListInventoryEntries is asked in the order DescribeInstances listed the instances
        if i == broken:
            stubber.add_client_error("list_inventory_entries", service_error_code="InternalServerError",
                                     service_message="Internal error", http_status_code=500)
        else:
            queue_applications(stubber, i, inventory[i][1])
    stubber.activate()

    batch = batches(collector([US], ssm=lambda region: client))[scope(US)]

    stubber.assert_no_pending_responses()
    assert batch.complete
    assert batch.software_unread == [ec2_key(ACCOUNT, US, broken)]
    assert "InternalServerError" in batch.error and "1 of 3" in batch.error
    read = {s.asset_key for s in batch.software if s.origin == "package"}
    assert read == {ec2_key(ACCOUNT, US, i) for i in ids if i != broken}
    assert {a.hostname for a in batch.assets} == {"host-0", "host-1", "host-2"}  # its OS details did come through


def test_regions_are_collected_concurrently(aws_env: str) -> None:
    """A slow DescribeInstances (a stubbed endpoint taking 0.5 s): four regions with
    --concurrency 4 take about the time of one, not four (generous margin: < 2.5x)."""
    regions = [US, EU, "us-west-2", "ap-southeast-2"]

    def slow_ec2(service: str, region: str, client: Any) -> None:
        def answer(request: Any, **kwargs: Any) -> Any:
            time.sleep(0.5)
            return ec2_empty_reservations()
        client.meta.events.register("before-send.ec2.DescribeInstances", answer)

    clients = {region: factory_with(slow_ec2)("ec2", region, default_account()) for region in regions}
    account = AwsAccount(label="default", session=boto3.Session(), account_id=ACCOUNT)

    def timed(wanted: list[str]) -> float:
        collector = AwsCollector([account], wanted, resource_types=["ec2"], collect_ssm=False, concurrency=4,
                                 client_factory=lambda service, region, _account: clients[region])
        started = time.perf_counter()
        result = batches(collector)
        elapsed = time.perf_counter() - started
        assert all(b.complete for b in result.values()) and len(result) == len(wanted)
        return elapsed

    one = timed([US])
    four = timed(regions)

    assert four < 2.5 * one, (one, four)


# -- ELBv2, RDS, EKS, Lambda ---------------------------------------------------------------------

def test_target_groups_become_groups_with_member_edges(aws_env: str, engine: sa.Engine) -> None:
    us = network(US)
    ids = run_instances(us, 3, name="web")
    tier = web_tier(us, ids[:2], min_up_tag="2")

    run = run_collection(engine, collector([US], types=("ec2", "elbv2")), now=T0)

    assert run.status == "succeeded", run.errors
    assets = stored_assets(engine)
    web_tg = assets[tg_key(ACCOUNT, US, "web-tg")]
    assert (web_tg.kind, web_tg.min_up) == ("target_group", 2)          # planb:min_up tag
    assert assets[tg_key(ACCOUNT, US, "spare-tg")].min_up == 1          # the default
    alb = assets[lb_key(ACCOUNT, US, "web-alb")]
    assert alb.kind == "load_balancer" and alb.environment == "production"
    assert alb.attributes["arn"] == tier.arns["web-alb"]
    assert stored_edges(engine) == {
        (lb_key(ACCOUNT, US, "web-alb"), tg_key(ACCOUNT, US, "web-tg"), "runs-on", "hard"),
        (tg_key(ACCOUNT, US, "web-tg"), ec2_key(ACCOUNT, US, ids[0]), "member-of", "hard"),
        (tg_key(ACCOUNT, US, "web-tg"), ec2_key(ACCOUNT, US, ids[1]), "member-of", "hard"),
    }
    assert {s.scope_key: s.status for s in run.outcomes} == {scope(US): "succeeded",
                                                                   scope(US, "elbv2"): "succeeded"}


def test_rds_eks_lambda_assets(aws_env: str) -> None:
    data_and_platform(network(US))

    result = batches(collector([US], types=("rds", "eks", "lambda")))

    assert all(b.complete for b in result.values())
    [db] = result[scope(US, "rds")].assets
    assert (db.natural_key, db.kind, db.zone) == (rds_key(ACCOUNT, US, "orders-db"), "database", "us-east-1a")
    assert (db.owner, db.criticality) == ("dba-team", "critical")
    assert [(s.name, s.version) for s in result[scope(US, "rds")].software] == [("postgres", "15.4")]
    [cluster] = result[scope(US, "eks")].assets
    assert (cluster.natural_key, cluster.kind, cluster.min_up) == (eks_key(ACCOUNT, US, "platform"), "cluster", None)
    assert cluster.attributes["kubernetes_version"] == "1.29" and cluster.environment == "production"
    [fn] = result[scope(US, "lambda")].assets
    assert (fn.natural_key, fn.kind, fn.attributes["runtime"]) == (
        lambda_key(ACCOUNT, US, "checkout-fn"), "function", "python3.12")


def test_second_run_over_an_unchanged_estate_reports_everything_unchanged(aws_env: str, engine: sa.Engine) -> None:
    for region in (US, EU):
        net = network(region)
        ids = run_instances(net, 3, name=f"web-{region}", tags={"Environment": "prod"})
        web_tier(net, ids)
    data_and_platform(network(US))
    types = ("ec2", "lambda", "elbv2", "rds", "eks")

    first = run_collection(engine, collector([US, EU], types=types), now=T0)
    assert first.status == "succeeded", first.errors
    with so.Session(engine) as db:
        before = {a.natural_key: (a.updated_at, a.last_seen) for a in db.scalars(sa.select(Asset))}

    second = run_collection(engine, collector([US, EU], types=types), now=T0 + timedelta(hours=1))

    assert second.status == "succeeded", second.errors
    assert (second.created, second.updated, second.marked_stale) == (0, 0, 0)
    assert second.unchanged >= len(before)
    with so.Session(engine) as db:
        after = {a.natural_key: (a.updated_at, a.last_seen) for a in db.scalars(sa.select(Asset))}
    assert after == before


# -- accounts and regions --------------------------------------------------------------------------

def test_enabled_regions_are_discovered(aws_env: str) -> None:
    data_and_platform(network(EU))

    def regions(service: str, region: str, client: Any) -> None:
        if service == "ec2":
            stubber = Stubber(client)
            stubber.add_response("describe_regions", {"Regions": [
                {"RegionName": EU, "OptInStatus": "opt-in-not-required", "Endpoint": "ec2.eu-west-1.amazonaws.com"},
                {"RegionName": "af-south-1", "OptInStatus": "not-opted-in", "Endpoint": "ec2.af-south-1.amazonaws.com"},
            ]}, {"AllRegions": True, "Filters": [{"Name": "opt-in-status",
                                                  "Values": ["opt-in-not-required", "opted-in"]}]})
            stubber.activate()

    result = batches(collector([], regions, types=("lambda",)))

    assert set(result) == {scope(EU, "lambda")}
    assert [a.name for a in result[scope(EU, "lambda")].assets] == ["checkout-fn"]


def test_assumed_role_is_a_second_account(aws_env: str) -> None:
    run_instances(network(US), 1)
    role = assumed_role_account("arn:aws:iam::222222222222:role/planb-reader", boto3.Session(), region=US)
    # resources created with the role's credentials live in moto's account 222222222222
    creds = boto3.client("sts", region_name=US).assume_role(
        RoleArn="arn:aws:iam::222222222222:role/planb-reader", RoleSessionName="planb-setup")["Credentials"]
    other = boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                          aws_session_token=creds["SessionToken"], region_name=US)
    vpc = other.client("ec2").create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = other.client("ec2").create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    [theirs] = [i["InstanceId"] for i in other.client("ec2").run_instances(
        ImageId=UBUNTU_AMI, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"]]

    c = AwsCollector([default_account(), role], [US], resource_types=["ec2"], collect_ssm=False)
    result = batches(c)

    assert set(result) == {scope(US), scope(US, account="222222222222")}
    assert [a.natural_key for a in result[scope(US, account="222222222222")].assets] == [
        ec2_key("222222222222", US, theirs)]
    assert role.account_id == "222222222222"
    assert "222222222222" in c.describe_scope()


def test_an_account_that_cannot_be_identified_does_not_stop_the_others(aws_env: str, no_backoff: None) -> None:
    run_instances(network(US), 1)
    broken = AwsAccount(label="profile:broken", session=boto3.Session())
    denied = Injector(lambda: query_error("InvalidClientTokenId", "The security token included in the request is "
                                          "invalid.", 403))

    def hook(service: str, region: str, client: Any) -> None:
        pass

    def factory(service: str, region: str, account: AwsAccount) -> Any:
        client = factory_with(hook)(service, region, account)
        if account is broken and service == "sts":
            inject(client, "GetCallerIdentity", denied)
        return client

    c = AwsCollector([broken, default_account()], [US], resource_types=["ec2"], collect_ssm=False,
                     client_factory=factory)
    result = batches(c)

    assert not result["aws:profile:broken:identity"].complete
    assert "InvalidClientTokenId" in result["aws:profile:broken:identity"].error
    assert result[scope(US)].complete


def test_explicit_endpoint_url_is_used_when_given(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    [iid] = run_instances(network(US), 1)
    monkeypatch.delenv("AWS_ENDPOINT_URL")

    c = AwsCollector([default_account()], [US], resource_types=["ec2"], collect_ssm=False, endpoint_url=aws_env)

    assert [a.cloud_instance_id for a in batches(c)[scope(US)].assets] == [iid]


def test_min_up_tag_parsing() -> None:
    assert min_up_from_tags({}) == (1, None)
    assert min_up_from_tags({"planb:min_up": " 3 "}) == (3, None)
    assert min_up_from_tags({"planb:min_up": "two"})[0] == 1
    assert min_up_from_tags({"planb:min_up": "0"})[0] == 1


def test_from_config(monkeypatch: pytest.MonkeyPatch, aws_env: str) -> None:
    for name in ("PLANB_COLLECT_AWS_REGIONS", "PLANB_COLLECT_AWS_PROFILES", "PLANB_COLLECT_AWS_ROLE_ARNS"):
        monkeypatch.delenv(name, raising=False)
    assert from_config() is None

    monkeypatch.setenv("PLANB_COLLECT_AWS_REGIONS", "us-east-1, eu-west-1")
    monkeypatch.setenv("PLANB_COLLECT_AWS_ROLE_ARNS", "arn:aws:iam::222222222222:role/planb-reader")
    monkeypatch.setenv("PLANB_COLLECT_AWS_SSM", "false")
    c = from_config()
    assert c is not None
    assert c.regions == [US, EU] and not c.collect_ssm
    assert [a.label for a in c.accounts] == ["role:arn:aws:iam::222222222222:role/planb-reader"]

    monkeypatch.setenv("PLANB_COLLECT_AWS_REGIONS", "all")
    monkeypatch.delenv("PLANB_COLLECT_AWS_ROLE_ARNS")
    c = from_config()
    assert c is not None and c.regions is None and [a.label for a in c.accounts] == ["default"]


def test_collection_run_records_the_outcome(aws_env: str, engine: sa.Engine) -> None:
    run_instances(network(US), 1)
    run = run_collection(engine, collector([US, EU]), now=T0)
    with so.Session(engine) as db:
        stored = db.get(CollectionRun, run.id)
        assert stored is not None and stored.collector == "aws" and stored.status == "succeeded"
        assert "us-east-1,eu-west-1" in stored.scope


def test_planned_scopes_only_when_known_without_api_calls() -> None:
    known = AwsAccount(label="prod", session=None, account_id="111122223333")
    c = AwsCollector([known], [US, EU], resource_types=["ec2", "rds"], client_factory=lambda *a: None)
    assert c.planned_scopes() == [scope(US, "ec2", "111122223333"), scope(US, "rds", "111122223333"),
                                  scope(EU, "ec2", "111122223333"), scope(EU, "rds", "111122223333")]
    assert AwsCollector([known], None, client_factory=lambda *a: None).planned_scopes() == []
    unknown = AwsAccount(label="profile:dev", session=None)
    assert AwsCollector([known, unknown], [US], client_factory=lambda *a: None).planned_scopes() == []
