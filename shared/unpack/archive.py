"""Zip archives: the files inside, read from the stream entry by entry (local headers), never held whole.

Why our own reader: `zipfile` needs a seekable file (it reads the central directory at the end), and
`stream-unzip`, which streams, stops at the first entry it cannot read (an encrypted entry, an
unsupported method) with an exception that ends the whole archive; here such an entry is recorded as
skipped with its reason and the entries after it are still extracted. Stored, deflated (`zlib`) and
bzip2 (`bz2`) entries are read; the standard library does the decompression.

Limits, shared by every archive of one mail (nested ones included): at most `max_files` files (the
rest are recorded as not extracted), at most `max_bytes` uncompressed bytes and at most `max_ratio`
times an entry's compressed size (past 1 MiB). Crossing a byte or ratio limit means a zip bomb: the
archive is refused, and the caller keeps nothing found in it. Decompression runs in 64 KiB steps, so
a bomb never expands in memory. An entry whose size is only in a data descriptor and whose end cannot
be found without reading it (stored, encrypted, or an unknown method) ends the reading: the entries
before it are kept, the archive is recorded as partly read.
"""

from __future__ import annotations

import bz2
import mimetypes
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from .base import Found, Problem, Refused, Scope, Sink, Source, UnpackError
from .options import ArchiveLimits
from .protection import ZIP_ENTRY

LOCAL_HEADER = 0x04034B50
CENTRAL_HEADER = 0x02014B50
END_OF_CENTRAL = 0x06054B50
ZIP64_END = 0x06064B50
DATA_DESCRIPTOR = 0x08074B50
STEP = 64 * 1024
RATIO_FLOOR = 1024 * 1024  # small files compress well legitimately (text, XML): the ratio counts past this
_METHODS = {0: "stored", 8: "deflate", 12: "bzip2"}


@dataclass
class ArchiveBudget:
    """What the archives of one mail have used of the limits."""

    limits: ArchiveLimits
    files: int = 0
    bytes: int = 0


class ZipError(UnpackError):
    """Not a readable zip."""


def fold_path(path: str) -> str:
    """A zip entry's path as one file name: its folders joined by `_`, without `..`, `.` or a root."""
    segments = [s for s in path.replace("\\", "/").split("/") if s not in ("", ".", "..")]
    return "_".join(segments) or "entry"


def _name(raw: bytes, flags: int, extra: dict[int, bytes]) -> str:
    unicode_path = extra.get(0x7075)
    # Info-ZIP's Unicode path field, when it still belongs to this name (its CRC is the name's).
    if unicode_path and len(unicode_path) > 5 and unicode_path[0] == 1 and unicode_path[1:5] == _crc(raw):
        return unicode_path[5:].decode("utf-8", "replace")
    # Bit 11: UTF-8; otherwise the zip spec's code page 437 (what Windows and Info-ZIP write).
    return raw.decode("utf-8", "replace") if flags & 0x800 else raw.decode("cp437")


def _crc(data: bytes) -> bytes:
    return struct.pack("<I", zlib.crc32(data))


def _extra(data: bytes) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        tag, size = struct.unpack("<HH", data[offset : offset + 4])
        fields[tag] = data[offset + 4 : offset + 4 + size]
        offset += 4 + size
    return fields


@dataclass
class _Entry:
    path: str
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    zip64: bool

    @property
    def descriptor(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 0x41)  # traditional or strong encryption


