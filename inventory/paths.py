"""Where the templates and migrations live, from a checkout or when installed."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

_CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def _locate(top_level: str, installed_package: str) -> Path:
    in_checkout = _CHECKOUT_ROOT / top_level
    if in_checkout.is_dir():
        return in_checkout
    return Path(str(resources.files(installed_package)))


def templates_dir() -> Path:
    return _locate("templates", "inventory._templates")


def migrations_dir() -> Path:
    return _locate("migrations", "inventory._migrations")


def static_dir() -> Path:
    return Path(__file__).resolve().parent / "static"


def data_dir() -> Path:
    return Path(__file__).resolve().parent / "data"
