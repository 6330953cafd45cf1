"""S/MIME containers (`smime.p7m`): the documents inside a signed or encrypted mail, streamed.

Graph lists a signed or encrypted mail as one attachment, `smime.p7m` (graph_facts §8):
- clear-signed (`multipart/signed`): the bytes are the signed MIME; `MimeReader` reads it and checks
  the signature as the content streams;
- opaque-signed (`application/pkcs7-mime`, signed-data): CMS whose encapsulated content is the MIME;
  it is hashed and read by `MimeReader` as it streams, the signature checked at the end;
- encrypted (enveloped-data): the content key is opened with a key from SMIME_CERTIFICATES and the
  content decrypted as it streams into `MimeReader` (signed inside encrypted then comes out as a
  signed entity, opened one level further). Without a matching key the envelope is recorded as
  `encrypted`, with its recipients, and read past.
The CMS arrives as DER or BER, or base64 of it; anything else is taken as MIME.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

from .base import Encrypted, Problem, Scope, Sink, Source, UnpackError
from .ber import (
    CONTEXT,
    OCTET_STRING,
    OID,
    SEQUENCE,
    UNIVERSAL,
    BerError,
    Header,
    capture,
    children,
    header,
    octets,
    skip,
)
from .mime import MimeReader, TransferDecoder
from .smime import Keys, open_envelope, recipients, verify_signed

_SNIFF = 8
_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


async def _next(items: AsyncIterator[Header], what: str) -> Header:
    try:
        return await anext(items)
    except StopAsyncIteration:
        raise BerError(f"{what} is missing") from None


async def _finish(src: Source, items: AsyncIterator[Header]) -> None:
    async for extra in items:
        await skip(src, extra)


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    octets_ = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets_)]) + octets_


def _sequence(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return b"\x30" + _length(len(body)) + body


def _oid(der: bytes) -> str:
    from asn1crypto import cms

    try:
        return str(cms.ContentType.load(der).native)
    except ValueError as exc:
        raise BerError(f"not an object identifier: {exc}") from None


async def read_cms(src: Source, scope: Scope, keys: Keys | None) -> None:
    outer = (await header(src)).expect(UNIVERSAL, SEQUENCE, "a CMS ContentInfo")
    items = children(src, outer)
    kind = _oid(await capture(src, (await _next(items, "the content type")).expect(UNIVERSAL, OID, "an OID")))
    wrapper = (await _next(items, "the CMS content")).expect(CONTEXT, 0, "the CMS content")
    inner = children(src, wrapper)
    body = (await _next(inner, "the CMS content")).expect(UNIVERSAL, SEQUENCE, "the CMS content")
    if kind == "signed_data":
        await _signed(src, body, scope)
    elif kind == "enveloped_data":
        await _enveloped(src, body, scope, keys)
    elif kind == "authenticated_enveloped_data":  # AES-GCM (RFC 5083): its recipients, then read past
        _, who = await _recipients(src, children(src, body))
        scope.note(Encrypted(who, False, "AES-GCM envelopes (authenticated-enveloped-data) are not supported"))
        return
    else:
        scope.note(Problem(f"CMS content {kind} is not supported (signed-data and enveloped-data are)"))
        return
    await _finish(src, inner)
    await _finish(src, items)


async def _signed(src: Source, body: Header, scope: Scope) -> None:
    from asn1crypto import cms

    items = children(src, body)
    version = await capture(src, await _next(items, "the version"))
    algorithms_der = await capture(src, await _next(items, "the digest algorithms"))
    try:
        names = [a["algorithm"].native for a in cms.DigestAlgorithms.load(algorithms_der)]
    except ValueError as exc:
        raise BerError(f"unreadable digest algorithms: {exc}") from None
    hashes = {n: hashlib.new(n) for n in names if n in hashlib.algorithms_available}
    encap = (await _next(items, "the encapsulated content")).expect(UNIVERSAL, SEQUENCE, "the encapsulated content")
    encap_items = children(src, encap)
    content_type = await capture(src, await _next(encap_items, "the content type"))
    explicit = await anext(encap_items, None)
    if explicit is None:
        scope.note(Problem("the signed-data carries no content (a detached signature without its content)"))
        return
    explicit.expect(CONTEXT, 0, "the encapsulated content")
    wrapped = children(src, explicit)
    string = (await _next(wrapped, "the content")).expect(UNIVERSAL, OCTET_STRING, "the content")
    reader = MimeReader(scope)
    async for piece in octets(src, string):
        for h in hashes.values():
            h.update(piece)
        await reader.write(piece)
    await reader.close()
    await _finish(src, wrapped)
    await _finish(src, encap_items)
    rest = [await capture(src, h) async for h in items]  # certificates, CRLs, signer infos
    try:
        signed = cms.SignedData.load(_sequence(version, algorithms_der, _sequence(content_type), *rest))
        signed.native  # noqa: B018 (parsed lazily: a corrupt structure raises here)
    except ValueError as exc:
        raise BerError(f"unreadable signer information: {exc}") from None
    scope.note(verify_signed(signed, {name: h.digest() for name, h in hashes.items()}, scope.trust))


async def _recipients(src: Source, items: AsyncIterator[Header]) -> tuple[list[Any], tuple[str, ...]]:
    """An envelope's recipient infos (after its version and originator info), and who they name."""
    from asn1crypto import cms

    await capture(src, await _next(items, "the version"))
    head = await _next(items, "the recipients")
    if head.cls == CONTEXT and head.tag == 0:  # originatorInfo
        await skip(src, head)
        head = await _next(items, "the recipients")
    try:
        infos = list(cms.RecipientInfos.load(await capture(src, head)))
        return infos, recipients(infos)
    except ValueError as exc:
        raise BerError(f"unreadable recipient information: {exc}") from None


