"""The simulator's S/MIME, TNEF and zip producers, checked by independent readers: `cryptography` decrypts the
envelopes, `asn1crypto` parses the CMS whole, `tnefparse` reads the TNEF; sizes are known up front."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import io
import os
import zipfile
import zlib
from email import policy
from email.message import EmailMessage

import httpx
import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from tnefparse.tnef import TNEF

from local.azuresim import smime as smime_module
from local.azuresim.content import BytesContent, Content, read_all
from local.azuresim.smime import SEGMENT, Signers, new_identity, sealed
from local.azuresim.tnef import TnefFile, encode_tnef
from local.azuresim.zips import ZipContent, ZipEntry
from shared.unpack.base import Encrypted, Signature
from shared.unpack.smime import DecryptionKey
from tests.local.simclient import deliver, new_mailbox
from tests.shared.unpack.tree import unpack_attachment

PDF = b"%PDF-1.7 " + os.urandom(3 * SEGMENT + 123)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def entity() -> BytesContent:
    part = EmailMessage(policy=policy.SMTP)
    part.set_content("Invoice attached.")
    part.add_attachment(PDF, maintype="application", subtype="pdf", filename="invoice.pdf")
    return BytesContent(part.as_bytes())


@pytest.fixture(scope="module")
def signers() -> Signers:
    return Signers()


def decrypt(raw: bytes, key: RSAPrivateKey) -> bytes:
    """The envelope opened with asn1crypto (parsed whole) and cryptography's primitives, not our reader.
    (cryptography's own pkcs7_decrypt_der reads DER only; the simulator writes BER, as OpenSSL streams.)"""
    envelope = cms.ContentInfo.load(raw)["content"]
    (recipient,) = envelope["recipient_infos"]
    secret = key.decrypt(recipient.chosen["encrypted_key"].native, rsa_padding.PKCS1v15())
    info = envelope["encrypted_content_info"]
    assert info["content_encryption_algorithm"]["algorithm"].native == "aes256_cbc"
    iv = info["content_encryption_algorithm"]["parameters"].native
    decryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).decryptor()
    padded = decryptor.update(info["encrypted_content"].native) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def whole(content: Content) -> bytes:
    data = read_all(content)
    assert len(data) == content.size
    return data


@pytest.mark.parametrize("kind", ["clear-signed", "opaque-signed"])
async def test_signed_mail_verifies_and_carries_its_files(signers: Signers, kind: str):
    signer = signers.signer("billing@fabrikam.example")
    body = entity()
    content_type, content = sealed(kind, b"Subject: x\r\n", body, signer, signers.ca, None)
    raw = whole(content)
    top = await unpack_attachment(raw, "smime.p7m", content_type, chunk=5000)
    assert top.kept() == {"invoice.pdf": PDF}
    (note,) = top.notes
    assert isinstance(note, Signature) and note.status == "valid" and "billing@fabrikam.example" in str(note.signer)
    if kind == "opaque-signed":  # BER with indefinite lengths, as asn1crypto reads it whole
        parsed = cms.ContentInfo.load(raw)
        assert parsed["content"]["encap_content_info"]["content"].native == body.data


@pytest.mark.parametrize("kind", ["encrypted", "signed-encrypted"])
async def test_encrypted_mail_is_what_cryptography_decrypts(signers: Signers, kind: str):
    me = new_identity("Invoices", "invoices@contoso.com")
    signer = signers.signer("billing@fabrikam.example")
    body = entity()
    content_type, content = sealed(kind, b"", body, signer, signers.ca, me.certificate)
    raw = whole(content)
    plain = decrypt(raw, me.key)
    if kind == "encrypted":
        assert plain == body.data
    else:
        assert plain.startswith(b"Content-Type: application/pkcs7-mime; smime-type=signed-data")

    top = await unpack_attachment(raw, "smime.p7m", content_type, keys=[DecryptionKey("k", me.certificate, me.key)])
    assert top.kept()["invoice.pdf"] == PDF
    assert isinstance(top.notes[0], Encrypted) and top.notes[0].decrypted


def test_the_tnef_encoder_is_read_by_tnefparse():
    raw = encode_tnef([TnefFile("Rechnung März.pdf", "application/pdf", PDF), TnefFile("a.txt", "text/plain", b"x")])
    tnef = TNEF(raw, do_checksum=True)
    assert all(o.good_checksum for o in tnef.objects)
    assert [a.long_filename() for a in tnef.attachments] == ["Rechnung März.pdf", "a.txt"]
    assert [a.data for a in tnef.attachments] == [PDF, b"x"]


