"""The KQL the app ships (alert rules, the operations guide, the workbook) parses and binds against Application
Insights' tables with Microsoft's Kusto language service, and the workbook shows the guide's queries. Planted
errors of each kind show that the check fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .bicep_checks import INFRA, REPO, parse
from .kql_check import (
    Query,
    alert_queries,
    alert_rules,
    kql_errors,
    normalized,
    shipped_queries,
    workbook_mismatches,
    workbook_queries,
)

WORKBOOK = INFRA / "workbook" / "mail-ingest.workbook.json"

# Planted errors, each with the diagnostic code the language service gives it.
PLANTED = {
    "syntax error": ("traces | summarise count() by bin(timestamp, 1h)", "KS"),
    "unknown table": ("trace | where timestamp > ago(1h)", "KS204"),
    "unknown column": ('traces | where tostring(customDimension.event) == "ingest.done"', "KS142"),
    "a keyword as a column name": ("traces | summarize last = max(timestamp)", "KS228"),
    "wrong argument type": ("traces | summarize sum(message)", "KS138"),
    "wrong operand types": ("traces | where timestamp > 5", "KS106"),
}


@pytest.fixture(scope="module")
def results() -> dict[str, list[dict[str, object]]]:
    planted = [Query(f"planted {name}", text) for name, (text, _) in PLANTED.items()]
    return kql_errors(shipped_queries(REPO) + planted)


def test_every_shipped_query_parses_and_binds(results: dict[str, list[dict[str, object]]]) -> None:
    shipped = shipped_queries(REPO)
    assert {q.name for q in shipped} <= set(results)
    # Every rule, those made only with a setting too (malware-unscanned).
    rules = [r["name"] for r in alert_rules(INFRA)]
    assert len(alert_queries(INFRA)) == len(rules) and "malware-unscanned" in rules
    assert len(workbook_queries(WORKBOOK)) >= 8
    failing = {q.name: results[q.name] for q in shipped if results[q.name]}
    assert failing == {}, json.dumps(failing, indent=1)


@pytest.mark.parametrize("planted", list(PLANTED))
def test_a_planted_kql_error_is_caught(results: dict[str, list[dict[str, object]]], planted: str) -> None:
    _, code = PLANTED[planted]
    errors = results[f"planted {planted}"]
    assert errors and any(str(e["code"]).startswith(code) for e in errors), errors


def test_an_error_planted_in_an_alert_rule_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    path = copy / "modules/alerts.bicep"
    path.write_text(path.read_text().replace('"subscription.failed" | project', '"subscription.failed" | projekt', 1))
    errors = kql_errors(alert_queries(copy))
    assert errors["alert subscription-failed"], errors
    assert not errors["alert needs-consent"]


def test_the_workbook_shows_the_operations_guide_queries() -> None:
    assert workbook_mismatches(REPO) == []


def test_a_workbook_query_the_guide_lacks_is_caught(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "infra" / "workbook").mkdir(parents=True)
    (repo / "docs").mkdir()
    shutil.copy(REPO / "docs" / "operations.md", repo / "docs" / "operations.md")
    data = json.loads(WORKBOOK.read_text())
    item = next(i for i in data["items"] if i["name"] == "lag")
    item["content"]["query"] = item["content"]["query"].replace("percentile(lag_s, 95)", "percentile(lag_s, 99)")
    (repo / "infra" / "workbook" / WORKBOOK.name).write_text(json.dumps(data))
    assert workbook_mismatches(repo) == [f"{WORKBOOK.name}: workbook lag is not a query of docs/operations.md"]


def test_the_workbook_has_the_operators_picture() -> None:
    """Per source: mails and files per hour, lag p50/p95, failures, poison queues, subscription expiry, last poll."""
    text = {q.name.removeprefix("workbook "): normalized(q.text) for q in workbook_queries(WORKBOOK)}
    assert "mails = count(), files = sum(" in text["mails-files"] and "bin(timestamp, 1h)" in text["mails-files"]
    assert "percentile(lag_s, 50)" in text["lag"] and "percentile(lag_s, 95)" in text["lag"]
    assert "failures = count()" in text["failures"]
    assert '"ingest.poisoned"' in text["poison"]
    assert "hours_left" in text["subscriptions"]
    assert '"source.polled"' in text["polls"]
    data = json.loads(WORKBOOK.read_text())
    assert data["version"] == "Notebook/1.0"
    assert data["fallbackResourceIds"] == ["__APPLICATION_INSIGHTS_ID__"]
    bicep = (INFRA / "modules" / "workbook.bicep").read_text()
    assert "loadTextContent('../workbook/mail-ingest.workbook.json')" in bicep
    assert "'__APPLICATION_INSIGHTS_ID__'" in bicep
    assert "output AZURE_WORKBOOK_URL string" in (INFRA / "main.bicep").read_text()
    for hook in ("postprovision.sh", "postprovision.ps1"):
        assert "AZURE_WORKBOOK_URL" in (INFRA / "hooks" / hook).read_text(), hook


def test_the_event_grid_chart_shows_in_eventgrid_deployments_only() -> None:
    """Parked (`event.poisoned`) and dead-lettered (`eventgrid.deadlettered`) events, behind the hidden GraphDelivery
    parameter, which workbook.bicep fills with main.bicep's graphDelivery."""
    data = json.loads(WORKBOOK.read_text())
    (item,) = [i for i in data["items"] if i["name"] == "eventgrid"]
    assert '"event.poisoned", "eventgrid.deadlettered"' in item["content"]["query"]
    assert item["conditionalVisibility"] == {
        "parameterName": "GraphDelivery",
        "comparison": "isEqualTo",
        "value": "eventgrid",
    }
    (parameter,) = [p for p in data["items"][1]["content"]["parameters"] if p["name"] == "GraphDelivery"]
    assert parameter["value"] == "__GRAPH_DELIVERY__" and parameter["isHiddenWhenLocked"]
    workbook = (INFRA / "modules" / "workbook.bicep").read_text()
    assert "replace(content, '__GRAPH_DELIVERY__', graphDelivery)" in workbook
    module = parse(INFRA / "main.bicep")["modules"]["workbook"]
    assert "graphDelivery" in json.dumps(module), module
