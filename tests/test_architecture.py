"""The layers hold and the CLI starts light.

* import-linter's contracts in ``pyproject.toml`` (web/API/CLI above the domain above the
  data model; collectors never reach the web, API, CLI or Flask; no cycles between packages);
* ``planb --help`` and ``import inventory`` / ``import collectors`` import none of the heavy
  libraries; each command is imported only when it runs;
* the CLI's table of one-line helps says what each command's own help says.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from collectors import registry
from inventory.cli import COMMANDS, main, short_help
from inventory.cli.collect import SOURCE_COMMANDS

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("flask", "werkzeug", "sqlalchemy", "alembic", "boto3", "botocore", "azure", "numpy", "scipy",
         "numba", "psycopg", "gunicorn", "jinja2", "yaml", "jsonschema")


def test_import_linter_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a test dependency"
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("code", [
    "import inventory",
    "import collectors, collectors.registry, collectors.base",
    "from inventory.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from inventory.cli import main\ntry:\n    main(['collect', '--help'])\nexcept SystemExit:\n    pass",
])
def test_light_imports_pull_in_no_heavy_library(code: str) -> None:
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_a_command_imports_only_what_it_needs() -> None:
    # 'planb collect osquery --help' needs neither the cloud SDKs nor the web stack.
    loaded = _modules_after("from inventory.cli import main\ntry:\n    main(['collect', 'osquery', '--help'])\n"
                            "except SystemExit:\n    pass")
    assert not loaded & {"boto3", "botocore", "azure", "flask", "numba", "scipy"}, loaded


@pytest.mark.parametrize("table, group", [(COMMANDS, main), (SOURCE_COMMANDS, None)])
def test_the_lazy_table_says_what_each_command_says(table: dict[str, tuple[str, str]], group) -> None:  # type: ignore[no-untyped-def]
    from inventory.cli.collect import collect

    group = group or collect
    ctx = click.Context(group)
    for name, (_target, about) in table.items():
        command = group.get_command(ctx, name)
        assert isinstance(command, click.Command), name
        own = command.get_short_help_str(1000)
        assert short_help(about, 1000) == own, (name, about, own)
    # every source in the registry has its command module
    assert set(SOURCE_COMMANDS) == set(registry.SOURCES)


def test_help_lists_every_command_without_importing_them() -> None:
    result = subprocess.run([sys.executable, "-m", "inventory.cli", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMANDS)
