"""The host collector, for real on this machine (Debian: dpkg exists), plus canned outputs
for the package inventories of other operating systems."""
from __future__ import annotations

import json
import platform
import shutil
import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from collectors import host
from collectors.ingest import run_collection
from inventory.cli import main
from inventory.db import make_engine, read_session
from inventory.models import Asset, CollectionRun, Installation, Product, UnattributedSoftware, Vendor
from tests.collectors.test_ingest import WriteCounter

DEBIAN = Path("/etc/debian_version").exists() and shutil.which("dpkg-query") is not None


@pytest.fixture
def engine(any_db_url):  # type: ignore[no-untyped-def]
    eng = make_engine(any_db_url)
    yield eng
    eng.dispose()


@pytest.mark.skipif(not DEBIAN, reason="the real-host test needs dpkg (the CI machine is Debian)")
def test_collects_this_machine_for_real_and_second_run_is_unchanged(engine):
    collector = host.HostCollector()
    first = run_collection(engine, collector)
    assert first.status == "succeeded", first.errors
    assert first.created > 100
    hostname = socket.gethostname()
    with read_session(engine) as db:
        asset = db.scalars(sa.select(Asset).where(Asset.natural_key == f"host:{hostname.lower()}")).one()
        assert (asset.kind, asset.hostname, asset.os_family) == ("host", hostname, "linux")
        assert asset.os_name == platform.freedesktop_os_release()["PRETTY_NAME"]
        assert asset.attributes["kernel"] == platform.release()
        installed = {name: (vendor, publisher, version) for name, vendor, publisher, version in db.execute(
            sa.select(Installation.raw_name, Vendor.name, Installation.raw_publisher, Installation.version)
            .join(Product, Product.id == Installation.product_id).join(Vendor, Vendor.id == Product.vendor_id)
            .where(Installation.asset_id == asset.id))}
        unattributed = db.scalar(sa.select(sa.func.count()).select_from(UnattributedSoftware))
    # real packages come back with their maintainer and are attributed to Debian
    for package in ("bash", "dpkg", "coreutils"):
        vendor, publisher, version = installed[package]
        assert vendor == "Debian", (package, publisher)
        assert publisher and "@" in publisher
        assert version
    # and the OS itself is an installation of the OS vendor's product
    os_release = platform.freedesktop_os_release()
    if os_release.get("ID") == "debian":
        assert installed[os_release["PRETTY_NAME"]][0] == "Debian"
    # packages whose maintainer no catalogue entry knows are kept, not dropped
    assert first.created == 1 + len(installed) + unattributed

    counter = WriteCounter(engine)
    try:
        second = run_collection(engine, host.HostCollector())
    finally:
        counter.close()
    assert second.status == "succeeded"
    assert (second.created, second.updated, second.marked_stale) == (0, 0, 0)
    assert second.unchanged == first.created
    assert counter.inventory_writes() == []


