"""A loopback stand-in of the Kubernetes API: list endpoints serving the documented JSON.

Serves ``NodeList``, ``PodList``, ``ReplicaSetList``, ``DeploymentList``,
``DaemonSetList``, ``StatefulSetList``, ``PodDisruptionBudgetList`` and
``ServiceList`` at their real paths (``/api/v1/nodes``, ``/apis/apps/v1/deployments``,
``/apis/policy/v1/poddisruptionbudgets``…), the way an API server answers a list:
items without ``kind``/``apiVersion``, ``metadata.resourceVersion``, and with ``limit``
an opaque ``metadata.continue`` token plus ``remainingItemCount``.  Errors are
``Status`` objects: 403 Forbidden (as RBAC words it) and 410 Expired for a continue
token the test declares stale (the API server's own message).  ``fieldSelector=
status.phase=Running`` is honoured for pods.  Requests need the kubeconfig's bearer
token (401 otherwise).

Shapes follow the Kubernetes API reference (k8s.io/api core/v1, apps/v1, policy/v1)
and the kubernetes-client/python models (V1NodeList, V1PodList, …).
"""
from __future__ import annotations

import base64
import json
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
import yaml

TOKEN = "standin-bearer-token"

# path -> (kind, group/version, RBAC resource, RBAC group)
ENDPOINTS: dict[str, tuple[str, str, str, str]] = {
    "/api/v1/nodes": ("Node", "v1", "nodes", ""),
    "/api/v1/pods": ("Pod", "v1", "pods", ""),
    "/api/v1/services": ("Service", "v1", "services", ""),
    "/apis/apps/v1/replicasets": ("ReplicaSet", "apps/v1", "replicasets", "apps"),
    "/apis/apps/v1/deployments": ("Deployment", "apps/v1", "deployments", "apps"),
    "/apis/apps/v1/statefulsets": ("StatefulSet", "apps/v1", "statefulsets", "apps"),
    "/apis/apps/v1/daemonsets": ("DaemonSet", "apps/v1", "daemonsets", "apps"),
    "/apis/policy/v1/poddisruptionbudgets": ("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets", "policy"),
}
EXPIRED_MESSAGE = ("The provided continue parameter is too old to display a consistent list result. You can "
                   "start a new list without the continue parameter, or use the continue token in this "
                   "response to retrieve the remainder of the results. Continuing with the provided token "
                   "results in an inconsistent list - objects that were created, modified, or deleted between "
                   "the time the first chunk was returned and now may show up in the list.")


