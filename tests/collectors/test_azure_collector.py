"""Azure collector against recorded ARM payloads served by an azure-core transport.

azure-mgmt-compute runs for real (pipeline, bearer auth, RetryPolicy, paging,
deserialisation); only the bytes come from ``tests/collectors/azure_payloads``.
"""
from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from collectors.aws import MissingIdentity
from collectors.azure import (
    AzureCollector,
    default_client_factory,
    from_config,
    resource_group_of,
    transform_vm,
    vm_key,
)
from collectors.base import ScopeBatch
from collectors.ingest import run_collection
from inventory.db import make_engine
from inventory.models import Asset, CollectionLock, Dependency, Installation, Product, ScopeState, Vendor
from tests.collectors.azure_payloads import (
    BASE_URL,
    SUBSCRIPTION,
    FakeCredential,
    RecordedArm,
    Reply,
    client_for,
    estate_routes,
    extensions_route,
    load,
    vm_list_route,
    vmss_list_route,
    vmss_vms_route,
)

WEB_WIN = vm_key(SUBSCRIPTION, "3f1a8e2c-5b7d-4e9a-8c21-0d4f6a7b9e10")
DB_LINUX = vm_key(SUBSCRIPTION, "a6c2e1f4-0b3d-4c5e-9f7a-1b2c3d4e5f60")
FLEX_VM = vm_key(SUBSCRIPTION, "0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a")
VMSS_0 = vm_key(SUBSCRIPTION, "42af9fdf-b906-4ad7-9905-8316209ff619")
VMSS_1 = vm_key(SUBSCRIPTION, "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f")
WEB_VMSS = f"azure:vmss:{SUBSCRIPTION}:rg-web/web-vmss"
FLEX_VMSS = f"azure:vmss:{SUBSCRIPTION}:rg-batch/batch-flex"
VM_SCOPE = f"azure:{SUBSCRIPTION}:vm"
VMSS_SCOPE = f"azure:{SUBSCRIPTION}:vmss"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def collector_for(transport: RecordedArm, subscriptions: list[str] | None = None, **kwargs: Any) -> AzureCollector:
    return AzureCollector(subscriptions or [SUBSCRIPTION], client_factory=lambda s: client_for(transport, s),
                          **kwargs)


def batches(collector: AzureCollector) -> dict[str, ScopeBatch]:
    messages: list[str] = []
    return {b.scope_key: b for b in collector.collect(messages.append)}


def assets_by_key(engine: sa.Engine) -> dict[str, Asset]:
    with so.Session(engine) as db:
        return {a.natural_key: a for a in db.scalars(sa.select(Asset))}


def installed(engine: sa.Engine, key: str) -> set[tuple[str, str, str | None]]:
    """(vendor, product, version) installed on one asset."""
    with so.Session(engine) as db:
        rows = db.execute(sa.select(Vendor.name, Product.name, Installation.version)
                          .join(Product, Product.vendor_id == Vendor.id)
                          .join(Installation, Installation.product_id == Product.id)
                          .join(Asset, Asset.id == Installation.asset_id)
                          .where(Asset.natural_key == key)).all()
    return {tuple(r) for r in rows}


def installation_attributes(engine: sa.Engine, key: str, product: str) -> dict | None:
    with so.Session(engine) as db:
        return db.scalar(sa.select(Installation.attributes)
                         .join(Product, Product.id == Installation.product_id)
                         .join(Asset, Asset.id == Installation.asset_id)
                         .where(Asset.natural_key == key, Product.name == product))


def edges(engine: sa.Engine) -> set[tuple[str, str, str, str]]:
    with so.Session(engine) as db:
        dependent = so.aliased(Asset)
        dependency = so.aliased(Asset)
        rows = db.execute(sa.select(dependent.natural_key, dependency.natural_key, Dependency.kind,
                                    Dependency.strength)
                          .join(dependent, dependent.id == Dependency.dependent_id)
                          .join(dependency, dependency.id == Dependency.dependency_id)).all()
    return {tuple(r) for r in rows}


# -- what one run reads --------------------------------------------------------------------------

