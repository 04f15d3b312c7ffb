"""Export the inventory as an estate document (the format ``planb import`` reads).

The output is stable (sorted by natural keys, fields in schema order) and
leaves out empty and default values, so two exports of the same database are
identical and diffs between exports are meaningful.  Retired assets, and the
edges and plan links that point at them, are left out: an export describes the
estate as it stands, and importing it never resurrects what collectors retired.
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime, time
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so
import yaml

from inventory.choices import MEMBER_OF, RINGS, SERVICE_KIND
from inventory.estate.importer import DEFAULT_DEPENDENCY_KIND, DEFAULT_STRENGTH
from inventory.estate.schema import FORMAT_VERSION
from inventory.models import (
    Asset,
    ContingencyPlan,
    Dependency,
    Installation,
    Vendor,
    VendorAssessment,
    VendorUpdate,
)

# Asset attributes the ``services:`` section cannot express; a service with any of
# them set is exported under ``assets:`` (with ``kind: service``) instead.
_ASSET_ONLY = ("provider", "account", "region", "zone", "hostname", "cloud_instance_id", "os_family",
               "os_name", "os_version", "min_up", "update_ring")


def format_timestamp(value: datetime | None) -> str | None:
    """A date when the time is midnight UTC (how files usually say it), else ISO 8601 with Z."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    if value.time() == time(0, 0):
        return value.date().isoformat()
    spec = "seconds" if value.microsecond == 0 else "microseconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    """Drop None, empty collections and False flags (the importer's defaults)."""
    return {k: v for k, v in values.items() if v is not None and v is not False and v != [] and v != {}}


def export_estate(db: so.Session) -> dict[str, Any]:
    vendors = list(db.scalars(sa.select(Vendor).order_by(Vendor.name).options(
        so.selectinload(Vendor.products), so.selectinload(Vendor.aliases))))
    vendor_names = {v.id: v.name for v in vendors}
    products = {p.id: (vendor_names[p.vendor_id], p.name) for v in vendors for p in v.products}

    assets = list(db.scalars(sa.select(Asset).where(Asset.retired_at.is_(None))
                             .order_by(Asset.natural_key)))
    keys = {a.id: a.natural_key for a in assets}

    software: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for inst in db.scalars(sa.select(Installation)):
        if inst.asset_id in keys:
            vendor, product = products[inst.product_id]
            software[inst.asset_id].append(_compact({"vendor": vendor, "product": product,
                                                     "version": inst.version}))
    members: dict[int, list[str]] = defaultdict(list)
    depends_on: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    by_id = {a.id: a for a in assets}
    for dep in db.scalars(sa.select(Dependency)):
        if dep.dependent_id not in keys or dep.dependency_id not in keys:
            continue
        target = keys[dep.dependency_id]
        group = by_id[dep.dependent_id]
        if dep.kind == MEMBER_OF and dep.strength == "hard" and group.min_up is not None:
            members[dep.dependent_id].append(target)
        else:
            depends_on[dep.dependent_id].append((target, dep.kind, dep.strength))

    document: dict[str, Any] = {"version": FORMAT_VERSION}
    document["vendors"] = [_vendor(v) for v in vendors]
    asset_entries, service_entries = [], []
    for asset in assets:
        deps = [_depends_on_item(*d) for d in sorted(depends_on[asset.id])]
        is_plain_service = (asset.kind == SERVICE_KIND and not software[asset.id] and not members[asset.id]
                            and all(getattr(asset, a) is None for a in _ASSET_ONLY))
        if is_plain_service:
            service_entries.append(_compact({
                "key": asset.natural_key, "name": asset.name, "environment": asset.environment,
                "criticality": asset.criticality, "owner": asset.owner, "description": asset.description,
                "tags": dict(sorted((asset.tags or {}).items())), "depends_on": deps}))
            continue
        os_info = _compact({"family": asset.os_family, "name": asset.os_name, "version": asset.os_version})
        asset_entries.append(_compact({
            "key": asset.natural_key, "name": asset.name, "kind": asset.kind, "provider": asset.provider,
            "account": asset.account, "region": asset.region, "zone": asset.zone,
            "hostname": asset.hostname, "cloud_instance_id": asset.cloud_instance_id, "os": os_info,
            "environment": asset.environment, "criticality": asset.criticality, "owner": asset.owner,
            "description": asset.description, "tags": dict(sorted((asset.tags or {}).items())),
            "min_up": asset.min_up, "members": sorted(members[asset.id]),
            "update_ring": asset.update_ring,
            "software": sorted(software[asset.id], key=lambda s: (s["vendor"], s["product"])),
            "depends_on": deps}))
    document["assets"] = asset_entries
    document["services"] = service_entries
    document["plans"] = _plans(db, keys, vendor_names, products)
    document["updates"] = _updates(db, products)
    document["assessments"] = _assessments(db, vendor_names)
    return _compact(document)


def _vendor(v: Vendor) -> dict[str, Any]:
    def alias_lists(product_id: int | None) -> dict[str, Any]:
        mine = [a for a in v.aliases if a.product_id == product_id]
        return {"aliases": sorted(a.alias for a in mine if not a.is_pattern),
                "patterns": sorted(a.alias for a in mine if a.is_pattern)}

    products = [_compact({"name": p.name, "kind": p.kind, "vendor_pushes_updates": p.vendor_pushes_updates,
                          "description": p.description, **alias_lists(p.id)})
                for p in sorted(v.products, key=lambda p: p.name)]
    return _compact({
        "name": v.name, "tier": v.tier, "website": v.website, "description": v.description,
        "cloud_provider": v.cloud_provider, "has_alternative": v.has_alternative,
        "alternative": v.alternative, "exit_plan_documented": v.exit_plan_documented,
        "exit_plan_url": v.exit_plan_url, **alias_lists(None), "products": products})


def _depends_on_item(to: str, kind: str, strength: str) -> str | dict[str, Any]:
    if kind == DEFAULT_DEPENDENCY_KIND and strength == DEFAULT_STRENGTH:
        return to
    item: dict[str, Any] = {"to": to}
    if kind != DEFAULT_DEPENDENCY_KIND:
        item["kind"] = kind
    if strength != DEFAULT_STRENGTH:
        item["strength"] = strength
    return item


def _plans(db: so.Session, keys: dict[int, str], vendor_names: dict[int, str],
           products: dict[int, tuple[str, str]]) -> list[dict[str, Any]]:
    out = []
    for plan in db.scalars(sa.select(ContingencyPlan).order_by(ContingencyPlan.name)
                           .options(so.selectinload(ContingencyPlan.links))):
        covers = {
            "assets": sorted(keys[link.asset_id] for link in plan.links if link.asset_id in keys),
            "products": [{"vendor": v, "product": p} for v, p in
                         sorted(products[link.product_id] for link in plan.links if link.product_id)],
            "vendors": sorted(vendor_names[link.vendor_id] for link in plan.links if link.vendor_id),
        }
        out.append(_compact({
            "name": plan.name, "owner": plan.owner, "rto_minutes": plan.rto_minutes, "steps": plan.steps,
            "manual_fallback": plan.manual_fallback, "runbook_url": plan.runbook_url,
            "review_interval_days": plan.review_interval_days,
            "last_reviewed": format_timestamp(plan.last_reviewed),
            "last_exercised": format_timestamp(plan.last_exercised), "covers": _compact(covers)}))
    return out


def _ring_order(ring: str) -> tuple[int, str]:
    return (RINGS.index(ring) if ring in RINGS else len(RINGS), ring)


def _updates(db: so.Session, products: dict[int, tuple[str, str]]) -> list[dict[str, Any]]:
    rows = []
    for update in db.scalars(sa.select(VendorUpdate).options(so.selectinload(VendorUpdate.tests))):
        vendor, product = products[update.product_id]
        tests = [_compact({"ring": t.ring, "status": t.status, "tested_by": t.tested_by,
                           "tested_at": format_timestamp(t.tested_at), "evidence_url": t.evidence_url,
                           "notes": t.notes})
                 for t in sorted(update.tests, key=lambda t: _ring_order(t.ring))]
        rows.append(((vendor, product, update.released_on or date.min, update.version), _compact({
            "vendor": vendor, "product": product, "version": update.version,
            "released_on": _date(update.released_on), "kind": update.kind,
            "vendor_pushed": update.vendor_pushed, "notes": update.notes, "tests": tests})))
    return [entry for _, entry in sorted(rows, key=lambda r: r[0])]


def _assessments(db: so.Session, vendor_names: dict[int, str]) -> list[dict[str, Any]]:
    rows = []
    for a in db.scalars(sa.select(VendorAssessment)):
        scores = {d: getattr(a, f"score_{d}") for d in ("security", "update_practices", "resilience",
                                                         "compliance")}
        entry = {
            "vendor": vendor_names[a.vendor_id], "assessed_on": a.assessed_on.isoformat(),
            "assessor": a.assessor, "scores": _compact(scores)}
        # Tri-state flags: False is an answer ("no staged rollouts"), only None is left out.
        for flag in ("staged_rollouts", "customer_update_control", "rollback_supported"):
            if getattr(a, flag) is not None:
                entry[flag] = getattr(a, flag)
        entry.update({"certifications": a.certifications or [], "findings": a.findings or [],
                      "next_review_due": _date(a.next_review_due), "notes": a.notes})
        compacted = {k: v for k, v in entry.items() if v is not None and v != [] and v != {}}
        rows.append(((compacted["vendor"], compacted["assessed_on"]), compacted))
    return [entry for _, entry in sorted(rows, key=lambda r: r[0])]


# ---------------------------------------------------------------- serialisation

class _Dumper(yaml.SafeDumper):
    """Readable YAML: multi-line text as literal blocks, lists indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str_representer)


def dump_document(document: dict[str, Any], fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100,
                     default_flow_style=False)
