"""Outlook's per-mailbox concurrency limit: "Four concurrent requests", "evaluated for each app ID and
mailbox combination", on the Mail API (messages, mail folders, attachments; graph_facts §9).

A request past the limit is refused at once with 429, a short ``Retry-After`` and the code and
message Graph answers (``ApplicationThrottled``, "Application is over its MailboxConcurrency limit.",
as callers report it). It holds no slot: only requests that were let in count. A request counts from
its arrival until its response is sent, so a download holds its slot while it streams.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from .errors import GraphError

MAILBOX_CONCURRENCY = 4
RETRY_AFTER_SECONDS = 1
CODE = "ApplicationThrottled"
MESSAGE = "Application is over its MailboxConcurrency limit."
# The route segments of the Mail API (after users/{user}); users/{user} itself and subscriptions are not.
MAIL_API = frozenset({"messages", "mailfolders"})

T = TypeVar("T")


def is_mail_api(template: str) -> bool:
    """``users/{user}/mailFolders/...`` or ``users/{user}/messages/...``: the routes the limit covers."""
    segments = template.split("/")
    return len(segments) > 2 and segments[0] == "users" and segments[2].lower() in MAIL_API


class MailboxConcurrency:
    """Requests in flight per (app ID, mailbox id), and how many were refused."""

    def __init__(self, limit: int = MAILBOX_CONCURRENCY) -> None:
        self.limit = limit
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.refused: Counter[tuple[str, str]] = Counter()
        self.peak = 0  # the most requests of one app in flight on one mailbox at once

    @contextmanager
    def slot(self, app_id: str, mailbox_id: str) -> Iterator[None]:
        """Held for one request; raises the 429 when the pair already has `limit` in flight."""
        key = (app_id, mailbox_id.lower())
        if self.in_flight[key] >= self.limit:
            self.refused[key] += 1
            raise GraphError(429, CODE, MESSAGE, {"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.in_flight[key] += 1
        self.peak = max(self.peak, self.in_flight[key])
        try:
            yield
        finally:
            self.in_flight[key] -= 1
            if not self.in_flight[key]:
                del self.in_flight[key]

    async def run(self, app_id: str, mailbox_id: str, call: Callable[[], Awaitable[T]]) -> T:
        with self.slot(app_id, mailbox_id):
            return await call()

    def describe(self) -> dict[str, object]:
        return {
            "limit": self.limit,
            "refused": sum(self.refused.values()),
            "refusedByMailbox": {f"{app} {mailbox}": n for (app, mailbox), n in self.refused.items()},
            "inFlight": sum(self.in_flight.values()),
            "peakInFlight": self.peak,
        }
