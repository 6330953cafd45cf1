"""Attachment content: given bytes, or bytes generated deterministically from ``size`` and ``seed``.

Generated content is produced chunk by chunk on demand (SHAKE-128 of the seed and the chunk index),
so a 100 MB attachment costs no memory and any consumer, including the sha256 reported by the control
API, sees exactly the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

CHUNK_SIZE = 64 * 1024


class Content(Protocol):
    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class BytesContent:
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), CHUNK_SIZE):
            yield self.data[start : start + CHUNK_SIZE]


@dataclass(frozen=True)
class GeneratedContent:
    length: int
    seed: str

    @property
    def size(self) -> int:
        return self.length

    def chunks(self) -> Iterator[bytes]:
        for index, start in enumerate(range(0, self.length, CHUNK_SIZE)):
            want = min(CHUNK_SIZE, self.length - start)
            yield hashlib.shake_128(f"{self.seed}:{index}".encode()).digest(want)


def sha256_hex(content: Content) -> str:
    digest = hashlib.sha256()
    for chunk in content.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def read_all(content: Content) -> bytes:
    """Whole content in memory: only for small attachments (MIME of attached mails)."""
    return b"".join(content.chunks())


def base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def base64_chunks(content: Content) -> Iterator[bytes]:
    """Base64 of the content, encoded piecewise: every piece but the last covers a multiple of 3 bytes."""
    carry = b""
    for chunk in content.chunks():
        data = carry + chunk
        cut = len(data) - len(data) % 3
        carry = data[cut:]
        if cut:
            yield base64.b64encode(data[:cut])
    if carry:
        yield base64.b64encode(carry)
