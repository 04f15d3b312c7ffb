"""Large answers written in pieces: the streamed JSON, the dashboard's CSV and incident
snapshots say exactly what the Python objects (``to_dict()``, ``Hit``) say."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Iterator

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.impact import blast_radius
from inventory.models import IncidentAsset
from inventory.services import blast_view
from inventory.services import incidents as svc
from inventory.web.impact import csv_chunks
from tests.conftest import bearer
from tests.impact.conftest import Estate
from tests.impact.test_api import api_estate

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
DEMO_SCOPES = [
    {"vendor": "CrowdStrike"},
    {"vendor": "CrowdStrike", "products": ["Falcon Sensor"], "version": ">=7.11", "os": ["windows"]},
    {"vendor": "Microsoft", "regions": ["centralus"]},
]


@pytest.fixture
def demo_db(demo_url: str) -> Iterator[so.Session]:
    engine = make_engine(demo_url)
    with so.Session(engine) as db:
        yield db
    engine.dispose()


@pytest.mark.parametrize("scope", DEMO_SCOPES)
def test_streamed_json_is_the_answer(demo_db: so.Session, scope: dict) -> None:  # type: ignore[type-arg]
    result = blast_radius(demo_db, scope, now=NOW)
    assert result.hit_idx.size > 10
    for page in ({}, {"limit": 7}, {"limit": 5, "offset": 3, "seeds_limit": 2}, {"offset": 2}):
        pieces = list(result.iter_json(chunk=4, **page))      # several chunks of hits and seeds
        assert len(pieces) > 4
        assert json.loads("".join(pieces)) == json.loads(json.dumps(result.to_dict(**page)))
    # Each hit's text is its dictionary, whichever chunk it is written in.
    idx = result.ordered_idx
    context = result.hit_context(idx)
    texts = result.hits_json(idx[:9], context) + result.hits_json(idx[9:], context)
    assert [json.loads(t) for t in texts] == [h.to_dict() for h in result.hits]


def test_streamed_json_under_a_what_if_and_as_of(demo_db: so.Session) -> None:
    result = blast_radius(demo_db, {"vendor": "CrowdStrike"}, as_of="2026-01-01T00:00:00Z", now=NOW,
                          what_if={"add_plans": [{"name": "Paper", "vendor": "CrowdStrike"}]})
    assert json.loads("".join(result.iter_json(chunk=3))) == json.loads(json.dumps(result.to_dict()))


@pytest.mark.parametrize("scope", DEMO_SCOPES)
def test_streamed_csv_is_the_dashboard_csv(demo_db: so.Session, scope: dict) -> None:  # type: ignore[type-arg]
    result = blast_radius(demo_db, scope, now=NOW)
    pieces = list(csv_chunks(result, result.version_unknown(), chunk=5))
    assert len(pieces) > 3
    assert "".join(pieces) == blast_view.to_csv(result.to_dict())


def test_the_api_streams_long_answers(client, read_token, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    api_estate(estate)
    whole = client.get("/api/v1/impact?vendor=CrowdStrike", headers=bearer(read_token))
    # Streamed: written as it goes, so no length is known up front; a short page is not.
    assert whole.status_code == 200 and whole.mimetype == "application/json"
    assert "Content-Length" not in whole.headers
    page = client.get("/api/v1/impact?vendor=CrowdStrike&limit=2", headers=bearer(read_token))
    assert "Content-Length" in page.headers
    body = whole.get_json()
    expected = blast_radius(estate.db, {"vendor": "CrowdStrike"}).to_dict()
    for answer in (body, expected):
        answer.pop("computed_at")
    assert body == json.loads(json.dumps(expected))
    assert [h["natural_key"] for h in page.get_json()["hits"]] == [h["natural_key"] for h in body["hits"][:2]]


def test_an_incident_snapshot_holds_each_hit_as_the_engine_built_it(any_estate: Estate) -> None:
    e = api_estate(any_estate)
    scope = {"vendor": "CrowdStrike"}
    result = blast_radius(e.db, scope)
    incident = svc.declare_incident(e.db, scope, "Falcon", "alice", result=result)
    e.db.commit()
    rows = e.db.scalars(sa.select(IncidentAsset).where(IncidentAsset.incident_id == incident.id)
                        .order_by(IncidentAsset.id)).all()
    hits = result.hits
    assert len(rows) == len(hits) == 5
    for row, hit in zip(rows, hits):
        assert (row.asset_id, row.natural_key, row.name, row.kind, row.status, row.hops, row.criticality) == \
            (hit.asset_id, hit.natural_key, hit.name, hit.kind, hit.status, hit.hops, hit.criticality)
        assert row.details == {"seed": hit.seed, "path": hit.path, "plans": hit.plans, "gap": hit.gap,
                               "services": hit.services, "provider": hit.provider, "account": hit.account,
                               "region": hit.region, "os_family": hit.os_family, "environment": hit.environment,
                               "owner": hit.owner}
    assert incident.summary["seed_count"] == 3 and incident.summary["seeds"] == ["lin-1", "win-1", "win-2"]
