"""`unsubscribe` for IMAP and POP3 accounts (`cli.py`, `CursorStore.forget`), against a real Dovecot and
Azurite: an account still in MAILBOXES is left as it is (its next poll goes on from its cursor), one no
longer configured is forgotten."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import pytest

from shared.cli import UsageError, cmd_unsubscribe
from shared.ops.activity import Activity, ActivityStore
from shared.settings import parse_settings
from shared.sources.cursor import CursorStore
from tests.shared.sources.conftest import MailUser, make_user, message
from tests.shared.sources.test_accounts import Rt, queued, runtime, url_of


def target(text: str | None) -> argparse.Namespace:
    if text is None:
        return argparse.Namespace(all=True, target=None)
    mailbox, _, folder = text.partition("/")
    return argparse.Namespace(all=False, target=(mailbox.lower(), folder or None))


async def polled(rt: Any, user: MailUser) -> None:
    """The account polled with one new mail (a cursor and a seen mark), and an ingest recorded (activity)."""
    (account,) = [a for a in rt.settings.accounts if a.user == user.name]
    user.deliver(message("before"))
    assert len(await queued(rt, account)) == 1
    await ActivityStore(rt.state).record(replace(Activity.of(account), last_ingest_at="2026-11-29T10:00:00.000Z"))


def without_accounts(rt: Any, env: dict[str, str], **mailboxes: str) -> Any:
    """The same state container under settings whose MAILBOXES lists other entries."""
    other = Rt(parse_settings({**env, "MAILBOXES": "invoices@contoso.com", **mailboxes}), rt._service, "")
    other.state = rt.state
    return other


async def test_an_account_still_configured_is_left_as_it_is_and_its_next_poll_goes_on(
    env: dict[str, str], service: Any, mail_user: MailUser, capsys: pytest.CaptureFixture[str]
):
    rt = runtime(env, service, mail_user)
    (account,) = rt.settings.accounts
    await polled(rt, mail_user)
    before = await CursorStore(rt.state).load(account.key)
    assert await cmd_unsubscribe(rt, target(mail_user.name)) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if str(account) in line]
    assert "still in MAILBOXES, nothing changed" in line and "remove it from MAILBOXES first" in line
    assert await CursorStore(rt.state).load(account.key) == before  # not touched
    assert await ActivityStore(rt.state).load(account.key) is not None
    mail_user.deliver(message("after"))
    (request,) = await queued(rt, account)  # the next poll takes up where the cursor was: nothing skipped
    assert request.uid == 2


async def test_an_account_taken_out_of_mailboxes_is_forgotten(
    env: dict[str, str], service: Any, mail_user: MailUser, capsys: pytest.CaptureFixture[str]
):
    rt = runtime(env, service, mail_user)
    (account,) = rt.settings.accounts
    await polled(rt, mail_user)
    gone = without_accounts(rt, env)
    with pytest.raises(UsageError, match=r"nobody@example\.org is not in MAILBOXES"):
        await cmd_unsubscribe(gone, target("nobody@example.org"))
    assert await cmd_unsubscribe(gone, target(f"{mail_user.name}/inbox")) == 0
    out = capsys.readouterr().out
    assert f"{account}: not in MAILBOXES, forgotten: cursor, 1 seen mark(s), activity record removed" in out
    assert await CursorStore(rt.state).load(account.key) == (None, None)
    assert await rt.state.names(f"sources/{account.key}/") == []
    assert await ActivityStore(rt.state).load(account.key) is None
    # Configured again later, it starts afresh: its first poll lists its backfill window again (the mail's
    # done/ marker keeps it from being stored twice).
    assert len(await queued(rt, account)) == 1


async def test_unsubscribe_all_forgets_every_account_no_longer_configured_and_keeps_the_others(
    env: dict[str, str], service: Any, dovecot: Any, capsys: pytest.CaptureFixture[str]
):
    kept, dropped, popped = make_user(dovecot), make_user(dovecot), make_user(dovecot)
    urls = [url_of(kept.account()), url_of(dropped.account()), url_of(popped.account("pop3s"))]
    settings = parse_settings({**env, "MAILBOXES": ", ".join(urls)})
    first = Rt(settings, service, kept.password)
    for user in (kept, dropped, popped):
        each = Rt(settings, service, user.password)  # the same secret name, each user's password
        each.state = first.state
        await polled(each, user)
    later = without_accounts(first, env, MAILBOXES=f"invoices@contoso.com, {urls[0]}")
    assert await cmd_unsubscribe(later, target(None)) == 0
    out = capsys.readouterr().out
    assert f"{kept.account()}: still in MAILBOXES, nothing changed" in out
    assert f"{dropped.account()}: not in MAILBOXES, forgotten" in out
    assert f"{popped.account('pop3s')}: not in MAILBOXES, forgotten" in out
    remaining = [cursor.account_key for cursor, _ in await CursorStore(first.state).cursors()]
    assert remaining == [kept.account().key]
    # The Graph part ran too: no folder record here, and the timer's note for invoices@contoso.com.
    assert "no state records" not in out and "maintain timer creates subscriptions again" in out
