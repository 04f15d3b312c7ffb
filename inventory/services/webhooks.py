"""Webhooks: managing endpoints, and delivering the outbox to them.

* **Endpoints.**  A webhook is an http(s) URL, the events it wants, a format
  (``json``, ``slack``, ``teams``) and an optional signing secret.  The URL and the
  secret are stored encrypted with a key derived from the app's secret key
  (``SecretBox``, Fernet): a chat webhook URL *is* a credential, and a signing
  secret must be readable again to sign, so neither can be a one-way hash like an
  API token.  Neither is ever shown again after creation; lists show
  ``url_display``, the URL with its secret parts cut off.
* **Delivery** (``deliver_due``), at least once: a worker claims due rows with a
  lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, one atomic ``UPDATE`` on
  SQLite), so several processes on several hosts never post the same row at the
  same time; posts each with ``X-PlanB-*`` headers (and a signature when the
  webhook has a secret); records the outcome.  Failures are retried with
  exponential backoff; a row out of attempts, or refused for good by the receiver
  (404, 410 and other 4xx but 408/429), becomes a dead letter.  A 410 (Gone) also
  switches the webhook off.

Every change records an audit event in the caller's transaction; callers commit.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

from inventory.db import read_session, utcnow, write_session
from inventory.models import Webhook, WebhookDelivery
from inventory.services import audit
from inventory.validation import has_line_break, text_problem

log = logging.getLogger("planb.webhooks")

EVENTS = ("incident.declared", "incident.resolved", "collection.failed", "collection.partial",
          "collection.stale", "updates.gate_failed", "plan.review_overdue")
FORMATS = ("json", "slack", "teams")
MAX_URL = 2000
MAX_SECRET = 500
MIN_SECRET = 16
MAX_NAME = 200
# Backoff after the n-th failed attempt: RETRY_BASE * 2**(n-1) (with up to 10 % jitter), capped.
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=6)
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_ATTEMPTS = 8
# Delivered rows are kept this long (visible in the webhook's history), then pruned.
KEEP_DELIVERED = timedelta(days=7)
CLAIM_BATCH = 10
USER_AGENT = "PlanB-Webhooks/1"
# Addresses a webhook may never reach: cloud metadata services answer there with credentials.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"})
AWS_METADATA_V6 = ipaddress.ip_address("fd00:ec2::254")


class WebhookError(ValueError):
    """A webhook operation that cannot be done; ``field`` names the input at fault,
    ``status`` is the HTTP status an API answers with: 400 when the input does not have
    the documented shape, 422 when it does but a rule refuses it (a metadata address)."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


# ---------------------------------------------------------------- secrets at rest

class SecretBox:
    """Encrypts webhook URLs and secrets (Fernet: AES-128-CBC + HMAC-SHA256) under a key
    derived (HKDF-SHA256) from the app's secret key, never equal to it.

    Changing ``PLANB_SECRET_KEY`` makes the stored values unreadable: such webhooks fail
    with a message saying so and must be added again."""

    def __init__(self, secret_key: str | bytes) -> None:
        from cryptography.fernet import Fernet
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        material = secret_key.encode() if isinstance(secret_key, str) else secret_key
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"planb", info=b"planb webhook secrets v1") \
            .derive(material)
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise WebhookError("the stored URL or secret cannot be decrypted: the secret key "
                               "(PLANB_SECRET_KEY) changed since the webhook was added; add it again") from None


# ---------------------------------------------------------------- URLs

