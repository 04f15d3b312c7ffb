"""``planb updates ...`` (vendor updates and their tests) and ``planb check updates`` (the gate)."""
from __future__ import annotations

from datetime import datetime

import click
import sqlalchemy as sa

from inventory.app_db import get_session
from inventory.principal import current_actor
from inventory.choices import CRITICALITIES, RINGS, TEST_STATUSES, UPDATE_KINDS
from inventory.cli import CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, emit, to_json
from inventory.cli.params import DATETIME
from inventory.services import updates as svc


def _rings_text(rings: dict[str, str]) -> str:
    order = list(RINGS) + sorted(set(rings) - set(RINGS))
    return ", ".join(f"{r}:{rings[r]}" for r in order if r in rings) or "no tests"


@click.group()
def updates() -> None:
    """Vendor updates, their test results per ring, and untested exposure."""

@updates.command("list")
@click.option("--vendor", help="Only this vendor's updates.")
@click.option("--product", help="Only this product ('Vendor/Product').")
@FORMAT_OPTION
@with_app
def list_updates(vendor: str | None, product: str | None, fmt: str) -> None:
    """Recorded updates with their test status per ring."""
    db = get_session()
    try:
        vendor_id = svc.find_vendor(db, vendor).id if vendor else None
        product_id = svc.find_product(db, product).id if product else None
    except svc.NotFound as exc:
        raise CLIError(str(exc)) from exc
    items = svc.list_updates(db, vendor_id=vendor_id, product_id=product_id)
    counts = svc.installed_counts(db, items)
    rows = []
    for u in items:
        d = svc.update_to_dict(u)
        d["rings_text"] = _rings_text(d["rings"])
        d["installed_on"] = counts.get(u.id, {}).get("assets", 0)
        d["status"] = "tested" if d["tested"] else f"UNTESTED ({d['untested_reason']})"
        rows.append(d)
    if fmt == "json":
        click.echo(to_json(rows))
        return
    emit(rows, ["id", "vendor", "product", "version", "kind", "vendor_pushed", "released_on",
                "rings_text", "installed_on", "status"], fmt,
         headers=["id", "vendor", "product", "version", "kind", "pushed", "released", "rings",
                  "installed on", "status"] if fmt == "table" else None,
         empty="No updates recorded yet. Add one with: planb updates add VENDOR/PRODUCT VERSION")

@updates.command("add")
@click.argument("product")
@click.argument("version")
@click.option("--kind", type=click.Choice(UPDATE_KINDS), default="patch", show_default=True)
@click.option("--released", "released_on", help="Release date (YYYY-MM-DD).")
@click.option("--vendor-pushed", is_flag=True, help="The vendor pushes it without customer staging.")
@click.option("--notes")
@with_app
def add(product: str, version: str, kind: str, released_on: str | None, vendor_pushed: bool,
        notes: str | None) -> None:
    """Record an update of PRODUCT at VERSION.

    PRODUCT is 'Vendor/Product', or a product name no other vendor uses
    (e.g. 'Falcon Sensor'), or a product id."""
    db = get_session()
    try:
        update = svc.create_update(db, actor=current_actor(), product=product, version=version,
                                   released_on=released_on, kind=kind, vendor_pushed=vendor_pushed,
                                   notes=notes)
    except svc.ValidationError as exc:
        raise CLIError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from exc
    db.commit()
    click.echo(f"Recorded update #{update.id} {svc.update_to_dict(update)['ref']}.")

@updates.command("test")
@click.argument("update_ref", metavar="UPDATE")
@click.option("--ring", type=click.Choice(RINGS), required=True)
@click.option("--status", type=click.Choice(TEST_STATUSES), required=True)
@click.option("--by", "tested_by", help="Who tested (default: you).")
@click.option("--at", "tested_at", type=DATETIME, help="When (ISO 8601; default: now).")
@click.option("--evidence", "evidence_url", help="Link to the evidence (http/https).")
@click.option("--notes")
@with_app
def test(update_ref: str, ring: str, status: str, tested_by: str | None, tested_at: datetime | None,
         evidence_url: str | None, notes: str | None) -> None:
    """Record a test result of UPDATE (an id or 'Vendor/Product@version') in a ring."""
    db = get_session()
    try:
        update = svc.find_update(db, update_ref)
        result, created = svc.record_test(db, actor=current_actor(), update=update, ring=ring,
                                          status=status, tested_by=tested_by, tested_at=tested_at,
                                          evidence_url=evidence_url, notes=notes)
    except svc.NotFound as exc:
        raise CLIError(str(exc)) from exc
    except svc.ValidationError as exc:
        raise CLIError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from exc
    db.commit()
    ref = svc.update_to_dict(update)["ref"]
    click.echo(f"{'Recorded' if created else 'Updated'} {ring} result for {ref}: {status}.")

