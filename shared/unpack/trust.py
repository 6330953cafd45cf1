"""Whether an S/MIME signer is trusted: RFC 5280 path validation of the signer's certificate, through the
intermediates the CMS carries, to a trust anchor, at the signing time.

`cryptography`'s verifier (`x509.verification`) does the path validation; its client-certificate policy asks
for the TLS clientAuth key usage, so the end entity's extended key usage check is replaced by S/MIME's (RFC
8550 §4.4.4: when the extension is there it must allow emailProtection or any usage), and a subjectAltName is
not required (older S/MIME certificates name the address in the subject). The anchors are the system's CAs
(`certifi`'s bundle, Mozilla's) and the CA certificates in SMIME_CA_CERTIFICATES. Revocation is not checked:
no CRL or OCSP request leaves the app for a mail.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)
_NOISE = re.compile(r"^validation failed: |\s*\(encountered processing <Certificate.*\)$")


def pem_certificates(text: str) -> tuple[bytes, ...]:
    """The DER of each PEM certificate in `text`; the line breaks may have been flattened to spaces (an app
    setting). ValueError names the first that cannot be read."""
    import base64
    import binascii

    from cryptography import x509 as x

    blocks = _PEM.findall(text)
    if not blocks or _PEM.sub("", text).strip():
        raise ValueError("is not one or more PEM certificates (-----BEGIN CERTIFICATE----- ...)")
    found = []
    for number, block in enumerate(blocks, 1):
        try:
            der = base64.b64decode("".join(block.split()), validate=True)
            x.load_der_x509_certificate(der)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"certificate {number} cannot be read ({exc})") from None
        found.append(der)
    return tuple(found)


@lru_cache(maxsize=4)
def _store(extra: tuple[bytes, ...]) -> Any:
    """The system's CAs and the extra ones, read once per process."""
    import certifi
    from cryptography import x509 as x
    from cryptography.utils import CryptographyDeprecationWarning
    from cryptography.x509.verification import Store

    with open(certifi.where(), "rb") as bundle, warnings.catch_warnings():
        # Mozilla's bundle still has a root with a non-positive serial number, which `cryptography` warns of.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        system = x.load_pem_x509_certificates(bundle.read())
    return Store([*system, *(x.load_der_x509_certificate(der) for der in extra)])


def _email_usage(policy: Any, cert: x509.Certificate, usage: x509.ExtendedKeyUsage | None) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    allowed = {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
    if usage is not None and not allowed & set(usage):
        raise ValueError("its extended key usage does not allow e-mail protection")


def _verifier(extra: tuple[bytes, ...], at: datetime) -> Any:
    from cryptography import x509 as x
    from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder

    ee = (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x.ExtendedKeyUsage, Criticality.AGNOSTIC, _email_usage)
        .may_be_present(x.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    )
    builder = PolicyBuilder().store(_store(extra)).time(at)
    return builder.extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)


@dataclass(frozen=True)
class TrustAnchors:
    """Who may vouch for a signer: the system's CAs and `extra` (DER, from SMIME_CA_CERTIFICATES)."""

    extra: tuple[bytes, ...] = ()

    def judge(
        self, signer: x509.Certificate, others: Sequence[x509.Certificate], signed_at: datetime | None
    ) -> tuple[bool, str | None]:
        """(trusted, why not): the chain validated at the signing time (the time of the check when the signature
        names none, or names a later one)."""
        from cryptography.x509.verification import VerificationError

        now = datetime.now(UTC)
        at = min(signed_at, now) if signed_at is not None else now
        when = "the signing time" if signed_at is not None else "the time of the check (no signing time)"
        try:
            _verifier(self.extra, at).build_client_verifier().verify(signer, list(others))
        except (VerificationError, ValueError) as exc:
            text = _NOISE.sub("", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return False, f"no trusted chain at {when}, {at:%Y-%m-%dT%H:%M:%SZ}: {text}"
        return True, None
