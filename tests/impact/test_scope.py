"""Outage scopes: validation with suggestions, version ranges, regions, filters, as-of."""
from __future__ import annotations

from datetime import timedelta

import pytest

from inventory.impact import ScopeError, blast_radius, parse_scope
from inventory.impact.scope import comparable_version, normalise_specifier, version_matches
from tests.impact.conftest import NOW, T0, Estate

FALCON_VERSIONS = {"h-710": "7.10.17706.0", "h-711": "7.11.18110.0", "h-715": "7.15.18513.0",
                   "h-716": "7.16.18605.0", "h-716b": "7.16.0b1", "h-build": "7.11.18110.0 (build 5)",
                   "h-v": "v7.12", "h-unknown": "unknown", "h-none": None}


def falcon_estate(estate: Estate) -> Estate:
    estate.vendor("CrowdStrike", aliases=("crowdstrike, inc.",))
    estate.product("CrowdStrike", "Falcon Sensor")
    estate.product("CrowdStrike", "Falcon Identity")
    for key, version in FALCON_VERSIONS.items():
        estate.asset(key)
        estate.install(key, "CrowdStrike", "Falcon Sensor", version)
    estate.asset("linux-711", os="linux", region="centralus", provider="azure", account="sub-1",
                 environment="production", tags={"team": "ops"})
    estate.install("linux-711", "CrowdStrike", "Falcon Sensor", "7.11.18110.0")
    estate.asset("mac-716", os="macos", environment="staging", tags={"team": "dev"})
    estate.install("mac-716", "CrowdStrike", "Falcon Sensor", "7.16.18605.0")
    estate.asset("id-host", region="eastus", provider="azure", account="sub-2")
    estate.install("id-host", "CrowdStrike", "Falcon Identity", "3.1")
    return estate.commit()


def seeds_of(estate: Estate, scope: dict) -> set[str]:
    result = blast_radius(estate.db, scope)
    return {s["natural_key"] for s in result.seeds()}


VERSION_CASES = [
    (">=7.11", {"h-711", "h-715", "h-716", "h-716b", "h-build", "h-v"}),
    (">=7.11,<7.16", {"h-711", "h-715", "h-build", "h-v"}),
    ("<7.11", {"h-710"}),
    ("7.11", {"h-711", "h-build"}),            # a bare version is its release line
    ("==7.16.*", {"h-716", "h-716b"}),
    ("==7.11.18110.0", {"h-711", "h-build"}),
    ("~=7.15", {"h-715", "h-716", "h-716b"}),
    ("!=7.10.17706.0", {"h-711", "h-715", "h-716", "h-716b", "h-build", "h-v"}),
]


@pytest.mark.parametrize("spec,expected", VERSION_CASES)
def test_version_ranges(estate: Estate, spec: str, expected: set[str]) -> None:
    falcon_estate(estate)
    scope = {"vendor": "CrowdStrike", "products": ["Falcon Sensor"], "version": spec, "os": ["windows"]}
    assert seeds_of(estate, scope) == expected


def test_uncomparable_versions_are_reported_not_counted(estate: Estate) -> None:
    falcon_estate(estate)
    result = blast_radius(estate.db, {"vendor": "CrowdStrike", "version": ">=7.11", "os": ["windows"]})
    unversioned = result.confidence["unversioned_installations"]
    assert unversioned["count"] == 2
    assert set(unversioned["sample"]) == {"h-unknown", "h-none"}
    assert "h-unknown" not in {h.natural_key for h in result.hits}
    assert any("could not be compared" in note for note in result.confidence["notes"])
    # Without a version range every installation counts.
    assert {"h-unknown", "h-none"} <= seeds_of(estate, {"vendor": "CrowdStrike"})


@pytest.mark.parametrize("raw,expected", [
    ("7.11.18110.0", "7.11.18110.0"), ("7.11.18110.0 (build 5)", "7.11.18110.0"), ("v7.12", "7.12"),
    ("2024.07.19-1", "2024.7.19.post1"), ("unknown", None), ("", None), (None, None)])
def test_comparable_version(raw: str | None, expected: str | None) -> None:
    version = comparable_version(raw)
    assert (str(version) if version is not None else None) == expected


def test_specifier_normalisation() -> None:
    assert str(normalise_specifier("7.11")) == "==7.11.*"
    assert str(normalise_specifier(" v7.11.* ")) == "==7.11.*"
    assert version_matches(normalise_specifier(">=7.11"), "7.16.0b1") is True
    assert version_matches(normalise_specifier(">=7.11"), "n/a") is None


