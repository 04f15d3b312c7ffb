"""osquery results: a fleet of Windows, Linux and macOS hosts without a Plan B agent.

Accepted files (the format is detected per file):

1. **osquery's results log** (``osqueryd.results.log`` / ``osqueryd.snapshots.log``,
   newline-delimited JSON, any number of hosts), as the filesystem logger writes it:
   - *event format* (differential): ``{"name", "hostIdentifier", "calendarTime",
     "unixTime", "epoch", "counter", "decorations", "action": "added"|"removed",
     "columns": {...}}``;
   - *snapshot format*: the same with ``"action": "snapshot", "snapshot": [{...}, ...]``;
   - *batch format* (``--logger_event_type=false``): ``"diffResults": {"added": [...],
     "removed": [...]}``.
   The state of each (host, table) is replayed in ``unixTime`` order: a snapshot
   replaces it, added/removed rows are applied to it.  Differential results are a
   complete picture only from a query's first run (``counter`` "0", or a new
   ``epoch``); a log that starts mid-stream gives an *incomplete* table.
2. **``osqueryi --json`` output**: a JSON array of rows of one table for one host
   (``osqueryi --json "select * from programs" > programs.json``).  The host comes
   from ``--host`` (or the rows of ``system_info`` in the same import), the table
   from ``--table`` or is recognised from the columns.
3. **An envelope** bundling such outputs: ``{"host": "name", "tables": {"system_info":
   [...], "os_version": [...], "programs": [...]}}`` (or a list of envelopes).

Tables used: ``system_info``, ``os_version``, ``programs`` (Windows), ``deb_packages``,
``rpm_packages``, ``apps`` (macOS) and ``ec2_instance_metadata`` /
``azure_instance_metadata`` (their instance id / vmId merges the host into the AWS/Azure
asset: one machine, one asset).  Scheduled query names are matched to tables by
name ("pack_inventory_deb_packages" → deb_packages), else by their columns; other
queries in the log are ignored.

Files are parsed once, all of them, before anything is written; a results log is read
line by line and its events are spooled per host (in memory, then in a temporary folder
past 64 MB), then replayed a bucket of hosts at a time: memory stays bounded whatever the
size of the log.

One scope per host: ``osquery:<hostIdentifier>``.  It is complete when the host's
``system_info``, ``os_version`` and its platform's package table are present and
complete; otherwise it is applied but retires and removes nothing.

A file that is not valid (bad JSON, a line without its query name or host, rows that
are not objects) rejects the whole import with ``file:line`` and nothing is written.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import itertools
import json
import marshal
import os
import re
import shutil
import struct
import tempfile
import weakref
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from collectors.base import AssetRecord, ProgressFn, ScopeBatch, SoftwareRecord
from inventory.memory import paused_gc

try:  # about twice as fast as ``json`` on a results log; ``json`` still words the errors
    from orjson import dumps as _fast_dumps
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _fast_dumps = None
    _fast_loads = json.loads

NAME = "osquery"

TABLES = ("system_info", "os_version", "programs", "deb_packages", "rpm_packages", "apps",
          "ec2_instance_metadata", "azure_instance_metadata")
PACKAGE_TABLES = ("programs", "deb_packages", "rpm_packages", "apps")

# Column signatures that recognise a table from its rows (most specific first).
_SIGNATURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("ec2_instance_metadata", frozenset({"instance_id", "ami_id"})),
    ("azure_instance_metadata", frozenset({"vm_id", "subscription_id"})),
    ("apps", frozenset({"bundle_identifier"})),
    ("rpm_packages", frozenset({"name", "version", "release", "vendor"})),
    ("deb_packages", frozenset({"name", "version", "maintainer"})),
    ("deb_packages", frozenset({"name", "version", "revision", "arch", "source"})),
    ("programs", frozenset({"name", "version", "publisher", "install_location"})),
    ("programs", frozenset({"name", "version", "publisher", "identifying_number"})),
    ("os_version", frozenset({"name", "version", "major", "minor", "platform"})),
    ("system_info", frozenset({"hostname", "cpu_brand"})),
    ("system_info", frozenset({"hostname", "hardware_vendor"})),
)
_LINUX_PLATFORMS = {"ubuntu", "debian", "rhel", "centos", "fedora", "amzn", "sles", "opensuse", "opensuse-leap",
                    "ol", "rocky", "almalinux", "arch", "alpine", "gentoo", "linux", "manjaro", "nixos", "raspbian"}
_OS_PUBLISHERS = {"windows": "Microsoft Corporation", "darwin": "Apple Inc.", "ubuntu": "Canonical",
                  "debian": "Debian", "rhel": "Red Hat", "centos": "CentOS Project", "fedora": "Red Hat",
                  "amzn": "Amazon Web Services", "sles": "SUSE", "opensuse-leap": "SUSE", "ol": "Oracle"}
_VERSION_PREFIX = re.compile(r"^\d+(\.\d+)*")
_CODENAME_SUFFIX = re.compile(r"\s*\(.*\)$")


class OsqueryFormatError(ValueError):
    """A file that is not osquery output; the message names the file and line."""


@dataclass
class TableState:
    rows: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False
    last_time: int = 0


@dataclass
class HostData:
    identifier: str
    tables: dict[str, TableState] = field(default_factory=dict)
    decorations: dict[str, Any] = field(default_factory=dict)

    def rows(self, table: str) -> list[dict[str, Any]]:
        state = self.tables.get(table)
        return state.rows if state else []

    def first(self, table: str) -> dict[str, Any]:
        rows = self.rows(table)
        return rows[0] if rows else {}


@dataclass
class _Event:
    time: int
    order: tuple[int, int]
    host: str
    table: str
    kind: str  # "snapshot", "added", "removed", "full"
    rows: list[dict[str, Any]]
    counter: str | None
    epoch: str | None
    decorations: dict[str, Any]
    # True when orjson read it, so orjson writes it back exactly (no NaN, no integer past 64 bits)
    plain: bool = False
    # True when its text holds nothing ingest would clean (``_MAY_NEED_CLEANING``)
    clean: bool = False


# -- parsing ----------------------------------------------------------------------------------

def table_for_query(name: str, rows: Sequence[dict[str, Any]]) -> str | None:
    """The osquery table a scheduled query (or an osqueryi output) reports."""
    return _table_by_name(name or "") or table_from_columns(rows)


_TABLES_LONGEST_FIRST = sorted(TABLES, key=len, reverse=True)


@functools.lru_cache(maxsize=4096)
def _table_by_name(name: str) -> str | None:
    """The table a query's name names, if it does (a log repeats a few names millions of times)."""
    lowered = name.lower()
    for table in _TABLES_LONGEST_FIRST:
        if lowered == table or lowered.endswith("_" + table) or lowered.endswith("/" + table) \
                or f"_{table}_" in lowered:
            return table
    return None


