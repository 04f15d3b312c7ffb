"""The SentinelOne collector (requests + urllib3 retries) against a loopback management-API
stand-in: cursor paging, 429 with Retry-After, a token that expires mid-read, a 500
mid-paging, an Azure VM seen by the console too, and ``planb collect sentinelone``."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from collectors import sentinelone
from collectors.azure import AzureCollector
from collectors.base import ScopeBatch
from collectors.consoles import ConsoleCredentialsError
from collectors.ingest import run_collection
from collectors.sentinelone import SentinelOneCollector
from inventory.cli import main
from inventory.db import make_engine, read_session
from inventory.models import Asset, CollectionRun, Installation, Product, Vendor
from tests.collectors.azure_payloads import SUBSCRIPTION, RecordedArm, client_for, estate_routes
from tests.collectors.s1_standin import ACCOUNT, TOKEN, S1StandIn, agent

SCOPE = f"sentinelone:{ACCOUNT}"


@pytest.fixture
def console(httpserver: HTTPServer) -> S1StandIn:
    agents = [agent(i, f"srv-{i:02d}", ["windows", "linux", "macos"][i % 3], ["23.4.2.14", "22.3.4.612"][i % 2])
              for i in range(25)]
    return S1StandIn(httpserver, agents)


def collector(stand_in: S1StandIn, token: str = TOKEN, **kwargs: Any) -> SentinelOneCollector:
    kwargs.setdefault("backoff", 0)
    return SentinelOneCollector(stand_in.url, token, page_size=10, **kwargs)


def batches(c: SentinelOneCollector) -> list[ScopeBatch]:
    return list(c.collect(lambda _msg: None))


def test_agents_are_read_across_cursor_pages(console: S1StandIn) -> None:
    [batch] = batches(collector(console))

    assert batch.scope_key == SCOPE and batch.complete and len(batch.assets) == 25
    # one small credentials check, then three pages of 10 following nextCursor
    assert console.calls == 4
    assert [q.get("cursor") is not None for q in console.queries[1:]] == [False, True, True]
    asset = next(a for a in batch.assets if a.name == "srv-01")
    assert (asset.natural_key, asset.kind, asset.os_family, asset.os_name, asset.os_version) == (
        "host:srv-01", "host", "linux", "Ubuntu 22.04.4 LTS", "22.04.4")
    assert asset.attributes["s1_machine_type"] == "server"
    assert asset.attributes["s1_last_active"] == "2024-07-19T04:01:00.000000Z"
    assert asset.attributes["mac_addresses"] == ["0a:00:00:00:00:01"] and asset.attributes["s1_tags"] == ["env=prod"]
    [sw] = [s for s in batch.software if s.asset_key == "host:srv-01"]
    assert (sw.name, sw.publisher, sw.version) == ("SentinelOne Agent", "SentinelOne", "22.3.4.612")


def test_429_is_retried_after_the_time_in_retry_after(console: S1StandIn) -> None:
    console.fail(3, 429, {"errors": [{"code": 4290010, "title": "Too Many Requests"}]}, {"Retry-After": "1"})
    stamps: list[float] = []
    original = console._agents

    def timed(request):  # type: ignore[no-untyped-def]
        stamps.append(time.monotonic())
        return original(request)

    console.server.clear_all_handlers()
    console.server.expect_request("/web/api/v2.1/agents").respond_with_handler(timed)

    [batch] = batches(collector(console))

    assert batch.complete and len(batch.assets) == 25 and console.calls == 5
    assert stamps[3] - stamps[2] >= 0.9      # urllib3 waited the second Retry-After asked for


def test_500_mid_paging_applies_what_was_read_and_retires_nothing(console: S1StandIn, engine: sa.Engine) -> None:
    assert run_collection(engine, collector(console)).status == "succeeded"
    console.agents.pop(3)
    console.agents[0]["agentVersion"] = "24.1.2.6"
    first_call = console.calls
    for nth in range(first_call + 3, first_call + 20):   # page 2 fails past every retry
        console.fail(nth, 500)

    run = run_collection(engine, collector(console, max_retries=2))

    assert run.status == "partial" and run.marked_stale == 0
    [scope] = run.scope_results
    assert scope.scope_key == SCOPE and "500" in scope.error
    with read_session(engine) as db:
        live = db.scalar(sa.select(sa.func.count()).select_from(Asset).where(Asset.retired_at.is_(None)))
        version = db.scalar(sa.select(Installation.version).join(Asset).where(Asset.natural_key == "host:srv-00"))
    assert live == 25 and version == "24.1.2.6"


def test_a_token_that_expires_mid_read_makes_the_scope_incomplete(console: S1StandIn) -> None:
    console.revoke_at = 3

    [batch] = batches(collector(console))

    assert not batch.complete and len(batch.assets) == 10
    assert "refused the API token" in batch.error and "expired" in batch.error


def test_bad_token_is_refused_before_anything_is_read(console: S1StandIn) -> None:
    with pytest.raises(ConsoleCredentialsError, match="HTTP 401: Authentication Failed"):
        collector(console, token="wrong").check_credentials()
    with pytest.raises(ConsoleCredentialsError, match="S1_API_TOKEN"):
        collector(console, token="").check_credentials()


def test_decommissioned_agents_and_reinstalls(console: S1StandIn) -> None:
    console.agents[:] = [
        agent(1, "kiosk-ord-01", "linux", "22.3.4.612", last_active="2024-05-01T00:00:00.000000Z"),
        agent(2, "kiosk-ord-01", "linux", "23.4.2.14", last_active="2024-07-19T00:00:00.000000Z"),
        agent(3, "old-box", "windows", "21.7.5.1", isDecommissioned=True),
    ]
    [batch] = batches(collector(console))
    assert [(a.natural_key, s.version) for a, s in zip(batch.assets, batch.software)] == [
        ("host:kiosk-ord-01", "23.4.2.14")]


def test_an_azure_vm_seen_by_the_console_is_one_asset(console: S1StandIn, engine: sa.Engine) -> None:
    azure = AzureCollector([SUBSCRIPTION], resource_types=["vm"],
                           client_factory=lambda _sub: client_for(RecordedArm(estate_routes())))
    assert run_collection(engine, azure).status == "succeeded"
    console.agents[:] = [agent(7, "db-linux-01", "linux", "23.4.2.14", cloud={"Azure": {
        "cloudInstanceId": "A6C2E1F4-0B3D-4C5E-9F7A-1B2C3D4E5F60", "cloudAccount": SUBSCRIPTION,
        "cloudLocation": "somewhere-else", "cloudInstanceSize": "Standard_D4s_v5",
        "azureResourceGroup": "RG-Data"}})]

    assert run_collection(engine, collector(console)).status == "succeeded"

    with read_session(engine) as db:
        rows = db.execute(sa.select(Asset).where(Asset.cloud_instance_id == "a6c2e1f4-0b3d-4c5e-9f7a-1b2c3d4e5f60")
                          ).scalars().all()
        assert len(rows) == 1 and db.scalar(sa.select(sa.func.count()).select_from(Asset)) == 3
        [vm] = rows
        assert vm.natural_key.startswith("azure:vm:") and vm.source == "azure"
        assert vm.region != "somewhere-else" and vm.provenance["region"]["source"] == "azure"
        assert vm.attributes["s1_agent_uuid"] == console.agents[0]["uuid"]
        products = set(db.execute(sa.select(Vendor.name, Product.name, Installation.version)
                                  .join(Product, Product.vendor_id == Vendor.id)
                                  .join(Installation, Installation.product_id == Product.id)
                                  .where(Installation.asset_id == vm.id)).all())
    assert ("SentinelOne", "Singularity Agent", "23.4.2.14") in products


def test_base_url_must_be_https_unless_loopback() -> None:
    with pytest.raises(ValueError, match="https://"):
        SentinelOneCollector("http://usea1.sentinelone.net", TOKEN)
    assert SentinelOneCollector("https://usea1.sentinelone.net/", TOKEN).base_url == "https://usea1.sentinelone.net"


def test_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLANB_COLLECT_SENTINELONE_BASE_URL", raising=False)
    assert sentinelone.from_config() is None
    monkeypatch.setenv("PLANB_COLLECT_SENTINELONE_BASE_URL", "https://usea1-acme.sentinelone.net")
    monkeypatch.setenv("S1_API_TOKEN", "t")
    configured = sentinelone.from_config()
    assert configured is not None and configured.base_url == "https://usea1-acme.sentinelone.net"


# -- the command ------------------------------------------------------------------------------

@pytest.fixture
def cli_env(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("S1_API_TOKEN", TOKEN)
    return cli_env


def stored(url: str) -> tuple[int, list[str]]:
    engine = make_engine(url)
    try:
        with so.Session(engine) as db:
            return (db.scalar(sa.select(sa.func.count()).select_from(Asset)) or 0,
                    list(db.scalars(sa.select(CollectionRun.status).order_by(CollectionRun.id))))
    finally:
        engine.dispose()


def test_collect_sentinelone_command(cli_env: str, console: S1StandIn) -> None:
    result = CliRunner().invoke(main, ["collect", "sentinelone", "--base-url", console.url])
    assert result.exit_code == 0, result.output + result.stderr
    assert SCOPE in result.output and "succeeded" in result.output
    assert stored(cli_env) == (25, ["succeeded"])
    answer = CliRunner().invoke(main, ["impact", "--vendor", "SentinelOne", "--version", "<23", "--format", "json"])
    assert {s["name"] for s in json.loads(answer.output)["seeds"]} == {f"srv-{i:02d}" for i in range(1, 25, 2)}


def test_collect_sentinelone_bad_token_exits_1_and_writes_nothing(cli_env: str, console: S1StandIn,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S1_API_TOKEN", "revoked")
    result = CliRunner().invoke(main, ["collect", "sentinelone", "--base-url", console.url])
    assert result.exit_code == 1
    assert "SentinelOne credentials" in result.stderr and "nothing was written" in result.stderr
    assert stored(cli_env) == (0, [])
