"""What /api/health and `status --json` say about each IMAP and POP3 account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.pipeline.layout import graph_time
from shared.settings import parse_account
from shared.sources.cursor import SourceCursor
from shared.sources.status import account_status, add_accounts

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
IMAP = parse_account("imaps://ap%40example.org@imap.example.org/Scans?secret=ap")
POP3 = parse_account("pop3s://desk@mail.example.net?secret=desk")


def cursor(account, **changes) -> SourceCursor:
    record = SourceCursor(account.key, str(account), account.protocol, graph_time(NOW - timedelta(days=2)))
    record.last_poll_at = graph_time(NOW - timedelta(minutes=1))
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def test_a_polled_account_is_healthy_and_shows_its_cursor():
    report = account_status(IMAP, cursor(IMAP, uidvalidity=7, last_uid=42, queued=3), NOW)
    assert report["healthy"] and report["problems"] == []
    assert report["cursor"] == {"uidvalidity": 7, "last_uid": 42}
    assert (report["address"], report["folder"], report["queued"]) == ("ap@example.org", "Scans", 3)
    pop3 = account_status(POP3, cursor(POP3, uidls=["a", "b"]), NOW)
    assert pop3["cursor"] == {"uidls_seen": 2}


def test_an_account_not_polled_yet_is_not_a_problem():
    report = account_status(IMAP, None, NOW)
    assert report["healthy"] and report["note"] == "not polled yet"
    # Started (by the maintain pass or the fan-out) with a day of backfill, not polled yet: fine for an hour.
    started = SourceCursor.start(IMAP, NOW - timedelta(minutes=59), 24)
    report = account_status(IMAP, started, NOW)
    assert report["healthy"] and report["note"] == "not polled yet" and report["started_at"] == started.started_at
    assert account_status(IMAP, started, NOW + timedelta(minutes=2))["problems"] == [
        f"no complete poll since {started.started_at}"
    ]


def test_why_an_account_is_unhealthy():
    failing = cursor(IMAP, last_error="MailAuthFailed: [AUTHENTICATIONFAILED]", last_error_at=graph_time(NOW))
    assert account_status(IMAP, failing, NOW)["problems"] == [
        f"poll failed at {graph_time(NOW)}: MailAuthFailed: [AUTHENTICATIONFAILED]"
    ]
    stale = cursor(IMAP, last_poll_at=graph_time(NOW - timedelta(hours=2)))
    assert account_status(IMAP, stale, NOW)["problems"] == [f"no complete poll since {stale.last_poll_at}"]


def test_an_unhealthy_account_makes_the_report_unhealthy():
    good, bad = account_status(POP3, None, NOW), account_status(IMAP, cursor(IMAP, last_error="x"), NOW)
    report = add_accounts({"healthy": True, "unhealthy": []}, [good, bad])
    assert report["healthy"] is False and report["unhealthy"] == [str(IMAP)]
    assert add_accounts({"healthy": True, "unhealthy": []}, [good])["healthy"] is True


def test_a_cursor_saved_before_listed_was_kept_reads_as_its_polls_left_it():
    """A POP3 cursor polled once had its first listing sorted through; one never polled had not."""
    polled = {"account_key": "k", "account": str(POP3), "protocol": "pop3", "window_start": graph_time(NOW)}
    assert SourceCursor.from_dict({**polled, "last_poll_at": graph_time(NOW)}).listed
    assert not SourceCursor.from_dict(polled).listed
    assert not SourceCursor.from_dict({**polled, "last_poll_at": graph_time(NOW), "listed": False}).listed
