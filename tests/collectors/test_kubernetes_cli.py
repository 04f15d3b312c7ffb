"""``planb collect kubernetes`` end to end: CLI → KubernetesCollector → the official kubernetes client
(real HTTP to a loopback stand-in of the API, a real kubeconfig with a bearer token) → ingest → the
database → ``planb impact``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from click.testing import CliRunner

from inventory.cli import main
from inventory.db import make_engine
from inventory.models import (
    Asset,
    CollectionRun,
    Dependency,
    Installation,
    Product,
    UnattributedSoftware,
    Vendor,
)
from tests.collectors.aws_helpers import aws_env, moto_server
from tests.collectors.k8s_standin import (
    CILIUM_NEW,
    DIGEST_NEW,
    KubeStandIn,
    cilium_cluster,
    kube,
    node_names,
    pdb,
    pod,
    serve,
    write_kubeconfig,
)

__all__ = ["aws_env", "kube", "moto_server"]  # fixtures imported for pytest

CLUSTER = "payments"
EKS_ARN = f"arn:aws:eks:us-east-1:123456789012:cluster/{CLUSTER}"


def key(kind: str, where: str) -> str:
    return f"k8s:{CLUSTER}:{kind}:{where}"


NODES = [key("node", n) for n in node_names()]
NEW_NODES = NODES[:2]


@pytest.fixture
def cli_env(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    return cli_env


@pytest.fixture
def cluster(kube: tuple[KubeStandIn, str], tmp_path: Path) -> tuple[KubeStandIn, str]:
    """The Cilium-rollout cluster behind a kubeconfig whose context names it by its EKS ARN."""
    app, url = kube
    cilium_cluster(app)
    return app, write_kubeconfig(tmp_path / "kubeconfig", {"prod-payments": (EKS_ARN, url)})


def collect(kubeconfig: str, *args: str) -> Any:
    return CliRunner().invoke(main, ["collect", "kubernetes", "--kubeconfig", kubeconfig, *args])


def stored(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with so.Session(engine) as db:
            a, b = so.aliased(Asset), so.aliased(Asset)
            return {
                "assets": {x.natural_key: x for x in db.scalars(sa.select(Asset))},
                "runs": list(db.scalars(sa.select(CollectionRun).order_by(CollectionRun.id))),
                "edges": {tuple(r) for r in db.execute(
                    sa.select(a.natural_key, b.natural_key, Dependency.kind, Dependency.strength)
                    .join(a, a.id == Dependency.dependent_id).join(b, b.id == Dependency.dependency_id))},
                "installed": {(r[0], r[1], r[2]): (r[3], r[4]) for r in db.execute(
                    sa.select(Asset.natural_key, Vendor.name, Product.name, Installation.version,
                              Installation.attributes)
                    .join(Installation, Installation.asset_id == Asset.id)
                    .join(Product, Product.id == Installation.product_id)
                    .join(Vendor, Vendor.id == Product.vendor_id))},
                "unattributed": {(r[0], r[1], r[2]) for r in db.execute(
                    sa.select(Asset.natural_key, UnattributedSoftware.name, UnattributedSoftware.version)
                    .join(UnattributedSoftware, UnattributedSoftware.asset_id == Asset.id))},
            }
    finally:
        engine.dispose()


def impact(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["impact", *args, "--format", "json", "--limit", "0"])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.output)


def statuses(answer: dict[str, Any]) -> dict[str, str]:
    return {h["natural_key"]: h["status"] for h in answer["hits"]}


# ---------------------------------------------------------------- what becomes what

def test_collect_models_nodes_pods_workloads_budgets_and_images(cli_env: str, cluster: Any) -> None:
    _app, kubeconfig = cluster
    result = collect(kubeconfig)
    assert result.exit_code == 0, result.output + result.stderr
    assert f"kubernetes:{CLUSTER}" in result.output        # one scope, named by the ARN's cluster
    db = stored(cli_env)
    assets = db["assets"]

    node = assets[NODES[0]]
    assert (node.kind, node.provider, node.region, node.zone, node.cloud_instance_id) == (
        "host", "aws", "us-east-1", "us-east-1a", "i-01aaaaaaaaaaaaaaa")
    assert (node.os_family, node.os_name, node.os_version) == ("linux", "Amazon Linux 2023.5.20240722",
                                                               "2023.5.20240722")
    assert node.tags["eks.amazonaws.com/nodegroup"] == "general"
    assert node.attributes["node_pool"] == "general" and node.attributes["instance_type"] == "m6i.xlarge"
    cncf = "Cloud Native Computing Foundation"
    assert db["installed"][(NODES[0], cncf, "Kubernetes")][0] == "1.29.3-eks-ae9a62a"   # the kubelet
    assert db["installed"][(NODES[0], cncf, "containerd")][0] == "1.7.11"
    assert db["installed"][(NODES[0], "Amazon Web Services", "Amazon Linux")][0] == "2023.5.20240722"

    # only running, scheduled pods are assets; each runs on its node
    pods = {k for k, a in assets.items() if a.kind == "container"}
    assert len(pods) == 6 * 3 + 4 + 3 + 2 + 3
    assert key("pod", "web/catalog-5d9c7b8f4-pending") not in assets
    assert key("pod", "batch/nightly-report-28891234-x7k2p") not in assets
    assert (key("pod", "payments/checkout-5d9c7b8f4-ch0z"), NODES[0], "runs-on", "hard") in db["edges"]
    checkout = assets[key("pod", "payments/checkout-5d9c7b8f4-ch0z")]
    assert "pod-template-hash" not in checkout.tags and checkout.tags["app"] == "checkout"

    # images: registry/repository, tag as the version, the running digest as an attribute
    cilium_pod = key("pod", "kube-system/cilium-0x0k")
    version, attributes = db["installed"][(cilium_pod, "Isovalent", "Cilium")]
    assert version == "1.15.6" and attributes["digest"] == DIGEST_NEW and attributes["image"] == CILIUM_NEW
    assert db["installed"][(key("pod", "kube-system/cilium-3x3k"), "Isovalent", "Cilium")][0] == "1.15.5"
    assert db["installed"][(checkout.natural_key, "Istio", "Istio")][0] == "1.22.1"   # a native sidecar
    assert (checkout.natural_key, "123456789012.dkr.ecr.us-east-1.amazonaws.com/checkout", "2.4.1") \
        in db["unattributed"]
    assert not any(name == "docker.io/library/busybox" for _k, name, _v in db["unattributed"])  # init: done
    assert db["installed"][(key("pod", "monitoring/datadog-agent-0d0g"), "Datadog", "Datadog Agent")][0] == "7.55.2"

    # node-level DaemonSets (host network / node-critical) are installed on their nodes; Datadog is not
    assert db["installed"][(NODES[0], "Isovalent", "Cilium")][0] == "1.15.6"
    assert db["installed"][(NODES[0], "Isovalent", "Cilium")][1]["daemonset"] == "kube-system/cilium"
    assert db["installed"][(NODES[4], "Isovalent", "Cilium")][0] == "1.15.5"
    assert (NODES[0], cncf, "Kubernetes") in db["installed"]   # kube-proxy's image and the kubelet: one product
    assert (NODES[0], "Datadog", "Datadog Agent") not in db["installed"]

    # workloads: groups of their running pods, min_up from the budgets
    deployment = assets[key("deployment", "payments/checkout")]
    assert (deployment.kind, deployment.min_up) == ("application", 3)
    assert deployment.attributes["min_up_rule"].startswith("PodDisruptionBudget payments/checkout minAvailable 3")
    members = {d for (g, d, kind, _s) in db["edges"] if g == deployment.natural_key and kind == "member-of"}
    assert members == {key("pod", f"payments/checkout-5d9c7b8f4-ch{i}z") for i in range(4)}
    assert assets[key("deployment", "payments/fraud")].min_up == 2          # matchExpressions selector
    assert assets[key("statefulset", "data/ledger")].min_up == 2            # 3 − maxUnavailable 1
    assert assets[key("deployment", "web/catalog")].min_up == 2             # no budget: 2 − floor(25% of 2)
    assert assets[key("daemonset", "kube-system/cilium")].min_up == 1
    assert len({d for (g, d, kind, _s) in db["edges"]
                if g == key("daemonset", "kube-system/cilium") and kind == "member-of"}) == 6

    # Services: a service entry calling its workload, except where the estate names the business
    # service (annotation), system namespaces and selector-less Services
    svc = assets[key("service", "payments/checkout")]
    assert svc.kind == "service"
    assert (svc.natural_key, deployment.natural_key, "calls", "hard") in db["edges"]
    assert key("service", "payments/fraud") not in assets
    assert key("service", "kube-system/kube-dns") not in assets and key("service", "default/kubernetes") not in assets

    # an unchanged re-run writes nothing
    again = collect(kubeconfig)
    assert again.exit_code == 0
    run = stored(cli_env)["runs"][-1]
    assert (run.status, run.created, run.updated, run.marked_stale) == ("succeeded", 0, 0, 0)


def test_cilium_rollout_blast_radius(cli_env: str, cluster: Any) -> None:
    """The issue's "Done when": 2 of 6 nodes run Cilium v1.15.6."""
    _app, kubeconfig = cluster
    assert collect(kubeconfig).exit_code == 0

    answer = impact("--vendor", "Isovalent", "--version", ">=1.15.6")
    status = statuses(answer)
    assert {k for k, s in status.items() if k in NODES} == set(NEW_NODES)
    assert all(status[n] == "down" for n in NEW_NODES)
    on_new_nodes = {k for (k, d, kind, _s) in stored(cli_env)["edges"] if kind == "runs-on" and d in NEW_NODES}
    assert len(on_new_nodes) == 2 * 3 + 2 + 1          # Cilium, kube-proxy, Datadog; checkout ×2; fraud ×1
    assert all(status[p] == "down" for p in on_new_nodes)
    assert status[key("deployment", "payments/checkout")] == "down"       # 2 of 4 up, minAvailable 3
    assert status[key("deployment", "payments/fraud")] == "degraded"      # 2 of 3 up, minAvailable 2
    assert key("deployment", "web/catalog") not in status                 # no pod there: untouched
    assert key("statefulset", "data/ledger") not in status
    assert status[key("service", "payments/checkout")] == "down"
    assert status[key("daemonset", "kube-system/cilium")] == "degraded"
    assert not any(k in status for k in NODES[2:])
    assert answer["version_unknown"] == []

    # the old version alone hits the other four nodes instead
    old = statuses(impact("--vendor", "Isovalent", "--version", "<1.15.6"))
    assert {k for k in old if k in NODES} == set(NODES[2:])


