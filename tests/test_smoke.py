from tests.conftest import bearer


def test_anonymous_page_redirects_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def test_login_then_overview(viewer_client):
    response = viewer_client.get("/")
    assert response.status_code == 200
    assert b"Overview" in response.data


def test_healthz_reports_current_migrations(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"app": "ok", "database": "ok", "migrations": "ok"}


def test_api_refuses_anonymous_and_session_cookie(viewer_client, read_token):
    assert viewer_client.get("/api/v1/nothing").status_code == 401
    assert viewer_client.get("/api/v1/nothing", headers=bearer(read_token)).status_code == 404
