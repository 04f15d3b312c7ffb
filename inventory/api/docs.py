"""The interactive API reference at /api/v1/docs: Swagger UI over the app's own OpenAPI document.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package (Apache-2.0, the
upstream distribution files) and are served by the app itself: no CDN, works offline.
The document is embedded in the page, so a dashboard session can read the reference
without an API token; "Try it out" calls the API, which takes only a bearer token
(Swagger UI's "Authorize" button).  The page takes a dashboard session or a token;
without either it redirects to the login form like any other page.
"""
from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, abort, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from inventory.api.openapi import build_spec
from inventory.auth import session_or_token_page

bp = Blueprint("api_docs", __name__, url_prefix="/api/v1")

SWAGGER_UI_DIR = Path(str(swagger_ui_path))
# The files the page loads (the bundle also ships source maps and other layouts).
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})


def swagger_ui_version() -> str:
    return SWAGGER_UI_DIR.name.removeprefix("swagger-ui-")


@bp.get("/docs")
@session_or_token_page
def docs() -> Response:
    # "</" cannot end the <script> data block early: JSON allows "<\/" for "</".
    spec_json = json.dumps(build_spec(), separators=(",", ":")).replace("</", "<\\/")
    # Served under the app's own Content-Security-Policy (inventory.security), unchanged:
    # Swagger UI's bundle and the starter script are files from 'self', its styles a
    # stylesheet and CSSOM changes, the document a JSON data block (never executed).
    return Response(render_template("api/docs.html", spec_json=spec_json,
                                    swagger_ui_version=swagger_ui_version()))


@bp.get("/docs/assets/<name>")
@session_or_token_page
def asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    response = send_from_directory(SWAGGER_UI_DIR, name, max_age=86400)
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response
