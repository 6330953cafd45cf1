"""The fetch worker: one `mail-fetch` request → an IMAP or POP3 message's files in Blob Storage, manifest last,
exactly as Graph mail (`pipeline/job.py`: same layout, filters, unpacking, manifest, hand-off, markers).

The raw MIME is the top-level mail: its file parts are the attachments (depth 1 for the unpacker), each
written to its blob as it streams past. What routes look at comes from the header block, read first
(From, To, Cc, Subject); a route that looks at attachment names or types (or whether a file is kept)
needs them before anything is stored, so then the message is spooled to a temporary file (in memory up
to one chunk) and read twice: once to list its files, once to store them. Either way memory stays
bounded whatever the message's size.

The message key is the hash of the account and the message's fingerprint (Message-ID, Date, From,
Subject, size: what the poll recognises a message by, `sources/common.py`), not of its UID or UIDL: a
folder recreated with a new UIDVALIDITY, or a server that renumbered its UIDLs, gives the same key, so a
re-queued message finds its `done/` marker or its manifest and is stored once. The date folder comes
from the message too: the newest `Received:` field's time (when the server took it), else `Date:`,
else when the poll queued it.

SAVE_BODY stores the mail's body as Graph mail does (`body.html` or `body.txt`, kind `body`, UTF-8), picked
as a mail client would: the first text/html part of the mail's own body if there is one, else its first
text/plain part (an attached mail's body is not the mail's; a signed or encrypted mail's body is inside
its S/MIME). The candidates stream, decoded from their transfer encoding and charset, straight into their
blobs as the MIME passes; only the one picked is committed, so memory stays bounded whatever the body's
size (Graph holds its body in the JSON it reads; a raw mail's may be any size). Both names are taken
before the attachments', which keeps every file's name the same on each attempt.

After the manifest and the hand-off, the after-ingest actions (the deciding route's, else the account's
AFTER_INGEST_BY_MAILBOX, else AFTER_INGEST) run on the same connection, then the `done/` marker.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import IO, TYPE_CHECKING, Any

from ..errors import MailMessageGone, one_line
from ..logs import log_event
from ..pipeline.job import (
    BODY_FILES,
    MESSAGE_FILE,
    Entry,
    IngestOutcome,
    Job,
    Markers,
    body_entry,
    finish,
    flatten,
    hand_off,
    manifest,
    mark_incomplete,
    skip,
    write_manifest,
)
from ..pipeline.layout import graph_time, message_prefix, parse_graph_time, sanitize_name
from ..pipeline.routes import Attachment, MailFacts, decide
from ..pipeline.rules import AfterIngest, SaveMail
from ..pipeline.storage import BlobWriter
from ..settings import MailAccount
from ..unpack.base import Found, Note, Problem, Sink, UnpackError
from ..unpack.mime import MAX_HEADER_BLOCK
from ..unpack.tree import Unpacker
from .common import CHUNK_BYTES
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


class _Listing:
    """The unpacker's handler for a first pass that only lists the mail's own files (depth 1), for routes."""

    def __init__(self) -> None:
        self.found: list[Found] = []

    async def open(self, parent: None, found: Found, container: bool) -> tuple[None, Sink | None] | None:
        self.found.append(found)
        return None  # not opened, not kept: its bytes are read past

    def note(self, node: None, note: Note) -> None:
        return None

    async def discard(self, node: None, reason: str) -> None:
        return None


class _Spool:
    """The message in a temporary file, in memory up to one chunk: read as many times as needed."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=CHUNK_BYTES)  # noqa: SIM115 (closed in close)

    async def fill(self, chunks: AsyncIterator[bytes]) -> None:
        async for chunk in chunks:
            await asyncio.to_thread(self._file.write, chunk)

    async def read(self) -> AsyncIterator[bytes]:
        await asyncio.to_thread(self._file.seek, 0)
        while piece := await asyncio.to_thread(self._file.read, CHUNK_BYTES):
            yield piece

    def close(self) -> None:
        self._file.close()