def test_digest_only_and_latest_images_are_version_unknown(cli_env: str, kube: Any, tmp_path: Path) -> None:
    app, url = kube
    cilium_cluster(app)
    pinned = pod("kube-system", "cilium-pinned", node_names()[5], [f"quay.io/cilium/cilium@{DIGEST_NEW}"],
                 owner=("DaemonSet", "cilium"), labels={"k8s-app": "cilium"}, host_network=True)
    app.remove("Pod", "kube-system", "cilium-5x5k")
    app.add("Pod", pinned)
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"prod": (CLUSTER, url)})
    assert collect(kubeconfig).exit_code == 0

    answer = impact("--vendor", "Isovalent", "--version", ">=1.15.6")
    unknown = {entry["natural_key"] for entry in answer["version_unknown"]}
    assert unknown == {NODES[5], key("pod", "kube-system/cilium-pinned")}
    assert NODES[5] not in statuses(answer)


# ---------------------------------------------------------------- paging, 410 and 403

def test_lists_are_paged_and_a_stale_continue_token_restarts_the_listing(cli_env: str, cluster: Any) -> None:
    app, kubeconfig = cluster
    app.expire_continue["pods"] = 1
    result = collect(kubeconfig, "--page-size", "5")
    assert result.exit_code == 0, result.output + result.stderr
    assert "continue token expired (410 Gone)" in result.stderr
    pods = app.lists_of("pods")
    running = 6 * 3 + 4 + 3 + 2 + 3
    assert all(q["limit"] == "5" and q["fieldSelector"] == "status.phase=Running" for q in pods)
    # first page, the refused continuation, then the whole listing again from the start
    assert "continue" not in pods[0] and "continue" in pods[1] and "continue" not in pods[2]
    assert len(pods) == 2 + -(-running // 5)
    assert len(app.lists_of("nodes")) == 2                        # 6 nodes in pages of 5
    assert sum(1 for a in stored(cli_env)["assets"].values() if a.kind == "container") == running


def test_forbidden_resource_makes_the_scope_partial_and_retires_nothing(cli_env: str, cluster: Any) -> None:
    app, kubeconfig = cluster
    assert collect(kubeconfig).exit_code == 0
    gone = key("pod", "web/catalog-5d9c7b8f4-ca1z")
    app.remove("Pod", "web", "catalog-5d9c7b8f4-ca1z")
    app.objects["PodDisruptionBudget"] = [pdb("payments", "checkout", {"matchLabels": {"app": "checkout"}},
                                              min_available=1)]
    app.forbidden.add("poddisruptionbudgets")

    result = collect(kubeconfig)

    assert result.exit_code == 3, result.output + result.stderr
    assert "poddisruptionbudgets.policy is forbidden" in result.output + result.stderr
    db = stored(cli_env)
    assert db["runs"][-1].status == "partial"
    assert db["assets"][gone].retired_at is None                         # nothing retired
    assert db["assets"][key("deployment", "payments/checkout")].min_up == 3   # not guessed without budgets
    assert len(app.lists_of("services")) == 1 + 1                         # the other types were still read

    app.forbidden.clear()
    assert collect(kubeconfig).exit_code == 0
    db = stored(cli_env)
    assert db["assets"][gone].retired_at is not None                     # a complete run retires it
    assert db["assets"][key("deployment", "payments/checkout")].min_up == 1


def test_unreachable_cluster_fails_and_keeps_earlier_data(cli_env: str, cluster: Any, tmp_path: Path) -> None:
    _app, kubeconfig = cluster
    assert collect(kubeconfig).exit_code == 0
    dead = write_kubeconfig(tmp_path / "dead", {"prod-payments": (EKS_ARN, "http://127.0.0.1:9")})
    result = collect(dead)
    assert result.exit_code == 1
    db = stored(cli_env)
    assert db["runs"][-1].status == "failed"
    assert all(a.retired_at is None for a in db["assets"].values())


# ---------------------------------------------------------------- one machine, one asset

def _collect_aws() -> None:
    result = CliRunner().invoke(main, ["collect", "aws", "--region", "us-east-1", "--resource-type", "ec2",
                                       "--no-ssm"])
    assert result.exit_code == 0, result.output + result.stderr


@pytest.mark.parametrize("aws_first", [True, False], ids=["aws-then-kubernetes", "kubernetes-then-aws"])
def test_a_node_is_the_ec2_instance_collected_by_planb_collect_aws(
        aws_first: bool, cli_env: str, aws_env: str, kube: Any, tmp_path: Path) -> None:
    from tests.collectors.aws_helpers import ACCOUNT, network, run_instances

    ids = run_instances(network("us-east-1"), 6, name="payments-node")
    app, url = kube
    cilium_cluster(app, ids)
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"prod-payments": (EKS_ARN, url)})
    if aws_first:
        _collect_aws()
    assert collect(kubeconfig).exit_code == 0
    if not aws_first:
        _collect_aws()
    assert collect(kubeconfig).exit_code == 0      # and again: still one asset per machine

    db = stored(cli_env)
    machines = {a.cloud_instance_id: a for a in db["assets"].values() if a.cloud_instance_id in ids}
    assert set(machines) == set(ids)
    assert sum(1 for a in db["assets"].values() if a.cloud_instance_id in ids) == 6
    assert not any(k in db["assets"] for k in NODES)             # no second asset under the node key
    first = machines[ids[0]]
    assert first.natural_key == f"aws:ec2:{ACCOUNT}:us-east-1:{ids[0]}"
    assert (first.kind, first.source, first.name) == ("vm", "aws", "payments-node")
    assert first.attributes["k8s_node"] == node_names()[0] and first.attributes["node_pool"] == "general"
    assert first.os_name == "Amazon Linux 2023.5.20240722"       # the kubelet's view of the OS wins the cloud's
    assert db["installed"][(first.natural_key, "Isovalent", "Cilium")][0] == "1.15.6"
    assert (key("pod", "kube-system/cilium-0x0k"), first.natural_key, "runs-on", "hard") in db["edges"]
    status = statuses(impact("--vendor", "Isovalent", "--version", ">=1.15.6"))
    assert status[first.natural_key] == "down" and status[key("deployment", "payments/checkout")] == "down"


