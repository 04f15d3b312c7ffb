"""Asset pages: the searchable, filterable list (keyset-paginated) and one asset's detail."""
from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from inventory.app_db import get_session
from inventory.choices import ASSET_KINDS, CRITICALITIES, ENVIRONMENTS, OS_FAMILIES, PROVIDERS
from inventory.services import assets as asset_service
from inventory.services.cache import cached
from inventory.services.keyset import CursorError, Page
from inventory.web.ui import refuse_bad_query

bp = Blueprint("assets", __name__, url_prefix="/assets")


# Every parameter the list reads, including the ones its own links add (sort, per_page, cursor).
# Filter values are checked by AssetFilters.validate / parse_sort and shown beside their field.
QUERY = {**{name: None for name in asset_service.AssetFilters.FORM_FIELDS},
         "sort": None, "per_page": None, "cursor": None}


def page_size() -> int:
    """``per_page`` as one of the offered sizes; anything else is a 400 naming it."""
    try:
        return asset_service.parse_page_size(request.args.get("per_page"))
    except asset_service.FilterError as exc:
        abort(400, description=f"Bad query: {asset_service.describe(exc)}")


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    refuse_bad_query(QUERY)
    size = page_size()
    db = get_session()
    filters = asset_service.AssetFilters.from_args(request.args)
    errors = {e.field: e for e in filters.validate(db)}
    sort = request.args.get("sort") or asset_service.DEFAULT_SORT
    try:
        asset_service.parse_sort(sort)
    except asset_service.FilterError as exc:
        errors[exc.field] = exc
        sort = asset_service.DEFAULT_SORT
    page, total, capped = Page(rows=[]), 0, False
    if not errors:
        try:
            page = asset_service.list_assets(db, filters, sort, cursor=request.args.get("cursor"),
                                             limit=size)
        except CursorError as exc:
            errors["cursor"] = asset_service.FilterError("cursor", f"{exc}; start again from the first page")
        if page.next_cursor is None and page.prev_cursor is None:
            # Everything fits on this page: its length is the count, no second scan needed.
            total, capped = len(page.rows), False
        else:
            total, capped = asset_service.count_assets(db, filters)
    # "No assets at all" gets the onboarding help; "no matches" gets a reset link.
    inventory_empty = total == 0 and not filters.active and not errors
    args = filters.as_args()
    if sort != asset_service.DEFAULT_SORT:
        args["sort"] = sort
    if size != asset_service.DEFAULT_PAGE_SIZE:
        args["per_page"] = str(size)
    status = 400 if errors else 200
    return render_template(
        "assets/list.html", page=page, filters=filters, errors=errors, sort=sort, args=args,
        total=total, capped=capped, inventory_empty=inventory_empty, per_page=size,
        page_sizes=asset_service.PAGE_SIZES,
        choices={"provider": PROVIDERS, "os": OS_FAMILIES, "kind": ASSET_KINDS,
                 "environment": ENVIRONMENTS, "criticality": CRITICALITIES},
        vendor_names=asset_service.vendor_names(db),
        accounts=cached(db, "distinct-account", lambda: asset_service.distinct_values(db, "account")),
        regions=cached(db, "distinct-region", lambda: asset_service.distinct_values(db, "region")),
    ), status


@bp.get("/<int:asset_id>")
def detail(asset_id: int):  # type: ignore[no-untyped-def]
    data = asset_service.asset_detail(get_session(), asset_id)
    if data is None:
        abort(404)
    return render_template("assets/detail.html", **data)
