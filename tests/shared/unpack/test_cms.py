"""S/MIME: clear-signed, opaque-signed and encrypted mail, made by `cryptography` (not by our own code),
unpacked as Graph hands them over (one `smime.p7m`), and the same damaged."""

from __future__ import annotations

import base64
import datetime
import io
import os
import zipfile
from email import policy
from email.message import EmailMessage

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.unpack.base import Encrypted, Problem, Signature
from shared.unpack.options import UnpackOptions
from shared.unpack.smime import DecryptionKey
from tests.shared.unpack.tree import Bodies, Node, unpack_attachment, unpack_mail

Identity = tuple[x509.Certificate, rsa.RSAPrivateKey]


def identity(common_name: str, email: str) -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test S/MIME CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def sender() -> Identity:
    return identity("Billing Fabrikam", "billing@fabrikam.example")


@pytest.fixture(scope="module")
def recipient() -> Identity:
    return identity("Invoices Contoso", "invoices@contoso.com")


PDF = b"%PDF-1.7 invoice " + os.urandom(200_000)


def invoice_entity() -> bytes:
    """The MIME entity a signing client signs: text and a PDF."""
    entity = EmailMessage(policy=policy.SMTP)
    entity.set_content("Invoice attached.")
    entity.add_attachment(PDF, maintype="application", subtype="pdf", filename="Rechnung März.pdf")
    return entity.as_bytes()


def clear_signed(signer: Identity, content: bytes | None = None) -> bytes:
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content or invoice_entity())
    builder = builder.add_signer(signer[0], signer[1], hashes.SHA256())
    return builder.sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature])


def opaque_signed(signer: Identity, content: bytes | None = None) -> bytes:
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content or invoice_entity())
    return builder.add_signer(signer[0], signer[1], hashes.SHA256()).sign(serialization.Encoding.DER, [])


def enveloped(to: Identity, content: bytes | None = None) -> bytes:
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(content or invoice_entity()).add_recipient(to[0])
    return builder.encrypt(serialization.Encoding.DER, [])


def key_of(who: Identity, name: str = "invoices-smime") -> DecryptionKey:
    return DecryptionKey(name, who[0], who[1])


def signature(node: Node) -> Signature:
    (note,) = [n for n in node.notes if isinstance(n, Signature)]
    return note


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
async def test_clear_signed_mail_gives_its_files_and_a_valid_signature(sender: Identity, chunk: int):
    top = await unpack_attachment(clear_signed(sender), "smime.p7m", "multipart/signed", chunk=chunk)
    assert top.kept() == {"Rechnung März.pdf": PDF}  # the detached signature is not a document
    verdict = signature(top)
    assert verdict.status == "valid", verdict
    assert verdict.signer == "CN=Billing Fabrikam <billing@fabrikam.example>"
    # Intact, but its certificate is a test CA's, which vouches for nobody here.
    recorded = verdict.to_json()
    assert recorded["intact"] is True and recorded["trusted"] is False
    assert "no trusted chain at the signing time" in recorded["trustReason"]


async def test_a_changed_clear_signed_mail_is_invalid_and_still_extracted(sender: Identity):
    raw = clear_signed(sender).replace(b"Invoice attached.", b"Invoice attacked.")
    top = await unpack_attachment(raw, "smime.p7m", "multipart/signed")
    assert top.kept() == {"Rechnung März.pdf": PDF}
    assert signature(top).status == "invalid" and "changed" in signature(top).reason


async def test_a_clear_signed_mail_with_bare_newlines_is_checked_in_canonical_form(sender: Identity):
    """A signed mail saved with LF line ends (a file system, some IMAP servers) still verifies."""
    raw = clear_signed(sender).replace(b"\r\n", b"\n")
    top = await unpack_attachment(raw, "smime.p7m", "multipart/signed")
    assert signature(top).status == "valid" and top.kept() == {"Rechnung März.pdf": PDF}


