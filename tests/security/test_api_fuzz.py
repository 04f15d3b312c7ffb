"""The app's own OpenAPI description (/api/v1/openapi.json) against its routes, and ids
beyond the id columns.  schemathesis with every check (no 500s, every 4xx with the JSON
error body, undocumented statuses, schema-valid requests refused, schema-invalid ones
accepted) runs in test_openapi_conformance.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis

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


def test_the_description_covers_the_api(api_app, api_schema):
    """Every /api/v1 route is described (so the fuzzer below reaches it)."""
    described = set()
    for path, item in api_schema.raw_schema["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                described.add((method.upper(), path))
    missing = []
    for rule in api_app.url_map.iter_rules():
        # The interactive reference (/api/v1/docs) is a page about the API, not part of it.
        page = getattr(api_app.view_functions[rule.endpoint], "_planb_session_or_token", False)
        if not rule.rule.startswith("/api/v1") or page:
            continue
        path = openapi_path(rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if (method, path) not in described:
                missing.append(f"{method} {path}")
    assert missing == []


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
