"""Applicable plans (precedence, staleness, gaps) and what-if answers that never write."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from inventory.impact import ScopeError, blast_radius
from tests.impact.conftest import Estate


def plan_estate(e: Estate) -> Estate:
    """seed host -> app -> service; a pool of two hosts behind a service; plans on each route."""
    e.vendor("Acme")
    e.vendor("Other")
    e.asset("host", criticality="high")
    e.asset("app", kind="application", os=None)
    e.service("service:checkin", name="Check-in", criticality="critical")
    e.asset("bare", kind="application", os=None)
    e.dep("app", "host")
    e.dep("service:checkin", "app")
    e.dep("bare", "host", strength="soft")
    e.asset("pool-1")
    e.asset("pool-2", os="linux")
    e.group("pool", 1, ["pool-1", "pool-2"])
    e.service("service:boarding", name="Boarding")
    e.dep("service:boarding", "pool")
    e.install("host", "Acme", "Agent", "1.0")
    e.install("pool-1", "Acme", "Agent", "1.0")
    e.install("host", "Other", "Database", "5")
    return e


def test_plan_precedence_and_status(estate: Estate) -> None:
    e = plan_estate(estate)
    e.plan("Host rebuild", asset="host", reviewed_days_ago=10, exercised_days_ago=None)     # never exercised
    e.plan("Agent rollback", product=("Acme", "Agent"), reviewed_days_ago=400)               # stale
    e.plan("Acme outage runbook", vendor="Acme")                                              # current
    e.plan("DB failover", product=("Other", "Database"))                                     # current
    e.plan("Paper check-in", asset="service:checkin")                                         # current
    e.plan("Old check-in fallback", asset="service:checkin", reviewed_days_ago=300, interval=90)  # stale
    e.commit()
    result = blast_radius(e.db, {"vendor": "Acme"})
    hits = {h.natural_key: h for h in result.hits}
    host_plans = [(p["name"], p["status"], p["via"]) for p in hits["host"].plans]
    assert host_plans == [
        ("Host rebuild", "never_exercised", "asset"),
        ("DB failover", "current", "product"),
        ("Agent rollback", "stale", "product"),
        ("Acme outage runbook", "current", "vendor"),
        ("Paper check-in", "current", "service"),
        ("Old check-in fallback", "stale", "service"),
    ]
    assert hits["host"].services == ["Check-in"]
    # The app installs nothing: scope vendor plans reach it, and its service's plans.
    assert [(p["name"], p["via"]) for p in hits["app"].plans] == [
        ("Acme outage runbook", "vendor"), ("Paper check-in", "service"), ("Old check-in fallback", "service")]
    # A service's own plans come first, as its own ("asset"), never also "service".
    assert [(p["name"], p["via"]) for p in hits["service:checkin"].plans][:2] == [
        ("Paper check-in", "asset"), ("Old check-in fallback", "asset")]
    assert all(isinstance(p["id"], int) for p in hits["host"].plans)
    assert not any(h.gap for h in result.hits)


def test_gaps_and_coverage_totals(estate: Estate) -> None:
    e = plan_estate(estate)
    e.plan("Paper check-in", asset="service:checkin")
    e.plan("Pool rebuild", asset="pool-1", reviewed_days_ago=500)
    e.plan("Boarding fallback", asset="service:boarding", reviewed_days_ago=5, exercised_days_ago=None)
    e.commit()
    result = blast_radius(e.db, {"vendor": "Acme"})
    hits = {h.natural_key: h for h in result.hits}
    assert hits["bare"].gap and hits["bare"].plans == []
    assert not hits["pool-1"].gap
    assert [p["status"] for p in hits["pool-1"].plans] == ["stale", "never_exercised"]
    coverage = result.totals["plan_coverage"]
    # current: host, app, service:checkin | never exercised: pool, pool-1, service:boarding | gap: bare
    assert coverage == {"current": 3, "never_exercised": 3, "stale_only": 0, "gap": 1}
    assert sum(coverage.values()) == result.totals["hits"]


def _counts(e: Estate) -> dict[str, int]:
    with e.engine.connect() as conn:
        out = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
               for t in ("assets", "dependencies", "installations", "contingency_plans", "plan_links",
                         "audit_events")}
        out["version"] = conn.execute(sa.text("SELECT version FROM inventory_version")).scalar()
    return out


def test_what_if_answers_without_writing(any_estate: Estate) -> None:
    e = plan_estate(any_estate).commit()
    before = _counts(e)
    baseline = blast_radius(e.db, {"vendor": "Acme"})
    assert {h.natural_key: h.status for h in baseline.hits}["service:boarding"] == "degraded"
    what_if = {
        "remove_dependencies": [["bare", "host"]],
        "add_replicas": [{"asset": "host", "count": 1}],
        "set_min_up": {"pool": 2},
        "add_plans": [{"name": "Boarding paper passes", "asset": "service:boarding"},
                      {"name": "Agent safe mode", "vendor": "Acme", "product": "Agent",
                       "status": "never_exercised"}],
    }
    result = blast_radius(e.db, {"vendor": "Acme"}, what_if=what_if)
    got = {h.natural_key: h.status for h in result.hits}
    assert "bare" not in got                                   # dependency removed
    assert got["host"] == "down"                               # the host itself still fails...
    assert got["app"] == "degraded"                            # ...but its replica keeps the app running
    assert got["service:checkin"] == "degraded"
    assert got["pool"] == "down" and got["service:boarding"] == "down"   # min_up raised to 2
    boarding = next(h for h in result.hits if h.natural_key == "service:boarding")
    assert boarding.plans[0] == {"id": None, "name": "Boarding paper passes", "status": "current", "via": "asset"}
    changes = result.what_if["changes"]
    assert changes["no_longer_hit"] == {"count": 1, "assets": ["bare"]}
    assert changes["down_to_degraded"]["assets"] == ["app", "service:checkin"]
    assert changes["degraded_to_down"]["assets"] == ["pool", "service:boarding"]
    assert result.what_if["baseline_totals"] == baseline.totals
    assert result.to_dict()["what_if"]["applied"] == what_if
    assert _counts(e) == before
    # The cached graph is untouched: the plain answer is the same as before.
    again = blast_radius(e.db, {"vendor": "Acme"})
    assert {h.natural_key: h.status for h in again.hits} == {h.natural_key: h.status for h in baseline.hits}


def test_group_replicas_keep_a_pool_up(estate: Estate) -> None:
    e = plan_estate(estate)
    e.install("pool-2", "Acme", "Agent", "1.0")
    e.commit()
    hits = {h.natural_key: h.status for h in blast_radius(e.db, {"vendor": "Acme"}).hits}
    assert hits["pool"] == "down"
    result = blast_radius(e.db, {"vendor": "Acme"}, what_if={"add_replicas": [{"asset": "pool", "count": 1}]})
    hits = {h.natural_key: h.status for h in result.hits}
    assert hits["pool"] == "degraded" and hits["service:boarding"] == "degraded"


def test_set_min_up_applies_to_a_host_given_replicas_in_the_same_what_if(estate: Estate) -> None:
    plan_estate(estate).commit()
    result = blast_radius(estate.db, {"vendor": "Acme"},
                          what_if={"add_replicas": [{"asset": "host", "count": 1}], "set_min_up": {"host": 1}})
    assert result.what_if["applied"]


@pytest.mark.parametrize("what_if,field", [
    ({"remove_dependencies": [["nope", "host"]]}, "what_if.remove_dependencies[0]"),
    ({"remove_dependencies": ["host"]}, "what_if.remove_dependencies[0]"),
    ({"add_replicas": [{"asset": "pool", "count": 0}]}, "what_if.add_replicas[0].count"),
    ({"set_min_up": {"pool": -1}}, "what_if.set_min_up.pool"),
    ({"set_min_up": {"host": 1}}, "what_if.set_min_up.host"),
    ({"add_plans": [{"name": "x"}]}, "what_if.add_plans[0]"),
    ({"add_plans": [{"name": "x", "vendor": "Nobody"}]}, "what_if.add_plans[0].vendor"),
    ({"add_plans": [{"name": "x", "asset": "host", "status": "great"}]}, "what_if.add_plans[0].status"),
    ({"explode": True}, "what_if.explode"),
])
def test_bad_what_if_names_the_field(estate: Estate, what_if: dict, field: str) -> None:
    plan_estate(estate).commit()
    with pytest.raises(ScopeError) as info:
        blast_radius(estate.db, {"vendor": "Acme"}, what_if=what_if)
    assert info.value.field == field
