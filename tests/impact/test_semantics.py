"""Table-driven tests of the propagation semantics on small estates.

Every case names its assets, edges (dependent, dependency, strength), groups and
seeds (assets running the vendor's agent); the expectation lists every hit asset
with its status and hop count — any asset not listed must not be hit.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from inventory.impact import blast_radius
from tests.impact.conftest import NOW, Estate

CASES: dict[str, dict[str, Any]] = {
    "chain": dict(
        edges=[("b", "a", "hard"), ("c", "b", "hard")], seeds=["a"],
        expect={"a": ("down", 0), "b": ("down", 1), "c": ("down", 2)}),
    "diamond": dict(
        edges=[("b", "a", "hard"), ("c", "a", "hard"), ("d", "b", "hard"), ("d", "c", "hard")], seeds=["a"],
        expect={"a": ("down", 0), "b": ("down", 1), "c": ("down", 1), "d": ("down", 2)}),
    "cycle attached to a seed": dict(
        edges=[("b", "a", "hard"), ("c", "b", "hard"), ("b", "c", "hard")], seeds=["a"],
        expect={"a": ("down", 0), "b": ("down", 1), "c": ("down", 2)}),
    "cycle away from the seeds": dict(
        edges=[("x", "y", "hard"), ("y", "x", "hard"), ("b", "a", "hard")], seeds=["a"],
        expect={"a": ("down", 0), "b": ("down", 1)}),
    "self-reinforcing cycle of soft edges": dict(
        edges=[("b", "a", "soft"), ("c", "b", "soft"), ("b", "c", "soft")], seeds=["a"],
        expect={"a": ("down", 0), "b": ("degraded", 1), "c": ("degraded", 2)}),
    "soft edge degrades, and degradation travels on": dict(
        edges=[("b", "a", "soft"), ("c", "b", "hard"), ("d", "c", "soft")], seeds=["a"],
        expect={"a": ("down", 0), "b": ("degraded", 1), "c": ("degraded", 2), "d": ("degraded", 3)}),
    "a hard path down beats a shorter soft path": dict(
        edges=[("b", "a", "hard"), ("c", "b", "hard"), ("c", "a", "soft")], seeds=["a"],
        expect={"a": ("down", 0), "b": ("down", 1), "c": ("down", 2)}),
    "group above min_up is degraded": dict(
        groups={"g": (1, ["m1", "m2", "m3"])}, edges=[("s", "g", "hard")], seeds=["m1"],
        expect={"m1": ("down", 0), "g": ("degraded", 1), "s": ("degraded", 2)}),
    "group at min_up is degraded": dict(
        groups={"g": (2, ["m1", "m2", "m3"])}, edges=[("s", "g", "hard")], seeds=["m1"],
        expect={"m1": ("down", 0), "g": ("degraded", 1), "s": ("degraded", 2)}),
    "group below min_up is down": dict(
        groups={"g": (2, ["m1", "m2", "m3"])}, edges=[("s", "g", "hard")], seeds=["m1", "m2"],
        expect={"m1": ("down", 0), "m2": ("down", 0), "g": ("down", 1), "s": ("down", 2)}),
    "group tipped later counts from the tipping member": dict(
        groups={"g": (2, ["m1", "m2", "m3"])}, edges=[("m2", "x", "hard")], seeds=["m1", "x"],
        expect={"m1": ("down", 0), "x": ("down", 0), "m2": ("down", 1), "g": ("down", 2)}),
    "a degraded member counts as up": dict(
        groups={"g": (3, ["m1", "m2", "m3"])}, edges=[("m1", "a", "soft")], seeds=["a"],
        expect={"a": ("down", 0), "m1": ("degraded", 1), "g": ("degraded", 2)}),
    "a group's own hard dependency takes it down": dict(
        groups={"g": (1, ["m1", "m2"])}, edges=[("g", "n", "hard")], seeds=["n"],
        expect={"n": ("down", 0), "g": ("down", 1)}),
    "member-of into a non-group is an ordinary edge": dict(
        edges=[("p", "a", "member-of")], seeds=["a"],
        expect={"a": ("down", 0), "p": ("down", 1)}),
    "soft edge onto a degraded group": dict(
        groups={"g": (1, ["m1", "m2"])}, edges=[("s", "g", "soft")], seeds=["m1"],
        expect={"m1": ("down", 0), "g": ("degraded", 1), "s": ("degraded", 2)}),
    "retired assets are neither seeds nor links": dict(
        edges=[("q", "a", "hard"), ("b", "q", "hard"), ("c", "r", "hard")], seeds=["a", "r"],
        retired=["q", "r"], expect={"a": ("down", 0)}),
    "no seed, no hit": dict(edges=[("b", "a", "hard")], seeds=[], expect={}),
}


def build(estate: Estate, case: dict[str, Any]) -> None:
    names: list[str] = []
    for dependent, dependency, _s in case.get("edges", []):
        names += [dependent, dependency]
    for group, (_m, members) in case.get("groups", {}).items():
        names += members
    names += case.get("seeds", []) + case.get("retired", [])
    estate.vendor("Acme")
    for name in dict.fromkeys(names):
        if name in case.get("groups", {}):
            continue
        retired = NOW - timedelta(days=1) if name in case.get("retired", []) else None
        estate.asset(name, retired_at=retired)
    for group, (min_up, members) in case.get("groups", {}).items():
        estate.group(group, min_up, members)
    for dependent, dependency, strength in case.get("edges", []):
        if strength == "member-of":
            estate.dep(dependent, dependency, kind="member-of")
        else:
            estate.dep(dependent, dependency, strength=strength)
    estate.product("Acme", "Agent")
    for seed in case.get("seeds", []):
        estate.install(seed, "Acme", "Agent", "1.0")
    estate.commit()


def edges_of(case: dict[str, Any]) -> set[tuple[str, str]]:
    """(dependent, dependency) pairs an explaining path may use."""
    pairs = {(d, p) for d, p, _s in case.get("edges", [])}
    for group, (_m, members) in case.get("groups", {}).items():
        pairs |= {(group, m) for m in members}
    return pairs


@pytest.mark.parametrize("name", list(CASES))
def test_propagation(estate: Estate, name: str) -> None:
    case = CASES[name]
    build(estate, case)
    result = blast_radius(estate.db, {"vendor": "Acme"})
    got = {h.natural_key: (h.status, h.hops) for h in result.hits}
    assert got == case["expect"]
    pairs = edges_of(case)
    for hit in result.hits:
        keys = [step["natural_key"] for step in hit.path]
        assert keys[0] == hit.natural_key
        assert len(keys) == hit.hops + 1
        assert keys[-1] in case["seeds"] and hit.path[-1]["edge_kind"] is None
        for dependent, dependency in zip(keys, keys[1:]):
            assert (dependent, dependency) in pairs, (hit.natural_key, keys)
        assert hit.seed == (hit.natural_key in case["seeds"])
    down = sum(1 for s, _h in case["expect"].values() if s == "down")
    assert result.totals["by_status"] == {"down": down, "degraded": len(case["expect"]) - down}
    assert result.totals["hits"] == len(case["expect"])


def test_results_are_deterministic(estate: Estate) -> None:
    build(estate, CASES["diamond"])
    first = blast_radius(estate.db, {"vendor": "Acme"}).to_dict()
    second = blast_radius(estate.db, {"vendor": "Acme"}).to_dict()
    for d in (first, second):
        d.pop("computed_at")
    assert first == second
    assert [h["natural_key"] for h in first["hits"]] == ["a", "b", "c", "d"]
    # Equally short explanations: the parent with the highest asset id wins (c was added after b).
    assert [p["natural_key"] for p in first["hits"][3]["path"]] == ["d", "c", "a"]


def test_listing_order_status_criticality_hops_key(estate: Estate) -> None:
    estate.vendor("Acme")
    estate.asset("seed", criticality="low")
    estate.asset("z-critical", criticality="critical")
    estate.asset("a-critical-soft", criticality="critical")
    estate.asset("m-high", criticality="high")
    estate.dep("z-critical", "seed")
    estate.dep("m-high", "seed")
    estate.dep("a-critical-soft", "seed", strength="soft")
    estate.install("seed", "Acme", "Agent")
    estate.commit()
    hits = blast_radius(estate.db, {"vendor": "Acme"}).hits
    assert [h.natural_key for h in hits] == ["z-critical", "m-high", "seed", "a-critical-soft"]


def test_totals_break_down_by_place_criticality_and_service(estate: Estate) -> None:
    estate.vendor("Acme")
    estate.asset("h1", provider="azure", account="sub-1", region="centralus", criticality="high")
    estate.asset("h2", provider="aws", account="111", region="us-east-1", criticality="low")
    estate.asset("app", kind="application", os=None, criticality="critical")
    estate.service("service:checkin", name="Check-in", criticality="critical")
    estate.dep("app", "h1", strength="soft")
    estate.dep("service:checkin", "app")
    for h in ("h1", "h2"):
        estate.install(h, "Acme", "Agent", "2.0")
    estate.commit()
    totals = blast_radius(estate.db, {"vendor": "Acme"}).totals
    assert totals["by_status"] == {"down": 2, "degraded": 2}
    assert totals["by_criticality"]["critical"] == {"down": 0, "degraded": 2, "total": 2}
    assert totals["by_criticality"]["high"]["down"] == 1
    assert [(r["provider"], r["region"], r["down"]) for r in totals["by_region"]] == \
        [("aws", "us-east-1", 1), ("azure", "centralus", 1)]
    assert {(r["account"], r["total"]) for r in totals["by_account"]} == {("sub-1", 1), ("111", 1)}
    assert [(s["name"], s["status"], s["hops"]) for s in totals["by_service"]] == [("Check-in", "degraded", 2)]
    assert totals["by_kind"]["vm"] == {"down": 2, "degraded": 0, "total": 2}


def test_unlisted_dependency_kinds_keep_their_names(estate: Estate) -> None:
    import sqlalchemy as sa

    estate.vendor("Acme")
    estate.asset("a")
    estate.asset("b")
    estate.install("a", "Acme", "Agent")
    estate.commit()
    with estate.engine.begin() as conn:
        ids = dict(conn.execute(sa.text("SELECT natural_key, id FROM assets")).all())
        conn.execute(sa.text("INSERT INTO dependencies (dependent_id, dependency_id, kind, strength, source, "
                             "first_seen, last_seen) VALUES (:b, :a, 'replicates-from', 'soft', 'test', "
                             "'2024-01-01 00:00:00.000000', '2024-01-01 00:00:00.000000')"),
                     {"a": ids["a"], "b": ids["b"]})
    hit = next(h for h in blast_radius(estate.db, {"vendor": "Acme"}).hits if h.natural_key == "b")
    assert (hit.status, hit.path[0]["edge_kind"]) == ("degraded", "replicates-from")


def test_an_empty_inventory_answers_nothing(estate: Estate) -> None:
    estate.vendor("Acme")
    estate.commit()
    result = blast_radius(estate.db, {"vendor": "Acme"})
    data = result.to_dict()
    assert data["hits"] == [] and data["seeds"] == []
    assert data["totals"]["hits"] == 0 and data["totals"]["plan_coverage"]["gap"] == 0


def test_services_are_the_same_for_a_page_and_for_everything(estate: Estate) -> None:
    """A short page walks up from each hit; a long listing walks down from each service."""
    estate.vendor("Acme")
    estate.asset("h1")
    estate.asset("h2")
    estate.asset("app", kind="application", os=None)
    for key, name in (("service:a", "A"), ("service:b", "B"), ("service:c", "C")):
        estate.service(key, name=name)
    estate.dep("app", "h1")
    estate.dep("app", "h2", strength="soft")
    estate.dep("service:a", "app")
    estate.dep("service:b", "app", strength="soft")
    estate.dep("service:c", "h2")
    estate.dep("service:b", "service:c")
    for h in ("h1", "h2"):
        estate.install(h, "Acme", "Agent")
    estate.commit()
    result = blast_radius(estate.db, {"vendor": "Acme"})
    full = {h["natural_key"]: h["services"] for h in result.to_dict()["hits"]}
    assert full == {"h1": ["A", "B"], "h2": ["A", "B", "C"], "app": ["A", "B"], "service:a": [],
                    "service:b": [], "service:c": ["B"]}
    for offset in range(len(full)):
        page = blast_radius(estate.db, {"vendor": "Acme"}).to_dict(limit=1, offset=offset)["hits"][0]
        assert page["services"] == full[page["natural_key"]]
