"""A queued fetch request (`mail-fetch`) back to the message's bytes: `open_fetched` yields the MIME as an
async iterator of chunks, from the same account folder, after checking the request still names it, and
the after-ingest actions on the same connection, mapped to the protocol (IMAP: `\\Seen`, a keyword, MOVE;
POP3: DELE, then QUIT at once). The connection comes from the account's pool (`pool.py`) and goes back to
it afterwards."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..errors import MailMessageGone, QueueMessageError
from ..pipeline.rules import AfterIngest
from ..settings import MailAccount, Settings
from .common import Login
from .imap.session import ImapSession
from .pool import AccountPool
from .pop3.session import Pop3Session


@dataclass(frozen=True)
class FetchRequest:
    account: str  # MailAccount.key
    protocol: str
    folder: str
    fingerprint: str
    size: int
    uidvalidity: int | None = None  # IMAP
    uid: int | None = None  # IMAP
    uidl: str | None = None  # POP3
    message_id: str = ""
    queued_at: str | None = None  # when the poll queued it (Graph's time form)

    @classmethod
    def parse(cls, body: str | bytes) -> FetchRequest:
        try:
            data = json.loads(body)
            if data.get("type") != "fetch":
                raise ValueError("not a fetch request")
            request = cls(
                account=str(data["account"]),
                protocol=str(data["protocol"]),
                folder=str(data["folder"]),
                fingerprint=str(data["fingerprint"]),
                size=int(data["size"]),
                uidvalidity=int(data["uidvalidity"]) if data.get("uidvalidity") is not None else None,
                uid=int(data["uid"]) if data.get("uid") is not None else None,
                uidl=str(data["uidl"]) if data.get("uidl") is not None else None,
                message_id=str(data.get("messageId") or ""),
                queued_at=str(data["queuedAt"]) if data.get("queuedAt") else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise QueueMessageError(f"unreadable fetch request: {exc}") from None
        if (request.protocol == "imap") != (request.uid is not None and request.uidvalidity is not None):
            raise QueueMessageError("a fetch request names an IMAP message by UIDVALIDITY and UID, POP3 by UIDL")
        if request.protocol == "pop3" and request.uidl is None:
            raise QueueMessageError("a POP3 fetch request needs its UIDL")
        return request

    def account_of(self, settings: Settings) -> MailAccount:
        account = settings.account_by_key(self.account)
        if account is None:
            raise QueueMessageError(f"account {self.account} is no longer in MAILBOXES")
        return account


@dataclass(frozen=True)
class Fetched:
    """A message being read: its MIME as chunks (read once), and its after-ingest actions."""

    chunks: AsyncIterator[bytes]
    apply: Callable[[AfterIngest], Awaitable[list[str]]]

    async def after_ingest(self, actions: AfterIngest) -> list[str]:
        """Bring the message to the wanted state; what was done (nothing already so is done again)."""
        return await self.apply(actions) if actions.anything else []


@asynccontextmanager
async def open_fetched(pool: AccountPool, request: FetchRequest) -> AsyncIterator[Fetched]:
    """The requested message, on a connection from the account's pool (`pool.py`). When the folder's
    UIDVALIDITY (or the server's UIDLs) changed since the request was queued, the message is found again by
    fingerprint; MailMessageGone if it is gone."""
    account = pool.account
    async with pool.lease() as lease:
        session = lease.session
        if isinstance(session, ImapSession):
            assert request.uid is not None and request.uidvalidity is not None
            imap = session
            status = await imap.examine()  # again on a reused connection too: its view of the folder refreshed
            uid: int | None = request.uid
            if status.uidvalidity != request.uidvalidity:
                uid = await imap.find(request.fingerprint, request.message_id)
            if uid is None:
                raise MailMessageGone(str(account), f"no message with fingerprint {request.fingerprint} any more")
            found = uid

            async def imap_actions(actions: AfterIngest) -> list[str]:
                return await imap.after_ingest(status.uidvalidity, found, actions)

            chunks = imap.stream(found)
            try:
                yield Fetched(chunks, imap_actions)
            finally:
                await chunks.aclose()  # a stream left part way is finished before the connection is reused
        else:
            assert request.uidl is not None
            pop3 = session
            if lease.reused and not await pop3.lists(request.uidl):
                # Signed in before the message arrived, perhaps: only a session newer than it can say it is gone.
                renewed = await lease.renew()
                assert isinstance(renewed, Pop3Session)
                pop3 = renewed
            uidl: str | None = request.uidl
            if not await pop3.lists(request.uidl):
                uidl = await pop3.find(request.fingerprint)
            if uidl is None:
                raise MailMessageGone(str(account), f"no message with fingerprint {request.fingerprint} any more")
            name = uidl
            done = pop3

            async def pop3_actions(actions: AfterIngest) -> list[str]:
                # POP3 has no flags or folders: only an explicit delete does anything. QUIT at once, so that a
                # mail is marked done only once its deletion took effect (and the session is not pooled again).
                if not actions.delete:
                    return []
                await done.delete(name)
                await done.quit()
                return ["delete"]

            chunks = pop3.stream(name)
            try:
                yield Fetched(chunks, pop3_actions)
            finally:
                await chunks.aclose()


@asynccontextmanager
async def open_message(
    account: MailAccount, login: Login, request: FetchRequest
) -> AsyncIterator[AsyncIterator[bytes]]:
    """The requested message's MIME as chunks (`open_fetched` without the actions), on a connection of its own."""

    async def credentials() -> Login:
        return login

    pool = AccountPool(account, 1, credentials)
    try:
        async with open_fetched(pool, request) as fetched:
            yield fetched.chunks
    finally:
        await pool.aclose()