@updates.command("exposure")
@click.option("--criticality", type=click.Choice(CRITICALITIES), help="Only assets of this criticality.")
@click.option("--vendor", help="Only this vendor's products.")
@FORMAT_OPTION
@with_app
def exposure(criticality: str | None, vendor: str | None, fmt: str) -> None:
    """Installations on versions without a passing pre-production test."""
    db = get_session()
    try:
        vendor_id = svc.find_vendor(db, vendor).id if vendor else None
    except svc.NotFound as exc:
        raise CLIError(str(exc)) from exc
    rows = svc.untested_exposure(db, criticality=criticality, vendor_id=vendor_id)
    emit(rows, ["natural_key", "criticality", "vendor", "product", "version", "update_ring", "reason"],
         fmt, empty="No untested exposure.")

@updates.command("rings")
@click.option("--ring", help="List the assets of this ring instead of counts ('none' = unassigned).")
@FORMAT_OPTION
@with_app
def rings(ring: str | None, fmt: str) -> None:
    """Which assets take vendor updates in which rollout ring."""
    db = get_session()
    if ring:
        from inventory.models import Asset
        # The rollout rings, plus any other ring name the inventory holds.
        known = list(RINGS) + sorted(set(db.scalars(
            sa.select(Asset.update_ring).where(Asset.update_ring.is_not(None)).distinct())) - set(RINGS))
        if ring not in known and ring != "none":
            raise CLIError(f"unknown ring {ring!r}; rings: {', '.join(known)}, or 'none' for "
                           "assets without one")
        rows = svc.assets_in_ring(db, None if ring == "none" else ring, limit=10_000)
        emit(rows, ["natural_key", "name", "criticality", "environment"], fmt,
             empty=f"No assets in ring {ring}.")
    else:
        emit(svc.ring_summary(db), ["ring", "assets", "critical"], fmt, empty="No assets.")

@updates.command("pushed")
@FORMAT_OPTION
@with_app
def pushed(fmt: str) -> None:
    """Products whose vendor pushes updates outside customer control (a risk in itself)."""
    rows = svc.vendor_pushed_products(get_session())
    for r in rows:
        r["pushed_versions"] = [u["version"] for u in r["pushed_updates"]]
    emit(rows, ["vendor", "product", "installations", "critical_installations", "pushed_versions",
                "reason"], fmt, empty="No vendor-pushed products recorded.")

@click.group("check")
def check() -> None:
    """Policy checks for pipelines: exit 0 when the policy holds, non-zero otherwise."""


@check.command("updates")
@click.option("--criticality", type=click.Choice(CRITICALITIES), default="critical", show_default=True,
              help="Assets at or above this criticality must not run untested versions.")
@click.option("--vendor", help="Only this vendor's products.")
@click.option("--product", help="Only this product ('Vendor/Product'), e.g. the one being rolled out.")
@click.option("--tracked-only", is_flag=True,
              help="Only products with recorded updates (ignore products nobody tracks).")
@FORMAT_OPTION
@with_app
def check_updates(criticality: str, vendor: str | None, product: str | None, tracked_only: bool,
                  fmt: str) -> None:
    """Deployment gate: exit 1 when assets of the given criticality (or higher) run untested
    versions (no passing pre-production test, a failed test in any ring, no update record,
    or an unknown version); exit 0 otherwise."""
    db = get_session()
    try:
        vendor_id = svc.find_vendor(db, vendor).id if vendor else None
        product_id = svc.find_product(db, product).id if product else None
    except svc.NotFound as exc:
        raise CLIError(str(exc), exit_code=2) from exc
    rows = svc.gate_failures(db, criticality, vendor_id=vendor_id, product_id=product_id,
                             tracked_only=tracked_only)
    # The gate's state is watched: turning red queues updates.gate_failed (once, until it passes).
    from inventory.services import notify
    notify.gate_checked(db, notify.gate_key(criticality, vendor, product, tracked_only), criticality, rows,
                        criteria={"criticality": criticality, "vendor": vendor, "product": product,
                                  "tracked_only": tracked_only})
    db.commit()
    what = f"{criticality}{'-or-higher' if criticality != 'critical' else ''} asset"
    if fmt == "json":
        click.echo(to_json({"ok": not rows, "criticality": criticality, "untested": rows}))
    elif rows:
        assets = {r["asset_id"] for r in rows}
        click.echo(f"FAIL: {len(assets)} {what}(s) run untested versions ({len(rows)} installation(s)).",
                   err=True)
        emit(rows, ["natural_key", "criticality", "vendor", "product", "version", "update_ring",
                    "reason"], fmt)
    else:
        click.echo(click.style(f"OK: no {what} runs an untested version.", fg="green"))
    if rows:
        click.get_current_context().exit(1)
