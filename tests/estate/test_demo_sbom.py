"""The demo tells the Log4Shell story too: `planb demo` imports the payments API's SBOM
(CycloneDX 1.5, log4j-core 2.14.1 supplied by The Apache Software Foundation) through the SBOM
import every user runs, and the December 2021 question finds the application and the services
above it -- without changing the July 2024 answers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from inventory.cli import main
from inventory.db import make_engine, read_session
from inventory.estate.demo import PAYMENTS_APP, load_payments_sbom
from inventory.models import Asset, Installation, Product, Vendor

LOG4SHELL = ["impact", "--vendor", "Apache Software Foundation", "--version", "<2.17", "--format", "json"]
JULY = ["impact", "--vendor", "CrowdStrike", "--product", "Falcon Sensor", "--version", ">=7.11", "--os",
        "windows", "--format", "json"]


@pytest.fixture
def cli(demo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("PLANB_DATABASE_URL", demo_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_SECRET_KEY", "demo-sbom-tests")
    monkeypatch.setenv("PLANB_LOG_LEVEL", "WARNING")
    return CliRunner()


def test_the_demo_answers_the_log4shell_question_from_the_payments_sbom(cli: CliRunner, demo_url: str) -> None:
    before = cli.invoke(main, LOG4SHELL)
    assert before.exit_code != 0 or json.loads(before.output)["totals"]["hits"] == 0
    july_before = json.loads(cli.invoke(main, JULY).output)

    engine = make_engine(demo_url)
    try:
        imported = load_payments_sbom(engine, actor="tests")
        assert imported.run.status == "succeeded" and not imported.created_asset
        with read_session(engine) as db:
            installed = {tuple(row) for row in db.execute(
                sa.select(Vendor.name, Product.name, Installation.version)
                .join(Product, Product.vendor_id == Vendor.id).join(Installation).join(Asset)
                .where(Asset.natural_key == PAYMENTS_APP))}
        assert ("Apache Software Foundation", "log4j-core", "2.14.1") in installed
        again = load_payments_sbom(engine, actor="tests")
        assert (again.run.created, again.run.updated, again.run.marked_stale) == (0, 0, 0)
    finally:
        engine.dispose()

    data = json.loads(cli.invoke(main, LOG4SHELL).output)
    hits = {h["natural_key"]: h["status"] for h in data["hits"]}
    assert hits[PAYMENTS_APP] == "down"
    assert hits["service:payments"] == "down"
    assert [s["natural_key"] for s in data["seeds"]] == [PAYMENTS_APP]
    # the July 2024 answer is the same as before: the payments API runs on Linux
    july = json.loads(cli.invoke(main, JULY).output)
    assert july["totals"] == july_before["totals"]
