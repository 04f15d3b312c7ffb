"""deploy/monitoring: the alert rules and the Grafana dashboard parse, and every series they use is
one a scrape of the app really contains; docs/metrics.md documents every series."""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

import promql_parser
import pytest
import yaml

from inventory import metrics
from inventory.db import write_session
from inventory.models import CollectionRun
from tests.conftest import bearer, create_api_token, make_test_app
from tests.deploy.helpers import ROOT, samples

MONITORING = ROOT / "deploy" / "monitoring"
# Series Prometheus itself adds to every target.
PROMETHEUS_SERIES = {"up"}
SEVERITIES = {"info", "warning", "critical"}


@pytest.fixture(scope="module")
def scrape(tmp_path_factory, _demo_template) -> dict[str, list[dict[str, str]]]:  # type: ignore[no-untyped-def]
    """Sample name -> the label sets it has, from a scrape of a test app that has done a bit of everything."""
    import shutil

    folder = tmp_path_factory.mktemp("monitoring")
    shutil.copyfile(_demo_template, folder / "demo.sqlite3")
    app = make_test_app(f"sqlite:///{folder / 'demo.sqlite3'}", folder / "instance")
    with write_session(app.extensions["planb_engine"]) as db:
        db.add_all([CollectionRun(collector=source, status=status)
                    for source in ("aws", "azure") for status in ("succeeded", "partial", "failed")])
    token = create_api_token(app, "read")
    client = app.test_client()
    assert client.get("/api/v1/impact?vendor=CrowdStrike", headers=bearer(token)).status_code == 200
    client.get("/api/v1/impact?vendor=CrowdStrike", headers={"Authorization": "Bearer nope"})
    response = client.get("/metrics", headers=bearer(token))
    assert response.status_code == 200
    app.extensions["planb_engine"].dispose()
    names: dict[str, list[dict[str, str]]] = {}
    for name, labels in samples(response.get_data(as_text=True)):
        names.setdefault(name, []).append(dict(labels))
    return names


def selectors(node: Any) -> Iterator[promql_parser.VectorSelector]:
    """Every vector selector of a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, promql_parser.Call):
        for argument in node.args:
            yield from selectors(argument)
    elif isinstance(node, promql_parser.AggregateExpr):
        yield from selectors(node.expr)
        if node.param is not None:
            yield from selectors(node.param)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)
    elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        yield from selectors(node.expr)


def check_expression(expr: str, scrape: dict[str, list[dict[str, str]]], where: str) -> set[str]:
    """Parse ``expr``; every series it selects must be in the scrape, with the exact label values
    it matches on.  Returns the series names."""
    try:
        parsed = promql_parser.parse(expr)
    except ValueError as exc:
        raise AssertionError(f"{where}: {expr!r} is not PromQL: {exc}") from None
    used = set()
    for selector in selectors(parsed):
        name = selector.name
        assert name, f"{where}: a selector without a metric name in {expr!r}"
        used.add(name)
        if name in PROMETHEUS_SERIES:
            continue
        assert name in scrape, f"{where}: {name} is not a series Plan B exports"
        for matcher in selector.matchers.matchers:
            if str(matcher.op).endswith("Equal") and "Not" not in str(matcher.op):
                assert any(labels.get(matcher.name) == matcher.value for labels in scrape[name]), \
                    f"{where}: no {name} sample has {matcher.name}={matcher.value!r}"
    return used


def test_the_scrape_has_every_series_the_app_declares(scrape):
    for name in metrics.PROCESS_SERIES + metrics.DATABASE_SERIES:
        assert any(sample == name or sample.startswith(name + "_") for sample in scrape), name


def test_alert_rules_parse_and_use_exported_series(scrape):
    document = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert len({rule["alert"] for rule in rules}) == len(rules)
    used_by: dict[str, set[str]] = {}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            promql_parser.parse_duration(rule["for"])
        used_by[rule["alert"]] = check_expression(rule["expr"], scrape, rule["alert"])
    # The three the issue asks for: stale collection, gate red, failed runs.
    assert "planb_collection_last_success_age_seconds" in used_by["PlanBCollectionStale"]
    assert "planb_update_gate_ok" in used_by["PlanBUpdateGateRed"]
    assert "planb_collection_runs_total" in used_by["PlanBCollectionRunsFailed"]
    assert 'status="failed"' in next(r["expr"] for r in rules if r["alert"] == "PlanBCollectionRunsFailed")


def test_alert_checking_catches_a_series_the_app_does_not_export(scrape):
    with pytest.raises(AssertionError, match="not a series Plan B exports"):
        check_expression("max(planb_colection_runs_total) > 0", scrape, "typo")
    with pytest.raises(AssertionError, match="no planb_collection_runs_total sample"):
        check_expression('planb_collection_runs_total{status="failure"}', scrape, "wrong value")
    with pytest.raises(AssertionError, match="is not PromQL"):
        check_expression("max(planb_assets", scrape, "syntax")


def test_grafana_dashboard_uses_exported_series(scrape):
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] == "Plan B"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            # Grafana's own variables, as Grafana substitutes them before Prometheus sees the query.
            expr = re.sub(r"\$__rate_interval|\$__interval", "5m", target["expr"])
            used |= check_expression(expr, scrape, panel["title"])
    # Every series Plan B exports has a place on the dashboard.
    for name in metrics.PROCESS_SERIES + metrics.DATABASE_SERIES:
        assert any(series == name or series.startswith(name + "_") for series in used), name


def test_prometheus_scrape_job():
    [job] = yaml.safe_load((MONITORING / "prometheus-scrape.yaml").read_text())
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"   # anonymous scrapes get 401


def test_docs_describe_every_series():
    text = (ROOT / "docs" / "metrics.md").read_text()
    for name in metrics.PROCESS_SERIES + metrics.DATABASE_SERIES:
        exposed = name + "_total" if name in ("planb_http_requests", "planb_graph_rebuilds",
                                              "planb_collection_runs") else name
        assert f"`{exposed}`" in text, f"docs/metrics.md does not describe {exposed}"
