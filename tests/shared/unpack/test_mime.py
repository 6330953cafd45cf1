"""Streaming extraction of the files inside an attached mail."""

from __future__ import annotations

import hashlib
import os
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.unpack.base import Found, Note, Pipe
from shared.unpack.mime import MAX_LINE, MimeReader
from shared.unpack.options import UnpackOptions
from shared.unpack.trust import TrustAnchors
from tests.shared.unpack.tree import Bodies, Node, unpack_attachment, unpack_mail


async def extract(raw: bytes, chunk: int = 4096, max_depth: int = 3, skip: tuple[str, ...] = ()) -> list[Node]:
    """The files found in an attached mail (depth 1), in order; each written whole."""
    top = await unpack_attachment(
        raw, "attached.eml", "message/rfc822", chunk=chunk, options=UnpackOptions(max_depth=max_depth), skip=skip
    )
    found = list(top.walk())
    assert all(n.closed for n in found if n.found and n.name not in skip)
    return found


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
    nodes = await extract(outer.as_bytes(), chunk)
    by_name = {n.name: n for n in nodes}
    assert set(by_name) == {"Invoice 4711.eml", "Rechnung Nr. 4711 – März.pdf", "attachment.png"}
    eml = by_name["Invoice 4711.eml"]
    assert eml.found and eml.found.content_type == "message/rfc822" and eml.depth == 2
    assert eml.parent and eml.parent.name == "attached.eml"
    inner = by_name["Rechnung Nr. 4711 – März.pdf"]
    assert bytes(inner.data) == pdf and inner.parent is eml and inner.depth == 3
    assert inner.found and inner.found.content_type == "application/pdf" and not inner.found.inline
    png = by_name["attachment.png"]
    assert png.found and png.found.inline and bytes(png.data) == logo
    # The .eml is the attached mail exactly as it was sent, and parses back to the same invoice.
    reparsed = BytesParser(policy=policy.default).parsebytes(bytes(eml.data))
    assert isinstance(reparsed, EmailMessage)
    assert reparsed["Subject"] == "Invoice 4711"
    attachments = list(reparsed.iter_attachments())
    assert [a.get_content() for a in attachments if a.get_filename()] == [pdf]


async def test_depth_is_bounded_and_skipped_parts_are_read_past():
    outer, pdf, _ = forwarded_invoice()
    nodes = await extract(outer.as_bytes(), max_depth=1)
    assert [n.name for n in nodes] == ["Invoice 4711.eml"]  # saved, not opened
    nodes = await extract(outer.as_bytes(), skip=("attachment.png",))
    by_name = {n.name: n for n in nodes}
    assert bytes(by_name["Rechnung Nr. 4711 – März.pdf"].data) == pdf
    assert not by_name["attachment.png"].data and not by_name["attachment.png"].closed


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
    nodes = await extract(raw, chunk=5)
    assert [(n.name, bytes(n.data)) for n in nodes] == [
        ("Liste über.csv", "a;b=c;ü\nlong line that is soft broken".encode()),
        ("x.bin", b"ABCD"),
    ]


async def test_a_large_part_streams_through_in_bounded_memory():
    big = os.urandom(6 * 1024 * 1024)
    outer = mail("scan")
    outer.add_attachment(big, maintype="application", subtype="pdf", filename="scan.pdf")
    digest = hashlib.sha256()

    class Hashing:
        async def write(self, data: bytes) -> None:
            digest.update(data)  # nothing kept

        async def close(self) -> None:
            pass

    class Scope:
        async def found(self, item: Found) -> Hashing:
            return Hashing()

        async def body(self, content_type: str, charset: str | None) -> None:
            return None

        def note(self, note: Note) -> None:
            raise AssertionError(note)

        def pipe(self, parse: object) -> Pipe:
            raise AssertionError(parse)

        trust = TrustAnchors()

    reader = MimeReader(Scope())
    raw = outer.as_bytes()
    for start in range(0, len(raw), 65536):
        await reader.write(raw[start : start + 65536])
        assert len(reader._buf) <= MAX_LINE
    await reader.close()
    assert digest.hexdigest() == hashlib.sha256(big).hexdigest()


async def test_a_single_part_mail_has_no_files_unless_its_body_is_one():
    assert await extract(mail("just text").as_bytes()) == []
    scan = EmailMessage()
    scan["Subject"] = "scan"
    scan.set_content(b"%PDF-1.7", maintype="application", subtype="pdf", filename="scan.pdf")
    nodes = await extract(scan.as_bytes())
    assert [(n.name, bytes(n.data)) for n in nodes] == [("scan.pdf", b"%PDF-1.7")]


async def test_a_whole_raw_mail_is_the_top_level_and_its_attached_mail_is_opened():
    """IMAP and POP3 hand over the whole mail's MIME: its parts are the mail's files (depth 1)."""
    outer, pdf, logo = forwarded_invoice()
    root = await unpack_mail(outer.as_bytes(), chunk=1000)
    assert [(n.name, n.depth) for n in root.walk()] == [
        ("Invoice 4711.eml", 1),
        ("attachment.png", 2),
        ("Rechnung Nr. 4711 – März.pdf", 2),
    ]
    assert root.kept()["Rechnung Nr. 4711 – März.pdf"] == pdf and root.kept()["attachment.png"] == logo
    root = await unpack_mail(outer.as_bytes(), options=UnpackOptions(attached_mail=False))
    assert [n.name for n in root.walk()] == ["Invoice 4711.eml"]


