"""S/MIME's cryptography: checking a CMS signature against digests computed while the content streamed
past, and opening an envelope's content-encryption key with a recipient's private key.

The small CMS structures (signer infos, certificates, recipient infos) are parsed with `asn1crypto`;
the arithmetic is `cryptography`'s. The signer's certificate comes from the CMS itself: `valid` means the
content is unchanged since that certificate's key signed it (intact); whether the signer is trusted is a
separate verdict, its chain validated at the signing time (`trust.py`). RSA (PKCS#1 v1.5 and PSS) and
ECDSA signatures; RSA key transport (PKCS#1 v1.5 and OAEP) with AES-CBC or triple-DES content encryption,
what Outlook and Thunderbird send.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .base import Signature, UnpackError
from .trust import TrustAnchors

if TYPE_CHECKING:
    from asn1crypto import cms
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.ciphers import CipherContext
    from cryptography.hazmat.primitives.padding import PaddingContext

# Digests computed for a signature whose algorithm is not announced (no `micalg`).
DIGESTS = ("sha256", "sha1", "sha384", "sha512")


@dataclass(frozen=True)
class DecryptionKey:
    """A certificate of a mailbox and its private key (from Key Vault); `name` is for the manifest."""

    name: str
    certificate: x509.Certificate
    private_key: RSAPrivateKey


# Where the keys come from: asked only when an envelope shows up (they live in Key Vault).
Keys = Callable[[], Awaitable[Sequence[DecryptionKey]]]


def _hash(name: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    known: dict[str, Any] = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256}
    known |= {"sha384": hashes.SHA384, "sha512": hashes.SHA512, "md5": hashes.MD5}
    if name not in known:
        raise UnpackError(f"digest algorithm {name} is not supported")
    return known[name]()


def describe_certificate(cert: x509.Certificate) -> str:
    """Subject and e-mail address of a certificate, for the manifest."""
    from cryptography import x509 as x

    text = cert.subject.rfc4514_string()
    try:
        names = cert.extensions.get_extension_for_class(x.SubjectAlternativeName).value
        mails = names.get_values_for_type(x.RFC822Name)
    except x.ExtensionNotFound:
        mails = []
    return f"{text} <{mails[0]}>" if mails else text


def _matches(cert: Any, identifier: Any) -> bool:
    """Whether an asn1crypto certificate is the one a SignerIdentifier or RecipientIdentifier names."""
    if identifier.name == "issuer_and_serial_number":
        value = identifier.chosen
        return bool(cert.issuer == value["issuer"] and cert.serial_number == value["serial_number"].native)
    return bool(cert.key_identifier == identifier.chosen.native)


def _rfc4514(name: Any) -> str:
    """An asn1crypto Name as RFC 4514 text (`CN=...,O=...`), as `cryptography` writes a certificate's."""
    from cryptography import x509 as x

    rdns = []
    for rdn in name.chosen:
        attributes = []
        for attribute in rdn:
            value = attribute["value"].native
            attributes.append(x.NameAttribute(x.ObjectIdentifier(attribute["type"].dotted), str(value)))
        rdns.append(x.RelativeDistinguishedName(attributes))
    try:
        return x.Name(rdns).rfc4514_string()
    except ValueError:
        return str(name.human_friendly)


def describe_identifier(identifier: Any) -> str:
    if identifier.name == "issuer_and_serial_number":
        value = identifier.chosen
        return f"issuer {_rfc4514(value['issuer'])}, serial {value['serial_number'].native:#x}"
    return f"subject key id {identifier.chosen.native.hex()}"


def verify_detached(der: bytes, digests: Mapping[str, bytes], trust: TrustAnchors) -> Signature:
    """A detached signature (the second part of a multipart/signed) against the first part's digests."""
    from asn1crypto import cms

    try:
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            return Signature("unverifiable", f"the signature part is {info['content_type'].native}, not signed-data")
        signed = info["content"]
        signed.native  # noqa: B018 (asn1crypto parses lazily: a corrupt structure raises here)
    except ValueError as exc:
        return Signature("unverifiable", f"the signature part is not a readable CMS structure: {exc}")
    return verify_signed(signed, digests, trust)


def _signing_time(signer: Any) -> datetime | None:
    """The signing-time signed attribute (RFC 5652 §11.3), if the signature has one."""
    for attribute in signer["signed_attrs"] or []:
        if attribute["type"].native == "signing_time":
            when = attribute["values"][0].native
            return when if isinstance(when, datetime) else None
    return None


