"""BlobStore and StateStore against Azurite."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.errors import StateConflict
from shared.settings import StorageSettings
from shared.state import FolderState, StateStore
from shared.storage import BLOCK_SIZE, BlobStore, blob_service


@pytest.fixture
async def store(azurite: str) -> AsyncIterator[BlobStore]:
    service = blob_service(StorageSettings(connection_string=azurite), None)
    yield BlobStore(service, f"t{uuid.uuid4().hex[:12]}")
    await service.close()


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


async def test_create_once(store: BlobStore):
    assert await store.create_once("k/manifest.json", b"{}", "application/json") is True
    assert await store.create_once("k/manifest.json", b'{"x":1}', "application/json") is False
    assert await store.read_json("k/manifest.json") is not None
    assert await store.exists("k/manifest.json")
    assert not await store.exists("k/other.json")


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
