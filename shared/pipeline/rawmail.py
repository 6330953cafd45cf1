"""Storing a mail whose source hands over its raw MIME (`mail.RawMime`, IMAP's and POP3's).

The raw MIME is the top-level mail: its file parts are the attachments (depth 1 for the unpacker), each
written to its blob as it streams past; SAVE_MESSAGE's message.eml is written from the same bytes. A route
that looks at attachment names or types (or whether a file is kept) needs them before anything is
stored, so then the message is spooled to a temporary file (in memory up to one chunk) and read twice:
once to list its files, once to store them. Either way memory stays bounded whatever the message's size.

SAVE_BODY stores the mail's body as Graph mail's (`body.html` or `body.txt`, kind `body`, UTF-8), picked
as a mail client would: the first text/html part of the mail's own body if there is one, else its first
text/plain part (an attached mail's body is not the mail's; a signed or encrypted mail's body is inside
its S/MIME). The candidates stream, decoded from their transfer encoding and charset, straight into their
blobs as the MIME passes; only the one picked is committed, so memory stays bounded whatever the body's
size. Both names are taken before the attachments', which keeps every file's name the same on each attempt.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from ..unpack.base import Found, Note, Problem, Sink, UnpackError
from ..unpack.tree import Unpacker
from .job import BODY_FILES, MESSAGE_FILE, Entry, Job, body_entry, flatten, mark_incomplete
from .layout import sanitize_name
from .mail import RawMime
from .routes import Attachment, MailFacts, Route
from .rules import SaveMail
from .spool import Spool
from .storage import BlobWriter
from .survey import Survey

if TYPE_CHECKING:
    from ..runtime import Runtime


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


class RawJob(Job):
    """One raw mail's files, from its MIME."""

    def __init__(self, rt: Runtime, mailbox: str, prefix: str, key: str, received: datetime, content: RawMime) -> None:
        super().__init__(rt, mailbox, prefix, key, received)
        self.root = Entry("", "message", "message/rfc822", None)  # the mail itself; its files are its children
        self._chunks = content.chunks
        self._spool: Spool | None = None

    def kept(self, found: Found) -> bool:
        """Whether a file of the mail is kept by the rules, or may hold files that are (as Graph's routes see it)."""
        name = sanitize_name(found.name)
        return self.rules.skip_reason(name, found.content_type, found.inline, None) is None or (
            self.unpacker.kind(found, 1) is not None
        )

    async def facts(self, facts: MailFacts, routes: Sequence[Route]) -> MailFacts:
        """What `routes` look at: with the mail's own files, listed by a first reading of the spooled message,
        when a route looks at files (and with `duplicate` and `protected`, when a route looks at their bytes)."""
        on_content = any(route.on_content for route in routes)
        if not on_content and not any(route.on_files for route in routes):
            return facts
        self._spool = Spool()
        await self._spool.fill(self._chunks)
        self._chunks = self._spool.read()
        # Only a route on the files' bytes needs them hashed and their containers opened (`survey.py`).
        survey = Survey(self.rules) if on_content else None
        listing = _Listing()
        reader = (
            Unpacker[int](survey, self.rt.settings.unpack, self._keys).mail(0)
            if survey is not None
            else Unpacker[None](listing, self.rt.settings.unpack).mail(None)
        )
        try:
            async for piece in self._spool.read():
                await reader.write(piece)
            await reader.close()
        except UnpackError:
            pass  # routes see what was listed before the damage, as the store sees what was found before it
        files = [f for f in (survey or listing).found if f.skipped is None]
        facts = replace(
            facts,
            attachments=tuple(Attachment(f.name, f.content_type) for f in files),
            has_kept_file=any(self.kept(f) for f in files),
        )
        return await survey.judge(facts, self.duplicates) if survey is not None else facts

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

    async def store_files(self) -> list[Entry]:
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
            async for chunk in self._chunks:
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
        self.problem = self.root.problem
        self.signature = self.root.signature  # a multipart/signed mail: its signature is the mail's, not a file's
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

    def __init__(self, job: RawJob) -> None:
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
