"""Estate-wide page figures computed once per inventory version for every process.

Each gunicorn worker (and each restarted pod) used to compute the risk table, plan
coverage, recovery-target check and update-testing figures itself on its first view
after a start or a write.  ``shared`` keeps them, as JSON, in the ``page_figures``
table (migration 0007) with the inventory version and a *mark* — whatever else the
figure depends on (the audit mark, the day, a plan signature): a process that has
not computed a figure reads it there when it holds for the current version and
mark, and whoever computes it first writes it.

Never stale: a stored figure is used only for exactly the version the impact
engine's graph holds and the session reads (``estate_graph.session_graph``), and
only when its JSON form reads back equal to the value (otherwise it is not stored).
Without a current graph (uncommitted writes in the session, an unmigrated database)
the per-process cache of ``inventory.services.cache`` is used as before.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, TypeVar

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import utcnow
from inventory.services import cache

T = TypeVar("T")
log = logging.getLogger(__name__)
TABLE = "page_figures"


def shared(db: so.Session, name: str, mark: str, compute: Callable[[], T]) -> T:
    """``compute()`` for the current inventory version and ``mark``: from this process's
    graph, else from the ``page_figures`` table, else computed (and stored for the others).
    Shared between requests: callers must not mutate the result."""
    from inventory.services.estate_graph import on_graph, session_graph

    graph = session_graph(db)
    if graph is None:
        return cache.cached(db, f"{name}:{mark}", compute)
    return on_graph(graph, f"shared:{name}:{mark}",
                    lambda: _read_or_compute(db, int(graph.version), name, mark, compute))


def _read_or_compute(db: so.Session, version: int, name: str, mark: str, compute: Callable[[], T]) -> T:
    stored = _read(db, name)
    if stored is not None and stored[0] == version and stored[1] == mark:
        try:
            return json.loads(stored[2])  # type: ignore[no-any-return]
        except ValueError:
            log.warning("page figure %s: unreadable stored value, computing it", name)
    value = compute()
    _store(db, name, version, mark, value)
    return value


def _read(db: so.Session, name: str) -> tuple[int, str, str] | None:
    from inventory.models import PageFigure

    if _in_memory(db):
        return None
    try:
        with db.get_bind().connect() as conn:
            row = conn.execute(sa.select(PageFigure.inventory_version, PageFigure.mark, PageFigure.payload)
                               .where(PageFigure.name == name)).first()
    except sa.exc.DBAPIError:
        return None   # no such table (an older schema): compute, as before
    return None if row is None else (int(row[0]), str(row[1]), str(row[2]))


def _in_memory(db: so.Session) -> bool:
    """An in-memory SQLite database has one connection: nothing to share, nowhere to write."""
    url = db.get_bind().url
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


_PENDING = "planb_pending_figures"


def _store(db: so.Session, name: str, version: int, mark: str, value: Any) -> None:
    """Best effort, on a connection of its own once the session's transaction has ended: a
    SQLite session that read and then writes cannot commit after another connection wrote
    in between ("database is locked"), so the caller's transaction is left alone."""
    if _in_memory(db):
        return
    try:
        payload = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return
    if json.loads(payload) != value:
        return   # tuples, non-string keys, dates…: it would not read back the same
    if db.in_transaction():
        db.info.setdefault(_PENDING, []).append((db.get_bind(), name, version, mark, payload))
    else:
        _write(db.get_bind(), name, version, mark, payload)


@sa.event.listens_for(so.Session, "after_transaction_end")
def _store_pending(session: so.Session, transaction: Any) -> None:
    if transaction.parent is None and session.info.get(_PENDING):
        for bind, name, version, mark, payload in session.info.pop(_PENDING):
            _write(bind, name, version, mark, payload)


def _write(bind: Any, name: str, version: int, mark: str, payload: str) -> None:
    from inventory.models import PageFigure

    try:
        with bind.connect() as conn, conn.begin():
            values = {"inventory_version": version, "mark": mark, "payload": payload, "computed_at": utcnow()}
            updated = conn.execute(sa.update(PageFigure).where(PageFigure.name == name,
                                                               PageFigure.inventory_version <= version)
                                   .values(**values)).rowcount
            if not updated and conn.execute(sa.select(PageFigure.name).where(PageFigure.name == name)).first() is None:
                conn.execute(sa.insert(PageFigure).values(name=name, **values))
    except sa.exc.DBAPIError as exc:   # a concurrent writer, a locked SQLite file: the next view computes
        log.info("page figure %s not stored: %s", name, exc.__class__.__name__)
