"""The hand-off message and its at-least-once, once-per-mail sending, against Azurite's blobs and queues."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from shared.pipeline.handoff import MAX_MESSAGE_BYTES, HandOff, handoff_message, record_path
from shared.pipeline.layout import graph_time
from shared.pipeline.storage import BlobStore, blob_service
from shared.settings import StorageSettings


@pytest.fixture
async def files(azurite: str) -> AsyncIterator[BlobStore]:
    service = blob_service(StorageSettings(connection_string=azurite), None)
    yield BlobStore(service, f"f{uuid.uuid4().hex[:12]}")
    await service.close()


@pytest.fixture
async def queue(azurite: str) -> AsyncIterator[QueueClient]:
    client = QueueClient.from_connection_string(
        azurite,
        f"q{uuid.uuid4().hex[:12]}",
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )
    await client.create_queue()
    yield client
    await client.delete_queue()
    await client.close()


async def received(queue: QueueClient) -> list[dict[str, Any]]:
    return [json.loads(m.content) async for m in queue.receive_messages(messages_per_page=32, visibility_timeout=60)]


def manifest(key: str = "abcdefghijklmnop", ingested: datetime | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "status": "complete",
        "mailbox": "ap@contoso.com",
        "folder": "Inbox",
        "messageKey": key,
        "route": "ap-invoices",
        "receivedDateTime": "2026-03-07T23:30:00Z",
        "ingestedAt": graph_time(ingested or datetime.now(UTC)),
        "attachments": [
            {"name": "Rechnung März.pdf", "kind": "file", "contentType": "application/pdf", "size": 5,
             "file": "Rechnung März.pdf", "blob": f"p/{key}/Rechnung März.pdf", "sha256": "aa"},
            {"name": "logo.png", "kind": "file", "skipped": "inline (INCLUDE_INLINE_ATTACHMENTS is off)"},
            {"name": "inner.pdf", "kind": "file", "contentType": "application/pdf", "size": 7, "file": "inner.pdf",
             "blob": f"p/{key}/inner.pdf", "sha256": "bb", "parent": "Fwd.eml"},
        ],
        **extra,
    }  # fmt: skip


def handoff(files: BlobStore, store: BlobStore, queue: QueueClient, grace: float = 2.0) -> HandOff:
    async def send(text: str) -> None:
        await queue.send_message(text)

    return HandOff(store, send, queue.queue_name, grace_seconds=grace, poll_seconds=0.05)


async def test_the_message_names_the_manifest_and_every_stored_file(files: BlobStore, store: BlobStore, queue):
    assert (
        await handoff(files, store, queue)(manifest(), files, "p/abcdefghijklmnop/manifest.json", wrote_manifest=True)
        == "sent"
    )
    [message] = await received(queue)
    assert message["type"] == "mail.ingested" and message["id"] == message["messageKey"] == "abcdefghijklmnop"
    assert (message["mailbox"], message["route"], message["receivedDateTime"]) == (
        "ap@contoso.com", "ap-invoices", "2026-03-07T23:30:00Z"
    )  # fmt: skip
    assert message["manifest"] == files.url("p/abcdefghijklmnop/manifest.json")
    assert message["container"] == files.name and message["filesComplete"] and message["fileCount"] == 2
    first, second = message["files"]
    assert first["url"].endswith(f"/{files.name}/p/abcdefghijklmnop/Rechnung%20M%C3%A4rz.pdf")
    assert (first["name"], first["contentType"], first["size"], first["sha256"]) == (
        "Rechnung März.pdf", "application/pdf", 5, "aa"
    )  # fmt: skip
    assert second["parent"] == "Fwd.eml" and "parent" not in first
    assert (await store.read_json(record_path("ap@contoso.com", "abcdefghijklmnop"))) is not None


async def test_a_duplicate_after_the_send_sends_nothing(files: BlobStore, store: BlobStore, queue):
    send = handoff(files, store, queue)
    assert await send(manifest(), files, "m.json", wrote_manifest=True) == "sent"
    assert await send(manifest(), files, "m.json", wrote_manifest=False) == "recorded"
    assert len(await received(queue)) == 1


async def test_a_duplicate_racing_the_writer_waits_for_its_record(files: BlobStore, store: BlobStore, queue):
    send = handoff(files, store, queue, grace=5.0)
    written = manifest()

    async def writer() -> str:
        await asyncio.sleep(0.3)  # the duplicate finds the manifest complete before the writer sent
        return await send(written, files, "m.json", wrote_manifest=True)

    outcomes = await asyncio.gather(send(written, files, "m.json", wrote_manifest=False), writer())
    assert sorted(outcomes) == ["recorded", "sent"]
    assert len(await received(queue)) == 1


async def test_a_crash_before_the_send_is_covered_by_the_retry(files: BlobStore, store: BlobStore, queue):
    # The writer completed the manifest and crashed: no message, no record. Its retry comes later.
    crashed = manifest(ingested=datetime.now(UTC) - timedelta(seconds=30))
    send = handoff(files, store, queue)
    assert await send(crashed, files, "m.json", wrote_manifest=False) == "resent"
    assert await send(crashed, files, "m.json", wrote_manifest=False) == "recorded"
    # A fresh manifest whose writer never records is sent once its grace is over.
    fresh = manifest(key="qqqqqqqqqqqqqqqq")
    assert await handoff(files, store, queue, grace=0.5)(fresh, files, "n.json", wrote_manifest=False) == "resent"
    assert [m["id"] for m in await received(queue)] == ["abcdefghijklmnop", "qqqqqqqqqqqqqqqq"]


async def test_a_crash_between_send_and_record_sends_again_at_least_once(files: BlobStore, store: BlobStore, queue):
    async def send_then_crash(text: str) -> None:
        await queue.send_message(text)
        raise ConnectionError("worker lost")

    crashing = HandOff(store, send_then_crash, queue.queue_name, grace_seconds=0)
    with pytest.raises(ConnectionError):
        await crashing(manifest(), files, "m.json", wrote_manifest=True)
    assert await handoff(files, store, queue, grace=0)(manifest(), files, "m.json", wrote_manifest=False) == "resent"
    assert [m["id"] for m in await received(queue)] == ["abcdefghijklmnop"] * 2  # consumers de-duplicate on id


def test_a_mail_with_very_many_files_lists_what_fits(files: BlobStore):
    many = manifest()
    many["attachments"] = [
        {"name": f"page {i}.tif", "file": f"page {i}.tif", "blob": f"p/k/page {i}.tif", "size": 1, "sha256": "c" * 64}
        for i in range(3000)
    ]
    text = handoff_message(many, files, "p/k/manifest.json")
    assert len(base64.b64encode(text.encode())) <= MAX_MESSAGE_BYTES
    message = json.loads(text)
    assert not message["filesComplete"] and message["fileCount"] == 3000
    assert 100 < len(message["files"]) < 3000 and message["files"][0]["name"] == "page 0.tif"
