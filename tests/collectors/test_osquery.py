"""osquery imports: results logs (snapshot, differential, batch), osqueryi --json output,
several hosts per file, malformed files rejected with file:line and nothing written."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from collectors import osquery
from collectors.base import AssetRecord, ScopeBatch
from collectors.ingest import run_collection
from inventory.cli import main
from inventory.db import make_engine, read_session
from inventory.models import Asset, CollectionRun, Installation, Product, UnattributedSoftware, Vendor
from tests.collectors.test_ingest import FakeCollector, WriteCounter, snapshot

FIXTURES = Path(__file__).parent / "fixtures" / "osquery"
WINDOWS = str(FIXTURES / "windows.results.log")
UBUNTU = str(FIXTURES / "ubuntu.results.log")
MACOS = [str(FIXTURES / n) for n in ("macos_apps.json", "macos_os_version.json", "macos_system_info.json")]
ALL = [WINDOWS, UBUNTU, *MACOS]


@pytest.fixture
def engine(any_db_url):  # type: ignore[no-untyped-def]
    eng = make_engine(any_db_url)
    yield eng
    eng.dispose()


def installed(engine: sa.Engine, natural_key: str) -> dict[str, tuple[str, str, str | None]]:
    """raw name -> (vendor, product, version) on one asset."""
    with read_session(engine) as db:
        rows = db.execute(sa.select(Installation.raw_name, Vendor.name, Product.name, Installation.version)
                          .join(Product, Product.id == Installation.product_id)
                          .join(Vendor, Vendor.id == Product.vendor_id)
                          .join(Asset, Asset.id == Installation.asset_id)
                          .where(Asset.natural_key == natural_key)).all()
    return {raw: (vendor, product, version) for raw, vendor, product, version in rows}


def test_import_fleet_of_windows_ubuntu_and_macos_hosts(engine):
    run = run_collection(engine, osquery.OsqueryCollector(ALL))
    scopes = {s.scope_key: s for s in run.outcomes}
    assert set(scopes) == {"osquery:WIN-PAY-01", "osquery:ubuntu-web-01", "osquery:ubuntu-batch-02",
                           "osquery:mac-design-07.local"}
    # the host whose log starts mid-stream is partial; the others succeeded
    assert {k: s.status for k, s in scopes.items()} == {
        "osquery:WIN-PAY-01": "succeeded", "osquery:ubuntu-web-01": "succeeded",
        "osquery:ubuntu-batch-02": "partial", "osquery:mac-design-07.local": "succeeded"}
    assert "deb_packages incomplete" in scopes["osquery:ubuntu-batch-02"].error
    assert run.status == "partial"

    with read_session(engine) as db:
        assets = {a.natural_key: a for a in db.scalars(sa.select(Asset))}
        unattributed = set(db.execute(sa.select(UnattributedSoftware.name, UnattributedSoftware.publisher)))
        db.expunge_all()
    win = assets["host:win-pay-01"]
    assert (win.kind, win.os_family, win.os_name, win.os_version) == (
        "host", "windows", "Microsoft Windows Server 2019 Datacenter", "10.0.17763")
    assert (win.provider, win.account, win.region, win.cloud_instance_id) == (
        "aws", "111122223333", "us-east-1", "i-0a1b2c3d4e5f60718")
    assert win.attributes["os_build"] == "17763"
    ubuntu = assets["host:ubuntu-web-01"]
    assert (ubuntu.os_family, ubuntu.os_name, ubuntu.os_version, ubuntu.provider, ubuntu.region) == (
        "linux", "Ubuntu 22.04.4 LTS", "22.04.4", "azure", "centralus")
    assert ubuntu.cloud_instance_id == "6c1d6a3e-8f3b-4d2a-9a51-1b2c3d4e5f60"
    mac = assets["host:mac-design-07.local"]
    assert (mac.os_family, mac.os_name) == ("macos", "macOS 14.6.1")

    assert installed(engine, "host:win-pay-01")["CrowdStrike Windows Sensor"] == (
        "CrowdStrike", "Falcon Sensor", "7.11.18110.0")
    assert installed(engine, "host:win-pay-01")["Microsoft Windows Server 2019 Datacenter"][:2] == (
        "Microsoft", "Windows Server")
    ubuntu_sw = installed(engine, "host:ubuntu-web-01")
    # the differential log was replayed: falcon-sensor was upgraded an hour after the first run
    assert ubuntu_sw["falcon-sensor"] == ("CrowdStrike", "Falcon Sensor", "7.16.0-17106")
    assert ubuntu_sw["bash"][0] == "Canonical"  # "Ubuntu Developers <...@lists.ubuntu.com>"
    assert ubuntu_sw["Ubuntu 22.04.4 LTS"][:2] == ("Canonical", "Ubuntu")
    mac_sw = installed(engine, "host:mac-design-07.local")
    assert mac_sw["Falcon.app"][:2] == ("CrowdStrike", "Falcon Sensor")
    assert mac_sw["Safari.app"][:2] == ("Apple", "Safari")
    assert mac_sw["macOS 14.6.1"][:2] == ("Apple", "macOS")
    assert unattributed == {("PaymentsGateway Service", "Acme Widgets GmbH"),
                            ("acme-billing", "Acme Widgets GmbH <ops@acme.example>"),
                            ("Sketchy Tool.app", "io.example.sketchy")}

    before = snapshot(engine)
    counter = WriteCounter(engine)
    try:
        again = run_collection(engine, osquery.OsqueryCollector(ALL))
    finally:
        counter.close()
    assert (again.created, again.updated, again.marked_stale) == (0, 0, 0)
    assert counter.inventory_writes() == []
    assert snapshot(engine) == before


def test_osquery_host_merges_into_the_ec2_instance_aws_found(engine):
    ec2 = AssetRecord(natural_key="aws:ec2:111122223333:us-east-1:i-0a1b2c3d4e5f60718", name="payments-01",
                      kind="vm", provider="aws", account="111122223333", region="us-east-1",
                      cloud_instance_id="i-0a1b2c3d4e5f60718", os_family="windows", os_name="Windows")
    run_collection(engine, FakeCollector([ScopeBatch("aws:111122223333:us-east-1:ec2", [ec2])], name="aws"))
    run_collection(engine, osquery.OsqueryCollector([WINDOWS]))
    with read_session(engine) as db:
        keys = set(db.scalars(sa.select(Asset.natural_key)))
    assert keys == {ec2.natural_key}  # one machine, one asset
    assert installed(engine, ec2.natural_key)["CrowdStrike Windows Sensor"][1] == "Falcon Sensor"
    with read_session(engine) as db:
        asset = db.scalars(sa.select(Asset)).one()
        db.expunge_all()
    assert (asset.name, asset.kind, asset.os_name, asset.hostname) == (
        "payments-01", "vm", "Microsoft Windows Server 2019 Datacenter", "WIN-PAY-01")


def test_azure_vm_found_after_osquery_takes_over_the_host_asset(engine):
    run_collection(engine, osquery.OsqueryCollector([UBUNTU]))
    with read_session(engine) as db:
        host_id = db.scalar(sa.select(Asset.id).where(Asset.natural_key == "host:ubuntu-web-01"))
    vm_key = "azure:vm:8f1c2a77-3d4b-4c5e-9f60-7a8b9c0d1e2f:6c1d6a3e-8f3b-4d2a-9a51-1b2c3d4e5f60"
    vm = AssetRecord(natural_key=vm_key, name="ubuntu-web-01", kind="vm", provider="azure",
                     account="8f1c2a77-3d4b-4c5e-9f60-7a8b9c0d1e2f", region="centralus", zone="1",
                     cloud_instance_id="6c1d6a3e-8f3b-4d2a-9a51-1b2c3d4e5f60", os_family="linux")
    run = run_collection(engine, FakeCollector([ScopeBatch("azure:8f1c2a77-3d4b-4c5e-9f60-7a8b9c0d1e2f:vm", [vm])],
                                               name="azure"))
    assert run.created == 0 and run.updated == 1
    with read_session(engine) as db:
        asset = db.scalars(sa.select(Asset).where(Asset.natural_key == vm_key)).one()
        assert db.scalar(sa.select(sa.func.count()).select_from(Asset)
                         .where(Asset.natural_key == "host:ubuntu-web-01")) == 0
        db.expunge_all()
    assert asset.id == host_id
    assert (asset.kind, asset.os_name, asset.source) == ("vm", "Ubuntu 22.04.4 LTS", "azure")
    assert installed(engine, vm_key)["falcon-sensor"][1] == "Falcon Sensor"
    # osquery again: still one asset, nothing changes
    again = run_collection(engine, osquery.OsqueryCollector([UBUNTU]))
    assert (again.created, again.updated, again.marked_stale) == (0, 0, 0)


def test_package_removed_in_a_later_snapshot_is_uninstalled(engine, tmp_path):
    run_collection(engine, osquery.OsqueryCollector([WINDOWS]))
    lines = Path(WINDOWS).read_text().splitlines()
    later = []
    for line in lines:
        event = json.loads(line)
        event["unixTime"] += 86400
        if event["name"].endswith("programs"):
            event["snapshot"] = [r for r in event["snapshot"] if not r["name"].startswith("CrowdStrike")]
        later.append(json.dumps(event))
    path = tmp_path / "later.results.log"
    path.write_text("\n".join(lines + later) + "\n")
    run = run_collection(engine, osquery.OsqueryCollector([str(path)]))
    assert run.status == "succeeded"
    assert "CrowdStrike Windows Sensor" not in installed(engine, "host:win-pay-01")


def test_batch_format_and_table_recognised_from_columns(tmp_path):
    rows = [{"name": "falcon-sensor", "version": "7.16.0-17106.el9", "release": "17106.el9", "source": "",
             "size": "1", "sha1": "", "arch": "x86_64", "epoch": "", "install_time": "1", "vendor": "CrowdStrike, Inc.",
             "package_group": "Unspecified"}]
    event = {"diffResults": {"added": rows, "removed": []}, "name": "my_rpms", "hostIdentifier": "rhel-db-01",
             "calendarTime": "Fri Jul 19 04:09:12 2024 UTC", "unixTime": "1721362152", "epoch": "0", "counter": "0"}
    path = tmp_path / "batch.log"
    path.write_text(json.dumps(event) + "\n")
    hosts, _ = osquery.load_files([str(path)])
    state = hosts["rhel-db-01"].tables["rpm_packages"]
    assert state.complete and state.rows[0]["vendor"] == "CrowdStrike, Inc."


def test_osqueryi_output_needs_a_host(tmp_path):
    path = tmp_path / "programs.json"
    shutil.copy(MACOS[0], path)
    with pytest.raises(osquery.OsqueryFormatError, match=r"programs\.json: osqueryi output does not say which host"):
        osquery.OsqueryCollector([str(path)])
    collector = osquery.OsqueryCollector([str(path)], host="mac-design-07")
    assert collector.planned_scopes() == ["osquery:mac-design-07"]
    [batch] = list(collector.collect(lambda _m: None))
    assert not batch.complete and "system_info missing" in batch.error


def test_envelope_with_several_hosts(tmp_path):
    apps = json.loads(Path(MACOS[0]).read_text())
    data = [{"host": "mac-a", "tables": {"apps": apps[:1]}}, {"host": "mac-b", "tables": {"apps": apps[1:2]}}]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(data))
    hosts, _ = osquery.load_files([str(path)])
    assert sorted(hosts) == ["mac-a", "mac-b"]


@pytest.mark.parametrize("content, message", [
    ('{"name":"programs","hostIdentifier":"h","action":"snapshot","snapshot":[]}\n{not json}\n',
     r"bad\.log:2: invalid JSON"),
    ('{"hostIdentifier":"h","action":"snapshot","snapshot":[]}\n', r"bad\.log:1: result without the scheduled query"),
    ('{"name":"programs","action":"snapshot","snapshot":[]}\n', r'bad\.log:1: result without "hostIdentifier"'),
    ('{"name":"programs","hostIdentifier":"h","action":"changed","columns":{"name":"x"}}\n',
     r'bad\.log:1: "action" must be'),
    ('{"name":"programs","hostIdentifier":"h","action":"snapshot","snapshot":["x"]}\n',
     r"bad\.log:1: a row must be a JSON object"),
    ('{"name":"programs","hostIdentifier":"h","unixTime":"1"}\n', r'bad\.log:1: result without "columns"'),
    ('[1, 2, 3]', r"bad\.log: row 1: a row must be a JSON object"),
    ('[{"name": "x", "version": "1"', r"bad\.log:1: invalid JSON"),
    ('   \n', r"bad\.log:1: empty file"),
    ('"just a string"', r"bad\.log:1: expected a JSON object"),
])
def test_malformed_files_are_rejected_with_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.log"
    path.write_text(content)
    with pytest.raises(osquery.OsqueryFormatError, match=message):
        osquery.OsqueryCollector([WINDOWS, str(path)])


def _cli_env(monkeypatch, sqlite_url, tmp_path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_SECRET_KEY", "test-secret")


def test_cli_rejects_malformed_file_and_writes_nothing(sqlite_url, tmp_path, monkeypatch):
    _cli_env(monkeypatch, sqlite_url, tmp_path)
    bad = tmp_path / "osqueryd.results.log"
    good_lines = Path(WINDOWS).read_text().splitlines()
    bad.write_text("\n".join(good_lines[:2] + ['{"name": "programs", "hostIdentifier": '] + good_lines[2:]) + "\n")
    result = CliRunner().invoke(main, ["collect", "osquery", WINDOWS, str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3: invalid JSON" in result.stderr
    assert "nothing written" in result.stderr
    engine = make_engine(sqlite_url)
    try:
        with read_session(engine) as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(Asset)) == 0
            assert db.scalar(sa.select(sa.func.count()).select_from(CollectionRun)) == 0
    finally:
        engine.dispose()


def test_cli_import_reports_partial_with_its_own_exit_status(sqlite_url, tmp_path, monkeypatch):
    _cli_env(monkeypatch, sqlite_url, tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["collect", "osquery", *ALL])
    assert result.exit_code == 3, result.output
    assert "partly succeeded" in result.stderr and "ubuntu-batch-02" in result.stderr
    assert "osquery:WIN-PAY-01" in result.stdout  # the summary table
    result = runner.invoke(main, ["collect", "osquery", WINDOWS, *MACOS])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["runs", "--limit", "1", "--format", "json"])
    [latest] = json.loads(result.stdout)
    assert latest["status"] == "succeeded" and latest["created"] == 0 and latest["unchanged"] > 0


def test_from_config_reads_globs(monkeypatch, tmp_path):
    monkeypatch.delenv("PLANB_COLLECT_OSQUERY_PATHS", raising=False)
    assert osquery.from_config() is None
    monkeypatch.setenv("PLANB_COLLECT_OSQUERY_PATHS", f"{FIXTURES}/*.results.log")
    collector = osquery.from_config()
    assert collector is not None
    assert sorted(collector.hosts) == ["WIN-PAY-01", "ubuntu-batch-02", "ubuntu-web-01"]


def test_a_results_log_read_from_a_pipe(tmp_path):
    """`planb collect osquery <(zcat osqueryd.results.log.gz)` hands in a pipe, which cannot seek."""
    import threading

    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    text = Path(UBUNTU).read_text()
    writer = threading.Thread(target=lambda: fifo.write_text(text))
    writer.start()
    try:
        hosts, _ = osquery.load_files([str(fifo)])
    finally:
        writer.join(timeout=10)
    from_file, _ = osquery.load_files([UBUNTU])
    assert sorted(hosts) == sorted(from_file) != []


# -- digests: an unchanged host is neither rebuilt nor rewritten --------------------------------------

def _fleet_log(path: Path, hosts: int = 6, shift: int = 0, edit: str | None = None) -> str:
    """A snapshot-format results log (the benchmark's generator), its times shifted by
    ``shift`` seconds; ``edit`` names a host whose first package gets another version."""
    from benchmarks.bench_collect import write_results_log
    write_results_log(path, hosts, 3, 5)
    lines = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        event["unixTime"] += shift
        event["calendarTime"] = f"shifted {shift}"
        event["counter"] += 1 if shift else 0
        if event["hostIdentifier"] == edit and event["name"].endswith(osquery.PACKAGE_TABLES):
            event["snapshot"][0] = {**event["snapshot"][0], "version": "99.0.0", "bundle_short_version": "99.0.0"}
        lines.append(json.dumps(event))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_host_digest_covers_its_results_not_their_times(tmp_path):
    def digests(path: str) -> dict[str, str]:
        collector = osquery.OsqueryCollector([path])
        return {h.identifier: h.digest for h in collector._index.host_events()}

    first = digests(_fleet_log(tmp_path / "a.log"))
    later = digests(_fleet_log(tmp_path / "b.log", shift=3600))
    assert first == later and len(set(first.values())) == len(first) == 6
    host = min(first)
    edited = digests(_fleet_log(tmp_path / "c.log", shift=3600, edit=host))
    assert {h for h in first if first[h] != edited[h]} == {host}


def test_a_line_orjson_refuses_is_read_by_json(tmp_path):
    path = tmp_path / "big.log"
    path.write_text(json.dumps({"name": "pack_deb_packages", "hostIdentifier": "h1", "unixTime": 1,
                                "action": "snapshot", "decorations": {"big": 10 ** 30},
                                "snapshot": [{"name": "bash", "version": "5.1", "size": 10 ** 30,
                                              "maintainer": "Ubuntu"}]}) + "\n")
    hosts, _ = osquery.load_files([str(path)])
    assert hosts["h1"].tables["deb_packages"].rows == [
        {"name": "bash", "version": "5.1", "size": str(10 ** 30), "maintainer": "Ubuntu"}]
    assert hosts["h1"].decorations == {"big": 10 ** 30}


def test_an_unchanged_fleet_is_skipped_without_building_its_records(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(osquery.OsqueryCollector, "DEFER_MIN_HOSTS", 0)
    built: list[str] = []
    real = osquery.host_records
    monkeypatch.setattr(osquery, "host_records", lambda data: built.append(data.identifier) or real(data))
    cold = run_collection(engine, osquery.OsqueryCollector([_fleet_log(tmp_path / "a.log")]))
    assert cold.status == "succeeded" and len(built) == 6 and cold.created > 6

    # the same results an hour later: no host is rebuilt, nothing but bookkeeping is written
    built.clear()
    counter = WriteCounter(engine)
    try:
        same = run_collection(engine, osquery.OsqueryCollector([_fleet_log(tmp_path / "b.log", shift=3600)]))
    finally:
        counter.close()
    assert same.status == "succeeded" and built == [] and counter.inventory_writes() == []
    assert (same.created, same.updated, same.unchanged) == (0, 0, cold.created)

    # another writer removes a host's software: only that host is rebuilt, and restored
    host = min(osquery.OsqueryCollector([str(tmp_path / "a.log")]).hosts)
    host_key = f"host:{host}"
    with read_session(engine) as db:
        asset_id = db.scalar(sa.select(Asset.id).where(Asset.natural_key == host_key))
    from inventory.db import write_session
    with write_session(engine) as db:
        deleted = db.execute(sa.delete(Installation).where(Installation.asset_id == asset_id)).rowcount
    built.clear()
    restored = run_collection(engine, osquery.OsqueryCollector([_fleet_log(tmp_path / "c.log", shift=7200)]))
    assert deleted and built == [host]
    assert (restored.status, restored.created, restored.updated) == ("succeeded", deleted, 0)

    # a host whose results changed is built (not deferred) and updated
    built.clear()
    edited = run_collection(engine, osquery.OsqueryCollector(
        [_fleet_log(tmp_path / "d.log", shift=10800, edit=host)]))
    assert built == [host] and edited.updated == 1
    assert "99.0.0" in {v for _vendor, _product, v in installed(engine, host_key).values()}


def test_control_characters_in_a_results_log_are_cleaned_and_clean_hosts_vouched_for(engine, tmp_path):
    def line(host: str, name: str) -> str:
        return json.dumps({"name": "pack_deb_packages", "hostIdentifier": host, "unixTime": 1, "action": "snapshot",
                           "snapshot": [{"name": name, "version": "1.0", "maintainer": "Ubuntu Developers"}]})
    path = tmp_path / "escapes.log"
    path.write_text("\n".join([line("h-plain", "bash"), line("h-escape", "evil\u001b[31m-pkg"),
                               line("h-del", "del\u007fpkg"), line("h-tab", "tab\tpkg")]) + "\n")
    batches = {b.scope_key: b for b in osquery.OsqueryCollector([str(path)]).collect(lambda _m: None)}
    assert {k: b.clean for k, b in batches.items()} == {
        "osquery:h-plain": True, "osquery:h-escape": False, "osquery:h-del": False, "osquery:h-tab": True}
    run_collection(engine, osquery.OsqueryCollector([str(path)]))
    with read_session(engine) as db:
        names = set(db.scalars(sa.select(UnattributedSoftware.name))) | set(db.scalars(sa.select(Installation.raw_name)))
    assert {"bash", "evil[31m-pkg", "delpkg", "tab\tpkg"} <= names
