"""Subscriptions per mailbox folder: resolve the folder, create, renew, recreate; lifecycle events."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ...errors import GraphConflict, GraphError, GraphNotFound, IngestError, StateConflict
from ...logs import log_event, redact_text
from ...pipeline.layout import graph_time, parse_graph_time
from ...runtime import Runtime
from ...settings import MIN_SUBSCRIPTION_MINUTES, MailboxFolder, Settings
from .clientstate import make_client_state, verify_client_state
from .folders import resolve_folder
from .messages import LifecycleMessage
from .pacing import subscription_writes
from .resync import resync_folder
from .state import FolderState, StateStore

logger = logging.getLogger(__name__)

# Graph's answer to a create beyond the cap it enforces names the cap (graph_facts §1).
_CAP = re.compile(r"(\d{2,6})\s*minutes", re.IGNORECASE)
_EXISTING = re.compile(r"Subscription Id\s+<?([0-9a-fA-F-]{36})>?\s+already exists", re.IGNORECASE)
# Reauthorize and PATCH of one subscription must not fall within 10 minutes of each other (graph_facts §4).
REAUTHORIZE_QUIET = timedelta(minutes=10)
# How long a claim to create a folder's subscription holds off other instances; a claimer that
# crashed is overtaken after this.
CREATE_CLAIM = timedelta(minutes=2)
# A subscription is renewed when less than half of its lifetime is left, plus up to this share more, at
# a point fixed per folder: folders subscribed in one pass then fall due over many passes (a quarter of
# 10,080 minutes is 42 hours, 168 timer passes of 15 minutes), not all in one.
RENEWAL_SPREAD = 0.25


def renewal_share(folder_key: str) -> float:
    """The folder's fixed point in the spread, 0 to 1, from a hash of its key (stable across instances)."""
    return int(hashlib.sha256(folder_key.encode()).hexdigest()[:8], 16) / 0x1_0000_0000


def renewal_due(expiration: datetime, minutes: int, folder_key: str) -> datetime:
    """When the subscription of this folder, expiring at `expiration` with a lifetime of `minutes`, is renewed."""
    left = timedelta(minutes=minutes) * (0.5 + RENEWAL_SPREAD * renewal_share(folder_key))
    return expiration - left


def _now() -> datetime:
    return datetime.now(UTC)


class _ClaimedElsewhere(Exception):
    """Another instance is creating this folder's subscription right now."""


class MaintainFailed(IngestError):
    """At least one mailbox folder could not be brought to health; the others were."""


async def _write(rt: Runtime, method: str, path: str, mailbox: str, **kwargs: Any) -> dict[str, Any]:
    """A subscription write (POST, PATCH, DELETE), paced within Graph's limit (pacing.py)."""
    await subscription_writes().acquire()
    result: dict[str, Any] = await rt.graph.request(method, path, mailbox=mailbox, **kwargs)
    return result


async def delete_subscription(rt: Runtime, subscription_id: str, mailbox: str) -> None:
    """Delete at Graph; one already gone is fine."""
    with contextlib.suppress(GraphNotFound):
        await _write(rt, "DELETE", f"subscriptions/{subscription_id}", mailbox)


def lifetime_cap(exc: GraphError, minutes: int) -> int | None:
    """The smaller lifetime a 400 names ("can only be N minutes in the future"), if it names one."""
    cap = _CAP.search(exc.graph_message) if exc.status == 400 else None
    if cap and MIN_SUBSCRIPTION_MINUTES <= int(cap.group(1)) < minutes:
        return int(cap.group(1))
    return None


