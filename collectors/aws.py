"""AWS collector: EC2 (+ AMI owner, SSM inventory), ELBv2, RDS, EKS and Lambda.

Reads one or more accounts (named profiles, or roles assumed through STS, or
the default credential chain) across a list of regions (or every enabled
region) and yields one ``ScopeBatch`` per fine-grained scope::

    aws:<account-id>:<region>:<resource-type>     resource-type in ec2, elbv2, rds, eks, lambda

Each scope is collected on its own: an error (AccessDenied, a region that is
not enabled, throttling that outlasted the retries, an endpoint failure, the
scope's deadline, a record without its identity field) makes *that* batch
incomplete (``complete=False`` + the error text) so ingest retires nothing in
it, and the other scopes go on.  SSM inventory failing (an HTTP error after the retries,
throttling past them, AccessDenied) is a failure *below* the scope: the instances were
listed in full, so they are applied and retired as usual, and only their software is
left as it was (``ScopeBatch.software_unread``; the scope is reported partial).

Scopes are independent, so up to ``concurrency`` of them are read at once (the batches
still reach ingest one at a time, in scope order).

Shape of the module (after Cartography): ``get_*`` call the API only (always
through boto3 paginators where AWS pages), ``transform_*`` are pure and turn
API dicts into records, ``collect_<type>`` fill one scope's batch, and
``AwsCollector`` walks accounts × regions × resource types.

Credentials come only from boto3's standard chain (env, shared config/SSO,
instance/container roles) or STS AssumeRole on top of it; they are never
logged or stored.  boto3's ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``
keep working because no ``endpoint_url`` is passed unless one is asked for.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from collectors.base import (
    AssetRecord,
    DependencyRecord,
    ProgressFn,
    ScopeBatch,
    SoftwareRecord,
    collect_concurrently,
)
from inventory import config
from inventory.choices import AWS_RESOURCE_TYPES

PROVIDER = "aws"
# Order matters within a region: target groups (elbv2) name EC2 instances and Lambda
# functions, and ingest resolves dependency keys against assets already stored.
RESOURCE_TYPES = AWS_RESOURCE_TYPES
# EC2 states that mean "gone": AWS keeps listing terminated instances for about an hour.
GONE_STATES = frozenset({"terminated", "shutting-down"})
RDS_GONE_STATES = frozenset({"deleting"})
MIN_UP_TAG = "planb:min_up"
DEFAULT_DEADLINE_SECONDS = 900.0
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_CONCURRENCY = 4
ROLE_SESSION_NAME = "planb-collector"
# Smallest page AWS accepts per operation (a test page size below it is raised to it).
_MIN_PAGE_SIZE = {"describe_instances": 5, "describe_images": 5, "describe_db_instances": 20,
                  "describe_target_groups": 1, "describe_load_balancers": 1}
_TAGS_PER_DESCRIBE = 20      # elbv2:DescribeTags accepts at most 20 ARNs
_IMAGES_PER_DESCRIBE = 200   # image-id filter values per DescribeImages call

#: Tests (and unusual set-ups) may set this to a ``ClientFactory`` used by ``planb collect aws``.
CLIENT_FACTORY: ClientFactory | None = None


class ScopeDeadlineExceeded(Exception):
    """The scope took longer than its deadline: its batch is incomplete."""


class MissingIdentity(Exception):
    """A record came back without the field that identifies it."""


@dataclass
class AwsAccount:
    """One set of credentials: a boto3 ``Session`` (or anything with ``.client()``).

    ``label`` names it in messages ("default", "profile:prod", "role:<arn>");
    ``account_id`` is looked up with ``sts:GetCallerIdentity`` when not given.
    """

    label: str
    session: Any
    account_id: str | None = None
    home_region: str | None = None


#: ``(service, region, account) -> botocore client``
ClientFactory = Callable[[str, str, AwsAccount], Any]


class Deadline:
    """An overall time budget for one scope, checked between API calls and pages."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def check(self, doing: str) -> None:
        if self._clock() > self._end:
            raise ScopeDeadlineExceeded(f"scope deadline of {self.seconds:g}s exceeded while {doing}")


