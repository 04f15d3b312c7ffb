"""Every route × method × principal gets the expected answer, so no route can slip through.

The expectations are derived, not listed: a route's least role comes from
``inventory.auth.required_role`` (the view's ``@require_role`` declaration, else
viewer for reads and editor for writes), and its kind (page or API) from its path.

* anonymous: pages answer GET with a redirect to /login and refuse other methods
  with 401; the API answers 401 (JSON) to everything.
* a session cookie on the API: 401 — the token API never accepts a cookie alone.
* a bearer token on a page: treated as anonymous.
* a path that takes a token or a session (``auth.TOKEN_OR_SESSION_PATHS``, the metrics
  scrape): 401 (JSON) to anonymous, a token as on the API, a session user needs the role listed.
* an authenticated principal below the least role: 403.
* at or above it: anything but 401/403 and not a bounce to /login (404 and 400 are
  fine: the route gets made-up ids and empty bodies).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.routing import Rule
from werkzeug.routing.converters import FloatConverter, NumberConverter, UUIDConverter

from inventory.auth import (PUBLIC_ENDPOINTS, ROLE_RANK, TOKEN_OR_SESSION_PATHS, TOKEN_ROLE_TO_ROLE,
                            required_role)
from tests.conftest import bearer, create_api_token, create_user_and_login, make_test_app

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SESSION_ROLES = ("viewer", "editor", "admin")
TOKEN_ROLES = ("read", "write")
# Endpoints that end the caller's session: each request gets a fresh login.
SESSION_ENDING = {"auth.logout"}
MISSING_ID = 987654321


@dataclass
class Outcome:
    rule: str
    endpoint: str
    method: str
    principal: str
    status: int | None
    location: str = ""
    error: str | None = None
    expected: str = ""


@dataclass
class Sweep:
    outcomes: list[Outcome] = field(default_factory=list)
    rules: int = 0


def _url(rule: Rule) -> str:
    values: dict[str, Any] = {}
    for name in rule.arguments:
        converter = rule._converters.get(name)
        if isinstance(converter, FloatConverter):
            values[name] = float(MISSING_ID)
        elif isinstance(converter, NumberConverter):  # int, including the bounded id converter
            values[name] = MISSING_ID
        elif isinstance(converter, UUIDConverter):
            values[name] = uuid.UUID(int=MISSING_ID)
        else:
            values[name] = "no-such-thing"
    built = rule.build(values, append_unknown=False)
    assert built is not None
    return built[1]


def _routes(app: Flask) -> list[tuple[Rule, str]]:
    out = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        if rule.endpoint == "static":
            continue
        for method in METHODS:
            if method in (rule.methods or ()):
                out.append((rule, method))
    return out


def _expectation(app: Flask, rule: Rule, method: str, principal: str) -> str:
    """'login' (302 to /login), 'unauthorized' (401), 'forbidden' (403) or 'allowed'."""
    # A page about the API under /api/ (the reference, auth.session_or_token_page) takes
    # a session like any page and a token like the API; /metrics takes either, JSON errors.
    page = getattr(app.view_functions[rule.endpoint], "_planb_session_or_token", False)
    token_or_session = rule.rule in TOKEN_OR_SESSION_PATHS
    is_api = (rule.rule.startswith("/api/") and not page) or token_or_session
    if page and principal.startswith("token:"):
        is_api = True
    if principal == "anonymous" or (principal.startswith("token:") and not is_api):
        if is_api:
            return "unauthorized"
        return "login" if method == "GET" else "unauthorized"
    if principal.startswith("session:") and is_api and not token_or_session:
        return "unauthorized"
    role = principal.split(":")[1]
    role = TOKEN_ROLE_TO_ROLE.get(role, role)
    needed = required_role(app.view_functions[rule.endpoint], method)
    if principal.startswith("session:") and token_or_session:
        needed = max(needed, TOKEN_OR_SESSION_PATHS[rule.rule], key=ROLE_RANK.__getitem__)
    return "allowed" if ROLE_RANK[role] >= ROLE_RANK[needed] else "forbidden"


def _classify(outcome: Outcome) -> str:
    if outcome.endpoint in SESSION_ENDING and outcome.status == 302:
        return "allowed"  # logging out sends you to the login page: that is success
    if outcome.status == 401:
        return "unauthorized"
    if outcome.status == 403:
        return "forbidden"
    if outcome.status == 302 and "/login" in outcome.location:
        return "login"
    return "allowed"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, _sqlite_template: Path) -> Sweep:
    import shutil

    folder = tmp_path_factory.mktemp("urlmap")
    db_file = folder / "planb.sqlite3"
    shutil.copyfile(_sqlite_template, db_file)
    app = make_test_app(f"sqlite:///{db_file}", folder / "instance", WTF_CSRF_ENABLED=False,
                        PROPAGATE_EXCEPTIONS=True)
    # An admin must exist for "last admin" guards; the sweep's admin is not the only one.
    create_user_and_login(app, app.test_client(), "admin")

    sessions = {}
    for role in SESSION_ROLES:
        client = app.test_client()
        create_user_and_login(app, client, role)
        sessions[role] = client
    tokens = {role: create_api_token(app, role) for role in TOKEN_ROLES}
    anonymous = app.test_client()

    result = Sweep()
    routes = _routes(app)
    result.rules = len({r.rule for r, _ in routes})
    principals = ["anonymous"] + [f"session:{r}" for r in SESSION_ROLES] + [f"token:{r}" for r in TOKEN_ROLES]
    for rule, method in routes:
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        url = _url(rule)
        for principal in principals:
            headers: dict[str, str] = {}
            if principal == "anonymous":
                client = anonymous
            elif principal.startswith("session:"):
                role = principal.split(":")[1]
                if rule.endpoint in SESSION_ENDING:
                    client = app.test_client()
                    create_user_and_login(app, client, role)
                else:
                    client = sessions[role]
            else:
                client = app.test_client()
                headers = bearer(tokens[principal.split(":")[1]])
            outcome = Outcome(rule.rule, rule.endpoint, method, principal, None,
                              expected=_expectation(app, rule, method, principal))
            try:
                response = client.open(url, method=method, headers=headers)
                outcome.status = response.status_code
                outcome.location = response.headers.get("Location", "")
            except Exception as exc:
                outcome.error = f"{type(exc).__name__}: {exc}"[:300]
            result.outcomes.append(outcome)
    app.extensions["planb_engine"].dispose()
    return result


def test_every_route_method_and_principal_gets_the_expected_answer(sweep):
    assert sweep.rules >= 10  # auth, health, admin, API... the map is really walked
    wrong = []
    for o in sweep.outcomes:
        got = "allowed" if o.error else _classify(o)
        if got != o.expected:
            wrong.append(f"{o.method} {o.rule} as {o.principal}: expected {o.expected}, got "
                         f"{o.status} {o.location or ''}{o.error or ''}")
    assert wrong == [], "\n".join(wrong)


def test_refused_requests_never_reach_the_view(sweep):
    # A crash means the view ran: that must only happen for principals allowed to run it.
    ran_unexpectedly = [f"{o.method} {o.rule} as {o.principal}: {o.error}" for o in sweep.outcomes
                        if o.error and o.expected != "allowed"]
    assert ran_unexpectedly == []


def test_api_refusals_are_json(sweep):
    assert any(o.rule.startswith("/api/") for o in sweep.outcomes)


def test_no_route_crashes_on_unknown_ids_or_empty_bodies(sweep):
    crashes = [f"{o.method} {o.rule} as {o.principal}: {o.error or o.status}" for o in sweep.outcomes
               if o.error or (o.status is not None and o.status >= 500)]
    assert crashes == [], "\n".join(crashes)


def test_every_principal_kind_was_exercised_on_pages_and_api(sweep):
    seen = {(o.principal, o.rule.startswith("/api/"), o.expected) for o in sweep.outcomes}
    for principal in ("anonymous", "session:viewer", "token:read", "token:write"):
        assert any(p == principal for p, _, _ in seen)
    assert ("session:viewer", False, "forbidden") in seen  # some page write a viewer may not do
    assert ("session:admin", True, "unauthorized") in seen  # cookies never open the API