def verify_signed(signed: cms.SignedData, digests: Mapping[str, bytes], trust: TrustAnchors) -> Signature:
    """The first signer's signature, checked with the certificate the CMS carries; its chain judged by `trust`."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    signers = list(signed["signer_infos"])
    if not signers:
        return Signature("unverifiable", "the CMS names no signer")
    signer = signers[0]
    certs = [c.chosen for c in (signed["certificates"] or []) if c.name == "certificate"]
    found = [c for c in certs if _matches(c, signer["sid"])]
    if not found:
        missing = describe_identifier(signer["sid"])
        return Signature("unverifiable", f"the signer's certificate ({missing}) is not in the mail")
    cert = x509.load_der_x509_certificate(found[0].dump())
    who = describe_certificate(cert)
    algorithm = signer["digest_algorithm"]["algorithm"].native
    digest = digests.get(algorithm)
    if digest is None:
        return Signature("unverifiable", f"digest {algorithm} was not computed (micalg named another)", who)
    try:
        content = _signed_bytes(signer, digest)
        if content is None:
            return Signature("invalid", "the content was changed after it was signed (message digest differs)", who)
        _verify(cert, signer, content, digest, algorithm)
    except InvalidSignature:
        return Signature("invalid", "the signature does not match the signed attributes", who)
    except (UnpackError, ValueError, TypeError) as exc:
        return Signature("unverifiable", str(exc).splitlines()[0] if str(exc) else type(exc).__name__, who)
    until = cert.not_valid_after_utc.date().isoformat()
    others = [x509.load_der_x509_certificate(c.dump()) for c in certs if c is not found[0]]
    trusted, why = trust.judge(cert, others, _signing_time(signer))
    return Signature("valid", f"the content is as signed (certificate valid until {until})", who, trusted, why)


def _signed_bytes(signer: Any, digest: bytes) -> bytes | None:
    """What the signature covers: the DER of the signed attributes (RFC 5652 §5.4), whose message digest
    must be the content's; without signed attributes, the content's digest itself (marked by b"")."""
    attrs = signer["signed_attrs"]
    if not attrs:
        return b""
    values = [a["values"][0].native for a in attrs if a["type"].native == "message_digest"]
    if not values or not isinstance(values[0], bytes) or not hmac.compare_digest(values[0], digest):
        return None
    encoded: bytes = attrs.dump()
    return b"\x31" + encoded[1:]  # the [0] IMPLICIT tag is signed as the SET OF it stands for


def _verify(cert: x509.Certificate, signer: Any, content: bytes, digest: bytes, algorithm: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    key = cert.public_key()
    hash_ = _hash(algorithm)
    data, prehashed = (content, hash_) if content else (digest, utils.Prehashed(hash_))
    signature = signer["signature"].native
    kind = signer["signature_algorithm"].signature_algo
    if isinstance(key, rsa.RSAPublicKey):
        if kind == "rsassa_pss":
            params = signer["signature_algorithm"]["parameters"]
            mgf_hash = _hash(params["hash_algorithm"]["algorithm"].native)
            pss = padding.PSS(padding.MGF1(mgf_hash), params["salt_length"].native)
            key.verify(signature, data, pss, prehashed)
        else:
            key.verify(signature, data, padding.PKCS1v15(), prehashed)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, data, ec.ECDSA(prehashed))
    else:
        raise UnpackError(f"the signer's key type ({type(key).__name__}) is not supported")


@dataclass
class Envelope:
    """An opened content-encryption key: a streaming decryptor of the content and its unpadding."""

    decryptor: CipherContext
    unpadder: PaddingContext

    def update(self, data: bytes) -> bytes:
        return self.unpadder.update(self.decryptor.update(data))

    def finalize(self) -> bytes:
        try:
            return self.unpadder.update(self.decryptor.finalize()) + self.unpadder.finalize()
        except ValueError:
            raise UnpackError("the decrypted content is badly padded: wrong key or corrupt content") from None


def recipients(infos: Sequence[Any]) -> tuple[str, ...]:
    out = []
    for info in infos:
        if info.name == "ktri":
            out.append(describe_identifier(info.chosen["rid"]))
        else:
            out.append(f"{info.name} recipient (not supported)")
    return tuple(out)


def open_envelope(infos: Sequence[Any], algorithm: Any, keys: Sequence[DecryptionKey]) -> tuple[Envelope, str] | None:
    """The content decryptor, with the name of the key that opened it; None when no key is for a recipient."""
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import padding as block_padding
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    for info in infos:
        if info.name != "ktri":
            continue
        rid = info.chosen["rid"]
        for key in keys:
            cert = asn1_x509.Certificate.load(key.certificate.public_bytes(_der()))
            if not _matches(cert, rid):
                continue
            scheme = info.chosen["key_encryption_algorithm"]
            if scheme["algorithm"].native == "rsaes_oaep":
                params = scheme["parameters"]
                oaep_hash = _hash(params["hash_algorithm"]["algorithm"].native)
                mgf_hash = _hash(params["mask_gen_algorithm"]["parameters"]["algorithm"].native)
                pad: Any = padding.OAEP(padding.MGF1(mgf_hash), oaep_hash, None)
            else:
                pad = padding.PKCS1v15()
            try:
                secret = key.private_key.decrypt(info.chosen["encrypted_key"].native, pad)
            except ValueError:
                raise UnpackError(f"key {key.name} could not open the content key: wrong key") from None
            name = algorithm["algorithm"].native
            iv = algorithm["parameters"].native
            if name.endswith("_cbc") and name.startswith("aes"):
                if len(secret) * 8 != int(name[3:6]):
                    raise UnpackError(f"key {key.name} gave a content key of the wrong length: wrong key")
                cipher: Any = algorithms.AES(secret)
            elif name == "tripledes_3key":
                from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

                if len(secret) != 24:
                    raise UnpackError(f"key {key.name} gave a content key of the wrong length: wrong key")
                cipher = TripleDES(secret)
            else:
                raise UnpackError(f"content encryption {name} is not supported")
            if not isinstance(iv, bytes) or len(iv) * 8 != cipher.block_size:
                raise UnpackError(f"content encryption {name} has no valid IV")
            decryptor = Cipher(cipher, modes.CBC(iv)).decryptor()
            return Envelope(decryptor, block_padding.PKCS7(cipher.block_size).unpadder()), key.name
    return None


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER
