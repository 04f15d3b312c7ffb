"""Bad input to the JSON API: a 4xx whose JSON body names the field, the database unchanged, never a 500.

One test per kind of mistake, each over every place the API takes it: a value of the
wrong type, a body nested too deeply, an id no column can hold, a flag that is
neither true nor false, an unknown field, text no database can store, a number out
of range, a parameter given twice, a body over the size limit.
"""
from __future__ import annotations

import copy
import io
import re
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing.converters import NumberConverter

from inventory.api.openapi import build_spec
from inventory.app_db import get_session
from inventory.estate.importer import import_estate
from tests.conftest import bearer, create_api_token

ESTATE: dict[str, Any] = {
    "version": 1,
    "vendors": [{"name": "CrowdStrike", "products": [{"name": "Falcon Sensor", "kind": "agent"}]}],
    "assets": [
        *({"key": f"vm:{i}", "name": f"vm {i}", "kind": "vm", "os": {"family": "windows"},
           "software": [{"vendor": "CrowdStrike", "product": "Falcon Sensor", "version": "7.11"}]}
          for i in range(2)),
        {"key": "tg:pool", "name": "pool", "kind": "target_group", "min_up": 1, "members": ["vm:0", "vm:1"]},
    ],
    "services": [{"key": "service:checkin", "name": "Check-in", "criticality": "critical",
                  "depends_on": ["tg:pool"]}],
    "plans": [{"name": "Paper check-in", "covers": {"assets": ["service:checkin"]}}],
    "updates": [{"vendor": "CrowdStrike", "product": "Falcon Sensor", "version": "7.11"}],
}
SCOPE = {"vendor": "CrowdStrike"}
HUGE = 10**30
# Everything a request could change; compared before and after each refused one.
TABLES = ("vendors", "assets", "contingency_plans", "plan_events", "vendor_updates", "update_tests",
          "vendor_assessments", "scenarios", "incidents", "audit_events")


class Api:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()
        self.read = bearer(create_api_token(app, "read"))
        self.write = bearer(create_api_token(app, "write"))

    def call(self, method: str, path: str, **kwargs: Any):  # type: ignore[no-untyped-def]
        return self.client.open(path, method=method, headers={**self.write, **kwargs.pop("headers", {})},
                                **kwargs)

    def state(self) -> dict[str, Any]:
        with self.app.app_context():
            db = get_session()
            counts = {t: db.scalar(sa.text(f"SELECT count(*) FROM {t}")) for t in TABLES}
            counts["open_incidents"] = db.scalar(sa.text("SELECT count(*) FROM incidents WHERE status = 'open'"))
            counts["recovered"] = db.scalar(sa.text(
                "SELECT count(*) FROM incident_assets WHERE recovered_at IS NOT NULL"))
            return counts

    def incident(self) -> int:
        response = self.call("POST", "/api/v1/incidents", json={"title": "Falcon", "scope": SCOPE})
        assert response.status_code == 201, response.get_json()
        return int(response.get_json()["id"])


@pytest.fixture
def api(app: Flask) -> Iterator[Api]:
    with app.app_context():
        db = get_session()
        import_estate(db, copy.deepcopy(ESTATE), source_name="test", actor="test")
        db.commit()
    yield Api(app)


