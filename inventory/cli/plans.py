"""``planb plans ...``: contingency plans, their reviews/exercises, coverage and RTO checks."""
from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from inventory.app_db import get_session
from inventory.principal import current_actor
from inventory.choices import CRITICALITIES, PLAN_OUTCOMES
from inventory.cli import CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, emit, to_json
from inventory.cli.params import DATETIME
from inventory.services import plans as svc


def _plan(db, ref: str):  # type: ignore[no-untyped-def]
    try:
        return svc.find_plan(db, ref)
    except svc.NotFound as exc:
        raise CLIError(str(exc)) from exc


def _fail(exc: svc.ValidationError) -> CLIError:
    return CLIError(f"{exc.field}: {exc.message}" if exc.field else exc.message)


def _day(value: str | None) -> str:
    return value[:10] if value else "never"


@click.group()
def plans() -> None:
    """Contingency plans (Plan Bs): status, reviews, exercises, coverage, recovery targets."""

@plans.command("list")
@click.option("--status", type=click.Choice(["current", "stale", "never_exercised"]),
              help="Only plans in this state.")
@FORMAT_OPTION
@with_app
def list_plans(status: str | None, fmt: str) -> None:
    """Every plan with owner, RTO, review and exercise status and what it covers."""
    rows = svc.list_plans(get_session(), status=status)
    if fmt == "json":
        click.echo(to_json(rows))
        return
    for r in rows:
        r["reviewed"] = _day(r["last_reviewed"])
        r["exercised"] = _day(r["last_exercised"])
        r["due"] = _day(r["review_due"]) if r["review_due"] else "now"
    emit(rows, ["id", "name", "owner", "rto_minutes", "status", "reviewed", "due", "exercised",
                "covers_summary"], fmt,
         headers=["id", "name", "owner", "RTO (min)", "status", "reviewed", "review due",
                  "exercised", "covers"] if fmt == "table" else None,
         empty="No plans yet. Create one on the Plans page or import an estate file.")

@plans.command("show")
@click.argument("plan")
@FORMAT_OPTION
@with_app
def show(plan: str, fmt: str) -> None:
    """A plan's steps, manual fallback, coverage and history (PLAN: id or name)."""
    data = svc.plan_to_dict(_plan(get_session(), plan), events=True)
    if fmt != "table":
        click.echo(to_json(data))
        return
    flags = []
    if data["review_overdue"]:
        flags.append("REVIEW OVERDUE")
    if data["never_exercised"]:
        flags.append("NEVER EXERCISED")
    click.echo(f"{data['name']}  [{data['status']}]" + (f"  ({', '.join(flags)})" if flags else ""))
    click.echo(f"Owner: {data['owner'] or '-'}   RTO: {data['rto_minutes'] or '-'} min   "
               f"Review every {data['review_interval_days']} days")
    click.echo(f"Last reviewed: {_day(data['last_reviewed'])}   Review due: {_day(data['review_due'])}   "
               f"Last exercised: {_day(data['last_exercised'])}")
    if data["runbook_url"]:
        click.echo(f"Runbook: {data['runbook_url']}")
    click.echo(f"Covers: {data['covers_summary']}")
    click.echo("\nSteps:\n" + (data["steps"] or "  (none written)"))
    click.echo("\nManual fallback:\n" + (data["manual_fallback"] or "  (none written)"))
    click.echo("\nHistory:")
    if not data["events"]:
        click.echo("  no reviews or exercises recorded")
    for e in data["events"]:
        click.echo(f"  {e['at'][:16]}  {e['kind']:<8} {e['outcome'] or '':<8} {e['by'] or ''}"
                   + (f" — {e['notes']}" if e["notes"] else ""))

def _record(plan_ref: str, kind: str, outcome: str | None, notes: str | None, at: datetime | None,
            by: str | None) -> None:
    db = get_session()
    plan = _plan(db, plan_ref)
    try:
        svc.record_event(db, plan, actor=current_actor(), kind=kind, outcome=outcome, notes=notes,
                         at=at, by=by)
    except svc.ValidationError as exc:
        raise _fail(exc) from exc
    db.commit()
    data = svc.plan_to_dict(plan)
    click.echo(f"Recorded {kind} of {plan.name!r}"
               + (f" ({outcome})" if outcome else "") + f"; status now {data['status']}.")

@plans.command("review")
@click.argument("plan")
@click.option("--notes", help="What was checked or changed.")
@click.option("--outcome", type=click.Choice(PLAN_OUTCOMES), help="Optional for a review.")
@click.option("--at", type=DATETIME, help="When (ISO 8601; default: now).")
@click.option("--by", help="Who reviewed (default: you).")
@with_app
def review(plan: str, notes: str | None, outcome: str | None, at: datetime | None,
           by: str | None) -> None:
    """Record a review of PLAN (updates its last-reviewed date)."""
    _record(plan, "review", outcome, notes, at, by)

