"""Retry policy for Graph: honour Retry-After, else exponential backoff with full jitter; bounded."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # A Retry-After longer than this is not slept through: the queue message is failed instead and
    # retried later by the queue, so a worker is not held for minutes.
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential delay before retry number `attempt` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return random.uniform(0, ceiling)

    def delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before retry `attempt`, or None when the policy gives up."""
        if attempt > self.max_retries:
            return None
        wait = parse_retry_after(retry_after)
        if wait is None:
            return self.backoff(attempt)
        return wait if wait <= self.max_retry_after else None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