def assert_refused(response, field: str | None, statuses: tuple[int, ...] = (400, 422)) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body = response.get_json()
    assert response.status_code in statuses, (response.status_code, body)
    assert body["error"] and body["message"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


# ---------------------------------------------------------------- as_of

@pytest.mark.parametrize("as_of", [5, True, 0, "", False, [], {}])
def test_post_impact_as_of_must_be_a_date_string(api: Api, as_of: Any) -> None:
    response = api.call("POST", "/api/v1/impact", json={"scope": SCOPE, "as_of": as_of}, headers=api.read)
    assert_refused(response, "as_of", (400,))


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-14:00"])
def test_as_of_beyond_utc_years_is_a_400_naming_it(api: Api, as_of: str) -> None:
    query = as_of.replace("+", "%2B")
    for response in (api.call("GET", f"/api/v1/impact?vendor=CrowdStrike&as_of={query}"),
                     api.call("POST", "/api/v1/impact", json={"scope": SCOPE, "as_of": as_of}),
                     api.call("GET", f"/api/v1/scenarios/1/impact?as_of={query}")):
        assert_refused(response, "as_of", (400,))


def test_null_as_of_and_a_saved_scenario_run_as_of_a_moment_work(api: Api) -> None:
    assert api.call("POST", "/api/v1/impact", json={"scope": SCOPE, "as_of": None}).status_code == 200
    scenario = api.call("POST", "/api/v1/scenarios", json={"name": "falcon", "scope": SCOPE}).get_json()
    # as_of is what this route documents (it used to document 'tags' instead, and refuse as_of).
    response = api.call("GET", f"/api/v1/scenarios/{scenario['id']}/impact?as_of=2030-01-01T00:00:00Z")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["as_of"].startswith("2030-01-01")


# ---------------------------------------------------------------- bodies

def _body_operations() -> list[tuple[str, str]]:
    """Every (METHOD, path) of the description that takes a JSON body, with ids filled in."""
    out = []
    for path, item in build_spec()["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "requestBody" in operation:
                out.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    assert len(out) >= 12, out  # the walk found the API's body operations
    return sorted(out)


BODY_OPERATIONS = _body_operations()


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"a": ' * 70 + "1" + "}" * 70],
                         ids=["100000-deep", "70-deep"])
def test_deeply_nested_bodies_are_a_400(api: Api, method: str, path: str, body: str) -> None:
    before = api.state()
    response = api.call(method, path, data=body, content_type="application/json")
    refused = assert_refused(response, None, (400,))
    assert "nested too deeply" in refused["message"]
    assert api.state() == before


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
def test_a_key_given_twice_in_a_body_is_a_400_naming_it(api: Api, method: str, path: str) -> None:
    before = api.state()
    response = api.call(method, path, data='{"name": "a", "name": "b"}', content_type="application/json")
    assert "given twice" in assert_refused(response, "name", (400,))["message"]
    assert api.state() == before


def test_a_streamed_body_over_the_limit_is_a_413(api: Api) -> None:
    limit = api.app.config["MAX_CONTENT_LENGTH"]
    body = b'{"scope": {"vendor": "' + b"x" * limit + b'"}}'
    response = api.call("POST", "/api/v1/impact", input_stream=io.BytesIO(body),
                        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                        environ_overrides={"wsgi.input_terminated": True})  # as gunicorn sets it
    assert response.status_code == 413 and response.get_json()["error"] == "payload_too_large"
    # A streamed body within the limit is read whole.
    small = b'{"scope": {"vendor": "CrowdStrike"}}'
    response = api.call("POST", "/api/v1/impact", input_stream=io.BytesIO(small),
                        headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"},
                        environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 200, response.get_json()


# ---------------------------------------------------------------- ids in URLs

def _id_routes(app: Flask) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or not rule.arguments:
            continue
        if not all(isinstance(rule._converters[name], NumberConverter) for name in rule.arguments):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule))
    return out


@pytest.mark.parametrize("value", [2**31, 2**63 - 1, 10**25])
def test_out_of_range_ids_are_404_for_every_method_of_every_route(api: Api, value: int) -> None:
    routes = _id_routes(api.app)
    assert len(routes) >= 12 and {"GET", "PATCH", "POST", "DELETE"} <= {method for method, _ in routes}
    wrong = {}
    for method, rule in routes:
        path = rule
        for part in rule.split("<")[1:]:
            path = path.replace("<" + part.split(">")[0] + ">", str(value))
        response = api.call(method, path, json={})
        if (response.status_code, response.get_json()["error"]) != (404, "not_found"):
            wrong[f"{method} {path}"] = (response.status_code, response.get_json())
    assert wrong == {}


def test_405_names_its_error_and_the_allowed_methods(api: Api) -> None:
    response = api.call("PUT", "/api/v1/impact")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


# ---------------------------------------------------------------- flags

@pytest.mark.parametrize("value", ["maybe", "on", "", "tru"])
def test_an_unrecognised_dry_run_is_a_400_and_imports_nothing(api: Api, value: str) -> None:
    document = {"version": 1, "vendors": [{"name": "Acme"}]}
    before = api.state()
    response = api.call("POST", f"/api/v1/estate?dry_run={value}", json=document)
    assert_refused(response, "dry_run", (400,))
    assert api.state() == before


