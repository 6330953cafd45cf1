"""One IMAP connection to one account folder: what is new, a message as a stream, after-ingest actions.

Built on `imapclient` (maintained, parses FETCH responses, literals and odd server answers, has
STARTTLS, SASL and MOVE/UIDPLUS helpers). It is synchronous, so each command runs in a worker thread
(`asyncio.to_thread`), one at a time per connection. The asyncio IMAP library (aioimaplib) returns
raw response lines and leaves FETCH parsing to the caller, which is where servers differ most.

The rules (RFC 3501, RFC 9051):
- The folder is opened with EXAMINE (read-only), never SELECT, and bodies are read with
  BODY.PEEK[]<offset.length>, never RFC822 or BODY[], which would set \\Seen: the import changes no flag.
- `UID SEARCH UID n:*` always returns the highest UID, even when it is below n (RFC 3501 6.4.8):
  results at or below the cursor are dropped.
- After-ingest actions are the only writes: they SELECT the folder, check UIDVALIDITY, and use
  UID STORE, MOVE (RFC 6851) or COPY + UID EXPUNGE (UIDPLUS, RFC 4315). Never a bare EXPUNGE, which
  would also remove what other clients marked \\Deleted, and never CLOSE, which expunges too.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import logging
import re
import socket
import ssl
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from ...errors import MailMessageGone, MailServerError, MailTlsRefused
from ...logs import log_event
from ...pipeline.rules import AfterIngest
from ...settings import MailAccount
from ..common import (
    CHUNK_BYTES,
    SOCKET_TIMEOUT_SECONDS,
    Login,
    classify,
    connection_error,
    fingerprint,
    header_fields,
    tls_context,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The header fields a fingerprint is made of, fetched without the body.
_HEADER_ITEM = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)]"
_HEADER_KEY = b"BODY[HEADER.FIELDS (MESSAGE-ID DATE FROM SUBJECT)]"
# Messages described per FETCH command when listing many (a recreated folder, a backfill).
DESCRIBE_BATCH = 200
# Characters an IMAP keyword (an atom, RFC 3501 9) may not contain.
_NOT_ATOM = re.compile(r'[\x00-\x20\x7f(){%*"\\\]]')


@dataclass(frozen=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int | None
    exists: int


@dataclass(frozen=True)
class MessageInfo:
    uid: int
    size: int
    fingerprint: str
    internaldate: datetime | None
    message_id: str = ""  # as the header has it, to find the message again by SEARCH HEADER


def imap_keyword(category: str) -> str:
    """A category as an IMAP keyword: an atom, so characters an atom cannot hold become `_`."""
    return _NOT_ATOM.sub("_", category) or "_"  # `\` too: a category never becomes a system flag


class ImapSession:
    """Open with `await ImapSession.open(account, login)`; `await session.close()` logs out."""

    def __init__(self, account: MailAccount, client: Any) -> None:
        self.account = account
        self._client = client
        self._lock = asyncio.Lock()  # imapclient is one command at a time
        # The connection broke, or a command was cancelled while its thread may still use the socket:
        # never another command, not even LOGOUT (`close` drops it), and never back into a pool.
        self.broken = False

    # -- connection ----------------------------------------------------------------------------
    @classmethod
    async def open(
        cls, account: MailAccount, login: Login, *, read_timeout: float = SOCKET_TIMEOUT_SECONDS
    ) -> ImapSession:
        client = await asyncio.to_thread(_connect, account, login, read_timeout)
        return cls(account, client)

    async def close(self) -> None:
        """LOGOUT (never CLOSE: it would expunge); a connection already dead is just dropped."""
        if self.broken:
            await asyncio.to_thread(_shutdown, self._client)
            return
        try:
            await asyncio.to_thread(self._client.logout)
        except Exception:  # a failed logout leaves nothing to undo
            await asyncio.to_thread(_shutdown, self._client)

    async def __aenter__(self) -> ImapSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def secure(self) -> bool:
        """Whether the connection is under TLS (implicit or after STARTTLS)."""
        return isinstance(self._client.socket(), ssl.SSLSocket)

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            try:
                return await asyncio.to_thread(fn, *args)
            except imaplib.IMAP4.abort as exc:  # BYE, or the connection broke mid-command
                self.broken = True
                raise classify(self.account, f"{what}: {exc}") from None
            except imaplib.IMAP4.error as exc:  # NO or BAD (imapclient's errors derive from this): answered whole
                raise classify(self.account, f"{what}: {exc}") from None
            except (OSError, ssl.SSLError) as exc:
                self.broken = True
                raise connection_error(self.account, exc) from exc
            except BaseException:  # cancelled: the worker thread may still be in the middle of the command
                self.broken = True
                raise

    async def noop(self) -> None:
        """NOOP: whether the server still holds the connection (a session kept idle may have been dropped)."""
        await self._call("NOOP", self._client.noop)

    # -- reading (read-only) ---------------------------------------------------------------------
    async def examine(self, folder: str | None = None) -> FolderStatus:
        """Open the folder read-only (EXAMINE) and return what identifies its UIDs."""
        name = await self._server_name(folder or self.account.folder)
        info = await self._call("EXAMINE", self._client.select_folder, name, True)
        return _status(self.account, info)

    async def new_uids(self, after_uid: int) -> list[int]:
        """UIDs above `after_uid`, ascending. `n:*` returns the last message even below n: dropped."""
        found = await self._call("UID SEARCH", self._client.search, ["UID", f"{after_uid + 1}:*"])
        return sorted(uid for uid in found if uid > after_uid)

    async def uids_since(self, day: date) -> list[int]:
        """UIDs of messages whose internal date is on or after `day` (SEARCH SINCE is by day, RFC 3501)."""
        found = await self._call("UID SEARCH", self._client.search, ["SINCE", day])
        return sorted(found)

    async def describe(self, uids: Sequence[int]) -> list[MessageInfo]:
        """Size, internal date and fingerprint of each message that still exists, in UID order."""
        infos: list[MessageInfo] = []
        for start in range(0, len(uids), DESCRIBE_BATCH):
            batch = list(uids[start : start + DESCRIBE_BATCH])
            items = ["RFC822.SIZE", "INTERNALDATE", _HEADER_ITEM]
            response = await self._call("UID FETCH", self._client.fetch, batch, items)
            for uid in batch:
                data = response.get(uid)
                if not data or b"RFC822.SIZE" not in data:
                    continue  # expunged since it was listed
                size = int(data[b"RFC822.SIZE"])
                header = data.get(_HEADER_KEY) or b""
                when = data.get(b"INTERNALDATE")
                message_id = header_fields(header).get("message-id", b"").decode("ascii", "replace")
                infos.append(MessageInfo(uid, size, fingerprint(header, size), _utc(when), message_id))
        return infos

    async def find(self, fingerprint: str, message_id: str) -> int | None:
        """The UID of the message with this fingerprint, found by its Message-ID (or, without one, among all
        messages): how a message is found again after the folder's UIDVALIDITY changed."""
        if message_id:
            found = await self._call("UID SEARCH", self._client.search, ["HEADER", "Message-ID", message_id])
        else:
            found = await self._call("UID SEARCH", self._client.search, ["ALL"])
        for info in await self.describe(sorted(found)):
            if info.fingerprint == fingerprint:
                return info.uid
        return None

    async def stream(self, uid: int, *, chunk: int = CHUNK_BYTES) -> AsyncGenerator[bytes, None]:
        """The message's whole MIME in pieces of at most `chunk` bytes, by BODY.PEEK[]<offset.length>:
        memory stays bounded whatever the size, and \\Seen is not set."""
        offset = 0
        while True:
            item = f"BODY.PEEK[]<{offset}.{chunk}>"
            response = await self._call("UID FETCH", self._client.fetch, [uid], [item])
            data = response.get(uid)
            if data is None:
                raise MailMessageGone(str(self.account), f"UID {uid} is no longer in {self.account.folder}")
            piece = _body_piece(data, offset)
            if piece:
                yield piece
                offset += len(piece)
            if len(piece) < chunk:
                return  # RFC 3501 6.4.5: a partial at or past the end is short or empty

    # -- after ingest (the only writes) ------------------------------------------------------------
    async def after_ingest(self, uidvalidity: int, uid: int, actions: AfterIngest) -> list[str]:
        """Mark read, set a category's keyword, move; each skipped when already so. Returns what was done."""
        if not actions.anything:
            return []
        name = await self._server_name(self.account.folder)
        info = await self._call("SELECT", self._client.select_folder, name, False)
        status = _status(self.account, info)
        if status.uidvalidity != uidvalidity:
            raise MailMessageGone(str(self.account), f"UIDVALIDITY changed ({uidvalidity} -> {status.uidvalidity})")
        flags_now = await self._call("UID FETCH", self._client.fetch, [uid], ["FLAGS"])
        if uid not in flags_now:
            raise MailMessageGone(str(self.account), f"UID {uid} is no longer in {self.account.folder}")
        flags = set(flags_now[uid].get(b"FLAGS", ()))
        done: list[str] = []
        if actions.mark_read and b"\\Seen" not in flags:
            await self._call("UID STORE", self._client.add_flags, [uid], [b"\\Seen"], True)
            done.append("mark-read")
        if actions.category:
            keyword = imap_keyword(actions.category).encode()
            permanent = set(info.get(b"PERMANENTFLAGS", ()))
            if keyword in flags:
                pass
            elif b"\\*" in permanent or keyword in permanent:
                await self._call("UID STORE", self._client.add_flags, [uid], [keyword], True)
                done.append(f"category:{actions.category}")
            else:
                log_event(
                    logger,
                    "source.keyword_not_kept",
                    logging.WARNING,
                    account=str(self.account),
                    keyword=keyword.decode(),
                )
        if actions.move_to:
            await self._move(uid, actions.move_to)
            done.append(f"move:{actions.move_to}")
        return done

    async def _move(self, uid: int, path: str) -> None:
        target = await self._server_name(path)
        if not await self._call("LIST", self._client.folder_exists, target):
            await self._call("CREATE", self._client.create_folder, target)
        if await self._call("CAPABILITY", self._client.has_capability, "MOVE"):
            await self._call("UID MOVE", self._client.move, [uid], target)
        elif await self._call("CAPABILITY", self._client.has_capability, "UIDPLUS"):
            await self._call("UID COPY", self._client.copy, [uid], target)
            await self._call("UID STORE", self._client.add_flags, [uid], [b"\\Deleted"], True)
            await self._call("UID EXPUNGE", self._client.uid_expunge, [uid])
        else:
            raise MailServerError(
                str(self.account),
                "cannot move: the server has neither MOVE nor UIDPLUS, and a bare EXPUNGE would also remove "
                "mail other clients marked deleted",
            )

    async def _server_name(self, path: str) -> str:
        """A `/`-separated folder path in the server's hierarchy delimiter (`.` on some servers)."""
        if path.upper() == "INBOX" or "/" not in path:
            return path
        delimiter = await self._call("LIST", _delimiter, self._client)
        return path.replace("/", delimiter) if delimiter else path