def table_from_columns(rows: Sequence[dict[str, Any]]) -> str | None:
    if not rows:
        return None
    columns = set(rows[0])
    for table, required in _SIGNATURES:
        if required <= columns:
            return table
    return None


_TEXT_ONLY = frozenset({str})


def _str_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise OsqueryFormatError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    if set(map(type, row.values())) <= _TEXT_ONLY:
        return row  # the usual case: osquery logs every column as text (keys are text in JSON)
    return {str(k): ("" if v is None else v if isinstance(v, str) else str(v) if not isinstance(v, (dict, list))
                     else json.dumps(v, sort_keys=True)) for k, v in row.items()}


def _str_rows(raw_rows: list[Any], where: str, plain: bool = False) -> list[dict[str, Any]]:
    """``_str_row`` of every row; the usual case (objects of text only) checked in one pass.
    ``plain`` (orjson read them): a float among the values raises ``_Inexact``."""
    if set(map(type, raw_rows)) <= _DICT_ONLY:
        types = set(map(type, chain.from_iterable(map(dict.values, raw_rows))))
        if types <= _TEXT_ONLY:
            return raw_rows
        if plain and float in types:
            raise _Inexact
    return [_str_row(r, where) for r in raw_rows]


_DICT_ONLY = frozenset({dict})


def _decode(line: str | bytes) -> tuple[Any, bool]:
    """The JSON value of a line, and whether orjson read it."""
    try:
        return _fast_loads(line), _fast_dumps is not None
    except ValueError:  # orjson is stricter (integers past 64 bits, NaN); json decides, and words the error
        return json.loads(line), False


