"""Keyset ("seek") pagination over ordered segments, fast at any page depth.

A page is fetched with ``WHERE (sort columns) > (values of the last row seen)
ORDER BY sort columns LIMIT n+1`` — an index range scan — instead of
``OFFSET``, which reads and throws away every earlier row.

Some orderings are not one plain index order: nullable columns (NULLs sort
first on SQLite and last on PostgreSQL) and ranked values such as criticality
(critical before high before medium before low, which is not alphabetical).
Those are expressed as an ordered list of *segments*, each a predicate plus
columns in index order — for example ``os_family IS NOT NULL`` ordered by
``(os_family, id)`` followed by ``os_family IS NULL`` ordered by ``(id)``.  A
page walks the segments in turn, so every query stays a simple indexed range
and the order is identical on both backends.

The cursor is ``(segment index, values of the boundary row)``, serialised as
URL-safe base64 JSON; it is opaque to users and validated when read back.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import sqlalchemy as sa
import sqlalchemy.orm as so


class CursorError(ValueError):
    """A cursor that was not produced by this module (tampered or out of date)."""


@dataclass(frozen=True)
class Segment:
    """Rows matching ``where`` ordered by ``columns`` (the last one unique, e.g. the id)."""

    where: sa.ColumnElement[bool] | None
    columns: tuple[Any, ...]
    descending: bool = False


@dataclass
class Page:
    rows: list[Any]
    next_cursor: str | None = None
    prev_cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def encode_cursor(direction: str, segment: int, values: Sequence[Any]) -> str:
    raw = json.dumps([direction, segment, list(values)], separators=(",", ":"), default=str)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, segments: Sequence[Segment]) -> tuple[str, int, list[Any]]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        direction, segment, values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise CursorError("malformed page cursor") from exc
    if direction not in ("after", "before") or not isinstance(segment, int) \
            or not 0 <= segment < len(segments) or not isinstance(values, list) \
            or len(values) != len(segments[segment].columns) \
            or not all(v is None or isinstance(v, (str, int, float)) for v in values):
        raise CursorError("malformed page cursor")
    return direction, segment, values


def _seek(columns: tuple[Any, ...], values: Sequence[Any], forward_gt: bool) -> sa.ColumnElement[bool]:
    # Row-value comparison: both SQLite (3.15+) and PostgreSQL turn it into an index range.
    if len(columns) == 1:
        return columns[0] > values[0] if forward_gt else columns[0] < values[0]
    left = sa.tuple_(*columns)
    right = sa.tuple_(*[sa.literal(v, c.type) for c, v in zip(columns, values)])
    return left > right if forward_gt else left < right


def paginate(db: so.Session, base: sa.Select[Any], segments: Sequence[Segment], *,
             limit: int, cursor: str | None = None,
             key_of: Callable[[Any, Segment], Sequence[Any]]) -> Page:
    """Fetch one page of ``base`` in segment order, ``limit`` rows at most.

    ``key_of(row, segment)`` returns the row's values for the segment's columns
    (what the next cursor must remember).
    """
    direction, start, values = ("after", 0, None)
    if cursor:
        direction, start, values = decode_cursor(cursor, segments)

    forward = direction == "after"
    order = range(start, len(segments)) if forward else range(start, -1, -1)
    found: list[tuple[int, Any]] = []
    for index in order:
        segment = segments[index]
        stmt = base
        if segment.where is not None:
            stmt = stmt.where(segment.where)
        if values is not None and index == start:
            # Forward on an ascending segment means "greater than"; each flip inverts it.
            stmt = stmt.where(_seek(segment.columns, values, forward != segment.descending))
        ascending = forward != segment.descending
        stmt = stmt.order_by(*[c.asc() if ascending else c.desc() for c in segment.columns])
        stmt = stmt.limit(limit + 1 - len(found))
        found.extend((index, row) for row in db.execute(stmt).all())
        if len(found) > limit:
            break

    more = len(found) > limit
    found = found[:limit]
    if not forward:
        found.reverse()
    page = Page(rows=[row for _i, row in found])
    if not found:
        return page
    first_seg, first_row = found[0]
    last_seg, last_row = found[-1]
    has_next = more if forward else cursor is not None
    has_prev = (cursor is not None) if forward else more
    if has_next:
        page.next_cursor = encode_cursor("after", last_seg,
                                         key_of(last_row, segments[last_seg]))
    if has_prev:
        page.prev_cursor = encode_cursor("before", first_seg,
                                         key_of(first_row, segments[first_seg]))
    return page
