"""AWS test helpers: moto's standalone server on a loopback port, estate builders, fault injection.

boto3 talks real HTTP to the moto server (``AWS_ENDPOINT_URL``) with dummy
credentials from the environment.  Faults (throttling, AccessDenied) are
injected with botocore's ``before-send`` event, which replaces the HTTP
exchange but leaves botocore's parsing and *standard-mode retries* in place;
SSM inventory, which moto does not implement, comes from botocore's Stubber.
"""
from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from collectors.aws import AwsAccount, botocore_config, make_client

WINDOWS_AMI = "ami-b7e93bce"   # moto's Windows_Server-2016-English-Full-Base, owner 801119661308 (amazon)
UBUNTU_AMI = "ami-785db401"    # moto's ubuntu/images/hvm-ssd/ubuntu-xenial-16.04, owner 099720109477 (Canonical)
ACCOUNT = "123456789012"       # moto's default account


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """One moto server per test module (state is reset per test by ``aws_env``)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> str:
    """Dummy credentials and the moto endpoint via the environment only; an empty moto."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("AWS_ENDPOINT_URL_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"), timeout=10).read()
    return moto_server


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Standard-mode retries still happen, without their (random, up to seconds) sleeps."""
    from botocore.retries import standard
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0)


def default_account() -> AwsAccount:
    return AwsAccount(label="default", session=boto3.Session())


# -- estate builders -------------------------------------------------------------------------------

@dataclass
class Network:
    region: str
    vpc: str
    subnets: list[str]


def network(region: str) -> Network:
    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{region}{z}")
               ["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
    return Network(region, vpc, subnets)


def run_instances(net: Network, count: int, *, image: str = UBUNTU_AMI, name: str | None = None,
                  tags: dict[str, str] | None = None) -> list[str]:
    all_tags = dict(tags or {})
    if name:
        all_tags["Name"] = name
    kwargs: dict[str, Any] = {}
    if all_tags:
        kwargs["TagSpecifications"] = [{"ResourceType": "instance",
                                        "Tags": [{"Key": k, "Value": v} for k, v in all_tags.items()]}]
    resp = boto3.client("ec2", region_name=net.region).run_instances(
        ImageId=image, MinCount=count, MaxCount=count, SubnetId=net.subnets[0], InstanceType="t3.micro", **kwargs)
    return [i["InstanceId"] for i in resp["Instances"]]


def terminate(region: str, *instance_ids: str) -> None:
    boto3.client("ec2", region_name=region).terminate_instances(InstanceIds=list(instance_ids))


@dataclass
class WebTier:
    lb_name: str
    tg_names: list[str]
    instances: list[str]
    arns: dict[str, str] = field(default_factory=dict)


def web_tier(net: Network, instances: list[str], *, min_up_tag: str | None = "2") -> WebTier:
    """An ALB forwarding to target group web-tg (the instances, planb:min_up tag) and an
    untagged, empty target group spare-tg."""
    elb = boto3.client("elbv2", region_name=net.region)
    lb = elb.create_load_balancer(Name="web-alb", Subnets=net.subnets,
                                  Tags=[{"Key": "Environment", "Value": "prod"}])["LoadBalancers"][0]
    tags = [{"Key": "planb:min_up", "Value": min_up_tag}] if min_up_tag is not None else []
    kwargs = {"Tags": tags} if tags else {}
    tg = elb.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=net.vpc, TargetType="instance",
                                 **kwargs)["TargetGroups"][0]
    spare = elb.create_target_group(Name="spare-tg", Protocol="HTTP", Port=8080, VpcId=net.vpc,
                                    TargetType="instance")["TargetGroups"][0]
    elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": i} for i in instances])
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}])
    return WebTier("web-alb", ["web-tg", "spare-tg"], instances,
                   {"web-alb": lb["LoadBalancerArn"], "web-tg": tg["TargetGroupArn"],
                    "spare-tg": spare["TargetGroupArn"]})


def data_and_platform(net: Network) -> None:
    """An RDS instance, an EKS cluster and a Lambda function in ``net.region``."""
    region = net.region
    iam = boto3.client("iam", region_name=region)
    try:
        role = iam.create_role(RoleName="planb-test-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName="planb-test-role")["Role"]["Arn"]
    boto3.client("rds", region_name=region).create_db_instance(
        DBInstanceIdentifier="orders-db", Engine="postgres", EngineVersion="15.4", DBInstanceClass="db.t3.micro",
        MasterUsername="planb", MasterUserPassword="not-a-real-password", AllocatedStorage=20,
        Tags=[{"Key": "Owner", "Value": "dba-team"}, {"Key": "planb:criticality", "Value": "critical"}])
    boto3.client("eks", region_name=region).create_cluster(
        name="platform", roleArn=role, resourcesVpcConfig={"subnetIds": net.subnets}, version="1.29",
        tags={"Environment": "production"})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", "def handler(event, context):\n    return 1\n")
    boto3.client("lambda", region_name=region).create_function(
        FunctionName="checkout-fn", Runtime="python3.12", Role=role, Handler="handler.handler",
        Code={"ZipFile": buf.getvalue()})


# -- fault injection -------------------------------------------------------------------------------

class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self._body


def ec2_error(code: str, message: str, status: int) -> AWSResponse:
    body = (f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
            f"<RequestID>c0ffee00-0000-4000-8000-000000000000</RequestID></Response>").encode()
    return AWSResponse("https://ec2.amazonaws.com/", status, {"Content-Type": "text/xml"}, _Raw(body))


def query_error(code: str, message: str, status: int) -> AWSResponse:
    """The error shape of query-protocol services other than EC2 (ELBv2, RDS, STS)."""
    body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>c0ffee00-0000-4000-8000-000000000000</RequestId></ErrorResponse>").encode()
    return AWSResponse("https://elasticloadbalancing.amazonaws.com/", status, {"Content-Type": "text/xml"},
                       _Raw(body))


def json_error(code: str, message: str, status: int) -> AWSResponse:
    """The error shape of JSON-protocol services (SSM, EKS): ``{"__type", "message"}``."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return AWSResponse("https://ssm.us-east-1.amazonaws.com/", status,
                       {"Content-Type": "application/x-amz-json-1.1",
                        "x-amzn-RequestId": "c0ffee00-0000-4000-8000-000000000000"}, _Raw(body))


