"""The files inside a mail's MIME, extracted while it streams past, in bounded memory.

A mail's MIME reaches this reader as an attached mail (an item attachment's `/$value`, graph_facts §8),
as the content of an S/MIME envelope, or as a whole raw mail (IMAP, POP3). `MimeReader` is fed the raw
bytes chunk by chunk and hands each file part, decoded, to the sink its scope opens for it; whether
that file is itself a container (an attached mail, a zip) is the scope's business. It holds at most
one line and one header block in memory, never a part's body. The text parts that are the mail's own
body (text/plain, text/html, not attachments) are offered to `scope.body()`, decoded from their
transfer encoding, for SAVE_BODY; a scope that does not want them returns None and they are read past.

Clear-signed content (`multipart/signed`, RFC 8551 §3.5) is read as any multipart, and its first part's
bytes, canonical CRLF line ends, are hashed on the way (the algorithms `micalg` names, all usual ones
without it); the second part, the detached CMS signature, is kept (a few KiB, at most
`MAX_SIGNATURE`) and checked when the multipart closes. The verdict goes to the scope as a note.
"""

from __future__ import annotations

import binascii
import hashlib
import mimetypes
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from .base import Found, Scope, Signature, Sink
from .smime import DIGESTS, verify_detached

MAX_LINE = 64 * 1024
MAX_HEADER_BLOCK = 256 * 1024
MAX_SIGNATURE = 1024 * 1024
LINE_BY_LINE_BELOW = 4096  # bytes of whole lines: fewer are read one line at a time
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")))
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_SIGNATURE_TYPES = frozenset({"application/pkcs7-signature", "application/x-pkcs7-signature"})
# micalg names (RFC 8551 §3.5.3.2) → hashlib names
_MICALG = {"sha-1": "sha1", "sha1": "sha1", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512", "md5": "md5"}


def _base64(text: bytes) -> bytes:
    """Whole groups of alphabet characters, only the last possibly padded; a bad last group is dropped."""
    try:
        return binascii.a2b_base64(text)
    except binascii.Error:
        head = text[: len(text) - 4]
        return binascii.a2b_base64(head) if head else b""


class TransferDecoder:
    """A part body's Content-Transfer-Encoding undone, piece by piece. Base64 ignores what is not of its
    alphabet and ends at the first padded group, as a decoder of the whole body does, so the result does
    not depend on how the bytes were cut."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._carry = b""
        self._ended = False

    def decode(self, data: bytes) -> bytes:
        if self.encoding == "base64":
            return self._decode_base64(data)
        if self.encoding == "quoted-printable":
            return binascii.a2b_qp(data)
        return data

    def _decode_base64(self, data: bytes) -> bytes:
        if self._ended:
            return b""
        text = self._carry + data.translate(None, _NOT_BASE64)
        pad = text.find(b"=")
        group = pad - pad % 4  # where the padded group starts
        if pad >= 0 and len(text) >= group + 4:
            self._ended, self._carry = True, b""
            return _base64(text[: group + 4])
        cut = group if pad >= 0 else len(text) - len(text) % 4
        self._carry = text[cut:]
        return _base64(text[:cut]) if cut else b""

    def flush(self) -> bytes:
        if self.encoding == "base64" and self._carry and not self._ended:
            # Tolerate missing padding, as mail clients do.
            padded = self._carry.rstrip(b"=")
            padded += b"=" * (-len(padded) % 4)
            self._carry = b""
            try:
                return binascii.a2b_base64(padded)
            except binascii.Error:
                return b""
        return b""


class _Leaf:
    """A part's body: lines decoded into a sink; the line break before the closing boundary is
    not the part's, so each line's is held back until the next line shows it was not the last."""

    def __init__(self, decoder: TransferDecoder, sink: Sink) -> None:
        self.decoder = decoder
        self.sink = sink
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

    async def close(self) -> None:
        if self.held is not None:
            await self._emit(self.held)
        tail = self.decoder.flush()
        if tail:
            await self.sink.write(tail)
        await self.sink.close()


class _Collected:
    """The detached signature of a multipart/signed: small, kept in memory up to a bound."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.too_large = False

    async def write(self, data: bytes) -> None:
        if len(self.data) + len(data) > MAX_SIGNATURE:
            self.too_large = True
            return
        self.data += data

    async def close(self) -> None:
        return None


@dataclass
class _Signed:
    """An open multipart/signed: its level among the open multiparts, the first part's digests."""

    level: int
    hashes: dict[str, hashlib._Hash]
    part: int = 0  # 0 preamble, 1 the signed content, 2 the signature, 3 after
    held_ending: bytes | None = None
    signature: _Collected = field(default_factory=_Collected)

    def hash_line(self, content: bytes, ending: bytes) -> None:
        if self.held_ending is not None:
            self._update(self.held_ending)
        self._update(content)
        # A line's end is the content's only if another line of it follows; canonical form is CRLF.
        self.held_ending = b"\r\n" if ending else b""

    def hash_block(self, block: bytes) -> None:
        """Whole lines at once, each ending in LF (with or without CR): as `hash_line` line by line."""
        if self.held_ending is not None:
            self._update(self.held_ending)
        self._update(b"\r\n".join(line.rstrip(b"\r") for line in block[:-1].split(b"\n")))
        self.held_ending = b"\r\n"

    def _update(self, data: bytes) -> None:
        for h in self.hashes.values():
            h.update(data)


def _part_name(headers: EmailMessage, content_type: str, is_message: bool) -> str:
    name = headers.get_filename()
    if name:
        return str(name)
    if is_message:
        return "attached message.eml"
    ext = mimetypes.guess_extension(content_type) or ".bin"
    return f"attachment{ext}"


def _hashes(micalg: object) -> dict[str, hashlib._Hash]:
    names = {_MICALG.get(a.strip().lower(), "") for a in str(micalg or "").split(",")} - {""}
    return {n: hashlib.new(n) for n in (names or DIGESTS)}


class MimeReader:
    """Feed MIME with `write()`, then `close()`. Each file part goes to `scope.found()`; a part it
    refuses (None) is read past."""

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._buf = bytearray()
        self._at_line_start = True
        self._headers: bytearray | None = bytearray()  # the current entity's header block, while read
        self._boundaries: list[bytes] = []  # open multiparts, outermost first
        self._related: list[bool] = []  # whether each open multipart is multipart/related
        self._signed: list[_Signed] = []
        self._leaf: _Leaf | None = None
        self._opaque = False  # a malformed header block: the rest is read past

    async def write(self, data: bytes) -> None:
        self._buf += data
        while self._buf:
            if await self._body_block():
                continue
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
        for _ in self._signed:
            self._scope.note(Signature("unverifiable", "the signed MIME ends before its signature (truncated)"))
        self._signed.clear()

    async def _body_block(self) -> bool:
        """Inside a body, the whole lines before the next one that could be a boundary (it starts with
        `--`) are handled at once: the same bytes as line by line, at a fraction of the cost."""
        if self._headers is not None or self._opaque or not self._at_line_start or self._buf.startswith(b"--"):
            return False
        candidate = self._buf.find(b"\n--")
        end = candidate + 1 if candidate >= 0 else self._buf.rfind(b"\n") + 1
        if end <= 0 or (candidate < 0 and end < LINE_BY_LINE_BELOW):
            return False  # a few lines: line by line (a boundary may still be on its way)
        raw = bytes(self._buf[:end])
        del self._buf[:end]
        for signed in self._signed:
            if signed.part == 1:
                signed.hash_block(raw)
        if self._leaf is not None:
            start = raw.rfind(b"\n", 0, len(raw) - 1) + 1  # the last line's start
            content = raw[start:].rstrip(b"\r\n")
            await self._leaf.line(raw[:start] + content, raw[start + len(content) :])
        return True

    def _level_of(self, content: bytes, continued: bool) -> tuple[int, bool] | None:
        """Which open multipart's boundary this line is (its level, and whether it is the closing one)."""
        if continued or not self._boundaries or not content.startswith(b"--"):
            return None
        line = content.rstrip(b" \t")
        for level in range(len(self._boundaries) - 1, -1, -1):
            marker = b"--" + self._boundaries[level]
            if line == marker or line == marker + b"--":
                return level, line != marker
        return None

    async def _line(self, content: bytes, ending: bytes, *, continued: bool) -> None:
        if self._opaque:
            return
        boundary = self._level_of(content, continued)
        for signed in self._signed:
            if signed.part == 1 and (boundary is None or boundary[0] > signed.level):
                signed.hash_line(content, ending)
        if boundary is not None:
            await self._boundary(*boundary)
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

    async def _boundary(self, level: int, closing: bool) -> None:
        await self._end_leaf()
        self._headers = None
        del self._boundaries[level + 1 :]
        del self._related[level + 1 :]
        while self._signed and self._signed[-1].level > level:
            self._signed.pop()
            self._scope.note(Signature("unverifiable", "a multipart/signed inside is not closed (malformed MIME)"))
        signed = self._signed[-1] if self._signed and self._signed[-1].level == level else None
        if signed is not None:
            signed.part = 3 if closing else signed.part + 1
            if closing:
                self._signed.pop()
                self._scope.note(self._verdict(signed))
        if not closing:
            self._headers = bytearray()  # the next part begins
        else:
            del self._boundaries[level:]
            del self._related[level:]

    def _verdict(self, signed: _Signed) -> Signature:
        if signed.signature.too_large:
            return Signature("unverifiable", f"the signature part is larger than {MAX_SIGNATURE} bytes")
        if not signed.signature.data:
            return Signature("unverifiable", "the multipart/signed has no signature part")
        digests = {name: h.digest() for name, h in signed.hashes.items()}
        return verify_detached(bytes(signed.signature.data), digests, self._scope.trust)

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
        encoding = str(headers.get("content-transfer-encoding", "7bit")).strip().lower()
        if maintype == "multipart" and isinstance(boundary, str) and boundary:
            self._boundaries.append(boundary.encode("utf-8", "replace"))
            self._related.append(content_type == "multipart/related")
            if content_type == "multipart/signed":
                self._signed.append(_Signed(len(self._boundaries) - 1, _hashes(headers.get_param("micalg"))))
            return
        signed = self._signed[-1] if self._signed and self._signed[-1].level == len(self._boundaries) - 1 else None
        if signed is not None and signed.part == 2 and content_type in _SIGNATURE_TYPES:
            self._leaf = _Leaf(TransferDecoder(encoding), signed.signature)
            return
        disposition = headers.get_content_disposition()
        filename = headers.get_filename()
        is_message = content_type in _MESSAGE_TYPES
        is_body = maintype in ("text", "multipart", "message") and not is_message
        if is_body and not filename and disposition != "attachment":
            # The mail's own text or HTML body: not a file, but SAVE_BODY may want its text.
            sink = await self._scope.body(content_type, headers.get_content_charset()) if maintype == "text" else None
            if sink is not None:
                self._leaf = _Leaf(TransferDecoder(encoding), sink)
            return
        inline = bool(self._related and self._related[-1]) or (disposition == "inline" and not filename)
        # No open multipart: this part is the whole entity (an opaque S/MIME mail is its envelope).
        found = Found(_part_name(headers, content_type, is_message), content_type, inline, whole=not self._boundaries)
        sink = await self._scope.found(found)
        if sink is not None:
            self._leaf = _Leaf(TransferDecoder(encoding), sink)
