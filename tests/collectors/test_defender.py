"""The Defender for Endpoint collector (azure-core pipeline, azure-identity credential) against a
loopback API stand-in: OData paging of machines and of the software inventory export, 429
with Retry-After, a token that expires mid-read, a 500 mid-paging, an Azure VM seen by both
Azure and Defender, refused credentials (a real ClientSecretCredential answered by a recorded
Entra ID), and ``planb collect defender``."""
from __future__ import annotations

import json
from typing import Any, Self
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict
from click.testing import CliRunner
from pytest_httpserver import HTTPServer

from collectors import defender
from collectors.azure import AzureCollector
from collectors.base import ScopeBatch
from collectors.consoles import ConsoleCredentialsError
from collectors.defender import DefenderCollector
from collectors.ingest import run_collection
from inventory.cli import main
from inventory.db import make_engine, read_session
from inventory.models import Asset, CollectionRun, Installation, Product, Vendor
from tests.collectors.azure_payloads import SUBSCRIPTION as ARM_SUBSCRIPTION
from tests.collectors.azure_payloads import RecordedArm, client_for, estate_routes
from tests.collectors.defender_standin import (
    MACHINES,
    SOFTWARE,
    TENANT,
    DefenderStandIn,
    StandInCredential,
    inventory_row,
    machine,
    mde_error,
)

SCOPE = f"defender:{TENANT}"


def fleet() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    machines = [machine(i, f"srv-{i:02d}.corp.example.com", "WindowsServer2022", "10.8760.20348.2582")
                for i in range(7)]
    machines.append(machine(7, "lnx-07.corp.example.com", "Linux", "30.124052.0002", build=None, version="22.04"))
    machines.append(machine(8, "printer-08.corp.example.com", "Windows10", "", onboarding="CanBeOnboarded"))
    rows = []
    for m in machines[:8]:
        if m["osPlatform"] == "Linux":
            rows.append(inventory_row(m, "canonical", "ubuntu_linux", "22.04.4"))
            rows.append(inventory_row(m, "crowdstrike", "falcon_sensor", "7.11.18110.0"))
        else:
            rows.append(inventory_row(m, "microsoft", "windows_server_2022", "10.0.20348.2582"))
            rows.append(inventory_row(m, "microsoft", "edge", "126.0.2592.113"))
            rows.append(inventory_row(m, "google", "chrome", "126.0.6478.127"))
    return machines, rows


@pytest.fixture
def api(httpserver: HTTPServer) -> DefenderStandIn:
    machines, rows = fleet()
    return DefenderStandIn(httpserver, machines, rows)


def collector(stand_in: DefenderStandIn, **kwargs: Any) -> DefenderCollector:
    kwargs.setdefault("credential", StandInCredential(stand_in))
    kwargs.setdefault("retry_backoff", 0.01)
    return DefenderCollector(base_url=stand_in.url, tenant=TENANT, machine_page=4, software_page=10, **kwargs)


def batches(c: DefenderCollector) -> list[ScopeBatch]:
    return list(c.collect(lambda _msg: None))


def test_machines_and_software_are_read_across_odata_pages(api: DefenderStandIn) -> None:
    c = collector(api)
    [batch] = batches(c)

    assert batch.scope_key == SCOPE and batch.complete
    assert sorted(a.natural_key for a in batch.assets) == sorted(
        [f"host:srv-{i:02d}" for i in range(7)] + ["host:lnx-07"])   # the discovered printer is skipped
    assert api.calls[MACHINES] == 3 and api.calls[SOFTWARE] == 3       # 9 machines by 4, 23 rows by 10
    assert [q.get("$skip") for p, q in api.queries if p == MACHINES] == [None, "4", "8"]
    assert set(c.credential.scopes) == {("https://api.securitycenter.microsoft.com/.default",)}

    srv = next(a for a in batch.assets if a.natural_key == "host:srv-03")
    assert (srv.name, srv.hostname, srv.os_family, srv.os_name, srv.os_version) == (
        "srv-03", "srv-03.corp.example.com", "windows", "Windows Server 2022", "10.0.20348")
    assert srv.attributes["defender_health_status"] == "Active"
    assert srv.attributes["defender_onboarding_status"] == "Onboarded"
    assert srv.attributes["defender_last_seen"] == "2024-07-19T04:02:00.0000000Z"
    software = {s.name: s for s in batch.software if s.asset_key == "host:srv-03"}
    assert software["Microsoft Defender for Endpoint"].version == "10.8760.20348.2582"
    assert (software["windows server 2022"].publisher, software["windows server 2022"].version) == (
        "microsoft", "10.0.20348.2582")
    assert software["chrome"].version == "126.0.6478.127"


