"""The ingest worker: one queued change → the mail's attachments in Blob Storage, manifest last.

Graph cost: one GET returns the message with its attachments, small files' bytes included as
`contentBytes` (read in bounded memory, `contentbytes.py`); each large file and each attached mail
adds one `/$value` stream. A repeated notification of a finished mail costs no Graph request at all.

Exactly once: file paths are fixed by the message (`layout.py`), every file is written once with
If-None-Match (a second writer adopts the first copy), and `manifest.json` is created once or
replaced only by ETag. A mail with a failed attachment gets a `partial` manifest listing what failed
and is retried; the retry completes it, reusing what is already stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from .afteringest import apply_after_ingest
from .contentbytes import ContentBytesReader, ExpandedMessage
from .errors import GraphAuthError, GraphError, GraphNotFound, GraphThrottled, IngestError, StateConflict, one_line
from .layout import (
    MANIFEST,
    UniqueNames,
    graph_time,
    message_key,
    message_prefix,
    metadata_value,
    parse_graph_time,
    sanitize_name,
)
from .logs import log_event
from .messages import ChangeMessage
from .pipeline.handoff import HandOff
from .pipeline.routes import Attachment, Decision, MailFacts, decide
from .rules import AfterIngest, SaveMail
from .runtime import Runtime
from .settings import MailboxFolder
from .storage import BlobStore, BlobWriter, StoredBlob
from .unpack.base import Encrypted, Found, Note, Signature, Sink
from .unpack.smime import DecryptionKey
from .unpack.tree import Unpacker, kind_of

logger = logging.getLogger(__name__)

MESSAGE_SELECT = (
    "id,subject,from,toRecipients,ccRecipients,receivedDateTime,internetMessageId,hasAttachments,parentFolderId,"
    "isRead,categories"
)
MESSAGE_FILE = "message.eml"  # SAVE_MESSAGE: the mail's MIME
ATTACHMENT_SELECT = "id,name,contentType,size,isInline"
# contentBytes kept in memory per file and per message; anything beyond streams from /$value.
INLINE_PER_FILE = 4 * 1024 * 1024
INLINE_PER_MESSAGE = 16 * 1024 * 1024
STREAM_CHUNK = 1024 * 1024
KINDS = {
    "#microsoft.graph.fileattachment": "file",
    "#microsoft.graph.itemattachment": "item",
    "#microsoft.graph.referenceattachment": "reference",
}
# Graph returns an attached contact as vCard and an event as iCalendar, a mail as MIME (graph_facts §8).
ITEM_EXTENSIONS = {"text/calendar": ".ics", "text/vcard": ".vcf", "text/x-vcard": ".vcf"}


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
    children: list[Entry] = field(default_factory=list)

    def record(self, stored: StoredBlob) -> None:
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
        }
        return {k: v for k, v in fields.items() if v is not None}

    def flat(self) -> list[Entry]:
        return [self, *(e for child in self.children for e in child.flat())]


@dataclass(frozen=True)
class IngestOutcome:
    status: str  # "ingested", "duplicate", "gone", "ignored"
    files: int = 0
    bytes: int = 0
    prefix: str | None = None
    key: str | None = None  # the message key, once the mail was fetched
    received: str | None = None  # its receivedDateTime (Graph's form), for the folder's activity record
    route: str | None = None  # the route that decided


def _kind(attachment: dict[str, Any]) -> str:
    return KINDS.get(str(attachment.get("@odata.type", "")).lower(), "file")


def _message_path(mailbox: str, message_id: str) -> str:
    return f"users/{quote(mailbox, safe='@')}/messages/{quote(message_id, safe='')}"


def _body_file(message: dict[str, Any]) -> str:
    html = str((message.get("body") or {}).get("contentType") or "").lower() == "html"
    return "body.html" if html else "body.txt"


def _with_extension(name: str, ext: str) -> str:
    return name if name.lower().endswith(ext) else f"{name}{ext}"


def _select(rt: Runtime) -> str:
    return MESSAGE_SELECT + (",body" if rt.settings.save.body != "never" else "")


async def _fetch(rt: Runtime, folder: MailboxFolder, path: str) -> ExpandedMessage:
    """The message with its attachments, small ones' bytes included, in one request."""
    params = {"$select": _select(rt), "$expand": "attachments"}
    try:
        reader = ContentBytesReader(INLINE_PER_FILE, INLINE_PER_MESSAGE)
        async with rt.graph.stream("GET", path, mailbox=folder.mailbox, params=params) as response:
            async for chunk in response.aiter_bytes(STREAM_CHUNK):
                reader.feed(chunk)
        return reader.result()
    except (GraphNotFound, GraphAuthError, GraphThrottled):
        raise
    except (GraphError, httpx.HTTPError, ValueError) as exc:
        # Should expanding the bytes fail (a very large mail), the attachments' metadata alone will do:
        # every file then streams from /$value.
        log_event(logger, "ingest.expand_failed", logging.WARNING, mailbox=folder.mailbox, reason=one_line(exc))
    params = {"$select": _select(rt), "$expand": f"attachments($select={ATTACHMENT_SELECT})"}
    return ExpandedMessage(await rt.graph.request("GET", path, mailbox=folder.mailbox, params=params), [])