def _refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not reach ``address`` (None when it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address == AWS_METADATA_V6 or address.is_link_local:
        return "a link-local address (where cloud metadata services answer)"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    return None


def check_url(url: Any) -> tuple[str, list[str]]:
    """``url`` if a webhook may use it, with warnings; WebhookError (field ``url``) otherwise.

    Only http and https; plain http is accepted with a warning.  Link-local addresses
    (169.254.0.0/16, fe80::/10: the cloud metadata services) and metadata host names are
    refused; host names are resolved and checked again at every delivery."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookError("url is required: the receiver's http(s) URL", "url", status=400)
    url = url.strip()
    if len(url) > MAX_URL:
        raise WebhookError(f"url must be at most {MAX_URL} characters", "url", status=400)
    if text_problem(url) or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise WebhookError("url must not contain spaces or control characters", "url", status=400)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookError(f"url is not a valid URL ({exc})", "url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookError(f"url must be an http:// or https:// URL, not {scheme or 'a relative'}:", "url", status=400)
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise WebhookError("url has no host name", "url")
    if parts.fragment:
        raise WebhookError("url must not have a #fragment", "url")
    if host in METADATA_HOSTS:
        raise WebhookError(f"url: {host} is a cloud metadata service, never a webhook receiver", "url")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        reason = _refused_address(address)
        if reason:
            raise WebhookError(f"url: {host} is {reason}; webhooks may not post there", "url")
    if port == 0:
        raise WebhookError("url: port 0 is not a port", "url")
    warnings = []
    if scheme == "http":
        warnings.append("plain http: messages (and their signatures) cross the network unencrypted; "
                        "use https outside a trusted network")
    return url, warnings


def display_url(url: str) -> str:
    """The URL with what may be secret cut off: scheme, host, port and the first path segment.

    ``https://hooks.slack.com/services/T000/B000/XXXX`` -> ``https://hooks.slack.com/services/…``"""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    segments = [s for s in parts.path.split("/") if s]
    path = "/" + segments[0] if segments else ""
    hidden = len(segments) > 1 or parts.query or parts.username or parts.password
    return f"{parts.scheme}://{netloc}{path}{'/…' if hidden else ''}"[:300]


def check_delivery_address(url: str, resolve: Callable[..., Any] = socket.getaddrinfo) -> None:
    """Refuse (WebhookError) a URL whose host now resolves to a refused address."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = resolve(host, parts.port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise WebhookError(f"cannot resolve {host}: {exc}", "url", status=502) from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        reason = _refused_address(address)
        if reason:
            raise WebhookError(f"{host} resolves to {address}, {reason}; not posted", "url")


# ---------------------------------------------------------------- managing webhooks

def _events(events: Any) -> list[str]:
    if isinstance(events, str):
        events = [events]
    if not isinstance(events, (list, tuple)) or not events:
        raise WebhookError(f"events: name at least one of {', '.join(EVENTS)}", "events", status=400)
    if not all(isinstance(e, str) for e in events):
        raise WebhookError("events must be event names (text)", "events", status=400)
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise WebhookError(f"events: unknown event {unknown[0]!r}; events are {', '.join(EVENTS)}", "events", status=400)
    return [e for e in EVENTS if e in set(events)]


def _format(fmt: Any) -> str:
    if fmt not in FORMATS:
        raise WebhookError(f"format must be one of {', '.join(FORMATS)}", "format", status=400)
    return str(fmt)


def _secret(secret: Any) -> str | None:
    if secret is None or secret == "":
        return None
    if not isinstance(secret, str):
        raise WebhookError("secret must be text", "secret", status=400)
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or any(ord(ch) < 33 or ord(ch) > 126 for ch in secret):
        raise WebhookError(f"secret must be {MIN_SECRET} to {MAX_SECRET} printable ASCII characters without "
                           "spaces (e.g. from 'openssl rand -hex 32')", "secret", status=400)
    return secret


def _name(name: Any, url: str) -> str:
    if name is None or (isinstance(name, str) and not name.strip()):
        return display_url(url)[:MAX_NAME]
    if not isinstance(name, str):
        raise WebhookError("name must be text", "name", status=400)
    name = name.strip()
    if len(name) > MAX_NAME:
        raise WebhookError(f"name must be at most {MAX_NAME} characters", "name", status=400)
    problem = text_problem(name)
    if problem or has_line_break(name):
        raise WebhookError(f"name: {problem or 'text must be on one line'}", "name", status=400)
    return name


def _snapshot(webhook: Webhook) -> dict[str, Any]:
    return audit.snapshot(webhook, exclude=("url_encrypted", "secret_encrypted"))


def create_webhook(db: so.Session, box: SecretBox, *, url: Any, events: Any, fmt: Any,
                   secret: Any = None, name: Any = None, actor: str) -> tuple[Webhook, list[str]]:
    """Add a webhook; returns it and warnings (plain http).  URL and secret are stored encrypted."""
    url, warnings = check_url(url)
    webhook = Webhook(name=_name(name, url), url_encrypted=box.encrypt(url), url_display=display_url(url),
                      format=_format(fmt), events=_events(events), active=True, created_by=actor[:200])
    plain_secret = _secret(secret)
    if plain_secret:
        webhook.secret_encrypted = box.encrypt(plain_secret)
    db.add(webhook)
    db.flush()
    audit.record(db, actor=actor, action="create", entity_type="webhook", entity_id=webhook.id,
                 summary=f"added webhook {webhook.name} ({webhook.format}: {', '.join(webhook.events)})"
                         + (", signed" if plain_secret else ""),
                 after={**_snapshot(webhook), "signed": bool(plain_secret)})
    return webhook, warnings


def get_webhook(db: so.Session, webhook_id: int) -> Webhook:
    webhook = db.get(Webhook, webhook_id)
    if webhook is None:
        raise WebhookError(f"no webhook with id {webhook_id}", "webhook", status=404)
    return webhook


def list_webhooks(db: so.Session) -> list[Webhook]:
    return list(db.scalars(sa.select(Webhook).order_by(Webhook.id)))


def update_webhook(db: so.Session, webhook: Webhook, *, actor: str, active: Any = None, events: Any = None,
                   name: Any = None) -> Webhook:
    """Switch a webhook on or off, or change its events or name."""
    before = _snapshot(webhook)
    if active is not None:
        if not isinstance(active, bool):
            raise WebhookError("active must be true or false", "active", status=400)
        webhook.active = active
        if active:
            webhook.disabled_reason = None
    if events is not None:
        webhook.events = _events(events)
    if name is not None:
        webhook.name = _name(name, webhook.url_display)
    db.flush()
    audit.record(db, actor=actor, action="update", entity_type="webhook", entity_id=webhook.id,
                 summary=f"changed webhook {webhook.name}"
                         + ("" if active is None else f" ({'on' if webhook.active else 'off'})"),
                 before=before, after=_snapshot(webhook))
    return webhook


def delete_webhook(db: so.Session, webhook: Webhook, *, actor: str) -> None:
    """Remove a webhook with its queued, delivered and dead messages."""
    audit.record(db, actor=actor, action="delete", entity_type="webhook", entity_id=webhook.id,
                 summary=f"removed webhook {webhook.name}", before=_snapshot(webhook))
    db.delete(webhook)
    db.flush()


def delivery_counts(db: so.Session, webhook_ids: Iterable[int] | None = None) -> dict[int, dict[str, int]]:
    """webhook id -> {pending, delivered, dead}."""
    stmt = sa.select(WebhookDelivery.webhook_id, WebhookDelivery.status, sa.func.count()) \
        .group_by(WebhookDelivery.webhook_id, WebhookDelivery.status)
    if webhook_ids is not None:
        stmt = stmt.where(WebhookDelivery.webhook_id.in_(list(webhook_ids)))
    counts: dict[int, dict[str, int]] = {}
    for webhook_id, status, n in db.execute(stmt):
        counts.setdefault(webhook_id, {"pending": 0, "delivered": 0, "dead": 0})[status] = int(n)
    return counts


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def webhook_to_dict(webhook: Webhook, counts: Mapping[str, int] | None = None) -> dict[str, Any]:
    """What lists and the API show: never the URL's secret parts nor the signing secret."""
    return {"id": webhook.id, "name": webhook.name, "url": webhook.url_display, "format": webhook.format,
            "events": list(webhook.events or []), "signed": webhook.secret_encrypted is not None,
            "active": webhook.active, "disabled_reason": webhook.disabled_reason,
            "created_by": webhook.created_by, "created_at": _iso(webhook.created_at),
            "last_success_at": _iso(webhook.last_success_at), "last_failure_at": _iso(webhook.last_failure_at),
            "deliveries": dict(counts or {"pending": 0, "delivered": 0, "dead": 0})}


def delivery_to_dict(delivery: WebhookDelivery) -> dict[str, Any]:
    return {"id": delivery.id, "webhook_id": delivery.webhook_id, "event": delivery.event,
            "event_id": delivery.event_id, "subject": delivery.subject, "status": delivery.status,
            "attempts": delivery.attempts, "created_at": _iso(delivery.created_at),
            "next_attempt_at": _iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
            "last_attempt_at": _iso(delivery.last_attempt_at), "delivered_at": _iso(delivery.delivered_at),
            "last_status_code": delivery.last_status_code, "last_error": delivery.last_error}


def recent_deliveries(db: so.Session, webhook: Webhook, limit: int = 20) -> list[WebhookDelivery]:
    """The webhook's latest pending and delivered messages (its dead letters are listed apart)."""
    return list(db.scalars(sa.select(WebhookDelivery).where(
        WebhookDelivery.webhook_id == webhook.id, WebhookDelivery.status != "dead")
        .order_by(WebhookDelivery.id.desc()).limit(limit)))


# ---------------------------------------------------------------- the dead-letter list

def dead_letters(db: so.Session, webhook: Webhook, limit: int = 200) -> list[WebhookDelivery]:
    return list(db.scalars(sa.select(WebhookDelivery).where(
        WebhookDelivery.webhook_id == webhook.id, WebhookDelivery.status == "dead")
        .order_by(WebhookDelivery.id.desc()).limit(limit)))


def _dead(db: so.Session, webhook: Webhook, delivery_id: int | None) -> list[WebhookDelivery]:
    stmt = sa.select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook.id,
                                            WebhookDelivery.status == "dead")
    if delivery_id is not None:
        stmt = stmt.where(WebhookDelivery.id == delivery_id)
    rows = list(db.scalars(stmt))
    if delivery_id is not None and not rows:
        raise WebhookError(f"webhook {webhook.id} has no dead letter {delivery_id}", "delivery", status=404)
    return rows


