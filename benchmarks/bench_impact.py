"""Benchmark the impact engine against scipy and networkx on the same synthetic estate.

    python -m benchmarks.bench_impact --size M            # SQLite (estate cached under benchmarks/.cache/)
    python -m benchmarks.bench_impact --size S --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

In one run, on one estate, for three scopes (the top vendor, a median vendor, a
product + version range on one OS):

* **engine warm** — ``blast_radius`` on the scope dict, as the API calls it (scope
  validation, the inventory-version check, seeds, propagation with groups and soft
  edges, hops, parents, plan coverage, totals, confidence) with the graph cache warm;
  the median of ``--repeat`` runs, wall time;
* **engine propagation** — the traversal alone (``propagate``) from the same seeds;
* **scipy** — ``scipy.sparse.csgraph.breadth_first_order`` from the same seeds
  (a super-source row pointing at them), the practical lower bound for plain
  reachability;
* **networkx** — ``bfs_layers`` from the same seeds over a ``DiGraph`` of the same edges;
* **agreement** — the engine's hit set equals the reachable set of both, and with
  groups disabled its *down* set equals reachability over hard edges;
* **cold** — the first query after a write to assets, to dependencies, to plans (the
  cache reloads the parts that changed), and after the cache was dropped (a full load);
  the whole rebuild is timed (``PLANB_IMPACT_REBUILD_WAIT``'s bounded wait is lifted, so
  no answer comes from the previous graph).

Figures go to stdout as a table and to ``benchmarks/results/impact-<size>-<db>.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import sqlalchemy as sa
import sqlalchemy.orm as so
from scipy.sparse.csgraph import breadth_first_order

from benchmarks.estate_gen import GENERATOR_VERSION, generate_estate
from inventory import migrate
from inventory.db import make_engine
from inventory.impact import blast_radius, clear_cache, get_graph, parse_scope
from inventory.impact import graph as graph_module
from inventory.impact.engine import DOWN, propagate

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
RESULTS = ROOT / "results"


CPU_TIMES: dict[str, float] = {}


def median_time(func: Callable[[], Any], repeat: int, label: str | None = None) -> tuple[float, Any]:
    """Median wall time of ``repeat`` runs (and, under ``label``, the median CPU time of
    this process: a figure other work on a shared machine does not inflate as much)."""
    times, cpus, value = [], [], None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        value = func()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    if label:
        CPU_TIMES[label] = statistics.median(cpus)
    return statistics.median(times), value


# ---------------------------------------------------------------- estates

def schema_tag() -> str:
    """A short hash of the migrations: a cached estate is rebuilt whenever the schema changes."""
    digest = hashlib.sha1()
    for path in sorted((ROOT.parent / "migrations" / "versions").glob("*.py")):
        digest.update(path.read_bytes())
    return f"{migrate.head_revision()}-{digest.hexdigest()[:8]}"


def sqlite_estate(size: str, seed: int) -> tuple[str, dict[str, Any]]:
    """A cached SQLite estate (rebuilt when the generator or the schema changes)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"estate-{size}-seed{seed}-g{GENERATOR_VERSION}-r{schema_tag()}.sqlite3"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return f"sqlite:///{path}", json.loads(meta.read_text())
    for old in CACHE.glob(f"estate-{size}-seed{seed}-*"):
        old.unlink()
    tmp = CACHE / f"building-{uuid.uuid4().hex[:8]}.sqlite3"
    url = f"sqlite:///{tmp}"
    print(f"Generating estate {size} (seed {seed}) into {path.name} ...", file=sys.stderr)
    migrate.upgrade(url, "head")
    engine = make_engine(url)
    try:
        summary = generate_estate(engine, size, seed)
    finally:
        engine.dispose()
    conn = sqlite3.connect(tmp)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("ANALYZE")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    shutil.move(tmp, path)
    meta.write_text(json.dumps(summary, indent=2))
    print(f"  generated in {summary['seconds']} s: {summary['rows']}", file=sys.stderr)
    return f"sqlite:///{path}", summary


def postgres_estate(base_url: str, size: str, seed: int) -> tuple[str, dict[str, Any]]:
    """An estate in its own schema, kept between runs (same naming rule as the SQLite cache)."""
    schema = f"planb_bench_{size.lower()}_s{seed}_g{GENERATOR_VERSION}_r{schema_tag().replace('-', '_')}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    url = sa.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"),
                                  {"s": schema}).scalar()
            if exists:
                summary = conn.execute(sa.text(f'SELECT obj_description(\'"{schema}".assets\'::regclass)')).scalar()
                if summary:
                    return rendered, json.loads(summary)
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        print(f"Generating estate {size} (seed {seed}) into PostgreSQL schema {schema} ...", file=sys.stderr)
        migrate.upgrade(rendered, "head")
        engine = make_engine(rendered)
        try:
            summary = generate_estate(engine, size, seed)
            with engine.begin() as conn:
                text = json.dumps(summary).replace("'", "''")
                conn.execute(sa.text(f"COMMENT ON TABLE assets IS '{text}'"))
        finally:
            engine.dispose()
        return rendered, summary
    finally:
        admin.dispose()


