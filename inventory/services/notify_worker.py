"""The web app's background delivery worker: one thread per worker process.

Every few seconds it posts the due outbox rows (``webhooks.deliver_due``) and, once
per ``notify.CHECK_INTERVAL`` across *all* processes and hosts sharing the database
(``notify.claim_check_turn``), looks for stale sources, a red update gate and overdue
plan reviews.  Rows are claimed with a lease, so any number of gunicorn workers on any
number of hosts run it side by side without posting a message twice at once.

The thread is started by the first request a process serves (``install``), not when
the app is built: gunicorn may build the app before it forks its workers, and a thread
does not survive a fork.  Apps built for tests (``TESTING``) start none; tests drive
``DeliveryWorker`` or ``deliver_due`` themselves.
"""
from __future__ import annotations

import logging
import os
import random
import threading
from datetime import timedelta
from typing import Any, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from inventory.db import read_session, utcnow
from inventory.models import WebhookDelivery
from inventory.services import notify, webhooks

log = logging.getLogger("planb.notify.worker")

POLL_SECONDS = 5.0


class DeliveryWorker(threading.Thread):
    def __init__(self, engine: Engine, box: webhooks.SecretBox, *, timeout: float = webhooks.DEFAULT_TIMEOUT,
                 max_attempts: int = webhooks.DEFAULT_MAX_ATTEMPTS,
                 stale_hours: Mapping[str, float] | None = None, poll: float = POLL_SECONDS,
                 check_interval: timedelta = notify.CHECK_INTERVAL) -> None:
        super().__init__(name="planb-webhook-delivery", daemon=True)
        self.engine, self.box = engine, box
        self.timeout, self.max_attempts = timeout, max_attempts
        self.stale_hours = stale_hours
        self.poll, self.check_interval = poll, check_interval
        self.owner = webhooks.worker_id()
        self._stop_event = threading.Event()

    def stop(self, wait: float = 10.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(wait)

    def run(self) -> None:
        with webhooks.http_session() as http:
            # Jittered, so the workers of one deployment do not all poll in step.
            while not self._stop_event.wait(self.poll * (0.5 + random.random())):
                try:
                    self.tick(http)
                except Exception:  # a database hiccup must not end the thread
                    log.exception("webhook delivery round failed")

    def tick(self, http: Any = None) -> webhooks.DeliveryReport | None:
        now = utcnow()
        if notify.claim_check_turn(self.engine, now, self.check_interval):
            report = notify.check_conditions(self.engine, now, self.stale_hours)
            if report.queued:
                log.info("notification checks queued messages", extra={"queued": report.queued})
        if not due_exists(self.engine):
            return None
        return webhooks.deliver_due(self.engine, self.box, http=http, timeout=self.timeout,
                                    max_attempts=self.max_attempts, owner=self.owner)


def due_exists(engine: Engine) -> bool:
    """A cheap read first, so an idle outbox costs no write transaction per poll."""
    now = utcnow()
    with read_session(engine) as db:
        return db.scalar(sa.select(WebhookDelivery.id).where(
            WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
            sa.or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now)).limit(1)) is not None


_started: dict[int, DeliveryWorker] = {}
_lock = threading.Lock()


def install(app: Any) -> None:
    """Start this process's worker with the first request it serves (when ``WEBHOOK_WORKER`` is on
    and the app is not a test app)."""
    if not app.config.get("WEBHOOK_WORKER", True) or app.config.get("TESTING"):
        return

    def _ensure_worker() -> None:
        pid = os.getpid()
        if pid in _started:
            return
        with _lock:
            if pid in _started:
                return
            worker = DeliveryWorker(
                app.extensions["planb_engine"], webhooks.SecretBox(app.config["SECRET_KEY"]),
                timeout=float(app.config.get("WEBHOOK_TIMEOUT") or webhooks.DEFAULT_TIMEOUT),
                max_attempts=int(app.config.get("WEBHOOK_MAX_ATTEMPTS") or webhooks.DEFAULT_MAX_ATTEMPTS),
                stale_hours=app.config.get("COLLECTION_STALE_HOURS"))
            worker.start()
            _started[pid] = worker
            log.info("webhook delivery worker started", extra={"pid": pid})

    app.before_request(_ensure_worker)
