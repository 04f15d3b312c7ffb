"""Vendor risk pages: the score table with every part, the review calendar, review packs
(page + Markdown/HTML downloads) and vendor assessments."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from inventory.app_db import get_session
from inventory.auth import current_actor, require_role
from inventory.choices import ASSESSMENT_DOMAINS, CRITICALITIES
from inventory.db import utcnow
from inventory.forms import AssessmentForm, attach_error, options
from inventory.models import Vendor
from inventory.services import review as review_svc
from inventory.services import risk as svc
from inventory.web.downloads import attachment
from inventory.web.ui import refuse_bad_query

bp = Blueprint("risk", __name__, url_prefix="/risk")


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    refuse_bad_query({})
    db = get_session()
    table = svc.cached_risk_table(db, blast_totals=False)
    calendar = svc.review_calendar(db, table=table)
    concentration = sorted((r["concentration"] for r in table),
                           key=lambda c: (-c["share"], -c["critical_assets"], c["vendor"].lower()))
    return render_template("risk/index.html", table=table, calendar=calendar,
                           concentration=[c for c in concentration if c["assets"]][:15],
                           formula=svc.SCORE_PARTS, alternative_factor=svc.ALTERNATIVE_FACTOR,
                           exit_factor=svc.EXIT_PLAN_FACTOR, dependence_floor=svc.DEPENDENCE_FLOOR,
                           bands=svc.BANDS)


def _vendor_or_404(vendor_id: int) -> Vendor:
    vendor = get_session().get(Vendor, vendor_id)
    if vendor is None:
        abort(404)
    return vendor


@bp.get("/review/<int:vendor_id>")
def review(vendor_id: int):  # type: ignore[no-untyped-def]
    pack = review_svc.review_pack(get_session(), _vendor_or_404(vendor_id))
    return render_template("risk/review.html", pack=pack, cert_window=review_svc.CERT_WINDOW_DAYS,
                           criticalities=CRITICALITIES)


@bp.get("/review/<int:vendor_id>/download.<fmt>")
def review_download(vendor_id: int, fmt: str):  # type: ignore[no-untyped-def]
    """The pack as a file: served as an attachment (the HTML's inline CSS never runs under our CSP)."""
    if fmt not in ("md", "html"):
        abort(404)
    pack = review_svc.review_pack(get_session(), _vendor_or_404(vendor_id))
    if fmt == "md":
        body, mime = review_svc.render_markdown(pack), "text/markdown"
    else:
        body, mime = review_svc.render_html(pack), "text/html"
    return attachment(body, mime, review_svc.filename(pack, fmt))


@bp.get("/export.<fmt>")
def export(fmt: str):  # type: ignore[no-untyped-def]
    """The score table with every part's points, as CSV or JSON."""
    import json

    from inventory.services.blast_view import render_csv

    table = svc.cached_risk_table(get_session())
    if fmt == "csv":
        body, mime = render_csv([svc.flat_row(r) for r in table], svc.FLAT_COLUMNS), "text/csv"
    elif fmt == "json":
        body, mime = json.dumps(table, indent=2, default=str), "application/json"
    else:
        abort(404)
    stamp = utcnow().date().isoformat()
    return attachment(body, mime, f"vendor-risk-{stamp}.{fmt}")


@bp.get("/assessments")
def assessments():  # type: ignore[no-untyped-def]
    refuse_bad_query({"vendor": None})
    db = get_session()
    raw = (request.args.get("vendor") or "").strip()
    vendor = None
    if raw:
        # The id the app's own links carry (review pack, "saved" redirect); nothing else is guessed.
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            abort(400, description=f"Bad query: vendor: vendor must be a vendor id (a whole number), not {raw!r}")
        vendor = db.get(Vendor, int(raw))
        if vendor is None:
            abort(400, description=f"Bad query: vendor: no vendor with id {int(raw)}")
    vendor_id = vendor.id if vendor is not None else None
    items = [svc.assessment_to_dict(a) for a in svc.list_assessments(db, vendor_id)]
    return render_template("risk/assessments.html", assessments=items, vendor=vendor,
                           domains=ASSESSMENT_DOMAINS)


@bp.route("/assessments/new", methods=["GET", "POST"])
@require_role("editor")
def new_assessment():  # type: ignore[no-untyped-def]
    db = get_session()
    form = AssessmentForm()
    form.vendor.choices = options((str(i), n) for i, n in db.execute(sa.select(Vendor.id, Vendor.name)
                                                                      .order_by(Vendor.name)))
    if request.method == "GET":
        form.assessed_on.data = utcnow().date()
        if request.args.get("vendor"):
            form.vendor.data = request.args["vendor"]
    if form.validate_on_submit():
        data = form.to_data()
        data["vendor"] = int(data["vendor"])
        try:
            assessment = svc.create_assessment(db, data, actor=current_actor())
        except svc.ValidationError as exc:
            db.rollback()
            attach_error(form, exc.field, exc.message)
        else:
            db.commit()
            flash(f"Assessment of {assessment.vendor.name} recorded; next review due "
                  f"{assessment.next_review_due.isoformat()}.")
            return redirect(url_for("risk.assessments", vendor=assessment.vendor_id))
    return render_template("risk/assessment_form.html", form=form), (422 if form.errors else 200)
