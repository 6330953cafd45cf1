"""Azure Resource Manager, the reads `check` makes with MALWARE_SCANNING=defender, in Microsoft's shapes:

- ``GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{account}/providers/
  Microsoft.Security/defenderForStorageSettings/current?api-version=2025-06-01``: Defender for Storage's setting on an
  account (``DefenderForStorageSetting`` of the Microsoft.Security REST API 2025-06-01: ``isEnabled``,
  ``malwareScanning.onUpload``, ``scanResultsEventGridTopicResourceId``, ``blobScanResultsOptions``, read-only
  ``operationStatus``, ``sensitiveDataDiscovery``, ``overrideSubscriptionLevelSettings``);
- ``GET .../providers/Microsoft.EventGrid/topics/{name}?api-version=2025-02-15``: a custom topic;
- ``GET .../providers/Microsoft.EventGrid/topics/{name}/eventSubscriptions?api-version=2025-02-15``: its event
  subscriptions (``value``), each with its destination under ``deliveryWithResourceIdentity`` as
  infra/modules/defender.bicep creates it.

Where the control API below set nothing, the reads answer from the simulator's live state: the setting the
scanner (defender.py) obeys, and the custom topics and event subscriptions Event Grid (eventgrid.py) delivers
through, so `check` against the local stack sees what the scanner does. Only those API versions are served:
another is 400 ``NoRegisteredProviderFound`` naming the supported one, as ARM
answers. Token, group, resource and role checks are arm.py's. The state is set through the control API, as
``azd provision`` would: ``PUT /_sim/arm/defender`` (a setting's ``properties``, checked against the 2025-06-01
model's writable names) and ``PUT /_sim/arm/topics`` (a topic, its provisioning state, its event subscriptions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .arm_base import ArmError, control_names
from .control import _bad, _json

if TYPE_CHECKING:
    from .defender import Defender
    from .eventgrid import EventGrid

SECURITY_API_VERSION = "2025-06-01"
EVENTGRID_API_VERSION = "2025-02-15"
READ_DEFENDER_SETTING = "Microsoft.Security/defenderForStorageSettings/read"
READ_TOPIC = "Microsoft.EventGrid/topics/read"
READ_TOPIC_SUBSCRIPTIONS = "Microsoft.EventGrid/topics/eventSubscriptions/read"
# The writable properties of DefenderForStorageSetting at 2025-06-01, nested as the model nests them.
SETTING_MODEL: dict[str, Any] = {
    "isEnabled": bool,
    "malwareScanning": {
        "onUpload": {"isEnabled": bool, "capGBPerMonth": int, "filters": dict},
        "scanResultsEventGridTopicResourceId": str,
        "blobScanResultsOptions": ("blobIndexTags", "None"),
    },
    "sensitiveDataDiscovery": {"isEnabled": bool},
    "overrideSubscriptionLevelSettings": bool,
}
PROVISIONING_STATES = ("Creating", "Updating", "Deleting", "Succeeded", "Canceled", "Failed", "AwaitingManualAction")


def _check(value: Any, model: Any, path: str) -> None:
    """The control API refuses what Defender's 2025-06-01 model would: unknown names, wrong types or values."""
    if isinstance(model, dict):
        if not isinstance(value, dict):
            raise _bad(f"{path or 'properties'}: expected an object")
        for key, item in value.items():
            if key not in model:
                raise _bad(
                    f"{path}{key}: not a writable property of DefenderForStorageSetting at {SECURITY_API_VERSION}"
                )
            _check(item, model[key], f"{path}{key}.")
    elif isinstance(model, tuple):
        if value not in model:
            raise _bad(f"{path.rstrip('.')}: one of {list(model)}")
    elif not isinstance(value, model) or (model is int and isinstance(value, bool)):
        raise _bad(f"{path.rstrip('.')}: expected {model.__name__}")


@dataclass
class CustomTopic:
    location: str
    provisioning_state: str = "Succeeded"
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → properties as ARM shows them


