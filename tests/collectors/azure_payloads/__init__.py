"""Recorded Azure Resource Manager payloads and an azure-core transport that serves them.

The JSON files here follow the shapes of the examples in
``Azure/azure-rest-api-specs`` (``specification/compute/resource-manager/
Microsoft.Compute/.../examples``: VirtualMachine_ListAll_MaximumSet_Gen,
VirtualMachineExtension_List_MaximumSet_Gen, VirtualMachineScaleSet_ListAll,
VirtualMachineScaleSetVM_List_MaximumSet_Gen, VirtualMachine_Get_InstanceView)
with realistic values; ``{subscriptionId}`` and ``{baseUrl}`` are filled in
when loaded.  ``RecordedArm`` plugs into ``ComputeManagementClient(transport=...)``
so azure-mgmt-compute runs its real pipeline (auth, retry, paging) and its real
deserialisation against them; nothing leaves the process.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict

HERE = Path(__file__).parent
BASE_URL = "https://management.azure.test"
SUBSCRIPTION = "8f2c6b1e-3d4a-4b5c-9e7f-0a1b2c3d4e5f"


def load(name: str, subscription: str = SUBSCRIPTION, base_url: str = BASE_URL) -> dict[str, Any]:
    text = (HERE / name).read_text()
    return json.loads(text.replace("{subscriptionId}", subscription).replace("{baseUrl}", base_url))


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def ok(name: str, subscription: str = SUBSCRIPTION, base_url: str = BASE_URL) -> Reply:
    return Reply(200, load(name, subscription, base_url))


def route(path: str, **query: str) -> str:
    """The routing key ``RecordedArm`` uses: lower-cased path + sorted query without api-version."""
    return _key(path.lower(), sorted((k.lower(), v) for k, v in query.items()))


def _key(path: str, query: list[tuple[str, str]]) -> str:
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")


def vm_list_route(subscription: str = SUBSCRIPTION, **query: str) -> str:
    return route(f"/subscriptions/{subscription}/providers/Microsoft.Compute/virtualMachines", **query)


def extensions_route(resource_group: str, vm: str, subscription: str = SUBSCRIPTION) -> str:
    return route(f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
                 f"Microsoft.Compute/virtualMachines/{vm}/extensions")


def vmss_list_route(subscription: str = SUBSCRIPTION) -> str:
    return route(f"/subscriptions/{subscription}/providers/Microsoft.Compute/virtualMachineScaleSets")


def vmss_vms_route(resource_group: str, vmss: str, subscription: str = SUBSCRIPTION, **query: str) -> str:
    return route(f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
                 f"Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines", **query)


def flex_filter(subscription: str = SUBSCRIPTION) -> str:
    return (f"'virtualMachineScaleSet/id' eq '/subscriptions/{subscription}/resourceGroups/rg-batch/"
            "providers/Microsoft.Compute/virtualMachineScaleSets/batch-flex'")


def estate_routes(subscription: str = SUBSCRIPTION, base_url: str = BASE_URL) -> dict[str, list[Reply]]:
    """A subscription with 3 VMs over 2 ListAll pages, a Uniform and a Flexible scale set."""
    def r(name: str) -> list[Reply]:
        return [ok(name, subscription, base_url)]

    return {
        vm_list_route(subscription): r("virtualMachines_listAll_page1.json"),
        vm_list_route(subscription, **{"$skiptoken": "page2"}): r("virtualMachines_listAll_page2.json"),
        vm_list_route(subscription, statusOnly="true"): r("virtualMachines_listAll_statusOnly.json"),
        vm_list_route(subscription, **{"$filter": flex_filter(subscription)}):
            r("virtualMachines_listAll_flexMembers.json"),
        extensions_route("rg-web", "web-win-01", subscription): r("virtualMachineExtensions_list_web-win-01.json"),
        extensions_route("RG-Data", "db-linux-01", subscription):
            r("virtualMachineExtensions_list_db-linux-01.json"),
        extensions_route("rg-batch", "batch-flex_4b1c2d3e", subscription):
            r("virtualMachineExtensions_list_batch-flex_4b1c2d3e.json"),
        vmss_list_route(subscription): r("virtualMachineScaleSets_listAll.json"),
        vmss_vms_route("rg-web", "web-vmss", subscription, **{"$expand": "instanceView"}):
            r("virtualMachineScaleSetVMs_list_web-vmss_page1.json"),
        vmss_vms_route("rg-web", "web-vmss", subscription, **{"$expand": "instanceView", "$skiptoken": "vmss-page2"}):
            r("virtualMachineScaleSetVMs_list_web-vmss_page2.json"),
    }


class _Raw:
    def close(self) -> None:
        pass


class RecordedArm(HttpTransport):
    """Serves ``routes`` (key → replies, consumed in order, the last one repeating).

    Records every request (``requests``: routing keys, ``urls``) and every
    retry sleep azure-core asks for (``sleeps``) without sleeping.  Unknown
    routes answer 404 in ARM's error shape.
    """

    def __init__(self, routes: dict[str, list[Reply]]) -> None:
        self.routes = {k.lower(): list(v) for k, v in routes.items()}
        self.requests: list[str] = []
        self.urls: list[str] = []
        self.authorizations: list[str | None] = []
        self.sleeps: list[float] = []

    def send(self, request: Any, **kwargs: Any) -> HttpResponseImpl:
        parts = urlsplit(request.url)
        query = sorted((k.lower(), v) for k, v in parse_qsl(parts.query) if k.lower() != "api-version")
        key = _key(parts.path.lower(), query).lower()
        self.requests.append(key)
        self.urls.append(request.url)
        self.authorizations.append(request.headers.get("Authorization"))
        replies = self.routes.get(key)
        if not replies:
            reply = Reply(404, {"error": {"code": "ResourceNotFound", "message": f"no recorded reply for {key}"}})
        else:
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
        body = b"" if reply.body is None else json.dumps(reply.body).encode()
        headers = case_insensitive_dict({"Content-Type": "application/json; charset=utf-8",
                                         "x-ms-request-id": f"req-{len(self.requests)}", **reply.headers})
        response = HttpResponseImpl(request=request, internal_response=_Raw(), status_code=reply.status,
                                    reason={200: "OK", 404: "Not Found", 429: "Too Many Requests",
                                            500: "Internal Server Error", 403: "Forbidden"}.get(reply.status, ""),
                                    content_type=headers["Content-Type"], headers=headers,
                                    stream_download_generator=None)
        response._content = body  # the whole body is in memory, as after a read()
        return response

    def sleep(self, duration: float) -> None:
        self.sleeps.append(duration)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *args: object) -> None:
        pass


class FakeCredential:
    """A TokenCredential that hands out a fixed token and records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("fake-arm-token", int(time.time()) + 3600)


def client_for(transport: RecordedArm, subscription: str = SUBSCRIPTION, base_url: str = BASE_URL,
               credential: FakeCredential | None = None, retry_total: int = 3) -> Any:
    """A real ComputeManagementClient whose HTTP goes to ``transport``; tiny retry backoff."""
    from azure.core.pipeline.policies import RetryPolicy
    from azure.mgmt.compute import ComputeManagementClient

    return ComputeManagementClient(credential or FakeCredential(), subscription, base_url=base_url,
                                   transport=transport,
                                   retry_policy=RetryPolicy(retry_total=retry_total, retry_backoff_factor=0.001))
