"""Kubernetes collector: nodes, pods, workloads, disruption budgets and Services, one scope per cluster.

Reads each cluster through the official ``kubernetes`` client (a kubeconfig
context, or the pod's service account when Plan B runs inside the cluster as a
CronJob) and yields one ``ScopeBatch`` per cluster, ``kubernetes:<cluster>``:

* **nodes** → ``host`` assets ``k8s:<cluster>:node:<name>``: OS from
  ``status.nodeInfo``, kubelet, container runtime and OS as software, labels as
  tags, and ``spec.providerID`` (``aws:///us-east-1a/i-…``) as the cloud
  instance id, so a node merges into the EC2 instance or Azure VM the cloud
  collectors found (one machine, one asset: ``collectors.ingest``);
* **pods** (running and scheduled only) → ``container`` assets
  ``k8s:<cluster>:pod:<namespace>/<name>`` with a hard ``runs-on`` edge to their
  node and their containers' images as software (``registry/repository``, the
  tag as the version, the digest as an attribute);
* **Deployments, StatefulSets, DaemonSets** → ``application`` group assets
  ``k8s:<cluster>:<kind>:<namespace>/<name>`` whose members are their running
  pods (a Deployment's through its ReplicaSets), ``min_up`` from the matching
  PodDisruptionBudget with Kubernetes' own arithmetic, else from the workload's
  rollout settings (``min_up_of``);
* **Services** → ``service`` assets calling the workloads they select, unless
  the Service is annotated ``planb.io/business-service`` (the estate file names
  that business service and links it to the workloads by key) or the run
  leaves Services out.

A DaemonSet pod that can take its node down with it (host network, a privileged
container or the ``system-node-critical`` priority: a CNI, kube-proxy, an EDR
sensor) also records its image as software installed on the **node**, so an
outage scoped to that image's version seeds the node; pods on it go down over
their ``runs-on`` edges and workloads go down or degrade by their budgets.

Lists are paged (``limit``/``continue``); a 410 Gone on an expired continue
token restarts that listing from the start (a consistent list, never a mix of
two snapshots).  An API error on one resource type makes the cluster's batch
incomplete: what was read is upserted, nothing is retired, and values the
failed listing would have decided (``min_up`` without the budgets, memberships
without the ReplicaSets) are left as they were.

Shape (after Cartography): ``list_items`` calls the API only; ``transform_*``
are pure; ``build_batch`` turns one cluster's listings into a batch;
``KubernetesCollector`` walks the clusters.  Response bodies are read as the
documented JSON (``_preload_content=False``) rather than built into the
client's model objects, which costs seconds per 5,000 pods.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from collectors.attribution import CONTAINER_IMAGE_ORIGIN, parse_image_reference
from collectors.aws import facts_from_tags
from collectors.base import AssetRecord, DependencyRecord, ProgressFn, ScopeBatch, SoftwareRecord
from inventory import config

SOURCE = "kubernetes"
DEFAULT_PAGE_SIZE = 500          # what kubectl asks for
MAX_LIST_RESTARTS = 3            # 410 Gone restarts per listing before giving up
REQUEST_TIMEOUT = (10.0, 120.0)  # connect, read (seconds) per request
BUSINESS_SERVICE_ANNOTATION = "planb.io/business-service"
# Namespaces whose Services are plumbing (kube-dns, metrics-server), never business services.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
NODE_CRITICAL_PRIORITY = "system-node-critical"
# Labels that change with every rollout: kept out of a pod's tags so a rollout does not rewrite them.
VOLATILE_LABELS = frozenset({"pod-template-hash", "controller-revision-hash", "pod-template-generation",
                             "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index"})
NODE_POOL_LABELS = ("eks.amazonaws.com/nodegroup", "karpenter.sh/nodepool", "kubernetes.azure.com/agentpool",
                    "agentpool", "cloud.google.com/gke-nodepool", "node-pool")
INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


@dataclass(frozen=True)
class ResourceType:
    """One list call: what it returns, its RBAC resource and group, and the client method."""

    kind: str
    resource: str        # the RBAC resource name (ClusterRole rules)
    group: str           # "" = the core API group
    api: str             # kubernetes.client class
    method: str
    field_selector: str | None = None


# Everything the collector lists, in the order it lists them; the ClusterRole in
# docs/collectors/kubernetes.md grants exactly these (verb: list), a test holds them together.
RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("Node", "nodes", "", "CoreV1Api", "list_node"),
    # Only running pods are modelled; the API server filters, so the rest never crosses the wire.
    ResourceType("Pod", "pods", "", "CoreV1Api", "list_pod_for_all_namespaces", "status.phase=Running"),
    ResourceType("ReplicaSet", "replicasets", "apps", "AppsV1Api", "list_replica_set_for_all_namespaces"),
    ResourceType("Deployment", "deployments", "apps", "AppsV1Api", "list_deployment_for_all_namespaces"),
    ResourceType("StatefulSet", "statefulsets", "apps", "AppsV1Api", "list_stateful_set_for_all_namespaces"),
    ResourceType("DaemonSet", "daemonsets", "apps", "AppsV1Api", "list_daemon_set_for_all_namespaces"),
    ResourceType("PodDisruptionBudget", "poddisruptionbudgets", "policy", "PolicyV1Api",
                 "list_pod_disruption_budget_for_all_namespaces"),
    ResourceType("Service", "services", "", "CoreV1Api", "list_service_for_all_namespaces"),
)


class MissingIdentity(Exception):
    """An object came back without the field that identifies it."""


class ListingFailed(Exception):
    """One resource type could not be listed (the text says which and why)."""


# --------------------------------------------------------------------------- keys and names

def scope_key(cluster: str) -> str:
    return f"kubernetes:{cluster}"


def k8s_key(cluster: str, kind: str, namespace: str | None, name: str) -> str:
    """``k8s:<cluster>:<kind>:<namespace>/<name>``; cluster-scoped kinds (nodes) have no namespace."""
    where = f"{namespace}/{name}" if namespace else name
    return f"k8s:{cluster}:{kind.lower()}:{where}"


_EKS_ARN = re.compile(r"^arn:aws[a-z-]*:eks:[^:]*:\d*:cluster/(?P<name>.+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def cluster_name_from(raw: str) -> str:
    """The cluster part of natural keys: an EKS cluster ARN (how ``aws eks update-kubeconfig``
    names clusters) becomes its name; characters outside ``A-Za-z0-9._-`` (a ``:`` would
    split the key) become ``-``."""
    text = raw.strip()
    match = _EKS_ARN.match(text)
    if match:
        text = match.group("name")
    return _UNSAFE.sub("-", text).strip("-") or "cluster"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _require_name(obj: Mapping[str, Any], what: str) -> str:
    name = _meta(obj).get("name")
    if not name:
        raise MissingIdentity(f"{what} without metadata.name")
    return str(name)


def _first(mapping: Mapping[str, Any], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = mapping.get(key)
        if value:
            return str(value)
    return None


def _clean(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty values so attributes stay small and stable."""
    return {k: v for k, v in values.items() if v not in (None, "", [], {})}


