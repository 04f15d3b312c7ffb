"""The Kubernetes collector's pure rules: min_up arithmetic, label selectors, provider ids, image
references and their attribution, and the batch a listing becomes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from collectors.attribution import Attributor, parse_image_reference
from collectors.ingest import apply_batch
from collectors.kubernetes import (
    RESOURCES,
    ClusterListing,
    WorkloadInfo,
    build_batch,
    cluster_name_from,
    min_up_of,
    parse_provider_id,
    pdb_min_up,
    rollout_min_up,
    selector_matches,
)
from inventory.db import read_session, write_session
from inventory.models import Asset
from tests.collectors import k8s_standin as k

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- min_up

@pytest.mark.parametrize(("spec", "expected", "min_up"), [
    ({"minAvailable": 3}, 4, 3),
    ({"minAvailable": "50%"}, 7, 4),        # 3.5 rounds up (the Kubernetes docs' example)
    ({"minAvailable": "30%"}, 10, 3),
    ({"minAvailable": "100%"}, 3, 3),
    ({"maxUnavailable": 1}, 3, 2),
    ({"maxUnavailable": "30%"}, 7, 4),      # 2.1 unavailable rounds up to 3 → 4 must stay up
    ({"maxUnavailable": "0%"}, 5, 5),
    ({"maxUnavailable": 9}, 3, 0),          # never below zero
    ({}, 3, None),
])
def test_pdb_min_up_follows_the_disruption_controller(spec: dict, expected: int, min_up: int | None) -> None:
    assert pdb_min_up({"spec": spec}, expected) == min_up


@pytest.mark.parametrize(("kind", "spec", "replicas", "min_up"), [
    ("Deployment", {}, 4, 3),                                                    # default 25%: floor(1) = 1
    ("Deployment", {}, 10, 8),                                                   # floor(2.5) = 2
    ("Deployment", {}, 2, 2),                                                    # floor(0.5) = 0, surge 1
    ("Deployment", {"strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 0}}}, 3, 2),  # fencepost: 1
    ("Deployment", {"strategy": {"rollingUpdate": {"maxUnavailable": "50%"}}}, 5, 3),
    ("Deployment", {"strategy": {"type": "Recreate"}}, 4, 3),                    # no number: the default
    ("StatefulSet", {}, 3, 2),                                                   # default maxUnavailable 1
    ("StatefulSet", {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "40%"}}}, 5, 3),   # ceil(2.0)
])
def test_rollout_min_up_without_a_budget(kind: str, spec: dict, replicas: int, min_up: int) -> None:
    assert rollout_min_up(kind, spec, replicas) == min_up


def test_min_up_of_picks_the_strictest_matching_budget_and_never_goes_below_one() -> None:
    dep = k.deployment("shop", "cart", 6, {"app": "cart", "tier": "web"}, "cart:1")
    workload = WorkloadInfo("Deployment", "shop", "cart", dep, "k8s:c:deployment:shop/cart")
    budgets = [k.pdb("shop", "loose", {"matchLabels": {"app": "cart"}}, max_unavailable="50%"),
               k.pdb("shop", "strict", {"matchLabels": {"tier": "web"}}, min_available=5),
               k.pdb("other", "elsewhere", {"matchLabels": {"app": "cart"}}, min_available=6),
               k.pdb("shop", "unrelated", {"matchLabels": {"app": "basket"}}, min_available=6)]
    min_up, rule = min_up_of(workload, budgets)
    assert min_up == 5 and "shop/strict" in rule and "strictest of 2" in rule
    zero = [k.pdb("shop", "none", {"matchLabels": {"app": "cart"}}, min_available=0)]
    assert min_up_of(workload, zero)[0] == 1
    assert min_up_of(workload, None)[0] is None           # budgets unknown: not guessed
    ds = WorkloadInfo("DaemonSet", "kube-system", "cilium", k.daemon_set("kube-system", "cilium", {"a": "b"},
                                                                           "x", 6), "k")
    assert min_up_of(ds, [])[0] == 1


@pytest.mark.parametrize(("selector", "matches"), [
    ({}, True),
    (None, False),
    ({"matchLabels": {"app": "web"}}, True),
    ({"matchLabels": {"app": "api"}}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "web"]}]}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}, False),
    ({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}, True),
    ({"matchExpressions": [{"key": "canary", "operator": "Exists"}]}, False),
    ({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "Gt", "values": ["1"]}]}, False),
])
def test_label_selectors(selector: dict | None, matches: bool) -> None:
    assert selector_matches(selector, {"app": "web", "tier": "web"}) is matches


# ---------------------------------------------------------------- identities

def test_provider_ids() -> None:
    aws = parse_provider_id("aws:///eu-west-1b/i-0123456789abcdef0")
    assert (aws.provider, aws.region, aws.zone, aws.cloud_instance_id) == (
        "aws", "eu-west-1", "eu-west-1b", "i-0123456789abcdef0")
    fargate = parse_provider_id("aws:///us-east-1a/0a1b2c/fargate-ip-10-0-1-5.ec2.internal")
    assert fargate.cloud_instance_id is None
    uuid = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
    vm = parse_provider_id("azure:///subscriptions/5F2B8C1E-7D3A-4E9B-A6C4-2D8E1F0B9A73/resourceGroups/mc_rg/"
                           "providers/Microsoft.Compute/virtualMachines/aks-node-1", uuid)
    assert (vm.provider, vm.account, vm.cloud_instance_id) == (
        "azure", "5f2b8c1e-7d3a-4e9b-a6c4-2d8e1f0b9a73", uuid.lower())
    assert vm.attributes["vm_name"] == "aks-node-1" and vm.attributes["resource_group"] == "mc_rg"
    vmss = parse_provider_id("azure:///subscriptions/s/resourceGroups/MC_rg/providers/Microsoft.Compute/"
                             "virtualMachineScaleSets/aks-nodepool1-123-vmss/virtualMachines/3", uuid)
    assert vmss.attributes["scale_set"] == "aks-nodepool1-123-vmss" and vmss.attributes["scale_set_instance"] == "3"
    gce = parse_provider_id("gce://my-project/europe-west1-b/gke-node-1")
    assert (gce.provider, gce.region, gce.zone) == ("gcp", "europe-west1", "europe-west1-b")
    assert parse_provider_id("kind://docker/kind/kind-control-plane").provider is None
    assert parse_provider_id(None).provider is None


@pytest.mark.parametrize(("raw", "name"), [
    ("arn:aws:eks:us-east-1:123456789012:cluster/payments", "payments"),
    ("kubernetes-admin@kubernetes", "kubernetes-admin-kubernetes"),
    ("gke_proj_europe-west1_prod", "gke_proj_europe-west1_prod"),
])
def test_cluster_names(raw: str, name: str) -> None:
    assert cluster_name_from(raw) == name


@pytest.mark.parametrize(("raw", "name", "tag", "digest", "version"), [
    ("quay.io/cilium/cilium:v1.15.6", "quay.io/cilium/cilium", "v1.15.6", None, "1.15.6"),
    ("quay.io/cilium/cilium:v1.15.6@sha256:abc", "quay.io/cilium/cilium", "v1.15.6", "sha256:abc", "1.15.6"),
    ("quay.io/cilium/cilium@sha256:abc", "quay.io/cilium/cilium", None, "sha256:abc", None),
    ("nginx", "docker.io/library/nginx", None, None, None),
    ("nginx:latest", "docker.io/library/nginx", "latest", None, None),
    ("calico/node:v3.27.3", "docker.io/calico/node", "v3.27.3", None, "3.27.3"),
    ("localhost:5000/team/app:2.0", "localhost:5000/team/app", "2.0", None, "2.0"),
    ("registry.example:443/App:1.0", "registry.example:443/app", "1.0", None, "1.0"),
    ("cr.l5d.io/linkerd/proxy:stable-2.14.10", "cr.l5d.io/linkerd/proxy", "stable-2.14.10", None, "2.14.10"),
    ("gcr.io/datadoghq/agent:7.55.2-jmx", "gcr.io/datadoghq/agent", "7.55.2-jmx", None, "7.55.2-jmx"),
])
def test_image_references(raw: str, name: str, tag: str | None, digest: str | None, version: str | None) -> None:
    ref = parse_image_reference(raw)
    assert ref is not None and (ref.name, ref.tag, ref.digest, ref.version) == (name, tag, digest, version)


@pytest.mark.parametrize(("image", "vendor", "product"), [
    ("registry.crowdstrike.com/falcon-sensor/us-1/release/falcon-sensor:7.11.0-16405-1.falcon-linux.Release.US-1",
     "CrowdStrike", "Falcon Sensor"),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/mirror/falcon-sensor:7.16.0", "CrowdStrike", "Falcon Sensor"),
    ("quay.io/cilium/cilium:v1.15.6", "Isovalent", "Cilium"),
    ("quay.io/cilium/operator-aws:v1.15.6", "Isovalent", "Cilium"),
    ("quay.io/isovalent/cilium:v1.15.6-cee.1", "Isovalent", "Cilium"),
    ("quay.io/cilium/cilium-envoy:v1.29.7", "Isovalent", "Cilium Envoy"),
    ("docker.io/calico/node:v3.27.3", "Tigera", "Calico"),
    ("quay.io/tigera/operator:v1.32.7", "Tigera", "Calico"),
    ("docker.io/istio/proxyv2:1.22.1", "Istio", "Istio"),
    ("cr.l5d.io/linkerd/proxy:stable-2.14.10", "Buoyant", "Linkerd"),
    ("gcr.io/datadoghq/agent:7.55.2", "Datadog", "Datadog Agent"),
    ("docker.elastic.co/beats/elastic-agent:8.14.1", "Elastic", "Elastic Agent"),
    ("registry.k8s.io/ingress-nginx/controller:v1.10.1", "Cloud Native Computing Foundation", "ingress-nginx"),
    ("nginx/nginx-ingress:3.5.2", "F5", "NGINX Ingress Controller"),
    ("registry.k8s.io/coredns/coredns:v1.11.1", "Cloud Native Computing Foundation", "CoreDNS"),
    ("602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.11.1-eksbuild.4",
     "Cloud Native Computing Foundation", "CoreDNS"),
    ("602401143452.dkr.ecr.us-west-2.amazonaws.com/amazon-k8s-cni:v1.18.1-eksbuild.1",
     "Amazon Web Services", "Amazon VPC CNI"),
    ("mcr.microsoft.com/containernetworking/azure-cns:v1.5.26", "Microsoft", "Azure CNI"),
    ("registry.k8s.io/kube-proxy:v1.29.3", "Cloud Native Computing Foundation", "Kubernetes"),
    ("602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/kube-proxy:v1.29.0-minimal-eksbuild.1",
     "Cloud Native Computing Foundation", "Kubernetes"),
])
def test_platform_images_are_attributed(image: str, vendor: str, product: str) -> None:
    ref = parse_image_reference(image)
    assert ref is not None
    assert Attributor().attribute_software(ref.name, None, "container-image") == (vendor, product)


@pytest.mark.parametrize("image", ["nginx:1.27", "docker.io/library/postgres:16.3",
                                   "123456789012.dkr.ecr.us-east-1.amazonaws.com/checkout:2.4.1",
                                   "ghcr.io/example/datadog-agent-exporter:1.0"])
def test_other_images_stay_unattributed(image: str) -> None:
    """An image name never falls through to package or publisher rules ("nginx" is not F5's
    NGINX package, an application image named like an agent is not the agent)."""
    ref = parse_image_reference(image)
    assert ref is not None and Attributor().attribute_software(ref.name, None, "container-image") is None


# ---------------------------------------------------------------- batches

def test_a_failed_replicaset_listing_keeps_deployment_memberships_as_they_were() -> None:
    app = k.KubeStandIn()
    k.cilium_cluster(app)
    listing = ClusterListing(items={kind: objs for kind, objs in app.objects.items() if kind != "ReplicaSet"},
                             errors=["listing replicasets: 403 forbidden"])
    batch = build_batch("c", listing)
    assert not batch.complete and "replicasets" in (batch.error or "")
    groups = {d.dependent_key for d in batch.dependencies if d.kind == "member-of"}
    assert "k8s:c:deployment:payments/checkout" not in groups
    assert "k8s:c:daemonset:kube-system/cilium" in groups and "k8s:c:statefulset:data/ledger" in groups


def test_an_azure_node_merges_into_the_vm_the_azure_collector_recorded(sqlite_url: str) -> None:
    from collectors.azure import transform_vm
    from inventory.db import make_engine

    vm_id = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    sub = "5f2b8c1e-7d3a-4e9b-a6c4-2d8e1f0b9a73"
    resource = f"/subscriptions/{sub}/resourceGroups/MC_rg/providers/Microsoft.Compute/virtualMachines/aks-node-1"
    vm, _software = transform_vm({"id": resource, "name": "aks-node-1", "location": "westeurope",
                                  "properties": {"vmId": vm_id}}, sub, [], None)
    listing = ClusterListing(items={"Node": [k.node("aks-node-1", provider_id="azure://" + resource,
                                                    system_uuid=vm_id.upper(), zone="westeurope-1")]})
    engine = make_engine(sqlite_url)
    try:
        from collectors.base import ScopeBatch
        with write_session(engine) as db:
            apply_batch(db, ScopeBatch(scope_key=f"azure:{sub}:vm", assets=[vm]), "azure")
        with write_session(engine) as db:
            apply_batch(db, build_batch("aks", listing), "kubernetes")
        with read_session(engine) as db:
            assets = [(a.natural_key, a.attributes.get("k8s_node")) for a in db.scalars(sa.select(Asset))]
        assert assets == [(vm.natural_key, "aks-node-1")]
    finally:
        engine.dispose()


# ---------------------------------------------------------------- the documented ClusterRole

def test_the_documented_cluster_role_grants_exactly_what_the_collector_lists() -> None:
    text = (ROOT / "docs" / "collectors" / "kubernetes.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(kind: ClusterRole\n.*?)```", text, re.DOTALL)
    assert block, "the ClusterRole manifest is in docs/collectors/kubernetes.md"
    role = yaml.safe_load(block.group(1))
    granted = {(group, resource, tuple(rule["verbs"])) for rule in role["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]}
    assert granted == {(r.group, r.resource, ("list",)) for r in RESOURCES}
