"""Blob Storage: attachments streamed in blocks, manifests written once, state records with ETags."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import StateConflict, StorageError
from .settings import StorageSettings

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.storage.blob.aio import BlobServiceClient, ContainerClient

BLOCK_SIZE = 4 * 1024 * 1024


def blob_service(storage: StorageSettings, credential: AsyncTokenCredential | None) -> BlobServiceClient:
    from azure.storage.blob.aio import BlobServiceClient

    if storage.connection_string:
        return BlobServiceClient.from_connection_string(storage.connection_string)
    if storage.blob_service_uri and credential is not None:
        return BlobServiceClient(storage.blob_service_uri, credential=credential)
    raise StorageError("no storage connection configured")


@dataclass(frozen=True)
class StoredBlob:
    path: str
    size: int
    sha256: str


class _Hasher:
    def __init__(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)


async def _blocks(chunks: AsyncIterator[bytes], hasher: _Hasher) -> AsyncIterator[bytes]:
    """Regroup arbitrary chunks into BLOCK_SIZE blocks (the last may be shorter), hashing as they pass."""
    pending = bytearray()
    async for chunk in chunks:
        hasher.update(chunk)
        pending += chunk
        while len(pending) >= BLOCK_SIZE:
            yield bytes(pending[:BLOCK_SIZE])
            del pending[:BLOCK_SIZE]
    if pending or hasher.size == 0:
        yield bytes(pending)


class BlobStore:
    """Writes into one container; the container is created on first use."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._container: ContainerClient = service.get_container_client(container)
        self._ready = False

    async def _ensure(self) -> None:
        if self._ready:
            return
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            await self._container.create_container()
        self._ready = True

    async def exists(self, path: str) -> bool:
        await self._ensure()
        return bool(await self._container.get_blob_client(path).exists())

    async def upload_stream(
        self, path: str, chunks: AsyncIterator[bytes], content_type: str, metadata: Mapping[str, str]
    ) -> StoredBlob:
        """Stream into a block blob, one 4 MiB block in memory at a time, hashing on the way."""
        from azure.storage.blob import BlobBlock, ContentSettings

        await self._ensure()
        blob = self._container.get_blob_client(path)
        hasher = _Hasher()
        block_ids: list[BlobBlock] = []
        async for index, block in _enumerate(_blocks(chunks, hasher)):
            block_id = base64.b64encode(f"{index:08d}".encode()).decode()
            await blob.stage_block(block_id, block, length=len(block))
            block_ids.append(BlobBlock(block_id=block_id))
        digest = hasher.sha.hexdigest()
        await blob.commit_block_list(
            block_ids,
            content_settings=ContentSettings(content_type=content_type),
            metadata={**metadata, "sha256": digest},
        )
        return StoredBlob(path=path, size=hasher.size, sha256=digest)

    async def create_once(self, path: str, data: bytes, content_type: str) -> bool:
        """Write `data` only if the blob does not exist yet (If-None-Match: *); False if it did."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        await self._ensure()
        try:
            await self._container.get_blob_client(path).upload_blob(
                data, overwrite=False, content_settings=ContentSettings(content_type=content_type)
            )
        except ResourceExistsError:
            return False
        return True

    async def read_json(self, path: str) -> tuple[dict[str, Any], str] | None:
        """A JSON blob and its ETag, or None if it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        await self._ensure()
        try:
            downloader = await self._container.get_blob_client(path).download_blob()
            raw = await downloader.readall()
        except ResourceNotFoundError:
            return None
        data = json.loads(raw)
        return (data if isinstance(data, dict) else {}), str(downloader.properties.etag)

    async def write_json(self, path: str, data: Mapping[str, Any], etag: str | None) -> str:
        """Replace the blob if its ETag is still `etag` (create it if `etag` is None); the new ETag."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import ContentSettings

        await self._ensure()
        body = json.dumps(data, indent=1, sort_keys=True).encode()
        blob = self._container.get_blob_client(path)
        settings = ContentSettings(content_type="application/json")
        try:
            if etag is None:
                # overwrite=False sends If-None-Match: *: only the first creator succeeds.
                result = await blob.upload_blob(body, overwrite=False, content_settings=settings)
            else:
                result = await blob.upload_blob(
                    body, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified,
                    content_settings=settings,
                )  # fmt: skip
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise StateConflict(f"{path} was changed by another instance") from exc
        return str(result["etag"])


async def _enumerate(items: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1
