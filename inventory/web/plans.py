"""Contingency plan pages: list (with coverage gaps and RTO check), detail, create/edit, record events."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from inventory.app_db import get_session
from inventory.auth import current_actor, require_role
from inventory.forms import PlanEventForm, PlanForm, attach_error
from inventory.services import plans as svc
from inventory.web.ui import refuse_bad_query

bp = Blueprint("plans", __name__, url_prefix="/plans")


def _plan_or_404(plan_id: int):  # type: ignore[no-untyped-def]
    try:
        return svc.find_plan(get_session(), plan_id)
    except svc.NotFound:
        abort(404)


PER_PAGE = 100
STATUSES = ("current", "stale", "never_exercised")


def _page_number(value: str | None) -> int:
    """``page`` as a whole number from 1 (absent or empty → 1); anything else is a 400 naming it."""
    if value is None or value.strip() == "":
        return 1
    if not value.strip().isascii() or not value.strip().isdigit() or int(value) < 1:
        abort(400, description=f"Bad query: page: page must be a whole number from 1, not {value!r}")
    return int(value)


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    refuse_bad_query({"status": STATUSES, "page": None})
    db = get_session()
    plans = svc.list_plans(db)
    counts = {s: sum(1 for p in plans if p["status"] == s) for s in STATUSES}
    status = request.args.get("status") or None
    page = _page_number(request.args.get("page"))
    shown = [p for p in plans if status is None or p["status"] == status]
    pages = max(1, -(-len(shown) // PER_PAGE))
    if page > pages:
        abort(400, description=f"Bad query: page: there is no page {page}; pages 1 to {pages}")
    coverage = svc.coverage(db)
    rto = svc.rto_page_rows(db, RTO_ROWS)
    return render_template("plans/list.html", plans=shown[(page - 1) * PER_PAGE: page * PER_PAGE],
                           total=len(plans), shown_total=len(shown), status=status, page=page, pages=pages,
                           coverage=coverage, rto=rto["rows"], rto_total=rto["total"],
                           at_risk=rto["at_risk"], counts=counts)


RTO_ROWS = 100


@bp.get("/<int:plan_id>")
def detail(plan_id: int):  # type: ignore[no-untyped-def]
    plan = _plan_or_404(plan_id)
    data = svc.plan_to_dict(plan, events=True)
    rto = [r for r in svc.rto_check(get_session(), service_ids=[a["id"] for a in data["covers"]["assets"]])
           if r["rto_minutes"] is not None]
    return render_template("plans/detail.html", plan=data, event_form=PlanEventForm(), rto=rto)


@bp.route("/new", methods=["GET", "POST"])
@require_role("editor")
def new():  # type: ignore[no-untyped-def]
    form = PlanForm()
    if form.validate_on_submit():
        db = get_session()
        try:
            plan = svc.create_plan(db, form.to_data(), actor=current_actor())
        except svc.ValidationError as exc:
            db.rollback()
            attach_error(form, exc.field, exc.message)
        else:
            db.commit()
            flash(f"Plan “{plan.name}” created.")
            return redirect(url_for("plans.detail", plan_id=plan.id))
    return render_template("plans/form.html", form=form, plan=None), (422 if form.errors else 200)


@bp.route("/<int:plan_id>/edit", methods=["GET", "POST"])
@require_role("editor")
def edit(plan_id: int):  # type: ignore[no-untyped-def]
    plan = _plan_or_404(plan_id)
    current = svc.plan_to_dict(plan)
    form = PlanForm()
    if form.validate_on_submit():
        db = get_session()
        try:
            svc.update_plan(db, plan, form.to_data(), actor=current_actor())
        except svc.ValidationError as exc:
            db.rollback()
            attach_error(form, exc.field, exc.message)
        else:
            db.commit()
            flash(f"Plan “{plan.name}” saved.")
            return redirect(url_for("plans.detail", plan_id=plan.id))
    elif not form.is_submitted():
        form.fill_from(current)
    return render_template("plans/form.html", form=form, plan=current), (422 if form.errors else 200)


@bp.post("/<int:plan_id>/events")
@require_role("editor")
def record_event(plan_id: int):  # type: ignore[no-untyped-def]
    """The one action behind the "Record review / exercise" form."""
    plan = _plan_or_404(plan_id)
    form = PlanEventForm()
    if form.validate_on_submit():
        db = get_session()
        try:
            svc.record_event(db, plan, actor=current_actor(), kind=form.kind.data,
                             outcome=form.outcome.data or None, notes=form.notes.data)
        except svc.ValidationError as exc:
            db.rollback()
            attach_error(form, exc.field, exc.message)
        else:
            db.commit()
            flash(f"{form.kind.data.capitalize()} of “{plan.name}” recorded.")
            return redirect(url_for("plans.detail", plan_id=plan.id))
    data = svc.plan_to_dict(plan, events=True)
    return render_template("plans/detail.html", plan=data, event_form=form, rto=[]), 422
