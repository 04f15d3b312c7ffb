"""``planb collect crowdstrike`` end to end (CLI → FalconPy → loopback Falcon stand-in →
ingest), the July 2024 question answered from the console alone, and one machine seen by
AWS (moto), osquery and Falcon becoming one asset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from inventory.cli import main
from inventory.db import make_engine
from inventory.models import Asset, CollectionRun, Installation, Product
from tests.collectors.aws_helpers import ACCOUNT, WINDOWS_AMI, aws_env, moto_server, network, run_instances
from tests.collectors.falcon_standin import (
    CID,
    CLIENT_ID,
    CLIENT_SECRET,
    DETAILS,
    SCROLL,
    FalconStandIn,
    device,
)

__all__ = ["aws_env", "moto_server"]  # fixtures imported for pytest

JULY_QUESTION = ["impact", "--vendor", "CrowdStrike", "--version", ">=7.11", "--os", "windows"]

# The console: Windows hosts on 7.9, 7.10, 7.11, 7.15 and 7.16; Linux and macOS on 7.11+.
CONSOLE = [
    ("WIN-PAY-01", "Windows", "7.9.17211.0"), ("WIN-PAY-02", "Windows", "7.10.17706.0"),
    ("WIN-PAY-03", "Windows", "7.10.17807.0"), ("WIN-BOARD-01", "Windows", "7.11.18110.0"),
    ("WIN-BOARD-02", "Windows", "7.11.18209.0"), ("WIN-CREW-01", "Windows", "7.15.18514.0"),
    ("WIN-CREW-02", "Windows", "7.16.18605.0"), ("LNX-API-01", "Linux", "7.11.18110.0"),
    ("LNX-API-02", "Linux", "7.16.18605.0"), ("MAC-BUILD-01", "Mac", "7.15.18514.0"),
]
HIT = {"WIN-BOARD-01", "WIN-BOARD-02", "WIN-CREW-01", "WIN-CREW-02"}


@pytest.fixture
def cli_env(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FALCON_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("FALCON_CLIENT_SECRET", CLIENT_SECRET)
    return cli_env


@pytest.fixture
def console(httpserver: HTTPServer) -> FalconStandIn:
    devices = [device(f"{i:04x}" + "c" * 28, name, platform, version, serial=f"SN{i:06d}")
               for i, (name, platform, version) in enumerate(CONSOLE)]
    return FalconStandIn(httpserver, devices)


def stored(url: str) -> tuple[dict[str, Asset], list[CollectionRun]]:
    engine = make_engine(url)
    try:
        with so.Session(engine) as db:
            assets = {a.natural_key: a for a in db.scalars(sa.select(Asset))}
            runs = list(db.scalars(sa.select(CollectionRun).order_by(CollectionRun.id)))
            db.expunge_all()
        return assets, runs
    finally:
        engine.dispose()


def software(url: str, key: str) -> dict[str, tuple[str | None, str | None]]:
    engine = make_engine(url)
    try:
        with so.Session(engine) as db:
            rows = db.execute(sa.select(Product.name, Installation.version, Installation.source)
                              .join(Installation, Installation.product_id == Product.id)
                              .join(Asset, Asset.id == Installation.asset_id)
                              .where(Asset.natural_key == key)).all()
        return {name: (version, source) for name, version, source in rows}
    finally:
        engine.dispose()


def test_the_july_question_from_the_falcon_console_alone(cli_env: str, console: FalconStandIn) -> None:
    runner = CliRunner()
    collected = runner.invoke(main, ["collect", "crowdstrike", "--base-url", console.url])
    assert collected.exit_code == 0, collected.output + collected.stderr
    assert f"crowdstrike:{CID.lower()}" in collected.output and "succeeded" in collected.output

    answer = runner.invoke(main, [*JULY_QUESTION, "--format", "json"])
    assert answer.exit_code == 0, answer.output
    data = json.loads(answer.output)
    assert {s["name"] for s in data["seeds"]} == HIT        # 7.9 and 7.10 are older; Linux/macOS not Windows
    assert data["totals"]["version_unknown"] == 0
    assert {s["matched"]["version"] for s in data["seeds"]} == {
        "7.11.18110.0", "7.11.18209.0", "7.15.18514.0", "7.16.18605.0"}

    table = runner.invoke(main, JULY_QUESTION)
    assert table.exit_code == 0 and all(name in table.output for name in HIT)
    assert "WIN-PAY-02" not in table.output and "LNX-API-01" not in table.output

    # A second run changes nothing.
    again = runner.invoke(main, ["collect", "--quiet", "crowdstrike", "--base-url", console.url])
    assert again.exit_code == 0
    _assets, runs = stored(cli_env)
    assert (runs[-1].created, runs[-1].updated, runs[-1].marked_stale) == (0, 0, 0)


def test_bad_credentials_exit_1_and_write_nothing(cli_env: str, console: FalconStandIn,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALCON_CLIENT_SECRET", "not-the-secret")

    result = CliRunner().invoke(main, ["collect", "crowdstrike", "--base-url", console.url])

    assert result.exit_code == 1
    assert "Error: CrowdStrike credentials:" in result.stderr and "HTTP 403" in result.stderr
    assert "nothing was written" in result.stderr
    assert console.calls[SCROLL] == 0
    assets, runs = stored(cli_env)
    assert assets == {} and runs == []

    monkeypatch.delenv("FALCON_CLIENT_SECRET")
    missing = CliRunner().invoke(main, ["collect", "crowdstrike", "--base-url", console.url])
    assert missing.exit_code == 1 and "FALCON_CLIENT_SECRET" in missing.stderr


def test_plain_http_is_refused_unless_loopback(cli_env: str) -> None:
    result = CliRunner().invoke(main, ["collect", "crowdstrike", "--base-url", "http://falcon.example.com"])
    assert result.exit_code != 0 and "https://" in result.stderr
    assert stored(cli_env) == ({}, [])


def test_an_error_before_any_host_is_read_fails_the_run_and_retires_nothing(cli_env: str,
                                                                          console: FalconStandIn) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["collect", "--quiet", "crowdstrike", "--base-url", console.url]).exit_code == 0
    console.devices.pop()
    console.fail(DETAILS, console.calls[DETAILS] + 1, 503, {"errors": [{"code": 503, "message": "unavailable"}]})

    result = runner.invoke(main, ["collect", "--quiet", "crowdstrike", "--base-url", console.url])

    assert result.exit_code == 1 and "HTTP 503" in result.stderr
    assets, runs = stored(cli_env)
    assert runs[-1].status == "failed" and len(assets) == len(CONSOLE)
    assert all(a.retired_at is None for a in assets.values())


def test_one_machine_seen_by_aws_osquery_and_falcon_is_one_asset(cli_env: str, aws_env: str,
                                                                 httpserver: HTTPServer, tmp_path: Path) -> None:
    [instance] = run_instances(network("us-east-1"), 1, image=WINDOWS_AMI, name="pay-01")
    runner = CliRunner()
    aws = runner.invoke(main, ["collect", "--quiet", "aws", "--region", "us-east-1", "--no-ssm",
                               "--resource-type", "ec2"])
    assert aws.exit_code == 0, aws.output + aws.stderr

    envelope = {"host": "PAY-01", "tables": {
        "system_info": [{"hostname": "PAY-01", "computer_name": "PAY-01", "uuid": "U-1"}],
        "os_version": [{"name": "Microsoft Windows Server 2022 Datacenter", "version": "10.0.20348",
                        "major": "10", "minor": "0", "build": "20348", "platform": "windows"}],
        "programs": [{"name": "CrowdStrike Windows Sensor", "version": "7.11.18110.0",
                      "publisher": "CrowdStrike, Inc.", "identifying_number": "{F}"},
                     {"name": "Microsoft Edge", "version": "126.0.2592.113", "publisher": "Microsoft Corporation",
                      "identifying_number": "{E}"}],
        "ec2_instance_metadata": [{"instance_id": instance, "account_id": ACCOUNT, "region": "us-east-1",
                                   "availability_zone": "us-east-1a", "ami_id": WINDOWS_AMI}]}}
    path = tmp_path / "pay-01.json"
    path.write_text(json.dumps(envelope))
    assert runner.invoke(main, ["collect", "--quiet", "osquery", str(path)]).exit_code == 0

    console = FalconStandIn(httpserver, [device("9999" + "a" * 28, "PAY-01", "Windows", "7.11.18110.0",
                                                instance_id=instance, account=ACCOUNT, zone="us-east-1a")])
    falcon = runner.invoke(main, ["collect", "--quiet", "crowdstrike", "--base-url", console.url])
    assert falcon.exit_code == 0, falcon.output + falcon.stderr

    assets, _runs = stored(cli_env)
    machines = [a for a in assets.values() if a.kind in ("vm", "host")]
    assert len(machines) == 1, sorted(assets)
    [asset] = machines
    assert asset.natural_key == f"aws:ec2:{ACCOUNT}:us-east-1:{instance}"
    assert (asset.source, asset.provider, asset.region, asset.cloud_instance_id) == (
        "aws", "aws", "us-east-1", instance)
    assert asset.provenance["region"]["source"] == "aws"
    assert asset.os_name == "Microsoft Windows Server 2022 Datacenter"  # host-side: osquery came first
    assert asset.attributes["falcon_device_id"] == "9999" + "a" * 28
    installed = software(cli_env, asset.natural_key)
    assert installed["Falcon Sensor"] == ("7.11.18110.0", "osquery")   # equal rank: the incumbent keeps it
    assert installed["Microsoft Edge"][1] == "osquery"


def test_an_on_premises_machine_seen_by_osquery_and_falcon_is_one_asset(cli_env: str, console: FalconStandIn,
                                                                        tmp_path: Path) -> None:
    envelope = {"host": "WIN-PAY-02", "tables": {
        "system_info": [{"hostname": "WIN-PAY-02", "computer_name": "WIN-PAY-02", "uuid": "U-2"}],
        "os_version": [{"name": "Microsoft Windows Server 2022 Datacenter", "version": "10.0.20348",
                        "major": "10", "minor": "0", "platform": "windows"}],
        "programs": [{"name": "Adobe Acrobat Reader", "version": "24.002.20933", "publisher": "Adobe Inc.",
                      "identifying_number": "{A}"}]}}
    path = tmp_path / "win-pay-02.json"
    path.write_text(json.dumps(envelope))
    runner = CliRunner()
    assert runner.invoke(main, ["collect", "--quiet", "osquery", str(path)]).exit_code == 0
    assert runner.invoke(main, ["collect", "--quiet", "crowdstrike", "--base-url", console.url]).exit_code == 0

    assets, _runs = stored(cli_env)
    assert len(assets) == len(CONSOLE)           # WIN-PAY-02 once, not twice
    asset = assets["host:win-pay-02"]
    installed = software(cli_env, "host:win-pay-02")
    assert installed["Falcon Sensor"] == ("7.10.17706.0", "crowdstrike")
    assert installed["Acrobat Reader"] == ("24.002.20933", "osquery")
    assert asset.attributes["serial_number"] == "SN000001"


def test_collect_all_reads_the_configured_console(cli_env: str, console: FalconStandIn,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANB_COLLECT_HOST", "false")
    monkeypatch.setenv("PLANB_COLLECT_CROWDSTRIKE_BASE_URL", console.url)
    monkeypatch.setenv("PLANB_COLLECT_CROWDSTRIKE_FILTER", "platform_name:'Windows'")
    for name in ("PLANB_COLLECT_DEFENDER", "PLANB_COLLECT_DEFENDER_BASE_URL", "PLANB_COLLECT_SENTINELONE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)

    result = CliRunner().invoke(main, ["collect", "all"])

    assert result.exit_code == 0, result.output + result.stderr
    assert "defender: not configured, skipped" in result.stderr
    assert "sentinelone: not configured, skipped" in result.stderr
    assets, runs = stored(cli_env)
    assert [r.collector for r in runs] == ["crowdstrike"] and runs[0].status == "succeeded"
    assert {a.name for a in assets.values()} == {name for name, platform, _v in CONSOLE if platform == "Windows"}