@dataclass
class KubeStandIn:
    """The objects served, by kind, and what the test wants to go wrong."""

    objects: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    forbidden: set[str] = field(default_factory=set)           # RBAC resources answered with 403
    expire_continue: Counter[str] = field(default_factory=Counter)  # resource -> continue tokens to refuse
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    resource_version: int = 41_000

    def add(self, kind: str, *objects: dict[str, Any]) -> None:
        self.objects[kind].extend(objects)

    def remove(self, kind: str, namespace: str | None, name: str) -> None:
        self.objects[kind] = [o for o in self.objects[kind]
                              if not (o["metadata"]["name"] == name
                                      and o["metadata"].get("namespace") == namespace)]

    def lists_of(self, resource: str) -> list[dict[str, str]]:
        path = next(p for p, e in ENDPOINTS.items() if e[2] == resource)
        return [q for p, q in self.requests if p == path]

    # -- WSGI ---------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        self.requests.append((path, query))
        if environ.get("HTTP_AUTHORIZATION") != f"Bearer {TOKEN}":
            return self._status(start_response, 401, "Unauthorized", "Unauthorized")
        if environ.get("REQUEST_METHOD") != "GET" or path not in ENDPOINTS:
            return self._status(start_response, 404, "NotFound", "the server could not find the requested resource")
        kind, api_version, resource, group = ENDPOINTS[path]
        if resource in self.forbidden:
            where = f'in API group "{group}" ' if group else 'in API group "" '
            return self._status(
                start_response, 403, "Forbidden",
                f'{resource}{"." + group if group else ""} is forbidden: User '
                f'"system:serviceaccount:planb:planb-collector" cannot list resource "{resource}" '
                f"{where}at the cluster scope", details={"group": group, "kind": resource})
        items = list(self.objects.get(kind, []))
        if kind == "Pod" and query.get("fieldSelector") == "status.phase=Running":
            items = [p for p in items if (p.get("status") or {}).get("phase") == "Running"]
        start = 0
        token = query.get("continue")
        if token:
            if self.expire_continue[resource] > 0:
                self.expire_continue[resource] -= 1
                self.resource_version += 1
                return self._status(start_response, 410, "Expired", EXPIRED_MESSAGE,
                                    metadata={"continue": self._token(resource, 0)})
            start = json.loads(base64.urlsafe_b64decode(token))["start"]
        limit = int(query["limit"]) if query.get("limit") else None
        page = items[start:start + limit] if limit else items[start:]
        metadata: dict[str, Any] = {"resourceVersion": str(self.resource_version)}
        end = start + len(page)
        if limit and end < len(items):
            metadata["continue"] = self._token(resource, end)
            metadata["remainingItemCount"] = len(items) - end
        body = {"kind": f"{kind}List", "apiVersion": api_version, "metadata": metadata, "items": page}
        return self._json(start_response, 200, body)

    def _token(self, resource: str, start: int) -> str:
        raw = json.dumps({"v": "meta.k8s.io/v1", "rv": self.resource_version, "start": start,
                          "resource": resource})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    def _status(self, start_response: Any, code: int, reason: str, message: str, *,
                details: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> list[bytes]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": metadata or {},
                                "status": "Failure", "message": message, "reason": reason, "code": code}
        if details:
            body["details"] = details
        return self._json(start_response, code, body)

    @staticmethod
    def _json(start_response: Any, code: int, body: dict[str, Any]) -> list[bytes]:
        data = json.dumps(body).encode()
        phrases = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 410: "Gone"}
        start_response(f"{code} {phrases.get(code, 'Error')}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


def serve(app: KubeStandIn) -> tuple[str, Any]:
    """Serve ``app`` on a loopback port in a thread; returns (base URL, server to shut down)."""
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # no access log lines in test output
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


@pytest.fixture
def kube() -> Iterator[tuple[KubeStandIn, str]]:
    """An empty stand-in on a loopback port: (the stand-in, its base URL)."""
    app = KubeStandIn()
    url, server = serve(app)
    try:
        yield app, url
    finally:
        server.shutdown()


def write_kubeconfig(path: Any, contexts: dict[str, tuple[str, str]], current: str | None = None) -> str:
    """A kubeconfig whose ``contexts`` map context name -> (cluster name, server URL), each with
    the stand-in's bearer token; returns its path."""
    clusters = {cluster: server for cluster, server in contexts.values()}
    document = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": server}} for name, server in clusters.items()],
        "users": [{"name": "planb-reader", "user": {"token": TOKEN}}],
        "contexts": [{"name": ctx, "context": {"cluster": cluster, "user": "planb-reader"}}
                     for ctx, (cluster, _server) in contexts.items()],
        "current-context": current or next(iter(contexts)),
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return str(path)


# -- objects, in the API's documented shapes ------------------------------------------------------

def _uid(*parts: str) -> str:
    import uuid
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def node(name: str, *, provider_id: str | None = None, zone: str = "us-east-1a", os: str = "linux",
         os_image: str = "Amazon Linux 2023.5.20240722", kernel: str = "6.1.97-104.177.amzn2023.x86_64",
         kubelet: str = "v1.29.3-eks-ae9a62a", runtime: str = "containerd://1.7.11",
         system_uuid: str | None = None, pool: str = "general", labels: dict[str, str] | None = None
         ) -> dict[str, Any]:
    region = zone[:-1]
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": os, "kubernetes.io/arch": "amd64",
                  "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": region,
                  "node.kubernetes.io/instance-type": "m6i.xlarge", "eks.amazonaws.com/nodegroup": pool,
                  **(labels or {})}
    spec: dict[str, Any] = {"podCIDR": "10.0.0.0/24"}
    if provider_id:
        spec["providerID"] = provider_id
    return {
        "metadata": {"name": name, "uid": _uid("node", name), "resourceVersion": "4096",
                     "creationTimestamp": "2026-01-05T08:00:00Z", "labels": all_labels,
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": spec,
        "status": {
            "capacity": {"cpu": "4", "memory": "16073484Ki", "pods": "58"},
            "allocatable": {"cpu": "3920m", "memory": "15056140Ki", "pods": "58"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": "2026-01-05T09:00:00Z",
                            "lastTransitionTime": "2026-01-05T08:01:00Z"}],
            "addresses": [{"type": "InternalIP", "address": "10.0.1.10"},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"machineID": "ec2a3b2d1c0e4f5a6b7c8d9e0f1a2b3c",
                         "systemUUID": system_uuid or "ec2a3b2d-1c0e-4f5a-6b7c-8d9e0f1a2b3c",
                         "bootID": "5f1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d", "kernelVersion": kernel,
                         "osImage": os_image, "containerRuntimeVersion": runtime, "kubeletVersion": kubelet,
                         "kubeProxyVersion": kubelet, "operatingSystem": os, "architecture": "amd64"},
        },
    }


