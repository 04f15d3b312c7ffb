"""The interactive API reference at /api/v1/docs: Swagger UI over the app's own OpenAPI document.

Swagger UI's files come from the ``swagger-ui-bundle-v2`` package (Apache-2.0, the
upstream distribution files) and are served by the app itself: no CDN, works offline.
The page reads the document from ``/api/v1/docs/openapi.json`` (the same document as
``/api/v1/openapi.json``), which a dashboard session may read too, so the reference
needs no API token; "Try it out" calls the API, which takes only a bearer token
(Swagger UI's "Authorize" button).  The page takes a dashboard session or a token;
without either it redirects to the login form like any other page.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, jsonify, render_template, send_from_directory
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
def docs() -> str:
    # Served under the app's own Content-Security-Policy (inventory.security), unchanged:
    # Swagger UI's bundle and the starter script are files from 'self', its styles a
    # stylesheet and CSSOM changes.
    return render_template("api/docs.html", swagger_ui_version=swagger_ui_version())


@bp.get("/docs/openapi.json")
@session_or_token_page
def docs_document() -> Response:
    """The OpenAPI document for the reference page (a dashboard session may read it here)."""
    return jsonify(build_spec())


@bp.get("/docs/assets/<name>")
@session_or_token_page
def asset(name: str) -> Response:
    if name not in ASSETS:
        abort(404)
    response = send_from_directory(SWAGGER_UI_DIR, name, max_age=86400)
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response
