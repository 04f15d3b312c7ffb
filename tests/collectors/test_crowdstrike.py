"""The CrowdStrike Falcon collector through FalconPy against a loopback Falcon API stand-in:
scroll paging, detail batches, 429s, an expiring token, a 500 mid-paging, policy names,
duplicates, and what ingest makes of it."""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from pytest_httpserver import HTTPServer

from collectors import crowdstrike
from collectors.base import ScopeBatch
from collectors.consoles import ConsoleCredentialsError
from collectors.crowdstrike import CrowdStrikeCollector, retry_after_seconds
from collectors.ingest import run_collection
from inventory.db import read_session
from inventory.models import Asset, Installation, Product, Vendor
from tests.collectors.falcon_standin import (
    CID,
    CLIENT_ID,
    CLIENT_SECRET,
    DETAILS,
    POLICIES,
    SCROLL,
    TOKEN,
    FalconStandIn,
    device,
    falcon_error,
    policy,
)

NOW = 1_721_361_600.0  # 2024-07-19T04:00:00Z
SCOPE = f"crowdstrike:{CID.lower()}"
RINGS = [policy("pol0" + "a" * 28, "Windows Canary (auto N)"),
         policy("pol0" + "b" * 28, "Windows Production (N-1)", build="n-1|tagged|1")]


def fleet(n: int) -> list[dict[str, Any]]:
    """n Windows EC2 hosts, alternating between the two sensor update policies."""
    versions = ["7.10.17706.0", "7.11.18110.0", "7.15.18514.0", "7.16.18605.0"]
    return [device(f"{i:04x}" + "d" * 28, f"win-{i:03d}", "Windows", versions[i % 4],
                   instance_id=f"i-{i:017x}", zone="us-east-1b", policy_id=RINGS[i % 2]["id"])
            for i in range(n)]


@pytest.fixture
def falcon(httpserver: HTTPServer) -> FalconStandIn:
    return FalconStandIn(httpserver, fleet(250), RINGS)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def collector(stand_in: FalconStandIn, *, secret: str = CLIENT_SECRET, page_size: int = 100,
              sleeps: Sleeps | None = None, **kwargs: Any) -> CrowdStrikeCollector:
    return CrowdStrikeCollector(CLIENT_ID, secret, base_url=stand_in.url, page_size=page_size,
                                sleep=sleeps if sleeps is not None else Sleeps(), wall_clock=lambda: NOW,
                                **kwargs)


def batches(c: CrowdStrikeCollector) -> list[ScopeBatch]:
    return list(c.collect(lambda _msg: None))


def test_hosts_are_read_across_scroll_pages_and_detail_batches(falcon: FalconStandIn) -> None:
    [batch] = batches(collector(falcon))

    assert batch.scope_key == SCOPE and batch.complete and batch.error is None
    assert len(batch.assets) == 250 and len(batch.software) == 250
    # 250 ids at 100 a page: three scroll calls; every detail request within the API's 100
    assert falcon.calls[SCROLL] == 3 and falcon.calls[DETAILS] == 3
    assert max(falcon.id_batches) <= 100 and sum(falcon.id_batches) == 250
    # the offset token of one page is what the next scroll call sent
    scrolls = [q for p, q in falcon.requests if p == SCROLL]
    assert "offset=" not in scrolls[0] and all("offset=" in q for q in scrolls[1:])
    assert falcon.tokens_issued == 1


def test_a_host_becomes_an_asset_with_the_sensor_version_and_its_update_ring(falcon: FalconStandIn) -> None:
    [batch] = batches(collector(falcon))
    asset = next(a for a in batch.assets if a.name == "win-001")

    assert asset.natural_key == "host:win-001"
    assert (asset.kind, asset.provider, asset.account, asset.region, asset.zone, asset.cloud_instance_id) == (
        "vm", "aws", "123456789012", "us-east-1", "us-east-1b", "i-00000000000000001")
    assert (asset.os_family, asset.os_name, asset.os_version) == (
        "windows", "Windows Server 2022 Datacenter", "10.0.20348.2582")
    assert asset.hostname == "win-001.corp.example.com"
    assert asset.attributes["falcon_device_id"] == "0001" + "d" * 28
    assert asset.attributes["falcon_sensor_update_policy"] == "Windows Production (N-1)"
    assert asset.attributes["serial_number"] and asset.attributes["mac_address"].startswith("0a-1b-2c")
    assert asset.attributes["falcon_last_seen"] == "2024-07-19T04:05:00Z"
    [sensor] = [s for s in batch.software if s.asset_key == asset.natural_key]
    assert (sensor.name, sensor.publisher, sensor.version) == ("Falcon Sensor", "CrowdStrike, Inc.", "7.11.18110.0")
    assert sensor.attributes == {"sensor_update_policy": "Windows Production (N-1)",
                                 "sensor_update_policy_id": RINGS[1]["id"], "sensor_update_policy_applied": True,
                                 "sensor_update_build": "n-1|tagged|1"}