def retry_dead(db: so.Session, webhook: Webhook, delivery_id: int | None = None, *, actor: str,
               now: datetime | None = None) -> int:
    """Queue dead letters again (one, or all of the webhook's) with a fresh set of attempts."""
    rows = _dead(db, webhook, delivery_id)
    now = now or utcnow()
    for row in rows:
        row.status, row.attempts, row.next_attempt_at = "pending", 0, now
        row.lease_owner = row.lease_until = None
    db.flush()
    if rows:
        audit.record(db, actor=actor, action="retry", entity_type="webhook", entity_id=webhook.id,
                     summary=f"queued {len(rows)} dead letter(s) of webhook {webhook.name} again",
                     after={"deliveries": [r.id for r in rows][:200]})
    return len(rows)


def discard_dead(db: so.Session, webhook: Webhook, delivery_id: int | None = None, *, actor: str) -> int:
    """Delete dead letters (one, or all of the webhook's)."""
    rows = _dead(db, webhook, delivery_id)
    for row in rows:
        db.delete(row)
    db.flush()
    if rows:
        audit.record(db, actor=actor, action="discard", entity_type="webhook", entity_id=webhook.id,
                     summary=f"discarded {len(rows)} dead letter(s) of webhook {webhook.name}",
                     before={"deliveries": [{"id": r.id, "event": r.event, "subject": r.subject}
                                            for r in rows][:200]})
    return len(rows)


