"""/healthz (up, database reachable, migrations current) and structured, secret-free logs."""
from __future__ import annotations

import io
import json
import logging

from click.testing import CliRunner

from inventory import logging_setup, migrate
from inventory.cli import main
from tests.conftest import TEST_SECRET, bearer, create_api_token, make_test_app

PASSWORD = "hunter2-but-longer-and-secret"


def test_healthz_ok_is_public(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok",
                                   "checks": {"app": "ok", "database": "ok", "migrations": "ok"}}


def test_healthz_503_when_migrations_are_pending(empty_sqlite_url, tmp_path):
    app = make_test_app(empty_sqlite_url, tmp_path / "i")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["migrations"] == "pending"
    assert response.get_json()["status"] == "unhealthy"

    migrate.upgrade(empty_sqlite_url, "head")
    assert app.test_client().get("/healthz").status_code == 200
    migrate.downgrade(empty_sqlite_url, "-1")  # one revision behind the code
    response = app.test_client().get("/healthz")
    assert response.status_code == 503 and response.get_json()["checks"]["migrations"] == "pending"


def test_healthz_503_when_the_database_is_unreachable_without_leaking_details(tmp_path):
    url = "postgresql+psycopg://planb:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"
    app = make_test_app(url, tmp_path / "i")
    buffer = io.StringIO()
    logging_setup.configure("INFO", "json", stream=buffer)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"] == {"app": "ok", "database": "unreachable", "migrations": "unknown"}
    assert "s3cret" not in response.get_data(as_text=True) and "127.0.0.1" not in response.get_data(as_text=True)
    assert "database unreachable" in buffer.getvalue()  # the cause is in the log instead
    app.extensions["planb_engine"].dispose()


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_each_request_logs_one_parseable_json_line(app, read_token):
    buffer = io.StringIO()
    logging_setup.configure("INFO", "json", stream=buffer)
    app.test_client().get("/api/v1/assets?q=should-not-appear", headers=bearer(read_token))
    lines = _json_lines(buffer.getvalue())
    request_lines = [line for line in lines if line["msg"] == "request"]
    assert len(request_lines) == 1
    line = request_lines[0]
    assert line["level"] == "INFO" and line["logger"] == "planb.request"
    assert line["method"] == "GET" and line["path"] == "/api/v1/assets"
    assert line["status"] == 200 and isinstance(line["duration_ms"], float)
    assert line["actor"].startswith("test-read-")
    assert "should-not-appear" not in buffer.getvalue()  # query strings are not logged


def test_secret_looking_extra_fields_are_redacted():
    buffer = io.StringIO()
    logging_setup.configure("INFO", "json", stream=buffer)
    logging.getLogger("planb.test").info("careless", extra={
        "password": "p4ss", "api_token": "planb_abc", "Authorization": "Bearer x",
        "details": {"client_secret": "s", "region": "eu"}})
    (line,) = _json_lines(buffer.getvalue())
    assert line["password"] == line["api_token"] == line["Authorization"] == "[redacted]"
    assert line["details"] == {"client_secret": "[redacted]", "region": "eu"}
    for secret in ("p4ss", "planb_abc", "Bearer x"):
        assert secret not in buffer.getvalue()


def test_text_log_format(app):
    buffer = io.StringIO()
    logging_setup.configure("INFO", "text", stream=buffer)
    logging.getLogger("planb.test").warning("plain line")
    assert "WARNING planb.test: plain line" in buffer.getvalue()


def test_no_password_or_token_reaches_the_log(app, sqlite_url, tmp_path, monkeypatch):
    buffer = io.StringIO()
    logging_setup.configure("DEBUG", "json", stream=buffer)
    client = app.test_client()
    # A user created on the CLI, then a wrong and a right login.
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "cli"))
    monkeypatch.setenv("PLANB_LOG_LEVEL", "DEBUG")
    runner = CliRunner()
    result = runner.invoke(main, ["users", "create", "logtest", "--role", "admin", "--password-stdin"],
                           input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["tokens", "create", "log-token", "--role", "write"])
    assert result.exit_code == 0, result.output
    cli_token = result.output.split("Token (shown once): ")[1].strip()
    logging_setup.configure("DEBUG", "json", stream=buffer)  # the CLI's app reconfigured logging

    assert client.post("/login", data={"username": "logtest", "password": PASSWORD + "x"}).status_code == 401
    assert client.post("/login", data={"username": "logtest", "password": PASSWORD}).status_code == 302
    web_token = create_api_token(app, "read")
    assert client.get("/api/v1/openapi.json", headers=bearer(cli_token)).status_code == 200
    assert client.get("/api/v1/openapi.json", headers=bearer(web_token)).status_code == 200
    assert client.get("/api/v1/openapi.json", headers=bearer(cli_token + "tampered")).status_code == 401

    text = buffer.getvalue()
    lines = _json_lines(text)
    assert any(line["msg"] == "login failed" and line["username"] == "logtest" for line in lines)
    assert any(line["msg"] == "login" for line in lines)
    for secret in (PASSWORD, cli_token, cli_token[12:], web_token[12:]):
        assert secret not in text
