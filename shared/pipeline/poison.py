"""Queue messages that still fail on their last delivery: parked in `{queue}-poison` with the reason.

The Functions host would move such a message to the poison queue by itself, but bare: the reason
would only be in a log line. Parking it here first keeps the reason with it, for `replay-poison`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import QueueMessageError
from ..queuetext import decode

if TYPE_CHECKING:
    from ..runtime import Runtime

CHANGES_QUEUE = "mail-changes"
LIFECYCLE_QUEUE = "mail-lifecycle"
POLL_QUEUE = "mail-poll"  # one message per IMAP or POP3 account folder and poll timer tick
FETCH_QUEUE = "mail-fetch"  # one message per new IMAP or POP3 mail found by a poll


def poison_queue(queue: str) -> str:
    return f"{queue}-poison"


def poisoned(queue: str, body: bytes, reason: str, dequeue_count: int) -> dict[str, Any]:
    """The parked message: the original as the worker read it (as JSON when it is JSON), and why it was
    given up."""
    text = body.decode("utf-8", "replace")
    original: Any
    try:
        original = json.loads(text)
    except ValueError:
        original = text
    return {
        "type": "poisoned",
        "v": 1,
        "queue": queue,
        "reason": reason,
        "dequeueCount": dequeue_count,
        "failedAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "message": original,
    }


async def park(rt: Runtime, queue: str, body: bytes, reason: str, dequeue_count: int) -> None:
    record = poisoned(queue, body, reason, dequeue_count)
    await rt.send_queue_message(poison_queue(queue), json.dumps(record, separators=(",", ":")))


@dataclass(frozen=True)
class Parked:
    """A message in a poison queue: the original to send back, and why it was given up."""

    id: str
    pop_receipt: str | None
    original: str
    reason: str | None
    failed_at: str | None
    inserted_on: datetime | None


def _text(content: object) -> str:
    """A message's text as a worker reads it (queuetext.py: JSON, or base64 of JSON), else as it is."""
    raw = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    try:
        return decode(raw.encode("utf-8")).decode("utf-8")
    except (QueueMessageError, UnicodeDecodeError):
        return raw


def unwrap(message_id: str, pop_receipt: str | None, content: object, inserted_on: datetime | None) -> Parked:
    """A parked record gives back its original; a bare message (moved by the host itself) is its own."""
    text = _text(content)
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict) and record.get("type") == "poisoned" and "message" in record:
        inner = record["message"]
        original = inner if isinstance(inner, str) else json.dumps(inner, separators=(",", ":"))
        reason, failed_at = record.get("reason"), record.get("failedAt")
        return Parked(message_id, pop_receipt, original, str(reason) if reason else None, failed_at, inserted_on)
    return Parked(message_id, pop_receipt, text, None, None, inserted_on)


async def peek_parked(rt: Runtime, queue: str, limit: int = 32) -> tuple[list[Parked], int]:
    """Up to `limit` parked messages (the service shows at most 32 without taking them), and the count."""
    from azure.core.exceptions import ResourceNotFoundError

    client = rt.queues.get_queue_client(poison_queue(queue))
    try:
        count = int((await client.get_queue_properties()).approximate_message_count or 0)
        peeked = await client.peek_messages(max_messages=min(limit, 32))
    except ResourceNotFoundError:
        return [], 0
    return [unwrap(m.id, None, m.content, m.inserted_on) for m in peeked], count


@dataclass
class ReplayReport:
    replayed: list[Parked] = field(default_factory=list)
    failed: list[tuple[Parked, str]] = field(default_factory=list)


async def replay_parked(rt: Runtime, queue: str, visibility_seconds: int = 60) -> ReplayReport:
    """Each message parked before now goes back onto `queue` (the original, unwrapped) and is deleted
    from the poison queue only once that send succeeded. A message that fails again is parked anew
    with a later insertion time: it is not taken again in this round."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    from ..errors import one_line

    started = datetime.now(UTC)
    client = rt.queues.get_queue_client(poison_queue(queue))
    report = ReplayReport()
    try:
        pages = client.receive_messages(messages_per_page=32, visibility_timeout=visibility_seconds)
        async for message in pages:
            parked = unwrap(message.id, message.pop_receipt, message.content, message.inserted_on)
            if parked.inserted_on is not None and parked.inserted_on > started:
                continue  # parked during this round: left for the next one
            try:
                await rt.send_queue_message(queue, parked.original)
            except AzureError as exc:
                report.failed.append((parked, one_line(exc)))  # stays parked; visible again after the timeout
                continue
            await client.delete_message(message.id, message.pop_receipt)
            report.replayed.append(parked)
    except ResourceNotFoundError:
        pass  # no poison queue: nothing was ever parked
    return report
