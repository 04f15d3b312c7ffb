"""The vendor review pack: everything a vendor-risk meeting needs about one vendor.

``review_pack(db, vendor)`` gathers it as plain data; ``render_markdown`` and
``render_html`` turn that into a Markdown document (``planb review VENDOR``)
or a self-contained HTML file (inline CSS, no scripts, printable to PDF) that
the risk page offers as downloads.  Vendor, asset and finding names come from
outside: Markdown cells are escaped, HTML is rendered with autoescaping.
"""
from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

import jinja2
import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import CRITICALITIES
from inventory.db import utcnow
from inventory.models import Asset, ContingencyPlan, Installation, PlanLink, Product, Vendor
from inventory.paths import templates_dir
from inventory.services import cache
from inventory.services import risk as risk_svc
from inventory.services import updates as updates_svc
from inventory.models.plan_status import plan_status

MAX_LISTED = 200  # rows per section; the totals always count everything
CERT_WINDOW_DAYS = risk_svc.CERT_EXPIRY_WARNING_DAYS


def _where_it_runs(db: so.Session, vendor: Vendor) -> list[dict[str, Any]]:
    """Per product: live installations, critical ones, versions, and where (provider/region/env).
    Grouped in SQL: a popular agent is on tens of thousands of assets."""
    products = list(db.scalars(sa.select(Product).where(Product.vendor_id == vendor.id).order_by(Product.name)))
    live = sa.and_(Asset.retired_at.is_(None), Product.vendor_id == vendor.id)

    def grouped(*columns):  # type: ignore[no-untyped-def]
        return db.execute(sa.select(Installation.product_id, *columns, sa.func.count())
                          .join(Asset, Asset.id == Installation.asset_id)
                          .join(Product, Product.id == Installation.product_id)
                          .where(live).group_by(Installation.product_id, *columns)).all()

    per: dict[int, dict[str, Any]] = {p.id: {"installations": 0, "critical": 0, "versions": Counter(),
                                             "os_families": Counter(), "where": Counter()} for p in products}
    for pid, crit, n in grouped(Asset.criticality):
        per[pid]["installations"] += n
        if crit == "critical":
            per[pid]["critical"] += n
    for pid, version, n in grouped(Installation.version):
        per[pid]["versions"][version or "unknown"] += n
    for pid, os_family, n in grouped(Asset.os_family):
        per[pid]["os_families"][os_family or "unknown"] += n
    for pid, provider, region, env, n in grouped(Asset.provider, Asset.region, Asset.environment):
        per[pid]["where"][" / ".join(x for x in (provider or "unknown", region or "", env or "") if x)] += n
    out = []
    for p in products:
        d = per[p.id]
        out.append({
            "product_id": p.id, "product": p.name, "kind": p.kind,
            "vendor_pushes_updates": p.vendor_pushes_updates,
            "installations": d["installations"], "critical": d["critical"],
            "versions": dict(sorted(d["versions"].items())),
            "os_families": dict(sorted(d["os_families"].items())),
            "where": [{"place": k, "count": v} for k, v in d["where"].most_common()],
        })
    return out


def _hosted(db: so.Session, vendor: Vendor) -> list[dict[str, Any]]:
    if not vendor.cloud_provider:
        return []
    rows = db.execute(sa.select(Asset.region, Asset.criticality, sa.func.count())
                      .where(Asset.provider == vendor.cloud_provider, Asset.retired_at.is_(None))
                      .group_by(Asset.region, Asset.criticality)).all()
    regions: dict[str, dict[str, int]] = {}
    for region, crit, n in rows:
        entry = regions.setdefault(region or "unknown", {"assets": 0, "critical": 0})
        entry["assets"] += n
        if crit == "critical":
            entry["critical"] += n
    return [{"region": k, **v} for k, v in sorted(regions.items(), key=lambda kv: -kv[1]["assets"])]


def _hit_summary(hit: dict[str, Any]) -> dict[str, Any]:
    plans = hit.get("plans") or []
    state = risk_svc._hit_plan_state(hit)
    path = hit.get("path") or []
    path_names = [p.get("name") if isinstance(p, dict) else str(p) for p in path]
    return {"asset_id": hit.get("asset_id"), "name": hit.get("name"), "natural_key": hit.get("natural_key"),
            "kind": hit.get("kind"), "status": hit.get("status"), "criticality": hit.get("criticality"),
            "hops": hit.get("hops"), "plan_state": state,
            "plans": [{"name": p.get("name"), "status": p.get("status")} for p in plans],
            "path": [n for n in path_names if n]}


