"""Signed and encrypted mail as Graph presents it: one file attachment, ``smime.p7m`` (graph_facts §8).

- clear-signed: ``multipart/signed``, the bytes the whole signed MIME (headers, the signed entity, the
  detached signature as ``smime.p7s``);
- opaque-signed: ``application/pkcs7-mime``, CMS signed-data with the entity inside;
- encrypted: ``application/pkcs7-mime``, CMS enveloped-data (RSA key transport, AES-256-CBC), optionally
  of an opaque-signed entity (signed, then encrypted, as Outlook does).

Made with ``asn1crypto`` (structures) and ``cryptography`` (keys, signatures, ciphers); signers'
certificates come from a test CA made on first use. The CMS is written as BER with indefinite lengths
and the content in 64 KiB OCTET STRING segments, as OpenSSL's streaming mode writes it, so a 100 MB
mail is produced piecewise with its size known up front, and never held in memory.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

from .content import Content
from .mime import CRLF, Base64Lines, Joined, Segment

SMIME_KINDS = ("clear-signed", "opaque-signed", "encrypted", "signed-encrypted")
SEGMENT = 64 * 1024
_EOC = b"\x00\x00"
_OID_DATA: bytes = cms.ContentType("data").dump()
_OID_SIGNED: bytes = cms.ContentType("signed_data").dump()
_OID_ENVELOPED: bytes = cms.ContentType("enveloped_data").dump()


@dataclass(frozen=True)
class Identity:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def _certificate(subject: str, email: str | None, key: rsa.RSAPrivateKey, issuer: Identity | None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.certificate.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if email:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    return builder.sign(issuer.key if issuer else key, hashes.SHA256())


def new_identity(subject: str, email: str | None = None, issuer: Identity | None = None) -> Identity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return Identity(_certificate(subject, email, key, issuer), key)


class Signers:
    """A test CA and one signing certificate per sender address, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ca: Identity | None = None
        self._signers: dict[str, Identity] = {}

    @property
    def ca(self) -> Identity:
        with self._lock:
            if self._ca is None:
                self._ca = new_identity("azuresim S/MIME test CA")
            return self._ca

    def signer(self, address: str) -> Identity:
        ca = self.ca
        with self._lock:
            if address.lower() not in self._signers:
                self._signers[address.lower()] = new_identity(address, address, ca)
            return self._signers[address.lower()]


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def _digest(content: Content) -> bytes:
    digest = hashlib.sha256()
    for chunk in content.chunks():
        digest.update(chunk)
    return digest.digest()


def _signed_data_parts(digest: bytes, signer: Identity, chain: list[x509.Certificate]) -> tuple[bytes, bytes]:
    """(version + digest algorithms, certificates + signer infos) of a signed-data over `digest`."""
    signed_attrs = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute(
                {"type": "signing_time", "values": [cms.Time("utc_time", datetime.datetime.now(datetime.UTC))]}
            ),
            cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
        ]
    )
    to_sign = b"\x31" + signed_attrs.dump()[1:]
    signature = signer.key.sign(to_sign, rsa_padding.PKCS1v15(), hashes.SHA256())
    cert = _asn1(signer.certificate)
    info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                "issuer_and_serial_number",
                cms.IssuerAndSerialNumber({"issuer": cert.issuer, "serial_number": cert.serial_number}),
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
            "signature": signature,
        }
    )
    head = core.Integer(1).dump() + cms.DigestAlgorithms([algos.DigestAlgorithm({"algorithm": "sha256"})]).dump()
    certificates = cms.CertificateSet([cms.CertificateChoices("certificate", _asn1(c)) for c in chain])
    tail = certificates.retag({"implicit": 0}).dump() + cms.SignerInfos([info]).dump()
    return head, tail


def detached_signature(content: Content, signer: Identity, chain: list[x509.Certificate]) -> bytes:
    """DER of a signed-data without its content (the second part of a multipart/signed)."""
    head, tail = _signed_data_parts(_digest(content), signer, chain)
    encap = b"\x30" + _length(len(_OID_DATA)) + _OID_DATA
    body = head + encap + tail
    signed = b"\x30" + _length(len(body)) + body
    wrapper = b"\xa0" + _length(len(signed)) + signed
    outer = _OID_SIGNED + wrapper
    return b"\x30" + _length(len(outer)) + outer


class Segments:
    """``Content`` cut into primitive OCTET STRINGs of SEGMENT bytes (the pieces of a constructed one)."""

    def __init__(self, content: Content) -> None:
        self.content = content

    @staticmethod
    def overhead(size: int) -> int:
        full, rest = divmod(size, SEGMENT)
        head = 1 + len(_length(SEGMENT))
        return full * head + ((1 + len(_length(rest))) if rest else 0)

    @property
    def size(self) -> int:
        return self.content.size + self.overhead(self.content.size)

    def chunks(self) -> Iterator[bytes]:
        carry = b""
        for chunk in self.content.chunks():
            carry += chunk
            while len(carry) >= SEGMENT:
                yield b"\x04" + _length(SEGMENT) + carry[:SEGMENT]
                carry = carry[SEGMENT:]
        if carry:
            yield b"\x04" + _length(len(carry)) + carry


