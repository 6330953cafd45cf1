"""The poll timer's fan-out and its schedule setting."""

from __future__ import annotations

import json

import pytest

from shared.errors import SettingsError
from shared.settings import parse_settings
from shared.sources.jobs import poll_requests


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


def test_no_accounts_no_messages(monkeypatch: pytest.MonkeyPatch, env):
    from shared import settings as settings_module
    from shared import workers

    monkeypatch.setattr(workers, "get_settings", lambda: settings_module.parse_settings(env))
    out = Out()
    workers.poll_fan_out(out)  # type: ignore[arg-type]
    assert out.value is None


def test_the_poll_schedule_is_ncrontab_with_seconds(env):
    assert parse_settings(env).mail_poll_schedule == "0 * * * * *"
    env["MAIL_POLL_SCHEDULE"] = " */30  * * * * * "
    assert parse_settings(env).mail_poll_schedule == "*/30 * * * * *"
    env["MAIL_POLL_SCHEDULE"] = "* * * * *"
    with pytest.raises(SettingsError, match="MAIL_POLL_SCHEDULE"):
        parse_settings(env)