class DefenderResources:
    """Defender's settings by (subscription, group, account) and custom topics by (subscription, group, name)."""

    def __init__(self, eventgrid: EventGrid | None = None, scanner: Defender | None = None) -> None:
        self.settings: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.topics: dict[tuple[str, str, str], CustomTopic] = {}
        self.eventgrid, self.scanner = eventgrid, scanner

    def _live_topics(self) -> dict[Any, Any]:
        return self.eventgrid.custom_topics if self.eventgrid is not None else {}

    def groups(self) -> list[tuple[str, str, str]]:
        return [*self.settings, *self.topics, *self._live_topics()]

    def has_topic(self, key: tuple[str, str, str]) -> bool:
        return key in self.topics or key in self._live_topics()

    @staticmethod
    def require_version(request: web.Request, version: str, kind: str) -> None:
        given = request.query.get("api-version", "")
        if given != version:
            raise ArmError(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location 'global' and API version '{given}' for type "
                f"'{kind}'. The supported api-versions are '{version}'.",
            )

    def setting(self, key: tuple[str, str, str], account_id: str) -> dict[str, Any] | None:
        properties = self.settings.get(key)
        if properties is None and self.scanner is not None:
            properties = self.scanner.setting(key[2])  # account names are global: the one the scanner watches
        if properties is None:
            return None
        shown = dict(properties)
        scanning = dict(shown.get("malwareScanning") or {})
        # What the service adds: the outcome of enabling each part (read-only).
        scanning["operationStatus"] = {"code": "Succeeded", "message": "Malware scanning enabled"}
        shown["malwareScanning"] = scanning
        return {
            "id": f"{account_id}/providers/Microsoft.Security/defenderForStorageSettings/current",
            "name": "current",
            "type": "Microsoft.Security/defenderForStorageSettings",
            "properties": shown,
        }

    def topic(self, key: tuple[str, str, str], topic_id: str) -> dict[str, Any] | None:
        topic = self.topics.get(key)
        live = self._live_topics().get(key)
        if topic is None and live is not None:
            topic = CustomTopic(live.ref.location)  # one Event Grid delivers through: provisioned
        if topic is None:
            return None
        name = topic_id.rsplit("/", 1)[-1]
        return {
            "id": topic_id,
            "name": name,
            "type": "Microsoft.EventGrid/topics",
            "location": topic.location,
            "properties": {
                "provisioningState": topic.provisioning_state,
                "endpoint": f"https://{name}.{topic.location}-1.eventgrid.azure.net/api/events",
                "inputSchema": "EventGridSchema",
                "publicNetworkAccess": "Enabled",
                "disableLocalAuth": True,
                "minimumTlsVersionAllowed": "1.2",
            },
        }

    def subscriptions(self, key: tuple[str, str, str], topic_id: str) -> list[dict[str, Any]]:
        topic = self.topics.get(key) or self._live_subscriptions(key, topic_id)
        return [
            {
                "id": f"{topic_id}/providers/Microsoft.EventGrid/eventSubscriptions/{name}",
                "name": name,
                "type": "Microsoft.EventGrid/eventSubscriptions",
                "properties": {"topic": topic_id, **properties},
            }
            for name, properties in topic.subscriptions.items()
        ]

    def _live_subscriptions(self, key: tuple[str, str, str], topic_id: str) -> CustomTopic:
        """The event subscriptions Event Grid delivers the topic's events through, as the control API would set them."""
        live = self._live_topics()[key]
        group = topic_id.split("/providers/", 1)[0]
        topic = CustomTopic(live.ref.location)
        for name, sub in live.subscriptions.items():
            parts = dict(p.split("=", 1) for p in sub.connection_string.split(";") if "=" in p)
            item = {"name": name, "storageAccount": parts.get("AccountName", ""), "queueName": sub.queue}
            shown = _subscription({**item, "includedEventTypes": list(sub.included_types)}, group)
            shown["retryPolicy"] = {
                "maxDeliveryAttempts": sub.max_attempts,
                "eventTimeToLiveInMinutes": sub.ttl_minutes,
            }
            topic.subscriptions[name] = shown
        return topic

    # -- control ---------------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [web.put("/_sim/arm/defender", self.put_setting), web.put("/_sim/arm/topics", self.put_topic)]

    async def put_setting(self, request: web.Request) -> web.Response:
        body = await _json(request)
        sub, rg, account = control_names(body, "storageAccount")
        properties = body.get("properties")
        _check(properties, SETTING_MODEL, "")
        self.settings[(sub.lower(), rg.lower(), account.lower())] = dict(properties or {})
        return web.json_response({"storageAccount": account})

    async def put_topic(self, request: web.Request) -> web.Response:
        body = await _json(request)
        sub, rg, name = control_names(body)
        state = body.get("provisioningState", "Succeeded")
        if state not in PROVISIONING_STATES:
            raise _bad(f"'provisioningState' must be one of {list(PROVISIONING_STATES)}")
        topic = CustomTopic(str(body.get("location", "westeurope")), state)
        group = f"/subscriptions/{sub}/resourceGroups/{rg}"
        for item in body.get("eventSubscriptions") or []:
            topic.subscriptions[str(item.get("name"))] = _subscription(item, group)
        self.topics[(sub.lower(), rg.lower(), name.lower())] = topic
        return web.json_response({"name": name})


def _subscription(item: dict[str, Any], group: str) -> dict[str, Any]:
    """An event subscription's properties as Event Grid 2025-02-15 shows one delivering with a managed identity."""
    queue, account = item.get("queueName"), item.get("storageAccount")
    if not (isinstance(queue, str) and isinstance(account, str) and isinstance(item.get("name"), str)):
        raise _bad("each event subscription needs 'name', 'storageAccount' and 'queueName'")
    state = item.get("provisioningState", "Succeeded")
    if state not in PROVISIONING_STATES:
        raise _bad(f"'provisioningState' must be one of {list(PROVISIONING_STATES)}")
    identity = {
        "type": "UserAssigned",
        "userAssignedIdentity": f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-scan",
    }
    return {
        "provisioningState": state,
        "deliveryWithResourceIdentity": {
            "identity": identity,
            "destination": {
                "endpointType": "StorageQueue",
                "properties": {
                    "resourceId": f"{group}/providers/Microsoft.Storage/storageAccounts/{account}",
                    "queueName": queue,
                    "queueMessageTimeToLiveInSeconds": -1,
                },
            },
        },
        "filter": {"includedEventTypes": list(item.get("includedEventTypes") or []), "isSubjectCaseSensitive": False},
        "eventDeliverySchema": "EventGridSchema",
        "retryPolicy": {"maxDeliveryAttempts": 30, "eventTimeToLiveInMinutes": 1440},
    }
