"""GRAPH_DELIVERY=eventgrid end to end: Graph simulator → partner topic → Event Grid → Storage queue → the
`graph_events` worker on the dev host → `mail-changes` → ingest → Blob Storage. No webhook takes part."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from local.eventgrid import DEAD_LETTER_CONTAINER, EVENT_SUBSCRIPTION, authorize_graph
from local.mailcheck import BlobReader, Delivered, deliver, file_attachment, subscriptions, take_handoffs
from local.stack import Stack, StackConfig
from shared.pipeline.layout import graph_time, message_key
from shared.pipeline.poison import CHANGES_QUEUE, LIFECYCLE_QUEUE, Parked, unwrap
from shared.settings import MailboxFolder
from shared.sources.graph.messages import ChangeMessage
from shared.sources.graph.state import FolderState

from .conftest import wait_until
from .test_cli import cli

MAILBOXES = ("invoices@contoso.com", "ap@contoso.com")
INBOX = MailboxFolder("invoices@contoso.com")
EVENTS = "mail-events"


@pytest.fixture(scope="module")
def eg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = Path(tmp_path_factory.mktemp("eventgrid"))
    config = StackConfig(
        mailboxes=MAILBOXES,
        data_dir=data_dir,
        app_settings={
            "GRAPH_DELIVERY": "eventgrid",
            "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:01",
            "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:00.500",
        },
    )
    with Stack(config) as running:
        response = running.run_function("maintain")
        assert response.status_code == 200, (data_dir / "devhost.log").read_text()[-3000:]
        running.connect_eventgrid()
        running.control("POST", "/_sim/eventgrid/options", {"retryScale": 0.01})
        yield running


@pytest.fixture
def reader(eg: Stack) -> Iterator[BlobReader]:
    """This module's stack's blobs (conftest's `reader` reads the session stack's)."""
    blob_reader = BlobReader(eg)
    yield blob_reader
    blob_reader.close()


def topic_path(stack: Stack) -> str:
    env = stack.env
    return (
        f"/_sim/eventgrid/partnerTopics/{env['EVENTGRID_AZURE_SUBSCRIPTION_ID']}/"
        f"{env['EVENTGRID_RESOURCE_GROUP']}/{env['EVENTGRID_PARTNER_TOPIC']}"
    )


def queue(stack: Stack, name: str) -> QueueClient:
    return QueueClient.from_connection_string(stack.storage_connection_string, name)


def queue_length(stack: Stack, name: str) -> int:
    try:
        with queue(stack, name) as client:
            return int(client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def drained(stack: Stack, what: str, timeout: float = 60) -> None:
    """Every queue between Event Grid and the blobs empty (the worker has taken all it was given)."""
    names = (EVENTS, CHANGES_QUEUE, LIFECYCLE_QUEUE)
    wait_until(lambda: all(queue_length(stack, n) == 0 for n in names), timeout, what)


def put_event(stack: Stack, event: dict[str, Any], *, encoded: bool = True) -> None:
    """What anyone with access to the queue can do: write a message, as Event Grid writes one (base64)."""
    text = json.dumps(event)
    with queue(stack, EVENTS) as client:
        client.send_message(base64.b64encode(text.encode()).decode() if encoded else text)


def graph_event(stack: Stack, sub: dict[str, Any], message_id: str, **override: Any) -> dict[str, Any]:
    """A CloudEvent as Graph publishes one for a new message of `sub` (local/azuresim/eventgrid.py)."""
    env = stack.env
    path = f"Users/{sub['mailboxId']}/Messages/{message_id}"
    data = {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": sub["expirationDateTime"],
        "changeType": "created",
        "resource": path,
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": path, "id": message_id},
        "clientState": sub["clientState"],
        "tenantId": env["GRAPH_TENANT_ID"],
    }
    data.update(override.pop("data", {}))
    event = {
        "id": str(uuid.uuid4()),
        "type": "Microsoft.Graph.MessageCreated",
        "source": f"/tenants/{env['GRAPH_TENANT_ID']}/applications/{env['GRAPH_CLIENT_ID']}",
        "subject": path,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "specversion": "1.0",
        "data": data,
    }
    event.update(override)
    return event


@contextmanager
def graph_events_dropped(stack: Stack) -> Iterator[None]:
    """The partner topic deactivated: Event Grid drops Graph's events, and the test queues its own."""
    stack.control("POST", f"{topic_path(stack)}/deactivate")
    try:
        yield
    finally:
        stack.control("POST", f"{topic_path(stack)}/activate")


