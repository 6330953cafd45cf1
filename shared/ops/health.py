"""The status of every mailbox folder, for `python -m shared.cli status` and `GET /api/health`.

Per folder it joins the timer's state record (subscription, expiry, renewal, resync, the timer's
last error), the ingest worker's activity record (last notification, last ingest, lag, last ingest
error) and the mailbox's sign-in record (`auth/{mailbox}.json`, written in delegated mode), and
says why the folder is unhealthy, if it is. A folder is healthy when its subscription exists and has
not expired, no error is current, and its mailbox's sign-in is not waiting for consent.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..pipeline.layout import graph_time, parse_graph_time
from ..pipeline.poison import CHANGES_QUEUE, FETCH_QUEUE, LIFECYCLE_QUEUE, POLL_QUEUE, poison_queue
from ..settings import MailboxFolder
from ..sources.graph.maintain import last_pass
from ..sources.graph.state import FolderState, StateStore
from ..sources.status import accounts_status, add_accounts
from ..vault import CLIENT_STATE_SECRET
from . import eventgrid, malware
from .activity import Activity, ActivityStore

if TYPE_CHECKING:
    from ..pipeline.storage import BlobStore
    from ..runtime import Runtime

# How a notification's clientState is verified; a fact of the code, shown rather than stored.
CLIENT_STATE = (
    "hmac-sha256 over the folder key and a per-subscription nonce "
    f"(key in Key Vault secret {CLIENT_STATE_SECRET}), compared in constant time"
)
QUEUES = (
    CHANGES_QUEUE,
    poison_queue(CHANGES_QUEUE),
    LIFECYCLE_QUEUE,
    poison_queue(LIFECYCLE_QUEUE),
    # IMAP and POP3 accounts: the polls in flight, and the new mail found and waiting to be fetched.
    POLL_QUEUE,
    poison_queue(POLL_QUEUE),
    FETCH_QUEUE,
)


def auth_path(mailbox: str) -> str:
    return f"auth/{mailbox.lower()}.json"


def _seconds(later: datetime, earlier: datetime) -> int:
    return round((later - earlier).total_seconds())


@dataclass(frozen=True)
class FolderRecords:
    """What storage holds about one mailbox folder."""

    folder_key: str
    mailbox: str
    folder: str
    configured: bool
    state: FolderState | None
    activity: Activity | None
    auth: dict[str, Any] | None


def problems(records: FolderRecords, now: datetime) -> list[str]:
    """Why the folder is not healthy; empty when it is."""
    if not records.configured:
        return []  # not in MAILBOXES: the timer unsubscribes it, nothing is expected of it
    found: list[str] = []
    state = records.state
    if state is None or not state.subscription_id:
        found.append("no subscription (the maintain timer creates it)")
    elif not state.expiration:
        found.append("subscription has no known expiry")
    elif parse_graph_time(state.expiration) <= now:
        found.append(f"subscription expired at {state.expiration}")
    if state is not None and state.last_error:
        found.append(f"maintain failed at {state.last_error_at}: {state.last_error}")
    activity = records.activity
    if activity is not None and activity.error_is_current:
        found.append(f"ingest failed at {activity.last_error_at}: {activity.last_error}")
    auth = records.auth
    if auth is not None and auth.get("status", "ok") != "ok":
        found.append(f"sign-in {auth.get('status')}: {auth.get('reason') or 'no reason given'}")
    return found


def ingest_json(activity: Activity) -> dict[str, Any]:
    """What the ingest worker recorded of a mailbox folder or an IMAP or POP3 account."""
    return {
        "last_at": activity.last_ingest_at,
        "last_message_key": activity.last_message_key,
        "last_received_at": activity.last_received_at,
        "last_files": activity.last_files,
        "last_bytes": activity.last_bytes,
        "lag_seconds": activity.last_lag_seconds,
        "last_route": activity.last_route,
        "last_skipped_at": activity.last_skipped_at,
        "last_skipped_message_key": activity.last_skipped_message_key,
        "last_skipped_route": activity.last_skipped_route,
        "last_error": activity.last_error,
        "last_error_at": activity.last_error_at,
    }


def folder_status(records: FolderRecords, now: datetime) -> dict[str, Any]:
    """One folder's status as JSON: what is known, the derived ages, and its problems."""
    state, activity = records.state, records.activity
    found = problems(records, now)
    report: dict[str, Any] = {
        "mailbox": records.mailbox,
        "folder": records.folder,
        "folder_key": records.folder_key,
        "configured": records.configured,
        "healthy": not found,
        "problems": found,
    }
    if not records.configured:
        report["note"] = "not in MAILBOXES: the next maintain run deletes its subscription and record"
    # A folder without a record yet reads as an empty one: every field absent.
    state = state or FolderState(records.folder_key, records.mailbox, records.folder)
    activity = activity or Activity(records.folder_key, records.mailbox, records.folder)
    expires_in = _seconds(parse_graph_time(state.expiration), now) if state.expiration else None
    report["subscription"] = {
        "id": state.subscription_id,
        "expiration": state.expiration,
        "expires_in_seconds": expires_in,
        "renewed_at": state.renewed_at,
        "folder_id": state.folder_id,
        "last_lifecycle_event": state.last_lifecycle_event,
        "last_lifecycle_at": state.last_lifecycle_at,
        "last_error": state.last_error,
        "last_error_at": state.last_error_at,
    }
    report["resync"] = {
        "last_at": state.last_resync_at,
        "delta_link": bool(state.delta_link),  # present or not; the link itself is a token
    }
    last_notification = activity.last_notification_at
    report["notification"] = {
        "last_at": last_notification,
        "seconds_since": _seconds(now, parse_graph_time(last_notification)) if last_notification else None,
    }
    report["ingest"] = ingest_json(activity)
    report["auth"] = records.auth
    return report