class _Job:
    """Stores one message's attachments under `prefix`, and is the unpacker's handler: every file found
    inside a container becomes an `Entry` under the container's."""

    def __init__(self, rt: Runtime, folder: MailboxFolder, path: str, prefix: str, key: str) -> None:
        self.rt = rt
        self.rules = rt.settings.rules
        self.folder = folder
        self.path = path
        self.prefix = prefix
        self.key = key
        self.names = UniqueNames()
        self.store = rt.attachments  # the container this mail's files go to
        self.unpacker: Unpacker[Entry] = Unpacker(self, rt.settings.unpack, self._keys)
        self.tags: dict[str, str] = {}  # the deciding route's blob index tags, all but `kind`

    def route_to(self, decision: Decision, store: BlobStore) -> None:
        self.prefix, self.store, self.tags = decision.prefix, store, dict(decision.tags)

    async def _keys(self) -> Sequence[DecryptionKey]:
        return await self.rt.smime_keys.get()

    def _metadata(self, entry: Entry) -> dict[str, str]:
        metadata = {
            "mailbox": metadata_value(self.folder.mailbox),
            "messagekey": self.key,
            "originalname": metadata_value(entry.name),
        }
        if entry.parent:
            metadata["parent"] = metadata_value(entry.parent)
        if entry.path:
            metadata["archivepath"] = metadata_value(entry.path)
        return metadata

    async def _writer(self, entry: Entry) -> BlobWriter:
        assert entry.file is not None
        content_type = entry.content_type or "application/octet-stream"
        return await self.store.writer(
            f"{self.prefix}/{entry.file}", content_type, self._metadata(entry), {**self.tags, "kind": entry.kind}
        )

    def _value(self, attachment_id: str) -> AsyncIterator[bytes]:
        return self._download(f"{self.path}/attachments/{quote(attachment_id, safe='')}/$value")

    async def _download(self, value: str) -> AsyncIterator[bytes]:
        try:
            async with self.rt.graph.stream("GET", value, mailbox=self.folder.mailbox) as response:
                async for chunk in response.aiter_bytes(STREAM_CHUNK):
                    yield chunk
        except httpx.HTTPError as exc:  # the connection broke mid-body
            raise GraphThrottled(0, type(exc).__name__, str(exc) or "download interrupted", "GET $value") from exc

    def unpacks(self, entry: Entry) -> bool:
        """Whether a mail's own attachment is a container to open: even when its own file is not kept (a
        type filter), unless it is too large to download at all."""
        if entry.kind not in ("file", "item") or entry.file is None:
            return False
        if entry.size is not None and self.rules.size_skip(entry.size):
            return False
        return self.unpacker.kind(Found(entry.file, entry.content_type or ""), 1) is not None

    def plan(self, expanded: ExpandedMessage) -> list[tuple[Entry, dict[str, Any]]]:
        """Per attachment, in Graph's order: its name in the folder, or why it is skipped. The mail's own
        files (SAVE_MESSAGE, SAVE_BODY) have fixed names, taken first."""
        save = self.rt.settings.save
        if save.message != "never":
            self.names.take(MESSAGE_FILE)
        if save.body != "never":
            self.names.take(_body_file(expanded.body))
        planned = []
        for attachment in expanded.body.get("attachments") or []:
            kind = _kind(attachment)
            raw_name = str(attachment.get("name") or "")
            content_type = str(attachment.get("contentType") or "") or None
            size = attachment.get("size")
            inline = bool(attachment.get("isInline"))
            entry = Entry(raw_name, kind, content_type, size if isinstance(size, int) else None)
            if kind == "reference":
                entry.url = str(attachment.get("sourceUrl") or "") or None
                entry.skipped = "link to a cloud file: recorded, not downloaded"
            else:
                if kind == "item":
                    ext = ITEM_EXTENSIONS.get((content_type or "").lower(), ".eml")
                    entry.content_type = content_type or "message/rfc822"
                    safe = _with_extension(sanitize_name(raw_name, "attached message"), ext)
                else:
                    safe = sanitize_name(raw_name)
                entry.skipped = self.rules.skip_reason(safe, entry.content_type, inline, entry.size)
                # A container not kept itself still gets a name: the files found in it name it as parent.
                if entry.skipped is None or self.unpacker.kind(Found(safe, entry.content_type or ""), 1):
                    entry.file = self.names.take(safe)
            planned.append((entry, attachment))
        return planned

    async def store_file(self, entry: Entry, attachment: dict[str, Any], content: bytes | None) -> None:
        writer = await self._writer(entry)
        if content:  # an empty or missing contentBytes is never trusted: the bytes come from /$value
            await writer.write(content)
        else:
            existing = await self.store.stored(writer.path)
            if existing is not None:  # stored by an earlier attempt: not downloaded again
                entry.record(existing)
                return
            async for chunk in self._value(str(attachment["id"])):
                await writer.write(chunk)
        entry.record(await writer.commit())

    async def store_container(self, entry: Entry, attachment: dict[str, Any], content: bytes | None) -> None:
        """An attachment that holds files (an attached mail, smime.p7m, winmail.dat, a zip): its bytes go to
        its blob and its unpacker from one stream, `/$value` or the `contentBytes` already read."""
        assert entry.file is not None
        entry.children.clear()  # a retry extracts afresh
        writer = await self._writer(entry) if entry.skipped is None else None
        sink = self.unpacker.attachment(
            entry, Found(entry.file, entry.content_type or ""), _Extracted(self, entry, writer)
        )
        assert sink is not None
        try:
            if content:
                await sink.write(content)
            else:
                async for chunk in self._value(str(attachment["id"])):
                    await sink.write(chunk)
            await sink.close()
        except BaseException:
            await self.unpacker.abort()
            raise

    async def save_mail(self, message: dict[str, Any], entries: list[Entry]) -> list[Entry]:
        """SAVE_MESSAGE and SAVE_BODY: the mail's MIME and its body, when asked for."""
        save = self.rt.settings.save
        kept = any(e.blob for top in entries for e in top.flat())
        saved = []
        if SaveMail.wanted(save.message, kept):
            entry = Entry(MESSAGE_FILE, "message", "message/rfc822", None, file=MESSAGE_FILE)
            await _attempt(entry, self.store_message(entry))
            saved.append(entry)
        if SaveMail.wanted(save.body, kept):
            name = _body_file(message)
            content_type = f"text/{'html' if name.endswith('.html') else 'plain'}; charset=utf-8"
            entry = Entry(name, "body", content_type, None, file=name)
            await _attempt(entry, self.store_body(entry, message))
            saved.append(entry)
        return saved

    async def store_message(self, entry: Entry) -> None:
        """The mail's MIME from `GET /messages/{id}/$value`, streamed. Graph may refuse it (very large mails,
        graph_facts §8): that is recorded as the reason, not retried."""
        writer = await self._writer(entry)
        existing = await self.store.stored(writer.path)
        if existing is not None:
            entry.record(existing)
            return
        try:
            async for chunk in self._download(f"{self.path}/$value"):
                await writer.write(chunk)
        except (GraphThrottled, GraphAuthError):
            raise  # a passing outage or a permission: the queue retries, as for any request
        except GraphError as exc:
            entry.skipped = f"Graph refused the MIME export: {one_line(exc)}"
            log_event(
                logger, "ingest.mime_refused", logging.WARNING,
                mailbox=self.folder.mailbox, message_key=self.key, reason=entry.skipped,
            )  # fmt: skip
            return
        entry.record(await writer.commit())

    async def store_body(self, entry: Entry, message: dict[str, Any]) -> None:
        writer = await self._writer(entry)
        await writer.write(str((message.get("body") or {}).get("content") or "").encode())
        entry.record(await writer.commit())

    # -- the unpacker's handler --------------------------------------------------------------------
    async def open(self, parent: Entry, found: Found, container: bool) -> tuple[Entry, Sink | None] | None:
        is_message = kind_of(found.name, found.content_type) == "message"
        name = sanitize_name(found.name, "attached message" if is_message else "attachment")
        if is_message:
            name = _with_extension(name, ".eml")
        # A zip entry is named by its path as recorded (its file name is that path folded).
        entry = Entry(found.path or found.name, "file", found.content_type, None, parent=parent.file, path=found.path)
        parent.children.append(entry)
        entry.skipped = found.skipped or self.rules.skip_reason(name, found.content_type, found.inline, None)
        if entry.skipped is not None and not container:
            return entry, None  # recorded, read past
        entry.file = self.names.take(name)
        writer = await self._writer(entry) if entry.skipped is None else None
        return entry, _Extracted(self, entry, writer)

    def note(self, entry: Entry, note: Note) -> None:
        fields: dict[str, Any] = {"mailbox": self.folder.mailbox, "message_key": self.key, "file": entry.file}
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
                reason = note.reason or "not decrypted"
                log_event(
                    logger,
                    "unpack.encrypted",
                    logging.WARNING,
                    **fields,
                    recipients=list(note.recipients),
                    reason=reason,
                )
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
            mailbox=self.folder.mailbox, message_key=self.key, file=entry.file, reason=reason, discarded=len(below),
        )  # fmt: skip