@pytest.mark.parametrize("scope,field,suggestion", [
    ({"vendor": "Crowdstrik"}, "vendor", "CrowdStrike"),
    ({"vendor": "crowd"}, "vendor", "CrowdStrike"),
    ({}, "vendor", None),
    ({"vendor": "CrowdStrike", "products": ["Falcon Sensr"]}, "products", "Falcon Sensor"),
    ({"vendor": "CrowdStrike", "products": ["falcon"]}, "products", "Falcon Identity"),
    ({"vendor": "CrowdStrike", "version": "=>7.11"}, "version", None),
    ({"vendor": "CrowdStrike", "version": "seven"}, "version", None),
    ({"vendor": "CrowdStrike", "os": ["windoze"]}, "os", "windows"),
    ({"vendor": "CrowdStrike", "regions": ["centrlus"]}, "regions", "centralus"),
    ({"vendor": "CrowdStrike", "accounts": ["sub-9"]}, "accounts", "sub-1"),
    ({"vendor": "CrowdStrike", "environments": ["prod"]}, "environments", "production"),
    ({"vendor": "CrowdStrike", "tags": ["team"]}, "tags", None),
    ({"vendor": "CrowdStrike", "colour": "red"}, "colour", None),
    ({"vendor": ["CrowdStrike"]}, "vendor", None),
])
def test_bad_scopes_name_the_field(estate: Estate, scope: dict, field: str, suggestion: str | None) -> None:
    falcon_estate(estate)
    with pytest.raises(ScopeError) as info:
        parse_scope(estate.db, scope)
    assert info.value.field == field
    if suggestion:
        assert suggestion in info.value.suggestions
    assert info.value.to_dict()["message"]


def test_names_are_matched_case_insensitively_and_through_aliases(estate: Estate) -> None:
    falcon_estate(estate)
    scope = parse_scope(estate.db, {"vendor": "CROWDSTRIKE, Inc.", "product": "falcon sensor", "os": "Windows",
                                    "region": "CentralUS", "tag": "team:ops"})
    assert (scope.vendor, scope.products, scope.os, scope.regions, scope.tags) == \
        ("CrowdStrike", ("Falcon Sensor",), ("windows",), ("centralus",), (("team", "ops"),))
    assert parse_scope(estate.db, scope.to_dict()) == scope


def test_filters_narrow_the_seeds(estate: Estate) -> None:
    falcon_estate(estate)
    base = {"vendor": "CrowdStrike", "products": ["Falcon Sensor"], "version": ">=7.11"}
    assert seeds_of(estate, {**base, "os": ["linux", "macos"]}) == {"linux-711", "mac-716"}
    assert seeds_of(estate, {**base, "regions": ["centralus"]}) == {"linux-711"}
    assert seeds_of(estate, {**base, "accounts": ["sub-1"]}) == {"linux-711"}
    assert seeds_of(estate, {**base, "environments": ["staging"]}) == {"mac-716"}
    assert seeds_of(estate, {**base, "tags": {"team": "ops"}}) == {"linux-711"}
    assert seeds_of(estate, {**base, "tags": {"team": "nobody"}}) == set()
    assert seeds_of(estate, {"vendor": "CrowdStrike", "products": ["Falcon Identity"]}) == {"id-host"}


def test_cloud_region_outage_seeds_everything_hosted_there(any_estate: Estate) -> None:
    e = any_estate
    e.vendor("Microsoft Azure", cloud_provider="azure")
    e.product("Microsoft Azure", "Azure Monitor Agent")
    e.asset("az-central-1", provider="azure", region="centralus", os="linux")
    e.asset("az-central-db", kind="database", provider="azure", region="centralus", os=None)
    e.asset("az-east-1", provider="azure", region="eastus")
    e.asset("aws-1", provider="aws", region="us-east-1")
    e.asset("onprem-agent", provider="on_prem", region="dc1")
    e.install("onprem-agent", "Microsoft Azure", "Azure Monitor Agent", "1.2")
    e.asset("app", kind="application", os=None)
    e.dep("app", "az-central-db")
    e.commit()
    result = blast_radius(e.db, {"vendor": "Microsoft Azure", "regions": ["centralus"]})
    assert {s["natural_key"] for s in result.seeds()} == {"az-central-1", "az-central-db"}
    assert {h.natural_key: h.status for h in result.hits} == \
        {"az-central-1": "down", "az-central-db": "down", "app": "down"}
    assert result.seeds()[0]["matched"] == {"hosted_on": "azure", "region": "centralus"}
    # A full outage of the cloud vendor: everything on the provider, plus its agents anywhere.
    full = blast_radius(e.db, {"vendor": "Microsoft Azure"})
    assert {s["natural_key"] for s in full.seeds()} == {"az-central-1", "az-central-db", "az-east-1",
                                                          "onprem-agent"}
    # Naming a product narrows to installations only.
    agent = blast_radius(e.db, {"vendor": "Microsoft Azure", "products": ["Azure Monitor Agent"]})
    assert {s["natural_key"] for s in agent.seeds()} == {"onprem-agent"}


