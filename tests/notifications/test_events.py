"""Events reach the outbox in the transaction that records them; conditions are told once;
the CLI, the API and the admin pages manage webhooks; formats read well."""
from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from inventory.app_db import get_session
from inventory.cli import main
from inventory.db import make_engine, read_session, utcnow, write_session
from inventory.models import AuditEvent, CollectionRun, ContingencyPlan, Webhook, WebhookDelivery
from inventory.services import notify
from inventory.services import webhooks as svc
from tests.conftest import TEST_SECRET, bearer, create_api_token, create_user_and_login, make_test_app

BOX = svc.SecretBox(TEST_SECRET)


def _hook(engine, url: str, events: list[str], fmt: str = "json") -> int:  # type: ignore[no-untyped-def]
    with write_session(engine) as db:
        return svc.create_webhook(db, BOX, url=url, events=events, fmt=fmt, actor="tests")[0].id


def _bodies(engine) -> list[tuple[str, dict]]:  # type: ignore[no-untyped-def]
    with read_session(engine) as db:
        return [(d.event, d.body) for d in db.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id))]


@pytest.fixture
def demo_engine(demo_url):  # type: ignore[no-untyped-def]
    engine = make_engine(demo_url)
    yield engine
    engine.dispose()


# ---------------------------------------------------------------- the end-to-end check