def test_software_is_attributed_through_the_catalogue(api: DefenderStandIn, engine: sa.Engine) -> None:
    assert run_collection(engine, collector(api)).status == "succeeded"
    with read_session(engine) as db:
        rows = set(db.execute(sa.select(Vendor.name, Product.name, Installation.version)
                              .join(Product, Product.vendor_id == Vendor.id)
                              .join(Installation, Installation.product_id == Product.id)
                              .join(Asset, Asset.id == Installation.asset_id)
                              .where(Asset.natural_key == "host:lnx-07")).all())
    assert rows >= {("Microsoft", "Microsoft Defender for Endpoint", "30.124052.0002"),
                    ("CrowdStrike", "Falcon Sensor", "7.11.18110.0"), ("Canonical", "Ubuntu", "22.04.4")}


def test_429_is_retried_after_retry_after(api: DefenderStandIn) -> None:
    api.fail(MACHINES, 2, 429, mde_error("TooManyRequests", "Rate limit is exceeded"), {"Retry-After": "1"})

    [batch] = batches(collector(api))

    assert batch.complete and len(batch.assets) == 8 and api.calls[MACHINES] == 4
    times = [t for p, t in api.stamps if p == MACHINES]
    assert times[2] - times[1] >= 0.9        # azure-core's RetryPolicy waited the Retry-After second


def test_an_expired_token_is_replaced_and_the_read_goes_on(api: DefenderStandIn) -> None:
    api.expire_tokens_at(MACHINES, 2)
    api.expire_tokens_at(SOFTWARE, 3)
    credential = StandInCredential(api)

    [batch] = batches(collector(api, credential=credential))

    assert batch.complete and len(batch.assets) == 8
    assert len(credential.scopes) == 3      # the first token and one new token per expiry


def test_500_mid_paging_applies_what_was_read_and_retires_nothing(api: DefenderStandIn, engine: sa.Engine) -> None:
    assert run_collection(engine, collector(api)).status == "succeeded"
    api.machines.pop(1)
    for nth in range(api.calls[SOFTWARE] + 2, api.calls[SOFTWARE] + 12):
        api.fail(SOFTWARE, nth, 500)

    run = run_collection(engine, collector(api, retry_total=2))

    assert run.status == "partial" and run.marked_stale == 0
    [scope] = run.scope_results
    assert scope.scope_key == SCOPE and "HTTP 500" in scope.error
    with read_session(engine) as db:
        assert db.scalar(sa.select(sa.func.count()).select_from(Asset).where(Asset.retired_at.is_(None))) == 8
        # software the failed export did not reach again is kept (a partial scope removes nothing)
        assert db.scalar(sa.select(sa.func.count()).select_from(Installation)) == 8 + 7 * 3 + 2


def test_an_azure_vm_seen_by_azure_and_defender_is_one_asset(api: DefenderStandIn, engine: sa.Engine) -> None:
    azure = AzureCollector([ARM_SUBSCRIPTION], resource_types=["vm"],
                           client_factory=lambda _sub: client_for(RecordedArm(estate_routes())))
    assert run_collection(engine, azure).status == "succeeded"
    # web-win-01's vmId, as Defender's vmMetadata reports it (upper case, its own subscription spelling)
    api.machines[:] = [machine(1, "web-win-01.corp.example.com", "WindowsServer2022", "10.8760.20348.2582",
                               vm_id="3F1A8E2C-5B7D-4E9A-8C21-0D4F6A7B9E10")]
    api.software[:] = [inventory_row(api.machines[0], "microsoft", "edge", "126.0.2592.113")]

    assert run_collection(engine, collector(api)).status == "succeeded"

    with read_session(engine) as db:
        [vm] = db.scalars(sa.select(Asset).where(Asset.cloud_instance_id == "3f1a8e2c-5b7d-4e9a-8c21-0d4f6a7b9e10"))
        assert db.scalar(sa.select(sa.func.count()).select_from(Asset)) == 3     # Azure's three VMs, no more
        assert vm.natural_key.startswith("azure:vm:") and vm.source == "azure" and vm.region
        assert vm.attributes["defender_machine_id"] == api.machines[0]["id"]
        installed = dict(db.execute(sa.select(Product.name, Installation.source)
                                    .join(Installation, Installation.product_id == Product.id)
                                    .where(Installation.asset_id == vm.id)).all())
    assert installed["Microsoft Defender for Endpoint"] == "defender" and installed["edge"] == "defender"


def test_missing_permission_for_software_makes_the_scope_incomplete(api: DefenderStandIn) -> None:
    api.fail(SOFTWARE, 1, 403, mde_error("Forbidden", "Missing application roles: Software.Read.All"))

    [batch] = batches(collector(api))

    assert not batch.complete and "Software.Read.All" in batch.error and len(batch.assets) == 8
    [skipped] = batches(collector(api, software=False))
    assert skipped.complete and {s.name for s in skipped.software} == {"Microsoft Defender for Endpoint"}


def test_next_link_to_another_host_is_not_followed(api: DefenderStandIn) -> None:
    original = api._machines

    def hostile(request):  # type: ignore[no-untyped-def]
        response = original(request)
        body = json.loads(response.get_data())
        body["@odata.nextLink"] = "https://evil.example.com/api/machines?$skip=4"
        response.set_data(json.dumps(body))
        return response

    api._machines = hostile  # type: ignore[method-assign]
    [batch] = batches(collector(api))
    assert not batch.complete and "not sent there" in batch.error


