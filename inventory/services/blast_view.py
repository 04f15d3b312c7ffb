"""Shaping a blast-radius answer for people: by business service, as CSV, from a form.

The impact engine (``inventory.impact``) computes the answer; this module
only rearranges it — hit assets grouped under the business services they
support (an asset supporting two services appears under both), capped for
the page, and flattened to CSV for a spreadsheet.
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime
from typing import Any, Iterable, Mapping, Sequence

from inventory.choices import CRITICALITIES

CRIT_RANK = {c: i for i, c in enumerate(CRITICALITIES)}
NO_SERVICE = "Not linked to a business service"
# Form fields of the scope; list fields take comma-separated values (and repeated keys).
SCOPE_TEXT_FIELDS = ("vendor", "version")
# Hits listed on the page (the engine orders them down first, then by criticality and hops);
# totals always cover every hit, and the CSV export lists them all.
PAGE_HITS = 200
PRINT_HITS = 1000
# Business services listed with their own header (the rest are counted).
MAX_GROUPS = 60
# Plans listed per hit (best first: current, never exercised, stale); the rest are counted.
PLANS_SHOWN = 3
PLAN_RANK = {"current": 0, "never_exercised": 1, "stale": 2}
# The CSV status of an asset listed under "version unknown — check by hand".
VERSION_UNKNOWN_STATUS = "version unknown"
SCOPE_LIST_FIELDS = ("products", "os", "regions", "accounts", "environments", "tags")


def scope_from_form(args: Mapping[str, Any]) -> dict[str, Any]:
    """The scope dict ``parse_scope`` takes, from a query string / form (MultiDict or dict)."""
    scope: dict[str, Any] = {}
    for name in SCOPE_TEXT_FIELDS:
        value = (args.get(name) or "").strip()
        if value:
            scope[name] = value
    for name in SCOPE_LIST_FIELDS:
        raw = args.getlist(name) if hasattr(args, "getlist") else [args.get(name) or ""]
        values: list[str] = []
        for chunk in raw:
            if isinstance(chunk, (list, tuple)):
                parts = [str(c) for c in chunk]
            else:
                parts = str(chunk or "").split(",")
            for part in parts:
                part = part.strip()
                if part and part not in values:
                    values.append(part)
        if values:
            scope[name] = values
    return scope


def scope_to_args(scope: Mapping[str, Any]) -> dict[str, str]:
    """Query-string arguments that reproduce a (normalised) scope."""
    args: dict[str, str] = {}
    for name in SCOPE_TEXT_FIELDS:
        if scope.get(name):
            args[name] = str(scope[name])
    for name in SCOPE_LIST_FIELDS:
        value = scope.get(name)
        if isinstance(value, Mapping):
            value = [f"{k}:{v}" for k, v in value.items()]
        if value:
            args[name] = ",".join(str(v) for v in value)
    return args


def form_as_of(args: Mapping[str, Any]) -> str | None:
    """The optional "as of" moment from the form (ISO 8601, UTC when no offset is given)."""
    value = (args.get("as_of") or "").strip()
    return value or None


def page_view(result: Any, limit: int = PAGE_HITS, services: int = MAX_GROUPS) -> dict[str, Any]:
    """What the page shows of an engine result: totals and confidence, the ``limit``
    most severe hits, and the ``services`` most severe hit business services.

    Building a hit (explaining path, plans, services it supports) costs time, and
    a vendor on most hosts hits tens of thousands of assets, so the page builds
    only what it shows — in one ``build_hits`` call, which walks the business
    services once for the whole batch.  Seeds are not listed (only counted).
    """
    import numpy as np

    totals = result.totals
    ordered = result.ordered_idx[:limit]
    service_index = [result.graph.index_of_key(s["natural_key"]) for s in totals.get("by_service", [])[:services]]
    extra = np.array([i for i in service_index if i is not None], dtype=np.int64)
    index = np.concatenate([ordered, extra[~np.isin(extra, ordered)]]) if extra.size else ordered
    hits = [hit.to_dict() for hit in result.build_hits(index)] if index.size else []
    return {"scope": result.scope.to_dict(),
            "as_of": result.as_of.isoformat() if result.as_of else None,
            "computed_at": result.computed_at.isoformat(),
            "totals": totals, "confidence": result.confidence, "hits": hits,
            "version_unknown": result.version_unknown(limit),
            "fetched": int(ordered.size)}


def _hit_key(hit: dict[str, Any]) -> tuple[int, int, int, str]:
    return (0 if hit.get("status") == "down" else 1, CRIT_RANK.get(hit.get("criticality") or "", 9),
            int(hit.get("hops") or 0), hit.get("name") or "")


def _best_plans_first(plans: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(plans, key=lambda p: (PLAN_RANK.get(p.get("status") or "", 9), p.get("name") or ""))


def group_by_service(data: Mapping[str, Any], max_groups: int = MAX_GROUPS,
                     plans_shown: int = PLANS_SHOWN) -> dict[str, Any]:
    """The page's hit assets under the business services they support.

    A hit supporting several services is listed once, under the most severe of
    them (the engine's service order: down first, then criticality) with the
    number of other services it also supports — in a large estate an asset can
    support hundreds of services, and repeating it under each would bury the
    page.  Returns ``{"groups": [{"name", "service" (totals row), "service_hit"
    (its own hit, with plans) or None, "rows", "down", "degraded", "gaps"}],
    "more_services", "fetched", "total"}``.
    """
    totals = data.get("totals") or {}
    hits: list[dict[str, Any]] = list(data.get("hits") or [])
    service_rows = list(totals.get("by_service") or [])
    if not service_rows:  # results from an older engine / a snapshot: derive from the hits
        service_rows = [{"asset_id": h["asset_id"], "name": h["name"], "status": h.get("status"),
                         "criticality": h.get("criticality"), "hops": h.get("hops")}
                        for h in sorted((h for h in hits if h.get("kind") == "service"), key=_hit_key)]
    order = {}
    for position, row in enumerate(service_rows):
        order.setdefault(row["name"], position)
    service_hit = {h["asset_id"]: h for h in hits if h.get("kind") == "service"}
    rows_by_group: dict[Any, list[dict[str, Any]]] = {}
    for hit in hits:
        if hit.get("kind") == "service":
            continue
        names = [n for n in hit.get("services") or [] if n in order]
        primary = min(names, key=order.__getitem__) if names else None
        entry = dict(hit)
        entry["also_supports"] = max(0, len(hit.get("services") or []) - 1)
        entry["plans"] = _best_plans_first(hit.get("plans") or [])
        entry["plans_hidden"] = max(0, len(entry["plans"]) - plans_shown)
        entry["plans"] = entry["plans"][:plans_shown]
        rows_by_group.setdefault(order[primary] if primary is not None else None, []).append(entry)

    groups = []
    for position, row in enumerate(service_rows):
        rows = rows_by_group.get(position, [])
        if position >= max_groups and not rows:
            continue
        own = service_hit.get(row["asset_id"])
        if own is not None:
            own = dict(own)
            own["plans"] = _best_plans_first(own.get("plans") or [])
        groups.append(_group(row["name"], row, own, rows))
    if None in rows_by_group:
        groups.append(_group(NO_SERVICE, None, None, rows_by_group[None]))
    shown_services = sum(1 for g in groups if g["service"] is not None)
    return {"groups": groups, "more_services": max(0, len(service_rows) - shown_services),
            "fetched": int(data.get("fetched", sum(1 for h in hits if h.get("kind") != "service"))),
            "total": int(totals.get("hits") or len(hits)), "services_total": len(service_rows)}


def _group(name: str, service: Mapping[str, Any] | None, own: Mapping[str, Any] | None,
           rows: list[dict[str, Any]]) -> dict[str, Any]:
    rows = sorted(rows, key=_hit_key)
    return {"name": name, "service": service, "service_hit": own, "rows": rows,
            "down": sum(1 for r in rows if r.get("status") == "down"),
            "degraded": sum(1 for r in rows if r.get("status") == "degraded"),
            "gaps": sum(1 for r in rows if r.get("gap"))}


def describe_path(path: Iterable[Mapping[str, Any]]) -> str:
    """``A -[runs-on]- B -[behind]- C`` for the CSV (the page draws it with markup)."""
    out = ""
    for i, step in enumerate(path or []):
        if i and step.get("edge_kind"):
            out += f" -[{step['edge_kind']}]- "
        elif i:
            out += " - "
        out += str(step.get("name", "?"))
    return out


CSV_COLUMNS = ("asset_id", "natural_key", "name", "kind", "provider", "account", "region", "os_family",
               "environment", "criticality", "owner", "status", "hops", "seed", "services", "plans", "gap",
               "path")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A formula start right after a line break inside the text: harmless in a quoted cell, but
# a reader that splits lines naively (or a broken file) would see a line starting with it.
_FORMULA_AFTER_BREAK = re.compile(r"(\r\n|\r|\n)(?=[=+\-@\t])")

# How every CSV the project writes is laid out (RFC 4180).  The csv module quotes a field
# only if it holds the delimiter, the quote or a character of the line terminator, so the
# terminator must hold both CR and LF: with "\n" alone a bare CR went out unquoted.
CSV_FORMAT: dict[str, Any] = {"lineterminator": "\r\n", "quoting": csv.QUOTE_MINIMAL}


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet will not run (OWASP's advice on CSV injection).

    Names come from outside (collectors, imports): text that starts like a formula gets a
    leading single quote, and so does each line inside it that does.  Numbers are left
    alone, so a numeric column keeps ``-1``."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):  # bool included: prints as True/False
        return value
    text = _FORMULA_AFTER_BREAK.sub(r"\1'", str(value))
    if text.startswith(FORMULA_STARTS):
        text = "'" + text
    return text


def render_csv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV (``CSV_FORMAT``, cells through ``csv_cell``): lists joined with "; ",
    dicts as JSON, dates in ISO 8601.  The one CSV writer of the CLI and the dashboard."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", **CSV_FORMAT)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, default=_iso)
    return csv_cell(_iso(value))


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (datetime, date)) else value


def to_csv(result: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, **CSV_FORMAT)
    writer.writerow(CSV_COLUMNS)
    for hit in sorted(result.get("hits") or [], key=_hit_key):
        plans = "; ".join(f"{p.get('name')} ({p.get('status')})" for p in hit.get("plans") or [])
        row = {**hit, "services": "; ".join(hit.get("services") or []), "plans": plans,
               "gap": "yes" if hit.get("gap") else "no", "seed": "yes" if hit.get("seed") else "no",
               "path": describe_path(hit.get("path") or [])}
        writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
    # Then the assets whose version the range cannot place: not hits, to be checked by hand.
    for entry in result.get("version_unknown") or []:
        row = {**entry, "status": VERSION_UNKNOWN_STATUS, "seed": "no", "gap": "",
               "path": describe_unknown(entry)}
        writer.writerow([csv_cell(row.get(column)) for column in CSV_COLUMNS])
    return buffer.getvalue()


def describe_unknown(entry: Mapping[str, Any]) -> str:
    """``Falcon Sensor: only the VM extension handler's version (1.0) is known ...``."""
    return "; ".join(f"{i.get('product')}: {i.get('reason')}" for i in entry.get("installations") or [])


def plan_summary(result: Mapping[str, Any]) -> dict[str, int]:
    """Hit assets by their best plan: current / never exercised / stale only / gap."""
    coverage = (result.get("totals") or {}).get("plan_coverage")
    if coverage:
        return {"current": coverage.get("current", 0), "never_exercised": coverage.get("never_exercised", 0),
                "stale": coverage.get("stale_only", 0), "gap": coverage.get("gap", 0)}
    counts = {"current": 0, "never_exercised": 0, "stale": 0, "gap": 0}
    order = ("current", "never_exercised", "stale")
    for hit in result.get("hits") or []:
        statuses = {p.get("status") for p in hit.get("plans") or []}
        best = next((s for s in order if s in statuses), None)
        counts[best or "gap"] += 1
    return counts
