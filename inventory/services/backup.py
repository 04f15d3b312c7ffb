"""Backups and restores that are consistent while the service keeps running.

Two formats:

* **SQLite file** (default for SQLite databases): SQLite's online backup API
  copies the database page by page from one read snapshot (WAL mode: writers
  carry on meanwhile), into a temporary file that is integrity-checked and then
  renamed into place.  Restoring copies it back with the same API.
* **Plan B logical backup** (``.jsonl`` / ``.jsonl.gz``; any database, and the
  way to move between SQLite and PostgreSQL): every table's rows, read in one
  snapshot transaction (REPEATABLE READ on PostgreSQL), as JSON lines with the
  schema revision in the header.  Unlike the estate export (an interchange
  format for the inventory), a backup holds *everything*: users (password
  hashes), API tokens (HMACs only), the audit trail, plans and their events,
  update tests, assessments, runs and incidents.

Backups therefore contain credentials' hashes: files are created mode 0600.  API
tokens only work again with the same ``SECRET_KEY`` / ``TOKEN_HMAC_KEY``; keep the
instance's ``secret_key`` file with the backups (or re-issue tokens).

A restore refuses to overwrite a database that holds data unless ``force`` is
given, runs in one transaction (a failed restore leaves the database as it was),
and finishes by upgrading the schema to the current head.
"""
from __future__ import annotations

import base64
import gzip
import io
import json
import os
import secrets
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from inventory import migrate
from inventory.db import utcnow, write_session
from inventory.models import Base

FORMAT_NAME = "planb-backup"
FORMAT_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
BATCH = 1000
# Bookkeeping rows the target keeps (migration-seeded, bumped after a restore), not data; the
# impact graph's change log (migration 0006) is rebuilt from nothing after a restore.
MACHINERY_TABLES = frozenset({"inventory_version", "inventory_changes"})


class BackupError(RuntimeError):
    """A backup or restore that cannot be done (the message says why)."""


@dataclass
class BackupResult:
    path: Path
    format: str
    revision: str | None
    row_counts: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- helpers

def data_tables() -> list[sa.Table]:
    """Plan B's tables in foreign-key order (parents first), machinery left out."""
    return [t for t in Base.metadata.sorted_tables if t.name not in MACHINERY_TABLES]


def row_counts(engine: Engine) -> dict[str, int]:
    existing = set(sa.inspect(engine).get_table_names())
    counts = {}
    with engine.connect() as conn:
        for table in data_tables():
            if table.name in existing:
                counts[table.name] = conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0
    return counts


def is_empty(engine: Engine) -> bool:
    """True when no Plan B table holds a row (a new or freshly migrated database)."""
    return not any(row_counts(engine).values())


def default_backup_name(engine: Engine, directory: Path) -> Path:
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    suffix = ".sqlite3" if engine.dialect.name == "sqlite" else ".jsonl.gz"
    return directory / f"planb-{stamp}{suffix}"


def _sqlite_path(engine: Engine) -> Path:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        raise BackupError("the SQLite file format needs a SQLite database file; use a .jsonl backup")
    return Path(database)


def _private_file(path: Path) -> None:
    os.chmod(path, 0o600)


def detect_format(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head == SQLITE_MAGIC:
        return "sqlite"
    if head[:2] == b"\x1f\x8b" or head[:1] == b"{":
        return "jsonl"
    raise BackupError(f"{path} is neither a SQLite database nor a Plan B backup")


def _check_sqlite_file(path: Path) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchall()
        if result != [("ok",)]:
            raise BackupError(f"{path} fails the integrity check: {result[:3]}")
        if conn.execute("PRAGMA foreign_key_check").fetchall():
            raise BackupError(f"{path} has rows whose foreign keys point nowhere")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            raise BackupError(f"{path} is not a Plan B database (no schema revision)")
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} cannot be read as SQLite: {exc}") from exc
    finally:
        conn.close()


# ---------------------------------------------------------------- backup

