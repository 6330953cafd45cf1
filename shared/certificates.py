"""A certificate and its private key from a Key Vault certificate's backing secret, PEM or PKCS#12.

Key Vault keeps a certificate's key and chain in its backing secret, in the format its policy's
secret_props.contentType names. Both the app's own Entra credential (`sources/graph/auth.py`) and the
S/MIME decryption keys (`unpack/smimekeys.py`) are read this way, so it lives beside `vault.py`.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from .errors import CertificateError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

PEM_CONTENT_TYPE = "application/x-pem-file"
PKCS12_CONTENT_TYPE = "application/x-pkcs12"


def key_and_certificate(value: str, content_type: str | None) -> tuple[PrivateKeyTypes, x509.Certificate]:
    """The private key and the certificate of that key (the leaf need not come first in the chain)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    pem = content_type == PEM_CONTENT_TYPE or (content_type is None and value.lstrip().startswith("-----BEGIN"))
    try:
        if pem:
            key: Any = serialization.load_pem_private_key(value.encode(), password=None)
            chain = x509.load_pem_x509_certificates(value.encode())
        else:
            key, leaf, extra = pkcs12.load_key_and_certificates(base64.b64decode(value), None)
            chain = ([leaf] if leaf is not None else []) + list(extra)
    except ValueError as exc:
        raise CertificateError(
            f"the certificate's secret is not a readable {'PEM' if pem else 'PKCS#12'}: {exc}"
        ) from None
    if key is None:
        raise CertificateError("the certificate's secret holds no private key (is the key exportable?)")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    own = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    matching = [c for c in chain if c.public_key().public_bytes(serialization.Encoding.DER, spki) == own]
    if not matching:
        raise CertificateError("the certificate's secret holds no certificate for its private key")
    return key, matching[0]
