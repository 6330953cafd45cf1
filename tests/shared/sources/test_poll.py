"""Polls against a real Dovecot and Azurite: cursors, claims, fingerprints, the time budget, fetch requests."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from local.dovecot import Dovecot
from shared.errors import MailMessageGone
from shared.pipeline.layout import graph_time, parse_graph_time
from shared.pipeline.poison import FETCH_QUEUE
from shared.pipeline.storage import BlobStore
from shared.settings import MailAccount
from shared.sources.common import Login
from shared.sources.cursor import CLOCK_MARGIN, CursorStore, SourceCursor
from shared.sources.fetch import FetchRequest, open_message
from shared.sources.poll import CLAIM, poll_account
from tests.shared.sources.conftest import MailUser, message


class Queue:
    """What the poll sends, as the fetch queue would hold it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, queue: str, text: str) -> None:
        assert queue == FETCH_QUEUE
        self.sent.append(json.loads(text))


def now() -> datetime:
    return datetime.now(UTC)


async def poll(store: BlobStore, queue: Queue, account: MailAccount, user: MailUser, when=None, **kwargs):
    async def login() -> Login:
        return user.login

    return await poll_account(CursorStore(store), queue.send, account, login, when or now(), **kwargs)


async def read(account: MailAccount, user: MailUser, request: dict[str, Any]) -> bytes:
    async with open_message(account, user.login, FetchRequest.parse(json.dumps(request))) as chunks:
        return b"".join([c async for c in chunks])


def deliver_at(user: MailUser, subject: str, when: datetime, folder: str = "INBOX") -> bytes:
    """A mail that arrived at `when` by the server's clock: its Date (all POP3 has) and its maildir file's mtime
    (Dovecot's INTERNALDATE) say so."""
    mail = message(subject, date=format_datetime(when))
    path = user.server.deliver(user.name, mail, folder)
    os.utime(path, (when.timestamp(), when.timestamp()))
    return mail


async def started(store: BlobStore, user: MailUser, scheme: str, count: int) -> tuple[MailAccount, Queue]:
    """An account polled once (so the app starts from now), then `count` new mails delivered."""
    account = user.account(scheme)
    queue = Queue()
    await poll(store, queue, account, user)
    for n in range(count):
        user.deliver(message(f"mail {n}"))
    return account, queue


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_the_first_poll_starts_from_the_accounts_start_then_each_new_mail_is_queued_once(
    store: BlobStore, mail_user: MailUser, scheme: str
):
    account = mail_user.account(scheme)
    deliver_at(mail_user, "before the app", now() - CLOCK_MARGIN - timedelta(minutes=1))
    queue = Queue()
    first = await poll(store, queue, account, mail_user)
    assert (first.outcome, first.queued, first.complete) == ("polled", 0, True)
    new = message("new")
    mail_user.deliver(new)
    assert (await poll(store, queue, account, mail_user)).queued == 1
    assert (await poll(store, queue, account, mail_user)).queued == 0
    (request,) = queue.sent
    assert await read(account, mail_user, request) == new
    cursor, _ = await CursorStore(store).load(account.key)
    assert cursor is not None and cursor.polling_at is None and cursor.queued == 1 and cursor.last_error is None
    if scheme == "imaps":
        assert (cursor.last_uid, request["uid"]) == (2, 2)


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_mail_that_arrives_after_the_start_and_before_the_first_poll_is_taken(
    store: BlobStore, mail_user: MailUser, scheme: str
):
    """The maintain pass or the fan-out recorded the start; a test mail comes in before the first poll."""
    account = mail_user.account(scheme)
    deliver_at(mail_user, "before the app", now() - CLOCK_MARGIN - timedelta(minutes=1))
    cursors = CursorStore(store)
    start = await cursors.record_start(account, now(), 0)
    assert start is not None and start.started_at is not None
    test_mail = message("the first thing a new user sends", date=format_datetime(now()))
    mail_user.deliver(test_mail)
    queue = Queue()
    first = await poll(store, queue, account, mail_user, when=now() + timedelta(minutes=1))
    assert (first.outcome, first.queued) == ("polled", 1)
    assert await read(account, mail_user, queue.sent[0]) == test_mail
    assert (await poll(store, queue, account, mail_user)).queued == 0
    cursor, _ = await cursors.load(account.key)
    assert cursor is not None and cursor.started_at == start.started_at  # the poll kept the recorded start


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_the_window_allows_for_a_server_clock_behind_ours_by_the_margin(
    store: BlobStore, mail_user: MailUser, scheme: str
):
    """The server's dates (IMAP INTERNALDATE, POP3 Date) are compared with our start less CLOCK_MARGIN: a mail
    that arrived after our start, dated by a server up to that far behind, is taken; one dated before is not."""
    account, start = mail_user.account(scheme), now()
    skewed = deliver_at(mail_user, "after our start, server 14 min behind", start - CLOCK_MARGIN + timedelta(minutes=1))
    deliver_at(mail_user, "before our start by more than the margin", start - CLOCK_MARGIN - timedelta(minutes=1))
    assert await CursorStore(store).record_start(account, start, 0) is not None
    queue = Queue()
    assert (await poll(store, queue, account, mail_user)).queued == 1
    assert await read(account, mail_user, queue.sent[0]) == skewed


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_a_backfill_window_takes_what_arrived_in_it(store: BlobStore, mail_user: MailUser, scheme: str):
    account = mail_user.account(scheme)
    mail_user.deliver(message("recent", date="Mon, 1 Jan 2046 00:00:00 +0000"))
    queue = Queue()
    result = await poll(store, queue, account, mail_user, backfill_hours=2)
    assert result.queued == 1


