"""The operator CLI's arguments, dates, targets and settings file."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.cli import (
    QUEUES,
    UsageError,
    build_parser,
    configured_folders,
    load_local_settings,
    main,
    parse_since,
    render_pass,
    render_status,
)
from shared.ops.activity import Activity
from shared.ops.health import FolderRecords, folder_status, summary
from shared.settings import MailboxFolder, Settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("2026-11-20T08:30", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
        ("2026-11-20T08:30:15Z", datetime(2026, 11, 20, 8, 30, 15, tzinfo=UTC)),
        ("2026-11-20T09:30:00+01:00", datetime(2026, 11, 20, 8, 30, tzinfo=UTC)),
    ],
)
def test_since_dates(text: str, expected: datetime):
    assert parse_since(text) == expected
    assert parse_since(text).tzinfo == UTC


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "20/11/2026", ""])
def test_bad_since_dates(text: str):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_since(text)


def test_arguments():
    parser = build_parser()
    args = parser.parse_args(["resync", "Scans@Contoso.com/Inbox/ Delivery notes", "--since", "2026-11-20"])
    assert args.target == ("scans@contoso.com", "Inbox/Delivery notes")
    assert args.since == datetime(2026, 11, 20, tzinfo=UTC)
    assert parser.parse_args(["resync", "a@x.com"]).target == ("a@x.com", None)
    assert parser.parse_args(["resync", "a@x.com"]).since is None
    replay = parser.parse_args(["replay-poison", "--queue", "lifecycle", "--dry-run"])
    assert (replay.queue, replay.dry_run) == ("lifecycle", True)
    assert parser.parse_args(["replay-poison"]).queue == "changes"
    assert parser.parse_args(["unsubscribe", "--all"]).all is True
    assert parser.parse_args(["status", "--json"]).json is True


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["resync"],
        ["resync", "a@x.com", "--since", "soon"],
        ["replay-poison", "--queue", "other"],
        ["unsubscribe"],
        ["unsubscribe", "a@x.com", "--all"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2


def test_targets_pick_configured_folders(settings: Settings):
    scans = MailboxFolder("scans@contoso.com", "Inbox/Delivery notes")
    assert configured_folders(settings, ("scans@contoso.com", None)) == [scans]
    assert configured_folders(settings, ("scans@contoso.com", "inbox/delivery NOTES")) == [scans]
    with pytest.raises(UsageError, match=r"mailbox nobody@contoso\.com is not in MAILBOXES"):
        configured_folders(settings, ("nobody@contoso.com", None))
    with pytest.raises(UsageError, match=r"folder 'Archive' of scans@contoso\.com"):
        configured_folders(settings, ("scans@contoso.com", "Archive"))


def test_local_settings_fill_in_without_overriding(tmp_path: Path):
    path = tmp_path / "local.settings.json"
    path.write_text(
        json.dumps({"IsEncrypted": False, "Values": {"MAILBOXES": "a@x.com", "KEY_VAULT_URL": "https://v"}})
    )
    environ = {"MAILBOXES": "b@x.com"}
    assert load_local_settings(path, environ) == 1
    assert environ == {"MAILBOXES": "b@x.com", "KEY_VAULT_URL": "https://v"}
    path.write_text("[]")
    with pytest.raises(UsageError, match="no Values"):
        load_local_settings(path, environ)


def test_broken_settings_are_one_line(env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path):
    del env["MAILBOXES"]
    missing = tmp_path / "absent.json"
    assert main(["--settings", str(missing), "status"], env) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["status"], dict(env)) == 1
    assert capsys.readouterr().err == "error: setting MAILBOXES: required but not set\n"
    assert main(["check"], dict(env)) == 1
    out = capsys.readouterr().out.splitlines()
    assert "settings: setting MAILBOXES: required but not set" in out[0] and out[1].startswith("    fix: ")


def test_status_names_the_route_the_last_skip_and_the_last_maintain_pass():
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    activity = Activity("k1", "ap@contoso.com", "Inbox")
    activity.last_ingest_at, activity.last_message_key, activity.last_route = "2026-11-29T11:59:00Z", "m1", "suppliers"
    activity.last_skipped_at, activity.last_skipped_message_key = "2026-11-29T11:58:00Z", "m0"
    activity.last_skipped_route = "spam"
    records = FolderRecords("k1", "ap@contoso.com", "Inbox", True, None, activity, None)
    report = summary([folder_status(records, now)], {"mail-changes": 0}, now)
    report["maintain"] = {"at": "2026-11-29T11:45:00Z", "failed": 1, "folders": {}}
    text = render_status(report)
    assert "message m1" in text and ", route suppliers" in text
    assert "skipped       last 2026-11-29T11:58:00Z: message m0, route spam" in text
    assert "maintain: last pass 2026-11-29T11:45:00Z, 1 folder(s) failed" in text
    lines = render_pass({"ap@contoso.com/Inbox": "created", "x@contoso.com/Inbox": "failed: 403 Forbidden"})
    assert [line[2:] for line in lines] == [
        "ap@contoso.com/Inbox: created",
        "x@contoso.com/Inbox: failed: 403 Forbidden",
    ]
    assert lines[0][0] != lines[1][0]  # a mark for done, another for failed


def test_a_parked_fetch_request_names_its_account_and_message(env: dict[str, str]):
    from shared.cli import describe
    from shared.pipeline.poison import Parked
    from shared.settings import parse_settings

    env["MAILBOXES"] = "invoices@contoso.com, imaps://ap%40example.org@imap.example?secret=pw"
    settings = parse_settings(env)
    (account,) = settings.accounts
    request = {"type": "fetch", "account": account.key, "protocol": "imap", "fingerprint": "abc123", "size": 5}
    parked = Parked("1", None, json.dumps(request), "MailAuthFailed: refused", "2026-11-29T10:00:00Z", None)
    assert describe(settings, parked) == (
        "imaps://ap%40example.org@imap.example:993/INBOX message abc123 (parked 2026-11-29T10:00:00Z): "
        "MailAuthFailed: refused"
    )
    assert build_parser().parse_args(["replay-poison", "--queue", "fetch"]).queue == "fetch"
    poll = Parked("2", None, json.dumps({"type": "poll", "account": account.key}), "TimeoutError: x", None, None)
    assert describe(settings, poll).startswith("imaps://ap%40example.org@imap.example:993/INBOX poll (parked -)")


def test_replay_poison_covers_the_queue_of_every_queue_trigger(env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """A message of any queue trigger can end in that queue's poison queue, so each can be replayed."""
    import importlib

    from shared.settings import get_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()  # function_app parses the settings as it is imported
    try:
        app = importlib.reload(importlib.import_module("function_app")).app
    finally:
        get_settings.cache_clear()
    triggered = {
        binding.get_dict_repr()["queueName"]
        for function in app.get_functions()
        for binding in function.get_bindings()
        if binding.type == "queueTrigger"
    }
    assert triggered == set(QUEUES.values())
