"""Fleet-scale collection: ``planb collect osquery`` on a generated results log, end to end.

    python -m benchmarks.bench_collect                  # 4,000 and 100,000 hosts, SQLite and PostgreSQL
    python -m benchmarks.bench_collect --quick          # 4,000 hosts only
    python -m benchmarks.bench_collect --hosts 20000 --backends sqlite

For each size a results log is generated deterministically (osqueryd's snapshot format:
``system_info``, ``os_version``, the platform's package table and, for a fifth of the
hosts, ``ec2_instance_metadata``; Ubuntu, Windows, RHEL and macOS hosts):

* **4,000 hosts, 1-4 packages each** (about 18,000 rows: the file the issue measured);
* **100,000 hosts, 5-30 packages each** (about 2 million rows).

Each phase runs the real command, ``planb collect --quiet osquery FILE``, in a fresh
process against a freshly migrated database (a file for SQLite, a throw-away schema on
PostgreSQL, ``PLANB_BENCH_POSTGRES_URL``):

* **cold** — an empty inventory;
* **unchanged** — the same file again (must write nothing but run bookkeeping).

Printed per phase: wall time of the process (start to exit), rows/s (rows of the log:
system_info + os_version + packages), its CPU time (user + system) and peak memory (the
child's ``VmHWM``, polled), the load average around it, and two baselines measured in the
same run:

* **raw executemany** — the DB-API ``executemany`` of the same rows Plan B stored (assets,
  installations, unattributed software; vendors and products pre-loaded): plain INSERTs for
  cold, a blind ``INSERT … ON CONFLICT DO UPDATE`` of every row for unchanged. "vs raw" is
  raw time ÷ Plan B time (1× = as fast as the raw ceiling);
* **CloudQuery's 5,800 resources/s** into PostgreSQL (its published figure): "vs CQ" is
  Plan B's rows/s ÷ 5,800 (goal ≥ 5×).

After the largest log on SQLite, the runs pages, a blast radius page and the JSON API
(whose confidence report reads the latest state of every scope) are timed on the collected
fleet — 100,000 scopes — through the Flask test client (budget 200 ms, like bench_pages).

Goals (issue 13): 4,000 hosts cold ≤ 3 s on SQLite, ≤ 5 s on PostgreSQL, unchanged ≤ 1.5 s;
100,000 hosts cold ≤ 60 s, unchanged ≤ 20 s, peak memory ≤ 1 GiB. This machine is shared:
compare figures only with the load average beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

PG_URL = os.environ.get("PLANB_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CLOUDQUERY_ROWS_PER_SECOND = 5_800
SEED = 13
T0 = 1_733_400_000   # unixTime of the first result (2024-12-05)

SIZES = {"4k": (4_000, 1, 4), "100k": (100_000, 5, 30)}
GOALS = {  # (hosts, backend, phase) -> seconds
    (4_000, "sqlite", "cold"): 3.0, (4_000, "postgresql", "cold"): 5.0,
    (4_000, "sqlite", "unchanged"): 1.5, (4_000, "postgresql", "unchanged"): 1.5,
    (100_000, "sqlite", "cold"): 60.0, (100_000, "postgresql", "cold"): 60.0,
    (100_000, "sqlite", "unchanged"): 20.0, (100_000, "postgresql", "unchanged"): 20.0,
}


# -- the results log ------------------------------------------------------------------------------

_DEB_MAINTAINERS = ["Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>",
                    "Debian Python Team <team+python@tracker.debian.org>", "Debian QA Group <packages@qa.debian.org>",
                    "Canonical Kernel Team <kernel-team@lists.ubuntu.com>", "CrowdStrike, Inc.",
                    "Datadog Packages <package@datadoghq.com>", "Amazon Web Services", "Docker <support@docker.com>",
                    "Elastic <info@elastic.co>", "Microsoft Corporation", "Jane Doe <jane@example.org>"]
_WIN_PUBLISHERS = ["Microsoft Corporation", "Google LLC", "Mozilla", "CrowdStrike, Inc.", "Adobe Inc.",
                   "Oracle Corporation", "Zscaler, Inc.", "Cisco Systems, Inc.", "VMware, Inc.", "Igor Pavlov",
                   "Notepad++ Team", "Python Software Foundation", "Qualys, Inc.", "Splunk, Inc.", "Acme Tools Ltd"]
_RPM_VENDORS = ["Red Hat, Inc.", "CrowdStrike, Inc.", "Fedora Project", "Datadog, Inc.", "Amazon Linux",
                "Elasticsearch", "Microsoft Corporation", "Tenable, Inc.", "Acme Builds"]
_APP_IDS = ["com.google.Chrome", "com.microsoft.Word", "com.crowdstrike.falcon.App", "org.mozilla.firefox",
            "com.apple.Safari", "com.tinyspeck.slackmacgap", "us.zoom.xos", "com.docker.docker", "com.acme.Tool"]
PLATFORMS = (("ubuntu", 55), ("windows", 25), ("rhel", 15), ("darwin", 5))


def _pool(rng: random.Random, platform: str, size: int) -> list[dict[str, str]]:
    rows = []
    for i in range(size):
        version = f"{rng.randint(0, 12)}.{rng.randint(0, 40)}.{rng.randint(0, 300)}"
        if platform == "ubuntu":
            rows.append({"name": f"pkg-{i:03d}", "version": f"{version}-1ubuntu{rng.randint(1, 9)}",
                         "source": f"pkg-{i:03d}", "size": str(rng.randint(10, 90000)), "arch": "amd64",
                         "revision": "1", "status": "install ok installed",
                         "maintainer": rng.choice(_DEB_MAINTAINERS), "section": "utils", "priority": "optional"})
        elif platform == "windows":
            publisher = rng.choice(_WIN_PUBLISHERS)
            rows.append({"name": f"{publisher.split()[0].strip(',')} App {i:03d}", "version": version,
                         "install_location": f"C:\\\\Program Files\\\\App{i:03d}\\\\", "install_source": "",
                         "language": "1033", "publisher": publisher, "uninstall_string": "MsiExec.exe /X{...}",
                         "install_date": "20240101", "identifying_number": f"{{{uuid.UUID(int=rng.getrandbits(128))}}}"})
        elif platform == "rhel":
            rows.append({"name": f"rpm-{i:03d}", "version": version, "release": f"{rng.randint(1, 9)}.el9",
                         "source": f"rpm-{i:03d}-{version}.src.rpm", "size": str(rng.randint(10, 90000)),
                         "sha1": "", "arch": "x86_64", "epoch": "", "install_time": "1721362152",
                         "vendor": rng.choice(_RPM_VENDORS), "package_group": "Unspecified"})
        else:
            bundle = f"{rng.choice(_APP_IDS)}{i:03d}"
            rows.append({"name": f"App {i:03d}.app", "path": f"/Applications/App {i:03d}.app",
                         "bundle_executable": f"App{i:03d}", "bundle_identifier": bundle,
                         "bundle_name": f"App {i:03d}", "bundle_short_version": version, "bundle_version": version})
    return rows


_OS = {"ubuntu": ("Ubuntu", "22.04.4 LTS (Jammy Jellyfish)", "22", "4", "ubuntu", "debian", "jammy",
                  "deb_packages"),
       "windows": ("Microsoft Windows Server 2022 Datacenter", "10.0.20348", "10", "0", "windows", "windows", "",
                   "programs"),
       "rhel": ("Red Hat Enterprise Linux", "9.3 (Plow)", "9", "3", "rhel", "fedora", "plow", "rpm_packages"),
       "darwin": ("macOS", "14.6.1", "14", "6", "darwin", "darwin", "", "apps")}


def write_results_log(path: Path, hosts: int, low: int, high: int, seed: int = SEED) -> dict[str, int]:
    """A deterministic osqueryd results log (snapshot format); returns row and line counts."""
    rng = random.Random(seed)
    pools = {p: _pool(rng, p, {"ubuntu": 400, "windows": 150, "rhel": 250, "darwin": 60}[p]) for p, _w in PLATFORMS}
    platforms = [p for p, w in PLATFORMS for _ in range(w)]
    rows = lines = 0
    window = 500
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, hosts, window):
            block = []
            for n in range(start, min(start + window, hosts)):
                platform = platforms[rng.randrange(len(platforms))]
                name = f"{platform[:3]}-{n:06d}"
                block.append((name, platform, rng.sample(pools[platform], rng.randint(low, high)),
                              rng.random() < 0.2, str(uuid.UUID(int=rng.getrandbits(128))).upper()))
            queries: list[tuple[str, Callable[[Any], list[dict[str, str]] | None]]] = [
                ("system_info", lambda h: [{"hostname": h[0], "uuid": h[4], "cpu_type": "x86_64",
                                            "cpu_brand": "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
                                            "physical_memory": "17179869184", "hardware_vendor": "Amazon EC2",
                                            "hardware_model": "m5.xlarge", "computer_name": h[0]}]),
                ("os_version", lambda h: [dict(zip(("name", "version", "major", "minor", "platform", "platform_like",
                                                    "codename"), _OS[h[1]][:7]), build="", arch="x86_64")]),
                ("packages", lambda h: h[2]),
                ("ec2_instance_metadata", lambda h: [{"instance_id": "i-" + h[4].replace("-", "")[:17].lower(),
                                                      "account_id": "111122223333", "region": "us-east-1",
                                                      "availability_zone": "us-east-1a", "ami_id": "ami-0abc"}]
                 if h[3] else None),
            ]
            for offset, (query, build) in enumerate(queries):
                for i, host in enumerate(block):
                    snapshot = build(host)
                    if snapshot is None:
                        continue
                    table = _OS[host[1]][7] if query == "packages" else query
                    fh.write(json.dumps({
                        "name": f"pack_planb_{table}", "hostIdentifier": host[0],
                        "calendarTime": "Thu Dec  5 12:00:00 2024 UTC", "unixTime": T0 + offset * 60 + i,
                        "epoch": 0, "counter": 0, "numerics": False,
                        "decorations": {"host_uuid": host[4], "hostname": host[0]},
                        "action": "snapshot", "snapshot": snapshot}) + "\n")
                    lines += 1
                    if query != "ec2_instance_metadata":
                        rows += len(snapshot)
    return {"hosts": hosts, "rows": rows, "lines": lines, "bytes": path.stat().st_size}


# -- databases --------------------------------------------------------------------------------------

@dataclass
class Backend:
    name: str
    make: Callable[[], str]
    drop: Callable[[str], None]


def backends(names: list[str], workdir: str, pg_url: str) -> list[Backend]:
    from benchmarks.bench_ingest import postgres_backend, sqlite_backend
    return [sqlite_backend(workdir) if n == "sqlite" else postgres_backend(pg_url) for n in names]


# -- one phase: the real command in a fresh process --------------------------------------------------

def run_child(url: str, log: Path, instance: str) -> dict[str, Any]:
    """``planb collect --quiet osquery LOG`` in a fresh process: wall time, CPU time, peak RSS."""
    env = dict(os.environ, PLANB_DATABASE_URL=url, PLANB_INSTANCE_PATH=instance,
               PLANB_SECRET_KEY="bench-secret", PLANB_LOG_LEVEL="WARNING")
    load_before = os.getloadavg()
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "inventory.cli", "collect", "--quiet", "osquery", str(log)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = b"", b""
    # Peak memory: the child's own high-water mark (VmHWM), polled while it runs.  Not
    # ru_maxrss: Linux carries the parent's high-water mark over a vfork + exec into it, so
    # a child started while this process held a phase's rows reported gigabytes it never used.
    peak_kib = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak_kib = max(peak_kib, _high_water_kib(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        raise RuntimeError(f"planb collect osquery exited {code}: {err.decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mib": (peak_kib or usage.ru_maxrss) / 1024,
            "exit": code, "load_before": load_before[0], "load_after": os.getloadavg()[0],
            "summary": out.decode().strip().splitlines()[-1] if out else ""}


def _high_water_kib(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM`` of /proc/PID/status), 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


# -- the raw ceiling -------------------------------------------------------------------------------

_TABLES = {
    "assets": ("natural_key", "name", "kind", "provider", "account", "region", "zone", "hostname",
               "cloud_instance_id", "os_family", "os_name", "os_version", "criticality", "tags", "attributes",
               "provenance", "source", "source_scope", "first_seen", "last_seen", "created_at", "updated_at"),
    "installations": ("asset_id", "product_id", "version", "raw_name", "raw_publisher", "source", "attributes",
                      "first_seen", "last_seen"),
    "unattributed_software": ("asset_id", "name", "publisher", "version", "source", "first_seen", "last_seen"),
}
_CONFLICT = {"assets": ("natural_key",), "installations": ("asset_id", "product_id"),
             "unattributed_software": None}


def stored_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """What Plan B stored, as DB-API rows (ids of assets kept so references match)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = {"vendors": conn.exec_driver_sql("SELECT id, name, tier, has_alternative, exit_plan_documented, "
                                                    "created_at, updated_at FROM vendors").all(),
                    "products": conn.exec_driver_sql("SELECT id, vendor_id, name, kind, vendor_pushes_updates "
                                                     "FROM products").all()}
            for table, cols in _TABLES.items():
                rows[table] = conn.exec_driver_sql(
                    f"SELECT {'id, ' if table == 'assets' else ''}{', '.join(cols)} FROM {table}").all()
            return rows
    finally:
        engine.dispose()


