"""Versions that are not the product's: an Azure VM extension reports its *handler's* version
("1.0" for CrowdStrike's FalconSensorWindows, whatever sensor it installed).

With only Azure as a source, the July 2024 question (Falcon >= 7.11 on Windows) must name every
Windows VM carrying the Falcon extension — as "version unknown, check by hand", never a silent
0 hits — until a source that knows the sensor's version (osquery here) supplies it.
Through the real CLI, the azure-core transport serving ARM payloads, and the dashboard."""
from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from packaging.specifiers import SpecifierSet

import collectors.azure
from inventory.cli import main
from inventory.impact.scope import comparable_version, version_matches
from tests.collectors.azure_payloads import BASE_URL, SUBSCRIPTION, RecordedArm, Reply, client_for, load, \
    route, vm_list_route
from tests.conftest import create_user_and_login, make_test_app

FALCON_Q = ["impact", "--vendor", "CrowdStrike", "--version", ">=7.11", "--os", "windows"]


def _vm(template: dict[str, Any], name: str, vm_id: str, os_type: str) -> dict[str, Any]:
    vm = copy.deepcopy(template)
    vm["name"] = name
    vm["id"] = vm["id"].rsplit("/", 1)[0] + "/" + name
    vm["properties"]["vmId"] = vm_id
    vm["properties"]["osProfile"]["computerName"] = name
    vm["properties"]["storageProfile"]["osDisk"]["osType"] = os_type
    if os_type == "Linux":
        vm["properties"]["storageProfile"]["imageReference"] = {
            "publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2",
            "version": "latest", "exactVersion": "22.04.202401090"}
    return vm


def _extension(publisher: str, ext_type: str, handler: str) -> dict[str, Any]:
    return {"name": ext_type, "type": "Microsoft.Compute/virtualMachines/extensions",
            "id": f"/x/extensions/{ext_type}", "location": "eastus",
            "properties": {"publisher": publisher, "type": ext_type, "typeHandlerVersion": handler,
                           "provisioningState": "Succeeded"}}


FALCON_WIN = _extension("CrowdStrike.Falcon", "FalconSensorWindows", "1.0")
FALCON_LINUX = _extension("CrowdStrike.Falcon", "FalconSensorLinux", "1.0")
DEFENDER = _extension("Microsoft.Azure.AzureDefenderForServers", "MDE.Windows", "1.0")

# 12 VMs: 7 Windows with the Falcon extension, 2 Windows with Defender only, 3 Linux (2 with Falcon).
ESTATE = ([(f"win-falcon-{i:02d}", "Windows", [FALCON_WIN]) for i in range(1, 8)]
          + [(f"win-defender-{i:02d}", "Windows", [DEFENDER]) for i in range(1, 3)]
          + [("lnx-falcon-01", "Linux", [FALCON_LINUX]), ("lnx-falcon-02", "Linux", [FALCON_LINUX]),
             ("lnx-plain-01", "Linux", [])])


def vm_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def routes(base_url: str | None) -> dict[str, list[Reply]]:
    template = load("virtualMachines_listAll_page1.json", base_url=base_url or BASE_URL)["value"][0]
    vms = [_vm(template, name, vm_id(i), os_type) for i, (name, os_type, _ext) in enumerate(ESTATE)]
    out = {vm_list_route(): [Reply(200, {"value": vms})],
           vm_list_route(statusOnly="true"): [Reply(200, {"value": []})]}
    for name, _os, extensions in ESTATE:
        out[route(f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-web/providers/"
                  f"Microsoft.Compute/virtualMachines/{name}/extensions")] = [Reply(200, {"value": extensions})]
    return out


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_SECRET_KEY", "test-secret")
    monkeypatch.setenv("PLANB_LOG_LEVEL", "WARNING")
    monkeypatch.setattr(collectors.azure, "CLIENT_FACTORY", lambda subscription, base_url: client_for(
        RecordedArm(routes(base_url)), subscription, base_url=base_url or BASE_URL))
    runner = CliRunner()
    result = runner.invoke(main, ["collect", "--quiet", "azure", "--subscription", SUBSCRIPTION,
                                  "--resource-type", "vm"])
    assert result.exit_code == 0, result.output
    return runner


def falcon_windows() -> set[str]:
    return {name for name, os_type, ext in ESTATE if os_type == "Windows" and FALCON_WIN in ext}


