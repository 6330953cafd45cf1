"""`check` with GRAPH_DELIVERY=eventgrid: the Azure side, read through Azure Resource Manager.

Three things must hold for Graph's events to reach the app, and none of them is visible from the app's storage:
- the resource group's partner configuration (`Microsoft.EventGrid/partnerConfigurations/default`) authorizes
  the partner `MicrosoftGraphAPI` until a time still ahead (`properties.partnerAuthorization.authorizedPartnersList
  [].authorizationExpirationTimeInUtc`); after it, Graph can create no partner topic ("any request from this
  partner to create, update or delete resources in subscriber's context will fail");
- the partner topic (`Microsoft.EventGrid/partnerTopics/{EVENTGRID_PARTNER_TOPIC}`) is `Activated`
  (`properties.activationState`; before that Event Grid drops its events);
- an event subscription on it delivers to the Storage queue EVENTGRID_QUEUE (`properties.destination`, or
  `properties.deliveryWithResourceIdentity.destination` when Event Grid delivers with a managed identity, as
  infra/eventgrid/connect.bicep does), provisioned.
Property names and the API version as in the Event Grid control-plane REST API 2025-02-15 (azure-mgmt-eventgrid
10.4.0's models). Each verdict is a pure function of ARM's answer, so the wording of each fix is tested alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from ..delivery import EventGridTarget

GRAPH_PARTNER = "MicrosoftGraphAPI"
CONFIGURATION = "Microsoft.EventGrid/partnerConfigurations/default"
_FRACTION = re.compile(r"(\.\d{6})\d+")


def topic_path(target: EventGridTarget) -> str:
    return f"Microsoft.EventGrid/partnerTopics/{quote(target.partner_topic, safe='')}"


def authorize_command(target: EventGridTarget) -> str:
    # Without --authorization-expiration-date the authorization lasts the configuration's longest (365 days as
    # infra/modules/eventgrid.bicep sets it); `azd provision` renews it the same way.
    return (
        f"az eventgrid partner configuration authorize --subscription {target.azure_subscription_id} "
        f"--resource-group {target.resource_group} --partner-name {GRAPH_PARTNER}"
    )


def activate_command(target: EventGridTarget) -> str:
    return (
        f"az eventgrid partner topic activate --subscription {target.azure_subscription_id} "
        f"--resource-group {target.resource_group} --name {target.partner_topic}"
    )


def subscribe_command(target: EventGridTarget) -> str:
    # The event subscription delivers with the app's delivery identity (docs/setup.md); the hook sets it up.
    return (
        "sh infra/hooks/eventgrid.sh (deploys infra/eventgrid/connect.bicep; list with `az eventgrid partner topic "
        f"event-subscription list --resource-group {target.resource_group} --partner-topic-name "
        f"{target.partner_topic}`)"
    )


def _utc(text: str) -> datetime:
    """ARM's date-times: `Z` or an offset, up to 7 fraction digits (Python reads 6)."""
    value = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip().replace("Z", "+00:00")))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def authorization_verdict(configuration: Mapping[str, Any] | None, target: EventGridTarget, now: datetime) -> str:
    """The detail of an authorization that holds, or ValueError saying what is wrong."""
    where = f"resource group {target.resource_group}"
    if configuration is None:
        raise ValueError(f"no partner configuration in {where}")
    authorization = (configuration.get("properties") or {}).get("partnerAuthorization") or {}
    partners = [p for p in authorization.get("authorizedPartnersList") or [] if isinstance(p, Mapping)]
    graph = [p for p in partners if str(p.get("partnerName", "")).lower() == GRAPH_PARTNER.lower()]
    if not graph:
        raise ValueError(f"the partner configuration of {where} does not authorize {GRAPH_PARTNER}")
    raw = graph[0].get("authorizationExpirationTimeInUtc")
    try:
        expires = _utc(str(raw))
    except ValueError:
        raise ValueError(f"{GRAPH_PARTNER}'s authorization has no readable expiration time ({raw!r})") from None
    if expires <= now:
        raise ValueError(f"{GRAPH_PARTNER}'s authorization expired {expires:%Y-%m-%d %H:%M} UTC")
    return f"{GRAPH_PARTNER} authorized until {expires:%Y-%m-%d %H:%M} UTC ({(expires - now).days} days)"


def activation_verdict(topic: Mapping[str, Any] | None, target: EventGridTarget) -> str:
    if topic is None:
        raise ValueError(
            f"no partner topic {target.partner_topic} in resource group {target.resource_group}: Graph creates it "
            "with the first subscription (run `maintain`), if the partner is authorized"
        )
    state = (topic.get("properties") or {}).get("activationState")
    if state != "Activated":
        raise ValueError(f"partner topic {target.partner_topic} is {state or 'of no activation state'}")
    return f"partner topic {target.partner_topic} activated"


def storage_queue(subscription: Mapping[str, Any]) -> str | None:
    """The Storage queue an event subscription delivers to, directly or with a managed identity; None for another
    kind of destination. Shared with Defender's check (defender_azure.py)."""
    properties = subscription.get("properties") or {}
    destination = properties.get("destination") or (properties.get("deliveryWithResourceIdentity") or {}).get(
        "destination"
    )
    if not isinstance(destination, Mapping) or str(destination.get("endpointType", "")).lower() != "storagequeue":
        return None
    queue = (destination.get("properties") or {}).get("queueName")
    return queue if isinstance(queue, str) else None


def subscription_verdict(listing: Mapping[str, Any] | None, target: EventGridTarget) -> str:
    subscriptions = [s for s in (listing or {}).get("value") or [] if isinstance(s, Mapping)]
    for subscription in subscriptions:
        queue = storage_queue(subscription)
        if queue != target.queue:
            continue
        state = (subscription.get("properties") or {}).get("provisioningState")
        if state not in (None, "Succeeded"):
            raise ValueError(f"event subscription {subscription.get('name')} to queue {queue} is {state}")
        return f"event subscription {subscription.get('name')} delivers to queue {queue}"
    raise ValueError(
        f"no event subscription of partner topic {target.partner_topic} delivers to the Storage queue {target.queue}"
    )