def raw_executemany(url: str, rows: dict[str, list[tuple[Any, ...]]], upsert: bool) -> float:
    """The same rows with the driver's executemany in one transaction: the ceiling (vendors
    and products are loaded first and not timed)."""
    from inventory.db import make_engine
    engine = make_engine(url)
    pg = engine.dialect.name == "postgresql"
    mark = "%s" if pg else "?"
    if pg:  # JSON columns come back as dicts: hand them over as JSON again
        from psycopg.types.json import Json
        rows = {table: [tuple(Json(v) if isinstance(v, (dict, list)) else v for v in row) for row in table_rows]
                for table, table_rows in rows.items()}
    try:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            if not pg:
                cur.execute("BEGIN")
            if not upsert:
                cur.executemany(f"INSERT INTO vendors (id, name, tier, has_alternative, exit_plan_documented, "
                                f"created_at, updated_at) VALUES ({', '.join([mark] * 7)})", rows["vendors"])
                cur.executemany(f"INSERT INTO products (id, vendor_id, name, kind, vendor_pushes_updates) "
                                f"VALUES ({', '.join([mark] * 5)})", rows["products"])
                raw.commit()
                if not pg:
                    cur.execute("BEGIN")
            started = time.perf_counter()
            for table, cols in _TABLES.items():
                cols = (("id",) + cols) if table == "assets" else cols
                sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
                conflict = _CONFLICT[table]
                if upsert and conflict:
                    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in conflict and c != "id")
                    sql += f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}"
                elif upsert:
                    sql += " ON CONFLICT DO NOTHING"
                cur.executemany(sql, rows[table])
            raw.commit()
            return time.perf_counter() - started
        finally:
            raw.close()
    finally:
        engine.dispose()


