"""Run every benchmark in one go: ``python -m benchmarks [--size S|M] [--quick]``.

Each benchmark prints its own table with ratios against the baselines it
measures in the same run (raw executemany and naive ORM for ingest; raw executemany and
CloudQuery's 5,800 rows/s for fleet collection through 'planb collect osquery'; scipy and
networkx for the impact engine; the page timings and the load test against
their targets).  ``--quick`` uses the 10k-asset estate, the 4,000-host results log and fewer
repetitions, for a smoke run; the figures in docs/explanation/benchmarks.md come from the default (M, 100k assets).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks import bench_collect, bench_impact, bench_ingest, bench_pages, load_test

PG_URL = os.environ.get("PLANB_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="M", help="S (10k assets) or M (100k assets); default M")
    parser.add_argument("--quick", action="store_true", help="10k assets, fewer repetitions")
    parser.add_argument("--skip", default="", help="comma-separated: impact,ingest,collect,pages,load")
    args = parser.parse_args(argv)
    size = "S" if args.quick else args.size
    assets = 10_000 if size == "S" else 100_000
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    runs = [
        ("impact", bench_impact.main, ["--size", size, "--postgres", PG_URL]
         + (["--repeat", "3"] if args.quick else [])),
        ("ingest", bench_ingest.main, ["--assets", str(assets)]),
        ("collect", bench_collect.main, ["--quick"] if args.quick else []),
        ("pages", bench_pages.main, ["--size", size] + (["--repeat", "5"] if args.quick else [])),
        ("load", load_test.main, ["--size", size, "--duration", "10" if args.quick else "30"]),
    ]
    failures = []
    for name, run, run_args in runs:
        if name in skip:
            continue
        print(f"\n===== {name}: python -m benchmarks.{run.__module__.split('.')[-1]} {' '.join(run_args)}",
              flush=True)
        started = time.perf_counter()
        code = run(run_args)
        print(f"===== {name} finished in {time.perf_counter() - started:.0f} s (exit {code})", flush=True)
        if code:
            failures.append(name)
    if failures:
        print(f"benchmarks that reported a problem: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
