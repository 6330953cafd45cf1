"""Delta resync of one mailbox folder: every mail notifications may have missed goes to the queue.

Graph pairs change notifications with delta query as the safety net (graph_facts §7): after a
`missed` lifecycle event, a lost or recreated subscription, a webhook outage, and periodically, the
folder's delta since the saved link lists what arrived. Each new message is enqueued as a change,
so the ingest worker stays the one place that writes blobs; its idempotency absorbs overlaps with
notifications. A delta link Graph refuses (`410`, `syncStateNotFound`) is replaced by a full
round over a bounded window.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ...errors import GraphError, StateConflict
from ...logs import log_event
from ...pipeline.layout import graph_time
from ...pipeline.poison import CHANGES_QUEUE
from ...runtime import Runtime
from ...settings import MailboxFolder
from .folders import resolve_folder, user_path
from .messages import RESYNC, ChangeMessage
from .state import FolderState, StateStore

logger = logging.getLogger(__name__)

DELTA_SELECT = "id,receivedDateTime"
ENQUEUE_CONCURRENCY = 16


def _refused(exc: GraphError) -> bool:
    return exc.status == 410 or exc.code.lower() in ("syncstatenotfound", "resyncrequired")


@dataclass(frozen=True)
class ResyncOutcome:
    enqueued: int
    full: bool  # a full round over a window, not from a saved delta link


class _Round:
    """One delta round: pages from a start URL to the closing deltaLink, each new message enqueued."""

    def __init__(self, rt: Runtime, folder: MailboxFolder, state: FolderState) -> None:
        self.rt = rt
        self.folder = folder
        self.state = state
        self.enqueued = 0

    def first_request(self, folder_id: str, since: datetime) -> tuple[str, dict[str, str]]:
        path = f"{user_path(self.folder.mailbox)}/mailFolders/{quote(folder_id, safe='')}/messages/delta"
        return path, {
            "changeType": "created",
            "$select": DELTA_SELECT,
            "$filter": f"receivedDateTime ge {graph_time(since)}",
        }

    async def run(self, url: str, params: dict[str, str] | None) -> str:
        while True:
            page = await self.rt.graph.request("GET", url, mailbox=self.folder.mailbox, params=params)
            await self._enqueue([i for i in page.get("value", []) if isinstance(i, dict) and "@removed" not in i])
            next_link, delta_link = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
            if delta_link:
                return str(delta_link)
            if not next_link:
                raise GraphError(200, "NoDeltaLink", "a delta page had neither nextLink nor deltaLink", "GET delta")
            url, params = str(next_link), None  # the link carries every query option

    async def _enqueue(self, items: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        slots = asyncio.Semaphore(ENQUEUE_CONCURRENCY)
        mailbox = self.folder.mailbox

        async def one(item: dict[str, Any]) -> None:
            message_id = str(item["id"])
            change = ChangeMessage(
                self.folder.key,
                self.state.subscription_id or "resync",
                "created",
                message_id,
                f"users/{mailbox}/messages/{message_id}",
                now,
                RESYNC,
            )
            async with slots:
                await self.rt.send_queue_message(CHANGES_QUEUE, change.to_json())

        await asyncio.gather(*(one(item) for item in items))
        self.enqueued += len(items)


async def resync_folder(
    rt: Runtime, folder: MailboxFolder, reason: str, *, since: datetime | None = None
) -> ResyncOutcome:
    """Enqueue what arrived since the saved delta link (or, with `since` or no link, since then)."""
    store = StateStore(rt.state)
    state, etag = await store.load(folder.key)
    state = state or FolderState(folder.key, folder.mailbox, folder.folder)
    if not state.folder_id:
        state.folder_id = await resolve_folder(rt.graph, folder.mailbox, folder.folder)
    now = datetime.now(UTC)
    full = since is not None or not state.delta_link
    start = since or now - timedelta(hours=rt.settings.full_resync_hours)
    work = _Round(rt, folder, state)
    try:
        if full:
            link = await work.run(*work.first_request(state.folder_id, start))
        else:
            link = await work.run(str(state.delta_link), None)
    except GraphError as exc:
        if full or not _refused(exc):
            raise
        # The saved link is no longer valid: start over from a bounded window.
        log_event(
            logger, "resync.reset", logging.WARNING, mailbox=folder.mailbox, folder=folder.folder, reason=str(exc)
        )
        full, start = True, now - timedelta(hours=rt.settings.full_resync_hours)
        link = await work.run(*work.first_request(state.folder_id, start))
    state.delta_link, state.last_resync_at = link, graph_time(now)
    try:
        await store.save(state, etag)
    except StateConflict:
        # Another instance changed the record meanwhile: keep its fields, add the new link.
        fresh, fresh_etag = await store.load(folder.key)
        if fresh is not None:
            fresh.delta_link, fresh.last_resync_at, fresh.folder_id = link, state.last_resync_at, state.folder_id
            await store.save(fresh, fresh_etag)
    log_event(
        logger,
        "resync.done",
        mailbox=folder.mailbox,
        folder=folder.folder,
        reason=reason,
        enqueued=work.enqueued,
        full=full,
        since=graph_time(start) if full else None,
    )
    return ResyncOutcome(work.enqueued, full)