def test_vms_are_read_across_pages_with_image_extensions_and_power_state() -> None:
    transport = RecordedArm(estate_routes())
    vm_batch = batches(collector_for(transport))[VM_SCOPE]

    assert vm_batch.complete and vm_batch.error is None
    by_key = {a.natural_key: a for a in vm_batch.assets}
    # page 2 (reached through nextLink) was followed; vmId is lower-cased in the key
    assert set(by_key) == {WEB_WIN, DB_LINUX, FLEX_VM}
    web = by_key[WEB_WIN]
    assert (web.kind, web.provider, web.account, web.region, web.zone) == (
        "vm", "azure", SUBSCRIPTION, "eastus", "1")
    assert web.cloud_instance_id == "3f1a8e2c-5b7d-4e9a-8c21-0d4f6a7b9e10"
    assert (web.os_family, web.hostname) == ("windows", "web-win-01")
    assert (web.environment, web.criticality, web.owner) == ("production", "high", "web-team")
    assert web.attributes["power_state"] == "running"
    assert web.attributes["resource_group"] == "rg-web"
    assert web.attributes["image"] == "MicrosoftWindowsServer:WindowsServer:2022-datacenter-azure-edition:20348.2227.240104"
    assert by_key[DB_LINUX].os_family == "linux"
    assert by_key[DB_LINUX].attributes["power_state"] == "deallocated"
    assert by_key[DB_LINUX].zone is None
    assert by_key[FLEX_VM].attributes["scale_set"].endswith("/virtualMachineScaleSets/batch-flex")

    # Neither an extension's handler version nor an image version is the product's version:
    # the product's version is unknown, what Azure said is kept as an attribute.
    software = {(s.asset_key, s.origin, s.publisher, s.name, s.version,
                 s.attributes.get("handler_version") or s.attributes.get("image_version"))
                for s in vm_batch.software}
    assert (WEB_WIN, "extension", "CrowdStrike.Falcon", "FalconSensorWindows", None, "1.0") in software
    assert (WEB_WIN, "extension", "Microsoft.Azure.Security", "IaaSAntimalware", None, "1.3") in software
    assert (WEB_WIN, "image", "MicrosoftWindowsServer", "WindowsServer 2022-datacenter-azure-edition",
            None, "20348.2227.240104") in software
    assert (DB_LINUX, "extension", "Qualys", "QualysAgentLinux", None, "1.6") in software
    assert (DB_LINUX, "image", "Canonical", "0001-com-ubuntu-server-jammy 22_04-lts-gen2",
            None, "22.04.202401090") in software
    # the SDK sent the bearer token from the credential on every request, and asked for power states
    assert all(auth == "Bearer fake-arm-token" for auth in transport.authorizations)
    assert vm_list_route(statusOnly="true").lower() in transport.requests


def test_scale_sets_become_groups_with_their_instances() -> None:
    vmss_batch = batches(collector_for(RecordedArm(estate_routes())))[VMSS_SCOPE]

    assert vmss_batch.complete
    by_key = {a.natural_key: a for a in vmss_batch.assets}
    assert set(by_key) == {WEB_VMSS, FLEX_VMSS, VMSS_0, VMSS_1}
    uniform = by_key[WEB_VMSS]
    assert (uniform.kind, uniform.min_up, uniform.os_family) == ("scale_set", 2, "linux")  # planb:min_up tag
    assert uniform.attributes["orchestration_mode"] == "Uniform"
    assert by_key[FLEX_VMSS].min_up == 1  # the default
    assert by_key[VMSS_1].attributes["power_state"] == "stopped"
    assert (by_key[VMSS_0].hostname, by_key[VMSS_0].os_name, by_key[VMSS_0].os_version) == (
        "web-vmss000000", "ubuntu", "24.04")
    member_edges = {(d.dependent_key, d.dependency_key, d.kind, d.strength) for d in vmss_batch.dependencies}
    assert member_edges == {
        (WEB_VMSS, VMSS_0, "member-of", "hard"),
        (WEB_VMSS, VMSS_1, "member-of", "hard"),
        # the Flexible member is a plain VM of the vm scope: only the edge lives here
        (FLEX_VMSS, FLEX_VM, "member-of", "hard"),
    }
    # Uniform instances carry the scale set's extensions
    assert {(s.asset_key, s.publisher, s.name) for s in vmss_batch.software if s.origin == "extension"} >= {
        (VMSS_0, "CrowdStrike.Falcon", "FalconSensorLinux"), (VMSS_1, "CrowdStrike.Falcon", "FalconSensorLinux")}


