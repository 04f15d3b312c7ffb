"""The README stays true: its test command is what CI runs, and every setting is documented."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _readme_commands() -> list[str]:
    section = README.split("## Set-up: the two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2
    run_demo, run_tests = commands
    assert "planb demo" in run_demo and "pip install -e ." in run_demo
    assert "pytest" in run_tests and ".[test]" in run_tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert run_tests.strip() in [line.strip() for line in ci_lines]


def test_every_planb_environment_variable_in_the_code_is_documented():
    used: set[str] = set()
    for folder in ("inventory", "collectors"):
        for path in (ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"PLANB_[A-Z0-9_]+", path.read_text()))
    from inventory.config import ENV_PREFIX, SETTINGS
    used |= {ENV_PREFIX + name for name in SETTINGS}
    # Prefixes used to build names (PLANB_COLLECT_AWS_...) are not variables themselves.
    used = {name for name in used if not name.endswith("_")}
    undocumented = sorted(name for name in used if f"`{name}`" not in README)
    assert not undocumented, f"document these in the README's configuration table: {undocumented}"
