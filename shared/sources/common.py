"""What the IMAP and POP3 sources share: TLS, credentials, fingerprints, error classification."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import MailAuthFailed, MailServerBusy, MailServerError, MailTlsRefused
from ..settings import MailAccount

# Every message is moved in pieces of this size: the most of a message held in memory at once.
CHUNK_BYTES = 1024 * 1024
# A server that sends nothing for this long is given up on (the poll's time budget bounds the rest).
SOCKET_TIMEOUT_SECONDS = 60.0


def tls_context() -> ssl.SSLContext:
    """Certificates verified against the system's trust plus `SSL_CERT_FILE` (as the Azure SDKs and MSAL
    do here); host names checked; TLS 1.2 at least. One context per bundle and process: loading the CAs
    costs more than a TLS handshake."""
    return _tls_context(os.environ.get("SSL_CERT_FILE") or None)


@functools.lru_cache(maxsize=4)
def _tls_context(extra_cafile: str | None) -> ssl.SSLContext:
    # OpenSSL reads SSL_CERT_FILE *instead of* its default bundle, so the system bundle is loaded too.
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    paths = ssl.get_default_verify_paths()
    for cafile in (paths.openssl_cafile, extra_cafile):
        if cafile and os.path.isfile(cafile):
            context.load_verify_locations(cafile=cafile)
    return context


class SecretReader(Protocol):
    """What `password_login` needs of shared.vault.Vault."""

    async def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True)
class Login:
    """How to sign in: a password (from the account's Key Vault secret) or an OAuth 2.0 access token."""

    user: str
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.password is None) == (self.token is None):
            raise ValueError("a login has either a password or a token")


async def password_login(account: MailAccount, vault: SecretReader) -> Login:
    """The account's password from its Key Vault secret."""
    assert account.secret is not None, "settings require a secret for password accounts"
    password = await vault.get(account.secret)
    if password is None:
        raise MailAuthFailed(str(account), f"Key Vault secret {account.secret} does not exist")
    return Login(account.user, password=password)


_HEADER = re.compile(rb"^(message-id|date|from|subject)[ \t]*:(.*)$", re.IGNORECASE)


def header_fields(header_block: bytes) -> dict[str, bytes]:
    """Message-ID, Date, From and Subject as raw bytes (unfolded; the first of each), without decoding: a
    fingerprint must not depend on how a parser copes with 8-bit or broken headers."""
    found: dict[str, bytes] = {}
    current: str | None = None
    for line in re.split(rb"\r?\n", header_block):
        if not line:
            break  # the end of the header
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                found[current] = (found[current] + b" " + line.strip()).strip()
            continue
        match = _HEADER.match(line)
        name = match.group(1).lower().decode() if match else None
        current = name if name is not None and name not in found else None  # a repeated field: the first counts
        if match and current is not None:
            found[current] = match.group(2).strip()
    return found


def fingerprint(header_block: bytes, size: int) -> str:
    """A message recognised without its UID: Message-ID, Date, From, Subject and size. Used where the
    server's ids cannot be trusted any more (a new UIDVALIDITY, changed UIDLs)."""
    fields = header_fields(header_block)
    parts = [b" ".join(fields.get(name, b"").split()) for name in ("message-id", "date", "from", "subject")]
    digest = hashlib.sha256(b"mail-fingerprint-v1\0" + b"\0".join(parts) + b"\0" + str(size).encode())
    return digest.hexdigest()[:32]


_BACKOFF = re.compile(r"backoff time\D{0,10}(\d+)\s*(ms|msec|millisecond|s\b|sec|second)?", re.IGNORECASE)
_BUSY = (
    "[alert]",
    "[unavailable]",
    "[limit]",
    "[inuse]",
    "[in-use]",
    "[throttled]",
    "[sys/temp]",
    "too many",
    "maximum number of connections",
    "backoff",
    "try again later",
)
_AUTH = (
    "[authenticationfailed]",
    "[authorizationfailed]",
    "[expired]",
    "[auth]",
    "authentication failed",
    "invalid credentials",
    "login failed",
    "logindisabled",
)


def classify(account: MailAccount, text: str, *, login: bool = False) -> MailServerError:
    """A server's refusal as the error it means. At login, a refusal that names no busy condition is taken as
    refused credentials."""
    lower = text.lower()
    where = str(account)
    if any(marker in lower for marker in _BUSY):
        match = _BACKOFF.search(text)
        retry = None
        if match:
            retry = float(match.group(1))
            unit = (match.group(2) or "ms").lower()
            retry = retry / 1000 if unit.startswith("m") else retry
        return MailServerBusy(where, text, retry)
    if login or any(marker in lower for marker in _AUTH):
        return MailAuthFailed(where, text)
    return MailServerError(where, text)


def connection_error(account: MailAccount, exc: BaseException) -> MailServerError:
    """A failure below the protocol: TLS refused, or the server unreachable or gone silent."""
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return MailTlsRefused(str(account), f"TLS failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return MailServerError(str(account), "the server did not answer in time")
    return MailServerError(str(account), f"{type(exc).__name__}: {exc}")