async def test_a_recreated_folder_doubles_nothing(store: BlobStore, mail_user: MailUser, dovecot: Dovecot, caplog):
    account = mail_user.account("imaps", "Scans")
    dovecot.create_folder(mail_user.name, "Scans")
    queue = Queue()
    await poll(store, queue, account, mail_user)
    kept = [message(f"kept {n}") for n in range(3)]
    for mail in kept:
        mail_user.deliver(mail, folder="Scans")
    assert (await poll(store, queue, account, mail_user)).queued == 3
    old_requests = list(queue.sent)
    dovecot.remove_folder(mail_user.name, "Scans")
    fresh = message("arrived after the rebuild")
    for mail in [kept[2], fresh, kept[0], kept[1]]:
        mail_user.deliver(mail, folder="Scans")
    with caplog.at_level(logging.WARNING):
        assert (await poll(store, queue, account, mail_user)).queued == 1
    assert any(getattr(r, "event", "") == "source.uidvalidity_changed" for r in caplog.records)
    assert await read(account, mail_user, queue.sent[-1]) == fresh
    # A request queued before the rebuild still finds its message, by fingerprint.
    assert await read(account, mail_user, old_requests[2]) == kept[2]
    assert (await poll(store, queue, account, mail_user)).queued == 0


async def test_a_request_for_a_message_gone_is_reported(store: BlobStore, mail_user: MailUser, dovecot: Dovecot):
    account = mail_user.account("imaps", "Gone")
    dovecot.create_folder(mail_user.name, "Gone")
    queue = Queue()
    await poll(store, queue, account, mail_user)
    mail_user.deliver(message("short-lived"), folder="Gone")
    await poll(store, queue, account, mail_user)
    dovecot.remove_folder(mail_user.name, "Gone")
    dovecot.create_folder(mail_user.name, "Gone")
    with pytest.raises(MailMessageGone, match="no message with fingerprint"):
        await read(account, mail_user, queue.sent[0])


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_two_polls_racing_queue_each_mail_once(store: BlobStore, mail_user: MailUser, scheme: str):
    account, queue = await started(store, mail_user, scheme, 6)
    results = await asyncio.gather(*(poll(store, queue, account, mail_user) for _ in range(2)))
    assert sorted(r.outcome for r in results) == ["claimed elsewhere", "polled"]
    assert len(queue.sent) == 6 and len({m["fingerprint"] for m in queue.sent}) == 6


