"""Azure collector: virtual machines (+ image, extensions, power state) and VM scale sets.

For each subscription two scopes are collected, each on its own::

    azure:<subscription>:vm      every VM of the subscription (VirtualMachines_ListAll),
                                 its image reference, power state and extensions
    azure:<subscription>:vmss    every scale set (group asset with ``min_up``) and its
                                 instances, with member-of edges

Scopes are per subscription and resource type, not per location: ListAll
pages across all locations at once, so a location-level split would not make
a failure any more local.  A failure anywhere in a scope (an HTTP error after
azure-core's retries, a page that fails mid-pagination, the scope deadline, a
record without its identity field) makes that scope's batch incomplete: its
records are upserted but nothing in it is retired; the other scope and the
other subscriptions go on.  Failures *below* the scope are isolated: when listing one
VM's extensions fails (after the retries, or refused), the VM is applied as usual and
only its software is left as it was (``ScopeBatch.software_unread``); when listing a scale
set's instances fails, the scale set is applied and its stored instances are kept as they
were (``ScopeBatch.members_unread``).  Either way the scope is reported partial.

Subscriptions × resource types are independent scopes, read up to ``concurrency`` at
once (yielded in order: a subscription's VMs before its scale sets, whose Flexible
members they are).

Records are read as the REST JSON (``model.as_dict()`` on current SDKs,
``serialize()`` on msrest-era ones) so the pure ``transform_*`` functions see
the documented Azure REST shapes whatever the SDK generation.

Credentials: azure-identity's ``DefaultAzureCredential`` (environment, workload
identity, managed identity, Azure CLI...), never stored or logged.  Sovereign
clouds: ``--base-url`` (e.g. https://management.usgovcloudapi.net) — the token
scope follows it — plus ``AZURE_AUTHORITY_HOST`` for the login endpoint.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any


from collectors.aws import (
    Deadline,
    MissingIdentity,
    ScopeDeadlineExceeded,
    _clean,
    facts_from_tags,
    min_up_from_tags,
)
from collectors.base import (
    AssetRecord,
    DependencyRecord,
    ProgressFn,
    ScopeBatch,
    SoftwareRecord,
    collect_concurrently,
)
from inventory import config

PROVIDER = "azure"
DEFAULT_DEADLINE_SECONDS = 900.0
DEFAULT_RETRY_TOTAL = 6
DEFAULT_BASE_URL = "https://management.azure.com"
DEFAULT_CONCURRENCY = 4

#: ``(subscription_id, base_url) -> ComputeManagementClient``.  Tests (and unusual set-ups,
#: e.g. a custom transport or credential) set this; ``planb collect azure`` uses it when set.
CLIENT_FACTORY: Callable[[str, str | None], Any] | None = None


def describe_error(exc: BaseException) -> str:
    """One line for a ScopeResult; Azure error bodies carry codes and messages, never tokens."""
    from azure.core.exceptions import AzureError, HttpResponseError

    if isinstance(exc, HttpResponseError):
        status = getattr(exc, "status_code", None)
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None) or ""
        message = getattr(error, "message", None) or exc.message or str(exc)
        return f"HTTP {status} {code}: {message}".replace("  ", " ").strip()
    if isinstance(exc, (AzureError, ScopeDeadlineExceeded, MissingIdentity)):
        return f"{type(exc).__name__}: {exc}"
    return f"unexpected {type(exc).__name__}: {exc}"


def rest_dict(model: Any) -> dict[str, Any]:
    """The REST JSON of an SDK model (current typespec models and msrest-era ones)."""
    if isinstance(model, dict):
        return model
    if isinstance(model, Mapping) and hasattr(model, "as_dict"):
        return model.as_dict()
    if hasattr(model, "serialize"):
        return model.serialize(keep_readonly=True)
    raise TypeError(f"not an Azure model: {type(model).__name__}")


def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    for part in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(part)
    return d


def resource_group_of(resource_id: str) -> str:
    """``/subscriptions/s/resourceGroups/RG/providers/...`` → ``RG``."""
    parts = resource_id.strip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == "resourcegroups":
            return parts[i + 1]
    raise MissingIdentity(f"resource id without resource group: {resource_id!r}")


def vm_key(subscription: str, vm_id: str) -> str:
    return f"azure:vm:{subscription}:{vm_id}".lower()


def vmss_key(subscription: str, resource_id: str) -> str:
    """Scale sets are keyed by resource group and name (their resource id, lowercased)."""
    parts = resource_id.strip("/").split("/")
    name = parts[-1]
    return f"azure:vmss:{subscription}:{resource_group_of(resource_id)}/{name}".lower()


def scope_key(subscription: str, resource_type: str) -> str:
    return f"azure:{subscription}:{resource_type}".lower()


def power_state(instance_view: Mapping[str, Any] | None) -> str | None:
    for status in (instance_view or {}).get("statuses") or []:
        code = status.get("code") or ""
        if code.startswith("PowerState/"):
            return code.split("/", 1)[1].lower()
    return None


def os_family_of(os_type: str | None) -> str | None:
    return {"windows": "windows", "linux": "linux"}.get((os_type or "").lower())


def image_software(asset_key: str, image: Mapping[str, Any] | None) -> list[SoftwareRecord]:
    """A marketplace image as software (origin "image"): publisher, offer/sku.

    The image version (``exactVersion``, e.g. 20348.2227.240104) says which image the VM
    was built from, not the OS version running now (the guest has been patched since), so
    it is kept as the installation's ``image_version`` attribute and the product's version
    is left unknown."""
    if not image:
        return []
    publisher, offer, sku = image.get("publisher"), image.get("offer"), image.get("sku")
    facts = _clean({"image_version": image.get("exactVersion") or image.get("version")})
    if publisher or offer:
        name = " ".join(p for p in (offer, sku) if p)
        return [SoftwareRecord(asset_key=asset_key, name=name or str(publisher), publisher=publisher,
                               version=None, origin="image", attributes=facts)]
    gallery = image.get("sharedGalleryImageId") or image.get("communityGalleryImageId") or image.get("id")
    if gallery:  # custom or gallery image: no publisher to attribute, keep it visible
        return [SoftwareRecord(asset_key=asset_key, name=str(gallery).rstrip("/").split("/")[-1],
                               publisher=None, version=None, origin="image", attributes=facts)]
    return []


def extension_software(asset_key: str, extensions: Sequence[Mapping[str, Any]]) -> list[SoftwareRecord]:
    """VM extensions (security agents: CrowdStrike.Falcon, Qualys, Microsoft.Azure.Security...).

    ``typeHandlerVersion`` is the version of the extension *handler*, not of the product it
    installs: CrowdStrike's FalconSensorWindows handler says "1.0" whatever sensor the Falcon
    update policy put on the VM.  So the product's version is recorded as unknown (a
    version-narrowed blast radius lists these VMs as "version unknown — check by hand") and
    the handler version is kept as an attribute, until a source that knows the product's
    version (the EDR console, osquery, SSM, the host) supplies it."""
    software = []
    for ext in extensions:
        props = ext.get("properties") or {}
        publisher = props.get("publisher")
        ext_type = props.get("type") or ext.get("name")
        if not (publisher or ext_type):
            continue
        facts = _clean({"handler_version": props.get("typeHandlerVersion"), "extension_type": ext_type,
                        "extension_name": ext.get("name")})
        software.append(SoftwareRecord(asset_key=asset_key, name=str(ext_type or publisher), publisher=publisher,
                                       version=None, origin="extension", attributes=facts))
    return software


def _image_text(image: Mapping[str, Any] | None) -> str | None:
    if not image:
        return None
    parts = [image.get(k) for k in ("publisher", "offer", "sku")]
    if any(parts):
        return ":".join(p or "" for p in parts) + f":{image.get('exactVersion') or image.get('version') or ''}"
    return image.get("id") or image.get("sharedGalleryImageId") or image.get("communityGalleryImageId")


def transform_vm(vm: Mapping[str, Any], subscription: str, extensions: Sequence[Mapping[str, Any]],
                 status: str | None) -> tuple[AssetRecord, list[SoftwareRecord]]:
    """One VirtualMachine (REST JSON) → asset + image and extension software."""
    props = vm.get("properties") or {}
    vm_id = props.get("vmId")
    if not vm_id:
        raise MissingIdentity(f"virtual machine {vm.get('id') or vm.get('name')!r} without properties.vmId")
    key = vm_key(subscription, vm_id)
    tags = dict(vm.get("tags") or {})
    image = _get(props, "storageProfile", "imageReference")
    instance_view = props.get("instanceView") or {}
    zones = vm.get("zones") or []
    asset = AssetRecord(
        natural_key=key, name=vm.get("name") or vm_id, kind="vm", provider=PROVIDER,
        account=subscription.lower(), region=(vm.get("location") or "").lower() or None,
        zone=str(zones[0]) if zones else None,
        hostname=_get(props, "osProfile", "computerName") or instance_view.get("computerName"),
        cloud_instance_id=str(vm_id).lower(),
        os_family=os_family_of(_get(props, "storageProfile", "osDisk", "osType")),
        os_name=instance_view.get("osName") or (" ".join(p for p in (_get(image, "offer"), _get(image, "sku")) if p)
                                                or None),
        os_version=instance_view.get("osVersion"),
        tags=tags,
        attributes=_clean({
            "resource_id": vm.get("id"), "resource_group": resource_group_of(vm["id"]) if vm.get("id") else None,
            "vm_size": _get(props, "hardwareProfile", "vmSize"), "power_state": status or power_state(instance_view),
            "provisioning_state": props.get("provisioningState"), "image": _image_text(image),
            "scale_set": _get(props, "virtualMachineScaleSet", "id"), "zones": list(zones),
            "priority": props.get("priority"), "license_type": props.get("licenseType"),
        }),
        **facts_from_tags(tags),
    )
    return asset, image_software(key, image) + extension_software(key, extensions)


def transform_scale_set(vmss: Mapping[str, Any], subscription: str) -> AssetRecord:
    resource_id = vmss.get("id")
    if not resource_id:
        raise MissingIdentity(f"scale set {vmss.get('name')!r} without id")
    props = vmss.get("properties") or {}
    profile = props.get("virtualMachineProfile") or {}
    tags = dict(vmss.get("tags") or {})
    min_up, note = min_up_from_tags(tags)
    image = _get(profile, "storageProfile", "imageReference")
    return AssetRecord(
        natural_key=vmss_key(subscription, resource_id), name=vmss.get("name") or resource_id, kind="scale_set",
        provider=PROVIDER, account=subscription.lower(), region=(vmss.get("location") or "").lower() or None,
        os_family=os_family_of(_get(profile, "storageProfile", "osDisk", "osType")),
        tags=tags, min_up=min_up,
        attributes=_clean({
            "resource_id": resource_id, "resource_group": resource_group_of(resource_id),
            "unique_id": props.get("uniqueId"), "orchestration_mode": props.get("orchestrationMode") or "Uniform",
            "sku": _get(vmss, "sku", "name"), "capacity": _get(vmss, "sku", "capacity"),
            "zones": list(vmss.get("zones") or []), "image": _image_text(image), "min_up_note": note,
        }),
        **facts_from_tags(tags),
    )


def transform_scale_set_vm(instance: Mapping[str, Any], vmss: Mapping[str, Any], subscription: str
                           ) -> tuple[AssetRecord, list[SoftwareRecord]]:
    """An instance of a Uniform scale set: a VM asset, with the scale set's extensions."""
    props = instance.get("properties") or {}
    profile = _get(vmss, "properties", "virtualMachineProfile") or {}
    vm_id = props.get("vmId")
    if not vm_id:
        raise MissingIdentity(f"scale set instance {instance.get('id') or instance.get('name')!r} without vmId")
    key = vm_key(subscription, vm_id)
    tags = dict(instance.get("tags") or vmss.get("tags") or {})
    image = _get(props, "storageProfile", "imageReference") or _get(profile, "storageProfile", "imageReference")
    os_type = _get(props, "storageProfile", "osDisk", "osType") or _get(profile, "storageProfile", "osDisk", "osType")
    instance_view = props.get("instanceView") or {}
    zones = instance.get("zones") or []
    asset = AssetRecord(
        natural_key=key, name=instance.get("name") or vm_id, kind="vm", provider=PROVIDER,
        account=subscription.lower(), region=(instance.get("location") or vmss.get("location") or "").lower() or None,
        zone=str(zones[0]) if zones else None,
        hostname=_get(props, "osProfile", "computerName") or instance_view.get("computerName"),
        cloud_instance_id=str(vm_id).lower(), os_family=os_family_of(os_type),
        os_name=instance_view.get("osName") or (" ".join(p for p in (_get(image, "offer"), _get(image, "sku")) if p)
                                                or None),
        os_version=instance_view.get("osVersion"), tags=tags,
        attributes=_clean({
            "resource_id": instance.get("id"), "scale_set": vmss.get("id"), "instance_id": instance.get("instanceId"),
            "vm_size": _get(instance, "sku", "name") or _get(props, "hardwareProfile", "vmSize"),
            "power_state": power_state(instance_view), "provisioning_state": props.get("provisioningState"),
            "image": _image_text(image), "latest_model_applied": props.get("latestModelApplied"),
        }),
        **facts_from_tags(tags),
    )
    extensions = _get(profile, "extensionProfile", "extensions") or []
    return asset, image_software(key, image) + extension_software(key, extensions)


