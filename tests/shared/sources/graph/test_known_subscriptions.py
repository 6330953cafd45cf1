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
    records = Records(f1="SUB-1")
    known = KnownSubscriptions(records.load, 5, Clock())
    assert await known.holds("f1", "sub-1") is YES
    assert await known.holds("f1", "Sub-1") is YES
    assert records.reads == ["f1"]  # the steady state: no round trip


async def test_an_unknown_id_rereads_the_record_at_a_bounded_rate():
    records, clock = Records(f1="sub-1"), Clock()
    known = KnownSubscriptions(records.load, 5, clock)
    assert await known.holds("f1", "sub-1") is YES
    clock.now += 5
    assert await known.holds("f1", "forged") is NO  # refused on a read made after it arrived
    for _ in range(10):  # more in a burst: no read each, and no verdict either (the webhook answers 503)
        assert await known.holds("f1", "forged") is UNSURE
    assert records.reads == ["f1", "f1"]
    records.ids["f1"] = "sub-2"  # another instance recreated the subscription
    assert await known.holds("f1", "sub-2") is UNSURE  # never refused: Graph sends it again
    clock.now += 5
    assert await known.holds("f1", "sub-2") is YES
    assert await known.holds("f1", "sub-1") is UNSURE  # just read: the replaced one is not refused at once
    clock.now += 5
    assert await known.holds("f1", "sub-1") is NO
    assert records.reads == ["f1", "f1", "f1", "f1"]


async def test_a_folder_without_a_record_holds_nothing():
    known = KnownSubscriptions(Records().load, 5, Clock())
    assert await known.holds("f9", "sub-1") is NO


async def test_concurrent_first_calls_share_one_read():
    records = Records(f1="sub-1")
    records.gate = asyncio.Event()
    known = KnownSubscriptions(records.load, 5, Clock())
    calls = [asyncio.ensure_future(known.holds("f1", sid)) for sid in ("sub-1", "sub-1", "other")]
    await asyncio.sleep(0)
    records.gate.set()
    # The shared read may predate the third id's arrival: not a refusal.
    assert await asyncio.gather(*calls) == [YES, YES, UNSURE]
    assert records.reads == ["f1"]


async def test_a_failed_read_propagates_and_is_tried_again():
    """The webhook then fails the call (Graph retries it) rather than dropping a real notification."""
    records = Records(f1="sub-1")
    records.fail = True
    known = KnownSubscriptions(records.load, 5, Clock())
    with pytest.raises(OSError):
        await known.holds("f1", "sub-1")
    records.fail = False
    assert await known.holds("f1", "sub-1") is YES