def _owner(kind: str, name: str) -> dict[str, Any]:
    api_version = "batch/v1" if kind in ("Job", "CronJob") else "apps/v1"
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": _uid(kind, name),
            "controller": True, "blockOwnerDeletion": True}


def pod(namespace: str, name: str, node_name: str | None, images: list[str], *,
        owner: tuple[str, str] | None = None, labels: dict[str, str] | None = None, phase: str = "Running",
        host_network: bool = False, priority_class: str | None = None, privileged: bool = False,
        digests: list[str | None] | None = None, sidecar: str | None = None) -> dict[str, Any]:
    containers = []
    for i, image in enumerate(images):
        container: dict[str, Any] = {"name": f"c{i}" if i else "main", "image": image,
                                     "imagePullPolicy": "IfNotPresent", "resources": {}}
        if privileged:
            container["securityContext"] = {"privileged": True}
        containers.append(container)
    spec: dict[str, Any] = {"containers": containers, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                            "serviceAccountName": "default", "schedulerName": "default-scheduler"}
    if sidecar:
        spec["initContainers"] = [{"name": "mesh-proxy", "image": sidecar, "restartPolicy": "Always"},
                                  {"name": "setup", "image": "docker.io/library/busybox:1.36"}]
    if node_name:
        spec["nodeName"] = node_name
    if host_network:
        spec["hostNetwork"] = True
    if priority_class:
        spec["priorityClassName"] = priority_class
    statuses = []
    for i, container in enumerate(containers):
        digest = (digests or [None] * len(containers))[i] if digests else None
        reference = container["image"].split("@")[0]
        repo = reference.rsplit(":", 1)[0] if ":" in reference.rsplit("/", 1)[-1] else reference
        statuses.append({"name": container["name"], "image": container["image"],
                         "imageID": f"{repo}@{digest}" if digest else "", "ready": True, "restartCount": 0,
                         "started": True, "state": {"running": {"startedAt": "2026-01-05T08:02:00Z"}},
                         "containerID": f"containerd://{_uid(name, container['name']).replace('-', '')}"})
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": _uid("pod", namespace, name),
                                "resourceVersion": "5120", "creationTimestamp": "2026-01-05T08:02:00Z",
                                "labels": labels or {}}
    if owner:
        metadata["ownerReferences"] = [_owner(*owner)]
    status: dict[str, Any] = {"phase": phase, "qosClass": "BestEffort", "podIP": "10.0.1.23",
                              "startTime": "2026-01-05T08:02:00Z"}
    if phase == "Running":
        status.update(hostIP="10.0.1.10", containerStatuses=statuses,
                      conditions=[{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-01-05T08:02:05Z"}])
    return {"metadata": metadata, "spec": spec, "status": status}


def _template(labels: dict[str, str], image: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "main", "image": image}], **spec}}


def deployment(namespace: str, name: str, replicas: int | None, labels: dict[str, str], image: str, *,
               strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": _template(labels, image),
                            "strategy": strategy or {"type": "RollingUpdate",
                                                     "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": name, "namespace": namespace, "uid": _uid("Deployment", name),
                         "generation": 3, "labels": {"app": labels.get("app", name)},
                         "annotations": {"deployment.kubernetes.io/revision": "3"}},
            "spec": spec,
            "status": {"observedGeneration": 3, "replicas": replicas or 1, "updatedReplicas": replicas or 1,
                       "readyReplicas": replicas or 1, "availableReplicas": replicas or 1}}


