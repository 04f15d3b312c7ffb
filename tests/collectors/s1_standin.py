"""A loopback stand-in for the SentinelOne management API v2.1 (pytest-httpserver, 127.0.0.1).

``GET /web/api/v2.1/agents`` with ``Authorization: ApiToken <token>``, ``limit`` (1-1000)
and ``cursor`` answers ``{"data": [agents], "pagination": {"nextCursor": str|null,
"totalItems": n}}`` with the agent fields of the API's ``AgentViewSchema`` (computerName,
osType, osName, osRevision, agentVersion, machineType, cloudProviders {provider:
{cloudInstanceId, cloudAccount, cloudLocation, ...}}, lastActiveDate, networkInterfaces,
tags {sentinelone: [{key, value}]}, accountId/siteId/groupId and their names...).  A bad
token gets 401 ``{"errors": [{"code": 4010010, "title": "Authentication Failed", ...}]}``.
Faults are injected per nth call.
"""
from __future__ import annotations

import base64
import json
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

TOKEN = "eyJraWQiOiJ0ZXN0IiwiYWxnIjoiRVMyNTYifQ.planb-test-token"
ACCOUNT = "1234567890123456789"
AGENTS = "/web/api/v2.1/agents"


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers={"Content-Type": "application/json", **(headers or {})})


def s1_error(code: int, title: str, detail: str | None = None) -> dict[str, Any]:
    return {"errors": [{"code": code, "detail": detail, "title": title}]}


def agent(n: int, name: str, os_type: str, version: str, *, account: str = ACCOUNT, cloud: dict[str, Any] | None = None,
          machine_type: str = "server", last_active: str = "2024-07-19T04:01:00.000000Z", **extra: Any) -> dict[str, Any]:
    os_names = {"windows": ("Windows Server 2019 Datacenter", "17763"), "linux": ("Ubuntu 22.04.4 LTS", "5.15.0-1064"),
                "macos": ("macOS Sonoma", "14.6.1")}
    os_name, revision = os_names[os_type]
    entry: dict[str, Any] = {
        "id": str(1900000000000000000 + n), "uuid": f"{n:08x}-aaaa-4bbb-8ccc-{n:012x}",
        "computerName": name, "osType": os_type, "osName": os_name, "osRevision": revision, "osArch": "64 bit",
        "agentVersion": version, "machineType": machine_type, "accountId": account, "accountName": "Skyward",
        "siteId": "1111111111111111111", "siteName": "Default site", "groupId": "2222222222222222222",
        "groupName": "Servers", "isActive": True, "isDecommissioned": False, "isUninstalled": False,
        "isUpToDate": version.startswith("23.4"), "lastActiveDate": last_active,
        "registeredAt": "2023-02-01T10:00:00.000000Z", "createdAt": "2023-02-01T10:00:00.000000Z",
        "updatedAt": last_active, "networkStatus": "connected", "domain": "corp",
        "externalIp": "203.0.113.20", "lastIpToMgmt": "10.0.1.20", "serialNumber": f"S1-{n:06d}",
        "modelName": "Amazon EC2 m5.large" if cloud else "PowerEdge R650", "cpuCount": 2, "coreCount": 2,
        "totalMemory": 8192, "mitigationMode": "protect", "mitigationModeSuspicious": "detect",
        "networkInterfaces": [{"id": str(n), "name": "eth0", "inet": ["10.0.1.20"], "inet6": [],
                               "physical": f"0a:00:00:00:00:{n:02x}"}],
        "tags": {"sentinelone": [{"key": "env", "value": "prod", "id": "1", "assignedAt": last_active}]},
        "cloudProviders": cloud or {},
    }
    entry.update(extra)
    return entry


class S1StandIn:
    def __init__(self, server: HTTPServer, agents: list[dict[str, Any]]) -> None:
        self.server = server
        self.agents = agents
        self.token = TOKEN
        self.calls = 0
        self.queries: list[dict[str, str]] = []
        self.faults: dict[int, tuple[int, Any, dict[str, str]]] = {}
        self.revoke_at: int | None = None
        server.expect_request(AGENTS, method="GET").respond_with_handler(self._agents)

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def fail(self, nth: int, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        self.faults[nth] = (status, body if body is not None else s1_error(5000000, "Server Error"), headers or {})

    def _agents(self, request: Request) -> Response:
        self.calls += 1
        self.queries.append(dict(request.args))
        if self.revoke_at is not None and self.calls >= self.revoke_at:
            self.token = "expired"
        if self.calls in self.faults:
            status, body, headers = self.faults[self.calls]
            return _json(status, body, headers)
        if request.headers.get("Authorization") != f"ApiToken {self.token}":
            return _json(401, s1_error(4010010, "Authentication Failed"))
        limit = int(request.args.get("limit") or 10)
        if not 1 <= limit <= 1000:
            return _json(400, s1_error(4000010, "Validation Error", "limit: must be between 1 and 1000"))
        cursor = request.args.get("cursor")
        start = int(base64.b64decode(cursor).decode().split(":")[1]) if cursor else 0
        page = self.agents[start:start + limit]
        end = start + len(page)
        next_cursor = base64.b64encode(f"id:{end}:asc".encode()).decode() if end < len(self.agents) else None
        return _json(200, {"data": page, "pagination": {"nextCursor": next_cursor, "totalItems": len(self.agents)}})