# -- through the simulator's Graph ------------------------------------------------------------------
async def test_a_signed_mail_is_listed_as_one_smime_p7m_and_its_value_is_the_signed_mime(
    http: httpx.AsyncClient, graph: dict[str, str]
) -> None:
    box = await new_mailbox(http)
    pdf = os.urandom(5000)
    attachments = [{"name": "invoice.pdf", "contentType": "application/pdf", "contentBase64": b64(pdf)}]
    mail = await deliver(http, box["address"], attachments=attachments, smime={"type": "clear-signed"})
    (p7m,) = mail["attachments"]
    assert (p7m["name"], p7m["contentType"], p7m["kind"]) == ("smime.p7m", "multipart/signed", "file")
    assert p7m["parts"][0]["sha256"] == hashlib.sha256(pdf).hexdigest()  # what it carries, for the checks
    url = f"/v1.0/users/{box['id']}/messages/{mail['id']}"
    listed = (await http.get(f"{url}/attachments", headers=graph)).json()["value"]
    assert [a["name"] for a in listed] == ["smime.p7m"]
    raw = (await http.get(f"{url}/attachments/{p7m['id']}/$value", headers=graph)).content
    assert hashlib.sha256(raw).hexdigest() == p7m["sha256"]
    whole = await http.get(f"{url}/$value", headers=graph)
    assert whole.headers["Content-Type"].startswith("text/plain") and whole.content == raw
    parsed_mail = email.message_from_bytes(whole.content, policy=email.policy.default)
    assert parsed_mail.get_content_type() == "multipart/signed" and parsed_mail["Subject"] == "Invoice"


async def test_an_encrypted_mail_value_is_an_application_pkcs7_mime_entity(
    http: httpx.AsyncClient, graph: dict[str, str]
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    box = await new_mailbox(http)
    me = new_identity("Box", box["address"])
    spec = {"type": "encrypted", "recipientCertificate": me.certificate.public_bytes(Encoding.PEM).decode()}
    mail = await deliver(http, box["address"], attachments=[], smime=spec)
    (p7m,) = mail["attachments"]
    assert p7m["contentType"] == "application/pkcs7-mime"
    whole = (await http.get(f"/v1.0/users/{box['id']}/messages/{mail['id']}/$value", headers=graph)).content
    entity = email.message_from_bytes(whole, policy=email.policy.default)
    assert entity.get_content_type() == "application/pkcs7-mime" and entity.get_param("smime-type") == "enveloped-data"
    payload = entity.get_payload(decode=True)
    assert isinstance(payload, bytes) and hashlib.sha256(payload).hexdigest() == p7m["sha256"]
    bad = await http.post("/_sim/mail", json={"mailbox": box["address"], "from": "a@b.c", "smime": {"type": "x"}})
    assert bad.status_code == 400


async def test_a_plain_mail_value_is_its_mime(http: httpx.AsyncClient, graph: dict[str, str]) -> None:
    box = await new_mailbox(http)
    mail = await deliver(http, box["address"], body="Order: 40 pallets", attachments=[])
    whole = await http.get(f"/v1.0/users/{box['id']}/messages/{mail['id']}/$value", headers=graph)
    parsed_mail = email.message_from_bytes(whole.content, policy=email.policy.default)
    assert whole.status_code == 200 and parsed_mail["Subject"] == "Invoice"
    assert parsed_mail.get_content().strip() == "Order: 40 pallets"


def test_zips_are_what_zipfile_reads() -> None:
    entries = [
        ZipEntry("Scans/2026/a.pdf", BytesContent(PDF)),
        ZipEntry("../evil.txt", BytesContent(b"x")),
        ZipEntry("secret.pdf", BytesContent(b"%PDF secret"), encrypted=True),
        ZipEntry("bomb.bin", bomb=5 * 1024 * 1024),
    ]
    content = ZipContent(entries)
    raw = whole(content)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        assert archive.read("Scans/2026/a.pdf") == PDF and archive.read("../evil.txt") == b"x"
        assert infos["secret.pdf"].flag_bits & 1 and infos["secret.pdf"].compress_size == len(b"%PDF secret") + 12
        assert infos["bomb.bin"].file_size == 5 * 1024 * 1024 and infos["bomb.bin"].compress_size < 20_000
        assert zlib.crc32(archive.read("bomb.bin")) == infos["bomb.bin"].CRC


async def test_small_ber_segments_are_read_as_one_content(signers: Signers, monkeypatch: pytest.MonkeyPatch):
    """Some writers cut the content into small OCTET STRING segments: thousands of headers to walk."""
    monkeypatch.setattr(smime_module, "SEGMENT", 97)
    body = entity()
    content_type, content = sealed("opaque-signed", b"", body, signers.signer("a@b.example"), signers.ca, None)
    raw = whole(content)
    assert raw.count(b"\x04\x61") >= len(body.data) // 97  # 97-byte segments
    top = await unpack_attachment(raw, "smime.p7m", content_type, chunk=65536)
    assert top.kept() == {"invoice.pdf": PDF} and isinstance(top.notes[0], Signature) and top.notes[0].status == "valid"
