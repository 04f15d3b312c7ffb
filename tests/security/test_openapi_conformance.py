"""schemathesis, every check, against the app's own OpenAPI document (/api/v1/openapi.json).

The app is served on a loopback port (schemathesis's in-process WSGI transport cannot send
its auth probes) with a write token, on a populated SQLite and PostgreSQL database, and
schemathesis's engine runs all its phases (examples, coverage, fuzzing, stateful) in
positive and negative generation modes over every operation the document lists -- so
operations other modules add are checked too.  The run fails when an operation answers a
status it does not document, a response breaks its schema, a schema-invalid request is
accepted or a schema-valid one refused, and on a 500 or a 4xx without the JSON error body.

A schema-valid request may still break a rule JSON Schema cannot express (a name that
matches no record, a date in the future); the document marks those properties
``x-planb-rule``.  So a valid request answered 400 or 422 passes only when the error's
``field`` is such a property; schemathesis's own positive-data check is told to accept
those two statuses and this file does the stricter check.
"""
from __future__ import annotations

import copy
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from werkzeug.serving import WSGIRequestHandler, make_server

from inventory.api.openapi import HTTP_METHODS, RULE
from inventory.app_db import get_session
from inventory.estate.importer import import_estate
from tests.conftest import create_api_token, make_test_app, pg_schema
from tests.reliability.helpers import SMALL_ESTATE

# Test cases per operation and generation mode in the fuzzing phase: with the coverage phase on
# one backend (below) the whole file stays near a minute on two cores.
MAX_EXAMPLES = 10
SEED = 20240719


class _QuietHandler(WSGIRequestHandler):
    def log(self, *args: Any, **kwargs: Any) -> None:  # one line per request would drown the output
        pass


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               _sqlite_template: Path) -> Iterator[tuple[str, str, dict[str, Any], str]]:
    """(base URL, write token, the document, backend) of the app served on 127.0.0.1 with a small estate."""
    folder = tmp_path_factory.mktemp("conformance")
    with ExitStack() as stack:
        if request.param == "sqlite":
            shutil.copyfile(_sqlite_template, folder / "planb.sqlite3")
            url = f"sqlite:///{folder / 'planb.sqlite3'}"
        else:
            url = stack.enter_context(pg_schema(migrated=True))
        app = make_test_app(url, folder / "instance", PROPAGATE_EXCEPTIONS=False)
        with app.app_context():
            db = get_session()
            import_estate(db, copy.deepcopy(SMALL_ESTATE), source_name="seed", actor="test")
            db.commit()
        token = create_api_token(app, "write")
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        spec = app.test_client().get("/api/v1/openapi.json",
                                     headers={"Authorization": f"Bearer {token}"}).get_json()
        try:
            yield f"http://127.0.0.1:{server.server_port}", token, spec, request.param
        finally:
            server.shutdown()
            thread.join(timeout=10)
            app.extensions["planb_engine"].dispose()


# ---------------------------------------------------------------- the document's rules

def _resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = spec
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _rule_paths(spec: dict[str, Any], schema: Any, path: str, out: set[str], depth: int = 0) -> None:
    """Every JSON path (indices dropped) under ``schema`` marked with a rule."""
    schema = _resolve(spec, schema)
    if not isinstance(schema, dict) or depth > 12:
        return
    if RULE in schema:
        out.add(path)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for branch in schema.get(key, []):
            _rule_paths(spec, branch, path, out, depth + 1)
    for key in ("items", "additionalProperties", "then", "else", "propertyNames"):
        if isinstance(schema.get(key), dict):
            _rule_paths(spec, schema[key], path, out, depth + 1)
    for name, child in (schema.get("properties") or {}).items():
        _rule_paths(spec, child, f"{path}.{name}" if path else name, out, depth + 1)


def _rules_by_operation(spec: dict[str, Any]) -> dict[str, set[str]]:
    rules: dict[str, set[str]] = {}
    for path, item in spec["paths"].items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            found: set[str] = set()
            for param in [*item.get("parameters", []), *operation.get("parameters", [])]:
                marked: set[str] = set()
                _rule_paths(spec, param.get("schema"), param["name"], marked)
                if marked or RULE in param:
                    found.add(param["name"])
            for media in (operation.get("requestBody") or {}).get("content", {}).values():
                _rule_paths(spec, media.get("schema"), "", found)
            rules[f"{method.upper()} {path}"] = found
    return rules


def _covered(field: str | None, rule_paths: set[str]) -> bool:
    """Whether the error's ``field`` is (under) a property the document marks with a rule.
    Services name scope fields without their parent ('regions' for 'scope.regions')."""
    if field is None:
        return False
    field = re.sub(r"\[\d+\]", "", field)
    for rule_path in rule_paths:
        if rule_path in ("", field) or field.startswith((rule_path + ".", rule_path.rsplit(".", 1)[-1] + ".")) \
                or rule_path.endswith("." + field):
            return True
    return False


