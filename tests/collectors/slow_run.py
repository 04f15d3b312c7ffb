"""A collection run that applies one scope and then hangs: the process the lease test kills.

    python -m tests.collectors.slow_run DATABASE_URL

Planned scopes ``osquery:dead-1`` and ``osquery:dead-2`` are locked up front; the first is
yielded and applied, then the collector sleeps (the run's heartbeat goes on renewing its
lease, ``PLANB_RUN_LEASE_SECONDS``) until the test kills the process with SIGKILL.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator

from collectors.base import AssetRecord, ProgressFn, ScopeBatch
from collectors.ingest import run_collection
from inventory.db import make_engine

SCOPES = ["osquery:dead-1", "osquery:dead-2"]


class Hanging:
    name = "osquery"

    def describe_scope(self) -> str:
        return "a run that hangs after its first scope"

    def planned_scopes(self) -> list[str]:
        return list(SCOPES)

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        yield ScopeBatch(SCOPES[0], [AssetRecord(natural_key="host:dead-1", name="dead-1", kind="host")])
        time.sleep(3600)


if __name__ == "__main__":
    run_collection(make_engine(sys.argv[1]), Hanging())