def _host_of(event: dict[str, Any]) -> str | None:
    decorations = event.get("decorations") if isinstance(event.get("decorations"), dict) else {}
    for value in (event.get("hostIdentifier"), event.get("hostname"), event.get("host_identifier"),
                  decorations.get("hostname"), decorations.get("host_uuid")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _as_int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0


def parse_results_log(path: str, text: str, file_index: int) -> tuple[list[_Event], int]:
    """Events of one results log given as text; returns (events, number of lines of queries not used)."""
    events: list[_Event] = []
    ignored = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        found, skipped = parse_result_line(path, lineno, line, file_index)
        events.extend(found)
        ignored += skipped
    return events, ignored


def parse_result_line(path: str, lineno: int, line: str, file_index: int) -> tuple[list[_Event], int]:
    """The events of one line of a results log (none for a blank line); (events, lines of
    queries not used).  Raises ``OsqueryFormatError`` naming ``path:lineno``."""
    if not line or line.isspace():
        return [], 0
    try:
        event, plain = _decode(line)
    except json.JSONDecodeError as exc:
        raise OsqueryFormatError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    try:
        events, ignored = _events_of(path, lineno, event, file_index, plain)
        if not _MAY_NEED_CLEANING.search(line):
            for found in events:
                found.clean = True
        return events, ignored
    except _Inexact:   # a number orjson read as a float: read the line as json does
        return _events_of(path, lineno, json.loads(line), file_index, False)


# What the characters ingest cleans (``inventory.validation``: C0 controls but tab, newline and
# carriage return; DEL; lone surrogates) look like in a line of JSON: escaped, or DEL as it is.
# A line without any of these decodes to text ingest need not search (a false alarm at worst).
_MAY_NEED_CLEANING = re.compile(r"\x7f|\\u00[01][0-9a-fA-F]|\\u007[fF]|\\[bf]|\\u[dD][89a-fA-F]")


class _Inexact(Exception):
    """orjson read a number of this line as a float (an integer past 64 bits reads so)."""


def _events_of(path: str, lineno: int, event: Any, file_index: int, plain: bool) -> tuple[list[_Event], int]:
    where = f"{path}:{lineno}"
    if not isinstance(event, dict):
        raise OsqueryFormatError(f"{where}: expected a JSON object (one osquery result per line)")
    name = event.get("name")
    if not isinstance(name, str) or not name:
        raise OsqueryFormatError(f"{where}: result without the scheduled query's \"name\"")
    host = _host_of(event)
    if host is None:
        raise OsqueryFormatError(f"{where}: result without \"hostIdentifier\"")
    decorations = event.get("decorations") if isinstance(event.get("decorations"), dict) else {}
    counter = None if event.get("counter") is None else str(event.get("counter"))
    epoch = None if event.get("epoch") is None else str(event.get("epoch"))
    time = _as_int(event.get("unixTime", event.get("unix_time")))
    action = event.get("action")
    batches: list[tuple[str, list[Any]]] = []
    if "snapshot" in event:
        if not isinstance(event["snapshot"], list):
            raise OsqueryFormatError(f"{where}: \"snapshot\" must be a list of rows")
        batches.append(("snapshot", event["snapshot"]))
    elif "columns" in event:
        if action not in ("added", "removed"):
            raise OsqueryFormatError(f"{where}: \"action\" must be \"added\" or \"removed\", got {action!r}")
        batches.append((action, [event["columns"]]))
    elif "diffResults" in event:
        diff = event["diffResults"]
        if not isinstance(diff, dict) or not all(isinstance(diff.get(k, []), list) for k in ("added", "removed")):
            raise OsqueryFormatError(f"{where}: \"diffResults\" must hold \"added\"/\"removed\" lists")
        batches.append(("removed", diff.get("removed") or []))
        batches.append(("added", diff.get("added") or []))
    else:
        raise OsqueryFormatError(f"{where}: result without \"columns\", \"snapshot\" or \"diffResults\"")
    events = []
    ignored = 0
    if plain and float in set(map(type, decorations.values())):
        raise _Inexact
    for kind, raw_rows in batches:
        rows = _str_rows(raw_rows, where, plain)
        table = table_for_query(name, rows)
        if table is None:
            ignored += 1
            continue
        events.append(_Event(time, (file_index, lineno), host, table, kind, rows, counter, epoch, decorations,
                             plain))
    return events, ignored


def parse_json_output(path: str, data: Any, file_index: int, host: str | None, table: str | None
                      ) -> list[_Event]:
    """``osqueryi --json`` output (a list of rows) or envelope(s) — complete tables."""
    events: list[_Event] = []
    envelopes: list[tuple[str | None, dict[str, Any], str]] = []
    if isinstance(data, list) and data and all(isinstance(e, dict) and "tables" in e for e in data):
        envelopes = [(e.get("host") or e.get("hostIdentifier"), e["tables"], f"{path}: envelope {i + 1}")
                     for i, e in enumerate(data)]
    elif isinstance(data, dict) and "tables" in data:
        envelopes = [(data.get("host") or data.get("hostIdentifier"), data["tables"], path)]
    elif isinstance(data, list):
        rows = [_str_row(r, f"{path}: row {i + 1}") for i, r in enumerate(data)]
        found = table or table_from_columns(rows)
        if found is None:
            raise OsqueryFormatError(
                f"{path}: cannot tell which osquery table these rows come from; pass --table "
                f"(one of {', '.join(TABLES)})")
        envelopes = [(host, {found: data}, path)]
    else:
        raise OsqueryFormatError(f"{path}: expected osqueryi --json output (a list of rows), an envelope "
                                 "{\"host\": ..., \"tables\": {...}}, or an osquery results log")
    for env_host, tables, where in envelopes:
        if not isinstance(tables, dict):
            raise OsqueryFormatError(f"{where}: \"tables\" must map table names to lists of rows")
        the_host = env_host or host
        for table_name, raw_rows in tables.items():
            if table_name not in TABLES:
                continue
            if not isinstance(raw_rows, list):
                raise OsqueryFormatError(f"{where}: table {table_name!r} must be a list of rows")
            rows = [_str_row(r, f"{where}: {table_name} row {i + 1}") for i, r in enumerate(raw_rows)]
            # no host: resolved by load_files from a system_info in the same import, or rejected
            events.append(_Event(0, (file_index, 0), the_host or "", table_name, "full", rows, None, None,
                                 {"_where": where}))
    return events


def _adopt_hosts(events: list[_Event]) -> None:
    """osqueryi outputs without a host belong to the one host whose system_info came with them."""
    hostless = [e for e in events if not e.host]
    if not hostless:
        return
    names = {(e.rows[0].get("hostname") or e.rows[0].get("computer_name") or "").strip()
             for e in hostless if e.table == "system_info" and e.rows}
    names.discard("")
    if len(names) != 1:
        where = hostless[0].decorations.get("_where", "input")
        raise OsqueryFormatError(
            f"{where}: osqueryi output does not say which host it is from; pass --host NAME"
            + (" (the system_info rows name several hosts)" if len(names) > 1 else ""))
    (name,) = names
    for event in hostless:
        event.host = name


class _Spool:
    """Parsed events kept per bucket of hosts, so the hosts can be replayed bucket by bucket
    with bounded memory.  Events are marshalled; they stay in memory until ``MEMORY_LIMIT``
    bytes are buffered, then go to files in a temporary folder (removed with the collector).

    Each event is kept as a small header (host, time, file order, kind, counter, epoch)
    followed by its content (table, kind, rows, decorations): a host's contents, hashed
    in replay order, are its digest (``_HostEvents``), without unmarshalling them."""

    BUCKETS = 256
    MEMORY_LIMIT = 64 * 1024 * 1024
    _HEAD = struct.Struct("<I")

    def __init__(self) -> None:
        self.buffers: list[list[bytes]] = [[] for _ in range(self.BUCKETS)]
        self.buffered = 0
        self.folder: str | None = None
        # host -> its bucket
        self.hosts: dict[str, int] = {}

    @classmethod
    def bucket_of(cls, host: str) -> int:
        return zlib.crc32(host.encode("utf-8", "surrogatepass")) % cls.BUCKETS

    def add(self, event: _Event) -> None:
        bucket = self.hosts.get(event.host)
        if bucket is None:
            bucket = self.hosts[event.host] = self.bucket_of(event.host)
        head = marshal.dumps((event.host, event.time, event.order[0], event.order[1], event.kind,
                              event.counter, event.epoch, event.clean))
        # The contents' bytes must depend on the contents only (they are hashed): orjson's
        # JSON, or marshal version 2 (no back-references) for what orjson cannot write exactly.
        content = (event.table, event.kind, event.rows, event.decorations)
        try:
            encoded = b"j" + _fast_dumps(content) if event.plain else None
        except TypeError:   # orjson.JSONEncodeError: e.g. a lone surrogate
            encoded = None
        data = self._HEAD.pack(len(head)) + head + (encoded or b"m" + marshal.dumps(content, 2))
        self.buffers[bucket].append(data)
        self.buffered += len(data)
        if self.buffered > self.MEMORY_LIMIT:
            self.flush()

    def flush(self) -> None:
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="planb-osquery-")
        for index, buffer in enumerate(self.buffers):
            if buffer:
                with open(os.path.join(self.folder, f"{index:03d}"), "ab") as fh:
                    for data in buffer:
                        fh.write(struct.pack("<I", len(data)))
                        fh.write(data)
                buffer.clear()
        self.buffered = 0

    def _stored(self, index: int) -> Iterator[bytes]:
        if self.folder is not None:
            path = os.path.join(self.folder, f"{index:03d}")
            if os.path.exists(path):
                with open(path, "rb") as fh:
                    while header := fh.read(4):
                        yield fh.read(struct.unpack("<I", header)[0])
        yield from self.buffers[index]

    def hosts_of(self, index: int) -> dict[str, list[tuple[Any, ...]]]:
        """The events of one bucket by host: (time, file, line, kind, counter, epoch, clean, content)
        with ``content`` still marshalled."""
        per_host: dict[str, list[tuple[Any, ...]]] = {}
        size = self._HEAD.size
        for data in self._stored(index):
            n = self._HEAD.unpack_from(data)[0]
            host, *head = marshal.loads(data[size:size + n])
            per_host.setdefault(host, []).append((*head, data[size + n:]))
        return per_host

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


