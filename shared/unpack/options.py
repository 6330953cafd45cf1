"""The unpack layer's settings: parsed here from the environment, carried by the typed settings object (it imports
only the readers, `env`: read at start-up)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..env import read_bool, read_int, read_vault_names
from ..errors import SettingsError
from .trust import TrustAnchors, pem_certificates


@dataclass(frozen=True)
class ArchiveLimits:
    """Shared by every archive of one mail, nested ones included."""

    max_files: int = 1000
    max_bytes: int = 1024 * 1024 * 1024
    max_ratio: int = 100


@dataclass(frozen=True)
class UnpackOptions:
    """`max_depth`: a container is opened when it is at most this deep (a mail's own attachments are at
    depth 1, the files inside one of them at depth 2)."""

    max_depth: int = 5
    attached_mail: bool = True
    archives: bool = True
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    trust: TrustAnchors = field(default_factory=TrustAnchors)  # who may vouch for an S/MIME signer


def unpack_options_from_env(env: Mapping[str, str]) -> UnpackOptions:
    """UNPACK_MAX_DEPTH is the one depth for every container; ATTACHED_MAIL_MAX_DEPTH, its old name (attached
    mails only), is still read when the new one is not set."""
    old = env.get("ATTACHED_MAIL_MAX_DEPTH", "").strip()
    depth_name = (
        "ATTACHED_MAIL_MAX_DEPTH" if old and not env.get("UNPACK_MAX_DEPTH", "").strip() else "UNPACK_MAX_DEPTH"
    )
    return UnpackOptions(
        max_depth=read_int(env, depth_name, 5, 1, 10),
        attached_mail=read_bool(env, "EXTRACT_ATTACHED_MAIL", True),
        archives=read_bool(env, "EXTRACT_ARCHIVES", True),
        archive=ArchiveLimits(
            max_files=read_int(env, "ARCHIVE_MAX_FILES", 1000, 1, 100_000),
            max_bytes=read_int(env, "ARCHIVE_MAX_BYTES", 1024**3, 1024 * 1024, 64 * 1024**3),
            max_ratio=read_int(env, "ARCHIVE_MAX_RATIO", 100, 2, 10_000),
        ),
        trust=TrustAnchors(_ca_certificates(env)),
    )


def _ca_certificates(env: Mapping[str, str]) -> tuple[bytes, ...]:
    """SMIME_CA_CERTIFICATES: PEM CA certificates that vouch for S/MIME signers beside the system's CAs (in Azure,
    the setting may be a Key Vault reference)."""
    text = env.get("SMIME_CA_CERTIFICATES", "").strip()
    if not text:
        return ()
    try:
        return pem_certificates(text)
    except ValueError as exc:
        raise SettingsError("SMIME_CA_CERTIFICATES", str(exc)) from None


def smime_certificates_from_env(env: Mapping[str, str]) -> tuple[str, ...]:
    """SMIME_CERTIFICATES: the Key Vault certificates whose keys open encrypted mail (`smimekeys`)."""
    return read_vault_names(env, "SMIME_CERTIFICATES")
