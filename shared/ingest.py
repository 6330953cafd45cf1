"""The ingest worker: one queued change → the mail's attachments in Blob Storage, manifest last.

Idempotent: the manifest marks a message as done, so a repeated notification writes nothing new;
a retry after a failure half-way rewrites the same files at the same paths, then the manifest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from .errors import GraphNotFound
from .layout import (
    MANIFEST,
    UniqueNames,
    message_key,
    message_prefix,
    metadata_value,
    parse_graph_time,
    sanitize_name,
)
from .logs import log_event
from .messages import ChangeMessage
from .runtime import Runtime
from .settings import MailboxFolder

logger = logging.getLogger(__name__)

MESSAGE_SELECT = "id,subject,from,receivedDateTime,internetMessageId,hasAttachments,parentFolderId"
ATTACHMENT_SELECT = "id,name,contentType,size,isInline"
STREAM_CHUNK = 1024 * 1024
KINDS = {
    "#microsoft.graph.fileattachment": "file",
    "#microsoft.graph.itemattachment": "item",
    "#microsoft.graph.referenceattachment": "reference",
}


@dataclass
class ManifestEntry:
    name: str
    kind: str
    content_type: str | None
    size: int | None
    blob: str | None = None
    sha256: str | None = None
    skipped: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class IngestOutcome:
    status: str  # "ingested", "duplicate", "gone", "ignored"
    files: int = 0
    bytes: int = 0
    prefix: str | None = None


def _kind(attachment: dict[str, Any]) -> str:
    return KINDS.get(str(attachment.get("@odata.type", "")).lower(), "file")


def _message_path(mailbox: str, message_id: str) -> str:
    return f"users/{quote(mailbox, safe='@')}/messages/{quote(message_id, safe='')}"


class _MessageJob:
    def __init__(self, rt: Runtime, folder: MailboxFolder, message_id: str, prefix: str) -> None:
        self.rt = rt
        self.folder = folder
        self.prefix = prefix
        self.path = _message_path(folder.mailbox, message_id)

    async def _chunks(self, attachment_id: str) -> AsyncIterator[bytes]:
        value = f"{self.path}/attachments/{quote(attachment_id, safe='')}/$value"
        async with self.rt.graph.stream("GET", value, mailbox=self.folder.mailbox) as response:
            async for chunk in response.aiter_bytes(STREAM_CHUNK):
                yield chunk

    async def store(self, attachment: dict[str, Any], name: str, entry: ManifestEntry) -> None:
        blob_path = f"{self.prefix}/{name}"
        metadata = {
            "mailbox": metadata_value(self.folder.mailbox),
            "messagekey": self.prefix.rsplit("/", 1)[1],
            "originalname": metadata_value(str(attachment.get("name") or "")),
        }
        content_type = entry.content_type or "application/octet-stream"
        stored = await self.rt.attachments.upload_stream(
            blob_path, self._chunks(str(attachment["id"])), content_type, metadata
        )
        entry.blob, entry.size, entry.sha256 = stored.path, stored.size, stored.sha256

    async def reference_url(self, attachment: dict[str, Any]) -> str | None:
        url = f"{self.path}/attachments/{quote(str(attachment['id']), safe='')}"
        full = await self.rt.graph.request("GET", url, mailbox=self.folder.mailbox)
        source = full.get("sourceUrl")
        return str(source) if source else None


def plan(attachments: list[dict[str, Any]]) -> list[tuple[dict[str, Any], ManifestEntry]]:
    """Decide per attachment: stored under a unique safe name, recorded as a link, or skipped."""
    names = UniqueNames()
    planned = []
    for attachment in attachments:
        kind = _kind(attachment)
        raw_name = str(attachment.get("name") or "")
        content_type = attachment.get("contentType")
        size = attachment.get("size")
        entry = ManifestEntry(
            name=raw_name,
            kind=kind,
            content_type=str(content_type) if content_type else None,
            size=int(size) if isinstance(size, int) else None,
        )
        if attachment.get("isInline"):
            entry.skipped = "inline"
        elif kind == "item":
            safe = sanitize_name(raw_name, "attached message")
            if not safe.lower().endswith(".eml"):
                safe = f"{safe}.eml"
            entry.content_type = "message/rfc822"
            entry.blob = names.take(safe)
        elif kind == "file":
            entry.blob = names.take(sanitize_name(raw_name))
        planned.append((attachment, entry))
    return planned


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
    started = time.monotonic()
    try:
        message = await rt.graph.request(
            "GET",
            _message_path(folder.mailbox, change.message_id),
            mailbox=folder.mailbox,
            params={"$select": MESSAGE_SELECT, "$expand": f"attachments($select={ATTACHMENT_SELECT})"},
        )
    except GraphNotFound:
        log_event(
            logger,
            "ingest.gone",
            logging.WARNING,
            mailbox=folder.mailbox,
            subscription=change.subscription_id,
            reason="message deleted or moved before it could be fetched",
        )
        return IngestOutcome("gone")
    received = parse_graph_time(str(message["receivedDateTime"]))
    key = message_key(str(message["id"]))
    prefix = message_prefix(folder.mailbox, received, key)
    manifest_path = f"{prefix}/{MANIFEST}"
    if await rt.attachments.exists(manifest_path):
        log_event(logger, "ingest.duplicate", mailbox=folder.mailbox, message_key=key)
        return IngestOutcome("duplicate", prefix=prefix)

    job = _MessageJob(rt, folder, str(message["id"]), prefix)
    planned = plan(list(message.get("attachments") or []))
    # The GraphClient's per-mailbox limit bounds these downloads; a TaskGroup keeps them overlapping
    # and, if one fails, cancels the rest so the retry starts clean.
    try:
        async with asyncio.TaskGroup() as group:
            for attachment, entry in planned:
                if entry.blob is not None:
                    group.create_task(job.store(attachment, entry.blob, entry))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None  # one plain reason for the log and the queue's retry
    for attachment, entry in planned:
        if entry.kind == "reference" and not entry.skipped:
            entry.url = await job.reference_url(attachment)
            entry.skipped = "reference attachment: link recorded, not downloaded"

    manifest = {
        "mailbox": folder.mailbox,
        "folder": folder.folder,
        "messageKey": key,
        "messageId": message["id"],
        "internetMessageId": message.get("internetMessageId"),
        "subject": message.get("subject"),
        "from": ((message.get("from") or {}).get("emailAddress") or {}).get("address"),
        "receivedDateTime": received.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "ingestedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "subscriptionId": change.subscription_id,
        "attachments": [{k: v for k, v in asdict(e).items() if v is not None} for _, e in planned],
    }
    written = await rt.attachments.create_once(
        manifest_path, json.dumps(manifest, indent=1).encode(), "application/json"
    )
    stored = [e for _, e in planned if e.sha256]
    outcome = IngestOutcome(
        "ingested" if written else "duplicate", len(stored), sum(e.size or 0 for e in stored), prefix
    )
    log_event(
        logger,
        "ingest.done" if written else "ingest.duplicate",
        mailbox=folder.mailbox,
        message_key=key,
        files=outcome.files,
        bytes=outcome.bytes,
        ms=round((time.monotonic() - started) * 1000),
        subscription=change.subscription_id,
    )
    return outcome
