"""The host collector: this machine, its OS and its installed packages.

What it reads (only what exists on the running OS; nothing is installed or
changed, no network is touched):

* hostname (``socket.gethostname``), OS family/name/version (``platform``;
  ``/etc/os-release`` on Linux, the registry's ``ProductName`` on Windows,
  ``sw_vers``' numbers via ``platform.mac_ver`` on macOS), kernel release and
  architecture;
* on EC2 (Nitro) the instance id from DMI (``/sys/class/dmi/id/board_asset_tag``),
  so the host merges into the asset the AWS collector found (one machine, one asset);
* installed packages with their publisher:
  - Debian/Ubuntu: ``dpkg-query`` (package, version, *Maintainer*);
  - RHEL/Fedora/SUSE (or wherever ``rpm`` exists): ``rpm -qa`` (name, version-release, *Vendor*/Packager);
  - Windows: the uninstall registry (``HKLM``/``HKCU`` ``...\\CurrentVersion\\Uninstall``, 64- and
    32-bit views): ``DisplayName``, ``DisplayVersion``, ``Publisher``;
  - macOS: ``system_profiler SPApplicationsDataType -json`` (apps and their signing
    authority) and ``pkgutil --pkgs`` (installer receipts, named by bundle id).

One scope per machine: ``host:<hostname>``.  The batch is complete only when
every package source that exists on the machine answered; a failing
``dpkg-query`` makes the scope partial (nothing removed).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from collectors.base import AssetRecord, ProgressFn, ScopeBatch, SoftwareRecord

NAME = "host"
COMMAND_TIMEOUT = 120

Runner = Callable[[list[str]], str]

DPKG_FORMAT = "${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Maintainer}\\t${Architecture}\\n"
RPM_FORMAT = "%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{VENDOR}\\t%{PACKAGER}\\t%{ARCH}\\n"
_EC2_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")
# OS publisher hints for the OS record (attribution still decides the vendor).
_OS_PUBLISHERS = {"debian": "Debian", "ubuntu": "Canonical", "rhel": "Red Hat", "centos": "CentOS Project",
                  "fedora": "Red Hat", "amzn": "Amazon Web Services", "sles": "SUSE", "opensuse-leap": "SUSE",
                  "ol": "Oracle", "windows": "Microsoft Corporation", "macos": "Apple Inc."}


def run_command(argv: list[str]) -> str:
    """Run a read-only command and return its stdout (raises on failure)."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
                            env={**os.environ, "LC_ALL": "C.UTF-8"})
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {result.returncode}: {result.stderr.strip()[:300]}")
    return result.stdout


@dataclass
class HostFacts:
    hostname: str
    os_family: str
    os_name: str | None
    os_version: str | None
    os_id: str | None
    kernel: str | None
    arch: str | None
    cloud_instance_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Package:
    name: str
    version: str | None
    publisher: str | None
    origin: str = "package"


# -- parsing (pure, tested with canned outputs) ------------------------------------------------

def parse_dpkg(output: str) -> list[Package]:
    """``dpkg-query -W -f DPKG_FORMAT`` output; only installed packages (status ``ii``)."""
    packages = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        status, name, version, maintainer = parts[0].strip(), parts[1], parts[2], parts[3]
        if not status.startswith("ii") or not name:
            continue
        packages.append(Package(name=name, version=version or None, publisher=maintainer.strip() or None))
    return packages


def parse_rpm(output: str) -> list[Package]:
    """``rpm -qa --qf RPM_FORMAT`` output; the Vendor, else the Packager, is the publisher."""
    packages = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0] or parts[0] == "gpg-pubkey":
            continue
        vendor = parts[2].strip()
        packager = parts[3].strip() if len(parts) > 3 else ""
        publisher = next((p for p in (vendor, packager) if p and p != "(none)"), None)
        version = parts[1].strip()
        packages.append(Package(name=parts[0], version=None if version.startswith("(none)") else version,
                                publisher=publisher))
    return packages


_SIGNER = re.compile(r"^(?:Developer ID Application|Apple Mac OS Application Signing|Apple iPhone OS "
                     r"Application Signing|3rd Party Mac Developer Application):\s*(.+?)(?:\s*\([A-Z0-9]{10}\))?$")


