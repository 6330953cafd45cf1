"""Duplicates by content: has this deployment stored the same file before, in any container, from any source?

One record per sha256 in the state container, `duplicates/{sha256}.json`, created with If-None-Match: * by
the first copy: the container, blob path, mailbox, message key and received time of that copy. Creation is
atomic, so of two mails carrying the same file at the same moment exactly one is first and both agree.

The record never names a blob that was not committed: a copy claims the hash only after its blob is
committed. A crash between the commit and the claim leaves a blob without a record; the mail's retry finds
its blob and claims then (or finds that another mail claimed first, and is that one's duplicate). A record
whose blob is gone (deleted by a person, a lifecycle rule or a refused zip) is taken over, by ETag, by the
next copy. A retry of the same mail finds its own blob in the record and is not its own duplicate.

`DUPLICATES`: `mark` (store, and mark the copy: manifest `duplicateOf`, tag `duplicate`), `skip` (look the hash
up before the commit and do not store a copy: its staged blocks are never committed and vanish; the manifest
points to the first), `off`. Files under `MIN_BYTES` (a 1x1 logo, an empty text) are not looked up: no
document capture books is that small, and such files repeat in every mail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import SettingsError, StateConflict

if TYPE_CHECKING:
    from .storage import BlobStore

Mode = Literal["mark", "skip", "off"]
MODES: tuple[Mode, ...] = ("mark", "skip", "off")
MIN_BYTES = 256
# Kinds looked up: files and attached mails, not the mail's own MIME or body (SAVE_MESSAGE, SAVE_BODY).
KINDS = frozenset({"file", "item"})
_CLAIM_ATTEMPTS = 3


def duplicates_from_env(env: Mapping[str, str]) -> Mode:
    raw = env.get("DUPLICATES", "").strip().lower() or "mark"
    for mode in MODES:
        if raw == mode:
            return mode
    raise SettingsError("DUPLICATES", f"must be one of {', '.join(MODES)}, got {raw!r}")


def record_path(sha256: str) -> str:
    return f"duplicates/{sha256}.json"


@dataclass(frozen=True)
class Copy:
    """One stored copy of a file: where it is and which mail brought it."""

    container: str
    blob: str
    mailbox: str
    message_key: str
    received: str  # the mail's receivedDateTime (Graph's form)

    def to_json(self) -> dict[str, str]:
        return {
            "container": self.container,
            "blob": self.blob,
            "mailbox": self.mailbox,
            "messageKey": self.message_key,
            "receivedDateTime": self.received,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Copy:
        return cls(
            str(data.get("container", "")),
            str(data.get("blob", "")),
            str(data.get("mailbox", "")),
            str(data.get("messageKey", "")),
            str(data.get("receivedDateTime", "")),
        )

    def same_blob(self, other: Copy) -> bool:
        return (self.container, self.blob) == (other.container, other.blob)

    def same_mail(self, mailbox: str, key: str) -> bool:
        return (self.mailbox.lower(), self.message_key) == (mailbox.lower(), key)


class Duplicates:
    """The hash records of one deployment. `container` gives the store of a container by name, to check that a
    record's blob is still there."""

    def __init__(self, state: BlobStore, container: Callable[[str], BlobStore], mode: Mode) -> None:
        self.state = state
        self.container = container
        self.mode = mode

    def applies(self, kind: str, size: int) -> bool:
        return self.mode != "off" and kind in KINDS and size >= MIN_BYTES

    async def _first(self, sha256: str) -> tuple[Copy, str] | None:
        found = await self.state.read_json(record_path(sha256))
        return (Copy.from_json(found[0]), found[1]) if found is not None else None

    async def _exists(self, copy: Copy) -> bool:
        return await self.container(copy.container).stored(copy.blob) is not None

    async def first_elsewhere(self, sha256: str, me: Copy) -> Copy | None:
        """The first copy, when it is another blob and still there (read only: before a commit)."""
        found = await self._first(sha256)
        if found is None or found[0].same_blob(me) or not await self._exists(found[0]):
            return None
        return found[0]

    async def seen_before(self, sha256: str, mailbox: str, key: str) -> bool:
        """Whether another mail stored this file first (for routes: one read, no claim)."""
        found = await self._first(sha256)
        return found is not None and not found[0].same_mail(mailbox, key)

    async def claim(self, sha256: str, me: Copy) -> Copy | None:
        """Record `me` (committed) as the first copy unless another is: that one, or None when `me` is first."""
        for _ in range(_CLAIM_ATTEMPTS):
            try:
                await self.state.write_json(record_path(sha256), me.to_json(), None)
                return None
            except StateConflict:
                pass
            found = await self._first(sha256)
            if found is None:
                continue  # deleted in between: create again
            first, etag = found
            if first.same_blob(me):
                return None  # a retry of the same mail, or a concurrent worker on it
            if await self._exists(first):
                return first
            try:  # the first copy is gone: this one takes its place
                await self.state.write_json(record_path(sha256), me.to_json(), etag)
                return None
            except StateConflict:
                continue
        raise StateConflict(f"{record_path(sha256)} keeps changing: the mail is retried")
