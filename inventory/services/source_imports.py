"""Imports that go through the collectors' ingest: an application's SBOM, a CMDB export.

Both are read and checked whole first (a bad document or row changes nothing), then applied as a
collection run (``collectors.ingest.run_collection``) under their own source name (``sbom``,
``cmdb``), so precedence, retirement and the runs page work as for any collector.  The CLI
(``planb import sbom`` / ``planb import csv``) and the API (``POST /api/v1/assets/{id}/sbom``) call
these functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from inventory.db import read_session, write_session
from inventory.models import Asset
from inventory.services import audit

if TYPE_CHECKING:
    from collectors.base import ProgressFn
    from collectors.cmdb import CmdbExport
    from collectors.sbom import SbomDocument
    from inventory.models import CollectionRun


class ImportRefused(ValueError):
    """The import cannot be applied as asked (nothing was written)."""


@dataclass
class SbomImport:
    asset_key: str
    created_asset: bool
    document: SbomDocument
    products: int
    version_unknown: int
    unattributed: int
    run: CollectionRun

    def as_dict(self) -> dict[str, Any]:
        return {"asset": self.asset_key, "format": self.document.format, "subject": self.document.subject,
                "components": len(self.document.components), "products": self.products,
                "version_unknown": self.version_unknown, "unattributed": self.unattributed,
                "created_asset": self.created_asset, "run": run_summary(self.run)}


def run_summary(run: CollectionRun) -> dict[str, Any]:
    return {"id": run.id, "status": run.status, "created": run.created, "updated": run.updated,
            "unchanged": run.unchanged, "marked_stale": run.marked_stale, "errors": list(run.errors or [])}


def import_sbom(engine: Engine, document: SbomDocument, asset_key: str, *, actor: str, source: str = "SBOM",
                progress: ProgressFn | None = None) -> SbomImport:
    """Apply ``document`` (parsed and validated by ``collectors.sbom.parse``) as the components of
    the asset ``asset_key``, replacing what its previous SBOM said (scope ``sbom:<asset key>``).

    The asset is created as an ``application`` named after the SBOM's subject when absent."""
    from collectors.attribution import Attributor
    from collectors.ingest import run_collection
    from collectors.sbom import SbomCollector

    asset_key = asset_key.strip()
    if not asset_key or any(not part.strip() for part in asset_key.split(":")):
        raise ImportRefused(f"{asset_key!r} is not an asset key (such as app:payments-api)")
    if not document.components:
        raise ImportRefused(f"{source} lists no components: nothing to import (an empty SBOM would "
                            "remove every component the previous SBOM recorded; check the file)")
    with read_session(engine) as db:
        owner = db.scalar(sa.select(Asset.source).where(Asset.natural_key == asset_key))
        attributor = Attributor(db)
    collector = SbomCollector(document, asset_key, attributor, create_asset=owner in (None, "sbom"),
                              source=source)
    run = run_collection(engine, collector, progress=progress)
    unattributed = sum(1 for r in collector.software
                       if attributor.attribute_software(r.name, r.publisher, r.origin) is None)
    with write_session(engine) as db:
        asset_id = db.scalar(sa.select(Asset.id).where(Asset.natural_key == asset_key))
        audit.record(db, actor=actor, action="import-sbom", entity_type="asset", entity_id=asset_id,
                     summary=f"imported {source} ({document.format}) for {asset_key}: "
                             f"{len(document.components)} components; run {run.id} {run.status}")
    return SbomImport(asset_key=asset_key, created_asset=owner is None, document=document,
                      products=len(collector.software),
                      version_unknown=sum(1 for r in collector.software if r.version is None),
                      unattributed=unattributed, run=run)


def import_cmdb(engine: Engine, export: CmdbExport, *, actor: str, skip_bad_rows: bool = False,
                depends_on_column: str = "depends_on", progress: ProgressFn | None = None) -> CollectionRun:
    """Apply a CMDB export (parsed and checked by ``collectors.cmdb``) as one ``cmdb`` run.

    A dependency on a CI that is neither in the export nor in the inventory is a bad row: it
    refuses the import (``CmdbError``), or with ``skip_bad_rows`` the dependency is left out and
    the run retires nothing."""
    from collectors.cmdb import CmdbCollector, CmdbError
    from collectors.ingest import run_collection

    in_file = {record.natural_key for record in export.assets}
    wanted = sorted({dep.dependency_key for dep in export.dependencies} - in_file)
    known: set[str] = set()
    with read_session(engine) as db:
        for start in range(0, len(wanted), 500):
            known.update(db.scalars(sa.select(Asset.natural_key)
                                    .where(Asset.natural_key.in_(wanted[start:start + 500]))))
    unknown = set(wanted) - known
    if unknown:
        messages = export.drop_dependencies_on(unknown, depends_on_column)
        if not skip_bad_rows:
            raise CmdbError(export.source, messages)
        export.skipped.extend(messages)
    run = run_collection(engine, CmdbCollector(export), progress=progress)
    with write_session(engine) as db:
        audit.record(db, actor=actor, action="import-cmdb", entity_type="collection_run", entity_id=run.id,
                     summary=f"imported {export.source} ({len(export.assets)} CIs, "
                             f"{len(export.dependencies)} dependencies, {len(export.skipped)} rows skipped) "
                             f"into scope {export.scope}: run {run.id} {run.status}")
    return run