class _Extracted:
    """A file found inside a container, as it streams past: written to its blob unless a rule skips it
    (the size rules are judged once its length is known)."""

    def __init__(self, job: _Job, entry: Entry, writer: BlobWriter | None) -> None:
        self.job = job
        self.entry = entry
        self.writer = writer
        self.size = 0

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.writer is not None and self.size > self.job.rules.max_bytes:
            self.writer = None  # over the limit: the rest is read past
        if self.writer is not None:
            await self.writer.write(data)

    async def close(self) -> None:
        self.entry.size = self.size
        if self.entry.skipped is not None:
            return
        self.entry.skipped = self.job.rules.size_skip(self.size)
        if self.entry.skipped is None and self.writer is not None:
            self.entry.record(await self.writer.commit())


async def _attempt(entry: Entry, work: Awaitable[None]) -> None:
    """One attachment's work; a failure is recorded on it and does not stop the others."""
    try:
        await work
    except Exception as exc:
        entry.failed = one_line(exc)


class _Markers:
    """Records beside the app's state: a mail finished (manifest and after-ingest actions done), or
    gone before it could be fetched. Keyed by the notified id, so a repeat is caught before Graph."""

    def __init__(self, rt: Runtime, folder: MailboxFolder, change: ChangeMessage) -> None:
        self.rt = rt
        self.key = message_key(change.message_id)
        self.done = f"done/{folder.mailbox}/{self.key}.json"
        self.gone = f"gone/{folder.mailbox}/{self.key}.json"

    async def is_done(self) -> bool:
        return await self.rt.state.read_json(self.done) is not None

    async def mark(self, path: str, record: dict[str, Any]) -> None:
        with contextlib.suppress(StateConflict):  # already marked by a concurrent worker
            await self.rt.state.write_json(path, record, None)


