"""Vendor pages: the list (tier, concentration, assessment, review due) and one vendor's detail."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from inventory.app_db import get_session
from inventory.auth import current_actor, require_role
from inventory.forms import VendorResilienceForm, attach_error
from inventory.models import Vendor
from inventory.services import vendors as vendor_service
from inventory.services import assets as asset_service
from inventory.services import vendor_summary
from inventory.services.keyset import CursorError, Page
from inventory.web.ui import refuse_bad_query

bp = Blueprint("vendors", __name__, url_prefix="/vendors")

UNTESTED_LIMIT = 15
ASSETS_PER_PAGE = 25


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    refuse_bad_query({})
    data = vendor_summary.vendor_rows(get_session())
    return render_template("vendors/list.html", **data)


@bp.get("/<int:vendor_id>")
def detail(vendor_id: int):  # type: ignore[no-untyped-def]
    refuse_bad_query({"cursor": None})
    db = get_session()
    data = vendor_summary.vendor_detail(db, vendor_id)
    if data is None:
        abort(404)
    vendor = data["vendor"]

    filters = asset_service.AssetFilters()
    filters.set_vendor(db, vendor)
    cursor_error = None
    try:
        assets_page = asset_service.list_assets(db, filters, "criticality",
                                                cursor=request.args.get("cursor"), limit=ASSETS_PER_PAGE)
    except CursorError as exc:
        assets_page, cursor_error = Page(rows=[]), str(exc)

    untested = vendor_summary.untested_for_vendor(db, vendor.id, UNTESTED_LIMIT + 1)
    outage = vendor_summary.full_outage_summary(db, vendor)
    return render_template("vendors/detail.html", **data, assets_page=assets_page,
                           cursor_error=cursor_error, untested=untested[:UNTESTED_LIMIT],
                           untested_more=len(untested) > UNTESTED_LIMIT, outage=outage,
                           untested_limit=UNTESTED_LIMIT)


@bp.route("/<int:vendor_id>/edit", methods=["GET", "POST"])
@require_role("editor")
def edit(vendor_id: int):  # type: ignore[no-untyped-def]
    """Tier, alternative provider and exit plan: the vendor facts that feed the risk score."""
    db = get_session()
    vendor = db.get(Vendor, vendor_id)
    if vendor is None:
        abort(404)
    form = VendorResilienceForm(obj=vendor if request.method == "GET" else None)
    if form.validate_on_submit():
        try:
            vendor_service.update_resilience(db, vendor.id, form.to_data(), actor=current_actor())
        except vendor_service.ValidationError as exc:
            db.rollback()
            attach_error(form, exc.field, exc.message)
        else:
            db.commit()
            flash(f"{vendor.name} saved.")
            return redirect(url_for("vendors.detail", vendor_id=vendor.id))
    return render_template("vendors/edit.html", form=form, vendor=vendor), (422 if form.errors else 200)
