"""Outgoing HTTP of the Graph change-notification service: the endpoint validation handshake and
notification delivery with retries.

Delivery follows the webhook docs: a POST of ``{"value": [...]}`` counts as delivered on a 2xx within
3 seconds (10 seconds for retries); otherwise it is retried with exponential backoff for up to
4 hours. The backoff runs on real time, scaled by ``retry_base`` so tests finish; the 4-hour limit is
measured on the simulated clock, so a test can advance the clock to make Graph give up.

Graph delivers at least once: ``duplicates`` (or a control API redelivery) queues a change several
times as numbered copies; copies never share a POST, and the POSTs of different copies due at the
same time go out concurrently, each with its own retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote_plus, urlsplit

import aiohttp
from yarl import URL

from .clock import Clock, graph_datetime_7
from .requestlog import log_line

VALIDATION_TIMEOUT_SECONDS = 10.0
FIRST_TIMEOUT_SECONDS = 3.0
RETRY_TIMEOUT_SECONDS = 10.0
GIVE_UP_AFTER = timedelta(hours=4)
MAX_BATCH = 10
MAX_BACKOFF_DOUBLINGS = 6


def _log_target(url: str) -> str:
    """Host and path only: a notification URL's query may hold a function key."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def with_query_param(url: str, name: str, value: str) -> URL:
    """Append one parameter, keeping the URL's own query exactly as the subscriber wrote it."""
    separator = "&" if "?" in url else "?"
    return URL(f"{url}{separator}{name}={quote_plus(value)}", encoded=True)


@dataclass
class Pending:
    url: str
    kind: str  # "change" | "lifecycle"
    subscription_id: str
    item: dict[str, Any]
    created: datetime  # simulated time, for the 4-hour limit
    attempts: int = 0
    due: float = 0.0  # loop time
    copy: int = 0  # duplicates of one notification: 0, 1, ...


@dataclass
class DeliveryRecord:
    url: str
    kind: str
    status: int | None
    attempt: int
    ms: float
    outcome: str  # "delivered" | "failed" | "dropped"
    subscription_ids: list[str]
    count: int
    time: str
    error: str | None = None
    copy: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "kind": self.kind,
            "status": self.status,
            "attempt": self.attempt,
            "ms": round(self.ms, 1),
            "outcome": self.outcome,
            "subscriptionIds": self.subscription_ids,
            "count": self.count,
            "time": self.time,
            "error": self.error,
            "copy": self.copy,
        }


