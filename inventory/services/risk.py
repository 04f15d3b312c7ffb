"""Third-party risk: vendor concentration, assessments, the vendor risk score, the review calendar.

**Concentration across paths** (``vendor_concentration``).  An asset depends on
a vendor through one or more *routes*:

* ``installed <Product>`` — the vendor's product (OS, agent, application, SaaS
  tenant…) is installed on the asset;
* ``hosted in <provider>`` — the asset runs in the vendor's cloud
  (``Vendor.cloud_provider == Asset.provider``);
* ``depends on <Product>`` / ``depends on <provider>-hosted assets`` — the asset
  depends (hard or soft, directly or through other assets, groups included) on
  an asset reached by one of the routes above: the service behind a load
  balancer whose hosts run the agent, the hosts that log in through an
  identity provider's tenant.

Each asset is counted **once** per vendor however many routes reach it, and
every route is shown with its own count.

**Vendor risk score** (``vendor_risk``, 0–100, higher is riskier): the sum of
five capped parts, times a substitutability modifier.  The formula and each
input are returned with the score (``parts``) so the page and the exports can
show how it was reached — see ``SCORE_PARTS`` and ``/work/readme_parts/risk.md``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Iterable

import numpy as np
import sqlalchemy as sa
import sqlalchemy.orm as so

from inventory.choices import (ASSESSMENT_DOMAINS, CRITICALITIES, CRITICALITY_WEIGHT, FINDING_SEVERITIES,
                               FINDING_STATUSES)
from inventory.db import utcnow
from inventory.models import (Asset, Installation, Product, Vendor, VendorAssessment,
                              VendorUpdate)
from inventory.services import audit, cache
from inventory.services.plans import EstateArrays, _fetch, _int_pairs, estate_arrays
from inventory.services.updates import (NotFound, ValidationError, audit_mark, clean_text, find_vendor,
                                        parse_bool, parse_date, version_statuses)

# ---------------------------------------------------------------- the formula, in one place

IMPACT_MAX = 30.0
CONCENTRATION_MAX = 20.0
ASSESSMENT_MAX = 25.0
ASSESSMENT_DOMAIN_MAX = 15.0
FINDING_POINTS = {"critical": 4.0, "high": 2.0, "medium": 1.0, "low": 0.5}
FINDINGS_MAX = 6.0
EXPIRED_CERT_POINTS = 2.0
CERTS_MAX = 4.0
UPDATES_MAX = 15.0
UNTESTED_MAX = 8.0
VENDOR_PUSHED_POINTS = 5.0
PRACTICE_GAP_POINTS = 1.0  # each of: no staged rollouts, no rollback (from the latest assessment)
PLANS_MAX = 10.0
# What we know about a vendor's practices (assessment, updates) counts in proportion to how
# much we depend on it: those two parts are scaled by the share of critical assets or of
# critical services (whichever is larger) that depend on the vendor, but never below this
# floor (an unknown vendor is never riskless).
DEPENDENCE_FLOOR = 0.2
# Per hit asset: how much of a gap its plans leave.
PLAN_GAP_WEIGHT = {"gap": 1.0, "stale": 0.5, "never_exercised": 0.25, "current": 0.0}
HIT_STATUS_WEIGHT = {"down": 1.0, "degraded": 0.5}
ALTERNATIVE_FACTOR = 0.85  # a documented alternative provider exists
EXIT_PLAN_FACTOR = 0.90  # an exit plan is documented
CERT_EXPIRY_WARNING_DAYS = 90
REVIEW_DUE_SOON_DAYS = 30

SCORE_PARTS = (
    ("impact", IMPACT_MAX,
     f"criticality-weighted blast radius of a full outage (down ×1, degraded ×0.5; weights "
     f"{CRITICALITY_WEIGHT}) as a share of the estate's total weight"),
    ("concentration", CONCENTRATION_MAX,
     "share of critical business services depending on the vendor (any route)"),
    ("assessment", ASSESSMENT_MAX,
     "latest assessment: domain scores below 5 (up to 15), open findings (critical 4, high 2, "
     "medium 1, low 0.5; up to 6), expired certifications (2 each; up to 4); never assessed = 25; "
     f"× dependence (larger share of critical assets or critical services depending on the vendor, "
     f"at least {DEPENDENCE_FLOOR})"),
    ("updates", UPDATES_MAX,
     "untested exposure of its products, weighted by criticality (up to 8), vendor-pushed "
     "updates or no customer control (5), no staged rollouts (1), no rollback (1); × dependence"),
    ("plans", PLANS_MAX,
     "plan gaps in the blast radius, weighted by criticality: no plan ×1, only stale ×0.5, "
     "only never-exercised ×0.25"),
)


BANDS = ((60, "critical"), (40, "high"), (20, "medium"), (0, "low"))


def band(score: float) -> str:
    return next(name for threshold, name in BANDS if score >= threshold)


# ---------------------------------------------------------------- concentration

@dataclass
class _Route:
    vendor_id: int
    name: str  # "installed <Product>" or "hosted in <cloud>"
    dependent_name: str  # "depends on <Product>" / "depends on <cloud>-hosted assets"
    positions: np.ndarray


def _routes(db: so.Session, arrays: EstateArrays) -> list[_Route]:
    """Every vendor's direct routes (products installed on live assets, cloud hosting), vendors in
    id order and each vendor's routes together, so a vendor owns a contiguous range of bits."""
    from inventory.services.estate_graph import session_graph

    graph = session_graph(db)
    products: dict[int, list[tuple[str, int]]] = {}
    if graph is not None:
        # Installations from the engine's graph (no scan of the table).
        installed = {pid: graph.ids[np.concatenate([idx for _v, idx in groups])]
                     for pid, groups in graph.installs.items() if groups}
        for product in graph.products.values():
            products.setdefault(product.vendor_id, []).append((product.name, product.id))
        vendor_rows = sorted((v.id, v.cloud_provider) for v in graph.vendors.values())
    else:
        pairs = _int_pairs(db, "SELECT product_id, asset_id FROM installations")
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        product_ids, starts = np.unique(pairs[:, 0], return_index=True)
        installed = {pid: pairs[lo:hi, 1] for pid, lo, hi in zip(
            product_ids.tolist(), starts.tolist(), np.append(starts[1:], len(pairs)).tolist())}
        for pid, vid, name in _fetch(db, "SELECT id, vendor_id, name FROM products"):
            products.setdefault(vid, []).append((name, pid))
        vendor_rows = _fetch(db, "SELECT id, cloud_provider FROM vendors ORDER BY id")
    routes = []
    empty = np.zeros(0, dtype=np.int64)
    for vendor_id, cloud in vendor_rows:
        for name, pid in sorted(products.get(vendor_id, [])):
            pos = arrays.positions(installed.get(pid, empty))
            if pos.size:
                routes.append(_Route(vendor_id, f"installed {name}", f"depends on {name}", np.unique(pos)))
        if cloud:
            pos = np.flatnonzero(arrays.provider == cloud)
            if pos.size:
                routes.append(_Route(vendor_id, f"hosted in {cloud}", f"depends on {cloud}-hosted assets", pos))
    return routes


