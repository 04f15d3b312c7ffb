"""Start-up benchmark: how long a fresh process takes to answer.

    python -m benchmarks.bench_startup                 # demo estate and the cached M estate (SQLite)
    python -m benchmarks.bench_startup --size S --repeat 3

Each row is a new process (``subprocess``), timed from the outside (wall time, median of
``--repeat``) with its CPU time (user + system of the child) and peak RSS, beside named
baselines measured in the same run:

* ``python -c pass`` — the interpreter alone;
* ``planb --help`` (target <= 0.25 s);
* ``planb impact --vendor CrowdStrike --version ">=7.11" --os windows`` on the demo
  estate (target <= 0.8 s);
* ``planb impact --vendor CrowdStrike --limit 10`` at M (target <= 1 s), with the graph's
  snapshot on disk and, as the baseline, with snapshots off (the graph loaded from the
  database);
* the graph alone in a fresh process at M: from the snapshot (target <= 300 ms) and from
  the database (target <= 2 s).

The machine is often shared: read the ratios to the baselines, and the load average and
CPU times printed with them.  Figures also go to ``benchmarks/results/startup-<size>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

LOAD_GRAPH = """
import sys, time
started = time.perf_counter()
import sqlalchemy.orm as so
from inventory.db import make_engine
from inventory.impact import get_graph
graph = get_graph(so.Session(make_engine(sys.argv[1])))
print(f"{graph.origin} {(time.perf_counter() - started) * 1000:.1f}")
"""


# Each Python child reports its own peak RSS (VmHWM) as it exits: the rusage of a child also
# counts what it inherited at fork from this (large) process.
PEAK = ("import atexit, sys\n"
        "def _peak():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM'):\n"
        "            print('PEAK_RSS_KB', line.split()[1], file=sys.stderr)\n"
        "atexit.register(_peak)\n")


def run(cmd: list[str], env: dict[str, str], repeat: int) -> dict[str, Any]:
    """Median wall time of ``repeat`` runs of ``cmd``, with the child's CPU time and peak RSS."""
    walls, cpus, rss, out = [], [], [], ""
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=str(ROOT.parent))
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        peaks = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
        rss.append(peaks[-1] / 1024 if peaks else float("nan"))
        out = done.stdout
    return {"ms": statistics.median(walls) * 1000, "cpu_ms": statistics.median(cpus) * 1000,
            "max_rss_mb": max(rss), "stdout_tail": out.strip().splitlines()[-1:] if out.strip() else []}


def python(code: str) -> list[str]:
    return [sys.executable, "-c", PEAK + code]


def planb() -> list[str]:
    """``planb`` as its console script runs it (``python -m inventory.cli``), reporting its peak RSS."""
    return python("import sys\nsys.argv[0] = 'planb'\nfrom inventory.cli import main\nmain(prog_name='planb')\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start-up benchmark (fresh processes)")
    parser.add_argument("--size", default="M", help="estate for the large rows: S, M or a number of assets")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row (median)")
    args = parser.parse_args(argv)
    from benchmarks.bench_impact import sqlite_copy, sqlite_estate

    work = Path(tempfile.mkdtemp(prefix="planb-startup-"))
    env = dict(os.environ, PLANB_INSTANCE_PATH=str(work / "instance"), PLANB_LOG_LEVEL="WARNING",
               PLANB_SECRET_KEY="bench-startup-secret-key-0123456789")
    env.pop("PLANB_GRAPH_SNAPSHOT_DIR", None)
    rows: dict[str, dict[str, Any]] = {}
    load_start = os.getloadavg()[0]
    try:
        rows["baseline: python -c pass"] = run(python("pass"), env, args.repeat)
        rows["planb --help"] = run([*planb(), "--help"], env, args.repeat)

        demo_env = dict(env, PLANB_DATABASE_URL=f"sqlite:///{work / 'demo.sqlite3'}")
        subprocess.run([*planb(), "demo", "--no-serve"], env=demo_env, check=True, capture_output=True,
                       cwd=str(ROOT.parent))
        falcon = ["impact", "--vendor", "CrowdStrike", "--version", ">=7.11", "--os", "windows"]
        rows["planb impact (demo, Falcon >=7.11 on Windows)"] = run([*planb(), *falcon], demo_env, args.repeat)

        cached, summary = sqlite_estate(args.size, 42)
        big_url = sqlite_copy(cached, work)
        big_env = dict(env, PLANB_DATABASE_URL=big_url)
        top = ["impact", "--vendor", summary["top_vendor"], "--limit", "10"]
        # The first run writes the snapshot (a process with no graph loads the database and writes it).
        subprocess.run([*python(LOAD_GRAPH), big_url], env=big_env, check=True, capture_output=True,
                       cwd=str(ROOT.parent))
        rows[f"planb impact --limit 10 ({args.size}, snapshot)"] = run([*planb(), *top], big_env, args.repeat)
        no_snapshot = dict(big_env, PLANB_GRAPH_SNAPSHOT_DIR="off")
        rows[f"baseline: planb impact --limit 10 ({args.size}, snapshots off)"] = run(
            [*planb(), *top], no_snapshot, max(1, args.repeat // 2))
        rows[f"graph load in a fresh process ({args.size}, snapshot)"] = run(
            [*python(LOAD_GRAPH), big_url], big_env, args.repeat)
        rows[f"baseline: graph load in a fresh process ({args.size}, database)"] = run(
            [*python(LOAD_GRAPH), big_url], no_snapshot, max(1, args.repeat // 2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"size": args.size, "repeat": args.repeat, "cpus": os.cpu_count(), "load_average_start": load_start,
           "load_average_end": os.getloadavg()[0], "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"startup-{args.size}.json").write_text(json.dumps(out, indent=2))
    print(f"Start-up (fresh processes), median of {args.repeat}; load average {load_start:.2f} at the start, "
          f"{out['load_average_end']:.2f} at the end; {os.cpu_count()} CPUs")
    base = rows["baseline: python -c pass"]["ms"]
    header = f"{'':<62} {'wall':>9} {'CPU':>9} {'- python':>9} {'peak RSS':>9}"
    print(header)
    print("-" * len(header))
    for label, row in rows.items():
        note = f"  [{row['stdout_tail'][0][:40]}]" if label.startswith(("graph", "baseline: graph")) else ""
        print(f"{label:<62} {row['ms']:>7.0f}ms {row['cpu_ms']:>7.0f}ms {row['ms'] - base:>7.0f}ms "
              f"{row['max_rss_mb']:>7.0f}MB{note}")
    print("targets: planb --help <= 250 ms; impact on the demo <= 800 ms; impact at M <= 1 s; "
          "graph from the snapshot <= 300 ms, from the database <= 2 s (peak RSS: the largest child so far)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
