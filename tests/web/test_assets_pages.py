"""Asset list and detail pages: filters, sorting, errors, escaping, empty states."""
from __future__ import annotations

import re

import pytest

from tests.web.estate import XSS_NAME, XSS_TAG
from tests.web.html_checks import check_page


def names_in(html: str) -> list[str]:
    """Asset names in the list table, in order."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r'<a href="/assets/\d+">([^<]*)</a>', body)


def test_empty_inventory_tells_how_to_load_data(viewer_client):
    html = viewer_client.get("/assets/").get_data(as_text=True)
    assert "No assets in the inventory yet" in html
    for command in ("planb demo", "planb import FILE", "planb collect"):
        assert command in html


def test_list_shows_active_assets_sorted_by_name(viewer_client, estate):
    response = viewer_client.get("/assets/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    names = names_in(html)
    assert "retired-box" not in names  # retired assets are hidden by default
    assert names == sorted(names)
    assert "checkin-web-1" in names and "Check-in" in names
    assert "8 assets match" in html
    assert check_page(html) == []


def test_filters_narrow_the_list(viewer_client, estate):
    html = viewer_client.get("/assets/?provider=aws&os=windows").get_data(as_text=True)
    assert names_in(html) == ["checkin-web-1"]
    html = viewer_client.get("/assets/?region=centralus&sort=-name").get_data(as_text=True)
    assert names_in(html) == ["checkin-db", "boarding-gate-app"]
    html = viewer_client.get("/assets/?retired=retired").get_data(as_text=True)
    assert names_in(html) == ["retired-box"]
    html = viewer_client.get("/assets/?q=WEB-").get_data(as_text=True)  # case-insensitive search
    assert names_in(html) == ["checkin-web-1", "checkin-web-2"]


def test_vendor_filter_includes_installed_software_and_hosting(viewer_client, estate):
    html = viewer_client.get("/assets/?vendor=crowdstrike").get_data(as_text=True)
    assert set(names_in(html)) == {"checkin-web-1", "checkin-web-2", "boarding-gate-app", XSS_NAME.replace("<", "&lt;").replace(">", "&gt;")}
    html = viewer_client.get("/assets/?vendor=Microsoft").get_data(as_text=True)
    # Windows Server installed on web-1 and the gate app; checkin-db is hosted on Azure.
    assert set(names_in(html)) == {"checkin-web-1", "boarding-gate-app", "checkin-db"}


def test_unknown_vendor_is_reported_next_to_the_field_with_suggestions(viewer_client, estate):
    response = viewer_client.get("/assets/?vendor=Crowdstrik")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'id="vendor-error"' in html and "no vendor named" in html
    assert "<strong>CrowdStrike</strong>" in html
    assert 'aria-invalid="true" aria-describedby="vendor-error"' in html


@pytest.mark.parametrize("query, field", [("os=beos", "os"), ("sort=password_hash", "sort"),
                                          ("criticality=urgent", "criticality"), ("retired=maybe", "retired")])
def test_bad_filter_values_are_refused_not_ignored(viewer_client, estate, query, field):
    response = viewer_client.get(f"/assets/?{query}")
    assert response.status_code == 400
    assert f'id="{field}-error"' in response.get_data(as_text=True)


def test_tampered_cursor_is_an_error_not_a_crash(viewer_client, estate):
    response = viewer_client.get("/assets/?cursor=not-a-cursor")
    assert response.status_code == 400
    assert "malformed page cursor" in response.get_data(as_text=True)


def test_pagination_links_keep_filters_and_walk_everything(viewer_client, estate):
    seen: list[str] = []
    url = "/assets/?per_page=25&sort=criticality"
    html = viewer_client.get(url).get_data(as_text=True)
    seen += names_in(html)
    assert 'rel="next"' not in html  # 8 assets fit on one page of 25
    # The six critical assets come first (by name), then the high one, then the low one.
    assert seen[:6] == sorted(["Boarding", "Check-in", "checkin-db", "checkin-pool", "checkin-web-1",
                               "boarding-gate-app"])
    assert seen[6:] == ["checkin-web-2", "&lt;script&gt;alert(1)&lt;/script&gt;"]
    assert len(seen) == 8


def test_sort_headers_toggle_direction_and_announce_it(viewer_client, estate):
    html = viewer_client.get("/assets/?sort=kind").get_data(as_text=True)
    assert 'aria-sort="ascending"' in html
    assert 'href="/assets/?sort=-kind"' in html


def test_hostile_names_and_tags_are_shown_as_text(viewer_client, estate):
    for url in ("/assets/", f"/assets/{estate.ids['evil']}", f"/assets/{estate.ids['web1']}",
                "/assets/?q=script"):
        html = viewer_client.get(url).get_data(as_text=True)
        assert XSS_NAME not in html and XSS_TAG not in html, url
    html = viewer_client.get(f"/assets/{estate.ids['evil']}").get_data(as_text=True)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html


def test_detail_shows_software_dependencies_plans_and_history(viewer_client, estate):
    response = viewer_client.get(f"/assets/{estate.ids['web1']}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Falcon Sensor" in html and "7.11.18110.0" in html and "vendor-pushed updates" in html
    assert "checkin-pool" in html  # depended on by its target group
    assert "aws/111/eu-west-1/ec2" in html  # collection scope and its run
    assert f'href="/runs/{estate.ids["run"]}"' in html
    assert "os_family" in html  # provenance
    assert check_page(html) == []

    html = viewer_client.get(f"/assets/{estate.ids['checkin']}").get_data(as_text=True)
    assert "Check-in manual fallback" in html and "plan-current" in html
    assert "checkin-pool" in html and "checkin-db" in html  # depends on
    html = viewer_client.get(f"/assets/{estate.ids['db']}").get_data(as_text=True)
    assert "Old DB restore" in html and "plan-stale" in html
    html = viewer_client.get(f"/assets/{estate.ids['web2']}").get_data(as_text=True)
    assert "No plan covers this asset" in html


def test_missing_asset_is_404(viewer_client, estate):
    assert viewer_client.get("/assets/999999").status_code == 404


def test_list_needs_login(client, estate):
    response = client.get("/assets/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