@plans.command("exercise")
@click.argument("plan")
@click.option("--outcome", type=click.Choice(PLAN_OUTCOMES), required=True)
@click.option("--notes", help="What happened; what to fix.")
@click.option("--at", type=DATETIME, help="When (ISO 8601; default: now).")
@click.option("--by", help="Who ran it (default: you).")
@with_app
def exercise(plan: str, outcome: str, notes: str | None, at: datetime | None, by: str | None) -> None:
    """Record an exercise (rehearsal) of PLAN (updates its last-exercised date)."""
    _record(plan, "exercise", outcome, notes, at, by)

@plans.command("add")
@click.argument("name")
@click.option("--owner")
@click.option("--rto", "rto_minutes", type=int, help="Recovery time objective in minutes.")
@click.option("--interval", "review_interval_days", type=int, default=180, show_default=True,
              help="Review interval in days.")
@click.option("--runbook", "runbook_url", help="Runbook link (http/https).")
@click.option("--steps", help="The recovery steps (text).")
@click.option("--fallback", "manual_fallback", help="The manual fallback (text).")
@click.option("--asset", "assets", multiple=True, help="Covered asset natural key (repeatable).")
@click.option("--product", "products", multiple=True, help="Covered product 'Vendor/Product'.")
@click.option("--vendor", "vendors", multiple=True, help="Covered vendor name.")
@with_app
def add(name: str, **options: Any) -> None:
    """Create a plan."""
    covers = {k: list(options.pop(k)) for k in ("assets", "products", "vendors")}
    db = get_session()
    try:
        plan = svc.create_plan(db, {"name": name, **options, "covers": covers}, actor=current_actor())
    except svc.ValidationError as exc:
        raise _fail(exc) from exc
    db.commit()
    click.echo(f"Created plan #{plan.id} {plan.name!r}.")

@plans.command("coverage")
@click.option("--criticality", type=click.Choice(CRITICALITIES), default="critical", show_default=True)
@FORMAT_OPTION
@with_app
def coverage(criticality: str, fmt: str) -> None:
    """Business services and assets of a criticality with no plan, or only stale plans."""
    cov = svc.coverage(get_session(), criticality=criticality)
    if fmt == "json":
        click.echo(to_json(cov))
        return
    rows = []
    for prefix, label in (("", "service"), ("assets_", "asset")):
        for bucket in ("uncovered", "stale_only"):
            for e in cov[prefix + bucket]:
                rows.append({"what": label, "natural_key": e["natural_key"], "name": e["name"],
                             "problem": "no plan" if bucket == "uncovered" else "only stale plans",
                             "plans": [p["name"] for p in e["plans"]]})
    if fmt == "csv":
        emit(rows, ["what", "natural_key", "name", "problem", "plans"], fmt)
        return
    total_s = cov["critical_services"]
    click.echo(f"{criticality.capitalize()} business services: {total_s}; covered by a current plan: "
               f"{len(cov['covered_current'])}; only stale plans: {len(cov['stale_only'])}; "
               f"no plan: {len(cov['uncovered'])}.")
    click.echo(f"{criticality.capitalize()} assets: {cov['critical_assets']}; covered: "
               f"{len(cov['assets_covered_current'])}; only stale: {len(cov['assets_stale_only'])}; "
               f"no plan: {len(cov['assets_uncovered'])}.")
    if rows:
        click.echo("")
        emit(rows, ["what", "natural_key", "problem", "plans"], fmt)

@plans.command("rto")
@click.option("--all", "show_all", is_flag=True, help="Also list services that are fine.")
@FORMAT_OPTION
@with_app
def rto(show_all: bool, fmt: str) -> None:
    """Services whose promised RTO their (hard, transitive) dependencies cannot meet."""
    rows = [dict(r) for r in svc.rto_check(get_session())]  # shared result: decorate copies
    if not show_all:
        rows = [r for r in rows if r["status"] in ("at_risk", "unverified")]
    if fmt == "json":
        click.echo(to_json(rows))
        return
    for r in rows:
        slow = r["slowest"]
        r["slowest_dependency"] = (f"{slow['name']} ({slow['rto_minutes']} min, {slow['plan']})"
                                   if slow else "-")
        r["via"] = " > ".join(slow["path"]) if slow else "-"
        r["unplanned_count"] = len(r["unplanned"])
    emit(rows, ["name", "status", "rto_minutes", "slowest_dependency", "shortfall_minutes",
                "unplanned_count", "via"], fmt,
         headers=["service", "status", "RTO (min)", "slowest dependency", "short by (min)",
                  "deps without RTO", "path"] if fmt == "table" else None,
         empty="Every service's dependencies can meet its RTO.")