@dataclass
class _Creator:
    rt: Runtime
    folder: MailboxFolder

    async def create(self, folder_id: str, minutes: int) -> tuple[dict[str, object], int]:
        """The new (or adopted, marked `adopted`) subscription, and the lifetime Graph accepted."""
        rt = self.rt
        body = {
            "changeType": "created",
            "notificationUrl": rt.settings.notification_url,
            "lifecycleNotificationUrl": rt.settings.lifecycle_url,
            # A resource is Graph's own path syntax, not a URL: ids go in as they are.
            "resource": f"users/{self.folder.mailbox}/mailFolders/{folder_id}/messages",
            "expirationDateTime": graph_time(_now() + timedelta(minutes=minutes)),
            "clientState": make_client_state(await rt.client_state_key(), self.folder.key),
            "latestSupportedTlsVersion": "v1_2",
        }
        try:
            return await _write(rt, "POST", "subscriptions", self.folder.mailbox, json=body), minutes
        except GraphConflict as exc:
            # One exists for this resource and changeType: ours from a lost state record, or another's.
            match = _EXISTING.search(exc.graph_message)
            if not match:
                raise
            adopted = await self._adopt(match.group(1), minutes)
            if adopted is not None:
                return {**adopted, "adopted": True}, minutes
            # Not one this deployment can verify: replace it with one whose clientState it can.
            await delete_subscription(rt, match.group(1), self.folder.mailbox)
            log_event(logger, "subscription.replaced", mailbox=self.folder.mailbox, subscription=match.group(1))
            return await _write(rt, "POST", "subscriptions", self.folder.mailbox, json=body), minutes
        except GraphError as exc:
            cap = lifetime_cap(exc, minutes)
            if cap is None:
                raise
            log_event(logger, "subscription.lifetime_capped", logging.WARNING, mailbox=self.folder.mailbox, minutes=cap)
            return await self.create(folder_id, cap)

    async def _adopt(self, subscription_id: str, minutes: int) -> dict[str, object] | None:
        """Keep an existing subscription if it is ours: made by this app, for this deployment's URLs, with a
        clientState minted for this folder with our key. It is then renewed like any other."""
        rt, mailbox = self.rt, self.folder.mailbox
        try:
            found = await rt.graph.request("GET", f"subscriptions/{subscription_id}", mailbox=mailbox)
        except GraphNotFound:
            return None
        ours = (
            str(found.get("applicationId", "")).lower() == rt.settings.client_id.lower()
            and found.get("notificationUrl") == rt.settings.notification_url
            and found.get("lifecycleNotificationUrl") == rt.settings.lifecycle_url
            # Graph may leave clientState out of a read; then it cannot be shown to be ours.
            and verify_client_state(await rt.client_state_key(), found.get("clientState")) == self.folder.key
        )
        if not ours:
            return None
        renewed = await _write(
            rt,
            "PATCH",
            f"subscriptions/{subscription_id}",
            mailbox,
            json={"expirationDateTime": graph_time(_now() + timedelta(minutes=minutes))},
        )
        return {**found, **renewed}


def webhook_fingerprint(settings: Settings) -> str:
    """What a folder's record keeps of the URLs its subscription calls: a hash, so the key stays out of state."""
    urls = f"{settings.notification_url}\n{settings.lifecycle_url}".encode()
    return hashlib.sha256(urls).hexdigest()[:16]


