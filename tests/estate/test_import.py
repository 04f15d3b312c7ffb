"""Importing estate documents: what is created, idempotence, merge semantics, transactions (SQLite + PostgreSQL)."""
from __future__ import annotations

import copy

import pytest
import sqlalchemy as sa

from inventory.db import make_engine, read_session, write_session
from inventory.estate.demo import load_demo
from inventory.estate.importer import EstateError, import_estate
from inventory.models import (
    Asset,
    AuditEvent,
    ContingencyPlan,
    Dependency,
    Installation,
    PlanLink,
    UpdateTest,
    Vendor,
    VendorAlias,
    VendorAssessment,
)
from tests.estate.conftest import small_document, table_snapshot


@pytest.fixture
def engine_any(any_db_url):
    engine = make_engine(any_db_url)
    yield engine
    engine.dispose()


def _import(engine, document, source="estate.yaml"):
    with write_session(engine) as db:
        return import_estate(db, copy.deepcopy(document), source_name=source, actor="tester")


def test_import_creates_every_kind_of_entity(engine_any):
    report = _import(engine_any, small_document())
    created = {e: c.created for e, c in report.counts.items()}
    assert created == {"vendors": 2, "products": 2, "aliases": 2, "assets": 4, "installations": 2,
                       "dependencies": 5, "plans": 1, "plan_links": 3, "updates": 1, "update_tests": 2,
                       "assessments": 1}
    with read_session(engine_any) as db:
        web1 = db.scalar(sa.select(Asset).where(Asset.natural_key == "host:web-1"))
        assert (web1.kind, web1.provider, web1.os_family, web1.os_name, web1.criticality, web1.tags,
                web1.update_ring, web1.source, web1.source_scope) == (
            "host", "on_prem", "windows", "Windows Server 2022", "high", {"app": "web"}, "canary",
            "import", None)
        shop = db.scalar(sa.select(Asset).where(Asset.natural_key == "service:shop"))
        assert shop.kind == "service" and shop.criticality == "critical"
        group = db.scalar(sa.select(Asset).where(Asset.natural_key == "group:web"))
        assert group.min_up == 1
        keys = {a.id: a.natural_key for a in db.scalars(sa.select(Asset))}
        edges = {(keys[d.dependent_id], keys[d.dependency_id], d.kind, d.strength)
                 for d in db.scalars(sa.select(Dependency))}
        assert edges == {("group:web", "host:web-1", "member-of", "hard"),
                         ("group:web", "host:web-2", "member-of", "hard"),
                         ("service:shop", "group:web", "runs-on", "hard"),
                         ("service:shop", "host:web-2", "calls", "soft"),
                         ("host:web-1", "host:web-2", "calls", "soft")}
        versions = {(i.asset.natural_key, i.product.name): i.version for i in db.scalars(sa.select(Installation))}
        assert versions[("host:web-1", "Falcon Sensor")] == "7.11.18110.0"
        aliases = {(a.alias, a.vendor.name, a.product.name if a.product else None)
                   for a in db.scalars(sa.select(VendorAlias))}
        assert aliases == {("crowdstrike, inc.", "CrowdStrike", None),
                           ("falcon-sensor", "CrowdStrike", "Falcon Sensor")}
        assert db.scalar(sa.select(Vendor.cloud_provider).where(Vendor.name == "Microsoft")) == "azure"
        plan = db.scalar(sa.select(ContingencyPlan))
        assert plan.last_reviewed.isoformat() == "2026-10-01T00:00:00+00:00"
        assert plan.last_exercised.isoformat() == "2026-09-01T12:30:00+00:00"
        assert plan.steps == "1. a\n2. b" and plan.review_interval_days == 90
        assert db.scalar(sa.select(sa.func.count()).select_from(PlanLink)) == 3
        test = db.scalar(sa.select(UpdateTest).where(UpdateTest.ring == "canary"))
        assert test.status == "passed" and test.tested_at.isoformat() == "2024-03-06T10:00:00+00:00"
        assessment = db.scalar(sa.select(VendorAssessment))
        assert (assessment.score_security, assessment.score_update_practices, assessment.score_resilience,
                assessment.staged_rollouts) == (4, 2, None, False)
        assert assessment.findings == [{"title": "x", "severity": "high", "status": "open"}]


