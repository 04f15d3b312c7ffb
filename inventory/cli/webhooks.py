"""``planb webhooks ...``: notification endpoints, their delivery, and dead letters."""
from __future__ import annotations

import sys

import click
from flask import current_app

from inventory.app_db import get_engine, get_session
from inventory.principal import current_actor
from inventory.cli import CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, emit, to_json
from inventory.cli.params import DbId
from inventory.services import notify
from inventory.services import webhooks as svc

EVENT_CHOICE = click.Choice(svc.EVENTS)


def _box() -> svc.SecretBox:
    return svc.SecretBox(current_app.config["SECRET_KEY"])


def _webhook(webhook_id: int):  # type: ignore[no-untyped-def]
    try:
        return svc.get_webhook(get_session(), webhook_id)
    except svc.WebhookError as exc:
        raise CLIError(exc.message) from exc


@click.group()
def webhooks() -> None:
    """Webhooks: incident, collection, update-gate and plan-review notifications (JSON, Slack, Teams)."""


@webhooks.command("add")
@click.argument("url")
@click.option("--event", "events", type=EVENT_CHOICE, multiple=True, required=True,
              help="An event to send (repeat for more).")
@click.option("--format", "fmt", type=click.Choice(svc.FORMATS), default="json", show_default=True,
              help="What the receiver reads: plain JSON, Slack (Block Kit) or Teams (Adaptive Card).")
@click.option("--secret", help="Sign each message with this secret (X-PlanB-Signature). Prefer --secret-stdin.")
@click.option("--secret-stdin", is_flag=True, help="Read the signing secret from standard input.")
@click.option("--name", help="A label for lists (default: the URL's host).")
@with_app
def add(url: str, events: tuple[str, ...], fmt: str, secret: str | None, secret_stdin: bool,
        name: str | None) -> None:
    """Add a webhook that receives EVENTs at URL (http or https)."""
    if secret_stdin:
        if secret:
            raise CLIError("give the secret with --secret or --secret-stdin, not both")
        secret = sys.stdin.readline().rstrip("\r\n")
    db = get_session()
    try:
        webhook, warnings = svc.create_webhook(db, _box(), url=url, events=list(events), fmt=fmt, secret=secret,
                                               name=name, actor=current_actor())
    except svc.WebhookError as exc:
        raise CLIError(f"{exc.field}: {exc.message}" if exc.field and not exc.message.startswith(exc.field)
                       else exc.message) from exc
    db.commit()
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(f"Added webhook #{webhook.id} {webhook.name!r} ({webhook.format}: {', '.join(webhook.events)})"
               + ("; messages are signed" if webhook.secret_encrypted else "") + ".")
    click.echo("The URL and secret are stored encrypted and never shown again.")


@webhooks.command("list")
@FORMAT_OPTION
@with_app
def list_webhooks(fmt: str) -> None:
    """List webhooks with their delivery counts (never their secrets)."""
    db = get_session()
    items = svc.list_webhooks(db)
    counts = svc.delivery_counts(db)
    rows = [svc.webhook_to_dict(w, counts.get(w.id)) for w in items]
    if fmt == "json":
        click.echo(to_json(rows))
        return
    for row in rows:
        d = row["deliveries"]
        row["queue"] = f"{d['pending']} pending, {d['dead']} dead"
        row["state"] = "on" if row["active"] else "off"
    emit(rows, ["id", "name", "url", "format", "events", "signed", "state", "queue", "last_success_at"], fmt,
         empty="No webhooks yet. Add one with: planb webhooks add URL --event incident.declared --format slack")


@webhooks.command("remove")
@click.argument("webhook_id", type=DbId("no webhook with id {}"))
@with_app
def remove(webhook_id: int) -> None:
    """Remove a webhook with its queued and dead messages."""
    webhook = _webhook(webhook_id)
    svc.delete_webhook(get_session(), webhook, actor=current_actor())
    get_session().commit()
    click.echo(f"Removed webhook #{webhook_id} {webhook.name!r}.")


@webhooks.command("disable")
@click.argument("webhook_id", type=DbId("no webhook with id {}"))
@with_app
def disable(webhook_id: int) -> None:
    """Stop sending to a webhook (nothing is queued for it meanwhile)."""
    svc.update_webhook(get_session(), _webhook(webhook_id), active=False, actor=current_actor())
    get_session().commit()
    click.echo(f"Webhook #{webhook_id} is off.")