async def ingest_change(change: ChangeMessage, rt: Runtime) -> IngestOutcome:
    folder = rt.settings.folder_by_key(change.folder_key)
    if folder is None:
        log_event(
            logger,
            "ingest.ignored",
            logging.WARNING,
            reason="folder no longer configured",
            folder_key=change.folder_key,
        )
        return IngestOutcome("ignored")
    if change.change_type.lower() != "created":
        log_event(logger, "ingest.ignored", reason=f"changeType {change.change_type}", mailbox=folder.mailbox)
        return IngestOutcome("ignored")
    markers = _Markers(rt, folder, change)
    if await markers.is_done():
        log_event(logger, "ingest.duplicate", mailbox=folder.mailbox, message_key=markers.key)
        return IngestOutcome("duplicate")
    started = time.monotonic()
    path = _message_path(folder.mailbox, change.message_id)
    try:
        expanded = await _fetch(rt, folder, path)
    except GraphNotFound:
        reason = "message deleted or moved away before it could be fetched"
        record = {
            "messageId": change.message_id,
            "subscriptionId": change.subscription_id,
            "at": graph_time(datetime.now(UTC)),
        }
        await markers.mark(markers.gone, {**record, "reason": reason, "folder": folder.folder})
        log_event(
            logger, "ingest.gone", logging.WARNING, mailbox=folder.mailbox, message_key=markers.key, reason=reason
        )
        return IngestOutcome("gone")
    message = expanded.body
    received = parse_graph_time(str(message["receivedDateTime"]))
    key = message_key(str(message["id"]))
    job = _Job(rt, folder, path, message_prefix(folder.mailbox, received, key), key)
    planned = job.plan(expanded)
    decision = decide(rt.settings.routes, _facts(job, message, received, planned))
    if decision.skip:
        return await _skip(rt, folder, change, markers, path, message, received, decision)
    store = rt.container(decision.container)
    job.route_to(decision, store)
    prefix = decision.prefix
    manifest_path = f"{prefix}/{MANIFEST}"

    existing = await store.read_json(manifest_path)
    written = existing is None or existing[0].get("status", "complete") != "complete"
    entries: list[Entry] = []
    final = existing[0] if existing else {}
    if written:
        entries = [entry for entry, _ in planned]
        await _store(job, planned, expanded)
        await _reference_urls(rt, folder, path, planned)
        entries += await job.save_mail(message, entries)
        final = _manifest(folder, change, message, received, key, entries, decision)
        try:
            await store.write_json(
                manifest_path, final, existing[1] if existing else None, {**decision.tags, "kind": "manifest"}
            )
        except StateConflict:
            # Another worker wrote it first: fine if it finished the mail, else the queue retries.
            again = await store.read_json(manifest_path)
            if again is None or again[0].get("status") != "complete":
                raise
            written, final = False, again[0]
        failed = [e for top in entries for e in top.flat() if e.failed]
        if written and failed:
            names = "; ".join(f"{e.name or '(no name)'}: {e.failed}" for e in failed[:3])
            raise AttachmentsFailed(f"{len(failed)} attachment(s) failed, recorded in the manifest: {names}")

    if rt.settings.ingested_queue:
        queue = rt.settings.ingested_queue
        send = HandOff(rt.state, lambda text: rt.send_queue_message(queue, text), queue)
        await send(final, store, manifest_path, wrote_manifest=written)
    await apply_after_ingest(rt, folder, path, message, key, decision.after_ingest)
    await markers.mark(markers.done, {"prefix": prefix, "route": decision.route, "at": graph_time(datetime.now(UTC))})
    stored = [e for top in entries for e in top.flat() if e.sha256]
    outcome = IngestOutcome(
        "ingested" if written else "duplicate",
        len(stored),
        sum(e.size or 0 for e in stored),
        prefix,
        key,
        graph_time(received),
        decision.route,
    )
    log_event(
        logger,
        "ingest.done" if written else "ingest.duplicate",
        mailbox=folder.mailbox,
        folder=folder.folder,
        message_key=key,
        route=decision.route,
        files=outcome.files,
        bytes=outcome.bytes,
        skipped=sum(1 for top in entries for e in top.flat() if e.skipped),
        duration_ms=round((time.monotonic() - started) * 1000),
        subscription=change.subscription_id,
    )
    return outcome


