"""One way to answer with a file to save: every download route goes through :func:`attachment`.

The file name often carries data (a vendor name), and WSGI servers such as gunicorn
refuse a response header that is not Latin-1.  So the header always has a quoted
ASCII ``filename="..."`` (for old clients) and, when the name is not plain ASCII,
the RFC 6266/5987 ``filename*=UTF-8''<percent-encoded>`` that browsers prefer."""
from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from flask import Response
from werkzeug.http import quote_header_value

# RFC 5987 attr-char beyond alphanumerics: the same set werkzeug's send_file uses.
_ATTR_CHARS = "!#$&+-.^_`|~"


def ascii_fallback(filename: str) -> str:
    """``filename`` reduced to printable ASCII: accents dropped (é -> e), other letters removed."""
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        stem, ext = filename, ""

    def plain(text: str) -> str:
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
        return "".join(c for c in text if c.isprintable())

    # "blast-radius-яндекс" would become "blast-radius-": tidy the dashes left behind.
    stem = re.sub(r"-{2,}", "-", plain(stem)).strip("-") or "download"
    ext = plain(ext)
    return f"{stem}.{ext}" if ext else stem


def content_disposition(filename: str) -> str:
    """The ``Content-Disposition`` value for a download named ``filename``; always Latin-1."""
    fallback = ascii_fallback(filename)
    value = f"attachment; filename={quote_header_value(fallback, allow_token=False)}"
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe=_ATTR_CHARS)}"
    return value


def attachment(body: str | bytes, mimetype: str, filename: str, *, cache: str = "no-store") -> Response:
    """``body`` as a download named ``filename`` (any Unicode).

    ``no-store`` by default: these files describe a company's weak points."""
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": content_disposition(filename), "Cache-Control": cache})
