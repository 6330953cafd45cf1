"""The product end to end: Graph simulator → webhook on the dev host → queue → ingest → Blob Storage."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from typing import Any

import httpx
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy, QueueClient

from local.mailcheck import (
    BlobReader,
    change_notification,
    check_files,
    deliver,
    file_attachment,
    generated_attachment,
    subscriptions,
    wait_for_manifests,
)
from local.stack import Stack
from shared.pipeline.layout import message_key

from .conftest import MAILBOXES, wait_until


def requests_log(stack: Stack) -> list[dict[str, Any]]:
    return list(stack.control("GET", "/_sim/requests")["requests"])


def test_timer_creates_one_subscription_per_folder_and_keeps_them(stack: Stack):
    subs = subscriptions(stack)
    assert len(subs) == len(MAILBOXES)
    for sub in subs:
        assert sub["changeType"] == "created"
        # The webhook's function key is in both URLs (the simulator's view of the subscription).
        assert sub["notificationUrl"] == stack.webhook_url("notifications")
        assert sub["lifecycleNotificationUrl"] == stack.webhook_url("lifecycle")
        assert sub["notificationUrl"].endswith(f"?code={stack.env['WEBHOOK_FUNCTION_KEY']}")
        assert "/mailFolders/" in sub["resource"] and sub["resource"].startswith("users/")
        assert len(sub["clientState"]) <= 128
    assert len({s["clientState"] for s in subs}) == len(subs)
    before = {s["id"] for s in subs}
    assert stack.run_function("maintain").status_code == 200
    assert {s["id"] for s in subscriptions(stack)} == before


def test_mail_with_attachments_lands_in_blob_storage(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "Invoice 77", [
        file_attachment("Invoice 77.pdf", b"%PDF-1.4 invoice 77", "application/pdf"),
        file_attachment("../evil/..\\name.txt", b"hostile name", "text/plain"),
        generated_attachment("big scan.tif", 9 * 1024 * 1024 + 17, 7, "image/tiff"),
    ])  # fmt: skip
    manifests = wait_for_manifests(reader, [mail], timeout=60)
    assert mail.message_id in manifests, "no manifest written"
    manifest, seconds = manifests[mail.message_id]
    checks = check_files(reader, mail, manifest, seconds)
    assert [c.ok for c in checks] == [True, True, True]
    assert manifest["messageKey"] == message_key(mail.message_id)
    assert manifest["mailbox"] == "invoices@contoso.com" and manifest["folder"] == "Inbox"
    assert manifest["subject"] == "Invoice 77"
    assert manifest["from"] == "supplier@fabrikam.example"
    names = reader.names(mail.prefix)
    assert f"{mail.prefix}/manifest.json" in names
    assert all(n.count("/") == 5 for n in names), names  # mailbox/yyyy/MM/dd/key/file: no escape from the prefix
    assert {n.rsplit("/", 1)[1] for n in names} == {
        "Invoice 77.pdf",
        "_evil_._name.txt",
        "big scan.tif",
        "manifest.json",
    }


def test_nested_folder_of_a_shared_mailbox(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "scans@contoso.com", "Inbox/Delivery notes", "DN 5", [
        file_attachment("dn-5.pdf", b"%PDF-1.4 delivery note", "application/pdf"),
    ])  # fmt: skip
    manifests = wait_for_manifests(reader, [mail], timeout=60)
    manifest, _ = manifests[mail.message_id]
    assert manifest["folder"] == "Inbox/Delivery notes"
    assert mail.prefix.startswith("scans@contoso.com/")


def test_mail_in_an_unsubscribed_folder_is_not_ingested(stack: Stack, reader: BlobReader):
    other = deliver(stack, "scans@contoso.com", "Inbox", "not watched", [
        file_attachment("x.pdf", b"x", "application/pdf"),
    ])  # fmt: skip
    watched = deliver(stack, "scans@contoso.com", "Inbox/Delivery notes", "watched", [
        file_attachment("y.pdf", b"y", "application/pdf"),
    ])  # fmt: skip
    assert watched.message_id in wait_for_manifests(reader, [watched], timeout=60)
    assert reader.manifest(other.prefix) is None


def test_validation_handshake_through_the_dev_host(stack: Stack):
    for path in ("notifications", "lifecycle"):
        response = httpx.post(
            f"{stack.webhook_url(path)}&validationToken=Validation%3A%20Testing%20client%20application%2B%26",
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "Validation: Testing client application+&"


def _queue(stack: Stack, name: str) -> QueueClient:
    # The Functions host's queue messages are base64, as host.json's messageEncoding says.
    return QueueClient.from_connection_string(
        stack.storage_connection_string, name,
        message_encode_policy=BinaryBase64EncodePolicy(), message_decode_policy=BinaryBase64DecodePolicy(),
    )  # fmt: skip


def test_malformed_and_forged_calls_enqueue_nothing(stack: Stack):
    stack.control("DELETE", "/_sim/requests")
    url = stack.webhook_url("notifications")
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert httpx.post(url, json={"value": [{"subscriptionId": "x"}]}).status_code == 400
    forged = {
        "value": [
            {
                "subscriptionId": subscriptions(stack)[0]["id"],
                "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                "changeType": "created",
                "resource": "Users/x/Messages/forged",
                "tenantId": stack.env["GRAPH_TENANT_ID"],
                "clientState": "v1.0123456789abcdef.0123456789abcdef." + "A" * 43,
                "resourceData": {"id": "forged"},
            }
        ]
    }
    assert httpx.post(url, json=forged).status_code == 202
    time.sleep(2)
    fetched = [r for r in requests_log(stack) if "forged" in r["path"]]
    assert fetched == []


def test_an_item_for_a_subscription_the_app_does_not_hold_is_dropped(
    stack: Stack, reader: BlobReader, notifications_held: None
):
    """Its clientState verifies (copied from the folder's real subscription), its subscription id is not
    the app's: no Graph request and no blob for its message, while a genuine item in the same call is taken."""
    box = "invoices@contoso.com"
    target = deliver(
        stack, box, "Inbox", "only by a forged item", [file_attachment("t.pdf", b"%PDF t", "application/pdf")]
    )
    genuine = deliver(stack, box, "Inbox", "genuine", [file_attachment("g.pdf", b"%PDF g", "application/pdf")])
    sub = next(s for s in subscriptions(stack) if s["resource"].startswith("users/invoices@"))
    forged = change_notification({**sub, "id": str(uuid.uuid4())}, stack.env["GRAPH_TENANT_ID"], target.message_id)
    real = change_notification(sub, stack.env["GRAPH_TENANT_ID"], genuine.message_id)
    stack.control("DELETE", "/_sim/requests")
    # Graph's way: a 503 (the folder's record was read a moment ago, too recently for a verdict) is sent again.
    response = wait_until(
        lambda: (
            (
                r := httpx.post(stack.webhook_url("notifications"), json={"value": forged["value"] + real["value"]})
            ).status_code
            != 503
            and r
        ),
        15,
        "a verdict on the forged item",
    )
    assert response.status_code == 202
    assert genuine.message_id in wait_for_manifests(reader, [genuine], timeout=60)
    time.sleep(1)
    assert stack.control("GET", f"/_sim/requests?messageId={target.message_id}")["requests"] == []
    assert reader.names(target.prefix) == []
    log = (stack.data_dir / "devhost.log").read_text()
    assert "not the app's subscription for this folder" in log


def test_a_just_created_subscriptions_first_notification_is_accepted(stack: Stack, reader: BlobReader):
    """The webhook has seen the folder's old subscription; another instance (the lifecycle worker) replaces
    it; the new subscription's first notification is taken at once, not refused as unknown."""
    box = "scans@contoso.com"
    folder = "Inbox/Delivery notes"
    before = deliver(stack, box, folder, "old sub", [file_attachment("a.pdf", b"%PDF a", "application/pdf")])
    assert before.message_id in wait_for_manifests(reader, [before], timeout=60)
    old = next(s for s in subscriptions(stack) if s["resource"].startswith("users/scans@"))
    stack.control("POST", "/_sim/lifecycle", {"subscriptionId": old["id"], "event": "subscriptionRemoved"})
    new = wait_until(
        lambda: next((s for s in subscriptions(stack) if s["resource"] == old["resource"]), None),
        30,
        "the replacement subscription",
    )
    after = deliver(stack, box, folder, "new sub", [file_attachment("b.pdf", b"%PDF b", "application/pdf")])
    assert after.message_id in wait_for_manifests(reader, [after], timeout=60)
    log = (stack.data_dir / "devhost.log").read_text()
    accepted = [line for line in log.splitlines() if "notification.accepted" in line and new["id"] in line]
    assert any(f"message_key={message_key(after.message_id)}" in line for line in accepted), accepted
    assert not [line for line in log.splitlines() if "notification.refused" in line and new["id"] in line]


def test_repeated_notification_writes_nothing_new(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "twice", [
        file_attachment("once.pdf", b"%PDF once", "application/pdf"),
    ])  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail], timeout=60)[mail.message_id]
    sub = next(s for s in subscriptions(stack) if s["resource"].startswith("users/invoices@"))
    body = change_notification(sub, stack.env["GRAPH_TENANT_ID"], mail.message_id)
    stack.control("DELETE", "/_sim/requests")
    response = httpx.post(stack.webhook_url("notifications"), json=body)
    assert response.status_code == 202
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any("/messages/" in r["path"] for r in requests_log(stack)):
            break
        time.sleep(0.2)
    time.sleep(1)
    assert reader.manifest(mail.prefix) == manifest
    uploads = [r for r in requests_log(stack) if r["path"].endswith("/$value")]
    assert uploads == []  # the message was fetched, found done, and no attachment downloaded again


