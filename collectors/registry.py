"""Which collector modules exist: name -> module, imported lazily.

Each source module exposes::

    add_cli(collect_group: click.Group) -> None   # adds ``planb collect <name> ...``
    from_config() -> Collector | None              # for ``planb collect all``: None = not configured

Order matters for ``planb collect all``: cloud APIs first, so host-side
sources (host, osquery) that name a cloud instance merge into an asset that
already exists (the other order works too — ``collectors.ingest`` re-keys — but
this one does less work).
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

SOURCES: dict[str, str] = {
    "aws": "collectors.aws",
    "azure": "collectors.azure",
    "host": "collectors.host",
    "osquery": "collectors.osquery",
}


def load(name: str) -> ModuleType | None:
    """The module for source ``name``, or None when it does not exist (yet)."""
    module_name = SOURCES.get(name)
    if module_name is None:
        return None
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
