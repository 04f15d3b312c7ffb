"""CrowdStrike Falcon: every host the Falcon console knows, with its sensor version.

Read through CrowdStrike's official SDK, FalconPy (``crowdstrike-falconpy``):

* ``POST /oauth2/token`` (API client id and secret, ``FALCON_CLIENT_ID`` /
  ``FALCON_CLIENT_SECRET``); a 401 later in the run (the token expired or was
  revoked) gets one new token, then the request again;
* ``GET /devices/queries/devices-scroll/v1`` pages of host ids (the scroll API's
  offset token, ``limit`` ids a page, optional FQL ``filter``);
* ``GET /devices/entities/devices/v2`` the hosts' details, 100 ids a request:
  hostname, platform, OS, ``agent_version``, ``instance_id`` /
  ``service_provider`` / ``service_provider_account_id``, ``zone_group``,
  serial number, MAC address, last seen, tags and ``device_policies.sensor_update``;
* ``GET /policy/entities/sensor-update/v2`` the names of those sensor update policies.

A 429 waits until the time ``X-RateLimit-RetryAfter`` names (epoch seconds), then
retries (at most ``max_retries`` times per request).  Any other error, or a 429 past
its retries, ends the read: the hosts read so far are applied and the scope is
*incomplete* (nothing is retired).  Bad credentials stop before anything is read.

What is recorded, per host:

* an asset: natural key ``host:<hostname>`` (the host and osquery collectors' key, so
  the same machine seen by osquery and Falcon is one asset), ``cloud_instance_id``
  from ``instance_id`` (so a cloud instance merges into its AWS/Azure asset), provider
  and account from ``service_provider`` / ``service_provider_account_id``, the AWS
  region and zone from ``zone_group``, OS family/name/version, and Falcon's facts in
  ``attributes`` (``falcon_device_id``, serial number, MAC, last seen, tags, the sensor
  update policy...);
* software: the Falcon Sensor at ``agent_version`` (the sensor's own version, e.g.
  ``7.11.18110.0``: the product's version, unlike an Azure extension handler's), with
  the sensor update policy as installation attributes.

The sensor update policy is the host's Falcon update ring.  It is recorded as the
attributes ``falcon_sensor_update_policy`` (its name) and ``..._policy_id``; it does
not set ``Asset.update_ring``, Plan B's own rings (canary, staging, production) in
which *every* vendor's updates are tested: which Falcon policy corresponds to which of
your rings is for the estate file or CMDB to say (see docs/collectors/crowdstrike.md).

One scope per Falcon customer: ``crowdstrike:<cid>``; with ``--filter`` the scope is
``crowdstrike:<cid>:filter:<hash of the filter>``, so a filtered run only retires
hosts that an earlier run of the *same* filter saw.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from collectors.base import AssetRecord, ProgressFn, ScopeBatch, SoftwareRecord
from collectors.consoles import (
    ConsoleApiError,
    ConsoleCredentialsError,
    check_base_url,
    compact,
    host_key,
    leading_version,
    one_asset_per_machine,
    text,
)
from inventory import config

NAME = "crowdstrike"
CLIENT_ID_ENV = "FALCON_CLIENT_ID"
CLIENT_SECRET_ENV = "FALCON_CLIENT_SECRET"

# Falcon clouds by the names CrowdStrike uses; any other value must be a URL.
CLOUDS: dict[str, str] = {
    "us-1": "https://api.crowdstrike.com",
    "us-2": "https://api.us-2.crowdstrike.com",
    "eu-1": "https://api.eu-1.crowdstrike.com",
    "us-gov-1": "https://api.laggar.gcw.crowdstrike.com",
}
DEFAULT_CLOUD = "us-1"
DEFAULT_PAGE_SIZE = 5000        # ids per scroll page (the API allows up to 10,000)
DETAILS_BATCH = 100             # GET /devices/entities/devices/v2 takes at most 100 ids
DEFAULT_MAX_RETRIES = 5         # per request, for 429s
MAX_RETRY_WAIT = 120.0          # seconds: never sleep longer than this for one 429
DEFAULT_TIMEOUT = 60.0

SOFTWARE_NAME = "Falcon Sensor"
SOFTWARE_PUBLISHER = "CrowdStrike, Inc."
_PLATFORMS = {"windows": "windows", "linux": "linux", "mac": "macos"}
_PROVIDERS = (("aws", "aws"), ("azure", "azure"), ("gcp", "gcp"), ("google", "gcp"))

def resolve_base_url(value: str | None) -> str:
    """A cloud name (us-1, us-2, eu-1, us-gov-1) or a URL -> the API base URL.
    Plain http:// only for loopback addresses (a local stand-in)."""
    chosen = (value or DEFAULT_CLOUD).strip()
    if chosen.lower() in CLOUDS:
        return CLOUDS[chosen.lower()]
    if "://" not in chosen:
        raise ValueError(f"unknown Falcon cloud {chosen!r}: use one of {', '.join(CLOUDS)} or an https:// URL")
    return check_base_url(chosen, "the Falcon API URL")


