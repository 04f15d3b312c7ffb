"""``planb collect azure`` end to end: CLI → AzureCollector → ComputeManagementClient → recorded
payloads (through the ``collectors.azure.CLIENT_FACTORY`` hook) → ingest → the database."""
from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from click.testing import CliRunner

import collectors.azure
from inventory.cli import main
from inventory.db import make_engine
from inventory.models import Asset, CollectionRun
from tests.collectors.azure_payloads import (
    BASE_URL,
    SUBSCRIPTION,
    RecordedArm,
    Reply,
    client_for,
    estate_routes,
    load,
    vmss_list_route,
)


def serve(monkeypatch: pytest.MonkeyPatch, routes_for: Any) -> list[RecordedArm]:
    """Point the CLI's client factory at recorded payloads; returns the transports it built."""
    built: list[RecordedArm] = []

    def factory(subscription: str, base_url: str | None) -> Any:
        transport = RecordedArm(routes_for(base_url))
        built.append(transport)
        return client_for(transport, subscription, base_url=base_url or BASE_URL)

    monkeypatch.setattr(collectors.azure, "CLIENT_FACTORY", factory)
    return built


def stored(url: str) -> tuple[dict[str, Asset], list[CollectionRun]]:
    engine = make_engine(url)
    try:
        with so.Session(engine) as db:
            assets = {a.natural_key: a for a in db.scalars(sa.select(Asset))}
            runs = list(db.scalars(sa.select(CollectionRun).order_by(CollectionRun.id)))
        return assets, runs
    finally:
        engine.dispose()


def test_collect_azure_populates_assets_and_a_second_run_is_unchanged(cli_env: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    transports = serve(monkeypatch, lambda base: estate_routes(base_url=base))
    runner = CliRunner()

    first = runner.invoke(main, ["collect", "azure", "--subscription", SUBSCRIPTION, "--base-url", BASE_URL])

    assert first.exit_code == 0, first.output + first.stderr
    assert f"azure:{SUBSCRIPTION}:vm" in first.output and "succeeded" in first.output
    assert transports and all(url.startswith(BASE_URL) for t in transports for url in t.urls)
    assets, runs = stored(cli_env)
    assert len([a for a in assets.values() if a.provider == "azure"]) == 7
    assert {a.kind for a in assets.values()} >= {"vm", "scale_set"}
    assert runs[-1].collector == "azure" and runs[-1].status == "succeeded"

    second = runner.invoke(main, ["collect", "azure", "--subscription", SUBSCRIPTION, "--base-url", BASE_URL])

    assert second.exit_code == 0, second.output + second.stderr
    assets_after, runs = stored(cli_env)
    assert (runs[-1].created, runs[-1].updated, runs[-1].marked_stale) == (0, 0, 0)
    assert runs[-1].unchanged > 0
    assert {k: a.updated_at for k, a in assets_after.items()} == {k: a.updated_at for k, a in assets.items()}

    listing = runner.invoke(main, ["runs", "--collector", "azure"])
    assert listing.exit_code == 0 and listing.output.count("succeeded") == 2


def test_collect_azure_partial_run_exits_3_and_names_the_failed_scope(cli_env: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def routes(base: str | None) -> dict[str, list[Reply]]:
        r = estate_routes(base_url=base or BASE_URL)
        r[vmss_list_route()] = [Reply(403, load("error_AuthorizationFailed.json"))]
        return r

    serve(monkeypatch, routes)

    result = CliRunner().invoke(main, ["collect", "azure", "--subscription", SUBSCRIPTION])

    assert result.exit_code == 3, result.output + result.stderr
    assert f"azure:{SUBSCRIPTION}:vmss" in result.stderr and "AuthorizationFailed" in result.stderr
    assets, runs = stored(cli_env)
    assert runs[-1].status == "partial"
    assert {a.kind for a in assets.values() if a.provider == "azure"} == {"vm"}


def test_collect_azure_refuses_a_cleartext_base_url(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    built = serve(monkeypatch, lambda base: estate_routes(base_url=base))

    result = CliRunner().invoke(main, ["collect", "azure", "--subscription", SUBSCRIPTION,
                                       "--base-url", "http://127.0.0.1:8443"])

    assert result.exit_code != 0
    assert "https://" in result.output + result.stderr
    assert not built
    assert stored(cli_env)[1] == []
