"""The JSON API: /api/v1/impact, incidents and scenarios."""
from __future__ import annotations

import re

import sqlalchemy as sa

from inventory.api.openapi import openapi_path
from tests.conftest import bearer
from tests.impact.conftest import Estate


def api_estate(e: Estate) -> Estate:
    e.vendor("CrowdStrike")
    e.asset("win-1", criticality="high", provider="azure", region="centralus", account="sub-1")
    e.asset("win-2", provider="azure", region="eastus", account="sub-1")
    e.asset("lin-1", os="linux")
    e.asset("app", kind="application", os=None)
    e.service("service:check-in", name="Check-in", criticality="critical")
    e.dep("app", "win-1")
    e.dep("service:check-in", "app")
    e.install("win-1", "CrowdStrike", "Falcon Sensor", "7.11.18110.0")
    e.install("win-2", "CrowdStrike", "Falcon Sensor", "7.10.17706.0")
    e.install("lin-1", "CrowdStrike", "Falcon Sensor", "7.11.18110.0")
    e.plan("Paper check-in", asset="service:check-in")
    return e.commit()


def test_get_impact_with_query_parameters(client, read_token, estate: Estate) -> None:
    api_estate(estate)
    r = client.get("/api/v1/impact?vendor=CrowdStrike&product=Falcon%20Sensor&version=%3E%3D7.11&os=windows",
                   headers=bearer(read_token))
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert set(body) >= {"scope", "as_of", "seeds", "hits", "totals", "confidence"}
    assert [h["natural_key"] for h in body["hits"]] == ["service:check-in", "win-1", "app"]
    hit = body["hits"][0]
    assert set(hit) >= {"asset_id", "natural_key", "name", "kind", "provider", "account", "region", "os_family",
                        "criticality", "status", "hops", "seed", "path", "plans", "gap", "services"}
    assert hit["plans"][0]["name"] == "Paper check-in"
    assert [p["natural_key"] for p in hit["path"]] == ["service:check-in", "app", "win-1"]
    assert body["totals"]["by_status"] == {"down": 3, "degraded": 0}
    assert body["scope"]["version"] == ">=7.11"
    r = client.get("/api/v1/impact?vendor=CrowdStrike&os=windows&region=eastus&limit=1",
                   headers=bearer(read_token))
    assert [h["natural_key"] for h in r.get_json()["hits"]] == ["win-2"]


def test_bad_scope_is_a_400_naming_the_field(client, read_token, estate: Estate) -> None:
    api_estate(estate)
    r = client.get("/api/v1/impact?vendor=Crowdstrik", headers=bearer(read_token))
    assert r.status_code == 400
    body = r.get_json()
    assert body["field"] == "vendor" and "CrowdStrike" in body["suggestions"] and body["error"] == "bad_request"
    for query, field in (("vendor=CrowdStrike&version=%3D%3E7", "version"), ("vendor=CrowdStrike&os=dos", "os"),
                         ("vendor=CrowdStrike&colour=red", "colour"), ("vendor=CrowdStrike&limit=0", "limit"),
                         ("vendor=CrowdStrike&as_of=soon", "as_of"), ("", "vendor")):
        r = client.get(f"/api/v1/impact?{query}", headers=bearer(read_token))
        assert (r.status_code, r.get_json()["field"]) == (400, field), query
    assert client.get("/api/v1/impact?vendor=CrowdStrike").status_code == 401


def test_post_impact_reads_only_with_what_if(client, read_token, estate: Estate) -> None:
    api_estate(estate)
    with estate.engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version FROM inventory_version")).scalar()
    r = client.post("/api/v1/impact", headers=bearer(read_token), json={
        "scope": {"vendor": "CrowdStrike", "os": ["windows"]},
        "what_if": {"add_replicas": [{"asset": "win-1"}]}})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert {h["natural_key"]: h["status"] for h in body["hits"]}["app"] == "degraded"
    assert body["what_if"]["changes"]["down_to_degraded"]["assets"] == ["app", "service:check-in"]
    with estate.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM inventory_version")).scalar() == version
    # The scope's fields may also be given at the top level.
    r = client.post("/api/v1/impact", headers=bearer(read_token), json={"vendor": "CrowdStrike", "os": "linux"})
    assert [h["natural_key"] for h in r.get_json()["hits"]] == ["lin-1"]
    r = client.post("/api/v1/impact", headers=bearer(read_token), json={"scope": {"vendor": "Nope"}})
    assert r.status_code == 400 and r.get_json()["field"] == "vendor"
    r = client.post("/api/v1/impact", headers=bearer(read_token), json={
        "scope": {"vendor": "CrowdStrike"}, "what_if": {"remove_dependencies": [["app", "ghost"]]}})
    assert r.status_code == 400 and r.get_json()["field"] == "what_if.remove_dependencies[0]"
    assert client.post("/api/v1/impact", headers=bearer(read_token), data="x").status_code == 415


