"""One mail through the pipeline, in order and once, whatever its source:

done? → open the mail (the source) → route → store (unpack, rules; manifest last) → hand-off (or, with
MALWARE_SCANNING=defender, the mail recorded as awaiting its verdicts: `malware/`) → after-ingest (the source) →
`done/` marker.

A source hands over an `Arrival` and a way to open the mail (`mail.py`); everything else is here or in
the modules this one calls (`attachments.py` or `rawmail.py` by the content's shape, `job.py` for the
manifest, markers and hand-off). A mail already done costs the source nothing: its `done/` marker is read
before the mail is opened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..logs import log_event
from .attachments import ListedJob
from .filecheck import mail_protected
from .job import IngestOutcome, Markers, finish, hand_off, manifest, skip, write_manifest
from .layout import graph_time, message_prefix
from .mail import Arrival, Listed, Mail, MailGone
from .malware.records import pending_scan, stored_files
from .rawmail import RawJob
from .routes import decide
from .rules import AfterIngest

if TYPE_CHECKING:
    from ..runtime import Runtime

logger = logging.getLogger(__name__)

GONE = "message deleted or moved away before it could be fetched"


async def ingest(
    rt: Runtime, arrival: Arrival, open_mail: Callable[[], AbstractAsyncContextManager[Mail]]
) -> IngestOutcome:
    """Ingest the mail `arrival` names: `duplicate` when it is done already, `gone` when it left its folder
    before it could be read."""
    markers = Markers(rt, arrival.mailbox, arrival.key)
    if await markers.is_done():
        log_event(logger, "ingest.duplicate", **arrival.where, message_key=arrival.key)
        return IngestOutcome("duplicate")
    started = time.monotonic()
    try:
        async with open_mail() as mail:
            return await _ingest(rt, arrival, mail, markers, started)
    except MailGone as exc:
        reason = f"{GONE}: {exc}" if str(exc) else GONE
        record = {**arrival.gone, "at": graph_time(datetime.now(UTC)), "reason": reason, "folder": arrival.folder}
        await markers.mark(markers.gone, record)
        log_event(logger, "ingest.gone", logging.WARNING, **arrival.where, message_key=arrival.key, reason=reason)
        return IngestOutcome("gone")


async def _ingest(rt: Runtime, arrival: Arrival, mail: Mail, markers: Markers, started: float) -> IngestOutcome:
    key, received = arrival.key, mail.received
    prefix = message_prefix(arrival.mailbox, received, key)
    content = mail.content
    job = (
        ListedJob(rt, arrival.mailbox, prefix, key, received, content)
        if isinstance(content, Listed)
        else RawJob(rt, arrival.mailbox, prefix, key, received, content)
    )
    authentication = mail.facts.authentication
    said = {**mail.record, "senderAuthentication": authentication.to_json()} if authentication else dict(mail.record)
    try:
        routes = await rt.routes()  # once per mail: a routes blob that changes meanwhile takes the next mail
        decision = decide(routes, await job.facts(mail.facts, routes))
        if decision.skip:
            place = {"mailbox": arrival.mailbox, "folder": arrival.folder}
            record = {**place, **said, "receivedDateTime": graph_time(received)}
            # Only the route's own after-ingest action applies, not the folder's.
            action = decision.after_ingest or AfterIngest()
            return await skip(markers, decision, record, received, arrival.where, lambda: mail.after_ingest(action))
        at = await job.routed(decision)
        written, final, entries = at.to_write, at.manifest, []
        if written:
            entries = await job.store_files()
            # What is said of the mail itself: its MIME read only in part, its content unreadable (IRM, S/MIME
            # without our key), its own signature (a raw multipart/signed mail's).
            own = {"problem": job.problem, "protected": mail_protected(entries), "signature": job.signature}
            facts_of_mail = {k: v for k, v in own.items() if v}
            final = manifest(
                entries, mailbox=arrival.mailbox, folder=arrival.folder, key=key, received=received,
                decision=decision, mail={**said, **facts_of_mail},
            )  # fmt: skip
            if rt.settings.malware.enabled and stored_files(final):
                final["malwareScan"] = pending_scan(datetime.now(UTC))  # until every file has its verdict
            written, final = await write_manifest(at.store, at.manifest_path, final, at.etag, decision, entries)
    finally:
        job.close()
    await hand_off(rt, final, at.store, at.manifest_path, written=written)
    await mail.after_ingest(decision.after_ingest if decision.after_ingest is not None else mail.default_action)
    return await finish(
        markers,
        decision,
        entries,
        key=key,
        written=written,
        received=received,
        started=started,
        where={**arrival.where, **arrival.via},
    )
