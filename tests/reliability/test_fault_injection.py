"""Every write path is one transaction: a failure injected midway leaves no trace.

The failure is injected *after* the path has already written part of its work
(vendors and assets before plans; the incident row before its audit entry...), so
a path that committed early or in pieces would be caught.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from collectors.base import AssetRecord, DependencyRecord, ScopeBatch
from collectors.ingest import run_collection
from inventory.app_db import get_session
from inventory.cli import main
from inventory.db import make_engine
from inventory.estate.importer import import_estate
from inventory.services import audit as audit_service
from tests.conftest import TEST_SECRET, bearer, create_api_token, create_user_and_login, make_test_app
from tests.reliability.helpers import SMALL_ESTATE, fingerprint


class Injected(RuntimeError):
    """The failure a test injects."""


def _boom(*_args, **_kwargs):  # type: ignore[no-untyped-def]
    raise Injected("injected failure")


@pytest.fixture
def world(any_db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    app = make_test_app(any_db_url, tmp_path / "instance", WTF_CSRF_ENABLED=False)
    with app.app_context():
        db = get_session()
        import_estate(db, SMALL_ESTATE, source_name="seed", actor="test")
        db.commit()
    yield app, any_db_url
    app.extensions["planb_engine"].dispose()


def _bigger_estate() -> dict:
    document = dict(SMALL_ESTATE)
    document["vendors"] = SMALL_ESTATE["vendors"] + [{"name": "NewVendor", "products": [{"name": "Thing"}]}]
    document["assets"] = SMALL_ESTATE["assets"] + [
        {"key": f"new:{i}", "name": f"new {i}", "kind": "vm"} for i in range(5)]
    document["plans"] = SMALL_ESTATE["plans"] + [{"name": "New plan", "covers": {"assets": ["new:0"]}}]
    return document


def test_estate_import_failing_midway_via_api_leaves_no_trace(world, monkeypatch):
    app, url = world
    token = create_api_token(app, "write")
    app.test_client().get("/api/v1/plans", headers=bearer(token))  # records the token's first use
    before = fingerprint(url)
    import inventory.estate.importer as importer
    monkeypatch.setattr(importer, "_apply_plans", _boom)  # vendors and assets are written by then
    with pytest.raises(Injected):
        app.test_client().post("/api/v1/estate", json=_bigger_estate(), headers=bearer(token))
    assert fingerprint(url) == before


def test_estate_import_failing_midway_via_cli_leaves_no_trace(world, monkeypatch, tmp_path):
    import json

    _app, url = world
    before = fingerprint(url)
    estate_file = tmp_path / "estate.json"
    estate_file.write_text(json.dumps(_bigger_estate()))
    import inventory.estate.importer as importer
    monkeypatch.setattr(importer, "_apply_dependencies", _boom)
    monkeypatch.setenv("PLANB_DATABASE_URL", url)
    monkeypatch.setenv("PLANB_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "cli"))
    result = CliRunner().invoke(main, ["import", str(estate_file)])
    assert result.exit_code != 0
    assert isinstance(result.exception, Injected)
    assert fingerprint(url) == before


class _TwoScopes:
    name = "faulty"

    def describe_scope(self) -> str:
        return "two scopes"

    def collect(self, progress):  # type: ignore[no-untyped-def]
        for scope in ("faulty:a", "faulty:b"):
            assets = [AssetRecord(natural_key=f"{scope}:{i}", name=f"{scope} {i}", kind="vm") for i in range(5)]
            deps = [DependencyRecord(dependent_key=f"{scope}:0", dependency_key=f"{scope}:{i}") for i in range(1, 5)]
            yield ScopeBatch(scope_key=scope, assets=assets, dependencies=deps)


def test_collector_scope_failing_midway_writes_none_of_that_scope(world, monkeypatch):
    """Ingest applies each scope in one transaction: a failure after the scope's assets
    were upserted (while writing its edges) leaves none of that scope behind; the other
    scope and the run's own bookkeeping are recorded."""
    _app, url = world
    import collectors.ingest as ingest
    real = ingest._BatchApplier._apply_dependencies

    def failing_for_b(self):  # type: ignore[no-untyped-def]
        if "faulty:b" in self.scopes:
            raise Injected("injected failure")
        return real(self)

    monkeypatch.setattr(ingest._BatchApplier, "_apply_dependencies", failing_for_b)
    before = fingerprint(url)
    engine = make_engine(url)
    try:
        run = run_collection(engine, _TwoScopes())
    finally:
        engine.dispose()
    assert run.status == "partial"
    after = fingerprint(url)
    new_assets = set(after["assets"]) - set(before["assets"])
    assert len(new_assets) == 5 and all("faulty:a" in row for row in new_assets)
    assert not any("faulty:b" in row for row in after["assets"])
    assert len(after["dependencies"]) - len(before["dependencies"]) == 4
    for table in ("vendors", "products", "installations", "contingency_plans", "plan_links", "users"):
        assert after[table] == before[table]
    assert {s for s in after["scope_results"] if "faulty:b" in s}  # the failure is on record


def test_plan_event_failing_midway_leaves_no_trace(world, monkeypatch):
    app, url = world
    token = create_api_token(app, "write")
    client = app.test_client()
    plan_id = client.get("/api/v1/plans", headers=bearer(token)).get_json()["plans"][0]["id"]
    before = fingerprint(url)

    real_record = audit_service.record

    def failing_record(session, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("action", "").startswith("record-"):
            raise Injected("injected failure")  # the event row and the plan's date are written
        return real_record(session, **kwargs)

    import inventory.services.plans as plans_service
    monkeypatch.setattr(plans_service.audit, "record", failing_record)
    with pytest.raises(Injected):
        client.post(f"/api/v1/plans/{plan_id}/events", json={"kind": "exercise", "outcome": "passed"},
                    headers=bearer(token))
    assert fingerprint(url) == before


def test_incident_declaration_failing_midway_leaves_no_trace(world, monkeypatch):
    app, url = world
    editor = app.test_client()
    create_user_and_login(app, editor, "editor")
    before = fingerprint(url)
    real_record = audit_service.record

    def failing_record(session, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("action") == "incident.declare":
            raise Injected("injected failure")  # the incident and its snapshot rows are written
        return real_record(session, **kwargs)

    import inventory.services.incidents as incidents_service
    monkeypatch.setattr(incidents_service.audit, "record", failing_record)
    with pytest.raises(Injected):
        editor.post("/incidents/declare", data={"title": "Falcon crash", "vendor": "CrowdStrike"})
    after = fingerprint(url)
    # The login updated the user's last-login time; nothing else may differ.
    after["users"], before["users"] = [], []
    assert after == before


def test_user_creation_failing_midway_leaves_no_trace(world, monkeypatch):
    app, url = world
    admin = app.test_client()
    create_user_and_login(app, admin, "admin")
    before = fingerprint(url)
    import inventory.auth as auth
    monkeypatch.setattr(auth.audit, "record", _boom)
    with pytest.raises(Injected):
        admin.post("/admin/users", data={"username": "ghost", "role": "editor"})
    with pytest.raises(Injected):
        admin.post("/admin/tokens", data={"name": "ghost-token", "role": "write"})
    assert fingerprint(url) == before
