"""Storing a mail whose source lists its attachments (`mail.Listed`, Graph's): each planned from the listing,
its bytes from what the listing carried or from its own stream.

Files are stored in parallel (the source bounds its own requests); containers (attached mails, S/MIME,
winmail.dat, zips) one after another, so that the names of the files found inside them are the same on
every attempt. A file an earlier attempt stored is not fetched again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from ..logs import log_event
from ..unpack.base import Found
from ..unpack.tree import Unpacker
from .job import BODY_FILES, MESSAGE_FILE, Entry, Extracted, Job, attempt, body_entry, mark_incomplete, with_extension
from .layout import sanitize_name
from .mail import ExportRefused, Listed, Part
from .routes import Attachment, MailFacts, Route
from .rules import SaveMail
from .spool import Spool
from .survey import Survey

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger(__name__)

LINK_SKIPPED = "link to a cloud file: recorded, not downloaded"


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class ListedJob(Job):
    """A listed mail's attachments: planned from the listing, each file's bytes from its content or stream."""

    def __init__(self, rt: Runtime, mailbox: str, prefix: str, key: str, received: datetime, content: Listed) -> None:
        super().__init__(rt, mailbox, prefix, key, received)
        self.content = content
        self.planned: list[tuple[Entry, Part]] = []
        self._spools: list[Spool] = []

    def unpacks(self, entry: Entry) -> bool:
        """Whether a mail's own attachment is a container to open: even when its own file is not kept (a
        type filter), unless it is too large to download at all."""
        if entry.kind not in ("file", "item") or entry.file is None:
            return False
        if entry.size is not None and self.rules.size_skip(entry.size):
            return False
        return self.unpacker.kind(Found(entry.file, entry.content_type or ""), 1) is not None

    def plan(self) -> list[tuple[Entry, Part]]:
        """Per attachment, in the listing's order: its name in the folder, or why it is skipped. The mail's
        own files (SAVE_MESSAGE, SAVE_BODY) have fixed names, taken first."""
        save = self.rt.settings.save
        if save.message != "never":
            self.names.take(MESSAGE_FILE)
        if save.body != "never":
            self.names.take(BODY_FILES[self.content.body[0]])
        planned = []
        for part in self.content.parts:
            entry = Entry(part.name, part.kind, part.content_type, part.size)
            if part.kind == "reference":
                entry.url = part.url
                entry.skipped = LINK_SKIPPED
            else:
                if part.kind == "item":
                    safe = with_extension(sanitize_name(part.name, "attached message"), part.extension)
                else:
                    safe = sanitize_name(part.name)
                entry.skipped = self.rules.skip_reason(safe, entry.content_type, part.inline, entry.size)
                # A container not kept itself still gets a name: the files found in it name it as parent.
                if entry.skipped is None or self.unpacker.kind(Found(safe, entry.content_type or ""), 1):
                    entry.file = self.names.take(safe)
            planned.append((entry, part))
        self.planned = planned
        return planned

    async def facts(self, facts: MailFacts, routes: Sequence[Route]) -> MailFacts:
        """What `routes` look at, with the mail's files: a file counts as kept when the rules keep it, or when
        it may hold files that are."""
        documents = [entry for entry, _ in self.plan() if entry.kind != "reference"]
        facts = replace(
            facts,
            attachments=tuple(Attachment(e.name, e.content_type) for e in documents),
            has_kept_file=any(e.skipped is None or self.unpacks(e) for e in documents),
        )
        if any(route.on_content for route in routes):
            facts = await self.survey(facts)
        return facts

    async def survey(self, facts: MailFacts) -> MailFacts:
        """A first reading of every file that is kept or opened (`survey.py`): a streamed one is spooled on the
        way, and the store reads it from there rather than from the source again."""
        survey = Survey(self.rules)
        unpacker = Unpacker[int](survey, self.rt.settings.unpack, self._keys)
        for index, (entry, part) in enumerate(self.planned):
            kept = entry.skipped is None and entry.kind in ("file", "item")
            if entry.file is None or not (kept or self.unpacks(entry)):
                continue
            found = Found(entry.file, entry.content_type or "")
            sink = unpacker.attachment(1, found, survey.sink(found) if kept else None)
            assert sink is not None
            await survey.open(0, Found(entry.name, entry.content_type or ""), False)
            if part.content:
                chunks: AsyncIterator[bytes] = _once(part.content)
            else:
                spool = Spool()
                self._spools.append(spool)
                await spool.fill(self._opened(part))
                self.planned[index] = (entry, replace(part, open=spool.read))
                chunks = spool.read()
            try:
                async for chunk in chunks:
                    await sink.write(chunk)
                await sink.close()
            except BaseException:
                await unpacker.abort()
                raise
        return await survey.judge(facts, self.duplicates)

    def close(self) -> None:
        """The spooled files of a survey; the listing's bytes go with the mail."""
        for spool in self._spools:
            spool.close()

    async def store_files(self) -> list[Entry]:
        """Every planned file, the links' URLs, then the mail's own files (SAVE_MESSAGE, SAVE_BODY)."""

        async def containers() -> None:
            for entry, part in self.planned:
                if self.unpacks(entry):
                    await attempt(entry, self.store_container(entry, part))

        files = [
            attempt(entry, self.store_file(entry, part))
            for entry, part in self.planned
            if entry.kind in ("file", "item") and entry.skipped is None and not self.unpacks(entry)
        ]
        await asyncio.gather(containers(), *files)
        entries = [entry for entry, _ in self.planned]
        mark_incomplete(entries)
        for entry, part in self.planned:
            if entry.kind == "reference" and entry.url is None and part.find_url is not None:
                entry.url = await part.find_url()
        return entries + await self.save_mail(entries)

    async def store_file(self, entry: Entry, part: Part) -> None:
        writer = await self.file_writer(entry)
        if part.content:  # empty or missing content is never trusted: the bytes come from the stream
            await writer.write(part.content)
        else:
            existing = await self.store.stored(writer.path)
            if existing is not None:  # stored by an earlier attempt: not downloaded again
                entry.record(await writer.adopt(existing))
                return
            async for chunk in self._opened(part):
                await writer.write(chunk)
        entry.record(await writer.commit())

    def _opened(self, part: Part) -> AsyncIterator[bytes]:
        if part.open is None:
            raise ValueError(f"attachment {part.name!r} has neither content nor a stream")
        return part.open()

    async def store_container(self, entry: Entry, part: Part) -> None:
        """An attachment that holds files (an attached mail, smime.p7m, winmail.dat, a zip): its bytes go to
        its blob and its unpacker from one stream, its own or the content already read."""
        assert entry.file is not None
        entry.children.clear()  # a retry extracts afresh
        writer = await self.file_writer(entry) if entry.skipped is None else None
        sink = self.unpacker.attachment(
            entry, Found(entry.file, entry.content_type or ""), Extracted(self, entry, writer)
        )
        assert sink is not None
        try:
            if part.content:
                await sink.write(part.content)
            else:
                async for chunk in self._opened(part):
                    await sink.write(chunk)
            await sink.close()
        except BaseException:
            await self.unpacker.abort()
            raise

    async def save_mail(self, entries: list[Entry]) -> list[Entry]:
        """SAVE_MESSAGE and SAVE_BODY: the mail's MIME and its body, when asked for."""
        save = self.rt.settings.save
        kept = any(e.blob for top in entries for e in top.flat())
        saved = []
        if SaveMail.wanted(save.message, kept):
            entry = Entry(MESSAGE_FILE, "message", "message/rfc822", None, file=MESSAGE_FILE)
            await attempt(entry, self.store_message(entry))
            saved.append(entry)
        if SaveMail.wanted(save.body, kept):
            entry = body_entry(BODY_FILES[self.content.body[0]])
            await attempt(entry, self.store_body(entry))
            saved.append(entry)
        return saved

    async def store_message(self, entry: Entry) -> None:
        """The mail's MIME, streamed. The source may refuse it (Graph, for very large mails): that is recorded
        as the reason, not retried."""
        writer = await self.writer(entry)
        existing = await self.store.stored(writer.path)
        if existing is not None:
            entry.record(existing)
            return
        try:
            async for chunk in self.content.mime():
                await writer.write(chunk)
        except ExportRefused as exc:
            entry.skipped = str(exc)
            log_event(
                logger, "ingest.mime_refused", logging.WARNING,
                mailbox=self.mailbox, message_key=self.key, reason=entry.skipped,
            )  # fmt: skip
            return
        entry.record(await writer.commit())

    async def store_body(self, entry: Entry) -> None:
        writer = await self.writer(entry)
        await writer.write(self.content.body[1].encode())
        entry.record(await writer.commit())
