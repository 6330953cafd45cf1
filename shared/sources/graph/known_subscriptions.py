"""Which subscription the app holds for each mailbox folder, as the webhook sees it, kept per process.

A notification item is ours only when its clientState verifies and its `subscriptionId` is the one the
folder's state record names: a forged item with a verifying clientState, or one for a subscription the
app has since replaced, is dropped before anything is queued. The webhook must stay fast, so each
folder's id is read from its record once and then kept. An id the cache does not know re-reads that one
record, at most once per `REFRESH_SECONDS` per folder, so forged traffic costs at most that many reads.

An unknown id is refused only on a read made after it arrived: the webhook passes the time its call
arrived, and a read that began at or after it is one, however recent. So one call of many items for a
folder costs one read, and every unknown id in it is refused by that read. A later call whose id the last
read does not name, within `REFRESH_SECONDS` of that read, gets `UNSURE`, and the webhook fails the call so
that Graph delivers it again: a subscription another instance created a moment ago is never refused, only
delayed by Graph's retry. (Graph can notify before the creating instance has saved the record; what such a
read refuses, the resync that follows every creation brings in.)
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable

REFRESH_SECONDS = 5.0


class Holding(enum.Enum):
    YES = "yes"
    NO = "no"
    UNSURE = "unsure"  # not known, and the record was read too recently to read it again


Load = Callable[[str], Awaitable[str | None]]  # folder key → the subscription id its record names


def now() -> float:
    """The clock of arrivals and reads: monotonic, so a step of the wall clock cannot reorder them."""
    return time.monotonic()


class KnownSubscriptions:
    def __init__(self, load: Load, refresh_seconds: float = REFRESH_SECONDS, clock: Callable[[], float] = now) -> None:
        self._load = load
        self._refresh = refresh_seconds
        self._clock = clock
        self._ids: dict[str, str | None] = {}
        self._read_at: dict[str, float] = {}  # when the read behind `_ids` began
        self._reading: dict[str, tuple[float, asyncio.Future[str | None]]] = {}  # began at, result

    async def holds(self, folder_key: str, subscription_id: str, arrived: float) -> Holding:
        """Whether `subscription_id` is the app's subscription for the folder (GUIDs: case does not matter), for
        a call that arrived at `arrived` (this object's clock)."""
        wanted = subscription_id.lower()
        if folder_key in self._ids and self._ids[folder_key] == wanted:
            return Holding.YES
        read_at = self._read_at.get(folder_key)
        if read_at is not None and read_at >= arrived:
            return Holding.NO  # read after the call arrived, and it names another
        if folder_key not in self._reading and read_at is not None and self._clock() - read_at < self._refresh:
            return Holding.UNSURE
        began, current = await self._read(folder_key)
        if current == wanted:
            return Holding.YES
        # A shared read may have begun before this call arrived: only one that began after it refuses.
        return Holding.NO if began >= arrived else Holding.UNSURE

    async def _read(self, folder_key: str) -> tuple[float, str | None]:
        """One record read per folder at a time: concurrent calls share it. When it began, and what it found."""
        pending = self._reading.get(folder_key)
        if pending is not None:
            began, shared = pending
            return began, await asyncio.shield(shared)
        began = self._clock()
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._reading[folder_key] = (began, future)
        try:
            found = await self._load(folder_key)
            current = found.lower() if found else None
            self._ids[folder_key] = current
            self._read_at[folder_key] = began
            future.set_result(current)
            return began, current
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unshared failure is not reported as unhandled
            raise
        finally:
            del self._reading[folder_key]