# --------------------------------------------------------------------------- the collector

def default_client_factory(base_url: str | None = None, *, credential: Any = None,
                           retry_total: int = DEFAULT_RETRY_TOTAL,
                           timeout: float = DEFAULT_DEADLINE_SECONDS,
                           client_kwargs: dict[str, Any] | None = None) -> Callable[[str], Any]:
    """Clients with DefaultAzureCredential, azure-core's RetryPolicy (honours Retry-After) bounded
    by ``retry_total`` retries and ``timeout`` seconds overall, and the cloud's token scope.

    ``client_kwargs`` go to ``ComputeManagementClient`` as they are (e.g. ``transport``).
    """
    from azure.core.pipeline.policies import RetryPolicy
    from azure.mgmt.compute import ComputeManagementClient

    if credential is None:
        from azure.identity import DefaultAzureCredential
        credential = DefaultAzureCredential()
    shared = {"credential": credential}

    def factory(subscription: str) -> Any:
        kwargs: dict[str, Any] = {
            "retry_policy": RetryPolicy(retry_total=retry_total, retry_backoff_max=60, timeout=int(timeout)),
            "connection_timeout": 15, "read_timeout": 120,
        }
        if base_url:
            kwargs["base_url"] = base_url.rstrip("/")
            kwargs["credential_scopes"] = [base_url.rstrip("/") + "/.default"]
        kwargs.update(client_kwargs or {})
        return ComputeManagementClient(shared["credential"], subscription, **kwargs)

    return factory