def summary(folders: list[dict[str, Any]], queues: dict[str, int], now: datetime) -> dict[str, Any]:
    unhealthy = [f"{f['mailbox']}/{f['folder']}" for f in folders if not f["healthy"]]
    return {
        "healthy": not unhealthy,
        "unhealthy": unhealthy,
        "checked_at": graph_time(now),
        "client_state": CLIENT_STATE,
        "queues": queues,
        "folders": folders,
    }


async def _json(blobs: BlobStore, path: str) -> dict[str, Any] | None:
    found = await blobs.read_json(path)
    return found[0] if found else None


async def _configured(rt: Runtime, folder: MailboxFolder) -> FolderRecords:
    (state, _), (activity, auth) = await asyncio.gather(StateStore(rt.state).load(folder.key), _beside(rt, folder))
    return FolderRecords(folder.key, folder.mailbox, folder.folder, True, state, activity, auth)


async def _unconfigured(rt: Runtime, state: FolderState) -> FolderRecords:
    folder = MailboxFolder(state.mailbox, state.folder)
    activity, auth = await _beside(rt, folder)
    return FolderRecords(state.folder_key, state.mailbox, state.folder, False, state, activity, auth)


async def _beside(rt: Runtime, folder: MailboxFolder) -> tuple[Activity | None, dict[str, Any] | None]:
    """The records next to the timer's: the worker's activity and the mailbox's sign-in."""
    activity, auth = await asyncio.gather(
        ActivityStore(rt.state).load(folder.key), _json(rt.state, auth_path(folder.mailbox))
    )
    return activity, auth


async def queue_counts(rt: Runtime) -> dict[str, int]:
    """Approximate message counts; 0 for a queue not created yet. The hand-off queue's depth is the mail the
    next system has not taken yet."""
    from azure.core.exceptions import ResourceNotFoundError

    async def count(name: str) -> int:
        try:
            props = await rt.queues.get_queue_client(name).get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(props.approximate_message_count or 0)

    names = (*QUEUES, *eventgrid.queues(rt), *malware.queues(rt))
    names = (*names, rt.settings.ingested_queue) if rt.settings.ingested_queue else names
    counts = await asyncio.gather(*(count(name) for name in names))
    return dict(zip(names, counts, strict=True))


async def collect_status(rt: Runtime, now: datetime | None = None) -> dict[str, Any]:
    """Every configured folder, then every folder that has a state record but is no longer configured."""
    now = now or datetime.now(UTC)
    store = StateStore(rt.state)
    configured = {f.key for f in rt.settings.mailboxes}
    leftover = [key for key in await store.folder_keys() if key not in configured]
    states = [state for state, _ in await asyncio.gather(*(store.load(key) for key in leftover))]
    jobs = [_configured(rt, f) for f in rt.settings.mailboxes]
    jobs += [_unconfigured(rt, state) for state in states if state is not None]
    records, queues, last = await asyncio.gather(asyncio.gather(*jobs), queue_counts(rt), last_pass(rt))
    report = summary([folder_status(r, now) for r in records], queues, now)
    report["maintain"] = last  # what the last maintain pass did, per folder (None: no pass yet)
    found_eventgrid = await eventgrid.status(rt)
    if found_eventgrid is not None:
        report["eventgrid"] = found_eventgrid
    scanning = await malware.status(rt, now)
    if scanning is not None:
        report["malware"] = scanning
    accounts = await accounts_status(rt.state, rt.settings.accounts, now)
    activities = ActivityStore(rt.state)
    found = await asyncio.gather(*(activities.load(a.key) for a in rt.settings.accounts))
    for account, (report_of, activity) in zip(rt.settings.accounts, zip(accounts, found, strict=True), strict=True):
        report_of["ingest"] = ingest_json(activity or Activity.of(account))
    return await add_routes(rt, add_accounts(report, accounts))


async def add_routes(rt: Runtime, report: dict[str, Any]) -> dict[str, Any]:
    """ROUTES_BLOB's state, this process's view (the CLI reads the blob now): a problem makes the report unhealthy."""
    blob = rt.routes_blob
    if blob is None:
        return report
    await blob.refresh(now=True)
    report["routes"] = {"blob": blob.name, "problem": blob.problem}
    if blob.problem:
        report["healthy"] = False
        report["unhealthy"] = [*report["unhealthy"], f"routes ({blob.name})"]
    return report


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1)
