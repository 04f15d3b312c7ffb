"""WSGI entry point: ``gunicorn wsgi:app``."""
from inventory import config, create_app

try:
    app = create_app()
except config.ConfigError as exc:
    # One line per unusable PLANB_ setting, no traceback, and gunicorn halts.
    config.exit_app_failed_to_load(exc)