def failing_ssm(region: str, response: Callable[[], AWSResponse], max_attempts: int = 3) -> tuple[Any, Injector]:
    """An SSM client whose every call is answered by ``response`` through botocore's
    ``before-send`` hook: botocore still parses it and runs its standard-mode retries."""
    client = boto3.client("ssm", region_name=region, config=botocore_config(max_attempts))
    injector = Injector(response)
    client.meta.events.register("before-send.ssm", injector)
    return client, injector


def ec2_empty_reservations() -> AWSResponse:
    body = (b'<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            b"<requestId>c0ffee00-0000-4000-8000-000000000000</requestId><reservationSet/>"
            b"</DescribeInstancesResponse>")
    return AWSResponse("https://ec2.amazonaws.com/", 200, {"Content-Type": "text/xml"}, _Raw(body))


@dataclass
class Injector:
    """Answers ``operation`` with ``response`` the first ``times`` times (forever when None)."""

    response: Callable[[], AWSResponse]
    times: int | None = None
    sent: int = 0
    injected: int = 0

    def __call__(self, request: Any, **kwargs: Any) -> AWSResponse | None:
        self.sent += 1
        if self.times is None or self.injected < self.times:
            self.injected += 1
            return self.response()
        return None  # let the real request through to moto


def inject(client: Any, operation: str, injector: Injector) -> Injector:
    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-send.{service_id}.{operation}", injector)
    return injector


def counting(client: Any, operation: str) -> list[dict[str, Any]]:
    """Records the parameters of every call of ``operation`` (e.g. to count pages)."""
    calls: list[dict[str, Any]] = []
    service_id = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"provide-client-params.{service_id}.{operation}",
                                lambda params, **kw: calls.append(dict(params)))
    return calls


