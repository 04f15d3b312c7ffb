"""No query waits for the compiled kernel: NumPy answers until it is loaded, with the same answer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.impact import backend, blast_radius, kernel_numpy

SCOPES = [{"vendor": "CrowdStrike"},
          {"vendor": "CrowdStrike", "products": ["Falcon Sensor"], "version": ">=7.11", "os": ["windows"]},
          {"vendor": "Microsoft", "regions": ["centralus"]}]


def test_numpy_and_compiled_answers_are_identical(demo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(demo_url)
    try:
        with so.Session(engine) as db:
            monkeypatch.setattr(backend, "_compiled", None)
            monkeypatch.setenv("PLANB_IMPACT_KERNEL", "numpy")
            assert backend.routines() is kernel_numpy
            with_numpy = [blast_radius(db, s, now=None).to_dict() for s in SCOPES]
            compiled = backend.load_now()
            assert backend.routines() is compiled
            with_kernel = [blast_radius(db, s).to_dict() for s in SCOPES]
    finally:
        engine.dispose()
    for a, b in zip(with_numpy, with_kernel):
        a.pop("computed_at"), b.pop("computed_at")
        assert a == b


def test_numpy_mode_never_loads_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANB_IMPACT_KERNEL", "numpy")
    monkeypatch.setattr(backend, "_compiled", None)
    monkeypatch.setattr(backend, "_state", "numpy")
    assert backend.start_loading() is False
    assert backend.routines() is kernel_numpy


def test_a_fresh_install_answers_at_once_and_loads_the_kernel_behind(demo_url: str, tmp_path: Path) -> None:
    """No Numba cache at all (a fresh install): the first blast radius imports no Numba and
    is answered with NumPy; the kernel is compiled in a child process and loaded in the
    background, and later answers come from it, unchanged."""
    script = textwrap.dedent(f"""
        import json, sys, time
        import sqlalchemy.orm as so
        from inventory.db import make_engine
        from inventory.impact import backend, blast_radius
        db = so.Session(make_engine({demo_url!r}))
        scope = {json.dumps(SCOPES[1])}
        first = blast_radius(db, scope).to_dict()
        report = {{"numba_after_first": "numba" in sys.modules, "kernel_first": backend.state()["kernel"]}}
        report["started"] = backend.start_loading()
        deadline = time.monotonic() + 600
        while backend.state()["kernel"] != "compiled" and not backend.state()["failed"]:
            assert time.monotonic() < deadline
            blast_radius(db, scope)          # answered meanwhile, with NumPy
            time.sleep(0.2)
        later = blast_radius(db, scope).to_dict()
        first.pop("computed_at"), later.pop("computed_at")
        report.update(kernel_later=backend.state()["kernel"], same=first == later)
        print(json.dumps(report))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "empty-numba-cache"), PLANB_IMPACT_KERNEL="auto")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"numba_after_first": False, "kernel_first": "numpy", "started": True,
                      "kernel_later": "compiled", "same": True}
    assert list((tmp_path / "empty-numba-cache").rglob("*.nbi"))     # compiled into that cache