def test_429_waits_until_the_time_in_x_ratelimit_retryafter(falcon: FalconStandIn) -> None:
    falcon.throttle(SCROLL, 2, retry_after_epoch=int(NOW) + 7)
    falcon.throttle(DETAILS, 1, retry_after_epoch=int(NOW) + 2)
    sleeps = Sleeps()

    [batch] = batches(collector(falcon, sleeps=sleeps))

    assert batch.complete and len(batch.assets) == 250
    assert sorted(sleeps) == [2.0, 7.0]
    assert falcon.calls[SCROLL] == 4  # the throttled call was made again


def test_429_past_the_retries_leaves_the_scope_incomplete(falcon: FalconStandIn) -> None:
    for nth in range(2, 10):
        falcon.throttle(SCROLL, nth, retry_after_epoch=int(NOW) + 1)

    [batch] = batches(collector(falcon, max_retries=2))

    assert not batch.complete and len(batch.assets) == 100
    assert "HTTP 429" in batch.error and "rate limit" in batch.error


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds({"X-RateLimit-RetryAfter": str(int(NOW) + 30)}, NOW) == 30.0
    assert retry_after_seconds({"x-ratelimit-retryafter": "5"}, NOW) == 5.0        # already seconds
    assert retry_after_seconds({"X-RateLimit-RetryAfter": str(int(NOW) - 9)}, NOW) == 0.0
    assert retry_after_seconds({"X-RateLimit-RetryAfter": str(int(NOW) + 9999)}, NOW) == 120.0
    assert retry_after_seconds({}, NOW) == 1.0


def test_an_expired_token_is_renewed_once_and_the_read_goes_on(falcon: FalconStandIn) -> None:
    falcon.expire_tokens_at(SCROLL, 2)
    falcon.expire_tokens_at(DETAILS, 3)

    [batch] = batches(collector(falcon))

    assert batch.complete and len(batch.assets) == 250
    assert falcon.tokens_issued == 3


def test_a_token_refused_again_after_renewal_ends_the_read(falcon: FalconStandIn) -> None:
    falcon.fail(DETAILS, 2, 401, falcon_error(401, "access denied, invalid bearer token"))
    falcon.fail(DETAILS, 3, 401, falcon_error(401, "access denied, invalid bearer token"))

    [batch] = batches(collector(falcon))

    assert not batch.complete and "HTTP 401" in batch.error and len(batch.assets) == 100


def test_bad_credentials_are_refused_before_anything_is_read(falcon: FalconStandIn) -> None:
    c = collector(falcon, secret="wrong")
    with pytest.raises(ConsoleCredentialsError, match="refused the API client.*HTTP 403.*Not Authorized"):
        c.check_credentials()
    assert falcon.calls[SCROLL] == 0 and falcon.calls[TOKEN] == 1
    with pytest.raises(ConsoleCredentialsError, match="FALCON_CLIENT_ID"):
        CrowdStrikeCollector("", "", base_url=falcon.url).check_credentials()


def test_500_mid_paging_applies_what_was_read_and_retires_nothing(falcon: FalconStandIn, engine: sa.Engine) -> None:
    first = run_collection(engine, collector(falcon))
    assert first.status == "succeeded" and first.created == 500  # 250 assets, 250 installations

    removed = falcon.devices.pop(5)          # gone from the console since
    falcon.devices[0]["agent_version"] = "7.16.18605.0"
    falcon.fail(SCROLL, falcon.calls[SCROLL] + 2, 500, falcon_error(500, "Internal Server Error"))
    second = run_collection(engine, collector(falcon))

    assert second.status == "partial" and second.marked_stale == 0
    [scope] = second.scope_results
    assert scope.scope_key == SCOPE and scope.status == "partial" and "HTTP 500" in scope.error
    with read_session(engine) as db:
        live = set(db.scalars(sa.select(Asset.natural_key).where(Asset.retired_at.is_(None))))
        version = db.scalar(sa.select(Installation.version).join(Asset)
                            .where(Asset.natural_key == "host:win-000"))
    assert len(live) == 250 and f"host:{removed['hostname']}" in live    # nothing retired
    assert version == "7.16.18605.0"                                       # what was read is applied

    third = run_collection(engine, collector(falcon))
    assert third.status == "succeeded" and third.marked_stale == 1


def test_policy_names_unavailable_keep_the_hosts_complete(falcon: FalconStandIn) -> None:
    falcon.fail(POLICIES, 1, 403, falcon_error(403, "access denied, authorization failed"))
    messages: list[str] = []

    [batch] = list(collector(falcon).collect(messages.append))

    assert batch.complete
    asset = batch.assets[0]
    assert asset.attributes["falcon_sensor_update_policy_id"] == RINGS[0]["id"]
    assert "falcon_sensor_update_policy" not in asset.attributes
    assert any("policy names unavailable" in m for m in messages)