def retry_after_seconds(headers: Mapping[str, Any], now: float) -> float:
    """How long a 429 asks to wait: ``X-RateLimit-RetryAfter`` is the epoch second from
    which requests are accepted again (a small number is read as seconds to wait)."""
    raw = None
    for key, value in headers.items():
        if str(key).lower() == "x-ratelimit-retryafter":
            raw = value
            break
    try:
        value = float(str(raw).strip())
    except (TypeError, ValueError):
        return 1.0
    wait = value - now if value > 1_000_000_000 else value
    return min(max(wait, 0.0), MAX_RETRY_WAIT)


def _errors_text(body: Any) -> str:
    if isinstance(body, Mapping):
        errors = body.get("errors") or []
        messages = [str(e.get("message") or e.get("code")) for e in errors if isinstance(e, Mapping)]
        if messages:
            return "; ".join(messages)
    return "no error message"


class FalconApi:
    """FalconPy service classes sharing one OAuth2 token, with Plan B's retry rules."""

    def __init__(self, base_url: str, client_id: str, client_secret: str, *, session: Any = None,
                 max_retries: int = DEFAULT_MAX_RETRIES, timeout: float = DEFAULT_TIMEOUT,
                 sleep: Callable[[float], None] = time.sleep, wall_clock: Callable[[], float] = time.time
                 ) -> None:
        from falconpy import OAuth2

        self.base_url = base_url
        self._has_credentials = bool(client_id and client_secret)
        self.max_retries = max_retries
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._custom_url = base_url not in CLOUDS.values()
        extra = {"session": session} if session is not None else {}
        self.auth = OAuth2(client_id=client_id, client_secret=client_secret, base_url=base_url,
                           timeout=timeout, user_agent="planb-collector", **extra)
        self._hosts: Any = None
        self._policies: Any = None
        self.logins = 0

    def login(self) -> None:
        """A new token, or ConsoleCredentialsError saying why the console refused one."""
        if not self._has_credentials:
            raise ConsoleCredentialsError(
                f"no Falcon API client: set {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} (an API client "
                "with the Hosts: Read and Sensor update policies: Read scopes)")
        result = self.auth.login()
        self.logins += 1
        if self._custom_url:
            # FalconPy follows the token's X-Cs-Region to another cloud; a URL given
            # explicitly (a gateway, a stand-in) is kept.
            self.auth.base_url = self.base_url
        status = result.get("status_code") if isinstance(result, Mapping) else None
        if status != 201:
            raise ConsoleCredentialsError(
                f"the Falcon API at {self.base_url} refused the API client (HTTP {status}: "
                f"{_errors_text(result.get('body') if isinstance(result, Mapping) else None)}); "
                f"check {CLIENT_ID_ENV} / {CLIENT_SECRET_ENV} and the cloud (--base-url)")

    @property
    def hosts(self) -> Any:
        if self._hosts is None:
            from falconpy import Hosts
            self._hosts = Hosts(auth_object=self.auth)
        return self._hosts

    @property
    def policies(self) -> Any:
        if self._policies is None:
            from falconpy import SensorUpdatePolicy
            self._policies = SensorUpdatePolicy(auth_object=self.auth)
        return self._policies

    def call(self, what: str, operation: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        """The body of a successful answer; 429s wait and retry, a 401 gets one new token."""
        renewed = False
        throttled = 0
        while True:
            result = operation(**kwargs)
            status = int(result.get("status_code") or 0)
            body = result.get("body") or {}
            if 200 <= status < 300:
                return body  # type: ignore[no-any-return]
            if status == 429 and throttled < self.max_retries:
                throttled += 1
                self._sleep(retry_after_seconds(result.get("headers") or {}, self._wall_clock()))
                continue
            if status == 401 and not renewed:
                renewed = True
                self.login()
                continue
            raise ConsoleApiError(f"{what}: HTTP {status or 'error'}: {_errors_text(body)}", status)

    # -- the three reads ---------------------------------------------------------------------

    def device_id_pages(self, fql: str | None, page_size: int) -> Iterator[list[str]]:
        """Pages of host ids from the scroll API (its offset token carries the position)."""
        offset: str | None = None
        seen = 0
        while True:
            kwargs: dict[str, Any] = {"limit": page_size}
            if fql:
                kwargs["filter"] = fql
            if offset:
                kwargs["offset"] = offset
            body = self.call("listing hosts (devices-scroll)", self.hosts.query_devices_by_filter_scroll,
                             **kwargs)
            ids = [str(i) for i in body.get("resources") or []]
            pagination = (body.get("meta") or {}).get("pagination") or {}
            seen += len(ids)
            if ids:
                yield ids
            offset = text(pagination.get("offset"))
            total = pagination.get("total")
            if not ids or not offset or (isinstance(total, int) and seen >= total):
                return

    def device_details(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        body = self.call("reading host details", self.hosts.get_device_details_v2, ids=list(ids))
        return [d for d in body.get("resources") or [] if isinstance(d, dict)]

    def sensor_update_policies(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), DETAILS_BATCH):
            body = self.call("reading sensor update policies", self.policies.get_policies_v2,
                             ids=list(ids[start:start + DETAILS_BATCH]))
            for policy in body.get("resources") or []:
                if isinstance(policy, dict) and policy.get("id"):
                    found[str(policy["id"])] = policy
        return found


# --------------------------------------------------------------------------- transform

def os_facts(device: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(family, name, version) from Falcon's platform and OS fields."""
    platform = (text(device.get("platform_name")) or "").lower()
    family = _PLATFORMS.get(platform, "other" if platform else None)
    name = text(device.get("os_product_name")) or text(device.get("os_version"))
    if family == "windows":
        # kernel_version is the full build (10.0.20348.2582); os_version says "Windows Server 2022".
        kernel = text(device.get("kernel_version"))
        version = kernel if kernel and kernel[:1].isdigit() else None
    else:
        version = leading_version(text(device.get("os_version")))
    return family, name, version


def cloud_facts(device: Mapping[str, Any]) -> dict[str, str | None]:
    provider_text = (text(device.get("service_provider")) or "").lower()
    provider = next((p for prefix, p in _PROVIDERS if provider_text.startswith(prefix)), None)
    instance = text(device.get("instance_id"))
    zone = text(device.get("zone_group"))
    region = None
    if provider == "aws" and zone and zone[-1:].isalpha():
        region = zone[:-1]   # us-east-1a -> us-east-1
    return {"provider": provider if instance or provider else None,
            "account": text(device.get("service_provider_account_id")),
            "cloud_instance_id": instance.lower() if instance else None,
            "region": region, "zone": zone if provider == "aws" else None}


def device_hostname(device: Mapping[str, Any]) -> str | None:
    return text(device.get("hostname"))


def dns_name(device: Mapping[str, Any]) -> str | None:
    """The machine's DNS name: Falcon's hostname is the computer name; a domain member's
    AD domain (``machine_domain``) completes it."""
    hostname = device_hostname(device)
    domain = text(device.get("machine_domain"))
    if hostname and domain and "." not in hostname and "." in domain:
        return f"{hostname}.{domain.lower()}"
    return hostname


def natural_key(device: Mapping[str, Any]) -> str:
    hostname = device_hostname(device)
    if hostname:
        return host_key(hostname)
    return f"crowdstrike:device:{text(device.get('device_id')) or ''}"


def transform_device(device: Mapping[str, Any], policies: Mapping[str, Mapping[str, Any]]
                     ) -> tuple[AssetRecord, list[SoftwareRecord]]:
    """One host's details (GET /devices/entities/devices/v2) -> its asset and the sensor."""
    key = natural_key(device)
    family, os_name, os_version = os_facts(device)
    cloud = cloud_facts(device)
    update = ((device.get("device_policies") or {}).get("sensor_update") or {})
    policy_id = text(update.get("policy_id"))
    policy = policies.get(policy_id or "") or {}
    policy_facts = compact({
        "sensor_update_policy": text(policy.get("name")), "sensor_update_policy_id": policy_id,
        "sensor_update_policy_applied": update.get("applied"),
        "sensor_update_build": text((policy.get("settings") or {}).get("build")),
    })
    attributes = compact({
        "falcon_device_id": text(device.get("device_id")), "falcon_cid": text(device.get("cid")),
        "serial_number": text(device.get("serial_number")), "mac_address": text(device.get("mac_address")),
        "local_ip": text(device.get("local_ip")), "falcon_last_seen": text(device.get("last_seen")),
        "falcon_first_seen": text(device.get("first_seen")), "falcon_status": text(device.get("status")),
        "falcon_tags": sorted({str(t) for t in device.get("tags") or []}),
        "falcon_product_type": text(device.get("product_type_desc")),
        "falcon_service_provider": text(device.get("service_provider")),
        "falcon_reduced_functionality_mode": text(device.get("reduced_functionality_mode")),
        "falcon_sensor_update_policy": policy_facts.get("sensor_update_policy"),
        "falcon_sensor_update_policy_id": policy_id,
        "kernel_version": text(device.get("kernel_version")), "os_build": text(device.get("os_build")),
        "hardware_vendor": text(device.get("system_manufacturer")),
        "hardware_model": text(device.get("system_product_name")),
    })
    hostname = device_hostname(device)
    asset = AssetRecord(
        natural_key=key, name=hostname or key, kind="vm" if cloud["cloud_instance_id"] else "host",
        provider=cloud["provider"], account=cloud["account"], region=cloud["region"], zone=cloud["zone"],
        hostname=dns_name(device), cloud_instance_id=cloud["cloud_instance_id"], os_family=family,
        os_name=os_name, os_version=os_version, attributes=attributes)
    software = []
    if text(device.get("agent_version")):
        software.append(SoftwareRecord(asset_key=key, name=SOFTWARE_NAME, publisher=SOFTWARE_PUBLISHER,
                                       version=text(device.get("agent_version")), origin="package",
                                       attributes=policy_facts))
    return asset, software


# --------------------------------------------------------------------------- the collector

@dataclass
class _Read:
    devices: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


class CrowdStrikeCollector:
    """Reads the hosts of one Falcon customer (CID)."""

    name = NAME

    def __init__(self, client_id: str, client_secret: str, *, base_url: str | None = None,
                 fql: str | None = None, page_size: int = DEFAULT_PAGE_SIZE,
                 max_retries: int = DEFAULT_MAX_RETRIES, session: Any = None,
                 sleep: Callable[[float], None] = time.sleep,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.base_url = resolve_base_url(base_url)
        self.fql = text(fql)
        self.page_size = page_size
        self.api = FalconApi(self.base_url, client_id, client_secret, session=session,
                             max_retries=max_retries, sleep=sleep, wall_clock=wall_clock)
        self._logged_in = False

    def describe_scope(self) -> str:
        described = f"crowdstrike {self.base_url}"
        if self.fql:
            described += f" filter={self.fql}"
        return described[:1000]

    def check_credentials(self) -> None:
        """Get a token now: bad credentials stop the command before anything is written."""
        if not self._logged_in:
            self.api.login()
            self._logged_in = True

    def scope_key(self, cid: str) -> str:
        scope = f"{NAME}:{cid.lower()}"
        if self.fql:
            scope += ":filter:" + hashlib.sha256(self.fql.encode()).hexdigest()[:12]
        return scope

    def read(self, progress: ProgressFn) -> _Read:
        """Every host's details, or as many as were read before an error (``error`` set)."""
        read = _Read()
        try:
            self.check_credentials()
            for ids in self.api.device_id_pages(self.fql, self.page_size):
                for start in range(0, len(ids), DETAILS_BATCH):
                    read.devices.extend(self.api.device_details(ids[start:start + DETAILS_BATCH]))
                progress(f"crowdstrike: {len(read.devices)} hosts read")
        except (ConsoleApiError, ConsoleCredentialsError) as exc:
            read.error = str(exc)
        return read

    def policy_names(self, devices: Sequence[Mapping[str, Any]], progress: ProgressFn) -> dict[str, dict[str, Any]]:
        """The hosts' sensor update policies; without them (the API client lacks the scope) the
        hosts are still complete, only the policy names are left out."""
        ids = sorted({str(p) for d in devices
                      if (p := ((d.get("device_policies") or {}).get("sensor_update") or {}).get("policy_id"))})
        if not ids:
            return {}
        try:
            return self.api.sensor_update_policies(ids)
        except ConsoleApiError as exc:
            progress(f"crowdstrike: sensor update policy names unavailable ({exc}); ids kept")
            return {}

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        read = self.read(progress)
        devices = read.devices
        cids = sorted({str(d["cid"]).lower() for d in devices if text(d.get("cid"))})
        if not cids:
            if read.error:
                raise ConsoleApiError(read.error)
            progress("crowdstrike: the console lists no hosts; nothing to apply")
            return
        policies = self.policy_names(devices, progress)
        for cid in cids:
            records = one_asset_per_machine([(*transform_device(d, policies), text(d.get("last_seen")))
                                             for d in devices if str(d.get("cid") or "").lower() == cid])
            batch = ScopeBatch(scope_key=self.scope_key(cid), complete=read.error is None, error=read.error,
                               assets=[a for a, _ in records], software=[s for _, sw in records for s in sw])
            progress(f"{batch.scope_key}: {len(batch.assets)} hosts"
                     + (f" (INCOMPLETE: {read.error})" if read.error else ""))
            yield batch


def recorded_console_session(console: Mapping[str, Any]) -> Any:
    """A requests session for FalconPy whose every request is answered from a recorded console
    (``{"devices": [device details], "sensor_update_policies": [policies]}``, the API's entity
    shapes) in the Falcon API's envelopes: token, devices-scroll, device details, sensor update
    policies.  Nothing leaves the process (``planb demo`` reads its console this way)."""
    import requests
    from requests.adapters import BaseAdapter

    devices = {d["device_id"]: d for d in console["devices"]}
    policies = {p["id"]: p for p in console["sensor_update_policies"]}
    ids = list(devices)

    def envelope(resources: list[Any], **meta: Any) -> dict[str, Any]:
        return {"meta": {"query_time": 0.001, "powered_by": "recorded-console", "trace_id": "recorded", **meta},
                "resources": resources, "errors": []}

    class RecordedConsole(BaseAdapter):
        def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True,
                 cert: Any = None, proxies: Any = None) -> Any:
            parts = urlsplit(request.url)
            query = parse_qs(parts.query)
            status, headers = 200, {"Content-Type": "application/json", "X-Cs-Region": "us-1"}
            if parts.path == "/oauth2/token":
                status, body = 201, {"access_token": "recorded-token", "token_type": "bearer",
                                     "expires_in": 1799}
            elif parts.path == "/devices/queries/devices-scroll/v1":
                start = int((query.get("offset") or ["0"])[0])
                limit = int((query.get("limit") or ["100"])[0])
                page = ids[start:start + limit]
                body = envelope(page, pagination={"offset": str(start + len(page)), "total": len(ids),
                                                  "limit": limit, "expires_at": 0})
            elif parts.path == "/devices/entities/devices/v2":
                body = envelope([devices[i] for i in query.get("ids", []) if i in devices])
            elif parts.path == "/policy/entities/sensor-update/v2":
                body = envelope([policies[i] for i in query.get("ids", []) if i in policies])
            else:
                status, body = 404, {"errors": [{"code": 404, "message": "not in the recorded console"}],
                                     "resources": []}
            response = requests.Response()
            response.status_code, response.url, response.request = status, request.url, request
            response.headers.update(headers)
            response._content = json.dumps(body).encode()
            response.encoding = "utf-8"
            return response

        def close(self) -> None:
            pass

    session = requests.Session()
    session.mount("https://", RecordedConsole())
    return session



# --------------------------------------------------------------------------- registry hook

def credentials_from_environment() -> tuple[str, str]:
    import os
    return (os.environ.get(CLIENT_ID_ENV) or "").strip(), (os.environ.get(CLIENT_SECRET_ENV) or "").strip()


def from_config() -> CrowdStrikeCollector | None:
    """Configured by ``PLANB_COLLECT_CROWDSTRIKE`` (true), ``PLANB_COLLECT_CROWDSTRIKE_BASE_URL``
    and ``PLANB_COLLECT_CROWDSTRIKE_FILTER``; the secret only from ``FALCON_CLIENT_ID`` /
    ``FALCON_CLIENT_SECRET``.  None when not enabled."""
    enabled = config.get("COLLECT_CROWDSTRIKE")
    base_url = config.get("COLLECT_CROWDSTRIKE_BASE_URL")
    if not enabled and not (enabled is None and base_url):
        return None
    client_id, secret = credentials_from_environment()
    return CrowdStrikeCollector(client_id, secret, base_url=base_url,
                                fql=config.get("COLLECT_CROWDSTRIKE_FILTER"))
