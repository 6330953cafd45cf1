"""The files inside an attached mail, extracted while its MIME streams past, in bounded memory.

An attached mail (an item attachment's `/$value`, graph_facts §8) often carries the document that
matters: an invoice forwarded as an attachment. `MimeExtractor` is fed the raw MIME chunk by chunk and
hands each file part, decoded, to a sink the caller opens for it; an attached mail inside is itself a
file part (its `.eml`) whose bytes also feed a nested extractor, to a bounded depth. It holds at most
one line and one header block per level in memory, never a part's body.
"""

from __future__ import annotations

import binascii
import mimetypes
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Generic, Protocol, TypeVar

MAX_LINE = 64 * 1024
MAX_HEADER_BLOCK = 256 * 1024
_WHITESPACE = b" \t\r\n"
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})


class PartSink(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=PartSink)


@dataclass(frozen=True)
class MimePart(Generic[S]):
    """A file inside an attached mail. `parent` is the sink of the attached mail it was found in
    (None: the outermost one, which the caller already has)."""

    name: str
    content_type: str
    inline: bool
    is_message: bool
    depth: int
    parent: S | None


OpenPart = Callable[[MimePart[S]], Awaitable[S | None]]


class _Decoder:
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._carry = b""

    def decode(self, data: bytes) -> bytes:
        if self.encoding == "base64":
            text = self._carry + data.translate(None, _WHITESPACE)
            cut = len(text) - len(text) % 4
            self._carry = text[cut:]
            return binascii.a2b_base64(text[:cut]) if cut else b""
        if self.encoding == "quoted-printable":
            return binascii.a2b_qp(data)
        return data

    def flush(self) -> bytes:
        if self.encoding == "base64" and self._carry:
            # Tolerate missing padding, as mail clients do.
            padded = self._carry + b"=" * (-len(self._carry) % 4)
            self._carry = b""
            try:
                return binascii.a2b_base64(padded)
            except binascii.Error:
                return b""
        return b""


class _Leaf:
    """A part's body: lines decoded into a sink; the line break before the closing boundary is
    not the part's, so each line's is held back until the next line shows it was not the last."""

    def __init__(self, decoder: _Decoder, sink: PartSink, nested: MimeExtractor[Any] | None) -> None:
        self.decoder = decoder
        self.sink = sink
        self.nested = nested
        self.held: bytes | None = None  # the previous line, whose break is the part's only if more follows
        self.held_ending = b""

    async def line(self, content: bytes, ending: bytes) -> None:
        if self.held is not None:
            await self._emit(self.held + self.held_ending)
        self.held, self.held_ending = content, ending

    async def _emit(self, raw: bytes) -> None:
        data = self.decoder.decode(raw)
        if data:
            await self.sink.write(data)
            if self.nested is not None:
                await self.nested.feed(data)

    async def close(self) -> None:
        if self.held is not None:
            await self._emit(self.held)
        tail = self.decoder.flush()
        if tail:
            await self.sink.write(tail)
            if self.nested is not None:
                await self.nested.feed(tail)
        if self.nested is not None:
            await self.nested.close()
        await self.sink.close()


def _part_name(headers: EmailMessage, content_type: str, is_message: bool) -> str:
    name = headers.get_filename()
    if name:
        return str(name)
    if is_message:
        return "attached message.eml"
    ext = mimetypes.guess_extension(content_type) or ".bin"
    return f"attachment{ext}"


