"""Saved scenarios (named outage scopes) and declared incidents.

Declaring an incident computes the blast radius of its scope and stores a
*snapshot*: the totals, confidence and seeds on the ``Incident``, and one
``IncidentAsset`` per hit asset with its status, hops, explaining path, plans
and services as they were.  Later inventory changes never alter it, so the
after-action review sees what responders saw.  Responders mark assets
recovered; progress is recovered / total.  Every write records an audit event
in the caller's transaction; callers commit.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import utcnow
from inventory.ids import as_id
from inventory.impact import ImpactResult, Scope, blast_radius, parse_scope
from inventory.models import Incident, IncidentAsset, Scenario
from inventory.services import audit, notify
from inventory.validation import text_problem

MAX_TITLE = 300
MAX_NAME = 200
MAX_TEXT = 20_000  # descriptions and notes
SEED_SAMPLE = 1000
# Version-unknown assets kept in the snapshot (a scope with more lists the most critical first).
VERSION_UNKNOWN_SNAPSHOT = 5000
_INSERT_CHUNK = 2000


class IncidentError(ValueError):
    """A scenario or incident operation that cannot be done; ``status`` is the HTTP status."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


def _refuse_unstorable(value: str, field: str) -> None:
    problem = text_problem(value)
    if problem:
        # What a person typed is stored as typed or not at all (inventory.validation).
        raise IncidentError(f"{field}: {problem}", field=field)


def _optional_text(value: str | None, field: str, max_len: int = MAX_TEXT) -> str | None:
    """A description or note: stripped; refused (never altered) when too long or unstorable."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise IncidentError(f"{field} must be text", field=field)
    value = value.strip()
    if len(value) > max_len:
        raise IncidentError(f"{field} must be at most {max_len} characters", field=field)
    _refuse_unstorable(value, field)
    return value


# ---------------------------------------------------------------- scenarios

def save_scenario(db: so.Session, name: str, scope_dict: Mapping[str, Any], actor: str,
                  description: str | None = None) -> Scenario:
    """Create the scenario ``name``, or replace its scope if it exists (the scope is validated)."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > MAX_NAME:
        raise IncidentError(f"a scenario name must be 1 to {MAX_NAME} characters", field="name")
    _refuse_unstorable(name, "name")
    description = _optional_text(description, "description")
    scope = parse_scope(db, scope_dict)
    existing = db.scalar(sa.select(Scenario).where(Scenario.name == name))
    if existing is None:
        scenario = Scenario(name=name, description=description, scope=scope.to_dict(), created_by=actor)
        db.add(scenario)
        db.flush()
        audit.record(db, actor=actor, action="scenario.create", entity_type="scenario", entity_id=scenario.id,
                     summary=f"Saved scenario {name!r}: {scope.describe()}", after=audit.snapshot(scenario))
        return scenario
    before = audit.snapshot(existing)
    existing.scope = scope.to_dict()
    if description is not None:
        existing.description = description
    db.flush()
    audit.record(db, actor=actor, action="scenario.update", entity_type="scenario", entity_id=existing.id,
                 summary=f"Updated scenario {name!r}: {scope.describe()}", before=before,
                 after=audit.snapshot(existing))
    return existing


def list_scenarios(db: so.Session) -> list[Scenario]:
    return list(db.scalars(sa.select(Scenario).order_by(Scenario.name)))


def get_scenario(db: so.Session, ref: int | str) -> Scenario:
    """A scenario by id or by name."""
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise IncidentError("a scenario is named by its id or its name", field="scenario")
    scenario = None
    row_id = as_id(ref)
    if row_id is not None:
        scenario = db.get(Scenario, row_id)
    if scenario is None and isinstance(ref, str):
        scenario = db.scalar(sa.select(Scenario).where(Scenario.name == ref))
    if scenario is None:
        raise IncidentError(f"no scenario {ref!r}", field="scenario", status=404)
    return scenario


def delete_scenario(db: so.Session, ref: int | str, actor: str) -> None:
    scenario = get_scenario(db, ref)
    audit.record(db, actor=actor, action="scenario.delete", entity_type="scenario", entity_id=scenario.id,
                 summary=f"Deleted scenario {scenario.name!r}", before=audit.snapshot(scenario))
    db.delete(scenario)
    db.flush()


def run_scenario(db: so.Session, ref: int | str, as_of: Any = None,
                 what_if: Mapping[str, Any] | None = None) -> ImpactResult:
    scenario = get_scenario(db, ref)
    return blast_radius(db, parse_scope(db, scenario.scope), as_of=as_of, what_if=what_if)


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    return {"id": scenario.id, "name": scenario.name, "description": scenario.description,
            "scope": scenario.scope, "created_by": scenario.created_by,
            "created_at": _iso(scenario.created_at)}


# ---------------------------------------------------------------- incidents

