"""The private keys that open encrypted mail: the Key Vault certificates SMIME_CERTIFICATES names, read
once per process the first time an encrypted mail arrives (a certificate's backing secret, PEM or PKCS#12,
read by `certificates.py`, as the app's own certificate credential is)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..certificates import key_and_certificate
from ..errors import CertificateError, IngestError
from .smime import DecryptionKey

if TYPE_CHECKING:
    from ..settings import Settings
    from ..vault import Vault


class SmimeKeyError(IngestError):
    """A certificate in SMIME_CERTIFICATES cannot be used (missing, unreadable, not RSA)."""


def decryption_key(name: str, value: str, content_type: str | None) -> DecryptionKey:
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key, certificate = key_and_certificate(value, content_type)
    except CertificateError as exc:
        raise SmimeKeyError(f"certificate {name} (SMIME_CERTIFICATES): {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SmimeKeyError(f"certificate {name} (SMIME_CERTIFICATES): only RSA keys decrypt S/MIME here")
    return DecryptionKey(name, certificate, key)


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
