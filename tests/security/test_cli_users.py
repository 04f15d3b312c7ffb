"""planb users / planb tokens on the command line."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from inventory.cli import main
from tests.conftest import TEST_SECRET, bearer, make_test_app


@pytest.fixture
def cli(sqlite_url, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_LOG_LEVEL", "WARNING")
    runner = CliRunner()

    def run(*args: str, input: str | None = None, code: int = 0) -> str:
        result = runner.invoke(main, list(args), input=input)
        assert result.exit_code == code, result.output
        return result.output

    return run


def test_create_admin_prints_password_once_and_it_logs_in(cli, sqlite_url, tmp_path):
    out = cli("users", "create", "root", "--admin")
    assert "Created admin 'root'" in out
    password = out.split("Password (shown once): ")[1].strip()
    app = make_test_app(sqlite_url, tmp_path / "web", WTF_CSRF_ENABLED=False)
    response = app.test_client().post("/login", data={"username": "root", "password": password})
    assert response.status_code == 302
    listing = json.loads(cli("users", "list", "--format", "json"))
    assert listing[0]["username"] == "root" and listing[0]["role"] == "admin"
    assert password not in json.dumps(listing)


def test_user_lifecycle_on_the_cli(cli):
    cli("users", "create", "root", "--admin")
    cli("users", "create", "ann", "--role", "viewer", "--password-stdin", input="a long enough password\n")
    assert "ann is now editor" in cli("users", "set-role", "ann", "editor")
    assert "New password for ann (shown once): " in cli("users", "reset-password", "ann")
    assert "can no longer log in" in cli("users", "deactivate", "ann")
    assert "can log in again" in cli("users", "activate", "ann")
    rows = {r["username"]: r for r in json.loads(cli("users", "list", "--format", "json"))}
    assert rows["ann"]["role"] == "editor" and rows["ann"]["active"] is True


def test_cli_errors_are_clean_messages(cli):
    cli("users", "create", "root", "--admin")
    assert "already exists" in cli("users", "create", "root", code=1)
    assert "no user named 'ghost'" in cli("users", "set-role", "ghost", "viewer", code=1)
    assert "last active admin" in cli("users", "deactivate", "root", code=1)
    assert "last active admin" in cli("users", "set-role", "root", "viewer", code=1)
    assert "at least 10" in cli("users", "create", "bob", "--password-stdin", input="short\n", code=1)
    assert "no token with id 42" in cli("tokens", "revoke", "42", code=1)


def test_token_lifecycle_on_the_cli(cli, sqlite_url, tmp_path):
    out = cli("tokens", "create", "pipeline", "--role", "write", "--expires-days", "30")
    assert "expires" in out
    token = out.split("Token (shown once): ")[1].strip()
    app = make_test_app(sqlite_url, tmp_path / "web")
    client = app.test_client()
    assert client.get("/api/v1/openapi.json", headers=bearer(token)).status_code == 200
    rows = json.loads(cli("tokens", "list", "--format", "json"))
    assert rows[0]["name"] == "pipeline" and rows[0]["state"] == "active"
    assert rows[0]["last_used_at"] is not None
    assert token not in json.dumps(rows)
    cli("tokens", "revoke", str(rows[0]["id"]))
    assert json.loads(cli("tokens", "list", "--format", "json"))[0]["state"] == "revoked"
    assert client.get("/api/v1/openapi.json", headers=bearer(token)).status_code == 401
    for bad in ("0", "1.5", "1e-9", "3661"):
        cli("tokens", "create", "bad", "--expires-days", bad, code=2)
