"""Timer trigger listener: NCRONTAB (or ``hh:mm:ss`` interval) schedules in UTC.

Timer functions are singletons: runs never overlap, whether scheduled or started through the
admin API. The next occurrence is computed after a run ends, so occurrences missed by a long run are
skipped, as the host's TimerListener does. ``past_due`` is true when the run starts after the
occurrence following its own has already passed (one was missed, e.g. the machine slept).

With ``useMonitor`` the schedule status (Last, Next, LastUpdated) is kept, as the host keeps it, in the
`azure-webjobs-hosts` container at `timers/{hostId}/{function}/status`. A host that starts after the
recorded Next occurrence (it was down when the timer should have run) runs the function at once with
``past_due`` true, then goes on with the schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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


class ScheduleMonitor:
    """The host's schedule status blob for one timer function (StorageScheduleMonitor)."""

    CONTAINER = "azure-webjobs-hosts"

    def __init__(self, connection_string: str, host_id: str, function: str) -> None:
        self.connection_string = connection_string
        self.path = f"timers/{host_id}/{function}/status"

    async def next_due(self) -> datetime | None:
        """The Next occurrence the last status recorded, or None if there is none yet."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob.aio import BlobClient

        async with BlobClient.from_connection_string(self.connection_string, self.CONTAINER, self.path) as blob:
            try:
                data = json.loads(await (await blob.download_blob()).readall())
            except ResourceNotFoundError:
                return None
        return datetime.fromisoformat(data["Next"]) if data.get("Next") else None

    async def record(self, last: datetime | None, next_: datetime) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob.aio import BlobServiceClient

        status = {
            "Last": last.isoformat() if last else datetime.min.isoformat(),
            "Next": next_.isoformat(),
            "LastUpdated": utcnow().isoformat(),
        }
        async with BlobServiceClient.from_connection_string(self.connection_string) as service:
            container = service.get_container_client(self.CONTAINER)
            with contextlib.suppress(ResourceExistsError):
                await container.create_container()
            await container.upload_blob(self.path, json.dumps(status), overwrite=True)


class TimerListener:
    def __init__(self, spec: FunctionSpec, invoker: Invoker, monitor: ScheduleMonitor | None = None) -> None:
        self.spec = spec
        self.invoker = invoker
        self.monitor = monitor if spec.trigger.get("useMonitor", True) else None
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
        missed = await self.monitor.next_due() if self.monitor is not None else None
        if missed is not None and missed <= utcnow():
            log.info("Timer '%s' is past due: it should have run at %s", self.spec.name, missed.isoformat())
            await self._run_shielded(past_due=True, reason=f"Timer past due since {missed.isoformat()}")
        elif self.run_on_startup:
            await self._run_shielded(past_due=False, reason="Timer fired at startup (runOnStartup).")
        while True:
            due = self.schedule.next_after(utcnow())
            self._next = due
            if self.monitor is not None:
                await self.monitor.record(self._last, due)
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
