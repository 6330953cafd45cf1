"""The private keys that open encrypted mail: the Key Vault certificates SMIME_CERTIFICATES names, read
once per process the first time an encrypted mail arrives (a certificate's backing secret, PEM or PKCS#12,
read as the app's own certificate credential is)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import AuthError, IngestError
from ..sources.graph.auth import credential_from_secret
from .smime import DecryptionKey

if TYPE_CHECKING:
    from ..settings import Settings
    from ..vault import Vault


class SmimeKeyError(IngestError):
    """A certificate in SMIME_CERTIFICATES cannot be used (missing, unreadable, not RSA)."""


def decryption_key(name: str, value: str, content_type: str | None) -> DecryptionKey:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        credential = credential_from_secret(value, content_type)
    except AuthError as exc:
        raise SmimeKeyError(f"certificate {name} (SMIME_CERTIFICATES): {exc}") from None
    key = serialization.load_pem_private_key(credential["private_key"].encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SmimeKeyError(f"certificate {name} (SMIME_CERTIFICATES): only RSA keys decrypt S/MIME here")
    return DecryptionKey(name, x509.load_pem_x509_certificate(credential["public_certificate"].encode()), key)


class SmimeKeys:
    """Read on first use, then kept; nothing is read when SMIME_CERTIFICATES is empty."""

    def __init__(self, settings: Settings, vault: Vault) -> None:
        self._names = settings.smime_certificates
        self._vault = vault
        self._keys: tuple[DecryptionKey, ...] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> tuple[DecryptionKey, ...]:
        if self._keys is None:
            async with self._lock:
                if self._keys is None:
                    self._keys = tuple([await self._read(name) for name in self._names])
        return self._keys

    async def _read(self, name: str) -> DecryptionKey:
        found = await self._vault.get_typed(name)
        if found is None:
            raise SmimeKeyError(f"Key Vault has no certificate {name} (SMIME_CERTIFICATES)")
        return decryption_key(name, *found)