def _blast_for_pack(db: so.Session, vendor: Vendor) -> dict[str, Any]:
    """The blast radius a pack shows: totals, its score summary, and — without building all
    of tens of thousands of hits — the first hits, and the first hits without a plan or with
    only stale plans (the engine's order: down first, most critical, nearest)."""
    from inventory.impact import blast_radius, parse_scope

    result = blast_radius(db, parse_scope(db, {"vendor": vendor.name}))
    summary = risk_svc.BlastSummary.from_result(result)
    try:
        ordered = result.ordered_idx.tolist()
        level = dict(zip(result.hit_idx.tolist(), result.best_level.tolist()))
        picks = {"first": ordered[:MAX_LISTED],
                 "gaps": [i for i in ordered if level[i] == 0][:MAX_LISTED],
                 "stale": [i for i in ordered if level[i] == 1][:MAX_LISTED]}
        # One build for all three lists: building hits has a fixed cost per call.
        wanted = sorted(set().union(*picks.values()))
        built = dict(zip(wanted, (h.to_dict() for h in result.build_hits(np.array(wanted, dtype=np.int64)))))
        first, gaps, stale = ([built[i] for i in picks[k]] for k in ("first", "gaps", "stale"))
    except AttributeError:  # an engine without those arrays: take every hit
        hits = result.to_dict()["hits"]
        first = hits[:MAX_LISTED]
        gaps = [h for h in hits if risk_svc._hit_plan_state(h) == "gap"][:MAX_LISTED]
        stale = [h for h in hits if risk_svc._hit_plan_state(h) == "stale"][:MAX_LISTED]
    return {"summary": summary, "totals": result.totals, "hits": [_hit_summary(h) for h in first],
            "gaps": [_hit_summary(h) for h in gaps], "stale_only": [_hit_summary(h) for h in stale]}


def _service_plans(db: so.Session, service_ids: list[int], now: Any) -> dict[int, list[dict[str, Any]]]:
    """A business service's own plans (the coverage rule: a service needs its own Plan B)."""
    out: dict[int, list[dict[str, Any]]] = {}
    if not service_ids:
        return out
    for asset_id, plan in db.execute(sa.select(PlanLink.asset_id, ContingencyPlan)
                                     .join(ContingencyPlan, ContingencyPlan.id == PlanLink.plan_id)
                                     .where(PlanLink.asset_id.in_(service_ids))
                                     .order_by(ContingencyPlan.name)):
        out.setdefault(asset_id, []).append({"name": plan.name, "status": plan_status(plan, now)})
    return out


def review_pack(db: so.Session, vendor: Vendor | str | int, *, today: date | None = None) -> dict[str, Any]:
    """Everything for a vendor review meeting, as JSON-safe data (reused while nothing it
    reads has changed; do not mutate it)."""
    if not isinstance(vendor, Vendor):
        vendor = updates_svc.find_vendor(db, vendor)
    today = today or utcnow().date()
    key = f"review-pack:{vendor.id}:{today.isoformat()}:{updates_svc.audit_mark(db)}"
    return cache.cached(db, key, lambda: _review_pack(db, vendor, today))


