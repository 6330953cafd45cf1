"""Streaming extraction of the files inside an attached mail."""

from __future__ import annotations

import hashlib
import os
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from shared.unpack.mime import MAX_LINE, MimeExtractor, MimePart


class Sink:
    def __init__(self, part: MimePart[Sink]) -> None:
        self.part = part
        self.data = bytearray()
        self.closed = False

    async def write(self, data: bytes) -> None:
        assert not self.closed
        self.data += data

    async def close(self) -> None:
        self.closed = True


async def extract(raw: bytes, chunk: int = 4096, max_depth: int = 3, skip_inline: bool = False) -> list[Sink]:
    sinks: list[Sink] = []

    async def open_part(part: MimePart[Sink]) -> Sink | None:
        if skip_inline and part.inline:
            return None
        sink = Sink(part)
        sinks.append(sink)
        return sink

    extractor: MimeExtractor[Sink] = MimeExtractor(open_part, max_depth)
    for start in range(0, len(raw), chunk):
        await extractor.feed(raw[start : start + chunk])
        assert len(extractor._buf) <= MAX_LINE  # never more than a line held
    await extractor.close()
    assert all(s.closed for s in sinks)
    return sinks


def mail(subject: str, body: str = "Hello") -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = "sender@example.com"
    message["To"] = "invoices@contoso.com"
    message["Subject"] = subject
    message.set_content(body)
    return message


def forwarded_invoice() -> tuple[EmailMessage, bytes, bytes]:
    pdf, logo = os.urandom(150_000), os.urandom(3000)
    inner = mail("Invoice 4711")
    inner.add_alternative("<p>See attached <img src='cid:logo'></p>", subtype="html")
    html = list(inner.iter_parts())[1]
    assert isinstance(html, EmailMessage)
    html.add_related(logo, maintype="image", subtype="png", cid="<logo>")
    inner.add_attachment(pdf, maintype="application", subtype="pdf", filename="Rechnung Nr. 4711 – März.pdf")
    outer = mail("Fwd: Invoice 4711")
    outer.add_attachment(inner, filename="Invoice 4711.eml")
    return outer, pdf, logo


@pytest.mark.parametrize("chunk", [1, 77, 4096, 1 << 20])
async def test_files_inside_an_attached_mail_come_out_whole(chunk: int):
    outer, pdf, logo = forwarded_invoice()
    sinks = await extract(outer.as_bytes(), chunk if chunk != 1 else 1)
    by_name = {s.part.name: s for s in sinks}
    assert set(by_name) == {"Invoice 4711.eml", "Rechnung Nr. 4711 – März.pdf", "attachment.png"}
    eml = by_name["Invoice 4711.eml"]
    assert eml.part.is_message and eml.part.depth == 1 and eml.part.parent is None
    inner = by_name["Rechnung Nr. 4711 – März.pdf"]
    assert bytes(inner.data) == pdf and inner.part.parent is eml and inner.part.depth == 2
    assert inner.part.content_type == "application/pdf" and not inner.part.inline
    assert by_name["attachment.png"].part.inline and bytes(by_name["attachment.png"].data) == logo
    # The .eml is the attached mail exactly as it was sent, and parses back to the same invoice.
    reparsed = BytesParser(policy=policy.default).parsebytes(bytes(eml.data))
    assert isinstance(reparsed, EmailMessage)
    assert reparsed["Subject"] == "Invoice 4711"
    attachments = list(reparsed.iter_attachments())
    assert [a.get_content() for a in attachments if a.get_filename()] == [pdf]


async def test_depth_is_bounded_and_skipped_parts_are_read_past():
    outer, pdf, _ = forwarded_invoice()
    sinks = await extract(outer.as_bytes(), max_depth=1)
    assert [s.part.name for s in sinks] == ["Invoice 4711.eml"]  # saved, not opened
    sinks = await extract(outer.as_bytes(), skip_inline=True)
    assert sorted(s.part.name for s in sinks) == ["Invoice 4711.eml", "Rechnung Nr. 4711 – März.pdf"]
    assert bytes(sinks[1].data) == pdf


async def test_quoted_printable_base64_without_padding_and_bare_newlines():
    boundary = "b1"
    raw = (
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\n\n'
        "preamble\n"
        f"--{boundary}\n"
        "Content-Type: text/plain\n\nbody text\n"
        f"--{boundary}\n"
        'Content-Type: text/csv; name="list.csv"\n'
        "Content-Disposition: attachment; filename*=utf-8''Liste%20%C3%BCber.csv\n"
        "Content-Transfer-Encoding: quoted-printable\n\n"
        "a;b=3Dc;=C3=BC\n"
        "long line that is soft=\n"
        " broken\n"
        f"--{boundary}\n"
        'Content-Type: application/octet-stream; name="x.bin"\n'
        "Content-Transfer-Encoding: base64\n\n"
        "QUJDRA\n"
        f"--{boundary}--\n"
        "epilogue\n"
    ).encode()
    sinks = await extract(raw, chunk=5)
    assert [(s.part.name, bytes(s.data)) for s in sinks] == [
        ("Liste über.csv", "a;b=c;ü\nlong line that is soft broken".encode()),
        ("x.bin", b"ABCD"),
    ]


async def test_a_large_part_streams_through_in_bounded_memory():
    big = os.urandom(6 * 1024 * 1024)
    outer = mail("scan")
    outer.add_attachment(big, maintype="application", subtype="pdf", filename="scan.pdf")
    digest = hashlib.sha256()

    class Hashing(Sink):
        async def write(self, data: bytes) -> None:
            digest.update(data)  # nothing kept

    async def open_part(part: MimePart[Sink]) -> Sink:
        return Hashing(part)

    extractor: MimeExtractor[Sink] = MimeExtractor(open_part, 3)
    raw = outer.as_bytes()
    for start in range(0, len(raw), 65536):
        await extractor.feed(raw[start : start + 65536])
        assert len(extractor._buf) <= MAX_LINE
    await extractor.close()
    assert digest.hexdigest() == hashlib.sha256(big).hexdigest()


async def test_a_single_part_mail_has_no_files_unless_its_body_is_one():
    assert await extract(mail("just text").as_bytes()) == []
    scan = EmailMessage()
    scan["Subject"] = "scan"
    scan.set_content(b"%PDF-1.7", maintype="application", subtype="pdf", filename="scan.pdf")
    sinks = await extract(scan.as_bytes())
    assert [(s.part.name, bytes(s.data)) for s in sinks] == [("scan.pdf", b"%PDF-1.7")]
