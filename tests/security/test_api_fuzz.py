"""schemathesis against the app's own OpenAPI description (/api/v1/openapi.json),
called through the WSGI app (no network) with a write token, on a populated database:
no 500s, and every 4xx answer carries the JSON error body ({"error", "message"})."""
from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from inventory.api.openapi import openapi_path
from inventory.app_db import get_session
from inventory.estate.importer import import_estate
from tests.conftest import bearer, create_api_token, make_test_app
from tests.reliability.helpers import SMALL_ESTATE


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            _sqlite_template: Path):  # type: ignore[no-untyped-def]
    import copy
    import shutil
    from contextlib import ExitStack

    from tests.conftest import pg_schema

    folder = tmp_path_factory.mktemp("apifuzz")
    stack = ExitStack()
    if request.param == "sqlite":
        shutil.copyfile(_sqlite_template, folder / "planb.sqlite3")
        url = f"sqlite:///{folder / 'planb.sqlite3'}"
    else:
        url = stack.enter_context(pg_schema(migrated=True))
    app = make_test_app(url, folder / "instance",
                        PROPAGATE_EXCEPTIONS=False)  # a crash must come back as a 500 to be seen
    with app.app_context():
        db = get_session()
        import_estate(db, copy.deepcopy(SMALL_ESTATE), source_name="seed", actor="test")
        db.commit()
    app.config["FUZZ_TOKEN"] = create_api_token(app, "write")
    yield app
    app.extensions["planb_engine"].dispose()
    stack.close()


@pytest.fixture(scope="module")
def api_schema(api_app):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app,
                                          headers=bearer(api_app.config["FUZZ_TOKEN"]))


def _operations(api_schema):  # type: ignore[no-untyped-def]
    # schemathesis's pytest integration breaks on pytest 9 (like pytest-alembic's), so the
    # operations are driven here: one hypothesis run per operation and generation mode.
    return [result.ok() for result in api_schema.get_all_operations()]


def test_the_description_covers_the_api(api_app, api_schema):
    """Every /api/v1 route is described (so the fuzzer below reaches it)."""
    described = set()
    for path, item in api_schema.raw_schema["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                described.add((method.upper(), path))
    missing = []
    for rule in api_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = openapi_path(rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if (method, path) not in described:
                missing.append(f"{method} {path}")
    assert missing == []


def _check(case, response) -> None:  # type: ignore[no-untyped-def]
    where = (case.method, case.formatted_path, case.query, str(case.body)[:200])
    assert response.status_code < 500, (where, response.text[:300])
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/json"), (where, response.status_code, content_type)
        body = response.json()
        assert isinstance(body, dict) and body.get("error") and body.get("message"), \
            (where, response.status_code, body)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_500s_and_errors_are_json(api_app, api_schema, mode):
    headers = bearer(api_app.config["FUZZ_TOKEN"])
    operations = _operations(api_schema)
    assert len(operations) >= 10
    calls = 0
    reached: set[str] = set()
    for operation in operations:

        @settings(max_examples=8, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            # Always the real write token: a generated Authorization header would only
            # test the (already tested) 401 path and never reach the handlers.
            case.headers = {**(case.headers or {}), **headers}
            response = case.call()
            assert response.request.headers["Authorization"] == headers["Authorization"]
            if response.status_code < 400:
                reached.add(case.operation.label)
            _check(case, response)

        run()
    assert calls >= len(operations)
    if mode == GenerationMode.POSITIVE:
        # Valid requests really get through to most handlers (not just 4xx at the door).
        # (Detail routes mostly get made-up ids, hence 404s: a third is plenty.)
        assert len(reached) >= len(operations) // 3, sorted(reached)


@pytest.mark.parametrize("path", ["/api/v1/assets/99999999999999999999", "/api/v1/plans/2147483648",
                                  "/api/v1/plans/-1"])
def test_api_ids_beyond_the_id_columns_are_404_not_500(api_app, path):
    response = api_app.test_client().get(path, headers=bearer(api_app.config["FUZZ_TOKEN"]))
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_page_ids_beyond_the_id_columns_are_404_not_500(viewer_client):
    assert viewer_client.get("/assets/2147483648").status_code == 404
    assert viewer_client.get("/assets/2147483647").status_code == 404  # in range, just absent


@pytest.mark.parametrize("path", ["/api/v1/_probe/big", "/_probe/big"])
def test_values_the_database_refuses_are_400_not_500(sqlite_url, tmp_path, path):
    """A handler that forgot to validate a number: the database refuses it, the client gets 400."""
    from flask import jsonify

    from inventory.app_db import get_session as session
    from inventory.models import Asset
    from tests.conftest import create_user_and_login
    from tests.security.conftest import add_probe_routes

    app = make_test_app(sqlite_url, tmp_path / "i", WTF_CSRF_ENABLED=False)
    add_probe_routes(app)
    for rule, name in (("/api/v1/_probe/big", "api_big"), ("/_probe/big", "web_big")):
        app.add_url_rule(rule, name, lambda: jsonify(found=session().get(Asset, 10**30) is not None))
    client = app.test_client()
    if path.startswith("/api/"):
        response = client.get(path, headers=bearer(create_api_token(app, "read")))
        assert response.status_code == 400 and response.get_json()["error"] == "bad_request"
    else:
        create_user_and_login(app, client, "viewer")
        response = client.get(path)
        assert response.status_code == 400 and b"out of range" in response.data
    app.extensions["planb_engine"].dispose()
