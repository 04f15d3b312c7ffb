"""Load test: gunicorn serving the 100k-asset estate, with and without a collector writing.

    python -m benchmarks.load_test                       # SQLite, M estate (100k assets), 20 s phases
    python -m benchmarks.load_test --size S --duration 10 --workers 2
    python -m benchmarks.load_test --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test

What it does, all on 127.0.0.1 and bounded in time:

1. takes the synthetic estate of ``benchmarks/estate_gen.py`` (cached by
   ``bench_impact``) -- a *copy* for SQLite, so the cache stays clean; on
   PostgreSQL the cached schema, and what the test adds is removed afterwards;
2. creates a read token and starts ``gunicorn`` (``--workers`` processes,
   default 2) on a free port, waits for ``/healthz``, then warms every worker;
3. **phase "read"**: ``wrk`` (installed with apt-get when missing) or, with
   ``--python``, a threaded Python client, drives all endpoints at once for
   ``--duration`` seconds (``--connections`` shared between them): the blast radius
   of the top vendor (Falcon on Windows, >=7.11, ~70% of the hosts), of a median
   vendor, and the asset list (first page and a filtered page);
4. **phase "read + collector"**: the same, while a separate process runs collector
   runs back to back for the whole phase (``collectors.ingest.run_collection`` with a
   synthetic source of ``--collect-scopes`` x ``--collect-assets`` VMs with software:
   the first run creates them, later runs rename them -- or, with ``--unchanged``,
   find them as they were, the steady state of a nightly collector), so there is
   always a writer and, with changes, the impact engine's cached graph is
   invalidated at every scope;
5. prints requests/s, p50/p99 latency and errors (non-2xx, socket errors,
   timeouts) per endpoint and phase, and writes them to
   ``benchmarks/results/load-<size>-<db>.json``.  The blast radius under churn has a
   target: p99 <= 300 ms (the graph is patched from the change log at each scope a
   collector commits: ``inventory.impact.changes``).

``--memory`` measures instead what each gunicorn worker costs: the server is started
with 1 and then 4 workers (``--preload`` loads the app, and with it the compiled kernel,
in the master first), every worker answers blast radii, and the resident (RSS),
proportional (PSS: shared pages split between the processes sharing them) and private
(USS) memory of the master and workers is read from ``/proc/<pid>/smaps_rollup``.  The
cost of an added worker is the growth of the total PSS from 1 to 4 workers, divided by 3
(target <= 50 MB at M); the workers map the graph's snapshot, so its pages are shared.

Not part of the unit suite: the figures depend on the machine and its load
(the load average is printed with them).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
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
SECRET = "load-test-secret-key"
PREFIX = "loadtest"


# ---------------------------------------------------------------- estate and server

def prepare_database(size: str, postgres: str | None, workdir: Path) -> tuple[str, dict[str, Any]]:
    from benchmarks.bench_impact import postgres_estate, sqlite_estate

    if postgres:
        return postgres_estate(postgres, size, 42)
    cached_url, summary = sqlite_estate(size, 42)
    source = Path(cached_url.removeprefix("sqlite:///"))
    target = workdir / "planb.sqlite3"
    print(f"copying the cached estate {source.name} ...", file=sys.stderr)
    shutil.copyfile(source, target)
    return f"sqlite:///{target}", summary


def make_token(url: str) -> str:
    from inventory import create_app
    from inventory.app_db import get_session
    from inventory.auth import create_token

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": SECRET, "INSTANCE_PATH": tempfile.mkdtemp(),
                      "LOG_LEVEL": "WARNING"})
    with app.app_context():
        db = get_session()
        _token, plaintext = create_token(db, f"{PREFIX}-{os.getpid()}", "read", expires_in_days=1)
        db.commit()
    app.extensions["planb_engine"].dispose()
    return plaintext


def median_vendor(url: str) -> str:
    import sqlalchemy as sa

    from inventory.db import make_engine
    from inventory.models import Installation, Product, Vendor

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(Vendor.name, sa.func.count())
                                .join(Product, Product.vendor_id == Vendor.id)
                                .join(Installation, Installation.product_id == Product.id)
                                .group_by(Vendor.name).order_by(sa.func.count())).all()
        return rows[len(rows) // 2][0]
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(url: str, port: int, workers: int, workdir: Path, threads: int = 0,
                 preload: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PLANB_DATABASE_URL=url, PLANB_SECRET_KEY=SECRET,
               PLANB_INSTANCE_PATH=str(workdir / "instance"), PLANB_LOG_LEVEL="WARNING")
    cmd = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
           "--timeout", "120", "--log-level", "warning", "inventory:create_app()"]
    if threads:
        cmd[3:3] = ["--worker-class", "gthread", "--threads", str(threads)]
    if preload:
        # gc.freeze() before each fork: the collector never walks (and so never writes to) the
        # objects the master loaded, which the workers then keep sharing (gunicorn's advice).
        hooks = workdir / "gunicorn_preload.py"
        hooks.write_text("import gc\n\ndef pre_fork(server, worker):\n    gc.freeze()\n")
        cmd[3:3] = ["--preload", "--config", str(hooks)]
    server = subprocess.Popen(cmd, env=env, cwd=str(ROOT.parent), start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    stop_server(server)
    raise RuntimeError("gunicorn did not answer /healthz within 60 s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


# ---------------------------------------------------------------- memory

def _smaps(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private) of one process in MB, from /proc/<pid>/smaps_rollup."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                values[parts[0][:-1]] = int(parts[1]) / 1024
    return {"rss": values.get("Rss", 0.0), "pss": values.get("Pss", 0.0),
            "uss": values.get("Private_Clean", 0.0) + values.get("Private_Dirty", 0.0)}


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return sorted(out)


def memory_of(server: subprocess.Popen) -> dict[str, Any]:
    """The gunicorn master's and each worker's memory."""
    master = _smaps(server.pid)
    workers = [_smaps(pid) for pid in _children(server.pid)]
    return {"master": master, "workers": workers,
            "total_pss": master["pss"] + sum(w["pss"] for w in workers),
            "workers_rss": sum(w["rss"] for w in workers), "workers_uss": sum(w["uss"] for w in workers)}


def memory_phase(url: str, workdir: Path, paths: dict[str, str], token: str, args: argparse.Namespace
                 ) -> dict[str, Any]:
    """Start the server with 1 and then 4 workers, make every worker answer, read the memory."""
    blast = [p for label, p in paths.items() if "blast" in label]
    results: dict[str, Any] = {}
    # The graph's snapshot first (as any earlier start leaves it), so both servers map it.
    env = dict(os.environ, PLANB_INSTANCE_PATH=str(workdir / "instance"), PLANB_LOG_LEVEL="WARNING")
    subprocess.run([sys.executable, "-c", "import sys, sqlalchemy.orm as so; from inventory.db import make_engine; "
                    "from inventory.impact import get_graph; get_graph(so.Session(make_engine(sys.argv[1])))", url],
                   env=env, check=True, cwd=str(ROOT.parent))
    for workers in (1, 4):
        port = free_port()
        server = start_server(url, port, workers, workdir, args.gthreads, preload=args.preload)
        try:
            # Concurrent rounds of blast radii until every worker must have answered some.
            for _round in range(workers * 6):
                threads = [threading.Thread(target=_get, args=(port, token, path)) for path in blast
                           for _ in range(workers * 2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            time.sleep(3)   # the background kernel load, if any, settles
            results[str(workers)] = memory_of(server)
        finally:
            stop_server(server)
        r = results[str(workers)]
        print(f"  {workers} worker(s): total PSS {r['total_pss']:,.0f} MB (master {r['master']['pss']:,.0f}); "
              f"workers RSS {r['workers_rss']:,.0f} MB, private (USS) {r['workers_uss']:,.0f} MB", flush=True)
    added = (results["4"]["total_pss"] - results["1"]["total_pss"]) / 3
    results["added_worker_pss_mb"] = added
    results["added_worker_rss_mb"] = (results["4"]["workers_rss"] - results["1"]["workers_rss"]) / 3
    print(f"  each added worker: {added:,.0f} MB (PSS; target <= 50 MB), "
          f"{results['added_worker_rss_mb']:,.0f} MB RSS (counts shared pages in every worker)", flush=True)
    return results


def _get(port: int, token: str, path: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
    except OSError:
        pass


# ---------------------------------------------------------------- load generators

def endpoints(median: str) -> dict[str, str]:
    top = urllib.parse.urlencode({"vendor": "CrowdStrike", "products": "Falcon Sensor", "version": ">=7.11",
                                  "os": "windows", "limit": 50})
    return {
        "blast radius, top vendor": f"/api/v1/impact?{top}",
        "blast radius, median vendor": "/api/v1/impact?" + urllib.parse.urlencode({"vendor": median, "limit": 50}),
        "asset list, first page": "/api/v1/assets?limit=50",
        "asset list, filtered": "/api/v1/assets?" + urllib.parse.urlencode(
            {"provider": "azure", "os_family": "windows", "limit": 50}),
    }


def warm(port: int, token: str, paths: dict[str, str], workers: int) -> None:
    # Every worker builds its own in-memory graph on first use: touch each path enough
    # times that all workers have answered it once.
    for path in paths.values():
        for _ in range(workers * 3):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()


_WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(port: int, token: str, path: str, duration: int, connections: int, threads: int) -> dict[str, Any]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s", "--latency",
           "-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    latencies = {int(m.group(1)): float(m.group(2)) * _UNIT[m.group(3)] for m in _WRK_LATENCY.finditer(out)}
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"requests": requests, "rps": rps, "p50_ms": latencies.get(50), "p99_ms": latencies.get(99),
            "errors": errors}


def run_python(port: int, token: str, path: str, duration: int, connections: int) -> dict[str, Any]:
    import http.client

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
                response = conn.getresponse()
                response.read()
                ok = 200 <= response.status < 400
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append((time.perf_counter() - started) * 1000)
            if not ok:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    pick = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]) if latencies else (lambda q: None)
    return {"requests": len(latencies), "rps": round(len(latencies) / duration, 1),
            "p50_ms": pick(0.50), "p99_ms": pick(0.99), "errors": errors[0]}


# ---------------------------------------------------------------- the collector

class LoadCollector:
    """VMs in their own scopes, each with an installed agent.  Round 0 creates them; later
    rounds re-collect the same scopes with renamed VMs, as a collector re-run that finds
    changes: every scope is a real write that also invalidates the impact engine's graph."""

    name = PREFIX

    def __init__(self, scopes: int, per_scope: int, round_no: int, unchanged: bool = False) -> None:
        self.scopes, self.per_scope, self.round_no = scopes, per_scope, round_no
        self.unchanged = unchanged

    def describe_scope(self) -> str:
        return f"{PREFIX}: round {self.round_no}, {self.scopes} scopes x {self.per_scope} VMs"

    def collect(self, progress):  # type: ignore[no-untyped-def]
        from collectors.base import AssetRecord, ScopeBatch, SoftwareRecord

        for s in range(self.scopes):
            suffix = "" if self.unchanged else f"-r{self.round_no}"
            assets = [AssetRecord(natural_key=f"{PREFIX}:{s}:{i}", name=f"load-{s}-{i}{suffix}",
                                  kind="vm", provider="aws", account="999900001111", region="eu-west-1",
                                  os_family="windows", environment="production")
                      for i in range(self.per_scope)]
            software = [SoftwareRecord(asset_key=a.natural_key, name="CrowdStrike Falcon Sensor",
                                       publisher="CrowdStrike, Inc.", version="7.11.18110.0") for a in assets]
            yield ScopeBatch(scope_key=f"{PREFIX}:{s}", assets=assets, software=software)


