"""`check` with MALWARE_SCANNING=defender: the Azure side of Defender's verdicts, read through Azure Resource Manager.

Three things must hold for a verdict to reach the app, none of them visible from the app's storage:
- Defender for Storage's setting on the account (`{account}/providers/Microsoft.Security/defenderForStorageSettings/
  current`) is enabled, scans on upload (`properties.malwareScanning.onUpload.isEnabled`) and publishes to an Event
  Grid topic (`properties.malwareScanning.scanResultsEventGridTopicResourceId`); a failed enablement shows in
  `malwareScanning.operationStatus` (`code`, `message`);
- that topic (`Microsoft.EventGrid/topics`) is provisioned;
- an event subscription on it delivers `Microsoft.Security.MalwareScanningResult` to the Storage queue
  MALWARE_SCAN_QUEUE (`properties.destination`, or `properties.deliveryWithResourceIdentity.destination` as
  infra/modules/defender.bicep sets it), provisioned.
Property names and API versions as in the Microsoft.Security REST API 2025-06-01 (defenderForStorageSettings.json)
and the Event Grid control-plane REST API 2025-02-15. Each verdict is a pure function of ARM's answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..defender_target import DefenderTarget
from .eventgrid_azure import storage_queue

DEFENDER_API_VERSION = "2025-06-01"  # the version infra/modules/defender.bicep deploys with
SCAN_RESULT_EVENT = "Microsoft.Security.MalwareScanningResult"
TOPIC_TYPE = "/providers/Microsoft.EventGrid/topics/"


def setting_path(target: DefenderTarget) -> str:
    account = quote(target.storage_account, safe="")
    return (
        f"Microsoft.Storage/storageAccounts/{account}/providers/Microsoft.Security/defenderForStorageSettings/current"
    )


def provision_command(target: DefenderTarget) -> str:
    # The template owns all three (setting, topic, subscription): provisioning again repairs whichever is wrong.
    return (
        "azd env set MALWARE_SCANNING defender && azd provision (infra/modules/defender.bicep); see it with "
        f"`az resource show --ids /subscriptions/{target.azure_subscription_id}/resourceGroups/{target.resource_group}"
        f"/providers/{setting_path(target)}`"
    )


def _properties(resource: Mapping[str, Any] | None) -> Mapping[str, Any]:
    value = (resource or {}).get("properties")
    return value if isinstance(value, Mapping) else {}


def named_topic(setting: Mapping[str, Any] | None) -> str | None:
    """The resource id of the custom topic the setting publishes to, whatever else it says."""
    scanning = _properties(setting).get("malwareScanning") or {}
    topic = scanning.get("scanResultsEventGridTopicResourceId")
    return topic if isinstance(topic, str) and topic.startswith("/subscriptions/") and TOPIC_TYPE in topic else None


def setting_verdict(setting: Mapping[str, Any] | None, target: DefenderTarget) -> tuple[str, str]:
    """The detail and the topic's resource id of a setting that scans and publishes, or ValueError saying why not."""
    account = f"storage account {target.storage_account}"
    properties = _properties(setting)
    if setting is None or properties.get("isEnabled") is not True:
        raise ValueError(f"Defender for Storage is not enabled on {account}")
    scanning = properties.get("malwareScanning") or {}
    status = scanning.get("operationStatus") or {}
    if status.get("code") not in (None, "Succeeded"):
        raise ValueError(
            f"enabling malware scanning on {account} failed: {status.get('code')} {status.get('message', '')}"
        )
    on_upload = scanning.get("onUpload") or {}
    if on_upload.get("isEnabled") is not True:
        raise ValueError(f"on-upload malware scanning is off on {account}")
    topic = named_topic(setting)
    if topic is None:
        raise ValueError(f"Defender sends the scan results of {account} to no Event Grid topic")
    cap = on_upload.get("capGBPerMonth")
    limit = "no monthly cap" if cap in (None, -1) else f"cap {cap} GB a month"
    return f"on-upload scanning of {account}, {limit}, results to topic {topic.rsplit('/', 1)[-1]}", topic


def topic_verdict(topic: Mapping[str, Any] | None, topic_id: str) -> str:
    name = topic_id.rsplit("/", 1)[-1]
    if topic is None:
        raise ValueError(f"Defender's topic {name} does not exist")
    state = _properties(topic).get("provisioningState")
    if state != "Succeeded":
        raise ValueError(f"Defender's topic {name} is {state or 'of no provisioning state'}")
    return f"topic {name} provisioned"


def _carries_scan_results(subscription: Mapping[str, Any]) -> bool:
    types = (_properties(subscription).get("filter") or {}).get("includedEventTypes")
    return not types or SCAN_RESULT_EVENT in types  # no filter: every event type


def subscription_verdict(listing: Mapping[str, Any] | None, target: DefenderTarget, topic_id: str) -> str:
    subscriptions = [s for s in (listing or {}).get("value") or [] if isinstance(s, Mapping)]
    for subscription in subscriptions:
        queue = storage_queue(subscription)
        if queue != target.queue or not _carries_scan_results(subscription):
            continue
        state = _properties(subscription).get("provisioningState")
        if state != "Succeeded":
            raise ValueError(f"event subscription {subscription.get('name')} to queue {queue} is {state}")
        return f"event subscription {subscription.get('name')} delivers {SCAN_RESULT_EVENT} to queue {queue}"
    raise ValueError(
        f"no event subscription of topic {topic_id.rsplit('/', 1)[-1]} delivers {SCAN_RESULT_EVENT} to the "
        f"Storage queue {target.queue}"
    )
