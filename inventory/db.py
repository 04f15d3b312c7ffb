"""Database plumbing: the declarative base, engines and sessions.

Plain SQLAlchemy 2 (no Flask dependency) so collectors, the CLI and the web
app share one way to reach the database.  SQLite runs in WAL mode with a busy
timeout; write sessions start with ``BEGIN IMMEDIATE`` so a read that later
writes cannot deadlock on the lock upgrade ("database is locked").
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS = 30_000

# NUL bytes (PostgreSQL cannot store them in text) and lone surrogates (not
# encodable as UTF-8; neither driver accepts them).  See inventory.validation.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware UTC timestamp on every backend.

    SQLite has no time zones; values are stored as naive UTC and handed back
    aware, so comparisons never mix naive and aware datetimes.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(so.DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def _install_sqlite_pragmas(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        # SQLite's own lower() folds ASCII only, so "яндекс" would not find "Яндекс" by the
        # case-insensitive name lookups; PostgreSQL's folds all of Unicode.  No index or
        # trigger uses lower(), so replacing it per connection changes lookups only.
        dbapi_conn.create_function("lower", 1, _unicode_lower, deterministic=True)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _clean_value(value: Any) -> Any:
    if type(value) is str and _UNSTORABLE.search(value):
        return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", value)
    return value


def clean_parameters(params: Any) -> Any:
    """One parameter set (mapping or sequence) with NUL bytes dropped and lone surrogates
    replaced; the same object when nothing needed cleaning (the usual case).

    The strings are searched joined, in one regex call: joining cannot create a NUL or
    a surrogate, and bulk writes pass millions of values through here."""
    if isinstance(params, dict):
        values: Any = params.values()
    elif isinstance(params, (list, tuple)):
        values = params
    else:
        return params
    texts = [v for v in values if type(v) is str]
    if not texts or not _UNSTORABLE.search("".join(texts)):
        return params
    if isinstance(params, dict):
        return {k: _clean_value(v) for k, v in params.items()}
    return type(params)(_clean_value(v) for v in params)


def _clean_tree(value: Any) -> Any:
    if isinstance(value, str):
        return _clean_value(value)
    if isinstance(value, dict):
        return {_clean_tree(k): _clean_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_tree(v) for v in value]
    return value


# What NUL and surrogates look like once ``json.dumps`` (ASCII-only) has escaped them.  A
# valid pair (an emoji) or an escaped backslash before "u0000" match too: those values
# just take the slow path, which keeps them as they are.
_ESCAPED_UNSTORABLE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def json_serializer(value: Any) -> str:
    """JSON columns (tags, attributes, audit before/after): the same guard as text.

    JSON escapes NUL and lone surrogates, so both databases would store them, but
    reading them back would break pages (a lone surrogate cannot be sent as UTF-8).
    The value is dumped as it is first and only walked when the dump shows one of them:
    an incident snapshot serialises tens of thousands of nested values."""
    text = json.dumps(value)
    if _ESCAPED_UNSTORABLE.search(text):
        text = json.dumps(_clean_tree(value))
    return text


def _install_text_guard(engine: Engine) -> None:
    """Last line of defence for text the input boundaries did not sanitize: NUL bytes
    are dropped and lone surrogates replaced in every bound parameter, on every
    backend alike, so odd input can never turn into a driver error (a 500)."""

    @sa.event.listens_for(engine, "before_cursor_execute", retval=True)
    def _guard(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
               executemany: bool) -> tuple[str, Any]:
        if not parameters:
            return statement, parameters
        # "insertmanyvalues" batches arrive flagged executemany but as one flat parameter
        # set (a mapping on PostgreSQL, a tuple on SQLite): only a sequence of sets is "many".
        if executemany and isinstance(parameters, (list, tuple)) and \
                isinstance(parameters[0], (dict, list, tuple)):
            # One search over every text of the batch (bulk writes pass millions of values);
            # row by row only when it finds something.
            rows = [p.values() if isinstance(p, dict) else p for p in parameters]
            if not _UNSTORABLE.search("".join([v for row in rows for v in row if type(v) is str])):
                return statement, parameters
            return statement, [clean_parameters(p) for p in parameters]
        return statement, clean_parameters(parameters)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with Plan B's per-backend settings."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        kwargs["connect_args"].setdefault("check_same_thread", False)
        kwargs.setdefault("json_serializer", json_serializer)
        engine = sa.create_engine(sa_url, **kwargs)
        _install_sqlite_pragmas(engine)
    else:
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("json_serializer", json_serializer)
        engine = sa.create_engine(sa_url, **kwargs)
    _install_text_guard(engine)
    return engine


def writer_engine(engine: Engine) -> Engine:
    """The same engine (and pool), with SQLite writers taking the lock up front."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


def make_sessionmaker(engine: Engine) -> so.sessionmaker[so.Session]:
    return so.sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def write_session(engine: Engine) -> Iterator[so.Session]:
    """A session for one write transaction: committed on success, rolled back on any error."""
    session = so.Session(bind=writer_engine(engine), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_session(engine: Engine) -> Iterator[so.Session]:
    """A session for reads only: never takes the SQLite write lock, always rolled back."""
    session = so.Session(bind=engine, expire_on_commit=False)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def best_effort_write(engine: Engine, statement: sa.Executable, timeout_ms: int = 250) -> bool:
    """Run one small bookkeeping write (e.g. a token's last-used time) in its own transaction.

    Returns False instead of waiting when the database is busy: on SQLite a collector
    may hold the write lock for seconds, and a *read* request must not queue behind it
    just to update a timestamp.  Never use this for data that matters.
    """
    is_sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn:
            if is_sqlite:
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(timeout_ms)}")
                conn.commit()
            try:
                conn.execution_options(sqlite_begin="IMMEDIATE")
                if not is_sqlite:
                    # PostgreSQL: do not wait on a row lock held by a long transaction either.
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(timeout_ms)}")
                conn.execute(statement)
                conn.commit()
            finally:
                if is_sqlite:
                    conn.rollback()
                    conn.execution_options(sqlite_begin="DEFERRED")
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                    conn.commit()
        return True
    except sa.exc.OperationalError:
        return False