class _AccountJob(Job):
    """One IMAP or POP3 message's files, from its raw MIME."""

    def __init__(self, rt: Runtime, account: MailAccount, prefix: str, key: str) -> None:
        super().__init__(rt, account.address, prefix, key)
        self.root = Entry("", "message", "message/rfc822", None)  # the mail itself; its files are its children

    def kept(self, found: Found) -> bool:
        """Whether a file of the mail is kept by the rules, or may hold files that are (as Graph's routes see it)."""
        name = sanitize_name(found.name)
        return self.rules.skip_reason(name, found.content_type, found.inline, None) is None or (
            self.unpacker.kind(found, 1) is not None
        )

    async def store_mail(self, chunks: AsyncIterator[bytes]) -> list[Entry]:
        """The mail's files, each to its blob as the MIME streams past; SAVE_MESSAGE's message.eml from the same
        bytes. A damaged MIME keeps what was found before the damage, with the reason on the message."""
        save = self.rt.settings.save.message
        message = Entry(MESSAGE_FILE, "message", "message/rfc822", None, file=MESSAGE_FILE)
        if save != "never":
            self.names.take(MESSAGE_FILE)
        body = _Body(self) if self.rt.settings.save.body != "never" else None
        raw = await self.writer(message) if save != "never" else None
        sink = self.unpacker.mail(self.root, body.open if body is not None else None)
        reading: Sink | None = sink
        try:
            async for chunk in chunks:
                if raw is not None:
                    await raw.write(chunk)
                if reading is not None:
                    try:
                        await reading.write(chunk)
                    except UnpackError as exc:
                        reading = None
                        self.note(self.root, _problem(exc))
            if reading is not None:
                try:
                    await reading.close()
                except UnpackError as exc:
                    self.note(self.root, _problem(exc))
        except BaseException:
            await self.unpacker.abort()
            raise
        entries = list(self.root.children)
        mark_incomplete([self.root])
        kept = any(e.blob for e in flatten(entries))
        if body is not None and SaveMail.wanted(self.rt.settings.save.body, kept):
            entries.insert(0, await body.commit())
        if raw is not None and SaveMail.wanted(save, kept):
            message.record(await raw.commit())
            entries.insert(0, message)
        return entries


class _BodyText:
    """One candidate body part: its text, decoded from its charset as it streams, written as UTF-8."""

    def __init__(self, writer: BlobWriter, charset: str | None) -> None:
        self.writer = writer
        self._decoder = codecs.getincrementaldecoder(_text_charset(charset))(errors="replace")

    async def write(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            await self.writer.write(text.encode())

    async def close(self) -> None:
        tail = self._decoder.decode(b"", final=True)
        if tail:
            await self.writer.write(tail.encode())


def _text_charset(charset: str | None) -> str:
    """The codec for a part's charset. None, unknown labels (`unknown-8bit`) and codecs that are not text
    encodings (`base64`, `rot13`: Python's, not charsets) read as UTF-8, bad bytes replaced."""
    if charset:
        try:
            b"".decode(charset)
        except (LookupError, ValueError):
            return "utf-8"
        return charset
    return "utf-8"


class _Body:
    """SAVE_BODY for a raw mail: the first text/html and the first text/plain part of its own body, each
    into its blob as it streams; `commit` keeps the HTML if there was one, else the text."""

    def __init__(self, job: _AccountJob) -> None:
        self.job = job
        self.parts: dict[str, tuple[Entry, _BodyText]] = {}
        for name in BODY_FILES.values():
            job.names.take(name)

    async def open(self, content_type: str, charset: str | None) -> Sink | None:
        name = BODY_FILES.get(content_type)
        if name is None or content_type in self.parts:
            return None  # not a body type, or not the first of its type
        entry = body_entry(name)
        text = _BodyText(await self.job.writer(entry), charset)
        self.parts[content_type] = (entry, text)
        return text

    async def commit(self) -> Entry:
        """The body entry, recorded; a mail with no text part has an empty body.txt, as Graph gives."""
        for content_type in ("text/html", "text/plain"):
            if content_type in self.parts:
                entry, text = self.parts[content_type]
                entry.record(await text.writer.commit())
                return entry
        entry = body_entry(BODY_FILES["text/plain"])
        entry.record(await (await self.job.writer(entry)).commit())
        return entry


def _problem(exc: UnpackError) -> Note:
    return Problem(str(exc) or type(exc).__name__)


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
    )


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
    key = account.message_key(request.fingerprint)
    markers = Markers(rt, account.address, key)
    where: dict[str, Any] = {"mailbox": account.address, "folder": account.folder, "account": str(account)}
    if await markers.is_done():
        log_event(logger, "ingest.duplicate", **where, message_key=key)
        return IngestOutcome("duplicate")
    started = time.monotonic()
    login = await account_login(rt, account)
    try:
        async with open_fetched(account, login, request) as fetched:
            return await _ingest(rt, account, request, fetched, markers, where, started)
    except MailMessageGone as exc:
        reason = f"message deleted or moved away before it could be fetched: {one_line(exc)}"
        record = {"fingerprint": request.fingerprint, "account": str(account), "at": graph_time(datetime.now(UTC))}
        await markers.mark(markers.gone, {**record, "reason": reason, "folder": account.folder})
        log_event(logger, "ingest.gone", logging.WARNING, **where, message_key=key, reason=reason)
        return IngestOutcome("gone")


