"""Fixtures for the impact engine tests: a readable builder for small estates."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.impact import clear_cache
from inventory.models import (
    Asset,
    ContingencyPlan,
    Dependency,
    Installation,
    PlanLink,
    Product,
    Vendor,
    VendorAlias,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
NOW = datetime.now(timezone.utc)


class Estate:
    """Builds a small estate in one session; ``commit()`` makes it visible to the engine
    (which reads committed data on its own connection)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.db = so.Session(engine, expire_on_commit=False)
        self.vendors: dict[str, Vendor] = {}
        self.products: dict[tuple[str, str], Product] = {}
        self.assets: dict[str, Asset] = {}

    def vendor(self, name: str, cloud_provider: str | None = None, aliases: tuple[str, ...] = ()) -> Vendor:
        if name not in self.vendors:
            v = Vendor(name=name, cloud_provider=cloud_provider)
            self.db.add(v)
            for alias in aliases:
                self.db.add(VendorAlias(vendor=v, alias=alias.lower()))
            self.vendors[name] = v
        return self.vendors[name]

    def product(self, vendor: str, name: str) -> Product:
        key = (vendor, name)
        if key not in self.products:
            p = Product(vendor=self.vendor(vendor), name=name)
            self.db.add(p)
            self.products[key] = p
        return self.products[key]

    def asset(self, key: str, kind: str = "vm", os: str | None = "windows", **fields: Any) -> Asset:
        fields.setdefault("first_seen", T0)
        fields.setdefault("last_seen", NOW)
        fields.setdefault("criticality", "medium")
        fields.setdefault("source", "test")
        a = Asset(natural_key=key, name=fields.pop("name", key), kind=kind, os_family=os, **fields)
        self.db.add(a)
        self.assets[key] = a
        return a

    def service(self, key: str, **fields: Any) -> Asset:
        return self.asset(key, kind="service", os=None, **fields)

    def group(self, key: str, min_up: int, members: list[str], **fields: Any) -> Asset:
        g = self.asset(key, kind="target_group", os=None, min_up=min_up, **fields)
        for m in members:
            self.dep(key, m, kind="member-of")
        return g

    def install(self, asset: str, vendor: str, product: str, version: str | None = None,
                first_seen: datetime = T0) -> None:
        self.db.add(Installation(asset=self.assets[asset], product=self.product(vendor, product),
                                 version=version, first_seen=first_seen, last_seen=NOW))

    def dep(self, dependent: str, dependency: str, kind: str = "runs-on", strength: str = "hard",
            first_seen: datetime = T0) -> None:
        self.db.add(Dependency(dependent=self.assets[dependent], dependency=self.assets[dependency],
                               kind=kind, strength=strength, first_seen=first_seen, last_seen=NOW))

    def plan(self, name: str, *, asset: str | None = None, product: tuple[str, str] | None = None,
             vendor: str | None = None, reviewed_days_ago: float | None = 10,
             exercised_days_ago: float | None = 20, interval: int = 180) -> ContingencyPlan:
        p = ContingencyPlan(
            name=name, review_interval_days=interval,
            last_reviewed=None if reviewed_days_ago is None else NOW - timedelta(days=reviewed_days_ago),
            last_exercised=None if exercised_days_ago is None else NOW - timedelta(days=exercised_days_ago))
        self.db.add(p)
        link = PlanLink(plan=p)
        if asset:
            link.asset = self.assets[asset]
        elif product:
            link.product = self.product(*product)
        else:
            link.vendor = self.vendor(vendor)  # type: ignore[arg-type]
        self.db.add(link)
        return p

    def commit(self) -> "Estate":
        self.db.commit()
        return self

    def close(self) -> None:
        self.db.close()


@pytest.fixture(autouse=True)
def _fresh_graph_cache() -> Iterator[None]:
    # Each test has its own database; don't let graphs of earlier tests pile up.
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def estate(engine: sa.Engine) -> Iterator[Estate]:
    e = Estate(engine)
    yield e
    e.close()


@pytest.fixture
def any_estate(any_db_url: str) -> Iterator[Estate]:
    """The same builder on SQLite and on PostgreSQL."""
    eng = make_engine(any_db_url)
    e = Estate(eng)
    yield e
    e.close()
    eng.dispose()


