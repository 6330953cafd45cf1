"""Graph's notifications as Event Grid delivers them to a Storage queue: one CloudEvent 1.0 per message.

Graph publishes each change notification to the partner topic as a CloudEvent whose `data` is the
changeNotification (`subscriptionId`, `clientState`, `changeType`, `resource`, `resourceData.id`,
`tenantId`), whose `source` is `/tenants/{tenant}/applications/{app}` and whose `type` names the change
(`Microsoft.Graph.MessageCreated`, `…Updated`, `…Deleted`; Azure Event Grid, "Microsoft Outlook events").
Lifecycle events come to the same topic (`Microsoft.Graph.SubscriptionReauthorizationRequired`, and for
removal and missed notifications `…SubscriptionRemoved`, `…SubscriptionMissed`), `data.lifecycleEvent`
naming the event as in a webhook's lifecycle notification. The docs' Outlook example writes some names
capitalised (`ChangeType`, `resourceData.Id`): names are matched without regard to case, and a name given
twice in different cases refuses the event.

Each event is checked as the webhook checks an item (webhook.py: tenant, clientState in constant time,
the subscription the folder's record names), so a forged event queued by anyone with access to the queue
causes no Graph request and no blob; an accepted one becomes the same queue message the webhook would
have queued.

The queue message's encoding: Event Grid writes the event JSON into the message, base64-encoded as
reported since 2022 (MicrosoftDocs/azure-docs#102923; older docs said plain text); host.json's
`messageEncoding: base64` decodes that before the function runs. A body that is still base64 (a host
set to `none`, or an encoding applied twice) is decoded here, so neither form parks a good event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidNotification, QueueMessageError
from ...logs import log_event
from ...queuetext import decode_event_body
from .webhook import Trust, Verdict, load_json, verify_changes, verify_lifecycle

logger = logging.getLogger(__name__)

SPEC_VERSION = "1.0"
CHANGE_TYPES = {
    "microsoft.graph.messagecreated": "created",
    "microsoft.graph.messageupdated": "updated",
    "microsoft.graph.messagedeleted": "deleted",
}
LIFECYCLE_TYPES = {
    "microsoft.graph.subscriptionreauthorizationrequired": "reauthorizationRequired",
    "microsoft.graph.subscriptionremoved": "subscriptionRemoved",
    "microsoft.graph.subscriptionmissed": "missed",
}
_SOURCE = re.compile(r"^/tenants/([^/]+)/applications/([^/]+)$", re.IGNORECASE)
# The changeNotification properties the checks read, by their lower-cased name.
_CHANGE_FIELDS = ("subscriptionId", "tenantId", "clientState", "changeType", "resource", "lifecycleEvent")


@dataclass(frozen=True)
class GraphEvent:
    """One CloudEvent from Graph: its kind (`change` or `lifecycle`) and the item in a webhook's shape."""

    event_id: str
    kind: str
    item: dict[str, Any]
    application_id: str


def decode_body(body: bytes) -> bytes:
    """The event JSON, plain or base64 (`queuetext.py`); InvalidNotification when it is neither."""
    try:
        return decode_event_body(body)
    except QueueMessageError as exc:
        raise InvalidNotification(str(exc)) from None


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidNotification(f"event lacks {name}")
    return value


def _folded(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Keys lower-cased; two keys that differ only in case refuse the event (which one counts is unclear)."""
    folded: dict[str, Any] = {}
    for key, value in data.items():
        low = key.lower()
        if low in folded:
            raise InvalidNotification(f"event {where} has {key[:64]!r} twice, in different cases")
        folded[low] = value
    return folded


def _item(data: Mapping[str, Any], tenant: str) -> dict[str, Any]:
    """The changeNotification in the webhook's spelling, for webhook.verify_changes / verify_lifecycle."""
    folded = _folded(data, "data")
    item = {name: folded[name.lower()] for name in _CHANGE_FIELDS if name.lower() in folded}
    stated = item.get("tenantId")
    if stated is not None and (not isinstance(stated, str) or stated.lower() != tenant.lower()):
        raise InvalidNotification("event data names another tenant than its source")
    item["tenantId"] = tenant
    resource_data = folded.get("resourcedata")
    if isinstance(resource_data, Mapping):
        item["resourceData"] = {"id": _folded(resource_data, "resourceData").get("id")}
    return item


def parse_event(body: bytes) -> GraphEvent:
    """A Graph CloudEvent from a queue message body, or InvalidNotification (the event can never be taken)."""
    event = load_json(decode_body(body))
    if not isinstance(event, dict):
        raise InvalidNotification("event is not a JSON object (one CloudEvent per queue message)")
    if event.get("specversion") != SPEC_VERSION:
        raise InvalidNotification("event is not a CloudEvent 1.0 (specversion)")
    event_id = _text(event.get("id"), "id")
    event_type = _text(event.get("type"), "type").lower()
    source = _SOURCE.match(_text(event.get("source"), "source"))
    if source is None:
        raise InvalidNotification("event source is not /tenants/{tenant}/applications/{application}")
    data = event.get("data")
    if not isinstance(data, dict):
        raise InvalidNotification("event lacks data (the change notification)")
    item = _item(data, source.group(1))
    if event_type in CHANGE_TYPES:
        kind = "change"
        item.setdefault("changeType", CHANGE_TYPES[event_type])
        if str(item["changeType"]).lower() != CHANGE_TYPES[event_type]:
            raise InvalidNotification("event type and data.changeType disagree")
    elif event_type in LIFECYCLE_TYPES:
        kind = "lifecycle"
        item.setdefault("lifecycleEvent", LIFECYCLE_TYPES[event_type])
        if item["lifecycleEvent"] != LIFECYCLE_TYPES[event_type]:
            raise InvalidNotification("event type and data.lifecycleEvent disagree")
    else:
        raise InvalidNotification(f"event type {event_type[:80]!r} is not a Graph mail or lifecycle event")
    return GraphEvent(event_id, kind, item, source.group(2))


async def verify_event(event: GraphEvent, trust: Trust) -> Verdict:
    """The webhook's checks, plus the publishing application: ours, or the event is refused."""
    if event.application_id.lower() != trust.settings.client_id.lower():
        log_event(
            logger,
            "notification.refused",
            logging.WARNING,
            kind="eventgrid",
            event_id=event.event_id[:64],
            reason="published for another application",
        )
        return Verdict(refused=1)
    verify = verify_changes if event.kind == "change" else verify_lifecycle
    return await verify([event.item], trust)
