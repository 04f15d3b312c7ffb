"""Dashboard aggregates read from the impact engine's graph instead of scanning the database.

The risk, plans, update-testing and vendor pages aggregate over every asset,
installation and dependency.  Scanning those tables (1.5 M rows at 100k assets)
cost seconds on each worker's first view after a start or a write.  The impact
engine already holds the same rows as arrays, kept current from the change log
and mapped from a snapshot file by a fresh process (``docs/explanation/engine.md``),
so the pages derive their figures from it: array operations over a graph that is
never rebuilt from scratch for a small write.

A graph is used only when it holds exactly what the caller's session sees: the
same inventory version, and no pending or flushed-but-uncommitted writes in the
session (``session_graph``).  Otherwise the callers compute from the database as
before, so a figure never differs from a from-scratch computation (tests in
``tests/services/test_page_aggregates.py``).  Figures derived from a graph are kept
on it (``Graph.lazy``) and dropped with it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import CRITICALITIES

if TYPE_CHECKING:  # the engine's graph; imported lazily (it pulls NumPy-heavy modules)
    from inventory.impact.graph import Graph

T = TypeVar("T")
CRITICAL = CRITICALITIES.index("critical")


def session_graph(db: so.Session) -> "Graph | None":
    """The engine's graph when it is exactly the inventory this session reads, else None."""
    from inventory.services.cache import data_version

    if db.new or db.dirty or db.deleted:
        return None
    version = data_version(db)
    if version is None or version == -1:
        return None
    if db.in_transaction() and _session_wrote(db):
        return None
    from inventory.impact import get_graph

    graph = get_graph(db)
    return graph if graph.version == version else None


def _session_wrote(db: so.Session) -> bool:
    """Whether this session's transaction has flushed writes (they are not in the graph)."""
    return bool(db.info.get(_FLUSHED))


_FLUSHED = "planb_pages_flushed"


@sa.event.listens_for(so.Session, "after_flush")
def _note_flush(session: so.Session, _context: Any) -> None:
    session.info[_FLUSHED] = True


@sa.event.listens_for(so.Session, "after_transaction_end")
def _forget_flush(session: so.Session, transaction: Any) -> None:
    if transaction.parent is None:  # the outermost transaction ended (commit or rollback)
        session.info.pop(_FLUSHED, None)


def on_graph(graph: "Graph", key: str, build: Callable[[], T]) -> T:
    """``build()`` kept on the graph (so per inventory version, shared by every request)."""
    return graph.lazy(f"pages:{key}", build)  # type: ignore[no-any-return]


def live_installs(graph: "Graph") -> dict[int, list[tuple[str | None, np.ndarray]]]:
    """product id -> [(version, indices of the live assets running it)] (empty groups dropped)."""
    def build() -> dict[int, list[tuple[str | None, np.ndarray]]]:
        alive = graph.alive_now
        out: dict[int, list[tuple[str | None, np.ndarray]]] = {}
        for product_id, groups in graph.installs.items():
            kept = []
            for version, idx in groups:
                live = idx[alive[idx]]
                if live.size:
                    kept.append((version, live))
            if kept:
                out[product_id] = kept
        return out
    return on_graph(graph, "live_installs", build)


UNKNOWN_CRIT = len(CRITICALITIES)   # the graph's code for a criticality outside CRITICALITIES


def crit_labels(graph: "Graph", db: so.Session) -> np.ndarray:
    """Every asset's criticality as stored (object array of n).  The graph codes a value
    outside CRITICALITIES as one "unknown" code; those few assets' values are read back."""
    def build() -> np.ndarray:
        names = np.array([*CRITICALITIES, None], dtype=object)
        labels = names[np.minimum(graph.crit_code.astype(np.int64), UNKNOWN_CRIT)]
        odd = np.flatnonzero(graph.crit_code == UNKNOWN_CRIT)
        if odd.size:
            from inventory.models import Asset

            stored = dict(db.execute(sa.select(Asset.id, Asset.criticality)
                                     .where(Asset.criticality.not_in(CRITICALITIES))).all())
            labels[odd] = [stored.get(int(i)) for i in graph.ids[odd].tolist()]
        return labels
    return on_graph(graph, "crit_labels", build)


