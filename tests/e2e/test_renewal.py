"""Subscriptions over days of simulated time: renewal at each folder's point, expiry, 409, a lifetime cap, reauthorize.

The simulator's clock is moved; the app's timer runs in its own process with its clock moved by as much,
as a second instance of the app would. This stack is this module's own, since its clock only goes forward.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from local.mailcheck import BlobReader, check_files, deliver, file_attachment, subscriptions, wait_for_manifests
from local.stack import Stack, StackConfig, maintain_at
from shared.pipeline.layout import graph_time, parse_graph_time
from shared.settings import MailboxFolder
from shared.sources.graph.state import FolderState
from shared.sources.graph.subscriptions import renewal_due

INBOX = MailboxFolder("orders@contoso.com", "Inbox")
NOTES = MailboxFolder("orders@contoso.com", "Inbox/Delivery notes")
WEEK = 10_080  # minutes


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = StackConfig(
        mailboxes=(str(INBOX), str(NOTES)),
        data_dir=Path(tmp_path_factory.mktemp("renewal")),
        # The dev host's own timer stays out of the way (1 January): each test runs the timer itself.
        app_settings={"MAINTAIN_SCHEDULE": "0 0 0 1 1 *", "RECONCILE_MINUTES": "0"},
    )
    with Stack(config) as running:
        assert maintain(running) == {str(INBOX): "created", str(NOTES): "created"}
        yield running


@pytest.fixture
def reader(stack: Stack) -> Iterator[BlobReader]:
    blob_reader = BlobReader(stack)
    yield blob_reader
    blob_reader.close()


def maintain(stack: Stack, env: dict[str, str] | None = None) -> dict[str, str]:
    """One timer run in its own process, its clock moved as far as the simulator's."""
    return maintain_at(env or stack.env, stack.control("GET", "/_sim/clock")["offsetSeconds"])


def advance(stack: Stack, minutes: float) -> datetime:
    return parse_graph_time(stack.control("POST", "/_sim/clock", {"advanceSeconds": minutes * 60})["now"])


def sim_now(stack: Stack) -> datetime:
    return parse_graph_time(stack.control("GET", "/_sim/clock")["now"])


def subscription_of(stack: Stack, folder: MailboxFolder) -> dict[str, Any] | None:
    state = load_state(stack, folder)
    found = [s for s in subscriptions(stack) if s["id"] == state.subscription_id]
    return found[0] if found else None


def state_container(stack: Stack) -> ContainerClient:
    return BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        "mail-ingest-state"
    )


def load_state(stack: Stack, folder: MailboxFolder) -> FolderState:
    blob = state_container(stack).get_blob_client(f"folders/{folder.key}.json")
    return FolderState.from_dict(json.loads(blob.download_blob().readall()))


def save_state(stack: Stack, state: FolderState) -> None:
    blob = state_container(stack).get_blob_client(f"folders/{state.folder_key}.json")
    blob.upload_blob(json.dumps(asdict(state)), overwrite=True)


def requests(stack: Stack) -> list[tuple[str, str]]:
    return [(r["method"], r["route"]) for r in stack.control("GET", "/_sim/requests")["requests"]]


def subscription_calls(stack: Stack) -> list[tuple[str, str]]:
    return [(m, r) for m, r in requests(stack) if "/subscriptions" in r]


def minutes_left(stack: Stack, subscription: dict[str, Any]) -> float:
    return (parse_graph_time(subscription["expirationDateTime"]) - sim_now(stack)).total_seconds() / 60


