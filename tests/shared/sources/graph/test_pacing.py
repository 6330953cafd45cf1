from __future__ import annotations

import asyncio

from shared.sources.graph.pacing import SUBSCRIPTION_WRITES, WINDOW_SECONDS, SlidingWindow, subscription_writes


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_writes_beyond_the_window_wait_for_the_oldest_to_leave_it():
    t = FakeTime()
    window = SlidingWindow(limit=3, seconds=20, clock=t.clock, sleep=t.sleep)
    starts = []
    for _ in range(7):
        await window.acquire()
        starts.append(t.now)
        t.now += 1  # each write takes a second
    assert starts == [100, 101, 102, 120, 121, 122, 140]
    # In any 20 s, at most 3 writes started.
    assert all(sum(1 for s in starts if a <= s < a + 20) <= 3 for a in starts)
    assert window.waited == sum(t.slept) == 17 + 17


async def test_concurrent_writers_share_the_window():
    t = FakeTime()
    window = SlidingWindow(limit=5, seconds=20, clock=t.clock, sleep=t.sleep)
    await asyncio.gather(*(window.acquire() for _ in range(12)))
    assert t.now == 140  # 5 at once, 5 after 20 s, 2 after 40 s


async def test_the_budget_leaves_room_under_graphs_limit():
    assert SUBSCRIPTION_WRITES <= 0.8 * 500 and WINDOW_SECONDS == 20
    assert subscription_writes() is subscription_writes()
