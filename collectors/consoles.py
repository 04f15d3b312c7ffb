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
from typing import Any
from urllib.parse import urlparse


class ConsoleCredentialsError(Exception):
    """The console refused (or was never given) the credentials: nothing was read."""


class ConsoleApiError(Exception):
    """The console answered a request with an error after the retries the collector allows."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
