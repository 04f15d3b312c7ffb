"""Incidents and scenarios through the service layer, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from inventory.impact import ScopeError
from inventory.models import AuditEvent, IncidentAsset
from inventory.services import incidents as svc
from tests.impact.conftest import Estate
from tests.impact.test_api import api_estate

SCOPE = {"vendor": "CrowdStrike", "os": ["windows"], "version": ">=7.11"}


def test_snapshot_survives_inventory_changes(any_estate: Estate) -> None:
    e = api_estate(any_estate)
    db = e.db
    incident = svc.declare_incident(db, SCOPE, "Falcon boot loop", "alice")
    db.commit()
    before = [svc.incident_asset_to_dict(a) for a in svc.incident_assets(db, incident.id)]
    assert [(a["natural_key"], a["status"], a["hops"]) for a in before] == [
        ("service:check-in", "down", 2), ("win-1", "down", 0), ("app", "down", 1)]
    assert before[0]["path"][-1]["natural_key"] == "win-1"
    # The inventory moves on: a replica appears, an asset is retired, plans change.
    with e.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM plan_links"))
        conn.execute(sa.text("UPDATE assets SET retired_at = first_seen WHERE natural_key = 'win-1'"))
    db.rollback()   # end the read transaction: SQLite cannot upgrade an outdated snapshot to a writer
    after = [svc.incident_asset_to_dict(a) for a in svc.incident_assets(db, incident.id)]
    assert after == before
    assert incident.summary["totals"]["hits"] == 3 and incident.summary["seeds"] == ["win-1"]
    # A new declaration sees the new inventory.
    assert svc.declare_incident(db, SCOPE, "Again", "alice").summary["totals"]["hits"] == 0


def test_recovery_progress_and_audit(any_estate: Estate) -> None:
    e = api_estate(any_estate)
    db = e.db
    incident = svc.declare_incident(db, SCOPE, "Falcon", "alice")
    db.commit()
    assert svc.incident_progress(incident)["percent"] == 0.0
    app_id = db.scalar(sa.select(IncidentAsset.asset_id).where(IncidentAsset.natural_key == "app"))
    assert svc.mark_recovered(db, incident.id, ["win-1", app_id], "bob", note="rebooted") == 2
    assert svc.mark_recovered(db, incident.id, ["win-1"], "bob") == 0          # already recovered
    with pytest.raises(svc.IncidentError) as info:
        svc.mark_recovered(db, incident.id, ["lin-1", "win-1"], "bob")
    assert info.value.field == "asset_ids"
    db.commit()
    progress = svc.incident_progress(incident)
    assert progress == {"status": "open", "total": 3, "recovered": 2, "remaining": 1, "percent": 66.7,
                        "by_status": {"down": {"total": 3, "recovered": 2},
                                      "degraded": {"total": 0, "recovered": 0}}}
    rows = {a.natural_key: a for a in svc.incident_assets(db, incident.id)}
    assert rows["win-1"].recovered_by == "bob" and rows["win-1"].note == "rebooted"
    svc.resolve_incident(db, incident.id, "carol", note="all clear")
    db.commit()
    with pytest.raises(svc.IncidentError) as info:
        svc.resolve_incident(db, incident.id, "carol")
    assert info.value.status == 409
    events = list(db.scalars(sa.select(AuditEvent).where(AuditEvent.entity_type == "incident")
                             .order_by(AuditEvent.id)))
    assert [(ev.action, ev.actor) for ev in events] == [
        ("incident.declare", "alice"), ("incident.recover", "bob"), ("incident.resolve", "carol")]
    assert events[1].after["assets"] == ["win-1", "app"]
    assert [i.id for i in svc.list_incidents(db, "resolved")] == [incident.id]
    assert svc.list_incidents(db, "open") == []


def test_bad_input_changes_nothing(estate: Estate) -> None:
    e = api_estate(estate)
    with pytest.raises(ScopeError):
        svc.declare_incident(e.db, {"vendor": "Nope"}, "x", "alice")
    with pytest.raises(svc.IncidentError) as info:
        svc.declare_incident(e.db, SCOPE, "  ", "alice")
    assert info.value.field == "title"
    with pytest.raises(svc.IncidentError) as info:
        svc.get_incident(e.db, 42)
    assert info.value.status == 404
    e.db.rollback()
    assert e.db.scalar(sa.select(sa.func.count()).select_from(AuditEvent)) == 0


def test_scenarios_save_replace_run_delete(estate: Estate) -> None:
    e = api_estate(estate)
    db = e.db
    first = svc.save_scenario(db, "drill", {"vendor": "crowdstrike"}, "alice", "quarterly drill")
    again = svc.save_scenario(db, "drill", SCOPE, "alice")
    db.commit()
    assert first.id == again.id and again.scope["version"] == ">=7.11" and again.description == "quarterly drill"
    assert [s.name for s in svc.list_scenarios(db)] == ["drill"]
    assert svc.run_scenario(db, "drill").totals["hits"] == 3
    assert svc.run_scenario(db, first.id).totals["hits"] == 3
    svc.delete_scenario(db, "drill", "alice")
    db.commit()
    with pytest.raises(svc.IncidentError):
        svc.get_scenario(db, "drill")
    actions = list(db.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)))
    assert actions == ["scenario.create", "scenario.update", "scenario.delete"]