def backup(engine: Engine, target: Path, fmt: str | None = None) -> BackupResult:
    """Write a consistent backup of the database to ``target`` (format from the name if not given)."""
    if fmt is None:
        fmt = "jsonl" if (".jsonl" in target.name or engine.dialect.name != "sqlite") else "sqlite"
    if fmt not in ("sqlite", "jsonl"):
        raise BackupError(f"unknown backup format {fmt!r} (sqlite or jsonl)")
    revision = migrate.current_revision(engine)
    if revision is None:
        raise BackupError("the database has no Plan B schema yet; nothing to back up")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "sqlite":
            _sqlite_backup(engine, target)
        else:
            counts = _logical_backup(engine, target)
    except OSError as exc:
        # An unwritable or impossible target (a read-only place, a file where a folder
        # should be): the database is only read, so this is all there is to report.
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    if fmt == "sqlite":
        copy = sa.create_engine(f"sqlite:///{target}")
        try:
            return BackupResult(target, "sqlite", revision, row_counts(copy))
        finally:
            copy.dispose()
    return BackupResult(target, "jsonl", revision, counts)


def _sqlite_backup(engine: Engine, target: Path) -> None:
    source_path = _sqlite_path(engine)
    fd, tmp_name = tempfile.mkstemp(prefix=".planb-backup-", suffix=".sqlite3", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _private_file(tmp)
        source = sqlite3.connect(source_path, timeout=30)
        dest = sqlite3.connect(tmp)
        try:
            # pages=-1: the whole database in one step, from one read snapshot.  (Stepwise
            # copies restart whenever another connection writes, and may never finish.)
            source.backup(dest, pages=-1)
            # A self-contained file: no -wal/-shm companions to forget when copying it.
            dest.execute("PRAGMA journal_mode = DELETE")
        finally:
            dest.close()
            source.close()
        _check_sqlite_file(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    return value


def _open_write(path: Path, compress: bool) -> IO[str]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    raw = os.fdopen(fd, "wb")
    if compress:
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw, mode="wb", mtime=0), encoding="utf-8")
    return io.TextIOWrapper(raw, encoding="utf-8")


def _logical_backup(engine: Engine, target: Path) -> dict[str, int]:
    tables = data_tables()
    existing = set(sa.inspect(engine).get_table_names())
    tmp = target.with_name(f".{target.name}.partial")
    counts: dict[str, int] = {}
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                # One snapshot for every table, and no writes by mistake.
                conn.execution_options(isolation_level="REPEATABLE READ")
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            revision = conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            with _open_write(tmp, compress=target.name.endswith(".gz")) as out:
                header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "alembic_revision": revision,
                          "created_at": utcnow().isoformat(), "source_dialect": engine.dialect.name,
                          "tables": [t.name for t in tables if t.name in existing]}
                out.write(json.dumps(header) + "\n")
                for table in tables:
                    if table.name not in existing:
                        continue
                    columns = [c.name for c in table.columns]
                    rows = conn.execute(sa.select(*table.columns).order_by(*table.primary_key.columns))
                    count = 0
                    buffered: list[str] = []
                    for row in rows:
                        buffered.append(json.dumps([_encode(v) for v in row], ensure_ascii=False))
                        count += 1
                    out.write(json.dumps({"table": table.name, "columns": columns, "rows": count}) + "\n")
                    for line in buffered:
                        out.write(line + "\n")
                    counts[table.name] = count
            conn.rollback()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written .partial file left behind
        raise
    return counts


# ---------------------------------------------------------------- restore

def restore(database_url: str, source: Path, *, force: bool = False) -> BackupResult:
    """Restore ``source`` into the database at ``database_url``.

    Refuses when the database already holds data unless ``force``; the data then
    present is replaced, in one transaction.
    """
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    fmt = detect_format(source)
    from inventory.db import make_engine
    engine = make_engine(database_url)
    try:
        has_schema = migrate.current_revision(engine) is not None
        if has_schema and not force and not is_empty(engine):
            raise BackupError("the database already holds data; restoring would replace it "
                              "(use --force to do that)")
        if fmt == "sqlite":
            _check_sqlite_file(source)
            revision = _sqlite_restore(engine, source)
        else:
            revision = _logical_restore(engine, database_url, source, has_schema)
        engine.dispose()
        migrate.upgrade(database_url, "head")
        _bump_inventory_version(engine)
        return BackupResult(source, fmt, revision, row_counts(engine))
    finally:
        engine.dispose()


def _sqlite_restore(engine: Engine, source: Path) -> str | None:
    target_path = _sqlite_path(engine)
    engine.dispose()
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dest = sqlite3.connect(target_path, timeout=30)
    try:
        revision = src.execute("SELECT version_num FROM alembic_version").fetchone()
        # The backup API replaces the target's pages under its write lock: other
        # connections see the old database or the restored one, never a mixture.
        src.backup(dest, pages=-1)
        dest.execute("PRAGMA journal_mode = WAL")
    finally:
        dest.close()
        src.close()
    return revision[0] if revision else None


