"""deploy/compose.yaml: the services, their health checks and order, and only settings the app knows."""
from __future__ import annotations

import re
from typing import Any

import click
import pytest
import yaml

from inventory import config
from inventory.cli import main
from tests.deploy.helpers import ROOT

COMPOSE = ROOT / "deploy" / "compose.yaml"
# Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}.
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# What an operator puts in deploy/.env for the required ones.
REQUIRED = {"POSTGRES_PASSWORD": "s3cret", "PLANB_SECRET_KEY": "0123456789abcdef" * 4}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op and op.endswith("?"):
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return arg if op else ""

    return INTERPOLATION.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), dict(REQUIRED))


@pytest.fixture(scope="module")
def services(compose):  # type: ignore[no-untyped-def]
    return compose["services"]


def test_the_services(services):
    assert set(services) == {"web", "db", "redis", "migrate", "collector"}
    for name in ("web", "migrate", "collector"):
        assert services[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert (COMPOSE.parent / ".." / "Dockerfile").is_file()
    assert services["db"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_required_values_stop_compose_when_missing():
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        interpolate(yaml.safe_load(COMPOSE.read_text()), {"PLANB_SECRET_KEY": "x"})


def test_every_planb_variable_is_a_setting_and_its_value_parses(services):
    seen = set()
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if not key.startswith(config.ENV_PREFIX):
                continue
            setting = key[len(config.ENV_PREFIX):]
            assert setting in config.SETTINGS, f"{name}: {key} is not a Plan B setting"
            seen.add(setting)
            if str(value).strip():   # blank counts as unset, as in the app
                config.parse(setting, str(value))   # ConfigError (a SystemExit) fails the test
    assert {"DATABASE_URL", "SECRET_KEY", "RATELIMIT_STORAGE_URI", "WORKERS"} <= seen


def test_web_serves_with_several_workers_and_shares_rate_limits_through_redis(services):
    web = services["web"]
    environment = web["environment"]
    assert web["command"] == ["serve"]
    assert config.parse("WORKERS", environment["PLANB_WORKERS"]) > 1
    assert environment["PLANB_RATELIMIT_STORAGE_URI"].startswith("redis://redis:")
    assert environment["PLANB_DATABASE_URL"].startswith("postgresql+psycopg://planb:s3cret@db:5432/")
    assert web["ports"] and web["ports"][0].endswith(":8080")


def test_every_plan_b_process_shares_database_and_keys(services):
    for name in ("web", "migrate", "collector"):
        environment = services[name]["environment"]
        assert environment["PLANB_DATABASE_URL"] == services["web"]["environment"]["PLANB_DATABASE_URL"]
        assert environment["PLANB_SECRET_KEY"] == REQUIRED["PLANB_SECRET_KEY"]


def test_health_checks(services):
    assert services["web"]["healthcheck"]["test"] == ["CMD", "python", "/opt/planb/healthcheck.py"]
    assert "pg_isready" in services["db"]["healthcheck"]["test"][1]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # No web server in these: the image's /healthz check would mark them unhealthy forever.
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["collector"]["healthcheck"] == {"disable": True}


def test_start_order(services):
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["web"]["depends_on"] == {
        "db": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"}}
    assert services["collector"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_the_collector_runs_collect_all_on_a_schedule_the_cli_accepts(services):
    collector = services["collector"]
    command = collector["command"]
    assert command[:2] == ["collect", "all"]
    # The groups are lazy (inventory.cli.COMMANDS): ask for each command as click does.
    collect = main.get_command(click.Context(main), "collect")
    collect_all = collect.get_command(click.Context(collect), "all")
    context = collect_all.make_context("all", list(command[2:]))
    assert context.params["every"] == 3600 and 0 < context.params["jitter"] < 3600
    # Long enough for a run in progress to finish after `docker compose stop` (SIGTERM).
    assert collector["stop_grace_period"] == "10m"


def test_hardening(services):
    for name in ("web", "migrate", "collector"):
        service = services[name]
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]   # gunicorn, the metrics folder, the kernel cache copy
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
