"""``GET /metrics``: the ``planb_*`` series in Prometheus text format (see ``inventory.metrics``).

Who may scrape: an API token (``Authorization: Bearer``; a read token is enough) or a
logged-in admin.  Anyone else gets 401 (no credentials) or 403 (a non-admin session), as
JSON.  Every request the app answers is counted here, by Flask endpoint name (never the
raw path, which would make one series per asset id), method and status.
"""
from __future__ import annotations

import time

from flask import Blueprint, Response, g, request

from inventory import metrics
from inventory.app_db import get_engine
from inventory.auth import require_role

bp = Blueprint("metrics", __name__)

# Requests that matched no route (404s, probes for random paths) share one label value.
UNMATCHED = "unmatched"


@bp.after_app_request
def _count_request(response: Response) -> Response:
    # The timer is the request log's (inventory.logging_setup), started before authentication,
    # so refused requests are timed too.
    started = g.get("_planb_started")
    elapsed = time.perf_counter() - started if started is not None else 0.0
    metrics.observe_request(request.endpoint or UNMATCHED, request.method, response.status_code, elapsed)
    return response


@bp.get("/metrics")
@require_role("viewer")   # any token; a logged-in user needs admin (auth.TOKEN_OR_SESSION_PATHS)
def metrics_view():  # type: ignore[no-untyped-def]
    body, content_type = metrics.scrape(get_engine)
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