# ---------------------------------------------------------------- comparisons

def scipy_graph(view: Any, n: int, kinds: str = "all") -> sp.csr_matrix:
    """The view's alive edges as a CSR adjacency (dependency -> dependent)."""
    parts = [view.hard, view.soft, view.member] if kinds == "all" else [view.hard, view.member]
    rows = np.concatenate([np.repeat(np.arange(n), np.diff(c.indptr)) for c in parts])
    cols = np.concatenate([c.dst for c in parts])
    return sp.csr_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))


def scipy_reach(adj: sp.csr_matrix, seeds: np.ndarray) -> np.ndarray:
    """breadth_first_order from a super-source whose row points at every seed."""
    n = adj.shape[0]
    indptr = np.concatenate([adj.indptr, [adj.indptr[-1] + seeds.size]])
    indices = np.concatenate([adj.indices, seeds.astype(adj.indices.dtype)])
    data = np.ones(indices.size, dtype=np.int8)
    aug = sp.csr_matrix((data, indices, indptr), shape=(n + 1, n + 1))
    order = breadth_first_order(aug, n, directed=True, return_predecessors=False)
    return order[order != n]


def networkx_graph(view: Any, n: int) -> Any:
    """The view's edges (dependency -> dependent) as a networkx DiGraph with a ``type``
    attribute; where one pair has several edges the strongest wins (hard > member > soft),
    which is what the engine's semantics make of them too."""
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    for csr, kind in ((view.soft, "soft"), (view.member, "member"), (view.hard, "hard")):
        rows = np.repeat(np.arange(n), np.diff(csr.indptr))
        graph.add_edges_from(zip(rows.tolist(), csr.dst.tolist()), type=kind)
    return graph


def networkx_reach(graph: Any, seeds: np.ndarray) -> set[int]:
    """Plain reachability with networkx's own multi-source BFS."""
    import networkx as nx

    reached: set[int] = set()
    for layer in nx.bfs_layers(graph, seeds.tolist()):
        reached.update(layer)
    return reached


