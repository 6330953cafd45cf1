"""Entry points the function app calls: one per trigger, each taking plain values."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import azure.functions as func

from .delivery import DEFAULT_EVENTGRID_QUEUE
from .errors import one_line
from .logs import log_event
from .pipeline.poison import CHANGES_QUEUE, FETCH_QUEUE, LIFECYCLE_QUEUE
from .settings import get_settings
from .sources.graph.known_subscriptions import Holding
from .sources.graph.webhook import receive, verify_changes, verify_lifecycle

if TYPE_CHECKING:
    from .ops.activity import Place
    from .pipeline.job import IngestOutcome
    from .runtime import Runtime
    from .sources.graph.messages import ChangeMessage

logger = logging.getLogger(__name__)


async def _secret() -> bytes:
    from .runtime import get_runtime

    return await get_runtime().client_state_key()


async def _holds(folder_key: str, subscription_id: str, arrived: float) -> Holding:
    from .runtime import get_runtime

    return await get_runtime().subscriptions.holds(folder_key, subscription_id, arrived)


class _Encoded(func.Out[list[str]]):
    """A queue output binding whose messages are written as the app writes every queue message (base64:
    queuetext.for_output), whatever host.json's messageEncoding."""

    def __init__(self, out: func.Out[list[str]]) -> None:
        self._out = out

    def set(self, val: list[str]) -> None:
        from .queuetext import for_output

        self._out.set(for_output(val))

    def get(self) -> list[str]:
        return self._out.get()


async def notifications(req: func.HttpRequest, out: func.Out[list[str]]) -> func.HttpResponse:
    return await receive(req, _Encoded(out), verify_changes, get_settings(), _secret, _holds, "notifications")


async def lifecycle(req: func.HttpRequest, out: func.Out[list[str]]) -> func.HttpResponse:
    return await receive(req, _Encoded(out), verify_lifecycle, get_settings(), _secret, _holds, "lifecycle")


def _about(body: bytes) -> dict[str, str]:
    """Mailbox, folder, subscription and message key of a queue message, as far as it can be read."""
    import json

    from .pipeline.layout import message_key

    try:
        data = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    fields: dict[str, str] = {}
    folder = get_settings().folder_by_key(str(data.get("folder_key")))
    account = get_settings().account_by_key(str(data.get("account")))
    if folder is not None:
        fields.update(mailbox=folder.mailbox, folder=folder.folder)
    elif account is not None:
        fields.update(mailbox=account.address, folder=account.folder, account=str(account))
        if isinstance(data.get("fingerprint"), str):
            fields["message_key"] = account.message_key(data["fingerprint"])
    if isinstance(data.get("subscription_id"), str):
        fields["subscription"] = data["subscription_id"]
    if isinstance(data.get("message_id"), str):
        fields["message_key"] = message_key(data["message_id"])
    return fields


async def _park_now(msg: func.QueueMessage, queue: str, body: bytes, reason: str, event: str) -> None:
    """Park a message no delivery could ever take, with its reason, on its first delivery."""
    from .pipeline.poison import park
    from .runtime import get_runtime

    await park(get_runtime(), queue, body, reason, msg.dequeue_count or 0)
    log_event(logger, event, logging.ERROR, queue_message=msg.id, reason=reason)


async def _queued(
    msg: func.QueueMessage, queue: str, events: tuple[str, str], work: Callable[[bytes], Awaitable[object]]
) -> None:
    """Run the work on the message's JSON (queuetext.py: plain or base64); on failure log `events[0]`, and on
    the last delivery park the message and log `events[1]`. A message that is neither is parked at once."""
    from .errors import UnreadableQueueMessage
    from .hostqueues import max_dequeue_count
    from .pipeline.poison import park
    from .queuetext import decode
    from .runtime import get_runtime

    failed, poisoned = events
    try:
        body = decode(msg.get_body())
    except UnreadableQueueMessage as exc:
        await _park_now(msg, queue, msg.get_body(), one_line(exc), poisoned)
        return
    try:
        await work(body)
    except Exception as exc:
        reason = one_line(exc)
        count = msg.dequeue_count or 0
        about = _about(body)
        log_event(logger, failed, logging.ERROR, queue_message=msg.id, dequeue_count=count, reason=reason, **about)
        if count < max_dequeue_count():
            raise  # the queue delivers it again after the visibility timeout
        # The last delivery: park it with its reason and let the host delete the original. Should
        # parking fail, the error propagates and the host moves the bare message to poison itself.
        await park(get_runtime(), queue, body, reason, count)
        log_event(logger, poisoned, logging.ERROR, queue_message=msg.id, reason=reason, **about)