# ---------------------------------------------------------------- options, config, errors

def test_contexts_name_clusters_and_cluster_name_overrides(cli_env: str, kube: Any, tmp_path: Path) -> None:
    app, url = kube
    cilium_cluster(app)
    second = KubeStandIn()
    second.add("Node", *cilium_nodes_only())
    url2, server2 = serve(second)
    try:
        kubeconfig = write_kubeconfig(tmp_path / "kc", {"a": ("kubernetes", url), "b": ("edge-aks", url2)})
        result = collect(kubeconfig, "--context", "a", "--context", "b")
        assert result.exit_code == 0, result.output + result.stderr
        assert "kubernetes:kubernetes" in result.output and "kubernetes:edge-aks" in result.output
        result = collect(kubeconfig, "--context", "b", "--cluster-name", "edge")
        assert result.exit_code == 0 and "kubernetes:edge" in result.output
        assert "k8s:edge:node:ip-10-0-1-1.ec2.internal" in stored(cli_env)["assets"]
    finally:
        server2.shutdown()


def cilium_nodes_only() -> list[dict[str, Any]]:
    from tests.collectors.k8s_standin import node
    return [node(n) for n in node_names()[:1]]


@pytest.mark.parametrize(("args", "message"), [
    (["--context", "nope"], "no context 'nope' in the kubeconfig (contexts: prod-payments)"),
    (["--cluster-name", "bad name"], "--cluster-name 'bad name': use letters"),
])
def test_bad_options_are_one_line_errors(cli_env: str, cluster: Any, args: list[str], message: str) -> None:
    _app, kubeconfig = cluster
    result = collect(kubeconfig, *args)
    assert result.exit_code != 0 and message in result.output + result.stderr
    assert stored(cli_env)["runs"] == []