def test_filter_is_sent_and_makes_its_own_scope(falcon: FalconStandIn) -> None:
    falcon.devices.append(device("ffff" + "e" * 28, "lnx-001", "Linux", "7.11.18110.0"))

    [batch] = batches(collector(falcon, fql="platform_name:'Linux'"))

    assert [a.natural_key for a in batch.assets] == ["host:lnx-001"]
    assert batch.scope_key.startswith(SCOPE + ":filter:") and batch.scope_key != SCOPE
    assert all("filter=platform_name" in q for p, q in falcon.requests if p == SCROLL)
    linux = batch.assets[0]
    assert (linux.kind, linux.provider, linux.cloud_instance_id, linux.os_family, linux.os_version) == (
        "host", None, None, "linux", "9.4")


def test_a_reimaged_machine_is_one_asset_and_namesakes_in_two_vpcs_are_two(falcon: FalconStandIn) -> None:
    falcon.devices[:] = [
        device("aaaa" + "1" * 28, "WS-FIN-07", "Windows", "7.10.17706.0", last_seen="2024-06-01T08:00:00Z"),
        device("bbbb" + "2" * 28, "WS-FIN-07", "Windows", "7.11.18110.0", last_seen="2024-07-19T03:00:00Z"),
        device("cccc" + "3" * 28, "ip-10-0-1-23", "Linux", "7.11.18110.0", instance_id="i-0aaa", zone="us-east-1a"),
        device("dddd" + "4" * 28, "ip-10-0-1-23", "Linux", "7.15.18514.0", instance_id="i-0bbb",
               zone="eu-west-1c", account="210987654321"),
    ]

    [batch] = batches(collector(falcon))

    keys = sorted(a.natural_key for a in batch.assets)
    assert keys == ["host:ip-10-0-1-23:i-0aaa", "host:ip-10-0-1-23:i-0bbb", "host:ws-fin-07"]
    versions = {s.asset_key: s.version for s in batch.software}
    assert versions["host:ws-fin-07"] == "7.11.18110.0"      # the sensor seen last
    assert versions["host:ip-10-0-1-23:i-0bbb"] == "7.15.18514.0"


def test_the_sensor_is_attributed_to_crowdstrike_falcon_sensor(falcon: FalconStandIn, engine: sa.Engine) -> None:
    falcon.devices[:] = falcon.devices[:3]
    run_collection(engine, collector(falcon))
    with read_session(engine) as db:
        rows = set(db.execute(sa.select(Vendor.name, Product.name, Product.kind, Installation.source)
                              .join(Product, Product.vendor_id == Vendor.id)
                              .join(Installation, Installation.product_id == Product.id)).all())
    assert rows == {("CrowdStrike", "Falcon Sensor", "agent", "crowdstrike")}


def test_base_url_names_and_urls() -> None:
    assert crowdstrike.resolve_base_url(None) == "https://api.crowdstrike.com"
    assert crowdstrike.resolve_base_url("US-2") == "https://api.us-2.crowdstrike.com"
    assert crowdstrike.resolve_base_url("eu-1") == "https://api.eu-1.crowdstrike.com"
    assert crowdstrike.resolve_base_url("us-gov-1") == "https://api.laggar.gcw.crowdstrike.com"
    assert crowdstrike.resolve_base_url("https://falcon-proxy.example.com/") == "https://falcon-proxy.example.com"
    assert crowdstrike.resolve_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert crowdstrike.resolve_base_url("http://[::1]:8080") == "http://[::1]:8080"
    for bad in ("http://falcon.example.com", "ftp://127.0.0.1", "eu-9"):
        with pytest.raises(ValueError):
            crowdstrike.resolve_base_url(bad)


def test_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PLANB_COLLECT_CROWDSTRIKE", "PLANB_COLLECT_CROWDSTRIKE_BASE_URL", "PLANB_COLLECT_CROWDSTRIKE_FILTER"):
        monkeypatch.delenv(name, raising=False)
    assert crowdstrike.from_config() is None
    monkeypatch.setenv("PLANB_COLLECT_CROWDSTRIKE_BASE_URL", "eu-1")
    monkeypatch.setenv("PLANB_COLLECT_CROWDSTRIKE_FILTER", "platform_name:'Windows'")
    monkeypatch.setenv("FALCON_CLIENT_ID", "id")
    monkeypatch.setenv("FALCON_CLIENT_SECRET", "secret")
    configured = crowdstrike.from_config()
    assert configured is not None and configured.base_url == "https://api.eu-1.crowdstrike.com"
    assert configured.fql == "platform_name:'Windows'"
    monkeypatch.setenv("PLANB_COLLECT_CROWDSTRIKE", "false")
    assert crowdstrike.from_config() is None
    monkeypatch.delenv("PLANB_COLLECT_CROWDSTRIKE_BASE_URL")
    monkeypatch.setenv("PLANB_COLLECT_CROWDSTRIKE", "true")
    assert crowdstrike.from_config().base_url == "https://api.crowdstrike.com"  # type: ignore[union-attr]