def sub_for(stack: Stack, mailbox: str) -> dict[str, Any]:
    found = [s for s in subscriptions(stack) if s["resource"].startswith(f"users/{mailbox}/")]
    assert len(found) == 1, subscriptions(stack)
    return found[0]


def three_mails(stack: Stack, mailbox: str, label: str) -> list[Delivered]:
    return [
        deliver(
            stack,
            mailbox,
            "Inbox",
            f"{label} {n}",
            [file_attachment(f"{label}-{n}.pdf", b"%PDF-1.4", "application/pdf")],
        )
        for n in range(3)
    ]


def wait_for_manifest(reader: BlobReader, mail: Delivered, timeout: float = 60) -> dict[str, Any]:
    return dict(wait_until(lambda: reader.manifest(mail.prefix), timeout, f"the manifest of {mail.subject}"))


def message_requests(stack: Stack, message_id: str) -> list[dict[str, Any]]:
    """Graph requests naming the message by any id it had."""
    return list(stack.control("GET", f"/_sim/requests?messageId={quote(message_id, safe='')}")["requests"])


def test_subscriptions_name_the_partner_topic_and_the_webhooks_refuse(eg: Stack):
    env = eg.env
    expected = (
        f"EventGrid:?azuresubscriptionid={env['EVENTGRID_AZURE_SUBSCRIPTION_ID']}"
        f"&resourcegroup={env['EVENTGRID_RESOURCE_GROUP']}&partnertopic={env['EVENTGRID_PARTNER_TOPIC']}"
        f"&location={env['EVENTGRID_LOCATION']}"
    )
    subs = subscriptions(eg)
    assert len(subs) == len(MAILBOXES)
    for sub in subs:
        assert sub["notificationUrl"] == expected and sub["lifecycleNotificationUrl"] == expected
        assert sub["clientState"]
    topics = eg.control("GET", "/_sim/eventgrid/partnerTopics")["value"]
    assert [(t["name"], t["activationState"]) for t in topics] == [(env["EVENTGRID_PARTNER_TOPIC"], "Activated")]
    # Nothing accepts mail from the internet: each webhook refuses every call, the handshake too, and queues nothing.
    for route in ("notifications", "lifecycle"):
        for query in ("&validationToken=probe", ""):
            answer = httpx.post(eg.webhook_url(route) + query, json={"value": [{"x": 1}]}, timeout=30)
            assert answer.status_code == 403 and "Event Grid" in answer.text
    assert queue_length(eg, CHANGES_QUEUE) == 0 and queue_length(eg, LIFECYCLE_QUEUE) == 0


def test_mail_through_event_grid_lands_once_despite_duplicates(eg: Stack, reader: BlobReader):
    take_handoffs(eg)
    eg.control("POST", "/_sim/delivery", {"duplicates": 3})
    try:
        mails = three_mails(eg, "invoices@contoso.com", "EG")
        for mail in mails:
            manifest = wait_for_manifest(reader, mail)
            assert manifest["messageKey"] == message_key(mail.message_id)
    finally:
        eg.control("POST", "/_sim/delivery", {"duplicates": 1})
    drained(eg, "the duplicates to be taken")
    handoffs = take_handoffs(eg)
    keys = sorted(h["messageKey"] for h in handoffs if h["messageKey"] in {message_key(m.message_id) for m in mails})
    assert keys == sorted(message_key(m.message_id) for m in mails), "each mail handed off exactly once"
    delivered = [r for r in eg.control("GET", "/_sim/eventgrid/records")["value"] if r["outcome"] == "delivered"]
    assert len(delivered) >= 9


