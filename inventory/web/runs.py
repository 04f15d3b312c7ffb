"""Collection runs: the history of collector runs with status, counts and errors, and the
latest state of every collection scope.

A run keeps a result only for the scopes that did not succeed; its detail page lists those
and the scopes whose latest state is still the run's own (up to ``SCOPES_SHOWN``).  Pages
close runs whose lease expired (their process died) before listing, in one indexed read
when there is none."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, render_template, request

from inventory.app_db import get_session
from inventory.choices import RUN_STATUSES
from inventory.models import CollectionRun
from inventory.services.keyset import CursorError, Page, Segment, paginate
from inventory.services.runs import expire_dead_runs, run_scopes, scope_counts
from inventory.web.ui import refuse_bad_query

bp = Blueprint("runs", __name__, url_prefix="/runs")

PAGE_SIZE = 50
SCOPES_SHOWN = 200
# Newest first; ids grow with start time, and the primary key is the index.
NEWEST_FIRST = [Segment(None, (CollectionRun.id,), descending=True)]


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    # status is checked below and shown beside its field; collector is a free filter.
    refuse_bad_query({"collector": None, "status": None, "cursor": None})
    _close_dead_runs()
    db = get_session()
    collector = (request.args.get("collector") or "").strip()
    status = (request.args.get("status") or "").strip()
    errors: dict[str, str] = {}
    if status and status not in RUN_STATUSES:
        errors["status"] = f"unknown status {status!r}; one of {', '.join(RUN_STATUSES)}"
    collectors = list(db.scalars(sa.select(CollectionRun.collector).distinct().order_by(CollectionRun.collector)))
    page = Page(rows=[])
    if not errors:
        base = sa.select(CollectionRun)
        if collector:
            base = base.where(CollectionRun.collector == collector)
        if status:
            base = base.where(CollectionRun.status == status)
        try:
            page = paginate(db, base, NEWEST_FIRST, limit=PAGE_SIZE, cursor=request.args.get("cursor"),
                            key_of=lambda row, _seg: [row[0].id])
        except CursorError as exc:
            errors["cursor"] = f"{exc}; start again from the first page"
        page.rows = [row[0] for row in page.rows]
    args = {k: v for k, v in (("collector", collector), ("status", status)) if v}
    any_runs = bool(collectors)
    return render_template("runs/list.html", page=page, args=args, collector=collector, status=status,
                           collectors=collectors, statuses=RUN_STATUSES, errors=errors,
                           any_runs=any_runs, scope_counts=scope_counts(db) if any_runs else {}), \
        (400 if errors else 200)


@bp.get("/<int:run_id>")
def detail(run_id: int):  # type: ignore[no-untyped-def]
    _close_dead_runs()
    db = get_session()
    run = db.get(CollectionRun, run_id)
    if run is None:
        abort(404)
    scopes, total = run_scopes(db, run.id, limit=SCOPES_SHOWN)
    return render_template("runs/detail.html", run=run, scopes=scopes, scopes_total=total)


def _close_dead_runs() -> None:
    """Runs whose process died are shown as failed (not "running" for ever)."""
    try:
        expire_dead_runs(current_app.extensions["planb_engine"])
    except sa.exc.OperationalError:  # the database is busy (a collector writing): next time
        pass