def test_cli_add_declare_deliver_posts_the_incident(demo_url, tmp_path, monkeypatch, receiver):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PLANB_DATABASE_URL", demo_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PLANB_EXTERNAL_URL", "https://planb.example.com/")
    runner = CliRunner()
    added = runner.invoke(main, ["webhooks", "add", receiver.hook(), "--event", "incident.declared",
                                 "--format", "json"])
    assert added.exit_code == 0, added.output
    assert "plain http" in added.output  # warned, not refused
    declared = runner.invoke(main, ["incidents", "declare", "--title", "Falcon channel file 291",
                                    "--vendor", "CrowdStrike", "--version", ">=7.11", "--os", "windows"])
    assert declared.exit_code == 0, declared.output
    delivered = runner.invoke(main, ["webhooks", "deliver"])
    assert delivered.exit_code == 0, delivered.output
    assert "Delivered 1" in delivered.output
    [got] = receiver.requests
    incident = got.json["data"]["incident"]
    assert got.json["title"] == "Incident declared: Falcon channel file 291"
    assert incident["hits"] > 0 and incident["by_status"]["down"] > 0
    assert incident["hits"] == incident["by_status"]["down"] + incident["by_status"]["degraded"]
    assert incident["top_services"] and incident["url"] == f"https://planb.example.com/incidents/{incident['id']}"
    # A receiver that answers 500 gets retries and ends in the dead-letter list.
    receiver.answer(500)
    resolved = runner.invoke(main, ["webhooks", "add", receiver.hook("/other"), "--event", "incident.resolved",
                                    "--format", "slack"])
    assert resolved.exit_code == 0
    assert runner.invoke(main, ["incidents", "resolve", str(incident["id"])]).exit_code == 0
    engine = make_engine(demo_url)
    try:
        for _ in range(svc.DEFAULT_MAX_ATTEMPTS):
            with write_session(engine) as db:  # the clock moves on: make the retry due now
                db.execute(sa.update(WebhookDelivery).where(WebhookDelivery.status == "pending")
                           .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
            result = runner.invoke(main, ["webhooks", "deliver"])
    finally:
        engine.dispose()
    assert result.exit_code == 1 and "Dead letter" in result.output
    assert len([r for r in receiver.requests if r.path == "/other"]) == svc.DEFAULT_MAX_ATTEMPTS
    listing = runner.invoke(main, ["webhooks", "dead", "2"])
    assert "incident.resolved" in listing.output and "HTTP 500" in listing.output
    receiver.answer(200)
    assert runner.invoke(main, ["webhooks", "retry", "2"]).exit_code == 0
    assert runner.invoke(main, ["webhooks", "deliver"]).exit_code == 0
    slack = [r for r in receiver.requests if r.path == "/other"][-1].json
    assert slack["blocks"][0]["text"]["text"] == "Incident resolved: Falcon channel file 291"
    assert runner.invoke(main, ["webhooks", "remove", "2"]).exit_code == 0
    assert "No webhooks" not in runner.invoke(main, ["webhooks", "list"]).output


def test_cli_refuses_bad_input(sqlite_url, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PLANB_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    runner = CliRunner()
    for args, message in [
        (["ftp://example.com/x", "--event", "incident.declared"], "must be an http:// or https:// URL"),
        (["http://169.254.169.254/latest/meta-data", "--event", "incident.declared"], "link-local"),
        (["https://x.example/h", "--event", "incident.declared", "--secret", "short"], "secret must be"),
        (["https://x.example/h", "--event", "nope"], "Invalid value for '--event'"),
    ]:
        result = runner.invoke(main, ["webhooks", "add", *args])
        assert result.exit_code != 0 and message in result.output, result.output
    assert runner.invoke(main, ["webhooks", "remove", "99"]).exit_code != 0
    assert "No webhooks yet" in runner.invoke(main, ["webhooks", "list"]).output


# ---------------------------------------------------------------- events in the same transaction

def test_an_incident_that_rolls_back_sends_nothing(demo_engine):  # type: ignore[no-untyped-def]
    from inventory.services.incidents import declare_incident

    _hook(demo_engine, "https://hooks.example.com/x", ["incident.declared"])
    with pytest.raises(RuntimeError):
        with write_session(demo_engine) as db:
            declare_incident(db, {"vendor": "CrowdStrike"}, "Drill", actor="tests")
            assert db.scalar(sa.select(sa.func.count(WebhookDelivery.id))) == 1
            raise RuntimeError("the request failed after declaring")
    assert _bodies(demo_engine) == []


def test_collection_runs_that_fail_or_partly_fail_are_announced(engine):  # type: ignore[no-untyped-def]
    from collectors.base import AssetRecord, ScopeBatch
    from collectors.ingest import run_collection

    _hook(engine, "https://hooks.example.com/x", ["collection.failed", "collection.partial"], fmt="teams")

    class Source:
        name = "host"

        def __init__(self, fail: set[str]) -> None:
            self.fail = fail

        def describe_scope(self) -> str:
            return "two scopes"

        def collect(self, say):  # type: ignore[no-untyped-def]
            for scope in ("host:a", "host:b"):
                if scope in self.fail:
                    raise RuntimeError(f"{scope} exploded")
                yield ScopeBatch(scope_key=scope, complete=True, assets=[
                    AssetRecord(natural_key=f"{scope}:1", name="one", kind="host")])

    run_collection(engine, Source(set()))           # succeeded: nothing
    run_collection(engine, Source({"host:b"}))      # partial
    run_collection(engine, Source({"host:a"}))      # failed
    events = _bodies(engine)
    assert [e for e, _ in events] == ["collection.partial", "collection.failed"]
    card = events[1][1]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard" and card["content"]["version"] == "1.4"
    texts = [b.get("text", "") for b in card["content"]["body"]]
    assert "Collection failed: host" in texts and any("exploded" in t for t in texts)


def test_stale_sources_are_told_once_per_silence(engine):  # type: ignore[no-untyped-def]
    _hook(engine, "https://hooks.example.com/x", ["collection.stale"])
    now = utcnow()
    with write_session(engine) as db:
        for collector, hours_ago in (("aws", 30), ("host", 2)):
            db.add(CollectionRun(collector=collector, scope="s", status="succeeded",
                                 started_at=now - timedelta(hours=hours_ago),
                                 finished_at=now - timedelta(hours=hours_ago)))
    hours = {"aws": 24.0, "*": 48.0}
    assert notify.check_conditions(engine, now, hours).stale == 1
    assert notify.check_conditions(engine, now + timedelta(minutes=10), hours).stale == 0  # once
    [(event, body)] = _bodies(engine)
    assert event == "collection.stale" and body["data"]["source"] == "aws"
    assert body["data"]["threshold_hours"] == 24.0
    # aws collects again; a later silence is news again.
    with write_session(engine) as db:
        db.add(CollectionRun(collector="aws", scope="s", status="succeeded", started_at=now, finished_at=now))
    assert notify.check_conditions(engine, now + timedelta(hours=1), hours).stale == 0
    assert notify.check_conditions(engine, now + timedelta(hours=25), hours).stale == 1


def test_the_update_gate_is_told_when_it_turns_red(demo_engine, demo_url, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    _hook(demo_engine, "https://hooks.example.com/x", ["updates.gate_failed"], fmt="slack")
    monkeypatch.setenv("PLANB_DATABASE_URL", demo_url)
    monkeypatch.setenv("PLANB_INSTANCE_PATH", str(tmp_path / "instance"))
    runner = CliRunner()
    assert runner.invoke(main, ["check", "updates"]).exit_code == 1   # red: queued
    assert runner.invoke(main, ["check", "updates"]).exit_code == 1   # still red: not again
    # The worker watches the same default gate (critical): already told, so not again.
    assert notify.check_conditions(demo_engine).gate == 0
    # A narrower gate from a pipeline is a gate of its own.
    assert runner.invoke(main, ["check", "updates", "--vendor", "CrowdStrike"]).exit_code == 1
    [(event, body), (_, narrower)] = _bodies(demo_engine)
    assert narrower["blocks"][1]["text"]["text"].startswith(":red_circle:")
    assert event == "updates.gate_failed"
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Update gate failed",
                                                            "emoji": True}}


def test_plans_falling_overdue_are_listed_once(engine):  # type: ignore[no-untyped-def]
    _hook(engine, "https://hooks.example.com/x", ["plan.review_overdue"])
    now = utcnow()
    with write_session(engine) as db:
        db.add(ContingencyPlan(name="Boarding fallback", owner="ops", review_interval_days=30,
                               last_reviewed=now - timedelta(days=40)))
        db.add(ContingencyPlan(name="Fresh plan", review_interval_days=30, last_reviewed=now))
    assert notify.check_conditions(engine, now).plans == 1
    assert notify.check_conditions(engine, now + timedelta(hours=1)).plans == 0
    [(event, body)] = _bodies(engine)
    assert event == "plan.review_overdue"
    assert [p["name"] for p in body["data"]["plans"]] == ["Boarding fallback"]
    assert body["title"] == "Plan review overdue: Boarding fallback"
    # A month later the fresh plan falls due too: only it is news.
    assert notify.check_conditions(engine, now + timedelta(days=31)).plans == 1
    assert [p["name"] for p in _bodies(engine)[-1][1]["data"]["plans"]] == ["Fresh plan"]


def test_checks_run_once_per_interval_across_workers(engine):  # type: ignore[no-untyped-def]
    now = utcnow()
    assert notify.claim_check_turn(engine, now) is True
    assert notify.claim_check_turn(engine, now + timedelta(minutes=1)) is False
    assert notify.claim_check_turn(engine, now + notify.CHECK_INTERVAL) is True


def test_the_background_worker_delivers(engine, receiver):  # type: ignore[no-untyped-def]
    from inventory.services.notify_worker import DeliveryWorker

    webhook_id = _hook(engine, receiver.hook(), ["incident.declared"])
    with write_session(engine) as db:
        notify.emit(db, "incident.declared", {}, notify.Message("t", "s"), to=[db.get(Webhook, webhook_id)])
    worker = DeliveryWorker(engine, BOX, poll=0.05)
    worker.start()
    try:
        for _ in range(200):
            if receiver.requests:
                break
            import time
            time.sleep(0.05)
    finally:
        worker.stop()
    assert len(receiver.requests) == 1 and not worker.is_alive()


# ---------------------------------------------------------------- URLs

@pytest.mark.parametrize("url, ok", [
    ("https://hooks.slack.com/services/T0/B0/secret", True),
    ("http://10.0.0.5:8080/hook", True),
    ("javascript:alert(1)", False), ("file:///etc/passwd", False), ("https://", False),
    ("http://169.254.169.254/latest/meta-data/", False), ("http://[fe80::1]/x", False),
    ("http://[fd00:ec2::254]/", False), ("http://metadata.google.internal/x", False),
    ("http://0.0.0.0/x", False), ("https://x.example/a#frag", False), ("https://x.example:99999/", False),
])
def test_only_http_urls_that_are_not_metadata_services(url, ok):  # type: ignore[no-untyped-def]
    if ok:
        assert svc.check_url(url)[0] == url
    else:
        with pytest.raises(svc.WebhookError):
            svc.check_url(url)


def test_urls_are_shown_without_their_secret_parts():  # type: ignore[no-untyped-def]
    assert svc.display_url("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/services/…"
    assert svc.display_url("https://x.example:8443/hook?token=abc") == "https://x.example:8443/hook/…"
    assert svc.display_url("https://x.example") == "https://x.example"


# ---------------------------------------------------------------- API and pages

@pytest.fixture
def api_app(sqlite_url, tmp_path):  # type: ignore[no-untyped-def]
    app = make_test_app(sqlite_url, tmp_path / "instance", WTF_CSRF_ENABLED=False)
    yield app
    app.extensions["planb_engine"].dispose()


def test_api_manages_webhooks_with_a_write_token(api_app):  # type: ignore[no-untyped-def]
    client = api_app.test_client()
    write, read = bearer(create_api_token(api_app, "write")), bearer(create_api_token(api_app, "read"))
    assert client.get("/api/v1/webhooks", headers=read).status_code == 403
    body = {"url": "https://hooks.slack.com/services/T0/B0/XYZ", "events": ["incident.declared"],
            "format": "slack", "secret": "0123456789abcdef0123"}
    created = client.post("/api/v1/webhooks", headers=write, json=body)
    assert created.status_code == 201
    hook = created.json
    assert hook["url"] == "https://hooks.slack.com/services/…" and hook["signed"] is True
    assert "XYZ" not in created.get_data(as_text=True) and "0123456789abcdef0123" not in created.get_data(as_text=True)
    for bad, field in [({**body, "url": "gopher://x"}, "url"), ({**body, "events": []}, "events"),
                       ({**body, "format": "xml"}, "format"), ({**body, "colour": "red"}, "colour")]:
        answer = client.post("/api/v1/webhooks", headers=write, json=bad)
        assert answer.status_code in (400, 422) and answer.json["field"] == field
    changed = client.patch(f"/api/v1/webhooks/{hook['id']}", headers=write, json={"active": False})
    assert changed.status_code == 200 and changed.json["active"] is False
    queued = client.post(f"/api/v1/webhooks/{hook['id']}/test", headers=write)
    assert queued.status_code == 202 and queued.json["status"] == "pending"
    assert client.get(f"/api/v1/webhooks/{hook['id']}/dead-letters", headers=write).json["count"] == 0
    assert client.delete(f"/api/v1/webhooks/{hook['id']}/dead-letters/5", headers=write).status_code == 404
    assert client.delete(f"/api/v1/webhooks/{hook['id']}", headers=write).status_code == 204
    assert client.get(f"/api/v1/webhooks/{hook['id']}", headers=write).status_code == 404
    with api_app.app_context():
        actions = [e.action for e in get_session().scalars(
            sa.select(AuditEvent).where(AuditEvent.entity_type == "webhook").order_by(AuditEvent.id))]
    assert actions == ["create", "update", "test", "delete"]


def test_openapi_documents_every_webhook_operation(api_app):  # type: ignore[no-untyped-def]
    spec = api_app.test_client().get("/api/v1/openapi.json", headers=bearer(create_api_token(api_app))).json
    rules = [r for r in api_app.url_map.iter_rules() if r.rule.startswith("/api/v1/webhooks")]
    from inventory.api.openapi import openapi_path

    for rule in rules:
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = spec["paths"][openapi_path(rule.rule)][method.lower()]
            assert {"401", "403"} <= set(operation["responses"]), (rule.rule, method)


def test_admin_pages_manage_webhooks_and_dead_letters(api_app, receiver):  # type: ignore[no-untyped-def]
    admin = api_app.test_client()
    create_user_and_login(api_app, admin, "admin")
    editor = api_app.test_client()
    create_user_and_login(api_app, editor, "editor")
    assert editor.get("/admin/webhooks").status_code == 403
    page = admin.get("/admin/webhooks").get_data(as_text=True)
    assert "Add a webhook" in page and "PLANB_EXTERNAL_URL" in page
    bad = admin.post("/admin/webhooks", data={"url": "ftp://x", "fmt": "json", "events": ["incident.declared"]})
    assert bad.status_code == 400 and "http:// or https://" in bad.get_data(as_text=True)
    made = admin.post("/admin/webhooks", data={"url": receiver.hook(), "fmt": "json",
                                               "events": ["incident.declared", "collection.failed"],
                                               "secret": "0123456789abcdef0123", "name": "Ops receiver"})
    assert made.status_code == 302
    detail_url = made.headers["Location"]
    assert admin.post(detail_url + "/test").status_code == 302
    assert receiver.requests[-1].json["title"] == "Plan B test message"
    assert "Test message delivered" in admin.get(detail_url).get_data(as_text=True)
    # A dead letter shows up, and can be retried and discarded.
    with api_app.app_context():
        db = get_session()
        webhook = db.scalar(sa.select(Webhook))
        notify.emit(db, "incident.declared", {}, notify.Message("Incident declared: X", "s"), to=[webhook])
        db.execute(sa.update(WebhookDelivery).values(status="dead", attempts=8, last_error="HTTP 500"))
        db.commit()
        dead_id = db.scalar(sa.select(WebhookDelivery.id))
    html = admin.get(detail_url).get_data(as_text=True)
    assert "Incident declared: X" in html and "HTTP 500" in html
    assert admin.post(detail_url + "/dead/retry", data={"delivery": str(dead_id)}).status_code == 302
    with api_app.app_context():
        assert get_session().get(WebhookDelivery, dead_id).status == "pending"
        get_session().execute(sa.update(WebhookDelivery).values(status="dead"))
        get_session().commit()
    assert admin.post(detail_url + "/dead/discard").status_code == 302
    with api_app.app_context():
        assert get_session().get(WebhookDelivery, dead_id) is None
    assert admin.post(detail_url + "/active", data={"active": "0"}).status_code == 302
    assert admin.post(detail_url + "/delete").status_code == 302
    assert admin.get(detail_url).status_code == 404