# -- through ingest --------------------------------------------------------------------------------

@pytest.mark.parametrize("db_url", ["sqlite_url", pytest.param("pg_url", marks=pytest.mark.postgres)])
def test_end_to_end_populates_inventory_and_second_run_is_unchanged(request: pytest.FixtureRequest,
                                                                     db_url: str) -> None:
    engine = make_engine(request.getfixturevalue(db_url))
    try:
        first = run_collection(engine, collector_for(RecordedArm(estate_routes())), now=T0)
        assert first.status == "succeeded", first.errors
        assert first.created > 0 and first.marked_stale == 0
        assets = assets_by_key(engine)
        assert {WEB_WIN, DB_LINUX, FLEX_VM, VMSS_0, VMSS_1, WEB_VMSS, FLEX_VMSS} <= set(assets)
        assert assets[WEB_WIN].source_scope == VM_SCOPE and assets[VMSS_0].source_scope == VMSS_SCOPE
        assert assets[WEB_VMSS].min_up == 2
        # extension publishers are attributed to vendors: CrowdStrike.Falcon → CrowdStrike's Falcon sensor
        # with the sensor's version unknown and the extension handler's version kept beside it
        assert ("CrowdStrike", "Falcon Sensor", None) in installed(engine, WEB_WIN)
        assert ("CrowdStrike", "Falcon Sensor", None) in installed(engine, VMSS_1)
        assert installation_attributes(engine, WEB_WIN, "Falcon Sensor") == {
            "handler_version": "1.0", "extension_type": "FalconSensorWindows", "extension_name": "FalconSensor"}
        assert {(WEB_VMSS, VMSS_0, "member-of", "hard"), (WEB_VMSS, VMSS_1, "member-of", "hard"),
                (FLEX_VMSS, FLEX_VM, "member-of", "hard")} <= edges(engine)

        second = run_collection(engine, collector_for(RecordedArm(estate_routes())), now=T0 + timedelta(hours=1))
        assert second.status == "succeeded", second.errors
        assert (second.created, second.updated, second.marked_stale) == (0, 0, 0)
        assert second.unchanged > 0
    finally:
        engine.dispose()


def test_vm_deleted_between_successful_runs_is_retired(engine: sa.Engine) -> None:
    assert run_collection(engine, collector_for(RecordedArm(estate_routes())), now=T0).status == "succeeded"

    routes = estate_routes()
    page1 = load("virtualMachines_listAll_page1.json")
    page1["value"] = [vm for vm in page1["value"] if vm["name"] != "db-linux-01"]
    routes[vm_list_route()] = [Reply(200, page1)]
    run = run_collection(engine, collector_for(RecordedArm(routes)), now=T0 + timedelta(hours=1))

    assert run.status == "succeeded"
    assert run.marked_stale == 1
    assets = assets_by_key(engine)
    assert assets[DB_LINUX].retired_at is not None
    assert assets[WEB_WIN].retired_at is None


def test_a_scope_held_by_another_run_is_refused_and_the_other_applied(engine: sa.Engine) -> None:
    with so.Session(engine) as db:  # a live collector process (this one) holds the vm scope
        db.add(CollectionLock(scope_key=VM_SCOPE, holder=f"{socket.gethostname()}:{os.getpid()}",
                              acquired_at=T0, expires_at=T0 + timedelta(days=3650)))
        db.commit()
    transport = RecordedArm(estate_routes())

    run = run_collection(engine, collector_for(transport), now=T0)

    assert run.status == "partial"
    scopes = {s.scope_key: s for s in run.outcomes}
    assert scopes[VM_SCOPE].status == "failed" and "being collected" in scopes[VM_SCOPE].error
    assets = assets_by_key(engine)
    assert WEB_WIN not in assets and {WEB_VMSS, VMSS_0, VMSS_1} <= set(assets)
    # the Flexible member belongs to the refused vm scope: its edge cannot resolve yet, so the
    # vmss scope is applied but partial (it retires nothing) until the vm scope has run
    assert scopes[VMSS_SCOPE].status == "partial" and "unknown asset" in scopes[VMSS_SCOPE].error


