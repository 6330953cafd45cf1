from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import azure.functions as func
import pytest

from shared.errors import InvalidNotification
from shared.pipeline.layout import message_key
from shared.settings import Settings
from shared.sources.graph.clientstate import make_client_state
from shared.sources.graph.known_subscriptions import Holding, KnownSubscriptions
from shared.sources.graph.messages import parse_change, parse_lifecycle
from shared.sources.graph.webhook import Trust, handshake, parse_collection, receive, verify_changes, verify_lifecycle

SECRET = b"webhook-test-key-0123456789abcdef"
SUBSCRIPTION = "9f0e2a3c-0000-4000-8000-000000000001"


class Out(func.Out[list[str]]):
    def __init__(self) -> None:
        self.value: Any = None

    def set(self, val: list[str]) -> None:
        self.value = val

    def get(self) -> list[str]:
        return list(self.value)


def change(settings: Settings, **overrides: Any) -> dict[str, Any]:
    folder = settings.mailboxes[0]
    item: dict[str, Any] = {
        "subscriptionId": SUBSCRIPTION,
        "subscriptionExpirationDateTime": "2026-11-29T08:00:00Z",
        "changeType": "created",
        "resource": "Users/aaaa/Messages/AAMkAD=",
        "tenantId": settings.tenant_id,
        "clientState": make_client_state(SECRET, folder.key),
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMkAD="},
    }
    item.update(overrides)
    return item


def request(body: Any, params: dict[str, str] | None = None) -> func.HttpRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return func.HttpRequest("POST", "http://h/api/notifications", params=params or {}, body=raw)


async def secret() -> bytes:
    return SECRET


async def holds(folder_key: str, subscription_id: str, arrived: float) -> Holding:
    """The app holds SUBSCRIPTION (any case) for every folder, and no other."""
    return Holding.YES if subscription_id.lower() == SUBSCRIPTION else Holding.NO


def test_handshake_echoes_decoded_token_as_plain_text():
    response = handshake({"validationToken": "a b+c/<script>"})
    assert response is not None
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_body() == b"a b+c/<script>"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert handshake({}) is None


async def test_handshake_needs_no_secret(settings):
    async def boom() -> bytes:
        raise AssertionError("the handshake must not reach Key Vault")

    out = Out()
    response = await receive(request(b"", {"validationToken": "tok"}), out, verify_changes, settings, boom, holds, "n")
    assert response.get_body() == b"tok"
    assert out.value is None


async def test_accepts_ours_drops_forged_and_foreign(settings):
    forged = change(settings, clientState=make_client_state(b"other-key", settings.mailboxes[0].key))
    foreign = change(settings, tenantId="33333333-3333-3333-3333-333333333333")
    gone = change(settings, clientState=make_client_state(SECRET, "f" * 16))
    out = Out()
    body = {"value": [change(settings), forged, foreign, gone, change(settings, resourceData={"id": "second"})]}
    response = await receive(request(body), out, verify_changes, settings, secret, holds, "n")
    assert response.status_code == 202
    messages = [parse_change(m) for m in out.value]
    assert [m.message_id for m in messages] == ["AAMkAD=", "second"]
    assert {m.folder_key for m in messages} == {settings.mailboxes[0].key}


async def test_one_event_per_accepted_or_refused_item(settings, caplog):
    forged = change(settings, clientState="v1.forged", subscriptionId="sub-forged")
    body = {"value": [change(settings), forged]}
    with caplog.at_level(logging.INFO, logger="shared.sources.graph.webhook"):
        await receive(request(body), Out(), verify_changes, settings, secret, holds, "notifications")
    events = {r.event: r for r in caplog.records if hasattr(r, "event")}  # the flat attributes App Insights gets
    accepted, refused = events["notification.accepted"], events["notification.refused"]
    folder = settings.mailboxes[0]
    assert (accepted.mailbox, accepted.folder, accepted.message_key) == (
        folder.mailbox,
        folder.folder,
        message_key("AAMkAD="),
    )
    assert accepted.subscription == "9f0e2a3c-0000-4000-8000-000000000001"
    assert (refused.levelno, refused.reason, refused.subscription) == (
        logging.WARNING,
        "clientState mismatch",
        "sub-forged",
    )
    assert "v1.forged" not in caplog.text  # a clientState is never logged