def crit_names(graph: "Graph", idx: np.ndarray, db: so.Session) -> np.ndarray:
    """The criticality of assets ``idx`` as stored."""
    return crit_labels(graph, db)[idx]  # type: ignore[no-any-return]


def crit_counts(graph: "Graph", idx: np.ndarray, db: so.Session) -> dict[Any, int]:
    """How many of assets ``idx`` have each criticality (as stored), in CRITICALITIES order
    and then the other values."""
    per_code = np.bincount(np.minimum(graph.crit_code[idx].astype(np.int64), UNKNOWN_CRIT),
                           minlength=UNKNOWN_CRIT + 1)
    out: dict[Any, int] = {CRITICALITIES[c]: int(per_code[c]) for c in range(UNKNOWN_CRIT) if per_code[c]}
    if per_code[UNKNOWN_CRIT]:
        odd = idx[graph.crit_code[idx] == UNKNOWN_CRIT]
        for label in crit_labels(graph, db)[odd].tolist():
            out[label] = out.get(label, 0) + 1
    return out


def version_counts(graph: "Graph") -> dict[tuple[int, str | None], tuple[int, int, np.ndarray]]:
    """(product id, version) -> (live installations, on critical assets, count per criticality code)."""
    def build() -> dict[tuple[int, str | None], tuple[int, int, np.ndarray]]:
        out = {}
        width = len(CRITICALITIES) + 1
        for product_id, groups in live_installs(graph).items():
            for version, idx in groups:
                per_crit = np.bincount(graph.crit_code[idx], minlength=width)
                out[(product_id, version)] = (int(idx.size), int(per_crit[CRITICAL]), per_crit)
        return out
    return on_graph(graph, "version_counts", build)


def vendor_assets(graph: "Graph", vendor_id: int) -> np.ndarray:
    """Sorted indices of the live assets running any product of the vendor."""
    parts = [idx for pid in graph.vendor_products.get(vendor_id, ())
             for _v, idx in live_installs(graph).get(pid, ())]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def hosted_assets(graph: "Graph", provider: str) -> np.ndarray:
    """Indices of the live assets hosted on ``provider``."""
    if provider not in graph.providers:
        return np.zeros(0, dtype=np.int64)
    code = graph.providers.index(provider)
    return np.flatnonzero((graph.provider_code == code) & graph.alive_now)


