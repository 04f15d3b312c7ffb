"""planb import csv: a ServiceNow cmdb_ci_server export (the default mapping) and a custom mapping;
owner, criticality, environment, dependencies; precedence (below the estate file, above cloud
tags); bad rows refused with row and column (all or nothing) unless --skip-bad-rows."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from collectors.base import AssetRecord, ScopeBatch
from collectors.ingest import run_collection
from inventory.db import make_engine, read_session
from inventory.models import Asset, Dependency
from tests.collectors.test_ingest import FakeCollector
from tests.estate.conftest import run_cli, table_snapshot

HEADER = ["sys_id", "name", "sys_class_name", "host_name", "fqdn", "ip_address", "os", "os_version",
          "serial_number", "used_for", "u_criticality", "owned_by", "assigned_to", "location",
          "install_status", "operational_status", "support_group", "depends_on"]
ROWS = [
    ["a1f3c2d41b3e2010a6b2c8a4604bcb11", "PAY-DB-01", "cmdb_ci_linux_server", "pay-db-01", "pay-db-01.corp.example",
     "10.20.1.15", "Red Hat Enterprise Linux", "9.4", "VMW-42-1c-8e", "Production", "1 - most critical",
     "Payments Platform", "Fred Luddy", "DC Frankfurt", "Installed", "Operational", "DBA", ""],
    ["b7e9d5f61b3e2010a6b2c8a4604bcb22", "PAY-APP-01", "cmdb_ci_win_server", "pay-app-01", "", "10.20.1.21",
     "Windows 2022 Datacenter", "10.0.20348", "VMW-42-1c-9f", "Production", "2 - somewhat critical",
     "", "Beth Anglin", "DC Frankfurt", "Installed", "Operational", "Payments", "PAY-DB-01; svc:payments"],
    ["c3a1b2c31b3e2010a6b2c8a4604bcb33", "QA-APP-07", "cmdb_ci_server", "qa-app-07", "", "10.30.9.7",
     "Ubuntu Linux", "22.04", "", "QA", "", "QA Team", "", "DC Dublin", "Installed", "Operational", "", ""],
    ["d4b2c3d41b3e2010a6b2c8a4604bcb44", "OLD-BATCH-02", "cmdb_ci_linux_server", "old-batch-02", "", "",
     "CentOS", "7", "", "Production", "3 - less critical", "Batch", "", "DC Dublin", "Retired", "Retired", "", ""],
]


def _csv(rows: list[list[str]], header: list[str] = HEADER) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    estate = {"version": 1, "services": [{"key": "svc:payments", "name": "Payments", "criticality": "critical"}],
              "assets": [{"key": "host:qa-app-07", "name": "qa-app-07", "kind": "host", "owner": "Release Eng"}]}
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(estate))
    assert run_cli(cli_env, "import", str(path)).exit_code == 0
    return cli_env


def _assets(env: dict[str, str]) -> dict[str, Asset]:
    engine = make_engine(env["PLANB_DATABASE_URL"])
    with read_session(engine) as db:
        found = {a.natural_key: a for a in db.scalars(sa.select(Asset))}
        db.expunge_all()
    engine.dispose()
    return found


def _edges(env: dict[str, str]) -> set[tuple[str, str, str, str, str]]:
    engine = make_engine(env["PLANB_DATABASE_URL"])
    a, b = sa.orm.aliased(Asset), sa.orm.aliased(Asset)
    with read_session(engine) as db:
        rows = db.execute(sa.select(a.natural_key, b.natural_key, Dependency.kind, Dependency.strength,
                                    Dependency.source)
                          .join(a, a.id == Dependency.dependent_id).join(b, b.id == Dependency.dependency_id)).all()
    engine.dispose()
    return {tuple(r) for r in rows}


def _write(tmp_path: Path, text: str, name: str = "cmdb_ci_server.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8-sig")   # ServiceNow's export starts with a byte-order mark
    return path


def test_servicenow_export_with_the_default_mapping(env, tmp_path):
    result = run_cli(env, "import", "csv", str(_write(tmp_path, _csv(ROWS))), "--quiet")
    assert result.exit_code == 0, result.output
    assert "3 CI(s) and 2 dependencies into scope cmdb:cmdb_ci_server; 1 row(s) excluded" in result.output
    assets = _assets(env)
    db = assets["host:pay-db-01"]
    assert (db.name, db.kind, db.hostname, db.os_family, db.os_name, db.os_version) == (
        "PAY-DB-01", "host", "pay-db-01", "linux", "Red Hat Enterprise Linux", "9.4")
    assert (db.environment, db.criticality, db.owner, db.source, db.source_scope) == (
        "production", "critical", "Payments Platform", "cmdb", "cmdb:cmdb_ci_server")
    assert db.attributes["cmdb_sys_id"] == "a1f3c2d41b3e2010a6b2c8a4604bcb11"
    assert db.attributes["location"] == "DC Frankfurt" and db.attributes["cmdb_class"] == "cmdb_ci_linux_server"
    app = assets["host:pay-app-01"]
    assert (app.os_family, app.criticality, app.owner) == ("windows", "high", "Beth Anglin")  # assigned_to fallback
    assert "host:old-batch-02" not in assets                                                # retired in the CMDB
    # the estate file's owner outranks the CMDB's; the CMDB fills what the file left empty
    qa = assets["host:qa-app-07"]
    assert (qa.owner, qa.environment, qa.source) == ("Release Eng", "test", "import")
    assert _edges(env) >= {("host:pay-app-01", "host:pay-db-01", "calls", "hard", "cmdb"),
                           ("host:pay-app-01", "svc:payments", "calls", "hard", "cmdb")}
    # the same export again changes nothing
    again = run_cli(env, "import", "csv", str(_write(tmp_path, _csv(ROWS))), "--quiet")
    assert "created 0, updated 0" in again.output


def test_cmdb_outranks_cloud_tags_and_a_ci_dropped_from_the_export_is_retired(env, tmp_path):
    ec2 = AssetRecord(natural_key="host:pay-db-01", name="pay-db-01", kind="host", owner="tag-owner",
                      criticality="low", environment="staging")
    engine = make_engine(env["PLANB_DATABASE_URL"])
    run_collection(engine, FakeCollector([ScopeBatch("aws:1:eu-central-1:ec2", [ec2])], name="aws"))
    assert run_cli(env, "import", "csv", str(_write(tmp_path, _csv(ROWS))), "--quiet").exit_code == 0
    db = _assets(env)["host:pay-db-01"]
    assert (db.owner, db.criticality, db.environment, db.source) == (
        "Payments Platform", "critical", "production", "aws")   # curated facts from the CMDB, existence from AWS
    # a later export without PAY-APP-01: retired, its dependencies kept as history
    result = run_cli(env, "import", "csv", str(_write(tmp_path, _csv([ROWS[0], ROWS[2]]))), "--quiet")
    assert result.exit_code == 0, result.output
    assert "marked stale 1" in result.output
    assert _assets(env)["host:pay-app-01"].retired_at is not None
    engine.dispose()


@pytest.mark.parametrize("rows, message", [
    ([ROWS[0], [*ROWS[1][:9], "Lab", *ROWS[1][10:]]],
     "row 3, column 'used_for': 'Lab' is not a Plan B environment"),
    ([ROWS[0], [*ROWS[1][:10], "Mission critical", *ROWS[1][11:]]],
     "row 3, column 'u_criticality': 'Mission critical' is not a Plan B criticality"),
    ([ROWS[0], ["x", "", *ROWS[1][2:]]], "row 3, column 'name': empty"),
    ([ROWS[0], [*ROWS[0][:1], "pay-db-01", *ROWS[0][2:]]], "row 3, column 'name': 'pay-db-01' is also the key of row 2"),
    ([ROWS[0], ROWS[1][:5]], "row 3: has 5 fields, the header has 18"),
    ([[*ROWS[1][:17], "NO-SUCH-CI"]], "row 2, column 'depends_on': 'host:no-such-ci' is neither a CI of this file"),
])
def test_a_bad_row_refuses_the_whole_file_naming_row_and_column(env, tmp_path, rows, message):
    engine = make_engine(env["PLANB_DATABASE_URL"])
    before = table_snapshot(engine)
    result = run_cli(env, "import", "csv", str(_write(tmp_path, _csv(rows))), "--quiet")
    assert result.exit_code == 1
    assert "Error: CMDB import refused, nothing written:" in result.output
    assert message in result.output, result.output
    assert table_snapshot(engine) == before
    engine.dispose()


def test_skip_bad_rows_imports_the_rest_and_retires_nothing(env, tmp_path):
    assert run_cli(env, "import", "csv", str(_write(tmp_path, _csv(ROWS))), "--quiet").exit_code == 0
    bad = [*ROWS[2][:9], "Lab", *ROWS[2][10:]]
    result = run_cli(env, "import", "csv", str(_write(tmp_path, _csv([ROWS[0], bad]))), "--skip-bad-rows",
                     "--quiet")
    assert result.exit_code == 3, result.output
    assert "1 bad row(s) skipped" in result.output and "'Lab' is not a Plan B environment" in result.output
    assets = _assets(env)
    assert assets["host:pay-app-01"].retired_at is None   # missing from the file, but the scope is incomplete


def test_a_custom_mapping_for_another_cmdb(env, tmp_path):
    mapping = {"scope": "apps", "delimiter": ";",
               "key": {"column": "App ID", "prefix": "app:", "lowercase": True},
               "columns": {"name": "Application", "owner": "Business Owner", "criticality": "Tier",
                           "environment": "Stage", "depends_on": "Runs On"},
               "values": {"criticality": {"tier 1": "critical", "tier 2": "high"},
                          "environment": {"prod": "production"}},
               "defaults": {"kind": "application"},
               "depends_on": {"separator": ",", "kind": "runs-on", "strength": "hard"}}
    (tmp_path / "apps.yaml").write_text(yaml.safe_dump(mapping))
    text = "App ID;Application;Business Owner;Tier;Stage;Runs On\nPAY;Payments API;Payments;Tier 1;prod;host:qa-app-07\n"
    result = run_cli(env, "import", "csv", str(_write(tmp_path, text, "apps.csv")), "--mapping",
                     str(tmp_path / "apps.yaml"), "--quiet")
    assert result.exit_code == 0, result.output
    app = _assets(env)["app:pay"]
    assert (app.name, app.kind, app.owner, app.criticality, app.environment, app.source_scope) == (
        "Payments API", "application", "Payments", "critical", "production", "cmdb:apps")
    assert ("app:pay", "host:qa-app-07", "runs-on", "hard", "cmdb") in _edges(env)


@pytest.mark.parametrize("mapping, message", [
    ({"columns": {"name": "n"}}, "mapping: 'key' is a required property"),
    ({"key": {"column": "n"}, "columns": {"colour": "c"}}, "columns: Additional properties are not allowed"),
    ({"key": {"column": "n"}, "columns": {}, "values": {"criticality": {"p1": "urgent"}}},
     "values.criticality: 'p1' maps to 'urgent'"),
    ({"key": {"column": "n"}, "columns": {}, "depends_on": {"kind": "uses"}}, "depends_on.kind: 'uses'"),
])
def test_a_bad_mapping_is_refused(env, tmp_path, mapping, message):
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    result = run_cli(env, "import", "csv", str(_write(tmp_path, _csv(ROWS))), "--mapping", str(tmp_path / "m.yaml"))
    assert result.exit_code == 1 and message in result.output, result.output


def test_a_file_without_the_key_column_is_refused(env, tmp_path):
    result = run_cli(env, "import", "csv", str(_write(tmp_path, "hostname,os\nweb-1,Linux\n")))
    assert result.exit_code == 1
    assert "row 1: no 'name' column (the mapping's key column); the header has hostname, os" in result.output