class AzureCollector:
    """Collects VMs and scale sets of one or more subscriptions."""

    name = "azure"
    RESOURCE_TYPES = ("vm", "vmss")

    def __init__(self, subscriptions: Sequence[str], *, client_factory: Callable[[str], Any] | None = None,
                 base_url: str | None = None, resource_types: Sequence[str] = RESOURCE_TYPES,
                 deadline_seconds: float = DEFAULT_DEADLINE_SECONDS, retry_total: int = DEFAULT_RETRY_TOTAL,
                 concurrency: int = DEFAULT_CONCURRENCY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not subscriptions:
            raise ValueError("at least one Azure subscription id is required")
        unknown = sorted(set(resource_types) - set(self.RESOURCE_TYPES))
        if unknown:
            raise ValueError(f"unknown Azure resource types: {', '.join(unknown)}")
        self.subscriptions = [s.strip().lower() for s in dict.fromkeys(subscriptions) if s.strip()]
        self.base_url = base_url
        self.resource_types = [t for t in self.RESOURCE_TYPES if t in set(resource_types)]
        self.deadline_seconds = deadline_seconds
        self._clock = clock
        self._factory = client_factory or default_client_factory(base_url, retry_total=retry_total,
                                                                 timeout=deadline_seconds)
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self.concurrency = concurrency

    def client(self, subscription: str) -> Any:
        with self._clients_lock:
            if subscription not in self._clients:
                self._clients[subscription] = self._factory(subscription)
            return self._clients[subscription]

    def describe_scope(self) -> str:
        text = f"azure subscriptions={','.join(self.subscriptions)} types={','.join(self.resource_types)}"
        if self.base_url:
            text += f" base_url={self.base_url}"
        return text if len(text) <= 1000 else text[:997] + "..."

    def planned_scopes(self) -> list[str]:
        """Known before any API call, so ingest locks them up front and an overlapping run
        over the same subscription refuses to start them."""
        return [scope_key(s, t) for s in self.subscriptions for t in self.resource_types]

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        tasks: list[Callable[[], ScopeBatch]] = [
            lambda s=subscription, t=resource_type: self._collect_scope(s, t, progress)
            for subscription in self.subscriptions for resource_type in self.resource_types]
        yield from collect_concurrently(tasks, self.concurrency, name="planb-azure")

    def _collect_scope(self, subscription: str, resource_type: str, progress: ProgressFn) -> ScopeBatch:
        batch = ScopeBatch(scope_key=scope_key(subscription, resource_type))
        deadline = Deadline(self.deadline_seconds, self._clock)
        started = time.monotonic()
        try:
            client = self.client(subscription)
            if resource_type == "vm":
                self.collect_vms(client, subscription, batch, deadline, progress)
            else:
                self.collect_scale_sets(client, subscription, batch, deadline)
        except Exception as exc:  # noqa: BLE001 - any failure makes only this scope incomplete
            batch.complete = False
            batch.error = describe_error(exc)
            progress(f"{batch.scope_key}: INCOMPLETE after {len(batch.assets)} assets: {batch.error}")
        else:
            partial = batch.software_unread or batch.members_unread
            progress(f"{batch.scope_key}: {len(batch.assets)} assets, {len(batch.software)} software, "
                     f"{len(batch.dependencies)} dependencies in {time.monotonic() - started:.1f}s"
                     + (f"; PARTIAL: {batch.error}" if partial else ""))
        return batch

    @staticmethod
    def _pages(paged: Any, deadline: Deadline, doing: str) -> Iterator[dict[str, Any]]:
        """Items of an azure-core ItemPaged, checking the deadline at every page."""
        for page in paged.by_page():
            deadline.check(doing)
            for item in page:
                yield rest_dict(item)

    def _power_states(self, client: Any, deadline: Deadline, progress: ProgressFn, subscription: str
                      ) -> dict[str, str]:
        """Power state per VM id from ListAll(statusOnly=true).

        Only an attribute: when this call fails the VMs are still known in full,
        so the scope stays complete and the power state is just left out.
        """
        from azure.core.exceptions import AzureError

        states: dict[str, str] = {}
        try:
            for vm in self._pages(client.virtual_machines.list_all(status_only="true"), deadline,
                                  "listing VM power states"):
                state = power_state(_get(vm, "properties", "instanceView"))
                if vm.get("id") and state:
                    states[vm["id"].lower()] = state
        except AzureError as exc:
            progress(f"azure:{subscription}:vm: power states unavailable: {describe_error(exc)}")
        return states

    def collect_vms(self, client: Any, subscription: str, batch: ScopeBatch, deadline: Deadline,
                    progress: ProgressFn) -> None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        vms = list(self._pages(client.virtual_machines.list_all(), deadline, "listing virtual machines"))
        states = self._power_states(client, deadline, progress, subscription) if vms else {}
        failure: AzureError | None = None
        for vm in vms:
            if not vm.get("id") or not vm.get("name"):
                raise MissingIdentity(f"virtual machine without id/name: {vm.get('id') or vm.get('name')!r}")
            deadline.check(f"listing extensions of {vm['name']}")
            extensions: list[dict[str, Any]] = []
            unread = failure is not None and _refused(failure)   # denied once: the rest would be too
            if not unread:
                try:
                    result = client.virtual_machine_extensions.list(resource_group_of(vm["id"]), vm["name"])
                    extensions = [rest_dict(e) for e in (rest_dict(result).get("value") or [])]
                except ResourceNotFoundError:
                    pass  # deleted since the listing: the next run retires it
                except AzureError as exc:  # after azure-core's retries: below the scope
                    failure = failure or exc
                    unread = True
            asset, software = transform_vm(vm, subscription, extensions, states.get(vm["id"].lower()))
            batch.assets.append(asset)
            batch.software.extend(software)
            if unread:
                batch.software_unread.append(asset.natural_key)
        if failure is not None:
            batch.error = (f"VM extensions: {describe_error(failure)}: software of {len(batch.software_unread)} of "
                           f"{len(vms)} VM(s) not read, left as it was")

    def collect_scale_sets(self, client: Any, subscription: str, batch: ScopeBatch, deadline: Deadline) -> None:
        from azure.core.exceptions import AzureError

        failures: list[str] = []
        for vmss in self._pages(client.virtual_machine_scale_sets.list_all(), deadline, "listing scale sets"):
            group = transform_scale_set(vmss, subscription)
            batch.assets.append(group)
            try:
                self._scale_set_members(client, subscription, vmss, group, batch, deadline)
            except AzureError as exc:  # after azure-core's retries: only this scale set's members are unknown
                batch.members_unread.append(group.natural_key)
                failures.append(f"{vmss.get('name')}: {describe_error(exc)}")
        if failures:
            batch.error = (f"instances of {len(failures)} scale set(s) not listed, kept as they were: "
                           + "; ".join(failures[:3]) + (" …" if len(failures) > 3 else ""))

    def _scale_set_members(self, client: Any, subscription: str, vmss: dict[str, Any], group: AssetRecord,
                           batch: ScopeBatch, deadline: Deadline) -> None:
        flexible = (_get(vmss, "properties", "orchestrationMode") or "").lower() == "flexible"
        if flexible:
            # Flexible members are ordinary VMs (collected by the vm scope); only the edges live here.
            members = self._pages(
                client.virtual_machines.list_all(filter=f"'virtualMachineScaleSet/id' eq '{vmss['id']}'"),
                deadline, f"listing members of {vmss.get('name')}")
            for vm in members:
                vm_id = _get(vm, "properties", "vmId")
                if not vm_id:
                    raise MissingIdentity(f"member of {vmss.get('name')!r} without vmId")
                batch.dependencies.append(DependencyRecord(dependent_key=group.natural_key,
                                                           dependency_key=vm_key(subscription, vm_id),
                                                           kind="member-of", strength="hard"))
            return
        instances = self._pages(
            client.virtual_machine_scale_set_vms.list(resource_group_of(vmss["id"]), vmss["name"],
                                                      expand="instanceView"),
            deadline, f"listing instances of {vmss.get('name')}")
        for instance in instances:
            asset, software = transform_scale_set_vm(instance, vmss, subscription)
            batch.assets.append(asset)
            batch.software.extend(software)
            batch.dependencies.append(DependencyRecord(dependent_key=group.natural_key,
                                                       dependency_key=asset.natural_key,
                                                       kind="member-of", strength="hard"))


def _refused(exc: BaseException) -> bool:
    """An authorisation failure (it will not get better for the next VM)."""
    return getattr(exc, "status_code", None) in (401, 403)


def client_factory_for(base_url: str | None) -> Callable[[str], Any] | None:
    """The module hook ``CLIENT_FACTORY`` bound to a base URL, or None for the default clients."""
    if CLIENT_FACTORY is None:
        return None
    hook = CLIENT_FACTORY
    return lambda subscription: hook(subscription, base_url)


def from_config() -> AzureCollector | None:
    """From ``PLANB_COLLECT_AZURE_SUBSCRIPTIONS`` (and ``PLANB_AZURE_BASE_URL``); None when not configured."""
    subscriptions = config.get("COLLECT_AZURE_SUBSCRIPTIONS") or []
    if not subscriptions:
        return None
    base_url = config.get("AZURE_BASE_URL")
    deadline = config.get("COLLECT_AZURE_DEADLINE") or DEFAULT_DEADLINE_SECONDS
    return AzureCollector(subscriptions, base_url=base_url, deadline_seconds=deadline,
                          client_factory=client_factory_for(base_url))