def _bit_counts(matrix: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bit (route) ``r < k``: the rows carrying it, and those of them selected by ``rows``."""
    every = np.zeros(matrix.shape[1] * 64, dtype=np.int64)
    chosen = np.zeros_like(every)
    for w in range(matrix.shape[1]):
        bits = np.unpackbits(np.ascontiguousarray(matrix[:, w]).astype("<u8").view(np.uint8).reshape(-1, 8),
                             axis=1, bitorder="little")
        every[w * 64:(w + 1) * 64] = bits.sum(axis=0, dtype=np.int64)
        chosen[w * 64:(w + 1) * 64] = bits[rows].sum(axis=0, dtype=np.int64)
    return every[:k], chosen[:k]


def _any_bits(words: np.ndarray, route_ids: list[int]) -> np.ndarray:
    """Assets carrying any of the bits ``route_ids`` (``words``: the bit matrix transposed,
    one contiguous row of n words per 64 routes)."""
    out = np.zeros(words.shape[1], dtype=bool)
    by_word: dict[int, int] = {}
    for r in route_ids:
        by_word[r // 64] = by_word.get(r // 64, 0) | (1 << (r % 64))
    for w, mask in by_word.items():
        out |= (words[w] & np.uint64(mask)) != 0
    return out


def _all_concentration(db: so.Session) -> dict[int, dict[str, Any]]:
    """Concentration rows for every vendor at once.

    Each direct route gets one bit; ``direct`` holds, per asset, the routes reaching it
    directly.  ``depends`` — the routes an asset reaches *through* its dependencies — is
    the fixpoint of OR-ing each dependency's bits into its dependents (hard and soft edges,
    groups included; cycles are fine, OR is monotone), computed for all vendors together
    with one sorted reduce per round.
    """
    arrays = estate_arrays(db)
    routes = _routes(db, arrays)
    n, k = arrays.n, len(routes)
    words = max(1, (k + 63) // 64)
    direct = np.zeros((n, words), dtype=np.uint64)
    for r, route in enumerate(routes):
        direct[route.positions, r // 64] |= np.uint64(1 << (r % 64))
    depends = np.zeros_like(direct)
    if arrays.src.size and k:
        order = np.argsort(arrays.src, kind="stable")
        src, dst = arrays.src[order], arrays.dst[order]
        # Semi-naive rounds: only edges whose dependency gained bits in the last round are
        # pulled again, so long chains and cycles cost what actually changes.
        source, changed = direct, direct.any(axis=1)
        while changed.any():
            sel = changed[dst]
            if not sel.any():
                break
            s_src, s_dst = src[sel], dst[sel]
            targets, starts = np.unique(s_src, return_index=True)
            grown = depends[targets] | np.bitwise_or.reduceat(source[s_dst], starts, axis=0)
            moved = (grown != depends[targets]).any(axis=1)
            depends[targets[moved]] = grown[moved]
            source, changed = depends, np.zeros(n, dtype=bool)
            changed[targets[moved]] = True
    critical = arrays.crit == "critical"
    services = critical & arrays.is_service
    total_critical, total_services = int(critical.sum()), int(services.sum())
    rows: dict[int, dict[str, Any]] = {}
    by_vendor: dict[int, list[int]] = {}
    for r, route in enumerate(routes):
        by_vendor.setdefault(route.vendor_id, []).append(r)
    # Per route: how many assets carry its bit, and how many critical ones (one pass per word).
    direct_all, direct_crit = _bit_counts(direct, critical, k)
    depends_all, depends_crit = _bit_counts(depends, critical, k)
    direct, depends = np.ascontiguousarray(direct.T), np.ascontiguousarray(depends.T)  # a word per row
    for vendor_id, name in _fetch(db, "SELECT id, name FROM vendors"):
        counts: dict[str, int] = {}
        counts_all: dict[str, int] = {}
        route_ids = by_vendor.get(vendor_id, [])
        # A vendor's routes are a contiguous range of bits: its union is a masked OR per word.
        union = _any_bits(direct, route_ids) | _any_bits(depends, route_ids)
        tallies = [(routes[r].name, direct_all[r], direct_crit[r]) for r in route_ids] + \
                  [(routes[r].dependent_name, depends_all[r], depends_crit[r]) for r in route_ids]
        for route_name, n_all, crit_count in tallies:
            if n_all:
                counts_all[route_name] = int(n_all)
                if crit_count:
                    counts[route_name] = int(crit_count)
        n_crit = int((union & critical).sum())
        n_services = int((union & services).sum())
        rows[vendor_id] = {
            "vendor_id": vendor_id, "vendor": name, "assets": int(union.sum()),
            "critical_assets": n_crit, "share": (n_crit / total_critical) if total_critical else 0.0,
            "critical_services": n_services,
            "service_share": (n_services / total_services) if total_services else 0.0,
            "total_critical_assets": total_critical, "total_critical_services": total_services,
            "routes": counts, "routes_all_assets": counts_all,
        }
    return rows


def vendor_concentration(db: so.Session, vendors: Iterable[Vendor] | None = None) -> list[dict[str, Any]]:
    """Per vendor: distinct critical assets depending on it (any route), their share of all
    critical assets, the same for critical business services, and the count per route.

    Rows ``{vendor_id, vendor, critical_assets, share, routes: {route: critical count},
    assets, critical_services, service_share, routes_all_assets}``, highest share first.
    Computed for every vendor at once and reused while the inventory is unchanged; the
    rows returned are copies.
    """
    every = cache.cached(db, "risk:concentration", lambda: _all_concentration(db))
    ids = None if vendors is None else [v.id for v in vendors]
    rows = [copy.deepcopy(row) for vid, row in every.items() if ids is None or vid in ids]
    rows.sort(key=lambda r: (-r["share"], -r["critical_assets"], -r["assets"], r["vendor"].lower()))
    return rows


# ---------------------------------------------------------------- assessments

def latest_assessment(db: so.Session, vendor_id: int) -> VendorAssessment | None:
    return db.scalar(sa.select(VendorAssessment).where(VendorAssessment.vendor_id == vendor_id)
                     .order_by(VendorAssessment.assessed_on.desc(), VendorAssessment.id.desc()).limit(1))


def cert_status(cert: dict[str, Any], today: date) -> str:
    expires = cert.get("expires")
    try:
        expiry = date.fromisoformat(str(expires)) if expires else None
    except ValueError:
        return "unknown"
    if expiry is None:
        return "unknown"
    if expiry < today:
        return "expired"
    if expiry <= today + timedelta(days=CERT_EXPIRY_WARNING_DAYS):
        return "expiring"
    return "valid"


def assessment_to_dict(a: VendorAssessment, today: date | None = None) -> dict[str, Any]:
    today = today or utcnow().date()
    scores = {d: getattr(a, f"score_{d}") for d in ASSESSMENT_DOMAINS}
    return {
        "id": a.id, "vendor_id": a.vendor_id, "vendor": a.vendor.name if a.vendor else None,
        "assessed_on": a.assessed_on.isoformat(), "assessor": a.assessor, "scores": scores,
        "staged_rollouts": a.staged_rollouts, "customer_update_control": a.customer_update_control,
        "rollback_supported": a.rollback_supported,
        "certifications": [{**c, "status": cert_status(c, today)} for c in (a.certifications or [])],
        "findings": list(a.findings or []),
        "open_findings": [f for f in (a.findings or []) if f.get("status", "open") == "open"],
        "next_review_due": a.next_review_due.isoformat() if a.next_review_due else None,
        "review_overdue": bool(a.next_review_due and a.next_review_due < today),
        "notes": a.notes,
    }


def list_assessments(db: so.Session, vendor_id: int | None = None, limit: int = 500) -> list[VendorAssessment]:
    stmt = (sa.select(VendorAssessment).options(so.joinedload(VendorAssessment.vendor))
            .order_by(VendorAssessment.assessed_on.desc(), VendorAssessment.id.desc()).limit(limit))
    if vendor_id is not None:
        stmt = stmt.where(VendorAssessment.vendor_id == vendor_id)
    return list(db.scalars(stmt))


def _score(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValidationError(field, f"{field} must be a whole number from 0 to 5")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise ValidationError(field, f"{field} must be a whole number from 0 to 5")
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= 5:
        raise ValidationError(field, f"{field} must be a whole number from 0 to 5")
    return value


def _optional_bool(value: Any, field: str) -> bool | None:
    if value is None or value == "":
        return None
    return parse_bool(value, field)


def _refuse_unknown(entry: dict[str, Any], fieldname: str, known: tuple[str, ...]) -> None:
    """Every caller (API, CLI, dashboard) gets the same answer: an unknown key is named, not dropped."""
    unknown = sorted(str(key) for key in entry if key not in known)
    if unknown:
        raise ValidationError(f"{fieldname}.{unknown[0]}",
                              f"{fieldname} has unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _certifications(value: Any) -> list[dict[str, Any]]:
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise ValidationError("certifications", "certifications must be a list of {name, expires}")
    out = []
    for n, cert in enumerate(value):
        fieldname = f"certifications[{n}]"
        if not isinstance(cert, dict):
            raise ValidationError(fieldname, f"{fieldname} must be an object with name and expires")
        _refuse_unknown(cert, fieldname, ("name", "expires"))
        name = clean_text(cert.get("name"), f"{fieldname}.name", max_len=200, required=True)
        expires = parse_date(cert.get("expires"), f"{fieldname}.expires")
        out.append({"name": name, "expires": expires.isoformat() if expires else None})
    return out


def _findings(value: Any) -> list[dict[str, Any]]:
    if value in (None, ""):
        return []
    if not isinstance(value, list):
        raise ValidationError("findings", "findings must be a list of {title, severity, status}")
    out = []
    for n, finding in enumerate(value):
        fieldname = f"findings[{n}]"
        if not isinstance(finding, dict):
            raise ValidationError(fieldname, f"{fieldname} must be an object with title, severity, status")
        _refuse_unknown(finding, fieldname, ("title", "severity", "status"))
        title = clean_text(finding.get("title"), f"{fieldname}.title", max_len=500, required=True)
        severity = str(finding.get("severity") or "medium").strip().lower()
        if severity not in FINDING_SEVERITIES:
            raise ValidationError(f"{fieldname}.severity",
                                  f"{fieldname}.severity must be one of {', '.join(FINDING_SEVERITIES)}")
        status = str(finding.get("status") or "open").strip().lower()
        if status not in FINDING_STATUSES:
            raise ValidationError(f"{fieldname}.status",
                                  f"{fieldname}.status must be one of {', '.join(FINDING_STATUSES)}")
        out.append({"title": title, "severity": severity, "status": status})
    return out


ASSESSMENT_FIELDS = {"vendor", "assessed_on", "assessor", "scores", "staged_rollouts",
                     "customer_update_control", "rollback_supported", "certifications", "findings",
                     "next_review_due", "notes", *[f"score_{d}" for d in ASSESSMENT_DOMAINS]}


def create_assessment(db: so.Session, data: dict[str, Any], *, actor: str,
                      vendor: Vendor | None = None) -> VendorAssessment:
    """Record a dated vendor assessment.  ``data``: vendor (name or id, unless given),
    assessed_on, assessor, scores {domain: 0-5} (or score_<domain>), staged_rollouts,
    customer_update_control, rollback_supported, certifications, findings,
    next_review_due, notes."""
    if not isinstance(data, dict):
        raise ValidationError(None, "the body must be a JSON object")
    unknown = set(data) - ASSESSMENT_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise ValidationError(name, f"unknown field {name!r}")
    if vendor is None:
        ref = data.get("vendor")
        if ref in (None, ""):
            raise ValidationError("vendor", "vendor is required")
        try:
            vendor = find_vendor(db, ref if isinstance(ref, (str, int)) else str(ref))
        except NotFound as exc:
            raise ValidationError("vendor", str(exc)) from None
    today = utcnow().date()
    assessed_on = parse_date(data.get("assessed_on"), "assessed_on") or today
    if assessed_on > today:
        raise ValidationError("assessed_on", "assessed_on is in the future")
    scores = data.get("scores") or {}
    if not isinstance(scores, dict):
        raise ValidationError("scores", "scores must be an object of domain: 0-5")
    bad = set(scores) - set(ASSESSMENT_DOMAINS)
    if bad:
        raise ValidationError("scores", f"unknown score domain(s): {', '.join(sorted(bad))} "
                              f"(domains: {', '.join(ASSESSMENT_DOMAINS)})")
    values: dict[str, Any] = {}
    for domain in ASSESSMENT_DOMAINS:
        raw = scores.get(domain, data.get(f"score_{domain}"))
        values[f"score_{domain}"] = _score(raw, f"scores.{domain}")
    for key in ("staged_rollouts", "customer_update_control", "rollback_supported"):
        values[key] = _optional_bool(data.get(key), key)
    next_due = parse_date(data.get("next_review_due"), "next_review_due")
    if next_due is None:
        next_due = assessed_on + timedelta(days=365)
    if next_due <= assessed_on:
        raise ValidationError("next_review_due", "next_review_due must be after assessed_on")
    exists = db.scalar(sa.select(VendorAssessment.id).where(VendorAssessment.vendor_id == vendor.id,
                                                            VendorAssessment.assessed_on == assessed_on))
    if exists is not None:
        raise ValidationError("assessed_on", f"{vendor.name} already has an assessment dated "
                              f"{assessed_on.isoformat()} (#{exists})", status=409)
    assessment = VendorAssessment(
        vendor_id=vendor.id, assessed_on=assessed_on,
        assessor=clean_text(data.get("assessor"), "assessor", max_len=200),
        certifications=_certifications(data.get("certifications")),
        findings=_findings(data.get("findings")),
        next_review_due=next_due, notes=clean_text(data.get("notes"), "notes", max_len=20_000),
        **values)
    db.add(assessment)
    db.flush()
    audit.record(db, actor=actor, action="create", entity_type="vendor_assessment",
                 entity_id=assessment.id,
                 summary=f"assessment of {vendor.name} dated {assessed_on.isoformat()}",
                 after=audit.snapshot(assessment))
    return assessment


# ---------------------------------------------------------------- the score

def _blast(db: so.Session, vendor: Vendor) -> dict[str, Any]:
    """Full-outage blast radius of a vendor, from the impact engine, as a JSON-safe dict."""
    from inventory.impact import blast_radius, parse_scope

    return blast_radius(db, parse_scope(db, {"vendor": vendor.name})).to_dict()


def _hit_plan_state(hit: dict[str, Any]) -> str:
    plans = hit.get("plans") or []
    if hit.get("gap") or not plans:
        return "gap"
    statuses = {p.get("status") for p in plans}
    if "current" in statuses:
        return "current"
    if "never_exercised" in statuses:
        return "never_exercised"
    return "stale"


@dataclass
class BlastSummary:
    """What the score needs from a blast radius: counts and criticality weights per status and
    per plan state (``current``, ``never_exercised``, ``stale``, ``gap``)."""

    hits: int = 0
    down: int = 0
    weighted_hits: float = 0.0  # Σ criticality weight × (1 down, 0.5 degraded)
    by_criticality: dict[str, int] = field(default_factory=dict)
    plan_states: dict[str, int] = field(default_factory=dict)
    plan_weights: dict[str, float] = field(default_factory=dict)  # Σ criticality weight per plan state
    totals: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_hits(cls, hits: Iterable[dict[str, Any]], totals: dict[str, Any] | None = None) -> "BlastSummary":
        out = cls(totals=totals or {})
        for h in hits:
            crit = h.get("criticality") or "unknown"
            weight = CRITICALITY_WEIGHT.get(crit, 1)
            state = _hit_plan_state(h)
            out.hits += 1
            out.down += h.get("status") == "down"
            out.weighted_hits += weight * HIT_STATUS_WEIGHT.get(h.get("status"), 1.0)
            out.by_criticality[crit] = out.by_criticality.get(crit, 0) + 1
            out.plan_states[state] = out.plan_states.get(state, 0) + 1
            out.plan_weights[state] = out.plan_weights.get(state, 0.0) + weight
        return out

    @classmethod
    def from_result(cls, result: Any) -> "BlastSummary":
        """From an ``ImpactResult`` without building every hit (paths are costly at 100k assets):
        its totals give status × criticality, its per-hit plan level gives the plan states.
        Falls back to the full hit list if the engine does not expose those arrays."""
        totals = result.totals
        try:
            idx = result.hit_idx
            levels = np.asarray(result.best_level)
            crit_codes = np.asarray(result.graph.crit_code)[idx]
        except AttributeError:
            return cls.from_hits(result.to_dict()["hits"], totals)
        out = cls(totals=totals, hits=int(totals.get("hits", len(idx))),
                  down=int(totals.get("by_status", {}).get("down", 0)))
        for crit, counts in (totals.get("by_criticality") or {}).items():
            if counts.get("total"):
                weight = CRITICALITY_WEIGHT.get(crit, 1)
                out.by_criticality[crit] = int(counts["total"])
                out.weighted_hits += weight * (counts.get("down", 0) * HIT_STATUS_WEIGHT["down"]
                                               + counts.get("degraded", 0) * HIT_STATUS_WEIGHT["degraded"])
        names = list(CRITICALITIES)  # the engine codes criticalities by their index here
        weights = np.array([CRITICALITY_WEIGHT.get(c, 1) for c in names] + [1], dtype=float)
        hit_weights = weights[np.minimum(crit_codes.astype(np.int64), len(names))]
        for level, state in ((3, "current"), (2, "never_exercised"), (1, "stale"), (0, "gap")):
            mask = levels == level
            if mask.any():
                out.plan_states[state] = int(mask.sum())
                out.plan_weights[state] = float(hit_weights[mask].sum())
        return out


def _blast_summary(db: so.Session, vendor: Vendor) -> BlastSummary:
    from inventory.impact import blast_radius, parse_scope

    return BlastSummary.from_result(blast_radius(db, parse_scope(db, {"vendor": vendor.name})))


def _part(name: str, points: float, maximum: float, detail: str, **inputs: Any) -> dict[str, Any]:
    return {"part": name, "points": round(min(points, maximum), 2), "max": maximum,
            "detail": detail, "inputs": inputs}


def _impact_part(blast: BlastSummary, estate_weight: float) -> dict[str, Any]:
    weighted = blast.weighted_hits
    ratio = weighted / estate_weight if estate_weight else 0.0
    points = IMPACT_MAX * min(1.0, ratio)
    detail = (f"{blast.hits} assets hit ({blast.down} down), weighted {weighted:g} of the estate's "
              f"{estate_weight:g} = {ratio:.1%}; {IMPACT_MAX:g} × {ratio:.3f}")
    return _part("impact", points, IMPACT_MAX, detail, hits=blast.hits, down=blast.down,
                 weighted_hits=weighted, estate_weight=estate_weight, ratio=round(ratio, 4),
                 by_criticality=blast.by_criticality)


def _concentration_part(conc: dict[str, Any]) -> dict[str, Any]:
    if conc["total_critical_services"]:
        share, basis = conc["service_share"], "critical services"
        n, total = conc["critical_services"], conc["total_critical_services"]
    else:
        share, basis = conc["share"], "critical assets"
        n, total = conc["critical_assets"], conc["total_critical_assets"]
    detail = f"{n} of {total} {basis} depend on it ({share:.0%}); {CONCENTRATION_MAX:g} × {share:.3f}"
    return _part("concentration", CONCENTRATION_MAX * share, CONCENTRATION_MAX, detail, basis=basis,
                 depending=n, total=total, share=round(share, 4), routes=conc["routes"])


def _assessment_part(assessment: VendorAssessment | None, today: date) -> dict[str, Any]:
    if assessment is None:
        return _part("assessment", ASSESSMENT_MAX, ASSESSMENT_MAX,
                     "never assessed: unknown is treated as the worst case", assessed=False)
    scores = [getattr(assessment, f"score_{d}") for d in ASSESSMENT_DOMAINS]
    # A domain left blank is unknown, and unknown counts as 0.
    mean = sum(s or 0 for s in scores) / len(scores)
    domain_points = ASSESSMENT_DOMAIN_MAX * (5 - mean) / 5
    open_findings = [f for f in (assessment.findings or []) if f.get("status", "open") == "open"]
    finding_points = min(FINDINGS_MAX, sum(FINDING_POINTS.get(f.get("severity"), 1.0) for f in open_findings))
    expired = [c for c in (assessment.certifications or []) if cert_status(c, today) == "expired"]
    cert_points = min(CERTS_MAX, EXPIRED_CERT_POINTS * len(expired))
    total = domain_points + finding_points + cert_points
    detail = (f"assessed {assessment.assessed_on.isoformat()}: mean domain score {mean:.2f}/5 → "
              f"{domain_points:.2f}; {len(open_findings)} open finding(s) → {finding_points:g}; "
              f"{len(expired)} expired certification(s) → {cert_points:g}")
    return _part("assessment", total, ASSESSMENT_MAX, detail, assessed=True,
                 assessed_on=assessment.assessed_on.isoformat(),
                 scores={d: s for d, s in zip(ASSESSMENT_DOMAINS, scores)}, mean_score=round(mean, 3),
                 domain_points=round(domain_points, 2), open_findings=len(open_findings),
                 finding_points=finding_points, expired_certifications=[c.get("name") for c in expired],
                 certification_points=cert_points)


def _compute_update_stats(db: so.Session) -> dict[int, dict[str, Any]]:
    """Per vendor: live installations, their criticality weight, and the untested ones.

    One grouped scan (vendor, product, version, criticality); whether a version is tested is
    then decided in Python from the small updates/tests tables — no correlated subquery per
    installation."""
    from inventory.services.estate_graph import (UNKNOWN_CRIT, crit_counts, live_installs, session_graph,
                                                 version_counts)

    statuses = version_statuses(db)
    graph = session_graph(db)
    if graph is not None:
        rows = []
        for (pid, version), (_n, _c, per_crit) in version_counts(graph).items():
            vendor_id = graph.products[pid].vendor_id
            rows += [(vendor_id, pid, version, CRITICALITIES[c], int(n))
                     for c, n in enumerate(per_crit[:UNKNOWN_CRIT].tolist()) if n]
            if per_crit[UNKNOWN_CRIT]:   # values outside CRITICALITIES, as stored
                idx = next(i for v, i in live_installs(graph)[pid] if v == version)
                rows += [(vendor_id, pid, version, label, n)
                         for label, n in crit_counts(graph, idx, db).items() if label not in CRITICALITIES]
    else:
        rows = db.execute(
            sa.select(Product.vendor_id, Installation.product_id, Installation.version, Asset.criticality,
                      sa.func.count())
            .select_from(Installation).join(Asset, Asset.id == Installation.asset_id)
            .join(Product, Product.id == Installation.product_id)
            .where(Asset.retired_at.is_(None))
            .group_by(Product.vendor_id, Installation.product_id, Installation.version, Asset.criticality)).all()
    out: dict[int, dict[str, Any]] = {}
    for vendor_id, product_id, version, crit, n in rows:
        stats = out.setdefault(vendor_id, {"installed": 0, "installed_weight": 0, "untested": 0,
                                           "untested_weight": 0, "untested_critical": 0})
        weight = CRITICALITY_WEIGHT.get(crit, 1) * n
        stats["installed"] += n
        stats["installed_weight"] += weight
        status = statuses.get((product_id, version)) if version is not None else None
        if status is None or not status.tested:
            stats["untested"] += n
            stats["untested_weight"] += weight
            stats["untested_critical"] += n if crit == "critical" else 0
    return out


def update_stats(db: so.Session) -> dict[int, dict[str, Any]]:
    """``_compute_update_stats``, reused until the inventory or the audit trail moves (every
    update and test result is audited)."""
    return cache.cached(db, f"risk:update-stats:{audit_mark(db)}", lambda: _compute_update_stats(db))


def _pushed_products(db: so.Session) -> dict[int, list[str]]:
    pushed_update = sa.exists(sa.select(VendorUpdate.id).where(VendorUpdate.product_id == Product.id,
                                                               VendorUpdate.vendor_pushed.is_(True)))
    out: dict[int, list[str]] = {}
    for vendor_id, name in db.execute(
            sa.select(Product.vendor_id, Product.name)
            .where(sa.or_(Product.vendor_pushes_updates.is_(True), pushed_update)).order_by(Product.name)):
        out.setdefault(vendor_id, []).append(name)
    return out


def _updates_part(stats: dict[str, Any] | None, pushed_products: list[str],
                  assessment: VendorAssessment | None, reaches_assets: bool) -> dict[str, Any]:
    stats = stats or {"installed": 0, "installed_weight": 0, "untested": 0, "untested_weight": 0}
    total_weight, untested_weight = stats["installed_weight"], stats["untested_weight"]
    share = untested_weight / total_weight if total_weight else 0.0
    untested_points = UNTESTED_MAX * share
    no_control = assessment is not None and assessment.customer_update_control is False
    pushed = bool(pushed_products or no_control) and reaches_assets
    pushed_points = VENDOR_PUSHED_POINTS if pushed else 0.0
    practice_gaps = []
    if reaches_assets and assessment is not None:
        if assessment.staged_rollouts is False:
            practice_gaps.append("no staged rollouts")
        if assessment.rollback_supported is False:
            practice_gaps.append("no rollback")
    practice_points = PRACTICE_GAP_POINTS * len(practice_gaps)
    why_pushed = ", ".join(pushed_products) + (" (no customer update control)" if no_control else "")
    detail = (f"{stats['untested']} untested installation(s), weight {untested_weight:g} of {total_weight:g} "
              f"({share:.0%}) → {untested_points:.2f}; "
              + (f"vendor-pushed: {why_pushed} → {pushed_points:g}" if pushed else "no vendor-pushed updates → 0")
              + (f"; {', '.join(practice_gaps)} → {practice_points:g}" if practice_gaps else ""))
    return _part("updates", untested_points + pushed_points + practice_points, UPDATES_MAX, detail,
                 untested_installations=stats["untested"], untested_weight=untested_weight,
                 installed_weight=total_weight, untested_share=round(share, 4),
                 untested_points=round(untested_points, 2), vendor_pushed_products=pushed_products,
                 no_customer_update_control=no_control, vendor_pushed_points=pushed_points,
                 practice_gaps=practice_gaps, practice_points=practice_points)


def _plans_part(blast: BlastSummary) -> dict[str, Any]:
    if not blast.hits:
        return _part("plans", 0.0, PLANS_MAX, "nothing would be hit", hits=0)
    total = sum(blast.plan_weights.values())
    gap = sum(PLAN_GAP_WEIGHT[state] * w for state, w in blast.plan_weights.items())
    share = gap / total if total else 0.0
    states = blast.plan_states
    detail = (f"of {blast.hits} hit assets: {states.get('gap', 0)} without a plan, "
              f"{states.get('stale', 0)} only stale, {states.get('never_exercised', 0)} only never "
              f"exercised, {states.get('current', 0)} current; weighted gap {share:.0%} → "
              f"{PLANS_MAX:g} × {share:.3f}")
    return _part("plans", PLANS_MAX * share, PLANS_MAX, detail, hits=blast.hits, states=states,
                 weighted_gap_share=round(share, 4))


def dependence_factor(conc: dict[str, Any]) -> float:
    """How much we depend on the vendor: the larger of the shares of critical assets and of
    critical business services depending on it, at least ``DEPENDENCE_FLOOR``."""
    if not conc["total_critical_assets"] and not conc["total_critical_services"]:
        share = 1.0 if conc["assets"] else 0.0
    else:
        share = max(conc["share"], conc["service_share"])
    return max(DEPENDENCE_FLOOR, min(1.0, share))


def _scaled(part: dict[str, Any], dependence: float) -> dict[str, Any]:
    raw = part["points"]
    part["points"] = round(raw * dependence, 2)
    part["inputs"]["raw_points"] = raw
    part["inputs"]["dependence"] = round(dependence, 4)
    part["detail"] += f"; {raw:g} × dependence {dependence:.2f}"
    return part


def _estate_weight(db: so.Session) -> float:
    """Σ criticality weight over every live asset."""
    crit = estate_arrays(db).crit
    return float(sum(CRITICALITY_WEIGHT.get(c, 1) * int((crit == c).sum()) for c in set(crit.tolist())))


def vendor_risk(db: so.Session, vendor: Vendor | str | int, *, today: date | None = None,
                _concentration: dict[str, Any] | None = None, _estate_weight_value: float | None = None,
                _blast_value: "dict[str, Any] | BlastSummary | None" = None,
                _update_stats: dict[int, dict[str, Any]] | None = None,
                _pushed: dict[int, list[str]] | None = None) -> dict[str, Any]:
    """The transparent vendor risk score (0-100) with every part's contribution.

    ``{vendor_id, vendor, tier, score, band, subtotal, modifier, parts: [{part, points,
    max, detail, inputs}], modifiers: [...], latest_assessment, review_due, concentration}``
    (the ``_``-prefixed arguments let ``risk_table`` share work between vendors).
    """
    if not isinstance(vendor, Vendor):
        vendor = find_vendor(db, vendor)
    today = today or utcnow().date()
    conc = _concentration or vendor_concentration(db, [vendor])[0]
    estate_weight = _estate_weight_value if _estate_weight_value is not None else _estate_weight(db)
    if _blast_value is not None:  # a blast radius already computed (dict with "hits") or summarised
        blast = (_blast_value if isinstance(_blast_value, BlastSummary)
                 else BlastSummary.from_hits(_blast_value.get("hits") or [], _blast_value.get("totals")))
    else:
        # A vendor nothing depends on hits nothing: skip the engine.
        blast = _blast_summary(db, vendor) if conc["assets"] else BlastSummary()
    stats = (_update_stats if _update_stats is not None else update_stats(db)).get(vendor.id)
    pushed = (_pushed if _pushed is not None else _pushed_products(db)).get(vendor.id, [])
    assessment = latest_assessment(db, vendor.id)
    impact = _impact_part(blast, estate_weight)
    dependence = dependence_factor(conc)
    parts = [impact, _concentration_part(conc),
             _scaled(_assessment_part(assessment, today), dependence),
             _scaled(_updates_part(stats, pushed, assessment, conc["assets"] > 0), dependence),
             _plans_part(blast)]
    subtotal = sum(p["points"] for p in parts)
    factor = 1.0
    modifiers = []
    if vendor.has_alternative:
        factor *= ALTERNATIVE_FACTOR
        modifiers.append({"modifier": "alternative provider", "factor": ALTERNATIVE_FACTOR,
                          "detail": vendor.alternative or "an alternative is documented"})
    if vendor.exit_plan_documented:
        factor *= EXIT_PLAN_FACTOR
        modifiers.append({"modifier": "exit plan documented", "factor": EXIT_PLAN_FACTOR,
                          "detail": vendor.exit_plan_url or "an exit plan is documented"})
    score = round(subtotal * factor, 1)
    due = assessment.next_review_due if assessment else None
    return {
        "vendor_id": vendor.id, "vendor": vendor.name, "tier": vendor.tier,
        "score": score, "band": band(score), "subtotal": round(subtotal, 2),
        "modifier": round(factor, 4), "modifier_points": round(score - subtotal, 2),
        "dependence": round(dependence, 4),
        "parts": parts, "modifiers": modifiers,
        "has_alternative": vendor.has_alternative, "exit_plan_documented": vendor.exit_plan_documented,
        "latest_assessment": assessment.assessed_on.isoformat() if assessment else None,
        "review_due": due.isoformat() if due else None,
        "review_state": review_state(due, assessment is not None, today),
        "concentration": conc, "blast_totals": blast.totals,
    }


def review_state(due: date | None, assessed: bool, today: date) -> str:
    if not assessed:
        return "never"
    if due is None:
        return "unscheduled"
    if due < today:
        return "overdue"
    if due <= today + timedelta(days=REVIEW_DUE_SOON_DAYS):
        return "due"
    return "scheduled"


def risk_table(db: so.Session, *, today: date | None = None) -> list[dict[str, Any]]:
    """``vendor_risk`` for every vendor, riskiest first (shared inputs computed once)."""
    vendors = list(db.scalars(sa.select(Vendor).order_by(Vendor.name)))
    if not vendors:
        return []
    weight = _estate_weight(db)
    concentration = {r["vendor_id"]: r for r in vendor_concentration(db)}
    stats, pushed = update_stats(db), _pushed_products(db)
    rows = [vendor_risk(db, v, today=today, _concentration=concentration[v.id], _estate_weight_value=weight,
                        _update_stats=stats, _pushed=pushed) for v in vendors]
    rows.sort(key=lambda r: (-r["score"], r["vendor"].lower()))
    return rows


def flat_row(risk: dict[str, Any]) -> dict[str, Any]:
    """One flat row per vendor for CSV/tables: the score and each part's points."""
    row = {"vendor": risk["vendor"], "score": risk["score"], "band": risk["band"],
           "subtotal": risk["subtotal"]}
    for part in risk["parts"]:
        row[part["part"]] = part["points"]
    row["modifier"] = risk["modifier"]
    row["modifier_points"] = risk["modifier_points"]
    row["critical_assets"] = risk["concentration"]["critical_assets"]
    row["critical_services"] = risk["concentration"]["critical_services"]
    row["routes"] = "; ".join(f"{k}: {v}" for k, v in risk["concentration"]["routes"].items())
    row["latest_assessment"] = risk["latest_assessment"]
    row["review_due"] = risk["review_due"]
    row["review_state"] = risk["review_state"]
    return row


