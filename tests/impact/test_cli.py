"""``planb impact``, ``planb scenarios`` and ``planb incidents`` as a responder runs them."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.impact.conftest import Estate
from tests.impact.test_api import api_estate


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path, estate: Estate):  # type: ignore[no-untyped-def]
    api_estate(estate)
    env = {"PLANB_DATABASE_URL": sqlite_url, "PLANB_INSTANCE_PATH": str(tmp_path / "instance"),
           "PLANB_SECRET_KEY": "impact-tests-secret", "PLANB_LOG_LEVEL": "WARNING", "PLANB_LOG_FORMAT": "text"}

    def run(*args: str, input: str | None = None) -> Result:
        from inventory.cli import main
        return CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)
    return run


FALCON = ["--vendor", "CrowdStrike", "--product", "Falcon Sensor", "--version", ">=7.11", "--os", "windows"]


def test_impact_table(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("impact", *FALCON)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Blast radius: CrowdStrike Falcon Sensor >=7.11 os=windows" in out
    assert "1 seed(s); 3 asset(s) hit: 3 down, 0 degraded" in out
    assert "Business services: Check-in (down)" in out
    assert "3 with a current plan" in out and "0 GAP(s)" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("status"))
    rows = [line.split()[:3] for line in lines[header + 2:]]
    assert rows == [["down", "2", "critical"], ["down", "0", "high"], ["down", "1", "medium"]]
    assert "Check-in -runs-on-> app -runs-on-> win-1" in out
    assert "Paper check-in (current)" in out


def test_impact_json_csv_and_limit(cli) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(cli("impact", *FALCON, "--format", "json").output)
    assert [h["natural_key"] for h in data["hits"]] == ["service:check-in", "win-1", "app"]
    rows = list(csv.DictReader(io.StringIO(cli("impact", *FALCON, "--format", "csv").output)))
    assert [r["natural_key"] for r in rows] == ["service:check-in", "win-1", "app"]
    assert rows[0]["plans"] == "Paper check-in (current, via asset)"
    limited = cli("impact", "--vendor", "CrowdStrike", "--limit", "1").output
    assert "... 4 more" in limited


@pytest.mark.parametrize("args,message", [
    (["--vendor", "Crowdstrik"], "vendor: unknown vendor 'Crowdstrik' (did you mean: 'CrowdStrike'"),
    (["--vendor", "CrowdStrike", "--version", "=>7"], "version: malformed version range"),
    (["--vendor", "CrowdStrike", "--os", "dos"], "os: unknown OS family 'dos'"),
    (["--os", "windows"], "vendor: a vendor is required"),
])
def test_bad_scope_exits_2(cli, args, message) -> None:  # type: ignore[no-untyped-def]
    result = cli("impact", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_what_if_and_as_of(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "what-if.json"
    path.write_text(json.dumps({"add_replicas": [{"asset": "win-1"}]}))
    out = cli("impact", *FALCON, "--what-if", str(path)).output
    assert "What-if: 0 no longer hit, 0 newly hit, 2 down->degraded" in out
    assert cli("impact", *FALCON, "--what-if", str(tmp_path / "missing.json")).exit_code == 2
    old = cli("impact", *FALCON, "--as-of", "2023-06-01T00:00:00Z").output
    assert "(as of 2023-06-01T00:00:00+00:00)" in old and "0 seed(s)" in old


def test_scenarios_and_incidents(cli) -> None:  # type: ignore[no-untyped-def]
    saved = cli("scenarios", "save", "falcon", *FALCON, "--description", "July drill")
    assert saved.exit_code == 0 and "Saved scenario 'falcon'" in saved.output
    assert cli("scenarios", "save", "bad", "--vendor", "Nope").exit_code == 2
    assert "falcon" in cli("scenarios", "list").output
    assert "3 asset(s) hit" in cli("scenarios", "run", "falcon").output

    declared = cli("incidents", "declare", "--title", "Falcon boot loop", "--scenario", "falcon")
    assert declared.exit_code == 0, declared.output
    assert "Declared incident 1: Falcon boot loop — 3 asset(s) hit (3 down, 0 degraded)." in declared.output
    assert cli("incidents", "declare", "--title", "x", "--vendor", "Nope").exit_code == 2
    listing = cli("incidents", "list").output
    assert "Falcon boot loop" in listing and "0/3 (0.0%)" in listing
    recovered = cli("incidents", "recover", "1", "win-1", "--note", "safe mode")
    assert "Marked 1 asset(s) recovered; 1 of 3 (33.3%)." in recovered.output
    bad = cli("incidents", "recover", "1", "nope")
    assert bad.exit_code != 0 and "not part of incident 1: nope" in bad.output
    shown = cli("incidents", "show", "1").output
    assert "Recovered 1 of 3 (33.3%)" in shown and "Paper check-in (current)" in shown
    detail = json.loads(cli("incidents", "show", "1", "--format", "json").output)
    assert [a["natural_key"] for a in detail["assets"] if a["recovered_at"]] == ["win-1"]
    assert "Resolved incident 1" in cli("incidents", "resolve", "1").output
    assert cli("incidents", "resolve", "1").exit_code != 0
    assert "Deleted scenario" in cli("scenarios", "delete", "falcon").output
