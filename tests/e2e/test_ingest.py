"""Every attachment exactly once: kinds, limits, duplicates, partial failures, after-ingest actions."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy

from local.mailcheck import (
    BlobReader,
    Delivered,
    check_files,
    deliver,
    file_attachment,
    generated_attachment,
    wait_for_manifests,
)
from local.stack import Stack
from tests.e2e.conftest import MAX_BYTES, wait_until

MB = 1024 * 1024
PDF = "application/pdf"


def graph_requests(stack: Stack, mail: Delivered) -> list[dict[str, Any]]:
    """Graph requests about one mail, each as `METHOD route` (ids shown as `{id}`)."""
    answer = stack.control("GET", f"/_sim/requests?messageId={mail.message_id}")["requests"]
    return [{**r, "route": f"{r['method']} {r['route']}"} for r in answer]


def entries(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in manifest["attachments"]}


def forwarded_invoice(invoice: bytes) -> dict[str, Any]:
    """A mail forwarded as an attachment, an invoice inside, and a mail attached to that one."""
    inner = {
        "from": "billing@fabrikam.example",
        "subject": "Delivery note",
        "attachments": [file_attachment("Lieferschein Nr. 7.pdf", b"%PDF delivery note", PDF)],
    }
    return {
        "name": "Invoice 4711",
        "kind": "item",
        "item": {
            "from": "billing@fabrikam.example",
            "subject": "Invoice 4711",
            "bodyContentType": "html",
            "body": "<p>Invoice attached <img src='cid:logo'></p>",
            "attachments": [
                file_attachment("Rechnung 4711 – März.pdf", invoice, PDF),
                file_attachment("logo.png", b"\x89PNG logo", "image/png", isInline=True, contentId="logo"),
                {"name": "Delivery note", "kind": "item", "item": inner},
            ],
        },
    }


def test_every_kind_of_attachment(stack: Stack, reader: BlobReader):
    invoice = b"%PDF-1.7 invoice 4711" * 100
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "kinds", [
        file_attachment("scan.pdf", b"%PDF scan", PDF),
        file_attachment("logo.png", b"\x89PNG signature", "image/png", isInline=True),
        file_attachment("Apple Mail.pdf", b"%PDF marked inline", PDF, isInline=True),
        {"name": "Shared folder", "kind": "reference", "url": "https://contoso.sharepoint.com/sites/ap/doc.pdf"},
        forwarded_invoice(invoice),
    ])  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    by_name = entries(manifest)
    assert manifest["status"] == "complete"
    assert by_name["logo.png"]["skipped"].startswith("inline image") and "blob" not in by_name["logo.png"]
    assert reader.sha256(by_name["Apple Mail.pdf"]["blob"])[1] == hashlib.sha256(b"%PDF marked inline").hexdigest()
    assert by_name["Shared folder"]["url"] == "https://contoso.sharepoint.com/sites/ap/doc.pdf"
    eml = by_name["Invoice 4711"]
    assert eml["kind"] == "item" and eml["file"] == "Invoice 4711.eml"
    extracted = by_name["Rechnung 4711 – März.pdf"]
    assert extracted["parent"] == "Invoice 4711.eml" and extracted["file"] == "Rechnung 4711 – März.pdf"
    assert reader.sha256(extracted["blob"])[1] == hashlib.sha256(invoice).hexdigest()
    nested = by_name["Delivery note"]
    assert nested["parent"] == "Invoice 4711.eml" and nested["file"] == "Delivery note.eml"
    note = by_name["Lieferschein Nr. 7.pdf"]
    assert note["parent"] == "Delivery note.eml" and reader.sha256(note["blob"])[0] == len(b"%PDF delivery note")
    # The inline logo inside the forwarded mail is skipped too, and every stored file is listed.
    inner_logo = [e for e in manifest["attachments"] if e["name"] == "logo.png" and e.get("parent")]
    assert inner_logo and inner_logo[0]["skipped"].startswith("inline image")
    stored = {e["blob"] for e in manifest["attachments"] if "blob" in e}
    assert set(reader.names(mail.prefix)) == stored | {f"{mail.prefix}/manifest.json"}
    blob = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_blob_client(
        "mail-attachments", extracted["blob"]
    )
    metadata = blob.get_blob_properties().metadata
    assert metadata["parent"] == "Invoice 4711.eml" and metadata["sha256"] == extracted["sha256"]
    assert metadata["originalname"] == "Rechnung 4711 %E2%80%93 M%C3%A4rz.pdf"


def test_one_graph_request_for_small_files_one_more_per_large_file(stack: Stack, reader: BlobReader):
    typical = deliver(stack, "invoices@contoso.com", "Inbox", "typical", [
        file_attachment("invoice.pdf", b"%PDF invoice" * 1000, PDF),
        file_attachment("terms.pdf", b"%PDF terms" * 1000, PDF),
    ])  # fmt: skip
    large = deliver(stack, "invoices@contoso.com", "Inbox", "large one", [
        generated_attachment("big.pdf", 6 * MB, 11, PDF),
    ])  # fmt: skip
    found = wait_for_manifests(reader, [typical, large])
    for mail in (typical, large):
        manifest, seconds = found[mail.message_id]
        assert all(c.ok for c in check_files(reader, mail, manifest, seconds))
    assert [r["route"] for r in graph_requests(stack, typical)] == ["GET /v1.0/users/{id}/messages/{id}"]
    routes = sorted(r["route"] for r in graph_requests(stack, large))
    assert routes == [
        "GET /v1.0/users/{id}/messages/{id}",
        "GET /v1.0/users/{id}/messages/{id}/attachments/{id}/$value",
    ]


def test_missing_or_empty_content_bytes_are_fetched_not_trusted(stack: Stack, reader: BlobReader):
    for mode in ("omit", "empty"):
        stack.control("POST", "/_sim/options", {"contentBytesLimit": 1000, "contentBytesOverLimit": mode})
        try:
            mail = deliver(stack, "invoices@contoso.com", "Inbox", f"contentBytes {mode}", [
                file_attachment("over.pdf", b"%PDF " * 500, PDF),
                file_attachment("under.pdf", b"%PDF small", PDF),
            ])  # fmt: skip
            manifest, seconds = wait_for_manifests(reader, [mail])[mail.message_id]
        finally:
            stack.control("POST", "/_sim/options", {"contentBytesLimit": None, "contentBytesOverLimit": "include"})
        assert [c.ok for c in check_files(reader, mail, manifest, seconds)] == [True, True]
        assert entries(manifest)["over.pdf"]["size"] == 2500
        assert sum(r["route"].endswith("/$value") for r in graph_requests(stack, mail)) == 1


def test_a_file_above_the_maximum_is_recorded_as_skipped(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "invoices@contoso.com", "Inbox", "too big", [
        generated_attachment("huge.tif", MAX_BYTES + MB, 5, "image/tiff"),
        file_attachment("cover.pdf", b"%PDF cover", PDF),
    ])  # fmt: skip
    manifest, _ = wait_for_manifests(reader, [mail])[mail.message_id]
    huge = entries(manifest)["huge.tif"]
    assert "ATTACHMENT_MAX_BYTES" in huge["skipped"] and "blob" not in huge
    assert not any(r["route"].endswith("/$value") for r in graph_requests(stack, mail))
    assert entries(manifest)["cover.pdf"]["sha256"]


def test_duplicate_and_concurrent_notifications_store_one_copy(stack: Stack, reader: BlobReader):
    stack.control("POST", "/_sim/delivery", {"duplicates": 3})
    try:
        mail = deliver(stack, "invoices@contoso.com", "Inbox", "thrice", [
            file_attachment("a.pdf", b"%PDF a", PDF),
            generated_attachment("b.pdf", 5 * MB, 7, PDF),
            forwarded_invoice(b"%PDF inner"),
        ])  # fmt: skip
        manifest, seconds = wait_for_manifests(reader, [mail])[mail.message_id]
    finally:
        stack.control("POST", "/_sim/delivery", {"duplicates": 1})
    stack.control("POST", f"/_sim/mail/{mail.message_id}/renotify", {"times": 2})
    wait_until(lambda: stack.control("GET", "/_sim/delivery")["pending"] == 0, 30, "the renotified copies")
    time.sleep(2)  # and for the workers to take them
    assert all(c.ok for c in check_files(reader, mail, manifest, seconds))
    stored = [e["blob"] for e in manifest["attachments"] if "blob" in e]
    assert sorted(reader.names(mail.prefix)) == sorted([*stored, f"{mail.prefix}/manifest.json"])
    assert not any("(2)" in name for name in stored)
    assert reader.manifest(mail.prefix) == manifest  # written once, never replaced


def test_a_failure_half_way_is_completed_on_retry_without_downloading_twice(stack: Stack, reader: BlobReader):
    stack.control("POST", "/_sim/faults", {"method": "GET", "path": r"/\$value$", "status": 500, "count": 1})
    try:
        mail = deliver(stack, "invoices@contoso.com", "Inbox", "half way", [
            generated_attachment("one.pdf", 5 * MB, 21, PDF),
            generated_attachment("two.pdf", 5 * MB, 22, PDF),
            file_attachment("small.pdf", b"%PDF small", PDF),
        ])  # fmt: skip
        manifest = wait_until(
            lambda: (m := reader.manifest(mail.prefix)) and m["status"] == "complete" and m, 60, "a complete manifest"
        )
    finally:
        stack.control("DELETE", "/_sim/faults")
    assert all(c.ok for c in check_files(reader, mail, manifest, 0))
    values = [r for r in graph_requests(stack, mail) if r["route"].endswith("/$value")]
    assert len(values) == 3  # two in the first attempt (one failed), only the failed one again
    assert len(reader.names(mail.prefix)) == 4


def test_a_bad_attachment_is_recorded_and_the_mail_parked_with_its_reason(stack: Stack, reader: BlobReader):
    stack.control("POST", "/_sim/faults", {"method": "GET", "path": r"/\$value$", "status": 500, "count": 100})
    try:
        mail = deliver(stack, "invoices@contoso.com", "Inbox", "always failing", [
            generated_attachment("broken.pdf", 5 * MB, 31, PDF),
            file_attachment("fine.pdf", b"%PDF fine", PDF),
        ])  # fmt: skip
        poison = QueueClient.from_connection_string(
            stack.storage_connection_string, "mail-changes-poison", message_decode_policy=TextBase64DecodePolicy()
        )

        def parked() -> list[dict[str, Any]]:
            try:
                records = [json.loads(m.content) for m in poison.peek_messages(max_messages=32)]
            except Exception:
                return []
            return [r for r in records if isinstance(r, dict) and mail.message_id in json.dumps(r)]

        (record,) = wait_until(parked, 90, "the poison message")
    finally:
        stack.control("DELETE", "/_sim/faults")
    assert record["type"] == "poisoned" and record["dequeueCount"] == 5
    assert "broken.pdf" in record["reason"] and "500" in record["reason"]
    assert record["message"]["message_id"] == mail.message_id
    manifest = reader.manifest(mail.prefix)
    assert manifest is not None and manifest["status"] == "partial"
    assert "500" in entries(manifest)["broken.pdf"]["failed"] and entries(manifest)["fine.pdf"]["sha256"]


def test_a_mail_deleted_before_it_is_fetched_is_recorded_as_gone(stack: Stack, reader: BlobReader):
    stack.control("POST", "/_sim/delivery", {"paused": True})
    try:
        mail = deliver(stack, "invoices@contoso.com", "Inbox", "deleted", [file_attachment("x.pdf", b"%PDF", PDF)])
        stack.control("DELETE", f"/_sim/mail/{mail.message_id}")
    finally:
        stack.control("POST", "/_sim/delivery", {"paused": False})
    state = BlobServiceClient.from_connection_string(stack.storage_connection_string).get_container_client(
        "mail-ingest-state"
    )

    def gone() -> list[dict[str, Any]]:
        names = [b.name for b in state.list_blobs(name_starts_with="gone/invoices@contoso.com/")]
        records = [json.loads(state.get_blob_client(name).download_blob().readall()) for name in names]
        return [r for r in records if r["messageId"] == mail.message_id]

    (record,) = wait_until(gone, 30, "the gone record")
    assert "deleted" in record["reason"]
    assert reader.manifest(mail.prefix) is None


def test_after_ingest_the_mail_is_marked_read_categorised_and_moved(stack: Stack, reader: BlobReader):
    mail = deliver(stack, "ap@contoso.com", "Inbox", "to move", [file_attachment("po.pdf", b"%PDF po", PDF)])
    wait_for_manifests(reader, [mail])

    def moved() -> dict[str, Any] | None:
        message: dict[str, Any] = stack.graph("GET", f"users/ap@contoso.com/messages/{mail.message_id}")
        folder = stack.graph("GET", f"users/ap@contoso.com/mailFolders/{message['parentFolderId']}")
        return message if folder["displayName"] == "Captured" else None

    message = wait_until(moved, 30, "the mail to be moved")
    assert message["isRead"] is True and message["categories"] == ["Captured"]
    # A repeated notification changes nothing and costs no Graph request.
    before = len(graph_requests(stack, mail))
    stack.control("POST", f"/_sim/mail/{mail.message_id}/renotify", {"times": 1})
    time.sleep(3)
    assert len(graph_requests(stack, mail)) == before