async def _enveloped(src: Source, body: Header, scope: Scope, keys: Keys | None) -> None:
    from asn1crypto import algos

    items = children(src, body)
    infos, who = await _recipients(src, items)
    content_info = (await _next(items, "the encrypted content")).expect(UNIVERSAL, SEQUENCE, "the encrypted content")
    content_items = children(src, content_info)
    await capture(src, await _next(content_items, "the content type"))
    try:
        algorithm = algos.EncryptionAlgorithm.load(await capture(src, await _next(content_items, "the algorithm")))
        algorithm.native  # noqa: B018
    except ValueError as exc:
        raise BerError(f"unreadable content encryption algorithm: {exc}") from None
    try:
        opened = open_envelope(infos, algorithm, await keys() if keys is not None else ())
    except UnpackError as exc:
        scope.note(Encrypted(who, False, str(exc)))
        return
    if opened is None:
        scope.note(Encrypted(who, False, "no certificate in SMIME_CERTIFICATES is a recipient"))
        return
    envelope, key_name = opened
    content = (await _next(content_items, "the encrypted content")).expect(CONTEXT, 0, "the encrypted content")
    reader = MimeReader(scope)
    try:
        async for piece in octets(src, content):
            plain = envelope.update(piece)
            if plain:
                await reader.write(plain)
        await reader.write(envelope.finalize())
    except UnpackError as exc:
        await reader.close()
        scope.note(Encrypted(who, False, str(exc), key_name))
        return
    await reader.close()
    scope.note(Encrypted(who, True, None, key_name))
    await _finish(src, content_items)
    await _finish(src, items)


class SmimeReader:
    """An `smime.p7m`: MIME (clear-signed), or CMS as DER or base64, told apart by its first bytes."""

    def __init__(self, scope: Scope, keys: Keys | None) -> None:
        self._scope = scope
        self._keys = keys
        self._head = bytearray()
        self._target: Sink | None = None
        self._decoder: TransferDecoder | None = None

    async def _cms(self, src: Source) -> None:
        await read_cms(src, self._scope, self._keys)

    def _choose(self) -> Sink:
        start = bytes(self._head.lstrip())
        if start[:1] == b"\x30":
            return self._scope.pipe(self._cms)
        if start[:1] == b"M" and set(start[:_SNIFF]) <= _BASE64:  # base64 of a SEQUENCE ("MII...", "MIA...")
            self._decoder = TransferDecoder("base64")
            return self._scope.pipe(self._cms)
        return MimeReader(self._scope)

    async def write(self, data: bytes) -> None:
        if self._target is None:
            self._head += data
            if len(self._head.lstrip()) < _SNIFF:
                return
            self._target = self._choose()
            data = bytes(self._head)
            self._head.clear()
        await self._send(data)

    async def _send(self, data: bytes) -> None:
        assert self._target is not None
        if self._decoder is not None:
            data = self._decoder.decode(data)
        if data:
            await self._target.write(data)

    async def close(self) -> None:
        if self._target is None:
            if not self._head.strip():
                raise UnpackError("the S/MIME attachment is empty")
            self._target = self._choose()
            await self._send(bytes(self._head))
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                await self._target.write(tail)
        await self._target.close()
