"""The hand-off: one "mail ingested" message on a Storage queue (`INGESTED_QUEUE`) per completed mail, so the
next system (capture, OCR, a Logic App) learns of new work without listing containers.

At least once, with a stable id (the message key) that consumers de-duplicate on. Sent after the manifest is
`complete` and before the after-ingest actions. Once sent, a record `handoff/{mailbox}/{messageKey}.json` in
the state container says so, and a retry that finds the mail complete looks there first:

- the worker that completed the manifest sends, then writes the record;
- a worker that found the manifest already complete (a duplicate notification, or the retry of a worker that
  failed or crashed after the manifest) sends only when there is no record. It first gives the manifest's
  writer `GRACE_SECONDS` from the manifest's `ingestedAt` to write it: a duplicate racing the writer then
  sends nothing, and a writer that crashed before sending is covered, late but surely.

A crash between sending and the record sends the message again: at least once, never lost.

The message is base64-encoded, as the Functions queue trigger expects by default and as the app writes every
queue message (shared/queuetext.py). A Storage queue message holds at most 64 KiB: a mail with very many files
lists as many as fit, says `filesComplete: false`, and the manifest has the rest.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import StateConflict
from ..logs import log_event
from .layout import graph_time, parse_graph_time
from .storage import BlobStore

logger = logging.getLogger(__name__)

MESSAGE_TYPE = "mail.ingested"
VERSION = 1
# 64 KiB per queue message, base64 included (4 bytes per 3).
MAX_MESSAGE_BYTES = 64 * 1024
GRACE_SECONDS = 10.0
# What the checks found on a file (`filecheck.py`, unpack's `Damaged`), passed on when there is something.
FILE_CHECKS = ("duplicateOf", "protected", "damaged", "malwareScan")
POLL_SECONDS = 0.25


def record_path(mailbox: str, key: str) -> str:
    return f"handoff/{mailbox.lower()}/{key}.json"


def _dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def _fits(message: Mapping[str, Any]) -> bool:
    return len(base64.b64encode(_dump(message).encode())) <= MAX_MESSAGE_BYTES


def handoff_message(manifest: Mapping[str, Any], store: BlobStore, manifest_path: str) -> str:
    """The message for a complete manifest: where it is, which mail, and each stored file."""
    files = [
        {
            "url": store.url(entry["blob"]),
            "name": entry.get("name"),
            "file": entry.get("file"),
            "contentType": entry.get("contentType"),
            "size": entry.get("size"),
            "sha256": entry.get("sha256"),
            "kind": entry.get("kind"),
            **({"parent": entry["parent"]} if entry.get("parent") else {}),
            **{k: entry[k] for k in FILE_CHECKS if entry.get(k)},
        }
        for entry in manifest.get("attachments") or []
        if entry.get("blob")
    ]
    # Every duplicate, stored (DUPLICATES=mark) or not (skip): a consumer that books documents skips them.
    duplicates = [
        {k: entry.get(k) for k in ("name", "file", "sha256", "duplicateOf")} | {"stored": bool(entry.get("blob"))}
        for entry in manifest.get("attachments") or []
        if entry.get("duplicateOf")
    ]
    # MALWARE_SCANNING: the files moved to the quarantine are not handed off, only named.
    quarantined = [
        {k: entry.get(k) for k in ("name", "file", "sha256")} | {"malwareScan": entry["malwareScan"]}
        for entry in manifest.get("attachments") or []
        if (entry.get("malwareScan") or {}).get("status") == "malicious"
    ]
    message: dict[str, Any] = {
        "type": MESSAGE_TYPE,
        "version": VERSION,
        "id": manifest["messageKey"],
        "messageKey": manifest["messageKey"],
        "mailbox": manifest.get("mailbox"),
        "folder": manifest.get("folder"),
        "route": manifest.get("route"),
        "receivedDateTime": manifest.get("receivedDateTime"),
        "container": store.name,
        "manifest": store.url(manifest_path),
        "fileCount": len(files),
        "filesComplete": True,
        "files": files,
        **({"duplicates": duplicates} if duplicates else {}),
        **({"protected": manifest["protected"]} if manifest.get("protected") else {}),
        **({"malwareScan": manifest["malwareScan"]} if manifest.get("malwareScan") else {}),
        **({"quarantined": quarantined} if quarantined else {}),
    }
    for name in ("senderAuthentication", "signature"):  # the mail's own, when the manifest has them
        if manifest.get(name):
            message[name] = manifest[name]
    if _fits(message):
        return _dump(message)
    # The most files that fit, by bisection: the first `low` fit, the first `high` do not.
    message["filesComplete"] = False
    low, high = 0, len(files)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _fits({**message, "files": files[:middle]}) else (low, middle)
    keep = low
    return _dump({**message, "files": files[:keep]})


class HandOff:
    """Sends a completed mail's message once (at least once across crashes), recorded in `state`."""

    def __init__(
        self,
        state: BlobStore,
        send: Callable[[str], Awaitable[None]],
        queue: str,
        grace_seconds: float = GRACE_SECONDS,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._state = state
        self._send = send
        self._queue = queue
        self._grace = grace_seconds
        self._poll = poll_seconds

    async def _recorded(self, path: str) -> bool:
        return await self._state.read_json(path) is not None

    async def _writer_had_time(self, manifest: Mapping[str, Any], path: str) -> bool:
        """False when the record appeared while waiting out the writer's grace period."""
        try:
            written = parse_graph_time(str(manifest["ingestedAt"]))
        except (KeyError, ValueError):
            return True  # no usable time: the writer is taken to be long gone
        while (datetime.now(UTC) - written).total_seconds() < self._grace:
            await asyncio.sleep(self._poll)
            if await self._recorded(path):
                return False
        return True

    async def __call__(
        self, manifest: Mapping[str, Any], store: BlobStore, manifest_path: str, *, wrote_manifest: bool
    ) -> str:
        """`sent` (this worker completed the mail), `resent` (found complete, no record: it may have been
        lost) or `recorded` (sent before)."""
        mailbox, key = str(manifest["mailbox"]), str(manifest["messageKey"])
        path = record_path(mailbox, key)
        if not wrote_manifest and (await self._recorded(path) or not await self._writer_had_time(manifest, path)):
            return "recorded"
        text = handoff_message(manifest, store, manifest_path)
        await self._send(text)
        record = {"queue": self._queue, "at": graph_time(datetime.now(UTC)), "route": manifest.get("route")}
        with contextlib.suppress(StateConflict):  # a concurrent worker recorded its send first
            await self._state.write_json(path, record, None)
        outcome = "sent" if wrote_manifest else "resent"
        log_event(
            logger,
            f"handoff.{outcome}",
            mailbox=mailbox,
            message_key=key,
            route=manifest.get("route"),
            queue=self._queue,
            files=len([e for e in manifest.get("attachments") or [] if e.get("blob")]),
        )
        return outcome
