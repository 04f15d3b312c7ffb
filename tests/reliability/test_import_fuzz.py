"""Property test of the estate import with hypothesis: random and mutated documents either
import, or raise the importer's EstateError naming where the problem is -- never any other
exception -- and an error leaves the database exactly as it was."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.choices import ASSET_KINDS, CRITICALITIES, DEPENDENCY_KINDS, OS_FAMILIES, PROVIDERS, STRENGTHS
from inventory.db import make_engine, write_session
from inventory.estate.importer import EstateError, import_estate
from inventory.services.backup import data_tables
from tests.reliability.helpers import SMALL_ESTATE

# Text that stresses storage and validation: any unicode (surrogates and NUL included).
TEXT = st.text(max_size=40)
NAMES = st.one_of(st.sampled_from(["vm:0", "vm:1", "service:checkin", "CrowdStrike", "Falcon Sensor"]),
                  st.text(min_size=1, max_size=40))
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
              st.floats(allow_nan=True, allow_infinity=True), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def plausible_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents close to valid ones, so the importer gets past validation often."""
    n = draw(st.integers(0, 4))
    keys = [f"h:{i}" for i in range(n)]
    assets = []
    for key in keys:
        asset: dict[str, Any] = {"key": key, "name": draw(NAMES), "kind": draw(st.sampled_from(ASSET_KINDS))}
        if draw(st.booleans()):
            asset["provider"] = draw(st.sampled_from(PROVIDERS))
        if draw(st.booleans()):
            asset["os"] = {"family": draw(st.sampled_from(OS_FAMILIES))}
        if draw(st.booleans()):
            asset["criticality"] = draw(st.sampled_from(CRITICALITIES))
        if draw(st.booleans()):
            asset["tags"] = draw(st.dictionaries(st.text(min_size=1, max_size=10),
                                                 st.one_of(st.none(), st.booleans(), st.integers(), TEXT,
                                                           st.floats()), max_size=3))
        others = [k for k in keys if k != key]
        if draw(st.booleans()):
            # Mostly existing keys; sometimes a dangling one or the asset itself (refused).
            target = draw(st.one_of(st.sampled_from(others + ["vm:0", "vm:1"]),
                                    st.sampled_from(["nowhere", key])))
            asset["depends_on"] = [{"to": target,
                                    "kind": draw(st.sampled_from(DEPENDENCY_KINDS)),
                                    "strength": draw(st.sampled_from(STRENGTHS))}]
        if draw(st.booleans()):
            asset["software"] = [{"vendor": "CrowdStrike", "product": "Falcon Sensor",
                                  "version": draw(st.text(min_size=1, max_size=100))}]
        assets.append(asset)
    document: dict[str, Any] = {"version": 1, "assets": assets}
    if draw(st.booleans()):
        document["vendors"] = [{"name": draw(NAMES), "products": [{"name": draw(NAMES)}],
                                "aliases": draw(st.lists(st.text(min_size=1, max_size=20), max_size=2))}]
    if draw(st.booleans()):
        document["plans"] = [{"name": draw(NAMES),
                              "rto_minutes": draw(st.one_of(st.integers(0, 10_000), st.integers(-5, 2 ** 64))),
                              "runbook_url": draw(st.sampled_from(["https://x.example/r", "javascript:x",
                                                                   "HTTPS://x.example/a b"])),
                              "covers": {"assets": draw(st.lists(st.sampled_from(keys + ["vm:0"]),
                                                                 max_size=2, unique=True))}}]
    if draw(st.booleans()):
        document["updates"] = [{"vendor": "CrowdStrike", "product": "Falcon Sensor",
                                "version": draw(st.text(min_size=1, max_size=100)),
                                "tests": [{"ring": draw(st.sampled_from(["canary", "staging", "prod"])),
                                           "status": draw(st.sampled_from(["passed", "failed", "ok"]))}]}]
    return document


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    base = draw(st.one_of(plausible_documents(), st.just(copy.deepcopy(SMALL_ESTATE))))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(base) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = base
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "delete", "unknown-field"]))
        if action == "replace":
            parent[path[-1]] = draw(JSON)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(TEXT)] = draw(JSON)
    return base


def _state(session: so.Session) -> dict[str, list[str]]:
    """Every row as this session sees it (flushed but uncommitted changes included)."""
    conn = session.connection()
    return {t.name: [repr(tuple(r)) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in data_tables()}


def _check(session: so.Session, document: Any) -> str:
    before = _state(session)
    outcome = "imported"
    try:
        with session.begin_nested():
            import_estate(session, document, source_name="fuzz", actor="fuzz")
    except EstateError as exc:
        outcome = "refused"
        assert exc.problems, "an EstateError must say what is wrong"
        for problem in exc.problems:
            assert problem.message
            # Every problem names where it is, except those about the document as a whole.
            assert problem.path or problem.message.startswith(("expected a mapping", "unknown", "missing")) \
                or "version" in problem.message or problem.path == (), problem
        assert _state(session) == before, "a refused document changed the database"
    session.rollback()  # keep each example independent: nothing is ever committed
    return outcome


def _seeded_session(url: str) -> tuple[sa.Engine, so.Session]:
    """A session on a database holding SMALL_ESTATE, so references can resolve."""
    engine = make_engine(url)
    with write_session(engine) as db:
        import_estate(db, copy.deepcopy(SMALL_ESTATE), source_name="seed", actor="test")
    return engine, so.Session(bind=engine)


@pytest.fixture
def fuzz_session(sqlite_url: str):  # type: ignore[no-untyped-def]
    engine, session = _seeded_session(sqlite_url)
    yield session
    session.rollback()
    session.close()
    engine.dispose()


_SETTINGS = settings(max_examples=100, deadline=None, database=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_SETTINGS
@given(document=st.one_of(JSON, mutated_documents(), plausible_documents()))
def test_any_document_imports_or_is_refused_cleanly_sqlite(fuzz_session, document):
    _check(fuzz_session, document)


@pytest.fixture
def pg_fuzz_session(pg_url: str):  # type: ignore[no-untyped-def]
    engine, session = _seeded_session(pg_url)
    yield session
    session.rollback()
    session.close()
    engine.dispose()


@pytest.mark.postgres
@settings(max_examples=40, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=st.one_of(mutated_documents(), plausible_documents()))
def test_any_document_imports_or_is_refused_cleanly_postgres(pg_fuzz_session, document):
    _check(pg_fuzz_session, document)


def test_the_fuzzer_reaches_both_outcomes(sqlite_url):
    """Guard against a fuzzer that only ever produces rejects (and so tests little): the
    plausible documents import often enough to exercise the writing half of the importer."""
    engine, session = _seeded_session(sqlite_url)
    outcomes: list[str] = []

    @settings(max_examples=40, deadline=None, database=None, derandomize=True)
    @given(document=plausible_documents())
    def collect(document):  # type: ignore[no-untyped-def]
        outcomes.append(_check(session, document))

    try:
        collect()
        assert _check(session, {"version": 1, "assets": [{"key": "k"}]}) == "refused"
    finally:
        session.close()
        engine.dispose()
    assert outcomes.count("imported") >= 8 and outcomes.count("refused") >= 3, (len(outcomes), outcomes)