def _connect(account: MailAccount, login: Login, timeout: float) -> Any:
    """TLS first (implicit, or STARTTLS, which is then required), then LOGIN / AUTHENTICATE."""
    from imapclient import IMAPClient

    context = tls_context()
    try:
        client = IMAPClient(account.host, account.port, ssl=account.implicit_tls, ssl_context=context, timeout=timeout)
    except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
        raise connection_error(account, exc) from exc
    except imaplib.IMAP4.error as exc:  # a greeting of BYE: e.g. too many connections
        raise classify(account, str(exc)) from None
    client.normalise_times = False  # INTERNALDATE with its zone, not as naive local time
    try:
        if not account.implicit_tls:
            if not client.has_capability("STARTTLS"):
                raise MailTlsRefused(
                    str(account), "the server offers no STARTTLS; imap:// requires it (use imaps:// for TLS on connect)"
                )
            client.starttls(context)
        _login(account, client, login)
        return client
    except BaseException as exc:
        _shutdown(client)
        if isinstance(exc, MailServerError):
            raise
        if isinstance(exc, ssl.SSLError | ssl.CertificateError | socket.timeout | OSError):
            raise connection_error(account, exc) from exc
        if isinstance(exc, imaplib.IMAP4.error):
            raise classify(account, str(exc), login=True) from None
        raise


