"""The simulator's S/MIME and TNEF producers, checked by independent readers: `cryptography` decrypts the
envelopes, `asn1crypto` parses the CMS whole, `tnefparse` reads the TNEF; sizes are known up front."""

from __future__ import annotations

import os
from email import policy
from email.message import EmailMessage

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from tnefparse.tnef import TNEF

from local.azuresim.content import BytesContent, Content, read_all
from local.azuresim.smime import SEGMENT, Signers, new_identity, sealed
from local.azuresim.tnef import TnefFile, encode_tnef
from shared.unpack.base import Encrypted, Signature
from shared.unpack.smime import DecryptionKey
from tests.shared.unpack.tree import unpack_attachment

PDF = b"%PDF-1.7 " + os.urandom(3 * SEGMENT + 123)


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
