"""GET /metrics: who may scrape, what the series say, and sums across real gunicorn workers."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from inventory import metrics
from inventory.choices import CRITICALITIES
from inventory.cli import serve as serve_module
from inventory.db import write_session
from inventory.models import Asset, CollectionRun, Incident
from inventory.services import updates as update_service
from tests.conftest import TEST_SECRET, bearer, create_api_token, create_user_and_login, make_test_app
from tests.deploy.helpers import get, json_body, planb_serve, samples, server_env, value, wait_until_up


@pytest.fixture
def demo_app(demo_url, tmp_path):  # type: ignore[no-untyped-def]
    app = make_test_app(demo_url, tmp_path / "instance", WTF_CSRF_ENABLED=False)
    yield app
    app.extensions["planb_engine"].dispose()


def _scrape(client, token: str) -> dict:  # type: ignore[no-untyped-def]
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain; version=")
    return samples(response.get_data(as_text=True))


# ---------------------------------------------------------------- who may scrape

def test_anonymous_gets_401_json(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_wrong_token_gets_401_json(client):
    response = client.get("/metrics", headers=bearer("planb_not-a-real-token"))
    assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"


def test_read_token_and_admin_session_may_scrape_but_a_viewer_session_may_not(app, client, read_token):
    assert client.get("/metrics", headers=bearer(read_token)).status_code == 200

    viewer = app.test_client()
    create_user_and_login(app, viewer, "viewer")
    response = viewer.get("/metrics")
    assert response.status_code == 403 and response.get_json()["error"] == "forbidden"

    editor = app.test_client()
    create_user_and_login(app, editor, "editor")
    assert editor.get("/metrics").status_code == 403

    admin = app.test_client()
    create_user_and_login(app, admin, "admin")
    response = admin.get("/metrics")
    assert response.status_code == 200
    assert b"planb_http_requests_total" in response.data


def test_only_planb_series_and_no_created_series(client, read_token):
    names = {name for name, _labels in _scrape(client, read_token)}
    assert names and all(name.startswith("planb_") for name in names), names
    assert not any(name.endswith("_created") for name in names)


# ---------------------------------------------------------------- request series

def test_requests_are_counted_by_endpoint_name_not_path(app, client, read_token):
    with app.app_context():
        engine = app.extensions["planb_engine"]
        with write_session(engine) as db:
            db.add_all([Asset(natural_key=f"test:{i}", name=f"a{i}", kind="vm") for i in range(2)])
        ids = [row[0] for row in engine.connect().execute(sa.select(Asset.id)).all()]
    admin = app.test_client()
    create_user_and_login(app, admin, "admin")
    before = _scrape(client, read_token)
    for asset_id in ids:
        assert admin.get(f"/assets/{asset_id}").status_code == 200
    assert admin.get("/no/such/page").status_code == 404
    after = _scrape(client, read_token)

    def delta(**labels: str) -> float:
        return (value(after, "planb_http_requests_total", **labels) or 0) - \
               (value(before, "planb_http_requests_total", **labels) or 0)

    assert delta(endpoint="assets.detail", method="GET", status="200") == 2
    assert delta(endpoint="unmatched", method="GET", status="404") == 1
    assert not any("/assets/" in str(labels) for _name, labels in after)
    count = value(after, "planb_http_request_duration_seconds_count", endpoint="assets.detail", method="GET",
                  status="200")
    assert count is not None and count >= 2


def test_refused_requests_are_counted_with_their_status(client, read_token):
    before = _scrape(client, read_token)
    client.get("/metrics")
    after = _scrape(client, read_token)
    labels = dict(endpoint="metrics.metrics_view", method="GET", status="401")
    assert (value(after, "planb_http_requests_total", **labels) or 0) - \
        (value(before, "planb_http_requests_total", **labels) or 0) == 1


# ---------------------------------------------------------------- impact series

def test_blast_radius_and_graph_rebuilds_are_observed(demo_app):
    client = demo_app.test_client()
    token = create_api_token(demo_app, "read")
    before = _scrape(client, token)
    for _ in range(3):
        response = client.get("/api/v1/impact?vendor=CrowdStrike", headers=bearer(token))
        assert response.status_code == 200, response.data
    after = _scrape(client, token)
    assert value(after, "planb_blast_radius_duration_seconds_count") - \
        value(before, "planb_blast_radius_duration_seconds_count") == 3
    # A fresh database: the first query loaded its graph (others in this process may have too).
    assert value(after, "planb_graph_rebuilds_total") - value(before, "planb_graph_rebuilds_total") >= 1
    assert value(after, "planb_graph_rebuild_duration_seconds_count") >= 1
    assert value(after, "planb_graph_lag_seconds") == 0.0


def test_graph_lag_reports_an_answer_from_the_previous_graph(demo_app, monkeypatch):
    from inventory.impact import graph as graph_module

    seen: list[float] = []
    monkeypatch.setitem(graph_module.OBSERVERS, "answer", [*graph_module.OBSERVERS["answer"], seen.append])
    engine = demo_app.extensions["planb_engine"]
    graph_module.get_graph(engine)
    with write_session(engine) as db:
        db.add(Asset(natural_key="test:lag", name="lag", kind="vm"))
    # Another request is rebuilding: this one answers from the previous graph and says how old it is.
    key = engine.url.render_as_string(hide_password=False)
    lock = graph_module._build_locks[key]
    with lock:
        _graph, _stamp, lag = graph_module.get_graph_state(engine)
    assert lag is not None and seen[-1] == lag.age_seconds
    token = create_api_token(demo_app, "read")
    assert value(_scrape(demo_app.test_client(), token), "planb_graph_lag_seconds") == lag.age_seconds


# ---------------------------------------------------------------- database series

def test_database_series_match_the_database(demo_app):
    engine = demo_app.extensions["planb_engine"]
    with write_session(engine) as db:
        db.add_all([CollectionRun(collector="aws", status="succeeded", finished_at=_ago(600)),
                    CollectionRun(collector="aws", status="failed", finished_at=_ago(60)),
                    CollectionRun(collector="aws", status="failed", finished_at=_ago(30)),
                    CollectionRun(collector="azure", status="partial", finished_at=_ago(30)),
                    CollectionRun(collector="azure", status="running")])
    scrape = _scrape(demo_app.test_client(), create_api_token(demo_app, "read"))

    assert value(scrape, "planb_collection_runs_total", source="aws", status="succeeded") == 1
    assert value(scrape, "planb_collection_runs_total", source="aws", status="failed") == 2
    assert value(scrape, "planb_collection_runs_total", source="azure", status="partial") == 1
    assert value(scrape, "planb_collection_runs_total", source="azure", status="running") is None
    assert value(scrape, "planb_collection_runs_running", source="azure") == 1
    assert value(scrape, "planb_collection_runs_running", source="aws") == 0
    assert 600 <= value(scrape, "planb_collection_last_success_age_seconds", source="aws") < 700
    assert value(scrape, "planb_collection_last_success_age_seconds", source="azure") == float("inf")

    with engine.connect() as conn:
        by_provider = dict(conn.execute(sa.select(sa.func.coalesce(Asset.provider, "unknown"), sa.func.count())
                                        .where(Asset.retired_at.is_(None)).group_by(Asset.provider)).all())
        open_incidents = conn.scalar(sa.select(sa.func.count()).select_from(Incident)
                                     .where(Incident.status == "open"))
    assert {labels[0][1]: v for (name, labels), v in scrape.items() if name == "planb_assets"} == by_provider
    assert value(scrape, "planb_incidents_open") == open_incidents

    with demo_app.app_context():
        from inventory.app_db import get_session
        summary = update_service.untested_summary(get_session())
    for criticality in CRITICALITIES:
        assert value(scrape, "planb_untested_assets", criticality=criticality) == \
            summary["by_criticality"].get(criticality, {}).get("assets", 0)
    # The demo runs untested Falcon versions on critical hosts: `planb check updates` fails.
    assert summary["critical_assets"] > 0
    assert value(scrape, "planb_update_gate_ok") == 0


def test_database_series_are_cached_for_a_short_while(demo_app):
    engine = demo_app.extensions["planb_engine"]
    now = [1000.0]
    first = metrics.database_metrics(engine, clock=lambda: now[0])
    with write_session(engine) as db:
        db.add(Incident(title="new", scope={"vendor": "CrowdStrike"}, summary={}))

    def open_incidents(families) -> float:  # type: ignore[no-untyped-def]
        [family] = [f for f in families if f.name == "planb_incidents_open"]
        return family.samples[0].value

    now[0] += metrics.DB_CACHE_SECONDS - 1
    assert metrics.database_metrics(engine, clock=lambda: now[0]) is first
    now[0] += 2
    assert open_incidents(metrics.database_metrics(engine, clock=lambda: now[0])) == open_incidents(first) + 1


def _ago(seconds: float):  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from inventory.db import utcnow
    return utcnow() - timedelta(seconds=seconds)


# ---------------------------------------------------------------- planb serve's metrics folder

def test_each_start_gets_a_fresh_folder_and_dead_servers_folders_go(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = tmp_path / "planb-metrics-999999999-old"
    dead.mkdir()
    (dead / "counter_1.db").write_bytes(b"x")
    alive = tmp_path / f"planb-metrics-{os.getpid()}-other"
    alive.mkdir()
    fresh = serve_module._fresh_metrics_dir()
    assert fresh.parent == tmp_path and list(fresh.iterdir()) == []
    assert not dead.exists() and alive.exists()


# ---------------------------------------------------------------- several gunicorn workers

def _worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


@pytest.mark.slow
def test_counts_add_up_across_three_gunicorn_workers(demo_url, tmp_path):
    token = create_api_token(make_test_app(demo_url, tmp_path / "setup"), "read")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = server_env(demo_url, tmp_path, TEST_SECRET, TMPDIR=str(temp))
    with planb_serve(env, "--workers", "3", log=tmp_path / "serve.log") as (base, process):
        sent = wait_until_up(base, process)   # exactly one of these answered 200
        [folder] = temp.glob("planb-metrics-*")

        def serving_workers() -> int:
            # Not the master's file: it loaded the graph before forking (planb serve preloads).
            return len(list(folder.glob("counter_*.db"))) - (folder / f"counter_{process.pid}.db").exists()

        # Concurrent requests until at least two workers have answered some (bounded).
        with ThreadPoolExecutor(8) as pool:
            for _round in range(40):
                statuses = list(pool.map(lambda _i: get(base + "/healthz")[0], range(16)))
                assert statuses == [200] * 16
                sent += 16
                if serving_workers() >= 2:
                    break
        assert serving_workers() >= 2, "the requests never reached a second worker"

        for _ in range(2):
            status, body = get(base + "/api/v1/impact?vendor=CrowdStrike", bearer(token))
            assert status == 200, body

        status, body = get(base + "/metrics")
        assert status == 401 and json_body(body)["error"] == "unauthorized"
        status, body = get(base + "/metrics", bearer(token))
        assert status == 200, body
        scrape = samples(body.decode())
        assert value(scrape, "planb_http_requests_total", endpoint="health.healthz", method="GET",
                     status="200") == sent
        assert value(scrape, "planb_http_requests_total", endpoint="metrics.metrics_view", method="GET",
                     status="401") == 1
        assert value(scrape, "planb_blast_radius_duration_seconds_count") == 2
        assert value(scrape, "planb_graph_rebuilds_total") >= 1
        assert value(scrape, "planb_assets", provider="aws") > 0

        # A worker that exits stops counting in the live gauges; its counts stay in the sums.
        workers = _worker_pids(process.pid)
        assert len(workers) == 3
        gone = next(pid for pid in workers if (folder / f"counter_{pid}.db").exists())
        os.kill(gone, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while (folder / f"gauge_livemostrecent_{gone}.db").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (folder / f"gauge_livemostrecent_{gone}.db").exists()
        status, body = get(base + "/metrics", bearer(token))
        assert status == 200, body
        assert value(samples(body.decode()), "planb_http_requests_total", endpoint="health.healthz",
                     method="GET", status="200") == sent
    assert process.returncode == 0
    assert not folder.exists(), "planb serve leaves its metrics folder behind"
