"""Azure Event Grid as Graph's delivery channel: partner configuration, partner topics, and event
subscriptions that deliver CloudEvents to a Storage queue, with Event Grid's retries and dead-lettering.

What the docs say, and what this simulates:
- A Graph subscription whose notificationUrl is `EventGrid:?azuresubscriptionid=…&resourcegroup=…&
  partnertopic=…&location=…` (all four; the region's short name) creates the partner topic, when the
  resource group's partner configuration authorizes the partner `MicrosoftGraphAPI` and that authorization
  has not expired ("If this timer expires, any request from this partner to create, update or delete
  resources in subscriber's context will fail"). Each tenant-application pair may create 10 partner topics.
  The lifecycle URL, if Event Grid, names the same topic. There is no validation handshake.
- A new partner topic is `NeverActivated`: events reach its event subscriptions only once it is activated
  (`az eventgrid partner topic activate`); before that, and after deactivation, they are dropped.
- Events are CloudEvents 1.0: `type` `Microsoft.Graph.Message{Created,Updated,Deleted}` or
  `Microsoft.Graph.Subscription{ReauthorizationRequired,Removed,Missed}`, `source`
  `/tenants/{tenant}/applications/{app}`, `data` the changeNotification.
- Storage queue delivery writes one event per message, base64 of its UTF-8 JSON: what Microsoft's own SDK
  samples decode (azure-sdk-for-python consume_cloud_events_from_storage_queue.py, azure-sdk-for-java
  ReceiveEventsFromEventHandler.java) and what is reported since 2022 (MicrosoftDocs/azure-docs#102923).
  The Event Grid API has no setting for it. Older docs and 2021 reports said plain JSON: the test-only
  option `testOnlyPlainQueueMessages` writes that instead, so the app is tested against both.
- Retries: 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then every 12 h, until
  maxDeliveryAttempts (1 to 30, default 30) or eventTimeToLiveInMinutes (1 to 1440, default 1440) runs
  out; 400, 403 and 413 from an Azure resource are not retried. Then the event is dead-lettered to the
  blob container, `{container}/{EVENT-SUBSCRIPTION-NAME}/{yyyy}/{M}/{d}/{H}/{guid}.json` (names upper
  case, date parts not zero-padded: as observed in MicrosoftDocs/azure-docs#33395; the docs give no path), a
  JSON array of events (Azure-Samples/event-grid-dotnet-handle-deadlettered-events), each a CloudEvent with
  the extension attributes the docs show for the CloudEvents 1.0 schema: `deadletterreason`,
  `deliveryattempts`, `lastdeliveryoutcome` (the docs' values: NotFound, Unauthorized, Forbidden, BadRequest,
  PayloadTooLarge, Busy, TimedOut, SocketError) and `publishtime` ("Delivery event formats" in Azure Event
  Grid, "Event Grid message delivery and retry"); without a dead-letter container (or one that does not
  exist) it is dropped. The schedule runs on real time scaled by
  `retry_scale` so tests finish; the time to live on the simulated clock.
- Custom topics (`Microsoft.EventGrid/topics`, input schema EventGridSchema) take a publisher's events, such as
  Defender for Storage's scan results (`defender.py`), and deliver them through the same machinery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueClient

from .clock import Clock, graph_datetime_7
from .errors import ControlError, GraphError
from .requestlog import log_line

GRAPH_PARTNER = "MicrosoftGraphAPI"
MAX_TOPICS_PER_APP = 10
RETRY_SCHEDULE = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600)
RETRY_EVERY = 43200
NOT_RETRIED = {400, 403, 413}
# lastDeliveryOutcome for a status the destination answered ("Event Grid message delivery and retry").
DELIVERY_OUTCOMES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 413: "PayloadTooLarge"}
DEFAULT_AUTHORIZATION_DAYS = 7
_REGION = re.compile(r"^[a-z][a-z0-9]{2,39}$")
_TOPIC = re.compile(r"^[A-Za-z0-9-]{3,50}$")
_TOPIC_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.EventGrid/topics/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_URL_PARAMS = ("azuresubscriptionid", "resourcegroup", "partnertopic", "location")
# What the control API's event subscription takes: the ARM properties it stands for, flattened.
SUBSCRIPTION_FIELDS = {
    "connectionString",
    "queueName",
    "deadLetterContainer",
    "eventDeliverySchema",
    "maxDeliveryAttempts",
    "eventTimeToLiveInMinutes",
    "includedEventTypes",
}
CHANGE_EVENT_TYPES = {"created": "Created", "updated": "Updated", "deleted": "Deleted"}
LIFECYCLE_EVENT_TYPES = {
    "reauthorizationRequired": "Microsoft.Graph.SubscriptionReauthorizationRequired",
    "subscriptionRemoved": "Microsoft.Graph.SubscriptionRemoved",
    "missed": "Microsoft.Graph.SubscriptionMissed",
}


def is_eventgrid_url(url: object) -> bool:
    return isinstance(url, str) and url[:10].lower() == "eventgrid:"


@dataclass(frozen=True)
class TopicRef:
    azure_subscription_id: str
    resource_group: str
    name: str
    location: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.azure_subscription_id.lower(), self.resource_group.lower(), self.name.lower())


def parse_url(url: str, prop: str) -> TopicRef:
    """Graph's check of an `EventGrid:` URI: every parameter once, a region short name, a valid topic name."""
    _, _, rest = url.partition(":")
    if not rest.startswith("?"):
        raise GraphError(400, "InvalidRequest", f"The {prop} '{url}' is not a valid Event Grid URI.")
    params: dict[str, str] = {}
    for name, value in parse_qsl(rest[1:], keep_blank_values=True):
        if name.lower() in params:
            raise GraphError(400, "InvalidRequest", f"The {prop} names '{name}' twice.")
        params[name.lower()] = value
    missing = [p for p in _URL_PARAMS if not params.get(p)]
    if missing:
        raise GraphError(400, "InvalidRequest", f"The {prop} lacks {', '.join(missing)}.")
    if not _REGION.match(params["location"]):
        raise GraphError(
            400,
            "InvalidRequest",
            f"The {prop} location '{params['location']}' is not an Azure region name (such as westeurope).",
        )
    if not _TOPIC.match(params["partnertopic"]):
        raise GraphError(400, "InvalidRequest", f"The {prop} partnertopic '{params['partnertopic']}' is not valid.")
    return TopicRef(params["azuresubscriptionid"], params["resourcegroup"], params["partnertopic"], params["location"])


