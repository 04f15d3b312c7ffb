"""Microsoft Defender for Endpoint: every onboarded machine, its agent and its software.

Read from the Defender for Endpoint API through azure-core's pipeline (bearer token from
azure-identity, ``RetryPolicy`` retrying 429/5xx and honouring ``Retry-After``):

* ``GET /api/machines`` -- OData paging (``@odata.nextLink``, ``$top`` at most 10,000):
  ``computerDnsName``, ``osPlatform``, ``version``, ``osBuild``, ``agentVersion``,
  ``onboardingStatus``, ``healthStatus``, ``lastSeen``, ``machineTags``, ``rbacGroupName``,
  and ``vmMetadata`` (``vmId``, ``subscriptionId``, ``resourceId``, ``cloudProvider``);
* ``GET /api/machines/SoftwareInventoryByMachine`` -- the software inventory export (JSON,
  ``pageSize`` up to 200,000, OData paging): one row per device and software version
  (``deviceId``, ``softwareVendor``, ``softwareName``, ``softwareVersion``).

Why the export and not ``/api/machines/{id}/software``: the per-machine call answers
*which* software a machine has but not its version (the Software entity has none), and
costs one call per machine against a limit of 100 calls a minute; the export carries the
installed version, for the whole tenant, in a few pages.  (Tenants beyond ~100,000
devices may want the file-based ``SoftwareInventoryExport`` instead; see the docs.)

Credentials: ``DefaultAzureCredential`` -- ``AZURE_TENANT_ID`` / ``AZURE_CLIENT_ID`` /
``AZURE_CLIENT_SECRET``, workload identity, managed identity... -- for the scope
``https://api.securitycenter.microsoft.com/.default``; the application needs
``Machine.Read.All`` and (for software) ``Software.Read.All``.  A credential that cannot
get a token, or a first request refused (401/403), stops the command before anything is
written.  A 401 later in the run (the token expired or was revoked) is answered with one
new token.  An error past the retries ends the read: what was read is applied, the scope
is *incomplete* and nothing is retired.

Per onboarded machine: an asset keyed ``host:<first label of computerDnsName>`` (the host
name the host/osquery/Falcon collectors use; MDE reports the FQDN), ``cloud_instance_id``
from ``vmMetadata.vmId`` so an Azure VM merges into its Azure asset; software: Microsoft
Defender for Endpoint at ``agentVersion`` (the sensor's own version) and every row of the
software inventory at its ``softwareVersion``.  Machines that are only *discovered*
(``onboardingStatus`` other than Onboarded) run no Defender agent and are skipped.

One scope per tenant: ``defender:<tenant id>`` (``--tenant`` / ``AZURE_TENANT_ID``).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from collectors.base import AssetRecord, ProgressFn, ScopeBatch, SoftwareRecord
from collectors.consoles import (
    ConsoleApiError,
    ConsoleCredentialsError,
    check_base_url,
    compact,
    host_key,
    is_loopback,
    leading_version,
    one_asset_per_machine,
    text,
)
from inventory import config

NAME = "defender"
DEFAULT_BASE_URL = "https://api.securitycenter.microsoft.com"
TOKEN_SCOPE = "https://api.securitycenter.microsoft.com/.default"
MACHINES_PATH = "/api/machines"
SOFTWARE_PATH = "/api/machines/SoftwareInventoryByMachine"
DEFAULT_MACHINE_PAGE = 10_000        # $top maximum of /api/machines
DEFAULT_SOFTWARE_PAGE = 50_000       # the export's default pageSize (maximum 200,000)
DEFAULT_RETRY_TOTAL = 6

SOFTWARE_NAME = "Microsoft Defender for Endpoint"
SOFTWARE_PUBLISHER = "Microsoft Corporation"
# Windows 10, 11 and Server 2016 and later are NT 10.0: their OS version is 10.0.<build>.
_NT10 = re.compile(r"^windows(10|11|server(2016|2019|2022|2025))$", re.IGNORECASE)

#: ``() -> TokenCredential`` for ``planb collect defender`` and ``from_config``; None means
#: ``DefaultAzureCredential``.  Tests set it (there is no loopback Entra ID).
CREDENTIAL_FACTORY: Callable[[], Any] | None = None


def default_credential() -> Any:
    if CREDENTIAL_FACTORY is not None:
        return CREDENTIAL_FACTORY()
    from azure.identity import DefaultAzureCredential
    return DefaultAzureCredential()


def make_client(base_url: str, credential: Any, *, retry_total: int = DEFAULT_RETRY_TOTAL,
                retry_backoff: float = 0.8, transport: Any = None) -> Any:
    """An azure-core PipelineClient: bearer token, retries (429/5xx, Retry-After), JSON."""
    from azure.core import PipelineClient
    from azure.core.pipeline.policies import (
        BearerTokenCredentialPolicy,
        HeadersPolicy,
        RetryPolicy,
        UserAgentPolicy,
    )

    policies = [HeadersPolicy({"Accept": "application/json"}), UserAgentPolicy("planb-collector"),
                RetryPolicy(retry_total=retry_total, retry_backoff_factor=retry_backoff, retry_backoff_max=60),
                BearerTokenCredentialPolicy(credential, TOKEN_SCOPE)]
    kwargs = {"transport": transport} if transport is not None else {}
    return PipelineClient(base_url, policies=policies, **kwargs)


def _errors_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text() or "").strip()[:200] or "no error message"
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        return f"{error.get('code') or ''}: {error.get('message') or ''}".strip(": ")
    return "no error message"


# --------------------------------------------------------------------------- transform

def os_facts(machine: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    platform = text(machine.get("osPlatform")) or ""
    lowered = platform.lower()
    family = ("windows" if lowered.startswith("windows") else "linux" if lowered == "linux"
              else "macos" if lowered == "macos" else "other" if lowered else None)
    # "WindowsServer2022" -> "Windows Server 2022", "Windows11" -> "Windows 11"
    name = re.sub(r"(?<=[a-z])(?=[A-Z0-9])", " ", platform) if platform else None
    build = machine.get("osBuild")
    if family == "windows":
        version = f"10.0.{build}" if _NT10.match(platform) and isinstance(build, int) else None
    else:
        version = leading_version(text(machine.get("version")))
    return family, name, version


def short_name(dns_name: str) -> str:
    return dns_name.split(".", 1)[0]


def transform_machine(machine: Mapping[str, Any], software_rows: Sequence[Mapping[str, Any]]
                      ) -> tuple[AssetRecord, list[SoftwareRecord]]:
    dns = text(machine.get("computerDnsName"))
    key = host_key(short_name(dns)) if dns else f"defender:machine:{text(machine.get('id')) or ''}"
    family, os_name, os_version = os_facts(machine)
    vm = machine.get("vmMetadata") or {}
    vm_id = text(vm.get("vmId"))
    subscription = text(vm.get("subscriptionId"))
    attributes = compact({
        "defender_machine_id": text(machine.get("id")), "defender_health_status": text(machine.get("healthStatus")),
        "defender_onboarding_status": text(machine.get("onboardingStatus")),
        "defender_last_seen": text(machine.get("lastSeen")), "defender_first_seen": text(machine.get("firstSeen")),
        "defender_machine_group": text(machine.get("rbacGroupName")),
        "defender_tags": sorted({str(t) for t in machine.get("machineTags") or []}),
        "defender_risk_score": text(machine.get("riskScore")),
        "defender_exposure_level": text(machine.get("exposureLevel")),
        "aad_device_id": text(machine.get("aadDeviceId")), "local_ip": text(machine.get("lastIpAddress")),
        "os_release": text(machine.get("version")), "os_build": text(machine.get("osBuild")),
        "architecture": text(machine.get("osArchitecture")), "azure_resource_id": text(vm.get("resourceId")),
    })
    asset = AssetRecord(
        natural_key=key, name=short_name(dns) if dns else key, kind="vm" if vm_id else "host",
        provider="azure" if vm_id else None, account=subscription.lower() if subscription else None,
        hostname=dns, cloud_instance_id=vm_id.lower() if vm_id else None, os_family=family, os_name=os_name,
        os_version=os_version, attributes=attributes)
    software = []
    if text(machine.get("agentVersion")):
        software.append(SoftwareRecord(asset_key=key, name=SOFTWARE_NAME, publisher=SOFTWARE_PUBLISHER,
                                       version=text(machine.get("agentVersion")),
                                       attributes=compact({"health_status": text(machine.get("healthStatus"))})))
    for row in software_rows:
        name = text(row.get("softwareName"))
        if not name:
            continue
        software.append(SoftwareRecord(
            asset_key=key, name=name.replace("_", " "), publisher=text(row.get("softwareVendor")),
            version=text(row.get("softwareVersion")),
            attributes=compact({"end_of_support": text(row.get("endOfSupportStatus"))
                                if row.get("endOfSupportStatus") not in (None, "None") else None})))
    return asset, software


def onboarded(machine: Mapping[str, Any]) -> bool:
    return (text(machine.get("onboardingStatus")) or "Onboarded").lower() == "onboarded"


# --------------------------------------------------------------------------- the collector

class DefenderCollector:
    """Reads the machines (and their software) of one Defender for Endpoint tenant."""

    name = NAME

    def __init__(self, *, base_url: str | None = None, tenant: str | None = None, credential: Any = None,
                 software: bool = True, machine_page: int = DEFAULT_MACHINE_PAGE,
                 software_page: int = DEFAULT_SOFTWARE_PAGE, retry_total: int = DEFAULT_RETRY_TOTAL,
                 retry_backoff: float = 0.8, transport: Any = None) -> None:
        self.base_url = check_base_url(base_url or DEFAULT_BASE_URL, "the Defender for Endpoint API URL")
        self.tenant = (text(tenant) or text(os.environ.get("AZURE_TENANT_ID")) or "default").lower()
        self.credential = credential if credential is not None else default_credential()
        self.software = software
        self.machine_page = machine_page
        self.software_page = software_page
        self.client = make_client(self.base_url, self.credential, retry_total=retry_total,
                                  retry_backoff=retry_backoff, transport=transport)
        # Bearer tokens go over plain http only to a loopback stand-in (check_base_url allowed it).
        self._options = {"enforce_https": False} if is_loopback(urlparse(self.base_url).hostname) else {}

    def describe_scope(self) -> str:
        return f"defender {self.base_url} tenant={self.tenant}" + ("" if self.software else " (no software)")

    def planned_scopes(self) -> list[str]:
        return [self.scope_key]

    @property
    def scope_key(self) -> str:
        return f"{NAME}:{self.tenant}"

    def _get(self, url: str, what: str) -> dict[str, Any]:
        from azure.core.exceptions import AzureError, ClientAuthenticationError
        from azure.core.rest import HttpRequest

        for attempt in (1, 2):
            try:
                response = self.client.send_request(HttpRequest("GET", url), **self._options)
            except ClientAuthenticationError as exc:
                raise ConsoleCredentialsError(f"no token for {TOKEN_SCOPE}: {exc.message}") from exc
            except AzureError as exc:    # retries exhausted on a connection error...
                raise ConsoleApiError(f"{what}: {type(exc).__name__}: {exc.message}") from exc
            # On a 401 azure-core drops the cached token: the second attempt gets a new one.
            if response.status_code == 401 and attempt == 1:
                continue
            break
        if response.status_code in (401, 403):
            raise ConsoleCredentialsError(
                f"the Defender for Endpoint API refused the application while {what} (HTTP "
                f"{response.status_code}: {_errors_text(response)}); it needs Machine.Read.All"
                + (" and Software.Read.All" if self.software else ""))
        if response.status_code == 404 and what == "listing machines":
            return {"value": []}    # the API's answer when no machine was seen recently
        if response.status_code >= 400:
            raise ConsoleApiError(f"{what}: HTTP {response.status_code}: {_errors_text(response)}",
                                  response.status_code)
        body = response.json()
        if not isinstance(body, dict):
            raise ConsoleApiError(f"{what}: the answer is not a JSON object")
        return body

    def _paged(self, first: str, what: str) -> Iterator[list[dict[str, Any]]]:
        """Pages of ``value`` following ``@odata.nextLink`` -- only to this API's own host."""
        url: str | None = first
        origin = urlparse(self.base_url)
        while url:
            body = self._get(url, what)
            yield [v for v in body.get("value") or [] if isinstance(v, dict)]
            url = text(body.get("@odata.nextLink"))
            if url:
                link = urlparse(url)
                if (link.scheme, link.netloc) != (origin.scheme, origin.netloc):
                    raise ConsoleApiError(f"{what}: @odata.nextLink leaves {origin.netloc} ({link.netloc}); "
                                          "the bearer token is not sent there")

    def check_credentials(self) -> None:
        """A token and one small request: a refused credential stops the command before writing."""
        from azure.core.exceptions import ClientAuthenticationError

        try:
            self.credential.get_token(TOKEN_SCOPE)
        except ClientAuthenticationError as exc:
            raise ConsoleCredentialsError(f"no token for {TOKEN_SCOPE}: {exc.message}") from exc
        self._get(f"{self.base_url}{MACHINES_PATH}?$top=1", "listing machines")

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        machines: list[dict[str, Any]] = []
        rows: dict[str, list[dict[str, Any]]] = {}
        error = None
        try:
            for page in self._paged(f"{self.base_url}{MACHINES_PATH}?$top={self.machine_page}", "listing machines"):
                machines.extend(page)
                progress(f"defender: {len(machines)} machines read")
            if self.software:
                count = 0
                for page in self._paged(f"{self.base_url}{SOFTWARE_PATH}?pageSize={self.software_page}",
                                        "reading the software inventory"):
                    for row in page:
                        rows.setdefault(str(row.get("deviceId") or row.get("DeviceId")), []).append(row)
                    count += len(page)
                    progress(f"defender: {count} software inventory rows read")
        except (ConsoleApiError, ConsoleCredentialsError) as exc:
            error = str(exc)
        agents = [m for m in machines if onboarded(m)]
        if len(agents) < len(machines):
            progress(f"defender: {len(machines) - len(agents)} discovered (not onboarded) machines skipped")
        records = one_asset_per_machine([(*transform_machine(m, rows.get(str(m.get("id")), [])),
                                          text(m.get("lastSeen"))) for m in agents])
        batch = ScopeBatch(scope_key=self.scope_key, complete=error is None, error=error,
                           assets=[a for a, _ in records], software=[s for _, sw in records for s in sw])
        progress(f"{batch.scope_key}: {len(batch.assets)} machines, {len(batch.software)} software"
                 + (f" (INCOMPLETE: {error})" if error else ""))
        yield batch


def from_config() -> DefenderCollector | None:
    """Configured by ``PLANB_COLLECT_DEFENDER`` (true) and ``PLANB_COLLECT_DEFENDER_BASE_URL``;
    credentials only through azure-identity (``AZURE_*``, workload or managed identity)."""
    enabled = config.get("COLLECT_DEFENDER")
    base_url = config.get("COLLECT_DEFENDER_BASE_URL")
    if not enabled and not (enabled is None and base_url):
        return None
    return DefenderCollector(base_url=base_url)
