"""Fleet: hosts and software through Fleet's REST API, against a loopback stand-in serving the
documented shapes (tests/collectors/fleet_standin.py), through ``requests`` and urllib3's retries:
teams as scopes, paging over several pages, 429 with Retry-After, a 5xx mid-paging (scope partial,
nothing retired), a host also seen by osquery and AWS (one asset), a refused token (exit 1,
nothing written)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from collectors import fleet, osquery
from collectors.base import AssetRecord, ScopeBatch
from collectors.ingest import run_collection
from inventory.cli import main
from inventory.db import make_engine, read_session
from tests.collectors.fleet_standin import TOKEN, FleetStandIn, host, package, program
from tests.collectors.test_ingest import FakeCollector
from tests.collectors.test_osquery import installed
from tests.estate.conftest import table_snapshot

WORKSTATIONS, SERVERS = (1, "Workstations"), (2, "Servers")
FALCON = "CrowdStrike, Inc."
EC2_ID = "i-0a1b2c3d4e5f60718"


def _windows(host_id: int, name: str, falcon: str, **kwargs: Any) -> dict[str, Any]:
    return host(host_id, name, "windows", "Microsoft Windows 11 Enterprise 23H2 10.0.22631.3880", build="22631",
                software=[program(host_id * 10, "CrowdStrike Windows Sensor", falcon, FALCON),
                          program(host_id * 10 + 1, "Google Chrome", "126.0.6478.127", "Google LLC"),
                          program(host_id * 10 + 2, "7-Zip 23.01 (x64)", "23.01", "Igor Pavlov")], **kwargs)


def _ubuntu(host_id: int, name: str, **kwargs: Any) -> dict[str, Any]:
    return host(host_id, name, "ubuntu", "Ubuntu 22.04.4 LTS", platform_like="debian",
                software=[package(host_id * 10, "falcon-sensor", "7.13.0-16807", "deb_packages"),
                          package(host_id * 10 + 1, "openssl", "3.0.2-0ubuntu1.15", "deb_packages"),
                          package(host_id * 10 + 2, "requests", "2.31.0", "python_packages"),
                          package(host_id * 10 + 3, "requests", "2.32.3", "python_packages")], **kwargs)


def estate() -> FleetStandIn:
    return FleetStandIn(
        teams=[{"id": 1, "name": "Workstations", "description": "", "user_count": 0, "host_count": 5,
                "created_at": "2021-07-28T15:58:21Z"},
               {"id": 2, "name": "Servers", "description": "", "user_count": 0, "host_count": 4,
                "created_at": "2021-08-05T21:41:42Z"}],
        hosts=[_windows(1, "WS-0001", "7.11.18110.0", team=WORKSTATIONS),
               _windows(2, "WS-0002", "7.10.17706.0", team=WORKSTATIONS),
               _windows(3, "WS-0003", "7.16.18605.0", team=WORKSTATIONS),
               _windows(4, "WS-0004", "7.9.17011.0", team=WORKSTATIONS),
               host(5, "mac-design-07.local", "darwin", "macOS 14.6.1", team=WORKSTATIONS,
                    software=[{"id": 51, "name": "Falcon.app", "version": "7.16.18605", "source": "apps",
                               "bundle_identifier": "com.crowdstrike.falcon.App", "generated_cpe": "",
                               "vulnerabilities": None, "installed_paths": ["/Applications/Falcon.app"]}]),
               _ubuntu(6, "web-01", team=SERVERS, additional={"ec2_instance_metadata": [
                   {"instance_id": EC2_ID, "account_id": "111122223333", "region": "us-east-1",
                    "availability_zone": "us-east-1a"}]}),
               _ubuntu(7, "web-02", team=SERVERS),
               host(8, "db-01", "rhel", "Red Hat Enterprise Linux 9.4.0", platform_like="fedora", team=SERVERS,
                    software=[package(81, "postgresql-server", "13.14", "rpm_packages", "Red Hat, Inc.", "1.el9"),
                              package(82, "falcon-sensor", "7.14.0", "rpm_packages", FALCON, "17005.el9")]),
               _ubuntu(9, "web-03", team=SERVERS),
               _windows(10, "KIOSK-01", "7.11.18110.0")])   # in no team


@pytest.fixture
def standin(httpserver) -> FleetStandIn:  # type: ignore[no-untyped-def]
    fake = estate()
    httpserver.expect_request(__import__("re").compile(r"^/api/v1/fleet/.*")).respond_with_handler(fake)
    return fake


@pytest.fixture
def engine(any_db_url):  # type: ignore[no-untyped-def]
    eng = make_engine(any_db_url)
    yield eng
    eng.dispose()


def collector(httpserver, *, per_page: int = 2, retries: int = 2, token: str = TOKEN) -> fleet.FleetCollector:  # type: ignore[no-untyped-def]
    client = fleet.FleetClient(httpserver.url_for("/"), token, retries=retries, backoff_factor=0)
    return fleet.FleetCollector(client, per_page=per_page)


def assets_by_key(engine) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from inventory.models import Asset

    with read_session(engine) as db:
        found = {a.natural_key: a for a in db.scalars(sa.select(Asset))}
        db.expunge_all()
    return found


# ------------------------------------------------------------------ paging, teams, hosts, software

def test_hosts_and_software_of_every_team_over_several_pages(engine, httpserver, standin):
    run = run_collection(engine, collector(httpserver, per_page=2))
    assert run.status == "succeeded", run.errors
    # one batch per page of 2 hosts, then each team's roster (which may retire)
    scopes = [s.scope_key for s in run.outcomes]
    assert scopes.count("fleet:Workstations") == 3 + 1 and scopes.count("fleet:Servers") == 2 + 1
    assert scopes.count("fleet:no-team") == 1 + 1
    pages = [(p.get("team_id"), p["page"], p["per_page"], p.get("populate_software"), p.get("order_key"))
             for path, p in standin.requests if path == "/api/v1/fleet/hosts"]
    assert [pg for pg in pages if pg[0] == "1"] == [("1", str(n), "2", "without_vulnerability_details", "id")
                                                     for n in range(3)]
    assert {pg[0] for pg in pages} == {"1", "2", "0"}
    assert all(p["additional_info_filters"] == "ec2_instance_metadata,azure_instance_metadata"
               for path, p in standin.requests if path == "/api/v1/fleet/hosts")

    assets = assets_by_key(engine)
    assert len(assets) == 10
    ws1 = assets["host:ws-0001"]
    assert (ws1.kind, ws1.os_family, ws1.os_name, ws1.os_version, ws1.source, ws1.source_scope) == (
        "host", "windows", "Microsoft Windows 11 Enterprise 23H2", "10.0.22631.3880", "fleet", "fleet:Workstations")
    assert ws1.attributes["fleet_host_id"] == 1 and ws1.attributes["fleet_team"] == "Workstations"
    assert assets["host:kiosk-01"].source_scope == "fleet:no-team"
    assert (assets["host:web-02"].os_family, assets["host:web-02"].os_version) == ("linux", "22.04.4")
    assert (assets["host:db-01"].os_family, assets["host:mac-design-07.local"].os_family) == ("linux", "macos")

    assert installed(engine, "host:ws-0001")["CrowdStrike Windows Sensor"] == (
        "CrowdStrike", "Falcon Sensor", "7.11.18110.0")
    assert installed(engine, "host:db-01")["falcon-sensor"] == ("CrowdStrike", "Falcon Sensor", "7.14.0-17005.el9")
    assert installed(engine, "host:mac-design-07.local")["Falcon.app"][:2] == ("CrowdStrike", "Falcon Sensor")
    assert installed(engine, "host:web-02")["Ubuntu 22.04.4 LTS"] == ("Canonical", "Ubuntu", "22.04.4")
    # two versions of one package on a host: version unknown, both kept
    from inventory.models import Asset, Installation, UnattributedSoftware
    with read_session(engine) as db:
        row = db.execute(sa.select(UnattributedSoftware.version).join(Asset, Asset.id == UnattributedSoftware.asset_id)
                         .where(Asset.natural_key == "host:web-02", UnattributedSoftware.name == "requests")).one()
        assert row.version is None
        assert db.scalar(sa.select(sa.func.count()).select_from(Installation)) > 20

    # a second run over the same Fleet changes nothing
    again = run_collection(engine, collector(httpserver, per_page=2))
    assert (again.status, again.created, again.updated, again.marked_stale) == ("succeeded", 0, 0, 0)


def test_fleet_free_has_no_teams_and_one_scope(engine, httpserver, standin):
    standin.premium = False
    run = run_collection(engine, collector(httpserver, per_page=100))
    assert run.status == "succeeded", run.errors
    assert {s.scope_key for s in run.outcomes} == {"fleet:no-team"}
    assert not any("team_id" in p for path, p in standin.requests if path == "/api/v1/fleet/hosts")
    assert len(assets_by_key(engine)) == 10


def test_an_older_fleet_gets_populate_software_true(engine, httpserver, standin):
    standin.light_software = False
    run = run_collection(engine, collector(httpserver, per_page=100))
    assert run.status == "succeeded", run.errors
    assert installed(engine, "host:ws-0002")["CrowdStrike Windows Sensor"][2] == "7.10.17706.0"
    asked = [p.get("populate_software") for path, p in standin.requests if path == "/api/v1/fleet/hosts"]
    assert asked[0] == "without_vulnerability_details" and set(asked[1:]) == {"true"}


# ------------------------------------------------------------------ throttling and failures

def test_429_with_retry_after_is_waited_out(engine, httpserver, standin):
    standin.fault("/api/v1/fleet/hosts", {"team_id": 1, "page": 1},
                  [(429, {"Retry-After": "1"}), (429, {"Retry-After": "1"})])
    started = time.monotonic()
    run = run_collection(engine, collector(httpserver, per_page=2, retries=3))
    assert time.monotonic() - started >= 2.0          # the two Retry-After seconds were honoured
    assert run.status == "succeeded", run.errors
    asked = [p for path, p in standin.requests if path == "/api/v1/fleet/hosts"
             and p.get("team_id") == "1" and p["page"] == "1"]
    assert len(asked) == 3
    assert len(assets_by_key(engine)) == 10


def test_a_5xx_mid_paging_leaves_that_team_partial_and_retires_nothing(engine, httpserver, standin):
    assert run_collection(engine, collector(httpserver, per_page=2)).status == "succeeded"
    # web-01 leaves Fleet, and page 1 of the Servers team keeps failing
    standin.hosts = [h for h in standin.hosts if h["hostname"] != "web-01"]
    standin.fault("/api/v1/fleet/hosts", {"team_id": 2, "page": 1}, [(502, {})], always=True)
    run = run_collection(engine, collector(httpserver, per_page=2, retries=1))
    assert run.status == "partial"
    servers = [s for s in run.outcomes if s.scope_key == "fleet:Servers"]
    assert servers[-1].status == "partial" and "nothing retired" in servers[-1].error
    assert "502" in servers[-1].error
    assert {s.status for s in run.outcomes if s.scope_key != "fleet:Servers"} == {"succeeded"}
    assets = assets_by_key(engine)
    assert assets["host:web-01"].retired_at is None      # not retired by an incomplete scope
    # once Fleet answers again, the host that left is retired
    standin.faults.clear()
    healed = run_collection(engine, collector(httpserver, per_page=2))
    assert healed.status == "succeeded" and healed.marked_stale == 1
    assert assets_by_key(engine)["host:web-01"].retired_at is not None


def test_a_host_removed_from_fleet_is_retired_and_its_team_is_its_scope(engine, httpserver, standin):
    run_collection(engine, collector(httpserver, per_page=3))
    standin.hosts = [h for h in standin.hosts if h["hostname"] != "WS-0004"]
    run = run_collection(engine, collector(httpserver, per_page=3))
    assert run.status == "succeeded" and run.marked_stale == 1
    assets = assets_by_key(engine)
    assert assets["host:ws-0004"].retired_at is not None
    assert all(a.retired_at is None for k, a in assets.items() if k != "host:ws-0004")


# ------------------------------------------------------------------ one machine, one asset

def test_a_host_also_seen_by_aws_and_osquery_is_one_asset(engine, httpserver, standin, tmp_path: Path):
    ec2_key = f"aws:ec2:111122223333:us-east-1:{EC2_ID}"
    ec2 = AssetRecord(natural_key=ec2_key, name="web-01", kind="vm", provider="aws", account="111122223333",
                      region="us-east-1", zone="us-east-1a", cloud_instance_id=EC2_ID, os_family="linux")
    run_collection(engine, FakeCollector([ScopeBatch("aws:111122223333:us-east-1:ec2", [ec2])], name="aws"))
    # osquery on web-02 (no cloud metadata): host:web-02
    envelope = {"host": "web-02", "tables": {
        "system_info": [{"hostname": "web-02", "computer_name": "web-02", "uuid": "U-7"}],
        "os_version": [{"name": "Ubuntu", "version": "22.04.4 LTS (Jammy Jellyfish)", "major": "22",
                        "minor": "04", "platform": "ubuntu", "platform_like": "debian"}],
        "deb_packages": [{"name": "falcon-sensor", "version": "7.13.0-16807", "maintainer": FALCON,
                          "status": "install ok installed"}]}}
    path = tmp_path / "web-02.json"
    path.write_text(json.dumps(envelope))
    run_collection(engine, osquery.OsqueryCollector([str(path)]))

    run = run_collection(engine, collector(httpserver, per_page=2))
    assert run.status == "succeeded", run.errors
    assets = assets_by_key(engine)
    assert "host:web-01" not in assets and "host:web-02" in assets
    merged = assets[ec2_key]
    # region and identity from AWS, OS and software from the host-side sources
    assert (merged.provider, merged.region, merged.zone, merged.source, merged.kind) == (
        "aws", "us-east-1", "us-east-1a", "aws", "vm")
    assert (merged.os_name, merged.hostname) == ("Ubuntu 22.04.4 LTS", "web-01")
    assert installed(engine, ec2_key)["falcon-sensor"] == ("CrowdStrike", "Falcon Sensor", "7.13.0-16807")
    # one asset for web-02 too; osquery and Fleet rank the same for existence, so the first keeps it
    # (two agents on one machine never hand it back and forth)
    assert assets["host:web-02"].source == "osquery"
    assert installed(engine, "host:web-02")["falcon-sensor"] == ("CrowdStrike", "Falcon Sensor", "7.13.0-16807")
    again = run_collection(engine, collector(httpserver, per_page=2))
    assert (again.created, again.updated, again.marked_stale) == (0, 0, 0)
    assert len(assets_by_key(engine)) == 10  # the 10 Fleet hosts, web-01 being the EC2 instance


# ------------------------------------------------------------------ the CLI

@pytest.fixture
def cli_env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    return {"PLANB_DATABASE_URL": sqlite_url, "PLANB_INSTANCE_PATH": str(tmp_path / "instance"),
            "PLANB_SECRET_KEY": "fleet-tests", "PLANB_LOG_LEVEL": "WARNING", "FLEET_API_TOKEN": TOKEN}


def test_cli_collects_then_the_falcon_question_names_the_windows_hosts(cli_env, httpserver, standin):
    runner = CliRunner()
    result = runner.invoke(main, ["collect", "--quiet", "fleet", "--base-url", httpserver.url_for("/"),
                                  "--per-page", "3"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "(fleet: Fleet http://localhost" in result.output or "(fleet: Fleet http://127.0.0.1" in result.output
    answer = runner.invoke(main, ["impact", "--vendor", "CrowdStrike", "--version", ">=7.11", "--os", "windows",
                                  "--format", "json"], env=cli_env)
    data = json.loads(answer.output)
    assert {s["natural_key"] for s in data["seeds"]} == {"host:ws-0001", "host:ws-0003", "host:kiosk-01"}
    listed = runner.invoke(main, ["runs", "--collector", "fleet", "--format", "json"], env=cli_env)
    assert json.loads(listed.output)[0]["status"] == "succeeded"


def test_cli_bad_token_is_a_clear_error_and_writes_nothing(cli_env, httpserver, standin):
    engine = make_engine(cli_env["PLANB_DATABASE_URL"])
    before = table_snapshot(engine)
    result = CliRunner().invoke(main, ["collect", "fleet", "--base-url", httpserver.url_for("/")],
                                env={**cli_env, "FLEET_API_TOKEN": "wrong"})
    assert result.exit_code == 1
    assert "Error: Fleet: Fleet refused the API token (401 on GET /api/v1/fleet/me: Authentication required)" \
        in result.output
    assert table_snapshot(engine) == before
    missing = CliRunner().invoke(main, ["collect", "fleet", "--base-url", httpserver.url_for("/")],
                                 env={**cli_env, "FLEET_API_TOKEN": ""})
    assert missing.exit_code == 1 and "set FLEET_API_TOKEN" in missing.output
    clear = CliRunner().invoke(main, ["collect", "fleet", "--base-url", "http://fleet.example.com"], env=cli_env)
    assert clear.exit_code == 1 and "use https" in clear.output
    assert table_snapshot(engine) == before
    engine.dispose()


def test_collect_all_reads_fleet_from_its_variables(cli_env, httpserver, standin):
    env = {**cli_env, "PLANB_COLLECT_FLEET_URL": httpserver.url_for("/"), "PLANB_COLLECT_FLEET_PER_PAGE": "4",
           "PLANB_COLLECT_HOST": "false"}
    result = CliRunner().invoke(main, ["collect", "--quiet", "all"], env=env)
    assert result.exit_code == 0, result.output
    assert "Run 1 (fleet:" in result.output
    assert {p["per_page"] for path, p in standin.requests if path == "/api/v1/fleet/hosts"} == {"4"}
    bad = CliRunner().invoke(main, ["collect", "all"], env={**env, "PLANB_COLLECT_FLEET_URL": "http://10.1.2.3"})
    assert bad.exit_code == 1 and "PLANB_COLLECT_FLEET_URL:" in bad.output and "use https" in bad.output
    no_token = CliRunner().invoke(main, ["collect", "all"], env={**env, "FLEET_API_TOKEN": ""})
    assert no_token.exit_code == 1 and "FLEET_API_TOKEN: not set" in no_token.output


@pytest.mark.parametrize("os_version, platform, expected", [
    ("Ubuntu 22.04.4 LTS", "ubuntu", ("linux", "Ubuntu 22.04.4 LTS", "22.04.4")),
    ("macOS 14.6.1", "darwin", ("macos", "macOS 14.6.1", "14.6.1")),
    ("CentOS Linux 7", "centos", ("linux", "CentOS Linux 7", "7")),
    ("Windows Server 2022 Datacenter 21H2 10.0.20348.2527", "windows",
     ("windows", "Windows Server 2022 Datacenter 21H2", "10.0.20348.2527")),
    ("", "windows", ("windows", None, None)),
])
def test_os_facts(os_version, platform, expected):
    assert fleet.os_facts({"os_version": os_version, "platform": platform}) == expected


def test_fleet_runs_are_on_the_runs_page(sqlite_url, viewer_client, httpserver, standin):
    engine = make_engine(sqlite_url)
    standin.fault("/api/v1/fleet/hosts", {"team_id": 2, "page": 0}, [(500, {})], always=True)
    run_collection(engine, collector(httpserver, per_page=10, retries=0))
    engine.dispose()
    page = viewer_client.get("/runs/?collector=fleet").get_data(as_text=True)
    assert "fleet" in page and "partial" in page and "fleet:Servers" in page
