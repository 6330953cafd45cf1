"""The ingest worker: one queued change → the mail's attachments in Blob Storage, manifest last.

Graph cost: one GET returns the message with its attachments, small files' bytes included as
`contentBytes` (read in bounded memory, `contentbytes.py`); each large file and each attached mail
adds one `/$value` stream. A repeated notification of a finished mail costs no Graph request at all.

What is not Graph's (entries, blobs, manifest, hand-off, markers) is `pipeline/job.py`, shared with the
IMAP and POP3 sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from ...errors import GraphAuthError, GraphError, GraphNotFound, GraphThrottled, one_line
from ...logs import log_event
from ...pipeline.job import (
    BODY_FILES,
    MESSAGE_FILE,
    Entry,
    Extracted,
    IngestOutcome,
    Job,
    Markers,
    attempt,
    body_entry,
    finish,
    hand_off,
    manifest,
    mark_incomplete,
    skip,
    with_extension,
    write_manifest,
)
from ...pipeline.layout import graph_time, message_key, message_prefix, parse_graph_time, sanitize_name
from ...pipeline.routes import Attachment, MailFacts, decide
from ...pipeline.rules import AfterIngest, SaveMail
from ...runtime import Runtime
from ...settings import MailboxFolder
from ...unpack.base import Found
from .afteringest import apply_after_ingest
from .contentbytes import ContentBytesReader, ExpandedMessage
from .messages import ChangeMessage

logger = logging.getLogger(__name__)

MESSAGE_SELECT = (
    "id,subject,from,toRecipients,ccRecipients,receivedDateTime,internetMessageId,hasAttachments,parentFolderId,"
    "isRead,categories"
)
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


def _kind(attachment: dict[str, Any]) -> str:
    return KINDS.get(str(attachment.get("@odata.type", "")).lower(), "file")


def _message_path(mailbox: str, message_id: str) -> str:
    return f"users/{quote(mailbox, safe='@')}/messages/{quote(message_id, safe='')}"


def _body_file(message: dict[str, Any]) -> str:
    html = str((message.get("body") or {}).get("contentType") or "").lower() == "html"
    return BODY_FILES["text/html" if html else "text/plain"]


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


class _Job(Job):
    """A Graph message's attachments: planned from the expanded message, each file's bytes from its
    `contentBytes` or `/$value`."""

    def __init__(self, rt: Runtime, folder: MailboxFolder, path: str, prefix: str, key: str) -> None:
        super().__init__(rt, folder.mailbox, prefix, key)
        self.folder = folder
        self.path = path

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
                    safe = with_extension(sanitize_name(raw_name, "attached message"), ext)
                else:
                    safe = sanitize_name(raw_name)
                entry.skipped = self.rules.skip_reason(safe, entry.content_type, inline, entry.size)
                # A container not kept itself still gets a name: the files found in it name it as parent.
                if entry.skipped is None or self.unpacker.kind(Found(safe, entry.content_type or ""), 1):
                    entry.file = self.names.take(safe)
            planned.append((entry, attachment))
        return planned

    async def store_file(self, entry: Entry, attachment: dict[str, Any], content: bytes | None) -> None:
        writer = await self.writer(entry)
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
        writer = await self.writer(entry) if entry.skipped is None else None
        sink = self.unpacker.attachment(
            entry, Found(entry.file, entry.content_type or ""), Extracted(self, entry, writer)
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
            await attempt(entry, self.store_message(entry))
            saved.append(entry)
        if SaveMail.wanted(save.body, kept):
            entry = body_entry(_body_file(message))
            await attempt(entry, self.store_body(entry, message))
            saved.append(entry)
        return saved

    async def store_message(self, entry: Entry) -> None:
        """The mail's MIME from `GET /messages/{id}/$value`, streamed. Graph may refuse it (very large mails,
        graph_facts §8): that is recorded as the reason, not retried."""
        writer = await self.writer(entry)
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
                mailbox=self.mailbox, message_key=self.key, reason=entry.skipped,
            )  # fmt: skip
            return
        entry.record(await writer.commit())

    async def store_body(self, entry: Entry, message: dict[str, Any]) -> None:
        writer = await self.writer(entry)
        await writer.write(str((message.get("body") or {}).get("content") or "").encode())
        entry.record(await writer.commit())


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
    markers = Markers(rt, folder.mailbox, message_key(change.message_id))
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
    where = {"mailbox": folder.mailbox, "folder": folder.folder}
    if decision.skip:
        record = {**where, **_mail(message), "receivedDateTime": graph_time(received)}
        # Only the route's own after-ingest action applies, not AFTER_INGEST.
        action = decision.after_ingest or AfterIngest()
        return await skip(
            markers, decision, record, received, where,
            lambda: apply_after_ingest(rt, folder, path, message, markers.key, action),
        )  # fmt: skip
    at = await job.routed(decision)
    written, final, entries = at.to_write, at.manifest, []
    if written:
        entries = [entry for entry, _ in planned]
        await _store(job, planned, expanded)
        await _reference_urls(rt, folder, path, planned)
        entries += await job.save_mail(message, entries)
        mail = {**_mail(message), "source": "graph", "subscriptionId": change.subscription_id}
        final = manifest(
            entries, mailbox=folder.mailbox, folder=folder.folder, key=key, received=received, decision=decision,
            mail=mail,
        )  # fmt: skip
        written, final = await write_manifest(at.store, at.manifest_path, final, at.etag, decision, entries)
    await hand_off(rt, final, at.store, at.manifest_path, written=written)
    await apply_after_ingest(rt, folder, path, message, key, decision.after_ingest)
    where["subscription"] = change.subscription_id
    return await finish(
        markers, decision, entries, key=key, written=written, received=received, started=started, where=where
    )


async def _store(job: _Job, planned: list[tuple[Entry, dict[str, Any]]], expanded: ExpandedMessage) -> None:
    """Files in parallel (the Graph client bounds requests per mailbox); containers (attached mails,
    S/MIME, winmail.dat, zips) one after another, so the names of the files found inside them are the
    same on every attempt."""

    async def containers() -> None:
        for entry, attachment in planned:
            if job.unpacks(entry):
                await attempt(entry, job.store_container(entry, attachment, expanded.content_of(attachment)))

    files = [
        attempt(entry, job.store_file(entry, attachment, expanded.content_of(attachment)))
        for entry, attachment in planned
        if entry.kind in ("file", "item") and entry.skipped is None and not job.unpacks(entry)
    ]
    await asyncio.gather(containers(), *files)
    mark_incomplete([entry for entry, _ in planned])


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


def _mail(message: dict[str, Any]) -> dict[str, Any]:
    """What the manifest and a skip record say of a Graph message."""
    return {
        "messageId": message["id"],
        "internetMessageId": message.get("internetMessageId"),
        "subject": message.get("subject"),
        "from": _address(message.get("from")) or None,
    }
