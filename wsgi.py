"""WSGI entry point: ``gunicorn wsgi:app``."""
from inventory import config

# One line per unusable PLANB_ setting, no traceback, and gunicorn halts.
app = config.create_app_or_halt()
