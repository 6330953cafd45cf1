"""Whether an S/MIME signer is trusted: its chain validated (RFC 5280, `cryptography`'s verifier) to the system's
CAs or SMIME_CA_CERTIFICATES at the signing time; the signature's integrity is a separate verdict."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import SettingsError
from shared.unpack.base import Signature
from shared.unpack.options import UnpackOptions, unpack_options_from_env
from shared.unpack.trust import TrustAnchors, pem_certificates
from tests.shared.unpack.tree import Node, unpack_attachment, unpack_mail

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "Fabrikam Issuing CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 400 * DAY)
        .not_valid_after(NOW + 3650 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_signer(
    issuer: Issued | None,
    *,
    usage: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.EMAIL_PROTECTION,),
    valid: tuple[datetime.datetime, datetime.datetime] = (NOW - DAY, NOW + 365 * DAY),
) -> Issued:
    """A signer's certificate from `issuer`, or self-signed (None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("Billing Fabrikam"))
        .issuer_name(issuer_cert.subject if issuer_cert else _name("Billing Fabrikam"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name("billing@fabrikam.example")]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256()), key


def signed_mail(signer: Issued) -> bytes:
    """A whole clear-signed mail, as another S/MIME implementation (`cryptography`'s) writes it."""
    content = b"Content-Type: text/plain\r\n\r\nInvoice 88 attached in spirit.\r\n"
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(signer[0], signer[1], hashes.SHA256())
    signed = builder.sign(serialization.Encoding.SMIME, [pkcs7.PKCS7Options.DetachedSignature])
    return b"From: billing@fabrikam.example\r\nSubject: Invoice 88\r\n" + signed


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def verdict(node: Node) -> dict[str, object]:
    (note,) = [n for n in node.notes if isinstance(n, Signature)]
    return note.to_json()


def options(*cas: x509.Certificate) -> UnpackOptions:
    return replace(UnpackOptions(), trust=TrustAnchors(pem_certificates("".join(pem(c) for c in cas))))


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca()


async def test_a_signer_from_a_configured_ca_is_intact_and_trusted(ca: Issued):
    root = await unpack_mail(signed_mail(make_signer(ca)), options=options(ca[0]))
    found = verdict(root)
    assert found["status"] == "valid" and found["intact"] is True
    assert found["trusted"] is True and found["trustReason"] is None


async def test_the_same_signer_without_its_ca_is_intact_but_not_trusted(ca: Issued):
    found = verdict(await unpack_mail(signed_mail(make_signer(ca))))  # the system's CAs only
    assert found["intact"] is True and found["trusted"] is False
    assert str(found["trustReason"]).startswith("no trusted chain at the signing time")


async def test_a_self_signed_signer_is_intact_but_not_trusted(ca: Issued):
    found = verdict(await unpack_mail(signed_mail(make_signer(None)), options=options(ca[0])))
    assert found["status"] == "valid" and found["intact"] is True and found["trusted"] is False


async def test_a_signer_expired_when_it_signed_is_intact_but_not_trusted(ca: Issued):
    expired = make_signer(ca, valid=(NOW - 400 * DAY, NOW - 30 * DAY))
    found = verdict(await unpack_mail(signed_mail(expired), options=options(ca[0])))
    assert found["intact"] is True and found["trusted"] is False
    assert "not valid at validation time" in str(found["trustReason"])


async def test_a_signer_whose_key_usage_is_not_email_is_not_trusted(ca: Issued):
    tls_only = make_signer(ca, usage=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    found = verdict(await unpack_mail(signed_mail(tls_only), options=options(ca[0])))
    assert found["trusted"] is False and "e-mail protection" in str(found["trustReason"])


async def test_a_changed_mail_is_neither_intact_nor_judged(ca: Issued):
    raw = signed_mail(make_signer(ca)).replace(b"Invoice 88 attached", b"Invoice 99 attached")
    found = verdict(await unpack_mail(raw, options=options(ca[0])))
    assert found["status"] == "invalid" and found["intact"] is False and found["trusted"] is False
    assert str(found["trustReason"]).startswith("not judged")


async def test_an_opaque_signed_attachment_is_judged_the_same_way(ca: Issued):
    der = pkcs7.PKCS7SignatureBuilder().set_data(b"Content-Type: text/plain\r\n\r\nhi\r\n")
    signer = make_signer(ca)
    raw = der.add_signer(signer[0], signer[1], hashes.SHA256()).sign(serialization.Encoding.DER, [])
    top = await unpack_attachment(raw, "smime.p7m", "application/pkcs7-mime", options=options(ca[0]))
    assert verdict(top)["trusted"] is True


def test_smime_ca_certificates_reads_pem_even_flattened_to_one_line(ca: Issued):
    flat = " ".join(pem(ca[0]).split("\n"))
    parsed = unpack_options_from_env({"SMIME_CA_CERTIFICATES": flat + " " + pem(make_ca("Other CA")[0])})
    assert len(parsed.trust.extra) == 2
    assert parsed.trust.extra[0] == ca[0].public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("text", ["not a certificate", "-----BEGIN CERTIFICATE-----AAAA!-----END CERTIFICATE-----"])
def test_a_bad_smime_ca_certificates_stops_start_up_with_one_line(text: str):
    with pytest.raises(SettingsError) as caught:
        unpack_options_from_env({"SMIME_CA_CERTIFICATES": text})
    assert str(caught.value).startswith("setting SMIME_CA_CERTIFICATES: ") and "\n" not in str(caught.value)
