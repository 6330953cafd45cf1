"""The Azure side of GRAPH_DELIVERY=eventgrid in the local stack, done against the simulator as `azd up` and
the operator do it in Azure (docs/setup.md): authorize the partner `MicrosoftGraphAPI` on the resource group
(infra, before the first subscription), then, once the maintain pass has made a subscription and Graph has
created the partner topic, activate it and subscribe the app's Storage queue to it, with a dead-letter
container, in the CloudEvents 1.0 schema.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from shared.delivery import DEFAULT_EVENTGRID_QUEUE
from shared.ops.eventgrid import dead_letter_container

# What the infra sets as app settings in Azure; here fixed values naming the simulated Azure side.
LOCAL_SETTINGS = {
    "EVENTGRID_AZURE_SUBSCRIPTION_ID": "00000000-0000-4000-8000-00000000e9e9",
    "EVENTGRID_RESOURCE_GROUP": "rg-mail-ingest-local",
    "EVENTGRID_LOCATION": "westeurope",
    "EVENTGRID_PARTNER_TOPIC": "mail-ingest-local-mail",
}
EVENT_SUBSCRIPTION = "mail-events-queue"
DEAD_LETTER_CONTAINER = dead_letter_container(DEFAULT_EVENTGRID_QUEUE)
AUTHORIZATION_DAYS = 365

Control = Callable[[str, str, Any], Any]


def uses_eventgrid(env: Mapping[str, str]) -> bool:
    return env.get("GRAPH_DELIVERY", "").strip().lower() == "eventgrid"


def _topic_path(env: Mapping[str, str]) -> str:
    return (
        f"/_sim/eventgrid/partnerTopics/{env['EVENTGRID_AZURE_SUBSCRIPTION_ID']}/"
        f"{env['EVENTGRID_RESOURCE_GROUP']}/{env['EVENTGRID_PARTNER_TOPIC']}"
    )


def authorize_graph(control: Control, env: Mapping[str, str]) -> None:
    """The partner configuration (infra/modules/eventgrid.bicep): Graph may create partner topics in the group."""
    group = f"{env['EVENTGRID_AZURE_SUBSCRIPTION_ID']}/{env['EVENTGRID_RESOURCE_GROUP']}"
    path = f"/_sim/eventgrid/partnerConfigurations/{group}"
    body = {
        "defaultMaximumExpirationTimeInDays": AUTHORIZATION_DAYS,
        "authorizedPartnersList": [{"partnerName": "MicrosoftGraphAPI"}],
    }
    control("PUT", path, body)


def connect_topic(control: Control, env: Mapping[str, str], storage: str, **options: Any) -> Any:
    """Activate the partner topic Graph created, and deliver its events to EVENTGRID_QUEUE (the postprovision
    hook's step in Azure). `options`: maxDeliveryAttempts, eventTimeToLiveInMinutes."""
    with BlobServiceClient.from_connection_string(storage) as blobs, contextlib.suppress(ResourceExistsError):
        blobs.create_container(DEAD_LETTER_CONTAINER)
    path = _topic_path(env)
    control("POST", f"{path}/activate", None)
    body = {
        "connectionString": storage,
        "queueName": env.get("EVENTGRID_QUEUE") or "mail-events",
        "deadLetterContainer": DEAD_LETTER_CONTAINER,
        "eventDeliverySchema": "CloudEventSchemaV1_0",
        **options,
    }
    return control("PUT", f"{path}/eventSubscriptions/{EVENT_SUBSCRIPTION}", body)
