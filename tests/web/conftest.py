"""Fixtures for the dashboard tests: the small estate loaded into the app's database."""
from __future__ import annotations

import pytest

from inventory.app_db import get_session
from tests.web.estate import SmallEstate, build_small_estate


@pytest.fixture
def estate(app) -> SmallEstate:  # type: ignore[no-untyped-def]
    with app.app_context():
        db = get_session()
        built = build_small_estate(db)
        db.commit()
    return built