def test_reordered_duplicate_events_written_plain_or_base64(eg: Stack, reader: BlobReader):
    take_handoffs(eg)
    with graph_events_dropped(eg):
        mails = three_mails(eg, "ap@contoso.com", "Reordered")
    sub = sub_for(eg, "ap@contoso.com")
    events = [graph_event(eg, sub, m.message_id) for m in mails]
    # Last first, each twice, once base64 (as Event Grid writes) and once as plain JSON (as older docs say).
    for event in reversed(events):
        put_event(eg, event)
        put_event(eg, event, encoded=False)
    for mail in mails:
        wait_for_manifest(reader, mail)
    drained(eg, "the events to be taken")
    # host.json's messageEncoding none: the host passes both forms on, and the worker reads both; none is parked.
    assert queue_length(eg, "mail-events-poison") == 0
    keys = sorted(h["messageKey"] for h in take_handoffs(eg))
    assert keys == sorted(message_key(m.message_id) for m in mails), "each mail handed off exactly once"


def test_event_grid_writing_plain_json_parks_nothing(eg: Stack, reader: BlobReader):
    """The other form through Graph and Event Grid themselves (the simulator's test-only switch)."""
    eg.control("POST", "/_sim/eventgrid/options", {"testOnlyPlainQueueMessages": True})
    try:
        mails = three_mails(eg, "invoices@contoso.com", "Plain")
        for mail in mails:
            wait_for_manifest(reader, mail)
    finally:
        eg.control("POST", "/_sim/eventgrid/options", {"testOnlyPlainQueueMessages": False})
    drained(eg, "the plain events to be taken")
    assert queue_length(eg, "mail-events-poison") == 0


def test_an_app_message_written_before_the_upgrade_is_still_taken(eg: Stack, reader: BlobReader):
    """A change message as the app (and a host decoding base64) wrote them before messageEncoding none: base64."""
    with graph_events_dropped(eg):
        pdf = file_attachment("before.pdf", b"%PDF-1.4 before", "application/pdf")
        mail = deliver(eg, "ap@contoso.com", "Inbox", "Queued before the upgrade", [pdf])
    sub = sub_for(eg, "ap@contoso.com")
    resource = f"Users/{sub['mailboxId']}/Messages/{mail.message_id}"
    now = datetime.now(UTC).isoformat()
    change = ChangeMessage(MailboxFolder("ap@contoso.com").key, sub["id"], "created", mail.message_id, resource, now)
    with QueueClient.from_connection_string(
        eg.storage_connection_string, CHANGES_QUEUE, message_encode_policy=TextBase64EncodePolicy()
    ) as client:
        client.send_message(change.to_json())
    wait_for_manifest(reader, mail)
    drained(eg, "the change to be taken")
    assert queue_length(eg, f"{CHANGES_QUEUE}-poison") == 0


def test_forged_events_cause_no_graph_request_and_no_blob(eg: Stack, reader: BlobReader):
    with graph_events_dropped(eg):
        pdf = file_attachment("target.pdf", b"%PDF-1.4 target", "application/pdf")
        mail = deliver(eg, "invoices@contoso.com", "Inbox", "Forged target", [pdf])
    sub = sub_for(eg, "invoices@contoso.com")
    other_tenant = str(uuid.uuid4())
    forged = [
        graph_event(eg, sub, mail.message_id, data={"clientState": sub["clientState"][:-2] + "xx"}),
        graph_event(eg, sub, mail.message_id, data={"subscriptionId": str(uuid.uuid4())}),
        graph_event(
            eg,
            sub,
            mail.message_id,
            source=f"/tenants/{other_tenant}/applications/{eg.env['GRAPH_CLIENT_ID']}",
            data={"tenantId": other_tenant},
        ),
        graph_event(
            eg, sub, mail.message_id, source=f"/tenants/{eg.env['GRAPH_TENANT_ID']}/applications/{uuid.uuid4()}"
        ),
    ]
    eg.control("DELETE", "/_sim/requests")
    for event in forged:
        put_event(eg, event)
    drained(eg, "the forged events to be taken")
    time.sleep(2)
    assert message_requests(eg, mail.message_id) == []
    assert reader.names(mail.prefix) == []
    # The same event with the real clientState is taken: the forged ones were refused for what they forged.
    put_event(eg, graph_event(eg, sub, mail.message_id))
    wait_for_manifest(reader, mail)


