"""The IMAP and POP3 side of the fetch worker: one `mail-fetch` request → the mail in hand (`pipeline/mail.py`),
its raw MIME, which the pipeline stores exactly as Graph mail (`pipeline/ingest.py`: same layout, filters,
unpacking, manifest, hand-off, markers).

The message key is the hash of the account and the message's fingerprint (Message-ID, Date, From,
Subject, size: what the poll recognises a message by, `sources/common.py`), not of its UID or UIDL: a
folder recreated with a new UIDVALIDITY, or a server that renumbered its UIDLs, gives the same key, so a
re-queued message finds its `done/` marker or its manifest and is stored once. What routes look at comes
from the header block, read first (From, To, Cc, Subject); the date folder comes from the message too:
the newest `Received:` field's time (when the server took it), else `Date:`, else when the poll queued it.

After the manifest and the hand-off, the after-ingest actions (the deciding route's, else the account's
AFTER_INGEST_BY_MAILBOX, else AFTER_INGEST) run on the same connection. The connection is one of the
account's pool (`pool.py`, held by the Runtime): signed in once and reused by the messages that follow, at
most MAIL_CONNECTIONS_PER_ACCOUNT at a time; the credentials are read only when a connection signs in.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from ..errors import MailMessageGone, one_line
from ..logs import log_event
from ..pipeline.ingest import ingest
from ..pipeline.job import IngestOutcome
from ..pipeline.layout import parse_graph_time
from ..pipeline.mail import Arrival, Mail, MailGone, RawMime
from ..pipeline.routes import MailFacts
from ..pipeline.rules import AfterIngest
from ..pipeline.senderauth import from_receiver
from ..settings import MailAccount
from ..unpack.mime import MAX_HEADER_BLOCK
from .common import Login
from .fetch import Fetched, FetchRequest, open_fetched
from .jobs import account_login

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger(__name__)


class _Header:
    """The message's header block, read off the front of its stream (at most MAX_HEADER_BLOCK bytes), and the
    stream again from its first byte."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._head = b""
        self.block = b""

    async def read(self) -> EmailMessage:
        head = bytearray()
        async for chunk in self._chunks:
            head += chunk
            ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
            if ends or len(head) >= MAX_HEADER_BLOCK:
                break
        self._head = bytes(head)
        end = min((i for i in (self._head.find(b"\r\n\r\n"), self._head.find(b"\n\n")) if i >= 0), default=-1)
        self.block = self._head[: end + 2] if end >= 0 else self._head[:MAX_HEADER_BLOCK]
        parsed = BytesHeaderParser(policy=policy.default).parsebytes(self.block)
        assert isinstance(parsed, EmailMessage)
        return parsed

    async def whole(self) -> AsyncIterator[bytes]:
        if self._head:
            yield self._head
        async for chunk in self._chunks:
            yield chunk


def _text(header: EmailMessage, name: str) -> str:
    """A header field decoded (RFC 2047), or "" when it is missing or cannot be read."""
    try:
        value = header.get(name)
    except (ValueError, IndexError, TypeError):  # a field the parser cannot make sense of
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _addresses(header: EmailMessage, *names: str) -> list[str]:
    values = [_text(header, name) for name in names]
    return [address for _, address in getaddresses([v for v in values if v]) if "@" in address]


def _time(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else None


def received_time(header: EmailMessage, queued_at: str | None) -> datetime:
    """When the mail arrived: the newest (first) `Received:` field's time, else `Date:`, else when it was queued."""
    try:
        received = [str(v) for v in header.get_all("received") or []]
    except (ValueError, IndexError, TypeError):
        received = []
    candidates = [received[0].rpartition(";")[2]] if received else []
    candidates.append(_text(header, "date"))
    for text in candidates:
        when = _time(text.strip()) if text.strip() else None
        if when is not None:
            return when.astimezone(UTC)
    return parse_graph_time(queued_at) if queued_at else datetime.now(UTC)


def _facts(account: MailAccount, key: str, header: EmailMessage, received: datetime) -> MailFacts:
    senders = _addresses(header, "from")
    return MailFacts(
        mailbox=account.address,
        folder=account.folder,
        message_key=key,
        received=received,
        sender=senders[0] if senders else None,
        recipients=tuple(_addresses(header, "to", "cc")),
        subject=_text(header, "subject"),
        authentication=from_receiver(_raw_fields(header), account.authserv_id),
    )


def _raw_fields(header: EmailMessage) -> list[tuple[str, str]]:
    """The header's fields as written (unfolded, not decoded), topmost first."""
    return [(name, " ".join(str(value).split())) for name, value in header.raw_items()]


def _mail(account: MailAccount, request: FetchRequest, header: EmailMessage) -> dict[str, Any]:
    """What the manifest and a skip record say of the message, and which source it came from."""
    senders = _addresses(header, "from")
    return {
        "messageId": request.fingerprint,  # the message's fingerprint: its id across sessions and UIDVALIDITYs
        "internetMessageId": _text(header, "message-id") or None,
        "subject": _text(header, "subject"),
        "from": senders[0] if senders else None,
        "source": account.protocol,
        "account": str(account),
    }


async def ingest_fetched(request: FetchRequest, rt: Runtime) -> IngestOutcome:
    """Ingest the message a `mail-fetch` request names; `ignored` when its account is no longer configured,
    `gone` when the message left the folder before it could be read."""
    account = rt.settings.account_by_key(request.account)
    if account is None:
        log_event(
            logger, "ingest.ignored", logging.WARNING, reason="account no longer configured", account=request.account
        )
        return IngestOutcome("ignored")
    where: dict[str, Any] = {"mailbox": account.address, "folder": account.folder, "account": str(account)}
    arrival = Arrival(
        mailbox=account.address,
        folder=account.folder,
        key=account.message_key(request.fingerprint),
        where=where,
        gone={"fingerprint": request.fingerprint, "account": str(account)},
    )
    return await ingest(rt, arrival, lambda: _opened(rt, account, request, arrival))


@asynccontextmanager
async def _opened(rt: Runtime, account: MailAccount, request: FetchRequest, arrival: Arrival) -> AsyncIterator[Mail]:
    """The message in hand on a signed-in connection, its header read; MailGone when it left the folder."""

    async def login() -> Login:
        return await account_login(rt, account)

    try:
        async with open_fetched(rt.mail_sessions.pool(account, login), request) as fetched:
            head = _Header(fetched.chunks)
            header = await head.read()
            received = received_time(header, request.queued_at)

            async def after_ingest(action: AfterIngest) -> None:
                await _after(fetched, action, arrival.where, arrival.key)

            yield Mail(
                received=received,
                facts=_facts(account, arrival.key, header, received),
                record=_mail(account, request, header),
                content=RawMime(head.whole()),
                after_ingest=after_ingest,
                default_action=rt.settings.after_ingest_for(account),
            )
    except MailMessageGone as exc:
        raise MailGone(one_line(exc)) from None


async def _after(fetched: Fetched, action: AfterIngest, where: Mapping[str, Any], key: str) -> None:
    """The after-ingest actions, mapped to the protocol. A message gone meanwhile (moved or deleted by someone
    else) has nothing left to act on."""
    try:
        done = await fetched.after_ingest(action)
    except MailMessageGone as exc:
        log_event(logger, "ingest.after_skipped", logging.WARNING, **where, message_key=key, reason=one_line(exc))
        return
    if done:
        log_event(logger, "ingest.after", **where, message_key=key, actions=",".join(done))