def test_in_a_pod_the_cluster_must_be_named(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.100.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    result = CliRunner().invoke(main, ["collect", "kubernetes"])
    assert result.exit_code != 0 and "--cluster-name" in result.output + result.stderr


def test_collect_all_reads_the_configured_contexts(cli_env: str, cluster: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _app, kubeconfig = cluster
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.setenv("PLANB_COLLECT_KUBERNETES_CONTEXTS", "prod-payments")
    monkeypatch.setenv("PLANB_COLLECT_HOST", "false")
    result = CliRunner().invoke(main, ["collect", "all"])
    assert result.exit_code == 0, result.output + result.stderr
    assert stored(cli_env)["runs"][-1].collector == "kubernetes"
    assert NODES[0] in stored(cli_env)["assets"]


def test_collect_all_fails_only_the_scope_of_a_context_the_kubeconfig_lacks(
        cli_env: str, cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _app, kubeconfig = cluster
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.setenv("PLANB_COLLECT_KUBERNETES_CONTEXTS", "prod-payments,retired-cluster")
    monkeypatch.setenv("PLANB_COLLECT_HOST", "false")
    result = CliRunner().invoke(main, ["collect", "all"])
    assert result.exit_code == 3, result.output + result.stderr
    assert "kubernetes:retired-cluster" in result.output and "no context 'retired-cluster'" in result.output
    assert stored(cli_env)["runs"][-1].status == "partial"


def test_bad_contexts_setting_names_the_variable(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANB_COLLECT_KUBERNETES_CLUSTER_NAME", "no spaces allowed")
    result = CliRunner().invoke(main, ["collect", "all"])
    assert result.exit_code == 1
    assert "PLANB_COLLECT_KUBERNETES_CLUSTER_NAME: 'no spaces allowed' is not a cluster name" in \
        result.output + result.stderr
