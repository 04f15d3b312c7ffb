"""Kubernetes collector benchmark: ``planb collect kubernetes`` on a 200-node, 5,000-pod cluster.

    python -m benchmarks.bench_kubernetes                      # 200 nodes, 5,000 pods, SQLite
    python -m benchmarks.bench_kubernetes --nodes 50 --pods 1000 --url postgresql+psycopg://…

The cluster is served by the tests' loopback stand-in of the Kubernetes API
(``tests/collectors/k8s_standin.py``: the documented list JSON, paged with
limit/continue) in this process; the collector runs as it does in production,
``python -m inventory.cli collect kubernetes --kubeconfig …`` in a child process,
so its CPU time is its own.  Phases:

* **cold** — an empty inventory;
* **warm, unchanged** — the same cluster again (must create, update and retire nothing);
* **rollout** — every application pod replaced (new names, new image tag): the churn a
  release causes when pods are modelled one asset each;

and, measured in the same run, the baselines:

* **list only** — the same eight paged listings through the client, bodies read as JSON
  (what the collector does), after one untimed pass that imports the client's API
  modules — the floor for reading the cluster;
* **list pods as models** — the pod listing deserialised into the client's ``V1Pod``
  objects (its default), the cost the collector avoids by reading JSON.

Prints seconds, rows written per second, the child's CPU time and the machine's load
average (the machine is shared: figures are noisy floors).
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from inventory import migrate
from inventory.db import make_engine

APP_IMAGES = ["123456789012.dkr.ecr.us-east-1.amazonaws.com/app-{n}:{tag}"]
REPLICAS = 10
DAEMONSETS = [("kube-system", "cilium", "quay.io/cilium/cilium:v1.15.6", True),
              ("kube-system", "kube-proxy", "registry.k8s.io/kube-proxy:v1.29.3", True),
              ("monitoring", "datadog-agent", "gcr.io/datadoghq/agent:7.55.2", False)]


def build_cluster(app: Any, nodes: int, pods: int, *, generation: int = 1, seed: int = 7) -> dict[str, int]:
    """Fill the stand-in: ``nodes`` nodes, the three DaemonSets on every node, and Deployments of
    ``REPLICAS`` pods (with their ReplicaSets, two old revisions each, a budget for every other one
    and a Service each) until ``pods`` pods run in all."""
    from tests.collectors import k8s_standin as k

    rng = random.Random(seed)
    app.objects.clear()
    names = [f"ip-10-{i // 250}-{i % 250}-{i % 7}.ec2.internal" for i in range(nodes)]
    app.add("Node", *[k.node(n, provider_id=f"aws:///us-east-1{'abc'[i % 3]}/i-{i:017x}",
                             zone=f"us-east-1{'abc'[i % 3]}", pool=f"pool-{i % 4}") for i, n in enumerate(names)])
    for namespace, name, image, node_level in DAEMONSETS:
        labels = {"k8s-app": name}
        app.add("DaemonSet", k.daemon_set(namespace, name, labels, image, nodes, hostNetwork=node_level))
        app.add("Pod", *[k.pod(namespace, f"{name}-{i:05x}", n, [image], owner=("DaemonSet", name), labels=labels,
                                host_network=node_level, digests=["sha256:" + f"{i:064x}"])
                         for i, n in enumerate(names)])
    remaining = max(pods - nodes * len(DAEMONSETS), 0)
    deployments = -(-remaining // REPLICAS)
    for d in range(deployments):
        namespace, name = f"team-{d % 20}", f"app-{d}"
        labels = {"app": name}
        image = APP_IMAGES[0].format(n=d, tag=f"{generation}.{d % 9}.0")
        rs = f"{name}-{generation:04x}{d:05x}"
        replicas = min(REPLICAS, remaining - d * REPLICAS)
        app.add("Deployment", k.deployment(namespace, name, replicas, labels, image))
        app.add("ReplicaSet", k.replica_set(namespace, rs, name, labels, replicas),
                *[k.replica_set(namespace, f"{name}-old{o}", name, labels, 0) for o in range(2)])
        if d % 2 == 0:
            app.add("PodDisruptionBudget", k.pdb(namespace, name, {"matchLabels": labels}, max_unavailable="20%"))
        app.add("Service", k.service(namespace, name, labels))
        app.add("Pod", *[k.pod(namespace, f"{rs}-{r:05x}", rng.choice(names), [image], owner=("ReplicaSet", rs),
                               labels={**labels, "pod-template-hash": rs.rsplit("-", 1)[1]})
                         for r in range(replicas)])
    return {kind: len(objs) for kind, objs in app.objects.items()}


def run_cli(kubeconfig: str, url: str, workdir: str) -> tuple[float, float, str]:
    """One ``planb collect kubernetes`` in a child process: (wall seconds, child CPU seconds, output)."""
    env = {**os.environ, "PLANB_DATABASE_URL": url, "PLANB_INSTANCE_PATH": workdir, "PLANB_SECRET_KEY": "bench",
           "PLANB_LOG_LEVEL": "WARNING"}
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        env.pop(name, None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "inventory.cli", "collect", "--quiet", "kubernetes",
                           "--kubeconfig", kubeconfig], env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"planb collect kubernetes failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            def one(sql: str) -> int:
                return int(conn.execute(sa.text(sql)).scalar() or 0)
            return {
                "assets": one("SELECT count(*) FROM assets WHERE source = 'kubernetes'"),
                "live pods": one("SELECT count(*) FROM assets WHERE kind = 'container' AND retired_at IS NULL"),
                "retired pods": one("SELECT count(*) FROM assets WHERE kind = 'container' "
                                    "AND retired_at IS NOT NULL"),
                "installations": one("SELECT count(*) FROM installations WHERE source = 'kubernetes'"),
                "unattributed": one("SELECT count(*) FROM unattributed_software WHERE source = 'kubernetes'"),
                "dependencies": one("SELECT count(*) FROM dependencies WHERE source = 'kubernetes'"),
            }
    finally:
        engine.dispose()


def last_run(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT status, created, updated, unchanged, marked_stale FROM collection_runs "
                                       "ORDER BY id DESC LIMIT 1")).one()
            return dict(row._mapping)
    finally:
        engine.dispose()


def list_only(kubeconfig: str, page_size: int) -> tuple[float, int]:
    from collectors.kubernetes import RESOURCES, kubeconfig_targets, list_items

    [target] = kubeconfig_targets(kubeconfig)
    client = target.connect()
    started = time.perf_counter()
    total = sum(len(list_items(client, r, page_size)) for r in RESOURCES)
    client.close()
    return time.perf_counter() - started, total


def list_pods_as_models(kubeconfig: str, page_size: int) -> tuple[float, int]:
    import kubernetes.client

    from collectors.kubernetes import kubeconfig_targets

    [target] = kubeconfig_targets(kubeconfig)
    client = target.connect()
    api = kubernetes.client.CoreV1Api(client)
    started = time.perf_counter()
    total, token = 0, None
    while True:
        page = api.list_pod_for_all_namespaces(limit=page_size, _continue=token,
                                               field_selector="status.phase=Running")
        total += len(page.items)
        token = page.metadata._continue if page.metadata else None
        if not token:
            break
    client.close()
    return time.perf_counter() - started, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--pods", type=int, default=5_000)
    parser.add_argument("--url", default=None, help="database URL (default: a new SQLite file)")
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args(argv)

    from tests.collectors.k8s_standin import KubeStandIn, serve, write_kubeconfig

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="planb-bench-k8s-") as workdir:
        url = args.url or f"sqlite:///{Path(workdir) / 'planb.sqlite3'}"
        migrate.upgrade(url, "head")
        app = KubeStandIn()
        objects = build_cluster(app, args.nodes, args.pods)
        server_url, server = serve(app)
        kubeconfig = write_kubeconfig(Path(workdir) / "kubeconfig", {"bench": ("bench", server_url)})
        print("cluster: " + ", ".join(f"{n} {kind}s" for kind, n in sorted(objects.items())))
        try:
            list_only(kubeconfig, args.page_size)   # imports the client's API modules (seconds) once, untimed
            floor, listed = list_only(kubeconfig, args.page_size)
            models, pods_listed = list_pods_as_models(kubeconfig, args.page_size)
            pods_json, _ = _time_pods_json(kubeconfig, args.page_size)
            rows: list[tuple[str, float, float, dict[str, Any], dict[str, int]]] = []
            for phase in ("cold", "warm, unchanged", "rollout"):
                if phase == "rollout":
                    build_cluster(app, args.nodes, args.pods, generation=2)
                wall, cpu, _out = run_cli(kubeconfig, url, workdir)
                rows.append((phase, wall, cpu, last_run(url), counts(url)))
        finally:
            server.shutdown()

    print(f"\nbaselines: list only (8 listings, {listed} objects, JSON) {floor:.2f} s; pods as the client's "
          f"models {models:.2f} s vs as JSON {pods_json:.2f} s ({pods_listed} pods, "
          f"{models / pods_json if pods_json else float('nan'):.1f}x)")
    print(f"\n{'phase':<16} {'seconds':>8} {'cpu s':>7} {'rows written/s':>15} {'created':>8} {'updated':>8} "
          f"{'unchanged':>10} {'retired':>8}  vs list-only")
    for phase, wall, cpu, run, _counts in rows:
        written = run["created"] + run["updated"] + run["marked_stale"]
        touched = written + run["unchanged"]
        print(f"{phase:<16} {wall:>8.2f} {cpu:>7.2f} {written / wall:>15,.0f} {run['created']:>8} "
              f"{run['updated']:>8} {run['unchanged']:>10} {run['marked_stale']:>8}  {wall / floor:5.1f}x"
              f"   ({touched / wall:,.0f} rows handled/s)")
    print("\nafter each phase: " + "; ".join(
        f"{phase}: " + ", ".join(f"{k} {v}" for k, v in c.items()) for phase, _w, _c, _r, c in rows))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ok = rows[1][3]["created"] == rows[1][3]["updated"] == rows[1][3]["marked_stale"] == 0
    if not ok:
        print("warm unchanged re-run wrote rows", file=sys.stderr)
    return 0 if ok else 1


def _time_pods_json(kubeconfig: str, page_size: int) -> tuple[float, int]:
    from collectors.kubernetes import RESOURCES, kubeconfig_targets, list_items

    [target] = kubeconfig_targets(kubeconfig)
    client = target.connect()
    started = time.perf_counter()
    total = len(list_items(client, next(r for r in RESOURCES if r.kind == "Pod"), page_size))
    client.close()
    return time.perf_counter() - started, total


if __name__ == "__main__":
    sys.exit(main())
