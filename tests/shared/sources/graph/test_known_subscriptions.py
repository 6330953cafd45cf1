from __future__ import annotations

import asyncio

import pytest

from shared.sources.graph.known_subscriptions import Holding, KnownSubscriptions

YES, NO, UNSURE = Holding.YES, Holding.NO, Holding.UNSURE


class Records:
    """Folder records as the state store would return them, counting reads."""

    def __init__(self, **ids: str | None) -> None:
        self.ids = dict(ids)
        self.reads: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def load(self, folder_key: str) -> str | None:
        self.reads.append(folder_key)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("storage unreachable")
        return self.ids.get(folder_key)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_folders_record_is_read_once_then_kept():
    records, clock = Records(f1="SUB-1"), Clock()
    known = KnownSubscriptions(records.load, 5, clock)
    assert await known.holds("f1", "sub-1", clock.now) is YES
    clock.now += 60
    assert await known.holds("f1", "Sub-1", clock.now) is YES
    assert records.reads == ["f1"]  # the steady state: no round trip


async def test_an_unknown_id_rereads_the_record_at_a_bounded_rate():
    records, clock = Records(f1="sub-1"), Clock()
    known = KnownSubscriptions(records.load, 5, clock)
    assert await known.holds("f1", "sub-1", clock.now) is YES
    clock.now += 5
    assert await known.holds("f1", "forged", clock.now) is NO  # refused on a read made after it arrived
    for _ in range(10):  # later calls in a burst: no read each, and no verdict either (the webhook answers 503)
        clock.now += 0.1
        assert await known.holds("f1", "forged", clock.now) is UNSURE
    assert records.reads == ["f1", "f1"]
    records.ids["f1"] = "sub-2"  # another instance recreated the subscription
    assert await known.holds("f1", "sub-2", clock.now) is UNSURE  # never refused: Graph sends it again
    clock.now += 5
    assert await known.holds("f1", "sub-2", clock.now) is YES
    clock.now += 0.1
    assert await known.holds("f1", "sub-1", clock.now) is UNSURE  # just read: the replaced one is not refused at once
    clock.now += 5
    assert await known.holds("f1", "sub-1", clock.now) is NO
    assert records.reads == ["f1", "f1", "f1", "f1"]


async def test_one_read_after_a_call_arrived_refuses_all_its_items():
    """A POST of many items for one folder: the read the first unknown item makes began after the call
    arrived, so it refuses every other unknown id of that call too, with no second read and no 503."""
    records, clock = Records(f1="sub-1"), Clock()
    known = KnownSubscriptions(records.load, 5, clock)
    arrived = clock.now
    clock.now += 0.01  # the first item's read
    verdicts = []
    for index in range(20):
        verdicts.append(await known.holds("f1", "sub-1" if index % 5 == 0 else f"forged-{index}", arrived))
        clock.now += 0.001  # the call's items are checked one after another, within the refresh window
    assert verdicts == [YES if index % 5 == 0 else NO for index in range(20)]
    assert records.reads == ["f1"]
    # A call that arrived after that read is not refused by it (the record may have changed since).
    assert await known.holds("f1", "forged-1", clock.now) is UNSURE
    assert records.reads == ["f1"]


async def test_a_folder_without_a_record_holds_nothing():
    clock = Clock()
    known = KnownSubscriptions(Records().load, 5, clock)
    assert await known.holds("f9", "sub-1", clock.now) is NO


async def test_concurrent_first_calls_share_one_read():
    records, clock = Records(f1="sub-1"), Clock()
    records.gate = asyncio.Event()
    known = KnownSubscriptions(records.load, 5, clock)
    calls = [asyncio.ensure_future(known.holds("f1", sid, clock.now)) for sid in ("sub-1", "sub-1", "other")]
    await asyncio.sleep(0)
    clock.now += 1  # a call that arrives while the read is under way
    calls.append(asyncio.ensure_future(known.holds("f1", "late", clock.now)))
    await asyncio.sleep(0)
    records.gate.set()
    # The shared read began after the third id's call arrived: refused; it may predate the fourth's: not a refusal.
    assert await asyncio.gather(*calls) == [YES, YES, NO, UNSURE]
    assert records.reads == ["f1"]


async def test_a_failed_read_propagates_and_is_tried_again():
    """The webhook then fails the call (Graph retries it) rather than dropping a real notification."""
    records, clock = Records(f1="sub-1"), Clock()
    records.fail = True
    known = KnownSubscriptions(records.load, 5, clock)
    with pytest.raises(OSError):
        await known.holds("f1", "sub-1", clock.now)
    records.fail = False
    assert await known.holds("f1", "sub-1", clock.now) is YES