def as_plain(value: Any) -> Any:
    """NumPy scalars to Python ones (figures end up in JSON exports and templates)."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------- vendors

def direct_use_counts(graph: "Graph") -> dict[int, tuple[int, int]]:
    """vendor id -> (live assets running its software or hosted on its cloud, critical ones);
    vendors with none are left out (``vendor_summary._direct_use_counts``)."""
    def build() -> dict[int, tuple[int, int]]:
        crit = graph.crit_code == CRITICAL
        counts: dict[int, tuple[int, int]] = {}
        installs = live_installs(graph)
        # Distinct assets per vendor in linear time: each asset slot remembers the last
        # position that wrote it, so exactly one occurrence of each asset keeps its own.
        slot = np.zeros(graph.n, dtype=np.int64)
        for vendor_id in graph.vendors:
            parts = [idx for pid in graph.vendor_products.get(vendor_id, ()) for _v, idx in installs.get(pid, ())]
            if not parts:
                continue
            idx = parts[0] if len(parts) == 1 else np.concatenate(parts)
            if len(parts) > 1:
                positions = np.arange(idx.size)
                slot[idx] = positions
                idx = idx[slot[idx] == positions]
            counts[vendor_id] = (int(idx.size), int(np.count_nonzero(crit[idx])))
        for vendor_id, vendor in graph.vendors.items():
            if vendor.cloud_provider:
                idx = hosted_assets(graph, vendor.cloud_provider)
                if idx.size:
                    old = counts.get(vendor_id, (0, 0))
                    counts[vendor_id] = (max(old[0], int(idx.size)), max(old[1], int(crit[idx].sum())))
        return counts
    return on_graph(graph, "direct_use", build)


def critical_total(graph: "Graph") -> int:
    return on_graph(graph, "critical_total",
                    lambda: int(((graph.crit_code == CRITICAL) & graph.alive_now).sum()))


def product_version_counts(graph: "Graph", product_id: int) -> list[tuple[str | None, int]]:
    """(version, live installations) of one product, versions with none left out."""
    return [(version, int(idx.size)) for version, idx in live_installs(graph).get(product_id, ())]


# ---------------------------------------------------------------- untested exposure

def untested_pairs(graph: "Graph", tested: set[tuple[int, str]], *, criticality: str | None = None,
                   vendor_id: int | None = None, product_id: int | None = None,
                   product_ids: set[int] | None = None) -> list[tuple[int, np.ndarray]]:
    """(product id, live asset indices) of the installations on untested versions (a version
    is tested when ``(product id, version)`` is in ``tested``; no version is never tested)."""
    crit_code = None if criticality is None else (
        CRITICALITIES.index(criticality) if criticality in CRITICALITIES else len(CRITICALITIES))
    out = []
    for pid, groups in live_installs(graph).items():
        if product_id is not None and pid != product_id:
            continue
        if product_ids is not None and pid not in product_ids:
            continue
        if vendor_id is not None and graph.products[pid].vendor_id != vendor_id:
            continue
        parts = [idx for version, idx in groups if version is None or (pid, version) not in tested]
        if not parts:
            continue
        idx = np.concatenate(parts)
        if crit_code is not None:
            idx = idx[graph.crit_code[idx] == crit_code]
        if idx.size:
            out.append((pid, idx))
    return out


def untested_ranked(graph: "Graph", tested: set[tuple[int, str]], limit: int | None, *,
                    criticality: str | None = None, vendor_id: int | None = None,
                    product_id: int | None = None,
                    product_ids: set[int] | None = None) -> list[tuple[int, int, str | None]]:
    """The first ``limit`` untested (asset index, product id, version) in the order
    ``updates.untested_exposure`` lists them: criticality rank, vendor name, product name,
    asset name, asset id.  Whole (criticality, vendor, product) blocks are skipped once
    ``limit`` rows are known, so only the blocks shown have their assets sorted by name."""
    pairs = untested_pairs(graph, tested, criticality=criticality, vendor_id=vendor_id,
                           product_id=product_id, product_ids=product_ids)
    blocks = []
    for pid, idx in pairs:
        codes = np.minimum(graph.crit_code[idx].astype(np.int64), len(CRITICALITIES))
        product = graph.products[pid]
        vendor_name = graph.vendors[product.vendor_id].name
        for code in np.unique(codes).tolist():
            blocks.append(((code, vendor_name, product.name, pid), idx[codes == code]))
    blocks.sort(key=lambda b: b[0])
    out: list[tuple[int, int, str | None]] = []
    versions = {}
    for (code, _vn, _pn, pid), idx in blocks:
        if limit is not None and len(out) >= limit:
            break
        if pid not in versions:
            versions[pid] = {int(i): v for v, group in graph.installs.get(pid, ()) for i in group.tolist()}
        ids = graph.ids[idx]
        names = graph.name.take(idx.tolist())
        order = sorted(range(idx.size), key=lambda k: (names[k], int(ids[k])))
        for k in order:
            i = int(idx[k])
            out.append((i, pid, versions[pid].get(i)))
            if limit is not None and len(out) >= limit:
                break
    return out