def test_as_of_uses_first_seen_and_retired_at(any_estate: Estate) -> None:
    e = any_estate
    t = T0 + timedelta(days=100)
    e.vendor("CrowdStrike")
    e.asset("old-retired", retired_at=T0 + timedelta(days=50))         # gone before t
    e.asset("retired-after", retired_at=T0 + timedelta(days=150))      # there at t, gone now
    e.asset("new-host", first_seen=T0 + timedelta(days=120))           # arrived after t
    e.asset("steady")
    e.asset("quiet", last_seen=T0 + timedelta(days=60))               # not seen since before t
    e.asset("late-agent")                                              # agent installed after t
    e.asset("app", kind="application", os=None)
    e.asset("late-link", kind="application", os=None)
    for key in ("old-retired", "retired-after", "new-host", "steady", "quiet"):
        e.install(key, "CrowdStrike", "Falcon Sensor", "7.11.18110.0")
    e.install("late-agent", "CrowdStrike", "Falcon Sensor", "7.11.18110.0", first_seen=T0 + timedelta(days=110))
    e.dep("app", "retired-after")
    e.dep("late-link", "steady", first_seen=T0 + timedelta(days=130))
    e.commit()
    then = blast_radius(e.db, {"vendor": "CrowdStrike"}, as_of=t)
    assert {h.natural_key for h in then.hits} == {"retired-after", "steady", "quiet", "app"}
    assert then.as_of == t
    assert any("as-of" in note for note in then.confidence["notes"])
    assert then.confidence["unconfirmed_at_as_of"] == {"count": 1, "sample": ["quiet"]}
    iso = blast_radius(e.db, {"vendor": "CrowdStrike"}, as_of=t.isoformat().replace("+00:00", "Z"))
    assert {h.natural_key for h in iso.hits} == {h.natural_key for h in then.hits}
    now = blast_radius(e.db, {"vendor": "CrowdStrike"})
    assert {h.natural_key for h in now.hits} == {"new-host", "steady", "quiet", "late-agent", "late-link"}
    for bad in ("yesterday", 5, True, "0001-01-01T00:00:00+14:00"):
        with pytest.raises(ScopeError) as info:
            blast_radius(e.db, {"vendor": "CrowdStrike"}, as_of=bad)
        assert info.value.field == "as_of"


def test_confidence_reports_collection_freshness(estate: Estate) -> None:
    from inventory.models import CollectionRun, ScopeResult, ScopeState

    estate.vendor("Acme")
    estate.asset("ok-1", source="aws", source_scope="aws:111:us-east-1")
    estate.asset("bad-1", source="aws", source_scope="aws:111:eu-west-1")
    estate.asset("never", source="azure", source_scope="azure:sub:centralus")
    estate.asset("manual", source="import")
    for key in ("ok-1", "bad-1", "never", "manual"):
        estate.install(key, "Acme", "Agent")
    run = CollectionRun(collector="aws", scope="aws 111", status="partial", finished_at=NOW)
    estate.db.add(run)
    old, recent = NOW - timedelta(hours=30), NOW - timedelta(hours=1)
    estate.db.add_all([
        ScopeResult(run=run, scope_key="aws:111:us-east-1", status="succeeded", finished_at=old),
        ScopeResult(run=run, scope_key="aws:111:us-east-1", status="succeeded", finished_at=recent),
        ScopeResult(run=run, scope_key="aws:111:eu-west-1", status="succeeded", finished_at=old),
        ScopeResult(run=run, scope_key="aws:111:eu-west-1", status="failed", finished_at=recent,
                    error="AccessDenied"),
        # the latest state of each scope, as ingest keeps it
        ScopeState(scope_key="aws:111:us-east-1", collector="aws", status="succeeded",
                   finished_at=recent, last_success_at=recent),
        ScopeState(scope_key="aws:111:eu-west-1", collector="aws", status="failed", finished_at=recent,
                   last_success_at=old, error="AccessDenied"),
    ])
    estate.commit()
    conf = blast_radius(estate.db, {"vendor": "Acme"}).confidence
    by_scope = {s["scope"]: s for s in conf["scopes"]}
    assert by_scope["aws:111:us-east-1"]["last_success"] == recent.isoformat()
    assert by_scope["aws:111:eu-west-1"]["latest_status"] == "failed"
    assert by_scope["aws:111:eu-west-1"]["last_success"] == old.isoformat()
    assert by_scope["aws:111:eu-west-1"]["error"] == "AccessDenied"
    assert by_scope["azure:sub:centralus"]["last_success"] is None
    assert conf["incomplete_scopes"] == ["aws:111:eu-west-1", "azure:sub:centralus"]
    assert conf["manual_assets"] == 1 and conf["manual_sample"] == ["manual"]
    assert conf["newest_last_success"] == recent.isoformat()


def test_version_ranges_on_both_databases(any_estate: Estate) -> None:
    """The installation index is built by database aggregates (group_concat / string_agg)."""
    falcon_estate(any_estate)
    for spec, expected in VERSION_CASES:
        scope = {"vendor": "CrowdStrike", "products": ["Falcon Sensor"], "version": spec, "os": ["windows"]}
        assert seeds_of(any_estate, scope) == expected, spec
    with pytest.raises(ScopeError) as info:
        parse_scope(any_estate.db, {"vendor": "CrowdStrik"})
    assert info.value.suggestions[0] == "CrowdStrike"
