"""JSON API: assets (filters, sort, keyset pages), vendors, and the estate document (SQLite + PostgreSQL)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from inventory.db import make_engine, read_session, utcnow, write_session
from inventory.estate.demo import load_demo
from inventory.estate.exporter import export_estate
from inventory.models import Asset, Installation, Product, Vendor
from tests.conftest import bearer, create_api_token, make_test_app
from tests.estate.conftest import small_document, table_snapshot


def _client(url, tmp_path):  # type: ignore[no-untyped-def]
    app = make_test_app(url, tmp_path / "instance")
    read = bearer(create_api_token(app, "read"))
    write = bearer(create_api_token(app, "write"))
    return app, (app.test_client(), read, write)


@pytest.fixture
def api(demo_readonly_url, tmp_path):  # type: ignore[no-untyped-def]
    """(client, read headers, write headers, engine) over the demo estate; the tests only read it."""
    engine = make_engine(demo_readonly_url)
    app, (client, read, write) = _client(demo_readonly_url, tmp_path)
    yield client, read, write, engine
    app.extensions["planb_engine"].dispose()
    engine.dispose()


@pytest.fixture
def api_rw(any_db_url, tmp_path):  # type: ignore[no-untyped-def]
    """Like ``api`` over a private database holding only what the test puts there."""
    engine = make_engine(any_db_url)
    app, (client, read, write) = _client(any_db_url, tmp_path)
    yield client, read, write, engine
    app.extensions["planb_engine"].dispose()
    engine.dispose()


def _all_pages(client, headers, **params):  # type: ignore[no-untyped-def]
    items, after, pages = [], None, 0
    while True:
        query = dict(params, **({"after": after} if after else {}))
        response = client.get("/api/v1/assets", query_string=query, headers=headers)
        assert response.status_code == 200, response.json
        body = response.json
        items += body["items"]
        pages += 1
        after = body["next"]
        if after is None:
            return items, body["total"], pages


def test_tokens_are_required_and_writes_need_a_write_token(api):
    client, read, _write, _engine = api
    assert client.get("/api/v1/assets").status_code == 401
    assert client.post("/api/v1/estate", json=small_document(), headers=read).status_code == 403


def test_pages_cover_every_active_asset_exactly_once_in_order(api):
    client, read, _write, engine = api
    items, total, pages = _all_pages(client, read, limit=40)
    with read_session(engine) as db:
        expected = db.scalar(sa.select(sa.func.count()).select_from(Asset).where(Asset.retired_at.is_(None)))
    assert total == expected == len(items) == len({i["id"] for i in items})
    assert pages == -(-expected // 40)
    assert [(i["name"], i["id"]) for i in items] == sorted((i["name"], i["id"]) for i in items)
    first = client.get("/api/v1/assets", headers=read).json
    assert first["limit"] == 50 and len(first["items"]) == 50 and "after=" in first["next_url"]
    desc, _total, _pages = _all_pages(client, read, sort="-name", limit=200)
    assert [i["id"] for i in desc] == [i["id"] for i in reversed(items)]


def test_filters(api):
    client, read, _write, engine = api

    def get(**params):  # type: ignore[no-untyped-def]
        items, total, _ = _all_pages(client, read, limit=500, **params)
        assert total == len(items)
        return items

    windows_azure = get(provider="azure", os_family="windows")
    assert windows_azure and all(i["provider"] == "azure" and i["os"]["family"] == "windows"
                                 for i in windows_azure)
    services = get(kind="service")
    assert {s["key"] for s in services} >= {"service:check-in", "service:crew-scheduling"}
    assert all(i["criticality"] == "critical" for i in get(criticality="critical"))
    assert {i["region"] for i in get(region="centralus")} == {"centralus"}
    assert {i["account"] for i in get(account="222222222222")} == {"222222222222"}
    assert {i["environment"] for i in get(environment="staging")} == {"staging"}
    assert {i["name"] for i in get(q="CHK-APP")} == {f"chk-app-{s}{n:02d}" for s in "wl" for n in range(1, 5)}
    combined = get(vendor="CrowdStrike", os_family="windows", region="eastus2")
    with read_session(engine) as db:
        falcon_hosts = set(db.scalars(
            sa.select(Installation.asset_id).join(Product).where(Product.name == "Falcon Sensor")))
        crowdstrike_id = db.scalar(sa.select(Vendor.id).where(Vendor.name == "CrowdStrike"))
    assert combined and all(i["id"] in falcon_hosts and i["os"]["family"] == "windows" for i in combined)
    assert {i["id"] for i in get(vendor="crowdstrike")} == falcon_hosts
    assert {i["id"] for i in get(vendor=str(crowdstrike_id))} == falcon_hosts
    # A cloud vendor also covers what is hosted on its cloud.
    assert len(get(vendor="Microsoft")) > len(get(provider="azure"))


def test_retired_filter(api_rw):
    client, read, _write, engine = api_rw
    with write_session(engine) as db:
        load_demo(db, actor="tester")
    with write_session(engine) as db:
        asset = db.scalar(sa.select(Asset).where(Asset.name == "chk-app-w01"))
        asset.retired_at = utcnow()
        retired_id = asset.id
    active = client.get("/api/v1/assets", query_string={"q": "chk-app-w0"}, headers=read).json
    assert retired_id not in {i["id"] for i in active["items"]} and active["total"] == 3
    only = client.get("/api/v1/assets", query_string={"retired": "true"}, headers=read).json
    assert [i["id"] for i in only["items"]] == [retired_id] and only["items"][0]["retired_at"]
    both = client.get("/api/v1/assets", query_string={"q": "chk-app-w0", "retired": "all"}, headers=read).json
    assert both["total"] == 4


BAD_PARAMETERS = [
    ({"provider": "aws-ish"}, "provider"), ({"os_family": "windoze"}, "os_family"),
    ({"criticality": "extreme"}, "criticality"), ({"kind": "vmm"}, "kind"), ({"vendor": "Nobody"}, "vendor"),
    ({"vendor": "999999"}, "vendor"), ({"retired": "maybe"}, "retired"), ({"sort": "password"}, "sort"),
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"after": "not-a-cursor"}, "after"), ({"provder": "aws"}, "provder"),
]


def test_bad_parameters_are_400_naming_the_field(api):
    client, read, _write, _engine = api
    for params, field in BAD_PARAMETERS:
        response = client.get("/api/v1/assets", query_string=params, headers=read)
        assert response.status_code == 400, params
        assert (response.json["field"], response.json["error"]) == (field, "bad_request"), params


def test_asset_detail(api):
    client, read, _write, engine = api
    with read_session(engine) as db:
        ids = dict(db.execute(sa.select(Asset.natural_key, Asset.id)).all())
        host_id = db.scalar(sa.select(Asset.id).where(Asset.name == "chk-app-w01"))
    checkin = client.get(f"/api/v1/assets/{ids['service:check-in']}", headers=read).json
    assert checkin["kind"] == "service" and checkin["criticality"] == "critical"
    edges = {(d["asset"]["kind"], d["kind"], d["strength"]) for d in checkin["dependencies"]}
    assert ("load_balancer", "calls", "hard") in edges and ("saas_tenant", "calls", "soft") in edges
    assert checkin["dependencies_total"] == len(checkin["dependencies"]) == 6
    assert [(p["name"], p["status"], p["via"]) for p in checkin["plans"]] == [
        ("Check-in: manual counter check-in", "current", "this asset")]
    host = client.get(f"/api/v1/assets/{host_id}", headers=read).json
    assert host["os"]["family"] == "windows" and host["update_ring"] == "canary"
    assert {(i["vendor"]["name"], i["product"]["name"], i["version"]) for i in host["installations"]} >= {
        ("CrowdStrike", "Falcon Sensor", "7.11.18110.0")}
    assert [d["kind"] for d in host["dependents"]] == ["member-of"]
    assert host["hosting_vendor"]["name"] == "Amazon Web Services"
    vias = {p["name"]: p["via"] for p in host["plans"]}
    assert vias["Falcon sensor boot-loop recovery"] == "product"
    assert vias["AWS regional degradation"] == "vendor"
    crew = client.get(f"/api/v1/assets/{ids['service:crew-scheduling']}", headers=read).json
    assert crew["plans"] == []
    missing = client.get("/api/v1/assets/999999", headers=read)
    assert missing.status_code == 404 and missing.json["error"] == "not_found"


def test_vendors(api):
    client, read, _write, _engine = api
    listing = client.get("/api/v1/vendors", headers=read).json
    by_name = {v["name"]: v for v in listing["items"]}
    assert listing["count"] == len(by_name) >= 15
    assert by_name["Microsoft"]["cloud_provider"] == "azure" and by_name["CrowdStrike"]["products"] == 1
    assert by_name["CrowdStrike"]["assets"] > 100
    detail = client.get(f"/api/v1/vendors/{by_name['CrowdStrike']['id']}", headers=read).json
    falcon = detail["products"][0]
    assert falcon["name"] == "Falcon Sensor" and falcon["vendor_pushes_updates"] is True
    assert {v["version"] for v in falcon["versions"]} >= {"7.10.17706.0", "7.11.18110.0", "7.16.18605.0"}
    assert sum(v["count"] for v in falcon["versions"]) == falcon["installations"]
    assert {a["alias"] for a in detail["aliases"]} >= {"crowdstrike, inc.", "falcon-sensor"}
    assert [a["assessed_on"] for a in detail["assessments"]] == ["2026-02-10", "2024-02-01"]
    assert [p["name"] for p in detail["plans"]] == ["Falcon sensor boot-loop recovery"]
    assert client.get("/api/v1/vendors/999999", headers=read).status_code == 404


def test_estate_import_and_export(api_rw):
    client, read, write, engine = api_rw
    with write_session(engine) as db:
        load_demo(db, actor="tester")
    first = client.post("/api/v1/estate", json=small_document(), headers=write)
    assert first.status_code == 200, first.json
    assert first.json["counts"]["assets"]["created"] == 4
    # CrowdStrike and Microsoft exist in the demo already: matched, not duplicated.
    assert first.json["counts"]["vendors"]["created"] == 0
    again = client.post("/api/v1/estate", json=small_document(), headers=write).json
    assert again["totals"]["created"] == again["totals"]["updated"] == 0
    exported = client.get("/api/v1/estate", headers=read)
    assert exported.status_code == 200
    with read_session(engine) as db:
        assert exported.json == export_estate(db)
    assert "service:shop" in {s["key"] for s in exported.json["services"]}


def test_estate_dry_run_changes_nothing(api_rw):
    client, _read, write, engine = api_rw
    before = table_snapshot(engine)
    response = client.post("/api/v1/estate?dry_run=true", json=small_document(), headers=write)
    assert response.status_code == 200 and response.json["dry_run"] is True
    assert response.json["counts"]["assets"]["created"] == 4
    assert table_snapshot(engine) == before


INVALID_ESTATES = [
    (lambda d: d["assets"][0].update(criticality="extreme"), "assets[0].criticality", "not one of"),
    (lambda d: d["plans"][0].update(runbook_url="javascript:alert(1)"), "plans[0].runbook_url", "http"),
    (lambda d: d["assets"][0]["software"][0].update(vendor="Nobody"), "assets[0].software[0].vendor",
     "unknown vendor"),
    (lambda d: d.pop("version"), "version", "required"),
    (lambda d: d["services"].append({"key": "host:web-1", "name": "dup"}), "services[1].key", "duplicate key"),
]


def test_invalid_estate_is_422_with_the_field_and_changes_nothing(api_rw):
    client, _read, write, engine = api_rw
    assert client.post("/api/v1/estate", json=small_document(), headers=write).status_code == 200
    before = table_snapshot(engine)
    for mutate, field, words in INVALID_ESTATES:
        doc = small_document()
        doc["assets"][0]["criticality"] = "low"  # a valid change riding along must not be applied either
        mutate(doc)
        response = client.post("/api/v1/estate", json=doc, headers=write)
        assert response.status_code == 422, field
        body = response.json
        assert body["error"] == "invalid" and body["field"] == field and words in body["message"]
        assert body["errors"][0]["field"] == field
        assert table_snapshot(engine) == before


def test_estate_body_must_be_json(api_rw):
    client, _read, write, _engine = api_rw
    response = client.post("/api/v1/estate", data="version: 1", headers={**write, "Content-Type": "text/yaml"})
    assert response.status_code == 415
    broken = client.post("/api/v1/estate", data="{", headers={**write, "Content-Type": "application/json"})
    assert broken.status_code == 400
    listed = client.post("/api/v1/estate", json=[1, 2], headers=write)
    assert listed.status_code == 422 and "expected a mapping" in listed.json["message"]
    # JSON escapes that no database column accepts are refused up front, not as a 500.
    for raw, field in [('{"version": 1, "assets": [{"key": "a", "name": "a", "kind": "vm", "tags": {"w": NaN}}]}',
                        "assets[0].tags.w"),
                       ('{"version": 1, "assets": [{"key": "a", "name": "a\\u0000b", "kind": "vm"}]}',
                        "assets[0].name"),
                       ('{"version": 1, "services": [{"key": "s", "name": "\\ud800"}]}', "services[0].name")]:
        response = client.post("/api/v1/estate", data=raw, headers={**write, "Content-Type": "application/json"})
        assert response.status_code == 422, raw
        assert response.json["field"] == field


def test_openapi_documents_the_routes(client, read_token):
    read = bearer(read_token)
    spec = client.get("/api/v1/openapi.json", headers=read).json
    for path in ("/api/v1/assets", "/api/v1/assets/{asset_id}", "/api/v1/vendors", "/api/v1/vendors/{vendor_id}",
                 "/api/v1/estate"):
        assert path in spec["paths"]
    assert set(spec["paths"]["/api/v1/estate"]) == {"get", "post"}
    params = {p["name"] for p in spec["paths"]["/api/v1/assets"]["get"]["parameters"]}
    assert params == {"provider", "account", "region", "os_family", "kind", "environment", "criticality",
                      "vendor", "retired", "q", "sort", "limit", "after"}
    assert spec["components"]["schemas"]["EstateDocument"]["properties"]["version"] == {"const": 1}
