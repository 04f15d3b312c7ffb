"""Downloads: a file name from data (a vendor outside Latin-1) must give a header a WSGI
server accepts, and CSV cells with line breaks must stay one quoted cell, formulas defused."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from inventory.app_db import get_session
from inventory.models import ContingencyPlan, Installation, PlanLink, Product, Vendor
from tests.conftest import bearer

ROOT = Path(__file__).resolve().parents[2]
YANDEX = "Яндекс"
YANDEX_Q = "%D0%AF%D0%BD%D0%B4%D0%B5%D0%BA%D1%81"


@pytest.fixture
def yandex(app, estate) -> int:  # type: ignore[no-untyped-def]
    """A vendor named outside Latin-1, with a product installed on one asset."""
    with app.app_context():
        db = get_session()
        vendor = Vendor(name=YANDEX, tier="high")
        db.add(vendor)
        db.flush()
        product = Product(vendor_id=vendor.id, name="Cloud Agent", kind="agent")
        db.add(product)
        db.flush()
        db.add(Installation(asset_id=estate.ids["web1"], product_id=product.id, version="1.0"))
        db.commit()
        return vendor.id


def _check_disposition(value: str, vendor_in_name: bool) -> None:
    value.encode("latin-1")  # what WSGI (gunicorn) demands of every header
    assert value.startswith("attachment; ")
    fallback = re.search(r'; filename="([^"]*)"', value)
    assert fallback and fallback.group(1).isascii() and fallback.group(1).strip()
    extended = re.search(r"; filename\*=UTF-8''(\S+)$", value)
    if vendor_in_name:
        assert extended, value
        assert YANDEX.lower() in unquote(extended.group(1), errors="strict")
        assert extended.group(1).isascii()
    else:
        assert extended is None, value


# Every download route of the dashboard (all use inventory.web.downloads.attachment).
WEB_DOWNLOADS = [
    ("/impact/export.csv?vendor=" + YANDEX_Q, "text/csv", True),
    ("/risk/review/{id}/download.md", "text/markdown", True),
    ("/risk/review/{id}/download.html", "text/html", True),
    ("/risk/export.csv", "text/csv", False),
    ("/risk/export.json", "application/json", False),
]


@pytest.mark.parametrize("url,mimetype,vendor_in_name", WEB_DOWNLOADS, ids=[u for u, _, _ in WEB_DOWNLOADS])
def test_download_headers_are_latin1_with_utf8_filename(viewer_client, yandex, url, mimetype,
                                                        vendor_in_name) -> None:  # type: ignore[no-untyped-def]
    response = viewer_client.get(url.format(id=yandex))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == mimetype
    assert response.headers["Cache-Control"] == "no-store"
    for name, value in response.headers.items():
        value.encode("latin-1"), name
    _check_disposition(response.headers["Content-Disposition"], vendor_in_name)
    if url.startswith("/impact/"):
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert any(r["natural_key"] for r in rows)


def test_api_review_pack_download_header_is_latin1(client, read_token, yandex) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"/api/v1/review/{yandex}?format=markdown", headers=bearer(read_token))
    assert response.status_code == 200, response.get_data(as_text=True)
    _check_disposition(response.headers["Content-Disposition"], True)


def test_only_the_download_helper_writes_content_disposition() -> None:
    # Anyone may set the header, but only from content_disposition(): nobody else spells out
    # "attachment; filename=" by hand.
    writers = {str(p.relative_to(ROOT)) for p in (ROOT / "inventory").rglob("*.py")
               if "attachment;" in p.read_text(encoding="utf-8")}
    assert writers == {"inventory/web/downloads.py"}


# ---------------------------------------------------------------- CSV line breaks and formulas

HOSTILE_PLAN = "Pager\r=cmd|' /C calc'!A0\rfallback\n+SUM(A1)\r\n@x\r\n-2 end"
DEFUSED_PLAN = "Pager\r'=cmd|' /C calc'!A0\rfallback\n'+SUM(A1)\r\n'@x\r\n'-2 end"


@pytest.fixture
def hostile_plan(app, estate) -> None:  # type: ignore[no-untyped-def]
    """A plan covering a CrowdStrike seed, named with CR, LF, CRLF and formula text."""
    with app.app_context():
        db = get_session()
        plan = ContingencyPlan(name=HOSTILE_PLAN, owner="Ops", rto_minutes=15)
        db.add(plan)
        db.flush()
        db.add(PlanLink(plan_id=plan.id, asset_id=estate.ids["web1"]))
        db.commit()


def _unquoted_line_starts(text: str) -> list[str]:
    """The first character of every physical line that starts outside a quoted field."""
    starts, quoted, at_line_start = [], False, True
    for ch in text:
        if at_line_start and not quoted:
            starts.append(ch)
        at_line_start = False
        if ch == '"':
            quoted = not quoted  # an escaped "" toggles twice: same state
        elif ch in "\r\n":
            at_line_start = True
    return starts


def _check_csv(text: str, expected_hits: int, plan_cell: str) -> None:
    rows = list(csv.reader(io.StringIO(text, newline="")))  # raises on an unquoted CR
    assert len(rows) == 1 + expected_hits
    assert all(len(r) == len(rows[0]) for r in rows)
    plans = rows[0].index("plans")
    assert sum(plan_cell in r[plans] for r in rows[1:]) == 1
    assert not any(c in "=+-@" for c in _unquoted_line_starts(text))
    # defused inside the cell as well: no line of the text starts like a formula
    assert not [line for line in re.split(r"\r\n|\r|\n", text) if line[:1] in ("=", "+", "-", "@")]


def _crowdstrike_hits(app) -> int:  # type: ignore[no-untyped-def]
    from inventory.impact import blast_radius, parse_scope
    with app.app_context():
        db = get_session()
        return len(blast_radius(db, parse_scope(db, {"vendor": "CrowdStrike"})).to_dict()["hits"])


def test_web_csv_quotes_line_breaks_and_defuses_formulas(app, viewer_client, hostile_plan) -> None:  # type: ignore[no-untyped-def]
    response = viewer_client.get("/impact/export.csv?vendor=CrowdStrike")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "\n=cmd" not in text and "\r=cmd" not in text
    _check_csv(text, _crowdstrike_hits(app), DEFUSED_PLAN + " (")


def test_cli_csv_quotes_line_breaks_and_defuses_formulas(app, sqlite_url, tmp_path, hostile_plan) -> None:  # type: ignore[no-untyped-def]
    from inventory.cli import main
    env = {"PLANB_DATABASE_URL": sqlite_url, "PLANB_INSTANCE_PATH": str(tmp_path / "cli-instance"),
           "PLANB_SECRET_KEY": "downloads-tests-secret", "PLANB_LOG_LEVEL": "WARNING",
           "PLANB_LOG_FORMAT": "text"}
    result = CliRunner().invoke(main, ["impact", "--vendor", "CrowdStrike", "--format", "csv"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    # stdout_bytes: Result.output turns CRLF into LF, which would hide what the file holds
    _check_csv(result.stdout_bytes.decode("utf-8"), _crowdstrike_hits(app), DEFUSED_PLAN + " (")


@pytest.mark.parametrize("raw,cell", [
    ("=1+1", "'=1+1"),
    ("a\r=1", "a\r'=1"),
    ("a\n+1", "a\n'+1"),
    ("a\r\n@x", "a\r\n'@x"),
    ("a\n-1\nb", "a\n'-1\nb"),
    ("ok\nfine", "ok\nfine"),
    (-1, -1),
])
def test_csv_cell_defuses_formulas_after_line_breaks(raw, cell) -> None:  # type: ignore[no-untyped-def]
    from inventory.services.blast_view import csv_cell
    assert csv_cell(raw) == cell
