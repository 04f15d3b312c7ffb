"""Hostile strings (HTML, SQL fragments, long names, unicode, control characters, NUL bytes)
in asset names, tags, vendor and publisher strings: stored, and shown safely, on both databases.

The rule (``inventory.validation``), the same on SQLite and PostgreSQL: text no database
can store (NUL, lone surrogates) is *refused* with the field named when people send it
(estate file, API), *cleaned* when a collector reads it, and removed by ``inventory.db``
from any bound parameter as the last line of defence.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.base import AssetRecord, ScopeBatch, SoftwareRecord
from collectors.ingest import run_collection
from inventory.app_db import get_session
from inventory.db import make_engine, read_session, write_session
from inventory.estate.importer import import_estate
from inventory.models import Asset, AuditEvent, UnattributedSoftware, Vendor
from inventory.validation import has_unwanted, sanitize_text, sanitize_tree
from tests.conftest import bearer, create_api_token, create_user_and_login, make_test_app

SCRIPT = '<script>alert("pwned")</script>'
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE = [
    SCRIPT,
    IMG,
    "Robert'); DROP TABLE assets;--",
    "' OR '1'='1",
    "💥 ünïcödé 名前 \u202eevil\u202c",
    "{{ 7*7 }} {% raw %}",
    "%(name)s %s ${jndi:ldap://x}",
    "tab\tand\nnewline",
]
# Collected text may also carry what no database stores; collectors clean it.
COLLECTED = HOSTILE + ["nul\x00byte", "esc\x1b[31mred", "lone \ud800 surrogate"]
LONG_NAME = "L" * 300  # the longest asset name the schema allows
# What must never appear verbatim in a page: markup that would run or inject.
FORBIDDEN_IN_HTML = ('<script>alert("pwned")', "<img src=x onerror", "onerror=alert(1)>")


# ---------------------------------------------------------------- the helpers themselves

@pytest.mark.parametrize("raw,clean", [
    ("plain", "plain"),
    ("nul\x00byte", "nulbyte"),
    ("esc\x1b[31mred\x07", "esc[31mred"),
    ("tab\tnew\nline\r", "tab\tnew\nline\r"),
    ("del\x7f", "del"),
    ("lone \ud800 surrogate", "lone \ufffd surrogate"),
    (SCRIPT, SCRIPT),  # markup is content: kept, and escaped when shown
    ("💥 名前 \u202e", "💥 名前 \u202e"),
])
def test_sanitize_text(raw, clean):
    assert sanitize_text(raw) == clean
    assert not has_unwanted(sanitize_text(raw))


@pytest.mark.parametrize("raw,problem", [
    ("fine <b>markup</b>", None), ("nul\x00", "NUL"), ("lone \udc00", "surrogate"), ("esc\x1b", None)])
def test_text_problem(raw, problem):
    from inventory.validation import text_problem
    result = text_problem(raw)
    assert (result is None) if problem is None else (problem in result)


def test_sanitize_tree_cleans_keys_and_values():
    assert sanitize_tree({"k\x00": ["v\x00", {"x": "\ud800"}, 3, None]}) == {"k": ["v", {"x": "\ufffd"}, 3, None]}


# Text drawn mostly from the characters that matter here: controls, DEL, surrogates,
# backslashes and the letters of JSON's escapes, plus ordinary text.
_TRICKY = st.text(alphabet=st.one_of(st.sampled_from("\x00\x08\x09\x0a\x0b\x0c\x0d\x1b\x1f\x7f"
                                                     "\ud800\udfff\\bfu01\"az"),
                                     st.characters()), max_size=12)
_TREES = st.recursive(st.one_of(_TRICKY, st.integers(), st.none(), st.booleans()),
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(_TRICKY, inner, max_size=4)),
                      max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(_TREES)
def test_tree_check_never_misses_what_sanitize_tree_changes(tree):
    """The one-dump check may raise a false alarm, never miss: when it says clean,
    walking the tree changes nothing."""
    from inventory.validation import tree_may_have_unwanted
    if not tree_may_have_unwanted(tree):
        assert sanitize_tree(tree) == tree
    if any(has_unwanted(text) for text in _strings_in(tree)):
        assert tree_may_have_unwanted(tree)


def _strings_in(tree):  # type: ignore[no-untyped-def]
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _strings_in(key)
            yield from _strings_in(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _strings_in(value)


@pytest.mark.parametrize("where", ["asset name", "tag key", "nested attribute", "software origin",
                                   "dependency strength", "nowhere"])
def test_clean_batch_finds_one_dirty_field_anywhere(where):
    """A batch is searched as a whole first; one bad character anywhere still gets cleaned,
    and a clean batch is left exactly as it was."""
    from collectors.base import DependencyRecord
    from collectors.ingest import clean_batch
    assets = [AssetRecord(natural_key=f"k:{i}", name=f"vm {i}", kind="vm", tags={"env": "prod"},
                          attributes={"os": {"build": "22631", "flags": ["a", "b"]}}) for i in range(50)]
    software = [SoftwareRecord(asset_key=f"k:{i}", name="agent", publisher="ACME", version="1.0",
                               origin="registry") for i in range(50)]
    deps = [DependencyRecord(dependent_key="k:1", dependency_key="k:2", kind="runs_on", strength="hard")]
    dirty = "bad\x1b[31m\x00"
    if where == "asset name":
        assets[37].name = dirty
    elif where == "tag key":
        assets[12].tags = {dirty: "x"}
    elif where == "nested attribute":
        assets[49].attributes = {"os": {"flags": ["a", dirty]}}
    elif where == "software origin":
        software[3].origin = dirty
    elif where == "dependency strength":
        deps[0].strength = dirty
    batch = ScopeBatch(scope_key="test:scope", assets=assets, software=software, dependencies=deps)
    before = repr(batch)
    clean_batch(batch)
    texts = [text for record in [*assets, *software, *deps] for text in _strings_in(
        [v for v in vars(record).values() if isinstance(v, (str, dict, list))])]
    assert not any(has_unwanted(text) for text in texts)
    assert (repr(batch) == before) == (where == "nowhere")
    assert ("bad[31m" in texts or any("bad[31m" in t for t in texts)) == (where != "nowhere")


# ---------------------------------------------------------------- the database guard

@pytest.mark.parametrize("value, stored", [
    ({"a": "x\x00y"}, {"a": "xy"}),
    ({"k\x00": ["ok", "lone \ud800 s"]}, {"k": ["ok", "lone \ufffd s"]}),
    ({"e": "emoji \U0001F600"}, {"e": "emoji \U0001F600"}),          # a valid pair is kept
    ({"bs": "a\\u0000b"}, {"bs": "a\\u0000b"}),                    # a backslash, not a NUL
    ([1, ("t", None), {"n": 2.5}], [1, ["t", None], {"n": 2.5}]),
])
def test_json_columns_drop_nul_and_surrogates_through_the_fast_path_too(value, stored):
    """JSON is dumped first and only walked when the dump shows an escaped NUL or surrogate;
    the result must be what walking every value gives."""
    import json

    from inventory.db import json_serializer
    text = json_serializer(value)
    assert json.loads(text) == stored
    text.encode("utf-8")   # storable and sendable


def test_database_layer_drops_nul_and_surrogates_on_every_backend(any_db_url):
    engine = make_engine(any_db_url)
    try:
        with write_session(engine) as db:
            db.add(Asset(natural_key="k\x001", name="a\x00b \ud800", kind="vm",
                         tags={"t\x00": "v\x00", "s": "\udfff"}))
            db.add_all([Asset(natural_key=f"bulk{i}\x00", name=f"n\x00{i}", kind="vm") for i in range(5)])
            db.flush()
            db.execute(sa.insert(Vendor), [{"name": "v\x00one"}, {"name": "v\x00two"}])  # executemany
        with read_session(engine) as db:
            asset = db.scalar(sa.select(Asset).where(Asset.natural_key == "k1"))
            assert asset.name == "ab \ufffd"
            assert asset.tags == {"t": "v", "s": "\ufffd"}
            bulk = list(db.scalars(sa.select(Asset.name).where(Asset.natural_key.like("bulk%"))))
            assert sorted(bulk) == [f"n{i}" for i in range(5)]
            assert sorted(db.scalars(sa.select(Vendor.name))) == ["vone", "vtwo"]
            # A NUL in a query parameter is not an error either.
            assert db.scalar(sa.select(Asset.id).where(Asset.natural_key == "k\x001")) == asset.id
    finally:
        engine.dispose()


# ---------------------------------------------------------------- through the input boundaries

def _estate() -> dict:
    vendor = "ACME <b>Corp</b>'; --"
    return {
        "version": 1,
        "vendors": [{"name": vendor, "aliases": [IMG], "products": [{"name": SCRIPT}]}],
        "assets": [
            {"key": f"hostile:{i}", "name": name, "kind": "vm", "owner": IMG,
             "tags": {"note": name, "k<i>": "v"},
             "software": [{"vendor": vendor, "product": SCRIPT, "version": "1.0"}]}
            for i, name in enumerate(HOSTILE + [LONG_NAME])
        ],
    }


@pytest.fixture
def hostile_app(any_db_url: str, tmp_path: Path) -> Iterator:
    app = make_test_app(any_db_url, tmp_path / "instance", WTF_CSRF_ENABLED=False)
    with app.app_context():
        db = get_session()
        import_estate(db, _estate(), source_name="hostile.yaml", actor="test")
        db.commit()
    engine = make_engine(any_db_url)
    try:
        run_collection(engine, _HostileCollector())
    finally:
        engine.dispose()
    yield app
    app.extensions["planb_engine"].dispose()


class _HostileCollector:
    name = "hostile"

    def describe_scope(self) -> str:
        return "hostile"

    def collect(self, progress):  # type: ignore[no-untyped-def]
        assets = [AssetRecord(natural_key=f"collected:{i}", name=name, kind="vm", provider="aws",
                              region="eu-west-1", tags={"Name": name, "x\x00": SCRIPT})
                  for i, name in enumerate(COLLECTED)]
        software = [SoftwareRecord(asset_key=a.natural_key, name=SCRIPT, publisher=name, version="1\x00")
                    for a, name in zip(assets, COLLECTED)]
        yield ScopeBatch(scope_key="hostile:scope", assets=assets, software=software)


def test_hostile_strings_are_stored(hostile_app):
    with hostile_app.app_context():
        db = get_session()
        names = dict(db.execute(sa.select(Asset.natural_key, Asset.name)).all())
        for i, name in enumerate(HOSTILE + [LONG_NAME]):
            assert names[f"hostile:{i}"] == name
        for i, name in enumerate(COLLECTED):
            stored = names[f"collected:{i}"]
            # Always storable, and cleaned of control characters by the collectors' ingest.
            assert "\x00" not in stored and not re.search("[\ud800-\udfff]", stored)
            assert stored == sanitize_text(name)
        publishers = set(db.scalars(sa.select(UnattributedSoftware.publisher)))
        assert "Robert'); DROP TABLE assets;--" in publishers
        # The SQL fragments were data: every table is still there.
        assert db.scalar(sa.select(sa.func.count(Asset.id))) == len(HOSTILE) + 1 + len(COLLECTED)
        assert db.scalar(sa.select(Vendor.name).where(Vendor.name.like("ACME%"))) == "ACME <b>Corp</b>'; --"
        tags = db.scalar(sa.select(Asset.tags).where(Asset.natural_key == "hostile:0"))
        assert tags == {"note": SCRIPT, "k<i>": "v"}
        for value in db.scalars(sa.select(AuditEvent.summary)):
            assert "\x00" not in (value or "")


def _asset_ids(app) -> list[int]:  # type: ignore[no-untyped-def]
    with app.app_context():
        return list(get_session().scalars(sa.select(Asset.id).order_by(Asset.id)))


def test_pages_escape_hostile_strings(hostile_app):
    client = hostile_app.test_client()
    create_user_and_login(hostile_app, client, "admin")
    pages = [rule.rule for rule in hostile_app.url_map.iter_rules()
             if "GET" in rule.methods and not rule.arguments and not rule.rule.startswith("/api/")
             and rule.endpoint not in ("static", "health.healthz")]
    pages += [f"/assets/{i}" for i in _asset_ids(hostile_app)]
    with hostile_app.app_context():
        vendor_ids = list(get_session().scalars(sa.select(Vendor.id)))
    pages += [f"/vendors/{i}" for i in vendor_ids]
    pages += ["/assets/?q=" + SCRIPT, "/admin/audit"]
    shown = 0
    for path in pages:
        response = client.get(path)
        assert response.status_code in (200, 400, 404), (path, response.status_code)
        if response.mimetype != "text/html":
            continue
        html = response.get_data(as_text=True)
        for bad in FORBIDDEN_IN_HTML:
            assert bad not in html, f"{path} shows {bad!r} unescaped"
        shown += html.count("&lt;script&gt;alert(")
    assert shown >= 3  # the hostile names really were on the pages, escaped


def test_api_returns_hostile_strings_as_json_data(hostile_app):
    token = create_api_token(hostile_app, "read")
    response = hostile_app.test_client().get("/api/v1/assets?limit=500", headers=bearer(token))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    names = {item["key"]: item["name"] for item in response.get_json()["items"]}
    assert names["hostile:0"] == SCRIPT and names[f"hostile:{len(HOSTILE)}"] == LONG_NAME


def test_too_long_names_are_refused_naming_the_field(app):
    from inventory.estate.importer import EstateError
    document = {"version": 1, "assets": [{"key": "k", "name": "x" * 301, "kind": "vm"}]}
    with app.app_context(), pytest.raises(EstateError) as info:
        import_estate(get_session(), document, source_name="long.yaml", actor="test")
    assert info.value.field == "assets[0].name"


def test_api_refuses_oversized_estate_with_413(sqlite_url, tmp_path):
    app = make_test_app(sqlite_url, tmp_path / "i", MAX_CONTENT_LENGTH=10_000)
    token = create_api_token(app, "write")
    document = {"version": 1, "assets": [{"key": f"k{i}", "name": "n" * 200, "kind": "vm"} for i in range(100)]}
    response = app.test_client().post("/api/v1/estate", json=document, headers=bearer(token))
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"
    with app.app_context():
        assert get_session().scalar(sa.select(sa.func.count(Asset.id))) == 0


def test_unknown_fields_are_reported_not_dropped(app, write_token):
    document = {"version": 1, "assets": [{"key": "k", "name": "n", "kind": "vm", "colour": "red"}]}
    response = app.test_client().post("/api/v1/estate", json=document, headers=bearer(write_token))
    assert response.status_code == 422
    body = response.get_json()
    assert "colour" in body["message"] and body["field"].startswith("assets[0]")
    response = app.test_client().get("/api/v1/assets?colour=red", headers=bearer(write_token))
    assert response.status_code == 400 and response.get_json()["field"] == "colour"


def test_blast_radius_svg_escapes_names():
    from inventory.services.graph_svg import render
    # Names as stored: the database layer has already dropped NUL bytes (invalid in XML).
    hits = [{"asset_id": i, "name": sanitize_text(name), "kind": "service" if i == 0 else "vm", "status": "down",
             "hops": 0 if i else 1, "criticality": "high", "plans": [{"name": IMG, "status": "stale"}],
             "path": [{"asset_id": 1}, {"asset_id": i}]}
            for i, name in enumerate(HOSTILE)]
    svg = str(render({"hits": hits}, asset_url=lambda i: f"/assets/{i}?x=\"><script>").svg)
    root = ET.fromstring(svg)  # well-formed: nothing broke out of its text node or attribute
    tags = {el.tag.split("}")[-1] for el in root.iter()}
    assert "script" not in tags and "img" not in tags
    assert not any(attr.startswith("on") for el in root.iter() for attr in el.attrib)
    assert "名前" in svg


# ---------------------------------------------------------------- refused where people send it

@pytest.mark.parametrize("bad,message", [("nul\x00byte", "NUL"), ("lone \ud800", "surrogate")])
def test_estate_import_refuses_unstorable_text_naming_the_field(any_db_url, tmp_path, bad, message):
    app = make_test_app(any_db_url, tmp_path / "i")
    token = create_api_token(app, "write")
    document = {"version": 1, "assets": [{"key": "ok", "name": "fine", "kind": "vm"},
                                         {"key": "k", "name": "n", "kind": "vm", "tags": {"t": bad}}]}
    response = app.test_client().post("/api/v1/estate", json=document, headers=bearer(token))
    assert response.status_code == 422
    body = response.get_json()
    assert body["field"] == "assets[1].tags.t" and message in body["message"]
    with app.app_context():
        assert get_session().scalar(sa.select(sa.func.count(Asset.id))) == 0
    app.extensions["planb_engine"].dispose()


def test_api_bodies_refuse_unstorable_text_naming_the_field(app, write_token):
    response = app.test_client().post("/api/v1/plans", json={"name": "plan\x00name"},
                                      headers=bearer(write_token))
    assert response.status_code in (400, 422)
    assert response.get_json()["field"] == "name"


# ---------------------------------------------------------------- cleaned where collectors read it

def test_collected_text_is_cleaned_of_control_characters(hostile_app):
    with hostile_app.app_context():
        names = dict(get_session().execute(sa.select(Asset.natural_key, Asset.name)).all())
    for i, name in enumerate(COLLECTED):
        assert names[f"collected:{i}"] == sanitize_text(name)
