"""The graph's snapshot on disk: a fresh process maps it instead of loading the database,
never serves it stale, and any number of writers leave a readable file."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
import sqlalchemy.orm as so

from inventory.db import make_engine
from inventory.impact import clear_cache, get_graph, snapshot
from inventory.impact.columns import StringColumn
from inventory.impact import graph as graph_module
from tests.impact.test_incremental import Write, Writer, answers, canonical, check, fresh_graph, reset


@pytest.fixture
def snap_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "snaps"
    monkeypatch.setenv("PLANB_GRAPH_SNAPSHOT_DIR", str(folder))
    monkeypatch.setattr(snapshot, "MIN_ASSETS", 0)        # the test estates are small
    return folder


@pytest.fixture
def snap_engine(any_db_url: str, snap_dir: Path) -> Iterator[sa.Engine]:
    engine = make_engine(any_db_url)
    clear_cache()
    reset(engine)
    yield engine
    engine.dispose()


def graph_of(engine: sa.Engine) -> graph_module.Graph:
    with so.Session(engine) as db:
        return get_graph(db)


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("graph-*" + snapshot.SUFFIX))


def test_a_fresh_process_maps_the_snapshot_and_answers_the_same(snap_engine: sa.Engine, snap_dir: Path) -> None:
    loaded = graph_of(snap_engine)
    assert loaded.origin == "database" and len(files(snap_dir)) == 1   # written by the first load
    clear_cache()                                                       # "a fresh process"
    mapped = graph_of(snap_engine)
    assert mapped.origin == "snapshot" and mapped.version == loaded.version
    assert not mapped.e_dep.flags.owndata and not mapped.current.every.pairs.flags.owndata   # views of the file
    assert canonical(mapped) == canonical(loaded)
    assert answers(snap_engine, mapped) == answers(snap_engine, fresh_graph(snap_engine))


def test_a_snapshot_behind_the_inventory_is_patched_forward_never_served(
        snap_engine: sa.Engine, snap_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph_of(snap_engine)
    writer = Writer(snap_engine, monkeypatch)
    for n, what in enumerate(("asset_new", "dep_add", "install_set", "retire", "plan")):
        writer.apply(Write(what, "orm", n, n + 2, n + 1))
    clear_cache()
    patched = check(snap_engine)        # the same content and answers as a fresh load
    assert patched.origin == "patch"
    # Past what the change log can tell (a bump without change rows): the parts are reloaded.
    with snap_engine.begin() as conn:
        conn.execute(sa.text("UPDATE inventory_version SET version = version + 1, assets_v = assets_v + 1"))
    clear_cache()
    assert check(snap_engine).origin == "parts"


def test_another_database_under_the_same_url_never_uses_the_old_snapshot(
        snap_engine: sa.Engine, snap_dir: Path) -> None:
    graph_of(snap_engine)
    with snap_engine.begin() as conn:     # what a recreated database looks like: another lineage
        conn.execute(sa.text("UPDATE inventory_version SET version = version / 2"))   # and older-looking
    clear_cache()
    assert check(snap_engine).origin == "database"
    # Its file replaced the other database's: the next fresh process maps it.
    assert len(files(snap_dir)) == 1
    clear_cache()
    assert check(snap_engine).origin == "snapshot"


def test_unreadable_or_foreign_files_are_ignored(snap_engine: sa.Engine, snap_dir: Path) -> None:
    graph_of(snap_engine)
    (path,) = files(snap_dir)
    path.write_bytes(path.read_bytes()[:-10])          # truncated (a crash mid-copy)
    clear_cache()
    assert check(snap_engine).origin == "database"
    (path,) = files(snap_dir)
    os.chmod(path, 0o666)                              # anyone may write it: it holds pickles
    clear_cache()
    assert check(snap_engine).origin == "database"


def test_several_writers_leave_one_whole_file(snap_engine: sa.Engine, snap_dir: Path) -> None:
    graph = graph_of(snap_engine)
    for path in files(snap_dir):
        path.unlink()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            snapshot.write(graph, graph_module._reader(snap_engine))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(files(snap_dir)) == 1
    assert not list(snap_dir.glob(".graph-*"))          # no temporary file left behind
    assert canonical(snapshot.read(files(snap_dir)[0])) == canonical(graph)


def test_processes_starting_together_load_the_database_once(snap_engine: sa.Engine, snap_dir: Path) -> None:
    """Workers that find no snapshot wait for the one that loads and writes it, and map its file."""
    snap_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    url = snap_engine.url.render_as_string(hide_password=False)
    script = ("import sys; import sqlalchemy.orm as so; from inventory.db import make_engine; "
              "from inventory.impact import get_graph, snapshot; snapshot.MIN_ASSETS = 0; "
              f"e = make_engine({url!r}); g = get_graph(so.Session(e)); print(g.origin)")
    env = dict(os.environ, PLANB_GRAPH_SNAPSHOT_DIR=str(snap_dir))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    origins = sorted(p.communicate(timeout=300)[0].strip() for p in procs)
    assert origins == ["database", "snapshot", "snapshot"]
    assert len(files(snap_dir)) == 1


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.text(max_size=12), max_size=30), data=st.data())
def test_string_columns_read_the_same_from_a_list_a_file_buffer_and_patches(values, data) -> None:  # type: ignore[no-untyped-def]
    """Names and keys: a Python list (loaded from the database), a UTF-8 buffer with offsets (the
    snapshot), and either with changed and appended strings on top (patches)."""
    listed = StringColumn(list(values))
    buffered = StringColumn.decoded(*listed.encoded())
    n = len(values) + data.draw(st.integers(0, 3))
    changes = data.draw(st.dictionaries(st.integers(0, n - 1), st.text(max_size=8))) if n else {}
    changes.update({i: f"new{i}" for i in range(len(values), n)})
    expected = [changes.get(i, values[i] if i < len(values) else None) for i in range(n)]
    for column in (listed, buffered):
        assert column.tolist() == values and list(column) == values
        patched = column.patched(changes, n)
        assert [patched[i] for i in range(n)] == patched.take(range(n)) == expected
        assert StringColumn.decoded(*patched.encoded()).tolist() == expected
        order = data.draw(st.lists(st.integers(0, n - 1), max_size=20)) if n else []
        assert patched.take(order) == [expected[i] for i in order]
