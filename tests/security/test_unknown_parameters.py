"""Unknown query parameters are reported (400 naming them), never silently ignored."""
from __future__ import annotations

import pytest

from inventory.api import documented_query_parameters
from tests.conftest import bearer


@pytest.mark.parametrize("path", ["/api/v1/plans?stauts=stale", "/api/v1/risk?sort=score",
                                  "/api/v1/updates?vendr=CrowdStrike", "/api/v1/vendors?page=2",
                                  "/api/v1/impact?vendor=CrowdStrike&os_family=windows"])
def test_unknown_query_parameter_is_a_400_naming_it(client, read_token, path):
    response = client.get(path, headers=bearer(read_token))
    assert response.status_code == 400
    body = response.get_json()
    assert body["field"] == path.rsplit("&", 1)[-1].split("?")[-1].split("=")[0]
    assert "unknown query parameter" in body["message"]


def test_documented_parameters_still_work(client, read_token):
    assert client.get("/api/v1/plans?status=stale", headers=bearer(read_token)).status_code == 200
    assert client.get("/api/v1/assets?q=web&limit=5", headers=bearer(read_token)).status_code == 200


def test_every_api_route_has_a_documented_parameter_list(app):
    allowed = documented_query_parameters(app)
    # The reference pages (/api/v1/docs) are pages about the API, not operations of it.
    api_routes = {(rule.endpoint, method) for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")
                  and not getattr(app.view_functions[rule.endpoint], "_planb_session_or_token", False)
                  for method in (rule.methods or ()) - {"HEAD", "OPTIONS"}}
    assert api_routes <= set(allowed), sorted(api_routes - set(allowed))