def test_azure_only_estate_lists_every_windows_falcon_vm_as_version_unknown(cli: CliRunner) -> None:
    result = cli.invoke(main, [*FALCON_Q, "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)

    # Nothing can be placed in >=7.11, so nothing is hit -- but nothing is silently dropped either.
    assert data["totals"]["hits"] == 0
    assert data["totals"]["version_unknown"] == 7
    assert {u["name"] for u in data["version_unknown"]} == falcon_windows()
    assert data["page"]["version_unknown_total"] == 7
    for entry in data["version_unknown"]:
        assert entry["os_family"] == "windows" and entry["status"] is None
        [inst] = entry["installations"]
        assert (inst["product"], inst["version"], inst["source"]) == ("Falcon Sensor", None, "azure")
        assert inst["attributes"]["handler_version"] == "1.0"
        assert "handler's version (1.0)" in inst["reason"]
    assert data["confidence"]["unversioned_installations"]["count"] == 7
    assert any("check them by hand" in note for note in data["confidence"]["notes"])


def test_table_and_csv_say_check_by_hand(cli: CliRunner) -> None:
    table = cli.invoke(main, FALCON_Q)
    assert table.exit_code == 0, table.output
    assert "Version unknown — check by hand (7)" in table.output
    for name in falcon_windows():
        assert name in table.output
    assert "win-defender-01" not in table.output and "lnx-falcon-01" not in table.output

    rows = list(csv.DictReader(io.StringIO(cli.invoke(main, [*FALCON_Q, "--format", "csv"]).output)))
    assert {r["name"] for r in rows if r["status"] == "version unknown"} == falcon_windows()

    # Without a version range every Falcon VM is a seed as before (the version is not needed).
    all_falcon = json.loads(cli.invoke(main, ["impact", "--vendor", "CrowdStrike", "--format", "json"]).output)
    assert all_falcon["totals"]["seeds"] == 9 and all_falcon["totals"]["version_unknown"] == 0


def test_a_source_that_knows_the_sensor_version_takes_the_vm_off_the_list(cli: CliRunner, tmp_path: Path) -> None:
    # osquery on win-falcon-03 (its azure_instance_metadata names the VM) reports sensor 7.11.
    envelope = {"host": "win-falcon-03", "tables": {
        "system_info": [{"hostname": "win-falcon-03", "computer_name": "win-falcon-03", "uuid": "U-3"}],
        "os_version": [{"name": "Microsoft Windows Server 2022 Datacenter", "version": "10.0.20348",
                        "major": "10", "minor": "0", "platform": "windows"}],
        "programs": [{"name": "CrowdStrike Windows Sensor", "version": "7.11.18110.0",
                      "publisher": "CrowdStrike, Inc.", "identifying_number": "{F}"}],
        "azure_instance_metadata": [{"vm_id": vm_id(2), "name": "win-falcon-03"}]}}
    path = tmp_path / "win-falcon-03.json"
    path.write_text(json.dumps(envelope))
    collected = cli.invoke(main, ["collect", "--quiet", "osquery", str(path)])
    assert collected.exit_code == 0, collected.output

    data = json.loads(cli.invoke(main, [*FALCON_Q, "--format", "json"]).output)
    assert [s["name"] for s in data["seeds"]] == ["win-falcon-03"]
    assert data["seeds"][0]["matched"] == {"product": "Falcon Sensor", "version": "7.11.18110.0"}
    assert {u["name"] for u in data["version_unknown"]} == falcon_windows() - {"win-falcon-03"}

    # Azure again, reporting only the handler: the better-placed source keeps the version.
    again = cli.invoke(main, ["collect", "--quiet", "azure", "--subscription", SUBSCRIPTION, "--resource-type", "vm"])
    assert again.exit_code == 0, again.output
    data = json.loads(cli.invoke(main, [*FALCON_Q, "--format", "json"]).output)
    assert [s["name"] for s in data["seeds"]] == ["win-falcon-03"]


def test_dashboard_lists_them_under_version_unknown(cli: CliRunner, sqlite_url: str, tmp_path: Path) -> None:
    app = make_test_app(sqlite_url, tmp_path / "web", WTF_CSRF_ENABLED=False)
    client = app.test_client()
    create_user_and_login(app, client, "viewer")
    page = client.get("/impact/", query_string={"vendor": "CrowdStrike", "version": ">=7.11", "os": "windows"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Version unknown — check by hand" in html
    assert "Nothing in the inventory is hit by this scope." in html
    for name in falcon_windows():
        assert f">{name}</a>" in html
    assert "win-defender-01" not in html
    export = client.get("/impact/export.csv", query_string={"vendor": "CrowdStrike", "version": ">=7.11",
                                                             "os": "windows"})
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert {r["name"] for r in rows if r["status"] == "version unknown"} == falcon_windows()
    app.extensions["planb_engine"].dispose()


@pytest.mark.parametrize("installed, spec, expected", [
    ("1:2.38.1-5", ">=2.38", True),          # dpkg epoch: not part of the upstream version
    ("1:2.38.1-5", "<2", False),             # (compared by its leading "1" before)
    ("2:8.9p1-3ubuntu0.10", ">=8.9", True),
    ("7.11.18110.0", ">=7.11", True),
    ("7.10.17706.0", ">=7.11", False),
    (None, ">=7.11", None),                  # unknown: listed, never guessed
    ("unknown", ">=7.11", None),
])
def test_versions_are_compared_without_package_epochs(installed: str | None, spec: str,
                                                      expected: bool | None) -> None:
    assert version_matches(SpecifierSet(spec), installed) is expected
    if installed and installed[0].isdigit() and ":" in installed:
        assert str(comparable_version(installed)).startswith(installed.split(":", 1)[1][:3])


def test_an_incident_snapshots_the_hosts_to_check_by_hand(cli: CliRunner, sqlite_url: str, tmp_path: Path) -> None:
    declared = cli.invoke(main, ["incidents", "declare", "--title", "Falcon channel file 291", "--vendor",
                                 "CrowdStrike", "--version", ">=7.11", "--os", "windows"])
    assert declared.exit_code == 0, declared.output
    app = make_test_app(sqlite_url, tmp_path / "web", WTF_CSRF_ENABLED=False)
    client = app.test_client()
    create_user_and_login(app, client, "viewer")
    html = client.get("/incidents/1").get_data(as_text=True)
    assert "Version unknown — check by hand" in html
    for name in falcon_windows():
        assert f">{name}</a>" in html
    app.extensions["planb_engine"].dispose()
