"""The graph kept current incrementally answers exactly as a graph loaded from scratch.

Random sequences of writes go through every path that writes the inventory — the
ORM, plain SQL, an estate import, a collector's ingest (including the large-insert
path that runs without its row trigger on SQLite) — on SQLite and PostgreSQL.
After each write the engine's own graph (patched from the change log, or reloaded
where the log cannot say) is compared with a graph loaded from scratch at the same
version: the same content (assets, edges, installations, plans, and every CSR of
the current view row by row, in the order the kernel walks them) and the same
answers (``to_dict()`` of blast radii of every vendor and of narrowed scopes, now,
as of a past moment, and under a what-if).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
import sqlalchemy.orm as so
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors import ingest
from collectors.base import AssetRecord, DependencyRecord, ScopeBatch, SoftwareRecord
from collectors.ingest import run_collection
from inventory.db import make_engine
from inventory.estate.importer import import_estate
from inventory.impact import blast_radius, clear_cache, get_graph
from inventory.impact import graph as graph_module
from inventory.impact.graph import Graph
from inventory.models import Asset, ContingencyPlan, Dependency, Installation, PlanLink, Product, Vendor

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
PAST = datetime(2025, 6, 1, tzinfo=timezone.utc)
REGIONS = ("eu-west-1", "us-east-1", "centralus")
VERSIONS = ("7.10.1", "7.11.2", "7.12.0", None, "unknown")
PRODUCTS = (("Acme", "Agent"), ("Acme", "Db"), ("Globex", "Scanner"))


# ---------------------------------------------------------------- the estate

def reset(engine: sa.Engine) -> None:
    """An empty inventory, then a small estate (ORM) with every feature the graph holds."""
    with so.Session(engine) as db, db.begin():
        for model in (PlanLink, ContingencyPlan, Installation, Dependency, Asset, Product, Vendor):
            db.execute(sa.delete(model))
    with so.Session(engine) as db, db.begin():
        acme, globex = Vendor(name="Acme"), Vendor(name="Globex")
        aws = Vendor(name="AWS", cloud_provider="aws")
        products = {("Acme", "Agent"): Product(vendor=acme, name="Agent"),
                    ("Acme", "Db"): Product(vendor=acme, name="Db"),
                    ("Globex", "Scanner"): Product(vendor=globex, name="Scanner")}
        db.add_all([acme, globex, aws, *products.values()])
        assets = {}
        for i in range(6):
            assets[f"h{i}"] = Asset(natural_key=f"host:h{i}", name=f"h{i}", kind="vm", provider="aws",
                                    region=REGIONS[i % 2], os_family=("windows", "linux")[i % 2],
                                    environment=("production", "staging")[i % 2], criticality="high",
                                    tags={"team": f"t{i % 2}"}, source="test", first_seen=T0, last_seen=NOW)
        assets["a0"] = Asset(natural_key="app:a0", name="a0", kind="application", criticality="medium",
                             tags={}, source="test", first_seen=T0, last_seen=NOW)
        assets["g0"] = Asset(natural_key="tg:g0", name="g0", kind="target_group", min_up=1, tags={},
                             criticality="high", source="test", first_seen=T0, last_seen=NOW)
        assets["s0"] = Asset(natural_key="service:s0", name="s0", kind="service", criticality="critical",
                             tags={}, source="import", first_seen=T0, last_seen=NOW)
        db.add_all(assets.values())
        for dnt, dep, kind, strength in (("g0", "h0", "member-of", "hard"), ("g0", "h1", "member-of", "hard"),
                                         ("a0", "g0", "behind", "hard"), ("a0", "h2", "calls", "soft"),
                                         ("s0", "a0", "calls", "hard"), ("h3", "h2", "runs-on", "hard")):
            db.add(Dependency(dependent=assets[dnt], dependency=assets[dep], kind=kind, strength=strength,
                              first_seen=T0, last_seen=NOW))
        for i in range(6):
            db.add(Installation(asset=assets[f"h{i}"], product=products[("Acme", "Agent")],
                                version=VERSIONS[i % len(VERSIONS)], first_seen=T0, last_seen=NOW))
        db.add(Installation(asset=assets["h2"], product=products[("Globex", "Scanner")], version="3",
                            first_seen=T0, last_seen=NOW))
        plan = ContingencyPlan(name="s0 fallback", review_interval_days=90, last_reviewed=NOW - timedelta(days=5),
                               last_exercised=NOW - timedelta(days=9))
        vendor_plan = ContingencyPlan(name="Acme runbook", review_interval_days=30, last_reviewed=None,
                                      last_exercised=None)
        db.add_all([plan, vendor_plan, PlanLink(plan=plan, asset=assets["s0"]),
                    PlanLink(plan=vendor_plan, vendor=acme)])


# ---------------------------------------------------------------- writes

@dataclass(frozen=True)
class Write:
    what: str
    path: str
    a: int
    b: int
    value: int


WRITES = ("asset_new", "asset_set", "retire", "unretire", "asset_delete", "rename", "dep_add", "dep_set",
          "dep_delete", "install_set", "install_delete", "plan", "import", "collect", "collect_bulk")
writes = st.builds(Write, what=st.sampled_from(WRITES), path=st.sampled_from(("orm", "sql")),
                   a=st.integers(0, 1000), b=st.integers(0, 1000), value=st.integers(0, 1000))


def _ids(conn: Any, sql: str) -> list[Any]:
    return list(conn.execute(sa.text(sql)).all())


class Writer:
    def __init__(self, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.engine = engine
        self.monkeypatch = monkeypatch
        self.serial = 0

    def apply(self, w: Write) -> None:
        self.serial += 1
        getattr(self, w.what)(w)

    def _pick(self, sql: str, n: int) -> Any:
        with self.engine.connect() as conn:
            rows = _ids(conn, sql)
        return rows[n % len(rows)] if rows else None

    def _sql(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    def asset_new(self, w: Write) -> None:
        kind = ("vm", "service", "target_group", "application")[w.value % 4]
        key = f"new:{self.serial}:{w.a}"
        if w.path == "orm":
            with so.Session(self.engine) as db, db.begin():
                db.add(Asset(natural_key=key, name=key, kind=kind, provider=("aws", None)[w.b % 2],
                             region=REGIONS[w.b % 3], os_family=("windows", "linux", None)[w.a % 3],
                             criticality=("low", "critical", "medium")[w.value % 3],
                             min_up=2 if kind == "target_group" else None, tags={"team": f"t{w.b % 3}"},
                             source="test", first_seen=T0 + timedelta(days=w.a), last_seen=NOW))
        else:
            stamp = (T0 + timedelta(days=w.a)).strftime("%Y-%m-%d %H:%M:%S.%f")
            self._sql("INSERT INTO assets (natural_key, name, kind, provider, region, os_family, criticality, "
                      "min_up, tags, attributes, provenance, source, first_seen, last_seen, created_at, updated_at) "
                      "VALUES (:k, :k, :kind, 'aws', :region, 'windows', 'high', :min_up, :tags, '{}', '{}', "
                      "'test', :t, :t, :t, :t)", k=key, kind=kind, region=REGIONS[w.b % 3],
                      min_up=1 if kind == "target_group" else None, tags='{"team": "t9"}', t=stamp)

    def asset_set(self, w: Write) -> None:
        row = self._pick("SELECT id FROM assets ORDER BY id", w.a)
        if row is None:
            return
        column, values = (("criticality", ("low", "high", "critical", "bogus")), ("region", REGIONS + (None,)),
                          ("os_family", ("windows", "linux", "macos")), ("kind", ("vm", "service", "application")),
                          ("min_up", (None, 1, 2)), ("owner", ("ops", "dba", None)),
                          ("environment", ("production", "dev", None)),
                          ("tags", ('{"team": "t1"}', '{"team": "t2", "x": "y"}', "{}")),
                          ("source", ("import", "aws")))[w.b % 9]
        value = values[w.value % len(values)]
        if w.path == "orm" and column != "tags":
            with so.Session(self.engine) as db, db.begin():
                setattr(db.get(Asset, row[0]), column, value)
        else:
            self._sql(f"UPDATE assets SET {column} = :v WHERE id = :i", v=value, i=row[0])

    def retire(self, w: Write) -> None:
        row = self._pick("SELECT id FROM assets WHERE retired_at IS NULL ORDER BY id", w.a)
        if row is not None:
            with so.Session(self.engine) as db, db.begin():
                db.get(Asset, row[0]).retired_at = PAST + timedelta(days=w.value % 300)

    def unretire(self, w: Write) -> None:
        row = self._pick("SELECT id FROM assets WHERE retired_at IS NOT NULL ORDER BY id", w.a)
        if row is not None:
            self._sql("UPDATE assets SET retired_at = NULL WHERE id = :i", i=row[0])

    def asset_delete(self, w: Write) -> None:
        row = self._pick("SELECT id FROM assets ORDER BY id", w.a)
        if row is None:
            return
        if w.path == "orm":
            with so.Session(self.engine) as db, db.begin():
                db.delete(db.get(Asset, row[0]))
        else:
            self._sql("DELETE FROM assets WHERE id = :i", i=row[0])

    def rename(self, w: Write) -> None:
        row = self._pick("SELECT id FROM assets ORDER BY id", w.a)
        if row is not None:
            self._sql("UPDATE assets SET natural_key = :k, name = :k WHERE id = :i",
                      k=f"{'az'[w.value % 2]}:renamed:{self.serial}", i=row[0])

    def dep_add(self, w: Write) -> None:
        a = self._pick("SELECT id FROM assets ORDER BY id", w.a)
        b = self._pick("SELECT id FROM assets ORDER BY id", w.b)
        if a is None or b is None or a[0] == b[0]:
            return
        kind = ("runs-on", "calls", "member-of", "behind")[w.value % 4]
        strength = ("hard", "soft")[w.value % 2]
        with self.engine.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM dependencies WHERE dependent_id = :a AND dependency_id = :b "
                                    "AND kind = :k"), {"a": a[0], "b": b[0], "k": kind}).first():
                return
        if w.path == "orm":
            with so.Session(self.engine) as db, db.begin():
                db.add(Dependency(dependent_id=a[0], dependency_id=b[0], kind=kind, strength=strength,
                                  first_seen=T0 + timedelta(days=w.value), last_seen=NOW))
        else:
            self._sql("INSERT INTO dependencies (dependent_id, dependency_id, kind, strength, source, first_seen, "
                      "last_seen) VALUES (:a, :b, :k, :s, 'test', :t, :t)", a=a[0], b=b[0], k=kind, s=strength,
                      t=(PAST + timedelta(days=w.value % 400)).strftime("%Y-%m-%d %H:%M:%S.%f"))

    def dep_set(self, w: Write) -> None:
        row = self._pick("SELECT id, kind FROM dependencies ORDER BY id", w.a)
        if row is None:
            return
        if w.b % 2:
            self._sql("UPDATE dependencies SET strength = CASE strength WHEN 'hard' THEN 'soft' ELSE 'hard' END "
                      "WHERE id = :i", i=row[0])
        else:
            with self.engine.connect() as conn:   # another kind: the edge's key moves
                kind = ("runs-on", "calls", "member-of", "stores-in")[w.value % 4]
                dup = conn.execute(sa.text(
                    "SELECT 1 FROM dependencies d, dependencies e WHERE d.id = :i AND e.dependent_id = d.dependent_id "
                    "AND e.dependency_id = d.dependency_id AND e.kind = :k"), {"i": row[0], "k": kind}).first()
            if not dup:
                self._sql("UPDATE dependencies SET kind = :k WHERE id = :i", k=kind, i=row[0])

    def dep_delete(self, w: Write) -> None:
        row = self._pick("SELECT id FROM dependencies ORDER BY id", w.a)
        if row is not None:
            if w.path == "orm":
                with so.Session(self.engine) as db, db.begin():
                    db.delete(db.get(Dependency, row[0]))
            else:
                self._sql("DELETE FROM dependencies WHERE id = :i", i=row[0])

    def install_set(self, w: Write) -> None:
        a = self._pick("SELECT id FROM assets ORDER BY id", w.a)
        p = self._pick("SELECT id FROM products ORDER BY id", w.b)
        if a is None or p is None:
            return
        version = VERSIONS[w.value % len(VERSIONS)]
        with so.Session(self.engine) as db, db.begin():
            inst = db.scalar(sa.select(Installation).where(Installation.asset_id == a[0],
                                                           Installation.product_id == p[0]))
            if inst is None:
                db.add(Installation(asset_id=a[0], product_id=p[0], version=version, first_seen=PAST,
                                    last_seen=NOW))
            else:
                inst.version = version

    def install_delete(self, w: Write) -> None:
        row = self._pick("SELECT id FROM installations ORDER BY id", w.a)
        if row is not None:
            self._sql("DELETE FROM installations WHERE id = :i", i=row[0])

    def plan(self, w: Write) -> None:
        with so.Session(self.engine) as db, db.begin():
            plan = ContingencyPlan(name=f"plan {self.serial}", review_interval_days=30 + w.value % 100,
                                   last_reviewed=NOW - timedelta(days=w.a % 200), last_exercised=None)
            target = w.b % 3
            link = PlanLink(plan=plan)
            if target == 0:
                ids = db.scalars(sa.select(Asset.id).order_by(Asset.id)).all()
                if not ids:
                    return
                link.asset_id = ids[w.a % len(ids)]
            elif target == 1:
                link.product_id = db.scalars(sa.select(Product.id).order_by(Product.id)).first()
            else:
                link.vendor_id = db.scalars(sa.select(Vendor.id).order_by(Vendor.id)).first()
            db.add_all([plan, link])

    def _existing_keys(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT natural_key FROM assets ORDER BY id")).scalars())

    def import_(self, w: Write) -> None:
        keys = self._existing_keys()
        new = f"imported:{self.serial}"
        assets: list[dict[str, Any]] = [{
            "key": new, "name": new, "kind": "vm", "provider": "aws", "region": REGIONS[w.b % 3],
            "os": {"family": ("windows", "linux")[w.a % 2]}, "criticality": "high",
            "software": [{"vendor": "Acme", "product": "Agent", "version": VERSIONS[w.value % 3]}]}]
        document: dict[str, Any] = {"version": 1, "vendors": [{"name": "Acme", "products": [{"name": "Agent"}]}],
                                    "assets": assets, "dependencies": []}
        if keys:
            document["dependencies"].append({"from": new, "to": keys[w.value % len(keys)],
                                             "kind": "runs-on", "strength": ("hard", "soft")[w.a % 2]})
        with so.Session(self.engine) as db, db.begin():
            import_estate(db, document, source_name="test.yaml", actor="test")

    def _collect(self, w: Write, bulk: bool) -> None:
        keys = self._existing_keys()
        scope = f"test:{w.a % 3}"
        count = 6 if bulk else 2 + w.b % 3
        records = [AssetRecord(natural_key=f"{scope}:vm{i}", name=f"vm{i}-{w.value % 3}", kind="vm",
                               provider="aws", region=REGIONS[(i + w.b) % 3], os_family="windows")
                   for i in range(count)]
        software = [SoftwareRecord(asset_key=r.natural_key, name="Agent", publisher="Acme",
                                   version=VERSIONS[(i + w.value) % 3]) for i, r in enumerate(records)]
        deps = [DependencyRecord(dependent_key=r.natural_key, dependency_key=keys[(i + w.a) % len(keys)],
                                 kind="runs-on", strength=("hard", "soft")[i % 2])
                for i, r in enumerate(records) if keys and (i + w.value) % 2]

        class Collector:
            name = "aws"

            def describe_scope(self) -> str:
                return "test"

            def collect(self, progress):  # type: ignore[no-untyped-def]
                yield ScopeBatch(scope_key=scope, assets=records, software=software, dependencies=deps)

        with self.monkeypatch.context() as patch:
            if bulk:
                # Large inserts: SQLite drops the row trigger and bumps once (no change rows),
                # PostgreSQL copies (its deferred row triggers still record every row).
                patch.setattr(ingest.BulkWriter, "COPY_MIN_ROWS", 2)
            run = run_collection(self.engine, Collector(), now=NOW)
        assert run.status == "succeeded", run.errors

    def collect(self, w: Write) -> None:
        self._collect(w, bulk=False)

    def collect_bulk(self, w: Write) -> None:
        self._collect(w, bulk=True)


setattr(Writer, "import", Writer.import_)


# ---------------------------------------------------------------- comparing

def canonical(g: Graph) -> dict[str, Any]:
    """Everything the graph says, by asset id (indices and value codes may differ)."""
    ids = g.ids.tolist()
    present = [i for i in range(g.n) if g.present[i]]
    out: dict[str, Any] = {"n_present": len(present)}
    out["assets"] = {ids[i]: (g.natural_key[i], g.name[i], g.kinds[g.kind_code[i]], g.providers[g.provider_code[i]],
                              g.account_values[g.account_code[i]], g.region_values[g.region_code[i]],
                              g.os_values[g.os_code[i]], g.env_values[g.env_code[i]], int(g.crit_code[i]),
                              g.owner_values[g.owner_code[i]], int(g.min_up[i]), bool(g.is_manual[i]),
                              g.scope_values[g.scope_code[i]], int(g.first_seen[i]), int(g.retired_at[i]),
                              g.tags_of(i), bool(g.alive_now[i]), bool(g.is_service[i])) for i in present}
    out["edges"] = sorted((ids[g.e_dnt[e]], ids[g.e_dep[e]], g.edge_kinds[g.e_kind[e]], bool(g.e_soft[e]))
                          for e in range(g.e_dep.size) if g.e_live[e])
    out["installs"] = sorted((pid, str(v), ids[i]) for pid, groups in g.installs.items() for v, idx in groups
                             for i in idx.tolist())
    out["install_groups"] = {pid: [v for v, _idx in groups] for pid, groups in g.installs.items()}
    out["plans"] = (g.plans, {ids[i]: p for i, p in g.asset_plans.items()}, g.product_plans, g.vendor_plans)
    out["catalog"] = (g.vendors, g.products, g.vendor_products)
    out["names"] = (g.regions, g.accounts, g.environments, [ids[i] for i in g.service_idx.tolist()])
    out["key_order"] = [ids[i] for i in g.key_order.tolist() if g.present[i]]
    view = g.current
    for name, csr in view.csrs().items():
        rows = []
        for u in range(g.n):
            for dst, eid in csr.pairs[csr.indptr[u]:csr.indptr[u + 1]].tolist():
                rows.append((ids[u], ids[dst], g.edge_kinds[g.e_kind[eid]], bool(g.e_soft[eid])))
        out[f"csr.{name}"] = rows
    out["n_members"] = {ids[i]: int(view.n_members[i]) for i in present if view.n_members[i]}
    return out


@contextlib.contextmanager
def serving(engine: sa.Engine, graph: Graph) -> Iterator[None]:
    """Queries on ``engine`` answered from ``graph`` (put in the engine's cache slot)."""
    reader = graph_module._reader(engine)
    key = reader.url.render_as_string(hide_password=False)
    with graph_module._cache_lock:
        saved = graph_module._cache.get(key)
        graph_module._cache[key] = graph
    try:
        yield
    finally:
        with graph_module._cache_lock:
            if saved is None:
                graph_module._cache.pop(key, None)
            else:
                graph_module._cache[key] = saved


def scopes(g: Graph) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"vendor": v.name} for v in g.vendors.values()]
    if "Acme" in g._vendor_by_lower.values() or g.find_vendor("Acme") is not None:
        out += [{"vendor": "Acme", "products": ["Agent"], "version": ">=7.11"},
                {"vendor": "Acme", "os": ["windows"], "environments": []},
                {"vendor": "Acme", "tags": {"team": "t1"}}]
        if g.regions:
            out.append({"vendor": "Acme", "regions": [sorted(g.regions)[0]]})
    if g.find_vendor("AWS") is not None and "eu-west-1" in g.regions:
        out.append({"vendor": "AWS", "regions": ["eu-west-1"]})
    return out