def test_throttled_graph_is_retried_after_retry_after(stack: Stack, reader: BlobReader):
    fault = {"method": "GET", "path": r"/attachments/.*/\$value$", "status": 429, "retryAfter": 1, "count": 2}
    stack.control("POST", "/_sim/faults", fault)
    try:
        mail = deliver(stack, "invoices@contoso.com", "Inbox", "throttled", [
            file_attachment("t.pdf", b"%PDF throttled", "application/pdf"),
        ])  # fmt: skip
        manifest, seconds = wait_for_manifests(reader, [mail], timeout=60)[mail.message_id]
    finally:
        stack.control("DELETE", "/_sim/faults")
    assert [c.ok for c in check_files(reader, mail, manifest, seconds)] == [True]


def test_failed_download_is_retried_by_the_queue(stack: Stack, reader: BlobReader):
    # A 500 is not retried by the Graph client: the queue message fails and comes back a second later.
    fault = {"method": "GET", "path": r"/attachments/.*/\$value$", "status": 500, "count": 1}
    stack.control("POST", "/_sim/faults", fault)
    try:
        mail = deliver(stack, "invoices@contoso.com", "Inbox", "retried", [
            file_attachment("a.pdf", b"%PDF a", "application/pdf"),
            file_attachment("b.pdf", b"%PDF b", "application/pdf"),
        ])  # fmt: skip
        manifest, seconds = wait_for_manifests(reader, [mail], timeout=60)[mail.message_id]
    finally:
        stack.control("DELETE", "/_sim/faults")
    assert [c.ok for c in check_files(reader, mail, manifest, seconds)] == [True, True]
    assert len(reader.names(mail.prefix)) == 3


