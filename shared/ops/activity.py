"""Per mailbox folder activity: when Graph last notified, the last mail ingested and its lag, the
last ingest error.

Kept apart from the folder's state record (`folders/{key}.json`), which the maintain timer owns and
saves by ETag: ingest workers writing there would make the timer's saves conflict. Each folder has
its own small record, `activity/{key}.json` in the state container, which only the ingest worker
writes. Workers run side by side and finish out of order, so each write is a merge by ETag, retried
on a conflict, and a merge never moves a timestamp backwards.

The webhook writes nothing here (it must answer fast): the last notification is the time the
webhook stamped into the change message (`notified_at`), recorded when the worker takes it.

Lag is `ingested_at - receivedDateTime` of the last mail ingested: how long that mail took from
the mailbox to Blob Storage (a mail found by a resync shows the whole time it waited).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import StateConflict, one_line
from ..logs import log_event
from ..pipeline.layout import parse_graph_time
from ..pipeline.storage import BlobStore
from ..settings import MailboxFolder
from ..sources.graph.messages import NOTIFICATION, ChangeMessage

if TYPE_CHECKING:
    from ..pipeline.job import IngestOutcome
    from ..settings import MailAccount

    Place = MailboxFolder | MailAccount  # a Microsoft 365 mailbox folder, or an IMAP or POP3 account

logger = logging.getLogger(__name__)

# Concurrent workers of one folder retry a conflicting merge this often before giving the update up.
MERGE_ATTEMPTS = 12


def stamp(when: datetime) -> str:
    """UTC with milliseconds: finer than Graph's whole seconds, so close events keep their order."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Activity:
    folder_key: str
    mailbox: str
    folder: str
    last_notification_at: str | None = None
    last_ingest_at: str | None = None
    last_message_key: str | None = None
    last_received_at: str | None = None  # the last ingested mail's receivedDateTime
    last_files: int | None = None
    last_bytes: int | None = None
    last_lag_seconds: float | None = None
    last_error: str | None = None
    last_error_at: str | None = None
    last_route: str | None = None  # the route that decided the last mail ingested
    last_skipped_at: str | None = None  # the last mail a skip route recorded and left unstored
    last_skipped_message_key: str | None = None
    last_skipped_route: str | None = None

    @classmethod
    def of(cls, folder: Place) -> Activity:
        return cls(folder.key, folder.mailbox, folder.folder)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Activity:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def error_is_current(self) -> bool:
        """An error after the last successful ingest (a later success shows the cause is gone)."""
        if not self.last_error_at:
            return False
        return not self.last_ingest_at or _after(self.last_error_at, self.last_ingest_at)


# Each group moves together, taken from whichever side has the newer timestamp (its first field).
GROUPS: tuple[tuple[str, ...], ...] = (
    ("last_notification_at",),
    (
        "last_ingest_at",
        "last_message_key",
        "last_received_at",
        "last_files",
        "last_bytes",
        "last_lag_seconds",
        "last_route",
    ),
    ("last_error_at", "last_error"),
    ("last_skipped_at", "last_skipped_message_key", "last_skipped_route"),
)


def _after(a: str, b: str) -> bool:
    return parse_graph_time(a) > parse_graph_time(b)


def merge(current: Activity, update: Activity) -> Activity:
    """`current` with every group of `update` that is newer; an older or equal one is dropped."""
    merged = replace(current)
    for group in GROUPS:
        new, old = getattr(update, group[0]), getattr(current, group[0])
        if new is not None and (old is None or _after(new, old)):
            for name in group:
                setattr(merged, name, getattr(update, name))
    return merged


class ActivityStore:
    PREFIX = "activity/"

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    @classmethod
    def path(cls, folder_key: str) -> str:
        return f"{cls.PREFIX}{folder_key}.json"

    async def load(self, folder_key: str) -> Activity | None:
        found = await self._blobs.read_json(self.path(folder_key))
        return Activity.from_dict(found[0]) if found else None

    async def remove(self, folder_key: str) -> None:
        await self._blobs.delete(self.path(folder_key))

    async def record(self, update: Activity) -> Activity:
        """Merge `update` into the stored record by ETag, retrying when another worker wrote first."""
        path = self.path(update.folder_key)
        for attempt in range(MERGE_ATTEMPTS):
            found = await self._blobs.read_json(path)
            if found is None:
                current, etag = Activity(update.folder_key, update.mailbox, update.folder), None
            else:
                current, etag = Activity.from_dict(found[0]), found[1]
            merged = merge(current, update)
            if found is not None and merged == current:
                return current  # nothing newer: no write
            try:
                await self._blobs.write_json(path, asdict(merged), etag)
                return merged
            except StateConflict:
                # Spread the retries of workers that collided, so they do not collide again.
                await asyncio.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        raise StateConflict(f"{path}: still conflicting after {MERGE_ATTEMPTS} attempts")


def notified(folder: Place, change: ChangeMessage | None) -> Activity:
    """What the change says about notifications: when the webhook took it, if it came from Graph (an IMAP or
    POP3 account's mail comes from a poll: no change)."""
    activity = Activity.of(folder)
    if change is not None and change.origin == NOTIFICATION:
        with contextlib.suppress(ValueError):  # a stamp this app did not write: nothing to learn from it
            activity.last_notification_at = stamp(parse_graph_time(change.notified_at))
    return activity


def ingested(folder: Place, change: ChangeMessage | None, outcome: IngestOutcome, now: datetime) -> Activity:
    activity = notified(folder, change)
    if outcome.status == "ingested" and outcome.received is not None:
        received = parse_graph_time(outcome.received)
        activity.last_ingest_at = stamp(now)
        activity.last_message_key = outcome.key
        activity.last_received_at = stamp(received)
        activity.last_files = outcome.files
        activity.last_bytes = outcome.bytes
        activity.last_lag_seconds = round((now - received).total_seconds(), 3)
        activity.last_route = outcome.route
    elif outcome.status == "skipped":
        activity.last_skipped_at = stamp(now)
        activity.last_skipped_message_key = outcome.key
        activity.last_skipped_route = outcome.route
    return activity


def failed(folder: Place, change: ChangeMessage | None, reason: str, now: datetime) -> Activity:
    activity = notified(folder, change)
    activity.last_error, activity.last_error_at = reason, stamp(now)
    return activity


async def record(blobs: BlobStore, update: Activity) -> None:
    """Best effort: the mail is in Blob Storage whatever happens here, so a failure is only logged
    (failing the queue message would repeat an ingest that succeeded)."""
    try:
        await ActivityStore(blobs).record(update)
    except Exception as exc:  # storage errors of any kind (the SDK's own included): a log line only
        log_event(
            logger,
            "activity.failed",
            logging.WARNING,
            mailbox=update.mailbox,
            folder=update.folder,
            reason=one_line(exc),
        )