def answers(engine: sa.Engine, graph: Graph) -> list[Any]:
    out = []
    with serving(engine, graph), so.Session(engine) as db:
        for scope in scopes(graph):
            out.append(blast_radius(db, scope, now=NOW).to_dict())
            out.append(blast_radius(db, scope, as_of=PAST, now=NOW).to_dict())
        if graph.find_vendor("Acme") is not None:
            what_if = {"add_plans": [{"name": "paper", "vendor": "Acme"}]}
            groups = [graph.natural_key[i] for i in range(graph.n) if graph.present[i] and graph.min_up[i] >= 0]
            if groups:
                what_if["add_replicas"] = [{"asset": groups[0], "count": 1}]
            out.append(blast_radius(db, {"vendor": "Acme"}, what_if=what_if, now=NOW).to_dict())
    return out


def fresh_graph(engine: sa.Engine) -> Graph:
    with graph_module._reader(engine).connect() as conn, conn.begin():
        return Graph.load(conn, graph_module._counters(conn))


def check(engine: sa.Engine) -> Graph:
    """The engine's graph, checked against one loaded from scratch."""
    with so.Session(engine) as db:
        kept = get_graph(db)
    fresh = fresh_graph(engine)
    assert kept.version == fresh.version
    assert canonical(kept) == canonical(fresh)
    assert answers(engine, kept) == answers(engine, fresh)
    return kept


