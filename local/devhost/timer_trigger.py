"""Timer trigger listener: NCRONTAB (or ``hh:mm:ss`` interval) schedules in UTC.

Timer functions are singletons: runs never overlap, whether scheduled or started through the
admin API. The next occurrence is computed after a run ends, so occurrences missed by a long run are
skipped, as the host's TimerListener does. ``past_due`` is true when the run starts after the
occurrence following its own has already passed (one was missed, e.g. the machine slept); the
host tells that from its schedule monitor, which the dev host keeps in memory only.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

from .config import ConfigError, parse_timespan
from .functions import FunctionSpec
from .invoker import InvocationResult, Invoker
from .ncrontab import CronError, CronSchedule
from .objects import timer_request

log = logging.getLogger("devhost.timer")


class Schedule(Protocol):
    def next_after(self, after: datetime) -> datetime: ...


class IntervalSchedule:
    """A TimeSpan schedule (``"00:05:00"``): every interval."""

    def __init__(self, interval: timedelta) -> None:
        if interval <= timedelta(0):
            raise ConfigError("timer schedule interval must be positive")
        self.interval = interval

    def next_after(self, after: datetime) -> datetime:
        return after + self.interval


def parse_schedule(expression: str, *, where: str) -> Schedule:
    try:
        if ":" in expression and len(expression.split()) == 1:
            return IntervalSchedule(parse_timespan(expression, what=f"{where} schedule"))
        return CronSchedule.parse(expression)
    except CronError as exc:
        raise ConfigError(f"{where}: invalid timer schedule: {exc}") from exc


def utcnow() -> datetime:
    return datetime.now(UTC)


class TimerListener:
    def __init__(self, spec: FunctionSpec, invoker: Invoker) -> None:
        self.spec = spec
        self.invoker = invoker
        where = f"function '{spec.name}'"
        self.schedule = parse_schedule(str(spec.trigger.get("schedule", "")), where=where)
        self.run_on_startup = bool(spec.trigger.get("runOnStartup", False))
        self._lock = asyncio.Lock()
        self._last: datetime | None = None
        self._next: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"timer-{self.spec.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self, *, past_due: bool, reason: str) -> InvocationResult:
        async with self._lock:
            now = utcnow()
            request = timer_request(past_due=past_due, last=self._last, next_=self.schedule.next_after(now))
            self._last = now
            return await self.invoker.invoke(self.spec, request, reason=reason)

    async def _loop(self) -> None:
        if self.run_on_startup:
            await self._run_shielded(past_due=False, reason="Timer fired at startup (runOnStartup).")
        while True:
            due = self.schedule.next_after(utcnow())
            self._next = due
            log.debug("Timer '%s' next run at %s", self.spec.name, due.isoformat())
            # Short sleeps, so a wall-clock jump (suspend, clock change) is noticed; nothing else
            # can wake a timer early, so an Event would add nothing.
            while (remaining := (due - utcnow()).total_seconds()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(min(remaining, 30.0))
            past_due = self.schedule.next_after(due) <= utcnow()
            await self._run_shielded(past_due=past_due, reason=f"Timer fired at {due.isoformat()}")

    async def _run_shielded(self, *, past_due: bool, reason: str) -> None:
        # A run in progress at shutdown finishes (the host drains it) even though the loop is cancelled.
        run = asyncio.ensure_future(self.run(past_due=past_due, reason=reason))
        await asyncio.shield(run)
