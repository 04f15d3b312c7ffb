"""Structured (JSON lines) or plain logging, configured from PLANB_LOG_LEVEL / PLANB_LOG_FORMAT.

One JSON object per line on stderr: ``ts``, ``level``, ``logger``, ``msg``, the
request's method/path/actor when there is one, and any ``extra={...}`` fields.
Each request adds one ``request`` line (status, duration).  Fields whose name
says they hold a secret (password, token, secret, authorization, cookie) are
replaced by ``[redacted]`` whatever the caller passed, and query strings are
never logged, so a careless ``extra=`` cannot leak credentials into the log.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import datetime, timezone
from typing import IO, Any

from flask import Flask, Response, g, has_request_context, request

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|authorization|cookie|api[_-]?key|credential",
                         re.IGNORECASE)
REDACTED = "[redacted]"
# Loggers that get Plan B's handler: our own, Flask's app logger (unhandled exceptions).
LOGGER_NAMES = ("planb", "inventory", "collectors")


def _redact(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact(str(k), v) for k, v in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if has_request_context():
            payload["method"] = request.method
            payload["path"] = request.path
            principal = g.get("principal")
            if principal is not None:
                payload["actor"] = principal.name
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = _redact(key, value)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure(level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None) -> logging.Handler:
    if fmt not in ("json", "text"):  # PLANB_LOG_FORMAT is checked at start-up; this is a caller's slip
        raise ValueError(f"log format must be 'json' or 'text', not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    return handler


_request_log = logging.getLogger("planb.request")
# Probes and scrapes: logged at DEBUG.
QUIET_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "metrics.metrics_view", "static"})


def init_app(app: Flask) -> None:
    configure(app.config.get("LOG_LEVEL", "INFO"), app.config.get("LOG_FORMAT", "json"))

    @app.before_request
    def _start_timer() -> None:
        g._planb_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        started = g.get("_planb_started")
        duration_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
        # Probes and scrapes every few seconds would drown the log: DEBUG for them.
        level = logging.DEBUG if request.endpoint in QUIET_ENDPOINTS else logging.INFO
        _request_log.log(level, "request", extra={"status": response.status_code,
                                                  "duration_ms": duration_ms,
                                                  "remote_addr": request.remote_addr})
        return response
