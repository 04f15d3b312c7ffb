"""``planb risk``, ``planb review VENDOR``, ``planb assessments ...`` and ``planb reviews due``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from inventory.app_db import get_session
from inventory.principal import current_actor
from inventory.choices import ASSESSMENT_DOMAINS, FINDING_SEVERITIES, FINDING_STATUSES
from inventory.cli import CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, check_output_path, emit, render_csv, to_json, write_text_file
from inventory.services import review as review_svc
from inventory.services import risk as svc


def _vendor(db, ref: str):  # type: ignore[no-untyped-def]
    try:
        return svc.find_vendor(db, ref)
    except svc.NotFound as exc:
        raise CLIError(str(exc)) from exc


def _cert(text: str) -> dict[str, Any]:
    name, sep, expires = text.rpartition(":")
    if not sep or not name.strip():
        raise CLIError(f"--cert {text!r}: write it as 'NAME:YYYY-MM-DD'")
    return {"name": name.strip(), "expires": expires.strip()}


def _finding(text: str) -> dict[str, Any]:
    """``TITLE[:SEVERITY[:STATUS]]`` — trailing parts count only when they are known words,
    so a title may itself contain colons ('Ports: open' is a title).  A bare word right
    after a colon ('x:bogus', 'x:high:bogus') reads as a misspelt field and is refused,
    rather than silently kept in the title with the default severity."""
    title, severity, status = text.strip(), "medium", "open"
    head, sep, last = title.rpartition(":")
    head2, sep2, before = head.rpartition(":")
    word, before_word = last.strip().lower(), before.strip().lower()
    if sep and word in FINDING_STATUSES:
        if sep2 and before_word in FINDING_SEVERITIES:
            return {"title": head2.strip(), "severity": before_word, "status": word}
        if _field_like(before if sep2 else last):
            raise _bad_finding(text, before if sep2 else last, "severity", FINDING_SEVERITIES)
    elif sep and word in FINDING_SEVERITIES:
        title, severity = head, word
    elif sep and _field_like(last):
        if sep2 and before_word in FINDING_SEVERITIES:
            raise _bad_finding(text, last, "status", FINDING_STATUSES)
        raise _bad_finding(text, last, "severity", FINDING_SEVERITIES)
    return {"title": title.strip(), "severity": severity, "status": status}


def _field_like(part: str) -> bool:
    """One bare word straight after the colon, the way SEVERITY and STATUS are written."""
    return part.isascii() and part.isalpha()


def _bad_finding(text: str, part: str, kind: str, allowed: tuple[str, ...]) -> CLIError:
    return CLIError(f"--finding {text!r}: {part!r} is not a {kind} ({', '.join(allowed)}); write "
                    "'TITLE[:SEVERITY[:STATUS]]', and end a title that contains a colon with "
                    "':SEVERITY' (e.g. 'x:y:medium')")


@click.command("risk")
@click.option("--vendor", help="Show one vendor's score with every part explained.")
@FORMAT_OPTION
@with_app
def risk(vendor: str | None, fmt: str) -> None:
    """Vendor risk scores (0-100) with each part's contribution, riskiest first."""
    db = get_session()
    if vendor:
        data = svc.vendor_risk(db, _vendor(db, vendor))
        if fmt == "json":
            click.echo(to_json(data))
            return
        if fmt == "csv":
            click.echo(render_csv([svc.flat_row(data)], svc.FLAT_COLUMNS), nl=False)
            return
        click.echo(f"{data['vendor']}: {data['score']} / 100 ({data['band']})  = subtotal "
                   f"{data['subtotal']} × modifier {data['modifier']}")
        for p in data["parts"]:
            click.echo(f"  {p['part']:<14}{p['points']:>6} / {p['max']:<5g} {p['detail']}")
        for m in data["modifiers"]:
            click.echo(f"  × {m['factor']} {m['modifier']} ({m['detail']})")
        routes = data["concentration"]["routes_all_assets"]
        if routes:
            click.echo("  routes: " + "; ".join(f"{k}: {v}" for k, v in routes.items()))
        return
    table = svc.cached_risk_table(db)
    if fmt == "json":
        click.echo(to_json(table))
        return
    rows = [svc.flat_row(r) for r in table]
    emit(rows, svc.FLAT_COLUMNS if fmt == "csv" else
         ["vendor", "score", "band", "impact", "concentration", "assessment", "updates", "plans",
          "modifier", "critical_assets", "review_state"], fmt,
         empty="No vendors yet. Import an estate ('planb import FILE') or run a collector.")

