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