# Part of every host digest: change it when the same results should give other records.
_DIGEST_VERSION = b"planb-osquery-host-records-1"


class _HostEvents:
    """One host's events, sorted in replay order and not yet unmarshalled, and their digest."""

    __slots__ = ("identifier", "events", "digest", "clean")

    def __init__(self, identifier: str, events: list[tuple[Any, ...]]) -> None:
        self.identifier = identifier
        events.sort(key=_replay_order)
        self.events = events
        # A snapshot replaces a table whatever its time and counter: only the contents, in
        # order, decide the records.  Differential results also depend on time and counter.
        differential = any(event[3] not in ("snapshot", "full") for event in events)
        self.clean = all(event[6] for event in events)
        parts = [_DIGEST_VERSION, identifier.encode("utf-8", "surrogatepass")]
        for time, _file, _line, _kind, counter, epoch, _clean, content in events:
            if differential:
                parts.append(marshal.dumps((time, counter, epoch), 2))
            parts.append(struct.pack("<I", len(content)))
            parts.append(content)
        digest = hashlib.blake2b(b"".join(parts), digest_size=16)
        self.digest = digest.hexdigest()

    def replay(self) -> HostData:
        events = []
        for time, file, line, _kind, counter, epoch, _clean, content in self.events:
            view = memoryview(content)[1:]
            table, kind, rows, decorations = _fast_loads(view) if content[:1] == b"j" else marshal.loads(view)
            events.append(_Event(time, (file, line), self.identifier, table, kind, rows, counter, epoch,
                                 decorations))
        return _replay(self.identifier, events)


