"""Update testing from a pipeline's point of view: the API, the CLI and the deployment gate."""
from __future__ import annotations

import json

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.models import AuditEvent, UpdateTest, VendorUpdate
from tests.conftest import bearer
from tests.risk.conftest import build_estate


def _seed(url: str, *, falcon_fully_tested: bool = True) -> dict:  # type: ignore[type-arg]
    """The small estate, made green for the gate: every critical installation tested."""
    engine = make_engine(url)
    with so.Session(engine, expire_on_commit=False) as db:
        data = build_estate(db)
        windows = VendorUpdate(product_id=data["products"]["windows"].id, version="2022")
        db.add(windows)
        db.flush()
        db.add(UpdateTest(update_id=windows.id, ring="staging", status="passed"))
        db.commit()
        ids = {"7.11.1": data["updates"]["7.11.1"].id, "windows": windows.id}
    engine.dispose()
    return ids


def _counts(url: str) -> tuple[int, int, int]:
    engine = make_engine(url)
    with so.Session(engine) as db:
        out = (db.scalar(sa.select(sa.func.count()).select_from(UpdateTest)),
               db.scalar(sa.select(sa.func.count()).select_from(VendorUpdate)),
               db.scalar(sa.select(sa.func.count()).select_from(AuditEvent)))
    engine.dispose()
    return out


def test_pipeline_posts_a_failed_test_and_the_gate_turns_red(app, client, write_token, sqlite_url, planb) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(sqlite_url)
    green = planb(sqlite_url, "check", "updates")
    assert green.exit_code == 0, green.output
    assert "OK: no critical asset runs an untested version" in green.output

    response = client.post(f"/api/v1/updates/{ids['7.11.1']}/tests", headers=bearer(write_token),
                           json={"ring": "staging", "status": "failed", "tested_by": "ci-bot",
                                 "tested_at": "2024-07-19T05:00:00Z",
                                 "evidence_url": "https://ci.example/job/42", "notes": "BSOD on boot"})
    assert response.status_code == 200, response.json  # replaced the pending staging row
    assert response.json["test"]["status"] == "failed" and response.json["update"]["tested"] is False

    red = planb(sqlite_url, "check", "updates")
    assert red.exit_code == 1
    assert "FAIL: 2 critical asset(s) run untested versions" in red.output
    assert "web-1" in red.output and "web-2" in red.output and "failed in staging" in red.output
    as_json = planb(sqlite_url, "check", "updates", "--format", "json")
    assert as_json.exit_code == 1 and json.loads(as_json.output)["ok"] is False

    # the audit trail has the pipeline's change, with the token as actor
    engine = make_engine(sqlite_url)
    with so.Session(engine) as db:
        event = db.scalars(sa.select(AuditEvent).where(AuditEvent.entity_type == "update_test")).one()
        assert event.actor.startswith("token:test-write") and event.after["status"] == "failed"
        assert event.before["status"] == "pending"
    engine.dispose()

    # a later pass in staging (and canary) turns it green again
    fixed = planb(sqlite_url, "updates", "test", "CrowdStrike/Falcon Sensor@7.11.1", "--ring", "staging",
                  "--status", "passed", "--evidence", "https://ci.example/job/43")
    assert fixed.exit_code == 0, fixed.output
    assert planb(sqlite_url, "check", "updates").exit_code == 0


def test_gate_levels_and_filters(app, sqlite_url, planb) -> None:  # type: ignore[no-untyped-def]
    _seed(sqlite_url)
    # high-or-higher includes okta-tenant (version unknown)
    result = planb(sqlite_url, "check", "updates", "--criticality", "high")
    assert result.exit_code == 1 and "okta-tenant" in result.output
    # ...unless only tracked products count
    assert planb(sqlite_url, "check", "updates", "--criticality", "high", "--tracked-only").exit_code == 0
    assert planb(sqlite_url, "check", "updates", "--product", "Nope/Nothing").exit_code == 2


