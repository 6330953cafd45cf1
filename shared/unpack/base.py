"""What every unpacker shares: the sink a file's bytes go to, what a container reports, and the pipe that
lets a parser written as straight-line code (`await source.read(n)`) be fed chunk by chunk.

Containers are fed (push) because their bytes arrive from a stream that also goes to storage: an
attachment's `/$value` feeds its blob and its unpacker at once. MIME is parsed line by line as it is
pushed; CMS, zip and TNEF are parsed by a task reading from a `Pipe`, which holds at most one batch
of bytes, so memory stays flat whatever the container's size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .trust import TrustAnchors

PIPE_BATCH = 64 * 1024


class Sink(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class UnpackError(Exception):
    """The container's bytes are not what they claim (truncated, corrupt, unsupported): recorded on the
    container, whose own file is kept; what was found before stays."""


class Refused(UnpackError):
    """The container must not be unpacked at all (a zip bomb): nothing found in it is kept."""


@dataclass(frozen=True)
class Found:
    """A file found inside a container. `name` is as the container gives it (a zip's path folded into
    one name), `path` the zip entry's path as recorded, `skipped` why the container cannot hand over
    its bytes (an encrypted zip entry): it is then recorded, never opened."""

    name: str
    content_type: str
    inline: bool = False
    path: str | None = None
    skipped: str | None = None
    whole: bool = False  # the container's whole content, not one of its parts (a raw mail's only entity)
    protected: str | None = None  # why it cannot be read (an encrypted zip entry), known to its container
    damaged: str | None = None  # its container is damaged: the file was read as far as it goes, to be checked


@dataclass(frozen=True)
class Signature:
    """An S/MIME signature's verdict. `status` `valid` means only that the content is unchanged since the key of
    the certificate named as `signer` signed it (`intact`); whether that signer is to be believed is `trusted`:
    its chain validates to a trust anchor at the signing time (`trust.py`), `trust_reason` says why not."""

    status: Literal["valid", "invalid", "unverifiable"]
    reason: str
    signer: str | None = None
    trusted: bool = False
    trust_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        chain = "validated to the system's CAs and SMIME_CA_CERTIFICATES at the signing time: see trusted"
        intact = {"valid": True, "invalid": False}.get(self.status)
        fields = {"status": self.status, "reason": self.reason, "signer": self.signer, "chain": chain}
        why = self.trust_reason if intact else "not judged: the signature does not show the content as signed"
        return {**fields, "intact": intact, "trusted": self.trusted and bool(intact), "trustReason": why}


@dataclass(frozen=True)
class Encrypted:
    """An S/MIME envelope: who it was for (issuer and serial, or key id, of each recipient's certificate)
    and whether a key in SMIME_CERTIFICATES opened it."""

    recipients: tuple[str, ...]
    decrypted: bool
    reason: str | None = None
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        fields = {"recipients": list(self.recipients), "decrypted": self.decrypted, "reason": self.reason}
        return {k: v for k, v in {**fields, "key": self.key}.items() if v is not None}


@dataclass(frozen=True)
class Problem:
    """The container could not be read to the end, or only partly opened (a limit): the reason."""

    reason: str


@dataclass(frozen=True)
class Damaged:
    """The container is damaged but readable (a winmail.dat whose checksums fail, which Outlook-compatible
    readers still open): what it holds was extracted, and each file found in it is marked to be checked."""

    reason: str


Note = Signature | Encrypted | Problem | Damaged


class Scope(Protocol):
    """A container's reader's view of the rest: where each file it finds goes, and what to record on it."""

    async def found(self, item: Found) -> Sink | None:
        """The sink for a file found in this container (None: its bytes are read past)."""
        ...

    async def body(self, content_type: str, charset: str | None) -> Sink | None:
        """The sink for a text part of the mail's own body (`text/plain`, `text/html`), its transfer encoding
        undone, its bytes still in `charset`; None: read past (the body of an attached mail, or not wanted)."""
        ...

    def note(self, note: Note) -> None: ...

    @property
    def trust(self) -> TrustAnchors:
        """Who may vouch for a signer (`trust.py`)."""
        ...

    def pipe(self, parse: Callable[[Source], Awaitable[None]]) -> Pipe: ...


class Truncated(UnpackError):
    def __init__(self, what: str = "the data") -> None:
        super().__init__(f"{what} ends early (truncated)")


_END = b""


class Source:
    """The reading end of a `Pipe`. Reads advance a position in the buffer; what was read is dropped
    when the next batch comes in, so small reads (BER headers) cost no copying of the rest."""

    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self._queue = queue
        self._buf = bytearray()
        self._pos = 0  # in _buf: what is before was read
        self._offset = 0  # bytes handed out so far
        self.ended = False

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def _available(self) -> int:
        return len(self._buf) - self._pos

    async def _more(self) -> bool:
        if self.ended:
            return False
        chunk = await self._queue.get()
        if not chunk:  # _END
            self.ended = True
            return False
        del self._buf[: self._pos]
        self._pos = 0
        self._buf += chunk
        return True

    async def read(self, n: int, what: str = "the data") -> bytes:
        """Exactly `n` bytes."""
        while self._available < n:
            if not await self._more():
                raise Truncated(what)
        return self._take(n)

    async def read_some(self, limit: int) -> bytes:
        """Up to `limit` bytes, at least one unless the end is reached (then b"")."""
        if not self._available and not await self._more():
            return b""
        return self._take(min(limit, self._available))

    async def peek(self, n: int) -> bytes:
        """Up to `n` bytes, not consumed (fewer only at the end)."""
        while self._available < n and await self._more():
            pass
        return bytes(self._buf[self._pos : self._pos + n])

    def unread(self, data: bytes) -> None:
        """Put bytes back in front (a decompressor read past its stream's end)."""
        self._buf[self._pos : self._pos] = data
        self._offset -= len(data)

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        self._offset += n
        return data

    async def drain(self) -> None:
        self._buf.clear()
        self._pos = 0
        while await self._more():
            self._buf.clear()


class Pipe:
    """A sink whose bytes a parser task reads. Whatever the parser leaves unread is read past; its error,
    if any, is raised by `close()`. At most one batch waits between writer and parser."""

    def __init__(self, parse: Callable[[Source], Awaitable[None]]) -> None:
        self._parse = parse
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._source = Source(self._queue)
        self._pending = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def _run(self) -> None:
        try:
            await self._parse(self._source)
        except Exception as exc:
            self._error = exc
        await self._source.drain()

    async def _hand(self, data: bytes) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await self._queue.put(data)

    async def write(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) >= PIPE_BATCH:
            batch = bytes(self._pending)
            self._pending.clear()
            await self._hand(batch)

    async def close(self) -> None:
        if self._pending:
            batch = bytes(self._pending)
            self._pending.clear()
            await self._hand(batch)
        await self._hand(_END)
        assert self._task is not None
        await self._task
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def wait_aborted(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
