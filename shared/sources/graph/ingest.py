"""Graph's side of the ingest worker: one queued change → the mail in hand (`pipeline/mail.py`), which the
pipeline stores (`pipeline/ingest.py`, the same steps for every source).

Graph cost: one GET returns the message with its attachments, small files' bytes included as
`contentBytes` (read in bounded memory, `contentbytes.py`); each large file and each attached mail
adds one `/$value` stream. A repeated notification of a finished mail costs no Graph request at all:
the pipeline reads its `done/` marker before it opens the mail.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from ...errors import GraphAuthError, GraphError, GraphNotFound, GraphThrottled, one_line
from ...logs import log_event
from ...pipeline.ingest import ingest
from ...pipeline.job import IngestOutcome
from ...pipeline.layout import message_key, parse_graph_time
from ...pipeline.mail import Arrival, ExportRefused, Listed, Mail, MailGone, Part
from ...pipeline.routes import MailFacts
from ...pipeline.rules import AfterIngest
from ...pipeline.senderauth import from_exchange_online
from ...runtime import Runtime
from ...settings import MailboxFolder
from .afteringest import apply_after_ingest
from .contentbytes import ContentBytesReader, ExpandedMessage
from .messages import ChangeMessage

logger = logging.getLogger(__name__)

# internetMessageHeaders come back only when selected: the receiving server's Authentication-Results, in the
# same request (pipeline/senderauth.py; its cost is in docs/proof.md, Benchmarks).
MESSAGE_SELECT = (
    "id,subject,from,toRecipients,ccRecipients,receivedDateTime,internetMessageId,hasAttachments,parentFolderId,"
    "isRead,categories,internetMessageHeaders"
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


def _body(message: dict[str, Any]) -> tuple[str, str]:
    """The mail's body as Graph gives it (selected only for SAVE_BODY): its type and text."""
    body = message.get("body") or {}
    html = str(body.get("contentType") or "").lower() == "html"
    return "text/html" if html else "text/plain", str(body.get("content") or "")


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


class _Message:
    """Streams of one Graph message: an attachment's `/$value`, the message's own MIME."""

    def __init__(self, rt: Runtime, folder: MailboxFolder, path: str) -> None:
        self.rt = rt
        self.folder = folder
        self.path = path

    def value(self, attachment_id: str) -> AsyncIterator[bytes]:
        return self._download(f"{self.path}/attachments/{quote(attachment_id, safe='')}/$value")

    async def _download(self, value: str) -> AsyncIterator[bytes]:
        try:
            async with self.rt.graph.stream("GET", value, mailbox=self.folder.mailbox) as response:
                async for chunk in response.aiter_bytes(STREAM_CHUNK):
                    yield chunk
        except httpx.HTTPError as exc:  # the connection broke mid-body
            raise GraphThrottled(0, type(exc).__name__, str(exc) or "download interrupted", "GET $value") from exc

    async def mime(self) -> AsyncIterator[bytes]:
        """`GET /messages/{id}/$value`. Graph may refuse it (very large mails, graph_facts §8): ExportRefused."""
        try:
            async for chunk in self._download(f"{self.path}/$value"):
                yield chunk
        except (GraphThrottled, GraphAuthError):
            raise  # a passing outage or a permission: the queue retries, as for any request
        except GraphError as exc:
            raise ExportRefused(f"Graph refused the MIME export: {one_line(exc)}") from exc

    async def find_url(self, attachment_id: str) -> str | None:
        """A link's URL comes with the expanded message; only the metadata-only fallback lacks it."""
        url = f"{self.path}/attachments/{quote(attachment_id, safe='')}"
        with contextlib.suppress(GraphError):
            full = await self.rt.graph.request("GET", url, mailbox=self.folder.mailbox)
            return str(full.get("sourceUrl") or "") or None
        return None

    def part(self, attachment: dict[str, Any], content: bytes | None) -> Part:
        """An attachment of the expanded message, its bytes from `contentBytes` or `/$value`."""
        kind = _kind(attachment)
        content_type = str(attachment.get("contentType") or "") or None
        size = attachment.get("size")
        attachment_id = str(attachment.get("id") or "")
        extension = ".eml"
        if kind == "item":
            extension = ITEM_EXTENSIONS.get((content_type or "").lower(), ".eml")
            content_type = content_type or "message/rfc822"
        return Part(
            name=str(attachment.get("name") or ""),
            kind=kind,
            content_type=content_type,
            size=size if isinstance(size, int) else None,
            inline=bool(attachment.get("isInline")),
            extension=extension,
            content=content,
            open=lambda: self.value(attachment_id),
            url=str(attachment.get("sourceUrl") or "") or None,
            find_url=lambda: self.find_url(attachment_id),
        )

    def listed(self, expanded: ExpandedMessage) -> Listed:
        attachments = expanded.body.get("attachments") or []
        parts = [self.part(a, expanded.content_of(a)) for a in attachments]
        return Listed(parts, _body(expanded.body), self.mime)


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
    arrival = Arrival(
        mailbox=folder.mailbox,
        folder=folder.folder,
        key=message_key(change.message_id),
        where={"mailbox": folder.mailbox, "folder": folder.folder},
        gone={"messageId": change.message_id, "subscriptionId": change.subscription_id},
        via={"subscription": change.subscription_id},
    )
    return await ingest(rt, arrival, lambda: _opened(rt, folder, change, arrival.key))


