"""The demo's recorded Falcon console: generated from the demo estate, read through the real
CrowdStrike collector, and in agreement with the estate file (no new asset, the same July 2024
answer, nothing of the file's curation lost, a second load changes nothing)."""
from __future__ import annotations

import json

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine, read_session, write_session
from inventory.estate.demo import (
    build_document,
    build_falcon_console,
    falcon_console_path,
    load_demo,
    load_falcon_console,
    render_falcon_console,
)
from inventory.impact import blast_radius, parse_scope
from inventory.models import Asset, CollectionRun, Installation, Product

JULY = {"vendor": "CrowdStrike", "version": ">=7.11", "os": ["windows"]}


def test_shipped_console_matches_the_generator_and_the_estate() -> None:
    assert falcon_console_path().read_text(encoding="utf-8") == render_falcon_console()
    console = build_falcon_console()
    windows_falcon = {a["name"]: sw["version"] for a in build_document()["assets"]
                      for sw in a.get("software") or []
                      if sw["product"] == "Falcon Sensor" and a["os"]["family"] == "windows"}
    assert {d["hostname"]: d["agent_version"] for d in console["devices"]} == windows_falcon
    assert {"7.10.17706.0", "7.11.18110.0", "7.15.18514.0", "7.16.18605.0"} <= set(windows_falcon.values())
    policy_ids = {p["id"] for p in console["sensor_update_policies"]}
    assert {d["device_policies"]["sensor_update"]["policy_id"] for d in console["devices"]} == policy_ids


def _answer(db: so.Session) -> tuple[set[str], set[str], dict[str, int]]:
    result = blast_radius(db, parse_scope(db, JULY)).to_dict()
    return ({s["natural_key"] for s in result["seeds"]}, {h["natural_key"] for h in result["hits"]},
            dict(result["totals"]["by_status"]))


def _curated(db: so.Session) -> dict[str, tuple]:
    return {a.natural_key: (a.owner, a.criticality, a.environment, a.update_ring, json.dumps(a.tags, sort_keys=True),
                            a.name, a.hostname, a.os_name, a.os_version, a.region, a.zone, a.account)
            for a in db.scalars(sa.select(Asset))}


def test_the_demo_reads_its_windows_fleet_through_the_falcon_collector(demo_url: str) -> None:
    engine = make_engine(demo_url)
    try:
        with read_session(engine) as db:
            before_answer, before_curated = _answer(db), _curated(db)

        run = load_falcon_console(engine)

        assert run.collector == "crowdstrike" and run.status == "succeeded" and run.created == 0
        assert [o.scope_key for o in run.outcomes] == ["crowdstrike:5c7a1e2b9d4f4e0a8b3c6d2e1f0a9b8c"]
        with read_session(engine) as db:
            # the console agrees with the file: same assets, same facts, same July 2024 answer
            assert _answer(db) == before_answer
            assert _curated(db) == before_curated
            hosts = list(db.scalars(sa.select(Asset).join(Installation).join(Product)
                                    .where(Product.name == "Falcon Sensor", Installation.source == "crowdstrike")))
            assert len(hosts) == 90 and {h.os_family for h in hosts} == {"windows"}
            # the file described these machines: they stay its own (a console that stops listing
            # a host -- its agent uninstalled -- must not retire the machine)
            assert {h.source for h in hosts} == {"import"}
            assert {h.attributes["falcon_sensor_update_policy"] for h in hosts} == {
                "Windows - Canary (Auto N)", "Windows - Staging (Auto N-1)", "Windows - Production (Auto N-1)"}
            sensors = db.execute(sa.select(Installation.source, Installation.attributes)
                                 .join(Product).where(Product.name == "Falcon Sensor")
                                 .where(Installation.asset_id.in_([h.id for h in hosts]))).all()
            assert {s for s, _ in sensors} == {"crowdstrike"}
            assert all(attrs["sensor_update_policy"] for _, attrs in sensors)

        again = load_falcon_console(engine)
        assert (again.created, again.updated, again.marked_stale) == (0, 0, 0)
        with write_session(engine) as db:
            totals = load_demo(db, actor="tests").totals()
        assert totals.created == totals.updated == 0
        with read_session(engine) as db:
            runs = [r.collector for r in db.scalars(sa.select(CollectionRun))]
        assert runs == ["crowdstrike", "crowdstrike"]
    finally:
        engine.dispose()


def test_the_runs_page_shows_the_console_run(demo_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import create_user_and_login, make_test_app

    engine = make_engine(demo_url)
    try:
        run = load_falcon_console(engine)
    finally:
        engine.dispose()
    app = make_test_app(demo_url, tmp_path / "web", WTF_CSRF_ENABLED=False)
    client = app.test_client()
    create_user_and_login(app, client, "viewer")
    listing = client.get("/runs/", query_string={"collector": "crowdstrike"}).get_data(as_text=True)
    assert "crowdstrike" in listing and "succeeded" in listing
    detail = client.get(f"/runs/{run.id}").get_data(as_text=True)
    assert "crowdstrike:5c7a1e2b9d4f4e0a8b3c6d2e1f0a9b8c" in detail
    app.extensions["planb_engine"].dispose()
