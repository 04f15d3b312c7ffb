"""``planb import``, ``planb export``, ``planb demo`` and ``planb vendors``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from flask import current_app, g

from inventory import config, migrate
from inventory.app_db import get_engine, get_session
from inventory.principal import current_actor
from inventory.cli import UNMIGRATED_MESSAGE, CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, check_output_path, emit, to_json, write_text_file
from inventory.estate.importer import EstateError, ImportReport, import_and_commit, load_document, load_file

_REPORT_COLUMNS = ["entity", "created", "updated", "unchanged"]


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option("--dry-run", is_flag=True, help="Validate and count, then roll back (change nothing).")
@FORMAT_OPTION
@with_app
def import_cmd(file: str, dry_run: bool, fmt: str) -> None:
    """Import an estate FILE (YAML or JSON; '-' reads standard input).

    Validates the whole file first, then creates or updates vendors, products,
    assets, software, dependencies, services, plans, update tests and assessments
    by their natural keys, in one transaction.  Running it twice changes nothing.
    An invalid file changes nothing and the error names the entry and field.
    """
    _require_current_schema()
    if file == "-":
        source_name = "<stdin>"
        try:
            document = load_document(sys.stdin.buffer.read(), source_name)
        except EstateError as exc:
            raise CLIError(str(exc)) from None
    else:
        source_name = file
        try:
            document = load_file(file)
        except EstateError as exc:
            raise CLIError(str(exc)) from None
    db = get_session()
    try:
        report = import_and_commit(db, document, source_name=source_name, actor=current_actor(),
                                   dry_run=dry_run)
    except EstateError as exc:
        raise CLIError(str(exc)) from None
    _print_report(report, fmt, dry_run)

@click.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write to this file instead of standard output.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default=None,
              help="Output format (default: from the file extension, else yaml).")
@with_app
def export_cmd(output: Path | None, fmt: str | None) -> None:
    """Export the inventory as an estate file (the format 'planb import' reads).

    Stable ordering, defaults left out; importing the export into an empty
    database reproduces the same export.  Retired assets are left out.
    """
    from inventory.estate.exporter import dump_document, export_estate
    _require_current_schema()
    if output is not None:
        check_output_path(output)  # before the export is computed
    if fmt is None:
        fmt = "json" if output is not None and output.suffix.lower() == ".json" else "yaml"
    text = dump_document(export_estate(get_session()), fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    write_text_file(output, text)
    click.echo(f"Wrote {output} ({fmt}).", err=True)

@click.command("demo")
@click.option("--no-serve", is_flag=True, help="Load the demo and print what to do next; do not serve.")
@click.option("--host", default=lambda: config.env("HOST", "127.0.0.1"), show_default="127.0.0.1",
              help="Address to serve on.")
@click.option("--port", type=int, default=lambda: int(config.env("PORT", "8080") or 8080),
              show_default="8080", help="Port to serve on.")
@with_app
def demo_cmd(no_serve: bool, host: str, port: int) -> None:
    """Create the database, load the Skyward Air demo estate and serve the dashboard.

    Safe to re-run: the schema is migrated only when needed, the import is
    idempotent, and an 'admin' user is created (password printed once) only
    when the database has no users yet.
    """
    from inventory.auth import create_user
    from inventory.estate.demo import DEMO_FILE_NAME, load_demo
    from inventory.models import User

    database_url = current_app.config["DATABASE_URL"]
    get_engine().dispose()
    migrate.ensure_current(database_url)
    from inventory.impact import backend
    backend.compile_ahead()   # before the server starts, so no blast radius waits for a compile
    db = get_session()
    try:
        report = load_demo(db, actor=current_actor())
    except EstateError as exc:  # only if the shipped file were broken
        db.rollback()
        raise CLIError(str(exc)) from None
    password = None
    if db.scalar(sa.select(sa.func.count(User.id))) == 0:
        _user, password = create_user(db, "admin", "admin", actor=current_actor())
    db.commit()
    db.close()
    g.pop("db_session", None)
    from inventory.estate.demo import PAYMENTS_SBOM_FILE_NAME, load_falcon_console, load_payments_sbom
    falcon_run = load_falcon_console(get_engine())  # the Windows fleet through a recorded Falcon console
    sbom = load_payments_sbom(get_engine(), actor=current_actor())  # what the payments API is built from
    get_engine().dispose()  # no pooled connections may cross the fork into the server workers

    totals = report.totals()
    click.echo(f"Database: {_describe(database_url)}")
    click.echo(f"Loaded {DEMO_FILE_NAME}: {totals.created} created, {totals.updated} updated, "
               f"{totals.unchanged} unchanged.")
    click.echo(f"Read the recorded Falcon console (run {falcon_run.id}, {falcon_run.status}): "
               f"{falcon_run.updated} updated, {falcon_run.unchanged} unchanged.")
    click.echo(f"Imported {PAYMENTS_SBOM_FILE_NAME} into {sbom.asset_key} (run {sbom.run.id}, "
               f"{sbom.run.status}): {len(sbom.document.components)} components.")
    if password is not None:
        rule = "=" * 64
        click.echo(f"\n{rule}\n  Log in as:  admin\n  Password:   {password}\n"
                   f"  (shown once; change it with 'planb users reset-password admin')\n{rule}\n")
    else:
        click.echo("Users exist already; log in with your account "
                   "('planb users reset-password admin' if you lost the demo password).")
    if no_serve:
        click.echo(f"Next: 'planb serve --host {host} --port {port}', then open http://{host}:{port}/")
        return
    from inventory.cli.serve import serve_app
    serve_app(host, port)

@click.command("vendors")
@click.option("--unattributed", is_flag=True,
              help="List software publishers that matched no vendor (add them as aliases).")
@FORMAT_OPTION
@with_app
def vendors_cmd(unattributed: bool, fmt: str) -> None:
    """List vendors with their product and asset counts.

    'assets' counts active assets running one of the vendor's products;
    'hosted' counts active assets on the vendor's cloud (for cloud vendors).
    """
    db = get_session()
    if unattributed:
        rows = unattributed_rows(db)
        emit(rows, ["publisher", "assets", "entries", "examples"], fmt,
             empty="No unattributed software: every publisher matched a vendor.")
        return
    rows = vendor_rows(db)
    emit(rows, ["name", "tier", "cloud_provider", "products", "assets", "hosted"], fmt,
         empty="No vendors yet. Import an estate file ('planb import') or run 'planb demo'.")


def vendor_rows(db: Any) -> list[dict[str, Any]]:
    from inventory.models import Asset, Installation, Product, Vendor
    products = dict(db.execute(sa.select(Product.vendor_id, sa.func.count(Product.id))
                               .group_by(Product.vendor_id)).all())
    assets = dict(db.execute(
        sa.select(Product.vendor_id, sa.func.count(sa.distinct(Installation.asset_id)))
        .join(Installation, Installation.product_id == Product.id)
        .join(Asset, Asset.id == Installation.asset_id)
        .where(Asset.retired_at.is_(None))
        .group_by(Product.vendor_id)).all())
    hosted = dict(db.execute(sa.select(Asset.provider, sa.func.count(Asset.id))
                             .where(Asset.retired_at.is_(None), Asset.provider.is_not(None))
                             .group_by(Asset.provider)).all())
    return [{"name": v.name, "tier": v.tier, "cloud_provider": v.cloud_provider,
             "products": products.get(v.id, 0), "assets": assets.get(v.id, 0),
             "hosted": hosted.get(v.cloud_provider, 0) if v.cloud_provider else None}
            for v in db.scalars(sa.select(Vendor).order_by(Vendor.name))]


def unattributed_rows(db: Any, examples: int = 3) -> list[dict[str, Any]]:
    """Unattributed software grouped by publisher, most widespread first."""
    from inventory.models import UnattributedSoftware as U
    counts = db.execute(
        sa.select(U.publisher, sa.func.count(sa.distinct(U.asset_id)), sa.func.count(U.id))
        .group_by(U.publisher)).all()
    names: dict[str, list[str]] = {}
    for publisher, name in db.execute(sa.select(U.publisher, U.name).distinct()
                                      .order_by(U.publisher, U.name)):
        bucket = names.setdefault(publisher, [])
        if len(bucket) < examples:
            bucket.append(name)
    rows = [{"publisher": publisher or "(no publisher)", "assets": n_assets, "entries": n_entries,
             "examples": names.get(publisher, [])} for publisher, n_assets, n_entries in counts]
    rows.sort(key=lambda r: (-r["assets"], r["publisher"]))
    return rows


def _print_report(report: ImportReport, fmt: str, dry_run: bool) -> None:
    if fmt == "json":
        click.echo(to_json({**report.as_dict(), "dry_run": dry_run}))
        return
    rows = [r for r in report.rows() if r["created"] or r["updated"] or r["unchanged"]]
    totals = report.totals()
    rows.append({"entity": "total", "created": totals.created, "updated": totals.updated,
                 "unchanged": totals.unchanged})
    emit(rows, _REPORT_COLUMNS, fmt)
    if fmt == "table":
        verb = "Would import" if dry_run else "Imported"
        tail = " (dry run: nothing was changed)" if dry_run else ""
        click.echo(f"{verb} {report.source_name}: {totals.created} created, {totals.updated} updated, "
                   f"{totals.unchanged} unchanged{tail}.")


def _require_current_schema() -> None:
    if not migrate.is_current(get_engine()):
        raise CLIError(UNMIGRATED_MESSAGE)


def _describe(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)

