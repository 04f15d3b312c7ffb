"""The graph on disk: written once, mapped by every process that needs it.

A fresh process — a CLI call, a new gunicorn worker, a restarted pod — would
otherwise read ~1.5M rows and build the graph's arrays (seconds at 100k assets).
Instead it maps the newest snapshot: one file per database and inventory version,
``graph-<database>-<lineage>-<version>.planb-graph`` in ``PLANB_GRAPH_SNAPSHOT_DIR``
(default ``<instance>/graph-snapshots``), whose arrays are views of the file's
pages.  Opening it costs milliseconds, and every process that maps it shares the
same pages of the page cache instead of holding a copy (a private copy-on-write
mapping: nothing is ever written back).

* **Never served stale.**  A snapshot only stands in for the graph it was written
  from; the loader checks its counters against the database's (same database,
  same lineage) and, when the inventory has moved on, patches it forward from the
  change log (``inventory.impact.changes``) or reloads the parts that changed.
* **Atomic, several writers.**  Written to a temporary file in the same folder,
  flushed, then renamed over the final name: a reader sees a whole file or none,
  and two processes writing the same version write the same bytes.  Older
  versions of the same database are removed (a process that still maps one keeps
  its pages).  A process that finds no usable snapshot takes a lock on the folder
  while it loads from the database and writes one, so workers that start together
  wait for it and map its file instead of each loading the database.
* **Trusted like the instance folder.**  The file holds pickled Python objects
  (names, plans), so it is only read when it and its folder belong to this user and
  nobody else can write them; the folder is created private (0700).

Layout: an 8-byte magic, the header length, a JSON header (format, array dtypes,
shapes and offsets, total size), the arrays (64-byte aligned), then the pickled
objects.  ``FORMAT`` changes whenever the graph's fields do: an older file is
ignored.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import pickle
import re
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from sqlalchemy.engine import Engine

from inventory import config
from inventory.impact.columns import StringColumn

log = logging.getLogger("planb.impact")

MAGIC = b"PLANBGR1"
FORMAT = 1
SUFFIX = ".planb-graph"
# Smaller graphs load from the database in tens of milliseconds: no file for them.
MIN_ASSETS = 5000
# A process writes the snapshot of a patched graph at most this often (a full load's at once).
PATCHED_EVERY_SECONDS = 30.0
# How long a process that finds no snapshot waits for another that is writing one.
LOCK_WAIT_SECONDS = 60.0
KEEP = 2                      # versions kept per database
_ALIGN = 64

_configured_instance: Path | None = None
_last_write: dict[str, float] = {}
_warned: set[str] = set()
_writer_lock = threading.Lock()
_pending: dict[str, tuple[Any, Engine]] = {}
_writer: threading.Thread | None = None

ASSET_STATE = ("ids", "id_to_idx", "present", "kind_code", "provider_code", "account_code", "region_code",
               "os_code", "env_code", "crit_code", "owner_code", "min_up", "is_manual", "scope_code",
               "first_seen", "retired_at", "tags_code", "alive_now", "is_service", "service_idx",
               "e_dnt", "e_dep", "e_kind", "e_soft", "e_live")
OBJECT_STATE = ("counters", "dialect", "n", "edges_canonical", "kinds", "providers", "account_values",
                "region_values", "os_values", "env_values", "owner_values", "scope_values", "tags_values",
                "regions", "accounts", "environments", "edge_kinds", "member_kind", "vendors", "products",
                "vendor_products", "_vendor_by_lower", "plans", "asset_plans", "product_plans", "vendor_plans")
CSR_NAMES = ("hard", "soft", "member", "every", "fwd")


# ---------------------------------------------------------------- where

def use_instance_path(path: str | Path) -> None:
    """The app's instance folder (the default home of the snapshots)."""
    global _configured_instance
    _configured_instance = Path(path)


def directory() -> Path | None:
    """The snapshot folder, or None when snapshots are off."""
    configured = config.get("GRAPH_SNAPSHOT_DIR")
    if configured == "off":
        return None
    if configured:
        return Path(configured).expanduser()
    base = _configured_instance if _configured_instance is not None else config.default_instance_path()
    return base / "graph-snapshots"


def database_key(engine: Engine) -> str:
    """A short name for the database (a hash of its URL without the password)."""
    url = engine.url.render_as_string(hide_password=True)
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _name(key: str, lineage: int, version: int) -> str:
    return f"graph-{key}-{lineage}-{version}{SUFFIX}"


_NAME = re.compile(r"^graph-([0-9a-f]{16})-(-?\d+)-(\d+)" + re.escape(SUFFIX) + "$")


def _files(folder: Path, key: str) -> list[tuple[int, int, Path]]:
    """(version, lineage, path) of this database's snapshots, newest first."""
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for path in entries:
        match = _NAME.match(path.name)
        if match and match.group(1) == key:
            found.append((int(match.group(3)), int(match.group(2)), path))
    return sorted(found, reverse=True)


