"""A tiny per-process cache for dashboard aggregates, invalidated by the inventory version.

Aggregates over the whole estate (assets per vendor, counts by provider/OS)
cost a full scan of large tables — fine once, too slow on every page load at
100k assets.  The ``inventory_version`` row is bumped by database triggers on
every write to the inventory graph (any process, any code path), so a cached
value is reused only while that number is unchanged: never stale, one
primary-key read per use.  Without that table (older schema) nothing is cached.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, TypeVar

import sqlalchemy as sa
import sqlalchemy.orm as so

T = TypeVar("T")
MAX_ENTRIES = 64

_lock = threading.Lock()
_entries: "OrderedDict[tuple[str, str], tuple[Any, Any]]" = OrderedDict()


def data_version(db: so.Session) -> Any | None:
    """The inventory's change counter, or None when this schema has none."""
    try:
        from inventory.models import InventoryVersion  # type: ignore[attr-defined]
    except ImportError:
        return None
    version = db.scalar(sa.select(InventoryVersion.version).where(InventoryVersion.id == 1))
    return -1 if version is None else version


def _database_key(db: so.Session) -> str:
    bind = db.get_bind()
    return bind.url.render_as_string(hide_password=True)


def cached(db: so.Session, key: str, compute: Callable[[], T], ttl: float | None = None) -> T:
    """``compute()``, reused while the inventory version is unchanged (and, with ``ttl``,
    for at most that many seconds — for values that also depend on the clock)."""
    version = data_version(db)
    if version is None:
        return compute()
    if ttl is not None:
        version = (version, int(time.monotonic() // ttl))
    cache_key = (_database_key(db), key)
    with _lock:
        hit = _entries.get(cache_key)
        if hit is not None and hit[0] == version:
            _entries.move_to_end(cache_key)
            return hit[1]  # type: ignore[no-any-return]
    value = compute()
    with _lock:
        _entries[cache_key] = (version, value)
        _entries.move_to_end(cache_key)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value


def clear() -> None:
    with _lock:
        _entries.clear()
