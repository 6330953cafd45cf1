"""Duplicates by content against Azurite: one first copy per sha256, agreed on by racing mails; a retry is not
its own duplicate; a record whose blob is gone is taken over; `skip` commits no copy; checks reach metadata,
tags and the manifest entry."""

from __future__ import annotations

import asyncio
import io
import os
from dataclasses import dataclass

import pytest

from shared.errors import SettingsError
from shared.pipeline.duplicates import MIN_BYTES, Copy, Duplicates, Mode, duplicates_from_env, record_path
from shared.pipeline.filecheck import CheckedWriter
from shared.pipeline.job import Entry
from shared.pipeline.storage import BlobStore

INVOICE = b"%PDF-1.7 invoice " + os.urandom(4000)


@dataclass
class Mail:
    """What a `CheckedWriter` needs of its mail (a Job)."""

    mailbox: str
    key: str
    store: BlobStore
    duplicates: Duplicates
    received: str = "2026-11-02T08:00:00Z"


def mail(store: BlobStore, key: str, mode: Mode = "mark", mailbox: str = "ap@contoso.com") -> Mail:
    return Mail(mailbox, key, store, Duplicates(store, lambda _: store, mode))


async def put(m: Mail, name: str, data: bytes = INVOICE, kind: str = "file") -> tuple[Entry, CheckedWriter]:
    """A file of mail `m` through its checked writer, committed; the entry says what came of it."""
    entry = Entry(name, kind, "application/pdf", None, file=name)
    writer = CheckedWriter(m, entry, await m.store.writer(f"{m.key}/{name}", "application/pdf", {}, {"kind": kind}))
    await writer.write(data)
    entry.record(await writer.commit())
    return entry, writer


def test_the_setting_takes_mark_skip_off_and_names_itself_when_wrong():
    assert duplicates_from_env({}) == "mark"
    assert duplicates_from_env({"DUPLICATES": " Skip "}) == "skip"
    with pytest.raises(SettingsError, match=r"^setting DUPLICATES: must be one of mark, skip, off, got 'yes'$"):
        duplicates_from_env({"DUPLICATES": "yes"})


async def test_the_first_copy_wins_and_a_retry_of_it_is_not_its_own_duplicate(store: BlobStore):
    first, _ = await put(mail(store, "k1"), "a.pdf")
    assert first.blob == "k1/a.pdf" and first.duplicate_of is None
    again, _ = await put(mail(store, "k1"), "a.pdf")  # the same mail's retry: its blob, its record
    assert again.duplicate_of is None
    forward, _ = await put(mail(store, "k2", mailbox="invoices@contoso.com"), "Fwd a.pdf")
    assert forward.blob == "k2/Fwd a.pdf"  # mark: stored, and marked
    assert forward.duplicate_of == {
        "container": store.name,
        "blob": "k1/a.pdf",
        "mailbox": "ap@contoso.com",
        "messageKey": "k1",
        "receivedDateTime": "2026-11-02T08:00:00Z",
    }
    assert (await store.tags("k2/Fwd a.pdf"))["duplicate"] == "true"
    assert "duplicate" not in await store.tags("k1/a.pdf")


async def test_mails_racing_with_the_same_file_agree_on_one_first_copy(store: BlobStore):
    entries = await asyncio.gather(*(put(mail(store, f"race{i}"), "same.pdf") for i in range(6)))
    firsts = [e for e, _ in entries if e.duplicate_of is None]
    assert len(firsts) == 1
    assert {e.duplicate_of["blob"] for e, _ in entries if e.duplicate_of} == {firsts[0].blob}
    record = await store.read_json(record_path(firsts[0].sha256 or ""))
    assert record is not None and record[0]["blob"] == firsts[0].blob


async def test_skip_commits_no_copy_and_points_to_the_first(store: BlobStore):
    await put(mail(store, "k1"), "a.pdf")
    copy, _ = await put(mail(store, "k2", "skip"), "a.pdf")
    assert copy.blob is None and await store.stored("k2/a.pdf") is None
    assert copy.skipped and copy.skipped.startswith(f"duplicate of {store.name}/k1/a.pdf")
    assert copy.duplicate_of and copy.duplicate_of["messageKey"] == "k1"
    assert copy.sha256 and copy.size == len(INVOICE)


async def test_skip_racing_mails_leave_exactly_one_blob(store: BlobStore):
    entries = await asyncio.gather(*(put(mail(store, f"s{i}", "skip"), "same.pdf") for i in range(5)))
    assert sum(1 for e, _ in entries if e.blob) == 1
    assert len([n for n in await store.names("s") if n.endswith("same.pdf")]) == 1


async def test_a_record_whose_blob_is_gone_is_taken_over(store: BlobStore):
    await put(mail(store, "k1"), "a.pdf")
    await store.delete("k1/a.pdf")
    second, _ = await put(mail(store, "k2"), "a.pdf")
    assert second.duplicate_of is None
    record = await store.read_json(record_path(second.sha256 or ""))
    assert record is not None and Copy.from_json(record[0]).message_key == "k2"


async def test_small_files_and_the_mails_own_files_are_not_looked_up(store: BlobStore):
    logo = os.urandom(MIN_BYTES - 1)
    await put(mail(store, "k1"), "logo.gif", logo)
    small, _ = await put(mail(store, "k2"), "logo.gif", logo)
    assert small.duplicate_of is None and await store.names("duplicates/") == []
    await put(mail(store, "k1"), "message.eml", INVOICE, kind="message")
    assert await store.names("duplicates/") == []


async def test_off_looks_nothing_up(store: BlobStore):
    await put(mail(store, "k1", "off"), "a.pdf")
    copy, _ = await put(mail(store, "k2", "off"), "a.pdf")
    assert copy.blob and copy.duplicate_of is None and await store.names("duplicates/") == []


async def test_protection_goes_to_entry_tag_and_metadata_and_a_retry_reads_it_back(store: BlobStore):
    from pypdf import PdfWriter

    pdf = PdfWriter()
    pdf.add_blank_page(100, 100)
    pdf.encrypt(user_password="geheim", algorithm="AES-256")
    buffer = io.BytesIO()
    pdf.write(buffer)
    m = mail(store, "k9")
    entry, _ = await put(m, "locked.pdf", buffer.getvalue())
    assert entry.protected and entry.protected.startswith("password-protected PDF")
    assert (await store.tags("k9/locked.pdf"))["protected"] == "true"
    existing = await store.stored("k9/locked.pdf")
    assert existing is not None
    retry = Entry("locked.pdf", "file", "application/pdf", None, file="locked.pdf")
    again = CheckedWriter(m, retry, await store.writer("k9/locked.pdf", "application/pdf", {}))
    retry.record(await again.adopt(existing))
    assert retry.protected == entry.protected and retry.duplicate_of is None