# -- failures below the scope ----------------------------------------------------------------------

def scope_state(engine: sa.Engine, scope_key: str) -> ScopeState:
    with so.Session(engine) as db:
        state = db.get(ScopeState, scope_key)
        assert state is not None
        db.expunge(state)
        return state


@pytest.mark.parametrize("status, payload", [(500, "error_InternalServerError.json"),
                                             (429, "error_TooManyRequests.json"),
                                             (403, "error_AuthorizationFailed.json")])
def test_failing_vm_extensions_leave_the_software_as_it_was(engine: sa.Engine, status: int, payload: str) -> None:
    """Extensions of one VM cannot be read (after azure-core's retries, or refused): the VMs are
    applied and retired as usual, that VM's software stays as it was, the scope is partial."""
    assert run_collection(engine, collector_for(RecordedArm(estate_routes())), now=T0).status == "succeeded"
    before = installed(engine, WEB_WIN)
    assert ("CrowdStrike", "Falcon Sensor", None) in before

    routes = estate_routes()
    page1 = load("virtualMachines_listAll_page1.json")
    page1["value"] = [vm for vm in page1["value"] if vm["name"] != "db-linux-01"]   # deleted since
    routes[vm_list_route()] = [Reply(200, page1)]
    routes[extensions_route("rg-web", "web-win-01")] = [Reply(status, load(payload))]
    transport = RecordedArm(routes)
    run = run_collection(engine, collector_for(transport), now=T0 + timedelta(hours=1))

    assert run.status == "partial"
    outcome = {o.scope_key: o for o in run.outcomes}[VM_SCOPE]
    assert outcome.status == "partial" and "VM extensions" in outcome.error and str(status) in outcome.error
    # refused: the VMs after it are not asked (they would be refused too) and are unread as well
    unread = sorted([WEB_WIN] + ([FLEX_VM] if status == 403 else []))
    assert outcome.software_unread == unread
    assets = assets_by_key(engine)
    assert assets[WEB_WIN].retired_at is None                 # applied
    assert assets[DB_LINUX].retired_at is not None            # and the scope still retires what is gone
    assert installed(engine, WEB_WIN) == before               # its software as it was
    assert scope_state(engine, VM_SCOPE).software_unread == unread
    if status == 403:
        assert transport.requests.count(extensions_route("rg-batch", "batch-flex_4b1c2d3e").lower()) == 0
    else:               # retried by azure-core, then given up on that VM only
        assert transport.requests.count(extensions_route("rg-web", "web-win-01").lower()) == 4


def test_failing_scale_set_instance_listing_keeps_its_members(engine: sa.Engine) -> None:
    assert run_collection(engine, collector_for(RecordedArm(estate_routes())), now=T0).status == "succeeded"
    routes = estate_routes()
    routes[vmss_vms_route("rg-web", "web-vmss", **{"$expand": "instanceView"})] = [
        Reply(500, load("error_InternalServerError.json"))]
    run = run_collection(engine, collector_for(RecordedArm(routes)), now=T0 + timedelta(hours=1))

    assert run.status == "partial"
    outcome = {o.scope_key: o for o in run.outcomes}[VMSS_SCOPE]
    assert outcome.status == "partial" and "web-vmss" in outcome.error and outcome.marked_stale == 0
    assert sorted(outcome.software_unread) == sorted([VMSS_0, VMSS_1])
    assets = assets_by_key(engine)
    assert assets[VMSS_0].retired_at is None and assets[VMSS_1].retired_at is None   # kept as they were
    assert {(WEB_VMSS, VMSS_0, "member-of", "hard"), (WEB_VMSS, VMSS_1, "member-of", "hard")} <= edges(engine)
    assert ("CrowdStrike", "Falcon Sensor", None) in installed(engine, VMSS_0)
    assert assets[WEB_VMSS].retired_at is None and assets[FLEX_VMSS].retired_at is None


def test_throttled_429_is_retried_honouring_retry_after() -> None:
    routes = estate_routes()
    routes[vm_list_route()] = [Reply(429, load("error_TooManyRequests.json"), {"Retry-After": "7"}),
                               *routes[vm_list_route()]]
    transport = RecordedArm(routes)

    vm_batch = batches(collector_for(transport))[VM_SCOPE]

    assert vm_batch.complete, vm_batch.error
    assert len(vm_batch.assets) == 3
    assert transport.requests.count(vm_list_route().lower()) == 2  # the 429, then the retry
    assert transport.sleeps == [7.0]  # azure-core waited what Retry-After said (transport.sleep is recorded)


