"""BlobStore and StateStore against Azurite."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from shared.errors import StateConflict
from shared.pipeline.storage import BLOCK_SIZE, BlobStore, StoredBlob
from shared.sources.graph.state import FolderState, StateStore


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("length", [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, 2 * BLOCK_SIZE + 12345])
async def test_upload_stream_round_trip(store: BlobStore, length: int):
    data = os.urandom(length)
    stored = await store.upload_stream("m/a b.bin", chunks(data, 777_777), "application/pdf", {"mailbox": "x"})
    assert stored.size == length
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    blob = store._container.get_blob_client("m/a b.bin")
    props = await blob.get_blob_properties()
    assert props.content_settings.content_type == "application/pdf"
    assert props.metadata == {"mailbox": "x", "sha256": stored.sha256}
    assert await (await blob.download_blob()).readall() == data


@pytest.mark.parametrize("length", [10, 2 * BLOCK_SIZE + 1])
async def test_racing_writers_keep_the_first_complete_copy(store: BlobStore, length: int):
    first, second = os.urandom(length), os.urandom(length)
    a = await store.writer("m/scan.pdf", "application/pdf", {})
    b = await store.writer("m/scan.pdf", "application/pdf", {})
    # Interleaved: both stage blocks before either commits; block ids must not collide.
    for start in range(0, length, 1_000_000):
        await a.write(first[start : start + 1_000_000])
        await b.write(second[start : start + 1_000_000])
    won = await b.commit()
    lost = await a.commit()
    assert not won.existed and lost.existed
    assert lost.sha256 == won.sha256 == hashlib.sha256(second).hexdigest()
    assert lost.size == length
    blob = store._container.get_blob_client("m/scan.pdf")
    assert await (await blob.download_blob()).readall() == second


async def test_a_writer_never_committed_leaves_nothing(store: BlobStore):
    writer = await store.writer("m/half.bin", "application/octet-stream", {})
    await writer.write(os.urandom(BLOCK_SIZE + 5))  # one block staged, then the worker "crashes"
    assert await store.stored("m/half.bin") is None
    retry = await store.upload_stream("m/half.bin", chunks(b"whole", 2), "application/octet-stream", {})
    assert not retry.existed and (await store.stored("m/half.bin")) == StoredBlob(
        "m/half.bin", 5, hashlib.sha256(b"whole").hexdigest(), existed=True
    )


async def test_json_records_are_created_once_then_replaced_by_etag(store: BlobStore):
    etag = await store.write_json("k/manifest.json", {"status": "partial"}, None)
    with pytest.raises(StateConflict):
        await store.write_json("k/manifest.json", {"status": "other"}, None)
    newer = await store.write_json("k/manifest.json", {"status": "complete"}, etag)
    with pytest.raises(StateConflict):
        await store.write_json("k/manifest.json", {"status": "stale"}, etag)
    assert await store.read_json("k/manifest.json") == ({"status": "complete"}, newer)
    assert await store.read_json("k/other.json") is None


async def test_state_records_are_listed_and_removed_by_etag(store: BlobStore):
    states = StateStore(store)
    etag = await states.save(FolderState("k1", "a@b.c", "Inbox"), None)
    await states.save(FolderState("k2", "a@b.c", "Archive"), None)
    assert sorted(await states.folder_keys()) == ["k1", "k2"]
    with pytest.raises(StateConflict):
        await states.remove("k1", '"0x0"')  # changed since that ETag
    await states.remove("k1", etag)
    await states.remove("k1", None)  # already gone: fine
    assert await states.folder_keys() == ["k2"]


async def test_state_records_use_etags(store: BlobStore):
    states = StateStore(store)
    assert await states.load("f1") == (None, None)
    state = FolderState("f1", "a@b.c", "Inbox", subscription_id="s1")
    etag = await states.save(state, None)
    with pytest.raises(StateConflict):
        await states.save(state, None)  # a second creator loses
    loaded, loaded_etag = await states.load("f1")
    assert loaded == state and loaded_etag == etag
    state.subscription_id = "s2"
    await states.save(state, etag)
    with pytest.raises(StateConflict):
        await states.save(state, etag)  # a stale writer loses


@pytest.mark.parametrize("length", [10, BLOCK_SIZE + 1])
async def test_blobs_and_json_records_carry_index_tags_found_by_find_blobs_by_tags(store: BlobStore, length: int):
    tags = {"mailbox": "ap_contoso.com", "messageKey": f"k{length}", "route": "ap-invoices", "kind": "file"}
    await store.upload_stream("m/scan.pdf", chunks(os.urandom(length), 999_999), "application/pdf", {}, tags)
    etag = await store.write_json("m/manifest.json", {"status": "partial"}, None, {**tags, "kind": "manifest"})
    await store.write_json("m/manifest.json", {"status": "complete"}, etag, {**tags, "kind": "manifest"})
    assert await store.tags("m/scan.pdf") == tags
    assert (await store.tags("m/manifest.json"))["kind"] == "manifest"  # replacing by ETag keeps them
    await store.write_json("other/manifest.json", {}, None, {**tags, "messageKey": "other", "kind": "manifest"})
    query = f"\"messageKey\" = 'k{length}' AND \"kind\" = 'manifest'"
    found = [b.name async for b in store._container.find_blobs_by_tags(query)]
    assert found == ["m/manifest.json"]
    assert store.url("m/a b.pdf").endswith(f"/{store.name}/m/a%20b.pdf")


async def test_an_invalid_tag_is_refused_by_the_service_not_silently_dropped(store: BlobStore):
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError):
        await store.upload_stream("m/x.bin", chunks(b"x", 1), "application/octet-stream", {}, {"mailbox": "a@b.c"})