class Crash(BaseException):
    """The process dying mid-poll: nothing after it runs, no except clause of the app's sees it."""


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_a_crash_before_the_cursor_is_saved_doubles_nothing(store: BlobStore, mail_user: MailUser, scheme):
    account, queue = await started(store, mail_user, scheme, 5)
    crashing = Queue()

    async def send(queue_name: str, text: str) -> None:
        if len(crashing.sent) == 3:
            raise Crash
        await crashing.send(queue_name, text)

    async def login() -> Login:
        return mail_user.login

    with pytest.raises(Crash):
        await poll_account(CursorStore(store), send, account, login, now())
    # Its claim holds off the next poll until it lapses; then the rest is queued, and only the rest.
    assert (await poll(store, queue, account, mail_user)).outcome == "claimed elsewhere"
    later = await poll(store, queue, account, mail_user, when=now() + CLAIM + timedelta(seconds=1))
    assert (later.outcome, later.queued) == ("polled", 2)
    fingerprints = [m["fingerprint"] for m in crashing.sent + queue.sent]
    assert len(fingerprints) == 5 == len(set(fingerprints))


async def test_the_time_budget_stops_a_poll_where_it_is(store: BlobStore, mail_user: MailUser):
    account, queue = await started(store, mail_user, "imaps", 3)
    stopped = await poll(store, queue, account, mail_user, budget_seconds=0)
    assert (stopped.outcome, stopped.queued, stopped.complete) == ("polled", 0, False)
    cursor, _ = await CursorStore(store).load(account.key)
    assert cursor is not None and cursor.last_uid == 0 and cursor.polling_at is None
    resumed = await poll(store, queue, account, mail_user)
    assert (resumed.queued, resumed.complete) == (3, True)


async def test_changed_uidls_are_recognised_by_fingerprint(store: BlobStore, mail_user: MailUser):
    account, queue = await started(store, mail_user, "pop3s", 2)
    assert (await poll(store, queue, account, mail_user)).queued == 2
    # As after a server migration: none of the UIDLs is known any more.
    cursors = CursorStore(store)
    cursor, etag = await cursors.load(account.key)
    assert cursor is not None and len(cursor.uidls) == 2
    cursor.uidls = ["0" * 16]
    await cursors.save(cursor, etag)
    mail_user.deliver(message("new"))
    assert (await poll(store, queue, account, mail_user)).queued == 1
    cursor, _ = await cursors.load(account.key)
    assert cursor is not None and len(cursor.uidls) == 3


async def test_refused_credentials_are_kept_on_the_cursor_and_the_claim_released(
    store: BlobStore, mail_user: MailUser, caplog
):
    account = mail_user.account("imaps")
    queue = Queue()

    async def login() -> Login:
        return Login(mail_user.name, password="wrong-one-9")

    with caplog.at_level(logging.ERROR):
        result = await poll_account(CursorStore(store), queue.send, account, login, now())
    assert result.outcome == "failed" and "MailAuthFailed" in (result.error or "")
    assert any(getattr(r, "event", "") == "source.poll_failed" for r in caplog.records)
    cursor, _ = await CursorStore(store).load(account.key)
    assert cursor is not None and cursor.polling_at is None and "Authentication failed" in (cursor.last_error or "")
    assert "wrong-one-9" not in (cursor.last_error or "")
    assert (await poll(store, queue, account, mail_user)).outcome == "polled"
    cursor, _ = await CursorStore(store).load(account.key)
    assert cursor is not None and cursor.last_error is None


