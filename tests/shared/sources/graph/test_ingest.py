"""Planning a message's attachments: names, kinds and skip reasons (the e2e tests cover the rest)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from shared.pipeline.attachments import ListedJob
from shared.pipeline.job import Entry
from shared.pipeline.storage import BlobStore
from shared.settings import Settings, parse_settings
from shared.sources.graph.contentbytes import ExpandedMessage
from shared.sources.graph.ingest import _facts, _Message

FILE = "#microsoft.graph.fileAttachment"
ITEM = "#microsoft.graph.itemAttachment"
REFERENCE = "#microsoft.graph.referenceAttachment"


def runtime(settings: Settings, **parts: Any) -> Any:
    """The parts of a Runtime the listed job uses."""
    return SimpleNamespace(settings=settings, **parts)


def listed_job(rt: Any, attachments: list[dict[str, Any]], prefix: str = "prefix", *contents: bytes) -> ListedJob:
    """The pipeline's job for a Graph message with these attachments (`contentBytes: i` → `contents[i]`)."""
    message = _Message(rt, rt.settings.mailboxes[0], "users/x/messages/y")
    listed = message.listed(ExpandedMessage({"attachments": attachments}, list(contents)))
    return ListedJob(rt, rt.settings.mailboxes[0].mailbox, prefix, "key", datetime(2026, 1, 2, tzinfo=UTC), listed)


def plan(settings: Settings, attachments: list[dict[str, Any]]) -> list[Entry]:
    rt = runtime(settings, attachments=None)
    return [entry for entry, _ in listed_job(rt, attachments).plan()]


def test_names_are_safe_and_unique_within_the_message(settings: Settings):
    entries = plan(settings, [
        {"@odata.type": FILE, "id": "1", "name": "scan.pdf", "size": 10},
        {"@odata.type": FILE, "id": "2", "name": "SCAN.pdf", "size": 10},
        {"@odata.type": FILE, "id": "3", "name": "../../etc/passwd", "size": 10},
        {"@odata.type": FILE, "id": "4", "name": "", "size": 10},
        {"@odata.type": ITEM, "id": "5", "name": "Re: scan", "size": 10},
        {"@odata.type": ITEM, "id": "6", "name": "Meeting", "contentType": "text/calendar", "size": 10},
        {"@odata.type": FILE, "id": "7", "name": "manifest.json", "size": 10},
    ])  # fmt: skip
    assert [e.file for e in entries] == [
        "scan.pdf", "SCAN (2).pdf", "_._etc_passwd", "attachment", "Re_ scan.eml", "Meeting.ics", "manifest (2).json",
    ]  # fmt: skip
    assert entries[4].content_type == "message/rfc822"


def test_rules_skip_with_a_reason_and_links_are_recorded(env: dict[str, str]):
    env["ATTACHMENT_EXTENSIONS"] = "pdf"
    env["ATTACHMENT_MAX_BYTES"] = "1000"
    entries = plan(parse_settings(env), [
        {"@odata.type": FILE, "id": "1", "name": "a.pdf", "size": 10},
        {"@odata.type": FILE, "id": "2", "name": "b.docx", "size": 10},
        {"@odata.type": FILE, "id": "3", "name": "c.pdf", "size": 1001},
        {"@odata.type": FILE, "id": "4", "name": "logo", "contentType": "image/png", "size": 10, "isInline": True},
        {"@odata.type": ITEM, "id": "5", "name": "Fwd: invoice", "size": 10},
        {"@odata.type": REFERENCE, "id": "6", "name": "link", "sourceUrl": "https://contoso.sharepoint.com/x"},
    ])  # fmt: skip
    skipped = [e.skipped for e in entries]
    assert skipped[0] is None and entries[0].file == "a.pdf"
    assert skipped[1] == "type not allowed (.docx, no content type)" and entries[1].file is None
    assert skipped[2] is not None and "ATTACHMENT_MAX_BYTES" in skipped[2]
    assert skipped[3] is not None and skipped[3].startswith("inline image")
    # The attached mail itself is not kept (.eml is not allowed), but it keeps a name: its files are
    # still extracted and refer to it as their parent.
    assert skipped[4] is not None and entries[4].file == "Fwd_ invoice.eml"
    assert entries[5].url == "https://contoso.sharepoint.com/x" and entries[5].kind == "reference"
    assert entries[5].to_json()["skipped"].startswith("link")


