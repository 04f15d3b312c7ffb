"""How fresh and complete an answer's data is, so responders know what it may miss.

For the collection scopes the seed and hit assets came from (``Asset.source_scope``,
matched to the scope's latest state, ``ScopeState``): the last successful collection,
and every scope whose latest run failed or was partial (its assets may be missing or out
of date).  Assets whose software the latest collection of their scope could not read
(SSM inventory or VM extensions failing, a scale set's instances not listed) are named:
their software is unconfirmed, so an outage of a software vendor may hit them unseen.
Assets that came from an estate import (``source = "import"``) are counted as *manual*:
nothing refreshes them.  Version-narrowed scopes also report installations whose version
could not be compared (see ``inventory.impact.scope``), since those hosts were not counted.

The scope states are cached per database and refreshed incrementally: every write of a
state takes a higher ``revision``, so only states newer than the cached revision are read
again (a fleet of 100,000 one-host scopes is not re-read after every collection group).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import sqlalchemy as sa

from inventory.impact.graph import Graph
from inventory.impact.scope import Scope
from inventory.models import ScopeState

SUCCEEDED = "succeeded"
SAMPLE = 20
# Entries listed under "scopes" (those that did not succeed first); "scopes_total" counts all.
SCOPES_LISTED = 500


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
    state = _collection_state(conn_factory, stamp)
    keys = sorted(per_scope)
    problems: list[dict[str, Any]] = []
    fine: list[str] = []
    oldest = newest = None
    for key in keys:
        latest = state.latest.get(key)
        success = latest[3] if latest else None
        if success is not None:
            oldest = success if oldest is None or success < oldest else oldest
            newest = success if newest is None or success > newest else newest
        if latest is None or latest[0] != SUCCEEDED:
            problems.append(_entry(key, per_scope[key], latest))
        elif len(fine) < SCOPES_LISTED:
            fine.append(key)
    scopes = sorted(problems[:SCOPES_LISTED] + [_entry(k, per_scope[k], state.latest.get(k))
                                                for k in fine[:max(0, SCOPES_LISTED - len(problems))]],
                    key=lambda e: e["scope"])
    n_manual = int(counts[n_scopes])
    manual = involved[graph.is_manual[involved]][:SAMPLE] if n_manual else involved[:0]
    none_code = _none_code(graph)
    n_unscoped = int(counts[none_code]) if none_code >= 0 else 0
    notes = []
    if problems:
        notes.append(f"{len(problems)} collection scope(s) have no successful latest run: "
                     "their assets may be missing or out of date")
    unread = _software_unconfirmed(state, graph, involved)
    if unread["count"]:
        hit = f", {unread['hits']} of them among the assets hit" if unread["hits"] else ""
        notes.append(f"{unread['count']} asset(s) had their software left unconfirmed by the latest collection "
                     f"of their scope (its inventory could not be read{hit}): they may run software this "
                     f"answer does not count — check by hand: {', '.join(unread['sample'][:5])}")
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
        "scopes_total": len(keys),
        "incomplete_scopes": [p["scope"] for p in problems],
        "oldest_last_success": _iso(oldest),
        "newest_last_success": _iso(newest),
        "manual_assets": n_manual,
        "manual_sample": [graph.natural_key[i] for i in manual.tolist()],
        "unscoped_assets": n_unscoped,
        "unversioned_installations": {"count": int(unversioned.size),
                                      "sample": [graph.natural_key[i] for i in unversioned[:SAMPLE]]},
        "software_unconfirmed": unread,
        "unconfirmed_at_as_of": {"count": int(unconfirmed.size),
                                 "sample": [graph.natural_key[i] for i in unconfirmed[:SAMPLE].tolist()]},
        "notes": notes,
    }


def _entry(key: str, assets: int, latest: tuple[Any, ...] | None) -> dict[str, Any]:
    status, finished, error, success = latest if latest else (None, None, None, None)
    return {"scope": key, "assets": assets, "last_success": _iso(success), "latest_status": status,
            "latest_at": _iso(finished), "error": error}


def _software_unconfirmed(state: _State, graph: Graph, involved: np.ndarray) -> dict[str, Any]:
    """Assets whose software the latest collection of their scope did not read (every scope,
    not only the hit ones: such an asset may run the outage's software unrecorded)."""
    keys = sorted({k for unread in state.unread.values() for k in unread})
    hits: list[str] = []
    if keys:
        wanted = set(keys)
        hits = sorted(k for k in (graph.natural_key[i] for i in involved.tolist()) if k in wanted)
    return {"count": len(keys), "sample": keys[:SAMPLE], "hits": len(hits), "hit_sample": hits[:SAMPLE]}


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


@dataclass
class _State:
    """Per scope: (status, finished, error, last success) of its latest state; the natural
    keys whose software its latest collection left unread; the highest revision read."""

    revision: int = -1
    latest: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    unread: dict[str, list[str]] = field(default_factory=dict)


_state_lock = threading.Lock()
_state: dict[Any, _State] = {}


def _collection_state(conn_factory: Callable[[], Any], stamp: tuple[Any, ...] | None = None) -> _State:
    """The scope states, cached per database.  ``stamp`` (from the graph's probe) is the
    highest ``ScopeState.revision``: when it is the cached one nothing is read; when it is
    higher only the newer states are (revisions only grow; lower means another database
    behind the same URL, e.g. a restore: everything is read again)."""
    factory_key = getattr(conn_factory, "__self__", conn_factory)
    key = factory_key.url.render_as_string(hide_password=False) if hasattr(factory_key, "url") else id(factory_key)
    with _state_lock:
        cached = _state.get(key)
    wanted = stamp[0] if stamp is not None else None
    if cached is not None and wanted is not None and (wanted or 0) == cached.revision:
        return cached
    t = ScopeState.__table__
    with conn_factory() as conn:
        with conn.begin():
            revision = conn.scalar(sa.select(sa.func.coalesce(sa.func.max(t.c.revision), 0))) or 0
            if cached is not None and revision == cached.revision:
                return cached
            fresh = cached is None or revision < cached.revision
            state = _State() if fresh else _State(cached.revision, dict(cached.latest), dict(cached.unread))
            query = sa.select(t.c.scope_key, t.c.status, t.c.finished_at, t.c.error, t.c.last_success_at,
                              t.c.software_unread)
            if not fresh:
                query = query.where(t.c.revision > state.revision)
            for scope_key, status, finished, error, success, unread in conn.execute(query):
                state.latest[scope_key] = (status, _aware(finished), error, _aware(success))
                if unread:
                    state.unread[scope_key] = list(unread)
                else:
                    state.unread.pop(scope_key, None)
            state.revision = revision
    with _state_lock:
        _state[key] = state
    return state


def clear_state() -> None:
    with _state_lock:
        _state.clear()


def _none_code(graph: Graph) -> int:
    try:
        return graph.scope_values.index(None)
    except ValueError:
        return -1


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):   # SQLite aggregate results skip the column type
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value  # type: ignore[no-any-return]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