# ---------------------------------------------------------------- the run

def _config(token: str, base_url: str, *, coverage: bool) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "base-url": base_url,
        "headers": {"Authorization": f"Bearer {token}"},
        "seed": SEED,
        "cache": {"enabled": False},  # no state kept between runs (or in the checkout)
        "workers": 1,
        "continue-on-failure": True,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True,
                       "database": "none", "no-shrink": True},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": coverage},
                   "fuzzing": {"enabled": True}, "stateful": {"enabled": True}},
        # Every check; valid requests refused 400/422 are judged below, against the rules.
        "checks": {"enabled": True,
                   "positive_data_acceptance": {
                       "expected-statuses": ["2xx", "401", "403", "404", "409", "400", "422"]}},
    })


def _describe(case_id: str, recorder: Any) -> str:
    interaction = recorder.interactions.get(case_id)
    if interaction is None:
        return case_id
    req, resp = interaction.request, interaction.response
    body = (req.body or b"")[:300] if isinstance(req.body, bytes) else str(req.body)[:300]
    answer = f"{resp.status_code} {resp.content[:300]!r}" if resp is not None else "no response"
    return f"{req.method} {req.uri} {body!r} -> {answer}"


def _run(base_url: str, token: str, spec: dict[str, Any], *, coverage: bool) -> tuple[list[str], set[str], int]:
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json",
                                           config=_config(token, base_url, coverage=coverage),
                                           headers={"Authorization": f"Bearer {token}"})
    rules = _rules_by_operation(spec)
    problems: list[str] = []
    tested: set[str] = set()
    requests = 0
    for event in from_schema(schema).execute():
        if isinstance(event, (events.NonFatalError,)):
            problems.append(f"{event.label}: schemathesis error {event.value!r}")
        elif isinstance(event, events.FatalError):
            problems.append(f"schemathesis stopped: {event.exception!r}")
        if not isinstance(event, events.ScenarioFinished):
            continue
        recorder = event.recorder
        for case_id, checks in recorder.checks.items():
            for check in checks:
                if check.failure_info is not None:
                    failure = check.failure_info.failure
                    problems.append(f"{failure.title} ({str(failure.message).splitlines()[0][:200]}): "
                                    f"{_describe(case_id, recorder)}")
        for case_id, interaction in recorder.interactions.items():
            response = interaction.response
            node = recorder.cases.get(case_id)
            if response is None or node is None:
                continue
            requests += 1
            case = node.value
            label = f"{case.operation.method.upper()} {case.operation.path}"
            tested.add(label)
            status = response.status_code
            if status >= 500:
                problems.append(f"server error: {_describe(case_id, recorder)}")
            if 400 <= status < 500 and case.operation.path.startswith("/api/"):
                content_type = response.headers.get("content-type", [""])[0]
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if not content_type.startswith("application/json") or not isinstance(body, dict) \
                        or not body.get("error") or not body.get("message"):
                    problems.append(f"error without the JSON error body: {_describe(case_id, recorder)}")
                    continue
                meta = case.meta
                if status in (400, 422) and meta is not None and meta.generation.mode.is_positive \
                        and label in rules and not _covered(body.get("field"), rules[label]):
                    problems.append(f"schema-valid request refused outside any x-planb-rule: "
                                    f"{_describe(case_id, recorder)}")
    return problems, tested, requests


def test_the_api_conforms_to_its_openapi_document(served_api: tuple[str, str, dict[str, Any], str]) -> None:
    base_url, token, spec, backend = served_api
    # The coverage phase (boundary values of every parameter and property, unknown parameters,
    # missing headers, unexpected methods) tests the document, the same on both backends:
    # SQLite runs it; PostgreSQL runs the generated phases, where a backend difference shows.
    problems, tested, requests = _run(base_url, token, spec, coverage=backend == "sqlite")
    # schemathesis leaves out the operation that serves the document it reads.
    operations = {f"{method.upper()} {path}" for path, item in spec["paths"].items()
                  for method in HTTP_METHODS if isinstance(item.get(method), dict)} - {"GET /api/v1/openapi.json"}
    unique = sorted(dict.fromkeys(p[:600] for p in problems))
    assert unique == [], f"{len(unique)} problems:\n" + "\n".join(unique[:40])
    assert tested >= operations, sorted(operations - tested)
    assert requests > (20 if backend == "sqlite" else 5) * len(operations)


def test_an_operation_the_document_does_not_cover_fails_the_check() -> None:
    """The rule matching is not a blanket pass: only fields under a marked property count."""
    assert _covered("covers.assets", {"covers.assets"})
    assert _covered("regions", {"scope.regions"})
    assert _covered("vendors[0].cloud_provider", {""})
    assert not _covered("name", {"covers.assets"})
    assert not _covered(None, {"covers.assets"})
    assert not _covered("rto_minutes", set())