def _review_pack(db: so.Session, vendor: Vendor, today: date) -> dict[str, Any]:
    now = utcnow()
    blast = _blast_for_pack(db, vendor)
    summary: risk_svc.BlastSummary = blast["summary"]
    risk = risk_svc.vendor_risk(db, vendor, today=today, _blast_value=summary)
    by_service = blast["totals"].get("by_service") or []
    own_plans = _service_plans(db, [s["asset_id"] for s in by_service], now)
    services = [{"asset_id": s["asset_id"], "name": s["name"], "natural_key": s.get("natural_key"),
                 "kind": "service", "status": s["status"], "criticality": s["criticality"],
                 "hops": s.get("hops"), "plans": own_plans.get(s["asset_id"], []),
                 "plan_state": "gap" if not own_plans.get(s["asset_id"]) else "planned", "path": []}
                for s in by_service]
    # Plans written for this vendor or its products, whatever they hit.
    vendor_plan_ids: dict[int, str] = {}
    for plan_id, via in db.execute(
            sa.select(PlanLink.plan_id, sa.case((PlanLink.vendor_id.is_not(None), "vendor"), else_="product"))
            .outerjoin(Product, Product.id == PlanLink.product_id)
            .where(sa.or_(PlanLink.vendor_id == vendor.id, Product.vendor_id == vendor.id))):
        vendor_plan_ids.setdefault(plan_id, via)
    vendor_plans = []
    for plan in db.scalars(sa.select(ContingencyPlan).where(ContingencyPlan.id.in_(list(vendor_plan_ids)))
                           .order_by(ContingencyPlan.name)) if vendor_plan_ids else []:
        vendor_plans.append({"id": plan.id, "name": plan.name, "owner": plan.owner,
                             "rto_minutes": plan.rto_minutes, "status": plan_status(plan, now),
                             "linked_to": vendor_plan_ids[plan.id]})
    untested = updates_svc.untested_exposure(db, vendor_id=vendor.id, limit=MAX_LISTED)
    stats = risk_svc.update_stats(db).get(vendor.id, {})
    assessments = [risk_svc.assessment_to_dict(a, today) for a in risk_svc.list_assessments(db, vendor.id)]
    latest = assessments[0] if assessments else None
    certs = [c for c in (latest["certifications"] if latest else []) if c["status"] in ("expired", "expiring")]
    by_status = blast["totals"].get("by_status") or {}
    return {
        "generated_at": now.isoformat(timespec="seconds"), "today": today.isoformat(),
        "vendor": {"id": vendor.id, "name": vendor.name, "tier": vendor.tier, "website": vendor.website,
                   "description": vendor.description, "cloud_provider": vendor.cloud_provider,
                   "has_alternative": vendor.has_alternative, "alternative": vendor.alternative,
                   "exit_plan_documented": vendor.exit_plan_documented, "exit_plan_url": vendor.exit_plan_url},
        "risk": risk,
        "products": _where_it_runs(db, vendor),
        "hosted": _hosted(db, vendor),
        "concentration": risk["concentration"],
        "blast": {"totals": blast["totals"], "hit_count": summary.hits,
                  "down": int(by_status.get("down", summary.down)),
                  "degraded": int(by_status.get("degraded", summary.hits - summary.down)),
                  "by_criticality": summary.by_criticality, "weighted": summary.weighted_hits,
                  "services": services, "hits": blast["hits"], "truncated": summary.hits > len(blast["hits"])},
        "coverage": {"gaps": blast["gaps"], "gap_count": summary.plan_states.get("gap", 0),
                     "stale_only": blast["stale_only"], "stale_only_count": summary.plan_states.get("stale", 0),
                     "vendor_plans": vendor_plans},
        "untested": {"rows": untested, "count": stats.get("untested", 0),
                     "critical": stats.get("untested_critical", 0),
                     "vendor_pushed": updates_svc.vendor_pushed_products(db, vendor.id)},
        "assessments": assessments,
        "open_findings": latest["open_findings"] if latest else [],
        "certificates": certs,
        "review_state": risk["review_state"], "review_due": risk["review_due"],
    }


# ---------------------------------------------------------------- Markdown