@dataclass
class _Queue:
    items: list[Pending] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Delivery:
    def __init__(self, clock: Clock, is_live: Callable[[str], bool]) -> None:
        """``is_live(subscription_id) -> bool``: change notifications for a gone subscription are dropped."""
        self.clock = clock
        self.is_live = is_live
        self.retry_base = 2.0
        self.paused = False
        self.duplicates = 1  # copies of each change notification
        self.records: list[DeliveryRecord] = []
        self._queues: dict[str, _Queue] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # No proxies from the environment: notification URLs are the subscriber's own endpoints.
        self._session = aiohttp.ClientSession(trust_env=False)

    async def close(self) -> None:
        for queue in self._queues.values():
            if queue.task is not None:
                queue.task.cancel()
        for queue in self._queues.values():
            if queue.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await queue.task
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Delivery.start() was not awaited"
        return self._session

    # -- validation handshake -------------------------------------------------------------------
    async def validate_endpoint(self, url: str) -> str | None:
        """POST ``?validationToken=`` and check the answer; None when valid, else Graph's message."""
        # Opaque, with characters that must be URL-decoded (spaces, ':' and a literal '+').
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()} +{secrets.token_hex(4)}"
        )
        target = with_query_param(url, "validationToken", token)
        started = time.perf_counter()
        status: int | str = "error"
        try:
            # asyncio.timeout, not aiohttp's: aiohttp rounds timeouts over 5 s up to whole seconds.
            async with (
                asyncio.timeout(VALIDATION_TIMEOUT_SECONDS),
                self.session.post(target, data=b"", headers={"Content-Type": "text/plain; charset=utf-8"}) as response,
            ):
                status = response.status
                body = await response.read()
                content_type = response.content_type
        except TimeoutError:
            status = "timeout"
            return "Subscription validation request timed out."
        except aiohttp.ClientError:
            return (
                "Subscription validation request failed. Notification endpoint must respond with 200 OK "
                "to validation request."
            )
        finally:
            log_line(
                "VALIDATE",
                _log_target(url),
                0 if isinstance(status, str) else status,
                (time.perf_counter() - started) * 1000,
            )
        if status != 200:
            return (
                "Subscription validation request failed. Notification endpoint must respond with 200 OK "
                "to validation request."
            )
        if content_type != "text/plain":
            return "Subscription validation request failed. Response must have Content-Type text/plain."
        if body.decode("utf-8", errors="replace") != token:
            return (
                "Subscription validation request failed. Response must exactly match validationToken query parameter."
            )
        return None

    # -- notifications --------------------------------------------------------------------------
    def enqueue(
        self, url: str, kind: str, subscription_id: str, item: dict[str, Any], copies: int | None = None
    ) -> int:
        """Queue ``copies`` copies of one notification (default: ``duplicates`` for changes, else 1)."""
        count = copies if copies is not None else (self.duplicates if kind == "change" else 1)
        queue = self._queues.get(url)
        if queue is None:
            queue = self._queues[url] = _Queue()
        loop = asyncio.get_running_loop()
        for copy in range(count):
            queue.items.append(Pending(url, kind, subscription_id, item, self.clock.now(), due=loop.time(), copy=copy))
        if queue.task is None or queue.task.done():
            queue.task = loop.create_task(self._worker(url, queue))
        queue.wake.set()
        return count

    def configure(self, retry_base: float | None, paused: bool | None, duplicates: int | None = None) -> None:
        if retry_base is not None:
            self.retry_base = retry_base
        if paused is not None:
            self.paused = paused
        if duplicates is not None:
            self.duplicates = duplicates
        for queue in self._queues.values():
            queue.wake.set()

    def pending(self) -> int:
        return sum(len(q.items) for q in self._queues.values())

    def _backoff(self, attempts: int) -> float:
        return float(self.retry_base * 2 ** min(attempts - 1, MAX_BACKOFF_DOUBLINGS))

    async def _sleep(self, queue: _Queue, seconds: float | None) -> None:
        queue.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queue.wake.wait(), seconds)

    async def _worker(self, url: str, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.paused or not queue.items:
                await self._sleep(queue, None)
                continue
            now = loop.time()
            due = [p for p in queue.items if p.due <= now]
            if not due:
                await self._sleep(queue, min(p.due for p in queue.items) - now)
                continue
            by_copy: dict[int, list[Pending]] = {}
            for pending in due:
                group = by_copy.setdefault(pending.copy, [])
                if len(group) < MAX_BATCH:
                    group.append(pending)
            batches = []
            for group in by_copy.values():
                for pending in group:
                    queue.items.remove(pending)
                kept = self._drop_stale(group)
                if kept:
                    batches.append(kept)
            await asyncio.gather(*(self._send(url, batch, queue) for batch in batches))

    def _drop_stale(self, batch: list[Pending]) -> list[Pending]:
        keep: list[Pending] = []
        for pending in batch:
            if pending.kind == "change" and not self.is_live(pending.subscription_id):
                reason = "subscription no longer exists"
            elif self.clock.now() - pending.created >= GIVE_UP_AFTER:
                reason = "gave up after 4 hours"
            else:
                keep.append(pending)
                continue
            self._record(pending.url, [pending], None, 0.0, "dropped", reason)
        return keep

    def _record(
        self, url: str, batch: list[Pending], status: int | None, ms: float, outcome: str, error: str | None
    ) -> None:
        self.records.append(
            DeliveryRecord(
                url=url,
                kind=batch[0].kind,
                status=status,
                attempt=max(p.attempts for p in batch),
                ms=ms,
                outcome=outcome,
                subscription_ids=sorted({p.subscription_id for p in batch}),
                count=len(batch),
                time=graph_datetime_7(self.clock.now()),
                error=error,
                copy=batch[0].copy,
            )
        )

    async def _send(self, url: str, batch: list[Pending], queue: _Queue) -> None:
        for pending in batch:
            pending.attempts += 1
        first = all(p.attempts == 1 for p in batch)
        timeout = FIRST_TIMEOUT_SECONDS if first else RETRY_TIMEOUT_SECONDS
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with (
                asyncio.timeout(timeout),
                self.session.post(URL(url, encoded=True), json={"value": [p.item for p in batch]}) as response,
            ):
                status = response.status
                await response.read()
        except TimeoutError:
            error = f"no response within {timeout:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        ms = (time.perf_counter() - started) * 1000
        log_line("NOTIFY", _log_target(url), status or 0, ms)
        if status is not None and 200 <= status < 300:
            self._record(url, batch, status, ms, "delivered", None)
            return
        self._record(url, batch, status, ms, "failed", error)
        now = asyncio.get_running_loop().time()
        for pending in batch:
            pending.due = now + self._backoff(pending.attempts)
            queue.items.append(pending)