def replica_set(namespace: str, name: str, deployment_name: str, labels: dict[str, str], replicas: int
                ) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": _uid("ReplicaSet", name),
                         "labels": {**labels, "pod-template-hash": name.rsplit("-", 1)[-1]},
                         "ownerReferences": [_owner("Deployment", deployment_name)]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}},
            "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}}


def stateful_set(namespace: str, name: str, replicas: int, labels: dict[str, str], image: str,
                 update: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": _uid("StatefulSet", name)},
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": labels},
                     "template": _template(labels, image), "podManagementPolicy": "OrderedReady",
                     "updateStrategy": update or {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}},
            "status": {"replicas": replicas, "readyReplicas": replicas, "currentReplicas": replicas}}


def daemon_set(namespace: str, name: str, labels: dict[str, str], image: str, desired: int, **spec: Any
               ) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "uid": _uid("DaemonSet", name),
                         "labels": {"k8s-app": name}},
            "spec": {"selector": {"matchLabels": labels}, "template": _template(labels, image, **spec),
                     "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}},
            "status": {"currentNumberScheduled": desired, "desiredNumberScheduled": desired,
                       "numberMisscheduled": 0, "numberReady": desired, "observedGeneration": 2}}


def pdb(namespace: str, name: str, selector: dict[str, Any], *, min_available: Any = None,
        max_unavailable: Any = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {"metadata": {"name": name, "namespace": namespace, "uid": _uid("PodDisruptionBudget", name),
                         "generation": 1},
            "spec": spec,
            "status": {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 3,
                       "desiredHealthy": 2, "expectedPods": 3}}


def service(namespace: str, name: str, selector: dict[str, str] | None, *, annotations: dict[str, str] | None = None,
            type_: str = "ClusterIP") -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "clusterIP": "172.20.10.10", "clusterIPs": ["172.20.10.10"],
                            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                            "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": {"name": name, "namespace": namespace, "uid": _uid("Service", namespace, name),
                         "labels": {"app": name}, "annotations": annotations or {}},
            "spec": spec, "status": {"loadBalancer": {}}}


# -- the Cilium rollout cluster (the "Done when") -------------------------------------------

CILIUM_NEW = "quay.io/cilium/cilium:v1.15.6"
CILIUM_OLD = "quay.io/cilium/cilium:v1.15.5"
DIGEST_NEW = "sha256:" + "6" * 64
DIGEST_OLD = "sha256:" + "5" * 64


def node_names(count: int = 6) -> list[str]:
    return [f"ip-10-0-1-{i}.ec2.internal" for i in range(1, count + 1)]