def collector_main(url: str, scopes: int, per_scope: int, seconds: float, out: str,
                   unchanged: bool = False) -> None:
    """Collector runs back to back for ``seconds``: the writer never pauses during the phase."""
    from collectors.ingest import run_collection
    from inventory.db import make_engine

    engine = make_engine(url)
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    try:
        round_no = 0
        while time.perf_counter() - started < seconds:
            run = run_collection(engine, LoadCollector(scopes, per_scope, round_no, unchanged))
            runs.append({"status": run.status, "created": run.created, "updated": run.updated,
                         "errors": run.errors[:3]})
            round_no += 1
    finally:
        engine.dispose()
    result = {"runs": len(runs), "succeeded": sum(r["status"] == "succeeded" for r in runs),
              "rows_created": sum(r["created"] for r in runs), "rows_updated": sum(r["updated"] for r in runs),
              "errors": [e for r in runs for e in r["errors"]][:5],
              "status": "succeeded" if runs and all(r["status"] == "succeeded" for r in runs) else "failed",
              "seconds": round(time.perf_counter() - started, 1)}
    Path(out).write_text(json.dumps(result))


def cleanup(url: str) -> None:
    """Remove what the test added (matters for the PostgreSQL estate, which is kept)."""
    import sqlalchemy as sa

    from inventory.db import make_engine, write_session
    from inventory.models import ApiToken, Asset, CollectionRun

    engine = make_engine(url)
    try:
        with write_session(engine) as db:
            db.execute(sa.delete(Asset).where(Asset.natural_key.like(f"{PREFIX}:%")))
            db.execute(sa.delete(CollectionRun).where(CollectionRun.collector == PREFIX))
            db.execute(sa.delete(ApiToken).where(ApiToken.name.like(f"{PREFIX}-%")))
    finally:
        engine.dispose()


