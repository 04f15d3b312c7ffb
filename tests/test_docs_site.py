"""The documentation site builds strictly: a broken link or anchor, a page left out of the nav or a
nav entry without its page fails the suite (mkdocs.yml sets strict mode and link validation)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file()
    assert (site / "reference" / "openapi.json").is_file()
    assert (site / "img" / "blast-radius.png").is_file()


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = _nav_pages(config["nav"])
    assert len(in_nav) == len(set(in_nav)), "a page is listed twice in the nav"
    docs = ROOT / config.get("docs_dir", "docs")
    pages = {str(path.relative_to(docs)) for path in docs.rglob("*.md")}
    assert sorted(set(in_nav) - pages) == [], "nav entries without a page"
    assert sorted(pages - set(in_nav)) == [], "pages missing from mkdocs.yml's nav"
