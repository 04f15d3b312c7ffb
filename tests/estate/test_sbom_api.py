"""POST /api/v1/assets/{id}/sbom: the SBOM as the request body (SQLite and PostgreSQL)."""
from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from inventory.db import make_engine, read_session, write_session
from inventory.estate.importer import import_estate
from inventory.models import Asset, AuditEvent, Installation, Product
from tests.conftest import bearer, create_api_token, make_test_app
from tests.estate.conftest import table_snapshot

SBOMS = Path(__file__).parent / "sboms"


@pytest.fixture
def api(any_db_url, tmp_path):  # type: ignore[no-untyped-def]
    engine = make_engine(any_db_url)
    with write_session(engine) as db:
        import_estate(db, {"version": 1, "assets": [{"key": "app:payments-api", "name": "payments-api",
                                                     "kind": "application"}]}, source_name="t", actor="test")
    with read_session(engine) as db:
        asset_id = db.scalar(sa.select(Asset.id).where(Asset.natural_key == "app:payments-api"))
    app = make_test_app(any_db_url, tmp_path / "instance")
    read = bearer(create_api_token(app, "read"))
    write = bearer(create_api_token(app, "write"))
    yield app.test_client(), read, write, engine, asset_id
    app.extensions["planb_engine"].dispose()
    engine.dispose()


def _versions(engine, asset_id):  # type: ignore[no-untyped-def]
    with read_session(engine) as db:
        return dict(db.execute(sa.select(Product.name, Installation.version)
                               .join(Product, Product.id == Installation.product_id)
                               .where(Installation.asset_id == asset_id)).all())


@pytest.mark.parametrize("name, media_type", [("payments.cdx.json", "application/vnd.cyclonedx+json"),
                                              ("checkin.spdx.json", "application/spdx+json"),
                                              ("loyalty.cdx.xml", "application/vnd.cyclonedx+xml")])
def test_a_write_token_imports_each_format(api, name, media_type):  # type: ignore[no-untyped-def]
    client, _read, write, engine, asset_id = api
    response = client.post(f"/api/v1/assets/{asset_id}/sbom", data=(SBOMS / name).read_bytes(),
                           headers={**write, "Content-Type": media_type})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["asset"] == {"id": asset_id, "key": "app:payments-api", "name": "payments-api"}
    assert body["run"]["status"] == "succeeded" and body["created_asset"] is False
    assert body["components"] == body["products"] > 0
    versions = _versions(engine, asset_id)
    assert len(versions) == body["products"] - body["unattributed"]
    if name == "payments.cdx.json":
        assert versions["log4j-core"] == "2.14.1" and body["format"] == "CycloneDX 1.5 (JSON)"
    with read_session(engine) as db:
        event = db.scalar(sa.select(AuditEvent).where(AuditEvent.action == "import-sbom"))
        assert event.entity_id == str(asset_id) and "app:payments-api" in event.summary


def test_refusals_change_nothing(api):  # type: ignore[no-untyped-def]
    client, read, write, engine, asset_id = api
    url = f"/api/v1/assets/{asset_id}/sbom"
    cdx = (SBOMS / "payments.cdx.json").read_bytes()
    json_type = {"Content-Type": "application/json"}
    before = table_snapshot(engine)

    assert client.post(url, data=cdx, headers=json_type).status_code == 401
    denied = client.post(url, data=cdx, headers={**read, **json_type})
    assert denied.status_code == 403 and denied.json["error"] == "forbidden"
    missing = client.post("/api/v1/assets/999999/sbom", data=cdx, headers={**write, **json_type})
    assert missing.status_code == 404 and missing.json["error"] == "not_found"
    wrong = client.post(url, data=cdx, headers={**write, "Content-Type": "text/plain"})
    assert wrong.status_code == 415 and "application/vnd.cyclonedx+json" in wrong.json["allowed"]

    bad = client.post(url, data=cdx.replace(b'"version": "2.14.1",', b'"version": 2.14,', 1),
                      headers={**write, **json_type})
    assert bad.status_code == 422
    assert bad.json["field"] == bad.json["position"] == "/components/0/version"
    assert "not valid CycloneDX 1.5" in bad.json["message"]
    broken = client.post(url, data=b"<bom xmlns='http://cyclonedx.org/schema/bom/1.5'>",
                         headers={**write, "Content-Type": "application/xml"})
    assert broken.status_code == 400 and broken.json["position"].startswith("line 1, column")
    assert broken.json["field"] == "/"  # the body itself; the XML position in "position"
    unknown = client.post(url + "?dry_run=true", data=cdx, headers={**write, **json_type})
    assert unknown.status_code == 400 and unknown.json["field"] == "dry_run"

    assert table_snapshot(engine) == before


def test_the_operation_is_described_with_every_status_it_answers(api):  # type: ignore[no-untyped-def]
    client, read, _write, _engine, _asset_id = api
    spec = client.get("/api/v1/openapi.json", headers=read).json
    operation = spec["paths"]["/api/v1/assets/{asset_id}/sbom"]["post"]
    assert {"200", "400", "401", "403", "404", "409", "413", "415", "422"} <= set(operation["responses"])
    assert set(operation["requestBody"]["content"]) == {
        "application/vnd.cyclonedx+json", "application/vnd.cyclonedx+xml", "application/spdx+json",
        "application/json", "application/xml"}
    assert "SbomImport" in spec["components"]["schemas"]
