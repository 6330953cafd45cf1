"""Every KQL query the app ships, parsed and bound against the Application Insights tables with Microsoft's Kusto
language service (npm @kusto/language-service-next, run by node: tests/infra/kql/check.js).

The queries: the alert rules' (infra/modules/alerts.bicep, their Bicep interpolations filled with sample values),
every ```kusto block of docs/operations.md, and the workbook's (infra/workbook/*.workbook.json). The alert rules and
the workbook read Application Insights itself, so the tables are its classic ones (traces, requests, ...), with the
columns Microsoft lists for them ("Application Insights telemetry data model ... legacy table" in the
workspace-based resource migration guide, learn.microsoft.com/azure/azure-monitor/app/convert-classic-resource).
`success` is bool: on a workspace-based resource the classic tables are read from AppRequests and AppDependencies,
whose Success is bool, and the docs' own queries compare it with `false`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bicep_checks import REPO, parse

CHECKER = Path(__file__).parent / "kql" / "check.js"
NODE_MODULES = REPO / "node_modules"

_COMMON = (
    "timestamp:datetime, itemType:string, itemId:string, itemCount:int, customDimensions:dynamic, "
    "operation_Id:string, operation_Name:string, operation_ParentId:string, operation_SyntheticSource:string, "
    "session_Id:string, user_Id:string, user_AuthenticatedId:string, user_AccountId:string, "
    "application_Version:string, client_Type:string, client_Model:string, client_OS:string, client_IP:string, "
    "client_City:string, client_StateOrProvince:string, client_CountryOrRegion:string, client_Browser:string, "
    "cloud_RoleName:string, cloud_RoleInstance:string, appId:string, appName:string, iKey:string, sdkVersion:string"
)
TABLES = {
    "traces": f"({_COMMON}, message:string, severityLevel:int, customMeasurements:dynamic)",
    "requests": (
        f"({_COMMON}, id:string, name:string, url:string, source:string, success:bool, resultCode:string, "
        "duration:real, performanceBucket:string, customMeasurements:dynamic)"
    ),
    "exceptions": (
        f"({_COMMON}, problemId:string, handledAt:string, type:string, message:string, assembly:string, "
        "method:string, outerType:string, outerMessage:string, outerAssembly:string, outerMethod:string, "
        "innermostType:string, innermostMessage:string, innermostAssembly:string, innermostMethod:string, "
        "severityLevel:int, details:dynamic, customMeasurements:dynamic)"
    ),
    "dependencies": (
        f"({_COMMON}, id:string, target:string, type:string, name:string, data:string, success:bool, "
        "resultCode:string, duration:real, performanceBucket:string, customMeasurements:dynamic)"
    ),
    "customEvents": f"({_COMMON}, name:string, customMeasurements:dynamic)",
}

# Values for the alert queries' Bicep interpolations, as a deployment would fill them.
ALERT_SAMPLES = {
    "notificationSilenceHours": "24",
    "mailboxesLiteral": '@"invoices@contoso.com, scans@contoso.com/Inbox/Delivery notes, imaps://a%40b.org@h?secret=s"',
}


@dataclass(frozen=True)
class Query:
    name: str
    text: str


def _bicep_unescape(text: str) -> str:
    escapes = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), text)


def alert_rules(infra: Path) -> list[dict[str, Any]]:
    """Every rule of alerts.bicep: the entries of each variable that lists rules (those always made, and those
    made with a setting, such as MALWARE_SCANNING's)."""
    variables = parse(infra / "modules" / "alerts.bicep")["variables"].values()
    lists = [v["value"] for v in variables if isinstance(v["value"], list)]
    return [rule for rules in lists for rule in rules if isinstance(rule, dict) and "query" in rule]


def alert_queries(infra: Path) -> list[Query]:
    return [
        Query(f"alert {rule['name']}", _fill(rule["name"], _bicep_unescape(rule["query"])))
        for rule in alert_rules(infra)
    ]


def _fill(rule: str, text: str) -> str:
    def sample(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in ALERT_SAMPLES:
            raise KeyError(f"alert {rule}: no sample value for ${{{name}}} (kql_check.ALERT_SAMPLES)")
        return ALERT_SAMPLES[name]

    return re.sub(r"\$\{(\w+)\}", sample, text)


def doc_queries(doc: Path) -> list[Query]:
    blocks = re.findall(r"```kusto\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    return [Query(f"{doc.name} query {i + 1}", block.rstrip("\n")) for i, block in enumerate(blocks)]


def workbook_queries(workbook: Path) -> list[Query]:
    data = json.loads(workbook.read_text())
    return [
        Query(f"workbook {item['name']}", item["content"]["query"])
        for item in data["items"]
        if item.get("type") == 3 and item["content"].get("version") == "KqlItem/1.0"
    ]


def shipped_queries(repo: Path) -> list[Query]:
    queries = alert_queries(repo / "infra") + doc_queries(repo / "docs" / "operations.md")
    for workbook in sorted((repo / "infra" / "workbook").glob("*.workbook.json")):
        queries += workbook_queries(workbook)
    return queries


def kql_errors(queries: list[Query]) -> dict[str, list[dict[str, Any]]]:
    """Each query's errors from the Kusto language service (empty list: it parses and binds)."""
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "@kusto" / "language-service-next").is_dir():
        raise FileNotFoundError("node and node_modules/@kusto/language-service-next are needed: run `make setup`")
    payload = json.dumps({"tables": TABLES, "queries": [q.__dict__ for q in queries]})
    proc = subprocess.run(
        [node, str(CHECKER)], input=payload, capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{CHECKER.name} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {r["name"]: r["errors"] for r in json.loads(proc.stdout)}


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def workbook_mismatches(repo: Path) -> list[str]:
    """The workbook's queries that are not, word for word, a query of docs/operations.md."""
    documented = {normalized(q.text) for q in doc_queries(repo / "docs" / "operations.md")}
    problems = []
    for workbook in sorted((repo / "infra" / "workbook").glob("*.workbook.json")):
        problems += [
            f"{workbook.name}: {q.name} is not a query of docs/operations.md"
            for q in workbook_queries(workbook)
            if normalized(q.text) not in documented
        ]
    return problems
