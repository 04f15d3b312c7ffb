"""Administration pages: users, API tokens, webhooks and the audit trail (admins only).

Every view is ``@require_role("admin")``.  Secrets (a generated password, a new
token) are rendered once in the response to the POST that created them — never
flashed, because flashed messages travel in the (signed, not encrypted) session
cookie — and pages are sent with ``Cache-Control: no-store``.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from wtforms import PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from inventory import auth
from inventory.app_db import get_session
from inventory.auth import AuthError, current_actor, current_principal, require_role
from inventory.choices import ROLES, TOKEN_ROLES
from inventory.db import utcnow
from inventory.ids import as_id
from inventory.models import ApiToken, AuditEvent, User
from inventory.forms import Form, SingleLine, options, same
from inventory.services import audit, notify
from inventory.services import webhooks as webhook_svc
from inventory.web.ui import refuse_bad_query

bp = Blueprint("admin", __name__, url_prefix="/admin")

AUDIT_PAGE_SIZE = 50
AUDIT_FILTERS = ("entity_type", "action", "actor", "entity_id", "since", "until")


@bp.get("/")
@require_role("admin")
def index():  # type: ignore[no-untyped-def]
    db = get_session()
    counts = {
        "users": db.scalar(sa.select(sa.func.count(User.id)).where(User.active.is_(True))),
        "tokens": db.scalar(sa.select(sa.func.count(ApiToken.id)).where(
            ApiToken.revoked_at.is_(None),
            sa.or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > utcnow()))),
        "events": db.scalar(sa.select(sa.func.count(AuditEvent.id))),
    }
    recent = audit.list_events(db, limit=10)
    return render_template("admin/index.html", counts=counts, recent=recent)


# ---------------------------------------------------------------- users

def _users_page(status: int = 200, **context: Any):  # type: ignore[no-untyped-def]
    db = get_session()
    users = db.scalars(sa.select(User).order_by(User.username)).all()
    return render_template("admin/users.html", users=users, roles=ROLES, **context), status


@bp.get("/users")
@require_role("admin")
def users():  # type: ignore[no-untyped-def]
    return _users_page()


@bp.post("/users")
@require_role("admin")
def create_user():  # type: ignore[no-untyped-def]
    db = get_session()
    username = request.form.get("username", "")
    role = request.form.get("role", "viewer")
    password = request.form.get("password") or None
    try:
        user, plain = auth.create_user(db, username, role, password, actor=current_actor())
    except AuthError as exc:
        db.rollback()
        return _users_page(400, error=str(exc), form={"username": username, "role": role})
    db.commit()
    # Shown in this response only; when the admin typed the password there is nothing to show.
    return _users_page(201, created=user.username, password=None if password else plain)


def _user_or_404(user_id: int) -> User:
    user = get_session().get(User, user_id)
    if user is None:
        abort(404)
    return user


@bp.post("/users/<int:user_id>/role")
@require_role("admin")
def set_role(user_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    user = _user_or_404(user_id)
    try:
        auth.set_role(db, user, request.form.get("role", ""), actor=current_actor())
    except AuthError as exc:
        db.rollback()
        return _users_page(400, error=str(exc))
    db.commit()
    flash(f"{user.username} is now {user.role}; their sessions have ended.")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/active")
@require_role("admin")
def set_active(user_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    user = _user_or_404(user_id)
    raw = request.form.get("active")
    if raw not in ACTIVE_VALUES:
        # Only the form's own values: anything else (a typo, a missing field) must not lock a user out.
        return _users_page(400, error="active must be 1 (can log in) or 0 (cannot)")
    active = ACTIVE_VALUES[raw]
    principal = current_principal()
    if not active and principal is not None and principal.user_id == user.id:
        return _users_page(400, error="you cannot deactivate your own account")
    try:
        auth.set_active(db, user, active, actor=current_actor())
    except AuthError as exc:
        db.rollback()
        return _users_page(400, error=str(exc))
    db.commit()
    flash(f"{user.username} {'can log in again' if active else 'can no longer log in'}.")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/password")
@require_role("admin")
def reset_password(user_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    user = _user_or_404(user_id)
    plain = auth.reset_password(db, user, actor=current_actor())
    db.commit()
    return _users_page(200, created=user.username, password=plain, reset=True)


ACTIVE_VALUES = {"1": True, "0": False}


# ---------------------------------------------------------------- tokens

def _tokens_page(status: int = 200, **context: Any):  # type: ignore[no-untyped-def]
    db = get_session()
    rows = db.execute(sa.select(ApiToken, User.username).outerjoin(User, ApiToken.created_by_id == User.id)
                      .order_by(ApiToken.id.desc())).all()
    now = utcnow()
    tokens = [{"token": t, "created_by": name, "state": auth.token_state(t, now)} for t, name in rows]
    return render_template("admin/tokens.html", tokens=tokens, token_roles=TOKEN_ROLES, **context), status


@bp.get("/tokens")
@require_role("admin")
def tokens():  # type: ignore[no-untyped-def]
    return _tokens_page()


@bp.post("/tokens")
@require_role("admin")
def create_token():  # type: ignore[no-untyped-def]
    db = get_session()
    name = request.form.get("name", "")
    role = request.form.get("role", "read")
    raw_days = (request.form.get("expires_days") or "").strip()
    # Whole days in ASCII digits: float() took '1e-9' (a token expired when created), int() takes '١٢'.
    if raw_days and not (raw_days.isascii() and raw_days.isdigit()):
        return _tokens_page(400, error=f"expires_days: expiry must be a whole number of days from "
                                       f"{auth.MIN_TOKEN_DAYS} to {auth.MAX_TOKEN_DAYS}", form=request.form)
    days = int(raw_days) if raw_days else None
    principal = current_principal()
    creator = db.get(User, principal.user_id) if principal and principal.user_id else None
    try:
        token, plain = auth.create_token(db, name, role, expires_in_days=days, created_by=creator,
                                         actor=current_actor())
    except AuthError as exc:
        db.rollback()
        return _tokens_page(exc.status, error=str(exc), form=request.form)
    db.commit()
    return _tokens_page(201, created=token, plaintext=plain)


@bp.post("/tokens/<int:token_id>/revoke")
@require_role("admin")
def revoke_token(token_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    try:
        token = auth.revoke_token(db, token_id, actor=current_actor())
    except AuthError:
        abort(404)
    db.commit()
    flash(f"Token {token.name} ({token.prefix}…) revoked; it stops working at once.")
    return redirect(url_for("admin.tokens"))


# ---------------------------------------------------------------- audit trail

def _parse_day(value: str, field: str, end: bool = False) -> datetime:
    try:
        day = datetime.strptime(value, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"{field} must be a date like 2024-07-19") from None
    moment = datetime.combine(day, time.min, tzinfo=timezone.utc)
    if not end:
        return moment
    # "until 2024-07-19" includes that whole day; the last day there is (9999-12-31) has no next
    # day to stop before, so it ends at the last microsecond instead (and lists everything).
    if day == date.max:
        return datetime.combine(day, time.max, tzinfo=timezone.utc)
    return moment + timedelta(days=1)


@bp.get("/audit")
@require_role("admin")
def audit_trail():  # type: ignore[no-untyped-def]
    db = get_session()
    refuse_bad_query({**{key: None for key in AUDIT_FILTERS}, "before": None})
    filters = {key: (request.args.get(key) or "").strip() for key in AUDIT_FILTERS}
    too_long = [key for key, value in filters.items() if len(value) > 200]
    if too_long:
        abort(400, description=f"Bad query: {too_long[0]}: at most 200 characters")
    before = None
    if request.args.get("before"):
        before = as_id(request.args["before"])
        if before is None:
            abort(400, description="Bad query: before: must be an audit event id (a whole number)")
    error = None
    since = until = None
    try:
        if filters["since"]:
            since = _parse_day(filters["since"], "since")
        if filters["until"]:
            until = _parse_day(filters["until"], "until", end=True)
    except ValueError as exc:
        error = str(exc)
    events: list[AuditEvent] = []
    if error is None:
        # One more than a page tells whether there is a next page.
        events = audit.list_events(db, entity_type=filters["entity_type"] or None,
                                   action=filters["action"] or None, actor=filters["actor"] or None,
                                   entity_id=filters["entity_id"] or None, since=since, until=until,
                                   before_id=before, limit=AUDIT_PAGE_SIZE + 1)
    next_before = events[AUDIT_PAGE_SIZE - 1].id if len(events) > AUDIT_PAGE_SIZE else None
    events = events[:AUDIT_PAGE_SIZE]
    kept = {k: v for k, v in filters.items() if v}
    choices = {column: audit.distinct_values(db, column) for column in ("entity_type", "action")}
    return render_template("admin/audit.html", events=events, filters=filters, kept=kept, error=error,
                           next_before=next_before, first_page=before is None, choices=choices), \
        (400 if error else 200)


# ---------------------------------------------------------------- webhooks

class CheckboxesField(SelectMultipleField):
    """A list of checkboxes (WTForms' documented pattern for several choices)."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class WebhookForm(Form):
    url = StringField("Receiver URL (https://…; Slack or Teams incoming-webhook URL, or your own endpoint)",
                      validators=[DataRequired(), Length(max=webhook_svc.MAX_URL)])
    fmt = SelectField("Format", choices=options([("slack", "Slack (Block Kit)"),
                                                 ("teams", "Microsoft Teams (Adaptive Card)"),
                                                 ("json", "JSON (your own receiver)")]), default="slack")
    events = CheckboxesField("Events", choices=same(webhook_svc.EVENTS), validators=[DataRequired()],
                             default=["incident.declared", "incident.resolved"])
    secret = PasswordField("Signing secret (optional; 16+ characters, e.g. from 'openssl rand -hex 32')",
                           validators=[Optional(), Length(max=webhook_svc.MAX_SECRET)])
    name = StringField("Name (optional, for lists)", validators=[Optional(), SingleLine(),
                                                                 Length(max=webhook_svc.MAX_NAME)])


def _box() -> webhook_svc.SecretBox:
    return webhook_svc.SecretBox(current_app.config["SECRET_KEY"])


def _webhooks_page(form: WebhookForm | None = None, status: int = 200, **context: Any):  # type: ignore[no-untyped-def]
    db = get_session()
    items = webhook_svc.list_webhooks(db)
    counts = webhook_svc.delivery_counts(db)
    rows = [webhook_svc.webhook_to_dict(w, counts.get(w.id)) for w in items]
    return render_template("admin/webhooks.html", webhooks=rows, form=form or WebhookForm(),
                           external_url=notify.external_url(), **context), status


@bp.get("/webhooks")
@require_role("admin")
def webhooks():  # type: ignore[no-untyped-def]
    return _webhooks_page()


@bp.post("/webhooks")
@require_role("admin")
def create_webhook():  # type: ignore[no-untyped-def]
    form = WebhookForm()
    if not form.validate_on_submit():
        return _webhooks_page(form, 400)
    db = get_session()
    try:
        webhook, warnings = webhook_svc.create_webhook(
            db, _box(), url=form.url.data, events=form.events.data, fmt=form.fmt.data,
            secret=form.secret.data or None, name=form.name.data or None, actor=current_actor())
    except webhook_svc.WebhookError as exc:
        db.rollback()
        target = {"format": form.fmt}.get(exc.field or "", getattr(form, exc.field or "", None))
        if target is not None and hasattr(target, "errors"):
            target.errors = [*target.errors, exc.message]
        else:
            form.form_errors.append(exc.message)
        return _webhooks_page(form, 400)
    db.commit()
    for warning in warnings:
        flash(f"Warning: {warning}.", "warning")
    flash(f"Webhook {webhook.name} added. Its URL and secret are stored encrypted and not shown again.")
    return redirect(url_for("admin.webhook_detail", webhook_id=webhook.id))


def _webhook_or_404(webhook_id: int):  # type: ignore[no-untyped-def]
    try:
        return webhook_svc.get_webhook(get_session(), webhook_id)
    except webhook_svc.WebhookError:
        abort(404)


@bp.get("/webhooks/<int:webhook_id>")
@require_role("admin")
def webhook_detail(webhook_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    webhook = _webhook_or_404(webhook_id)
    counts = webhook_svc.delivery_counts(db, [webhook.id]).get(webhook.id)
    recent = webhook_svc.recent_deliveries(db, webhook, limit=20)
    return render_template("admin/webhook_detail.html", webhook=webhook_svc.webhook_to_dict(webhook, counts),
                           dead=[webhook_svc.delivery_to_dict(d) for d in webhook_svc.dead_letters(db, webhook)],
                           recent=[webhook_svc.delivery_to_dict(d) for d in recent])


@bp.post("/webhooks/<int:webhook_id>/active")
@require_role("admin")
def webhook_active(webhook_id: int):  # type: ignore[no-untyped-def]
    raw = request.form.get("active")
    if raw not in ACTIVE_VALUES:
        abort(400, description="active must be 1 (on) or 0 (off)")
    db = get_session()
    webhook = _webhook_or_404(webhook_id)
    webhook_svc.update_webhook(db, webhook, active=ACTIVE_VALUES[raw], actor=current_actor())
    db.commit()
    flash(f"Webhook {webhook.name} is {'on' if webhook.active else 'off'}.")
    return redirect(url_for("admin.webhook_detail", webhook_id=webhook.id))


@bp.post("/webhooks/<int:webhook_id>/test")
@require_role("admin")
def webhook_test(webhook_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    webhook = _webhook_or_404(webhook_id)
    try:
        attempt = webhook_svc.send_test(db, _box(), webhook, notify.test_body(webhook),
                                        timeout=float(current_app.config.get("WEBHOOK_TIMEOUT") or 10),
                                        actor=current_actor())
    except webhook_svc.WebhookError as exc:
        db.rollback()
        flash(f"Test not sent: {exc.message}", "error")
        return redirect(url_for("admin.webhook_detail", webhook_id=webhook_id))
    db.commit()
    if attempt.ok:
        flash(f"Test message delivered (HTTP {attempt.status_code}).")
    else:
        flash(f"Test message not delivered: {attempt.error}", "error")
    return redirect(url_for("admin.webhook_detail", webhook_id=webhook_id))


@bp.post("/webhooks/<int:webhook_id>/delete")
@require_role("admin")
def webhook_delete(webhook_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    webhook = _webhook_or_404(webhook_id)
    webhook_svc.delete_webhook(db, webhook, actor=current_actor())
    db.commit()
    flash(f"Webhook {webhook.name} removed.")
    return redirect(url_for("admin.webhooks"))


def _dead_letter_action(webhook_id: int, action: str):  # type: ignore[no-untyped-def]
    db = get_session()
    webhook = _webhook_or_404(webhook_id)
    raw = request.form.get("delivery") or ""
    delivery_id = as_id(raw) if raw else None
    if raw and delivery_id is None:
        abort(400, description="delivery must be a dead letter's id")
    try:
        if action == "retry":
            n = webhook_svc.retry_dead(db, webhook, delivery_id, actor=current_actor())
        else:
            n = webhook_svc.discard_dead(db, webhook, delivery_id, actor=current_actor())
    except webhook_svc.WebhookError:
        abort(404)
    db.commit()
    flash(f"{n} dead letter(s) {'queued again' if action == 'retry' else 'discarded'}.")
    return redirect(url_for("admin.webhook_detail", webhook_id=webhook_id))


@bp.post("/webhooks/<int:webhook_id>/dead/retry")
@require_role("admin")
def webhook_retry(webhook_id: int):  # type: ignore[no-untyped-def]
    return _dead_letter_action(webhook_id, "retry")


@bp.post("/webhooks/<int:webhook_id>/dead/discard")
@require_role("admin")
def webhook_discard(webhook_id: int):  # type: ignore[no-untyped-def]
    return _dead_letter_action(webhook_id, "discard")