# ---------------------------------------------------------------- queueing

def enqueue(db: so.Session, webhook: Webhook, *, event: str, event_id: str, subject: str,
            body: dict[str, Any], now: datetime | None = None) -> WebhookDelivery:
    """Put one message for ``webhook`` in the outbox (the caller's transaction)."""
    now = now or utcnow()
    delivery = WebhookDelivery(webhook_id=webhook.id, event=event, event_id=event_id, subject=subject[:300],
                               body=body, status="pending", attempts=0, created_at=now, next_attempt_at=now)
    db.add(delivery)
    return delivery


def new_event_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------- posting

def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``: the timestamp is signed with
    the body, so a receiver that refuses old timestamps also refuses replays."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def request_headers(delivery: WebhookDelivery, body: bytes, secret: str | None,
                    now: float | None = None) -> dict[str, str]:
    timestamp = str(int(now if now is not None else time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-PlanB-Event": delivery.event, "X-PlanB-Event-Id": delivery.event_id,
               "X-PlanB-Delivery": str(delivery.id), "X-PlanB-Timestamp": timestamp}
    if secret:
        headers["X-PlanB-Signature"] = signature(secret, timestamp, body)
    return headers


def encode_body(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class Attempt:
    """The outcome of posting one message."""

    ok: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False   # retrying the same message cannot help
    gone: bool = False        # the receiver says the endpoint no longer exists (410)
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return min(float(value.strip()), RETRY_CAP.total_seconds())
    return None


def http_session() -> Any:
    """The HTTP client webhooks are posted with (a ``requests.Session``; use it in a ``with``).

    This module is the only place the server requests a URL someone supplied: every URL
    passed ``check_url`` when it was added and ``check_delivery_address`` before each post."""
    import requests

    return requests.Session()


def post(http: Any, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Attempt:
    """POST ``body`` to ``url`` through ``http`` (a ``requests.Session``), never following redirects."""
    import requests

    try:
        response = http.post(url, data=body, headers=dict(headers), timeout=timeout, allow_redirects=False)
    except requests.Timeout:
        return Attempt(False, error=f"no answer within {timeout:g} s")
    except requests.RequestException as exc:
        return Attempt(False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    code = response.status_code
    snippet = (response.text or "")[:200].strip()
    response.close()
    if 200 <= code < 300:
        return Attempt(True, code)
    error = f"HTTP {code}" + (f": {snippet}" if snippet else "")
    if code == 410:
        return Attempt(False, code, error, permanent=True, gone=True)
    if 300 <= code < 400:
        return Attempt(False, code, f"HTTP {code}: redirects are not followed; use the final URL", permanent=True)
    if code in (408, 425, 429) or code >= 500:
        return Attempt(False, code, error, retry_after=_retry_after(response.headers.get("Retry-After")))
    return Attempt(False, code, error, permanent=True)  # 400, 401, 403, 404, 413, 422...


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
    """Wait after the ``attempts``-th failure: 30 s, 1 min, 2 min, 4 min ... at most 6 h, +0-10 %."""
    wait = min(RETRY_BASE * (2 ** max(attempts - 1, 0)), RETRY_CAP)
    return wait * (1 + 0.1 * rng())


# ---------------------------------------------------------------- the worker's loop

@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    pruned: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.delivered + self.retried + self.dead


def worker_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_due(engine: Engine, owner: str, now: datetime, lease: timedelta, limit: int = CLAIM_BATCH) -> list[int]:
    """Lease up to ``limit`` due pending rows to ``owner``; returns their ids.

    A row is due when its next attempt time has come and nobody holds a current lease
    on it.  PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE`` in one
    transaction, so concurrent workers pick disjoint rows without waiting; SQLite: one
    ``UPDATE`` under its database write lock (``BEGIN IMMEDIATE``)."""
    due = sa.and_(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                  sa.or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))
    pick = sa.select(WebhookDelivery.id).where(due).order_by(WebhookDelivery.next_attempt_at,
                                                              WebhookDelivery.id).limit(limit)
    with write_session(engine) as db:
        if db.get_bind().dialect.name == "postgresql":
            ids = list(db.scalars(pick.with_for_update(skip_locked=True)))
            if ids:
                db.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
                           .values(lease_owner=owner, lease_until=now + lease))
            return ids
        db.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id.in_(pick.scalar_subquery()))
                   .values(lease_owner=owner, lease_until=now + lease)
                   .execution_options(synchronize_session=False))
        return list(db.scalars(sa.select(WebhookDelivery.id).where(
            WebhookDelivery.lease_owner == owner, WebhookDelivery.lease_until == now + lease,
            WebhookDelivery.status == "pending").order_by(WebhookDelivery.id)))