class FolderMaintainer:
    """Brings one mailbox folder's subscription to health and records it in state."""

    def __init__(self, rt: Runtime, folder: MailboxFolder) -> None:
        self.rt = rt
        self.folder = folder
        self.store = StateStore(rt.state)
        self.minutes = rt.settings.subscription_minutes
        self._etag: str | None = None  # of the record as this instance last read or wrote it

    async def _load(self) -> FolderState:
        state, self._etag = await self.store.load(self.folder.key)
        return state or FolderState(self.folder.key, self.folder.mailbox, self.folder.folder)

    def _minutes(self, state: FolderState) -> int:
        """The lifetime asked for: the setting, or the smaller cap Graph named for this folder."""
        return min(self.minutes, state.lifetime_cap_minutes or self.minutes)

    def _needs_renewal(self, state: FolderState, now: datetime) -> bool:
        if not state.subscription_id or not state.expiration:
            return True
        return now >= renewal_due(parse_graph_time(state.expiration), self._minutes(state), self.folder.key)

    def _reconcile_due(self, state: FolderState, now: datetime) -> bool:
        minutes = self.rt.settings.reconcile_minutes
        if not minutes or not state.last_resync_at:
            return bool(minutes)
        return now - parse_graph_time(state.last_resync_at) >= timedelta(minutes=minutes)

    async def ensure(self, after_outage: bool = False) -> str:
        """Create, renew or keep; resync when a subscription is new, after an outage of the app (its webhook
        was down: Graph gives up on notifications after 4 hours), or when the reconciliation is due."""
        state = await self._load()
        now = _now()
        if state.subscription_id and state.webhook not in (None, self._webhook()):
            # The webhook's URLs changed (a rotated function key, a new host name). The lifecycle URL can only
            # be set at creation, so the subscription is made anew; the resync covers the switch-over.
            await delete_subscription(self.rt, state.subscription_id, self.folder.mailbox)
            state.subscription_id = None
            return await self._bring_up(state, now, force_new=True, reason="webhook URL changed")
        if self._needs_renewal(state, now):
            action = await self._bring_up(state, now, force_new=False)
            if after_outage and action == "renewed":
                await resync_folder(self.rt, self.folder, "after an outage")
                return "renewed, resynced"
            return action
        if after_outage:
            await resync_folder(self.rt, self.folder, "after an outage")
            return "kept, resynced"
        if self._reconcile_due(state, now):
            await resync_folder(self.rt, self.folder, "reconcile")
            return "kept, reconciled"
        return "kept"

    def _webhook(self) -> str:
        return webhook_fingerprint(self.rt.settings)

    async def _bring_up(self, state: FolderState, now: datetime, *, force_new: bool, reason: str | None = None) -> str:
        """Renew (or create, with `force_new` always create) and save the record, its error too."""
        try:
            action = await self._apply(state, now, force_new)
            state.last_error = state.last_error_at = None
            state.webhook = self._webhook()  # the URLs a new, adopted or renewed subscription calls
        except _ClaimedElsewhere:
            log_event(logger, "subscription.left", mailbox=self.folder.mailbox, folder=self.folder.folder)
            return "left to another instance"
        except IngestError as exc:
            state.last_error, state.last_error_at = redact_text(str(exc)), graph_time(now)
            state.creating_at = None  # the claim is released, so the next run tries again at once
            await self._save(state)
            raise
        state.creating_at = None
        await self._save(state)
        log_event(
            logger,
            f"subscription.{action}",
            mailbox=self.folder.mailbox,
            folder=self.folder.folder,
            subscription=state.subscription_id,
            expires=state.expiration,
            reason=reason,
        )
        if action in ("created", "adopted") and not state.delta_link:
            # A folder's first subscription: mail from now on, or from the backfill window.
            since = now - timedelta(hours=self.rt.settings.backfill_hours)
            await resync_folder(self.rt, self.folder, "first subscription", since=since)
        elif action in ("created", "recreated", "adopted"):
            # While there was no subscription, notifications were lost: the delta has them.
            await resync_folder(self.rt, self.folder, f"subscription {action}")
        return action

    async def _claim(self, state: FolderState, now: datetime) -> None:
        """Mark the record as being created on, by ETag: of two timer instances only one creates."""
        if state.creating_at and now - parse_graph_time(state.creating_at) < CREATE_CLAIM:
            raise _ClaimedElsewhere
        state.creating_at = graph_time(now)
        try:
            self._etag = await self.store.save(state, self._etag)
        except StateConflict:
            raise _ClaimedElsewhere from None

    async def _apply(self, state: FolderState, now: datetime, force_new: bool) -> str:
        minutes = self._minutes(state)
        if state.subscription_id and not force_new:
            try:
                renewed, minutes = await self._renew(state.subscription_id, now, minutes)
                state.expiration = str(renewed.get("expirationDateTime"))
                state.renewed_at = graph_time(now)
                self._note_cap(state, minutes)
                return "renewed"
            except GraphNotFound:
                state.subscription_id = None
                force_new = True  # Graph lost it: a recreation, with a resync to follow
        # The claim names no subscription: should this instance die before it saves the new one, the next
        # timer pass finds none (rather than the removed one, which it would keep) and creates it once the
        # claim has lapsed.
        state.subscription_id = None
        await self._claim(state, now)
        if not state.folder_id:
            state.folder_id = await resolve_folder(self.rt.graph, self.folder.mailbox, self.folder.folder)
        created, minutes = await _Creator(self.rt, self.folder).create(state.folder_id, minutes)
        state.subscription_id = str(created["id"])
        state.expiration = str(created.get("expirationDateTime"))
        state.renewed_at = graph_time(now)
        self._note_cap(state, minutes)
        if created.get("adopted"):
            return "adopted"
        return "recreated" if force_new else "created"

    async def _renew(self, subscription_id: str, now: datetime, minutes: int) -> tuple[dict[str, object], int]:
        """PATCH a new expiry; a 400 naming a smaller cap is retried once with that cap."""
        path = f"subscriptions/{subscription_id}"
        mailbox = self.folder.mailbox
        try:
            body = {"expirationDateTime": graph_time(now + timedelta(minutes=minutes))}
            return await _write(self.rt, "PATCH", path, mailbox, json=body), minutes
        except GraphError as exc:
            cap = lifetime_cap(exc, minutes)
            if cap is None:
                raise
            log_event(logger, "subscription.lifetime_capped", logging.WARNING, mailbox=mailbox, minutes=cap)
            body = {"expirationDateTime": graph_time(now + timedelta(minutes=cap))}
            return await _write(self.rt, "PATCH", path, mailbox, json=body), cap

    def _note_cap(self, state: FolderState, minutes: int) -> None:
        """Remember a cap, so later renewals ask for what Graph accepts (and renew at its half-life)."""
        state.lifetime_cap_minutes = minutes if minutes < self.minutes else None

    async def _save(self, state: FolderState) -> None:
        try:
            self._etag = await self.store.save(state, self._etag)
        except StateConflict:
            # Another timer instance updated this folder meanwhile; its record stands.
            log_event(
                logger,
                "state.conflict",
                logging.WARNING,
                mailbox=self.folder.mailbox,
                folder=self.folder.folder,
            )

    async def on_lifecycle(self, event: LifecycleMessage) -> str:
        state = await self._load()
        now = _now()
        state.last_lifecycle_event, state.last_lifecycle_at = event.event, graph_time(now)
        if event.subscription_id != state.subscription_id:
            await self._save(state)
            log_event(logger, "lifecycle.stale", mailbox=self.folder.mailbox, subscription=event.subscription_id)
            return "stale"
        if event.event == "subscriptionRemoved":
            return await self._bring_up(state, now, force_new=True)
        renewed = parse_graph_time(state.renewed_at) if state.renewed_at else None
        if event.event == "reauthorizationRequired" and not (renewed and now - renewed < REAUTHORIZE_QUIET):
            # A PATCH both reauthorizes and renews, in one call (graph_facts §4).
            return await self._bring_up(state, now, force_new=False)
        await self._save(state)
        if event.event == "reauthorizationRequired":
            return "recently renewed"
        log_event(
            logger,
            "lifecycle.missed",
            logging.WARNING,
            mailbox=self.folder.mailbox,
            subscription=event.subscription_id,
            reason="Graph reports missed notifications",
        )
        outcome = await resync_folder(self.rt, self.folder, "missed notifications")
        return f"resynced, {outcome.enqueued} enqueued"


