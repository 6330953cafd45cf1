"""A document's checks, judged as its bytes pass on their way to its blob and settled at its commit: whether
it can be read at all (`unpack/protection.py`; its container may have said so first: an S/MIME envelope no
key opens) and whether the deployment stored it before (`duplicates.py`).

What is learnt goes on the manifest entry (`protected`, `duplicateOf`), into the blob's metadata
(`protected`, so that a retry that finds the blob stored knows it without reading it again) and into its
blob index tags (`protected`, `duplicate`: set with the commit, or, for a duplicate found by the claim
after the commit, set then). With `DUPLICATES=skip` a copy is never committed: its hash is looked up first,
and a copy that lost a race to another mail's is deleted once the claim says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote

from ..logs import log_event
from ..unpack.protection import RIGHTS_PROTECTED, SMIME_PREFIX, ProtectionCheck
from .duplicates import Copy, Duplicates
from .layout import metadata_value
from .storage import BlobStore, BlobWriter, StoredBlob

if TYPE_CHECKING:
    from .job import Entry

logger = logging.getLogger(__name__)

PROTECTED_TAG = "protected"
DUPLICATE_TAG = "duplicate"
CHECK_TAGS = (PROTECTED_TAG, DUPLICATE_TAG)


class Mail(Protocol):
    """What the checks need of the mail the file came in (a `Job`)."""

    @property
    def mailbox(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def received(self) -> str: ...

    @property
    def store(self) -> BlobStore: ...

    @property
    def duplicates(self) -> Duplicates: ...


def mail_protected(entries: Sequence[Entry]) -> str | None:
    """Why the mail itself cannot be read: its content is one rights-protected `message.rpmsg` (IRM), or one
    S/MIME envelope no key opens (Graph lists it as the mail's `smime.p7m`; a raw mail is that envelope)."""
    for entry in entries:
        if entry.protected and entry.protected.startswith((RIGHTS_PROTECTED, SMIME_PREFIX)):
            return entry.protected
    return None


def skipped_as_duplicate(first: Copy) -> str:
    return f"duplicate of {first.container}/{first.blob} (DUPLICATES=skip): not stored again"


class CheckedWriter:
    """A file's blob writer with its checks; `commit()` is None when the file is not stored (a skipped copy)."""

    def __init__(self, mail: Mail, entry: Entry, writer: BlobWriter) -> None:
        self.mail = mail
        self.entry = entry
        self.writer = writer
        self.check = ProtectionCheck(entry.name, entry.content_type)

    @property
    def path(self) -> str:
        return self.writer.path

    @property
    def size(self) -> int:
        return self.writer.size

    def _me(self) -> Copy:
        return Copy(self.mail.store.name, self.writer.path, self.mail.mailbox, self.mail.key, self.mail.received)

    async def write(self, data: bytes) -> None:
        await self.writer.write(data)
        await self.check.write(data)

    def drop(self) -> None:
        """Not to be stored (over a size limit): what the check kept goes."""
        self.check.close()

    async def commit(self) -> StoredBlob | None:
        entry, duplicates = self.entry, self.mail.duplicates
        protected = entry.protected or await self.check.result()
        if protected:
            entry.protected = protected
            self.writer.annotate({PROTECTED_TAG: metadata_value(protected)}, {PROTECTED_TAG: "true"})
        if not duplicates.applies(entry.kind, self.writer.size):
            return await self.writer.commit()
        me = self._me()
        if duplicates.mode == "skip":
            first = await duplicates.first_elsewhere(self.writer.digest, me)
            if first is not None:
                self._skipped(first)
                return None
        stored = await self.writer.commit()
        return await self._claimed(stored, me)

    async def adopt(self, stored: StoredBlob) -> StoredBlob | None:
        """A blob an earlier attempt stored: what its metadata says, and its claim (made now if a crash came
        between its commit and its claim)."""
        recorded = stored.metadata.get(PROTECTED_TAG)
        if recorded:
            self.entry.protected = unquote(recorded)
        self.drop()
        if not self.mail.duplicates.applies(self.entry.kind, stored.size):
            return stored
        return await self._claimed(stored, self._me())

    async def _claimed(self, stored: StoredBlob, me: Copy) -> StoredBlob | None:
        first = await self.mail.duplicates.claim(stored.sha256, me)
        if first is None:
            return stored
        if self.mail.duplicates.mode == "skip":  # lost the race to another mail's copy: this one goes
            await self.mail.store.delete(stored.path)
            self.entry.size, self.entry.sha256 = stored.size, stored.sha256
            self._skipped(first)
            return None
        self.entry.duplicate_of = first.to_json()
        await self.mail.store.set_tags(stored.path, {**self.writer.tags, DUPLICATE_TAG: "true"})
        self._log(first)
        return stored

    def _skipped(self, first: Copy) -> None:
        entry = self.entry
        entry.duplicate_of = first.to_json()
        entry.skipped = skipped_as_duplicate(first)
        entry.size, entry.sha256 = self.writer.size, self.writer.digest
        self._log(first)

    def _log(self, first: Copy) -> None:
        log_event(
            logger,
            "ingest.duplicate_file",
            mailbox=self.mail.mailbox,
            message_key=self.mail.key,
            file=self.entry.file,
            first_message_key=first.message_key,
            first_container=first.container,
            stored=self.entry.skipped is None,
        )
