"""Fleet (fleetdm.com): the osquery hosts a Fleet server manages, with their software, per team.

Reads Fleet's documented REST API with an API token (``Authorization: Bearer``, the token of an
API-only user with the observer role is enough):

* ``GET /api/v1/fleet/me`` — checks the token before anything is read or written;
* ``GET /api/v1/fleet/teams`` (``page``/``per_page``) — each team is a scope ``fleet:<team name>``;
  hosts in no team are the scope ``fleet:no-team``.  Fleet Free has no teams (it answers 402): all
  its hosts are ``fleet:no-team``;
* ``GET /api/v1/fleet/hosts?team_id=N&order_key=id&page=P&per_page=K`` — the hosts of a team
  (``team_id=0``: no team), page by page until a page is short, with
  ``populate_software=without_vulnerability_details`` (older servers refuse that value and get
  ``true``).  Each page is one ingest batch (its hosts and their software, so
  memory stays bounded at 100,000 hosts) that retires nothing; the team's last batch lists every
  host read and retires the scope's hosts Fleet no longer lists — only when every page was read.  ``additional_info_filters=ec2_instance_metadata,azure_instance_metadata`` asks
  for the results of Fleet *additional queries* of those names, when configured (see
  ``docs/collectors/fleet.md``): their ``instance_id`` / ``vm_id`` merge the host into the AWS/Azure
  asset of the same machine, as the osquery collector does (one machine, one asset).

A host is ``host:<hostname>`` (lower case), the natural key the host and osquery collectors use.
Its OS comes from ``platform`` / ``platform_like`` / ``os_version``; its software is every entry of
``software`` (``programs``, ``deb_packages``, ``rpm_packages``, ``apps``, browser extensions,
language packages ...) with its ``vendor`` as the publisher (an ``apps`` entry: its bundle
identifier) and its ``version`` (``rpm_packages``: ``version-release``).

Throttling and server errors (429, 500, 502, 503, 504) are retried by urllib3's ``Retry`` through
``requests``, honouring ``Retry-After`` (capped).  A page that still fails leaves its scope
incomplete: what was read is applied, nothing is retired.  A refused token (401) stops the run
before anything is written.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from collectors.base import AssetRecord, ProgressFn, ScopeBatch, SoftwareRecord
from collectors.osquery import _OS_PUBLISHERS, os_family

NAME = "fleet"
TOKEN_VARIABLE = "FLEET_API_TOKEN"
DEFAULT_PER_PAGE = 100
DEFAULT_RETRIES = 5
RETRY_AFTER_MAX = 120.0
TIMEOUT = (10.0, 120.0)            # connect, read
NO_TEAM = "no-team"
ADDITIONAL = ("ec2_instance_metadata", "azure_instance_metadata")
LIGHT_SOFTWARE = "without_vulnerability_details"
_DOTTED = re.compile(r"\d+(?:\.\d+)+")
_NUMBER = re.compile(r"\b\d+\b")


class FleetError(Exception):
    """Fleet cannot be read at all (unreachable, a refused token, an unexpected answer)."""


class FleetAuthError(FleetError):
    """Fleet refused the API token."""


class FleetPageError(FleetError):
    """One request failed after its retries (the scope being read is incomplete)."""


def check_base_url(url: str) -> str:
    """An https URL, or plain http for a loopback address only (tests, an SSH tunnel)."""
    from inventory.config import https_or_loopback_url

    try:
        return https_or_loopback_url(url)
    except ValueError as exc:
        raise FleetError(f"{exc}") from None


class FleetClient:
    """A ``requests`` session for one Fleet server: bearer token, retries, timeouts."""

    def __init__(self, base_url: str, token: str, *, retries: int = DEFAULT_RETRIES,
                 backoff_factor: float = 0.5, retry_after_max: float = RETRY_AFTER_MAX,
                 timeout: tuple[float, float] = TIMEOUT) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        class _Retry(Retry):
            """urllib3's Retry, with Retry-After capped (a server asking for an hour must not
            stall a run for an hour)."""

            def get_retry_after(self, response):  # type: ignore[no-untyped-def]
                seconds = super().get_retry_after(response)
                return None if seconds is None else min(seconds, retry_after_max)

        if not token or not token.strip():
            raise FleetAuthError(f"no Fleet API token: set {TOKEN_VARIABLE}")
        self.base_url = check_base_url(base_url)
        self.timeout = timeout
        retry = _Retry(total=retries, connect=retries, read=retries, status=retries,
                       backoff_factor=backoff_factor, status_forcelist=(429, 500, 502, 503, 504),
                       allowed_methods=frozenset({"GET"}), respect_retry_after_header=True,
                       raise_on_status=False)
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update({"Authorization": f"Bearer {token.strip()}",
                                     "Accept": "application/json", "User-Agent": "planb-fleet-collector"})

    def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, parsed JSON body or None) of ``GET path``, after urllib3's retries."""
        import requests

        url = f"{self.base_url}{path}"
        try:
            response = self.session.get(url, params=params, timeout=self.timeout)
        except requests.RequestException as exc:
            raise FleetPageError(f"GET {path}: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = None
        if response.status_code == 401:
            raise FleetAuthError(f"Fleet refused the API token (401 on GET {path}: {_message(body)}); "
                                 f"check {TOKEN_VARIABLE}")
        return response.status_code, body

    def close(self) -> None:
        self.session.close()


def _message(body: Any) -> str:
    """Fleet's error text: ``{"message": ..., "errors": [{"name", "reason"}]}``."""
    if isinstance(body, dict):
        reasons = [e.get("reason") for e in body.get("errors") or [] if isinstance(e, dict) and e.get("reason")]
        return "; ".join([str(body.get("message") or "")] + [str(r) for r in reasons if r != body.get("message")]
                         ).strip("; ") or "no message"
    return "no JSON body"


@dataclass(frozen=True)
class Team:
    id: int | None       # None: every host (Fleet Free, no team filter)
    name: str

    @property
    def scope(self) -> str:
        return f"fleet:{self.name}"


# -------------------------------------------------------------------------------- transform

def _clean(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def os_facts(host: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(family, name, version) from Fleet's ``platform``, ``platform_like`` and ``os_version``
    ("Ubuntu 22.04.4 LTS", "macOS 14.6.1", "Windows 11 Enterprise 23H2 10.0.22631.3155")."""
    platform = (_clean(host.get("platform")) or "").lower() or None
    family = os_family(platform, _clean(host.get("platform_like")))
    text = _clean(host.get("os_version"))
    if not text:
        return family, None, None
    dotted = _DOTTED.findall(text)
    if dotted:
        version = dotted[-1]
    else:
        numbers = _NUMBER.findall(text)
        version = numbers[-1] if numbers else None
    name = text
    if family == "windows" and version and text.endswith(version):
        name = text[: -len(version)].strip() or text   # the build number is the version
    return family, name, version


def _additional(host: dict[str, Any], table: str) -> dict[str, Any]:
    rows = (host.get("additional") or {}).get(table) if isinstance(host.get("additional"), dict) else None
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        return rows[0]
    if isinstance(rows, dict):
        return rows
    return {}


def host_key(host: dict[str, Any]) -> str | None:
    hostname = _clean(host.get("hostname")) or _clean(host.get("computer_name"))
    return f"host:{hostname.lower()}" if hostname else None


def host_record(host: dict[str, Any], team: Team) -> AssetRecord | None:
    """The asset a Fleet host is (None without a hostname)."""
    key = host_key(host)
    if key is None:
        return None
    hostname = _clean(host.get("hostname")) or _clean(host.get("computer_name"))
    family, os_name, os_version = os_facts(host)
    provider = account = region = zone = cloud_id = None
    ec2, azure = _additional(host, "ec2_instance_metadata"), _additional(host, "azure_instance_metadata")
    if _clean(ec2.get("instance_id")):
        provider, cloud_id = "aws", _clean(ec2.get("instance_id"))
        account, region, zone = _clean(ec2.get("account_id")), _clean(ec2.get("region")), \
            _clean(ec2.get("availability_zone"))
    elif _clean(azure.get("vm_id")):
        provider, cloud_id = "azure", _clean(azure.get("vm_id"))
        account, region, zone = _clean(azure.get("subscription_id")), _clean(azure.get("location")), \
            _clean(azure.get("zone"))
    attributes = {k: v for k, v in {
        "fleet_host_id": host.get("id"), "fleet_team": None if team.name == NO_TEAM else team.name,
        "os_platform": (_clean(host.get("platform")) or "").lower() or None, "os_build": _clean(host.get("build")),
        "os_codename": _clean(host.get("code_name")), "host_uuid": _clean(host.get("uuid")),
        "hardware_serial": _clean(host.get("hardware_serial")), "hardware_vendor": _clean(host.get("hardware_vendor")),
        "hardware_model": _clean(host.get("hardware_model")), "cpu_brand": _clean(host.get("cpu_brand")),
        "memory_bytes": _clean(host.get("memory")), "osquery_version": _clean(host.get("osquery_version")),
        "computer_name": _clean(host.get("computer_name")), "primary_ip": _clean(host.get("primary_ip")),
        "primary_mac": _clean(host.get("primary_mac")),
    }.items() if v not in (None, "")}
    return AssetRecord(natural_key=key, name=_clean(host.get("display_name")) or hostname or key, kind="host",
                       provider=provider, account=account, region=region, zone=zone, hostname=hostname,
                       cloud_instance_id=cloud_id, os_family=family, os_name=os_name, os_version=os_version,
                       attributes=attributes)


def software_records(host: dict[str, Any]) -> list[SoftwareRecord]:
    """The host's OS and software (one record per name and publisher: a package present in
    several versions is recorded with its version unknown and every version listed)."""
    key = host_key(host)
    if key is None:
        return []
    records: list[SoftwareRecord] = []
    _family, os_name, os_version = os_facts(host)
    if os_name:
        platform = (_clean(host.get("platform")) or "").lower()
        records.append(SoftwareRecord(key, os_name, _OS_PUBLISHERS.get(platform), os_version, origin="os"))
    grouped: dict[tuple[str, str | None, str], list[tuple[str | None, str]]] = {}
    for item in host.get("software") or []:
        if not isinstance(item, dict) or not _clean(item.get("name")):
            continue
        source = _clean(item.get("source")) or "unknown"
        version = _clean(item.get("version"))
        if source == "rpm_packages" and version and _clean(item.get("release")):
            version = f"{version}-{_clean(item.get('release'))}"
        if source == "apps" and _clean(item.get("bundle_identifier")):
            publisher, origin = _clean(item.get("bundle_identifier")), "bundle-id"
        else:
            publisher, origin = _clean(item.get("vendor")), "package"
        grouped.setdefault((item["name"].strip(), publisher, origin), []).append((version, source))
    for (name, publisher, origin), found in grouped.items():
        versions = sorted({v for v, _s in found if v})
        attributes: dict[str, Any] = {"fleet_source": found[0][1]}
        if len(versions) > 1:
            attributes["versions"] = versions
        records.append(SoftwareRecord(key, name, publisher, versions[0] if len(versions) == 1 else None,
                                      origin=origin, attributes=attributes))
    return records


# -------------------------------------------------------------------------------- the collector

class FleetCollector:
    """Reads one Fleet server (see the module docstring); the client is injected for tests."""

    name = NAME

    def __init__(self, client: FleetClient, *, per_page: int = DEFAULT_PER_PAGE, software: bool = True) -> None:
        if not 1 <= per_page <= 10_000:
            raise ValueError("per_page must be from 1 to 10000")
        self.client = client
        self.per_page = per_page
        self.software = software
        self._populate = LIGHT_SOFTWARE

    def describe_scope(self) -> str:
        return f"Fleet {self.client.base_url}"

    def verify(self) -> None:
        """Fail early, before any write, when the token is refused or Fleet cannot be reached."""
        status, body = self.client.get("/api/v1/fleet/me")
        if status != 200:
            raise FleetError(f"GET /api/v1/fleet/me answered {status}: {_message(body)}")

    def teams(self) -> list[Team]:
        teams: list[Team] = []
        page = 0
        while True:
            status, body = self.client.get("/api/v1/fleet/teams", {"page": page, "per_page": 100,
                                                                    "order_key": "id"})
            if status == 402 and page == 0:
                return [Team(None, NO_TEAM)]   # Fleet Free: no teams, every host is "no team"
            if status != 200 or not isinstance(body, dict) or not isinstance(body.get("teams"), list):
                raise FleetError(f"GET /api/v1/fleet/teams answered {status}: {_message(body)}")
            for item in body["teams"]:
                if isinstance(item, dict) and isinstance(item.get("id"), int) and _clean(item.get("name")):
                    teams.append(Team(item["id"], item["name"].strip()))
            if len(body["teams"]) < 100:
                break
            page += 1
        return [*teams, Team(0, NO_TEAM)]

    def _hosts_page(self, team: Team, page: int, per_page: int, with_software: bool) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"page": page, "per_page": per_page, "order_key": "id",
                                  "order_direction": "asc", "additional_info_filters": ",".join(ADDITIONAL)}
        if team.id is not None:
            params["team_id"] = team.id
        if with_software:
            params["populate_software"] = self._populate
        status, body = self.client.get("/api/v1/fleet/hosts", params)
        if status == 400 and with_software and self._populate == LIGHT_SOFTWARE:
            self._populate = "true"   # a Fleet from before late 2024 knows only true/false
            return self._hosts_page(team, page, per_page, with_software)
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("hosts"), list):
            raise FleetPageError(f"GET /api/v1/fleet/hosts (team {team.name}, page {page}) answered {status}: "
                                 f"{_message(body)}")
        return [h for h in body["hosts"] if isinstance(h, dict)]

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        teams = self.teams()
        progress(f"fleet: {self.client.base_url}: {len(teams)} scope(s): {', '.join(t.scope for t in teams)}")
        for team in teams:
            yield from self._collect_team(team, progress)

    def _collect_team(self, team: Team, progress: ProgressFn) -> Iterator[ScopeBatch]:
        """One batch per page of hosts (with their software; memory stays bounded), then the
        team's roster: every host read, which retires the scope's hosts Fleet no longer lists --
        only when every page was read."""
        roster: dict[str, AssetRecord] = {}
        failed: list[str] = []
        page = 0
        while True:
            try:
                hosts = self._hosts_page(team, page, self.per_page, with_software=self.software)
            except FleetPageError as exc:
                failed.append(str(exc))
                progress(f"fleet: {team.scope}: {exc}")
                if len(failed) >= 3:   # the server is down, not one bad page
                    break
                page += 1
                continue
            records = {}
            for host in hosts:
                record = host_record(host, team)
                if record is not None:
                    records[record.natural_key] = (record, host)
            roster.update((key, record) for key, (record, _host) in records.items())
            software = [r for _record, host in records.values() for r in software_records(host)] \
                if self.software else []
            if records:
                yield ScopeBatch(scope_key=team.scope, assets=[r for r, _h in records.values()],
                                 software=software, retire=False)
            if len(hosts) < self.per_page:
                break
            page += 1
        error = None
        if failed:
            error = (f"{len(failed)} page(s) of hosts could not be read ({failed[0]}"
                     f"{' ...' if len(failed) > 1 else ''}): nothing retired")
        progress(f"fleet: {team.scope}: {len(roster)} host(s)" + (f" ({error})" if error else ""))
        yield ScopeBatch(scope_key=team.scope, assets=list(roster.values()), complete=not failed, error=error)


# -------------------------------------------------------------------------------- registry hook

def from_config() -> FleetCollector | None:
    """From ``PLANB_COLLECT_FLEET_URL`` (and ``PLANB_COLLECT_FLEET_PER_PAGE``,
    ``PLANB_COLLECT_FLEET_SOFTWARE``) with the token in ``FLEET_API_TOKEN``; None when no URL is set."""
    from inventory import config

    url = config.get("COLLECT_FLEET_URL")
    if not url:
        return None
    token = os.environ.get(TOKEN_VARIABLE) or ""
    if not token.strip():
        raise config.ConfigError([f"{TOKEN_VARIABLE}: not set; expected the Fleet API token "
                                  "(PLANB_COLLECT_FLEET_URL is set)"])
    per_page = config.get("COLLECT_FLEET_PER_PAGE") or DEFAULT_PER_PAGE
    software = config.get("COLLECT_FLEET_SOFTWARE")
    return FleetCollector(FleetClient(url, token), per_page=per_page,
                          software=True if software is None else software)