def botocore_config(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Config:
    """Standard retry mode (throttling and transient errors, with backoff and a retry quota);
    ``max_attempts`` counts every attempt of one call, the first included."""
    return Config(retries={"mode": "standard", "total_max_attempts": max_attempts},
                  connect_timeout=10, read_timeout=60, user_agent_extra="planb-collector")


def make_client(service: str, region: str, account: AwsAccount, *, config: Config | None = None,
                endpoint_url: str | None = None) -> Any:
    """The collector's default client: the account's session, standard retries, and an
    ``endpoint_url`` only when one is asked for (so ``AWS_ENDPOINT_URL*`` keep working)."""
    kwargs: dict[str, Any] = {"region_name": region, "config": config or botocore_config()}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return account.session.client(service, **kwargs)


def describe_error(exc: BaseException) -> str:
    """A one-line error text for a ScopeResult (botocore messages carry no secrets)."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "") or ""
        code = err.get("Code") or "ClientError"
        message = err.get("Message") or str(exc)
        return f"{code} calling {op}: {message}" if op else f"{code}: {message}"
    if isinstance(exc, (BotoCoreError, ScopeDeadlineExceeded, MissingIdentity)):
        return f"{type(exc).__name__}: {exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- helpers

def _page_config(operation: str, page_size: int | None) -> dict[str, int]:
    if not page_size:
        return {}
    return {"PageSize": max(page_size, _MIN_PAGE_SIZE.get(operation, 1))}


def paginate(client: Any, operation: str, deadline: Deadline, page_size: int | None = None,
             **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Pages of one operation through boto3's paginator, checking the deadline per page."""
    deadline.check(f"starting {operation}")
    paginator = client.get_paginator(operation)
    for page in paginator.paginate(PaginationConfig=_page_config(operation, page_size), **kwargs):
        deadline.check(f"paging {operation}")
        yield page


def tags_to_dict(tags: Iterable[dict[str, Any]] | None, key: str = "Key", value: str = "Value") -> dict[str, str]:
    return {t[key]: t.get(value, "") for t in (tags or []) if key in t}


_ENV_ALIASES = {"prod": "production", "prd": "production", "production": "production",
                "stage": "staging", "stg": "staging", "staging": "staging", "uat": "staging",
                "dev": "development", "development": "development", "test": "test", "qa": "test",
                "dr": "dr"}
_CRITICALITIES = ("critical", "high", "medium", "low")


class TagFacts(TypedDict, total=False):
    environment: str
    criticality: str
    owner: str


def facts_from_tags(tags: dict[str, Any]) -> TagFacts:
    """Environment, criticality and owner from conventional tags (case-insensitive keys).

    ``planb:environment`` / ``Environment`` / ``env``; ``planb:criticality`` /
    ``criticality``; ``planb:owner`` / ``Owner``.  Unknown values are ignored
    (they stay visible in the tags).
    """
    lowered = {str(k).lower(): str(v) for k, v in tags.items()}
    facts: TagFacts = {}
    for key in ("planb:environment", "environment", "env"):
        value = lowered.get(key, "").strip().lower()
        if value in _ENV_ALIASES:
            facts["environment"] = _ENV_ALIASES[value]
            break
    for key in ("planb:criticality", "criticality"):
        value = lowered.get(key, "").strip().lower()
        if value in _CRITICALITIES:
            facts["criticality"] = value
            break
    for key in ("planb:owner", "owner"):
        value = lowered.get(key, "").strip()
        if value:
            facts["owner"] = value[:200]
            break
    return facts


def min_up_from_tags(tags: dict[str, Any], default: int = 1) -> tuple[int, str | None]:
    """The ``planb:min_up`` tag as a positive integer, else ``default`` (and why)."""
    raw = tags.get(MIN_UP_TAG)
    if raw is None:
        return default, None
    try:
        value = int(str(raw).strip())
    except ValueError:
        return default, f"ignored {MIN_UP_TAG}={raw!r}: not an integer"
    if value < 1:
        return default, f"ignored {MIN_UP_TAG}={raw!r}: must be at least 1"
    return value, None


def _require(record: dict[str, Any], field_name: str, what: str) -> str:
    value = record.get(field_name)
    if not value:
        raise MissingIdentity(f"{what} without {field_name}: {sorted(record)[:8]}")
    return str(value)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values so attributes stay stable and small."""
    return {k: _iso(v) for k, v in d.items() if v not in (None, "", [], {})}


# --------------------------------------------------------------------------- natural keys

def ec2_key(account: str, region: str, instance_id: str) -> str:
    return f"aws:ec2:{account}:{region}:{instance_id}"


def lb_key(account: str, region: str, name: str) -> str:
    return f"aws:elbv2:{account}:{region}:loadbalancer/{name}"


def tg_key(account: str, region: str, name: str) -> str:
    return f"aws:elbv2:{account}:{region}:targetgroup/{name}"


def rds_key(account: str, region: str, identifier: str) -> str:
    return f"aws:rds:{account}:{region}:{identifier}"


def eks_key(account: str, region: str, name: str) -> str:
    return f"aws:eks:{account}:{region}:{name}"


def lambda_key(account: str, region: str, name: str) -> str:
    return f"aws:lambda:{account}:{region}:{name}"


def scope_key(account: str, region: str, resource_type: str) -> str:
    return f"aws:{account}:{region}:{resource_type}"


# --------------------------------------------------------------------------- EC2

def get_ec2_instance_pages(ec2: Any, deadline: Deadline, page_size: int | None) -> Iterator[list[dict[str, Any]]]:
    for page in paginate(ec2, "describe_instances", deadline, page_size):
        yield [inst for res in page.get("Reservations", []) for inst in res.get("Instances", [])]


def get_images(ec2: Any, image_ids: Sequence[str], deadline: Deadline) -> dict[str, dict[str, Any]]:
    """AMIs by id.  Filters (not ImageIds) so a deregistered AMI is simply absent, not an error."""
    images: dict[str, dict[str, Any]] = {}
    ids = sorted(set(image_ids))
    for start in range(0, len(ids), _IMAGES_PER_DESCRIBE):
        chunk = ids[start:start + _IMAGES_PER_DESCRIBE]
        for page in paginate(ec2, "describe_images", deadline, None,
                             Filters=[{"Name": "image-id", "Values": chunk}], IncludeDeprecated=True):
            for image in page.get("Images", []):
                images[image["ImageId"]] = image
    return images


def get_ssm_instance_information(ssm: Any, deadline: Deadline, page_size: int | None) -> dict[str, dict[str, Any]]:
    """``AWS:InstanceInformation`` inventory per managed instance id."""
    info: dict[str, dict[str, Any]] = {}
    for page in paginate(ssm, "get_inventory", deadline, page_size,
                         ResultAttributes=[{"TypeName": "AWS:InstanceInformation"}]):
        for entity in page.get("Entities", []):
            content = (entity.get("Data", {}).get("AWS:InstanceInformation", {}) or {}).get("Content") or []
            if entity.get("Id") and content:
                info[entity["Id"]] = content[0]
    return info


def get_ssm_applications(ssm: Any, instance_id: str, deadline: Deadline,
                         page_size: int | None) -> list[dict[str, str]]:
    """``AWS:Application`` inventory entries of one instance (ListInventoryEntries has no paginator)."""
    entries: list[dict[str, str]] = []
    kwargs: dict[str, Any] = {"InstanceId": instance_id, "TypeName": "AWS:Application",
                              "MaxResults": min(max(page_size or 50, 1), 50)}
    while True:
        deadline.check(f"listing SSM applications of {instance_id}")
        page = ssm.list_inventory_entries(**kwargs)
        entries.extend(page.get("Entries", []))
        token = page.get("NextToken")
        if not token:
            return entries
        kwargs["NextToken"] = token


def _denied(exc: BaseException) -> bool:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    return "AccessDenied" in code or "Unauthorized" in code


def os_from_platform(instance: dict[str, Any]) -> tuple[str | None, str | None]:
    """(os_family, os_name) from EC2's Platform / PlatformDetails.

    ``Platform`` is only ever "windows"; when it is absent the instance is
    Linux/UNIX (AWS's own convention); ``PlatformDetails`` names the flavour
    ("Red Hat Enterprise Linux", "Windows with SQL Server Standard", ...).
    """
    details = instance.get("PlatformDetails") or None
    platform = (instance.get("Platform") or "").lower()
    if platform == "windows" or (details or "").lower().startswith("windows"):
        return "windows", details or "Windows"
    return "linux", details


def transform_instance(instance: dict[str, Any], account: str, region: str,
                       image: dict[str, Any] | None) -> tuple[AssetRecord, list[SoftwareRecord]] | None:
    """One EC2 instance → (asset, AMI software), or None when it is gone (terminated)."""
    instance_id = _require(instance, "InstanceId", "EC2 instance")
    state = (instance.get("State") or {}).get("Name")
    if state in GONE_STATES:
        return None
    tags = tags_to_dict(instance.get("Tags"))
    os_family, os_name = os_from_platform(instance)
    key = ec2_key(account, region, instance_id)
    asset = AssetRecord(
        natural_key=key, name=tags.get("Name") or instance_id, kind="vm", provider=PROVIDER,
        account=account, region=region, zone=(instance.get("Placement") or {}).get("AvailabilityZone"),
        hostname=instance.get("PrivateDnsName") or None, cloud_instance_id=instance_id,
        os_family=os_family, os_name=os_name, tags=tags,
        attributes=_clean({
            "state": state, "instance_type": instance.get("InstanceType"),
            "image_id": instance.get("ImageId"), "vpc_id": instance.get("VpcId"),
            "subnet_id": instance.get("SubnetId"), "private_ip": instance.get("PrivateIpAddress"),
            "architecture": instance.get("Architecture"), "platform_details": instance.get("PlatformDetails"),
            "launch_time": instance.get("LaunchTime"),
        }),
        **facts_from_tags(tags),
    )
    software: list[SoftwareRecord] = []
    if image is not None:
        asset.attributes["image_name"] = image.get("Name")
        asset.attributes["image_owner"] = image.get("OwnerId")
        if image.get("ImageOwnerAlias"):
            asset.attributes["image_owner_alias"] = image["ImageOwnerAlias"]
        # The AMI owner's account id is what attribution maps (099720109477 = Canonical,
        # 309956199498 = Red Hat...); the alias ("amazon", "aws-marketplace") says
        # little about who built the image, so it only goes into the attributes.
        software.append(SoftwareRecord(
            asset_key=key, name=image.get("Name") or instance.get("ImageId") or "unknown AMI",
            publisher=image.get("OwnerId") or image.get("ImageOwnerAlias"), version=None,
            origin="ami-owner"))
    return asset, software


def apply_ssm(asset: AssetRecord, info: dict[str, Any] | None,
              applications: list[dict[str, str]]) -> list[SoftwareRecord]:
    """Fold SSM inventory into an instance: OS details, hostname, installed software."""
    if info:
        platform_type = (info.get("PlatformType") or "").lower()
        family = {"windows": "windows", "linux": "linux", "macos": "macos"}.get(platform_type)
        if family:
            asset.os_family = family
        asset.os_name = info.get("PlatformName") or asset.os_name
        asset.os_version = info.get("PlatformVersion") or asset.os_version
        asset.hostname = info.get("ComputerName") or asset.hostname
        asset.attributes["ssm_agent_version"] = info.get("AgentVersion")
        asset.attributes = _clean(asset.attributes)
    software = []
    seen: set[tuple[str, str | None]] = set()
    for app in applications:
        name = (app.get("Name") or "").strip()
        if not name or (name, app.get("Version")) in seen:
            continue
        seen.add((name, app.get("Version")))
        software.append(SoftwareRecord(asset_key=asset.natural_key, name=name,
                                       publisher=(app.get("Publisher") or "").strip() or None,
                                       version=app.get("Version") or None, origin="package"))
    return software


# --------------------------------------------------------------------------- ELBv2

def get_elbv2_tags(elbv2: Any, arns: Sequence[str], deadline: Deadline) -> dict[str, dict[str, str]]:
    tags: dict[str, dict[str, str]] = {}
    for start in range(0, len(arns), _TAGS_PER_DESCRIBE):
        deadline.check("describing ELBv2 tags")
        resp = elbv2.describe_tags(ResourceArns=list(arns[start:start + _TAGS_PER_DESCRIBE]))
        for desc in resp.get("TagDescriptions", []):
            tags[desc["ResourceArn"]] = tags_to_dict(desc.get("Tags"))
    return tags


def transform_load_balancer(lb: dict[str, Any], account: str, region: str,
                            tags: dict[str, str]) -> AssetRecord:
    name = _require(lb, "LoadBalancerName", "load balancer")
    return AssetRecord(
        natural_key=lb_key(account, region, name), name=name, kind="load_balancer", provider=PROVIDER,
        account=account, region=region, tags=tags,
        attributes=_clean({
            "arn": lb.get("LoadBalancerArn"), "type": lb.get("Type"), "scheme": lb.get("Scheme"),
            "dns_name": lb.get("DNSName"), "vpc_id": lb.get("VpcId"),
            "state": (lb.get("State") or {}).get("Code"),
            "zones": sorted(z.get("ZoneName") for z in lb.get("AvailabilityZones", []) if z.get("ZoneName")),
        }),
        **facts_from_tags(tags),
    )


def transform_target_group(tg: dict[str, Any], account: str, region: str, tags: dict[str, str],
                           health: list[dict[str, Any]], lb_names: dict[str, str],
                           ) -> tuple[AssetRecord, list[DependencyRecord]]:
    """A target group as a group asset (``min_up``) with member-of edges to its targets."""
    name = _require(tg, "TargetGroupName", "target group")
    key = tg_key(account, region, name)
    min_up, min_up_note = min_up_from_tags(tags)
    target_type = tg.get("TargetType") or "instance"
    edges: list[DependencyRecord] = []
    other_targets: list[str] = []
    states: dict[str, str] = {}
    for desc in health:
        target_id = (desc.get("Target") or {}).get("Id")
        if not target_id:
            raise MissingIdentity(f"target of {name} without Target.Id")
        state = (desc.get("TargetHealth") or {}).get("State") or "unknown"
        states[target_id] = state
        if state == "draining":
            continue  # being deregistered (e.g. a terminated instance): no longer a member
        if target_type == "instance":
            member = ec2_key(account, region, target_id)
        elif target_type == "lambda":
            # arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]
            parts = target_id.split(":")
            member = lambda_key(account, region, parts[6] if len(parts) > 6 else target_id)
        elif target_type == "alb" and target_id in lb_names:
            member = lb_key(account, region, lb_names[target_id])
        else:  # ip targets (or an ALB elsewhere) are not assets Plan B knows
            other_targets.append(target_id)
            continue
        edges.append(DependencyRecord(dependent_key=key, dependency_key=member, kind="member-of",
                                      strength="hard"))
    asset = AssetRecord(
        natural_key=key, name=name, kind="target_group", provider=PROVIDER, account=account,
        region=region, tags=tags, min_up=min_up,
        attributes=_clean({
            "arn": tg.get("TargetGroupArn"), "target_type": target_type, "protocol": tg.get("Protocol"),
            "port": tg.get("Port"), "vpc_id": tg.get("VpcId"), "target_health": dict(sorted(states.items())),
            "unmodelled_targets": sorted(other_targets), "min_up_note": min_up_note,
        }),
        **facts_from_tags(tags),
    )
    # A load balancer fails when the target group it forwards to fails.
    for lb_arn in tg.get("LoadBalancerArns", []):
        if lb_arn in lb_names:
            edges.append(DependencyRecord(dependent_key=lb_key(account, region, lb_names[lb_arn]),
                                          dependency_key=key, kind="runs-on", strength="hard"))
    return asset, edges


# --------------------------------------------------------------------------- RDS / EKS / Lambda

def transform_db_instance(db: dict[str, Any], account: str, region: str
                          ) -> tuple[AssetRecord, list[SoftwareRecord]] | None:
    identifier = _require(db, "DBInstanceIdentifier", "DB instance")
    status = db.get("DBInstanceStatus")
    if status in RDS_GONE_STATES:
        return None
    tags = tags_to_dict(db.get("TagList"))
    key = rds_key(account, region, identifier)
    endpoint = db.get("Endpoint") or {}
    asset = AssetRecord(
        natural_key=key, name=identifier, kind="database", provider=PROVIDER, account=account,
        region=region, zone=db.get("AvailabilityZone"), tags=tags,
        attributes=_clean({
            "arn": db.get("DBInstanceArn"), "engine": db.get("Engine"), "engine_version": db.get("EngineVersion"),
            "instance_class": db.get("DBInstanceClass"), "status": status, "multi_az": db.get("MultiAZ"),
            "cluster": db.get("DBClusterIdentifier"), "endpoint": endpoint.get("Address"),
            "vpc_id": (db.get("DBSubnetGroup") or {}).get("VpcId"),
        }),
        **facts_from_tags(tags),
    )
    software = []
    if db.get("Engine"):
        software.append(SoftwareRecord(asset_key=key, name=db["Engine"], publisher=None,
                                       version=db.get("EngineVersion"), origin="package"))
    return asset, software


def transform_eks_cluster(cluster: dict[str, Any], account: str, region: str) -> AssetRecord:
    name = _require(cluster, "name", "EKS cluster")
    tags = dict(cluster.get("tags") or {})
    # No min_up: node membership is not collected, and a group without members
    # would read as "down" to the impact engine.
    return AssetRecord(
        natural_key=eks_key(account, region, name), name=name, kind="cluster", provider=PROVIDER,
        account=account, region=region, tags=tags,
        attributes=_clean({
            "arn": cluster.get("arn"), "kubernetes_version": cluster.get("version"),
            "platform_version": cluster.get("platformVersion"), "status": cluster.get("status"),
            "vpc_id": (cluster.get("resourcesVpcConfig") or {}).get("vpcId"),
        }),
        **facts_from_tags(tags),
    )


def transform_function(fn: dict[str, Any], account: str, region: str) -> AssetRecord:
    name = _require(fn, "FunctionName", "Lambda function")
    return AssetRecord(
        natural_key=lambda_key(account, region, name), name=name, kind="function", provider=PROVIDER,
        account=account, region=region,
        attributes=_clean({
            "arn": fn.get("FunctionArn"), "runtime": fn.get("Runtime"), "package_type": fn.get("PackageType"),
            "architectures": fn.get("Architectures"), "memory_mb": fn.get("MemorySize"),
            "vpc_id": (fn.get("VpcConfig") or {}).get("VpcId"),
        }),
    )


# --------------------------------------------------------------------------- the collector

@dataclass
class _ScopeContext:
    account: AwsAccount
    account_id: str
    region: str
    deadline: Deadline
    client: Callable[[str], Any]
    progress: ProgressFn
    batch: ScopeBatch = field(default_factory=lambda: ScopeBatch(scope_key=""))


class AwsCollector:
    """Collects the configured accounts × regions × resource types, one scope at a time."""

    name = "aws"

    def __init__(self, accounts: Sequence[AwsAccount] | None = None, regions: Sequence[str] | None = None, *,
                 resource_types: Sequence[str] = RESOURCE_TYPES,
                 client_factory: ClientFactory | None = None,
                 page_size: int | None = None,
                 deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 endpoint_url: str | None = None,
                 collect_ssm: bool = True,
                 concurrency: int = DEFAULT_CONCURRENCY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        unknown = sorted(set(resource_types) - set(RESOURCE_TYPES))
        if unknown:
            raise ValueError(f"unknown AWS resource types: {', '.join(unknown)}")
        if accounts is None:
            import boto3
            accounts = [AwsAccount(label="default", session=boto3.Session())]
        self.accounts = list(accounts)
        # None or ["all"] = every region enabled for the account.
        wanted = [r.strip() for r in regions or [] if r.strip()]
        self.regions = None if not wanted or "all" in wanted else list(dict.fromkeys(wanted))
        self.resource_types = [t for t in RESOURCE_TYPES if t in set(resource_types)]
        self.page_size = page_size
        self.deadline_seconds = deadline_seconds
        self.endpoint_url = endpoint_url
        self.collect_ssm = collect_ssm
        self.config = botocore_config(max_attempts)
        self._clock = clock
        self.concurrency = concurrency
        self._factory = client_factory or self.default_client
        self._clients: dict[tuple[str, str, str], Any] = {}
        # boto3 sessions are not thread-safe: clients are made one at a time (then shared).
        self._clients_lock = threading.Lock()

    # -- clients
    def default_client(self, service: str, region: str, account: AwsAccount) -> Any:
        return make_client(service, region, account, config=self.config, endpoint_url=self.endpoint_url)

    def client(self, service: str, region: str, account: AwsAccount) -> Any:
        key = (account.label, service, region)
        with self._clients_lock:
            if key not in self._clients:
                self._clients[key] = self._factory(service, region, account)
            return self._clients[key]

    # -- Collector protocol
    def describe_scope(self) -> str:
        labels = ",".join(a.account_id or a.label for a in self.accounts)
        regions = ",".join(self.regions) if self.regions else "all-enabled"
        text = f"aws accounts={labels} regions={regions} types={','.join(self.resource_types)}"
        return text if len(text) <= 1000 else text[:997] + "..."

    def planned_scopes(self) -> list[str]:
        """The scopes, when they are known without an API call (account ids given and an
        explicit region list); otherwise each scope is locked when it is reached."""
        if self.regions is None or not all(a.account_id for a in self.accounts):
            return []
        return [scope_key(str(a.account_id), r, t) for a in self.accounts for r in self.regions
                for t in self.resource_types]

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        tasks: list[Callable[[], ScopeBatch]] = []
        for account in self.accounts:
            home = account.home_region or (self.regions[0] if self.regions else None) \
                or getattr(account.session, "region_name", None) or "us-east-1"
            try:
                account_id = account.account_id or self._account_id(account, home)
                account.account_id = account_id
            except Exception as exc:  # noqa: BLE001 - one account failing must not stop the others
                progress(f"aws {account.label}: cannot identify account: {describe_error(exc)}")
                yield ScopeBatch(scope_key=f"aws:{account.label}:identity", complete=False,
                                 error=f"identity of {account.label}: {describe_error(exc)}")
                continue
            try:
                regions = self.regions or self._enabled_regions(account, home)
            except Exception as exc:  # noqa: BLE001
                progress(f"aws {account_id}: cannot list regions: {describe_error(exc)}")
                yield ScopeBatch(scope_key=f"aws:{account_id}:regions", complete=False,
                                 error=f"listing enabled regions: {describe_error(exc)}")
                continue
            for region in regions:
                for resource_type in self.resource_types:
                    tasks.append(lambda a=account, i=account_id, r=region, t=resource_type:
                                 self._collect_scope(a, i, r, t, progress))
        # Independent scopes, read concurrently; yielded in this order (a region's target
        # groups after its instances, which they name).
        yield from collect_concurrently(tasks, self.concurrency, name="planb-aws")

    # -- discovery
    def _account_id(self, account: AwsAccount, region: str) -> str:
        ident = self.client("sts", region, account).get_caller_identity()
        return str(ident["Account"])

    def _enabled_regions(self, account: AwsAccount, region: str) -> list[str]:
        resp = self.client("ec2", region, account).describe_regions(
            AllRegions=True,
            Filters=[{"Name": "opt-in-status", "Values": ["opt-in-not-required", "opted-in"]}])
        return sorted(r["RegionName"] for r in resp.get("Regions", [])
                      if r.get("OptInStatus", "opt-in-not-required") in ("opt-in-not-required", "opted-in"))

    # -- one scope
    def _collect_scope(self, account: AwsAccount, account_id: str, region: str, resource_type: str,
                       progress: ProgressFn) -> ScopeBatch:
        key = scope_key(account_id, region, resource_type)
        ctx = _ScopeContext(account=account, account_id=account_id, region=region,
                            deadline=Deadline(self.deadline_seconds, self._clock),
                            client=lambda service: self.client(service, region, account),
                            progress=progress, batch=ScopeBatch(scope_key=key))
        started = time.monotonic()
        try:
            COLLECTORS[resource_type](self, ctx)
        except Exception as exc:  # noqa: BLE001 - any failure makes only this scope incomplete
            ctx.batch.complete = False
            ctx.batch.error = describe_error(exc)
            progress(f"{key}: INCOMPLETE after {len(ctx.batch.assets)} assets: {ctx.batch.error}")
        else:
            progress(f"{key}: {len(ctx.batch.assets)} assets, {len(ctx.batch.software)} software, "
                     f"{len(ctx.batch.dependencies)} dependencies in {time.monotonic() - started:.1f}s"
                     + (f"; PARTIAL: {ctx.batch.error}" if ctx.batch.software_unread else ""))
        return ctx.batch

    def collect_ec2(self, ctx: _ScopeContext) -> None:
        """Instances, their AMI owners and SSM inventory.

        The instance listing and AMIs are all or nothing: an instance record is only
        complete once enriched, and ingest treats attributes a source stops reporting as
        removed, so when one of them fails the batch carries no records at all (earlier
        data stays as it was).  SSM failing is isolated below the scope: see ``_ssm_software``.
        """
        ec2 = ctx.client("ec2")
        instances: list[dict[str, Any]] = []
        for page in get_ec2_instance_pages(ec2, ctx.deadline, self.page_size):
            for inst in page:
                _require(inst, "InstanceId", "EC2 instance")  # fail fast, before more calls
                instances.append(inst)
        live = [i for i in instances if (i.get("State") or {}).get("Name") not in GONE_STATES]
        images = get_images(ec2, [i["ImageId"] for i in live if i.get("ImageId")], ctx.deadline) if live else {}
        assets: list[AssetRecord] = []
        software: list[SoftwareRecord] = []
        by_id: dict[str, AssetRecord] = {}
        for inst in live:
            result = transform_instance(inst, ctx.account_id, ctx.region, images.get(inst.get("ImageId", "")))
            if result is not None:
                assets.append(result[0])
                software.extend(result[1])
                by_id[result[0].cloud_instance_id or ""] = result[0]
        if self.collect_ssm and by_id:
            software.extend(self._ssm_software(ctx, by_id))
        ctx.batch.assets.extend(assets)
        ctx.batch.software.extend(software)

    def _ssm_software(self, ctx: _ScopeContext, by_id: dict[str, AssetRecord]) -> list[SoftwareRecord]:
        """Installed software (and OS details) from SSM inventory.

        A failure here (an HTTP error after botocore's retries, throttling past them,
        AccessDenied) leaves the instances whose software could not be read in
        ``software_unread`` with the reason in the batch's error: ingest applies and
        retires the instances as usual and leaves their software as it was.  After a
        denial the remaining instances are not asked for (they would be denied too)."""
        ssm = ctx.client("ssm")
        try:
            info = get_ssm_instance_information(ssm, ctx.deadline, self.page_size)
        except (ClientError, BotoCoreError) as exc:
            self._ssm_unread(ctx, list(by_id.values()), len(by_id), exc)
            return []
        software: list[SoftwareRecord] = []
        unread: list[AssetRecord] = []
        failure: BaseException | None = None
        for instance_id, asset in by_id.items():
            if instance_id not in info:
                continue  # not managed by SSM: nothing more to learn
            if failure is not None and _denied(failure):
                unread.append(asset)
                continue
            try:
                apps = get_ssm_applications(ssm, instance_id, ctx.deadline, self.page_size)
            except (ClientError, BotoCoreError) as exc:
                failure = failure or exc
                apply_ssm(asset, info[instance_id], [])  # the OS details did come through
                unread.append(asset)
                continue
            software.extend(apply_ssm(asset, info[instance_id], apps))
        if failure is not None:
            self._ssm_unread(ctx, unread, len(by_id), failure)
        return software

    @staticmethod
    def _ssm_unread(ctx: _ScopeContext, unread: list[AssetRecord], total: int, exc: BaseException) -> None:
        ctx.batch.software_unread.extend(a.natural_key for a in unread)
        hint = " (grant ssm:GetInventory and ssm:ListInventoryEntries, or collect with --no-ssm)" \
            if _denied(exc) else ""
        ctx.batch.error = (f"SSM inventory: {describe_error(exc)}{hint}: software of {len(unread)} of {total} "
                           "instance(s) not read, left as it was")
        ctx.progress(f"{ctx.batch.scope_key}: {ctx.batch.error}")

    def collect_elbv2(self, ctx: _ScopeContext) -> None:
        elbv2 = ctx.client("elbv2")
        lbs = [lb for page in paginate(elbv2, "describe_load_balancers", ctx.deadline, self.page_size)
               for lb in page.get("LoadBalancers", [])]
        tgs = [tg for page in paginate(elbv2, "describe_target_groups", ctx.deadline, self.page_size)
               for tg in page.get("TargetGroups", [])]
        arns = [lb["LoadBalancerArn"] for lb in lbs if lb.get("LoadBalancerArn")] + \
               [tg["TargetGroupArn"] for tg in tgs if tg.get("TargetGroupArn")]
        tags = get_elbv2_tags(elbv2, arns, ctx.deadline) if arns else {}
        lb_names: dict[str, str] = {}
        for lb in lbs:
            asset = transform_load_balancer(lb, ctx.account_id, ctx.region, tags.get(lb.get("LoadBalancerArn", ""), {}))
            lb_names[lb.get("LoadBalancerArn", "")] = asset.name
            ctx.batch.assets.append(asset)
        for tg in tgs:
            arn = _require(tg, "TargetGroupArn", "target group")
            ctx.deadline.check(f"describing target health of {tg.get('TargetGroupName')}")
            health = elbv2.describe_target_health(TargetGroupArn=arn).get("TargetHealthDescriptions", [])
            asset, edges = transform_target_group(tg, ctx.account_id, ctx.region, tags.get(arn, {}), health,
                                                  lb_names)
            ctx.batch.assets.append(asset)
            ctx.batch.dependencies.extend(edges)

    def collect_rds(self, ctx: _ScopeContext) -> None:
        rds = ctx.client("rds")
        for page in paginate(rds, "describe_db_instances", ctx.deadline, self.page_size):
            for db in page.get("DBInstances", []):
                result = transform_db_instance(db, ctx.account_id, ctx.region)
                if result is not None:
                    ctx.batch.assets.append(result[0])
                    ctx.batch.software.extend(result[1])

    def collect_eks(self, ctx: _ScopeContext) -> None:
        eks = ctx.client("eks")
        for page in paginate(eks, "list_clusters", ctx.deadline, self.page_size):
            for name in page.get("clusters", []):
                ctx.deadline.check(f"describing EKS cluster {name}")
                cluster = eks.describe_cluster(name=name)["cluster"]
                ctx.batch.assets.append(transform_eks_cluster(cluster, ctx.account_id, ctx.region))

    def collect_lambda(self, ctx: _ScopeContext) -> None:
        lam = ctx.client("lambda")
        for page in paginate(lam, "list_functions", ctx.deadline, self.page_size):
            for fn in page.get("Functions", []):
                ctx.batch.assets.append(transform_function(fn, ctx.account_id, ctx.region))


COLLECTORS: dict[str, Callable[[AwsCollector, _ScopeContext], None]] = {
    "ec2": AwsCollector.collect_ec2,
    "lambda": AwsCollector.collect_lambda,
    "elbv2": AwsCollector.collect_elbv2,
    "rds": AwsCollector.collect_rds,
    "eks": AwsCollector.collect_eks,
}


# --------------------------------------------------------------------------- accounts

def profile_account(profile: str) -> AwsAccount:
    import boto3
    session = boto3.Session(profile_name=profile)
    return AwsAccount(label=f"profile:{profile}", session=session, home_region=session.region_name)


def assumed_role_account(role_arn: str, base_session: Any = None, *, region: str | None = None,
                         endpoint_url: str | None = None, external_id: str | None = None,
                         session_name: str = ROLE_SESSION_NAME,
                         max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> AwsAccount:
    """A session whose credentials come from ``sts:AssumeRole`` and refresh themselves.

    The role is assumed lazily (on the first API call) and again before the
    temporary credentials expire, so long runs over many regions keep working.
    """
    import boto3
    import botocore.session
    from botocore.credentials import DeferredRefreshableCredentials

    base = base_session or boto3.Session()
    sts_kwargs: dict[str, Any] = {"config": botocore_config(max_attempts)}
    if region or base.region_name:
        sts_kwargs["region_name"] = region or base.region_name
    if endpoint_url:
        sts_kwargs["endpoint_url"] = endpoint_url

    def refresh() -> dict[str, str]:
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name}
        if external_id:
            params["ExternalId"] = external_id
        creds = base.client("sts", **sts_kwargs).assume_role(**params)["Credentials"]
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"], "expiry_time": _iso(creds["Expiration"])}

    core = botocore.session.Session()
    # botocore has no public setter for a credentials object; this is the documented-in-practice way.
    core._credentials = DeferredRefreshableCredentials(refresh_using=refresh, method="sts-assume-role")
    if region or base.region_name:
        core.set_config_variable("region", region or base.region_name)
    return AwsAccount(label=f"role:{role_arn}", session=boto3.Session(botocore_session=core),
                      home_region=region or base.region_name)


def build_accounts(profiles: Sequence[str] = (), role_arns: Sequence[str] = (), *,
                   endpoint_url: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                   external_id: str | None = None) -> list[AwsAccount]:
    """Profiles are accounts of their own; roles are assumed from the default chain.

    With neither, the default credential chain is the one account.
    """
    import boto3
    accounts = [profile_account(p) for p in profiles]
    if role_arns:
        base = boto3.Session()
        accounts += [assumed_role_account(arn, base, endpoint_url=endpoint_url, external_id=external_id,
                                          max_attempts=max_attempts) for arn in role_arns]
    if not accounts:
        session = boto3.Session()
        accounts = [AwsAccount(label="default", session=session, home_region=session.region_name)]
    return accounts



def from_config() -> AwsCollector | None:
    """The collector ``planb collect all`` runs, from ``PLANB_COLLECT_AWS_*``; None when not configured.
    Values are checked by ``inventory.config`` (an unusable one is a one-line error naming it)."""
    regions = config.get("COLLECT_AWS_REGIONS") or []
    profiles = config.get("COLLECT_AWS_PROFILES") or []
    roles = config.get("COLLECT_AWS_ROLE_ARNS") or []
    if not (regions or profiles or roles):
        return None
    types = config.get("COLLECT_AWS_RESOURCE_TYPES") or list(RESOURCE_TYPES)
    deadline = config.get("COLLECT_AWS_DEADLINE") or DEFAULT_DEADLINE_SECONDS
    ssm = config.get("COLLECT_AWS_SSM")
    return AwsCollector(build_accounts(profiles, roles), regions or None, resource_types=types,
                        deadline_seconds=deadline, collect_ssm=True if ssm is None else ssm,
                        client_factory=CLIENT_FACTORY)


# --------------------------------------------------------------------------- CLI