@asynccontextmanager
async def _opened(rt: Runtime, folder: MailboxFolder, change: ChangeMessage, key: str) -> AsyncIterator[Mail]:
    """The message in hand: fetched with its attachments (MailGone when it is no longer there)."""
    message = _Message(rt, folder, _message_path(folder.mailbox, change.message_id))
    try:
        expanded = await _fetch(rt, folder, message.path)
    except GraphNotFound:
        raise MailGone("") from None
    body = expanded.body
    received = parse_graph_time(str(body["receivedDateTime"]))

    async def after_ingest(wanted: AfterIngest) -> None:
        await apply_after_ingest(rt, folder, message.path, body, key, wanted)

    yield Mail(
        received=received,
        facts=_facts(folder, key, body, received),
        record={**_mail(body), "source": "graph", "subscriptionId": change.subscription_id},
        content=message.listed(expanded),
        after_ingest=after_ingest,
        default_action=rt.settings.after_ingest_for(folder),
    )


def _address(recipient: Any) -> str:
    return str(((recipient or {}).get("emailAddress") or {}).get("address") or "")


def _facts(folder: MailboxFolder, key: str, message: dict[str, Any], received: datetime) -> MailFacts:
    """What routes look at, as Graph gives it; the pipeline adds the files."""
    recipients = [*(message.get("toRecipients") or []), *(message.get("ccRecipients") or [])]
    return MailFacts(
        mailbox=folder.mailbox,
        folder=folder.folder,
        message_key=key,
        received=received,
        sender=_address(message.get("from")) or None,
        recipients=tuple(a for a in map(_address, recipients) if a),
        subject=str(message.get("subject") or ""),
        authentication=from_exchange_online(_headers(message)),
    )


def _headers(message: dict[str, Any]) -> list[tuple[str, str]]:
    """`internetMessageHeaders` as (name, value), in the message's order."""
    items = message.get("internetMessageHeaders") or []
    return [(str(h.get("name") or ""), str(h.get("value") or "")) for h in items if isinstance(h, dict)]


def _mail(message: dict[str, Any]) -> dict[str, Any]:
    """What the manifest and a skip record say of a Graph message."""
    return {
        "messageId": message["id"],
        "internetMessageId": message.get("internetMessageId"),
        "subject": message.get("subject"),
        "from": _address(message.get("from")) or None,
    }