def test_an_inline_pdf_is_a_document_and_an_inline_logo_is_not(env: dict[str, str]):
    """Apple Mail marks PDFs inline (paperless-ngx#865): only inline images are skipped."""
    attachments = [
        {"@odata.type": FILE, "id": "1", "name": "Invoice.pdf", "contentType": "application/pdf", "isInline": True},
        {"@odata.type": FILE, "id": "2", "name": "logo.png", "contentType": "image/png", "isInline": True},
        {"@odata.type": FILE, "id": "3", "name": "image001", "contentType": "image/jpeg", "isInline": True},
        {"@odata.type": FILE, "id": "4", "name": "sig.gif", "contentType": "application/x-unknown", "isInline": True},
        {"@odata.type": FILE, "id": "5", "name": "terms.txt", "contentType": "text/plain", "isInline": True},
    ]
    entries = plan(parse_settings(env), attachments)
    assert [e.file for e in entries] == ["Invoice.pdf", None, None, None, "terms.txt"]
    assert all(e.skipped and e.skipped.startswith("inline image") for e in entries[1:4])
    env["INCLUDE_INLINE_ATTACHMENTS"] = "true"
    entries = plan(parse_settings(env), attachments)
    assert [e.file for e in entries] == ["Invoice.pdf", "logo.png", "image001", "sig.gif", "terms.txt"]


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def job_with_store(settings: Settings, store: BlobStore, attachment: dict[str, Any], content: bytes) -> ListedJob:
    async def no_keys() -> tuple[()]:
        return ()

    rt = runtime(
        settings,
        attachments=store,
        state=store,
        container=lambda _: store,
        smime_keys=SimpleNamespace(get=no_keys),
    )
    return listed_job(rt, [{**attachment, "contentBytes": 0}], "invoices@contoso.com/2026/11/29/key", content)


async def test_files_found_in_a_zip_pass_the_filters_and_their_blobs_name_the_parent(
    env: dict[str, str], store: BlobStore
):
    env["ATTACHMENT_EXTENSIONS"] = "pdf"
    pdf, deep = b"%PDF invoice" * 100, b"%PDF deep" * 100
    raw = zipped({"a/invoice.pdf": pdf, "index.csv": b"file;pages", "inner.zip": zipped({"deep.pdf": deep})})
    attachment = {"@odata.type": FILE, "id": "1", "name": "scans.zip", "contentType": "application/zip"}
    job = job_with_store(parse_settings(env), store, attachment, raw)
    ((entry, part),) = job.plan()
    assert entry.skipped and entry.file == "scans.zip"  # not kept itself (.zip is not allowed), but opened
    await job.store_container(entry, part)
    found = {e.name: e for e in entry.flat()[1:]}
    assert found["a/invoice.pdf"].file == "a_invoice.pdf" and found["a/invoice.pdf"].parent == "scans.zip"
    assert found["index.csv"].skipped == "type not allowed (.csv, text/csv)" and found["index.csv"].blob is None
    assert found["inner.zip"].skipped and found["deep.pdf"].parent == "inner.zip"
    stored = sorted(await store.names(job.prefix))
    assert stored == [f"{job.prefix}/a_invoice.pdf", f"{job.prefix}/deep.pdf"]
    assert found["deep.pdf"].sha256 == hashlib.sha256(deep).hexdigest()


async def test_a_zip_bomb_leaves_no_blob_behind(settings: Settings, store: BlobStore):
    raw = zipped({"first.pdf": b"%PDF first" * 1000, "bomb.pdf": bytes(40 * 1024 * 1024)})
    attachment = {"@odata.type": FILE, "id": "1", "name": "bomb.zip", "contentType": "application/zip"}
    job = job_with_store(settings, store, attachment, raw)
    ((entry, part),) = job.plan()
    await job.store_container(entry, part)
    assert entry.skipped and entry.skipped.startswith("zip bomb") and entry.children == [] and entry.blob is None
    assert await store.names(job.prefix) == []  # first.pdf was stored before the bomb showed, then deleted


async def test_routes_see_the_sender_to_and_cc_and_whether_a_file_is_kept(env: dict[str, str]):
    env["ATTACHMENT_EXTENSIONS"] = "pdf"
    settings = parse_settings(env)
    rt = runtime(settings, attachments=None)
    message = {
        "from": {"emailAddress": {"name": "Billing", "address": "billing@fabrikam.example"}},
        "toRecipients": [{"emailAddress": {"address": "ap@contoso.com"}}],
        "ccRecipients": [{"emailAddress": {"address": "payables@contoso.com"}}, {"emailAddress": {}}],
        "subject": "Invoice 7",
    }
    when = datetime(2026, 3, 7, tzinfo=UTC)

    async def facts(attachments: list[dict[str, Any]]) -> Any:
        return await listed_job(rt, attachments).facts(_facts(settings.mailboxes[0], "key", message, when), ())

    found = await facts([{"@odata.type": FILE, "id": "1", "name": "notes.docx", "size": 10}])
    assert (found.sender, found.recipients, found.subject) == (
        "billing@fabrikam.example",
        ("ap@contoso.com", "payables@contoso.com"),
        "Invoice 7",
    )
    assert found.attachments[0].name == "notes.docx" and not found.has_kept_file  # .docx is filtered out
    assert (await facts([{"@odata.type": FILE, "id": "2", "name": "a.pdf", "size": 10}])).has_kept_file
    # An attached mail whose .eml is filtered out may still give up files: it counts as kept.
    assert (await facts([{"@odata.type": ITEM, "id": "3", "name": "Fwd", "size": 10}])).has_kept_file
    link = await facts([{"@odata.type": REFERENCE, "id": "4", "name": "doc", "sourceUrl": "https://x/doc"}])
    assert link.attachments == () and not link.has_kept_file
