"""WSGI entry point: ``gunicorn wsgi:app``."""
from inventory import create_app_or_halt

# One line per unusable PLANB_ setting, no traceback, and gunicorn halts.
app = create_app_or_halt()
