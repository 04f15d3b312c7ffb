"""Flask glue for the database: one engine per app, one session per request.

Requests that may write (anything but GET/HEAD/OPTIONS) get a session whose
SQLite transaction starts with BEGIN IMMEDIATE; reads never take the write lock.
"""
from __future__ import annotations

import sqlalchemy.orm as so
from flask import Flask, current_app, g, request
from sqlalchemy.engine import Engine

from inventory.db import make_engine, writer_engine

_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


def init_app(app: Flask) -> None:
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["planb_engine"] = engine
    app.teardown_appcontext(_close_session)


def get_engine() -> Engine:
    return current_app.extensions["planb_engine"]


def get_session() -> so.Session:
    """The request's (or CLI command's) session, created on first use."""
    if "db_session" not in g:
        engine = get_engine()
        writes = True
        try:
            writes = request.method not in _READ_METHODS
        except RuntimeError:  # outside a request (CLI): assume a writer
            writes = True
        bind = writer_engine(engine) if writes else engine
        g.db_session = so.Session(bind=bind, expire_on_commit=False)
    return g.db_session


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.rollback()
        session.close()
