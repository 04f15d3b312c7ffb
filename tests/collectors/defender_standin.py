"""A loopback stand-in for the Microsoft Defender for Endpoint API (pytest-httpserver, 127.0.0.1).

* ``GET /api/machines`` (``$top``, ``$skip``) -> ``{"@odata.context", "value": [machines],
  "@odata.nextLink"}`` with the Machine entity's fields (id, computerDnsName, firstSeen,
  lastSeen, osPlatform, version, osBuild, osProcessor/osArchitecture, lastIpAddress,
  lastExternalIpAddress, agentVersion, healthStatus, onboardingStatus, rbacGroupId/Name,
  riskScore, exposureLevel, aadDeviceId, machineTags, vmMetadata {vmId, cloudProvider,
  resourceId, subscriptionId});
* ``GET /api/machines/SoftwareInventoryByMachine`` (``pageSize``, ``$skiptoken``) -> the
  export's JSON pages: deviceId, deviceName, osPlatform, rbacGroupName, softwareVendor,
  softwareName, softwareVersion, numberOfWeaknesses, diskPaths, registryPaths,
  softwareFirstSeenTimestamp, endOfSupportStatus, endOfSupportDate;
* without a live bearer token: 401 ``{"error": {"code": "Unauthorized", "message": ...}}``.

``StandInCredential`` is the TokenCredential the tests hand in (there is no loopback Entra
ID): each ``get_token`` issues a new token the stand-in accepts.
"""
from __future__ import annotations

import base64
import json
import time
from collections import defaultdict
from typing import Any

from azure.core.credentials import AccessToken
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
SUBSCRIPTION = "5f2b8c1e-7d3a-4e9b-a6c4-2d8e1f0b9a73"
MACHINES = "/api/machines"
SOFTWARE = "/api/machines/SoftwareInventoryByMachine"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers={"Content-Type": "application/json", **(headers or {})})


def mde_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "target": "c0ffee00-0000-4000-8000-000000000000"}}


def machine(n: int, dns: str, platform: str, agent_version: str, *, vm_id: str | None = None,
            onboarding: str = "Onboarded", last_seen: str = "2024-07-19T04:02:00.0000000Z",
            build: int | None = 20348, version: str = "21H2") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": f"{n:040x}", "computerDnsName": dns, "firstSeen": "2023-03-01T09:00:00.0000000Z",
        "lastSeen": last_seen, "osPlatform": platform, "osVersion": None, "osProcessor": "x64",
        "version": version, "lastIpAddress": "10.1.0.4", "lastExternalIpAddress": "203.0.113.30",
        "agentVersion": agent_version, "osBuild": build, "healthStatus": "Active", "deviceValue": "Normal",
        "rbacGroupId": 42, "rbacGroupName": "Servers", "riskScore": "Low", "exposureLevel": "Medium",
        "isAadJoined": False, "aadDeviceId": None, "machineTags": ["prod"], "defenderAvStatus": "Updated",
        "onboardingStatus": onboarding, "osArchitecture": "64-bit", "managedBy": "MicrosoftDefenderForEndpoint",
        "managedByStatus": "Success", "ipAddresses": [{"ipAddress": "10.1.0.4", "macAddress": "000D3A123456",
                                                       "type": "Ethernet", "operationalStatus": "Up"}],
        "vmMetadata": None,
    }
    if vm_id:
        entry["vmMetadata"] = {"vmId": vm_id, "cloudProvider": "Azure", "subscriptionId": SUBSCRIPTION,
                               "resourceId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-app/providers/"
                                             f"Microsoft.Compute/virtualMachines/{dns.split('.')[0]}"}
    return entry


def inventory_row(m: dict[str, Any], vendor: str, name: str, version: str) -> dict[str, Any]:
    return {"deviceId": m["id"], "rbacGroupName": m["rbacGroupName"], "deviceName": m["computerDnsName"],
            "osPlatform": m["osPlatform"], "softwareVendor": vendor, "softwareName": name,
            "softwareVersion": version, "numberOfWeaknesses": 0, "diskPaths": [], "registryPaths": [],
            "softwareFirstSeenTimestamp": "2023-03-01 09:10:00", "endOfSupportStatus": "None",
            "endOfSupportDate": None}


class StandInCredential:
    """A TokenCredential issuing tokens the stand-in accepts; records the scopes asked for."""

    def __init__(self, stand_in: DefenderStandIn) -> None:
        self.stand_in = stand_in
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        token = f"mde-token-{len(self.scopes)}"
        self.stand_in.live_tokens.add(token)
        return AccessToken(token, int(time.time()) + 3600)


class DefenderStandIn:
    def __init__(self, server: HTTPServer, machines: list[dict[str, Any]],
                 software: list[dict[str, Any]] | None = None) -> None:
        self.server = server
        self.machines = machines
        self.software = software or []
        self.live_tokens: set[str] = set()
        self.calls: dict[str, int] = defaultdict(int)
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.stamps: list[tuple[str, float]] = []
        self.faults: dict[tuple[str, int], tuple[int, Any, dict[str, str]]] = {}
        self.expiries: set[tuple[str, int]] = set()
        server.expect_request(SOFTWARE, method="GET").respond_with_handler(self._guarded(SOFTWARE))
        server.expect_request(MACHINES, method="GET").respond_with_handler(self._guarded(MACHINES))

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def fail(self, path: str, nth: int, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.faults[(path, nth)] = (status, body if body is not None else mde_error("InternalServerError", "injected"),
                                    headers or {})

    def expire_tokens_at(self, path: str, nth: int) -> None:
        self.expiries.add((path, nth))

    def _guarded(self, path: str):  # type: ignore[no-untyped-def]
        def handler(request: Request) -> Response:
            self.calls[path] += 1
            self.queries.append((path, dict(request.args)))
            self.stamps.append((path, time.monotonic()))
            if (path, self.calls[path]) in self.expiries:
                self.live_tokens.clear()
            if (path, self.calls[path]) in self.faults:
                status, body, headers = self.faults[(path, self.calls[path])]
                return _json(status, body, headers)
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.live_tokens:
                return _json(401, mde_error("Unauthorized", "Authorization token is invalid or expired"))
            return self._machines(request) if path == MACHINES else self._software(request)
        return handler

    def _machines(self, request: Request) -> Response:
        top = int(request.args.get("$top") or 10000)
        skip = int(request.args.get("$skip") or 0)
        page = self.machines[skip:skip + top]
        body: dict[str, Any] = {"@odata.context": f"{self.url}/api/$metadata#Machines", "value": page}
        if skip + top < len(self.machines):
            body["@odata.nextLink"] = f"{self.url}{MACHINES}?$top={top}&$skip={skip + top}"
        return _json(200, body)

    def _software(self, request: Request) -> Response:
        args = {k.lower(): v for k, v in request.args.items()}   # the nextLink spells it "pagesize"
        size = int(args.get("pagesize") or 50000)
        token = args.get("$skiptoken")
        start = json.loads(base64.urlsafe_b64decode(token))["LineStoppedAt"] if token else 0
        page = self.software[start:start + size]
        body: dict[str, Any] = {
            "@odata.context": f"{self.url}/api/$metadata#Collection(microsoft.windowsDefenderATP.api.AssetSoftware)",
            "value": page}
        if start + size < len(self.software):
            next_token = base64.urlsafe_b64encode(json.dumps({"ExportFileIndex": 0, "LineStoppedAt": start + size})
                                          .encode()).decode()
            body["@odata.nextLink"] = f"{self.url}{SOFTWARE}?pagesize={size}&$skiptoken={next_token}"
        return _json(200, body)