class _Decompressor:
    def __init__(self, method: int) -> None:
        self.method = method
        self._inflate: Any = zlib.decompressobj(-15) if method == 8 else None
        self._bz2: Any = bz2.BZ2Decompressor() if method == 12 else None
        self.eof = False
        self.unused = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Output in steps of at most STEP bytes (a bomb never expands at once)."""
        if self.method == 0:
            return [data]
        out: list[bytes] = []
        try:
            if self._inflate is not None:
                piece = self._inflate.decompress(data, STEP)
                out.append(piece)
                while self._inflate.unconsumed_tail and not self._inflate.eof:
                    out.append(self._inflate.decompress(self._inflate.unconsumed_tail, STEP))
                self.eof, self.unused = self._inflate.eof, self._inflate.unused_data
            else:
                while data or (self._bz2.needs_input is False and not self._bz2.eof):
                    out.append(self._bz2.decompress(data, STEP))
                    data = b""
                self.eof, self.unused = self._bz2.eof, self._bz2.unused_data
        except (zlib.error, OSError, EOFError) as exc:
            raise ZipError(f"corrupt compressed data: {exc}") from None
        return [p for p in out if p]


class ZipReader:
    """Reads a zip from a pipe; each file goes to the scope, its bytes as they are decompressed."""

    def __init__(self, scope: Scope, budget: ArchiveBudget) -> None:
        self._scope = scope
        self._budget = budget
        self._pipe = scope.pipe(self._read)

    async def write(self, data: bytes) -> None:
        await self._pipe.write(data)

    async def close(self) -> None:
        await self._pipe.close()

    async def _read(self, src: Source) -> None:
        first = True
        while True:
            signature = await src.peek(4)
            if len(signature) < 4:
                if first:
                    raise ZipError("not a zip archive (empty or too short)")
                raise ZipError("the archive ends before its central directory (truncated)")
            (sig,) = struct.unpack("<I", signature)
            if sig in (CENTRAL_HEADER, END_OF_CENTRAL, ZIP64_END):
                return  # the entries are done; the directory repeats what they said
            if sig != LOCAL_HEADER:
                raise ZipError("not a zip archive" if first else f"unexpected data in the archive at byte {src.offset}")
            first = False
            entry = await self._header(src)
            if entry.path.endswith(("/", "\\")) and entry.usize == 0 and entry.method in _METHODS:
                await self._extract(src, entry, None)  # a folder: its files carry its path
                continue
            if not await self._entry(src, entry):
                return

    async def _header(self, src: Source) -> _Entry:
        fixed = await src.read(30, "a zip entry's header")
        _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len = struct.unpack("<IHHHHHIIIHH", fixed)
        raw_name = await src.read(name_len, "a zip entry's name")
        extra = _extra(await src.read(extra_len, "a zip entry's extra field"))
        zip64 = 0x0001 in extra
        if zip64:
            values = extra[0x0001]
            sizes = []
            for wanted in (usize, csize):
                if wanted == 0xFFFFFFFF and len(values) >= 8:
                    sizes.append(struct.unpack("<Q", values[:8])[0])
                    values = values[8:]
                else:
                    sizes.append(wanted)
            usize, csize = sizes
        return _Entry(_name(raw_name, flags, extra), flags, method, crc, csize, usize, zip64)

    async def _entry(self, src: Source, entry: _Entry) -> bool:
        """One entry; False when the rest of the archive cannot be read."""
        limits = self._budget.limits
        if self._budget.files >= limits.max_files:
            self._scope.note(Problem(f"more than ARCHIVE_MAX_FILES ({limits.max_files}) files: the rest not extracted"))
            return False
        self._budget.files += 1
        name = fold_path(entry.path)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        reason: str | None = None
        if entry.encrypted:
            reason = ZIP_ENTRY
        elif entry.method not in _METHODS:
            reason = f"zip compression method {entry.method} is not supported"
        if reason is not None:
            protected = reason if entry.encrypted else None
            await self._scope.found(Found(name, content_type, path=entry.path, skipped=reason, protected=protected))
            if entry.descriptor:
                self._scope.note(Problem(f"{entry.path}: {reason}, and its end is unknown: the rest is not extracted"))
                return False
            await self._skip(src, entry.csize)
            return True
        if entry.method == 0 and entry.descriptor and entry.csize == 0:
            self._scope.note(Problem(f"{entry.path}: stored with its size after the data: the rest is not extracted"))
            return False
        if not entry.descriptor and entry.usize > limits.max_bytes - self._budget.bytes:
            raise Refused(f"zip bomb: {entry.path} would expand past ARCHIVE_MAX_BYTES ({limits.max_bytes})")
        sink = await self._scope.found(Found(name, content_type, path=entry.path))
        await self._extract(src, entry, sink)
        return True

    async def _skip(self, src: Source, size: int) -> None:
        remaining = size
        while remaining:
            piece = await src.read_some(min(STEP, remaining))
            if not piece:
                raise ZipError("the archive ends inside an entry (truncated)")
            remaining -= len(piece)

    async def _extract(self, src: Source, entry: _Entry, sink: Sink | None) -> None:
        limits = self._budget.limits
        decompressor = _Decompressor(entry.method)
        remaining = None if entry.descriptor else entry.csize
        consumed = produced = 0
        crc = 0
        while remaining is None or remaining > 0:
            if decompressor.eof:
                break
            piece = await src.read_some(STEP if remaining is None else min(STEP, remaining))
            if not piece:
                raise ZipError(f"the archive ends inside {entry.path} (truncated)")
            if remaining is not None:
                remaining -= len(piece)
            consumed += len(piece)
            for out in decompressor.feed(piece):
                produced += len(out)
                self._budget.bytes += len(out)
                if self._budget.bytes > limits.max_bytes:
                    raise Refused(f"zip bomb: more than ARCHIVE_MAX_BYTES ({limits.max_bytes}) bytes uncompressed")
                if produced > RATIO_FLOOR and produced > limits.max_ratio * consumed:
                    ratio = limits.max_ratio
                    raise Refused(f"zip bomb: {entry.path} expands more than ARCHIVE_MAX_RATIO ({ratio}) times")
                crc = zlib.crc32(out, crc)
                if sink is not None:
                    await sink.write(out)
        if decompressor.unused:
            src.unread(decompressor.unused)
            consumed -= len(decompressor.unused)
        if entry.method != 0 and not decompressor.eof:
            raise ZipError(f"{entry.path}: the compressed data ends early (corrupt)")
        if entry.descriptor:
            entry.crc, entry.csize, entry.usize = await self._descriptor(src, entry)
        if crc != entry.crc or produced != entry.usize:
            raise ZipError(f"{entry.path} fails its CRC or size check (corrupt)")
        if sink is not None:
            await sink.close()

    @staticmethod
    async def _descriptor(src: Source, entry: _Entry) -> tuple[int, int, int]:
        first = await src.read(4, "a data descriptor")
        if struct.unpack("<I", first)[0] == DATA_DESCRIPTOR:
            first = await src.read(4, "a data descriptor")
        if entry.zip64:
            csize, usize = struct.unpack("<QQ", await src.read(16, "a data descriptor"))
        else:
            csize, usize = struct.unpack("<II", await src.read(8, "a data descriptor"))
        return struct.unpack("<I", first)[0], csize, usize
