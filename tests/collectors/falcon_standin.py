"""A loopback stand-in for the CrowdStrike Falcon API (pytest-httpserver on 127.0.0.1).

It serves the documented shapes FalconPy reads:

* ``POST /oauth2/token`` (form ``client_id`` / ``client_secret``) -> 201 ``{"access_token",
  "token_type": "bearer", "expires_in": 1799}`` with ``X-Cs-Region``; wrong credentials ->
  403 ``{"meta", "errors": [{"code": 403, "message": "Failed to issue access token - Not
  Authorized"}], "resources": []}``;
* ``GET /devices/queries/devices-scroll/v1`` (``limit``, ``offset``, ``filter``) -> ``{"meta":
  {"query_time", "pagination": {"offset", "expires_at", "total", "limit"}, "powered_by",
  "trace_id"}, "resources": [ids], "errors": []}`` -- the offset is an opaque token, and is
  returned on the last page too (only ``total`` says the scroll is over);
* ``GET /devices/entities/devices/v2?ids=..`` (at most 100) -> ``{"meta", "resources":
  [device details], "errors": []}`` (fields as in FalconPy's ``DeviceapiDeviceSwagger``);
* ``GET /policy/entities/sensor-update/v2?ids=..`` -> sensor update policies (id, name,
  platform_name, enabled, settings {build, stage, sensor_version...}, groups...);
* any other call without a live bearer token -> 401 ``access denied, invalid bearer token``.

Faults are injected per (path, nth call): a status, headers and body replace the answer.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

CLIENT_ID = "0123456789abcdef0123456789abcdef"
CLIENT_SECRET = "planb-test-secret-0123456789abcdefghij"
CID = "C0FFEE0123456789ABCDEF0123456789"

SCROLL = "/devices/queries/devices-scroll/v1"
DETAILS = "/devices/entities/devices/v2"
POLICIES = "/policy/entities/sensor-update/v2"
TOKEN = "/oauth2/token"


def _meta(**extra: Any) -> dict[str, Any]:
    return {"query_time": 0.004, "powered_by": "device-api", "trace_id": str(uuid.uuid4()), **extra}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers={"Content-Type": "application/json", **(headers or {})})


def falcon_error(status: int, message: str) -> dict[str, Any]:
    return {"meta": _meta(powered_by="crowdstrike-api-gateway"), "errors": [{"code": status, "message": message}],
            "resources": []}


def device(aid: str, hostname: str, platform: str, agent_version: str, *, cid: str = CID,
           instance_id: str | None = None, service_provider: str | None = None, account: str | None = None,
           zone: str | None = None, policy_id: str | None = None, last_seen: str = "2024-07-19T04:05:00Z",
           tags: Iterable[str] = (), domain: str | None = None, serial: str | None = None) -> dict[str, Any]:
    """A host as GET /devices/entities/devices/v2 returns it."""
    windows = platform == "Windows"
    os_fields = {
        "Windows": {"os_version": "Windows Server 2022", "os_product_name": "Windows Server 2022 Datacenter",
                    "os_build": "20348", "kernel_version": "10.0.20348.2582", "major_version": "10",
                    "minor_version": "0", "platform_id": "0", "product_type": "3", "product_type_desc": "Server"},
        "Linux": {"os_version": "RHEL 9.4", "kernel_version": "5.14.0-427.13.1.el9_4.x86_64",
                  "major_version": "5", "minor_version": "14", "platform_id": "3", "product_type": "3",
                  "product_type_desc": "Server"},
        "Mac": {"os_version": "Sonoma (14)", "os_product_name": "macOS", "os_build": "23G93",
                "kernel_version": "23.6.0", "major_version": "23", "minor_version": "6", "platform_id": "1",
                "product_type": "1", "product_type_desc": "Workstation"},
    }[platform]
    entry: dict[str, Any] = {
        "device_id": aid, "cid": cid, "agent_load_flags": "0", "agent_local_time": last_seen.replace("Z", ".000Z"),
        "agent_version": agent_version, "bios_manufacturer": "Amazon EC2" if instance_id else "Dell Inc.",
        "bios_version": "1.0", "config_id_base": "65994763", "config_id_build": agent_version.split(".")[2],
        "config_id_platform": "3", "cpu_signature": "329300", "external_ip": "203.0.113.10",
        "mac_address": "0a-1b-2c-" + aid[:2] + "-" + aid[2:4] + "-" + aid[4:6],
        "hostname": hostname, "first_seen": "2023-01-10T09:00:00Z", "last_seen": last_seen,
        "local_ip": "10.0.0.10", "platform_name": platform, "policies": [], "reduced_functionality_mode": "no",
        "groups": [], "group_hash": "0" * 64, "provision_status": "Provisioned",
        "serial_number": serial or f"ec2{aid[:13]}", "status": "normal",
        "system_manufacturer": "Amazon EC2" if instance_id else "Dell Inc.",
        "system_product_name": "m5.large" if instance_id else "PowerEdge R650",
        "tags": list(tags), "modified_timestamp": last_seen, "meta": {"version": "6433"},
        **os_fields,
    }
    if windows:
        entry["machine_domain"] = domain or "corp.example.com"
        entry["site_name"] = "Default-First-Site-Name"
    if instance_id:
        entry.update(instance_id=instance_id, service_provider=service_provider or "AWS_EC2_V2",
                     service_provider_account_id=account or "123456789012")
        if zone:
            entry["zone_group"] = zone
    if policy_id:
        entry["device_policies"] = {
            "prevention": {"policy_type": "prevention", "policy_id": "prev" + policy_id[4:], "applied": True},
            "sensor_update": {"policy_type": "sensor-update", "policy_id": policy_id, "applied": True,
                              "settings_hash": "65994763|n|tagged|1", "assigned_date": "2024-01-10T09:00:00Z",
                              "applied_date": "2024-01-10T09:05:00Z", "uninstall_protection": "ENABLED"}}
    return entry


def policy(policy_id: str, name: str, build: str = "n|tagged|1") -> dict[str, Any]:
    """A sensor update policy as GET /policy/entities/sensor-update/v2 returns it."""
    return {"id": policy_id, "cid": CID.lower(), "name": name, "description": f"{name} ring",
            "platform_name": "Windows", "groups": [], "enabled": True,
            "created_by": "admin@example.com", "created_timestamp": "2023-01-10T09:00:00Z",
            "modified_by": "admin@example.com", "modified_timestamp": "2024-06-01T09:00:00Z",
            "settings": {"build": build, "stage": "prod", "sensor_version": "", "uninstall_protection": "ENABLED",
                         "variants": [], "scheduler": {"enabled": False, "timezone": "Etc/UTC",
                                                      "schedules": []}}}


@dataclass
class Fault:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FalconStandIn:
    """The Falcon API for one customer; ``devices`` and ``policies`` can change between runs."""

    def __init__(self, server: HTTPServer, devices: list[dict[str, Any]],
                 policies: list[dict[str, Any]] | None = None) -> None:
        self.server = server
        self.devices = devices
        self.policies = policies or []
        self.live_tokens: set[str] = set()
        self.tokens_issued = 0
        self.calls: dict[str, int] = defaultdict(int)
        self.faults: dict[tuple[str, int], Fault] = {}
        self.expiries: set[tuple[str, int]] = set()
        self.requests: list[tuple[str, str]] = []   # (path, query string) in order
        self.id_batches: list[int] = []
        server.expect_request(TOKEN, method="POST").respond_with_handler(self._token)
        for path in (SCROLL, DETAILS, POLICIES):
            server.expect_request(path, method="GET").respond_with_handler(self._guarded(path))

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def fail(self, path: str, nth: int, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer the ``nth`` call (1-based) of ``path`` with this instead."""
        self.faults[(path, nth)] = Fault(status, body if body is not None else falcon_error(status, "injected"),
                                         headers or {})

    def throttle(self, path: str, nth: int, retry_after_epoch: int) -> None:
        self.fail(path, nth, 429, falcon_error(429, "API rate limit exceeded."),
                  {"X-RateLimit-Limit": "6000", "X-RateLimit-Remaining": "0",
                   "X-RateLimit-RetryAfter": str(retry_after_epoch)})

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (what an expired token looks like)."""
        self.live_tokens.clear()

    def expire_tokens_at(self, path: str, nth: int) -> None:
        """The tokens expire just before the ``nth`` call of ``path`` is answered."""
        self.expiries.add((path, nth))

    # -- handlers -------------------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        self.calls[TOKEN] += 1
        if request.form.get("client_id") != CLIENT_ID or request.form.get("client_secret") != CLIENT_SECRET:
            return _json(403, falcon_error(403, "Failed to issue access token - Not Authorized"),
                         {"X-Cs-Region": "us-1"})
        self.tokens_issued += 1
        token = f"token-{self.tokens_issued}-{uuid.uuid4().hex}"
        self.live_tokens.add(token)
        return _json(201, {"access_token": token, "token_type": "bearer", "expires_in": 1799},
                     {"X-Cs-Region": "us-1", "X-Ratelimit-Limit": "300", "X-Ratelimit-Remaining": "299"})

    def _guarded(self, path: str):  # type: ignore[no-untyped-def]
        def handler(request: Request) -> Response:
            self.calls[path] += 1
            self.requests.append((path, request.query_string.decode()))
            if (path, self.calls[path]) in self.expiries:
                self.expire_tokens()
            fault = self.faults.get((path, self.calls[path]))
            if fault is not None:
                return _json(fault.status, fault.body, fault.headers)
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.live_tokens:
                return _json(401, falcon_error(401, "access denied, invalid bearer token"))
            return {SCROLL: self._scroll, DETAILS: self._details, POLICIES: self._policies}[path](request)
        return handler

    def _matching(self, fql: str | None) -> list[dict[str, Any]]:
        if not fql:
            return self.devices
        # Enough FQL for the tests: field:'value' (several joined with +).
        terms = [t.split(":", 1) for t in fql.split("+")]
        return [d for d in self.devices
                if all(str(d.get(f.strip(), "")).lower() == v.strip().strip("'\"").lower() for f, v in terms)]

    def _scroll(self, request: Request) -> Response:
        matching = self._matching(request.args.get("filter"))
        limit = int(request.args.get("limit") or 100)
        token = request.args.get("offset")
        start = int(base64.urlsafe_b64decode(token.encode()).decode().split(":")[1]) if token else 0
        page = matching[start:start + limit]
        next_token = base64.urlsafe_b64encode(f"scroll:{start + len(page)}:{uuid.uuid4().hex}".encode()).decode()
        pagination = {"offset": next_token, "expires_at": int((time.time() + 120) * 1e9),
                      "total": len(matching), "limit": limit}
        return _json(200, {"meta": _meta(pagination=pagination), "resources": [d["device_id"] for d in page],
                           "errors": []})

    def _details(self, request: Request) -> Response:
        ids = request.args.getlist("ids")
        if len(ids) > 100:
            return _json(400, falcon_error(400, "ids: maximum of 100 ids allowed"))
        self.id_batches.append(len(ids))
        by_id = {d["device_id"]: d for d in self.devices}
        return _json(200, {"meta": _meta(), "resources": [by_id[i] for i in ids if i in by_id], "errors": []})

    def _policies(self, request: Request) -> Response:
        ids = set(request.args.getlist("ids"))
        return _json(200, {"meta": _meta(powered_by="sensor-update-policies"),
                           "resources": [p for p in self.policies if p["id"] in ids], "errors": []})