Hook = Callable[[str, str, Any], None]


def factory_with(*hooks: Hook, ssm: Callable[[str], Any] | None = None, max_attempts: int = 8
                 ) -> Callable[[str, str, AwsAccount], Any]:
    """A client factory: the collector's default clients, passed through ``hooks(service, region,
    client)``; ``ssm(region)`` supplies the SSM clients (Stubber) when given."""
    config = botocore_config(max_attempts)

    def factory(service: str, region: str, account: AwsAccount) -> Any:
        if service == "ssm" and ssm is not None:
            return ssm(region)
        client = make_client(service, region, account, config=config)
        for hook in hooks:
            hook(service, region, client)
        return client

    return factory


# -- SSM inventory (Stubber) -----------------------------------------------------------------------

def instance_information(instance_id: str, *, computer: str, platform_type: str, name: str,
                         version: str) -> dict[str, Any]:
    return {"Id": instance_id, "Data": {"AWS:InstanceInformation": {
        "TypeName": "AWS:InstanceInformation", "SchemaVersion": "1.0", "CaptureTime": "2026-01-05T08:00:00Z",
        "Content": [{"AgentType": "amazon-ssm-agent", "AgentVersion": "3.3.131.0", "ComputerName": computer,
                     "InstanceId": instance_id, "InstanceStatus": "Active", "IpAddress": "10.0.1.10",
                     "PlatformName": name, "PlatformType": platform_type, "PlatformVersion": version,
                     "ResourceType": "EC2Instance"}]}}}


def application(name: str, publisher: str, version: str) -> dict[str, str]:
    return {"Name": name, "Publisher": publisher, "Version": version, "ApplicationType": "",
            "Architecture": "x86_64", "InstalledTime": "2025-11-02T00:00:00Z"}


def stubbed_ssm(region: str, inventory: dict[str, Any], *, page_size: int | None = None,
                inventory_pages: int = 1) -> tuple[Any, Stubber]:
    """An SSM client answering GetInventory (split into ``inventory_pages`` pages) and, per managed
    instance in ``inventory[id] = (information, [applications...])``, ListInventoryEntries (two
    pages when there are more than two applications)."""
    client = boto3.client("ssm", region_name=region, config=botocore_config())
    stubber = Stubber(client)
    entities = [info for info, _apps in inventory.values()]
    size = max(1, -(-len(entities) // inventory_pages)) if entities else 1
    pages = [entities[i:i + size] for i in range(0, len(entities), size)] or [[]]
    for n, page in enumerate(pages):
        expected: dict[str, Any] = {"ResultAttributes": [{"TypeName": "AWS:InstanceInformation"}]}
        if page_size:
            expected["MaxResults"] = page_size
        if n:
            expected["NextToken"] = f"inv-{n}"
        response: dict[str, Any] = {"Entities": page}
        if n + 1 < len(pages):
            response["NextToken"] = f"inv-{n + 1}"
        stubber.add_response("get_inventory", response, expected)
    return client, stubber


def queue_applications(stubber: Stubber, instance_id: str, apps: list[dict[str, str]], max_results: int = 50) -> None:
    """ListInventoryEntries for one instance: two pages when there are more than two applications."""
    split = min(len(apps), 2)
    chunks = [apps[:split], apps[split:]] if len(apps) > 2 else [apps]
    for n, chunk in enumerate(chunks):
        expected: dict[str, Any] = {"InstanceId": instance_id, "TypeName": "AWS:Application",
                                    "MaxResults": max_results}
        if n:
            expected["NextToken"] = f"apps-{instance_id}-{n}"
        response: dict[str, Any] = {"TypeName": "AWS:Application", "InstanceId": instance_id,
                                    "SchemaVersion": "1.1", "CaptureTime": "2026-01-05T08:00:00Z", "Entries": chunk}
        if n + 1 < len(chunks):
            response["NextToken"] = f"apps-{instance_id}-{n + 1}"
        stubber.add_response("list_inventory_entries", response, expected)


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)
