"""What storing a mail takes, whatever its content's shape: the manifest's entries, the unpacker's handler
that writes each file found to its blob (`Job`, which `attachments.ListedJob` and `rawmail.RawJob` extend),
the markers of finished mails, and the mail's completion (manifest last, the hand-off, the `done/` marker,
the log line). `ingest.py` runs them in order; this module knows blobs and the manifest and nothing of
any protocol.

Exactly once: file paths are fixed by the message (`layout.py`), every file is written once with
If-None-Match (a second writer adopts the first copy), and `manifest.json` is created once or replaced
only by ETag. A mail with a failed file gets a `partial` manifest listing what failed and is retried; the
retry completes it, reusing what is already stored.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import IngestError, StateConflict, one_line
from ..logs import log_event
from ..unpack.base import Damaged, Encrypted, Found, Note, Signature, Sink
from ..unpack.protection import smime_not_opened
from ..unpack.smime import DecryptionKey
from ..unpack.tree import Unpacker, kind_of
from .duplicates import Duplicates
from .filecheck import CheckedWriter
from .handoff import HandOff
from .layout import MANIFEST, UniqueNames, graph_time, metadata_value, sanitize_name
from .malware.records import is_pending
from .malware.settle import await_verdicts
from .routes import Decision
from .storage import BlobStore, BlobWriter, StoredBlob

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger(__name__)

MESSAGE_FILE = "message.eml"  # SAVE_MESSAGE: the mail's MIME
BODY_FILES = {"text/html": "body.html", "text/plain": "body.txt"}  # SAVE_BODY: the mail's body, by its type


class AttachmentsFailed(IngestError):
    """Some attachments could not be stored; the manifest lists them and the message is retried."""


@dataclass
class Entry:
    """One line of the manifest: an attachment, or a file found inside a container (an attached mail,
    S/MIME, winmail.dat, a zip)."""

    name: str
    kind: str  # file | item | reference | message (the mail's MIME) | body
    content_type: str | None
    size: int | None
    file: str | None = None  # its name in the message's folder
    blob: str | None = None
    sha256: str | None = None
    parent: str | None = None  # `file` of the container it came from
    url: str | None = None
    skipped: str | None = None
    failed: str | None = None
    path: str | None = None  # its path inside a zip archive, as recorded there
    signature: dict[str, Any] | None = None  # S/MIME: the signature's verdict
    encrypted: dict[str, Any] | None = None  # S/MIME: the envelope's recipients, whether it was opened
    problem: str | None = None  # a container that could not be read to the end, or only in part
    duplicate_of: dict[str, str] | None = None  # the first copy of the same bytes (duplicates.Copy)
    protected: str | None = None  # why it cannot be read (a password, an envelope, rights protection)
    damaged: str | None = None  # its container (or itself) is damaged: read as far as it goes, to be checked
    children: list[Entry] = field(default_factory=list)

    def record(self, stored: StoredBlob | None) -> None:
        """Where it was stored; None: it was not (a copy DUPLICATES=skip does not store)."""
        if stored is not None:
            self.blob, self.size, self.sha256 = stored.path, stored.size, stored.sha256

    def to_json(self) -> dict[str, Any]:
        fields = {
            "name": self.name,
            "kind": self.kind,
            "contentType": self.content_type,
            "size": self.size,
            "file": self.file if self.blob else None,
            "blob": self.blob,
            "sha256": self.sha256,
            "parent": self.parent,
            "url": self.url,
            "skipped": self.skipped,
            "failed": self.failed,
            "path": self.path,
            "signature": self.signature,
            "encrypted": self.encrypted,
            "problem": self.problem,
            "duplicateOf": self.duplicate_of,
            "protected": self.protected,
            "damaged": self.damaged,
        }
        return {k: v for k, v in fields.items() if v is not None}

    def flat(self) -> list[Entry]:
        return [self, *(e for child in self.children for e in child.flat())]


def body_entry(name: str) -> Entry:
    """SAVE_BODY's entry: `body.html` or `body.txt` (BODY_FILES), stored as UTF-8 whatever the mail's charset."""
    content_type = next(t for t, file in BODY_FILES.items() if file == name)
    return Entry(name, "body", f"{content_type}; charset=utf-8", None, file=name)


def flatten(entries: Sequence[Entry]) -> list[Entry]:
    return [e for top in entries for e in top.flat()]


@dataclass(frozen=True)
class IngestOutcome:
    status: str  # "ingested", "duplicate", "gone", "ignored", "skipped"
    files: int = 0
    bytes: int = 0
    prefix: str | None = None
    key: str | None = None  # the message key, once the mail was fetched
    received: str | None = None  # its receivedDateTime (Graph's form), for the folder's activity record
    route: str | None = None  # the route that decided


@dataclass(frozen=True)
class Stored:
    """Where a mail's files go, and the manifest an earlier attempt wrote there, if any."""

    store: BlobStore
    manifest_path: str
    existing: tuple[dict[str, Any], str] | None  # the manifest and its ETag

    @property
    def to_write(self) -> bool:
        """Whether the mail still needs its files and manifest (none yet, or a `partial` one)."""
        return self.existing is None or self.existing[0].get("status", "complete") != "complete"

    @property
    def manifest(self) -> dict[str, Any]:
        return self.existing[0] if self.existing else {}

    @property
    def etag(self) -> str | None:
        return self.existing[1] if self.existing else None