@dataclass
class EventSubscription:
    name: str
    connection_string: str
    queue: str
    dead_letter_container: str | None = None
    max_attempts: int = 30
    ttl_minutes: int = 1440
    included_types: tuple[str, ...] = ()

    def arm(self, parent_id: str, storage_group: str) -> dict[str, Any]:
        """As ARM lists it: the Storage queue destination by the account's resource id (here in the topic's group)."""
        parts = dict(p.split("=", 1) for p in self.connection_string.split(";") if "=" in p)
        account = f"{storage_group}/providers/Microsoft.Storage/storageAccounts/{parts.get('AccountName', '')}"
        return {
            "id": f"{parent_id}/{self.name}",
            "name": self.name,
            "type": "Microsoft.EventGrid/partnerTopics/eventSubscriptions",
            "properties": {
                "provisioningState": "Succeeded",
                "destination": {
                    "endpointType": "StorageQueue",
                    "properties": {"resourceId": account, "queueName": self.queue},
                },
                "filter": {"includedEventTypes": list(self.included_types) or None},
                "eventDeliverySchema": "CloudEventSchemaV1_0",
                "retryPolicy": {
                    "maxDeliveryAttempts": self.max_attempts,
                    "eventTimeToLiveInMinutes": self.ttl_minutes,
                },
            },
        }


@dataclass
class PendingEvent:
    event: dict[str, Any]
    published: datetime  # simulated clock
    attempts: int = 0
    due: float = 0.0  # loop time
    last_status: int | None = None
    last_outcome: str = ""


