"""The blast-radius page: scope form, errors next to fields, results, graph, CSV, print view."""
from __future__ import annotations

import csv
import io
import re

import pytest

from tests.web.estate import XSS_NAME, XSS_TAG
from tests.web.html_checks import check_page

FALCON_711_WINDOWS = "/impact/?vendor=CrowdStrike&products=Falcon+Sensor&version=%3E%3D7.11&os=windows"


def test_empty_form_explains_what_to_ask(viewer_client, estate):
    response = viewer_client.get("/impact/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="s-vendor"' in html and '<datalist id="vendor-suggestions">' in html
    assert '<option value="CrowdStrike">' in html  # vendor suggestions
    assert "Dependency graph" not in html
    assert check_page(html) == []


def test_falcon_query_shows_totals_groups_paths_plans_and_graph(viewer_client, estate):
    response = viewer_client.get(FALCON_711_WINDOWS)
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    assert check_page(html) == []
    # web-1 (Windows, 7.11) is the seed; the gate app runs 7.16 on Windows: seed too.
    # web-2 (Linux) is untouched, so the check-in pool (min_up 1) is degraded, not down.
    assert re.search(r'<span class="stat-value">2</span>\s*<span class="stat-label">hit directly', html)
    groups = html.split('id="services-h"', 1)[1]
    assert "checkin-web-2" not in groups
    checkin = groups.split('<span class="service-name">', 2)
    assert "Check-in" in html and "Boarding" in html
    # the explaining path runs from the hit to its seed, with the edge kinds
    assert re.search(r"checkin-pool <span class=\"edge\">member-of →</span> checkin-web-1", html)
    # plans: Check-in has a current plan; Boarding has none -> a highlighted gap
    assert "Check-in manual fallback" in groups and "plan-gap" in groups and "row-gap" in groups
    # the graph is an inline SVG with one node per hit and links to the asset pages
    svg = html.split('<svg class="graph"', 1)[1].split("</svg>", 1)[0]
    assert f'href="/assets/{estate.ids["web1"]}"' in svg and "node-seed" in svg and "node-service" in svg
    assert "checkin-web-2" not in svg
    assert checkin


def test_bad_scope_is_shown_next_to_the_field_with_suggestions(viewer_client, estate):
    response = viewer_client.get("/impact/?vendor=Crowdstrik")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'id="vendor-error"' in html and "<strong>CrowdStrike</strong>" in html
    assert 'aria-describedby="vendor-error"' in html
    response = viewer_client.get("/impact/?vendor=CrowdStrike&version=%3E%3Dseven")
    assert response.status_code == 400
    assert 'id="version-error"' in response.get_data(as_text=True)
    response = viewer_client.get("/impact/?vendor=CrowdStrike&products=Falcon")
    html = response.get_data(as_text=True)
    assert 'id="products-error"' in html and "<strong>Falcon Sensor</strong>" in html
    response = viewer_client.get("/impact/?vendor=")
    assert response.status_code == 400 and 'id="vendor-error"' in response.get_data(as_text=True)


def test_region_outage_seeds_everything_hosted_there(viewer_client, estate):
    html = viewer_client.get("/impact/?vendor=Microsoft&regions=centralus").get_data(as_text=True)
    groups = html.split('id="services-h"', 1)[1]
    assert "boarding-gate-app" in groups and "checkin-db" in groups
    assert "checkin-web-1" not in groups


def test_csv_export_lists_every_hit_and_defuses_formulas(viewer_client, estate, app):
    from inventory.app_db import get_session
    from inventory.models import Asset, Installation
    with app.app_context():
        db = get_session()
        a = Asset(natural_key="host:formula", name="=HYPERLINK(\"http://evil\")", kind="host",
                  os_family="windows")
        db.add(a)
        db.flush()
        db.add(Installation(asset_id=a.id, product_id=estate.ids["falcon"], version="7.12"))
        db.commit()
    response = viewer_client.get(FALCON_711_WINDOWS.replace("/impact/?", "/impact/export.csv?"))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    names = {r["name"] for r in rows}
    assert {"checkin-web-1", "boarding-gate-app", "checkin-pool", "Check-in", "Boarding"} <= names
    assert "'=HYPERLINK(\"http://evil\")" in names
    seeds = {r["name"] for r in rows if r["seed"] == "yes"}
    assert seeds == {"checkin-web-1", "boarding-gate-app", "'=HYPERLINK(\"http://evil\")"}
    boarding = next(r for r in rows if r["name"] == "Boarding")
    assert boarding["gap"] == "yes" and boarding["status"] == "down"
    bad = viewer_client.get("/impact/export.csv?vendor=Nope")
    assert bad.status_code == 400 and "vendor" in bad.get_data(as_text=True)


def test_printable_view_has_no_form_and_everything_open(viewer_client, estate):
    html = viewer_client.get(FALCON_711_WINDOWS + "&view=print").get_data(as_text=True)
    assert 'id="s-vendor"' not in html
    assert "<details class=\"service\" open>" in html
    assert "Declare an incident" not in html


def test_hostile_names_in_results_and_graph_are_text(viewer_client, estate):
    html = viewer_client.get("/impact/?vendor=CrowdStrike").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS_NAME not in html and XSS_TAG not in html
    svg = html.split('<svg class="graph"', 1)[1].split("</svg>", 1)[0]
    assert "&lt;script&gt;" in svg


def test_scope_values_are_escaped_back_into_the_form(viewer_client, estate):
    html = viewer_client.get('/impact/?vendor="><script>alert(3)</script>').get_data(as_text=True)
    assert "<script>alert(3)" not in html
    assert "&#34;&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in html or "&quot;&gt;&lt;script&gt;" in html


def test_declare_form_only_for_editors(viewer_client, editor_client, estate):
    assert "Declare an incident" not in viewer_client.get(FALCON_711_WINDOWS).get_data(as_text=True)
    html = editor_client.get(FALCON_711_WINDOWS).get_data(as_text=True)
    form = html.split('id="declare-h"', 1)[1].split("</form>", 1)[0]
    assert 'name="csrf_token"' in form and 'action="/incidents/declare"' in form
    for name, value in (("vendor", "CrowdStrike"), ("products", "Falcon Sensor"), ("version", "&gt;=7.11"),
                        ("os", "windows")):
        assert f'name="{name}" value="{value}"' in form


@pytest.mark.parametrize("as_of, status", [("2000-01-01T00:00", 200), ("yesterday", 400)])
def test_as_of(viewer_client, estate, as_of, status):
    response = viewer_client.get(f"/impact/?vendor=CrowdStrike&as_of={as_of}")
    assert response.status_code == status
    if status == 200:  # before anything was first seen: nothing is hit
        assert "Nothing in the inventory is hit by this scope" in response.get_data(as_text=True)
    else:
        assert 'id="as_of-error"' in response.get_data(as_text=True)


def test_repeated_views_still_see_new_data(viewer_client, estate, app):
    """The page reuses a result shown a moment ago, but never past a change to the inventory
    or a new collection run."""
    from inventory.app_db import get_session
    from inventory.models import Asset, CollectionRun, Installation, ScopeResult, ScopeState

    first = viewer_client.get(FALCON_711_WINDOWS).get_data(as_text=True)
    assert "late-windows-host" not in first
    with app.app_context():
        db = get_session()
        a = Asset(natural_key="host:late", name="late-windows-host", kind="host", os_family="windows")
        db.add(a)
        db.flush()
        db.add(Installation(asset_id=a.id, product_id=estate.ids["falcon"], version="7.11.1"))
        db.commit()
    second = viewer_client.get(FALCON_711_WINDOWS).get_data(as_text=True)
    assert "late-windows-host" in second
    assert "Scopes whose latest collection failed" not in second
    with app.app_context():
        db = get_session()
        run = CollectionRun(collector="aws", scope="aws 111 eu-west-1", status="failed", errors=["throttled"])
        db.add(run)
        db.flush()
        db.add(ScopeResult(run_id=run.id, scope_key="aws/111/eu-west-1/ec2", status="failed", error="throttled"))
        db.merge(ScopeState(scope_key="aws/111/eu-west-1/ec2", collector="aws", run_id=run.id, status="failed",
                            error="throttled"))
        db.commit()
    third = viewer_client.get(FALCON_711_WINDOWS).get_data(as_text=True)
    confidence = third.split('class="warning confidence"', 1)[1].split("</div>\n</div>", 1)[0]
    assert "Scopes whose latest collection failed" in confidence and "aws/111/eu-west-1/ec2" in confidence
