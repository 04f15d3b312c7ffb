"""Bad input on the ``planb`` command line: one ``Error: ...`` line, a non-zero exit, no
traceback, and the database left as it was.  Each test replays a case QA found."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from collectors import registry
from inventory.cli import main

HUGE_ID = "99999999999999999999999"  # more than SQLite (and PostgreSQL) can compare with an id
OVERFLOWING = "0001-01-01T00:00:00+14:00"  # a valid date, but before year 1 once in UTC
DEEP_JSON = "[" * 5000 + "]" * 5000


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    return {"PLANB_DATABASE_URL": url, "PLANB_INSTANCE_PATH": str(tmp_path / "instance"),
            "PLANB_SECRET_KEY": "cli-errors-tests-secret", "PLANB_LOG_LEVEL": "WARNING",
            "PLANB_LOG_FORMAT": "text"}


@pytest.fixture
def env(demo_url: str, tmp_path: Path) -> dict[str, str]:
    """The Skyward Air demo estate, a private copy per test."""
    return _env(demo_url, tmp_path)


def run(env: dict[str, str], *args: str) -> Result:
    # Exceptions are caught so that a traceback shows up as a failed assertion below.
    return CliRunner().invoke(main, list(args), env=env)


def refused(result: Result, exit_code: int, *fragments: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, result.output
    for fragment in fragments:
        assert fragment in error_lines[0], result.output


def snapshot(url: str) -> list[Any]:
    """Every row of every table: the database is unchanged when this is."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# ---------------------------------------------------------------- 1. deeply nested JSON

def test_import_of_deeply_nested_json_is_refused_with_line_and_column(env, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP_JSON)
    before = snapshot(env["PLANB_DATABASE_URL"])
    result = run(env, "import", str(path), "--dry-run")
    refused(result, 1, f"{path}: not valid JSON: exceeded maximum nesting depth at line 1, column 65")
    assert snapshot(env["PLANB_DATABASE_URL"]) == before


def test_the_importer_itself_refuses_deep_json():
    from inventory.estate.importer import EstateError, load_document

    text = '{"version": 1,\n "vendors": ' + DEEP_JSON + "}"
    with pytest.raises(EstateError, match=r"exceeded maximum nesting depth at line 2, column 76"):
        load_document(text, "api.json")


