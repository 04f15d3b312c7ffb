"""deploy/kubernetes: the kustomize base renders with the real `kubectl kustomize`, and what it
renders holds: known PLANB_* settings only, images, probes, security context, Forbid CronJobs —
and checkov finds nothing (its two deliberate skips are documented in .checkov.yaml)."""
from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any, Iterator

import pytest
import yaml

from inventory import config
from tests.deploy.helpers import ROOT

BASE = ROOT / "deploy" / "kubernetes"
SECRET_KEYS = {"PLANB_DATABASE_URL": "database-url", "PLANB_SECRET_KEY": "secret-key",
               "PLANB_TOKEN_HMAC_KEY": "token-hmac-key"}
COLLECTOR_KEYS = {"aws": "PLANB_COLLECT_AWS_", "azure": "PLANB_COLLECT_AZURE_"}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed (Debian: apt-get install kubectl, or the Kubernetes "
                    "release binary): the base must render with the real kustomize", pytrace=False)
    return found


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), "kustomize", str(BASE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(rendered: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered if doc["kind"] == kind]


def one(rendered: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in of_kind(rendered, kind) if d["metadata"]["name"] == name]
    return doc


def pod_specs(rendered: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in rendered:
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], spec["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]


def test_renders_every_kind_the_issue_asks_for(rendered):
    kinds = {doc["kind"] for doc in rendered}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "CronJob",
            "ConfigMap", "NetworkPolicy", "ServiceAccount", "Namespace"} <= kinds
    assert "Secret" not in kinds   # referred to, never kept in git
    assert {doc["metadata"].get("namespace") for doc in rendered if doc["kind"] != "Namespace"} == {"planb"}


def test_every_planb_variable_is_a_setting_and_literal_values_parse(rendered):
    seen: set[str] = set()

    def check(name: str, value: Any, where: str) -> None:
        assert name.startswith(config.ENV_PREFIX), (where, name)
        setting = name[len(config.ENV_PREFIX):]
        assert setting in config.SETTINGS, f"{where}: {name} is not a Plan B setting"
        seen.add(name)
        if value is not None and str(value).strip():
            config.parse(setting, str(value))

    configmaps = {doc["metadata"]["name"]: doc["data"] for doc in of_kind(rendered, "ConfigMap")}
    for name, data in configmaps.items():
        for key, value in data.items():
            check(key, value, f"ConfigMap {name}")
    for workload, spec in pod_specs(rendered):
        for container in spec["containers"]:
            for item in container.get("env", []):
                source = item.get("valueFrom", {})
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["key"] == item["name"] and ref["key"] in configmaps[ref["name"]]
                check(item["name"], item.get("value"), workload)
    assert {"PLANB_DATABASE_URL", "PLANB_SECRET_KEY", "PLANB_HOST", "PLANB_PORT"} <= seen


def test_containers_images_resources_and_security_context(rendered):
    specs = dict(pod_specs(rendered))
    assert set(specs) == {"planb-web", "planb-migrate", "planb-collect-aws", "planb-collect-azure"}
    for workload, spec in specs.items():
        assert spec["automountServiceAccountToken"] is False
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001   # the Dockerfile's USER
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            assert container["image"] == "planb:0.1.0", workload
            assert container["envFrom"] == [{"configMapRef": {"name": "planb-config"}}]
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # A read-only root: /tmp and the instance folder are the only writable places.
            assert "emptyDir" in volumes[mounts["/tmp"]]
            instance = one(rendered, "ConfigMap", "planb-config")["data"]["PLANB_INSTANCE_PATH"]
            assert "emptyDir" in volumes[mounts[instance]]
            refs = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"]
                    if "secretKeyRef" in item.get("valueFrom", {})}
            assert refs == {name: {"name": "planb-secrets", "key": key} for name, key in SECRET_KEYS.items()}


def test_web_probes_ports_and_its_companions(rendered):
    web = one(rendered, "Deployment", "planb-web")
    settings = one(rendered, "ConfigMap", "planb-config")["data"]
    [container] = web["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["serve"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": int(settings["PLANB_PORT"])}]
    assert settings["PLANB_HOST"] == "0.0.0.0"
    assert int(settings["PLANB_WORKERS"]) > 1
    pod_labels = web["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return selector.items() <= pod_labels.items()

    assert selects(web["spec"]["selector"]["matchLabels"])
    service = one(rendered, "Service", "planb-web")
    assert selects(service["spec"]["selector"]) and service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one(rendered, "PodDisruptionBudget", "planb-web")
    assert selects(pdb["spec"]["selector"]["matchLabels"]) and pdb["spec"]["minAvailable"] >= 1
    hpa = one(rendered, "HorizontalPodAutoscaler", "planb-web")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "planb-web"}
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]   # one pod may always be drained
    policies = {p["metadata"]["name"]: p for p in of_kind(rendered, "NetworkPolicy")}
    assert selects(policies["planb-web"]["spec"]["podSelector"]["matchLabels"])
    assert policies["planb-web"]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]


def test_migrations_job(rendered):
    job = one(rendered, "Job", "planb-migrate")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_one_forbid_cronjob_per_collector_each_collecting_only_its_source(rendered):
    cronjobs = {doc["metadata"]["name"]: doc for doc in of_kind(rendered, "CronJob")}
    assert set(cronjobs) == {f"planb-collect-{source}" for source in COLLECTOR_KEYS}
    for source, prefix in COLLECTOR_KEYS.items():
        cron = cronjobs[f"planb-collect-{source}"]
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        assert len(cron["spec"]["schedule"].split()) == 5
        [container] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["collect", "all"]
        env = {item["name"]: item for item in container["env"]}
        assert env["PLANB_COLLECT_HOST"]["value"] == "false"
        collect_keys = {name for name in env if name.startswith("PLANB_COLLECT_") and name != "PLANB_COLLECT_HOST"}
        assert collect_keys and all(name.startswith(prefix) for name in collect_keys), (source, collect_keys)
    policies = {p["metadata"]["name"]: p for p in of_kind(rendered, "NetworkPolicy")}
    expression = policies["planb-jobs"]["spec"]["podSelector"]["matchExpressions"][0]
    assert set(expression["values"]) == {"migrate", "collector"}


@pytest.mark.slow
def test_checkov_finds_nothing():
    result = subprocess.run(["bash", str(BASE / "checkov.sh"), "--output", "json"], capture_output=True,
                            text=True, timeout=900)
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, result.stdout[-4000:]
    assert summary["passed"] > 100 and summary["resource_count"] >= 13
    assert result.returncode == 0
