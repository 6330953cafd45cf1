"""The per-folder activity record: merge rules, and concurrent workers merging by ETag in Azurite."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shared.ops.activity import Activity, ActivityStore, failed, ingested, merge, notified, stamp
from shared.pipeline.job import IngestOutcome
from shared.pipeline.storage import BlobStore
from shared.settings import MailboxFolder
from shared.sources.graph.messages import RESYNC, ChangeMessage

FOLDER = MailboxFolder("invoices@contoso.com", "Inbox")
T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return stamp(T0 + timedelta(seconds=seconds))


def change(notified_at: str, origin: str = "notification") -> ChangeMessage:
    return ChangeMessage(FOLDER.key, "sub", "created", "msg-1", "Users/u/Messages/msg-1", notified_at, origin)


def test_a_newer_group_replaces_an_older_one_whole():
    current = Activity.of(FOLDER)
    current.last_ingest_at, current.last_message_key, current.last_files = at(10), "old", 3
    update = Activity.of(FOLDER)
    update.last_ingest_at, update.last_message_key, update.last_files = at(20), "new", 1
    merged = merge(current, update)
    assert (merged.last_ingest_at, merged.last_message_key, merged.last_files) == (at(20), "new", 1)


def test_timestamps_never_move_backwards():
    current = Activity.of(FOLDER)
    current.last_notification_at, current.last_ingest_at, current.last_message_key = at(30), at(30), "newest"
    current.last_error, current.last_error_at = "late failure", at(30)
    older = Activity.of(FOLDER)
    older.last_notification_at, older.last_ingest_at, older.last_message_key = at(5), at(5), "older"
    older.last_error, older.last_error_at = "early failure", at(5)
    assert merge(current, older) == current
    # An equal timestamp keeps what is stored: the first writer stands.
    same = Activity.of(FOLDER)
    same.last_ingest_at, same.last_message_key = at(30), "same time"
    assert merge(current, same).last_message_key == "newest"


def test_groups_are_independent():
    current = Activity.of(FOLDER)
    current.last_notification_at, current.last_error_at, current.last_error = at(50), at(1), "old error"
    update = Activity.of(FOLDER)
    update.last_notification_at, update.last_error_at, update.last_error = at(2), at(40), "new error"
    merged = merge(current, update)
    assert merged.last_notification_at == at(50)
    assert (merged.last_error_at, merged.last_error) == (at(40), "new error")


def test_an_error_is_current_until_a_later_ingest():
    activity = Activity.of(FOLDER)
    assert not activity.error_is_current
    activity.last_error, activity.last_error_at = "boom", at(10)
    assert activity.error_is_current
    activity.last_ingest_at = at(5)
    assert activity.error_is_current
    activity.last_ingest_at = at(11)
    assert not activity.error_is_current


def test_updates_from_a_change():
    received = "2026-11-22T07:59:50Z"
    outcome = IngestOutcome("ingested", 2, 300, "p", "key1", received)
    now = T0 + timedelta(seconds=1.5)
    done = ingested(FOLDER, change("2026-11-22T07:59:55.250+00:00"), outcome, now)
    assert done.last_notification_at == "2026-11-22T07:59:55.250Z"
    assert (done.last_ingest_at, done.last_message_key, done.last_files, done.last_bytes) == (
        stamp(now),
        "key1",
        2,
        300,
    )
    assert done.last_lag_seconds == 11.5  # ingested - receivedDateTime
    # A duplicate or a gone mail still tells of a notification, but of no ingest.
    duplicate = ingested(FOLDER, change(at(0)), IngestOutcome("duplicate"), now)
    assert duplicate.last_notification_at == at(0) and duplicate.last_ingest_at is None
    # A change the resync enqueued is no notification from Graph.
    assert notified(FOLDER, change(at(0), RESYNC)).last_notification_at is None
    error = failed(FOLDER, change(at(0)), "GraphThrottled: 503", now)
    assert (error.last_error, error.last_error_at, error.last_ingest_at) == ("GraphThrottled: 503", stamp(now), None)


async def test_concurrent_workers_keep_the_newest_of_everything(store: BlobStore):
    activities = ActivityStore(store)
    updates = []
    for i in range(24):
        update = Activity.of(FOLDER)
        update.last_notification_at = at(i)
        if i % 2:
            update.last_ingest_at, update.last_message_key = at(100 - i), f"m{i}"
        else:
            update.last_error_at, update.last_error = at(i * 3), f"e{i}"
        updates.append(update)
    # Every worker reads the same first version, so most writes conflict and are merged again.
    await asyncio.gather(*(activities.record(u) for u in updates))
    final = await activities.load(FOLDER.key)
    assert final is not None
    assert final.last_notification_at == at(23)
    assert (final.last_ingest_at, final.last_message_key) == (at(99), "m1")
    assert (final.last_error_at, final.last_error) == (at(66), "e22")


async def test_an_older_update_writes_nothing(store: BlobStore):
    activities = ActivityStore(store)
    newer = Activity.of(FOLDER)
    newer.last_notification_at = at(10)
    await activities.record(newer)
    etag = (await store.read_json(ActivityStore.path(FOLDER.key)) or ({}, ""))[1]
    older = Activity.of(FOLDER)
    older.last_notification_at = at(1)
    assert await activities.record(older) == newer
    assert (await store.read_json(ActivityStore.path(FOLDER.key)) or ({}, ""))[1] == etag


@pytest.mark.parametrize("bad", ["yesterday", ""])
def test_a_stamp_the_app_did_not_write_is_ignored(bad: str):
    assert notified(FOLDER, change(bad)).last_notification_at is None


def test_a_skipped_mail_is_recorded_apart_from_the_last_ingest():
    now = T0 + timedelta(seconds=2)
    ingest = ingested(FOLDER, change(at(0)), IngestOutcome("ingested", 1, 5, "p", "k1", at(0), "ap"), now)
    assert ingest.last_route == "ap" and ingest.last_skipped_at is None
    skipped = ingested(FOLDER, change(at(1)), IngestOutcome("skipped", key="k2", received=at(1), route="junk"), now)
    assert (skipped.last_skipped_at, skipped.last_skipped_message_key, skipped.last_skipped_route) == (
        stamp(now),
        "k2",
        "junk",
    )
    assert skipped.last_ingest_at is None  # a skipped mail is no ingest: the lag stays the last stored mail's
    merged = merge(ingest, skipped)
    assert merged.last_message_key == "k1" and merged.last_skipped_route == "junk"