def _md(value: Any) -> str:
    """A value made safe for a Markdown table cell (no pipes, no line breaks, no raw HTML)."""
    if value is None or value == "":
        return "—"
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    for ch in "*_`[]":
        text = text.replace(ch, "\\" + ch)
    return text


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(pack: dict[str, Any]) -> str:
    v, risk = pack["vendor"], pack["risk"]
    out: list[str] = [f"# Vendor review: {_md(v['name'])}", "",
                      f"Generated {pack['generated_at']} by Plan B. Tier: **{_md(v['tier'])}**. "
                      f"Review state: **{pack['review_state']}**"
                      + (f" (due {pack['review_due']})" if pack["review_due"] else "") + ".", ""]
    if v["description"]:
        out += [_md(v["description"]), ""]
    out += [f"- Alternative provider: {_md(v['alternative']) if v['has_alternative'] else '**none recorded**'}",
            f"- Exit plan: {('documented ' + (_md(v['exit_plan_url']) if v['exit_plan_url'] else '')).strip() if v['exit_plan_documented'] else '**not documented**'}",
            ""]
    out += ["## Risk score", "",
            f"**{risk['score']} / 100 ({risk['band']})** = subtotal {risk['subtotal']} × modifier {risk['modifier']}",
            ""]
    out += _table(["Part", "Points", "Max", "How"],
                  [[p["part"], p["points"], p["max"], p["detail"]] for p in risk["parts"]])
    for m in risk["modifiers"]:
        out.append(f"\nModifier: {_md(m['modifier'])} × {m['factor']} ({_md(m['detail'])})")
    out.append("")

    out += ["## Products and where they run", ""]
    if pack["products"]:
        out += _table(["Product", "Kind", "Vendor-pushed", "Installations", "Critical", "Versions", "Where"],
                      [[p["product"], p["kind"], "yes" if p["vendor_pushes_updates"] else "no",
                        p["installations"], p["critical"],
                        ", ".join(f"{k} ×{n}" for k, n in p["versions"].items()),
                        ", ".join(f"{w['place']} ×{w['count']}" for w in p["where"][:6])]
                       for p in pack["products"]])
    else:
        out.append("No products recorded.")
    if pack["hosted"]:
        out += ["", f"Hosted in {_md(v['cloud_provider'])}:", ""]
        out += _table(["Region", "Assets", "Critical"], [[h["region"], h["assets"], h["critical"]]
                                                         for h in pack["hosted"]])
    conc = pack["concentration"]
    out += ["", f"Concentration: {conc['critical_assets']} critical assets ({conc['share']:.0%}) and "
                f"{conc['critical_services']} critical services ({conc['service_share']:.0%}) depend on it.", ""]
    if conc["routes_all_assets"]:
        out += _table(["Route", "Assets", "Critical assets"],
                      [[r, n, conc["routes"].get(r, 0)] for r, n in conc["routes_all_assets"].items()])
    out.append("")

    blast = pack["blast"]
    out += ["## Blast radius of a full outage", "",
            f"{blast['hit_count']} assets hit: {blast['down']} down, {blast['degraded']} degraded. By criticality: "
            + (", ".join(f"{c} {blast['by_criticality'][c]}" for c in CRITICALITIES if c in blast["by_criticality"])
               or "none") + ".", ""]
    if blast["services"]:
        out += ["Business services hit:", ""]
        out += _table(["Service", "Status", "Criticality", "Plans"],
                      [[s["name"], s["status"], s["criticality"],
                        ", ".join(f"{p['name']} ({p['status']})" for p in s["plans"]) or "NO PLAN"]
                       for s in blast["services"]])
        out.append("")

    cov = pack["coverage"]
    out += ["## Plan coverage and gaps", "",
            f"{cov['gap_count']} hit assets have no plan; {cov['stale_only_count']} only stale plans.", ""]
    if cov["vendor_plans"]:
        out += _table(["Plan for this vendor", "Linked to", "Owner", "RTO (min)", "Status"],
                      [[p["name"], p["linked_to"], p["owner"], p["rto_minutes"], p["status"]]
                       for p in cov["vendor_plans"]])
        out.append("")
    else:
        out += ["**No plan is linked to this vendor or its products.**", ""]
    if cov["gaps"]:
        out += ["Hit assets without a plan:", ""]
        out += _table(["Asset", "Kind", "Criticality", "Status"],
                      [[g["name"], g["kind"], g["criticality"], g["status"]] for g in cov["gaps"]])
        out.append("")

    unt = pack["untested"]
    out += ["## Untested exposure", "",
            f"{unt['count']} installations run versions without a passing pre-production test "
            f"({unt['critical']} on critical assets).", ""]
    if unt["rows"]:
        out += _table(["Asset", "Criticality", "Product", "Version", "Ring", "Why"],
                      [[r["natural_key"], r["criticality"], r["product"], r["version"], r["update_ring"],
                        r["reason"]] for r in unt["rows"]])
        out.append("")
    if unt["vendor_pushed"]:
        out += ["Vendor-pushed updates (outside our rollout rings):", ""]
        out += _table(["Product", "Installations", "Why"],
                      [[p["product"], p["installations"], p["reason"]] for p in unt["vendor_pushed"]])
        out.append("")

    out += ["## Assessment history", ""]
    if pack["assessments"]:
        out += _table(["Date", "Assessor", "Security", "Update practices", "Resilience", "Compliance",
                       "Open findings", "Next review"],
                      [[a["assessed_on"], a["assessor"], a["scores"]["security"], a["scores"]["update_practices"],
                        a["scores"]["resilience"], a["scores"]["compliance"], len(a["open_findings"]),
                        a["next_review_due"]] for a in pack["assessments"]])
    else:
        out.append("**Never assessed.**")
    out += ["", "## Open findings", ""]
    if pack["open_findings"]:
        out += _table(["Finding", "Severity", "Status"],
                      [[f.get("title"), f.get("severity"), f.get("status")] for f in pack["open_findings"]])
    else:
        out.append("None open in the latest assessment.")
    out += ["", f"## Certificates expired or expiring within {CERT_WINDOW_DAYS} days", ""]
    if pack["certificates"]:
        out += _table(["Certificate", "Expires", "Status"],
                      [[c.get("name"), c.get("expires"), c["status"]] for c in pack["certificates"]])
    else:
        out.append("None.")
    out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------- HTML

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                          autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(pack: dict[str, Any]) -> str:
    """A self-contained HTML document (inline CSS, no scripts, no external resources)."""
    return _env.get_template("risk/review_pack_export.html").render(
        pack=pack, criticalities=CRITICALITIES, cert_window=CERT_WINDOW_DAYS)


def filename(pack: dict[str, Any], extension: str) -> str:
    safe = "".join(c if c.isalnum() else "-" for c in pack["vendor"]["name"]).strip("-").lower() or "vendor"
    return f"review-{safe}-{pack['today']}.{extension}"
