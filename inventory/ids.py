"""Row ids as people, URLs and documents give them.

Ids are 32-bit integers on PostgreSQL (and bound as such); a larger number would reach
the database and fail there.  It names nothing, so every caller treats it like any
unknown id: a 404, or the command's usual "no such thing" error.
"""
from __future__ import annotations

from typing import Any

MAX_ID = 2**31 - 1


def looks_like_id(ref: Any) -> bool:
    """True when a reference is meant as an id: an int, or a string of digits."""
    if isinstance(ref, str):
        return ref.strip().isdigit()
    return isinstance(ref, int) and not isinstance(ref, bool)


def as_id(ref: Any) -> int | None:
    """The id ``ref`` names, or None when it cannot name a row: not a whole number
    (a bool is not one), not above 0, or beyond what an id column holds."""
    if isinstance(ref, bool):
        return None
    if isinstance(ref, str):
        text = ref.strip()
        # isdigit() also accepts digits int() refuses ('²'), hence the ASCII check.
        if not (text.isascii() and text.isdigit()):
            return None
        ref = int(text)
    if not isinstance(ref, int) or not 0 < ref <= MAX_ID:
        return None
    return ref
