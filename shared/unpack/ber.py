"""A streaming BER reader: tag and length headers, and an OCTET STRING's content as a stream of pieces.

Why our own: the ASN.1 libraries (`asn1crypto`, `pyasn1`, `cryptography`) parse a structure from bytes
held whole in memory, and S/MIME's CMS carries the whole mail inside one OCTET STRING (often BER's
indefinite-length, constructed form, as Outlook and OpenSSL write it). This reader walks the outer
structure from a `Source` and streams that one string; each small element around it is captured whole
(bounded) and handed to `asn1crypto`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from .base import Source, UnpackError

UNIVERSAL, CONTEXT = 0, 2
SEQUENCE, SET, OCTET_STRING, OID = 16, 17, 4, 6
MAX_CAPTURE = 4 * 1024 * 1024  # certificates, signer and recipient infos: a few KiB each
PIECE = 64 * 1024


class BerError(UnpackError):
    """Not the BER structure expected."""


@dataclass(frozen=True)
class Header:
    cls: int
    constructed: bool
    tag: int
    length: int | None  # None: indefinite (ends with an end-of-contents marker)
    raw: bytes  # the identifier and length octets as read

    @property
    def is_end(self) -> bool:
        return self.cls == UNIVERSAL and self.tag == 0 and not self.constructed and self.length == 0

    def expect(self, cls: int, tag: int, what: str) -> Header:
        if self.cls != cls or self.tag != tag:
            raise BerError(f"{what} expected, found tag class {self.cls} number {self.tag}")
        return self


async def header(src: Source) -> Header:
    first = await src.read(1, "the CMS structure")
    raw = bytearray(first)
    cls, constructed, tag = first[0] >> 6, bool(first[0] & 0x20), first[0] & 0x1F
    if tag == 0x1F:
        tag = 0
        while True:
            byte = (await src.read(1, "a BER tag"))[0]
            raw.append(byte)
            tag = (tag << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
            if len(raw) > 6:
                raise BerError("a BER tag is too long")
    length_byte = (await src.read(1, "a BER length"))[0]
    raw.append(length_byte)
    length: int | None
    if length_byte < 0x80:
        length = length_byte
    elif length_byte == 0x80:
        if not constructed:
            raise BerError("a primitive BER element has an indefinite length")
        length = None
    else:
        count = length_byte & 0x7F
        if count > 8:
            raise BerError("a BER length is too long")
        octets = await src.read(count, "a BER length")
        raw += octets
        length = int.from_bytes(octets, "big")
    return Header(cls, constructed, tag, length, bytes(raw))


async def children(src: Source, parent: Header) -> AsyncIterator[Header]:
    """The headers of a constructed element's children; each must be consumed before the next."""
    end = src.offset + parent.length if parent.length is not None else None
    while True:
        if end is not None and src.offset >= end:
            if src.offset > end:
                raise BerError("a BER element runs past its parent's end")
            return
        child = await header(src)
        if child.is_end:
            if end is not None:
                raise BerError("an end-of-contents marker inside a definite-length element")
            return
        yield child


async def capture(src: Source, head: Header, limit: int = MAX_CAPTURE) -> bytes:
    """The element's whole encoding (header included), for `asn1crypto` to parse."""
    out = bytearray(head.raw)
    if head.length is not None:
        if head.length > limit:
            raise BerError(f"a CMS element of {head.length} bytes is larger than expected")
        out += await src.read(head.length, "a CMS element")
        return bytes(out)
    async for child in children(src, head):
        out += await capture(src, child, limit - len(out))
    out += b"\x00\x00"
    if len(out) > limit:
        raise BerError("a CMS element is larger than expected")
    return bytes(out)


async def skip(src: Source, head: Header) -> None:
    if head.length is not None:
        remaining = head.length
        while remaining:
            piece = await src.read(min(PIECE, remaining), "a CMS element")
            remaining -= len(piece)
        return
    async for child in children(src, head):
        await skip(src, child)


async def octets(src: Source, head: Header) -> AsyncIterator[bytes]:
    """The content of an OCTET STRING (or an implicitly tagged one), primitive or constructed, in pieces."""
    if not head.constructed:
        remaining = head.length or 0
        while remaining:
            piece = await src.read(min(PIECE, remaining), "the encapsulated content")
            remaining -= len(piece)
            yield piece
        return
    async for child in children(src, head):
        child.expect(UNIVERSAL, OCTET_STRING, "a segment of a constructed OCTET STRING")
        async for piece in octets(src, child):
            yield piece
