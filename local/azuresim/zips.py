"""Zip archives as attachments, produced piecewise with their size known up front (a ``Content``).

Entries are stored (method 0, as scanners' zips of PDFs often are) with sizes and CRC in the local
header, so a 100 MB archive costs no memory; paths are written as given (folders, ``../``, absolute
names included). An ``encrypted`` entry carries the traditional PKWARE encryption flag and a 12-byte
encryption header before its data, as a password-protected entry does (nobody can read it without
the password; the bytes after the header are not really enciphered here). A ``bomb`` entry is
``size`` zero bytes deflated on the fly when the archive is made (about a thousandth of the size).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .content import Content

LOCAL, CENTRAL, END = 0x04034B50, 0x02014B50, 0x06054B50
_ZEROS = bytes(1 << 20)


@dataclass(frozen=True)
class ZipEntry:
    path: str
    content: Content | None = None
    encrypted: bool = False
    bomb: int = 0  # that many zero bytes, deflated


@dataclass
class _Prepared:
    name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    data: bytes | None  # the deflated bomb; None: the entry's content streams
    entry: ZipEntry
    offset: int = 0

    def local_header(self) -> bytes:
        fixed = struct.pack(
            "<IHHHHHIIIHH", LOCAL, 20, self.flags, self.method, 0, 0x21, self.crc, self.csize, self.usize,
            len(self.name), 0,
        )  # fmt: skip
        return fixed + self.name

    def central_header(self) -> bytes:
        fixed = struct.pack(
            "<IHHHHHHIIIHHHHHII", CENTRAL, 20, 20, self.flags, self.method, 0, 0x21, self.crc, self.csize,
            self.usize, len(self.name), 0, 0, 0, 0, 0, self.offset,
        )  # fmt: skip
        return fixed + self.name


def _prepare(entry: ZipEntry) -> _Prepared:
    name = entry.path.encode("utf-8")
    flags = 0x800  # names in UTF-8
    if entry.bomb:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        crc, pieces, left = 0, [], entry.bomb
        while left:
            block = _ZEROS[: min(left, len(_ZEROS))]
            crc = zlib.crc32(block, crc)
            pieces.append(compressor.compress(block))
            left -= len(block)
        data = b"".join(pieces) + compressor.flush()
        return _Prepared(name, flags, 8, crc, len(data), entry.bomb, data, entry)
    assert entry.content is not None
    crc = 0
    for chunk in entry.content.chunks():
        crc = zlib.crc32(chunk, crc)
    size = entry.content.size
    if entry.encrypted:
        return _Prepared(name, flags | 1, 0, crc, size + 12, size, None, entry)
    return _Prepared(name, flags, 0, crc, size, size, None, entry)


class ZipContent:
    def __init__(self, entries: list[ZipEntry]) -> None:
        self._entries = [_prepare(e) for e in entries]
        offset = 0
        for prepared in self._entries:
            prepared.offset = offset
            offset += len(prepared.local_header()) + prepared.csize
        self._directory = b"".join(p.central_header() for p in self._entries)
        count = len(self._entries)
        self._end = struct.pack("<IHHHHIIH", END, 0, 0, count, count, len(self._directory), offset, 0)
        self._size = offset + len(self._directory) + len(self._end)

    @property
    def size(self) -> int:
        return self._size

    def chunks(self) -> Iterator[bytes]:
        for prepared in self._entries:
            yield prepared.local_header()
            if prepared.data is not None:
                yield prepared.data
                continue
            if prepared.entry.encrypted:
                yield os.urandom(12)
            assert prepared.entry.content is not None
            yield from prepared.entry.content.chunks()
        yield self._directory + self._end
