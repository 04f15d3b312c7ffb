"""Readable helpers for the reliability tests: a small estate touching most tables,
a concurrent writer whose transactions can be checked for atomicity, and
database-level checks (row counts, SQLite integrity)."""
from __future__ import annotations

import threading
from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine, utcnow, write_session
from inventory.models import (
    ApiToken,
    Asset,
    AuditEvent,
    CollectionRun,
    ContingencyPlan,
    Dependency,
    Incident,
    IncidentAsset,
    Installation,
    PlanEvent,
    PlanLink,
    Product,
    Scenario,
    ScopeResult,
    ScopeState,
    UpdateTest,
    User,
    Vendor,
    VendorAlias,
    VendorAssessment,
    VendorUpdate,
)
from inventory.services.backup import data_tables

WRITER_ACTION = "writer-test"


def populate(db: so.Session, tag: str = "a", assets: int = 6) -> None:
    """A connected little estate: every relationship kind, plus users, tokens and history."""
    vendor = Vendor(name=f"Vendor {tag}", tier="critical", website="https://vendor.example")
    db.add(vendor)
    db.flush()
    product = Product(vendor_id=vendor.id, name=f"Agent {tag}", kind="agent", vendor_pushes_updates=True)
    db.add(product)
    db.flush()
    db.add(VendorAlias(vendor_id=vendor.id, product_id=product.id, alias=f"agent-{tag}"))
    made = []
    for i in range(assets):
        asset = Asset(natural_key=f"test:{tag}:{i}", name=f"host {tag}{i} ünïcode", kind="vm",
                      criticality="high", tags={"team": "ops", "n": i})
        db.add(asset)
        made.append(asset)
    service = Asset(natural_key=f"test:{tag}:svc", name=f"Service {tag}", kind="service", criticality="critical")
    db.add(service)
    db.flush()
    for asset in made:
        db.add(Installation(asset_id=asset.id, product_id=product.id, version="7.11.0"))
        db.add(Dependency(dependent_id=service.id, dependency_id=asset.id, kind="runs-on", strength="hard"))
    plan = ContingencyPlan(name=f"Plan {tag}", owner="ops", rto_minutes=60, steps="1. breathe",
                           last_reviewed=utcnow() - timedelta(days=3))
    db.add(plan)
    db.flush()
    db.add(PlanLink(plan_id=plan.id, asset_id=service.id))
    db.add(PlanEvent(plan_id=plan.id, kind="exercise", outcome="passed", by="ops"))
    update = VendorUpdate(product_id=product.id, version="7.12.0", released_on=date(2024, 7, 19), kind="content")
    db.add(update)
    db.flush()
    db.add(UpdateTest(update_id=update.id, ring="canary", status="passed"))
    db.add(VendorAssessment(vendor_id=vendor.id, assessed_on=date(2024, 1, 1), score_security=3,
                            certifications=[{"name": "ISO 27001", "expires": "2026-01-01"}], findings=[]))
    run = CollectionRun(collector="test", scope=f"scope-{tag}", status="succeeded")
    db.add(run)
    db.flush()
    db.add(ScopeResult(run_id=run.id, scope_key=f"scope-{tag}", status="succeeded"))
    db.add(ScopeState(scope_key=f"scope-{tag}", collector="test", run_id=run.id, status="succeeded",
                      last_success_at=utcnow()))
    db.add(Scenario(name=f"Scenario {tag}", scope={"vendor": vendor.name}))
    incident = Incident(title=f"Incident {tag}", scope={"vendor": vendor.name}, summary={"down": 1})
    db.add(incident)
    db.flush()
    db.add(IncidentAsset(incident_id=incident.id, asset_id=service.id, natural_key=service.natural_key,
                         name=service.name, kind="service", status="down", criticality="critical"))
    user = User(username=f"user-{tag}", password_hash="scrypt:fake", role="editor")
    db.add(user)
    db.flush()
    db.add(ApiToken(name=f"token-{tag}", prefix="planb_xxxxxx", token_hash=f"{tag}" * 8, role="read",
                    created_by_id=user.id))
    db.add(AuditEvent(actor="test", action="create", entity_type="estate", summary=f"populated {tag}",
                      after={"tag": tag}))
    db.flush()