async def _store(job: _Job, planned: list[tuple[Entry, dict[str, Any]]], expanded: ExpandedMessage) -> None:
    """Files in parallel (the Graph client bounds requests per mailbox); containers (attached mails,
    S/MIME, winmail.dat, zips) one after another, so the names of the files found inside them are the
    same on every attempt."""

    async def containers() -> None:
        for entry, attachment in planned:
            if job.unpacks(entry):
                await _attempt(entry, job.store_container(entry, attachment, expanded.content_of(attachment)))

    files = [
        _attempt(entry, job.store_file(entry, attachment, expanded.content_of(attachment)))
        for entry, attachment in planned
        if entry.kind in ("file", "item") and entry.skipped is None and not job.unpacks(entry)
    ]
    await asyncio.gather(containers(), *files)
    for entry, _ in planned:
        for found in entry.flat()[1:]:
            if found.file and not (found.blob or found.skipped or found.failed):
                # Its container broke off before the file was whole (the container records why).
                found.skipped = "incomplete: its container ends early or is damaged"


async def _reference_urls(
    rt: Runtime, folder: MailboxFolder, path: str, planned: list[tuple[Entry, dict[str, Any]]]
) -> None:
    """A link's URL comes with the expanded message; only the metadata-only fallback lacks it."""
    for entry, attachment in planned:
        if entry.kind == "reference" and entry.url is None:
            url = f"{path}/attachments/{quote(str(attachment['id']), safe='')}"
            with contextlib.suppress(GraphError):
                full = await rt.graph.request("GET", url, mailbox=folder.mailbox)
                entry.url = str(full.get("sourceUrl") or "") or None


