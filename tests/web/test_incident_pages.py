"""Incidents: declare from the blast-radius form, the snapshot, recovery progress, resolve."""
from __future__ import annotations

import re

from tests.conftest import make_test_app
from tests.web.html_checks import check_page

SCOPE = {"vendor": "CrowdStrike", "products": "Falcon Sensor", "version": ">=7.11", "os": "windows"}


def declare(client, title="Falcon channel file 291"):  # type: ignore[no-untyped-def]
    response = client.post("/incidents/declare", data={**SCOPE, "title": title})
    assert response.status_code == 302, response.data
    match = re.search(r"/incidents/(\d+)$", response.headers["Location"])
    assert match, response.headers["Location"]
    return int(match.group(1))


def test_empty_list_says_how_to_declare(viewer_client):
    html = viewer_client.get("/incidents/").get_data(as_text=True)
    assert "No incident has been declared" in html and 'href="/impact/"' in html


def test_declare_snapshot_recover_and_resolve(editor_client, estate, app):
    incident_id = declare(editor_client)
    html = editor_client.get(f"/incidents/{incident_id}").get_data(as_text=True)
    assert check_page(html) == []
    assert "Falcon channel file 291" in html and "badge-open" in html
    assert re.search(r'<progress class="recovery" max="(\d+)" value="0"', html)
    total = int(re.search(r'<progress class="recovery" max="(\d+)"', html).group(1))
    assert total >= 5  # web-1, gate app, pool, check-in, boarding...
    assert "checkin-web-1" in html and "Boarding" in html and "plan-gap" in html
    assert 'name="csrf_token"' in html

    # Mark the two seeds recovered with a note.
    response = editor_client.post(f"/incidents/{incident_id}/recover",
                                  data={"asset": [estate.ids["web1"], estate.ids["gate"]],
                                        "note": "deleted C-00000291*.sys <b>"})
    assert response.status_code == 302
    html = editor_client.get(f"/incidents/{incident_id}").get_data(as_text=True)
    assert re.search(rf'<progress class="recovery" max="{total}" value="2"', html)
    assert "deleted C-00000291*.sys &lt;b&gt;" in html and "badge-recovered" in html
    pending = editor_client.get(f"/incidents/{incident_id}?show=pending").get_data(as_text=True)
    assert "checkin-web-1" not in pending.split('id="assets-h"', 1)[1]

    # The list shows it with its progress; the audit trail has the declaration.
    listing = editor_client.get("/incidents/").get_data(as_text=True)
    assert f"#{incident_id} Falcon channel file 291" in listing and f"2 / {total} recovered" in listing

    response = editor_client.post(f"/incidents/{incident_id}/resolve")
    assert response.status_code == 302
    html = editor_client.get(f"/incidents/{incident_id}").get_data(as_text=True)
    assert "badge-resolved" in html and "Mark selected recovered" not in html
    # Recording against a resolved incident is refused with a message, nothing changes.
    response = editor_client.post(f"/incidents/{incident_id}/recover", data={"asset": [estate.ids["pool"]]},
                                  follow_redirects=True)
    assert "Not recorded" in response.get_data(as_text=True)


def test_recover_rejects_assets_outside_the_incident(editor_client, estate):
    incident_id = declare(editor_client)
    response = editor_client.post(f"/incidents/{incident_id}/recover", data={"asset": [estate.ids["web2"]]},
                                  follow_redirects=True)
    html = response.get_data(as_text=True)
    assert "Not recorded" in html and "value=\"0\"" in html
    response = editor_client.post(f"/incidents/{incident_id}/recover", data={"asset": ["x"]})
    assert response.status_code == 400


def test_declare_needs_a_title_and_a_valid_scope(editor_client, estate):
    response = editor_client.post("/incidents/declare", data={**SCOPE, "title": ""}, follow_redirects=True)
    assert "Give the incident a title" in response.get_data(as_text=True)
    response = editor_client.post("/incidents/declare", data={"vendor": "Nope", "title": "x"},
                                  follow_redirects=True)
    assert "Cannot declare" in response.get_data(as_text=True)
    assert "No incident has been declared" in editor_client.get("/incidents/").get_data(as_text=True)


def test_viewers_cannot_declare_or_recover(viewer_client, editor_client, estate):
    assert viewer_client.post("/incidents/declare", data={**SCOPE, "title": "t"}).status_code == 403
    incident_id = declare(editor_client)
    assert viewer_client.post(f"/incidents/{incident_id}/recover",
                              data={"asset": [estate.ids["web1"]]}).status_code == 403
    html = viewer_client.get(f"/incidents/{incident_id}").get_data(as_text=True)
    assert 'type="checkbox"' not in html and "Resolve incident" not in html


def test_declare_requires_the_csrf_token(sqlite_url, tmp_path):
    app = make_test_app(sqlite_url, tmp_path / "instance")  # CSRF protection on
    client = app.test_client()
    create_user_and_login_with_csrf(app, client)
    response = client.post("/incidents/declare", data={**SCOPE, "title": "t"})
    assert response.status_code == 400
    app.extensions["planb_engine"].dispose()


def create_user_and_login_with_csrf(app, client):  # type: ignore[no-untyped-def]
    from inventory.app_db import get_session
    from inventory.auth import create_user
    with app.app_context():
        db = get_session()
        create_user(db, "csrf-editor", "editor", "correct horse battery staple")
        db.commit()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": "csrf-editor", "password": "correct horse battery staple",
                                           "csrf_token": token})
    assert response.status_code == 302


def test_missing_incident_is_404(viewer_client, editor_client):
    assert viewer_client.get("/incidents/4242").status_code == 404
    assert editor_client.post("/incidents/4242/recover", data={"asset": ["1"]}).status_code == 404
    assert editor_client.post("/incidents/4242/resolve").status_code == 404
