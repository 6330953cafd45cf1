"""Graph's CloudEvents from the Event Grid queue: read, and checked as the webhook checks items."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared.errors import InvalidNotification
from shared.settings import Settings
from shared.sources.graph.clientstate import make_client_state
from shared.sources.graph.eventgrid import parse_event, verify_event
from shared.sources.graph.known_subscriptions import Holding
from shared.sources.graph.messages import parse_change, parse_lifecycle
from shared.sources.graph.webhook import Trust

SECRET = b"eventgrid-test-key-0123456789abcd"
SUBSCRIPTION = "9f0e2a3c-0000-4000-8000-000000000001"


async def holds(folder_key: str, subscription_id: str, arrived: float) -> Holding:
    return Holding.YES if subscription_id.lower() == SUBSCRIPTION else Holding.NO


def trust(settings: Settings) -> Trust:
    return Trust(settings, SECRET, holds, 0.0)


def event(settings: Settings, type_: str = "Microsoft.Graph.MessageCreated", **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subscriptionId": SUBSCRIPTION,
        "changeType": "created",
        "resource": "Users/aaaa/Messages/AAMkAD=",
        "tenantId": settings.tenant_id,
        "clientState": make_client_state(SECRET, settings.mailboxes[0].key),
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMkAD="},
    }
    body.update(data)
    return {
        "id": str(uuid.uuid4()),
        "type": type_,
        "source": f"/tenants/{settings.tenant_id}/applications/{settings.client_id}",
        "subject": "Users/aaaa/Messages/AAMkAD=",
        "time": "2026-12-07T10:00:00.0000000Z",
        "datacontenttype": "application/json",
        "specversion": "1.0",
        "data": {k: v for k, v in body.items() if v is not None},
    }


def raw(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


async def test_a_change_event_becomes_the_webhooks_change_message(settings: Settings):
    verdict = await verify_event(parse_event(raw(event(settings))), trust(settings))
    assert verdict.refused == 0
    change = parse_change(verdict.messages[0])
    assert (change.folder_key, change.message_id, change.change_type) == (
        settings.mailboxes[0].key,
        "AAMkAD=",
        "created",
    )


async def test_the_docs_capitalised_names_are_read(settings: Settings):
    """Azure's Outlook example writes ChangeType and resourceData.Id."""
    sample = event(settings, changeType=None, resourceData=None)
    sample["data"].update({"ChangeType": "created", "resourceData": {"Id": "AAMkAD="}})
    verdict = await verify_event(parse_event(raw(sample)), trust(settings))
    assert parse_change(verdict.messages[0]).message_id == "AAMkAD="


@pytest.mark.parametrize(
    ("type_", "lifecycle"),
    [
        ("Microsoft.Graph.SubscriptionReauthorizationRequired", "reauthorizationRequired"),
        ("microsoft.graph.subscriptionRemoved", "subscriptionRemoved"),
        ("Microsoft.Graph.SubscriptionMissed", "missed"),
        # A lifecycle type no doc names is taken by its data.lifecycleEvent.
        ("Microsoft.Graph.SubscriptionDeleted", "subscriptionRemoved"),
        ("microsoft.graph.subscriptionMissedNotifications", "missed"),
    ],
)
async def test_lifecycle_events(settings: Settings, type_: str, lifecycle: str):
    sample = event(settings, type_, changeType=None, resource=None, resourceData=None, lifecycleEvent=lifecycle)
    parsed = parse_event(raw(sample))
    assert parsed.kind == "lifecycle"
    verdict = await verify_event(parsed, trust(settings))
    assert parse_lifecycle(verdict.messages[0]).event == lifecycle


@pytest.mark.parametrize(
    ("source", "data", "why"),
    [
        (None, {"clientState": "v1.abc.def.forged"}, "clientState"),
        (None, {"subscriptionId": str(uuid.uuid4())}, "unknown subscription"),
        ("/tenants/{other}/applications/{app}", {"tenantId": "{other}"}, "other tenant"),
        ("/tenants/{tenant}/applications/{other}", {}, "other application"),
    ],
)
async def test_forged_events_are_refused(settings: Settings, source, data, why):
    other = str(uuid.uuid4())
    values = {"other": other, "tenant": settings.tenant_id, "app": settings.client_id}
    sample = event(settings, **{k: v.format(**values) for k, v in data.items()})
    if source:
        sample["source"] = source.format(**values)
    verdict = await verify_event(parse_event(raw(sample)), trust(settings))
    assert verdict.messages == [] and verdict.refused == 1, why


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda e: e.update(specversion="0.3"), "CloudEvent 1.0"),
        (lambda e: e.update(type="Microsoft.Graph.UserCreated"), "not a Graph mail or lifecycle event"),
        # A subscription type without a lifecycle event in its data is no lifecycle event.
        (lambda e: e.update(type="Microsoft.Graph.SubscriptionOther"), "not a Graph mail or lifecycle event"),
        (lambda e: e.update(source="/subscriptions/x"), "event source"),
        (lambda e: e.pop("data"), "lacks data"),
        (lambda e: e["data"].update(changeType="deleted"), "disagree"),
        (lambda e: e["data"].update(ChangeType="created"), "twice, in different cases"),
        (lambda e: e["data"].update(tenantId=str(uuid.uuid4())), "another tenant than its source"),
    ],
)
def test_malformed_events_are_refused_whole(settings: Settings, mutate, needle):
    sample = event(settings)
    mutate(sample)
    with pytest.raises(InvalidNotification, match=needle):
        parse_event(raw(sample))