def test_second_import_changes_nothing_and_issues_no_update(engine_any):
    with write_session(engine_any) as db:
        load_demo(db, actor="tester")
    before = table_snapshot(engine_any)
    statements: list[str] = []

    def capture(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement.strip().split()[0].upper() + " " + statement)

    sa.event.listen(engine_any, "before_cursor_execute", capture)
    try:
        with write_session(engine_any) as db:
            report = load_demo(db, actor="tester")
    finally:
        sa.event.remove(engine_any, "before_cursor_execute", capture)
    totals = report.totals()
    assert totals.created == totals.updated == 0 and totals.unchanged > 1000
    writes = [s for s in statements if s.split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert len(writes) == 1 and "audit_events" in writes[0]
    # Every row, including every updated_at, is exactly as before.
    assert table_snapshot(engine_any) == before
    with read_session(engine_any) as db:
        events = list(db.scalars(sa.select(AuditEvent).where(AuditEvent.action == "import")
                                 .order_by(AuditEvent.id)))
        assert len(events) == 2
        assert events[1].actor == "tester" and "demo_estate.yaml" in events[1].summary
        assert events[1].after["totals"]["unchanged"] == totals.unchanged
        assert events[0].after["counts"]["assets"]["created"] > 250


def test_changes_are_counted_and_absent_fields_left_alone(engine_any):
    _import(engine_any, small_document())
    change = {"version": 1,
              "assets": [{"key": "host:web-1", "name": "web-1", "kind": "host", "criticality": "critical",
                          "software": [{"vendor": "CrowdStrike", "product": "Falcon Sensor",
                                        "version": "7.16.18605.0"}]}],
              "dependencies": [{"from": "host:web-1", "to": "host:web-2", "kind": "calls", "strength": "hard"}],
              "plans": [{"name": "Shop fallback", "last_exercised": "2026-11-01"}]}
    with read_session(engine_any) as db:
        stamp = db.scalar(sa.select(Asset.updated_at).where(Asset.natural_key == "host:web-2"))
    report = _import(engine_any, change)
    assert (report.counts["assets"].updated, report.counts["assets"].unchanged) == (1, 0)
    assert report.counts["installations"].updated == 1
    assert report.counts["dependencies"].updated == 1
    assert report.counts["plans"].updated == 1
    with read_session(engine_any) as db:
        web1 = db.scalar(sa.select(Asset).where(Asset.natural_key == "host:web-1"))
        # Given fields changed; fields the file left out (tags, OS, ring) kept their values.
        assert web1.criticality == "critical" and web1.tags == {"app": "web"} and web1.os_family == "windows"
        assert web1.update_ring == "canary"
        plan = db.scalar(sa.select(ContingencyPlan))
        assert plan.last_exercised.date().isoformat() == "2026-11-01" and plan.owner == "Ops"
        assert db.scalar(sa.select(Asset.updated_at).where(Asset.natural_key == "host:web-2")) == stamp
        # Imports never delete: the other installation and all links are still there.
        assert db.scalar(sa.select(sa.func.count()).select_from(Installation)) == 2
        assert db.scalar(sa.select(sa.func.count()).select_from(PlanLink)) == 3


def test_import_adds_context_to_a_collected_asset_without_taking_it_over(engine_any):
    key = "aws:ec2:111111111111:us-east-1:i-0abc"
    with write_session(engine_any) as db:
        db.add(Asset(natural_key=key, name="i-0abc", kind="vm", provider="aws", source="aws",
                     source_scope="aws:111111111111:us-east-1:ec2", tags={}, attributes={"ami": "ami-1"},
                     provenance={}))
    report = _import(engine_any, {"version": 1, "assets": [
        {"key": key, "name": "checkin-01", "kind": "vm", "criticality": "critical", "owner": "Airport"}]})
    assert report.counts["assets"].updated == 1
    with read_session(engine_any) as db:
        asset = db.scalar(sa.select(Asset).where(Asset.natural_key == key))
        assert (asset.name, asset.criticality, asset.owner) == ("checkin-01", "critical", "Airport")
        # Still the collector's asset: a later successful run over its scope may retire it.
        assert (asset.source, asset.source_scope, asset.attributes) == (
            "aws", "aws:111111111111:us-east-1:ec2", {"ami": "ami-1"})


def test_aliases_move_and_cloud_providers_hand_over(engine_any):
    _import(engine_any, small_document())
    doc = {"version": 1, "vendors": [
        {"name": "Microsoft", "cloud_provider": "aws", "aliases": ["CrowdStrike, Inc."]},
        {"name": "Amazon Web Services", "cloud_provider": "azure"}]}
    report = _import(engine_any, doc)
    assert report.counts["aliases"].updated == 1 and report.counts["vendors"].created == 1
    with read_session(engine_any) as db:
        clouds = dict(db.execute(sa.select(Vendor.name, Vendor.cloud_provider)).all())
        assert clouds["Microsoft"] == "aws" and clouds["Amazon Web Services"] == "azure"
        alias = db.scalar(sa.select(VendorAlias).where(VendorAlias.alias == "crowdstrike, inc."))
        assert alias.vendor.name == "Microsoft"


def test_cloud_provider_held_by_another_vendor_is_refused(engine_any):
    _import(engine_any, small_document())
    with pytest.raises(EstateError) as info:
        _import(engine_any, {"version": 1, "vendors": [{"name": "Contoso Cloud", "cloud_provider": "azure"}]})
    assert info.value.field == "vendors[0].cloud_provider"
    assert "already belongs to vendor 'Microsoft'" in str(info.value)


def test_invalid_document_changes_nothing(engine_any):
    _import(engine_any, small_document())
    before = table_snapshot(engine_any, exclude=("inventory_version",))
    doc = small_document()
    doc["assets"].append({"key": "host:web-3", "name": "web-3", "kind": "host",
                          "depends_on": ["host:does-not-exist"]})
    with pytest.raises(EstateError) as info:
        _import(engine_any, doc)
    assert info.value.field == "assets[3].depends_on[0]"
    assert 'assets[3] (key "host:web-3")' in str(info.value)
    assert table_snapshot(engine_any, exclude=("inventory_version",)) == before


def test_a_failure_while_writing_rolls_everything_back(engine_any, monkeypatch):
    """Validation cannot foresee every database error; the transaction still makes it all-or-nothing."""
    from inventory.estate import importer
    before = table_snapshot(engine_any, exclude=("inventory_version",))

    def explode(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    monkeypatch.setattr(importer, "_apply_assessments", explode)
    with pytest.raises(RuntimeError):
        _import(engine_any, small_document())
    assert table_snapshot(engine_any, exclude=("inventory_version",)) == before


def test_product_level_alias_and_pattern(engine_any):
    doc = {"version": 1, "vendors": [{"name": "Okta", "patterns": [r"^okta\b"],
                                      "products": [{"name": "Okta Verify", "patterns": [r"okta ?verify"],
                                                    "aliases": ["Okta  VERIFY  App"]}]}]}
    _import(engine_any, doc)
    with read_session(engine_any) as db:
        rows = {(a.alias, a.is_pattern, a.product.name if a.product else None)
                for a in db.scalars(sa.select(VendorAlias))}
    # Exact aliases are normalised; patterns are stored as written.
    assert rows == {(r"^okta\b", True, None), (r"okta ?verify", True, "Okta Verify"),
                    ("okta verify app", False, "Okta Verify")}
    assert _import(engine_any, doc).counts["aliases"].unchanged == 3


def test_aliases_are_normalised_like_the_collectors_match_them():
    from collectors.attribution import normalise
    from inventory.estate.importer import normalize_alias
    for raw in ("CrowdStrike, Inc.", "  Microsoft   Corporation ", "Ｍｉｃｒｏｓｏｆｔ", "Amazon.com\tServices"):
        assert normalize_alias(raw) == normalise(raw)
