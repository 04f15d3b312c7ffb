"""Delivery against a real loopback receiver: signatures, retries ending in the dead-letter list,
404/410 handling, timeouts, leases shared by several workers."""
from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from inventory.db import make_engine, read_session, utcnow, write_session
from inventory.models import AuditEvent, Webhook, WebhookDelivery
from inventory.services import webhooks as svc
from inventory.services.notify_format import Message

BOX = svc.SecretBox("test-secret-key-not-for-production")
SECRET = "whsec-0123456789abcdef"


@pytest.fixture
def engine(any_db_url):  # type: ignore[no-untyped-def]
    eng = make_engine(any_db_url)
    yield eng
    eng.dispose()


def add_webhook(engine, url: str, *, secret: str | None = None, fmt: str = "json") -> int:  # type: ignore[no-untyped-def]
    with write_session(engine) as db:
        webhook, _ = svc.create_webhook(db, BOX, url=url, events=["incident.declared"], fmt=fmt, secret=secret,
                                        actor="tests")
        return webhook.id


def queue(engine, webhook_id: int, n: int = 1) -> list[int]:  # type: ignore[no-untyped-def]
    from inventory.services import notify

    with write_session(engine) as db:
        webhook = db.get(Webhook, webhook_id)
        notify.emit(db, "incident.declared", {"n": n}, Message("Incident declared: test", "summary"), to=[webhook])
        for _ in range(n - 1):
            notify.emit(db, "incident.declared", {"n": n}, Message("Incident declared: test", "summary"),
                        to=[webhook])
    with read_session(engine) as db:
        return list(db.scalars(sa.select(WebhookDelivery.id).order_by(WebhookDelivery.id)))


def rows(engine) -> list[WebhookDelivery]:  # type: ignore[no-untyped-def]
    with read_session(engine) as db:
        found = list(db.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)))
        db.expunge_all()
        return found


