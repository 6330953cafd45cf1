"""X.509 certificates in the two places the simulator meets them.

App registration credentials (certificate-credentials): a public certificate uploaded for an app, and
the client assertion an app signs with its private key, checked as the docs describe: header ``alg``
RS256 or PS256 and ``x5t`` (SHA-1) or ``x5t#S256`` (SHA-256) thumbprint naming a registered
certificate; claims ``aud`` = the token endpoint, ``iss`` = ``sub`` = client id, ``exp``/``nbf``.
A ``jti`` is not checked for reuse: the docs do not say Entra ID rejects replays, and MSAL reuses an
assertion for up to ten minutes.

Key Vault certificates (import-certificate, about-certificates): a PFX or PEM with the private key
imported, the backing secret rendered as base64 PFX (``application/x-pkcs12``) or PEM
(``application/x-pem-file``), without the key when the policy marks it non-exportable.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from . import jose

PKCS12 = "application/x-pkcs12"
PEM = "application/x-pem-file"
CLOCK_SKEW_SECONDS = 300
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


class CertificateError(ValueError):
    """A certificate or key that cannot be used; the message says why."""


def load_certificate(text: str) -> x509.Certificate:
    """A PEM certificate, or base64 DER (the ``key`` of an app manifest's keyCredentials)."""
    text = text.strip()
    try:
        if text.startswith(_PEM_CERTIFICATE):
            return x509.load_pem_x509_certificate(text.encode())
        return x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise CertificateError("not a PEM or base64 DER X.509 certificate") from exc


def x5t(cert: x509.Certificate) -> str:
    return jose.b64url(cert.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is SHA-1 by definition (RFC 7515 4.1.7)


def x5t_s256(cert: x509.Certificate) -> str:
    return jose.b64url(cert.fingerprint(hashes.SHA256()))


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RegisteredCertificate:
    """A certificate credential on an app registration (keyCredentials, type AsymmetricX509Cert)."""

    certificate: x509.Certificate
    key_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def thumbprint(self) -> str:
        """Upper-case hex SHA-1, as the portal shows it and MSAL's ``thumbprint`` takes it."""
        return self.certificate.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - the portal's thumbprint

    def describe(self) -> dict[str, str]:
        return {
            "keyId": self.key_id,
            "type": "AsymmetricX509Cert",
            "usage": "Verify",
            "thumbprint": self.thumbprint,
            "customKeyIdentifier": base64.b64encode(bytes.fromhex(self.thumbprint)).decode(),
            "x5t": x5t(self.certificate),
            "x5t#S256": x5t_s256(self.certificate),
            "subject": self.certificate.subject.rfc4514_string(),
            "startDateTime": _iso(self.certificate.not_valid_before_utc),
            "endDateTime": _iso(self.certificate.not_valid_after_utc),
        }


def register(text: str) -> RegisteredCertificate:
    cert = load_certificate(text)
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise CertificateError("the certificate's key must be RSA (client assertions are RS256 or PS256)")
    return RegisteredCertificate(cert)


class ClientAssertionError(Exception):
    """A rejected client assertion: ``aadsts`` and a message in Entra ID's words."""

    def __init__(self, aadsts: int, message: str) -> None:
        super().__init__(message)
        self.aadsts = aadsts
        self.message = message


def _time(value: float) -> str:
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def verify_assertion(
    assertion: str,
    client_id: str,
    audiences: set[str],
    certificates: Iterable[RegisteredCertificate],
    now: float,
) -> RegisteredCertificate:
    """The registered certificate that signed ``assertion``, if every documented check passes."""
    try:
        jws = jose.parse(assertion)
    except ValueError as exc:
        raise ClientAssertionError(50027, "Invalid JWT token. The token is malformed.") from exc
    by_sha256 = {x5t_s256(c.certificate): c for c in certificates}
    by_sha1 = {x5t(c.certificate): c for c in by_sha256.values()}
    # Compared without base64 padding: MSAL sends x5t with it, RFC 7515 base64url has none.
    sha256, sha1 = (str(jws.header.get(h, "")).rstrip("=") for h in ("x5t#S256", "x5t"))
    named = sha256 or sha1
    registered = by_sha256.get(sha256) or by_sha1.get(sha1)
    if registered is None:
        raise ClientAssertionError(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key was not found., "
            f"Thumbprint of key used by client: '{named}']",
        )
    certificate = registered.certificate
    if not certificate.not_valid_before_utc.timestamp() <= now <= certificate.not_valid_after_utc.timestamp():
        raise ClientAssertionError(
            700027, "Client assertion contains an invalid signature. [Reason - The key used is expired.]"
        )
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)  # register() accepts RSA only
    if jws.header.get("alg") not in jose.ALGORITHMS or not jose.verify(jws, key):
        raise ClientAssertionError(
            700027,
            "Client assertion contains an invalid signature. [Reason - The provided signature value did not "
            f"match the expected signature value., Thumbprint of key used by client: '{named}']",
        )
    claims = jws.claims
    if claims.get("iss") != claims.get("sub"):
        raise ClientAssertionError(50048, "Subject mismatches Issuer claim in the client assertion.")
    if claims.get("iss") != client_id:
        raise ClientAssertionError(
            700021, "Client assertion application identifier doesn't match 'client_id' parameter."
        )
    if claims.get("aud") not in audiences:
        raise ClientAssertionError(700023, "Client assertion audience claim does not match Realm issuer.")
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise ClientAssertionError(50027, "Invalid JWT token. The 'exp' and 'nbf' claims must be numbers.")
    if now > exp + CLOCK_SKEW_SECONDS or now < nbf - CLOCK_SKEW_SECONDS:
        raise ClientAssertionError(
            700024,
            f"Client assertion is not within its valid time range. Current time: {_time(now)}, assertion valid "
            f"from {_time(nbf)}, expiry time of assertion {_time(exp)}.",
        )
    return registered


# -- Key Vault certificates -------------------------------------------------------------------------
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class KeyAndChain:
    key: PrivateKey
    chain: list[x509.Certificate]  # leaf first
    content_type: str  # the format the value came in


def _pem_blocks(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith("-----BEGIN "):
            current = [line]
        elif current:
            current.append(line)
            if line.startswith("-----END "):
                blocks.append("\n".join(current) + "\n")
                current = []
    return blocks


def _private_key(key: object) -> PrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError("the private key must be RSA or EC")
    return key


def _from_pem(text: str, password: bytes | None) -> KeyAndChain:
    keys, chain = [], []
    for block in _pem_blocks(text):
        header = block.splitlines()[0]
        if header in ("-----BEGIN PRIVATE KEY-----", "-----BEGIN ENCRYPTED PRIVATE KEY-----"):
            try:
                keys.append(serialization.load_pem_private_key(block.encode(), password))
            except (ValueError, TypeError) as exc:
                raise CertificateError(f"the PKCS#8 private key cannot be read: {exc}") from exc
        elif header == _PEM_CERTIFICATE:
            chain.append(x509.load_pem_x509_certificate(block.encode()))
        elif header.endswith("PRIVATE KEY-----"):
            raise CertificateError("Key Vault accepts a private key in PKCS#8 format only")
    if len(keys) != 1 or not chain:
        raise CertificateError("a PEM certificate must hold one PKCS#8 private key and its X.509 certificates")
    return KeyAndChain(_private_key(keys[0]), chain, PEM)


def parse_import(value: str, password: str | None) -> KeyAndChain:
    """An imported certificate's ``value``: PEM text, base64 of PEM, or base64 of a PFX."""
    secret = password.encode() if password else None
    if "-----BEGIN" in value:
        return _from_pem(value, secret)
    try:
        raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise CertificateError("the value is neither PEM nor base64") from exc
    if raw.lstrip().startswith(b"-----BEGIN"):
        return _from_pem(raw.decode(errors="replace"), secret)
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(raw, secret)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"the PFX cannot be read (wrong or missing password?): {exc}") from exc
    if key is None or cert is None:
        raise CertificateError("the PFX must hold a private key and its certificate")
    return KeyAndChain(_private_key(key), [cert, *extra], PKCS12)


def check_pair(imported: KeyAndChain) -> None:
    leaf_key = (
        imported.chain[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    own_key = imported.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_key != own_key:
        raise CertificateError("the private key does not belong to the (first) certificate")


def secret_value(content_type: str, key: PrivateKey | None, chain: list[x509.Certificate]) -> str:
    """The backing secret: base64 PFX without a password, or PEM (PKCS#8 key first, then the chain)."""
    if content_type == PKCS12:
        data = pkcs12.serialize_key_and_certificates(None, key, chain[0], chain[1:], serialization.NoEncryption())
        return base64.b64encode(data).decode()
    parts = []
    if key is not None:
        parts.append(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
        )
    parts += [c.public_bytes(serialization.Encoding.PEM).decode() for c in chain]
    return "".join(parts)