@dataclass
class PartnerTopic:
    ref: TopicRef
    app_id: str
    tenant_id: str
    activation_state: str = "NeverActivated"
    subscriptions: dict[str, EventSubscription] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "azureSubscriptionId": self.ref.azure_subscription_id,
            "resourceGroup": self.ref.resource_group,
            "name": self.ref.name,
            "location": self.ref.location,
            "source": f"/tenants/{self.tenant_id}/applications/{self.app_id}",
            "partnerTopicFriendlyDescription": "Microsoft Graph API change notifications",
            "activationState": self.activation_state,
            "eventSubscriptions": sorted(self.subscriptions),
        }

    def arm(self) -> dict[str, Any]:
        """As ARM describes the partner topic (without its id, which the caller knows)."""
        return {
            "name": self.ref.name,
            "type": "Microsoft.EventGrid/partnerTopics",
            "location": self.ref.location,
            "properties": {
                "source": f"/tenants/{self.tenant_id}/applications/{self.app_id}",
                "partnerTopicFriendlyDescription": "Microsoft Graph API change notifications",
                "activationState": self.activation_state,
                "provisioningState": "Succeeded",
                "eventTypeInfo": {"kind": "Inline"},
            },
        }


@dataclass
class CustomTopic:
    """A custom topic (Microsoft.EventGrid/topics) in the Event Grid event schema: what Defender for Storage
    publishes its scan results to. Its subscriptions deliver that schema as it is."""

    ref: TopicRef
    subscriptions: dict[str, EventSubscription] = field(default_factory=dict)

    @property
    def resource_id(self) -> str:
        ref = self.ref
        return (
            f"/subscriptions/{ref.azure_subscription_id}/resourceGroups/{ref.resource_group}"
            f"/providers/Microsoft.EventGrid/topics/{ref.name}"
        )

    def describe(self) -> dict[str, Any]:
        return {"id": self.resource_id, "location": self.ref.location, "eventSubscriptions": sorted(self.subscriptions)}


