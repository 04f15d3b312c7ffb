"""Shaping a blast-radius answer for people: by business service, as CSV, from a form.

The impact engine (``inventory.impact``) computes the answer; this module
only rearranges it — hit assets grouped under the business services they
support (an asset supporting two services appears under both), capped for
the page, and flattened to CSV for a spreadsheet.
"""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Mapping

from inventory.choices import CRITICALITIES

CRIT_RANK = {c: i for i, c in enumerate(CRITICALITIES)}
NO_SERVICE = "Not linked to a business service"
# Form fields of the scope; list fields take comma-separated values (and repeated keys).
SCOPE_TEXT_FIELDS = ("vendor", "version")
# Hits listed on the page (the engine orders them down first, then by criticality and hops);
# totals always cover every hit, and the CSV export lists them all.
PAGE_HITS = 500
PRINT_HITS = 5000
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


def page_view(result: Any, limit: int = PAGE_HITS) -> dict[str, Any]:
    """``result.to_dict`` with the ``limit`` most severe hits plus every hit business service.

    Building a hit (path, plans, services) costs a little each; a vendor on most
    hosts hits tens of thousands of assets, so the page builds only what it shows.
    The services are always included so every group on the page has its header.
    """
    data = result.to_dict(limit=limit)
    hits = list(data["hits"])
    have = {h["asset_id"] for h in hits}
    missing = [s for s in (data.get("totals") or {}).get("by_service", []) if s["asset_id"] not in have]
    if missing:
        import numpy as np

        index = [result.graph.index_of_key(s["natural_key"]) for s in missing]
        index = np.array([i for i in index if i is not None], dtype=np.int64)
        if index.size:
            hits += [hit.to_dict() for hit in result.build_hits(index)]
    data["hits"] = hits
    return data


def _hit_key(hit: dict[str, Any]) -> tuple[int, int, int, str]:
    return (0 if hit.get("status") == "down" else 1, CRIT_RANK.get(hit.get("criticality") or "", 9),
            int(hit.get("hops") or 0), hit.get("name") or "")


def group_by_service(result: Mapping[str, Any], per_group: int = 50,
                     total_rows: int = PAGE_HITS) -> dict[str, Any]:
    """Hit assets under each business service they support, most severe first.

    Returns ``{"groups": [{"name", "service" (its own hit or None), "count", "down",
    "degraded", "gaps", "rows" (capped), "hidden"}], "rows_shown", "rows_total"}``.
    """
    hits: list[dict[str, Any]] = list(result.get("hits") or [])
    service_hits = {h["name"]: h for h in hits if h.get("kind") == "service"}
    members: dict[str, list[dict[str, Any]]] = {}
    for hit in hits:
        if hit.get("kind") == "service":
            continue
        names = hit.get("services") or [NO_SERVICE]
        for name in names:
            members.setdefault(name, []).append(hit)
    for name in service_hits:
        members.setdefault(name, [])

    def group_key(name: str) -> tuple[int, int, int, str]:
        own = service_hits.get(name)
        if name == NO_SERVICE:
            return (9, 9, 9, name)
        if own is None:
            return (5, 9, 0, name)
        return (0 if own.get("status") == "down" else 1, CRIT_RANK.get(own.get("criticality") or "", 9),
                0, name)

    groups = []
    budget = total_rows
    for name in sorted(members, key=group_key):
        rows = sorted(members[name], key=_hit_key)
        shown = rows[:max(0, min(per_group, budget))]
        budget -= len(shown)
        groups.append({
            "name": name, "service": service_hits.get(name), "count": len(rows),
            "down": sum(1 for r in rows if r.get("status") == "down"),
            "degraded": sum(1 for r in rows if r.get("status") == "degraded"),
            "gaps": sum(1 for r in rows if r.get("gap")),
            "rows": shown, "hidden": len(rows) - len(shown)})
    listed = sum(1 for h in hits if h.get("kind") != "service")
    all_hits = int(((result.get("totals") or {}).get("hits")) or len(hits))
    all_services = len(service_hits)
    return {"groups": groups, "rows_shown": total_rows - budget,
            "rows_total": sum(g["count"] for g in groups),
            "rows_hidden": sum(g["hidden"] for g in groups), "per_group": per_group,
            "fetched": listed,
            # Hits (not services) the page did not fetch at all (see page_view).
            "not_fetched": max(0, all_hits - all_services - listed)}


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


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells that start like a formula; asset names come from outside.
    if text and text[0] in "=+-@\t\r":
        text = "'" + text
    return text


def to_csv(result: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for hit in sorted(result.get("hits") or [], key=_hit_key):
        plans = "; ".join(f"{p.get('name')} ({p.get('status')})" for p in hit.get("plans") or [])
        row = {**hit, "services": "; ".join(hit.get("services") or []), "plans": plans,
               "gap": "yes" if hit.get("gap") else "no", "seed": "yes" if hit.get("seed") else "no",
               "path": describe_path(hit.get("path") or [])}
        writer.writerow([_cell(row.get(column)) for column in CSV_COLUMNS])
    return buffer.getvalue()


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