@click.command("review")
@click.argument("vendor")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML file (printable to PDF).")
@click.option("--output", "-o", "md_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the Markdown to this file instead of standard output.")
@with_app
def review(vendor: str, html_file: Path | None, md_file: Path | None) -> None:
    """The review pack for VENDOR: products and where they run, blast radius, plan coverage
    and gaps, untested exposure, assessment history, open findings, expiring certificates."""
    for path in (html_file, md_file):
        if path is not None:
            check_output_path(path)  # before the work, and before writing either file
    db = get_session()
    pack = review_svc.review_pack(db, _vendor(db, vendor))
    markdown = review_svc.render_markdown(pack)
    if html_file is not None:
        write_text_file(html_file, review_svc.render_html(pack))
    if md_file is not None:
        write_text_file(md_file, markdown)
    else:
        click.echo(markdown)
    for path in (md_file, html_file):
        if path is not None:
            click.echo(f"Wrote {path}", err=True)

@click.group()
def assessments() -> None:
    """Vendor risk assessments (dated reviews with domain scores, certificates, findings)."""

@assessments.command("add")
@click.argument("vendor")
@click.option("--date", "assessed_on", help="Assessment date (YYYY-MM-DD; default today).")
@click.option("--assessor", help="Who assessed (default: you).")
@click.option("--security", type=int, help="Security posture, 0-5.")
@click.option("--update-practices", type=int, help="Update practices, 0-5.")
@click.option("--resilience", type=int, help="Resilience/continuity, 0-5.")
@click.option("--compliance", type=int, help="Compliance, 0-5.")
@click.option("--staged-rollouts/--no-staged-rollouts", default=None, help="Vendor stages its rollouts.")
@click.option("--customer-control/--no-customer-control", "customer_update_control", default=None,
              help="Customers control when updates land.")
@click.option("--rollback/--no-rollback", "rollback_supported", default=None, help="Updates can be rolled back.")
@click.option("--cert", "certs", multiple=True, help="Certification 'NAME:YYYY-MM-DD' (repeatable).")
@click.option("--finding", "findings", multiple=True,
              help="Finding 'TITLE[:SEVERITY[:STATUS]]' (repeatable; default medium, open).")
@click.option("--next-review", "next_review_due", help="Next review due (YYYY-MM-DD; default +1 year).")
@click.option("--notes")
@with_app
def add(vendor: str, certs: tuple[str, ...], findings: tuple[str, ...], **options: Any) -> None:
    """Record an assessment of VENDOR."""
    db = get_session()
    scores = {d: options.pop(d) for d in ASSESSMENT_DOMAINS if options.get(d) is not None}
    for d in ASSESSMENT_DOMAINS:
        options.pop(d, None)
    data = {k: v for k, v in options.items() if v is not None}
    data.update(vendor=vendor, scores=scores, certifications=[_cert(c) for c in certs],
                findings=[_finding(f) for f in findings])
    data.setdefault("assessor", current_actor())
    try:
        assessment = svc.create_assessment(db, data, actor=current_actor())
    except svc.ValidationError as exc:
        raise CLIError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from exc
    db.commit()
    click.echo(f"Recorded assessment #{assessment.id} of {assessment.vendor.name} dated "
               f"{assessment.assessed_on}; next review due {assessment.next_review_due}.")

@assessments.command("list")
@click.option("--vendor")
@FORMAT_OPTION
@with_app
def list_(vendor: str | None, fmt: str) -> None:
    """Assessments, newest first."""
    db = get_session()
    vendor_id = _vendor(db, vendor).id if vendor else None
    rows = [svc.assessment_to_dict(a) for a in svc.list_assessments(db, vendor_id)]
    if fmt == "json":
        click.echo(to_json(rows))
        return
    for r in rows:
        r.update({f"score_{d}": r["scores"][d] for d in ASSESSMENT_DOMAINS})
        r["open"] = len(r["open_findings"])
        r["certs"] = [f"{c['name']} ({c['status']})" for c in r["certifications"]]
    emit(rows, ["id", "vendor", "assessed_on", "assessor", *[f"score_{d}" for d in ASSESSMENT_DOMAINS],
                "open", "certs", "next_review_due"], fmt, empty="No assessments recorded.")

@click.group()
def reviews() -> None:
    """The vendor review calendar."""

@reviews.command("due")
@click.option("--all", "show_all", is_flag=True, help="Also list vendors whose review is scheduled later.")
@FORMAT_OPTION
@with_app
def due(show_all: bool, fmt: str) -> None:
    """Vendors whose review is overdue, due within 30 days or never done — riskiest first."""
    db = get_session()
    rows = svc.review_calendar(db, table=svc.cached_risk_table(db), include_scheduled=show_all)
    emit(rows, ["vendor", "tier", "score", "band", "state", "latest_assessment", "review_due",
                "days_overdue"], fmt, empty="No vendor reviews are due.")