def _login(account: MailAccount, client: Any, login: Login) -> None:
    if login.token is not None:
        client.sasl_login("XOAUTH2", _xoauth2(login.user, login.token))
    elif client.has_capability("AUTH=PLAIN"):
        client.plain_login(login.user, login.password)  # UTF-8 safe, unlike LOGIN's quoted string
    elif client.has_capability("LOGINDISABLED"):
        raise MailTlsRefused(str(account), "the server refuses LOGIN on this connection (LOGINDISABLED)")
    else:
        client.login(login.user, login.password)


def _xoauth2(user: str, token: str) -> Callable[[bytes], bytes]:
    """SASL XOAUTH2: the token first; a second challenge carries the server's error details, answered
    empty so the server ends the exchange with NO at once (instead of waiting for the client)."""
    answers = iter((f"user={user}\1auth=Bearer {token}\1\1".encode(),))

    def respond(challenge: bytes) -> bytes:
        return next(answers, b"")

    return respond


def _shutdown(client: Any) -> None:
    with contextlib.suppress(Exception):  # closing a socket that may already be gone
        client.shutdown()


def _delimiter(client: Any) -> str:
    listed = client.list_folders("", "")
    delimiter = listed[0][1] if listed else b"/"
    return delimiter.decode() if isinstance(delimiter, bytes) else str(delimiter or "/")


def _status(account: MailAccount, info: dict[bytes, Any]) -> FolderStatus:
    if b"UIDVALIDITY" not in info:
        raise MailServerError(str(account), "the server sent no UIDVALIDITY for the folder")
    uidnext = info.get(b"UIDNEXT")
    return FolderStatus(int(info[b"UIDVALIDITY"]), int(uidnext) if uidnext is not None else None, int(info[b"EXISTS"]))


def _body_piece(data: dict[bytes, Any], offset: int) -> bytes:
    """The partial body in a FETCH response. Servers name it `BODY[]<offset>`; some drop the origin."""
    for key in (f"BODY[]<{offset}>".encode(), b"BODY[]"):
        if key in data:
            value = data[key]
            return bytes(value) if value is not None else b""
    for key, value in data.items():
        if isinstance(key, bytes) and key.startswith(b"BODY[]"):
            return bytes(value) if value is not None else b""
    return b""


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
