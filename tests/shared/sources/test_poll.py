"""Polls against a real Dovecot and Azurite: cursors, claims, fingerprints, the time budget, fetch requests."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.dovecot import Dovecot
from shared.errors import MailMessageGone
from shared.pipeline.layout import graph_time
from shared.pipeline.poison import FETCH_QUEUE
from shared.pipeline.storage import BlobStore
from shared.settings import MailAccount
from shared.sources.common import Login
from shared.sources.cursor import CursorStore
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


async def started(store: BlobStore, user: MailUser, scheme: str, count: int) -> tuple[MailAccount, Queue]:
    """An account polled once (so the app starts from now), then `count` new mails delivered."""
    account = user.account(scheme)
    queue = Queue()
    await poll(store, queue, account, user)
    for n in range(count):
        user.deliver(message(f"mail {n}"))
    return account, queue


@pytest.mark.parametrize("scheme", ["imaps", "pop3s"])
async def test_the_first_poll_starts_from_now_then_each_new_mail_is_queued_once(
    store: BlobStore, mail_user: MailUser, scheme: str
):
    account = mail_user.account(scheme)
    mail_user.deliver(message("before the app"))
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
    # From a minute back: the account's own start is less than a second ago here, which a poll takes for "from now".
    assert await CursorStore(store).rewind(account.key, graph_time(now() - timedelta(minutes=1))) is not None
    await poll(store, queue, account, mail_user)
    assert [r["fingerprint"] for r in queue.sent[3:]] == [missed]
    cursor, _ = await CursorStore(store).load(account.key)
    assert cursor is not None and cursor.last_uid == 3
    assert await CursorStore(store).rewind("never-polled", None) is None