class MimeExtractor(Generic[S]):
    """Feed an attached mail's MIME with `feed()`, then `close()`. `open_part` is awaited for each
    file part and returns its sink, or None to skip it (the bytes are then read past, not kept)."""

    def __init__(self, open_part: OpenPart[S], max_depth: int, *, depth: int = 1, parent: S | None = None) -> None:
        self._open = open_part
        self._max_depth = max_depth
        self._depth = depth
        self._parent = parent
        self._buf = bytearray()
        self._at_line_start = True
        self._headers: bytearray | None = bytearray()  # the current entity's header block, while read
        self._boundaries: list[bytes] = []  # open multiparts, outermost first
        self._related: list[bool] = []  # whether each open multipart is multipart/related
        self._leaf: _Leaf | None = None
        self._opaque = False  # a malformed header block: the rest is read past

    async def feed(self, data: bytes) -> None:
        self._buf += data
        while self._buf:
            cut = self._buf.find(b"\n")
            if cut < 0:
                if len(self._buf) < MAX_LINE:
                    return
                piece, ending = bytes(self._buf), b""
                self._buf.clear()
                await self._line(piece, ending, continued=not self._at_line_start)
                self._at_line_start = False
                continue
            raw = bytes(self._buf[: cut + 1])
            del self._buf[: cut + 1]
            content = raw.rstrip(b"\r\n")
            await self._line(content, raw[len(content) :], continued=not self._at_line_start)
            self._at_line_start = True

    async def close(self) -> None:
        if self._buf:
            piece = bytes(self._buf)
            self._buf.clear()
            await self._line(piece, b"", continued=not self._at_line_start)
        if self._headers is not None and self._headers and not self._opaque:
            await self._start_entity()  # a part with headers and no body
        await self._end_leaf()

    async def _line(self, content: bytes, ending: bytes, *, continued: bool) -> None:
        if self._opaque:
            return
        boundary = not continued and content.startswith(b"--") and self._boundaries
        if boundary and await self._boundary(content.rstrip(b" \t")):
            return
        if self._headers is not None:
            if content or continued:
                self._headers += content + ending
                if len(self._headers) > MAX_HEADER_BLOCK:
                    self._opaque = True
                return
            await self._start_entity()
            return
        if self._leaf is not None:
            await self._leaf.line(content, ending)
        # Otherwise a multipart's preamble or epilogue, or a skipped part's body: read past.

    async def _boundary(self, line: bytes) -> bool:
        for level in range(len(self._boundaries) - 1, -1, -1):
            marker = b"--" + self._boundaries[level]
            if line == marker or line == marker + b"--":
                await self._end_leaf()
                self._headers = None
                del self._boundaries[level + 1 :]
                del self._related[level + 1 :]
                if line == marker:
                    self._headers = bytearray()  # the next part begins
                else:
                    del self._boundaries[level:]
                    del self._related[level:]
                return True
        return False

    async def _end_leaf(self) -> None:
        if self._leaf is not None:
            leaf, self._leaf = self._leaf, None
            await leaf.close()

    async def _start_entity(self) -> None:
        block = bytes(self._headers or b"")
        self._headers = None
        headers = BytesParser(policy=policy.default).parsebytes(block, headersonly=True)
        assert isinstance(headers, EmailMessage)
        content_type = headers.get_content_type()
        maintype = headers.get_content_maintype()
        boundary = headers.get_param("boundary")
        if maintype == "multipart" and isinstance(boundary, str) and boundary:
            self._boundaries.append(boundary.encode("utf-8", "replace"))
            self._related.append(content_type == "multipart/related")
            return
        disposition = headers.get_content_disposition()
        filename = headers.get_filename()
        is_message = content_type in _MESSAGE_TYPES
        is_body = maintype in ("text", "multipart", "message") and not is_message
        if is_body and not filename and disposition != "attachment":
            return  # the mail's own text or HTML body: not a file
        inline = bool(self._related and self._related[-1]) or (disposition == "inline" and not filename)
        part: MimePart[S] = MimePart(
            name=_part_name(headers, content_type, is_message),
            content_type=content_type,
            inline=inline,
            is_message=is_message,
            depth=self._depth,
            parent=self._parent,
        )
        sink = await self._open(part)
        if sink is None:
            return
        nested: MimeExtractor[S] | None = None
        if is_message and self._depth < self._max_depth:
            nested = MimeExtractor(self._open, self._max_depth, depth=self._depth + 1, parent=sink)
        encoding = str(headers.get("content-transfer-encoding", "7bit")).strip().lower()
        self._leaf = _Leaf(_Decoder(encoding), sink, nested)
