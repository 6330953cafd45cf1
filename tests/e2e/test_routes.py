"""Routes, blob index tags and the hand-off through the dev host (routes in tests/e2e/conftest.py ROUTES)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from local.mailcheck import Delivered, deliver, file_attachment, take_handoffs
from local.stack import Stack
from shared.pipeline.layout import message_key
from shared.pipeline.poison import CHANGES_QUEUE
from tests.e2e.conftest import wait_until

PDF = "application/pdf"
STATE = "mail-ingest-state"


class HandOffs:
    """Every message on the hand-off queue, taken off it as it comes (so none is counted twice)."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self.seen: list[dict[str, Any]] = []

    def of(self, key: str) -> list[dict[str, Any]]:
        self.seen += take_handoffs(self._stack)
        return [m for m in self.seen if m["id"] == key]


@pytest.fixture(scope="module")
def handoffs(stack: Stack) -> HandOffs:
    return HandOffs(stack)


@pytest.fixture(scope="module")
def blobs(stack: Stack) -> Iterator[BlobServiceClient]:
    service = BlobServiceClient.from_connection_string(stack.storage_connection_string)
    yield service
    service.close()


def read_json(blobs: BlobServiceClient, container: str, path: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(blobs.get_blob_client(container, path).download_blob().readall())
    except ResourceNotFoundError:
        return None
    return data


def done(blobs: BlobServiceClient, mail: Delivered, timeout: float = 60) -> dict[str, Any]:
    """The mail's `done/` record, once the app has finished it (manifest, hand-off, after-ingest actions)."""
    path = f"done/{mail.mailbox}/{message_key(mail.message_id)}.json"
    found: dict[str, Any] = wait_until(lambda: read_json(blobs, STATE, path), timeout, f"{mail.subject} done")
    return found


def settled(stack: Stack, orphans: int = 0) -> None:
    """Graph has delivered every notification and the workers have taken every change off the queue but
    `orphans` (messages of a killed worker, invisible until their visibility window ends)."""
    wait_until(lambda: stack.control("GET", "/_sim/delivery")["pending"] == 0, 30, "deliveries")
    changes = QueueClient.from_connection_string(stack.storage_connection_string, CHANGES_QUEUE)
    try:
        count = changes.get_queue_properties
        wait_until(lambda: (count().approximate_message_count or 0) <= orphans, 60, "the change queue to drain")
    finally:
        changes.close()


def find(blobs: BlobServiceClient, expression: str) -> set[tuple[str, str]]:
    """Find Blobs by Tags over the whole account: (container, blob name) pairs."""
    return {(str(b.container_name), b.name) for b in blobs.find_blobs_by_tags(expression)}


def test_two_senders_go_to_two_containers_in_their_own_layouts(
    stack: Stack, blobs: BlobServiceClient, handoffs: HandOffs
):
    invoice, statement = b"%PDF fabrikam invoice", b"%PDF northwind statement"
    fabrikam = deliver(
        stack, "ap@contoso.com", "Inbox", "Invoice 88", [file_attachment("Rechnung 88.pdf", invoice, PDF)],
        sender="billing@eu.fabrikam-ap.example",
    )  # fmt: skip
    northwind = deliver(
        stack, "invoices@contoso.com", "Inbox", "Statement", [file_attachment("statement.pdf", statement, PDF)],
        sender="AR@Northwind.example", to=["accounts@contoso.com"], cc=["payables@contoso.com"],
    )  # fmt: skip
    unrouted = deliver(stack, "invoices@contoso.com", "Inbox", "Unrouted", [file_attachment("u.pdf", b"%PDF u", PDF)])
    records = {mail.subject: done(blobs, mail) for mail in (fabrikam, northwind, unrouted)}

    fab_key, nw_key = message_key(fabrikam.message_id), message_key(northwind.message_id)
    month = fabrikam.received[:7]
    assert records["Invoice 88"]["prefix"] == f"eu.fabrikam-ap.example/{month}/{fab_key}"
    day = northwind.received[:10].replace("-", "/")
    assert records["Statement"]["prefix"] == f"northwind-payables/{day}/ar@northwind.example/{nw_key}"
    # Without a matching route, the standard layout in the standard container.
    assert records["Unrouted"] == {**records["Unrouted"], "prefix": unrouted.prefix, "route": "default"}

    for container, mail, content, name in (
        ("ap-fabrikam", fabrikam, invoice, "Rechnung 88.pdf"),
        ("ap-northwind", northwind, statement, "statement.pdf"),
    ):
        prefix = records[mail.subject]["prefix"]
        manifest = read_json(blobs, container, f"{prefix}/manifest.json")
        assert manifest is not None and manifest["status"] == "complete"
        assert manifest["route"] == records[mail.subject]["route"]
        (entry,) = manifest["attachments"]
        assert entry["blob"] == f"{prefix}/{name}" and entry["sha256"] == hashlib.sha256(content).hexdigest()
        assert blobs.get_blob_client(container, entry["blob"]).download_blob().readall() == content
        assert not read_json(blobs, "mail-attachments", f"{mail.prefix}/manifest.json")  # not in the default

        (message,) = handoffs.of(manifest["messageKey"])
        assert message["route"] == manifest["route"] and message["mailbox"] == mail.mailbox
        assert message["manifest"] == blobs.get_blob_client(container, f"{prefix}/manifest.json").url
        assert message["receivedDateTime"] == mail.received
        (sent,) = message["files"]
        assert sent["url"] == blobs.get_blob_client(container, entry["blob"]).url
        assert (sent["name"], sent["contentType"], sent["size"], sent["sha256"]) == (
            name, PDF, len(content), entry["sha256"]
        )  # fmt: skip
    assert len(handoffs.of(message_key(unrouted.message_id))) == 1


def test_tags_find_a_mail_and_a_route_without_listing(stack: Stack, blobs: BlobServiceClient):
    mail = deliver(
        stack, "ap@contoso.com", "Inbox", "Tagged", [file_attachment("tagged.pdf", b"%PDF tagged", PDF)],
        sender="billing@fabrikam-ap.example",
    )  # fmt: skip
    prefix = done(blobs, mail)["prefix"]
    key = message_key(mail.message_id)
    assert find(blobs, f"\"messageKey\" = '{key}'") == {
        ("ap-fabrikam", f"{prefix}/tagged.pdf"),
        ("ap-fabrikam", f"{prefix}/manifest.json"),
    }
    tags = blobs.get_blob_client("ap-fabrikam", f"{prefix}/tagged.pdf").get_blob_tags()
    assert tags == {
        "mailbox": "ap_contoso.com",
        "messageKey": key,
        "senderDomain": "fabrikam-ap.example",
        "route": "fabrikam-invoices",
        "kind": "file",
        "senderAuth": "pass",  # the simulator's Exchange Online stamped a pass
        "docType": "invoice",
    }
    manifests = find(blobs, "\"route\" = 'fabrikam-invoices' AND \"kind\" = 'manifest' AND \"docType\" = 'invoice'")
    assert ("ap-fabrikam", f"{prefix}/manifest.json") in manifests
    assert all(container == "ap-fabrikam" and name.endswith("/manifest.json") for container, name in manifests)


def test_a_skip_route_records_the_mail_and_stores_nothing(stack: Stack, blobs: BlobServiceClient, handoffs: HandOffs):
    mail = deliver(
        stack, "ap@contoso.com", "Inbox", "You won!", [file_attachment("claim.pdf", b"%PDF claim", PDF)],
        sender="winner@lottery.example",
    )  # fmt: skip
    key = message_key(mail.message_id)
    assert done(blobs, mail)["skipped"] is True
    record = read_json(blobs, STATE, f"skipped/ap@contoso.com/{key}.json")
    assert record is not None and record["route"] == "junk" and record["from"] == "winner@lottery.example"
    assert record["subject"] == "You won!" and record["receivedDateTime"] == mail.received
    assert find(blobs, f"\"messageKey\" = '{key}'") == set()
    assert handoffs.of(key) == []
    # Not marked read, not moved: AFTER_INGEST_BY_MAILBOX is for mail that was captured.
    message = stack.graph("GET", f"users/ap@contoso.com/messages/{mail.message_id}")
    assert message["isRead"] is False
    log = (stack.data_dir / "devhost.log").read_text()
    assert f"ingest.skipped mailbox=ap@contoso.com folder=Inbox message_key={key} route=junk" in log
    report = httpx.get(
        f"{stack.app_url}/api/health", headers={"x-functions-key": stack.env["WEBHOOK_FUNCTION_KEY"]}, timeout=60
    ).json()
    (folder,) = [f for f in report["folders"] if f["mailbox"] == "ap@contoso.com" and f["folder"] == "Inbox"]
    assert folder["ingest"]["last_skipped_route"] == "junk"
    assert folder["ingest"]["last_skipped_message_key"] == key
    assert "mail-ingested" in report["queues"]  # the hand-off queue's depth


def test_one_handoff_per_mail_under_duplicate_notifications(stack: Stack, blobs: BlobServiceClient, handoffs):
    stack.control("POST", "/_sim/delivery", {"duplicates": 3})
    try:
        mail = deliver(
            stack, "ap@contoso.com", "Inbox", "Thrice", [file_attachment("thrice.pdf", b"%PDF thrice", PDF)],
            sender="billing@fabrikam-ap.example",
        )  # fmt: skip
        done(blobs, mail)
    finally:
        stack.control("POST", "/_sim/delivery", {"duplicates": 1})
    stack.control("POST", f"/_sim/mail/{mail.message_id}/renotify", {"times": 2})
    settled(stack)
    assert len(handoffs.of(message_key(mail.message_id))) == 1


def test_one_handoff_after_a_crash_and_a_retry(stack: Stack, blobs: BlobServiceClient, handoffs: HandOffs):
    assert stack.devhost is not None
    # The after-ingest action (mark read) hangs, so the worker is inside it, hand-off sent, when it dies.
    stack.control("POST", "/_sim/faults", {"method": "PATCH", "path": "/messages/", "latencyMs": 60_000, "count": 1})
    try:
        mail = deliver(
            stack, "ap@contoso.com", "Inbox", "Crash", [file_attachment("crash.pdf", b"%PDF crash", PDF)],
            sender="billing@fabrikam-ap.example",
        )  # fmt: skip
        key = message_key(mail.message_id)
        wait_until(lambda: handoffs.of(key), 60, "the hand-off before the crash")
        sent = f"handoff/ap@contoso.com/{key}.json"
        wait_until(lambda: read_json(blobs, STATE, sent), 30, "the record of the hand-off")
        os.killpg(stack.devhost.pid, signal.SIGKILL)  # no clean shutdown: the worker is gone mid-message
        stack.devhost.stop()
    finally:
        stack.control("DELETE", "/_sim/faults")
    stack.devhost.start()
    # The killed worker's message stays invisible for the host's 10 minutes; Graph's next notification of
    # the mail (at least once) brings it back first.
    stack.control("POST", f"/_sim/mail/{mail.message_id}/renotify", {"times": 1})
    done(blobs, mail)
    settled(stack, orphans=1)
    assert len(handoffs.of(key)) == 1
    message = stack.graph("GET", f"users/ap@contoso.com/messages/{mail.message_id}")
    assert message["isRead"] is True  # the after-ingest action the crash interrupted was done by the retry