def test_dry_run_takes_true_or_false_and_nothing_else(api: Api) -> None:
    document = {"version": 1, "vendors": [{"name": "Acme"}]}
    before = api.state()
    assert api.call("POST", "/api/v1/estate?dry_run=on", json=document).status_code == 400
    for value in ("true", "1", "TRUE", "yes"):
        response = api.call("POST", f"/api/v1/estate?dry_run={value}", json=document)
        assert response.status_code == 200 and response.get_json()["dry_run"] is True
    assert api.state() == before
    response = api.call("POST", "/api/v1/estate?dry_run=false", json=document)
    assert response.status_code == 200 and response.get_json()["dry_run"] is False
    assert api.state()["vendors"] == before["vendors"] + 1


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/updates", {"product": "CrowdStrike/Falcon Sensor", "version": "7.12", "vendor_pushed": "yes"},
     "vendor_pushed"),
    ("/api/v1/assessments", {"vendor": "CrowdStrike", "staged_rollouts": "on"}, "staged_rollouts"),
])
def test_json_booleans_must_be_json_booleans(api: Api, path: str, body: dict[str, Any], field: str) -> None:
    before = api.state()
    assert_refused(api.call("POST", path, json=body), field)
    assert api.state() == before


# ---------------------------------------------------------------- unknown fields

def _what_if(what_if: dict[str, Any]) -> dict[str, Any]:
    return {"scope": SCOPE, "what_if": what_if}


@pytest.mark.parametrize(("body", "field"), [
    (_what_if({"add_plans": [{"name": "x", "asset": "service:checkin", "extra": 1}]}), "what_if.add_plans[0].extra"),
    (_what_if({"add_replicas": [{"asset": "service:checkin", "count": 2, "x": 1}]}), "what_if.add_replicas[0].x"),
    (_what_if({"remove_dependencies": [{"dependent": "service:checkin", "dependency": "tg:pool", "y": 1}]}),
     "what_if.remove_dependencies[0].y"),
    ({"scope": SCOPE, "vendor": "CrowdStrike"}, "vendor"),
])
def test_unknown_fields_of_an_impact_request_are_refused(api: Api, body: dict[str, Any], field: str) -> None:
    assert_refused(api.call("POST", "/api/v1/impact", json=body, headers=api.read), field, (400,))


def test_cli_what_if_files_refuse_unknown_fields_too(app: Flask) -> None:
    from inventory.impact import ScopeError
    from inventory.impact.whatif import parse_what_if

    class FakeGraph:
        def index_of_key(self, key: str) -> int:
            return 0

    with pytest.raises(ScopeError) as info:
        parse_what_if(FakeGraph(), {"add_replicas": [{"asset": "a", "count": 2, "x": 1}]})  # type: ignore[arg-type]
    assert info.value.field == "what_if.add_replicas[0].x"


def test_resolve_refuses_unknown_fields_and_stays_open(api: Api) -> None:
    incident = api.incident()
    before = api.state()
    response = api.call("POST", f"/api/v1/incidents/{incident}/resolve", json={"bogus": 5})
    assert_refused(response, "bogus", (400,))
    assert api.state() == before and before["open_incidents"] == 1
    # Without a body, or with a note, it resolves.
    assert api.call("POST", f"/api/v1/incidents/{incident}/resolve").status_code == 200
    assert api.state()["open_incidents"] == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"vendor": "CrowdStrike", "findings": [{"title": "x", "sev": "high"}]}, "findings[0].sev"),
    ({"vendor": "CrowdStrike", "certifications": [{"name": "SOC 2", "expiry": "2030-01-01"}]},
     "certifications[0].expiry"),
])
def test_unknown_fields_of_assessment_entries_are_refused(api: Api, body: dict[str, Any], field: str) -> None:
    before = api.state()
    assert_refused(api.call("POST", "/api/v1/assessments", json=body), field)
    assert api.state() == before


# ---------------------------------------------------------------- unstorable text