async def test_a_signature_that_is_not_cms_is_unverifiable(sender: Identity):
    raw = clear_signed(sender)
    head, _, tail = raw.partition(b'filename="smime.p7s"\r\n\r\n')
    raw = (
        head + b'filename="smime.p7s"\r\n\r\n' + base64.encodebytes(b"not a signature") + tail[tail.index(b"\r\n--") :]
    )
    top = await unpack_attachment(raw, "smime.p7m", "multipart/signed")
    assert signature(top).status == "unverifiable" and top.kept() == {"Rechnung März.pdf": PDF}


@pytest.mark.parametrize("form", ["der", "base64"])
async def test_opaque_signed_mail_is_unwrapped_in_a_stream(sender: Identity, form: str):
    raw = opaque_signed(sender)
    if form == "base64":
        raw = base64.encodebytes(raw)
    top = await unpack_attachment(raw, "smime.p7m", "application/pkcs7-mime", chunk=1000)
    assert top.kept() == {"Rechnung März.pdf": PDF}
    assert signature(top).status == "valid"


async def test_opaque_signed_with_changed_content_is_invalid(sender: Identity):
    raw = bytearray(opaque_signed(sender))
    at = raw.index(b"Invoice attached.")
    raw[at] ^= 0x20
    top = await unpack_attachment(bytes(raw), "smime.p7m", "application/pkcs7-mime")
    assert signature(top).status == "invalid"


@pytest.mark.parametrize("cut", [3, 40, 1000, -300])
async def test_a_truncated_cms_is_a_problem_recorded_on_the_p7m(sender: Identity, cut: int):
    raw = opaque_signed(sender)
    top = await unpack_attachment(raw[:cut], "smime.p7m", "application/pkcs7-mime")
    problems = [n for n in top.notes if isinstance(n, Problem)]
    assert problems and "truncated" in problems[0].reason
    assert not any(isinstance(n, Signature) and n.status == "valid" for n in top.notes)
    if cut > 0:  # cut inside the content: nothing half-read counts as a file
        assert all(not n.closed for n in top.walk())
    else:  # cut in the signer information after it: the file is whole, the signature unchecked
        assert top.kept() == {"Rechnung März.pdf": PDF}


async def test_a_corrupt_cms_is_a_problem_not_an_exception(sender: Identity):
    raw = bytearray(opaque_signed(sender))
    raw[1] = 0x85  # a length of five octets where two were
    top = await unpack_attachment(bytes(raw), "smime.p7m", "application/pkcs7-mime")
    assert [type(n) for n in top.notes] == [Problem]
    top = await unpack_attachment(b"\x30\x03\x02\x01\x01", "smime.p7m", "application/pkcs7-mime")
    assert [type(n) for n in top.notes] == [Problem]


async def test_encrypted_mail_is_decrypted_with_a_recipient_key(recipient: Identity):
    top = await unpack_attachment(enveloped(recipient), "smime.p7m", "application/pkcs7-mime", keys=[key_of(recipient)])
    assert top.kept() == {"Rechnung März.pdf": PDF}
    (note,) = top.notes
    assert isinstance(note, Encrypted) and note.decrypted and note.key == "invoices-smime"
    assert "Test S/MIME CA" in note.recipients[0]


async def test_encrypted_mail_without_a_key_records_its_recipient(recipient: Identity, sender: Identity):
    for keys in ([], [key_of(sender, "other-mailbox")]):
        top = await unpack_attachment(enveloped(recipient), "smime.p7m", "application/pkcs7-mime", keys=keys)
        assert top.kept() == {}
        (note,) = top.notes
        assert isinstance(note, Encrypted) and not note.decrypted
        assert note.recipients == (f"issuer CN=Test S/MIME CA, serial {recipient[0].serial_number:#x}",)
        assert note.reason and "SMIME_CERTIFICATES" in note.reason


