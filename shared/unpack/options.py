"""The unpack layer's settings, as the typed settings object carries them (no imports: read at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
