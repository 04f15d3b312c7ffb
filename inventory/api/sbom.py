"""JSON API: ``POST /api/v1/assets/{asset_id}/sbom`` -- an application's SBOM as its components.

The body is the SBOM itself (CycloneDX 1.4-1.6 JSON or XML, SPDX 2.3 JSON), the same documents
``planb import sbom`` reads, applied by the same service (``inventory.services.source_imports``):
validated whole first (422 naming the position, nothing written), then one ``sbom`` collection
run over the scope ``sbom:<asset key>``.  Needs a write token.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, jsonify, request

from inventory.api import body_bytes, error_response, path_id, read_json
from inventory.app_db import get_engine
from inventory.auth import current_actor
from inventory.db import read_session
from inventory.models import Asset

bp = Blueprint("api_sbom", __name__, url_prefix="/api/v1")

CYCLONEDX_JSON = "application/vnd.cyclonedx+json"
CYCLONEDX_XML = "application/vnd.cyclonedx+xml"
SPDX_JSON = "application/spdx+json"
MEDIA_TYPES = (CYCLONEDX_JSON, CYCLONEDX_XML, SPDX_JSON, "application/json", "application/xml")


@bp.post("/assets/<id:asset_id>/sbom")
def post_sbom(asset_id: int):  # type: ignore[no-untyped-def]
    """Replace the asset's SBOM components with the ones this document lists."""
    from collectors.sbom import SbomError, parse
    from inventory.services.source_imports import ImportRefused, import_sbom

    if request.mimetype not in MEDIA_TYPES:
        return error_response(415, f"send the SBOM with one of these content types: {', '.join(MEDIA_TYPES)} "
                                   f"(got {request.mimetype or 'none'})", allowed=list(MEDIA_TYPES))
    engine = get_engine()
    # Read with a session of our own: the request's writer session would hold SQLite's write
    # lock that the import's own transaction needs.
    with read_session(engine) as db:
        row = db.execute(sa.select(Asset.natural_key, Asset.name).where(Asset.id == asset_id)).first()
    if row is None:
        return error_response(404, f"no asset with id {asset_id}")
    key, name = row
    source = f"SBOM posted for asset {asset_id}"
    if request.is_json:
        read_json(check_text=False)  # 400: not JSON, a key given twice, nested too deeply
    try:
        document = parse(body_bytes(), source)
    except SbomError as exc:
        position = exc.position or "/"
        # 'field': the JSON pointer of a JSON document's fault, else the body itself ("/"),
        # with an XML document's line and column in 'position'
        return error_response(400 if exc.syntax else 422, str(exc),
                              position if position.startswith("/") else "/", position=position)
    try:
        result = import_sbom(engine, document, key, actor=current_actor(), source=source)
    except ImportRefused as exc:
        return error_response(422, str(exc))
    if result.run.status == "failed":
        reasons = "; ".join(str(e.get("error")) for e in result.run.errors or []) or "the import failed"
        return error_response(409, f"the SBOM was not applied: {reasons}", run=result.run.id)
    body: dict[str, Any] = result.as_dict()
    body["asset"] = {"id": asset_id, "key": key, "name": name}
    return jsonify(body), 200


# ---------------------------------------------------------------- OpenAPI

def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# The document's own schema is the standard's (CycloneDX 1.4-1.6, SPDX 2.3): the view validates
# it with their official validators, which no OpenAPI schema here could restate.
_STANDARD = ("validated against the CycloneDX 1.4-1.6 or SPDX 2.3 schema by the service: a document "
             "that is not one is a 422 with its position")
_DOCUMENT = {"type": "object", "description": "A CycloneDX 1.4-1.6 or SPDX 2.3 document", "x-planb-rule": _STANDARD}
_XML = {"type": "string", "description": "A CycloneDX 1.4-1.6 XML document", "x-planb-rule": _STANDARD}