def parse_system_profiler(output: str) -> list[Package]:
    """``system_profiler SPApplicationsDataType -json``: name, version, signing authority."""
    data = json.loads(output or "{}")
    packages = []
    for app in data.get("SPApplicationsDataType") or []:
        name = app.get("_name")
        if not name:
            continue
        publisher = None
        signed_by = app.get("signed_by") or []
        if signed_by:
            match = _SIGNER.match(signed_by[0])
            publisher = match.group(1) if match else None
        if publisher is None and app.get("obtained_from") == "apple":
            publisher = "Apple Inc."
        packages.append(Package(name=name, version=app.get("version"), publisher=publisher, origin="package"))
    return packages


def parse_pkgutil(output: str) -> list[Package]:
    """``pkgutil --pkgs``: installer receipt ids (``com.crowdstrike.falcon.pkg``)."""
    return [Package(name=line.strip(), version=None, publisher=None, origin="bundle-id")
            for line in output.splitlines() if line.strip()]


def read_windows_uninstall(winreg: Any = None) -> list[Package]:
    """Installed programs from the uninstall registry keys (64/32-bit views, machine and user)."""
    if winreg is None:
        import winreg  # type: ignore[import-not-found,no-redef]  # Windows only
    roots = [
        (winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"),
        (winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall"),
        (winreg.HKEY_CURRENT_USER, r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"),
    ]
    packages: dict[tuple[str, str | None], Package] = {}
    for hive, path in roots:
        try:
            key = winreg.OpenKey(hive, path)
        except OSError:
            continue
        with key:
            index = 0
            while True:
                try:
                    sub_name = winreg.EnumKey(key, index)
                except OSError:
                    break
                index += 1
                try:
                    with winreg.OpenKey(key, sub_name) as sub:
                        values = {}
                        for value_name in ("DisplayName", "DisplayVersion", "Publisher", "SystemComponent",
                                           "ParentKeyName"):
                            try:
                                values[value_name] = winreg.QueryValueEx(sub, value_name)[0]
                            except OSError:
                                values[value_name] = None
                except OSError:
                    continue
                name = (values["DisplayName"] or "").strip()
                # Updates and components hidden from "Programs and Features" are not products.
                if not name or values["SystemComponent"] == 1 or values["ParentKeyName"]:
                    continue
                version = (str(values["DisplayVersion"]).strip() or None) if values["DisplayVersion"] else None
                publisher = (str(values["Publisher"]).strip() or None) if values["Publisher"] else None
                packages.setdefault((name, version), Package(name, version, publisher))
    return list(packages.values())


def read_os_release(path: str = "/etc/os-release") -> dict[str, str]:
    try:
        return platform.freedesktop_os_release()
    except OSError:
        pass
    values: dict[str, str] = {}
    try:
        for line in Path(path).read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                values[k.strip()] = v.strip().strip('"')
    except OSError:
        pass
    return values


def ec2_instance_id(dmi_dir: str = "/sys/class/dmi/id") -> str | None:
    """The EC2 instance id Nitro instances expose in DMI (no network call)."""
    for name in ("board_asset_tag",):
        try:
            value = Path(dmi_dir, name).read_text().strip()
        except OSError:
            continue
        if _EC2_INSTANCE_ID.match(value):
            return value
    return None


def gather_facts(hostname: str | None = None) -> HostFacts:
    system = platform.system()
    host = (hostname or socket.gethostname() or "").strip()
    arch = platform.machine() or None
    kernel = platform.release() or None
    if system == "Linux":
        release = read_os_release()
        os_id = release.get("ID")
        return HostFacts(hostname=host, os_family="linux",
                         os_name=release.get("PRETTY_NAME") or release.get("NAME") or "Linux",
                         os_version=release.get("VERSION_ID"), os_id=os_id, kernel=kernel, arch=arch,
                         cloud_instance_id=ec2_instance_id(),
                         attributes={k: v for k, v in {"os_codename": release.get("VERSION_CODENAME"),
                                                       "os_platform": os_id}.items() if v})
    if system == "Windows":
        name, build = _windows_product()
        return HostFacts(hostname=host, os_family="windows", os_name=name, os_version=platform.version(),
                         os_id="windows", kernel=kernel, arch=arch,
                         attributes={"os_build": build} if build else {})
    if system == "Darwin":
        version = platform.mac_ver()[0] or None
        return HostFacts(hostname=host, os_family="macos", os_name=f"macOS {version}" if version else "macOS",
                         os_version=version, os_id="macos", kernel=kernel, arch=arch)
    return HostFacts(hostname=host, os_family="other", os_name=system or None, os_version=None, os_id=None,
                     kernel=kernel, arch=arch)


def _windows_product() -> tuple[str | None, str | None]:
    try:
        import winreg  # type: ignore[import-not-found]
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE,
                            r"SOFTWARE\Microsoft\Windows NT\CurrentVersion") as key:
            name = winreg.QueryValueEx(key, "ProductName")[0]
            try:
                build = winreg.QueryValueEx(key, "CurrentBuild")[0]
            except OSError:
                build = None
            return name, build
    except (ImportError, OSError):
        return f"Windows {platform.release()}", None


# -- the collector -----------------------------------------------------------------------------

class HostCollector:
    """Collects the machine it runs on.  ``runner`` and ``facts`` are injectable for tests."""

    name = NAME

    def __init__(self, hostname: str | None = None, *, include_packages: bool = True,
                 runner: Runner = run_command, facts: HostFacts | None = None,
                 platform_name: str | None = None, which: Callable[[str], str | None] = shutil.which) -> None:
        self.facts = facts or gather_facts(hostname)
        self.include_packages = include_packages
        self.runner = runner
        self.platform_name = platform_name or sys.platform
        self.which = which

    @property
    def natural_key(self) -> str:
        return f"host:{self.facts.hostname.lower()}"

    @property
    def scope_key(self) -> str:
        return f"host:{self.facts.hostname.lower()}"

    def describe_scope(self) -> str:
        return f"host {self.facts.hostname} ({self.facts.os_name or self.facts.os_family})"

    def planned_scopes(self) -> list[str]:
        return [self.scope_key]

    def package_sources(self) -> list[tuple[str, Callable[[], list[Package]]]]:
        """The package inventories that exist on this machine."""
        sources: list[tuple[str, Callable[[], list[Package]]]] = []
        if self.platform_name.startswith("win"):
            sources.append(("windows-uninstall", read_windows_uninstall))
            return sources
        if self.platform_name == "darwin":
            if self.which("system_profiler"):
                sources.append(("system_profiler", lambda: parse_system_profiler(
                    self.runner(["system_profiler", "SPApplicationsDataType", "-json"]))))
            if self.which("pkgutil"):
                sources.append(("pkgutil", lambda: parse_pkgutil(self.runner(["pkgutil", "--pkgs"]))))
            return sources
        if self.which("dpkg-query"):
            sources.append(("dpkg", lambda: parse_dpkg(self.runner(["dpkg-query", "-W", "-f", DPKG_FORMAT]))))
        if self.which("rpm") and (Path("/var/lib/rpm").is_dir() or Path("/usr/lib/sysimage/rpm").is_dir()):
            sources.append(("rpm", lambda: parse_rpm(self.runner(["rpm", "-qa", "--qf", RPM_FORMAT]))))
        return sources

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        facts = self.facts
        attributes = dict(facts.attributes)
        if facts.kernel:
            attributes["kernel"] = facts.kernel
        if facts.arch:
            attributes["arch"] = facts.arch
        asset = AssetRecord(natural_key=self.natural_key if facts.hostname else "host:", name=facts.hostname,
                            kind="host", hostname=facts.hostname, cloud_instance_id=facts.cloud_instance_id,
                            os_family=facts.os_family, os_name=facts.os_name, os_version=facts.os_version,
                            attributes=attributes)
        software: list[SoftwareRecord] = []
        if facts.os_name:
            software.append(SoftwareRecord(asset_key=asset.natural_key, name=facts.os_name,
                                           publisher=_OS_PUBLISHERS.get(facts.os_id or ""),
                                           version=facts.os_version, origin="os"))
        errors = []
        if self.include_packages:
            for source_name, read in self.package_sources():
                progress(f"host: reading {source_name} packages")
                try:
                    packages = read()
                except Exception as exc:  # noqa: BLE001 - one inventory failing makes the scope partial
                    errors.append(f"{source_name}: {type(exc).__name__}: {exc}")
                    continue
                progress(f"host: {len(packages)} packages from {source_name}")
                software.extend(SoftwareRecord(asset_key=asset.natural_key, name=p.name, publisher=p.publisher,
                                               version=p.version, origin=p.origin) for p in packages)
        yield ScopeBatch(scope_key=self.scope_key, assets=[asset], software=software,
                         complete=not errors, error="; ".join(errors) or None)


# -- registry hooks ----------------------------------------------------------------------------

def from_config() -> HostCollector | None:
    """``planb collect all`` always collects this machine unless ``PLANB_COLLECT_HOST`` is false."""
    flag = (os.environ.get("PLANB_COLLECT_HOST") or "true").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return None
    return HostCollector(hostname=os.environ.get("PLANB_COLLECT_HOST_NAME") or None)
