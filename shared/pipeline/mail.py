"""The seam between a source and the pipeline: one mail in hand.

A source (Graph, IMAP, POP3) reads its queue message into an `Arrival`: where the mail is and its message
key, known before anything is fetched, so that a mail already done costs the source nothing. Asked to,
it opens the mail: a `Mail` with its facts, its content as streams, and how to apply the after-ingest
action. `pipeline/ingest.py` then runs the steps in order, once, for every source. The pipeline never
calls back into a source but through what the `Mail` hands it.

Content comes in the two shapes sources have it in:
- `Listed`: the mail's attachments as the source lists them (Graph), each with its bytes in hand or a
  stream to open, plus the mail's body text and a stream of its MIME (SAVE_BODY, SAVE_MESSAGE);
- `RawMime`: the whole mail's MIME as one stream (IMAP, POP3), its files found as it passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import IngestError
from .routes import MailFacts
from .rules import AfterIngest


class MailGone(IngestError):
    """The mail left its folder (deleted or moved away) before it could be read: recorded, not retried."""


class ExportRefused(IngestError):
    """The source will not export the mail's MIME (SAVE_MESSAGE): the reason is recorded, not retried."""


@dataclass(frozen=True)
class Arrival:
    """A mail the queue names, before it is fetched."""

    mailbox: str
    folder: str
    key: str  # the message key (`layout.message_key`, or an account's own)
    where: Mapping[str, Any]  # the log fields naming its place
    gone: Mapping[str, Any]  # what a `gone/` record says of it, should it have left its folder
    via: Mapping[str, Any] = field(default_factory=dict)  # how it was announced (Graph's subscription): `ingest.done`


@dataclass(frozen=True)
class Part:
    """One attachment as the source lists it."""

    name: str  # as the mail names it, unsanitised
    kind: str  # file | item (an attached mail, event or contact) | reference (a link to a cloud file)
    content_type: str | None
    size: int | None
    inline: bool = False
    extension: str = ".eml"  # an item's: the format the source exports it in
    content: bytes | None = None  # its bytes, when the listing carried them; else `open` streams them
    open: Callable[[], AsyncIterator[bytes]] | None = None
    url: str | None = None  # a reference's link
    find_url: Callable[[], Awaitable[str | None]] | None = None  # a reference's link, when the listing lacked it


@dataclass(frozen=True)
class Listed:
    """A mail whose source lists its attachments."""

    parts: Sequence[Part]
    body: tuple[str, str]  # (text/html or text/plain, the text): SAVE_BODY
    mime: Callable[[], AsyncIterator[bytes]]  # the mail's MIME: SAVE_MESSAGE; may raise ExportRefused


@dataclass(frozen=True)
class RawMime:
    """A mail whose source hands over its MIME, read once."""

    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class Mail:
    """A mail in hand."""

    received: datetime
    facts: MailFacts  # what the source read of it; the pipeline adds its files
    record: Mapping[str, Any]  # what the manifest says of it (ids, subject, sender, source)
    content: Listed | RawMime
    after_ingest: Callable[[AfterIngest], Awaitable[object]]  # bring the mail to the wanted state
    default_action: AfterIngest  # its folder's or account's, when the deciding route sets none