# What an ingest worker reads from its queue message: the mailbox folder or account (None: no longer
# configured), the Graph change if it is one, and the ingest to run.
Reading = tuple["Place | None", "ChangeMessage | None", Callable[[], Awaitable["IngestOutcome"]]]


async def _ingesting(msg: func.QueueMessage, queue: str, read: Callable[[Runtime, bytes], Reading]) -> None:
    """One mail's ingest, its outcome or failure in its folder's (or account's) activity record."""
    from .hostqueues import max_dequeue_count
    from .ops import activity
    from .runtime import get_runtime

    async def work(body: bytes) -> None:
        rt = get_runtime()
        where, change, run = read(rt, body)
        try:
            outcome = await run()
        except Exception as exc:
            if where is not None:
                reason = one_line(exc)
                if (msg.dequeue_count or 0) >= max_dequeue_count():
                    reason = f"poisoned after {msg.dequeue_count} deliveries: {reason}"
                await activity.record(rt.state, activity.failed(where, change, reason, datetime.now(UTC)))
            raise
        if where is not None:
            await activity.record(rt.state, activity.ingested(where, change, outcome, datetime.now(UTC)))

    await _queued(msg, queue, ("ingest.failed", "ingest.poisoned"), work)


async def ingest(msg: func.QueueMessage) -> None:
    """A Graph change: the mail's attachments into Blob Storage."""
    from .sources.graph.ingest import ingest_change
    from .sources.graph.messages import parse_change

    def read(rt: Runtime, body: bytes) -> Reading:
        change = parse_change(body)
        return rt.settings.folder_by_key(change.folder_key), change, lambda: ingest_change(change, rt)

    await _ingesting(msg, CHANGES_QUEUE, read)


async def fetch(msg: func.QueueMessage) -> None:
    """A `mail-fetch` request: an IMAP or POP3 message into Blob Storage, as Graph mail."""
    from .sources.accounts import ingest_fetched
    from .sources.fetch import FetchRequest

    def read(rt: Runtime, body: bytes) -> Reading:
        request = FetchRequest.parse(body)
        return rt.settings.account_by_key(request.account), None, lambda: ingest_fetched(request, rt)

    await _ingesting(msg, FETCH_QUEUE, read)


async def graph_event(msg: func.QueueMessage, changes: func.Out[list[str]], events: func.Out[list[str]]) -> None:
    """A Graph CloudEvent from the Event Grid queue: checked as the webhook checks an item, then queued where
    the webhook queues it (a change to `mail-changes`, a lifecycle event to `mail-lifecycle`). A forged event
    is dropped; one that can never be read is parked at once, with its reason."""
    from .errors import InvalidNotification
    from .sources.graph.eventgrid import parse_event, verify_event
    from .sources.graph.known_subscriptions import now
    from .sources.graph.webhook import Trust

    settings = get_settings()
    queue = settings.eventgrid.queue if settings.eventgrid is not None else DEFAULT_EVENTGRID_QUEUE
    arrived = now()

    async def work(body: bytes) -> None:
        try:
            event = parse_event(body)
        except InvalidNotification as exc:
            await _park_now(msg, queue, body, f"not a Graph event: {exc}", "event.poisoned")
            return
        verdict = await verify_event(event, Trust(settings, await _secret(), _holds, arrived))
        if verdict.messages:
            _Encoded(changes if event.kind == "change" else events).set(verdict.messages)

    await _queued(msg, queue, ("event.failed", "event.poisoned"), work)


