"""Where each IMAP folder or POP3 maildrop was read up to, and which messages were handed on.

- `sources/{account key}.json`: the cursor (IMAP: UIDVALIDITY and last UID; POP3: the UIDLs already
  seen), the window mail is taken from, and the poll's claim, written with ETags like the folder
  records of Graph mailboxes (`folders/`, which this prefix stays apart from). It is made when the app
  first knows the account (`record_start`: the maintain pass, the poll timer's fan-out, else the first
  poll), so the first poll takes the mail that arrived since then.
- `sources/{account key}/seen/{fingerprint}.json`: one mark per message queued for fetching, so a
  message is recognised when its UID or UIDL can no longer be trusted (a recreated folder, a
  server that renumbered its UIDLs, a poll that crashed before it saved the cursor).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from ..errors import SettingsError, StateConflict
from ..pipeline.layout import graph_time
from ..pipeline.storage import BlobStore
from ..settings import MailAccount, parse_account

# The window starts this long before the account's start (less BACKFILL_HOURS), because it is judged by the
# server's dates, not ours: IMAP's INTERNALDATE is the server's clock, POP3 has only the Date header the
# sender's clock wrote (and a mail sent before our start may be delivered after it). A server clock up to
# this far behind ours, or a POP3 mail sent up to this long before it arrived, is still taken; the price is
# that mail up to this long before the start is taken too.
CLOCK_MARGIN = timedelta(minutes=15)


@dataclass
class SourceCursor:
    account_key: str
    account: str  # the account URL without its query, for status and logs
    protocol: str
    window_start: str  # mail that arrived before this is not the app's (the start less BACKFILL_HOURS and the margin)
    started_at: str | None = None  # when the app first knew the account (None: a cursor older than this field)
    uidvalidity: int | None = None  # IMAP
    last_uid: int | None = None  # IMAP: every message up to this UID is queued (or was there before the window)
    uidls: list[str] = field(default_factory=list)  # POP3: digests of the UIDLs seen, pruned to the maildrop
    # POP3: the first listing is sorted through (window or not); until then a new UIDL is judged by its Date.
    listed: bool = False
    polling_at: str | None = None  # a poll's claim
    last_poll_at: str | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    queued: int = 0  # messages queued for fetching, all time

    @classmethod
    def start(cls, account: MailAccount, at: datetime, backfill_hours: int) -> SourceCursor:
        """A new account's cursor: mail from `at` on (less BACKFILL_HOURS and CLOCK_MARGIN), nothing read yet."""
        window = at - timedelta(hours=backfill_hours) - CLOCK_MARGIN
        return cls(account.key, str(account), account.protocol, graph_time(window), started_at=graph_time(at))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceCursor:
        known = {f.name for f in fields(cls)}
        found = {k: v for k, v in data.items() if k in known}
        # A cursor from before `listed` was kept: polled once means its first listing was sorted through.
        found.setdefault("listed", data.get("last_poll_at") is not None)
        return cls(**found)

    def recorded_account(self) -> MailAccount | None:
        """The account this cursor is for, from the URL it recorded (the account's URL without its query, so
        a stand-in secret makes it parse); None if that URL is not one, or no longer names this key."""
        try:
            account = parse_account(f"{self.account}?secret=recorded")
        except SettingsError:
            return None
        return account if account.key == self.account_key else None


class CursorStore:
    PREFIX = "sources/"

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    @classmethod
    def path(cls, account_key: str) -> str:
        return f"{cls.PREFIX}{account_key}.json"

    async def load(self, account_key: str) -> tuple[SourceCursor | None, str | None]:
        found = await self._blobs.read_json(self.path(account_key))
        if found is None:
            return None, None
        data, etag = found
        return SourceCursor.from_dict(data), etag

    async def save(self, cursor: SourceCursor, etag: str | None) -> str:
        """Write if nobody else has since `etag` (create if None); StateConflict otherwise."""
        return await self._blobs.write_json(self.path(cursor.account_key), asdict(cursor), etag)

    async def record_start(self, account: MailAccount, at: datetime, backfill_hours: int) -> SourceCursor | None:
        """The account's start, if it has none: one read, and a write only when missing, create-if-absent so
        that of two instances recording at once the first wins. The new cursor, or None if one was there."""
        cursor, _ = await self.load(account.key)
        if cursor is not None:
            return None
        cursor = SourceCursor.start(account, at, backfill_hours)
        try:
            await self.save(cursor, None)
        except StateConflict:
            return None  # another instance (or the first poll) recorded it a moment ago
        return cursor

    async def rewind(self, account_key: str, since: str | None) -> SourceCursor | None:
        """`resync`: the next poll lists the folder's mail again, by fingerprint, from `since` (default: the
        window the account started from); what was queued before is recognised by its mark and not queued
        twice, so only mail a poll missed comes in. None when the account was never polled. StateConflict
        when a poll saved meanwhile (run it again)."""
        cursor, etag = await self.load(account_key)
        if cursor is None:
            return None
        if since is not None:
            cursor.window_start = since
        cursor.uidvalidity, cursor.last_uid, cursor.uidls = None, None, []
        await self.save(cursor, etag)
        return cursor

    async def cursors(self) -> list[tuple[SourceCursor, str]]:
        """Every account's cursor with its ETag, configured or not (`unsubscribe` finds those no longer in
        MAILBOXES here)."""
        names = [n for n in await self._blobs.names(self.PREFIX) if n.endswith(".json") and n.count("/") == 1]
        found = [await self.load(n[len(self.PREFIX) : -len(".json")]) for n in names]
        return [(cursor, etag) for cursor, etag in found if cursor is not None and etag is not None]

    async def forget(self, account_key: str, etag: str) -> int:
        """Remove an account's cursor (if still at `etag`; StateConflict otherwise), then its seen marks; how
        many marks. Only for an account that is no longer polled: its next first poll would start afresh."""
        await self._blobs.delete(self.path(account_key), etag)
        marks = await self._blobs.names(f"{self.PREFIX}{account_key}/seen/")
        for name in marks:
            await self._blobs.delete(name)
        return len(marks)

    def _mark(self, account_key: str, fingerprint: str) -> str:
        return f"{self.PREFIX}{account_key}/seen/{fingerprint}.json"

    async def seen(self, account_key: str, fingerprint: str) -> bool:
        return await self._blobs.read_json(self._mark(account_key, fingerprint)) is not None

    async def mark(self, account_key: str, fingerprint: str, ref: dict[str, Any]) -> None:
        """Remember a queued message; one already marked (a poll that crashed after queueing) is fine."""
        with contextlib.suppress(StateConflict):
            await self._blobs.write_json(self._mark(account_key, fingerprint), ref, None)
