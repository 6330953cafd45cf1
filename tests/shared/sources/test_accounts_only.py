"""A deployment whose MAILBOXES lists only IMAP and POP3 accounts, without any Graph setting: `check`, the
maintain pass and `status` run against a real Dovecot and Azurite and leave Graph alone (the runtime here
has no Graph client or token source at all, so any Graph work would fail)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.cli import _mark, build_parser, cmd_check, cmd_maintain, cmd_unsubscribe, render_status
from shared.ops.checks import Checks
from shared.ops.health import collect_status
from shared.pipeline.storage import queue_service
from shared.settings import StorageSettings, parse_settings
from shared.sources.cursor import CursorStore
from shared.sources.graph.maintain import IDLE, last_pass, run_pass
from shared.sources.graph.state import FolderState, StateStore
from tests.shared.sources.conftest import MailUser
from tests.shared.sources.test_accounts import Rt, url_of
from tests.shared.sources.test_oauth import Vault


@pytest.fixture
async def rt(env: dict[str, str], service: Any, azurite: str, mail_user: MailUser) -> AsyncIterator[Any]:
    graph = ("GRAPH_TENANT_ID", "GRAPH_CLIENT_ID", "GRAPH_CLIENT_SECRET", "WEBHOOK_BASE_URL")
    settings = parse_settings(
        {**{k: v for k, v in env.items() if k not in graph}, "MAILBOXES": url_of(mail_user.account())}
    )
    assert not settings.uses_graph and not settings.tenant_id
    runtime: Any = Rt(settings, service, mail_user.password)
    runtime.vault = Vault({"pw": mail_user.password})
    runtime.queues = queue_service(StorageSettings(connection_string=azurite), None)
    yield runtime
    await runtime.queues.close()


async def test_check_skips_the_graph_checks_with_one_line_saying_why(rt: Any, capsys: pytest.CaptureFixture[str]):
    (account,) = rt.settings.accounts
    results = await Checks(rt).all()
    assert [r.name for r in results] == [
        "Microsoft Graph",
        f"account {account}",
        "blob write, read, delete",
        "Key Vault read and write",
    ]
    assert all(r.ok for r in results), results
    assert results[0].detail.startswith("skipped: no Microsoft 365 mailbox in MAILBOXES (token, mailbox folders")
    assert "graph-client-state-key" not in results[-1].detail  # the clientState key is Graph's
    assert await cmd_check(rt, build_parser().parse_args(["check"])) == 0
    out = capsys.readouterr().out
    assert "settings: 0 mailbox folder(s), 1 account(s)" in out and "5 of 5 checks passed" in out
    assert "webhook (" not in out and "token (" not in out  # no such check line


async def test_maintain_does_nothing_for_graph_and_records_that(rt: Any, capsys: pytest.CaptureFixture[str]):
    assert await run_pass(rt) == {}
    record = await last_pass(rt)
    assert record is not None and record["idle"] == IDLE and record["failed"] == 0 and record["folders"] == {}
    # Idle for Graph, but the account's start is recorded: its first poll takes the mail since then.
    (account,) = rt.settings.accounts
    cursor, _ = await CursorStore(rt.state).load(account.key)
    assert cursor is not None and cursor.started_at is not None and cursor.last_poll_at is None
    assert await cmd_maintain(rt, argparse.Namespace(app=None)) == 0
    assert (await CursorStore(rt.state).load(account.key))[0] == cursor  # recorded once
    line = f"{_mark(True)} {account}: polled for mail from {cursor.window_start} on"
    assert capsys.readouterr().out == f"{line}\n{IDLE}\n"
    report = await collect_status(rt)
    assert report["folders"] == [] and report["unhealthy"] == []  # no Graph error
    (account,) = report["accounts"]
    assert account["note"] == "not polled yet" and report["healthy"]
    assert f"idle: {IDLE}" in render_status(report)


async def test_unsubscribe_all_removes_graph_records_left_over_without_asking_graph(
    rt: Any, capsys: pytest.CaptureFixture[str]
):
    """Microsoft 365 mailboxes taken out, Graph settings with them: their records go, their subscriptions lapse."""
    gone = FolderState("0123456789abcdef", "old@contoso.com", "Inbox", subscription_id="sub-1")
    gone.expiration = "2026-12-01T00:00:00Z"
    await StateStore(rt.state).save(gone, None)
    assert await cmd_unsubscribe(rt, argparse.Namespace(all=True, target=None)) == 0
    out = capsys.readouterr().out
    expected = "subscription sub-1 not deleted at Graph (no GRAPH_* settings; it lapses at 2026-12-01T00:00:00Z)"
    assert f"old@contoso.com/Inbox: {expected}, record removed" in out
    assert await StateStore(rt.state).folder_keys() == []
    assert "maintain timer" not in out  # no Microsoft 365 mailbox for the timer to subscribe again
