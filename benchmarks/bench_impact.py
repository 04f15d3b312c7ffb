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
* **engine, NumPy** — the same whole answer with the NumPy formulation of the kernel
  (what answers while the compiled kernel loads: ``inventory.impact.backend``);
* **after a write** — the first query (top vendor) after a write to one asset, one
  dependency, a plan, an asset retired, 1,000 assets, 1,000 dependencies: the graph is
  patched from the change log (``inventory.impact.changes``); beside it the baseline of
  reloading the changed parts (what happens when the log cannot say: the same write
  followed by a counter bump without change rows).  The whole update is timed
  (``PLANB_IMPACT_REBUILD_WAIT``'s bounded wait is lifted, so no answer comes from the
  previous graph);
* **full loads** — from the database and from the snapshot, in this process and in a
  fresh one (``python -c``: imports, load, first query, peak RSS);
* **materialising** every hit of the top vendor: ``to_dict()`` (Python objects), the
  streamed JSON (``iter_json``) and declaring an incident on the Falcon scope.

Every figure is a median wall time, printed with the process's CPU time and the load
average: on a shared machine compare the ratios to the baselines of the same run.
Figures go to stdout as tables and to ``benchmarks/results/impact-<size>-<db>.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import scipy.sparse as sp
import sqlalchemy as sa
import sqlalchemy.orm as so
from scipy.sparse.csgraph import breadth_first_order

from benchmarks.estate_gen import GENERATOR_VERSION, generate_estate
from inventory import migrate
from inventory.db import make_engine
from inventory.impact import (
    backend,
    blast_radius,
    clear_cache,
    get_graph,
    parse_scope,
    snapshot,
)
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


def sqlite_copy(url: str, folder: Path) -> str:
    """A private copy of a cached SQLite estate (the benchmark writes to it)."""
    target = folder / "estate.sqlite3"
    shutil.copyfile(url.removeprefix("sqlite:///"), target)
    return f"sqlite:///{target}"


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


@contextlib.contextmanager
def numpy_kernel() -> Iterator[None]:
    """Queries answered with the NumPy formulation (as while the compiled kernel loads)."""
    saved = backend._compiled
    backend._compiled = None
    os.environ["PLANB_IMPACT_KERNEL"] = "numpy"
    try:
        yield
    finally:
        backend._compiled = saved
        os.environ.pop("PLANB_IMPACT_KERNEL", None)


FRESH = """
import json, sys, time
started = time.perf_counter()
import sqlalchemy.orm as so
from inventory.db import make_engine
from inventory.impact import blast_radius, get_graph
imported = time.perf_counter()
db = so.Session(make_engine(sys.argv[1]))
graph = get_graph(db)
loaded = time.perf_counter()
blast_radius(db, json.loads(sys.argv[2])).to_dict(limit=10, seeds_limit=10)
answered = time.perf_counter()
print(json.dumps({"import_ms": (imported - started) * 1000, "load_ms": (loaded - imported) * 1000,
                  "first_query_ms": (answered - loaded) * 1000, "total_ms": (answered - started) * 1000,
                  "origin": graph.origin, "cpu_ms": time.process_time() * 1000,
                  "max_rss_mb": [int(line.split()[1]) / 1024 for line in open("/proc/self/status")
                                 if line.startswith("VmHWM")][0]}))
"""


def fresh_process(url: str, scope: dict[str, Any], snapshots: bool) -> dict[str, Any]:
    """A new Python process: import the engine, load the graph, answer a page (median of 3)."""
    env = dict(os.environ)
    if not snapshots:
        env["PLANB_GRAPH_SNAPSHOT_DIR"] = "off"
    runs = []
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", FRESH, url, json.dumps(scope)], env=env, capture_output=True,
                              text=True, timeout=600, cwd=str(ROOT.parent))
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["total_ms"])
    return runs[1]


def declare_timing(engine: Any, scope: dict[str, Any]) -> dict[str, Any]:
    """Declaring an incident (blast radius and snapshot insert), rolled back each time."""
    from inventory.services.incidents import declare_incident

    walls, cpus, hits = [], [], 0
    for _ in range(3):
        with so.Session(engine) as db:
            start, cpu = time.perf_counter(), time.process_time()
            incident = declare_incident(db, scope, "benchmark", "bench")
            db.flush()
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
            hits = incident.summary["totals"]["hits"]
            db.rollback()
    return {"ms": statistics.median(walls) * 1000, "cpu_ms": statistics.median(cpus) * 1000, "hits": hits}


# ---------------------------------------------------------------- the run

# ---------------------------------------------------------------- the run

