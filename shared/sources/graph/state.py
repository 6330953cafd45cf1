"""One state record per mailbox folder, kept as a JSON blob and updated with ETags."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ...pipeline.storage import BlobStore


@dataclass
class FolderState:
    folder_key: str
    mailbox: str
    folder: str
    folder_id: str | None = None
    subscription_id: str | None = None
    expiration: str | None = None
    renewed_at: str | None = None
    last_lifecycle_event: str | None = None
    last_lifecycle_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    creating_at: str | None = None  # an instance's claim to create the subscription (see subscriptions.py)
    delta_link: str | None = None  # where the next delta round starts
    last_resync_at: str | None = None
    lifetime_cap_minutes: int | None = None  # a cap below SUBSCRIPTION_LIFETIME_MINUTES that Graph named
    webhook: str | None = None  # fingerprint of the URLs (function key included) the subscription calls

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FolderState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class StateStore:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    PREFIX = "folders/"

    @classmethod
    def path(cls, folder_key: str) -> str:
        return f"{cls.PREFIX}{folder_key}.json"

    async def folder_keys(self) -> list[str]:
        """Every folder with a record, configured or not any more."""
        names = await self._blobs.names(self.PREFIX)
        return [n[len(self.PREFIX) : -len(".json")] for n in names if n.endswith(".json")]

    async def remove(self, folder_key: str, etag: str | None) -> None:
        await self._blobs.delete(self.path(folder_key), etag)

    async def load(self, folder_key: str) -> tuple[FolderState | None, str | None]:
        found = await self._blobs.read_json(self.path(folder_key))
        if found is None:
            return None, None
        data, etag = found
        return FolderState.from_dict(data), etag

    async def save(self, state: FolderState, etag: str | None) -> str:
        """Write if nobody else has since `etag`; StateConflict otherwise."""
        return await self._blobs.write_json(self.path(state.folder_key), asdict(state), etag)