# --------------------------------------------------------------------------- provider ids

@dataclass(frozen=True)
class ProviderFacts:
    provider: str | None = None
    account: str | None = None
    region: str | None = None
    zone: str | None = None
    cloud_instance_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


_AWS_PROVIDER_ID = re.compile(r"^aws://(?:/(?P<zone>[a-z0-9-]*))?/(?P<id>i-[0-9a-f]+)$")
_AZURE_PROVIDER_ID = re.compile(
    r"^azure:///subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"(?:virtualMachineScaleSets/(?P<vmss>[^/]+)/virtualMachines/(?P<instance>[^/]+)"
    r"|virtualMachines/(?P<vm>[^/]+))$", re.IGNORECASE)
_GCE_PROVIDER_ID = re.compile(r"^gce://(?P<project>[^/]+)/(?P<zone>[^/]+)/(?P<name>[^/]+)$")


def parse_provider_id(provider_id: str | None, system_uuid: str | None = None) -> ProviderFacts:
    """What a node's ``spec.providerID`` says about the machine under it.

    * AWS ``aws:///us-east-1a/i-0abc…``: the EC2 instance id (what ``planb collect aws``
      records as ``cloud_instance_id``) and the zone.  Fargate's pseudo-nodes name no
      instance and get none.
    * Azure ``azure:///subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Compute/
      virtualMachines/<vm>`` and scale-set instances (``virtualMachineScaleSets/<ss>/
      virtualMachines/<n>``): the subscription and resource; the id that matches
      ``planb collect azure`` is the VM's ``vmId``, which the node reports as its SMBIOS
      ``systemUUID`` — used lower-cased.
    * GCE ``gce://<project>/<zone>/<name>``: provider and zone.
    """
    text = (provider_id or "").strip()
    if not text:
        return ProviderFacts()
    match = _AWS_PROVIDER_ID.match(text)
    if match:
        zone = match.group("zone") or None
        return ProviderFacts(provider="aws", zone=zone, region=_aws_region_of(zone),
                             cloud_instance_id=match.group("id"), attributes={"provider_id": text})
    match = _AZURE_PROVIDER_ID.match(text)
    if match:
        attrs: dict[str, Any] = {"provider_id": text, "resource_group": match.group("rg")}
        if match.group("vmss"):
            attrs.update(scale_set=match.group("vmss"), scale_set_instance=match.group("instance"))
        else:
            attrs["vm_name"] = match.group("vm")
        vm_id = (system_uuid or "").strip().lower() or None
        return ProviderFacts(provider="azure", account=match.group("sub").lower(), cloud_instance_id=vm_id,
                             attributes=attrs)
    match = _GCE_PROVIDER_ID.match(text)
    if match:
        zone = match.group("zone")
        return ProviderFacts(provider="gcp", account=match.group("project"), zone=zone,
                             region=zone.rsplit("-", 1)[0] if zone.count("-") >= 2 else None,
                             attributes={"provider_id": text})
    return ProviderFacts(attributes={"provider_id": text})


def _aws_region_of(zone: str | None) -> str | None:
    """``us-east-1a`` → ``us-east-1`` (Local Zones ``us-east-1-bos-1a`` → ``us-east-1``)."""
    if not zone:
        return None
    match = re.match(r"^([a-z]{2}(?:-gov)?-[a-z]+-\d+)", zone)
    return match.group(1) if match else None


# --------------------------------------------------------------------------- min_up

def scaled_value(value: Any, total: int, *, round_up: bool) -> int | None:
    """An IntOrString (``3`` or ``"30%"``) as a number of pods out of ``total``, rounded the
    way the Kubernetes controller that reads the field rounds it; None when unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = int(text[:-1])
        except ValueError:
            return None
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    try:
        return int(text)
    except ValueError:
        return None


def pdb_min_up(pdb: Mapping[str, Any], expected: int) -> int | None:
    """How many pods a PodDisruptionBudget requires up, as the disruption controller computes
    it (``desiredHealthy``): ``minAvailable`` (a percentage of the expected pods, rounded up),
    or ``expected − maxUnavailable`` (a percentage rounded up, so fewer must stay up)."""
    spec = pdb.get("spec") or {}
    if spec.get("maxUnavailable") is not None:
        unavailable = scaled_value(spec["maxUnavailable"], expected, round_up=True)
        return None if unavailable is None else max(expected - unavailable, 0)
    if spec.get("minAvailable") is not None:
        return scaled_value(spec["minAvailable"], expected, round_up=True)
    return None


def rollout_min_up(kind: str, spec: Mapping[str, Any], replicas: int) -> int:
    """Without a budget: the replicas minus what the workload's own rolling update lets go
    unavailable — the tolerance its owner already accepts during every rollout.

    Deployments: ``maxUnavailable`` (default 25%) rounded down, and 1 when it and
    ``maxSurge`` (default 25%, rounded up) both come to 0 (Kubernetes' fencepost rule);
    StatefulSets: ``maxUnavailable`` (default 1; a percentage rounded up).  A Recreate or
    OnDelete strategy declares no number, so the kind's default applies.
    """
    strategy = spec.get("strategy" if kind == "Deployment" else "updateStrategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    if kind == "Deployment":
        unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        if unavailable is None:
            unavailable = scaled_value("25%", replicas, round_up=False) or 0
        if unavailable == 0 and not surge:
            unavailable = 1
    else:
        unavailable = scaled_value(rolling.get("maxUnavailable", 1), replicas, round_up=True)
        if unavailable is None:
            unavailable = 1
    return replicas - unavailable


# --------------------------------------------------------------------------- label selectors

def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``LabelSelector`` (``matchLabels`` and ``matchExpressions``) against a label set.
    An empty selector matches everything; ``None`` (no selector) matches nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = set(expression.get("values") or [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False   # an operator this code does not know: match nothing rather than guess
    return True


# --------------------------------------------------------------------------- transforms

_VERSION_IN_TEXT = re.compile(r"\d+(?:\.\d+)+")


def _strip_v(version: str | None) -> str | None:
    text = (version or "").strip()
    return text[1:] if text[:1] in ("v", "V") and text[1:2].isdigit() else (text or None)


def transform_node(node: Mapping[str, Any], cluster: str) -> tuple[AssetRecord, list[SoftwareRecord]]:
    """One Node → a ``host`` asset (merged by ingest into its cloud instance) and its software:
    the kubelet, the container runtime and the OS image."""
    name = _require_name(node, "node")
    meta, spec, status = _meta(node), node.get("spec") or {}, node.get("status") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    info = status.get("nodeInfo") or {}
    cloud = parse_provider_id(spec.get("providerID"), info.get("systemUUID"))
    os_family = {"linux": "linux", "windows": "windows"}.get(str(info.get("operatingSystem") or "").lower())
    os_image = (info.get("osImage") or "").strip() or None
    kernel = (info.get("kernelVersion") or "").strip() or None
    if os_family == "windows":
        os_version = kernel          # Windows nodes report the OS build here (10.0.20348.2582)
    else:
        found = _VERSION_IN_TEXT.search(os_image or "")
        os_version = found.group(0) if found else None
    hostname = next((a.get("address") for a in status.get("addresses") or []
                     if a.get("type") == "Hostname" and a.get("address")), None) or name
    key = k8s_key(cluster, "node", None, name)
    runtime = (info.get("containerRuntimeVersion") or "").strip()
    asset = AssetRecord(
        natural_key=key, name=name, kind="host", provider=cloud.provider, account=cloud.account,
        region=_first(labels, REGION_LABELS) or cloud.region, zone=_first(labels, ZONE_LABELS) or cloud.zone,
        hostname=hostname, cloud_instance_id=cloud.cloud_instance_id, os_family=os_family, os_name=os_image,
        os_version=os_version, tags=labels,
        attributes=_clean({
            **cloud.attributes, "k8s_cluster": cluster, "k8s_node": name,
            "node_pool": _first(labels, NODE_POOL_LABELS), "instance_type": _first(labels, INSTANCE_TYPE_LABELS),
            "kernel_version": kernel, "architecture": info.get("architecture"),
            "kubelet_version": info.get("kubeletVersion"), "container_runtime": runtime or None,
        }),
        **facts_from_tags(labels),
    )
    software = []
    if info.get("kubeletVersion"):
        software.append(SoftwareRecord(asset_key=key, name="kubelet", version=_strip_v(info["kubeletVersion"]),
                                       origin="package"))
    if runtime:
        engine, _, version = runtime.partition("://")
        software.append(SoftwareRecord(asset_key=key, name=engine or runtime, version=_strip_v(version) or None,
                                       origin="package"))
    if os_image:
        software.append(SoftwareRecord(asset_key=key, name=os_image, version=os_version, origin="os"))
    return asset, software


def _controller_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in _meta(obj).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") and ref.get("name"):
            return str(ref["kind"]), str(ref["name"])
    return None


def node_level(pod_spec: Mapping[str, Any]) -> bool:
    """Whether a failing pod takes its node down with it: it shares the host's network, runs
    a privileged container, or carries the ``system-node-critical`` priority (a CNI such
    as Cilium or Calico, kube-proxy, an EDR sensor)."""
    if pod_spec.get("hostNetwork") or pod_spec.get("priorityClassName") == NODE_CRITICAL_PRIORITY:
        return True
    return any((c.get("securityContext") or {}).get("privileged")
               for c in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])])


def running_containers(pod_spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The containers that run for the pod's life: its containers and native sidecars
    (init containers with ``restartPolicy: Always``); one-shot init containers are done."""
    sidecars = [c for c in pod_spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    return [*(pod_spec.get("containers") or []), *sidecars]


def _digest_of(image_id: str | None) -> str | None:
    """``docker-pullable://quay.io/cilium/cilium@sha256:…`` or ``sha256:…`` → ``sha256:…``."""
    text = (image_id or "").strip()
    if "@" in text:
        return text.rsplit("@", 1)[1] or None
    return text if text.startswith("sha256:") else None


def image_software(asset_key: str, container: Mapping[str, Any], image_id: str | None,
                   extra: Mapping[str, Any] | None = None) -> SoftwareRecord | None:
    """One container's image as installed software: named ``registry/repository``, versioned by
    its tag (None for ``latest``, a digest-only reference or a tag that names no release), the
    digest that actually runs kept as an attribute."""
    raw = (container.get("image") or "").strip()
    reference = parse_image_reference(raw)
    if reference is None:
        return None
    return SoftwareRecord(
        asset_key=asset_key, name=reference.name, version=reference.version, origin=CONTAINER_IMAGE_ORIGIN,
        attributes=_clean({"image": raw, "container": container.get("name"),
                           "digest": _digest_of(image_id) or reference.digest, **(extra or {})}))


@dataclass
class WorkloadInfo:
    """A Deployment, StatefulSet or DaemonSet as the batch builder needs it."""

    kind: str
    namespace: str
    name: str
    obj: Mapping[str, Any]
    key: str
    members: list[str] = field(default_factory=list)

    @property
    def template_labels(self) -> dict[str, str]:
        template = (self.obj.get("spec") or {}).get("template") or {}
        return {str(k): str(v) for k, v in (_meta(template).get("labels") or {}).items()}

    @property
    def replicas(self) -> int:
        if self.kind == "DaemonSet":
            return int((self.obj.get("status") or {}).get("desiredNumberScheduled") or 0)
        replicas = (self.obj.get("spec") or {}).get("replicas")
        return 1 if replicas is None else int(replicas)


def min_up_of(workload: WorkloadInfo, budgets: Sequence[Mapping[str, Any]] | None) -> tuple[int | None, str]:
    """A workload's ``min_up`` and the rule that gave it (kept as the ``min_up_rule`` attribute).

    The PodDisruptionBudget in its namespace whose selector matches its pod template
    decides (several: the strictest); without one, Deployments and StatefulSets use their
    rolling-update tolerance (``rollout_min_up``) and a DaemonSet needs one pod (its
    per-node effect is modelled on the nodes).  At least 1: a workload with no pod up is
    down.  ``budgets=None`` (the budgets could not be listed) leaves ``min_up`` unknown.
    """
    if budgets is None:
        return None, "budgets could not be listed: min_up left as it was"
    expected = workload.replicas
    labels = workload.template_labels
    candidates = []
    for pdb in budgets:
        if _meta(pdb).get("namespace") != workload.namespace:
            continue
        if not selector_matches((pdb.get("spec") or {}).get("selector"), labels):
            continue
        value = pdb_min_up(pdb, expected)
        if value is not None:
            spec = pdb.get("spec") or {}
            field_name = "minAvailable" if spec.get("minAvailable") is not None else "maxUnavailable"
            rule = (f"PodDisruptionBudget {workload.namespace}/{_meta(pdb).get('name')} "
                    f"{field_name} {spec[field_name]} of {expected}")
            candidates.append((value, rule))
    if candidates:
        value, rule = max(candidates)
        if len(candidates) > 1:
            rule += f" (strictest of {len(candidates)} matching budgets)"
        return max(value, 1), rule
    if workload.kind == "DaemonSet":
        return 1, "DaemonSet without a budget: down when no pod runs"
    value = rollout_min_up(workload.kind, workload.obj.get("spec") or {}, expected)
    return max(value, 1), f"no budget: {expected} replicas minus the rolling update's maxUnavailable"


@dataclass
class ClusterListing:
    """What one cluster returned, by kind (a kind whose listing failed is absent)."""

    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def get(self, kind: str) -> list[dict[str, Any]] | None:
        return self.items.get(kind)


def build_batch(cluster: str, listing: ClusterListing, *, services: bool = True) -> ScopeBatch:
    """One cluster's listings → its batch (pure).  Incomplete when any listing failed."""
    batch = ScopeBatch(scope_key=scope_key(cluster), complete=not listing.errors,
                       error="; ".join(listing.errors) or None)
    bad: list[str] = []

    # nodes
    node_keys: dict[str, str] = {}
    nodes = listing.get("Node")
    for node in nodes or []:
        try:
            asset, software = transform_node(node, cluster)
        except MissingIdentity as exc:
            bad.append(str(exc))
            continue
        node_keys[asset.attributes["k8s_node"]] = asset.natural_key
        batch.assets.append(asset)
        batch.software.extend(software)

    # workloads
    workloads: dict[tuple[str, str, str], WorkloadInfo] = {}
    for kind in WORKLOAD_KINDS:
        for obj in listing.get(kind) or []:
            namespace, name = _meta(obj).get("namespace") or "default", _meta(obj).get("name")
            if not name:
                bad.append(f"{kind} without metadata.name")
                continue
            workloads[(kind, namespace, name)] = WorkloadInfo(kind, namespace, name, obj,
                                                              k8s_key(cluster, kind, namespace, name))
    replica_sets = listing.get("ReplicaSet")
    deployment_of: dict[tuple[str, str], str] = {}
    for rs in replica_sets or []:
        owner = _controller_of(rs)
        if owner and owner[0] == "Deployment" and _meta(rs).get("name"):
            deployment_of[(_meta(rs).get("namespace") or "default", _meta(rs)["name"])] = owner[1]

    # pods
    node_software: dict[tuple[str, str], SoftwareRecord] = {}
    for pod in listing.get("Pod") or []:
        meta, spec, status = _meta(pod), pod.get("spec") or {}, pod.get("status") or {}
        node_name = spec.get("nodeName")
        if status.get("phase") != "Running" or not node_name:
            continue   # pending, finished or unscheduled: not modelled (see the module docstring)
        if not meta.get("name"):
            bad.append("pod without metadata.name")
            continue
        namespace, name = meta.get("namespace") or "default", meta["name"]
        key = k8s_key(cluster, "pod", namespace, name)
        workload = _workload_of(pod, namespace, workloads, deployment_of,
                                replica_sets_known=replica_sets is not None)
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items() if k not in VOLATILE_LABELS}
        batch.assets.append(AssetRecord(
            natural_key=key, name=f"{namespace}/{name}", kind="container", tags=labels,
            attributes=_clean({"k8s_cluster": cluster, "namespace": namespace, "node": node_name,
                               "workload": f"{workload.kind}/{workload.namespace}/{workload.name}"
                               if workload else None}),
            **facts_from_tags(labels)))
        node_key = node_keys.get(node_name)
        if node_key:
            batch.dependencies.append(DependencyRecord(key, node_key, "runs-on", "hard"))
        if workload:
            workload.members.append(key)
        image_ids = {s.get("name"): s.get("imageID") for s in [*(status.get("containerStatuses") or []),
                                                              *(status.get("initContainerStatuses") or [])]}
        on_node = node_key is not None and workload is not None and workload.kind == "DaemonSet" \
            and node_level(spec)
        for container in running_containers(spec):
            record = image_software(key, container, image_ids.get(container.get("name")))
            if record is None:
                continue
            batch.software.append(record)
            if on_node:
                assert node_key is not None and workload is not None
                node_software.setdefault((node_key, record.name), SoftwareRecord(
                    asset_key=node_key, name=record.name, version=record.version, origin=record.origin,
                    attributes={**record.attributes, "daemonset": f"{workload.namespace}/{workload.name}"}))
    batch.software.extend(node_software.values())

    # workload assets, membership and min_up
    budgets = listing.get("PodDisruptionBudget")
    pods_listed = listing.get("Pod") is not None
    for workload in workloads.values():
        min_up, rule = min_up_of(workload, budgets)
        labels = {str(k): str(v) for k, v in (_meta(workload.obj).get("labels") or {}).items()}
        batch.assets.append(AssetRecord(
            natural_key=workload.key, name=f"{workload.namespace}/{workload.name}", kind="application",
            min_up=min_up, tags=labels,
            attributes=_clean({"k8s_cluster": cluster, "k8s_kind": workload.kind, "namespace": workload.namespace,
                               "replicas": workload.replicas, "min_up_rule": rule}),
            **facts_from_tags(labels)))
        if pods_listed and (workload.kind != "Deployment" or replica_sets is not None):
            batch.dependencies.extend(DependencyRecord(workload.key, member, "member-of", "hard")
                                      for member in sorted(workload.members))

    if services:
        _add_services(batch, cluster, listing.get("Service") or [], workloads)
    if bad:
        batch.complete = False
        sample = "; ".join(sorted(set(bad))[:3])
        batch.error = "; ".join(filter(None, [batch.error, f"{len(bad)} object(s) without identity: {sample}"]))
    return batch


def _workload_of(pod: Mapping[str, Any], namespace: str, workloads: Mapping[tuple[str, str, str], WorkloadInfo],
                 deployment_of: Mapping[tuple[str, str], str], *, replica_sets_known: bool) -> WorkloadInfo | None:
    owner = _controller_of(pod)
    if owner is None:
        return None
    kind, name = owner
    if kind == "ReplicaSet":
        if not replica_sets_known:
            return None
        deployment = deployment_of.get((namespace, name))
        return workloads.get(("Deployment", namespace, deployment)) if deployment else None
    return workloads.get((kind, namespace, name))


def _add_services(batch: ScopeBatch, cluster: str, services: Sequence[Mapping[str, Any]],
                  workloads: Mapping[tuple[str, str, str], WorkloadInfo]) -> None:
    """Services as ``service`` assets calling the workloads whose pods they select."""
    by_namespace: dict[str, list[WorkloadInfo]] = defaultdict(list)
    for workload in workloads.values():
        by_namespace[workload.namespace].append(workload)
    for svc in services:
        meta, spec = _meta(svc), svc.get("spec") or {}
        namespace, name = meta.get("namespace") or "default", meta.get("name")
        selector = spec.get("selector") or {}
        annotations = meta.get("annotations") or {}
        if (not name or not selector or namespace in SYSTEM_NAMESPACES
                or annotations.get(BUSINESS_SERVICE_ANNOTATION) or spec.get("type") == "ExternalName"):
            continue
        targets = [w for w in by_namespace.get(namespace, [])
                   if all(w.template_labels.get(k) == v for k, v in selector.items())]
        if not targets:
            continue
        key = k8s_key(cluster, "service", namespace, name)
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        batch.assets.append(AssetRecord(
            natural_key=key, name=f"{namespace}/{name}", kind="service", tags=labels,
            attributes=_clean({"k8s_cluster": cluster, "k8s_kind": "Service", "namespace": namespace,
                               "type": spec.get("type")}),
            **facts_from_tags(labels)))
        batch.dependencies.extend(DependencyRecord(key, w.key, "calls", "hard")
                                  for w in sorted(targets, key=lambda w: w.key))


# --------------------------------------------------------------------------- the API

def list_items(api_client: Any, resource: ResourceType, page_size: int,
               progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Every object of one resource type, a page of ``page_size`` at a time.

    A 410 Gone answers a continue token that expired between pages: the listing starts
    again without it (up to ``MAX_LIST_RESTARTS`` times) so the result is one consistent
    snapshot; any other API error propagates."""
    import kubernetes.client
    from kubernetes.client.exceptions import ApiException

    method = getattr(getattr(kubernetes.client, resource.api)(api_client), resource.method)
    items: list[dict[str, Any]] = []
    token: str | None = None
    restarts = 0
    while True:
        kwargs: dict[str, Any] = {"limit": page_size, "_preload_content": False,
                                  "_request_timeout": REQUEST_TIMEOUT}
        if token:
            kwargs["_continue"] = token
        if resource.field_selector:
            kwargs["field_selector"] = resource.field_selector
        try:
            response = method(**kwargs)
        except ApiException as exc:
            if exc.status == 410 and token and restarts < MAX_LIST_RESTARTS:
                restarts += 1
                if progress:
                    progress(f"{resource.resource}: continue token expired (410 Gone); listing again "
                             f"from the start ({restarts}/{MAX_LIST_RESTARTS})")
                items, token = [], None
                continue
            raise
        page = json.loads(response.data)
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue") or None
        if not token:
            return items


def describe_error(resource: ResourceType, exc: BaseException) -> str:
    """One line for the scope result: the status, reason and the API server's message."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        message = exc.reason or ""
        try:
            body = json.loads(exc.body or "{}")
            message = body.get("message") or message
        except (TypeError, ValueError):
            pass
        return f"listing {resource.resource}: {exc.status} {message}".strip()
    return f"listing {resource.resource}: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- clusters

@dataclass
class ClusterTarget:
    """One cluster to collect: its name in natural keys, how it was chosen, and a factory for a
    ``kubernetes.client.ApiClient`` (called when the cluster's turn comes, so a context whose
    credentials fail fails only its own scope)."""

    name: str
    label: str
    connect: Callable[[], Any]


class KubeconfigError(ValueError):
    """The kubeconfig cannot be read, or names no such context."""


def kubeconfig_targets(kubeconfig: str | None = None, contexts: Sequence[str] = (),
                       cluster_name: str | None = None) -> list[ClusterTarget]:
    """Targets for kubeconfig contexts (none given: the current context).  Each cluster is named
    by the cluster its context names (an EKS ARN shortened), or ``cluster_name`` for one context.
    ``kubeconfig`` None: ``$KUBECONFIG`` (several files merged), else ``~/.kube/config``."""
    from kubernetes.config import list_kube_config_contexts, new_client_from_config
    from kubernetes.config.config_exception import ConfigException

    # Read $KUBECONFIG now, not when the client library was imported (a CronJob's env, a test's).
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    try:
        available, current = list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        raise KubeconfigError(f"cannot read the kubeconfig {kubeconfig}: {exc}") from exc
    by_name = {c["name"]: c for c in available or []}
    wanted = list(dict.fromkeys(contexts)) or ([current["name"]] if current else [])
    if not wanted:
        raise KubeconfigError("the kubeconfig has no current context: name one with --context")
    unknown = [c for c in wanted if c not in by_name]
    if unknown:
        raise KubeconfigError(f"no context {', '.join(map(repr, unknown))} in the kubeconfig "
                              f"(contexts: {', '.join(sorted(by_name)) or 'none'})")
    if cluster_name and len(wanted) > 1:
        raise KubeconfigError("--cluster-name names one cluster: give it with a single --context")
    targets = []
    for context in wanted:
        entry = by_name[context]
        name = cluster_name_from(cluster_name or (entry.get("context") or {}).get("cluster") or context)

        def connect(context: str = context) -> Any:
            return new_client_from_config(config_file=kubeconfig, context=context, persist_config=False)

        targets.append(ClusterTarget(name=name, label=f"context {context}", connect=connect))
    names = [t.name for t in targets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise KubeconfigError(f"contexts name the same cluster {', '.join(twice)}: collect them one at a time "
                              "with --cluster-name")
    return targets


def in_cluster() -> bool:
    """Whether this process runs in a pod (the service-account environment is present)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("KUBERNETES_SERVICE_PORT"))


def in_cluster_target(cluster_name: str) -> ClusterTarget:
    """The cluster this pod runs in, through its service account (a CronJob's)."""
    def connect() -> Any:
        from kubernetes.client import ApiClient, Configuration
        from kubernetes.config import load_incluster_config

        configuration = Configuration()
        load_incluster_config(client_configuration=configuration)
        return ApiClient(configuration)

    return ClusterTarget(name=cluster_name_from(cluster_name), label="in-cluster service account",
                         connect=connect)


class KubernetesCollector:
    """Collects each target cluster into its own scope."""

    name = SOURCE

    def __init__(self, targets: Sequence[ClusterTarget], *, page_size: int = DEFAULT_PAGE_SIZE,
                 services: bool = True) -> None:
        self.targets = list(targets)
        self.page_size = page_size
        self.services = services

    def describe_scope(self) -> str:
        text = "kubernetes clusters=" + ",".join(f"{t.name} ({t.label})" for t in self.targets)
        return text if len(text) <= 1000 else text[:997] + "..."

    def planned_scopes(self) -> list[str]:
        return [scope_key(t.name) for t in self.targets]

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        for target in self.targets:
            yield self.collect_cluster(target, progress)

    def collect_cluster(self, target: ClusterTarget, progress: ProgressFn) -> ScopeBatch:
        try:
            api_client = target.connect()
        except Exception as exc:  # noqa: BLE001 - a context whose credentials fail fails only its scope
            message = f"connecting through the {target.label}: {type(exc).__name__}: {exc}"
            progress(f"{scope_key(target.name)}: FAILED: {message}")
            return ScopeBatch(scope_key=scope_key(target.name), complete=False, error=message)
        try:
            listing = self.list_cluster(api_client, target, progress)
        finally:
            api_client.close()
        batch = build_batch(target.name, listing, services=self.services)
        state = "INCOMPLETE" if not batch.complete else "read"
        progress(f"{batch.scope_key}: {state}: {len(batch.assets)} assets, {len(batch.software)} software, "
                 f"{len(batch.dependencies)} dependencies" + (f" — {batch.error}" if batch.error else ""))
        return batch

    def list_cluster(self, api_client: Any, target: ClusterTarget, progress: ProgressFn) -> ClusterListing:
        from kubernetes.client.exceptions import ApiException

        listing = ClusterListing()
        for resource in RESOURCES:
            if resource.kind == "Service" and not self.services:
                continue
            try:
                listing.items[resource.kind] = list_items(api_client, resource, self.page_size, progress)
            except ApiException as exc:
                # Forbidden, a missing API group...: this type only; the others are still read.
                listing.errors.append(describe_error(resource, exc))
            except Exception as exc:  # noqa: BLE001 - unreachable API server: stop asking it
                listing.errors.append(describe_error(resource, exc))
                break
        return listing


# --------------------------------------------------------------------------- configuration

def from_config() -> KubernetesCollector | None:
    """The collector ``planb collect all`` runs: the kubeconfig contexts in
    ``PLANB_COLLECT_KUBERNETES_CONTEXTS`` (from ``$KUBECONFIG`` or ``~/.kube/config``) and, with
    ``PLANB_COLLECT_KUBERNETES_CLUSTER_NAME``, the cluster Plan B runs in (its service
    account).  None when neither is set."""
    contexts = config.get("COLLECT_KUBERNETES_CONTEXTS") or []
    cluster_name = config.get("COLLECT_KUBERNETES_CLUSTER_NAME")
    if not contexts and not cluster_name:
        return None
    targets: list[ClusterTarget] = []
    for context in contexts:   # one at a time: a context the kubeconfig lacks fails only its own scope
        try:
            [target] = kubeconfig_targets(None, [context])
        except KubeconfigError as exc:
            target = _failing_target(context, str(exc))
        if any(t.name == target.name for t in targets):
            target = _failing_target(context, f"context {context} names cluster {target.name} again: "
                                              "collect it once")
        targets.append(target)
    if cluster_name:
        targets.append(in_cluster_target(cluster_name))
    return KubernetesCollector(targets)


def _failing_target(context: str, reason: str) -> ClusterTarget:
    """A context the kubeconfig could not resolve: its scope fails with the reason."""
    def connect() -> Any:
        raise KubeconfigError(reason)

    return ClusterTarget(name=cluster_name_from(context), label=f"context {context}", connect=connect)