async def _ingest(
    rt: Runtime,
    account: MailAccount,
    request: FetchRequest,
    fetched: Fetched,
    markers: Markers,
    where: dict[str, Any],
    started: float,
) -> IngestOutcome:
    key = markers.key
    head = _Header(fetched.chunks)
    header = await head.read()
    received = received_time(header, request.queued_at)
    job = _AccountJob(rt, account, message_prefix(account.address, received, key), key)
    facts = _facts(account, key, header, received)
    spool = _Spool() if any(route.on_files for route in rt.settings.routes) else None
    try:
        chunks = head.whole()
        if spool is not None:
            await spool.fill(chunks)
            facts = await _with_files(facts, spool, job)
            chunks = spool.read()
        decision = decide(rt.settings.routes, facts)
        mail = _mail(account, request, header)
        if decision.skip:
            record = {**where, **mail, "receivedDateTime": graph_time(received)}
            action = decision.after_ingest or AfterIngest()
            return await skip(markers, decision, record, received, where, lambda: _after(fetched, action, where, key))
        at = await job.routed(decision)
        written, final, entries = at.to_write, at.manifest, []
        if written:
            entries = await job.store_mail(chunks)
            final = manifest(
                entries, mailbox=account.address, folder=account.folder, key=key, received=received,
                decision=decision, mail={**mail, **({"problem": job.root.problem} if job.root.problem else {})},
            )  # fmt: skip
            written, final = await write_manifest(at.store, at.manifest_path, final, at.etag, decision, entries)
    finally:
        if spool is not None:
            spool.close()
    await hand_off(rt, final, at.store, at.manifest_path, written=written)
    action = rt.settings.after_ingest_for(account, decision.after_ingest)
    await _after(fetched, action, where, key)
    return await finish(
        markers, decision, entries, key=key, written=written, received=received, started=started, where=where
    )


async def _with_files(facts: MailFacts, spool: _Spool, job: _AccountJob) -> MailFacts:
    """The facts with the mail's own files, listed by a first reading of the spooled message."""
    listing = _Listing()
    reader = Unpacker[None](listing, job.rt.settings.unpack).mail(None)
    try:
        async for piece in spool.read():
            await reader.write(piece)
        await reader.close()
    except UnpackError:
        pass  # routes see what was listed before the damage, as the store sees what was found before it
    files = [f for f in listing.found if f.skipped is None]
    return replace(
        facts,
        attachments=tuple(Attachment(f.name, f.content_type) for f in files),
        has_kept_file=any(job.kept(f) for f in files),
    )


async def _after(fetched: Fetched, action: AfterIngest, where: dict[str, Any], key: str) -> None:
    """The after-ingest actions, mapped to the protocol. A message gone meanwhile (moved or deleted by someone
    else) has nothing left to act on."""
    try:
        done = await fetched.after_ingest(action)
    except MailMessageGone as exc:
        log_event(logger, "ingest.after_skipped", logging.WARNING, **where, message_key=key, reason=one_line(exc))
        return
    if done:
        log_event(logger, "ingest.after", **where, message_key=key, actions=",".join(done))
