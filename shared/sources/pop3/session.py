"""One POP3 connection to one maildrop: its messages by UIDL, a message spooled and streamed, DELE.

Built on the standard library's `poplib` (no maintained library does more for POP3), run in worker
threads. Its multi-line commands collect every line in a list and refuse lines over 2,048 bytes,
so RETR and TOP are read here instead, line by line from the same connection, into a spool file:
memory stays bounded whatever the size, and a message is handed over only once it arrived whole.

The rules (RFC 1939, RFC 2595, RFC 2449):
- `pop3://` requires STLS before USER/PASS; a server that does not list it in CAPA is refused.
- Messages are named by UIDL, which stays the same across sessions; message numbers do not.
- Mail stays on the server unless the `delete` after-ingest action asks for DELE; deletions take
  effect at QUIT only, so a connection that breaks first deletes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import poplib
import ssl
import tempfile
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from ...errors import MailMessageGone, MailServerError, MailTlsRefused
from ...settings import MailAccount
from ..common import CHUNK_BYTES, SOCKET_TIMEOUT_SECONDS, Login, classify, connection_error, fingerprint, tls_context

T = TypeVar("T")

# The longest piece of a line read at once; a longer line is copied in pieces.
_LINE_PIECE = 64 * 1024
# A message's header, as TOP n 0 returns it, is refused beyond this (it is read into memory).
MAX_HEADER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Pop3Entry:
    number: int
    uidl: str
    size: int


@dataclass(frozen=True)
class Pop3Info:
    uidl: str
    size: int
    fingerprint: str
    header: bytes


class Pop3Session:
    """Open with `await Pop3Session.open(account, login)`; `await session.close()` sends QUIT."""

    def __init__(self, account: MailAccount, client: poplib.POP3) -> None:
        self.account = account
        self._client = client
        self._lock = asyncio.Lock()
        self._numbers: dict[str, Pop3Entry] = {}
        self._listed = False
        self._quit = False
        # A command failed or was cancelled (its thread may still use the socket, or a multi-line answer was
        # left unread): never another command, not even QUIT (`close` drops it), and never back into a pool.
        self.broken = False

    @classmethod
    async def open(
        cls, account: MailAccount, login: Login, *, read_timeout: float = SOCKET_TIMEOUT_SECONDS
    ) -> Pop3Session:
        return cls(account, await asyncio.to_thread(_connect, account, login, read_timeout))

    async def quit(self) -> None:
        """QUIT now, so that the deletions take effect (UPDATE state); a server that does not confirm raises."""
        await self._call("QUIT", self._client.quit)
        self._quit = True

    @property
    def ended(self) -> bool:
        """QUIT was sent (after a DELE), or the connection broke: the session can do nothing more."""
        return self._quit or self.broken

    async def close(self) -> None:
        """QUIT: the server applies deletions (UPDATE state) and closes. A broken connection is just dropped,
        deleting nothing."""
        if self._quit:
            return
        if self.broken:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._client.close)
            return
        try:
            await self._call("QUIT", self._client.quit)
        except MailServerError:
            with contextlib.suppress(OSError):
                self._client.close()

    async def __aenter__(self) -> Pop3Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def secure(self) -> bool:
        return isinstance(self._client.sock, ssl.SSLSocket)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            try:
                return await asyncio.to_thread(fn, *args)
            except poplib.error_proto as exc:
                self.broken = True  # an -ERR, or a multi-line answer cut off or refused part way
                raise classify(self.account, f"{what}: {_text(exc)}") from None
            except (OSError, ssl.SSLError) as exc:
                self.broken = True
                raise connection_error(self.account, exc) from exc
            except BaseException:  # cancelled: the worker thread may still be in the middle of the command
                self.broken = True
                raise

    async def noop(self) -> None:
        """NOOP: whether the server still holds the connection (a session kept idle may have been dropped)."""
        await self._call("NOOP", self._client.noop)

    # -- reading ---------------------------------------------------------------------------------
    async def listing(self) -> list[Pop3Entry]:
        """Every message in the maildrop: number, UIDL and size (UIDL and LIST), in maildrop order."""
        _, uidl_lines, _ = await self._call("UIDL", self._client.uidl)
        _, list_lines, _ = await self._call("LIST", self._client.list)
        sizes = dict(_pair(line) for line in list_lines)
        entries = []
        for line in uidl_lines:
            number, uidl = _pair_text(line)
            if number in sizes:
                entries.append(Pop3Entry(number, uidl, int(sizes[number])))
        self._numbers = {e.uidl: e for e in entries}
        self._listed = True
        return entries

    async def lists(self, uidl: str) -> bool:
        """Whether the maildrop as this session sees it holds the message. The view is fixed at login (RFC 1939):
        mail that arrived since is not in it, so only a session signed in after the request was queued can tell
        that a message is gone."""
        if not self._listed:
            await self.listing()
        return uidl in self._numbers

    async def describe(self, entries: Sequence[Pop3Entry]) -> list[Pop3Info]:
        """Each message's header (TOP n 0) and fingerprint."""
        infos = []
        for entry in entries:
            header = await self._call("TOP", _top_header, self._client, entry.number)
            infos.append(Pop3Info(entry.uidl, entry.size, fingerprint(header, entry.size), header))
        return infos

    async def stream(self, uidl: str, *, chunk: int = CHUNK_BYTES) -> AsyncGenerator[bytes, None]:
        """The message's MIME: RETR spooled to a temporary file (in memory up to one chunk), then read back in
        pieces of at most `chunk` bytes."""
        entry = await self._entry(uidl)
        with tempfile.SpooledTemporaryFile(max_size=chunk) as spool:
            await self._call("RETR", _retr, self._client, entry.number, spool)
            await asyncio.to_thread(spool.seek, 0)
            while piece := await asyncio.to_thread(spool.read, chunk):
                yield piece

    async def find(self, fingerprint: str) -> str | None:
        """The UIDL of the message with this fingerprint: how a message is found again when the server's
        UIDLs changed (a migration, a rebuilt index)."""
        for start in range(0, len(entries := await self.listing()), 50):
            for info in await self.describe(entries[start : start + 50]):
                if info.fingerprint == fingerprint:
                    return info.uidl
        return None

    async def delete(self, uidl: str) -> None:
        """DELE the message; the server removes it at QUIT (`close`)."""
        entry = await self._entry(uidl)
        await self._call("DELE", self._client.dele, entry.number)

    async def _entry(self, uidl: str) -> Pop3Entry:
        if not self._listed:
            await self.listing()
        entry = self._numbers.get(uidl)
        if entry is None:
            raise MailMessageGone(str(self.account), f"UIDL {uidl} is no longer in the maildrop")
        return entry