async def test_lifecycle_events_name_the_mailbox(settings, caplog):
    item = change(settings, lifecycleEvent="missed")
    with caplog.at_level(logging.INFO, logger="shared.sources.graph.webhook"):
        await receive(request({"value": [item]}), Out(), verify_lifecycle, settings, secret, holds, "lifecycle")
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "lifecycle.accepted"]
    assert (record.mailbox, record.lifecycle) == (settings.mailboxes[0].mailbox, "missed")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        {"value": []},
        {"value": "x"},
        {"value": [1]},
        {"nothing": True},
    ],
)
async def test_non_notifications_are_refused_without_enqueueing(settings, body):
    out = Out()
    response = await receive(request(body), out, verify_changes, settings, secret, holds, "n")
    assert response.status_code == 400
    assert out.value is None


@pytest.mark.parametrize("missing", ["subscriptionId", "changeType", "resource", "resourceData"])
async def test_one_malformed_item_refuses_the_whole_call(settings, missing):
    bad = change(settings)
    del bad[missing]
    out = Out()
    response = await receive(
        request({"value": [change(settings), bad]}), out, verify_changes, settings, secret, holds, "n"
    )
    assert response.status_code == 400
    assert out.value is None


def test_parse_collection_limits():
    with pytest.raises(InvalidNotification, match="too large"):
        parse_collection(b" " * (4 * 1024 * 1024 + 1))


async def test_lifecycle_items(settings):
    folder = settings.mailboxes[1]
    item = {
        "subscriptionId": "sub-1",
        "subscriptionExpirationDateTime": "2026-11-29T08:00:00Z",
        "tenantId": settings.tenant_id,
        "clientState": make_client_state(SECRET, folder.key),
        "lifecycleEvent": "missed",
    }
    verdict = await verify_lifecycle([{**item, "subscriptionId": SUBSCRIPTION}], Trust(settings, SECRET, holds, 0.0))
    event = parse_lifecycle(verdict.messages[0])
    assert (event.folder_key, event.event, event.subscription_id) == (folder.key, "missed", SUBSCRIPTION)
    with pytest.raises(InvalidNotification, match="unknown lifecycleEvent"):
        await verify_lifecycle([{**item, "lifecycleEvent": "boom"}], Trust(settings, SECRET, holds, 0.0))


@pytest.mark.parametrize("kind", ["notifications", "lifecycle"])
async def test_an_item_for_a_subscription_the_app_does_not_hold_is_refused(settings, caplog, kind):
    """Its clientState verifies (it names one of our folders), but the subscription is not ours."""
    verifier = verify_changes if kind == "notifications" else verify_lifecycle
    extra = {} if kind == "notifications" else {"lifecycleEvent": "subscriptionRemoved"}
    stranger = change(settings, subscriptionId="0badc0de-0000-4000-8000-000000000000", **extra)
    ours = change(settings, subscriptionId=SUBSCRIPTION.upper(), **extra)
    out = Out()
    with caplog.at_level(logging.INFO, logger="shared.sources.graph.webhook"):
        response = await receive(request({"value": [stranger, ours]}), out, verifier, settings, secret, holds, kind)
    assert response.status_code == 202
    assert len(out.value) == 1 and SUBSCRIPTION.upper() in out.value[0]
    [refused] = [r for r in caplog.records if getattr(r, "event", "") == "notification.refused"]
    assert refused.reason == "not the app's subscription for this folder"
    assert refused.subscription == "0badc0de-0000-4000-8000-000000000000"


async def test_subscriptions_are_looked_up_only_for_verified_items(settings):
    asked: list[tuple[str, str]] = []

    async def counting(folder_key: str, subscription_id: str, arrived: float) -> Holding:
        asked.append((folder_key, subscription_id))
        return Holding.YES

    forged = change(settings, clientState=make_client_state(b"other-key", settings.mailboxes[0].key))
    foreign = change(settings, tenantId="33333333-3333-3333-3333-333333333333")
    body = {"value": [forged, foreign, change(settings)]}
    await receive(request(body), Out(), verify_changes, settings, secret, counting, "n")
    assert asked == [(settings.mailboxes[0].key, SUBSCRIPTION)]