def test_post_test_creates_row_and_validates(app, client, write_token, read_token, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(sqlite_url)
    url = f"/api/v1/updates/{ids['windows']}/tests"
    created = client.post(url, headers=bearer(write_token), json={"ring": "canary", "status": "passed"})
    assert created.status_code == 201 and created.json["test"]["tested_by"].startswith("token:")
    before = _counts(sqlite_url)
    # 400: the body does not match the OpenAPI document; 422: a rule it marks x-planb-rule.
    cases = [
        ({"ring": "prod", "status": "passed"}, 400, "ring"),
        ({"ring": "canary"}, 400, "status"),
        ({"ring": "canary", "status": "passed", "evidence_url": "javascript:alert(1)"}, 400, "evidence_url"),
        ({"ring": "canary", "status": "passed", "tested_at": "not a date"}, 400, "tested_at"),
        ({"ring": "canary", "status": "passed", "tested_at": "2999-01-01T00:00:00Z"}, 422, "tested_at"),
        ({"ring": "canary", "status": "passed", "colour": "red"}, 400, "colour"),
    ]
    for body, status, field in cases:
        response = client.post(url, headers=bearer(write_token), json=body)
        assert response.status_code == status, (body, response.json)
        assert response.json["field"] == field
        assert response.json["error"] == ("bad_request" if status == 400 else "invalid")
    not_json = client.post(url, headers=bearer(write_token), data="ring=canary")
    assert not_json.status_code == 415
    array = client.post(url, headers=bearer(write_token), json=["canary"])
    assert array.status_code == 400
    missing = client.post("/api/v1/updates/999999/tests", headers=bearer(write_token),
                          json={"ring": "canary", "status": "passed"})
    assert missing.status_code == 404 and missing.json["error"] == "not_found"
    forbidden = client.post(url, headers=bearer(read_token), json={"ring": "canary", "status": "failed"})
    assert forbidden.status_code == 403
    assert client.post(url, json={"ring": "canary", "status": "failed"}).status_code == 401
    assert _counts(sqlite_url) == before  # nothing changed, not even the audit trail


def test_create_and_list_updates_api(app, client, write_token, read_token, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    _seed(sqlite_url)
    body = {"product": "CrowdStrike/Falcon Sensor", "version": "7.12.0", "released_on": "2024-08-01",
            "kind": "major", "vendor_pushed": False}
    created = client.post("/api/v1/updates", headers=bearer(write_token), json=body)
    assert created.status_code == 201 and created.json["ref"] == "CrowdStrike/Falcon Sensor@7.12.0"
    dup = client.post("/api/v1/updates", headers=bearer(write_token), json=body)
    assert dup.status_code == 409 and dup.json["field"] == "version"
    bad = client.post("/api/v1/updates", headers=bearer(write_token), json={**body, "version": "8", "kind": "x"})
    assert bad.status_code == 400 and bad.json["field"] == "kind"
    bad = client.post("/api/v1/updates", headers=bearer(write_token), json={"version": "8"})
    assert bad.status_code == 400 and bad.json["field"] == "product"
    listed = client.get("/api/v1/updates?vendor=CrowdStrike", headers=bearer(read_token)).json
    assert {u["version"] for u in listed["updates"]} == {"7.11.1", "7.10.0", "C-00000291", "7.12.0"}
    by_version = {u["version"]: u for u in listed["updates"]}
    assert by_version["7.11.1"]["installed"] == {"assets": 3, "critical": 2}
    assert client.get("/api/v1/updates?vendor=Nobody", headers=bearer(read_token)).status_code == 404
    one = client.get(f"/api/v1/updates/{created.json['id']}", headers=bearer(read_token))
    assert one.status_code == 200 and one.json["tested"] is False


def test_exposure_api(app, client, read_token, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(sqlite_url)
    with so.Session(engine) as db:
        build_estate(db)
        db.commit()
    engine.dispose()
    response = client.get("/api/v1/exposure/untested?criticality=critical", headers=bearer(read_token))
    assert response.status_code == 200
    assert {r["natural_key"] for r in response.json["untested"]} == {"web-1", "web-2"}
    assert response.json["summary"]["critical_assets"] == 2
    assert [p["product"] for p in response.json["vendor_pushed"]] == ["Falcon Sensor"]
    limited = client.get("/api/v1/exposure/untested?limit=1", headers=bearer(read_token)).json
    assert limited["count"] == 1 and limited["truncated"] is True
    assert client.get("/api/v1/exposure/untested?criticality=huge", headers=bearer(read_token)).status_code == 400
    assert client.get("/api/v1/exposure/untested?limit=0", headers=bearer(read_token)).status_code == 400
    rings = client.get("/api/v1/updates/rings", headers=bearer(read_token)).json["rings"]
    assert {r["ring"]: r["assets"] for r in rings}["canary"] == 1


def test_updates_cli(app, sqlite_url, planb) -> None:  # type: ignore[no-untyped-def]
    _seed(sqlite_url)
    added = planb(sqlite_url, "updates", "add", "CrowdStrike/Falcon Sensor", "7.12.0", "--kind", "major",
                  "--released", "2024-08-01")
    assert added.exit_code == 0 and "Recorded update" in added.output
    again = planb(sqlite_url, "updates", "add", "CrowdStrike/Falcon Sensor", "7.12.0")
    assert again.exit_code == 1 and "already recorded" in again.output
    listed = json.loads(planb(sqlite_url, "updates", "list", "--format", "json").output)
    assert any(u["version"] == "7.12.0" and u["kind"] == "major" for u in listed)
    table = planb(sqlite_url, "updates", "list").output
    assert "canary:passed, staging:pending" in table
    bad = planb(sqlite_url, "updates", "test", "7.12.0", "--ring", "canary", "--status", "passed")
    assert bad.exit_code == 1 and "neither an update id" in bad.output
    bad = planb(sqlite_url, "updates", "test", "CrowdStrike/Falcon Sensor@7.12.0", "--ring", "canary",
                "--status", "passed", "--evidence", "file:///etc/passwd")
    assert bad.exit_code == 1 and "evidence_url" in bad.output
    exposure = planb(sqlite_url, "updates", "exposure", "--format", "csv").output
    assert exposure.splitlines()[0] == "natural_key,criticality,vendor,product,version,update_ring,reason"
    assert "okta-tenant,high,Okta,Workforce Identity,,,version unknown" in exposure
    assert "web-2" in planb(sqlite_url, "updates", "rings", "--ring", "canary").output
    pushed = planb(sqlite_url, "updates", "pushed").output
    assert "Falcon Sensor" in pushed and "C-00000291" in pushed
