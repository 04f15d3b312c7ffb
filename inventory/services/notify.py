"""Notification events: what happened, told to the webhooks that asked for it.

``emit(db, event, data, message)`` writes one outbox row per active webhook that
subscribed to ``event``, in the caller's transaction — the same one that records the
event itself (an incident declared, a collection run finished) — so the message goes
out if and only if the event committed.  Delivery happens later
(``inventory.services.webhooks.deliver_due``: the web app's background worker, or
``planb webhooks deliver`` from cron).

Events raised where they happen:

* ``incident.declared`` / ``incident.resolved`` — ``inventory.services.incidents``;
* ``collection.failed`` / ``collection.partial`` — ``collection_finished``, called by
  ``collectors.ingest.run_collection`` when it records a run's final status;
* ``updates.gate_failed`` — ``gate_checked``, called by ``planb check updates``, and
  ``check_conditions`` for the default gate (critical assets).

Events of conditions that arise with the passing of time, found by
``check_conditions`` (the worker runs it every few minutes; ``planb webhooks deliver``
on every call), each sent once when the condition starts (``NotificationState``):

* ``collection.stale`` — a source whose last successful (or partial) run finished
  longer ago than ``PLANB_COLLECTION_STALE_HOURS`` allows;
* ``plan.review_overdue`` — plans whose review fell due since the last check (one
  message listing them);
* ``updates.gate_failed`` — the default gate (untested versions on critical assets).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.engine import Engine

from inventory import config
from inventory.db import read_session, utcnow, write_session
from inventory.models import CollectionRun, NotificationState, Webhook
from inventory.services import webhooks
from inventory.services.notify_format import Message, render

if TYPE_CHECKING:
    from inventory.models import Incident

log = logging.getLogger("planb.notify")

TOP_SERVICES = 5
TOP_ITEMS = 10
# How often the background worker looks for stale sources, overdue reviews and the gate.
CHECK_INTERVAL = timedelta(minutes=5)
_CHECKS_KEY = "checks:last-run"
DEFAULT_GATE = "critical"


def external_url() -> str | None:
    """``PLANB_EXTERNAL_URL`` (checked at start-up), for links back to Plan B."""
    return config.get("EXTERNAL_URL")


def link(path: str) -> str | None:
    base = external_url()
    return f"{base}{path}" if base else None


def subscribers(db: so.Session, event: str) -> list[Webhook]:
    return [w for w in db.scalars(sa.select(Webhook).where(Webhook.active.is_(True)).order_by(Webhook.id))
            if event in (w.events or [])]


def emit(db: so.Session, event: str, data: dict[str, Any], message: Message, *,
         now: datetime | None = None, to: Iterable[Webhook] | None = None) -> int:
    """Queue ``event`` for every active webhook that wants it (or the given ones); returns how many."""
    if event not in webhooks.EVENTS:
        raise ValueError(f"unknown event {event!r}")
    targets = list(to) if to is not None else subscribers(db, event)
    if not targets:
        return 0
    now = now or utcnow()
    event_id = webhooks.new_event_id()
    for webhook in targets:
        body = render(webhook.format, event, event_id, now, message, data)
        webhooks.enqueue(db, webhook, event=event, event_id=event_id, subject=message.title, body=body, now=now)
    db.flush()
    log.info("notification queued", extra={"event": event, "event_id": event_id, "webhooks": len(targets)})
    return len(targets)


# ---------------------------------------------------------------- incidents

def _incident_data(incident: "Incident") -> dict[str, Any]:
    summary = incident.summary or {}
    totals = summary.get("totals") or {}
    by_status = totals.get("by_status") or {"down": 0, "degraded": 0}
    services = [{"name": s.get("name"), "status": s.get("status"), "criticality": s.get("criticality")}
                for s in (totals.get("by_service") or [])[:TOP_SERVICES]]
    by_crit = {level: counts.get("total", 0) for level, counts in (totals.get("by_criticality") or {}).items()
               if counts.get("total")}
    return {"id": incident.id, "title": incident.title, "status": incident.status,
            "scope": summary.get("scope_text") or "", "declared_at": incident.declared_at.isoformat(),
            "declared_by": incident.declared_by, "hits": totals.get("hits", 0),
            "by_status": {"down": by_status.get("down", 0), "degraded": by_status.get("degraded", 0)},
            "by_criticality": by_crit, "services_hit": len(totals.get("by_service") or []),
            "top_services": services, "url": link(f"/incidents/{incident.id}")}


def incident_declared(db: so.Session, incident: "Incident") -> int:
    data = _incident_data(incident)
    down, degraded = data["by_status"]["down"], data["by_status"]["degraded"]
    facts = [("Down", f"{down:,}"), ("Degraded", f"{degraded:,}"), ("Assets hit", f"{data['hits']:,}"),
             ("Services hit", f"{data['services_hit']:,}")]
    facts += [(f"{level.capitalize()} assets", f"{n:,}") for level, n in data["by_criticality"].items()
              if level in ("critical", "high")]
    if data["declared_by"]:
        facts.append(("Declared by", data["declared_by"]))
    message = Message(
        title=f"Incident declared: {incident.title}",
        summary=f"{data['scope']} — {down:,} down, {degraded:,} degraded",
        severity="danger" if down else "warning", facts=facts,
        items_title="Top services hit" if data["top_services"] else None,
        items=[f"{s['name']} — {s['status']} ({s['criticality']})" for s in data["top_services"]],
        link=data["url"], link_label="Open the incident")
    return emit(db, "incident.declared", {"incident": data}, message)


def incident_resolved(db: so.Session, incident: "Incident", progress: Mapping[str, Any]) -> int:
    data = _incident_data(incident)
    data["resolved_at"] = incident.resolved_at.isoformat() if incident.resolved_at else None
    data["progress"] = {k: progress[k] for k in ("total", "recovered", "remaining", "percent")}
    lasted = (incident.resolved_at - incident.declared_at) if incident.resolved_at else None
    facts = [("Recovered", f"{progress['recovered']:,} of {progress['total']:,} ({progress['percent']}%)")]
    if lasted is not None:
        hours, rest = divmod(int(lasted.total_seconds()) // 60, 60)
        facts.append(("Open for", f"{hours} h {rest} min" if hours else f"{rest} min"))
    message = Message(title=f"Incident resolved: {incident.title}", summary=data["scope"] or incident.title,
                      severity="good", facts=facts, link=data["url"], link_label="Open the incident")
    return emit(db, "incident.resolved", {"incident": data}, message)


# ---------------------------------------------------------------- collection runs

def collection_finished(db: so.Session, run: CollectionRun) -> int:
    """Called by ingest in the transaction that records a run's final status: queues
    ``collection.failed`` or ``collection.partial`` (nothing for a run that succeeded)."""
    if run.status not in ("failed", "partial"):
        return 0
    event = f"collection.{run.status}"
    errors = list(run.errors or [])
    data = {"run": {"id": run.id, "collector": run.collector, "scope": run.scope, "status": run.status,
                    "started_at": run.started_at.isoformat() if run.started_at else None,
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "created": run.created, "updated": run.updated, "unchanged": run.unchanged,
                    "marked_stale": run.marked_stale, "error_count": len(errors), "errors": errors[:TOP_ITEMS],
                    "url": link(f"/runs/{run.id}")}}
    failed = run.status == "failed"
    message = Message(
        title=f"Collection {'failed' if failed else 'partly failed'}: {run.collector}",
        summary=f"{run.scope or run.collector}: {len(errors)} error(s)"
                + ("; nothing was collected, earlier data is kept" if failed else
                   "; the other scopes were collected"),
        severity="danger" if failed else "warning",
        facts=[("Collector", run.collector), ("Status", run.status), ("Errors", str(len(errors))),
               ("Created / updated", f"{run.created} / {run.updated}")],
        items_title="Errors", items=[f"{e.get('scope') or 'run'}: {e.get('error')}"[:300]
                                     for e in errors[:TOP_ITEMS]],
        link=data["run"]["url"], link_label="Open the run")
    return emit(db, event, data, message)


# ---------------------------------------------------------------- watched conditions

def _state(db: so.Session, key: str) -> NotificationState | None:
    return db.get(NotificationState, key)


def _set_state(db: so.Session, key: str, state: str, now: datetime, detail: dict[str, Any] | None = None) -> None:
    row = _state(db, key)
    if row is None:
        db.add(NotificationState(key=key, state=state, changed_at=now, detail=detail))
    elif row.state != state or row.detail != detail:
        row.state, row.changed_at, row.detail = state, now, detail
    db.flush()


def stale_threshold(hours: Mapping[str, float], source: str) -> float | None:
    return hours.get(source, hours.get("*"))


def check_stale_sources(db: so.Session, now: datetime, hours: Mapping[str, float]) -> int:
    """``collection.stale`` for each source silent past its threshold (once per silence)."""
    if not subscribers(db, "collection.stale"):
        return 0
    sent = 0
    last_ok = db.execute(sa.select(CollectionRun.collector, sa.func.max(CollectionRun.finished_at))
                         .where(CollectionRun.status.in_(("succeeded", "partial")))
                         .group_by(CollectionRun.collector)).all()
    for source, finished in last_ok:
        threshold = stale_threshold(hours, source)
        key = f"collection.stale:{source}"
        if threshold is None or finished is None:
            continue
        silent = now - finished
        if silent <= timedelta(hours=threshold):
            _set_state(db, key, "ok", now)
            continue
        detail = {"last_success": finished.isoformat()}
        row = _state(db, key)
        if row is not None and row.state == "stale" and row.detail == detail:
            continue  # already told
        _set_state(db, key, "stale", now, detail)
        silent_hours = silent.total_seconds() / 3600
        data = {"source": source, "last_success_at": finished.isoformat(), "threshold_hours": threshold,
                "silent_hours": round(silent_hours, 1), "url": link(f"/runs/?collector={source}")}
        message = Message(
            title=f"Collection stale: {source}",
            summary=f"{source} has not collected successfully for {silent_hours:.0f} h "
                    f"(threshold {threshold:g} h); its assets may be out of date",
            severity="warning",
            facts=[("Source", source), ("Last success", f"{finished:%Y-%m-%d %H:%M} UTC"),
                   ("Threshold", f"{threshold:g} h")],
            link=data["url"], link_label="Open collection runs")
        sent += emit(db, "collection.stale", data, message, now=now)
    return sent


def gate_key(criticality: str, vendor: str | None = None, product: str | None = None,
             tracked_only: bool = False) -> str:
    parts = [criticality, vendor or "*", product or "*", "tracked" if tracked_only else "all"]
    return "updates.gate:" + ":".join(parts)[:280]


def gate_checked(db: so.Session, key: str, criticality: str, failures: list[dict[str, Any]],
                 now: datetime | None = None, criteria: Mapping[str, Any] | None = None) -> int:
    """Record the outcome of an update-gate check; ``updates.gate_failed`` when it turns red."""
    now = now or utcnow()
    row = _state(db, key)
    if not failures:
        _set_state(db, key, "passed", now)
        return 0
    assets = {r["asset_id"] for r in failures}
    if row is not None and row.state == "failed":
        if row.detail != {"assets": len(assets)}:
            _set_state(db, key, "failed", now, {"assets": len(assets)})
        return 0
    _set_state(db, key, "failed", now, {"assets": len(assets)})
    by_product: dict[tuple[str, str, str], set[int]] = {}
    for r in failures:
        by_product.setdefault((r["vendor"], r["product"], r["version"] or "version unknown"),
                              set()).add(r["asset_id"])
    top = sorted(by_product.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:TOP_ITEMS]
    data = {"criticality": criticality, "criteria": dict(criteria or {}), "assets": len(assets),
            "installations": len(failures),
            "top": [{"vendor": v, "product": p, "version": ver, "assets": len(ids)} for (v, p, ver), ids in top],
            "url": link("/updates/")}
    what = f"{criticality}{'' if criticality == 'critical' else '-or-higher'}"
    message = Message(
        title="Update gate failed",
        summary=f"{len(assets):,} {what} asset(s) run versions without a passing pre-production test",
        severity="danger",
        facts=[("Assets", f"{len(assets):,}"), ("Installations", f"{len(failures):,}"),
               ("Criticality", f"{what}")],
        items_title="Untested versions", items=[f"{v} {p} {ver} — {len(ids)} asset(s)" for (v, p, ver), ids in top],
        link=data["url"], link_label="Open update testing")
    return emit(db, "updates.gate_failed", data, message, now=now)


def check_default_gate(db: so.Session, now: datetime) -> int:
    if not subscribers(db, "updates.gate_failed"):
        return 0
    from inventory.services.updates import gate_failures

    failures = gate_failures(db, DEFAULT_GATE)
    return gate_checked(db, gate_key(DEFAULT_GATE), DEFAULT_GATE, failures, now, {"criticality": DEFAULT_GATE})


def check_overdue_plans(db: so.Session, now: datetime) -> int:
    """One ``plan.review_overdue`` listing the plans whose review fell due since the last check."""
    if not subscribers(db, "plan.review_overdue"):
        return 0
    from inventory.services.plans import stale_plans

    overdue = stale_plans(db, now)
    prefix = "plan.review_overdue:"
    known = {row.key: row for row in db.scalars(sa.select(NotificationState)
                                                 .where(NotificationState.key.startswith(prefix)))}
    current = {f"{prefix}{p['id']}" for p in overdue}
    for key, row in known.items():
        if key not in current:
            db.delete(row)  # reviewed since: a later lapse is news again
    fresh = []
    for plan in overdue:
        key = f"{prefix}{plan['id']}"
        detail = {"review_due": plan["review_due"]}
        if key in known and known[key].detail == detail:
            continue
        _set_state(db, key, "overdue", now, detail)
        fresh.append(plan)
    db.flush()
    if not fresh:
        return 0
    plans = [{"id": p["id"], "name": p["name"], "owner": p["owner"], "review_due": p["review_due"],
              "days_overdue": p["days_overdue"], "url": link(f"/plans/{p['id']}")} for p in fresh]
    data = {"plans": plans, "overdue_total": len(overdue), "url": link("/plans/?status=stale")}

    def line(p: dict[str, Any]) -> str:
        when = "never reviewed" if p["days_overdue"] is None else f"{p['days_overdue']} day(s) overdue"
        return f"{p['name']} — {when}" + (f" (owner: {p['owner']})" if p["owner"] else "")

    message = Message(
        title=f"Plan review overdue: {len(fresh)} plan(s)" if len(fresh) > 1
        else f"Plan review overdue: {fresh[0]['name']}",
        summary=f"{len(fresh)} contingency plan(s) newly due for review; {len(overdue)} overdue in all",
        severity="warning", facts=[("Newly overdue", str(len(fresh))), ("Overdue in all", str(len(overdue)))],
        items_title="Plans", items=[line(p) for p in plans[:TOP_ITEMS]],
        link=data["url"] if len(fresh) > 1 else plans[0]["url"], link_label="Open plans")
    return emit(db, "plan.review_overdue", data, message, now=now)


@dataclass
class CheckReport:
    stale: int = 0
    gate: int = 0
    plans: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def queued(self) -> int:
        return self.stale + self.gate + self.plans


def check_conditions(engine: Engine, now: datetime | None = None,
                     stale_hours: Mapping[str, float] | None = None) -> CheckReport:
    """Look for stale sources, the default gate and overdue plan reviews; queue what is new.

    Each check runs in its own transaction (its state and its messages commit together); one
    that fails is logged and reported, and the others still run."""
    now = now or utcnow()
    hours = stale_hours if stale_hours is not None else config.get("COLLECTION_STALE_HOURS")
    report = CheckReport()
    checks = (("stale", lambda db: check_stale_sources(db, now, hours)),
              ("gate", lambda db: check_default_gate(db, now)),
              ("plans", lambda db: check_overdue_plans(db, now)))
    for name, check in checks:
        try:
            with write_session(engine) as db:
                setattr(report, name, check(db))
        except Exception as exc:  # one broken check must not stop the others
            log.exception("notification check %s failed", name)
            report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return report


def claim_check_turn(engine: Engine, now: datetime, interval: timedelta = CHECK_INTERVAL) -> bool:
    """True for exactly one caller per ``interval`` across every process and host sharing the
    database (a conditional UPDATE of one row), so the checks do not run once per worker."""
    with read_session(engine) as db:
        last = db.get(NotificationState, _CHECKS_KEY)
        if last is not None and last.changed_at > now - interval:
            return False  # the usual answer, without a write transaction per poll
    with write_session(engine) as db:
        if db.get(NotificationState, _CHECKS_KEY) is None:
            db.add(NotificationState(key=_CHECKS_KEY, state="ran", changed_at=now - interval - interval))
            try:
                db.flush()
            except sa.exc.IntegrityError:
                db.rollback()
        result = db.execute(sa.update(NotificationState)
                            .where(NotificationState.key == _CHECKS_KEY,
                                   NotificationState.changed_at <= now - interval)
                            .values(changed_at=now))
        return bool(result.rowcount)


def test_body(webhook: Webhook, now: datetime | None = None) -> dict[str, Any]:
    """What ``planb webhooks test`` and the admin page's *Send test* post: a sample in the
    webhook's format, so a chat channel shows what a real message will look like."""
    now = now or utcnow()
    message = Message(
        title="Plan B test message",
        summary=f"The webhook {webhook.name} is set up; real messages look like this one.",
        severity="good", facts=[("Format", webhook.format), ("Events", ", ".join(webhook.events or []))],
        link=link("/admin/webhooks"), link_label="Open webhooks")
    return render(webhook.format, "test", webhooks.new_event_id(), now, message,
                  {"webhook": {"id": webhook.id, "name": webhook.name}})