def counts(url_or_engine: str | sa.Engine) -> dict[str, int]:
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        names = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            return {t.name: conn.scalar(sa.select(sa.func.count()).select_from(t)) or 0
                    for t in data_tables() if t.name in names}
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def sqlite_checks(path: Path | str) -> tuple[str, list]:
    import sqlite3
    conn = sqlite3.connect(str(path))
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        return integrity, fk
    finally:
        conn.close()


class PairWriter(threading.Thread):
    """Writes (asset + installation + audit event) per transaction until stopped.

    A consistent copy of the database always holds as many writer assets as
    writer audit events: a torn copy or a partial transaction would not.
    """

    def __init__(self, url: str, product_id: int, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.engine = make_engine(url)
        self.product_id = product_id
        self.pause = pause
        self.stop = threading.Event()
        self.written = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        import time
        try:
            while not self.stop.is_set():
                n = self.written
                with write_session(self.engine) as db:
                    asset = Asset(natural_key=f"writer:{n}", name=f"writer {n}", kind="vm")
                    db.add(asset)
                    db.flush()
                    db.add(Installation(asset_id=asset.id, product_id=self.product_id, version="1"))
                    db.add(AuditEvent(actor="writer", action=WRITER_ACTION, entity_type="asset",
                                      entity_id=asset.id))
                self.written += 1
                if self.pause:
                    time.sleep(self.pause)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.engine.dispose()

    def finish(self) -> int:
        self.stop.set()
        self.join(30)
        assert not self.errors, self.errors
        return self.written


def writer_pairs(url: str) -> tuple[int, int]:
    """(writer assets, writer audit events) in the database at ``url``."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assets = conn.scalar(sa.select(sa.func.count(Asset.id)).where(Asset.natural_key.like("writer:%")))
            events = conn.scalar(sa.select(sa.func.count(AuditEvent.id))
                                 .where(AuditEvent.action == WRITER_ACTION))
            return assets or 0, events or 0
    finally:
        engine.dispose()


def first_product_id(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.scalar(sa.select(sa.func.min(Product.id)))
    finally:
        engine.dispose()


def populate_url(url: str, tag: str = "a", assets: int = 6) -> None:
    engine = make_engine(url)
    try:
        with write_session(engine) as db:
            populate(db, tag, assets)
    finally:
        engine.dispose()


def fingerprint(url: str) -> dict[str, list[str]]:
    """Every row of every Plan B table (by primary key): equal fingerprints, equal data."""
    engine = make_engine(url)
    try:
        names = set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            return {t.name: [repr(tuple(r)) for r in conn.execute(
                        sa.select(t).order_by(*t.primary_key.columns))]
                    for t in data_tables() if t.name in names}
    finally:
        engine.dispose()


SMALL_ESTATE = {
    "version": 1,
    "vendors": [{"name": "CrowdStrike", "tier": "critical", "aliases": ["CrowdStrike, Inc."],
                 "products": [{"name": "Falcon Sensor", "kind": "agent", "vendor_pushes_updates": True}]}],
    "assets": [
        {"key": f"vm:{i}", "name": f"vm {i}", "kind": "vm", "provider": "aws", "region": "eu-west-1",
         "os": {"family": "windows"}, "criticality": "high",
         "software": [{"vendor": "CrowdStrike", "product": "Falcon Sensor", "version": "7.11"}]}
        for i in range(4)
    ],
    "services": [{"key": "service:checkin", "name": "Check-in", "criticality": "critical",
                  "depends_on": ["vm:0", "vm:1"]}],
    "plans": [{"name": "Paper boarding passes", "owner": "ops", "rto_minutes": 30,
               "covers": {"assets": ["service:checkin"]}}],
}