def declare_incident(db: so.Session, scope_dict: Mapping[str, Any] | Scope, title: str, actor: str,
                     result: ImpactResult | None = None) -> Incident:
    """Declare an incident for ``scope`` and snapshot its blast radius now.

    ``result`` may pass a blast radius already computed for this scope (the
    page a responder is looking at), so the snapshot is exactly what they saw."""
    title = title.strip() if isinstance(title, str) else ""
    if not title or len(title) > MAX_TITLE:
        raise IncidentError(f"a title must be 1 to {MAX_TITLE} characters", field="title")
    _refuse_unstorable(title, "title")
    scope = parse_scope(db, scope_dict)
    if result is None:
        result = blast_radius(db, scope)
    seed_count = int(result.seed_order.size)
    seeds = result.graph.natural_key.take(result.seed_order[:SEED_SAMPLE].tolist())
    incident = Incident(
        title=title, scope=scope.to_dict(), status="open", declared_at=utcnow(), declared_by=actor,
        summary={"computed_at": result.computed_at.isoformat(), "scope_text": scope.describe(),
                 "totals": result.totals, "confidence": result.confidence,
                 "seed_count": seed_count, "seeds": seeds,
                 # hosts responders must check by hand (their version cannot be placed)
                 "version_unknown": result.version_unknown(VERSION_UNKNOWN_SNAPSHOT)})
    db.add(incident)
    db.flush()
    _insert_snapshot(db, incident.id, result)
    db.expire(incident, ["assets"])
    totals = result.totals
    audit.record(db, actor=actor, action="incident.declare", entity_type="incident", entity_id=incident.id,
                 summary=f"Declared incident {title!r}: {scope.describe()} — {totals['by_status']['down']} down, "
                         f"{totals['by_status']['degraded']} degraded",
                 after={"title": title, "scope": scope.to_dict(), "hits": totals["hits"],
                        "by_status": totals["by_status"]})
    notify.incident_declared(db, incident)  # queued in this transaction: sent only if it commits
    return incident


def _insert_snapshot(db: so.Session, incident_id: int, result: ImpactResult) -> None:
    """One ``IncidentAsset`` per hit, in listing order, a chunk at a time: each chunk's rows come
    from the engine with their details already as JSON text (``ImpactResult.incident_rows``,
    written from shared pieces) and go to the driver in one executemany, inside the caller's
    transaction — tens of thousands of hits are never all built as nested Python objects."""
    conn = db.connection()
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    table = IncidentAsset.__table__
    columns = ("incident_id", "asset_id", "natural_key", "name", "kind", "status", "hops", "criticality", "details")
    sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})")
    idx = result.ordered_idx
    context = result.hit_context(idx) if idx.size else None
    # Straight to the driver's cursor: every value was read from the inventory (whose writes
    # passed the engine's text guard) or written by the engine as ASCII JSON.
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for start in range(0, idx.size, _INSERT_CHUNK):
            rows = result.incident_rows(idx[start:start + _INSERT_CHUNK], context)
            cursor.executemany(sql, [(incident_id, *row) for row in rows])
    finally:
        cursor.close()


def list_incidents(db: so.Session, status: str | None = None) -> list[Incident]:
    stmt = sa.select(Incident).order_by(Incident.declared_at.desc(), Incident.id.desc())
    if status:
        if status not in ("open", "resolved"):
            raise IncidentError("status must be open or resolved", field="status")
        stmt = stmt.where(Incident.status == status)
    return list(db.scalars(stmt))


def get_incident(db: so.Session, incident_id: int) -> Incident:
    row_id = as_id(incident_id)
    incident = db.get(Incident, row_id) if row_id is not None else None
    if incident is None:
        raise IncidentError(f"no incident {incident_id}", field="incident", status=404)
    return incident


def mark_recovered(db: so.Session, incident_id: int, asset_ids: Sequence[int | str], actor: str,
                   note: str | None = None) -> int:
    """Mark hit assets (asset ids or natural keys) recovered; returns how many changed.

    Unknown assets are an error and nothing is changed; assets already
    recovered are left as they are."""
    incident = get_incident(db, incident_id)
    if incident.status != "open":
        raise IncidentError(f"incident {incident_id} is {incident.status}", field="incident", status=409)
    if not asset_ids:
        raise IncidentError("name at least one asset", field="asset_ids")
    if any(isinstance(a, bool) or not isinstance(a, (int, str)) for a in asset_ids):
        raise IncidentError("asset_ids must be asset ids or natural keys", field="asset_ids")
    note = _optional_text(note, "note")
    numbers = [a for a in asset_ids if isinstance(a, int) or (a.isascii() and a.isdigit())]
    keys = {a for a in asset_ids if isinstance(a, str) and not (a.isascii() and a.isdigit())}
    ids = {i for i in map(as_id, numbers) if i is not None}
    # A number no id column can hold is part of no incident: reported as missing below.
    out_of_range = sorted(str(a)[:40] for a in numbers if as_id(a) is None)
    rows = list(db.scalars(sa.select(IncidentAsset).where(
        IncidentAsset.incident_id == incident.id,
        sa.or_(IncidentAsset.asset_id.in_(ids or [-1]), IncidentAsset.natural_key.in_(keys or [""])))))
    missing = out_of_range + sorted({str(i) for i in ids} - {str(r.asset_id) for r in rows}) + \
        sorted(keys - {r.natural_key for r in rows})
    if missing:
        raise IncidentError(f"not part of incident {incident_id}: {', '.join(missing[:10])}",
                            field="asset_ids")
    now = utcnow()
    changed = [r for r in rows if r.recovered_at is None]
    for row in changed:
        row.recovered_at = now
        row.recovered_by = actor
        if note:
            row.note = note
    db.flush()
    if changed:
        audit.record(db, actor=actor, action="incident.recover", entity_type="incident", entity_id=incident.id,
                     summary=f"Marked {len(changed)} asset(s) recovered in incident {incident.title!r}",
                     after={"assets": [r.natural_key for r in changed][:200], "note": note})
    return len(changed)


