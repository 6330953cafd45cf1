"""The blob layout contract: `{mailbox}/{yyyy}/{MM}/{dd}/{messageKey}/{file name}` and manifest.json; the
names Blob Storage accepts for index tags (for containers: `env.CONTAINER_NAME`, which settings check too)."""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from urllib.parse import quote

MANIFEST = "manifest.json"
MAX_NAME_BYTES = 200
_RESERVED = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f-\x9f]')
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)


# Blob index tags (Set Blob Tags): at most 10 per blob, keys 1 to 128 and values 0 to 256 characters of
# letters, digits, space and `+ - . / : = _`.
MAX_TAGS = 10
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
TAG_KEY = re.compile(r"^[A-Za-z0-9 +\-./:=_]{1,128}$")
_TAG_OTHER = re.compile(r"[^A-Za-z0-9 +\-./:=_]")


def message_key(immutable_id: str) -> str:
    """A short, stable, path-safe hash of the immutable message id (16 base32 characters)."""
    digest = hashlib.sha256(immutable_id.encode()).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def message_prefix(mailbox: str, received: datetime, key: str) -> str:
    day = received.astimezone(UTC)
    return f"{mailbox.lower()}/{day:%Y}/{day:%m}/{day:%d}/{key}"


def parse_graph_time(value: str) -> datetime:
    """Graph's ISO 8601 UTC timestamps (`2026-11-22T07:36:00Z`, with or without fractions)."""
    text = value.strip().replace("Z", "+00:00")
    # Graph can send 7 fractional digits; fromisoformat takes at most 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def graph_time(when: datetime) -> str:
    """The form Graph uses and accepts: UTC, whole seconds, `Z` (`2026-11-22T07:36:00Z`)."""
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _truncate(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode(errors="ignore")


def sanitize_name(name: str | None, fallback: str = "attachment") -> str:
    """A readable, safe blob file name: no separators, no `..`, no control or reserved characters."""
    text = unicodedata.normalize("NFC", name or "")
    text = _RESERVED.sub("_", text).strip().strip(".").strip()
    while ".." in text:
        text = text.replace("..", ".")
    if not text or set(text) <= {"_", " ", "."}:
        text = fallback
    stem, dot, ext = text.rpartition(".")
    if not dot or not stem:
        stem, ext = text, ""
    if stem.lower() in _WINDOWS_DEVICES:
        stem = f"_{stem}"
    ext = _truncate(ext, 20)
    stem = _truncate(stem, MAX_NAME_BYTES - len(ext.encode()) - 1).rstrip(". ") or fallback
    return f"{stem}.{ext}" if ext else stem


class UniqueNames:
    """Hands out names unique within one message (case-insensitively): `scan.pdf`, `scan (2).pdf`."""

    def __init__(self, reserved: tuple[str, ...] = (MANIFEST,)) -> None:
        self._taken = {r.lower() for r in reserved}

    def take(self, name: str) -> str:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem:
            stem, ext = name, ""
        candidate, n = name, 1
        while candidate.lower() in self._taken:
            n += 1
            candidate = f"{stem} ({n}).{ext}" if ext else f"{stem} ({n})"
        self._taken.add(candidate.lower())
        return candidate


def metadata_value(text: str) -> str:
    """Blob metadata must be ASCII: percent-encode anything else."""
    return quote(text, safe=" !#$&'()+,-.;=@[]^_`{}~")


def tag_value(text: str) -> str:
    """A blob index tag value the service accepts: accents dropped (`Müller` → `Muller`), any other character
    outside the allowed set replaced by `_` (`ap@contoso.com` → `ap_contoso.com`), at most 256 characters."""
    return _TAG_OTHER.sub("_", "".join(_ascii(ch) for ch in text))[:MAX_TAG_VALUE]


def _ascii(ch: str) -> str:
    if ch.isascii():
        return ch
    # `ä` decomposes to `a` and a combining mark; a character with no ASCII base (`ß`, CJK) becomes `_`.
    return unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "_"
