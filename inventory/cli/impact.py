"""``planb impact``, ``planb scenarios ...`` and ``planb incidents ...``.

    planb impact --vendor CrowdStrike --product "Falcon Sensor" --version ">=7.11" --os windows
    planb impact --vendor "Microsoft" --region centralus --as-of 2024-07-19T04:09:00Z --format json
    planb scenarios save falcon-windows --vendor CrowdStrike --os windows
    planb incidents declare --title "Falcon boot loop" --scenario falcon-windows
    planb incidents recover 1 host:web-01 host:web-02 --note "safe mode fix applied"

A bad scope prints what is wrong (with close names) and exits with status 2.
"""
from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any, Callable

import click

from inventory.app_db import get_engine, get_session
from inventory.principal import current_actor
from inventory.choices import OS_FAMILIES
from inventory.cli import CLIError, with_app
from inventory.cli.output import FORMAT_OPTION, emit, render_csv, to_json
from inventory.cli.params import DATETIME, LIMIT, DbId
from inventory.db import read_session
from inventory.ids import as_id, looks_like_id
from inventory.services.blast_view import VERSION_UNKNOWN_STATUS, describe_unknown

SCOPE_ERROR_EXIT = 2
INCIDENT_ID = DbId("no incident {}")  # the service's message for an unknown incident
TABLE_COLUMNS = ["status", "hops", "criticality", "kind", "name", "os_family", "region", "plan", "path"]
UNKNOWN_COLUMNS = ["criticality", "kind", "name", "os_family", "region", "status", "why"]

CSV_COLUMNS = ["status", "hops", "seed", "criticality", "kind", "natural_key", "name", "provider", "account",
               "region", "os_family", "environment", "owner", "gap", "plans", "services", "path"]


