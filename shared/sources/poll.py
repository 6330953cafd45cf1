"""One poll of one IMAP folder or POP3 maildrop: what is new since the cursor, queued for fetching.

A poll claims the account's cursor record by ETag, so two polls of one account never overlap (a
claim older than `CLAIM` is taken to be a poll that died). For each new message, in order, it
queues a fetch request on `mail-fetch`, marks the message's fingerprint as queued, and only then
moves the cursor past it: a poll that stops anywhere (time budget, error, crash) leaves the cursor
at the last message whose request is durably queued, and the marks keep the next poll from queueing
a message twice. The fetch worker reads the message by that request (`fetch.open_message`).

The first poll of an account takes the mail that arrived since the account's start (when the app first
knew it: cursor.record_start), less `BACKFILL_HOURS` and cursor.CLOCK_MARGIN, judged by the server's
dates: IMAP's INTERNALDATE, POP3's Date header. When a folder's UIDVALIDITY changes (it was recreated,
or the server rebuilt its index) or a server's UIDLs change, the messages in the window are recognised
by fingerprint instead of by id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from ..errors import IngestError, MailServerBusy, StateConflict, one_line
from ..logs import log_event
from ..pipeline.layout import graph_time, parse_graph_time
from ..pipeline.poison import FETCH_QUEUE
from ..settings import MailAccount
from .common import Login, header_fields
from .cursor import CursorStore, SourceCursor
from .imap.session import ImapSession, MessageInfo
from .pop3.session import Pop3Info, Pop3Session

logger = logging.getLogger(__name__)

# A poll stops taking new messages after this long (host.json's functionTimeout is 10 minutes).
POLL_BUDGET_SECONDS = 240.0
# A claim older than this belongs to a poll that died: the budget plus room for the last message.
CLAIM = timedelta(seconds=POLL_BUDGET_SECONDS + 120)
# The cursor is saved every this many messages, so a long poll's progress is not lost.
SAVE_EVERY = 50

Send = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class PollResult:
    account: str
    outcome: str  # polled, claimed elsewhere, failed
    queued: int = 0
    complete: bool = True  # False: the budget ran out (or the claim was lost) before the end
    error: str | None = None


@dataclass
class _Poll:
    store: CursorStore
    send: Send
    account: MailAccount
    cursor: SourceCursor
    etag: str | None
    started_at: datetime  # the poll's `now`; the clock moves on from it by the monotonic time elapsed
    deadline: float
    queued: int = 0
    since_save: int = 0
    _started: float = field(default_factory=time.monotonic)

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline

    async def save(self, *, renew: bool = False) -> None:
        if renew:  # a save with progress renews the claim
            elapsed = timedelta(seconds=time.monotonic() - self._started)
            self.cursor.polling_at = graph_time(self.started_at + elapsed)
        self.etag = await self.store.save(self.cursor, self.etag)
        self.since_save = 0

    async def hand_on(self, request: dict[str, Any], fingerprint: str) -> bool:
        """Queue the fetch request unless the message was queued before; True if it was queued now."""
        key = self.account.key
        if await self.store.seen(key, fingerprint):
            return False
        await self.send(FETCH_QUEUE, json.dumps(request, separators=(",", ":")))
        await self.store.mark(key, fingerprint, request)
        self.queued += 1
        self.cursor.queued += 1
        return True

    async def step_done(self) -> None:
        self.since_save += 1
        if self.since_save >= SAVE_EVERY:
            await self.save(renew=True)


async def poll_account(
    store: CursorStore,
    send: Send,
    account: MailAccount,
    login: Callable[[], Awaitable[Login]],
    now: datetime,
    *,
    backfill_hours: int = 0,
    budget_seconds: float = POLL_BUDGET_SECONDS,
) -> PollResult:
    """Poll one account folder: claim, list what is new, queue it, save the cursor, release the claim."""
    claimed = await _claim(store, account, now, backfill_hours)
    if claimed is None:
        log_event(logger, "source.poll_skipped", account=str(account), reason="another poll holds the claim")
        return PollResult(str(account), "claimed elsewhere")
    cursor, etag = claimed
    poll = _Poll(store, send, account, cursor, etag, now, time.monotonic() + budget_seconds)
    complete = True
    try:
        credentials = await login()
        if account.protocol == "imap":
            complete = await _poll_imap(poll, credentials)
        else:
            complete = await _poll_pop3(poll, credentials)
    except StateConflict:
        # Our claim lapsed and another poll took the record: it goes on from the last save.
        log_event(logger, "source.poll_skipped", account=str(account), reason="the claim was taken over")
        return PollResult(str(account), "claimed elsewhere", poll.queued, complete=False)
    except IngestError as exc:
        cursor.last_error, cursor.last_error_at = one_line(exc), graph_time(now)
        cursor.polling_at = None
        await poll.save()
        kind = "busy" if isinstance(exc, MailServerBusy) else type(exc).__name__
        log_event(logger, "source.poll_failed", logging.ERROR, account=str(account), kind=kind, reason=one_line(exc))
        return PollResult(str(account), "failed", poll.queued, complete=False, error=one_line(exc))
    except Exception:
        # Storage or the queue failed: release the claim if that still works, so the next tick tries at once;
        # the queue message fails and is delivered again.
        cursor.polling_at = None
        with contextlib.suppress(Exception):
            await poll.save()
        raise
    cursor.polling_at = None
    cursor.last_poll_at = graph_time(now)
    cursor.last_error = cursor.last_error_at = None
    await poll.save()
    log_event(logger, "source.polled", account=str(account), queued=poll.queued, complete=complete)
    return PollResult(str(account), "polled", poll.queued, complete)


async def _claim(
    store: CursorStore, account: MailAccount, now: datetime, backfill_hours: int
) -> tuple[SourceCursor, str] | None:
    cursor, etag = await store.load(account.key)
    if cursor is None:
        # No start recorded (the fan-out records it before any poll, so rarely): this poll is the start.
        cursor = SourceCursor.start(account, now, backfill_hours)
    elif cursor.polling_at and now - parse_graph_time(cursor.polling_at) < CLAIM:
        return None
    cursor.polling_at = graph_time(now)
    try:
        return cursor, await store.save(cursor, etag)
    except StateConflict:
        return None


def _request(poll: _Poll, fingerprint: str, size: int, **ref: Any) -> dict[str, Any]:
    account = poll.account
    return {
        "type": "fetch",
        "account": account.key,
        "protocol": account.protocol,
        "folder": account.folder,
        **ref,
        "fingerprint": fingerprint,
        "size": size,
        "queuedAt": graph_time(poll.started_at),  # the date folder of a mail that has no date of its own
    }


# -- IMAP --------------------------------------------------------------------------------------------


async def _poll_imap(poll: _Poll, login: Login) -> bool:
    cursor = poll.cursor
    window = parse_graph_time(cursor.window_start)
    async with await ImapSession.open(poll.account, login) as session:
        status = await session.examine()
        if cursor.uidvalidity is None or cursor.uidvalidity != status.uidvalidity:
            if cursor.uidvalidity is not None:
                log_event(
                    logger,
                    "source.uidvalidity_changed",
                    logging.WARNING,
                    account=str(poll.account),
                    old=cursor.uidvalidity,
                    new=status.uidvalidity,
                )
            # A first poll, or UIDs that mean nothing any more: what arrived in the window, by fingerprint.
            # SEARCH SINCE counts days in the server's time zone: a day early, then the exact time below.
            listed = await session.uids_since(window.date() - timedelta(days=1))
            infos = [i for i in await session.describe(listed) if i.internaldate is None or i.internaldate >= window]
            cursor.uidvalidity, cursor.last_uid = status.uidvalidity, 0
            top = max(listed, default=0)
            if status.uidnext:
                top = max(top, status.uidnext - 1)
        else:
            listed = await session.new_uids(cursor.last_uid or 0)
            infos = await session.describe(listed)
            top = max(listed, default=cursor.last_uid or 0)
        if not await _queue_imap(poll, infos, status.uidvalidity):
            return False
        # Everything listed is queued or was not the app's (before the window, or expunged meanwhile).
        cursor.last_uid = max(cursor.last_uid or 0, top)
        return True


async def _queue_imap(poll: _Poll, infos: Sequence[MessageInfo], uidvalidity: int) -> bool:
    for info in sorted(infos, key=lambda i: i.uid):
        if not poll.time_left():
            return False
        ref = _request(
            poll, info.fingerprint, info.size, uidvalidity=uidvalidity, uid=info.uid, messageId=info.message_id
        )
        await poll.hand_on(ref, info.fingerprint)
        poll.cursor.last_uid = info.uid
        await poll.step_done()
    return True


# -- POP3 --------------------------------------------------------------------------------------------


def uidl_digest(uidl: str) -> str:
    return hashlib.sha256(uidl.encode()).hexdigest()[:16]


async def _poll_pop3(poll: _Poll, login: Login) -> bool:
    cursor = poll.cursor
    # Until the first listing is sorted through (a first poll the budget cut short goes on at the next),
    # a message is the app's only if its Date lies in the window; after it, every new UIDL is new mail.
    first = not cursor.listed
    window = parse_graph_time(cursor.window_start)
    async with await Pop3Session.open(poll.account, login) as session:
        entries = await session.listing()
        known = set(cursor.uidls)
        new = [e for e in entries if uidl_digest(e.uidl) not in known]
        complete = True
        for start in range(0, len(new), SAVE_EVERY):
            if not poll.time_left():
                complete = False
                break
            for info in await session.describe(new[start : start + SAVE_EVERY]):
                if not (first and not _in_window(info, window)):
                    ref = _request(poll, info.fingerprint, info.size, uidl=info.uidl)
                    await poll.hand_on(ref, info.fingerprint)
                known.add(uidl_digest(info.uidl))
            # Only UIDLs still in the maildrop are kept: the list stays as long as the maildrop.
            cursor.uidls = [d for d in (uidl_digest(e.uidl) for e in entries) if d in known]
            await poll.save(renew=True)
        cursor.uidls = [d for d in (uidl_digest(e.uidl) for e in entries) if d in known]
        cursor.listed = cursor.listed or complete
        return complete


def _in_window(info: Pop3Info, window: datetime) -> bool:
    """Whether a message's Date lies in the first listing's window (POP3 has no arrival time); a message
    without a usable Date is taken for one from before the window."""
    raw = header_fields(info.header).get("date", b"")
    try:
        sent = parsedate_to_datetime(raw.decode("ascii", "replace"))
    except (TypeError, ValueError):
        return False
    if sent.tzinfo is None:
        return False
    return sent >= window
