"""The reference pages of the documentation site are generated from the code
(``python -m inventory.reference docs/reference``): the CLI from the click commands, the
``PLANB_*`` variables from ``inventory.config``, the estate file from its JSON Schema and the
REST API from the app's own OpenAPI document.  A checked-in page that differs from what the
code generates now is a failure: regenerate it."""
from __future__ import annotations

from pathlib import Path

import pytest

from inventory import reference

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "docs" / "reference"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return reference.generate()


@pytest.mark.parametrize("name", reference.PAGES)
def test_reference_page_is_current(generated: dict[str, str], name: str) -> None:
    path = FOLDER / name
    assert path.is_file(), f"missing {path}: run python -m inventory.reference docs/reference"
    assert path.read_text(encoding="utf-8") == generated[name], (
        f"{path} is out of date: run python -m inventory.reference docs/reference")


def test_the_cli_reference_covers_every_command(generated: dict[str, str]) -> None:
    from tests.test_cli_basics import _all_commands
    from inventory.cli import main

    for path in _all_commands(main):
        assert f"`planb {' '.join(path)}`" in generated["cli.md"], path


def test_the_configuration_reference_covers_every_setting(generated: dict[str, str]) -> None:
    from inventory.config import ENV_PREFIX, SETTINGS

    for name in SETTINGS:
        assert f"`{ENV_PREFIX}{name}`" in generated["configuration.md"], name


def test_the_api_reference_covers_every_operation(generated: dict[str, str]) -> None:
    document = reference.api_document()
    for path, item in document["paths"].items():
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item:
                assert f"`{method.upper()} {path}`" in generated["api.md"], (method, path)
