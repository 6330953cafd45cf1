"""MALWARE_SCANNING=defender in infra/: the parameter `malwareScanning` adds exactly Defender's module, its settings
and its alert rule, and nothing when it is off; the delivery identity holds the two narrow roles only; a broken
copy is named. Parsed offline with pycep, as the other infra checks are."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .bicep_checks import DEFENDER_FILE, INFRA, app_settings, load, of_type, parse, resources
from .conftest import edit
from .kql_check import alert_rules

# What Defender's module makes, by type (modules/defender.bicep); the existing account it is on is not counted.
DEFENDER_RESOURCES = Counter(
    {
        "Microsoft.Security/defenderForStorageSettings": 1,
        "Microsoft.EventGrid/topics": 1,
        "Microsoft.EventGrid/topics/eventSubscriptions": 1,
        "Microsoft.ManagedIdentity/userAssignedIdentities": 1,
        "Microsoft.Storage/storageAccounts/queueServices/queues": 1,
        "Microsoft.Storage/storageAccounts/blobServices/containers": 2,  # the dead letters and the quarantine
        "Microsoft.Authorization/roleAssignments": 2,
    }
)
MALWARE_SETTINGS = {"MALWARE_SCANNING", "MALWARE_SCAN_QUEUE", "QUARANTINE_CONTAINER"}
MALWARE_PARAMETERS = ("malwareScanning", "malwareScanQueue", "quarantineContainerName")


def _mentions(value: Any, name: str) -> bool:
    return f'"{name}"' in json.dumps(value)


def test_the_parameter_is_off_by_default_and_comes_from_azd() -> None:
    main = parse(INFRA / "main.bicep")["parameters"]
    assert main["malwareScanning"]["type"] == "string" and main["malwareScanning"]["default"] == "off"
    # The app setting's own values, so `azd env set MALWARE_SCANNING defender` means what the settings table says.
    assert {"type": "allowed", "argument": ["off", "defender"]} in main["malwareScanning"]["decorators"]
    assert main["malwareScanningCapGBPerMonth"]["type"] == "int"
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert given["malwareScanning"] == {"value": "${MALWARE_SCANNING=off}"}
    assert given["malwareScanningCapGBPerMonth"]["value"].startswith("${MALWARE_SCANNING_CAP_GB_PER_MONTH=")


def test_only_defenders_module_depends_on_the_parameter() -> None:
    modules = parse(INFRA / "main.bicep")["modules"]
    conditional = {symbol for symbol, m in modules.items() if _mentions(m["config"].get("condition"), "scanning")}
    assert conditional == {"malwareScan"}
    assert modules["malwareScan"]["detail"]["path"] == DEFENDER_FILE
    assert modules["malwareScan"]["config"]["condition"] == "scanning"


def test_on_adds_exactly_defenders_resources() -> None:
    tree = {DEFENDER_FILE: load(INFRA)[DEFENDER_FILE]}
    made = Counter(r.type for r in resources(tree) if not r.existing)
    assert made == DEFENDER_RESOURCES
    # No other module makes any of Defender's kinds of resources, so off makes none of them.
    others = {f: t for f, t in load(INFRA).items() if f != DEFENDER_FILE}
    for kind in ("Microsoft.Security/defenderForStorageSettings", "Microsoft.EventGrid/topics"):
        assert of_type(others, kind) == []


def test_the_settings_follow_the_parameter() -> None:
    settings = app_settings(load(INFRA))
    scanning = settings["MALWARE_SCANNING"]["operator"]
    assert scanning["type"] == "conditional"
    assert scanning["operands"] == {"condition": "malwareScanning", "true_value": "defender", "false_value": "off"}
    assert settings["MALWARE_SCAN_QUEUE"] == "malwareScanQueue"
    assert settings["QUARANTINE_CONTAINER"] == "quarantineContainerName"
    # Nothing else the app is given depends on Defender's parameters.
    depends = {name for name, value in settings.items() if any(_mentions(value, p) for p in MALWARE_PARAMETERS)}
    depends |= {name for name, value in settings.items() if value in MALWARE_PARAMETERS}
    assert depends == MALWARE_SETTINGS


def _rules(scanning: bool) -> list[str]:
    """The alert rules' names as `concat(alwaysRules, malwareScanning ? malwareRules : [])` evaluates."""
    variables = parse(INFRA / "modules/alerts.bicep")["variables"]
    call = variables["rules"]["value"]["function"]
    assert call["type"] == "concat"
    names: list[str] = []
    for arg in call["parameters"].values():
        if isinstance(arg, dict):
            operands = arg["operator"]["operands"]
            assert operands["condition"] == "malwareScanning"
            arg = operands["true_value"] if scanning else operands["false_value"]
        items = variables[arg]["value"] if isinstance(arg, str) else arg
        names += [rule["name"] for rule in items]
    return names