def _trusted(path: Path) -> bool:
    """Ours, and nobody else may write it (the file holds pickled objects)."""
    try:
        st = path.stat()
    except OSError:
        return False
    ok = st.st_uid == os.geteuid() and not st.st_mode & 0o022
    if not ok and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("impact graph snapshot %s is not private to this user: ignored", path)
    return ok


# ---------------------------------------------------------------- writing

def _arrays_and_objects(graph: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {name: getattr(graph, name) for name in ASSET_STATE}
    objects: dict[str, Any] = {name: getattr(graph, name) for name in OBJECT_STATE}
    for column in ("natural_key", "name"):
        arrays[f"{column}.offsets"], arrays[f"{column}.blob"] = getattr(graph, column).encoded()
    view = graph.current
    for name in CSR_NAMES:
        csr = getattr(view, name)
        arrays[f"view.{name}.indptr"], arrays[f"view.{name}.pairs"] = csr.indptr, csr.pairs
    arrays["view.n_members"] = view.n_members
    groups, parts, start = [], [], 0
    for pid, entries in graph.installs.items():
        for version, idx in entries:
            groups.append((pid, version, start, start + idx.size))
            parts.append(idx)
            start += idx.size
    arrays["installs.idx"] = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
    objects["installs"] = groups
    # Derived data a fresh process would otherwise compute at its first query.
    arrays["key_order"] = graph.key_order
    codes, offsets = graph.totals_codes()
    arrays["totals.codes"], arrays["totals.offsets"] = codes, offsets
    tag_parts, tag_table, start = [], [], 0
    for pair, idx in graph.tag_index().items():
        tag_table.append((pair, start, start + idx.size))
        tag_parts.append(idx)
        start += idx.size
    arrays["tags.idx"] = np.concatenate(tag_parts) if tag_parts else np.empty(0, dtype=np.int32)
    objects["tags"] = tag_table
    order = graph.edge_order()
    if order is not None:
        arrays["edge_order"] = order
    return arrays, objects


def _encode(arrays: dict[str, np.ndarray], objects: dict[str, Any]) -> tuple[bytes, list[tuple[int, np.ndarray]]]:
    """The header, and each array with the offset it goes at."""
    layout: dict[str, Any] = {}
    placed: list[tuple[int, np.ndarray]] = []
    offset = 0
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        layout[name] = [array.dtype.str, list(array.shape), offset]
        placed.append((offset, array))
        offset += -(-array.nbytes // _ALIGN) * _ALIGN
    pickled = pickle.dumps(objects, protocol=pickle.HIGHEST_PROTOCOL)
    header = {"format": FORMAT, "arrays": layout, "objects": [offset, len(pickled)]}
    text = json.dumps(header).encode()
    start = -(-(len(MAGIC) + 8 + len(text)) // _ALIGN) * _ALIGN
    header["data_start"] = start
    header["size"] = start + offset + len(pickled)
    text = json.dumps(header).encode()
    start2 = -(-(len(MAGIC) + 8 + len(text)) // _ALIGN) * _ALIGN
    if start2 != start:   # the two numbers lengthened the header past an alignment boundary
        header["data_start"] = start2
        header["size"] = start2 + offset + len(pickled)
        text = json.dumps(header).encode()
    placed.append((offset, np.frombuffer(pickled, dtype=np.uint8)))
    prefix = MAGIC + struct.pack("<Q", len(text)) + text
    return prefix + b"\0" * (header["data_start"] - len(prefix)), placed


def write(graph: Any, engine: Engine) -> Path | None:
    """Write ``graph``'s snapshot (atomically); its path, or None when snapshots are off or
    the graph is not worth one."""
    folder = directory()
    lineage = graph.lineage()
    if folder is None or lineage is None or graph.version is None:
        return None
    key = database_key(engine)
    target = folder / _name(key, lineage, graph.version)
    if target.exists():
        return target
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    prefix, placed = _encode(*_arrays_and_objects(graph))
    fd, temporary = tempfile.mkstemp(prefix=".graph-", suffix=".tmp", dir=folder)   # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(prefix)
            base = len(prefix)
            for offset, array in placed:
                out.seek(base + offset)
                out.write(memoryview(array).cast("B"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _last_write[key] = time.monotonic()
    # Keep the newest few of this database; drop those of a database this one replaced
    # (another lineage: a recreated or restored database under the same URL).
    mine = [path for _version, file_lineage, path in _files(folder, key) if file_lineage == lineage]
    others = [path for _version, file_lineage, path in _files(folder, key) if file_lineage != lineage]
    for old in mine[KEEP:] + others:
        try:
            old.unlink()
        except OSError:
            pass
    for leftover in folder.glob(".graph-*.tmp"):   # a writer that died mid-way (a CLI exiting)
        try:
            if time.time() - leftover.stat().st_mtime > 600:
                leftover.unlink()
        except OSError:
            pass
    log.info("impact graph snapshot written: %s (%.0f ms)", target.name, (time.perf_counter() - started) * 1000)
    return target


def schedule(graph: Any, engine: Engine) -> None:
    """Write a patched graph's snapshot in the background, at most every
    ``PATCHED_EVERY_SECONDS`` per database (the newest graph waiting wins)."""
    global _writer
    if graph.n < MIN_ASSETS or directory() is None:
        return
    key = database_key(engine)
    if time.monotonic() - _last_write.get(key, -1e9) < PATCHED_EVERY_SECONDS:
        return
    with _writer_lock:
        _pending[key] = (graph, engine)
        if _writer is not None and _writer.is_alive():
            return
        _writer = threading.Thread(target=_write_pending, name="planb-graph-snapshot", daemon=True)
        _writer.start()


def _write_pending() -> None:
    while True:
        with _writer_lock:
            if not _pending:
                return
            key, (graph, engine) = _pending.popitem()
        try:
            write(graph, engine)
        except Exception:  # noqa: BLE001 - a snapshot is an optimisation
            log.warning("writing the impact graph snapshot failed", exc_info=True)
            _last_write[key] = time.monotonic()


def wait_for_writer(timeout: float) -> bool:
    """Wait for this process's background snapshot write, if any; True when none is left."""
    writer = _writer
    if writer is not None:
        writer.join(timeout)
        return not writer.is_alive()
    return True


def _forget_writer_in_child() -> None:
    global _writer
    _writer = None
    _pending.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writer_in_child)


@contextmanager
def exclusive(engine: Engine) -> Iterator[bool]:
    """Hold this database's snapshot lock (True) while loading and writing, so processes
    that start together wait for one load instead of each doing it; False (no lock held)
    when the folder does not exist yet, snapshots are off, or the wait times out."""
    folder = directory()
    try:
        import fcntl
    except ImportError:   # pragma: no cover - not POSIX
        yield False
        return
    if folder is None or not folder.is_dir():
        yield False
        return
    path = folder / f"graph-{database_key(engine)}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- reading

def open_latest(engine: Engine) -> Any:
    """The graph of this database's newest snapshot, or None (no usable file)."""
    folder = directory()
    if folder is None or not folder.is_dir() or not _trusted(folder):
        return None
    for _version, _lineage, path in _files(folder, database_key(engine))[:1]:
        try:
            return read(path)
        except (OSError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as exc:
            log.warning("impact graph snapshot %s unreadable (%s): ignored", path.name, exc)
    return None


def read(path: Path) -> Any:
    """The graph stored at ``path`` (its arrays mapped, not copied)."""
    from inventory.impact.graph import CSR, Graph, View

    if not _trusted(path):
        raise ValueError("not private to this user")
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < len(MAGIC) + 8:
            raise ValueError("truncated")
        mapped = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY)
    if mapped[:len(MAGIC)] != MAGIC:
        raise ValueError("not a graph snapshot")
    (length,) = struct.unpack("<Q", mapped[len(MAGIC):len(MAGIC) + 8])
    header = json.loads(bytes(mapped[len(MAGIC) + 8:len(MAGIC) + 8 + length]))
    if header.get("format") != FORMAT or header.get("size") != size:
        raise ValueError(f"format {header.get('format')} or size differs")
    base = header["data_start"]
    arrays = {}
    for name, (dtype, shape, offset) in header["arrays"].items():
        count = int(np.prod(shape)) if shape else 1
        arrays[name] = np.frombuffer(mapped, dtype=np.dtype(dtype), count=count, offset=base + offset).reshape(shape)
    start, length = header["objects"]
    objects = pickle.loads(mapped[base + start:base + start + length])

    g = Graph()
    for name in ASSET_STATE:
        setattr(g, name, arrays[name])
    for name in OBJECT_STATE:
        setattr(g, name, objects[name])
    g.version = g.counters["version"]
    g.origin = "snapshot"
    for column in ("natural_key", "name"):
        setattr(g, column, StringColumn.decoded(arrays[f"{column}.offsets"], arrays[f"{column}.blob"]))
    flat = arrays["installs.idx"]
    g.installs = {}
    for pid, version, a, b in objects["installs"]:
        g.installs.setdefault(pid, []).append((version, flat[a:b]))
    csrs = {name: CSR(arrays[f"view.{name}.indptr"], arrays[f"view.{name}.pairs"]) for name in CSR_NAMES}
    g.current = View(alive=g.alive_now, hard=csrs["hard"], soft=csrs["soft"], member=csrs["member"],
                     every=csrs["every"], fwd=csrs["fwd"], n_members=arrays["view.n_members"], min_up=g.min_up,
                     extra_members=np.zeros(g.n, dtype=np.int32), edge_mask=g.e_live)
    g._lazy["key_order"] = arrays["key_order"]
    g._lazy["totals_codes"] = (arrays["totals.codes"], arrays["totals.offsets"])
    tags = arrays["tags.idx"]
    g._lazy["tags"] = {tuple(pair): tags[a:b] for pair, a, b in objects["tags"]}
    if "edge_order" in arrays:
        g._lazy["edge_order"] = arrays["edge_order"]
    return g
