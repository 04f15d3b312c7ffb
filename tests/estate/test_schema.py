"""The estate file format: the JSON Schema itself, and how violations are reported."""
from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

from inventory.estate.demo import demo_path
from inventory.estate.importer import EstateError, load_file, validate_document
from inventory.estate.schema import ESTATE_SCHEMA
from tests.estate.conftest import small_document


def test_schema_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(ESTATE_SCHEMA)
    assert ESTATE_SCHEMA["$schema"].endswith("2020-12/schema")


def test_demo_and_small_document_are_valid(db):
    validate_document(db, load_file(demo_path()), "demo")
    validate_document(db, small_document(), "small")


def _mutate(path, value):
    doc = small_document()
    target = doc
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()

# (what is wrong, path to change, new value, expected field, words the message must contain)
CASES = [
    ("wrong type", ("assets", 2, "min_up"), "three", "assets[2].min_up", "expected an integer"),
    ("wrong enum", ("assets", 0, "os", "family"), "windoze", "assets[0].os.family", "not one of"),
    ("unknown field", ("assets", 0, "colour"), "red", "assets[0].colour", "unknown field 'colour'"),
    ("missing field", ("assets", 1, "name"), _DELETE, "assets[1].name", "required field 'name'"),
    ("missing version", ("version",), _DELETE, "version", "required field 'version'"),
    ("wrong version", ("version",), 2, "version", "unsupported value 2"),
    ("javascript link", ("plans", 0, "runbook_url"), "javascript:alert(1)", "plans[0].runbook_url",
     "not an http:// or https:// link"),
    ("file link", ("updates", 0, "tests", 0, "evidence_url"), "file:///etc/passwd",
     "updates[0].tests[0].evidence_url", "not an http"),
    ("bad date", ("assessments", 0, "assessed_on"), "2026-02-30", "assessments[0].assessed_on",
     "not a valid date"),
    ("score out of range", ("assessments", 0, "scores", "security"), 6,
     "assessments[0].scores.security", "6"),
    ("members without min_up", ("assets", 2, "min_up"), _DELETE, "assets[2].min_up",
     "'min_up' is required when 'members'"),
    ("bad depends_on item", ("services", 0, "depends_on", 1), {"too": "x"},
     "services[0].depends_on[1].too", "unknown field 'too' (allowed: kind, strength, to)"),
    ("unknown top-level section", ("servers",), [], "servers", "unknown field 'servers'"),
    ("unknown vendor", ("assets", 0, "software", 0, "vendor"), "CrowdStrike Holdings",
     "assets[0].software[0].vendor", "unknown vendor 'CrowdStrike Holdings'"),
    ("unknown product", ("assets", 0, "software", 0, "product"), "Falcon",
     "assets[0].software[0].product", "unknown product 'Falcon'"),
    ("unknown asset", ("services", 0, "depends_on", 0), "group:nope", "services[0].depends_on[0]",
     "unknown asset key 'group:nope'"),
    ("unknown member", ("assets", 2, "members", 1), "host:web-9", "assets[2].members[1]",
     "unknown asset key 'host:web-9'"),
    ("unknown plan target", ("plans", 0, "covers", "vendors", 0), "Nobody",
     "plans[0].covers.vendors[0]", "unknown vendor 'Nobody'"),
    ("duplicate key", ("assets", 1, "key"), "host:web-1", "assets[1].key", "duplicate key 'host:web-1'"),
    ("self dependency", ("dependencies", 0, "to"), "host:web-1", "dependencies[0].to", "itself"),
    ("duplicate alias", ("vendors", 1, "aliases"), ["  crowdstrike,   INC. "], "vendors[1].aliases[0]",
     "duplicate alias"),
    ("bad pattern", ("vendors", 0, "patterns"), ["(unclosed"], "vendors[0].patterns[0]",
     "not a valid regular expression"),
    ("duplicate ring", ("updates", 0, "tests", 1, "ring"), "canary", "updates[0].tests[1].ring",
     "duplicate test for ring"),
    ("impossible time", ("plans", 0, "last_exercised"), "2026-09-01T25:61:00Z", "plans[0].last_exercised",
     "not a valid date/time"),
    ("impossible date", ("updates", 0, "tests", 0, "tested_at"), "2024-02-30", "updates[0].tests[0].tested_at",
     "not a valid date/time"),
    ("huge number", ("assets", 2, "min_up"), 10**12, "assets[2].min_up", "maximum"),
    ("too long", ("vendors", 0, "website"), "https://x.example/" + "a" * 600, "vendors[0].website", "too long"),
    ("NUL character", ("assets", 0, "owner"), "ops\x00team", "assets[0].owner", "NUL"),
    ("lone surrogate", ("services", 0, "name"), "Shop \ud800", "services[0].name", "surrogate"),
    ("NUL in a tag name", ("assets", 0, "tags"), {"a\x00b": "x"}, "assets[0].tags.a\x00b", "NUL"),
    ("not a number", ("assets", 0, "tags"), {"weight": float("nan")}, "assets[0].tags.weight", "not a number"),
    ("two clouds", ("vendors", 0, "cloud_provider"), "azure", "vendors[1].cloud_provider",
     "already belongs to vendor 'CrowdStrike'"),
]


@pytest.mark.parametrize("what,path,value,field,words", CASES, ids=[c[0] for c in CASES])
def test_problems_name_entry_and_field(db, what, path, value, field, words):
    doc = _mutate(path, value)
    with pytest.raises(EstateError) as info:
        validate_document(db, doc, "estate.yaml")
    error = info.value
    assert error.field == field, str(error)
    text = str(error)
    assert text.startswith("estate.yaml: ")
    assert words in text
    if path[0] == "assets" and len(path) > 1:
        key = doc["assets"][path[1]]["key"]
        assert f'assets[{path[1]}] (key "{key}")' in text


def test_many_problems_are_all_listed(db):
    doc = small_document()
    doc["assets"][0]["kind"] = "vmm"
    doc["assets"][1]["colour"] = "red"
    with pytest.raises(EstateError) as info:
        validate_document(db, doc, "estate.yaml")
    assert len(info.value.problems) == 2
    assert "2 problems" in str(info.value)
    assert [p.field for p in info.value.problems] == ["assets[0].kind", "assets[1].colour"]


def test_references_may_point_at_what_the_database_holds(db):
    from inventory.db import utcnow  # noqa: F401 - the session fixture is plain SQLAlchemy
    from inventory.estate.importer import import_estate
    import_estate(db, small_document(), source_name="base", actor="t")
    db.flush()
    follow_up = {"version": 1,
                 "assets": [{"key": "host:new", "name": "new", "kind": "host",
                             "software": [{"vendor": "CrowdStrike", "product": "Falcon Sensor"}],
                             "depends_on": ["host:web-1"]}],
                 "plans": [{"name": "p", "covers": {"assets": ["service:shop"], "vendors": ["Microsoft"]}}]}
    validate_document(db, copy.deepcopy(follow_up), "follow-up")