def deliver_due(engine: Engine, box: SecretBox, *, http: Any = None, now: datetime | None = None,
                timeout: float = DEFAULT_TIMEOUT, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                limit: int = 100, owner: str | None = None,
                resolve: Callable[..., Any] = socket.getaddrinfo) -> DeliveryReport:
    """Post every due message (at most ``limit``), a batch of leased rows at a time."""
    report = DeliveryReport()
    owner = owner or worker_id()
    session = http or http_session()
    fixed_now = now
    try:
        while report.attempted < limit:
            moment = fixed_now or utcnow()
            batch = min(CLAIM_BATCH, limit - report.attempted)
            # Long enough for every row of the batch to time out once, with room to spare.
            lease = timedelta(seconds=batch * (timeout + 5) + 30)
            ids = claim_due(engine, owner, moment, lease, batch)
            if not ids:
                break
            for delivery_id in ids:
                _deliver_one(engine, box, session, delivery_id, owner, fixed_now, timeout, max_attempts,
                             report, resolve)
        report.pruned = prune_delivered(engine, fixed_now or utcnow())
    finally:
        if http is None:
            session.close()
    return report


def _deliver_one(engine: Engine, box: SecretBox, http: Any, delivery_id: int, owner: str,
                 fixed_now: datetime | None, timeout: float, max_attempts: int, report: DeliveryReport,
                 resolve: Callable[..., Any]) -> None:
    with read_session(engine) as db:
        delivery = db.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.lease_owner != owner:
            return
        webhook = delivery.webhook
        db.expunge_all()
    attempt: Attempt
    if not webhook.active:
        attempt = Attempt(False, error="the webhook is switched off", permanent=True)
    else:
        try:
            url = box.decrypt(webhook.url_encrypted)
            secret = box.decrypt(webhook.secret_encrypted) if webhook.secret_encrypted else None
            check_delivery_address(url, resolve)
        except WebhookError as exc:
            attempt = Attempt(False, error=exc.message, permanent=exc.status != 502)
        else:
            body = encode_body(delivery.body)
            attempt = post(http, url, body, request_headers(delivery, body, secret), timeout)
    record_attempt(engine, delivery_id, owner, attempt, fixed_now or utcnow(), max_attempts, report)


