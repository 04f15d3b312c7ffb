"""Which collector modules exist: name -> module, imported lazily.

Each source module exposes::

    from_config() -> Collector | None     # for ``planb collect all``: None = not configured

and its ``planb collect <name>`` command lives with the CLI, in
``inventory/cli/collect_<name>.py`` (an attribute ``command``): collectors never
import click, Flask or the CLI.

Order matters for ``planb collect all``: cloud APIs first, so host-side
sources (host, osquery) that name a cloud instance merge into an asset that
already exists (the other order works too — ``collectors.ingest`` re-keys — but
this one does less work).
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# name -> (module, what it collects: the one-line help of 'planb collect <name>')
SOURCES: dict[str, tuple[str, str]] = {
    "aws": ("collectors.aws", "Collect EC2, ELBv2, RDS, EKS and Lambda from AWS accounts and regions."),
    "azure": ("collectors.azure",
              "Collect VMs (image, extensions, power state) and scale sets from Azure subscriptions."),
    "kubernetes": ("collectors.kubernetes", "Collect nodes, pods, workloads, disruption budgets and Services "
                                            "from Kubernetes clusters."),
    "host": ("collectors.host", "Collect this machine: OS, kernel and installed packages (dpkg, rpm, "
                                "Windows registry, macOS apps)."),
    "osquery": ("collectors.osquery", "Import osquery results: FILES are results logs (several hosts) or "
                                      "osqueryi --json output."),
    # Agent consoles after the host-side files: they merge into cloud and host assets alike.
    "crowdstrike": ("collectors.crowdstrike",
                    "Collect the hosts of a CrowdStrike Falcon console and their sensor versions."),
    "defender": ("collectors.defender",
                 "Collect the machines of Microsoft Defender for Endpoint and their software inventory."),
    "sentinelone": ("collectors.sentinelone",
                    "Collect the agents of a SentinelOne management console and their versions."),
    "fleet": ("collectors.fleet", "Collect hosts and their software from a Fleet server, one scope per team "
                                  "(token: FLEET_API_TOKEN)."),
}


def load(name: str) -> ModuleType | None:
    """The module for source ``name``, or None when it does not exist (yet)."""
    entry = SOURCES.get(name)
    if entry is None:
        return None
    module_name = entry[0]
    try:
        if importlib.util.find_spec(module_name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(module_name)


def available() -> dict[str, ModuleType]:
    """Every source module that exists, in ``SOURCES`` order."""
    found: dict[str, ModuleType] = {}
    for name in SOURCES:
        module = load(name)
        if module is not None:
            found[name] = module
    return found