# -- the benchmark ----------------------------------------------------------------------------------

def time_pages(url: str, say: Callable[[str], None], repeat: int = 10) -> list[dict[str, Any]]:
    """Server time of the runs pages, a blast radius (its confidence report reads every scope's
    latest state) and the JSON API on the collected fleet (Flask test client, as bench_pages)."""
    import statistics

    from benchmarks.bench_pages import BENCH_PASSWORD, BENCH_USER, drop_caches, make_app, p95
    from inventory.app_db import get_session
    from inventory.auth import create_token, create_user
    from inventory.models import CollectionRun, ScopeState

    app = make_app(url)
    with app.app_context():
        db = get_session()
        create_user(db, BENCH_USER, "editor", BENCH_PASSWORD)
        _token, plaintext = create_token(db, "bench", "read")
        db.commit()
        run_id = db.scalar(sa.select(sa.func.max(CollectionRun.id)))
        n_states = db.scalar(sa.select(sa.func.count()).select_from(ScopeState))
    client = app.test_client()
    client.post("/login", data={"username": BENCH_USER, "password": BENCH_PASSWORD})
    bearer = {"Authorization": f"Bearer {plaintext}"}
    timed = []
    for name, path, headers in (("collection runs", "/runs/", {}),
                                ("collection run detail", f"/runs/{run_id}", {}),
                                ("blast radius page: CrowdStrike", "/impact/?vendor=CrowdStrike", {}),
                                ("API: impact CrowdStrike (confidence)", "/api/v1/impact?vendor=CrowdStrike", bearer)):
        app.config["BLAST_PAGE_CACHE"] = False
        drop_caches()
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        cold = (time.perf_counter() - started) * 1000
        client.get(path, headers=headers)
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            samples.append((time.perf_counter() - started) * 1000)
        timed.append({"page": name, "status": response.status_code, "scopes": n_states, "cold_ms": cold,
                      "median_ms": statistics.median(samples), "p95_ms": p95(samples)})
        say(f"  {name}: HTTP {response.status_code}, median {timed[-1]['median_ms']:.0f} ms")
    app.extensions["planb_engine"].dispose()
    return timed


