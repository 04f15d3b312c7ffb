"""Text hygiene at Plan B's input boundaries: one rule per kind of source.

Hostile *content* (markup, SQL fragments, very long or exotic Unicode names) is
data: it is stored as given (within the column limits) and shown safely --
templates escape it, SQL uses bound parameters.  What differs is text no
database can store: NUL characters (PostgreSQL refuses them; SQLite stores them
but many tools cut the string there) and lone UTF-16 surrogates (JSON
``"\\ud800"`` decodes to one; not encodable as UTF-8, so neither driver accepts it).

* **Documents people send** -- the estate file (``planb import``,
  ``POST /api/v1/estate``), API bodies and forms -- are *refused*: a 4xx (or a CLI
  error) that names the field, and nothing is written.  People can fix their
  input, and silently changing it would hide the problem.  Use ``text_problem``.
* **Collected data** -- what collectors read from clouds, hosts and osquery -- is
  *cleaned*: NUL and the other control characters (how an asset name would smuggle
  ANSI escape sequences into CLI tables and logs) are removed, surrogates become
  U+FFFD.  A collector run must not fail, or drop an asset, because one registry
  value is odd, and nobody can fix the source.  Use ``sanitize_text`` / ``sanitize_tree``.
* **Last line of defence**: ``inventory.db`` removes NUL and replaces surrogates in
  every bound parameter and JSON column on both backends, so a boundary that forgets
  can never turn odd text into a driver error (a 500).
"""
from __future__ import annotations

import json
import re
from typing import Any

# C0 controls except \t \n \r, DEL, and lone surrogates.
_UNWANTED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"

NUL_MESSAGE = "text must not contain NUL characters"
SURROGATE_MESSAGE = "text is not valid Unicode (a lone surrogate escape)"


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored (for boundaries that refuse), or None when it can."""
    if "\x00" in value:
        return NUL_MESSAGE
    if _SURROGATE.search(value):
        return SURROGATE_MESSAGE
    return None


def _replace(match: re.Match[str]) -> str:
    return REPLACEMENT if _SURROGATE.match(match.group()) else ""


def sanitize_text(value: str) -> str:
    """``value`` without NUL/control characters, lone surrogates replaced by U+FFFD."""
    if not _UNWANTED.search(value):
        return value
    return _UNWANTED.sub(_replace, value)


def sanitize_optional(value: str | None) -> str | None:
    return None if value is None else sanitize_text(value)


def sanitize_tree(value: Any) -> Any:
    """Sanitize every string in a parsed document or a collected record (keys and values)."""
    if isinstance(value, str):
        return sanitize_text(value)
    if isinstance(value, dict):
        return {sanitize_tree(k) if isinstance(k, str) else k: sanitize_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitize_tree(v) for v in value]
    if isinstance(value, tuple):
        return tuple(sanitize_tree(v) for v in value)
    return value


def has_unwanted(value: str) -> bool:
    return bool(_UNWANTED.search(value))


# One-line text (names, titles) people send: CR, LF and the other line breaks are refused.
ONE_LINE_MESSAGE = "text must be on one line (no line breaks)"
LINE_BREAK_CHARS = "\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029"  # a regex character-class body
_LINE_BREAK = re.compile(f"[{LINE_BREAK_CHARS}]")


def has_line_break(text: str) -> bool:
    """Whether one-line text (a name, a title) holds a CR, LF or other line break."""
    return bool(_LINE_BREAK.search(text))


# The deepest JSON document Plan B takes (API bodies, estate and what-if files): far deeper
# than any it reads (an estate file nests about six levels), far shallower than what would
# exhaust the interpreter's stack in the decoder or in code that walks the document.
MAX_JSON_DEPTH = 64


# What ``json.dumps(..., ensure_ascii=False)`` makes of the characters ``_UNWANTED`` finds:
# DEL and surrogates stay as they are; C0 controls become ``\b``, ``\f`` or ``\u00XX``.
_UNWANTED_IN_JSON = re.compile(r"[\x7f\ud800-\udfff]|\\u00[01][0-9a-fA-F]|\\[bf]")


def tree_may_have_unwanted(tree: Any) -> bool:
    """False only when ``sanitize_tree(tree)`` would change nothing: one JSON dump and one
    search over it, instead of a walk that copies every node (a collector batch holds
    hundreds of thousands).  True may be a false alarm (a literal backslash and ``b``,
    a key JSON cannot dump): walk the tree then."""
    try:
        dumped = json.dumps(tree, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        return True
    return bool(_UNWANTED_IN_JSON.search(dumped))
