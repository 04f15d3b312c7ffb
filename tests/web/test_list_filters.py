"""Dashboard list pages refuse a bad query (HTTP 400 on the app's error page, naming the
parameter and what it accepts) instead of silently falling back to a default; the links the
pages generate themselves keep working."""
from __future__ import annotations

import html as html_lib
import re
from urllib.parse import urlsplit

import pytest

ERROR_PAGE = "<h1>400 Bad Request</h1>"

# (url, parameter the page must name, words of the accepted values it must list)
BAD_QUERIES = [
    ("/assets/?per_page=abc", "per_page", ["25", "50", "100", "200"]),
    ("/assets/?per_page=7", "per_page", ["25", "50", "100", "200"]),
    ("/assets/?bogus=1", "bogus", ["per_page", "sort", "cursor", "provider"]),
    ("/assets/?status=bogus", "status", ["retired", "provider"]),
    ("/assets/?sort=name&sort=kind", "sort", ["'name'", "'kind'", "once"]),
    ("/plans/?status=zz", "status", ["current", "stale", "never_exercised"]),
    ("/plans/?page=abc", "page", ["whole number"]),
    ("/plans/?page=0", "page", ["whole number"]),
    ("/plans/?page=9", "page", ["pages 1 to 1"]),
    ("/plans/?foo=1", "foo", ["status", "page"]),
    ("/updates/?criticality=zz", "criticality", ["critical", "high", "all"]),
    ("/updates/?criticality=high&criticality=low", "criticality", ["once"]),
    ("/risk/assessments?vendor=abc", "vendor", ["vendor id"]),
    ("/risk/assessments?vendor=99999", "vendor", ["99999"]),
    ("/risk/?x=1", "x", ["no parameters"]),
    ("/?x=1", "x", ["no parameters"]),
    ("/vendors/?sort=name", "sort", ["no parameters"]),
    ("/incidents/?status=open", "status", ["no parameters"]),
    ("/runs/?bogus=1", "bogus", ["collector", "status", "cursor"]),
    ("/impact/?vendor=CrowdStrike&view=zz", "view", ["print"]),
    ("/impact/?vendor=CrowdStrike&bogus=1", "bogus", ["vendor", "products", "as_of", "view"]),
    ("/impact/?vendor=CrowdStrike&vendor=Okta", "vendor", ["once"]),
    ("/impact/export.csv?vendor=CrowdStrike&bogus=1", "bogus", ["vendor"]),
]

# The audit trail is an admin page.
BAD_AUDIT_QUERIES = [
    ("/admin/audit?before=abc", "before", ["whole number"]),
    ("/admin/audit?before=99999999999999999999", "before", ["whole number"]),
    ("/admin/audit?bogus=1", "bogus", ["actor", "before"]),
    ("/admin/audit?actor=" + "x" * 201, "actor", ["200 characters"]),
]


def _text(response) -> str:  # type: ignore[no-untyped-def]
    return html_lib.unescape(response.get_data(as_text=True))


@pytest.mark.parametrize(("url", "param", "accepted"), BAD_QUERIES)
def test_bad_query_is_a_400_naming_the_parameter(viewer_client, estate, url, param, accepted):
    response = viewer_client.get(url)
    text = _text(response)
    assert response.status_code == 400, url
    assert ERROR_PAGE in text  # the app's styled error page, not a list rendered with defaults
    message = re.search(r"<p>(Bad query: .*?)</p>", text, re.S)
    assert message, text[-600:]
    assert f"{param}:" in message.group(1)
    for word in accepted:
        assert word in message.group(1), (url, word, message.group(1))


@pytest.mark.parametrize(("url", "param", "accepted"), BAD_AUDIT_QUERIES)
def test_bad_audit_query_is_a_400_naming_the_parameter(admin_client, url, param, accepted):
    response = admin_client.get(url)
    message = re.search(r"<p>(Bad query: .*?)</p>", _text(response), re.S)
    assert response.status_code == 400 and message, url
    assert f"{param}:" in message.group(1) and all(word in message.group(1) for word in accepted)


def test_good_impact_and_audit_queries_still_work(viewer_client, admin_client, estate):
    # list fields may repeat; view=print is the printable page
    assert viewer_client.get("/impact/?vendor=CrowdStrike&os=windows&os=linux").status_code == 200
    assert viewer_client.get("/impact/?vendor=CrowdStrike&view=print").status_code == 200
    assert admin_client.get("/admin/audit?actor=admin&before=5").status_code == 200