def bench(backend: Backend, log: Path, info: dict[str, int], say: Callable[[str], None],
          pages: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    instance = tempfile.mkdtemp(prefix="planb-bench-instance-")
    planb_url, raw_url = backend.make(), backend.make()
    results = []
    try:
        for phase in ("cold", "unchanged"):
            say(f"{backend.name}, {info['hosts']:,} hosts: {phase} ...")
            # The child first, while this process holds nothing large: a forked child's peak
            # memory starts from its parent's.
            measured = run_child(planb_url, log, instance)
            rows = stored_rows(planb_url)
            raw_s = raw_executemany(raw_url, rows, upsert=phase == "unchanged")
            written = sum(len(rows[t]) for t in _TABLES)
            del rows
            results.append({"backend": backend.name, "hosts": info["hosts"], "phase": phase, "rows": info["rows"],
                            "stored_rows": written, "raw_s": raw_s, **measured,
                            "rows_per_s": info["rows"] / measured["wall_s"],
                            "goal_s": GOALS.get((info["hosts"], backend.name, phase))})
            say(f"  {measured['wall_s']:.2f} s ({measured['summary']}); raw executemany {raw_s:.2f} s")
        if pages is not None:
            pages.extend(time_pages(planb_url, say))
    finally:
        backend.drop(planb_url)
        backend.drop(raw_url)
        shutil.rmtree(instance, ignore_errors=True)
    return results


def print_pages(pages: list[dict[str, Any]]) -> None:
    if not pages:
        return
    print(f"\npages and API on the collected fleet ({pages[0]['scopes']:,} scope states; budget 200 ms; "
          f"load {os.getloadavg()[0]:.1f})")
    print(f"{'page':42} {'status':>6} {'cold ms':>8} {'median ms':>10} {'p95 ms':>8}")
    for p in pages:
        print(f"{p['page']:42} {p['status']:>6} {p['cold_ms']:>8.0f} {p['median_ms']:>10.0f} {p['p95_ms']:>8.0f}")


def print_table(results: list[dict[str, Any]], logs: dict[int, dict[str, int]]) -> None:
    print()
    for hosts, info in sorted(logs.items()):
        print(f"log of {hosts:,} hosts: {info['rows']:,} rows in {info['lines']:,} lines, "
              f"{info['bytes'] / 2**20:.0f} MiB")
    header = (f"{'backend':<10} {'hosts':>7} {'phase':<9} {'wall s':>7} {'goal s':>6} {'rows/s':>9} {'vs CQ':>6} "
              f"{'raw s':>6} {'vs raw':>6} {'CPU s':>6} {'peak MiB':>8} {'load':>10}")
    print(header)
    print("-" * len(header))
    for r in results:
        goal = f"{r['goal_s']:.1f}" if r["goal_s"] else "-"
        mark = "" if not r["goal_s"] else (" ok" if r["wall_s"] <= r["goal_s"] else " !")
        print(f"{r['backend']:<10} {r['hosts']:>7,} {r['phase']:<9} {r['wall_s']:>7.2f} {goal:>6} "
              f"{r['rows_per_s']:>9,.0f} {r['rows_per_s'] / CLOUDQUERY_ROWS_PER_SECOND:>5.1f}x "
              f"{r['raw_s']:>6.2f} {r['raw_s'] / r['wall_s']:>5.2f}x {r['cpu_s']:>6.1f} {r['peak_mib']:>8.0f} "
              f"{r['load_before']:>4.1f}→{r['load_after']:<4.1f}{mark}")
    print("wall s: the whole 'planb collect --quiet osquery FILE' process (start to exit); rows/s: rows of the log "
          "per second; vs CQ: ÷ CloudQuery's 5,800/s (goal ≥ 5x); raw s: executemany of the rows Plan B stored "
          "(cold: INSERT; unchanged: blind upsert), vs raw = raw s ÷ wall s; CPU s: user + system of the process; "
          "load: 1-minute load average before → after (2 cores; other work on the machine shows here)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the 4,000-host log only")
    parser.add_argument("--hosts", type=int, default=None, help="one log of N hosts with 5-30 packages each")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--no-pages", action="store_true",
                        help="skip timing the runs pages, a blast radius and the API on the largest fleet")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.hosts:
        sizes = [(args.hosts, 5, 30)]
    else:
        sizes = [SIZES["4k"]] + ([] if args.quick else [SIZES["100k"]])
    workdir = tempfile.mkdtemp(prefix="planb-bench-collect-")
    results: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    logs: dict[int, dict[str, int]] = {}
    say(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on "
        f"{os.cpu_count()} cores")
    try:
        for hosts, low, high in sizes:
            log = Path(workdir) / f"osqueryd-{hosts}.results.log"
            started = time.perf_counter()
            logs[hosts] = write_results_log(log, hosts, low, high)
            say(f"generated {log.name}: {logs[hosts]['rows']:,} rows in {time.perf_counter() - started:.1f} s")
            for backend in backends(args.backends.split(","), workdir, args.pg_url):
                timed_pages = pages if (backend.name == "sqlite" and hosts == max(h for h, _l, _h in sizes)
                                        and not args.no_pages) else None
                results.extend(bench(backend, log, logs[hosts], say, timed_pages))
            log.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, logs)
    print_pages(pages)
    if args.json:
        print(json.dumps({"phases": results, "pages": pages}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
