"""Click parameter types shared by the commands, so bad input is refused the same way everywhere.

* ``DbId``: a row id.  A number no id column can hold names nothing, so it gets the
  command's usual "no such thing" error instead of reaching the database (which
  would refuse to even compare it).
* ``DATETIME``: an ISO 8601 moment, returned in UTC; a value that leaves years
  1..9999 once converted (``0001-01-01T00:00:00+14:00``) is refused naming the option.
* ``LIMIT``: a row count for ``--limit`` (0 = all), bounded like an id.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from inventory.cli import CLIError
from inventory.ids import MAX_ID, as_id

__all__ = ["DATETIME", "LIMIT", "DbId"]


class DbId(click.ParamType):
    """A row id; ``not_found`` is the error for an id that cannot exist, e.g. ``"no incident {}"``."""

    name = "id"

    def __init__(self, not_found: str) -> None:
        self.not_found = not_found

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            if not (text.isascii() and text.lstrip("-").isdigit()):
                self.fail(f"{value!r} is not a whole number", param, ctx)
            number = int(text)
        if as_id(number) is None:
            # The same answer as for any unknown id: it names no row.
            raise CLIError(self.not_found.format(value))
        return number


class DateTimeParam(click.ParamType):
    """ISO 8601 date or date-time (``Z`` or an offset; UTC when none), as an aware UTC datetime."""

    name = "datetime"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            parsed = value
        else:
            text = str(value).strip()
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                self.fail(f"{value!r} is not an ISO 8601 date/time (e.g. 2024-07-19T04:09:00Z)", param, ctx)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            self.fail(f"{value!r} is out of range (years 1 to 9999 in UTC)", param, ctx)


DATETIME = DateTimeParam()
LIMIT = click.IntRange(min=0, max=MAX_ID)