def _replay_order(event: tuple[Any, ...]) -> tuple[Any, ...]:
    return event[:3]


def _read_file(path: str, index: int, host: str | None, table: str | None, spool: _Spool,
               hostless: list[_Event]) -> int:
    """Parse one file (all of it, so a bad line rejects the import before anything is
    written) into ``spool``; a results log is streamed line by line.  Returns the lines of
    queries not used."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(2000)
            stripped = head.lstrip()
            if not stripped and not fh.read(1):
                raise OsqueryFormatError(f"{path}:1: empty file")
            if stripped[:1] == "[" or (stripped[:1] == "{" and '"tables"' in head):
                text = head + fh.read()
                whole: Any = None
                try:
                    whole = json.loads(text)
                except json.JSONDecodeError as exc:
                    if stripped[0] == "[":
                        raise OsqueryFormatError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
                if whole is not None and (isinstance(whole, list) or "tables" in whole):
                    for event in parse_json_output(path, whole, index, host, table):
                        (spool.add if event.host else hostless.append)(event)
                    return 0
                lines: Iterable[str] = text.splitlines()
            else:
                # Not seek(0): the file may be a pipe (`planb collect osquery <(zcat log.gz)`).
                # The peeked text ends mid-line; finish that line, then stream the rest.
                lines = itertools.chain((head + fh.readline()).splitlines(keepends=True), fh)
            ignored = 0
            for lineno, line in enumerate(lines, start=1):
                events, skipped = parse_result_line(path, lineno, line, index)
                ignored += skipped
                for event in events:
                    spool.add(event)
            return ignored
    except (OSError, UnicodeDecodeError) as exc:
        raise OsqueryFormatError(f"{path}: cannot read: {exc}") from exc


def _replay(identifier: str, events: list[_Event]) -> HostData:
    """A host's tables after its events, in ``unixTime`` order (file order breaks ties)."""
    data = HostData(identifier=identifier)
    events.sort(key=lambda e: (e.time, e.order))
    for event in events:
        data.decorations.update({k: v for k, v in event.decorations.items() if not k.startswith("_")})
        state = data.tables.setdefault(event.table, TableState())
        if event.kind in ("snapshot", "full"):
            state.rows = list(event.rows)
            state.complete = True
        elif event.kind == "added":
            if event.counter == "0" and state.last_time != event.time:
                # the first run of this query (or a new epoch): the added rows are the whole table
                state.rows = []
                state.complete = True
            for row in event.rows:
                if row not in state.rows:
                    state.rows.append(row)
        else:  # removed
            for row in event.rows:
                if row in state.rows:
                    state.rows.remove(row)
        state.last_time = event.time
    return data


