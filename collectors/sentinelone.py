"""SentinelOne: every agent a SentinelOne management console knows, with its version.

Read from the management API v2.1 with an API token (``S1_API_TOKEN``, sent as
``Authorization: ApiToken <token>``; a Viewer-role service user is enough):

* ``GET /web/api/v2.1/agents?limit=1000&cursor=...`` -- cursor paging
  (``pagination.nextCursor`` until it is null): ``computerName``, ``osType``,
  ``osName``, ``osRevision``, ``agentVersion``, ``machineType``, ``cloudProviders``
  (per provider: ``cloudInstanceId``, ``cloudAccount``, ``cloudLocation``...),
  ``lastActiveDate``, ``serialNumber``, ``networkInterfaces``, account/site/group.

Throttling (429) and server errors (5xx) are retried by urllib3 (``Retry``, honouring
``Retry-After``, exponential backoff otherwise); an error past the retries, or an API
token refused in the middle of the read (it expired), ends the read: the agents read
so far are applied, their scopes are *incomplete* and nothing is retired.  A token
refused at the start stops the command before anything is written.

Per agent: an asset keyed ``host:<computerName>`` (the host and osquery collectors'
key), ``cloud_instance_id`` from ``cloudProviders`` so a cloud instance merges into its
AWS/Azure asset; software "SentinelOne Agent" at ``agentVersion`` (the agent's own
version: the product's version).  Decommissioned and uninstalled agents are skipped.

One scope per SentinelOne account: ``sentinelone:<accountId>``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

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

NAME = "sentinelone"
TOKEN_ENV = "S1_API_TOKEN"
AGENTS_PATH = "/web/api/v2.1/agents"
DEFAULT_PAGE_SIZE = 1000          # the API's maximum
DEFAULT_MAX_RETRIES = 5
DEFAULT_TIMEOUT = 60.0

SOFTWARE_NAME = "SentinelOne Agent"
SOFTWARE_PUBLISHER = "SentinelOne"
_OS_FAMILIES = {"windows": "windows", "windows_legacy": "windows", "linux": "linux", "macos": "macos"}
_PROVIDERS = {"aws": "aws", "azure": "azure", "gcp": "gcp", "google": "gcp"}


def make_session(token: str, *, max_retries: int = DEFAULT_MAX_RETRIES, backoff: float = 1.0) -> Any:
    """A requests session sending the API token, with urllib3's retries for 429 and 5xx."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    session = requests.Session()
    retry = Retry(total=max_retries, connect=max_retries, read=max_retries, status=max_retries,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
                  backoff_factor=backoff, backoff_max=60, respect_retry_after_header=True,
                  raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"Authorization": f"ApiToken {token}", "Accept": "application/json",
                            "User-Agent": "planb-collector"})
    return session


def _errors_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or "").strip()[:200] or "no error message"
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if errors:
        return "; ".join(" ".join(str(e.get(k)) for k in ("title", "detail") if e.get(k)) or str(e.get("code"))
                         for e in errors if isinstance(e, Mapping))
    return "no error message"


# --------------------------------------------------------------------------- transform

def cloud_facts(agent: Mapping[str, Any]) -> dict[str, str | None]:
    """Provider, account, region and instance id from ``cloudProviders`` (``{"AWS": {...}}``)."""
    for name, facts in (agent.get("cloudProviders") or {}).items():
        if not isinstance(facts, Mapping):
            continue
        instance = text(facts.get("cloudInstanceId"))
        provider = _PROVIDERS.get(str(name).lower(), "other")
        return {"provider": provider, "account": text(facts.get("cloudAccount")),
                "region": (text(facts.get("cloudLocation")) or "").lower() or None,
                "cloud_instance_id": instance.lower() if instance else None,
                "instance_size": text(facts.get("cloudInstanceSize")), "image": text(facts.get("cloudImage"))}
    return {"provider": None, "account": None, "region": None, "cloud_instance_id": None,
            "instance_size": None, "image": None}


