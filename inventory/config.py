"""Configuration from environment variables prefixed ``PLANB_``.

Every variable is documented in the README.  Defaults suit one machine: an
embedded SQLite file under the instance folder and a secret key generated
once and kept there (never a constant in code).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

ENV_PREFIX = "PLANB_"

# name -> (default, description); the README's configuration table mirrors this.
SETTINGS: dict[str, tuple[str | None, str]] = {
    "DATABASE_URL": (None, "SQLAlchemy URL; default sqlite:///<instance>/planb.sqlite3"),
    "SECRET_KEY": (None, "Session/CSRF signing key; generated into <instance>/secret_key when unset"),
    "TOKEN_HMAC_KEY": (None, "Key for API-token HMACs; defaults to one derived from the secret key"),
    "INSTANCE_PATH": (None, "Folder for the SQLite file, secret key and backups; default ./instance"),
    "LOG_LEVEL": ("INFO", "Logging level (DEBUG, INFO, WARNING, ERROR)"),
    "LOG_FORMAT": ("json", "'json' for structured logs, 'text' for plain lines"),
    "SESSION_HOURS": ("12", "Hours a login session lasts"),
    "MAX_CONTENT_LENGTH": (str(16 * 1024 * 1024), "Largest accepted request body in bytes (413 beyond)"),
    "SECURE_COOKIES": ("auto", "'auto' (Secure when served over TLS), 'true' or 'false'"),
    "LOGIN_RATE_LIMIT": ("10 per minute", "Flask-Limiter limit on login attempts per client"),
    "RATELIMIT_STORAGE_URI": ("memory://", "Flask-Limiter storage (e.g. redis://127.0.0.1:6379)"),
    "TRUSTED_PROXIES": ("0", "Reverse proxies in front of the app whose X-Forwarded-* headers are trusted"),
    "IMPACT_REBUILD_WAIT": ("2", "Seconds a blast-radius request waits for the graph rebuild it started after "
                                 "an inventory change before answering from the previous graph (marked so)"),
    "HOST": ("127.0.0.1", "Address `planb demo` / `planb serve` listens on"),
    "PORT": ("8080", "Port `planb demo` / `planb serve` listens on"),
}


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def default_instance_path() -> Path:
    configured = env("INSTANCE_PATH")
    if configured:
        return Path(configured).resolve()
    return (Path.cwd() / "instance").resolve()


def load_or_create_secret(instance_path: Path, filename: str = "secret_key") -> str:
    """Read the instance's secret key, creating it (mode 0600) the first time."""
    path = instance_path / filename
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def from_environment(instance_path: Path) -> dict[str, Any]:
    """Flask config values built from the environment."""
    values = from_environment_without_secret(instance_path)
    values["SECRET_KEY"] = env("SECRET_KEY") or load_or_create_secret(instance_path)
    return values


def from_environment_without_secret(instance_path: Path) -> dict[str, Any]:
    database_url = env("DATABASE_URL") or f"sqlite:///{instance_path / 'planb.sqlite3'}"
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": env("SECRET_KEY"),
        "TOKEN_HMAC_KEY": env("TOKEN_HMAC_KEY"),
        "LOG_LEVEL": (env("LOG_LEVEL", "INFO") or "INFO").upper(),
        "LOG_FORMAT": env("LOG_FORMAT", "json"),
        "SESSION_HOURS": float(env("SESSION_HOURS", "12") or 12),
        "MAX_CONTENT_LENGTH": int(env("MAX_CONTENT_LENGTH", str(16 * 1024 * 1024)) or 0),
        "SECURE_COOKIES": (env("SECURE_COOKIES", "auto") or "auto").lower(),
        "LOGIN_RATE_LIMIT": env("LOGIN_RATE_LIMIT", "10 per minute"),
        "RATELIMIT_STORAGE_URI": env("RATELIMIT_STORAGE_URI", "memory://"),
        "HOST": env("HOST", "127.0.0.1"),
        "PORT": int(env("PORT", "8080") or 8080),
    }