def test_the_alert_rule_comes_with_the_parameter_only() -> None:
    off, on = _rules(False), _rules(True)
    assert "malware-unscanned" not in off
    assert on == [*off, "malware-unscanned"]
    (rule,) = [r for r in alert_rules(INFRA) if r["name"] == "malware-unscanned"]
    # "Persists": two consecutive windows, with the data of both in the query's range.
    assert rule["periods"] == 2 and (rule["window"], rule["queryRange"]) == ("PT30M", "PT1H")
    assert '"malware.unscanned"' in rule["query"]
    main = parse(INFRA / "main.bicep")["modules"]["alerts"]["config"]["params"]
    assert main["malwareScanning"] == "scanning"


def test_the_delivery_identity_holds_two_narrow_roles() -> None:
    tree = {DEFENDER_FILE: load(INFRA)[DEFENDER_FILE]}
    assignments = of_type(tree, "Microsoft.Authorization/roleAssignments")
    scopes = {r.body["scope"]: r.properties["principalId"] for r in assignments}
    assert set(scopes) == {"queue", "deadLetters"}  # the one queue, the one container: not the account
    for principal in scopes.values():
        assert principal["operator"]["operands"]["operand_1"] == "delivery"  # delivery.properties.principalId


# Mistakes in modules/defender.bicep that check_invariants names (run by test_infra.py's broken-copy test).
DEFENDER_BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "queue role on the account": (
        lambda d: edit(d / DEFENDER_FILE, "  scope: queue\n", "  scope: storage\n"),
        "Storage Queue Data Message Sender must be scoped to a Microsoft.Storage/storageAccounts/queueServices/queues",
    ),
    "a broader role": (
        lambda d: edit(
            d / DEFENDER_FILE,
            "storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'",
            "storageQueueDataMessageSender: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'",  # Queue Data Contributor
        ),
        "is not one of the least-privilege roles",
    ),
    "keys on the topic": (
        lambda d: edit(d / DEFENDER_FILE, "disableLocalAuth: true", "disableLocalAuth: false"),
        "topic topic: disableLocalAuth must be true",
    ),
    "no override": (
        lambda d: edit(
            d / DEFENDER_FILE, "overrideSubscriptionLevelSettings: true", "overrideSubscriptionLevelSettings: false"
        ),
        "overrideSubscriptionLevelSettings must be true",
    ),
    "results to no topic": (
        lambda d: edit(
            d / DEFENDER_FILE,
            "scanResultsEventGridTopicResourceId: topic.id",
            "scanResultsEventGridTopicResourceId: ''",
        ),
        "scanResultsEventGridTopicResourceId must be the topic's id",
    ),
    "every event type": (
        lambda d: edit(d / DEFENDER_FILE, "'Microsoft.Security.MalwareScanningResult'", "'Microsoft.Security.Other'"),
        "must include Microsoft.Security.MalwareScanningResult only",
    ),
    "dead letters with a key": (
        lambda d: edit(d / DEFENDER_FILE, "    deadLetterWithResourceIdentity: {", "    deadLetterDestination: {"),
        "must deliver and dead-letter with the identity",
    ),
}


def _fake(bin_dir: Path, name: str, log: Path) -> None:
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
    script.chmod(0o755)