def resolve_incident(db: so.Session, incident_id: int, actor: str, note: str | None = None) -> Incident:
    note = _optional_text(note, "note")
    incident = get_incident(db, incident_id)
    if incident.status == "resolved":
        raise IncidentError(f"incident {incident_id} is already resolved", field="incident", status=409)
    before = {"status": incident.status}
    incident.status = "resolved"
    incident.resolved_at = utcnow()
    progress = incident_progress(incident)
    db.flush()
    audit.record(db, actor=actor, action="incident.resolve", entity_type="incident", entity_id=incident.id,
                 summary=f"Resolved incident {incident.title!r} ({progress['recovered']}/{progress['total']} "
                         "assets marked recovered)",
                 before=before, after={"status": "resolved", "note": note, "progress": progress})
    notify.incident_resolved(db, incident, progress)
    return incident


def incident_progress(incident: Incident) -> dict[str, Any]:
    """Recovered / total, overall and per status (down, degraded)."""
    session = so.object_session(incident)
    per: dict[str, dict[str, int]] = {"down": {"total": 0, "recovered": 0},
                                      "degraded": {"total": 0, "recovered": 0}}
    if session is not None and incident.id is not None:
        rows: Iterable[Any] = session.execute(
            sa.select(IncidentAsset.status, sa.func.count(), sa.func.count(IncidentAsset.recovered_at))
            .where(IncidentAsset.incident_id == incident.id).group_by(IncidentAsset.status)).all()
    else:
        counts: dict[str, list[int]] = {}
        for a in incident.assets:
            c = counts.setdefault(a.status, [0, 0])
            c[0] += 1
            c[1] += a.recovered_at is not None
        rows = [(k, v[0], v[1]) for k, v in counts.items()]
    for status, total, recovered in rows:
        entry = per.setdefault(status, {"total": 0, "recovered": 0})
        entry["total"] += int(total)
        entry["recovered"] += int(recovered)
    total = sum(v["total"] for v in per.values())
    recovered = sum(v["recovered"] for v in per.values())
    return {"status": incident.status, "total": total, "recovered": recovered, "remaining": total - recovered,
            "percent": round(100.0 * recovered / total, 1) if total else 100.0, "by_status": per}


def incident_assets(db: so.Session, incident_id: int, limit: int | None = None, offset: int = 0,
                    status: str | None = None) -> list[IncidentAsset]:
    """The snapshot's assets: down first, then by criticality, hops and key."""
    crit = sa.case({"critical": 0, "high": 1, "medium": 2, "low": 3}, value=IncidentAsset.criticality, else_=4)
    stmt = (sa.select(IncidentAsset).where(IncidentAsset.incident_id == incident_id)
            .order_by(sa.case((IncidentAsset.status == "down", 0), else_=1), crit, IncidentAsset.hops,
                      IncidentAsset.natural_key).offset(offset))
    if status:
        stmt = stmt.where(IncidentAsset.status == status)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(db.scalars(stmt))


def incident_asset_to_dict(row: IncidentAsset) -> dict[str, Any]:
    details = row.details or {}
    return {"asset_id": row.asset_id, "natural_key": row.natural_key, "name": row.name, "kind": row.kind,
            "status": row.status, "hops": row.hops, "criticality": row.criticality,
            "seed": details.get("seed", False), "path": details.get("path", []),
            "plans": details.get("plans", []), "gap": details.get("gap", False),
            "services": details.get("services", []), "provider": details.get("provider"),
            "account": details.get("account"), "region": details.get("region"),
            "os_family": details.get("os_family"), "recovered_at": _iso(row.recovered_at),
            "recovered_by": row.recovered_by, "note": row.note}


def incident_to_dict(db: so.Session, incident: Incident, with_assets: bool = False,
                     limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    out = {"id": incident.id, "title": incident.title, "status": incident.status, "scope": incident.scope,
           "declared_at": _iso(incident.declared_at), "declared_by": incident.declared_by,
           "resolved_at": _iso(incident.resolved_at), "summary": incident.summary,
           "progress": incident_progress(incident)}
    if with_assets:
        out["assets"] = [incident_asset_to_dict(a) for a in incident_assets(db, incident.id, limit, offset)]
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
