"""Mail that no notification announced is found by the delta resync and ingested."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from local.mailcheck import BlobReader, check_files, deliver, file_attachment, subscriptions, wait_for_manifests
from local.stack import Stack
from shared.settings import MailboxFolder
from shared.sources.graph.messages import LifecycleMessage

PDF = "application/pdf"
INBOX = MailboxFolder("invoices@contoso.com", "Inbox")


def subscription_of(stack: Stack, folder: MailboxFolder) -> dict[str, Any]:
    (found,) = [s for s in subscriptions(stack) if s["resource"].lower().startswith(f"users/{folder.mailbox}/")]
    return found


def lifecycle_event(stack: Stack, folder: MailboxFolder, subscription_id: str, event: str) -> None:
    """A lifecycle event as the webhook queues it (the webhook's own path is tested elsewhere)."""
    queue = QueueClient.from_connection_string(
        stack.storage_connection_string, "mail-lifecycle", message_encode_policy=TextBase64EncodePolicy()
    )
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    queue.send_message(LifecycleMessage(folder.key, subscription_id, event, now).to_json())


@pytest.mark.usefixtures("notifications_held")
def test_missed_event_resyncs_the_folder(stack: Stack, reader: BlobReader):
    mails = [
        deliver(stack, INBOX.mailbox, "Inbox", f"unannounced {i}", [file_attachment(f"u{i}.pdf", b"%PDF u", PDF)])
        for i in range(3)
    ]
    lifecycle_event(stack, INBOX, subscription_of(stack, INBOX)["id"], "missed")
    found = wait_for_manifests(reader, mails, timeout=60)
    assert len(found) == 3
    for mail in mails:
        assert all(c.ok for c in check_files(reader, mail, *found[mail.message_id]))


@pytest.mark.usefixtures("notifications_held")
def test_a_removed_subscription_is_recreated_and_the_gap_resynced(stack: Stack, reader: BlobReader):
    old = subscription_of(stack, INBOX)
    stack.graph("DELETE", f"subscriptions/{old['id']}")
    mail = deliver(stack, INBOX.mailbox, "Inbox", "while unsubscribed", [file_attachment("gap.pdf", b"%PDF gap", PDF)])
    lifecycle_event(stack, INBOX, old["id"], "subscriptionRemoved")
    manifest, seconds = wait_for_manifests(reader, [mail], timeout=60)[mail.message_id]
    assert all(c.ok for c in check_files(reader, mail, manifest, seconds))
    assert subscription_of(stack, INBOX)["id"] != old["id"]


@pytest.mark.usefixtures("notifications_held")
def test_a_refused_delta_link_falls_back_to_a_full_window(stack: Stack, reader: BlobReader):
    stack.control("DELETE", "/_sim/deltatokens")
    mail = deliver(stack, INBOX.mailbox, "Inbox", "after reset", [file_attachment("r.pdf", b"%PDF reset", PDF)])
    lifecycle_event(stack, INBOX, subscription_of(stack, INBOX)["id"], "missed")
    manifest, seconds = wait_for_manifests(reader, [mail], timeout=60)[mail.message_id]
    assert all(c.ok for c in check_files(reader, mail, manifest, seconds))