def wait_for_lifecycle(stack: Stack, folder: MailboxFolder, timeout: float = 30) -> FolderState:
    """The record once the app has handled a lifecycle event (the test cleared `last_lifecycle_at`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = load_state(stack, folder)
        if state.last_lifecycle_at:
            return state
        time.sleep(0.2)
    raise AssertionError(f"the lifecycle event for {folder} was not handled within {timeout} s")


# First, while the simulator's clock still agrees with the dev host's: the dev host handles the event.
def test_reauthorization_required_patches_unless_renewed_within_ten_minutes(stack: Stack):
    state = load_state(stack, INBOX)
    assert state.subscription_id is not None
    # Renewed just now (by the app's own clock): the event is answered without a PATCH.
    state.renewed_at = graph_time(datetime.now(UTC))
    state.last_lifecycle_at = None
    save_state(stack, state)
    stack.control("DELETE", "/_sim/requests")
    stack.control(
        "POST", "/_sim/lifecycle", {"subscriptionId": state.subscription_id, "event": "reauthorizationRequired"}
    )
    assert wait_for_lifecycle(stack, INBOX).last_lifecycle_event == "reauthorizationRequired"
    assert subscription_calls(stack) == []
    # Renewed 11 minutes ago: reauthorized by a PATCH, which also renews.
    state = load_state(stack, INBOX)
    state.renewed_at = graph_time(datetime.now(UTC) - timedelta(minutes=11))
    state.last_lifecycle_at = None
    save_state(stack, state)
    stack.control(
        "POST", "/_sim/lifecycle", {"subscriptionId": state.subscription_id, "event": "reauthorizationRequired"}
    )
    after = wait_for_lifecycle(stack, INBOX)  # saved once the PATCH was answered
    assert subscription_calls(stack) == [("PATCH", "/v1.0/subscriptions/{id}")]
    assert after.subscription_id == state.subscription_id


def due_minutes(stack: Stack, folder: MailboxFolder, lifetime: int = WEEK) -> float:
    """Minutes of simulated time until the folder's renewal point (between 3/4 and 1/2 of its lifetime left)."""
    state = load_state(stack, folder)
    assert state.expiration is not None
    due = renewal_due(parse_graph_time(state.expiration), lifetime, folder.key)
    return (due - sim_now(stack)).total_seconds() / 60


def test_renewed_at_the_folders_point_not_before(stack: Stack):
    stack.control("DELETE", "/_sim/requests")
    dues = [due_minutes(stack, folder) for folder in (INBOX, NOTES)]
    assert all(WEEK / 4 - 5 < due <= WEEK / 2 for due in dues)
    advance(stack, min(dues) - 30)  # neither is due
    assert set(maintain(stack).values()) == {"kept"}
    assert subscription_calls(stack) == []
    advance(stack, max(dues) - min(dues) + 60)  # both are due
    assert set(maintain(stack).values()) == {"renewed"}
    assert subscription_calls(stack) == [("PATCH", "/v1.0/subscriptions/{id}")] * 2
    for folder in (INBOX, NOTES):
        renewed = subscription_of(stack, folder)
        assert renewed is not None and WEEK - 5 < minutes_left(stack, renewed) <= WEEK


def test_an_expired_subscription_is_recreated_and_mail_of_the_gap_ingested(stack: Stack, reader: BlobReader):
    before = load_state(stack, INBOX).subscription_id
    advance(stack, WEEK + 60)  # both subscriptions lapse: Graph forgets them and notifies nobody
    assert subscriptions(stack) == []
    mail = deliver(
        stack,
        INBOX.mailbox,
        "Inbox",
        "sent while unsubscribed",
        [file_attachment("gap.pdf", b"%PDF gap", "application/pdf")],
    )
    assert set(maintain(stack).values()) == {"recreated"}  # the PATCH answered 404
    after = subscription_of(stack, INBOX)
    assert after is not None and after["id"] != before
    found = wait_for_manifests(reader, [mail], timeout=60)
    assert mail.message_id in found, "the resync after the recreation did not bring the mail in"
    assert all(c.ok for c in check_files(reader, mail, *found[mail.message_id]))


def test_a_conflict_with_our_own_subscription_adopts_it(stack: Stack):
    mine = load_state(stack, NOTES)
    state_container(stack).delete_blob(f"folders/{NOTES.key}.json")  # the record is lost, Graph's is not
    stack.control("DELETE", "/_sim/requests")
    assert maintain(stack)[str(NOTES)] == "adopted"
    assert load_state(stack, NOTES).subscription_id == mine.subscription_id
    calls = subscription_calls(stack)
    assert ("DELETE", "/v1.0/subscriptions/{id}") not in calls
    assert calls.count(("POST", "/v1.0/subscriptions")) == 1  # the create that met the 409, no other


