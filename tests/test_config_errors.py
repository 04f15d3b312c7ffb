"""PLANB_ settings: an unusable value stops start-up with one line naming it, never a traceback,
and never a silent fallback (no rate limit, no Secure cookie flag)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inventory import create_app
from inventory.auth import create_user
from inventory.app_db import get_session
from inventory.config import SETTINGS
from tests.conftest import TEST_SECRET, make_test_app

ROOT = Path(__file__).resolve().parent.parent
PLANB = Path(sys.executable).with_name("planb")
PASSWORD = "correct horse battery staple"
MESSAGE = re.compile(r"^PLANB_[A-Z_]+: .+; expected .+$")


@pytest.fixture
def environment(monkeypatch, sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    """A working PLANB_ environment (and nothing else PLANB_ from the caller's shell)."""
    for name in list(os.environ):
        if name.startswith("PLANB_") and name[len("PLANB_"):] in SETTINGS:
            monkeypatch.delenv(name)
    values = {"PLANB_DATABASE_URL": sqlite_url, "PLANB_SECRET_KEY": TEST_SECRET,
              "PLANB_INSTANCE_PATH": str(tmp_path / "instance"), "PLANB_LOG_LEVEL": "WARNING"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _refusal(monkeypatch, **bad: str) -> list[str]:
    """Start the app with ``bad`` settings; return the lines it stopped with."""
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        create_app({"TESTING": True})
    assert stopped.value.code != 0
    lines = str(stopped.value.code).splitlines()
    for line in lines:
        assert MESSAGE.match(line), line
    return lines


# ---------------------------------------------------------------- every setting, through create_app

BAD_VALUES = [
    ("LOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING or ERROR"),
    ("LOG_FORMAT", "xml", "json or text"),
    ("SESSION_HOURS", "abc", "e.g. 12"),
    ("SESSION_HOURS", "0", "above 0"),
    ("SESSION_HOURS", "inf", "at most 8760"),
    ("MAX_CONTENT_LENGTH", "abc", "e.g. 16777216"),
    ("MAX_CONTENT_LENGTH", "-5", "at least 1"),
    ("MAX_CONTENT_LENGTH", "0", "at least 1"),
    ("SECURE_COOKIES", "maybe", "auto, true or false"),
    ("LOGIN_RATE_LIMIT", "lots", "'10 per minute'"),
    ("LOGIN_RATE_LIMIT", "0 per minute", "'10 per minute'"),
    ("RATELIMIT_STORAGE_URI", "bogus://", "memory://"),
    ("TRUSTED_PROXIES", "x", "whole number"),
    ("TRUSTED_PROXIES", "-1", "0 or more"),
    ("IMPACT_REBUILD_WAIT", "soon", "number of seconds"),
    ("HOST", "http://0.0.0.0", "e.g. 127.0.0.1"),
    ("PORT", "http", "1 to 65535"),
    ("PORT", "70000", "1 to 65535"),
    ("DATABASE_URL", "foo", "postgresql+psycopg://"),
    ("DATABASE_URL", "mysql://db.example/planb", "SQLite or PostgreSQL"),
    ("INSTANCE_PATH", "<a file>", "a folder"),
    ("COLLECT_AWS_REGIONS", "us east 1", "us-east-1"),
    ("COLLECT_AWS_ROLE_ARNS", "planb-reader", "arn:aws:iam::"),
    ("COLLECT_AWS_RESOURCE_TYPES", "ec2,s3", "ec2, lambda, elbv2, rds, eks"),
    ("COLLECT_AWS_DEADLINE", "soon", "e.g. 900"),
    ("COLLECT_AWS_SSM", "maybe", "true or false"),
    ("COLLECT_AZURE_SUBSCRIPTIONS", "prod", "8f2c6b1e-"),
    ("COLLECT_AZURE_DEADLINE", "0", "at least 1"),
    ("AZURE_BASE_URL", "management.chinacloudapi.cn", "https://"),
    ("COLLECT_HOST", "sometimes", "true or false"),
]


@pytest.mark.parametrize(("name", "value", "hint"), BAD_VALUES, ids=[f"{n}={v}" for n, v, _ in BAD_VALUES])
def test_an_unusable_setting_stops_start_up_with_one_line_naming_it(environment, monkeypatch, tmp_path,
                                                                     name, value, hint):
    if value == "<a file>":
        value = str(tmp_path / "a-file")
        Path(value).write_text("not a folder")
    lines = _refusal(monkeypatch, **{f"PLANB_{name}": value})
    assert len(lines) == 1
    assert lines[0].startswith(f"PLANB_{name}: ")
    assert hint in lines[0].split("; expected ", 1)[1]


def test_every_bad_setting_is_reported_at_once(environment, monkeypatch):
    lines = _refusal(monkeypatch, PLANB_PORT="http", PLANB_LOG_FORMAT="xml", PLANB_SESSION_HOURS="abc")
    assert sorted(line.split(":", 1)[0] for line in lines) == [
        "PLANB_LOG_FORMAT", "PLANB_PORT", "PLANB_SESSION_HOURS"]


def test_secrets_in_urls_are_not_echoed(environment, monkeypatch):
    [line] = _refusal(monkeypatch, PLANB_RATELIMIT_STORAGE_URI="bogus://:hunter2@cache.example:6379")
    assert "hunter2" not in line
    [line] = _refusal(monkeypatch, PLANB_RATELIMIT_STORAGE_URI="memory://",
                      PLANB_DATABASE_URL="mysql://planb:hunter2@db.example/planb")
    assert "hunter2" not in line


# ---------------------------------------------------------------- bug 1: the login rate limit

def _failed_logins(app, count: int, address: str) -> list[int]:  # type: ignore[no-untyped-def]
    client = app.test_client()
    html = client.get("/login", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    return [client.post("/login", data={"username": "alice", "password": "wrong password",
                                         "csrf_token": token},
                        environ_base={"REMOTE_ADDR": address}).status_code
            for _ in range(count)]


def test_unparseable_login_rate_limit_stops_start_up_instead_of_disabling_the_limit(
        environment, monkeypatch, sqlite_url, tmp_path):
    monkeypatch.setenv("PLANB_LOGIN_RATE_LIMIT", "lots")
    try:
        app = make_test_app(sqlite_url, tmp_path / "i", RATELIMIT_ENABLED=True)
    except SystemExit as stopped:
        message = str(stopped.code)
    else:  # the app started: show what that does to logins
        with app.app_context():
            create_user(get_session(), "alice", "viewer", PASSWORD)
            get_session().commit()
        statuses = _failed_logins(app, 12, "192.0.2.41")
        pytest.fail(f"PLANB_LOGIN_RATE_LIMIT=lots was accepted; 12 failed logins answered {statuses}")
    assert message.startswith("PLANB_LOGIN_RATE_LIMIT: 'lots' is not a rate limit; expected ")
    assert "'10 per minute'" in message  # an example of a valid value
    assert "\n" not in message

    # The default, and a valid value, do limit real logins (CSRF on, as in production).
    monkeypatch.delenv("PLANB_LOGIN_RATE_LIMIT")
    app = make_test_app(sqlite_url, tmp_path / "i", RATELIMIT_ENABLED=True)
    with app.app_context():
        create_user(get_session(), "alice", "viewer", PASSWORD)
        get_session().commit()
    assert _failed_logins(app, 11, "192.0.2.42") == [401] * 10 + [429]
    monkeypatch.setenv("PLANB_LOGIN_RATE_LIMIT", " 3 PER MINUTE ")
    app = make_test_app(sqlite_url, tmp_path / "i", RATELIMIT_ENABLED=True)
    assert _failed_logins(app, 4, "192.0.2.43") == [401] * 3 + [429]


# ---------------------------------------------------------------- bug 2: the Secure cookie flag

def _session_cookie(app, base_url: str) -> str:  # type: ignore[no-untyped-def]
    response = app.test_client().post("/login", data={"username": "alice", "password": PASSWORD},
                                      base_url=base_url)
    assert response.status_code == 302
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("planb_session=")]
    assert cookies, "no session cookie set"
    return cookies[0]


@pytest.mark.parametrize("value", ["yes", "1", "On", " Yes "])
def test_secure_cookies_true_spelled_any_usual_way_forces_the_secure_flag(
        environment, monkeypatch, sqlite_url, tmp_path, value):
    monkeypatch.setenv("PLANB_SECURE_COOKIES", value)
    app = make_test_app(sqlite_url, tmp_path / "i", WTF_CSRF_ENABLED=False)
    with app.app_context():
        create_user(get_session(), "alice", "viewer", PASSWORD)
        get_session().commit()
    assert "; Secure" in _session_cookie(app, "https://planb.example")
    assert "; Secure" in _session_cookie(app, "http://planb.example")


# ---------------------------------------------------------------- the entry points, as processes

def _run(args: list[str], environment: dict[str, str], timeout: float = 60, **bad: str):  # type: ignore[no-untyped-def]
    env = {name: value for name, value in os.environ.items() if not name.startswith("PLANB_")}
    env.update(environment)
    env.update(bad)
    try:
        return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{' '.join(args)} did not stop within {timeout} s (it started with a bad setting): "
                    f"{expired.stderr!r}")


@pytest.mark.parametrize("command", [["db", "current"], ["serve"], ["demo", "--no-serve"]])
def test_planb_commands_stop_with_the_message_and_no_traceback(environment, command):
    result = _run([str(PLANB), *command], environment, PLANB_PORT="http", PLANB_SECURE_COOKIES="maybe")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "serving at" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines and all(MESSAGE.match(line) for line in lines), result.stderr
    assert "PLANB_PORT: 'http' is not a whole number; expected a port number from 1 to 65535, e.g. 8080" in lines
    if command != ["demo", "--no-serve"]:  # demo stops at its --port default, before the rest
        assert sorted(line.split(":", 1)[0] for line in lines) == ["PLANB_PORT", "PLANB_SECURE_COOKIES"]


@pytest.mark.parametrize("bad", [{"PLANB_COLLECT_AWS_REGIONS": "us-east-1", "PLANB_COLLECT_AWS_DEADLINE": "soon"},
                                 {"PLANB_COLLECT_AZURE_SUBSCRIPTIONS": "not-a-guid"}])
def test_collect_all_stops_on_a_bad_collector_setting_before_collecting(environment, bad):
    """The collectors read their settings through inventory.config too: a bad one is the
    same one-line message, not a traceback, and nothing is collected."""
    result = _run([str(PLANB), "collect", "all"], environment, PLANB_COLLECT_HOST="false", **bad)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    named = [line for line in result.stderr.splitlines() if MESSAGE.match(line)]
    assert [line.split(":", 1)[0] for line in named] == [name for name in bad if "DEADLINE" in name
                                                         or "SUBSCRIPTIONS" in name], result.stderr


def test_gunicorn_halts_on_a_bad_setting_with_the_message_and_no_traceback(environment):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = _run([str(gunicorn), "-w", "2", "-b", "127.0.0.1:0", "wsgi:app"], environment,
                  PLANB_LOG_FORMAT="xml")
    assert result.returncode == 4, result.stderr  # gunicorn: "App failed to load"
    assert "Traceback" not in result.stderr
    assert "PLANB_LOG_FORMAT: 'xml' is not one of the accepted values; expected json or text" in result.stderr
    assert "App failed to load" in result.stderr
