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

``--serve`` measures instead what each ``planb serve`` worker costs at M (target <= 50 MB
per added worker): ``planb serve --workers 1`` and then ``--workers 4`` on a copy of the
estate (its graph snapshot on disk, as any earlier start leaves it), every worker made to
answer blast radii (rounds of concurrent requests until each worker has spent CPU time on
them), then the RSS, PSS (shared pages split between their sharers) and USS (private) of
the master and of each worker from ``/proc/<pid>/smaps_rollup``.  The cost of an added
worker is the growth of the total PSS from 1 to 4 workers, divided by 3.  Baseline, in the
same run: gunicorn with the same worker class and no preload (each worker imports the app
and maps the graph itself), what ``planb serve`` did before.

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
import threading
import time
import urllib.parse
import urllib.request
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


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime + stime


def _serve_memory(url: str, work: Path, env: dict[str, str], workers: int, top: str, preload: bool
                  ) -> dict[str, Any]:
    from benchmarks import load_test

    port = load_test.free_port()
    if preload:
        cmd = [*planb(), "serve", "--workers", str(workers), "--port", str(port), "--host", "127.0.0.1"]
        server = subprocess.Popen(cmd, env=dict(env, PLANB_DATABASE_URL=url), cwd=str(ROOT.parent),
                                  start_new_session=True, stdout=subprocess.DEVNULL)
    else:
        server = load_test.start_server(url, port, workers, work, threads=4, preload=False)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not answer /healthz")
                time.sleep(0.3)
        pids = load_test._children(server.pid)
        while len(pids) < workers:
            time.sleep(0.2)
            pids = load_test._children(server.pid)
        before = {pid: _cpu_ticks(pid) for pid in pids}
        # Rounds of concurrent blast radii until every worker has spent 0.3 s of CPU on them
        # (gunicorn hands a connection to whichever worker accepts it first).
        query = urllib.parse.urlencode({"vendor": top, "limit": 50})
        for _round in range(200):
            threads = [threading.Thread(target=load_test._get, args=(port, env["TOKEN"], f"/api/v1/impact?{query}"))
                       for _ in range(workers * 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if all(_cpu_ticks(pid) - before[pid] >= 30 for pid in pids):
                break
        else:
            raise RuntimeError("some worker never answered")
        time.sleep(3)   # background work (kernel load, snapshot write) settles
        master = load_test._smaps(server.pid)
        each = [load_test._smaps(pid) for pid in pids]
        return {"master": master, "workers": each, "total_pss": master["pss"] + sum(w["pss"] for w in each),
                "total_rss": master["rss"] + sum(w["rss"] for w in each)}
    finally:
        load_test.stop_server(server)


LABELS = (("planb serve", True), ("baseline: gunicorn gthread, no preload", False))


def serve_main(args: argparse.Namespace) -> int:
    from benchmarks.bench_impact import sqlite_copy, sqlite_estate
    from benchmarks.load_test import make_token

    work = Path(tempfile.mkdtemp(prefix="planb-serve-memory-"))
    env = dict(os.environ, PLANB_INSTANCE_PATH=str(work / "instance"), PLANB_LOG_LEVEL="WARNING",
               PLANB_SECRET_KEY="load-test-secret-key")
    env.pop("PLANB_GRAPH_SNAPSHOT_DIR", None)
    load_start = os.getloadavg()[0]
    results: dict[str, Any] = {}
    try:
        cached, summary = sqlite_estate(args.size, 42)
        url = sqlite_copy(cached, work)
        os.environ.update(PLANB_INSTANCE_PATH=env["PLANB_INSTANCE_PATH"])
        env["TOKEN"] = make_token(url)
        # The kernel compiled into Numba's cache, as 'planb db upgrade' and the image build leave
        # it: the server loads it at start (in the master under planb serve).
        subprocess.run([sys.executable, "-m", "inventory.impact.kernel"], env=env, check=True,
                       capture_output=True, cwd=str(ROOT.parent))
        subprocess.run([*python(LOAD_GRAPH), url], env=dict(env, PLANB_DATABASE_URL=url), check=True,
                       capture_output=True, cwd=str(ROOT.parent))
        for label, preload in LABELS[:1 if args.no_baseline else 2]:
            for workers in (1, 4):
                results[f"{label}, {workers} worker(s)"] = _serve_memory(
                    url, work, env, workers, summary["top_vendor"], preload)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"size": args.size, "load_average_start": load_start, "load_average_end": os.getloadavg()[0],
           "rows": results}
    for label, _preload in LABELS[:1 if args.no_baseline else 2]:
        one, four = results[f"{label}, 1 worker(s)"], results[f"{label}, 4 worker(s)"]
        out[f"{label}: added worker PSS MB"] = (four["total_pss"] - one["total_pss"]) / 3
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"serve-memory-{args.size}.json").write_text(json.dumps(out, indent=2))
    print(f"Memory of planb serve at {args.size}, every worker warmed with blast radii of the top vendor; "
          f"load average {load_start:.2f} at the start, {out['load_average_end']:.2f} at the end (MB)")
    header = f"{'':<52} {'process':<10} {'RSS':>7} {'PSS':>7} {'USS':>7}"
    print(header)
    print("-" * len(header))
    for label, row in results.items():
        print(f"{label:<52} {'master':<10} {row['master']['rss']:>7.0f} {row['master']['pss']:>7.0f} "
              f"{row['master']['uss']:>7.0f}")
        for i, w in enumerate(row["workers"], 1):
            print(f"{'':<52} {'worker ' + str(i):<10} {w['rss']:>7.0f} {w['pss']:>7.0f} {w['uss']:>7.0f}")
        print(f"{'':<52} {'total':<10} {row['total_rss']:>7.0f} {row['total_pss']:>7.0f}")
    for label, _preload in LABELS[:1 if args.no_baseline else 2]:
        print(f"{label}: each added worker {out[label + ': added worker PSS MB']:.0f} MB PSS (target <= 50 MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start-up benchmark (fresh processes)")
    parser.add_argument("--size", default="M", help="estate for the large rows: S, M or a number of assets")
    parser.add_argument("--repeat", type=int, default=5, help="runs per row (median)")
    parser.add_argument("--serve", action="store_true",
                        help="measure instead the memory of 'planb serve' with 1 and 4 workers")
    parser.add_argument("--no-baseline", action="store_true", help="with --serve: skip the no-preload baseline")
    args = parser.parse_args(argv)
    if args.serve:
        return serve_main(args)
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