async def test_the_wrong_private_key_for_a_recipient_certificate_is_recorded(recipient: Identity):
    wrong = DecryptionKey("mixed-up", recipient[0], rsa.generate_private_key(public_exponent=65537, key_size=2048))
    top = await unpack_attachment(enveloped(recipient), "smime.p7m", "application/pkcs7-mime", keys=[wrong])
    assert top.kept() == {}
    (note,) = top.notes
    assert isinstance(note, Encrypted) and not note.decrypted and note.reason and "wrong key" in note.reason


async def test_signed_inside_encrypted_comes_out_one_level_further(sender: Identity, recipient: Identity):
    signed = EmailMessage(policy=policy.SMTP)
    signed.set_content(
        opaque_signed(sender),
        maintype="application",
        subtype="pkcs7-mime",
        params={"smime-type": "signed-data"},
        filename="smime.p7m",
    )
    top = await unpack_attachment(
        enveloped(recipient, signed.as_bytes()), "smime.p7m", "application/pkcs7-mime", keys=[key_of(recipient)]
    )
    inner = top.by_name()["smime.p7m"]
    assert inner.parent is top and signature(inner).status == "valid"
    assert top.kept()["Rechnung März.pdf"] == PDF and top.by_name()["Rechnung März.pdf"].parent is inner
    assert isinstance(top.notes[0], Encrypted) and top.notes[0].decrypted