def test_a_fetch_request_must_name_its_message():
    with pytest.raises(Exception, match="UIDVALIDITY and UID"):
        FetchRequest.parse(json.dumps({"type": "fetch", "account": "a", "protocol": "imap", "folder": "INBOX",
                                       "fingerprint": "f", "size": 1}))  # fmt: skip
    with pytest.raises(Exception, match="unreadable"):
        FetchRequest.parse("{")


async def test_a_queue_failure_fails_the_poll_and_releases_its_claim(store: BlobStore, mail_user: MailUser):
    account, queue = await started(store, mail_user, "imaps", 2)

    async def refused(queue_name: str, text: str) -> None:
        raise ConnectionError("the queue service is unreachable")

    async def login() -> Login:
        return mail_user.login

    with pytest.raises(ConnectionError):
        await poll_account(CursorStore(store), refused, account, login, now())
    cursor, _ = await CursorStore(store).load(account.key)
    assert cursor is not None and cursor.polling_at is None
    assert (await poll(store, queue, account, mail_user)).queued == 2  # at once, not after the claim lapses


async def test_a_rewound_cursor_queues_only_what_was_missed(store: BlobStore, mail_user: MailUser):
    account, queue = await started(store, mail_user, "imaps", 3)
    await poll(store, queue, account, mail_user)
    assert len(queue.sent) == 3
    missed = queue.sent[1]["fingerprint"]
    await store.delete(f"sources/{account.key}/seen/{missed}.json")  # as if its request had been lost
    assert await CursorStore(store).rewind(account.key, graph_time(now() - timedelta(minutes=1))) is not None
    await poll(store, queue, account, mail_user)
    assert [r["fingerprint"] for r in queue.sent[3:]] == [missed]
    cursor, _ = await CursorStore(store).load(account.key)
    assert cursor is not None and cursor.last_uid == 3
    assert await CursorStore(store).rewind("never-polled", None) is None


class Racing(CursorStore):
    """Two instances recording one account's start at the same moment: both read 'none' before either writes."""

    def __init__(self, store: BlobStore, barrier: asyncio.Barrier) -> None:
        super().__init__(store)
        self.barrier = barrier

    async def load(self, account_key: str) -> tuple[SourceCursor | None, str | None]:
        found = await super().load(account_key)
        await self.barrier.wait()
        return found


async def test_two_instances_recording_a_start_at_once_keep_the_first_writers(store: BlobStore, mail_user: MailUser):
    account, barrier = mail_user.account("imaps"), asyncio.Barrier(2)
    early, late = now(), now() + timedelta(seconds=30)
    made = await asyncio.gather(*(Racing(store, barrier).record_start(account, at, 2) for at in (early, late)))
    (winner,) = [cursor for cursor in made if cursor is not None]
    cursor, etag = await CursorStore(store).load(account.key)
    assert cursor == winner and cursor.started_at is not None
    assert cursor.window_start == graph_time(parse_graph_time(cursor.started_at) - timedelta(hours=2) - CLOCK_MARGIN)
    # Once recorded, a later pass reads it and writes nothing.
    assert await CursorStore(store).record_start(account, now(), 0) is None
    assert (await CursorStore(store).load(account.key))[1] == etag


async def test_a_first_poll_the_budget_cut_short_still_judges_the_first_listing_by_date(
    store: BlobStore, mail_user: MailUser
):
    """POP3: mail that was in the maildrop before the start stays out after a first poll stopped part way."""
    account = mail_user.account("pop3s")
    for n in range(3):
        deliver_at(mail_user, f"old {n}", now() - timedelta(days=30))
    await CursorStore(store).record_start(account, now(), 0)
    queue = Queue()
    stopped = await poll(store, queue, account, mail_user, budget_seconds=0)
    assert (stopped.queued, stopped.complete) == (0, False)
    fresh = message("new", date=format_datetime(now()))
    mail_user.deliver(fresh)
    resumed = await poll(store, queue, account, mail_user)
    assert (resumed.queued, resumed.complete) == (1, True)
    assert await read(account, mail_user, queue.sent[0]) == fresh