def networkx_propagate(graph: Any, seeds: np.ndarray, spare: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
    """The engine's semantics written the obvious way over networkx (statuses and hops):
    what one would write without the engine.  Returns ({node: 2 down | 1 degraded}, {node: hops})."""
    status: dict[int, int] = {}
    dist: dict[int, int] = {}
    for s in seeds.tolist():
        status[s], dist[s] = 2, 0
    down_members: dict[int, int] = {}
    candidates: dict[int, list[int]] = {}
    frontier = seeds.tolist()
    level = 0
    adj = graph.adj
    while frontier:
        level += 1
        nxt = []
        for u in frontier:
            for v, attrs in adj[u].items():
                if status.get(v) == 2:
                    continue
                kind = attrs["type"]
                if kind == "hard":
                    status[v], dist[v] = 2, level
                    nxt.append(v)
                elif kind == "member":
                    down_members[v] = down_members.get(v, 0) + 1
                    if down_members[v] > spare[v]:
                        status[v], dist[v] = 2, level
                        nxt.append(v)
                    else:
                        candidates.setdefault(level, []).append(v)
                else:
                    candidates.setdefault(level, []).append(v)
        frontier = nxt
    level = min(candidates) if candidates else 0
    frontier = []
    while frontier or any(k >= level for k in candidates):
        fresh = []
        for v in frontier + candidates.pop(level, []):
            if v not in status:
                status[v], dist[v] = 1, level
                fresh.append(v)
        level += 1
        frontier = [v for u in fresh for v in adj[u] if v not in status]
    return status, dist


# ---------------------------------------------------------------- the run

# ---------------------------------------------------------------- the run

def bench(url: str, summary: dict[str, Any], repeat: int, with_networkx: bool) -> dict[str, Any]:
    engine = make_engine(url)
    db = so.Session(engine)
    clear_cache()
    out: dict[str, Any] = {"database": engine.dialect.name, "estate": summary, "scopes": []}
    start = time.perf_counter()
    graph = get_graph(db)
    out["first_load_s"] = time.perf_counter() - start
    view = graph.current
    n = graph.n
    out["graph"] = {"assets": n, "alive": int(view.alive.sum()), "edges": int(view.fwd.dst.size),
                    "installations": int(sum(idx.size for groups in graph.installs.values()
                                             for _v, idx in groups))}
    adj_all = scipy_graph(view, n, "all")
    adj_hard = scipy_graph(view, n, "hard")
    start = time.perf_counter()
    nxg = networkx_graph(view, n) if with_networkx else None
    out["networkx_build_s"] = time.perf_counter() - start
    spare = view.n_members + view.extra_members - view.min_up
    scopes = [("top vendor", {"vendor": summary["top_vendor"]}),
              ("median vendor", {"vendor": summary["median_vendor"]}),
              ("product+version", summary["product_version_scope"])]
    for label, scope_dict in scopes:
        parse_scope(db, scope_dict)
        blast_radius(db, scope_dict)                              # warm-up
        # as the API calls it: the scope dict, parsed against the graph read in the same round trip
        t_engine, result = median_time(lambda: blast_radius(db, scope_dict), repeat, "engine")
        seeds = np.flatnonzero(result.seed_match.mask)
        t_prop, prop = median_time(lambda: propagate(view, seeds), repeat, "propagate")
        t_scipy, reach = median_time(lambda: scipy_reach(adj_all, seeds), repeat, "scipy")
        hits = set(result.hit_idx.tolist())
        agree_scipy = hits == set(reach.tolist())
        nogroups = propagate(view, seeds, groups=False)
        agree_down = set(np.flatnonzero(nogroups.status == DOWN).tolist()) == \
            set(scipy_reach(adj_hard, seeds).tolist())
        row: dict[str, Any] = {
            "scope": label, "scope_dict": scope_dict, "seeds": int(seeds.size), "hits": len(hits),
            "down": result.totals["by_status"]["down"], "degraded": result.totals["by_status"]["degraded"],
            "engine_ms": t_engine * 1000, "propagate_ms": t_prop * 1000, "scipy_ms": t_scipy * 1000,
            "agree_scipy": agree_scipy, "agree_down_without_groups": agree_down,
            "same_statuses_twice": bool((prop.status == result.prop.status).all()),
        }
        if nxg is not None:
            nx_repeat = max(1, min(repeat, 3))
            t_nx, nx_reach = median_time(lambda: networkx_reach(nxg, seeds), nx_repeat, "networkx")
            row["networkx_ms"] = t_nx * 1000
            t_nxs, (nx_status, nx_dist) = median_time(lambda: networkx_propagate(nxg, seeds, spare), nx_repeat,
                                                      "networkx_semantics")
            row["networkx_semantics_ms"] = t_nxs * 1000
            engine_status = {int(i): int(result.prop.status[i]) for i in result.hit_idx}
            engine_dist = {int(i): int(result.prop.dist[i]) for i in result.hit_idx}
            row["agree_networkx"] = nx_reach == hits and nx_status == engine_status and nx_dist == engine_dist
        t_page, _ = median_time(lambda: result.to_dict(limit=100), 1)
        row["first_100_hits_ms"] = t_page * 1000
        row["cpu_ms"] = {k: v * 1000 for k, v in CPU_TIMES.items()}
        CPU_TIMES.clear()
        out["scopes"].append(row)
    # Cold: the first query after a write.  The counters say which part changed, so an
    # asset write reloads the assets (and re-indexes the rest), a dependency write the
    # dependencies, a plan write the plans.
    writes = {
        "asset": "UPDATE assets SET criticality = criticality WHERE id = :i",
        "dependency": "UPDATE dependencies SET strength = strength WHERE id = :i",
        "plan": "UPDATE contingency_plans SET review_interval_days = review_interval_days WHERE id = :i",
    }
    top = {"vendor": summary["top_vendor"]}
    out["cold_after_write_ms"], out["cold_after_write_cpu_ms"] = {}, {}
    # Time the whole rebuild: no answering from the previous graph after a bounded wait.
    graph_module.REBUILD_WAIT_SECONDS = 3600.0
    for label, sql in writes.items():
        colds, cold_cpus = [], []
        for i in range(3):
            with engine.begin() as conn:
                conn.execute(sa.text(sql), {"i": i + 1})
            start, cpu = time.perf_counter(), time.process_time()
            blast_radius(db, parse_scope(db, top))
            colds.append(time.perf_counter() - start)
            cold_cpus.append(time.process_time() - cpu)
        out["cold_after_write_ms"][label] = statistics.median(colds) * 1000
        out["cold_after_write_cpu_ms"][label] = statistics.median(cold_cpus) * 1000
    clear_cache()
    start, cpu = time.perf_counter(), time.process_time()
    blast_radius(db, parse_scope(db, top))
    out["cold_full_load_ms"] = (time.perf_counter() - start) * 1000
    out["cold_full_load_cpu_ms"] = (time.process_time() - cpu) * 1000
    out["load_average"] = os.getloadavg()[0]
    start = time.perf_counter()
    full = blast_radius(db, top)
    full.to_dict()
    out["top_vendor_full_to_dict_ms"] = (time.perf_counter() - start) * 1000
    db.close()
    engine.dispose()
    return out


def render(out: dict[str, Any]) -> str:
    g = out["graph"]
    lines = [f"Impact engine benchmark — {out['database']}, {g['assets']:,} assets ({g['alive']:,} current), "
             f"{g['edges']:,} dependency edges, {g['installations']:,} installations",
             f"graph load (cold, from the database): {out['first_load_s'] * 1000:,.0f} ms; "
             f"networkx graph build: {out['networkx_build_s'] * 1000:,.0f} ms", ""]
    header = (f"{'scope':<16} {'seeds':>7} {'hits':>7} {'engine':>9} {'propagate':>10} {'scipy':>8} "
              f"{'nx reach':>9} {'nx same':>9} {'eng/scipy':>9} {'prop/scipy':>10} {'nxr/eng':>7} "
              f"{'nxs/eng':>7} {'agree':>6}")
    lines += [header, "-" * len(header)]
    for r in out["scopes"]:
        nx_ms = r.get("networkx_ms")
        agree = r["agree_scipy"] and r["agree_down_without_groups"] and r.get("agree_networkx", True)
        nxs_ms = r.get("networkx_semantics_ms")
        nx_text = f"{nx_ms:7.0f}ms" if nx_ms else "        -"
        nxs_text = f"{nxs_ms:7.0f}ms" if nxs_ms else "        -"
        nx_ratio = f"{nx_ms / r['engine_ms']:6.1f}x" if nx_ms else "      -"
        nxs_ratio = f"{nxs_ms / r['engine_ms']:6.1f}x" if nxs_ms else "      -"
        lines.append(
            f"{r['scope']:<16} {r['seeds']:>7,} {r['hits']:>7,} {r['engine_ms']:>7.1f}ms {r['propagate_ms']:>8.1f}ms "
            f"{r['scipy_ms']:>6.1f}ms {nx_text:>9} {nxs_text:>9} "
            f"{r['engine_ms'] / r['scipy_ms']:>8.1f}x {r['propagate_ms'] / r['scipy_ms']:>9.1f}x "
            f"{nx_ratio:>7} {nxs_ratio:>7} {('yes' if agree else 'NO'):>6}")
    lines += ["", "CPU time of this process (median; less sensitive to other work on the machine):",
              f"{'scope':<16} {'engine':>9} {'propagate':>10} {'scipy':>8} {'nx reach':>9} {'nx same':>9} "
              f"{'eng/scipy':>9} {'nxs/eng':>7}"]
    for r in out["scopes"]:
        c = r["cpu_ms"]
        nxs = c.get("networkx_semantics")
        lines.append(f"{r['scope']:<16} {c['engine']:>7.1f}ms {c['propagate']:>8.1f}ms {c['scipy']:>6.1f}ms "
                     f"{c.get('networkx', 0):>7.0f}ms {nxs or 0:>7.0f}ms {c['engine'] / c['scipy']:>8.1f}x "
                     f"{(nxs or 0) / c['engine']:>6.1f}x")
    lines += ["", "cold — the first query (top vendor) after a write to ...: "
              + ", ".join(f"{k} {v:,.0f} ms ({out['cold_after_write_cpu_ms'][k]:,.0f} ms CPU)"
                          for k, v in out["cold_after_write_ms"].items()),
              f"cold — after the cache was dropped (full load, two threads): {out['cold_full_load_ms']:,.0f} ms "
              f"({out['cold_full_load_cpu_ms']:,.0f} ms CPU)",
              f"top vendor, every hit materialised (paths, plans, services; to_dict): "
              f"{out['top_vendor_full_to_dict_ms']:,.0f} ms"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Impact engine benchmark")
    parser.add_argument("--size", default="M", help="S (10k assets), M (100k) or a number of assets")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=7, help="runs per measurement (median)")
    parser.add_argument("--postgres", metavar="URL", help="also run on PostgreSQL at this URL")
    parser.add_argument("--no-networkx", action="store_true", help="skip the (slow) networkx comparison")
    args = parser.parse_args(argv)
    runs = []
    url, summary = sqlite_estate(args.size, args.seed)
    runs.append(bench(url, summary, args.repeat, not args.no_networkx))
    if args.postgres:
        pg_url, pg_summary = postgres_estate(args.postgres, args.size, args.seed)
        runs.append(bench(pg_url, pg_summary, args.repeat, not args.no_networkx))
    RESULTS.mkdir(exist_ok=True)
    ok = True
    for out in runs:
        print(render(out))
        print()
        (RESULTS / f"impact-{args.size}-{out['database']}.json").write_text(json.dumps(out, indent=2, default=str))
        ok &= all(r["agree_scipy"] and r["agree_down_without_groups"] and r.get("agree_networkx", True)
                  for r in out["scopes"])
    print(f"host: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
