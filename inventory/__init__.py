"""Plan B: supply-chain resilience and asset inventory.

``create_app`` is the Flask application factory; the domain logic lives in
plain modules (``inventory.impact``, ``inventory.services``, ``inventory.estate``)
that the web pages, the JSON API and the CLI all call.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from flask import Flask

__version__ = "0.1.0"

# Kept light on purpose: importing a domain module (``inventory.impact``,
# ``inventory.models``) or the CLI must not start the web stack; Flask is imported
# by ``create_app`` when an app is actually built.


def create_app(test_config: Mapping[str, Any] | None = None, *, web: bool = True) -> "Flask":
    """Build the app: environment configuration, then ``test_config`` on top.

    Every ``PLANB_`` setting is checked first: an unusable one stops start-up with a
    one-line message per setting (``inventory.config.ConfigError``, a SystemExit).
    ``web=False`` (the CLI) sets up configuration, logging and the database only: no
    pages, API, login or security headers, whose imports would cost every command.
    """
    from flask import Flask

    from inventory import config as config_module
    from inventory.paths import static_dir, templates_dir

    settings = config_module.load()
    overrides = config_module.check_overrides(test_config or {})
    instance_path = Path(overrides.get("INSTANCE_PATH") or config_module.default_instance_path())
    app = Flask(
        __name__,
        instance_path=str(instance_path),
        instance_relative_config=True,
        template_folder=str(templates_dir()),
        static_folder=str(static_dir()),
    )
    config_module.ensure_instance_path(instance_path)
    if "SECRET_KEY" in overrides and "DATABASE_URL" in overrides:
        # Tests hand in everything; don't create files they did not ask for.
        app.config.update(config_module.from_environment_without_secret(instance_path, settings))
    else:
        app.config.update(config_module.from_environment(instance_path, settings))
    app.config.update(overrides)

    from inventory import app_db, logging_setup

    logging_setup.init_app(app)
    app_db.init_app(app)
    if not web:
        return app

    from inventory import auth, security

    security.init_app(app)
    auth.init_app(app)

    from inventory import oidc

    oidc.init_app(app)

    from inventory.services import notify_worker

    notify_worker.install(app)

    from inventory.web import register_blueprints as register_web
    from inventory.api import register_blueprints as register_api

    register_web(app)
    register_api(app)
    return app


def create_app_or_halt() -> "Flask":
    """``create_app()`` where gunicorn loads the app (``wsgi.py``, ``planb serve``'s workers):
    a configuration error ends the process as ``config.exit_app_failed_to_load`` describes."""
    from inventory import config

    try:
        return create_app()
    except config.ConfigError as exc:
        config.exit_app_failed_to_load(exc)
        raise  # not reached: exit_app_failed_to_load always exits
