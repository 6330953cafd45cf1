"""`check`'s verdicts on Defender for Storage from ARM's answers (Microsoft.Security 2025-06-01 and Event Grid
2025-02-15 shapes): the setting scans on upload and names its topic, the topic is provisioned, an event subscription
delivers the scan results to MALWARE_SCAN_QUEUE."""

from __future__ import annotations

from typing import Any

import pytest

from shared.defender_target import DefenderTarget
from shared.ops import defender_azure as dfs

TARGET = DefenderTarget("8f1c2a4e-5b6d-4e7f-9a0b-1c2d3e4f5a6b", "rg-mail", "stabc123", "scan-results")
GROUP = f"/subscriptions/{TARGET.azure_subscription_id}/resourceGroups/rg-mail"
TOPIC = f"{GROUP}/providers/Microsoft.EventGrid/topics/evgt-scan-abc123"


def setting(**changes: Any) -> dict[str, Any]:
    scanning = {
        "onUpload": {"isEnabled": True, "capGBPerMonth": 100},
        "scanResultsEventGridTopicResourceId": TOPIC,
        "blobScanResultsOptions": "blobIndexTags",
        "operationStatus": {"code": "Succeeded"},
    }
    properties = {"isEnabled": True, "malwareScanning": scanning, "overrideSubscriptionLevelSettings": True}
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node: dict[str, Any] = properties
        for key in parents:
            node = node[key]
        node[leaf] = value
    return {"name": "current", "properties": properties}


def test_a_setting_that_scans_and_publishes() -> None:
    detail, topic = dfs.setting_verdict(setting(), TARGET)
    assert topic == TOPIC
    assert (
        detail
        == "on-upload scanning of storage account stabc123, cap 100 GB a month, results to topic evgt-scan-abc123"
    )
    uncapped, _ = dfs.setting_verdict(setting(malwareScanning__onUpload__capGBPerMonth=-1), TARGET)
    assert "no monthly cap" in uncapped


@pytest.mark.parametrize(
    ("answer", "wrong"),
    [
        (None, "Defender for Storage is not enabled on storage account stabc123"),
        (setting(isEnabled=False), "Defender for Storage is not enabled on storage account stabc123"),
        (setting(malwareScanning__onUpload__isEnabled=False), "on-upload malware scanning is off on storage account"),
        (setting(malwareScanning__scanResultsEventGridTopicResourceId=""), "to no Event Grid topic"),
        (setting(malwareScanning__scanResultsEventGridTopicResourceId="https://evil.example/x"), "to no Event Grid"),
        (
            setting(malwareScanning__operationStatus={"code": "Failed", "message": "no permission on the topic"}),
            "enabling malware scanning on storage account stabc123 failed: Failed no permission on the topic",
        ),
    ],
)
def test_a_setting_that_does_not_is_named(answer: dict[str, Any] | None, wrong: str) -> None:
    with pytest.raises(ValueError, match=wrong):
        dfs.setting_verdict(answer, TARGET)


def test_the_topic_must_be_provisioned() -> None:
    assert (
        dfs.topic_verdict({"properties": {"provisioningState": "Succeeded"}}, TOPIC)
        == "topic evgt-scan-abc123 provisioned"
    )
    with pytest.raises(ValueError, match="topic evgt-scan-abc123 is Failed"):
        dfs.topic_verdict({"properties": {"provisioningState": "Failed"}}, TOPIC)
    with pytest.raises(ValueError, match="topic evgt-scan-abc123 does not exist"):
        dfs.topic_verdict(None, TOPIC)


def subscription(name: str, queue: str, types: list[str] | None, state: str = "Succeeded") -> dict[str, Any]:
    destination = {"endpointType": "StorageQueue", "properties": {"queueName": queue}}
    properties: dict[str, Any] = {
        "provisioningState": state,
        "deliveryWithResourceIdentity": {"destination": destination},
    }
    if types is not None:
        properties["filter"] = {"includedEventTypes": types}
    return {"name": name, "properties": properties}


def test_the_subscription_delivering_scan_results_to_the_queue_is_found() -> None:
    listing = {
        "value": [
            subscription("other-queue", "mail-events", None),
            subscription("other-events", "scan-results", ["Microsoft.Storage.BlobCreated"]),
            subscription("scan-results-queue", "scan-results", [dfs.SCAN_RESULT_EVENT]),
        ]
    }
    assert dfs.subscription_verdict(listing, TARGET, TOPIC) == (
        "event subscription scan-results-queue delivers Microsoft.Security.MalwareScanningResult to queue scan-results"
    )
    unfiltered = {"value": [subscription("all", "scan-results", None)]}
    assert "event subscription all delivers" in dfs.subscription_verdict(unfiltered, TARGET, TOPIC)


def test_a_missing_or_unprovisioned_subscription_is_named() -> None:
    with pytest.raises(ValueError, match=r"no event subscription of topic evgt-scan-abc123 delivers .* scan-results"):
        dfs.subscription_verdict({"value": [subscription("x", "mail-events", None)]}, TARGET, TOPIC)
    failed = {"value": [subscription("scan-results-queue", "scan-results", None, "Failed")]}
    with pytest.raises(ValueError, match="event subscription scan-results-queue to queue scan-results is Failed"):
        dfs.subscription_verdict(failed, TARGET, TOPIC)


def test_the_fix_provisions_and_shows_the_setting() -> None:
    command = dfs.provision_command(TARGET)
    assert command.startswith("azd env set MALWARE_SCANNING defender && azd provision")
    assert f"az resource show --ids {GROUP}/providers/Microsoft.Storage/storageAccounts/stabc123/providers/" in command
