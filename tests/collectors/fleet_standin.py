"""A loopback stand-in for Fleet's REST API (pytest-httpserver), serving the response shapes
Fleet documents (docs/REST API: "List hosts", "List teams", "Me", API errors):

* ``GET /api/v1/fleet/me`` -> ``{"user": {...}}``;
* ``GET /api/v1/fleet/teams`` -> ``{"teams": [{"id", "name", ...}]}`` (``page``/``per_page``), or
  402 on Fleet Free;
* ``GET /api/v1/fleet/hosts`` -> ``{"hosts": [...]}`` filtered by ``team_id`` (0: no team), ordered
  by ``order_key``, paged by ``page``/``per_page``; ``populate_software`` adds each host's
  ``software`` list, ``additional_info_filters`` its ``additional`` object (additional query
  results: lists of rows);
* errors as Fleet writes them: ``{"message": ..., "errors": [{"name": "base", "reason": ...}]}``,
  ``Retry-After`` on 429.

``faults`` injects answers: (path, {param: value}) -> list of (status, headers) served in turn
before the real answer (``always=True`` keeps serving the last one).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from werkzeug.wrappers import Request, Response

TOKEN = "fleet-test-token-0123456789"


def error_body(message: str) -> dict[str, Any]:
    return {"message": message, "errors": [{"name": "base", "reason": message}],
            "uuid": "1272014b-902b-4b36-bcdb-75fde5eac1fc"}


def host(host_id: int, hostname: str, platform: str, os_version: str, *, team: tuple[int, str] | None = None,
         software: list[dict[str, Any]] | None = None, additional: dict[str, Any] | None = None,
         platform_like: str = "", build: str = "") -> dict[str, Any]:
    """A host as "List hosts" returns it (the documented fields Plan B reads, and others)."""
    return {
        "created_at": "2024-06-01T09:00:00Z", "updated_at": "2024-07-19T04:00:00Z", "id": host_id,
        "detail_updated_at": "2024-07-19T04:00:00Z", "software_updated_at": "2024-07-19T03:00:00Z",
        "seen_time": "2024-07-19T04:09:00Z", "hostname": hostname, "uuid": f"392547dc-0000-0000-a87a-{host_id:012d}",
        "platform": platform, "osquery_version": "5.12.1", "os_version": os_version, "build": build,
        "platform_like": platform_like, "code_name": "", "uptime": 8305000000000, "memory": 17179869184,
        "cpu_type": "x86_64", "cpu_brand": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
        "cpu_physical_cores": 4, "cpu_logical_cores": 8, "hardware_vendor": "Amazon EC2",
        "hardware_model": "m6i.xlarge", "hardware_version": "", "hardware_serial": f"ec2{host_id:09d}",
        "computer_name": hostname, "display_name": hostname, "public_ip": "", "primary_ip": f"10.0.0.{host_id}",
        "primary_mac": f"02:00:00:00:00:{host_id:02x}", "distributed_interval": 10, "config_tls_refresh": 10,
        "logger_tls_period": 10, "status": "online", "display_text": hostname,
        "team_id": team[0] if team else None, "team_name": team[1] if team else None,
        "gigs_disk_space_available": 174.98, "percent_disk_space_available": 71, "gigs_total_disk_space": 246,
        "issues": {"failing_policies_count": 0, "total_issues_count": 0},
        "mdm": {"encryption_key_available": False, "enrollment_status": None, "name": "", "server_url": None},
        "_software": software or [], "_additional": additional or {},
    }


def program(software_id: int, name: str, version: str, vendor: str = "") -> dict[str, Any]:
    return {"id": software_id, "name": name, "version": version, "source": "programs", "vendor": vendor,
            "generated_cpe": "", "vulnerabilities": None, "installed_paths": [f"C:\\Program Files\\{name}"]}


def package(software_id: int, name: str, version: str, source: str, vendor: str = "", release: str = "",
            arch: str = "x86_64") -> dict[str, Any]:
    item = {"id": software_id, "name": name, "version": version, "source": source, "generated_cpe": "",
            "vulnerabilities": None, "installed_paths": []}
    if vendor:
        item["vendor"] = vendor
    if release:
        item["release"] = release
    if arch:
        item["arch"] = arch
    return item


@dataclass
class FleetStandIn:
    teams: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    premium: bool = True
    light_software: bool = True      # knows populate_software=without_vulnerability_details (Fleet since late 2024)
    faults: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, dict[str, str]]]] = field(
        default_factory=dict)
    always: set[tuple[str, tuple[tuple[str, str], ...]]] = field(default_factory=set)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def fault(self, path: str, params: dict[str, Any], answers: list[tuple[int, dict[str, str]]],
              always: bool = False) -> None:
        key = (path, tuple(sorted((k, str(v)) for k, v in params.items())))
        self.faults[key] = list(answers)
        if always:
            self.always.add(key)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        return Response(json.dumps(body), status=status, headers=headers or {}, content_type="application/json")

    def __call__(self, request: Request) -> Response:
        params = {k: v for k, v in request.args.items()}
        self.requests.append((request.path, params))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json(401, error_body("Authentication required"))
        for (path, wanted), answers in self.faults.items():
            if path == request.path and all(params.get(k) == v for k, v in wanted):
                if answers:
                    status, headers = answers[0] if (path, wanted) in self.always and len(answers) == 1 \
                        else answers.pop(0)
                    message = "limit exceeded, retry after: 1s" if status == 429 else "Internal Server Error"
                    return self._json(status, error_body(message), headers)
        if request.path == "/api/v1/fleet/me":
            return self._json(200, {"user": {"id": 7, "name": "planb", "email": "planb@example.com",
                                             "global_role": "observer", "api_only": True, "teams": []}})
        if request.path == "/api/v1/fleet/teams":
            if not self.premium:
                return self._json(402, error_body("Requires Fleet Premium license"))
            return self._json(200, {"teams": self._page(sorted(self.teams, key=lambda t: t["id"]), params)})
        if request.path == "/api/v1/fleet/hosts":
            return self._hosts(params)
        return self._json(404, error_body("Resource Not Found"))

    @staticmethod
    def _page(items: list[Any], params: dict[str, str]) -> list[Any]:
        page, per_page = int(params.get("page", 0)), int(params.get("per_page", 1000000))
        return items[page * per_page:(page + 1) * per_page]

    def _hosts(self, params: dict[str, str]) -> Response:
        populate = params.get("populate_software", "")
        allowed = ("", "true", "false") + (("without_vulnerability_details",) if self.light_software else ())
        if populate not in allowed:
            return self._json(400, error_body('Invalid value for populate_software. Should be one of "true", '
                                              '"false", or "without_vulnerability_details".'))
        hosts = self.hosts
        if "team_id" in params:
            if not self.premium:
                return self._json(402, error_body("Requires Fleet Premium license"))
            team_id = int(params["team_id"])
            hosts = [h for h in hosts if (h["team_id"] or 0) == team_id]
        hosts = sorted(hosts, key=lambda h: h[params.get("order_key") or "id"])
        out = []
        filters = [f for f in params.get("additional_info_filters", "").split(",") if f]
        for item in self._page(hosts, params):
            shown = {k: copy.deepcopy(v) for k, v in item.items() if not k.startswith("_")}
            shown["additional"] = {k: v for k, v in item["_additional"].items() if k in filters} if filters else {}
            if populate in ("true", "without_vulnerability_details"):
                shown["software"] = copy.deepcopy(item["_software"])
            out.append(shown)
        return self._json(200, {"hosts": out})
