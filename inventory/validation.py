"""Text hygiene at Plan B's input boundaries (estate import, collectors, API, forms).

The decision, the same everywhere: hostile *content* is kept and shown safely
(templates escape it; SQL uses bound parameters), but characters that no real
name, tag or publisher contains and that break storage or terminals are
**removed**, not refused:

* NUL (``\\x00``): PostgreSQL cannot store it in text at all (the driver raises),
  SQLite stores it but many tools cut the string there.  Refusing would make a
  whole collector run or estate import fail for one odd registry value.
* the other C0 control characters and DEL, except tab, newline and carriage
  return: they are how an asset name would smuggle ANSI escape sequences into
  ``planb`` CLI tables and logs;
* lone UTF-16 surrogates (JSON ``"\\ud800"`` decodes to one): they cannot be
  encoded as UTF-8, so neither database driver accepts them; they become U+FFFD.

``sanitize_text`` is for each string field, ``sanitize_tree`` for whole parsed
documents (dicts/lists, keys included).  ``inventory.db`` strips NUL bytes and
surrogates from every bound parameter as a last line of defence, so a boundary
that forgets still cannot crash PostgreSQL -- but only the boundaries remove the
other control characters.
"""
from __future__ import annotations

import re
from typing import Any

# C0 controls except \t \n \r, DEL, and lone surrogates.
_UNWANTED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


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
    """Sanitize every string in a parsed JSON/YAML document (keys and values)."""
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
