"""Keyset pagination of the asset list: every order, both directions, both backends.

Pages are walked forwards to the end and backwards to the start; the rows
must equal the whole filtered set in the documented order exactly once —
including NULLs (which SQLite and PostgreSQL sort differently by default) and
the ranked criticality order.
"""
from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import CRITICALITIES
from inventory.db import make_engine
from inventory.models import Asset
from inventory.services import assets as svc
from inventory.services.keyset import CursorError

N = 137


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def many_url(request, tmp_path_factory, _sqlite_template):  # type: ignore[no-untyped-def]
    """One populated database per backend for the whole module (migrating costs more than the tests)."""
    import shutil
    from contextlib import ExitStack

    from tests.conftest import pg_schema

    stack = ExitStack()
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("keyset") / "planb.sqlite3"
        shutil.copyfile(_sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = stack.enter_context(pg_schema(migrated=True))
    engine = make_engine(url)
    rng = random.Random(7)
    with so.Session(engine) as db:
        for i in range(N):
            db.add(Asset(
                natural_key=f"k:{i}",
                # Duplicate names on purpose: the id must break ties.
                name=f"asset-{rng.randrange(40):02d}",
                kind=rng.choice(["vm", "host", "database", "service"]),
                criticality=rng.choice(CRITICALITIES),
                os_family=rng.choice(["windows", "linux", None]),
                environment=rng.choice(["production", "staging", None]),
                account=rng.choice(["111", "222", "333", None]),
                provider=rng.choice(["aws", "azure"]),
                retired_at=None if rng.random() > 0.1 else sa.func.now()))
        db.commit()
    yield engine
    engine.dispose()
    stack.close()


@pytest.fixture
def many(many_url):  # type: ignore[no-untyped-def]
    """A session whose writes are rolled back after each test."""
    with so.Session(many_url) as db:
        yield db
        db.rollback()


def expected_order(assets: list[Asset], key: str, descending: bool) -> list[int]:
    crit = {c: i for i, c in enumerate(CRITICALITIES)}
    if key == "name":
        ordered = sorted(assets, key=lambda a: (a.name, a.id), reverse=descending)
    elif key == "kind":
        ordered = sorted(assets, key=lambda a: (a.kind, a.name, a.id), reverse=descending)
    elif key == "criticality":
        ranks = sorted({crit[a.criticality] for a in assets}, reverse=descending)
        ordered = [a for r in ranks for a in sorted((a for a in assets if crit[a.criticality] == r),
                                                    key=lambda a: (a.name, a.id))]
    else:
        column = {"os": "os_family", "environment": "environment", "account": "account"}[key]
        known = sorted((a for a in assets if getattr(a, column) is not None),
                       key=lambda a: (getattr(a, column), a.id), reverse=descending)
        unknown = sorted((a for a in assets if getattr(a, column) is None), key=lambda a: a.id,
                         reverse=descending)
        ordered = known + unknown  # NULLs last in both directions
    return [a.id for a in ordered]


@pytest.mark.parametrize("sort", ["name", "-name", "kind", "-kind", "criticality", "-criticality",
                                  "os", "-os", "environment", "-environment", "account", "-account"])
def test_walk_forward_and_back(many, sort):
    filters = svc.AssetFilters(provider="aws")
    assert filters.validate(many) == []
    active = list(many.scalars(sa.select(Asset).where(Asset.provider == "aws", Asset.retired_at.is_(None))))
    key, descending = svc.parse_sort(sort)
    expected = expected_order(active, key, descending)

    pages: list[list[int]] = []
    cursor = None
    while True:
        page = svc.list_assets(many, filters, sort, cursor=cursor, limit=10)
        pages.append([a.id for a in page.rows])
        assert (page.prev_cursor is None) == (len(pages) == 1)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert [i for p in pages for i in p] == expected
    assert all(len(p) == 10 for p in pages[:-1])

    # And back again from the last page, through the "previous" links.
    back: list[list[int]] = [pages[-1]]
    prev = svc.list_assets(many, filters, sort, cursor=cursor, limit=10).prev_cursor if len(pages) > 1 else None
    while prev:
        page = svc.list_assets(many, filters, sort, cursor=prev, limit=10)
        back.append([a.id for a in page.rows])
        prev = page.prev_cursor
    assert list(reversed(back)) == pages


def test_count_is_capped(many):
    filters = svc.AssetFilters(retired="all")
    assert svc.count_assets(many, filters) == (N, False)
    assert svc.count_assets(many, filters, cap=50) == (50, True)


@pytest.mark.parametrize("cursor", ["x", "WyJhZnRlciIsIDk5LCBbXV0", "WyJzaWRld2F5cyIsMCxbMV1d"])
def test_foreign_cursors_are_refused(many, cursor):
    with pytest.raises(CursorError):
        svc.list_assets(many, svc.AssetFilters(), "name", cursor=cursor)


def test_search_escapes_like_wildcards(many):
    many.add(Asset(natural_key="k:pct", name="100%_sure", kind="vm"))
    many.flush()
    page = svc.list_assets(many, svc.AssetFilters(q="0%_"), "name")
    assert [a.name for a in page.rows] == ["100%_sure"]
    page = svc.list_assets(many, svc.AssetFilters(q="%"), "name")
    assert [a.name for a in page.rows] == ["100%_sure"]
