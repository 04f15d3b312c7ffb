"""Update testing pages: updates by product and version with per-ring results, untested exposure,
rollout rings, vendor-pushed products; record an update and a test result."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from inventory.app_db import get_session
from inventory.auth import current_actor, require_role
from inventory.choices import CRITICALITIES, RINGS
from inventory.forms import UpdateForm, UpdateTestForm, attach_error, options
from inventory.models import Product, Vendor
from inventory.services import updates as svc
from inventory.web.ui import refuse_bad_query

bp = Blueprint("updates", __name__, url_prefix="/updates")

EXPOSURE_LIMIT = 200
BY_PRODUCT_ROWS = 300


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    refuse_bad_query({"criticality": (*CRITICALITIES, "all")})
    db = get_session()
    criticality = request.args.get("criticality") or "critical"
    items = svc.list_updates(db)
    counts = svc.installed_counts(db, items)
    products: dict[str, list[dict]] = {}
    for u in items:
        d = svc.update_to_dict(u)
        d["installed"] = counts.get(u.id, {"assets": 0, "critical": 0})
        products.setdefault(f"{d['vendor']} / {d['product']}", []).append(d)
    # Scans of every installation: reused until the inventory or a test result changes.
    by_product = svc.cached_view(db, "by-product-ranked", lambda: sorted(
        svc.exposure_by_product(db), key=lambda r: (r["tested"], -r["critical"], -r["installations"])))
    exposure = svc.cached_view(db, f"exposure:{criticality}", lambda: svc.untested_exposure(
        db, criticality=None if criticality == "all" else criticality, limit=EXPOSURE_LIMIT + 1))
    return render_template(
        "updates/index.html", products=products, rings=RINGS, exposure=exposure[:EXPOSURE_LIMIT],
        exposure_more=len(exposure) > EXPOSURE_LIMIT, criticality=criticality,
        criticalities=CRITICALITIES, summary=svc.cached_view(db, "summary", lambda: svc.untested_summary(db)),
        ring_summary=svc.cached_view(db, "rings", lambda: svc.ring_summary(db)),
        pushed=svc.cached_view(db, "pushed", lambda: svc.vendor_pushed_products(db)),
        by_product=by_product[:BY_PRODUCT_ROWS], by_product_total=len(by_product))


@bp.get("/rings/<ring>")
def ring(ring: str):  # type: ignore[no-untyped-def]
    if ring != "none" and ring not in RINGS:
        abort(404)
    db = get_session()
    assets = svc.assets_in_ring(db, None if ring == "none" else ring, limit=1000)
    return render_template("updates/ring.html", ring=ring, assets=assets, limit=1000)


def _update_or_404(update_id: int):  # type: ignore[no-untyped-def]
    try:
        return svc.find_update(get_session(), update_id)
    except svc.NotFound:
        abort(404)


@bp.get("/<int:update_id>")
def detail(update_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    update = _update_or_404(update_id)
    data = svc.update_to_dict(update)
    exposure = [r for r in svc.untested_exposure(db, product_id=update.product_id, limit=1000)
                if r["version"] == update.version]
    return render_template("updates/detail.html", update=data, form=UpdateTestForm(), rings=RINGS,
                           installed=svc.installed_counts(db, [update]).get(update.id, {"assets": 0, "critical": 0}),
                           exposure=exposure)


@bp.post("/<int:update_id>/tests")
@require_role("editor")
def record_test(update_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    update = _update_or_404(update_id)
    form = UpdateTestForm()
    if form.validate_on_submit():
        try:
            svc.record_test(db, actor=current_actor(), update=update, ring=form.ring.data,
                            status=form.status.data, tested_by=form.tested_by.data,
                            evidence_url=form.evidence_url.data, notes=form.notes.data)
        except svc.ValidationError as exc:
            db.rollback()
            attach_error(form, exc.field, exc.message)
        else:
            db.commit()
            flash(f"{form.ring.data} result recorded: {form.status.data}.")
            return redirect(url_for("updates.detail", update_id=update.id))
    data = svc.update_to_dict(update)
    return render_template("updates/detail.html", update=data, form=form, rings=RINGS,
                           installed=svc.installed_counts(db, [update]).get(update.id, {"assets": 0, "critical": 0}),
                           exposure=[]), 422


def _product_choices(db):  # type: ignore[no-untyped-def]
    rows = db.execute(sa.select(Product.id, Vendor.name, Product.name).join(Vendor)
                      .order_by(Vendor.name, Product.name)).all()
    return options((str(pid), f"{vendor} / {name}") for pid, vendor, name in rows)


@bp.route("/new", methods=["GET", "POST"])
@require_role("editor")
def new():  # type: ignore[no-untyped-def]
    db = get_session()
    form = UpdateForm()
    form.product.choices = _product_choices(db)
    if request.method == "GET" and request.args.get("product"):
        form.product.data = request.args["product"]
    if form.validate_on_submit():
        try:
            update = svc.create_update(db, actor=current_actor(), product=int(form.product.data),
                                       version=form.version.data, released_on=form.released_on.data,
                                       kind=form.kind.data, vendor_pushed=form.vendor_pushed.data,
                                       notes=form.notes.data)
        except svc.ValidationError as exc:
            db.rollback()
            attach_error(form, exc.field, exc.message)
        else:
            db.commit()
            flash(f"Update {update.version} recorded.")
            return redirect(url_for("updates.detail", update_id=update.id))
    return render_template("updates/form.html", form=form), (422 if form.errors else 200)
