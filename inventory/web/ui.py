"""Template helpers shared by every dashboard page (registered app-wide by the overview blueprint).

* ``url_with(endpoint, args, **overrides)`` — a URL that keeps the current
  filters and changes one thing (the cursor, the sort); ``None`` drops a key.
* ``|when`` / ``|ago`` — timestamps shown in UTC, and how long ago.
* ``|num`` — thousands separators.

``refuse_bad_query(known)`` is what every list page calls first: a query parameter the page
does not read, one given twice with different values, or a value outside the accepted ones is
a 400 (the app's error page, naming the parameter and what it accepts), never a silent default.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Collection, Mapping

from flask import Blueprint, abort, current_app, request, url_for

from inventory.db import utcnow


def url_with(endpoint: str, args: Mapping[str, Any] | None = None, **overrides: Any) -> str:
    merged = {k: v for k, v in (args or {}).items() if v not in (None, "")}
    for key, value in overrides.items():
        if value is None or value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return url_for(endpoint, **merged)


def refuse_bad_query(known: Mapping[str, Any], repeatable: Collection[str] = ()) -> None:
    """abort(400) unless the request's query fits ``known`` (see ``assets.check_query``)."""
    from inventory.services.assets import check_query, describe

    errors = check_query(request.args, known, repeatable)
    if errors:
        abort(400, description="Bad query: " + " · ".join(describe(e) for e in errors))


def has_endpoint(endpoint: str) -> bool:
    """Whether a page exists (areas are optional blueprints): templates link only to real pages."""
    return endpoint in current_app.view_functions


def when(value: datetime | date | str | None, missing: str = "—") -> str:
    if value is None or value == "":
        return missing
    if isinstance(value, str):  # ISO 8601 from JSON snapshots
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def ago(value: datetime | None, missing: str = "never") -> str:
    if value is None:
        return missing
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    seconds = (utcnow() - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)} {unit}"
            return f"in {amount}" if future else f"{amount} ago"
    return "just now"


def num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def install(bp: Blueprint) -> None:
    bp.add_app_template_global(url_with, "url_with")
    bp.add_app_template_global(has_endpoint, "has_endpoint")
    bp.add_app_template_filter(when, "when")
    bp.add_app_template_filter(ago, "ago")
    bp.add_app_template_filter(num, "num")
    bp.add_app_template_filter(pct, "pct")
