"""The poll timer's fan-out and its schedule setting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import SettingsError
from shared.pipeline.storage import BlobStore
from shared.settings import parse_settings
from shared.sources.cursor import CursorStore
from shared.sources.jobs import fan_out, poll_requests


class Out:
    def __init__(self) -> None:
        self.value: list[str] | None = None

    def set(self, value: list[str]) -> None:
        self.value = value

    def get(self) -> list[str] | None:
        return self.value


def test_one_poll_message_per_account_folder(env):
    env["MAILBOXES"] = "a@contoso.com, imaps://x@h/Scans?secret=s, imaps://x@h?secret=s, pop3s://y@h?secret=t"
    settings = parse_settings(env)
    sent = [json.loads(m) for m in poll_requests(settings)]
    assert sent == [{"type": "poll", "account": a.key} for a in settings.accounts]
    assert len({m["account"] for m in sent}) == 3


async def test_no_accounts_no_messages_and_no_io(monkeypatch: pytest.MonkeyPatch, env):
    from shared import runtime, workers
    from shared import settings as settings_module

    def no_runtime() -> None:
        raise AssertionError("the fan-out reached storage without any account")

    monkeypatch.setattr(workers, "get_settings", lambda: settings_module.parse_settings(env))
    monkeypatch.setattr(runtime, "get_runtime", no_runtime)
    out = Out()
    await workers.poll_fan_out(out)  # type: ignore[arg-type]
    assert out.value is None


async def test_the_fan_out_records_each_new_accounts_start_once(env, store: BlobStore):
    env["MAILBOXES"] = "a@contoso.com, imaps://x@h/Scans?secret=s, pop3s://y@h?secret=t"
    env["BACKFILL_HOURS"] = "3"
    settings = parse_settings(env)
    first = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    sent = await fan_out(store, settings, first)
    assert [json.loads(m)["account"] for m in sent] == [a.key for a in settings.accounts]
    cursors = CursorStore(store)
    recorded = [await cursors.load(a.key) for a in settings.accounts]
    for cursor, _ in recorded:
        assert cursor is not None and cursor.started_at == "2026-12-01T08:00:00Z"
        assert cursor.window_start == "2026-12-01T04:45:00Z"  # less BACKFILL_HOURS and the clock margin
        assert cursor.last_poll_at is None and cursor.uidvalidity is None and not cursor.listed
    # The next tick reads each start and writes nothing.
    await fan_out(store, settings, first + timedelta(minutes=1))
    assert [await cursors.load(a.key) for a in settings.accounts] == recorded


def test_the_poll_schedule_is_ncrontab_with_seconds(env):
    assert parse_settings(env).mail_poll_schedule == "0 * * * * *"
    env["MAIL_POLL_SCHEDULE"] = " */30  * * * * * "
    assert parse_settings(env).mail_poll_schedule == "*/30 * * * * *"
    env["MAIL_POLL_SCHEDULE"] = "* * * * *"
    with pytest.raises(SettingsError, match="MAIL_POLL_SCHEDULE"):
        parse_settings(env)
