"""`planb collect all --every DURATION [--jitter DURATION]`: a schedule that stops cleanly on SIGTERM.

Run as real subprocesses receiving real signals.  The osquery source reads its results file
through a FIFO, so the test knows exactly when a run is in progress: the collector blocks
opening the FIFO until the test opens it for writing.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from inventory.cli import main
from inventory.cli.collect import DURATION, format_duration
from inventory.db import make_engine
from inventory.models import CollectionRun
from tests.deploy.helpers import PLANB

FIXTURE = Path(__file__).resolve().parents[1] / "collectors" / "fixtures" / "osquery" / "ubuntu.results.log"


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600),
                                           ("1h30m", 5400), ("2d", 172800), ("1.5h", 5400), ("0", 0)])
def test_durations(text, seconds):
    assert DURATION.convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 30x", "-5m", "400d", "1h1h1h1h1h-"])
def test_bad_durations_are_refused(text):
    result = CliRunner().invoke(main, ["collect", "all", "--every", text])
    assert result.exit_code == 2 and "--every" in result.output


def test_every_must_be_at_least_a_second_and_jitter_needs_every():
    result = CliRunner().invoke(main, ["collect", "all", "--every", "0.5"])
    assert result.exit_code == 2 and "shorter than one second" in result.output
    result = CliRunner().invoke(main, ["collect", "all", "--jitter", "5m"])
    assert result.exit_code == 2 and "--jitter needs --every" in result.output


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.6, 61, 3600, 5430)] == ["0s", "1m", "1m 1s",
                                                                      "1h", "1h 30m 30s"]


class Collector:
    """`planb collect all --every ...` in a subprocess, its stderr read line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen([PLANB, "collect", "all", *args], env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._partial = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.process.stderr, selectors.EVENT_READ)

    def wait_for(self, fragment: str, timeout: float = 60) -> str:
        # Raw reads of the pipe: a buffered readline() could keep lines in its buffer where the
        # selector never sees them, while the process waits for the test to act on them.
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.lines:
                if fragment in line:
                    return line
            if self._selector.select(timeout=0.5):
                chunk = os.read(self.process.stderr.fileno(), 65536)
                if not chunk:
                    break
                *complete, self._partial = (self._partial + chunk).split(b"\n")
                self.lines += [line.decode() for line in complete]
        raise AssertionError(f"never printed {fragment!r}; stderr so far:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        self.lines += (self._partial + err).decode().splitlines()
        return self.process.returncode, out.decode(), "\n".join(self.lines)


def _env(database_url: str, osquery_path: Path, tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PLANB_")}
    env.update(PLANB_DATABASE_URL=database_url, PLANB_INSTANCE_PATH=str(tmp_path / "instance"),
               PLANB_SECRET_KEY="collect-every-test", PLANB_LOG_LEVEL="WARNING",
               PLANB_COLLECT_HOST="false", PLANB_COLLECT_OSQUERY_PATHS=str(osquery_path))
    return env


def _runs(database_url: str) -> list[tuple[str, str]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(
                sa.select(CollectionRun.collector, CollectionRun.status).order_by(CollectionRun.id))]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sigterm_during_a_run_finishes_that_run_then_exits_0(sqlite_url, tmp_path):
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    collector = Collector(_env(sqlite_url, fifo, tmp_path), "--every", "1s", "--jitter", "1s")
    try:
        with open(fifo, "w") as pipe:    # returns once run 1 opened the FIFO
            pipe.write(FIXTURE.read_text())
        collector.wait_for("collect all: run 1 done; next run in")
        with open(fifo, "w") as pipe:    # run 2 is reading the FIFO right now
            collector.process.send_signal(signal.SIGTERM)
            collector.wait_for("SIGTERM received, stopping after the current run")
            pipe.write(FIXTURE.read_text())
        code, out, err = collector.finish()
    finally:
        if collector.process.poll() is None:
            collector.process.kill()
    assert code == 0, err
    assert "collect all: stopped" in err
    assert "run 3" not in err
    # Each run's summary, the interrupted one included; both finished (one host of the fixture
    # lacks a table, so they are partial), none left "running".
    assert [line.split(") — ")[1] for line in out.splitlines() if line.startswith("Run ")] == ["partial"] * 2
    assert _runs(sqlite_url) == [("osquery", "partial"), ("osquery", "partial")]


@pytest.mark.slow
def test_sigterm_between_runs_stops_at_once_and_exits_0(sqlite_url, tmp_path):
    collector = Collector(_env(sqlite_url, FIXTURE, tmp_path), "--every", "1h", "--jitter", "10m")
    try:
        line = collector.wait_for("collect all: run 1 done; next run in")
        wait = line.rsplit("next run in ", 1)[1]
        assert wait.startswith(("59m", "1h")), line   # the hour from the run's start, plus up to 10m
        started = time.monotonic()
        collector.process.send_signal(signal.SIGTERM)
        code, _out, err = collector.finish(timeout=30)
    finally:
        if collector.process.poll() is None:
            collector.process.kill()
    assert code == 0, err
    assert time.monotonic() - started < 10
    assert err.rstrip().endswith("collect all: stopped")
    assert _runs(sqlite_url) == [("osquery", "partial")]


def _feed_until_exit(collector: Collector, fifo: Path, text: str, timeout: float = 60) -> None:
    """Hand ``text`` to any run that opens the FIFO until the process has exited."""
    end = time.monotonic() + timeout
    while collector.process.poll() is None and time.monotonic() < end:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)   # ENXIO: no run is reading it
        except OSError:
            time.sleep(0.1)
            continue
        with os.fdopen(fd, "w") as pipe:
            pipe.write(text)


@pytest.mark.slow
def test_a_failing_run_does_not_stop_the_schedule(sqlite_url, tmp_path):
    # Run 1 reads the results file; run 2 finds it unreadable, says so, and the schedule goes on.
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    collector = Collector(_env(sqlite_url, fifo, tmp_path), "--every", "1s")
    try:
        with open(fifo, "w") as pipe:
            pipe.write(FIXTURE.read_text())
        collector.wait_for("collect all: run 1 done")
        with open(fifo, "w") as pipe:
            pipe.write("not json\n")
        collector.wait_for("collect all: run 2 done")
        collector.process.send_signal(signal.SIGINT)
        _feed_until_exit(collector, fifo, FIXTURE.read_text())   # should run 3 have started
        code, _out, err = collector.finish()
    finally:
        if collector.process.poll() is None:
            collector.process.kill()
    assert code == 0, err
    assert "Error: osquery: " in err and "invalid JSON" in err
    runs = _runs(sqlite_url)   # run 2 never got as far as recording a run
    assert runs[0] == ("osquery", "partial") and set(runs) == {("osquery", "partial")}


def test_nothing_configured_is_an_error_not_a_schedule(sqlite_url, tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("PLANB_COLLECT"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PLANB_COLLECT_HOST", "false")
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    result = CliRunner().invoke(main, ["collect", "all", "--every", "1h"])
    assert result.exit_code == 1
    assert "no collector is configured" in result.output