def test_incident_lifecycle(client, read_token, write_token, estate: Estate) -> None:
    api_estate(estate)
    scope = {"vendor": "CrowdStrike", "products": ["Falcon Sensor"], "version": ">=7.11", "os": ["windows"]}
    assert client.post("/api/v1/incidents", headers=bearer(read_token),
                       json={"title": "Falcon", "scope": scope}).status_code == 403
    r = client.post("/api/v1/incidents", headers=bearer(write_token), json={"title": "", "scope": scope})
    assert r.status_code == 400 and r.get_json()["field"] == "title"
    r = client.post("/api/v1/incidents", headers=bearer(write_token), json={"title": "Falcon", "scope": {}})
    assert r.status_code == 400 and r.get_json()["field"] == "scope.vendor"
    r = client.post("/api/v1/incidents", headers=bearer(write_token),
                    json={"title": "Falcon 7.11 boot loop", "scope": scope})
    assert r.status_code == 201, r.get_json()
    incident = r.get_json()
    assert incident["progress"]["total"] == 3 and incident["progress"]["recovered"] == 0
    assert incident["summary"]["totals"]["by_status"]["down"] == 3
    iid = incident["id"]

    # Inventory changes after the declaration do not alter the snapshot.
    with estate.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM dependencies"))
        conn.execute(sa.text("UPDATE assets SET name = 'renamed' WHERE natural_key = 'app'"))
    detail = client.get(f"/api/v1/incidents/{iid}", headers=bearer(read_token)).get_json()
    assert [(a["natural_key"], a["name"], a["status"]) for a in detail["assets"]] == [
        ("service:check-in", "Check-in", "down"), ("win-1", "win-1", "down"), ("app", "app", "down")]
    assert detail["assets"][0]["plans"][0]["name"] == "Paper check-in"

    r = client.post(f"/api/v1/incidents/{iid}/recovered", headers=bearer(write_token),
                    json={"asset_ids": ["win-1", detail["assets"][2]["asset_id"]], "note": "rebooted"})
    assert r.status_code == 200
    assert r.get_json()["marked"] == 2 and r.get_json()["progress"]["recovered"] == 2
    r = client.post(f"/api/v1/incidents/{iid}/recovered", headers=bearer(write_token),
                    json={"asset_ids": ["lin-1"]})
    assert r.status_code == 400 and r.get_json()["field"] == "asset_ids"
    listed = client.get("/api/v1/incidents?status=open", headers=bearer(read_token)).get_json()
    assert [i["id"] for i in listed["items"]] == [iid]
    assert listed["items"][0]["progress"]["percent"] == 66.7
    r = client.post(f"/api/v1/incidents/{iid}/resolve", headers=bearer(write_token), json={"note": "done"})
    assert r.status_code == 200 and r.get_json()["status"] == "resolved"
    assert client.post(f"/api/v1/incidents/{iid}/resolve", headers=bearer(write_token)).status_code == 409
    assert client.post(f"/api/v1/incidents/{iid}/recovered", headers=bearer(write_token),
                       json={"asset_ids": ["app"]}).status_code == 409
    assert client.get("/api/v1/incidents/999", headers=bearer(read_token)).status_code == 404
    with estate.engine.connect() as conn:
        actions = list(conn.execute(sa.text(
            "SELECT action FROM audit_events WHERE entity_type = 'incident' ORDER BY id")).scalars())
    assert actions == ["incident.declare", "incident.recover", "incident.resolve"]


def test_scenarios(client, read_token, write_token, estate: Estate) -> None:
    api_estate(estate)
    r = client.post("/api/v1/scenarios", headers=bearer(write_token),
                    json={"name": "Falcon on Windows", "scope": {"vendor": "crowdstrike", "os": "windows"}})
    assert r.status_code == 201, r.get_json()
    scenario = r.get_json()
    assert scenario["scope"]["vendor"] == "CrowdStrike" and scenario["scope"]["os"] == ["windows"]
    bad = client.post("/api/v1/scenarios", headers=bearer(write_token), json={"name": "x", "scope": {"vendor": "?"}})
    assert bad.status_code == 400 and bad.get_json()["field"] == "vendor"
    items = client.get("/api/v1/scenarios", headers=bearer(read_token)).get_json()["items"]
    assert [s["name"] for s in items] == ["Falcon on Windows"]
    run = client.get(f"/api/v1/scenarios/{scenario['id']}/impact", headers=bearer(read_token)).get_json()
    assert run["totals"]["seeds"] == 2
    r = client.post("/api/v1/incidents", headers=bearer(write_token),
                    json={"title": "From a drill", "scenario": "Falcon on Windows"})
    assert r.status_code == 201 and r.get_json()["progress"]["total"] == 4
    assert client.delete(f"/api/v1/scenarios/{scenario['id']}", headers=bearer(write_token)).status_code == 204
    assert client.get(f"/api/v1/scenarios/{scenario['id']}", headers=bearer(read_token)).status_code == 404


def test_every_route_is_documented(app, client, read_token) -> None:
    spec = client.get("/api/v1/openapi.json", headers=bearer(read_token)).get_json()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api_impact."):
            continue
        path = openapi_path(rule.rule)
        assert path in spec["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], (path, method)
    for name in ("ImpactResult", "Hit", "Scope", "WhatIf", "Incident", "Scenario"):
        assert name in spec["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', str(spec).replace("'", '"')))
    assert refs <= set(spec["components"]["schemas"])


def test_limit_pages_hits_and_seeds(client, read_token, estate: Estate) -> None:
    api_estate(estate)
    body = client.get("/api/v1/impact?vendor=CrowdStrike&limit=1&offset=1", headers=bearer(read_token)).get_json()
    assert [h["natural_key"] for h in body["hits"]] == ["win-1"]
    assert len(body["seeds"]) == 1
    assert body["page"] == {"offset": 1, "limit": 1, "returned": 1, "total": 5, "seeds_returned": 1,
                            "seeds_total": 3, "version_unknown_returned": 0, "version_unknown_total": 0}
