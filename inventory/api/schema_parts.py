"""Pieces of the OpenAPI document's request schemas, built from the same rules as the shared
input helpers (``inventory.services.updates.clean_text``, ``check_http_url``,
``inventory.validation``) so a schema says what they accept.  Kept apart from
``inventory.api.openapi`` so the API package can use them without importing the document.
"""
from __future__ import annotations

import re
from typing import Any

# An OpenAPI extension on a request property (or a whole body) naming a rule JSON Schema cannot
# express (it depends on the stored data or the clock); breaking it is a 422 naming the field.
RULE = "x-planb-rule"
# No string in a request body may hold NUL (inventory.validation.text_problem); JSON text
# cannot carry lone surrogates as Unicode scalar values, so NUL is the one to spell out.
NO_NUL = "^[^\\u0000]*$"


def rule(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """``schema`` with a rule the schema itself cannot express (``x-planb-rule``), also in its
    description: requests breaking it are well-formed and answered 422 naming the field."""
    described = schema.get("description")
    return {**schema, RULE: text, "description": f"{described}. {text}" if described else text}


def _escape(chars: str) -> str:
    """A regex character-class body in JSON Schema (ECMA-262) spelling."""
    return "".join(c if c.isprintable() and c not in "\\]^" else f"\\u{ord(c):04x}" for c in chars)


# What str.strip() removes (and Python's \s matches), spelled out: ECMA-262's \s differs.
WHITESPACE = _escape("".join(chr(c) for c in range(0x3001) if chr(c).isspace()))


def text(max_len: int | None = None, *, required: bool = False, one_line: bool = False,
         nullable: bool | None = None) -> dict[str, Any]:
    """Free text as ``clean_text`` reads it: trimmed, at most ``max_len`` characters, no NUL;
    ``required``: something besides spaces; otherwise null or blank means "not given"."""
    from inventory.validation import LINE_BREAK_CHARS

    banned = "\\u0000" + (_escape(LINE_BREAK_CHARS) if one_line else "")
    pattern = f"^[^{banned}]*[^{WHITESPACE}{banned}][^{banned}]*$" if required else f"^[^{banned}]*$"
    schema: dict[str, Any] = {"type": "string" if (required or nullable is False) else ["string", "null"],
                              "pattern": pattern}
    if max_len is not None:
        schema["maxLength"] = max_len
    return schema


def http_url(max_len: int = 1000) -> dict[str, Any]:
    """``check_http_url``: an http(s) URL with a host; null, '' or spaces mean none (clears it)."""
    # A printable-ASCII URL (stricter than the service, which the body check then enforces).
    return {"type": ["string", "null"], "maxLength": max_len,
            "pattern": "^ *([Hh][Tt][Tt][Pp][Ss]?://[!\"$-.0->@-Z^-~]+[!-~]*)? *$",
            "description": "An http:// or https:// URL; null or '' clears it"}


def whole_number(minimum: int, maximum: int, *, nullable: bool = False) -> dict[str, Any]:
    """A JSON integer (2.0 counts, as in JSON Schema; "2" and true do not)."""
    return {"type": ["integer", "null"] if nullable else "integer", "minimum": minimum, "maximum": maximum}


def any_case(words: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """One of ``words`` in any case, spaces around allowed (what ``.strip().lower()`` reads)."""
    spelled = ["".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in word) for word in words]
    return {"type": "string", "pattern": f"^[{WHITESPACE}]*(" + "|".join(spelled) + f")[{WHITESPACE}]*$"}


def every_field(schema: dict[str, Any], *, except_: tuple[str, ...] = ()) -> dict[str, Any]:
    """A response object schema whose listed properties are always present (``required``)."""
    return {**schema, "required": [name for name in schema["properties"] if name not in except_]}


def query(name: str, description: str, schema: dict[str, Any] | None = None, *, empty: bool = False,
          array: bool = False, required: bool = False) -> dict[str, Any]:
    """A query parameter; ``empty``: may be sent empty, meaning "not given" (``allowEmptyValue``);
    ``array``: may be repeated (``?tag=a&tag=b``)."""
    item = schema or {"type": "string"}
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "description": description,
                             "schema": {"type": "array", "items": item} if array else item}
    if array:
        param.update(style="form", explode=True)
    if empty:
        param["allowEmptyValue"] = True
    return param


