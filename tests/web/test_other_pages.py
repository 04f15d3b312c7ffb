"""Overview, vendor and collection-run pages on the small estate, and their empty states."""
from __future__ import annotations

import re

import pytest

from tests.web.estate import XSS_NAME, XSS_TAG
from tests.web.html_checks import check_page


def test_overview_empty_state_explains_how_to_start(viewer_client):
    html = viewer_client.get("/").get_data(as_text=True)
    assert "No assets in the inventory yet" in html and "planb demo" in html
    assert "No collector has run yet" in html
    assert check_page(html) == []


def test_overview_figures(viewer_client, estate):
    response = viewer_client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert re.search(r'<span class="stat-value">8</span>\s*<span class="stat-label">assets in service', html)
    assert re.search(r'<span class="stat-value">2</span>\s*<span class="stat-label">business services', html)
    # Check-in has a current plan, Boarding has none: 50% coverage, Boarding listed as a gap.
    assert re.search(r'<span class="stat-value">50%</span>\s*<span class="stat-label">critical services with a current plan', html)
    assert "Boarding</a>" in html.split('id="cov-h"', 1)[1].split("</section>", 1)[0]
    assert "Old DB restore" in html  # stale plan
    assert "checkin-web-1" in html.split('id="untested-h"', 1)[1].split("</section>", 1)[0]
    conc = html.split('id="conc-h"', 1)[1].split("</section>", 1)[0]
    assert "CrowdStrike" in conc and "Amazon Web Services" in conc
    assert "#1</a>" in html and "badge-partial" in html  # latest run
    assert 'aria-current="page"' in html.split("</nav>", 1)[0]
    assert check_page(html) == []


def test_vendor_list_and_detail(viewer_client, estate):
    html = viewer_client.get("/vendors/").get_data(as_text=True)
    assert check_page(html) == []
    rows = re.findall(r'<a href="/vendors/(\d+)">([^<]+)</a>', html)
    assert {name for _id, name in rows} == {"CrowdStrike", "Microsoft", "Amazon Web Services"}
    assert "2024-01-15" in html and "overdue" in html  # CrowdStrike: latest assessment, review overdue
    assert "never assessed" in html

    html = viewer_client.get(f"/vendors/{estate.ids['crowdstrike']}").get_data(as_text=True)
    assert check_page(html) == []
    assert "Falcon Sensor" in html and "7.11.18110.0 (1)" in html
    assert "No staged content rollout" in html  # open finding
    assert "checkin-web-1" in html.split('id="untested-h"', 1)[1].split("</section>", 1)[0]
    assets_section = html.split('id="assets-h"', 1)[1]
    assert "checkin-web-2" in assets_section and "boarding-gate-app" in assets_section
    assert XSS_NAME not in html and XSS_TAG not in html


def test_vendor_assets_are_paginated(viewer_client, estate, app):
    from inventory.app_db import get_session
    from inventory.models import Asset, Installation
    with app.app_context():
        db = get_session()
        for i in range(30):
            a = Asset(natural_key=f"host:extra-{i}", name=f"extra-{i:02d}", kind="host")
            db.add(a)
            db.flush()
            db.add(Installation(asset_id=a.id, product_id=estate.ids["falcon"], version="7.9"))
        db.commit()
    html = viewer_client.get(f"/vendors/{estate.ids['crowdstrike']}").get_data(as_text=True)
    nxt = re.search(r'rel="next" href="([^"]+)"', html)
    assert nxt, "a second page of assets"
    page2 = viewer_client.get(nxt.group(1).replace("&amp;", "&")).get_data(as_text=True)
    first = set(re.findall(r'>(extra-\d\d)<', html.split('id="assets-h"', 1)[1]))
    second = set(re.findall(r'>(extra-\d\d)<', page2.split('id="assets-h"', 1)[1]))
    assert first and second and not first & second
    assert len(first | second) == 30


def test_missing_vendor_is_404(viewer_client, estate):
    assert viewer_client.get("/vendors/4242").status_code == 404


def test_runs_list_and_detail(viewer_client, estate):
    html = viewer_client.get("/runs/").get_data(as_text=True)
    assert check_page(html) == []
    assert "aws 111 eu-west-1" in html and "badge-partial" in html
    assert "AccessDenied &lt;b&gt;" in html  # errors shown, escaped
    html = viewer_client.get(f"/runs/{estate.ids['run']}").get_data(as_text=True)
    assert "aws/111/eu-west-1/elb" in html and "badge-failed" in html and "42.0 s" not in html
    assert viewer_client.get("/runs/?status=exploded").status_code == 400
    html = viewer_client.get("/runs/?status=failed").get_data(as_text=True)
    assert "No run matches these filters" in html


def test_runs_are_paginated_newest_first(viewer_client, app):
    from inventory.app_db import get_session
    from inventory.models import CollectionRun
    with app.app_context():
        db = get_session()
        db.add_all([CollectionRun(collector="host", scope=f"host batch {i}", status="succeeded")
                    for i in range(120)])
        db.commit()
    html = viewer_client.get("/runs/").get_data(as_text=True)
    ids = [int(i) for i in re.findall(r'>#(\d+)</a>', html)]
    assert ids == sorted(ids, reverse=True) and len(ids) == 50 and ids[0] == 120
    nxt = re.search(r'rel="next" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    ids2 = [int(i) for i in re.findall(r'>#(\d+)</a>', viewer_client.get(nxt).get_data(as_text=True))]
    assert ids2 == list(range(70, 20, -1))


def test_runs_empty_state(viewer_client):
    html = viewer_client.get("/runs/").get_data(as_text=True)
    assert "No collection has run yet" in html and "planb collect aws" in html


@pytest.mark.parametrize("path", ["/", "/assets/", "/vendors/", "/runs/"])
def test_pages_send_a_strict_csp(viewer_client, estate, path):
    response = viewer_client.get(path)
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_overview_figures_follow_writes(viewer_client, estate, app):
    """Cached aggregates are keyed by the inventory version: a new asset shows at once."""
    html = viewer_client.get("/").get_data(as_text=True)
    assert re.search(r'<span class="stat-value">8</span>\s*<span class="stat-label">assets in service', html)
    from inventory.app_db import get_session
    from inventory.models import Asset
    with app.app_context():
        db = get_session()
        db.add(Asset(natural_key="host:new", name="new-host", kind="host", provider="aws"))
        db.commit()
    html = viewer_client.get("/").get_data(as_text=True)
    assert re.search(r'<span class="stat-value">9</span>\s*<span class="stat-label">assets in service', html)
    vendors = viewer_client.get("/vendors/").get_data(as_text=True)
    aws_row = vendors.split("Amazon Web Services</a>", 1)[1].split("</tr>", 1)[0]
    assert re.search(r'<td class="num">4</td>', aws_row)  # 3 hosted before, plus the new one


def test_overview_lists_open_incidents_with_progress(editor_client, estate):
    response = editor_client.post("/incidents/declare", data={"vendor": "CrowdStrike", "title": "EDR outage"})
    assert response.status_code == 302
    html = editor_client.get("/").get_data(as_text=True)
    section = html.split('id="inc-h"', 1)[1].split("</section>", 1)[0]
    assert "EDR outage" in section and '<progress class="recovery"' in section