def _read_lines(path: Path) -> Iterator[str]:
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        yield from fh


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _decoder(column: sa.Column) -> Any:
    kind = column.type
    kind = getattr(kind, "impl_instance", None) or getattr(kind, "impl", kind)  # TypeDecorators
    python_type: type | None
    if isinstance(kind, sa.DateTime):
        python_type = datetime
    elif isinstance(kind, sa.Date):
        python_type = date
    elif isinstance(kind, sa.Numeric) and kind.asdecimal:
        python_type = Decimal
    else:
        python_type = None

    def decode(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, dict) and set(value) == {"$b64"}:
            return base64.b64decode(value["$b64"])
        if python_type is datetime and isinstance(value, str):
            return datetime.fromisoformat(value)
        if python_type is date and isinstance(value, str):
            return date.fromisoformat(value)
        if python_type is Decimal and isinstance(value, str):
            return Decimal(value)
        return value

    return decode


def _logical_restore(engine: Engine, database_url: str, source: Path, has_schema: bool) -> str | None:
    lines = _read_lines(source)
    try:
        header = json.loads(next(lines))
    except (StopIteration, json.JSONDecodeError) as exc:
        raise BackupError(f"{source} is not a Plan B backup (bad header)") from exc
    if header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
        raise BackupError(f"{source} is not a Plan B backup of format version {FORMAT_VERSION}")
    revision = header.get("alembic_revision")
    head = migrate.head_revision()
    if not has_schema:
        # A new database: build the schema the backup was taken with, load, then upgrade.
        migrate.upgrade(database_url, revision or "head")
    elif migrate.current_revision(engine) != revision:
        raise BackupError(f"the backup is at schema revision {revision} but this database is at "
                          f"{migrate.current_revision(engine)}; restore into an empty database "
                          f"(it is upgraded to {head} afterwards)")
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    with write_session(engine) as db:
        conn = db.connection()
        for table in reversed(data_tables()):
            conn.execute(table.delete())
        table: sa.Table | None = None
        decoders: list[Any] = []
        columns: list[str] = []
        batch: list[dict[str, Any]] = []
        expected = 0
        loaded = 0

        def flush() -> None:
            if table is not None and batch:
                conn.execute(table.insert(), batch)
                batch.clear()

        for line_no, line in enumerate(lines, start=2):
            item = json.loads(line)
            if isinstance(item, dict):
                flush()
                if table is not None and loaded != expected:
                    raise BackupError(f"{source}: table {table.name} is truncated")
                if item.get("table") not in tables:
                    raise BackupError(f"{source}:{line_no}: unknown table {item.get('table')!r}")
                table = tables[item["table"]]
                columns = item["columns"]
                unknown = [c for c in columns if c not in table.columns]
                if unknown:
                    raise BackupError(f"{source}:{line_no}: {table.name} has no columns {unknown}")
                decoders = [_decoder(table.columns[c]) for c in columns]
                expected, loaded = int(item["rows"]), 0
                continue
            if table is None:
                raise BackupError(f"{source}:{line_no}: row before any table header")
            batch.append({c: d(v) for c, d, v in zip(columns, decoders, item)})
            loaded += 1
            if len(batch) >= BATCH:
                flush()
        flush()
        if table is not None and loaded != expected:
            raise BackupError(f"{source}: table {table.name} is truncated")
        if engine.dialect.name == "postgresql":
            _reset_sequences(conn)
    return revision


def _reset_sequences(conn: sa.Connection) -> None:
    """Explicit ids were inserted: move each id sequence past the largest one."""
    for table in data_tables():
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, sa.Integer):
            continue
        sequence = conn.scalar(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                               {"t": table.name, "c": pk[0].name})
        if sequence:
            conn.execute(sa.text(f"SELECT setval(:s, COALESCE((SELECT MAX({pk[0].name}) FROM {table.name}), 0) + 1, false)"),
                         {"s": sequence})


def _bump_inventory_version(engine: Engine) -> None:
    # Processes caching the inventory (the impact engine) must notice the restore
    # even if the restored counter happens to equal one they have seen.
    if "inventory_version" not in sa.inspect(engine).get_table_names():
        return
    with write_session(engine) as db:
        db.execute(sa.text("UPDATE inventory_version SET version = version + :n"),
                   {"n": secrets.randbits(32) + 1})