def opaque_signed(entity: Content, signer: Identity, chain: list[x509.Certificate]) -> Joined:
    """CMS signed-data with `entity` inside, BER with indefinite lengths."""
    head, tail = _signed_data_parts(_digest(entity), signer, chain)
    start = b"\x30\x80" + _OID_SIGNED + b"\xa0\x80" + b"\x30\x80" + head
    start += b"\x30\x80" + _OID_DATA + b"\xa0\x80" + b"\x24\x80"
    end = _EOC + _EOC + _EOC + tail + _EOC + _EOC + _EOC
    return Joined([start, Segments(entity), end])


class _Encrypted:
    """AES-CBC of a ``Content`` with PKCS#7 padding, produced piecewise."""

    def __init__(self, content: Content, key: bytes, iv: bytes) -> None:
        self.content, self.key, self.iv = content, key, iv

    @property
    def size(self) -> int:
        return (self.content.size // 16 + 1) * 16

    def chunks(self) -> Iterator[bytes]:
        encryptor = Cipher(algorithms.AES(self.key), modes.CBC(self.iv)).encryptor()
        padder = padding.PKCS7(128).padder()
        for chunk in self.content.chunks():
            out = encryptor.update(padder.update(chunk))
            if out:
                yield out
        yield encryptor.update(padder.finalize()) + encryptor.finalize()


def enveloped(entity: Content, recipient: x509.Certificate) -> Joined:
    """CMS enveloped-data of `entity` for `recipient` (RSA PKCS#1 v1.5 key transport, AES-256-CBC)."""
    key, iv = os.urandom(32), os.urandom(16)
    cert = _asn1(recipient)
    public = recipient.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    info = cms.RecipientInfo(
        "ktri",
        cms.KeyTransRecipientInfo(
            {
                "version": "v0",
                "rid": cms.RecipientIdentifier(
                    "issuer_and_serial_number",
                    cms.IssuerAndSerialNumber({"issuer": cert.issuer, "serial_number": cert.serial_number}),
                ),
                "key_encryption_algorithm": cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"}),
                "encrypted_key": public.encrypt(key, rsa_padding.PKCS1v15()),
            }
        ),
    )
    algorithm = algos.EncryptionAlgorithm({"algorithm": "aes256_cbc", "parameters": iv})
    start = b"\x30\x80" + _OID_ENVELOPED + b"\xa0\x80" + b"\x30\x80" + core.Integer(0).dump()
    start += cms.RecipientInfos([info]).dump() + b"\x30\x80" + _OID_DATA + algorithm.dump() + b"\xa0\x80"
    return Joined([start, Segments(_Encrypted(entity, key, iv)), _EOC * 5])


def _entity_part(content_type: str, smime_type: str, body: Content) -> Joined:
    """A MIME entity holding CMS in base64 (what gets encrypted when a mail is signed, then encrypted)."""
    head = (
        f'Content-Type: {content_type}; smime-type={smime_type}; name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
    ).encode()
    return Joined([head, Base64Lines(body)])


def clear_signed(envelope: bytes, entity: Content, signer: Identity, chain: list[x509.Certificate]) -> Joined:
    """The whole signed MIME: the mail's headers, then multipart/signed of `entity` and its signature."""
    boundary = f"----=_Signed_{secrets.token_hex(12)}"
    signature = base64.encodebytes(detached_signature(entity, signer, chain)).replace(b"\n", CRLF)
    head = (
        envelope
        + (
            f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;\r\n'
            f' boundary="{boundary}"\r\n\r\nThis is a cryptographically signed message in MIME format.\r\n\r\n'
            f"--{boundary}\r\n"
        ).encode()
    )
    tail = (
        f"\r\n--{boundary}\r\n"
        'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
    ).encode()
    segments: list[Segment] = [head, entity, tail + signature + f"\r\n--{boundary}--\r\n".encode()]
    return Joined(segments)


def sealed(kind: str, envelope: bytes, entity: Content, signer: Identity, ca: Identity,
           recipient: x509.Certificate | None) -> tuple[str, Content]:  # fmt: skip
    """(the p7m's content type, its bytes) for `kind`: clear-signed, opaque-signed, encrypted, signed-encrypted."""
    chain = [signer.certificate, ca.certificate]
    if kind == "clear-signed":
        return "multipart/signed", clear_signed(envelope, entity, signer, chain)
    if kind == "opaque-signed":
        return "application/pkcs7-mime", opaque_signed(entity, signer, chain)
    assert recipient is not None
    if kind == "signed-encrypted":
        entity = _entity_part("application/pkcs7-mime", "signed-data", opaque_signed(entity, signer, chain))
    return "application/pkcs7-mime", enveloped(entity, recipient)
