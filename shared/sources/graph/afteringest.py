"""After a mail's manifest is written: mark it read, add a category, move it (Mail.ReadWrite).

Each action is skipped when the mail is already in the wanted state, so a repeated notification, or
a retry after a crash between manifest and action, changes nothing twice.
"""

from __future__ import annotations

import logging
from typing import Any

from ...logs import log_event
from ...pipeline.rules import AfterIngest
from ...runtime import Runtime
from ...settings import MailboxFolder
from .folders import resolve_folder

logger = logging.getLogger(__name__)


async def _destination(rt: Runtime, mailbox: str, path: str) -> str:
    key = (mailbox.lower(), path.lower())
    found = rt.folder_ids.get(key)
    if found is None:
        found = rt.folder_ids[key] = await resolve_folder(rt.graph, mailbox, path, create=True)
    return found


async def apply_after_ingest(
    rt: Runtime,
    folder: MailboxFolder,
    message_path: str,
    message: dict[str, Any],
    key: str,
    wanted: AfterIngest,
) -> list[str]:
    """Bring the mail to the wanted state (the deciding route's action, else its folder's); the actions taken
    (empty when none were needed)."""
    done: list[str] = []
    if not wanted.anything:
        return done
    patch: dict[str, Any] = {}
    if wanted.mark_read and not message.get("isRead"):
        patch["isRead"] = True
    categories = [str(c) for c in message.get("categories") or []]
    if wanted.category and wanted.category.lower() not in {c.lower() for c in categories}:
        patch["categories"] = [*categories, wanted.category]  # PATCH replaces the whole list
    if patch:
        await rt.graph.request("PATCH", message_path, mailbox=folder.mailbox, json=patch)
        done += ["mark-read"] * ("isRead" in patch) + [f"category:{wanted.category}"] * ("categories" in patch)
    if wanted.move_to:
        destination = await _destination(rt, folder.mailbox, wanted.move_to)
        if message.get("parentFolderId") != destination:
            await rt.graph.request(
                "POST", f"{message_path}/move", mailbox=folder.mailbox, json={"destinationId": destination}
            )
            done.append(f"move:{wanted.move_to}")
    if done:
        log_event(logger, "ingest.after", mailbox=folder.mailbox, message_key=key, actions=",".join(done))
    return done
