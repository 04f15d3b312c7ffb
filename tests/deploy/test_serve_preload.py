"""`planb serve` builds the app once, in the gunicorn master, and forks the workers from it:
the master holds the impact graph and no database connection at the fork; a worker answers
from the inherited graph without loading it again; locks held at the fork do not follow."""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from inventory.cli import serve
from inventory.db import read_session
from inventory.impact import blast_radius
from inventory.impact import graph as impact_graph
from tests.conftest import TEST_SECRET, bearer, create_api_token, make_test_app
from tests.deploy.helpers import get, json_body, planb_serve, server_env, wait_until_up

SCOPE = {"vendor": "CrowdStrike"}


@pytest.fixture
def master_app(demo_url, tmp_path):  # type: ignore[no-untyped-def]
    impact_graph.clear_cache()
    app = make_test_app(demo_url, tmp_path / "instance")
    yield app
    app.extensions["planb_engine"].dispose()
    impact_graph.clear_cache()


def _answer(engine) -> dict:  # type: ignore[no-untyped-def]
    with read_session(engine) as db:
        answer = blast_radius(db, SCOPE).to_dict(limit=20, seeds_limit=20)
    answer.pop("computed_at")
    return answer


def test_the_master_holds_the_graph_and_no_connection(master_app):
    engine = master_app.extensions["planb_engine"]
    seen: list[str] = []
    spies = {event: (lambda _value, event=event: seen.append(event)) for event in impact_graph.OBSERVERS}
    for event, spy in spies.items():
        impact_graph.OBSERVERS[event].append(spy)
    try:
        serve.prepare_master(master_app)
        held = impact_graph.peek(engine)
        assert held is not None and held.n > 0
        assert engine.pool.checkedout() == 0 and engine.pool.checkedin() == 0
        assert seen == ["rebuild"], "the master loads twice, or its warm-up query is counted as a worker's"
        # The observers are back: a query now is observed as before.
        _answer(engine)
        assert "query" in seen
    finally:
        for event, spy in spies.items():
            impact_graph.OBSERVERS[event].remove(spy)


def test_a_forked_worker_answers_from_the_inherited_graph(master_app):
    engine = master_app.extensions["planb_engine"]
    serve.prepare_master(master_app)
    held = impact_graph.peek(engine)
    expected = _answer(engine)
    engine.dispose()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the worker
        code = 1
        try:
            os.close(read_end)
            serve._after_fork(None, None)
            rebuilds: list[float] = []
            impact_graph.OBSERVERS["rebuild"].append(rebuilds.append)
            answer = _answer(engine)
            report = {"same_graph": impact_graph.peek(engine) is held, "rebuilds": len(rebuilds),
                      "answer": answer}
            with os.fdopen(write_end, "w") as out:
                json.dump(report, out, default=str)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as source:
        report = json.load(source)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report["same_graph"] and report["rebuilds"] == 0
    assert report["answer"] == json.loads(json.dumps(expected, default=str))


def test_locks_held_by_another_thread_at_the_fork_are_free_in_the_child(master_app):
    engine = master_app.extensions["planb_engine"]
    impact_graph.get_graph(engine)
    build_lock = impact_graph._build_locks[impact_graph._reader(engine).__dict__["_planb_key"]]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:   # a background load in the middle of its work
        with impact_graph._cache_lock, build_lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    engine.dispose()
    try:
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                serve._after_fork(None, None)
                free = impact_graph._cache_lock.acquire(timeout=5)
                if free:
                    impact_graph._cache_lock.release()
                ok = free and _answer(engine)["totals"] is not None
            finally:
                os._exit(0 if ok else 1)
        _pid, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0


def test_settle_waits_for_a_background_load(master_app):
    engine = master_app.extensions["planb_engine"]
    impact_graph.get_graph(engine)
    build_lock = impact_graph._build_locks[impact_graph._reader(engine).__dict__["_planb_key"]]
    build_lock.acquire()
    assert impact_graph.settle(timeout=0.2) is False
    threading.Timer(0.2, build_lock.release).start()
    assert impact_graph.settle(timeout=10) is True


def test_malloc_tuning_applies_on_glibc():
    if not os.path.exists("/lib/x86_64-linux-gnu/libc.so.6") and not os.path.exists("/lib/aarch64-linux-gnu/libc.so.6"):
        pytest.skip("not a glibc system")
    assert serve.tune_malloc() is True


@pytest.mark.slow
def test_two_preloaded_workers_answer_concurrent_blast_radii(demo_url, tmp_path):
    app = make_test_app(demo_url, tmp_path / "setup")
    token = create_api_token(app, "read")
    expected = json.loads(json.dumps(_answer(app.extensions["planb_engine"]), default=str))
    app.extensions["planb_engine"].dispose()
    env = server_env(demo_url, tmp_path, TEST_SECRET)
    log = tmp_path / "serve.log"
    with planb_serve(env, "--workers", "2", log=log) as (base, process):
        wait_until_up(base, process)
        url = base + "/api/v1/impact?vendor=CrowdStrike&limit=20"
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _i: get(url, bearer(token), timeout=60), range(24)))
    assert process.returncode == 0
    text = log.read_text(errors="replace")
    assert "was not loaded before the workers started" not in text
    assert "Traceback" not in text
    for status, body in answers:
        assert status == 200, body[:300]
        answer = json_body(body)
        assert answer["totals"] == expected["totals"]
        assert answer["hits"] == expected["hits"]