def _text_cases() -> list[tuple[str, str, Any, str]]:
    """(method, path, body with {bad} where the text goes, field)."""
    return [
        ("POST", "/api/v1/scenarios", {"name": "a{bad}b", "scope": SCOPE}, "name"),
        ("POST", "/api/v1/scenarios", {"name": "s", "scope": SCOPE, "description": "d{bad}"}, "description"),
        ("POST", "/api/v1/scenarios", {"name": "s", "scope": {**SCOPE, "tags": {"team": "o{bad}"}}},
         "scope.tags.team"),
        ("POST", "/api/v1/incidents", {"title": "t{bad}", "scope": SCOPE}, "title"),
        ("POST", "/api/v1/incidents/{incident}/recovered", {"asset_ids": ["vm:0"], "note": "n{bad}"}, "note"),
        ("POST", "/api/v1/incidents/{incident}/recovered", {"asset_ids": ["vm{bad}"]}, "asset_ids[0]"),
        ("POST", "/api/v1/incidents/{incident}/resolve", {"note": "n{bad}"}, "note"),
        ("POST", "/api/v1/impact", _what_if({"add_plans": [{"name": "p{bad}", "asset": "vm:0"}]}),
         "what_if.add_plans[0].name"),
    ]


def _fill(value: Any, bad: str) -> Any:
    if isinstance(value, str):
        return value.replace("{bad}", bad)
    if isinstance(value, dict):
        return {k: _fill(v, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, bad) for v in value]
    return value


@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "surrogate"])
@pytest.mark.parametrize(("method", "path", "body", "field"), _text_cases())
def test_unstorable_text_is_refused_naming_the_field(api: Api, method: str, path: str, body: Any, field: str,
                                                     bad: str) -> None:
    path = path.replace("{incident}", str(api.incident()))
    before = api.state()
    response = api.call(method, path, json=_fill(body, bad))
    assert_refused(response, field)
    assert api.state() == before


@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "surrogate"])
def test_the_incident_services_refuse_unstorable_text(api: Api, bad: str) -> None:
    """The CLI and the dashboard call the same services: they refuse it too."""
    from inventory.services import incidents as svc

    incident = api.incident()
    with api.app.app_context():
        db = get_session()
        cases = [("name", lambda: svc.save_scenario(db, f"a{bad}", SCOPE, "test")),
                 ("description", lambda: svc.save_scenario(db, "a", SCOPE, "test", f"d{bad}")),
                 ("title", lambda: svc.declare_incident(db, SCOPE, f"t{bad}", "test")),
                 ("note", lambda: svc.mark_recovered(db, incident, ["vm:0"], "test", f"n{bad}")),
                 ("note", lambda: svc.resolve_incident(db, incident, "test", f"n{bad}"))]
        for field, call in cases:
            with pytest.raises(svc.IncidentError) as info:
                call()
            assert info.value.field == field
            db.rollback()


# ---------------------------------------------------------------- numbers and ids in bodies and queries

@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/api/v1/impact", _what_if({"set_min_up": {"tg:pool": HUGE}}), "what_if.set_min_up.tg:pool"),
    ("POST", "/api/v1/incidents", {"title": "t", "scenario": HUGE}, "scenario"),
    ("POST", "/api/v1/incidents", {"title": "t", "scenario": True}, "scenario"),
    ("POST", "/api/v1/incidents/{incident}/recovered", {"asset_ids": [HUGE]}, "asset_ids"),
    ("POST", "/api/v1/incidents/{incident}/recovered", {"asset_ids": [str(HUGE)]}, "asset_ids"),
    ("POST", "/api/v1/incidents/{incident}/recovered", {"asset_ids": ["\u0661"]}, "asset_ids"),
    ("POST", "/api/v1/plans/1/events", {"kind": "review", "at": "0001-01-01T00:00:00+14:00"}, "at"),
    ("POST", "/api/v1/plans/1/events", {"kind": "review", "at": "9999-12-31T23:00:00-14:00"}, "at"),
    ("POST", "/api/v1/updates/1/tests", {"ring": "canary", "status": "passed",
                                         "tested_at": "0001-01-01T00:00:00+14:00"}, "tested_at"),
    ("POST", "/api/v1/impact", {"scope": SCOPE, "limit": "5"}, "limit"),
    ("POST", "/api/v1/impact", {"scope": SCOPE, "offset": "0"}, "offset"),
    ("PATCH", "/api/v1/plans/1", {"rto_minutes": "30"}, "rto_minutes"),
    ("POST", "/api/v1/assessments", {"vendor": "CrowdStrike", "scores": {"security": "4"}}, "scores.security"),
])
def test_bad_numbers_in_bodies_are_refused_naming_the_field(api: Api, method: str, path: str, body: Any,
                                                            field: str) -> None:
    path = path.replace("{incident}", str(api.incident()))
    # Scenario 1 exists, so 'true' must not be read as its id.
    assert api.call("POST", "/api/v1/scenarios", json={"name": "falcon", "scope": SCOPE}).get_json()["id"] == 1
    before = api.state()
    assert_refused(api.call(method, path, json=body), field, (400, 404, 422))
    assert api.state() == before