def with_extension(name: str, ext: str) -> str:
    return name if name.lower().endswith(ext) else f"{name}{ext}"


class Job:
    """Stores one message's files under `prefix`, and is the unpacker's handler: every file found inside a
    container becomes an `Entry` under the container's."""

    def __init__(self, rt: Runtime, mailbox: str, prefix: str, key: str, received: datetime) -> None:
        self.rt = rt
        self.received = graph_time(received)
        self.rules = rt.settings.rules
        self.mailbox = mailbox
        self.prefix = prefix
        self.key = key
        self.names = UniqueNames()
        self.store = rt.attachments  # the container this mail's files go to
        self.unpacker: Unpacker[Entry] = Unpacker(self, rt.settings.unpack, self._keys)
        self.tags: dict[str, str] = {}  # the deciding route's blob index tags, all but `kind`
        self.problem: str | None = None  # the mail's own MIME could be read only in part (a raw mail's)
        self.signature: dict[str, Any] | None = None  # the mail's own S/MIME signature (a raw multipart/signed)

    @functools.cached_property
    def duplicates(self) -> Duplicates:
        return Duplicates(self.rt.state, self.rt.container, self.rt.settings.duplicates)

    def route_to(self, decision: Decision, store: BlobStore) -> None:
        self.prefix, self.store, self.tags = decision.prefix, store, dict(decision.tags)

    async def routed(self, decision: Decision) -> Stored:
        """Store under the deciding route (its container, prefix and tags); what an earlier attempt left."""
        store = self.rt.container(decision.container)
        self.route_to(decision, store)
        path = f"{decision.prefix}/{MANIFEST}"
        return Stored(store, path, await store.read_json(path))

    async def _keys(self) -> Sequence[DecryptionKey]:
        return await self.rt.smime_keys.get()

    def _metadata(self, entry: Entry) -> dict[str, str]:
        metadata = {
            "mailbox": metadata_value(self.mailbox),
            "messagekey": self.key,
            "originalname": metadata_value(entry.name),
        }
        if entry.parent:
            metadata["parent"] = metadata_value(entry.parent)
        if entry.path:
            metadata["archivepath"] = metadata_value(entry.path)
        return metadata

    async def writer(self, entry: Entry) -> BlobWriter:
        assert entry.file is not None
        content_type = entry.content_type or "application/octet-stream"
        return await self.store.writer(
            f"{self.prefix}/{entry.file}", content_type, self._metadata(entry), {**self.tags, "kind": entry.kind}
        )

    async def file_writer(self, entry: Entry) -> CheckedWriter:
        """A document's writer: checked for protection and duplicates as it passes (`filecheck.py`)."""
        return CheckedWriter(self, entry, await self.writer(entry))

    # -- the unpacker's handler --------------------------------------------------------------------
    async def open(self, parent: Entry, found: Found, container: bool) -> tuple[Entry, Sink | None] | None:
        is_message = kind_of(found.name, found.content_type) == "message"
        name = sanitize_name(found.name, "attached message" if is_message else "attachment")
        if is_message:
            name = with_extension(name, ".eml")
        # A zip entry is named by its path as recorded (its file name is that path folded).
        entry = Entry(found.path or found.name, "file", found.content_type, None, parent=parent.file, path=found.path)
        parent.children.append(entry)
        entry.protected, entry.damaged = found.protected, found.damaged
        entry.skipped = found.skipped or self.rules.skip_reason(name, found.content_type, found.inline, None)
        if entry.skipped is not None and not container:
            return entry, None  # recorded, read past
        entry.file = self.names.take(name)
        writer = await self.file_writer(entry) if entry.skipped is None else None
        return entry, Extracted(self, entry, writer)

    def note(self, entry: Entry, note: Note) -> None:
        fields: dict[str, Any] = {"mailbox": self.mailbox, "message_key": self.key, "file": entry.file}
        if isinstance(note, Signature):
            if entry.signature is None or (entry.signature["status"] == "valid" and note.status != "valid"):
                entry.signature = note.to_json()
            level = logging.INFO if note.status == "valid" else logging.WARNING
            log_event(
                logger, "unpack.signature", level, **fields, status=note.status, signer=note.signer, reason=note.reason
            )
        elif isinstance(note, Encrypted):
            entry.encrypted = note.to_json()
            if not note.decrypted:
                entry.protected = smime_not_opened(note.reason)
                reason = note.reason or "not decrypted"
                log_event(
                    logger,
                    "unpack.encrypted",
                    logging.WARNING,
                    **fields,
                    recipients=list(note.recipients),
                    reason=reason,
                )
        elif isinstance(note, Damaged):
            entry.damaged = note.reason
            log_event(logger, "unpack.damaged", logging.WARNING, **fields, reason=note.reason)
        else:
            entry.problem = note.reason
            log_event(logger, "unpack.problem", logging.WARNING, **fields, reason=note.reason)

    async def discard(self, entry: Entry, reason: str) -> None:
        """A refused container (a zip bomb): the blobs of what was found in it before are deleted."""
        below = [e for child in entry.children for e in child.flat()]
        for found in below:
            if found.blob:
                await self.store.delete(found.blob)
        entry.children.clear()
        entry.skipped = reason
        entry.blob = entry.sha256 = None
        log_event(
            logger, "unpack.refused", logging.WARNING,
            mailbox=self.mailbox, message_key=self.key, file=entry.file, reason=reason, discarded=len(below),
        )  # fmt: skip


