"""Each mailbox's auth status, a JSON record at `auth/{mailbox}.json` in the state container.

Read by the status command and the health endpoint; written by the consent callback, the token
keep-alive and the token source when the identity platform refuses a mailbox's refresh token. It
holds no secret: the tokens themselves live in Key Vault.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from ...errors import StateConflict
from ...pipeline.storage import BlobStore

Status = Literal["ok", "needs_consent"]
PREFIX = "auth/"


@dataclass(frozen=True)
class AuthStatus:
    mailbox: str
    status: Status
    reason: str | None = None
    consented_at: str | None = None
    refreshed_at: str | None = None
    consent_url: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuthStatus:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def path(mailbox: str) -> str:
    return f"{PREFIX}{mailbox.lower()}.json"


async def load(store: BlobStore, mailbox: str) -> AuthStatus | None:
    found = await store.read_json(path(mailbox))
    return AuthStatus.from_dict(found[0]) if found else None


async def update(store: BlobStore, mailbox: str, **changes: Any) -> AuthStatus:
    """Change some fields (creating the record if needed), by ETag; a concurrent writer is read again."""
    for _ in range(5):
        found = await store.read_json(path(mailbox))
        current = AuthStatus.from_dict(found[0]) if found else AuthStatus(mailbox=mailbox.lower(), status="ok")
        record = replace(current, **changes)
        try:
            await store.write_json(path(mailbox), asdict(record), found[1] if found else None)
        except StateConflict:
            continue
        return record
    raise StateConflict(f"{path(mailbox)} kept changing under five attempts to update it")
