"""Output helpers: readable tables by default, JSON or CSV for scripts."""
from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any, Sequence

import click

from inventory.cli import CLIError
from inventory.services.blast_view import render_csv  # noqa: F401 - the CLI's CSV writer, re-exported

FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
    show_default=True, help="Output format.")


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=_plain, ensure_ascii=False)


def render_table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
                 headers: Sequence[str] | None = None, max_width: int = 60) -> str:
    headers = list(headers or columns)
    cells = [[_cell(row.get(col), max_width) for col in columns] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


# Control characters other than the line break (shown as a space): ESC, BEL, C1 (CSI)...
# Text people type is stored as given, so a title could carry a terminal escape sequence;
# a table shows it as \x1b rather than letting it recolour or rewrite the terminal.
_TERMINAL_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _cell(value: Any, max_width: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    text = str(_plain(value)).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    text = _TERMINAL_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str,
         headers: Sequence[str] | None = None, empty: str = "Nothing to show.") -> None:
    if fmt == "json":
        click.echo(to_json(list(rows)))
    elif fmt == "csv":
        click.echo(render_csv(rows, columns), nl=False)
    elif not rows:
        click.echo(empty)
    else:
        click.echo(render_table(rows, columns, headers))


def check_output_path(path: Path) -> None:
    """Refuse an output file whose directory does not exist, before any work is done.

    One rule for every file the CLI writes (exports, review packs, backups): a missing
    directory is far more often a typo than a wish, so it is reported, not created."""
    parent = path.parent
    if not parent.is_dir():
        reason = "is not a directory" if parent.exists() else "does not exist"
        raise CLIError(f"cannot write {path}: {parent} {reason}")


def write_text_file(path: Path, text: str) -> None:
    """Write an output file the user named, whole or not at all (a temporary file beside
    it, then a rename); any failure is one line, ``cannot write PATH: reason``."""
    check_output_path(path)
    try:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)  # keep an existing file's permissions
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # what a plain open() would have made
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CLIError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