def test_a_conflict_with_a_foreign_subscription_replaces_it(stack: Stack):
    mine = load_state(stack, NOTES)
    assert mine.subscription_id is not None
    stack.graph("DELETE", f"subscriptions/{mine.subscription_id}")
    foreign = stack.graph("POST", "subscriptions", {
        "changeType": "created",
        "notificationUrl": stack.webhook_url("notifications"),
        "lifecycleNotificationUrl": stack.webhook_url("lifecycle"),
        "resource": f"users/{NOTES.mailbox}/mailFolders/{mine.folder_id}/messages",
        "expirationDateTime": graph_time(sim_now(stack) + timedelta(days=2)),
        "clientState": "v1.0123456789abcdef.0011223344556677.not-a-mac-made-with-our-key",
    })  # fmt: skip
    state_container(stack).delete_blob(f"folders/{NOTES.key}.json")
    stack.control("DELETE", "/_sim/requests")
    assert maintain(stack)[str(NOTES)] == "created"
    now = load_state(stack, NOTES).subscription_id
    assert now not in (None, foreign["id"])
    assert foreign["id"] not in {s["id"] for s in subscriptions(stack)}
    assert ("DELETE", "/v1.0/subscriptions/{id}") in subscription_calls(stack)


@pytest.fixture
def lifetime_cap(stack: Stack) -> Iterator[int]:
    stack.control("POST", "/_sim/options", {"subscriptionMaxMinutes": 4230})
    try:
        yield 4230
    finally:
        stack.control("POST", "/_sim/options", {"subscriptionMaxMinutes": None})


def test_a_smaller_lifetime_cap_named_by_graph_is_used(stack: Stack, lifetime_cap: int):
    # INBOX is renewed (PATCH beyond the cap → 400 naming it → PATCH with it); NOTES is created anew.
    inbox = load_state(stack, INBOX)
    assert inbox.expiration is not None
    advance(stack, (parse_graph_time(inbox.expiration) - sim_now(stack)).total_seconds() / 60 - WEEK / 2 + 30)
    stack.graph("DELETE", f"subscriptions/{load_state(stack, NOTES).subscription_id}")
    state_container(stack).delete_blob(f"folders/{NOTES.key}.json")
    assert maintain(stack) == {str(INBOX): "renewed", str(NOTES): "created"}
    for folder in (INBOX, NOTES):
        state = load_state(stack, folder)
        assert state.lifetime_cap_minutes == lifetime_cap
        subscription = subscription_of(stack, folder)
        assert subscription is not None and lifetime_cap - 5 < minutes_left(stack, subscription) <= lifetime_cap
    # The cap is remembered: renewal at the folder's point of its lifetime, asking for no more than it.
    stack.control("DELETE", "/_sim/requests")
    dues = [due_minutes(stack, folder, lifetime_cap) for folder in (INBOX, NOTES)]
    advance(stack, min(dues) - 30)
    assert set(maintain(stack).values()) == {"kept"}
    advance(stack, max(dues) - min(dues) + 60)
    assert set(maintain(stack).values()) == {"renewed"}
    statuses = [r["status"] for r in stack.control("GET", "/_sim/requests")["requests"] if r["method"] == "PATCH"]
    assert statuses == [200, 200]  # no 400 on the way


def test_a_changed_webhook_url_recreates_the_subscriptions(stack: Stack):
    before = {load_state(stack, f).subscription_id for f in (INBOX, NOTES)}
    # The function key rotated: the app's setting now holds another key the host accepts.
    rotated = {**stack.env, "WEBHOOK_FUNCTION_KEY": stack.keys.master}
    assert set(maintain(stack, rotated).values()) == {"recreated"}
    now = subscriptions(stack)
    assert len(now) == 2 and before.isdisjoint(s["id"] for s in now)  # the old ones are deleted
    for sub in now:
        assert sub["notificationUrl"].endswith(f"?code={stack.keys.master}")
        assert sub["lifecycleNotificationUrl"].endswith(f"?code={stack.keys.master}")
    record = state_container(stack).get_blob_client(f"folders/{INBOX.key}.json").download_blob().readall()
    assert stack.keys.master.encode() not in record  # a fingerprint of the URLs, not the key
    assert set(maintain(stack, rotated).values()) == {"kept"}
    assert set(maintain(stack).values()) == {"recreated"}  # and back
