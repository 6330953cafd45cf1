"""Status per folder: what makes a folder healthy or not, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from shared.ops.activity import Activity, stamp
from shared.ops.health import FolderRecords, folder_status, summary
from shared.pipeline.layout import graph_time
from shared.settings import MailboxFolder
from shared.sources.graph.state import FolderState

FOLDER = MailboxFolder("invoices@contoso.com", "Inbox")
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def records(
    state: FolderState | None = None,
    activity: Activity | None = None,
    auth: dict[str, Any] | None = None,
    configured: bool = True,
) -> FolderRecords:
    return FolderRecords(FOLDER.key, FOLDER.mailbox, FOLDER.folder, configured, state, activity, auth)


def subscribed(**changes: Any) -> FolderState:
    state = FolderState(
        FOLDER.key,
        FOLDER.mailbox,
        FOLDER.folder,
        subscription_id="sub-1",
        expiration=graph_time(NOW + timedelta(days=3)),
        renewed_at=graph_time(NOW - timedelta(hours=1)),
        delta_link="https://graph.example/delta?$deltatoken=secretish",
        last_resync_at=graph_time(NOW - timedelta(minutes=5)),
    )
    for name, value in changes.items():
        setattr(state, name, value)
    return state


def test_a_subscribed_folder_with_recent_ingest_is_healthy():
    activity = Activity.of(FOLDER)
    activity.last_notification_at = stamp(NOW - timedelta(seconds=90))
    activity.last_ingest_at, activity.last_lag_seconds, activity.last_files = stamp(NOW - timedelta(seconds=89)), 2.5, 3
    report = folder_status(records(subscribed(), activity), NOW)
    assert report["healthy"] and report["problems"] == []
    assert report["subscription"]["expires_in_seconds"] == 3 * 86400
    assert report["notification"]["seconds_since"] == 90
    assert report["ingest"]["lag_seconds"] == 2.5 and report["ingest"]["last_files"] == 3
    # The delta link is a token: its presence is shown, not the link.
    assert report["resync"]["delta_link"] is True and "secretish" not in str(report)


def test_why_a_folder_is_unhealthy():
    assert folder_status(records(None), NOW)["problems"] == ["no subscription (the maintain timer creates it)"]
    expired = folder_status(records(subscribed(expiration=graph_time(NOW - timedelta(minutes=1)))), NOW)
    assert expired["problems"] == [f"subscription expired at {graph_time(NOW - timedelta(minutes=1))}"]
    assert expired["subscription"]["expires_in_seconds"] == -60
    failing = subscribed(last_error="GraphAuthError: 403", last_error_at=graph_time(NOW))
    assert folder_status(records(failing), NOW)["problems"] == [
        f"maintain failed at {graph_time(NOW)}: GraphAuthError: 403"
    ]
    poisoned = Activity.of(FOLDER)
    poisoned.last_error, poisoned.last_error_at = "poisoned after 5 deliveries: boom", stamp(NOW)
    assert folder_status(records(subscribed(), poisoned), NOW)["problems"] == [
        f"ingest failed at {stamp(NOW)}: poisoned after 5 deliveries: boom"
    ]
    auth = {"mailbox": FOLDER.mailbox, "status": "needs_consent", "reason": "invalid_grant", "consent_url": "https://x"}
    report = folder_status(records(subscribed(), None, auth), NOW)
    assert report["problems"] == ["sign-in needs_consent: invalid_grant"] and report["auth"] == auth


def test_an_ingest_error_is_over_once_a_later_mail_is_ingested():
    activity = Activity.of(FOLDER)
    activity.last_error, activity.last_error_at = "boom", stamp(NOW - timedelta(minutes=2))
    activity.last_ingest_at = stamp(NOW - timedelta(minutes=1))
    report = folder_status(records(subscribed(), activity), NOW)
    assert report["healthy"] and report["ingest"]["last_error"] == "boom"


def test_auth_ok_and_unconfigured_folders_do_not_count():
    ok = {"mailbox": FOLDER.mailbox, "status": "ok", "refreshed_at": "2026-11-22T07:00:00Z"}
    assert folder_status(records(subscribed(), None, ok), NOW)["healthy"]
    leftover = folder_status(records(subscribed(subscription_id=None), configured=False), NOW)
    assert leftover["healthy"] and "MAILBOXES" in leftover["note"]


def test_summary_names_the_unhealthy_folders():
    good = folder_status(records(subscribed()), NOW)
    bad = folder_status(records(None), NOW)
    queues = {"mail-changes": 0, "mail-changes-poison": 2}
    report = summary([good, bad], queues, NOW)
    assert report["healthy"] is False and report["unhealthy"] == [f"{FOLDER}"]
    assert report["queues"] == queues and "graph-client-state-key" in report["client_state"]
    assert summary([good], queues, NOW)["healthy"] is True
