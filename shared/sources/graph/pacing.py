"""Pacing of Graph's subscription writes: at most so many in any 20 seconds, per process.

Graph allows 500 subscription writes (POST, PATCH, DELETE) per 20 s per app and tenant (graph_facts §6).
A timer pass over a thousand folders would create or renew a thousand at once, and Graph would answer
the rest 429. The timer runs on one instance at a time (a singleton, `use_monitor`); the budget leaves a
fifth of Graph's limit to the lifecycle worker, which may renew or recreate on another instance meanwhile.
A sliding window of the writes' start times; a write beyond it waits for the oldest to leave the window.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

SUBSCRIPTION_WRITES = 400
WINDOW_SECONDS = 20.0


class SlidingWindow:
    def __init__(
        self,
        limit: int = SUBSCRIPTION_WRITES,
        seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.seconds = seconds
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds writes spent waiting, for the figures

    async def acquire(self) -> None:
        """Wait until one more write fits in the window, and count it."""
        async with self._lock:  # first come, first served
            while True:
                now = self._clock()
                while self._starts and now - self._starts[0] >= self.seconds:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                wait = self.seconds - (now - self._starts[0])
                self.waited += wait
                await self._sleep(wait)


_windows: dict[asyncio.AbstractEventLoop, SlidingWindow] = {}


def subscription_writes() -> SlidingWindow:
    """This event loop's window (one per process in the Functions worker)."""
    loop = asyncio.get_running_loop()
    window = _windows.get(loop)
    if window is None:
        window = _windows[loop] = SlidingWindow()
    return window