@pytest.mark.parametrize(("path", "field"), [
    ("/api/v1/assets?vendor=" + "9" * 30, "vendor"),
    ("/api/v1/assets?limit=\u0661", "limit"),
    ("/api/v1/assets?limit=%C2%B2", "limit"),
    ("/api/v1/assets?limit=" + "9" * 5000, "limit"),
    ("/api/v1/impact?vendor=CrowdStrike&limit=\u0661", "limit"),
    ("/api/v1/impact?vendor=CrowdStrike&limit=%C2%B2", "limit"),
    ("/api/v1/impact?vendor=CrowdStrike&offset=" + "9" * 5000, "offset"),
    ("/api/v1/incidents/1?limit=%C2%B2", "limit"),
    ("/api/v1/updates?limit=%C2%B2", "limit"),
])
def test_bad_query_values_are_a_400_naming_the_parameter(api: Api, path: str, field: str) -> None:
    api.incident()
    assert_refused(api.call("GET", path, headers=api.read), field, (400,))


def test_a_single_valued_parameter_given_twice_is_refused_only_when_the_values_differ(api: Api) -> None:
    for path, field in (("/api/v1/assets?vendor=CrowdStrike&vendor=Microsoft", "vendor"),
                        ("/api/v1/impact?vendor=CrowdStrike&vendor=Microsoft", "vendor"),
                        ("/api/v1/impact?vendor=CrowdStrike&limit=1&limit=2", "limit")):
        assert_refused(api.call("GET", path, headers=api.read), field, (400,))
    for path in ("/api/v1/assets?vendor=CrowdStrike&vendor=CrowdStrike",
                 "/api/v1/impact?vendor=CrowdStrike&os=windows&os=linux"):  # a list parameter repeats
        response = api.call("GET", path, headers=api.read)
        assert response.status_code == 200, (path, response.get_json())


def test_a_non_string_vendor_is_reported_as_such(api: Api) -> None:
    response = api.call("POST", "/api/v1/impact", json={"scope": {"vendor": 5}}, headers=api.read)
    body = assert_refused(response, "scope.vendor", (400,))
    assert "string" in body["message"]


# ---------------------------------------------------------------- the description says what is enforced

def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_request_schemas_are_closed_and_limits_are_described() -> None:
    spec = build_spec()
    schemas = spec["components"]["schemas"]
    for name in ("ImpactRequest", "Scope", "WhatIf", "IncidentRequest", "RecoveryRequest", "ResolveRequest",
                 "ScenarioRequest", "NewPlan", "PlanChanges", "NewPlanEvent", "NewVendorUpdate", "NewUpdateTest",
                 "NewAssessment"):
        assert schemas[name].get("additionalProperties") is False, name
    what_if = schemas["WhatIf"]["properties"]
    assert what_if["add_plans"]["items"]["additionalProperties"] is False
    replica_entry = next(b for b in what_if["add_replicas"]["items"]["oneOf"] if b.get("type") == "object")
    assert replica_entry["additionalProperties"] is False
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            body = (operation.get("requestBody") or {}).get("content", {}).get("application/json")
            # (the estate document has its own schema; an SBOM is a CycloneDX or SPDX document)
            if body and path not in ("/api/v1/estate", "/api/v1/assets/{asset_id}/sbom"):
                schema = _resolve(spec, body["schema"])
                assert schema.get("additionalProperties") is False, (method, path)
            for param in operation.get("parameters", []):
                schema = param["schema"]
                if param["name"] in ("limit", "offset") or (param["in"] == "path"
                                                            and schema.get("type") == "integer"):
                    assert "minimum" in schema and "maximum" in schema, (method, path, param["name"])