def _state(stack: Stack, folder: MailboxFolder) -> tuple[FolderState, Any]:
    blobs = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    blob = blobs.get_blob_client("mail-ingest-state", f"folders/{folder.key}.json")
    return FolderState.from_dict(json.loads(blob.download_blob().readall())), blob


def test_reauthorization_and_removal_through_event_grid(eg: Stack):
    state, blob = _state(eg, INBOX)
    state.renewed_at = graph_time(datetime.now(UTC) - timedelta(minutes=11))
    state.last_lifecycle_at = None
    blob.upload_blob(json.dumps(asdict(state)), overwrite=True)
    eg.control("DELETE", "/_sim/requests")
    eg.control("POST", "/_sim/lifecycle", {"subscriptionId": state.subscription_id, "event": "reauthorizationRequired"})
    after = wait_until(lambda: (s := _state(eg, INBOX)[0]).last_lifecycle_at and s, 30, "reauthorization")
    assert after.last_lifecycle_event == "reauthorizationRequired"
    calls = [(r["method"], r["route"]) for r in eg.control("GET", "/_sim/requests")["requests"]]
    assert ("PATCH", "/v1.0/subscriptions/{id}") in calls
    old = after.subscription_id
    eg.control("POST", "/_sim/lifecycle", {"subscriptionId": old, "event": "subscriptionRemoved"})
    recreated = wait_until(
        lambda: (s := _state(eg, INBOX)[0]).subscription_id not in (None, old) and s, 30, "the recreation"
    )
    assert recreated.subscription_id in {s["id"] for s in subscriptions(eg)}


