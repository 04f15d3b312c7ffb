"""What people write in an estate file outranks what a collector later says."""
from __future__ import annotations

import sqlalchemy as sa

from collectors.base import AssetRecord, ScopeBatch
from collectors.ingest import run_collection
from inventory.db import make_engine, read_session, write_session
from inventory.estate.importer import import_estate
from inventory.models import Asset

KEY = "aws:ec2:111122223333:us-east-1:i-0001"
SCOPE = "aws:111122223333:us-east-1:ec2"


class OneScope:
    name = "aws"

    def __init__(self, owner: str, criticality: str) -> None:
        self.record = AssetRecord(natural_key=KEY, name="web-1", kind="vm", provider="aws",
                                  account="111122223333", region="us-east-1", cloud_instance_id="i-0001",
                                  owner=owner, criticality=criticality)

    def describe_scope(self) -> str:
        return "one instance"

    def collect(self, progress):  # type: ignore[no-untyped-def]
        yield ScopeBatch(SCOPE, [self.record])


class _Row:
    def __init__(self, asset: Asset) -> None:
        self.owner, self.criticality = asset.owner, asset.criticality
        self.source, self.provenance = asset.source, dict(asset.provenance or {})


def _asset(engine) -> _Row:  # type: ignore[no-untyped-def]
    with read_session(engine) as db:
        return _Row(db.scalar(sa.select(Asset).where(Asset.natural_key == KEY)))


def test_estate_owner_survives_later_collector_runs(any_db_url):
    engine = make_engine(any_db_url)
    try:
        run_collection(engine, OneScope(owner="tag-owner", criticality="low"))
        assert _asset(engine).owner == "tag-owner"

        doc = {"version": 1, "assets": [{"key": KEY, "name": "web-1", "kind": "vm",
                                          "owner": "Airport Operations", "criticality": "critical"}]}
        with write_session(engine) as db:
            report = import_estate(db, doc, source_name="curated.yaml", actor="test")
        assert report.counts["assets"].updated == 1
        with write_session(engine) as db:  # idempotent: the claim is recorded once
            report = import_estate(db, doc, source_name="curated.yaml", actor="test")
        assert report.counts["assets"].unchanged == 1

        run_collection(engine, OneScope(owner="another-tag-owner", criticality="medium"))
        asset = _asset(engine)
        assert (asset.owner, asset.criticality) == ("Airport Operations", "critical")
        assert asset.source == "aws"  # still the collector's asset: its scope can retire it
        assert asset.provenance["owner"]["source"] == "import"
    finally:
        engine.dispose()