class Extracted:
    """A file found inside a container, as it streams past: written to its blob unless a rule skips it
    (the size rules are judged once its length is known)."""

    def __init__(self, job: Job, entry: Entry, writer: CheckedWriter | None) -> None:
        self.job = job
        self.entry = entry
        self.writer = writer
        self.size = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.writer is not None and self.size > self.job.rules.max_bytes:
            self.writer.drop()
            self.writer = None  # over the limit: the rest is read past
        if self.writer is not None:
            await self.writer.write(data)

    async def close(self) -> None:
        self.entry.size = self.size
        if self.entry.skipped is not None:
            return
        self.entry.skipped = self.job.rules.size_skip(self.size)
        if self.writer is None:
            return
        if self.entry.skipped is None:
            self.entry.record(await self.writer.commit())
        else:
            self.writer.drop()


async def attempt(entry: Entry, work: Awaitable[None]) -> None:
    """One attachment's work; a failure is recorded on it and does not stop the others."""
    try:
        await work
    except Exception as exc:
        entry.failed = one_line(exc)


def mark_incomplete(entries: Sequence[Entry]) -> None:
    """A file whose container broke off before the file was whole (the container records why)."""
    for top in entries:
        for found in top.flat()[1:]:
            if found.file and not (found.blob or found.skipped or found.failed):
                found.skipped = "incomplete: its container ends early or is damaged"


class Markers:
    """Records beside the app's state, keyed by the message key, so a repeat is caught before the source
    is asked for anything: a mail finished (manifest and after-ingest actions done), gone before it could
    be fetched, or recorded by a skip route."""

    def __init__(self, rt: Runtime, mailbox: str, key: str) -> None:
        self.rt = rt
        self.key = key
        self.done = f"done/{mailbox}/{key}.json"
        self.gone = f"gone/{mailbox}/{key}.json"
        self.skipped = f"skipped/{mailbox}/{key}.json"

    async def is_done(self) -> bool:
        return await self.rt.state.read_json(self.done) is not None

    async def mark(self, path: str, record: dict[str, Any]) -> None:
        with contextlib.suppress(StateConflict):  # already marked by a concurrent worker
            await self.rt.state.write_json(path, record, None)