def _address(recipient: Any) -> str:
    return str(((recipient or {}).get("emailAddress") or {}).get("address") or "")


def _facts(job: _Job, message: dict[str, Any], received: datetime, planned: list[tuple[Entry, Any]]) -> MailFacts:
    """What routes look at: a file is kept when the rules keep it, or may keep files found inside it."""
    recipients = [*(message.get("toRecipients") or []), *(message.get("ccRecipients") or [])]
    documents = [entry for entry, _ in planned if entry.kind != "reference"]
    return MailFacts(
        mailbox=job.folder.mailbox,
        folder=job.folder.folder,
        message_key=job.key,
        received=received,
        sender=_address(message.get("from")) or None,
        recipients=tuple(a for a in map(_address, recipients) if a),
        subject=str(message.get("subject") or ""),
        attachments=tuple(Attachment(e.name, e.content_type) for e in documents),
        has_kept_file=any(e.skipped is None or job.unpacks(e) for e in documents),
    )


async def _skip(
    rt: Runtime,
    folder: MailboxFolder,
    change: ChangeMessage,
    markers: _Markers,
    path: str,
    message: dict[str, Any],
    received: datetime,
    decision: Decision,
) -> IngestOutcome:
    """A skip route: nothing stored. The mail is recorded with the route's name (`skipped/` beside `done/`
    in the state container); only the route's own after-ingest action applies, not AFTER_INGEST."""
    record = {
        "route": decision.route,
        "mailbox": folder.mailbox,
        "folder": folder.folder,
        "messageId": message["id"],
        "internetMessageId": message.get("internetMessageId"),
        "from": _address(message.get("from")) or None,
        "subject": message.get("subject"),
        "receivedDateTime": graph_time(received),
        "at": graph_time(datetime.now(UTC)),
    }
    await markers.mark(f"skipped/{folder.mailbox}/{markers.key}.json", record)
    await apply_after_ingest(rt, folder, path, message, markers.key, decision.after_ingest or AfterIngest())
    await markers.mark(markers.done, {"route": decision.route, "skipped": True, "at": record["at"]})
    log_event(
        logger,
        "ingest.skipped",
        mailbox=folder.mailbox,
        folder=folder.folder,
        message_key=markers.key,
        route=decision.route,
        sender_domain=decision.tags.get("senderDomain"),
    )
    return IngestOutcome("skipped", key=markers.key, received=graph_time(received), route=decision.route)


def _manifest(
    folder: MailboxFolder,
    change: ChangeMessage,
    message: dict[str, Any],
    received: datetime,
    key: str,
    entries: list[Entry],
    decision: Decision,
) -> dict[str, Any]:
    flat = [e for top in entries for e in top.flat()]
    return {
        "status": "partial" if any(e.failed for e in flat) else "complete",
        "mailbox": folder.mailbox,
        "folder": folder.folder,
        "messageKey": key,
        "messageId": message["id"],
        "internetMessageId": message.get("internetMessageId"),
        "subject": message.get("subject"),
        "from": ((message.get("from") or {}).get("emailAddress") or {}).get("address"),
        "receivedDateTime": received.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "ingestedAt": graph_time(datetime.now(UTC)),
        "subscriptionId": change.subscription_id,
        "route": decision.route,
        "tags": dict(decision.tags),
        "attachments": [e.to_json() for e in flat],
    }
