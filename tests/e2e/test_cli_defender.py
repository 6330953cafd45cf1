"""`python -m shared.cli --app NAME check` for a deployment with MALWARE_SCANNING=defender, against the simulator's
ARM: Defender for Storage's setting on the app's account, its topic and the event subscription to MALWARE_SCAN_QUEUE
are each one line, and a missing or broken one names the command that provisions it again."""

from __future__ import annotations

from typing import Any

import pytest

from local.stack import Stack

from .test_cli_deployment import GROUP, SUBSCRIPTION, app_cli, deployment, site

__all__ = ["deployment"]  # the module fixture: the vault, its secrets and the operator's Reader role on the group

APP = "func-scan"
TOPIC = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.EventGrid/topics/evgt-scan-abc123"


def account(stack: Stack) -> str:
    parts = dict(p.split("=", 1) for p in stack.env["AzureWebJobsStorage"].split(";") if "=" in p)
    return parts["AccountName"]


def defender_setting(stack: Stack, **on_upload: Any) -> None:
    properties = {
        "isEnabled": True,
        "malwareScanning": {
            "onUpload": {"isEnabled": True, "capGBPerMonth": 100, **on_upload},
            "scanResultsEventGridTopicResourceId": TOPIC,
            "blobScanResultsOptions": "blobIndexTags",
        },
        "sensitiveDataDiscovery": {"isEnabled": False},
        "overrideSubscriptionLevelSettings": True,
    }
    where = {"subscription": SUBSCRIPTION, "resourceGroup": GROUP, "storageAccount": account(stack)}
    stack.control("PUT", "/_sim/arm/defender", {**where, "properties": properties})


def topic(stack: Stack, state: str = "Succeeded") -> None:
    subscription: dict[str, Any] = {
        "name": "scan-results-queue",
        "storageAccount": account(stack),
        "queueName": "scan-results",
    }
    subscription |= {"includedEventTypes": ["Microsoft.Security.MalwareScanningResult"], "provisioningState": state}
    body = {"subscription": SUBSCRIPTION, "resourceGroup": GROUP, "name": "evgt-scan-abc123"}
    stack.control("PUT", "/_sim/arm/topics", {**body, "eventSubscriptions": [subscription]})


@pytest.fixture(scope="module")
def scanning_app(stack: Stack, deployment: dict[str, Any]) -> str:
    deployed = {"EVENTGRID_AZURE_SUBSCRIPTION_ID": SUBSCRIPTION, "EVENTGRID_RESOURCE_GROUP": GROUP}
    site(stack, name=APP, MALWARE_SCANNING="defender", MALWARE_SCAN_QUEUE="scan-results", **deployed)
    principal = stack.control("GET", f"/_sim/apps/{stack.env['GRAPH_CLIENT_ID']}")["servicePrincipalId"]
    scope = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Web/sites/{APP}"
    role = {"principalId": principal, "role": "Website Contributor", "scope": scope}
    stack.control("POST", "/_sim/arm/roleAssignments", role)
    return APP


def test_check_names_defender_off_then_passes_once_provisioned(stack: Stack, scanning_app: str):
    name = account(stack)
    off = app_cli(stack, "check", app=scanning_app)
    assert off.returncode == 1, off.stdout + off.stderr
    failed = (
        "✗ Defender for Storage malware scanning: ValueError: Defender for Storage is not enabled on storage account"
    )
    assert f"{failed} {name}\n" in off.stdout
    fix = "    fix: azd env set MALWARE_SCANNING defender && azd provision (infra/modules/defender.bicep)"
    assert fix in off.stdout
    assert "✗ Defender scan results topic: ValueError: Defender's setting names no topic to look at" in off.stdout

    defender_setting(stack)
    topic(stack)
    on = app_cli(stack, "check", app=scanning_app)
    assert on.returncode == 0, on.stdout + on.stderr
    assert (
        f"✓ Defender for Storage malware scanning: on-upload scanning of storage account {name}, cap 100 GB a month, "
        "results to topic evgt-scan-abc123"
    ) in on.stdout
    assert "✓ Defender scan results topic: topic evgt-scan-abc123 provisioned" in on.stdout
    assert (
        "✓ Defender scan results event subscription: event subscription scan-results-queue delivers "
        "Microsoft.Security.MalwareScanningResult to queue scan-results"
    ) in on.stdout


def test_check_names_a_failed_subscription_and_scanning_turned_off(stack: Stack, scanning_app: str):
    defender_setting(stack, isEnabled=False)
    topic(stack, state="Failed")
    try:
        done = app_cli(stack, "check", app=scanning_app)
    finally:
        defender_setting(stack)
        topic(stack)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"on-upload malware scanning is off on storage account {account(stack)}" in done.stdout
    assert (
        "✗ Defender scan results event subscription: ValueError: event subscription scan-results-queue to queue "
        in done.stdout
    )
    assert "scan-results is Failed" in done.stdout
    assert done.stdout.count("    fix: azd env set MALWARE_SCANNING defender && azd provision") == 2


def test_a_webhook_deployment_without_scanning_reads_no_defender(stack: Stack, deployment: dict[str, Any]):
    done = app_cli(stack, "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Defender" not in done.stdout