def test_500_mid_pagination_leaves_scope_incomplete_and_retires_nothing(engine: sa.Engine) -> None:
    assert run_collection(engine, collector_for(RecordedArm(estate_routes())), now=T0).status == "succeeded"

    # Second run: page 1 no longer lists db-linux-01, and page 2 fails on every retry.
    routes = estate_routes()
    page1 = load("virtualMachines_listAll_page1.json")
    page1["value"] = [vm for vm in page1["value"] if vm["name"] != "db-linux-01"]
    routes[vm_list_route()] = [Reply(200, page1)]
    routes[vm_list_route(**{"$skiptoken": "page2"})] = [Reply(500, load("error_InternalServerError.json"))]
    transport = RecordedArm(routes)
    run = run_collection(engine, collector_for(transport), now=T0 + timedelta(hours=1))

    assert run.status == "partial"
    scopes = {s.scope_key: s for s in run.outcomes}
    assert scopes[VMSS_SCOPE].status == "succeeded"  # the other scope was applied
    assert scopes[VM_SCOPE].status != "succeeded"
    assert "500" in scopes[VM_SCOPE].error and "InternalServerError" in scopes[VM_SCOPE].error
    assert scopes[VM_SCOPE].marked_stale == 0
    assert assets_by_key(engine)[DB_LINUX].retired_at is None  # not seen, but the scope was incomplete
    # azure-core retried the failing page (retry_total=3 in the test client) before giving up
    assert transport.requests.count(vm_list_route(**{"$skiptoken": "page2"}).lower()) == 4


def test_denied_scale_sets_fail_only_their_scope() -> None:
    routes = estate_routes()
    routes[vmss_list_route()] = [Reply(403, load("error_AuthorizationFailed.json"))]

    result = batches(collector_for(RecordedArm(routes)))

    assert result[VM_SCOPE].complete
    assert not result[VMSS_SCOPE].complete
    assert "403 AuthorizationFailed" in result[VMSS_SCOPE].error


def test_vm_without_vmid_makes_scope_incomplete() -> None:
    routes = estate_routes()
    page2 = load("virtualMachines_listAll_page2.json")
    del page2["value"][0]["properties"]["vmId"]
    routes[vm_list_route(**{"$skiptoken": "page2"})] = [Reply(200, page2)]

    vm_batch = batches(collector_for(RecordedArm(routes)))[VM_SCOPE]

    assert not vm_batch.complete
    assert "MissingIdentity" in vm_batch.error and "vmId" in vm_batch.error
    assert {a.natural_key for a in vm_batch.assets} == {WEB_WIN, DB_LINUX}  # what was read is still upserted


def test_vm_deleted_before_its_extensions_are_listed_is_kept_without_extensions() -> None:
    routes = estate_routes()
    del routes[extensions_route("RG-Data", "db-linux-01")]  # → 404 ResourceNotFound

    vm_batch = batches(collector_for(RecordedArm(routes)))[VM_SCOPE]

    assert vm_batch.complete
    assert DB_LINUX in {a.natural_key for a in vm_batch.assets}
    assert not [s for s in vm_batch.software if s.asset_key == DB_LINUX and s.origin == "extension"]


def test_power_states_unavailable_keep_the_scope_complete() -> None:
    routes = estate_routes()
    routes[vm_list_route(statusOnly="true")] = [Reply(500, load("error_InternalServerError.json"))]
    messages: list[str] = []

    [vm_batch] = [b for b in collector_for(RecordedArm(routes)).collect(messages.append) if b.scope_key == VM_SCOPE]

    assert vm_batch.complete
    assert all("power_state" not in a.attributes for a in vm_batch.assets)
    assert any("power states unavailable" in m for m in messages)


def test_deadline_makes_the_scope_incomplete() -> None:
    ticks = iter(range(0, 10_000, 50))
    # one scope at a time: the ticking clock is shared by the scopes
    collector = collector_for(RecordedArm(estate_routes()), deadline_seconds=60, clock=lambda: next(ticks),
                              concurrency=1)

    result = batches(collector)

    assert not result[VM_SCOPE].complete and "deadline" in result[VM_SCOPE].error
    assert not result[VMSS_SCOPE].complete


