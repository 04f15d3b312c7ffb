"""Whether a contingency plan is current, stale (review overdue) or never exercised."""
from __future__ import annotations

from datetime import datetime, timedelta

from inventory.db import utcnow
from inventory.models import ContingencyPlan

CURRENT = "current"
STALE = "stale"
NEVER_EXERCISED = "never_exercised"


def review_due(plan: ContingencyPlan) -> datetime | None:
    if plan.last_reviewed is None:
        return None
    return plan.last_reviewed + timedelta(days=plan.review_interval_days)


def plan_status(plan: ContingencyPlan, now: datetime | None = None) -> str:
    """``stale`` wins over ``never_exercised``: an unreviewed plan may be wrong, not just unrehearsed."""
    now = now or utcnow()
    due = review_due(plan)
    if due is None or due < now:
        return STALE
    if plan.last_exercised is None:
        return NEVER_EXERCISED
    return CURRENT


def coverage_bucket(statuses: list[str]) -> tuple[str, bool]:
    """Where an asset with plans of these statuses stands: ``uncovered`` (no plan),
    ``stale_only`` or ``covered_current``; and whether none of its live plans was
    ever exercised (so a current-looking cover has never been rehearsed)."""
    if not statuses:
        return "uncovered", False
    live = [s for s in statuses if s != STALE]
    if not live:
        return "stale_only", False
    return "covered_current", all(s == NEVER_EXERCISED for s in live)