@webhooks.command("enable")
@click.argument("webhook_id", type=DbId("no webhook with id {}"))
@with_app
def enable(webhook_id: int) -> None:
    """Send to a webhook again."""
    svc.update_webhook(get_session(), _webhook(webhook_id), active=True, actor=current_actor())
    get_session().commit()
    click.echo(f"Webhook #{webhook_id} is on.")


@webhooks.command("test")
@click.argument("webhook_id", type=DbId("no webhook with id {}"))
@with_app
def test(webhook_id: int) -> None:
    """Post a sample message to a webhook now and show the receiver's answer."""
    db = get_session()
    webhook = _webhook(webhook_id)
    try:
        attempt = svc.send_test(db, _box(), webhook, notify.test_body(webhook),
                                timeout=float(current_app.config["WEBHOOK_TIMEOUT"]), actor=current_actor())
    except svc.WebhookError as exc:
        raise CLIError(exc.message) from exc
    db.commit()
    if not attempt.ok:
        raise CLIError(f"the test message was not delivered: {attempt.error}")
    click.echo(f"Delivered: the receiver answered HTTP {attempt.status_code}.")


@webhooks.command("deliver")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Post at most this many messages.")
@click.option("--no-checks", is_flag=True,
              help="Only post queued messages; skip looking for stale sources, the gate, overdue reviews.")
@with_app
def deliver(limit: int, no_checks: bool) -> None:
    """Post the queued messages that are due (for cron, besides the web app's own worker).

    Also looks for sources silent past PLANB_COLLECTION_STALE_HOURS, a red update gate
    and newly overdue plan reviews, and queues their messages first.  Exit 1 when a
    message went to the dead-letter list."""
    engine = get_engine()
    if not no_checks:
        checks = notify.check_conditions(engine, stale_hours=current_app.config["COLLECTION_STALE_HOURS"])
        for error in checks.errors:
            click.echo(f"Warning: check {error}", err=True)
        if checks.queued:
            click.echo(f"Queued {checks.queued} message(s): {checks.stale} stale source(s), "
                       f"{checks.gate} gate, {checks.plans} plan review(s).")
    report = svc.deliver_due(engine, _box(), timeout=float(current_app.config["WEBHOOK_TIMEOUT"]),
                             max_attempts=int(current_app.config["WEBHOOK_MAX_ATTEMPTS"]), limit=limit)
    click.echo(f"Delivered {report.delivered}, will retry {report.retried}, dead letters {report.dead}.")
    for error in report.errors:
        click.echo(f"Dead letter: {error}", err=True)
    if report.dead:
        click.get_current_context().exit(1)


@webhooks.command("dead")
@click.argument("webhook_id", type=DbId("no webhook with id {}"))
@FORMAT_OPTION
@with_app
def dead(webhook_id: int, fmt: str) -> None:
    """List a webhook's dead letters (messages that could not be delivered)."""
    rows = [svc.delivery_to_dict(d) for d in svc.dead_letters(get_session(), _webhook(webhook_id))]
    emit(rows, ["id", "event", "subject", "attempts", "last_attempt_at", "last_status_code", "last_error"], fmt,
         empty="No dead letters.")


@webhooks.command("retry")
@click.argument("webhook_id", type=DbId("no webhook with id {}"))
@click.option("--delivery", "delivery_id", type=DbId("no dead letter {}"),
              help="Only this dead letter (default: all of the webhook's).")
@with_app
def retry(webhook_id: int, delivery_id: int | None) -> None:
    """Queue a webhook's dead letters again, with a fresh set of attempts."""
    db = get_session()
    try:
        n = svc.retry_dead(db, _webhook(webhook_id), delivery_id, actor=current_actor())
    except svc.WebhookError as exc:
        raise CLIError(exc.message) from exc
    db.commit()
    click.echo(f"Queued {n} message(s) again.")


@webhooks.command("discard")
@click.argument("webhook_id", type=DbId("no webhook with id {}"))
@click.option("--delivery", "delivery_id", type=DbId("no dead letter {}"),
              help="Only this dead letter (default: all of the webhook's).")
@with_app
def discard(webhook_id: int, delivery_id: int | None) -> None:
    """Delete a webhook's dead letters."""
    db = get_session()
    try:
        n = svc.discard_dead(db, _webhook(webhook_id), delivery_id, actor=current_actor())
    except svc.WebhookError as exc:
        raise CLIError(exc.message) from exc
    db.commit()
    click.echo(f"Discarded {n} dead letter(s).")