async def retire_unconfigured(rt: Runtime) -> list[str]:
    """Folders with a state record but no longer in MAILBOXES: their subscription is deleted, then the
    record. Graph would otherwise keep notifying, until expiry, about mail nobody ingests."""
    store = StateStore(rt.state)
    retired = []
    for key in await store.folder_keys():
        if rt.settings.folder_by_key(key) is not None:
            continue
        state, etag = await store.load(key)
        if state is None:
            continue
        if state.subscription_id:
            await delete_subscription(rt, state.subscription_id, state.mailbox)
        with contextlib.suppress(StateConflict):  # another instance retired it meanwhile
            await store.remove(key, etag)
        log_event(
            logger,
            "subscription.deleted",
            mailbox=state.mailbox,
            folder=state.folder,
            subscription=state.subscription_id,
            reason="no longer in MAILBOXES",
        )
        retired.append(f"{state.mailbox}/{state.folder}")
    return retired


async def maintain_folders(rt: Runtime, *, after_outage: bool = False) -> dict[str, str]:
    """Every configured folder, side by side; one folder's failure does not stop the others. Folders
    no longer configured are unsubscribed. `after_outage`: the timer ran late, so every folder is resynced.
    Folder → what was done (`failed: ...` for a failure)."""
    folders = rt.settings.mailboxes

    async def one(folder: MailboxFolder) -> str:
        try:
            return await FolderMaintainer(rt, folder).ensure(after_outage)
        except IngestError as exc:
            log_event(
                logger,
                "subscription.failed",
                logging.ERROR,
                mailbox=folder.mailbox,
                folder=folder.folder,
                reason=str(exc),
            )
            return f"failed: {exc}"

    results = await asyncio.gather(*(one(f) for f in folders))
    report = {str(f): r for f, r in zip(folders, results, strict=True)}
    try:
        report.update({name: "unsubscribed: no longer configured" for name in await retire_unconfigured(rt)})
    except IngestError as exc:
        log_event(logger, "subscription.failed", logging.ERROR, reason=f"retiring removed mailboxes: {exc}")
        report["(removed mailboxes)"] = f"failed: {exc}"
    return report


async def handle_lifecycle(event: LifecycleMessage, rt: Runtime) -> str:
    folder = rt.settings.folder_by_key(event.folder_key)
    if folder is None:
        log_event(logger, "lifecycle.ignored", logging.WARNING, folder_key=event.folder_key)
        return "ignored"
    result = await FolderMaintainer(rt, folder).on_lifecycle(event)
    log_event(
        logger,
        "lifecycle.handled",
        mailbox=folder.mailbox,
        lifecycle=event.event,
        subscription=event.subscription_id,
        result=result,
    )
    return result
