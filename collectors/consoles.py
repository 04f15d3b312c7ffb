"""What the agent-console collectors (CrowdStrike Falcon, Microsoft Defender for Endpoint,
SentinelOne) share: where they may send a secret, how a machine is keyed, and the
errors a command turns into a one-line message before anything is written.

One machine, one asset: a console's record of a cloud instance carries the instance id
(``cloud_instance_id``), which ``collectors.ingest`` matches to the AWS/Azure asset
whatever the natural key; any other machine is keyed ``host:<hostname>`` like the
host and osquery collectors key it, so the same on-premises machine seen by osquery
and by an EDR console is one asset.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from inventory.config import is_loopback_host as is_loopback

from collectors.base import AssetRecord, SoftwareRecord


class ConsoleCredentialsError(Exception):
    """The console refused (or was never given) the credentials: nothing was read."""


class ConsoleApiError(Exception):
    """The console answered a request with an error after the retries the collector allows."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def check_base_url(url: str, what: str) -> str:
    """``url`` without its trailing slash, when a secret may be sent there: https, or plain
    http to a loopback address (a local stand-in); ValueError saying why not otherwise."""
    parts = urlparse(url.strip())
    if parts.scheme == "https" and parts.hostname:
        return url.strip().rstrip("/")
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return url.strip().rstrip("/")
    if parts.scheme == "http":
        raise ValueError(f"{what} must be an https:// URL (plain http:// only to a loopback address, "
                         f"for a local stand-in): credentials are never sent in clear")
    raise ValueError(f"{what} must be an https:// URL, got {url!r}")


def host_key(hostname: str) -> str:
    """The natural key of a machine known by its host name (the host and osquery collectors' key)."""
    return f"host:{hostname.strip().lower()}"


_LEADING_NUMBER = re.compile(r"\d+(?:\.\d+)*")


def leading_version(text: str | None) -> str | None:
    """The first dotted number in ``text`` ("RHEL 9.4" -> "9.4", "Ubuntu 22.04" -> "22.04")."""
    match = _LEADING_NUMBER.search(text or "")
    return match.group(0) if match else None


def text(value: Any) -> str | None:
    """A stripped string, or None for nothing/blank."""
    if value is None:
        return None
    result = str(value).strip()
    return result or None


def compact(values: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values so attributes stay small and stable between runs."""
    return {k: v for k, v in values.items() if v not in (None, "", [], {})}


Machine = tuple[AssetRecord, list[SoftwareRecord]]


def one_asset_per_machine(entries: Sequence[tuple[AssetRecord, list[SoftwareRecord], str | None]]
                          ) -> list[Machine]:
    """A console's entries -> one (asset, software) per machine.

    * A re-imaged or re-installed machine keeps its name (or cloud instance) and gets a new
      agent id; the console lists both for a while: the entry seen last (``seen``, an ISO
      8601 time) is the machine.
    * Two *different* cloud instances with one host name (default names such as
      ip-10-0-1-23 repeat across VPCs) must not become one asset: those get their instance
      id in the key.
    """
    newest: dict[str, tuple[AssetRecord, list[SoftwareRecord], str]] = {}
    for asset, software, seen in entries:
        ident = f"cloud:{asset.cloud_instance_id}" if asset.cloud_instance_id else asset.natural_key
        current = newest.get(ident)
        if current is None or (seen or "") > current[2]:
            newest[ident] = (asset, software, seen or "")
    per_key: dict[str, int] = {}
    for asset, _software, _seen in newest.values():
        per_key[asset.natural_key] = per_key.get(asset.natural_key, 0) + 1
    machines: list[Machine] = []
    for asset, software, _seen in newest.values():
        if per_key[asset.natural_key] > 1 and asset.cloud_instance_id:
            asset.natural_key = f"{asset.natural_key}:{asset.cloud_instance_id}"
            for record in software:
                record.asset_key = asset.natural_key
        machines.append((asset, software))
    return machines