def test_several_subscriptions_are_separate_scopes() -> None:
    other = "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"
    routes = {**estate_routes(), **estate_routes(other)}
    routes[vmss_list_route(other)] = [Reply(403, load("error_AuthorizationFailed.json", other))]

    result = batches(collector_for(RecordedArm(routes), [SUBSCRIPTION, other.upper()]))

    assert set(result) == {VM_SCOPE, VMSS_SCOPE, f"azure:{other}:vm", f"azure:{other}:vmss"}
    assert [k for k, b in result.items() if not b.complete] == [f"azure:{other}:vmss"]
    assert vm_key(other, "3f1a8e2c-5b7d-4e9a-8c21-0d4f6a7b9e10") in {
        a.natural_key for a in result[f"azure:{other}:vm"].assets}


# -- client construction, configuration -------------------------------------------------------------

def test_default_factory_uses_base_url_and_its_token_scope_for_sovereign_clouds() -> None:
    gov = "https://management.usgovcloudapi.net"
    transport = RecordedArm(estate_routes(base_url=gov))
    credential = FakeCredential()
    factory = default_client_factory(gov, credential=credential, retry_total=2, timeout=30,
                                     client_kwargs={"transport": transport})

    result = batches(AzureCollector([SUBSCRIPTION], client_factory=factory, base_url=gov))

    assert all(b.complete for b in result.values())
    assert all(url.startswith(gov + "/") for url in transport.urls)
    assert credential.scopes and set(credential.scopes) == {(gov + "/.default",)}


def test_default_factory_bounds_retries() -> None:
    routes = estate_routes()
    routes[vmss_list_route()] = [Reply(429, load("error_TooManyRequests.json"), {"Retry-After": "1"})]
    transport = RecordedArm(routes)
    factory = default_client_factory(BASE_URL, credential=FakeCredential(), retry_total=2, timeout=30,
                                     client_kwargs={"transport": transport})

    result = batches(AzureCollector([SUBSCRIPTION], client_factory=factory, resource_types=["vmss"]))

    assert not result[VMSS_SCOPE].complete and "429" in result[VMSS_SCOPE].error
    assert transport.requests.count(vmss_list_route().lower()) == 3  # first try + retry_total
    assert transport.sleeps == [1.0, 1.0]


def test_transform_vm_requires_vm_id() -> None:
    vm = load("virtualMachines_listAll_page1.json")["value"][0]
    del vm["properties"]["vmId"]
    with pytest.raises(MissingIdentity):
        transform_vm(vm, SUBSCRIPTION, [], None)


def test_resource_group_is_read_from_the_resource_id() -> None:
    assert resource_group_of(f"/subscriptions/{SUBSCRIPTION}/resourceGroups/RG-Data/providers/"
                             "Microsoft.Compute/virtualMachines/db") == "RG-Data"
    with pytest.raises(MissingIdentity):
        resource_group_of("/subscriptions/x/providers/Microsoft.Compute/virtualMachines/db")


def test_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLANB_COLLECT_AZURE_SUBSCRIPTIONS", raising=False)
    monkeypatch.delenv("PLANB_AZURE_BASE_URL", raising=False)
    assert from_config() is None

    monkeypatch.setattr("collectors.azure.CLIENT_FACTORY", lambda sub, base: client_for(RecordedArm({}), sub))
    monkeypatch.setenv("PLANB_COLLECT_AZURE_SUBSCRIPTIONS", f"{SUBSCRIPTION}, 0B1C2D3E-4F5A-4B6C-8D7E-9F0A1B2C3D4E")
    monkeypatch.setenv("PLANB_AZURE_BASE_URL", "https://management.chinacloudapi.cn")
    collector = from_config()
    assert collector is not None
    assert collector.subscriptions == [SUBSCRIPTION, "0b1c2d3e-4f5a-4b6c-8d7e-9f0a1b2c3d4e"]
    assert collector.base_url == "https://management.chinacloudapi.cn"
    assert "management.chinacloudapi.cn" in collector.describe_scope()