def _connect(account: MailAccount, login: Login, timeout: float) -> poplib.POP3:
    context = tls_context()
    try:
        if account.implicit_tls:
            client: poplib.POP3 = poplib.POP3_SSL(account.host, account.port, context=context, timeout=timeout)
        else:
            client = poplib.POP3(account.host, account.port, timeout=timeout)
    except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
        raise connection_error(account, exc) from exc
    except poplib.error_proto as exc:  # a greeting of -ERR
        raise classify(account, _text(exc)) from None
    try:
        if not account.implicit_tls:
            if "STLS" not in _capabilities(client):
                raise MailTlsRefused(
                    str(account), "the server offers no STLS; pop3:// requires it (use pop3s:// for TLS on connect)"
                )
            client.stls(context)
        _login(client, login)
        return client
    except BaseException as exc:
        with contextlib.suppress(OSError):
            client.close()
        if isinstance(exc, MailServerError):
            raise
        if isinstance(exc, ssl.SSLError | ssl.CertificateError | OSError):
            raise connection_error(account, exc) from exc
        if isinstance(exc, poplib.error_proto):
            raise classify(account, _text(exc), login=True) from None
        raise


def _capabilities(client: poplib.POP3) -> dict[str, list[str]]:
    try:
        return client.capa()
    except poplib.error_proto:
        return {}  # no CAPA (RFC 2449): nothing optional, STLS included


def _login(client: poplib.POP3, login: Login) -> None:
    if login.token is not None:
        # SASL XOAUTH2 with an initial response (RFC 5034); a refusal comes as a `+` challenge, answered empty.
        raw = f"user={login.user}\1auth=Bearer {login.token}\1\1".encode()
        client._putcmd("AUTH XOAUTH2 " + base64.b64encode(raw).decode())  # type: ignore[attr-defined]
        answer, _ = client._getline()  # type: ignore[attr-defined]
        if answer == b"+" or answer.startswith(b"+ "):  # a challenge, not +OK
            client._putcmd("")  # type: ignore[attr-defined]
            answer, _ = client._getline()  # type: ignore[attr-defined]
        if not answer.startswith(b"+OK"):
            raise poplib.error_proto(answer)
        return
    assert login.password is not None
    client.user(login.user)
    client.pass_(login.password)


def _command(client: poplib.POP3, line: str) -> None:
    """Send a command whose answer is multi-line, and check its status line."""
    client._putcmd(line)  # type: ignore[attr-defined]
    answer, _ = client._getline()  # type: ignore[attr-defined]
    if not answer.startswith(b"+OK"):
        raise poplib.error_proto(answer)


def _read_multiline(client: poplib.POP3, write: Callable[[bytes], Any], limit: int | None = None) -> int:
    """The data of a multi-line answer up to the lone `.`, dot-stuffing undone (RFC 1939 3), CRLF kept."""
    stream: IO[bytes] = client.file
    at_line_start, total = True, 0
    while True:
        raw = stream.readline(_LINE_PIECE)
        if not raw:
            raise poplib.error_proto(b"-ERR connection closed in the middle of a message")
        if at_line_start and raw in (b".\r\n", b".\n"):
            return total
        if at_line_start and raw.startswith(b"."):
            raw = raw[1:]
        at_line_start = raw.endswith(b"\n")
        total += len(raw)
        if limit is not None and total > limit:
            raise poplib.error_proto(f"-ERR more than {limit} bytes".encode())
        write(raw)


def _retr(client: poplib.POP3, number: int, sink: IO[bytes]) -> int:
    _command(client, f"RETR {number}")
    return _read_multiline(client, sink.write)


def _top_header(client: poplib.POP3, number: int) -> bytes:
    _command(client, f"TOP {number} 0")
    parts: list[bytes] = []
    _read_multiline(client, parts.append, MAX_HEADER_BYTES)
    return b"".join(parts)


def _pair(line: bytes) -> tuple[int, bytes]:
    number, _, value = line.strip().partition(b" ")
    return int(number), value.strip()


def _pair_text(line: bytes) -> tuple[int, str]:
    number, value = _pair(line)
    return number, value.decode("ascii", "replace")  # UIDL is 0x21 to 0x7E (RFC 1939 7)


def _text(exc: poplib.error_proto) -> str:
    value = exc.args[0] if exc.args else b""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