def parked_in(stack: Stack, poison: str) -> list[Parked]:
    try:
        with QueueClient.from_connection_string(stack.storage_connection_string, poison) as client:
            return [unwrap(m.id, None, m.content, m.inserted_on) for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def test_a_poison_event_is_parked_with_its_reason(eg: Stack):
    put_event(eg, {"specversion": "1.0", "id": "x", "type": "Contoso.Other", "source": "/x", "data": {}})
    poison = "mail-events-poison"

    def event_x() -> list[Parked]:
        return [p for p in parked_in(eg, poison) if p.original.startswith("{") and json.loads(p.original)["id"] == "x"]

    found = wait_until(event_x, 30, "the parked event")
    assert found[0].reason is not None and found[0].reason.startswith("not a Graph event: event source is not")


@pytest.mark.parametrize("queue_name", [EVENTS, CHANGES_QUEUE])
def test_a_message_neither_json_nor_base64_of_json_is_parked_at_once(eg: Stack, queue_name: str):
    text = f"neither JSON nor base64 {uuid.uuid4()}"
    with queue(eg, queue_name) as client:
        client.send_message(text)
    found = wait_until(
        lambda: [p for p in parked_in(eg, f"{queue_name}-poison") if p.original == text], 30, "the parked message"
    )
    assert found[0].reason == "UnreadableQueueMessage: queue message is neither JSON nor base64 of JSON"
    drained(eg, "the message to be taken")


def test_undeliverable_events_are_dead_lettered(eg: Stack):
    """The queue Event Grid delivers to is gone: retried on Event Grid's schedule, then dead-lettered."""
    eg.connect_eventgrid(maxDeliveryAttempts=2)
    eg.control(
        "PUT",
        f"{topic_path(eg)}/eventSubscriptions/{EVENT_SUBSCRIPTION}",
        {
            "connectionString": eg.storage_connection_string,
            "queueName": "no-such-queue",
            "deadLetterContainer": DEAD_LETTER_CONTAINER,
            "maxDeliveryAttempts": 2,
        },
    )
    try:
        deliver(eg, "ap@contoso.com", "Inbox", "Undeliverable", [])
        blobs = BlobServiceClient.from_connection_string(eg.storage_connection_string)
        container = blobs.get_container_client(DEAD_LETTER_CONTAINER)
        names = wait_until(lambda: list(container.list_blob_names()), 30, "a dead-letter blob")
        assert names[0].startswith(f"{EVENT_SUBSCRIPTION.upper()}/")
        letters = json.loads(container.download_blob(names[0]).readall())
        assert letters[0]["type"] == "Microsoft.Graph.MessageCreated"
        # The CloudEvents 1.0 schema's dead-letter attributes ("Event Grid message delivery and retry").
        assert letters[0]["deadletterreason"] == "MaxDeliveryAttemptsExceeded" and letters[0]["deliveryattempts"] == 2
        assert letters[0]["lastdeliveryoutcome"] == "NotFound" and letters[0]["publishtime"]
        status = cli(eg, "status", "--json")
        assert json.loads(status.stdout)["eventgrid"]["deadLettered"] >= 1
        assert "dead letters in mail-events-deadletter:" in cli(eg, "status").stdout
    finally:
        eg.connect_eventgrid()


def grid_check(stack: Stack) -> subprocess.CompletedProcess[str]:
    """`check` in eventgrid mode, reading ARM (the simulator's) with the operator's sign-in, as `--app` does."""
    arm = ("--management-url", stack.sim_url, "--management-scope", "https://management.azure.com/.default")
    return cli(stack, *arm, "check")


@pytest.fixture
def reader_role(eg: Stack) -> None:
    principal = eg.control("GET", f"/_sim/apps/{eg.env['GRAPH_CLIENT_ID']}")["servicePrincipalId"]
    env = eg.env
    group = f"/subscriptions/{env['EVENTGRID_AZURE_SUBSCRIPTION_ID']}/resourceGroups/{env['EVENTGRID_RESOURCE_GROUP']}"
    eg.control("POST", "/_sim/arm/roleAssignments", {"principalId": principal, "role": "Reader", "scope": group})


def test_check_reads_the_azure_side_authorized_and_activated(eg: Stack, reader_role: None):
    done = grid_check(eg)
    assert done.returncode == 0, done.stdout + done.stderr
    topic = eg.env["EVENTGRID_PARTNER_TOPIC"]
    assert "✓ Event Grid partner authorization: MicrosoftGraphAPI authorized until" in done.stdout
    assert f"✓ Event Grid partner topic: partner topic {topic} activated" in done.stdout
    assert f"✓ Event Grid event subscription: event subscription {EVENT_SUBSCRIPTION} delivers to queue" in done.stdout


def test_check_names_the_activate_command_for_a_topic_not_activated(eg: Stack, reader_role: None):
    env = eg.env
    eg.control("POST", f"{topic_path(eg)}/deactivate", None)
    try:
        done = grid_check(eg)
    finally:
        eg.control("POST", f"{topic_path(eg)}/activate", None)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"partner topic {env['EVENTGRID_PARTNER_TOPIC']} is Deactivated" in done.stdout
    command = (
        f"az eventgrid partner topic activate --subscription {env['EVENTGRID_AZURE_SUBSCRIPTION_ID']} "
        f"--resource-group {env['EVENTGRID_RESOURCE_GROUP']} --name {env['EVENTGRID_PARTNER_TOPIC']}"
    )
    assert f"    fix: {command}\n" in done.stdout
    assert "✓ Event Grid partner authorization" in done.stdout and "authorize --" not in done.stdout


def test_check_names_the_authorize_command_once_the_authorization_expired(eg: Stack, reader_role: None):
    env = eg.env
    group = f"{env['EVENTGRID_AZURE_SUBSCRIPTION_ID']}/{env['EVENTGRID_RESOURCE_GROUP']}"
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    partner = {"partnerName": "MicrosoftGraphAPI", "authorizationExpirationTimeInUtc": soon}
    eg.control("PUT", f"/_sim/eventgrid/partnerConfigurations/{group}", {"authorizedPartnersList": [partner]})
    try:
        time.sleep(2.5)
        done = grid_check(eg)
    finally:
        authorize_graph(eg.control, env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "MicrosoftGraphAPI's authorization expired" in done.stdout
    command = (
        f"az eventgrid partner configuration authorize --subscription {env['EVENTGRID_AZURE_SUBSCRIPTION_ID']} "
        f"--resource-group {env['EVENTGRID_RESOURCE_GROUP']} --partner-name MicrosoftGraphAPI"
    )
    assert f"    fix: {command}\n" in done.stdout
    assert "✓ Event Grid partner topic" in done.stdout