# ---------------------------------------------------------------- main

def run_phase(name: str, port: int, token: str, paths: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """All endpoints at once (a mixed load, each with its share of the connections), so every
    endpoint's figures come from the same conditions -- and no endpoint inherits the backlog
    of the one measured before it."""
    share = max(1, args.connections // len(paths))
    results: dict[str, Any] = {}

    def one(label: str, path: str) -> None:
        if args.python:
            results[label] = run_python(port, token, path, args.duration, share)
        else:
            results[label] = run_wrk(port, token, path, args.duration, share, 1)

    threads = [threading.Thread(target=one, args=item) for item in paths.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for label in paths:
        figures = results[label]
        print(f"  {name:<18} {label:<30} {figures['rps']:>8.1f} req/s  p50 {figures['p50_ms'] or 0:>8.1f} ms  "
              f"p99 {figures['p99_ms'] or 0:>8.1f} ms  errors {figures['errors']}", flush=True)
    time.sleep(2)  # let requests still in the server finish before the next phase
    return {label: results[label] for label in paths}


def ensure_wrk() -> bool:
    if shutil.which("wrk"):
        return True
    print("wrk not found: installing it with apt-get ...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    return shutil.which("wrk") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="M", help="estate size: S (10k), M (100k) or a number of assets")
    parser.add_argument("--postgres", metavar="URL", help="use PostgreSQL at URL instead of SQLite")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2-4)")
    parser.add_argument("--duration", type=int, default=30, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections, shared by the endpoints")
    parser.add_argument("--gthreads", type=int, default=0,
                        help="threads per worker (gunicorn gthread workers; default: sync workers)")
    parser.add_argument("--python", action="store_true", help="use the Python load generator, not wrk")
    parser.add_argument("--collect-scopes", type=int, default=20, help="scopes per collector run")
    parser.add_argument("--collect-assets", type=int, default=250, help="VMs per collector scope")
    parser.add_argument("--collect-seconds", type=float, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--unchanged", action="store_true",
                        help="collector re-runs find no changes (the steady state) instead of renaming every VM")
    parser.add_argument("--only", help="comma-separated words: run only endpoints whose label contains one")
    parser.add_argument("--preload", action="store_true",
                        help="gunicorn --preload (and gc.freeze() before each fork): the app, and the "
                             "compiled kernel, loaded in the master and shared by the workers")
    parser.add_argument("--memory", action="store_true",
                        help="measure the memory of 1 and 4 workers instead of the load phases")
    parser.add_argument("--collector-only", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.collector_only:
        collector_main(args.collector_only[0], args.collect_scopes, args.collect_assets, args.collect_seconds,
                       args.collector_only[1], args.unchanged)
        return 0
    if not args.python and not ensure_wrk():
        print("wrk is unavailable; falling back to the Python load generator", file=sys.stderr)
        args.python = True

    workdir = Path(tempfile.mkdtemp(prefix="planb-load-"))
    url, summary = prepare_database(args.size, args.postgres, workdir)
    token = make_token(url)
    if args.unchanged:
        # The steady state: the collector's assets exist before the measurement starts,
        # so its runs during the phase find nothing new.
        from collectors.ingest import run_collection
        from inventory.db import make_engine
        engine = make_engine(url)
        try:
            run_collection(engine, LoadCollector(args.collect_scopes, args.collect_assets, 0, unchanged=True))
        finally:
            engine.dispose()
    paths = endpoints(median_vendor(url))
    if args.only:
        words = [w.strip() for w in args.only.split(",") if w.strip()]
        paths = {k: v for k, v in paths.items() if any(w in k for w in words)}
    if args.memory:
        print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; estate "
              f"{summary.get('assets', '?'):,} assets; memory of 1 and 4 workers"
              f"{' (--preload)' if args.preload else ''}", flush=True)
        try:
            memory = memory_phase(url, workdir, paths, token, args)
        finally:
            if args.postgres:
                cleanup(url)
            shutil.rmtree(workdir, ignore_errors=True)
        memory.update(size=args.size, preload=args.preload, threads_per_worker=args.gthreads or 1,
                      load_average=os.getloadavg()[0])
        RESULTS.mkdir(parents=True, exist_ok=True)
        target = RESULTS / (f"memory-{args.size}-{'postgresql' if args.postgres else 'sqlite'}"
                            f"{'-preload' if args.preload else ''}.json")
        target.write_text(json.dumps(memory, indent=2))
        print(f"written to {target}")
        return 0
    port = free_port()
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"estate {summary.get('assets', '?'):,} assets; gunicorn x{args.workers} on port {port}", flush=True)
    server = start_server(url, port, args.workers, workdir, args.gthreads, preload=args.preload)
    out: dict[str, Any] = {"size": args.size, "database": "postgresql" if args.postgres else "sqlite",
                           "workers": args.workers, "threads_per_worker": args.gthreads or 1,
                           "connections": args.connections, "duration_s": args.duration,
                           "generator": "python" if args.python else "wrk", "cpus": os.cpu_count(),
                           "load_average_before": os.getloadavg()[0], "assets": summary.get("assets")}
    collector = None
    try:
        started = time.perf_counter()
        warm(port, token, paths, args.workers)
        out["warmup_s"] = round(time.perf_counter() - started, 1)
        print(f"warmed up in {out['warmup_s']} s", flush=True)
        out["read"] = run_phase("read", port, token, paths, args)

        status_file = workdir / "collector.json"
        collector = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.load_test", "--collect-scopes", str(args.collect_scopes),
             "--collect-assets", str(args.collect_assets),
             "--collect-seconds", str(args.duration + 2), *(["--unchanged"] if args.unchanged else []),
             "--collector-only", url, str(status_file)],
            cwd=str(ROOT.parent), env=dict(os.environ, PLANB_LOG_LEVEL="WARNING"))
        time.sleep(1)
        out["read_with_collector"] = run_phase("read + collector", port, token, paths, args)
        still_running = collector.poll() is None
        collector.wait(timeout=600)
        result = json.loads(status_file.read_text()) if status_file.exists() else {"status": "crashed"}
        result["was_still_writing_at_end_of_phase"] = still_running
        out["collector"] = result
        print(f"collector: {result}", flush=True)
    finally:
        if collector is not None and collector.poll() is None:
            collector.kill()
        stop_server(server)
        out["load_average_after"] = os.getloadavg()[0]
        if args.postgres:
            cleanup(url)
        shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out["collector_changes"] = not args.unchanged
    variant = ("-gthread" if args.gthreads else "-sync") + ("-unchanged" if args.unchanged else "")
    target = RESULTS / f"load-{args.size}-{out['database']}{variant}.json"
    target.write_text(json.dumps(out, indent=2))
    print(f"written to {target}")
    errors = sum(f["errors"] for phase in ("read", "read_with_collector") for f in out[phase].values())
    return 0 if errors == 0 and out["collector"].get("status") == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
