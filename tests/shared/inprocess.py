"""What the fuzz tests share: an event loop of their own with a runtime placed in it, as get_runtime()
finds one, and the app's log records captured."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared import runtime as runtime_module


class Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def loop_with_events() -> Iterator[tuple[asyncio.AbstractEventLoop, Events]]:
    """A new event loop (its runtime: `place(loop, rt)`) and the `shared` loggers' records at INFO."""
    loop = asyncio.new_event_loop()
    events = Events()
    logger = logging.getLogger("shared")
    level = logger.level
    logger.addHandler(events)
    logger.setLevel(logging.INFO)
    try:
        yield loop, events
    finally:
        logger.removeHandler(events)
        logger.setLevel(level)
        runtime_module._runtimes.pop(loop, None)
        loop.close()


def place(loop: asyncio.AbstractEventLoop, rt: Any) -> None:
    """`rt` as the runtime get_runtime() returns on `loop` (a fake with what the code under test uses)."""
    runtime_module._runtimes[loop] = rt