@dataclass
class _Outbox:
    topic: PartnerTopic | CustomTopic
    subscription: EventSubscription
    items: list[PendingEvent] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class EventGrid:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.retry_scale = 1.0
        # Test-only: queue messages as plain JSON, as older docs described, instead of base64.
        self.plain_queue_messages = False
        # (azure subscription, resource group) → when the authorization of MicrosoftGraphAPI expires
        self.authorizations: dict[tuple[str, str], datetime] = {}
        # (azure subscription, resource group) → the partner configuration's defaultMaximumExpirationTimeInDays
        self.configurations: dict[tuple[str, str], int] = {}
        self.topics: dict[tuple[str, str, str], PartnerTopic] = {}
        self.custom_topics: dict[tuple[str, str, str], CustomTopic] = {}
        self.records: list[dict[str, Any]] = []
        self._outboxes: dict[tuple[tuple[str, str, str], str], _Outbox] = {}

    # -- Graph's side ---------------------------------------------------------------------------
    def bind(self, notification_url: str, lifecycle_url: str | None, app_id: str, tenant_id: str) -> None:
        """What Graph does on creating a subscription for an `EventGrid:` URI: the partner topic, made if new."""
        ref = parse_url(notification_url, "notificationUrl")
        if lifecycle_url is not None and (
            not is_eventgrid_url(lifecycle_url) or parse_url(lifecycle_url, "lifecycleNotificationUrl").key != ref.key
        ):
            raise GraphError(
                400,
                "InvalidRequest",
                "The lifecycleNotificationUrl must name the same partner topic as the notificationUrl.",
            )
        topic = self.topics.get(ref.key)
        if topic is not None:
            if topic.ref.location != ref.location or topic.app_id != app_id:
                raise GraphError(400, "InvalidRequest", f"Partner topic '{ref.name}' exists for another source.")
            return
        expires = self.authorizations.get((ref.azure_subscription_id.lower(), ref.resource_group.lower()))
        if expires is None or expires <= self.clock.now():
            raise GraphError(
                400,
                "InvalidRequest",
                f"Partner '{GRAPH_PARTNER}' is not authorized to create partner topics in resource group "
                f"'{ref.resource_group}' of Azure subscription '{ref.azure_subscription_id}'.",
            )
        if sum(1 for t in self.topics.values() if t.app_id == app_id) >= MAX_TOPICS_PER_APP:
            raise GraphError(400, "InvalidRequest", f"An application can create at most {MAX_TOPICS_PER_APP} topics.")
        self.topics[ref.key] = PartnerTopic(ref, app_id, tenant_id)

    def publish(self, url: str, kind: str, item: dict[str, Any], app_id: str, tenant_id: str, copies: int) -> int:
        """Graph publishes a notification (`copies` times: at-least-once) to the topic its URL names."""
        topic = self.topics.get(parse_url(url, "notificationUrl").key)
        if topic is None:
            return 0
        event = self.cloud_event(kind, item, app_id, tenant_id)
        if topic.activation_state != "Activated":
            self.records.append({"topic": topic.ref.name, "outcome": "dropped", "reason": "topic not activated"})
            return 0
        for subscription in topic.subscriptions.values():
            if subscription.included_types and event["type"] not in subscription.included_types:
                continue
            outbox = self._outbox(topic, subscription)
            loop = asyncio.get_running_loop()
            for _ in range(copies):
                outbox.items.append(PendingEvent(dict(event), self.clock.now(), due=loop.time()))
            outbox.wake.set()
        return copies

    def custom_topic(self, resource_id: str) -> CustomTopic | None:
        """The custom topic an ARM resource id names (case-insensitive, as ARM ids are)."""
        match = _TOPIC_ID.match(resource_id)
        if match is None:
            return None
        return self.custom_topics.get((match["sub"].lower(), match["rg"].lower(), match["name"].lower()))

    def publish_custom(self, topic: CustomTopic, event: dict[str, Any]) -> None:
        """A publisher's event (Event Grid event schema) to each of the topic's subscriptions that takes its type."""
        loop = asyncio.get_running_loop()
        for subscription in topic.subscriptions.values():
            if subscription.included_types and event["eventType"] not in subscription.included_types:
                continue
            outbox = self._outbox(topic, subscription)
            outbox.items.append(PendingEvent(dict(event), self.clock.now(), due=loop.time()))
            outbox.wake.set()

    def cloud_event(self, kind: str, item: dict[str, Any], app_id: str, tenant_id: str) -> dict[str, Any]:
        if kind == "change":
            event_type = f"Microsoft.Graph.Message{CHANGE_EVENT_TYPES[item['changeType']]}"
            subject = str(item.get("resource", ""))
        else:
            event_type = LIFECYCLE_EVENT_TYPES[item["lifecycleEvent"]]
            subject = f"Subscriptions/{item['subscriptionId']}"
        return {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "source": f"/tenants/{tenant_id}/applications/{app_id}",
            "subject": subject,
            "time": graph_datetime_7(self.clock.now()),
            "datacontenttype": "application/json",
            "specversion": "1.0",
            "data": item,
        }

    # -- delivery -------------------------------------------------------------------------------
    def _outbox(self, topic: PartnerTopic | CustomTopic, subscription: EventSubscription) -> _Outbox:
        key = (topic.ref.key, subscription.name)
        outbox = self._outboxes.get(key)
        if outbox is None or outbox.subscription is not subscription:
            outbox = self._outboxes[key] = _Outbox(topic, subscription)
        if outbox.task is None or outbox.task.done():
            outbox.task = asyncio.get_running_loop().create_task(self._worker(outbox))
        return outbox

    def pending(self) -> int:
        return sum(len(o.items) for o in self._outboxes.values())

    async def close(self) -> None:
        tasks = [o.task for o in self._outboxes.values() if o.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _delay(self, attempts: int) -> float:
        seconds = RETRY_SCHEDULE[attempts - 1] if attempts <= len(RETRY_SCHEDULE) else RETRY_EVERY
        return seconds * self.retry_scale

    async def _worker(self, outbox: _Outbox) -> None:
        loop = asyncio.get_running_loop()
        sub = outbox.subscription
        async with QueueClient.from_connection_string(sub.connection_string, sub.queue) as queue:
            while True:
                now = loop.time()
                due = [p for p in outbox.items if p.due <= now]
                if not due:
                    outbox.wake.clear()
                    wait = min((p.due for p in outbox.items), default=now + 3600) - now
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(outbox.wake.wait(), max(wait, 0.0))
                    continue
                for pending in due:
                    outbox.items.remove(pending)
                await asyncio.gather(*(self._deliver(outbox, queue, p) for p in due))

    async def _deliver(self, outbox: _Outbox, queue: QueueClient, pending: PendingEvent) -> None:
        sub = outbox.subscription
        pending.attempts += 1
        text = json.dumps(pending.event, separators=(",", ":"))
        if not self.plain_queue_messages:
            text = base64.b64encode(text.encode()).decode("ascii")
        status: int | None
        try:
            await queue.send_message(text)
            status = 201
        except ResourceNotFoundError as exc:
            status, pending.last_outcome = exc.status_code or 404, "NotFound"
        except HttpResponseError as exc:
            status = exc.status_code
            pending.last_outcome = DELIVERY_OUTCOMES.get(status or 0, "Busy")
        except (AzureError, OSError):
            status, pending.last_outcome = None, "SocketError"
        log_line("EVENTGRID", f"queue {sub.queue}", status or 0, 0.0)
        pending.last_status = status
        if status == 201:
            self.records.append({"topic": outbox.topic.ref.name, "outcome": "delivered", "id": pending.event["id"]})
            return
        expired = self.clock.now() - pending.published >= timedelta(minutes=sub.ttl_minutes)
        if status in NOT_RETRIED or pending.attempts >= sub.max_attempts or expired:
            reason = (
                "TimeToLiveExceeded"
                if expired
                else "MaxDeliveryAttemptsExceeded"
                if pending.attempts >= sub.max_attempts
                else "DeliveryFailed"
            )
            await self._dead_letter(outbox, pending, reason)
            return
        pending.due = asyncio.get_running_loop().time() + self._delay(pending.attempts)
        outbox.items.append(pending)

    async def _dead_letter(self, outbox: _Outbox, pending: PendingEvent, reason: str) -> None:
        sub = outbox.subscription
        record: dict[str, Any] = {"topic": outbox.topic.ref.name, "id": pending.event["id"], "reason": reason}
        if sub.dead_letter_container is None:
            self.records.append({**record, "outcome": "dropped"})
            return
        now = self.clock.now()
        path = f"{sub.name.upper()}/{now.year}/{now.month}/{now.day}/{now.hour}/{uuid.uuid4()}.json"
        body = [
            {
                **pending.event,
                "deadletterreason": reason,
                "deliveryattempts": pending.attempts,
                "lastdeliveryoutcome": pending.last_outcome,
                "publishtime": graph_datetime_7(pending.published),
            }
        ]
        try:
            async with BlobServiceClient.from_connection_string(sub.connection_string) as blobs:
                await blobs.get_blob_client(sub.dead_letter_container, path).upload_blob(json.dumps(body))
        except (AzureError, OSError) as exc:
            # "When the dead-letter destination isn't found, the dead-letter events are dropped."
            self.records.append({**record, "outcome": "dropped", "error": type(exc).__name__})
            return
        self.records.append({**record, "outcome": "deadlettered", "blob": f"{sub.dead_letter_container}/{path}"})

    # -- control API (what the portal, az and the infra do) ---------------------------------------
    def routes(self) -> list[web.RouteDef]:
        base = "/_sim/eventgrid"
        return [
            web.put(base + "/partnerConfigurations/{sub}/{rg}", self.put_configuration),
            web.get(base + "/partnerConfigurations/{sub}/{rg}", self.get_configuration),
            web.get(base + "/partnerTopics", self.list_topics),
            web.post(base + "/partnerTopics/{sub}/{rg}/{name}/{action:activate|deactivate}", self.set_activation),
            web.put(base + "/partnerTopics/{sub}/{rg}/{name}/eventSubscriptions/{es}", self.put_subscription),
            web.put(base + "/topics/{sub}/{rg}/{name}", self.put_custom_topic),
            web.put(base + "/topics/{sub}/{rg}/{name}/eventSubscriptions/{es}", self.put_custom_subscription),
            web.get(base + "/records", self.list_records),
            web.post(base + "/options", self.set_options),
        ]

    async def put_configuration(self, request: web.Request) -> web.Response:
        body = await request.json()
        partners = body.get("authorizedPartnersList", [])
        max_days = body.get("defaultMaximumExpirationTimeInDays", DEFAULT_AUTHORIZATION_DAYS)
        if not isinstance(max_days, int) or not 1 <= max_days <= 365:
            raise ControlError(400, "BadRequest", "defaultMaximumExpirationTimeInDays must be 1 to 365")
        key = (request.match_info["sub"].lower(), request.match_info["rg"].lower())
        self.authorizations.pop(key, None)
        self.configurations[key] = max_days
        now = self.clock.now()
        for partner in partners:
            if partner.get("partnerName") != GRAPH_PARTNER:
                continue
            raw = partner.get("authorizationExpirationTimeInUtc")
            expires = datetime.fromisoformat(raw) if raw else now + timedelta(days=max_days)
            if not now < expires <= now + timedelta(days=max_days, minutes=5):
                raise ControlError(
                    400, "BadRequest", f"authorizationExpirationTimeInUtc must be within {max_days} days from now"
                )
            self.authorizations[key] = expires
        return await self.get_configuration(request)

    def partner_authorization(self, subscription: str, group: str) -> dict[str, Any] | None:
        """The group's `partnerAuthorization` as ARM shows it, or None without a partner configuration."""
        key = (subscription.lower(), group.lower())
        if key not in self.configurations:
            return None
        expires = self.authorizations.get(key)
        partners = []
        if expires is not None:
            when = graph_datetime_7(expires)
            partners.append({"partnerName": GRAPH_PARTNER, "authorizationExpirationTimeInUtc": when})
        return {"defaultMaximumExpirationTimeInDays": self.configurations[key], "authorizedPartnersList": partners}

    async def get_configuration(self, request: web.Request) -> web.Response:
        authorization = self.partner_authorization(request.match_info["sub"], request.match_info["rg"])
        partners = {"authorizedPartnersList": []} if authorization is None else authorization
        return web.json_response({"properties": {"partnerAuthorization": partners}})

    def _topic(self, request: web.Request) -> PartnerTopic:
        info = request.match_info
        topic = self.topics.get((info["sub"].lower(), info["rg"].lower(), info["name"].lower()))
        if topic is None:
            raise ControlError(404, "ResourceNotFound", f"partner topic '{info['name']}' does not exist (yet)")
        return topic

    async def list_topics(self, request: web.Request) -> web.Response:
        return web.json_response({"value": [t.describe() for t in self.topics.values()]})

    async def set_activation(self, request: web.Request) -> web.Response:
        topic = self._topic(request)
        topic.activation_state = "Activated" if request.match_info["action"] == "activate" else "Deactivated"
        return web.json_response(topic.describe())

    async def put_subscription(self, request: web.Request) -> web.Response:
        topic = self._topic(request)
        body = await request.json()
        schema = body.get("eventDeliverySchema", "CloudEventSchemaV1_0")
        if schema != "CloudEventSchemaV1_0":
            raise ControlError(400, "BadRequest", "partner topics of Microsoft Graph deliver CloudEventSchemaV1_0 only")
        name = request.match_info["es"]
        topic.subscriptions[name] = self._subscription(name, body)
        return web.json_response(topic.describe())

    async def put_custom_topic(self, request: web.Request) -> web.Response:
        info = request.match_info
        body = await request.json()
        if body.get("inputSchema", "EventGridSchema") != "EventGridSchema":
            raise ControlError(400, "BadRequest", "this simulator's custom topics take the EventGridSchema")
        location = body.get("location", "")
        if not isinstance(location, str) or not _REGION.match(location):
            raise ControlError(400, "BadRequest", "location must be a region's short name such as westeurope")
        ref = TopicRef(info["sub"], info["rg"], info["name"], location)
        topic = self.custom_topics.setdefault(ref.key, CustomTopic(ref))
        return web.json_response(topic.describe())

    async def put_custom_subscription(self, request: web.Request) -> web.Response:
        info = request.match_info
        topic = self.custom_topics.get((info["sub"].lower(), info["rg"].lower(), info["name"].lower()))
        if topic is None:
            raise ControlError(404, "ResourceNotFound", f"topic '{info['name']}' does not exist")
        body = await request.json()
        if body.get("eventDeliverySchema", "EventGridSchema") != "EventGridSchema":
            raise ControlError(400, "BadRequest", "a topic in the EventGridSchema delivers that schema here")
        name = info["es"]
        topic.subscriptions[name] = self._subscription(name, body)
        return web.json_response(topic.describe())

    def _subscription(self, name: str, body: dict[str, Any]) -> EventSubscription:
        """An event subscription's Storage queue destination and delivery policy, checked as Event Grid does."""
        attempts, ttl = body.get("maxDeliveryAttempts", 30), body.get("eventTimeToLiveInMinutes", 1440)
        if not isinstance(attempts, int) or not 1 <= attempts <= 30:
            raise ControlError(400, "BadRequest", "maxDeliveryAttempts must be 1 to 30")
        if not isinstance(ttl, int) or not 1 <= ttl <= 1440:
            raise ControlError(400, "BadRequest", "eventTimeToLiveInMinutes must be 1 to 1440")
        unknown = sorted(set(body) - SUBSCRIPTION_FIELDS)
        if unknown:
            # As ARM refuses a property the API lacks (messageEncoding, for one: Event Grid has no such setting).
            raise ControlError(400, "BadRequest", f"unknown event subscription properties: {', '.join(unknown)}")
        for required in ("connectionString", "queueName"):
            if not isinstance(body.get(required), str) or not body[required]:
                raise ControlError(400, "BadRequest", f"{required} is required")
        return EventSubscription(
            name=name,
            connection_string=body["connectionString"],
            queue=body["queueName"],
            dead_letter_container=body.get("deadLetterContainer"),
            max_attempts=attempts,
            ttl_minutes=ttl,
            included_types=tuple(body.get("includedEventTypes") or ()),
        )

    async def list_records(self, request: web.Request) -> web.Response:
        return web.json_response({"value": self.records, "pending": self.pending()})

    async def set_options(self, request: web.Request) -> web.Response:
        """Simulator controls: `retryScale` (the retry schedule's speed), and the test-only
        `testOnlyPlainQueueMessages` (queue messages as plain JSON instead of base64)."""
        body = await request.json()
        unknown = sorted(set(body) - {"retryScale", "testOnlyPlainQueueMessages"})
        if unknown or not body:
            raise ControlError(400, "BadRequest", "options are retryScale and testOnlyPlainQueueMessages")
        if "retryScale" in body:
            scale = body["retryScale"]
            if not isinstance(scale, int | float) or isinstance(scale, bool) or scale <= 0:
                raise ControlError(400, "BadRequest", "'retryScale' must be a positive number")
            self.retry_scale = float(scale)
        if "testOnlyPlainQueueMessages" in body:
            if not isinstance(body["testOnlyPlainQueueMessages"], bool):
                raise ControlError(400, "BadRequest", "'testOnlyPlainQueueMessages' must be true or false")
            self.plain_queue_messages = body["testOnlyPlainQueueMessages"]
        return web.json_response(
            {"retryScale": self.retry_scale, "testOnlyPlainQueueMessages": self.plain_queue_messages}
        )
