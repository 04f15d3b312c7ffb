"""How fresh and complete an answer's data is, so responders know what it may miss.

For the collection scopes the seed and hit assets came from
(``Asset.source_scope``, matched to ``ScopeResult.scope_key``): the last
successful collection, and every scope whose latest run failed or was partial
(its assets may be missing or out of date).  Assets that came from an estate
import (``source = "import"``) are counted as *manual*: nothing refreshes them.
Version-narrowed scopes also report installations whose version could not be
compared (see ``inventory.impact.scope``), since those hosts were not counted.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import threading

import numpy as np
import sqlalchemy as sa

from inventory.impact.graph import Graph
from inventory.impact.scope import Scope
from inventory.models import ScopeResult

SUCCEEDED = "succeeded"
SAMPLE = 20


def confidence_report(conn_factory: Callable[[], Any], graph: Graph, hit_idx: np.ndarray, seeds: Any,
                      scope: Scope, as_of: datetime | None, stamp: tuple[Any, ...] | None = None, *,
                      scope_counts: np.ndarray) -> dict[str, Any]:
    """``scope_counts``: the hits per collection scope code (``graph.scope_values``), with
    manual (imported) assets counted apart under the last code (``ImpactResult.hits_per_scope``)."""
    involved = hit_idx   # seeds are hits
    n_scopes = len(graph.scope_values)
    counts = scope_counts
    per_scope = {graph.scope_values[c]: int(counts[c]) for c in np.flatnonzero(counts[:n_scopes])
                 if graph.scope_values[c] is not None}
    latest, last_ok = _collection_state(conn_factory, stamp)
    keys = sorted(per_scope)
    scopes = []
    problems = []
    for key in keys:
        status, finished, error = latest.get(key, (None, None, None))
        entry = {"scope": key, "assets": per_scope[key], "last_success": last_ok.get(key),
                 "latest_status": status, "latest_at": finished, "error": error}
        scopes.append(entry)
        if status is None or status != SUCCEEDED:
            problems.append(entry)
    n_manual = int(counts[n_scopes])
    manual = involved[graph.is_manual[involved]][:SAMPLE] if n_manual else involved[:0]
    none_code = _none_code(graph)
    n_unscoped = int(counts[none_code]) if none_code >= 0 else 0
    successes = [last_ok[k] for k in keys if k in last_ok]
    notes = []
    if problems:
        notes.append(f"{len(problems)} collection scope(s) have no successful latest run: "
                     "their assets may be missing or out of date")
    if n_manual:
        notes.append(f"{n_manual} asset(s) come from manual imports and are not refreshed by collectors")
    unversioned = seeds.unversioned
    if unversioned.size:
        notes.append(f"{unversioned.size} asset(s) run {scope.vendor} software whose version could not "
                     f"be compared with {scope.version!r}; they are not counted — check them by hand")
    unconfirmed = np.empty(0, dtype=np.int64)
    if as_of is not None:
        unconfirmed = _unconfirmed_at(conn_factory, graph, involved, as_of)
        notes.append("as-of answers use first-seen/retired-at history; versions, dependencies and plans "
                     "are as currently recorded (rows deleted since are not known)")
        if unconfirmed.size:
            notes.append(f"{unconfirmed.size} hit asset(s) had not been seen since before {as_of.isoformat()}: "
                         "they may already have been gone then")
    return {
        "scopes": scopes,
        "incomplete_scopes": [p["scope"] for p in problems],
        "oldest_last_success": min(successes) if successes else None,
        "newest_last_success": max(successes) if successes else None,
        "manual_assets": n_manual,
        "manual_sample": [graph.natural_key[i] for i in manual.tolist()],
        "unscoped_assets": n_unscoped,
        "unversioned_installations": {"count": int(unversioned.size),
                                      "sample": [graph.natural_key[i] for i in unversioned[:SAMPLE]]},
        "unconfirmed_at_as_of": {"count": int(unconfirmed.size),
                                 "sample": [graph.natural_key[i] for i in unconfirmed[:SAMPLE].tolist()]},
        "notes": notes,
    }


def _unconfirmed_at(conn_factory: Callable[[], Any], graph: Graph, involved: np.ndarray,
                    as_of: datetime) -> np.ndarray:
    """Hit assets whose ``last_seen`` is before ``as_of`` (read fresh: collectors refresh
    ``last_seen`` without invalidating the graph cache)."""
    from inventory.models import Asset

    with conn_factory() as conn:
        ids = np.array(list(conn.execute(sa.select(Asset.id).where(Asset.last_seen < as_of)).scalars()),
                       dtype=np.int64)
    if not ids.size:
        return np.empty(0, dtype=np.int64)
    idx = graph.id_to_idx[ids[ids < graph.id_to_idx.size]]
    stale = np.zeros(graph.n, dtype=bool)
    stale[idx[idx >= 0]] = True
    return involved[stale[involved]]


_state_lock = threading.Lock()
_state: dict[str, tuple[Any, Any]] = {}


def _collection_state(conn_factory: Callable[[], Any], stamp: tuple[Any, ...] | None = None
                      ) -> tuple[dict[str, tuple[str, str, str | None]], dict[str, str]]:
    """Per scope key: the latest result (status, finished ISO time, error) and the time
    of the last success (UTC ISO strings, which sort as time).  Cached per database
    until a scope result is added or removed — collectors only ever insert them — by
    the stamp: count and max id."""
    factory_key = getattr(conn_factory, "__self__", conn_factory)
    key = factory_key.url.render_as_string(hide_password=False) if hasattr(factory_key, "url") else id(factory_key)
    if stamp is not None:
        with _state_lock:
            cached = _state.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]  # type: ignore[no-any-return]
    with conn_factory() as conn:
        with conn.begin():
            stamp = tuple(conn.execute(sa.select(sa.func.count(), sa.func.max(ScopeResult.id))).one())
            with _state_lock:
                cached = _state.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]  # type: ignore[no-any-return]
            newest = sa.select(sa.func.max(ScopeResult.id)).group_by(ScopeResult.scope_key)
            latest = {k: (status, _iso(_aware(finished)), error) for k, status, finished, error in conn.execute(
                sa.select(ScopeResult.scope_key, ScopeResult.status, ScopeResult.finished_at,
                          ScopeResult.error).where(ScopeResult.id.in_(newest)))}
            last_ok = {k: _iso(_aware(finished)) for k, finished in conn.execute(
                sa.select(ScopeResult.scope_key, sa.func.max(ScopeResult.finished_at))
                .where(ScopeResult.status == SUCCEEDED).group_by(ScopeResult.scope_key))}
    with _state_lock:
        _state[key] = (stamp, (latest, last_ok))
    return latest, last_ok


def clear_state() -> None:
    with _state_lock:
        _state.clear()


def _none_code(graph: Graph) -> int:
    try:
        return graph.scope_values.index(None)
    except ValueError:
        return -1


def _aware(value: Any) -> datetime:
    if isinstance(value, str):   # SQLite aggregate results skip the column type
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        from datetime import timezone
        value = value.replace(tzinfo=timezone.utc)
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
