"""How Graph delivers change notifications: GRAPH_DELIVERY and the Event Grid settings.

`webhook` (the default): Graph posts to the app's public `/api/notifications` and `/api/lifecycle`.
`eventgrid`: Graph publishes to an Event Grid partner topic, which an event subscription delivers to the
Storage queue EVENTGRID_QUEUE; the app then needs no public endpoint for mail. The notification URL names
the partner topic: `EventGrid:?azuresubscriptionid=…&resourcegroup=…&partnertopic=…&location=…`, the
region as its short name (`westeurope`, never a display name), and the lifecycle URL is the same
(Azure Event Grid, "Receive Microsoft Graph change notifications through Azure Event Grid").

The Azure subscription, resource group and region come from the deployment (app settings the infra sets);
EVENTGRID_PARTNER_TOPIC defaults to a name derived from the Function App's (WEBSITE_SITE_NAME).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlencode

from .env import read_choice, read_queue_name
from .errors import SettingsError

GraphDelivery = Literal["webhook", "eventgrid"]
DEFAULT_EVENTGRID_QUEUE = "mail-events"
# Partner topic names: 3 to 50 letters, digits and hyphens (Microsoft.EventGrid naming rules).
PARTNER_TOPIC = re.compile(r"^[A-Za-z0-9-]{3,50}$")
AZURE_SUBSCRIPTION = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# Resource group names: 1 to 90 characters of letters, digits, `-_.()`, not ending in a period.
RESOURCE_GROUP = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
# A region's programmatic name (`az account list-locations`' `name`): lower-case letters and digits.
REGION = re.compile(r"^[a-z][a-z0-9]{2,39}$")
PARTNER_TOPIC_SUFFIX = "-mail"


@dataclass(frozen=True)
class EventGridTarget:
    """The partner topic Graph publishes to, and the queue its event subscription delivers to."""

    queue: str
    partner_topic: str
    azure_subscription_id: str
    resource_group: str
    location: str

    @property
    def notification_url(self) -> str:
        """Graph's `EventGrid:` URI for this partner topic: the notification and the lifecycle URL alike."""
        query = urlencode(
            {
                "azuresubscriptionid": self.azure_subscription_id,
                "resourcegroup": self.resource_group,
                "partnertopic": self.partner_topic,
                "location": self.location,
            }
        )
        return f"EventGrid:?{query}"


def _delivery(env: Mapping[str, str]) -> GraphDelivery:
    return cast(GraphDelivery, read_choice(env, "GRAPH_DELIVERY", ("webhook", "eventgrid")))


def read_matching(
    env: Mapping[str, str],
    name: str,
    pattern: re.Pattern[str],
    what: str,
    default: str = "",
    needed_with: str = "GRAPH_DELIVERY=eventgrid",
) -> str:
    """A setting the infra sets from the deployment (its subscription, group, region), checked against `pattern`."""
    value = env.get(name, "").strip() or default
    if not value:
        raise SettingsError(name, f"required with {needed_with} (the infra sets it)")
    if not pattern.match(value):
        raise SettingsError(name, f"must be {what}, got {value!r}")
    return value


def _default_topic(env: Mapping[str, str]) -> str:
    site = env.get("WEBSITE_SITE_NAME", "").strip().lower()
    return f"{site[: 50 - len(PARTNER_TOPIC_SUFFIX)]}{PARTNER_TOPIC_SUFFIX}" if site else ""


def graph_delivery_from_env(env: Mapping[str, str]) -> tuple[GraphDelivery, EventGridTarget | None]:
    """GRAPH_DELIVERY, and with `eventgrid` where Graph publishes and Event Grid delivers."""
    mode = _delivery(env)
    queue = read_queue_name(env, "EVENTGRID_QUEUE", DEFAULT_EVENTGRID_QUEUE) or DEFAULT_EVENTGRID_QUEUE
    if mode == "webhook":
        return mode, None
    target = EventGridTarget(
        queue=queue,
        partner_topic=read_matching(
            env,
            "EVENTGRID_PARTNER_TOPIC",
            PARTNER_TOPIC,
            "3 to 50 letters, digits and hyphens",
            _default_topic(env),
        ),
        azure_subscription_id=read_matching(
            env, "EVENTGRID_AZURE_SUBSCRIPTION_ID", AZURE_SUBSCRIPTION, "a GUID"
        ).lower(),
        resource_group=read_matching(env, "EVENTGRID_RESOURCE_GROUP", RESOURCE_GROUP, "a resource group name"),
        location=read_matching(
            env, "EVENTGRID_LOCATION", REGION, "a region's short name such as westeurope, not its display name"
        ),
    )
    return mode, target