def record_attempt(engine: Engine, delivery_id: int, owner: str, attempt: Attempt, now: datetime,
                   max_attempts: int, report: DeliveryReport) -> None:
    """Write the outcome of one attempt, if ``owner`` still holds the row's lease."""
    with write_session(engine) as db:
        delivery = db.get(WebhookDelivery, delivery_id)
        if delivery is None or delivery.lease_owner != owner or delivery.status != "pending":
            return  # removed or discarded meanwhile, or the lease ran out and another worker took it
        webhook = delivery.webhook
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.last_status_code = attempt.status_code
        delivery.last_error = (attempt.error or "")[:500] or None
        delivery.lease_owner = delivery.lease_until = None
        if attempt.ok:
            delivery.status, delivery.delivered_at = "delivered", now
            webhook.last_success_at = now
            report.delivered += 1
            return
        webhook.last_failure_at = now
        if attempt.permanent or delivery.attempts >= max_attempts:
            delivery.status = "dead"
            report.dead += 1
            report.errors.append(f"delivery {delivery.id} to webhook {webhook.id}: {attempt.error} (dead letter)")
            log.warning("webhook delivery dead", extra={"webhook_id": webhook.id, "delivery_id": delivery.id,
                                                        "error": attempt.error, "attempts": delivery.attempts})
        else:
            wait = backoff(delivery.attempts)
            if attempt.retry_after is not None:
                wait = max(wait, timedelta(seconds=attempt.retry_after))
            delivery.next_attempt_at = now + wait
            report.retried += 1
            log.info("webhook delivery failed; will retry", extra={
                "webhook_id": webhook.id, "delivery_id": delivery.id, "error": attempt.error,
                "attempts": delivery.attempts, "retry_in_seconds": round(wait.total_seconds())})
        if attempt.gone and webhook.active:
            before = _snapshot(webhook)
            webhook.active = False
            webhook.disabled_reason = f"switched off: the receiver answered {attempt.error}"[:500]
            db.flush()
            audit.record(db, actor="system", action="disable", entity_type="webhook", entity_id=webhook.id,
                         summary=f"webhook {webhook.name} switched off: its receiver says it is gone (410)",
                         before=before, after=_snapshot(webhook))


def prune_delivered(engine: Engine, now: datetime, keep: timedelta = KEEP_DELIVERED) -> int:
    """Delete delivered messages older than ``keep`` (the outbox does not grow without end)."""
    with write_session(engine) as db:
        result = db.execute(sa.delete(WebhookDelivery).where(
            WebhookDelivery.status == "delivered", WebhookDelivery.delivered_at < now - keep))
        return int(result.rowcount or 0)


def send_test(db: so.Session, box: SecretBox, webhook: Webhook, body: dict[str, Any], *, http: Any = None,
              timeout: float = DEFAULT_TIMEOUT, actor: str,
              resolve: Callable[..., Any] = socket.getaddrinfo) -> Attempt:
    """Post a sample message to ``webhook`` now (no outbox, no retries); audited."""
    url = box.decrypt(webhook.url_encrypted)
    secret = box.decrypt(webhook.secret_encrypted) if webhook.secret_encrypted else None
    probe = WebhookDelivery(id=0, event="test", event_id=new_event_id(), webhook_id=webhook.id)
    try:
        check_delivery_address(url, resolve)
    except WebhookError as exc:
        attempt = Attempt(False, error=exc.message, permanent=True)
    else:
        payload = encode_body(body)
        session = http or http_session()
        try:
            attempt = post(session, url, payload, request_headers(probe, payload, secret), timeout)
        finally:
            if http is None:
                session.close()
    audit.record(db, actor=actor, action="test", entity_type="webhook", entity_id=webhook.id,
                 summary=f"sent a test message to webhook {webhook.name}: "
                         + ("delivered" if attempt.ok else f"failed ({attempt.error})"),
                 after={"ok": attempt.ok, "status_code": attempt.status_code, "error": attempt.error})
    return attempt