def test_unreadable_queue_message_ends_in_poison_queue(stack: Stack):
    queue = _queue(stack, "mail-changes")
    poison = _queue(stack, "mail-changes-poison")
    queue.send_message(b'{"type":"change","v":1,"folder_key":"broken"}')
    deadline = time.monotonic() + 60
    found: list[str] = []
    while time.monotonic() < deadline and not found:
        with contextlib.suppress(ResourceNotFoundError):  # the poison queue appears with its first message
            found = [m.content for m in poison.peek_messages(max_messages=32) if b"broken" in m.content]
        time.sleep(0.5)
    assert found, "the broken message never reached the poison queue"


def test_subscription_removed_is_recreated(stack: Stack):
    first = subscriptions(stack)[0]
    stack.control("POST", "/_sim/lifecycle", {"subscriptionId": first["id"], "event": "subscriptionRemoved"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        current = subscriptions(stack)
        if first["id"] not in {s["id"] for s in current} and len(current) == len(MAILBOXES):
            break
        time.sleep(0.3)
    current = subscriptions(stack)
    assert first["id"] not in {s["id"] for s in current}
    assert sorted(s["resource"] for s in current) == sorted(s["resource"] for s in subscriptions(stack))
    assert len(current) == len(MAILBOXES)
    assert any(s["resource"] == first["resource"] for s in current)


def test_sha256_of_large_generated_attachment_is_checked(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "large", [
        generated_attachment("large.bin", 21 * 1024 * 1024, 3, "application/octet-stream"),
    ])  # fmt: skip
    manifest, seconds = wait_for_manifests(reader, [mail], timeout=90)[mail.message_id]
    (check,) = check_files(reader, mail, manifest, seconds)
    assert check.ok and check.size == 21 * 1024 * 1024
    entry = manifest["attachments"][0]
    assert entry["sha256"] == check.expected_sha256
    assert entry["size"] == 21 * 1024 * 1024


def test_the_function_key_stays_out_of_every_log(stack: Stack, reader: BlobReader):
    # A full round first: subscriptions validated through keyed URLs, a mail notified and ingested.
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "keyed", [
        file_attachment("keyed.pdf", b"%PDF keyed", "application/pdf"),
    ])  # fmt: skip
    assert mail.message_id in wait_for_manifests(reader, [mail], timeout=60)
    key = stack.env["WEBHOOK_FUNCTION_KEY"]
    assert stack.devhost is not None
    app_log = stack.devhost.log_file.read_text()
    assert "notification.accepted" in app_log and "ingest.done" in app_log
    # Each ingest.done says how long after its arrival at the server the mail was stored (the workbook's lag).
    lags = [int(m) for m in re.findall(r"ingest\.done .* lag_ms=(\d+)", app_log)]
    assert lags and all(0 <= lag < 10 * 60 * 1000 for lag in lags)
    assert key not in app_log
    assert key not in (stack.data_dir / "azuresim" / "azuresim.log").read_text()
