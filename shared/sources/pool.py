"""Signed-in IMAP and POP3 connections, kept per account and reused across the messages the fetch worker takes:
one sign-in per account and burst, not one per message.

Providers limit both sign-ins and simultaneous connections (Gmail 15 per account, Dovecot 10 per user and
address by default) and answer a burst of either with throttling or a temporary lock-out. So:

- **The bound.** At most `MAIL_CONNECTIONS_PER_ACCOUNT` (default 4) connections per account URL (an account
  folder, `MailAccount.key`) in each process and event loop, open or in use, counted by a semaphore. The
  Functions host runs several `mail-fetch` messages at once per instance (host.json: batchSize 8 plus
  newBatchThreshold 4, so up to 12): past the bound they wait for a free connection instead of opening more.
  A connection is held from the message's first byte to its after-ingest action, so the bound is also how
  many of one account's messages an instance ingests at once. The poll keeps its own connection (one per
  account at a time, across instances: its claim), so a server sees at most the bound times the instances, plus one.
- **Reuse.** A connection goes back to the pool when the message's work ended without an exception and the
  connection is still whole; the most recently used one is taken first. One taken from the pool is checked
  with NOOP first (the server may have dropped it meanwhile); if that fails it is closed and another (or a
  new one) is taken, so a dropped connection costs one round trip, and a real failure of a new connection
  reaches the caller as before: no loop.
- **Closing.** A connection that errored (a server error, a timeout, a broken connection, a command
  cancelled part way) is closed, never pooled again; an exception anywhere in the message's work closes it
  too (the cheap way to never reuse a connection in an unknown state). Idle connections are closed after
  `IDLE_SECONDS` (60 s: well inside servers' autologout, at least 30 minutes for IMAP and 10 for POP3, and
  inside the 4 minutes after which Azure's outbound NAT forgets an idle TCP flow), a connection in use for
  `MAX_AGE_SECONDS` (15 minutes) is not pooled again (an XOAUTH2 session outlives its token, which servers
  such as Exchange Online enforce), and all of them when the Runtime closes.
- **IMAP.** Each message EXAMINEs the folder again (`fetch.py`), which refreshes a reused connection's view
  (new mail, and a changed UIDVALIDITY, which sends the request to find the message by fingerprint), and the
  after-ingest actions SELECT it; the next message's EXAMINE makes it read-only again.
- **POP3.** A session's maildrop view is fixed at login: mail that arrived later is not in its listing. So a
  reused session serves a message only when the message's UIDL is in its listing; otherwise it is closed and
  a new session (signed in after the request was queued) decides whether the message is gone. A session
  that sent DELE has sent QUIT as well (deletions take effect only then) and is closed, never pooled.

Written here rather than taken from a library: the asyncio pools on PyPI pool tasks (asyncio-pool) or
belong to one client library (asyncpg's, aiohttp's connector); none knows a POP3 view fixed at sign-in or an
IMAP connection that went away, and what is needed is a semaphore and a list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ..errors import MailServerError
from ..logs import log_event
from ..settings import MailAccount
from .common import Login
from .imap.session import ImapSession
from .pop3.session import Pop3Session

logger = logging.getLogger(__name__)

Session = ImapSession | Pop3Session
LoginSource = Callable[[], Awaitable[Login]]

# An idle connection is closed after this long (see the module's docstring for why 60 s).
IDLE_SECONDS = 60.0
# A connection in use this long is closed when its message is done rather than pooled again.
MAX_AGE_SECONDS = 15 * 60.0


@dataclass
class _Kept:
    session: Session
    opened: float = field(default_factory=time.monotonic)
    idle_since: float = 0.0


class Lease:
    """A connection taken from an account's pool for one message; `reused` when it was signed in before."""

    def __init__(self, pool: AccountPool, kept: _Kept, reused: bool) -> None:
        self._pool = pool
        self._kept = kept
        self.reused = reused

    @property
    def session(self) -> Session:
        return self._kept.session

    async def renew(self) -> Session:
        """Close this connection and sign in anew in its place (the same slot): a POP3 session whose view
        predates the message."""
        await self._pool._close(self._kept)
        self._kept = await self._pool._open()
        self.reused = False
        return self._kept.session


class AccountPool:
    """The connections of one account: at most `size` at a time, open or in use."""

    def __init__(
        self,
        account: MailAccount,
        size: int,
        login: LoginSource,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_age_seconds: float = MAX_AGE_SECONDS,
    ) -> None:
        self.account = account
        self.size = size
        self.logins = 0  # sign-ins so far (the bench prints it)
        self._login = login
        self._idle_seconds = idle_seconds
        self._max_age = max_age_seconds
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Kept] = []  # the most recently used last
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Lease]:
        """A signed-in connection, reused or new; back into the pool afterwards if it is still whole."""
        async with self._slots:
            lease = await self._take()
            try:
                yield lease
            except BaseException:
                await self._close(lease._kept)
                raise
            kept = lease._kept
            if self._closed or _ended(kept.session) or time.monotonic() - kept.opened > self._max_age:
                await self._close(kept)
            else:
                kept.idle_since = time.monotonic()
                self._idle.append(kept)
                self._reap_later()

    async def _take(self) -> Lease:
        # Holding a slot: every connection is idle or held by a slot holder, and one is opened only when none
        # is idle, so there are never more than `size`.
        while self._idle:
            kept = self._idle.pop()
            if time.monotonic() - kept.idle_since >= self._idle_seconds:
                await self._close(kept)
                continue
            try:
                await kept.session.noop()
            except MailServerError as exc:
                log_event(logger, "source.connection_dropped", account=str(self.account), reason=str(exc))
                await self._close(kept)
                continue
            except BaseException:  # cancelled: not left open outside the pool
                await self._close(kept)
                raise
            return Lease(self, kept, reused=True)
        return Lease(self, await self._open(), reused=False)

    async def _open(self) -> _Kept:
        login = await self._login()
        if self.account.protocol == "imap":
            session: Session = await ImapSession.open(self.account, login)
        else:
            session = await Pop3Session.open(self.account, login)
        self.logins += 1
        return _Kept(session)

    async def _close(self, kept: _Kept) -> None:
        with contextlib.suppress(MailServerError):  # closing: a failure leaves nothing to undo
            await kept.session.close()

    def _reap_later(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        """Close idle connections once they have been idle IDLE_SECONDS; ends when none is idle."""
        while self._idle and not self._closed:
            due = min(k.idle_since for k in self._idle) + self._idle_seconds
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            # A slot while closing: the connection counts until its LOGOUT is through.
            async with self._slots:
                now = time.monotonic()
                expired = [k for k in self._idle if now - k.idle_since >= self._idle_seconds]
                for kept in expired:
                    self._idle.remove(kept)
                    await self._close(kept)

    async def aclose(self) -> None:
        """Close the idle connections; those in use are closed when their message is done."""
        self._closed = True
        if self._reaper is not None and not self._reaper.done():
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        idle, self._idle = self._idle, []
        for kept in idle:
            await self._close(kept)


def _ended(session: Session) -> bool:
    if isinstance(session, Pop3Session):
        return session.ended
    return session.broken


class SessionPools:
    """The pools of one Runtime (one per process and event loop), one per account, made on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pools: dict[str, AccountPool] = {}

    def pool(self, account: MailAccount, login: LoginSource) -> AccountPool:
        """The account's pool; `login` signs a new connection in (its credentials are read only then)."""
        pool = self._pools.get(account.key)
        if pool is None:
            pool = self._pools[account.key] = AccountPool(account, self.size, login)
        return pool

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
