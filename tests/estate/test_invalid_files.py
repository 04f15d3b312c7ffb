"""``planb import`` of an invalid file: non-zero exit, a message naming file, entry and field,
and the SQLite database file byte-for-byte unchanged."""
from __future__ import annotations

import gc
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from tests.estate.conftest import run_cli, small_document

GOOD = small_document()


def _yaml(mutate) -> str:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(yaml.safe_dump(GOOD))
    mutate(doc)
    return yaml.safe_dump(doc, sort_keys=False)


def _set(path, value):  # type: ignore[no-untyped-def]
    def mutate(doc):  # type: ignore[no-untyped-def]
        for part in path[:-1]:
            doc = doc[part]
        if value is None:
            del doc[path[-1]]
        else:
            doc[path[-1]] = value
    return mutate


# (case, file name, content, words that must all appear in the error)
CASES = [
    ("wrong type", "estate.yaml", _yaml(_set(("assets", 2, "min_up"), "three")),
     ['assets[2] (key "group:web")', "'min_up'", "expected an integer"]),
    ("unknown vendor reference", "estate.yaml",
     _yaml(_set(("assets", 0, "software", 0, "vendor"), "Crowdstrike Holdings")),
     ['assets[0] (key "host:web-1")', "'software[0].vendor'", "unknown vendor 'Crowdstrike Holdings'"]),
    ("duplicate key", "estate.yaml", _yaml(lambda d: d["assets"].append(dict(d["assets"][1]))),
     ['assets[3] (key "host:web-2")', "'key'", "duplicate key 'host:web-2'"]),
    ("missing field", "estate.yaml", _yaml(_set(("services", 0, "name"), None)),
     ['services[0] (key "service:shop")', "'name'", "required field 'name' is missing"]),
    ("unknown field", "estate.yaml", _yaml(_set(("plans", 0, "runbook"), "https://x.example")),
     ['plans[0] (name "Shop fallback")', "'runbook'", "unknown field 'runbook'"]),
    ("http-only link", "estate.yaml", _yaml(_set(("plans", 0, "runbook_url"), "javascript:alert(1)")),
     ['plans[0] (name "Shop fallback")', "'runbook_url'", "not an http:// or https:// link"]),
    ("not YAML at all", "estate.yaml", "version: 1\nassets: [\n  {key: a, name: b\n",
     ["not valid YAML", "line 4, column 1"]),
    ("binary garbage", "estate.yaml", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
     ["not a text file"]),
    ("prose, not an estate", "estate.yaml", "Just some notes about our servers.\n",
     ["expected a mapping", "found a string"]),
    ("broken JSON", "estate.json", '{"version": 1, "assets": [}', ["not valid JSON", "line 1, column 27"]),
    ("duplicate YAML key", "estate.yaml", "version: 1\nvendors: []\nvendors: []\n",
     ["duplicate key 'vendors'", "line 3"]),
]


def _database_bytes(url: str) -> str:
    """Hash of the main database file and its write-ahead log (absent counts as empty)."""
    path = Path(sa.make_url(url).database)
    digest = hashlib.sha256()
    for part in (path, Path(f"{path}-wal")):
        digest.update(part.read_bytes() if part.exists() else b"")
        digest.update(b"|")
    return digest.hexdigest()


def _checkpoint(url: str) -> None:
    """Fold the WAL into the main file so later comparisons see one settled state."""
    conn = sqlite3.connect(sa.make_url(url).database)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


@pytest.fixture
def loaded_sqlite(cli_env, _demo_sqlite_template):  # type: ignore[no-untyped-def]
    """The test's database (the one ``cli_env`` points at) holding the demo estate, checkpointed."""
    url = cli_env["PLANB_DATABASE_URL"]
    shutil.copyfile(_demo_sqlite_template, sa.make_url(url).database)
    _checkpoint(url)
    return url


@pytest.mark.parametrize("case,name,content,words", CASES, ids=[c[0] for c in CASES])
def test_invalid_file_exits_nonzero_and_leaves_the_database_untouched(
        loaded_sqlite, cli_env, tmp_path, case, name, content, words):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = _database_bytes(loaded_sqlite)
    result = run_cli(cli_env, "import", str(path))
    gc.collect()  # close the command's pooled connections (the last close removes an empty WAL)
    assert result.exit_code != 0
    assert result.stderr.startswith(f"Error: {path}: "), result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert _database_bytes(loaded_sqlite) == before


def test_valid_file_does_change_the_database(loaded_sqlite, cli_env, tmp_path):
    """The byte comparison above can see changes: a real import alters the file."""
    path = tmp_path / "estate.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    before = _database_bytes(loaded_sqlite)
    result = run_cli(cli_env, "import", str(path))
    gc.collect()
    assert result.exit_code == 0, result.output
    _checkpoint(loaded_sqlite)
    assert _database_bytes(loaded_sqlite) != before


def test_real_planb_process_exits_nonzero(loaded_sqlite, cli_env, tmp_path):
    path = tmp_path / "notes.yaml"
    path.write_text("version: 1\nvendors:\n  - name: [unclosed\n")
    before = _database_bytes(loaded_sqlite)
    # The console script's entry point, run from this checkout in a process of its own.
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", "from inventory.cli import main; main()", "import", str(path)],
                          env={**os.environ, **cli_env, "PYTHONPATH": str(root)}, cwd=root,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"Error: {path}: not valid YAML" in proc.stderr and "line 4, column 1" in proc.stderr
    assert _database_bytes(loaded_sqlite) == before
