"""When subscriptions fall due for renewal (spread over many timer passes, not all in one), and what an
instance that dies while it recreates one leaves behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from shared.pipeline.layout import graph_time
from shared.sources.graph.messages import LifecycleMessage
from shared.sources.graph.state import FolderState, StateStore
from shared.sources.graph.subscriptions import (
    CREATE_CLAIM,
    RENEWAL_SPREAD,
    FolderMaintainer,
    renewal_due,
    renewal_share,
)

WEEK = 10_080
PASS = timedelta(minutes=15)  # the timer's default schedule


def keys(count: int) -> list[str]:
    return [hashlib.sha256(f"mailbox{i}@contoso.com/Inbox".encode()).hexdigest()[:16] for i in range(count)]


def test_a_thousand_folders_subscribed_in_one_pass_fall_due_over_many():
    created = datetime(2026, 11, 29, 12, tzinfo=UTC)
    expiry = created + timedelta(minutes=WEEK)
    dues = [renewal_due(expiry, WEEK, key) for key in keys(1000)]
    # Each between a quarter and half of the lifetime after creation (so never later than at half-life).
    assert all(timedelta(minutes=WEEK / 4) - PASS <= due - created <= timedelta(minutes=WEEK / 2) for due in dues)
    per_pass = Counter((due - created) // PASS for due in dues)
    # 42 hours of passes: about 6 renewals each; the busiest well under Graph's 500 writes per 20 s.
    assert len(per_pass) > 150 and max(per_pass.values()) <= 20


def test_a_folder_keeps_its_point_from_one_renewal_to_the_next():
    key = keys(1)[0]
    created = datetime(2026, 11, 29, 12, tzinfo=UTC)
    first = renewal_due(created + timedelta(minutes=WEEK), WEEK, key)
    second = renewal_due(first + timedelta(minutes=WEEK), WEEK, key)  # renewed when it fell due
    assert second - first == first - created
    assert 0 <= renewal_share(key) < 1 and RENEWAL_SPREAD == 0.25


class Hanging:
    """Graph that never answers a create: the instance making it dies meanwhile."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_an_instance_dying_while_it_recreates_leaves_no_removed_subscription_behind(settings, store):
    """Found by the soak: after `subscriptionRemoved`, the instance recreating the subscription saved its
    claim with the removed subscription's id; killed before it saved the new one, it left a record that the
    timer kept ("kept": not yet due) while no subscription existed, and the other instance, seeing the claim,
    had acknowledged the lifecycle event. The folder was deaf until its renewal date."""
    folder = settings.mailboxes[0]
    graph = Hanging()

    async def key() -> bytes:
        return b"k"

    rt: Any = SimpleNamespace(settings=settings, state=store, graph=graph, client_state_key=key)
    saved = StateStore(store)
    expiry = graph_time(datetime.now(UTC) + timedelta(days=6))
    await saved.save(
        FolderState(
            folder.key, folder.mailbox, folder.folder, folder_id="f1", subscription_id="removed", expiration=expiry
        ),
        None,
    )
    dying = asyncio.create_task(FolderMaintainer(rt, folder).on_lifecycle(
        LifecycleMessage(folder.key, "removed", "subscriptionRemoved", graph_time(datetime.now(UTC)))
    ))  # fmt: skip
    await asyncio.wait_for(graph.started.wait(), 10)
    dying.cancel()  # SIGKILL, as far as this instance is concerned
    with contextlib.suppress(asyncio.CancelledError):
        await dying
    record, _ = await saved.load(folder.key)
    assert record is not None and record.creating_at is not None  # its claim stands, for CREATE_CLAIM
    assert record.subscription_id is None
    # So the timer's pass sees a folder without a subscription (and creates it once the claim has lapsed).
    assert FolderMaintainer(rt, folder)._needs_renewal(record, datetime.now(UTC) + CREATE_CLAIM)