def transform_agent(agent: Mapping[str, Any]) -> tuple[AssetRecord, list[SoftwareRecord]]:
    name = text(agent.get("computerName"))
    key = host_key(name) if name else f"sentinelone:agent:{text(agent.get('uuid')) or text(agent.get('id')) or ''}"
    family = _OS_FAMILIES.get((text(agent.get("osType")) or "").lower())
    os_name = text(agent.get("osName"))
    cloud = cloud_facts(agent)
    macs = sorted({str(i.get("physical")) for i in agent.get("networkInterfaces") or []
                   if isinstance(i, Mapping) and i.get("physical")})
    tags = sorted({f"{t.get('key')}={t.get('value')}" if t.get("value") else str(t.get("key"))
                   for t in ((agent.get("tags") or {}).get("sentinelone") or []) if isinstance(t, Mapping)})
    attributes = compact({
        "s1_agent_id": text(agent.get("id")), "s1_agent_uuid": text(agent.get("uuid")),
        "s1_machine_type": text(agent.get("machineType")), "s1_last_active": text(agent.get("lastActiveDate")),
        "s1_account": text(agent.get("accountName")), "s1_site": text(agent.get("siteName")),
        "s1_group": text(agent.get("groupName")), "s1_network_status": text(agent.get("networkStatus")),
        "s1_is_up_to_date": agent.get("isUpToDate"), "s1_tags": tags,
        "serial_number": text(agent.get("serialNumber")), "mac_addresses": macs,
        "os_build": text(agent.get("osRevision")), "architecture": text(agent.get("osArch")),
        "hardware_model": text(agent.get("modelName")), "domain": text(agent.get("domain")),
        "cloud_instance_size": cloud["instance_size"], "cloud_image": cloud["image"],
    })
    asset = AssetRecord(
        natural_key=key, name=name or key, kind="vm" if cloud["cloud_instance_id"] else "host",
        provider=cloud["provider"], account=cloud["account"], region=cloud["region"], hostname=name,
        cloud_instance_id=cloud["cloud_instance_id"], os_family=family, os_name=os_name,
        # Linux/macOS: the release in the OS name ("Ubuntu 22.04.4 LTS"); Windows' osName has none.
        os_version=leading_version(os_name) if family in ("linux", "macos") else None,
        attributes=attributes)
    software = []
    if text(agent.get("agentVersion")):
        software.append(SoftwareRecord(asset_key=key, name=SOFTWARE_NAME, publisher=SOFTWARE_PUBLISHER,
                                       version=text(agent.get("agentVersion")),
                                       attributes=compact({"machine_type": text(agent.get("machineType"))})))
    return asset, software


# --------------------------------------------------------------------------- the collector

class SentinelOneCollector:
    """Reads the agents of one SentinelOne management console."""

    name = NAME

    def __init__(self, base_url: str, token: str, *, page_size: int = DEFAULT_PAGE_SIZE,
                 max_retries: int = DEFAULT_MAX_RETRIES, backoff: float = 1.0,
                 timeout: float = DEFAULT_TIMEOUT, session: Any = None) -> None:
        self.base_url = check_base_url(base_url, "the SentinelOne console URL")
        self.token = (token or "").strip()
        self.page_size = page_size
        self.timeout = timeout
        self.session = session if session is not None else make_session(self.token, max_retries=max_retries,
                                                                         backoff=backoff)
        self._checked = False

    def describe_scope(self) -> str:
        return f"sentinelone {self.base_url}"

    def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        import requests

        try:
            response = self.session.get(self.base_url + AGENTS_PATH, params=params, timeout=self.timeout)
        except requests.RequestException as exc:   # retries exhausted, connection refused...
            raise ConsoleApiError(f"listing agents: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 401:
            raise ConsoleCredentialsError(
                f"the SentinelOne console at {self.base_url} refused the API token (HTTP 401: "
                f"{_errors_text(response)}); check {TOKEN_ENV} (it may have expired)")
        if response.status_code >= 400:
            raise ConsoleApiError(f"listing agents: HTTP {response.status_code}: {_errors_text(response)}",
                                  response.status_code)
        body = response.json()
        if not isinstance(body, dict):
            raise ConsoleApiError("listing agents: the answer is not a JSON object")
        return body

    def check_credentials(self) -> None:
        """One small request: a bad or missing token stops the command before anything is written."""
        if self._checked:
            return
        if not self.token:
            raise ConsoleCredentialsError(f"no SentinelOne API token: set {TOKEN_ENV} (a Viewer service user's)")
        self._get({"limit": 1})
        self._checked = True

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": self.page_size}
            if cursor:
                params["cursor"] = cursor
            body = self._get(params)
            agents = [a for a in body.get("data") or [] if isinstance(a, dict)]
            yield agents
            cursor = text((body.get("pagination") or {}).get("nextCursor"))
            if not cursor:
                return

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        agents: list[dict[str, Any]] = []
        error = None
        try:
            self.check_credentials()
            for page in self.pages():
                agents.extend(page)
                progress(f"sentinelone: {len(agents)} agents read")
        except (ConsoleApiError, ConsoleCredentialsError) as exc:
            error = str(exc)
        agents = [a for a in agents if not a.get("isDecommissioned") and not a.get("isUninstalled")]
        accounts = sorted({str(a.get("accountId")) for a in agents if text(a.get("accountId"))})
        if not accounts:
            if error:
                raise ConsoleApiError(error)
            progress("sentinelone: the console lists no agents; nothing to apply")
            return
        for account in accounts:
            records = one_asset_per_machine([(*transform_agent(a), text(a.get("lastActiveDate")))
                                             for a in agents if str(a.get("accountId")) == account])
            batch = ScopeBatch(scope_key=f"{NAME}:{account}", complete=error is None, error=error,
                               assets=[a for a, _ in records], software=[s for _, sw in records for s in sw])
            progress(f"{batch.scope_key}: {len(batch.assets)} agents" + (f" (INCOMPLETE: {error})" if error else ""))
            yield batch


def from_config() -> SentinelOneCollector | None:
    """Configured by ``PLANB_COLLECT_SENTINELONE_BASE_URL``; the token only from ``S1_API_TOKEN``."""
    base_url = config.get("COLLECT_SENTINELONE_BASE_URL")
    if not base_url:
        return None
    return SentinelOneCollector(base_url, os.environ.get(TOKEN_ENV) or "")