# -- credentials: a real ClientSecretCredential answered by a recorded Entra ID -----------------

class _Raw:
    def close(self) -> None:
        pass


class RecordedEntraId(HttpTransport):
    """Entra ID's metadata documents and a token endpoint that refuses the client secret
    (AADSTS7000215), in the shapes login.microsoftonline.com answers with."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def send(self, request: Any, **kwargs: Any) -> HttpResponseImpl:
        self.urls.append(request.url)
        path = urlsplit(request.url).path
        authority = "https://login.microsoftonline.com"
        if path.endswith("/.well-known/openid-configuration"):
            status, body = 200, {
                "token_endpoint": f"{authority}/{TENANT}/oauth2/v2.0/token",
                "authorization_endpoint": f"{authority}/{TENANT}/oauth2/v2.0/authorize",
                "issuer": f"{authority}/{TENANT}/v2.0", "jwks_uri": f"{authority}/{TENANT}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                          "client_secret_basic"]}
        elif path.endswith("/discovery/instance"):
            status, body = 200, {"tenant_discovery_endpoint":
                                 f"{authority}/{TENANT}/v2.0/.well-known/openid-configuration",
                                 "api-version": "1.1", "metadata": [{"preferred_network": "login.microsoftonline.com",
                                                                     "preferred_cache": "login.windows.net",
                                                                     "aliases": ["login.microsoftonline.com"]}]}
        else:
            status, body = 401, {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                                     "in the request is the client secret value, not the client secret ID.",
                "error_codes": [7000215], "timestamp": "2024-07-19 04:00:00Z",
                "trace_id": "c0ffee00-0000-4000-8000-000000000001",
                "correlation_id": "c0ffee00-0000-4000-8000-000000000002"}
        headers = case_insensitive_dict({"Content-Type": "application/json; charset=utf-8"})
        response = HttpResponseImpl(request=request, internal_response=_Raw(), status_code=status,
                                    reason="OK" if status == 200 else "Unauthorized",
                                    content_type=headers["Content-Type"], headers=headers,
                                    stream_download_generator=None)
        response._content = json.dumps(body).encode()
        return response

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *args: object) -> None:
        pass


def refused_credential() -> Any:
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(TENANT, "11111111-2222-3333-4444-555555555555", "not-the-secret",
                                  transport=RecordedEntraId())


def test_a_refused_client_secret_stops_before_anything_is_read(api: DefenderStandIn) -> None:
    c = collector(api, credential=refused_credential())
    with pytest.raises(ConsoleCredentialsError, match="AADSTS7000215"):
        c.check_credentials()
    assert api.calls[MACHINES] == 0


def test_a_missing_machine_permission_is_a_credentials_error(api: DefenderStandIn) -> None:
    api.fail(MACHINES, 1, 403, mde_error("Forbidden", "Missing application roles: Machine.Read.All"))
    with pytest.raises(ConsoleCredentialsError, match="HTTP 403.*Machine.Read.All"):
        collector(api).check_credentials()


def test_base_url_and_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="https://"):
        DefenderCollector(base_url="http://api.securitycenter.microsoft.com", credential=object())
    for name in ("PLANB_COLLECT_DEFENDER", "PLANB_COLLECT_DEFENDER_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert defender.from_config() is None
    monkeypatch.setattr(defender, "CREDENTIAL_FACTORY", lambda: object())
    monkeypatch.setenv("PLANB_COLLECT_DEFENDER", "true")
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT.upper())
    configured = defender.from_config()
    assert configured is not None and configured.base_url == "https://api.securitycenter.microsoft.com"
    assert configured.scope_key == SCOPE


# -- the command --------------------------------------------------------------------------------

@pytest.fixture
def cli_env(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    return cli_env


def stored(url: str) -> tuple[int, list[str]]:
    engine = make_engine(url)
    try:
        with so.Session(engine) as db:
            return (db.scalar(sa.select(sa.func.count()).select_from(Asset)) or 0,
                    list(db.scalars(sa.select(CollectionRun.status).order_by(CollectionRun.id))))
    finally:
        engine.dispose()


def test_collect_defender_command(cli_env: str, api: DefenderStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defender, "CREDENTIAL_FACTORY", lambda: StandInCredential(api))
    result = CliRunner().invoke(main, ["collect", "defender", "--base-url", api.url])
    assert result.exit_code == 0, result.output + result.stderr
    assert SCOPE in result.output and "succeeded" in result.output
    assert stored(cli_env) == (8, ["succeeded"])


def test_collect_defender_refused_credentials_exit_1_and_write_nothing(cli_env: str, api: DefenderStandIn,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defender, "CREDENTIAL_FACTORY", refused_credential)
    result = CliRunner().invoke(main, ["collect", "defender", "--base-url", api.url])
    assert result.exit_code == 1
    assert "Defender for Endpoint credentials" in result.stderr and "AADSTS7000215" in result.stderr
    assert "nothing was written" in result.stderr
    assert stored(cli_env) == (0, []) and api.calls[MACHINES] == 0
