"""Helpers for the deployment tests: a real `planb serve` on a free loopback port, scrapes parsed."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
PLANB = str(Path(sys.executable).parent / "planb")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Connection": "close", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_up(base: str, process: subprocess.Popen, path: str = "/healthz", deadline: float = 90) -> int:
    """Poll ``path`` until it answers 200; returns how many requests that took."""
    end = time.monotonic() + deadline
    polls = 0
    while time.monotonic() < end:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            # A generous timeout: a connection accepted into the socket's backlog before the
            # workers are up is answered (and counted by the app) once they are.
            status, _body = get(base + path, timeout=deadline)
            polls += 1
            if status == 200:
                return polls
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError):
                raise
            # Nothing listens yet: nothing reached the app.
        time.sleep(0.2)
    raise AssertionError(f"{base}{path} never answered 200")


@contextmanager
def planb_serve(env: dict[str, str], *args: str, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``planb serve --host 127.0.0.1 --port <free> *args`` until the block ends (then SIGTERM)."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen([PLANB, "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(log.parent))
        try:
            yield f"http://127.0.0.1:{port}", process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def server_env(database_url: str, tmp_path: Path, secret: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PLANB_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(PLANB_DATABASE_URL=database_url, PLANB_INSTANCE_PATH=str(tmp_path / "instance"),
               PLANB_SECRET_KEY=secret, PLANB_LOG_LEVEL="WARNING", **extra)
    return env


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scrape: dict, name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


def json_body(body: bytes) -> dict:
    return json.loads(body.decode())
