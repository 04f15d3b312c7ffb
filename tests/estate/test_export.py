"""Export: the import format back out, stable, and round-tripping through an empty database."""
from __future__ import annotations

import json
from datetime import UTC

import sqlalchemy as sa

from inventory.db import make_engine, read_session, utcnow, write_session
from inventory.estate.exporter import dump_document, export_estate, format_timestamp
from inventory.estate.importer import import_estate, load_document, validate_document
from inventory.models import Asset, Base
from tests.estate.conftest import small_document, table_snapshot


def _counts(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in Base.metadata.sorted_tables if t.name not in ("audit_events", "inventory_version")}


def test_demo_round_trips_through_an_empty_database(demo_engine, fresh_db_url):
    with read_session(demo_engine) as db:
        first = export_estate(db)
    text = dump_document(first, "yaml")
    fresh = make_engine(fresh_db_url)
    try:
        with write_session(fresh) as db:
            report = import_estate(db, load_document(text, "export.yaml"), source_name="export.yaml",
                                   actor="tester")
        assert report.totals().updated == report.totals().unchanged == 0
        with read_session(fresh) as db:
            second = export_estate(db)
        assert second == first
        assert _counts(fresh) == _counts(demo_engine)
        # And the export, imported again, is a no-op.
        with write_session(fresh) as db:
            again = import_estate(db, load_document(dump_document(second, "json"), "export.json"),
                                  source_name="export.json", actor="tester")
        assert again.totals().created == again.totals().updated == 0
    finally:
        fresh.dispose()


def test_export_is_stable_valid_and_compact(demo_sqlite_engine):
    with read_session(demo_sqlite_engine) as db:
        doc = export_estate(db)
        assert export_estate(db) == doc
        validate_document(db, json.loads(json.dumps(doc)), "export")
    assert list(doc) == ["version", "vendors", "assets", "services", "plans", "updates", "assessments"]
    keys = [a["key"] for a in doc["assets"]]
    assert keys == sorted(keys)
    assert [v["name"] for v in doc["vendors"]] == sorted(v["name"] for v in doc["vendors"])
    # Defaults and empty values are left out.
    text = dump_document(doc, "yaml")
    assert ": null" not in text and ": []" not in text and ": {}" not in text and ": false" not in text.replace(
        "staged_rollouts: false", "").replace("customer_update_control: false", "").replace(
        "rollback_supported: false", "")
    assert dump_document(doc, "yaml") == text
    assert load_document(text, "x.yaml") == load_document(dump_document(doc, "json"), "x.json") == doc
    services = {s["key"]: s for s in doc["services"]}
    assert services["service:crew-scheduling"]["criticality"] == "critical"
    # Multi-line text is written as readable literal blocks.
    assert "steps: |" in text


def test_retired_assets_and_references_to_them_are_left_out(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        with write_session(engine) as db:
            import_estate(db, small_document(), source_name="s", actor="t")
        with write_session(engine) as db:
            asset = db.scalar(sa.select(Asset).where(Asset.natural_key == "host:web-2"))
            asset.retired_at = utcnow()
        with read_session(engine) as db:
            doc = export_estate(db)
            validate_document(db, doc, "export")
        text = dump_document(doc)
        assert "host:web-2" not in text
        group = next(a for a in doc["assets"] if a["key"] == "group:web")
        assert group["members"] == ["host:web-1"]
    finally:
        engine.dispose()


def test_small_document_round_trip_keeps_every_field(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    try:
        with write_session(engine) as db:
            import_estate(db, small_document(), source_name="s", actor="t")
        with read_session(engine) as db:
            doc = export_estate(db)
        assert doc["plans"][0]["last_exercised"] == "2026-09-01T12:30:00Z"
        assert doc["plans"][0]["last_reviewed"] == "2026-10-01"
        shop = doc["services"][0]
        assert shop["depends_on"] == ["group:web", {"to": "host:web-2", "kind": "calls", "strength": "soft"}]
        web1 = next(a for a in doc["assets"] if a["key"] == "host:web-1")
        assert web1["depends_on"] == [{"to": "host:web-2", "kind": "calls", "strength": "soft"}]
        assert web1["os"] == {"family": "windows", "name": "Windows Server 2022", "version": "10.0.20348"}
        assert doc["assessments"][0]["staged_rollouts"] is False
        assert doc["updates"][0]["tests"][1] == {"ring": "staging", "status": "pending"}
        before = table_snapshot(engine)
        with write_session(engine) as db:
            report = import_estate(db, doc, source_name="export", actor="t")
        assert report.totals().created == report.totals().updated == 0
        assert table_snapshot(engine) == before
    finally:
        engine.dispose()


def test_format_timestamp():
    from datetime import datetime, timedelta, timezone
    assert format_timestamp(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02"
    assert format_timestamp(datetime(2026, 1, 2, 1, 2, 3, tzinfo=timezone(timedelta(hours=2)))) == \
        "2026-01-01T23:02:03Z"
    assert format_timestamp(datetime(2026, 1, 2, 0, 0, 0, 5, tzinfo=UTC)) == "2026-01-02T00:00:00.000005Z"
    assert format_timestamp(None) is None
