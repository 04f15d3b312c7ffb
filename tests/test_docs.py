"""The README and the documentation stay true.

* The README's two set-up commands are what CI runs.
* Every ``PLANB_*`` variable the code reads is in the (generated) configuration reference.
* Every ``planb …`` command the README and the tutorials show exists, with the options shown.
* The README's first session and the tutorials run, in fresh processes, on a fresh demo database,
  and print what the pages quote (exit status included).
* Every relative link in the README, CONTRIBUTING.md and docs/ resolves (file and heading).
* A reader gets from the README to the pages the issue names in at most two clicks.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Callable

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"
TUTORIALS = [DOCS / "tutorials" / "demo.md", DOCS / "tutorials" / "july-2024.md"]


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


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_every_planb_environment_variable_in_the_code_is_documented():
    used: set[str] = set()
    for folder in ("inventory", "collectors"):
        for path in (ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"PLANB_[A-Z0-9_]+", path.read_text()))
    from inventory.config import ENV_PREFIX, SETTINGS
    used |= {ENV_PREFIX + name for name in SETTINGS}
    # Prefixes used to build names (PLANB_COLLECT_AWS_...) are not variables themselves.
    used = {name for name in used if not name.endswith("_")}
    reference = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    undocumented = sorted(name for name in used if f"`{name}`" not in reference)
    assert not undocumented, ("add these to inventory/config.py's SETTINGS and regenerate "
                              f"docs/reference/configuration.md: {undocumented}")


# ------------------------------------------------------------------ commands shown in the docs

def _code_blocks(text: str, language: str = "sh") -> list[tuple[str, int]]:
    """(body, end offset) of each fenced block of ``language``."""
    return [(m.group(1), m.end()) for m in re.finditer(rf"```{language}\n(.*?)\n```", text, flags=re.S)]


def _planb_argv(line: str) -> list[str] | None:
    """The arguments of a ``planb …`` (or ``.venv/bin/planb …``) command line, else None."""
    line = line.strip()
    if not re.match(r"^(\S*/)?planb(\s|$)", line):
        return None
    return shlex.split(line, comments=True)[1:]


def _shown_commands(text: str) -> list[list[str]]:
    commands = []
    for body, _end in _code_blocks(text):
        for line in body.splitlines():
            argv = _planb_argv(line)
            if argv is not None:
                commands.append(argv)
    for inline in re.findall(r"`((?:\S*/)?planb [^`]+)`", text):
        argv = _planb_argv(inline.replace("…", ""))
        if argv is not None:
            commands.append(argv)
    return commands


def _resolve(argv: list[str]) -> tuple[click.Command, list[str]]:
    """The click command an argv names, and the arguments left for it."""
    from inventory.cli import main

    command: click.Command = main
    rest = list(argv)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            break
        command, rest = sub, rest[1:]
    return command, rest


@pytest.mark.parametrize("path", [ROOT / "README.md", *TUTORIALS], ids=lambda p: p.name)
def test_every_planb_command_shown_exists_with_its_options(path: Path):
    commands = _shown_commands(path.read_text(encoding="utf-8"))
    assert commands, f"{path.name} shows no planb command"
    for argv in commands:
        command, rest = _resolve(argv)
        assert not isinstance(command, click.Group) or not rest or rest[0].startswith("-"), (
            f"{path.name}: 'planb {' '.join(argv)}' names no command ({rest[0]!r})")
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        options |= {"--help", "-h"}
        for token in rest:
            if token.startswith("--"):
                assert token.split("=", 1)[0] in options, (
                    f"{path.name}: 'planb {' '.join(argv)}': no option {token} (has {sorted(options)})")


Runner = Callable[[list[str]], tuple[int, str]]


def _env(tmp_path: Path) -> dict[str, str]:
    return {"PLANB_DATABASE_URL": f"sqlite:///{tmp_path / 'planb.sqlite3'}",
            "PLANB_INSTANCE_PATH": str(tmp_path / "instance"), "PLANB_LOG_LEVEL": "ERROR"}


def _fresh_processes(tmp_path: Path) -> Runner:
    """Each command in its own process, as a user runs them."""
    env = {**os.environ, **_env(tmp_path)}

    def run(argv: list[str]) -> tuple[int, str]:
        result = subprocess.run([sys.executable, "-m", "inventory.cli", *argv], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        return result.returncode, result.stdout + result.stderr   # the gate's FAIL line is on stderr
    return run


def _in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    """The same commands through click's runner: the tutorials are long, and the README's session
    already checks the fresh-process path."""
    from click.testing import CliRunner

    from inventory.cli import main

    monkeypatch.chdir(tmp_path)

    def run(argv: list[str]) -> tuple[int, str]:
        result = CliRunner().invoke(main, argv, env=_env(tmp_path))
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result.exit_code, result.output
    return run


def _run_page(path: Path, planb: Runner) -> None:
    """Run every planb command of a page's sh blocks in order on a fresh demo database; the text
    block that follows a command block must appear in its output, and the exit status must be
    the one the page implies."""
    status, output = planb(["demo", "--no-serve"])
    assert status == 0, output
    text = path.read_text(encoding="utf-8")
    ran = 0
    for body, end in _code_blocks(text):
        if "pip install" in body:      # the set-up command itself (it serves)
            continue
        output, status = "", 0
        for line in body.splitlines():
            argv = _planb_argv(line)
            if argv is None:
                continue
            code, printed = planb(argv)
            ran += 1
            output += printed
            status = max(status, code)
            assert code in (0, 1), f"{path.name}: planb {' '.join(argv)}\n{printed}"
        quoted = re.match(r"\s*```\n(.*?)\n```", text[end:], flags=re.S)
        if quoted is None:
            assert status == 0, f"{path.name}: {body!r} failed without the page saying so"
            continue
        lines = [line for line in quoted.group(1).splitlines() if line.strip() and line.strip() != "…"]
        squeezed = " ".join(output.split())
        for line in lines:
            assert " ".join(line.split()) in squeezed, (
                f"{path.name} quotes a line the command no longer prints:\n{line}\n--- got ---\n{output[:3000]}")
        # The gate's FAIL is exit status 1; anything else the page shows succeeded.
        expect = 1 if any(line.startswith("FAIL") for line in lines) else 0
        assert status == expect, f"{path.name}: {body!r} exited {status}, the page implies {expect}"
    assert ran >= 3


def test_the_readme_first_session_runs_as_shown(tmp_path: Path):
    _run_page(ROOT / "README.md", _fresh_processes(tmp_path))
    assert (tmp_path / "crowdstrike-review.html").is_file()


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.name)
def test_the_tutorials_run_as_shown(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _run_page(path, _in_process(tmp_path, monkeypatch))


# ------------------------------------------------------------------ links

def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) and GitHub give a heading, for the headings here."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+?)\s*$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


MARKDOWN = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path):
    broken = []
    for link in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):      # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(link)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(link)
    assert not broken, f"{path.relative_to(ROOT)}: broken links {broken}"


def _linked_pages(path: Path) -> set[Path]:
    pages = set()
    for link in _links(path):
        target = link.partition("#")[0]
        if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target) and target.endswith(".md"):
            pages.add((path.parent / target).resolve())
    return pages


@pytest.mark.parametrize("page, must_say", [
    ("docs/how-to/collect-aws.md", "Least-privilege IAM policy"),
    ("docs/deploy.md", "## Kubernetes"),
    ("docs/explanation/blast-radius.md", "**degraded**"),
])
def test_readme_reaches_the_key_pages_in_two_clicks(page: str, must_say: str):
    target = (ROOT / page).resolve()
    assert must_say in target.read_text(encoding="utf-8"), f"{page} no longer answers the question"
    first = _linked_pages(ROOT / "README.md")
    second = {p for page_ in first if page_.exists() for p in _linked_pages(page_)}
    assert target in first | second, f"{page} is more than two clicks from the README"


def test_readme_links_contributing_and_states_the_licence():
    assert "(CONTRIBUTING.md)" in README
    licence = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert f'license = "{licence}"' in README