def cilium_cluster(app: KubeStandIn, instance_ids: list[str] | None = None, *, zone: str = "us-east-1a") -> None:
    """Six nodes; Cilium v1.15.6 on the first two, v1.15.5 on the rest (a half-finished rollout);
    kube-proxy and a Datadog agent everywhere; three Deployments and a StatefulSet:

    * payments/checkout: 4 replicas, 2 on the new-Cilium nodes, PDB minAvailable 3 → down;
    * payments/fraud: 3 replicas, 1 on a new-Cilium node, PDB minAvailable 2 → degraded;
    * web/catalog: 2 replicas on old-Cilium nodes, no PDB → untouched;
    * data/ledger: a StatefulSet of 3 on old-Cilium nodes, PDB maxUnavailable 1.
    Plus a pending pod, a finished Job pod, and Services for checkout and kube-dns."""
    names = node_names()
    ids = instance_ids or [f"i-0{i}{'a' * 15}" for i in range(1, 7)]
    app.add("Node", *[node(n, provider_id=f"aws:///{zone}/{iid}") for n, iid in zip(names, ids)])
    cilium_labels = {"k8s-app": "cilium"}
    app.add("DaemonSet", daemon_set("kube-system", "cilium", cilium_labels, CILIUM_NEW, 6, hostNetwork=True,
                                    priorityClassName="system-node-critical"),
            daemon_set("kube-system", "kube-proxy", {"k8s-app": "kube-proxy"},
                       "registry.k8s.io/kube-proxy:v1.29.3", 6, hostNetwork=True),
            daemon_set("monitoring", "datadog-agent", {"app": "datadog-agent"}, "gcr.io/datadoghq/agent:7.55.2", 6))
    for i, n in enumerate(names):
        new = i < 2
        app.add("Pod", pod("kube-system", f"cilium-{i}x{i}k", n, [CILIUM_NEW if new else CILIUM_OLD],
                           owner=("DaemonSet", "cilium"), labels={**cilium_labels, "controller-revision-hash": "7c9"},
                           host_network=True, priority_class="system-node-critical",
                           digests=[DIGEST_NEW if new else DIGEST_OLD]),
                pod("kube-system", f"kube-proxy-{i}p{i}q", n, ["registry.k8s.io/kube-proxy:v1.29.3"],
                    owner=("DaemonSet", "kube-proxy"), labels={"k8s-app": "kube-proxy"}, host_network=True,
                    privileged=True),
                pod("monitoring", f"datadog-agent-{i}d{i}g", n, ["gcr.io/datadoghq/agent:7.55.2"],
                    owner=("DaemonSet", "datadog-agent"), labels={"app": "datadog-agent"}))

    def workload(namespace: str, name: str, replicas: int, on: list[int], image: str) -> None:
        labels = {"app": name}
        rs = f"{name}-5d9c7b8f4"
        app.add("Deployment", deployment(namespace, name, replicas, labels, image))
        app.add("ReplicaSet", replica_set(namespace, rs, name, labels, replicas),
                replica_set(namespace, f"{name}-6f7d8e9a1", name, labels, 0))   # an old revision
        for j, n in enumerate(on):
            app.add("Pod", pod(namespace, f"{rs}-{name[:2]}{j}z", names[n], [image], owner=("ReplicaSet", rs),
                               labels={**labels, "pod-template-hash": "5d9c7b8f4"},
                               sidecar="docker.io/istio/proxyv2:1.22.1" if name == "checkout" else None))

    workload("payments", "checkout", 4, [0, 1, 2, 3], "123456789012.dkr.ecr.us-east-1.amazonaws.com/checkout:2.4.1")
    workload("payments", "fraud", 3, [0, 2, 4], "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud:1.9.0")
    workload("web", "catalog", 2, [4, 5], "123456789012.dkr.ecr.us-east-1.amazonaws.com/catalog:latest")
    app.add("PodDisruptionBudget",
            pdb("payments", "checkout", {"matchLabels": {"app": "checkout"}}, min_available=3),
            pdb("payments", "fraud", {"matchExpressions": [{"key": "app", "operator": "In",
                                                            "values": ["fraud"]}]}, min_available=2),
            pdb("data", "ledger", {"matchLabels": {"app": "ledger"}}, max_unavailable=1))
    app.add("StatefulSet", stateful_set("data", "ledger", 3, {"app": "ledger"}, "docker.io/library/postgres:16.3"))
    for j, n in enumerate([2, 3, 4]):
        app.add("Pod", pod("data", f"ledger-{j}", names[n], ["docker.io/library/postgres:16.3"],
                           owner=("StatefulSet", "ledger"),
                           labels={"app": "ledger", "statefulset.kubernetes.io/pod-name": f"ledger-{j}"}))
    app.add("Pod", pod("web", "catalog-5d9c7b8f4-pending", None, ["123456789012.dkr.ecr.us-east-1.amazonaws.com/catalog:latest"],
                       owner=("ReplicaSet", "catalog-5d9c7b8f4"), phase="Pending"),
            pod("batch", "nightly-report-28891234-x7k2p", names[5], ["docker.io/library/python:3.12"],
                owner=("Job", "nightly-report-28891234"), phase="Succeeded"))
    app.add("Service", service("payments", "checkout", {"app": "checkout"}, type_="LoadBalancer"),
            service("payments", "fraud", {"app": "fraud"},
                    annotations={"planb.io/business-service": "service:payments"}),
            service("kube-system", "kube-dns", {"k8s-app": "kube-dns"}),
            service("default", "kubernetes", None))