async def test_an_inline_pdf_beside_an_inline_logo_is_found_as_a_file_marked_inline():
    """Apple Mail sends PDFs `Content-Disposition: inline`; the rules (not the reader) keep the PDF."""
    message = mail("invoice")
    message.add_alternative("<p>Invoice <img src='cid:logo'></p>", subtype="html")
    html = list(message.iter_parts())[1]
    assert isinstance(html, EmailMessage)
    html.add_related(b"\x89PNG logo", maintype="image", subtype="png", cid="<logo>")
    html.add_related(b"%PDF inline", maintype="application", subtype="pdf", disposition="inline", filename="a.pdf")
    root = await unpack_mail(message.as_bytes())
    found = {n.name: n.found for n in root.walk()}
    assert found["a.pdf"] and found["a.pdf"].inline and found["a.pdf"].content_type == "application/pdf"
    assert found["attachment.png"] and found["attachment.png"].inline
    assert root.kept() == {"a.pdf": b"%PDF inline", "attachment.png": b"\x89PNG logo"}


@pytest.mark.parametrize("chunk", [3, 4096, 1 << 20])
async def test_bodies_read_in_blocks_give_the_bytes_email_gives(chunk: int):
    """Long bodies are read a block of lines at a time: the bytes must be those `email` decodes, whatever
    the line ends and with lines that start like a boundary but are none."""
    text = "".join(f"-- line {i} ümlaut {'x' * (i % 90)} = sign\n" for i in range(3000))
    data = os.urandom(300_000)
    message = mail("blocks")
    message.add_attachment(text.encode(), maintype="text", subtype="plain", filename="t.txt", cte="quoted-printable")
    message.add_attachment(data, maintype="application", subtype="octet-stream", filename="d.bin")
    message.add_attachment(b"--not-a-boundary\n" * 500, maintype="application", subtype="x-raw", filename="r.bin")
    for raw in (message.as_bytes(), message.as_bytes().replace(b"\r\n", b"\n")):
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        expected = {str(p.get_filename()): p.get_payload(decode=True) for p in parsed.iter_attachments()}
        nodes = await extract(raw, chunk)
        assert {n.name: bytes(n.data) for n in nodes} == expected


_LINE_PARTS = st.sampled_from([b"--", b"--b", b"--b--", b"x", b"=", b"=\r", b"\r", b" ", b"\xc3\xbc", b"QUJD"])
_BODY = st.lists(
    st.tuples(st.lists(_LINE_PARTS, max_size=6), st.sampled_from([b"\n", b"\r\n", b"\r\r\n"])), max_size=60
)


@settings(max_examples=60, deadline=None)
@given(body=_BODY, encoding=st.sampled_from(["7bit", "quoted-printable", "base64"]), big=st.integers(0, 6000))
async def test_block_and_line_reading_agree_whatever_the_chunks(
    body: list[tuple[list[bytes], bytes]], encoding: str, big: int
) -> None:
    """Bodies with lines that look like boundaries, odd line ends and soft breaks come out the same whether
    the bytes arrive one at a time (line by line) or in one piece (whole blocks of lines)."""
    lines = b"".join(b"".join(parts) + end for parts, end in body) + b"y" * big + b"\n"
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b'Content-Type: application/octet-stream; name="f.bin"\r\n'
        b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + lines + b"\r\n--b--\r\n"
    )
    one_by_one = [(n.name, bytes(n.data), n.closed) for n in await extract(raw, chunk=1)]
    whole = [(n.name, bytes(n.data), n.closed) for n in await extract(raw, chunk=len(raw))]
    assert one_by_one == whole


@pytest.mark.parametrize("chunk", [1, 50, 1 << 20])
async def test_the_mails_own_body_parts_are_offered_decoded_not_those_of_an_attached_mail(chunk: int):
    """SAVE_BODY's view of a raw mail: its text and HTML parts, transfer encoding undone, charset as sent."""
    forwarded, pdf, _ = forwarded_invoice()  # mails with a text and an HTML body of their own, one inside
    outer = mail("Fwd: Fwd: Invoice 4711", "Gruß")
    outer.add_alternative("<p>Grüße, die Buchhaltung</p>", subtype="html", charset="iso-8859-1", cte="quoted-printable")
    outer.add_attachment(forwarded, filename="Fwd.eml")
    bodies = Bodies()
    root = await unpack_mail(outer.as_bytes(), chunk=chunk, bodies=bodies)
    assert bodies.texts() == [
        ("text/plain", "utf-8", "Gruß\r\n".encode()),
        ("text/html", "iso-8859-1", "<p>Grüße, die Buchhaltung</p>\r\n".encode("iso-8859-1")),
    ]
    assert root.kept()["Rechnung Nr. 4711 – März.pdf"] == pdf  # the files as before
    assert "(body)" not in {n.name for n in root.walk()}


async def test_a_text_attachment_is_a_file_not_the_body():
    message = mail("notes", "the body")
    message.add_attachment("a;b\n", subtype="csv", filename="list.csv")
    bodies = Bodies()
    root = await unpack_mail(message.as_bytes(), bodies=bodies)
    assert bodies.texts() == [("text/plain", "utf-8", b"the body\r\n")]
    assert root.kept() == {"list.csv": b"a;b\r\n"}