def test_what_if_file_of_deeply_nested_json_is_refused(env, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(DEEP_JSON)
    result = run(env, "impact", "--vendor", "Okta", "--what-if", str(path))
    refused(result, 2, f"--what-if: cannot read {path}: exceeded maximum nesting depth")


# ---------------------------------------------------------------- 2. ids no database can hold

# (incidents show/recover/resolve and scenarios run/delete with such an id are refused by
# inventory.services.incidents itself, for the API as well.)
@pytest.mark.parametrize("args,message", [
    (["plans", "show", HUGE_ID], f"no plan '{HUGE_ID}'"),
    (["plans", "review", HUGE_ID], f"no plan '{HUGE_ID}'"),
    (["updates", "test", HUGE_ID, "--ring", "canary", "--status", "passed"], f"no update with id {HUGE_ID}"),
    (["updates", "add", HUGE_ID, "1.0"], f"no product with id {HUGE_ID}"),
    (["updates", "list", "--vendor", HUGE_ID], f"no vendor '{HUGE_ID}'"),
    (["review", HUGE_ID], f"no vendor '{HUGE_ID}'"),
    (["plans", "add", "p", "--vendor", HUGE_ID], f"no vendor '{HUGE_ID}'"),
    (["tokens", "revoke", HUGE_ID], f"no token with id {HUGE_ID}"),
    (["runs", "--id", HUGE_ID], f"no collection run with id {HUGE_ID}"),
])
def test_an_id_too_large_for_the_database_is_just_an_unknown_id(env, args, message):
    before = snapshot(env["PLANB_DATABASE_URL"])
    result = run(env, *args)
    assert result.exit_code in (1, 2)
    refused(result, result.exit_code, message)
    assert snapshot(env["PLANB_DATABASE_URL"]) == before


def test_a_limit_too_large_for_the_database_is_refused(env):
    assert run(env, "incidents", "declare", "--title", "t", "--vendor", "Okta").exit_code == 0
    refused(run(env, "incidents", "show", "1", "--limit", HUGE_ID), 2, "Invalid value for '--limit'")


# ---------------------------------------------------------------- 3. date-times that overflow

@pytest.mark.parametrize("args,option", [
    (["impact", "--vendor", "CrowdStrike", "--as-of", OVERFLOWING], "--as-of"),
    (["scenarios", "run", "x", "--as-of", OVERFLOWING], "--as-of"),
    (["updates", "test", "1", "--ring", "canary", "--status", "passed", "--at", OVERFLOWING], "--at"),
    (["plans", "review", "1", "--at", OVERFLOWING], "--at"),
    (["plans", "exercise", "1", "--outcome", "passed", "--at", "9999-12-31T23:00:00-05:00"], "--at"),
])
def test_a_date_time_out_of_range_names_the_option(env, args, option):
    before = snapshot(env["PLANB_DATABASE_URL"])
    refused(run(env, *args), 2, f"Invalid value for '{option}'", "out of range")
    assert snapshot(env["PLANB_DATABASE_URL"]) == before


def test_the_update_service_refuses_an_overflowing_time_too():
    from inventory.services.updates import ValidationError, parse_datetime

    with pytest.raises(ValidationError, match="tested_at is out of range"):
        parse_datetime(OVERFLOWING, "tested_at")


# ---------------------------------------------------------------- 4. output files

@pytest.mark.parametrize("command", [
    ["export", "-o", "{missing}/estate.yaml"],
    ["review", "CrowdStrike", "--html", "{missing}/review.html"],
    ["review", "CrowdStrike", "-o", "{missing}/review.md"],
    ["backup", "{missing}/planb.sqlite3"],
    ["backup", "{missing}/planb.jsonl"],
])
def test_an_output_file_in_a_missing_directory_is_refused_and_nothing_is_created(env, tmp_path, command):
    missing = tmp_path / "no" / "such"
    args = [part.format(missing=missing) for part in command]
    refused(run(env, *args), 1, f"cannot write {args[-1]}: {missing} does not exist")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("command", [
    ["export", "-o", "{target}"],
    ["review", "CrowdStrike", "--html", "{target}"],
    ["backup", "{target}"],
])
def test_an_output_file_that_cannot_be_written_is_one_error_line(env, tmp_path, command):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    target = str(a_file / "out.sqlite3")
    refused(run(env, *[part.format(target=target) for part in command]), 1,
            f"cannot write {target}: {a_file} is not a directory")
    if Path("/proc/self").is_dir():  # Linux: a directory nothing may be created in
        refused(run(env, *[part.format(target="/proc/planb-out.sqlite3") for part in command]), 1,
                "cannot write /proc/planb-out.sqlite3: ")


# ---------------------------------------------------------------- 5. a database without the schema

def test_every_command_on_a_database_without_schema_says_to_upgrade(tmp_path):
    env = _env(f"sqlite:///{tmp_path / 'empty.sqlite3'}", tmp_path)
    for args in (["impact", "--vendor", "X"], ["incidents", "declare", "--title", "t", "--vendor", "X"],
                 ["incidents", "list"], ["scenarios", "run", "x"], ["export"], ["vendors"], ["risk"],
                 ["plans", "rto"], ["updates", "exposure"], ["runs"], ["tokens", "list"]):
        result = run(env, *args)
        refused(result, 1, "the database has no Plan B schema", "Run 'planb db upgrade' first")


# ---------------------------------------------------------------- 6. db downgrade -1

def test_db_downgrade_takes_a_relative_revision_as_documented(sqlite_url, tmp_path):
    from inventory import migrate

    env = _env(sqlite_url, tmp_path)
    head = migrate.head_revision()
    result = run(env, "db", "downgrade", "-1")
    assert result.exit_code == 0, result.output
    current = run(env, "db", "current").output
    assert f"head:    {head}" in current and f"current: {head}" not in current
    assert run(env, "db", "upgrade").exit_code == 0
    assert f"current: {head}" in run(env, "db", "current").output


# ---------------------------------------------------------------- 7. scenarios named like ids

def _scenario_names(url: str) -> dict[int, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT id, name FROM scenarios")).all())
    finally:
        engine.dispose()


def test_a_scenario_name_wins_over_an_id_and_the_output_says_which_one(env):
    assert run(env, "scenarios", "save", "123", "--vendor", "CrowdStrike").exit_code == 0
    assert run(env, "scenarios", "save", "2", "--vendor", "Okta").exit_code == 0
    assert _scenario_names(env["PLANB_DATABASE_URL"]) == {1: "123", 2: "2"}
    assert run(env, "scenarios", "save", "3", "--vendor", "Microsoft").exit_code == 0  # id 3 named '3'

    ran = run(env, "scenarios", "run", "2")
    assert ran.exit_code == 0, ran.output
    assert "Scenario '2' (id 2)" in ran.output and "Blast radius: Okta" in ran.output
    ran = run(env, "scenarios", "run", "1")  # no scenario is named '1': the id
    assert "Scenario '123' (id 1)" in ran.output and "Blast radius: CrowdStrike" in ran.output

    assert run(env, "scenarios", "save", "1", "--vendor", "Microsoft").exit_code == 0  # now '1' is id 4
    ran = run(env, "scenarios", "run", "1")
    assert "Blast radius: Microsoft" in ran.output
    assert "'1' is the name of scenario 4 and the id of scenario '123'" in ran.output
    ran = run(env, "scenarios", "run", "--id", "1")
    assert "Scenario '123' (id 1)" in ran.output and "Blast radius: CrowdStrike" in ran.output

    deleted = run(env, "scenarios", "delete", "1")
    assert deleted.exit_code == 0 and "Deleted scenario '1' (id 4)." in deleted.output
    assert _scenario_names(env["PLANB_DATABASE_URL"]) == {1: "123", 2: "2", 3: "3"}
    deleted = run(env, "scenarios", "delete", "--id", "2")
    assert "Deleted scenario '2' (id 2)." in deleted.output
    assert _scenario_names(env["PLANB_DATABASE_URL"]) == {1: "123", 3: "3"}
    refused(run(env, "scenarios", "delete", "--id", "2"), 1, "no scenario with id 2")


# ---------------------------------------------------------------- 8. unknown ring, unknown collector

def test_an_unknown_ring_is_an_error_listing_the_rings(env):
    refused(run(env, "updates", "rings", "--ring", "bogus"), 1,
            "unknown ring 'bogus'", "canary, staging, production", "'none'")
    assert "No assets in ring" not in run(env, "updates", "rings", "--ring", "canary").output


def test_runs_filtered_by_an_unknown_collector_say_so(env):
    engine = sa.create_engine(env["PLANB_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO collection_runs (collector, scope, started_at, status, created, "
                             "updated, unchanged, marked_stale, errors) VALUES ('host', 'this machine', "
                             "'2026-01-01 00:00:00', 'succeeded', 1, 0, 0, 0, '[]')"))
    engine.dispose()
    refused(run(env, "runs", "--collector", "nope"), 1,
            "no collection runs match collector 'nope'",
            f"known collectors: {', '.join(sorted(registry.SOURCES))}")
    result = run(env, "runs", "--collector", "aws")
    assert result.exit_code == 0 and "No collection runs match collector 'aws'." in result.output
    assert "this machine" in run(env, "runs", "--collector", "host").output


# ---------------------------------------------------------------- 9. help that matches behaviour

def test_scope_option_help_matches_what_is_accepted():
    runner = CliRunner()
    impact_help = " ".join(runner.invoke(main, ["impact", "--help"]).output.split())
    assert "OS family: windows, linux, macos, other" in impact_help
    save_help = runner.invoke(main, ["scenarios", "save", "--help"]).output
    assert "--scenario" not in save_help
    declare_help = " ".join(runner.invoke(main, ["incidents", "declare", "--help"]).output.split())
    assert "required unless --scenario" in declare_help


# ---------------------------------------------------------------- 10. CSV formula injection

def test_csv_output_defuses_formulas_but_keeps_numbers():
    from inventory.cli.output import render_csv
    from inventory.services.blast_view import to_csv

    text = render_csv([{"name": '=HYPERLINK("http://evil")', "owner": "@ops", "note": "-1+2",
                        "delta": -1, "tab": "\tx", "plain": "web-1"}],
                      ["name", "owner", "note", "delta", "tab", "plain"])
    row = next(csv.DictReader(io.StringIO(text)))
    assert row == {"name": '\'=HYPERLINK("http://evil")', "owner": "'@ops", "note": "'-1+2", "delta": "-1",
                   "tab": "'\tx", "plain": "web-1"}
    web = to_csv({"hits": [{"name": "+cmd", "hops": -1, "status": "down", "criticality": "low"}]})
    row = next(csv.DictReader(io.StringIO(web)))
    assert row["name"] == "'+cmd" and row["hops"] == "-1"


def test_impact_csv_of_a_collected_formula_name_is_defused(env, tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("version: 1\nassets:\n  - key: host:evil\n    name: '=HYPERLINK(\"http://evil\",\"x\")'\n"
                    "    kind: host\n    os: {family: windows}\n    software:\n"
                    "      - {vendor: CrowdStrike, product: Falcon Sensor, version: 7.11.1}\n")
    assert run(env, "import", str(path)).exit_code == 0
    result = run(env, "impact", "--vendor", "CrowdStrike", "--format", "csv")
    rows = {r["natural_key"]: r for r in csv.DictReader(io.StringIO(result.output))}
    assert rows["host:evil"]["name"] == '\'=HYPERLINK("http://evil","x")'
    assert rows["host:evil"]["hops"] == "0"


# ---------------------------------------------------------------- 11. findings with a bad severity

def test_a_finding_with_an_unknown_severity_is_refused_but_titles_keep_their_colons(env):
    before = snapshot(env["PLANB_DATABASE_URL"])
    for finding, message in (("x:bogus", "'bogus' is not a severity (critical, high, medium, low)"),
                             ("x:bogus:open", "'bogus' is not a severity (critical, high, medium, low)"),
                             ("x:high:bogus", "'bogus' is not a status (open, accepted, closed)")):
        refused(run(env, "assessments", "add", "Okta", "--finding", finding), 1, f"--finding {finding!r}",
                message)
    assert snapshot(env["PLANB_DATABASE_URL"]) == before

    result = run(env, "assessments", "add", "Okta", "--date", "2026-01-05", "--finding", "Ports: open",
                 "--finding", "x:bogus:high", "--finding", "MFA:critical:closed")
    assert result.exit_code == 0, result.output
    data = json.loads(run(env, "assessments", "list", "--vendor", "Okta", "--format", "json").output)
    findings = next(a for a in data if a["assessed_on"] == "2026-01-05")["findings"]
    assert [(f["title"], f["severity"], f["status"]) for f in findings] == [
        ("Ports: open", "medium", "open"), ("x:bogus", "high", "open"), ("MFA", "critical", "closed")]


# ---------------------------------------------------------------- 12. updates add with a bare product name

def test_updates_add_says_which_product_a_bare_name_meant(env):
    help_text = " ".join(run(env, "updates", "add", "--help").output.split())
    assert "a product name no other vendor uses" in help_text
    result = run(env, "updates", "add", "Falcon Sensor", "7.17.1")
    assert result.exit_code == 0, result.output
    assert "CrowdStrike/Falcon Sensor@7.17.1" in result.output


# ---------------------------------------------------------------- 13. an empty --version

@pytest.mark.parametrize("command", [["impact"], ["scenarios", "save", "s"],
                                     ["incidents", "declare", "--title", "t"]])
def test_an_empty_version_range_is_an_error(env, command):
    before = snapshot(env["PLANB_DATABASE_URL"])
    refused(run(env, *command, "--vendor", "CrowdStrike", "--version", ""), 2, "--version is empty")
    assert snapshot(env["PLANB_DATABASE_URL"]) == before
