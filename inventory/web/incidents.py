"""Incident pages: declare from a blast radius, the snapshot, recovery progress per asset.

The domain work (snapshotting the blast radius, recording recoveries with an
audit trail) is ``inventory.services.incidents``; these views only read forms
and render.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from inventory.app_db import get_session
from inventory.auth import current_actor, require_role
from inventory.models import Incident, IncidentAsset
from inventory.services import blast_view
from inventory.services.keyset import CursorError, Page, Segment, paginate
from inventory.validation import ONE_LINE_MESSAGE, has_line_break
from inventory.web.ui import refuse_bad_query

bp = Blueprint("incidents", __name__, url_prefix="/incidents")

ASSETS_PER_PAGE = 100
RECOVERY_FILTERS = ("all", "pending", "recovered")


def _service():  # type: ignore[no-untyped-def]
    from inventory.services import incidents as service
    return service


def progress_of(incident: Incident) -> dict[str, Any]:
    """Recovered / total, from the incident service when it offers it."""
    progress = _service().incident_progress(incident)
    total = int(progress.get("total") or 0)
    recovered = int(progress.get("recovered") or 0)
    # Whole percent for the label; floor so "100%" only shows when everything is back.
    return {**progress, "total": total, "recovered": recovered,
            "percent": (100 * recovered // total) if total else 100}


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    refuse_bad_query({})
    db = get_session()
    incidents = list(db.scalars(sa.select(Incident).order_by(
        sa.case((Incident.status == "open", 0), else_=1), Incident.declared_at.desc()).limit(200)))
    rows = [{"incident": i, "progress": progress_of(i)} for i in incidents]
    return render_template("incidents/list.html", rows=rows)


@bp.post("/declare")
@require_role("editor")
def declare():  # type: ignore[no-untyped-def]
    db = get_session()
    title = (request.form.get("title") or "").strip()
    scope = blast_view.scope_from_form(request.form)
    if not title:
        flash("Give the incident a title.", "error")
        return redirect(url_for("impact.index", **blast_view.scope_to_args(scope)))
    if has_line_break(title):
        # Refused, not altered: the title is one line in lists, the audit trail and exports.
        flash(f"Cannot declare: title: {ONE_LINE_MESSAGE}", "error")
        return redirect(url_for("impact.index", **blast_view.scope_to_args(scope)))
    try:
        incident = _service().declare_incident(db, scope, title, current_actor())
    except ValueError as exc:  # ScopeError / IncidentError: the message names the problem
        db.rollback()
        flash(f"Cannot declare: {exc}", "error")
        return redirect(url_for("impact.index", **blast_view.scope_to_args(scope)))
    db.commit()
    flash(f"Incident #{incident.id} declared: its blast radius is snapshotted below.")
    return redirect(url_for("incidents.detail", incident_id=incident.id))


@bp.get("/<int:incident_id>")
def detail(incident_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    incident = db.get(Incident, incident_id)
    if incident is None:
        abort(404)
    refuse_bad_query({"show": tuple(RECOVERY_FILTERS), "cursor": None})
    show = request.args.get("show") or "all"
    base = sa.select(IncidentAsset).where(IncidentAsset.incident_id == incident.id)
    if show == "pending":
        base = base.where(IncidentAsset.recovered_at.is_(None))
    elif show == "recovered":
        base = base.where(IncidentAsset.recovered_at.is_not(None))
    # Snapshot order: the rows were written in the engine's order (down first, then by
    # criticality and distance), so the primary key is already the order responders need.
    segments = [Segment(None, (IncidentAsset.id,))]
    cursor_error = None
    try:
        page = paginate(db, base, segments, limit=ASSETS_PER_PAGE, cursor=request.args.get("cursor"),
                        key_of=lambda row, _s: [row[0].id])
    except CursorError as exc:
        page, cursor_error = Page(rows=[]), str(exc)
    page.rows = [row[0] for row in page.rows]
    args = {"show": show} if show != "all" else {}
    return render_template("incidents/detail.html", incident=incident, progress=progress_of(incident),
                           page=page, show=show, args=args, cursor_error=cursor_error,
                           summary=incident.summary or {}, note_max=_service().MAX_TEXT,
                           scope_args=blast_view.scope_to_args(incident.scope or {}))


@bp.post("/<int:incident_id>/recover")
@require_role("editor")
def recover(incident_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    incident = db.get(Incident, incident_id)
    if incident is None:
        abort(404)
    ids: list[int] = []
    for raw in request.form.getlist("asset"):
        try:
            ids.append(int(raw))
        except ValueError:
            abort(400)
    note = (request.form.get("note") or "").strip() or None
    if not ids:
        flash("Select the assets that have recovered first.", "error")
        return redirect(url_for("incidents.detail", incident_id=incident.id))
    try:
        _service().mark_recovered(db, incident.id, ids, current_actor(), note=note)
    except ValueError as exc:
        db.rollback()
        flash(f"Not recorded: {exc}", "error")
        return redirect(url_for("incidents.detail", incident_id=incident.id))
    db.commit()
    flash(f"Marked {len(ids)} asset{'s' if len(ids) != 1 else ''} recovered.")
    return redirect(url_for("incidents.detail", incident_id=incident.id, **_keep_args()))


@bp.post("/<int:incident_id>/resolve")
@require_role("editor")
def resolve(incident_id: int):  # type: ignore[no-untyped-def]
    db = get_session()
    incident = db.get(Incident, incident_id)
    if incident is None:
        abort(404)
    try:
        _service().resolve_incident(db, incident.id, current_actor())
    except ValueError as exc:
        db.rollback()
        flash(f"Not resolved: {exc}", "error")
        return redirect(url_for("incidents.detail", incident_id=incident.id))
    db.commit()
    flash(f"Incident #{incident.id} resolved.")
    return redirect(url_for("incidents.detail", incident_id=incident.id))


def _keep_args() -> dict[str, str]:
    show = request.form.get("show")
    return {"show": show} if show in ("pending", "recovered") else {}