class _Index:
    """Every file parsed once (all or nothing), its events spooled by host."""

    def __init__(self, paths: Sequence[str], host: str | None, table: str | None) -> None:
        self.spool = _Spool()
        hostless: list[_Event] = []
        self.ignored = 0
        try:
            with paused_gc():   # millions of short-lived containers, none in a cycle
                for index, path in enumerate(paths):
                    self.ignored += _read_file(path, index, host, table, self.spool, hostless)
                _adopt_hosts(hostless)
                for event in hostless:
                    self.spool.add(event)
        except BaseException:
            self.spool.close()
            raise
        self.hosts = sorted(self.spool.hosts)

    def replayed(self) -> Iterator[HostData]:
        """Every host's data, bucket by bucket (hosts sorted within a bucket)."""
        for host in self.host_events():
            yield host.replay()

    def host_events(self) -> Iterator[_HostEvents]:
        """Every host's events and digest, bucket by bucket (hosts sorted within a bucket)."""
        for bucket in range(_Spool.BUCKETS):
            per_host = self.spool.hosts_of(bucket)
            for identifier in sorted(per_host):
                yield _HostEvents(identifier, per_host.pop(identifier))

    def close(self) -> None:
        self.spool.close()


def load_files(paths: Sequence[str], host: str | None = None, table: str | None = None
               ) -> tuple[dict[str, HostData], int]:
    """Parse every file (all or nothing) and replay the events into per-host table states
    (all in memory: the collector streams instead)."""
    index = _Index(paths, host, table)
    try:
        return {data.identifier: data for data in index.replayed()}, index.ignored
    finally:
        index.close()


# -- transform ----------------------------------------------------------------------------------

