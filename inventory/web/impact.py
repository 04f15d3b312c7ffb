"""The blast-radius page: an outage scope form, the answer, its graph, CSV and print views.

Everything is a GET of the scope (bookmarkable, shareable in a chat at 3 a.m.);
declaring an incident from the answer is a POST to the incidents area.
"""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable, Iterator

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import Blueprint, Response, current_app, render_template, request, url_for

from inventory.app_db import get_session
from inventory.choices import CRITICALITIES, ENVIRONMENTS, OS_FAMILIES
from inventory.impact.engine import DOWN
from inventory.models import CollectionRun, Product, Vendor
from inventory.services import assets as asset_service
from inventory.services import blast_view, graph_svg
from inventory.services.cache import cached
from inventory.web.downloads import content_disposition
from inventory.web.ui import refuse_bad_query

bp = Blueprint("impact", __name__, url_prefix="/impact")


def _suggestions(db: so.Session) -> dict[str, list[str]]:
    return {
        "vendors": asset_service.vendor_names(db),
        "products": list(dict.fromkeys(db.scalars(sa.select(Product.name).join(Vendor).order_by(Product.name)))),
        "regions": cached(db, "distinct-region", lambda: asset_service.distinct_values(db, "region")),
        "accounts": cached(db, "distinct-account", lambda: asset_service.distinct_values(db, "account")),
    }


# A blast radius shown again within this many seconds (responders reloading the same
# incident view) is reused, unless the inventory or the collection runs changed meanwhile;
# the bound also keeps plan staleness (which moves with the clock) at most this late.
PAGE_CACHE_SECONDS = 60


def compute(db: so.Session, args: Any, build: Callable[[Any], Any],
            cache_key: str | None = None) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """(form values, ``build(engine result)`` or None, errors by field) for the request's scope.

    ``build`` turns the engine's result into what the caller needs; with a
    ``cache_key`` that is reused for repeated views (see PAGE_CACHE_SECONDS).
    """
    from inventory.impact import ScopeError, blast_radius, parse_scope

    form = blast_view.scope_from_form(args)
    as_of = blast_view.form_as_of(args)
    if as_of:
        form["as_of"] = as_of
    submitted = any(name in args for name in
                    blast_view.SCOPE_TEXT_FIELDS + blast_view.SCOPE_LIST_FIELDS + ("as_of",))
    if not submitted:
        return form, None, {}
    try:
        scope = parse_scope(db, {k: v for k, v in form.items() if k != "as_of"})

        def run() -> Any:
            return build(blast_radius(db, scope, as_of=as_of))

        if cache_key and current_app.config.get("BLAST_PAGE_CACHE", True):
            runs = db.execute(sa.select(sa.func.max(CollectionRun.id), sa.func.max(CollectionRun.finished_at),
                                        sa.func.count(CollectionRun.finished_at))).one()
            key = json.dumps([cache_key, scope.to_dict(), as_of, [str(v) for v in runs]], sort_keys=True)
            return form, cached(db, f"blast-page:{key}", run, ttl=PAGE_CACHE_SECONDS), {}
        return form, run(), {}
    except ScopeError as exc:
        return form, None, {exc.field: exc}


# What the page and its CSV read: the scope form's fields (its lists may repeat), and view=print.
_QUERY = {**{name: None for name in (*blast_view.SCOPE_TEXT_FIELDS, *blast_view.SCOPE_LIST_FIELDS, "as_of")},
          "view": ("print",)}


def _refuse_bad_query() -> None:
    refuse_bad_query(_QUERY, repeatable=blast_view.SCOPE_LIST_FIELDS)


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    _refuse_bad_query()
    db = get_session()
    printable = request.args.get("view") == "print"
    limit = blast_view.PRINT_HITS if printable else blast_view.PAGE_HITS

    form, data, errors = compute(db, request.args, lambda result: blast_view.page_view(result, limit=limit),
                                 cache_key=f"page:{limit}")
    context: dict[str, Any] = {"form": form, "result": None, "errors": errors, "printable": printable,
                               "os_choices": OS_FAMILIES, "environment_choices": ENVIRONMENTS,
                               "suggestions": _suggestions(db)}
    if data is not None:
        args = blast_view.scope_to_args(data["scope"])
        if form.get("as_of"):
            args["as_of"] = form["as_of"]
        context.update(
            result=data, args=args,
            grouped=blast_view.group_by_service(data),
            plan_counts=blast_view.plan_summary(data),
            graph=graph_svg.render(data, asset_url=lambda i: url_for("assets.detail", asset_id=i)),
        )
    return render_template("impact/index.html", **context), (400 if errors else 200)


@bp.get("/export.csv")
def export_csv():  # type: ignore[no-untyped-def]
    _refuse_bad_query()
    db = get_session()
    form, result, errors = compute(db, request.args, lambda result: result)
    if errors or result is None:
        error = next(iter(errors.values()), None)
        message = f"{error.field}: {error}" if error else "give an outage scope (at least a vendor)"
        return Response(message + "\n", status=400, mimetype="text/plain")
    vendor = "".join(ch if ch.isalnum() else "-" for ch in form.get("vendor", "scope")).strip("-").lower()
    unknown = result.version_unknown()      # read now, while the request's session is open
    return Response(csv_chunks(result, unknown), mimetype="text/csv", headers={
        "Content-Disposition": content_disposition(f"blast-radius-{vendor or 'scope'}.csv"),
        "Cache-Control": "no-store"})


def csv_chunks(result: Any, unknown: list[dict[str, Any]], chunk: int = 2000) -> Iterator[str]:
    """``blast_view.to_csv(result.to_dict())``, streamed: the hits in its order (down first,
    then criticality, hops and name), built and written ``chunk`` at a time."""
    g, prop, idx = result.graph, result.prop, result.ordered_idx
    crit = np.where(g.crit_code[idx] < len(CRITICALITIES), g.crit_code[idx], 9).tolist()
    down = (prop.status[idx] != DOWN).tolist()
    hops = prop.dist[idx].tolist()
    names = g.name.take(idx.tolist())
    idx = idx[sorted(range(idx.size), key=lambda j: (down[j], crit[j], hops[j], names[j]))]
    context = result.hit_context(idx) if idx.size else None
    buffer = io.StringIO()
    writer = csv.writer(buffer, **blast_view.CSV_FORMAT)
    writer.writerow(blast_view.CSV_COLUMNS)
    for start in range(0, idx.size, chunk):
        for hit in result.build_hits(idx[start:start + chunk], context):
            plans = "; ".join(f"{p.get('name')} ({p.get('status')})" for p in hit.plans)
            row = {**hit.to_dict(), "services": "; ".join(hit.services), "plans": plans,
                   "gap": "yes" if hit.gap else "no", "seed": "yes" if hit.seed else "no",
                   "path": blast_view.describe_path(hit.path)}
            writer.writerow([blast_view.csv_cell(row.get(column)) for column in blast_view.CSV_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    # Then the assets whose version the range cannot place: not hits, to be checked by hand.
    for entry in unknown:
        row = {**entry, "status": blast_view.VERSION_UNKNOWN_STATUS, "seed": "no", "gap": "",
               "path": blast_view.describe_unknown(entry)}
        writer.writerow([blast_view.csv_cell(row.get(column)) for column in blast_view.CSV_COLUMNS])
    yield buffer.getvalue()