def bench(url: str, summary: dict[str, Any], repeat: int, with_networkx: bool) -> dict[str, Any]:
    engine = make_engine(url)
    db = so.Session(engine)
    clear_cache()
    out: dict[str, Any] = {"database": engine.dialect.name, "estate": summary, "scopes": [],
                           "load_average_start": os.getloadavg()[0]}
    start = time.perf_counter()
    graph = get_graph(db)
    out["first_load_s"] = time.perf_counter() - start
    out["first_load_origin"] = graph.origin
    start = time.perf_counter()
    backend.load_now()
    out["kernel_load_s"] = time.perf_counter() - start
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
        with numpy_kernel():
            blast_radius(db, scope_dict)
            t_numpy, _ = median_time(lambda: blast_radius(db, scope_dict), repeat, "engine_numpy")
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
            "engine_ms": t_engine * 1000, "engine_numpy_ms": t_numpy * 1000, "propagate_ms": t_prop * 1000,
            "scipy_ms": t_scipy * 1000,
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
    # After a write: the first query, with the graph patched from the change log; beside it
    # the baseline of reloading the changed parts (a counter bump the change log cannot explain).
    top = {"vendor": summary["top_vendor"]}
    graph_module.REBUILD_WAIT_SECONDS = 3600.0   # time the whole update, never the previous graph
    # Every write is its own inverse and is made twice on the same rows, so the (cached,
    # shared) estate ends as it began.
    with engine.connect() as conn:
        current = [r[0] for r in conn.execute(sa.text(
            "SELECT id FROM assets WHERE retired_at IS NULL ORDER BY id LIMIT 20000"))]
    flip = "CASE {0} WHEN 'hard' THEN 'soft' ELSE 'hard' END"
    writes = {
        "one asset": ("UPDATE assets SET criticality = CASE criticality WHEN 'high' THEN 'medium' "
                      "WHEN 'medium' THEN 'high' ELSE criticality END WHERE id = :i", "assets_v"),
        "one dependency": (f"UPDATE dependencies SET strength = {flip.format('strength')} WHERE id = :i", "deps_v"),
        "an asset retired or back": ("UPDATE assets SET retired_at = CASE WHEN retired_at IS NULL THEN first_seen "
                                     "ELSE NULL END WHERE id = :i", "assets_v"),
        "a plan": ("UPDATE contingency_plans SET review_interval_days = review_interval_days + :sign WHERE id = :p",
                   "plans_v"),
        "1,000 assets": ("UPDATE assets SET name = name WHERE id >= :i AND id < :i + 1000", "assets_v"),
        "1,000 dependencies": (f"UPDATE dependencies SET strength = {flip.format('strength')} "
                               "WHERE id >= :i AND id < :i + 1000", "deps_v"),
    }
    out["after_write"] = {}
    for w, (label, (sql, part)) in enumerate(writes.items()):
        row: dict[str, Any] = {}
        for m, mode in enumerate(("patched", "parts reloaded")):
            walls, cpus, origins = [], [], set()
            for i in range(4):
                with engine.begin() as conn:
                    conn.execute(sa.text(sql), {"i": current[(1 + 4 * w + 2 * m + i // 2) * 500], "p": 1 + i // 2,
                                                "sign": 1 - 2 * (i % 2)})
                    if mode != "patched":
                        conn.execute(sa.text(f"UPDATE inventory_version SET version = version + 1, {part} = {part} + 1"))
                start, cpu = time.perf_counter(), time.process_time()
                blast_radius(db, top)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
                origins.add(get_graph(db).origin)
            row[mode] = {"ms": statistics.median(walls) * 1000, "cpu_ms": statistics.median(cpus) * 1000,
                         "origin": sorted(origins)}
        out["after_write"][label] = row
    # Full loads: from the database (snapshots off) and from the snapshot, in this process.
    blast_radius(db, top)                     # the graph current, and its snapshot written
    snapshot.write(get_graph(db), graph_module._reader(engine))
    loads = {}
    for label, env_value in (("from the database", "off"), ("from the snapshot", None)):
        saved = os.environ.get("PLANB_GRAPH_SNAPSHOT_DIR")
        if env_value:
            os.environ["PLANB_GRAPH_SNAPSHOT_DIR"] = env_value
        try:
            walls, cpus = [], []
            for _ in range(3):
                clear_cache()
                start, cpu = time.perf_counter(), time.process_time()
                loaded = get_graph(db)
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
            loads[label] = {"ms": statistics.median(walls) * 1000, "cpu_ms": statistics.median(cpus) * 1000,
                            "origin": loaded.origin}
        finally:
            if saved is None:
                os.environ.pop("PLANB_GRAPH_SNAPSHOT_DIR", None)
            else:
                os.environ["PLANB_GRAPH_SNAPSHOT_DIR"] = saved
    out["full_load"] = loads
    out["fresh_process"] = {label: fresh_process(url, top, snapshots) for label, snapshots in
                            (("from the snapshot", True), ("from the database", False))}
    clear_cache()
    blast_radius(db, top)
    # Materialising every hit of the top vendor, and an incident on the Falcon scope.
    full = blast_radius(db, top)
    out["hits_materialised"] = int(full.hit_idx.size)
    t_dict, _ = median_time(lambda: blast_radius(db, top).to_dict(), 3, "to_dict")
    out["to_dict_ms"], out["to_dict_cpu_ms"] = t_dict * 1000, CPU_TIMES.pop("to_dict") * 1000
    t_stream, size = median_time(lambda: sum(len(p) for p in blast_radius(db, top).iter_json()), 3, "stream")
    out["stream_json_ms"], out["stream_json_cpu_ms"] = t_stream * 1000, CPU_TIMES.pop("stream") * 1000
    out["stream_json_mb"] = size / 1e6
    falcon = summary["product_version_scope"]
    out["incident"] = declare_timing(engine, falcon)
    out["load_average"] = os.getloadavg()[0]
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
    lines += ["", f"engine with the NumPy kernel (what answers while the compiled one loads; loaded here in "
              f"{out['kernel_load_s'] * 1000:,.0f} ms):"]
    lines += [f"  {r['scope']:<16} {r['engine_numpy_ms']:>7.1f} ms   ({r['engine_numpy_ms'] / r['engine_ms']:.1f}x the "
              f"compiled kernel, {r['engine_numpy_ms'] / r['scipy_ms']:.1f}x scipy)" for r in out["scopes"]]
    lines += ["", "first query (top vendor) after a write — target <= 100 ms for one row, <= 300 ms for 1,000:",
              f"{'write':<26} {'patched':>10} {'(CPU)':>9}   {'baseline: parts reloaded':>25} {'(CPU)':>9}  ratio"]
    for label, row in out["after_write"].items():
        p, b = row["patched"], row["parts reloaded"]
        lines.append(f"{label:<26} {p['ms']:>8.0f}ms {p['cpu_ms']:>7.0f}ms   {b['ms']:>23.0f}ms {b['cpu_ms']:>7.0f}ms"
                     f"  {b['ms'] / max(p['ms'], 1e-9):5.1f}x  ({'/'.join(p['origin'])})")
    lines += ["", "full load (top vendor answerable) — target <= 300 ms from the snapshot, <= 2 s from the database:"]
    for label, row in out["full_load"].items():
        lines.append(f"  this process, {label:<18} {row['ms']:>8.0f} ms ({row['cpu_ms']:,.0f} ms CPU; {row['origin']})")
    for label, row in out["fresh_process"].items():
        lines.append(f"  fresh process, {label:<17} {row['total_ms']:>8.0f} ms in all: imports {row['import_ms']:,.0f}, "
                     f"load {row['load_ms']:,.0f} ({row['origin']}), first page {row['first_query_ms']:,.0f}; "
                     f"{row['cpu_ms']:,.0f} ms CPU, peak RSS {row['max_rss_mb']:,.0f} MB")
    inc = out["incident"]
    lines += ["", f"materialising every hit of the top vendor ({out['hits_materialised']:,} hits) — target <= 0.5 s:",
              f"  streamed JSON (iter_json): {out['stream_json_ms']:,.0f} ms ({out['stream_json_cpu_ms']:,.0f} ms CPU, "
              f"{out['stream_json_mb']:,.0f} MB of JSON); baseline to_dict(): {out['to_dict_ms']:,.0f} ms "
              f"({out['to_dict_cpu_ms']:,.0f} ms CPU)",
              f"declaring an incident on the Falcon scope ({inc['hits']:,} hits snapshotted) — target <= 1 s: "
              f"{inc['ms']:,.0f} ms ({inc['cpu_ms']:,.0f} ms CPU)",
              f"load average: {out['load_average_start']:.2f} at the start, {out['load_average']:.2f} at the end"]
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
    import tempfile
    work = Path(tempfile.mkdtemp(prefix="planb-bench-"))
    # Snapshots of this run only (the first load writes one; the fresh-process rows read it).
    os.environ["PLANB_GRAPH_SNAPSHOT_DIR"] = str(work / "graph-snapshots")
    runs.append(bench(sqlite_copy(url, work), summary, args.repeat, not args.no_networkx))
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
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