async def test_a_subscription_not_yet_known_fails_the_call_so_graph_sends_it_again(settings, caplog):
    """Read too recently to read again: neither refused nor queued; 503, and Graph retries the delivery."""

    async def unsure(folder_key: str, subscription_id: str, arrived: float) -> Holding:
        return Holding.YES if subscription_id == SUBSCRIPTION else Holding.UNSURE

    fresh = change(settings, subscriptionId="5ab5c71b-0000-4000-8000-000000000009")
    out = Out()
    with caplog.at_level(logging.INFO, logger="shared.sources.graph.webhook"):
        response = await receive(
            request({"value": [change(settings), fresh]}), out, verify_changes, settings, secret, unsure, "n"
        )
    assert response.status_code == 503
    assert out.value is None  # the item before it is not queued either: the whole call comes again
    [deferred] = [r for r in caplog.records if getattr(r, "event", "") == "notification.deferred"]
    assert "5ab5c71b-0000-4000-8000-000000000009" in deferred.reason and "\n" not in deferred.reason


@pytest.mark.parametrize("kind", ["notifications", "lifecycle"])
async def test_a_batch_of_unknown_ids_is_refused_by_one_read_made_after_the_call_arrived(settings, caplog, kind):
    """Many items in one POST with subscription ids the folder's record does not name (forged, with a
    verifying clientState): the first one's read began after the call arrived, so it refuses them all, and
    the genuine items among them are queued: 202, not 503 (which would have Graph retry the whole batch)."""
    reads: list[str] = []

    async def load(folder_key: str) -> str | None:
        reads.append(folder_key)
        return SUBSCRIPTION

    known = KnownSubscriptions(load)
    verifier = verify_changes if kind == "notifications" else verify_lifecycle
    extra = {} if kind == "notifications" else {"lifecycleEvent": "missed"}
    forged = [change(settings, subscriptionId=str(uuid.UUID(int=n)), **extra) for n in range(1, 51)]
    ours = [change(settings, resourceData={"id": f"m{n}"}, **extra) for n in range(3)]
    out = Out()
    with caplog.at_level(logging.INFO, logger="shared.sources.graph.webhook"):
        response = await receive(
            request({"value": [*forged[:25], *ours, *forged[25:]]}), out, verifier, settings, secret, known.holds, kind
        )
    assert response.status_code == 202
    assert len(out.value) == 3
    assert reads == [settings.mailboxes[0].key]  # one read for the whole call
    refused = [r for r in caplog.records if getattr(r, "event", "") == "notification.refused"]
    assert len(refused) == 50 and {r.reason for r in refused} == {"not the app's subscription for this folder"}
    # The next call, arriving after that read and within the refresh window: not refused, not queued: 503.
    response = await receive(request({"value": forged[:1]}), Out(), verifier, settings, secret, known.holds, kind)
    assert response.status_code == 503
    assert reads == [settings.mailboxes[0].key]


@pytest.mark.parametrize("kind", ["notifications", "lifecycle"])
async def test_without_a_microsoft_365_mailbox_the_webhooks_refuse_cleanly(
    env: dict[str, str], settings: Settings, caplog: pytest.LogCaptureFixture, kind: str
):
    """A deployment with only IMAP and POP3 accounts: no handshake (no subscription can point here), no
    secret read, nothing queued, and a 4xx that names why."""
    from shared.settings import parse_settings

    accounts_only = parse_settings(
        {k: v for k, v in env.items() if not k.startswith(("GRAPH_", "WEBHOOK_"))}
        | {"MAILBOXES": "imaps://ap%40example.org@imap.example.org?secret=ap"}
    )

    async def no_secret() -> bytes:
        raise AssertionError("Key Vault read for a deployment without Graph")

    verifier = verify_changes if kind == "notifications" else verify_lifecycle
    for req in (request(b"", {"validationToken": "Validation: token"}), request({"value": [change(settings)]})):
        out = Out()
        with caplog.at_level(logging.WARNING):
            answer = await receive(req, out, verifier, accounts_only, no_secret, holds, kind)
        assert answer.status_code == 403 and "no Microsoft 365 mailbox in MAILBOXES" in answer.get_body().decode()
        assert out.value is None
    assert [r.getMessage().split()[0] for r in caplog.records] == ["notification.refused"] * 2
