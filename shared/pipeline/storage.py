"""Blob Storage: attachments streamed in blocks and written once, JSON records (manifests, state) with ETags."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import StateConflict, StorageError
from ..settings import StorageSettings

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient
    from azure.storage.queue.aio import QueueServiceClient

BLOCK_SIZE = 4 * 1024 * 1024
COPY_POLLS = 120
COPY_POLL_SECONDS = 0.5


def bare_etag(etag: str) -> str:
    """An ETag without its quotes (the SDK's `"0x8D…"`, an event's `0x8D…`)."""
    return etag.strip().removeprefix("W/").strip('"')


@dataclass(frozen=True)
class BlobFacts:
    etag: str
    metadata: Mapping[str, str]


def blob_service(storage: StorageSettings, credential: AsyncTokenCredential | None) -> BlobServiceClient:
    from azure.storage.blob.aio import BlobServiceClient

    if storage.connection_string:
        return BlobServiceClient.from_connection_string(storage.connection_string)
    if storage.blob_service_uri and credential is not None:
        return BlobServiceClient(storage.blob_service_uri, credential=credential)
    raise StorageError("no storage connection configured")


def queue_service(storage: StorageSettings, credential: AsyncTokenCredential | None) -> QueueServiceClient:
    from azure.storage.queue.aio import QueueServiceClient

    if storage.connection_string:
        return QueueServiceClient.from_connection_string(storage.connection_string)
    if storage.queue_service_uri and credential is not None:
        return QueueServiceClient(storage.queue_service_uri, credential=credential)
    raise StorageError("no storage connection configured")


@dataclass(frozen=True)
class StoredBlob:
    path: str
    size: int
    sha256: str
    existed: bool = False  # another attempt or worker had already stored it: nothing was written
    metadata: Mapping[str, str] = field(default_factory=dict, compare=False)  # an existing blob's, as stored


class BlobWriter:
    """One blob, written at most once: bytes pushed in are staged in 4 MiB blocks and committed with
    If-None-Match: *, so of two writers racing on one path the first complete copy wins and the other
    adopts it. Block ids are unique to the writer: two writers never mix blocks in one blob. A writer
    that is never committed leaves only uncommitted blocks, which the service discards. Blob index tags
    go with the commit (`x-ms-tags`), so a blob is never findable by its tags before it is whole."""

    def __init__(
        self,
        blob: BlobClient,
        path: str,
        content_type: str,
        metadata: Mapping[str, str],
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self._blob = blob
        self.path = path
        self._content_type = content_type
        self._metadata = dict(metadata)
        self._tags = dict(tags) if tags else None
        self._writer_id = uuid.uuid4().hex
        self._pending = bytearray()
        self._blocks: list[str] = []
        self._sha = hashlib.sha256()
        self.size = 0

    @property
    def digest(self) -> str:
        """The sha256 of the bytes written so far (all of them, once the file has passed)."""
        return self._sha.hexdigest()

    def annotate(self, metadata: Mapping[str, str], tags: Mapping[str, str]) -> None:
        """More metadata and blob index tags, set with the commit (what was learnt as the bytes passed)."""
        self._metadata.update(metadata)
        if tags:
            self._tags = {**(self._tags or {}), **tags}

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags or {})

    async def write(self, data: bytes) -> None:
        self._sha.update(data)
        self.size += len(data)
        self._pending += data
        while len(self._pending) >= BLOCK_SIZE:
            await self._stage(bytes(self._pending[:BLOCK_SIZE]))
            del self._pending[:BLOCK_SIZE]

    async def _stage(self, block: bytes) -> None:
        block_id = base64.b64encode(f"{self._writer_id}{len(self._blocks):08d}".encode()).decode()
        await self._blob.stage_block(block_id, block, length=len(block))
        self._blocks.append(block_id)

    async def commit(self) -> StoredBlob:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        digest = self._sha.hexdigest()
        try:
            await self._put(digest, only_if_missing=True)
        except (ResourceExistsError, ResourceModifiedError):
            existing = await _stored(self._blob, self.path)
            if existing is not None:
                return existing
            # Only another writer's uncommitted blocks are there (one still writing, or one that crashed):
            # the path's content is the same whoever writes it, so this copy may take the place.
            await self._put(digest, only_if_missing=False)
        finally:
            self._pending.clear()
        return StoredBlob(path=self.path, size=self.size, sha256=digest)

    async def _put(self, digest: str, *, only_if_missing: bool) -> None:
        from azure.core import MatchConditions
        from azure.storage.blob import BlobBlock, ContentSettings

        settings = ContentSettings(content_type=self._content_type)
        metadata = {**self._metadata, "sha256": digest}
        condition = MatchConditions.IfMissing if only_if_missing else None  # If-None-Match: *
        if not self._blocks:
            # Small enough for one Put Blob: one request instead of stage + commit.
            await self._blob.upload_blob(
                bytes(self._pending),
                overwrite=not only_if_missing,
                content_settings=settings,
                metadata=metadata,
                tags=self._tags,
            )
            return
        if self._pending:
            await self._stage(bytes(self._pending))
            self._pending.clear()
        await self._blob.commit_block_list(
            [BlobBlock(block_id=b) for b in self._blocks],
            content_settings=settings,
            metadata=metadata,
            tags=self._tags,
            match_condition=condition,
        )


async def _stored(blob: BlobClient, path: str) -> StoredBlob | None:
    """What is stored at `path`: size and the sha256 recorded in its metadata (hashed anew if absent)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        props = await blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
    digest = (props.metadata or {}).get("sha256")
    if not digest:
        sha = hashlib.sha256()
        stream = await blob.download_blob()
        async for chunk in stream.chunks():
            sha.update(chunk)
        digest = sha.hexdigest()
    return StoredBlob(path=path, size=int(props.size), sha256=digest, existed=True, metadata=dict(props.metadata or {}))


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

    async def stored(self, path: str) -> StoredBlob | None:
        await self._ensure()
        return await _stored(self._container.get_blob_client(path), path)

    async def writer(
        self, path: str, content_type: str, metadata: Mapping[str, str], tags: Mapping[str, str] | None = None
    ) -> BlobWriter:
        await self._ensure()
        return BlobWriter(self._container.get_blob_client(path), path, content_type, metadata, tags)

    @property
    def name(self) -> str:
        return str(self._container.container_name)

    def url(self, path: str) -> str:
        """The blob's URL (no signature: a reader brings its own identity or SAS)."""
        return str(self._container.get_blob_client(path).url)

    async def tags(self, path: str) -> dict[str, str]:
        return dict(await self._container.get_blob_client(path).get_blob_tags())

    async def set_tags(self, path: str, tags: Mapping[str, str]) -> None:
        """Replace the blob's index tags (Set Blob Tags sets them all)."""
        await self._container.get_blob_client(path).set_blob_tags(dict(tags))

    async def upload_stream(
        self,
        path: str,
        chunks: AsyncIterator[bytes],
        content_type: str,
        metadata: Mapping[str, str],
        tags: Mapping[str, str] | None = None,
    ) -> StoredBlob:
        """Stream into a block blob written once, one 4 MiB block in memory at a time."""
        writer = await self.writer(path, content_type, metadata, tags)
        async for chunk in chunks:
            await writer.write(chunk)
        return await writer.commit()

    async def properties(self, path: str) -> BlobFacts | None:
        """The blob's ETag (unquoted, as Event Grid events carry it) and metadata; None when there is none."""
        from azure.core.exceptions import ResourceNotFoundError

        await self._ensure()
        try:
            props = await self._container.get_blob_client(path).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobFacts(bare_etag(str(props.etag)), dict(props.metadata or {}))

    async def copy_in(self, source_url: str, path: str, tags: Mapping[str, str]) -> None:
        """A server-side copy of a blob of the same account to `path` (metadata copied, `tags` set), waited for.
        Gone already is fine when the copy exists: a retry of a move that copied before."""
        import asyncio

        from azure.core.exceptions import ResourceNotFoundError

        await self._ensure()
        blob = self._container.get_blob_client(path)
        try:
            await blob.start_copy_from_url(source_url, tags=dict(tags) or None)
        except ResourceNotFoundError:
            if await self.properties(path) is None:
                raise
            return
        for _ in range(COPY_POLLS):  # same-account copies usually finish at once
            status = (await blob.get_blob_properties()).copy.status
            if status == "success":
                return
            if status in ("failed", "aborted"):
                raise StorageError(f"copy to {path} {status}")
            await asyncio.sleep(COPY_POLL_SECONDS)
        raise StorageError(f"copy to {path} did not finish")

    async def names(self, prefix: str) -> list[str]:
        await self._ensure()
        return [str(b.name) async for b in self._container.list_blobs(name_starts_with=prefix)]

    async def delete(self, path: str, etag: str | None = None) -> None:
        """Delete the blob (if its ETag is still `etag`, when given); gone already is fine."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self._container.get_blob_client(path)
        try:
            if etag is None:
                await blob.delete_blob()
            else:
                await blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            pass
        except ResourceModifiedError as exc:
            raise StateConflict(f"{path} was changed by another instance") from exc

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

    async def read_if_changed(self, path: str, etag: str | None) -> tuple[bytes, str] | None:
        """The blob's bytes and ETag, or None when its ETag is still `etag` (If-None-Match: a 304 downloads
        nothing). ResourceNotFoundError when there is no such blob."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotModifiedError

        await self._ensure()
        blob = self._container.get_blob_client(path)
        try:
            if etag is None:
                downloader = await blob.download_blob()
            else:
                downloader = await blob.download_blob(etag=etag, match_condition=MatchConditions.IfModified)
            return await downloader.readall(), str(downloader.properties.etag)
        except (ResourceNotModifiedError, ResourceModifiedError) as exc:
            # The 304 carries x-ms-error-code ConditionNotMet, which the storage SDK raises by its code.
            if exc.status_code == 304:
                return None
            raise

    async def write_json(
        self, path: str, data: Mapping[str, Any], etag: str | None, tags: Mapping[str, str] | None = None
    ) -> str:
        """Replace the blob if its ETag is still `etag` (create it if `etag` is None); the new ETag. `tags`
        are its blob index tags, set in the same request."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import ContentSettings

        await self._ensure()
        body = json.dumps(data, indent=1, sort_keys=True).encode()
        tag_set = dict(tags) if tags else None
        blob = self._container.get_blob_client(path)
        settings = ContentSettings(content_type="application/json")
        try:
            if etag is None:
                # overwrite=False sends If-None-Match: *: only the first creator succeeds.
                result = await blob.upload_blob(body, overwrite=False, content_settings=settings, tags=tag_set)
            else:
                result = await blob.upload_blob(
                    body, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified,
                    content_settings=settings, tags=tag_set,
                )  # fmt: skip
        except (ResourceExistsError, ResourceModifiedError) as exc:
            raise StateConflict(f"{path} was changed by another instance") from exc
        return str(result["etag"])