# The same pages with good values: 200 and the value used, not a default.
def test_control_cases_still_work(viewer_client, estate):
    ok = viewer_client.get("/assets/?per_page=25&sort=-kind&kind=service&q=&provider=")
    assert ok.status_code == 200
    html = ok.get_data(as_text=True)
    assert '<option value="25" selected>' in html and 'name="sort" value="-kind"' in html
    assert viewer_client.get("/assets/?sort=name&sort=name").status_code == 200  # same value twice
    plans = viewer_client.get("/plans/?status=stale&page=1")
    assert plans.status_code == 200 and "Old DB restore" in plans.get_data(as_text=True)
    assert "Check-in manual fallback" not in plans.get_data(as_text=True)
    assert viewer_client.get("/plans/?status=").status_code == 200
    high = viewer_client.get("/updates/?criticality=all")
    assert high.status_code == 200 and '<option value="all" selected>' in high.get_data(as_text=True)
    ms = estate.ids["microsoft"]
    assert viewer_client.get(f"/risk/assessments?vendor={ms}").status_code == 200
    assert viewer_client.get("/risk/assessments").status_code == 200
    assert viewer_client.get("/runs/?collector=aws&status=partial").status_code == 200
    for url in ("/", "/vendors/", "/incidents/", "/risk/"):
        assert viewer_client.get(url).status_code == 200, url


def test_assets_filter_errors_stay_beside_their_field(viewer_client, estate):
    # Known filters with a bad value keep the list page's own inline error (400, with suggestions).
    response = viewer_client.get("/assets/?provider=awz")
    assert response.status_code == 400
    assert 'id="provider-error"' in response.get_data(as_text=True)


def test_detail_page_filters_are_refused_too(viewer_client, estate):
    vendor = estate.ids["crowdstrike"]
    bad = viewer_client.get(f"/vendors/{vendor}?page=2")
    assert bad.status_code == 400 and "page:" in _text(bad)
    assert viewer_client.get(f"/vendors/{vendor}").status_code == 200


def _links(html: str) -> set[str]:
    found = set()
    for href in re.findall(r'href="([^"]+)"', html):
        href = html_lib.unescape(href)
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("/static"):
            continue
        if "download" in parts.path or "export" in parts.path or parts.path.startswith("/auth"):
            continue
        found.add(parts.path + (f"?{parts.query}" if parts.query else ""))
    return found


def test_every_link_the_pages_generate_still_works(viewer_client, estate):
    """Crawl two levels from the overview and every list page: no link the app writes is a 400."""
    start = ["/", "/assets/", "/assets/?per_page=25", "/assets/?sort=-kind&per_page=25", "/vendors/",
             "/plans/", "/plans/?status=stale", "/updates/", "/updates/?criticality=all", "/risk/",
             "/risk/assessments", "/runs/", "/incidents/"]
    seen: dict[str, int] = {}
    frontier = list(start)
    for _depth in range(2):
        next_frontier = []
        for url in frontier:
            if url in seen:
                continue
            response = viewer_client.get(url)
            seen[url] = response.status_code
            if response.status_code == 200 and response.mimetype == "text/html":
                next_frontier.extend(_links(response.get_data(as_text=True)) - seen.keys())
        frontier = next_frontier
    with_query = [u for u in seen if "?" in u]
    assert len(seen) > 30 and len(with_query) >= 8, sorted(seen)
    bad = {u: code for u, code in seen.items() if code >= 400 and not u.startswith("/admin")}
    assert bad == {}


def test_incident_detail_show_filter(editor_client, estate):
    from tests.web.test_incident_pages import declare

    incident_id = declare(editor_client)
    bad = editor_client.get(f"/incidents/{incident_id}?show=everything")
    text = _text(bad)
    assert bad.status_code == 400 and ERROR_PAGE in text
    assert "show:" in text and "pending" in text and "recovered" in text
    assert editor_client.get(f"/incidents/{incident_id}?show=pending").status_code == 200
    # The incident page's own links (filters, "Blast radius now") work.
    for link in _links(editor_client.get(f"/incidents/{incident_id}").get_data(as_text=True)):
        assert editor_client.get(link).status_code < 400, link