async def malware_verdict(msg: func.QueueMessage) -> None:
    """A Defender for Storage scan result from MALWARE_SCAN_QUEUE: recorded, and the mail settled when it was its
    last verdict. A foreign event (another type, account or container, an old eTag) is dropped; one that can
    never be read is parked at once, with its reason."""
    from .errors import QueueMessageError
    from .pipeline.malware.event import Foreign, Ignored
    from .pipeline.malware.worker import receive
    from .runtime import get_runtime

    queue = get_settings().malware.queue

    async def work(body: bytes) -> None:
        try:
            await receive(get_runtime(), body)
        except Ignored as exc:
            log_event(logger, "malware.ignored", logging.DEBUG, queue_message=msg.id, reason=str(exc))
        except Foreign as exc:
            log_event(logger, "malware.dropped", logging.WARNING, queue_message=msg.id, reason=str(exc))
        except QueueMessageError as exc:
            await _park_now(msg, queue, body, f"not a scan result: {exc}", "malware.poisoned")

    await _queued(msg, queue, ("malware.failed", "malware.poisoned"), work)


async def lifecycle_event(msg: func.QueueMessage) -> None:
    from .runtime import get_runtime
    from .sources.graph.messages import parse_lifecycle
    from .sources.graph.subscriptions import handle_lifecycle

    async def work(body: bytes) -> None:
        await handle_lifecycle(parse_lifecycle(body), get_runtime())

    await _queued(msg, LIFECYCLE_QUEUE, ("lifecycle.failed", "lifecycle.poisoned"), work)


async def maintain(past_due: bool = False) -> dict[str, str]:
    from .pipeline.malware.worker import sweep
    from .runtime import get_runtime
    from .sources.graph.maintain import raise_if_failed, run_pass

    rt = get_runtime()
    report = await run_pass(rt, after_outage=past_due)
    # Mails past MALWARE_SCAN_TIMEOUT_MINUTES handed off as unscanned; also after scanning was turned off (one
    # listing of the state container's `malware/awaiting/` when nothing waits).
    await sweep(rt)
    raise_if_failed(report)
    return report


async def health() -> func.HttpResponse:
    """Every folder's status as JSON: 200 when all are healthy, 503 (with the reasons) otherwise."""
    from .ops.health import collect_status, to_json
    from .runtime import get_runtime

    try:
        report = await collect_status(get_runtime())
    except Exception as exc:  # storage unreachable or refusing: that is the answer, not a crash
        log_event(logger, "health.failed", logging.ERROR, reason=one_line(exc))
        report = {"healthy": False, "error": f"status could not be read: {one_line(exc)}"}
    status = 200 if report["healthy"] else 503
    return func.HttpResponse(to_json(report), status_code=status, mimetype="application/json", charset="utf-8")


async def poll_fan_out(out: func.Out[list[str]]) -> None:
    """The poll timer: each new account's start recorded (one read per account, a write only when missing),
    then one `mail-poll` message per IMAP or POP3 account folder (no I/O and no message without any)."""
    from .clock import now
    from .runtime import get_runtime
    from .sources.jobs import fan_out

    settings = get_settings()
    if settings.accounts:
        _Encoded(out).set(await fan_out(get_runtime().state, settings, now()))


async def poll(msg: func.QueueMessage) -> None:
    """Poll one account; a server's refusal is kept on its cursor (the next tick tries again), anything else
    (storage, a malformed message) fails the queue message."""
    from .pipeline.poison import POLL_QUEUE
    from .runtime import get_runtime
    from .sources.jobs import run_poll

    async def work(body: bytes) -> None:
        await run_poll(get_runtime(), body)

    await _queued(msg, POLL_QUEUE, ("poll.failed", "poll.poisoned"), work)