def _clean(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def os_family(platform: str | None, platform_like: str | None = None) -> str | None:
    p = (platform or "").lower()
    if p == "windows":
        return "windows"
    if p == "darwin":
        return "macos"
    if p in _LINUX_PLATFORMS or "linux" in p or any(x in _LINUX_PLATFORMS for x in (platform_like or "").split()):
        return "linux"
    return "other" if p else None


def host_records(data: HostData) -> tuple[AssetRecord, list[SoftwareRecord], list[str]]:
    """The asset, its software, and what is missing for the scope to be complete."""
    system = data.first("system_info")
    osv = data.first("os_version")
    ec2 = data.first("ec2_instance_metadata")
    azure = data.first("azure_instance_metadata")
    hostname = (_clean(system.get("hostname")) or _clean(system.get("computer_name"))
                or _clean(data.decorations.get("hostname")) or data.identifier)
    platform = (_clean(osv.get("platform")) or "").lower() or None
    family = os_family(platform, _clean(osv.get("platform_like")))
    name = _clean(osv.get("name"))
    version = _clean(osv.get("version"))
    os_name = name
    if name and version and family != "windows" and not re.search(r"\d", name):
        # "Ubuntu" + "22.04.4 LTS (Jammy Jellyfish)" -> "Ubuntu 22.04.4 LTS"; "macOS" + "14.6.1"
        os_name = f"{name} {_CODENAME_SUFFIX.sub('', version)}"
    os_version = version
    if version and family != "windows":
        match = _VERSION_PREFIX.match(version)
        os_version = match.group(0) if match else version
    attributes = {k: v for k, v in {
        "os_build": _clean(osv.get("build")), "os_platform": platform, "os_codename": _clean(osv.get("codename"))
        if family != "windows" else None, "architecture": _clean(osv.get("arch")),
        "cpu_brand": _clean(system.get("cpu_brand")), "hardware_vendor": _clean(system.get("hardware_vendor")),
        "hardware_model": _clean(system.get("hardware_model")), "host_uuid": _clean(system.get("uuid")),
        "memory_bytes": _clean(system.get("physical_memory")),
        "osquery_host_identifier": data.identifier,
    }.items() if v}
    provider = account = region = zone = cloud_id = None
    if _clean(ec2.get("instance_id")):
        provider, cloud_id = "aws", _clean(ec2.get("instance_id"))
        account, region, zone = _clean(ec2.get("account_id")), _clean(ec2.get("region")), \
            _clean(ec2.get("availability_zone"))
    elif _clean(azure.get("vm_id")):
        provider, cloud_id = "azure", _clean(azure.get("vm_id"))
        account, region, zone = _clean(azure.get("subscription_id")), _clean(azure.get("location")), \
            _clean(azure.get("zone"))
    key = f"host:{hostname.lower()}" if hostname else "host:"
    asset = AssetRecord(natural_key=key, name=hostname or data.identifier, kind="host", provider=provider,
                        account=account, region=region, zone=zone, hostname=hostname,
                        cloud_instance_id=cloud_id, os_family=family, os_name=os_name,
                        os_version=os_version, attributes=attributes)

    software: list[SoftwareRecord] = []
    if os_name:
        software.append(SoftwareRecord(asset_key=key, name=os_name, publisher=_OS_PUBLISHERS.get(platform or ""),
                                       version=os_version, origin="os"))
    # Row values are text (``_str_row``): ``(v or "").strip() or None`` is ``_clean(v)``,
    # written out because this runs for every package of every host.
    append = software.append
    for row in data.rows("programs"):
        name = (row.get("name") or "").strip()
        if name:
            append(SoftwareRecord(key, name, (row.get("publisher") or "").strip() or None,
                                  (row.get("version") or "").strip() or None))
    for row in data.rows("deb_packages"):
        name = (row.get("name") or "").strip()
        status = row.get("status")
        if name and (not status or status.startswith("install ok installed")):
            append(SoftwareRecord(key, name, (row.get("maintainer") or "").strip() or None,
                                  (row.get("version") or "").strip() or None))
    for row in data.rows("rpm_packages"):
        name = (row.get("name") or "").strip()
        if name and row.get("name") != "gpg-pubkey":
            version = "-".join(v for v in (_clean(row.get("version")), _clean(row.get("release"))) if v) or None
            append(SoftwareRecord(key, name, (row.get("vendor") or "").strip() or None, version))
    for row in data.rows("apps"):
        name = (row.get("name") or "").strip()
        if name:
            append(SoftwareRecord(key, name, (row.get("bundle_identifier") or "").strip() or None,
                                  _clean(row.get("bundle_short_version") or row.get("bundle_version")),
                                  origin="bundle-id"))

    missing = []
    for table in ("system_info", "os_version"):
        if table not in data.tables:
            missing.append(f"{table} missing")
        elif not data.tables[table].complete:
            missing.append(f"{table} incomplete (differential results without the first run)")
    wanted = {"windows": "programs", "macos": "apps"}.get(family or "")
    if family == "linux":
        wanted = "rpm_packages" if platform in ("rhel", "centos", "fedora", "amzn", "sles", "opensuse-leap", "ol",
                                                "rocky", "almalinux") else "deb_packages"
        if "rpm_packages" in data.tables and "deb_packages" not in data.tables:
            wanted = "rpm_packages"
    if wanted:
        if wanted not in data.tables:
            missing.append(f"{wanted} missing")
        elif not data.tables[wanted].complete:
            missing.append(f"{wanted} incomplete (differential results without the first run)")
    return asset, software, missing


# -- the collector -------------------------------------------------------------------------------

def expand_paths(patterns: Iterable[str]) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        paths.extend(matches)
    return paths


class OsqueryCollector:
    """Imports osquery output files.  Files are parsed when the collector is built, so a
    malformed file is rejected before anything is written (``OsqueryFormatError``); the
    parsed events are spooled per host (on disk past a limit), and ``collect`` replays the
    hosts a bucket at a time, so memory stays bounded however large the log."""

    name = NAME
    PROGRESS_EVERY = 10_000

    def __init__(self, paths: Sequence[str], *, host: str | None = None, table: str | None = None) -> None:
        if not paths:
            raise OsqueryFormatError("no osquery files given")
        self.paths = list(paths)
        self._index = _Index(self.paths, host, table)
        weakref.finalize(self, self._index.close)
        self.hosts = self._index.hosts
        self.ignored = self._index.ignored
        if not self.hosts:
            raise OsqueryFormatError(f"{', '.join(self.paths)}: no results for the tables Plan B reads "
                                     f"({', '.join(TABLES)})")

    @staticmethod
    def scope_key(identifier: str) -> str:
        return f"osquery:{identifier}"

    def describe_scope(self) -> str:
        names = ", ".join(self.hosts[:5]) + (" …" if len(self.hosts) > 5 else "")
        return f"osquery {len(self.hosts)} host(s) from {len(self.paths)} file(s): {names}"

    def planned_scopes(self) -> list[str]:
        return [self.scope_key(h) for h in self.hosts]

    def collect(self, progress: ProgressFn) -> Iterator[ScopeBatch]:
        if self.ignored:
            progress(f"osquery: {self.ignored} result line(s) of other queries ignored")
        few = len(self.hosts) <= 100
        unchanged = self.unchanged if len(self.hosts) >= self.DEFER_MIN_HOSTS else None
        for n, host in enumerate(self._index.host_events(), start=1):
            scope_key = self.scope_key(host.identifier)
            if not few and n % self.PROGRESS_EVERY == 0:
                progress(f"osquery: {n} of {len(self.hosts)} hosts read")
            if unchanged is not None and unchanged(scope_key, host.digest):
                # The results the scope's last full comparison applied: ingest most likely
                # skips it, and builds the records only if it does not.
                yield ScopeBatch(scope_key=scope_key, digest=host.digest,
                                 deferred=functools.partial(_fill_batch, host, None, False))
                continue
            batch = ScopeBatch(scope_key=scope_key, digest=host.digest)
            _fill_batch(host, progress, few, batch)
            yield batch

    # Below this many hosts every batch is built at once (the per-host messages stay as they were).
    DEFER_MIN_HOSTS = 100
    #: set by ingest (``Collector.unchanged``): whether a host's digest is the one last applied
    unchanged: Callable[[str, str], bool] | None = None


def _fill_batch(host: _HostEvents, progress: ProgressFn | None, always: bool, batch: ScopeBatch) -> None:
    """A host's records into ``batch`` (its asset, software and completeness); said when
    the host is incomplete, or ``always``."""
    asset, software, missing = host_records(host.replay())
    if progress is not None and (always or missing):
        progress(f"osquery: host {host.identifier}: {len(software)} software records"
                 + (f" ({'; '.join(missing)})" if missing else ""))
    batch.assets, batch.software, batch.complete = [asset], software, not missing
    batch.clean = host.clean
    batch.error = f"host {host.identifier}: {'; '.join(missing)}" if missing else None


# -- registry hooks ----------------------------------------------------------------------------

def from_config() -> OsqueryCollector | None:
    """Configured by ``PLANB_COLLECT_OSQUERY_PATHS``: files or globs, separated by commas or the OS path separator."""
    raw = os.environ.get("PLANB_COLLECT_OSQUERY_PATHS") or ""
    patterns = [p.strip() for p in re.split(rf"[,{re.escape(os.pathsep)}]", raw) if p.strip()]
    if not patterns:
        return None
    paths = expand_paths(patterns)
    if not paths:
        return None
    return OsqueryCollector(paths)
