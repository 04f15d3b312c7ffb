"""``planb import / export / demo / vendors`` as a user runs them."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import yaml

from inventory.db import make_engine, read_session, write_session
from inventory.models import Asset, UnattributedSoftware, User
from tests.estate.conftest import run_cli, small_document


@pytest.mark.parametrize("command", [["import"], ["export"], ["demo"], ["vendors"]])
def test_help(cli_env, command):
    result = run_cli(cli_env, *command, "--help")
    assert result.exit_code == 0 and "Usage: " in result.output and "--help" in result.output


def test_import_prints_counts_then_everything_unchanged(cli_env, tmp_path):
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(small_document(), sort_keys=False))
    first = run_cli(cli_env, "import", str(path))
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[0].split() == ["entity", "created", "updated", "unchanged"]
    assert any(line.split() == ["assets", "4", "0", "0"] for line in lines)
    assert f"Imported {path}: 25 created, 0 updated, 0 unchanged." in first.output
    second = run_cli(cli_env, "import", str(path), "--format", "json")
    data = json.loads(second.output)
    assert data["totals"] == {"created": 0, "updated": 0, "unchanged": 25}
    assert data["counts"]["assets"] == {"created": 0, "updated": 0, "unchanged": 4}


def test_dry_run_and_stdin(cli_env):
    text = json.dumps(small_document())
    dry = run_cli(cli_env, "import", "-", "--dry-run", input=text)
    assert dry.exit_code == 0 and "Would import <stdin>: 25 created" in dry.output
    assert "nothing was changed" in dry.output
    engine = make_engine(cli_env["PLANB_DATABASE_URL"])
    try:
        with read_session(engine) as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(Asset)) == 0
        real = run_cli(cli_env, "import", "-", input=text)
        assert real.exit_code == 0
        with read_session(engine) as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(Asset)) == 4
    finally:
        engine.dispose()


def test_missing_file_and_unmigrated_database(cli_env, tmp_path):
    result = run_cli(cli_env, "import", str(tmp_path / "nope.yaml"))
    assert result.exit_code != 0 and "cannot read the file" in result.stderr
    env = {**cli_env, "PLANB_DATABASE_URL": f"sqlite:///{tmp_path / 'blank.sqlite3'}"}
    path = tmp_path / "estate.yaml"
    path.write_text("version: 1\n")
    result = run_cli(env, "import", str(path))
    assert result.exit_code != 0 and "planb db upgrade" in result.stderr


def test_export_to_stdout_and_files(cli_env, tmp_path):
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(small_document()))
    assert run_cli(cli_env, "import", str(path)).exit_code == 0
    out = run_cli(cli_env, "export")
    assert out.exit_code == 0
    doc = yaml.safe_load(out.stdout)
    assert doc["version"] == 1 and [s["key"] for s in doc["services"]] == ["service:shop"]
    as_json = run_cli(cli_env, "export", "-o", str(tmp_path / "out.json"))
    assert as_json.exit_code == 0 and "Wrote" in as_json.stderr
    assert json.loads((tmp_path / "out.json").read_text()) == yaml.safe_load(out.stdout)
    forced = run_cli(cli_env, "export", "--format", "json")
    assert json.loads(forced.stdout)["version"] == 1
    # The export imports cleanly and changes nothing.
    again = run_cli(cli_env, "import", str(tmp_path / "out.json"), "--format", "json")
    assert json.loads(again.output)["totals"]["created"] == 0


def test_demo_no_serve_is_repeatable_and_prints_the_password_once(cli_env, tmp_path):
    env = {**cli_env, "PLANB_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}"}  # not even migrated
    first = run_cli(env, "demo", "--no-serve", "--port", "8099")
    assert first.exit_code == 0, first.output
    assert "Log in as:  admin" in first.output
    password = next(line.split(":", 1)[1].strip() for line in first.output.splitlines()
                    if line.strip().startswith("Password:"))
    assert len(password) >= 10
    assert "http://127.0.0.1:8099/" in first.output
    second = run_cli(env, "demo", "--no-serve")
    assert second.exit_code == 0
    assert "Password:" not in second.output and "0 created, 0 updated" in second.output
    engine = make_engine(env["PLANB_DATABASE_URL"])
    try:
        with read_session(engine) as db:
            assert db.scalar(sa.select(sa.func.count()).select_from(User)) == 1
            assert db.scalar(sa.select(User.role)) == "admin"
            assert db.scalar(sa.select(sa.func.count()).select_from(Asset)) > 250
    finally:
        engine.dispose()


def test_demo_serves_through_serve_app(cli_env, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("inventory.cli.serve.serve_app", lambda host, port, *a: calls.append((host, port)))
    env = {**cli_env, "PLANB_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}"}
    result = run_cli(env, "demo", "--host", "127.0.0.2", "--port", "9000")
    assert result.exit_code == 0, result.output
    assert calls == [("127.0.0.2", 9000)]


def test_vendors_and_unattributed(cli_env, tmp_path):
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(small_document()))
    assert run_cli(cli_env, "import", str(path)).exit_code == 0
    table = run_cli(cli_env, "vendors")
    assert table.exit_code == 0
    rows = {line.split()[0]: line.split() for line in table.output.splitlines()[2:]}
    assert rows["CrowdStrike"] == ["CrowdStrike", "critical", "-", "1", "1", "-"]
    as_json = {r["name"]: r for r in json.loads(run_cli(cli_env, "vendors", "--format", "json").output)}
    # Microsoft: Windows Server on web-1; hosts nothing (no Azure assets in this estate).
    assert as_json["Microsoft"]["assets"] == 1 and as_json["Microsoft"]["hosted"] == 0
    assert run_cli(cli_env, "vendors", "--unattributed").output.startswith("No unattributed software")
    engine = make_engine(cli_env["PLANB_DATABASE_URL"])
    try:
        with write_session(engine) as db:
            ids = list(db.scalars(sa.select(Asset.id).order_by(Asset.id)))
            for i, asset_id in enumerate(ids[:3]):
                db.add(UnattributedSoftware(asset_id=asset_id, name=f"Notepad++ 8.{i}", publisher="Notepad++ Team",
                                            source="osquery"))
            db.add(UnattributedSoftware(asset_id=ids[0], name="7-Zip", publisher="Igor Pavlov", source="osquery"))
            db.add(UnattributedSoftware(asset_id=ids[0], name="mystery", publisher="", source="osquery"))
    finally:
        engine.dispose()
    result = json.loads(run_cli(cli_env, "vendors", "--unattributed", "--format", "json").output)
    assert result[0] == {"publisher": "Notepad++ Team", "assets": 3, "entries": 3,
                         "examples": ["Notepad++ 8.0", "Notepad++ 8.1", "Notepad++ 8.2"]}
    assert {r["publisher"] for r in result} == {"Notepad++ Team", "Igor Pavlov", "(no publisher)"}