def test_delivery_posts_the_body_with_a_verifiable_signature(engine, receiver):  # type: ignore[no-untyped-def]
    webhook_id = add_webhook(engine, receiver.hook(), secret=SECRET)
    [delivery_id] = queue(engine, webhook_id)
    report = svc.deliver_due(engine, BOX)
    assert (report.delivered, report.retried, report.dead) == (1, 0, 0)
    [got] = receiver.requests
    assert got.path == "/hook" and got.json["event"] == "incident.declared" and got.json["data"] == {"n": 1}
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["x-planb-event"] == "incident.declared" and headers["x-planb-delivery"] == str(delivery_id)
    # What a receiver does (docs/how-to/notifications.md): HMAC of "<timestamp>.<raw body>".
    expected = hmac.new(SECRET.encode(), headers["x-planb-timestamp"].encode() + b"." + got.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-planb-signature"], f"sha256={expected}")
    # A replay with a changed timestamp no longer verifies.
    forged = hmac.new(SECRET.encode(), b"1." + got.body, hashlib.sha256).hexdigest()
    assert headers["x-planb-signature"] != f"sha256={forged}"
    [row] = rows(engine)
    assert row.status == "delivered" and row.attempts == 1 and row.last_status_code == 200
    # Nothing is due any more: a second round posts nothing.
    assert svc.deliver_due(engine, BOX).attempted == 0 and len(receiver.requests) == 1


def test_no_secret_no_signature(engine, receiver):  # type: ignore[no-untyped-def]
    queue(engine, add_webhook(engine, receiver.hook()))
    svc.deliver_due(engine, BOX)
    assert "X-PlanB-Signature" not in receiver.requests[0].headers


def test_a_500_is_retried_with_backoff_then_ends_in_the_dead_letter_list(engine, receiver):  # type: ignore[no-untyped-def]
    receiver.answer(500)
    webhook_id = add_webhook(engine, receiver.hook())
    queue(engine, webhook_id)
    now = utcnow()
    waits = []
    for attempt in range(1, 4):
        report = svc.deliver_due(engine, BOX, now=now, max_attempts=3)
        [row] = rows(engine)
        assert row.attempts == attempt and row.last_status_code == 500
        if attempt < 3:
            assert report.retried == 1 and row.status == "pending"
            waits.append(row.next_attempt_at - now)
            # Not due before its time...
            assert svc.deliver_due(engine, BOX, now=now + timedelta(seconds=1), max_attempts=3).attempted == 0
            now = row.next_attempt_at
    assert report.dead == 1 and row.status == "dead" and "HTTP 500" in row.last_error
    assert len(receiver.requests) == 3
    # Exponential: 30 s then 60 s (each plus up to 10 % jitter).
    assert timedelta(seconds=30) <= waits[0] <= timedelta(seconds=33)
    assert timedelta(seconds=60) <= waits[1] <= timedelta(seconds=66)
    with write_session(engine) as db:
        webhook = db.get(Webhook, webhook_id)
        assert [d.id for d in svc.dead_letters(db, webhook)] == [row.id]
        assert webhook.last_failure_at is not None and webhook.active
    # An admin retries it; the receiver is back.
    receiver.answer(200)
    with write_session(engine) as db:
        assert svc.retry_dead(db, db.get(Webhook, webhook_id), actor="tests") == 1
    assert svc.deliver_due(engine, BOX).delivered == 1
    assert rows(engine)[0].status == "delivered"


@pytest.mark.parametrize("code, disabled", [(410, True), (404, False), (400, False)])
def test_gone_and_not_found_are_not_retried(engine, receiver, code, disabled):  # type: ignore[no-untyped-def]
    receiver.answer(code)
    webhook_id = add_webhook(engine, receiver.hook())
    queue(engine, webhook_id, n=2)
    report = svc.deliver_due(engine, BOX)
    states = [r.status for r in rows(engine)]
    with read_session(engine) as db:
        webhook = db.get(Webhook, webhook_id)
        active, reason = webhook.active, webhook.disabled_reason
        trail = [e.action for e in db.scalars(sa.select(AuditEvent).where(AuditEvent.entity_type == "webhook"))]
    if disabled:
        # 410 Gone: the first message is dead and the webhook switched off; the second is not posted.
        assert len(receiver.requests) == 1 and states == ["dead", "dead"]
        assert not active and "410" in reason and "disable" in trail
    else:
        assert len(receiver.requests) == 2 and states == ["dead", "dead"] and active
        assert report.dead == 2 and report.retried == 0


def test_a_receiver_that_does_not_answer_in_time_is_retried(engine, receiver):  # type: ignore[no-untyped-def]
    receiver.answer(("sleep", 2.0, 200), 200)
    queue(engine, add_webhook(engine, receiver.hook()))
    now = utcnow()
    report = svc.deliver_due(engine, BOX, now=now, timeout=0.5)
    [row] = rows(engine)
    assert report.retried == 1 and row.status == "pending" and "no answer within 0.5 s" in row.last_error
    assert svc.deliver_due(engine, BOX, now=row.next_attempt_at, timeout=5).delivered == 1


def test_an_unreachable_receiver_is_retried(engine):  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue(engine, add_webhook(engine, f"http://127.0.0.1:{port}/hook"))
    report = svc.deliver_due(engine, BOX)
    assert report.retried == 1 and "ConnectionError" in rows(engine)[0].last_error


def test_redirects_are_not_followed(engine, receiver):  # type: ignore[no-untyped-def]
    receiver.answer(302)
    queue(engine, add_webhook(engine, receiver.hook()))
    assert svc.deliver_due(engine, BOX).dead == 1
    assert "redirects are not followed" in rows(engine)[0].last_error


def test_a_name_that_resolves_to_a_metadata_address_is_refused_at_delivery(engine, receiver):  # type: ignore[no-untyped-def]
    import socket

    queue(engine, add_webhook(engine, "https://hooks.internal.example/x"))

    def resolve(host, port, **_kw):  # type: ignore[no-untyped-def]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]

    assert svc.deliver_due(engine, BOX, resolve=resolve).dead == 1
    assert "link-local" in rows(engine)[0].last_error and receiver.requests == []


def test_several_workers_never_post_a_message_twice(engine, receiver):  # type: ignore[no-untyped-def]
    webhook_id = add_webhook(engine, receiver.hook())
    queue(engine, webhook_id, n=30)
    reports = []

    def work() -> None:
        reports.append(svc.deliver_due(engine, BOX))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    delivered = [r.headers["X-PlanB-Delivery"] for r in receiver.requests]
    assert len(delivered) == 30 and len(set(delivered)) == 30
    assert sum(r.delivered for r in reports) == 30
    assert all(r.status == "delivered" for r in rows(engine))


def test_a_lease_that_ran_out_is_claimed_again(engine, receiver):  # type: ignore[no-untyped-def]
    queue(engine, add_webhook(engine, receiver.hook()))
    now = utcnow()
    assert svc.claim_due(engine, "crashed-worker", now, timedelta(minutes=5)) != []
    assert svc.claim_due(engine, "other", now + timedelta(minutes=1), timedelta(minutes=5)) == []
    # The first worker died; after its lease the row is free again.
    assert svc.deliver_due(engine, BOX, now=now + timedelta(minutes=6)).delivered == 1
    assert len(receiver.requests) == 1


def test_delivered_messages_are_pruned_after_a_week(engine, receiver):  # type: ignore[no-untyped-def]
    queue(engine, add_webhook(engine, receiver.hook()))
    svc.deliver_due(engine, BOX)
    assert svc.prune_delivered(engine, utcnow() + timedelta(days=6)) == 0
    assert svc.prune_delivered(engine, utcnow() + timedelta(days=8)) == 1
    assert rows(engine) == []


def test_a_changed_secret_key_is_a_clear_dead_letter(engine, receiver):  # type: ignore[no-untyped-def]
    queue(engine, add_webhook(engine, receiver.hook(), secret=SECRET))
    report = svc.deliver_due(engine, svc.SecretBox("another key"))
    assert report.dead == 1 and "PLANB_SECRET_KEY" in rows(engine)[0].last_error
    assert receiver.requests == []
