"""One recursive unpacker: a file found anywhere (an attachment, or a part inside one) is recognised by its
content type and name, and opened when it is a container, to one depth limit for every kind.

Kinds: an attached mail (`message/rfc822`, `.eml`), S/MIME (`smime.p7m`: `multipart/signed`,
`application/pkcs7-mime`), winmail.dat (`application/ms-tnef`, `winmail.dat`, `win.dat`) and zip.
Depth: the files of a mail are at depth 1 (a Graph attachment, or a part of a raw mail), the files
inside one of them at depth 2, and so on; a container at depth d is opened when d ≤ `max_depth`.

The caller (a `Handler`) owns nodes (manifest entries) and storage: it is asked for a sink per file
found, told what a container's reader learnt (a signature, an envelope, a problem), and asked to discard
what was stored under a container that is refused (a zip bomb). The container's own bytes go to its
sink and its reader at once, so each byte is read once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from .archive import ArchiveBudget, ZipReader
from .base import Found, Note, Pipe, Problem, Refused, Sink, Source, UnpackError
from .cms import SmimeReader
from .mime import MimeReader
from .options import UnpackOptions
from .smime import Keys
from .tnef import TnefReader
from .trust import TrustAnchors

N = TypeVar("N")

MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
SMIME_TYPES = frozenset({"multipart/signed", "application/pkcs7-mime", "application/x-pkcs7-mime"})
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
TNEF_NAMES = frozenset({"winmail.dat", "win.dat"})


def kind_of(name: str, content_type: str | None) -> str | None:
    """Which container a file is: `message`, `smime`, `tnef`, `zip`, or None (a document)."""
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    lower = name.lower()
    ext = lower.rsplit(".", 1)[1] if "." in lower else ""
    if ctype in SMIME_TYPES or ext == "p7m":
        return "smime"
    if ctype in MESSAGE_TYPES or ext == "eml":
        return "message"
    if ctype in TNEF_TYPES or lower in TNEF_NAMES:
        return "tnef"
    # A .docx or .xlsx is a zip too, and sometimes sent as application/zip: only the name's .zip, or
    # a zip content type on a name without another extension, is an archive.
    if ext == "zip" or (ctype in ZIP_TYPES and not ext):
        return "zip"
    return None


class Handler(Protocol[N]):
    async def open(self, parent: N, found: Found, container: bool) -> tuple[N, Sink | None] | None:
        """A file found in `parent`: its node and the sink for its bytes (None: not kept). None for both:
        not recorded at all. `container`: it will be opened, so it needs a node even if not kept."""
        ...

    def note(self, node: N, note: Note) -> None: ...

    async def discard(self, node: N, reason: str) -> None:
        """Nothing found under `node` may stay (and `node` itself is not kept): the reason."""
        ...


# Where a raw mail's own body text goes (SAVE_BODY): given the part's content type and charset, a sink or None.
BodyHook = Callable[[str, str | None], Awaitable[Sink | None]]


class _Scope(Generic[N]):
    def __init__(self, unpacker: Unpacker[N], node: N, depth: int, body: BodyHook | None = None) -> None:
        self.unpacker = unpacker
        self.node = node
        self.depth = depth  # of the files found here
        self._body = body  # only the raw mail's own scope, and an S/MIME envelope that is the whole mail

    async def found(self, item: Found) -> Sink | None:
        unpacker = self.unpacker
        kind = unpacker.kind(item, self.depth) if item.skipped is None else None
        opened = await unpacker.handler.open(self.node, item, kind is not None)
        if opened is None:
            return None
        node, sink = opened
        if item.skipped is not None:
            return None
        # A signed or encrypted mail is one S/MIME entity: the body inside it is the mail's body.
        body = self._body if item.whole and kind == "smime" else None
        return unpacker.tee(node, kind, self.depth, sink, body)

    async def body(self, content_type: str, charset: str | None) -> Sink | None:
        return await self._body(content_type, charset) if self._body is not None else None

    def note(self, note: Note) -> None:
        self.unpacker.handler.note(self.node, note)

    @property
    def trust(self) -> TrustAnchors:
        return self.unpacker.options.trust

    def pipe(self, parse: Callable[[Source], Awaitable[None]]) -> Pipe:
        pipe = Pipe(parse)
        self.unpacker.pipes.append(pipe)
        return pipe


class _Tee(Generic[N]):
    """A container's bytes to its own sink (its blob) and to its reader. A reader's failure is recorded
    on the container and does not stop the sink; the handler's own failures (storage) propagate."""

    def __init__(self, unpacker: Unpacker[N], node: N, sink: Sink | None, reader: Sink) -> None:
        self.unpacker = unpacker
        self.node = node
        self.sink = sink
        self.reader: Sink | None = reader
        self.refused = False

    async def write(self, data: bytes) -> None:
        if self.sink is not None:
            await self.sink.write(data)
        if self.reader is not None:
            try:
                await self.reader.write(data)
            except UnpackError as exc:
                await self._failed(exc)

    async def close(self) -> None:
        if self.reader is not None:
            try:
                await self.reader.close()
            except UnpackError as exc:
                await self._failed(exc)
        if self.sink is not None and not self.refused:
            await self.sink.close()

    async def _failed(self, exc: UnpackError) -> None:
        self.reader = None
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, Refused):
            self.refused = True
            await self.unpacker.handler.discard(self.node, reason)
        else:
            self.unpacker.handler.note(self.node, Problem(reason))


class Unpacker(Generic[N]):
    """The unpacking of one mail: options, keys, and the archive limits' budget it shares."""

    def __init__(self, handler: Handler[N], options: UnpackOptions, keys: Keys | None = None) -> None:
        self.handler = handler
        self.options = options
        self.keys = keys
        self.budget = ArchiveBudget(options.archive)
        self.pipes: list[Pipe] = []

    def kind(self, found: Found, depth: int) -> str | None:
        """The container kind to open `found` as, at `depth`, or None."""
        kind = kind_of(found.name, found.content_type)
        if kind is None or depth > self.options.max_depth:
            return None
        if (kind == "message" and not self.options.attached_mail) or (kind == "zip" and not self.options.archives):
            return None
        return kind

    def _reader(self, kind: str, node: N, depth: int, body: BodyHook | None = None) -> Sink:
        scope = _Scope(self, node, depth + 1, body)
        if kind == "message":
            return MimeReader(scope)
        if kind == "smime":
            return SmimeReader(scope, self.keys)
        if kind == "tnef":
            return TnefReader(scope)
        return ZipReader(scope, self.budget)

    def tee(
        self, node: N, kind: str | None, depth: int, sink: Sink | None, body: BodyHook | None = None
    ) -> Sink | None:
        """Where the bytes of a file at `depth` go: its sink, and its reader when it is a container."""
        if kind is None:
            return sink
        return _Tee(self, node, sink, self._reader(kind, node, depth, body))

    def attachment(self, node: N, found: Found, sink: Sink | None) -> Sink | None:
        """A mail's own attachment (depth 1), whose node and sink the caller made."""
        return self.tee(node, self.kind(found, 1), 1, sink)

    def mail(self, node: N, body: BodyHook | None = None) -> Sink:
        """A whole raw mail's MIME (IMAP, POP3): its parts are the files at depth 1. `body`, if given, is offered
        the text parts of the mail's own body (not those of an attached mail)."""
        return MimeReader(_Scope(self, node, 1, body))

    async def abort(self) -> None:
        """Stop the readers still running (the mail's stream broke off)."""
        for pipe in self.pipes:
            pipe.abort()
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                await pipe.wait_aborted()