FLAT_COLUMNS = ["vendor", "score", "band", "impact", "concentration", "assessment", "updates", "plans",
                "subtotal", "modifier", "modifier_points", "critical_assets", "critical_services",
                "routes", "latest_assessment", "review_due", "review_state"]


def review_calendar(db: so.Session, *, today: date | None = None,
                    table: list[dict[str, Any]] | None = None,
                    include_scheduled: bool = False) -> list[dict[str, Any]]:
    """Vendors whose review is overdue, due within 30 days, or who were never assessed,
    ordered by risk score (highest first)."""
    today = today or utcnow().date()
    table = table if table is not None else risk_table(db, today=today)
    states = ("never", "overdue", "due", "unscheduled") + (("scheduled",) if include_scheduled else ())
    rows = []
    for risk in table:
        if risk["review_state"] not in states:
            continue
        due = date.fromisoformat(risk["review_due"]) if risk["review_due"] else None
        rows.append({"vendor_id": risk["vendor_id"], "vendor": risk["vendor"], "tier": risk["tier"],
                     "score": risk["score"], "band": risk["band"], "state": risk["review_state"],
                     "latest_assessment": risk["latest_assessment"], "review_due": risk["review_due"],
                     "days_overdue": (today - due).days if due and due < today else 0})
    return rows


def cached_risk_table(db: so.Session, *, today: date | None = None,
                      blast_totals: bool = True) -> list[dict[str, Any]]:
    """``risk_table`` reused while nothing it reads has changed.

    The key combines the inventory version (bumped by triggers on every graph
    write), the newest audit event (every assessment, update, test result and
    plan change writes one) and the day (certificates expire, reviews fall due).
    Callers get a shallow copy of the list and of each row: they may add keys to a row,
    not change its nested parts.
    """
    from inventory.services.shared_figures import shared

    today = today or utcnow().date()
    # Computed once per inventory version, audit mark and day for every worker (page_figures).
    # The page does not show each vendor's blast-radius totals (tens of megabytes at 100k
    # assets, in the JSON export): without them the table is what a worker reads back.
    mark = f"{today.isoformat()}:{audit_mark(db)}"
    if blast_totals:
        table = shared(db, "risk_table", mark, lambda: risk_table(db, today=today))
    else:
        table = shared(db, "risk_table:page", mark, lambda: [
            {k: v for k, v in row.items() if k != "blast_totals"} for row in risk_table(db, today=today)])
    return [dict(row) for row in table]