async def test_a_zip_in_a_signed_mail_in_a_forwarded_mail_shows_its_chain(sender: Identity):
    """Any nesting opens to the one depth limit; the chain is each file's parent."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("scans/invoice.pdf", PDF)
    entity = EmailMessage(policy=policy.SMTP)
    entity.set_content("Scans attached.")
    entity.add_attachment(archive.getvalue(), maintype="application", subtype="zip", filename="scans.zip")
    signed = clear_signed(sender, entity.as_bytes())
    forwarded = (
        b'Subject: Fwd: scans\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="fwd"\r\n\r\n'
        b"--fwd\r\nContent-Type: text/plain\r\n\r\nSee the signed mail below.\r\n"
        b'--fwd\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename="Signed scans.eml"\r\n\r\n'
        + signed
        + b"\r\n--fwd--\r\n"
    )
    top = await unpack_attachment(forwarded, "Fwd scans.eml", "message/rfc822")
    nodes = top.by_name()
    chain = [nodes["scans_invoice.pdf"]]
    while chain[-1].parent is not None and chain[-1].parent is not top:
        chain.append(chain[-1].parent)
    assert [n.name for n in chain] == ["scans_invoice.pdf", "scans.zip", "Signed scans.eml"]
    assert signature(nodes["Signed scans.eml"]).status == "valid"  # the signed mail was an attached .eml
    invoice = nodes["scans_invoice.pdf"]
    assert invoice.data == PDF and invoice.found is not None and invoice.found.path == "scans/invoice.pdf"
    shallow = UnpackOptions(max_depth=2)
    deep = await unpack_attachment(forwarded, "Fwd scans.eml", "message/rfc822", options=shallow)
    assert "scans_invoice.pdf" not in deep.by_name() and "scans.zip" in deep.kept()


async def test_an_aes_gcm_envelope_is_recorded_as_encrypted_with_its_recipient(recipient: Identity):
    from asn1crypto import cms

    envelope = cms.ContentInfo.load(enveloped(recipient))["content"]
    gcm = cms.ContentInfo(
        {
            "content_type": "authenticated_enveloped_data",
            "content": cms.AuthEnvelopedData(
                {
                    "version": "v0",
                    "recipient_infos": envelope["recipient_infos"],
                    "auth_encrypted_content_info": envelope["encrypted_content_info"],
                    "mac": b"\x00" * 16,
                }
            ),
        }
    ).dump()
    top = await unpack_attachment(gcm, "smime.p7m", "application/pkcs7-mime", keys=[key_of(recipient)])
    (note,) = top.notes
    assert isinstance(note, Encrypted) and not note.decrypted and note.reason and "AES-GCM" in note.reason
    assert note.recipients == (f"issuer CN=Test S/MIME CA, serial {recipient[0].serial_number:#x}",)


async def test_a_whole_raw_signed_or_encrypted_mail_is_opened_at_the_top(sender: Identity, recipient: Identity):
    """IMAP and POP3 hand over the mail itself: its multipart/signed, or its application/pkcs7-mime body."""
    root = await unpack_mail(b"From: billing@fabrikam.example\r\nSubject: signed\r\n" + clear_signed(sender))
    assert root.kept() == {"Rechnung März.pdf": PDF} and signature(root).status == "valid"
    encrypted = (
        b"From: billing@fabrikam.example\r\nSubject: encrypted\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(enveloped(recipient))
    )
    root = await unpack_mail(encrypted, keys=[key_of(recipient)])
    (p7m,) = root.children
    assert p7m.name == "smime.p7m" and isinstance(p7m.notes[0], Encrypted) and p7m.notes[0].decrypted
    assert root.kept()["Rechnung März.pdf"] == PDF


_PIECES = st.sampled_from([b"--", b"--x", b"a", b"\xc3\xbc", b" ", b"\r"])
_LINES = st.lists(st.tuples(st.lists(_PIECES, max_size=5), st.sampled_from([b"\n", b"\r\n"])), max_size=40)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_LINES, big=st.integers(0, 9000))
async def test_signed_content_hashes_the_same_line_by_line_and_in_blocks(
    sender: Identity, lines: list[tuple[list[bytes], bytes]], big: int
):
    text = b"".join(b"".join(parts) + end for parts, end in lines) + b"z" * big + b"\r\n"
    entity = b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=t.txt\r\n\r\n" + text
    raw = clear_signed(sender, entity)
    verdicts = []
    for chunk in (1, len(raw)):
        top = await unpack_attachment(raw, "smime.p7m", "multipart/signed", chunk=chunk)
        verdicts.append((signature(top).status, top.kept()))
    assert verdicts[0] == verdicts[1]
    if b"\r" not in text.replace(b"\r\n", b""):  # canonical CRLF as signed: the signature holds
        assert verdicts[0][0] == "valid"


async def test_a_signed_or_encrypted_mails_body_is_the_one_inside_its_s_mime(sender: Identity, recipient: Identity):
    """SAVE_BODY: a clear-signed mail's body is in its first part; an opaque-signed or encrypted mail is one
    S/MIME entity whose content is the mail. An attached signed mail's body is not the mail's."""
    head = b"From: billing@fabrikam.example\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
    bodies = Bodies()
    await unpack_mail(head + clear_signed(sender), bodies=bodies)
    assert bodies.texts() == [("text/plain", "utf-8", b"Invoice attached.\r\n")]
    for what, cms in (("signed-data", opaque_signed(sender)), ("enveloped-data", enveloped(recipient))):
        whole = (
            head + b"Content-Type: application/pkcs7-mime; smime-type=" + what.encode() + b'; name="smime.p7m"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(cms)
        )
        bodies = Bodies()
        root = await unpack_mail(whole, bodies=bodies, keys=[key_of(recipient)])
        assert bodies.texts() == [("text/plain", "utf-8", b"Invoice attached.\r\n")], what
        assert root.kept()["Rechnung März.pdf"] == PDF
    attached = EmailMessage(policy=policy.SMTP)
    attached["Subject"] = "Fwd: signed"
    attached.set_content("forwarding the signed mail")
    attached.add_attachment(opaque_signed(sender), maintype="application", subtype="pkcs7-mime", filename="smime.p7m")
    bodies = Bodies()
    await unpack_mail(attached.as_bytes(), bodies=bodies)
    assert [text for _, _, text in bodies.texts()] == [b"forwarding the signed mail\r\n"]