def manifest(
    status_of: Sequence[Entry],
    *,
    mailbox: str,
    folder: str,
    key: str,
    received: datetime,
    decision: Decision,
    mail: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest of a mail: `mail` holds what its source says of it (ids, subject, sender, source), the
    rest is the same for every source."""
    flat = flatten(status_of)
    return {
        "status": "partial" if any(e.failed for e in flat) else "complete",
        "mailbox": mailbox,
        "folder": folder,
        "messageKey": key,
        **mail,
        "receivedDateTime": received.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "ingestedAt": graph_time(datetime.now(UTC)),
        "route": decision.route,
        "tags": dict(decision.tags),
        "attachments": [e.to_json() for e in flat],
    }


async def write_manifest(
    store: BlobStore, path: str, final: dict[str, Any], etag: str | None, decision: Decision, entries: Sequence[Entry]
) -> tuple[bool, dict[str, Any]]:
    """Create (or replace by ETag) the manifest; (whether this worker wrote it, the manifest that stands).
    A mail with failed files raises AttachmentsFailed once its partial manifest is written."""
    try:
        await store.write_json(path, final, etag, {**decision.tags, "kind": "manifest"})
    except StateConflict:
        # Another worker wrote it first: fine if it finished the mail, else the queue retries.
        again = await store.read_json(path)
        if again is None or again[0].get("status") != "complete":
            raise
        return False, again[0]
    failed = [e for e in flatten(entries) if e.failed]
    if failed:
        names = "; ".join(f"{e.name or '(no name)'}: {e.failed}" for e in failed[:3])
        raise AttachmentsFailed(f"{len(failed)} attachment(s) failed, recorded in the manifest: {names}")
    return True, final


async def hand_off(rt: Runtime, final: Mapping[str, Any], store: BlobStore, path: str, *, written: bool) -> None:
    """The "mail ingested" message (INGESTED_QUEUE), before the after-ingest actions. A mail whose files await
    their malware verdicts is recorded as awaiting instead; once settled, the verdict worker hands it off."""
    if final.get("malwareScan") is not None:
        if is_pending(final):
            await await_verdicts(rt, final, store, path)
        return
    if rt.settings.ingested_queue:
        queue = rt.settings.ingested_queue
        send = HandOff(rt.state, lambda text: rt.send_queue_message(queue, text), queue)
        await send(final, store, path, wrote_manifest=written)


async def finish(
    markers: Markers,
    decision: Decision,
    entries: Sequence[Entry],
    *,
    key: str,
    written: bool,
    received: datetime,
    started: float,
    where: Mapping[str, Any],
) -> IngestOutcome:
    """The `done/` marker (after the after-ingest actions), the outcome and its log line."""
    at = graph_time(datetime.now(UTC))
    await markers.mark(markers.done, {"prefix": decision.prefix, "route": decision.route, "at": at})
    stored = [e for e in flatten(entries) if e.blob]  # a skipped duplicate has its sha256, not a blob
    outcome = IngestOutcome(
        "ingested" if written else "duplicate",
        len(stored),
        sum(e.size or 0 for e in stored),
        decision.prefix,
        key,
        graph_time(received),
        decision.route,
    )
    log_event(
        logger,
        "ingest.done" if written else "ingest.duplicate",
        **where,
        message_key=key,
        route=decision.route,
        files=outcome.files,
        bytes=outcome.bytes,
        skipped=sum(1 for e in flatten(entries) if e.skipped),
        duration_ms=round((time.monotonic() - started) * 1000),
        # From the mail's arrival at its server (receivedDateTime, the newest Received:) to now: the lag of every
        # source alike, which the workbook charts per folder and account.
        lag_ms=max(0, round((datetime.now(UTC) - received).total_seconds() * 1000)),
    )
    return outcome


async def skip(
    markers: Markers,
    decision: Decision,
    record: Mapping[str, Any],
    received: datetime,
    where: Mapping[str, Any],
    after_ingest: Callable[[], Awaitable[object]],
) -> IngestOutcome:
    """A skip route: nothing stored. The mail is recorded with the route's name (`skipped/` beside `done/` in
    the state container); then the route's own after-ingest action, and the `done/` marker."""
    at = graph_time(datetime.now(UTC))
    await markers.mark(markers.skipped, {"route": decision.route, **record, "at": at})
    await after_ingest()
    await markers.mark(markers.done, {"route": decision.route, "skipped": True, "at": at})
    log_event(
        logger,
        "ingest.skipped",
        **where,
        message_key=markers.key,
        route=decision.route,
        sender_domain=decision.tags.get("senderDomain"),
    )
    return IngestOutcome("skipped", key=markers.key, received=graph_time(received), route=decision.route)
