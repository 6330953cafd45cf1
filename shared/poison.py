"""Queue messages that still fail on their last delivery: parked in `{queue}-poison` with the reason.

The Functions host would move such a message to the poison queue by itself, but bare: the reason
would only be in a log line. Parking it here first keeps the reason with it, for `replay-poison`.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import Runtime

CHANGES_QUEUE = "mail-changes"
LIFECYCLE_QUEUE = "mail-lifecycle"
# host.json's queues.maxDequeueCount, which an app setting can override (as the host reads it).
HOST_OVERRIDE = "AzureFunctionsJobHost__extensions__queues__maxDequeueCount"
HOST_DEFAULT = 5
HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


def poison_queue(queue: str) -> str:
    return f"{queue}-poison"


@lru_cache(maxsize=1)
def max_dequeue_count() -> int:
    """The delivery after which the host gives a message up, as the host itself configures it."""
    raw = os.environ.get(HOST_OVERRIDE, "").strip()
    if raw.isdigit():
        return int(raw)
    try:
        host = json.loads(HOST_JSON.read_text())
        return int(host["extensions"]["queues"]["maxDequeueCount"])
    except (OSError, ValueError, KeyError, TypeError):
        return HOST_DEFAULT


def poisoned(queue: str, body: bytes, reason: str, dequeue_count: int) -> dict[str, Any]:
    """The parked message: the original (as JSON when it is JSON), and why it was given up."""
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