def scope_options(func: Callable[..., Any],
                  vendor_help: str = "Vendor name or alias (required).") -> Callable[..., Any]:
    options = [
        click.option("--vendor", help=vendor_help),
        click.option("--product", "products", multiple=True, help="Narrow to a product (repeatable)."),
        click.option("--version", "version_range", help="PEP 440 range, e.g. '>=7.11' or '>=7.11,<7.16'."),
        click.option("--os", "os_families", multiple=True,
                     help=f"OS family: {', '.join(OS_FAMILIES)} (repeatable)."),
        click.option("--region", "regions", multiple=True, help="Provider region or location (repeatable)."),
        click.option("--account", "accounts", multiple=True, help="Account / subscription (repeatable)."),
        click.option("--environment", "environments", multiple=True, help="Environment (repeatable)."),
        click.option("--tag", "tags", multiple=True, help="Tag as key:value (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _scope(vendor: str | None, products: tuple[str, ...], version_range: str | None,
           os_families: tuple[str, ...], regions: tuple[str, ...], accounts: tuple[str, ...],
           environments: tuple[str, ...], tags: tuple[str, ...]) -> dict[str, Any]:
    if version_range is not None and not version_range.strip():
        # An empty range is a mistake (a shell variable that was not set), not "any version".
        raise CLIError("version: --version is empty; give a range such as '>=7.11', or leave it out "
                       "for every version", exit_code=SCOPE_ERROR_EXIT)
    scope: dict[str, Any] = {"vendor": vendor}
    for name, value in (("products", products), ("os", os_families), ("regions", regions),
                        ("accounts", accounts), ("environments", environments), ("tags", tags)):
        if value:
            scope[name] = list(value)
    if version_range:
        scope["version"] = version_range
    return scope


def _scope_failure(exc: Exception) -> CLIError:
    field = getattr(exc, "field", None)
    message = str(exc)
    return CLIError(f"{field}: {message}" if field else message, exit_code=SCOPE_ERROR_EXIT)


def _plan_label(hit: dict[str, Any]) -> str:
    if hit["gap"]:
        return "GAP"
    first = hit["plans"][0]    # the most specific (see inventory.impact.plans)
    more = f" +{len(hit['plans']) - 1}" if len(hit["plans"]) > 1 else ""
    return f"{first['name']} ({first['status'].replace('_', ' ')}){more}"


def _path_label(hit: dict[str, Any]) -> str:
    steps = hit["path"]
    if len(steps) == 1:
        return "seed"
    out = steps[0]["name"]
    for step, nxt in zip(steps, steps[1:]):
        out += f" -{step['edge_kind']}-> {nxt['name']}"
    return out


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The readable head of an answer: totals, services, plan coverage, data freshness."""
    totals, conf, scope = data["totals"], data["confidence"], data["scope"]
    text = [scope["vendor"]] + scope["products"] + ([scope["version"]] if scope["version"] else [])
    for label, key in (("os", "os"), ("region", "regions"), ("account", "accounts"), ("env", "environments")):
        if scope[key]:
            text.append(f"{label}={','.join(scope[key])}")
    text += [f"tag {k}:{v}" for k, v in scope["tags"].items()]
    lines = [f"Blast radius: {' '.join(text)}" + (f"  (as of {data['as_of']})" if data["as_of"] else "")]
    st = totals["by_status"]
    lines.append(f"  {totals['seeds']} seed(s); {totals['hits']} asset(s) hit: {st['down']} down, "
                 f"{st['degraded']} degraded")
    crit = [f"{c} {v['total']} ({v['down']} down)" for c, v in totals["by_criticality"].items() if v["total"]]
    if crit:
        lines.append("  By criticality: " + ", ".join(crit))
    if totals["by_service"]:
        shown = totals["by_service"][:12]
        more = len(totals["by_service"]) - len(shown)
        lines.append("  Business services: " + ", ".join(f"{s['name']} ({s['status']})" for s in shown)
                     + (f", and {more} more" if more > 0 else ""))
    cov = totals["plan_coverage"]
    lines.append(f"  Plans: {cov['current']} with a current plan, {cov['never_exercised']} never exercised, "
                 f"{cov['stale_only']} stale only, {cov['gap']} GAP(s) with no plan")
    fresh = "  Data: "
    fresh += (f"last successful collection {conf['oldest_last_success']} .. {conf['newest_last_success']}"
              if conf["newest_last_success"] else "no collector data for these assets")
    if conf["incomplete_scopes"]:
        shown_scopes = ", ".join(conf["incomplete_scopes"][:5])
        fresh += f"; incomplete: {shown_scopes}"
    lines.append(fresh)
    lines += [f"  Note: {note}" for note in conf["notes"]]
    if data.get("what_if"):
        ch = data["what_if"]["changes"]
        lines.append(f"  What-if: {ch['no_longer_hit']['count']} no longer hit, {ch['newly_hit']['count']} newly "
                     f"hit, {ch['down_to_degraded']['count']} down->degraded, "
                     f"{ch['degraded_to_down']['count']} degraded->down")
    return lines


def print_result(data: dict[str, Any], fmt: str, shown_limit: int | None) -> None:
    if fmt == "json":
        click.echo(to_json(data))
        return
    hits = data["hits"]
    unknown = data.get("version_unknown") or []
    if fmt == "csv":
        rows = [{**h, "plans": [f"{p['name']} ({p['status']}, via {p['via']})" for p in h["plans"]],
                 "path": _path_label(h)} for h in hits]
        # After the hits: hosts whose version the range cannot place, to check by hand.
        rows += [{**u, "status": VERSION_UNKNOWN_STATUS, "path": describe_unknown(u)} for u in unknown]
        click.echo(render_csv(rows, CSV_COLUMNS), nl=False)
        return
    for line in summary_lines(data):
        click.echo(line)
    click.echo("")
    rows = [{**h, "plan": _plan_label(h), "path": _path_label(h)} for h in hits]
    emit(rows, TABLE_COLUMNS, "table", empty="No asset is hit.")
    total = data["page"]["total"]
    if shown_limit is not None and total > len(hits):
        click.echo(f"... {total - len(hits)} more; use --limit 0 or --format json/csv for all")
    unknown_total = data["page"].get("version_unknown_total", len(unknown))
    if unknown_total:
        click.echo("")
        click.echo(f"Version unknown — check by hand ({unknown_total}): they run {data['scope']['vendor']} "
                   f"software whose version cannot be compared with {data['scope']['version']!r}, "
                   "so they are not counted above")
        emit([{**u, "why": describe_unknown(u)} for u in unknown], UNKNOWN_COLUMNS, "table")
        if unknown_total > len(unknown):
            click.echo(f"... {unknown_total - len(unknown)} more; use --limit 0 or --format json/csv for all")




def _find_scenario(db: Any, ref: str, by_id: bool = False) -> Any:
    """The scenario REF names.  An exact name wins over an id, so a scenario named '2' is
    always reachable by its name; ``by_id`` (--id) reads REF as an id only."""
    import sqlalchemy as sa

    from inventory.models import Scenario
    from inventory.services.incidents import IncidentError

    if by_id:
        row_id = as_id(ref)
        scenario = db.get(Scenario, row_id) if row_id is not None else None
        if scenario is None:
            message = (f"no scenario with id {ref}" if looks_like_id(ref)
                       else f"--id takes a scenario id (a number), not {ref!r}")
            raise IncidentError(message, field="scenario", status=404)
        return scenario
    scenario = db.scalar(sa.select(Scenario).where(Scenario.name == ref.strip()))
    row_id = as_id(ref) if looks_like_id(ref) else None
    by_number = db.get(Scenario, row_id) if row_id is not None else None
    if scenario is None:
        scenario = by_number
    elif by_number is not None and by_number.id != scenario.id:
        click.echo(f"Note: {ref!r} is the name of scenario {scenario.id} and the id of scenario "
                   f"{by_number.name!r}; using the name (--id {row_id} for the other).", err=True)
    if scenario is None:
        raise IncidentError(f"no scenario {ref!r}", field="scenario", status=404)
    return scenario


def _load_what_if(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    from inventory.estate.importer import loads_json

    try:
        with click.open_file(path) as fh:
            data = loads_json(fh.read())
    except (OSError, ValueError) as exc:  # JSONDecodeError, JSONTooDeep, not UTF-8
        raise CLIError(f"--what-if: cannot read {path}: {exc}", exit_code=SCOPE_ERROR_EXIT) from exc
    if not isinstance(data, dict):
        raise CLIError("--what-if: the file must hold a JSON object", exit_code=SCOPE_ERROR_EXIT)
    return data


@click.command("impact")
@scope_options
@click.option("--as-of", "as_of", type=DATETIME,
              help="Answer for a past moment (ISO 8601, UTC if no offset).")
@click.option("--what-if", "what_if", type=click.Path(dir_okay=False, allow_dash=True),
              help="JSON file of hypothetical changes (see docs/explanation/blast-radius.md); nothing is written.")
@click.option("--limit", type=LIMIT, default=None,
              help="Rows to show (table default 50; 0 = all).")
@FORMAT_OPTION
@with_app
def impact(vendor: str | None, products: tuple[str, ...], version_range: str | None,
           os_families: tuple[str, ...], regions: tuple[str, ...], accounts: tuple[str, ...],
           environments: tuple[str, ...], tags: tuple[str, ...], as_of: datetime | None,
           what_if: str | None,
           limit: int | None, fmt: str) -> None:
    """Which assets a vendor outage hits, how badly, why, and what the plan is."""
    from inventory.impact import ScopeError, blast_radius

    scope = _scope(vendor, products, version_range, os_families, regions, accounts, environments, tags)
    changes = _load_what_if(what_if)
    if limit is None:
        limit = 50 if fmt == "table" else 0
    with read_session(get_engine()) as db:
        try:
            result = blast_radius(db, scope, as_of=as_of, what_if=changes)
        except ScopeError as exc:
            raise _scope_failure(exc) from exc
        print_result(result.to_dict(limit=limit or None, seeds_limit=limit or None), fmt, limit or None)

# ------------------------------------------------------------ scenarios

@click.group()
def scenarios() -> None:
    """Saved outage scopes for drills and quick re-use."""

@scenarios.command("save")
@click.argument("name")
@scope_options
@click.option("--description", help="What this scenario rehearses.")
@with_app
def save(name: str, vendor: str | None, products: tuple[str, ...], version_range: str | None,
         os_families: tuple[str, ...], regions: tuple[str, ...], accounts: tuple[str, ...],
         environments: tuple[str, ...], tags: tuple[str, ...], description: str | None) -> None:
    """Save (or replace) the scenario NAME."""
    from inventory.impact import ScopeError
    from inventory.services import incidents as svc

    db = get_session()
    scope = _scope(vendor, products, version_range, os_families, regions, accounts, environments, tags)
    try:
        scenario = svc.save_scenario(db, name, scope, current_actor(), description)
    except (ScopeError, svc.IncidentError) as exc:
        db.rollback()
        raise _scope_failure(exc) from exc
    db.commit()
    click.echo(f"Saved scenario {scenario.name!r} (id {scenario.id}).")

@scenarios.command("list")
@FORMAT_OPTION
@with_app
def list_cmd(fmt: str) -> None:
    """Saved scenarios."""
    from inventory.services import incidents as svc

    rows = [svc.scenario_to_dict(s) for s in svc.list_scenarios(get_session())]
    if fmt == "json":
        click.echo(to_json(rows))
        return
    for row in rows:
        row["scope_text"] = json.dumps({k: v for k, v in row["scope"].items() if v})
    emit(rows, ["id", "name", "scope_text", "description", "created_by"], fmt,
         headers=["id", "name", "scope", "description", "by"] if fmt == "table" else None,
         empty="No scenarios yet: planb scenarios save NAME --vendor ...")

@scenarios.command("run")
@click.argument("name")
@click.option("--id", "by_id", is_flag=True, help="NAME is a scenario id (by default a name wins).")
@click.option("--as-of", "as_of", type=DATETIME, help="Answer for a past moment (ISO 8601).")
@click.option("--limit", type=LIMIT, default=None, help="Rows to show (0 = all).")
@FORMAT_OPTION
@with_app
def run(name: str, by_id: bool, as_of: datetime | None, limit: int | None, fmt: str) -> None:
    """The blast radius of the saved scenario NAME (a name, else an id; see --id)."""
    from inventory.impact import ScopeError
    from inventory.services import incidents as svc

    if limit is None:
        limit = 50 if fmt == "table" else 0
    with read_session(get_engine()) as db:
        try:
            scenario = _find_scenario(db, name, by_id)
            result = svc.run_scenario(db, scenario.id, as_of=as_of)
        except (ScopeError, svc.IncidentError) as exc:
            raise _scope_failure(exc) from exc
        # Say which scenario answered; on stderr when stdout is for a program.
        click.echo(f"Scenario {scenario.name!r} (id {scenario.id})", err=fmt != "table")
        print_result(result.to_dict(limit=limit or None), fmt, limit or None)

@scenarios.command("delete")
@click.argument("name")
@click.option("--id", "by_id", is_flag=True, help="NAME is a scenario id (by default a name wins).")
@with_app
def delete(name: str, by_id: bool) -> None:
    """Delete the saved scenario NAME (a name, else an id; see --id)."""
    from inventory.services import incidents as svc

    db = get_session()
    try:
        scenario = _find_scenario(db, name, by_id)
        deleted = (scenario.id, scenario.name)
        svc.delete_scenario(db, scenario.id, current_actor())
    except svc.IncidentError as exc:
        db.rollback()
        raise CLIError(exc.message) from exc
    db.commit()
    click.echo(f"Deleted scenario {deleted[1]!r} (id {deleted[0]}).")

# ------------------------------------------------------------ incidents

@click.group()
def incidents() -> None:
    """Declared incidents: blast-radius snapshots and recovery progress."""

@incidents.command("declare")
@click.option("--title", required=True, help="What happened, in a few words.")
@click.option("--scenario", help="Use a saved scenario's scope instead of scope options.")
@functools.partial(scope_options, vendor_help="Vendor name or alias (required unless --scenario).")
@with_app
def declare(title: str, scenario: str | None, vendor: str | None, products: tuple[str, ...],
            version_range: str | None, os_families: tuple[str, ...], regions: tuple[str, ...],
            accounts: tuple[str, ...], environments: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Declare an incident and snapshot its blast radius now."""
    from inventory.impact import ScopeError
    from inventory.services import incidents as svc

    db = get_session()
    try:
        if scenario:
            if vendor:
                raise CLIError("give --scenario or scope options, not both", exit_code=SCOPE_ERROR_EXIT)
            scope = _find_scenario(db, scenario).scope
        else:
            scope = _scope(vendor, products, version_range, os_families, regions, accounts, environments,
                           tags)
        incident = svc.declare_incident(db, scope, title, current_actor())
    except (ScopeError, svc.IncidentError) as exc:
        db.rollback()
        raise _scope_failure(exc) from exc
    db.commit()
    progress = svc.incident_progress(incident)
    by_status = incident.summary["totals"]["by_status"]
    click.echo(f"Declared incident {incident.id}: {incident.title} — {progress['total']} asset(s) hit "
               f"({by_status['down']} down, {by_status['degraded']} degraded).")

@incidents.command("list")
@click.option("--status", type=click.Choice(["open", "resolved"]), help="Only open or resolved incidents.")
@FORMAT_OPTION
@with_app
def list_incidents(status: str | None, fmt: str) -> None:
    """Incidents with recovery progress, newest first."""
    from inventory.services import incidents as svc

    db = get_session()
    rows = [svc.incident_to_dict(db, i) for i in svc.list_incidents(db, status)]
    if fmt == "json":
        click.echo(to_json(rows))
        return
    for row in rows:
        p = row["progress"]
        row["progress_text"] = f"{p['recovered']}/{p['total']} ({p['percent']}%)"
    emit(rows, ["id", "title", "status", "declared_at", "declared_by", "progress_text"], fmt,
         headers=["id", "title", "status", "declared", "by", "recovered"] if fmt == "table" else None,
         empty="No incidents.")

@incidents.command("show")
@click.argument("incident_id", type=INCIDENT_ID)
@click.option("--limit", type=LIMIT, default=None, help="Assets to list (0 = all).")
@FORMAT_OPTION
@with_app
def show(incident_id: int, limit: int | None, fmt: str) -> None:
    """An incident's snapshot and recovery progress."""
    from inventory.services import incidents as svc

    db = get_session()
    try:
        incident = svc.get_incident(db, incident_id)
    except svc.IncidentError as exc:
        raise CLIError(exc.message) from exc
    if limit is None:
        limit = 50 if fmt == "table" else 0
    data = svc.incident_to_dict(db, incident, with_assets=True, limit=limit or None)
    if fmt == "json":
        click.echo(to_json(data))
        return
    rows = [{**a, "plan": _plan_label(a), "recovered": a["recovered_at"] or ""} for a in data["assets"]]
    if fmt == "csv":
        emit(rows, ["status", "hops", "criticality", "kind", "natural_key", "name", "plan", "recovered"], fmt)
        return
    p = data["progress"]
    click.echo(f"Incident {data['id']}: {data['title']} [{data['status']}]")
    click.echo(f"  Declared {data['declared_at']} by {data['declared_by']}; scope: "
               f"{incident.summary.get('scope_text', '')}")
    click.echo(f"  Recovered {p['recovered']} of {p['total']} ({p['percent']}%)")
    click.echo("")
    emit(rows, ["status", "hops", "criticality", "kind", "name", "plan", "recovered"], "table",
         empty="No assets in this incident.")
    if limit and p["total"] > len(rows):
        click.echo(f"... {p['total'] - len(rows)} more; use --limit 0")

@incidents.command("recover")
@click.argument("incident_id", type=INCIDENT_ID)
@click.argument("assets", nargs=-1, required=True)
@click.option("--note", help="What was done.")
@with_app
def recover(incident_id: int, assets: tuple[str, ...], note: str | None) -> None:
    """Mark ASSETS (natural keys or asset ids) recovered."""
    from inventory.services import incidents as svc

    db = get_session()
    try:
        changed = svc.mark_recovered(db, incident_id, list(assets), current_actor(), note)
        incident = svc.get_incident(db, incident_id)
    except svc.IncidentError as exc:
        db.rollback()
        raise CLIError(exc.message) from exc
    db.commit()
    p = svc.incident_progress(incident)
    click.echo(f"Marked {changed} asset(s) recovered; {p['recovered']} of {p['total']} ({p['percent']}%).")

@incidents.command("resolve")
@click.argument("incident_id", type=INCIDENT_ID)
@click.option("--note", help="Closing note.")
@with_app
def resolve(incident_id: int, note: str | None) -> None:
    """Resolve an incident."""
    from inventory.services import incidents as svc

    db = get_session()
    try:
        incident = svc.resolve_incident(db, incident_id, current_actor(), note)
    except svc.IncidentError as exc:
        db.rollback()
        raise CLIError(exc.message) from exc
    db.commit()
    click.echo(f"Resolved incident {incident.id}: {incident.title}.")