# ---------------------------------------------------------------- the tests

@pytest.fixture
def inc_engine(any_db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    monkeypatch.setenv("PLANB_GRAPH_SNAPSHOT_DIR", "off")
    engine = make_engine(any_db_url)
    yield engine
    engine.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(sequence=st.lists(writes, min_size=1, max_size=6))
def test_incremental_graph_answers_as_a_fresh_one(inc_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch,
                                                  sequence: list[Write]) -> None:
    clear_cache()
    reset(inc_engine)
    writer = Writer(inc_engine, monkeypatch)
    graph = check(inc_engine)
    for w in sequence:
        writer.apply(w)
        before, graph = graph, check(inc_engine)
        if graph is not before:
            # From the previous graph: patched, or the parts reloaded (SQLite's large inserts
            # leave no change rows; a reused id after the newest asset was deleted).
            assert graph.origin in ("patch", "parts")


def test_each_write_path_is_patched_not_reloaded(inc_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_cache()
    reset(inc_engine)
    writer = Writer(inc_engine, monkeypatch)
    graph = check(inc_engine)
    origins = {}
    for n, what in enumerate(("asset_new", "asset_set", "retire", "rename", "dep_add", "dep_set", "dep_delete",
                              "install_set", "install_delete", "plan", "import", "collect", "unretire")):
        for shift, path in enumerate(("orm", "sql")):
            writer.apply(Write(what, path, a=n + 3 * shift, b=n + 1, value=n + 2 + shift))
            before, graph = graph, check(inc_engine)
            assert graph is not before, (what, path)     # every one of these writes changes something
            origins[(what, path)] = graph.origin
    assert set(origins.values()) == {"patch"}, origins
    writer.apply(Write("collect_bulk", "orm", 1, 2, 3))
    expected = "parts" if inc_engine.dialect.name == "sqlite" else "patch"
    assert check(inc_engine).origin == expected