def test_cli_collect_host_and_runs_listing(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_SECRET_KEY", "test-secret")
    runner = CliRunner()
    result = runner.invoke(main, ["collect", "host", "--hostname", "ci-runner-01", "--no-packages"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "Run 1 (host" in result.stdout and "succeeded" in result.stdout
    assert "host:ci-runner-01" in result.stdout
    assert "host: succeeded" in result.stderr  # progress goes to stderr

    result = runner.invoke(main, ["runs", "--format", "json"])
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert runs[0]["collector"] == "host" and runs[0]["status"] == "succeeded"
    assert runs[0]["scopes"][0]["scope"] == "host:ci-runner-01"
    assert runs[0]["created"] == 2  # the asset and its OS installation

    result = runner.invoke(main, ["runs"])
    assert result.exit_code == 0
    assert "host" in result.stdout and "succeeded" in result.stdout


def test_cli_exit_status_for_a_failed_scope(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_SECRET_KEY", "test-secret")
    # a lock held by a live run elsewhere: the scope is refused and the CLI says why
    from datetime import timedelta

    from inventory.db import utcnow, write_session
    from inventory.models import CollectionLock
    engine = make_engine(sqlite_url)
    with write_session(engine) as db:
        other = CollectionRun(collector="host", scope="x", status="running", errors=[])
        db.add(other)
        db.flush()
        db.add(CollectionLock(scope_key="host:ci-runner-01", run_id=other.id, holder="elsewhere:1",
                              expires_at=utcnow() + timedelta(hours=1)))
    engine.dispose()
    result = CliRunner().invoke(main, ["collect", "-q", "host", "--hostname", "ci-runner-01"])
    assert result.exit_code == 1
    assert "being collected by run 1" in result.stderr
    assert result.stderr.startswith("Error: collection failed")


def test_missing_package_inventory_makes_scope_partial(engine):
    facts = host.HostFacts(hostname="box", os_family="linux", os_name="Ubuntu 22.04.4 LTS", os_version="22.04",
                           os_id="ubuntu", kernel="5.15.0", arch="x86_64")

    def broken(argv):  # type: ignore[no-untyped-def]
        raise RuntimeError("dpkg-query exited 2: database locked")

    collector = host.HostCollector(facts=facts, runner=broken, platform_name="linux",
                                   which=lambda name: "/usr/bin/" + name if name == "dpkg-query" else None)
    run = run_collection(engine, collector)
    assert run.status == "partial"
    assert "database locked" in run.outcomes[0].error
    with read_session(engine) as db:
        # the OS record still lands: Ubuntu is Canonical's
        assert db.execute(sa.select(Vendor.name, Product.name).join(Product.vendor)).all() == [
            ("Canonical", "Ubuntu")]


# -- parsers over canned outputs ----------------------------------------------------------------

def test_parse_dpkg_keeps_installed_packages_with_maintainer():
    output = ("ii \tfalcon-sensor\t7.16.0-17106\tCrowdStrike, Inc. <support@crowdstrike.com>\tamd64\n"
              "rc \told-thing\t1.0\tNobody <n@example.com>\tall\n"
              "ii \tpython3\t3.11.2-1+b1\tMatthias Klose <doko@debian.org>\tamd64\n")
    assert host.parse_dpkg(output) == [
        host.Package("falcon-sensor", "7.16.0-17106", "CrowdStrike, Inc. <support@crowdstrike.com>"),
        host.Package("python3", "3.11.2-1+b1", "Matthias Klose <doko@debian.org>")]


def test_parse_rpm_prefers_vendor_then_packager():
    output = ("falcon-sensor\t7.16.0-17106.el9\tCrowdStrike, Inc.\t(none)\tx86_64\n"
              "bash\t5.1.8-9.el9\tRed Hat, Inc.\tRed Hat, Inc. <http://bugzilla.redhat.com/bugzilla>\tx86_64\n"
              "gpg-pubkey\tfd431d51-4ae0493b\t(none)\t(none)\t(none)\n"
              "local-tool\t1.0-1\t(none)\tOps <ops@example.com>\tnoarch\n")
    assert host.parse_rpm(output) == [
        host.Package("falcon-sensor", "7.16.0-17106.el9", "CrowdStrike, Inc."),
        host.Package("bash", "5.1.8-9.el9", "Red Hat, Inc."),
        host.Package("local-tool", "1.0-1", "Ops <ops@example.com>")]


def test_parse_system_profiler_uses_signing_authority():
    output = json.dumps({"SPApplicationsDataType": [
        {"_name": "Falcon", "version": "7.16.18605.0", "obtained_from": "identified_developer",
         "signed_by": ["Developer ID Application: CrowdStrike Inc. (X9E956P446)",
                       "Developer ID Certification Authority", "Apple Root CA"]},
        {"_name": "Safari", "version": "17.6", "obtained_from": "apple",
         "signed_by": ["Software Signing", "Apple Code Signing Certification Authority"]},
        {"_name": "homegrown", "version": "0.1", "obtained_from": "unknown"}]})
    assert host.parse_system_profiler(output) == [
        host.Package("Falcon", "7.16.18605.0", "CrowdStrike Inc."),
        host.Package("Safari", "17.6", "Apple Inc."),
        host.Package("homegrown", "0.1", None)]


class FakeWinreg:
    """Just enough of ``winreg`` to read the uninstall keys."""

    HKEY_LOCAL_MACHINE, HKEY_CURRENT_USER = "HKLM", "HKCU"

    def __init__(self, tree):  # type: ignore[no-untyped-def]
        self.tree = tree

    class Key:
        def __init__(self, path):  # type: ignore[no-untyped-def]
            self.path = path

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            return False

    def OpenKey(self, parent, sub):  # type: ignore[no-untyped-def]
        path = f"{parent.path}\\{sub}" if isinstance(parent, FakeWinreg.Key) else f"{parent}\\{sub}"
        if path not in self.tree:
            raise OSError(path)
        return FakeWinreg.Key(path)

    def EnumKey(self, key, index):  # type: ignore[no-untyped-def]
        children = sorted(p[len(key.path) + 1:] for p in self.tree
                          if p.startswith(key.path + "\\") and "\\" not in p[len(key.path) + 1:])
        if index >= len(children):
            raise OSError("no more")
        return children[index]

    def QueryValueEx(self, key, name):  # type: ignore[no-untyped-def]
        values = self.tree[key.path]
        if name not in values:
            raise OSError(name)
        return values[name], 1


def test_windows_uninstall_registry_reader():
    base = r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"
    tree = {
        base: {},
        base + r"\{D5E5C2E9-0D5E-4C5E-8B8C-FALCON}": {"DisplayName": "CrowdStrike Windows Sensor",
                                                   "DisplayVersion": "7.11.18110.0",
                                                   "Publisher": "CrowdStrike, Inc."},
        base + r"\KB5034439": {"DisplayName": "Security Update", "ParentKeyName": "OperatingSystem"},
        base + r"\Hidden": {"DisplayName": "Hidden component", "SystemComponent": 1},
        base + r"\NoName": {"Publisher": "Nobody"},
    }
    packages = host.read_windows_uninstall(FakeWinreg(tree))
    assert packages == [host.Package("CrowdStrike Windows Sensor", "7.11.18110.0", "CrowdStrike, Inc.")]


def test_windows_and_macos_code_paths_pick_their_inventories():
    facts = host.HostFacts(hostname="WIN-01", os_family="windows", os_name="Windows Server 2022 Datacenter",
                           os_version="10.0.20348", os_id="windows", kernel="2022Server", arch="AMD64")
    win = host.HostCollector(facts=facts, platform_name="win32")
    assert [name for name, _ in win.package_sources()] == ["windows-uninstall"]
    mac = host.HostCollector(facts=facts, platform_name="darwin", which=lambda n: f"/usr/bin/{n}")
    assert [name for name, _ in mac.package_sources()] == ["system_profiler", "pkgutil"]
    linux = host.HostCollector(facts=facts, platform_name="linux", which=lambda n: None)
    assert linux.package_sources() == []


def test_ec2_instance_id_from_dmi(tmp_path):
    (tmp_path / "board_asset_tag").write_text("i-0abc123def4567890\n")
    assert host.ec2_instance_id(str(tmp_path)) == "i-0abc123def4567890"
    (tmp_path / "board_asset_tag").write_text("Default string\n")
    assert host.ec2_instance_id(str(tmp_path)) is None


def test_collect_all_runs_every_configured_source(sqlite_url, tmp_path, monkeypatch):
    from collectors import registry
    from tests.collectors.test_osquery import WINDOWS

    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_SECRET_KEY", "test-secret")
    for name in ("PLANB_COLLECT_AWS_REGIONS", "PLANB_COLLECT_AWS_PROFILES", "PLANB_COLLECT_AWS_ROLE_ARNS",
                 "PLANB_COLLECT_AZURE_SUBSCRIPTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLANB_COLLECT_HOST_NAME", "ci-runner-02")
    monkeypatch.setenv("PLANB_COLLECT_OSQUERY_PATHS", WINDOWS)
    assert list(registry.available())[:2] == ["aws", "azure"]  # cloud APIs first

    result = CliRunner().invoke(main, ["collect", "--quiet", "all"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "aws: not configured, skipped" in result.stderr
    assert "azure: not configured, skipped" in result.stderr
    engine = make_engine(sqlite_url)
    try:
        with read_session(engine) as db:
            runs = db.execute(sa.select(CollectionRun.collector, CollectionRun.status)
                              .order_by(CollectionRun.id)).all()
            keys = set(db.scalars(sa.select(Asset.natural_key)))
    finally:
        engine.dispose()
    assert runs == [("host", "succeeded"), ("osquery", "succeeded")]
    assert {"host:ci-runner-02", "host:win-pay-01"} <= keys

    monkeypatch.setenv("PLANB_COLLECT_HOST", "false")
    monkeypatch.delenv("PLANB_COLLECT_OSQUERY_PATHS")
    result = CliRunner().invoke(main, ["collect", "all"])
    assert result.exit_code == 1
    assert "no collector is configured" in result.stderr