@pytest.mark.parametrize("value", ["defender", "off"])
def test_preprovision_registers_defenders_providers_when_on(tmp_path: Path, value: str) -> None:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for name in ("az", "azd"):
        _fake(bin_dir, name, log)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "MALWARE_SCANNING": value}
    env |= {"GRAPH_CLIENT_ID": "app", "GRAPH_CLIENT_SECRET": "s", "MAILBOXES": "a@contoso.com"}
    env |= {"WEBHOOK_FUNCTION_KEY": "k" * 64, "AZURE_SUBSCRIPTION_ID": "sub"}
    subprocess.run(["sh", str(INFRA / "hooks" / "preprovision.sh")], env=env, check=True, capture_output=True)
    calls = log.read_text().splitlines() if log.exists() else []
    registered = [c for c in calls if c.startswith("az provider register")]
    expected = ["Microsoft.Security", "Microsoft.EventGrid"] if value == "defender" else []
    assert [c.split()[4] for c in registered] == expected
    assert all("--subscription sub" in c for c in registered)
    refused = subprocess.run(
        ["sh", str(INFRA / "hooks" / "preprovision.sh")],
        env=env | {"MALWARE_SCANNING": "true"},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "MALWARE_SCANNING must be off or defender" in refused.stderr
    ps1 = (INFRA / "hooks" / "preprovision.ps1").read_text()
    assert (
        "-cnotin @('off', 'defender')" in ps1
        and "$env:MALWARE_SCANNING -ceq 'defender'" in ps1
        and "'Microsoft.Security', 'Microsoft.EventGrid'" in ps1
    )


def test_the_verdicts_chart_shows_with_scanning_only() -> None:
    """The workbook's malware chart counts the app's three events per day, behind the hidden MalwareScanning
    parameter that workbook.bicep fills from main.bicep's malwareScanning (`defender` or `off`)."""
    data = json.loads((INFRA / "workbook" / "mail-ingest.workbook.json").read_text())
    (item,) = [i for i in data["items"] if i["name"] == "malware"]
    assert '("malware.verdict", "malware.quarantined", "malware.unscanned")' in item["content"]["query"]
    assert "bin(timestamp, 1d)" in item["content"]["query"]
    assert item["conditionalVisibility"] == {
        "parameterName": "MalwareScanning",
        "comparison": "isEqualTo",
        "value": "defender",
    }
    (parameter,) = [p for p in data["items"][1]["content"]["parameters"] if p["name"] == "MalwareScanning"]
    assert parameter["value"] == "__MALWARE_SCANNING__" and parameter["isHiddenWhenLocked"]
    bicep = (INFRA / "modules" / "workbook.bicep").read_text()
    assert "'__MALWARE_SCANNING__', malwareScanning ? 'defender' : 'off')" in bicep
    assert parse(INFRA / "main.bicep")["modules"]["workbook"]["config"]["params"]["malwareScanning"] == "scanning"


def test_only_mail_content_is_scanned() -> None:
    """The on-upload filter excludes the containers without mail (state, package, the host's, the quarantine, the
    dead letters), each with a trailing '/', and never the attachments container: routes may add others."""
    onupload = parse(INFRA / DEFENDER_FILE)["resources"]["defender"]["config"]["properties"]["malwareScanning"][
        "onUpload"
    ]
    prefixes = onupload["filters"]["excludeBlobsWithPrefix"]
    assert prefixes["config"] == "${name}/"
    listed = prefixes["loop_type"]["detail"]["array_name"]["function"]["parameters"]
    assert listed["arg_1"] == "unscannedContainerNames"
    assert set(listed["arg_2"]) == {
        "azure-webjobs-hosts",
        "azure-webjobs-secrets",
        "quarantineContainerName",
        "deadLetterContainerName",
    }
    module = parse(INFRA / "main.bicep")["modules"]["malwareScan"]["config"]["config"]
    given = module["params"]["unscannedContainerNames"]
    assert given == ["stateContainerName", "deploymentContainerName"]