OPENAPI_SCHEMAS: dict[str, Any] = {
    "SbomImport": {"type": "object",
                   "required": ["asset", "format", "components", "products", "version_unknown", "unattributed",
                                "created_asset", "run"],
                   "properties": {
                       "asset": {"type": "object", "required": ["id", "key", "name"], "properties": {
                           "id": {"type": "integer"}, "key": {"type": "string"}, "name": {"type": "string"}}},
                       "format": {"type": "string", "description": "e.g. 'CycloneDX 1.5 (JSON)', 'SPDX-2.3 (JSON)'"},
                       "subject": {"type": ["string", "null"],
                                   "description": "The application the SBOM describes (its metadata component)"},
                       "components": {"type": "integer", "description": "Components read from the document"},
                       "products": {"type": "integer", "description": "Installations they make (one per product)"},
                       "version_unknown": {"type": "integer",
                                           "description": "Products without a version, or with several"},
                       "unattributed": {"type": "integer",
                                        "description": "Products no vendor matched (GET /api/v1/vendors lists "
                                                       "vendors; 'planb vendors --unattributed' the rest)"},
                       "created_asset": {"type": "boolean"},
                       "run": {"type": "object", "description": "The collection run that applied it",
                               "required": ["id", "status"], "properties": {
                                   "id": {"type": "integer"},
                                   "status": {"type": "string", "enum": ["succeeded", "partial", "failed"]},
                                   "created": {"type": "integer"}, "updated": {"type": "integer"},
                                   "unchanged": {"type": "integer"}, "marked_stale": {"type": "integer"},
                                   "errors": {"type": "array", "items": {"type": "object"}}}}}},
    "SbomError": {"allOf": [_ref("Error"), {"type": "object", "properties": {
        "position": {"type": "string", "description": "A JSON pointer (/components/3/version) or "
                                                      "'line L, column C'"}}}]},
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/assets/{asset_id}/sbom": {"post": {
        "summary": "Import an SBOM as the asset's components (write token; replaces its previous SBOM)",
        "description": "The body is the SBOM: CycloneDX 1.4, 1.5 or 1.6 (JSON or XML) or SPDX 2.3 JSON. Each "
                       "component becomes an installation of the asset, attributed to a vendor by its "
                       "supplier, publisher, manufacturer or author, else by its package URL. Components "
                       "of an earlier SBOM of this asset that this one does not list are removed; what other "
                       "sources recorded on the asset is kept. The whole document is validated first: an "
                       "invalid one is refused (422, with its position) and nothing is written.",
        "operationId": "importAssetSbom", "tags": ["inventory"], "parameters": [path_id("asset_id")],
        # JSON or XML, read and checked by the view (inventory.api.schema_check leaves it alone)
        "x-planb-body-check": "view",
        "requestBody": {"required": True, "content": {
            CYCLONEDX_JSON: {"schema": _DOCUMENT}, SPDX_JSON: {"schema": _DOCUMENT},
            "application/json": {"schema": _DOCUMENT},
            CYCLONEDX_XML: {"schema": _XML}, "application/xml": {"schema": _XML}}},
        "responses": {
            "200": _json(_ref("SbomImport"), "Applied: what was read and the run that applied it"),
            "400": _json(_ref("SbomError"), "The body is not JSON or XML (a syntax error, a key given twice, "
                                            "nesting too deep, entities), or an unknown query parameter"),
            "401": _json(_ref("Error"), "No or bad bearer token"),
            "403": _json(_ref("Error"), "A read token: importing needs a write token"),
            "404": _json(_ref("Error"), "No asset with this id"),
            "409": _json(_ref("Error"), "Not applied: another import of this asset's SBOM is running"),
            "413": _json(_ref("Error"), "The body is larger than PLANB_MAX_CONTENT_LENGTH"),
            "415": _json(_ref("Error"), "The content type is none of the SBOM media types listed here"),
            "422": _json(_ref("SbomError"), "Not a valid CycloneDX 1.4-1.6 or SPDX 2.3 document (or one without "
                                            "components); 'position' says where, 'field' is its JSON pointer"),
        }}},
}
